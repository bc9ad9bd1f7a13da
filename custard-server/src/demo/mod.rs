//! `custard-server --demo`: a demo organisation and user, a small shop database
//! in SQLite, and an in-process agent serving it, so a first run shows the whole
//! product without PostgreSQL or an API key.
//!
//! Everything is created on the first demo start and reused afterwards; each
//! start sets a new demo password and rotates the demo connection's key (the
//! old key was never shown to anyone but the in-process agent).

pub(crate) mod dataset;

use std::net::SocketAddr;

use anyhow::Context;
use custard_agent::config::AgentConfig;
use custard_core::Dialect;
use tokio_util::sync::CancellationToken;

use crate::auth;
use crate::state::AppState;
use crate::store::{NewConnection, NewUser, StoreError};

/// The demo user's email.
pub(crate) const DEMO_EMAIL: &str = "demo@custard.local";
const DEMO_ORG: &str = "Demo organisation";
const DEMO_CONNECTION: &str = "Demo shop";

/// What the demo start created, for the console and for tests.
// No `Debug`: it holds the password.
#[derive(Clone)]
pub(crate) struct DemoLogin {
    /// The demo user's email.
    pub(crate) email: String,
    /// The demo user's password, new on every start.
    pub(crate) password: String,
}

/// Sets up the demo and starts its agent, which dials `server` until `shutdown`.
pub(crate) async fn start(
    state: &AppState,
    server: SocketAddr,
    shutdown: CancellationToken,
) -> anyhow::Result<DemoLogin> {
    let inner = state.inner();
    let store = &inner.store;
    let dir = inner.config.data_dir.join("demo");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let database = dir.join("shop.sqlite");
    if !database.exists() {
        let path = database.clone();
        let today = chrono::Utc::now().date_naive();
        let summary = tokio::task::spawn_blocking(move || dataset::create(&path, today))
            .await
            .context("creating the demo database")??;
        tracing::info!(?summary, path = %database.display(), "demo database created");
    }

    let password: String = auth::new_secret().chars().take(16).collect();
    let hash = inner
        .hashing
        .hash(password.clone())
        .await
        .map_err(|e| anyhow::anyhow!("hashing the demo password: {e}"))?;
    let user = match store.get_user_by_email(DEMO_EMAIL).await {
        Ok(user) => {
            store.set_password_hash(&user.id, hash).await?;
            user
        }
        Err(StoreError::NotFound) => {
            let new = NewUser {
                email: DEMO_EMAIL.to_owned(),
                password_hash: hash,
                first_name: "Demo".to_owned(),
                last_name: "User".to_owned(),
            };
            store.create_user_with_org(new, DEMO_ORG.to_owned()).await?.user
        }
        Err(e) => return Err(e.into()),
    };
    store.mark_email_verified(&user.id).await?;
    let (org, _) = store
        .organizations_of_user(&user.id)
        .await?
        .into_iter()
        .next()
        .context("the demo user belongs to no organisation")?;

    let key = auth::new_api_key();
    let key_hash = auth::hash_secret(&key);
    let key_prefix: String = key.chars().take(12).collect();
    let existing = store
        .list_connections(&org.id)
        .await?
        .into_iter()
        .find(|c| c.name == DEMO_CONNECTION && c.dialect == Dialect::Sqlite);
    let connection = match existing {
        Some(c) => store.set_connection_key(&org.id, &c.id, key_hash, key_prefix).await?,
        None => {
            store
                .create_connection(NewConnection {
                    org_id: org.id.clone(),
                    name: DEMO_CONNECTION.to_owned(),
                    dialect: Dialect::Sqlite,
                    key_hash,
                    key_prefix,
                })
                .await?
        }
    };

    let database_url = format!("sqlite:{}", database.display());
    let server_url = format!("ws://{server}/api/v1/connections/ws/{}", connection.id);
    let config =
        AgentConfig { sample_values: 5, ..AgentConfig::new(server_url, key, database_url) };
    tokio::spawn(async move {
        if let Err(e) = custard_agent::run(config, shutdown).await {
            tracing::error!("the demo agent stopped: {e:#}");
        }
    });
    Ok(DemoLogin { email: DEMO_EMAIL.to_owned(), password })
}

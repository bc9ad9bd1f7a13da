//! [`AppState`]: what every handler, page and task of the server shares (the
//! store, the mailer, the JWT secret, the limits, the hub, the language model,
//! the ask pipelines, the metrics and the pages' flashes), and how it is built
//! from the configuration.
//!
//! It holds only types of the modules below it (the store, the hub, auth, the
//! limits, ...); the modules that act on it import it, never the other way.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use custard_core::llm::{LanguageModel, OfflineEngine, OpenAiConfig, OpenAiModel};

use crate::auth::{AuthState, JwtSecret};
use crate::config::{LlmSettings, ServerConfig};
use crate::extract::TrustedProxies;
use crate::flash::Flashes;
use crate::hashing::{HashingStats, PasswordHashing};
use crate::hub::{AgentRouter, HubSettings, LocalHub, NatsRouter};
use crate::mail::Mailer;
use crate::metrics::Metrics;
use crate::pipelines::Pipelines;
use crate::rate_limit::{
    AttemptLimiter, FailureLimiter, InvitationLimiter, Limits, QuestionLimiter,
};
use crate::store::{PostgresOptions, Sharing, Store, StoreLocation};

/// Shared by every handler.
#[derive(Clone, Debug)]
pub struct AppState {
    inner: Arc<Inner>,
}

/// Everything the state holds, for the modules that act on it.
#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) config: ServerConfig,
    pub(crate) started: Instant,
    /// Cancelled when the server starts shutting down: live streams end and
    /// `/ready` says so.
    pub(crate) shutting_down: tokio_util::sync::CancellationToken,
    pub(crate) store: Arc<dyn Store>,
    pub(crate) mailer: Mailer,
    pub(crate) jwt: JwtSecret,
    pub(crate) access_lifetime: Duration,
    pub(crate) login_limiter: AttemptLimiter,
    pub(crate) signup_limiter: AttemptLimiter,
    pub(crate) forgot_limiter: AttemptLimiter,
    pub(crate) reset_limiter: AttemptLimiter,
    /// Wrong current passwords, per account (change of password).
    pub(crate) password_failures: FailureLimiter,
    pub(crate) invitation_limiter: InvitationLimiter,
    pub(crate) questions: QuestionLimiter,
    /// Every password hash and verification of the server goes through it.
    pub(crate) hashing: PasswordHashing,
    /// The hub that holds this server's agent sockets.
    pub(crate) hub: Arc<LocalHub>,
    /// The agents of every replica (through NATS) or of this one (the hub),
    /// as handlers see them.
    pub(crate) router: Arc<dyn AgentRouter>,
    /// Routing between replicas, when configured (for `/ready`).
    pub(crate) routing: Option<Arc<NatsRouter>>,
    /// The engine that writes SQL.
    pub(crate) model: Arc<dyn LanguageModel>,
    pub(crate) pipelines: Pipelines,
    pub(crate) metrics: Arc<Metrics>,
    /// What the web pages show once after a form's redirect (new API keys).
    pub(crate) flashes: Flashes,
    /// Whose `X-Forwarded-For` names the client.
    pub(crate) trusted_proxies: TrustedProxies,
}

impl AppState {
    /// Opens everything `config` names: the data dir, the store (SQLite in
    /// the data dir, or `CUSTARD_STORE_URL`), the JWT secret and the mailer.
    pub async fn open(config: ServerConfig) -> anyhow::Result<Self> {
        Self::open_with_limits(config, Limits::default()).await
    }

    /// [`AppState::open`] with custom rate limits (tests use small ones).
    pub async fn open_with_limits(config: ServerConfig, limits: Limits) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&config.data_dir).with_context(|| {
            format!("creating the data directory {}", config.data_dir.display())
        })?;
        let replica = config.replica();
        let location = config.store_location()?;
        let trusted_proxies = TrustedProxies::parse(&config.trusted_proxies)
            .map_err(|e| anyhow::anyhow!("CUSTARD_TRUSTED_PROXIES: {e}"))?;
        let nats = config.nats()?;
        // A PostgreSQL store is shared only by replicas that route to each other.
        let sharing = if nats.is_some() { Sharing::Routed } else { Sharing::Alone };
        let options = PostgresOptions {
            pool_size: config.store_pool_size,
            sharing,
            ..PostgresOptions::default()
        };
        let store = location
            .open(&options)
            .await
            .with_context(|| format!("opening the store at {location}"))?;
        tracing::info!(%location, "store");
        // A PostgreSQL store is there to be shared by replicas: so are the
        // secret and the per-account limits.
        let shared_store =
            matches!(location, StoreLocation::Postgres(_)).then(|| Arc::clone(&store));
        let jwt = crate::secrets::jwt_secret(
            &config.data_dir,
            config.jwt_secret.as_deref(),
            shared_store.as_deref(),
        )
        .await?;
        let attempts = |purpose| match &shared_store {
            Some(store) => AttemptLimiter::shared(limits, Arc::clone(store), purpose),
            None => AttemptLimiter::new(limits),
        };
        let mailer = Mailer::from_settings(
            config.smtp_url.as_deref(),
            &config.data_dir,
            crate::mail::DEFAULT_FROM,
        )?;
        tracing::info!(mail = %mailer.describe(), "email");
        let model = language_model(&config.llm()?)?;
        tracing::info!(engine = %model.name(), "SQL engine");
        let hub = Arc::new(LocalHub::new(HubSettings {
            heartbeat: Duration::from_millis(config.agent_heartbeat_ms.max(100)),
            max_agents_per_connection: config.max_agents_per_connection,
            max_agents_per_org: config.max_agents_per_org,
            ..HubSettings::default()
        }));
        let questions =
            QuestionLimiter::new(config.questions_per_minute, config.questions_in_flight_per_org);
        let hashing =
            PasswordHashing::new(config.password_hash_bound(), config.request_read_timeout());
        let routing = match nats {
            Some(settings) => {
                Some(Arc::new(NatsRouter::connect(Arc::clone(&hub), settings).await?))
            }
            None => None,
        };
        let router = match &routing {
            Some(routing) => Arc::clone(routing) as Arc<dyn AgentRouter>,
            None => Arc::clone(&hub) as Arc<dyn AgentRouter>,
        };
        let pipelines = Pipelines::new(
            Arc::clone(&store),
            Arc::clone(&router),
            Arc::clone(&model),
            Duration::from_secs(config.query_timeout_secs.max(1)),
        );
        Ok(AppState {
            inner: Arc::new(Inner {
                config,
                started: Instant::now(),
                shutting_down: tokio_util::sync::CancellationToken::new(),
                store,
                mailer,
                jwt,
                access_lifetime: crate::auth::DEFAULT_ACCESS_LIFETIME,
                login_limiter: attempts("login"),
                signup_limiter: attempts("signup"),
                forgot_limiter: attempts("forgot"),
                reset_limiter: attempts("reset"),
                password_failures: match &shared_store {
                    Some(store) => FailureLimiter::shared(limits, Arc::clone(store), "password"),
                    None => FailureLimiter::new(limits),
                },
                invitation_limiter: InvitationLimiter::default(),
                questions,
                hashing,
                router,
                routing,
                hub,
                model,
                pipelines,
                metrics: Arc::new(Metrics::for_replica(&replica)),
                flashes: Flashes::default(),
                trusted_proxies,
            }),
        })
    }

    /// Starts shutting down: live status streams end, and `/ready` answers
    /// `503 shutting_down` so a load balancer sends no more traffic here.
    pub fn begin_shutdown(&self) {
        self.inner.shutting_down.cancel();
    }

    /// Closes the agent sessions, each once what it runs is done, asking its
    /// agent to connect again (to another server behind the same address);
    /// resolves when they are gone, or after `limit`. Call it once the HTTP
    /// requests are done, since they may still need the agents.
    pub async fn drain_agents(&self, limit: Duration) {
        let hub = &self.inner.hub;
        hub.drain();
        if tokio::time::timeout(limit, hub.drained()).await.is_err() {
            tracing::warn!("agent sessions did not close within {} s; stopping", limit.as_secs());
        }
    }

    /// The configuration the server runs with.
    pub fn config(&self) -> &ServerConfig {
        &self.inner.config
    }

    /// What the state holds.
    pub(crate) fn inner(&self) -> &Inner {
        &self.inner
    }

    /// What the server-wide bound on password hashing has done so far.
    pub fn password_hashing(&self) -> HashingStats {
        self.inner.hashing.stats()
    }
}

impl axum::extract::FromRef<AppState> for TrustedProxies {
    fn from_ref(state: &AppState) -> Self {
        state.inner.trusted_proxies.clone()
    }
}

impl AuthState for AppState {
    fn jwt(&self) -> &JwtSecret {
        &self.inner.jwt
    }

    fn store(&self) -> &dyn Store {
        self.inner.store.as_ref()
    }
}

/// The engine the settings name: an OpenAI-compatible model or the offline engine.
fn language_model(settings: &LlmSettings) -> anyhow::Result<Arc<dyn LanguageModel>> {
    Ok(match settings {
        LlmSettings::Offline => Arc::new(OfflineEngine::new()),
        LlmSettings::OpenAi { base_url, model, api_key } => {
            let mut config = OpenAiConfig::new(base_url.clone(), model.clone());
            if let Some(key) = api_key {
                config = config.with_api_key(key.clone());
            }
            Arc::new(OpenAiModel::new(config).context("configuring the language model")?)
        }
    })
}

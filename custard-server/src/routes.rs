//! The router: every endpoint, the shared state, and serving it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::extract::{DefaultBodyLimit, State};
use axum::routing::{get, patch, post};
use axum::{Json, Router};
use serde_json::{Value, json};

use crate::accounts;
use crate::auth::JwtSecret;
use crate::config::ServerConfig;
use crate::error::{AppError, ErrorCode};
use crate::mail::Mailer;
use crate::rate_limit::{AttemptLimiter, Limits};
use crate::store::{SqliteStore, Store};

/// The most bytes a request body may have.
const MAX_BODY_BYTES: usize = 64 * 1024;

/// Shared by every handler.
#[derive(Clone, Debug)]
pub struct AppState {
    inner: Arc<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) config: ServerConfig,
    pub(crate) started: Instant,
    pub(crate) store: Arc<dyn Store>,
    pub(crate) mailer: Mailer,
    pub(crate) jwt: JwtSecret,
    pub(crate) access_lifetime: Duration,
    pub(crate) login_limiter: AttemptLimiter,
    pub(crate) signup_limiter: AttemptLimiter,
    pub(crate) forgot_limiter: AttemptLimiter,
}

impl AppState {
    /// Opens everything `config` names: the data dir, the SQLite store, the JWT
    /// secret and the mailer.
    pub fn open(config: ServerConfig) -> anyhow::Result<Self> {
        Self::open_with_limits(config, Limits::default())
    }

    /// [`AppState::open`] with custom rate limits (tests use small ones).
    pub fn open_with_limits(config: ServerConfig, limits: Limits) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&config.data_dir).with_context(|| {
            format!("creating the data directory {}", config.data_dir.display())
        })?;
        let store =
            SqliteStore::open(&config.data_dir.join("custard.db")).context("opening the store")?;
        let jwt = crate::secrets::jwt_secret(&config.data_dir, config.jwt_secret.as_deref())?;
        let mailer = Mailer::from_settings(
            config.smtp_url.as_deref(),
            &config.data_dir,
            crate::mail::DEFAULT_FROM,
        )?;
        tracing::info!(mail = %mailer.describe(), "email");
        Ok(AppState {
            inner: Arc::new(Inner {
                config,
                started: Instant::now(),
                store: Arc::new(store),
                mailer,
                jwt,
                access_lifetime: crate::auth::DEFAULT_ACCESS_LIFETIME,
                login_limiter: AttemptLimiter::new(limits),
                signup_limiter: AttemptLimiter::new(limits),
                forgot_limiter: AttemptLimiter::new(limits),
            }),
        })
    }

    /// The configuration the server runs with.
    pub fn config(&self) -> &ServerConfig {
        &self.inner.config
    }

    pub(crate) fn inner(&self) -> &Inner {
        &self.inner
    }
}

/// The whole HTTP API.
pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/status", get(status))
        .route("/api/v1/auth/signup", post(accounts::signup))
        .route(
            "/api/v1/auth/verify-email",
            post(accounts::verify_email_post).get(accounts::verify_email_get),
        )
        .route("/api/v1/auth/login", post(accounts::login))
        .route("/api/v1/auth/logout", post(accounts::logout))
        .route("/api/v1/auth/forgot-password", post(accounts::forgot_password))
        .route("/api/v1/auth/reset-password", post(accounts::reset_password))
        .route("/api/v1/auth/profile", get(accounts::profile).put(accounts::update_profile))
        .route("/api/v1/auth/change-password", post(accounts::change_password))
        .route("/api/v1/auth/accept-invitation", post(accounts::accept_invitation))
        .route("/api/v1/org", get(accounts::organization))
        .route("/api/v1/org/members", get(accounts::members))
        .route("/api/v1/org/invitations", post(accounts::invite))
        .route(
            "/api/v1/org/members/{id}",
            patch(accounts::change_role).delete(accounts::remove_member),
        )
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

/// Serves the API on the configured address until Ctrl-C or SIGTERM.
pub async fn run(config: ServerConfig) -> anyhow::Result<()> {
    let bind = config.bind;
    let state = AppState::open(config)?;
    let listener = tokio::net::TcpListener::bind(bind)
        .await
        .with_context(|| format!("listening on {bind}"))?;
    tracing::info!(address = %listener.local_addr()?, "custard-server listening");
    // Client addresses feed the per-IP rate limits.
    let service = app(state).into_make_service_with_connect_info::<std::net::SocketAddr>();
    axum::serve(listener, service).with_graceful_shutdown(shutdown_signal()).await?;
    Ok(())
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

/// Liveness: answers as long as the process serves requests.
async fn health() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// Readiness and version; nothing about any tenant.
async fn status(State(state): State<AppState>) -> Json<Value> {
    let store = match state.inner.store.ping().await {
        Ok(()) => "ok",
        Err(_) => "unavailable",
    };
    Json(json!({
        "status": if store == "ok" { "ok" } else { "degraded" },
        "version": env!("CARGO_PKG_VERSION"),
        "store": store,
        "uptime_secs": state.inner.started.elapsed().as_secs(),
    }))
}

async fn not_found() -> AppError {
    AppError::new(ErrorCode::NotFound, "no such endpoint")
}

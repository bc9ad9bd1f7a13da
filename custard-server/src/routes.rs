//! The router: every endpoint, the shared state, and serving it.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{DefaultBodyLimit, State};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

use crate::config::ServerConfig;
use crate::error::{AppError, ErrorCode};

/// The most bytes a request body may have.
const MAX_BODY_BYTES: usize = 64 * 1024;

/// Shared by every handler.
#[derive(Clone, Debug)]
pub struct AppState {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: ServerConfig,
    started: Instant,
}

impl AppState {
    /// State for `config`.
    pub fn new(config: ServerConfig) -> Self {
        AppState { inner: Arc::new(Inner { config, started: Instant::now() }) }
    }

    /// The configuration the server runs with.
    pub fn config(&self) -> &ServerConfig {
        &self.inner.config
    }
}

/// The whole HTTP API.
pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/status", get(status))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

/// Serves the API on the configured address until Ctrl-C or SIGTERM.
pub async fn run(config: ServerConfig) -> anyhow::Result<()> {
    let bind = config.bind;
    let listener = tokio::net::TcpListener::bind(bind).await?;
    tracing::info!(address = %listener.local_addr()?, "custard-server listening");
    axum::serve(listener, app(AppState::new(config)))
        .with_graceful_shutdown(shutdown_signal())
        .await?;
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
    Json(json!({
        "status": "ok",
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_secs": state.inner.started.elapsed().as_secs(),
    }))
}

async fn not_found() -> AppError {
    AppError::new(ErrorCode::NotFound, "no such endpoint")
}

//! `/health`, `/ready`, `/status` and `/metrics`: liveness, readiness and
//! metrics for operators and load balancers. Nothing here is about a tenant.

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::{AppError, ErrorCode};
use crate::openapi::{DeclaredError, errors};
use crate::state::AppState;

/// The process is up.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Health {
    /// Always `ok`.
    #[schema(example = "ok")]
    status: &'static str,
}

/// `/health` cannot fail.
const HEALTH_ERRORS: &[DeclaredError] = errors![];

/// Liveness
///
/// Answers as long as the process serves requests.
#[utoipa::path(
    get,
    path = "/health",
    tag = "meta",
    responses((status = 200, description = "The process is up", body = Health)),
    extensions(("x-errors" = json!(HEALTH_ERRORS))),
)]
pub(crate) async fn health() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// `/ready` fails when the store or NATS does not answer, or the server shuts down.
const READY_ERRORS: &[DeclaredError] = errors![
    StoreUnavailable: "the store does not answer: send no traffic here for now",
    RoutingUnavailable: "NATS does not answer: send no traffic here for now",
    ShuttingDown,
];

/// Readiness for a load balancer
///
/// `200` when this replica can serve requests (its store answers, and NATS
/// when it routes between replicas); `503 store_unavailable` or `503
/// routing_unavailable` when not, and `503 shutting_down` once it is
/// shutting down, so a balancer sends traffic elsewhere.
#[utoipa::path(
    get,
    path = "/ready",
    tag = "meta",
    responses((status = 200, description = "Ready to serve", body = Health)),
    extensions(("x-errors" = json!(READY_ERRORS))),
)]
pub(crate) async fn ready(State(state): State<AppState>) -> Result<Json<Health>, AppError> {
    if state.inner().shutting_down.is_cancelled() {
        return Err(AppError::new(
            ErrorCode::ShuttingDown,
            "this server is shutting down: send its traffic elsewhere",
        ));
    }
    state.inner().store.ping().await?;
    if state.inner().routing.as_ref().is_some_and(|r| !r.connected()) {
        return Err(AppError::new(
            ErrorCode::RoutingUnavailable,
            "this server cannot reach NATS, so not the agents of the other servers",
        ));
    }
    Ok(Json(Health { status: "ok" }))
}

/// The server's readiness; nothing about any tenant.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Status {
    /// `ok`, or `degraded` when the store is unavailable.
    #[schema(example = "ok")]
    status: &'static str,
    /// The server's version.
    version: &'static str,
    /// `ok` or `unavailable`.
    #[schema(example = "ok")]
    store: &'static str,
    /// Agent sessions connected to this server.
    agents_online: usize,
    /// The engine that writes SQL: `offline` or a model name.
    engine: String,
    uptime_secs: u64,
}

/// `/status` reports an unavailable store in its body.
const STATUS_ERRORS: &[DeclaredError] = errors![];

/// Readiness and version
///
/// Whether the store answers, the version, the engine and the agents online.
#[utoipa::path(
    get,
    path = "/status",
    tag = "meta",
    responses((status = 200, description = "Readiness; `status` says whether it is degraded", body = Status)),
    extensions(("x-errors" = json!(STATUS_ERRORS))),
)]
pub(crate) async fn status(State(state): State<AppState>) -> Json<Status> {
    let store = match state.inner().store.ping().await {
        Ok(()) => "ok",
        Err(_) => "unavailable",
    };
    Json(Status {
        status: if store == "ok" { "ok" } else { "degraded" },
        version: env!("CARGO_PKG_VERSION"),
        store,
        agents_online: state.inner().router.agents_online(),
        engine: state.inner().model.name(),
        uptime_secs: state.inner().started.elapsed().as_secs(),
    })
}

const METRICS_ERRORS: &[DeclaredError] = errors![
    Unauthorized: "no token, or not the configured one",
    NotFound: "metrics are off (no token configured)",
    Internal,
];

/// Prometheus metrics
///
/// HTTP requests and latencies by route, agents online and questions by
/// outcome, in the Prometheus text format. Only with the bearer token set in
/// `CUSTARD_METRICS_TOKEN`; without one configured, the endpoint is off.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "meta",
    security(("metrics_token" = [])),
    responses(
        (status = 200, description = "The metrics", content_type = "text/plain; version=0.0.4", body = String),
    ),
    extensions(("x-errors" = json!(METRICS_ERRORS))),
)]
pub(crate) async fn metrics(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let inner = state.inner();
    let token = state.config().metrics_token.as_deref();
    crate::metrics::scrape(&inner.metrics, token, &headers, inner.router.agents_online())
}

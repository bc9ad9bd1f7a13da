//! The router: every endpoint, the shared state, and serving it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::{Json, Router};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use custard_core::llm::{LanguageModel, OfflineEngine, OpenAiConfig, OpenAiModel};

use crate::accounts;
use crate::auth::JwtSecret;
use crate::config::{LlmSettings, ServerConfig};
use crate::error::{AppError, ErrorBody, ErrorCode};
use crate::extract::ClientIp;
use crate::hashing::{HashingStats, PasswordHashing};
use crate::hub::{self, AgentRouter, HubSettings, LocalHub};
use crate::mail::Mailer;
use crate::metrics::{self, Metrics};
use crate::queries::Pipelines;
use crate::rate_limit::{
    AttemptLimiter, FailureLimiter, InvitationLimiter, Limits, QuestionLimiter,
};
use crate::store::{SqliteStore, Store};
use crate::{connections, openapi, queries};

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
    pub(crate) reset_limiter: AttemptLimiter,
    /// Wrong current passwords, per account (change of password).
    pub(crate) password_failures: FailureLimiter,
    pub(crate) invitation_limiter: InvitationLimiter,
    pub(crate) questions: QuestionLimiter,
    /// Every password hash and verification of the server goes through it.
    pub(crate) hashing: PasswordHashing,
    /// The hub that holds this server's agent sockets.
    pub(crate) hub: Arc<LocalHub>,
    /// The same hub, as handlers see it.
    pub(crate) router: Arc<dyn AgentRouter>,
    /// The engine that writes SQL.
    pub(crate) model: Arc<dyn LanguageModel>,
    pub(crate) pipelines: Pipelines,
    pub(crate) metrics: Arc<Metrics>,
    /// What the web pages show once after a form's redirect (new API keys).
    pub(crate) flashes: crate::web::flash::Flashes,
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
                reset_limiter: AttemptLimiter::new(limits),
                password_failures: FailureLimiter::new(limits),
                invitation_limiter: InvitationLimiter::default(),
                questions,
                hashing,
                router: Arc::clone(&hub) as Arc<dyn AgentRouter>,
                hub,
                model,
                pipelines: Pipelines::default(),
                metrics: Arc::new(Metrics::default()),
                flashes: crate::web::flash::Flashes::default(),
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

    /// What the server-wide bound on password hashing has done so far.
    pub fn password_hashing(&self) -> HashingStats {
        self.inner.hashing.stats()
    }
}

/// The whole HTTP API, its OpenAPI document at `/api/v1/openapi.json` and
/// the docs page at `/api/v1/docs`.
pub fn app(state: AppState) -> Router {
    let body_deadline = state.config().request_read_timeout();
    let (router, document) = endpoints().split_for_parts();
    router
        .merge(openapi::docs(document))
        .merge(crate::web::pages())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(state.clone(), crate::web::error_pages))
        // A route layer sees the matched route; unmatched paths are not counted,
        // so random URLs cannot grow the label set.
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), metrics::track))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn(move |request, next| {
            crate::serve::read_body_in_time(body_deadline, MAX_BODY_BYTES, request, next)
        }))
        .with_state(state)
}

/// Every endpoint, each with its OpenAPI operation: `routes!` takes the method
/// and path from the handler's `#[utoipa::path]`, so nothing is served
/// undocumented and the document cannot name a route that is not served.
pub(crate) fn endpoints() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(openapi::base())
        .routes(routes!(health))
        .routes(routes!(status))
        .routes(routes!(metrics))
        .routes(routes!(accounts::signup))
        .routes(routes!(accounts::verify_email_post, accounts::verify_email_get))
        .routes(routes!(accounts::login))
        .routes(routes!(accounts::logout))
        .routes(routes!(accounts::logout_others))
        .routes(routes!(accounts::resend_verification_email))
        .routes(routes!(accounts::forgot_password))
        .routes(routes!(accounts::reset_password))
        .routes(routes!(accounts::profile, accounts::update_profile))
        .routes(routes!(accounts::change_password))
        .routes(routes!(accounts::accept_invitation))
        .routes(routes!(accounts::organization, accounts::delete_organization))
        .routes(routes!(accounts::members))
        .routes(routes!(accounts::invite, accounts::list_invitations))
        .routes(routes!(accounts::revoke_invitation))
        .routes(routes!(accounts::resend_invitation))
        .routes(routes!(accounts::change_role, accounts::remove_member))
        .routes(routes!(connections::create, connections::list))
        .routes(routes!(connections::events))
        .routes(routes!(connections::get, connections::update, connections::delete))
        .routes(routes!(connections::schema))
        .routes(routes!(connections::refresh_schema))
        .routes(routes!(connections::rotate_key))
        .routes(routes!(agent_socket))
        .routes(routes!(queries::ask))
        .routes(routes!(queries::ask_stream))
        .routes(routes!(queries::list))
        .routes(routes!(queries::get, queries::delete))
        .routes(routes!(queries::feedback))
        .routes(routes!(queries::export_csv))
}

/// Serves the API on the configured address until Ctrl-C or SIGTERM.
pub async fn run(config: ServerConfig) -> anyhow::Result<()> {
    let bind = config.bind;
    let demo = config.demo;
    let state = AppState::open(config)?;
    let listener = tokio::net::TcpListener::bind(bind)
        .await
        .with_context(|| format!("listening on {bind}"))?;
    let address = listener.local_addr()?;
    tracing::info!(%address, "custard-server listening");
    let stop = tokio_util::sync::CancellationToken::new();
    if demo {
        let login =
            crate::demo::start(&state, address, stop.clone()).await.context("starting the demo")?;
        // The console is the one place the demo password is shown.
        println!(
            "\nCustard demo is running at http://{address}\n  \
             email:    {}\n  password: {}\n  \
             API docs: http://{address}/api/v1/docs\n",
            login.email, login.password
        );
    }
    let limits = state.config().serve_limits();
    tokio::spawn({
        let stop = stop.clone();
        async move {
            shutdown_signal().await;
            stop.cancel();
        }
    });
    crate::serve::serve(listener, app(state), limits, stop.clone()).await?;
    stop.cancel();
    Ok(())
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

/// The process is up.
#[derive(Debug, Serialize, ToSchema)]
struct Health {
    /// Always `ok`.
    #[schema(example = "ok")]
    status: &'static str,
}

/// Liveness
///
/// Answers as long as the process serves requests.
#[utoipa::path(
    get,
    path = "/health",
    tag = "meta",
    responses((status = 200, description = "The process is up", body = Health))
)]
async fn health() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// The server's readiness; nothing about any tenant.
#[derive(Debug, Serialize, ToSchema)]
struct Status {
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

/// Readiness and version
///
/// Whether the store answers, the version, the engine and the agents online.
#[utoipa::path(
    get,
    path = "/status",
    tag = "meta",
    responses((status = 200, description = "Readiness; `status` says whether it is degraded", body = Status))
)]
async fn status(State(state): State<AppState>) -> Json<Status> {
    let store = match state.inner.store.ping().await {
        Ok(()) => "ok",
        Err(_) => "unavailable",
    };
    Json(Status {
        status: if store == "ok" { "ok" } else { "degraded" },
        version: env!("CARGO_PKG_VERSION"),
        store,
        agents_online: state.inner.router.agents_online(),
        engine: state.inner.model.name(),
        uptime_secs: state.inner.started.elapsed().as_secs(),
    })
}

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
        (status = 401, description = "`unauthorized`: no token, or not the configured one", body = ErrorBody),
        (status = 404, description = "`not_found`: metrics are off (no token configured)", body = ErrorBody),
        (status = 500, description = "`internal`", body = ErrorBody),
    )
)]
async fn metrics(state: State<AppState>, headers: HeaderMap) -> Response {
    // Documented here because `metrics` only knows how to serve.
    metrics::metrics(state, headers).await
}

/// The agent's WebSocket
///
/// A `GET` that upgrades to a WebSocket speaking the agent protocol (wire
/// v1: `hello`, then schema and query frames). The connection's API key is
/// the bearer token; anything else is refused before the upgrade.
#[utoipa::path(
    get,
    path = "/api/v1/connections/ws/{id}",
    tag = "agent",
    security(("agent_api_key" = [])),
    params(("id" = String, Path, description = "The connection's id")),
    responses(
        (status = 101, description = "Switching to the WebSocket protocol"),
        (status = 401, description = "`unauthorized`: no key, a malformed, rotated or unknown key, or the key of another connection", body = ErrorBody),
        (status = 422, description = "`validation_error`: not a WebSocket upgrade request", body = ErrorBody),
    )
)]
async fn agent_socket(
    state: State<AppState>,
    id: Path<String>,
    ip: ClientIp,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    // Documented here because `hub` knows nothing of the HTTP API's document.
    hub::agent_socket(state, id, ip, headers, upgrade).await
}

/// Unknown paths: a JSON error under `/api/`, an HTML page for browsers elsewhere.
/// A known path asked with a method it does not take: the API's error body
/// (axum adds the `Allow` header).
async fn method_not_allowed(method: axum::http::Method) -> AppError {
    AppError::new(ErrorCode::MethodNotAllowed, format!("this path does not take {method}"))
}

async fn not_found(uri: axum::http::Uri) -> axum::response::Response {
    use axum::response::IntoResponse;
    if uri.path().starts_with("/api/") {
        AppError::new(ErrorCode::NotFound, "no such endpoint").into_response()
    } else {
        crate::web::WebError(AppError::new(ErrorCode::NotFound, "there is no such page"))
            .into_response()
    }
}

//! The router: every endpoint of the API with its OpenAPI operation, the web
//! pages, the layers around them, and serving it all.
//!
//! This is the one module that sees both surfaces, the JSON API ([`crate::api`])
//! and the web pages ([`crate::web`]); neither imports the other.

use std::io::Write as _;

use anyhow::Context;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::api::{accounts, connections, meta, org, queries, tokens};
use crate::config::ServerConfig;
use crate::error::{AppError, ErrorCode};
use crate::state::AppState;
use crate::{metrics, openapi};

/// The most bytes a request body may have.
const MAX_BODY_BYTES: usize = 64 * 1024;

/// The whole HTTP API, its OpenAPI document at `/api/v1/openapi.json` and
/// the docs page at `/api/v1/docs`.
pub fn app(state: AppState) -> Router {
    let body_deadline = state.config().request_read_timeout();
    let (router, document) = endpoints().split_for_parts();
    router
        .merge(openapi::docs(document))
        .merge(crate::web::pages())
        .merge(crate::mcp::routes(&state))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(state.clone(), crate::web::error_pages))
        // A route layer sees the matched route; unmatched paths are not counted,
        // so random URLs cannot grow the label set.
        .route_layer(axum::middleware::from_fn_with_state(
            std::sync::Arc::clone(&state.inner().metrics),
            metrics::track,
        ))
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
        .routes(routes!(meta::health))
        .routes(routes!(meta::ready))
        .routes(routes!(meta::status))
        .routes(routes!(meta::metrics))
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
        .routes(routes!(org::organization, org::delete_organization))
        .routes(routes!(org::members))
        .routes(routes!(org::invite, org::list_invitations))
        .routes(routes!(org::revoke_invitation))
        .routes(routes!(org::resend_invitation))
        .routes(routes!(org::change_role, org::remove_member))
        .routes(routes!(tokens::create_token, tokens::list_tokens))
        .routes(routes!(tokens::revoke_token))
        .routes(routes!(connections::create, connections::list))
        .routes(routes!(connections::events))
        .routes(routes!(connections::get, connections::update, connections::delete))
        .routes(routes!(connections::schema))
        .routes(routes!(connections::refresh_schema))
        .routes(routes!(connections::rotate_key))
        .routes(routes!(connections::agent_socket))
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
    let state = AppState::open(config).await?;
    let listener = tokio::net::TcpListener::bind(bind)
        .await
        .with_context(|| format!("listening on {bind}"))?;
    let address = listener.local_addr()?;
    tracing::info!(%address, "custard-server listening");
    let stop = tokio_util::sync::CancellationToken::new();
    if demo {
        let login =
            crate::demo::start(&state, address, stop.clone()).await.context("starting the demo")?;
        // The console is the one place the demo password is shown. A closed
        // stdout (a supervisor or a pipe that stopped reading) must not stop
        // the server, as `println!` would by panicking.
        let banner = format!(
            "\nCustard demo is running at http://{address}\n  \
             email:    {}\n  password: {}\n  \
             API docs: http://{address}/api/v1/docs\n",
            login.email, login.password
        );
        let mut stdout = std::io::stdout().lock();
        if let Err(e) = writeln!(stdout, "{banner}").and_then(|()| stdout.flush()) {
            tracing::warn!("could not print the demo's sign-in to stdout: {e}");
        }
    }
    let limits = state.config().serve_limits();
    tokio::spawn({
        let (stop, state) = (stop.clone(), state.clone());
        async move {
            shutdown_signal().await;
            state.begin_shutdown();
            stop.cancel();
        }
    });
    // Returns once no new connection is taken and the open requests are done
    // (or the drain limit passed); the agents may still serve those until then.
    crate::serve::serve(listener, app(state.clone()), limits, stop.clone()).await?;
    stop.cancel();
    // Then the agents are asked to connect again, elsewhere.
    state.drain_agents(AGENT_DRAIN).await;
    Ok(())
}

/// How long shutting down waits for the agent sessions to close, after the
/// HTTP requests are done: a session's own limit, and its close and
/// last-seen write.
const AGENT_DRAIN: std::time::Duration = std::time::Duration::from_secs(12);

/// Resolves on Ctrl-C or, on Unix, SIGTERM.
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

/// A known path asked with a method it does not take: the API's error body
/// (axum adds the `Allow` header).
async fn method_not_allowed(method: axum::http::Method) -> AppError {
    AppError::new(ErrorCode::MethodNotAllowed, format!("this path does not take {method}"))
}

/// Unknown paths: a JSON error under `/api/`, an HTML page for browsers elsewhere.
async fn not_found(uri: axum::http::Uri) -> axum::response::Response {
    use axum::response::IntoResponse;
    if uri.path().starts_with("/api/") {
        AppError::new(ErrorCode::NotFound, "no such endpoint").into_response()
    } else {
        crate::web::WebError(AppError::new(ErrorCode::NotFound, "there is no such page"))
            .into_response()
    }
}

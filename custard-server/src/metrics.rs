//! `/metrics` in the Prometheus text format: HTTP
//! requests and latencies by route, agents online, questions by outcome.
//!
//! Labels use the matched route (`/api/v1/queries/{id}`), never the raw path,
//! so ids do not grow the label set; tenants never appear in labels.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::{EncodeLabelSet, prometheus_text};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::auth::{hash_secret, hashes_equal};
use crate::error::{AppError, ErrorCode};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    method: String,
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ToolLabels {
    tool: String,
    outcome: String,
}

/// The server's metrics; cheap to update from any thread.
#[derive(Debug)]
pub(crate) struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram>,
    questions: Family<OutcomeLabels, Counter>,
    mcp_tool_calls: Family<ToolLabels, Counter>,
    agents_online: Gauge,
}

impl Metrics {
    /// The metrics of the server named `replica` (each series carries it as
    /// its `custard_replica` label, so replicas scraped together stay apart;
    /// not `replica`, which Prometheus HA setups use for their own pairs).
    pub(crate) fn for_replica(replica: &str) -> Self {
        let label = (Cow::Borrowed("custard_replica"), Cow::Owned(replica.to_owned()));
        let mut registry = Registry::with_prefix_and_labels("custard", std::iter::once(label));
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register("http_requests", "HTTP requests by route and status", requests.clone());
        let latency = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            // 0.25 ms to about 8 s.
            Histogram::new(exponential_buckets(0.000_25, 2.0, 16))
        });
        registry.register(
            "http_request_duration_seconds",
            "Time to the response head, by route",
            latency.clone(),
        );
        let questions = Family::<OutcomeLabels, Counter>::default();
        registry.register("questions", "Questions asked, by outcome", questions.clone());
        let mcp_tool_calls = Family::<ToolLabels, Counter>::default();
        registry.register(
            "mcp_tool_calls",
            "MCP tool calls, by tool and outcome (ok or an error code)",
            mcp_tool_calls.clone(),
        );
        let agents_online = Gauge::default();
        registry.register("agents_online", "Agent sessions connected", agents_online.clone());
        Metrics { registry, requests, latency, questions, mcp_tool_calls, agents_online }
    }
}

impl Metrics {
    /// Counts a question by its outcome (`ok` or an error code).
    pub(crate) fn question(&self, outcome: &str) {
        self.questions.get_or_create(&OutcomeLabels { outcome: outcome.to_owned() }).inc();
    }

    /// Counts an MCP tool call by its tool (one of the server's own names)
    /// and outcome (`ok` or an error code).
    pub(crate) fn mcp_tool_call(&self, tool: &'static str, outcome: &str) {
        let labels = ToolLabels { tool: tool.to_owned(), outcome: outcome.to_owned() };
        self.mcp_tool_calls.get_or_create(&labels).inc();
    }

    fn render(&self, agents_online: usize) -> Result<String, std::fmt::Error> {
        self.agents_online.set(i64::try_from(agents_online).unwrap_or(i64::MAX));
        let mut text = String::new();
        prometheus_text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

/// Middleware: counts every request and times it by matched route.
pub(crate) async fn track(
    State(metrics): State<Arc<Metrics>>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    // Methods are whatever a client sends: any but the standard ones count
    // as `other`, so requests cannot grow the label set.
    let method = match request.method().as_str() {
        m @ ("GET" | "HEAD" | "POST" | "PUT" | "PATCH" | "DELETE" | "OPTIONS") => m,
        _ => "other",
    }
    .to_owned();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let response = next.run(request).await;
    let status = response.status().as_u16();
    metrics
        .requests
        .get_or_create(&RequestLabels { method: method.clone(), route: route.clone(), status })
        .inc();
    metrics
        .latency
        .get_or_create(&RouteLabels { method, route })
        .observe(started.elapsed().as_secs_f64());
    response
}

/// What `GET /metrics` answers: the metrics in the Prometheus text format
/// with `agents_online`, for the holder of the configured metrics `token`
/// only (the counters show every route's traffic and latency and the
/// outcomes of all tenants' questions, which are the operator's business).
/// Without a configured token the endpoint is off.
pub(crate) fn scrape(
    metrics: &Metrics,
    token: Option<&str>,
    headers: &HeaderMap,
    agents_online: usize,
) -> Response {
    let Some(expected) = token.filter(|t| !t.is_empty()) else {
        return AppError::new(
            ErrorCode::NotFound,
            "metrics are off; set CUSTARD_METRICS_TOKEN and scrape with that bearer token",
        )
        .into_response();
    };
    let offered = crate::auth::bearer_token(headers).unwrap_or_default();
    // Hashes first, so the comparison takes the same time whatever the lengths.
    if !hashes_equal(&hash_secret(offered), &hash_secret(expected)) {
        return AppError::new(ErrorCode::Unauthorized, "the metrics token is missing or wrong")
            .into_response();
    }
    match metrics.render(agents_online) {
        Ok(text) => ([(header::CONTENT_TYPE, prometheus_text::CONTENT_TYPE)], text).into_response(),
        Err(e) => AppError::internal(e).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::StatusCode;
    use clap::Parser as _;
    use tower::ServiceExt as _;

    /// The status of `GET /metrics` with `authorization`, on a server started with `args`.
    async fn scrape(args: &[&str], authorization: Option<&str>) -> StatusCode {
        let dir = tempfile::tempdir().expect("tempdir");
        let data_dir = dir.path().to_str().expect("utf-8");
        let mut all = vec!["custard-server", "--data-dir", data_dir];
        all.extend_from_slice(args);
        let config = crate::config::ServerConfig::parse_from(all);
        let app = crate::routes::app(crate::AppState::open(config).await.expect("state"));
        let mut request = axum::http::Request::builder().uri("/metrics");
        if let Some(value) = authorization {
            request = request.header(header::AUTHORIZATION, value);
        }
        let response =
            app.oneshot(request.body(Body::empty()).expect("request")).await.expect("infallible");
        response.status()
    }

    #[tokio::test]
    async fn metrics_answer_only_the_configured_token() {
        let token = ["--metrics-token", "scrape-secret-1"];
        assert_eq!(scrape(&[], None).await, StatusCode::NOT_FOUND, "off without a token");
        assert_eq!(scrape(&[], Some("Bearer ")).await, StatusCode::NOT_FOUND);
        assert_eq!(scrape(&token, None).await, StatusCode::UNAUTHORIZED);
        assert_eq!(scrape(&token, Some("Bearer scrape-secret")).await, StatusCode::UNAUTHORIZED);
        assert_eq!(scrape(&token, Some("scrape-secret-1")).await, StatusCode::UNAUTHORIZED);
        assert_eq!(scrape(&token, Some("Bearer scrape-secret-1")).await, StatusCode::OK);
        // The scheme's case does not matter (RFC 9110).
        assert_eq!(scrape(&token, Some("bearer scrape-secret-1")).await, StatusCode::OK);
    }

    /// Any method a client makes up counts as `other`: requests cannot grow
    /// the label set (`/mcp` answers every method with its own status).
    #[tokio::test]
    async fn made_up_methods_share_one_label() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data_dir = dir.path().to_str().expect("utf-8");
        let config = crate::config::ServerConfig::parse_from([
            "custard-server",
            "--data-dir",
            data_dir,
            "--metrics-token",
            "scrape-secret-1",
        ]);
        let state = crate::AppState::open(config).await.expect("state");
        let app = crate::routes::app(state.clone());
        for method in ["ZZZ1", "ZZZ2", "GET"] {
            let request = axum::http::Request::builder()
                .method(method)
                .uri("/mcp")
                .body(Body::empty())
                .expect("request");
            app.clone().oneshot(request).await.expect("infallible");
        }
        let text = state.inner().metrics.render(0).expect("render");
        assert!(!text.contains("ZZZ"), "{text}");
        assert!(text.contains("method=\"other\",route=\"/mcp\",status=\"401\"} 2"), "{text}");
        assert!(text.contains("method=\"GET\",route=\"/mcp\",status=\"401\"} 1"), "{text}");
    }

    #[test]
    fn renders_counters_by_label() {
        let metrics = Metrics::for_replica("east-1");
        metrics.question("ok");
        metrics.question("ok");
        metrics.question("agent_offline");
        let text = metrics.render(3).expect("render");
        // Every series names the replica it comes from.
        assert!(
            text.contains("custard_questions_total{custard_replica=\"east-1\",outcome=\"ok\"} 2"),
            "{text}"
        );
        assert!(
            text.contains(
                "custard_questions_total{custard_replica=\"east-1\",outcome=\"agent_offline\"} 1"
            ),
            "{text}"
        );
        assert!(text.contains("custard_agents_online{custard_replica=\"east-1\"} 3"), "{text}");
    }
}

//! The OpenAPI 3.1 document of the API and its docs page.
//!
//! The document is generated from the handlers' `#[utoipa::path]` attributes
//! and the response types they really serialize; [`crate::routes::endpoints`]
//! registers each handler with its operation, so the router and the document
//! are built from one list. Served without authentication: the document holds
//! no tenant data.

use axum::Router;
use utoipa::openapi::OpenApi as Document;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_swagger_ui::{Config, SwaggerUi};

/// Where the document is served.
pub(crate) const DOCUMENT_PATH: &str = "/api/v1/openapi.json";
/// Where the Swagger UI page is served (its assets are compiled in).
pub(crate) const DOCS_PATH: &str = "/api/v1/docs";

/// The security scheme of user endpoints: the JWT from login.
const USER_TOKEN: &str = "access_token";
/// The security scheme of the agent's socket: a connection's API key.
const AGENT_KEY: &str = "agent_api_key";
/// The security scheme of `/metrics`: the operator's `CUSTARD_METRICS_TOKEN`.
const METRICS_TOKEN: &str = "metrics_token";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Custard API",
        description = "Ask questions about your databases in plain language.\n\n\
            Sign up, verify the email and log in to get a bearer token (`access_token`). \
            Create a connection to get an agent API key, run the agent next to the \
            database, then `POST /api/v1/query`.\n\n\
            Every error answers `{\"error\": {\"code\", \"message\"}}` (`ErrorBody`); the \
            HTTP status follows from the code (see `ErrorCode`). Besides the statuses \
            listed per operation, an endpoint that reads the store may answer 503 \
            `unavailable`, and any endpoint 500 `internal` (a bug, logged on the server). \
            A limit's refusal (429 `rate_limited` or `too_many_questions`, 503 \
            `server_busy`) carries a `Retry-After` header: the seconds to wait.",
    ),
    modifiers(&SecuritySchemes),
    tags(
        (name = "accounts", description = "Sign-up, email verification, sessions, passwords and profile"),
        (name = "organization", description = "The caller's organisation, its members and invitations"),
        (name = "connections", description = "Databases, their agent API keys, schemas and live status"),
        (name = "agent", description = "The socket the agent (custard-agent) connects to"),
        (name = "queries", description = "Questions, answers, their history, feedback and export"),
        (name = "meta", description = "Liveness, readiness and metrics for operators"),
    )
)]
struct ApiDoc;

/// Adds the bearer schemes the operations refer to.
struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, document: &mut Document) {
        let components = document.components.get_or_insert_with(Default::default);
        let user = HttpBuilder::new()
            .scheme(HttpAuthScheme::Bearer)
            .bearer_format("JWT")
            .description(Some("The `access_token` from `POST /api/v1/auth/login`."))
            .build();
        components.add_security_scheme(USER_TOKEN, SecurityScheme::Http(user));
        let agent = HttpBuilder::new()
            .scheme(HttpAuthScheme::Bearer)
            .bearer_format("custard_...")
            .description(Some(
                "A connection's API key (`api_key` when it was created or its key rotated).",
            ))
            .build();
        components.add_security_scheme(AGENT_KEY, SecurityScheme::Http(agent));
        let metrics = HttpBuilder::new()
            .scheme(HttpAuthScheme::Bearer)
            .description(Some("The token set in `CUSTARD_METRICS_TOKEN` on the server."))
            .build();
        components.add_security_scheme(METRICS_TOKEN, SecurityScheme::Http(metrics));
    }
}

/// The document without paths: what [`crate::routes::endpoints`] adds its operations to.
pub(crate) fn base() -> Document {
    ApiDoc::openapi()
}

/// The routes of the document and its Swagger UI page (they need no state).
pub(crate) fn docs<S: Clone + Send + Sync + 'static>(document: Document) -> Router<S> {
    SwaggerUi::new(DOCS_PATH)
        .url(DOCUMENT_PATH, document)
        // The default fetches a validity badge from validator.swagger.io; stay offline.
        .config(Config::default().validator_url("none"))
        .into()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use axum::body::Body;
    use axum::http::{Method, Request, StatusCode};
    use clap::Parser;
    use serde_json::Value;
    use tower::ServiceExt;

    use super::*;
    use crate::AppState;
    use crate::config::ServerConfig;
    use crate::routes::app;

    /// The app on a fresh data directory (kept alive by the returned guard).
    fn test_app() -> (Router, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("tempdir");
        let data_dir = dir.path().to_str().expect("utf-8");
        let config = ServerConfig::parse_from(["custard-server", "--data-dir", data_dir]);
        (app(AppState::open(config).expect("state")), dir)
    }

    async fn call(app: &Router, method: Method, uri: &str) -> (StatusCode, String, String) {
        let request = Request::builder().method(method).uri(uri).body(Body::empty()).unwrap();
        let response = app.clone().oneshot(request).await.expect("infallible");
        let status = response.status();
        let content_type = response
            .headers()
            .get("content-type")
            .map_or_else(String::new, |v| v.to_str().unwrap_or_default().to_owned());
        let bytes = axum::body::to_bytes(response.into_body(), 16 << 20).await.expect("body");
        (status, content_type, String::from_utf8_lossy(&bytes).into_owned())
    }

    async fn served_document(app: &Router) -> Value {
        let (status, content_type, body) = call(app, Method::GET, DOCUMENT_PATH).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(content_type.starts_with("application/json"), "{content_type}");
        serde_json::from_str(&body).expect("the document is JSON")
    }

    /// Every `(METHOD, path)` the document lists.
    fn operations(document: &Value) -> BTreeSet<(String, String)> {
        let paths = document["paths"].as_object().expect("paths");
        let mut out = BTreeSet::new();
        for (path, item) in paths {
            for method in item.as_object().expect("path item").keys() {
                out.insert((method.to_uppercase(), path.clone()));
            }
        }
        out
    }

    /// Every `$ref` in `value`.
    fn refs<'v>(value: &'v Value, out: &mut Vec<&'v str>) {
        match value {
            Value::Object(map) => {
                for (key, v) in map {
                    match (key.as_str(), v) {
                        ("$ref", Value::String(r)) => out.push(r),
                        _ => refs(v, out),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }

    #[tokio::test]
    async fn the_document_is_openapi_3_and_complete() {
        let (app, _dir) = test_app();
        let document = served_document(&app).await;
        let version = document["openapi"].as_str().expect("openapi version");
        assert!(version.starts_with("3."), "{version}");
        assert_eq!(document["info"]["title"], "Custard API");

        // Every `$ref` resolves, so schemas used by a handler are all in components.
        let mut found = Vec::new();
        refs(&document, &mut found);
        assert!(!found.is_empty());
        for reference in found {
            let pointer = reference.strip_prefix('#').expect("a local reference");
            assert!(document.pointer(pointer).is_some(), "{reference} does not resolve");
        }

        // Every operation has a summary, a tag and a documented success.
        for (method, path) in operations(&document) {
            let op = &document["paths"][&path][method.to_lowercase()];
            assert!(op["summary"].is_string(), "{method} {path} has no summary");
            assert!(op["tags"][0].is_string(), "{method} {path} has no tag");
            let statuses: Vec<&String> = op["responses"].as_object().unwrap().keys().collect();
            assert!(
                statuses.iter().any(|s| s.starts_with('1') || s.starts_with('2')),
                "{method} {path}"
            );
        }

        // The error codes come from the one table.
        let codes = &document["components"]["schemas"]["ErrorCode"]["enum"];
        let codes: Vec<&str> = codes.as_array().unwrap().iter().filter_map(Value::as_str).collect();
        let table: Vec<&str> = crate::ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(codes, table);
    }

    #[tokio::test]
    async fn every_route_is_documented_and_every_documented_route_is_served() {
        let (app, _dir) = test_app();
        let document = served_document(&app).await;
        let documented = operations(&document);

        let spot_checks = [
            ("GET", "/health"),
            ("GET", "/metrics"),
            ("POST", "/api/v1/auth/login"),
            ("GET", "/api/v1/connections/ws/{id}"),
            ("GET", "/api/v1/connections/events"),
            ("POST", "/api/v1/query/stream"),
            ("GET", "/api/v1/queries/{id}/export.csv"),
        ];
        for (method, path) in spot_checks {
            assert!(documented.contains(&(method.to_owned(), path.to_owned())), "{method} {path}");
        }

        let paths: BTreeSet<&String> = documented.iter().map(|(_, p)| p).collect();
        for path in paths {
            let uri = path.replace("{id}", "x");
            for method in [Method::GET, Method::POST, Method::PUT, Method::PATCH, Method::DELETE] {
                let (status, _, body) = call(&app, method.clone(), &uri).await;
                let listed = documented.contains(&(method.to_string(), path.clone()));
                if listed {
                    // Served: the request reaches the handler (it may refuse it,
                    // but not as an unknown route or method).
                    assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {uri}");
                    assert!(!body.contains("no such endpoint"), "{method} {uri}: {body}");
                } else {
                    assert_eq!(
                        status,
                        StatusCode::METHOD_NOT_ALLOWED,
                        "{method} {uri} is served but not documented"
                    );
                }
            }
        }
    }

    #[tokio::test]
    async fn the_docs_page_and_its_assets_are_served_offline() {
        let (app, _dir) = test_app();
        let (status, _, _) = call(&app, Method::GET, DOCS_PATH).await;
        assert!(status.is_redirection(), "{status}");

        let (status, content_type, html) = call(&app, Method::GET, &format!("{DOCS_PATH}/")).await;
        assert_eq!(status, StatusCode::OK);
        assert!(content_type.starts_with("text/html"), "{content_type}");
        assert!(html.to_lowercase().contains("swagger"), "{html}");

        // The page's scripts are served from the binary, not a CDN.
        let scripts: Vec<&str> = html
            .split("src=\"")
            .skip(1)
            .filter_map(|rest| rest.split('"').next())
            .filter(|src| src.ends_with(".js"))
            .collect();
        assert!(!scripts.is_empty(), "{html}");
        for src in scripts {
            assert!(!src.contains("://"), "{src} is not local");
            let uri = format!("{DOCS_PATH}/{}", src.trim_start_matches("./"));
            let (status, content_type, body) = call(&app, Method::GET, &uri).await;
            assert_eq!(status, StatusCode::OK, "{uri}");
            assert!(content_type.contains("javascript"), "{uri}: {content_type}");
            assert!(!body.is_empty(), "{uri}");
        }

        // The initializer points at our document and not at the online validator.
        let (status, _, init) =
            call(&app, Method::GET, &format!("{DOCS_PATH}/swagger-initializer.js")).await;
        assert_eq!(status, StatusCode::OK);
        assert!(init.contains(DOCUMENT_PATH), "{init}");
        assert!(init.contains("\"validatorUrl\": \"none\""), "{init}");
    }
}

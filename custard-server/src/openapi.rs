//! The OpenAPI 3.1 document of the API and its docs page.
//!
//! The document is generated from the handlers' `#[utoipa::path]` attributes
//! and the response types they really serialize; [`crate::routes::endpoints`]
//! registers each handler with its operation, so the router and the document
//! are built from one list. Served without authentication: the document holds
//! no tenant data.
//!
//! Error responses are not written by hand. Next to each handler, its module
//! declares the codes that endpoint can answer with ([`errors!`], a const
//! `..._ERRORS`), and its `#[utoipa::path]` carries that list
//! (`extensions(("x-errors" = json!(..._ERRORS)))`); [`docs`] turns it into one
//! response per HTTP status, its description built from each code's words in
//! the table of `error.rs` (and the endpoint's note), its codes named in
//! `x-error-codes`. The codes any request may get before an operation runs
//! ([`ANY_OPERATION`]) are listed once, in `x-error-codes-any-operation`.

use std::collections::BTreeMap;

use axum::Router;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::openapi::OpenApi as Document;
use utoipa::openapi::extensions::Extensions;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::{Operation, PathItem};
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{Content, Ref, ResponseBuilder};
use utoipa::{Modify, OpenApi, ToSchema};
use utoipa_swagger_ui::{Config, SwaggerUi};

use crate::error::{ErrorBody, ErrorCode};

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

/// The operation extension that carries an operation's declared errors from
/// its `#[utoipa::path]` to [`add_error_responses`], which removes it.
const DECLARED: &str = "x-errors";
/// The extension of an error response that names its codes.
const RESPONSE_CODES: &str = "x-error-codes";
/// The document's extension that names the codes of [`ANY_OPERATION`].
const ANY_OPERATION_CODES: &str = "x-error-codes-any-operation";

/// A code an operation can answer with, and what it means there when the
/// table's words are not enough. Lists of them are written with [`errors!`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub(crate) struct DeclaredError {
    /// The code, whose HTTP status and words come from the table.
    pub(crate) code: ErrorCode,
    /// What the code means for this operation, as a phrase (no final period).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) note: Option<&'static str>,
}

/// The errors an endpoint can answer with: `ErrorCode` variants, each with a
/// note after `:` where the table's words are not enough.
///
/// ```text
/// const GET_ERRORS: &[DeclaredError] =
///     errors![Unauthorized, NotFound: "no such connection in the organisation"];
/// ```
macro_rules! errors {
    (@note) => { None };
    (@note $note:expr) => { Some($note) };
    ($($code:ident $(: $note:expr)?),* $(,)?) => {
        &[$($crate::openapi::DeclaredError {
            code: $crate::error::ErrorCode::$code,
            note: $crate::openapi::errors!(@note $($note)?),
        }),*]
    };
}
pub(crate) use errors;

/// What any request may be answered, whatever its operation, because it
/// happens before the router picks one (`serve.rs`): the connection refused
/// over a cap, the headers or the body late, and the body read whole (within
/// the API's limit) before routing.
pub(crate) const ANY_OPERATION: &[DeclaredError] = errors![
    InvalidJson: "a body that could not be read (a broken transfer)",
    RequestTimeout,
    PayloadTooLarge: "whatever the operation, one that takes no body too",
    TooManyConnections: "answered as the connection opens, before its request is read",
];

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Custard API",
        description = "Ask questions about your databases in plain language.\n\n\
            Sign up, verify the email and log in to get a bearer token (`access_token`). \
            Create a connection to get an agent API key, run the agent next to the \
            database, then `POST /api/v1/query`.\n\n\
            Every error answers `{\"error\": {\"code\", \"message\"}}` (`ErrorBody`); the \
            HTTP status follows from the code (see `ErrorCode`). Each operation lists the \
            codes it can answer with, one response per status, and each of those responses \
            names its codes in `x-error-codes`. A limit's refusal (429 `rate_limited` or \
            `too_many_questions`, 503 `server_busy`) carries a `Retry-After` header: the \
            seconds to wait.",
    ),
    components(schemas(ErrorBody)),
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

/// The routes of the document, its error responses added
/// ([`add_error_responses`]), and of its Swagger UI page (they need no state).
pub(crate) fn docs<S: Clone + Send + Sync + 'static>(mut document: Document) -> Router<S> {
    for problem in add_error_responses(&mut document) {
        // The unit tests fail on any; a server that starts anyway serves the rest.
        tracing::error!(%problem, "the OpenAPI document's error responses");
    }
    SwaggerUi::new(DOCS_PATH)
        .url(DOCUMENT_PATH, document)
        // The default fetches a validity badge from validator.swagger.io; stay offline.
        .config(Config::default().validator_url("none"))
        .into()
}

/// Gives each operation one error response per HTTP status of the codes it
/// declares (its `x-errors`, which is removed), and the document the codes of
/// [`ANY_OPERATION`]. Returns what is wrong, one line each: an operation that
/// declares nothing, a code twice or one the table does not know, or an
/// error response written by hand.
pub(crate) fn add_error_responses(document: &mut Document) -> Vec<String> {
    let mut problems = Vec::new();
    for (path, item) in document.paths.paths.iter_mut() {
        for (method, operation) in operations_mut(item) {
            let problem = match declared_errors(operation) {
                Ok(declared) => add_responses(operation, &declared).err(),
                Err(problem) => Some(problem),
            };
            problems.extend(problem.map(|p| format!("{method} {path}: {p}")));
        }
    }
    let any: Vec<&str> = ANY_OPERATION.iter().map(|e| e.code.as_str()).collect();
    let extensions = document.extensions.get_or_insert_with(Extensions::default);
    extensions.insert(ANY_OPERATION_CODES.to_owned(), json!(any));
    let any: Vec<(ErrorCode, Option<String>)> =
        ANY_OPERATION.iter().map(|e| (e.code, e.note.map(str::to_owned))).collect();
    let paragraph = format!(
        "\n\nBesides its own codes, any request may be answered with these, before an \
         operation runs (`{ANY_OPERATION_CODES}`):\n{}",
        bullets(&any, true)
    );
    document.info.description.get_or_insert_with(String::new).push_str(&paragraph);
    problems
}

/// Each operation of a path item, with its method in upper case.
fn operations_mut(item: &mut PathItem) -> impl Iterator<Item = (&'static str, &mut Operation)> {
    [
        ("GET", &mut item.get),
        ("PUT", &mut item.put),
        ("POST", &mut item.post),
        ("DELETE", &mut item.delete),
        ("OPTIONS", &mut item.options),
        ("HEAD", &mut item.head),
        ("PATCH", &mut item.patch),
        ("TRACE", &mut item.trace),
        ("QUERY", &mut item.query),
    ]
    .into_iter()
    .filter_map(|(method, operation)| operation.as_mut().map(|op| (method, op)))
}

/// A declared error as the `x-errors` extension carries it.
#[derive(Deserialize)]
struct Carried {
    code: String,
    note: Option<String>,
}

/// Takes the operation's `x-errors` out: its codes and notes, in the
/// declared order.
fn declared_errors(operation: &mut Operation) -> Result<Vec<(ErrorCode, Option<String>)>, String> {
    let carried = operation.extensions.as_mut().and_then(|e| e.remove(DECLARED));
    if operation.extensions.as_ref().is_some_and(|e| e.is_empty()) {
        operation.extensions = None;
    }
    let carried = carried.ok_or_else(|| {
        format!(
            "declares no errors: write its list with `errors!` and add \
             `extensions((\"{DECLARED}\" = json!(..._ERRORS)))` to its `#[utoipa::path]`"
        )
    })?;
    let carried: Vec<Carried> =
        serde_json::from_value(carried).map_err(|e| format!("`{DECLARED}` is not a list: {e}"))?;
    let mut declared: Vec<(ErrorCode, Option<String>)> = Vec::new();
    for Carried { code, note } in carried {
        let code = ErrorCode::parse(&code).ok_or_else(|| format!("`{code}` is not a code"))?;
        if declared.iter().any(|(c, _)| *c == code) {
            return Err(format!("declares `{}` twice", code.as_str()));
        }
        declared.push((code, note));
    }
    Ok(declared)
}

/// One `ErrorBody` response per HTTP status of `declared`.
fn add_responses(
    operation: &mut Operation,
    declared: &[(ErrorCode, Option<String>)],
) -> Result<(), String> {
    let mut by_status: BTreeMap<u16, Vec<(ErrorCode, Option<String>)>> = BTreeMap::new();
    for (code, note) in declared {
        by_status.entry(code.status().as_u16()).or_default().push((*code, note.clone()));
    }
    let responses = &mut operation.responses.responses;
    let written: Vec<&String> = responses
        .keys()
        .filter(|status| status.starts_with('4') || status.starts_with('5'))
        .collect();
    if !written.is_empty() {
        let written: Vec<&str> = written.into_iter().map(String::as_str).collect();
        return Err(format!(
            "error responses written by hand ({}): declare their codes instead",
            written.join(", ")
        ));
    }
    for (status, codes) in by_status {
        let names: Vec<&str> = codes.iter().map(|(code, _)| code.as_str()).collect();
        let extensions: Extensions = [(RESPONSE_CODES, json!(names))].into_iter().collect();
        let mut response = ResponseBuilder::new();
        let waiting: Vec<&str> =
            codes.iter().filter(|(code, _)| code.waits()).map(|(code, _)| code.as_str()).collect();
        if !waiting.is_empty() {
            let header = HeaderBuilder::new()
                .schema(Some(ObjectBuilder::new().schema_type(Type::Integer).minimum(Some(1))))
                .description(Some(format!(
                    "Seconds to wait before trying again; sent with `{}`.",
                    waiting.join("`, `")
                )))
                .build();
            response = response.header("Retry-After", header);
        }
        let response = response
            .description(bullets(&codes, false))
            .content(
                "application/json",
                Content::new(Some(Ref::from_schema_name(<ErrorBody as ToSchema>::name()))),
            )
            .extensions(Some(extensions))
            .build();
        responses.insert(status.to_string(), response.into());
    }
    Ok(())
}

/// One Markdown line per code: `` - `code`: its words. Here: note. ``, with
/// the code's status after it when `with_status`.
fn bullets(codes: &[(ErrorCode, Option<String>)], with_status: bool) -> String {
    let lines: Vec<String> = codes
        .iter()
        .map(|(code, note)| {
            let status =
                if with_status { format!(" ({})", code.status().as_u16()) } else { String::new() };
            let mut line = format!("- `{}`{status}: {}", code.as_str(), code.meaning());
            if let Some(note) = note {
                line.push_str(&format!(" Here: {}.", note.trim_end_matches('.')));
            }
            line
        })
        .collect();
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use axum::body::Body;
    use axum::http::{Method, Request, StatusCode};
    use clap::Parser;
    use serde_json::{Value, json};
    use tower::ServiceExt;

    use super::*;
    use crate::AppState;
    use crate::config::ServerConfig;
    use crate::routes::app;

    /// The app on a fresh data directory (kept alive by the returned guard).
    async fn test_app() -> (Router, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("tempdir");
        let data_dir = dir.path().to_str().expect("utf-8");
        let config = ServerConfig::parse_from(["custard-server", "--data-dir", data_dir]);
        (app(AppState::open(config).await.expect("state")), dir)
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
        let (app, _dir) = test_app().await;
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

        // Every operation has a summary, a tag, a documented success and an
        // operationId of its own (utoipa takes the handler's name by default).
        let mut operation_ids = BTreeSet::new();
        for (method, path) in operations(&document) {
            let op = &document["paths"][&path][method.to_lowercase()];
            let id = op["operationId"].as_str().unwrap_or_default();
            assert!(
                operation_ids.insert(id.to_owned()),
                "{method} {path}: operationId `{id}` twice"
            );
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

    /// The codes of an operation's error response for `status`, from its `x-error-codes`.
    fn declared(document: &Value, method: &str, path: &str, status: u16) -> Vec<String> {
        let response = &document["paths"][path][method.to_lowercase()]["responses"];
        response[status.to_string()][RESPONSE_CODES]
            .as_array()
            .map(|codes| codes.iter().filter_map(Value::as_str).map(str::to_owned).collect())
            .unwrap_or_default()
    }

    /// Every operation declares the codes it answers with, and the document
    /// has one response per status of them, with the table's status and
    /// words; nothing else answers an error status. An operation without a
    /// declared list (`x-errors`), or an error response written by hand,
    /// fails here (and a route without an operation fails
    /// `every_route_is_documented_and_every_documented_route_is_served`).
    #[tokio::test]
    async fn every_operation_declares_its_errors_and_each_has_the_tables_status() {
        let (_, mut raw) = crate::routes::endpoints().split_for_parts();
        let problems = add_error_responses(&mut raw);
        assert!(problems.is_empty(), "{}", problems.join("\n"));

        let (app, _dir) = test_app().await;
        let document = served_document(&app).await;
        let any = document[ANY_OPERATION_CODES].as_array().expect("the codes of any operation");
        let any: Vec<&str> = any.iter().filter_map(Value::as_str).collect();
        assert_eq!(
            any,
            ["invalid_json", "request_timeout", "payload_too_large", "too_many_connections"]
        );
        let description = document["info"]["description"].as_str().expect("a description");
        for code in &any {
            assert!(description.contains(&format!("`{code}`")), "{code}: {description}");
        }
        let mut errors = 0;
        for (method, path) in operations(&document) {
            let op = &document["paths"][&path][method.to_lowercase()];
            assert!(op.get(DECLARED).is_none(), "{method} {path} still carries `{DECLARED}`");
            for (status, response) in op["responses"].as_object().expect("responses") {
                let codes = response.get(RESPONSE_CODES).and_then(Value::as_array);
                if !(status.starts_with('4') || status.starts_with('5')) {
                    assert!(codes.is_none(), "{method} {path} {status}: codes on a success");
                    continue;
                }
                let codes = codes.unwrap_or_else(|| panic!("{method} {path} {status}: no codes"));
                assert!(!codes.is_empty(), "{method} {path} {status}");
                let text = response["description"].as_str().unwrap_or_default();
                for code in codes {
                    let name = code.as_str().expect("a code's name");
                    let code = crate::ErrorCode::parse(name)
                        .unwrap_or_else(|| panic!("{method} {path}: `{name}` is not a code"));
                    assert_eq!(
                        code.status().as_u16().to_string(),
                        *status,
                        "{method} {path}: `{name}` is not a {status} in the table"
                    );
                    assert!(text.contains(&format!("`{name}`: {}", code.meaning())), "{text}");
                    errors += 1;
                }
                let schema = &response["content"]["application/json"]["schema"]["$ref"];
                assert_eq!(schema, "#/components/schemas/ErrorBody", "{method} {path} {status}");
                // A response whose codes include a limit's refusal declares the header it sends.
                let waits = codes
                    .iter()
                    .filter_map(Value::as_str)
                    .any(|name| crate::ErrorCode::parse(name).is_some_and(crate::ErrorCode::waits));
                let header = &response["headers"]["Retry-After"];
                assert_eq!(header.is_object(), waits, "{method} {path} {status}: {response}");
                if waits {
                    assert_eq!(header["schema"]["type"], "integer", "{method} {path} {status}");
                }
            }
        }
        assert!(errors > 100, "only {errors} declared errors");

        // The declared lists, spot-checked: (method, path, status, codes).
        let cases: &[(&str, &str, u16, &[&str])] = &[
            ("GET", "/health", 500, &[]),
            ("GET", "/api/v1/auth/profile", 401, &["unauthorized"]),
            ("GET", "/api/v1/auth/profile", 503, &["store_unavailable"]),
            ("GET", "/ready", 503, &["store_unavailable", "routing_unavailable", "shutting_down"]),
            ("POST", "/api/v1/auth/logout", 403, &["forbidden"]),
            ("POST", "/api/v1/auth/login", 403, &["email_not_verified", "forbidden"]),
            ("POST", "/api/v1/auth/forgot-password", 503, &[]),
            ("POST", "/api/v1/query", 429, &["rate_limited", "too_many_questions"]),
            ("POST", "/api/v1/query", 409, &["schema_unavailable"]),
            (
                "POST",
                "/api/v1/query",
                422,
                &["invalid_question", "validation_error", "cannot_answer", "no_valid_query"],
            ),
            ("POST", "/api/v1/query/stream", 503, &["store_unavailable"]),
            (
                "GET",
                "/api/v1/queries/{id}/export.csv",
                422,
                &["validation_error", "query_rejected", "query_failed", "permission_denied"],
            ),
            ("DELETE", "/api/v1/org", 409, &["conflict"]),
        ];
        for (method, path, status, codes) in cases {
            assert_eq!(
                declared(&document, method, path, *status),
                *codes,
                "{method} {path} {status}"
            );
        }
        let ask_429 = &document["paths"]["/api/v1/query"]["post"]["responses"]["429"];
        let text = ask_429["description"].as_str().unwrap_or_default();
        assert!(text.contains("Retry-After") && text.contains("not recorded"), "{text}");
    }

    /// What is wrong with an operation's declared errors is named, and an
    /// error response written by hand is left as it is.
    #[test]
    fn wrong_declarations_are_named() {
        let check = |operation: Value, problem: &str| {
            let mut document: Document = serde_json::from_value(serde_json::json!({
                "openapi": "3.1.0",
                "info": {"title": "t", "version": "1"},
                "paths": {"/x": {"get": operation}},
            }))
            .expect("a document");
            let problems = add_error_responses(&mut document);
            match problem {
                "" => assert!(problems.is_empty(), "{problems:?}"),
                _ => {
                    assert_eq!(problems.len(), 1, "{problems:?}");
                    assert!(problems[0].starts_with("GET /x: "), "{problems:?}");
                    assert!(problems[0].contains(problem), "{problems:?}");
                }
            }
        };
        let ok = serde_json::json!({"description": "ok"});
        let op = |errors: Value, responses: Value| {
            let mut op = serde_json::json!({"responses": responses});
            if !errors.is_null() {
                op[DECLARED] = errors;
            }
            op
        };
        check(op(json!([]), json!({"200": ok})), "");
        check(op(json!([{"code": "not_found", "note": "n"}]), json!({"200": ok})), "");
        check(op(Value::Null, json!({"200": ok})), "declares no errors");
        check(op(json!({"code": "x"}), json!({"200": ok})), "is not a list");
        check(op(json!([{"code": "nope"}]), json!({"200": ok})), "`nope` is not a code");
        check(
            op(json!([{"code": "not_found"}, {"code": "not_found"}]), json!({"200": ok})),
            "declares `not_found` twice",
        );
        check(
            op(json!([]), json!({"200": ok, "422": {"description": "`validation_error`"}})),
            "error responses written by hand (422)",
        );
    }

    #[tokio::test]
    async fn every_route_is_documented_and_every_documented_route_is_served() {
        let (app, _dir) = test_app().await;
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
        let (app, _dir) = test_app().await;
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

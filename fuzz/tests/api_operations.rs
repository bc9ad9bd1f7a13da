//! The `api` target takes its operations from the server's OpenAPI document:
//! every operation with a JSON body is fuzzed (so a new endpoint is covered,
//! or this test names it), and none of the endpoints the hand-written list
//! of the first version had is lost (the floor).

use std::collections::BTreeMap;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use clap::Parser as _;
use custard_fuzz::{ApiOperation, ApiPlan};
use custard_server::config::ServerConfig;
use custard_server::{AppState, app};
use serde_json::Value;
use tower::ServiceExt as _;

/// The document the server serves, read as a client reads it.
fn served_document() -> Value {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let data_dir = dir.path().to_str().expect("a UTF-8 path").to_owned();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
    rt.block_on(async move {
        let config = ServerConfig::parse_from(["custard-server", "--data-dir", &data_dir]);
        let app = app(AppState::open(config).await.expect("the server's state"));
        let request = Request::get("/api/v1/openapi.json").body(Body::empty()).expect("a request");
        let response = app.oneshot(request).await.expect("infallible");
        assert_eq!(response.status(), StatusCode::OK);
        let bytes = axum::body::to_bytes(response.into_body(), 16 << 20).await.expect("the body");
        serde_json::from_slice(&bytes).expect("the document is JSON")
    })
}

/// The plan's operations by `(METHOD, path)`.
fn fuzzed(plan: &ApiPlan) -> BTreeMap<(String, String), &ApiOperation> {
    plan.operations.iter().map(|op| ((op.method().to_owned(), op.path().to_owned()), op)).collect()
}

#[test]
fn every_operation_with_a_json_body_is_fuzzed() {
    let document = served_document();
    let plan = ApiPlan::from_document(&document).expect("a plan");
    let fuzzed = fuzzed(&plan);
    let mut with_body = Vec::new();
    for (path, item) in document["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("a path item") {
            let body = match op["requestBody"]["$ref"].as_str() {
                Some(r) => document.pointer(r.trim_start_matches('#')).expect("the $ref resolves"),
                None => &op["requestBody"],
            };
            let json = body["content"]
                .as_object()
                .is_some_and(|content| content.keys().any(|media| media.contains("json")));
            if json {
                with_body.push((method.to_uppercase(), path.clone()));
            }
        }
    }
    assert!(with_body.len() >= 15, "only {} operations with a JSON body", with_body.len());
    let mut missing = Vec::new();
    for key in &with_body {
        match fuzzed.get(key) {
            Some(op) if op.json_body() => {}
            Some(_) => missing.push(format!("{} {}: fuzzed without its body", key.0, key.1)),
            None => {
                let reason = plan
                    .skipped
                    .iter()
                    .find(|s| s.method == key.0 && s.path == key.1)
                    .map_or("not in the plan", |s| s.reason.as_str());
                missing.push(format!("{} {}: {reason}", key.0, key.1));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "operations with a JSON body that the api target does not fuzz:\n{}",
        missing.join("\n")
    );
}

/// An endpoint of the first, hand-written list: method, path (the
/// document's `{id}` where the list had `{conn}`, `{query}`, `{member}`),
/// the resource its `{id}` names, whether it takes the bearer token, and its
/// body's fields with whether each is required.
type Floor = (&'static str, &'static str, &'static str, bool, &'static [(&'static str, bool)]);

const ASK: &[(&str, bool)] =
    &[("connection_id", true), ("question", true), ("conversation_id", false)];

const FLOOR: &[Floor] = &[
    (
        "POST",
        "/api/v1/auth/signup",
        "",
        false,
        &[
            ("email", true),
            ("password", true),
            ("first_name", true),
            ("last_name", true),
            ("organization_name", false),
            ("invitation_token", false),
        ],
    ),
    ("POST", "/api/v1/auth/verify-email", "", false, &[("token", true)]),
    ("POST", "/api/v1/auth/login", "", false, &[("email", true), ("password", true)]),
    ("POST", "/api/v1/auth/forgot-password", "", false, &[("email", true)]),
    ("POST", "/api/v1/auth/reset-password", "", false, &[("token", true), ("new_password", true)]),
    ("PUT", "/api/v1/auth/profile", "", true, &[("first_name", false), ("last_name", false)]),
    (
        "POST",
        "/api/v1/auth/change-password",
        "",
        true,
        &[("current_password", true), ("new_password", true)],
    ),
    ("POST", "/api/v1/auth/accept-invitation", "", true, &[("token", true)]),
    ("POST", "/api/v1/org/invitations", "", true, &[("email", true), ("role", true)]),
    ("PATCH", "/api/v1/org/members/{id}", "member", true, &[("role", true)]),
    ("POST", "/api/v1/connections", "", true, &[("name", true), ("db_type", true)]),
    (
        "PATCH",
        "/api/v1/connections/{id}",
        "connection",
        true,
        &[("name", false), ("instructions", false)],
    ),
    ("POST", "/api/v1/query", "", true, ASK),
    ("POST", "/api/v1/query/stream", "", true, ASK),
    ("POST", "/api/v1/queries/{id}/feedback", "query", true, &[("correct", true)]),
];

#[test]
fn the_hand_written_list_is_the_floor() {
    let document = served_document();
    let plan = ApiPlan::from_document(&document).expect("a plan");
    let fuzzed = fuzzed(&plan);
    assert!(fuzzed.len() >= FLOOR.len(), "{} operations fuzzed", fuzzed.len());
    for (method, path, resource, auth, fields) in FLOOR {
        let name = format!("{method} {path}");
        let op = fuzzed
            .get(&((*method).to_owned(), (*path).to_owned()))
            .unwrap_or_else(|| panic!("{name} is not fuzzed any more"));
        assert!(op.json_body(), "{name} is fuzzed without its body");
        assert_eq!(op.needs_auth(), *auth, "{name}: whether it takes the bearer token");
        let resources: Vec<&str> = op.path_params().iter().map(|p| p.resource()).collect();
        let want: Vec<&str> = if resource.is_empty() { Vec::new() } else { vec![*resource] };
        assert_eq!(resources, want, "{name}: what its path parameters name");
        let found: BTreeMap<&str, bool> =
            op.fields().iter().map(|f| (f.name(), f.required())).collect();
        for (field, required) in *fields {
            assert_eq!(found.get(field), Some(required), "{name}: the field `{field}`");
        }
    }
}

/// The plan reads each operation's declared errors, which the target checks
/// every error reply against: the extractors' codes are there for every
/// operation that has them.
#[test]
fn every_fuzzed_operation_brings_its_declared_errors() {
    let document = served_document();
    let plan = ApiPlan::from_document(&document).expect("a plan");
    for code in ["request_timeout", "payload_too_large", "too_many_connections"] {
        assert!(
            plan.any_operation_errors.contains(code),
            "{code} is not declared for any operation"
        );
    }
    for op in &plan.operations {
        let name = op.name();
        if op.needs_auth() {
            assert!(plan.declares(op, 401, "unauthorized"), "{name}: no 401 `unauthorized`");
        }
        if op.json_body() {
            for (status, code) in [(400, "invalid_json"), (422, "validation_error")] {
                assert!(
                    op.declared_errors(status).any(|c| c == code),
                    "{name}: no {status} `{code}`"
                );
            }
        }
        assert!(!plan.declares(op, 405, "method_not_allowed"), "{name}: the router's 405");
    }
}

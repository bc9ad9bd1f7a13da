//! The HTTP API driven in process through `app(state)`.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use clap::Parser;
use custard_server::config::ServerConfig;
use custard_server::{AppState, app};
use serde_json::Value;
use tower::ServiceExt;

fn state() -> AppState {
    let dir = std::env::temp_dir().join(format!("custard-server-test-{}", std::process::id()));
    let config = ServerConfig::parse_from([
        "custard-server",
        "--data-dir",
        dir.to_str().expect("utf-8 path"),
    ]);
    AppState::new(config)
}

async fn call(request: Request<Body>) -> (StatusCode, Value) {
    let response = app(state()).oneshot(request).await.expect("infallible");
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.expect("body");
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

fn get(path: &str) -> Request<Body> {
    Request::get(path).body(Body::empty()).expect("request")
}

#[tokio::test]
async fn health_and_status_answer_without_secrets() {
    let (status, body) = call(get("/health")).await;
    assert_eq!((status, body["status"].as_str()), (StatusCode::OK, Some("ok")));
    let (status, body) = call(get("/status")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));
    let text = body.to_string();
    assert!(!text.contains("jwt") && !text.contains("smtp"), "{text}");
}

#[tokio::test]
async fn unknown_paths_get_the_json_error_shape() {
    let (status, body) = call(get("/api/v1/nope")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], "not_found");
    assert!(body["error"]["message"].is_string());
}

//! The server on a PostgreSQL store (`--store-url`), in a private cluster the
//! test can stop: requests get `503 store_unavailable` at once while the
//! database is down (and `/ready` says so to a load balancer), and the same
//! server answers again once it is back (and holds its claim on it again).

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use custard_testkit::cluster::PostgresCluster;
use serde_json::json;

use super::{PASSWORD, server_with_flags};
use custard_server::rate_limit::Limits;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_store_that_goes_away_answers_503_and_comes_back() {
    let cluster = Arc::new(
        tokio::task::spawn_blocking(PostgresCluster::start).await.expect("starting the cluster"),
    );
    let url = cluster.url("postgres", "postgres");
    let limits = Limits { per_ip: 1000, per_account: 1000, replenish: Duration::from_millis(1) };
    let s = server_with_flags(limits, &["--store-url", &url]).await;
    let (_, token) = s.verified_user("ada@example.com", "Analytical", 0).await;
    let (status, reply) = s.call("GET", "/api/v1/connections", Some(&token), None).await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    assert_eq!(s.call("GET", "/ready", None, None).await.0, StatusCode::OK);

    let c = Arc::clone(&cluster);
    tokio::task::spawn_blocking(move || c.stop()).await.expect("stopping");
    let asked = Instant::now();
    let (status, headers, reply) =
        s.with_headers("GET", "/api/v1/connections", Some(&token), None).await;
    let down_answer = asked.elapsed();
    assert_eq!(
        (status, reply["error"]["code"].as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("store_unavailable")),
        "{reply}"
    );
    assert_eq!(headers.get("retry-after").and_then(|v| v.to_str().ok()), Some("1"));
    // What the message says comes from the server, not the driver's details.
    assert!(!reply.to_string().contains("127.0.0.1"), "{reply}");
    let signup = json!({"email": "grace@example.com", "password": PASSWORD,
        "first_name": "Grace", "last_name": "Hopper", "organization_name": "Navy"});
    let (status, reply) = s.call("POST", "/api/v1/auth/signup", None, Some(signup)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{reply}");
    // A load balancer stops sending traffic here; the process itself is up.
    let (status, reply) = s.call("GET", "/ready", None, None).await;
    assert_eq!(reply["error"]["code"], "store_unavailable", "{status} {reply}");
    assert_eq!(s.call("GET", "/health", None, None).await.0, StatusCode::OK);

    let c = Arc::clone(&cluster);
    tokio::task::spawn_blocking(move || c.start_again()).await.expect("starting again");
    // The server answers again once it holds its claim on the store again
    // (it retries with backoff, up to 4 s apart), and its pool has replaced
    // the dead connections.
    let back_at = Instant::now();
    let recovered = loop {
        let (status, reply) = s.call("GET", "/api/v1/connections", Some(&token), None).await;
        if status == StatusCode::OK {
            break back_at.elapsed();
        }
        assert_eq!(reply["error"]["code"], "store_unavailable", "{status} {reply}");
        assert!(back_at.elapsed() < Duration::from_secs(20), "no recovery: {reply}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(s.call("GET", "/ready", None, None).await.0, StatusCode::OK);
    eprintln!(
        "store down: answered in {} ms; back up: answering again after {} ms",
        down_answer.as_millis(),
        recovered.as_millis()
    );
}

//! The OpenAI-compatible client against the fake server of custard-testkit:
//! real HTTP on 127.0.0.1, real async-openai parsing, scripted failures.

use std::time::{Duration, Instant};

use custard_core::llm::{
    Generation, GenerationRequest, LanguageModel, LlmError, LlmErrorCode, OpenAiConfig, OpenAiModel,
};
use custard_core::{ChatMessage, Dialect, Role, Schema};
use custard_testkit::fake_openai::{Behaviour, FakeOpenAi};

const KEY: &str = "sk-test-not-a-real-key-4242";

/// Fast limits so failing paths finish in milliseconds.
fn config(base_url: String) -> OpenAiConfig {
    OpenAiConfig {
        timeout: Duration::from_secs(5),
        initial_backoff: Duration::from_millis(5),
        max_backoff: Duration::from_millis(100),
        ..OpenAiConfig::new(base_url, "test-model")
    }
}

fn model(config: OpenAiConfig) -> OpenAiModel {
    OpenAiModel::new(config).unwrap()
}

fn messages() -> Vec<ChatMessage> {
    vec![
        ChatMessage::new(Role::System, "You write PostgreSQL."),
        ChatMessage::new(Role::User, "How many orders?"),
        ChatMessage::new(Role::Assistant, "SELECT count(*) FROM orders"),
        ChatMessage::new(Role::User, "And per customer?"),
    ]
}

/// Runs one generation, failing the test if it takes more than 30 seconds.
async fn generate(model: &OpenAiModel, messages: &[ChatMessage]) -> Result<Generation, LlmError> {
    let schema = Schema::new(Dialect::Postgres);
    let question = messages.last().map_or("", |m| m.content.as_str());
    let request = GenerationRequest {
        messages,
        question,
        schema: &schema,
        history: &[],
        dialect: Dialect::Postgres,
    };
    tokio::time::timeout(Duration::from_secs(30), model.generate(&request))
        .await
        .expect("a generation is bounded in time")
}

const PROSE_REPLY: &str = "Sure! Group the orders by customer:\n\n```sql\nSELECT customer_id, count(*)\nFROM orders\nGROUP BY customer_id;\n```\n\nThis counts the orders of each customer.";
const PROSE_SQL: &str = "SELECT customer_id, count(*)\nFROM orders\nGROUP BY customer_id";

#[tokio::test]
async fn non_streaming_reply_with_prose_and_fence() {
    let server = FakeOpenAi::start([Behaviour::reply(PROSE_REPLY)]).await;
    let model = model(config(server.base_url()));
    let generation = generate(&model, &messages()).await.unwrap();
    assert_eq!(generation.text, PROSE_REPLY);
    assert_eq!(generation.sql.as_deref(), Some(PROSE_SQL));
    assert_eq!(model.name(), "test-model");

    let requests = server.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].path, "/v1/chat/completions");
    let body = requests[0].body.as_ref().unwrap();
    assert_eq!(body.model, "test-model");
    assert!(!body.stream);
}

#[tokio::test]
async fn streaming_reply_is_collected_from_deltas() {
    let server = FakeOpenAi::start([Behaviour::reply(PROSE_REPLY)]).await;
    let model = model(OpenAiConfig { stream: true, ..config(server.base_url()) });
    let generation = generate(&model, &messages()).await.unwrap();
    assert_eq!(generation.text, PROSE_REPLY);
    assert_eq!(generation.sql.as_deref(), Some(PROSE_SQL));
    assert!(server.requests()[0].body.as_ref().unwrap().stream);
}

#[tokio::test]
async fn messages_arrive_in_order_with_roles() {
    let server = FakeOpenAi::start([Behaviour::reply("SELECT 1")]).await;
    let model = model(OpenAiConfig { temperature: Some(0.0), ..config(server.base_url()) });
    generate(&model, &messages()).await.unwrap();
    let body = server.requests()[0].body.clone().unwrap();
    assert_eq!(
        body.roles_and_contents(),
        [
            ("system", "You write PostgreSQL."),
            ("user", "How many orders?"),
            ("assistant", "SELECT count(*) FROM orders"),
            ("user", "And per customer?"),
        ]
    );
    assert_eq!(body.temperature, Some(0.0));
}

#[tokio::test]
async fn authorization_header_carries_the_key_only_when_set() {
    let server = FakeOpenAi::always(Behaviour::reply("SELECT 1")).await;
    generate(&model(config(server.base_url()).with_api_key(KEY)), &messages()).await.unwrap();
    generate(&model(config(server.base_url())), &messages()).await.unwrap();
    generate(&model(config(server.base_url()).with_api_key("  ")), &messages()).await.unwrap();
    let requests = server.requests();
    assert_eq!(requests[0].authorization(), Some(format!("Bearer {KEY}").as_str()));
    assert_eq!(requests[1].authorization(), None);
    assert_eq!(requests[2].authorization(), None);
}

#[tokio::test]
async fn base_url_without_v1_works() {
    let server = FakeOpenAi::start([Behaviour::reply("SELECT 1")]).await;
    let generation =
        generate(&model(config(format!("{}/", server.root_url()))), &messages()).await.unwrap();
    assert_eq!(generation.sql.as_deref(), Some("SELECT 1"));
    assert_eq!(server.requests()[0].path, "/chat/completions");
}

#[tokio::test]
async fn azure_deployments_use_api_key_header_and_api_version() {
    let server = FakeOpenAi::start([Behaviour::reply("SELECT 1")]).await;
    let config = OpenAiConfig {
        timeout: Duration::from_secs(5),
        ..OpenAiConfig::azure(server.root_url(), "sql-deploy", "2024-10-21", KEY)
    };
    generate(&model(config), &messages()).await.unwrap();
    let request = &server.requests()[0];
    assert_eq!(request.path, "/openai/deployments/sql-deploy/chat/completions");
    assert_eq!(request.query.as_deref(), Some("api-version=2024-10-21"));
    assert_eq!(request.header("api-key"), Some(KEY));
    assert_eq!(request.authorization(), None);
}

#[tokio::test]
async fn an_oracle_answers_by_question() {
    let server = FakeOpenAi::with_responder(|request| match request.last_user_message() {
        Some(q) if q.contains("customer") => {
            Behaviour::reply("```sql\nSELECT customer_id FROM orders\n```")
        }
        _ => Behaviour::reply("-- cannot answer: unknown question"),
    })
    .await;
    let model = model(config(server.base_url()));
    let answered = generate(&model, &messages()).await.unwrap();
    assert_eq!(answered.sql.as_deref(), Some("SELECT customer_id FROM orders"));
    let other = [ChatMessage::new(Role::User, "What is the weather?")];
    let abstained = generate(&model, &other).await.unwrap();
    assert_eq!(abstained.sql, None);
    assert_eq!(abstained.text, "-- cannot answer: unknown question");
}

#[tokio::test]
async fn rate_limit_then_success_is_retried() {
    let server =
        FakeOpenAi::start([Behaviour::status(429, "slow down"), Behaviour::reply("SELECT 1")])
            .await;
    let generation = generate(&model(config(server.base_url())), &messages()).await.unwrap();
    assert_eq!(generation.sql.as_deref(), Some("SELECT 1"));
    assert_eq!(server.request_count(), 2);
}

#[tokio::test]
async fn server_errors_twice_then_success() {
    for stream in [false, true] {
        let server = FakeOpenAi::start([
            Behaviour::status(500, "boom"),
            Behaviour::status(502, "bad gateway"),
            Behaviour::reply("SELECT 2"),
        ])
        .await;
        let model = model(OpenAiConfig { stream, ..config(server.base_url()) });
        let generation = generate(&model, &messages()).await.unwrap();
        assert_eq!(generation.sql.as_deref(), Some("SELECT 2"), "stream={stream}");
        assert_eq!(server.request_count(), 3, "stream={stream}");
    }
}

#[tokio::test]
async fn server_errors_forever_give_unavailable_after_bounded_attempts() {
    for max_retries in [0, 2] {
        let server = FakeOpenAi::always(Behaviour::status(500, "the model crashed")).await;
        let model = model(OpenAiConfig { max_retries, ..config(server.base_url()) });
        let error = generate(&model, &messages()).await.unwrap_err();
        assert_eq!(error.code, LlmErrorCode::Unavailable);
        assert!(error.message.contains("HTTP 500"), "{error}");
        assert!(error.message.contains("the model crashed"), "{error}");
        assert_eq!(server.request_count(), max_retries as usize + 1);
    }
}

#[tokio::test]
async fn rate_limited_forever_gives_rate_limited() {
    let server = FakeOpenAi::always(Behaviour::status(429, "slow down")).await;
    let error = generate(&model(config(server.base_url())), &messages()).await.unwrap_err();
    assert_eq!(error.code, LlmErrorCode::RateLimited);
    assert_eq!(server.request_count(), 3);
}

#[tokio::test]
async fn retry_after_is_honoured_and_bounded() {
    let wait = Behaviour::Raw {
        status: 429,
        headers: vec![("retry-after-ms".into(), "300".into())],
        body: String::new(),
    };
    let server = FakeOpenAi::start([wait, Behaviour::reply("SELECT 1")]).await;
    let model =
        model(OpenAiConfig { max_backoff: Duration::from_secs(1), ..config(server.base_url()) });
    let started = Instant::now();
    generate(&model, &messages()).await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(300), "{:?}", started.elapsed());
    assert_eq!(server.request_count(), 2);

    // A wait longer than max_backoff ends the retries at once.
    let server = FakeOpenAi::always(Behaviour::rate_limited(120)).await;
    let error = generate(&model_for(&server), &messages()).await.unwrap_err();
    assert_eq!(error.code, LlmErrorCode::RateLimited);
    assert!(error.message.contains("Retry-After"), "{error}");
    assert_eq!(server.request_count(), 1);
}

fn model_for(server: &FakeOpenAi) -> OpenAiModel {
    model(config(server.base_url()))
}

#[tokio::test]
async fn slow_server_times_out() {
    let server =
        FakeOpenAi::always(Behaviour::delay(Duration::from_secs(10), Behaviour::reply("SELECT 1")))
            .await;
    let model = model(OpenAiConfig {
        timeout: Duration::from_millis(200),
        max_retries: 1,
        ..config(server.base_url())
    });
    let started = Instant::now();
    let error = generate(&model, &messages()).await.unwrap_err();
    assert_eq!(error.code, LlmErrorCode::Timeout, "{error}");
    assert_eq!(server.request_count(), 2);
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
}

#[tokio::test]
async fn hanging_and_stalling_servers_time_out() {
    for (behaviour, stream) in [
        (Behaviour::Hang, false),
        (Behaviour::Stall(PROSE_REPLY.into()), true),
        (Behaviour::Stall(PROSE_REPLY.into()), false),
    ] {
        let server = FakeOpenAi::always(behaviour.clone()).await;
        let model = model(OpenAiConfig {
            timeout: Duration::from_millis(200),
            max_retries: 0,
            stream,
            ..config(server.base_url())
        });
        let error = generate(&model, &messages()).await.unwrap_err();
        assert_eq!(error.code, LlmErrorCode::Timeout, "{behaviour:?} stream={stream}: {error}");
        assert_eq!(server.request_count(), 1);
    }
}

#[tokio::test]
async fn timeout_then_success_is_retried() {
    let server = FakeOpenAi::start([
        Behaviour::delay(Duration::from_secs(10), Behaviour::reply("SELECT 0")),
        Behaviour::reply("SELECT 1"),
    ])
    .await;
    let model =
        model(OpenAiConfig { timeout: Duration::from_millis(200), ..config(server.base_url()) });
    let generation = generate(&model, &messages()).await.unwrap();
    assert_eq!(generation.sql.as_deref(), Some("SELECT 1"));
    assert_eq!(server.request_count(), 2);
}

#[tokio::test]
async fn rejected_key_is_unauthorized_and_never_printed() {
    let echo = format!("Incorrect API key provided: {KEY}.");
    for status in [401, 403] {
        let server = FakeOpenAi::always(Behaviour::status(status, &echo)).await;
        let model = model(config(server.base_url()).with_api_key(KEY));
        let error = generate(&model, &messages()).await.unwrap_err();
        assert_eq!(error.code, LlmErrorCode::Unauthorized);
        assert!(error.message.contains("the LLM API key was rejected"), "{error}");
        assert_eq!(server.request_count(), 1, "no retry for {status}");
        for text in [error.to_string(), format!("{error:?}"), format!("{model:?}")] {
            assert!(!text.contains(KEY), "the key leaked: {text}");
            assert!(!text.contains("4242"), "part of the key leaked: {text}");
        }
    }
}

#[tokio::test]
async fn missing_key_is_unauthorized_with_a_hint() {
    let server = FakeOpenAi::always(Behaviour::status(401, "missing key")).await;
    let error = generate(&model_for(&server), &messages()).await.unwrap_err();
    assert_eq!(error.code, LlmErrorCode::Unauthorized);
    assert!(error.message.contains("none is configured"), "{error}");
}

#[tokio::test]
async fn missing_model_is_misconfigured() {
    let error = OpenAiModel::new(OpenAiConfig::new("http://127.0.0.1:9/v1", "")).unwrap_err();
    assert_eq!(error.code, LlmErrorCode::Misconfigured);

    let server =
        FakeOpenAi::always(Behaviour::status(404, "model 'test-model' not found, try pulling it"))
            .await;
    let error = generate(&model_for(&server), &messages()).await.unwrap_err();
    assert_eq!(error.code, LlmErrorCode::Misconfigured);
    assert!(error.message.contains("try pulling it"), "{error}");
    assert_eq!(server.request_count(), 1);
}

#[tokio::test]
async fn bad_requests_and_bad_replies_are_bad_responses() {
    let cases = [
        (Behaviour::status(400, "maximum context length exceeded"), "maximum context length"),
        (Behaviour::empty_choices(), "without any choice"),
        (
            Behaviour::Raw { status: 200, headers: vec![], body: "<html>proxy</html>".into() },
            "not a chat completion",
        ),
        (Behaviour::reply(""), "empty reply"),
    ];
    for (behaviour, message) in cases {
        let server = FakeOpenAi::always(behaviour.clone()).await;
        let error = generate(&model_for(&server), &messages()).await.unwrap_err();
        assert_eq!(error.code, LlmErrorCode::BadResponse, "{behaviour:?}: {error}");
        assert!(error.message.contains(message), "{behaviour:?}: {error}");
        assert_eq!(server.request_count(), 1, "{behaviour:?} is not retried");
    }
}

#[tokio::test]
async fn connection_refused_is_unavailable() {
    // A port that was just free: nothing listens there.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let model = model(config(format!("http://127.0.0.1:{port}/v1")));
    let error = generate(&model, &messages()).await.unwrap_err();
    assert_eq!(error.code, LlmErrorCode::Unavailable, "{error}");
    assert!(error.message.contains("3 attempts"), "{error}");
}

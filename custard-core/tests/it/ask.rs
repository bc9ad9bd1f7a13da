//! The ask pipeline end to end: the real OpenAI client against a fake
//! OpenAI-compatible server, the guard, and a real PostgreSQL database.

use std::sync::Arc;

use custard_core::llm::{LanguageModel, LlmErrorCode, OfflineEngine, OpenAiConfig, OpenAiModel};
use custard_core::{
    AskError, AskOptions, AskPipeline, AttemptStage, ChartKind, DiscoverOptions, Executor,
    PostgresExecutor, Turn,
};
use custard_testkit::ScratchDb;
use custard_testkit::fake_openai::{Behaviour, FakeOpenAi};
use serde_json::json;

const SHOP: &str = "
    CREATE TABLE customers (id int PRIMARY KEY, name text NOT NULL, city text);
    INSERT INTO customers VALUES (1, 'Ada', 'Paris'), (2, 'Bob', 'Rome'), (3, 'Cy', 'Paris');
    CREATE TABLE orders (id int PRIMARY KEY, customer_id int REFERENCES customers(id), total numeric(10,2));
    INSERT INTO orders VALUES (1, 1, 10.50), (2, 1, 20.00), (3, 2, 5.25);
    ANALYZE;
";

struct Shop {
    db: ScratchDb,
    executor: Arc<PostgresExecutor>,
}

async fn shop() -> Shop {
    let db = ScratchDb::create("ask").await;
    db.client().await.batch_execute(SHOP).await.expect("shop schema");
    let executor = Arc::new(PostgresExecutor::connect(&db.url).await.expect("connect"));
    Shop { db, executor }
}

impl Shop {
    async fn pipeline(&self, model: Arc<dyn LanguageModel>) -> AskPipeline {
        let schema =
            self.executor.discover(&DiscoverOptions { sample_values: 5 }).await.expect("discover");
        AskPipeline::new(schema, model, self.executor.clone(), AskOptions::default())
            .expect("pipeline")
    }

    async fn customer_count(&self) -> i64 {
        self.db
            .client()
            .await
            .query_one("SELECT count(*) FROM customers", &[])
            .await
            .expect("count")
            .get(0)
    }
}

fn model(server: &FakeOpenAi, stream: bool) -> Arc<dyn LanguageModel> {
    let config = OpenAiConfig {
        stream,
        max_retries: 0,
        ..OpenAiConfig::new(server.base_url(), "fake-model").with_api_key("sk-test-key")
    };
    Arc::new(OpenAiModel::new(config).expect("model"))
}

fn fenced(sql: &str) -> Behaviour {
    Behaviour::reply(format!("Here is the query:\n```sql\n{sql}\n```\nIt counts what you asked."))
}

#[tokio::test]
async fn a_correct_reply_is_executed_streaming_or_not() {
    let shop = shop().await;
    for stream in [false, true] {
        let server =
            FakeOpenAi::start([fenced("SELECT count(*) AS customers FROM customers")]).await;
        let pipeline = shop.pipeline(model(&server, stream)).await;
        let answer = pipeline.ask("How many customers are there?", &[]).await.expect("answered");
        assert_eq!(answer.rows, [vec![json!(3)]]);
        assert_eq!(answer.text, "There are 3 customers.");
        assert_eq!(answer.engine, "fake-model");
        assert_eq!(answer.attempts.len(), 1);
        assert!(answer.sql.contains("count(*)"), "{}", answer.sql);
        let requests = server.requests();
        assert_eq!(requests.len(), 1);
        let body = requests[0].body.as_ref().expect("chat request");
        assert_eq!(body.stream, stream);
        assert!(
            body.messages[0].content.contains("CREATE TABLE customers"),
            "the schema is in the prompt"
        );
        assert_eq!(body.last_user_message(), Some("How many customers are there?"));
    }
}

#[tokio::test]
async fn an_invented_column_is_repaired_after_the_guards_feedback() {
    let shop = shop().await;
    let server = FakeOpenAi::start([
        fenced("SELECT nmae FROM customers ORDER BY id"),
        fenced("SELECT name FROM customers ORDER BY id"),
    ])
    .await;
    let answer = shop
        .pipeline(model(&server, false))
        .await
        .ask("List the customer names", &[])
        .await
        .expect("repaired");
    assert_eq!(answer.rows, [vec![json!("Ada")], vec![json!("Bob")], vec![json!("Cy")]]);
    assert_eq!(answer.attempts.len(), 2);
    let failure = answer.attempts[0].failure.as_ref().expect("first attempt failed");
    assert_eq!(failure.stage, AttemptStage::Guard);
    assert_eq!(failure.code, "unknown_column");
    let second = server.requests()[1].body.clone().expect("request");
    let feedback = second.last_user_message().expect("feedback");
    assert!(feedback.contains("nmae") && feedback.contains("did you mean `name`"), "{feedback}");
}

#[tokio::test]
async fn a_database_error_is_repaired_after_the_error() {
    let shop = shop().await;
    let server = FakeOpenAi::start([
        fenced("SELECT name::int AS n FROM customers"),
        fenced("SELECT count(*) AS n FROM customers WHERE city = 'Paris'"),
    ])
    .await;
    let answer = shop
        .pipeline(model(&server, true))
        .await
        .ask("How many customers live in Paris?", &[])
        .await
        .expect("repaired");
    assert_eq!(answer.rows, [vec![json!(2)]]);
    let failure = answer.attempts[0].failure.as_ref().expect("first attempt failed");
    assert_eq!(failure.stage, AttemptStage::Database);
    let feedback = server.requests()[1].body.clone().expect("request");
    assert!(
        feedback
            .last_user_message()
            .is_some_and(|m| m.contains("invalid input syntax for type integer"))
    );
}

#[tokio::test]
async fn a_reply_that_never_becomes_valid_ends_after_the_bounded_attempts() {
    let shop = shop().await;
    let server = FakeOpenAi::always(fenced("SELECT missing_column FROM customers")).await;
    let err = shop
        .pipeline(model(&server, false))
        .await
        .ask("Show something", &[])
        .await
        .expect_err("never valid");
    let AskError::NoValidQuery { attempts } = &err else { panic!("unexpected error {err:?}") };
    assert_eq!(attempts.len(), 3, "one attempt and two repairs");
    assert_eq!(server.request_count(), 3);
    assert_eq!(err.code(), "no_valid_query");
    assert!(err.to_string().contains("missing_column"), "{err}");
}

#[tokio::test]
async fn a_write_statement_from_the_model_is_never_executed() {
    let shop = shop().await;
    let writes = [
        "DELETE FROM customers",
        "WITH d AS (DELETE FROM customers RETURNING *) SELECT count(*) FROM d",
        "SELECT 1; DROP TABLE customers",
        "UPDATE customers SET name = 'x'",
    ];
    // Each question gets three attempts (one and two repairs): the first three
    // writes for the first question, the fourth three times for the second.
    let script: Vec<Behaviour> =
        writes[..3].iter().chain([&writes[3]; 3]).map(|w| fenced(w)).collect();
    let server = FakeOpenAi::start(script).await;
    let pipeline = shop.pipeline(model(&server, false)).await;
    for _ in 0..2 {
        let err =
            pipeline.ask("Remove every customer", &[]).await.expect_err("a write must not answer");
        let AskError::NoValidQuery { attempts } = &err else { panic!("{err:?}") };
        assert_eq!(attempts.len(), 3);
        for attempt in attempts {
            let failure = attempt.failure.as_ref().expect("failed");
            assert_eq!(
                failure.stage,
                AttemptStage::Guard,
                "stopped by the guard, before the database: {failure:?}"
            );
        }
    }
    assert_eq!(server.request_count(), 6);
    assert_eq!(shop.customer_count().await, 3, "nothing was deleted");
    let renamed: i64 = shop
        .db
        .client()
        .await
        .query_one("SELECT count(*) FROM customers WHERE name = 'x'", &[])
        .await
        .expect("q")
        .get(0);
    assert_eq!(renamed, 0);
}

#[tokio::test]
async fn the_model_can_decline_and_errors_are_clear() {
    let shop = shop().await;
    let server =
        FakeOpenAi::start([Behaviour::reply("-- cannot answer: there is no product table")]).await;
    let err = shop
        .pipeline(model(&server, false))
        .await
        .ask("Best selling product?", &[])
        .await
        .expect_err("declined");
    assert_eq!(err.code(), "cannot_answer");
    assert!(err.to_string().contains("no product table"), "{err}");

    let server = FakeOpenAi::always(Behaviour::status(401, "invalid api key")).await;
    let err = shop
        .pipeline(model(&server, false))
        .await
        .ask("How many customers?", &[])
        .await
        .expect_err("unauthorized");
    assert!(matches!(&err, AskError::Model(e) if e.code == LlmErrorCode::Unauthorized), "{err:?}");
    assert!(!format!("{err:?}").contains("sk-test-key"), "the key never shows");
}

#[tokio::test]
async fn follow_ups_carry_the_conversation_and_charts_follow_the_shape() {
    let shop = shop().await;
    let server = FakeOpenAi::start([fenced(
        "SELECT c.city, sum(o.total) AS revenue FROM orders o JOIN customers c ON c.id = o.customer_id GROUP BY c.city ORDER BY revenue DESC",
    )])
    .await;
    let history = [Turn {
        question: "How many orders are there?".into(),
        sql: Some("SELECT count(*) FROM orders".into()),
        answer: Some("There are 3 orders.".into()),
    }];
    let answer = shop
        .pipeline(model(&server, false))
        .await
        .ask("and their revenue per city?", &history)
        .await
        .expect("answered");
    assert_eq!(
        answer.rows,
        [vec![json!("Paris"), json!("30.50")], vec![json!("Rome"), json!("5.25")]]
    );
    let chart = answer.chart.expect("a bar chart");
    assert_eq!(
        (chart.kind, chart.x.as_str(), chart.y.clone()),
        (ChartKind::Bar, "city", vec!["revenue".to_owned()])
    );
    assert_eq!(answer.text, "Revenue by city: Paris (30.50) and Rome (5.25).");
    let request = server.requests()[0].body.clone().expect("request");
    let roles: Vec<(&str, &str)> = request.roles_and_contents();
    assert_eq!(roles[1], ("user", "How many orders are there?"));
    assert!(roles[2].0 == "assistant" && roles[2].1.contains("SELECT count(*) FROM orders"));
    assert_eq!(roles[3], ("user", "and their revenue per city?"));
}

#[tokio::test]
async fn the_offline_engine_answers_or_abstains_without_a_network() {
    let shop = shop().await;
    let pipeline = shop.pipeline(Arc::new(OfflineEngine::new())).await;
    let answer = pipeline.ask("How many customers are there?", &[]).await.expect("a simple count");
    assert_eq!(answer.rows, [vec![json!(3)]]);
    assert_eq!(answer.engine, "offline");
    let err = pipeline
        .ask("Which customers churned after the price change?", &[])
        .await
        .expect_err("abstains");
    assert!(matches!(&err, AskError::Model(e) if e.code == LlmErrorCode::Abstained), "{err:?}");
}

#[tokio::test]
async fn ask_with_reports_steps_and_uses_the_examples_given() {
    use custard_core::{AskRequest, AskStep, Example};
    use std::sync::Mutex;

    let shop = shop().await;
    let server = FakeOpenAi::start([
        fenced("SELECT nmae FROM customers"),
        fenced("SELECT count(*) AS customers FROM customers"),
    ])
    .await;
    let pipeline = shop.pipeline(model(&server, false)).await;
    let steps = Mutex::new(Vec::new());
    let record = |step: AskStep| steps.lock().expect("steps").push(step);
    let examples = [Example {
        question: "how many orders are there".into(),
        sql: "SELECT count(*) FROM orders".into(),
    }];
    let request =
        AskRequest::new("How many customers are there?").examples(&examples).progress(&record);
    let answer = pipeline.ask_with(&request).await.expect("answered after a repair");
    assert_eq!(answer.rows, [vec![json!(shop.customer_count().await)]]);
    use AskStep::*;
    assert_eq!(
        *steps.lock().expect("steps"),
        [Retrieving, Generating, Checking, Generating, Checking, Running, Summarising]
    );
    let first = server.requests()[0].body.clone().expect("request");
    let prompt: String = first.messages.iter().map(|m| m.content.as_str()).collect();
    assert!(
        prompt.contains("how many orders are there")
            && prompt.contains("SELECT count(*) FROM orders"),
        "the example given for this question is in the prompt"
    );
}

/// SQL a caller wrote runs on a question's path: the pipeline's guard (the
/// schema's names, the row cap), its executor, the rule-built answer; the
/// model is never asked, and nothing that writes or breaks the text rule runs.
#[tokio::test]
async fn run_sql_checks_and_runs_the_callers_sql_without_the_model() {
    let shop = shop().await;
    let server = FakeOpenAi::start([]).await;
    let pipeline = shop.pipeline(model(&server, false)).await;

    let answer = pipeline
        .run_sql("SELECT city, count(*) AS n FROM customers GROUP BY city ORDER BY city")
        .await
        .expect("ran");
    assert_eq!(answer.rows, [vec![json!("Paris"), json!(2)], vec![json!("Rome"), json!(1)]]);
    assert_eq!(answer.engine, "sql");
    assert_eq!(answer.attempts.len(), 1);
    assert!(!answer.truncated);
    assert!(!answer.text.is_empty());
    assert!(server.requests().is_empty(), "the model is not asked");

    let refused = pipeline.run_sql("DELETE FROM customers").await.expect_err("a write");
    assert!(matches!(refused, AskError::Rejected(_)), "{refused:?}");
    assert_eq!(refused.code().as_str(), "data_modifying");
    let unknown = pipeline.run_sql("SELECT nme FROM customers").await.expect_err("a typo");
    assert_eq!(unknown.code().as_str(), "unknown_column");
    for bad in ["", "SELECT 1 -- \0"] {
        let err = pipeline.run_sql(bad).await.expect_err("text rule");
        assert_eq!(err.code().as_str(), "invalid_question", "{bad:?}");
    }
    assert_eq!(shop.customer_count().await, 3, "nothing was written");
}

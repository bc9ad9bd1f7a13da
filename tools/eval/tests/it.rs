//! The harness with "oracle" models: a fake OpenAI-compatible server that
//! replies with gold SQL. With each question's own gold SQL the pipeline must
//! lose nothing (accuracy 1.00); with another question's, the harness must
//! see that the answers are wrong.

use std::collections::HashMap;
use std::process::Command;

use custard_testkit::fake_openai::{Behaviour, FakeOpenAi};
use custard_testkit::{
    DEFOG_DATABASES, defog_database, test_database_url, testdata_dir, url_with_database,
};
use serde_json::Value;

/// Question text -> the first gold SQL of the question `shift` places later
/// in the same database (0: its own).
async fn oracle(shift: usize) -> HashMap<String, String> {
    for db in DEFOG_DATABASES {
        defog_database(db).await;
    }
    let questions: Vec<Value> =
        std::fs::read_to_string(testdata_dir().join("eval/defog/questions.jsonl"))
            .expect("questions")
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
    let mut answers = HashMap::new();
    for db in DEFOG_DATABASES {
        let same: Vec<&Value> = questions.iter().filter(|q| q["db"] == *db).collect();
        for (i, q) in same.iter().enumerate() {
            let donor = same[(i + shift) % same.len()];
            answers.insert(
                q["question"].as_str().unwrap_or_default().to_owned(),
                donor["gold"][0].as_str().unwrap_or_default().to_owned(),
            );
        }
    }
    answers
}

/// Runs `custard-eval` against a fake model answering from `answers`; returns the report.
async fn run_harness(answers: HashMap<String, String>) -> Value {
    // The question is the first user message; later ones would be repair requests.
    let server = FakeOpenAi::with_responder(move |request| {
        let question =
            request.messages.iter().find(|m| m.role == "user").map(|m| m.content.trim().to_owned());
        match question.and_then(|q| answers.get(&q).cloned()) {
            Some(sql) => Behaviour::reply(format!("```sql\n{sql}\n```")),
            None => Behaviour::reply("-- cannot answer: not in the evaluation set"),
        }
    })
    .await;
    let report_path = std::env::temp_dir().join(format!(
        "custard-eval-oracle-{}-{}.json",
        std::process::id(),
        server.addr().port()
    ));
    let (url_template, base_url) =
        (url_with_database(&test_database_url(), "{db}"), server.base_url());
    let (questions, report) =
        (testdata_dir().join("eval/defog/questions.jsonl"), report_path.clone());
    let output = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_custard-eval"))
            .args(["--engine", "openai", "--llm-model", "oracle", "--llm-base-url", &base_url])
            .arg("--questions")
            .arg(&questions)
            .args(["--database-url", &url_template])
            .arg("--report")
            .arg(&report)
            .env_remove("OPENAI_API_KEY")
            .output()
    })
    .await
    .expect("thread")
    .expect("running custard-eval");
    assert!(
        output.status.success(),
        "custard-eval failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(&report_path).expect("report"))
            .expect("json");
    let _ = std::fs::remove_file(&report_path);
    report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oracle_model_scores_full_execution_accuracy() {
    let report = run_harness(oracle(0).await).await;
    let wrong: Vec<&Value> = report["results"]
        .as_array()
        .expect("results")
        .iter()
        .filter(|r| r["correct"] != true)
        .collect();
    assert!(wrong.is_empty(), "the oracle lost answers: {wrong:#?}");
    assert_eq!(report["execution_accuracy"], 1.0);
    assert_eq!(report["questions"], 172);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_to_other_questions_are_scored_wrong() {
    let report = run_harness(oracle(1).await).await;
    let accuracy = report["execution_accuracy"].as_f64().expect("accuracy");
    assert!(accuracy < 0.2, "another question's SQL should rarely match: accuracy {accuracy}");
    assert!(
        report["answered"].as_u64().expect("answered") > 150,
        "the answers ran, they were just wrong"
    );
}

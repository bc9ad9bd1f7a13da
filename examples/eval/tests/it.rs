//! The harness with an "oracle" model: a fake OpenAI-compatible server that
//! replies with each question's gold SQL. The pipeline must lose nothing
//! between model and answer, so execution accuracy is 1.00.

use std::collections::HashMap;
use std::process::Command;

use custard_testkit::fake_openai::{Behaviour, FakeOpenAi};
use custard_testkit::{
    DEFOG_DATABASES, defog_database, shared_dir, test_database_url, url_with_database,
};
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oracle_model_scores_full_execution_accuracy() {
    for db in DEFOG_DATABASES {
        defog_database(db).await;
    }
    let questions_path = shared_dir().join("eval/defog/questions.jsonl");
    let gold: HashMap<String, String> = std::fs::read_to_string(&questions_path)
        .expect("questions")
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .map(|q| {
            (
                q["question"].as_str().unwrap_or_default().to_owned(),
                q["gold"][0].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    // The question is the first user message; later ones would be repair requests.
    let server = FakeOpenAi::with_responder(move |request| {
        let question =
            request.messages.iter().find(|m| m.role == "user").map(|m| m.content.trim().to_owned());
        match question.and_then(|q| gold.get(&q).cloned()) {
            Some(sql) => Behaviour::reply(format!("```sql\n{sql}\n```")),
            None => Behaviour::reply("-- cannot answer: not in the evaluation set"),
        }
    })
    .await;
    let report_path =
        std::env::temp_dir().join(format!("custard-eval-oracle-{}.json", std::process::id()));
    let url_template = url_with_database(&test_database_url(), "{db}");
    let base_url = server.base_url();
    let report_for_child = report_path.clone();
    let output = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_custard-eval"))
            .args(["--engine", "openai", "--llm-model", "oracle", "--llm-base-url", &base_url])
            .arg("--questions")
            .arg(&questions_path)
            .args(["--database-url", &url_template])
            .arg("--report")
            .arg(&report_for_child)
            .env_remove("OPENAI_API_KEY")
            .output()
    })
    .await
    .expect("thread")
    .expect("running custard-eval");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "custard-eval failed: {stderr}");
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(&report_path).expect("report"))
            .expect("json");
    let _ = std::fs::remove_file(&report_path);
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

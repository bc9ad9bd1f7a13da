//! `check-sql` over the corpora of testdata/ and the evaluation set.

use custard_core::{DiscoverOptions, Executor, Guard, PostgresExecutor, RunLimits};
use custard_testkit::{DEFOG_DATABASES, defog_database, testdata_jsonl_lines};
use serde_json::{Value, json};

use crate::{agent, json_lines};

fn check_corpus(path: &str, expect_allowed: bool) {
    let input = testdata_jsonl_lines(path).join("\n");
    let (ok, stdout, stderr) = agent(&["check-sql"], &input);
    assert!(ok, "check-sql failed: {stderr}");
    let verdicts = json_lines(&stdout);
    assert_eq!(verdicts.len(), testdata_jsonl_lines(path).len(), "one verdict per line");
    let wrong: Vec<String> = verdicts
        .iter()
        .filter(|v| v["allowed"] != json!(expect_allowed))
        .map(|v| format!("{} ({}: {})", v["id"], v["code"], v["reason"]))
        .collect();
    assert!(wrong.is_empty(), "{} of {path} got the wrong verdict: {wrong:#?}", wrong.len());
    for v in &verdicts {
        assert!(v["id"].is_string(), "the id is kept: {v}");
        if expect_allowed {
            assert!(v["sql"].is_string() && v["code"].is_null(), "{v}");
        } else {
            assert!(v["sql"].is_null() && v["code"].is_string() && v["reason"].is_string(), "{v}");
        }
    }
}

#[test]
fn every_attack_is_rejected() {
    check_corpus("security/attacks.jsonl", false);
}

#[test]
fn every_legit_query_is_accepted() {
    check_corpus("security/legit.jsonl", true);
}

#[test]
fn bad_lines_get_a_verdict_and_the_rest_go_on() {
    let input = "not json\n[1]\n{\"id\": 7}\n{\"sql\": \"SELECT 1\", \"dialect\": \"oracle\"}\n{\"sql\": \"SELECT 1\", \"dialect\": \"sqlite\"}\n";
    let (ok, stdout, stderr) = agent(&["check-sql"], input);
    assert!(ok, "{stderr}");
    let v = json_lines(&stdout);
    let codes: Vec<&Value> = v.iter().map(|l| &l["code"]).collect();
    assert_eq!(
        codes,
        [
            &json!("invalid_input"),
            &json!("invalid_input"),
            &json!("invalid_input"),
            &json!("invalid_input"),
            &Value::Null
        ]
    );
    assert_eq!(v[2]["id"], json!(7));
}

#[derive(Debug)]
struct Gold {
    id: String,
    sql: String,
}

fn gold_queries(db: &str) -> Vec<Gold> {
    let mut out = Vec::new();
    for line in testdata_jsonl_lines("eval/defog/questions.jsonl") {
        let q: Value = serde_json::from_str(&line).expect("question line");
        if q["db"] != json!(db) {
            continue;
        }
        for (i, sql) in q["gold"].as_array().expect("gold list").iter().enumerate() {
            out.push(Gold {
                id: format!("{}#{i}", q["id"].as_str().unwrap_or("?")),
                sql: sql.as_str().expect("gold sql").to_owned(),
            });
        }
    }
    out
}

/// Every gold query passes `check-sql --database-url` (identifier check on)
/// and the SQL it returns runs through the PostgreSQL executor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_gold_query_passes_the_identifier_check_and_executes() {
    let mut checked_total = 0;
    for db in DEFOG_DATABASES {
        let url = defog_database(db).await;
        let gold = gold_queries(db);
        assert!(!gold.is_empty(), "no gold queries for {db}");
        let input: String =
            gold.iter().map(|g| json!({"id": g.id, "sql": g.sql}).to_string() + "\n").collect();
        let (ok, stdout, stderr) = tokio::task::spawn_blocking(move || {
            agent(&["check-sql", "--database-url", &url], &input)
        })
        .await
        .expect("cli thread");
        assert!(ok, "check-sql --database-url failed for {db}: {stderr}");
        let verdicts = json_lines(&stdout);
        assert_eq!(verdicts.len(), gold.len());
        let rejected: Vec<String> = verdicts
            .iter()
            .filter(|v| v["allowed"] != json!(true))
            .map(|v| format!("{}: {} {} -- {}", v["id"], v["code"], v["reason"], v["input_sql"]))
            .collect();
        assert!(
            rejected.is_empty(),
            "{db}: {} gold queries rejected:\n{}",
            rejected.len(),
            rejected.join("\n")
        );

        // The same guard in process, then the executor runs what it returned.
        let url = custard_testkit::url_with_database(&custard_testkit::test_database_url(), db);
        let executor = PostgresExecutor::connect(&url).await.expect("connect");
        let schema = executor.discover(&DiscoverOptions::default()).await.expect("discover");
        let guard = Guard::builder(custard_core::Dialect::Postgres)
            .max_rows(1000)
            .schema(schema)
            .build()
            .expect("guard");
        let limits = RunLimits::default();
        let mut failed = Vec::new();
        for (g, verdict) in gold.iter().zip(&verdicts) {
            let checked = guard.check(&g.sql).expect("accepted by the CLI, so accepted here");
            assert_eq!(json!(checked.sql()), verdict["sql"], "{}: CLI and library disagree", g.id);
            if let Err(e) = executor.query(&checked, &limits).await {
                failed.push(format!("{}: {e}\n  {}", g.id, checked.sql()));
            }
            checked_total += 1;
        }
        assert!(
            failed.is_empty(),
            "{db}: {} checked gold queries failed to run:\n{}",
            failed.len(),
            failed.join("\n")
        );
    }
    eprintln!("{checked_total} gold queries checked and executed");
}

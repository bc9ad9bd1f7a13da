//! `custard-eval`: runs every question of an evaluation set through the ask
//! pipeline against its own database and reports execution accuracy,
//! precision, retrieval recall and latency.
//!
//! ```sh
//! cargo run --release -p custard-eval -- --engine offline \
//!     --questions testdata/eval/defog/questions.jsonl \
//!     --database-url 'postgres://postgres@127.0.0.1:5432/{db}' --report eval.json
//! ```

mod compare;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, ValueEnum};
use custard_core::llm::{LanguageModel, OfflineEngine, OpenAiConfig, OpenAiModel};
use custard_core::{
    AskOptions, AskPipeline, Dialect, DiscoverOptions, Executor, Guard, PostgresExecutor,
    RetrieveOptions, RunLimits, Schema, SchemaIndex,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// Evaluates Custard's ask pipeline on questions with reference SQL.
#[derive(Debug, Parser)]
#[command(name = "custard-eval", version, about)]
struct Args {
    /// The questions: JSON lines with id, db, question, category and gold (a list of SQL).
    #[arg(long, default_value = "testdata/eval/defog/questions.jsonl")]
    questions: PathBuf,
    /// Database URL template; `{db}` is replaced by each question's database.
    #[arg(
        long,
        env = "CUSTARD_EVAL_DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/{db}"
    )]
    database_url: String,
    /// Which engine writes the SQL.
    #[arg(long, value_enum, default_value_t = Engine::Offline)]
    engine: Engine,
    /// Base URL of an OpenAI-compatible API (engine openai).
    #[arg(long, env = "CUSTARD_LLM_BASE_URL", default_value = "https://api.openai.com/v1")]
    llm_base_url: String,
    /// Model name (engine openai).
    #[arg(long, env = "CUSTARD_LLM_MODEL")]
    llm_model: Option<String>,
    /// API key (engine openai); optional for local servers.
    #[arg(long, env = "OPENAI_API_KEY", hide_env_values = true)]
    llm_api_key: Option<String>,
    /// Measure retrieval over all databases' tables in one catalogue (no execution).
    #[arg(long)]
    union: bool,
    /// Token budget of the schema section of each prompt.
    #[arg(long, default_value_t = 2000)]
    token_budget: usize,
    /// Create missing databases from `<db>.sql` next to the questions file.
    #[arg(long)]
    load_dumps: bool,
    /// Frequent values read per text column (they help match values in questions).
    #[arg(long, default_value_t = 20)]
    sample_values: usize,
    /// Only the first N questions.
    #[arg(long)]
    limit: Option<usize>,
    /// Also write a JSON report here.
    #[arg(long)]
    report: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Engine {
    /// The rule-based offline engine (no network).
    Offline,
    /// An OpenAI-compatible chat model.
    Openai,
}

#[derive(Debug, Deserialize)]
struct Question {
    id: String,
    db: String,
    question: String,
    #[serde(default)]
    instructions: String,
    #[serde(default)]
    category: String,
    gold: Vec<String>,
}

#[derive(Debug, Serialize)]
struct QuestionResult {
    id: String,
    db: String,
    category: String,
    answered: bool,
    correct: bool,
    retrieved_all_gold_tables: bool,
    sql: Option<String>,
    error: Option<String>,
    latency_ms: f64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let text = std::fs::read_to_string(&args.questions)
        .with_context(|| format!("reading {}", args.questions.display()))?;
    let mut questions: Vec<Question> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, l)| serde_json::from_str(l).with_context(|| format!("question line {}", i + 1)))
        .collect::<anyhow::Result<_>>()?;
    if let Some(n) = args.limit {
        questions.truncate(n);
    }
    let data_dir = args.questions.parent().unwrap_or(Path::new(".")).to_path_buf();
    let mut dbs: Vec<String> = questions.iter().map(|q| q.db.clone()).collect();
    dbs.sort();
    dbs.dedup();

    let mut schemas = BTreeMap::new();
    for db in &dbs {
        let url = args.database_url.replace("{db}", db);
        if args.load_dumps {
            load_dump(&url, db, &data_dir).await?;
        }
        let executor = PostgresExecutor::connect(&url)
            .await
            .with_context(|| format!("connecting to database {db} (load it with --load-dumps)"))?;
        let mut schema =
            executor.discover(&DiscoverOptions { sample_values: args.sample_values }).await?;
        apply_descriptions(&mut schema, &data_dir.join(format!("{db}.json")));
        schemas.insert(db.clone(), (schema, Arc::new(executor)));
    }

    let report = if args.union {
        union_retrieval(&args, &questions, &schemas)
    } else {
        let model = model(&args)?;
        execution(&args, &questions, &schemas, model).await?
    };
    println!("{}", serde_json::to_string_pretty(&summary_only(&report))?);
    if let Some(path) = &args.report {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("report written to {}", path.display());
    }
    Ok(())
}

fn model(args: &Args) -> anyhow::Result<Arc<dyn LanguageModel>> {
    Ok(match args.engine {
        Engine::Offline => Arc::new(OfflineEngine::new()),
        Engine::Openai => {
            let Some(model) = args.llm_model.clone() else {
                bail!("--llm-model (or CUSTARD_LLM_MODEL) is required with --engine openai")
            };
            let config = OpenAiConfig {
                base_url: args.llm_base_url.clone(),
                api_key: args.llm_api_key.clone(),
                model,
                ..OpenAiConfig::default()
            };
            Arc::new(OpenAiModel::new(config)?)
        }
    })
}

type Databases = BTreeMap<String, (Schema, Arc<PostgresExecutor>)>;

/// Runs every question through the pipeline and compares with the gold results.
async fn execution(
    args: &Args,
    questions: &[Question],
    dbs: &Databases,
    model: Arc<dyn LanguageModel>,
) -> anyhow::Result<Value> {
    // Large caps, so that neither side of a comparison is cut short.
    let limits =
        RunLimits { max_rows: 100_000, timeout: Duration::from_secs(30), ..RunLimits::default() };
    let mut results = Vec::new();
    let started = Instant::now();
    for (i, q) in questions.iter().enumerate() {
        let (schema, executor) = dbs.get(&q.db).context("database of a question")?;
        let options = AskOptions {
            max_rows: 100_000,
            limits: limits.clone(),
            retrieve: RetrieveOptions {
                token_budget: args.token_budget,
                ..RetrieveOptions::default()
            },
            instructions: (!q.instructions.trim().is_empty()).then(|| q.instructions.clone()),
            ..AskOptions::default()
        };
        let pipeline = AskPipeline::new(schema.clone(), model.clone(), executor.clone(), options)?;
        let gold_tables = gold_tables(schema, &q.gold);
        let index = SchemaIndex::new(schema.clone());
        let retrieved = index
            .retrieve(
                &q.question,
                &RetrieveOptions { token_budget: args.token_budget, ..RetrieveOptions::default() },
            )
            .table_names();
        let retrieved_all = covers_a_gold_query(&gold_tables, &retrieved);

        let t = Instant::now();
        let outcome = pipeline.ask(&q.question, &[]).await;
        let latency_ms = t.elapsed().as_secs_f64() * 1000.0;
        let gold = gold_results(schema, executor.as_ref(), &q.gold, &limits).await;
        let (answered, sql, error, correct) = match outcome {
            _ if gold.is_empty() => (
                false,
                None,
                Some("no reference query could run (harness failure)".to_owned()),
                false,
            ),
            Ok(answer) if answer.truncated => {
                (true, Some(answer.sql), Some("the answer was cut off".to_owned()), false)
            }
            Ok(answer) => {
                let correct = gold
                    .iter()
                    .any(|(rows, ordered)| compare::results_match(&answer.rows, rows, *ordered));
                (true, Some(answer.sql), None, correct)
            }
            Err(e) => (false, None, Some(format!("{}: {e}", e.code())), false),
        };
        let result = QuestionResult {
            id: q.id.clone(),
            db: q.db.clone(),
            category: q.category.clone(),
            answered,
            correct,
            retrieved_all_gold_tables: retrieved_all,
            sql,
            error,
            latency_ms,
        };
        results.push(result);
        if (i + 1) % 20 == 0 || i + 1 == questions.len() {
            let correct = results.iter().filter(|r| r.correct).count();
            eprintln!(
                "[{:>5.1}s] {}/{} questions, {} correct",
                started.elapsed().as_secs_f64(),
                i + 1,
                questions.len(),
                correct
            );
        }
    }
    Ok(report(&results, args))
}

/// Results of every gold query (and whether it orders its rows); failures are skipped.
async fn gold_results(
    schema: &Schema,
    executor: &PostgresExecutor,
    gold: &[String],
    limits: &RunLimits,
) -> Vec<(Vec<Vec<Value>>, bool)> {
    let Ok(guard) =
        Guard::builder(Dialect::Postgres).max_rows(100_000).schema(schema.clone()).build()
    else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for sql in gold {
        let Ok(checked) = guard.check(sql) else { continue };
        // A cut-off reference result is not comparable.
        if let Some(result) =
            executor.query(&checked, limits).await.ok().filter(|r| !r.summary.truncated)
        {
            out.push((result.rows, has_order_by(sql)));
        }
    }
    out
}

fn has_order_by(sql: &str) -> bool {
    use sqlparser::ast::Statement;
    use sqlparser::dialect::PostgreSqlDialect;
    match sqlparser::parser::Parser::parse_sql(&PostgreSqlDialect {}, sql).as_deref() {
        Ok([Statement::Query(q)]) => q.order_by.is_some(),
        _ => false,
    }
}

/// The tables each gold query reads, as `schema.table`, by the guard's own resolution.
fn gold_tables(schema: &Schema, gold: &[String]) -> Vec<Vec<String>> {
    let Ok(guard) = Guard::builder(schema.dialect).unlimited_rows().schema(schema.clone()).build()
    else {
        return Vec::new();
    };
    gold.iter().filter_map(|sql| guard.check(sql).ok()).map(|c| c.tables().to_vec()).collect()
}

/// Whether the retrieved tables hold every table of at least one gold query
/// (any gold query is an acceptable answer).
fn covers_a_gold_query(gold: &[Vec<String>], retrieved: &[String]) -> bool {
    gold.iter().any(|tables| !tables.is_empty() && tables.iter().all(|t| retrieved.contains(t)))
}

/// Retrieval over one catalogue holding every database's tables, each database
/// as its own schema (so equal table names stay apart).
fn union_retrieval(args: &Args, questions: &[Question], dbs: &Databases) -> Value {
    let mut union = Schema::new(Dialect::Postgres);
    for (db, (schema, _)) in dbs {
        for table in &schema.tables {
            let mut t = table.clone();
            t.schema = db.clone();
            for fk in &mut t.foreign_keys {
                fk.referenced_schema = db.clone();
            }
            union.tables.push(t);
        }
    }
    let started = Instant::now();
    let index = SchemaIndex::new(union.clone());
    eprintln!("indexed {} tables in {:?}", union.tables.len(), started.elapsed());
    let options = RetrieveOptions { token_budget: args.token_budget, ..RetrieveOptions::default() };
    let mut hits = 0;
    let mut tokens = Vec::new();
    let mut latencies = Vec::new();
    let mut results = Vec::new();
    for q in questions {
        let Some((schema, _)) = dbs.get(&q.db) else { continue };
        // The union catalogue names each database's tables `db.table`.
        let wanted: Vec<Vec<String>> = gold_tables(schema, &q.gold)
            .into_iter()
            .map(|tables| {
                tables
                    .iter()
                    .map(|t| {
                        format!("{}.{}", q.db, t.split_once('.').map_or(t.as_str(), |(_, n)| n))
                    })
                    .collect()
            })
            .collect();
        let t = Instant::now();
        let retrieved = index.retrieve(&q.question, &options);
        latencies.push(t.elapsed().as_secs_f64() * 1000.0);
        let names = retrieved.table_names();
        let all = covers_a_gold_query(&wanted, &names);
        hits += usize::from(all);
        tokens.push(retrieved.estimated_tokens as f64);
        results
            .push(json!({"id": q.id, "gold_tables": wanted, "retrieved": names, "all_found": all,
                            "tokens": retrieved.estimated_tokens}));
    }
    let n = questions.len().max(1) as f64;
    json!({
        "mode": "union",
        "tables": union.tables.len(),
        "questions": questions.len(),
        "retrieval_recall": hits as f64 / n,
        "token_budget": args.token_budget,
        "schema_tokens": {"p50": percentile(&tokens, 50.0), "max": tokens.iter().cloned().fold(0.0, f64::max)},
        "retrieval_ms": {"p50": percentile(&latencies, 50.0), "p95": percentile(&latencies, 95.0)},
        "results": results,
    })
}

fn report(results: &[QuestionResult], args: &Args) -> Value {
    let n = results.len();
    let answered = results.iter().filter(|r| r.answered).count();
    let correct = results.iter().filter(|r| r.correct).count();
    let recall = results.iter().filter(|r| r.retrieved_all_gold_tables).count();
    let latencies: Vec<f64> = results.iter().map(|r| r.latency_ms).collect();
    let mut by_category: BTreeMap<&str, (usize, usize, usize)> = BTreeMap::new();
    for r in results {
        let e = by_category.entry(r.category.as_str()).or_default();
        e.0 += 1;
        e.1 += usize::from(r.answered);
        e.2 += usize::from(r.correct);
    }
    let ratio = |a: usize, b: usize| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    json!({
        "engine": format!("{:?}", args.engine).to_lowercase(),
        "questions": n,
        "answered": answered,
        "correct": correct,
        "execution_accuracy": ratio(correct, n),
        "precision": ratio(correct, answered),
        "coverage": ratio(answered, n),
        "retrieval_recall": ratio(recall, n),
        "token_budget": args.token_budget,
        "latency_ms": {"p50": percentile(&latencies, 50.0), "p95": percentile(&latencies, 95.0), "p99": percentile(&latencies, 99.0)},
        "by_category": by_category.iter().map(|(k, (q, a, c))| (k.to_string(), json!({
            "questions": q, "answered": a, "correct": c, "execution_accuracy": ratio(*c, *q), "precision": ratio(*c, *a)
        }))).collect::<serde_json::Map<_, _>>(),
        "results": results,
    })
}

/// The report without the per-question results, for the terminal.
fn summary_only(report: &Value) -> Value {
    let mut v = report.clone();
    if let Some(o) = v.as_object_mut() {
        o.remove("results");
    }
    v
}

fn percentile(values: &[f64], p: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * (v.len() - 1) as f64).round() as usize;
    v[rank.min(v.len() - 1)]
}

/// Column descriptions of `<db>.json` (defog format) as column comments, when the file exists.
fn apply_descriptions(schema: &mut Schema, path: &Path) {
    let Ok(text) = std::fs::read_to_string(path) else { return };
    let Ok(meta) = serde_json::from_str::<Value>(&text) else { return };
    let Some(tables) = meta.get("table_metadata").and_then(Value::as_object) else { return };
    for table in &mut schema.tables {
        let Some(columns) = tables.get(&table.name).and_then(Value::as_array) else { continue };
        for described in columns {
            let (Some(name), Some(text)) = (
                described.get("column_name").and_then(Value::as_str),
                described.get("column_description").and_then(Value::as_str),
            ) else {
                continue;
            };
            let text = text.trim();
            if let Some(c) = table
                .columns
                .iter_mut()
                .find(|c| c.name == name && c.comment.is_none() && !text.is_empty())
            {
                c.comment = Some(text.to_owned());
            }
        }
    }
}

/// `url` with the database name (the last path segment) replaced.
fn with_database(url: &str, db: &str) -> String {
    let (base, query) = url.split_once('?').map_or((url, None), |(b, q)| (b, Some(q)));
    let host_end = base.find("://").map_or(0, |i| i + 3);
    let prefix = base[host_end..].find('/').map_or(base, |i| &base[..host_end + i]);
    match query {
        Some(q) => format!("{prefix}/{db}?{q}"),
        None => format!("{prefix}/{db}"),
    }
}

/// Creates database `db` from `<db>.sql` when it does not exist (loaded under a
/// temporary name and renamed when complete).
async fn load_dump(url: &str, db: &str, dir: &Path) -> anyhow::Result<()> {
    let admin_url = with_database(url, "postgres");
    let (admin, conn) = tokio_postgres::connect(&admin_url, tokio_postgres::NoTls)
        .await
        .context("connecting as admin")?;
    tokio::spawn(conn);
    if admin.query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&db]).await?.is_some() {
        return Ok(());
    }
    let dump = std::fs::read_to_string(dir.join(format!("{db}.sql")))?;
    let loading = format!("{db}__loading");
    admin.batch_execute(&format!("DROP DATABASE IF EXISTS \"{loading}\"")).await?;
    admin.batch_execute(&format!("CREATE DATABASE \"{loading}\"")).await?;
    let (client, conn) =
        tokio_postgres::connect(&with_database(url, &loading), tokio_postgres::NoTls).await?;
    tokio::spawn(conn);
    client.batch_execute(&dump).await.with_context(|| format!("loading {db}.sql"))?;
    client.batch_execute("ANALYZE").await?;
    drop(client);
    admin.batch_execute(&format!("ALTER DATABASE \"{loading}\" RENAME TO \"{db}\"")).await?;
    eprintln!("loaded {db}");
    Ok(())
}

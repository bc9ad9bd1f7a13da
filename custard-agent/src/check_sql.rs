//! `custard-agent check-sql`: the guard as a filter over JSON lines.

use std::io::Write;

use anyhow::Context;
use custard_core::{DiscoverOptions, Guard, InputErrorCode, Rejection};
use serde_json::{Map, Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};

/// Options of `check-sql`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Dialect of lines that do not name one (a "dialect" field in a line wins).
    #[arg(long, env = "CUSTARD_DIALECT", default_value = "postgres")]
    dialect: custard_core::Dialect,
    /// Also check table and column names against this database's schema.
    #[arg(long, env = "CUSTARD_DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// The row limit the guard enforces.
    #[arg(long, env = "CUSTARD_MAX_ROWS", default_value_t = 1000)]
    max_rows: u64,
}

pub(crate) async fn run(args: Args) -> anyhow::Result<()> {
    let with_schema = match &args.database_url {
        Some(url) => {
            let executor =
                custard_core::connect(url).await.context("connecting to the database")?;
            let schema = executor
                .discover(&DiscoverOptions::default())
                .await
                .context("reading the schema")?;
            Some(Guard::builder(schema.dialect).max_rows(args.max_rows).schema(schema).build()?)
        }
        None => None,
    };
    let guard_for = |dialect: custard_core::Dialect| -> anyhow::Result<Guard> {
        Ok(Guard::builder(dialect).max_rows(args.max_rows).build()?)
    };
    let default_guard = match &with_schema {
        Some(g) => g.clone(),
        None => guard_for(args.dialect)?,
    };

    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    while let Some(line) = lines.next_line().await.context("reading stdin")? {
        if line.trim().is_empty() {
            continue;
        }
        let verdict = match serde_json::from_str::<Value>(&line) {
            Ok(Value::Object(input)) => {
                let guard = match line_dialect(&input) {
                    Ok(Some(d)) if d != default_guard.dialect() => {
                        if with_schema.is_some() {
                            Err(format!(
                                "the line is {d} SQL but the database is {}",
                                default_guard.dialect()
                            ))
                        } else {
                            guard_for(d).map_err(|e| e.to_string())
                        }
                    }
                    Ok(_) => Ok(default_guard.clone()),
                    Err(e) => Err(e),
                };
                match (guard, input.get("sql")) {
                    (Ok(guard), Some(Value::String(sql))) => {
                        let result = guard.check(sql);
                        verdict(input.clone(), result)
                    }
                    (Err(e), _) => invalid(input, &e),
                    (Ok(_), _) => invalid(input, "the line has no \"sql\" string"),
                }
            }
            Ok(_) => invalid(Map::new(), "the line is not a JSON object"),
            Err(e) => invalid(Map::new(), &format!("the line is not valid JSON: {e}")),
        };
        serde_json::to_writer(&mut out, &verdict)?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(())
}

fn line_dialect(input: &Map<String, Value>) -> Result<Option<custard_core::Dialect>, String> {
    match input.get("dialect") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(d)) => {
            d.parse().map(Some).map_err(|e: custard_core::UnknownDialect| e.to_string())
        }
        Some(_) => Err("\"dialect\" must be a string".to_owned()),
    }
}

/// The output line: the input's fields, the original SQL under `input_sql`,
/// and the verdict; `sql` becomes the SQL that would run (null when rejected).
fn verdict(
    mut line: Map<String, Value>,
    result: Result<custard_core::CheckedSql, Rejection>,
) -> Value {
    if let Some(sql) = line.remove("sql") {
        line.insert("input_sql".to_owned(), sql);
    }
    match result {
        Ok(checked) => {
            line.insert("allowed".to_owned(), json!(true));
            line.insert("code".to_owned(), Value::Null);
            line.insert("reason".to_owned(), Value::Null);
            line.insert("sql".to_owned(), json!(checked.sql()));
            line.insert("tables".to_owned(), json!(checked.tables()));
        }
        Err(r) => {
            line.insert("allowed".to_owned(), json!(false));
            line.insert("code".to_owned(), json!(r.code.as_str()));
            line.insert("reason".to_owned(), json!(r.message));
            line.insert("sql".to_owned(), Value::Null);
            if !r.suggestions.is_empty() {
                line.insert("suggestions".to_owned(), json!(r.suggestions));
            }
        }
    }
    Value::Object(line)
}

fn invalid(mut line: Map<String, Value>, reason: &str) -> Value {
    if let Some(sql) = line.remove("sql") {
        line.insert("input_sql".to_owned(), sql);
    }
    line.insert("allowed".to_owned(), json!(false));
    line.insert("code".to_owned(), json!(InputErrorCode::InvalidInput.as_str()));
    line.insert("reason".to_owned(), json!(reason));
    line.insert("sql".to_owned(), Value::Null);
    Value::Object(line)
}

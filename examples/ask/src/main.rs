//! Custard in your own program: discover a database, ask one question, print
//! the answer, the SQL and the table.
//!
//! ```sh
//! cargo run -p example-ask -- sqlite:./shop.db "how many customers per city"
//! # with a model: CUSTARD_LLM_MODEL=gpt-4o-mini OPENAI_API_KEY=... cargo run -p example-ask -- ...
//! ```

use std::sync::Arc;

use anyhow::Context;
use custard_core::llm::{LanguageModel, OfflineEngine, OpenAiConfig, OpenAiModel};
use custard_core::{AskOptions, AskPipeline, DiscoverOptions};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(url), Some(question)) = (args.next(), args.next()) else {
        anyhow::bail!("usage: example-ask DATABASE_URL QUESTION");
    };

    // 1. Connect and read the schema (a few sample values help match words).
    let executor = custard_core::connect(&url).await.context("connecting")?;
    let schema = executor.discover(&DiscoverOptions { sample_values: 10 }).await?;

    // 2. Pick a model: an OpenAI-compatible one when configured, else offline rules.
    let model: Arc<dyn LanguageModel> = match std::env::var("CUSTARD_LLM_MODEL") {
        Ok(model) => Arc::new(OpenAiModel::new(OpenAiConfig {
            model,
            api_key: std::env::var("OPENAI_API_KEY").ok(),
            base_url: std::env::var("CUSTARD_LLM_BASE_URL")
                .unwrap_or_else(|_| OpenAiConfig::default().base_url),
            ..OpenAiConfig::default()
        })?),
        Err(_) => Arc::new(OfflineEngine::new()),
    };

    // 3. Ask.
    let pipeline = AskPipeline::new(schema, model, Arc::from(executor), AskOptions::default())?;
    let answer = pipeline.ask(&question, &[]).await?;

    println!("{}\n\n{}\n", answer.text, answer.sql);
    let header: Vec<&str> = answer.columns.iter().map(|c| c.name.as_str()).collect();
    println!("{}", header.join(" | "));
    for row in answer.rows.iter().take(20) {
        let cells: Vec<String> = row
            .iter()
            .map(|v| match v {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect();
        println!("{}", cells.join(" | "));
    }
    if answer.truncated || answer.rows.len() > 20 {
        println!("... {} rows shown of more", answer.rows.len().min(20));
    }
    println!("\n(answered by {} in {:?})", answer.engine, answer.timings.total);
    Ok(())
}

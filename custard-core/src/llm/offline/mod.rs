//! The rule-based offline engine: answers the common question shapes from the
//! schema alone, with no network and no key, and abstains when unsure.
//!
//! Precision comes first. Every word of the question must be explained by the
//! engine's vocabulary (counts, aggregates, rankings, groups, time windows), a
//! table or column name, a sample value or a quoted literal; a question that
//! reads two ways with different answers is not answered.
//!
//! - `lexer`: tokens and the fixed vocabulary;
//! - `catalog`: tables and columns as normalized words, types and joins;
//! - `parse`: the readings of a question as items (values, keywords, nouns);
//! - `plan`: one reading to a [`Query`](sql::Query), or a reason to abstain;
//! - `sql`: the query written in the dialect;
//! - `examples`: questions about a schema that the engine answers.

mod catalog;
mod examples;
mod lexer;
mod parse;
mod plan;
mod sql;
#[cfg(test)]
mod tests;

use super::{Generation, GenerationRequest, LanguageModel, LlmError, LlmErrorCode};
use crate::{BoxFuture, Dialect, Schema, SchemaIndex};

/// Answers common question shapes from the schema alone; abstains otherwise.
///
/// It handles "how many X", "list X", "top N X by Y", the total, average,
/// minimum or maximum of Y (per Z), filters on sample values and quoted
/// names, "in the last N days" and joins along one foreign key.
#[derive(Clone, Debug, Default)]
pub struct OfflineEngine {}

impl OfflineEngine {
    /// A new engine.
    pub fn new() -> Self {
        OfflineEngine {}
    }

    /// Up to `max` questions about `index`'s schema that this engine answers,
    /// written with the schema's own table and column names: each one goes
    /// through what [`AskPipeline`](crate::AskPipeline) does before running
    /// anything (the default retrieval, the engine's plan, the guard), and
    /// nothing is run. Varied in shape and table; none when the engine can
    /// read nothing of the schema.
    pub fn example_questions(&self, index: &SchemaIndex, max: usize) -> Vec<String> {
        examples::example_questions(index, max)
    }
}

impl LanguageModel for OfflineEngine {
    fn name(&self) -> String {
        "offline".to_owned()
    }

    fn can_repair(&self) -> bool {
        false
    }

    fn generate<'a>(
        &'a self,
        request: &'a GenerationRequest<'a>,
    ) -> BoxFuture<'a, Result<Generation, LlmError>> {
        let result = write_sql(request.question, request.schema, request.dialect)
            .map(|sql| Generation { text: sql.clone(), sql: Some(sql) })
            .map_err(|a| {
                let message = format!(
                    "the offline engine {}; configure an LLM for questions like this",
                    a.reason
                );
                LlmError::new(LlmErrorCode::Abstained, message)
            });
        Box::pin(async move { result })
    }
}

/// Why the engine gives no SQL, as the end of "the offline engine ...".
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Abstain {
    reason: String,
}

impl Abstain {
    fn new(reason: impl Into<String>) -> Self {
        Abstain { reason: reason.into() }
    }
}

/// The SQL for `question`, or why the engine will not answer it.
fn write_sql(question: &str, schema: &Schema, dialect: Dialect) -> Result<String, Abstain> {
    let cat = catalog::Catalog::new(schema);
    let q = parse::Question::new(question, &cat);
    if q.tokens.iter().all(|t| t.is_stop()) {
        return Err(Abstain::new("found no question to answer"));
    }
    let mut first_error = None;
    for group in q.readings(&cat)? {
        let mut answers: Vec<sql::Query> = Vec::new();
        for items in &group {
            match plan::plan(&cat, &q, items) {
                Ok(query) if !answers.contains(&query) => answers.push(query),
                Ok(_) => {}
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        match answers.as_slice() {
            [] => continue,
            [one] => return Ok(one.to_sql(&cat, dialect)),
            _ => return Err(Abstain::new("found several ways to read the question")),
        }
    }
    Err(first_error.unwrap_or_else(|| Abstain::new("could not read the question")))
}

//! Schema retrieval (stub, being written).

use crate::{DdlOptions, Schema};

/// A schema indexed once for ranking tables and columns against questions.
#[derive(Debug)]
pub struct SchemaIndex {
    schema: Schema,
}

/// Limits and context for one retrieval.
#[derive(Clone, Debug)]
pub struct RetrieveOptions {
    /// The most tokens the rendered schema may take in the prompt.
    pub token_budget: usize,
    /// The most tables to keep, however small they are.
    pub max_tables: usize,
    /// Earlier questions of the conversation, so follow-ups keep their tables.
    pub context: Vec<String>,
    /// How the kept tables are rendered.
    pub ddl: DdlOptions,
}

impl Default for RetrieveOptions {
    fn default() -> Self {
        RetrieveOptions {
            token_budget: 2000,
            max_tables: 12,
            context: Vec::new(),
            ddl: DdlOptions::default(),
        }
    }
}

/// The part of a schema relevant to a question.
#[derive(Clone, Debug)]
pub struct Retrieved {
    /// The kept tables (with only their kept columns), most relevant first.
    pub schema: Schema,
    /// `schema.table` and its score, for every kept table, most relevant first.
    pub scores: Vec<(String, f64)>,
    /// The kept tables rendered as compact DDL for the prompt.
    pub ddl: String,
    /// Estimated tokens of `ddl`.
    pub estimated_tokens: usize,
}

impl SchemaIndex {
    /// Indexes `schema`.
    pub fn new(schema: Schema) -> Self {
        SchemaIndex { schema }
    }

    /// The indexed schema.
    pub fn schema(&self) -> &Schema {
        &self.schema
    }

    /// Ranks tables for `question` and keeps what fits the budget.
    pub fn retrieve(&self, _question: &str, options: &RetrieveOptions) -> Retrieved {
        let ddl = self.schema.to_ddl(&options.ddl);
        Retrieved {
            schema: self.schema.clone(),
            scores: self
                .schema
                .tables
                .iter()
                .map(|t| (format!("{}.{}", t.schema, t.name), 0.0))
                .collect(),
            estimated_tokens: crate::text::estimate_tokens(&ddl),
            ddl,
        }
    }
}

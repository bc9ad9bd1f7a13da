//! The ask pipeline: retrieve -> prompt -> generate -> guard -> execute, with
//! bounded repair (the guard's rejection or the database's error is fed back
//! to the model), then an answer built from the result.
//!
//! The executor is a trait object, so the same pipeline runs over a direct
//! database connection (SDK use) and over an agent (server use).

mod answer_text;
mod chart;

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::codes::codes;
use crate::llm::{GenerationRequest, LanguageModel, LlmError, LlmErrorCode};
use crate::text::truncate;
use crate::{
    ChatMessage, Code, ColumnMeta, Example, ExecError, ExecErrorCode, Executor, Feedback, Guard,
    GuardConfigError, PromptBuilder, RejectionCode, RetrieveOptions, Role, RunLimits, Schema,
    SchemaIndex, Turn,
};

pub use chart::{ChartKind, ChartSpec};

/// Settings of an [`AskPipeline`].
#[derive(Clone, Debug)]
pub struct AskOptions {
    /// How many times a failed attempt is fed back for a new one (default 2).
    pub max_repairs: usize,
    /// The most rows an answer carries; the guard wraps queries to this limit.
    pub max_rows: u64,
    /// Bounds on each query run (timeout, bytes, ...).
    pub limits: RunLimits,
    /// How much schema goes into the prompt.
    pub retrieve: RetrieveOptions,
    /// Business instructions for this database, added to the prompt.
    pub instructions: Option<String>,
    /// Question/SQL examples shown to the model.
    pub examples: Vec<Example>,
    /// Ask the model for a one-paragraph summary instead of the rule-built text.
    pub model_summary: bool,
}

impl Default for AskOptions {
    fn default() -> Self {
        AskOptions {
            max_repairs: 2,
            max_rows: 1000,
            limits: RunLimits::default(),
            retrieve: RetrieveOptions::default(),
            instructions: None,
            examples: Vec::new(),
            model_summary: false,
        }
    }
}

/// Time spent in each step of one question, summed over attempts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Timings {
    /// Ranking the schema.
    pub retrieve: Duration,
    /// Building prompts.
    pub prompt: Duration,
    /// Waiting for the model.
    pub generate: Duration,
    /// Checking SQL.
    pub guard: Duration,
    /// Running SQL.
    pub execute: Duration,
    /// Writing the answer text.
    pub answer: Duration,
    /// The whole question.
    pub total: Duration,
}

/// Where an attempt failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AttemptStage {
    /// The model's reply held no SQL.
    NoSql,
    /// The guard rejected the SQL.
    Guard,
    /// The database rejected the SQL.
    Database,
}

/// One try at writing SQL for the question.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attempt {
    /// The model's reply.
    pub reply: String,
    /// The SQL found in it.
    pub sql: Option<String>,
    /// What went wrong, or `None` for the attempt that answered.
    pub failure: Option<AttemptFailure>,
}

/// Why an attempt failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttemptFailure {
    /// The step that failed.
    pub stage: AttemptStage,
    /// What refused it: [`AskErrorCode::NoSql`], the guard's rejection code
    /// or the executor's error code.
    pub code: Code,
    /// The message fed back to the model.
    pub message: String,
}

/// The answer to a question.
#[derive(Clone, Debug, PartialEq)]
pub struct Answer {
    /// A plain-language answer built from the whole result.
    pub text: String,
    /// The SQL that answered, as the guard printed it back (without the row-limit
    /// wrapper it ran in; see [`crate::CheckedSql::query`]).
    pub sql: String,
    /// The result's columns and types.
    pub columns: Vec<ColumnMeta>,
    /// The rows, capped at [`AskOptions::max_rows`].
    pub rows: Vec<Vec<Value>>,
    /// Whether rows were left out by a cap.
    pub truncated: bool,
    /// A chart for the result, when its shape suits one.
    pub chart: Option<ChartSpec>,
    /// Which engine wrote the SQL: `"offline"` or a model name.
    pub engine: String,
    /// Every attempt, the answering one last.
    pub attempts: Vec<Attempt>,
    /// Time per step.
    pub timings: Timings,
}

/// A step of answering a question, reported as it starts; `Generating`,
/// `Checking` and `Running` repeat for each repair attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AskStep {
    /// Ranking the schema for the question.
    Retrieving,
    /// Waiting for the model to write SQL.
    Generating,
    /// Checking the SQL with the guard.
    Checking,
    /// Running the SQL.
    Running,
    /// Writing the answer and suggesting a chart.
    Summarising,
}

impl AskStep {
    /// The stable lowercase name (`retrieving`, `generating`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            AskStep::Retrieving => "retrieving",
            AskStep::Generating => "generating",
            AskStep::Checking => "checking",
            AskStep::Running => "running",
            AskStep::Summarising => "summarising",
        }
    }
}

/// A progress callback for [`AskRequest::progress`].
pub type Progress<'a> = &'a (dyn Fn(AskStep) + Send + Sync);

/// One question for [`AskPipeline::ask_with`], with its context.
#[derive(Clone, Copy)]
pub struct AskRequest<'a> {
    question: &'a str,
    history: &'a [Turn],
    examples: Option<&'a [Example]>,
    progress: Option<Progress<'a>>,
}

impl fmt::Debug for AskRequest<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AskRequest")
            .field("question", &self.question)
            .field("history", &self.history.len())
            .field("examples", &self.examples.map(<[Example]>::len))
            .field("progress", &self.progress.is_some())
            .finish()
    }
}

impl<'a> AskRequest<'a> {
    /// A question with no history, the pipeline's own examples and no progress reports.
    pub fn new(question: &'a str) -> Self {
        AskRequest { question, history: &[], examples: None, progress: None }
    }

    /// The question trimmed, or [`AskError::InvalidQuestion`] when it is empty,
    /// longer than [`MAX_QUESTION_BYTES`], or holds a control character other
    /// than a line break or tab (no person types one; a NUL cannot even be
    /// stored in PostgreSQL's text): the one rule (and message) for
    /// questions, which the pipeline applies and hosts can apply before any
    /// other work.
    ///
    /// ```
    /// use custard_core::{AskRequest, MAX_QUESTION_BYTES};
    ///
    /// assert_eq!(AskRequest::check_question("  how many?\n").ok(), Some("how many?"));
    /// let empty = AskRequest::check_question(" ").unwrap_err();
    /// assert_eq!(empty.code().as_str(), "invalid_question");
    /// assert_eq!(empty.to_string(), "the question is empty");
    /// assert!(AskRequest::check_question(&"x".repeat(MAX_QUESTION_BYTES + 1)).is_err());
    /// assert!(AskRequest::check_question("how\0many?").is_err());
    /// assert!(AskRequest::check_question("how many\nper\tcity?").is_ok());
    /// ```
    pub fn check_question(question: &str) -> Result<&str, AskError> {
        let question = question.trim();
        if question.is_empty() {
            return Err(AskError::InvalidQuestion("the question is empty".into()));
        }
        if question.len() > MAX_QUESTION_BYTES {
            return Err(AskError::InvalidQuestion(format!(
                "the question is {} bytes long; the limit is {MAX_QUESTION_BYTES}",
                question.len()
            )));
        }
        if question.chars().any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t')) {
            return Err(AskError::InvalidQuestion(
                "the question holds a control character; write it as plain text".into(),
            ));
        }
        Ok(question)
    }

    /// The one rule for SQL a caller writes ([`AskPipeline::run_sql`]):
    /// trimmed, not empty, at most [`MAX_SQL_BYTES`], and no control
    /// characters but line breaks and tabs (a NUL could not even be kept in
    /// a PostgreSQL history). Refused as [`AskError::InvalidQuestion`].
    ///
    /// ```
    /// use custard_core::{AskRequest, MAX_SQL_BYTES};
    ///
    /// assert_eq!(AskRequest::check_sql(" SELECT 1\n").ok(), Some("SELECT 1"));
    /// assert!(AskRequest::check_sql("").is_err());
    /// assert!(AskRequest::check_sql("SELECT 1 -- \0").is_err());
    /// assert!(AskRequest::check_sql(&"x".repeat(MAX_SQL_BYTES + 1)).is_err());
    /// ```
    pub fn check_sql(sql: &str) -> Result<&str, AskError> {
        let sql = sql.trim();
        if sql.is_empty() {
            return Err(AskError::InvalidQuestion("the SQL is empty".into()));
        }
        if sql.len() > MAX_SQL_BYTES {
            return Err(AskError::InvalidQuestion(format!(
                "the SQL is {} bytes long; the limit is {MAX_SQL_BYTES}",
                sql.len()
            )));
        }
        if sql.chars().any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t')) {
            return Err(AskError::InvalidQuestion(
                "the SQL holds a control character other than a line break or a tab".into(),
            ));
        }
        Ok(sql)
    }

    /// Earlier turns of the conversation, oldest first.
    pub fn history(mut self, history: &'a [Turn]) -> Self {
        self.history = history;
        self
    }

    /// Examples for this question, instead of [`AskOptions::examples`]
    /// (see [`crate::select_examples`] to pick similar ones).
    pub fn examples(mut self, examples: &'a [Example]) -> Self {
        self.examples = Some(examples);
        self
    }

    /// Called with each step as it starts.
    pub fn progress(mut self, progress: Progress<'a>) -> Self {
        self.progress = Some(progress);
        self
    }
}

/// The longest question accepted, in bytes; longer input is refused before any work.
pub const MAX_QUESTION_BYTES: usize = 8 * 1024;
/// The most earlier turns of a conversation given to the model.
pub const MAX_HISTORY_TURNS: usize = 10;
/// The longest SQL [`AskPipeline::run_sql`] takes, in bytes.
pub const MAX_SQL_BYTES: usize = 32 * 1024;
/// The most repairs a pipeline makes, whatever its options say.
const MAX_REPAIRS: usize = 5;

codes! {
    /// Why a question got no answer, beyond the model's and the database's own
    /// codes (see [`AskError::code`]).
    pub enum AskErrorCode {
        /// The question is empty or too long.
        InvalidQuestion => "invalid_question",
        /// The question cannot be answered from this database: the model said
        /// so, or the offline engine abstained.
        CannotAnswer => "cannot_answer",
        /// Every attempt failed the guard or the database.
        NoValidQuery => "no_valid_query",
        /// An attempt's reply held no SQL (a code of [`AttemptFailure`], never
        /// of a whole question).
        NoSql => "no_sql",
    }
}

/// Why a question got no answer.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum AskError {
    /// The question is empty or too long.
    #[error("{0}")]
    InvalidQuestion(String),
    /// The model failed or declined (the offline engine abstains this way).
    #[error("{0}")]
    Model(LlmError),
    /// The model said the schema cannot answer the question.
    #[error("the question cannot be answered from this database: {reason}")]
    CannotAnswer {
        /// The model's reason.
        reason: String,
    },
    /// Every attempt failed the guard or the database.
    #[error("no valid query after {} attempts; last error: {}", attempts.len(), last_failure(attempts))]
    NoValidQuery {
        /// Every attempt, in order.
        attempts: Vec<Attempt>,
    },
    /// The database could not run a query for reasons a new query won't fix.
    #[error("{0}")]
    Execution(ExecError),
    /// The guard refused SQL given to [`AskPipeline::run_sql`].
    #[error("{0}")]
    Rejected(crate::Rejection),
}

impl AskError {
    /// The code this failure is reported with everywhere (HTTP, Python): the
    /// model's or the executor's own code, except that a model abstaining is
    /// `cannot_answer`, like a model saying the database cannot answer.
    ///
    /// ```
    /// use custard_core::llm::{LlmError, LlmErrorCode};
    /// use custard_core::AskError;
    ///
    /// let abstained = AskError::Model(LlmError::new(LlmErrorCode::Abstained, "not sure"));
    /// assert_eq!(abstained.code().as_str(), "cannot_answer");
    /// let timeout = AskError::Model(LlmError::new(LlmErrorCode::Timeout, "slow"));
    /// assert_eq!(timeout.code().as_str(), "llm_timeout");
    /// ```
    pub fn code(&self) -> Code {
        match self {
            AskError::InvalidQuestion(_) => AskErrorCode::InvalidQuestion.into(),
            AskError::Model(e) if e.code == LlmErrorCode::Abstained => {
                AskErrorCode::CannotAnswer.into()
            }
            AskError::Model(e) => e.code.into(),
            AskError::CannotAnswer { .. } => AskErrorCode::CannotAnswer.into(),
            AskError::NoValidQuery { .. } => AskErrorCode::NoValidQuery.into(),
            AskError::Execution(e) => e.code.into(),
            AskError::Rejected(r) => r.code.into(),
        }
    }
}

fn last_failure(attempts: &[Attempt]) -> String {
    attempts
        .iter()
        .rev()
        .find_map(|a| a.failure.as_ref().map(|f| f.message.clone()))
        .unwrap_or_else(|| "none".to_owned())
}

/// Answers questions about one database with one model.
///
/// Built once per connection (the schema is indexed at build time) and shared.
pub struct AskPipeline {
    index: SchemaIndex,
    guard: Guard,
    model: Arc<dyn LanguageModel>,
    executor: Arc<dyn Executor>,
    options: AskOptions,
}

impl fmt::Debug for AskPipeline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AskPipeline")
            .field("tables", &self.index.schema().tables.len())
            .field("model", &self.model.name())
            .field("executor", &self.executor)
            .finish_non_exhaustive()
    }
}

impl AskPipeline {
    /// A pipeline over `schema` that writes SQL with `model` and runs it on `executor`.
    pub fn new(
        schema: Schema,
        model: Arc<dyn LanguageModel>,
        executor: Arc<dyn Executor>,
        options: AskOptions,
    ) -> Result<Self, GuardConfigError> {
        let guard = Guard::builder(schema.dialect)
            .max_rows(options.max_rows)
            .schema(schema.clone())
            .build()?;
        Ok(AskPipeline { index: SchemaIndex::new(schema), guard, model, executor, options })
    }

    /// The schema questions are answered from.
    pub fn schema(&self) -> &Schema {
        self.index.schema()
    }

    /// The indexed schema, for retrieval outside a question (a tool listing
    /// the tables relevant to a search).
    pub fn index(&self) -> &SchemaIndex {
        &self.index
    }

    /// The name of the engine that writes SQL.
    pub fn engine(&self) -> String {
        self.model.name()
    }

    /// Answers `question`; `history` holds earlier turns of the conversation.
    pub async fn ask(&self, question: &str, history: &[Turn]) -> Result<Answer, AskError> {
        self.ask_with(&AskRequest::new(question).history(history)).await
    }

    /// Runs SQL written by the caller, not the model, on the path a
    /// question's SQL takes: the same guard (with the schema's identifiers
    /// and the row cap), the same executor and limits, and the same
    /// rule-built answer text and chart. SQL that breaks
    /// [`AskRequest::check_sql`] is [`AskError::InvalidQuestion`], a
    /// refusal [`AskError::Rejected`]; nothing is repaired.
    ///
    /// The answer's `engine` is `"sql"` and its one attempt holds the SQL.
    pub async fn run_sql(&self, sql: &str) -> Result<Answer, AskError> {
        let started = Instant::now();
        let sql = AskRequest::check_sql(sql)?;
        let mut timings = Timings::default();
        let t = Instant::now();
        let checked = self.guard.check(sql);
        timings.guard = t.elapsed();
        let checked = checked.map_err(AskError::Rejected)?;
        let t = Instant::now();
        let result = self.executor.query(&checked, &self.options.limits).await;
        timings.execute = t.elapsed();
        let result = result.map_err(AskError::Execution)?;
        let t = Instant::now();
        let text = answer_text::describe(&result.columns, &result.rows, result.summary.truncated);
        let chart = chart::suggest(&result.columns, result.rows.len());
        timings.answer = t.elapsed();
        timings.total = started.elapsed();
        Ok(Answer {
            text,
            sql: checked.query().to_owned(),
            columns: result.columns,
            rows: result.rows,
            truncated: result.summary.truncated,
            chart,
            engine: "sql".to_owned(),
            attempts: vec![Attempt {
                reply: String::new(),
                sql: Some(sql.to_owned()),
                failure: None,
            }],
            timings,
        })
    }

    /// Answers a question with per-question context: examples chosen for it and
    /// a progress callback (see [`AskRequest`]).
    pub async fn ask_with(&self, request: &AskRequest<'_>) -> Result<Answer, AskError> {
        let AskRequest { question, history, .. } = *request;
        let examples = request.examples.unwrap_or(&self.options.examples);
        let step = |s: AskStep| {
            if let Some(progress) = request.progress {
                progress(s);
            }
        };
        let started = Instant::now();
        let question = AskRequest::check_question(question)?;
        let history = &history[history.len().saturating_sub(MAX_HISTORY_TURNS)..];
        let history: Vec<Turn> =
            history.iter().filter(|t| t.question.len() <= MAX_QUESTION_BYTES).cloned().collect();
        let history = history.as_slice();
        let mut timings = Timings::default();
        let dialect = self.index.schema().dialect;

        step(AskStep::Retrieving);
        let t = Instant::now();
        let mut retrieve = self.options.retrieve.clone();
        retrieve.context.extend(history.iter().map(|turn| turn.question.clone()));
        let retrieved = self.index.retrieve(question, &retrieve);
        timings.retrieve = t.elapsed();

        let mut attempts: Vec<Attempt> = Vec::new();
        let mut feedback: Vec<Feedback> = Vec::new();
        let tries =
            if self.model.can_repair() { self.options.max_repairs.min(MAX_REPAIRS) + 1 } else { 1 };
        for _ in 0..tries {
            step(AskStep::Generating);
            let t = Instant::now();
            let mut builder = PromptBuilder::new(dialect, question)
                .schema_ddl(&retrieved.ddl)
                .examples(examples)
                .history(history)
                .feedback(&feedback);
            if let Some(instructions) = &self.options.instructions {
                builder = builder.instructions(instructions);
            }
            let messages = builder.build();
            timings.prompt += t.elapsed();

            let t = Instant::now();
            let request = GenerationRequest {
                messages: &messages,
                question,
                schema: &retrieved.schema,
                history,
                dialect,
            };
            let generation = self.model.generate(&request).await;
            timings.generate += t.elapsed();
            let generation = generation.map_err(AskError::Model)?;

            let Some(sql) = generation.sql.clone() else {
                if let Some(reason) = cannot_answer_reason(&generation.text) {
                    return Err(AskError::CannotAnswer { reason });
                }
                let failure = AttemptFailure {
                    stage: AttemptStage::NoSql,
                    code: AskErrorCode::NoSql.into(),
                    message: "the reply held no SQL query; reply with one query in a ```sql block"
                        .to_owned(),
                };
                record(&mut attempts, &mut feedback, generation.text, None, failure);
                continue;
            };

            step(AskStep::Checking);
            let t = Instant::now();
            let checked = self.guard.check(&sql);
            timings.guard += t.elapsed();
            let checked = match checked {
                Ok(c) => c,
                Err(rejection) => {
                    let failure = AttemptFailure {
                        stage: AttemptStage::Guard,
                        code: rejection.code.into(),
                        message: guard_feedback(rejection.code, &rejection.message),
                    };
                    record(&mut attempts, &mut feedback, generation.text, Some(sql), failure);
                    continue;
                }
            };

            step(AskStep::Running);
            let t = Instant::now();
            let result = self.executor.query(&checked, &self.options.limits).await;
            timings.execute += t.elapsed();
            let result = match result {
                Ok(r) => r,
                Err(e) if repairable(&e) => {
                    let failure = AttemptFailure {
                        stage: AttemptStage::Database,
                        code: e.code.into(),
                        message: format!("the database said: {}", e.message),
                    };
                    record(&mut attempts, &mut feedback, generation.text, Some(sql), failure);
                    continue;
                }
                Err(e) => return Err(AskError::Execution(e)),
            };

            attempts.push(Attempt { reply: generation.text, sql: Some(sql), failure: None });
            step(AskStep::Summarising);
            let t = Instant::now();
            // A rule-based engine writes SQL, not prose: it cannot summarise.
            let text = match self.options.model_summary && self.model.can_repair() {
                true => self.summarize(question, &checked, &result.columns, &result.rows).await,
                false => None,
            }
            .unwrap_or_else(|| {
                answer_text::describe(&result.columns, &result.rows, result.summary.truncated)
            });
            let chart = chart::suggest(&result.columns, result.rows.len());
            timings.answer = t.elapsed();
            timings.total = started.elapsed();
            return Ok(Answer {
                text,
                sql: checked.query().to_owned(),
                columns: result.columns,
                rows: result.rows,
                truncated: result.summary.truncated,
                chart,
                engine: self.model.name(),
                attempts,
                timings,
            });
        }
        Err(AskError::NoValidQuery { attempts })
    }

    /// A model-written summary of the result, or `None` to fall back to the rule-built text.
    async fn summarize(
        &self,
        question: &str,
        checked: &crate::CheckedSql,
        columns: &[ColumnMeta],
        rows: &[Vec<Value>],
    ) -> Option<String> {
        let header: Vec<&str> = columns.iter().map(|c| c.name.as_str()).collect();
        let mut table = header.join(" | ");
        for row in rows.iter().take(20) {
            let cells: Vec<String> = row.iter().map(|v| v.to_string()).collect();
            table.push('\n');
            table.push_str(&cells.join(" | "));
        }
        let messages = [
            ChatMessage::new(
                Role::System,
                "Answer the question in one or two plain sentences using only the numbers in the result. \
                 Do not write SQL.",
            ),
            ChatMessage::new(
                Role::User,
                format!(
                    "Question: {question}\nSQL: {checked}\nResult ({} rows):\n{table}",
                    rows.len()
                ),
            ),
        ];
        let request = GenerationRequest {
            messages: &messages,
            question,
            schema: self.index.schema(),
            history: &[],
            dialect: self.index.schema().dialect,
        };
        let reply = self.model.generate(&request).await.ok()?;
        let text = reply.text.trim();
        (!text.is_empty()).then(|| text.to_owned())
    }
}

/// The most characters of a failed attempt's SQL fed back to the model.
const FEEDBACK_SQL_CHARS: usize = 8_000;
/// The most characters of a failed reply without SQL, or of an error, fed back.
const FEEDBACK_REPLY_CHARS: usize = 2_000;

fn record(
    attempts: &mut Vec<Attempt>,
    feedback: &mut Vec<Feedback>,
    reply: String,
    sql: Option<String>,
    failure: AttemptFailure,
) {
    // Feed back the SQL, not the whole reply: reasoning and prose only grow the
    // prompt. Both are cut, so a runaway reply cannot be sent back to the
    // model whole on every repair.
    let shown = match &sql {
        Some(sql) => format!("```sql\n{}\n```", truncate(sql, FEEDBACK_SQL_CHARS)),
        None => truncate(&reply, FEEDBACK_REPLY_CHARS),
    };
    let error = truncate(&failure.message, FEEDBACK_REPLY_CHARS);
    feedback.push(Feedback { reply: shown, error });
    attempts.push(Attempt { reply, sql, failure: Some(failure) });
}

/// The guard's message, with a nudge for the rejections a model can fix.
fn guard_feedback(code: RejectionCode, message: &str) -> String {
    match code {
        RejectionCode::UnknownTable | RejectionCode::UnknownColumn => {
            format!("{message}. Use only tables and columns from the schema.")
        }
        RejectionCode::FunctionNotAllowed => format!("{message}. Use standard SQL functions only."),
        _ => format!("{message}."),
    }
}

/// Database errors that a different query may avoid.
fn repairable(e: &ExecError) -> bool {
    matches!(
        e.code,
        ExecErrorCode::QueryFailed | ExecErrorCode::PermissionDenied | ExecErrorCode::Rejected
    )
}

/// The reason of a reply like `-- cannot answer: there is no price column`,
/// on any line after the model's reasoning (`<think>...</think>`).
fn cannot_answer_reason(text: &str) -> Option<String> {
    let visible = text.rsplit_once("</think>").map_or(text, |(_, after)| after);
    visible.lines().map(str::trim).find_map(|line| {
        let rest = line.strip_prefix("--")?.trim();
        let marker = "cannot answer";
        if !rest.get(..marker.len())?.eq_ignore_ascii_case(marker) {
            return None;
        }
        let reason = rest[marker.len()..].trim_start_matches([':', ' ']).trim();
        Some(if reason.is_empty() { "no reason given".to_owned() } else { reason.to_owned() })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cannot_answer_replies() {
        let cases = [
            ("-- cannot answer: there is no price column", Some("there is no price column")),
            ("```sql\n-- Cannot answer: no data\n```", Some("no data")),
            ("-- cannot answer", Some("no reason given")),
            ("SELECT 1", None),
            ("-- top customers\nSELECT 1", None),
            (
                "<think>no table for that</think>\n-- cannot answer: no product table",
                Some("no product table"),
            ),
            ("I checked the schema.\n-- cannot answer: no product table", Some("no product table")),
            ("-- Cannot Answer: é", Some("é")),
            ("-- é", None),
        ];
        for (text, want) in cases {
            assert_eq!(cannot_answer_reason(text).as_deref(), want, "{text}");
        }
    }

    #[test]
    fn runaway_replies_are_cut_before_they_are_fed_back() {
        let (mut attempts, mut feedback) = (Vec::new(), Vec::new());
        let sql = format!("SELECT 1 WHERE 'a' IN ({})", vec!["'x'"; 100_000].join(", "));
        let failure = |message: String| AttemptFailure {
            stage: AttemptStage::Guard,
            code: RejectionCode::TooLong.into(),
            message,
        };
        record(
            &mut attempts,
            &mut feedback,
            sql.clone(),
            Some(sql.clone()),
            failure("x".repeat(50_000)),
        );
        record(
            &mut attempts,
            &mut feedback,
            "é".repeat(50_000),
            None,
            failure("no SQL".to_owned()),
        );
        let sizes: Vec<_> =
            feedback.iter().map(|f| (f.reply.chars().count(), f.error.chars().count())).collect();
        assert_eq!(
            sizes,
            [(FEEDBACK_SQL_CHARS + 14, FEEDBACK_REPLY_CHARS + 3), (FEEDBACK_REPLY_CHARS + 3, 6)]
        );
        assert!(
            feedback[0].reply.starts_with("```sql\nSELECT 1 WHERE"),
            "{}",
            &feedback[0].reply[..40]
        );
        assert_eq!(
            attempts[0].sql.as_deref(),
            Some(sql.as_str()),
            "the attempt keeps what was written"
        );
    }
}

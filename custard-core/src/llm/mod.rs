//! Language models that turn a question (and a prompt) into SQL.
//!
//! [`LanguageModel`] is the seam: the `openai` feature adds an
//! OpenAI-compatible client, and [`OfflineEngine`] answers common question
//! shapes from the schema alone, with no network and no key.

mod extract;
mod offline;
#[cfg(feature = "openai")]
mod openai;

use std::fmt;

use crate::{BoxFuture, ChatMessage, Dialect, Schema, Turn};

pub use extract::extract_sql;
pub use offline::OfflineEngine;
#[cfg(feature = "openai")]
pub use openai::{OpenAiConfig, OpenAiModel};

/// Everything a model may use to write SQL for one question.
#[derive(Clone, Copy, Debug)]
pub struct GenerationRequest<'a> {
    /// The chat messages built by the [`PromptBuilder`](crate::PromptBuilder)
    /// (including any repair feedback); what a chat model reads.
    pub messages: &'a [ChatMessage],
    /// The user's question, as asked.
    pub question: &'a str,
    /// The retrieved part of the schema the prompt describes.
    pub schema: &'a Schema,
    /// Earlier turns of the conversation, oldest first.
    pub history: &'a [Turn],
    /// The SQL dialect to write.
    pub dialect: Dialect,
}

/// A model's reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Generation {
    /// The whole reply text.
    pub text: String,
    /// The SQL found in the reply, if any.
    pub sql: Option<String>,
}

/// The closed set of reasons a model gives no SQL.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum LlmErrorCode {
    /// The model chose not to answer (the offline engine is not confident).
    Abstained,
    /// The configuration is incomplete or wrong (no model name, bad URL, ...).
    Misconfigured,
    /// The API key is missing, wrong or lacks access.
    Unauthorized,
    /// The service kept answering 429 after the bounded retries.
    RateLimited,
    /// The service did not answer in time, after the bounded retries.
    Timeout,
    /// The service failed (5xx, connection refused) after the bounded retries.
    Unavailable,
    /// The service answered something that is not a usable reply.
    BadResponse,
}

impl LlmErrorCode {
    /// The stable snake_case code shared with the API.
    pub fn as_str(self) -> &'static str {
        match self {
            LlmErrorCode::Abstained => "llm_abstained",
            LlmErrorCode::Misconfigured => "llm_misconfigured",
            LlmErrorCode::Unauthorized => "llm_unauthorized",
            LlmErrorCode::RateLimited => "llm_rate_limited",
            LlmErrorCode::Timeout => "llm_timeout",
            LlmErrorCode::Unavailable => "llm_unavailable",
            LlmErrorCode::BadResponse => "llm_bad_response",
        }
    }
}

impl fmt::Display for LlmErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a model gave no SQL: a code for programs, a message for people.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct LlmError {
    /// What went wrong, from a closed set.
    pub code: LlmErrorCode,
    /// A human-readable explanation; never contains the API key.
    pub message: String,
}

impl LlmError {
    /// An error with a code and a message.
    pub fn new(code: LlmErrorCode, message: impl Into<String>) -> Self {
        LlmError { code, message: message.into() }
    }
}

/// Something that writes SQL for a question.
pub trait LanguageModel: Send + Sync + fmt::Debug {
    /// Who answers, as shown to users: `"offline"` or `"gpt-4o-mini"`.
    fn name(&self) -> String;

    /// Whether feeding back an error and asking again can help. A rule-based
    /// engine gives the same answer twice, so the pipeline does not retry it.
    fn can_repair(&self) -> bool {
        true
    }

    /// Writes SQL for the request.
    fn generate<'a>(
        &'a self,
        request: &'a GenerationRequest<'a>,
    ) -> BoxFuture<'a, Result<Generation, LlmError>>;
}

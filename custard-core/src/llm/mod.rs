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

use crate::codes::codes;
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

codes! {
    /// The closed set of reasons a model gives no SQL.
    pub enum LlmErrorCode {
        /// The model chose not to answer (the offline engine is not confident).
        /// Reported as `cannot_answer` once it ends a question (see [`crate::AskError::code`]).
        Abstained => "llm_abstained",
        /// The configuration is incomplete or wrong (no model name, bad URL, ...).
        Misconfigured => "llm_misconfigured",
        /// The API key is missing, wrong or lacks access.
        Unauthorized => "llm_unauthorized",
        /// The service kept answering 429 after the bounded retries.
        RateLimited => "llm_rate_limited",
        /// The service did not answer in time, after the bounded retries.
        Timeout => "llm_timeout",
        /// The service failed (5xx, connection refused) after the bounded retries.
        Unavailable => "llm_unavailable",
        /// The service answered something that is not a usable reply.
        BadResponse => "llm_bad_response",
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

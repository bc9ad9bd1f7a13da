//! The rule-based offline engine (stub, being written).

use super::{Generation, GenerationRequest, LanguageModel, LlmError, LlmErrorCode};
use crate::BoxFuture;

/// Answers common question shapes from the schema alone; abstains otherwise.
#[derive(Clone, Debug, Default)]
pub struct OfflineEngine {}

impl OfflineEngine {
    /// A new engine.
    pub fn new() -> Self {
        OfflineEngine {}
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
        _request: &'a GenerationRequest<'a>,
    ) -> BoxFuture<'a, Result<Generation, LlmError>> {
        Box::pin(async { Err(LlmError::new(LlmErrorCode::Abstained, "not written yet")) })
    }
}

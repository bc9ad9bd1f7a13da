//! OpenAI-compatible chat models (stub, being written).

/// Settings of an OpenAI-compatible endpoint.
#[derive(Clone, Debug, Default)]
pub struct OpenAiConfig {}

/// A chat model behind an OpenAI-compatible API.
#[derive(Clone, Debug)]
pub struct OpenAiModel {}

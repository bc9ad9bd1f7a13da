//! OpenAI-compatible chat models: OpenAI, Azure OpenAI and local servers
//! (Ollama, vLLM, llama.cpp) that speak `POST {base}/chat/completions`.
//!
//! async-openai builds the requests and parses the replies; this module owns
//! the transport policy: one timeout per HTTP attempt, bounded retries with
//! backoff for 429, 5xx, timeouts and broken connections, and errors that say
//! what to fix without ever echoing the API key.

use std::fmt;
use std::future::Future;
use std::hash::BuildHasher;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use async_openai::Client;
use async_openai::config::Config;
use async_openai::error::{OpenAIError, StreamError};
use async_openai::middleware::HttpRequestFactory;
use async_openai::types::chat::{
    ChatCompletionRequestAssistantMessage, ChatCompletionRequestMessage,
    ChatCompletionRequestSystemMessage, ChatCompletionRequestUserMessage,
    CreateChatCompletionRequest,
};
use futures_util::StreamExt;
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};
use secrecy::SecretString;

use super::{Generation, GenerationRequest, LanguageModel, LlmError, LlmErrorCode, extract_sql};
use crate::text::truncate;
use crate::{BoxFuture, ChatMessage, Role};

/// The longest streamed reply read; a query never needs more.
const MAX_REPLY_BYTES: usize = 1024 * 1024;

/// Settings of an OpenAI-compatible endpoint; check them with [`OpenAiModel::new`].
///
/// - **OpenAI**: the defaults plus `model` and `api_key`.
/// - **Ollama, vLLM, llama.cpp, LM Studio**: `base_url` such as
///   `http://localhost:11434/v1` (the part before `/chat/completions`) and the
///   served model name; `api_key` may stay `None`, and then no
///   `Authorization` header is sent.
/// - **Azure OpenAI**: `base_url` is the resource
///   (`https://my-resource.openai.azure.com`), `model` is the *deployment*
///   name, `azure_api_version` is set (`2024-10-21`) and `api_key` holds the
///   resource key. Requests then go to
///   `{base_url}/openai/deployments/{model}/chat/completions?api-version=...`
///   with an `api-key` header ([`OpenAiConfig::azure`] fills these in). Azure's
///   newer `/openai/v1` endpoint is OpenAI-shaped: use it as a plain `base_url`.
///
/// ```
/// use std::time::Duration;
/// use custard_core::llm::{OpenAiConfig, OpenAiModel};
///
/// let config = OpenAiConfig {
///     timeout: Duration::from_secs(30),
///     ..OpenAiConfig::new("http://localhost:11434/v1", "qwen2.5-coder:7b")
/// };
/// let model = OpenAiModel::new(config)?;
/// # Ok::<(), custard_core::llm::LlmError>(())
/// ```
#[derive(Clone, PartialEq)]
pub struct OpenAiConfig {
    /// Where the API lives, up to and without `/chat/completions`.
    pub base_url: String,
    /// The key, sent as `Authorization: Bearer` (or `api-key` on Azure); local
    /// servers usually need none.
    pub api_key: Option<String>,
    /// The model name (the deployment name on Azure).
    pub model: String,
    /// The bound on one HTTP attempt, including reading a streamed reply.
    pub timeout: Duration,
    /// How many times a failed attempt (429, 5xx, timeout, connection error)
    /// is tried again; the total is `max_retries + 1` attempts.
    pub max_retries: u32,
    /// The wait before the first retry; it doubles for each next one.
    pub initial_backoff: Duration,
    /// The longest wait between attempts. A `Retry-After` longer than this
    /// ends the retries at once.
    pub max_backoff: Duration,
    /// Asks for a streamed reply (server-sent events) and collects the deltas.
    pub stream: bool,
    /// Sampling temperature; `None` leaves the server's default (some
    /// reasoning models accept no other value). `Some(0.0)` makes SQL repeatable.
    pub temperature: Option<f32>,
    /// Switches to the classic Azure OpenAI URL layout with this `api-version`.
    pub azure_api_version: Option<String>,
}

impl OpenAiConfig {
    /// OpenAI's own API.
    pub const OPENAI_BASE_URL: &'static str = "https://api.openai.com/v1";

    /// A configuration for `model` at `base_url`, with the default limits.
    pub fn new(base_url: impl Into<String>, model: impl Into<String>) -> Self {
        OpenAiConfig { base_url: base_url.into(), model: model.into(), ..OpenAiConfig::default() }
    }

    /// A configuration for a classic Azure OpenAI deployment.
    pub fn azure(
        resource_url: impl Into<String>,
        deployment: impl Into<String>,
        api_version: impl Into<String>,
        api_key: impl Into<String>,
    ) -> Self {
        OpenAiConfig {
            azure_api_version: Some(api_version.into()),
            api_key: Some(api_key.into()),
            ..OpenAiConfig::new(resource_url, deployment)
        }
    }

    /// The same configuration with `api_key` set.
    pub fn with_api_key(mut self, api_key: impl Into<String>) -> Self {
        self.api_key = Some(api_key.into());
        self
    }

    /// The key if one is set and not blank.
    fn key(&self) -> Option<&str> {
        self.api_key.as_deref().map(str::trim).filter(|k| !k.is_empty())
    }
}

impl Default for OpenAiConfig {
    /// OpenAI's URL, no key, no model (set one), 60 s per attempt, 2 retries
    /// backing off from 0.5 s to at most 8 s, no streaming.
    fn default() -> Self {
        OpenAiConfig {
            base_url: OpenAiConfig::OPENAI_BASE_URL.to_owned(),
            api_key: None,
            model: String::new(),
            timeout: Duration::from_secs(60),
            max_retries: 2,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(8),
            stream: false,
            temperature: None,
            azure_api_version: None,
        }
    }
}

impl fmt::Debug for OpenAiConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenAiConfig")
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("model", &self.model)
            .field("timeout", &self.timeout)
            .field("max_retries", &self.max_retries)
            .field("initial_backoff", &self.initial_backoff)
            .field("max_backoff", &self.max_backoff)
            .field("stream", &self.stream)
            .field("temperature", &self.temperature)
            .field("azure_api_version", &self.azure_api_version)
            .finish()
    }
}

/// The most retries a configuration may ask for, so a request stays bounded.
const MAX_RETRIES_LIMIT: u32 = 10;

/// A chat model behind an OpenAI-compatible API.
///
/// Each attempt is bounded by [`OpenAiConfig::timeout`]; failures that may
/// pass (429, 5xx, timeouts, connection errors) are retried up to
/// [`OpenAiConfig::max_retries`] times with exponential backoff and jitter,
/// honouring `Retry-After` / `retry-after-ms`. So one `generate` call takes at
/// most about `(max_retries + 1) * timeout + max_retries * max_backoff`.
#[derive(Clone)]
pub struct OpenAiModel {
    config: OpenAiConfig,
    client: Client<Endpoint>,
}

impl fmt::Debug for OpenAiModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenAiModel").field("config", &self.config).finish_non_exhaustive()
    }
}

fn misconfigured(message: impl Into<String>) -> LlmError {
    LlmError::new(LlmErrorCode::Misconfigured, message)
}

impl OpenAiModel {
    /// Checks `config` and prepares the HTTP client; no request is sent yet.
    ///
    /// Fails with [`LlmErrorCode::Misconfigured`] when the model name is
    /// missing, the base URL is not `http(s)://host...`, the key cannot be sent
    /// in a header, or a limit is out of range.
    pub fn new(mut config: OpenAiConfig) -> Result<OpenAiModel, LlmError> {
        config.model = config.model.trim().to_owned();
        if config.model.is_empty() {
            return Err(misconfigured(
                "no LLM model name is configured (for example gpt-4o-mini, or the model a local server serves)",
            ));
        }
        config.base_url = config.base_url.trim().trim_end_matches('/').to_owned();
        let url = reqwest::Url::parse(&config.base_url).map_err(|e| {
            misconfigured(format!("the LLM base URL {:?} is not a URL: {e}", config.base_url))
        })?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(misconfigured(format!(
                "the LLM base URL must start with http:// or https:// and name a host, got {:?}",
                config.base_url
            )));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(misconfigured(
                "the LLM base URL must not contain credentials; set the API key instead",
            ));
        }
        if config.timeout.is_zero() {
            return Err(misconfigured("the LLM timeout must be longer than zero"));
        }
        if config.max_retries > MAX_RETRIES_LIMIT {
            return Err(misconfigured(format!(
                "at most {MAX_RETRIES_LIMIT} LLM retries are allowed, got {}",
                config.max_retries
            )));
        }
        if config.max_backoff < config.initial_backoff {
            return Err(misconfigured(
                "the LLM max_backoff must not be shorter than initial_backoff",
            ));
        }
        if let Some(t) = config.temperature
            && !(0.0..=2.0).contains(&t)
        {
            return Err(misconfigured(format!(
                "the LLM temperature must be within 0 and 2, got {t}"
            )));
        }
        if let Some(version) = &config.azure_api_version
            && (version.trim().is_empty() || config.key().is_none())
        {
            return Err(misconfigured("Azure OpenAI needs both an api-version and an API key"));
        }
        let endpoint = Endpoint::new(&config)?;
        let http = reqwest::Client::builder()
            .connect_timeout(config.timeout.min(Duration::from_secs(10)))
            .timeout(config.timeout)
            .user_agent(concat!("custard/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| misconfigured(format!("could not set up the HTTP client: {e}")))?;
        let client = Client::build(http.clone(), endpoint).with_http_service(Transport { http });
        Ok(OpenAiModel { config, client })
    }

    /// The checked configuration.
    pub fn config(&self) -> &OpenAiConfig {
        &self.config
    }

    fn chat_request(
        &self,
        messages: &[ChatMessage],
    ) -> Result<CreateChatCompletionRequest, LlmError> {
        if messages.is_empty() {
            return Err(misconfigured("there are no chat messages to send to the LLM"));
        }
        let messages = messages
            .iter()
            .map(|m| match m.role {
                Role::System => ChatCompletionRequestSystemMessage::from(m.content.as_str()).into(),
                Role::User => ChatCompletionRequestUserMessage::from(m.content.as_str()).into(),
                Role::Assistant => {
                    ChatCompletionRequestAssistantMessage::from(m.content.as_str()).into()
                }
            })
            .collect::<Vec<ChatCompletionRequestMessage>>();
        Ok(CreateChatCompletionRequest {
            messages,
            model: self.config.model.clone(),
            temperature: self.config.temperature,
            stream: self.config.stream.then_some(true),
            ..CreateChatCompletionRequest::default()
        })
    }

    /// Sends the request, retrying what may pass, and returns the reply text.
    async fn complete(&self, body: CreateChatCompletionRequest) -> Result<String, LlmError> {
        let attempts = self.config.max_retries + 1;
        let mut attempt = 0;
        loop {
            attempt += 1;
            tracing::debug!(model = %self.config.model, attempt, "llm request");
            let outcome = tokio::time::timeout(self.config.timeout, self.attempt(body.clone()))
                .await
                .unwrap_or_else(|_| {
                    Err(Failure::retry(
                        LlmErrorCode::Timeout,
                        format!("the LLM service did not answer within {:?}", self.config.timeout),
                        None,
                    ))
                });
            let failure = match outcome {
                Ok(text) => return Ok(text),
                Err(failure) => failure,
            };
            let delay = match failure.retry {
                Some(retry_after) if attempt < attempts => self.backoff(attempt, retry_after),
                _ => None,
            };
            let Some(delay) = delay else {
                return Err(self.final_error(failure, attempt));
            };
            tracing::warn!(
                model = %self.config.model,
                attempt,
                code = %failure.error.code,
                delay_ms = delay.as_millis() as u64,
                error = %self.redact(&failure.error.message),
                "llm request failed, retrying"
            );
            tokio::time::sleep(delay).await;
        }
    }

    /// One HTTP request and its reply.
    async fn attempt(&self, body: CreateChatCompletionRequest) -> Result<String, Failure> {
        let chat = self.client.chat();
        if self.config.stream {
            let mut stream = chat.create_stream(body).await.map_err(|e| self.classify(e))?;
            let mut text = String::new();
            let mut refusal = String::new();
            let mut saw_choice = false;
            let mut finish = None;
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|e| self.classify(e))?;
                for choice in chunk.choices.into_iter().filter(|c| c.index == 0) {
                    saw_choice = true;
                    text.push_str(choice.delta.content.as_deref().unwrap_or_default());
                    refusal.push_str(choice.delta.refusal.as_deref().unwrap_or_default());
                    finish = choice.finish_reason.or(finish);
                }
                // A reply no SQL needs; stop before it grows without bound.
                if text.len() + refusal.len() > MAX_REPLY_BYTES {
                    return Err(Failure::fatal(
                        LlmErrorCode::BadResponse,
                        format!("the LLM reply grew past {MAX_REPLY_BYTES} bytes"),
                    ));
                }
            }
            if !saw_choice {
                return Err(Failure::fatal(
                    LlmErrorCode::BadResponse,
                    "the LLM service streamed a reply without any choice",
                ));
            }
            reply_text(text, (!refusal.is_empty()).then_some(refusal), finish)
        } else {
            let response = chat.create(body).await.map_err(|e| self.classify(e))?;
            let Some(choice) = response.choices.into_iter().next() else {
                return Err(Failure::fatal(
                    LlmErrorCode::BadResponse,
                    "the LLM service answered without any choice",
                ));
            };
            let message = choice.message;
            reply_text(message.content.unwrap_or_default(), message.refusal, choice.finish_reason)
        }
    }

    /// The wait before attempt `attempt + 1`, or `None` when the server asks
    /// for a longer pause than the configuration allows.
    fn backoff(&self, attempt: u32, retry_after: Option<Duration>) -> Option<Duration> {
        let exponential = self
            .config
            .initial_backoff
            .saturating_mul(1 << (attempt - 1).min(16))
            .min(self.config.max_backoff);
        // Equal jitter: half fixed, half random, so clients that failed together spread out.
        let jittered = exponential / 2 + exponential.mul_f64(jitter() / 2.0);
        match retry_after {
            Some(wait) if wait > self.config.max_backoff => None,
            Some(wait) => Some(wait.max(jittered)),
            None => Some(jittered),
        }
    }

    /// The error reported after the last attempt.
    fn final_error(&self, failure: Failure, attempts: u32) -> LlmError {
        let mut message = failure.error.message;
        if attempts > 1 {
            message.push_str(&format!(" ({attempts} attempts)"));
        } else if failure.retry.is_some_and(|wait| wait.is_some()) && self.config.max_retries > 0 {
            message.push_str(" (the requested Retry-After exceeds max_backoff)");
        }
        LlmError::new(failure.error.code, self.redact(&message))
    }

    /// `text` with the API key blanked out, should a server echo it.
    fn redact(&self, text: &str) -> String {
        match self.config.key() {
            Some(key) if key.len() >= 4 => text.replace(key, "<redacted>"),
            _ => text.to_owned(),
        }
    }

    fn classify(&self, error: OpenAIError) -> Failure {
        use LlmErrorCode::{BadResponse, Misconfigured, Timeout, Unavailable};
        match error {
            OpenAIError::Boxed(boxed) => match boxed.downcast::<HttpFailure>() {
                Ok(http) => self.classify_status(http.status, &http.body, http.retry_after),
                Err(other) => {
                    Failure::retry(Unavailable, format!("the LLM request failed: {other}"), None)
                }
            },
            OpenAIError::ApiError(api) => {
                let body = serde_json::json!({ "error": { "message": api.api_error.message } });
                self.classify_status(api.status_code.as_u16(), &body.to_string(), None)
            }
            OpenAIError::Reqwest(e) if e.is_timeout() => Failure::retry(
                Timeout,
                format!("the LLM service did not answer within {:?}", self.config.timeout),
                None,
            ),
            OpenAIError::Reqwest(e) if e.is_builder() => Failure::fatal(
                Misconfigured,
                format!("the LLM request could not be built: {}", chain(&e)),
            ),
            OpenAIError::Reqwest(e) if e.is_connect() => Failure::retry(
                Unavailable,
                format!(
                    "could not connect to the LLM service at {}: {}",
                    self.config.base_url,
                    chain(&e)
                ),
                None,
            ),
            OpenAIError::Reqwest(e) => Failure::retry(
                Unavailable,
                format!("the connection to the LLM service failed: {}", chain(&e)),
                None,
            ),
            OpenAIError::StreamError(e) => match *e {
                StreamError::EventStream(message) => Failure::retry(
                    Unavailable,
                    format!("the LLM reply stream broke off: {message}"),
                    None,
                ),
                StreamError::UnknownEvent(event) => Failure::fatal(
                    BadResponse,
                    format!(
                        "the LLM service streamed an unexpected event {:?}",
                        truncate(&event.event, 80)
                    ),
                ),
            },
            OpenAIError::JSONDeserialize(e, content) => Failure::fatal(
                BadResponse,
                format!(
                    "the LLM service answered something that is not a chat completion ({e}): {}",
                    truncate(&content, 300)
                ),
            ),
            OpenAIError::InvalidArgument(message) => {
                Failure::fatal(Misconfigured, format!("the LLM request is invalid: {message}"))
            }
            e @ (OpenAIError::FileSaveError(_) | OpenAIError::FileReadError(_)) => {
                Failure::fatal(BadResponse, e.to_string())
            }
        }
    }

    fn classify_status(&self, status: u16, body: &str, retry_after: Option<Duration>) -> Failure {
        use LlmErrorCode::{
            BadResponse, Misconfigured, RateLimited, Timeout, Unauthorized, Unavailable,
        };
        let detail = server_message(body);
        let with_detail = |text: String| match &detail {
            Some(d) => format!("{text}: {d}"),
            None => text,
        };
        match status {
            // The server's words are left out: OpenAI quotes part of a wrong key.
            401 | 403 if self.config.key().is_none() => Failure::fatal(
                Unauthorized,
                format!(
                    "the LLM service requires an API key and none is configured (HTTP {status})"
                ),
            ),
            401 => Failure::fatal(Unauthorized, "the LLM API key was rejected (HTTP 401)"),
            403 => Failure::fatal(
                Unauthorized,
                format!(
                    "the LLM API key was rejected or may not use model {:?} (HTTP 403)",
                    self.config.model
                ),
            ),
            404 => Failure::fatal(
                Misconfigured,
                with_detail(format!(
                    "model {:?} or its endpoint was not found at {} (HTTP 404); check the model \
                     name and whether the base URL needs /v1",
                    self.config.model, self.config.base_url
                )),
            ),
            408 => Failure::retry(
                Timeout,
                with_detail("the LLM service timed out (HTTP 408)".into()),
                retry_after,
            ),
            429 if is_quota_exhausted(body) => Failure::fatal(
                RateLimited,
                with_detail("the LLM account has no quota left (HTTP 429)".into()),
            ),
            429 => Failure::retry(
                RateLimited,
                with_detail("the LLM service is rate limiting requests (HTTP 429)".into()),
                retry_after,
            ),
            500..=599 => Failure::retry(
                Unavailable,
                with_detail(format!("the LLM service failed (HTTP {status})")),
                retry_after,
            ),
            400..=499 => Failure::fatal(
                BadResponse,
                with_detail(format!("the LLM service refused the request (HTTP {status})")),
            ),
            _ => Failure::fatal(
                BadResponse,
                with_detail(format!("the LLM service answered with unexpected HTTP {status}")),
            ),
        }
    }
}

impl LanguageModel for OpenAiModel {
    fn name(&self) -> String {
        self.config.model.clone()
    }

    fn generate<'a>(
        &'a self,
        request: &'a GenerationRequest<'a>,
    ) -> BoxFuture<'a, Result<Generation, LlmError>> {
        Box::pin(async move {
            let body = self.chat_request(request.messages)?;
            let text = self.complete(body).await?;
            Ok(Generation { sql: extract_sql(&text), text })
        })
    }
}

/// The reply text, or why there is none.
fn reply_text(
    text: String,
    refusal: Option<String>,
    finish: Option<async_openai::types::chat::FinishReason>,
) -> Result<String, Failure> {
    if !text.trim().is_empty() {
        return Ok(text);
    }
    if let Some(refusal) = refusal.filter(|r| !r.trim().is_empty()) {
        return Err(Failure::fatal(
            LlmErrorCode::Abstained,
            format!("the model declined: {}", truncate(&refusal, 300)),
        ));
    }
    let reason = finish
        .map(|f| format!(" (finish reason: {})", format!("{f:?}").to_lowercase()))
        .unwrap_or_default();
    Err(Failure::fatal(
        LlmErrorCode::BadResponse,
        format!("the LLM returned an empty reply{reason}"),
    ))
}

/// What went wrong in one attempt and whether another may help.
#[derive(Debug)]
struct Failure {
    error: LlmError,
    /// `Some(retry_after)` when retrying may help.
    retry: Option<Option<Duration>>,
}

impl Failure {
    fn retry(code: LlmErrorCode, message: impl Into<String>, after: Option<Duration>) -> Self {
        Failure { error: LlmError::new(code, message), retry: Some(after) }
    }

    fn fatal(code: LlmErrorCode, message: impl Into<String>) -> Self {
        Failure { error: LlmError::new(code, message), retry: None }
    }
}

/// Where requests go and how they authenticate: OpenAI-style or classic Azure.
#[derive(Clone)]
struct Endpoint {
    base: String,
    url_prefix: String,
    headers: HeaderMap,
    query: Vec<(&'static str, String)>,
    key: SecretString,
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Endpoint")
            .field("url_prefix", &self.url_prefix)
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("query", &self.query)
            .finish_non_exhaustive()
    }
}

impl Endpoint {
    fn new(config: &OpenAiConfig) -> Result<Endpoint, LlmError> {
        let mut headers = HeaderMap::new();
        let key = config.key().unwrap_or_default();
        let (name, value, url_prefix, query) = match &config.azure_api_version {
            Some(version) => (
                HeaderName::from_static("api-key"),
                key.to_owned(),
                format!("{}/openai/deployments/{}", config.base_url, config.model),
                vec![("api-version", version.trim().to_owned())],
            ),
            None => (AUTHORIZATION, format!("Bearer {key}"), config.base_url.clone(), Vec::new()),
        };
        if !key.is_empty() {
            let mut value = HeaderValue::from_str(&value).map_err(|_| {
                misconfigured(
                    "the LLM API key contains characters that cannot be sent in an HTTP header",
                )
            })?;
            value.set_sensitive(true);
            headers.insert(name, value);
        }
        Ok(Endpoint {
            base: config.base_url.clone(),
            url_prefix,
            headers,
            query,
            key: SecretString::from(key.to_owned()),
        })
    }
}

impl Config for Endpoint {
    fn headers(&self) -> HeaderMap {
        self.headers.clone()
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.url_prefix)
    }

    fn query(&self) -> Vec<(&str, &str)> {
        self.query.iter().map(|(k, v)| (*k, v.as_str())).collect()
    }

    fn api_base(&self) -> &str {
        &self.base
    }

    fn api_key(&self) -> &SecretString {
        &self.key
    }
}

/// The HTTP transport: plain reqwest, no retries of its own (async-openai's
/// default stack retries too, which would multiply attempts), and non-2xx
/// answers turned into an [`HttpFailure`] that keeps the status, the body and
/// `Retry-After`.
#[derive(Clone)]
struct Transport {
    http: reqwest::Client,
}

impl tower::Service<HttpRequestFactory> for Transport {
    type Response = reqwest::Response;
    type Error = OpenAIError;
    type Future = Pin<Box<dyn Future<Output = Result<reqwest::Response, OpenAIError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, factory: HttpRequestFactory) -> Self::Future {
        let http = self.http.clone();
        Box::pin(async move {
            let request = factory.build().await?;
            let response = http.execute(request).await.map_err(OpenAIError::Reqwest)?;
            let status = response.status();
            if status.is_success() {
                return Ok(response);
            }
            let retry_after = retry_after(response.headers());
            let body = response.text().await.unwrap_or_default();
            Err(OpenAIError::Boxed(Box::new(HttpFailure {
                status: status.as_u16(),
                retry_after,
                body,
            })))
        })
    }
}

/// A non-2xx answer.
#[derive(Debug)]
struct HttpFailure {
    status: u16,
    retry_after: Option<Duration>,
    body: String,
}

impl fmt::Display for HttpFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HTTP {}", self.status)
    }
}

impl std::error::Error for HttpFailure {}

/// `retry-after-ms` (OpenAI, Azure) or `Retry-After` in seconds.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let number = |name: &str| -> Option<f64> {
        let value = headers.get(name)?.to_str().ok()?.trim().parse::<f64>().ok()?;
        (value.is_finite() && value >= 0.0).then_some(value)
    };
    number("retry-after-ms")
        .map(|ms| Duration::from_secs_f64(ms.min(86_400_000.0) / 1000.0))
        .or_else(|| number(RETRY_AFTER.as_str()).map(|s| Duration::from_secs_f64(s.min(86_400.0))))
}

/// The human part of an error body: OpenAI's `error.message`, vLLM's
/// `message`, Ollama's `error`, FastAPI's `detail`, or the text itself.
fn server_message(body: &str) -> Option<String> {
    let body = body.trim();
    if body.is_empty() {
        return None;
    }
    let text = match serde_json::from_str::<serde_json::Value>(body) {
        Ok(json) => [
            json.pointer("/error/message"),
            json.get("message"),
            json.get("error"),
            json.get("detail"),
        ]
        .into_iter()
        .flatten()
        .find_map(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| body.to_owned()),
        Err(_) => body.to_owned(),
    };
    Some(truncate(text.trim(), 300))
}

fn is_quota_exhausted(body: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(body).is_ok_and(|json| {
        ["/error/code", "/error/type"]
            .iter()
            .any(|p| json.pointer(p).and_then(|v| v.as_str()) == Some("insufficient_quota"))
    })
}

/// An error and its sources, which hold the useful part ("connection refused").
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        let part = e.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = e.source();
    }
    text
}

/// A number in `[0, 1)`, different on every call; jitter needs no more.
fn jitter() -> f64 {
    let bits = std::collections::hash_map::RandomState::new().hash_one(std::time::Instant::now());
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(config: OpenAiConfig) -> OpenAiModel {
        OpenAiModel::new(config).expect("valid config")
    }

    #[test]
    fn configs_are_checked() {
        let ok = OpenAiConfig::new("http://127.0.0.1:1/v1", "m");
        let cases: Vec<(OpenAiConfig, Option<&str>)> = vec![
            (ok.clone(), None),
            (OpenAiConfig::new("http://127.0.0.1:1/v1/", "m"), None),
            (OpenAiConfig::new("https://api.example.com", "m").with_api_key("sk-1"), None),
            (OpenAiConfig::azure("https://r.openai.azure.com", "d", "2024-10-21", "k"), None),
            (OpenAiConfig::new("http://127.0.0.1:1/v1", "  "), Some("no LLM model name")),
            (OpenAiConfig { model: String::new(), ..ok.clone() }, Some("no LLM model name")),
            (OpenAiConfig::new("ftp://host/v1", "m"), Some("http:// or https://")),
            (OpenAiConfig::new("localhost:11434", "m"), Some("http:// or https://")),
            (OpenAiConfig::new("not a url", "m"), Some("is not a URL")),
            (OpenAiConfig::new("http://u:p@host/v1", "m"), Some("must not contain credentials")),
            (OpenAiConfig { timeout: Duration::ZERO, ..ok.clone() }, Some("timeout")),
            (OpenAiConfig { max_retries: 11, ..ok.clone() }, Some("at most 10")),
            (OpenAiConfig { temperature: Some(3.0), ..ok.clone() }, Some("temperature")),
            (OpenAiConfig { max_backoff: Duration::ZERO, ..ok.clone() }, Some("max_backoff")),
            (
                OpenAiConfig { azure_api_version: Some("2024-10-21".into()), ..ok.clone() },
                Some("Azure OpenAI needs"),
            ),
            (ok.clone().with_api_key("bad\nkey"), Some("cannot be sent in an HTTP header")),
        ];
        for (config, expected) in cases {
            let debug = format!("{config:?}");
            match (OpenAiModel::new(config), expected) {
                (Ok(_), None) => {}
                (Err(e), Some(want)) => {
                    assert_eq!(e.code, LlmErrorCode::Misconfigured, "{debug}");
                    assert!(e.message.contains(want), "{debug}: {e}");
                }
                (result, want) => panic!("{debug}: got {result:?}, wanted {want:?}"),
            }
        }
    }

    #[test]
    fn debug_output_hides_the_key() {
        let config = OpenAiConfig::new("http://127.0.0.1:1/v1", "m").with_api_key("sk-secret-1234");
        let model = model(config.clone());
        for text in [format!("{config:?}"), format!("{model:?}"), format!("{:?}", model.client)] {
            assert!(!text.contains("sk-secret-1234"), "{text}");
        }
        assert_eq!(model.name(), "m");
    }

    #[test]
    fn endpoints_for_openai_azure_and_keyless_servers() {
        let openai =
            Endpoint::new(&OpenAiConfig::new("https://api.openai.com/v1", "m").with_api_key("k1"))
                .expect("endpoint");
        assert_eq!(openai.url("/chat/completions"), "https://api.openai.com/v1/chat/completions");
        assert_eq!(
            openai.headers().get(AUTHORIZATION).map(|v| v.as_bytes()),
            Some(&b"Bearer k1"[..])
        );
        assert!(openai.query().is_empty());

        let local =
            Endpoint::new(&OpenAiConfig::new("http://localhost:11434/v1", "m")).expect("endpoint");
        assert!(local.headers().is_empty());
        let blank = Endpoint::new(&OpenAiConfig::new("http://h/v1", "m").with_api_key("  "))
            .expect("endpoint");
        assert!(blank.headers().is_empty());

        let azure = Endpoint::new(&OpenAiConfig::azure(
            "https://r.openai.azure.com",
            "dep",
            "2024-10-21",
            "k2",
        ))
        .expect("endpoint");
        assert_eq!(
            azure.url("/chat/completions"),
            "https://r.openai.azure.com/openai/deployments/dep/chat/completions"
        );
        assert_eq!(azure.query(), vec![("api-version", "2024-10-21")]);
        assert_eq!(azure.headers().get("api-key").map(|v| v.as_bytes()), Some(&b"k2"[..]));
        assert!(azure.headers().get(AUTHORIZATION).is_none());
    }

    #[test]
    fn statuses_map_to_codes() {
        use LlmErrorCode::*;
        let keyed = model(OpenAiConfig::new("http://h/v1", "m").with_api_key("sk-abcdef"));
        let keyless = model(OpenAiConfig::new("http://h/v1", "m"));
        let cases: &[(&OpenAiModel, u16, &str, LlmErrorCode, bool, &str)] = &[
            (
                &keyed,
                401,
                r#"{"error":{"message":"Incorrect API key provided: sk-abc***def"}}"#,
                Unauthorized,
                false,
                "the LLM API key was rejected",
            ),
            (&keyed, 403, "", Unauthorized, false, "may not use model"),
            (&keyless, 401, "", Unauthorized, false, "none is configured"),
            (
                &keyed,
                404,
                r#"{"error":{"message":"model 'm' not found"}}"#,
                Misconfigured,
                false,
                "model 'm' not found",
            ),
            (
                &keyed,
                404,
                r#"{"object":"error","message":"The model `m` does not exist.","code":404}"#,
                Misconfigured,
                false,
                "does not exist",
            ),
            (&keyed, 408, "", Timeout, true, "HTTP 408"),
            (
                &keyed,
                429,
                r#"{"error":{"message":"slow down","type":"rate_limit_error"}}"#,
                RateLimited,
                true,
                "slow down",
            ),
            (
                &keyed,
                429,
                r#"{"error":{"message":"quota","type":"insufficient_quota","code":"insufficient_quota"}}"#,
                RateLimited,
                false,
                "no quota left",
            ),
            (&keyed, 500, "internal oops", Unavailable, true, "internal oops"),
            (&keyed, 503, r#"{"error":"loading model"}"#, Unavailable, true, "loading model"),
            (
                &keyed,
                400,
                r#"{"error":{"message":"context too long"}}"#,
                BadResponse,
                false,
                "context too long",
            ),
            (&keyed, 422, r#"{"detail":"bad field"}"#, BadResponse, false, "bad field"),
            (&keyed, 302, "", BadResponse, false, "HTTP 302"),
        ];
        for (model, status, body, code, retry, message) in cases {
            let failure = model.classify_status(*status, body, None);
            assert_eq!(failure.error.code, *code, "{status} {body}");
            assert_eq!(failure.retry.is_some(), *retry, "{status} {body}");
            assert!(failure.error.message.contains(message), "{status}: {}", failure.error.message);
            assert!(!failure.error.message.contains("sk-abc"), "{}", failure.error.message);
        }
    }

    #[test]
    fn backoff_doubles_caps_and_honours_retry_after() {
        let m = model(OpenAiConfig {
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(1000),
            ..OpenAiConfig::new("http://h/v1", "m")
        });
        for _ in 0..50 {
            let cases = [
                (1, 50, 100),
                (2, 100, 200),
                (3, 200, 400),
                (4, 400, 800),
                (5, 500, 1000),
                (12, 500, 1000),
            ];
            for (attempt, low, high) in cases {
                let wait = m.backoff(attempt, None).expect("a wait");
                assert!(
                    wait >= Duration::from_millis(low) && wait <= Duration::from_millis(high),
                    "attempt {attempt}: {wait:?}"
                );
            }
            assert!(
                m.backoff(1, Some(Duration::from_millis(700))).expect("a wait")
                    >= Duration::from_millis(700)
            );
            assert_eq!(m.backoff(1, Some(Duration::from_secs(5))), None);
        }
    }

    #[test]
    fn retry_after_headers() {
        type Headers = &'static [(&'static str, &'static str)];
        let cases: &[(Headers, Option<Duration>)] = &[
            (&[], None),
            (&[("retry-after", "2")], Some(Duration::from_secs(2))),
            (&[("retry-after", "0.5")], Some(Duration::from_millis(500))),
            (&[("retry-after-ms", "250"), ("retry-after", "9")], Some(Duration::from_millis(250))),
            (&[("retry-after", "Wed, 21 Oct 2015 07:28:00 GMT")], None),
            (&[("retry-after", "-1")], None),
        ];
        for (headers, expected) in cases {
            let mut map = HeaderMap::new();
            for (k, v) in *headers {
                map.insert(HeaderName::from_static(k), HeaderValue::from_static(v));
            }
            assert_eq!(retry_after(&map), *expected, "{headers:?}");
        }
    }

    #[test]
    fn server_messages_and_truncation() {
        let cases: &[(&str, Option<&str>)] = &[
            ("", None),
            (r#"{"error":{"message":"m1"}}"#, Some("m1")),
            (r#"{"message":"m2"}"#, Some("m2")),
            (r#"{"error":"m3"}"#, Some("m3")),
            (r#"{"detail":"m4"}"#, Some("m4")),
            ("plain words", Some("plain words")),
            (r#"{"other":1}"#, Some(r#"{"other":1}"#)),
        ];
        for (body, expected) in cases {
            assert_eq!(server_message(body).as_deref(), *expected, "{body}");
        }
    }

    #[test]
    fn redaction_covers_echoed_keys() {
        let m = model(OpenAiConfig::new("http://h/v1", "m").with_api_key("sk-live-xyz"));
        assert_eq!(m.redact("bad key sk-live-xyz here"), "bad key <redacted> here");
    }

    #[test]
    fn chat_requests_keep_roles_and_order() {
        let m = model(OpenAiConfig {
            temperature: Some(0.0),
            stream: true,
            ..OpenAiConfig::new("http://h/v1", "m")
        });
        let messages = [
            ChatMessage::new(Role::System, "rules"),
            ChatMessage::new(Role::User, "q1"),
            ChatMessage::new(Role::Assistant, "SELECT 1"),
            ChatMessage::new(Role::User, "q2"),
        ];
        let body = serde_json::to_value(m.chat_request(&messages).expect("request")).expect("json");
        let roles: Vec<_> =
            body["messages"].as_array().expect("array").iter().map(|m| m["role"].clone()).collect();
        assert_eq!(roles, ["system", "user", "assistant", "user"]);
        assert_eq!(body["messages"][2]["content"], "SELECT 1");
        assert_eq!(body["model"], "m");
        assert_eq!(body["stream"], true);
        assert_eq!(body["temperature"], 0.0);
        assert_eq!(m.chat_request(&[]).map_err(|e| e.code), Err(LlmErrorCode::Misconfigured));
    }
}

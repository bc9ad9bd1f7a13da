//! A fake OpenAI-compatible chat server, so tests run the real client code
//! against real HTTP on 127.0.0.1.
//!
//! It answers `POST .../chat/completions` under any prefix (`/v1`, none, or
//! Azure's `/openai/deployments/{name}`), as one JSON document or as
//! server-sent events, following the request's `stream` flag. What it answers
//! is scripted: a queue of [`Behaviour`]s, then an optional responder closure
//! that sees the parsed request. Every request is recorded. Dropping the
//! server stops it, including handlers that were told to hang.
//!
//! ```
//! use custard_testkit::fake_openai::{Behaviour, FakeOpenAi};
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! // A rate limit first, then an answer that depends on the question.
//! let server = FakeOpenAi::with_responder(|request| {
//!     if request.last_user_message().is_some_and(|q| q.contains("how many")) {
//!         Behaviour::reply("```sql\nSELECT count(*) FROM orders\n```")
//!     } else {
//!         Behaviour::reply("-- cannot answer: unknown question")
//!     }
//! })
//! .await;
//! server.push(Behaviour::status(429, "slow down"));
//! // Point the client at server.base_url() ("http://127.0.0.1:PORT/v1"), then:
//! assert_eq!(server.request_count(), 0);
//! # });
//! ```

use std::collections::VecDeque;
use std::convert::Infallible;
use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::Response;
use serde::Deserialize;
use tokio::sync::{mpsc, watch};

/// The longest a [`Behaviour::Hang`] or [`Behaviour::Stall`] lasts if the
/// server is never dropped, so no test can wait forever.
pub const HANG_LIMIT: Duration = Duration::from_secs(120);

/// How the server answers one request.
#[derive(Clone, Debug, PartialEq)]
pub enum Behaviour {
    /// 200 with this assistant message (JSON, or SSE chunks when streaming).
    Reply(String),
    /// This status with this body, sent as `application/json`.
    Status(u16, String),
    /// Anything: status, extra headers and a raw body.
    Raw {
        /// The HTTP status.
        status: u16,
        /// Extra headers, such as `("retry-after", "1")`.
        headers: Vec<(String, String)>,
        /// The body, sent as is.
        body: String,
    },
    /// Waits, then behaves as the inner behaviour.
    Delay(Duration, Box<Behaviour>),
    /// Never answers (until the server is dropped or [`HANG_LIMIT`] passes).
    Hang,
    /// Sends the status line and the first half of the reply, then stops
    /// sending without closing: a stream that stalls mid-way.
    Stall(String),
}

impl Behaviour {
    /// 200 with `text` as the assistant's message.
    pub fn reply(text: impl Into<String>) -> Self {
        Behaviour::Reply(text.into())
    }

    /// `status` with an OpenAI-style error body carrying `message`.
    pub fn status(status: u16, message: &str) -> Self {
        Behaviour::Status(status, error_body(status, message))
    }

    /// `behaviour` after a pause of `delay`.
    pub fn delay(delay: Duration, behaviour: Behaviour) -> Self {
        Behaviour::Delay(delay, Box::new(behaviour))
    }

    /// 429 with a `Retry-After` of `seconds`.
    pub fn rate_limited(seconds: u64) -> Self {
        Behaviour::Raw {
            status: 429,
            headers: vec![("retry-after".to_owned(), seconds.to_string())],
            body: error_body(429, "rate limit reached"),
        }
    }

    /// 200 with a well-formed completion that has no choices.
    pub fn empty_choices() -> Self {
        let body = serde_json::json!({
            "id": "chatcmpl-fake", "object": "chat.completion", "created": CREATED,
            "model": "fake", "choices": [],
        });
        Behaviour::Raw { status: 200, headers: Vec::new(), body: body.to_string() }
    }
}

/// An OpenAI-style error document.
pub fn error_body(status: u16, message: &str) -> String {
    let kind = match status {
        401 | 403 => "invalid_request_error",
        404 => "not_found_error",
        429 => "rate_limit_error",
        500..=599 => "server_error",
        _ => "invalid_request_error",
    };
    serde_json::json!({ "error": { "message": message, "type": kind, "param": null, "code": null } })
        .to_string()
}

/// The chat request as the server parsed it.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct ChatRequestJson {
    /// The requested model.
    pub model: String,
    /// The messages, in order.
    pub messages: Vec<ChatMessageJson>,
    /// Whether a streamed reply was asked for.
    #[serde(default)]
    pub stream: bool,
    /// The requested temperature, if any.
    #[serde(default)]
    pub temperature: Option<f64>,
    /// The whole body, for anything else.
    #[serde(skip)]
    pub raw: serde_json::Value,
}

impl ChatRequestJson {
    /// The content of the last `user` message.
    pub fn last_user_message(&self) -> Option<&str> {
        self.messages.iter().rev().find(|m| m.role == "user").map(|m| m.content.as_str())
    }

    /// `(role, content)` for every message, in order.
    pub fn roles_and_contents(&self) -> Vec<(&str, &str)> {
        self.messages.iter().map(|m| (m.role.as_str(), m.content.as_str())).collect()
    }
}

/// One chat message of a request; `content` given as parts is joined.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct ChatMessageJson {
    /// `system`, `user`, `assistant`, ...
    pub role: String,
    /// The text.
    #[serde(default, deserialize_with = "content_text")]
    pub content: String,
}

fn content_text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let value = serde_json::Value::deserialize(d)?;
    Ok(match value {
        serde_json::Value::String(s) => s,
        serde_json::Value::Array(parts) => {
            parts.iter().filter_map(|p| p.get("text").and_then(|t| t.as_str())).collect()
        }
        _ => String::new(),
    })
}

/// One request the server received.
#[derive(Clone, Debug, PartialEq)]
pub struct RecordedRequest {
    /// The path, such as `/v1/chat/completions`.
    pub path: String,
    /// The query string, if any (`api-version=...` on Azure).
    pub query: Option<String>,
    /// Every header, names in lower case.
    pub headers: Vec<(String, String)>,
    /// The parsed body, when it was a chat request.
    pub body: Option<ChatRequestJson>,
}

impl RecordedRequest {
    /// The first value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_str())
    }

    /// The `Authorization` header.
    pub fn authorization(&self) -> Option<&str> {
        self.header("authorization")
    }
}

type Responder = dyn Fn(&ChatRequestJson) -> Behaviour + Send + Sync;

struct Shared {
    script: Mutex<VecDeque<Behaviour>>,
    responder: Option<Box<Responder>>,
    requests: Mutex<Vec<RecordedRequest>>,
    shutdown: watch::Receiver<bool>,
}

/// Locks ignoring poison: a panicking test must not hide the recorded requests.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A running fake server; stops when dropped.
pub struct FakeOpenAi {
    addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: watch::Sender<bool>,
}

impl fmt::Debug for FakeOpenAi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FakeOpenAi").field("addr", &self.addr).finish_non_exhaustive()
    }
}

impl FakeOpenAi {
    /// Starts a server that answers with `script`, one behaviour per request,
    /// and with 500 once the script is used up.
    pub async fn start(script: impl IntoIterator<Item = Behaviour>) -> FakeOpenAi {
        FakeOpenAi::spawn(script.into_iter().collect(), None).await
    }

    /// Starts a server that asks `responder` how to answer each request
    /// (after any behaviours queued with [`push`](Self::push)).
    pub async fn with_responder(
        responder: impl Fn(&ChatRequestJson) -> Behaviour + Send + Sync + 'static,
    ) -> FakeOpenAi {
        FakeOpenAi::spawn(VecDeque::new(), Some(Box::new(responder))).await
    }

    /// Starts a server that answers every request with `behaviour`.
    pub async fn always(behaviour: Behaviour) -> FakeOpenAi {
        FakeOpenAi::with_responder(move |_| behaviour.clone()).await
    }

    async fn spawn(script: VecDeque<Behaviour>, responder: Option<Box<Responder>>) -> FakeOpenAi {
        let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("binding the fake OpenAI server to 127.0.0.1");
        let addr = listener.local_addr().expect("the fake server's address");
        let (shutdown, shutdown_rx) = watch::channel(false);
        let shared = Arc::new(Shared {
            script: Mutex::new(script),
            responder,
            requests: Mutex::new(Vec::new()),
            shutdown: shutdown_rx.clone(),
        });
        let state = Arc::clone(&shared);
        let app = Router::new().fallback(move |method, uri, headers, body| {
            handle(Arc::clone(&state), method, uri, headers, body)
        });
        let mut stop = shutdown_rx;
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stop.wait_for(|stopped| *stopped).await;
                })
                .await;
        });
        FakeOpenAi { addr, shared, shutdown }
    }

    /// Queues `behaviour` after the ones already queued.
    pub fn push(&self, behaviour: Behaviour) {
        lock(&self.shared.script).push_back(behaviour);
    }

    /// The socket address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT/v1`, the base URL an OpenAI client expects.
    pub fn base_url(&self) -> String {
        format!("{}/v1", self.root_url())
    }

    /// `http://127.0.0.1:PORT`, for clients configured without `/v1` (and Azure).
    pub fn root_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request received so far, in order of arrival.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.shared.requests).clone()
    }

    /// How many requests arrived so far.
    pub fn request_count(&self) -> usize {
        lock(&self.shared.requests).len()
    }
}

impl Drop for FakeOpenAi {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
    }
}

const CREATED: u64 = 1_700_000_000;

async fn handle(
    shared: Arc<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if method != Method::POST || !uri.path().ends_with("/chat/completions") {
        return json_response(
            404,
            &error_body(404, &format!("no route for {method} {}", uri.path())),
        );
    }
    let parsed = serde_json::from_slice::<serde_json::Value>(&body).ok().and_then(|raw| {
        let mut request = ChatRequestJson::deserialize(&raw).ok()?;
        request.raw = raw;
        Some(request)
    });
    lock(&shared.requests).push(RecordedRequest {
        path: uri.path().to_owned(),
        query: uri.query().map(str::to_owned),
        headers: headers
            .iter()
            .map(|(n, v)| {
                (n.as_str().to_owned(), String::from_utf8_lossy(v.as_bytes()).into_owned())
            })
            .collect(),
        body: parsed.clone(),
    });
    let Some(request) = parsed else {
        return json_response(400, &error_body(400, "the body is not a chat completion request"));
    };
    let next = lock(&shared.script).pop_front();
    let behaviour =
        next.or_else(|| shared.responder.as_ref().map(|respond| respond(&request))).unwrap_or_else(
            || Behaviour::status(500, "the fake OpenAI server has no scripted reply left"),
        );
    let mut shutdown = shared.shutdown.clone();
    respond(behaviour, &request, &mut shutdown).await
}

/// Waits for the server to stop, at most [`HANG_LIMIT`].
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = tokio::time::timeout(HANG_LIMIT, shutdown.wait_for(|stopped| *stopped)).await;
}

async fn respond(
    mut behaviour: Behaviour,
    request: &ChatRequestJson,
    shutdown: &mut watch::Receiver<bool>,
) -> Response {
    loop {
        behaviour = match behaviour {
            Behaviour::Delay(delay, then) => {
                tokio::select! {
                    () = tokio::time::sleep(delay) => *then,
                    () = stopped(shutdown) => return json_response(503, &error_body(503, "stopping")),
                }
            }
            Behaviour::Hang => {
                stopped(shutdown).await;
                return json_response(503, &error_body(503, "stopping"));
            }
            Behaviour::Reply(text) if request.stream => {
                let events = sse_events(&text, &request.model);
                return streaming_response("text/event-stream", events, None);
            }
            Behaviour::Reply(text) => {
                return json_response(200, &completion(&text, &request.model).to_string());
            }
            Behaviour::Stall(text) if request.stream => {
                let mut events = sse_events(&text, &request.model);
                events.truncate(events.len() / 2);
                return streaming_response("text/event-stream", events, Some(shutdown.clone()));
            }
            Behaviour::Stall(text) => {
                let body = completion(&text, &request.model).to_string();
                let half = body[..body.len() / 2].to_owned();
                return streaming_response("application/json", vec![half], Some(shutdown.clone()));
            }
            Behaviour::Status(status, body) => return json_response(status, &body),
            Behaviour::Raw { status, headers, body } => {
                let mut response = Response::new(Body::from(body));
                *response.status_mut() = status_code(status);
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    header::HeaderValue::from_static("application/json"),
                );
                for (name, value) in headers {
                    if let (Ok(n), Ok(v)) = (
                        header::HeaderName::try_from(name.as_str()),
                        header::HeaderValue::try_from(value.as_str()),
                    ) {
                        response.headers_mut().insert(n, v);
                    }
                }
                return response;
            }
        };
    }
}

fn status_code(status: u16) -> StatusCode {
    StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

fn json_response(status: u16, body: &str) -> Response {
    let mut response = Response::new(Body::from(body.to_owned()));
    *response.status_mut() = status_code(status);
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/json"));
    response
}

fn completion(text: &str, model: &str) -> serde_json::Value {
    serde_json::json!({
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": CREATED,
        "model": model,
        "choices": [{
            "index": 0,
            "message": { "role": "assistant", "content": text },
            "finish_reason": "stop",
            "logprobs": null,
        }],
        "usage": { "prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2 },
    })
}

/// The SSE events of a streamed reply: a role chunk, content in pieces of a
/// few characters, a finish chunk and `[DONE]`.
fn sse_events(text: &str, model: &str) -> Vec<String> {
    let chunk = |delta: serde_json::Value, finish: Option<&str>| {
        let json = serde_json::json!({
            "id": "chatcmpl-fake",
            "object": "chat.completion.chunk",
            "created": CREATED,
            "model": model,
            "choices": [{ "index": 0, "delta": delta, "finish_reason": finish, "logprobs": null }],
        });
        format!("data: {json}\n\n")
    };
    let mut events = vec![chunk(serde_json::json!({ "role": "assistant", "content": "" }), None)];
    let chars: Vec<char> = text.chars().collect();
    for piece in chars.chunks(7) {
        let piece: String = piece.iter().collect();
        events.push(chunk(serde_json::json!({ "content": piece }), None));
    }
    events.push(chunk(serde_json::json!({}), Some("stop")));
    events.push("data: [DONE]\n\n".to_owned());
    events
}

/// A body sent piece by piece; with `stall_until`, it then stays open until
/// the server stops.
fn streaming_response(
    content_type: &'static str,
    pieces: Vec<String>,
    stall_until: Option<watch::Receiver<bool>>,
) -> Response {
    let (tx, rx) = mpsc::channel::<Bytes>(pieces.len().max(1));
    tokio::spawn(async move {
        for piece in pieces {
            if tx.send(Bytes::from(piece)).await.is_err() {
                return;
            }
        }
        if let Some(mut shutdown) = stall_until {
            stopped(&mut shutdown).await;
        }
        drop(tx);
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|bytes| (Ok::<_, Infallible>(bytes), rx))
    });
    let mut response = Response::new(Body::from_stream(stream));
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, header::HeaderValue::from_static(content_type));
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, header::HeaderValue::from_static("no-cache"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse_string_and_part_contents() {
        let raw = serde_json::json!({
            "model": "m",
            "stream": true,
            "messages": [
                { "role": "system", "content": "rules" },
                { "role": "user", "content": [{ "type": "text", "text": "a" }, { "type": "text", "text": "b" }] },
                { "role": "assistant" },
            ],
        });
        let request = ChatRequestJson::deserialize(&raw).expect("a chat request");
        assert_eq!(
            request.roles_and_contents(),
            [("system", "rules"), ("user", "ab"), ("assistant", "")]
        );
        assert_eq!(request.last_user_message(), Some("ab"));
        assert!(request.stream);
    }

    #[test]
    fn streamed_replies_reassemble() {
        let events = sse_events("SELECT count(*) FROM orders", "m");
        assert_eq!(events.last().map(String::as_str), Some("data: [DONE]\n\n"));
        let text: String = events
            .iter()
            .filter_map(|e| e.strip_prefix("data: "))
            .filter_map(|json| serde_json::from_str::<serde_json::Value>(json.trim()).ok())
            .filter_map(|v| v["choices"][0]["delta"]["content"].as_str().map(str::to_owned))
            .collect();
        assert_eq!(text, "SELECT count(*) FROM orders");
    }
}

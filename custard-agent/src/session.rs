//! One WebSocket session with the server: `hello`/`welcome`, then `discover`,
//! `run`, `cancel` and heartbeats until the connection ends.
//!
//! The server is not trusted to behave. The read loop never waits on a write:
//! its own replies (`pong`, `busy`, errors) go to a small bounded queue, results
//! to another, and one writer task sends them. A server that stops taking
//! frames is dropped (a frame that makes no progress for two heartbeats, or a
//! full reply queue), a silent one too (three heartbeats), and shutdown is
//! always heard, in the middle of anything.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use custard_core::wire::{
    Columns, Done, ErrorReport, Frame, Hello, MAX_FRAME_BYTES, Message, PROTOCOL_VERSION, Rows,
    SchemaReport, WireColumnMeta, WireErrorCode,
};
use custard_core::{Code, DiscoverOptions, ExecErrorCode, RowBatch, RunLimits};
use futures_util::{Sink, SinkExt, StreamExt};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinSet;
use tokio_tungstenite::Connector;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderValue, header};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message as WsMessage};
use tokio_util::sync::CancellationToken;

use crate::health::Reason;
use crate::logs::untrusted;
use crate::state::AgentState;

/// How long connecting and the `hello`/`welcome` exchange may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long cancelled queries get to stop in the database when the session ends.
const CANCEL_GRACE: Duration = Duration::from_secs(2);
/// How long the writer gets to send what is queued and close, once the session ended.
const WRITER_CLOSE: Duration = Duration::from_secs(1);
/// A writer whose frame has made no progress for this long when the session
/// ends is not waited for.
const WRITER_STUCK: Duration = Duration::from_millis(500);
/// How long a run's `columns` frame waits for its first rows, so that a
/// small result leaves in one write while a slow one is heard from early.
const COLUMNS_WAIT: Duration = Duration::from_millis(10);
/// A `rows` frame is split when its JSON grows past this.
const ROWS_FRAME_BYTES: usize = 1024 * 1024;
/// The most `rows` frames of one run the server may let the agent send ahead
/// (a bound on what a `flow` window or `more` credits can add up to).
const MAX_CREDIT: usize = 1 << 16;
/// Replies of the read loop (`pong`, `busy`, errors: small frames) waiting for
/// the writer; when it is full the server sends faster than it reads (a legit
/// server has a few requests in flight and pings every few seconds) and the
/// session ends.
const CONTROL_QUEUE: usize = 256;
/// Result frames (up to about [`ROWS_FRAME_BYTES`] each) waiting for the writer;
/// when it is full, the runs wait (and with them their queries).
const DATA_QUEUE: usize = 16;
/// The heartbeat the server announces, kept within these bounds: a hostile
/// server can neither switch the silence and write deadlines off nor make them
/// fire at once.
const MIN_HEARTBEAT: Duration = Duration::from_secs(1);
const MAX_HEARTBEAT: Duration = Duration::from_secs(60);
/// A server silent for this many heartbeats is gone.
const SILENT_HEARTBEATS: u32 = 3;
/// A frame that could not be written for this many heartbeats: the server
/// stopped reading.
const STALLED_WRITE_HEARTBEATS: u32 = 2;
/// Ids longer than this are refused, not echoed.
const MAX_ID_BYTES: usize = 256;
/// The health file is written at most this often (pings can come in floods).
const HEALTH_EVERY: Duration = Duration::from_secs(5);

/// How a session ended.
#[derive(Debug)]
pub(crate) enum SessionEnd {
    /// The agent is shutting down.
    Shutdown,
    /// The server refused the API key (HTTP 401, or an `unauthorized` error
    /// instead of `welcome`): retrying soon will not help. The server's words,
    /// for the debug log.
    KeyRefused(String),
    /// The server refused the connection for another reason.
    Refused(String),
    /// The server is shutting down and asked its agents to connect again
    /// (close code 1012, "service restart"), after this session had been up
    /// for `connected_for`: another server behind the same address takes it.
    Moved {
        /// How long the session was up.
        connected_for: Duration,
        /// The server's words, for the log.
        reason: String,
    },
    /// The connection was lost or never made; worth trying again.
    Lost {
        /// How long the session was up (zero when it never started).
        connected_for: Duration,
        /// Why, for the log.
        reason: String,
    },
}

impl SessionEnd {
    /// What the health file says about this end.
    pub(crate) fn health_reason(&self) -> Reason {
        match self {
            SessionEnd::Shutdown => Reason::Stopped,
            SessionEnd::KeyRefused(_) => Reason::KeyRefused,
            SessionEnd::Refused(_) => Reason::Refused,
            SessionEnd::Lost { connected_for, .. } if connected_for.is_zero() => {
                Reason::Unreachable
            }
            SessionEnd::Lost { .. } | SessionEnd::Moved { .. } => Reason::Lost,
        }
    }
}

/// Where a run or a discovery sends its frames: the bounded result queue,
/// given up on once the session is ending.
#[derive(Clone)]
struct Outbox {
    data: mpsc::Sender<WsMessage>,
    closing: CancellationToken,
}

impl Outbox {
    /// Queues a frame, waiting for room; false once the session is ending.
    async fn send(&self, message: WsMessage) -> bool {
        tokio::select! {
            biased;
            sent = self.data.send(message) => sent.is_ok(),
            () = self.closing.cancelled() => false,
        }
    }
}

/// Connects once and serves until the connection ends or `shutdown` fires.
pub(crate) async fn serve(state: &Arc<AgentState>, shutdown: &CancellationToken) -> SessionEnd {
    let lost = |reason: String| SessionEnd::Lost { connected_for: Duration::ZERO, reason };
    let mut request = match state.config.server_url.as_str().into_client_request() {
        Ok(r) => r,
        Err(e) => return SessionEnd::Refused(format!("invalid server URL: {e}")),
    };
    let Ok(auth) = HeaderValue::from_str(&format!("Bearer {}", state.config.api_key)) else {
        return SessionEnd::Refused("the API key contains characters that cannot be sent".into());
    };
    request.headers_mut().insert(header::AUTHORIZATION, auth);
    let ws_config = WebSocketConfig::default()
        .max_message_size(Some(MAX_FRAME_BYTES))
        .max_frame_size(Some(MAX_FRAME_BYTES));
    let connector = state.tls.as_ref().map(|tls| Connector::Rustls(Arc::clone(tls)));
    let connect =
        tokio_tungstenite::connect_async_tls_with_config(request, Some(ws_config), true, connector);
    // Connecting gives way to shutdown.
    let connect = tokio::select! {
        connected = tokio::time::timeout(HANDSHAKE_TIMEOUT, connect) => connected,
        () = shutdown.cancelled() => return SessionEnd::Shutdown,
    };
    let ws = match connect {
        Err(_) => return lost("connecting to the server timed out".into()),
        Ok(Err(tungstenite::Error::Http(response))) => {
            let body = response.body().as_deref().map(String::from_utf8_lossy).unwrap_or_default();
            if response.status() == tungstenite::http::StatusCode::UNAUTHORIZED {
                return SessionEnd::KeyRefused(format!(
                    "HTTP {} {}",
                    response.status(),
                    untrusted(body.trim())
                ));
            }
            return SessionEnd::Refused(format!(
                "the server refused the connection: HTTP {} {}",
                response.status(),
                untrusted(body.trim())
            ));
        }
        Ok(Err(e)) => {
            return lost(format!("connecting to the server failed: {}", untrusted(&e.to_string())));
        }
        Ok(Ok((ws, _))) => ws,
    };
    let (sink, mut stream) = ws.split();
    let (control, control_rx) = mpsc::channel::<WsMessage>(CONTROL_QUEUE);
    let (data, data_rx) = mpsc::channel::<WsMessage>(DATA_QUEUE);
    let outbox = Outbox { data, closing: CancellationToken::new() };
    let (stall_limit, stall_rx) = watch::channel(HANDSHAKE_TIMEOUT);
    let (sending_since, sending_rx) = watch::channel(None);
    let clock = WriterClock { stall_limit: stall_rx, sending_since };
    let mut writer = Some(tokio::spawn(write(sink, control_rx, data_rx, clock)));

    let hello = Hello {
        agent_version: env!("CARGO_PKG_VERSION").to_owned(),
        dialect: state.executor.dialect().as_str().to_owned(),
        capabilities: vec!["discover".into(), "run".into(), "cancel".into(), "flow".into()],
        schema_fingerprint: state.catalog().fingerprint.clone(),
        max_concurrency: u32::try_from(state.config.max_concurrency).unwrap_or(u32::MAX),
    };
    let _ = control.try_send(text(&Frame::new("hello", Message::Hello(hello))));

    let welcome = tokio::time::timeout(HANDSHAKE_TIMEOUT, async {
        let welcome = async {
            while let Some(message) = stream.next().await {
                match message {
                    Ok(WsMessage::Text(t)) => match Frame::decode(t.as_str()) {
                        Ok(Frame { message: Message::Welcome(w), .. }) => return Ok(w),
                        Ok(Frame { message: Message::Error(e), .. }) => {
                            let key_refused = e.code == Code::from(WireErrorCode::Unauthorized);
                            let (code, message) =
                                (untrusted(e.code.as_str()), untrusted(&e.message));
                            return Err((key_refused, format!("{code}: {message}")));
                        }
                        _ => {}
                    },
                    Ok(WsMessage::Close(frame)) => {
                        return Err((
                            false,
                            frame.map_or("closed".into(), |f| {
                                format!("closed: {}", untrusted(&f.reason))
                            }),
                        ));
                    }
                    Ok(_) => {}
                    Err(e) => return Err((false, untrusted(&e.to_string()))),
                }
            }
            Err((false, "the server closed the connection".to_owned()))
        };
        tokio::select! {
            welcome = welcome => Some(welcome),
            () = shutdown.cancelled() => None,
        }
    })
    .await;
    let welcome = match welcome {
        Ok(None) => return SessionEnd::Shutdown,
        Ok(Some(Ok(w))) => w,
        Ok(Some(Err((true, reason)))) => return SessionEnd::KeyRefused(reason),
        Ok(Some(Err((false, reason)))) => {
            return SessionEnd::Refused(format!("the server did not welcome the agent: {reason}"));
        }
        Err(_) => return lost("the server did not answer hello in time".into()),
    };
    let connected_at = Instant::now();
    tracing::info!(connection = %untrusted(&welcome.connection_id), "connected to the server");
    state.set_connected();
    let mut health_written = Instant::now();

    let heartbeat =
        Duration::from_millis(welcome.heartbeat_interval_ms).clamp(MIN_HEARTBEAT, MAX_HEARTBEAT);
    let silent_limit = heartbeat * SILENT_HEARTBEATS;
    stall_limit.send_replace(heartbeat * STALLED_WRITE_HEARTBEATS);
    let permits = Arc::new(Semaphore::new(state.config.max_concurrency));
    let mut in_flight: HashMap<String, CancellationToken> = HashMap::new();
    // With flow control (a `flow` frame from the server): each run's credit of
    // `rows` frames, topped up by `more`.
    let mut window: Option<usize> = None;
    let mut credits: HashMap<String, Arc<Semaphore>> = HashMap::new();
    let mut tasks: JoinSet<String> = JoinSet::new();
    let mut last_heard = Instant::now();
    // On shutdown the session keeps reading (`more`, `cancel`, pings) while
    // in-flight requests get the grace period; new ones are refused.
    let mut drain_until: Option<Instant> = None;
    let lost = |reason: String| SessionEnd::Lost { connected_for: connected_at.elapsed(), reason };

    let end = loop {
        let drain_deadline = drain_until.unwrap_or_else(Instant::now);
        tokio::select! {
            () = shutdown.cancelled(), if drain_until.is_none() => {
                if tasks.is_empty() {
                    break SessionEnd::Shutdown;
                }
                drain_until = Some(Instant::now() + state.config.shutdown_grace);
            }
            () = tokio::time::sleep_until(drain_deadline.into()), if drain_until.is_some() => {
                break SessionEnd::Shutdown;
            }
            () = tokio::time::sleep_until((last_heard + silent_limit).into()) => {
                break lost(format!("the server went silent for {} s", silent_limit.as_secs()));
            }
            ended = async {
                match writer.as_mut() {
                    Some(writer) => writer.await,
                    None => std::future::pending().await,
                }
            }, if writer.is_some() => {
                writer = None;
                break lost(match ended {
                    Ok(Err(reason)) => reason,
                    _ => "the connection closed".into(),
                });
            }
            Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                if let Ok(id) = done {
                    in_flight.remove(&id);
                    credits.remove(&id);
                }
                if drain_until.is_some() && tasks.is_empty() {
                    break SessionEnd::Shutdown;
                }
            }
            message = stream.next() => {
                last_heard = Instant::now();
                let text_frame = match message {
                    Some(Ok(WsMessage::Text(t))) => t,
                    Some(Ok(WsMessage::Close(frame))) => {
                        let restart = frame.as_ref().is_some_and(|f| f.code == CloseCode::Restart);
                        let reason = frame.map_or("closed".into(), |f| {
                            let code = u16::from(f.code);
                            format!("closed by the server: {code} {}", untrusted(&f.reason))
                        });
                        if restart {
                            break SessionEnd::Moved { connected_for: connected_at.elapsed(), reason };
                        }
                        break lost(reason);
                    }
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => break lost(untrusted(&e.to_string())),
                    None => break lost("the connection closed".into()),
                };
                let frame = match Frame::decode(text_frame.as_str()) {
                    Ok(frame) if frame.id.len() > MAX_ID_BYTES => {
                        let report = ErrorReport::new(
                            WireErrorCode::InvalidId,
                            format!("frame ids are at most {MAX_ID_BYTES} bytes"),
                        );
                        refused(state, WireErrorCode::InvalidId.into(), "");
                        match queue(&control, Frame::new("", Message::Error(report))) {
                            Ok(()) => continue,
                            Err(reason) => break lost(reason),
                        }
                    }
                    Ok(frame) => frame,
                    Err(e) => {
                        let id = e
                            .id()
                            .map(str::to_owned)
                            .or_else(|| readable_id(text_frame.as_str()))
                            .unwrap_or_default();
                        refused(state, e.error_code().into(), &id);
                        let report = Message::Error(ErrorReport::from(&e));
                        match queue(&control, Frame::new(id, report)) {
                            Ok(()) => continue,
                            Err(reason) => break lost(reason),
                        }
                    }
                };
                let reply = match frame.message {
                    Message::Ping => {
                        if health_written.elapsed() >= HEALTH_EVERY {
                            state.set_connected();
                            health_written = Instant::now();
                        }
                        Some(frame.reply(Message::Pong))
                    }
                    Message::Cancel(ref c) => {
                        if let Some(token) = in_flight.get(&c.target) {
                            token.cancel();
                        }
                        None
                    }
                    Message::Flow(ref flow) => {
                        window = Some(credit_size(flow.window).max(1));
                        None
                    }
                    Message::More(ref more) => {
                        if let Some(credit) = credits.get(&more.target) {
                            let room = MAX_CREDIT.saturating_sub(credit.available_permits());
                            credit.add_permits(credit_size(more.frames).min(room));
                        }
                        None
                    }
                    Message::Discover(_) | Message::Run(_) if drain_until.is_some() => {
                        Some(frame.reply(Message::Error(ErrorReport::new(
                            ExecErrorCode::AgentBusy,
                            "the agent is shutting down; try again shortly",
                        ))))
                    }
                    // A second request under the id of one in flight would take
                    // over its cancel handle and its flow credit.
                    Message::Discover(_) | Message::Run(_) if in_flight.contains_key(&frame.id) => {
                        refused(state, WireErrorCode::DuplicateRequest.into(), &frame.id);
                        Some(frame.reply(Message::Error(ErrorReport::new(
                            WireErrorCode::DuplicateRequest,
                            "a request with this id is still in flight; ids must be unique",
                        ))))
                    }
                    Message::Discover(_) | Message::Run(_) => {
                        match permits.clone().try_acquire_owned() {
                            Err(_) => Some(frame.reply(Message::Error(ErrorReport::new(
                                ExecErrorCode::AgentBusy,
                                format!(
                                    "the agent is already running {} queries; try again shortly",
                                    state.config.max_concurrency
                                ),
                            )))),
                            Ok(permit) => {
                                let token = CancellationToken::new();
                                in_flight.insert(frame.id.clone(), token.clone());
                                let credit = window.map(|w| {
                                    let credit = Arc::new(Semaphore::new(w));
                                    credits.insert(frame.id.clone(), Arc::clone(&credit));
                                    credit
                                });
                                let (state, out) = (state.clone(), outbox.clone());
                                tasks.spawn(async move {
                                    let id = frame.id;
                                    let received = Instant::now();
                                    if let Err(refusal) = state.role_gate().await {
                                        let refusal = Frame::new(&id, Message::Error(refusal));
                                        out.send(text(&refusal)).await;
                                        drop(permit);
                                        return id;
                                    }
                                    match frame.message {
                                        Message::Run(run) => {
                                            let run_limits = limits(&state, &run);
                                            let request = Request {
                                                id: &id,
                                                received,
                                                cancel: &token,
                                                credit: credit.as_deref(),
                                            };
                                            run_query(&state, &request, &run.sql, run_limits, &out)
                                                .await;
                                        }
                                        Message::Discover(d) => {
                                            discover(&state, &id, d.sample_values, &out).await;
                                        }
                                        _ => {}
                                    }
                                    drop(permit);
                                    id
                                });
                                None
                            }
                        }
                    }
                    Message::Welcome(_) => None,
                    ref other => {
                        refused(state, WireErrorCode::UnexpectedMessage.into(), &frame.id);
                        let report = ErrorReport::new(
                            WireErrorCode::UnexpectedMessage,
                            format!("the agent does not accept `{}` messages", other.type_name()),
                        );
                        Some(frame.reply(Message::Error(report)))
                    }
                };
                if let Some(reply) = reply
                    && let Err(reason) = queue(&control, reply)
                {
                    break lost(reason);
                }
            }
        }
    };
    state.set_disconnected(end.health_reason());

    // What still runs is cancelled (on shutdown after the grace period) and
    // gets a moment to stop in the database (a cancel request); aborting it at
    // once would leave it running there to its own timeout. Runs waiting for
    // room in the queue give up: the server is not taking frames any more.
    in_flight.values().for_each(CancellationToken::cancel);
    outbox.closing.cancel();
    let _ =
        tokio::time::timeout(CANCEL_GRACE, async { while tasks.join_next().await.is_some() {} })
            .await;
    tasks.abort_all();
    // The writer sends what is queued, then the close frame (`sink.close()`):
    // a close frame queued here could overtake the results still queued.
    drop((control, outbox));
    if let Some(mut writer) = writer {
        // A writer stuck on a server that stopped reading is not waited for.
        let stuck =
            sending_rx.borrow().is_some_and(|since: Instant| since.elapsed() >= WRITER_STUCK);
        if stuck || tokio::time::timeout(WRITER_CLOSE, &mut writer).await.is_err() {
            writer.abort();
        }
    }
    end
}

/// Sends what the queues hold, replies of the read loop first, until both
/// close; an error when a frame fails, or makes no progress within the stall
/// limit (the server stopped reading).
async fn write<S>(
    mut sink: S,
    mut control: mpsc::Receiver<WsMessage>,
    mut data: mpsc::Receiver<WsMessage>,
    clock: WriterClock,
) -> Result<(), String>
where
    S: Sink<WsMessage, Error = tungstenite::Error> + Unpin,
{
    let (mut control_open, mut data_open) = (true, true);
    // A frame taken from the queue that did not fit in the previous write.
    let mut carried: Option<WsMessage> = None;
    loop {
        let message = if let Some(message) = carried.take() {
            message
        } else {
            tokio::select! {
                biased;
                message = control.recv(), if control_open => match message {
                    Some(m) => m,
                    None => { control_open = false; continue; }
                },
                message = data.recv(), if data_open => match message {
                    Some(m) => m,
                    None => { data_open = false; continue; }
                },
                else => break,
            }
        };
        let limit = *clock.stall_limit.borrow();
        clock.sending_since.send_replace(Some(Instant::now()));
        // What else is queued already goes out with it, in one write (a small
        // result's `columns`, `rows` and `done` reach the server together),
        // up to one large frame's worth, so the stall limit still measures
        // the progress of at most about one frame.
        let send = async {
            let mut batch = message.len();
            sink.feed(message).await?;
            while let Some(more) = ready(&mut control, &mut data) {
                if batch + more.len() > ROWS_FRAME_BYTES {
                    carried = Some(more);
                    break;
                }
                batch += more.len();
                sink.feed(more).await?;
            }
            sink.flush().await
        };
        match tokio::time::timeout(limit, send).await {
            Ok(Ok(())) => {
                clock.sending_since.send_replace(None);
            }
            Ok(Err(e)) => return Err(format!("sending to the server failed: {e}")),
            Err(_) => {
                return Err(format!(
                    "the server stopped reading: a frame could not be sent for {} s",
                    limit.as_secs()
                ));
            }
        }
    }
    let _ = sink.close().await;
    Ok(())
}

/// A frame queued already (replies of the read loop first), without waiting.
fn ready(
    control: &mut mpsc::Receiver<WsMessage>,
    data: &mut mpsc::Receiver<WsMessage>,
) -> Option<WsMessage> {
    control.try_recv().or_else(|_| data.try_recv()).ok()
}

/// The writer's deadline, and since when its current frame is being sent.
struct WriterClock {
    stall_limit: watch::Receiver<Duration>,
    sending_since: watch::Sender<Option<Instant>>,
}

/// Queues a reply of the read loop; an error (ending the session) when the
/// queue is full, as the server sends faster than it reads what the agent sends.
fn queue(control: &mpsc::Sender<WsMessage>, frame: Frame) -> Result<(), String> {
    control.try_send(text(&frame)).map_err(|e| match e {
        mpsc::error::TrySendError::Full(_) => {
            format!("the server sends faster than it reads: {CONTROL_QUEUE} replies are waiting to be sent")
        }
        mpsc::error::TrySendError::Closed(_) => "the connection closed".to_owned(),
    })
}

/// The `id` of a frame that did not decode, when the text is an object with a
/// short string `id` (so the `error` reply names the request it refuses).
fn readable_id(text: &str) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct IdOnly {
        id: Option<String>,
    }
    if !text.trim_start().starts_with('{') {
        return None;
    }
    serde_json::from_str::<IdOnly>(text).ok()?.id.filter(|id| id.len() <= MAX_ID_BYTES)
}

/// Logs a refused frame at debug level, and a summary at info level at most
/// every few seconds (a server can send such frames at will).
fn refused(state: &AgentState, code: Code, id: &str) {
    let code = code.as_str();
    tracing::debug!(code, id = %untrusted(id), "refused a frame from the server");
    if let Some(count) = state.refused_frames.hit() {
        tracing::info!(
            refused = count,
            last_code = code,
            "refused frames from the server since the last summary (each at debug level)"
        );
    }
}

/// A count of `rows` frames from the server, at most [`MAX_CREDIT`].
fn credit_size(frames: u32) -> usize {
    usize::try_from(frames).map_or(MAX_CREDIT, |n| n.min(MAX_CREDIT))
}

fn text(frame: &Frame) -> WsMessage {
    WsMessage::text(frame.encode())
}

/// Reads the schema and replies with what the agent's policy lets it share.
async fn discover(state: &AgentState, id: &str, requested: u32, out: &Outbox) {
    let sample_values = (requested as usize).min(state.config.sample_values);
    let reply = match state.refresh_schema(&DiscoverOptions { sample_values }).await {
        Ok(schema) => Message::Schema(SchemaReport::new(&schema)),
        Err(e) => Message::Error(ErrorReport::from(&e)),
    };
    out.send(text(&Frame::new(id, reply))).await;
}

/// The limits of a `run`: what the server asks for, within the agent's own caps.
fn limits(state: &AgentState, run: &custard_core::wire::Run) -> RunLimits {
    let config = &state.config;
    RunLimits {
        max_rows: if run.max_rows == 0 {
            config.max_rows
        } else {
            run.max_rows.min(config.max_rows)
        },
        max_bytes: config.max_bytes,
        timeout: if run.timeout_ms == 0 {
            config.query_timeout
        } else {
            Duration::from_millis(run.timeout_ms).min(config.query_timeout)
        },
        ..RunLimits::default()
    }
}

/// One request being served.
struct Request<'a> {
    id: &'a str,
    /// When the frame arrived: the run's deadline counts from here.
    received: Instant,
    cancel: &'a CancellationToken,
    /// With flow control: each `rows` frame takes one permit.
    credit: Option<&'a Semaphore>,
}

/// How forwarding a run's batches ended.
enum Forwarded {
    /// The executor finished (its result says how).
    Finished,
    /// The server cancelled the run.
    Cancelled,
    /// The deadline passed, waiting for the server (`more`, room to send) included.
    TimedOut,
    /// The session ended.
    Lost,
}

/// Checks `run` with the agent's own guard and policy (limited to the run's
/// rows, so the query is wrapped once), runs it, and streams
/// `columns`, `rows` and `done` (or `error`) back under the request's id;
/// with flow control each `rows` frame takes one of the credit's permits.
/// The deadline covers the whole run, time spent waiting for the server included.
async fn run_query(
    state: &AgentState,
    request: &Request<'_>,
    sql: &str,
    limits: RunLimits,
    out: &Outbox,
) {
    let id = request.id;
    let send = |message: Message| out.send(text(&Frame::new(id, message)));
    // Checked and wrapped once, in the row cap this run has.
    let checked = match state.catalog().guard.check_within(sql, limits.max_rows) {
        Ok(c) => c,
        Err(rejection) => {
            let outcome = rejection.code.as_str();
            tracing::debug!(
                id = %untrusted(id),
                outcome,
                reason = %untrusted(&rejection.message),
                "query rejected by the agent's guard"
            );
            if let Some(count) = state.rejections.hit() {
                tracing::info!(
                    rejected = count,
                    last_outcome = outcome,
                    "queries rejected by the agent's guard since the last summary (each at debug level)"
                );
            }
            send(Message::Error(ErrorReport::from(&rejection))).await;
            return;
        }
    };
    let deadline = request.received + limits.timeout;
    let (tx, mut rx) = mpsc::channel::<RowBatch>(2);
    let execute = state.executor.run(&checked, &limits, tx);
    // The `columns` frame waits for the first rows or the end (at most
    // `COLUMNS_WAIT`), so a small result's frames are queued together and go
    // out in one write.
    let mut columns: Option<WsMessage> = None;
    let held = &mut columns;
    // Forwards batches. Ending early drops the receiver, which stops the query.
    let forward = async move {
        let batches = async {
            loop {
                let batch = if held.is_some() {
                    match tokio::time::timeout(COLUMNS_WAIT, rx.recv()).await {
                        Ok(batch) => batch,
                        // Slow to its first row: the server hears the columns now.
                        Err(_) => {
                            if let Some(columns) = held.take()
                                && !out.send(columns).await
                            {
                                return Forwarded::Lost;
                            }
                            continue;
                        }
                    }
                } else {
                    rx.recv().await
                };
                let Some(batch) = batch else { break };
                match batch {
                    RowBatch::Columns(meta) => {
                        let meta = meta.iter().map(WireColumnMeta::from).collect();
                        *held = Some(text(&Frame::new(
                            id,
                            Message::Columns(Columns { columns: meta }),
                        )));
                    }
                    RowBatch::Rows(rows) => {
                        if let Some(columns) = held.take()
                            && !out.send(columns).await
                        {
                            return Forwarded::Lost;
                        }
                        for frame in rows_frames(id, rows) {
                            // Wait for the server to take earlier frames (a slow
                            // reader pauses this query, nothing else).
                            if let Some(credit) = request.credit {
                                match credit.acquire().await {
                                    Ok(permit) => permit.forget(),
                                    Err(_) => return Forwarded::Lost,
                                }
                            }
                            if !out.send(frame).await {
                                return Forwarded::Lost;
                            }
                        }
                    }
                }
            }
            Forwarded::Finished
        };
        tokio::select! {
            biased;
            () = request.cancel.cancelled() => Forwarded::Cancelled,
            () = tokio::time::sleep_until(deadline.into()) => Forwarded::TimedOut,
            forwarded = batches => forwarded,
        }
    };
    let (result, forwarded) = tokio::join!(execute, forward);
    let elapsed_ms = request.received.elapsed().as_millis();
    let reply = match (result, forwarded) {
        (_, Forwarded::Lost) => return,
        (_, Forwarded::Cancelled) => {
            let outcome = ExecErrorCode::Canceled.as_str();
            tracing::info!(id = %untrusted(id), elapsed_ms, outcome, "query cancelled");
            Message::Error(ErrorReport::new(ExecErrorCode::Canceled, "the query was cancelled"))
        }
        (Err(e), _) if e.code == ExecErrorCode::Timeout => {
            tracing::info!(id = %untrusted(id), elapsed_ms, outcome = e.code.as_str(), "query failed");
            Message::Error(ErrorReport::from(&e))
        }
        (_, Forwarded::TimedOut) => {
            let outcome = ExecErrorCode::Timeout.as_str();
            tracing::info!(id = %untrusted(id), elapsed_ms, outcome, "query failed");
            Message::Error(ErrorReport::new(
                ExecErrorCode::Timeout,
                format!(
                    "the query did not finish within {} ms (time waiting for the server included)",
                    limits.timeout.as_millis()
                ),
            ))
        }
        (Ok(summary), Forwarded::Finished) => {
            tracing::info!(
                id = %untrusted(id),
                elapsed_ms,
                rows = summary.row_count,
                truncated = summary.truncated,
                outcome = "ok",
                "query ran"
            );
            // A result without rows: its columns go just before `done`.
            if let Some(columns) = columns.take()
                && !out.send(columns).await
            {
                return;
            }
            Message::Done(Done::from(&summary))
        }
        (Err(e), Forwarded::Finished) => {
            tracing::info!(id = %untrusted(id), elapsed_ms, outcome = e.code.as_str(), "query failed");
            Message::Error(ErrorReport::from(&e))
        }
    };
    send(reply).await;
}

/// `rows` frames for a batch, split so no frame grows past [`ROWS_FRAME_BYTES`].
fn rows_frames(id: &str, rows: Vec<Vec<serde_json::Value>>) -> Vec<WsMessage> {
    let frame = Frame::new(id, Message::Rows(Rows { rows }));
    let encoded = frame.encode();
    match frame.message {
        Message::Rows(Rows { mut rows }) if encoded.len() > ROWS_FRAME_BYTES && rows.len() > 1 => {
            let second = rows.split_off(rows.len() / 2);
            let mut frames = rows_frames(id, rows);
            frames.extend(rows_frames(id, second));
            frames
        }
        _ => vec![WsMessage::text(encoded)],
    }
}

/// The version of the protocol this agent speaks, for the start-up log.
pub(crate) const fn protocol_version() -> u32 {
    PROTOCOL_VERSION
}

#[cfg(test)]
mod tests {
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use super::*;

    /// A sink that writes down what the writer does with it.
    #[derive(Clone, Default)]
    struct Recorder(Arc<std::sync::Mutex<Vec<String>>>);

    impl Recorder {
        fn note(&self, event: String) {
            self.0.lock().expect("events").push(event);
        }

        fn events(&self) -> Vec<String> {
            self.0.lock().expect("events").clone()
        }
    }

    impl Sink<WsMessage> for Recorder {
        type Error = tungstenite::Error;

        fn poll_ready(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }

        fn start_send(self: Pin<&mut Self>, item: WsMessage) -> Result<(), Self::Error> {
            let text: String =
                item.to_text().map(|t| t.chars().take(8).collect()).unwrap_or_default();
            self.note(format!("send {text} {}", item.len()));
            Ok(())
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            self.note("flush".into());
            Poll::Ready(Ok(()))
        }

        fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            self.note("close".into());
            Poll::Ready(Ok(()))
        }
    }

    /// Runs the writer over what is queued (replies of the read loop, then
    /// results) until both queues close, and returns what it did.
    async fn written(control: &[WsMessage], data: &[WsMessage]) -> Vec<String> {
        let (control_tx, control_rx) = mpsc::channel(CONTROL_QUEUE);
        let (data_tx, data_rx) = mpsc::channel(DATA_QUEUE);
        for m in control {
            control_tx.try_send(m.clone()).expect("room");
        }
        for m in data {
            data_tx.try_send(m.clone()).expect("room");
        }
        drop((control_tx, data_tx));
        let (_limit, stall_limit) = watch::channel(Duration::from_secs(5));
        let (sending_since, _since) = watch::channel(None);
        let sink = Recorder::default();
        let clock = WriterClock { stall_limit, sending_since };
        write(sink.clone(), control_rx, data_rx, clock).await.expect("written");
        sink.events()
    }

    /// What is queued together leaves in one write, the read loop's replies
    /// first; a write stops growing at about one large frame.
    #[tokio::test]
    async fn queued_frames_leave_together_up_to_a_large_frame() {
        let frame = |text: &str| WsMessage::text(text.to_owned());
        let events =
            written(&[frame("pong")], &[frame("columns"), frame("rows"), frame("done")]).await;
        assert_eq!(
            events,
            ["send pong 4", "send columns 7", "send rows 4", "send done 4", "flush", "close"]
        );

        let big = |tag: &str| WsMessage::text(format!("{tag}{}", "x".repeat(ROWS_FRAME_BYTES / 4)));
        let size = ROWS_FRAME_BYTES / 4 + 2;
        // Three of them fit in one write; the fourth, taken from the queue
        // already, opens the next.
        let events = written(&[], &[big("r1"), big("r2"), big("r3"), big("r4")]).await;
        assert_eq!(
            events,
            [
                format!("send r1xxxxxx {size}"),
                format!("send r2xxxxxx {size}"),
                format!("send r3xxxxxx {size}"),
                "flush".into(),
                format!("send r4xxxxxx {size}"),
                "flush".into(),
                "close".into(),
            ]
        );
    }

    #[test]
    fn the_id_of_a_frame_that_did_not_decode() {
        let cases = [
            (r#"{"v":1,"type":"run","id":"q1","sql":5}"#, Some("q1")),
            (r#"{"v":9,"type":"ping","id":"p1"}"#, Some("p1")),
            (r#"{"v":1,"type":"run","id":7}"#, None),
            (r#"["q1"]"#, None),
            ("not json", None),
        ];
        for (text, id) in cases {
            assert_eq!(readable_id(text).as_deref(), id, "{text}");
        }
        let long = format!(r#"{{"v":1,"type":"run","id":"{}"}}"#, "x".repeat(MAX_ID_BYTES + 1));
        assert_eq!(readable_id(&long), None, "a long id is not echoed");
    }
}

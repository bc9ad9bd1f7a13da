//! One WebSocket session with the server: `hello`/`welcome`, then `discover`,
//! `run`, `cancel` and heartbeats until the connection ends.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use custard_core::wire::{
    Columns, Done, ErrorReport, Frame, Hello, MAX_FRAME_BYTES, Message, PROTOCOL_VERSION, Rows,
    SchemaReport, WireColumnMeta,
};
use custard_core::{DiscoverOptions, RowBatch, RunLimits};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderValue, header};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message as WsMessage};
use tokio_util::sync::CancellationToken;

use crate::state::AgentState;

/// How long connecting and the `hello`/`welcome` exchange may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long cancelled queries get to stop in the database when the session is lost.
const CANCEL_GRACE: Duration = Duration::from_secs(2);
/// A `rows` frame is split when its JSON grows past this.
const ROWS_FRAME_BYTES: usize = 1024 * 1024;
/// The most `rows` frames of one run the server may let the agent send ahead
/// (a bound on what a `flow` window or `more` credits can add up to).
const MAX_CREDIT: usize = 1 << 16;

/// How a session ended.
#[derive(Debug)]
pub(crate) enum SessionEnd {
    /// The agent is shutting down.
    Shutdown,
    /// The server refused the connection (for example a wrong API key).
    Refused(String),
    /// The connection was lost or never made; worth trying again.
    Lost {
        /// How long the session was up (zero when it never started).
        connected_for: Duration,
        /// Why, for the log.
        reason: String,
    },
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
    let connect = tokio_tungstenite::connect_async_with_config(request, Some(ws_config), true);
    let ws = match tokio::time::timeout(HANDSHAKE_TIMEOUT, connect).await {
        Err(_) => return lost("connecting to the server timed out".into()),
        Ok(Err(tungstenite::Error::Http(response))) => {
            let body = response.body().as_deref().map(String::from_utf8_lossy).unwrap_or_default();
            return SessionEnd::Refused(format!(
                "the server refused the connection: HTTP {} {}",
                response.status(),
                body.trim()
            ));
        }
        Ok(Err(e)) => return lost(format!("connecting to the server failed: {e}")),
        Ok(Ok((ws, _))) => ws,
    };
    let (mut sink, mut stream) = ws.split();
    let (out, mut outbox) = mpsc::channel::<WsMessage>(64);
    let writer = tokio::spawn(async move {
        while let Some(message) = outbox.recv().await {
            if sink.send(message).await.is_err() {
                break;
            }
        }
        let _ = sink.close().await;
    });

    let hello = Hello {
        agent_version: env!("CARGO_PKG_VERSION").to_owned(),
        dialect: state.executor.dialect().as_str().to_owned(),
        capabilities: vec!["discover".into(), "run".into(), "cancel".into(), "flow".into()],
        schema_fingerprint: state.catalog().fingerprint.clone(),
        max_concurrency: u32::try_from(state.config.max_concurrency).unwrap_or(u32::MAX),
    };
    let _ = out.send(text(&Frame::new("hello", Message::Hello(hello)))).await;

    let welcome = tokio::time::timeout(HANDSHAKE_TIMEOUT, async {
        while let Some(message) = stream.next().await {
            match message {
                Ok(WsMessage::Text(t)) => match Frame::decode(t.as_str()) {
                    Ok(Frame { message: Message::Welcome(w), .. }) => return Ok(w),
                    Ok(Frame { message: Message::Error(e), .. }) => {
                        return Err(format!("{}: {}", e.code, e.message));
                    }
                    _ => {}
                },
                Ok(WsMessage::Close(frame)) => {
                    return Err(frame.map_or("closed".into(), |f| format!("closed: {}", f.reason)));
                }
                Ok(_) => {}
                Err(e) => return Err(e.to_string()),
            }
        }
        Err("the server closed the connection".to_owned())
    })
    .await;
    let welcome = match welcome {
        Ok(Ok(w)) => w,
        Ok(Err(reason)) => {
            return SessionEnd::Refused(format!("the server did not welcome the agent: {reason}"));
        }
        Err(_) => return lost("the server did not answer hello in time".into()),
    };
    let connected_at = Instant::now();
    tracing::info!(connection = %welcome.connection_id, "connected to the server");
    state.set_health(true);

    // A server silent for three heartbeats is gone.
    let heartbeat = Duration::from_millis(welcome.heartbeat_interval_ms.max(1000));
    let silent_limit = heartbeat * 3;
    let permits = Arc::new(Semaphore::new(state.config.max_concurrency));
    let mut in_flight: HashMap<String, CancellationToken> = HashMap::new();
    // With flow control (a `flow` frame from the server): each run's credit of
    // `rows` frames, topped up by `more`.
    let mut window: Option<usize> = None;
    let mut credits: HashMap<String, Arc<Semaphore>> = HashMap::new();
    let mut tasks: JoinSet<String> = JoinSet::new();
    let mut last_heard = Instant::now();

    let end = loop {
        tokio::select! {
            () = shutdown.cancelled() => break SessionEnd::Shutdown,
            () = tokio::time::sleep_until((last_heard + silent_limit).into()) => {
                break SessionEnd::Lost { connected_for: connected_at.elapsed(), reason: "the server went silent".into() };
            }
            Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                if let Ok(id) = done {
                    in_flight.remove(&id);
                    credits.remove(&id);
                }
            }
            message = stream.next() => {
                last_heard = Instant::now();
                let text_frame = match message {
                    Some(Ok(WsMessage::Text(t))) => t,
                    Some(Ok(WsMessage::Close(frame))) => {
                        let reason = frame.map_or("closed".into(), |f| format!("closed by the server: {} {}", u16::from(f.code), f.reason));
                        break SessionEnd::Lost { connected_for: connected_at.elapsed(), reason };
                    }
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => break SessionEnd::Lost { connected_for: connected_at.elapsed(), reason: e.to_string() },
                    None => break SessionEnd::Lost { connected_for: connected_at.elapsed(), reason: "the connection closed".into() },
                };
                let frame = match Frame::decode(text_frame.as_str()) {
                    Ok(frame) => frame,
                    Err(e) => {
                        let id = e.id().unwrap_or_default().to_owned();
                        let _ = out.send(text(&Frame::new(id, Message::Error(ErrorReport::from(&e))))).await;
                        continue;
                    }
                };
                match frame.message {
                    Message::Ping => {
                        state.set_health(true);
                        let _ = out.send(text(&frame.reply(Message::Pong))).await;
                    }
                    Message::Cancel(c) => {
                        if let Some(token) = in_flight.get(&c.target) {
                            token.cancel();
                        }
                    }
                    Message::Flow(flow) => window = Some(credit_size(flow.window).max(1)),
                    Message::More(more) => {
                        if let Some(credit) = credits.get(&more.target) {
                            let room = MAX_CREDIT.saturating_sub(credit.available_permits());
                            credit.add_permits(credit_size(more.frames).min(room));
                        }
                    }
                    Message::Discover(_) | Message::Run(_) => {
                        let Ok(permit) = permits.clone().try_acquire_owned() else {
                            let report = ErrorReport::new("busy", format!(
                                "the agent is already running {} queries; try again shortly",
                                state.config.max_concurrency
                            ));
                            let _ = out.send(text(&frame.reply(Message::Error(report)))).await;
                            continue;
                        };
                        let token = CancellationToken::new();
                        in_flight.insert(frame.id.clone(), token.clone());
                        let credit = window.map(|w| {
                            let credit = Arc::new(Semaphore::new(w));
                            credits.insert(frame.id.clone(), Arc::clone(&credit));
                            credit
                        });
                        let (state, out) = (state.clone(), out.clone());
                        tasks.spawn(async move {
                            let id = frame.id.clone();
                            if let Err(refusal) = state.role_gate().await {
                                let _ = out.send(text(&Frame::new(id.as_str(), Message::Error(refusal)))).await;
                                drop(permit);
                                return id;
                            }
                            match frame.message {
                                Message::Run(run) => {
                                    run_query(&state, &id, run, &token, credit.as_deref(), &out).await;
                                }
                                Message::Discover(d) => discover(&state, &id, d.sample_values, &out).await,
                                _ => {}
                            }
                            drop(permit);
                            id
                        });
                    }
                    Message::Welcome(_) => {}
                    other => {
                        let report = ErrorReport::new(
                            "unexpected_message",
                            format!("the agent does not accept `{}` messages", other.type_name()),
                        );
                        let _ = out.send(text(&Frame::new(frame.id, Message::Error(report)))).await;
                    }
                }
            }
        }
    };
    state.set_health(false);

    if matches!(end, SessionEnd::Shutdown) {
        // Let in-flight queries finish within the grace period, then cancel the rest.
        let drained = tokio::time::timeout(state.config.shutdown_grace, async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            in_flight.values().for_each(CancellationToken::cancel);
            let _ = tokio::time::timeout(Duration::from_secs(5), async {
                while tasks.join_next().await.is_some() {}
            })
            .await;
        }
        let _ = out.send(WsMessage::Close(None)).await;
    } else {
        // Cancelled queries stop in the database (a cancel request); aborting
        // them at once would leave them running there to their own timeout.
        in_flight.values().for_each(CancellationToken::cancel);
        let _ = tokio::time::timeout(CANCEL_GRACE, async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
        tasks.abort_all();
    }
    drop(out);
    let _ = tokio::time::timeout(Duration::from_secs(5), writer).await;
    end
}

/// A count of `rows` frames from the server, at most [`MAX_CREDIT`].
fn credit_size(frames: u32) -> usize {
    usize::try_from(frames).map_or(MAX_CREDIT, |n| n.min(MAX_CREDIT))
}

fn text(frame: &Frame) -> WsMessage {
    WsMessage::text(frame.encode())
}

/// Reads the schema and replies with what the agent's policy lets it share.
async fn discover(state: &AgentState, id: &str, requested: u32, out: &mpsc::Sender<WsMessage>) {
    let sample_values = (requested as usize).min(state.config.sample_values);
    let reply = match state.refresh_schema(&DiscoverOptions { sample_values }).await {
        Ok(schema) => Message::Schema(SchemaReport::new(&schema)),
        Err(e) => Message::Error(ErrorReport::from(&e)),
    };
    let _ = out.send(text(&Frame::new(id, reply))).await;
}

/// Checks `run` with the agent's own guard and policy, runs it, and streams
/// `columns`, `rows` and `done` (or `error`) back under the request's id;
/// with flow control each `rows` frame takes one of `credit`'s permits.
async fn run_query(
    state: &AgentState,
    id: &str,
    run: custard_core::wire::Run,
    cancel: &CancellationToken,
    credit: Option<&Semaphore>,
    out: &mpsc::Sender<WsMessage>,
) {
    let started = Instant::now();
    let send = |message: Message| out.send(text(&Frame::new(id, message)));
    let checked = match state.catalog().guard.check(&run.sql) {
        Ok(c) => c,
        Err(rejection) => {
            tracing::info!(
                id,
                outcome = rejection.code.as_str(),
                "query rejected by the agent's guard"
            );
            let _ = send(Message::Error(ErrorReport::from(&rejection))).await;
            return;
        }
    };
    let config = &state.config;
    let requested_timeout = Duration::from_millis(run.timeout_ms);
    let limits = RunLimits {
        max_rows: if run.max_rows == 0 {
            config.max_rows
        } else {
            run.max_rows.min(config.max_rows)
        },
        max_bytes: config.max_bytes,
        timeout: if run.timeout_ms == 0 {
            config.query_timeout
        } else {
            requested_timeout.min(config.query_timeout)
        },
        ..RunLimits::default()
    };
    let (tx, mut rx) = mpsc::channel::<RowBatch>(2);
    let execute = state.executor.run(&checked, &limits, tx);
    // Forwards batches; on cancel it drops the receiver, which stops the query.
    let forward = async move {
        loop {
            tokio::select! {
                batch = rx.recv() => match batch {
                    Some(RowBatch::Columns(columns)) => {
                        let columns = columns.iter().map(WireColumnMeta::from).collect();
                        if send(Message::Columns(Columns { columns })).await.is_err() {
                            return false;
                        }
                    }
                    Some(RowBatch::Rows(rows)) => {
                        for frame in rows_frames(id, rows) {
                            // Wait for the server to take earlier frames (a slow reader
                            // pauses this query, nothing else), or for a cancel.
                            if let Some(credit) = credit {
                                tokio::select! {
                                    permit = credit.acquire() => match permit {
                                        Ok(permit) => permit.forget(),
                                        Err(_) => return false,
                                    },
                                    () = cancel.cancelled() => return true,
                                }
                            }
                            if out.send(frame).await.is_err() {
                                return false;
                            }
                        }
                    }
                    None => return false,
                },
                () = cancel.cancelled() => return true,
            }
        }
    };
    let (result, cancelled) = tokio::join!(execute, forward);
    let elapsed_ms = started.elapsed().as_millis();
    let reply = match (result, cancelled) {
        (_, true) => {
            tracing::info!(id, elapsed_ms, outcome = "canceled", "query cancelled");
            Message::Error(ErrorReport::new("canceled", "the query was cancelled"))
        }
        (Ok(summary), false) => {
            tracing::info!(
                id,
                elapsed_ms,
                rows = summary.row_count,
                truncated = summary.truncated,
                outcome = "ok",
                "query ran"
            );
            Message::Done(Done::from(&summary))
        }
        (Err(e), false) => {
            tracing::info!(id, elapsed_ms, outcome = e.code.as_str(), "query failed");
            Message::Error(ErrorReport::from(&e))
        }
    };
    let _ = send(reply).await;
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

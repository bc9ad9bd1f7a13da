//! One request between replicas: the asking replica's side ([`Call`]) and the
//! holding replica's ([`serve_request`]).
//!
//! Frames are the agent protocol's own (`custard_core::wire`), so the relay
//! adds no format of its own: the asking replica sends `run` or `discover` to
//! the connection's subject with a reply inbox; the holding replica answers
//! like an agent would (`columns`, `rows`, `done`, `error`, `schema`), first
//! with a `pong` naming, in a header, the subject to send `more`, `cancel`
//! and `ping` to. Both sides hear from each other at least every heartbeat
//! (`ping` one way, `pong` the other), so either notices within three
//! heartbeats that the other is gone.
//!
//! Flow control is the agent protocol's too: the holding replica sends at most
//! [`WINDOW`] `rows` frames ahead of the asker's `more`; while the window is
//! shut it stops taking rows from its agent, whose own window then pauses the
//! query. A slow reader pauses its own query only.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::header::HeaderMap;
use async_nats::{Client, StatusCode, Subject, Subscriber};
use custard_core::wire::{
    Cancel, Columns, Discover, Done, ErrorReport, Frame, MAX_FRAME_BYTES, Message, More, Rows, Run,
    SchemaReport, WireColumnMeta,
};
use custard_core::{
    CheckedSql, Dialect, ExecError, ExecErrorCode, Guard, RowBatch, RowSender, RunLimits,
    RunSummary, Schema,
};
use futures_util::StreamExt;
use tokio::sync::mpsc;

use super::super::{AgentRouter, LocalHub};
use crate::store::ConnectionId;

/// `rows` frames the holding replica sends ahead of the asker's `more`.
pub(super) const WINDOW: u32 = 16;
/// The asker acknowledges taken frames in steps of this many.
const STEP: u32 = WINDOW / 2;
/// On every piece of a frame but its last, when the frame is bigger than the
/// NATS server takes in one message.
const PIECE: &str = "Custard-Piece";
/// On the holding replica's first message: where `more`, `cancel` and `ping` go.
const CONTROL: &str = "Custard-Control";
/// On a `run`: the dialect the asking replica checked the query for.
const DIALECT: &str = "Custard-Dialect";
/// On a `run`: the server's byte cap for the result.
const MAX_BYTES: &str = "Custard-Max-Bytes";
/// Room left in a NATS message for its headers.
const HEADER_ROOM: usize = 4096;

/// What both sides of a request need.
#[derive(Clone, Debug)]
pub(super) struct Link {
    pub(super) client: Client,
    /// How often each side tells the other it is still there.
    pub(super) heartbeat: Duration,
}

impl Link {
    /// How long a side may stay silent before the other gives up on it.
    fn patience(&self) -> Duration {
        self.heartbeat * 3
    }

    /// Publishes `frame` to `subject` (in pieces when it is bigger than one
    /// NATS message), with `headers` on its first piece.
    async fn send(
        &self,
        subject: Subject,
        reply: Option<Subject>,
        frame: &Frame,
        mut headers: HeaderMap,
    ) -> Result<(), ExecError> {
        let text = frame.encode();
        let piece = self.client.max_payload().saturating_sub(HEADER_ROOM).max(1024);
        let bytes = text.into_bytes();
        let mut pieces = bytes.chunks(piece).peekable();
        while let Some(chunk) = pieces.next() {
            if pieces.peek().is_some() {
                headers.insert(PIECE, "more");
            }
            let payload = bytes::Bytes::copy_from_slice(chunk);
            let sent = match &reply {
                Some(reply) => {
                    self.client
                        .publish_with_reply_and_headers(
                            subject.clone(),
                            reply.clone(),
                            headers,
                            payload,
                        )
                        .await
                }
                None => self.client.publish_with_headers(subject.clone(), headers, payload).await,
            };
            sent.map_err(|e| unreachable_replicas(&e))?;
            headers = HeaderMap::new();
        }
        Ok(())
    }
}

/// Puts frames sent in pieces back together.
#[derive(Debug, Default)]
struct Pieces {
    buffer: Vec<u8>,
}

impl Pieces {
    /// The frame `message` completes, if it does.
    fn push(&mut self, message: &async_nats::Message) -> Result<Option<Frame>, ExecError> {
        let more = message.headers.as_ref().is_some_and(|h| h.get(PIECE).is_some());
        if self.buffer.len().saturating_add(message.payload.len()) > MAX_FRAME_BYTES {
            self.buffer.clear();
            return Err(ExecError::new(
                ExecErrorCode::Internal,
                "a replica sent a frame bigger than the agent protocol allows",
            ));
        }
        self.buffer.extend_from_slice(&message.payload);
        if more {
            return Ok(None);
        }
        let buffer = std::mem::take(&mut self.buffer);
        let text = String::from_utf8(buffer).map_err(|_| {
            ExecError::new(ExecErrorCode::Internal, "a replica sent a frame that is not UTF-8")
        })?;
        Frame::decode(&text).map(Some).map_err(|e| {
            ExecError::new(ExecErrorCode::Internal, format!("a replica sent a bad frame: {e}"))
        })
    }
}

fn unreachable_replicas(error: &dyn std::fmt::Display) -> ExecError {
    ExecError::new(
        ExecErrorCode::AgentOffline,
        format!("this server cannot reach the other servers through NATS ({error}); try again"),
    )
}

fn holder_gone() -> ExecError {
    ExecError::new(
        ExecErrorCode::AgentDisconnected,
        "the server holding the agent stopped answering before the agent did; try again",
    )
}

/// The asking replica's side of one request.
pub(super) struct Call {
    link: Link,
    /// Where the holder's frames come: `replies` is subscribed to it.
    inbox: Subject,
    replies: Subscriber,
    /// Where `more`, `cancel` and `ping` go, once the holding replica said.
    control: Option<Subject>,
    pieces: Pieces,
    last_heard: Instant,
    keepalive: tokio::time::Interval,
    /// `rows` frames taken and not yet acknowledged.
    taken: u32,
    finished: bool,
}

impl Call {
    /// Sends `frame` to the agents' subject of a connection; `agent_offline`
    /// at once when no replica holds one.
    pub(super) async fn start(
        link: &Link,
        subject: Subject,
        frame: &Frame,
        headers: HeaderMap,
    ) -> Result<Call, ExecError> {
        if link.client.connection_state() != async_nats::connection::State::Connected {
            return Err(unreachable_replicas(&"not connected"));
        }
        let inbox = Subject::from(link.client.new_inbox());
        // Subscribed before the request goes out on the same connection, so
        // NATS has the subscription before any reply.
        let replies =
            link.client.subscribe(inbox.clone()).await.map_err(|e| unreachable_replicas(&e))?;
        link.send(subject, Some(inbox.clone()), frame, headers).await?;
        let mut keepalive = tokio::time::interval(link.heartbeat);
        keepalive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        keepalive.tick().await;
        Ok(Call {
            link: link.clone(),
            inbox,
            replies,
            control: None,
            pieces: Pieces::default(),
            last_heard: Instant::now(),
            keepalive,
            taken: 0,
            finished: false,
        })
    }

    /// The holding replica's next frame (its `pong`s only keep the call alive).
    pub(super) async fn next(&mut self) -> Result<Frame, ExecError> {
        loop {
            tokio::select! {
                message = self.replies.next() => {
                    let Some(message) = message else { return Err(holder_gone()) };
                    if message.status == Some(StatusCode::NO_RESPONDERS) {
                        // Before the holder took the request: no replica
                        // holds an agent. After: the holder's control
                        // subscription is gone, so is the holder.
                        return Err(match self.control {
                            None => super::super::local::offline(),
                            Some(_) => holder_gone(),
                        });
                    }
                    self.last_heard = Instant::now();
                    if let Some(control) = message.headers.as_ref().and_then(|h| h.get(CONTROL)) {
                        self.control = Some(Subject::from(control.as_str()));
                    }
                    match self.pieces.push(&message)? {
                        Some(Frame { message: Message::Pong, .. }) | None => {}
                        Some(frame) => return Ok(frame),
                    }
                }
                _ = self.keepalive.tick() => {
                    if self.last_heard.elapsed() > self.link.patience() {
                        return Err(holder_gone());
                    }
                    // Sent with this call's inbox as its reply subject: should
                    // the holder's process be gone, NATS answers "no
                    // responders" at once instead of the holder's silence
                    // taking three heartbeats to tell.
                    if let Some(control) = &self.control {
                        let ping = Frame::new("run", Message::Ping);
                        let inbox = Some(self.inbox.clone());
                        let _ = self.link.send(control.clone(), inbox, &ping, HeaderMap::new()).await;
                    }
                }
            }
        }
    }

    /// Counts a `rows` frame taken; every [`STEP`] lets the holder send more.
    pub(super) async fn took_rows(&mut self) {
        self.taken += 1;
        if self.taken >= STEP {
            let frames = std::mem::take(&mut self.taken);
            self.control(Message::More(More { target: "run".to_owned(), frames })).await;
        }
    }

    /// The request ended with its last frame: nothing to cancel.
    pub(super) fn finish(&mut self) {
        self.finished = true;
    }

    async fn control(&self, message: Message) {
        if let Some(control) = &self.control {
            // Lost on a broken connection: then the holder stops for want of pings.
            let _ = self
                .link
                .send(control.clone(), None, &Frame::new("run", message), HeaderMap::new())
                .await;
        }
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        // A caller that went away (or gave up) stops the query on the agent.
        if let Some(control) = self.control.take() {
            let link = self.link.clone();
            let frame = Frame::new("run", Message::Cancel(Cancel { target: "run".to_owned() }));
            tokio::spawn(async move {
                let _ = link.send(control, None, &frame, HeaderMap::new()).await;
            });
        }
    }
}

/// Runs `sql` on an agent a replica holds, through NATS.
pub(super) async fn run(
    link: &Link,
    subject: Subject,
    sql: &CheckedSql,
    limits: &RunLimits,
    grace: Duration,
    rows: RowSender,
) -> Result<RunSummary, ExecError> {
    // The holding replica gives up at the same deadline; this side waits for
    // its word a little longer, so the error it gives is the one shown.
    let patience = limits.timeout + grace.min(limits.timeout) + link.heartbeat;
    let deadline = Instant::now() + patience;
    let max_rows = sql.row_limit().map_or(limits.max_rows, |l| l.min(limits.max_rows));
    let run = Run {
        sql: sql.query().to_owned(),
        max_rows: if max_rows == u64::MAX { 0 } else { max_rows },
        timeout_ms: u64::try_from(limits.timeout.as_millis()).unwrap_or(u64::MAX),
    };
    let mut headers = HeaderMap::new();
    headers.insert(DIALECT, sql.dialect().as_str());
    headers.insert(MAX_BYTES, limits.max_bytes.to_string().as_str());
    let timed_out = || {
        ExecError::new(
            ExecErrorCode::Timeout,
            format!("the agent did not finish the query within {} s", patience.as_secs_f64()),
        )
    };
    let mut call = tokio::time::timeout_at(
        deadline.into(),
        Call::start(link, subject, &Frame::new("run", Message::Run(run)), headers),
    )
    .await
    .map_err(|_| timed_out())??;
    loop {
        let frame = tokio::time::timeout_at(deadline.into(), call.next())
            .await
            .map_err(|_| timed_out())??;
        let batch = match frame.message {
            Message::Columns(c) => {
                RowBatch::Columns(c.columns.into_iter().map(Into::into).collect())
            }
            Message::Rows(r) => RowBatch::Rows(r.rows),
            Message::Done(done) => {
                call.finish();
                return Ok(RunSummary::from(&done));
            }
            Message::Error(report) => {
                call.finish();
                return Err(ExecError::from(report));
            }
            other => {
                return Err(ExecError::new(
                    ExecErrorCode::Internal,
                    format!("a replica answered `run` with `{}`", other.type_name()),
                ));
            }
        };
        let is_rows = matches!(batch, RowBatch::Rows(_));
        if tokio::time::timeout_at(deadline.into(), rows.send(batch))
            .await
            .map_err(|_| timed_out())?
            .is_err()
        {
            return Err(ExecError::new(
                ExecErrorCode::ReceiverClosed,
                "the receiver of the rows went away",
            ));
        }
        if is_rows {
            call.took_rows().await;
        }
    }
}

/// Asks an agent a replica holds for its schema, through NATS.
pub(super) async fn discover(
    link: &Link,
    subject: Subject,
    sample_values: u32,
    wait: Duration,
) -> Result<Schema, ExecError> {
    let timed_out =
        || ExecError::new(ExecErrorCode::Timeout, "the agent did not report the schema in time");
    let frame = Frame::new("discover", Message::Discover(Discover { sample_values }));
    let reply = tokio::time::timeout(wait + link.heartbeat, async {
        let mut call = Call::start(link, subject, &frame, HeaderMap::new()).await?;
        let reply = call.next().await?;
        call.finish();
        Ok::<_, ExecError>(reply)
    })
    .await
    .map_err(|_| timed_out())??;
    match reply.message {
        Message::Schema(report) => report.into_schema().map_err(|e| {
            ExecError::new(ExecErrorCode::Internal, format!("the agent's schema is invalid: {e}"))
        }),
        Message::Error(report) => Err(ExecError::from(report)),
        other => Err(ExecError::new(
            ExecErrorCode::Internal,
            format!("a replica answered `discover` with `{}`", other.type_name()),
        )),
    }
}

/// The holding replica's side: serves one request for `connection` that
/// arrived on its agents' subject, on this replica's own sessions.
pub(super) async fn serve_request(
    link: Link,
    local: Arc<LocalHub>,
    connection: ConnectionId,
    request: async_nats::Message,
) {
    let Some(reply) = request.reply.clone() else {
        return;
    };
    let answer = |frame: Frame| {
        let (link, reply) = (link.clone(), reply.clone());
        async move {
            let _ = link.send(reply, None, &frame, HeaderMap::new()).await;
        }
    };
    let frame = match Pieces::default().push(&request) {
        Ok(Some(frame)) => frame,
        Ok(None) => {
            answer(error_frame(ExecErrorCode::Internal, "a request must fit in one message")).await;
            return;
        }
        Err(e) => {
            answer(error_frame(e.code, &e.message)).await;
            return;
        }
    };
    let control = Subject::from(link.client.new_inbox());
    let Ok(controls) = link.client.subscribe(control.clone()).await else {
        return;
    };
    let mut accepted = HeaderMap::new();
    accepted.insert(CONTROL, control.as_str());
    if link
        .send(reply.clone(), None, &Frame::new(frame.id.clone(), Message::Pong), accepted)
        .await
        .is_err()
    {
        return;
    }
    let headers = request.headers.unwrap_or_default();
    let result = match frame.message {
        Message::Run(run) => {
            let header = |name: &str| headers.get(name).map(|v| v.as_str().to_owned());
            match header(DIALECT).as_deref().and_then(|d| d.parse::<Dialect>().ok()) {
                Some(dialect) => {
                    let max_bytes = header(MAX_BYTES).and_then(|b| b.parse().ok());
                    let served =
                        Served { link: &link, reply: &reply, controls, id: frame.id.clone() };
                    served.run(&local, &connection, dialect, run, max_bytes).await
                }
                None => Err(ExecError::new(ExecErrorCode::Internal, "a `run` without its dialect")),
            }
        }
        Message::Discover(request) => {
            match local.discover(&connection, request.sample_values).await {
                Ok(schema) => {
                    let report =
                        Frame::new(frame.id.clone(), Message::Schema(SchemaReport::new(&schema)));
                    answer(report).await;
                    Ok(())
                }
                Err(e) => Err(e),
            }
        }
        other => Err(ExecError::new(
            ExecErrorCode::Internal,
            format!("a replica cannot ask for `{}`", other.type_name()),
        )),
    };
    if let Err(e) = result {
        answer(Frame::new(frame.id, Message::Error(ErrorReport::from(&e)))).await;
    }
}

fn error_frame(code: ExecErrorCode, message: &str) -> Frame {
    Frame::new("run", Message::Error(ErrorReport::new(code, message)))
}

/// A `run` being served for another replica.
struct Served<'a> {
    link: &'a Link,
    reply: &'a Subject,
    controls: Subscriber,
    id: String,
}

impl Served<'_> {
    /// Runs the query on a local session and relays its frames; `Ok` once the
    /// last frame (`done`) is sent, or when the asker went away.
    async fn run(
        mut self,
        local: &LocalHub,
        connection: &ConnectionId,
        dialect: Dialect,
        run: Run,
        max_bytes: Option<u64>,
    ) -> Result<(), ExecError> {
        // The asking replica's guard passed it; this replica checks it again
        // before any agent sees it (and the agent checks it once more).
        let guard = Guard::builder(dialect).unlimited_rows().build().map_err(|e| {
            ExecError::new(ExecErrorCode::Internal, format!("building the guard: {e}"))
        })?;
        let sql = guard
            .check(&run.sql)
            .map_err(|rejection| ExecError::from(ErrorReport::from(&rejection)))?;
        let defaults = RunLimits::default();
        let limits = RunLimits {
            timeout: Duration::from_millis(run.timeout_ms),
            // 0: the asker set no cap of its own (the agent keeps its own).
            max_rows: if run.max_rows == 0 { u64::MAX } else { run.max_rows },
            max_bytes: max_bytes.unwrap_or(defaults.max_bytes),
            ..defaults
        };
        let (rows, mut batches) = mpsc::channel(2);
        let running = local.run(connection, &sql, &limits, rows);
        tokio::pin!(running);
        let mut ended: Option<Result<RunSummary, ExecError>> = None;
        let mut credit = WINDOW;
        let mut batches_open = true;
        let mut last_heard = Instant::now();
        let mut heartbeat = tokio::time::interval(self.link.heartbeat);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        heartbeat.tick().await;
        loop {
            if let Some(Err(e)) = ended {
                return Err(e);
            }
            if let (Some(Ok(summary)), false) = (&ended, batches_open) {
                self.send(Message::Done(Done::from(summary))).await;
                return Ok(());
            }
            tokio::select! {
                result = &mut running, if ended.is_none() => ended = Some(result),
                batch = batches.recv(), if batches_open && credit > 0 => {
                    let Some(batch) = batch else {
                        batches_open = false;
                        continue;
                    };
                    let message = match batch {
                        RowBatch::Columns(columns) => Message::Columns(Columns {
                            columns: columns.iter().map(WireColumnMeta::from).collect(),
                        }),
                        RowBatch::Rows(rows) => {
                            credit -= 1;
                            Message::Rows(Rows { rows })
                        }
                    };
                    self.send(message).await;
                }
                control = self.controls.next() => {
                    let Some(control) = control else { return Ok(()) };
                    last_heard = Instant::now();
                    match Pieces::default().push(&control).map(|f| f.map(|f| f.message)) {
                        Ok(Some(Message::More(more))) => {
                            credit = credit.saturating_add(more.frames).min(WINDOW);
                        }
                        // Dropping the local run cancels the query on the agent.
                        Ok(Some(Message::Cancel(_))) => return Ok(()),
                        _ => {}
                    }
                }
                _ = heartbeat.tick() => {
                    if last_heard.elapsed() > self.link.patience() {
                        tracing::info!(connection = %connection, "the asking server went silent; cancelling its query");
                        return Ok(());
                    }
                    self.send(Message::Pong).await;
                }
            }
        }
    }

    async fn send(&mut self, message: Message) {
        let frame = Frame::new(self.id.clone(), message);
        let _ = self.link.send(self.reply.clone(), None, &frame, HeaderMap::new()).await;
    }
}

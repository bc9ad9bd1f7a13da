//! One request between replicas: the asking replica's side ([`Call`]) and the
//! holding replica's ([`serve_request`]).
//!
//! Frames are the agent protocol's own (`custard_core::wire`), so the relay
//! adds no format of its own: the asking replica sends `run` or `discover` to
//! the connection's subject with a reply inbox; the holding replica answers
//! like an agent would (`columns`, `rows`, `done`, `error`, `schema`), its
//! first message naming, in a header, the subject to send `more`, `cancel`
//! and `ping` to. Frames ready at the same time travel in one NATS message,
//! one per line (a small result is one message). Both sides tell each other
//! at least every heartbeat that they are still there (`ping` one way, `pong`
//! the other), so either notices within three heartbeats that the other is
//! gone; a `ping` also carries a reply inbox, so a holder whose process is
//! gone is "no responders" at once.
//!
//! Flow control is the agent protocol's too: the holding replica sends at most
//! [`WINDOW`] `rows` frames ahead of the asker's `more`; while the window is
//! shut it stops taking rows from its agent, whose own window then pauses the
//! query. A slow reader pauses its own query only.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
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
use futures_util::{FutureExt, StreamExt};
use tokio::sync::{Semaphore, mpsc};

use super::super::{AgentRouter, LocalHub};
use crate::store::ConnectionId;

/// `rows` frames the holding replica sends ahead of the asker's `more`.
pub(super) const WINDOW: u32 = 16;
/// The asker acknowledges taken frames in steps of this many.
const STEP: u32 = WINDOW / 2;
/// On every piece of a message but its last, when the message is bigger than
/// the NATS server takes in one.
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
    /// The longest a query relayed to this replica may run, whatever the
    /// asker says (the longest this replica's own questions and exports run).
    pub(super) max_timeout: Duration,
    /// Requests of other replicas this replica serves at once; beyond, it
    /// answers `agent_busy` at once.
    pub(super) serving: Arc<Semaphore>,
}

impl Link {
    /// How long a side may stay silent before the other gives up on it.
    fn patience(&self) -> Duration {
        self.heartbeat * 3
    }

    /// Publishes `frames` to `subject` as one message, one frame per line (in
    /// pieces when it is bigger than one NATS message), with `headers` on
    /// its first piece.
    async fn send(
        &self,
        subject: Subject,
        reply: Option<Subject>,
        frames: &[Frame],
        mut headers: HeaderMap,
    ) -> Result<(), ExecError> {
        let text = frames.iter().map(Frame::encode).collect::<Vec<_>>().join("\n");
        let piece = self.client.max_payload().saturating_sub(HEADER_ROOM).max(1024);
        let bytes = bytes::Bytes::from(text);
        let mut start = 0;
        loop {
            let end = (start + piece).min(bytes.len());
            let last = end == bytes.len();
            if !last {
                headers.insert(PIECE, "more");
            }
            let payload = bytes.slice(start..end);
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
            if last {
                return Ok(());
            }
            headers = HeaderMap::new();
            start = end;
        }
    }
}

/// Puts messages sent in pieces back together, and splits them into frames.
#[derive(Debug, Default)]
struct Pieces {
    buffer: Vec<u8>,
}

impl Pieces {
    /// The frames `message` completes (none while pieces are missing).
    fn push(&mut self, message: &async_nats::Message) -> Result<Vec<Frame>, ExecError> {
        let more = message.headers.as_ref().is_some_and(|h| h.get(PIECE).is_some());
        if self.buffer.len().saturating_add(message.payload.len()) > MAX_FRAME_BYTES {
            self.buffer.clear();
            return Err(ExecError::new(
                ExecErrorCode::Internal,
                "a replica sent a message bigger than the agent protocol's frames may be",
            ));
        }
        self.buffer.extend_from_slice(&message.payload);
        if more {
            return Ok(Vec::new());
        }
        let buffer = std::mem::take(&mut self.buffer);
        let text = String::from_utf8(buffer).map_err(|_| {
            ExecError::new(ExecErrorCode::Internal, "a replica sent a message that is not UTF-8")
        })?;
        // Compact JSON has no raw line break: one frame per line.
        text.split('\n')
            .map(|line| {
                Frame::decode(line).map_err(|e| {
                    ExecError::new(
                        ExecErrorCode::Internal,
                        format!("a replica sent a bad frame: {e}"),
                    )
                })
            })
            .collect()
    }
}

/// Ticks every `period`, the first time one period from now (not at once:
/// awaiting an interval's immediate first tick can cost a timer tick, about
/// a millisecond, on every request).
fn every(period: Duration) -> tokio::time::Interval {
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks
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

/// Where the holder of a call takes `more`, `cancel` and `ping`, once it said.
type Control = Arc<Mutex<Option<Subject>>>;

fn control_of(control: &Control) -> Option<Subject> {
    control.lock().unwrap_or_else(PoisonError::into_inner).clone()
}

/// The asking replica's side of one request.
pub(super) struct Call {
    link: Link,
    replies: Subscriber,
    control: Control,
    pieces: Pieces,
    /// Frames received and not yet taken.
    ready: VecDeque<Frame>,
    last_heard: Instant,
    /// When to check that the holder is still there.
    check: tokio::time::Interval,
    /// Pings the holder every heartbeat for as long as the call lives, even
    /// while its caller is slow to take what came.
    pinger: tokio::task::JoinHandle<()>,
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
        link.send(subject, Some(inbox.clone()), std::slice::from_ref(frame), headers).await?;
        let control = Control::default();
        let pinger = {
            let (link, control) = (link.clone(), Arc::clone(&control));
            tokio::spawn(async move {
                let ping = [Frame::new("run", Message::Ping)];
                loop {
                    tokio::time::sleep(link.heartbeat).await;
                    // With this call's inbox as its reply subject: should the
                    // holder's process be gone, NATS answers "no responders"
                    // at once, not three heartbeats of silence later.
                    if let Some(control) = control_of(&control) {
                        let inbox = Some(inbox.clone());
                        let _ = link.send(control, inbox, &ping, HeaderMap::new()).await;
                    }
                }
            })
        };
        let check = every(link.heartbeat);
        Ok(Call {
            link: link.clone(),
            replies,
            control,
            pieces: Pieces::default(),
            ready: VecDeque::new(),
            last_heard: Instant::now(),
            check,
            pinger,
            taken: 0,
            finished: false,
        })
    }

    /// The holding replica's next frame (its `pong`s only keep the call alive).
    pub(super) async fn next(&mut self) -> Result<Frame, ExecError> {
        loop {
            if let Some(frame) = self.ready.pop_front() {
                return Ok(frame);
            }
            tokio::select! {
                // What already came is read before silence is judged.
                biased;
                message = self.replies.next() => {
                    let Some(message) = message else { return Err(holder_gone()) };
                    let control = control_of(&self.control);
                    if message.status == Some(StatusCode::NO_RESPONDERS) {
                        // Before the holder took the request: no replica
                        // holds an agent. After: the holder's control
                        // subscription is gone, so is the holder.
                        return Err(match control {
                            None => super::super::local::offline(),
                            Some(_) => holder_gone(),
                        });
                    }
                    self.last_heard = Instant::now();
                    if control.is_none()
                        && let Some(subject) = message.headers.as_ref().and_then(|h| h.get(CONTROL))
                    {
                        *self.control.lock().unwrap_or_else(PoisonError::into_inner) =
                            Some(Subject::from(subject.as_str()));
                    }
                    let frames = self.pieces.push(&message)?;
                    self.ready.extend(frames.into_iter().filter(|f| f.message != Message::Pong));
                }
                _ = self.check.tick() => {
                    if self.last_heard.elapsed() > self.link.patience() {
                        return Err(holder_gone());
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
        if let Some(control) = control_of(&self.control) {
            // Lost on a broken connection: then the holder stops for want of pings.
            let frame = [Frame::new("run", message)];
            let _ = self.link.send(control, None, &frame, HeaderMap::new()).await;
        }
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        self.pinger.abort();
        if self.finished {
            return;
        }
        // A caller that went away (or gave up) stops the query on the agent.
        if let Some(control) = control_of(&self.control) {
            let link = self.link.clone();
            let frame = [Frame::new("run", Message::Cancel(Cancel { target: "run".to_owned() }))];
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
    // What the holder says it sent is not taken on its word: rows are
    // counted here, as they arrive.
    let started = Instant::now();
    let mut row_count = 0u64;
    loop {
        let frame = tokio::time::timeout_at(deadline.into(), call.next())
            .await
            .map_err(|_| timed_out())??;
        let batch = match frame.message {
            Message::Columns(c) => {
                RowBatch::Columns(c.columns.into_iter().map(Into::into).collect())
            }
            Message::Rows(r) => {
                let room = max_rows.saturating_sub(row_count);
                let mut kept = r.rows;
                let over = u64::try_from(kept.len()).unwrap_or(u64::MAX) > room;
                kept.truncate(usize::try_from(room).unwrap_or(usize::MAX));
                row_count += u64::try_from(kept.len()).unwrap_or(u64::MAX);
                if over {
                    // More than asked for: the rest is dropped, and dropping
                    // the call cancels the query.
                    let kept = RowBatch::Rows(kept);
                    let _ = tokio::time::timeout_at(deadline.into(), rows.send(kept)).await;
                    let elapsed = started.elapsed();
                    return Ok(RunSummary { row_count, truncated: true, bytes: 0, elapsed });
                }
                RowBatch::Rows(kept)
            }
            Message::Done(done) => {
                call.finish();
                let told = RunSummary::from(&done);
                return Ok(RunSummary { row_count, elapsed: started.elapsed(), ..told });
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
    let refuse = |code: ExecErrorCode, message: &str| {
        let (link, reply) = (link.clone(), reply.clone());
        let frame = [Frame::new("run", Message::Error(ErrorReport::new(code, message)))];
        async move {
            let _ = link.send(reply, None, &frame, HeaderMap::new()).await;
        }
    };
    let Ok(_serving) = Arc::clone(&link.serving).try_acquire_owned() else {
        let busy = "this server is relaying as many questions as it takes; try again shortly";
        refuse(ExecErrorCode::AgentBusy, busy).await;
        return;
    };
    let frame = match Pieces::default().push(&request).map(Vec::into_iter) {
        Ok(mut frames) => match (frames.next(), frames.next()) {
            (Some(frame), None) => frame,
            _ => {
                refuse(ExecErrorCode::Internal, "a request is one frame, in one message").await;
                return;
            }
        },
        Err(e) => {
            refuse(e.code, &e.message).await;
            return;
        }
    };
    let control = Subject::from(link.client.new_inbox());
    let Ok(controls) = link.client.subscribe(control.clone()).await else {
        return;
    };
    let heartbeat = every(link.heartbeat);
    let mut served = Served {
        link: &link,
        reply,
        control: Some(control),
        controls,
        id: frame.id.clone(),
        last_heard: Instant::now(),
        heartbeat,
    };
    let headers = request.headers.unwrap_or_default();
    let result = match frame.message {
        Message::Run(run) => {
            let header = |name: &str| headers.get(name).map(|v| v.as_str().to_owned());
            match header(DIALECT).as_deref().and_then(|d| d.parse::<Dialect>().ok()) {
                Some(dialect) => {
                    let max_bytes = header(MAX_BYTES).and_then(|b| b.parse().ok());
                    served.run(&local, &connection, dialect, run, max_bytes).await
                }
                None => Err(ExecError::new(ExecErrorCode::Internal, "a `run` without its dialect")),
            }
        }
        Message::Discover(request) => {
            served.discover(&local, &connection, request.sample_values).await
        }
        other => Err(ExecError::new(
            ExecErrorCode::Internal,
            format!("a replica cannot ask for `{}`", other.type_name()),
        )),
    };
    if let Err(e) = result {
        served.send(vec![Message::Error(ErrorReport::from(&e))]).await;
    }
}

/// A request being served for another replica.
struct Served<'a> {
    link: &'a Link,
    reply: Subject,
    /// Named in the header of the first message, then `None`.
    control: Option<Subject>,
    controls: Subscriber,
    id: String,
    /// When the asker was last heard from.
    last_heard: Instant,
    heartbeat: tokio::time::Interval,
}

/// What a message from the asker says.
enum Heard {
    /// `more` frames may go.
    More(u32),
    /// Stop: the asker cancelled, or went away.
    Stop,
    /// A `ping`, or nothing this side understands.
    Alive,
}

impl Served<'_> {
    /// Runs the query on a local session and relays its frames; `Ok` once the
    /// last frame (`done`) is sent, or when the asker went away.
    async fn run(
        &mut self,
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
            timeout: Duration::from_millis(run.timeout_ms).min(self.link.max_timeout),
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
        let mut outgoing = Vec::new();
        loop {
            // What is ready now goes out in one message.
            if ended.is_none() {
                ended = running.as_mut().now_or_never();
            }
            while batches_open && credit > 0 {
                match batches.try_recv() {
                    Ok(batch) => outgoing.push(frame_of(batch, &mut credit)),
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => batches_open = false,
                }
            }
            match ended.take() {
                Some(Err(e)) => return Err(e),
                Some(Ok(summary)) if !batches_open => {
                    outgoing.push(Message::Done(Done::from(&summary)));
                    self.send(outgoing).await;
                    return Ok(());
                }
                still => ended = still,
            }
            if !outgoing.is_empty() {
                self.send(std::mem::take(&mut outgoing)).await;
            }
            tokio::select! {
                result = &mut running, if ended.is_none() => ended = Some(result),
                batch = batches.recv(), if batches_open && credit > 0 => match batch {
                    Some(batch) => outgoing.push(frame_of(batch, &mut credit)),
                    None => batches_open = false,
                },
                // Dropping the local run cancels the query on the agent.
                heard = hear(&mut self.controls, &mut self.last_heard) => match heard {
                    Heard::More(frames) => credit = credit.saturating_add(frames).min(WINDOW),
                    Heard::Stop => return Ok(()),
                    Heard::Alive => {}
                },
                _ = self.heartbeat.tick() => {
                    if !self.still_asked(connection) {
                        return Ok(());
                    }
                    self.send(vec![Message::Pong]).await;
                }
            }
        }
    }

    /// Asks a local session for the schema, telling the asker meanwhile
    /// that this replica is still there.
    async fn discover(
        &mut self,
        local: &LocalHub,
        connection: &ConnectionId,
        sample_values: u32,
    ) -> Result<(), ExecError> {
        let discovering = local.discover(connection, sample_values);
        tokio::pin!(discovering);
        loop {
            tokio::select! {
                schema = &mut discovering => {
                    self.send(vec![Message::Schema(SchemaReport::new(&schema?))]).await;
                    return Ok(());
                }
                heard = hear(&mut self.controls, &mut self.last_heard) => if let Heard::Stop = heard {
                    return Ok(());
                },
                _ = self.heartbeat.tick() => {
                    if !self.still_asked(connection) {
                        return Ok(());
                    }
                    self.send(vec![Message::Pong]).await;
                }
            }
        }
    }

    /// Whether the asker was heard from lately.
    fn still_asked(&self, connection: &ConnectionId) -> bool {
        let alive = self.last_heard.elapsed() <= self.link.patience();
        if !alive {
            tracing::info!(connection = %connection, "the asking server went silent; cancelling its request");
        }
        alive
    }

    /// Sends `messages` to the asker in one message (the first naming the
    /// control subject).
    async fn send(&mut self, messages: Vec<Message>) {
        let frames: Vec<Frame> =
            messages.into_iter().map(|m| Frame::new(self.id.clone(), m)).collect();
        let mut headers = HeaderMap::new();
        if let Some(control) = self.control.take() {
            headers.insert(CONTROL, control.as_str());
        }
        let _ = self.link.send(self.reply.clone(), None, &frames, headers).await;
    }
}

/// The asker's next message on `controls`, noting when it came.
async fn hear(controls: &mut Subscriber, last_heard: &mut Instant) -> Heard {
    let Some(message) = controls.next().await else {
        return Heard::Stop;
    };
    *last_heard = Instant::now();
    match Pieces::default().push(&message).as_deref() {
        Ok([Frame { message: Message::More(more), .. }]) => Heard::More(more.frames),
        Ok([Frame { message: Message::Cancel(_), .. }]) => Heard::Stop,
        _ => Heard::Alive,
    }
}

/// The frame of `batch`; a `rows` frame uses up one of `credit`.
fn frame_of(batch: RowBatch, credit: &mut u32) -> Message {
    match batch {
        RowBatch::Columns(columns) => Message::Columns(Columns {
            columns: columns.iter().map(WireColumnMeta::from).collect(),
        }),
        RowBatch::Rows(rows) => {
            *credit -= 1;
            Message::Rows(Rows { rows })
        }
    }
}

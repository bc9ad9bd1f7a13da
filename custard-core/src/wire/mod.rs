//! The versioned messages between agent and server (JSON text frames).
//!
//! Every frame is one JSON object: the protocol version `v`, the message `type`,
//! the frame `id`, and the message's payload fields next to them:
//!
//! ```json
//! {"v":1,"type":"run","id":"q-7","sql":"SELECT 1","max_rows":100,"timeout_ms":30000}
//! ```
//!
//! | type | direction | payload | reply |
//! |---|---|---|---|
//! | `hello` | agent -> server | [`Hello`] | `welcome` |
//! | `welcome` | server -> agent | [`Welcome`] | |
//! | `discover` | server -> agent | [`Discover`] | `schema` or `error` |
//! | `schema` | agent -> server | [`SchemaReport`] | |
//! | `run` | server -> agent | [`Run`] | `columns`, `rows`..., `done`; or `error` |
//! | `columns` | agent -> server | [`Columns`] | |
//! | `rows` | agent -> server | [`Rows`] | |
//! | `done` | agent -> server | [`Done`] | |
//! | `cancel` | server -> agent | [`Cancel`] | |
//! | `flow` | server -> agent | [`Flow`] | |
//! | `more` | server -> agent | [`More`] | |
//! | `error` | agent -> server | [`ErrorReport`] | |
//! | `ping` | server -> agent | none | `pong` |
//! | `pong` | agent -> server | none | |
//!
//! Ids are opaque strings chosen by the side that sends a request; **every reply
//! carries the id of its request** (all the `columns`, `rows` and `done` frames of a
//! result carry the id of their `run`), which is how the server correlates them.
//! [`Frame::reply`] builds such a frame. A `cancel` has its own id and names the
//! `run` to stop in [`Cancel::target`]. An `error` may come at any point of a
//! reply, before its `columns` too: the Custard agent sends `columns` with the
//! first `rows` (or `done`), or on its own when they take more than a few
//! milliseconds, so a run that fails early is answered with its `error` alone.
//!
//! Flow control: an agent that lists the `flow` capability in `hello` may get
//! a `flow` frame right after `welcome` (and before any request). From then on
//! it sends at most [`Flow::window`] `rows` frames of each `run` beyond those
//! the server has acknowledged with `more` ([`More::frames`] for the `run` named
//! in [`More::target`]). So a caller that reads one result slowly pauses that
//! query alone, and the server keeps reading the socket for every other
//! request. Without a `flow` frame the agent sends rows as fast as it can.
//!
//! Closing: a server that shuts down closes its agents' sockets with close
//! code 1012 ("service restart") once the requests they run are done; an
//! agent connects again at once (another server may answer at the same
//! address), unless the session was younger than a stable one (a minute),
//! when it backs off as after a lost connection. A session closed with 1008 ("policy") was
//! ended by the server for a reason in the close frame (a rotated key, a
//! deleted connection).
//!
//! Decoding is defensive: the size cap is checked before parsing, a wrong `v` is
//! [`WireError::UnsupportedVersion`], an unknown `type` is [`WireError::UnknownType`]
//! (carrying the id when it could be read, so the peer can answer with an `error`
//! frame), and no input makes it panic. Unknown fields are ignored, so adding an
//! optional field does not need a new protocol version; changing a meaning does.
//!
//! An `error` frame's `code` is a name from the shared vocabulary of
//! [`Code`] (`docs/errors.md`), typed as [`ReportCode`]: the
//! executor's codes, the guard's, and the protocol's own ([`WireErrorCode`]).
//! A code this build does not know still decodes (as [`ReportCode::Unknown`]),
//! and names from before the shared vocabulary decode to the code they became
//! (`busy` is `agent_busy`, `rejected` is `query_rejected`), so version 1 peers
//! of either age understand each other.
//!
//! These are the only serde types in the crate: the domain types ([`Schema`] and
//! friends) stay plain Rust and convert explicitly, e.g. [`WireSchema`].
//!
//! ```
//! use custard_core::wire::{Frame, Message, Run};
//!
//! let run = Frame::new("q-7", Message::Run(Run {
//!     sql: "SELECT 1".into(),
//!     max_rows: 100,
//!     timeout_ms: 30_000,
//! }));
//! let text = run.encode();
//! assert_eq!(Frame::decode(&text)?, run);
//! # Ok::<(), custard_core::wire::WireError>(())
//! ```

#[cfg(any(feature = "postgres", feature = "sqlite"))]
mod exec;
mod schema;

use std::fmt;
use std::marker::PhantomData;

use serde::de::value::MapAccessDeserializer;
use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use crate::codes::codes;
use crate::{Code, Dialect, Rejection, Schema};

pub use schema::{
    WireColumn, WireForeignKey, WireSchema, WireTable, schema_from_json, schema_to_json,
};

/// The protocol version this build speaks; sent as `v` in every frame.
pub const PROTOCOL_VERSION: u32 = 1;

/// The largest frame [`Frame::decode`] accepts, in bytes (16 MiB).
///
/// Senders keep their `rows` chunks well below it.
pub const MAX_FRAME_BYTES: usize = 16 * 1024 * 1024;

/// Longest excerpt of peer-supplied text (a type name, a parser message) kept in
/// a [`WireError`], so that errors echoed back in `error` frames stay small.
const MAX_ECHO_CHARS: usize = 200;

codes! {
    /// The wire protocol's own codes, in `error` frames either side sends:
    /// why a frame, or a whole session, was refused.
    pub enum WireErrorCode {
        /// A frame longer than the size cap; it was not parsed.
        TooLarge => "frame_too_large",
        /// Not a valid frame: not JSON, not an object, a missing or mistyped field.
        Malformed => "malformed_frame",
        /// A frame of a protocol version this side does not speak.
        UnsupportedVersion => "unsupported_version",
        /// A frame of a message type this side does not know.
        UnknownType => "unknown_message_type",
        /// A schema that is not a valid schema, or does not match its fingerprint.
        InvalidSchema => "invalid_schema",
        /// A message this side does not take from its peer, or not now (a
        /// second `hello`, a first frame that is not `hello`).
        UnexpectedMessage => "unexpected_message",
        /// A frame id longer than the agent accepts.
        InvalidId => "invalid_id",
        /// A request under the id of a request still in flight.
        DuplicateRequest => "duplicate_request",
        /// The agent's database is not of its connection's dialect.
        DialectMismatch => "dialect_mismatch",
        /// The connection has as many agents as the server accepts.
        TooManyAgents => "too_many_agents",
        /// The agent's API key is not (or no longer) the connection's key.
        Unauthorized => "unauthorized",
    }
}

/// Why a frame or a schema could not be decoded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// The frame is longer than the limit; it was not parsed.
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// The frame's length in bytes.
        len: usize,
        /// The limit it exceeded.
        max: usize,
    },
    /// The text is not a valid frame: not JSON, not an object, a missing or
    /// mistyped field. The message says what and where.
    #[error("malformed frame: {0}")]
    Malformed(String),
    /// The frame's `v` is not [`PROTOCOL_VERSION`].
    #[error("unsupported protocol version {0} (this side speaks version {PROTOCOL_VERSION})")]
    UnsupportedVersion(u32),
    /// The frame's `type` is not a message this side knows.
    #[error("unknown message type `{type_name}`")]
    UnknownType {
        /// The type as sent (shortened when very long).
        type_name: String,
        /// The frame's id, when it could be read; answer it with an `error` frame.
        id: Option<String>,
    },
    /// A schema that is valid JSON but not a valid [`Schema`]: an unknown dialect
    /// or table kind, or a fingerprint that does not match.
    #[error("invalid schema: {0}")]
    InvalidSchema(String),
}

impl WireError {
    /// The code of this error, for `error` frames.
    pub fn error_code(&self) -> WireErrorCode {
        match self {
            WireError::TooLarge { .. } => WireErrorCode::TooLarge,
            WireError::Malformed(_) => WireErrorCode::Malformed,
            WireError::UnsupportedVersion(_) => WireErrorCode::UnsupportedVersion,
            WireError::UnknownType { .. } => WireErrorCode::UnknownType,
            WireError::InvalidSchema(_) => WireErrorCode::InvalidSchema,
        }
    }

    /// The stable name of [`WireError::error_code`].
    pub fn code(&self) -> &'static str {
        self.error_code().as_str()
    }

    /// The id of the frame that failed, when it is known; the peer should get an
    /// `error` frame with this id.
    pub fn id(&self) -> Option<&str> {
        match self {
            WireError::UnknownType { id, .. } => id.as_deref(),
            _ => None,
        }
    }

    fn malformed(context: &str, err: impl fmt::Display) -> Self {
        WireError::Malformed(shorten(format!("{context}: {err}")))
    }
}

/// Which side of the connection sends a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Origin {
    /// The connector agent, inside the customer's network.
    Agent,
    /// The Custard server.
    Server,
}

/// One frame: an id and a message. The version is implied: [`Frame::encode`]
/// always writes [`PROTOCOL_VERSION`] and [`Frame::decode`] accepts nothing else.
#[derive(Clone, Debug, PartialEq)]
pub struct Frame {
    /// The request's id, or for a reply the id of the request it answers.
    pub id: String,
    /// What the frame says.
    pub message: Message,
}

/// Every message of the protocol, by its `type`.
#[derive(Clone, Debug, PartialEq)]
pub enum Message {
    /// `hello`: the agent's first frame after connecting.
    Hello(Hello),
    /// `schema`: the agent's reply to `discover`.
    Schema(SchemaReport),
    /// `columns`: the first frame of a result, replying to `run`.
    Columns(Columns),
    /// `rows`: a chunk of a result, after `columns`.
    Rows(Rows),
    /// `done`: the last frame of a successful result.
    Done(Done),
    /// `error`: a request failed (or a frame could not be understood).
    Error(ErrorReport),
    /// `pong`: the agent's reply to `ping`.
    Pong,
    /// `welcome`: the server's reply to `hello`.
    Welcome(Welcome),
    /// `discover`: asks the agent to read the database's schema.
    Discover(Discover),
    /// `run`: asks the agent to run one query.
    Run(Run),
    /// `cancel`: asks the agent to stop a `run`.
    Cancel(Cancel),
    /// `flow`: turns on flow control for the session's results.
    Flow(Flow),
    /// `more`: lets the agent send more `rows` frames of one `run`.
    More(More),
    /// `ping`: a heartbeat; the agent answers with `pong`.
    Ping,
}

impl Message {
    /// The `type` of this message on the wire.
    pub fn type_name(&self) -> &'static str {
        match self {
            Message::Hello(_) => "hello",
            Message::Schema(_) => "schema",
            Message::Columns(_) => "columns",
            Message::Rows(_) => "rows",
            Message::Done(_) => "done",
            Message::Error(_) => "error",
            Message::Pong => "pong",
            Message::Welcome(_) => "welcome",
            Message::Discover(_) => "discover",
            Message::Run(_) => "run",
            Message::Cancel(_) => "cancel",
            Message::Flow(_) => "flow",
            Message::More(_) => "more",
            Message::Ping => "ping",
        }
    }

    /// Which side sends this message; a peer should refuse messages of its own side.
    pub fn origin(&self) -> Origin {
        match self {
            Message::Hello(_)
            | Message::Schema(_)
            | Message::Columns(_)
            | Message::Rows(_)
            | Message::Done(_)
            | Message::Error(_)
            | Message::Pong => Origin::Agent,
            Message::Welcome(_)
            | Message::Discover(_)
            | Message::Run(_)
            | Message::Cancel(_)
            | Message::Flow(_)
            | Message::More(_)
            | Message::Ping => Origin::Server,
        }
    }
}

/// `hello`: who the agent is and what it can do.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// The agent's version (`CARGO_PKG_VERSION`).
    pub agent_version: String,
    /// The database's dialect: `postgres` or `sqlite`; see [`Hello::dialect`].
    pub dialect: String,
    /// Optional features the agent supports, by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub capabilities: Vec<String>,
    /// The fingerprint of the schema the agent last discovered, so the server
    /// can skip `discover` when it already holds that schema.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema_fingerprint: Option<String>,
    /// How many queries the agent runs at once.
    pub max_concurrency: u32,
}

impl Hello {
    /// The dialect, when it is one Custard knows (spelled exactly as
    /// [`Dialect::as_str`] prints it).
    pub fn dialect(&self) -> Option<Dialect> {
        parse_dialect(&self.dialect)
    }
}

/// `schema`: the discovered schema and its fingerprint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SchemaReport {
    /// [`Schema::fingerprint`] of the schema.
    pub fingerprint: String,
    /// The schema itself.
    pub schema: WireSchema,
}

impl SchemaReport {
    /// The report for a schema, with its fingerprint.
    pub fn new(schema: &Schema) -> Self {
        SchemaReport { fingerprint: schema.fingerprint(), schema: WireSchema::from(schema) }
    }

    /// Converts the schema back and checks that it hashes to the reported
    /// fingerprint.
    ///
    /// ```
    /// use custard_core::wire::SchemaReport;
    /// use custard_core::{Dialect, Schema};
    ///
    /// let schema = Schema::new(Dialect::Sqlite);
    /// assert_eq!(SchemaReport::new(&schema).into_schema()?, schema);
    /// # Ok::<(), custard_core::wire::WireError>(())
    /// ```
    pub fn into_schema(self) -> Result<Schema, WireError> {
        let schema = Schema::try_from(self.schema)?;
        let actual = schema.fingerprint();
        if actual != self.fingerprint {
            return Err(WireError::InvalidSchema(shorten(format!(
                "fingerprint mismatch: the frame says {} but the schema hashes to {actual}",
                self.fingerprint
            ))));
        }
        Ok(schema)
    }
}

/// Name and database type of one result column.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireColumnMeta {
    /// The column's name in the result.
    pub name: String,
    /// The database's name for its type (`int4`, `numeric`, `text`, ...).
    pub type_name: String,
}

/// `columns`: the result's columns; the first frame replying to a `run`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Columns {
    /// The columns, in result order.
    pub columns: Vec<WireColumnMeta>,
}

/// `rows`: a chunk of result rows, each a JSON value per column.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Rows {
    /// The rows, in result order.
    pub rows: Vec<Vec<Value>>,
}

/// `done`: how a result ended; the last frame replying to a `run`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Done {
    /// Rows sent in all `rows` frames.
    pub row_count: u64,
    /// Whether rows were left out because a row or byte cap was reached.
    pub truncated: bool,
    /// Wall time of the run, in milliseconds.
    pub elapsed_ms: u64,
    /// Approximate JSON bytes of the rows sent.
    pub bytes: u64,
}

/// `error`: a request failed, or a frame could not be understood.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorReport {
    /// What failed, from the shared vocabulary (`docs/errors.md`): an
    /// executor's code (`query_timeout`), the guard's (`not_a_query`) or the
    /// protocol's (`unknown_message_type`).
    pub code: ReportCode,
    /// A human-readable explanation; never contains credentials.
    pub message: String,
    /// The database's own error code (PostgreSQL SQLSTATE), when it gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sqlstate: Option<String>,
}

impl ErrorReport {
    /// A report with a code and a message and no SQLSTATE.
    ///
    /// ```
    /// use custard_core::ExecErrorCode;
    /// use custard_core::wire::ErrorReport;
    ///
    /// let report = ErrorReport::new(ExecErrorCode::AgentBusy, "try again shortly");
    /// assert_eq!(report.code, "agent_busy");
    /// ```
    pub fn new(code: impl Into<ReportCode>, message: impl Into<String>) -> Self {
        ErrorReport { code: code.into(), message: message.into(), sqlstate: None }
    }
}

impl From<&WireError> for ErrorReport {
    fn from(err: &WireError) -> Self {
        ErrorReport::new(err.error_code(), err.to_string())
    }
}

impl From<&Rejection> for ErrorReport {
    fn from(rejection: &Rejection) -> Self {
        ErrorReport::new(rejection.code, rejection.message.clone())
    }
}

/// The code of an `error` frame: a [`Code`] of the shared vocabulary, or a
/// code this build does not know (a newer peer's), kept as it was sent, so a
/// new code never makes a frame undecodable.
///
/// On the wire it is the code's name; older names decode to the code they
/// became (`busy` is [`ExecErrorCode::AgentBusy`](crate::ExecErrorCode::AgentBusy)).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ReportCode {
    /// A code of the shared vocabulary.
    Known(Code),
    /// A code this build does not know, as sent.
    Unknown(String),
}

impl ReportCode {
    /// The code's name, as it goes on the wire.
    pub fn as_str(&self) -> &str {
        match self {
            ReportCode::Known(code) => code.as_str(),
            ReportCode::Unknown(name) => name,
        }
    }

    /// The code, when this build knows it.
    pub fn known(&self) -> Option<Code> {
        match self {
            ReportCode::Known(code) => Some(*code),
            ReportCode::Unknown(_) => None,
        }
    }
}

/// `From` each family of codes (and [`Code`]) for [`ReportCode`].
macro_rules! report_code_from {
    ($($set:ty),+) => {
        $(
            impl From<$set> for ReportCode {
                fn from(code: $set) -> Self {
                    ReportCode::Known(code.into())
                }
            }
        )+
    };
}

report_code_from!(
    Code,
    crate::InputErrorCode,
    crate::RejectionCode,
    crate::ExecErrorCode,
    crate::llm::LlmErrorCode,
    crate::AskErrorCode,
    WireErrorCode
);

impl From<&str> for ReportCode {
    /// The code with this name, or an unknown one.
    fn from(name: &str) -> Self {
        Code::parse(name).map_or_else(|| ReportCode::Unknown(name.to_owned()), ReportCode::Known)
    }
}

impl From<String> for ReportCode {
    /// The code with this name, or an unknown one.
    fn from(name: String) -> Self {
        Code::parse(&name).map_or(ReportCode::Unknown(name), ReportCode::Known)
    }
}

impl fmt::Display for ReportCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<Code> for ReportCode {
    fn eq(&self, other: &Code) -> bool {
        self.known() == Some(*other)
    }
}

impl PartialEq<str> for ReportCode {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for ReportCode {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl Serialize for ReportCode {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ReportCode {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(ReportCode::from)
    }
}

/// Bounds the server sets for every query of this agent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireLimits {
    /// Most rows one result may hold.
    pub max_rows: u64,
    /// Most JSON bytes of rows one result may hold.
    pub max_bytes: u64,
    /// Longest a query may run, in milliseconds.
    pub timeout_ms: u64,
    /// Most queries in flight at once.
    pub max_concurrency: u32,
}

/// `welcome`: the server accepted the agent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    /// The id of the database connection this agent serves.
    pub connection_id: String,
    /// How often the server pings, in milliseconds.
    pub heartbeat_interval_ms: u64,
    /// Bounds for every query.
    pub limits: WireLimits,
}

/// `discover`: read the schema and reply with `schema`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Discover {
    /// Up to this many frequent values per text column (0 for none).
    pub sample_values: u32,
}

/// `run`: run one query and stream the result back.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Run {
    /// The query that passed the server's guard, as [`CheckedSql::query`]
    /// prints it: without a row-limit wrapper. The agent checks it again with
    /// its own guard and wraps it once, in `max_rows` (within its own cap).
    ///
    /// Older servers sent it wrapped ([`CheckedSql::sql`]); an agent's guard
    /// still recognises that wrapper and checks the query inside, and an older
    /// agent given a plain query still caps it at `max_rows` as it sends rows,
    /// so either side may be the older one.
    ///
    /// [`CheckedSql::query`]: crate::CheckedSql::query
    /// [`CheckedSql::sql`]: crate::CheckedSql::sql
    pub sql: String,
    /// Most rows to send (0: the agent's own cap).
    pub max_rows: u64,
    /// Cancel the query after this many milliseconds.
    pub timeout_ms: u64,
}

/// `cancel`: stop a `run` that is still going.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cancel {
    /// The id of the `run` frame to stop.
    pub target: String,
}

/// `flow`: from now on, each `run` may have at most `window` `rows` frames
/// sent and not yet acknowledged with `more`. Sent once, after `welcome`, to
/// agents with the `flow` capability.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Flow {
    /// `rows` frames of one `run` the agent may send ahead (at least 1).
    pub window: u32,
}

/// `more`: the server took `frames` more `rows` frames of the `run` named
/// `target`; the agent may send that many more.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct More {
    /// The id of the `run` frame.
    pub target: String,
    /// How many more `rows` frames the agent may send.
    pub frames: u32,
}

impl Frame {
    /// A frame with an id and a message.
    pub fn new(id: impl Into<String>, message: Message) -> Self {
        Frame { id: id.into(), message }
    }

    /// A reply to this frame: the same id, another message.
    ///
    /// ```
    /// use custard_core::wire::{Frame, Message};
    ///
    /// let ping = Frame::new("hb-1", Message::Ping);
    /// assert_eq!(ping.reply(Message::Pong).id, "hb-1");
    /// ```
    pub fn reply(&self, message: Message) -> Frame {
        Frame { id: self.id.clone(), message }
    }

    /// The frame as one line of compact JSON.
    pub fn encode(&self) -> String {
        match &self.message {
            Message::Hello(p) => self.encode_with(p),
            Message::Schema(p) => self.encode_with(p),
            Message::Columns(p) => self.encode_with(p),
            Message::Rows(p) => self.encode_with(p),
            Message::Done(p) => self.encode_with(p),
            Message::Error(p) => self.encode_with(p),
            Message::Welcome(p) => self.encode_with(p),
            Message::Discover(p) => self.encode_with(p),
            Message::Run(p) => self.encode_with(p),
            Message::Cancel(p) => self.encode_with(p),
            Message::Flow(p) => self.encode_with(p),
            Message::More(p) => self.encode_with(p),
            Message::Pong | Message::Ping => self.encode_with(&Empty {}),
        }
    }

    fn encode_with<P: Serialize>(&self, payload: &P) -> String {
        let envelope =
            Envelope { v: PROTOCOL_VERSION, kind: self.message.type_name(), id: &self.id, payload };
        match serde_json::to_string(&envelope) {
            Ok(text) => text,
            // Unreachable: wire types hold only strings, numbers, booleans, lists
            // and JSON values, which always serialize. Still, never panic here.
            Err(err) => format!(
                r#"{{"v":{PROTOCOL_VERSION},"type":"error","id":{},"code":"internal","message":{}}}"#,
                Value::from(self.id.as_str()),
                Value::from(format!("frame failed to encode: {err}")),
            ),
        }
    }

    /// Decodes one frame of at most [`MAX_FRAME_BYTES`].
    ///
    /// ```
    /// use custard_core::wire::{Frame, Message, WireError};
    ///
    /// let frame = Frame::decode(r#"{"v":1,"type":"ping","id":"hb-1"}"#)?;
    /// assert_eq!(frame, Frame::new("hb-1", Message::Ping));
    ///
    /// let err = Frame::decode(r#"{"v":1,"type":"shout","id":"x"}"#).unwrap_err();
    /// assert_eq!(err.code(), "unknown_message_type");
    /// assert_eq!(err.id(), Some("x"));
    /// # Ok::<(), WireError>(())
    /// ```
    pub fn decode(text: &str) -> Result<Frame, WireError> {
        Frame::decode_with_limit(text, MAX_FRAME_BYTES)
    }

    /// Decodes one frame of at most `max_bytes`; longer text is refused unparsed.
    pub fn decode_with_limit(text: &str, max_bytes: usize) -> Result<Frame, WireError> {
        if text.len() > max_bytes {
            return Err(WireError::TooLarge { len: text.len(), max: max_bytes });
        }
        // First pass: the envelope only; the payload is skipped without building it.
        let header: Header =
            parse_object(text).map_err(|err| WireError::malformed("invalid frame", err))?;
        match header.v {
            None => return Err(WireError::Malformed("missing field `v`".into())),
            Some(PROTOCOL_VERSION) => {}
            Some(v) => return Err(WireError::UnsupportedVersion(v)),
        }
        let Some(kind) = header.kind else {
            return Err(WireError::Malformed("missing field `type`".into()));
        };
        // Second pass: the payload, straight into its type; the envelope's own
        // fields are ignored like any unknown field.
        let message = match kind.as_str() {
            "hello" => Message::Hello(payload(text, &kind)?),
            "schema" => Message::Schema(payload(text, &kind)?),
            "columns" => Message::Columns(payload(text, &kind)?),
            "rows" => Message::Rows(payload(text, &kind)?),
            "done" => Message::Done(payload(text, &kind)?),
            "error" => Message::Error(payload(text, &kind)?),
            "pong" => Message::Pong,
            "welcome" => Message::Welcome(payload(text, &kind)?),
            "discover" => Message::Discover(payload(text, &kind)?),
            "run" => Message::Run(payload(text, &kind)?),
            "cancel" => Message::Cancel(payload(text, &kind)?),
            "flow" => Message::Flow(payload(text, &kind)?),
            "more" => Message::More(payload(text, &kind)?),
            "ping" => Message::Ping,
            _ => return Err(WireError::UnknownType { type_name: shorten(kind), id: header.id }),
        };
        let Some(id) = header.id else {
            return Err(WireError::Malformed(format!("`{kind}` frame without an `id`")));
        };
        Ok(Frame { id, message })
    }
}

/// What a frame looks like on the wire, minus the payload's own fields.
#[derive(Serialize)]
struct Envelope<'a, P> {
    v: u32,
    #[serde(rename = "type")]
    kind: &'static str,
    id: &'a str,
    #[serde(flatten)]
    payload: &'a P,
}

/// The payload of `ping` and `pong`.
#[derive(Serialize)]
struct Empty {}

/// The envelope fields, read before the payload so that errors can be precise.
#[derive(Deserialize)]
struct Header {
    v: Option<u32>,
    #[serde(rename = "type")]
    kind: Option<String>,
    id: Option<String>,
}

fn payload<'de, T: Deserialize<'de>>(text: &'de str, kind: &str) -> Result<T, WireError> {
    parse_object(text).map_err(|err| WireError::malformed(&format!("invalid `{kind}` frame"), err))
}

/// Parses `text` as `T`, accepting only a JSON object (a serde struct would also
/// take an array), with serde_json's recursion limit left on.
fn parse_object<'de, T: Deserialize<'de>>(text: &'de str) -> Result<T, serde_json::Error> {
    struct ObjectOnly<T>(T);

    impl<'de, T: Deserialize<'de>> Deserialize<'de> for ObjectOnly<T> {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            deserializer.deserialize_map(ObjectVisitor(PhantomData)).map(ObjectOnly)
        }
    }

    struct ObjectVisitor<T>(PhantomData<T>);

    impl<'de, T: Deserialize<'de>> Visitor<'de> for ObjectVisitor<T> {
        type Value = T;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a JSON object")
        }

        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
            T::deserialize(MapAccessDeserializer::new(map))
        }
    }

    serde_json::from_str::<ObjectOnly<T>>(text).map(|object| object.0)
}

/// The dialect spelled exactly as [`Dialect::as_str`] prints it (no aliases).
fn parse_dialect(name: &str) -> Option<Dialect> {
    name.parse::<Dialect>().ok().filter(|dialect| dialect.as_str() == name)
}

/// Cuts peer-supplied text to [`MAX_ECHO_CHARS`] characters.
fn shorten(text: String) -> String {
    crate::text::truncate(&text, MAX_ECHO_CHARS)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn samples() -> Vec<Message> {
        let limits = WireLimits {
            max_rows: 10_000,
            max_bytes: 64 << 20,
            timeout_ms: 30_000,
            max_concurrency: 4,
        };
        let schema = Schema::new(Dialect::Postgres);
        vec![
            Message::Hello(Hello {
                agent_version: "0.1.0".into(),
                dialect: "postgres".into(),
                capabilities: vec!["cancel".into(), "sample_values".into()],
                schema_fingerprint: Some("ab".repeat(32)),
                max_concurrency: 4,
            }),
            Message::Hello(Hello {
                agent_version: "0.1.0".into(),
                dialect: "sqlite".into(),
                capabilities: vec![],
                schema_fingerprint: None,
                max_concurrency: 1,
            }),
            Message::Schema(SchemaReport::new(&schema)),
            Message::Schema(SchemaReport::new(&schema::tests::sample_schema())),
            Message::Columns(Columns {
                columns: vec![
                    WireColumnMeta { name: "id".into(), type_name: "int4".into() },
                    WireColumnMeta { name: "naïve \"name\"".into(), type_name: "text".into() },
                ],
            }),
            Message::Columns(Columns { columns: vec![] }),
            Message::Rows(Rows {
                rows: vec![
                    vec![json!(1), json!("a\u{0}b\n"), Value::Null],
                    vec![json!(-2.5), json!({"k": [1, true]}), json!(u64::MAX)],
                ],
            }),
            Message::Rows(Rows { rows: vec![] }),
            Message::Done(Done { row_count: 2, truncated: true, elapsed_ms: 12, bytes: 345 }),
            Message::Error(ErrorReport::new("query_timeout", "query ran past 30000 ms")),
            Message::Error(ErrorReport {
                code: "query_failed".into(),
                message: "relation \"x\" does not exist".into(),
                sqlstate: Some("42P01".into()),
            }),
            Message::Pong,
            Message::Welcome(Welcome {
                connection_id: "conn_1".into(),
                heartbeat_interval_ms: 15_000,
                limits,
            }),
            Message::Discover(Discover { sample_values: 5 }),
            Message::Run(Run { sql: "SELECT 1".into(), max_rows: 100, timeout_ms: 30_000 }),
            Message::Cancel(Cancel { target: "q-7".into() }),
            Message::Flow(Flow { window: 8 }),
            Message::More(More { target: "q-7".into(), frames: 4 }),
            Message::Ping,
        ]
    }

    /// Every message type, in the order of the `match` below.
    const TYPES: [&str; 14] = [
        "hello", "schema", "columns", "rows", "done", "error", "pong", "welcome", "discover",
        "run", "cancel", "ping", "flow", "more",
    ];

    #[test]
    fn every_message_round_trips() {
        let mut seen = [false; TYPES.len()];
        for (i, message) in samples().into_iter().enumerate() {
            // Exhaustive on purpose: a new variant does not compile until it has a sample.
            let index = match &message {
                Message::Hello(_) => 0,
                Message::Schema(_) => 1,
                Message::Columns(_) => 2,
                Message::Rows(_) => 3,
                Message::Done(_) => 4,
                Message::Error(_) => 5,
                Message::Pong => 6,
                Message::Welcome(_) => 7,
                Message::Discover(_) => 8,
                Message::Run(_) => 9,
                Message::Cancel(_) => 10,
                Message::Ping => 11,
                Message::Flow(_) => 12,
                Message::More(_) => 13,
            };
            seen[index] = true;
            assert_eq!(TYPES[index], message.type_name());
            let frame = Frame::new(format!("id-{i}"), message);
            let text = frame.encode();
            assert!(!text.contains('\n'), "{text}");
            assert_eq!(Frame::decode(&text), Ok(frame.clone()), "{text}");
            // The envelope is there, whatever the payload.
            let value: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(value["v"], json!(PROTOCOL_VERSION));
            assert_eq!(value["type"], json!(frame.message.type_name()));
            assert_eq!(value["id"], json!(frame.id));
        }
        assert!(seen.iter().all(|s| *s), "a message type has no sample: {seen:?}");
    }

    #[test]
    fn golden_frames() {
        let check = |message: Message, expected: &str| {
            let frame = Frame::new("r1", message);
            assert_eq!(frame.encode(), expected);
            assert_eq!(Frame::decode(expected), Ok(frame));
        };
        check(
            Message::Run(Run { sql: "SELECT 1".into(), max_rows: 100, timeout_ms: 30000 }),
            r#"{"v":1,"type":"run","id":"r1","sql":"SELECT 1","max_rows":100,"timeout_ms":30000}"#,
        );
        check(Message::Ping, r#"{"v":1,"type":"ping","id":"r1"}"#);
        check(
            Message::Hello(Hello {
                agent_version: "0.1.0".into(),
                dialect: "postgres".into(),
                capabilities: vec![],
                schema_fingerprint: None,
                max_concurrency: 4,
            }),
            r#"{"v":1,"type":"hello","id":"r1","agent_version":"0.1.0","dialect":"postgres","max_concurrency":4}"#,
        );
        check(
            Message::Error(ErrorReport {
                code: "query_failed".into(),
                message: "boom".into(),
                sqlstate: Some("42P01".into()),
            }),
            r#"{"v":1,"type":"error","id":"r1","code":"query_failed","message":"boom","sqlstate":"42P01"}"#,
        );
        check(
            Message::Rows(Rows { rows: vec![vec![json!(1), Value::Null, json!("x")]] }),
            r#"{"v":1,"type":"rows","id":"r1","rows":[[1,null,"x"]]}"#,
        );
        check(
            Message::Done(Done { row_count: 1, truncated: false, elapsed_ms: 3, bytes: 12 }),
            r#"{"v":1,"type":"done","id":"r1","row_count":1,"truncated":false,"elapsed_ms":3,"bytes":12}"#,
        );
        check(
            Message::Welcome(Welcome {
                connection_id: "c".into(),
                heartbeat_interval_ms: 15000,
                limits: WireLimits { max_rows: 1, max_bytes: 2, timeout_ms: 3, max_concurrency: 4 },
            }),
            r#"{"v":1,"type":"welcome","id":"r1","connection_id":"c","heartbeat_interval_ms":15000,"limits":{"max_rows":1,"max_bytes":2,"timeout_ms":3,"max_concurrency":4}}"#,
        );
        check(
            Message::Cancel(Cancel { target: "q-7".into() }),
            r#"{"v":1,"type":"cancel","id":"r1","target":"q-7"}"#,
        );
        check(Message::Flow(Flow { window: 8 }), r#"{"v":1,"type":"flow","id":"r1","window":8}"#);
        check(
            Message::More(More { target: "q-7".into(), frames: 4 }),
            r#"{"v":1,"type":"more","id":"r1","target":"q-7","frames":4}"#,
        );
    }

    #[test]
    fn decode_is_lenient_where_it_should_be() {
        let check = |text: &str, expected: Frame| assert_eq!(Frame::decode(text), Ok(expected));
        // Any key order, whitespace, unknown fields, explicit nulls for optional fields.
        check(
            " {\"id\":\"a\", \"future\": {\"x\": [1]}, \"type\":\"pong\", \"v\":1}\n",
            Frame::new("a", Message::Pong),
        );
        check(
            r#"{"rows":[],"type":"rows","v":1,"id":"b"}"#,
            Frame::new("b", Message::Rows(Rows { rows: vec![] })),
        );
        check(
            r#"{"v":1,"type":"error","id":"c","code":"x","message":"y","sqlstate":null}"#,
            Frame::new("c", Message::Error(ErrorReport::new("x", "y"))),
        );
        // An escaped id and a surrogate pair are fine.
        check(
            r#"{"v":1,"type":"ping","id":"\u00e9\ud83d\ude00"}"#,
            Frame::new("é😀", Message::Ping),
        );
    }

    /// What a decode error should be: its code and a piece of its message.
    fn check_err(text: &str, code: &str, message_part: &str) {
        let err = match Frame::decode(text) {
            Ok(frame) => panic!("decoded {frame:?} from {:.80}", text),
            Err(err) => err,
        };
        assert_eq!(err.code(), code, "{err} for {:.80}", text);
        let message = err.to_string();
        assert!(message.contains(message_part), "`{message}` lacks `{message_part}`");
        assert!(message.len() < 400, "error too long: {}", message.len());
    }

    #[test]
    fn garbage_is_refused_with_the_right_error() {
        let cases: &[(&str, &str, &str)] = &[
            ("", "malformed_frame", "EOF"),
            ("   ", "malformed_frame", "EOF"),
            ("null", "malformed_frame", "expected a JSON object"),
            ("[]", "malformed_frame", "expected a JSON object"),
            (r#"[1,"ping","x"]"#, "malformed_frame", "expected a JSON object"),
            ("42", "malformed_frame", "expected a JSON object"),
            (r#""ping""#, "malformed_frame", "expected a JSON object"),
            ("{}", "malformed_frame", "missing field `v`"),
            (r#"{"v":1,"type":"ping","id":"x"#, "malformed_frame", "EOF"),
            (r#"{"v":1,"type":"ping","id":"x"} {}"#, "malformed_frame", "trailing"),
            (r#"{"v":1,"type":"ping","id":"x",}"#, "malformed_frame", "trailing comma"),
            (r#"{"v":1,"v":1,"type":"ping","id":"x"}"#, "malformed_frame", "duplicate field `v`"),
            (r#"{"v":2,"type":"ping","id":"x"}"#, "unsupported_version", "version 2"),
            (r#"{"v":0,"type":"nope"}"#, "unsupported_version", "version 0"),
            (r#"{"v":"1","type":"ping","id":"x"}"#, "malformed_frame", "invalid type"),
            (r#"{"v":-1,"type":"ping","id":"x"}"#, "malformed_frame", "invalid value"),
            (r#"{"v":4294967296,"type":"ping","id":"x"}"#, "malformed_frame", "invalid value"),
            (r#"{"v":1.0,"type":"ping","id":"x"}"#, "malformed_frame", "invalid type"),
            (r#"{"v":1,"id":"x"}"#, "malformed_frame", "missing field `type`"),
            (r#"{"v":1,"type":"ping"}"#, "malformed_frame", "without an `id`"),
            (r#"{"v":1,"type":"ping","id":null}"#, "malformed_frame", "without an `id`"),
            (r#"{"v":1,"type":"ping","id":7}"#, "malformed_frame", "invalid type: integer"),
            (r#"{"v":1,"type":"shout","id":"x"}"#, "unknown_message_type", "`shout`"),
            (r#"{"v":1,"type":"PING","id":"x"}"#, "unknown_message_type", "`PING`"),
            (r#"{"v":1,"type":"shout"}"#, "unknown_message_type", "`shout`"),
            (r#"{"v":1,"type":"run","id":"x"}"#, "malformed_frame", "missing field `sql`"),
            (
                r#"{"v":1,"type":"run","id":"x","sql":"S","max_rows":-1,"timeout_ms":1}"#,
                "malformed_frame",
                "invalid `run` frame",
            ),
            (
                r#"{"v":1,"type":"rows","id":"x","rows":[1]}"#,
                "malformed_frame",
                "expected a sequence",
            ),
            (
                r#"{"v":1,"type":"cancel","id":"x","target":null}"#,
                "malformed_frame",
                "invalid type",
            ),
            (r#"{"v":1,"type":"ping","id":"\ud800"}"#, "malformed_frame", "hex escape"),
            (r#"{"v":1,"type":"ping","id":"\ud800x"}"#, "malformed_frame", "hex escape"),
            (r#"{"v":1,"type":"ping","id":"\ud800\u0041"}"#, "malformed_frame", "surrogate"),
            (
                r#"{"v":1,"type":"rows","id":"x","rows":[["\ud800"]]}"#,
                "malformed_frame",
                "hex escape",
            ),
            (r#"{"v":1,"type":"ping","id":"\udc00"}"#, "malformed_frame", "surrogate"),
            (r#"{"v":1,"type":"ping","id":"\x"}"#, "malformed_frame", "invalid escape"),
            (
                "{\"v\":1,\"type\":\"ping\",\"id\":\"a\u{1}b\"}",
                "malformed_frame",
                "control character",
            ),
        ];
        for (text, code, part) in cases {
            check_err(text, code, part);
        }
    }

    #[test]
    fn unknown_type_keeps_the_id_for_the_error_reply() {
        let err = Frame::decode(r#"{"v":1,"type":"shout","id":"q-9","x":1}"#).unwrap_err();
        assert_eq!(
            err,
            WireError::UnknownType { type_name: "shout".into(), id: Some("q-9".into()) }
        );
        let reply = Frame::new(err.id().unwrap(), Message::Error(ErrorReport::from(&err)));
        assert_eq!(
            reply.encode(),
            r#"{"v":1,"type":"error","id":"q-9","code":"unknown_message_type","message":"unknown message type `shout`"}"#
        );
        // A huge type name is not echoed back in full.
        let long = format!(r#"{{"v":1,"type":"{}","id":"q"}}"#, "x".repeat(1 << 20));
        check_err(&long, "unknown_message_type", "xxx...");
    }

    #[test]
    fn size_cap_is_checked_before_parsing() {
        // 17 MiB of a string that would not even parse.
        let huge = "\"".repeat(17 << 20);
        assert_eq!(
            Frame::decode(&huge),
            Err(WireError::TooLarge { len: 17 << 20, max: MAX_FRAME_BYTES })
        );
        let ping = Frame::new("x", Message::Ping).encode();
        assert_eq!(Frame::decode_with_limit(&ping, ping.len()), Ok(Frame::new("x", Message::Ping)));
        assert_eq!(
            Frame::decode_with_limit(&ping, ping.len() - 1),
            Err(WireError::TooLarge { len: ping.len(), max: ping.len() - 1 })
        );
        // Just under the cap is parsed: a big rows frame.
        let cell = "y".repeat(1 << 20);
        let rows = Frame::new("big", Message::Rows(Rows { rows: vec![vec![json!(cell)]; 15] }));
        let text = rows.encode();
        assert!(text.len() < MAX_FRAME_BYTES);
        assert_eq!(Frame::decode(&text), Ok(rows));
    }

    #[test]
    fn deep_nesting_does_not_overflow_the_stack() {
        let depth = 10_000;
        let nested = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        check_err(&nested, "malformed_frame", "expected a JSON object");
        let in_rows = format!(r#"{{"v":1,"type":"rows","id":"x","rows":[{nested}]}}"#);
        check_err(&in_rows, "malformed_frame", "recursion limit exceeded");
        let objects = format!("{}1{}", r#"{"a":"#.repeat(depth), "}".repeat(depth));
        let in_error = format!(r#"{{"v":1,"type":"error","id":"x","code":{objects}}}"#);
        check_err(&in_error, "malformed_frame", "invalid type: map");
        let in_schema = format!(r#"{{"v":1,"type":"schema","id":"x","schema":{objects}}}"#);
        check_err(&in_schema, "malformed_frame", "invalid `schema` frame");
        // Unparsed: the same in an unknown field is skipped without recursion.
        let ignored = format!(r#"{{"v":1,"type":"pong","id":"x","later":{nested}}}"#);
        assert_eq!(Frame::decode(&ignored), Ok(Frame::new("x", Message::Pong)));
        let unclosed = format!(r#"{{"v":1,"type":"pong","id":"x","later":{}"#, "[".repeat(depth));
        check_err(&unclosed, "malformed_frame", "EOF");
    }

    #[test]
    fn every_prefix_and_mutation_is_handled_without_panic() {
        for message in samples() {
            let text = Frame::new("fuzz-1", message).encode();
            for (cut, _) in text.char_indices().skip(1) {
                assert!(Frame::decode(&text[..cut]).is_err(), "prefix decoded: {}", &text[..cut]);
            }
            // Replace each byte with bytes that matter to JSON; only Ok/Err is checked.
            let bytes = text.as_bytes();
            for i in 0..bytes.len() {
                for b in [b'{', b'}', b'[', b']', b'"', b'\\', b',', b':', b'0', b'x', b' '] {
                    let mut mutated = bytes.to_vec();
                    mutated[i] = b;
                    if let Ok(mutated) = String::from_utf8(mutated) {
                        let _ = Frame::decode(&mutated);
                    }
                }
            }
        }
    }

    #[test]
    fn origin_and_reply() {
        for message in samples() {
            let from_agent = matches!(
                message.type_name(),
                "hello" | "schema" | "columns" | "rows" | "done" | "error" | "pong"
            );
            let expected = if from_agent { Origin::Agent } else { Origin::Server };
            assert_eq!(message.origin(), expected, "{}", message.type_name());
        }
        let run = Frame::new("q-1", Message::Discover(Discover { sample_values: 0 }));
        assert_eq!(run.reply(Message::Pong), Frame::new("q-1", Message::Pong));
    }

    #[test]
    fn error_codes_and_reports() {
        for &code in WireErrorCode::ALL {
            assert_eq!(WireErrorCode::parse(code.as_str()), Some(code));
        }
        let cases = [
            (WireError::TooLarge { len: 2, max: 1 }, "frame_too_large"),
            (WireError::Malformed("x".into()), "malformed_frame"),
            (WireError::UnsupportedVersion(9), "unsupported_version"),
            (WireError::UnknownType { type_name: "t".into(), id: None }, "unknown_message_type"),
            (WireError::InvalidSchema("x".into()), "invalid_schema"),
        ];
        for (err, code) in cases {
            assert_eq!(err.code(), code);
            assert_eq!(err.error_code().as_str(), code);
            let report = ErrorReport::from(&err);
            assert_eq!(report.code, code);
            assert_eq!(report.message, err.to_string());
            assert!(!report.message.ends_with('.'));
        }
        assert_eq!(
            WireError::UnsupportedVersion(2).to_string(),
            "unsupported protocol version 2 (this side speaks version 1)"
        );
        let guard = crate::Guard::builder(Dialect::Postgres).build().unwrap();
        let rejection = guard.check("DELETE FROM users").unwrap_err();
        let report = ErrorReport::from(&rejection);
        assert_eq!(report.code, rejection.code.as_str());
        assert_eq!(report.sqlstate, None);
    }

    #[test]
    fn error_reports_carry_typed_codes() {
        // Every code of the vocabulary crosses the wire as its name and comes back typed.
        for &code in Code::ALL {
            let frame = Frame::new("e", Message::Error(ErrorReport::new(code, "m")));
            let text = frame.encode();
            assert!(text.contains(&format!(r#""code":"{code}""#)), "{text}");
            let Ok(Frame { message: Message::Error(report), .. }) = Frame::decode(&text) else {
                panic!("{text} did not decode to an error");
            };
            assert_eq!(report.code, ReportCode::Known(code));
            assert_eq!(report.code.known(), Some(code));
        }
        let decode = |code: &str| {
            let text =
                format!(r#"{{"v":1,"type":"error","id":"e","code":"{code}","message":"m"}}"#);
            match Frame::decode(&text) {
                Ok(Frame { message: Message::Error(report), .. }) => report.code,
                other => panic!("{text}: {other:?}"),
            }
        };
        // Older names still decode (wire v1 stays compatible) and are written anew.
        let busy = decode("busy");
        assert_eq!(busy, Code::Exec(crate::ExecErrorCode::AgentBusy));
        assert_eq!(busy.to_string(), "agent_busy");
        assert_eq!(decode("rejected"), Code::Exec(crate::ExecErrorCode::Rejected));
        // A newer peer's code is kept as sent, not refused.
        let future = decode("from_the_future");
        assert_eq!(future, ReportCode::Unknown("from_the_future".into()));
        assert_eq!(future.known(), None);
        let frame = Frame::new("e", Message::Error(ErrorReport::new(future, "m")));
        assert!(frame.encode().contains(r#""code":"from_the_future""#));
        // A code is a string.
        check_err(
            r#"{"v":1,"type":"error","id":"e","code":7,"message":"m"}"#,
            "malformed_frame",
            "invalid type: integer",
        );
    }

    #[test]
    fn hello_dialect_is_exact() {
        let hello = |dialect: &str| Hello {
            agent_version: "0".into(),
            dialect: dialect.into(),
            capabilities: vec![],
            schema_fingerprint: None,
            max_concurrency: 1,
        };
        assert_eq!(hello("postgres").dialect(), Some(Dialect::Postgres));
        assert_eq!(hello("sqlite").dialect(), Some(Dialect::Sqlite));
        assert_eq!(hello("pg").dialect(), None);
        assert_eq!(hello("Postgres").dialect(), None);
        assert_eq!(hello("mysql").dialect(), None);
    }
}

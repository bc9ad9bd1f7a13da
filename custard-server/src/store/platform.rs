//! Domain types of the platform's resources: database connections (with their
//! agent API keys and cached schemas) and the history of questions.

use chrono::{DateTime, Utc};
use custard_core::Dialect;

use super::{OrgId, UserId};

id_type!(
    /// Identifies a database connection (one customer database served by agents).
    ConnectionId
);
id_type!(
    /// Identifies one asked question in the history.
    QueryId
);
id_type!(
    /// Groups the questions of one conversation, so follow-ups see earlier turns.
    ConversationId
);

/// A database connection of an organisation, served by one or more agents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connection {
    /// The connection's id.
    pub id: ConnectionId,
    /// The organisation that owns it.
    pub org_id: OrgId,
    /// Display name.
    pub name: String,
    /// The database's SQL dialect.
    pub dialect: Dialect,
    /// The first characters of the current API key (`custard_AbCd`), to tell keys apart.
    pub key_prefix: String,
    /// Business instructions added to every prompt for this database.
    pub instructions: String,
    /// The fingerprint of the cached schema, once an agent reported one.
    pub schema_fingerprint: Option<String>,
    /// When the cached schema was last stored.
    pub schema_refreshed_at: Option<DateTime<Utc>>,
    /// The version of the agent that last connected.
    pub agent_version: Option<String>,
    /// When an agent was last connected.
    pub last_seen_at: Option<DateTime<Utc>>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When its settings last changed.
    pub updated_at: DateTime<Utc>,
}

/// A connection to create; the caller generates the key and passes only its hash.
#[derive(Debug, Clone)]
pub struct NewConnection {
    /// The owning organisation.
    pub org_id: OrgId,
    /// Display name.
    pub name: String,
    /// The database's SQL dialect.
    pub dialect: Dialect,
    /// SHA-256 hex of the API key (`auth::hash_secret`); never the key.
    pub key_hash: String,
    /// The key's first characters, for display.
    pub key_prefix: String,
}

/// Changes to a connection's settings; `None` leaves a field alone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnectionUpdate {
    /// A new display name.
    pub name: Option<String>,
    /// New business instructions.
    pub instructions: Option<String>,
}

/// The schema an agent reported, as stored (JSON of `custard_core::wire::WireSchema`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSchema {
    /// `Schema::fingerprint` of the schema.
    pub fingerprint: String,
    /// The schema as JSON (`custard_core::wire::schema_to_json`).
    pub json: String,
    /// When it was stored.
    pub refreshed_at: DateTime<Utc>,
}

/// Where a question was asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuerySource {
    /// The web UI's Ask page.
    Web,
    /// The JSON API (`POST /api/v1/query`).
    Api,
    /// An AI assistant, through MCP.
    Mcp,
}

impl QuerySource {
    /// The stable name stored and shown: `web`, `api` or `mcp`.
    pub fn as_str(self) -> &'static str {
        match self {
            QuerySource::Web => "web",
            QuerySource::Api => "api",
            QuerySource::Mcp => "mcp",
        }
    }

    /// The source named `name` ([`QuerySource::as_str`]).
    pub fn parse(name: &str) -> Option<Self> {
        [QuerySource::Web, QuerySource::Api, QuerySource::Mcp]
            .into_iter()
            .find(|source| source.as_str() == name)
    }
}

/// One asked question to record, whatever its outcome.
#[derive(Debug, Clone, PartialEq)]
pub struct NewQueryRecord {
    /// The organisation it was asked in.
    pub org_id: OrgId,
    /// The connection it was asked about.
    pub connection_id: ConnectionId,
    /// Who asked.
    pub user_id: UserId,
    /// The conversation it belongs to.
    pub conversation_id: ConversationId,
    /// The question as asked.
    pub question: String,
    /// The SQL that ran (or the last SQL tried), if any.
    pub sql: Option<String>,
    /// `ok`, or the error code the question ended with.
    pub outcome: String,
    /// The error message shown to the user, when it failed.
    pub error_message: Option<String>,
    /// The answer text, when it succeeded.
    pub answer: Option<String>,
    /// Rows in the answer.
    pub row_count: Option<u64>,
    /// Whether the answer's rows were capped.
    pub truncated: bool,
    /// Which engine wrote the SQL (`offline` or a model name).
    pub engine: String,
    /// How many attempts the model made.
    pub attempts: u32,
    /// Milliseconds per step, as a JSON object.
    pub timings_json: String,
    /// The answer's columns, rows (capped) and chart as JSON, to show it again.
    pub result_json: Option<String>,
    /// Where it was asked.
    pub source: QuerySource,
}

/// A recorded question.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryRecord {
    /// The record's id.
    pub id: QueryId,
    /// Everything that was recorded.
    pub record: NewQueryRecord,
    /// The asker's feedback: `Some(true)` when marked correct.
    pub feedback: Option<bool>,
    /// When it was asked.
    pub created_at: DateTime<Utc>,
}

/// Which page of the history to list, and which questions it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryFilter {
    /// Only questions about this connection.
    pub connection_id: Option<ConnectionId>,
    /// Only questions this user asked.
    pub asked_by: Option<UserId>,
    /// Only answered, or only failed, questions.
    pub outcome: Option<OutcomeFilter>,
    /// Only questions whose text contains this, ignoring ASCII case; `%`, `_`
    /// and `\` match themselves (no wildcards).
    pub search: Option<String>,
    /// At most this many, newest first.
    pub limit: u32,
    /// Skip this many of the newest.
    pub offset: u32,
}

impl QueryFilter {
    /// A page of the whole history: `limit` questions after the newest `offset`.
    pub fn page(limit: u32, offset: u32) -> Self {
        QueryFilter {
            connection_id: None,
            asked_by: None,
            outcome: None,
            search: None,
            limit,
            offset,
        }
    }
}

/// Which outcomes a history page holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutcomeFilter {
    /// Questions answered (outcome `ok`).
    Answered,
    /// Questions that ended with an error.
    Failed,
}

impl OutcomeFilter {
    /// The stable name (`answered`, `failed`).
    pub fn as_str(self) -> &'static str {
        match self {
            OutcomeFilter::Answered => "answered",
            OutcomeFilter::Failed => "failed",
        }
    }

    /// The filter with this stable name.
    pub fn parse(name: &str) -> Option<OutcomeFilter> {
        [OutcomeFilter::Answered, OutcomeFilter::Failed].into_iter().find(|o| o.as_str() == name)
    }
}

/// A recorded question as the history lists it: with who asked.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryEntry {
    /// The question.
    pub query: QueryRecord,
    /// Who asked it; `None` when the account no longer exists.
    pub asked_by: Option<Asker>,
}

/// The person who asked a question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Asker {
    /// Their email.
    pub email: String,
    /// Given name.
    pub first_name: String,
    /// Family name.
    pub last_name: String,
    /// Whether they are still a member of the question's organisation.
    pub member: bool,
}

impl Asker {
    /// How people see the asker: the full name, or the email without one.
    pub fn display_name(&self) -> String {
        let name = format!("{} {}", self.first_name.trim(), self.last_name.trim());
        let name = name.trim();
        if name.is_empty() { self.email.clone() } else { name.to_owned() }
    }
}

/// What deleting a recorded question did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum QueryDeletion {
    /// It is gone.
    Deleted,
    /// It stays: someone else asked it, and the user is neither an owner
    /// nor an admin of the organisation.
    NotAllowed,
}

/// A question marked correct, with the SQL that answered it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovedExample {
    /// The question.
    pub question: String,
    /// The SQL that answered it.
    pub sql: String,
}

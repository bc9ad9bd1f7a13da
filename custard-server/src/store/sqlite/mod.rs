//! [`SqliteStore`]: the embedded store, one SQLite file in the data dir.
//!
//! One writing connection behind an async mutex serves every write on a
//! blocking thread (SQLite has a single writer anyway, and waiting callers
//! hold no thread); the history's inserts go through a thread of their own
//! that commits together the questions that finished while its previous
//! commit ran (group commit). Reads go to a small pool of read-only
//! connections, which WAL lets run beside a commit instead of queueing behind
//! its fsync. WAL with `synchronous = FULL` makes each commit durable before
//! the call returns, and a read that starts after a commit sees it.
//! Multi-statement writes use `BEGIN IMMEDIATE`, so they never fail half-way on
//! a lock upgrade when another process shares the file.
//!
//! This module holds the pool, opening and migrating ([`migrations`]), and the
//! [`Store`] implementation, which hands each call's SQL to the module of its
//! concern on the right connection: [`accounts`] (users, organisations,
//! sessions, one-time tokens), [`personal_tokens`] and [`platform`]
//! (connections, schemas, the history); [`rows`] maps rows to the store's
//! types and back.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use custard_core::BoxFuture;
use rusqlite::config::DbConfig;
use rusqlite::{Connection, OpenFlags, OptionalExtension, Row, Transaction, TransactionBehavior};
use tokio::sync::Mutex;

use self::migrations::migrate;
use self::rows::db_error;
use super::attempts;
use super::{
    ApprovedExample, Connection as DbConnection, ConnectionId, ConnectionUpdate, ConversationId,
    HistoryEntry, Invitation, Member, Membership, NewConnection, NewPersonalToken, NewQueryRecord,
    NewToken, NewUser, OneTimeToken, OrgId, Organization, PersonalToken, PersonalTokenId,
    ProfileUpdate, QueryDeletion, QueryFilter, QueryId, QueryRecord, ReceivedInvitation, Role,
    Session, SessionGrant, SessionId, SignUp, Store, StoreError, StoredSchema, TokenId, TokenKind,
    User, UserId, normalize_email,
};

mod accounts;
pub(super) mod migrations;
mod personal_tokens;
mod platform;
mod rows;

/// How long a statement waits for another process's lock before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// One attempt in this many also deletes the attempt limits that have run out.
const PRUNE_ATTEMPTS_ONE_IN: u32 = 256;

/// Read-only connections: enough for the reads of a few concurrent requests.
const READERS: usize = 4;

/// The SQLite implementation of [`Store`]; cheap to clone (clones share the connection).
#[derive(Debug, Clone)]
pub struct SqliteStore {
    path: PathBuf,
    conn: Arc<Mutex<Connection>>,
    readers: Arc<Readers>,
    history: Arc<HistoryWriter>,
}

/// The most questions one history commit takes.
const HISTORY_BATCH: usize = 64;

/// Records asked questions on a thread of its own, which commits together
/// the questions that finished while its previous commit ran (group commit):
/// under load one fsync and one write of each index page serve several
/// questions, and alone a question waits for nothing but its own commit.
/// Each caller is answered once the commit holding its question is durable.
#[derive(Debug)]
struct HistoryWriter {
    /// `None` only while dropping.
    queue: Option<std::sync::mpsc::Sender<PendingRecord>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for HistoryWriter {
    /// Closes the queue and waits for the thread to commit what it holds (a
    /// question whose caller went away is still recorded), as the blocking
    /// pool's tasks were waited for before.
    fn drop(&mut self) {
        drop(self.queue.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A question waiting to be recorded, and where its result goes.
#[derive(Debug)]
struct PendingRecord {
    record: NewQueryRecord,
    done: tokio::sync::oneshot::Sender<Result<QueryRecord, StoreError>>,
}

impl HistoryWriter {
    /// Starts the thread; it ends when the last clone of the store is gone.
    fn start(conn: Arc<Mutex<Connection>>) -> std::io::Result<Self> {
        let (queue, pending) = std::sync::mpsc::channel::<PendingRecord>();
        let thread =
            std::thread::Builder::new().name("custard-history".into()).spawn(move || {
                while let Ok(first) = pending.recv() {
                    let mut batch = vec![first];
                    batch.extend(pending.try_iter().take(HISTORY_BATCH - 1));
                    let records: Vec<&NewQueryRecord> = batch.iter().map(|p| &p.record).collect();
                    // Shared with the store's other writes, in the order they ask
                    // for it. A panic fails this batch, not every later question.
                    let results = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        platform::record_queries(&mut conn.blocking_lock(), &records)
                    }))
                    .unwrap_or_else(|_| {
                        let failed =
                            StoreError::Internal("recording the history failed".to_owned());
                        vec![Err(failed); records.len()]
                    });
                    for (pending, result) in batch.into_iter().zip(results) {
                        // A caller that went away still has its question recorded.
                        let _ = pending.done.send(result);
                    }
                }
            })?;
        Ok(HistoryWriter { queue: Some(queue), thread: Some(thread) })
    }

    async fn record(&self, record: NewQueryRecord) -> Result<QueryRecord, StoreError> {
        let (done, result) = tokio::sync::oneshot::channel();
        let gone = || StoreError::Internal("the history writer stopped".to_owned());
        let queue = self.queue.as_ref().ok_or_else(gone)?;
        queue.send(PendingRecord { record, done }).map_err(|_| gone())?;
        result.await.map_err(|_| gone())?
    }
}

/// The read-only connections: a permit per connection, and the idle ones.
#[derive(Debug)]
struct Readers {
    permits: Arc<tokio::sync::Semaphore>,
    idle: std::sync::Mutex<Vec<Connection>>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database file at `path` and migrates it.
    ///
    /// Blocks briefly on file I/O; call it at startup. Fails with
    /// [`StoreError::SchemaTooNew`] when a newer binary migrated the file.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let shown = path.display();
        create_private_file(path)
            .map_err(|e| StoreError::Unavailable(format!("cannot create {shown}: {e}")))?;
        // The bundled SQLite reads names starting with `file:` as URIs; keep paths plain.
        let plain = if path.as_os_str().as_encoded_bytes().starts_with(b"file:") {
            Path::new(".").join(path)
        } else {
            path.to_owned()
        };
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let mut conn = Connection::open_with_flags(&plain, flags)
            .map_err(|e| StoreError::Unavailable(format!("cannot open {shown}: {e}")))?;
        configure(&conn)
            .and_then(|()| plan_once(&conn).map_err(|e| e.to_string()))
            .map_err(|e| StoreError::Unavailable(format!("cannot configure {shown}: {e}")))?;
        migrate(&mut conn)?;
        let readers = (0..READERS)
            .map(|_| open_reader(&plain))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| StoreError::Unavailable(format!("cannot open {shown} to read: {e}")))?;
        let readers = Readers {
            permits: Arc::new(tokio::sync::Semaphore::new(readers.len())),
            idle: std::sync::Mutex::new(readers),
        };
        let conn = Arc::new(Mutex::new(conn));
        let history = HistoryWriter::start(Arc::clone(&conn)).map_err(|e| {
            StoreError::Unavailable(format!("cannot start the history writer for {shown}: {e}"))
        })?;
        Ok(SqliteStore {
            path: path.to_owned(),
            conn,
            readers: Arc::new(readers),
            history: Arc::new(history),
        })
    }

    /// The path of the database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` with the connection on a blocking thread.
    fn run<T, F>(&self, f: F) -> BoxFuture<'static, Result<T, StoreError>>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let conn = Arc::clone(&self.conn);
        Box::pin(async move {
            // Wait for the connection without holding a blocking thread.
            let mut guard = conn.lock_owned().await;
            tokio::task::spawn_blocking(move || f(&mut guard))
                .await
                .map_err(|e| StoreError::Internal(format!("store task failed: {e}")))?
        })
    }

    /// Runs `f`, which only reads, with a read-only connection on a blocking thread.
    ///
    /// Cancellation-safe: the permit and the connection travel into the
    /// blocking task, which returns the connection to the pool when it ends
    /// (panics included), whether or not anyone still awaits the result.
    fn read<T, F>(&self, f: F) -> BoxFuture<'static, Result<T, StoreError>>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let readers = Arc::clone(&self.readers);
        Box::pin(async move {
            let permit = readers.permit().await?;
            tokio::task::spawn_blocking(move || {
                let mut lease = Lease::take(&readers, permit)?;
                f(lease.conn())
            })
            .await
            .map_err(|e| StoreError::Internal(format!("store task failed: {e}")))?
        })
    }
}

impl SqliteStore {
    /// Runs `f`, a read of one row by its key, with a read-only connection on
    /// the calling thread: such a read takes microseconds, less than handing it
    /// to a blocking thread and back (which [`SqliteStore::read`] does for
    /// reads that may scan). Every question makes two of them.
    fn lookup<T, F>(&self, f: F) -> BoxFuture<'static, Result<T, StoreError>>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let readers = Arc::clone(&self.readers);
        Box::pin(async move {
            let permit = readers.permit().await?;
            let mut lease = Lease::take(&readers, permit)?;
            f(lease.conn())
        })
    }
}

impl Readers {
    /// Waits for a permit: holding one means an idle connection is there to take.
    async fn permit(&self) -> Result<tokio::sync::OwnedSemaphorePermit, StoreError> {
        Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .map_err(|e| StoreError::Internal(format!("store readers closed: {e}")))
    }
}

/// A reader taken from the pool under a permit; dropping it puts the
/// connection back before the permit is released.
struct Lease<'a> {
    readers: &'a Readers,
    conn: Option<Connection>,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl<'a> Lease<'a> {
    fn take(
        readers: &'a Readers,
        permit: tokio::sync::OwnedSemaphorePermit,
    ) -> Result<Self, StoreError> {
        let conn = readers.idle.lock().unwrap_or_else(std::sync::PoisonError::into_inner).pop();
        let conn =
            conn.ok_or_else(|| StoreError::Internal("no idle reader under a permit".to_owned()))?;
        Ok(Lease { readers, conn: Some(conn), _permit: permit })
    }

    fn conn(&mut self) -> &mut Connection {
        // Set in `take`, taken only in `drop`.
        self.conn.as_mut().unwrap_or_else(|| unreachable!("a lease holds its connection"))
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            self.readers.idle.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(conn);
        }
    }
}

/// A read-only connection to the (migrated) file: it refuses writes itself.
fn open_reader(path: &Path) -> rusqlite::Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.pragma_update(None, "query_only", "ON")?;
    plan_once(&conn)?;
    Ok(conn)
}

/// Keeps a connection's statements planned once: its statement cache, and
/// the query planner's stability guarantee. Without the guarantee SQLite may
/// plan a statement with a join or a partial index for the values bound to
/// it, and marks it to be prepared again whenever they change, which the
/// statement cache's reset does every time: the cached connection read of
/// every question was parsed and planned anew. The store's statements are
/// key lookups and index scans whose best plan does not depend on the values.
fn plan_once(conn: &Connection) -> rusqlite::Result<()> {
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok(())
}

/// `query_row` through the connection's statement cache: the hot statements
/// (sessions, users, memberships, connections, history) are parsed once.
trait CachedRow {
    fn cached_row<T, P, F>(&self, sql: &str, params: P, f: F) -> rusqlite::Result<T>
    where
        P: rusqlite::Params,
        F: FnOnce(&Row<'_>) -> rusqlite::Result<T>;
}

impl CachedRow for Connection {
    fn cached_row<T, P, F>(&self, sql: &str, params: P, f: F) -> rusqlite::Result<T>
    where
        P: rusqlite::Params,
        F: FnOnce(&Row<'_>) -> rusqlite::Result<T>,
    {
        self.prepare_cached(sql)?.query_row(params, f)
    }
}

/// Statements kept prepared per connection.
const STATEMENT_CACHE: usize = 64;

/// Creates the file readable by its owner only (it holds password hashes);
/// SQLite gives the `-wal` and `-shm` files the same permissions.
fn create_private_file(path: &Path) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.create(true).append(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path).map(drop)
}

/// Sets and checks the pragmas durability and integrity rely on.
fn configure(conn: &Connection) -> Result<(), String> {
    let setup = || -> rusqlite::Result<(String, bool, i64)> {
        conn.busy_timeout(BUSY_TIMEOUT)?;
        let mode: String =
            conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        let foreign_keys: bool = conn.query_row("PRAGMA foreign_keys", [], |r| r.get(0))?;
        let synchronous: i64 = conn.query_row("PRAGMA synchronous", [], |r| r.get(0))?;
        Ok((mode, foreign_keys, synchronous))
    };
    let (mode, foreign_keys, synchronous) = setup().map_err(|e| e.to_string())?;
    // SQLite silently keeps another journal mode where WAL is unsupported.
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(format!("journal_mode is {mode}, not wal"));
    }
    // 2 is FULL: every commit is fsynced.
    if !foreign_keys || synchronous != 2 {
        return Err("foreign_keys or synchronous did not take effect".to_owned());
    }
    Ok(())
}

impl Store for SqliteStore {
    fn ping(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        self.run(|conn| {
            conn.cached_row("SELECT count(*) FROM schema_migrations", [], |r| r.get::<_, i64>(0))
                .map(drop)
                .map_err(db_error)
        })
    }

    fn create_user(&self, user: NewUser) -> BoxFuture<'_, Result<User, StoreError>> {
        self.run(move |conn| accounts::create_user(conn, &user))
    }

    fn create_user_with_org(
        &self,
        user: NewUser,
        org_name: String,
    ) -> BoxFuture<'_, Result<SignUp, StoreError>> {
        self.run(move |conn| accounts::create_user_with_org(conn, &user, &org_name))
    }

    fn get_user<'a>(&'a self, id: &'a UserId) -> BoxFuture<'a, Result<User, StoreError>> {
        let id = id.clone();
        self.read(move |conn| accounts::select_user(conn, &id))
    }

    fn get_user_by_email<'a>(&'a self, email: &'a str) -> BoxFuture<'a, Result<User, StoreError>> {
        let email = normalize_email(email);
        self.read(move |conn| accounts::user_by_email(conn, &email))
    }

    fn update_profile<'a>(
        &'a self,
        id: &'a UserId,
        profile: ProfileUpdate,
    ) -> BoxFuture<'a, Result<User, StoreError>> {
        let id = id.clone();
        self.run(move |conn| accounts::update_profile(conn, &id, &profile))
    }

    fn set_password_hash<'a>(
        &'a self,
        id: &'a UserId,
        password_hash: String,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        let id = id.clone();
        self.run(move |conn| accounts::set_password_hash(conn, &id, &password_hash))
    }

    fn mark_email_verified<'a>(
        &'a self,
        id: &'a UserId,
    ) -> BoxFuture<'a, Result<User, StoreError>> {
        let id = id.clone();
        self.run(move |conn| accounts::mark_email_verified(conn, &id))
    }

    fn get_organization<'a>(
        &'a self,
        org: &'a OrgId,
    ) -> BoxFuture<'a, Result<Organization, StoreError>> {
        let org = org.clone();
        self.read(move |conn| accounts::select_org(conn, &org))
    }

    fn organizations_of_user<'a>(
        &'a self,
        user: &'a UserId,
    ) -> BoxFuture<'a, Result<Vec<(Organization, Membership)>, StoreError>> {
        let user = user.clone();
        self.read(move |conn| accounts::organizations_of_user(conn, &user))
    }

    fn list_members<'a>(
        &'a self,
        org: &'a OrgId,
    ) -> BoxFuture<'a, Result<Vec<Member>, StoreError>> {
        let org = org.clone();
        self.read(move |conn| accounts::list_members(conn, &org))
    }

    fn get_membership<'a>(
        &'a self,
        org: &'a OrgId,
        user: &'a UserId,
    ) -> BoxFuture<'a, Result<Membership, StoreError>> {
        let (org, user) = (org.clone(), user.clone());
        self.read(move |conn| accounts::select_membership(conn, &org, &user))
    }

    fn set_role<'a>(
        &'a self,
        org: &'a OrgId,
        user: &'a UserId,
        role: Role,
    ) -> BoxFuture<'a, Result<Membership, StoreError>> {
        let (org, user) = (org.clone(), user.clone());
        self.run(move |conn| accounts::set_role(conn, &org, &user, role))
    }

    fn remove_member<'a>(
        &'a self,
        org: &'a OrgId,
        user: &'a UserId,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        let (org, user) = (org.clone(), user.clone());
        self.run(move |conn| accounts::remove_member(conn, &org, &user))
    }

    fn create_session<'a>(
        &'a self,
        user: &'a UserId,
        expires_at: DateTime<Utc>,
        grant: SessionGrant<'a>,
    ) -> BoxFuture<'a, Result<Session, StoreError>> {
        let (user, grant) = (user.clone(), accounts::Grant::from(grant));
        self.run(move |conn| accounts::create_session(conn, &user, expires_at, &grant))
    }

    fn get_session<'a>(&'a self, id: &'a SessionId) -> BoxFuture<'a, Result<Session, StoreError>> {
        let id = id.clone();
        self.read(move |conn| accounts::get_session(conn, &id))
    }

    fn session_context<'a>(
        &'a self,
        session: &'a SessionId,
        org: &'a OrgId,
    ) -> BoxFuture<'a, Result<(Session, User, Membership), StoreError>> {
        let (id, org) = (session.clone(), org.clone());
        self.lookup(move |conn| accounts::session_context(conn, &id, &org))
    }

    fn revoke_session<'a>(&'a self, id: &'a SessionId) -> BoxFuture<'a, Result<(), StoreError>> {
        let id = id.clone();
        self.run(move |conn| accounts::revoke_session(conn, &id))
    }

    fn revoke_user_sessions<'a>(
        &'a self,
        user: &'a UserId,
    ) -> BoxFuture<'a, Result<u64, StoreError>> {
        let user = user.clone();
        self.run(move |conn| accounts::revoke_all_sessions(conn, &user, rows::Millis::now()))
    }

    fn revoke_other_sessions<'a>(
        &'a self,
        user: &'a UserId,
        keep: &'a SessionId,
    ) -> BoxFuture<'a, Result<u64, StoreError>> {
        let (user, keep) = (user.clone(), keep.clone());
        self.run(move |conn| accounts::revoke_sessions_but(conn, &user, &keep, rows::Millis::now()))
    }

    fn change_password<'a>(
        &'a self,
        id: &'a UserId,
        old_hash: &'a str,
        password_hash: String,
        keep: &'a SessionId,
    ) -> BoxFuture<'a, Result<u64, StoreError>> {
        let (id, old_hash, keep) = (id.clone(), old_hash.to_owned(), keep.clone());
        self.run(move |conn| accounts::change_password(conn, &id, &old_hash, &password_hash, &keep))
    }

    fn create_personal_token<'a>(
        &'a self,
        token: NewPersonalToken<'a>,
    ) -> BoxFuture<'a, Result<PersonalToken, StoreError>> {
        let token = personal_tokens::OwnedNewToken::from(token);
        self.run(move |conn| personal_tokens::create(conn, &token))
    }

    fn list_personal_tokens<'a>(
        &'a self,
        user: &'a UserId,
        org: &'a OrgId,
    ) -> BoxFuture<'a, Result<Vec<PersonalToken>, StoreError>> {
        let (user, org) = (user.clone(), org.clone());
        self.read(move |conn| personal_tokens::list(conn, &user, &org))
    }

    fn delete_personal_token<'a>(
        &'a self,
        user: &'a UserId,
        org: &'a OrgId,
        id: &'a PersonalTokenId,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        let (user, org, id) = (user.clone(), org.clone(), id.clone());
        self.run(move |conn| personal_tokens::delete(conn, &user, &org, &id))
    }

    fn personal_token_context<'a>(
        &'a self,
        token_hash: &'a str,
    ) -> BoxFuture<'a, Result<(PersonalToken, User, Membership), StoreError>> {
        let token_hash = token_hash.to_owned();
        self.lookup(move |conn| personal_tokens::context(conn, &token_hash))
    }

    fn touch_personal_token<'a>(
        &'a self,
        id: &'a PersonalTokenId,
        at: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        let id = id.clone();
        self.run(move |conn| personal_tokens::touch(conn, &id, at))
    }

    fn create_token(&self, token: NewToken) -> BoxFuture<'_, Result<OneTimeToken, StoreError>> {
        self.run(move |conn| accounts::create_token(conn, &token))
    }

    fn consume_token<'a>(
        &'a self,
        kind: TokenKind,
        token_hash: &'a str,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<OneTimeToken, StoreError>> {
        let token_hash = token_hash.to_owned();
        self.run(move |conn| accounts::consume(conn, kind, &token_hash, rows::Millis(now)))
    }

    fn verify_email<'a>(
        &'a self,
        token_hash: &'a str,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<User, StoreError>> {
        let token_hash = token_hash.to_owned();
        self.run(move |conn| accounts::verify_email(conn, &token_hash, now))
    }

    fn password_reset_user<'a>(
        &'a self,
        token_hash: &'a str,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<User, StoreError>> {
        let token_hash = token_hash.to_owned();
        self.read(move |conn| accounts::password_reset_user(conn, &token_hash, now))
    }

    fn reset_password<'a>(
        &'a self,
        token_hash: &'a str,
        password_hash: String,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<User, StoreError>> {
        let token_hash = token_hash.to_owned();
        self.run(move |conn| accounts::reset_password(conn, &token_hash, &password_hash, now))
    }

    fn accept_invitation<'a>(
        &'a self,
        token_hash: &'a str,
        user: &'a UserId,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<Membership, StoreError>> {
        let (token_hash, user) = (token_hash.to_owned(), user.clone());
        self.run(move |conn| accounts::accept_invitation(conn, &token_hash, &user, now))
    }

    fn create_user_from_invitation<'a>(
        &'a self,
        user: NewUser,
        token_hash: &'a str,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<SignUp, StoreError>> {
        let token_hash = token_hash.to_owned();
        self.run(move |conn| accounts::create_user_from_invitation(conn, &user, &token_hash, now))
    }

    fn list_invitations<'a>(
        &'a self,
        org: &'a OrgId,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<Vec<Invitation>, StoreError>> {
        let org = org.clone();
        self.read(move |conn| accounts::list_invitations(conn, &org, now))
    }

    fn get_invitation<'a>(
        &'a self,
        org: &'a OrgId,
        id: &'a TokenId,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<Invitation, StoreError>> {
        let (org, id) = (org.clone(), id.clone());
        self.read(move |conn| accounts::get_invitation(conn, &org, &id, now))
    }

    fn revoke_invitation<'a>(
        &'a self,
        org: &'a OrgId,
        id: &'a TokenId,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        let (org, id) = (org.clone(), id.clone());
        self.run(move |conn| accounts::revoke_invitation(conn, &org, &id, now))
    }

    fn renew_invitation<'a>(
        &'a self,
        org: &'a OrgId,
        id: &'a TokenId,
        by: &'a UserId,
        token_hash: String,
        expires_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<Invitation, StoreError>> {
        let (org, id, by) = (org.clone(), id.clone(), by.clone());
        self.run(move |conn| {
            accounts::renew_invitation(conn, &org, &id, &by, &token_hash, expires_at, now)
        })
    }

    fn invitation_by_token<'a>(
        &'a self,
        token_hash: &'a str,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<ReceivedInvitation, StoreError>> {
        let token_hash = token_hash.to_owned();
        self.read(move |conn| accounts::invitation_by_token(conn, &token_hash, now))
    }

    fn invitations_for_email<'a>(
        &'a self,
        email: &'a str,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<Vec<ReceivedInvitation>, StoreError>> {
        let email = normalize_email(email);
        self.read(move |conn| accounts::invitations_for_email(conn, &email, now))
    }

    fn accept_invitation_by_id<'a>(
        &'a self,
        id: &'a TokenId,
        user: &'a UserId,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<Membership, StoreError>> {
        let (id, user) = (id.clone(), user.clone());
        self.run(move |conn| accounts::accept_invitation_by_id(conn, &id, &user, now))
    }

    fn create_organization<'a>(
        &'a self,
        owner: &'a UserId,
        name: String,
    ) -> BoxFuture<'a, Result<(Organization, Membership), StoreError>> {
        let owner = owner.clone();
        self.run(move |conn| accounts::create_organization(conn, &owner, &name))
    }

    fn delete_organization<'a>(
        &'a self,
        org: &'a OrgId,
        by: &'a UserId,
    ) -> BoxFuture<'a, Result<Vec<ConnectionId>, StoreError>> {
        let (org, by) = (org.clone(), by.clone());
        self.run(move |conn| accounts::delete_organization(conn, &org, &by))
    }

    fn create_connection(
        &self,
        connection: NewConnection,
    ) -> BoxFuture<'_, Result<DbConnection, StoreError>> {
        self.run(move |conn| platform::create_connection(conn, &connection))
    }

    fn list_connections<'a>(
        &'a self,
        org: &'a OrgId,
    ) -> BoxFuture<'a, Result<Vec<DbConnection>, StoreError>> {
        let org = org.clone();
        self.read(move |conn| platform::list_connections(conn, &org))
    }

    fn get_connection<'a>(
        &'a self,
        org: &'a OrgId,
        id: &'a ConnectionId,
    ) -> BoxFuture<'a, Result<DbConnection, StoreError>> {
        let (org, id) = (org.clone(), id.clone());
        self.lookup(move |conn| platform::select_connection(conn, &org, &id))
    }

    fn connection_by_key_hash<'a>(
        &'a self,
        key_hash: &'a str,
    ) -> BoxFuture<'a, Result<DbConnection, StoreError>> {
        let key_hash = key_hash.to_owned();
        self.read(move |conn| platform::connection_by_key_hash(conn, &key_hash))
    }

    fn update_connection<'a>(
        &'a self,
        org: &'a OrgId,
        id: &'a ConnectionId,
        update: ConnectionUpdate,
    ) -> BoxFuture<'a, Result<DbConnection, StoreError>> {
        let (org, id) = (org.clone(), id.clone());
        self.run(move |conn| platform::update_connection(conn, &org, &id, &update))
    }

    fn set_connection_key<'a>(
        &'a self,
        org: &'a OrgId,
        id: &'a ConnectionId,
        key_hash: String,
        key_prefix: String,
    ) -> BoxFuture<'a, Result<DbConnection, StoreError>> {
        let (org, id) = (org.clone(), id.clone());
        self.run(move |conn| platform::set_connection_key(conn, &org, &id, &key_hash, &key_prefix))
    }

    fn delete_connection<'a>(
        &'a self,
        org: &'a OrgId,
        id: &'a ConnectionId,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        let (org, id) = (org.clone(), id.clone());
        self.run(move |conn| platform::delete_connection(conn, &org, &id))
    }

    fn get_schema<'a>(
        &'a self,
        org: &'a OrgId,
        id: &'a ConnectionId,
    ) -> BoxFuture<'a, Result<StoredSchema, StoreError>> {
        let (org, id) = (org.clone(), id.clone());
        self.read(move |conn| platform::get_schema(conn, &org, &id))
    }

    fn save_schema<'a>(
        &'a self,
        org: &'a OrgId,
        id: &'a ConnectionId,
        fingerprint: String,
        json: String,
    ) -> BoxFuture<'a, Result<StoredSchema, StoreError>> {
        let (org, id) = (org.clone(), id.clone());
        self.run(move |conn| platform::save_schema(conn, &org, &id, &fingerprint, &json))
    }

    fn record_agent_seen<'a>(
        &'a self,
        org: &'a OrgId,
        id: &'a ConnectionId,
        agent_version: String,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        let (org, id) = (org.clone(), id.clone());
        self.run(move |conn| platform::record_agent_seen(conn, &org, &id, &agent_version))
    }

    fn record_query(
        &self,
        record: NewQueryRecord,
    ) -> BoxFuture<'_, Result<QueryRecord, StoreError>> {
        let history = Arc::clone(&self.history);
        Box::pin(async move { history.record(record).await })
    }

    fn list_queries<'a>(
        &'a self,
        org: &'a OrgId,
        filter: QueryFilter,
    ) -> BoxFuture<'a, Result<Vec<HistoryEntry>, StoreError>> {
        let org = org.clone();
        self.read(move |conn| platform::list_queries(conn, &org, &filter))
    }

    fn delete_query<'a>(
        &'a self,
        org: &'a OrgId,
        id: &'a QueryId,
        by: &'a UserId,
    ) -> BoxFuture<'a, Result<QueryDeletion, StoreError>> {
        let (org, id, by) = (org.clone(), id.clone(), by.clone());
        self.run(move |conn| platform::delete_query(conn, &org, &id, &by))
    }

    fn get_query<'a>(
        &'a self,
        org: &'a OrgId,
        id: &'a QueryId,
    ) -> BoxFuture<'a, Result<QueryRecord, StoreError>> {
        let (org, id) = (org.clone(), id.clone());
        self.read(move |conn| platform::get_query(conn, &org, &id))
    }

    fn set_feedback<'a>(
        &'a self,
        org: &'a OrgId,
        id: &'a QueryId,
        correct: bool,
    ) -> BoxFuture<'a, Result<QueryRecord, StoreError>> {
        let (org, id) = (org.clone(), id.clone());
        self.run(move |conn| platform::set_feedback(conn, &org, &id, correct))
    }

    fn conversation<'a>(
        &'a self,
        org: &'a OrgId,
        conversation: &'a ConversationId,
        limit: u32,
    ) -> BoxFuture<'a, Result<Vec<QueryRecord>, StoreError>> {
        let (org, conversation) = (org.clone(), conversation.clone());
        self.read(move |conn| platform::conversation(conn, &org, &conversation, limit))
    }

    fn shared_secret<'a>(
        &'a self,
        name: &'a str,
        candidate: String,
    ) -> BoxFuture<'a, Result<String, StoreError>> {
        let name = name.to_owned();
        self.run(move |conn| {
            let tx = write_tx(conn)?;
            tx.execute(
                "INSERT INTO server_secrets (name, value, created_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (name) DO NOTHING",
                rusqlite::params![name, candidate, rows::Millis::now()],
            )
            .map_err(db_error)?;
            let value = tx
                .query_row("SELECT value FROM server_secrets WHERE name = ?1", [&name], |r| {
                    r.get(0)
                })
                .map_err(db_error)?;
            tx.commit().map_err(db_error)?;
            Ok(value)
        })
    }

    fn take_attempt<'a>(
        &'a self,
        key: &'a str,
        burst: u32,
        every: Duration,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<Option<Duration>, StoreError>> {
        let key = key.to_owned();
        self.run(move |conn| {
            let now_us = attempts::micros(now);
            let admitted: Option<i64> = conn
                .cached_row(
                    "INSERT INTO attempt_limits (key, tat_us) VALUES (?1, ?2 + ?3)
                     ON CONFLICT (key) DO UPDATE
                         SET tat_us = max(attempt_limits.tat_us, ?2) + ?3
                         WHERE max(attempt_limits.tat_us, ?2) + ?3 - ?2 <= ?4
                     RETURNING tat_us",
                    rusqlite::params![
                        key,
                        now_us,
                        attempts::span(every),
                        attempts::allowance(burst, every)
                    ],
                    |r| r.get(0),
                )
                .optional()
                .map_err(db_error)?;
            if rand::random_ratio(1, PRUNE_ATTEMPTS_ONE_IN) {
                // Rows at full allowance say nothing: keep the table to recent keys.
                conn.execute("DELETE FROM attempt_limits WHERE tat_us < ?1", [now_us])
                    .map_err(db_error)?;
            }
            if admitted.is_some() {
                return Ok(None);
            }
            let tat: i64 = conn
                .cached_row("SELECT tat_us FROM attempt_limits WHERE key = ?1", [&key], |r| {
                    r.get(0)
                })
                .map_err(db_error)?;
            Ok(Some(attempts::wait(tat, now_us, burst, every)))
        })
    }

    fn forgive_attempt<'a>(
        &'a self,
        key: &'a str,
        every: Duration,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        let key = key.to_owned();
        self.run(move |conn| {
            conn.execute(
                "UPDATE attempt_limits SET tat_us = max(tat_us - ?2, ?3) WHERE key = ?1",
                rusqlite::params![key, attempts::span(every), attempts::micros(now)],
            )
            .map(drop)
            .map_err(db_error)
        })
    }

    fn approved_examples<'a>(
        &'a self,
        org: &'a OrgId,
        id: &'a ConnectionId,
        limit: u32,
    ) -> BoxFuture<'a, Result<Vec<ApprovedExample>, StoreError>> {
        let (org, id) = (org.clone(), id.clone());
        self.read(move |conn| platform::approved_examples(conn, &org, &id, limit))
    }
}

/// Starts a transaction that holds the write lock from its first statement.
fn write_tx(conn: &mut Connection) -> Result<Transaction<'_>, StoreError> {
    conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A question reads its connection with the schema's fingerprint from an
    /// index: never from the row that holds the schema's JSON, whose overflow
    /// pages a large schema makes long.
    #[tokio::test]
    async fn reading_a_connection_never_reads_its_schema_json() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = SqliteStore::open(&dir.path().join("custard.db")).expect("open");
        let plan = store
            .read(|conn| {
                let sql = format!(
                    "EXPLAIN QUERY PLAN {} WHERE c.org_id = ?1 AND c.id = ?2",
                    rows::CONNECTION_SELECT
                );
                let mut stmt = conn.prepare(&sql).map_err(db_error)?;
                let lines = stmt
                    .query_map(["org", "id"], |r| r.get::<_, String>(3))
                    .map_err(db_error)?
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(db_error)?;
                Ok(lines)
            })
            .await
            .expect("plan");
        let schemas: Vec<&String> = plan.iter().filter(|l| l.contains(" s ")).collect();
        assert_eq!(schemas.len(), 1, "{plan:?}");
        assert!(schemas[0].contains("USING COVERING INDEX connection_schemas_summary"), "{plan:?}");
    }

    /// The reads of every question (its connection, the approved examples)
    /// are parsed and planned once per connection, whatever values they are
    /// given: a join and a partial index used to make SQLite plan them again
    /// on every use.
    #[tokio::test]
    async fn a_question_s_reads_are_planned_once() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = SqliteStore::open(&dir.path().join("custard.db")).expect("open");
        let mut keys = Vec::new();
        for name in ["ada", "grace"] {
            let user = NewUser {
                email: format!("{name}@example.com"),
                password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".to_owned(),
                first_name: name.to_owned(),
                last_name: "Tester".to_owned(),
            };
            let signup = store.create_user_with_org(user, name.to_owned()).await.expect("sign up");
            let org = signup.organization.id;
            let new = NewConnection {
                org_id: org.clone(),
                name: name.to_owned(),
                dialect: custard_core::Dialect::Postgres,
                key_hash: format!("{name}-key-hash"),
                key_prefix: "custard_AbCd".to_owned(),
            };
            let connection = store.create_connection(new).await.expect("connection");
            keys.push((org, connection.id));
        }
        let uses = 6;
        let statuses = store
            .lookup(move |conn| {
                for (org, id) in keys.iter().cycle().take(uses) {
                    platform::select_connection(conn, org, id)?;
                    platform::approved_examples(conn, org, id, 5)?;
                }
                let status = |sql: &str| -> Result<(i32, i32), StoreError> {
                    let stmt = conn.prepare_cached(sql).map_err(db_error)?;
                    let run = stmt.get_status(rusqlite::StatementStatus::Run);
                    Ok((run, stmt.get_status(rusqlite::StatementStatus::RePrepare)))
                };
                Ok([
                    status(&platform::select_connection_sql())?,
                    status(&platform::approved_examples_sql())?,
                ])
            })
            .await
            .expect("reads");
        // Run as often as asked (the very statements), and never prepared again.
        let uses = i32::try_from(uses).expect("small");
        assert_eq!(statuses, [(uses, 0), (uses, 0)]);
    }

    #[tokio::test]
    async fn connections_are_durable_and_enforce_foreign_keys() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("custard.db");
        let store = SqliteStore::open(&path).expect("open");
        let pragmas = store
            .run(|conn| {
                let get = |name: &str| -> Result<String, StoreError> {
                    conn.query_row(&format!("PRAGMA {name}"), [], |r| {
                        r.get::<_, rusqlite::types::Value>(0)
                    })
                    .map(|v| format!("{v:?}"))
                    .map_err(db_error)
                };
                Ok([get("journal_mode")?, get("synchronous")?, get("foreign_keys")?])
            })
            .await
            .expect("pragmas");
        assert_eq!(pragmas, [r#"Text("wal")"#, "Integer(2)", "Integer(1)"]);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).expect("metadata").permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "the database is private to its owner");
        }
    }
}

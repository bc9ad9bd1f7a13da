//! [`SqliteStore`]: the embedded store, one SQLite file in the data dir.
//!
//! One writing connection behind an async mutex serves every write on a
//! blocking thread (SQLite has a single writer anyway, and waiting callers
//! hold no thread); reads go to a small pool of read-only connections, which
//! WAL lets run beside a commit instead of queueing behind its fsync. WAL with
//! `synchronous = FULL` makes each commit durable before the call returns, and
//! a read that starts after a commit sees it.
//! Multi-statement writes use `BEGIN IMMEDIATE`, so they never fail half-way on
//! a lock upgrade when another process shares the file.
//!
//! This file holds the accounts' SQL; the platform's (connections, schemas,
//! history) is in `sqlite_platform.rs`, a child module sharing its helpers.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SubsecRound, Utc};
use custard_core::BoxFuture;
use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSqlOutput, ValueRef};
use rusqlite::{
    Connection, OpenFlags, OptionalExtension, Row, ToSql, Transaction, TransactionBehavior, params,
};
use tokio::sync::Mutex;

use super::migrations::migrate;
use super::{
    ApprovedExample, ConflictKind, Connection as DbConnection, ConnectionId, ConnectionUpdate,
    ConversationId, HistoryEntry, Invitation, Member, Membership, NewConnection, NewQueryRecord,
    NewToken, NewUser, OneTimeToken, OrgId, Organization, ProfileUpdate, QueryDeletion,
    QueryFilter, QueryId, QueryRecord, Role, Session, SessionGrant, SessionId, SignUp, Store,
    StoreError, StoredSchema, TokenId, TokenKind, User, UserId, normalize_email,
};

#[path = "sqlite_platform.rs"]
mod platform;

/// How long a statement waits for another process's lock before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Read-only connections: enough for the reads of a few concurrent requests.
const READERS: usize = 4;

const USER_COLUMNS: &str =
    "id, email, password_hash, first_name, last_name, email_verified_at, created_at, updated_at";
const ORG_COLUMNS: &str = "id, name, created_at";
const MEMBERSHIP_COLUMNS: &str = "org_id, user_id, role, created_at";
const SESSION_COLUMNS: &str = "id, user_id, created_at, expires_at, revoked_at";
const TOKEN_COLUMNS: &str = "id, kind, user_id, email, org_id, role, created_at, expires_at, \
                             used_at, invited_by, revoked_at";

/// The SQLite implementation of [`Store`]; cheap to clone (clones share the connection).
#[derive(Debug, Clone)]
pub struct SqliteStore {
    path: PathBuf,
    conn: Arc<Mutex<Connection>>,
    readers: Arc<Readers>,
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
            .map_err(|e| StoreError::Unavailable(format!("cannot configure {shown}: {e}")))?;
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        migrate(&mut conn)?;
        let readers = (0..READERS)
            .map(|_| open_reader(&plain))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| StoreError::Unavailable(format!("cannot open {shown} to read: {e}")))?;
        let readers = Readers {
            permits: Arc::new(tokio::sync::Semaphore::new(readers.len())),
            idle: std::sync::Mutex::new(readers),
        };
        Ok(SqliteStore {
            path: path.to_owned(),
            conn: Arc::new(Mutex::new(conn)),
            readers: Arc::new(readers),
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
            // A permit means an idle connection is there to take.
            let permit = Arc::clone(&readers.permits)
                .acquire_owned()
                .await
                .map_err(|e| StoreError::Internal(format!("store readers closed: {e}")))?;
            tokio::task::spawn_blocking(move || {
                let mut lease = Lease::take(&readers, permit)?;
                f(lease.conn())
            })
            .await
            .map_err(|e| StoreError::Internal(format!("store task failed: {e}")))?
        })
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
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok(conn)
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
        self.run(move |conn| insert_user(conn, &user, None, Millis::now()))
    }

    fn create_user_with_org(
        &self,
        user: NewUser,
        org_name: String,
    ) -> BoxFuture<'_, Result<SignUp, StoreError>> {
        self.run(move |conn| {
            let tx = write_tx(conn)?;
            let at = Millis::now();
            let user = insert_user(&tx, &user, None, at)?;
            let organization = insert_org(&tx, &org_name, at)?;
            let membership = insert_membership(&tx, &organization.id, &user.id, Role::Owner, at)?;
            tx.commit().map_err(db_error)?;
            Ok(SignUp { user, organization, membership })
        })
    }

    fn get_user<'a>(&'a self, id: &'a UserId) -> BoxFuture<'a, Result<User, StoreError>> {
        let id = id.clone();
        self.read(move |conn| select_user(conn, &id))
    }

    fn get_user_by_email<'a>(&'a self, email: &'a str) -> BoxFuture<'a, Result<User, StoreError>> {
        let email = normalize_email(email);
        self.read(move |conn| {
            conn.cached_row(
                &format!("SELECT {USER_COLUMNS} FROM users WHERE email = ?1"),
                [&email],
                user_from_row,
            )
            .map_err(db_error)
        })
    }

    fn update_profile<'a>(
        &'a self,
        id: &'a UserId,
        profile: ProfileUpdate,
    ) -> BoxFuture<'a, Result<User, StoreError>> {
        let id = id.clone();
        self.run(move |conn| {
            conn.cached_row(
                &format!(
                    "UPDATE users SET first_name = ?2, last_name = ?3, updated_at = ?4
                     WHERE id = ?1 RETURNING {USER_COLUMNS}"
                ),
                params![id, profile.first_name, profile.last_name, Millis::now()],
                user_from_row,
            )
            .map_err(db_error)
        })
    }

    fn set_password_hash<'a>(
        &'a self,
        id: &'a UserId,
        password_hash: String,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        let id = id.clone();
        self.run(move |conn| {
            let tx = write_tx(conn)?;
            let at = Millis::now();
            update_password(&tx, &id, &password_hash, at)?;
            end_reset_tokens(&tx, &id, at)?;
            tx.commit().map_err(db_error)
        })
    }

    fn mark_email_verified<'a>(
        &'a self,
        id: &'a UserId,
    ) -> BoxFuture<'a, Result<User, StoreError>> {
        let id = id.clone();
        self.run(move |conn| mark_verified(conn, &id, None, Millis::now()))
    }

    fn get_organization<'a>(
        &'a self,
        org: &'a OrgId,
    ) -> BoxFuture<'a, Result<Organization, StoreError>> {
        let org = org.clone();
        self.read(move |conn| select_org(conn, &org))
    }

    fn organizations_of_user<'a>(
        &'a self,
        user: &'a UserId,
    ) -> BoxFuture<'a, Result<Vec<(Organization, Membership)>, StoreError>> {
        let user = user.clone();
        self.read(move |conn| {
            let mut stmt = conn
                .prepare(
                    "SELECT o.id, o.name, o.created_at, m.org_id, m.user_id, m.role, m.created_at
                     FROM memberships m JOIN organizations o ON o.id = m.org_id
                     WHERE m.user_id = ?1 ORDER BY m.created_at, m.org_id",
                )
                .map_err(db_error)?;
            let rows = stmt
                .query_map([&user], |row| {
                    let org = Organization {
                        id: row.get(0)?,
                        name: row.get(1)?,
                        created_at: row.get::<_, Millis>(2)?.0,
                    };
                    let membership = Membership {
                        org_id: row.get(3)?,
                        user_id: row.get(4)?,
                        role: row.get(5)?,
                        created_at: row.get::<_, Millis>(6)?.0,
                    };
                    Ok((org, membership))
                })
                .map_err(db_error)?;
            rows.collect::<rusqlite::Result<Vec<_>>>().map_err(db_error)
        })
    }

    fn list_members<'a>(
        &'a self,
        org: &'a OrgId,
    ) -> BoxFuture<'a, Result<Vec<Member>, StoreError>> {
        let org = org.clone();
        self.read(move |conn| {
            // One read transaction: the organisation check and the list see one snapshot.
            let tx = conn.transaction().map_err(db_error)?;
            select_org(&tx, &org)?;
            let mut stmt = tx
                .prepare(
                    "SELECT u.id, u.email, u.first_name, u.last_name, m.role, m.created_at
                     FROM memberships m JOIN users u ON u.id = m.user_id
                     WHERE m.org_id = ?1 ORDER BY m.created_at, u.id",
                )
                .map_err(db_error)?;
            let rows = stmt
                .query_map([&org], |row| {
                    Ok(Member {
                        user_id: row.get(0)?,
                        email: row.get(1)?,
                        first_name: row.get(2)?,
                        last_name: row.get(3)?,
                        role: row.get(4)?,
                        joined_at: row.get::<_, Millis>(5)?.0,
                    })
                })
                .map_err(db_error)?;
            rows.collect::<rusqlite::Result<Vec<_>>>().map_err(db_error)
        })
    }

    fn get_membership<'a>(
        &'a self,
        org: &'a OrgId,
        user: &'a UserId,
    ) -> BoxFuture<'a, Result<Membership, StoreError>> {
        let (org, user) = (org.clone(), user.clone());
        self.read(move |conn| select_membership(conn, &org, &user))
    }

    fn set_role<'a>(
        &'a self,
        org: &'a OrgId,
        user: &'a UserId,
        role: Role,
    ) -> BoxFuture<'a, Result<Membership, StoreError>> {
        let (org, user) = (org.clone(), user.clone());
        self.run(move |conn| {
            let tx = write_tx(conn)?;
            let current = select_membership(&tx, &org, &user)?;
            if current.role == Role::Owner && role != Role::Owner {
                ensure_other_owner(&tx, &org)?;
            }
            let membership = tx
                .cached_row(
                    &format!(
                        "UPDATE memberships SET role = ?3 WHERE org_id = ?1 AND user_id = ?2
                         RETURNING {MEMBERSHIP_COLUMNS}"
                    ),
                    params![org, user, role],
                    membership_from_row,
                )
                .map_err(db_error)?;
            match role {
                Role::Owner => {}
                Role::Admin => {
                    end_invitations_by(&tx, &org, &user, Some(Role::Owner), Millis::now())?
                }
                Role::Member => end_invitations_by(&tx, &org, &user, None, Millis::now())?,
            }
            tx.commit().map_err(db_error)?;
            Ok(membership)
        })
    }

    fn remove_member<'a>(
        &'a self,
        org: &'a OrgId,
        user: &'a UserId,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        let (org, user) = (org.clone(), user.clone());
        self.run(move |conn| {
            let tx = write_tx(conn)?;
            let current = select_membership(&tx, &org, &user)?;
            if current.role == Role::Owner {
                ensure_other_owner(&tx, &org)?;
            }
            tx.execute(
                "DELETE FROM memberships WHERE org_id = ?1 AND user_id = ?2",
                params![org, user],
            )
            .map_err(db_error)?;
            end_invitations_by(&tx, &org, &user, None, Millis::now())?;
            tx.commit().map_err(db_error)
        })
    }

    fn create_session<'a>(
        &'a self,
        user: &'a UserId,
        expires_at: DateTime<Utc>,
        grant: SessionGrant<'a>,
    ) -> BoxFuture<'a, Result<Session, StoreError>> {
        let user = user.clone();
        let grant = match grant {
            SessionGrant::Password(hash) => (Some(hash.to_owned()), None),
            SessionGrant::Replaces(old) => (None, Some(old.clone())),
        };
        self.run(move |conn| {
            // A write transaction: a password change cannot slip in between
            // the check and the insert.
            let tx = write_tx(conn)?;
            let now = Millis::now();
            let holds = match &grant {
                (Some(hash), _) => tx
                    .query_row(
                        "SELECT 1 FROM users WHERE id = ?1 AND password_hash = ?2",
                        params![user, hash],
                        |_| Ok(()),
                    )
                    .optional()
                    .map_err(db_error)?
                    .is_some(),
                (_, Some(old)) => {
                    tx.execute(
                        "UPDATE sessions SET revoked_at = ?3 WHERE id = ?1 AND user_id = ?2
                           AND revoked_at IS NULL AND expires_at > ?3",
                        params![old, user, now],
                    )
                    .map_err(db_error)?
                        == 1
                }
                (None, None) => false,
            };
            if !holds {
                return Err(StoreError::Stale);
            }
            let session = tx
                .cached_row(
                    &format!(
                        "INSERT INTO sessions (id, user_id, created_at, expires_at)
                         VALUES (?1, ?2, ?3, ?4) RETURNING {SESSION_COLUMNS}"
                    ),
                    params![SessionId::random(), user, now, Millis(expires_at)],
                    session_from_row,
                )
                .map_err(db_error)?;
            tx.commit().map_err(db_error)?;
            Ok(session)
        })
    }

    fn get_session<'a>(&'a self, id: &'a SessionId) -> BoxFuture<'a, Result<Session, StoreError>> {
        let id = id.clone();
        self.read(move |conn| {
            conn.cached_row(
                &format!("SELECT {SESSION_COLUMNS} FROM sessions WHERE id = ?1"),
                [&id],
                session_from_row,
            )
            .map_err(db_error)
        })
    }

    fn session_context<'a>(
        &'a self,
        session: &'a SessionId,
        org: &'a OrgId,
    ) -> BoxFuture<'a, Result<(Session, User, Membership), StoreError>> {
        let (id, org) = (session.clone(), org.clone());
        self.read(move |conn| {
            // One snapshot for the three reads.
            let tx = conn.transaction().map_err(db_error)?;
            let session = tx
                .cached_row(
                    &format!("SELECT {SESSION_COLUMNS} FROM sessions WHERE id = ?1"),
                    [&id],
                    session_from_row,
                )
                .map_err(db_error)?;
            let user = select_user(&tx, &session.user_id)?;
            let membership = select_membership(&tx, &org, &user.id)?;
            Ok((session, user, membership))
        })
    }

    fn revoke_session<'a>(&'a self, id: &'a SessionId) -> BoxFuture<'a, Result<(), StoreError>> {
        let id = id.clone();
        self.run(move |conn| {
            let changed = conn
                .execute(
                    "UPDATE sessions SET revoked_at = coalesce(revoked_at, ?2) WHERE id = ?1",
                    params![id, Millis::now()],
                )
                .map_err(db_error)?;
            if changed == 0 { Err(StoreError::NotFound) } else { Ok(()) }
        })
    }

    fn revoke_user_sessions<'a>(
        &'a self,
        user: &'a UserId,
    ) -> BoxFuture<'a, Result<u64, StoreError>> {
        let user = user.clone();
        self.run(move |conn| revoke_all_sessions(conn, &user, Millis::now()))
    }

    fn revoke_other_sessions<'a>(
        &'a self,
        user: &'a UserId,
        keep: &'a SessionId,
    ) -> BoxFuture<'a, Result<u64, StoreError>> {
        let (user, keep) = (user.clone(), keep.clone());
        self.run(move |conn| revoke_sessions_but(conn, &user, &keep, Millis::now()))
    }

    fn change_password<'a>(
        &'a self,
        id: &'a UserId,
        old_hash: &'a str,
        password_hash: String,
        keep: &'a SessionId,
    ) -> BoxFuture<'a, Result<u64, StoreError>> {
        let (id, old_hash, keep) = (id.clone(), old_hash.to_owned(), keep.clone());
        self.run(move |conn| {
            let tx = write_tx(conn)?;
            let at = Millis::now();
            let current: Option<String> = tx
                .query_row("SELECT password_hash FROM users WHERE id = ?1", [&id], |r| r.get(0))
                .optional()
                .map_err(db_error)?;
            let kept = tx
                .query_row(
                    "SELECT 1 FROM sessions WHERE id = ?1 AND user_id = ?2
                       AND revoked_at IS NULL AND expires_at > ?3",
                    params![keep, id, at],
                    |_| Ok(()),
                )
                .optional()
                .map_err(db_error)?;
            match current {
                None => return Err(StoreError::NotFound),
                Some(hash) if hash != old_hash || kept.is_none() => return Err(StoreError::Stale),
                Some(_) => {}
            }
            update_password(&tx, &id, &password_hash, at)?;
            end_reset_tokens(&tx, &id, at)?;
            let signed_out = revoke_sessions_but(&tx, &id, &keep, at)?;
            tx.commit().map_err(db_error)?;
            Ok(signed_out)
        })
    }

    fn create_token(&self, token: NewToken) -> BoxFuture<'_, Result<OneTimeToken, StoreError>> {
        self.run(move |conn| {
            conn.cached_row(
                &format!(
                    "INSERT INTO one_time_tokens
                         (id, kind, token_hash, user_id, email, org_id, role, created_at,
                          expires_at, invited_by)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) RETURNING {TOKEN_COLUMNS}"
                ),
                params![
                    TokenId::random(),
                    token.kind,
                    token.token_hash,
                    token.user_id,
                    token.email,
                    token.org_id,
                    token.role,
                    Millis::now(),
                    Millis(token.expires_at),
                    token.invited_by,
                ],
                token_from_row,
            )
            .map_err(db_error)
        })
    }

    fn consume_token<'a>(
        &'a self,
        kind: TokenKind,
        token_hash: &'a str,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<OneTimeToken, StoreError>> {
        let token_hash = token_hash.to_owned();
        self.run(move |conn| consume(conn, kind, &token_hash, Millis(now)))
    }

    fn verify_email<'a>(
        &'a self,
        token_hash: &'a str,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<User, StoreError>> {
        let token_hash = token_hash.to_owned();
        self.run(move |conn| {
            let tx = write_tx(conn)?;
            let token = consume(&tx, TokenKind::EmailVerification, &token_hash, Millis(now))?;
            let user_id = token_user(&token)?;
            // A token sent to an address the user no longer has proves nothing.
            let user = mark_verified(&tx, user_id, Some(&token.email), Millis::now())?;
            tx.commit().map_err(db_error)?;
            Ok(user)
        })
    }

    fn password_reset_user<'a>(
        &'a self,
        token_hash: &'a str,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<User, StoreError>> {
        let token_hash = token_hash.to_owned();
        self.read(move |conn| {
            conn.cached_row(
                "SELECT u.id, u.email, u.password_hash, u.first_name, u.last_name,
                        u.email_verified_at, u.created_at, u.updated_at
                 FROM one_time_tokens t JOIN users u ON u.id = t.user_id
                 WHERE t.kind = ?1 AND t.token_hash = ?2 AND t.used_at IS NULL
                   AND t.revoked_at IS NULL AND t.expires_at > ?3",
                params![TokenKind::PasswordReset, token_hash, Millis(now)],
                user_from_row,
            )
            .map_err(db_error)
        })
    }

    fn reset_password<'a>(
        &'a self,
        token_hash: &'a str,
        password_hash: String,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<User, StoreError>> {
        let token_hash = token_hash.to_owned();
        self.run(move |conn| {
            let tx = write_tx(conn)?;
            let token = consume(&tx, TokenKind::PasswordReset, &token_hash, Millis(now))?;
            let user_id = token_user(&token)?;
            let at = Millis::now();
            let user = update_password(&tx, user_id, &password_hash, at)?;
            end_reset_tokens(&tx, user_id, at)?;
            revoke_all_sessions(&tx, user_id, at)?;
            tx.commit().map_err(db_error)?;
            Ok(user)
        })
    }

    fn accept_invitation<'a>(
        &'a self,
        token_hash: &'a str,
        user: &'a UserId,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<Membership, StoreError>> {
        let (token_hash, user) = (token_hash.to_owned(), user.clone());
        self.run(move |conn| {
            let tx = write_tx(conn)?;
            let token = consume(&tx, TokenKind::Invitation, &token_hash, Millis(now))?;
            let user = select_user(&tx, &user)?;
            let membership = join_by(&tx, &token, &user)?;
            tx.commit().map_err(db_error)?;
            Ok(membership)
        })
    }

    fn create_user_from_invitation<'a>(
        &'a self,
        user: NewUser,
        token_hash: &'a str,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<SignUp, StoreError>> {
        let token_hash = token_hash.to_owned();
        self.run(move |conn| {
            let tx = write_tx(conn)?;
            let token = consume(&tx, TokenKind::Invitation, &token_hash, Millis(now))?;
            let (org, role) = invitation_target(&token)?;
            ensure_sender_may_invite(&tx, &token)?;
            if normalize_email(&user.email) != token.email {
                return Err(StoreError::NotFound);
            }
            let at = Millis::now();
            let user = insert_user(&tx, &user, Some(at), at)?;
            let membership = insert_membership(&tx, org, &user.id, role, at)?;
            let organization = select_org(&tx, org)?;
            tx.commit().map_err(db_error)?;
            Ok(SignUp { user, organization, membership })
        })
    }

    fn list_invitations<'a>(
        &'a self,
        org: &'a OrgId,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<Vec<Invitation>, StoreError>> {
        let org = org.clone();
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached(&format!(
                    "SELECT {INVITATION_COLUMNS} {INVITATION_FROM}
                     ORDER BY t.created_at, t.rowid"
                ))
                .map_err(db_error)?;
            let rows = stmt
                .query_map(params![org, Millis(now), None::<TokenId>], invitation_from_row)
                .map_err(db_error)?;
            rows.collect::<rusqlite::Result<Vec<_>>>().map_err(db_error)
        })
    }

    fn get_invitation<'a>(
        &'a self,
        org: &'a OrgId,
        id: &'a TokenId,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<Invitation, StoreError>> {
        let (org, id) = (org.clone(), id.clone());
        self.read(move |conn| {
            conn.cached_row(
                &format!("SELECT {INVITATION_COLUMNS} {INVITATION_FROM}"),
                params![org, Millis(now), Some(id)],
                invitation_from_row,
            )
            .map_err(db_error)
        })
    }

    fn revoke_invitation<'a>(
        &'a self,
        org: &'a OrgId,
        id: &'a TokenId,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        let (org, id) = (org.clone(), id.clone());
        self.run(move |conn| {
            let changed = conn
                .execute(
                    "UPDATE one_time_tokens SET revoked_at = ?3
                     WHERE id = ?2 AND org_id = ?1 AND kind = 'invitation' AND used_at IS NULL
                       AND revoked_at IS NULL AND expires_at > ?3",
                    params![org, id, Millis(now)],
                )
                .map_err(db_error)?;
            if changed == 0 { Err(StoreError::NotFound) } else { Ok(()) }
        })
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
            let tx = write_tx(conn)?;
            let changed = tx
                .execute(
                    "UPDATE one_time_tokens SET token_hash = ?4, expires_at = ?5, invited_by = ?6
                     WHERE id = ?2 AND org_id = ?1 AND kind = 'invitation' AND used_at IS NULL
                       AND revoked_at IS NULL AND expires_at > ?3",
                    params![org, id, Millis(now), token_hash, Millis(expires_at), by],
                )
                .map_err(db_error)?;
            if changed == 0 {
                return Err(StoreError::NotFound);
            }
            let renewed = tx
                .cached_row(
                    &format!("SELECT {INVITATION_COLUMNS} {INVITATION_FROM}"),
                    params![org, Millis(now), Some(id)],
                    invitation_from_row,
                )
                .map_err(db_error)?;
            tx.commit().map_err(db_error)?;
            Ok(renewed)
        })
    }

    fn invitation_by_token<'a>(
        &'a self,
        token_hash: &'a str,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<super::ReceivedInvitation, StoreError>> {
        let token_hash = token_hash.to_owned();
        self.read(move |conn| {
            conn.cached_row(
                &format!("{RECEIVED_SELECT} AND t.token_hash = ?1"),
                params![token_hash, Millis(now)],
                received_from_row,
            )
            .map_err(db_error)
        })
    }

    fn invitations_for_email<'a>(
        &'a self,
        email: &'a str,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<Vec<super::ReceivedInvitation>, StoreError>> {
        let email = normalize_email(email);
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached(&format!(
                    "{RECEIVED_SELECT} AND t.email = ?1 ORDER BY t.created_at, t.rowid"
                ))
                .map_err(db_error)?;
            let rows =
                stmt.query_map(params![email, Millis(now)], received_from_row).map_err(db_error)?;
            rows.collect::<rusqlite::Result<Vec<_>>>().map_err(db_error)
        })
    }

    fn accept_invitation_by_id<'a>(
        &'a self,
        id: &'a TokenId,
        user: &'a UserId,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<Membership, StoreError>> {
        let (id, user) = (id.clone(), user.clone());
        self.run(move |conn| {
            let tx = write_tx(conn)?;
            let token = tx
                .cached_row(
                    &format!(
                        "UPDATE one_time_tokens SET used_at = ?2
                         WHERE kind = 'invitation' AND id = ?1 AND used_at IS NULL
                           AND revoked_at IS NULL AND expires_at > ?2
                         RETURNING {TOKEN_COLUMNS}"
                    ),
                    params![id, Millis(now)],
                    token_from_row,
                )
                .map_err(db_error)?;
            let user = select_user(&tx, &user)?;
            // Without the token, only a verified address proves the invitation reached its owner.
            if !user.is_verified() {
                return Err(StoreError::NotFound);
            }
            let membership = join_by(&tx, &token, &user)?;
            tx.commit().map_err(db_error)?;
            Ok(membership)
        })
    }

    fn create_organization<'a>(
        &'a self,
        owner: &'a UserId,
        name: String,
    ) -> BoxFuture<'a, Result<(Organization, Membership), StoreError>> {
        let owner = owner.clone();
        self.run(move |conn| {
            let tx = write_tx(conn)?;
            let at = Millis::now();
            select_user(&tx, &owner)?;
            let organization = insert_org(&tx, &name, at)?;
            let membership = insert_membership(&tx, &organization.id, &owner, Role::Owner, at)?;
            tx.commit().map_err(db_error)?;
            Ok((organization, membership))
        })
    }

    fn delete_organization<'a>(
        &'a self,
        org: &'a OrgId,
        by: &'a UserId,
    ) -> BoxFuture<'a, Result<Vec<ConnectionId>, StoreError>> {
        let (org, by) = (org.clone(), by.clone());
        self.run(move |conn| {
            let tx = write_tx(conn)?;
            select_org(&tx, &org)?;
            match select_membership(&tx, &org, &by) {
                Ok(m) if m.role == Role::Owner => {}
                Ok(_) | Err(StoreError::NotFound) => return Err(StoreError::Stale),
                Err(e) => return Err(e),
            }
            let connections = {
                let mut stmt = tx
                    .prepare_cached("SELECT id FROM connections WHERE org_id = ?1")
                    .map_err(db_error)?;
                let rows = stmt.query_map([&org], |r| r.get(0)).map_err(db_error)?;
                rows.collect::<rusqlite::Result<Vec<ConnectionId>>>().map_err(db_error)?
            };
            // Memberships, invitations, connections, schemas and history cascade.
            tx.execute("DELETE FROM organizations WHERE id = ?1", [&org]).map_err(db_error)?;
            tx.commit().map_err(db_error)?;
            Ok(connections)
        })
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
        self.read(move |conn| platform::select_connection(conn, &org, &id))
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
        self.run(move |conn| platform::record_query(conn, &record))
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

fn insert_user(
    conn: &Connection,
    user: &NewUser,
    verified_at: Option<Millis>,
    at: Millis,
) -> Result<User, StoreError> {
    conn.cached_row(
        &format!(
            "INSERT INTO users (id, email, password_hash, first_name, last_name,
                                email_verified_at, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7) RETURNING {USER_COLUMNS}"
        ),
        params![
            UserId::random(),
            normalize_email(&user.email),
            user.password_hash,
            user.first_name,
            user.last_name,
            verified_at,
            at,
        ],
        user_from_row,
    )
    .map_err(|e| conflict_or(e, rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE, ConflictKind::Email))
}

fn insert_org(conn: &Connection, name: &str, at: Millis) -> Result<Organization, StoreError> {
    conn.cached_row(
        &format!(
            "INSERT INTO organizations (id, name, created_at) VALUES (?1, ?2, ?3)
             RETURNING {ORG_COLUMNS}"
        ),
        params![OrgId::random(), name, at],
        org_from_row,
    )
    .map_err(db_error)
}

fn insert_membership(
    conn: &Connection,
    org: &OrgId,
    user: &UserId,
    role: Role,
    at: Millis,
) -> Result<Membership, StoreError> {
    conn.cached_row(
        &format!(
            "INSERT INTO memberships (org_id, user_id, role, created_at) VALUES (?1, ?2, ?3, ?4)
             RETURNING {MEMBERSHIP_COLUMNS}"
        ),
        params![org, user, role, at],
        membership_from_row,
    )
    .map_err(|e| {
        conflict_or(e, rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY, ConflictKind::Membership)
    })
}

fn select_user(conn: &Connection, id: &UserId) -> Result<User, StoreError> {
    conn.cached_row(&format!("SELECT {USER_COLUMNS} FROM users WHERE id = ?1"), [id], user_from_row)
        .map_err(db_error)
}

fn select_org(conn: &Connection, id: &OrgId) -> Result<Organization, StoreError> {
    conn.cached_row(
        &format!("SELECT {ORG_COLUMNS} FROM organizations WHERE id = ?1"),
        [id],
        org_from_row,
    )
    .map_err(db_error)
}

fn select_membership(
    conn: &Connection,
    org: &OrgId,
    user: &UserId,
) -> Result<Membership, StoreError> {
    conn.cached_row(
        &format!("SELECT {MEMBERSHIP_COLUMNS} FROM memberships WHERE org_id = ?1 AND user_id = ?2"),
        params![org, user],
        membership_from_row,
    )
    .map_err(db_error)
}

/// Fails with [`StoreError::LastOwner`] unless the organisation has two owners or more.
fn ensure_other_owner(conn: &Connection, org: &OrgId) -> Result<(), StoreError> {
    let owners: i64 = conn
        .cached_row(
            "SELECT count(*) FROM memberships WHERE org_id = ?1 AND role = 'owner'",
            [org],
            |r| r.get(0),
        )
        .map_err(db_error)?;
    if owners <= 1 { Err(StoreError::LastOwner) } else { Ok(()) }
}

fn update_password(
    conn: &Connection,
    id: &UserId,
    password_hash: &str,
    at: Millis,
) -> Result<User, StoreError> {
    conn.cached_row(
        &format!(
            "UPDATE users SET password_hash = ?2, updated_at = ?3 WHERE id = ?1
             RETURNING {USER_COLUMNS}"
        ),
        params![id, password_hash, at],
        user_from_row,
    )
    .map_err(db_error)
}

/// Marks the user verified, keeping an earlier verification time; when `email`
/// is given, only if the user still has that email.
fn mark_verified(
    conn: &Connection,
    id: &UserId,
    email: Option<&str>,
    at: Millis,
) -> Result<User, StoreError> {
    conn.cached_row(
        &format!(
            "UPDATE users SET email_verified_at = coalesce(email_verified_at, ?3), updated_at = ?3
             WHERE id = ?1 AND (?2 IS NULL OR email = ?2) RETURNING {USER_COLUMNS}"
        ),
        params![id, email, at],
        user_from_row,
    )
    .map_err(db_error)
}

/// Ends every outstanding password-reset token of the user.
fn end_reset_tokens(conn: &Connection, user: &UserId, at: Millis) -> Result<(), StoreError> {
    conn.prepare_cached(
        "UPDATE one_time_tokens SET revoked_at = ?2
         WHERE kind = 'password_reset' AND user_id = ?1 AND used_at IS NULL AND revoked_at IS NULL",
    )
    .and_then(|mut stmt| stmt.execute(params![user, at]))
    .map(drop)
    .map_err(db_error)
}

/// Ends the pending invitations `inviter` sent to `org`: those of `role`
/// only, or all of them.
fn end_invitations_by(
    conn: &Connection,
    org: &OrgId,
    inviter: &UserId,
    role: Option<Role>,
    at: Millis,
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "UPDATE one_time_tokens SET revoked_at = ?4
         WHERE kind = 'invitation' AND org_id = ?1 AND invited_by = ?2
           AND (?3 IS NULL OR role = ?3) AND used_at IS NULL AND revoked_at IS NULL",
    )
    .and_then(|mut stmt| stmt.execute(params![org, inviter, role, at]))
    .map(drop)
    .map_err(db_error)
}

/// Refuses (NotFound) an invitation whose sender is no longer a member of its
/// organisation, or no longer may invite to its role; invitations from before
/// senders were recorded have none to check.
fn ensure_sender_may_invite(conn: &Connection, token: &OneTimeToken) -> Result<(), StoreError> {
    let (Some(sender), (org, role)) = (&token.invited_by, invitation_target(token)?) else {
        return Ok(());
    };
    let sender = select_membership(conn, org, sender)?;
    let may = match sender.role {
        Role::Owner => true,
        Role::Admin => role != Role::Owner,
        Role::Member => false,
    };
    if may { Ok(()) } else { Err(StoreError::NotFound) }
}

/// Revokes the user's unrevoked sessions other than `keep`; returns how many.
fn revoke_sessions_but(
    conn: &Connection,
    user: &UserId,
    keep: &SessionId,
    at: Millis,
) -> Result<u64, StoreError> {
    let changed = conn
        .execute(
            "UPDATE sessions SET revoked_at = ?3
             WHERE user_id = ?1 AND id <> ?2 AND revoked_at IS NULL",
            params![user, keep, at],
        )
        .map_err(db_error)?;
    Ok(changed as u64)
}

/// Makes `user` a member through the consumed invitation `token`: it must
/// have been sent to the user's email by a sender who still may send it
/// (else NotFound); an existing member is a [`ConflictKind::Membership`].
fn join_by(conn: &Connection, token: &OneTimeToken, user: &User) -> Result<Membership, StoreError> {
    let (org, role) = invitation_target(token)?;
    ensure_sender_may_invite(conn, token)?;
    if user.email != token.email {
        return Err(StoreError::NotFound);
    }
    insert_membership(conn, org, &user.id, role, Millis::now())
}

fn revoke_all_sessions(conn: &Connection, user: &UserId, at: Millis) -> Result<u64, StoreError> {
    let changed = conn
        .execute(
            "UPDATE sessions SET revoked_at = ?2 WHERE user_id = ?1 AND revoked_at IS NULL",
            params![user, at],
        )
        .map_err(db_error)?;
    Ok(changed as u64)
}

/// Marks the token used in one statement, so concurrent consumers cannot both win.
fn consume(
    conn: &Connection,
    kind: TokenKind,
    token_hash: &str,
    now: Millis,
) -> Result<OneTimeToken, StoreError> {
    conn.cached_row(
        &format!(
            "UPDATE one_time_tokens SET used_at = ?3
             WHERE kind = ?1 AND token_hash = ?2 AND used_at IS NULL AND revoked_at IS NULL
               AND expires_at > ?3
             RETURNING {TOKEN_COLUMNS}"
        ),
        params![kind, token_hash, now],
        token_from_row,
    )
    .map_err(db_error)
}

fn token_user(token: &OneTimeToken) -> Result<&UserId, StoreError> {
    token.user_id.as_ref().ok_or_else(|| StoreError::Internal("token has no user".to_owned()))
}

fn invitation_target(token: &OneTimeToken) -> Result<(&OrgId, Role), StoreError> {
    match (&token.org_id, token.role) {
        (Some(org), Some(role)) => Ok((org, role)),
        _ => Err(StoreError::Internal("invitation has no organization or role".to_owned())),
    }
}

fn user_from_row(row: &Row<'_>) -> rusqlite::Result<User> {
    Ok(User {
        id: row.get(0)?,
        email: row.get(1)?,
        password_hash: row.get(2)?,
        first_name: row.get(3)?,
        last_name: row.get(4)?,
        email_verified_at: row.get::<_, Option<Millis>>(5)?.map(|m| m.0),
        created_at: row.get::<_, Millis>(6)?.0,
        updated_at: row.get::<_, Millis>(7)?.0,
    })
}

fn org_from_row(row: &Row<'_>) -> rusqlite::Result<Organization> {
    Ok(Organization { id: row.get(0)?, name: row.get(1)?, created_at: row.get::<_, Millis>(2)?.0 })
}

fn membership_from_row(row: &Row<'_>) -> rusqlite::Result<Membership> {
    Ok(Membership {
        org_id: row.get(0)?,
        user_id: row.get(1)?,
        role: row.get(2)?,
        created_at: row.get::<_, Millis>(3)?.0,
    })
}

fn session_from_row(row: &Row<'_>) -> rusqlite::Result<Session> {
    Ok(Session {
        id: row.get(0)?,
        user_id: row.get(1)?,
        created_at: row.get::<_, Millis>(2)?.0,
        expires_at: row.get::<_, Millis>(3)?.0,
        revoked_at: row.get::<_, Option<Millis>>(4)?.map(|m| m.0),
    })
}

fn token_from_row(row: &Row<'_>) -> rusqlite::Result<OneTimeToken> {
    Ok(OneTimeToken {
        id: row.get(0)?,
        kind: row.get(1)?,
        user_id: row.get(2)?,
        email: row.get(3)?,
        org_id: row.get(4)?,
        role: row.get(5)?,
        created_at: row.get::<_, Millis>(6)?.0,
        expires_at: row.get::<_, Millis>(7)?.0,
        used_at: row.get::<_, Option<Millis>>(8)?.map(|m| m.0),
        invited_by: row.get(9)?,
        revoked_at: row.get::<_, Option<Millis>>(10)?.map(|m| m.0),
    })
}

/// An invitation's columns, its sender's email included.
const INVITATION_COLUMNS: &str =
    "t.id, t.email, t.role, t.invited_by, u.email, t.created_at, t.expires_at";
/// The organisation's (`?1`) pending invitations at `?2`, or only the one
/// with id `?3` when it is not NULL.
const INVITATION_FROM: &str = "FROM one_time_tokens t LEFT JOIN users u ON u.id = t.invited_by
     WHERE t.kind = 'invitation' AND t.org_id = ?1 AND t.used_at IS NULL
       AND t.revoked_at IS NULL AND t.expires_at > ?2 AND (?3 IS NULL OR t.id = ?3)";

/// Pending invitations (`?2` is now) with their organisation and sender,
/// only those whose sender may still send them (as `ensure_sender_may_invite`
/// checks); callers add the condition on `?1`.
const RECEIVED_SELECT: &str = "
    SELECT t.id, t.email, t.role, t.org_id, o.name, u.first_name, u.last_name, u.email,
           t.expires_at
    FROM one_time_tokens t
    JOIN organizations o ON o.id = t.org_id
    LEFT JOIN users u ON u.id = t.invited_by
    LEFT JOIN memberships m ON m.org_id = t.org_id AND m.user_id = t.invited_by
    WHERE t.kind = 'invitation' AND t.used_at IS NULL AND t.revoked_at IS NULL
      AND t.expires_at > ?2
      AND (t.invited_by IS NULL OR m.role = 'owner' OR (m.role = 'admin' AND t.role <> 'owner'))";

fn received_from_row(row: &Row<'_>) -> rusqlite::Result<super::ReceivedInvitation> {
    let (first, last): (Option<String>, Option<String>) = (row.get(5)?, row.get(6)?);
    Ok(super::ReceivedInvitation {
        id: row.get(0)?,
        email: row.get(1)?,
        role: row.get(2)?,
        org_id: row.get(3)?,
        org_name: row.get(4)?,
        invited_by_name: first.zip(last).map(|(f, l)| format!("{f} {l}")),
        invited_by_email: row.get(7)?,
        expires_at: row.get::<_, Millis>(8)?.0,
    })
}

fn invitation_from_row(row: &Row<'_>) -> rusqlite::Result<Invitation> {
    Ok(Invitation {
        id: row.get(0)?,
        email: row.get(1)?,
        role: row.get(2)?,
        invited_by: row.get(3)?,
        invited_by_email: row.get(4)?,
        created_at: row.get::<_, Millis>(5)?.0,
        expires_at: row.get::<_, Millis>(6)?.0,
    })
}

/// Maps a SQLite error to a [`StoreError`]; no row is NotFound, locks and I/O are Unavailable.
pub(super) fn db_error(e: rusqlite::Error) -> StoreError {
    use rusqlite::ErrorCode as C;
    match &e {
        rusqlite::Error::QueryReturnedNoRows => StoreError::NotFound,
        rusqlite::Error::SqliteFailure(f, _)
            if matches!(
                f.code,
                C::DatabaseBusy
                    | C::DatabaseLocked
                    | C::CannotOpen
                    | C::DiskFull
                    | C::SystemIoFailure
                    | C::ReadOnly
                    | C::DatabaseCorrupt
                    | C::NotADatabase
                    | C::OutOfMemory
            ) =>
        {
            StoreError::Unavailable(e.to_string())
        }
        _ => StoreError::Internal(e.to_string()),
    }
}

/// Maps a violation of the constraint `extended_code` to a conflict, anything else as usual.
fn conflict_or(e: rusqlite::Error, extended_code: i32, kind: ConflictKind) -> StoreError {
    match &e {
        rusqlite::Error::SqliteFailure(f, _) if f.extended_code == extended_code => {
            StoreError::Conflict(kind)
        }
        _ => db_error(e),
    }
}

/// A UTC time stored as INTEGER unix milliseconds.
#[derive(Debug, Clone, Copy)]
struct Millis(DateTime<Utc>);

impl Millis {
    /// The store's clock, at the precision it stores.
    fn now() -> Self {
        Millis(Utc::now().trunc_subsecs(3))
    }
}

/// Converts a time to the stored INTEGER unix milliseconds.
pub(super) fn to_millis(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

impl ToSql for Millis {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(to_millis(self.0)))
    }
}

impl FromSql for Millis {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        let ms = i64::column_result(value)?;
        DateTime::from_timestamp_millis(ms).map(Millis).ok_or(FromSqlError::OutOfRange(ms))
    }
}

macro_rules! text_id_sql {
    ($($name:ident),*) => {$(
        impl ToSql for $name {
            fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
                Ok(ToSqlOutput::from(self.as_str()))
            }
        }

        impl FromSql for $name {
            fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
                String::column_result(value).map($name::from)
            }
        }
    )*};
}

text_id_sql!(UserId, OrgId, SessionId, TokenId, ConnectionId, QueryId, ConversationId);

impl ToSql for Role {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(self.as_str()))
    }
}

impl FromSql for Role {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        let name = value.as_str()?;
        Role::parse(name)
            .ok_or_else(|| FromSqlError::Other(format!("unknown role {name:?}").into()))
    }
}

impl ToSql for TokenKind {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(self.as_str()))
    }
}

impl FromSql for TokenKind {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        let name = value.as_str()?;
        TokenKind::parse(name)
            .ok_or_else(|| FromSqlError::Other(format!("unknown token kind {name:?}").into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

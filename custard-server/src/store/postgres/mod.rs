//! [`PostgresStore`]: the store in a PostgreSQL database, which several
//! server replicas can share.
//!
//! Connections come from a bounded pool; each carries a statement timeout and
//! an idle-in-transaction timeout, so no call can hang on a stuck database:
//! a pool that cannot hand out a connection in time, a database that cannot
//! be reached or a statement that runs too long is
//! [`StoreError::Unavailable`] (the API answers `503 store_unavailable`).
//! Opening retries with backoff for a while, then fails with the reason.
//!
//! Writes that read before they write (the last-owner rule, consuming a
//! token, checking what a session stands on) run in `SERIALIZABLE`
//! transactions, retried when PostgreSQL gives one up for a concurrent one:
//! replicas get the same guarantees the SQLite store gets from its single
//! writer. A commit returns once PostgreSQL has made it durable
//! (`synchronous_commit` as the database sets it; its default is on).
//!
//! This module holds the pool, opening and migrating ([`migrations`]), and the
//! [`Store`] implementation, which hands each call to the module of its
//! concern: [`accounts`] (users, organisations, sessions, one-time tokens),
//! [`personal_tokens`] and [`platform`] (connections, schemas, the history);
//! [`rows`] maps rows to the store's types and errors to [`StoreError`]s.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use custard_core::BoxFuture;
use deadpool_postgres::{GenericClient, Transaction};
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use tokio_postgres::{IsolationLevel, NoTls, Row};

use self::rows::PgError;
use super::attempts;
use super::{
    ApprovedExample, Connection, ConnectionId, ConnectionUpdate, ConversationId, HistoryEntry,
    Invitation, Member, Membership, NewConnection, NewPersonalToken, NewQueryRecord, NewToken,
    NewUser, OneTimeToken, OrgId, Organization, PersonalToken, PersonalTokenId, ProfileUpdate,
    QueryDeletion, QueryFilter, QueryId, QueryRecord, ReceivedInvitation, Role, Session,
    SessionGrant, SessionId, SignUp, Store, StoreError, StoredSchema, TokenId, TokenKind, User,
    UserId,
};

mod accounts;
pub(super) mod migrations;
mod personal_tokens;
mod platform;
mod rows;

/// How a server shares its PostgreSQL store with other servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sharing {
    /// Questions do not travel between servers: this one must be the only
    /// server on the store (an agent connected to another would be out of
    /// its reach). Opening fails while another server holds the store.
    Alone,
    /// Questions travel between servers: any number of such servers share
    /// the store, but none may while a server running [`Sharing::Alone`] holds it.
    Routed,
}

/// How the PostgreSQL store connects; [`Default`] suits one replica of a
/// small deployment.
#[derive(Debug, Clone)]
pub struct PostgresOptions {
    /// Whether other servers may use the store at the same time.
    pub sharing: Sharing,
    /// The most connections this replica opens.
    pub pool_size: usize,
    /// The longest any one statement may run.
    pub statement_timeout: Duration,
    /// How long a call waits for a free connection before it is Unavailable.
    pub wait_timeout: Duration,
    /// How long opening keeps retrying an unreachable database.
    pub open_patience: Duration,
}

impl Default for PostgresOptions {
    fn default() -> Self {
        PostgresOptions {
            sharing: Sharing::Alone,
            pool_size: 16,
            // Long enough for the heaviest call (deleting a connection with a
            // long history, a search through it), short enough that a stuck
            // statement frees its connection.
            statement_timeout: Duration::from_secs(30),
            wait_timeout: Duration::from_secs(5),
            open_patience: Duration::from_secs(30),
        }
    }
}

/// The PostgreSQL implementation of [`Store`]; cheap to clone (clones share the pool).
#[derive(Clone)]
pub struct PostgresStore {
    pool: Pool,
    /// Holds this server's claim on the store while any clone lives.
    claim: Arc<Claim>,
    /// The longest one call may take, retries and waiting for a connection included.
    call_timeout: Duration,
}

impl std::fmt::Debug for PostgresStore {
    // The pool's config holds the password; show only its size.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore").field("pool_size", &self.pool.status().max_size).finish()
    }
}

/// The first wait between two attempts to reach the database, doubled each time.
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
/// The longest wait between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(4);
/// One attempt in this many also deletes the attempt limits that have run out.
const PRUNE_ATTEMPTS_ONE_IN: u32 = 256;
/// How long past its time an attempt limit is kept before pruning, in microseconds.
const PRUNE_MARGIN_US: i64 = 60_000_000;
/// How long the migrations may take at start (they wait for another
/// server's, and may build indexes on large tables).
const MIGRATION_PATIENCE: Duration = Duration::from_secs(600);
/// How often a transaction PostgreSQL gave up for a concurrent one is run again.
const MAX_ATTEMPTS: u32 = 12;

impl PostgresStore {
    /// Connects to the database at `url` (`postgres://...`) and migrates it.
    ///
    /// An unreachable database is tried again with backoff for
    /// `options.open_patience`, each failure logged with its reason; then it
    /// fails with the last reason. Fails at once on a malformed URL and with
    /// [`StoreError::SchemaTooNew`] when a newer binary migrated the database.
    pub async fn open(url: &str, options: &PostgresOptions) -> Result<Self, StoreError> {
        let config = connect_config(url, options)?;
        let started = Instant::now();
        let mut backoff = FIRST_BACKOFF;
        let (mut client, connection) = loop {
            match config.connect(NoTls).await {
                Ok(connected) => break connected,
                Err(e) => {
                    let reason = rows::describe(&e);
                    if started.elapsed() + backoff > options.open_patience {
                        return Err(StoreError::Unavailable(format!(
                            "cannot reach the PostgreSQL store after {} s: {reason}",
                            started.elapsed().as_secs()
                        )));
                    }
                    tracing::warn!(%reason, retry_in_ms = backoff.as_millis() as u64,
                        "the PostgreSQL store is not reachable yet");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        };
        let driver = tokio::spawn(connection);
        // Claim first: a server refused the store must not migrate it under
        // the one that holds it. A database that accepts the connection and
        // then stops answering fails the start instead of hanging it.
        let claiming = lock(&client, options.sharing);
        tokio::time::timeout(options.open_patience, claiming).await.map_err(|_| {
            StoreError::Unavailable("the PostgreSQL store did not answer the claim".into())
        })??;
        tokio::time::timeout(MIGRATION_PATIENCE, migrations::migrate(&mut client)).await.map_err(
            |_| StoreError::Unavailable("migrating the PostgreSQL store took too long".into()),
        )??;
        // The connection that claimed and migrated goes on holding the claim.
        let claim = Claim::hold(client, driver, config.clone(), options.sharing);
        let manager = Manager::from_config(
            config,
            NoTls,
            // Verified: a connection the database closed is replaced, not handed out.
            ManagerConfig { recycling_method: RecyclingMethod::Verified },
        );
        let pool = Pool::builder(manager)
            .max_size(options.pool_size.max(1))
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(options.wait_timeout))
            .create_timeout(Some(options.wait_timeout))
            .recycle_timeout(Some(options.wait_timeout))
            .build()
            .map_err(|e| StoreError::Internal(format!("building the store's pool: {e}")))?;
        // A statement may run `statement_timeout`, after waiting for a
        // connection; a retried transaction gets one more of each.
        let call_timeout = (options.statement_timeout + options.wait_timeout) * 2;
        Ok(PostgresStore { pool, claim: Arc::new(claim), call_timeout })
    }

    /// A pooled connection.
    async fn client(&self) -> Result<Object, PgError> {
        self.pool.get().await.map_err(|e| match e {
            deadpool_postgres::PoolError::Backend(e) => PgError::Db(e),
            other => PgError::Pool(format!("no store connection: {other}")),
        })
    }
}

impl PostgresStore {
    /// Gives up on `call` when the database does not answer in time (a
    /// frozen server, a network that drops packets): PostgreSQL's own
    /// timeouts only hold while it runs, so the store keeps one of its own.
    fn bounded<'a, T: 'a>(
        &self,
        call: impl Future<Output = Result<T, StoreError>> + Send + 'a,
    ) -> BoxFuture<'a, Result<T, StoreError>> {
        let limit = self.call_timeout;
        let held = self.claim.is_held();
        Box::pin(async move {
            if !held {
                // Another server may have the store now: answer nothing from it.
                return Err(StoreError::Unavailable(
                    "this server lost its claim on the PostgreSQL store".into(),
                ));
            }
            tokio::time::timeout(limit, call).await.unwrap_or_else(|_| {
                Err(StoreError::Unavailable(format!(
                    "the PostgreSQL store did not answer within {} s",
                    limit.as_secs_f32()
                )))
            })
        })
    }
}

/// The advisory lock that says who uses the store: held exclusively by a
/// server running [`Sharing::Alone`], shared by servers that route.
const CLAIM_LOCK: i64 = 0x6375_7374_6172_6402;

/// A server's claim on the store: an advisory lock held by a connection of
/// its own for as long as the server runs. PostgreSQL drops it with the
/// connection, so a server that dies frees the store at once. While the
/// connection is lost, the store answers every call Unavailable, since
/// another server may have taken the store meanwhile.
#[derive(Debug)]
struct Claim {
    holder: tokio::task::JoinHandle<()>,
    held: Arc<AtomicBool>,
}

impl Drop for Claim {
    fn drop(&mut self) {
        // Ends the connection, which releases the lock.
        self.holder.abort();
    }
}

impl Claim {
    /// Keeps `client`, which holds the claim's lock, alive, and takes the
    /// claim again if its connection is lost.
    fn hold(
        client: tokio_postgres::Client,
        driver: tokio::task::JoinHandle<Result<(), tokio_postgres::Error>>,
        config: tokio_postgres::Config,
        sharing: Sharing,
    ) -> Claim {
        if sharing == Sharing::Alone {
            tracing::info!("this server is the only one on its PostgreSQL store");
        }
        let held = Arc::new(AtomicBool::new(true));
        let flag = Arc::clone(&held);
        let holder = tokio::spawn(async move {
            let (mut client, mut driver) = (client, driver);
            loop {
                // The lock lives as long as this connection.
                let _ = (&mut driver).await;
                flag.store(false, Ordering::SeqCst);
                drop(client);
                tracing::error!(
                    "lost the connection that holds this server's claim on the store; \
                     answering nothing from the store until it is taken again"
                );
                (client, driver) = reclaim(&config, sharing).await;
                flag.store(true, Ordering::SeqCst);
            }
        });
        Claim { holder, held }
    }

    fn is_held(&self) -> bool {
        self.held.load(Ordering::SeqCst)
    }
}

/// Takes the claim's lock on `client` without waiting.
async fn lock(client: &tokio_postgres::Client, sharing: Sharing) -> Result<(), StoreError> {
    let sql = match sharing {
        Sharing::Alone => "SELECT pg_try_advisory_lock($1)",
        Sharing::Routed => "SELECT pg_try_advisory_lock_shared($1)",
    };
    let taken: bool = client
        .query_one(sql, &[&CLAIM_LOCK])
        .await
        .and_then(|row| row.try_get(0))
        .map_err(|e| PgError::from(e).into_store())?;
    if taken {
        return Ok(());
    }
    Err(StoreError::Unavailable(match sharing {
        Sharing::Alone => "another custard-server uses this PostgreSQL store; without routing \
                           between servers only one may: stop the other one first"
            .to_owned(),
        Sharing::Routed => "a custard-server without routing between servers holds this \
                            PostgreSQL store: stop it first"
            .to_owned(),
    }))
}

/// Connects again and takes the claim again, retrying with backoff until it
/// has it (logging why not, each time).
async fn reclaim(
    config: &tokio_postgres::Config,
    sharing: Sharing,
) -> (tokio_postgres::Client, tokio::task::JoinHandle<Result<(), tokio_postgres::Error>>) {
    let mut backoff = FIRST_BACKOFF;
    loop {
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
        let (client, connection) = match config.connect(NoTls).await {
            Ok(connected) => connected,
            Err(e) => {
                tracing::warn!(reason = %rows::describe(&e), "cannot reach the store to claim it");
                continue;
            }
        };
        let driver = tokio::spawn(connection);
        let claimed = tokio::time::timeout(MAX_BACKOFF, lock(&client, sharing)).await;
        match claimed.unwrap_or_else(|_| Err(StoreError::Unavailable("no answer".into()))) {
            Ok(()) => {
                tracing::info!("this server holds its claim on the store again");
                return (client, driver);
            }
            Err(e) => {
                tracing::error!(reason = %e, "cannot claim the store again");
                driver.abort();
            }
        }
    }
}

/// The driver's configuration for `url`, with this store's timeouts: a
/// statement or an idle transaction that outlives them is ended by the server.
fn connect_config(
    url: &str,
    options: &PostgresOptions,
) -> Result<tokio_postgres::Config, StoreError> {
    let mut config: tokio_postgres::Config = url.parse().map_err(|e: tokio_postgres::Error| {
        // The driver's parse errors never repeat the URL (which may hold a password).
        StoreError::Unavailable(format!("invalid PostgreSQL store URL: {e}"))
    })?;
    let ms = |d: Duration| d.as_millis().max(1);
    let mut settings = config.get_options().map(str::to_owned).unwrap_or_default();
    settings.push_str(&format!(
        " -c statement_timeout={} -c idle_in_transaction_session_timeout={} -c lock_timeout={}",
        ms(options.statement_timeout),
        ms(options.statement_timeout * 3),
        ms(options.statement_timeout),
    ));
    config.options(settings.trim());
    config.application_name("custard-server");
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(Duration::from_secs(5));
    }
    Ok(config)
}

/// Runs `attempt` (one whole transaction) again while PostgreSQL gives it up
/// for a concurrent one, with a short randomised wait between tries; then
/// turns its error into a [`StoreError`].
async fn retry<T, F, Fut>(mut attempt: F) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, PgError>>,
{
    let mut tries = 0;
    loop {
        match attempt().await {
            Ok(value) => return Ok(value),
            Err(e) if e.is_retryable() && tries + 1 < MAX_ATTEMPTS => {
                tries += 1;
                let ceiling = 1u64 << tries.min(7);
                tokio::time::sleep(Duration::from_millis(rand::random_range(1..=ceiling))).await;
            }
            Err(e) => return Err(e.into_store()),
        }
    }
}

/// Starts a `SERIALIZABLE` transaction: what it reads still holds when it
/// commits, or the commit fails and [`retry`] runs it again.
async fn serializable(client: &mut Object) -> Result<Transaction<'_>, PgError> {
    Ok(client.build_transaction().isolation_level(IsolationLevel::Serializable).start().await?)
}

/// A statement's parameters.
type Params<'a> = &'a [&'a (dyn tokio_postgres::types::ToSql + Sync)];

/// The row `sql` returns, if any (it returns at most one).
async fn opt_row(
    c: &impl GenericClient,
    sql: &str,
    params: Params<'_>,
) -> Result<Option<Row>, PgError> {
    let statement = c.prepare_cached(sql).await?;
    Ok(c.query_opt(&statement, params).await?)
}

/// The row `sql` returns, or NotFound.
async fn one_row(c: &impl GenericClient, sql: &str, params: Params<'_>) -> Result<Row, PgError> {
    rows::found(opt_row(c, sql, params).await?)
}

/// Every row `sql` returns.
async fn all_rows(
    c: &impl GenericClient,
    sql: &str,
    params: Params<'_>,
) -> Result<Vec<Row>, PgError> {
    let statement = c.prepare_cached(sql).await?;
    Ok(c.query(&statement, params).await?)
}

/// Runs `sql`; how many rows it changed.
async fn execute(c: &impl GenericClient, sql: &str, params: Params<'_>) -> Result<u64, PgError> {
    let statement = c.prepare_cached(sql).await?;
    Ok(c.execute(&statement, params).await?)
}

/// Runs one statement-level read or write outside an explicit transaction.
async fn single<T, F, Fut>(store: &PostgresStore, f: F) -> Result<T, StoreError>
where
    F: FnOnce(Object) -> Fut,
    Fut: Future<Output = Result<T, PgError>>,
{
    let run = async {
        let client = store.client().await?;
        f(client).await
    };
    run.await.map_err(PgError::into_store)
}

impl Store for PostgresStore {
    fn shared_secret<'a>(
        &'a self,
        name: &'a str,
        candidate: String,
    ) -> BoxFuture<'a, Result<String, StoreError>> {
        self.bounded(single(self, move |client| async move {
            // A concurrent insert of the same name makes this one wait for it
            // and then do nothing; the read after it sees the winner.
            client
                .execute(
                    "INSERT INTO server_secrets (name, value, created_at) VALUES ($1, $2, $3)
                     ON CONFLICT (name) DO NOTHING",
                    &[&name, &candidate, &rows::now()],
                )
                .await?;
            let row = client
                .query_one("SELECT value FROM server_secrets WHERE name = $1", &[&name])
                .await?;
            Ok(row.try_get(0)?)
        }))
    }

    fn take_attempt<'a>(
        &'a self,
        key: &'a str,
        burst: u32,
        every: Duration,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<Option<Duration>, StoreError>> {
        self.bounded(single(self, move |client| async move {
            let now_us = attempts::micros(now);
            // One statement: a concurrent attempt on the key waits for this
            // one's row lock and is then judged on what it left.
            let admitted = client
                .query_opt(
                    "INSERT INTO attempt_limits (key, tat_us) VALUES ($1, $2::bigint + $3::bigint)
                     ON CONFLICT (key) DO UPDATE
                         SET tat_us = greatest(attempt_limits.tat_us, $2) + $3
                         WHERE greatest(attempt_limits.tat_us, $2) + $3 - $2 <= $4::bigint
                     RETURNING tat_us",
                    &[&key, &now_us, &attempts::span(every), &attempts::allowance(burst, every)],
                )
                .await?;
            if rand::random_ratio(1, PRUNE_ATTEMPTS_ONE_IN) {
                // Rows at full allowance say nothing: keep the table to recent
                // keys. A minute's margin keeps servers whose clocks differ a
                // little from deleting what another still counts on. The
                // attempt is counted already: a failure here only waits for
                // the next pruning.
                let pruned = client
                    .execute(
                        "DELETE FROM attempt_limits WHERE key IN
                             (SELECT key FROM attempt_limits WHERE tat_us < $1 LIMIT 1000
                              FOR UPDATE SKIP LOCKED)",
                        &[&(now_us - PRUNE_MARGIN_US)],
                    )
                    .await;
                if let Err(e) = pruned {
                    tracing::warn!(reason = %rows::describe(&e), "could not prune attempt limits");
                }
            }
            if admitted.is_some() {
                return Ok(None);
            }
            let row = client
                .query_opt("SELECT tat_us FROM attempt_limits WHERE key = $1", &[&key])
                .await?;
            Ok(Some(match row {
                Some(row) => attempts::wait(row.try_get(0)?, now_us, burst, every),
                // Pruned between the two statements: at full allowance again.
                None => Duration::from_secs(1),
            }))
        }))
    }

    fn forgive_attempt<'a>(
        &'a self,
        key: &'a str,
        every: Duration,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        self.bounded(single(self, move |client| async move {
            client
                .execute(
                    "UPDATE attempt_limits SET tat_us = greatest(tat_us - $2::bigint, $3::bigint) \
                     WHERE key = $1",
                    &[&key, &attempts::span(every), &attempts::micros(now)],
                )
                .await?;
            Ok(())
        }))
    }

    fn ping(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        self.bounded(single(self, |client| async move {
            client.query_one("SELECT 1", &[]).await?;
            Ok(())
        }))
    }

    fn create_user(&self, user: NewUser) -> BoxFuture<'_, Result<User, StoreError>> {
        self.bounded(accounts::create_user(self, user))
    }

    fn create_user_with_org(
        &self,
        user: NewUser,
        org_name: String,
    ) -> BoxFuture<'_, Result<SignUp, StoreError>> {
        self.bounded(accounts::create_user_with_org(self, user, org_name))
    }

    fn get_user<'a>(&'a self, id: &'a UserId) -> BoxFuture<'a, Result<User, StoreError>> {
        self.bounded(accounts::get_user(self, id))
    }

    fn get_user_by_email<'a>(&'a self, email: &'a str) -> BoxFuture<'a, Result<User, StoreError>> {
        self.bounded(accounts::get_user_by_email(self, email))
    }

    fn update_profile<'a>(
        &'a self,
        id: &'a UserId,
        profile: ProfileUpdate,
    ) -> BoxFuture<'a, Result<User, StoreError>> {
        self.bounded(accounts::update_profile(self, id, profile))
    }

    fn set_password_hash<'a>(
        &'a self,
        id: &'a UserId,
        password_hash: String,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        self.bounded(accounts::set_password_hash(self, id, password_hash))
    }

    fn mark_email_verified<'a>(
        &'a self,
        id: &'a UserId,
    ) -> BoxFuture<'a, Result<User, StoreError>> {
        self.bounded(accounts::mark_email_verified(self, id))
    }

    fn get_organization<'a>(
        &'a self,
        org: &'a OrgId,
    ) -> BoxFuture<'a, Result<Organization, StoreError>> {
        self.bounded(accounts::get_organization(self, org))
    }

    fn organizations_of_user<'a>(
        &'a self,
        user: &'a UserId,
    ) -> BoxFuture<'a, Result<Vec<(Organization, Membership)>, StoreError>> {
        self.bounded(accounts::organizations_of_user(self, user))
    }

    fn list_members<'a>(
        &'a self,
        org: &'a OrgId,
    ) -> BoxFuture<'a, Result<Vec<Member>, StoreError>> {
        self.bounded(accounts::list_members(self, org))
    }

    fn get_membership<'a>(
        &'a self,
        org: &'a OrgId,
        user: &'a UserId,
    ) -> BoxFuture<'a, Result<Membership, StoreError>> {
        self.bounded(accounts::get_membership(self, org, user))
    }

    fn set_role<'a>(
        &'a self,
        org: &'a OrgId,
        user: &'a UserId,
        role: Role,
    ) -> BoxFuture<'a, Result<Membership, StoreError>> {
        self.bounded(accounts::set_role(self, org, user, role))
    }

    fn remove_member<'a>(
        &'a self,
        org: &'a OrgId,
        user: &'a UserId,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        self.bounded(accounts::remove_member(self, org, user))
    }

    fn create_session<'a>(
        &'a self,
        user: &'a UserId,
        expires_at: DateTime<Utc>,
        grant: SessionGrant<'a>,
    ) -> BoxFuture<'a, Result<Session, StoreError>> {
        self.bounded(accounts::create_session(self, user, expires_at, grant))
    }

    fn get_session<'a>(&'a self, id: &'a SessionId) -> BoxFuture<'a, Result<Session, StoreError>> {
        self.bounded(accounts::get_session(self, id))
    }

    fn session_context<'a>(
        &'a self,
        session: &'a SessionId,
        org: &'a OrgId,
    ) -> BoxFuture<'a, Result<(Session, User, Membership), StoreError>> {
        self.bounded(accounts::session_context(self, session, org))
    }

    fn revoke_session<'a>(&'a self, id: &'a SessionId) -> BoxFuture<'a, Result<(), StoreError>> {
        self.bounded(accounts::revoke_session(self, id))
    }

    fn revoke_user_sessions<'a>(
        &'a self,
        user: &'a UserId,
    ) -> BoxFuture<'a, Result<u64, StoreError>> {
        self.bounded(accounts::revoke_user_sessions(self, user))
    }

    fn revoke_other_sessions<'a>(
        &'a self,
        user: &'a UserId,
        keep: &'a SessionId,
    ) -> BoxFuture<'a, Result<u64, StoreError>> {
        self.bounded(accounts::revoke_other_sessions(self, user, keep))
    }

    fn change_password<'a>(
        &'a self,
        id: &'a UserId,
        old_hash: &'a str,
        password_hash: String,
        keep: &'a SessionId,
    ) -> BoxFuture<'a, Result<u64, StoreError>> {
        self.bounded(accounts::change_password(self, id, old_hash, password_hash, keep))
    }

    fn create_personal_token<'a>(
        &'a self,
        token: NewPersonalToken<'a>,
    ) -> BoxFuture<'a, Result<PersonalToken, StoreError>> {
        self.bounded(personal_tokens::create(self, token))
    }

    fn list_personal_tokens<'a>(
        &'a self,
        user: &'a UserId,
        org: &'a OrgId,
    ) -> BoxFuture<'a, Result<Vec<PersonalToken>, StoreError>> {
        self.bounded(personal_tokens::list(self, user, org))
    }

    fn delete_personal_token<'a>(
        &'a self,
        user: &'a UserId,
        org: &'a OrgId,
        id: &'a PersonalTokenId,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        self.bounded(personal_tokens::delete(self, user, org, id))
    }

    fn personal_token_context<'a>(
        &'a self,
        token_hash: &'a str,
    ) -> BoxFuture<'a, Result<(PersonalToken, User, Membership), StoreError>> {
        self.bounded(personal_tokens::context(self, token_hash))
    }

    fn touch_personal_token<'a>(
        &'a self,
        id: &'a PersonalTokenId,
        at: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        self.bounded(personal_tokens::touch(self, id, at))
    }

    fn create_token(&self, token: NewToken) -> BoxFuture<'_, Result<OneTimeToken, StoreError>> {
        self.bounded(accounts::create_token(self, token))
    }

    fn consume_token<'a>(
        &'a self,
        kind: TokenKind,
        token_hash: &'a str,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<OneTimeToken, StoreError>> {
        self.bounded(accounts::consume_token(self, kind, token_hash, now))
    }

    fn verify_email<'a>(
        &'a self,
        token_hash: &'a str,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<User, StoreError>> {
        self.bounded(accounts::verify_email(self, token_hash, now))
    }

    fn password_reset_user<'a>(
        &'a self,
        token_hash: &'a str,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<User, StoreError>> {
        self.bounded(accounts::password_reset_user(self, token_hash, now))
    }

    fn reset_password<'a>(
        &'a self,
        token_hash: &'a str,
        password_hash: String,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<User, StoreError>> {
        self.bounded(accounts::reset_password(self, token_hash, password_hash, now))
    }

    fn accept_invitation<'a>(
        &'a self,
        token_hash: &'a str,
        user: &'a UserId,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<Membership, StoreError>> {
        self.bounded(accounts::accept_invitation(self, token_hash, user, now))
    }

    fn create_user_from_invitation<'a>(
        &'a self,
        user: NewUser,
        token_hash: &'a str,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<SignUp, StoreError>> {
        self.bounded(accounts::create_user_from_invitation(self, user, token_hash, now))
    }

    fn list_invitations<'a>(
        &'a self,
        org: &'a OrgId,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<Vec<Invitation>, StoreError>> {
        self.bounded(accounts::list_invitations(self, org, now))
    }

    fn get_invitation<'a>(
        &'a self,
        org: &'a OrgId,
        id: &'a TokenId,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<Invitation, StoreError>> {
        self.bounded(accounts::get_invitation(self, org, id, now))
    }

    fn revoke_invitation<'a>(
        &'a self,
        org: &'a OrgId,
        id: &'a TokenId,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        self.bounded(accounts::revoke_invitation(self, org, id, now))
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
        self.bounded(accounts::renew_invitation(self, org, id, by, token_hash, expires_at, now))
    }

    fn invitation_by_token<'a>(
        &'a self,
        token_hash: &'a str,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<ReceivedInvitation, StoreError>> {
        self.bounded(accounts::invitation_by_token(self, token_hash, now))
    }

    fn invitations_for_email<'a>(
        &'a self,
        email: &'a str,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<Vec<ReceivedInvitation>, StoreError>> {
        self.bounded(accounts::invitations_for_email(self, email, now))
    }

    fn accept_invitation_by_id<'a>(
        &'a self,
        id: &'a TokenId,
        user: &'a UserId,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<Membership, StoreError>> {
        self.bounded(accounts::accept_invitation_by_id(self, id, user, now))
    }

    fn create_organization<'a>(
        &'a self,
        owner: &'a UserId,
        name: String,
    ) -> BoxFuture<'a, Result<(Organization, Membership), StoreError>> {
        self.bounded(accounts::create_organization(self, owner, name))
    }

    fn delete_organization<'a>(
        &'a self,
        org: &'a OrgId,
        by: &'a UserId,
    ) -> BoxFuture<'a, Result<Vec<ConnectionId>, StoreError>> {
        self.bounded(accounts::delete_organization(self, org, by))
    }

    fn create_connection(
        &self,
        connection: NewConnection,
    ) -> BoxFuture<'_, Result<Connection, StoreError>> {
        self.bounded(platform::create_connection(self, connection))
    }

    fn list_connections<'a>(
        &'a self,
        org: &'a OrgId,
    ) -> BoxFuture<'a, Result<Vec<Connection>, StoreError>> {
        self.bounded(platform::list_connections(self, org))
    }

    fn get_connection<'a>(
        &'a self,
        org: &'a OrgId,
        id: &'a ConnectionId,
    ) -> BoxFuture<'a, Result<Connection, StoreError>> {
        self.bounded(platform::get_connection(self, org, id))
    }

    fn connection_by_key_hash<'a>(
        &'a self,
        key_hash: &'a str,
    ) -> BoxFuture<'a, Result<Connection, StoreError>> {
        self.bounded(platform::connection_by_key_hash(self, key_hash))
    }

    fn update_connection<'a>(
        &'a self,
        org: &'a OrgId,
        id: &'a ConnectionId,
        update: ConnectionUpdate,
    ) -> BoxFuture<'a, Result<Connection, StoreError>> {
        self.bounded(platform::update_connection(self, org, id, update))
    }

    fn set_connection_key<'a>(
        &'a self,
        org: &'a OrgId,
        id: &'a ConnectionId,
        key_hash: String,
        key_prefix: String,
    ) -> BoxFuture<'a, Result<Connection, StoreError>> {
        self.bounded(platform::set_connection_key(self, org, id, key_hash, key_prefix))
    }

    fn delete_connection<'a>(
        &'a self,
        org: &'a OrgId,
        id: &'a ConnectionId,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        self.bounded(platform::delete_connection(self, org, id))
    }

    fn get_schema<'a>(
        &'a self,
        org: &'a OrgId,
        id: &'a ConnectionId,
    ) -> BoxFuture<'a, Result<StoredSchema, StoreError>> {
        self.bounded(platform::get_schema(self, org, id))
    }

    fn save_schema<'a>(
        &'a self,
        org: &'a OrgId,
        id: &'a ConnectionId,
        fingerprint: String,
        json: String,
    ) -> BoxFuture<'a, Result<StoredSchema, StoreError>> {
        self.bounded(platform::save_schema(self, org, id, fingerprint, json))
    }

    fn record_agent_seen<'a>(
        &'a self,
        org: &'a OrgId,
        id: &'a ConnectionId,
        agent_version: String,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        self.bounded(platform::record_agent_seen(self, org, id, agent_version))
    }

    fn record_query(
        &self,
        record: NewQueryRecord,
    ) -> BoxFuture<'_, Result<QueryRecord, StoreError>> {
        self.bounded(platform::record_query(self, record))
    }

    fn list_queries<'a>(
        &'a self,
        org: &'a OrgId,
        filter: QueryFilter,
    ) -> BoxFuture<'a, Result<Vec<HistoryEntry>, StoreError>> {
        self.bounded(platform::list_queries(self, org, filter))
    }

    fn delete_query<'a>(
        &'a self,
        org: &'a OrgId,
        id: &'a QueryId,
        by: &'a UserId,
    ) -> BoxFuture<'a, Result<QueryDeletion, StoreError>> {
        self.bounded(platform::delete_query(self, org, id, by))
    }

    fn get_query<'a>(
        &'a self,
        org: &'a OrgId,
        id: &'a QueryId,
    ) -> BoxFuture<'a, Result<QueryRecord, StoreError>> {
        self.bounded(platform::get_query(self, org, id))
    }

    fn set_feedback<'a>(
        &'a self,
        org: &'a OrgId,
        id: &'a QueryId,
        correct: bool,
    ) -> BoxFuture<'a, Result<QueryRecord, StoreError>> {
        self.bounded(platform::set_feedback(self, org, id, correct))
    }

    fn conversation<'a>(
        &'a self,
        org: &'a OrgId,
        conversation: &'a ConversationId,
        limit: u32,
    ) -> BoxFuture<'a, Result<Vec<QueryRecord>, StoreError>> {
        self.bounded(platform::conversation(self, org, conversation, limit))
    }

    fn approved_examples<'a>(
        &'a self,
        org: &'a OrgId,
        id: &'a ConnectionId,
        limit: u32,
    ) -> BoxFuture<'a, Result<Vec<ApprovedExample>, StoreError>> {
        self.bounded(platform::approved_examples(self, org, id, limit))
    }
}

//! The platform's SQL for [`PostgresStore`](super::PostgresStore): connections,
//! their cached schemas and the history of questions.
//!
//! Every function scoped to an organisation filters on `org_id` in the same
//! statement or transaction that touches the row, so another organisation's id
//! is indistinguishable from an unknown one.

use deadpool_postgres::{GenericClient, Object, Transaction};
use tokio_postgres::IsolationLevel;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;

use super::rows::{
    CONNECTION_SELECT, PgError, QUERY_COLUMNS, connection_from_row, found, history_entry_from_row,
    matched, now, query_from_row, schema_from_row,
};
use super::{Params, PostgresStore, execute, retry, serializable, single};
use crate::store::sql::{like_pattern, qualified_query_columns};
use crate::store::{
    ApprovedExample, ConflictKind, Connection, ConnectionId, ConnectionUpdate, ConversationId,
    HistoryEntry, NewConnection, NewQueryRecord, OrgId, OutcomeFilter, QueryDeletion, QueryFilter,
    QueryId, QueryRecord, Role, StoreError, StoredSchema, UserId,
};

/// The most questions one page of history or one conversation returns.
const MAX_PAGE: u32 = 200;

/// Newest first; `seq` orders questions recorded in the same millisecond, as
/// SQLite's rowid does.
const NEWEST_FIRST: &str = "ORDER BY created_at DESC, seq DESC";

/// The foreign keys of `queries` (named in `0001_init.sql`) that fail only
/// when the question's connection (or its organisation) was deleted while it
/// was being recorded.
const QUERY_CONNECTION_KEYS: [&str; 2] = ["queries_connection_fk", "queries_org_fk"];

/// A new connection, its name free in the organisation.
pub(super) async fn create_connection(
    store: &PostgresStore,
    connection: NewConnection,
) -> Result<Connection, StoreError> {
    let new = &connection;
    retry(|| async move {
        let mut client = store.client().await?;
        let tx = serializable(&mut client).await?;
        ensure_name_free(&tx, &new.org_id, &new.name, None).await?;
        let id = ConnectionId::random();
        let insert = tx
            .prepare_cached(
                "INSERT INTO connections
                     (id, org_id, name, dialect, key_hash, key_prefix, created_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $7)",
            )
            .await?;
        tx.execute(
            &insert,
            &[
                &id.as_str(),
                &new.org_id.as_str(),
                &new.name,
                &new.dialect.as_str(),
                &new.key_hash,
                &new.key_prefix,
                &now(),
            ],
        )
        .await?;
        let created = select_connection(&tx, &new.org_id, &id).await?;
        tx.commit().await?;
        Ok(created)
    })
    .await
}

/// The organisation's connections, oldest first.
pub(super) async fn list_connections(
    store: &PostgresStore,
    org: &OrgId,
) -> Result<Vec<Connection>, StoreError> {
    single(store, |client| async move {
        // `seq` orders connections created in the same millisecond.
        let sql = format!("{CONNECTION_SELECT} WHERE c.org_id = $1 ORDER BY c.created_at, c.seq");
        let statement = client.prepare_cached(&sql).await?;
        let rows = client.query(&statement, &[&org.as_str()]).await?;
        rows.iter().map(connection_from_row).collect()
    })
    .await
}

/// One connection of the organisation.
pub(super) async fn get_connection(
    store: &PostgresStore,
    org: &OrgId,
    id: &ConnectionId,
) -> Result<Connection, StoreError> {
    single(store, |client| async move { select_connection(&client, org, id).await }).await
}

/// The connection whose current key has this hash.
pub(super) async fn connection_by_key_hash(
    store: &PostgresStore,
    key_hash: &str,
) -> Result<Connection, StoreError> {
    single(store, |client| async move {
        let sql = format!("{CONNECTION_SELECT} WHERE c.key_hash = $1");
        let statement = client.prepare_cached(&sql).await?;
        connection_from_row(&found(client.query_opt(&statement, &[&key_hash]).await?)?)
    })
    .await
}

/// Changes a connection's name (free in the organisation) and instructions.
pub(super) async fn update_connection(
    store: &PostgresStore,
    org: &OrgId,
    id: &ConnectionId,
    update: ConnectionUpdate,
) -> Result<Connection, StoreError> {
    let ConnectionUpdate { name, instructions } = &update;
    if name.is_none() && instructions.is_none() {
        return get_connection(store, org, id).await;
    }
    retry(|| async move {
        let mut client = store.client().await?;
        let tx = serializable(&mut client).await?;
        if let Some(name) = name {
            ensure_name_free(&tx, org, name, Some(id)).await?;
        }
        let sql = "UPDATE connections
                   SET name = coalesce($3, name), instructions = coalesce($4, instructions),
                       updated_at = $5
                   WHERE org_id = $1 AND id = $2";
        let params: Params = &[&org.as_str(), &id.as_str(), name, instructions, &now()];
        matched(execute(&tx, sql, params).await?)?;
        let updated = select_connection(&tx, org, id).await?;
        tx.commit().await?;
        Ok(updated)
    })
    .await
}

/// Gives a connection a new key (hash and display prefix).
pub(super) async fn set_connection_key(
    store: &PostgresStore,
    org: &OrgId,
    id: &ConnectionId,
    key_hash: String,
    key_prefix: String,
) -> Result<Connection, StoreError> {
    let (key_hash, key_prefix) = (&key_hash, &key_prefix);
    retry(|| async move {
        let mut client = store.client().await?;
        let tx = serializable(&mut client).await?;
        let sql = "UPDATE connections SET key_hash = $3, key_prefix = $4, updated_at = $5
                   WHERE org_id = $1 AND id = $2";
        let params: Params = &[&org.as_str(), &id.as_str(), key_hash, key_prefix, &now()];
        matched(execute(&tx, sql, params).await?)?;
        let updated = select_connection(&tx, org, id).await?;
        tx.commit().await?;
        Ok(updated)
    })
    .await
}

/// Deletes the connection; its schema and history go with it (`ON DELETE CASCADE`).
pub(super) async fn delete_connection(
    store: &PostgresStore,
    org: &OrgId,
    id: &ConnectionId,
) -> Result<(), StoreError> {
    single(store, |client| async move {
        let sql = "DELETE FROM connections WHERE org_id = $1 AND id = $2";
        matched(execute(&client, sql, &[&org.as_str(), &id.as_str()]).await?)
    })
    .await
}

/// A connection's stored schema.
pub(super) async fn get_schema(
    store: &PostgresStore,
    org: &OrgId,
    id: &ConnectionId,
) -> Result<StoredSchema, StoreError> {
    single(store, |client| async move {
        let statement = client
            .prepare_cached(
                "SELECT s.fingerprint, s.json, s.refreshed_at
                 FROM connection_schemas s JOIN connections c ON c.id = s.connection_id
                 WHERE c.org_id = $1 AND c.id = $2",
            )
            .await?;
        schema_from_row(&found(
            client.query_opt(&statement, &[&org.as_str(), &id.as_str()]).await?,
        )?)
    })
    .await
}

/// Stores (or replaces) a connection's schema; the connection's `updated_at` stays.
pub(super) async fn save_schema(
    store: &PostgresStore,
    org: &OrgId,
    id: &ConnectionId,
    fingerprint: String,
    json: String,
) -> Result<StoredSchema, StoreError> {
    let (fingerprint, json) = (&fingerprint, &json);
    retry(|| async move {
        let mut client = store.client().await?;
        let tx = serializable(&mut client).await?;
        ensure_connection(&tx, org, id).await?;
        let statement = tx
            .prepare_cached(
                "INSERT INTO connection_schemas (connection_id, fingerprint, json, refreshed_at)
                 VALUES ($1, $2, $3, $4)
                 ON CONFLICT (connection_id) DO UPDATE SET fingerprint = excluded.fingerprint,
                     json = excluded.json, refreshed_at = excluded.refreshed_at
                 RETURNING fingerprint, json, refreshed_at",
            )
            .await?;
        let row = tx.query_one(&statement, &[&id.as_str(), fingerprint, json, &now()]).await?;
        let saved = schema_from_row(&row)?;
        tx.commit().await?;
        Ok(saved)
    })
    .await
}

/// Writes down when an agent of the connection was last seen, and its version.
pub(super) async fn record_agent_seen(
    store: &PostgresStore,
    org: &OrgId,
    id: &ConnectionId,
    agent_version: String,
) -> Result<(), StoreError> {
    let agent_version = &agent_version;
    single(store, |client| async move {
        let statement = client
            .prepare_cached(
                "UPDATE connections SET agent_version = $3, last_seen_at = $4
                 WHERE org_id = $1 AND id = $2",
            )
            .await?;
        let changed = client
            .execute(&statement, &[&org.as_str(), &id.as_str(), agent_version, &now()])
            .await?;
        matched(changed)
    })
    .await
}

/// Records an asked question in the history, in one statement that inserts
/// nothing (NotFound) unless the organisation has the connection.
pub(super) async fn record_query(
    store: &PostgresStore,
    record: NewQueryRecord,
) -> Result<QueryRecord, StoreError> {
    let r = &record;
    let row_count =
        r.row_count.map(i64::try_from).transpose().map_err(|_| {
            StoreError::Internal(format!("row count {:?} out of range", r.row_count))
        })?;
    let attempts = i32::try_from(r.attempts)
        .map_err(|_| StoreError::Internal(format!("attempts {} out of range", r.attempts)))?;
    // Parameters in a SELECT list are not typed by the target columns: the
    // casts say what the text-inferred ones cannot.
    let sql = format!(
        "INSERT INTO queries
             (id, org_id, connection_id, user_id, conversation_id, question, sql, outcome,
              error_message, answer, row_count, truncated, engine, attempts, timings_json,
              result_json, created_at, source)
         SELECT $3, c.org_id, c.id, $4, $5, $6, $7, $8, $9, $10, $11::bigint, $12::boolean,
                $13, $14::integer, $15, $16, $17::timestamptz, $18
         FROM connections c
         WHERE c.org_id = $1 AND c.id = $2
         RETURNING {QUERY_COLUMNS}"
    );
    let query_id = QueryId::random();
    let sql = &sql;
    single(store, |client| async move {
        let statement = client.prepare_cached(sql).await?;
        let params: [&(dyn ToSql + Sync); 18] = [
            &r.org_id.as_str(),
            &r.connection_id.as_str(),
            &query_id.as_str(),
            &r.user_id.as_str(),
            &r.conversation_id.as_str(),
            &r.question,
            &r.sql,
            &r.outcome,
            &r.error_message,
            &r.answer,
            &row_count,
            &r.truncated,
            &r.engine,
            &attempts,
            &r.timings_json,
            &r.result_json,
            &now(),
            &r.source.as_str(),
        ];
        let row = client.query_opt(&statement, &params).await.map_err(connection_gone)?;
        query_from_row(&found(row)?)
    })
    .await
}

/// A page of history with who asked; filtering on another organisation's
/// connection is NotFound.
pub(super) async fn list_queries(
    store: &PostgresStore,
    org: &OrgId,
    filter: QueryFilter,
) -> Result<Vec<HistoryEntry>, StoreError> {
    let filter = &filter;
    if filter.search.as_deref().is_some_and(|term| term.contains('\0')) {
        // No stored question holds a NUL (PostgreSQL's text cannot): none matches.
        return Ok(Vec::new());
    }
    let org_id = org.as_str();
    let limit = i64::from(filter.limit.min(MAX_PAGE));
    let offset = i64::from(filter.offset);
    let connection = filter.connection_id.as_ref().map(ConnectionId::as_str);
    let user = filter.asked_by.as_ref().map(UserId::as_str);
    // ASCII case is folded on both sides, as SQLite's LIKE folds it (and only it).
    let pattern = filter.search.as_deref().map(|term| like_pattern(&term.to_ascii_lowercase()));
    // `$1` the organisation, `$2` the limit, `$3` the offset; then each condition's own.
    let mut conditions = vec!["q.org_id = $1".to_owned()];
    let mut values: Vec<&(dyn ToSql + Sync)> = vec![&org_id, &limit, &offset];
    if let Some(connection) = &connection {
        values.push(connection);
        conditions.push(format!("q.connection_id = ${}", values.len()));
    }
    if let Some(user) = &user {
        values.push(user);
        conditions.push(format!("q.user_id = ${}", values.len()));
    }
    match filter.outcome {
        Some(OutcomeFilter::Answered) => conditions.push("q.outcome = 'ok'".to_owned()),
        Some(OutcomeFilter::Failed) => conditions.push("q.outcome <> 'ok'".to_owned()),
        None => {}
    }
    if let Some(pattern) = &pattern {
        values.push(pattern);
        conditions.push(format!(
            r"translate(q.question, 'ABCDEFGHIJKLMNOPQRSTUVWXYZ', 'abcdefghijklmnopqrstuvwxyz')
                 LIKE ${} ESCAPE E'\\'",
            values.len()
        ));
    }
    let sql = format!(
        "SELECT {}, u.email, u.first_name, u.last_name, m.user_id IS NOT NULL
         FROM queries q
         LEFT JOIN users u ON u.id = q.user_id
         LEFT JOIN memberships m ON m.org_id = q.org_id AND m.user_id = q.user_id
         WHERE {}
         ORDER BY q.created_at DESC, q.seq DESC
         LIMIT $2 OFFSET $3",
        qualified_query_columns("q"),
        conditions.join(" AND "),
    );
    let (sql, values) = (&sql, values.as_slice());
    let Some(connection) = &filter.connection_id else {
        return single(store, |client| async move { history_page(&client, sql, values).await })
            .await;
    };
    // One snapshot, so the connection cannot vanish between the check and the page.
    let read = async {
        let mut client = store.client().await?;
        let tx = snapshot(&mut client).await?;
        ensure_connection(&tx, org, connection).await?;
        let page = history_page(&tx, sql, values).await?;
        tx.commit().await?;
        Ok(page)
    };
    read.await.map_err(PgError::into_store)
}

/// The rows of a history statement built by [`list_queries`].
async fn history_page(
    client: &impl GenericClient,
    sql: &str,
    values: &[&(dyn ToSql + Sync)],
) -> Result<Vec<HistoryEntry>, PgError> {
    let statement = client.prepare_cached(sql).await?;
    let rows = client.query(&statement, values).await?;
    rows.iter().map(history_entry_from_row).collect()
}

/// Deletes the question if `by` may: its asker, or an owner or admin.
pub(super) async fn delete_query(
    store: &PostgresStore,
    org: &OrgId,
    id: &QueryId,
    by: &UserId,
) -> Result<QueryDeletion, StoreError> {
    retry(|| async move {
        // The role and the asker are read in the transaction that deletes, so a
        // demotion cannot come in between.
        let mut client = store.client().await?;
        let tx = serializable(&mut client).await?;
        let statement = tx
            .prepare_cached("SELECT role FROM memberships WHERE org_id = $1 AND user_id = $2")
            .await?;
        let role: Role =
            found(tx.query_opt(&statement, &[&org.as_str(), &by.as_str()]).await?)?.try_get(0)?;
        let statement =
            tx.prepare_cached("SELECT user_id FROM queries WHERE org_id = $1 AND id = $2").await?;
        let asker: UserId =
            found(tx.query_opt(&statement, &[&org.as_str(), &id.as_str()]).await?)?.try_get(0)?;
        if asker != *by && !matches!(role, Role::Owner | Role::Admin) {
            return Ok(QueryDeletion::NotAllowed);
        }
        let sql = "DELETE FROM queries WHERE org_id = $1 AND id = $2";
        matched(execute(&tx, sql, &[&org.as_str(), &id.as_str()]).await?)?;
        tx.commit().await?;
        Ok(QueryDeletion::Deleted)
    })
    .await
}

/// One recorded question of the organisation.
pub(super) async fn get_query(
    store: &PostgresStore,
    org: &OrgId,
    id: &QueryId,
) -> Result<QueryRecord, StoreError> {
    let sql = format!("SELECT {QUERY_COLUMNS} FROM queries WHERE org_id = $1 AND id = $2");
    let sql = &sql;
    single(store, |client| async move {
        let statement = client.prepare_cached(sql).await?;
        query_from_row(&found(client.query_opt(&statement, &[&org.as_str(), &id.as_str()]).await?)?)
    })
    .await
}

/// Records whether an answer was right.
pub(super) async fn set_feedback(
    store: &PostgresStore,
    org: &OrgId,
    id: &QueryId,
    correct: bool,
) -> Result<QueryRecord, StoreError> {
    let sql = format!(
        "UPDATE queries SET feedback = $3 WHERE org_id = $1 AND id = $2 RETURNING {QUERY_COLUMNS}"
    );
    let sql = &sql;
    single(store, |client| async move {
        let statement = client.prepare_cached(sql).await?;
        let row = client.query_opt(&statement, &[&org.as_str(), &id.as_str(), &correct]).await?;
        query_from_row(&found(row)?)
    })
    .await
}

/// The newest `limit` questions of the conversation, returned oldest first.
pub(super) async fn conversation(
    store: &PostgresStore,
    org: &OrgId,
    conversation: &ConversationId,
    limit: u32,
) -> Result<Vec<QueryRecord>, StoreError> {
    let sql = format!(
        "SELECT {QUERY_COLUMNS} FROM queries WHERE org_id = $1 AND conversation_id = $2
         {NEWEST_FIRST} LIMIT $3"
    );
    let (sql, limit) = (&sql, i64::from(limit.min(MAX_PAGE)));
    single(store, |client| async move {
        let statement = client.prepare_cached(sql).await?;
        let rows =
            client.query(&statement, &[&org.as_str(), &conversation.as_str(), &limit]).await?;
        let mut turns = rows.iter().map(query_from_row).collect::<Result<Vec<_>, _>>()?;
        turns.reverse();
        Ok(turns)
    })
    .await
}

/// Approved questions, newest first; of a question asked again only the newest counts.
pub(super) async fn approved_examples(
    store: &PostgresStore,
    org: &OrgId,
    id: &ConnectionId,
    limit: u32,
) -> Result<Vec<ApprovedExample>, StoreError> {
    let limit = i64::from(limit);
    let read = async {
        let mut client = store.client().await?;
        let tx = snapshot(&mut client).await?;
        ensure_connection(&tx, org, id).await?;
        let statement = tx.prepare_cached(APPROVED_EXAMPLES).await?;
        let rows = tx.query(&statement, &[&id.as_str(), &limit]).await?;
        let examples = rows
            .iter()
            .map(|row| Ok(ApprovedExample { question: row.try_get(0)?, sql: row.try_get(1)? }))
            .collect::<Result<Vec<_>, PgError>>()?;
        tx.commit().await?;
        Ok(examples)
    };
    read.await.map_err(PgError::into_store)
}

/// The statement of [`approved_examples`]: each question's newest approved
/// row, newest first. The inner WHERE repeats the partial index's condition
/// word for word so PostgreSQL uses the index.
const APPROVED_EXAMPLES: &str = "
    SELECT question, sql FROM (
        SELECT DISTINCT ON (question) question, sql, created_at, seq FROM queries
        WHERE connection_id = $1 AND feedback AND outcome = 'ok' AND sql IS NOT NULL
          AND engine <> 'sql'
        ORDER BY question, created_at DESC, seq DESC
    ) newest
    ORDER BY created_at DESC, seq DESC
    LIMIT $2";

/// One connection of the organisation, inside the caller's transaction or not.
async fn select_connection(
    client: &impl GenericClient,
    org: &OrgId,
    id: &ConnectionId,
) -> Result<Connection, PgError> {
    let sql = format!("{CONNECTION_SELECT} WHERE c.org_id = $1 AND c.id = $2");
    let statement = client.prepare_cached(&sql).await?;
    connection_from_row(&found(
        client.query_opt(&statement, &[&org.as_str(), &id.as_str()]).await?,
    )?)
}

/// NotFound unless the organisation has this connection.
async fn ensure_connection(
    client: &impl GenericClient,
    org: &OrgId,
    id: &ConnectionId,
) -> Result<(), PgError> {
    let statement =
        client.prepare_cached("SELECT 1 FROM connections WHERE org_id = $1 AND id = $2").await?;
    found(client.query_opt(&statement, &[&org.as_str(), &id.as_str()]).await?).map(drop)
}

/// Starts a read-only `REPEATABLE READ` transaction: its statements all see
/// one snapshot, as SQLite's read transactions do.
async fn snapshot(client: &mut Object) -> Result<Transaction<'_>, PgError> {
    Ok(client
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await?)
}

/// A question's connection deleted between the insert's read of it and the
/// foreign key's check is NotFound, as it is when deleted before.
fn connection_gone(e: tokio_postgres::Error) -> PgError {
    let constraint = e
        .as_db_error()
        .filter(|d| *d.code() == SqlState::FOREIGN_KEY_VIOLATION)
        .and_then(|d| d.constraint());
    if constraint.is_some_and(|c| QUERY_CONNECTION_KEYS.contains(&c)) {
        PgError::Store(StoreError::NotFound)
    } else {
        PgError::Db(e)
    }
}

/// The comparison form of a connection name: trimmed, Unicode lowercase.
fn name_key(name: &str) -> String {
    name.trim().to_lowercase()
}

/// Refuses `name` when another connection of `org` (not `except`) has it,
/// compared trimmed and in Unicode lowercase, which the unique index on
/// `(org_id, lower(btrim(name)))` cannot promise (its `btrim` takes spaces
/// only, its `lower` follows the database's locale). Run inside the caller's
/// serializable transaction: a concurrent insert it did not see makes one of
/// the two fail and run again.
async fn ensure_name_free(
    tx: &Transaction<'_>,
    org: &OrgId,
    name: &str,
    except: Option<&ConnectionId>,
) -> Result<(), PgError> {
    let wanted = name_key(name);
    let statement = tx.prepare_cached("SELECT id, name FROM connections WHERE org_id = $1").await?;
    for row in tx.query(&statement, &[&org.as_str()]).await? {
        let (id, existing): (String, String) = (row.try_get(0)?, row.try_get(1)?);
        if except.is_some_and(|e| e.as_str() == id) {
            continue;
        }
        if name_key(&existing) == wanted {
            return Err(StoreError::Conflict(ConflictKind::ConnectionName).into());
        }
    }
    Ok(())
}

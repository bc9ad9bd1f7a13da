//! The platform's SQL for [`SqliteStore`](super::SqliteStore): connections, their
//! cached schemas and the history of questions (tables of `0002_platform.sql`).
//!
//! Every function scoped to an organisation filters on `org_id` in the same
//! statement or transaction that touches the row, so another organisation's id
//! is indistinguishable from an unknown one.

use std::collections::HashSet;

use rusqlite::{Connection, OptionalExtension, ToSql, params};

use super::rows::{
    CONNECTION_SELECT, Millis, QUERY_COLUMNS, RowCount, conflict_or, connection_from_row, db_error,
    history_entry_from_row, query_from_row, schema_from_row,
};
use super::{CachedRow, write_tx};
use crate::store::sql::{like_pattern, qualified_query_columns};
use crate::store::{
    ApprovedExample, ConflictKind, Connection as DbConnection, ConnectionId, ConnectionUpdate,
    ConversationId, HistoryEntry, NewConnection, NewQueryRecord, OrgId, OutcomeFilter,
    QueryDeletion, QueryFilter, QueryId, QueryRecord, Role, StoreError, StoredSchema, UserId,
};

/// The most questions one page of history or one conversation returns.
const MAX_PAGE: u32 = 200;

/// Newest first; rowid orders questions recorded in the same millisecond.
const NEWEST_FIRST: &str = "ORDER BY created_at DESC, rowid DESC";

/// A new connection, its name free in the organisation.
pub(super) fn create_connection(
    conn: &mut Connection,
    new: &NewConnection,
) -> Result<DbConnection, StoreError> {
    let tx = write_tx(conn)?;
    let id = ConnectionId::random();
    ensure_name_free(&tx, &new.org_id, &new.name, None)?;
    tx.execute(
        "INSERT INTO connections
             (id, org_id, name, dialect, key_hash, key_prefix, created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7)",
        params![
            id,
            new.org_id,
            new.name,
            new.dialect.as_str(),
            new.key_hash,
            new.key_prefix,
            Millis::now(),
        ],
    )
    .map_err(key_conflict)?;
    let created = select_connection(&tx, &new.org_id, &id)?;
    tx.commit().map_err(db_error)?;
    Ok(created)
}

/// The organisation's connections, oldest first.
pub(super) fn list_connections(
    conn: &Connection,
    org: &OrgId,
) -> Result<Vec<DbConnection>, StoreError> {
    let sql = format!("{CONNECTION_SELECT} WHERE c.org_id = ?1 ORDER BY c.created_at, c.rowid");
    let mut stmt = conn.prepare(&sql).map_err(db_error)?;
    let rows = stmt.query_map([org], connection_from_row).map_err(db_error)?;
    rows.collect::<Result<_, _>>().map_err(db_error)
}

/// One connection of the organisation.
pub(super) fn select_connection(
    conn: &Connection,
    org: &OrgId,
    id: &ConnectionId,
) -> Result<DbConnection, StoreError> {
    conn.cached_row(&select_connection_sql(), params![org, id], connection_from_row)
        .map_err(db_error)
}

/// The statement of [`select_connection`].
pub(super) fn select_connection_sql() -> String {
    format!("{CONNECTION_SELECT} WHERE c.org_id = ?1 AND c.id = ?2")
}

/// The connection whose current key has this hash.
pub(super) fn connection_by_key_hash(
    conn: &Connection,
    key_hash: &str,
) -> Result<DbConnection, StoreError> {
    let sql = format!("{CONNECTION_SELECT} WHERE c.key_hash = ?1");
    conn.cached_row(&sql, [key_hash], connection_from_row).map_err(db_error)
}

/// Changes a connection's name (free in the organisation) and instructions.
pub(super) fn update_connection(
    conn: &mut Connection,
    org: &OrgId,
    id: &ConnectionId,
    update: &ConnectionUpdate,
) -> Result<DbConnection, StoreError> {
    let ConnectionUpdate { name, instructions } = update;
    if name.is_none() && instructions.is_none() {
        return select_connection(conn, org, id);
    }
    let tx = write_tx(conn)?;
    if let Some(name) = name {
        ensure_name_free(&tx, org, name, Some(id))?;
    }
    let changed = tx
        .execute(
            "UPDATE connections
             SET name = coalesce(?3, name), instructions = coalesce(?4, instructions),
                 updated_at = ?5
             WHERE org_id = ?1 AND id = ?2",
            params![org, id, name, instructions, Millis::now()],
        )
        .map_err(name_conflict)?;
    found(changed)?;
    let updated = select_connection(&tx, org, id)?;
    tx.commit().map_err(db_error)?;
    Ok(updated)
}

/// Gives a connection a new key (hash and display prefix).
pub(super) fn set_connection_key(
    conn: &mut Connection,
    org: &OrgId,
    id: &ConnectionId,
    key_hash: &str,
    key_prefix: &str,
) -> Result<DbConnection, StoreError> {
    let tx = write_tx(conn)?;
    let changed = tx
        .execute(
            "UPDATE connections SET key_hash = ?3, key_prefix = ?4, updated_at = ?5
             WHERE org_id = ?1 AND id = ?2",
            params![org, id, key_hash, key_prefix, Millis::now()],
        )
        .map_err(key_conflict)?;
    found(changed)?;
    let updated = select_connection(&tx, org, id)?;
    tx.commit().map_err(db_error)?;
    Ok(updated)
}

/// Deletes the connection; its schema and history go with it (`ON DELETE CASCADE`).
pub(super) fn delete_connection(
    conn: &Connection,
    org: &OrgId,
    id: &ConnectionId,
) -> Result<(), StoreError> {
    let changed = conn
        .execute("DELETE FROM connections WHERE org_id = ?1 AND id = ?2", params![org, id])
        .map_err(db_error)?;
    found(changed)
}

/// A connection's stored schema.
pub(super) fn get_schema(
    conn: &Connection,
    org: &OrgId,
    id: &ConnectionId,
) -> Result<StoredSchema, StoreError> {
    conn.cached_row(
        "SELECT s.fingerprint, s.json, s.refreshed_at
         FROM connection_schemas s JOIN connections c ON c.id = s.connection_id
         WHERE c.org_id = ?1 AND c.id = ?2",
        params![org, id],
        schema_from_row,
    )
    .map_err(db_error)
}

/// Stores (or replaces) a connection's schema.
pub(super) fn save_schema(
    conn: &mut Connection,
    org: &OrgId,
    id: &ConnectionId,
    fingerprint: &str,
    json: &str,
) -> Result<StoredSchema, StoreError> {
    let tx = write_tx(conn)?;
    ensure_connection(&tx, org, id)?;
    let saved = tx
        .cached_row(
            "INSERT INTO connection_schemas (connection_id, fingerprint, json, refreshed_at)
             VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (connection_id) DO UPDATE SET fingerprint = excluded.fingerprint,
                 json = excluded.json, refreshed_at = excluded.refreshed_at
             RETURNING fingerprint, json, refreshed_at",
            params![id, fingerprint, json, Millis::now()],
            schema_from_row,
        )
        .map_err(db_error)?;
    tx.commit().map_err(db_error)?;
    Ok(saved)
}

/// Writes down when an agent of the connection was last seen, and its version.
pub(super) fn record_agent_seen(
    conn: &Connection,
    org: &OrgId,
    id: &ConnectionId,
    agent_version: &str,
) -> Result<(), StoreError> {
    let changed = conn
        .execute(
            "UPDATE connections SET agent_version = ?3, last_seen_at = ?4
             WHERE org_id = ?1 AND id = ?2",
            params![org, id, agent_version, Millis::now()],
        )
        .map_err(db_error)?;
    found(changed)
}

/// Records asked questions in the history, in one transaction: one commit
/// (one fsync, each index page written once) for the questions that finished
/// while the previous commit ran. Each question's result is its own (a
/// question whose connection was deleted meanwhile is NotFound, the others
/// are recorded); a failed commit fails them all.
pub(super) fn record_queries(
    conn: &mut Connection,
    records: &[&NewQueryRecord],
) -> Vec<Result<QueryRecord, StoreError>> {
    let all = |e: StoreError| records.iter().map(|_| Err(e.clone())).collect();
    let tx = match write_tx(conn) {
        Ok(tx) => tx,
        Err(e) => return all(e),
    };
    let mut recorded = Vec::with_capacity(records.len());
    for record in records {
        // A statement that fails (a constraint) is undone alone and the
        // transaction goes on; one SQLite rolls back whole (an I/O error, a
        // full disk) leaves nothing to commit, and what follows must not run
        // on its own outside it.
        recorded.push(insert_query(&tx, record));
        if tx.is_autocommit() {
            return all(StoreError::Unavailable(
                "the history's transaction was rolled back".into(),
            ));
        }
    }
    match tx.commit().map_err(db_error) {
        Ok(()) => recorded,
        Err(e) => all(e),
    }
}

/// Inserts one question into the history, inside the caller's transaction.
fn insert_query(tx: &Connection, record: &NewQueryRecord) -> Result<QueryRecord, StoreError> {
    // The foreign key would refuse it too, but as an opaque constraint error.
    ensure_connection(tx, &record.org_id, &record.connection_id)?;
    let r = record;
    tx.cached_row(
        &format!(
            "INSERT INTO queries
                 (id, org_id, connection_id, user_id, conversation_id, question, sql,
                  outcome, error_message, answer, row_count, truncated, engine, attempts,
                  timings_json, result_json, created_at, source)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16,
                     ?17, ?18)
             RETURNING {QUERY_COLUMNS}"
        ),
        params![
            QueryId::random(),
            r.org_id,
            r.connection_id,
            r.user_id,
            r.conversation_id,
            r.question,
            r.sql,
            r.outcome,
            r.error_message,
            r.answer,
            r.row_count.map(RowCount),
            r.truncated,
            r.engine,
            r.attempts,
            r.timings_json,
            r.result_json,
            Millis::now(),
            r.source.as_str(),
        ],
        query_from_row,
    )
    .map_err(db_error)
}

/// A page of history with who asked; filtering on another organisation's
/// connection is NotFound.
pub(super) fn list_queries(
    conn: &mut Connection,
    org: &OrgId,
    filter: &QueryFilter,
) -> Result<Vec<HistoryEntry>, StoreError> {
    let limit = filter.limit.min(MAX_PAGE);
    let pattern = filter.search.as_deref().map(like_pattern);
    // `?1` the organisation, `?2` the limit, `?3` the offset; then each condition's own.
    let mut conditions = vec!["q.org_id = ?1".to_owned()];
    let mut values: Vec<&dyn ToSql> = vec![org, &limit, &filter.offset];
    if let Some(connection) = &filter.connection_id {
        values.push(connection);
        conditions.push(format!("q.connection_id = ?{}", values.len()));
    }
    if let Some(user) = &filter.asked_by {
        values.push(user);
        conditions.push(format!("q.user_id = ?{}", values.len()));
    }
    match filter.outcome {
        Some(OutcomeFilter::Answered) => conditions.push("q.outcome = 'ok'".to_owned()),
        Some(OutcomeFilter::Failed) => conditions.push("q.outcome <> 'ok'".to_owned()),
        None => {}
    }
    if let Some(pattern) = &pattern {
        values.push(pattern);
        conditions.push(format!("q.question LIKE ?{} ESCAPE '\\'", values.len()));
    }
    let sql = format!(
        "SELECT {}, u.email, u.first_name, u.last_name, m.user_id IS NOT NULL
         FROM queries q
         LEFT JOIN users u ON u.id = q.user_id
         LEFT JOIN memberships m ON m.org_id = q.org_id AND m.user_id = q.user_id
         WHERE {}
         ORDER BY q.created_at DESC, q.rowid DESC
         LIMIT ?2 OFFSET ?3",
        qualified_query_columns("q"),
        conditions.join(" AND "),
    );
    // One snapshot, so the connection cannot vanish between the check and the page.
    let tx = conn.transaction().map_err(db_error)?;
    if let Some(connection) = &filter.connection_id {
        ensure_connection(&tx, org, connection)?;
    }
    let page = {
        let mut stmt = tx.prepare(&sql).map_err(db_error)?;
        let rows = stmt.query_map(values.as_slice(), history_entry_from_row).map_err(db_error)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(db_error)?
    };
    tx.commit().map_err(db_error)?;
    Ok(page)
}

/// Deletes the question if `by` may: its asker, or an owner or admin.
pub(super) fn delete_query(
    conn: &mut Connection,
    org: &OrgId,
    id: &QueryId,
    by: &UserId,
) -> Result<QueryDeletion, StoreError> {
    // The role and the asker are read in the transaction that deletes, so a
    // demotion cannot come in between.
    let tx = write_tx(conn)?;
    let role: Role = tx
        .cached_row(
            "SELECT role FROM memberships WHERE org_id = ?1 AND user_id = ?2",
            params![org, by],
            |r| r.get(0),
        )
        .map_err(db_error)?;
    let asker: UserId = tx
        .cached_row(
            "SELECT user_id FROM queries WHERE org_id = ?1 AND id = ?2",
            params![org, id],
            |r| r.get(0),
        )
        .map_err(db_error)?;
    if asker != *by && !matches!(role, Role::Owner | Role::Admin) {
        return Ok(QueryDeletion::NotAllowed);
    }
    let changed = tx
        .execute("DELETE FROM queries WHERE org_id = ?1 AND id = ?2", params![org, id])
        .map_err(db_error)?;
    found(changed)?;
    tx.commit().map_err(db_error)?;
    Ok(QueryDeletion::Deleted)
}

/// One recorded question of the organisation.
pub(super) fn get_query(
    conn: &Connection,
    org: &OrgId,
    id: &QueryId,
) -> Result<QueryRecord, StoreError> {
    conn.cached_row(
        &format!("SELECT {QUERY_COLUMNS} FROM queries WHERE org_id = ?1 AND id = ?2"),
        params![org, id],
        query_from_row,
    )
    .map_err(db_error)
}

/// Records whether an answer was right.
pub(super) fn set_feedback(
    conn: &Connection,
    org: &OrgId,
    id: &QueryId,
    correct: bool,
) -> Result<QueryRecord, StoreError> {
    conn.cached_row(
        &format!(
            "UPDATE queries SET feedback = ?3 WHERE org_id = ?1 AND id = ?2
             RETURNING {QUERY_COLUMNS}"
        ),
        params![org, id, correct],
        query_from_row,
    )
    .map_err(db_error)
}

/// The newest `limit` questions of the conversation, returned oldest first.
pub(super) fn conversation(
    conn: &Connection,
    org: &OrgId,
    conversation: &ConversationId,
    limit: u32,
) -> Result<Vec<QueryRecord>, StoreError> {
    let mut turns = select_queries(
        conn,
        "org_id = ?1 AND conversation_id = ?4",
        params![org, limit.min(MAX_PAGE), 0, conversation],
    )?;
    turns.reverse();
    Ok(turns)
}

/// Approved questions, newest first; of a question asked again only the newest counts.
pub(super) fn approved_examples(
    conn: &mut Connection,
    org: &OrgId,
    id: &ConnectionId,
    limit: u32,
) -> Result<Vec<ApprovedExample>, StoreError> {
    let tx = conn.transaction().map_err(db_error)?;
    ensure_connection(&tx, org, id)?;
    let mut stmt = tx.prepare_cached(&approved_examples_sql()).map_err(db_error)?;
    let rows = stmt
        .query_map([id], |row| Ok(ApprovedExample { question: row.get(0)?, sql: row.get(1)? }))
        .map_err(db_error)?;
    let mut seen = HashSet::new();
    let mut examples = Vec::new();
    for example in rows {
        if examples.len() >= limit as usize {
            break;
        }
        let example = example.map_err(db_error)?;
        if seen.insert(example.question.clone()) {
            examples.push(example);
        }
    }
    Ok(examples)
}

/// The statement of [`approved_examples`]: its WHERE repeats the partial
/// index's condition word for word so SQLite uses the index.
pub(super) fn approved_examples_sql() -> String {
    format!(
        "SELECT question, sql FROM queries
         WHERE connection_id = ?1 AND feedback = 1 AND outcome = 'ok' AND sql IS NOT NULL
           AND engine <> 'sql'
         {NEWEST_FIRST}"
    )
}

/// Questions matching `condition`, newest first; `params` are `?1` the
/// organisation, `?2` the limit, `?3` the offset, then the condition's own.
fn select_queries(
    conn: &Connection,
    condition: &str,
    params: &[&dyn ToSql],
) -> Result<Vec<QueryRecord>, StoreError> {
    let mut stmt = conn
        .prepare(&format!(
            "SELECT {QUERY_COLUMNS} FROM queries WHERE {condition} {NEWEST_FIRST}
             LIMIT ?2 OFFSET ?3"
        ))
        .map_err(db_error)?;
    let rows = stmt.query_map(params, query_from_row).map_err(db_error)?;
    rows.collect::<Result<_, _>>().map_err(db_error)
}

/// NotFound unless the organisation has this connection.
fn ensure_connection(conn: &Connection, org: &OrgId, id: &ConnectionId) -> Result<(), StoreError> {
    conn.cached_row(
        "SELECT 1 FROM connections WHERE org_id = ?1 AND id = ?2",
        params![org, id],
        |_| Ok(()),
    )
    .optional()
    .map_err(db_error)?
    .ok_or(StoreError::NotFound)
}

/// NotFound when a write matched no row.
fn found(changed: usize) -> Result<(), StoreError> {
    if changed == 0 { Err(StoreError::NotFound) } else { Ok(()) }
}

/// A unique-constraint failure of `connections`: the name index
/// (`connections_name_per_org`) or the key hash.
fn key_conflict(e: rusqlite::Error) -> StoreError {
    if is_name_conflict(&e) {
        return StoreError::Conflict(ConflictKind::ConnectionName);
    }
    conflict_or(e, rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE, ConflictKind::ApiKey)
}

/// A unique-constraint failure of the name index.
fn name_conflict(e: rusqlite::Error) -> StoreError {
    if is_name_conflict(&e) {
        StoreError::Conflict(ConflictKind::ConnectionName)
    } else {
        db_error(e)
    }
}

/// Whether an error is the unique index on connection names.
fn is_name_conflict(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, Some(message))
        if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
            && message.contains("connections_name_per_org"))
}

/// The comparison form of a connection name: trimmed, Unicode lowercase.
fn name_key(name: &str) -> String {
    name.trim().to_lowercase()
}

/// Refuses `name` when another connection of `org` (not `except`) has it,
/// compared trimmed and in Unicode lowercase. Run inside the write
/// transaction, so no other write comes between the check and the change;
/// the unique index on `(org_id, lower(trim(name)))` backs it for ASCII.
fn ensure_name_free(
    conn: &Connection,
    org: &OrgId,
    name: &str,
    except: Option<&ConnectionId>,
) -> Result<(), StoreError> {
    let wanted = name_key(name);
    let mut stmt = conn
        .prepare_cached("SELECT id, name FROM connections WHERE org_id = ?1")
        .map_err(db_error)?;
    let rows = stmt
        .query_map([org], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
        .map_err(db_error)?;
    for row in rows {
        let (id, existing) = row.map_err(db_error)?;
        if except.is_some_and(|e| e.as_str() == id) {
            continue;
        }
        if name_key(&existing) == wanted {
            return Err(StoreError::Conflict(ConflictKind::ConnectionName));
        }
    }
    Ok(())
}

//! Versioned schema migrations for the PostgreSQL store.
//!
//! Replicas may start at the same moment against one database: the runner
//! holds a transaction-level advisory lock while it reads what is applied and
//! applies the rest, so each migration runs exactly once, in version order,
//! inside one transaction together with its row in `schema_migrations`. A
//! database that records a version newer than the newest one here was
//! written by a newer binary and is refused.

use tokio_postgres::Client;

use super::rows::PgError;
use crate::store::{Migration, StoreError};

/// Every migration, oldest first.
pub(in crate::store) const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "init",
        sql: include_str!("../../../migrations/postgres/0001_init.sql"),
    },
    Migration {
        version: 2,
        name: "personal_tokens",
        sql: include_str!("../../../migrations/postgres/0002_personal_tokens.sql"),
    },
    Migration {
        version: 3,
        name: "query_source",
        sql: include_str!("../../../migrations/postgres/0003_query_source.sql"),
    },
];

/// The advisory lock key migrations hold (any constant no other code uses).
const MIGRATION_LOCK: i64 = 0x6375_7374_6172_6401;

/// The newest version this binary knows.
pub(in crate::store) fn latest_version() -> i64 {
    MIGRATIONS.last().map_or(0, |m| m.version)
}

/// Brings the database up to [`latest_version`], refusing a newer database.
pub(super) async fn migrate(client: &mut Client) -> Result<(), StoreError> {
    migrate_locked(client).await.map_err(PgError::into_store)
}

async fn migrate_locked(client: &mut Client) -> Result<(), PgError> {
    let tx = client.transaction().await?;
    // The store's statement and lock timeouts are for requests: a migration
    // may build an index on a large table, and a second replica waits for
    // the first's (the caller bounds the whole).
    tx.batch_execute("SET LOCAL statement_timeout = 0; SET LOCAL lock_timeout = 0").await?;
    // Held until this transaction ends: a second replica waits here, then
    // finds everything applied.
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK]).await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version    bigint PRIMARY KEY,
             name       text NOT NULL,
             applied_at timestamptz NOT NULL DEFAULT now()
         )",
    )
    .await?;
    let found: i64 = tx
        .query_one("SELECT coalesce(max(version), 0) FROM schema_migrations", &[])
        .await?
        .try_get(0)?;
    let known = latest_version();
    if found > known {
        return Err(StoreError::SchemaTooNew { found, known }.into());
    }
    for migration in MIGRATIONS.iter().filter(|m| m.version > found) {
        tx.batch_execute(migration.sql).await.map_err(|e| {
            StoreError::Internal(format!(
                "migration {} ({}) failed: {}",
                migration.version,
                migration.name,
                super::rows::describe(&e)
            ))
        })?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
            &[&migration.version, &migration.name],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

//! Versioned schema migrations for the SQLite store.
//!
//! Each migration runs once, in version order, inside its own transaction together
//! with its row in `schema_migrations`. A database that records a version newer than
//! the newest one here was written by a newer binary and is refused.

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use super::rows::{db_error, to_millis};
use crate::store::{Migration, StoreError};

/// Every migration, oldest first.
pub(in crate::store) const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "accounts",
        sql: include_str!("../../../migrations/0001_accounts.sql"),
    },
    Migration {
        version: 2,
        name: "platform",
        sql: include_str!("../../../migrations/0002_platform.sql"),
    },
    Migration {
        version: 3,
        name: "tokens_end",
        sql: include_str!("../../../migrations/0003_tokens_end.sql"),
    },
    Migration {
        version: 4,
        name: "connection_names",
        sql: include_str!("../../../migrations/0004_connection_names.sql"),
    },
    Migration {
        version: 5,
        name: "schema_summary",
        sql: include_str!("../../../migrations/0005_schema_summary.sql"),
    },
    Migration {
        version: 6,
        name: "shared_state",
        sql: include_str!("../../../migrations/0006_shared_state.sql"),
    },
    Migration {
        version: 7,
        name: "personal_tokens",
        sql: include_str!("../../../migrations/0007_personal_tokens.sql"),
    },
    Migration {
        version: 8,
        name: "query_source",
        sql: include_str!("../../../migrations/0008_query_source.sql"),
    },
];

/// The newest version this binary knows.
pub(in crate::store) fn latest_version() -> i64 {
    MIGRATIONS.last().map_or(0, |m| m.version)
}

/// Brings the database up to [`latest_version`], refusing a newer database.
pub(super) fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version    INTEGER PRIMARY KEY,
             name       TEXT NOT NULL,
             applied_at INTEGER NOT NULL
         ) STRICT",
    )
    .map_err(db_error)?;
    let known = latest_version();
    for migration in MIGRATIONS {
        // IMMEDIATE takes the write lock first, so two processes opening one file
        // at once apply each migration exactly once.
        let tx =
            conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db_error)?;
        let found: i64 = tx
            .query_row("SELECT coalesce(max(version), 0) FROM schema_migrations", [], |r| r.get(0))
            .map_err(db_error)?;
        if found > known {
            return Err(StoreError::SchemaTooNew { found, known });
        }
        let applied = tx
            .query_row(
                "SELECT 1 FROM schema_migrations WHERE version = ?1",
                [migration.version],
                |_| Ok(()),
            )
            .optional()
            .map_err(db_error)?
            .is_some();
        if applied {
            continue;
        }
        tx.execute_batch(migration.sql).map_err(|e| {
            StoreError::Internal(format!(
                "migration {} ({}) failed: {e}",
                migration.version, migration.name
            ))
        })?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?1, ?2, ?3)",
            params![migration.version, migration.name, to_millis(chrono::Utc::now())],
        )
        .map_err(db_error)?;
        tx.commit().map_err(db_error)?;
    }
    Ok(())
}

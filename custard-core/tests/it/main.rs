//! Integration tests of custard-core against real databases.

mod pg_discover;
mod pg_exec;
mod sqlite;

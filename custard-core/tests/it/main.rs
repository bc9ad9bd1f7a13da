//! Integration tests of custard-core against real databases.

mod ask;
mod openai;
mod pg_discover;
mod pg_exec;
mod sqlite;

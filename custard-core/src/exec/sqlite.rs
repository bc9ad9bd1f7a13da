//! SQLite executor (stub).

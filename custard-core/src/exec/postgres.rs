//! PostgreSQL executor (stub).

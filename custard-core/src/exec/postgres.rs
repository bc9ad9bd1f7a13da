//! PostgreSQL executor (envelope being written).

use super::{
    BoxFuture, DiscoverOptions, ExecError, ExecErrorCode, Executor, RowSender, RunLimits,
    RunSummary,
};
use crate::{CheckedSql, Dialect, Schema};

/// Runs checked queries on PostgreSQL.
#[derive(Debug)]
pub struct PostgresExecutor;

impl PostgresExecutor {
    /// Connects to `url`.
    pub async fn connect(_url: &str) -> Result<Self, ExecError> {
        Err(ExecError::new(ExecErrorCode::Internal, "not yet"))
    }
}

impl Executor for PostgresExecutor {
    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }
    fn discover<'a>(&'a self, _o: &'a DiscoverOptions) -> BoxFuture<'a, Result<Schema, ExecError>> {
        Box::pin(async { Err(ExecError::new(ExecErrorCode::Internal, "not yet")) })
    }
    fn run<'a>(
        &'a self,
        _q: &'a CheckedSql,
        _l: &'a RunLimits,
        _r: RowSender,
    ) -> BoxFuture<'a, Result<RunSummary, ExecError>> {
        Box::pin(async { Err(ExecError::new(ExecErrorCode::Internal, "not yet")) })
    }
}

//! SQLite executor (stub).

use super::{
    BoxFuture, DiscoverOptions, ExecError, ExecErrorCode, Executor, RowSender, RunLimits,
    RunSummary,
};
use crate::{CheckedSql, Dialect, Schema};

/// Runs checked queries on SQLite.
#[derive(Debug)]
pub struct SqliteExecutor;

impl SqliteExecutor {
    /// Opens the file at `path`.
    pub fn open(_path: &std::path::Path) -> Result<Self, ExecError> {
        Err(ExecError::new(ExecErrorCode::Internal, "not yet"))
    }
}

impl Executor for SqliteExecutor {
    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
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

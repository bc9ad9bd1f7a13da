//! [`AgentExecutor`]: a connection's agents as a `custard_core::Executor`.

use std::sync::Arc;

use custard_core::{
    BoxFuture, CheckedSql, Dialect, DiscoverOptions, ExecError, Executor, RowSender, RunLimits,
    RunSummary, Schema,
};

use super::AgentRouter;
use crate::store::ConnectionId;

/// Runs queries on whichever agent of one connection the router picks.
#[derive(Debug, Clone)]
pub struct AgentExecutor {
    router: Arc<dyn AgentRouter>,
    connection: ConnectionId,
    dialect: Dialect,
}

impl AgentExecutor {
    /// An executor for `connection`, whose database speaks `dialect`.
    pub fn new(router: Arc<dyn AgentRouter>, connection: ConnectionId, dialect: Dialect) -> Self {
        AgentExecutor { router, connection, dialect }
    }
}

impl Executor for AgentExecutor {
    fn dialect(&self) -> Dialect {
        self.dialect
    }

    fn discover<'a>(
        &'a self,
        options: &'a DiscoverOptions,
    ) -> BoxFuture<'a, Result<Schema, ExecError>> {
        let samples = u32::try_from(options.sample_values).unwrap_or(u32::MAX);
        self.router.discover(&self.connection, samples)
    }

    fn run<'a>(
        &'a self,
        query: &'a CheckedSql,
        limits: &'a RunLimits,
        rows: RowSender,
    ) -> BoxFuture<'a, Result<RunSummary, ExecError>> {
        self.router.run(&self.connection, query, limits, rows)
    }
}

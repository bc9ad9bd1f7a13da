//! The ask pipelines, one per connection, and the stored schemas they are
//! built from.
//!
//! Indexing a big schema is the expensive part of building a pipeline, so a
//! connection's pipeline is kept until its schema or its instructions change
//! (or it is deleted). The pipeline runs its SQL through the connection's
//! agents ([`AgentExecutor`], from [`Pipelines::executor`], which CSV exports
//! use too).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use custard_core::llm::LanguageModel;
use custard_core::wire::schema_from_json;
use custard_core::{AskOptions, AskPipeline, RunLimits, Schema};

use crate::error::{AppError, ErrorCode};
use crate::hub::{AgentExecutor, AgentRouter};
use crate::store::{Connection, ConnectionId, Store, StoreError};

/// Rows an answer carries.
const ANSWER_ROWS: u64 = 1000;
/// Bytes of rows (as JSON) an answer carries: past them it is cut short and
/// marked truncated, whatever SQL a caller (or model) wrote.
const ANSWER_BYTES: u64 = 8 * 1024 * 1024;

/// The stored schema of a connection, parsed; `schema_unavailable` while no
/// agent has reported one.
pub(crate) async fn stored_schema(
    store: &dyn Store,
    connection: &Connection,
) -> Result<Schema, AppError> {
    match store.get_schema(&connection.org_id, &connection.id).await {
        Ok(stored) => schema_from_json(&stored.json).map_err(AppError::internal),
        Err(StoreError::NotFound) => Err(AppError::new(
            ErrorCode::SchemaUnavailable,
            "the connection's schema is not known yet: start its agent, or wait a moment while \
             a connected agent reports it",
        )),
        Err(e) => Err(e.into()),
    }
}

/// Ask pipelines by connection, rebuilt when the schema or the instructions change.
#[derive(Debug)]
pub(crate) struct Pipelines {
    store: Arc<dyn Store>,
    router: Arc<dyn AgentRouter>,
    model: Arc<dyn LanguageModel>,
    /// The deadline of each query a pipeline runs.
    query_timeout: Duration,
    cached: Mutex<HashMap<ConnectionId, Arc<Cached>>>,
}

/// A pipeline with what it was built from.
#[derive(Debug)]
struct Cached {
    fingerprint: String,
    instructions: String,
    pipeline: Arc<AskPipeline>,
}

impl Pipelines {
    /// Pipelines that read schemas from `store`, run SQL through `router` with
    /// `query_timeout` per query, and write it with `model`.
    pub(crate) fn new(
        store: Arc<dyn Store>,
        router: Arc<dyn AgentRouter>,
        model: Arc<dyn LanguageModel>,
        query_timeout: Duration,
    ) -> Self {
        Pipelines { store, router, model, query_timeout, cached: Mutex::default() }
    }

    /// The executor that runs SQL on `connection`'s agents: the one path from
    /// the server to them, for questions and CSV exports alike.
    pub(crate) fn executor(&self, connection: &Connection) -> AgentExecutor {
        AgentExecutor::new(Arc::clone(&self.router), connection.id.clone(), connection.dialect)
    }

    /// Drops the pipeline of a deleted connection.
    pub(crate) fn forget(&self, id: &ConnectionId) {
        self.cached.lock().unwrap_or_else(PoisonError::into_inner).remove(id);
    }

    /// The pipeline of `connection` as it is now: the cached one while its
    /// schema and instructions are unchanged, else a new one.
    pub(crate) async fn get(&self, connection: &Connection) -> Result<Arc<AskPipeline>, AppError> {
        let current = |c: &Cached| {
            Some(&c.fingerprint) == connection.schema_fingerprint.as_ref()
                && c.instructions == connection.instructions
        };
        if let Some(cached) =
            self.cached.lock().unwrap_or_else(PoisonError::into_inner).get(&connection.id)
            && current(cached)
        {
            return Ok(Arc::clone(&cached.pipeline));
        }
        let schema = stored_schema(self.store.as_ref(), connection).await?;
        let fingerprint = schema.fingerprint();
        let executor = Arc::new(self.executor(connection));
        let options = AskOptions {
            max_rows: ANSWER_ROWS,
            limits: RunLimits {
                timeout: self.query_timeout,
                max_bytes: ANSWER_BYTES,
                ..RunLimits::default()
            },
            instructions: Some(connection.instructions.clone()).filter(|i| !i.is_empty()),
            ..AskOptions::default()
        };
        let model = Arc::clone(&self.model);
        // Indexing is CPU work proportional to the schema; keep it off the async threads.
        let pipeline =
            tokio::task::spawn_blocking(move || AskPipeline::new(schema, model, executor, options))
                .await
                .map_err(AppError::internal)?
                .map_err(AppError::internal)?;
        let pipeline = Arc::new(pipeline);
        self.cached.lock().unwrap_or_else(PoisonError::into_inner).insert(
            connection.id.clone(),
            Arc::new(Cached {
                fingerprint,
                instructions: connection.instructions.clone(),
                pipeline: Arc::clone(&pipeline),
            }),
        );
        Ok(pipeline)
    }
}

//! `custard._custard`: the native half of the Python package `custard`.
//!
//! A thin layer over `custard-core`: every behaviour (the guard, discovery,
//! retrieval, prompts, the model client, the offline engine, the ask
//! pipeline) is the core's; this crate converts arguments and results, maps
//! errors to one exception hierarchy (`errors.rs`), and runs async work on one
//! shared tokio runtime with the GIL released.

mod errors;

use std::sync::Arc;
use std::time::Duration;

use custard_core::llm::{LanguageModel, OfflineEngine, OpenAiConfig, OpenAiModel};
use custard_core::wire::{schema_from_json, schema_to_json};
use custard_core::{
    AskOptions, AskPipeline, ChatMessage, DdlOptions, Dialect, DiscoverOptions, Example, Guard,
    PromptBuilder, RetrieveOptions, SchemaIndex,
};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

use crate::errors::Failure;

/// The runtime all async work runs on (shared with `asyncio` futures).
fn runtime() -> &'static tokio::runtime::Runtime {
    pyo3_async_runtimes::tokio::get_runtime()
}

/// How often a blocking call looks for Ctrl-C (and other signal handlers).
const SIGNAL_CHECK: Duration = Duration::from_millis(100);

/// Runs a future to completion on the shared runtime, without the GIL.
/// Every [`SIGNAL_CHECK`] it runs Python's signal handlers: Ctrl-C raises
/// `KeyboardInterrupt` and drops the future, which cancels its work.
fn block_on<F>(py: Python<'_>, future: F) -> PyResult<F::Output>
where
    F: Future + Send,
    F::Output: Send,
{
    py.detach(|| {
        runtime().block_on(async {
            tokio::pin!(future);
            loop {
                tokio::select! {
                    output = &mut future => return Ok(output),
                    () = tokio::time::sleep(SIGNAL_CHECK) => {
                        Python::attach(|py| py.check_signals())?;
                    }
                }
            }
        })
    })
}

fn parse_dialect(dialect: &str) -> Result<Dialect, Failure> {
    dialect.parse().map_err(|_| {
        Failure::Invalid(
            "unknown_dialect",
            format!("unknown dialect `{dialect}` (expected `postgres` or `sqlite`)"),
        )
    })
}

/// SQL that passed the read-only guard.
#[pyclass(module = "custard", frozen)]
#[derive(Debug)]
struct CheckedSql(custard_core::CheckedSql);

#[pymethods]
impl CheckedSql {
    /// The query as parsed and printed back (normalised), without a row limit.
    #[getter]
    fn sql(&self) -> &str {
        self.0.query()
    }

    /// The SQL an executor runs: `sql` wrapped in the row limit when one applies.
    #[getter]
    fn limited_sql(&self) -> &str {
        self.0.sql()
    }

    /// The tables and views the query reads, as `schema.table`.
    #[getter]
    fn tables(&self) -> Vec<String> {
        self.0.tables().to_vec()
    }

    #[getter]
    fn dialect(&self) -> &'static str {
        self.0.dialect().as_str()
    }

    #[getter]
    fn row_limit(&self) -> Option<u64> {
        self.0.row_limit()
    }

    fn __repr__(&self) -> String {
        format!("CheckedSql({:?})", self.0.query())
    }

    fn __str__(&self) -> &str {
        self.0.query()
    }
}

/// Checks that `sql` is one read-only query (against `schema` when given:
/// then unknown tables and columns are refused too).
#[pyfunction]
#[pyo3(signature = (sql, dialect = None, schema = None, max_rows = None))]
fn check_sql(
    sql: &str,
    dialect: Option<&str>,
    schema: Option<PyRef<'_, Schema>>,
    max_rows: Option<u64>,
) -> PyResult<CheckedSql> {
    // The schema's dialect unless one is named; PostgreSQL without either.
    let dialect = match (dialect, &schema) {
        (Some(d), _) => parse_dialect(d)?,
        (None, Some(schema)) => schema.0.dialect,
        (None, None) => Dialect::Postgres,
    };
    let mut builder = Guard::builder(dialect);
    builder = match max_rows {
        Some(rows) => builder.max_rows(rows),
        None => builder.unlimited_rows(),
    };
    if let Some(schema) = schema {
        builder = builder.schema(schema.0.as_ref().clone());
    }
    let guard =
        builder.build().map_err(|e| Failure::Invalid("invalid_guard_config", e.to_string()))?;
    Ok(CheckedSql(guard.check(sql).map_err(Failure::from)?))
}

/// A column of a discovered table.
#[pyclass(module = "custard", frozen)]
#[derive(Debug)]
struct Column(custard_core::Column);

#[pymethods]
impl Column {
    #[getter]
    fn name(&self) -> &str {
        &self.0.name
    }

    #[getter]
    fn data_type(&self) -> &str {
        &self.0.data_type
    }

    #[getter]
    fn nullable(&self) -> bool {
        self.0.nullable
    }

    #[getter]
    fn comment(&self) -> Option<&str> {
        self.0.comment.as_deref()
    }

    #[getter]
    fn sample_values(&self) -> Vec<String> {
        self.0.sample_values.clone()
    }

    fn __repr__(&self) -> String {
        format!("Column({:?}, {:?})", self.0.name, self.0.data_type)
    }
}

/// A discovered table or view.
#[pyclass(module = "custard", frozen)]
#[derive(Debug)]
struct Table(custard_core::Table);

#[pymethods]
impl Table {
    #[getter]
    fn schema(&self) -> &str {
        &self.0.schema
    }

    #[getter]
    fn name(&self) -> &str {
        &self.0.name
    }

    /// `table`, `view`, `materialized_view` or `foreign_table`.
    #[getter]
    fn kind(&self) -> &'static str {
        self.0.kind.as_str()
    }

    #[getter]
    fn comment(&self) -> Option<&str> {
        self.0.comment.as_deref()
    }

    #[getter]
    fn columns(&self) -> Vec<Column> {
        self.0.columns.iter().cloned().map(Column).collect()
    }

    #[getter]
    fn primary_key(&self) -> Vec<String> {
        self.0.primary_key.clone()
    }

    fn __repr__(&self) -> String {
        format!("Table({:?}.{:?}, {} columns)", self.0.schema, self.0.name, self.0.columns.len())
    }
}

/// A database's tables and columns.
#[pyclass(module = "custard", frozen)]
#[derive(Debug)]
struct Schema(Arc<custard_core::Schema>);

#[pymethods]
impl Schema {
    /// `postgres` or `sqlite`.
    #[getter]
    fn dialect(&self) -> &'static str {
        self.0.dialect.as_str()
    }

    #[getter]
    fn tables(&self) -> Vec<Table> {
        self.0.tables.iter().cloned().map(Table).collect()
    }

    /// The schema as JSON (the agent's wire format).
    fn to_json(&self) -> String {
        schema_to_json(&self.0)
    }

    /// A schema from [`Schema::to_json`]'s JSON.
    #[staticmethod]
    fn from_json(text: &str) -> PyResult<Self> {
        Ok(Schema(Arc::new(schema_from_json(text).map_err(Failure::from)?)))
    }

    /// Compact CREATE TABLE statements with comments, as prompts show them.
    fn to_ddl(&self) -> String {
        self.0.to_ddl(&DdlOptions::default())
    }

    /// A stable hash of the schema.
    fn fingerprint(&self) -> String {
        self.0.fingerprint()
    }

    fn __len__(&self) -> usize {
        self.0.tables.len()
    }

    fn __repr__(&self) -> String {
        format!("Schema({}, {} tables)", self.0.dialect, self.0.tables.len())
    }
}

/// Reads the schema of the database at `database_url` (`postgresql://...` or `sqlite:PATH`).
#[pyfunction]
#[pyo3(signature = (database_url, sample_values = 5))]
fn discover(py: Python<'_>, database_url: &str, sample_values: usize) -> PyResult<Schema> {
    let schema = block_on(py, async {
        let executor = custard_core::connect(database_url).await?;
        executor.discover(&DiscoverOptions { sample_values }).await
    })?
    .map_err(Failure::from)?;
    Ok(Schema(Arc::new(schema)))
}

/// The chat messages the ask pipeline sends a model for `question`: the
/// schema cut to what the question needs, the rules, instructions, examples.
#[pyfunction]
#[pyo3(signature = (schema, question, dialect = None, instructions = None, examples = None))]
fn build_prompt<'py>(
    py: Python<'py>,
    schema: PyRef<'_, Schema>,
    question: &str,
    dialect: Option<&str>,
    instructions: Option<&str>,
    examples: Option<Vec<(String, String)>>,
) -> PyResult<Bound<'py, PyList>> {
    let dialect = match dialect {
        Some(d) => parse_dialect(d)?,
        None => schema.0.dialect,
    };
    // The one rule for questions, as the pipeline and the server apply it.
    custard_core::AskRequest::check_question(question).map_err(Failure::from)?;
    let schema = Arc::clone(&schema.0);
    let question_owned = question.to_owned();
    // Indexing is CPU work proportional to the schema: without the GIL.
    let ddl = py.detach(move || {
        SchemaIndex::new(schema.as_ref().clone())
            .retrieve(&question_owned, &RetrieveOptions::default())
            .ddl
    });
    let examples: Vec<Example> = examples
        .unwrap_or_default()
        .into_iter()
        .map(|(question, sql)| Example { question, sql })
        .collect();
    let mut builder = PromptBuilder::new(dialect, question).schema_ddl(&ddl).examples(&examples);
    if let Some(instructions) = instructions {
        builder = builder.instructions(instructions);
    }
    messages(py, &builder.build())
}

fn messages<'py>(py: Python<'py>, messages: &[ChatMessage]) -> PyResult<Bound<'py, PyList>> {
    let list = PyList::empty(py);
    for message in messages {
        let item = PyDict::new(py);
        item.set_item("role", message.role.as_str())?;
        item.set_item("content", &message.content)?;
        list.append(item)?;
    }
    Ok(list)
}

/// An answered question.
#[pyclass(module = "custard", frozen)]
#[derive(Debug)]
struct Answer(custard_core::Answer);

#[pymethods]
impl Answer {
    #[getter]
    fn text(&self) -> &str {
        &self.0.text
    }

    #[getter]
    fn sql(&self) -> &str {
        &self.0.sql
    }

    #[getter]
    fn columns(&self) -> Vec<String> {
        self.0.columns.iter().map(|c| c.name.clone()).collect()
    }

    #[getter]
    fn column_types(&self) -> Vec<String> {
        self.0.columns.iter().map(|c| c.type_name.clone()).collect()
    }

    /// The rows as lists of JSON-typed values in column order.
    #[getter]
    fn rows<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        Ok(pythonize::pythonize(py, &self.0.rows)?)
    }

    #[getter]
    fn truncated(&self) -> bool {
        self.0.truncated
    }

    /// `{"type": "bar" | "line", "x": column, "y": [columns]}` or None.
    #[getter]
    fn chart<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyDict>>> {
        let Some(chart) = &self.0.chart else { return Ok(None) };
        let dict = PyDict::new(py);
        dict.set_item("type", chart.kind.as_str())?;
        dict.set_item("x", &chart.x)?;
        dict.set_item("y", &chart.y)?;
        Ok(Some(dict))
    }

    /// `offline` or the model's name.
    #[getter]
    fn engine(&self) -> &str {
        &self.0.engine
    }

    /// SQL attempts, the answering one included.
    #[getter]
    fn attempts(&self) -> usize {
        self.0.attempts.len()
    }

    /// Milliseconds per step.
    #[getter]
    fn timings<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let t = &self.0.timings;
        let dict = PyDict::new(py);
        for (name, d) in [
            ("retrieve", t.retrieve),
            ("prompt", t.prompt),
            ("generate", t.generate),
            ("guard", t.guard),
            ("execute", t.execute),
            ("answer", t.answer),
            ("total", t.total),
        ] {
            dict.set_item(name, d.as_secs_f64() * 1000.0)?;
        }
        Ok(dict)
    }

    /// The rows as dictionaries keyed by column name.
    fn to_dicts<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let list = PyList::empty(py);
        for row in &self.0.rows {
            let item = PyDict::new(py);
            for (column, value) in self.0.columns.iter().zip(row) {
                item.set_item(&column.name, pythonize::pythonize(py, value)?)?;
            }
            list.append(item)?;
        }
        Ok(list)
    }

    /// A pandas DataFrame of the rows (pandas is optional: ImportError without it).
    fn to_pandas<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let pandas = py.import("pandas").map_err(|_| {
            pyo3::exceptions::PyImportError::new_err(
                "to_pandas needs pandas: pip install pandas (or use to_dicts)",
            )
        })?;
        let columns = self.columns();
        let kwargs = PyDict::new(py);
        kwargs.set_item("columns", columns)?;
        pandas.getattr("DataFrame")?.call((self.rows(py)?,), Some(&kwargs))
    }

    fn __repr__(&self) -> String {
        format!("Answer({:?}, {} rows)", self.0.text, self.0.rows.len())
    }
}

/// Questions in, answers out, over one database. Safe to share between
/// threads: asking never holds the GIL.
#[pyclass(module = "custard", subclass, frozen)]
struct Engine {
    pipeline: Arc<AskPipeline>,
    engine: String,
}

impl std::fmt::Debug for Engine {
    // The pipeline holds the model client (and its key): show only the engine.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").field("engine", &self.engine).finish_non_exhaustive()
    }
}

#[pymethods]
impl Engine {
    #[new]
    #[pyo3(signature = (
        database_url, model = None, base_url = None, api_key = None, *,
        instructions = None, max_rows = 1000, timeout = None
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        database_url: &str,
        model: Option<String>,
        base_url: Option<String>,
        api_key: Option<String>,
        instructions: Option<String>,
        max_rows: u64,
        timeout: Option<f64>,
    ) -> PyResult<Self> {
        let model: Arc<dyn LanguageModel> = match model {
            Some(model) => {
                let defaults = OpenAiConfig::default();
                Arc::new(
                    OpenAiModel::new(OpenAiConfig {
                        model,
                        api_key,
                        base_url: base_url.unwrap_or(defaults.base_url.clone()),
                        ..defaults
                    })
                    .map_err(Failure::from)?,
                )
            }
            None if base_url.is_some() || api_key.is_some() => {
                return Err(Failure::Invalid(
                    "missing_model",
                    "base_url or api_key is set but model is not: name the model to use".into(),
                )
                .into());
            }
            None => Arc::new(OfflineEngine::new()),
        };
        let mut options = AskOptions { max_rows, instructions, ..AskOptions::default() };
        if let Some(seconds) = timeout {
            options.limits.timeout = Duration::try_from_secs_f64(seconds)
                .ok()
                .filter(|d| !d.is_zero())
                .ok_or_else(|| {
                    Failure::Invalid(
                        "invalid_timeout",
                        "timeout must be a positive number of seconds".into(),
                    )
                })?;
        }
        let engine = model.name();
        let pipeline = block_on(py, async {
            let executor = custard_core::connect(database_url).await?;
            let schema = executor.discover(&DiscoverOptions { sample_values: 5 }).await?;
            AskPipeline::new(schema, model, Arc::from(executor), options)
                .map_err(|e| Failure::Invalid("invalid_options", e.to_string()))
        })??;
        Ok(Engine { pipeline: Arc::new(pipeline), engine })
    }

    /// The schema questions are answered from.
    #[getter]
    fn schema(&self) -> Schema {
        Schema(Arc::new(self.pipeline.schema().clone()))
    }

    /// `offline` or the model's name.
    #[getter]
    fn engine(&self) -> &str {
        &self.engine
    }

    /// Answers a question; blocks (without holding the GIL) until done.
    fn ask(&self, py: Python<'_>, question: &str) -> PyResult<Answer> {
        let answer = block_on(py, self.pipeline.ask(question, &[]))?.map_err(Failure::from)?;
        Ok(Answer(answer))
    }

    /// An asyncio future of the answer; `custard.Engine.ask_async` awaits it.
    fn _ask_future<'py>(&self, py: Python<'py>, question: String) -> PyResult<Bound<'py, PyAny>> {
        let pipeline = Arc::clone(&self.pipeline);
        pyo3_async_runtimes::tokio::future_into_py(py, async move {
            let answer = pipeline.ask(&question, &[]).await.map_err(Failure::from)?;
            Ok(Answer(answer))
        })
    }

    fn __repr__(&self) -> String {
        format!("Engine({:?})", self.engine)
    }
}

/// The native module.
#[pymodule]
fn _custard(module: &Bound<'_, PyModule>) -> PyResult<()> {
    module.add("__version__", env!("CARGO_PKG_VERSION"))?;
    errors::register(module)?;
    module.add_class::<CheckedSql>()?;
    module.add_class::<Column>()?;
    module.add_class::<Table>()?;
    module.add_class::<Schema>()?;
    module.add_class::<Answer>()?;
    module.add_class::<Engine>()?;
    module.add_function(wrap_pyfunction!(check_sql, module)?)?;
    module.add_function(wrap_pyfunction!(discover, module)?)?;
    module.add_function(wrap_pyfunction!(build_prompt, module)?)?;
    Ok(())
}

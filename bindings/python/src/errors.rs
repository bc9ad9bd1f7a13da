//! The exception hierarchy and the one mapping from core errors to it.
//!
//! `custard.Error` is the base; every raised error carries a stable `code`
//! (the core's snake_case name) and a message fit to show a user.

use custard_core::llm::{LlmError as CoreLlmError, LlmErrorCode};
use custard_core::wire::WireError;
use custard_core::{AskError, AttemptStage, ExecError, ExecErrorCode, Rejection};
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

pyo3::create_exception!(custard, Error, PyException, "The base of every error Custard raises.");
pyo3::create_exception!(custard, UnsafeSqlError, Error, "The guard refused the SQL.");
pyo3::create_exception!(custard, DatabaseError, Error, "The database could not be used.");
pyo3::create_exception!(custard, LlmError, Error, "The language model failed.");
pyo3::create_exception!(custard, CannotAnswerError, Error, "No way to answer from this database.");
pyo3::create_exception!(custard, NoValidQueryError, Error, "Every SQL written was refused.");
pyo3::create_exception!(custard, InvalidInputError, Error, "An argument is malformed.");

/// Registers the exceptions on the module, `Error.code` defaulting to `"error"`.
pub(crate) fn register(module: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = module.py();
    let error = py.get_type::<Error>();
    error.setattr("code", "error")?;
    module.add("Error", error)?;
    module.add("UnsafeSqlError", py.get_type::<UnsafeSqlError>())?;
    module.add("DatabaseError", py.get_type::<DatabaseError>())?;
    module.add("LlmError", py.get_type::<LlmError>())?;
    module.add("CannotAnswerError", py.get_type::<CannotAnswerError>())?;
    module.add("NoValidQueryError", py.get_type::<NoValidQueryError>())?;
    module.add("InvalidInputError", py.get_type::<InvalidInputError>())?;
    Ok(())
}

/// Everything that can go wrong in the core, before it becomes a Python exception.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The guard refused the SQL.
    Unsafe(Rejection),
    /// Connecting, discovering or running failed.
    Exec(ExecError),
    /// Answering failed.
    Ask(AskError),
    /// The model client could not be set up.
    Llm(CoreLlmError),
    /// Schema JSON that is not a schema.
    Wire(WireError),
    /// A malformed argument: its code and message.
    Invalid(&'static str, String),
}

impl From<Rejection> for Failure {
    fn from(e: Rejection) -> Self {
        Failure::Unsafe(e)
    }
}

impl From<ExecError> for Failure {
    fn from(e: ExecError) -> Self {
        Failure::Exec(e)
    }
}

impl From<AskError> for Failure {
    fn from(e: AskError) -> Self {
        Failure::Ask(e)
    }
}

impl From<CoreLlmError> for Failure {
    fn from(e: CoreLlmError) -> Self {
        Failure::Llm(e)
    }
}

impl From<WireError> for Failure {
    fn from(e: WireError) -> Self {
        Failure::Wire(e)
    }
}

impl From<Failure> for PyErr {
    fn from(failure: Failure) -> Self {
        Python::attach(|py| failure.into_pyerr(py))
    }
}

/// An exception of type `T` with `code` set.
fn raised<T: pyo3::PyTypeInfo>(py: Python<'_>, code: &str, message: String) -> PyErr {
    let err = PyErr::from_type(py.get_type::<T>(), message);
    // Setting an attribute on a fresh exception instance cannot fail in practice;
    // if it did, the exception still says what went wrong.
    let _ = err.value(py).setattr("code", code);
    err
}

impl Failure {
    fn into_pyerr(self, py: Python<'_>) -> PyErr {
        match self {
            Failure::Unsafe(rejection) => {
                let err = raised::<UnsafeSqlError>(py, rejection.code.as_str(), rejection.message);
                let _ = err.value(py).setattr("suggestions", rejection.suggestions);
                err
            }
            Failure::Exec(e) => exec_error(py, e),
            Failure::Llm(e) => raised::<LlmError>(py, e.code.as_str(), e.message),
            Failure::Wire(e) => raised::<InvalidInputError>(py, e.code(), e.to_string()),
            Failure::Invalid(code, message) => raised::<InvalidInputError>(py, code, message),
            Failure::Ask(e) => {
                let code = e.code().to_owned();
                match e {
                    AskError::InvalidQuestion(message) => {
                        raised::<InvalidInputError>(py, &code, message)
                    }
                    // The offline engine abstaining is not a model failure.
                    AskError::Model(e) if e.code == LlmErrorCode::Abstained => {
                        raised::<CannotAnswerError>(py, "cannot_answer", e.message)
                    }
                    AskError::Model(e) => raised::<LlmError>(py, &code, e.message),
                    AskError::Execution(e) => exec_error(py, e),
                    AskError::CannotAnswer { .. } => {
                        raised::<CannotAnswerError>(py, &code, e.to_string())
                    }
                    AskError::NoValidQuery { ref attempts } => {
                        let list = attempts_list(py, attempts);
                        let err = raised::<NoValidQueryError>(py, &code, e.to_string());
                        if let Ok(list) = list {
                            let _ = err.value(py).setattr("attempts", list);
                        }
                        err
                    }
                    other => raised::<Error>(py, &code, other.to_string()),
                }
            }
        }
    }
}

fn exec_error(py: Python<'_>, e: ExecError) -> PyErr {
    match e.code {
        ExecErrorCode::InvalidUrl => raised::<InvalidInputError>(py, e.code.as_str(), e.message),
        ExecErrorCode::Rejected => {
            let err = raised::<UnsafeSqlError>(py, e.code.as_str(), e.message);
            let _ = err.value(py).setattr("suggestions", Vec::<String>::new());
            err
        }
        _ => raised::<DatabaseError>(py, e.code.as_str(), e.message),
    }
}

/// The attempts of a failed question: `reply`, `sql`, and `stage`, `code`,
/// `message` of what refused it.
fn attempts_list<'py>(
    py: Python<'py>,
    attempts: &[custard_core::Attempt],
) -> PyResult<Bound<'py, PyList>> {
    let list = PyList::empty(py);
    for attempt in attempts {
        let item = PyDict::new(py);
        item.set_item("reply", &attempt.reply)?;
        item.set_item("sql", &attempt.sql)?;
        if let Some(failure) = &attempt.failure {
            let stage = match failure.stage {
                AttemptStage::NoSql => "no_sql",
                AttemptStage::Guard => "guard",
                AttemptStage::Database => "database",
                _ => "other",
            };
            item.set_item("stage", stage)?;
            item.set_item("code", &failure.code)?;
            item.set_item("message", &failure.message)?;
        }
        list.append(item)?;
    }
    Ok(list)
}

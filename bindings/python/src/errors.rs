//! The exception hierarchy and the one mapping from core errors to it.
//!
//! `custard.Error` is the base; every raised error carries a stable `code`
//! from the core's vocabulary ([`custard_core::Code`], `docs/errors.md`) and a
//! message fit to show a user. [`exception_for`] is the one mapping from codes
//! to classes; `ERROR_CODES` shows it to Python.

use custard_core::llm::{LlmError as CoreLlmError, LlmErrorCode};
use custard_core::wire::WireError;
use custard_core::{
    AskError, AskErrorCode, AttemptStage, Code, ExecError, ExecErrorCode, Rejection,
};
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyType};

pyo3::create_exception!(custard, Error, PyException, "The base of every error Custard raises.");
pyo3::create_exception!(custard, UnsafeSqlError, Error, "The guard refused the SQL.");
pyo3::create_exception!(custard, DatabaseError, Error, "The database could not be used.");
pyo3::create_exception!(custard, LlmError, Error, "The language model failed.");
pyo3::create_exception!(custard, CannotAnswerError, Error, "No way to answer from this database.");
pyo3::create_exception!(custard, NoValidQueryError, Error, "Every SQL written was refused.");
pyo3::create_exception!(custard, InvalidInputError, Error, "An argument is malformed.");

/// Registers the exceptions on the module, `Error.code` defaulting to `"error"`,
/// and `ERROR_CODES`: every code of the vocabulary and the class it is raised as.
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
    let codes = PyDict::new(py);
    for &code in Code::ALL {
        codes.set_item(code.as_str(), exception_for(py, code))?;
    }
    module.add("ERROR_CODES", codes)?;
    Ok(())
}

/// The exception class a code is raised as: one per family, with the few
/// codes that belong with another family's class (pytest checks that no code
/// is left to the base class).
fn exception_for(py: Python<'_>, code: Code) -> Bound<'_, PyType> {
    match code {
        Code::Guard(_) | Code::Exec(ExecErrorCode::Rejected) => py.get_type::<UnsafeSqlError>(),
        Code::Exec(ExecErrorCode::InvalidUrl) => py.get_type::<InvalidInputError>(),
        Code::Exec(_) => py.get_type::<DatabaseError>(),
        Code::Llm(LlmErrorCode::Abstained) => py.get_type::<CannotAnswerError>(),
        Code::Llm(_) => py.get_type::<LlmError>(),
        Code::Ask(AskErrorCode::InvalidQuestion) => py.get_type::<InvalidInputError>(),
        Code::Ask(AskErrorCode::CannotAnswer) => py.get_type::<CannotAnswerError>(),
        Code::Ask(_) => py.get_type::<NoValidQueryError>(),
        // Argument checks, and schema JSON that is not a schema (`Schema.from_json`).
        Code::Input(_) | Code::Wire(_) => py.get_type::<InvalidInputError>(),
        _ => py.get_type::<Error>(),
    }
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
    /// A malformed argument: its code (the name of an
    /// [`InputErrorCode`](custard_core::InputErrorCode) or `invalid_question`)
    /// and message.
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

/// The exception of `class` with `code` set; an [`UnsafeSqlError`] also gets
/// `suggestions`.
fn raised_as(
    py: Python<'_>,
    class: Bound<'_, PyType>,
    code: &str,
    message: String,
    suggestions: Vec<String>,
) -> PyErr {
    let unsafe_sql = class.is(py.get_type::<UnsafeSqlError>());
    let err = PyErr::from_type(class, message);
    // Setting an attribute on a fresh exception instance cannot fail in practice;
    // if it did, the exception still says what went wrong.
    let _ = err.value(py).setattr("code", code);
    if unsafe_sql {
        let _ = err.value(py).setattr("suggestions", suggestions);
    }
    err
}

/// The exception a code is raised as ([`exception_for`]), with `code` set.
fn raised(py: Python<'_>, code: Code, message: String) -> PyErr {
    raised_as(py, exception_for(py, code), code.as_str(), message, Vec::new())
}

impl Failure {
    fn into_pyerr(self, py: Python<'_>) -> PyErr {
        match self {
            Failure::Unsafe(rejection) => {
                let code = Code::from(rejection.code);
                let class = exception_for(py, code);
                raised_as(py, class, code.as_str(), rejection.message, rejection.suggestions)
            }
            Failure::Exec(e) => raised(py, e.code.into(), e.message),
            Failure::Llm(e) => raised(py, e.code.into(), e.message),
            Failure::Wire(e) => raised(py, e.error_code().into(), e.to_string()),
            Failure::Invalid(name, message) => match Code::parse(name) {
                Some(code) => raised(py, code, message),
                None => {
                    let class = py.get_type::<InvalidInputError>();
                    raised_as(py, class, name, message, Vec::new())
                }
            },
            Failure::Ask(e) => {
                // The offline engine abstaining is `cannot_answer`, not a model failure.
                let code = e.code();
                match e {
                    AskError::InvalidQuestion(message) => raised(py, code, message),
                    AskError::Model(e) => raised(py, code, e.message),
                    AskError::Execution(e) => raised(py, code, e.message),
                    AskError::NoValidQuery { ref attempts } => {
                        let list = attempts_list(py, attempts);
                        let err = raised(py, code, e.to_string());
                        if let Ok(list) = list {
                            let _ = err.value(py).setattr("attempts", list);
                        }
                        err
                    }
                    other => raised(py, code, other.to_string()),
                }
            }
        }
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
            item.set_item("code", failure.code.as_str())?;
            item.set_item("message", &failure.message)?;
        }
        list.append(item)?;
    }
    Ok(list)
}

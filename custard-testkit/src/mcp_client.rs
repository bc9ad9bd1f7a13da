//! A real, independent MCP client for end-to-end tests: the official Python
//! SDK (`mcp` from PyPI), driven by `python/mcp_client.py` in this crate.
//!
//! The Python comes from the project's test environment, which
//! `scripts/ensure-python.sh` creates (`target/python-venv`, with the `mcp`
//! package), or from `CUSTARD_TEST_PYTHON`. When it is missing the helper
//! panics naming the script, so an MCP test never passes without a client.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::AsyncWriteExt;

/// The Python of the test environment.
fn python() -> PathBuf {
    if let Some(path) = std::env::var_os("CUSTARD_TEST_PYTHON").filter(|p| !p.is_empty()) {
        return PathBuf::from(path);
    }
    crate::workspace_dir().join("target/python-venv/bin/python")
}

/// Runs the Python MCP client on `plan` (see `python/mcp_client.py`: the
/// transport, where to connect, the calls to make) and returns what it
/// printed: the server's info, its tools and one result per call.
///
/// # Panics
///
/// When the Python environment is missing, the client fails (a connection
/// or protocol error), or it runs past `within`.
pub async fn run(plan: &Value, within: Duration) -> Value {
    let python = python();
    assert!(
        python.exists(),
        "{} is missing: run scripts/ensure-python.sh (it creates the test environment with the \
         `mcp` package), or set CUSTARD_TEST_PYTHON",
        python.display()
    );
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("python/mcp_client.py");
    let mut child = tokio::process::Command::new(&python)
        .arg(&script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e}", python.display()));
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(plan.to_string().as_bytes()).await.expect("writing the plan");
    drop(stdin);
    let output = tokio::time::timeout(within, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("the MCP client ran past {within:?}"))
        .expect("waiting for the MCP client");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "the MCP client failed ({}):\n{stderr}", output.status);
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "the MCP client printed no JSON ({e}):\n{}\n{stderr}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

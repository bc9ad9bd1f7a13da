//! Integration tests of the `custard-agent` binary, driven as an operator would.

mod check_sql;
mod discover;
mod run;
mod startup;

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

/// Runs the agent binary with `args`, feeding `stdin`; returns stdout lines as
/// JSON when they parse, the raw stdout, and stderr. Panics after two minutes.
fn agent(args: &[&str], stdin: &str) -> (bool, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_custard-agent"))
        .args(args)
        .env_remove("CUSTARD_DATABASE_URL")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting custard-agent");
    let mut input = child.stdin.take().expect("stdin");
    let stdin = stdin.to_owned();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(stdin.as_bytes());
    });
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let output = rx
        .recv_timeout(Duration::from_secs(120))
        .expect("custard-agent did not finish within two minutes")
        .expect("waiting for custard-agent");
    let _ = writer.join();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn json_lines(stdout: &str) -> Vec<Value> {
    stdout
        .lines()
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("output line {l:?} is not JSON: {e}"))
        })
        .collect()
}

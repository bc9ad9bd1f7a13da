//! Integration tests of the `custard-agent` binary, driven as an operator would.

mod check_sql;
mod discover;
mod fake_server;
mod health;
mod hostile;
mod mcp;
mod privileges;
mod run;
mod startup;
mod tls;

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use custard_testkit::{connect, test_database_url};
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

/// Login roles dropped when this value is dropped, even when the test fails.
/// `DROP OWNED BY` runs first in `databases`, so grants there do not block the drop.
#[derive(Debug)]
struct TempRoles {
    names: Vec<String>,
    /// Databases holding grants to the roles.
    databases: Vec<String>,
}

impl TempRoles {
    /// Names `custard_t_<stem>_<pid>` for each stem; leftovers of a crashed run go first.
    async fn new(stems: &[&str]) -> TempRoles {
        let names: Vec<String> =
            stems.iter().map(|s| format!("custard_t_{s}_{}", std::process::id())).collect();
        let roles = TempRoles { names, databases: Vec::new() };
        let admin = connect(&test_database_url()).await;
        for name in roles.names.iter().rev() {
            admin.batch_execute(&format!("DROP ROLE IF EXISTS \"{name}\"")).await.ok();
        }
        roles
    }

    fn name(&self, i: usize) -> &str {
        &self.names[i]
    }
}

impl Drop for TempRoles {
    fn drop(&mut self) {
        let names = self.names.clone();
        let mut databases = self.databases.clone();
        databases.push(test_database_url());
        // Drop runs inside or outside a runtime; a thread with its own runtime works in both.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
                return;
            };
            rt.block_on(async {
                for url in &databases {
                    let Ok((client, conn)) =
                        tokio_postgres::connect(url, tokio_postgres::NoTls).await
                    else {
                        continue;
                    };
                    tokio::spawn(conn);
                    for name in names.iter().rev() {
                        let _ = client.batch_execute(&format!("DROP OWNED BY \"{name}\"")).await;
                    }
                    if url == &test_database_url() {
                        for name in names.iter().rev() {
                            let _ = client
                                .batch_execute(&format!("DROP ROLE IF EXISTS \"{name}\""))
                                .await;
                        }
                    }
                }
            });
        })
        .join();
    }
}

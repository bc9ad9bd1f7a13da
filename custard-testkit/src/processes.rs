//! Real processes for end-to-end and fault tests: a [`Scene`] (one test's
//! temporary folder and the logs of what it started, printed when the test
//! fails) and [`Process`] (a child with its output in a log file, signalled by
//! pid, SIGKILLed when dropped).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};

/// One test's temporary folder and the logs of the processes it started; when
/// the test fails (the scene is dropped while panicking) every log is printed.
/// The folder is removed when the scene is dropped.
#[derive(Debug)]
pub struct Scene {
    name: String,
    dir: PathBuf,
    logs: Mutex<Vec<(String, PathBuf)>>,
}

static SCENES: AtomicU32 = AtomicU32::new(0);

impl Scene {
    /// A fresh folder under the system's temporary folder, named after `name`.
    pub fn new(name: &str) -> Scene {
        let dir = std::env::temp_dir().join(format!(
            "custard-{name}-{}-{}",
            std::process::id(),
            SCENES.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)
            .unwrap_or_else(|e| panic!("creating the test folder {}: {e}", dir.display()));
        Scene { name: name.to_owned(), dir, logs: Mutex::new(Vec::new()) }
    }

    /// The scene's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The scene's folder.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// A log file for process `name` (appended to when it exists), remembered for printing.
    pub fn log(&self, name: &str) -> (PathBuf, std::fs::File) {
        let path = self.dir.join(format!("{name}.log"));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .unwrap_or_else(|e| panic!("creating the log file {}: {e}", path.display()));
        let mut logs = self.logs.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if !logs.iter().any(|(_, p)| *p == path) {
            logs.push((name.to_owned(), path.clone()));
        }
        (path, file)
    }
}

impl Drop for Scene {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let logs = self.logs.lock().map(|l| l.clone()).unwrap_or_default();
            for (name, path) in logs {
                let text = std::fs::read_to_string(&path).unwrap_or_else(|e| format!("<{e}>"));
                eprintln!(
                    "\n----- {name} ({}) -----\n{text}----- end of {name} -----",
                    path.display()
                );
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A child process with its output in a log file, SIGKILLed when dropped.
#[derive(Debug)]
pub struct Process {
    name: String,
    child: Child,
    pid: u32,
    log: PathBuf,
}

impl Process {
    /// Starts `program` with a clean `CUSTARD_*`/`OPENAI_*` environment, in the
    /// scene's folder (so no `.env` file of the developer's is read);
    /// `configure` adds arguments and variables.
    pub fn spawn(
        scene: &Scene,
        name: &str,
        program: &Path,
        configure: impl FnOnce(&mut Command),
    ) -> Process {
        let mut command = Command::new(program);
        for (key, _) in std::env::vars_os() {
            let key_text = key.to_string_lossy();
            if key_text.starts_with("CUSTARD_") || key_text.starts_with("OPENAI_") {
                command.env_remove(&key);
            }
        }
        let (log, file) = scene.log(name);
        command
            .env("CUSTARD_LOG", "info")
            .env("NO_COLOR", "1")
            .current_dir(scene.path())
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("a second handle on the log file"))
            .stderr(file)
            .kill_on_drop(true);
        configure(&mut command);
        let child =
            command.spawn().unwrap_or_else(|e| panic!("starting {}: {e}", program.display()));
        let pid = child.id().expect("a started process has a pid");
        Process { name: name.to_owned(), child, pid, log }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// What the process wrote so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Panics with the log when the process has exited.
    pub fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("{} exited early ({status}):\n{}", self.name, self.log_text());
        }
    }

    /// Sends `signal` (`STOP`, `CONT`, `TERM`, ...) with kill(1).
    pub fn signal(&self, signal: &str) {
        let status = std::process::Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid.to_string())
            .status()
            .unwrap_or_else(|e| panic!("running kill -{signal} {}: {e}", self.pid));
        assert!(status.success(), "kill -{signal} {} ({}) failed: {status}", self.pid, self.name);
    }

    /// Waits up to `within` for the process to exit on its own (after a
    /// `signal("TERM")`, say) and reaps it; `None` when it is still running.
    pub async fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        match tokio::time::timeout(within, self.child.wait()).await {
            Ok(status) => Some(status.expect("waiting for the process")),
            Err(_) => None,
        }
    }

    /// SIGKILL (no chance to say goodbye), then reaps the process.
    pub async fn kill(&mut self) {
        // A stopped process dies of SIGKILL too.
        self.child.start_kill().expect("sending SIGKILL");
        let status = self.child.wait().await.expect("waiting for the killed process");
        assert!(!status.success(), "{} was killed: {status}", self.name);
    }
}

/// A port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port on 127.0.0.1")
        .port()
}

/// The status code of one HTTP/1.1 request over a fresh socket, or `None`
/// when nothing answered.
pub async fn http_status(addr: &str, method: &str, path: &str, body: &str) -> Option<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    let request = format!(
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.ok()?;
    String::from_utf8_lossy(&response).split_whitespace().nth(1)?.parse().ok()
}

/// Starts the `custard-server` binary at `binary` on `address` (`127.0.0.1:PORT`)
/// with `data_dir` and extra `args`, and waits up to `within` until `/health` answers 200.
pub async fn start_server(
    scene: &Scene,
    binary: &Path,
    address: &str,
    data_dir: &Path,
    args: &[&str],
    within: Duration,
) -> Process {
    let public_url = format!("http://{address}");
    let mut server = Process::spawn(scene, "server", binary, |c| {
        c.args(["--bind", address, "--public-url", &public_url])
            .arg("--data-dir")
            .arg(data_dir)
            .args(args);
    });
    let deadline = Instant::now() + within;
    loop {
        server.assert_running();
        if http_status(address, "GET", "/health", "").await == Some(200) {
            return server;
        }
        assert!(
            Instant::now() < deadline,
            "custard-server did not answer on {address} within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Starts the `custard-server` binary at `binary` as one replica among several:
/// its log named `name`, on `address` with `data_dir` and extra `args` (which
/// may set `--public-url`, the balancer's address; without it links point at
/// `address`), and waits up to `within` until `/ready` answers 200 (its store
/// answers, so a balancer may send it traffic).
pub async fn start_named_server(
    scene: &Scene,
    name: &str,
    binary: &Path,
    address: &str,
    data_dir: &Path,
    args: &[&str],
    within: Duration,
) -> Process {
    let public_url = format!("http://{address}");
    let mut server = Process::spawn(scene, name, binary, |c| {
        c.args(["--bind", address]);
        if !args.contains(&"--public-url") {
            c.args(["--public-url", &public_url]);
        }
        c.arg("--data-dir").arg(data_dir).args(args);
    });
    let deadline = Instant::now() + within;
    loop {
        server.assert_running();
        if http_status(address, "GET", "/ready", "").await == Some(200) {
            return server;
        }
        assert!(
            Instant::now() < deadline,
            "custard-server {name} was not ready on {address} within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Starts the agent binary at `binary` for one connection (`name` names its
/// log), with extra `CUSTARD_*` variables in `env`.
pub fn start_agent(
    scene: &Scene,
    binary: &Path,
    name: &str,
    server_url: &str,
    key: &str,
    database_url: &str,
    env: &[(&str, &str)],
) -> Process {
    let health = scene.path().join(format!("{name}.health"));
    Process::spawn(scene, name, binary, |c| {
        c.env("CUSTARD_SERVER_URL", server_url)
            .env("CUSTARD_API_KEY", key)
            .env("CUSTARD_DATABASE_URL", database_url)
            .env("CUSTARD_HEALTH_FILE", health)
            .envs(env.iter().copied());
    })
}

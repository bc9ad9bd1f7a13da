//! A private PostgreSQL cluster for one test ([`PostgresCluster`]): its own
//! data folder and port on 127.0.0.1, so a test may stop and restart it without
//! touching the shared server other tests use.
//!
//! It needs PostgreSQL's server binaries (`initdb`, `pg_ctl`): from
//! `CUSTARD_PG_BIN_DIR`, `pg_config --bindir`, `/usr/lib/postgresql/*/bin` or
//! the `PATH`. When they are missing, [`PostgresCluster::start`] panics naming
//! what is missing: a test that needs one never passes without it. PostgreSQL
//! refuses to run as root, so as root the cluster runs as the `postgres` user
//! (through `runuser`).

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

/// A PostgreSQL cluster in a temporary folder, trusting local connections,
/// listening on 127.0.0.1 only; stopped and removed when dropped.
#[derive(Debug)]
pub struct PostgresCluster {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
    /// The OS user the server runs as, when not the current one.
    run_as: Option<String>,
}

static CLUSTERS: AtomicU32 = AtomicU32::new(0);

impl PostgresCluster {
    /// Creates (`initdb`) and starts a cluster on a free port of 127.0.0.1.
    /// Blocking: call it from `spawn_blocking` in async code that must not stall.
    ///
    /// # Panics
    ///
    /// When the server binaries or (as root) the `postgres` user or `runuser`
    /// are missing, or the cluster does not start; the message says which.
    pub fn start() -> PostgresCluster {
        let bin = server_binaries().unwrap_or_else(|missing| panic!("{missing}"));
        let run_as = if is_root() {
            let known = Command::new("id").args(["-u", "postgres"]).output();
            assert!(
                known.is_ok_and(|o| o.status.success()),
                "this test runs as root and PostgreSQL refuses to, but there is no `postgres` \
                 OS user to run the private cluster as"
            );
            assert!(
                find_on_path("runuser").is_some(),
                "this test runs as root and needs `runuser` (util-linux) to run PostgreSQL as \
                 the `postgres` user, but it is not on the PATH"
            );
            Some("postgres".to_owned())
        } else {
            None
        };
        let dir = std::env::temp_dir().join(format!(
            "custard-pg-{}-{}",
            std::process::id(),
            CLUSTERS.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)
            .unwrap_or_else(|e| panic!("creating the cluster folder {}: {e}", dir.display()));
        if let Some(user) = &run_as {
            let chown = Command::new("chown").arg(format!("{user}:")).arg(&dir).output();
            assert!(
                chown.as_ref().is_ok_and(|o| o.status.success()),
                "chown {user}: {}: {chown:?}",
                dir.display()
            );
        }
        let cluster = PostgresCluster { bin, dir, port: crate::processes::free_port(), run_as };
        let data = cluster.data_dir();
        cluster.pg(
            "initdb",
            &[
                "-D",
                &data,
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-sync",
                "--no-instructions",
            ],
        );
        cluster.pg_ctl("start", &[]);
        cluster
    }

    /// The port it listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A URL for database `database` as `user` (trusted, no password).
    pub fn url(&self, user: &str, database: &str) -> String {
        format!("postgres://{user}@127.0.0.1:{}/{database}", self.port)
    }

    /// `pg_ctl restart -m fast`: sessions are terminated, the server is back when this returns.
    pub fn restart(&self) {
        self.pg_ctl("restart", &["-m", "fast"]);
    }

    /// `pg_ctl stop -m fast`.
    pub fn stop(&self) {
        self.pg_ctl("stop", &["-m", "fast"]);
    }

    /// Starts it (again, after [`stop`](Self::stop)).
    pub fn start_again(&self) {
        self.pg_ctl("start", &[]);
    }

    /// The server's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.dir.join("postgres.log")).unwrap_or_default()
    }

    fn data_dir(&self) -> String {
        self.dir.join("data").display().to_string()
    }

    /// `pg_ctl <action>`, waiting for it to finish; the server's output goes to
    /// its log file (`-l`, on every action: a restart does not remember it).
    fn pg_ctl(&self, action: &str, extra: &[&str]) {
        let data = self.data_dir();
        let log = self.dir.join("postgres.log").display().to_string();
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off \
             -c full_page_writes=off",
            self.port,
            self.dir.display()
        );
        let mut args = vec!["-D", data.as_str(), "-l", log.as_str(), "-w", "-t", "60"];
        if action != "stop" {
            args.extend(["-o", options.as_str()]);
        }
        args.extend_from_slice(extra);
        args.push(action);
        self.pg("pg_ctl", &args);
    }

    /// Runs one of the server binaries (as the cluster's user), panicking with
    /// its output on failure. Output goes to a file, never a pipe: the server
    /// `pg_ctl` starts would hold a pipe open for as long as it runs.
    fn pg(&self, program: &str, args: &[&str]) {
        let out_path = self.dir.join(format!("{program}.out"));
        let out = std::fs::File::create(&out_path)
            .unwrap_or_else(|e| panic!("creating {}: {e}", out_path.display()));
        let err = out.try_clone().expect("a second handle on the output file");
        let status = self
            .command(program, args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .status()
            .unwrap_or_else(|e| panic!("could not run {program}: {e}"));
        if !status.success() {
            panic!(
                "{program} {} failed ({status}):\n{}\n{}",
                args.join(" "),
                std::fs::read_to_string(&out_path).unwrap_or_default(),
                self.log_text()
            );
        }
    }

    fn command(&self, program: &str, args: &[&str]) -> Command {
        let path = self.bin.join(program);
        let mut command = match &self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(&path);
                c
            }
            None => Command::new(&path),
        };
        command.args(args).current_dir(&self.dir);
        command
    }
}

impl Drop for PostgresCluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = self.log_text();
            eprintln!(
                "\n----- postgres ({}) -----\n{log}----- end of postgres -----",
                self.dir.display()
            );
        }
        let data = self.data_dir();
        let _ = self
            .command("pg_ctl", &["-D", &data, "-m", "immediate", "-w", "stop"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The folder holding `initdb` and `pg_ctl`, or a message naming what is missing.
fn server_binaries() -> Result<PathBuf, String> {
    let has_both = |dir: &Path| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file();
    let mut looked = Vec::new();
    if let Some(dir) = std::env::var_os("CUSTARD_PG_BIN_DIR").map(PathBuf::from) {
        if has_both(&dir) {
            return Ok(dir);
        }
        looked.push(format!("CUSTARD_PG_BIN_DIR={}", dir.display()));
    }
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output()
        && out.status.success()
    {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if has_both(&dir) {
            return Ok(dir);
        }
        looked.push(format!("{} (pg_config --bindir)", dir.display()));
    }
    // Debian's layout: /usr/lib/postgresql/<major>/bin; the newest first.
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .collect();
    versions.sort();
    if let Some((_, dir)) = versions.into_iter().rev().find(|(_, d)| has_both(d)) {
        return Ok(dir);
    }
    looked.push("/usr/lib/postgresql/*/bin".to_owned());
    if let (Some(initdb), Some(_)) = (find_on_path("initdb"), find_on_path("pg_ctl"))
        && let Some(dir) = initdb.parent()
    {
        return Ok(dir.to_path_buf());
    }
    looked.push("PATH".to_owned());
    Err(format!(
        "this test needs PostgreSQL's server binaries `initdb` and `pg_ctl` for a private \
         cluster, but they are missing (looked in {}); install the PostgreSQL server package \
         or set CUSTARD_PG_BIN_DIR",
        looked.join(", ")
    ))
}

fn find_on_path(program: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

/// Whether this process runs as root (`/proc/self` belongs to the effective user).
fn is_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

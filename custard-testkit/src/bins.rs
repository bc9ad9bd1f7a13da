//! Paths of the workspace's binaries, for tests that run one crate's binary
//! from another crate's tests (where cargo's `CARGO_BIN_EXE_*` does not reach).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

/// Builds already attempted in this process: (binary, outcome).
static BUILDS: Mutex<Vec<(String, Result<PathBuf, String>)>> = Mutex::new(Vec::new());

/// The path of the workspace binary `name` (such as `custard-agent`; the package
/// and its binary share the name), built by `cargo build -p <name> --bin <name>`
/// for the profile the running test was built with.
///
/// The build runs once per binary and test process; when its sources did not
/// change since the last build, cargo only checks and returns at once.
/// `cargo test` of another package builds this one as a library at most, never
/// its binary, so building here is what keeps the binary from being stale.
///
/// # Panics
///
/// When the build fails, or when cargo cannot be started and no binary is there.
pub fn workspace_binary(name: &str) -> PathBuf {
    let mut builds = BUILDS.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some((_, outcome)) = builds.iter().find(|(n, _)| n == name) {
        return outcome.clone().unwrap_or_else(|message| panic!("{message}"));
    }
    let outcome = build(name);
    builds.push((name.to_owned(), outcome.clone()));
    drop(builds);
    outcome.unwrap_or_else(|message| panic!("{message}"))
}

/// The folder of the running test's profile: `target/debug` for `target/debug/deps/e2e-xxxx`.
/// The cargo profile folder the running test binary was built into (`target/debug`).
pub(crate) fn profile_dir() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| format!("finding the test executable: {e}"))?;
    let deps = exe.parent().ok_or_else(|| format!("{} has no folder", exe.display()))?;
    // Tests live in `<profile>/deps`; anything else (an example, a bench) sits in `<profile>`.
    let dir =
        if deps.file_name().is_some_and(|n| n == "deps") { deps.parent() } else { Some(deps) };
    dir.map(Path::to_path_buf).ok_or_else(|| format!("{} has no profile folder", deps.display()))
}

fn build(name: &str) -> Result<PathBuf, String> {
    let profile_dir = profile_dir()?;
    let binary = profile_dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .ok_or("the testkit has no workspace folder")?;
    // `cargo test` sets CARGO to the cargo that runs it; use the same one.
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(&cargo);
    command.current_dir(workspace).args(["build", "--quiet", "-p", name, "--bin", name]);
    if profile_dir.file_name().is_some_and(|n| n == "release") {
        command.arg("--release");
    }
    if let Some(target_dir) = profile_dir.parent() {
        command.arg("--target-dir").arg(target_dir);
    }
    match command.status() {
        Ok(status) if status.success() => {}
        Ok(status) => {
            return Err(format!(
                "`cargo build -p {name} --bin {name}` failed ({status}) in {}; \
                 build it by hand to see why",
                workspace.display()
            ));
        }
        Err(e) if binary.is_file() => {
            // No cargo here (a test run from an archive): use what was built before.
            eprintln!(
                "warning: could not run {} ({e}); using {}, which may be stale",
                Path::new(&cargo).display(),
                binary.display()
            );
        }
        Err(e) => {
            return Err(format!(
                "{} is missing and `cargo build -p {name}` could not start ({e}); \
                 run it by hand first",
                binary.display()
            ));
        }
    }
    if binary.is_file() {
        Ok(binary)
    } else {
        Err(format!("`cargo build -p {name}` succeeded but {} is missing", binary.display()))
    }
}

/// The binary `name` next to the running executable (a benchmark and the
/// binaries it drives, built into the same target folder), or an error that
/// says how to build it.
pub fn sibling_binary(name: &str) -> std::io::Result<PathBuf> {
    let path = std::env::current_exe()?.with_file_name(name);
    if path.exists() {
        Ok(path)
    } else {
        Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("{} not found: cargo build --release -p {name}", path.display()),
        ))
    }
}

/// A figure of `/proc/<pid>/status` in KiB (`VmRSS`, `VmHWM`, ...; Linux).
pub fn status_kib(pid: u32, field: &str) -> std::io::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|value| value.split_whitespace().next()?.parse().ok())
        .ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidData, format!("no {field} for {pid}"))
        })
}

/// The CPU time (user + system) a process has used so far, in seconds (Linux).
pub fn cpu_seconds(pid: u32) -> std::io::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command (which may hold spaces) start after the last ')'.
    let fields: Vec<&str> =
        stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("").split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok());
    // utime and stime are fields 14 and 15 of stat; `fields` starts at field 3.
    // Both count clock ticks, 100 per second on Linux.
    match (ticks(11), ticks(12)) {
        (Some(user), Some(system)) => Ok((user + system) / 100.0),
        _ => Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("no CPU times in /proc/{pid}/stat"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_figures_of_this_process_are_read() {
        let rss = status_kib(std::process::id(), "VmRSS").expect("VmRSS");
        let peak = status_kib(std::process::id(), "VmHWM").expect("VmHWM");
        assert!(rss > 0 && peak >= rss, "rss {rss} KiB, peak {peak} KiB");
        assert!(status_kib(std::process::id(), "NoSuchField").is_err());
        // Some CPU time is used between two readings that spin in between.
        let before = cpu_seconds(std::process::id()).expect("CPU time");
        let spin = std::time::Instant::now();
        while spin.elapsed() < std::time::Duration::from_millis(50) {
            std::hint::black_box(spin.elapsed());
        }
        let after = cpu_seconds(std::process::id()).expect("CPU time");
        assert!(after > before, "CPU time went from {before} to {after} s");
    }
}

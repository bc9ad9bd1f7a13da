//! `custard-fuzz`: runs the fuzzing targets for a fixed time and reports
//! execs, findings and peak memory. Exits 1 when anything was found.
//!
//! ```text
//! cargo run --release -p custard-fuzz -- all --seconds 60
//! cargo run --release -p custard-fuzz -- guard --seconds 300 --seed 42
//! cargo run --release -p custard-fuzz -- canary --seconds 120
//! cargo run --release -p custard-fuzz -- canary --guard-without-mask --seconds 120
//! ```

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use custard_fuzz::{Report, RunOptions, Target};

/// The stack of the threads production code runs on (tokio's workers), in KiB.
const DEFAULT_STACK_KIB: usize = if cfg!(debug_assertions) { 16 * 1024 } else { 2 * 1024 };

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Which {
    Guard,
    Wire,
    Api,
    Canary,
    All,
}

#[derive(Debug, Parser)]
#[command(
    name = "custard-fuzz",
    about = "Fuzz the SQL guard, the wire decoder and the HTTP API, and look for policy leaks, for a fixed time"
)]
struct Args {
    /// The target to run.
    #[arg(value_enum)]
    target: Which,
    /// Seconds per target (setup excluded).
    #[arg(long, env = "CUSTARD_FUZZ_SECONDS", default_value_t = 60.0)]
    seconds: f64,
    /// The run's seed (printed when chosen at random); the same seed repeats the same inputs.
    #[arg(long, env = "CUSTARD_FUZZ_SEED")]
    seed: Option<u64>,
    /// Start at this batch (a finding names its batch), skipping the ones before.
    #[arg(long, env = "CUSTARD_FUZZ_FIRST_BATCH", default_value_t = 0)]
    first_batch: u64,
    /// Run only this case of the first batch, printing its input first (the
    /// findings folder's `<target>-in-flight.txt` names the case that crashed a run).
    #[arg(long = "case", env = "CUSTARD_FUZZ_CASE", requires = "first_batch")]
    only_case: Option<u64>,
    /// Report failures as found, without shrinking them to a minimal input.
    #[arg(long, env = "CUSTARD_FUZZ_NO_SHRINK")]
    no_shrink: bool,
    /// Stop each target after this many cases, even with time left.
    #[arg(long, env = "CUSTARD_FUZZ_MAX_CASES")]
    max_cases: Option<u64>,
    /// A case slower than this many milliseconds is a finding.
    #[arg(long, env = "CUSTARD_FUZZ_SLOW_MS", default_value_t = 2000)]
    slow_ms: u64,
    /// A case running longer than this many seconds stops the run (exit 3).
    #[arg(long, env = "CUSTARD_FUZZ_HANG_SECS", default_value_t = 60)]
    hang_secs: u64,
    /// Resident memory above this many MiB is a finding.
    #[arg(long, env = "CUSTARD_FUZZ_MAX_RSS_MIB", default_value_t = 2048)]
    max_rss_mib: u64,
    /// Where to write each finding in full.
    #[arg(long, env = "CUSTARD_FUZZ_FINDINGS_DIR")]
    findings_dir: Option<PathBuf>,
    /// canary: the guard does not mask `public.secrets.secret`; the role's
    /// column privileges hide it instead (database errors are refusals).
    #[arg(long, env = "CUSTARD_FUZZ_GUARD_WITHOUT_MASK")]
    guard_without_mask: bool,
    /// canary: run only this SQL (repeatable; `<db>` stands for the
    /// database's name), print what the guard and both databases made of it,
    /// and exit 1 if it leaked.
    #[arg(long = "sql")]
    sql: Vec<String>,
    /// Stack size of the thread that runs the cases, in KiB: tokio's workers
    /// have 2048 (unoptimised builds get 16384: their frames are far larger).
    #[arg(long, env = "CUSTARD_FUZZ_STACK_KIB", default_value_t = DEFAULT_STACK_KIB)]
    stack_kib: usize,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let seed = args.seed.unwrap_or_else(custard_fuzz::clock_seed);
    let options = RunOptions {
        duration: Duration::from_secs_f64(args.seconds.max(0.0)),
        max_cases: args.max_cases,
        seed,
        first_batch: args.first_batch,
        slow_case: Duration::from_millis(args.slow_ms),
        hang_limit: Duration::from_secs(args.hang_secs),
        max_rss_kib: Some(args.max_rss_mib * 1024),
        findings_dir: args.findings_dir.clone(),
        progress: true,
        only_case: args.only_case,
        shrink: !args.no_shrink,
    };
    if !args.sql.is_empty() {
        if args.target != Which::Canary {
            eprintln!("custard-fuzz: --sql is for the canary target");
            return ExitCode::from(2);
        }
        return match custard_fuzz::canary_replay(!args.guard_without_mask, &args.sql) {
            Ok(true) => ExitCode::FAILURE,
            Ok(false) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("custard-fuzz: {e}");
                ExitCode::from(2)
            }
        };
    }
    let targets: Vec<Target> = match args.target {
        Which::Guard => vec![Target::Guard],
        Which::Wire => vec![Target::Wire],
        Which::Api => vec![Target::Api],
        Which::Canary => vec![Target::Canary { guard_mask: !args.guard_without_mask }],
        Which::All => Target::ALL.to_vec(),
    };
    println!(
        "custard-fuzz: seed {seed} (repeat with --seed {seed}), {} s per target",
        args.seconds
    );
    let mut reports = Vec::new();
    for target in targets {
        println!("== {} ==", target.name());
        let options = options.clone();
        // A thread of its own: the stack size is that of the threads the code runs on in production.
        let run = std::thread::Builder::new()
            .name(format!("fuzz-{}", target.name()))
            .stack_size(args.stack_kib * 1024)
            .spawn(move || custard_fuzz::run(target, &options));
        let report = match run.map(|handle| handle.join()) {
            Ok(Ok(report)) => report,
            Ok(Err(_)) => {
                eprintln!("custard-fuzz: the {} runner itself panicked", target.name());
                return ExitCode::from(2);
            }
            Err(e) => {
                eprintln!("custard-fuzz: cannot start a thread: {e}");
                return ExitCode::from(2);
            }
        };
        for finding in &report.findings {
            custard_fuzz::print_finding(report.target, report.seed, finding);
        }
        for line in &report.stats {
            println!("  {line}");
        }
        reports.push(report);
    }
    println!();
    for report in &reports {
        println!("{}", summary(report));
    }
    if reports.iter().any(|r| r.failures() > 0) { ExitCode::FAILURE } else { ExitCode::SUCCESS }
}

/// One line per target: what ran, how fast, what was found, how much memory.
fn summary(r: &Report) -> String {
    let mib = |kib: Option<u64>| {
        kib.map_or_else(|| "?".to_owned(), |k| format!("{:.1}", k as f64 / 1024.0))
    };
    let slowest = r
        .slowest
        .as_ref()
        .map_or_else(|| "-".to_owned(), |s| format!("{:.3}s@{}B", s.took.as_secs_f64(), s.size));
    let extra: String = r.summary_fields.iter().map(|(k, v)| format!(" {k}={v}")).collect();
    format!(
        "summary target={} seconds={:.1} execs={} execs_per_s={:.1} failures={} peak_rss_mib={} rss_first_batch_mib={} rss_end_mib={} slowest={} shrink_execs={} batches={} seed={}{extra}",
        r.target,
        r.elapsed.as_secs_f64(),
        r.execs,
        r.execs_per_sec(),
        r.failures(),
        mib(r.peak_rss_kib),
        mib(r.rss_first_batch_kib),
        mib(r.rss_end_kib),
        slowest,
        r.shrink_execs,
        r.batches,
        r.seed,
    )
}

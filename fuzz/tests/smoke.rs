//! Each target runs a few hundred cases, so `cargo test --workspace` keeps the
//! harness working; the long runs are `scripts/fuzz.sh`.
//!
//! Only the harness is checked here: that the target sets up, runs cases and
//! reports. What a run finds is the long run's business (its findings are
//! printed here too, for whoever looks).

use std::time::Duration;

use custard_fuzz::{FindingKind, RunOptions, Target};

/// Runs `cases` cases of `target` (at most 60 s) on a thread with a stack
/// large enough for unoptimised code.
fn smoke(target: Target, cases: u64) {
    let options = RunOptions {
        max_cases: Some(cases),
        seed: 7,
        // Unoptimised builds are slow; only a hang would matter here.
        slow_case: Duration::from_secs(30),
        // Shrinking a finding in an unoptimised build could take minutes.
        shrink: false,
        ..RunOptions::for_duration(Duration::from_secs(60))
    };
    let report = std::thread::Builder::new()
        .stack_size(64 << 20)
        .spawn(move || custard_fuzz::run(target, &options))
        .expect("a thread")
        .join()
        .expect("the runner returns a report");
    for finding in &report.findings {
        custard_fuzz::print_finding(report.target, report.seed, finding);
    }
    let harness: Vec<&str> = report
        .findings
        .iter()
        .filter(|f| f.kind == FindingKind::Harness)
        .map(|f| f.message.as_str())
        .collect();
    assert!(harness.is_empty(), "{}: the harness failed: {harness:?}", target.name());
    assert!(report.execs > 0, "{}: no case ran", target.name());
    assert!(
        report.execs <= cases,
        "{}: {} cases ran, more than {cases}",
        target.name(),
        report.execs
    );
    assert!(!report.stats.is_empty(), "{}: no counts reported", target.name());
    assert!(report.peak_rss_kib.is_some(), "{}: no peak memory", target.name());
}

#[test]
fn guard_runs() {
    smoke(Target::Guard, 300);
}

#[test]
fn wire_runs() {
    smoke(Target::Wire, 300);
}

#[test]
fn api_runs() {
    smoke(Target::Api, 300);
}

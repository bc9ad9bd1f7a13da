//! Each target runs a few hundred cases, so `cargo test --workspace` keeps the
//! harness working; the long runs are `scripts/fuzz.sh`.
//!
//! For the guard, wire and API targets only the harness is checked here: that
//! the target sets up, runs cases and reports; what a run finds is the long
//! run's business (its findings are printed here too). The canary target is
//! also a security test: its fixed-seed batch of queries must find no leak.
//! It needs PostgreSQL (`scripts/ensure-postgres.sh`), as the other database
//! tests do.

use std::time::Duration;

use custard_fuzz::{FindingKind, RunOptions, Target};

/// Runs `cases` cases of `target` (at most 60 s) on a thread with a stack
/// large enough for unoptimised code.
fn smoke(target: Target, cases: u64) -> custard_fuzz::Report {
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
        report.cases <= cases,
        "{}: {} cases ran, more than {cases}",
        target.name(),
        report.cases
    );
    assert!(!report.stats.is_empty(), "{}: no counts reported", target.name());
    assert!(report.peak_rss_kib.is_some(), "{}: no peak memory", target.name());
    report
}

/// A summary field of the canary target, as a number.
fn field(report: &custard_fuzz::Report, name: &str) -> u64 {
    report
        .summary_fields
        .iter()
        .find(|(k, _)| *k == name)
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {:?}", report.summary_fields))
}

#[test]
fn guard_runs() {
    let _ = smoke(Target::Guard, 300);
}

#[test]
fn wire_runs() {
    let _ = smoke(Target::Wire, 300);
}

#[test]
fn api_runs() {
    let _ = smoke(Target::Api, 300);
}

/// Each canary case is a batch of 48 queries: 40 cases run about 2,000, every
/// one the guard accepts in two databases that differ only in their secrets.
fn canary(guard_mask: bool) {
    let report = smoke(Target::Canary { guard_mask }, 40);
    for line in &report.stats {
        println!("{line}");
    }
    assert!(report.execs > report.cases, "queries {} for {} cases", report.execs, report.cases);
    assert!(field(&report, "guard_accepted") > 0, "the guard accepted nothing");
    assert!(field(&report, "executed_ok") > 0, "nothing the guard accepted ran");
    assert_eq!(
        field(&report, "leaking_queries"),
        0,
        "a query read past the policy (printed above)"
    );
}

#[test]
fn canary_finds_no_leak() {
    canary(true);
}

/// The guard without its mask, PostgreSQL with exactly the privileges the
/// agent prints: the database refuses what the guard no longer does.
#[test]
fn canary_finds_no_leak_with_only_the_database_masking() {
    canary(false);
}

//! Custard's fuzzing suite: long proptest runs, kept out of the default test
//! command, against the three places where untrusted input enters, and a
//! search for policy leaks by their effect.
//!
//! - [`Target::Guard`]: the read-only SQL guard, fed SQL from the shared
//!   corpora mutated at every level and arbitrary text.
//! - [`Target::Wire`]: the agent wire-protocol decoder, fed valid frames of
//!   every message type mutated at every level and arbitrary text.
//! - [`Target::Api`]: every operation of the server's OpenAPI document
//!   ([`ApiPlan`]): JSON bodies, path and query parameters, credentials, sent
//!   in process to a server with a real agent.
//! - [`Target::Canary`]: generated queries through the agent's guard and
//!   executor against PostgreSQL databases seeded with canary strings in
//!   everything the policy hides; a canary in a result, or a result that
//!   differs between two databases with different canaries, is a leak.
//!
//! Each target runs proptest batches with fresh seeded RNGs until its time is
//! up; a failing property is shrunk to a minimal input. Every case is timed,
//! panics are caught on every thread, and peak memory is reported. The
//! `custard-fuzz` binary and `scripts/fuzz.sh` drive it; `fuzz/README.md` says how.
//!
//! ```no_run
//! use std::time::Duration;
//! use custard_fuzz::{RunOptions, Target};
//!
//! let report = custard_fuzz::run(Target::Wire, &RunOptions::for_duration(Duration::from_secs(5)));
//! assert_eq!(report.failures(), 0);
//! ```
#![deny(missing_docs)]

mod api;
mod canary;
mod guard;
mod mutate;
mod runner;
mod wire;

use std::time::Duration;

pub use api::{ApiField, ApiOperation, ApiPlan, SkippedOperation};
pub use runner::{
    Finding, FindingKind, IN_FLIGHT_FILE, Report, RunOptions, Slowest, clock_seed, print_finding,
};

/// What to fuzz.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Target {
    /// The read-only SQL guard (`custard_core::Guard`).
    Guard,
    /// The wire-protocol decoder (`custard_core::wire::Frame::decode`).
    Wire,
    /// The HTTP API (`custard_server::app`): every operation of its OpenAPI
    /// document, with its bodies and parameters.
    Api,
    /// Policy leaks by their effect: the agent's guard and executor over
    /// PostgreSQL databases holding canary strings (needs PostgreSQL).
    Canary {
        /// The guard masks `public.secrets.secret` (the default); when false
        /// it does not, and the role's column privileges hide it instead.
        guard_mask: bool,
    },
}

impl Target {
    /// Every target, in the order `all` runs them.
    pub const ALL: [Target; 4] =
        [Target::Guard, Target::Wire, Target::Api, Target::Canary { guard_mask: true }];

    /// The target's name on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Target::Guard => "guard",
            Target::Wire => "wire",
            Target::Api => "api",
            Target::Canary { guard_mask: true } => "canary",
            Target::Canary { guard_mask: false } => "canary-without-guard-mask",
        }
    }
}

/// Sets the canary databases up and runs each SQL text through the agent's
/// guard and executor in both, printing what happened and whether it leaked
/// (`<db>` in the text stands for the database's name). Returns whether any
/// leaked; `Err` when the databases could not be set up.
pub fn canary_replay(guard_mask: bool, queries: &[String]) -> Result<bool, String> {
    Ok(canary::CanaryTarget::new(guard_mask)?.replay(queries))
}

/// Sets `target` up and runs it under `options`; a setup failure is a
/// [`FindingKind::Harness`] finding of an empty report.
pub fn run(target: Target, options: &RunOptions) -> Report {
    let name = target.name();
    let setup_failed = |message: String| Report {
        target: name,
        seed: options.seed,
        elapsed: Duration::ZERO,
        execs: 0,
        cases: 0,
        shrink_execs: 0,
        batches: 0,
        findings: vec![Finding {
            kind: FindingKind::Harness,
            message: format!("setting up the target failed: {message}"),
            input: String::new(),
            batch: options.first_batch,
            file: None,
        }],
        slow_cases: 0,
        slowest: None,
        peak_rss_kib: None,
        rss_first_batch_kib: None,
        rss_end_kib: None,
        stats: Vec::new(),
        summary_fields: Vec::new(),
    };
    match target {
        Target::Guard => match guard::GuardTarget::new() {
            Ok(t) => runner::run(name, &t, options),
            Err(e) => setup_failed(e),
        },
        Target::Wire => runner::run(name, &wire::WireTarget::new(), options),
        Target::Api => match api::ApiTarget::new() {
            Ok(t) => runner::run(name, &t, options),
            Err(e) => setup_failed(e),
        },
        Target::Canary { guard_mask } => match canary::CanaryTarget::new(guard_mask) {
            Ok(t) => runner::run(name, &t, options),
            Err(e) => setup_failed(e),
        },
    }
}

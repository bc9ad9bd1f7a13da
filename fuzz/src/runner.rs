//! The batch runner every target shares: proptest batches with fresh seeded
//! RNGs until the time is up, per-case timing, a hang watchdog, panics caught
//! on every thread, and peak memory.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::fmt::{self, Debug, Write as _};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use proptest::strategy::BoxedStrategy;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestError, TestRng, TestRunner};

/// Longest input excerpt printed to the console; the findings file has it all.
const PRINTED_INPUT_CHARS: usize = 4000;
/// Slow cases reported in full; more are only counted.
const SLOW_CASES_KEPT: usize = 5;
/// How often a progress line is printed, when progress is on.
const PROGRESS_EVERY: Duration = Duration::from_secs(15);

/// One fuzzing target: what it generates and what must hold for every input.
pub(crate) trait FuzzTarget {
    /// A generated input; its `Debug` form is what a finding shows.
    type Input: Clone + Debug + Send + 'static;

    /// The generator (with its shrinker).
    fn strategy(&self) -> BoxedStrategy<Self::Input>;

    /// Runs one input; `Err` names the property that failed. `count` is
    /// false while shrinking: the case then stays out of [`FuzzTarget::stats`].
    fn check(&self, input: &Self::Input, count: bool) -> Result<(), String>;

    /// The input's size in bytes, for the slowest-case report.
    fn size(&self, input: &Self::Input) -> usize;

    /// Cases per batch (each batch has its own seeded RNG).
    fn batch_cases(&self) -> u32 {
        2000
    }

    /// Runs before each batch (the API target refreshes its session here).
    fn before_batch(&self) -> Result<(), String> {
        Ok(())
    }

    /// Lines about what the cases did (outcomes by kind), for the report.
    fn stats(&self) -> Vec<String>;

    /// The target's own count of executions, when one case runs several
    /// (the canary target runs a batch of queries per case): reported as
    /// `execs` instead of the cases.
    fn execs(&self) -> Option<u64> {
        None
    }

    /// Findings the target judged and deduplicated itself (message, input),
    /// asked for once the run is over; the runner reports each one.
    fn findings(&self) -> Vec<(String, String)> {
        Vec::new()
    }

    /// Extra `key=value` fields for the summary line.
    fn summary_fields(&self) -> Vec<(&'static str, String)> {
        Vec::new()
    }
}

/// How long and how a target runs.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Wall time for the target, setup excluded.
    pub duration: Duration,
    /// Stop after this many cases even if time is left (for smoke tests).
    pub max_cases: Option<u64>,
    /// The run's seed; batch `n` uses a RNG derived from it, the target and `n`.
    pub seed: u64,
    /// The first batch to run: replays a finding from a long run without
    /// running the batches before it.
    pub first_batch: u64,
    /// A case slower than this is a finding (reported, not shrunk).
    pub slow_case: Duration,
    /// A case running longer than this stops the process with the input printed.
    pub hang_limit: Duration,
    /// Resident memory above this (KiB) is a finding.
    pub max_rss_kib: Option<u64>,
    /// Where findings are written in full (one file each).
    pub findings_dir: Option<PathBuf>,
    /// Print a progress line every few seconds.
    pub progress: bool,
    /// Run only this case of the first batch, printing its input before it
    /// runs (for a case that crashed the process: see [`IN_FLIGHT_FILE`]).
    pub only_case: Option<u64>,
    /// Shrink a failing input to a minimal one (off for quick smoke runs).
    pub shrink: bool,
}

impl RunOptions {
    /// Options for `duration` with the usual limits and a seed from the clock.
    pub fn for_duration(duration: Duration) -> Self {
        RunOptions {
            duration,
            max_cases: None,
            seed: clock_seed(),
            first_batch: 0,
            slow_case: Duration::from_secs(2),
            hang_limit: Duration::from_secs(60),
            max_rss_kib: None,
            findings_dir: None,
            progress: false,
            only_case: None,
            shrink: true,
        }
    }
}

/// A seed that differs from run to run.
pub fn clock_seed() -> u64 {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    // Fold the clock with the process id so parallel runs differ too.
    (nanos as u64) ^ (u64::from(std::process::id()) << 32)
}

/// What kind of problem a finding is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FindingKind {
    /// A property failed (or the code panicked); the input is the shrunk one.
    Property,
    /// One case took longer than [`RunOptions::slow_case`].
    Slow,
    /// Resident memory went above [`RunOptions::max_rss_kib`].
    Memory,
    /// The target could not run (setup failed, proptest gave up).
    Harness,
}

impl fmt::Display for FindingKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FindingKind::Property => "property",
            FindingKind::Slow => "slow",
            FindingKind::Memory => "memory",
            FindingKind::Harness => "harness",
        })
    }
}

/// One problem found, with the input that shows it.
#[derive(Clone, Debug)]
pub struct Finding {
    /// What kind of problem.
    pub kind: FindingKind,
    /// What went wrong.
    pub message: String,
    /// The (minimal, for properties) input, in its `Debug` form.
    pub input: String,
    /// The batch it was found in (replay with `--seed S --first-batch B`).
    pub batch: u64,
    /// The file holding the finding in full, when one was written.
    pub file: Option<PathBuf>,
}

/// The slowest case of a run.
#[derive(Clone, Debug)]
pub struct Slowest {
    /// How long it took.
    pub took: Duration,
    /// Its input's size in bytes.
    pub size: usize,
}

/// What a target's run did.
#[derive(Clone, Debug)]
pub struct Report {
    /// The target's name.
    pub target: &'static str,
    /// The run's seed.
    pub seed: u64,
    /// Time spent running cases (setup excluded).
    pub elapsed: Duration,
    /// Cases run (shrinking excluded), or the target's own count of
    /// executions when a case runs several (see [`Report::cases`]).
    pub execs: u64,
    /// Cases run (shrinking excluded).
    pub cases: u64,
    /// Cases run while shrinking a failure.
    pub shrink_execs: u64,
    /// Batches started.
    pub batches: u64,
    /// Everything found.
    pub findings: Vec<Finding>,
    /// Slow cases beyond those kept in `findings`.
    pub slow_cases: u64,
    /// The slowest case.
    pub slowest: Option<Slowest>,
    /// Peak resident memory of the process while the target ran (VmHWM), KiB.
    pub peak_rss_kib: Option<u64>,
    /// Resident memory after the first batch and at the end, KiB: a leak shows as growth.
    pub rss_first_batch_kib: Option<u64>,
    /// Resident memory at the end, KiB.
    pub rss_end_kib: Option<u64>,
    /// The target's own counts.
    pub stats: Vec<String>,
    /// The target's own `key=value` fields for the summary line.
    pub summary_fields: Vec<(&'static str, String)>,
}

impl Report {
    /// Cases per second.
    pub fn execs_per_sec(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 { self.execs as f64 / secs } else { 0.0 }
    }

    /// Findings of every kind, slow cases beyond the kept ones included.
    pub fn failures(&self) -> u64 {
        self.findings.len() as u64 + self.slow_cases
    }
}

/// The RNG of one batch: derived from the run's seed, the target and the batch.
fn batch_rng(seed: u64, target: &str, batch: u64) -> TestRng {
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    bytes[8..16].copy_from_slice(&batch.to_le_bytes());
    // FNV-1a of the target name: the same seed gives each target its own stream.
    let name = target
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
    bytes[16..24].copy_from_slice(&name.to_le_bytes());
    TestRng::from_seed(RngAlgorithm::ChaCha, &bytes)
}

fn batch_config(cases: u32, shrink: bool) -> Config {
    Config {
        cases,
        failure_persistence: None,
        // Shrinking is bounded too: a finding is reported even if it stays large.
        max_shrink_iters: if shrink { 20_000 } else { 0 },
        max_shrink_time: 120_000,
        max_global_rejects: 100_000,
        ..Config::default()
    }
}

// ---------------------------------------------------------------------------
// Panics on any thread

static PANICS: AtomicU64 = AtomicU64::new(0);
static LAST_PANIC: Mutex<String> = Mutex::new(String::new());
static HOOK_INSTALLED: AtomicBool = AtomicBool::new(false);

thread_local! {
    /// Set while this thread runs a case: its panics are findings, reported
    /// once with the shrunk input rather than printed at every shrink step.
    static IN_CASE: Cell<bool> = const { Cell::new(false) };
}

/// Counts panics on every thread (a server task's panic never reaches the
/// case's own `catch_unwind`) and keeps the last message; prints them as
/// usual except those of the cases themselves.
fn install_panic_hook() {
    if HOOK_INSTALLED.swap(true, Ordering::SeqCst) {
        return;
    }
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let thread = std::thread::current();
        let message = format!("thread `{}` panicked: {info}", thread.name().unwrap_or("<unnamed>"));
        *LAST_PANIC.lock().unwrap_or_else(PoisonError::into_inner) = message;
        PANICS.fetch_add(1, Ordering::SeqCst);
        if !IN_CASE.with(Cell::get) {
            previous(info);
        }
    }));
}

fn last_panic() -> String {
    LAST_PANIC.lock().unwrap_or_else(PoisonError::into_inner).clone()
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "<non-string panic payload>".to_owned())
}

// ---------------------------------------------------------------------------
// Memory

/// Resets the process's peak RSS (VmHWM), so each target reports its own peak.
fn reset_peak_rss() {
    // Linux >= 4.0; where it fails the peak is the process's, which is still an upper bound.
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn status_kib(field: &str) -> Option<u64> {
    custard_testkit::bins::status_kib(std::process::id(), field).ok()
}

// ---------------------------------------------------------------------------
// The case in flight

/// The file (in the findings folder) naming the case in flight, rewritten
/// before every case: when a case kills the process (a stack overflow, the
/// memory limit), it names the case to replay with `--first-batch B --case K`.
pub const IN_FLIGHT_FILE: &str = "in-flight";

/// Where the case in flight is recorded, when a findings folder is set.
struct InFlightFile {
    file: std::fs::File,
    path: PathBuf,
}

impl InFlightFile {
    fn create(options: &RunOptions, target: &str) -> Option<Self> {
        let dir = options.findings_dir.as_ref()?;
        std::fs::create_dir_all(dir).ok()?;
        let path = dir.join(format!("{target}-{IN_FLIGHT_FILE}.txt"));
        let file = std::fs::File::create(&path).ok()?;
        Some(InFlightFile { file, path })
    }

    fn record(&self, seed: u64, batch: u64, case: u64) {
        use std::os::unix::fs::FileExt as _;
        // Fixed width, so one positioned write replaces the previous line.
        let line = format!("seed {seed:>20} batch {batch:>20} case {case:>10}\n");
        let _ = self.file.write_at(line.as_bytes(), 0);
    }
}

impl Drop for InFlightFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The case in flight, for the hang watchdog: when it started, where it is, its input.
type InFlight = Mutex<Option<(Instant, u64, u64, Box<dyn Debug + Send>)>>;

// ---------------------------------------------------------------------------
// The run

/// At most this many distinct property findings per target; the run stops then.
const MAX_DISTINCT_FINDINGS: usize = 10;

/// Counters the case closure updates (it is `Fn`, so they are cells).
struct Counters {
    execs: Cell<u64>,
    shrink_execs: Cell<u64>,
    /// The case's index in its batch.
    case: Cell<u64>,
    /// Set at the first failure of a batch: from then on the runner is shrinking.
    failing: Cell<bool>,
    /// Signatures of the failures already reported: met again, they only count.
    known: RefCell<BTreeMap<String, u64>>,
    slowest: RefCell<Option<Slowest>>,
    slow: RefCell<Vec<Finding>>,
    slow_cases: Cell<u64>,
    /// `--case` ran its case.
    replayed: Cell<bool>,
}

/// What identifies a failure across inputs: its first line, digits and
/// quoted parts left out (they hold the input's own names and sizes).
fn signature(message: &str) -> String {
    let line = message.lines().next().unwrap_or_default();
    let mut out = String::new();
    let mut quoted = None;
    for c in line.chars() {
        match quoted {
            Some(q) if c == q => quoted = None,
            Some(_) => {}
            None if c == '`' || c == '"' => {
                quoted = Some(c);
                out.push_str("..");
            }
            None if c.is_ascii_digit() => {
                if !out.ends_with('#') {
                    out.push('#');
                }
            }
            None => out.push(c),
        }
    }
    out.chars().take(160).collect()
}

/// Runs `target` in batches until the time or case budget is spent.
pub(crate) fn run<T: FuzzTarget>(name: &'static str, target: &T, options: &RunOptions) -> Report {
    install_panic_hook();
    reset_peak_rss();
    let strategy = target.strategy();
    let counters = Counters {
        execs: Cell::new(0),
        shrink_execs: Cell::new(0),
        case: Cell::new(0),
        failing: Cell::new(false),
        known: RefCell::new(BTreeMap::new()),
        slowest: RefCell::new(None),
        slow: RefCell::new(Vec::new()),
        slow_cases: Cell::new(0),
        replayed: Cell::new(false),
    };
    let in_flight: InFlight = Mutex::new(None);
    let in_flight_file = InFlightFile::create(options, name);
    let done = AtomicBool::new(false);
    let mut findings = Vec::new();
    let mut batches: u64 = 0;
    let mut rss_first_batch_kib = None;
    let started = Instant::now();
    let deadline = started + options.duration;
    let out_of_budget = |counters: &Counters| {
        counters.replayed.get()
            || Instant::now() >= deadline
            || options.max_cases.is_some_and(|m| counters.execs.get() >= m)
    };
    std::thread::scope(|scope| {
        scope.spawn(|| watchdog(name, options, &in_flight, &done));
        let mut batch = options.first_batch;
        let mut last_progress = Instant::now();
        while !out_of_budget(&counters) {
            if let Err(message) = target.before_batch() {
                findings.push(finding(
                    options,
                    name,
                    FindingKind::Harness,
                    message,
                    String::new(),
                    batch,
                ));
                break;
            }
            batches += 1;
            counters.failing.set(false);
            counters.case.set(0);
            let config = batch_config(target.batch_cases(), options.shrink);
            let mut runner = TestRunner::new_with_rng(config, batch_rng(options.seed, name, batch));
            let case = Case {
                target,
                options,
                counters: &counters,
                in_flight: &in_flight,
                in_flight_file: in_flight_file.as_ref(),
                out_of_budget: &out_of_budget,
                batch,
                name,
            };
            let result = runner.run(&strategy, |input| case.run(input));
            match result {
                Ok(()) => {}
                Err(TestError::Fail(reason, input)) => {
                    let message = reason.message().to_owned();
                    counters.known.borrow_mut().insert(signature(&message), 1);
                    findings.push(finding(
                        options,
                        name,
                        FindingKind::Property,
                        message,
                        format!("{input:#?}"),
                        batch,
                    ));
                    if findings.len() >= MAX_DISTINCT_FINDINGS {
                        break;
                    }
                }
                Err(TestError::Abort(reason)) => {
                    findings.push(finding(
                        options,
                        name,
                        FindingKind::Harness,
                        format!("proptest gave up: {}", reason.message()),
                        String::new(),
                        batch,
                    ));
                    break;
                }
            }
            let rss = status_kib("VmRSS");
            if rss_first_batch_kib.is_none() {
                rss_first_batch_kib = rss;
            }
            if let (Some(rss), Some(max)) = (rss, options.max_rss_kib)
                && rss > max
            {
                let message =
                    format!("resident memory reached {rss} KiB, above the {max} KiB limit");
                findings.push(finding(
                    options,
                    name,
                    FindingKind::Memory,
                    message,
                    String::new(),
                    batch,
                ));
                break;
            }
            if options.progress && last_progress.elapsed() >= PROGRESS_EVERY {
                last_progress = Instant::now();
                println!(
                    "  {name}: {:.0} s, batch {batch}, {} execs, rss {} KiB",
                    started.elapsed().as_secs_f64(),
                    target.execs().unwrap_or(counters.execs.get()),
                    rss.unwrap_or(0)
                );
            }
            batch += 1;
        }
        done.store(true, Ordering::SeqCst);
    });
    let elapsed = started.elapsed();
    // What the target judged itself, reported once it knows everything.
    let last_batch = options.first_batch + batches.saturating_sub(1);
    for (message, input) in target.findings() {
        findings.push(finding(options, name, FindingKind::Property, message, input, last_batch));
    }
    let mut all = counters.slow.take();
    all.append(&mut findings);
    let repeats: Vec<String> = counters
        .known
        .take()
        .into_iter()
        .filter(|(_, n)| *n > 1)
        .map(|(sig, n)| format!("met {n} times: {sig}"))
        .collect();
    let mut stats = target.stats();
    stats.extend(repeats);
    Report {
        target: name,
        seed: options.seed,
        elapsed,
        execs: target.execs().unwrap_or(counters.execs.get()),
        cases: counters.execs.get(),
        shrink_execs: counters.shrink_execs.get(),
        batches,
        findings: all,
        slow_cases: counters.slow_cases.get(),
        slowest: counters.slowest.take(),
        peak_rss_kib: status_kib("VmHWM"),
        rss_first_batch_kib,
        rss_end_kib: status_kib("VmRSS"),
        stats,
        summary_fields: target.summary_fields(),
    }
}

/// What one case needs from its run.
struct Case<'a, T: FuzzTarget, F> {
    target: &'a T,
    options: &'a RunOptions,
    counters: &'a Counters,
    in_flight: &'a InFlight,
    in_flight_file: Option<&'a InFlightFile>,
    out_of_budget: &'a F,
    batch: u64,
    name: &'static str,
}

impl<T: FuzzTarget, F: Fn(&Counters) -> bool> Case<'_, T, F> {
    /// One case: skipped once the budget is spent (unless shrinking), timed,
    /// guarded against panics here and on other threads.
    fn run(&self, input: T::Input) -> Result<(), TestCaseError> {
        let counters = self.counters;
        let shrinking = counters.failing.get();
        let index = counters.case.get();
        if !shrinking {
            counters.case.set(index + 1);
            if (self.out_of_budget)(counters) {
                // The batch's remaining cases are generated but not run.
                return Ok(());
            }
            if let Some(only) = self.options.only_case {
                if index != only {
                    return Ok(());
                }
                println!("case {only} of batch {}:\n{input:#?}", self.batch);
                counters.replayed.set(true);
            }
            if let Some(file) = self.in_flight_file {
                file.record(self.options.seed, self.batch, index);
            }
        }
        *self.in_flight.lock().unwrap_or_else(PoisonError::into_inner) =
            Some((Instant::now(), self.batch, index, Box::new(input.clone())));
        let panics_before = PANICS.load(Ordering::SeqCst);
        let start = Instant::now();
        IN_CASE.with(|c| c.set(true));
        let result = match catch_unwind(AssertUnwindSafe(|| self.target.check(&input, !shrinking)))
        {
            Ok(result) => result,
            Err(payload) => Err(format!("panicked: {}", panic_message(payload.as_ref()))),
        };
        IN_CASE.with(|c| c.set(false));
        let took = start.elapsed();
        *self.in_flight.lock().unwrap_or_else(PoisonError::into_inner) = None;
        let result = result.and_then(|()| {
            if PANICS.load(Ordering::SeqCst) == panics_before {
                Ok(())
            } else {
                Err(format!("a panic on another thread: {}", last_panic()))
            }
        });
        if shrinking {
            counters.shrink_execs.set(counters.shrink_execs.get() + 1);
        } else {
            counters.execs.set(counters.execs.get() + 1);
            self.timed(&input, took);
        }
        let Err(message) = result else { return Ok(()) };
        // A failure already reported only counts: the run looks for new ones.
        if let Some(count) = counters.known.borrow_mut().get_mut(&signature(&message)) {
            *count += 1;
            return Ok(());
        }
        counters.failing.set(true);
        Err(TestCaseError::fail(message))
    }

    fn timed(&self, input: &T::Input, took: Duration) {
        let counters = self.counters;
        let size = self.target.size(input);
        let mut slowest = counters.slowest.borrow_mut();
        if slowest.as_ref().is_none_or(|s| took > s.took) {
            *slowest = Some(Slowest { took, size });
        }
        if took > self.options.slow_case {
            let mut slow = counters.slow.borrow_mut();
            if slow.len() < SLOW_CASES_KEPT {
                let message = format!(
                    "one case took {:.2} s (limit {:.2} s), input of {size} bytes",
                    took.as_secs_f64(),
                    self.options.slow_case.as_secs_f64()
                );
                let input = format!("{input:#?}");
                slow.push(finding(
                    self.options,
                    self.name,
                    FindingKind::Slow,
                    message,
                    input,
                    self.batch,
                ));
            } else {
                counters.slow_cases.set(counters.slow_cases.get() + 1);
            }
        }
    }
}

/// Stops the process when one case runs past the hang limit, printing its input.
fn watchdog(name: &str, options: &RunOptions, in_flight: &InFlight, done: &AtomicBool) {
    while !done.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(250));
        let slot = in_flight.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((start, batch, case, input)) = slot.as_ref()
            && start.elapsed() > options.hang_limit
        {
            let message = format!(
                "case {case} of batch {batch} has run for {:.0} s (hang limit {:.0} s); stopping the process",
                start.elapsed().as_secs_f64(),
                options.hang_limit.as_secs_f64()
            );
            let f =
                finding(options, name, FindingKind::Slow, message, format!("{input:#?}"), *batch);
            print_finding(name, options.seed, &f);
            std::process::exit(3);
        }
    }
}

fn finding(
    options: &RunOptions,
    target: &str,
    kind: FindingKind,
    message: String,
    input: String,
    batch: u64,
) -> Finding {
    let mut f = Finding { kind, message, input, batch, file: None };
    if let Some(dir) = &options.findings_dir {
        let path = dir.join(format!("{target}-{kind}-seed{}-batch{batch}.txt", options.seed));
        let text = format!(
            "target: {target}\nkind: {kind}\nseed: {}\nbatch: {batch}\nmessage: {}\n\ninput:\n{}\n",
            options.seed, f.message, f.input
        );
        if std::fs::create_dir_all(dir).and_then(|()| std::fs::write(&path, text)).is_ok() {
            f.file = Some(path);
        }
    }
    f
}

/// Prints a finding: its message, the input (cut), and how to replay it.
pub fn print_finding(target: &str, seed: u64, f: &Finding) {
    let mut text = String::new();
    let _ = writeln!(text, "FINDING [{target}/{}] {}", f.kind, f.message);
    if !f.input.is_empty() {
        let chars = f.input.chars().count();
        let shown: String = f.input.chars().take(PRINTED_INPUT_CHARS).collect();
        let _ = writeln!(text, "  input ({} bytes of Debug text):", f.input.len());
        for line in shown.lines() {
            let _ = writeln!(text, "    {line}");
        }
        if chars > PRINTED_INPUT_CHARS {
            let _ = writeln!(text, "    ... ({} more characters)", chars - PRINTED_INPUT_CHARS);
        }
    }
    if let Some(file) = &f.file {
        let _ = writeln!(text, "  written to {}", file.display());
    }
    let _ = writeln!(
        text,
        "  replay: custard-fuzz {target} --seed {seed} --first-batch {} --seconds 60",
        f.batch
    );
    print!("{text}");
}

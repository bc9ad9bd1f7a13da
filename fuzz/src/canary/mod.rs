//! The canary target: looks for policy leaks by their effect, not their shape.
//!
//! Two PostgreSQL databases (see [`setup`]) hold the same tables with
//! different canary strings in everything the policy hides: the masked column
//! `public.secrets.secret`, the forbidden table `public.forbidden`, the table
//! `other.stuff` of a schema outside the policy, and catalog-only places (a
//! table comment, a column comment, a database setting, the role's name, a
//! column and a table named in the other schema). Generated queries
//! ([`grammar`]) go through a guard built as the agent builds it; whatever it
//! accepts runs through the agent's own executor, as a role that may read
//! everything, in both databases. A finding is a canary string in a result (a
//! value, a column name or an error message) or a result that differs between
//! the two databases (the query depended on a hidden value: a predicate, an
//! order, a count). Each finding is minimised, greedily and against the
//! databases, to a short query that still leaks the same way, and keyed by
//! the constructs that query uses; a key that only adds constructs to one
//! already found is reported as a variant of it.
//!
//! With `guard_mask` off, the guard does not mask `secret` and the role reads
//! `public.secrets` through column privileges instead (as the agent's
//! printed privileges would set it): the database refuses, the guard need not.

mod grammar;
mod setup;

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use custard_core::{
    DiscoverOptions, ExecError, ExecErrorCode, Executor, Guard, PostgresExecutor, QueryResult,
    RunLimits, Schema,
};
use proptest::prelude::*;
use tokio::task::JoinSet;

use self::grammar::{Gen, Sql};
use self::setup::Databases;
use crate::runner::FuzzTarget;

/// Queries per case: they run concurrently.
const QUERIES_PER_CASE: usize = 48;
/// The row limit of the guard and the executor: small, the tables are too.
const MAX_ROWS: u64 = 20;
/// Connections per database unless `CUSTARD_FUZZ_CANARY_CONNECTIONS` says.
const DEFAULT_CONNECTIONS: usize = 4;
/// Time one case may spend minimising (a case over 2 s is a slow finding).
const MINIMISE_TIME: Duration = Duration::from_millis(1200);
/// Candidates evaluated at once while minimising.
const MINIMISE_CHUNK: usize = 24;
/// Minimisation may use this share of the run's time (once every kind of
/// leak has been minimised once); beyond it leaks are only counted.
const MINIMISE_SHARE: f64 = 0.3;
/// First leaks of a kind waiting for a case with time to minimise them.
const MAX_PENDING: usize = 32;
/// The database name minimised queries are shown and compared with.
const KEY_DB: &str = "<db>";

/// The policy the agent runs with, as its configuration would give it.
struct Policy {
    allowed_schemas: Vec<String>,
    allowed_tables: Vec<String>,
    masked_columns: Vec<String>,
    max_rows: u64,
}

impl Policy {
    fn new(guard_mask: bool) -> Self {
        Policy {
            allowed_schemas: vec!["public".into()],
            allowed_tables: vec!["public.ok_tbl".into(), "public.secrets".into()],
            masked_columns: if guard_mask {
                vec!["public.secrets.secret".into()]
            } else {
                Vec::new()
            },
            max_rows: MAX_ROWS,
        }
    }

    /// The agent's guard for a discovered schema. This replicates
    /// `custard-agent`'s `state::build_guard` and `state::allowed_tables`
    /// (private to that crate) step for step: the schema is filtered to the
    /// allowed schemas and tables, then the builder gets the row limit, the
    /// allowed schemas, the allowed tables, the filtered schema and the masks.
    fn guard(&self, mut schema: Schema) -> Result<Guard, String> {
        schema.tables.retain(|t| {
            let schema_ok = self.allowed_schemas.iter().any(|s| s == &t.schema);
            let table_ok = self
                .allowed_tables
                .iter()
                .any(|q| q.split_once('.') == Some((t.schema.as_str(), t.name.as_str())));
            schema_ok && table_ok
        });
        Guard::builder(schema.dialect)
            .max_rows(self.max_rows)
            .allow_schemas(self.allowed_schemas.clone())
            .allow_tables(self.allowed_tables.clone())
            .schema(schema)
            .mask_columns(self.masked_columns.clone())
            .build()
            .map_err(|e| format!("building the guard: {e}"))
    }
}

/// Where a leaked canary came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Canary {
    Masked,
    Forbidden,
    OtherSchema,
    Comment,
    Setting,
    RoleName,
    CatalogName,
    /// The nonce without a recognisable prefix.
    Fragment,
}

impl Canary {
    fn of(prefix: &str) -> Canary {
        let kinds = [
            ("canary-mask-", Canary::Masked),
            ("canary-forbid-", Canary::Forbidden),
            ("canary-other-", Canary::OtherSchema),
            ("canary-cat-", Canary::Comment),
            ("canary-set-", Canary::Setting),
            ("canary_role_", Canary::RoleName),
            ("canary_cat_col_", Canary::CatalogName),
            ("canary_cat_tbl_", Canary::CatalogName),
        ];
        kinds.iter().find(|(p, _)| prefix.ends_with(p)).map_or(Canary::Fragment, |(_, k)| *k)
    }

    fn describe(self) -> &'static str {
        match self {
            Canary::Masked => "a value of the masked column public.secrets.secret",
            Canary::Forbidden => "a value of the forbidden table public.forbidden",
            Canary::OtherSchema => "a value of other.stuff, outside the allowed schemas",
            Canary::Comment => "a comment from the catalog",
            Canary::Setting => "the database's custard.canary setting",
            Canary::RoleName => "the role's name (a catalog-only canary)",
            Canary::CatalogName => "a column or table name of the other schema",
            Canary::Fragment => "part of a canary",
        }
    }
}

/// Where in a result a canary showed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Place {
    Value,
    ColumnName,
    ErrorMessage,
}

/// How a query leaked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum LeakKind {
    /// A canary string in the result.
    Canary(Canary, Place),
    /// The result differs between the two variants.
    Difference,
}

impl fmt::Display for LeakKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LeakKind::Canary(c, p) => {
                let place = match p {
                    Place::Value => "in a result value",
                    Place::ColumnName => "in a result column name",
                    Place::ErrorMessage => "in a database error message",
                };
                write!(f, "{} {place}", c.describe())
            }
            LeakKind::Difference => f.write_str(
                "a result that differs between the two canary databases (it depends on a hidden value)",
            ),
        }
    }
}

#[derive(Clone, Debug)]
struct Leak {
    kind: LeakKind,
    /// What showed it: the canary in context, or both results.
    evidence: String,
}

/// What running one query did.
#[derive(Clone, Debug, Default)]
struct Eval {
    accepted: bool,
    rejection: Option<&'static str>,
    /// The first variant's outcome: None when not run.
    ok: Option<bool>,
    error: Option<(ExecErrorCode, Option<String>)>,
    leak: Option<Leak>,
    /// The guard accepted the query in one variant only (the database name differs).
    guard_disagrees: bool,
}

/// What every query needs: the guards, executors and canaries.
struct Shared {
    guards: [Guard; 2],
    executors: [PostgresExecutor; 2],
    dbs: [String; 2],
    nonces: [String; 3],
    limits: RunLimits,
}

type Outcome = Result<QueryResult, ExecError>;

impl Shared {
    async fn evaluate(self: Arc<Self>, tree: Sql) -> Eval {
        let sql = [tree.render(&self.dbs[0]), tree.render(&self.dbs[1])];
        let checked_a = match self.guards[0].check(&sql[0]) {
            Ok(c) => c,
            Err(r) => return Eval { rejection: Some(r.code.as_str()), ..Eval::default() },
        };
        let checked_b = self.guards[1].check(&sql[1]).ok();
        let run_b = async {
            match &checked_b {
                Some(c) => Some(self.executors[1].query(c, &self.limits).await),
                None => None,
            }
        };
        let (a, b) = tokio::join!(self.executors[0].query(&checked_a, &self.limits), run_b);
        let mut eval = Eval {
            accepted: true,
            ok: Some(a.is_ok()),
            error: a.as_ref().err().map(|e| (e.code, e.sqlstate.clone())),
            guard_disagrees: checked_b.is_none(),
            ..Eval::default()
        };
        eval.leak = self.canary_in(&a).or_else(|| b.as_ref().and_then(|b| self.canary_in(b)));
        if eval.leak.is_none()
            && let Some(b) = &b
        {
            eval.leak = self.difference(&a, b);
        }
        eval
    }

    /// A canary in a result's values, column names or error message.
    fn canary_in(&self, outcome: &Outcome) -> Option<Leak> {
        match outcome {
            Ok(result) => {
                let names: Vec<&str> = result.columns.iter().map(|c| c.name.as_str()).collect();
                self.find(&names.join(", "), Place::ColumnName).or_else(|| {
                    let values = serde_json::to_string(&result.rows).unwrap_or_default();
                    self.find(&values, Place::Value)
                })
            }
            Err(e) => self.find(&e.message, Place::ErrorMessage),
        }
    }

    fn find(&self, text: &str, place: Place) -> Option<Leak> {
        let lower = text.to_lowercase();
        let at = self.nonces.iter().filter_map(|n| lower.find(n.as_str())).min()?;
        let mut start = at.saturating_sub(20);
        while !lower.is_char_boundary(start) {
            start -= 1;
        }
        let kind = Canary::of(&lower[start..at]);
        let mut from = at.saturating_sub(60);
        while !text.is_char_boundary(from) {
            from -= 1;
        }
        let excerpt: String = text[from..].chars().take(160).collect();
        Some(Leak { kind: LeakKind::Canary(kind, place), evidence: excerpt })
    }

    /// A difference between the two variants' outcomes; timeouts and lost
    /// connections are not compared.
    fn difference(&self, a: &Outcome, b: &Outcome) -> Option<Leak> {
        let flaky = |o: &Outcome| {
            matches!(
                o,
                Err(e) if matches!(
                    e.code,
                    ExecErrorCode::Timeout
                        | ExecErrorCode::DatabaseUnavailable
                        | ExecErrorCode::Internal
                        | ExecErrorCode::Canceled
                        | ExecErrorCode::ReceiverClosed
                )
            )
        };
        if flaky(a) || flaky(b) {
            return None;
        }
        let shown = |o: &Outcome, db: &str| match o {
            Ok(r) => {
                let names: Vec<&str> = r.columns.iter().map(|c| c.name.as_str()).collect();
                let rows = serde_json::to_string(&r.rows).unwrap_or_default();
                format!("columns {names:?} rows {}", rows.replace(db, KEY_DB))
            }
            Err(e) => format!("error {} {:?}", e.code, e.sqlstate),
        };
        let (sa, sb) = (shown(a, &self.dbs[0]), shown(b, &self.dbs[1]));
        (sa != sb).then(|| Leak {
            kind: LeakKind::Difference,
            evidence: format!("first database: {}\n  second database: {}", cut(&sa), cut(&sb)),
        })
    }
}

fn cut(s: &str) -> String {
    let mut out: String = s.chars().take(300).collect();
    if out.len() < s.len() {
        out.push_str("...");
    }
    out
}

/// One case: a batch of generated queries.
#[derive(Clone)]
pub(crate) struct CanaryCase {
    seed: u64,
    queries: Vec<Sql>,
}

impl CanaryCase {
    fn new(seed: u64) -> Self {
        let mut g = Gen::new(seed);
        CanaryCase { seed, queries: (0..QUERIES_PER_CASE).map(|_| g.query_tree()).collect() }
    }
}

impl fmt::Debug for CanaryCase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "CanaryCase {{ seed: {}, queries ({KEY_DB} is the database):", self.seed)?;
        f.write_str(&grammar::listing(&self.queries, KEY_DB))?;
        f.write_str("}")
    }
}

/// What is hidden and how it leaked: findings are distinct by this.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct FindingKey {
    /// The canary's kind (or a difference), and whether it showed in an error.
    what: (Option<Canary>, bool),
    /// The constructs the minimised query uses.
    tags: Vec<&'static str>,
}

impl FindingKey {
    fn of(kind: LeakKind, tags: Vec<&'static str>) -> Self {
        let what = match kind {
            LeakKind::Canary(c, place) => (Some(c), place == Place::ErrorMessage),
            LeakKind::Difference => (None, false),
        };
        FindingKey { what, tags }
    }

    fn how(&self) -> String {
        if self.tags.is_empty() { "plain SQL".to_owned() } else { self.tags.join(" + ") }
    }

    /// Whether this key is `other`'s leak plus more constructs: the same
    /// canary (a difference goes with any) through a superset of its
    /// constructs, so most likely the same mechanism in more context.
    fn extends(&self, other: &FindingKey) -> bool {
        !other.tags.is_empty()
            && (self.what == other.what || self.what.0.is_none())
            && other.tags.iter().all(|t| self.tags.contains(t))
    }
}

/// One reported finding and the variants folded into it.
struct Group<'a> {
    key: &'a FindingKey,
    found: &'a Found,
    met: u64,
    variants: Vec<&'a FindingKey>,
}

/// The findings with every key that [extends](FindingKey::extends) another
/// folded into the first (fewest constructs) it extends.
fn groups(found: &BTreeMap<FindingKey, Found>) -> Vec<Group<'_>> {
    let mut keys: Vec<&FindingKey> = found.keys().collect();
    keys.sort_by_key(|k| (k.tags.len(), k.what.0.is_none(), (*k).clone()));
    let mut groups: Vec<Group<'_>> = Vec::new();
    for key in keys {
        let f = &found[key];
        match groups.iter_mut().find(|g| key.extends(g.key)) {
            Some(g) => {
                g.met += f.met;
                g.variants.push(key);
            }
            None => groups.push(Group { key, found: f, met: f.met, variants: Vec::new() }),
        }
    }
    groups
}

/// A distinct finding: the shortest minimised query met with its key.
struct Found {
    kind: LeakKind,
    sql: String,
    evidence: String,
    original: String,
    /// How many leaking queries minimised to this key.
    met: u64,
}

#[derive(Default)]
struct Counts {
    queries: u64,
    accepted: u64,
    executed_ok: u64,
    db_errors: u64,
    permission_denied: u64,
    timeouts: u64,
    unavailable: u64,
    guard_disagrees: u64,
    leaking: u64,
    minimised: u64,
    not_minimised: u64,
    minimise_queries: u64,
    rejections: BTreeMap<&'static str, u64>,
    sqlstates: BTreeMap<String, u64>,
}

/// The canary target.
pub(crate) struct CanaryTarget {
    shared: Arc<Shared>,
    rt: tokio::runtime::Runtime,
    counts: RefCell<Counts>,
    found: RefCell<BTreeMap<FindingKey, Found>>,
    /// Kinds of leak minimised at least once.
    kinds_minimised: RefCell<Vec<LeakKind>>,
    /// First leaks of a kind a case had no time left to minimise.
    pending: RefCell<Vec<(Sql, Leak)>>,
    started: Cell<Option<Instant>>,
    minimise_spent: Cell<Duration>,
    guard_mask: bool,
    // Last: the databases are dropped once nothing uses them.
    _dbs: Databases,
}

impl CanaryTarget {
    /// Runs each SQL text (`<db>` standing for the database's name) as the
    /// fuzzer would, and says what the guard, both databases and the oracles
    /// made of it. True when any leaked.
    pub(crate) fn replay(&self, queries: &[String]) -> bool {
        let mut leaked = false;
        for text in queries {
            let tree = Sql::from_text(text, KEY_DB);
            println!("sql: {text}");
            for (i, db) in self.shared.dbs.iter().enumerate() {
                let sql = tree.render(db);
                match self.shared.guards[i].check(&sql) {
                    Err(r) => {
                        println!("  database {}: guard refuses: {}: {}", i + 1, r.code, r.message)
                    }
                    Ok(checked) => {
                        let outcome = self.rt.block_on(
                            self.shared.executors[i].query(&checked, &self.shared.limits),
                        );
                        match outcome {
                            Ok(r) => {
                                let names: Vec<&str> =
                                    r.columns.iter().map(|c| c.name.as_str()).collect();
                                let rows = serde_json::to_string(&r.rows).unwrap_or_default();
                                println!(
                                    "  database {}: columns {names:?} rows {}",
                                    i + 1,
                                    cut(&rows)
                                );
                            }
                            Err(e) => {
                                println!("  database {}: error {}: {}", i + 1, e.code, e.message)
                            }
                        }
                    }
                }
            }
            let eval = self.rt.block_on(Arc::clone(&self.shared).evaluate(tree));
            match eval.leak {
                Some(leak) => {
                    leaked = true;
                    println!("  LEAK: {}\n  evidence: {}", leak.kind, leak.evidence);
                }
                None => println!("  no leak"),
            }
        }
        leaked
    }

    pub(crate) fn new(guard_mask: bool) -> Result<Self, String> {
        let workers = std::thread::available_parallelism().map_or(2, |n| n.get()).clamp(2, 8);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            // The guard recurses; unoptimised frames are far larger.
            .thread_stack_size(if cfg!(debug_assertions) { 16 << 20 } else { 2 << 20 })
            .enable_all()
            .build()
            .map_err(|e| format!("starting a runtime: {e}"))?;
        let connections = std::env::var("CUSTARD_FUZZ_CANARY_CONNECTIONS")
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
            .filter(|n| *n > 0)
            .unwrap_or(DEFAULT_CONNECTIONS);
        let policy = Policy::new(guard_mask);
        let (dbs, guards, executors) = rt.block_on(async {
            let dbs = Databases::create(!guard_mask).await?;
            let mut guards = Vec::new();
            let mut executors = Vec::new();
            for i in 0..2 {
                // As the agent opens it (`PostgresExecutor::new` with its concurrency).
                let executor = PostgresExecutor::new(&dbs.role_url(i), connections)
                    .map_err(|e| format!("opening the executor: {e}"))?;
                let schema = executor
                    .discover(&DiscoverOptions::default())
                    .await
                    .map_err(|e| format!("discovering the schema: {e}"))?;
                guards.push(policy.guard(schema)?);
                executors.push(executor);
            }
            Ok::<_, String>((dbs, guards, executors))
        })?;
        let [ga, gb] = <[Guard; 2]>::try_from(guards).map_err(|_| "two guards".to_owned())?;
        let [ea, eb] =
            <[PostgresExecutor; 2]>::try_from(executors).map_err(|_| "two executors".to_owned())?;
        let shared = Shared {
            guards: [ga, gb],
            executors: [ea, eb],
            dbs: [dbs.variants[0].db.clone(), dbs.variants[1].db.clone()],
            nonces: dbs.nonces(),
            limits: RunLimits {
                max_rows: MAX_ROWS,
                max_bytes: 256 * 1024,
                timeout: Duration::from_millis(500),
                lock_timeout: Duration::from_millis(200),
                batch_rows: 50,
            },
        };
        Ok(CanaryTarget {
            shared: Arc::new(shared),
            rt,
            counts: RefCell::default(),
            found: RefCell::default(),
            kinds_minimised: RefCell::default(),
            pending: RefCell::default(),
            started: Cell::new(None),
            minimise_spent: Cell::new(Duration::ZERO),
            guard_mask,
            _dbs: dbs,
        })
    }

    /// Evaluates queries concurrently (the pools bound how many run at once).
    async fn evaluate_all(shared: &Arc<Shared>, trees: Vec<Sql>) -> Vec<Eval> {
        let mut set = JoinSet::new();
        let count = trees.len();
        for (i, tree) in trees.into_iter().enumerate() {
            let shared = Arc::clone(shared);
            set.spawn(async move { (i, shared.evaluate(tree).await) });
        }
        let mut out = vec![Eval::default(); count];
        while let Some(joined) = set.join_next().await {
            match joined {
                Ok((i, eval)) => out[i] = eval,
                Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                Err(_) => {}
            }
        }
        out
    }

    /// Greedily shortens `tree` while it leaks the same way, until no
    /// simplification does or `deadline`. Returns the tree and its leak.
    fn minimise(&self, tree: Sql, leak: Leak, deadline: Instant) -> (Sql, Leak) {
        let (mut current, mut leak) = (tree, leak);
        let kind = leak.kind;
        let mut spent = 0;
        'rounds: while Instant::now() < deadline {
            let candidates = current.shorter(KEY_DB);
            for chunk in candidates.chunks(MINIMISE_CHUNK) {
                let trees: Vec<Sql> = chunk.iter().map(|(_, s)| s.clone()).collect();
                spent += trees.len() as u64;
                let evals = self.rt.block_on(Self::evaluate_all(&self.shared, trees));
                let hit = evals
                    .into_iter()
                    .zip(chunk)
                    .find(|(e, _)| e.leak.as_ref().is_some_and(|l| l.kind == kind));
                if let Some((e, (_, s))) = hit {
                    current = s.clone();
                    leak = e.leak.unwrap_or(leak);
                    continue 'rounds;
                }
                if Instant::now() >= deadline {
                    break 'rounds;
                }
            }
            break;
        }
        self.counts.borrow_mut().minimise_queries += spent;
        (current, leak)
    }

    /// Records a leak: minimised (when the budget allows) and deduplicated.
    /// The first leak of each kind is always minimised, in a later case if
    /// this one has used its time.
    fn record(&self, tree: &Sql, leak: Leak, case_started: Instant) {
        let started = self.started.get().unwrap_or(case_started);
        let new_kind = !self.kinds_minimised.borrow().contains(&leak.kind);
        let budget = Duration::from_secs(3) + started.elapsed().mul_f64(MINIMISE_SHARE);
        let case_deadline = case_started + MINIMISE_TIME;
        let now = Instant::now();
        if new_kind && now >= case_deadline {
            let mut pending = self.pending.borrow_mut();
            if pending.len() < MAX_PENDING && !pending.iter().any(|(_, l)| l.kind == leak.kind) {
                pending.push((tree.clone(), leak));
                return;
            }
        }
        if now >= case_deadline || (!new_kind && self.minimise_spent.get() > budget) {
            self.counts.borrow_mut().not_minimised += 1;
            return;
        }
        self.keep(tree, leak, case_deadline);
    }

    /// Minimises a leak until `deadline` and keeps it under its key.
    fn keep(&self, tree: &Sql, leak: Leak, deadline: Instant) {
        let t0 = Instant::now();
        let original = tree.render(KEY_DB);
        let (small, leak) = self.minimise(tree.clone(), leak, deadline);
        self.minimise_spent.set(self.minimise_spent.get() + t0.elapsed());
        self.counts.borrow_mut().minimised += 1;
        if !self.kinds_minimised.borrow().contains(&leak.kind) {
            self.kinds_minimised.borrow_mut().push(leak.kind);
        }
        let sql = small.render(KEY_DB);
        let key = FindingKey::of(leak.kind, small.tags());
        let mut found = self.found.borrow_mut();
        if !found.contains_key(&key) && !found.keys().any(|k| key.extends(k)) {
            println!("  canary: new finding: {} via {}: {sql}", leak.kind, key.how());
        }
        let entry = found.entry(key).or_insert_with(|| Found {
            kind: leak.kind,
            sql: sql.clone(),
            evidence: leak.evidence.clone(),
            original: original.clone(),
            met: 0,
        });
        entry.met += 1;
        if sql.len() < entry.sql.len() {
            *entry =
                Found { met: entry.met, kind: leak.kind, sql, evidence: leak.evidence, original };
        }
    }

    /// Minimises leaks put off by earlier cases, until `deadline` (or all,
    /// when None: the run is over).
    fn keep_pending(&self, deadline: Option<Instant>) {
        loop {
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return;
            }
            let Some((tree, leak)) = self.pending.borrow_mut().pop() else { return };
            let until = deadline.unwrap_or_else(|| Instant::now() + MINIMISE_TIME);
            self.keep(&tree, leak, until);
        }
    }
}

impl FuzzTarget for CanaryTarget {
    type Input = CanaryCase;

    fn strategy(&self) -> BoxedStrategy<CanaryCase> {
        any::<u64>().prop_map(CanaryCase::new).boxed()
    }

    fn check(&self, input: &CanaryCase, count: bool) -> Result<(), String> {
        let case_started = Instant::now();
        if self.started.get().is_none() {
            self.started.set(Some(case_started));
        }
        self.keep_pending(Some(case_started + MINIMISE_TIME));
        let evals = self.rt.block_on(Self::evaluate_all(&self.shared, input.queries.clone()));
        let mut unavailable = None;
        if count {
            let mut c = self.counts.borrow_mut();
            for e in &evals {
                c.queries += 1;
                if let Some(code) = e.rejection {
                    *c.rejections.entry(code).or_default() += 1;
                }
                if !e.accepted {
                    continue;
                }
                c.accepted += 1;
                c.guard_disagrees += u64::from(e.guard_disagrees);
                match (&e.ok, &e.error) {
                    (Some(true), _) => c.executed_ok += 1,
                    (_, Some((code, state))) => {
                        c.db_errors += 1;
                        match code {
                            ExecErrorCode::PermissionDenied => c.permission_denied += 1,
                            ExecErrorCode::Timeout => c.timeouts += 1,
                            ExecErrorCode::DatabaseUnavailable | ExecErrorCode::Internal => {
                                c.unavailable += 1;
                                unavailable = Some(*code);
                            }
                            _ => {}
                        }
                        let state = state.clone().unwrap_or_else(|| code.as_str().to_owned());
                        *c.sqlstates.entry(state).or_default() += 1;
                    }
                    _ => {}
                }
            }
        }
        let accepted = evals.iter().filter(|e| e.accepted).count();
        let broken = evals
            .iter()
            .filter(|e| matches!(e.error, Some((ExecErrorCode::DatabaseUnavailable, _))))
            .count();
        if accepted > 4 && broken * 2 > accepted {
            return Err(format!(
                "the database stopped answering: {broken} of {accepted} accepted queries failed \
                 with {unavailable:?}"
            ));
        }
        for (tree, eval) in input.queries.iter().zip(evals) {
            if let Some(leak) = eval.leak {
                self.counts.borrow_mut().leaking += 1;
                self.record(tree, leak, case_started);
            }
        }
        Ok(())
    }

    fn size(&self, input: &CanaryCase) -> usize {
        input.queries.iter().map(|q| q.render(KEY_DB).len()).sum()
    }

    fn batch_cases(&self) -> u32 {
        25
    }

    fn execs(&self) -> Option<u64> {
        Some(self.counts.borrow().queries)
    }

    fn findings(&self) -> Vec<(String, String)> {
        self.keep_pending(None);
        let found = self.found.borrow();
        groups(&found)
            .iter()
            .map(|g| {
                let f = g.found;
                let mut message = format!(
                    "leak: {} via {} (met {} times)\n  sql ({KEY_DB} is the database): {}\n  \
                     evidence: {}\n  a query that showed it: {}",
                    f.kind,
                    g.key.how(),
                    g.met,
                    f.sql,
                    f.evidence,
                    f.original
                );
                let mut input = format!("{}\n", f.sql);
                for v in &g.variants {
                    let sql = &found[*v].sql;
                    message.push_str(&format!("\n  variant via {}: {sql}", v.how()));
                    input.push_str(&format!("{sql}\n"));
                }
                (message, input)
            })
            .collect()
    }

    fn summary_fields(&self) -> Vec<(&'static str, String)> {
        let c = self.counts.borrow();
        vec![
            ("mode", if self.guard_mask { "guard-mask" } else { "database-mask" }.to_owned()),
            ("queries", c.queries.to_string()),
            ("guard_accepted", c.accepted.to_string()),
            ("executed_ok", c.executed_ok.to_string()),
            ("db_errors", c.db_errors.to_string()),
            ("leaking_queries", c.leaking.to_string()),
            ("findings_distinct", groups(&self.found.borrow()).len().to_string()),
        ]
    }

    fn stats(&self) -> Vec<String> {
        let c = self.counts.borrow();
        let pct = |n: u64| if c.queries == 0 { 0.0 } else { 100.0 * n as f64 / c.queries as f64 };
        let mut lines = vec![
            format!(
                "queries {}; guard accepted {} ({:.1}%); executed ok {}; database errors {} \
                 (permission denied {}, timeouts {}, unavailable {}); accepted in one database \
                 only {}",
                c.queries,
                c.accepted,
                pct(c.accepted),
                c.executed_ok,
                c.db_errors,
                c.permission_denied,
                c.timeouts,
                c.unavailable,
                c.guard_disagrees
            ),
            format!(
                "leaking queries {} (minimised {}, left unminimised over the time budget {}); \
                 {} minimisation queries in {:.1} s; distinct findings {}",
                c.leaking,
                c.minimised,
                c.not_minimised,
                c.minimise_queries,
                self.minimise_spent.get().as_secs_f64(),
                groups(&self.found.borrow()).len()
            ),
        ];
        let mut rejections: Vec<(u64, &str)> = c.rejections.iter().map(|(k, n)| (*n, *k)).collect();
        rejections.sort_unstable_by(|a, b| b.cmp(a));
        let rejections: Vec<String> = rejections.iter().map(|(n, k)| format!("{k} {n}")).collect();
        lines.push(format!("guard rejections: {}", rejections.join(", ")));
        let mut states: Vec<(u64, &str)> =
            c.sqlstates.iter().map(|(k, n)| (*n, k.as_str())).collect();
        states.sort_unstable_by(|a, b| b.cmp(a));
        let states: Vec<String> = states.iter().take(12).map(|(n, k)| format!("{k} {n}")).collect();
        lines.push(format!("database errors by SQLSTATE: {}", states.join(", ")));
        let found = self.found.borrow();
        for g in groups(&found) {
            lines.push(format!(
                "finding (met {}, {} variants) {} via {}: {}",
                g.met,
                g.variants.len(),
                g.found.kind,
                g.key.how(),
                g.found.sql
            ));
        }
        lines
    }
}

//! Schema discovery on a large PostgreSQL database: 10,000 tables in 4
//! schemas, 20 columns each, a primary key each, foreign keys and comments on
//! many; measured against a bare catalog read (one query for every column's
//! relation, name and type) in the same run.
//!
//! Needs the test PostgreSQL (`CUSTARD_TEST_DATABASE_URL`, or the testkit's
//! default); the scratch database is dropped at the end.

use std::fmt::Write as _;
use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode, criterion_group, criterion_main};
use custard_core::{DdlOptions, DiscoverOptions, Executor, PostgresExecutor};
use custard_testkit::ScratchDb;

const TABLES: usize = 10_000;
const SCHEMAS: [&str; 4] = ["public", "sales", "inventory", "support"];
/// Tables per `batch_execute`, so progress can be printed between batches.
const CHUNK: usize = 250;

/// Columns per table in [`ddl`].
const COLUMNS: usize = 20;

/// The least a schema reader must do: every column of every ordinary table in
/// the benchmark's schemas, with its type, in one query.
const BARE_CATALOG_READ: &str = "
    SELECT n.nspname::text, c.relname::text, a.attname::text,
        pg_catalog.format_type(a.atttypid, a.atttypmod)
    FROM pg_catalog.pg_class c
    JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
    JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid
    WHERE c.relkind = 'r' AND n.nspname IN ('public', 'sales', 'inventory', 'support')
      AND a.attnum > 0 AND NOT a.attisdropped";

fn median(times: &mut [Duration]) -> Duration {
    times.sort();
    times[times.len() / 2]
}

fn qualified(i: usize) -> String {
    format!("{}.t{i:04}", SCHEMAS[i % SCHEMAS.len()])
}

/// DDL and a few rows for tables `range`; table `i` references table `i / 2`
/// (created earlier) unless `i` is a multiple of 3.
fn ddl(range: std::ops::Range<usize>) -> String {
    let mut sql = String::new();
    for i in range {
        let t = qualified(i);
        let fk = if i > 0 && i % 3 != 0 {
            format!(" REFERENCES {}(id)", qualified(i / 2))
        } else {
            String::new()
        };
        // Writing into a String cannot fail.
        let _ = write!(
            sql,
            "CREATE TABLE {t} (
                id integer PRIMARY KEY,
                name varchar(40) NOT NULL,
                status text NOT NULL DEFAULT 'new',
                amount numeric(12,2),
                quantity integer DEFAULT 0,
                created_at timestamptz NOT NULL DEFAULT now(),
                active boolean,
                code char(3),
                note text,
                parent_id integer{fk},
                region text,
                channel text,
                discount numeric(5,2),
                weight real,
                shipped_at date,
                due_on date,
                priority smallint,
                score double precision,
                tags text[],
                payload jsonb
            );
            INSERT INTO {t} (id, name, status, code)
                SELECT g, 'name ' || g, (ARRAY['new', 'open', 'closed'])[1 + g % 3], 'c' || g % 4
                FROM generate_series(1, 10) AS g;"
        );
        if i % 4 == 0 {
            let _ = write!(sql, "COMMENT ON TABLE {t} IS 'Table number {i}, for the benchmark';");
        }
        if i % 2 == 0 {
            let _ = write!(sql, "COMMENT ON COLUMN {t}.status IS 'Where the row is in its life';");
        }
    }
    sql
}

fn discovery(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("building the runtime");
    let db = rt.block_on(async {
        let db = ScratchDb::create("bench_discovery").await;
        let client = db.client().await;
        let started = Instant::now();
        let schemas: String = SCHEMAS[1..].iter().map(|s| format!("CREATE SCHEMA {s};")).collect();
        client.batch_execute(&schemas).await.expect("creating schemas");
        for start in (0..TABLES).step_by(CHUNK) {
            client.batch_execute(&ddl(start..TABLES.min(start + CHUNK))).await.expect("DDL");
            eprintln!("created {} of {TABLES} tables", TABLES.min(start + CHUNK));
        }
        client.batch_execute("ANALYZE").await.expect("analyzing");
        eprintln!("schema ready in {:.1?}", started.elapsed());
        db
    });
    let executor =
        rt.block_on(PostgresExecutor::connect(&db.url)).expect("connecting the executor");
    let options = DiscoverOptions { sample_values: 5 };

    let started = Instant::now();
    let schema = rt.block_on(executor.discover(&options)).expect("discovering");
    eprintln!(
        "first discovery: {} tables, {} columns in {:.1?}",
        schema.tables.len(),
        schema.tables.iter().map(|t| t.columns.len()).sum::<usize>(),
        started.elapsed()
    );
    assert_eq!(schema.tables.len(), TABLES, "every table discovered");

    // The baseline: what any tool must read at least, one pass over the
    // catalogs for each column's relation, name and type, on its own
    // connection.
    let (baseline, connection) = rt
        .block_on(tokio_postgres::connect(&db.url, tokio_postgres::NoTls))
        .expect("connecting the baseline client");
    rt.spawn(connection);
    let bare_read =
        || rt.block_on(baseline.query(BARE_CATALOG_READ, &[])).expect("reading the catalogs");
    assert_eq!(bare_read().len(), TABLES * COLUMNS, "the baseline reads every column");

    let mut group = c.benchmark_group("discovery");
    group.sample_size(10);
    // Each call takes a good part of a second: one call per iteration keeps the
    // run short.
    group.sampling_mode(SamplingMode::Flat).measurement_time(Duration::from_secs(8));
    group.bench_function("discover_10000_tables", |b| {
        b.iter(|| rt.block_on(executor.discover(black_box(&options))).expect("discovering"))
    });
    group.bench_function("baseline_bare_catalog_read", |b| b.iter(bare_read));
    group.bench_function("fingerprint_10000_tables", |b| {
        b.iter(|| black_box(&schema).fingerprint())
    });
    group.bench_function("to_ddl_10000_tables", |b| {
        b.iter(|| black_box(&schema).to_ddl(&DdlOptions::default()))
    });
    group.finish();

    // The ratio, from medians taken alternately so both sides see the same
    // machine.
    let mut discover_times = Vec::new();
    let mut bare_times = Vec::new();
    for _ in 0..7 {
        let started = Instant::now();
        black_box(rt.block_on(executor.discover(&options)).expect("discovering"));
        discover_times.push(started.elapsed());
        let started = Instant::now();
        black_box(bare_read());
        bare_times.push(started.elapsed());
    }
    let (discover, bare) = (median(&mut discover_times), median(&mut bare_times));
    eprintln!(
        "discovery {discover:.1?} vs bare catalog read {bare:.1?} (medians of 7): ratio {:.2}",
        discover.as_secs_f64() / bare.as_secs_f64()
    );
    // Close the executor's connections before the scratch database is dropped.
    drop(executor);
    drop(db);
}

criterion_group!(benches, discovery);
criterion_main!(benches);

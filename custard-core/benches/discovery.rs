//! Schema discovery on a large PostgreSQL database: 2,000 tables in 4 schemas,
//! about 10 columns each, a primary key each, foreign keys and comments on many.
//!
//! Needs the test PostgreSQL (`CUSTARD_TEST_DATABASE_URL`, or the testkit's
//! default); the scratch database is dropped at the end.

use std::fmt::Write as _;
use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode, criterion_group, criterion_main};
use custard_core::{DdlOptions, DiscoverOptions, Executor, PostgresExecutor};
use custard_testkit::ScratchDb;

const TABLES: usize = 2_000;
const SCHEMAS: [&str; 4] = ["public", "sales", "inventory", "support"];
/// Tables per `batch_execute`, so progress can be printed between batches.
const CHUNK: usize = 250;

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
                parent_id integer{fk}
            );
            INSERT INTO {t} (id, name, status, code)
                SELECT g, 'name ' || g, (ARRAY['new', 'open', 'closed'])[1 + g % 3], 'c' || g % 4
                FROM generate_series(1, 20) AS g;"
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

    let mut group = c.benchmark_group("discovery");
    group.sample_size(10);
    // Discovery takes ~150 ms: one call per iteration keeps the run short.
    group.sampling_mode(SamplingMode::Flat).measurement_time(Duration::from_secs(4));
    group.bench_function("discover_2000_tables", |b| {
        b.iter(|| rt.block_on(executor.discover(black_box(&options))).expect("discovering"))
    });
    group
        .bench_function("fingerprint_2000_tables", |b| b.iter(|| black_box(&schema).fingerprint()));
    group.bench_function("to_ddl_2000_tables", |b| {
        b.iter(|| black_box(&schema).to_ddl(&DdlOptions::default()))
    });
    group.finish();
    // Close the executor's connections before the scratch database is dropped.
    drop(executor);
    drop(db);
}

criterion_group!(benches, discovery);
criterion_main!(benches);

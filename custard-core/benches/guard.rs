//! Guard throughput over the evaluation set's gold queries (no schema and with
//! the identifier check), reported by criterion per query.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use custard_core::{Column, Dialect, Guard, Schema, Table};

fn gold_queries() -> Vec<String> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../testdata/eval/defog/questions.jsonl");
    let text = std::fs::read_to_string(&path).expect("the evaluation set in testdata/");
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .flat_map(|q| {
            q["gold"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// A schema holding every table and column the gold queries of `academic` use,
/// so the identifier check does real lookups.
fn academic_schema() -> Schema {
    let table = |name: &str, cols: &[&str]| {
        Table::new("public", name, cols.iter().map(|c| Column::new(*c, "text")).collect())
    };
    Schema {
        dialect: Dialect::Postgres,
        tables: vec![
            table("author", &["aid", "homepage", "name", "oid"]),
            table("cite", &["cited", "citing"]),
            table("conference", &["cid", "homepage", "name"]),
            table("domain", &["did", "name"]),
            table("domain_author", &["aid", "did"]),
            table("domain_conference", &["cid", "did"]),
            table("domain_journal", &["did", "jid"]),
            table("domain_keyword", &["did", "kid"]),
            table("domain_publication", &["did", "pid"]),
            table("journal", &["homepage", "jid", "name"]),
            table("keyword", &["keyword", "kid"]),
            table("organization", &["continent", "homepage", "name", "oid"]),
            table(
                "publication",
                &[
                    "abstract",
                    "cid",
                    "citation_num",
                    "jid",
                    "pid",
                    "reference_num",
                    "title",
                    "year",
                ],
            ),
            table("publication_keyword", &["pid", "kid"]),
            table("writes", &["aid", "pid"]),
        ],
    }
}

fn bench_guard(c: &mut Criterion) {
    let queries = gold_queries();
    let guard = Guard::builder(Dialect::Postgres).build().expect("guard");
    c.bench_function(&format!("guard/policy/{}_gold_queries", queries.len()), |b| {
        b.iter(|| {
            for q in &queries {
                let _ = black_box(guard.check(black_box(q)));
            }
        })
    });
    for q in queries.iter().take(1) {
        c.bench_function("guard/policy/one_query", |b| {
            b.iter(|| black_box(guard.check(black_box(q))))
        });
    }

    let academic: Vec<String> =
        queries.iter().filter(|q| q.contains("publication")).cloned().collect();
    let with_schema =
        Guard::builder(Dialect::Postgres).schema(academic_schema()).build().expect("guard");
    c.bench_function(&format!("guard/identifiers/{}_academic_queries", academic.len()), |b| {
        b.iter(|| {
            for q in &academic {
                let _ = black_box(with_schema.check(black_box(q)));
            }
        })
    });
}

criterion_group!(benches, bench_guard);
criterion_main!(benches);

//! Schema retrieval on a generated 10,000-table schema: building the index
//! once, then ranking and cutting for a few questions, and building prompts.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use custard_core::{
    Column, Dialect, ForeignKey, PromptBuilder, RetrieveOptions, Schema, SchemaIndex, Table,
    TableKind, Turn,
};

/// Words tables and columns are named from, as in a large business database.
const NOUNS: &[&str] = &[
    "account",
    "address",
    "agent",
    "asset",
    "audit",
    "balance",
    "batch",
    "branch",
    "budget",
    "campaign",
    "carrier",
    "category",
    "claim",
    "contract",
    "coupon",
    "customer",
    "device",
    "discount",
    "document",
    "employee",
    "event",
    "invoice",
    "item",
    "ledger",
    "license",
    "member",
    "message",
    "order",
    "partner",
    "payment",
    "policy",
    "price",
    "product",
    "project",
    "quote",
    "region",
    "refund",
    "route",
    "session",
    "shipment",
    "store",
    "subscription",
    "supplier",
    "tax",
    "ticket",
    "vehicle",
    "visit",
    "wallet",
    "warehouse",
    "zone",
];
const QUALIFIERS: &[&str] = &[
    "daily", "monthly", "archive", "stage", "hist", "fact", "dim", "raw", "snapshot", "audit",
    "summary", "detail", "line", "log", "map",
];
const ATTRIBUTES: &[&str] = &[
    "name",
    "code",
    "status",
    "type",
    "amt",
    "qty",
    "created_at",
    "updated_at",
    "dt",
    "desc",
    "total",
    "rate",
    "score",
    "flag",
    "email",
    "phone",
    "city",
    "country",
    "notes",
    "level",
];
const STATUSES: &[&str] = &["active", "closed", "pending review", "on hold", "cancelled"];

/// A small deterministic generator (xorshift), so every run benches the same schema.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 16) as usize
    }

    fn pick<'a>(&mut self, list: &[&'a str]) -> &'a str {
        list[self.next() % list.len()]
    }
}

fn column(name: String, data_type: &str) -> Column {
    Column {
        name,
        data_type: data_type.into(),
        nullable: true,
        default: None,
        comment: None,
        sample_values: Vec::new(),
    }
}

/// 10,000 tables of 5 to 30 columns, comments on a third, foreign keys to
/// earlier tables, sample values on status columns.
fn schema(n: usize) -> Schema {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut tables: Vec<Table> = Vec::with_capacity(n);
    for i in 0..n {
        let name = format!("{}_{}_{i}", rng.pick(NOUNS), rng.pick(QUALIFIERS));
        let mut columns = vec![column("id".into(), "bigint")];
        let mut foreign_keys = Vec::new();
        let width = 5 + rng.next() % 26;
        for c in 1..width {
            if i > 0 && c <= 2 && rng.next().is_multiple_of(2) {
                let target: &Table = &tables[rng.next() % i];
                let name = format!("{}_id", target.name);
                foreign_keys.push(ForeignKey {
                    columns: vec![name.clone()],
                    referenced_schema: "public".into(),
                    referenced_table: target.name.clone(),
                    referenced_columns: vec!["id".into()],
                });
                columns.push(column(name, "bigint"));
                continue;
            }
            let attribute = rng.pick(ATTRIBUTES);
            let mut col = column(format!("{}_{attribute}_{c}", rng.pick(NOUNS)), "text");
            if attribute == "status" {
                col.sample_values = STATUSES.iter().map(|s| (*s).to_owned()).collect();
            }
            if rng.next().is_multiple_of(4) {
                col.comment = Some(format!("the {} of the {}", attribute, rng.pick(NOUNS)));
            }
            columns.push(col);
        }
        let comment = i.is_multiple_of(3).then(|| {
            format!(
                "{} records per {} for the {} team",
                rng.pick(NOUNS),
                rng.pick(NOUNS),
                rng.pick(NOUNS)
            )
        });
        tables.push(Table {
            schema: "public".into(),
            name,
            kind: TableKind::Table,
            comment,
            columns,
            primary_key: vec!["id".into()],
            foreign_keys,
            row_estimate: Some(1000),
        });
    }
    Schema { dialect: Dialect::Postgres, tables }
}

fn bench_retrieve(c: &mut Criterion) {
    let schema = schema(10_000);
    let mut group = c.benchmark_group("retrieve");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    group.bench_function("index/10000_tables", |b| {
        b.iter_batched(|| schema.clone(), |s| black_box(SchemaIndex::new(s)), BatchSize::LargeInput)
    });
    group.finish();

    let index = SchemaIndex::new(schema);
    let options = RetrieveOptions::default();
    let follow_up = RetrieveOptions {
        context: vec!["monthly refund amount per customer region".into()],
        ..RetrieveOptions::default()
    };
    let questions: &[(&str, &str, &RetrieveOptions)] = &[
        ("short", "refunds per region", &options),
        (
            "long",
            "total invoice amount and tax by customer and supplier for pending review orders last month",
            &options,
        ),
        ("abbreviated", "qty of items by warehouse and dt", &options),
        ("follow_up", "and for last year?", &follow_up),
        ("no_match", "xyzzy", &options),
    ];
    let mut group = c.benchmark_group("retrieve/10000_tables");
    group.measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    for (name, question, options) in questions {
        group.bench_function(*name, |b| {
            b.iter(|| black_box(index.retrieve(black_box(question), options)))
        });
    }
    group.finish();

    // The prompt for a follow-up question, built from a retrieval over the same 10,000 tables.
    let question = "and for last year?";
    let history = [Turn {
        question: "monthly refund amount per customer region".into(),
        sql: Some("SELECT region, sum(amount) FROM refunds GROUP BY region".into()),
        answer: Some("12 rows.".into()),
    }];
    let retrieved = index.retrieve(question, &follow_up);
    let mut group = c.benchmark_group("prompt/10000_tables");
    group.measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    group.bench_function("build", |b| {
        b.iter(|| {
            black_box(
                PromptBuilder::new(Dialect::Postgres, black_box(question))
                    .schema_ddl(&retrieved.ddl)
                    .instructions("Revenue means invoice amount minus refunds.")
                    .history(&history)
                    .build(),
            )
        })
    });
    group.bench_function("retrieve_and_build", |b| {
        b.iter(|| {
            let retrieved = index.retrieve(black_box(question), &follow_up);
            black_box(
                PromptBuilder::new(Dialect::Postgres, question)
                    .schema_ddl(&retrieved.ddl)
                    .history(&history)
                    .build(),
            )
        })
    });
    group.finish();
}

criterion_group!(benches, bench_retrieve);
criterion_main!(benches);

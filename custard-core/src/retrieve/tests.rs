use std::collections::BTreeSet;

use super::*;
use crate::{Column, Dialect, ForeignKey, Table, TableKind};

/// A column `name type`, optionally `-- comment`, optionally `= 'a'|'b'` samples.
fn column(spec: &str) -> Column {
    let (spec, samples) = match spec.split_once(" = ") {
        Some((s, v)) => (s, v.split('|').map(|v| v.trim_matches('\'').to_owned()).collect()),
        None => (spec, Vec::new()),
    };
    let (spec, comment) = match spec.split_once(" -- ") {
        Some((s, c)) => (s, Some(c.to_owned())),
        None => (spec, None),
    };
    let (name, data_type) = spec.split_once(' ').unwrap_or((spec, "text"));
    Column {
        name: name.into(),
        data_type: data_type.into(),
        nullable: true,
        default: None,
        comment,
        sample_values: samples,
    }
}

/// A table whose first column is the primary key; `fks` are `column -> table`.
fn table(name: &str, comment: Option<&str>, columns: &[&str], fks: &[(&str, &str)]) -> Table {
    let columns: Vec<Column> = columns.iter().map(|c| column(c)).collect();
    Table {
        schema: "public".into(),
        name: name.into(),
        kind: TableKind::Table,
        comment: comment.map(Into::into),
        primary_key: vec![columns[0].name.clone()],
        columns,
        foreign_keys: fks
            .iter()
            .map(|(col, target)| ForeignKey {
                columns: vec![(*col).into()],
                referenced_schema: "public".into(),
                referenced_table: (*target).into(),
                referenced_columns: vec!["id".into()],
            })
            .collect(),
        row_estimate: Some(1000),
    }
}

/// A small shop, with the habits of real schemas: abbreviations, comments, samples.
fn shop() -> Schema {
    let tables = vec![
        table(
            "customers",
            Some("people and companies who buy from us"),
            &[
                "id integer",
                "cust_nm -- full name",
                "email",
                "city",
                "country = 'Germany'|'France'|'United States'",
                "signup_dt date",
            ],
            &[],
        ),
        table(
            "orders",
            None,
            &[
                "id integer",
                "customer_id integer",
                "employee_id integer",
                "order_dt date",
                "status = 'shipped'|'pending'|'cancelled'",
                "total_amt numeric -- order total in euros",
            ],
            &[("customer_id", "customers"), ("employee_id", "employees")],
        ),
        table(
            "order_items",
            Some("lines of an order"),
            &[
                "id integer",
                "order_id integer",
                "product_id integer",
                "qty integer",
                "unit_price numeric",
                "discount numeric",
            ],
            &[("order_id", "orders"), ("product_id", "products")],
        ),
        table(
            "products",
            None,
            &[
                "id integer",
                "name",
                "category_id integer",
                "supplier_id integer",
                "list_price numeric",
                "discontinued boolean",
            ],
            &[("category_id", "categories"), ("supplier_id", "suppliers")],
        ),
        table(
            "categories",
            Some("product categories"),
            &["id integer", "name = 'Garden Tools'|'Kitchen Appliances'|'Office Supplies'"],
            &[],
        ),
        table(
            "suppliers",
            Some("vendors we buy products from"),
            &["id integer", "company_name", "contact_email", "country"],
            &[],
        ),
        table(
            "employees",
            None,
            &["id integer", "first_name", "last_name", "hire_dt date", "dept"],
            &[],
        ),
        table(
            "payments",
            None,
            &[
                "id integer",
                "order_id integer",
                "paid_at timestamp",
                "method = 'credit card'|'paypal'|'bank transfer'",
                "amount numeric",
            ],
            &[("order_id", "orders")],
        ),
        table(
            "warehouses",
            Some("where stock is kept"),
            &["id integer", "city", "capacity integer"],
            &[],
        ),
        table(
            "stock_levels",
            None,
            &["id integer", "warehouse_id integer", "product_id integer", "on_hand integer"],
            &[("warehouse_id", "warehouses"), ("product_id", "products")],
        ),
        table(
            "newsletter_subscriptions",
            None,
            &["id integer", "email", "subscribed_at timestamp"],
            &[],
        ),
    ];
    Schema { dialect: Dialect::Postgres, tables }
}

fn names(r: &Retrieved) -> Vec<String> {
    r.schema.tables.iter().map(|t| t.name.clone()).collect()
}

/// `question` keeps every table of `expected` among the first `top` tables of `schema`.
fn check_in(
    schema: &Schema,
    question: &str,
    options: &RetrieveOptions,
    top: usize,
    expected: &[&str],
) {
    let found = names(&SchemaIndex::new(schema.clone()).retrieve(question, options));
    let head = &found[..top.min(found.len())];
    for want in expected {
        assert!(
            head.iter().any(|t| t == want),
            "{question:?}: {want} not in top {top} of {found:?}"
        );
    }
}

/// `question` keeps every table of `expected` among the shop's first `top` tables.
fn check(question: &str, top: usize, expected: &[&str]) {
    check_in(&shop(), question, &RetrieveOptions::default(), top, expected);
}

/// As [`check`], for a follow-up to the question `earlier`.
fn follow_up(earlier: &str, question: &str, top: usize, expected: &[&str]) {
    let options = RetrieveOptions { context: vec![earlier.into()], ..RetrieveOptions::default() };
    check_in(&shop(), question, &options, top, expected);
}

/// Under a budget of `budget` tokens, `question` keeps `table` with exactly `columns`.
fn check_columns(question: &str, budget: usize, table: &str, columns: &[&str]) {
    let options = RetrieveOptions { token_budget: budget, ..RetrieveOptions::default() };
    let found = SchemaIndex::new(shop()).retrieve(question, &options);
    let kept = found.schema.tables.iter().find(|t| t.name == table);
    let kept = kept.unwrap_or_else(|| panic!("{question:?}: {table} not in {:?}", names(&found)));
    let names: Vec<&str> = kept.columns.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, columns, "{question:?} at {budget} tokens");
}

#[test]
fn routing() {
    check("How many customers do we have?", 1, &["customers"]);
    check("Which products are discontinued?", 1, &["products"]);
    check("total order amount per customer", 2, &["orders", "customers"]);
    check("list suppliers by country", 1, &["suppliers"]);
    check("average unit price of order lines", 1, &["order_items"]);
    check("employees hired in 2020", 1, &["employees"]);
    check("how much stock is in each warehouse", 2, &["warehouses", "stock_levels"]);
    check("who subscribed to the newsletter", 1, &["newsletter_subscriptions"]);
    check("payments by method", 1, &["payments"]);
    check("HOW MANY ORDERS WERE CANCELLED", 1, &["orders"]);
}

#[test]
fn sample_values_match_as_words_and_phrases() {
    check("sales of Garden Tools last month", 1, &["categories"]);
    check("orders paid by bank transfer", 1, &["payments"]);
    check("customers in the United States", 1, &["customers"]);
    check("how many orders are still pending", 1, &["orders"]);
    check("revenue from Kitchen Appliances", 1, &["categories"]);
}

#[test]
fn abbreviations_and_synonyms() {
    check("customer names", 1, &["customers"]);
    check("quantity sold per product", 2, &["order_items"]);
    check("which clients signed up this year", 1, &["customers"]);
    check("employees by department", 1, &["employees"]);
    check("vendor contact emails", 1, &["suppliers"]);
    check("number of purchases per buyer", 2, &["orders", "customers"]);
}

#[test]
fn time_spans_do_not_pick_tables() {
    let mut schema = shop();
    schema.tables.push(table("days", None, &["day_id integer", "day_name"], &[]));
    let options = RetrieveOptions::default();
    check_in(&schema, "orders in the last 30 days", &options, 1, &["orders"]);
    check_in(&schema, "payments made last month", &options, 1, &["payments"]);
    check_in(&schema, "names of the days", &options, 1, &["days"]);
}

#[test]
fn trimmed_tables_keep_key_matched_and_leading_columns() {
    let all_customers = ["id", "cust_nm", "email", "city", "country", "signup_dt"];
    check_columns("customer names", 60, "customers", &all_customers);
    // Not whole: the key, the matched column and the first few others.
    check_columns("customer names", 57, "customers", &all_customers[..5]);
    // The best table takes as many columns as fit...
    check_columns("customer names", 45, "customers", &all_customers[..4]);
    // ...and at least its key and best-matching column, even over budget.
    check_columns("customer names", 20, "customers", &["id", "cust_nm"]);
    // Foreign keys come right after the best-matching column.
    check_columns("order status", 50, "orders", &["id", "customer_id", "status"]);
    // A later table is trimmed to what fits after the first (orders takes 70 tokens).
    let q = "total order amount per customer";
    check_columns(q, 131, "customers", &all_customers);
    check_columns(q, 127, "customers", &all_customers[..5]);
    check_columns(q, 110, "customers", &["id", "cust_nm"]);
}

#[test]
fn foreign_key_neighbours_are_preferred() {
    // Tables referenced by orders come before unrelated ones.
    let index = SchemaIndex::new(shop());
    let found = names(&index.retrieve("order status", &RetrieveOptions::default()));
    let pos = |t: &str| found.iter().position(|f| f == t).unwrap_or(usize::MAX);
    assert_eq!(pos("orders"), 0, "{found:?}");
    for referenced in ["customers", "employees"] {
        for unrelated in ["warehouses", "newsletter_subscriptions", "suppliers"] {
            assert!(pos(referenced) < pos(unrelated), "{referenced} {unrelated} {found:?}");
        }
    }
}

/// Authors and books joined by a junction table whose name says nothing,
/// with distractors that match the question better than the junction does.
fn library() -> Schema {
    let tables = vec![
        table("authors", None, &["id integer", "name"], &[]),
        table("books", None, &["id integer", "title"], &[]),
        table(
            "authorship",
            None,
            &["id integer", "a_ref integer", "b_ref integer"],
            &[("a_ref", "authors"), ("b_ref", "books")],
        ),
        table(
            "book_reviews",
            None,
            &["id integer", "book_id integer", "stars integer"],
            &[("book_id", "books")],
        ),
        table(
            "author_awards",
            None,
            &["id integer", "author_id integer", "award"],
            &[("author_id", "authors")],
        ),
        table(
            "book_prices",
            None,
            &["id integer", "book_id integer", "price numeric"],
            &[("book_id", "books")],
        ),
    ];
    Schema { dialect: Dialect::Postgres, tables }
}

#[test]
fn bridge_tables_are_pulled_in() {
    let three = RetrieveOptions { max_tables: 3, ..RetrieveOptions::default() };
    let joined = ["authors", "books", "authorship"];
    check_in(&library(), "titles of books by each author", &three, 3, &joined);
    // Not when only one side is kept.
    let two = RetrieveOptions { max_tables: 2, ..RetrieveOptions::default() };
    let found = names(&SchemaIndex::new(library()).retrieve("book review stars", &two));
    assert!(!found.contains(&"authorship".to_owned()), "{found:?}");
}

#[test]
fn joins_are_inferred_when_no_foreign_key_is_declared() {
    let mut schema = Schema {
        dialect: Dialect::Postgres,
        tables: vec![
            table("author", None, &["aid integer", "name"], &[]),
            table("publication", None, &["pid integer", "title", "citation_num integer"], &[]),
            table("writes", None, &["aid integer", "pid integer"], &[]),
            table("cars", None, &["id integer", "make", "model"], &[]),
            table("sales", None, &["id integer", "car_id integer", "sale_price numeric"], &[]),
            table("venue", None, &["vid integer", "city", "capacity integer"], &[]),
        ],
    };
    for t in &mut schema.tables {
        t.primary_key.clear();
    }
    let three = RetrieveOptions { max_tables: 3, ..RetrieveOptions::default() };
    check_in(&schema, "citations of each author", &three, 3, &["author", "publication", "writes"]);
    check_in(&schema, "sale price by make", &three, 2, &["sales", "cars"]);
}

#[test]
fn follow_ups_keep_their_tables() {
    follow_up("total order amount per customer", "and last year?", 2, &["orders", "customers"]);
    follow_up("discontinued products", "only German suppliers", 2, &["suppliers", "products"]);
    // The new question outweighs the context.
    follow_up("total order amount per customer", "list all warehouses", 1, &["warehouses"]);
}

#[test]
fn no_match_returns_hubs() {
    for question in ["", "?", "xyzzy plugh"] {
        let found = SchemaIndex::new(shop()).retrieve(question, &RetrieveOptions::default());
        // orders and products have four foreign-key neighbours each.
        assert_eq!(names(&found)[..2], ["orders", "products"], "{question:?}");
        assert!(found.scores.iter().all(|(_, s)| *s == 0.0));
        assert!(found.estimated_tokens <= 2000);
    }
}

#[test]
fn budget_and_table_limit_are_respected() {
    let index = SchemaIndex::new(shop());
    let questions =
        ["", "customer names", "total order amount per customer", "stock per warehouse"];
    for question in questions {
        for budget in (0..=1200).step_by(15) {
            for max_tables in [1, 3, 12] {
                let options = RetrieveOptions {
                    token_budget: budget,
                    max_tables,
                    ..RetrieveOptions::default()
                };
                let found = index.retrieve(question, &options);
                let n = found.schema.tables.len();
                let at = format!("{question:?} budget {budget} max {max_tables}");
                assert!(n >= 1 && n <= max_tables, "{at}: {n} tables");
                // Only the single best table may exceed the budget.
                assert!(
                    found.estimated_tokens <= budget || n == 1,
                    "{at}: {}",
                    found.estimated_tokens
                );
                assert_eq!(found.ddl, found.schema.to_ddl(&options.ddl), "{at}");
                assert_eq!(
                    found.estimated_tokens,
                    crate::text::estimate_tokens(&found.ddl),
                    "{at}"
                );
                assert_eq!(
                    found.table_names(),
                    found.scores.iter().map(|s| s.0.clone()).collect::<Vec<_>>()
                );
                assert!(
                    found.scores.windows(2).all(|w| w[0].1 >= w[1].1),
                    "{at}: {:?}",
                    found.scores
                );
                for t in &found.schema.tables {
                    for fk in &t.foreign_keys {
                        assert!(
                            fk.columns.iter().all(|c| t.column(c).is_some()),
                            "{at}: {}",
                            t.name
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn deterministic() {
    // Separate indexes, so hash maps are seeded differently.
    let options = RetrieveOptions {
        context: vec!["orders by customer".into()],
        ..RetrieveOptions::default()
    };
    for question in ["total order amount per customer", "Garden Tools", "", "qty per prod"] {
        let a = SchemaIndex::new(shop()).retrieve(question, &options);
        let b = SchemaIndex::new(shop()).retrieve(question, &options);
        assert_eq!(a.scores, b.scores, "{question:?}");
        assert_eq!(a.ddl, b.ddl, "{question:?}");
    }
}

#[test]
fn empty_schema() {
    let found = SchemaIndex::new(Schema::new(Dialect::Sqlite))
        .retrieve("anything", &RetrieveOptions::default());
    assert!(found.schema.tables.is_empty() && found.ddl.is_empty() && found.estimated_tokens == 0);
}

/// A schema of `n` tables named from a word list, with foreign keys to earlier
/// tables, comments on some and samples on a few.
fn generated(n: usize) -> Schema {
    const WORDS: &[&str] = &[
        "account", "address", "agent", "asset", "audit", "balance", "batch", "branch", "budget",
        "campaign", "carrier", "claim", "contract", "coupon", "device", "discount", "document",
        "event", "invoice", "ledger", "license", "member", "message", "partner", "policy",
        "project", "quote", "region", "refund", "route", "session", "shipment", "ticket",
        "vehicle", "visit", "wallet",
    ];
    let word = |i: usize| WORDS[i % WORDS.len()];
    let tables = (0..n)
        .map(|i| {
            let name = format!("{}_{}_{i}", word(i), word(i / WORDS.len() + 7));
            let mut columns = vec!["id integer".to_owned()];
            for c in 0..(5 + i % 20) {
                columns.push(format!("{}_{} text", word(i + c * 3), word(c)));
            }
            let parent = (i > 0).then(|| i * 7919 % i);
            if parent.is_some() {
                columns.push("parent_id integer".into());
            }
            let mut t =
                table(&name, None, &columns.iter().map(String::as_str).collect::<Vec<_>>(), &[]);
            if i.is_multiple_of(3) {
                t.comment = Some(format!("{} records of the {} team", word(i + 5), word(i + 11)));
            }
            if let Some(p) = parent {
                t.foreign_keys.push(ForeignKey {
                    columns: vec!["parent_id".into()],
                    referenced_schema: "public".into(),
                    referenced_table: format!("{}_{}_{p}", word(p), word(p / WORDS.len() + 7)),
                    referenced_columns: vec!["id".into()],
                });
            }
            if i == 4242 {
                t.columns[1].sample_values = vec!["Blue Harbor Logistics".into()];
            }
            t
        })
        .collect();
    Schema { dialect: Dialect::Postgres, tables }
}

#[test]
fn ten_thousand_tables() {
    let index = SchemaIndex::new(generated(10_000));
    let options = RetrieveOptions::default();
    for question in [
        "refunds per region",
        "invoice balance by account",
        "",
        "shipments for Blue Harbor Logistics",
    ] {
        let found = index.retrieve(question, &options);
        assert!(!found.schema.tables.is_empty(), "{question:?}");
        assert!(found.estimated_tokens <= options.token_budget, "{question:?}");
        assert!(found.schema.tables.len() <= options.max_tables);
    }
    let found = index.retrieve("shipments for Blue Harbor Logistics", &options);
    assert!(found.schema.tables[0].name.ends_with("_4242"), "{:?}", found.scores);

    // Without declared foreign keys, joins are inferred from column names.
    let mut schema = generated(10_000);
    schema.tables.iter_mut().for_each(|t| t.foreign_keys.clear());
    let found = SchemaIndex::new(schema).retrieve("refunds per region", &options);
    assert!(!found.schema.tables.is_empty() && found.estimated_tokens <= options.token_budget);
}

/// Recall on the evaluation set in `testdata/`: the share of questions whose gold
/// tables are all retrieved within 2,000 tokens, per database and with all six
/// databases in one schema. Skipped when the set is not there.
mod defog {
    use std::ops::ControlFlow;
    use std::path::{Path, PathBuf};

    use sqlparser::dialect::PostgreSqlDialect;
    use sqlparser::parser::Parser;

    use super::*;

    const DBS: &[&str] = &["academic", "advising", "atis", "broker", "car_dealership", "geography"];

    fn dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/eval/defog")
    }

    /// The tables of one database as described by its metadata file.
    fn tables(db: &str, namespace: &str) -> Vec<Table> {
        let text = std::fs::read_to_string(dir().join(format!("{db}.json"))).unwrap();
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        let mut tables: Vec<Table> = json["table_metadata"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(name, cols)| Table {
                schema: namespace.into(),
                name: name.clone(),
                kind: TableKind::Table,
                comment: None,
                columns: cols
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|c| Column {
                        name: c["column_name"].as_str().unwrap().into(),
                        data_type: c["data_type"].as_str().unwrap().into(),
                        nullable: true,
                        default: None,
                        comment: c["column_description"]
                            .as_str()
                            .filter(|d| !d.is_empty())
                            .map(Into::into),
                        sample_values: Vec::new(),
                    })
                    .collect(),
                primary_key: Vec::new(),
                foreign_keys: Vec::new(),
                row_estimate: None,
            })
            .collect();
        tables.sort_by(|a, b| a.name.cmp(&b.name));
        tables
    }

    /// Lowercase names of the tables of `known` that `sql` reads.
    fn gold_tables(sql: &str, known: &[Table]) -> BTreeSet<String> {
        let statements = Parser::parse_sql(&PostgreSqlDialect {}, sql).unwrap();
        let mut out = BTreeSet::new();
        let _ = sqlparser::ast::visit_relations(&statements, |name| {
            if let Some(last) = name.0.last().and_then(|p| p.as_ident()) {
                let last = last.value.to_lowercase();
                if known.iter().any(|t| t.name.to_lowercase() == last) {
                    out.insert(last);
                }
            }
            ControlFlow::<()>::Continue(())
        });
        out
    }

    struct Question {
        db: String,
        text: String,
        gold: Vec<BTreeSet<String>>,
    }

    fn questions() -> Option<Vec<Question>> {
        let text = std::fs::read_to_string(dir().join("questions.jsonl")).ok()?;
        let mut out = Vec::new();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let q: serde_json::Value = serde_json::from_str(line).unwrap();
            let db = q["db"].as_str().unwrap().to_owned();
            let known = tables(&db, "public");
            let gold = q["gold"]
                .as_array()
                .unwrap()
                .iter()
                .map(|g| gold_tables(g.as_str().unwrap(), &known))
                .collect();
            out.push(Question { db, text: q["question"].as_str().unwrap().into(), gold });
        }
        Some(out)
    }

    /// Whether some gold variant's tables (of `db`) are all in `found` (lowercase `schema.table`).
    fn hit(q: &Question, namespace: &str, found: &[String]) -> bool {
        q.gold.iter().any(|g| g.iter().all(|t| found.contains(&format!("{namespace}.{t}"))))
    }

    fn lower(r: &Retrieved) -> Vec<String> {
        r.table_names().iter().map(|t| t.to_lowercase()).collect()
    }

    #[test]
    fn recall() {
        let questions = questions().expect("the evaluation set in testdata/eval/defog");
        let budget = std::env::var("RETRIEVE_BUDGET").ok().and_then(|b| b.parse().ok());
        let max_tables = std::env::var("RETRIEVE_MAX_TABLES").ok().and_then(|b| b.parse().ok());
        let options = RetrieveOptions {
            token_budget: budget.unwrap_or(2000),
            max_tables: max_tables.unwrap_or(12),
            ..RetrieveOptions::default()
        };
        let verbose = std::env::var_os("RETRIEVE_VERBOSE").is_some();
        let mut report = Vec::new();
        let (mut all_hits, mut all_n) = (0, 0);
        for db in DBS {
            let index = SchemaIndex::new(Schema {
                dialect: Dialect::Postgres,
                tables: tables(db, "public"),
            });
            let asked: Vec<&Question> = questions.iter().filter(|q| q.db == *db).collect();
            let mut hits = 0;
            for q in &asked {
                let r = index.retrieve(&q.text, &options);
                assert!(r.estimated_tokens <= options.token_budget);
                if hit(q, "public", &lower(&r)) {
                    hits += 1;
                } else if verbose {
                    println!("MISS {db}: {} gold {:?} got {:?}", q.text, q.gold[0], r.scores);
                }
            }
            report.push(format!("{db} {hits}/{}", asked.len()));
            all_hits += hits;
            all_n += asked.len();
        }
        // Neutral namespaces, so that a database's name does not help its tables.
        let neutral = std::env::var_os("RETRIEVE_NEUTRAL").is_some();
        let namespace = |db: &str| match DBS.iter().position(|d| *d == db) {
            Some(i) if neutral => format!("db{i}"),
            _ => db.to_owned(),
        };
        let mut union = Vec::new();
        for db in DBS {
            union.extend(tables(db, &namespace(db)));
        }
        let index = SchemaIndex::new(Schema { dialect: Dialect::Postgres, tables: union });
        let (mut union_hits, mut tokens, mut kept) = (0, 0, 0);
        for q in &questions {
            let r = index.retrieve(&q.text, &options);
            tokens += r.estimated_tokens;
            kept += r.schema.tables.len();
            assert!(r.estimated_tokens <= options.token_budget);
            if hit(q, &namespace(&q.db), &lower(&r)) {
                union_hits += 1;
            } else if verbose {
                println!("UNION MISS {}: {} gold {:?} got {:?}", q.db, q.text, q.gold[0], r.scores);
            }
        }
        let per_db = all_hits as f64 / all_n as f64;
        let union = union_hits as f64 / questions.len() as f64;
        let b = options.token_budget;
        println!("recall@{b} per db: {} -> {per_db:.3}", report.join(", "));
        let n = questions.len();
        println!(
            "recall@{b} union: {union_hits}/{n} -> {union:.3} (mean {} tables, {} tokens)",
            kept / n,
            tokens / n
        );
        if budget.is_none() && max_tables.is_none() {
            assert!(union >= 0.95, "union recall {union:.3}");
        }
    }
}

/// Catalogs that fold unquoted names to lower case glue words together
/// (`sbCustomer` becomes `sbcustomer`); the words inside must still match.
#[test]
fn words_glued_inside_lowercase_names_match() {
    let schema = Schema {
        dialect: Dialect::Postgres,
        tables: vec![
            table("sbcustomer", None, &["sbcustid", "sbcustname", "sbcustcountry"], &[]),
            table("sbtransaction", None, &["sbtxid", "sbtxcustid", "sbtxamount numeric"], &[]),
            table("sbticker", None, &["sbtickerid", "sbtickersymbol"], &[]),
            table("venue", None, &["vid integer", "city"], &[]),
            table("lake", None, &["name", "area numeric"], &[]),
        ],
    };
    let two = RetrieveOptions { max_tables: 2, ..RetrieveOptions::default() };
    check_in(
        &schema,
        "transactions per customer country",
        &two,
        2,
        &["sbtransaction", "sbcustomer"],
    );
    check_in(&schema, "list every ticker symbol", &two, 1, &["sbticker"]);
    let found = SchemaIndex::new(schema).retrieve("ticker symbols", &two);
    assert_eq!(found.scores.first().map(|(t, _)| t.as_str()), Some("public.sbticker"));
    assert!(
        found.scores[0].1 > 0.0,
        "matched by its words, not picked as a fallback: {:?}",
        found.scores
    );
}

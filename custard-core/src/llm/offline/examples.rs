//! Example questions for a schema that the offline engine answers.
//!
//! The candidates are the question shapes the engine reads (which parent has
//! the most children, top N by a measure, counts per group, counts, recent
//! rows, totals per parent, averages), written with the schema's own table
//! and column names about its most connected tables. A candidate is kept only
//! when it goes through what the ask pipeline does before running anything:
//! retrieval, the engine's plan and the guard. Nothing is run.

use super::catalog::{Catalog, Kind};
use super::write_sql;
use crate::{Guard, RetrieveOptions, Schema, SchemaIndex, Table};

/// The most tables questions are written about: the most connected ones.
const TABLES: usize = 6;
/// The most candidates checked, to bound the work on wide schemas.
const MAX_CHECKED: usize = 60;
/// Longer candidates make poor examples.
const MAX_LENGTH: usize = 80;

/// A question shape, in the order the examples show them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Shape {
    /// "Which customer has the most orders?"
    MostChildren,
    /// "Top 5 products by unit price"
    Ranking,
    /// "How many orders per status?"
    CountPer,
    /// "How many customers are there?"
    Count,
    /// "How many orders in the last 30 days?"
    Recent,
    /// "What is the total quantity per product?"
    TotalPer,
    /// "What is the average unit price of products?"
    Average,
}

const SHAPES: [Shape; 7] = [
    Shape::MostChildren,
    Shape::Ranking,
    Shape::CountPer,
    Shape::Count,
    Shape::Recent,
    Shape::TotalPer,
    Shape::Average,
];

/// A question to check, about table `table` (an index in the sub-schema).
#[derive(Debug)]
struct Candidate {
    shape: Shape,
    table: usize,
    /// Whether its answer names rows (products by name rather than by id):
    /// the better example of its shape.
    named: bool,
    text: String,
}

/// Up to `max` questions about `index`'s schema that the engine plans into
/// SQL the guard accepts, after the default retrieval, as the ask pipeline
/// would; varied in shape and table.
pub(super) fn example_questions(index: &SchemaIndex, max: usize) -> Vec<String> {
    let schema = index.schema();
    if max == 0 || schema.tables.is_empty() {
        return Vec::new();
    }
    let Ok(guard) = Guard::builder(schema.dialect).schema(schema.clone()).build() else {
        return Vec::new();
    };
    let options = RetrieveOptions::default();
    let answers = |question: &str| {
        let retrieved = index.retrieve(question, &options);
        write_sql(question, &retrieved.schema, schema.dialect)
            .is_ok_and(|sql| guard.check(&sql).is_ok())
    };
    // Only the chosen tables are read closely, so a wide schema costs no more.
    let tables = busiest_tables(schema, TABLES);
    let sub = Schema {
        dialect: schema.dialect,
        tables: tables.iter().map(|&t| schema.tables[t].clone()).collect(),
    };
    pick(candidates(&sub), max, answers)
}

/// Picks up to `max` candidates that `answers` accepts: one of each shape per
/// round, about the tables used least so far, checking at most [`MAX_CHECKED`].
fn pick(candidates: Vec<Candidate>, max: usize, answers: impl Fn(&str) -> bool) -> Vec<String> {
    let mut by_shape: Vec<Vec<Option<Candidate>>> = SHAPES
        .iter()
        .map(|s| candidates.iter().filter(|c| c.shape == *s).map(|_| None).collect())
        .collect();
    for c in candidates {
        let shape = SHAPES.iter().position(|s| *s == c.shape).unwrap_or_default();
        if let Some(slot) = by_shape[shape].iter_mut().find(|s| s.is_none()) {
            *slot = Some(c);
        }
    }
    let mut out: Vec<String> = Vec::new();
    let mut used: Vec<usize> = Vec::new();
    let mut checked = 0;
    loop {
        let before = out.len();
        for list in &mut by_shape {
            if out.len() >= max || checked >= MAX_CHECKED {
                return out;
            }
            let uses = |t: usize| used.iter().filter(|u| **u == t).count();
            let mut order: Vec<usize> = (0..list.len()).filter(|&i| list[i].is_some()).collect();
            order.sort_by_key(|&i| list[i].as_ref().map(|c| (uses(c.table), !c.named)));
            for i in order {
                let Some(c) = list[i].take() else { continue };
                if checked >= MAX_CHECKED {
                    break;
                }
                checked += 1;
                if !out.contains(&c.text) && answers(&c.text) {
                    used.push(c.table);
                    out.push(c.text);
                    break;
                }
            }
        }
        if out.len() == before {
            return out;
        }
    }
}

/// The indexes of up to `n` tables, the most connected first: referenced by
/// other tables' foreign keys, referencing others, with columns to read.
fn busiest_tables(schema: &Schema, n: usize) -> Vec<usize> {
    let mut referenced = vec![0usize; schema.tables.len()];
    for t in &schema.tables {
        for fk in &t.foreign_keys {
            if let Some(p) = schema
                .tables
                .iter()
                .position(|r| r.schema == fk.referenced_schema && r.name == fk.referenced_table)
            {
                referenced[p] += 1;
            }
        }
    }
    let mut order: Vec<(usize, usize)> = schema
        .tables
        .iter()
        .enumerate()
        .filter(|(_, t)| !t.columns.is_empty())
        .map(|(i, t)| {
            (i, 2 * referenced[i] + t.foreign_keys.len() + usize::from(t.columns.len() > 1))
        })
        .collect();
    // Stable: among equals, the schema's order.
    order.sort_by_key(|(_, score)| std::cmp::Reverse(*score));
    order.into_iter().take(n).map(|(i, _)| i).collect()
}

/// Every candidate about the tables of `schema`.
fn candidates(schema: &Schema) -> Vec<Candidate> {
    let cat = Catalog::new(schema);
    let mut out = Vec::new();
    let mut add = |shape: Shape, table: usize, text: String| {
        if text.len() <= MAX_LENGTH {
            let named = cat.has_name_column(table);
            out.push(Candidate { shape, table, named, text });
        }
    };
    for (t, table) in schema.tables.iter().enumerate() {
        let info = &cat.tables[t];
        let plural = table_words(table, true);
        let singular = table_words(table, false);
        if plural.is_empty() {
            continue;
        }
        let columns = || table.columns.iter().zip(&info.columns);
        let measures: Vec<String> = columns()
            .filter(|(c, i)| i.kind == Kind::Number && !i.is_key && !flag_like(&c.name))
            .map(|(c, _)| spoken(&c.name))
            .collect();
        // Text columns with few values (sampled) group well; names and notes do not.
        let mut groups: Vec<(bool, String)> = columns()
            .filter(|(c, i)| i.kind == Kind::Text && !i.is_key && !free_text(&c.name))
            .map(|(c, _)| (c.sample_values.is_empty(), spoken(&c.name)))
            .collect();
        groups.sort_by_key(|(unsampled, _)| *unsampled);
        add(Shape::Count, t, format!("How many {plural} are there?"));
        for (_, group) in &groups {
            add(Shape::CountPer, t, format!("How many {plural} per {group}?"));
        }
        for measure in &measures {
            add(Shape::Ranking, t, format!("Top 5 {plural} by {measure}"));
            add(Shape::Average, t, format!("What is the average {measure} of {plural}?"));
        }
        if info.columns.iter().any(|c| c.kind == Kind::Date) {
            add(Shape::Recent, t, format!("How many {plural} in the last 30 days?"));
        }
        for link in &info.parents {
            let parent = table_words(&schema.tables[link.parent], false);
            if parent.is_empty() || parent == singular {
                continue;
            }
            add(Shape::MostChildren, link.parent, format!("Which {parent} has the most {plural}?"));
            for measure in &measures {
                // Not "the total total amount".
                let total = if measure.starts_with("total ") { "sum of" } else { "total" };
                let text = format!("What is the {total} {measure} per {parent}?");
                add(Shape::TotalPer, link.parent, text);
            }
        }
    }
    out
}

/// A table's name as words, its last word made plural or singular.
fn table_words(table: &Table, plural: bool) -> String {
    let mut words = identifier_words(&table.name);
    if let Some(last) = words.last_mut() {
        *last = if plural { plural_of(last) } else { singular_of(last) };
    }
    words.join(" ")
}

/// An identifier as lower-case words: `unit_price` and `unitPrice` are "unit price".
fn spoken(name: &str) -> String {
    identifier_words(name).join(" ")
}

/// The lower-case words of an identifier, split at anything not a letter or
/// digit and where lower case turns upper (`orderDate`).
fn identifier_words(name: &str) -> Vec<String> {
    let mut words: Vec<String> = Vec::new();
    let mut current = String::new();
    let mut previous_lower = false;
    for c in name.chars() {
        if !c.is_alphanumeric() {
            previous_lower = false;
            if !current.is_empty() {
                words.push(std::mem::take(&mut current));
            }
            continue;
        }
        if c.is_uppercase() && previous_lower && !current.is_empty() {
            words.push(std::mem::take(&mut current));
        }
        previous_lower = c.is_lowercase() || c.is_ascii_digit();
        current.extend(c.to_lowercase());
    }
    if !current.is_empty() {
        words.push(current);
    }
    words
}

/// An English plural, by the common rules (`category` to "categories").
fn plural_of(word: &str) -> String {
    let consonant_y = word.len() > 1
        && word.ends_with('y')
        && !word[..word.len() - 1].ends_with(['a', 'e', 'i', 'o', 'u']);
    if word.ends_with('s') && !word.ends_with("ss") {
        word.to_owned()
    } else if consonant_y {
        format!("{}ies", &word[..word.len() - 1])
    } else if word.ends_with(['x', 'z'])
        || word.ends_with("ss")
        || word.ends_with("sh")
        || word.ends_with("ch")
    {
        format!("{word}es")
    } else {
        format!("{word}s")
    }
}

/// An English singular, by the common rules (`categories` to "category").
fn singular_of(word: &str) -> String {
    if let Some(stem) = word.strip_suffix("ies").filter(|s| !s.is_empty()) {
        format!("{stem}y")
    } else if let Some(stem) = ["sses", "shes", "ches", "xes"]
        .iter()
        .find_map(|s| word.strip_suffix(s).map(|stem| (stem, s)))
        .map(|(stem, s)| format!("{stem}{}", &s[..s.len() - 2]))
    {
        stem
    } else if word.len() > 3
        && word.ends_with('s')
        && !word.ends_with("ss")
        && !word.ends_with("us")
    {
        word[..word.len() - 1].to_owned()
    } else {
        word.to_owned()
    }
}

/// A number column that reads as a yes/no or a place (`is_active`, `in_stock`):
/// no measure to rank or average by.
fn flag_like(name: &str) -> bool {
    matches!(identifier_words(name).first().map(String::as_str), Some("is" | "has" | "in" | "can"))
}

/// A text column of free text or identities (names, emails, notes), which
/// makes no group.
fn free_text(name: &str) -> bool {
    const FREE: &[&str] = &[
        "name",
        "title",
        "email",
        "mail",
        "description",
        "note",
        "notes",
        "comment",
        "address",
        "phone",
        "url",
        "password",
        "hash",
        "token",
        "text",
        "body",
        "message",
    ];
    identifier_words(name).last().is_some_and(|w| FREE.contains(&w.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Column, Dialect, ForeignKey, TableKind};

    fn column(name: &str, data_type: &str, samples: &[&str]) -> Column {
        Column {
            sample_values: samples.iter().map(|s| (*s).to_owned()).collect(),
            ..Column::new(name, data_type)
        }
    }

    fn table(name: &str, columns: Vec<Column>, fks: &[(&str, &str)]) -> Table {
        Table {
            schema: "main".to_owned(),
            name: name.to_owned(),
            kind: TableKind::Table,
            comment: None,
            columns,
            primary_key: vec!["id".to_owned()],
            foreign_keys: fks
                .iter()
                .map(|(c, t)| ForeignKey {
                    columns: vec![(*c).to_owned()],
                    referenced_schema: "main".to_owned(),
                    referenced_table: (*t).to_owned(),
                    referenced_columns: vec!["id".to_owned()],
                })
                .collect(),
            row_estimate: None,
        }
    }

    /// A library, not a shop: nothing here is written for one schema.
    fn library() -> Schema {
        Schema {
            dialect: Dialect::Sqlite,
            tables: vec![
                table(
                    "authors",
                    vec![
                        column("id", "INTEGER", &[]),
                        column("name", "TEXT", &[]),
                        column("nationality", "TEXT", &["French", "Irish"]),
                    ],
                    &[],
                ),
                table(
                    "books",
                    vec![
                        column("id", "INTEGER", &[]),
                        column("author_id", "INTEGER", &[]),
                        column("title", "TEXT", &[]),
                        column("genre", "TEXT", &["poetry", "novel"]),
                        column("page_count", "INTEGER", &[]),
                        column("published_on", "DATE", &[]),
                    ],
                    &[("author_id", "authors")],
                ),
                table(
                    "loans",
                    vec![
                        column("id", "INTEGER", &[]),
                        column("book_id", "INTEGER", &[]),
                        column("loaned_at", "DATE", &[]),
                        column("isReturned", "INTEGER", &[]),
                    ],
                    &[("book_id", "books")],
                ),
            ],
        }
    }

    #[test]
    fn examples_are_varied_and_each_one_plans_and_passes_the_guard() {
        let schema = library();
        let index = SchemaIndex::new(schema.clone());
        let examples = example_questions(&index, 5);
        assert!((3..=5).contains(&examples.len()), "{examples:?}");
        let guard = Guard::builder(Dialect::Sqlite).schema(schema.clone()).build().expect("guard");
        for question in &examples {
            let sql = write_sql(question, &schema, Dialect::Sqlite)
                .unwrap_or_else(|e| panic!("{question}: abstained ({})", e.reason));
            assert!(guard.check(&sql).is_ok(), "{question}: {sql}");
        }
        assert!(examples.iter().any(|q| q.contains("author")), "{examples:?}");
        assert!(examples.iter().any(|q| q.contains("book")), "{examples:?}");
        assert!(!examples.iter().any(|q| q.contains("returned")), "a flag is no measure");
        assert!(example_questions(&index, 2).len() == 2);
        assert!(example_questions(&index, 0).is_empty());
    }

    #[test]
    fn a_schema_with_nothing_to_ask_gives_no_examples() {
        let empty = SchemaIndex::new(Schema { dialect: Dialect::Postgres, tables: Vec::new() });
        assert!(example_questions(&empty, 5).is_empty());
    }

    #[test]
    fn only_accepted_candidates_are_kept_one_shape_per_round() {
        let candidate =
            |shape, table, text: &str| Candidate { shape, table, named: false, text: text.into() };
        let candidates = vec![
            candidate(Shape::Count, 0, "count a"),
            candidate(Shape::Count, 1, "count b"),
            candidate(Shape::Ranking, 0, "rank a"),
            candidate(Shape::Ranking, 1, "rank b"),
            candidate(Shape::Average, 0, "no"),
        ];
        let picked = pick(candidates, 3, |q| q != "no");
        // Ranking comes first; the count is about the table not used yet.
        assert_eq!(picked, ["rank a", "count b", "rank b"]);
    }

    #[test]
    fn names_are_spoken_words() {
        assert_eq!(spoken("unit_price"), "unit price");
        assert_eq!(spoken("orderDate"), "order date");
        assert_eq!(spoken("HTTPStatus"), "httpstatus");
        let t = |name: &str| Table::new("main", name, Vec::new());
        assert_eq!(table_words(&t("order_items"), true), "order items");
        assert_eq!(table_words(&t("order_items"), false), "order item");
        assert_eq!(table_words(&t("category"), true), "categories");
        assert_eq!(table_words(&t("categories"), false), "category");
        assert_eq!(table_words(&t("boxes"), false), "box");
        assert_eq!(table_words(&t("status"), false), "status");
        assert_eq!(table_words(&t("address"), true), "addresses");
        assert_eq!(table_words(&t("day"), true), "days");
    }
}

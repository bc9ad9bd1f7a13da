//! The schema as the offline engine sees it: every table and column as a list
//! of normalized words, a coarse type, and the foreign keys usable as joins.

use crate::text::{stem, words};
use crate::{Schema, Table};

/// Index of a table in the schema.
pub(super) type TableId = usize;
/// A column: (table index, column index).
pub(super) type ColId = (usize, usize);
/// How well words match a name: 3 exactly, 2 up to generic words such as
/// `id` or `name`, 1 up to other words.
pub(super) type Tier = u8;

/// The coarse type of a column, which decides what the engine does with it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    Number,
    Text,
    Date,
    Bool,
    Other,
}

/// A many-to-one link from a table to its parent, through a one-column key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Link {
    pub(super) child: TableId,
    pub(super) column: usize,
    pub(super) parent: TableId,
    pub(super) parent_column: usize,
}

#[derive(Debug)]
pub(super) struct ColumnInfo {
    pub(super) words: Vec<String>,
    pub(super) kind: Kind,
    /// Part of a primary or foreign key, or named like an id: never a measure.
    pub(super) is_key: bool,
}

#[derive(Debug)]
pub(super) struct TableInfo {
    pub(super) words: Vec<String>,
    pub(super) columns: Vec<ColumnInfo>,
    /// Parents reachable through exactly one foreign key.
    pub(super) parents: Vec<Link>,
    /// The single-column primary key, if any.
    pub(super) key: Option<usize>,
}

#[derive(Debug)]
pub(super) struct Catalog<'s> {
    pub(super) schema: &'s Schema,
    pub(super) tables: Vec<TableInfo>,
}

/// Words a column name may carry besides its meaning (`country_name` is the country).
const GENERIC: &[&str] = &["code", "id", "name", "number"];

/// Suffixes split off glued names such as `sbtxcustid` (`cust`, `id`).
const GLUED_SUFFIXES: &[&str] = &["date", "code", "name", "time", "type", "num", "id"];

/// Common abbreviations in column names, and what they stand for.
const ABBREVIATIONS: &[(&str, &str)] = &[
    ("acct", "account"),
    ("addr", "address"),
    ("amt", "amount"),
    ("ccy", "currency"),
    ("cust", "customer"),
    ("dept", "department"),
    ("desc", "description"),
    ("dt", "date"),
    ("emp", "employee"),
    ("nbr", "number"),
    ("num", "number"),
    ("org", "organization"),
    ("qty", "quantity"),
    ("tx", "transaction"),
    ("txn", "transaction"),
    ("yr", "year"),
];

/// A normalized word in the form both names and questions are compared in.
pub(super) fn canon(word: &str) -> String {
    // The shared stemmer leaves words of three letters alone.
    let w = if word == "ids" { "id".to_owned() } else { stem(word) };
    match ABBREVIATIONS.iter().find(|(short, _)| *short == w) {
        Some((_, long)) => (*long).to_owned(),
        None => w,
    }
}

/// Whether two normalized words are the same word.
pub(super) fn same_word(a: &str, b: &str) -> bool {
    // The shared stemmer turns "statuses" into "statuse".
    let plural_us =
        |x: &str, y: &str| x.strip_suffix('e').is_some_and(|s| s == y && y.ends_with("us"));
    a == b || plural_us(a, b) || plural_us(b, a)
}

pub(super) fn is_generic(word: &str) -> bool {
    GENERIC.contains(&word)
}

impl<'s> Catalog<'s> {
    pub(super) fn new(schema: &'s Schema) -> Self {
        let table_prefix = glued_prefix(schema.tables.iter().map(|t| t.name.as_str()), 2);
        let mut tables: Vec<TableInfo> = schema
            .tables
            .iter()
            .map(|t| {
                let words = match &table_prefix {
                    Some(p) => name_words(&t.name[p.len()..]),
                    None => name_words(&t.name),
                };
                let column_prefix = table_prefix
                    .as_ref()
                    .and_then(|_| glued_prefix(t.columns.iter().map(|c| c.name.as_str()), 3));
                let columns = t
                    .columns
                    .iter()
                    .map(|c| {
                        let words = match &column_prefix {
                            Some(p) => glued_words(&c.name[p.len()..]),
                            None => name_words(&c.name),
                        };
                        let in_key = t.primary_key.contains(&c.name)
                            || t.foreign_keys.iter().any(|fk| fk.columns.contains(&c.name));
                        let is_key = in_key || words.last().is_some_and(|w| w == "id");
                        ColumnInfo { kind: kind_of(&c.data_type), words, is_key }
                    })
                    .collect();
                let key = match t.primary_key.as_slice() {
                    [one] => t.columns.iter().position(|c| &c.name == one),
                    _ => None,
                };
                TableInfo { words, columns, parents: Vec::new(), key }
            })
            .collect();
        let mut all_links: Vec<Vec<Link>> =
            schema.tables.iter().enumerate().map(|(i, t)| declared_links(schema, i, t)).collect();
        for (i, links) in all_links.iter_mut().enumerate() {
            links.extend(named_links(&tables, i, links));
        }
        for (info, mut links) in tables.iter_mut().zip(all_links) {
            // A parent reached two ways (billing and shipping address) is no join to guess.
            let parents: Vec<TableId> = links.iter().map(|l| l.parent).collect();
            links.retain(|l| parents.iter().filter(|p| **p == l.parent).count() == 1);
            info.parents = links;
        }
        Catalog { schema, tables }
    }

    pub(super) fn table(&self, t: TableId) -> &Table {
        &self.schema.tables[t]
    }

    pub(super) fn column(&self, (t, c): ColId) -> &ColumnInfo {
        &self.tables[t].columns[c]
    }

    pub(super) fn column_name(&self, (t, c): ColId) -> &str {
        &self.schema.tables[t].columns[c].name
    }

    /// The link from `child` to `parent`, if `parent` is one foreign key away.
    pub(super) fn link(&self, child: TableId, parent: TableId) -> Option<Link> {
        self.tables[child].parents.iter().find(|l| l.parent == parent).copied()
    }

    /// Tables whose name the words `seg` spell, with how well.
    pub(super) fn table_matches(&self, seg: &[String]) -> Vec<(TableId, Tier)> {
        let mut out = Vec::new();
        for (i, t) in self.tables.iter().enumerate() {
            let (seg_used, name_used) = cover(seg, &t.words);
            if seg_used.iter().all(|u| *u) && name_used.iter().any(|u| *u) {
                out.push((i, if name_used.iter().all(|u| *u) { 3 } else { 2 }));
            }
        }
        out
    }

    /// Columns whose name the words `seg` spell (optionally with their table's
    /// name, as in "customer name"), with how well.
    pub(super) fn column_matches(&self, seg: &[String]) -> Vec<(ColId, Tier)> {
        let mut out = Vec::new();
        for (ti, t) in self.tables.iter().enumerate() {
            for (ci, c) in t.columns.iter().enumerate() {
                if let Some(tier) = column_tier(seg, &c.words, &t.words) {
                    out.push(((ti, ci), tier));
                }
            }
        }
        out
    }

    /// The columns a person would want to see for a row: the key and the
    /// table's own name (`name`, `city_name` in `city`), else every name-like column.
    pub(super) fn readable_columns(&self, t: TableId) -> Vec<usize> {
        let info = &self.tables[t];
        let named: Vec<usize> = (0..info.columns.len())
            .filter(|&c| {
                let col = &info.columns[c];
                col.kind == Kind::Text
                    && col.words.last().is_some_and(|w| w == "name" || w == "title")
            })
            .collect();
        let own: Vec<usize> = named
            .iter()
            .copied()
            .filter(|&c| {
                let words = &info.columns[c].words;
                words[..words.len() - 1].iter().all(|w| info.words.iter().any(|t| same_word(t, w)))
            })
            .collect();
        let mut out: Vec<usize> = info.key.into_iter().collect();
        let names = if own.is_empty() { named } else { own };
        out.extend(names.into_iter().filter(|c| Some(*c) != info.key));
        out
    }

    /// Whether the table has a name-like text column (`name`, `title`, `first_name`...).
    pub(super) fn has_name_column(&self, t: TableId) -> bool {
        self.readable_columns(t).iter().any(|&c| Some(c) != self.tables[t].key)
    }
}

/// How well `seg` names the column with words `col` in a table with words `table`.
fn column_tier(seg: &[String], col: &[String], table: &[String]) -> Option<Tier> {
    let (seg_used, col_used) = cover(seg, col);
    if !col_used.iter().any(|u| *u) {
        return None;
    }
    let rest: Vec<String> =
        seg.iter().zip(&seg_used).filter(|(_, u)| !**u).map(|(w, _)| w.clone()).collect();
    let (rest_used, _) = cover(&rest, table);
    let mut tier = 3;
    for (w, used) in rest.iter().zip(rest_used) {
        if !used {
            if !is_generic(w) {
                return None;
            }
            tier = 2;
        }
    }
    let first_used = col_used.iter().position(|u| *u).unwrap_or(0);
    for (k, (w, used)) in col.iter().zip(&col_used).enumerate() {
        // `city_name` in `city` is the name; `airline_flight` in `flight` is a flight.
        let leading_table_word = k < first_used && table.iter().any(|t| same_word(t, w));
        if *used || leading_table_word {
            continue;
        }
        tier = tier.min(if is_generic(w) { 2 } else { 1 });
    }
    Some(tier)
}

/// Marks which words of `seg` and of `name` match each other; a name word may
/// also match several consecutive words glued together ("daily price", `dailyprice`).
pub(super) fn cover(seg: &[String], name: &[String]) -> (Vec<bool>, Vec<bool>) {
    let mut seg_used = vec![false; seg.len()];
    let mut name_used = vec![false; name.len()];
    let mut i = 0;
    while i < seg.len() {
        let mut advanced = false;
        for k in (1..=3.min(seg.len() - i)).rev() {
            let joined: String = seg[i..i + k].concat();
            let found = (0..name.len()).find(|&j| {
                !name_used[j]
                    && if k == 1 { same_word(&seg[i], &name[j]) } else { name[j] == joined }
            });
            if let Some(j) = found {
                name_used[j] = true;
                seg_used[i..i + k].iter_mut().for_each(|u| *u = true);
                i += k;
                advanced = true;
                break;
            }
        }
        if !advanced {
            i += 1;
        }
    }
    (seg_used, name_used)
}

/// The normalized words of an identifier.
fn name_words(name: &str) -> Vec<String> {
    words(name).iter().map(|w| canon(w)).collect()
}

/// Splits the meaningful part of a glued name (`custid`, `address1`) into words.
fn glued_words(rest: &str) -> Vec<String> {
    let mut out = Vec::new();
    for part in words(rest) {
        if part.chars().all(|c| c.is_ascii_digit()) {
            out.push(part);
            continue;
        }
        match GLUED_SUFFIXES
            .iter()
            .find_map(|s| part.strip_suffix(s).filter(|h| h.len() >= 2).map(|h| (h, s)))
        {
            Some((head, suffix)) => out.extend([canon(head), canon(suffix)]),
            None => out.push(canon(&part)),
        }
    }
    out
}

/// The prefix shared by glued lower-case names such as `sbcustomer` and
/// `sbticker`, when every name is one lower-case word (digits aside) and the
/// prefix is a naming convention rather than part of a word.
fn glued_prefix<'a>(names: impl Iterator<Item = &'a str>, min_names: usize) -> Option<String> {
    let names: Vec<&str> = names.collect();
    let glued = |n: &&str| n.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if names.len() < min_names || !names.iter().all(glued) {
        return None;
    }
    let first = names.first()?;
    let mut len = first.len();
    for n in &names[1..] {
        len = len.min(first.bytes().zip(n.bytes()).take_while(|(a, b)| a == b).count());
    }
    let prefix = first.get(..len)?;
    let ok = len >= 2
        && prefix.chars().all(|c| c.is_ascii_lowercase())
        && names.iter().all(|n| n.len() >= len + 2);
    ok.then(|| prefix.to_owned())
}

fn kind_of(data_type: &str) -> Kind {
    let t = data_type.to_ascii_lowercase();
    let any = |names: &[&str]| names.iter().any(|n| t.contains(n));
    // Text before numbers: `tinytext` contains "int".
    if t.starts_with("bool") {
        Kind::Bool
    } else if t.starts_with("date") || t.starts_with("timestamp") {
        Kind::Date
    } else if any(&["char", "text", "clob", "string"]) {
        Kind::Text
    } else if any(&["interval", "range", "point"]) {
        Kind::Other
    } else if any(&["int", "numeric", "decimal", "real", "double", "float", "money", "number"]) {
        Kind::Number
    } else {
        Kind::Other
    }
}

/// The one-column foreign keys of table `i` (to other tables).
fn declared_links(schema: &Schema, i: TableId, t: &Table) -> Vec<Link> {
    let mut out: Vec<Link> = Vec::new();
    for fk in &t.foreign_keys {
        let ([column], [parent_column]) = (fk.columns.as_slice(), fk.referenced_columns.as_slice())
        else {
            continue;
        };
        let Some(p) = schema
            .tables
            .iter()
            .position(|r| r.schema == fk.referenced_schema && r.name == fk.referenced_table)
        else {
            continue;
        };
        let (Some(c), Some(pc)) = (
            t.columns.iter().position(|x| &x.name == column),
            schema.tables[p].columns.iter().position(|x| &x.name == parent_column),
        ) else {
            continue;
        };
        if p != i {
            out.push(Link { child: i, column: c, parent: p, parent_column: pc });
        }
    }
    out
}

/// Links the schema does not declare but the names spell out: `customer_id`
/// in `orders` and the key `id` of `customers` (same type, one such table).
fn named_links(tables: &[TableInfo], i: TableId, declared: &[Link]) -> Vec<Link> {
    let mut out = Vec::new();
    for (c, col) in tables[i].columns.iter().enumerate() {
        let Some((last, head)) = col.words.split_last() else { continue };
        if last != "id" || head.is_empty() || declared.iter().any(|l| l.column == c) {
            continue;
        }
        let parents: Vec<TableId> =
            (0..tables.len()).filter(|&p| p != i && tables[p].words == head).collect();
        let [p] = parents.as_slice() else { continue };
        let parent = &tables[*p];
        let keys: Vec<usize> = (0..parent.columns.len())
            .filter(|&k| {
                let w = &parent.columns[k].words;
                (parent.key == Some(k) || w.len() == 1 || w[..w.len() - 1] == *head)
                    && w.last().is_some_and(|x| x == "id")
                    && parent.columns[k].kind == col.kind
            })
            .collect();
        if let [k] = keys.as_slice() {
            out.push(Link { child: i, column: c, parent: *p, parent_column: *k });
        }
    }
    out
}

//! Plain-language answer text built from the result itself, so it cannot
//! misstate a number and needs no second model call.
//!
//! It reads the way a person would write it: numbers rounded for reading
//! (`4,061`, `64.98`; the exact values stay in the rows), a row named by its
//! most descriptive column (a name rather than an id), a ranking said as one
//! ("Top 5 by unit price: ..."), counts per group as "Order count by status:
//! ...". Everything is decided from the columns' names and types, never from
//! the question.

use serde_json::Value;

use crate::ColumnMeta;
use crate::format::{
    CellText, NumberFormat, capitalized, column_words, compact, grouped, is_identifier,
    is_numeric_type, is_textual, listing, number as as_number,
};

/// A list of at most this many rows is named in full.
const ALL_NAMED: usize = 5;
/// How many rows a longer list names before saying how many more there are.
const FIRST_NAMED: usize = 3;
/// How many other values a single row's sentence gives.
const DETAILS_NAMED: usize = 4;
/// A ranking of at most this many rows is a "top N"; a longer one says its order.
const TOP_MAX: usize = 10;

/// Describes the whole result: empty, a single value, a single row, or the
/// rows (a ranking, values per group or a list), saying when rows were left out.
pub(crate) fn describe(columns: &[ColumnMeta], rows: &[Vec<Value>], truncated: bool) -> String {
    match rows {
        [] => "Nothing matched the question.".to_owned(),
        [row] => {
            let text = match columns {
                [column] => single_value(column, rows),
                _ => Shape::of(columns, rows).single_row(columns, row),
            };
            if truncated {
                format!("More than one row matched; this is the first. {text}")
            } else {
                text
            }
        }
        _ => {
            let text = Shape::of(columns, rows).rows(columns, rows, truncated);
            if truncated {
                let n = count(rows.len());
                format!("More than {n} rows matched; the first {n} are shown. {text}")
            } else {
                text
            }
        }
    }
}

/// How a row is named.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Naming {
    /// By a name or title: the rows are things ("Waxed Canvas Backpack").
    Name,
    /// By a text column: the rows are groups ("shipped", "Paris").
    Category,
    /// By the first column that is no measure (a date, an id), if any.
    Fallback,
}

/// What each column is for in the text.
#[derive(Debug)]
struct Shape {
    /// The columns naming a row, joined by spaces (`first_name`, `last_name`).
    label: Vec<usize>,
    /// What the label is.
    naming: Naming,
    /// Numeric columns other than identifiers and the label.
    measures: Vec<usize>,
    /// Other columns worth saying (not the label, an identifier or a measure).
    details: Vec<usize>,
    /// How each column's numbers are shown (rounded by the size of the column's numbers).
    formats: Vec<NumberFormat>,
}

impl Shape {
    /// The roles of a result's columns.
    fn of(columns: &[ColumnMeta], rows: &[Vec<Value>]) -> Self {
        let numeric: Vec<bool> = (0..columns.len()).map(|i| is_numeric(columns, rows, i)).collect();
        let measure = |i: usize| numeric[i] && !is_identifier(&columns[i].name);
        let (label, naming) = match label_columns(columns, &numeric) {
            (label, true) => (label, Naming::Name),
            (label, false) if !label.is_empty() => (label, Naming::Category),
            _ => {
                ((0..columns.len()).find(|&i| !measure(i)).into_iter().collect(), Naming::Fallback)
            }
        };
        let measures = (0..columns.len()).filter(|&i| measure(i) && !label.contains(&i)).collect();
        let details = (0..columns.len())
            .filter(|&i| !label.contains(&i) && !measure(i) && !is_identifier(&columns[i].name))
            .collect();
        let formats = (0..columns.len())
            .map(|i| NumberFormat::of(&columns[i].name, numeric[i], i, rows))
            .collect();
        Shape { label, naming, measures, details, formats }
    }

    /// Cell `i` of a row for people, rounded like the rest of its column.
    fn show(&self, row: &[Value], i: usize) -> Option<String> {
        Some(show(*self.formats.get(i)?, row.get(i)?))
    }

    /// The text naming a row: its label's values.
    fn name_of(&self, row: &[Value]) -> String {
        let parts: Vec<String> = self.label.iter().filter_map(|&i| self.show(row, i)).collect();
        parts.join(" ")
    }

    /// The columns said about a row besides its label, in result order.
    fn said(&self) -> Vec<usize> {
        let mut said: Vec<usize> = self.details.iter().chain(&self.measures).copied().collect();
        said.sort_unstable();
        said
    }

    /// "For Giulia Russo, the order count is 84." / "The count is 4 and the total is 12.50."
    fn single_row(&self, columns: &[ColumnMeta], row: &[Value]) -> String {
        let facts = |said: &[usize]| -> Vec<String> {
            let mut facts: Vec<String> = said
                .iter()
                .take(DETAILS_NAMED)
                .filter_map(|&i| {
                    let value = self.show(row, i)?;
                    Some(format!("the {} is {value}", phrase(&columns[i].name)))
                })
                .collect();
            if said.len() > DETAILS_NAMED {
                facts.push(format!("{} more", count(said.len() - DETAILS_NAMED)));
            }
            facts
        };
        if self.naming == Naming::Fallback {
            let all: Vec<usize> = (0..columns.len()).collect();
            return format!("{}.", capitalized(&listing(&facts(&all))));
        }
        let name = self.name_of(row);
        let said = self.said();
        if said.is_empty() {
            return format!("The answer is {name}.");
        }
        format!("For {name}, {}.", listing(&facts(&said)))
    }

    /// Two or more rows: a ranking, values per group, or a list; `truncated`
    /// when more rows matched than these.
    fn rows(&self, columns: &[ColumnMeta], rows: &[Vec<Value>], truncated: bool) -> String {
        let n = rows.len();
        let said = self.said();
        let single_measure = match (self.measures.as_slice(), said.as_slice()) {
            ([m], [s]) if m == s && !self.label.is_empty() => Some(*m),
            _ => None,
        };
        let item = |row: &Vec<Value>| -> String {
            let name = self.name_of(row);
            let values: Vec<String> = said
                .iter()
                .filter_map(|&i| {
                    let value = self.show(row, i)?;
                    Some(match single_measure {
                        Some(_) => value,
                        None => format!("{} {value}", phrase(&columns[i].name)),
                    })
                })
                .collect();
            match (name.is_empty(), values.is_empty()) {
                (true, _) => listing(&values),
                (false, true) => name,
                (false, false) => format!("{name} ({})", values.join(", ")),
            }
        };
        let named = if n <= ALL_NAMED { n } else { FIRST_NAMED };
        let mut items: Vec<String> = rows.iter().take(named).map(item).collect();
        // Items with no name are lists themselves: semicolons keep them apart.
        let join = |items: &[String]| {
            if self.label.is_empty() { items.join("; ") } else { listing(items) }
        };
        let Some(m) = single_measure else {
            if truncated {
                return format!("They start with {}.", join(&items));
            }
            if n > named {
                items.push(format!("{} more", count(n - named)));
            }
            return format!("{} rows: {}.", count(n), join(&items));
        };
        if n > named {
            items.push(format!("{} more", count(n - named)));
        }
        let items = listing(&items);
        let measure = phrase(&columns[m].name);
        if self.naming != Naming::Name {
            let label = match self.label.as_slice() {
                [one] => phrase(&columns[*one].name),
                _ => "name".to_owned(),
            };
            return format!("{} by {label}: {items}.", capitalized(&measure));
        }
        match order(rows, m) {
            Some(Order::Descending) if n <= TOP_MAX => format!("Top {n} by {measure}: {items}."),
            Some(Order::Ascending) if n <= TOP_MAX => format!("Lowest {n} by {measure}: {items}."),
            Some(Order::Descending) => {
                format!("{} rows, highest {measure} first: {items}.", count(n))
            }
            Some(Order::Ascending) => {
                format!("{} rows, lowest {measure} first: {items}.", count(n))
            }
            None => format!("{} rows with their {measure}: {items}.", count(n)),
        }
    }
}

/// "The average total amount is 64.98." / "There are 4,061 orders." (`rows`:
/// the one row of the one column.)
fn single_value(column: &ColumnMeta, rows: &[Vec<Value>]) -> String {
    let value = &rows[0][0];
    let what = phrase(&column.name);
    let format = NumberFormat::of(&column.name, is_numeric_type(&column.type_name), 0, rows);
    let shown = show(format, value);
    let whole = match value {
        Value::Number(n) => n.is_i64() || n.is_u64(),
        Value::String(s) => s.trim().parse::<i128>().is_ok(),
        _ => false,
    };
    if is_plural(&what) && whole && !is_identifier(&column.name) && shown != "1" {
        return format!("There are {shown} {what}.");
    }
    let verb = if is_plural(&what) { "are" } else { "is" };
    format!("The {what} {verb} {shown}.")
}

/// The way rows are sorted by a measure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Order {
    Ascending,
    Descending,
}

/// How the rows are sorted by column `i`, if they are and not all equal.
fn order(rows: &[Vec<Value>], i: usize) -> Option<Order> {
    let values: Vec<f64> =
        rows.iter().map(|r| r.get(i).and_then(as_number)).collect::<Option<_>>()?;
    let pairs = || values.windows(2).map(|w| (w[0], w[1]));
    if values.first() == values.last() {
        return None;
    }
    if pairs().all(|(a, b)| a >= b) {
        Some(Order::Descending)
    } else if pairs().all(|(a, b)| a <= b) {
        Some(Order::Ascending)
    } else {
        None
    }
}

/// The columns that name a row, and whether they are a name (not a category):
/// a column called `name`, `title` or `label`; else a first and last name
/// together; else a text column ending in `name` or `title`; else the first
/// text column that is no identifier.
fn label_columns(columns: &[ColumnMeta], numeric: &[bool]) -> (Vec<usize>, bool) {
    let lower: Vec<String> = columns.iter().map(|c| c.name.to_ascii_lowercase()).collect();
    let text = |i: usize| !numeric[i] && is_textual(&columns[i].type_name);
    let exact = ["name", "title", "label", "full_name", "display_name"];
    if let Some(i) = (0..columns.len()).find(|&i| text(i) && exact.contains(&lower[i].as_str())) {
        return (vec![i], true);
    }
    let find = |names: &[&str]| {
        (0..columns.len()).find(|&i| text(i) && names.contains(&compact(&lower[i]).as_str()))
    };
    if let (Some(first), Some(last)) =
        (find(&["firstname", "givenname"]), find(&["lastname", "familyname", "surname"]))
    {
        return (vec![first, last], true);
    }
    let ends =
        |i: usize| compact(&lower[i]).ends_with("name") || compact(&lower[i]).ends_with("title");
    let plain = |i: usize| text(i) && !is_identifier(&columns[i].name);
    if let Some(i) = (0..columns.len()).find(|&i| plain(i) && ends(i)) {
        return (vec![i], true);
    }
    match (0..columns.len()).find(|&i| plain(i)) {
        Some(i) => (vec![i], false),
        None => (Vec::new(), false),
    }
}

/// Whether a column holds numbers: a numeric type, or numbers in every non-null cell.
fn is_numeric(columns: &[ColumnMeta], rows: &[Vec<Value>], i: usize) -> bool {
    if is_numeric_type(&columns[i].type_name) {
        return true;
    }
    let mut values = rows.iter().filter_map(|r| r.get(i)).filter(|v| !v.is_null()).peekable();
    values.peek().is_some() && values.all(Value::is_number)
}

/// A column name as words ([`column_words`]), `value` when it has none.
fn phrase(name: &str) -> String {
    let words = column_words(name);
    if words.is_empty() { "value".to_owned() } else { words }
}

/// Whether a phrase names several things ("customers", not "status" or "business").
fn is_plural(phrase: &str) -> bool {
    let last = phrase.rsplit(' ').next().unwrap_or_default();
    last.len() > 3
        && last.ends_with('s')
        && !["ss", "us", "is", "ys"].iter().any(|e| last.ends_with(e))
}

/// A count for people: `4,061`.
fn count(n: usize) -> String {
    grouped(&n.to_string())
}

/// A value for people ([`CellText::Sentence`]): text as it is, a number
/// rounded for reading like the others of its column (an identifier's digits
/// as they are), a midnight timestamp as its date.
fn show(format: NumberFormat, value: &Value) -> String {
    CellText::Sentence(format).text(value).into_owned()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// Columns from `name:type` pairs (`text` when the type is left out).
    fn cols(spec: &[&str]) -> Vec<ColumnMeta> {
        spec.iter()
            .map(|s| {
                let (name, type_name) = s.split_once(':').unwrap_or((s, "text"));
                ColumnMeta { name: name.into(), type_name: type_name.into() }
            })
            .collect()
    }

    /// Rows from a JSON array of arrays.
    fn rows(value: Value) -> Vec<Vec<Value>> {
        serde_json::from_value(value).unwrap()
    }

    #[track_caller]
    fn check(columns: &[&str], data: Value, truncated: bool, want: &str) {
        assert_eq!(describe(&cols(columns), &rows(data), truncated), want);
    }

    #[test]
    fn empty_and_single_values() {
        check(&["n:integer"], json!([]), false, "Nothing matched the question.");
        check(&["order_count:integer"], json!([[4061]]), false, "The order count is 4,061.");
        check(
            &["average_total_amount:real"],
            json!([[64.98121101871102]]),
            false,
            "The average total amount is 64.98.",
        );
        check(&["total_amount:REAL"], json!([[250047.7]]), false, "The total amount is 250,048.");
        check(&["avg_total:numeric"], json!([["12.5"]]), false, "The average total is 12.50.");
        check(&["total:numeric"], json!([["250048"]]), false, "The total is 250,048.");
        check(&["max:numeric"], json!([[null]]), false, "The maximum is no value.");
        check(&["customers:int8"], json!([[3]]), false, "There are 3 customers.");
        check(&["customers:int8"], json!([[1]]), false, "The customers are 1.");
        check(&["status"], json!([["shipped"]]), false, "The status is shipped.");
        check(&["max_order_id:integer"], json!([[4061]]), false, "The maximum order id is 4061.");
        check(
            &["first_order:date"],
            json!([["2026-03-01T00:00:00Z"]]),
            false,
            "The first order is 2026-03-01.",
        );
    }

    #[test]
    fn single_rows() {
        check(
            &["id:integer", "name", "unit_price:REAL"],
            json!([[36, "Waxed Canvas Backpack", 129.0]]),
            false,
            "For Waxed Canvas Backpack, the unit price is 129.00.",
        );
        check(
            &["id:integer", "first_name", "last_name", "order_count:integer"],
            json!([[7, "Giulia", "Russo", 84]]),
            false,
            "For Giulia Russo, the order count is 84.",
        );
        check(&["city", "n:int8"], json!([["Paris", 3]]), false, "For Paris, the n is 3.");
        check(&["id:integer", "name"], json!([[4, "Kite"]]), false, "The answer is Kite.");
        check(
            &["order_count:integer", "average_total:real"],
            json!([[4061, 65.3722]]),
            false,
            "The order count is 4,061 and the average total is 65.37.",
        );
        check(
            &["name", "a:int4", "b:int4", "c:int4", "d:int4", "e:int4", "f:int4"],
            json!([["x", 1, 2, 3, 4, 5, 6]]),
            false,
            "For x, the a is 1, the b is 2, the c is 3, the d is 4 and 2 more.",
        );
    }

    #[test]
    fn rankings_groups_and_lists() {
        check(
            &["id:INTEGER", "name:TEXT", "unit_price:REAL"],
            json!([
                [36, "Waxed Canvas Backpack", 129.0],
                [16, "Enamel Dutch Oven 24cm", 119.0],
                [19, "Wool Throw Blanket", 89.0],
                [10, "Chef's Knife 20cm", 79.0],
                [46, "Tortoiseshell Sunglasses", 79.0]
            ]),
            false,
            "Top 5 by unit price: Waxed Canvas Backpack (129.00), Enamel Dutch Oven 24cm (119.00), \
             Wool Throw Blanket (89.00), Chef's Knife 20cm (79.00) and Tortoiseshell Sunglasses (79.00).",
        );
        check(
            &["name", "price:numeric"],
            json!([["Novel", "8.00"], ["Kite", "12.00"], ["Rake", "18.00"]]),
            false,
            "Lowest 3 by price: Novel (8.00), Kite (12.00) and Rake (18.00).",
        );
        check(
            &["id:integer", "first_name", "last_name", "total_amount:real"],
            json!([
                [40, "Emma", "Young", 6505.4],
                [33, "Giulia", "Williams", 5957.3],
                [29, "Sophie", "Williams", 5613.2],
                [7, "Giulia", "Russo", 5009.0],
                [2, "Eva", "de Jong", 4866.1],
                [52, "Pablo", "Walker", 4527.4],
                [57, "Emma", "Johnson", 4525.4],
                [1, "A", "B", 4000.0],
                [3, "C", "D", 3000.0],
                [4, "E", "F", 2000.0],
                [5, "G", "H", 1000.0]
            ]),
            false,
            "11 rows, highest total amount first: Emma Young (6,505.40), Giulia Williams (5,957.30), \
             Sophie Williams (5,613.20) and 8 more.",
        );
        check(
            &["status:TEXT", "order_count:integer"],
            json!([
                ["delivered", 3620],
                ["cancelled", 179],
                ["returned", 164],
                ["processing", 53],
                ["shipped", 45]
            ]),
            false,
            "Order count by status: delivered (3,620), cancelled (179), returned (164), processing (53) \
             and shipped (45).",
        );
        check(
            &["status", "total_amount:real"],
            json!([["delivered", 236310.0], ["returned", 11579.8], ["shipped", 2982.6]]),
            false,
            "Total amount by status: delivered (236,310), returned (11,580) and shipped (2,983).",
        );
        check(
            &["city", "customers:int8"],
            json!([["Paris", 3], ["Rome", 2]]),
            false,
            "Customers by city: Paris (3) and Rome (2).",
        );
        check(
            &["id:integer", "name"],
            json!([
                [29, "Blue-Black Ink Bottle"],
                [30, "Brass Pencil Sharpener"],
                [42, "Canvas Tote Bag"],
                [9, "Skillet"],
                [10, "Knife"],
                [2, "Beans"]
            ]),
            false,
            "6 rows: Blue-Black Ink Bottle, Brass Pencil Sharpener, Canvas Tote Bag and 3 more.",
        );
        check(
            &["name", "category", "price:numeric"],
            json!([["Atlas", "Books", "30"], ["Kite", "Toys", "12"]]),
            false,
            "2 rows: Atlas (category Books, price 30) and Kite (category Toys, price 12).",
        );
        check(
            &["name", "price:numeric"],
            json!([["Atlas", "30.5"], ["Kite", "42"], ["Rake", "12"]]),
            false,
            "3 rows with their price: Atlas (30.50), Kite (42) and Rake (12).",
        );
        check(
            &["a:integer", "b:integer"],
            json!([[1, 2000], [3, 4000]]),
            false,
            "2 rows: a 1 and b 2,000; a 3 and b 4,000.",
        );
    }

    #[test]
    fn rows_without_a_text_column_are_named_by_another() {
        check(
            &["year:integer", "order_count:integer"],
            json!([[2024, 1234], [2025, 2000]]),
            false,
            "Order count by year: 2024 (1,234) and 2025 (2,000).",
        );
        check(
            &["day:date", "revenue:numeric"],
            json!([["2026-03-01T00:00:00Z", "10.5"], ["2026-03-02T00:00:00Z", "7"]]),
            false,
            "Revenue by day: 2026-03-01 (10.50) and 2026-03-02 (7).",
        );
    }

    #[test]
    fn truncated_results_say_so() {
        check(
            &["city", "customer_count:int8"],
            json!([["a", 6], ["b", 5], ["c", 4], ["d", 3], ["e", 2], ["f", 1]]),
            true,
            "More than 6 rows matched; the first 6 are shown. Customer count by city: a (6), b (5), \
             c (4) and 3 more.",
        );
        check(
            &["total:numeric"],
            json!([["12"]]),
            true,
            "More than one row matched; this is the first. The total is 12.",
        );
        let many: Vec<Value> = (0..1000).map(|i| json!([format!("n{i}")])).collect();
        check(
            &["name"],
            Value::Array(many),
            true,
            "More than 1,000 rows matched; the first 1,000 are shown. They start with n0, n1 and n2.",
        );
    }

    #[test]
    fn phrases() {
        assert_eq!(phrase("total_amount"), "total amount");
        assert_eq!(phrase("avg_unitPrice"), "average unit price");
        assert_eq!(phrase("max_qty"), "maximum quantity");
        assert_eq!(phrase("GDP_per_capita"), "GDP per capita");
        assert_eq!(phrase("_"), "value");
    }
}

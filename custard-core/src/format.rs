//! Result cells as text, and numbers as people read them in the answer table
//! and the charts: thousands separated (`250,048`), decimals rounded by the
//! size of their column's numbers (`64.98`, none from 100,000, significant
//! digits for the very small), identifiers (`id`, `customer_id`, `year`) left
//! as they are.
//!
//! [`CellText`] is the one way a JSON cell becomes text: the CSV export
//! writes [`CellText::Exact`] (and escapes formulas on top), the server's
//! answer table [`CellText::Table`], chart labels [`CellText::Label`] and the
//! answer sentence [`CellText::Sentence`], so they say the same value. Rounding
//! is display only: the exact value stays in the page (`data-v`, a `title`)
//! and in the CSV.

use std::borrow::Cow;

use serde_json::Value;

/// How a result cell is written as text, by where it is shown.
///
/// ```
/// use custard_core::format::{CellText, NumberFormat};
/// use serde_json::json;
///
/// let column = NumberFormat::measure(250_000.0, false);
/// assert_eq!(CellText::Exact.text(&json!(250047.7)), "250047.7");
/// assert_eq!(CellText::Table(column).text(&json!(250047.7)), "250,048");
/// assert_eq!(CellText::Label.text(&json!("2026-03-01T00:00:00Z")), "2026-03-01");
/// assert_eq!(CellText::Sentence(column).text(&json!(null)), "no value");
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub enum CellText {
    /// The value as it came, for files and for the exact value behind a
    /// rounded one: null empty, text as it is, anything else as JSON
    /// (`true`, `12.5`, `[1,2]`).
    Exact,
    /// An axis or bar label: exact, but a timestamp at midnight is its date
    /// and null is `(none)`.
    Label,
    /// A table cell: numbers as the column's [`NumberFormat`] shows them, the rest exact.
    Table(NumberFormat),
    /// In a sentence: numbers as in a table, a timestamp at midnight as its
    /// date, null `no value`, booleans `yes` and `no`.
    Sentence(NumberFormat),
}

impl CellText {
    /// The text of one cell.
    pub fn text(self, value: &Value) -> Cow<'_, str> {
        if let CellText::Table(format) | CellText::Sentence(format) = self
            && let Some(number) = format.text(value)
        {
            return Cow::Owned(number);
        }
        let sentence = matches!(self, CellText::Sentence(_));
        match value {
            Value::Null => match self {
                CellText::Label => "(none)".into(),
                CellText::Sentence(_) => "no value".into(),
                _ => "".into(),
            },
            Value::String(s) if sentence || self == CellText::Label => {
                midnight_date(s).unwrap_or(s).into()
            }
            Value::String(s) => s.as_str().into(),
            Value::Bool(b) if sentence => if *b { "yes" } else { "no" }.into(),
            Value::Bool(b) => if *b { "true" } else { "false" }.into(),
            Value::Number(n) => n.to_string().into(),
            other => other.to_string().into(),
        }
    }
}

/// The date of a timestamp at midnight, `YYYY-MM-DD[T ]00:00:00[.000][Z|±hh[:mm]]`
/// (a date column read as a timestamp), which says no more than the date.
fn midnight_date(s: &str) -> Option<&str> {
    let b = s.as_bytes();
    let digits =
        |r: std::ops::Range<usize>| b.get(r).is_some_and(|d| d.iter().all(u8::is_ascii_digit));
    let dash = |i: usize| b.get(i) == Some(&b'-');
    let date = digits(0..4) && dash(4) && digits(5..7) && dash(7) && digits(8..10);
    if !date || !matches!(b.get(10), Some(b'T' | b' ')) || b.get(11..19) != Some(b"00:00:00") {
        return None;
    }
    let mut rest = &s[19..];
    if let Some(fraction) = rest.strip_prefix('.') {
        rest = fraction.trim_start_matches('0');
        if rest.len() == fraction.len() {
            return None;
        }
    }
    let zone = rest.is_empty()
        || rest == "Z"
        || (rest.starts_with(['+', '-'])
            && rest.len() <= 6
            && rest[1..].bytes().all(|c| c.is_ascii_digit() || c == b':'));
    zone.then(|| &s[..10])
}

/// How the numbers of one result column are shown.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct NumberFormat {
    /// A number column (a numeric type, or numbers in every cell): numeric
    /// strings count as numbers too.
    numeric: bool,
    /// Named like an identifier or a code: digits as they are, no separators.
    identifier: bool,
    /// The largest size of a number in the column; it sets the decimal places.
    scale: f64,
    /// Every number in the column is a whole number as written (`12`, not `12.0`).
    integers: bool,
}

impl NumberFormat {
    /// The format of column `index` named `name`, given whether it is a number
    /// column and the rows it is shown with.
    pub fn of(name: &str, numeric: bool, index: usize, rows: &[Vec<Value>]) -> Self {
        let values = || rows.iter().filter_map(|r| r.get(index)).filter(|v| !v.is_null());
        let scale = values().filter_map(number).map(f64::abs).fold(0.0, f64::max);
        let integers = values().all(|v| match v {
            Value::Number(n) => n.is_i64() || n.is_u64(),
            Value::String(s) => is_integer(s.trim()),
            _ => true,
        });
        NumberFormat { numeric, identifier: is_identifier(name), scale, integers }
    }

    /// The format of a column of measures of about `scale`, whole or not.
    pub fn measure(scale: f64, integers: bool) -> Self {
        NumberFormat { numeric: true, identifier: false, scale, integers }
    }

    /// Whether this is a number column.
    pub fn numeric(&self) -> bool {
        self.numeric
    }

    /// The text of a number in this column, or `None` when `value` is no
    /// number here (text, null, or a numeric string in a text column).
    pub fn text(&self, value: &Value) -> Option<String> {
        match value {
            Value::Number(n) if self.identifier => Some(n.to_string()),
            Value::Number(n) => Some(match (n.as_i64(), n.as_u64(), n.as_f64()) {
                (Some(i), ..) => grouped(&i.to_string()),
                (None, Some(u), _) => grouped(&u.to_string()),
                (None, None, Some(f)) => decimal(f, self.scale),
                _ => n.to_string(),
            }),
            Value::String(s) if self.numeric && !self.identifier => {
                let t = s.trim();
                if is_integer(t) {
                    return Some(grouped(t));
                }
                let f = t.parse::<f64>().ok().filter(|f| f.is_finite())?;
                Some(decimal(f, self.scale))
            }
            _ => None,
        }
    }

    /// The text of a number computed from this column (a sum of some of its
    /// values): whole when the column's numbers are.
    pub fn number_text(&self, v: f64) -> String {
        if self.integers && v.fract() == 0.0 && v.abs() < 9e15 {
            let whole = format!("{v:.0}");
            return if self.identifier { whole } else { grouped(&whole) };
        }
        decimal(v, self.scale.max(v.abs()))
    }
}

/// Whether a text is a whole number as written: digits with an optional sign.
fn is_integer(text: &str) -> bool {
    let digits = text.strip_prefix(['-', '+']).unwrap_or(text);
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

/// A measure: a JSON number, or a string holding one (numeric and bigint often arrive as text).
pub fn number(value: &Value) -> Option<f64> {
    let n = match value {
        Value::Number(n) => n.as_f64()?,
        Value::String(s) => s.trim().parse::<f64>().ok()?,
        _ => return None,
    };
    n.is_finite().then_some(n)
}

/// Whether a database type name is a number type (PostgreSQL's, or one
/// SQLite may be declared with: `INTEGER`, `TINYINT`, `NUMBER(10)`, ...).
pub fn is_numeric_type(type_name: &str) -> bool {
    let t = type_name.trim().to_ascii_lowercase();
    let base = t.split('(').next().unwrap_or_default().trim();
    matches!(
        base,
        "int2"
            | "int4"
            | "int8"
            | "smallint"
            | "integer"
            | "int"
            | "bigint"
            | "tinyint"
            | "mediumint"
            | "number"
            | "numeric"
            | "decimal"
            | "real"
            | "float4"
            | "float8"
            | "float"
            | "double"
            | "double precision"
            | "money"
    )
}

/// Whether a column name says it identifies or codes rather than measures:
/// `id`, `customer_id`, `customerId`, `sku`, `zip_code`, `year`.
pub fn is_identifier(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    let last = lower.split(|c: char| !c.is_ascii_alphanumeric()).rfind(|w| !w.is_empty());
    name.ends_with("Id")
        || name.ends_with("ID")
        || matches!(
            last.unwrap_or_default(),
            "id" | "ids"
                | "uuid"
                | "key"
                | "code"
                | "sku"
                | "ean"
                | "isbn"
                | "zip"
                | "zipcode"
                | "postcode"
                | "phone"
                | "year"
                | "yr"
        )
}

/// A decimal rounded by the size of its column's numbers (`scale`, the
/// largest of them): no places from 100,000 (`250,048`), else two (`64.98`,
/// `1,234.50`); three significant digits for what two places would hide
/// (`0.000123`) or when every number is below one (`0.457`), and an
/// exponent for the extremes (`1.2e-9`).
pub fn decimal(v: f64, scale: f64) -> String {
    let a = v.abs();
    let text = if a >= 1e21 {
        format!("{v:.3e}")
    } else if scale >= 99_999.995 && a >= 0.5 {
        format!("{:.0}", half_up(v, 0))
    } else if a >= 0.9995 || a == 0.0 || (scale >= 0.9995 && a >= 0.005) {
        format!("{:.2}", half_up(v, 2))
    } else if a >= 1e-6 {
        let places = (2 - a.log10().floor() as i32).max(2) as usize;
        let s = format!("{v:.places$}");
        let (whole, fraction) = s.split_once('.').unwrap_or((&s, ""));
        let kept = fraction.trim_end_matches('0');
        format!("{whole}.{kept:0<2}")
    } else {
        format!("{v:.1e}")
    };
    // No "-0.00": a negative number that rounds to zero is shown as zero.
    let text = match text.strip_prefix('-') {
        Some(rest) if rest.chars().all(|c| c == '0' || c == '.') => rest.to_owned(),
        _ => text,
    };
    if text.contains('e') { text } else { grouped(&text) }
}

/// `v` rounded to `places` decimals with halves away from zero (`12.5` is
/// `13`), as people round; formatting alone rounds halves to even.
fn half_up(v: f64, places: i32) -> f64 {
    let m = 10f64.powi(places);
    let r = (v * m).round() / m;
    if r.is_finite() { r } else { v }
}

/// Thousands separated by commas in the whole part: `-1234567.5` -> `-1,234,567.5`.
pub fn grouped(number: &str) -> String {
    let (sign, rest) = match number.strip_prefix('-') {
        Some(rest) => ("-", rest),
        None => ("", number.strip_prefix('+').unwrap_or(number)),
    };
    let (whole, fraction) = match rest.split_once('.') {
        Some((w, f)) => (w, Some(f)),
        None => (rest, None),
    };
    let mut out = String::with_capacity(number.len() + whole.len() / 3);
    out.push_str(sign);
    for (i, digit) in whole.chars().enumerate() {
        if i > 0 && (whole.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(digit);
    }
    if let Some(f) = fraction {
        out.push('.');
        out.push_str(f);
    }
    out
}

/// A name in lowercase without separators: `First_Name` -> `firstname`, so
/// column names compare whatever their style.
pub fn compact(name: &str) -> String {
    name.chars().filter(char::is_ascii_alphanumeric).map(|c| c.to_ascii_lowercase()).collect()
}

/// Whether a database type holds text that can name a row or a category (not
/// a number, date, flag, document or blob).
pub fn is_textual(type_name: &str) -> bool {
    let t = type_name.trim().to_ascii_lowercase();
    let other = ["date", "time", "bool", "json", "bytea", "blob", "uuid", "interval", "null"];
    !is_numeric_type(&t) && !other.iter().any(|o| t.starts_with(o))
}

/// The first letter in upper case.
pub fn capitalized(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// `a`, `a and b`, `a, b and c`.
pub fn listing(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

/// A column name as words for sentences and labels: `total_amount` ->
/// `total amount`, `avg_price` -> `average price`, `unitPrice` -> `unit
/// price`, acronyms (`GDP`) kept; empty when the name has no words.
pub fn column_words(name: &str) -> String {
    let mut spaced = String::new();
    let mut prev_lower = false;
    for ch in name.trim().chars() {
        if ch == '_' || ch == '-' || ch.is_whitespace() {
            spaced.push(' ');
            prev_lower = false;
            continue;
        }
        if ch.is_uppercase() && prev_lower {
            spaced.push(' ');
        }
        prev_lower = ch.is_lowercase() || ch.is_ascii_digit();
        spaced.push(ch);
    }
    let words: Vec<String> = spaced
        .split_whitespace()
        .map(|w| {
            let lower = w.to_lowercase();
            let long = match lower.as_str() {
                "avg" => "average",
                "max" => "maximum",
                "min" => "minimum",
                "qty" => "quantity",
                "amt" => "amount",
                "cnt" => "count",
                "num" | "nbr" => "number",
                "pct" => "percent",
                // Acronyms (`GDP`) stay as they are.
                _ if w.chars().count() > 1 && w.chars().all(char::is_uppercase) => w,
                _ => return lower,
            };
            long.to_owned()
        })
        .collect();
    words.join(" ")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn decimals_are_rounded_by_the_size_of_their_column() {
        // (value, the largest in its column, text)
        let cases = [
            (64.98121101871102, 64.99, "64.98"),
            (250047.7, 250047.7, "250,048"),
            (11579.8, 236310.0, "11,580"),
            (0.3, 236310.0, "0.30"),
            (0.2, 236310.0, "0.20"),
            (99_999.996, 99_999.996, "100,000"),
            (12_345.678, 12_345.678, "12,345.68"),
            (2.5, 300_000.0, "3"),
            (0.125, 1.0, "0.13"),
            (-2.675, 2.675, "-2.68"),
            (129.0, 129.0, "129.00"),
            (-1234.5, 1234.5, "-1,234.50"),
            (0.0, 0.0, "0.00"),
            (-0.0, 0.0, "0.00"),
            (-0.001, 300_000.0, "-0.001"),
            (0.5, 0.5, "0.50"),
            (0.5, 12.0, "0.50"),
            (0.001, 12.0, "0.001"),
            (0.45678, 0.45678, "0.457"),
            (0.0123456, 0.5, "0.0123"),
            (0.000123456, 0.000123456, "0.000123"),
            (-0.000123456, 0.000123456, "-0.000123"),
            (0.99999, 0.99999, "1.00"),
            (1.5e-9, 1.5e-9, "1.5e-9"),
            (1234567890.4, 1234567890.4, "1,234,567,890"),
            (2.5e22, 2.5e22, "2.500e22"),
        ];
        for (v, scale, want) in cases {
            assert_eq!(decimal(v, scale), want, "{v} among numbers up to {scale}");
        }
    }

    #[test]
    fn thousands_are_separated() {
        let cases = [
            ("0", "0"),
            ("999", "999"),
            ("1000", "1,000"),
            ("250048", "250,048"),
            ("-1234567", "-1,234,567"),
            ("+1234", "1,234"),
            ("-1234.5", "-1,234.5"),
        ];
        for (n, want) in cases {
            assert_eq!(grouped(n), want, "{n}");
        }
    }

    #[test]
    fn cells_by_column() {
        let rows = vec![
            vec![json!(4061), json!("Paris"), json!(250047.7), json!("12.5"), json!("00501")],
            vec![json!(12), json!("Rome"), json!(3.25), json!("250048"), json!("1200")],
        ];
        let columns = [
            ("order_id", true),
            ("city", false),
            ("total_amount", true),
            ("revenue", true),
            ("zip", false),
        ];
        let formats: Vec<NumberFormat> = columns
            .iter()
            .enumerate()
            .map(|(i, (name, numeric))| NumberFormat::of(name, *numeric, i, &rows))
            .collect();
        let shown: Vec<Vec<Option<String>>> = rows
            .iter()
            .map(|row| row.iter().zip(&formats).map(|(v, f)| f.text(v)).collect())
            .collect();
        let s = |t: &str| Some(t.to_owned());
        assert_eq!(shown[0], [s("4061"), None, s("250,048"), s("13"), None]);
        assert_eq!(shown[1], [s("12"), None, s("3"), s("250,048"), None]);
        let measure = NumberFormat::measure(5.0, false);
        assert_eq!(measure.text(&json!(null)), None);
        assert_eq!(measure.text(&json!("n/a")), None);
        assert_eq!(measure.text(&json!(-7)), s("-7"));
        // A sum of some of a column's values is shown like them.
        assert_eq!(formats[0].number_text(4073.0), "4073");
        assert_eq!(formats[2].number_text(250050.95), "250,051");
        assert_eq!(NumberFormat::measure(500.0, true).number_text(1234.0), "1,234");
        assert_eq!(NumberFormat::measure(500.0, false).number_text(1234.0), "1,234.00");
    }

    /// One cell in every style: exact, table, label and sentence.
    #[test]
    fn cells_as_text() {
        let check = |value: Value, format: NumberFormat, expected: [&str; 4]| {
            let texts = [
                CellText::Exact.text(&value),
                CellText::Table(format).text(&value),
                CellText::Label.text(&value),
                CellText::Sentence(format).text(&value),
            ];
            assert_eq!(texts, expected, "{value}");
        };
        let measure = NumberFormat::measure(250_000.0, false);
        let small = NumberFormat::measure(1.0, false);
        let id = NumberFormat::of("order_id", true, 0, &[vec![json!(4061)]]);
        let text = NumberFormat::of("city", false, 0, &[vec![json!("Paris")]]);
        check(json!(null), measure, ["", "", "(none)", "no value"]);
        check(json!(true), text, ["true", "true", "true", "yes"]);
        check(json!(false), text, ["false", "false", "false", "no"]);
        check(json!(4061), measure, ["4061", "4,061", "4061", "4,061"]);
        check(json!(-1234567), measure, ["-1234567", "-1,234,567", "-1234567", "-1,234,567"]);
        check(json!(4061), id, ["4061", "4061", "4061", "4061"]);
        let max = "18446744073709551615";
        check(json!(u64::MAX), measure, [max, "18,446,744,073,709,551,615", max, &grouped(max)]);
        check(json!(250047.7), measure, ["250047.7", "250,048", "250047.7", "250,048"]);
        check(json!(0.125), small, ["0.125", "0.13", "0.125", "0.13"]);
        // `numeric` arrives as text to keep its precision; it is rounded for reading only.
        check(json!("-98765.4321"), measure, ["-98765.4321", "-98,765", "-98765.4321", "-98,765"]);
        check(json!("12.5"), small, ["12.5", "12.50", "12.5", "12.50"]);
        let big = "123456789012345678901234567890.123456789";
        check(json!(big), measure, [big, "1.235e29", big, "1.235e29"]);
        let digits = "12345678901234567890123456789012345678901";
        check(json!(digits), measure, [digits, &grouped(digits), digits, &grouped(digits)]);
        check(json!("+12"), measure, ["+12", "12", "+12", "12"]);
        check(json!("NaN"), measure, ["NaN", "NaN", "NaN", "NaN"]);
        // In a text column, a number as text is text.
        check(json!("12.50"), text, ["12.50", "12.50", "12.50", "12.50"]);
        check(json!("2026-03-01"), text, ["2026-03-01", "2026-03-01", "2026-03-01", "2026-03-01"]);
        let stamp = "2026-03-01T00:00:00Z";
        check(json!(stamp), text, [stamp, stamp, "2026-03-01", "2026-03-01"]);
        let stamp = "2026-03-01T00:00:00+02:00";
        check(json!(stamp), text, [stamp, stamp, "2026-03-01", "2026-03-01"]);
        let stamp = "2026-03-01T13:00:00Z";
        check(json!(stamp), text, [stamp, stamp, stamp, stamp]);
        // Formulas are text here; the CSV export escapes them on top.
        check(json!("=1+1"), text, ["=1+1", "=1+1", "=1+1", "=1+1"]);
        check(json!([1, "a"]), text, ["[1,\"a\"]", "[1,\"a\"]", "[1,\"a\"]", "[1,\"a\"]"]);
        check(json!({"a": null}), text, [r#"{"a":null}"#; 4]);
        // Exact text is the value itself, not a copy.
        assert!(matches!(CellText::Exact.text(&json!("Paris")), Cow::Borrowed("Paris")));
    }

    #[test]
    fn midnight_timestamps_are_dates() {
        let cases = [
            ("2026-03-01T00:00:00+00:00", Some("2026-03-01")),
            ("2026-03-01 00:00:00", Some("2026-03-01")),
            ("2026-03-01T00:00:00Z", Some("2026-03-01")),
            ("2026-03-01T00:00:00.000000-05", Some("2026-03-01")),
            ("2026-03-01T13:00:00+00:00", None),
            ("2026-03-01T00:00:00.5Z", None),
            ("2026-03-01T00:00:00.", None),
            ("2026-03-01T00:00:00 and more", None),
            ("2026-03-01", None),
            ("é026-03-01T00:00:00Z", None),
        ];
        for (text, expected) in cases {
            assert_eq!(midnight_date(text), expected, "{text}");
        }
    }

    #[test]
    fn number_types() {
        for t in
            ["int4", "INTEGER", "numeric(10,2)", "double precision", "money", "TINYINT", "number"]
        {
            assert!(is_numeric_type(t), "{t}");
        }
        for t in ["text", "date", "bool", "jsonb", "", "interval"] {
            assert!(!is_numeric_type(t), "{t}");
        }
    }

    #[test]
    fn identifiers() {
        for name in
            ["id", "customer_id", "customerId", "ORDER_ID", "sku", "zip_code", "year", "api_key"]
        {
            assert!(is_identifier(name), "{name}");
        }
        for name in ["paid", "total_amount", "valid", "order_count", "keys_sold", "grid"] {
            assert!(!is_identifier(name), "{name}");
        }
    }
}

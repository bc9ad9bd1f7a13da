//! Charts drawn on the server from an answer's declarative chart spec:
//! nothing runs in the browser and no generated code runs anywhere.
//!
//! - Bars are an HTML table, a row per category: its label, its bar (a small
//!   SVG stretched across the cell, holding no text) and its value. The text is
//!   the page's own, so it keeps its size on a phone and long names wrap. A
//!   category is labelled by the result's most descriptive column (a name
//!   rather than an id), and at most [`MAX_BARS`] bars are drawn: the rest are
//!   added up in an "Others" bar when the measure adds up (counts, sums), and
//!   are otherwise left out, which the caption says.
//! - A line chart is SVG, drawn twice, for wide and for narrow screens (the
//!   stylesheet shows one): an SVG scaled down to a phone shrinks its text with it.
//!
//! Markup is styled by presentation attributes and class names only (the
//! pages' Content-Security-Policy allows no inline `style`), and every piece of
//! text that comes from data is escaped.

use std::borrow::Cow;
use std::fmt::{self, Write};

use serde_json::Value;

use super::Escaped;
use crate::questions::{ChartView, ColumnView};
use custard_core::ChartKind;
use custard_core::format::{
    CellText, NumberFormat, capitalized, column_words, compact, is_identifier, is_textual, listing,
    number,
};

/// The most bars a bar chart draws, an "Others" bar included.
pub(crate) const MAX_BARS: usize = 12;
/// The most points a line chart draws; later rows are left out.
const MAX_POINTS: usize = 1000;
/// Points get a marker (with a tooltip) only up to this many.
const MAX_MARKERS: usize = 60;
/// Longer line-chart labels are cut with an ellipsis.
const MAX_LABEL_CHARS: usize = 16;
/// Longer bar labels are cut with an ellipsis (they wrap below this).
const MAX_BAR_LABEL_CHARS: usize = 80;
/// The length of a bar's track, in its SVG's units.
const TRACK: f64 = 1000.0;
const INK: &str = "#1c1b19";
const GRID: &str = "#dedbd4";
/// The "Others" bar: grey, apart from the categories' colour.
const OTHERS: &str = "#8c877b";
/// The card's background, for the marks cut into a bar.
const PAPER: &str = "#ffffff";
/// Okabe–Ito colours, distinguishable with the common colour-vision deficiencies.
const PALETTE: [&str; 6] = ["#0072b2", "#e69f00", "#009e73", "#cc79a7", "#56b4e9", "#d55e00"];

/// The drawing of a line chart for one range of screen widths.
#[derive(Debug)]
struct Canvas {
    width: f64,
    height: f64,
    font: f64,
    /// A generous average glyph width at `font`, to keep labels apart.
    char_width: f64,
    /// The class the stylesheet shows or hides it by.
    class: &'static str,
}

/// For screens from 40rem: the stylesheet caps it at its own width, so its
/// text is 13 px at most and about 11.5 px at the narrowest (some 570 px).
const WIDE: Canvas =
    Canvas { width: 640.0, height: 320.0, font: 13.0, char_width: 7.7, class: "wide" };
/// For phones: about 350 px of a 390 px screen, so its text is about 12 px.
const NARROW: Canvas =
    Canvas { width: 340.0, height: 260.0, font: 12.0, char_width: 7.1, class: "narrow" };

/// The chart as HTML for a `<figure>`, or `None` for a kind not drawn, a
/// missing column, no rows or no numbers. `columns` are the result's names
/// and database types; `id` names its caption, unique in the page.
pub(crate) fn html(
    id: &str,
    chart: &ChartView<'_>,
    columns: &[ColumnView<'_>],
    rows: &[Vec<Value>],
) -> Option<String> {
    let index = |name: &str| columns.iter().position(|c| c.name == name);
    let xi = index(&chart.x)?;
    let yi = chart.y.iter().map(|name| index(name)).collect::<Option<Vec<_>>>()?;
    if yi.is_empty() {
        return None;
    }
    match chart.kind {
        ChartKind::Bar => bar_chart(id, columns, xi, &yi, rows).ok().flatten(),
        ChartKind::Line => line_chart(id, columns, xi, &yi, rows).ok().flatten(),
        // A kind core suggests but this page does not draw yet.
        _ => None,
    }
}

// ---------------------------------------------------------------------------
// Bars

/// The columns that label a category, joined by spaces: a column called
/// `name`, `title` or `label`; else a first and a last name together; else a
/// text column whose name ends in `name` or `title`; else the chart's own x
/// column when it is text; else the first text column; else x. Identifiers
/// (`id`, `customer_id`, `sku`) label only when nothing else can.
fn label_columns(
    columns: &[ColumnView<'_>],
    x: usize,
    y: &[usize],
    rows: &[Vec<Value>],
) -> Vec<usize> {
    let lower: Vec<String> = columns.iter().map(|c| compact(&c.name)).collect();
    let text = |i: usize| {
        !y.contains(&i)
            && is_textual(&columns[i].type_name)
            && rows.iter().any(|r| matches!(r.get(i), Some(Value::String(_))))
    };
    let plain = |i: usize| text(i) && !is_identifier(&columns[i].name);
    let all = || 0..columns.len();
    let exact = ["name", "title", "label", "fullname", "displayname"];
    if let Some(i) = all().find(|&i| text(i) && exact.contains(&lower[i].as_str())) {
        return vec![i];
    }
    let find = |names: &[&str]| all().find(|&i| text(i) && names.contains(&lower[i].as_str()));
    if let (Some(first), Some(last)) =
        (find(&["firstname", "givenname"]), find(&["lastname", "familyname", "surname"]))
    {
        return vec![first, last];
    }
    let named = |i: usize| lower[i].ends_with("name") || lower[i].ends_with("title");
    if let Some(i) = all().find(|&i| plain(i) && named(i)) {
        return vec![i];
    }
    if plain(x) {
        return vec![x];
    }
    vec![all().find(|&i| plain(i)).unwrap_or(x)]
}

/// A column name's words in lowercase: `unitPrice`, `unit_price` -> `unit`, `price`.
fn name_words(name: &str) -> Vec<String> {
    let mut words: Vec<String> = Vec::new();
    let mut word = String::new();
    let mut prev_lower = false;
    for ch in name.chars() {
        if !ch.is_alphanumeric() {
            words.extend((!word.is_empty()).then(|| std::mem::take(&mut word)));
            prev_lower = false;
            continue;
        }
        if ch.is_uppercase() && prev_lower {
            words.push(std::mem::take(&mut word));
        }
        prev_lower = ch.is_lowercase() || ch.is_ascii_digit();
        word.extend(ch.to_lowercase());
    }
    words.extend((!word.is_empty()).then_some(word));
    words
}

/// Whether a measure adds up across categories (a count or a sum), so that
/// the bars left out can be shown as their total; judged by its name. An
/// average, an extreme, a price or a rate does not.
fn adds_up(name: &str) -> bool {
    const NOT: &[&str] = &[
        "avg",
        "average",
        "mean",
        "median",
        "min",
        "minimum",
        "max",
        "maximum",
        "highest",
        "lowest",
        "first",
        "last",
        "latest",
        "price",
        "rate",
        "ratio",
        "percent",
        "percentage",
        "pct",
        "share",
        "score",
        "rating",
        "per",
        "unit",
        "age",
        "std",
        "stddev",
        "variance",
    ];
    const YES: &[&str] = &[
        "count", "cnt", "total", "sum", "quantity", "qty", "amount", "revenue", "sales", "volume",
        "units", "number", "num", "n",
    ];
    let words = name_words(name);
    if words.iter().any(|w| NOT.contains(&w.as_str())) {
        return false;
    }
    let plural = words.last().is_some_and(|w| {
        w.len() > 3 && w.ends_with('s') && !["ss", "us", "is"].iter().any(|e| w.ends_with(e))
    });
    plural || words.iter().any(|w| YES.contains(&w.as_str()))
}

/// A column name for people, as the answer sentence says it: `unit_price` ->
/// `unit price`, `avg_qty` -> `average quantity`, `GDP` stays; a name with
/// other signs in it stays as it is.
fn phrase(name: &str) -> String {
    let plain = name.chars().all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | ' '));
    let words = column_words(name);
    if !plain || words.is_empty() { name.to_owned() } else { words }
}

/// Whether the values are all there and sorted, up or down: the query ranked the rows.
fn is_sorted(values: &[Option<f64>]) -> bool {
    let Some(values) = values.iter().copied().collect::<Option<Vec<f64>>>() else {
        return false;
    };
    values.windows(2).all(|w| w[0] >= w[1]) || values.windows(2).all(|w| w[0] <= w[1])
}

/// The rows that get a bar, in result order: all when they fit in `room`;
/// else the first when the rows are ranked by the measure, the largest otherwise.
fn pick(values: &[Option<f64>], room: usize) -> Vec<usize> {
    let n = values.len();
    if n <= room || is_sorted(values) {
        return (0..n.min(room)).collect();
    }
    let size = |i: usize| values[i].map_or(f64::NEG_INFINITY, f64::abs);
    let mut order: Vec<usize> = (0..n).collect();
    // Stable: equal sizes keep the result's order.
    order.sort_by(|&a, &b| size(b).total_cmp(&size(a)));
    let mut kept = order[..room].to_vec();
    kept.sort_unstable();
    kept
}

/// One bar (or one bar of each series) of a bar chart.
#[derive(Debug)]
struct BarRow {
    label: String,
    /// Per series: the value and its text.
    values: Vec<Option<(f64, String)>>,
    /// The "Others" bar.
    others: bool,
}

/// A bar chart as a caption and a table; `None` when there is nothing to draw.
fn bar_chart(
    id: &str,
    columns: &[ColumnView<'_>],
    x: usize,
    y: &[usize],
    rows: &[Vec<Value>],
) -> Result<Option<String>, fmt::Error> {
    let labels = label_columns(columns, x, y, rows);
    let series: Vec<Vec<Option<f64>>> =
        y.iter().map(|&i| rows.iter().map(|r| r.get(i).and_then(number)).collect()).collect();
    if series.iter().flatten().all(Option::is_none) {
        return Ok(None);
    }
    let formats: Vec<NumberFormat> =
        y.iter().map(|&i| NumberFormat::of(&columns[i].name, true, i, rows)).collect();
    let n = rows.len();
    let additive = y.iter().all(|&i| adds_up(&columns[i].name));
    let room = if n > MAX_BARS && additive { MAX_BARS - 1 } else { MAX_BARS };
    let kept = pick(&series[0], room);

    let row_label = |row: &[Value]| -> String {
        let parts: Vec<String> =
            labels.iter().map(|&i| label(row.get(i).unwrap_or(&Value::Null))).collect();
        parts.join(" ")
    };
    let mut bars: Vec<BarRow> = kept
        .iter()
        .map(|&r| BarRow {
            label: row_label(&rows[r]),
            values: y
                .iter()
                .zip(&formats)
                .enumerate()
                .map(|(s, (&i, format))| {
                    let v = series[s][r]?;
                    let raw = rows[r].get(i)?;
                    Some((v, format.text(raw).unwrap_or_else(|| format.number_text(v))))
                })
                .collect(),
            others: false,
        })
        .collect();
    let left_out = n - kept.len();
    if left_out > 0 && additive {
        let values = (0..y.len())
            .map(|s| {
                let rest: Vec<f64> =
                    (0..n).filter(|r| !kept.contains(r)).filter_map(|r| series[s][r]).collect();
                let total: f64 = rest.iter().sum();
                (!rest.is_empty()).then(|| (total, formats[s].number_text(total)))
            })
            .collect();
        bars.push(BarRow { label: format!("Others ({left_out})"), values, others: true });
    }

    let measures: Vec<String> = y.iter().map(|&i| phrase(&columns[i].name)).collect();
    let by = match labels.as_slice() {
        [one] => phrase(&columns[*one].name),
        _ => "name".to_owned(),
    };
    let caption = format!("{} by {by}", capitalized(&listing(&measures)));
    let note = match (left_out, additive) {
        (0, _) => None,
        (_, true) => Some(format!(
            "The {} largest of {n} are shown; the other {left_out} are added up in Others.",
            kept.len()
        )),
        (_, false) if is_sorted(&series[0]) => {
            Some(format!("The first {} of {n} are shown; {left_out} are left out.", kept.len()))
        }
        (_, false) => {
            Some(format!("The {} largest of {n} are shown; {left_out} are left out.", kept.len()))
        }
    };
    write_bar_chart(id, &caption, note.as_deref(), &measures, &bars).map(Some)
}

/// Where a bar starts and ends on its track, for values from `low` to `high`.
fn bar_span(v: f64, low: f64, high: f64) -> (f64, f64) {
    let at = |v: f64| (v - low) / (high - low) * TRACK;
    let (zero, end) = (at(0.0), at(v));
    let (start, width) = (zero.min(end), (end - zero).abs());
    // A value that is not zero stays visible.
    if v != 0.0 && width < 3.0 {
        (if v < 0.0 { zero - 3.0 } else { zero }, 3.0)
    } else {
        (start, width)
    }
}

/// The caption, legend and table of a bar chart.
fn write_bar_chart(
    id: &str,
    caption: &str,
    note: Option<&str>,
    measures: &[String],
    bars: &[BarRow],
) -> Result<String, fmt::Error> {
    // The scale is the named bars': an "Others" bar larger than them all would
    // flatten them, so it is cut at the end of the track and drawn broken.
    let named = || bars.iter().filter(|b| !b.others);
    let scaled = if named().any(|b| b.values.iter().any(Option::is_some)) {
        named().collect::<Vec<_>>()
    } else {
        bars.iter().collect()
    };
    let values = || scaled.iter().flat_map(|b| b.values.iter().flatten().map(|(v, _)| *v));
    let low = values().fold(0.0f64, f64::min);
    let mut high = values().fold(0.0f64, f64::max);
    if high - low <= 0.0 {
        high = low + 1.0;
    }
    let k = measures.len();
    let height = if k == 1 { 14 } else { 10 };
    let mut out = String::with_capacity(1024 + bars.len() * k * 400);
    let id = Escaped(id);
    write!(out, r#"<figcaption class="chart-caption" id="{id}">{}"#, Escaped(caption))?;
    if let Some(note) = note {
        write!(out, r#"<span class="chart-note">{}</span>"#, Escaped(note))?;
    }
    out.push_str("</figcaption>");
    if k > 1 {
        write_html_legend(&mut out, measures)?;
    }
    write!(out, r#"<table class="bar-chart" aria-labelledby="{id}"><tbody>"#)?;
    for bar in bars {
        let class = if bar.others { r#" class="others""# } else { "" };
        let shown = if bar.label.chars().count() > MAX_BAR_LABEL_CHARS {
            let cut: String = bar.label.chars().take(MAX_BAR_LABEL_CHARS - 1).collect();
            format!("{cut}…")
        } else {
            bar.label.clone()
        };
        for (s, value) in bar.values.iter().enumerate() {
            write!(out, "<tr{class}>")?;
            if s == 0 {
                let span = if k > 1 { format!(r#" rowspan="{k}""#) } else { String::new() };
                write!(
                    out,
                    r#"<th scope="row"{span} title="{}">{}</th>"#,
                    Escaped(&bar.label),
                    Escaped(&shown)
                )?;
            }
            write!(
                out,
                r#"<td class="bar"><svg viewBox="0 0 {TRACK} {height}" preserveAspectRatio="none" width="100%" height="{height}" aria-hidden="true" focusable="false">"#,
            )?;
            if let Some((v, text)) = value {
                let broken = *v > high || *v < low;
                let (start, width) = bar_span(v.clamp(low, high), low, high);
                let tip = match (k > 1, broken) {
                    (true, _) => format!("{}, {}: {text}", bar.label, measures[s]),
                    (false, false) => format!("{}: {text}", bar.label),
                    (false, true) => format!("{}: {text} (longer than drawn)", bar.label),
                };
                let (class, fill) = match bar.others {
                    true => ("others".to_owned(), OTHERS),
                    false => (format!("series-{}", s % PALETTE.len()), colour(s)),
                };
                write!(
                    out,
                    r#"<rect class="{class}" x="{start:.1}" y="0" width="{width:.1}" height="{height}" fill="{fill}"><title>{}</title></rect>"#,
                    Escaped(&tip),
                )?;
                if broken {
                    // Two white slashes near the cut end: the bar goes on.
                    let end = if *v > high { start + width - 80.0 } else { start + 50.0 };
                    write!(
                        out,
                        r#"<path class="break" d="M{:.1} {height} L{:.1} 0 M{:.1} {height} L{:.1} 0" stroke="{PAPER}" stroke-width="3" vector-effect="non-scaling-stroke"/>"#,
                        end,
                        end + 10.0,
                        end + 20.0,
                        end + 30.0,
                    )?;
                }
            }
            if low < 0.0 {
                let zero = -low / (high - low) * TRACK;
                write!(
                    out,
                    r#"<line x1="{zero:.1}" x2="{zero:.1}" y1="0" y2="{height}" stroke="{INK}" stroke-width="1" vector-effect="non-scaling-stroke"/>"#,
                )?;
            }
            out.push_str(r#"</svg></td><td class="num">"#);
            if k > 1 {
                write!(out, r#"<span class="sr-only">{}: </span>"#, Escaped(&measures[s]))?;
            }
            match value {
                Some((_, text)) => write!(out, "{}", Escaped(text))?,
                None => out.push_str(r#"<span class="muted">none</span>"#),
            }
            out.push_str("</td></tr>");
        }
    }
    out.push_str("</tbody></table>");
    Ok(out)
}

/// A colour swatch and name per series, in the page's text.
fn write_html_legend(out: &mut String, names: &[String]) -> fmt::Result {
    out.push_str(r#"<ul class="chart-legend" aria-hidden="true">"#);
    for (s, name) in names.iter().enumerate() {
        write!(
            out,
            r#"<li><svg width="12" height="12" viewBox="0 0 12 12" focusable="false"><rect class="swatch series-{}" width="12" height="12" fill="{}"/></svg>{}</li>"#,
            s % PALETTE.len(),
            colour(s),
            Escaped(name),
        )?;
    }
    out.push_str("</ul>");
    Ok(())
}

// ---------------------------------------------------------------------------
// Lines

/// The values of a line chart: one label per row and, per series, one value per row.
#[derive(Debug)]
struct Data {
    labels: Vec<String>,
    series: Vec<Vec<Option<f64>>>,
}

impl Data {
    /// The points of a line along column `x`, of the measures `y`; `None` with no number.
    fn extract(x: usize, y: &[usize], rows: &[Vec<Value>]) -> Option<Self> {
        let mut rows: Vec<&Vec<Value>> = rows.iter().take(MAX_POINTS).collect();
        // A line goes along x whatever order the query gave (a count per day
        // ranked by the count): numbers by value, dates and text as written
        // (ISO dates sort by date), no value last.
        rows.sort_by(|a, b| {
            let key = |r: &Vec<Value>| match r.get(x) {
                Some(Value::Number(n)) => (0, n.as_f64().unwrap_or(0.0), String::new()),
                Some(Value::String(s)) => (1, 0.0, s.clone()),
                Some(Value::Null) | None => (3, 0.0, String::new()),
                Some(other) => (2, 0.0, other.to_string()),
            };
            let (ka, kb) = (key(a), key(b));
            ka.0.cmp(&kb.0).then(ka.1.total_cmp(&kb.1)).then_with(|| ka.2.cmp(&kb.2))
        });
        let labels = rows.iter().map(|row| label(row.get(x).unwrap_or(&Value::Null))).collect();
        let series: Vec<Vec<Option<f64>>> = y
            .iter()
            .map(|&i| rows.iter().map(|row| row.get(i).and_then(number)).collect())
            .collect();
        // Also covers no rows.
        if series.iter().flatten().all(Option::is_none) {
            return None;
        }
        Some(Data { labels, series })
    }

    /// Every number drawn.
    fn values(&self) -> impl Iterator<Item = f64> + '_ {
        self.series.iter().flatten().flatten().copied()
    }
}

/// A line chart as a caption and an SVG for wide and one for narrow screens.
fn line_chart(
    id: &str,
    columns: &[ColumnView<'_>],
    x: usize,
    y: &[usize],
    rows: &[Vec<Value>],
) -> Result<Option<String>, fmt::Error> {
    let Some(data) = Data::extract(x, y, rows) else { return Ok(None) };
    let (low, high) = data.values().fold((0.0f64, 0.0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let Some(ticks) = ticks(low, high) else { return Ok(None) };
    let names: Vec<String> = y.iter().map(|&i| columns[i].name.to_string()).collect();
    let measures: Vec<String> = names.iter().map(|n| phrase(n)).collect();
    let caption = format!("{} by {}", capitalized(&listing(&measures)), phrase(&columns[x].name));
    let mut out = format!(
        r#"<figcaption class="chart-caption" id="{}">{}</figcaption><div class="line-chart">"#,
        Escaped(id),
        Escaped(&caption)
    );
    for canvas in [&WIDE, &NARROW] {
        render(&mut out, id, canvas, &names, &data, ticks.clone())?;
    }
    out.push_str("</div>");
    Ok(Some(out))
}

/// The text of a category or an x-axis value ([`CellText::Label`]): a
/// timestamp at midnight shows as its date.
fn label(value: &Value) -> String {
    CellText::Label.text(value).into_owned()
}

/// At most [`MAX_LABEL_CHARS`] chars, cut with an ellipsis; control chars become spaces.
fn short(text: &str) -> Cow<'_, str> {
    let count = text.chars().count();
    if count <= MAX_LABEL_CHARS && !text.contains(char::is_control) {
        return Cow::Borrowed(text);
    }
    let keep = if count <= MAX_LABEL_CHARS { count } else { MAX_LABEL_CHARS - 1 };
    let mut out: String =
        text.chars().take(keep).map(|c| if c.is_control() { ' ' } else { c }).collect();
    if count > keep {
        out.push('…');
    }
    Cow::Owned(out)
}

impl Canvas {
    /// An estimate of the drawn width of a label.
    fn text_width(&self, text: &str) -> f64 {
        text.chars().count() as f64 * self.char_width
    }
}

/// Gridline values: a round step, from `min(0, low)` to a round value at or above `high`;
/// `None` when the range is too extreme to draw.
fn ticks(low: f64, high: f64) -> Option<Vec<f64>> {
    let (low, mut high) = (low.min(0.0), high.max(0.0));
    if high - low < 1e-200 {
        high = low + 1.0;
    }
    let raw = (high - low) / 5.0;
    let exponent = raw.log10().floor() as i32;
    let magnitude = 10f64.powi(exponent);
    let multiple =
        [1.0, 2.0, 2.5, 5.0, 10.0].into_iter().find(|&m| raw <= m * magnitude).unwrap_or(10.0);
    let step = multiple * magnitude;
    let (first, last) = ((low / step).floor(), (high / step).ceil());
    // Dividing by an exact power of ten keeps 0.6 from becoming 0.6000000000000001.
    let at = |k: f64| {
        let v = if exponent < 0 {
            k * multiple / 10f64.powi(-exponent)
        } else {
            k * multiple * magnitude
        };
        v + 0.0 // no -0
    };
    let ticks: Vec<f64> = (0..=(last - first) as i64).map(|i| at(first + i as f64)).collect();
    let span = ticks[ticks.len() - 1] - ticks[0];
    (ticks.len() > 1 && span.is_finite() && span > 0.0).then_some(ticks)
}

/// A short number for an axis: `1.2k`, `3.4M`, `0.25`.
fn compact_number(v: f64) -> String {
    const UNITS: [(f64, &str); 4] = [(1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")];
    let a = v.abs();
    // A unit is used from where two decimals of it would round up to 1.
    for (unit, suffix) in UNITS {
        if a >= unit * 0.9995 {
            return format!("{}{suffix}", decimals(v / unit, 2));
        }
    }
    if a == 0.0 || a >= 1.0 {
        return decimals(v, 2);
    }
    let places = (2.0 - a.log10().floor()).clamp(2.0, 12.0) as usize;
    decimals(v, places)
}

/// A number with at most `places` decimals, trailing zeros trimmed.
fn decimals(v: f64, places: usize) -> String {
    let s = format!("{v:.places$}");
    let s = if s.contains('.') { s.trim_end_matches('0').trim_end_matches('.') } else { &s };
    if s == "-0" { "0".to_owned() } else { s.to_owned() }
}

/// A number in full for a tooltip.
fn full(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 { format!("{v:.0}") } else { v.to_string() }
}

/// The colour of a series.
fn colour(series: usize) -> &'static str {
    PALETTE[series % PALETTE.len()]
}

/// Where things go: the plot area inside the margins and the x of every point.
#[derive(Debug)]
struct Plot {
    left: f64,
    right: f64,
    top: f64,
    bottom: f64,
    ticks: Vec<f64>,
    /// The position of each point.
    xs: Vec<f64>,
    /// The distance between neighbouring `xs`.
    spacing: f64,
}

impl Plot {
    fn new(canvas: &Canvas, n: usize, ticks: Vec<f64>, tick_labels: &[String], top: f64) -> Self {
        let widest_tick = tick_labels.iter().map(|t| canvas.text_width(t)).fold(0.0, f64::max);
        let (left, right) = ((widest_tick + 14.0).max(36.0), canvas.width - 16.0);
        let width = right - left;
        let (xs, spacing) = if n == 1 {
            (vec![left + width / 2.0], width)
        } else {
            let gap = width / (n - 1) as f64;
            ((0..n).map(|i| left + gap * i as f64).collect(), gap)
        };
        let bottom = canvas.height - canvas.font * 2.2;
        Plot { left, right, top, bottom, ticks, xs, spacing }
    }

    /// The vertical position of a value.
    fn y(&self, v: f64) -> f64 {
        let (min, max) = (self.ticks[0], self.ticks[self.ticks.len() - 1]);
        self.top + (max - v) / (max - min) * (self.bottom - self.top)
    }
}

/// A legend entry: its series, position and text.
#[derive(Debug)]
struct LegendItem<'a> {
    series: usize,
    x: f64,
    y: f64,
    text: Cow<'a, str>,
}

/// Legend entries laid out in at most four rows from the top left; the height they take.
fn legend<'a>(canvas: &Canvas, names: &'a [String]) -> (Vec<LegendItem<'a>>, f64) {
    const ROWS: usize = 4;
    let row_height = canvas.font + 5.0;
    if names.len() < 2 {
        return (Vec::new(), 0.0);
    }
    let (mut items, mut x, mut row) = (Vec::new(), 8.0, 0);
    for (series, name) in names.iter().enumerate() {
        let text = short(name);
        let width = 14.0 + canvas.text_width(&text) + 14.0;
        if x + width > canvas.width - 8.0 && x > 8.0 {
            row += 1;
            x = 8.0;
        }
        if row == ROWS {
            break;
        }
        items.push(LegendItem { series, x, y: 8.0 + row as f64 * row_height, text });
        x += width;
    }
    (items, (row.min(ROWS - 1) + 1) as f64 * row_height)
}

/// The tooltip of one value: its full label, its series when there are several, and the number.
fn tooltip(data: &Data, y: &[String], i: usize, series: usize, v: f64) -> String {
    if y.len() > 1 {
        format!("{}, {}: {}", data.labels[i], y[series], full(v))
    } else {
        format!("{}: {}", data.labels[i], full(v))
    }
}

/// One SVG of a line chart, labelled by the caption `id`.
fn render(
    out: &mut String,
    id: &str,
    canvas: &Canvas,
    y: &[String],
    data: &Data,
    ticks: Vec<f64>,
) -> fmt::Result {
    let tick_labels: Vec<String> = ticks.iter().map(|&t| compact_number(t)).collect();
    let (legend, legend_height) = legend(canvas, y);
    let top = if legend.is_empty() { 12.0 } else { 18.0 + legend_height };
    let plot = Plot::new(canvas, data.labels.len(), ticks, &tick_labels, top);
    let (width, height, font) = (canvas.width, canvas.height, canvas.font);
    write!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" class="chart-svg {}" viewBox="0 0 {width} {height}" width="100%" preserveAspectRatio="xMidYMid meet" role="img" aria-labelledby="{}" font-family="system-ui, sans-serif" font-size="{font}" fill="{INK}">"#,
        canvas.class,
        Escaped(id),
    )?;
    write_grid(out, canvas, &plot, &tick_labels)?;
    write_lines(out, &plot, y, data)?;
    let zero = plot.y(0.0);
    write!(
        out,
        r#"<line class="axis" x1="{:.1}" x2="{:.1}" y1="{zero:.1}" y2="{zero:.1}" stroke="{INK}" stroke-width="1"/>"#,
        plot.left, plot.right,
    )?;
    write_x_labels(out, canvas, &plot, data)?;
    write_legend(out, canvas, &legend)?;
    out.push_str("</svg>");
    Ok(())
}

/// Horizontal gridlines with their values.
fn write_grid(
    out: &mut String,
    canvas: &Canvas,
    plot: &Plot,
    tick_labels: &[String],
) -> fmt::Result {
    out.push_str(r#"<g class="grid">"#);
    for (&t, text) in plot.ticks.iter().zip(tick_labels) {
        let ty = plot.y(t);
        write!(
            out,
            r#"<line x1="{:.1}" x2="{:.1}" y1="{ty:.1}" y2="{ty:.1}" stroke="{GRID}" stroke-width="1"/><text class="tick" x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
            plot.left,
            plot.right,
            plot.left - 6.0,
            ty + canvas.font / 3.0,
            Escaped(text),
        )?;
    }
    out.push_str("</g>");
    Ok(())
}

/// A polyline per series through its numbers, with markers when there are few points.
fn write_lines(out: &mut String, plot: &Plot, y: &[String], data: &Data) -> fmt::Result {
    out.push_str(r#"<g class="lines">"#);
    for (s, values) in data.series.iter().enumerate() {
        let class = s % PALETTE.len();
        write!(
            out,
            r#"<polyline class="line series-{class}" fill="none" stroke="{}" stroke-width="2" stroke-linejoin="round" stroke-linecap="round" points=""#,
            colour(s),
        )?;
        let points = values.iter().zip(&plot.xs).filter_map(|(v, &px)| Some((px, plot.y((*v)?))));
        for (k, (px, py)) in points.enumerate() {
            write!(out, "{}{px:.1},{py:.1}", if k == 0 { "" } else { " " })?;
        }
        write!(out, r#""><title>{}</title></polyline>"#, Escaped(&y[s]))?;
        if values.len() > MAX_MARKERS {
            continue;
        }
        for (i, v) in values.iter().enumerate() {
            let Some(v) = *v else { continue };
            write!(
                out,
                r#"<circle class="point series-{class}" cx="{:.1}" cy="{:.1}" r="3" fill="{}"><title>{}</title></circle>"#,
                plot.xs[i],
                plot.y(v),
                colour(s),
                Escaped(&tooltip(data, y, i, s, v)),
            )?;
        }
    }
    out.push_str("</g>");
    Ok(())
}

/// The x labels, cut short, every k-th one so that neighbours never overlap.
fn write_x_labels(out: &mut String, canvas: &Canvas, plot: &Plot, data: &Data) -> fmt::Result {
    let shorts: Vec<Cow<'_, str>> = data.labels.iter().map(|l| short(l)).collect();
    let widest = shorts.iter().map(|l| canvas.text_width(l)).fold(0.0, f64::max) + 8.0;
    let every = ((widest / plot.spacing).ceil() as usize).max(1);
    out.push_str(r#"<g class="axis x-axis" text-anchor="middle">"#);
    let mut drawn_to = f64::NEG_INFINITY;
    for (i, text) in shorts.iter().enumerate().step_by(every) {
        // Kept inside the chart: the first and last point sit on the plot's edges.
        let half = canvas.text_width(text) / 2.0;
        let lx = plot.xs[i].clamp(half + 2.0, canvas.width - half - 2.0);
        // Pushed in from the edge, the last label may reach its neighbour: left out then.
        if lx - half < drawn_to + 4.0 {
            continue;
        }
        drawn_to = lx + half;
        write!(
            out,
            r#"<text class="x-label" x="{lx:.1}" y="{:.1}">{}</text>"#,
            plot.bottom + canvas.font * 1.5,
            Escaped(text),
        )?;
    }
    out.push_str("</g>");
    Ok(())
}

/// A colour swatch and name per series (nothing for a single series).
fn write_legend(out: &mut String, canvas: &Canvas, legend: &[LegendItem<'_>]) -> fmt::Result {
    if legend.is_empty() {
        return Ok(());
    }
    out.push_str(r#"<g class="legend">"#);
    for item in legend {
        write!(
            out,
            r#"<rect class="swatch series-{}" x="{:.1}" y="{:.1}" width="10" height="10" fill="{}"/><text x="{:.1}" y="{:.1}">{}</text>"#,
            item.series % PALETTE.len(),
            item.x,
            item.y,
            colour(item.series),
            item.x + 14.0,
            item.y + canvas.font * 0.8,
            Escaped(&item.text),
        )?;
    }
    out.push_str("</g>");
    Ok(())
}

#[cfg(test)]
mod tests {
    use custard_core::format::is_numeric_type;
    use serde_json::json;

    use super::*;

    /// Columns from `name:type` pairs.
    fn cols(spec: &[&str]) -> Vec<ColumnView<'static>> {
        spec.iter()
            .map(|s| {
                let (name, type_name) = s.split_once(':').unwrap_or((s, "text"));
                ColumnView { name: name.to_owned().into(), type_name: type_name.to_owned().into() }
            })
            .collect()
    }

    fn names(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| (*n).to_owned()).collect()
    }

    /// Rows from a JSON array of arrays.
    fn rows(value: Value) -> Vec<Vec<Value>> {
        serde_json::from_value(value).unwrap()
    }

    /// A chart as the history stores it (`{"type": kind, ...}`); a kind
    /// this server does not know reads as none.
    fn spec(kind: &str, x: &str, y: &[&str]) -> Option<ChartView<'static>> {
        serde_json::from_value(json!({"type": kind, "x": x, "y": names(y)})).ok()
    }

    fn chart(kind: &str, x: &str, y: &[&str], columns: &[&str], data: Value) -> Option<String> {
        html("chart-1", &spec(kind, x, y)?, &cols(columns), &rows(data))
    }

    fn count(html: &str, needle: &str) -> usize {
        html.matches(needle).count()
    }

    /// The values of every `attr="..."` in the markup, in order.
    fn attrs<'a>(html: &'a str, attr: &str) -> Vec<&'a str> {
        let key = format!(" {attr}=\"");
        html.match_indices(&key)
            .map(|(i, _)| {
                let rest = &html[i + key.len()..];
                &rest[..rest.find('"').unwrap()]
            })
            .collect()
    }

    /// The text of every element whose start tag begins with `start`, in order.
    fn texts<'a>(html: &'a str, start: &str) -> Vec<&'a str> {
        html.match_indices(start)
            .map(|(i, _)| {
                let rest = &html[i..];
                let from = rest.find('>').unwrap() + 1;
                &rest[from..from + rest[from..].find('<').unwrap()]
            })
            .collect()
    }

    /// The bar labels of a bar chart.
    fn bar_labels(html: &str) -> Vec<&str> {
        texts(html, r#"<th scope="row""#)
    }

    /// The value texts of a bar chart.
    fn bar_values(html: &str) -> Vec<&str> {
        texts(html, r#"<td class="num">"#)
    }

    /// The start and width of every bar, in order.
    fn bar_spans(html: &str) -> Vec<(f64, f64)> {
        let number = |piece: &str, attr: &str| attrs(piece, attr)[0].parse::<f64>().unwrap();
        html.split("<rect ").skip(1).map(|p| (number(p, "x"), number(p, "width"))).collect()
    }

    fn assert_well_formed(html: &str) {
        assert!(html.starts_with(r#"<figcaption class="chart-caption" id="chart-1">"#), "{html}");
        assert!(!html.contains("style="), "no inline styles: {html}");
        assert!(!html.contains("NaN") && !html.contains("inf\""), "{html}");
        assert_eq!(count(html, "<table") + count(html, r#"<div class="line-chart">"#), 1);
        for id in attrs(html, "aria-labelledby") {
            assert_eq!(id, "chart-1", "{html}");
        }
    }

    #[test]
    fn bars_are_labelled_by_names_not_ids() {
        let html = chart(
            "bar",
            "id",
            &["unit_price"],
            &["id:INTEGER", "name:TEXT", "unit_price:REAL"],
            json!([
                [36, "Waxed Canvas Backpack", 129.0],
                [16, "Enamel Dutch Oven 24cm", 119.0],
                [19, "Wool Throw Blanket", 89.5]
            ]),
        )
        .unwrap();
        assert_well_formed(&html);
        assert_eq!(
            bar_labels(&html),
            ["Waxed Canvas Backpack", "Enamel Dutch Oven 24cm", "Wool Throw Blanket"]
        );
        assert_eq!(bar_values(&html), ["129.00", "119.00", "89.50"]);
        assert!(html.contains(">Unit price by name<"), "{html}");
        assert!(html.contains("<title>Waxed Canvas Backpack: 129.00</title>"), "{html}");
        assert_eq!(count(&html, "<rect "), 3);
        assert!(!html.contains("chart-legend"), "one series, no legend: {html}");
        // The longest bar fills the track; the others are in proportion.
        let spans = bar_spans(&html);
        assert_eq!(spans[0], (0.0, TRACK));
        assert!((spans[2].1 - 89.5 / 129.0 * TRACK).abs() < 0.1, "{spans:?}");
    }

    #[test]
    fn label_choice() {
        let check = |columns: &[&str], x: &str, y: &[&str], want: &[&str]| {
            let columns = cols(columns);
            let index = |n: &str| columns.iter().position(|c| c.name == n).unwrap();
            let row: Vec<Value> = columns
                .iter()
                .map(|c| if is_numeric_type(&c.type_name) { json!(1) } else { json!("a") })
                .collect();
            let y: Vec<usize> = y.iter().map(|n| index(n)).collect();
            let got = label_columns(&columns, index(x), &y, &[row]);
            let got: Vec<&str> = got.iter().map(|&i| &*columns[i].name).collect();
            assert_eq!(got, want, "{columns:?}");
        };
        check(&["id:int4", "name", "price:numeric"], "id", &["price"], &["name"]);
        check(&["id:int4", "title", "sku", "n:int8"], "id", &["n"], &["title"]);
        check(
            &["id:integer", "first_name", "last_name", "total:real"],
            "id",
            &["total"],
            &["first_name", "last_name"],
        );
        check(
            &["customerId:int4", "companyName", "n:int8"],
            "customerId",
            &["n"],
            &["companyName"],
        );
        check(&["status", "order_count:int8"], "status", &["order_count"], &["status"]);
        check(&["city", "country", "n:int8"], "country", &["n"], &["country"]);
        check(
            &["product_id:int4", "sku", "category", "n:int8"],
            "product_id",
            &["n"],
            &["category"],
        );
        check(&["product_id:int4", "sku", "n:int8"], "product_id", &["n"], &["product_id"]);
        check(&["year:int4", "created:date", "n:int8"], "year", &["n"], &["year"]);
        check(&["name:int4", "n:int8"], "name", &["n"], &["name"]);
    }

    #[test]
    fn many_categories_that_add_up_end_in_others() {
        let data: Vec<Value> =
            (0..48).map(|i| json!([i, format!("product {i:02}"), 1000 - i * 10])).collect();
        let html = chart(
            "bar",
            "id",
            &["total_quantity"],
            &["id:INTEGER", "name:TEXT", "total_quantity:integer"],
            Value::Array(data),
        )
        .unwrap();
        assert_well_formed(&html);
        let labels = bar_labels(&html);
        assert_eq!(labels.len(), MAX_BARS, "{labels:?}");
        assert_eq!(labels[0], "product 00");
        assert_eq!(labels[MAX_BARS - 2], "product 10");
        assert_eq!(labels[MAX_BARS - 1], "Others (37)");
        let rest: i64 = (11..48).map(|i| 1000 - i * 10).sum();
        assert_eq!(
            bar_values(&html)[MAX_BARS - 1],
            custard_core::format::grouped(&rest.to_string())
        );
        assert!(html.contains("the other 37 are added up in Others"), "{html}");
        assert_eq!(count(&html, r#"<tr class="others">"#), 1);
        // The named bars keep their scale; the larger Others bar is cut and marked.
        let spans = bar_spans(&html);
        assert_eq!(spans[0], (0.0, TRACK));
        assert_eq!(spans[MAX_BARS - 1], (0.0, TRACK));
        assert_eq!(count(&html, r#"<rect class="others""#), 1);
        assert_eq!(count(&html, r#"<path class="break""#), 1);
        assert!(html.contains("(longer than drawn)</title>"), "{html}");
        assert_eq!(count(&html, "1,000"), 2, "a value and its tooltip: {html}");
    }

    #[test]
    fn a_small_others_bar_is_drawn_to_scale() {
        let data: Vec<Value> =
            (0..14).map(|i| json!([format!("c{i:02}"), 1000 - i * 70])).collect();
        let html = chart("bar", "c", &["n"], &["c", "n:int8"], Value::Array(data)).unwrap();
        let spans = bar_spans(&html);
        let others = (1000 - 11 * 70) + (1000 - 12 * 70) + (1000 - 13 * 70);
        assert!((spans[MAX_BARS - 1].1 - others as f64 / 1000.0 * TRACK).abs() < 0.1, "{spans:?}");
        assert!(!html.contains("break"), "{html}");
    }

    #[test]
    fn many_categories_that_do_not_add_up_are_cut() {
        // Unsorted: the largest are kept, in the result's order.
        let data: Vec<Value> =
            (0..30).map(|i| json!([format!("p{i:02}"), ((i * 7) % 30) as f64 + 0.5])).collect();
        let html =
            chart("bar", "name", &["unit_price"], &["name", "unit_price:REAL"], Value::Array(data))
                .unwrap();
        let labels = bar_labels(&html);
        assert_eq!(labels.len(), MAX_BARS);
        assert!(!html.contains("Others"), "{html}");
        let values: Vec<f64> = bar_values(&html).iter().map(|v| v.parse().unwrap()).collect();
        assert!(values.iter().all(|&v| v >= 18.5), "the 12 largest of 0.5..29.5: {values:?}");
        assert!(html.contains("The 12 largest of 30 are shown; 18 are left out."), "{html}");

        // Ranked by the query: the first are kept.
        let data: Vec<Value> = (0..20).map(|i| json!([format!("p{i:02}"), 100 - i])).collect();
        let html = chart(
            "bar",
            "name",
            &["average_price"],
            &["name", "average_price:real"],
            Value::Array(data),
        )
        .unwrap();
        assert_eq!(bar_labels(&html).first(), Some(&"p00"));
        assert_eq!(bar_labels(&html).last(), Some(&"p11"));
        assert!(html.contains("The first 12 of 20 are shown; 8 are left out."), "{html}");
    }

    #[test]
    fn column_names_for_people() {
        let cases = [
            ("unit_price", "unit price"),
            ("avg_unitPrice", "average unit price"),
            ("max_qty", "maximum quantity"),
            ("GDP_per_capita", "GDP per capita"),
            ("A", "a"),
            ("who's", "who's"),
        ];
        for (name, want) in cases {
            assert_eq!(phrase(name), want, "{name}");
        }
    }

    #[test]
    fn measures_that_add_up() {
        for name in
            ["order_count", "total_amount", "revenue", "orders", "n", "sum_qty", "customerCount"]
        {
            assert!(adds_up(name), "{name}");
        }
        for name in [
            "average_total_amount",
            "unit_price",
            "max_total",
            "avg_rating",
            "status",
            "conversion_rate",
            "revenue_per_customer",
        ] {
            assert!(!adds_up(name), "{name}");
        }
    }

    #[test]
    fn numbers_are_shown_for_people() {
        let html = chart(
            "bar",
            "region",
            &["sum"],
            &["region", "sum:numeric"],
            json!([["north", "1234567.89"], ["south", " 2500000 "], ["east", "-0.5e3"]]),
        )
        .unwrap();
        assert_eq!(bar_values(&html), ["1,234,568", "2,500,000", "-500"]);
        assert!(html.contains("<title>south: 2,500,000</title>"), "{html}");
    }

    #[test]
    fn negative_values_go_left_of_zero() {
        let html = chart(
            "bar",
            "q",
            &["delta"],
            &["q", "delta:int4"],
            json!([["q1", -30], ["q2", 100], ["q3", -5]]),
        )
        .unwrap();
        let zero = 30.0 / 130.0 * TRACK;
        let line: f64 = attrs(&html, "x1")[0].parse().unwrap();
        assert!((line - zero).abs() < 0.1, "{html}");
        let spans = bar_spans(&html);
        assert!((spans[0].0 - 0.0).abs() < 0.1 && (spans[0].0 + spans[0].1 - zero).abs() < 0.2);
        assert!((spans[1].0 - zero).abs() < 0.1 && (spans[1].0 + spans[1].1 - TRACK).abs() < 0.2);
        assert!(spans[2].0 + spans[2].1 - zero < 0.2 && spans[2].1 > 3.0, "{spans:?}");
    }

    #[test]
    fn tiny_values_stay_visible() {
        let html =
            chart("bar", "c", &["n"], &["c", "n:int8"], json!([["a", 100000], ["b", 1], ["c", 0]]))
                .unwrap();
        let spans = bar_spans(&html);
        assert_eq!(spans[1].1, 3.0, "{spans:?}");
        assert_eq!(spans[2].1, 0.0, "{spans:?}");
    }

    #[test]
    fn two_series_have_a_row_each_and_a_legend() {
        let html = chart(
            "bar",
            "shop",
            &["orders", "returns"],
            &["shop", "orders:int8", "returns:int8"],
            json!([["a", 10, 1], ["b", 20, null], ["c", 15, 3]]),
        )
        .unwrap();
        assert_well_formed(&html);
        assert_eq!(bar_labels(&html), ["a", "b", "c"]);
        assert_eq!(count(&html, r#"rowspan="2""#), 3);
        assert_eq!(count(&html, r#"<rect class="series-0""#), 3);
        assert_eq!(count(&html, r#"<rect class="series-1""#), 2);
        assert!(html.contains(r#"<ul class="chart-legend""#), "{html}");
        assert_eq!(count(&html, r#"class="swatch"#), 2);
        assert!(html.contains("<title>b, orders: 20</title>"), "{html}");
        assert!(
            html.contains(
                r#"<span class="sr-only">returns: </span><span class="muted">none</span>"#
            )
        );
        assert!(html.contains(">Orders and returns by shop<"), "{html}");
    }

    #[test]
    fn data_text_is_escaped() {
        let html = chart(
            "bar",
            "who's",
            &["<b>n</b>", "m&m"],
            &["who's", "<b>n</b>:int4", "m&m:int4"],
            json!([["<script>alert(\"x\")</script>", 1, 2], ["a'b & c", 3, 4]]),
        )
        .unwrap();
        assert!(!html.contains("<script"), "{html}");
        assert!(!html.contains("<b>"), "{html}");
        assert!(html.contains("&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;"), "{html}");
        assert!(html.contains("a&#39;b &amp; c"), "{html}");
        let line = chart(
            "line",
            "<at>",
            &["<b>n</b>"],
            &["<at>:date", "<b>n</b>:int4"],
            json!([["<2026>", 1], ["2027", 2]]),
        )
        .unwrap();
        assert!(!line.contains("<b>") && !line.contains("<2026>"), "{line}");
        assert!(line.contains(">&lt;2026&gt;</text>"), "{line}");
        assert!(line.contains("&lt;b&gt;n&lt;/b&gt; by &lt;at&gt;</figcaption>"), "{line}");
        let id = html_id("a\"b");
        assert!(id.contains(r#"id="a&quot;b""#) && !id.contains(r#"id="a"b""#), "{id}");
    }

    fn html_id(id: &str) -> String {
        let bar = spec("bar", "a", &["b"]).unwrap();
        html(id, &bar, &cols(&["a", "b:int4"]), &rows(json!([["x", 1]]))).unwrap()
    }

    #[test]
    fn long_labels_wrap_and_very_long_ones_are_cut() {
        let long = "x".repeat(100);
        let html =
            chart("bar", "c", &["v"], &["c", "v:int4"], json!([[long, 1], ["b", 2]])).unwrap();
        let labels = bar_labels(&html);
        assert_eq!(labels[0].chars().count(), MAX_BAR_LABEL_CHARS);
        assert!(labels[0].ends_with('…'));
        assert!(html.contains(&format!(r#"title="{long}""#)), "{html}");
    }

    #[test]
    fn nothing_to_draw_is_none() {
        let columns = ["a", "b:int4"];
        let data = || json!([["x", 1], ["y", 2]]);
        assert!(chart("bar", "a", &["b"], &columns, data()).is_some());
        assert_eq!(chart("pie", "a", &["b"], &columns, data()), None, "unknown kind");
        assert_eq!(chart("bar", "c", &["b"], &columns, data()), None, "missing x");
        assert_eq!(chart("bar", "a", &["b", "c"], &columns, data()), None, "missing y");
        assert_eq!(chart("bar", "a", &[], &columns, data()), None, "no measures");
        assert_eq!(chart("line", "a", &["b"], &columns, json!([])), None, "no rows");
        assert_eq!(chart("bar", "a", &["b"], &columns, json!([])), None, "no rows");
        let nulls = json!([["x", null], ["y", "abc"], ["z", true], ["w", "NaN"]]);
        assert_eq!(chart("bar", "a", &["b"], &columns, nulls), None, "no numbers");
        assert_eq!(chart("bar", "a", &["b"], &columns, json!([["x"], []])), None, "short rows");
    }

    /// The number of points of each polyline.
    fn polyline_points(html: &str) -> Vec<usize> {
        attrs(html, "points").iter().map(|p| p.split_whitespace().count()).collect()
    }

    #[test]
    fn a_line_chart_is_drawn_for_wide_and_narrow_screens() {
        let html = chart(
            "line",
            "month",
            &["revenue"],
            &["month:timestamptz", "revenue:numeric"],
            json!([
                ["2026-01-01T00:00:00+00:00", 10],
                ["2026-02-01T00:00:00+00:00", null],
                ["2026-03-01T00:00:00+00:00", "12.5"],
                ["2026-04-01T00:00:00+00:00", "n/a"],
                ["2026-05-01T00:00:00+00:00", 8]
            ]),
        )
        .unwrap();
        assert_well_formed(&html);
        assert!(html.contains(">Revenue by month</figcaption>"), "{html}");
        assert_eq!(count(&html, r#"class="chart-svg wide""#), 1);
        assert_eq!(count(&html, r#"class="chart-svg narrow""#), 1);
        assert_eq!(attrs(&html, "viewBox"), ["0 0 640 320", "0 0 340 260"]);
        assert_eq!(attrs(&html, "font-size"), ["13", "12"]);
        assert_eq!(polyline_points(&html), [3, 3]);
        assert_eq!(count(&html, "<circle "), 6);
        assert_eq!(texts(&html, r#"<text class="x-label""#)[0], "2026-01-01");
    }

    #[test]
    fn a_line_goes_along_x_whatever_the_row_order() {
        let html = chart(
            "line",
            "day",
            &["n"],
            &["day:date", "n:int8"],
            json!([["2026-01-03", 30], ["2026-01-01", 10], [null, 5], ["2026-01-02", 20]]),
        )
        .unwrap();
        let wide = html.split("<svg ").nth(1).unwrap();
        let labels = texts(wide, r#"<text class="x-label""#);
        assert_eq!(labels.first(), Some(&"2026-01-01"), "{labels:?}");
        assert_eq!(labels.last(), Some(&"(none)"), "{labels:?}");
        let points: Vec<(f64, f64)> = attrs(wide, "points")[0]
            .split_whitespace()
            .map(|p| {
                let (x, y) = p.split_once(',').unwrap();
                (x.parse().unwrap(), y.parse().unwrap())
            })
            .collect();
        // 10, 20, 30 then 5: up, up, down.
        assert!(points.windows(2).all(|w| w[0].0 < w[1].0), "{points:?}");
        assert!(points[0].1 > points[1].1 && points[1].1 > points[2].1, "{points:?}");
        assert!(points[3].1 > points[2].1, "{points:?}");
    }

    #[test]
    fn long_lines_are_capped_and_lose_their_markers() {
        let data: Vec<Value> = (0..1500).map(|i| json!([i, (i % 7) * 3])).collect();
        let html = chart("line", "n", &["v"], &["n:int4", "v:int4"], Value::Array(data)).unwrap();
        assert_eq!(polyline_points(&html), [MAX_POINTS, MAX_POINTS]);
        assert_eq!(count(&html, "<circle "), 0);
        let labels = texts(&html, r#"<text class="x-label""#);
        assert!(labels.len() > 4 && labels.len() < 60, "{labels:?}");
    }

    #[test]
    fn line_labels_never_overlap() {
        let data: Vec<Value> = (0..80).map(|i| json!([format!("category-{i:02}"), i])).collect();
        let html = chart("line", "c", &["v"], &["c", "v:int4"], Value::Array(data)).unwrap();
        for (svg, canvas) in html.split("<svg ").skip(1).zip([&WIDE, &NARROW]) {
            let xs: Vec<f64> = svg
                .split(r#"class="x-label""#)
                .skip(1)
                .map(|p| attrs(p, "x")[0].parse().unwrap())
                .collect();
            assert!(xs.len() > 2, "{svg}");
            let width = canvas.text_width("category-00");
            assert!(xs.windows(2).all(|w| w[1] - w[0] >= width), "{xs:?}");
        }
    }

    #[test]
    fn two_lines_have_a_legend() {
        let html = chart(
            "line",
            "day",
            &["orders", "returns"],
            &["day:date", "orders:int8", "returns:int8"],
            json!([["2026-01-01", 10, 1], ["2026-01-02", 20, null], ["2026-01-03", 15, 3]]),
        )
        .unwrap();
        assert_eq!(polyline_points(&html), [3, 2, 3, 2]);
        assert_eq!(count(&html, r#"<g class="legend">"#), 2);
    }

    #[test]
    fn labels() {
        let check = |value: Value, expected: &str| assert_eq!(label(&value), expected, "{value}");
        check(json!(null), "(none)");
        check(json!("paid"), "paid");
        check(json!(2024), "2024");
        check(json!(1.5), "1.5");
        check(json!(true), "true");
        check(json!("2026-03-01T00:00:00+00:00"), "2026-03-01");
        check(json!("2026-03-01 00:00:00"), "2026-03-01");
        check(json!("2026-03-01T00:00:00Z"), "2026-03-01");
        check(json!("2026-03-01T00:00:00.000000-05"), "2026-03-01");
        check(json!("2026-03-01T13:00:00+00:00"), "2026-03-01T13:00:00+00:00");
        check(json!("2026-03-01T00:00:00.5Z"), "2026-03-01T00:00:00.5Z");
        check(json!("2026-03-01T00:00:00 and more"), "2026-03-01T00:00:00 and more");
        check(json!("2026-03-01"), "2026-03-01");
        check(json!("é026-03-01T00:00:00Z"), "é026-03-01T00:00:00Z");
    }

    #[test]
    fn compact_numbers() {
        let check = |v: f64, expected: &str| assert_eq!(compact_number(v), expected, "{v}");
        check(0.0, "0");
        check(-0.0, "0");
        check(7.0, "7");
        check(999.0, "999");
        check(1200.0, "1.2k");
        check(1250.0, "1.25k");
        check(-1500.0, "-1.5k");
        check(3_400_000.0, "3.4M");
        check(999_999.0, "1M");
        check(2e9, "2B");
        check(1.5e13, "15T");
        check(0.25, "0.25");
        check(0.0025, "0.0025");
        check(12.345, "12.35");
    }

    #[test]
    fn ticks_are_round_and_cover_zero() {
        let check = |low: f64, high: f64, expected: &[f64]| {
            assert_eq!(ticks(low, high).unwrap(), expected, "{low}..{high}")
        };
        check(0.0, 101.0, &[0.0, 25.0, 50.0, 75.0, 100.0, 125.0]);
        check(35.5, 120.0, &[0.0, 25.0, 50.0, 75.0, 100.0, 125.0]);
        check(-30.0, 100.0, &[-50.0, 0.0, 50.0, 100.0]);
        check(-8.0, -2.0, &[-8.0, -6.0, -4.0, -2.0, 0.0]);
        check(0.0, 0.0, &[0.0, 0.2, 0.4, 0.6, 0.8, 1.0]);
        check(0.0, 0.0007, &[0.0, 0.0002, 0.0004, 0.0006, 0.0008]);
        check(3.0, 3.0, &[0.0, 1.0, 2.0, 3.0]);
        for high in [0.7, 9.0, 13.0, 51.0, 99.0, 1234.0, 7e6, 3.3e12] {
            let t = ticks(0.0, high).unwrap();
            assert!((4..=7).contains(&t.len()), "{high}: {t:?}");
            assert!(t[t.len() - 1] >= high && t[0] == 0.0, "{high}: {t:?}");
        }
        assert_eq!(ticks(-1e308, 1e308), None);
    }
}

//! Charts drawn on the server as inline SVG from an answer's declarative chart
//! spec: nothing runs in the browser and no generated code runs anywhere.
//!
//! The SVG scales with its container (a fixed `viewBox`, `width="100%"`), is
//! styled by presentation attributes and class names only (the pages'
//! Content-Security-Policy allows no inline `style`), and escapes every piece
//! of text that comes from data.

use std::borrow::Cow;
use std::fmt::{self, Write};

use serde_json::Value;

use super::Escaped;

const WIDTH: f64 = 640.0;
const HEIGHT: f64 = 320.0;
/// The most categories a bar chart draws; later rows are left out.
const MAX_CATEGORIES: usize = 50;
/// The most points a line chart draws; later rows are left out.
const MAX_POINTS: usize = 1000;
/// Points get a marker (with a tooltip) only up to this many.
const MAX_MARKERS: usize = 60;
/// Longer labels are cut with an ellipsis.
const MAX_LABEL_CHARS: usize = 16;
/// A generous average glyph width at the chart's font size, to keep labels apart.
const CHAR_WIDTH: f64 = 6.5;
const FONT_SIZE: f64 = 11.0;
const INK: &str = "#1c1b19";
const GRID: &str = "#dedbd4";
/// Okabe–Ito colours, distinguishable with the common colour-vision deficiencies.
const PALETTE: [&str; 6] = ["#0072b2", "#e69f00", "#009e73", "#cc79a7", "#56b4e9", "#d55e00"];

/// The chart as SVG markup, or `None` for an unknown kind, a missing column,
/// no rows or no numbers. `id` names its title (`aria-labelledby`): unique in the page.
pub(crate) fn svg(
    id: &str,
    kind: &str,
    x: &str,
    y: &[String],
    columns: &[String],
    rows: &[Vec<Value>],
) -> Option<String> {
    let kind = Kind::parse(kind)?;
    let data = Data::extract(kind, x, y, columns, rows)?;
    let (low, high) = data.values().fold((0.0f64, 0.0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let ticks = ticks(low, high)?;
    render(id, kind, x, y, &data, ticks).ok()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Kind {
    Line,
    Bar,
}

impl Kind {
    fn parse(kind: &str) -> Option<Self> {
        match kind {
            "line" => Some(Kind::Line),
            "bar" => Some(Kind::Bar),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Kind::Line => "line",
            Kind::Bar => "bar",
        }
    }

    fn max_rows(self) -> usize {
        match self {
            Kind::Line => MAX_POINTS,
            Kind::Bar => MAX_CATEGORIES,
        }
    }
}

/// The values to draw: one label per row and, per series, one value per row.
#[derive(Debug)]
struct Data {
    labels: Vec<String>,
    series: Vec<Vec<Option<f64>>>,
}

impl Data {
    fn extract(
        kind: Kind,
        x: &str,
        y: &[String],
        columns: &[String],
        rows: &[Vec<Value>],
    ) -> Option<Self> {
        let index = |name: &str| columns.iter().position(|c| c == name);
        let xi = index(x)?;
        let yi = y.iter().map(|name| index(name)).collect::<Option<Vec<_>>>()?;
        let rows = &rows[..rows.len().min(kind.max_rows())];
        let labels = rows.iter().map(|row| label(row.get(xi).unwrap_or(&Value::Null))).collect();
        let series: Vec<Vec<Option<f64>>> = yi
            .iter()
            .map(|&i| rows.iter().map(|row| row.get(i).and_then(number)).collect())
            .collect();
        // Also covers no rows and no measures.
        if series.iter().flatten().all(Option::is_none) {
            return None;
        }
        Some(Data { labels, series })
    }

    fn values(&self) -> impl Iterator<Item = f64> + '_ {
        self.series.iter().flatten().flatten().copied()
    }
}

/// A measure: a JSON number, or a string holding one (numeric and bigint often arrive as text).
fn number(value: &Value) -> Option<f64> {
    let n = match value {
        Value::Number(n) => n.as_f64()?,
        Value::String(s) => s.trim().parse::<f64>().ok()?,
        _ => return None,
    };
    n.is_finite().then_some(n)
}

/// The x-axis text of a value; a timestamp at midnight shows as its date.
fn label(value: &Value) -> String {
    match value {
        Value::Null => "(none)".to_owned(),
        Value::String(s) => midnight_date(s).unwrap_or(s).to_owned(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        other => other.to_string(),
    }
}

/// The date part of `YYYY-MM-DD[T ]00:00:00[.000][Z|±hh[:mm]]`.
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

/// An estimate of the drawn width of a label.
fn text_width(text: &str) -> f64 {
    text.chars().count() as f64 * CHAR_WIDTH
}

/// `a`, `a and b`, `a, b and c`.
fn listing(names: &[String]) -> String {
    match names {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
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
fn compact(v: f64) -> String {
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

fn colour(series: usize) -> &'static str {
    PALETTE[series % PALETTE.len()]
}

/// Where things go: the plot area inside the margins and the x of every category or point.
#[derive(Debug)]
struct Plot {
    left: f64,
    right: f64,
    top: f64,
    bottom: f64,
    ticks: Vec<f64>,
    /// The centre of each category, or the position of each point.
    xs: Vec<f64>,
    /// The distance between neighbouring `xs`.
    spacing: f64,
}

impl Plot {
    fn new(kind: Kind, n: usize, ticks: Vec<f64>, tick_labels: &[String], top: f64) -> Self {
        let widest_tick = tick_labels.iter().map(|t| text_width(t)).fold(0.0, f64::max);
        let (left, right) = ((widest_tick + 14.0).max(36.0), WIDTH - 16.0);
        let width = right - left;
        let (xs, spacing) = match kind {
            Kind::Bar => {
                let band = width / n as f64;
                ((0..n).map(|i| left + band * (i as f64 + 0.5)).collect(), band)
            }
            Kind::Line if n == 1 => (vec![left + width / 2.0], width),
            Kind::Line => {
                let gap = width / (n - 1) as f64;
                ((0..n).map(|i| left + gap * i as f64).collect(), gap)
            }
        };
        Plot { left, right, top, bottom: HEIGHT - 28.0, ticks, xs, spacing }
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
fn legend(names: &[String]) -> (Vec<LegendItem<'_>>, f64) {
    const ROW: f64 = 16.0;
    const ROWS: usize = 4;
    if names.len() < 2 {
        return (Vec::new(), 0.0);
    }
    let (mut items, mut x, mut row) = (Vec::new(), 8.0, 0);
    for (series, name) in names.iter().enumerate() {
        let text = short(name);
        let width = 14.0 + text_width(&text) + 14.0;
        if x + width > WIDTH - 8.0 && x > 8.0 {
            row += 1;
            x = 8.0;
        }
        if row == ROWS {
            break;
        }
        items.push(LegendItem { series, x, y: 8.0 + row as f64 * ROW, text });
        x += width;
    }
    (items, (row.min(ROWS - 1) + 1) as f64 * ROW)
}

/// The tooltip of one value: its full label, its series when there are several, and the number.
fn tooltip(data: &Data, y: &[String], i: usize, series: usize, v: f64) -> String {
    if y.len() > 1 {
        format!("{}, {}: {}", data.labels[i], y[series], full(v))
    } else {
        format!("{}: {}", data.labels[i], full(v))
    }
}

fn render(
    id: &str,
    kind: Kind,
    x: &str,
    y: &[String],
    data: &Data,
    ticks: Vec<f64>,
) -> Result<String, fmt::Error> {
    let tick_labels: Vec<String> = ticks.iter().map(|&t| compact(t)).collect();
    let (legend, legend_height) = legend(y);
    let top = if legend.is_empty() { 12.0 } else { 18.0 + legend_height };
    let plot = Plot::new(kind, data.labels.len(), ticks, &tick_labels, top);

    let id = Escaped(id);
    let title = format!(
        "{} chart of {} by {x}",
        if kind == Kind::Line { "Line" } else { "Bar" },
        listing(y)
    );
    let mut out = String::with_capacity(4096 + data.labels.len() * 160 * y.len());
    write!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" class="chart chart-{kind}" viewBox="0 0 {WIDTH} {HEIGHT}" width="100%" preserveAspectRatio="xMidYMid meet" role="img" aria-labelledby="{id}" font-family="system-ui, sans-serif" font-size="{FONT_SIZE}" fill="{INK}"><title id="{id}">{title}</title>"#,
        kind = kind.name(),
        title = Escaped(&title),
    )?;
    write_grid(&mut out, &plot, &tick_labels)?;
    match kind {
        Kind::Bar => write_bars(&mut out, &plot, y, data)?,
        Kind::Line => write_lines(&mut out, &plot, y, data)?,
    }
    // The zero line goes over the bars so every bar starts from a crisp baseline.
    let zero = plot.y(0.0);
    write!(
        out,
        r#"<line class="axis" x1="{:.1}" x2="{:.1}" y1="{zero:.1}" y2="{zero:.1}" stroke="{INK}" stroke-width="1"/>"#,
        plot.left, plot.right,
    )?;
    write_x_labels(&mut out, &plot, data)?;
    write_legend(&mut out, &legend)?;
    out.push_str("</svg>");
    Ok(out)
}

/// Horizontal gridlines with their values.
fn write_grid(out: &mut String, plot: &Plot, tick_labels: &[String]) -> fmt::Result {
    out.push_str(r#"<g class="grid">"#);
    for (&t, text) in plot.ticks.iter().zip(tick_labels) {
        let ty = plot.y(t);
        write!(
            out,
            r#"<line x1="{:.1}" x2="{:.1}" y1="{ty:.1}" y2="{ty:.1}" stroke="{GRID}" stroke-width="1"/><text class="tick" x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
            plot.left,
            plot.right,
            plot.left - 6.0,
            ty + FONT_SIZE / 3.0,
            Escaped(text),
        )?;
    }
    out.push_str("</g>");
    Ok(())
}

/// One bar per value, the series of a category side by side.
fn write_bars(out: &mut String, plot: &Plot, y: &[String], data: &Data) -> fmt::Result {
    let group = plot.spacing * 0.8;
    let bar = group / y.len() as f64;
    let gap = if y.len() > 1 && bar > 3.0 { 1.0 } else { 0.0 };
    let zero = plot.y(0.0);
    out.push_str(r#"<g class="bars">"#);
    for (i, &cx) in plot.xs.iter().enumerate() {
        for (s, values) in data.series.iter().enumerate() {
            let Some(v) = values[i] else { continue };
            let vy = plot.y(v);
            write!(
                out,
                r#"<rect class="bar series-{}" x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{}"><title>{}</title></rect>"#,
                s % PALETTE.len(),
                cx - group / 2.0 + bar * s as f64,
                vy.min(zero),
                bar - gap,
                (vy - zero).abs(),
                colour(s),
                Escaped(&tooltip(data, y, i, s, v)),
            )?;
        }
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
fn write_x_labels(out: &mut String, plot: &Plot, data: &Data) -> fmt::Result {
    let shorts: Vec<Cow<'_, str>> = data.labels.iter().map(|l| short(l)).collect();
    let widest = shorts.iter().map(|l| text_width(l)).fold(0.0, f64::max) + 8.0;
    let every = ((widest / plot.spacing).ceil() as usize).max(1);
    out.push_str(r#"<g class="axis x-axis" text-anchor="middle">"#);
    for (i, text) in shorts.iter().enumerate().step_by(every) {
        // Kept inside the chart: the first and last point of a line sit on the plot's edges.
        let half = text_width(text) / 2.0;
        let lx = plot.xs[i].clamp(half + 2.0, WIDTH - half - 2.0);
        write!(
            out,
            r#"<text class="x-label" x="{lx:.1}" y="{:.1}">{}</text>"#,
            plot.bottom + 18.0,
            Escaped(text),
        )?;
    }
    out.push_str("</g>");
    Ok(())
}

/// A colour swatch and name per series (nothing for a single series).
fn write_legend(out: &mut String, legend: &[LegendItem<'_>]) -> fmt::Result {
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
            item.y + 9.0,
            Escaped(&item.text),
        )?;
    }
    out.push_str("</g>");
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn names(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| (*n).to_owned()).collect()
    }

    /// Rows from a JSON array of arrays.
    fn rows(value: Value) -> Vec<Vec<Value>> {
        serde_json::from_value(value).unwrap()
    }

    fn chart(kind: &str, x: &str, y: &[&str], columns: &[&str], data: Value) -> Option<String> {
        svg("chart-1", kind, x, &names(y), &names(columns), &rows(data))
    }

    fn count(svg: &str, needle: &str) -> usize {
        svg.matches(needle).count()
    }

    /// The values of every `attr="..."` in the markup, in order.
    fn attrs<'a>(svg: &'a str, attr: &str) -> Vec<&'a str> {
        let key = format!(" {attr}=\"");
        svg.match_indices(&key)
            .map(|(i, _)| {
                let rest = &svg[i + key.len()..];
                &rest[..rest.find('"').unwrap()]
            })
            .collect()
    }

    /// The number of points of each polyline.
    fn polyline_points(svg: &str) -> Vec<usize> {
        attrs(svg, "points").iter().map(|p| p.split_whitespace().count()).collect()
    }

    /// The y and height of every bar, in order.
    fn bars(svg: &str) -> Vec<(f64, f64)> {
        let number = |piece: &str, attr: &str| attrs(piece, attr)[0].parse::<f64>().unwrap();
        svg.split(r#"<rect class="bar "#)
            .skip(1)
            .map(|p| (number(p, "y"), number(p, "height")))
            .collect()
    }

    /// The x of every x-axis label, in order.
    fn label_xs(svg: &str) -> Vec<f64> {
        svg.split(r#"class="x-label""#).skip(1).map(|p| attrs(p, "x")[0].parse().unwrap()).collect()
    }

    /// The text of every element with the class, in order.
    fn texts<'a>(svg: &'a str, class: &str) -> Vec<&'a str> {
        let key = format!("class=\"{class}\"");
        svg.match_indices(&key)
            .map(|(i, _)| {
                let rest = &svg[i..];
                let start = rest.find('>').unwrap() + 1;
                &rest[start..start + rest[start..].find('<').unwrap()]
            })
            .collect()
    }

    fn assert_well_formed(svg: &str) {
        assert!(svg.starts_with("<svg ") && svg.ends_with("</svg>"), "{svg}");
        assert!(!svg.contains("style="), "no inline styles: {svg}");
        assert!(svg.contains(r#"role="img""#) && svg.contains(r#"width="100%""#));
        let id = attrs(svg, "aria-labelledby")[0];
        assert!(svg.contains(&format!(r#"<title id="{id}">"#)), "{svg}");
        assert!(!svg.contains("NaN") && !svg.contains("inf\""), "{svg}");
    }

    #[test]
    fn bar_chart_has_one_rect_per_bar() {
        let svg = chart(
            "bar",
            "status",
            &["total"],
            &["status", "total"],
            json!([["paid", 120], ["open", 35.5], ["void", 0]]),
        )
        .unwrap();
        assert_well_formed(&svg);
        assert_eq!(count(&svg, "<rect "), 3, "{svg}");
        assert!(svg.contains(">Bar chart of total by status</title>"), "{svg}");
        assert_eq!(texts(&svg, "x-label"), ["paid", "open", "void"]);
        assert!(svg.contains("<title>open: 35.5</title>"), "{svg}");
        assert!(!svg.contains(r#"class="legend""#), "one series, no legend: {svg}");
    }

    #[test]
    fn line_chart_is_a_polyline_through_every_number() {
        let svg = chart(
            "line",
            "month",
            &["revenue"],
            &["month", "revenue"],
            json!([
                ["2026-01-01T00:00:00+00:00", 10],
                ["2026-02-01T00:00:00+00:00", null],
                ["2026-03-01T00:00:00+00:00", "12.5"],
                ["2026-04-01T00:00:00+00:00", "n/a"],
                ["2026-05-01T00:00:00+00:00", 8]
            ]),
        )
        .unwrap();
        assert_well_formed(&svg);
        assert!(svg.contains(">Line chart of revenue by month</title>"), "{svg}");
        assert_eq!(polyline_points(&svg), [3]);
        assert_eq!(count(&svg, "<circle "), 3);
        assert_eq!(texts(&svg, "x-label")[0], "2026-01-01");
    }

    #[test]
    fn long_lines_are_capped_and_lose_their_markers() {
        let data: Vec<Value> = (0..1500).map(|i| json!([i, (i % 7) * 3])).collect();
        let svg = chart("line", "n", &["v"], &["n", "v"], Value::Array(data)).unwrap();
        assert_eq!(polyline_points(&svg), [MAX_POINTS]);
        assert_eq!(count(&svg, "<circle "), 0);
        let labels = texts(&svg, "x-label");
        assert!(labels.len() > 2 && labels.len() < 40, "{labels:?}");
    }

    #[test]
    fn numeric_strings_are_numbers() {
        let svg = chart(
            "bar",
            "region",
            &["sum"],
            &["region", "sum"],
            json!([["north", "1234567.89"], ["south", " 2500000 "], ["east", "-0.5e3"]]),
        )
        .unwrap();
        assert_eq!(count(&svg, "<rect "), 3);
        assert!(svg.contains("<title>south: 2500000</title>"), "{svg}");
        assert!(svg.contains("<title>east: -500</title>"), "{svg}");
        assert_eq!(texts(&svg, "tick"), ["-1M", "0", "1M", "2M", "3M"]);
    }

    #[test]
    fn nothing_to_draw_is_none() {
        let columns = ["a", "b"];
        let data = || json!([["x", 1], ["y", 2]]);
        assert!(chart("bar", "a", &["b"], &columns, data()).is_some());
        assert_eq!(chart("pie", "a", &["b"], &columns, data()), None, "unknown kind");
        assert_eq!(chart("bar", "c", &["b"], &columns, data()), None, "missing x");
        assert_eq!(chart("bar", "a", &["b", "c"], &columns, data()), None, "missing y");
        assert_eq!(chart("bar", "a", &[], &columns, data()), None, "no measures");
        assert_eq!(chart("line", "a", &["b"], &columns, json!([])), None, "no rows");
        let nulls = json!([["x", null], ["y", "abc"], ["z", true], ["w", "NaN"]]);
        assert_eq!(chart("bar", "a", &["b"], &columns, nulls), None, "no numbers");
        assert_eq!(chart("bar", "a", &["b"], &columns, json!([["x"], []])), None, "short rows");
    }

    #[test]
    fn data_text_is_escaped() {
        let svg = chart(
            "bar",
            "who's",
            &["<b>n</b>", "m&m"],
            &["who's", "<b>n</b>", "m&m"],
            json!([["<script>alert(\"x\")</script>", 1, 2], ["a'b & c", 3, 4]]),
        )
        .unwrap();
        assert_well_formed(&svg);
        assert!(!svg.contains("<script"), "{svg}");
        assert!(!svg.contains("<b>"), "{svg}");
        assert!(svg.contains("&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;"), "{svg}");
        assert!(svg.contains("a&#39;b &amp; c"), "{svg}");
        assert!(svg.contains("chart of &lt;b&gt;n&lt;/b&gt; and m&amp;m by who&#39;s</title>"));
    }

    #[test]
    fn bars_are_capped() {
        let data: Vec<Value> = (0..80).map(|i| json!([format!("category-{i:02}"), i])).collect();
        let svg = chart("bar", "c", &["v"], &["c", "v"], Value::Array(data)).unwrap();
        // Category 0 has value 0 but still a (flat) bar.
        assert_eq!(count(&svg, "<rect "), MAX_CATEGORIES);
        assert!(!svg.contains("category-50"), "{svg}");

        // Labels are thinned out: neighbours are at least their width apart.
        let labels = texts(&svg, "x-label");
        assert!(labels.len() > 2 && labels.len() < MAX_CATEGORIES, "{labels:?}");
        let xs = label_xs(&svg);
        assert_eq!(xs.len(), labels.len());
        let width = "category-00".len() as f64 * 5.5;
        assert!(xs.windows(2).all(|w| w[1] - w[0] >= width), "{xs:?}");
    }

    #[test]
    fn long_labels_are_cut_with_the_full_value_in_the_tooltip() {
        let long = "an extremely long category name";
        let svg = chart("bar", "c", &["v"], &["c", "v"], json!([[long, 1], ["b", 2]])).unwrap();
        assert_eq!(texts(&svg, "x-label"), ["an extremely lo…", "b"]);
        assert!(svg.contains(&format!("<title>{long}: 1</title>")), "{svg}");
    }

    #[test]
    fn negative_values_hang_below_zero() {
        let svg = chart(
            "bar",
            "q",
            &["delta"],
            &["q", "delta"],
            json!([["q1", -30], ["q2", 100], ["q3", -5]]),
        )
        .unwrap();
        let ticks = texts(&svg, "tick");
        assert!(ticks.contains(&"0"), "{ticks:?}");
        assert!(ticks.first().unwrap().starts_with('-'), "{ticks:?}");
        // Bars below zero start at the zero line; the one above ends there.
        let axis = svg.find(r#"<line class="axis""#).unwrap();
        let zero: f64 = attrs(&svg[axis..], "y1")[0].parse().unwrap();
        let bars = bars(&svg);
        assert_eq!(bars.len(), 3);
        assert_eq!(bars[0].0, zero);
        assert!((bars[1].0 + bars[1].1 - zero).abs() < 0.2, "{bars:?} {zero}");
        assert!(bars[1].1 > 3.0 * bars[0].1 && bars[0].1 > 5.0 * bars[2].1, "{bars:?}");
        assert_eq!(bars[2].0, zero);
    }

    #[test]
    fn two_series_have_grouped_bars_and_a_legend() {
        let svg = chart(
            "bar",
            "shop",
            &["orders", "returns"],
            &["shop", "orders", "returns"],
            json!([["a", 10, 1], ["b", 20, null], ["c", 15, 3]]),
        )
        .unwrap();
        assert_well_formed(&svg);
        assert_eq!(count(&svg, r#"<rect class="bar series-0""#), 3);
        assert_eq!(count(&svg, r#"<rect class="bar series-1""#), 2);
        assert!(svg.contains(r#"class="legend""#), "{svg}");
        assert_eq!(count(&svg, r#"class="swatch"#), 2);
        assert!(svg.contains(">orders</text>") && svg.contains(">returns</text>"), "{svg}");
        assert!(svg.contains("<title>b, orders: 20</title>"), "{svg}");

        let lines = chart(
            "line",
            "shop",
            &["orders", "returns"],
            &["shop", "orders", "returns"],
            json!([["a", 10, 1], ["b", 20, null], ["c", 15, 3]]),
        )
        .unwrap();
        assert_eq!(polyline_points(&lines), [3, 2]);
        assert!(lines.contains(r#"class="legend""#));
    }

    #[test]
    fn the_title_carries_the_given_id() {
        let svg = svg(
            "chart-a&b",
            "bar",
            "a",
            &names(&["b"]),
            &names(&["a", "b"]),
            &rows(json!([["x", 1]])),
        )
        .unwrap();
        assert_eq!(attrs(&svg, "aria-labelledby"), ["chart-a&amp;b"]);
        assert!(svg.contains(r#"<title id="chart-a&amp;b">"#), "{svg}");
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
        let check = |v: f64, expected: &str| assert_eq!(compact(v), expected, "{v}");
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

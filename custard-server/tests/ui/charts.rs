//! Charts and numbers in Chromium, on the demo (offline engine, no model):
//! bars labelled by names rather than ids, many groups capped with the rest
//! added up, chart text readable on a phone, and numbers written for people
//! in the answer, the table and the chart.

use std::time::Duration;

use custard_testkit::browser::{Browser, DESKTOP_SIZE};
use serde_json::{Value, json};

use super::bounded;
use crate::demo::DemoServer;

/// How long one question may take to be answered on a busy machine.
const ANSWER_LIMIT: Duration = Duration::from_secs(30);
/// The most bars a chart draws (the server's `chart::MAX_BARS`).
const MAX_BARS: usize = 12;

/// A ranked question whose result has an id and a name.
const RANKED: &str = "Top 5 products by unit price";
/// A question with one group per product (48 in the demo).
const MANY_GROUPS: &str = "What is the total quantity per product?";
/// A question with a line chart (orders per day).
const OVER_TIME: &str = "How many orders per order date?";

/// Runs `code` in the page and returns what it returns.
async fn script(browser: &Browser, code: &str, args: Vec<Value>) -> Value {
    browser.client().execute(code, args).await.unwrap_or_else(|e| panic!("{code}: {e}"))
}

/// Asks `question` (typed, then Enter) and waits for its answer card; the
/// card is found by its question from then on.
async fn ask(browser: &Browser, question: &str) {
    let enter: char = fantoccini::key::Key::Enter.into();
    browser.fill("#question", &format!("{question}{enter}")).await;
    let started = std::time::Instant::now();
    loop {
        let state = script(
            browser,
            "const card = Array.from(document.querySelectorAll('#answers article'))
               .find(a => (a.querySelector('h2.question') || {}).textContent?.trim() === arguments[0]);
             return card ? (card.classList.contains('answer-error') || !card.querySelector('.answer-text')
               ? 'failed: ' + card.textContent : 'answered') : 'waiting';",
            vec![json!(question)],
        )
        .await;
        match state.as_str() {
            Some("answered") => return,
            Some(s) if s.starts_with("failed") => panic!("{question:?} was not answered: {s}"),
            _ => {}
        }
        assert!(started.elapsed() < ANSWER_LIMIT, "{question:?} answered within {ANSWER_LIMIT:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What the card of `question` shows: its answer text, the table's header
/// and columns of cell texts with their titles, and the chart's bar labels,
/// values and caption.
async fn card(browser: &Browser, question: &str) -> Value {
    script(
        browser,
        "const card = Array.from(document.querySelectorAll('#answers article'))
           .find(a => a.querySelector('h2.question').textContent.trim() === arguments[0]);
         const all = (css) => Array.from(card.querySelectorAll(css));
         return {
           text: card.querySelector('.answer-text').textContent.trim(),
           header: all('table.result thead th').map(th => th.textContent.trim()),
           rows: all('table.result tbody tr').map(tr => Array.from(tr.cells).map(td =>
             [td.textContent.trim(), td.getAttribute('title'), td.getAttribute('data-v')])),
           labels: all('table.bar-chart th[scope=row]').map(th => th.textContent.trim()),
           values: all('table.bar-chart td.num').map(td => td.textContent.trim()),
           caption: (card.querySelector('figure.chart figcaption') || {textContent: ''}).textContent.trim(),
         };",
        vec![json!(question)],
    )
    .await
}

/// The strings of a JSON array.
fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("an array: {value}"))
        .iter()
        .map(|v| v.as_str().unwrap_or_else(|| panic!("a string: {v}")).to_owned())
        .collect()
}

/// Column `name`'s cells of a card: (text, title, data-v).
fn column(card: &Value, name: &str) -> Vec<(String, Option<String>, Option<String>)> {
    let header = strings(&card["header"]);
    let i = header.iter().position(|h| h == name).unwrap_or_else(|| panic!("{name} in {header:?}"));
    card["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|row| {
            let cell = &row[i];
            let text = |k: usize| cell[k].as_str().map(str::to_owned);
            (text(0).unwrap_or_default(), text(1), text(2))
        })
        .collect()
}

/// Whether a text is a number as people write it: `1,234`, `64.98`, `129.00`.
fn readable_number(text: &str, decimals: usize) -> bool {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    let groups: Vec<&str> = whole.split(',').collect();
    let grouped = !groups[0].is_empty()
        && groups[0].len() <= 3
        && groups.iter().all(|g| g.bytes().all(|b| b.is_ascii_digit()))
        && groups[1..].iter().all(|g| g.len() == 3);
    grouped && fraction.len() == decimals && fraction.bytes().all(|b| b.is_ascii_digit())
}

/// The size in CSS px at which the chart text of `question`'s card renders:
/// every bar label and value, or every text of the line chart's visible SVG
/// (its font size times the SVG's scale), as (smallest, largest).
async fn chart_text_px(browser: &Browser, question: &str) -> (f64, f64) {
    let sizes = script(
        browser,
        "const card = Array.from(document.querySelectorAll('#answers article'))
           .find(a => a.querySelector('h2.question').textContent.trim() === arguments[0]);
         const figure = card.querySelector('figure.chart');
         figure.scrollIntoView({block: 'center'});
         const sizes = [];
         for (const el of figure.querySelectorAll('table.bar-chart th, table.bar-chart td.num')) {
           if (el.getBoundingClientRect().height > 0) sizes.push(parseFloat(getComputedStyle(el).fontSize));
         }
         for (const svg of figure.querySelectorAll('svg.chart-svg')) {
           const box = svg.getBoundingClientRect();
           if (box.width === 0) continue;
           const scale = box.width / svg.viewBox.baseVal.width;
           for (const t of svg.querySelectorAll('text')) {
             sizes.push(parseFloat(getComputedStyle(t).fontSize) * scale);
           }
         }
         return sizes;",
        vec![json!(question)],
    )
    .await;
    let sizes: Vec<f64> =
        sizes.as_array().expect("sizes").iter().filter_map(Value::as_f64).collect();
    assert!(!sizes.is_empty(), "{question:?}: the chart has visible text");
    let smallest = sizes.iter().copied().fold(f64::INFINITY, f64::min);
    let largest = sizes.iter().copied().fold(0.0, f64::max);
    (smallest, largest)
}

/// Whether the chart of `question`'s card fits the viewport's width.
async fn chart_fits(browser: &Browser, question: &str) -> Value {
    script(
        browser,
        "const card = Array.from(document.querySelectorAll('#answers article'))
           .find(a => a.querySelector('h2.question').textContent.trim() === arguments[0]);
         const box = card.querySelector('figure.chart').getBoundingClientRect();
         return [box.left >= 0 && box.right <= window.innerWidth,
                 document.documentElement.scrollWidth <= window.innerWidth, box.width];",
        vec![json!(question)],
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn charts_are_labelled_by_names_capped_and_readable_on_a_phone() {
    bounded(async {
        let demo = DemoServer::start("charts", &[]).await;
        let browser = Browser::start().await;
        demo.sign_in(&browser).await;

        // A ranking of products: the bars are named like the products, not by their ids.
        ask(&browser, RANKED).await;
        let ranked = card(&browser, RANKED).await;
        let names: Vec<String> = column(&ranked, "name").into_iter().map(|c| c.0).collect();
        let ids: Vec<String> = column(&ranked, "id").into_iter().map(|c| c.0).collect();
        let labels = strings(&ranked["labels"]);
        assert_eq!(names.len(), 5, "{ranked}");
        assert_eq!(labels, names, "bars labelled by name: {ranked}");
        assert!(labels.iter().all(|l| !ids.contains(l)), "no id as a label: {ranked}");
        let caption = ranked["caption"].as_str().unwrap_or_default();
        assert_eq!(caption, "Unit price by name", "{ranked}");

        // Its numbers: money-like prices with two decimals, in the sentence too,
        // the exact value kept in the cell's title and sort key.
        let prices = column(&ranked, "unit_price");
        for (text, title, sort_key) in &prices {
            assert!(readable_number(text, 2), "a price as people write it: {text:?}");
            let exact: f64 = sort_key.as_deref().and_then(|v| v.parse().ok()).expect("data-v");
            assert_eq!(format!("{exact:.2}"), text.replace(',', ""), "{prices:?}");
            if let Some(title) = title {
                assert_eq!(title.parse::<f64>().ok(), Some(exact), "{prices:?}");
            }
        }
        assert_eq!(
            strings(&ranked["values"]),
            prices.iter().map(|p| p.0.clone()).collect::<Vec<_>>()
        );
        let text = ranked["text"].as_str().unwrap_or_default();
        let first = format!("Top 5 by unit price: {} ({}), ", names[0], prices[0].0);
        assert!(text.starts_with(&first), "{text:?} starts with {first:?}");
        assert!(text.ends_with(&format!(" and {} ({}).", names[4], prices[4].0)), "{text:?}");

        // 48 products: at most the cap, the rest added up (a sum adds up).
        ask(&browser, MANY_GROUPS).await;
        let many = card(&browser, MANY_GROUPS).await;
        let rows = many["rows"].as_array().map_or(0, Vec::len);
        assert!(rows > MAX_BARS, "more groups than bars: {rows}");
        let labels = strings(&many["labels"]);
        assert_eq!(labels.len(), MAX_BARS, "{many}");
        assert_eq!(labels[MAX_BARS - 1], format!("Others ({})", rows - (MAX_BARS - 1)), "{many}");
        let product_names: Vec<String> = column(&many, "name").into_iter().map(|c| c.0).collect();
        assert_eq!(labels[..MAX_BARS - 1], product_names[..MAX_BARS - 1], "the largest first");
        assert!(many["caption"].as_str().unwrap_or_default().contains("added up in Others"));
        let quantities: Vec<i64> = column(&many, "total_quantity")
            .iter()
            .map(|c| c.0.replace(',', "").parse().expect("a whole number"))
            .collect();
        let others: i64 = quantities[MAX_BARS - 1..].iter().sum();
        let shown = strings(&many["values"]);
        assert_eq!(shown[MAX_BARS - 1].replace(',', ""), others.to_string(), "{many}");

        // A line over time: the line chart is there too.
        ask(&browser, OVER_TIME).await;

        // On a desktop the chart text is of the page's size, not more.
        assert_eq!(browser.viewport().await, DESKTOP_SIZE);
        for question in [RANKED, MANY_GROUPS, OVER_TIME] {
            let (smallest, largest) = chart_text_px(&browser, question).await;
            assert!(smallest >= 11.0 && largest <= 18.0, "{question}: {smallest}..{largest} px");
        }
        chart_text_px(&browser, RANKED).await;
        browser.screenshot("chart-ranked-desktop").await;
        chart_text_px(&browser, OVER_TIME).await;
        browser.screenshot("chart-line-desktop").await;
        chart_text_px(&browser, MANY_GROUPS).await;
        browser.screenshot("chart-desktop").await;

        // On a phone it stays readable and inside the screen.
        browser.set_size(390, 844).await;
        for question in [RANKED, MANY_GROUPS, OVER_TIME] {
            let (smallest, largest) = chart_text_px(&browser, question).await;
            assert!(smallest >= 11.0 && largest <= 18.0, "{question}: {smallest}..{largest} px");
            let fits = chart_fits(&browser, question).await;
            assert_eq!((&fits[0], &fits[1]), (&json!(true), &json!(true)), "{question}: {fits}");
        }
        chart_text_px(&browser, MANY_GROUPS).await;
        browser.screenshot("chart-phone").await;
        chart_text_px(&browser, OVER_TIME).await;
        browser.screenshot("chart-line-phone").await;
        chart_text_px(&browser, RANKED).await;
        browser.screenshot("chart-ranked-phone").await;
        browser.close().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn numbers_read_like_a_person_wrote_them() {
    bounded(async {
        let demo = DemoServer::start("charts-numbers", &[]).await;
        let browser = Browser::start().await;
        demo.sign_in(&browser).await;

        // A count: thousands separated (the demo has a few thousand orders).
        let question = "How many orders are there?";
        ask(&browser, question).await;
        let count = card(&browser, question).await;
        let text = count["text"].as_str().unwrap_or_default().to_owned();
        let n = text
            .strip_prefix("The order count is ")
            .and_then(|t| t.strip_suffix('.'))
            .unwrap_or_else(|| panic!("{text:?}"));
        assert!(n.contains(',') && readable_number(n, 0), "{text:?}");
        assert_eq!(strings(&count["header"]), ["order_count"]);
        assert_eq!(column(&count, "order_count")[0].0, n, "the table agrees: {count}");

        // An average: two decimals, named once.
        let question = "What is the average total amount of orders?";
        ask(&browser, question).await;
        let average = card(&browser, question).await;
        assert_eq!(strings(&average["header"]), ["average_total_amount"]);
        let text = average["text"].as_str().unwrap_or_default().to_owned();
        let value = text
            .strip_prefix("The average total amount is ")
            .and_then(|t| t.strip_suffix('.'))
            .unwrap_or_else(|| panic!("{text:?}"));
        assert!(readable_number(value, 2), "{text:?}");
        let (cell, title, _) = column(&average, "average_total_amount").remove(0);
        assert_eq!(cell, value, "{average}");
        let exact: f64 = title.as_deref().and_then(|t| t.parse().ok()).expect("the exact value");
        assert_eq!(format!("{exact:.2}"), value.replace(',', ""), "{average}");

        // A sum: no doubled words in its name, whole above 100,000.
        let question = "What is the total amount of orders?";
        ask(&browser, question).await;
        let total = card(&browser, question).await;
        assert_eq!(strings(&total["header"]), ["total_amount"]);
        let text = total["text"].as_str().unwrap_or_default().to_owned();
        let value = text
            .strip_prefix("The total amount is ")
            .and_then(|t| t.strip_suffix('.'))
            .unwrap_or_else(|| panic!("{text:?}"));
        assert!(value.len() >= 7 && readable_number(value, 0), "{text:?}");

        // Counts per group read as such.
        let question = "How many orders per status?";
        ask(&browser, question).await;
        let groups = card(&browser, question).await;
        let text = groups["text"].as_str().unwrap_or_default();
        let statuses: Vec<String> = column(&groups, "status").into_iter().map(|c| c.0).collect();
        let counts: Vec<String> = column(&groups, "order_count").into_iter().map(|c| c.0).collect();
        let first = format!("Order count by status: {} ({}), ", statuses[0], counts[0]);
        assert!(text.starts_with(&first), "{text:?} starts with {first:?}");
        assert_eq!(strings(&groups["labels"]), statuses, "bars named by status");
        browser.close().await;
    })
    .await;
}

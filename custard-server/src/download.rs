//! Files people download: a CSV export is named after its question and the
//! day (`top-5-products-by-unit-price-2026-12-05.csv`), so a folder of exports
//! reads like a list of questions, and answered as an attachment.

use axum::body::Body;
use axum::http::header;
use axum::response::{IntoResponse, Response};

/// The most characters of a download's name taken from the question.
const SLUG_LENGTH: usize = 60;

/// A CSV export's file name: the question as a slug (the connection's name
/// when the question gives none, `custard` when neither does), then the day.
pub(crate) fn csv_name(question: &str, connection: &str, day: chrono::NaiveDate) -> String {
    let slug = [question, connection]
        .into_iter()
        .map(|text| slug_of(text, SLUG_LENGTH))
        .find(|s| !s.is_empty())
        .unwrap_or_else(|| "custard".to_owned());
    format!("{slug}-{}.csv", day.format("%Y-%m-%d"))
}

/// `text` as lower-case ASCII words joined by `-` (transliterated by the
/// `slug` crate: `Café` is `cafe`), whole words only up to `max` characters;
/// a first word longer than that is cut.
fn slug_of(text: &str, max: usize) -> String {
    let full = slug::slugify(text);
    let mut out = String::new();
    for word in full.split('-').filter(|w| !w.is_empty()) {
        if out.is_empty() {
            out = word.chars().take(max).collect();
        } else if out.len() + 1 + word.len() <= max {
            out.push('-');
            out.push_str(word);
        } else {
            break;
        }
    }
    out
}

/// A CSV file named `name` (a [`csv_name`]) as an attachment, its `body` streamed.
pub(crate) fn csv_attachment(name: &str, body: Body) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()),
            (header::CONTENT_DISPOSITION, attachment(name)),
        ],
        body,
    )
        .into_response()
}

/// A `Content-Disposition` that downloads `name` (a [`csv_name`]: ASCII
/// letters, digits, `-` and `.`), with the RFC 6266 `filename*` as well.
pub(crate) fn attachment(name: &str) -> String {
    let encoded = percent_encoding::utf8_percent_encode(name, percent_encoding::NON_ALPHANUMERIC)
        .to_string()
        .replace("%2D", "-")
        .replace("%2E", ".");
    format!("attachment; filename=\"{name}\"; filename*=UTF-8''{encoded}")
}

#[cfg(test)]
mod tests {
    use chrono::NaiveDate;

    use super::{attachment, csv_name, slug_of};

    #[test]
    fn slugs_are_lower_case_ascii_words() {
        let cases = [
            ("Top 5 products by unit price", "top-5-products-by-unit-price"),
            ("  How many orders per status?? ", "how-many-orders-per-status"),
            ("Combien de clients à Paris, en été ?", "combien-de-clients-a-paris-en-ete"),
            ("revenue_by_month / 2025", "revenue-by-month-2025"),
            ("", ""),
            ("--- !!! ---", ""),
        ];
        for (text, expected) in cases {
            assert_eq!(slug_of(text, 60), expected, "{text:?}");
        }
        // Other scripts are transliterated into ASCII words.
        let other = slug_of("注文はいくつ？", 60);
        assert!(!other.is_empty() && other.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'));
        // Whole words up to the limit; one long word is cut.
        let long = "which customers placed the most orders in the last thirty days of the year";
        let cut = slug_of(long, 60);
        assert_eq!(cut, "which-customers-placed-the-most-orders-in-the-last-thirty");
        assert_eq!(slug_of(&"x".repeat(80), 60), "x".repeat(60));
    }

    #[test]
    fn downloads_are_named_after_the_question_and_the_day() {
        let day = NaiveDate::from_ymd_opt(2026, 12, 5).expect("a date");
        let name = csv_name("Top 5 products by unit price", "Demo shop", day);
        assert_eq!(name, "top-5-products-by-unit-price-2026-12-05.csv");
        assert_eq!(csv_name("?!", "Demo shop", day), "demo-shop-2026-12-05.csv");
        assert_eq!(csv_name("?", "", day), "custard-2026-12-05.csv");
        assert_eq!(
            attachment(&name),
            "attachment; filename=\"top-5-products-by-unit-price-2026-12-05.csv\"; \
             filename*=UTF-8''top-5-products-by-unit-price-2026-12-05.csv"
        );
    }
}

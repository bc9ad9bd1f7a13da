//! Finding the SQL in a model's reply (stub, being written).

/// The SQL statement in a model reply: inside a code fence, or the reply itself.
pub fn extract_sql(text: &str) -> Option<String> {
    let t = text.trim();
    (!t.is_empty()).then(|| t.to_owned())
}

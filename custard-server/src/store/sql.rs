//! SQL text both stores build the same way: the column lists their row
//! mappings read (in their order), and the history search's `LIKE` pattern.

/// The columns a user's row mapping reads, in its order.
pub(in crate::store) const USER_COLUMNS: &str =
    "id, email, password_hash, first_name, last_name, email_verified_at, created_at, updated_at";
/// The columns an organisation's row mapping reads, in its order.
pub(in crate::store) const ORG_COLUMNS: &str = "id, name, created_at";
/// The columns a membership's row mapping reads, in its order.
pub(in crate::store) const MEMBERSHIP_COLUMNS: &str = "org_id, user_id, role, created_at";
/// The columns a session's row mapping reads, in its order.
pub(in crate::store) const SESSION_COLUMNS: &str =
    "id, user_id, created_at, expires_at, revoked_at";
/// The columns a one-time token's row mapping reads, in its order.
pub(in crate::store) const TOKEN_COLUMNS: &str = "id, kind, user_id, email, org_id, role, \
                                                  created_at, expires_at, used_at, invited_by, \
                                                  revoked_at";
/// An invitation's columns, its sender's email included (`t` is
/// `one_time_tokens`, `u` its sender in `users`).
pub(in crate::store) const INVITATION_COLUMNS: &str =
    "t.id, t.email, t.role, t.invited_by, u.email, t.created_at, t.expires_at";
/// The columns a recorded question's row mapping reads, in its order.
pub(in crate::store) const QUERY_COLUMNS: &str = "
    id, org_id, connection_id, user_id, conversation_id, question, sql, outcome,
    error_message, answer, row_count, truncated, engine, attempts, timings_json,
    result_json, feedback, created_at, source";

/// How many columns a column list has.
pub(in crate::store) fn column_count(columns: &str) -> usize {
    columns.split(',').count()
}

/// How many columns [`QUERY_COLUMNS`] has.
pub(in crate::store) fn query_column_count() -> usize {
    column_count(QUERY_COLUMNS)
}

/// A column list with each column prefixed by a table alias, for statements
/// that join.
pub(in crate::store) fn qualified(alias: &str, columns: &str) -> String {
    let names: Vec<String> =
        columns.split(',').map(|name| format!("{alias}.{}", name.trim())).collect();
    names.join(", ")
}

/// [`QUERY_COLUMNS`] prefixed with a table alias.
pub(in crate::store) fn qualified_query_columns(alias: &str) -> String {
    qualified(alias, QUERY_COLUMNS)
}

/// A `LIKE` pattern (with `ESCAPE '\'`) for text containing `term` literally.
pub(in crate::store) fn like_pattern(term: &str) -> String {
    let mut pattern = String::with_capacity(term.len() + 2);
    pattern.push('%');
    for c in term.chars() {
        if matches!(c, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    pattern
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_terms_match_literally() {
        assert_eq!(like_pattern("50%_a\\b"), "%50\\%\\_a\\\\b%");
        assert_eq!(qualified_query_columns("q").split(", ").count(), query_column_count());
        assert!(qualified_query_columns("q").starts_with("q.id, q.org_id"));
    }
}

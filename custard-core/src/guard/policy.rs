use super::{CheckedSql, GuardInner, Rejection, RejectionCode};
pub(super) fn check(g: &GuardInner, sql: &str) -> Result<CheckedSql, Rejection> {
    let _ = g;
    Err(Rejection::new(RejectionCode::Unsupported, format!("not yet: {sql}")))
}

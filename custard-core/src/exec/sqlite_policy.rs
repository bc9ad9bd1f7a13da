//! Layer 4 in SQLite: the [`AccessPolicy`] enforced by SQLite itself.
//!
//! SQLite has no roles or grants, but it asks an *authorizer* about every
//! column a statement reads while the statement is prepared (`SQLITE_READ`,
//! with the table and column as declared; once with an empty column name for
//! a table whose columns are not used, as in `SELECT count(*) FROM t`). Views,
//! subqueries and CTEs are checked against the tables underneath them, `*` is
//! checked column by column, and the rowid counts as its `INTEGER PRIMARY
//! KEY` column when there is one.
//!
//! The authorizer does not see the columns a `NATURAL` or `USING` join
//! compares (SQLite builds those comparisons without resolving names), so
//! under a restricting policy a statement with either keyword is refused
//! before it is prepared, by [`joins_by_name`], which reads the SQL with
//! SQLite's own token rules. Nor does it see what a generated column computes
//! from: mask the generated column too.

use std::cell::RefCell;
use std::sync::Arc;

use rusqlite::Connection;
use rusqlite::hooks::{AuthAction, AuthContext, Authorization};

use crate::{AccessPolicy, Dialect};

/// What a connection is being used for; the authorizer differs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Access {
    /// Running a checked query: the policy, nothing more.
    Run,
    /// The executor's own discovery SQL: also the catalog it reads.
    Catalog,
}

thread_local! {
    /// Why the authorizer last denied something on this thread. The authorizer
    /// runs inside `prepare`, on the thread that prepares, so the caller reads
    /// the reason right after `prepare` fails.
    static LAST_DENIAL: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Forgets an earlier denial; call before preparing.
pub(super) fn clear_denial() {
    LAST_DENIAL.with(|d| d.borrow_mut().take());
}

/// Why the authorizer denied the statement just prepared, if it did.
pub(super) fn take_denial() -> Option<String> {
    LAST_DENIAL.with(|d| d.borrow_mut().take())
}

/// Installs the authorizer for `policy` and `access` on `conn`, replacing the
/// one before. An unrestricted policy installs none.
pub(super) fn install(
    conn: &mut Connection,
    policy: &Arc<AccessPolicy>,
    access: Access,
) -> rusqlite::Result<()> {
    if policy.is_unrestricted() {
        return conn.authorizer(None::<fn(AuthContext<'_>) -> Authorization>);
    }
    let policy = Arc::clone(policy);
    conn.authorizer(Some(move |ctx: AuthContext<'_>| {
        match decide(&policy, access, &ctx) {
            Ok(()) => Authorization::Allow,
            Err(reason) => {
                LAST_DENIAL.with(|d| *d.borrow_mut() = Some(reason));
                // DENY, not IGNORE: IGNORE would read the column as NULL and let
                // the query run, so a count, a filter or a join on a masked
                // column would give a wrong answer that looks right (and the
                // guard's repair loop would never hear why). DENY makes the
                // prepare fail with SQLITE_AUTH, a clear error.
                Authorization::Deny
            }
        }
    }))
}

/// The catalog tables discovery reads: the schema table under all its names,
/// the row counts `ANALYZE` keeps, and the pragma functions it joins.
/// `sqlite_stat4` is not among them: it keeps sample values of indexed columns.
const CATALOG: [&str; 8] = [
    "sqlite_schema",
    "sqlite_master",
    "sqlite_temp_schema",
    "sqlite_temp_master",
    "sqlite_stat1",
    "pragma_table_list",
    "pragma_table_xinfo",
    "pragma_foreign_key_list",
];

/// Tables that keep copies of other tables' values: never readable under a policy.
const COPIES: [&str; 3] = ["sqlite_stat3", "sqlite_stat4", "sqlite_dbpage"];

/// Allows an action or says why not.
fn decide(policy: &AccessPolicy, access: Access, ctx: &AuthContext<'_>) -> Result<(), String> {
    match ctx.action {
        AuthAction::Read { table_name, column_name } => {
            let is = |names: &[&str]| names.iter().any(|n| n.eq_ignore_ascii_case(table_name));
            if access == Access::Catalog && is(&CATALOG) {
                return Ok(());
            }
            if is(&COPIES) {
                return Err(format!(
                    "{table_name} keeps copies of column values, so the agent's policy does not \
                     allow reading it"
                ));
            }
            // A table read without its columns (`count(*)`) names the database only
            // when the query did; only `main` can hold tables here (no ATTACH, and
            // a read-only connection creates no temporary tables).
            let database = ctx.database_name.unwrap_or("main");
            if !policy.allows_table(Dialect::Sqlite, database, table_name) {
                return Err(format!(
                    "the agent's policy does not allow reading the table {database}.{table_name}"
                ));
            }
            if policy.is_masked(Dialect::Sqlite, database, table_name, column_name) {
                return Err(format!(
                    "the column {database}.{table_name}.{column_name} is masked by the agent's \
                     policy: no query may read it"
                ));
            }
            Ok(())
        }
        // The pragma functions prepare a PRAGMA of their own; a query needs none.
        AuthAction::Pragma { pragma_name, .. } if access == Access::Run => {
            Err(format!("the agent's policy does not allow PRAGMA {pragma_name} in a query"))
        }
        AuthAction::Attach { .. } | AuthAction::Detach { .. } => {
            Err("the agent's policy does not allow attaching databases".to_owned())
        }
        _ => Ok(()),
    }
}

/// Whether `sql` holds the keyword `NATURAL` or `USING` as SQLite reads it:
/// a keyword token, not part of a string, a quoted name, a comment, a blob or
/// a variable. Tokens are split by the rules of SQLite's tokenizer
/// (`sqlite3GetToken`), so a keyword SQLite parses is never missed; a token
/// SQLite would reject anyway may be read differently, which can only refuse
/// more.
pub(super) fn joins_by_name(sql: &str) -> bool {
    let z = sql.as_bytes();
    let at = |i: usize| z.get(i).copied().unwrap_or(0);
    let mut i = 0;
    while i < z.len() {
        let c = z[i];
        let start = i;
        match c {
            0 => return false,
            b' ' | b'\t' | b'\n' | b'\x0c' | b'\r' => i += 1,
            b'-' if at(i + 1) == b'-' => {
                i += 2;
                while at(i) != 0 && at(i) != b'\n' {
                    i += 1;
                }
            }
            b'/' if at(i + 1) == b'*' && at(i + 2) != 0 => {
                i += 3;
                let mut prev = z[start + 2];
                while !(prev == b'*' && at(i) == b'/') && at(i) != 0 {
                    prev = z[i];
                    i += 1;
                }
                if at(i) != 0 {
                    i += 1;
                }
            }
            b'\'' | b'"' | b'`' => {
                i += 1;
                while at(i) != 0 {
                    if at(i) == c {
                        if at(i + 1) == c {
                            i += 1;
                        } else {
                            break;
                        }
                    }
                    i += 1;
                }
                if at(i) != 0 {
                    i += 1;
                }
            }
            b'[' => {
                i += 1;
                while at(i) != 0 && at(i) != b']' {
                    i += 1;
                }
                if at(i) != 0 {
                    i += 1;
                }
            }
            b'x' | b'X' if at(i + 1) == b'\'' => {
                // A blob ends at the next quote: there is no escape in it.
                i += 2;
                while at(i) != 0 && at(i) != b'\'' {
                    i += 1;
                }
                if at(i) != 0 {
                    i += 1;
                }
            }
            b'?' => {
                i += 1;
                while at(i).is_ascii_digit() {
                    i += 1;
                }
            }
            b'$' | b'@' | b':' | b'#' => {
                i += 1;
                let mut n = 0;
                while at(i) != 0 {
                    let d = at(i);
                    if id_char(d) {
                        n += 1;
                        i += 1;
                    } else if d == b'(' && n > 0 {
                        // A Tcl-style `$name(...)`: up to white space or `)`.
                        i += 1;
                        while at(i) != 0 && !is_space(at(i)) && at(i) != b')' {
                            i += 1;
                        }
                        if at(i) == b')' {
                            i += 1;
                        }
                        break;
                    } else if d == b':' && at(i + 1) == b':' {
                        i += 2;
                    } else {
                        break;
                    }
                }
            }
            0xEF if at(i + 1) == 0xBB && at(i + 2) == 0xBF => i += 3,
            _ if c.is_ascii_digit() || (c == b'.' && at(i + 1).is_ascii_digit()) => {
                // A number, and whatever identifier characters follow it (SQLite
                // rejects those): neither can hold a keyword.
                i += 1;
                while at(i).is_ascii_alphanumeric()
                    || at(i) == b'.'
                    || at(i) == b'_'
                    || ((at(i) == b'+' || at(i) == b'-')
                        && matches!(at(i - 1), b'e' | b'E')
                        && at(i + 1).is_ascii_digit())
                    || id_char(at(i))
                {
                    i += 1;
                }
            }
            _ if id_char(c) => {
                while id_char(at(i)) {
                    i += 1;
                }
                let word = &z[start..i];
                if word.eq_ignore_ascii_case(b"natural") || word.eq_ignore_ascii_case(b"using") {
                    return true;
                }
            }
            _ => i += 1,
        }
    }
    false
}

/// SQLite's `IdChar`: letters, digits, `_`, `$` and every byte of a
/// multi-byte UTF-8 character.
fn id_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b'$' || c >= 0x80
}

/// SQLite's `sqlite3Isspace`.
fn is_space(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\n' | b'\x0b' | b'\x0c' | b'\r')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_natural_and_using_only_as_keywords() {
        let joins = [
            "SELECT 1 FROM a NATURAL JOIN b",
            "select 1 from a join b using (x)",
            "SELECT 1 FROM a JOIN b UsInG(x)",
            "SELECT 1 FROM a/**/natural/**/join b",
            // A byte-order mark starting a token is white space.
            "SELECT 1 FROM a \u{feff}NATURAL JOIN b",
            "SELECT 'it''s' FROM a NATURAL JOIN b",
            "SELECT \"a\"\"b\" FROM a JOIN b USING(x)",
            "SELECT x'00' AS \"y\" FROM a NATURAL JOIN b",
            // A blob has no escape: the second quote starts a string that ends at the third.
            "SELECT x'00''a' FROM a NATURAL JOIN b",
            "SELECT [a'b] FROM a NATURAL JOIN b",
            "SELECT `a``b` FROM a NATURAL JOIN b",
            "SELECT 1 -- no\nFROM a NATURAL JOIN b",
            "SELECT 1e5 FROM a NATURAL JOIN b",
            "SELECT 1 FROM a NATURAL\tJOIN b",
            // A Tcl variable ends at white space or `)`: the quote inside it starts no string.
            "SELECT $a(') FROM a NATURAL JOIN b --'",
            "SELECT :a::b FROM a NATURAL JOIN b",
            "SELECT ?1 FROM a NATURAL JOIN b",
            // Refused though SQLite would not parse them: that only refuses more.
            "SELECT natural FROM a",
            "SELECT 1 AS using",
            "SELECT $a(x USING) FROM a",
        ];
        for sql in joins {
            assert!(joins_by_name(sql), "{sql}");
        }
        let others = [
            "SELECT 1 FROM a JOIN b ON a.x = b.x",
            "SELECT 'NATURAL JOIN' FROM a",
            "SELECT \"using\" FROM a",
            "SELECT [natural] FROM a",
            "SELECT `using` FROM a",
            "SELECT 1 -- USING",
            "SELECT 1 /* NATURAL JOIN */ FROM a",
            "SELECT x'4e41545552414c' FROM a",
            "SELECT naturally, usings, using_x, x_using, using1, é_using FROM a",
            "SELECT $using, :natural, @using, #natural FROM a",
            "SELECT 1using FROM a",
            // Inside an identifier a byte-order mark is part of the name.
            "SELECT 1 FROM a\u{feff}NATURAL",
            "SELECT 1 FROM a /* unterminated NATURAL",
            "SELECT 'unterminated NATURAL",
        ];
        for sql in others {
            assert!(!joins_by_name(sql), "{sql}");
        }
    }
}

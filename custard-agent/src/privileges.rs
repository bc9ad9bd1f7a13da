//! Layer 4 in PostgreSQL: the database enforces the agent's policy too.
//!
//! The guard keeps queries inside the agent's policy (allowed schemas and
//! tables, masked columns). At start the agent also asks PostgreSQL whether
//! its login role could read past that policy: a masked column
//! (`has_column_privilege`), a table, view or materialized view outside the
//! allowed tables or schemas (`has_any_column_privilege`, with `USAGE` on its
//! schema), or a schema outside the allowed ones (`has_schema_privilege`).
//! These functions count grants to `PUBLIC` and to roles the login role
//! inherits from (`pg_read_all_data` included), so the report also says where
//! each privilege comes from, and [`PolicyReport::fix_sql`] prints the
//! `REVOKE`/`GRANT` statements that make PostgreSQL refuse what the policy
//! refuses. [`read_only_role_sql`] prints a new role that is right from the start.
//!
//! `pg_catalog`, `information_schema` and the `pg_toast`/`pg_temp` schemas are
//! not checked. Nothing here prints the database URL.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use custard_core::{AccessPolicy, Dialect, Schema, TableKind};

/// Relation kinds a query can read rows from: tables, views, materialized
/// views, foreign tables, partitioned tables.
const READABLE_KINDS: [&str; 5] = ["r", "v", "m", "f", "p"];

/// What the login role can read past the policy, and what is needed to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyReport {
    /// The role checked: the agent's login role (`session_user`).
    pub role: String,
    /// The database it is connected to.
    pub database: String,
    /// The role is a superuser: PostgreSQL checks no privilege for it, so
    /// nothing can be revoked and `findings` is left empty.
    pub superuser: bool,
    /// The policy checked.
    pub policy: AccessPolicy,
    /// Everything the role can read that the policy keeps out.
    pub findings: Vec<Finding>,
    /// Every column of each table with masked columns, for the column lists
    /// of `GRANT SELECT (...)`.
    pub masked_tables: Vec<TableColumns>,
}

/// One thing the role can read that the policy keeps out, and why it can.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// What it can read.
    pub reach: Reach,
    /// Where the privilege comes from (empty only when nothing explains it).
    pub sources: Vec<GrantSource>,
}

/// What a role can read past the policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reach {
    /// `USAGE` on a schema outside the allowed schemas.
    Schema {
        /// The schema.
        schema: String,
    },
    /// `SELECT` on a relation outside the allowed tables or schemas (on the
    /// whole relation or on some of its columns).
    Relation {
        /// Its schema.
        schema: String,
        /// Its name.
        name: String,
        /// Table, view, ...
        kind: TableKind,
    },
    /// `SELECT` on a masked column of an allowed table.
    MaskedColumn {
        /// The table's schema.
        schema: String,
        /// The table.
        table: String,
        /// The masked column.
        column: String,
    },
}

/// One grant that gives the role a privilege.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantSource {
    /// Who the privilege is granted to.
    pub grantee: Grantee,
    /// Granted on columns (`GRANT SELECT (c) ON t`) rather than the whole relation.
    pub column_level: bool,
}

/// Who holds a privilege that reaches the login role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Grantee {
    /// The login role itself.
    Itself,
    /// The login role owns the object, and owners hold every privilege on it.
    Owner,
    /// `PUBLIC`: every role.
    Public,
    /// A role the login role inherits privileges from.
    Role {
        /// The role holding the grant (`pg_read_all_data` for that predefined role).
        name: String,
        /// The login role's direct memberships that lead to it: revoking them cuts it off.
        through: Vec<String>,
    },
    /// PostgreSQL grants the privilege, but no grant above explains it.
    Unknown,
}

/// The columns of a table with masked columns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableColumns {
    /// The table's schema.
    pub schema: String,
    /// The table.
    pub table: String,
    /// Every column, in order.
    pub columns: Vec<String>,
    /// The masked ones among them.
    pub masked: Vec<String>,
}

impl TableColumns {
    /// The columns that are not masked: what `GRANT SELECT (...)` lists.
    pub fn unmasked(&self) -> impl Iterator<Item = &str> {
        self.columns.iter().filter(|c| !self.masked.contains(c)).map(String::as_str)
    }
}

impl PolicyReport {
    /// Whether PostgreSQL enforces the policy for this role: nothing found,
    /// and not a superuser.
    pub fn is_enforced(&self) -> bool {
        !self.superuser && self.findings.is_empty()
    }

    /// One line per finding: what the role can read and through which grant.
    pub fn describe(&self) -> Vec<String> {
        if self.superuser {
            return vec![format!(
                "{} is a superuser: PostgreSQL checks no privilege for it, so it reads \
                 everything the policy keeps out",
                quote_ident(&self.role)
            )];
        }
        self.findings
            .iter()
            .map(|f| {
                let (what, object, privilege) = match &f.reach {
                    Reach::Schema { schema } => (
                        format!("schema {} (not in CUSTARD_ALLOWED_SCHEMAS)", quote_ident(schema)),
                        "the schema",
                        "USAGE",
                    ),
                    Reach::Relation { schema, name, kind } => {
                        let why = if self.policy.allows_schema(Dialect::Postgres, schema) {
                            "not in CUSTARD_ALLOWED_TABLES"
                        } else {
                            "its schema is not in CUSTARD_ALLOWED_SCHEMAS"
                        };
                        (
                            format!("{} {} ({why})", kind_name(*kind), qualified(schema, name)),
                            "it",
                            "SELECT",
                        )
                    }
                    Reach::MaskedColumn { schema, table, column } => (
                        format!(
                            "masked column {}.{} (in CUSTARD_MASKED_COLUMNS)",
                            qualified(schema, table),
                            quote_ident(column)
                        ),
                        "the table",
                        "SELECT",
                    ),
                };
                let how: Vec<String> = if f.sources.is_empty() {
                    vec!["PostgreSQL grants it, through no grant the agent could find".to_owned()]
                } else {
                    f.sources
                        .iter()
                        .map(|s| source_text(&self.role, s, object, privilege))
                        .collect()
                };
                format!("{what}: {}", how.join("; "))
            })
            .collect()
    }

    /// The SQL that makes PostgreSQL refuse what the policy refuses, with a
    /// comment before each statement that changes more than the agent's role.
    /// Statements only; running all of it (psql, or one batch) is the fix.
    pub fn fix_sql(&self) -> String {
        if self.superuser {
            return format!(
                "-- {} is a superuser; no REVOKE restricts a superuser. Connect as a read-only\n\
                 -- role instead (see the SQL for one above, or run the agent without\n\
                 -- --allow-privileged-role to print it).\n",
                quote_ident(&self.role)
            );
        }
        let r = quote_ident(&self.role);
        let mut sql = Sql::default();

        // Masked columns, one table at a time: take the whole-table privilege away
        // and give the other columns back.
        let mut tables: Vec<(&str, &str)> = Vec::new();
        for f in &self.findings {
            if let Reach::MaskedColumn { schema, table, .. } = &f.reach
                && !tables.contains(&(schema.as_str(), table.as_str()))
            {
                tables.push((schema, table));
            }
        }
        for (schema, table) in tables {
            let t = qualified(schema, table);
            let mut grant_back = false;
            for f in &self.findings {
                let Reach::MaskedColumn { schema: s, table: n, column } = &f.reach else {
                    continue;
                };
                if (s.as_str(), n.as_str()) != (schema, table) {
                    continue;
                }
                let c = quote_ident(column);
                for source in sources_or_unknown(f) {
                    match (&source.grantee, source.column_level) {
                        (Grantee::Itself | Grantee::Unknown, false) => {
                            if source.grantee == Grantee::Unknown {
                                sql.comment(&format!(
                                    "{r} can read {t}.{c}, through no grant the agent could find."
                                ));
                            }
                            sql.statement(&format!("REVOKE SELECT ON {t} FROM {r};"));
                            grant_back = true;
                        }
                        (Grantee::Owner, false) => {
                            sql.comment(&format!(
                                "{r} owns {t}, and an owner can grant itself any privilege again: \
                                 give {t} another owner (ALTER TABLE {t} OWNER TO ...)."
                            ));
                            sql.statement(&format!("REVOKE SELECT ON {t} FROM {r};"));
                            grant_back = true;
                        }
                        (Grantee::Public, false) => {
                            sql.comment(&format!(
                                "SELECT on {t} is granted to PUBLIC, so every role reads {c}: \
                                 revoke it, and grant the columns to each role that needs them."
                            ));
                            sql.statement(&format!("REVOKE SELECT ON {t} FROM PUBLIC;"));
                            grant_back = true;
                        }
                        (Grantee::Itself | Grantee::Owner | Grantee::Unknown, true) => {
                            sql.statement(&format!("REVOKE SELECT ({c}) ON {t} FROM {r};"));
                        }
                        (Grantee::Public, true) => {
                            sql.comment(&format!(
                                "SELECT on {t}.{c} is granted to PUBLIC, so every role reads it."
                            ));
                            sql.statement(&format!("REVOKE SELECT ({c}) ON {t} FROM PUBLIC;"));
                        }
                        (Grantee::Role { name, through }, column_level) => {
                            let what = if column_level { format!("{t}.{c}") } else { t.clone() };
                            revoke_membership(&mut sql, &r, name, through, &what);
                            grant_back |= !column_level;
                        }
                    }
                }
            }
            if grant_back {
                match self.masked_tables.iter().find(|m| (m.schema.as_str(), m.table.as_str()) == (schema, table)) {
                    Some(columns) => {
                        let list: Vec<String> = columns.unmasked().map(quote_ident).collect();
                        if list.is_empty() {
                            sql.comment(&format!("Every column of {t} is masked: nothing to grant back."));
                        } else {
                            sql.statement(&format!(
                                "GRANT SELECT ({}) ON {t} TO {r};",
                                list.join(", ")
                            ));
                        }
                    }
                    None => sql.comment(&format!(
                        "Grant back the columns of {t} that are not masked: GRANT SELECT (...) ON {t} TO {r};"
                    )),
                }
            }
        }

        // Relations outside the policy: no SELECT at all (this also revokes the
        // grantee's column privileges on them).
        for f in &self.findings {
            let Reach::Relation { schema, name, kind } = &f.reach else { continue };
            let t = qualified(schema, name);
            let what = format!("{} {t}", kind_name(*kind));
            for source in sources_or_unknown(f) {
                match &source.grantee {
                    Grantee::Itself => {}
                    Grantee::Unknown => sql.comment(&format!(
                        "{r} can read {what}, through no grant the agent could find."
                    )),
                    Grantee::Owner => sql.comment(&format!(
                        "{r} owns {what}, and an owner can grant itself any privilege again: \
                         give it another owner (ALTER ... OWNER TO ...)."
                    )),
                    Grantee::Public => {
                        sql.comment(&format!(
                            "SELECT on {what} is granted to PUBLIC, so every role reads it: revoke \
                             it, and grant it to each role that needs it."
                        ));
                        sql.statement(&format!("REVOKE SELECT ON {t} FROM PUBLIC;"));
                        continue;
                    }
                    Grantee::Role { name, through } => {
                        revoke_membership(&mut sql, &r, name, through, &what);
                        continue;
                    }
                }
                sql.statement(&format!("REVOKE SELECT ON {t} FROM {r};"));
            }
        }

        // Schemas outside the policy: no USAGE.
        for f in &self.findings {
            let Reach::Schema { schema } = &f.reach else { continue };
            let s = quote_ident(schema);
            for source in sources_or_unknown(f) {
                match &source.grantee {
                    Grantee::Itself => {}
                    Grantee::Unknown => sql.comment(&format!(
                        "{r} has USAGE on schema {s}, through no grant the agent could find."
                    )),
                    Grantee::Owner => sql.comment(&format!(
                        "{r} owns schema {s}, and an owner can grant itself any privilege again: \
                         give it another owner (ALTER SCHEMA {s} OWNER TO ...)."
                    )),
                    Grantee::Public => {
                        sql.comment(&format!(
                            "USAGE on schema {s} is granted to PUBLIC (PostgreSQL has no per-role \
                             deny): revoke it, and grant USAGE to each role that needs it."
                        ));
                        sql.statement(&format!("REVOKE USAGE ON SCHEMA {s} FROM PUBLIC;"));
                        continue;
                    }
                    Grantee::Role { name, through } => {
                        revoke_membership(&mut sql, &r, name, through, &format!("schema {s}"));
                        continue;
                    }
                }
                sql.statement(&format!("REVOKE USAGE ON SCHEMA {s} FROM {r};"));
            }
        }
        sql.text
    }

    /// What the agent prints when it refuses to start: the findings, the SQL
    /// of [`PolicyReport::fix_sql`], and how to override.
    pub fn refusal_message(&self) -> String {
        let mut message = format!(
            "refusing to run: the database role {} can read what the agent's policy keeps out, \
             so PostgreSQL would not stop a query the guard let through by mistake:\n",
            quote_ident(&self.role)
        );
        for line in self.describe() {
            let _ = writeln!(message, "  - {line}");
        }
        let _ = write!(
            message,
            "\nTo make PostgreSQL enforce the policy, an administrator runs this, connected to \
             the database {}:\n\n{}\n\
             To run anyway, pass --allow-privileged-role (or set \
             CUSTARD_ALLOW_PRIVILEGED_ROLE=true); the guard still enforces the policy.\n",
            quote_ident(&self.database),
            self.fix_sql()
        );
        message
    }

    /// What the agent logs when `--allow-privileged-role` lets it run anyway.
    pub fn warning_message(&self) -> String {
        let mut message = format!(
            "running with a database role that can read what the agent's policy keeps out \
             (--allow-privileged-role): only the guard enforces the policy. The role {} can read:\n",
            quote_ident(&self.role)
        );
        for line in self.describe() {
            let _ = writeln!(message, "  - {line}");
        }
        let _ = write!(
            message,
            "\nTo make PostgreSQL enforce the policy, run this connected to the database {}:\n\n{}",
            quote_ident(&self.database),
            self.fix_sql()
        );
        message
    }
}

/// The privilege sources of a finding, or `Unknown` when none was found.
fn sources_or_unknown(f: &Finding) -> Vec<GrantSource> {
    if f.sources.is_empty() {
        vec![GrantSource { grantee: Grantee::Unknown, column_level: false }]
    } else {
        f.sources.clone()
    }
}

/// The SQL for a privilege that comes through a membership of `name`.
fn revoke_membership(sql: &mut Sql, r: &str, name: &str, through: &[String], what: &str) {
    let n = quote_ident(name);
    if through.is_empty() {
        sql.comment(&format!(
            "{r} reads {what} through {n}, a role it inherits from: revoke that membership."
        ));
        return;
    }
    let list: Vec<String> = through.iter().map(|d| quote_ident(d)).collect();
    let via = if through.len() == 1 && through[0] == name {
        String::new()
    } else {
        format!(" (a member of it through {})", list.join(", "))
    };
    // pg_read_all_data holds no grant to revoke: only the membership goes.
    let instead = if name == "pg_read_all_data" {
        String::new()
    } else {
        format!(
            " (or, if no member of {n} should read it either, revoke the privilege from {n} \
             instead)"
        )
    };
    sql.comment(&format!(
        "{r} reads {what} because it inherits from {n}{via}: revoke the membership, and grant \
         {r} directly what it should keep{instead}."
    ));
    for d in list {
        sql.statement(&format!("REVOKE {d} FROM {r};"));
    }
}

/// How a grant reaches the role, for the list of findings.
fn source_text(role: &str, source: &GrantSource, object: &str, privilege: &str) -> String {
    let on = if source.column_level {
        format!("{privilege} on the column")
    } else {
        format!("{privilege} on {object}")
    };
    match &source.grantee {
        Grantee::Itself => format!("{on} is granted to {}", quote_ident(role)),
        Grantee::Owner => format!("{} owns {object}", quote_ident(role)),
        Grantee::Public => format!("{on} is granted to PUBLIC"),
        Grantee::Role { name, through } => {
            let via = if through.is_empty() || (through.len() == 1 && through[0] == *name) {
                String::new()
            } else {
                let list: Vec<String> = through.iter().map(|d| quote_ident(d)).collect();
                format!(" through {}", list.join(", "))
            };
            format!("{on} comes from its membership of {}{via}", quote_ident(name))
        }
        Grantee::Unknown => format!("{on} is granted through no grant the agent could find"),
    }
}

/// Statements and comments, each statement once.
#[derive(Default)]
struct Sql {
    text: String,
    seen: Vec<String>,
}

impl Sql {
    fn statement(&mut self, statement: &str) {
        if !self.seen.iter().any(|s| s == statement) {
            self.seen.push(statement.to_owned());
            self.text.push_str(statement);
            self.text.push('\n');
        }
    }

    fn comment(&mut self, comment: &str) {
        if !self.seen.iter().any(|s| s == comment) {
            self.seen.push(comment.to_owned());
            for line in wrap(comment, 88) {
                let _ = writeln!(self.text, "-- {line}");
            }
        }
    }
}

/// `text` in lines of at most about `width` characters, broken at spaces.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = vec![String::new()];
    for word in text.split(' ') {
        let line = lines.last_mut().expect("one line");
        if !line.is_empty() && line.len() + 1 + word.len() > width {
            lines.push(word.to_owned());
        } else {
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(word);
        }
    }
    lines
}

fn kind_name(kind: TableKind) -> &'static str {
    match kind {
        TableKind::Table => "table",
        TableKind::View => "view",
        TableKind::MaterializedView => "materialized view",
        TableKind::Foreign => "foreign table",
        _ => "relation",
    }
}

/// `name` as a PostgreSQL identifier: always quoted, so case and any character survive.
pub(crate) fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn qualified(schema: &str, name: &str) -> String {
    format!("{}.{}", quote_ident(schema), quote_ident(name))
}

/// The `REVOKE`/`GRANT` SQL for `role` under `policy`, from the tables of
/// `schema` alone, as if `role` held every privilege itself: `REVOKE SELECT`
/// on each relation outside the policy, `REVOKE USAGE` on each schema outside
/// it, and `REVOKE SELECT` then `GRANT SELECT (every other column)` on each
/// table with masked columns. What the agent prints at start comes from
/// [`check_policy`] instead, which also knows grants to `PUBLIC` and to other
/// roles.
pub fn policy_privileges_sql(role: &str, policy: &AccessPolicy, schema: &Schema) -> String {
    let pg = Dialect::Postgres;
    let itself = || vec![GrantSource { grantee: Grantee::Itself, column_level: false }];
    let mut findings = Vec::new();
    let mut masked_tables = Vec::new();
    let mut schemas: Vec<&str> = Vec::new();
    for t in &schema.tables {
        if !policy.allows_schema(pg, &t.schema) && !schemas.contains(&t.schema.as_str()) {
            schemas.push(&t.schema);
        }
        if !policy.allows_table(pg, &t.schema, &t.name) {
            findings.push(Finding {
                reach: Reach::Relation {
                    schema: t.schema.clone(),
                    name: t.name.clone(),
                    kind: t.kind,
                },
                sources: itself(),
            });
            continue;
        }
        let columns: Vec<String> = t.columns.iter().map(|c| c.name.clone()).collect();
        let masked: Vec<String> = columns
            .iter()
            .filter(|c| policy.is_masked(pg, &t.schema, &t.name, c))
            .cloned()
            .collect();
        for column in &masked {
            findings.push(Finding {
                reach: Reach::MaskedColumn {
                    schema: t.schema.clone(),
                    table: t.name.clone(),
                    column: column.clone(),
                },
                sources: itself(),
            });
        }
        if !masked.is_empty() {
            masked_tables.push(TableColumns {
                schema: t.schema.clone(),
                table: t.name.clone(),
                columns,
                masked,
            });
        }
    }
    for s in schemas {
        findings.push(Finding { reach: Reach::Schema { schema: s.to_owned() }, sources: itself() });
    }
    PolicyReport {
        role: role.to_owned(),
        database: String::new(),
        superuser: false,
        policy: policy.clone(),
        findings,
        masked_tables,
    }
    .fix_sql()
}

/// Checks what the session's login role can read past `policy`, on `client`.
///
/// Read-only: catalog queries and the `has_*_privilege` functions. Parts of
/// the policy that are not set are not checked (no schema list: no schema is
/// outside it). Masked columns that do not exist are ignored.
pub async fn check_policy(
    client: &tokio_postgres::Client,
    policy: &AccessPolicy,
) -> Result<PolicyReport, tokio_postgres::Error> {
    let me = client
        .query_one(
            "SELECT r.oid, r.rolname::text, r.rolsuper, pg_catalog.current_database()::text \
             FROM pg_catalog.pg_roles r WHERE r.rolname = session_user",
            &[],
        )
        .await?;
    let oid: u32 = me.try_get(0)?;
    let mut report = PolicyReport {
        role: me.try_get(1)?,
        database: me.try_get(3)?,
        superuser: me.try_get(2)?,
        policy: policy.clone(),
        findings: Vec::new(),
        masked_tables: Vec::new(),
    };
    let pg = Dialect::Postgres;
    let grantees = Grantees::read(client, oid).await?;

    // Masked columns: the columns of their tables, and which masked ones the role reads.
    if !policy.masked_columns().is_empty() {
        let (schemas, tables): (Vec<String>, Vec<String>) =
            policy.masked_columns().iter().map(|(s, t, _)| (s.clone(), t.clone())).unzip();
        let rows = client
            .query(
                "SELECT n.nspname::text, c.relname::text, a.attname::text, \
                        pg_catalog.has_schema_privilege($1::oid, n.oid, 'USAGE') \
                          AND pg_catalog.has_column_privilege($1::oid, c.oid, a.attnum, 'SELECT'), \
                        c.relowner = $1::oid, \
                        ARRAY(SELECT DISTINCT g.grantee FROM pg_catalog.aclexplode( \
                                coalesce(c.relacl, pg_catalog.acldefault('r', c.relowner))) g \
                              WHERE g.privilege_type = 'SELECT'), \
                        ARRAY(SELECT DISTINCT g.grantee FROM pg_catalog.aclexplode(a.attacl) g \
                              WHERE g.privilege_type = 'SELECT') \
                 FROM pg_catalog.pg_class c \
                 JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
                 JOIN pg_catalog.pg_attribute a \
                   ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped \
                 WHERE c.relkind::text = ANY($2) \
                   AND (n.nspname::text, c.relname::text) IN \
                       (SELECT * FROM unnest($3::text[], $4::text[])) \
                 ORDER BY n.nspname, c.relname, a.attnum",
                &[&oid, &READABLE_KINDS.to_vec(), &schemas, &tables],
            )
            .await?;
        let mut by_table: BTreeMap<(String, String), TableColumns> = BTreeMap::new();
        for row in rows {
            let (schema, table, column): (String, String, String) =
                (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
            let readable: bool = row.try_get(3)?;
            let owned: bool = row.try_get(4)?;
            let table_grants: Vec<u32> = row.try_get(5)?;
            let column_grants: Vec<u32> = row.try_get(6)?;
            let masked = policy.is_masked(pg, &schema, &table, &column);
            let entry =
                by_table.entry((schema.clone(), table.clone())).or_insert_with(|| TableColumns {
                    schema: schema.clone(),
                    table: table.clone(),
                    columns: Vec::new(),
                    masked: Vec::new(),
                });
            entry.columns.push(column.clone());
            if !masked {
                continue;
            }
            entry.masked.push(column.clone());
            // A table outside the policy is reported (and revoked) as a whole.
            if readable && !report.superuser && policy.allows_table(pg, &schema, &table) {
                let mut sources = grantees.sources(oid, owned, &table_grants, false);
                sources.extend(grantees.sources(oid, false, &column_grants, true));
                grantees.add_read_all_data(&mut sources);
                report.findings.push(Finding {
                    reach: Reach::MaskedColumn { schema, table, column },
                    sources,
                });
            }
        }
        report.masked_tables = by_table.into_values().collect();
    }
    if report.superuser {
        return Ok(report);
    }

    // Relations outside the allowed tables or schemas that the role can read.
    if policy.allowed_tables().is_some() || policy.allowed_schemas().is_some() {
        let rows = client
            .query(
                "SELECT n.nspname::text, c.relname::text, c.relkind::text, c.relowner = $1::oid, \
                        ARRAY(SELECT DISTINCT g.grantee FROM pg_catalog.aclexplode( \
                                coalesce(c.relacl, pg_catalog.acldefault('r', c.relowner))) g \
                              WHERE g.privilege_type = 'SELECT'), \
                        ARRAY(SELECT DISTINCT g.grantee FROM pg_catalog.pg_attribute a, \
                                pg_catalog.aclexplode(a.attacl) g \
                              WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped \
                                AND g.privilege_type = 'SELECT') \
                 FROM pg_catalog.pg_class c \
                 JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
                 WHERE c.relkind::text = ANY($2) \
                   AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
                   AND n.nspname !~ '^pg_(toast|temp_)' \
                   AND pg_catalog.has_schema_privilege($1::oid, n.oid, 'USAGE') \
                   AND pg_catalog.has_any_column_privilege($1::oid, c.oid, 'SELECT') \
                 ORDER BY n.nspname, c.relname",
                &[&oid, &READABLE_KINDS.to_vec()],
            )
            .await?;
        for row in rows {
            let (schema, name, kind): (String, String, String) =
                (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
            if policy.allows_table(pg, &schema, &name) {
                continue;
            }
            let owned: bool = row.try_get(3)?;
            let table_grants: Vec<u32> = row.try_get(4)?;
            let column_grants: Vec<u32> = row.try_get(5)?;
            let mut sources = grantees.sources(oid, owned, &table_grants, false);
            sources.extend(grantees.sources(oid, false, &column_grants, true));
            grantees.add_read_all_data(&mut sources);
            let kind = match kind.as_str() {
                "v" => TableKind::View,
                "m" => TableKind::MaterializedView,
                "f" => TableKind::Foreign,
                _ => TableKind::Table,
            };
            report
                .findings
                .push(Finding { reach: Reach::Relation { schema, name, kind }, sources });
        }
    }

    // Schemas outside the allowed ones that the role may use.
    if policy.allowed_schemas().is_some() {
        let rows = client
            .query(
                "SELECT n.nspname::text, n.nspowner = $1::oid, \
                        ARRAY(SELECT DISTINCT g.grantee FROM pg_catalog.aclexplode( \
                                coalesce(n.nspacl, pg_catalog.acldefault('n', n.nspowner))) g \
                              WHERE g.privilege_type = 'USAGE') \
                 FROM pg_catalog.pg_namespace n \
                 WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') \
                   AND n.nspname !~ '^pg_(toast|temp_)' \
                   AND pg_catalog.has_schema_privilege($1::oid, n.oid, 'USAGE') \
                 ORDER BY n.nspname",
                &[&oid],
            )
            .await?;
        for row in rows {
            let schema: String = row.try_get(0)?;
            if policy.allows_schema(pg, &schema) {
                continue;
            }
            let owned: bool = row.try_get(1)?;
            let grants: Vec<u32> = row.try_get(2)?;
            let mut sources = grantees.sources(oid, owned, &grants, false);
            grantees.add_read_all_data(&mut sources);
            report.findings.push(Finding { reach: Reach::Schema { schema }, sources });
        }
    }
    Ok(report)
}

/// The roles the login role inherits privileges from, with the direct
/// memberships that lead to each.
struct Grantees {
    /// Role oid -> (name, direct memberships of the login role leading to it).
    inherited: HashMap<u32, (String, Vec<String>)>,
    /// `pg_read_all_data`, when the role inherits from it.
    read_all_data: Option<u32>,
}

impl Grantees {
    async fn read(client: &tokio_postgres::Client, me: u32) -> Result<Self, tokio_postgres::Error> {
        let rows = client
            .query(
                "SELECT r.oid, r.rolname::text, d.rolname::text \
                 FROM pg_catalog.pg_auth_members m \
                 JOIN pg_catalog.pg_roles d ON d.oid = m.roleid \
                 JOIN pg_catalog.pg_roles r ON pg_catalog.pg_has_role(d.oid, r.oid, 'USAGE') \
                 WHERE m.member = $1::oid AND pg_catalog.pg_has_role($1::oid, d.oid, 'USAGE') \
                 ORDER BY r.rolname, d.rolname",
                &[&me],
            )
            .await?;
        let mut inherited: HashMap<u32, (String, Vec<String>)> = HashMap::new();
        for row in rows {
            let (oid, name, through): (u32, String, String) =
                (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
            let entry = inherited.entry(oid).or_insert_with(|| (name, Vec::new()));
            if !entry.1.contains(&through) {
                entry.1.push(through);
            }
        }
        let read_all_data =
            inherited.iter().find(|(_, (name, _))| name == "pg_read_all_data").map(|(oid, _)| *oid);
        Ok(Grantees { inherited, read_all_data })
    }

    /// The sources among `grantees` (an ACL's) that reach the login role `me`.
    fn sources(
        &self,
        me: u32,
        owned: bool,
        grantees: &[u32],
        column_level: bool,
    ) -> Vec<GrantSource> {
        let mut out: Vec<GrantSource> = Vec::new();
        let mut push = |grantee: Grantee| {
            let source = GrantSource { grantee, column_level };
            if !out.contains(&source) {
                out.push(source);
            }
        };
        for &g in grantees {
            if g == me {
                push(if owned { Grantee::Owner } else { Grantee::Itself });
            } else if g == 0 {
                push(Grantee::Public);
            } else if let Some((name, through)) = self.inherited.get(&g) {
                push(Grantee::Role { name: name.clone(), through: through.clone() });
            }
        }
        out
    }

    /// `pg_read_all_data` gives SELECT on everything and USAGE on every schema,
    /// with no trace in any ACL.
    fn add_read_all_data(&self, sources: &mut Vec<GrantSource>) {
        if let Some((name, through)) = self.read_all_data.and_then(|oid| self.inherited.get(&oid)) {
            sources.push(GrantSource {
                grantee: Grantee::Role { name: name.clone(), through: through.clone() },
                column_level: false,
            });
        }
    }
}

/// The SQL an administrator runs to create `role` as a read-only login role
/// on `database` that reads what `policy` allows and nothing else.
///
/// With allowed tables, exactly those are granted (tables created later are
/// not readable until granted); otherwise every table and view of the allowed
/// schemas (`public` when none are named), today's and later ones. A table
/// with masked columns is granted column by column, every column but the
/// masked ones, from `masked_tables`.
pub fn read_only_role_sql(
    role: &str,
    database: &str,
    policy: &AccessPolicy,
    masked_tables: &[TableColumns],
) -> String {
    let pg = Dialect::Postgres;
    let r = quote_ident(role);
    let db = quote_ident(database);
    let mut sql = format!(
        "-- A read-only login role for the Custard agent. Run this as a superuser (or as the\n\
         -- owner of the database and its schemas) connected to {db}, e.g. psql -d {db}.\n\
         -- Choose a strong password for PASSWORD below, or remove PASSWORD '...' and set it\n\
         -- afterwards with \\password {r} in psql, which keeps it out of the server logs.\n\
         -- NOINHERIT: the role gets its grants directly, not from other roles (so it does\n\
         -- not use pg_read_all_data), and a role granted to it later lends it nothing\n\
         -- without SET ROLE, which the agent never runs.\n\
         CREATE ROLE {r} LOGIN PASSWORD '<choose one>'\n  \
         NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS NOINHERIT;\n\
         GRANT CONNECT ON DATABASE {db} TO {r};\n"
    );
    // The grant of one table: column by column when it has masked columns.
    let grant_table = |sql: &mut String, schema: &str, table: &str, whole: bool| {
        let t = qualified(schema, table);
        if policy.masked_in(pg, schema, table).next().is_none() {
            if !whole {
                let _ = writeln!(sql, "GRANT SELECT ON {t} TO {r};");
            }
            return;
        }
        if whole {
            let _ = writeln!(sql, "REVOKE SELECT ON {t} FROM {r};");
        }
        match masked_tables.iter().find(|m| m.schema == schema && m.table == table) {
            Some(columns) => {
                let list: Vec<String> = columns.unmasked().map(quote_ident).collect();
                if list.is_empty() {
                    let _ = writeln!(sql, "-- Every column of {t} is masked: it is not granted.");
                } else {
                    let _ = writeln!(sql, "GRANT SELECT ({}) ON {t} TO {r};", list.join(", "));
                }
            }
            None => {
                let _ = writeln!(
                    sql,
                    "-- {t} has masked columns: grant only the others, GRANT SELECT (...) ON {t} TO {r};"
                );
            }
        }
    };
    if let Some(tables) = policy.allowed_tables() {
        let mut schemas: Vec<&str> = Vec::new();
        let mut seen: Vec<(&str, &str)> = Vec::new();
        for (schema, table) in tables {
            if !policy.allows_schema(pg, schema)
                || seen.contains(&(schema.as_str(), table.as_str()))
            {
                continue;
            }
            seen.push((schema, table));
            if !schemas.contains(&schema.as_str()) {
                schemas.push(schema);
                let _ = writeln!(sql, "GRANT USAGE ON SCHEMA {} TO {r};", quote_ident(schema));
            }
        }
        for (schema, table) in seen {
            grant_table(&mut sql, schema, table, false);
        }
        sql.push_str(
            "-- Only the allowed tables are granted: grant a table created later when you add it\n\
             -- to CUSTARD_ALLOWED_TABLES.\n",
        );
    } else {
        let default = ["public".to_owned()];
        let schemas = policy.allowed_schemas().unwrap_or(&default);
        let mut seen: Vec<&str> = Vec::new();
        for schema in schemas.iter().map(String::as_str) {
            if seen.contains(&schema) {
                continue;
            }
            seen.push(schema);
            let s = quote_ident(schema);
            let _ = write!(
                sql,
                "GRANT USAGE ON SCHEMA {s} TO {r};\n\
                 GRANT SELECT ON ALL TABLES IN SCHEMA {s} TO {r};\n\
                 ALTER DEFAULT PRIVILEGES IN SCHEMA {s} GRANT SELECT ON TABLES TO {r};\n"
            );
        }
        let mut masked: Vec<(&str, &str)> = Vec::new();
        for (schema, table, _) in policy.masked_columns() {
            if seen.contains(&schema.as_str())
                && !masked.contains(&(schema.as_str(), table.as_str()))
            {
                masked.push((schema, table));
            }
        }
        for (schema, table) in masked {
            grant_table(&mut sql, schema, table, true);
        }
        if seen.is_empty() {
            sql.push_str(
                "-- No schemas were named: repeat GRANT USAGE ON SCHEMA, GRANT SELECT ON ALL TABLES\n\
                 -- IN SCHEMA and ALTER DEFAULT PRIVILEGES IN SCHEMA for each schema to share.\n",
            );
        } else {
            sql.push_str(
                "-- ALTER DEFAULT PRIVILEGES covers tables created later by the role running this\n\
                 -- script; for tables another role creates (a migrations user, say), repeat those\n\
                 -- lines as ALTER DEFAULT PRIVILEGES FOR ROLE <that role> IN SCHEMA ...\n",
            );
        }
    }
    let _ = write!(
        sql,
        "-- Every transaction starts read-only; the grants above are what actually enforce it.\n\
         ALTER ROLE {r} SET default_transaction_read_only = on;\n\
         -- What one question may take from the database: sort and hash memory, disk for\n\
         -- temporary files (only a superuser may set this one), and time. The agent sets\n\
         -- tighter work_mem and statement_timeout per question too.\n\
         ALTER ROLE {r} SET work_mem = '32MB';\n\
         ALTER ROLE {r} SET temp_file_limit = '1GB';\n\
         ALTER ROLE {r} SET statement_timeout = '60s';\n"
    );
    sql
}

#[cfg(test)]
mod tests {
    use custard_core::{Column, Table};

    use super::*;

    fn policy(schemas: Option<&[&str]>, tables: Option<&[&str]>, masked: &[&str]) -> AccessPolicy {
        let list = |l: &[&str]| l.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        AccessPolicy::new(schemas.map(list), tables.map(list), list(masked)).expect("valid")
    }

    fn table(schema: &str, name: &str, columns: &[&str]) -> Table {
        Table {
            schema: schema.into(),
            name: name.into(),
            kind: TableKind::Table,
            comment: None,
            columns: columns
                .iter()
                .map(|c| Column {
                    name: (*c).into(),
                    data_type: "text".into(),
                    nullable: true,
                    default: None,
                    comment: None,
                    sample_values: Vec::new(),
                })
                .collect(),
            primary_key: Vec::new(),
            foreign_keys: Vec::new(),
            row_estimate: None,
        }
    }

    #[test]
    fn the_sql_from_a_schema_alone() {
        let p = policy(
            Some(&["public"]),
            Some(&["public.ok_tbl", "public.secrets"]),
            &["public.secrets.secret", "public.secrets.Pin \"2\""],
        );
        let schema = Schema {
            dialect: Dialect::Postgres,
            tables: vec![
                table("public", "ok_tbl", &["a"]),
                table("public", "secrets", &["id", "secret", "Pin \"2\"", "name"]),
                table("public", "forbidden", &["x"]),
                table("audit", "log", &["y"]),
            ],
        };
        assert_eq!(
            policy_privileges_sql("Agent \"R\"", &p, &schema),
            "REVOKE SELECT ON \"public\".\"secrets\" FROM \"Agent \"\"R\"\"\";\n\
             GRANT SELECT (\"id\", \"name\") ON \"public\".\"secrets\" TO \"Agent \"\"R\"\"\";\n\
             REVOKE SELECT ON \"public\".\"forbidden\" FROM \"Agent \"\"R\"\"\";\n\
             REVOKE SELECT ON \"audit\".\"log\" FROM \"Agent \"\"R\"\"\";\n\
             REVOKE USAGE ON SCHEMA \"audit\" FROM \"Agent \"\"R\"\"\";\n"
        );
        assert_eq!(policy_privileges_sql("r", &AccessPolicy::default(), &schema), "");
    }

    #[test]
    fn public_membership_and_ownership_get_their_own_sql() {
        let p = policy(None, Some(&["public.t"]), &["public.t.secret"]);
        let role = |name: &str, through: &[&str]| Grantee::Role {
            name: name.into(),
            through: through.iter().map(|s| (*s).to_owned()).collect(),
        };
        let src = |grantee, column_level| GrantSource { grantee, column_level };
        let report = PolicyReport {
            role: "reader".into(),
            database: "shop".into(),
            superuser: false,
            policy: p,
            findings: vec![
                Finding {
                    reach: Reach::MaskedColumn {
                        schema: "public".into(),
                        table: "t".into(),
                        column: "secret".into(),
                    },
                    sources: vec![
                        src(Grantee::Public, false),
                        src(Grantee::Itself, true),
                        src(role("analysts", &["analysts"]), false),
                    ],
                },
                Finding {
                    reach: Reach::Relation {
                        schema: "public".into(),
                        name: "other".into(),
                        kind: TableKind::View,
                    },
                    sources: vec![src(role("pg_read_all_data", &["staff"]), false)],
                },
                Finding {
                    reach: Reach::Relation {
                        schema: "public".into(),
                        name: "mine".into(),
                        kind: TableKind::Table,
                    },
                    sources: vec![src(Grantee::Owner, false)],
                },
            ],
            masked_tables: vec![TableColumns {
                schema: "public".into(),
                table: "t".into(),
                columns: vec!["id".into(), "secret".into()],
                masked: vec!["secret".into()],
            }],
        };
        let sql = report.fix_sql();
        // Comments wrap; read them as one line each.
        let flat = sql.replace("\n-- ", " ");
        let statements: Vec<&str> = sql.lines().filter(|l| !l.starts_with("--")).collect();
        assert_eq!(
            statements,
            [
                "REVOKE SELECT ON \"public\".\"t\" FROM PUBLIC;",
                "REVOKE SELECT (\"secret\") ON \"public\".\"t\" FROM \"reader\";",
                "REVOKE \"analysts\" FROM \"reader\";",
                "GRANT SELECT (\"id\") ON \"public\".\"t\" TO \"reader\";",
                "REVOKE \"staff\" FROM \"reader\";",
                "REVOKE SELECT ON \"public\".\"mine\" FROM \"reader\";",
            ],
            "{sql}"
        );
        for needle in [
            "SELECT on \"public\".\"t\" is granted to PUBLIC, so every role reads \"secret\"",
            "inherits from \"pg_read_all_data\" (a member of it through \"staff\")",
            "\"reader\" owns table \"public\".\"mine\"",
            "revoke the privilege from \"analysts\" instead",
        ] {
            assert!(flat.contains(needle), "{needle:?} missing from:\n{sql}");
        }
        assert!(!flat.contains("from \"pg_read_all_data\" instead"), "{sql}");
        assert!(sql.lines().all(|l| l.len() <= 100), "{sql}");
        let message = report.refusal_message();
        for needle in [
            "refusing to run: the database role \"reader\"",
            "  - masked column \"public\".\"t\".\"secret\" (in CUSTARD_MASKED_COLUMNS): SELECT on \
             the table is granted to PUBLIC; SELECT on the column is granted to \"reader\"; \
             SELECT on the table comes from its membership of \"analysts\"",
            "  - view \"public\".\"other\" (not in CUSTARD_ALLOWED_TABLES): SELECT on it comes \
             from its membership of \"pg_read_all_data\" through \"staff\"",
            "connected to the database \"shop\":\n\n-- SELECT on",
            &sql,
            "--allow-privileged-role",
        ] {
            assert!(message.contains(needle), "{needle:?} missing from:\n{message}");
        }
        assert!(!report.is_enforced());
    }

    #[test]
    fn the_read_only_role_grants_only_what_the_policy_allows() {
        let masked = [TableColumns {
            schema: "public".into(),
            table: "secrets".into(),
            columns: vec!["id".into(), "secret".into(), "name".into()],
            masked: vec!["secret".into()],
        }];
        let tables = policy(
            Some(&["public"]),
            Some(&["public.ok_tbl", "public.secrets", "other.t", "public.ok_tbl"]),
            &["public.secrets.secret"],
        );
        let sql = read_only_role_sql("custard_reader", "shop", &tables, &masked);
        let grants: Vec<&str> =
            sql.lines().filter(|l| l.starts_with("GRANT") || l.starts_with("REVOKE")).collect();
        assert_eq!(
            grants,
            [
                "GRANT CONNECT ON DATABASE \"shop\" TO \"custard_reader\";",
                "GRANT USAGE ON SCHEMA \"public\" TO \"custard_reader\";",
                "GRANT SELECT ON \"public\".\"ok_tbl\" TO \"custard_reader\";",
                "GRANT SELECT (\"id\", \"name\") ON \"public\".\"secrets\" TO \"custard_reader\";",
            ],
            "{sql}"
        );
        assert!(!sql.contains("ALL TABLES") && !sql.contains("DEFAULT PRIVILEGES"), "{sql}");

        let schemas = policy(Some(&["public", "sales"]), None, &["public.secrets.secret"]);
        let sql = read_only_role_sql("custard_reader", "shop", &schemas, &masked);
        for needle in [
            "GRANT SELECT ON ALL TABLES IN SCHEMA \"sales\" TO \"custard_reader\";",
            "ALTER DEFAULT PRIVILEGES IN SCHEMA \"public\" GRANT SELECT ON TABLES",
            "REVOKE SELECT ON \"public\".\"secrets\" FROM \"custard_reader\";\n\
             GRANT SELECT (\"id\", \"name\") ON \"public\".\"secrets\" TO \"custard_reader\";",
        ] {
            assert!(sql.contains(needle), "{needle:?} missing from:\n{sql}");
        }
        // Columns unknown (the database was not read): say what to grant instead of guessing.
        let sql = read_only_role_sql("r", "d", &schemas, &[]);
        assert!(
            sql.contains("-- \"public\".\"secrets\" has masked columns: grant only the others"),
            "{sql}"
        );
    }
}

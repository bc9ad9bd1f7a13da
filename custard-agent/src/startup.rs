//! Layer 3 of the read-only safety, the role check: before serving anything the
//! agent looks at the PostgreSQL role it logged in as and refuses a role that
//! can reach outside the database (files, programs, other sessions) or grant
//! itself more, and it prints the SQL that creates a proper read-only role
//! (written by `privileges::read_only_role_sql`). The same connection serves
//! the layer-4 policy check ([`with_client`]).
//!
//! Nothing here ever prints the database URL: it may hold a password.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use tokio_postgres::NoTls;
use tokio_postgres::config::Host;

/// Predefined roles whose members reach the server itself; the order is the
/// order of the report.
const DANGEROUS_ROLES: [&str; 4] = [
    "pg_read_server_files",
    "pg_write_server_files",
    "pg_execute_server_program",
    "pg_signal_backend",
];

/// How long connecting may take before the check gives up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the whole check may take; a stuck server must not hang startup.
const CHECK_TIMEOUT: Duration = Duration::from_secs(30);

/// The login role's attributes and memberships, as far as they make it privileged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RoleReport {
    /// The role the agent logged in as (`session_user`).
    pub(crate) user: String,
    /// The role has the SUPERUSER attribute.
    pub(crate) superuser: bool,
    /// The dangerous predefined roles it is a member of, directly or through other roles.
    pub(crate) dangerous_roles: Vec<String>,
    /// Other privileges: `CREATEROLE`, `REPLICATION`, `BYPASSRLS`, and roles with
    /// SUPERUSER, CREATEROLE or BYPASSRLS it can switch to with `SET ROLE`.
    pub(crate) other_privileges: Vec<String>,
}

impl RoleReport {
    /// Whether the agent should refuse to run as this role (unless overridden).
    pub(crate) fn is_privileged(&self) -> bool {
        self.superuser || !self.dangerous_roles.is_empty() || !self.other_privileges.is_empty()
    }
}

/// Why the role could not be checked. Messages never contain the password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RoleCheckError {
    /// The URL is not a PostgreSQL connection string.
    InvalidUrl(String),
    /// The server did not accept the connection.
    Connect(String),
    /// Reading the role's attributes failed.
    Query(String),
    /// The check did not finish in time.
    Timeout(Duration),
}

impl fmt::Display for RoleCheckError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RoleCheckError::InvalidUrl(m) => write!(f, "invalid PostgreSQL URL: {m}"),
            RoleCheckError::Connect(m) => write!(f, "checking the database role: {m}"),
            RoleCheckError::Query(m) => write!(f, "reading the database role's privileges: {m}"),
            RoleCheckError::Timeout(d) => {
                write!(f, "checking the database role took longer than {}s", d.as_secs())
            }
        }
    }
}

impl std::error::Error for RoleCheckError {}

/// Connects to `database_url` (PostgreSQL only) and reports how privileged
/// its login role is.
///
/// The login role (`session_user`) is the one checked: every role the session
/// can act as with `SET ROLE` is one of its memberships, so a `SET role`
/// default on the login role hides nothing.
#[allow(dead_code, reason = "the agent checks the role with the policy (agent.rs); tests use this")]
pub(crate) async fn check_role(database_url: &str) -> Result<RoleReport, RoleCheckError> {
    with_client(database_url, |client| Box::pin(read_report(client))).await
}

/// A future that borrows a client, as [`with_client`] takes them.
pub(crate) type ClientFuture<'c, T> =
    Pin<Box<dyn Future<Output = Result<T, tokio_postgres::Error>> + Send + 'c>>;

/// Connects to `database_url` (PostgreSQL only) and runs `check` on the
/// connection, within a time limit; errors never show the password or the URL.
pub(crate) async fn with_client<T, F>(database_url: &str, check: F) -> Result<T, RoleCheckError>
where
    F: for<'c> FnOnce(&'c tokio_postgres::Client) -> ClientFuture<'c, T>,
{
    let mut config: tokio_postgres::Config = database_url
        .parse()
        .map_err(|e| RoleCheckError::InvalidUrl(error_text(&e, database_url, None)))?;
    let password = config.get_password().map(|p| String::from_utf8_lossy(p).into_owned());
    let password = password.as_deref();
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    let target = describe_target(&config);
    let checked = tokio::time::timeout(CHECK_TIMEOUT, async {
        let (client, connection) = config.connect(NoTls).await.map_err(|e| {
            RoleCheckError::Connect(format!(
                "connecting to {target}: {}",
                error_text(&e, database_url, password)
            ))
        })?;
        // The connection task ends by itself once `client` is dropped.
        tokio::spawn(async move {
            let _ = connection.await;
        });
        check(&client)
            .await
            .map_err(|e| RoleCheckError::Query(error_text(&e, database_url, password)))
    })
    .await;
    checked.unwrap_or(Err(RoleCheckError::Timeout(CHECK_TIMEOUT)))
}

/// Reads the login role's attributes and memberships on `client`.
pub(crate) async fn read_report(
    client: &tokio_postgres::Client,
) -> Result<RoleReport, tokio_postgres::Error> {
    let me = client
        .query_one(
            "SELECT session_user::text, r.rolsuper, r.rolcreaterole, r.rolreplication, \
                    r.rolbypassrls \
             FROM pg_catalog.pg_roles r WHERE r.rolname = session_user",
            &[],
        )
        .await?;
    let user: String = me.try_get(0)?;
    let superuser: bool = me.try_get(1)?;
    let mut other_privileges = Vec::new();
    for (column, name) in [(2, "CREATEROLE"), (3, "REPLICATION"), (4, "BYPASSRLS")] {
        if me.try_get::<_, bool>(column)? {
            other_privileges.push(name.to_owned());
        }
    }

    // pg_has_role 'MEMBER' counts indirect and NOINHERIT memberships: SET ROLE reaches both.
    let names: Vec<String> = DANGEROUS_ROLES.iter().map(|r| (*r).to_owned()).collect();
    let rows = client
        .query(
            "SELECT r.rolname::text FROM pg_catalog.pg_roles r \
             WHERE r.rolname::text = ANY($1::text[]) \
               AND pg_catalog.pg_has_role(session_user, r.oid, 'MEMBER')",
            &[&names],
        )
        .await?;
    let mut member_of = Vec::with_capacity(rows.len());
    for row in rows {
        member_of.push(row.try_get::<_, String>(0)?);
    }
    let dangerous_roles: Vec<String> = DANGEROUS_ROLES
        .iter()
        .filter(|d| member_of.iter().any(|m| m == *d))
        .map(|d| (*d).to_owned())
        .collect();

    // A superuser is a member of every role; listing them all would say nothing more.
    if !superuser {
        // REPLICATION is left out here: it only counts on the login role itself.
        let rows = client
            .query(
                "SELECT r.rolname::text, r.rolsuper, r.rolcreaterole, r.rolbypassrls \
                 FROM pg_catalog.pg_roles r \
                 WHERE r.rolname <> session_user \
                   AND (r.rolsuper OR r.rolcreaterole OR r.rolbypassrls) \
                   AND pg_catalog.pg_has_role(session_user, r.oid, 'MEMBER') \
                 ORDER BY r.rolname",
                &[],
            )
            .await?;
        for row in rows {
            let name: String = row.try_get(0)?;
            let mut attributes = Vec::new();
            for (column, attribute) in [(1, "SUPERUSER"), (2, "CREATEROLE"), (3, "BYPASSRLS")] {
                if row.try_get::<_, bool>(column)? {
                    attributes.push(attribute);
                }
            }
            other_privileges.push(format!(
                "member of {} ({})",
                quote_ident(&name),
                attributes.join(", ")
            ));
        }
    }
    Ok(RoleReport { user, superuser, dangerous_roles, other_privileges })
}

/// `user@host:port/database` of a parsed config, for messages (never the password).
fn describe_target(config: &tokio_postgres::Config) -> String {
    let host = match config.get_hosts().first() {
        Some(Host::Tcp(h)) => h.clone(),
        Some(Host::Unix(path)) => path.display().to_string(),
        None => "localhost".to_owned(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let user = config.get_user().unwrap_or("(default user)");
    let database = config.get_dbname().unwrap_or(user);
    format!("{user}@{host}:{port}/{database}")
}

/// The error with its causes (tokio-postgres's Display leaves them out), with
/// the URL and password scrubbed in case a server or parser echoes them.
fn error_text(error: &tokio_postgres::Error, url: &str, password: Option<&str>) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    if !url.is_empty() {
        text = text.replace(url, "<database url>");
    }
    if let Some(p) = password.filter(|p| !p.is_empty()) {
        text = text.replace(p, "<password>");
    }
    text
}

/// `name` as a PostgreSQL identifier: always quoted, so case and any character survive.
fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// What the agent prints when it refuses `report`'s role: why, the SQL for a
/// read-only role (`privileges::read_only_role_sql`), and how to override.
pub(crate) fn refusal_message(report: &RoleReport, suggested_sql: &str) -> String {
    let mut reasons = Vec::new();
    if report.superuser {
        reasons.push("it is a superuser: it bypasses every permission check".to_owned());
    }
    for role in &report.dangerous_roles {
        let why = match role.as_str() {
            "pg_read_server_files" => "can read any file the database server can read",
            "pg_write_server_files" => "can write files on the database server",
            "pg_execute_server_program" => "can run programs on the database server",
            "pg_signal_backend" => "can cancel and terminate other sessions",
            _ => "reaches beyond the database",
        };
        reasons.push(format!("it is a member of {role}: it {why}"));
    }
    for privilege in &report.other_privileges {
        let why = match privilege.as_str() {
            "CREATEROLE" => "it can create roles and grant memberships, itself included",
            "REPLICATION" => "it can stream a copy of every database of the server",
            "BYPASSRLS" => "it ignores row-level security policies",
            _ => "SET ROLE gives it that role's attributes",
        };
        reasons.push(format!("{privilege}: {why}"));
    }
    let mut message = format!(
        "refusing to run as the database role {}, which is privileged:\n",
        quote_ident(&report.user)
    );
    for reason in &reasons {
        message.push_str(&format!("  - {reason}\n"));
    }
    message.push_str(&format!(
        "\nThe agent runs only checked, read-only SQL, but each safety layer assumes the others\n\
         failed, and this role could reach beyond the data you mean to share. Connect as a\n\
         read-only role instead. To create one, an administrator runs:\n\n\
         {}\n\n\
         Then point CUSTARD_DATABASE_URL at the new role.\n\n\
         To run as {} anyway, pass --allow-privileged-role\n\
         (or set CUSTARD_ALLOW_PRIVILEGED_ROLE=true); the other layers still apply.\n",
        suggested_sql.trim_end(),
        quote_ident(&report.user)
    ));
    message
}

//! Test support: a PostgreSQL to test against, scratch databases that clean up
//! after themselves, the evaluation databases loaded once, and `testdata/`.
//!
//! PostgreSQL is required: when it does not answer, every helper here panics
//! with a message naming what is missing, so a database test never passes
//! without having run.
//!
//! [`fake_openai`] is an OpenAI-compatible chat server on 127.0.0.1 with
//! scripted replies, for testing LLM clients without a network or a key.
//!
//! [`smtp_sink`] is an SMTP server on 127.0.0.1 that records the messages it
//! receives, for testing mail sent through a real SMTP client.
//!
//! [`bins::workspace_binary`] builds (a quick no-op when fresh) and finds another crate's
//! binary, for end-to-end tests that run several of them.
//!
//! [`browser::Browser`] is headless Chromium driven over WebDriver, for
//! end-to-end tests of the web UI (`scripts/ensure-chromium.sh` installs it).
//!
//! [`processes`] runs real binaries for end-to-end and fault tests: a
//! [`processes::Scene`] (a test's folder and the logs printed when it fails)
//! and [`processes::Process`] (a child that can be signalled, killed on drop).
//!
//! [`mcp_client::run`] drives an MCP server with the official Python SDK, a
//! real and independent client.
//!
//! [`cluster::PostgresCluster`] is a private PostgreSQL cluster on its own
//! port, for tests that stop or restart the database.

pub mod api;
pub mod bins;
pub mod browser;
pub mod cluster;
pub mod fake_openai;
pub mod mcp_client;
pub mod processes;
pub mod smtp_sink;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

use tokio_postgres::{Client, NoTls};

/// The PostgreSQL client the helpers here return, for tests whose crate does not depend on it.
pub use tokio_postgres;

/// The default test server, used when `CUSTARD_TEST_DATABASE_URL` is not set.
pub const DEFAULT_TEST_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// The URL of the PostgreSQL database tests connect to first.
pub fn test_database_url() -> String {
    std::env::var("CUSTARD_TEST_DATABASE_URL")
        .ok()
        .filter(|u| !u.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_TEST_DATABASE_URL.to_owned())
}

/// `url` with its database name replaced by `dbname`.
pub fn url_with_database(url: &str, dbname: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let host_part = match base[scheme_end..].find('/') {
        Some(i) => &base[..scheme_end + i],
        None => base,
    };
    match query {
        Some(q) => format!("{host_part}/{dbname}?{q}"),
        None => format!("{host_part}/{dbname}"),
    }
}

/// `url` with its user (and password) replaced by `user`, without a password.
pub fn url_with_user(url: &str, user: &str) -> String {
    let scheme_end = url.find("://").map_or(0, |i| i + 3);
    let rest = &url[scheme_end..];
    let host_start = rest.find('@').map_or(0, |at| at + 1);
    format!("{}{user}@{}", &url[..scheme_end], &rest[host_start..])
}

/// Connects to `url`, panicking with a clear message when PostgreSQL is missing.
pub async fn connect(url: &str) -> Client {
    match tokio_postgres::connect(url, NoTls).await {
        Ok((client, connection)) => {
            tokio::spawn(async move {
                let _ = connection.await;
            });
            client
        }
        Err(e) => panic!(
            "PostgreSQL is required for this test but {} did not answer: {e}. \
             Start it (scripts/ensure-postgres.sh) or set CUSTARD_TEST_DATABASE_URL.",
            redact(url)
        ),
    }
}

/// `url` without its password, for messages.
pub fn redact(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else { return url.to_owned() };
    let rest = &url[scheme_end..];
    match (rest.find('@'), rest.find(':')) {
        (Some(at), Some(colon)) if colon < at => {
            format!("{}{}:***{}", &url[..scheme_end], &rest[..colon], &rest[at..])
        }
        _ => url.to_owned(),
    }
}

/// A database created for one test and dropped when this value is dropped.
#[derive(Debug)]
pub struct ScratchDb {
    /// The database's name.
    pub name: String,
    /// A URL that connects to it as the test user.
    pub url: String,
}

static SCRATCH_COUNTER: AtomicU32 = AtomicU32::new(0);

impl ScratchDb {
    /// Creates an empty database whose name starts with `custard_t_{prefix}`.
    pub async fn create(prefix: &str) -> ScratchDb {
        let admin = connect(&test_database_url()).await;
        let name = format!(
            "custard_t_{prefix}_{}_{}",
            std::process::id(),
            SCRATCH_COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        // Separate calls: CREATE DATABASE cannot run inside the implicit transaction of a batch.
        for sql in
            [format!("DROP DATABASE IF EXISTS \"{name}\""), format!("CREATE DATABASE \"{name}\"")]
        {
            admin
                .batch_execute(&sql)
                .await
                .unwrap_or_else(|e| panic!("creating scratch database {name}: {e:?}"));
        }
        let url = url_with_database(&test_database_url(), &name);
        ScratchDb { name, url }
    }

    /// A client connected to this database.
    pub async fn client(&self) -> Client {
        connect(&self.url).await
    }
}

impl Drop for ScratchDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop runs inside or outside a runtime; a thread with its own runtime works in both.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
                return;
            };
            rt.block_on(async {
                if let Ok((client, conn)) =
                    tokio_postgres::connect(&test_database_url(), NoTls).await
                {
                    tokio::spawn(conn);
                    let _ = client
                        .batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                        .await;
                }
            });
        })
        .join();
    }
}

/// The repository's test data (`testdata/`: the security corpora and the
/// evaluation set; see its README).
pub fn testdata_dir() -> PathBuf {
    workspace_dir().join("testdata")
}

/// The workspace's root folder.
pub fn workspace_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The six evaluation databases of `testdata/eval/defog`.
pub const DEFOG_DATABASES: &[&str] =
    &["academic", "advising", "atis", "broker", "car_dealership", "geography"];

/// Makes sure the evaluation database `db` is loaded from its dump and returns
/// its URL. Loading happens once: into a temporary name first, renamed when
/// complete, so an interrupted load is never mistaken for a finished one.
pub async fn defog_database(db: &str) -> String {
    assert!(DEFOG_DATABASES.contains(&db), "unknown evaluation database {db}");
    let admin = connect(&test_database_url()).await;
    // Serialise loaders across test processes.
    admin
        .batch_execute("SELECT pg_advisory_lock(7277002)")
        .await
        .expect("taking the defog load lock");
    let exists = admin
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&db])
        .await
        .expect("looking up the database")
        .is_some();
    if !exists {
        let dump_path = testdata_dir().join("eval/defog").join(format!("{db}.sql"));
        let dump = std::fs::read_to_string(&dump_path)
            .unwrap_or_else(|e| panic!("reading {}: {e}", dump_path.display()));
        let loading = format!("{db}__loading");
        for sql in [
            format!("DROP DATABASE IF EXISTS \"{loading}\" WITH (FORCE)"),
            format!("CREATE DATABASE \"{loading}\""),
        ] {
            admin.batch_execute(&sql).await.unwrap_or_else(|e| panic!("creating {loading}: {e:?}"));
        }
        {
            let client = connect(&url_with_database(&test_database_url(), &loading)).await;
            client
                .batch_execute(&dump)
                .await
                .unwrap_or_else(|e| panic!("loading {}: {e}", dump_path.display()));
            client.batch_execute("ANALYZE").await.expect("analyzing");
        }
        admin
            .batch_execute(&format!("ALTER DATABASE \"{loading}\" RENAME TO \"{db}\""))
            .await
            .expect("renaming the loaded database");
    }
    admin
        .batch_execute("SELECT pg_advisory_unlock(7277002)")
        .await
        .expect("releasing the defog load lock");
    url_with_database(&test_database_url(), db)
}

/// Reads a JSON-lines file of `testdata/` into one string per line.
pub fn testdata_jsonl_lines(relative: &str) -> Vec<String> {
    let path = testdata_dir().join(relative);
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_with_database_replaces_only_the_path() {
        let cases = [
            ("postgres://u@h:5432/test", "x", "postgres://u@h:5432/x"),
            ("postgres://u:p@h/test?sslmode=disable", "x", "postgres://u:p@h/x?sslmode=disable"),
            ("postgresql://h", "x", "postgresql://h/x"),
        ];
        for (url, db, want) in cases {
            assert_eq!(url_with_database(url, db), want, "{url}");
        }
    }

    #[test]
    fn url_with_user_replaces_credentials() {
        assert_eq!(url_with_user("postgres://u:p@h:1/db", "r"), "postgres://r@h:1/db");
        assert_eq!(url_with_user("postgres://h/db", "r"), "postgres://r@h/db");
    }

    #[test]
    fn redact_hides_passwords() {
        assert_eq!(redact("postgres://u:secret@h/db"), "postgres://u:***@h/db");
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
    }
}

/// A login role without privileges made for one test (an agent's read-only
/// role: grant it what it may read), dropped when dropped: drop it after the
/// databases it has grants in.
#[derive(Debug)]
pub struct ReaderRole {
    /// The role's name: `{database}_reader`.
    pub name: String,
}

impl ReaderRole {
    /// Creates the role `{database}_reader` with CONNECT on `database`.
    pub async fn create(database: &str) -> ReaderRole {
        let name = format!("{database}_reader");
        let admin = connect(&test_database_url()).await;
        admin
            .batch_execute(&format!(
                "DROP ROLE IF EXISTS \"{name}\";\n\
                 CREATE ROLE \"{name}\" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION \
                 NOBYPASSRLS NOINHERIT;\n\
                 GRANT CONNECT ON DATABASE \"{database}\" TO \"{name}\";"
            ))
            .await
            .expect("creating the read-only role");
        ReaderRole { name }
    }
}

impl Drop for ReaderRole {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop runs inside a runtime; a thread with its own runtime can block.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
                return;
            };
            rt.block_on(async {
                let admin = connect(&test_database_url()).await;
                let _ = admin.batch_execute(&format!("DROP ROLE IF EXISTS \"{name}\"")).await;
            });
        })
        .join();
    }
}

/// A scratch database with a read-only login role for an agent. Fields drop in
/// order: the database (holding the role's grants) first, then the role.
#[derive(Debug)]
pub struct ReadableDb {
    /// The database.
    pub db: ScratchDb,
    /// The role; grant it what it may read (`GRANT SELECT ...`).
    pub reader: ReaderRole,
}

impl ReadableDb {
    /// Creates the database and its role `{database}_reader` with CONNECT.
    pub async fn create(prefix: &str) -> ReadableDb {
        let db = ScratchDb::create(prefix).await;
        let reader = ReaderRole::create(&db.name).await;
        ReadableDb { db, reader }
    }

    /// A URL that connects to the database as the role.
    pub fn reader_url(&self) -> String {
        url_with_user(&self.db.url, &self.reader.name)
    }
}

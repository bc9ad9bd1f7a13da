//! The lines that start a connection's agent: server URL, an env file,
//! `docker run`, the binary, `cargo run`, and for PostgreSQL the SQL of a
//! read-only login role. Shown with the key right after a create or a
//! rotation, and with [`KEY_PLACEHOLDER`] for it on every later visit (only
//! the key's hash is kept).

use custard_core::Dialect;
use serde::Serialize;
use utoipa::ToSchema;

use crate::store::{Connection, ConnectionId};

/// Ready-to-paste lines that start the agent for a connection.
#[derive(Serialize, ToSchema)]
pub(crate) struct AgentSetup {
    /// The agent's WebSocket URL.
    #[schema(example = "wss://custard.example.com/api/v1/connections/ws/abc123")]
    pub(crate) server_url: String,
    /// An env file for the agent (the database URL is a placeholder to replace).
    pub(crate) env: String,
    /// A `docker run` command; for SQLite it mounts the database file read-only.
    pub(crate) docker_run: String,
    /// The `custard-agent run` command, for the agent's binary.
    pub(crate) binary_run: String,
    /// A `cargo run` command, from the source.
    pub(crate) cargo_run: String,
    /// PostgreSQL: the SQL that creates a read-only login role for the agent,
    /// to run as an administrator of the database. SQLite has no roles (null):
    /// the agent opens the file read-only, and `docker_run` mounts it so.
    #[schema(required)]
    pub(crate) role_sql: Option<String>,
}

impl std::fmt::Debug for AgentSetup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentSetup").field("server_url", &self.server_url).finish_non_exhaustive()
    }
}

/// The agent's WebSocket URL for a connection, from the public URL.
fn agent_url(public_url: &str, id: &ConnectionId) -> String {
    let base = public_url.trim_end_matches('/');
    let base = match base.split_once("://") {
        Some(("https", rest)) => format!("wss://{rest}"),
        Some((_, rest)) => format!("ws://{rest}"),
        None => format!("ws://{base}"),
    };
    format!("{base}/api/v1/connections/ws/{id}")
}

/// What stands for the API key in the setup lines shown after the key was:
/// only its hash is kept, so a later visit cannot show the key itself.
pub(crate) const KEY_PLACEHOLDER: &str = "YOUR_API_KEY";
/// The database's name in the PostgreSQL lines, for the customer to replace.
const DATABASE_PLACEHOLDER: &str = "your_database";
/// The read-only login role the PostgreSQL lines create and connect as.
const READER_ROLE: &str = "custard_reader";
/// The SQLite database file on the customer's machine, for them to replace.
const SQLITE_HOST_PATH: &str = "/path/to/your.db";
/// Where the `docker run` line mounts the SQLite file in the container.
const SQLITE_CONTAINER_PATH: &str = "/data/your.db";

impl AgentSetup {
    /// The lines for `connection` with `api_key`, pointing at `public_url`.
    pub(crate) fn new(public_url: &str, connection: &Connection, api_key: &str) -> Self {
        let url = agent_url(public_url, &connection.id);
        // The agent's database URL on the host, and inside the container.
        let (database, in_container, mount, role_sql) = match connection.dialect {
            Dialect::Sqlite => (
                format!("sqlite:{SQLITE_HOST_PATH}"),
                format!("sqlite:{SQLITE_CONTAINER_PATH}"),
                // Read-only: nothing in the container can change the file.
                format!("-v {SQLITE_HOST_PATH}:{SQLITE_CONTAINER_PATH}:ro \\\n  "),
                None,
            ),
            // PostgreSQL (the agent serves no other database).
            _ => {
                let database =
                    format!("postgres://{READER_ROLE}:PASSWORD@HOST:5432/{DATABASE_PLACEHOLDER}");
                let role_sql = custard_agent::privileges::read_only_role_sql(
                    READER_ROLE,
                    DATABASE_PLACEHOLDER,
                    &custard_core::AccessPolicy::default(),
                    &[],
                );
                (database.clone(), database, String::new(), Some(role_sql))
            }
        };
        AgentSetup {
            env: format!(
                "CUSTARD_SERVER_URL={url}\nCUSTARD_API_KEY={api_key}\nCUSTARD_DATABASE_URL={database}\n"
            ),
            docker_run: format!(
                "docker run -d --name custard-agent --restart unless-stopped \\\n  \
                 --read-only --tmpfs /tmp --cap-drop ALL --security-opt no-new-privileges \\\n  \
                 {mount}-e CUSTARD_SERVER_URL={url} \\\n  \
                 -e CUSTARD_API_KEY={api_key} \\\n  \
                 -e CUSTARD_DATABASE_URL={in_container} \\\n  \
                 custard-agent"
            ),
            binary_run: format!(
                "CUSTARD_SERVER_URL={url} \\\nCUSTARD_API_KEY={api_key} \\\n\
                 CUSTARD_DATABASE_URL={database} \\\ncustard-agent run"
            ),
            cargo_run: format!(
                "CUSTARD_SERVER_URL={url} CUSTARD_API_KEY={api_key} \
             CUSTARD_DATABASE_URL={database} cargo run -p custard-agent"
            ),
            server_url: url,
            role_sql,
        }
    }

    /// The lines for `connection` with [`KEY_PLACEHOLDER`] for its key, for
    /// every later visit of its page.
    pub(crate) fn without_key(public_url: &str, connection: &Connection) -> Self {
        Self::new(public_url, connection, KEY_PLACEHOLDER)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use chrono::{TimeZone, Utc};

    use super::*;
    use crate::store::OrgId;

    /// A PostgreSQL connection as the store returns it, seen by an agent or not.
    pub(crate) fn connection(seen: bool) -> Connection {
        let at = Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap();
        Connection {
            id: ConnectionId::from("c1".to_owned()),
            org_id: OrgId::from("o1".to_owned()),
            name: "shop".to_owned(),
            dialect: Dialect::Postgres,
            key_prefix: "custard_AbCd".to_owned(),
            instructions: String::new(),
            schema_fingerprint: seen.then(|| "f1".to_owned()),
            schema_refreshed_at: seen.then_some(at),
            agent_version: seen.then(|| "0.1.0".to_owned()),
            last_seen_at: seen.then_some(at),
            created_at: at,
            updated_at: at,
        }
    }

    /// The env lines as `KEY=value` pairs.
    fn env_pairs(env: &str) -> Vec<(&str, &str)> {
        env.lines().filter_map(|l| l.split_once('=')).collect()
    }

    #[test]
    fn postgres_lines_create_a_read_only_role_and_connect_as_it() {
        let c = connection(false);
        let setup = AgentSetup::new("http://127.0.0.1:8000", &c, "custard_key");
        let url = "ws://127.0.0.1:8000/api/v1/connections/ws/c1";
        let database = "postgres://custard_reader:PASSWORD@HOST:5432/your_database";
        assert_eq!(
            env_pairs(&setup.env),
            [
                ("CUSTARD_SERVER_URL", url),
                ("CUSTARD_API_KEY", "custard_key"),
                ("CUSTARD_DATABASE_URL", database)
            ]
        );
        for line in [&setup.docker_run, &setup.binary_run, &setup.cargo_run] {
            assert!(line.contains(url) && line.contains(database), "{line}");
            assert!(line.contains("CUSTARD_API_KEY=custard_key"), "{line}");
        }
        assert!(setup.docker_run.starts_with("docker run ") && !setup.docker_run.contains(" -v "));
        assert!(setup.binary_run.ends_with("custard-agent run"), "{}", setup.binary_run);
        let sql = setup.role_sql.expect("PostgreSQL has a role to create");
        assert!(sql.contains("CREATE ROLE \"custard_reader\" LOGIN"), "{sql}");
        assert!(sql.contains("GRANT CONNECT ON DATABASE \"your_database\""), "{sql}");
        assert!(sql.contains("default_transaction_read_only = on"), "{sql}");
    }

    #[test]
    fn sqlite_lines_mount_the_file_read_only_and_create_no_role() {
        let c = Connection { dialect: Dialect::Sqlite, ..connection(false) };
        let setup = AgentSetup::new("https://custard.example", &c, "custard_key");
        assert!(setup.role_sql.is_none(), "SQLite has no roles");
        // The agent reads `sqlite:PATH`; in the container, the mounted file.
        let url = |line: &str| {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix("CUSTARD_DATABASE_URL="))
                .map(str::to_owned)
                .unwrap_or_else(|| panic!("no database URL in {line}"))
        };
        let mount = "/path/to/your.db:/data/your.db:ro";
        assert!(setup.docker_run.contains(&format!("-v {mount} ")), "{}", setup.docker_run);
        assert_eq!(url(&setup.docker_run), "sqlite:/data/your.db");
        for line in [&setup.env, &setup.binary_run, &setup.cargo_run] {
            assert_eq!(url(line), "sqlite:/path/to/your.db", "{line}");
        }
        for line in [&setup.docker_run, &setup.env] {
            let parsed = custard_core::DatabaseUrl::parse(&url(line)).expect("the agent's syntax");
            assert_eq!(parsed.dialect(), Dialect::Sqlite);
        }
    }

    /// On later visits the lines hold a placeholder, never a key.
    #[test]
    fn lines_without_the_key_hold_the_placeholder() {
        let setup = AgentSetup::without_key("http://h", &connection(false));
        assert!(setup.env.contains(&format!("CUSTARD_API_KEY={KEY_PLACEHOLDER}\n")));
        for line in [&setup.docker_run, &setup.binary_run, &setup.cargo_run] {
            assert!(line.contains(&format!("CUSTARD_API_KEY={KEY_PLACEHOLDER}")), "{line}");
            assert!(!line.contains("CUSTARD_API_KEY=custard_"), "no key: {line}");
        }
    }
}

//! Layer 4 against a real PostgreSQL: the agent refuses a role that can read
//! what its policy keeps out, prints the SQL that fixes the role, and once
//! that SQL ran PostgreSQL itself refuses the masked column and the tables
//! outside the policy, with no guard in the way.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use custard_agent::privileges::{
    Finding, GrantSource, Grantee, PolicyReport, Reach, TableColumns, check_policy,
};
use custard_core::{AccessPolicy, TableKind};
use custard_testkit::{ScratchDb, connect, url_with_user};

use crate::TempRoles;

/// How long the agent binary gets to refuse, or to start.
const AGENT_WAIT: Duration = Duration::from_secs(60);

/// The policy of the issue: two tables of `public`, one masked column.
const POLICY_ENV: [(&str, &str); 3] = [
    ("CUSTARD_ALLOWED_SCHEMAS", "public"),
    ("CUSTARD_ALLOWED_TABLES", "public.ok_tbl,public.secrets"),
    ("CUSTARD_MASKED_COLUMNS", "public.secrets.secret"),
];

/// The agent binary, killed when dropped.
struct Agent {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How the binary ended up.
#[derive(Debug, PartialEq)]
enum Outcome {
    /// It exited with this status (`None`: killed by a signal).
    Exited(Option<i32>),
    /// It logged that it starts serving; it was then stopped.
    Started,
}

impl Agent {
    /// `custard-agent run` over `database_url` with the policy; `extra`
    /// flags after `run`. The server URL leads nowhere: the agent checks the
    /// database before it dials the server, and logs `starting` when it dials.
    fn run(database_url: &str, extra: &[&str]) -> Agent {
        let dir = tempfile::tempdir().expect("a folder without .env");
        let mut command = Command::new(env!("CARGO_BIN_EXE_custard-agent"));
        command
            .arg("run")
            .args(extra)
            .current_dir(dir.path())
            .env("CUSTARD_SERVER_URL", "ws://127.0.0.1:9/api/v1/connections/ws/test")
            .env("CUSTARD_API_KEY", "custard_test_key")
            .env("CUSTARD_DATABASE_URL", database_url)
            .env("CUSTARD_HEALTH_FILE", dir.path().join("health"))
            .env("CUSTARD_LOG", "info")
            .env("NO_COLOR", "1")
            .env_remove("CUSTARD_ALLOW_PRIVILEGED_ROLE")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (name, value) in POLICY_ENV {
            command.env(name, value);
        }
        let mut child = command.spawn().expect("starting custard-agent");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            let _dir = dir;
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Agent { child, lines, seen: Vec::new() }
    }

    /// Waits until the agent exits or logs that it is starting; panics after [`AGENT_WAIT`].
    fn outcome(&mut self) -> Outcome {
        let deadline = Instant::now() + AGENT_WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left.min(Duration::from_millis(200))) {
                Ok(line) => {
                    let started = line.contains("starting") && line.contains("protocol");
                    self.seen.push(line);
                    if started {
                        return Outcome::Started;
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = self.child.wait().expect("waiting for the agent");
                    return Outcome::Exited(status.code());
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
            }
            assert!(
                Instant::now() < deadline,
                "the agent neither started nor exited within {AGENT_WAIT:?}:\n{}",
                self.text()
            );
        }
    }

    fn text(&self) -> String {
        self.seen.join("\n")
    }
}

/// The SQL block of a refusal or warning: the lines after the line that
/// announces it and a blank line, up to the next blank line.
fn printed_sql(output: &str) -> String {
    let mut lines =
        output.lines().skip_while(|l| !l.contains("To make PostgreSQL enforce the policy"));
    assert!(lines.next().is_some(), "no SQL announced in:\n{output}");
    assert_eq!(lines.next(), Some(""), "a blank line after the announcement:\n{output}");
    let sql: Vec<&str> = lines.take_while(|l| !l.is_empty()).collect();
    assert!(!sql.is_empty(), "no SQL in:\n{output}");
    sql.join("\n") + "\n"
}

/// The SQLSTATE of a query's error, or "" when it worked.
async fn sqlstate(client: &tokio_postgres::Client, sql: &str) -> String {
    match client.batch_execute(sql).await {
        Ok(()) => String::new(),
        Err(e) => e.code().map(|c| c.code().to_owned()).unwrap_or_else(|| format!("{e}")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_that_reads_past_the_policy_is_refused_until_the_printed_sql_runs() {
    let db = ScratchDb::create("policy_run").await;
    let mut roles = TempRoles::new(&["pv_agent"]).await;
    roles.databases.push(db.url.clone());
    let role = roles.name(0).to_owned();
    let password = "pv-S3cret-pw";
    let admin = db.client().await;
    admin
        .batch_execute(&format!(
            "CREATE ROLE \"{role}\" LOGIN PASSWORD '{password}' NOINHERIT;
             GRANT CONNECT ON DATABASE \"{db}\" TO \"{role}\";
             CREATE TABLE ok_tbl (id int, label text); INSERT INTO ok_tbl VALUES (1, 'fine');
             CREATE TABLE secrets (id int, name text, secret text, \"Odd \"\"Col\" int);
             INSERT INTO secrets VALUES (1, 'Ada', 'hunter2', 7);
             CREATE TABLE forbidden (x int); INSERT INTO forbidden VALUES (42);
             CREATE SCHEMA audit; CREATE TABLE audit.log (y int);
             GRANT USAGE ON SCHEMA public, audit TO \"{role}\";
             GRANT SELECT ON ALL TABLES IN SCHEMA public TO \"{role}\";
             GRANT SELECT ON audit.log TO \"{role}\";
             -- Readable by every role, this role included, through PUBLIC only.
             CREATE VIEW everyone AS SELECT x FROM forbidden;
             GRANT SELECT ON everyone TO PUBLIC;",
            db = db.name
        ))
        .await
        .expect("setup");
    let url = url_with_user(&db.url, &format!("{role}:{password}"));

    // (a) Refused, with what it found and the SQL that fixes it.
    let mut refused = Agent::run(&url, &[]);
    assert_eq!(refused.outcome(), Outcome::Exited(Some(1)), "{}", refused.text());
    let output = refused.text();
    assert!(!output.contains(password), "the password leaked:\n{output}");
    assert!(!output.contains(&url), "the database URL leaked:\n{output}");
    let r = format!("\"{role}\"");
    for needle in [
        format!("refusing to run: the database role {r} can read what the agent's policy keeps out"),
        format!(
            "  - masked column \"public\".\"secrets\".\"secret\" (in CUSTARD_MASKED_COLUMNS): \
             SELECT on the table is granted to {r}"
        ),
        format!(
            "  - table \"public\".\"forbidden\" (not in CUSTARD_ALLOWED_TABLES): SELECT on it is \
             granted to {r}"
        ),
        "  - view \"public\".\"everyone\" (not in CUSTARD_ALLOWED_TABLES): SELECT on it is granted \
         to PUBLIC"
            .to_owned(),
        format!(
            "  - table \"audit\".\"log\" (its schema is not in CUSTARD_ALLOWED_SCHEMAS): SELECT on \
             it is granted to {r}"
        ),
        format!(
            "  - schema \"audit\" (not in CUSTARD_ALLOWED_SCHEMAS): USAGE on the schema is granted \
             to {r}"
        ),
        "--allow-privileged-role".to_owned(),
    ] {
        assert!(output.contains(&needle), "{needle:?} missing from:\n{output}");
    }
    let sql = printed_sql(&output);
    let statements: Vec<&str> = sql.lines().filter(|l| !l.starts_with("--")).collect();
    assert_eq!(
        statements,
        [
            format!("REVOKE SELECT ON \"public\".\"secrets\" FROM {r};"),
            format!(
                "GRANT SELECT (\"id\", \"name\", \"Odd \"\"Col\") ON \"public\".\"secrets\" TO {r};"
            ),
            format!("REVOKE SELECT ON \"audit\".\"log\" FROM {r};"),
            "REVOKE SELECT ON \"public\".\"everyone\" FROM PUBLIC;".to_owned(),
            format!("REVOKE SELECT ON \"public\".\"forbidden\" FROM {r};"),
            format!("REVOKE USAGE ON SCHEMA \"audit\" FROM {r};"),
        ],
        "{sql}"
    );
    assert!(
        sql.contains("-- SELECT on view \"public\".\"everyone\" is granted to PUBLIC"),
        "{sql}"
    );

    // (c) --allow-privileged-role only warns: the agent starts, and says what it found.
    let mut allowed = Agent::run(&url, &["--allow-privileged-role"]);
    assert_eq!(allowed.outcome(), Outcome::Started, "{}", allowed.text());
    let warned = allowed.text();
    assert!(warned.contains("WARN"), "{warned}");
    assert!(warned.contains("only the guard enforces the policy"), "{warned}");
    assert_eq!(printed_sql(&warned), sql, "the warning prints the same SQL");
    assert!(!warned.contains(password), "the password leaked:\n{warned}");
    drop(allowed);

    // (b) After exactly the printed SQL, the agent starts...
    admin.batch_execute(&sql).await.unwrap_or_else(|e| panic!("{e:?} running:\n{sql}"));
    let mut fixed = Agent::run(&url, &[]);
    assert_eq!(fixed.outcome(), Outcome::Started, "{}", fixed.text());
    assert!(!fixed.text().contains("REVOKE"), "nothing left to fix:\n{}", fixed.text());
    drop(fixed);

    // ... and PostgreSQL itself refuses what the policy refuses, with no guard in the way.
    let agent_role = connect(&url).await;
    for (query, want) in [
        ("SELECT secret FROM public.secrets", "42501"),
        ("SELECT * FROM public.secrets", "42501"),
        ("SELECT id FROM public.secrets WHERE secret = 'hunter2'", "42501"),
        ("SELECT s FROM public.secrets AS s", "42501"),
        ("SELECT x FROM public.forbidden", "42501"),
        ("SELECT x FROM public.everyone", "42501"),
        ("SELECT y FROM audit.log", "42501"),
        ("SELECT id, name, \"Odd \"\"Col\" FROM public.secrets", ""),
        ("SELECT count(*) FROM public.secrets", ""),
        ("SELECT * FROM public.ok_tbl", ""),
    ] {
        assert_eq!(sqlstate(&agent_role, query).await, want, "{query}");
    }
}

/// The grants behind each finding: PUBLIC, a chain of memberships,
/// `pg_read_all_data`, column grants, and the SQL for each works as printed.
#[tokio::test]
async fn the_report_says_where_each_privilege_comes_from() {
    let db = ScratchDb::create("policy_report").await;
    // Stems: 0 the agent's role, 1 a group, 2 its member the role belongs to,
    // 3 a second agent role, 4 a group holding pg_read_all_data.
    let mut roles =
        TempRoles::new(&["pr_reader", "pr_grp", "pr_mid", "pr_reader2", "pr_staff"]).await;
    roles.databases.push(db.url.clone());
    let n = |i: usize| roles.name(i).to_owned();
    let (reader, grp, mid, reader2, staff) = (n(0), n(1), n(2), n(3), n(4));
    let admin = db.client().await;
    admin
        .batch_execute(&format!(
            "CREATE ROLE \"{grp}\" NOLOGIN; CREATE ROLE \"{mid}\" NOLOGIN; GRANT \"{grp}\" TO \"{mid}\";
             CREATE ROLE \"{reader}\" LOGIN INHERIT; GRANT \"{mid}\" TO \"{reader}\";
             CREATE ROLE \"{staff}\" NOLOGIN; GRANT pg_read_all_data TO \"{staff}\";
             CREATE ROLE \"{reader2}\" LOGIN INHERIT; GRANT \"{staff}\" TO \"{reader2}\";
             GRANT CONNECT ON DATABASE \"{db}\" TO \"{reader}\", \"{reader2}\";
             CREATE TABLE t (id int, secret text, note text); INSERT INTO t VALUES (1, 's', 'n');
             CREATE TABLE t2 (id int, pin text); INSERT INTO t2 VALUES (1, '1234');
             CREATE TABLE other (x int);
             CREATE SCHEMA hidden; CREATE TABLE hidden.h (z int);
             GRANT SELECT ON t TO \"{grp}\";
             GRANT SELECT ON t TO PUBLIC;
             GRANT SELECT (id, pin) ON t2 TO \"{reader}\";
             GRANT SELECT (x) ON other TO PUBLIC;
             GRANT USAGE ON SCHEMA hidden TO \"{mid}\";
             GRANT SELECT ON hidden.h TO \"{reader}\";",
            db = db.name
        ))
        .await
        .expect("setup");
    let policy = AccessPolicy::new(
        Some(vec!["public".into()]),
        Some(vec!["public.t".into(), "public.t2".into()]),
        vec!["public.t.secret".into(), "public.t2.pin".into()],
    )
    .expect("policy");

    let src = |grantee, column_level| GrantSource { grantee, column_level };
    let via = |name: &str, through: &str| Grantee::Role {
        name: name.to_owned(),
        through: vec![through.to_owned()],
    };
    let masked = |table: &str, column: &str| Reach::MaskedColumn {
        schema: "public".into(),
        table: table.into(),
        column: column.into(),
    };
    let relation = |schema: &str, name: &str| Reach::Relation {
        schema: schema.into(),
        name: name.into(),
        kind: TableKind::Table,
    };
    let hidden = Reach::Schema { schema: "hidden".into() };
    let sorted = |mut report: PolicyReport| {
        for f in &mut report.findings {
            f.sources.sort_by_key(|s| format!("{s:?}"));
        }
        report.findings
    };

    let reader_client = connect(&url_with_user(&db.url, &reader)).await;
    let report = check_policy(&reader_client, &policy).await.expect("check");
    assert_eq!(report.role, reader);
    assert_eq!(report.database, db.name);
    assert!(!report.superuser && !report.is_enforced());
    assert_eq!(
        report.masked_tables,
        [
            TableColumns {
                schema: "public".into(),
                table: "t".into(),
                columns: vec!["id".into(), "secret".into(), "note".into()],
                masked: vec!["secret".into()],
            },
            TableColumns {
                schema: "public".into(),
                table: "t2".into(),
                columns: vec!["id".into(), "pin".into()],
                masked: vec!["pin".into()],
            },
        ]
    );
    let reader_sql = report.fix_sql();
    let mut want = vec![
        Finding {
            reach: masked("t", "secret"),
            sources: vec![src(Grantee::Public, false), src(via(&grp, &mid), false)],
        },
        Finding { reach: masked("t2", "pin"), sources: vec![src(Grantee::Itself, true)] },
        Finding { reach: relation("hidden", "h"), sources: vec![src(Grantee::Itself, false)] },
        Finding { reach: relation("public", "other"), sources: vec![src(Grantee::Public, true)] },
        Finding { reach: hidden.clone(), sources: vec![src(via(&mid, &mid), false)] },
    ];
    for f in &mut want {
        f.sources.sort_by_key(|s| format!("{s:?}"));
    }
    assert_eq!(sorted(report), want, "{reader_sql}");

    let reader2_client = connect(&url_with_user(&db.url, &reader2)).await;
    let report2 = check_policy(&reader2_client, &policy).await.expect("check");
    let all_data = || src(via("pg_read_all_data", &staff), false);
    let reader2_sql = report2.fix_sql();
    let mut want2 = vec![
        Finding {
            reach: masked("t", "secret"),
            sources: vec![src(Grantee::Public, false), all_data()],
        },
        Finding { reach: masked("t2", "pin"), sources: vec![all_data()] },
        Finding { reach: relation("hidden", "h"), sources: vec![all_data()] },
        Finding {
            reach: relation("public", "other"),
            sources: vec![src(Grantee::Public, true), all_data()],
        },
        Finding { reach: hidden, sources: vec![all_data()] },
    ];
    for f in &mut want2 {
        f.sources.sort_by_key(|s| format!("{s:?}"));
    }
    assert_eq!(sorted(report2), want2, "{reader2_sql}");
    assert!(
        reader2_sql.contains(&format!("REVOKE \"{staff}\" FROM \"{reader2}\";")),
        "{reader2_sql}"
    );

    // Both fixes as printed; then nothing is left, and PostgreSQL refuses on its own.
    for sql in [&reader_sql, &reader2_sql] {
        admin.batch_execute(sql).await.unwrap_or_else(|e| panic!("{e:?} running:\n{sql}"));
    }
    for client in [&reader_client, &reader2_client] {
        let after = check_policy(client, &policy).await.expect("check again");
        assert!(after.is_enforced(), "{after:?}\n{}", after.fix_sql());
    }
    for (query, want) in [
        ("SELECT secret FROM t", "42501"),
        ("SELECT pin FROM t2", "42501"),
        ("SELECT x FROM other", "42501"),
        ("SELECT z FROM hidden.h", "42501"),
        ("SELECT id, note FROM t", ""),
        ("SELECT id FROM t2", ""),
    ] {
        // Both keep exactly the columns given back, and lost everything else.
        assert_eq!(sqlstate(&reader_client, query).await, want, "{query}");
        assert_eq!(sqlstate(&reader2_client, query).await, want, "{query} (pg_read_all_data)");
    }
}

#[tokio::test]
async fn a_superuser_is_reported_as_such_with_the_columns_for_a_read_only_role() {
    let db = ScratchDb::create("policy_super").await;
    let admin = db.client().await;
    admin.batch_execute("CREATE TABLE t (id int, secret text, note text)").await.expect("setup");
    let policy =
        AccessPolicy::new(None, None, vec!["public.t.secret".into(), "public.gone.x".into()])
            .expect("policy");
    let report = check_policy(&admin, &policy).await.expect("check");
    assert!(report.superuser && !report.is_enforced());
    assert!(report.findings.is_empty());
    assert_eq!(report.masked_tables.len(), 1, "a masked column that does not exist is ignored");
    assert_eq!(report.masked_tables[0].unmasked().collect::<Vec<_>>(), ["id", "note"]);
    assert!(report.refusal_message().contains("is a superuser"), "{}", report.refusal_message());
    // Without a policy there is nothing to check.
    let none = check_policy(&admin, &AccessPolicy::default()).await.expect("check");
    assert!(none.findings.is_empty() && none.masked_tables.is_empty());
}

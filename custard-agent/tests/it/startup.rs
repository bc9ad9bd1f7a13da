//! Layer 3, the role check, against a real PostgreSQL: privileged roles are
//! caught however they got their privileges, and the suggested read-only role
//! works as printed.

// The agent is a binary crate: compiling the module here is how a test reaches it.
#[path = "../../src/startup.rs"]
mod startup_impl;

use custard_agent::privileges::read_only_role_sql;
use custard_core::AccessPolicy;
use custard_testkit::{ScratchDb, connect, test_database_url, url_with_database, url_with_user};

use crate::TempRoles;
use startup_impl::{RoleCheckError, RoleReport, check_role, refusal_message};

/// A policy of these allowed schemas, nothing else.
fn schemas(names: &[&str]) -> AccessPolicy {
    AccessPolicy::new(Some(names.iter().map(|s| (*s).to_owned()).collect()), None, Vec::new())
        .expect("a valid policy")
}

#[tokio::test]
async fn the_test_superuser_is_privileged_and_refused() {
    let report = check_role(&test_database_url()).await.expect("role check");
    assert!(report.superuser, "{report:?}");
    assert!(report.is_privileged());
    let sql = read_only_role_sql("custard_reader", "test", &schemas(&["public"]), &[]);
    let message = refusal_message(&report, &sql);
    for needle in ["superuser", "--allow-privileged-role", "CREATE ROLE \"custard_reader\"", &sql] {
        assert!(message.contains(needle), "{needle:?} missing from:\n{message}");
    }
}

#[tokio::test]
async fn roles_reaching_beyond_the_database_are_privileged_however_they_got_there() {
    // Stems: 0 plain, 1 direct member, 2 intermediate, 3 via intermediate, 4 NOINHERIT via
    // intermediate, 5 CREATEROLE, 6 BYPASSRLS, 7 REPLICATION, 8 a superuser group, 9 its member.
    let roles = TempRoles::new(&[
        "plain", "rsf", "mid", "viamid", "noinh", "crole", "bypass", "repl", "sugrp", "viasu",
    ])
    .await;
    let n = |i: usize| roles.name(i).to_owned();
    let setup = format!(
        "SELECT pg_advisory_xact_lock(7277003);
         CREATE ROLE {p} LOGIN;
         CREATE ROLE {rsf} LOGIN; GRANT pg_read_server_files TO {rsf};
         CREATE ROLE {mid} NOLOGIN; GRANT pg_read_server_files, pg_signal_backend TO {mid};
         CREATE ROLE {via} LOGIN; GRANT {mid} TO {via};
         CREATE ROLE {noinh} LOGIN NOINHERIT; GRANT {mid} TO {noinh};
         CREATE ROLE {crole} LOGIN CREATEROLE;
         CREATE ROLE {bypass} LOGIN BYPASSRLS;
         CREATE ROLE {repl} LOGIN REPLICATION;
         CREATE ROLE {sugrp} NOLOGIN SUPERUSER;
         CREATE ROLE {viasu} LOGIN; GRANT {sugrp} TO {viasu};",
        p = n(0),
        rsf = n(1),
        mid = n(2),
        via = n(3),
        noinh = n(4),
        crole = n(5),
        bypass = n(6),
        repl = n(7),
        sugrp = n(8),
        viasu = n(9),
    );
    connect(&test_database_url()).await.batch_execute(&setup).await.expect("creating roles");

    let member_of_sugrp = format!("member of \"{}\" (SUPERUSER)", n(8));
    let rsf = ["pg_read_server_files"].as_slice();
    let rsf_signal = ["pg_read_server_files", "pg_signal_backend"].as_slice();
    // (role index, dangerous roles, other privileges)
    let cases: [(usize, &[&str], Vec<&str>); 8] = [
        (0, &[], vec![]),
        (1, rsf, vec![]),
        (3, rsf_signal, vec![]),
        (4, rsf_signal, vec![]),
        (5, &[], vec!["CREATEROLE"]),
        (6, &[], vec!["BYPASSRLS"]),
        (7, &[], vec!["REPLICATION"]),
        (9, &[], vec![member_of_sugrp.as_str()]),
    ];
    for (i, dangerous, other) in cases {
        let url = url_with_user(&test_database_url(), roles.name(i));
        let report = check_role(&url).await.unwrap_or_else(|e| panic!("{}: {e}", n(i)));
        let want = RoleReport {
            user: n(i),
            superuser: false,
            dangerous_roles: dangerous.iter().map(|s| (*s).to_owned()).collect(),
            other_privileges: other.iter().map(|s| (*s).to_owned()).collect(),
        };
        assert_eq!(report, want);
        assert_eq!(report.is_privileged(), i != 0, "{report:?}");
        if report.is_privileged() {
            let message = refusal_message(&report, "-- sql");
            assert!(message.contains(&format!("\"{}\"", n(i))), "{message}");
            for reason in dangerous.iter().chain(other.iter()) {
                assert!(message.contains(reason), "{reason} missing from:\n{message}");
            }
        }
    }
}

#[tokio::test]
async fn a_role_with_only_connect_and_select_is_not_privileged() {
    let db = ScratchDb::create("role_plain").await;
    let mut roles = TempRoles::new(&["ro"]).await;
    roles.databases.push(db.url.clone());
    let role = roles.name(0).to_owned();
    db.client()
        .await
        .batch_execute(&format!(
            "CREATE ROLE {role} LOGIN; GRANT CONNECT ON DATABASE \"{db}\" TO {role};
             CREATE TABLE items (id int); GRANT SELECT ON items TO {role};",
            db = db.name
        ))
        .await
        .expect("setup");
    let report = check_role(&url_with_user(&db.url, &role)).await.expect("role check");
    assert_eq!(
        report,
        RoleReport {
            user: role.clone(),
            superuser: false,
            dangerous_roles: vec![],
            other_privileges: vec![]
        }
    );
    assert!(!report.is_privileged());
}

#[tokio::test]
async fn the_suggested_read_only_role_reads_but_cannot_write() {
    let db = ScratchDb::create("role_sql").await;
    let mut roles = TempRoles::new(&["reader"]).await;
    roles.databases.push(db.url.clone());
    let role = roles.name(0).to_owned();
    let admin = db.client().await;
    admin
        .batch_execute(
            "CREATE SCHEMA sales; CREATE TABLE public.items (id int); INSERT INTO items VALUES (1);
             CREATE TABLE sales.orders (id int); INSERT INTO sales.orders VALUES (7), (8);
             CREATE SCHEMA secret; CREATE TABLE secret.keys (k text);",
        )
        .await
        .expect("setup");

    let sql = read_only_role_sql(&role, &db.name, &schemas(&["public", "sales", "public"]), &[]);
    assert_eq!(sql.matches("GRANT USAGE ON SCHEMA \"public\"").count(), 1, "deduplicated:\n{sql}");
    let password = "Rd-0nly pass'word";
    let runnable = sql.replace("'<choose one>'", &format!("'{}'", password.replace('\'', "''")));
    assert_ne!(runnable, sql, "the password placeholder is where the test expects it");
    admin.batch_execute(&runnable).await.unwrap_or_else(|e| panic!("{e:?} running:\n{runnable}"));
    // Created after the grants: the default privileges must cover it.
    admin
        .batch_execute("CREATE TABLE sales.refunds (id int); INSERT INTO sales.refunds VALUES (3)")
        .await
        .expect("a later table");

    let url = url_with_user(&db.url, &format!("{role}:Rd-0nly%20pass%27word"));
    let reader = connect(&url).await;
    for (query, want) in [
        ("SELECT count(*) FROM public.items", 1_i64),
        ("SELECT count(*) FROM sales.orders", 2),
        ("SELECT count(*) FROM sales.refunds", 1),
    ] {
        let row = reader.query_one(query, &[]).await.unwrap_or_else(|e| panic!("{query}: {e:?}"));
        assert_eq!(row.get::<_, i64>(0), want, "{query}");
    }
    let read_only =
        reader.query_one("SHOW default_transaction_read_only", &[]).await.expect("show");
    assert_eq!(read_only.get::<_, String>(0), "on");
    // The role's own bounds on what a question may take from the database.
    for (setting, want) in
        [("work_mem", "32MB"), ("temp_file_limit", "1GB"), ("statement_timeout", "1min")]
    {
        let row = reader.query_one(&format!("SHOW {setting}"), &[]).await.expect("show");
        assert_eq!(row.get::<_, String>(0), want, "{setting}");
    }

    // (statement, SQLSTATE): read-only by default; then, with the default turned off (any
    // session may), the grants alone still refuse every write.
    let refusals = [
        ("INSERT INTO public.items VALUES (2)", "25006"),
        ("CREATE TABLE sales.mine (id int)", "25006"),
        ("SELECT * FROM secret.keys", "42501"),
        ("SET default_transaction_read_only = off", ""),
        ("INSERT INTO public.items VALUES (2)", "42501"),
        ("UPDATE sales.orders SET id = 9", "42501"),
        ("CREATE TABLE sales.mine (id int)", "42501"),
    ];
    for (statement, code) in refusals {
        let result = reader.batch_execute(statement).await;
        let got = result.as_ref().err().and_then(|e| e.code()).map(|c| c.code().to_owned());
        assert_eq!(got.unwrap_or_default(), code, "{statement}: {result:?}");
    }

    let report = check_role(&url).await.expect("role check");
    assert_eq!(report.user, role);
    assert!(!report.is_privileged(), "{report:?}");
}

#[tokio::test]
async fn errors_never_show_the_password() {
    let secret = "s3cret-Pa55";
    let base = test_database_url();
    let cases = [
        // A role that does not exist: the server answers, and the answer is shown.
        (url_with_user(&base, &format!("custard_t_nobody:{secret}")), "Connect"),
        // A database that does not exist.
        (
            url_with_database(
                &url_with_user(&base, &format!("postgres:{secret}")),
                "custard_t_no_db",
            ),
            "Connect",
        ),
        // Nothing listens on port 1.
        (format!("postgres://postgres:{secret}@127.0.0.1:1/test"), "Connect"),
        (format!("postgres://postgres:{secret}@127.0.0.1:notaport/test"), "InvalidUrl"),
        (format!("postgres://postgres:{secret}@127.0.0.1/test?sslmode={secret}"), "InvalidUrl"),
    ];
    for (url, kind) in cases {
        let err = check_role(&url).await.expect_err(kind);
        let shown = format!("{err} / {err:?}");
        assert!(!shown.contains(secret), "the password leaked: {shown}");
        let got = match &err {
            RoleCheckError::InvalidUrl(_) => "InvalidUrl",
            RoleCheckError::Connect(_) => "Connect",
            RoleCheckError::Query(_) => "Query",
            RoleCheckError::Timeout(_) => "Timeout",
        };
        assert_eq!(got, kind, "{shown}");
    }
    let err =
        check_role(&url_with_user(&base, "custard_t_nobody")).await.expect_err("no such role");
    assert!(err.to_string().contains("custard_t_nobody"), "the server's reason is shown: {err}");
}

#[test]
fn the_suggested_sql_quotes_every_identifier() {
    let sql = read_only_role_sql("Odd \"Role\"", "my-db", &schemas(&["Sales Q1"]), &[]);
    for needle in [
        "CREATE ROLE \"Odd \"\"Role\"\"\" LOGIN PASSWORD '<choose one>'",
        "NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS NOINHERIT;",
        "GRANT CONNECT ON DATABASE \"my-db\" TO \"Odd \"\"Role\"\"\";",
        "GRANT USAGE ON SCHEMA \"Sales Q1\" TO \"Odd \"\"Role\"\"\";",
        "GRANT SELECT ON ALL TABLES IN SCHEMA \"Sales Q1\" TO",
        "ALTER DEFAULT PRIVILEGES IN SCHEMA \"Sales Q1\" GRANT SELECT ON TABLES TO",
        "ALTER ROLE \"Odd \"\"Role\"\"\" SET default_transaction_read_only = on;",
    ] {
        assert!(sql.contains(needle), "{needle:?} missing from:\n{sql}");
    }
    let none = read_only_role_sql("r", "d", &schemas(&[]), &[]);
    assert!(!none.contains("GRANT USAGE ON SCHEMA \""), "{none}");
    assert!(none.contains("No schemas were named"), "{none}");
}

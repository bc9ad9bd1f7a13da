//! `discover` prints what would leave the customer's network.

use custard_core::wire::SchemaReport;
use custard_testkit::ScratchDb;

use crate::agent;

#[tokio::test]
async fn discover_prints_the_schema_report_of_postgres() {
    let db = ScratchDb::create("agent_discover").await;
    db.client()
        .await
        .batch_execute(
            "CREATE SCHEMA sales; CREATE TABLE sales.orders (id int PRIMARY KEY, note text); \
             COMMENT ON TABLE sales.orders IS 'one row per order'",
        )
        .await
        .expect("setup");
    let url = db.url.clone();
    let (ok, stdout, stderr) =
        tokio::task::spawn_blocking(move || agent(&["discover", "--database-url", &url], ""))
            .await
            .expect("cli");
    assert!(ok, "{stderr}");
    let report: SchemaReport = serde_json::from_str(&stdout).expect("a schema report");
    let schema = report.clone().into_schema().expect("a valid schema");
    let orders = schema.table("sales", "orders").expect("sales.orders is discovered");
    assert_eq!(orders.comment.as_deref(), Some("one row per order"));
    assert_eq!(orders.primary_key, ["id"]);
    assert_eq!(report.fingerprint, schema.fingerprint());
}

#[test]
fn discover_reads_sqlite_and_explains_bad_urls() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("shop.db");
    {
        let conn = rusqlite::Connection::open(&path).expect("create sqlite");
        conn.execute_batch("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL)")
            .expect("setup");
    }
    let url = format!("sqlite:{}", path.display());
    let (ok, stdout, stderr) = agent(&["discover", "--database-url", &url], "");
    assert!(ok, "{stderr}");
    let schema = serde_json::from_str::<SchemaReport>(&stdout)
        .expect("report")
        .into_schema()
        .expect("schema");
    assert_eq!(schema.tables.len(), 1);
    assert_eq!(schema.tables[0].columns[1].name, "name");
    assert!(!schema.tables[0].columns[1].nullable);

    let (ok, _, stderr) = agent(&["discover", "--database-url", "mysql://x"], "");
    assert!(!ok);
    assert!(stderr.contains("unsupported database URL scheme `mysql`"), "{stderr}");
    let missing = format!("sqlite:{}", dir.path().join("missing.db").display());
    let (ok, _, stderr) = agent(&["discover", "--database-url", &missing], "");
    assert!(!ok, "a missing SQLite file is an error, not a new empty database");
    assert!(stderr.contains("error"), "{stderr}");
}

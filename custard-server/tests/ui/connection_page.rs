//! The connection pages in Chromium: the agent's setup lines on every visit
//! (a placeholder for the key once it was shown), the read-only role or the
//! read-only mount, what the instructions hint says without a model, times in
//! the browser's zone, and every status field following a real agent live.

use std::time::Duration;

use custard_testkit::bins::workspace_binary;
use custard_testkit::browser::{Browser, DESKTOP_SIZE};
use custard_testkit::processes::{Process, Scene, start_agent};

use super::{RENDER_LIMIT, TEST_LIMIT, bounded};
use crate::demo::DemoServer;

/// What the setup lines hold where the key goes, once it was shown.
const PLACEHOLDER: &str = "YOUR_API_KEY";

/// Creates a connection through the form and returns its page's path and the
/// key its page showed once.
async fn create(
    browser: &Browser,
    demo: &DemoServer,
    name: &str,
    db_type: &str,
) -> (String, String) {
    browser.goto(&demo.url("/connections")).await;
    browser.fill("#connection-name", name).await;
    let choose = "document.getElementById('db-type').value = arguments[0];";
    browser.client().execute(choose, vec![db_type.into()]).await.expect("choosing the database");
    browser.click("form[action='/connections'] button[type=submit]").await;
    browser.wait_for("#api-key", RENDER_LIMIT).await;
    let key = browser.text_of("#api-key").await;
    assert!(key.starts_with("custard_"), "the key is shown once: {key:?}");
    let env = browser.text_of("#setup-env").await;
    assert!(env.contains(&format!("CUSTARD_API_KEY={key}")), "with the key itself: {env}");
    browser.screenshot(&format!("connection-new-key-{db_type}")).await;
    (browser.path().await, key)
}

/// Opens `path` again, as a later visit, and waits for the page.
async fn visit(browser: &Browser, demo: &DemoServer, path: &str, name: &str) {
    browser.goto(&demo.url(path)).await;
    browser.wait_for_text("#connection-title", name, RENDER_LIMIT).await;
}

/// Whether `text` holds an ISO-8601 time such as `2026-01-02T03:04`.
fn has_iso_time(text: &str) -> bool {
    let digit = |b: u8| b.is_ascii_digit();
    text.as_bytes().windows(14).any(|w| {
        w[..4].iter().all(|&b| digit(b))
            && w[4] == b'-'
            && w[5..7].iter().all(|&b| digit(b))
            && w[7] == b'-'
            && w[8..10].iter().all(|&b| digit(b))
            && w[10] == b'T'
            && w[11..13].iter().all(|&b| digit(b))
            && w[13] == b':'
    })
}

#[test]
fn iso_times_are_recognised() {
    assert!(has_iso_time("seen 2026-01-02T03:04:05+00:00"));
    assert!(!has_iso_time("seen 2 Jan 2026, 03:04") && !has_iso_time("2026-01-02 03:04 UTC"));
}

/// Asserts that the page's visible text shows no ISO time and no UTC
/// fallback (the script showed every time in the browser's zone).
async fn assert_times_for_people(browser: &Browser, page: &str) {
    let text = browser.text_of("main").await;
    assert!(!has_iso_time(&text), "no raw ISO time on {page}: {text}");
    assert!(!text.contains(" UTC"), "times in the browser's zone on {page}: {text}");
}

/// After a create, later visits of the connection's page still show how to
/// run the agent, without the key: PostgreSQL with the read-only role's SQL,
/// SQLite with the file mounted read-only. Without a model, the instructions
/// hint says the offline engine does not read them.
#[tokio::test(flavor = "multi_thread")]
async fn setup_lines_stay_on_the_connection_page_without_the_key() {
    bounded(async {
        let demo = DemoServer::start("connection-setup", &[]).await;
        let browser = Browser::start().await;
        demo.sign_in(&browser).await;
        let agent_url = |path: &str| {
            let id = path.trim_start_matches("/connections/");
            format!("{}/api/v1/connections/ws/{id}", demo.base.replace("http://", "ws://"))
        };

        // PostgreSQL.
        let (pg, key) = create(&browser, &demo, "Warehouse", "postgresql").await;
        visit(&browser, &demo, &pg, "Warehouse").await;
        let source = browser.source().await;
        assert!(
            !source.contains("id=\"api-key\"") && !source.contains(&key),
            "the key was shown once"
        );
        let env = browser.text_of("#setup-env").await;
        for line in [
            format!("CUSTARD_SERVER_URL={}", agent_url(&pg)),
            format!("CUSTARD_API_KEY={PLACEHOLDER}"),
            "CUSTARD_DATABASE_URL=postgres://custard_reader:".to_owned(),
        ] {
            assert!(env.contains(&line), "the env lines hold {line:?}: {env}");
        }
        assert_eq!(browser.text_of("#setup-server-url").await, agent_url(&pg));
        let docker = browser.text_of("#setup-docker").await;
        assert!(docker.starts_with("docker run"), "{docker}");
        assert!(docker.contains(&format!("-e CUSTARD_API_KEY={PLACEHOLDER}")), "{docker}");
        let binary = browser.text_of("#setup-binary").await;
        assert!(binary.ends_with("custard-agent run") && binary.contains(PLACEHOLDER), "{binary}");
        let hint = browser.text_of("#setup-key-hint").await;
        assert!(hint.contains("shown once") && hint.contains("rotate the key"), "{hint}");
        let role = browser.text_of("#setup-role-sql").await;
        for sql in [
            "CREATE ROLE \"custard_reader\" LOGIN",
            "NOSUPERUSER",
            "GRANT SELECT ON ALL TABLES IN SCHEMA \"public\" TO \"custard_reader\";",
            "default_transaction_read_only = on",
        ] {
            assert!(role.contains(sql), "the role SQL holds {sql:?}: {role}");
        }
        assert!(!source.contains("id=\"setup-sqlite-hint\""), "no SQLite advice for PostgreSQL");
        let instructions = browser.text_of("#instructions-hint").await;
        assert!(
            instructions.contains("offline engine") && instructions.contains("does not read"),
            "without a model the hint says the instructions are not read: {instructions}"
        );
        assert!(instructions.contains("once a model is configured"), "{instructions}");
        let seen = browser.text_of("[data-seen-for]").await;
        assert_eq!(seen, "never connected");
        assert_times_for_people(&browser, "a new connection's page").await;
        browser.screenshot("connection-desktop").await;
        scroll_to(&browser, "#setup-role-sql ~ h3").await;
        browser.screenshot("connection-setup-desktop").await;
        scroll_to(&browser, "#instructions-title").await;
        browser.screenshot("connection-instructions-desktop").await;
        browser.set_size(390, 844).await;
        scroll_to(&browser, "main").await;
        browser.screenshot("connection-phone").await;
        scroll_to(&browser, "#setup-docker").await;
        browser.screenshot("connection-setup-phone").await;
        browser.set_size(DESKTOP_SIZE.0, DESKTOP_SIZE.1).await;

        // SQLite.
        let (sqlite, key) = create(&browser, &demo, "Shop file", "sqlite").await;
        visit(&browser, &demo, &sqlite, "Shop file").await;
        let source = browser.source().await;
        assert!(
            !source.contains("id=\"api-key\"") && !source.contains(&key),
            "the key was shown once"
        );
        assert!(!source.contains("id=\"setup-role-sql\""), "SQLite has no role to create");
        let docker = browser.text_of("#setup-docker").await;
        assert!(
            docker.contains("-v /path/to/your.db:/data/your.db:ro"),
            "read-only mount: {docker}"
        );
        assert!(docker.contains("-e CUSTARD_DATABASE_URL=sqlite:/data/your.db"), "{docker}");
        assert!(docker.contains(&format!("-e CUSTARD_API_KEY={PLACEHOLDER}")), "{docker}");
        let env = browser.text_of("#setup-env").await;
        assert!(env.contains("CUSTARD_DATABASE_URL=sqlite:/path/to/your.db"), "{env}");
        assert!(env.contains(&format!("CUSTARD_SERVER_URL={}", agent_url(&sqlite))), "{env}");
        let advice = browser.text_of("#setup-sqlite-hint").await;
        assert!(advice.contains("no roles") && advice.contains("read-only"), "{advice}");
        scroll_to(&browser, "#agent-setup").await;
        browser.screenshot("connection-sqlite-desktop").await;
        browser.close().await;
    })
    .await;
}

/// The demo connection's page, with an agent online and a schema read at
/// start: "online now", and the schema's time in words, not ISO or UTC.
#[tokio::test(flavor = "multi_thread")]
async fn an_online_connection_shows_times_in_the_browsers_zone() {
    bounded(async {
        let demo = DemoServer::start("connection-times", &[]).await;
        let browser = Browser::start().await;
        demo.sign_in(&browser).await;
        browser.goto(&demo.url("/connections")).await;
        browser.wait_for_text("#connection-list", "online now", RENDER_LIMIT).await;
        // The schema is read right after the agent connects: its time in words.
        let schema = "#connection-list [data-schema-for]";
        let read = tokio::time::timeout(RENDER_LIMIT, async {
            loop {
                let text = browser.text_of(schema).await;
                if text == "just now" || text.ends_with(" ago") {
                    return text;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .await;
        assert!(read.is_ok(), "the schema's time in words: {}", browser.text_of(schema).await);
        assert_times_for_people(&browser, "the connections list").await;
        browser.click("#connection-list a").await;
        browser.wait_for("#connection-title", RENDER_LIMIT).await;
        assert_eq!(browser.text_of("[data-seen-for]").await, "online now");
        assert_times_for_people(&browser, "the demo connection's page").await;
        // Online: the setup lines are there, folded.
        let open = browser
            .client()
            .execute("return document.querySelector('#agent-setup details').open;", vec![])
            .await
            .expect("reading the details");
        assert_eq!(open, false, "folded while the agent is online");
        browser.screenshot("connection-online-desktop").await;
        browser.close().await;
    })
    .await;
}

/// Scrolls the first element matching `css` to the top of the viewport.
async fn scroll_to(browser: &Browser, css: &str) {
    let script = "document.querySelector(arguments[0]).scrollIntoView();";
    browser.client().execute(script, vec![css.into()]).await.expect("scrolling");
}

/// Lines `KEY=value` of the page's env block.
fn env_value<'a>(env: &'a str, key: &str) -> &'a str {
    env.lines()
        .find_map(|l| l.strip_prefix(key).and_then(|rest| rest.strip_prefix('=')))
        .unwrap_or_else(|| panic!("no {key} in {env}"))
}

/// A SQLite database for the agent to serve.
fn shop_file(scene: &Scene) -> std::path::PathBuf {
    let path = scene.path().join("shop.db");
    let db = rusqlite::Connection::open(&path).expect("creating the database");
    db.execute_batch(
        "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL);
         INSERT INTO items (name) VALUES ('custard'), ('jelly');",
    )
    .expect("filling the database");
    path
}

/// Whether the page is still the one the test marked (no reload happened).
async fn same_page(browser: &Browser, marker: &str) -> bool {
    let found = browser
        .client()
        .execute("return window.__custard_marker || null;", vec![])
        .await
        .expect("reading the marker");
    found == marker
}

/// The connections list, open while a real agent starts for a new SQLite
/// connection: its row turns online, "never connected" goes, the version and
/// the schema's time appear, all without a reload; when the agent stops, the
/// row turns offline and says when it was last seen. The connection's page
/// follows the same way when the agent comes back.
#[tokio::test(flavor = "multi_thread")]
async fn status_fields_follow_a_real_agent_without_a_reload() {
    // Built before the clock starts: cargo may wait for the build directory.
    let agent_binary = tokio::task::spawn_blocking(|| workspace_binary("custard-agent"))
        .await
        .expect("building the agent");
    // Two agent starts and a browser: twice a page test's time.
    let test = async {
        let demo = DemoServer::start("connection-live", &[]).await;
        let scene = Scene::new("connection-live-agent");
        let database = shop_file(&scene);
        let browser = Browser::start().await;
        demo.sign_in(&browser).await;
        let (page, _) = create(&browser, &demo, "Pantry", "sqlite").await;
        let env = browser.text_of("#setup-env").await;
        let id = page.trim_start_matches("/connections/").to_owned();
        let start = |name: &str| -> Process {
            start_agent(
                &scene,
                &agent_binary,
                name,
                env_value(&env, "CUSTARD_SERVER_URL"),
                env_value(&env, "CUSTARD_API_KEY"),
                &format!("sqlite:{}", database.display()),
                &[],
            )
        };

        browser.goto(&demo.url("/connections")).await;
        let row = format!("tr[data-connection='{id}']");
        let cell = |attr: &str| format!("{row} [{attr}]");
        let before = browser.wait_for_text(&row, "Pantry", RENDER_LIMIT).await;
        assert!(before.contains("pending") && before.contains("never connected"), "{before}");
        let marker = "the list was not reloaded";
        browser
            .client()
            .execute("window.__custard_marker = arguments[0];", vec![marker.into()])
            .await
            .expect("marking the page");

        let mut agent = start("agent");
        browser.wait_for_text(&cell("data-status-for"), "online", RENDER_LIMIT).await;
        let online = browser.wait_for_text(&row, "online now", RENDER_LIMIT).await;
        assert!(!online.contains("never connected"), "the row says nothing stale: {online}");
        let version = browser.text_of(&cell("data-version-for")).await;
        assert!(version.chars().next().is_some_and(|c| c.is_ascii_digit()), "a version: {version}");
        // The agent reports its schema right after it connects.
        browser.wait_for_text(&cell("data-schema-for"), "just now", RENDER_LIMIT).await;
        assert!(same_page(&browser, marker).await, "the row changed in the same page");
        assert_times_for_people(&browser, "the connections list").await;
        browser.screenshot("connections-desktop").await;
        browser.set_size(390, 844).await;
        browser.screenshot("connections-phone").await;
        browser.set_size(DESKTOP_SIZE.0, DESKTOP_SIZE.1).await;

        // The agent stops: offline, last seen when it left, not when it came.
        let stopped = chrono::Utc::now();
        agent.kill().await;
        browser.wait_for_text(&cell("data-status-for"), "offline", RENDER_LIMIT).await;
        let seen = browser.wait_for_text(&cell("data-seen-for"), "just now", RENDER_LIMIT).await;
        assert_eq!(seen, "just now");
        let at = browser
            .wait_for(&format!("{} time", cell("data-seen-for")), RENDER_LIMIT)
            .await
            .attr("datetime")
            .await
            .expect("reading the time")
            .expect("a datetime");
        let at = chrono::DateTime::parse_from_rfc3339(&at).expect("an RFC 3339 time");
        // Millisecond times in the store.
        let slack = chrono::Duration::milliseconds(5);
        assert!(at >= stopped - slack, "last seen {at} is when it left ({stopped}), not earlier");
        assert!(same_page(&browser, marker).await, "the row changed in the same page");

        // The connection's page follows it coming back.
        browser.goto(&demo.url(&page)).await;
        browser.wait_for_text("#connection-title", "Pantry", RENDER_LIMIT).await;
        let status = "#connection-title ~ table [data-status-for]";
        assert_eq!(browser.text_of(status).await, "offline");
        assert_eq!(browser.text_of("[data-seen-for]").await, "just now");
        let marker = "the connection's page was not reloaded";
        browser
            .client()
            .execute("window.__custard_marker = arguments[0];", vec![marker.into()])
            .await
            .expect("marking the page");
        let _agent = start("agent-again");
        browser.wait_for_text(status, "online", RENDER_LIMIT).await;
        browser.wait_for_text("[data-seen-for]", "online now", RENDER_LIMIT).await;
        assert!(same_page(&browser, marker).await, "the page changed in place");
        browser.close().await;
    };
    tokio::time::timeout(TEST_LIMIT * 2, test)
        .await
        .expect("the test finished within its time limit");
}

/// Whether the element `css` is within the viewport, and whether it has focus.
async fn in_view_and_focused(browser: &Browser, css: &str) -> (bool, bool) {
    let script = "const e = document.querySelector(arguments[0]); const r = e.getBoundingClientRect(); \
                  return [r.top >= 0 && r.bottom <= window.innerHeight, document.activeElement === e];";
    let answer = browser.client().execute(script, vec![css.into()]).await.expect("measuring");
    let flags: Vec<bool> = serde_json::from_value(answer).expect("two flags");
    (flags[0], flags[1])
}

/// A failed form shows its error beside it, in view: a wrong delete
/// confirmation keeps the delete section open with the input focused; a
/// taken name shows by the name field. Nothing is deleted or renamed.
#[tokio::test(flavor = "multi_thread")]
async fn errors_show_beside_the_form_that_failed() {
    bounded(async {
        let demo = DemoServer::start("ui-connection-errors", &[]).await;
        let browser = Browser::start().await;
        demo.sign_in(&browser).await;
        let (page, _) = create(&browser, &demo, "Warehouse", "postgresql").await;
        for (width, height) in [DESKTOP_SIZE, (390, 844)] {
            browser.set_size(width, height).await;
            visit(&browser, &demo, &page, "Warehouse").await;
            browser.click("#delete-connection summary").await;
            browser.fill("#confirm-delete", "Warehous").await;
            browser.click("form[action$='/delete'] button[type=submit]").await;
            let said =
                browser.wait_for_text("#confirm-delete-error", "to confirm", RENDER_LIMIT).await;
            assert!(said.contains("Warehouse"), "{said}");
            let open =
                browser.wait_for("#delete-connection", RENDER_LIMIT).await.attr("open").await;
            assert!(open.expect("attribute").is_some(), "the delete section stays open");
            assert_eq!(
                in_view_and_focused(&browser, "#confirm-delete").await,
                (true, true),
                "the confirmation input is in view and focused at {width} px"
            );
            assert!(
                in_view_and_focused(&browser, "#confirm-delete-error").await.0,
                "the error is in view at {width} px"
            );
            browser.screenshot(&format!("connection-delete-error-{width}")).await;
        }

        // A name another connection has: the error by the name field.
        browser.set_size(DESKTOP_SIZE.0, DESKTOP_SIZE.1).await;
        visit(&browser, &demo, &page, "Warehouse").await;
        browser
            .client()
            .execute("document.getElementById('edit-name').value = '';", vec![])
            .await
            .expect("clearing");
        browser.fill("#edit-name", "Demo shop").await;
        browser.click("form[action^='/connections/'] button[type=submit]").await;
        browser.wait_for("#instructions-error", RENDER_LIMIT).await;
        assert_eq!(in_view_and_focused(&browser, "#edit-name").await, (true, true));
        assert!(
            in_view_and_focused(&browser, "#instructions-error").await.0,
            "the name error is in view"
        );
        visit(&browser, &demo, &page, "Warehouse").await;
        browser.close().await;
    })
    .await;
}

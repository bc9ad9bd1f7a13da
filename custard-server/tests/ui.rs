//! The web UI in real headless Chromium: the server runs in process on a
//! loopback socket and [`Browser`] drives the pages it serves.
//!
//! Needs Debian's chromium and chromium-driver (`scripts/ensure-chromium.sh`).
//! Screenshots land in `target/ui-screenshots/`.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use custard_server::config::ServerConfig;
use custard_server::{AppState, app};
use custard_testkit::browser::{Browser, DESKTOP_SIZE};

/// The whole flow with a real agent and PostgreSQL.
#[path = "ui/flow.rs"]
mod flow;

/// The demo server (`--demo`) that page tests sign in to.
#[path = "ui/demo.rs"]
mod demo;

/// The Ask page: cards, failures, follow-ups, example questions.
#[path = "ui/ask_page.rs"]
mod ask_page;

/// History: the list, its search and filters, deletion.
#[path = "ui/history_page.rs"]
mod history_page;

/// The connection pages: setup lines, times, live status, instructions.
#[path = "ui/connection_page.rs"]
mod connection_page;

/// Accounts and Settings: sessions, verification, invitations, errors in view.
#[path = "ui/account_pages.rs"]
mod account_pages;

/// Charts and numbers as people read them.
#[path = "ui/charts.rs"]
mod charts;

/// The longest any one test may take, browser start included.
const TEST_LIMIT: Duration = Duration::from_secs(60);
/// How long a page may take to render what a test waits for.
const RENDER_LIMIT: Duration = Duration::from_secs(15);

/// Runs a test body under [`TEST_LIMIT`].
async fn bounded<F: Future<Output = ()>>(test: F) {
    tokio::time::timeout(TEST_LIMIT, test).await.expect("the test finished within its time limit");
}

const EMAIL: &str = "ui@example.com";
const PASSWORD: &str = "correct horse battery staple";

/// A verified user with an organisation, written straight to the store (the
/// sign-up flow has its own tests; these are about the pages).
async fn verified_user(dir: &tempfile::TempDir) {
    use custard_server::store::{NewUser, SqliteStore, Store};
    let store = SqliteStore::open(&dir.path().join("custard.db")).expect("store");
    let hash = custard_server::auth::hash_password(PASSWORD).expect("hash");
    let new = NewUser {
        email: EMAIL.into(),
        password_hash: hash,
        first_name: "Ui".into(),
        last_name: "Tester".into(),
    };
    let signup = store.create_user_with_org(new, "UI org".into()).await.expect("user");
    store.mark_email_verified(&signup.user.id).await.expect("verified");
}

/// A server on a fresh data dir, served on a loopback socket: its base URL.
async fn serve(dir: &tempfile::TempDir) -> String {
    let data_dir = dir.path().to_str().expect("utf-8");
    let config = ServerConfig::parse_from(["custard-server", "--data-dir", data_dir]);
    let state = AppState::open(config).await.expect("state");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    let service = app(state).into_make_service_with_connect_info::<SocketAddr>();
    tokio::spawn(async move { axum::serve(listener, service).await });
    format!("http://{addr}")
}

#[tokio::test(flavor = "multi_thread")]
async fn api_docs_render_in_chromium_on_desktop_and_phone() {
    bounded(async {
        let dir = tempfile::tempdir().expect("tempdir");
        let base = serve(&dir).await;
        let browser = Browser::start().await;
        assert_eq!(browser.viewport().await, DESKTOP_SIZE, "the desktop viewport");
        browser.goto(&format!("{base}/api/v1/docs/")).await;

        // Swagger UI renders the title from the OpenAPI document in script.
        let title = ".swagger-ui .info .title";
        browser.wait_for(title, RENDER_LIMIT).await;
        let text = browser.text_of(title).await;
        assert!(text.contains("Custard"), "the docs page shows the API title, not {text:?}");
        let desktop = browser.screenshot("api-docs-desktop").await;

        browser.set_size(390, 844).await;
        assert_eq!(browser.viewport().await, (390, 844), "the phone-sized viewport");
        let phone = browser.screenshot("api-docs-phone").await;
        println!("screenshots: {} {}", desktop.display(), phone.display());
        browser.close().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn signing_in_through_the_form_shows_the_ask_page() {
    use fantoccini::Locator;
    bounded(async {
        let dir = tempfile::tempdir().expect("tempdir");
        verified_user(&dir).await;
        let base = serve(&dir).await;
        let browser = Browser::start().await;

        // Signed out, the home page leads to the sign-in form.
        browser.goto(&format!("{base}/")).await;
        browser.wait_for("form[action='/login']", RENDER_LIMIT).await;
        let client = browser.client();
        let url = client.current_url().await.expect("url");
        assert_eq!(url.path(), "/login");
        browser.screenshot("login-desktop").await;

        let fill = |css: &'static str, text: &'static str| async move {
            client.find(Locator::Css(css)).await.expect(css).send_keys(text).await.expect(css);
        };
        // A wrong password shows the error on the form.
        fill("#email", EMAIL).await;
        fill("#password", "not the password").await;
        client
            .find(Locator::Css("button[type=submit]"))
            .await
            .expect("button")
            .click()
            .await
            .expect("submit");
        browser.wait_for(".error", RENDER_LIMIT).await;
        assert!(browser.text_of(".error").await.contains("Wrong email or password"));

        fill("#password", PASSWORD).await;
        client
            .find(Locator::Css("button[type=submit]"))
            .await
            .expect("button")
            .click()
            .await
            .expect("submit");
        browser.wait_for(".who", RENDER_LIMIT).await;
        assert_eq!(browser.text_of(".who").await, EMAIL);
        assert_eq!(browser.text_of("main h1").await, "Ask your database", "the Ask page");

        // Signing out returns to the form, and the old session is gone.
        client
            .find(Locator::Css("button.link"))
            .await
            .expect("sign out")
            .click()
            .await
            .expect("click");
        browser.wait_for("form[action='/login']", RENDER_LIMIT).await;
        browser.goto(&format!("{base}/")).await;
        browser.wait_for("form[action='/login']", RENDER_LIMIT).await;
        browser.close().await;
    })
    .await;
}

/// Post/Redirect/Get in a real browser: "Create connection" lands on the
/// connection's page with the key; a reload shows the page again without the
/// key and creates nothing; the same for "Rotate key".
#[tokio::test(flavor = "multi_thread")]
async fn reloading_after_creating_a_connection_creates_no_second_one() {
    bounded(async {
        let dir = tempfile::tempdir().expect("tempdir");
        verified_user(&dir).await;
        let base = serve(&dir).await;
        let browser = Browser::start().await;
        sign_in_as(&browser, &base, EMAIL, PASSWORD).await;
        browser.wait_for_text(".who", EMAIL, RENDER_LIMIT).await;

        browser.goto(&format!("{base}/connections")).await;
        browser.fill("#connection-name", "Shop").await;
        browser.click("form[action='/connections'] button[type=submit]").await;
        browser.wait_for("#api-key", RENDER_LIMIT).await;
        let key = browser.text_of("#api-key").await;
        assert!(key.starts_with("custard_"), "the key is shown: {key:?}");
        let page = browser.path().await;
        assert!(page.starts_with("/connections/"), "the connection's page: {page}");

        let reload = || async {
            browser.client().refresh().await.expect("reload");
            browser.wait_for_text("#connection-title", "Shop", RENDER_LIMIT).await;
        };
        reload().await;
        assert_eq!(browser.path().await, page, "the same page");
        let source = browser.source().await;
        assert!(!source.contains("id=\"api-key\"") && !source.contains(&key), "shown once");
        reload().await;

        let rows = "return document.querySelectorAll('#connection-list tbody tr').length;";
        browser.goto(&format!("{base}/connections")).await;
        browser.wait_for("#connection-list", RENDER_LIMIT).await;
        let count = browser.client().execute(rows, vec![]).await.expect("counting");
        assert_eq!(count, 1, "one connection after the reloads");

        // Rotate: the new key once, and a reload rotates nothing.
        browser.goto(&format!("{base}{page}")).await;
        browser.click("#danger-title ~ details summary").await;
        browser.click("form[action$='/rotate-key'] button[type=submit]").await;
        browser.wait_for("#api-key", RENDER_LIMIT).await;
        let rotated = browser.text_of("#api-key").await;
        assert!(rotated.starts_with("custard_") && rotated != key, "a new key");
        reload().await;
        let source = browser.source().await;
        assert!(!source.contains("id=\"api-key\"") && !source.contains(&rotated), "shown once");
        let prefix: String = rotated.chars().take(12).collect();
        assert!(source.contains(&prefix), "the key was not rotated again: {prefix}");
        browser.close().await;
    })
    .await;
}

/// The longest the sign-up and reset flow may take: it hashes passwords
/// (slow in debug builds) and loads a dozen pages.
const ACCOUNT_FLOW_LIMIT: Duration = Duration::from_secs(150);

/// The token of the link to `path` in an email of the server's outbox (the
/// server has no SMTP), as it stands in the link (percent-encoded), once one
/// arrives (waiting at most [`RENDER_LIMIT`]).
async fn outbox_token(dir: &tempfile::TempDir, path: &str) -> String {
    let needle = format!("{path}?token=");
    let outbox = dir.path().join(custard_server::mail::OUTBOX_DIR);
    let started = std::time::Instant::now();
    while started.elapsed() < RENDER_LIMIT {
        for entry in std::fs::read_dir(&outbox).into_iter().flatten().flatten() {
            let Ok(mail) = std::fs::read_to_string(entry.path()) else { continue };
            if let Some(start) = mail.find(&needle) {
                let token = &mail[start + needle.len()..];
                return token.chars().take_while(|c| !c.is_whitespace()).collect();
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no email with a {needle} link in {} after {RENDER_LIMIT:?}", outbox.display())
}

/// Signs in through the form at `base` and waits for the page after it.
async fn sign_in_as(browser: &Browser, base: &str, email: &str, password: &str) {
    browser.goto(&format!("{base}/login")).await;
    browser.fill("#email", email).await;
    browser.fill("#password", password).await;
    browser.click("form[action='/login'] button[type=submit]").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn signing_up_verifying_and_resetting_a_password_in_chromium() {
    let flow = async {
        let dir = tempfile::tempdir().expect("tempdir");
        let base = serve(&dir).await;
        let browser = Browser::start().await;
        let email = "newcomer@example.com";
        let new_password = "a fresh and unrelated passphrase";

        // Sign up: a weak password comes back with the reason, then it works.
        browser.goto(&format!("{base}/signup")).await;
        browser.wait_for("form[action='/signup']", RENDER_LIMIT).await;
        browser.fill("#first_name", "Grace").await;
        browser.fill("#last_name", "Hopper").await;
        browser.fill("#email", email).await;
        browser.fill("#password", "password1").await;
        browser.fill("#organization_name", "Compilers").await;
        browser.screenshot("signup-desktop").await;
        browser.click("form[action='/signup'] button[type=submit]").await;
        browser.wait_for_text("#password-error", "Password rejected", RENDER_LIMIT).await;
        let source = browser.source().await;
        assert!(source.contains("value=\"Grace\"") && !source.contains("password1"), "{source}");
        browser.fill("#password", PASSWORD).await;
        browser.click("form[action='/signup'] button[type=submit]").await;
        browser.wait_for_text("main h1", "Check your email", RENDER_LIMIT).await;
        assert!(browser.text_of("main").await.contains(email));

        // The emailed link verifies; then signing in lands on Ask.
        let token = outbox_token(&dir, "/verify-email").await;
        browser.goto(&format!("{base}/verify-email?token={token}")).await;
        browser.wait_for_text("main h1", "Your email is verified", RENDER_LIMIT).await;
        browser.click("main a[href='/login']").await;
        browser.wait_for("form[action='/login']", RENDER_LIMIT).await;
        browser.fill("#email", email).await;
        browser.fill("#password", PASSWORD).await;
        browser.click("form[action='/login'] button[type=submit]").await;
        browser.wait_for_text(".who", email, RENDER_LIMIT).await;
        assert_eq!(browser.path().await, "/", "signing in lands on the Ask page");

        // Settings shows the account and its organisation.
        browser.goto(&format!("{base}/settings")).await;
        browser.wait_for_text("#organisation-title", "Compilers", RENDER_LIMIT).await;
        browser.screenshot("settings-desktop").await;
        let members = "document.getElementById('organisation-title').scrollIntoView();";
        browser.client().execute(members, vec![]).await.expect("scrolling to the members");
        browser.screenshot("settings-members-desktop").await;
        browser.set_size(390, 844).await;
        browser.screenshot("settings-phone").await;
        browser.set_size(DESKTOP_SIZE.0, DESKTOP_SIZE.1).await;

        // Sign out, then forgot password from the sign-in page.
        browser.click("form[action='/logout'] button").await;
        browser.wait_for("form[action='/login']", RENDER_LIMIT).await;
        browser.click("a[href='/forgot-password']").await;
        browser.wait_for("form[action='/forgot-password']", RENDER_LIMIT).await;
        browser.fill("#email", email).await;
        browser.click("form[action='/forgot-password'] button[type=submit]").await;
        let said = browser.wait_for_text("main", "If an account exists for", RENDER_LIMIT).await;
        assert!(said.contains(email), "{said}");

        // The reset link's page: mismatched passwords are caught, then it changes.
        let token = outbox_token(&dir, "/reset-password").await;
        browser.goto(&format!("{base}/reset-password?token={token}")).await;
        browser.wait_for("form[action='/reset-password']", RENDER_LIMIT).await;
        browser.fill("#new_password", new_password).await;
        browser.fill("#confirm_password", "not the same words").await;
        browser.click("form[action='/reset-password'] button[type=submit]").await;
        browser.wait_for_text("#confirm_password-error", "do not match", RENDER_LIMIT).await;
        browser.fill("#new_password", new_password).await;
        browser.fill("#confirm_password", new_password).await;
        browser.click("form[action='/reset-password'] button[type=submit]").await;
        browser.wait_for_text("main h1", "Your password was changed", RENDER_LIMIT).await;

        // The old password is refused; the new one signs in.
        sign_in_as(&browser, &base, email, PASSWORD).await;
        browser.wait_for_text(".error", "Wrong email or password", RENDER_LIMIT).await;
        sign_in_as(&browser, &base, email, new_password).await;
        browser.wait_for_text(".who", email, RENDER_LIMIT).await;
        assert_eq!(browser.path().await, "/");
        browser.close().await;
    };
    tokio::time::timeout(ACCOUNT_FLOW_LIMIT, flow)
        .await
        .expect("the flow finished within its time limit");
}

/// A wrong link signed in is not a dead end: the error page keeps the menu
/// (and its sign-out form works); signed out, it has none.
#[tokio::test(flavor = "multi_thread")]
async fn error_pages_keep_the_menu_when_signed_in() {
    bounded(async {
        let dir = tempfile::tempdir().expect("tempdir");
        verified_user(&dir).await;
        let base = serve(&dir).await;
        let browser = Browser::start().await;

        browser.goto(&format!("{base}/no-such-page")).await;
        browser.wait_for_text("main h1", "Not found", RENDER_LIMIT).await;
        assert!(!browser.source().await.contains("class=\"nav\""), "no menu signed out");

        sign_in_as(&browser, &base, EMAIL, PASSWORD).await;
        browser.wait_for_text(".who", EMAIL, RENDER_LIMIT).await;
        for path in ["/no-such-page", "/history/no-such-question", "/connections/no-such-one"] {
            browser.goto(&format!("{base}{path}")).await;
            browser.wait_for_text("main h1", "Not found", RENDER_LIMIT).await;
            assert_eq!(browser.text_of(".who").await, EMAIL, "the menu on {path}");
        }
        browser.screenshot("not-found-signed-in-desktop").await;
        browser.click("form[action='/logout'] button").await;
        browser.wait_for("form[action='/login']", RENDER_LIMIT).await;
        browser.close().await;
    })
    .await;
}

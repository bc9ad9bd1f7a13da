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
    let state = AppState::open(config).expect("state");
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
async fn signing_in_through_the_form_shows_the_connections_page() {
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
        assert_eq!(browser.text_of("main h1").await, "Connections");
        browser.screenshot("connections-desktop").await;
        browser.set_size(390, 844).await;
        browser.screenshot("connections-phone").await;

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

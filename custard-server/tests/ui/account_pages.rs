//! Accounts and Settings in Chromium: a password change and "Sign out other
//! sessions" end the other sessions, the verification email sent again, the
//! page of a user in no organisation, invitations listed, sent again and
//! named on their page, and errors shown where they happen.

use std::time::Duration;

use custard_server::store::{NewToken, NewUser, OrgId, Role, SqliteStore, Store, UserId};
use custard_testkit::browser::{Browser, DESKTOP_SIZE};
use serde_json::{Value, json};

use super::{EMAIL, PASSWORD, RENDER_LIMIT, outbox_token, serve, sign_in_as, verified_user};

/// The longest a test here may take: they hash a few passwords (slow in
/// debug builds) besides starting Chromium.
const FLOW_LIMIT: Duration = Duration::from_secs(150);

/// Runs a test body under [`FLOW_LIMIT`].
async fn bounded<F: Future<Output = ()>>(test: F) {
    tokio::time::timeout(FLOW_LIMIT, test).await.expect("the test finished within its time limit");
}

/// The server's store, opened beside the running server (SQLite takes both).
fn store(dir: &tempfile::TempDir) -> SqliteStore {
    SqliteStore::open(&dir.path().join("custard.db")).expect("store")
}

/// A verified user `email` (named `first` Tester, with `PASSWORD`) owning
/// an organisation `org`, written straight to the store.
async fn user_with_org(
    dir: &tempfile::TempDir,
    email: &str,
    first: &str,
    org: &str,
) -> (UserId, OrgId) {
    let store = store(dir);
    let new = NewUser {
        email: email.into(),
        password_hash: custard_server::auth::hash_password(PASSWORD).expect("hash"),
        first_name: first.into(),
        last_name: "Tester".into(),
    };
    let signup = store.create_user_with_org(new, org.into()).await.expect("user");
    store.mark_email_verified(&signup.user.id).await.expect("verified");
    (signup.user.id, signup.organization.id)
}

/// The id and organisation of the [`EMAIL`] user.
async fn ui_user(dir: &tempfile::TempDir) -> (UserId, OrgId) {
    let store = store(dir);
    let user = store.get_user_by_email(EMAIL).await.expect("the UI user");
    let orgs = store.organizations_of_user(&user.id).await.expect("orgs");
    (user.id, orgs[0].0.id.clone())
}

/// An invitation to `email` into `org` from `by`, as the store keeps it; its link's secret.
async fn invitation(
    dir: &tempfile::TempDir,
    org: &OrgId,
    by: &UserId,
    email: &str,
    role: Role,
) -> String {
    let secret = custard_server::auth::new_secret();
    let hash = custard_server::auth::hash_secret(&secret);
    let expires = chrono::Utc::now() + chrono::TimeDelta::days(7);
    let token = NewToken::invitation(org, by, email, role, hash, expires);
    store(dir).create_token(token).await.expect("invitation");
    secret
}

/// The invitation links' tokens (as they stand in the link) in the outbox's
/// emails to `to`.
fn links_to(dir: &tempfile::TempDir, to: &str) -> Vec<String> {
    let outbox = dir.path().join(custard_server::mail::OUTBOX_DIR);
    let needle = "/accept-invitation?token=";
    std::fs::read_dir(&outbox)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| std::fs::read_to_string(entry.path()).ok())
        .filter(|mail| mail.contains(&format!("To: {to}")))
        .filter_map(|mail| {
            let start = mail.find(needle)? + needle.len();
            Some(mail[start..].chars().take_while(|c| !c.is_whitespace()).collect())
        })
        .collect()
}

/// Runs `script` (with `args`) in the page and returns its value.
async fn run(browser: &Browser, script: &str, args: Vec<Value>) -> Value {
    browser.client().execute(script, args).await.unwrap_or_else(|e| panic!("{script}: {e}"))
}

/// Where the element `css` is against the viewport: (top, bottom, viewport height).
async fn placement(browser: &Browser, css: &str) -> (f64, f64, f64) {
    let script = "const r = document.querySelector(arguments[0]).getBoundingClientRect(); \
                  return [r.top, r.bottom, window.innerHeight];";
    let value = run(browser, script, vec![json!(css)]).await;
    let n = |i: usize| value[i].as_f64().unwrap_or(f64::NAN);
    (n(0), n(1), n(2))
}

/// Asserts the element `css` is wholly inside the viewport.
async fn assert_in_view(browser: &Browser, css: &str) {
    let (top, bottom, height) = placement(browser, css).await;
    assert!(top >= 0.0 && bottom <= height && bottom > top, "{css} at {top}..{bottom} of {height}");
}

/// The id of the focused element.
async fn focused(browser: &Browser) -> String {
    let value =
        run(browser, "return document.activeElement ? document.activeElement.id : '';", vec![])
            .await;
    value.as_str().unwrap_or_default().to_owned()
}

/// A signed-in browser session kept by a plain HTTP client: its cookies.
struct CookieSession {
    client: reqwest::Client,
    base: String,
    cookies: String,
}

/// The `name=value` of the response's `Set-Cookie` for `name`.
fn cookie(response: &reqwest::Response, name: &str) -> Option<String> {
    response.headers().get_all("set-cookie").iter().filter_map(|v| v.to_str().ok()).find_map(|v| {
        let pair = v.split(';').next()?.trim();
        pair.starts_with(&format!("{name}=")).then(|| pair.to_owned())
    })
}

impl CookieSession {
    /// Signs in through the form, as a browser would.
    async fn sign_in(base: &str, email: &str, password: &str) -> CookieSession {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client");
        let page = client.get(format!("{base}/login")).send().await.expect("login page");
        let nonce = cookie(&page, "custard_csrf").expect("a CSRF cookie");
        let html = page.text().await.expect("html");
        let start = html.find("name=\"csrf_token\" value=\"").expect("a CSRF field") + 25;
        let token: String = html[start..].chars().take_while(|c| *c != '"').collect();
        let encode = |s: &str| {
            percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
        };
        let body = format!(
            "email={}&password={}&csrf_token={}",
            encode(email),
            encode(password),
            encode(&token)
        );
        let reply = client
            .post(format!("{base}/login"))
            .header("cookie", &nonce)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .expect("sign in");
        assert_eq!(reply.status().as_u16(), 303, "signed in");
        let session = cookie(&reply, "custard_session").expect("a session cookie");
        let nonce = cookie(&reply, "custard_csrf").expect("a new nonce");
        CookieSession { client, base: base.to_owned(), cookies: format!("{nonce}; {session}") }
    }

    /// The status of `GET path` with the session's cookies (303 when signed out).
    async fn status(&self, path: &str) -> u16 {
        let reply = self.client.get(format!("{}{path}", self.base)).header("cookie", &self.cookies);
        reply.send().await.expect("a page").status().as_u16()
    }
}

/// An API token of `email`, from `POST /api/v1/auth/login`.
async fn api_token(base: &str, email: &str, password: &str) -> String {
    let reply = reqwest::Client::new()
        .post(format!("{base}/api/v1/auth/login"))
        .json(&json!({"email": email, "password": password}))
        .send()
        .await
        .expect("login");
    assert_eq!(reply.status().as_u16(), 200);
    let body: Value = reply.json().await.expect("json");
    body["access_token"].as_str().expect("a token").to_owned()
}

/// Whether an API token still works.
async fn api_works(base: &str, token: &str) -> bool {
    let reply = reqwest::Client::new()
        .get(format!("{base}/api/v1/auth/profile"))
        .bearer_auth(token)
        .send()
        .await
        .expect("profile");
    reply.status().as_u16() == 200
}

#[tokio::test(flavor = "multi_thread")]
async fn a_password_change_and_sign_out_others_end_every_other_session() {
    bounded(async {
        let dir = tempfile::tempdir().expect("tempdir");
        verified_user(&dir).await;
        let base = serve(&dir).await;
        let browser = Browser::start().await;
        sign_in_as(&browser, &base, EMAIL, PASSWORD).await;
        browser.wait_for_text(".who", EMAIL, RENDER_LIMIT).await;
        let elsewhere = CookieSession::sign_in(&base, EMAIL, PASSWORD).await;
        let app = api_token(&base, EMAIL, PASSWORD).await;
        assert_eq!(elsewhere.status("/settings").await, 200, "the other browser is in");

        let new = "a fresh and unrelated passphrase";
        browser.goto(&format!("{base}/settings")).await;
        browser.fill("#current_password", PASSWORD).await;
        browser.fill("#new_password", new).await;
        browser.fill("#confirm_password", new).await;
        browser.click("form[action^='/settings/password'] button[type=submit]").await;
        browser
            .wait_for_text("#password .notice", "Every other browser and app", RENDER_LIMIT)
            .await;
        assert_in_view(&browser, "#password .notice").await;
        assert_eq!(elsewhere.status("/settings").await, 303, "the other browser is signed out");
        assert!(!api_works(&base, &app).await, "the app's token is signed out");
        browser.goto(&format!("{base}/settings")).await;
        browser.wait_for_text("#profile-title", "Profile", RENDER_LIMIT).await;
        assert_eq!(browser.path().await, "/settings", "this browser stays signed in");

        // "Sign out other sessions" does the same without a new password.
        let elsewhere = CookieSession::sign_in(&base, EMAIL, new).await;
        assert_eq!(elsewhere.status("/settings").await, 200);
        browser.click("form[action^='/settings/sessions'] button[type=submit]").await;
        browser.wait_for_text("#sessions .notice", "is signed out", RENDER_LIMIT).await;
        assert_in_view(&browser, "#sessions .notice").await;
        assert_eq!(elsewhere.status("/settings").await, 303, "signed out by the button");
        browser.goto(&format!("{base}/")).await;
        browser.wait_for_text(".who", EMAIL, RENDER_LIMIT).await;
        browser.close().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn refusals_on_settings_show_beside_their_control_in_view() {
    bounded(async {
        let dir = tempfile::tempdir().expect("tempdir");
        verified_user(&dir).await;
        let base = serve(&dir).await;
        let (me, org) = ui_user(&dir).await;
        // Pending invitations lengthen the page above the delete section.
        for i in 0..3 {
            invitation(&dir, &org, &me, &format!("pending{i}@example.com"), Role::Member).await;
        }
        let browser = Browser::start().await;
        sign_in_as(&browser, &base, EMAIL, PASSWORD).await;
        browser.wait_for_text(".who", EMAIL, RENDER_LIMIT).await;

        for (width, height) in [DESKTOP_SIZE, (390, 844)] {
            browser.set_size(width, height).await;
            browser.goto(&format!("{base}/settings")).await;
            let row = format!("#member-{}", me.as_str());
            browser.wait_for(&row, RENDER_LIMIT).await;
            let (top, _, viewport) = placement(&browser, &row).await;
            assert!(top > viewport, "the row starts out of view at {width}px: {top} > {viewport}");
            let headers = run(
                &browser,
                "return [...document.querySelectorAll('#members th')].map(h => h.textContent.trim());",
                vec![],
            )
            .await;
            assert_eq!(headers, json!(["Name", "Email", "Role", "Remove"]), "one role column");

            // Demoting the last owner: the error on the owner's row, in view and focused.
            let select = format!("{row} select[name=role]");
            run(&browser, "document.querySelector(arguments[0]).value = 'member';", vec![json!(select)]).await;
            browser.click(&format!("{row} button[type=submit]")).await;
            let error = format!("#member-{}-role-error", me.as_str());
            let text = browser.wait_for_text(&error, "at least one owner", RENDER_LIMIT).await;
            assert_eq!(text, "An organisation must keep at least one owner.");
            assert_in_view(&browser, &error).await;
            let role = run(&browser, "return document.querySelector(arguments[0]).getAttribute('role');", vec![json!(error)]).await;
            assert_eq!(role, json!("alert"));
            let active = run(&browser, "return document.activeElement === document.querySelector(arguments[0]);", vec![json!(select)]).await;
            assert_eq!(active, json!(true), "the role control is focused at {width}px");
            if width == DESKTOP_SIZE.0 {
                browser.screenshot("settings-last-owner-desktop").await;
            } else {
                browser.screenshot("settings-last-owner-phone").await;
            }

            // A wrong confirmation keeps the delete section open, the error by the input.
            browser.goto(&format!("{base}/settings")).await;
            browser.wait_for("#delete-organisation summary", RENDER_LIMIT).await;
            let open = "return document.querySelector('#delete-organisation details').open;";
            assert_eq!(run(&browser, open, vec![]).await, json!(false), "closed at first");
            browser.click("#delete-organisation summary").await;
            browser.fill("#delete_confirm", "ui org").await;
            browser.click("#delete-organisation button[type=submit]").await;
            browser.wait_for_text("#delete_confirm-error", "does not match", RENDER_LIMIT).await;
            assert_eq!(run(&browser, open, vec![]).await, json!(true), "still open at {width}px");
            assert_in_view(&browser, "#delete_confirm-error").await;
            assert_in_view(&browser, "#delete_confirm").await;
            assert_eq!(focused(&browser).await, "delete_confirm");
            let kept = run(&browser, "return document.getElementById('delete_confirm').value;", vec![]).await;
            assert_eq!(kept, json!("ui org"), "what was typed is kept");
        }
        let store = store(&dir);
        assert!(store.get_organization(&org).await.is_ok(), "nothing was deleted");
        browser.close().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn settings_list_pending_invitations_to_send_again_or_revoke() {
    bounded(async {
        let dir = tempfile::tempdir().expect("tempdir");
        verified_user(&dir).await;
        let base = serve(&dir).await;
        let browser = Browser::start().await;
        sign_in_as(&browser, &base, EMAIL, PASSWORD).await;
        browser.wait_for_text(".who", EMAIL, RENDER_LIMIT).await;

        for (email, role) in [
            ("grace@example.com", "member"),
            ("alan@example.com", "admin"),
            ("ada.byron.king@analytical-engines.example", "member"),
        ] {
            browser.goto(&format!("{base}/settings")).await;
            browser.fill("#invite_email", email).await;
            run(
                &browser,
                "document.getElementById('invite_role').value = arguments[0];",
                vec![json!(role)],
            )
            .await;
            browser.click("form[action='/settings/invitations'] button[type=submit]").await;
            browser.wait_for_text("#invitations .notice", "on its way", RENDER_LIMIT).await;
            assert_in_view(&browser, "#invitations .notice").await;
            let listed = browser.text_of("#invitations table").await;
            assert!(listed.contains(email), "{listed}");
        }
        let listed = browser.text_of("#invitations table").await;
        assert!(listed.contains("in 7 days") && listed.contains(EMAIL), "when and who: {listed}");
        assert!(
            !browser.source().await.contains("UTC</time>"),
            "times shown in the browser's zone"
        );
        run(&browser, "document.getElementById('invitations').scrollIntoView();", vec![]).await;
        browser.screenshot("settings-invitations-desktop").await;
        browser.set_size(390, 844).await;
        run(&browser, "document.getElementById('invitations').scrollIntoView();", vec![]).await;
        browser.screenshot("settings-invitations-phone").await;
        browser.set_size(DESKTOP_SIZE.0, DESKTOP_SIZE.1).await;

        // Resend: a fresh link goes out, the old one stops working.
        let old = links_to(&dir, "grace@example.com").pop().expect("grace's invitation");
        let first_row = "#invitations tbody tr:first-child";
        assert!(browser.text_of(first_row).await.contains("grace@example.com"));
        browser.click(&format!("{first_row} button[aria-label^='Send the invitation']")).await;
        browser
            .wait_for_text("#invitations .notice", "sent again with a new link", RENDER_LIMIT)
            .await;
        assert_in_view(&browser, "#invitations .notice").await;
        let links = links_to(&dir, "grace@example.com");
        assert_eq!(links.len(), 2, "the invitation and the new link: {links:?}");
        browser.goto(&format!("{base}/accept-invitation?token={old}")).await;
        browser.wait_for_text("main h1", "This invitation does not work", RENDER_LIMIT).await;

        // Revoke: the row goes.
        browser.goto(&format!("{base}/settings")).await;
        browser.click("#invitations tbody tr:first-child button[aria-label^='Revoke']").await;
        browser.wait_for_text("#invitations .notice", "revoked", RENDER_LIMIT).await;
        let listed = browser.text_of("#invitations table").await;
        assert!(
            !listed.contains("grace@example.com") && listed.contains("alan@example.com"),
            "{listed}"
        );
        browser.close().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_user_in_no_organisation_joins_one_or_creates_one() {
    bounded(async {
        let dir = tempfile::tempdir().expect("tempdir");
        verified_user(&dir).await;
        let (owner, org) = ui_user(&dir).await;
        let drifter = user_with_org(&dir, "drifter@example.com", "Drift", "Old team").await;
        let stray = user_with_org(&dir, "stray@example.com", "Stray", "Gone team").await;
        for (by, gone) in [&drifter, &stray] {
            store(&dir).delete_organization(gone, by).await.expect("deleted");
        }
        invitation(&dir, &org, &owner, "drifter@example.com", Role::Admin).await;
        let base = serve(&dir).await;
        let browser = Browser::start().await;

        // Signing in leads to the page that offers a way on.
        sign_in_as(&browser, &base, "drifter@example.com", PASSWORD).await;
        browser.wait_for_text("main h1", "You are not in an organisation", RENDER_LIMIT).await;
        assert_eq!(browser.path().await, "/welcome");
        let offer = browser.text_of(".received").await;
        assert!(
            offer.contains("UI org") && offer.contains("Ui Tester (ui@example.com)"),
            "{offer}"
        );
        assert!(offer.contains("as admin") && offer.contains("in 7 days"), "{offer}");
        browser.screenshot("no-organisation-desktop").await;
        browser.set_size(390, 844).await;
        browser.screenshot("no-organisation-phone").await;
        browser.set_size(DESKTOP_SIZE.0, DESKTOP_SIZE.1).await;
        // Pages that need an organisation lead back here.
        browser.goto(&format!("{base}/settings")).await;
        browser.wait_for_text("main h1", "You are not in an organisation", RENDER_LIMIT).await;

        browser.click(".received button[type=submit]").await;
        browser.wait_for_text(".who", "drifter@example.com", RENDER_LIMIT).await;
        assert_eq!(browser.path().await, "/");
        browser.goto(&format!("{base}/settings")).await;
        let title = browser.wait_for_text("#organisation-title", "UI org", RENDER_LIMIT).await;
        assert_eq!(title, "Organisation: UI org");
        assert!(browser.text_of("#organisation").await.contains("Your role: admin."));
        browser.click("form[action='/logout'] button").await;
        browser.wait_for("form[action='/login']", RENDER_LIMIT).await;

        // Nothing to accept: create one.
        sign_in_as(&browser, &base, "stray@example.com", PASSWORD).await;
        browser.wait_for("#no-invitations", RENDER_LIMIT).await;
        browser.fill("#organization_name", "Fresh start").await;
        browser.click("form[action='/welcome/organisation'] button[type=submit]").await;
        browser.wait_for_text(".who", "stray@example.com", RENDER_LIMIT).await;
        browser.goto(&format!("{base}/settings")).await;
        browser.wait_for_text("#organisation-title", "Fresh start", RENDER_LIMIT).await;
        assert!(browser.text_of("#organisation").await.contains("Your role: owner."));
        browser.close().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_invitation_page_names_who_invites_and_turns_away_another_account() {
    bounded(async {
        let dir = tempfile::tempdir().expect("tempdir");
        verified_user(&dir).await;
        let (owner, org) = ui_user(&dir).await;
        let secret = invitation(&dir, &org, &owner, "guest@example.com", Role::Member).await;
        let base = serve(&dir).await;
        let link = format!(
            "{base}/accept-invitation?token={}",
            percent_encoding::utf8_percent_encode(&secret, percent_encoding::NON_ALPHANUMERIC)
        );
        let browser = Browser::start().await;

        // A visitor: who invites to what, the address fixed.
        browser.set_size(390, 844).await;
        browser.goto(&link).await;
        browser.wait_for_text("main h1", "Join UI org", RENDER_LIMIT).await;
        let summary = browser.text_of(".invitation-summary").await;
        assert!(
            summary.contains("Ui Tester (ui@example.com)")
                && summary.contains("guest@example.com, as member"),
            "{summary}"
        );
        let email = run(
            &browser,
            "const e = document.getElementById('email'); return [e.value, e.readOnly];",
            vec![],
        )
        .await;
        assert_eq!(email, json!(["guest@example.com", true]));
        browser.screenshot("accept-invitation-phone").await;
        browser.set_size(DESKTOP_SIZE.0, DESKTOP_SIZE.1).await;

        // Signed in as someone else: no Accept button, a way to sign out.
        sign_in_as(&browser, &base, EMAIL, PASSWORD).await;
        browser.wait_for_text(".who", EMAIL, RENDER_LIMIT).await;
        browser.goto(&link).await;
        let told =
            browser.wait_for_text("#wrong-account", "This invitation is for", RENDER_LIMIT).await;
        assert!(told.contains("guest@example.com") && told.contains(EMAIL), "{told}");
        let accept = run(
            &browser,
            "return document.querySelectorAll(\"form[action='/accept-invitation']\").length;",
            vec![],
        )
        .await;
        assert_eq!(accept, json!(0), "no Accept button");
        browser.screenshot("accept-invitation-wrong-account-desktop").await;
        browser.click("main form[action='/logout'] button").await;
        browser.wait_for_text("main", "Create your account to accept", RENDER_LIMIT).await;
        assert!(!browser.source().await.contains("class=\"nav\""), "signed out");

        // The visitor joins with the invited address.
        browser.fill("#first_name", "Guest").await;
        browser.fill("#last_name", "Person").await;
        browser.fill("#password", "a fresh and unrelated passphrase").await;
        browser.click("form[action='/accept-invitation'] button[type=submit]").await;
        browser.wait_for_text(".who", "guest@example.com", RENDER_LIMIT).await;
        browser.close().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_verification_email_is_sent_again_from_check_email_and_sign_in() {
    bounded(async {
        let dir = tempfile::tempdir().expect("tempdir");
        let base = serve(&dir).await;
        let browser = Browser::start().await;
        let email = "late@example.com";
        browser.goto(&format!("{base}/signup")).await;
        browser.fill("#first_name", "Late").await;
        browser.fill("#last_name", "Comer").await;
        browser.fill("#email", email).await;
        browser.fill("#password", PASSWORD).await;
        browser.click("form[action='/signup'] button[type=submit]").await;
        browser.wait_for_text("main h1", "Check your email", RENDER_LIMIT).await;
        outbox_token(&dir, "/verify-email").await;
        let prefilled =
            run(&browser, "return document.getElementById('resend_email').value;", vec![]).await;
        assert_eq!(prefilled, json!(email));
        browser.click("form[action='/resend-verification'] button[type=submit]").await;
        let said = browser.wait_for_text("main", "waits for verification", RENDER_LIMIT).await;
        assert!(said.contains(email), "{said}");

        // From the sign-in error too.
        sign_in_as(&browser, &base, email, PASSWORD).await;
        browser.wait_for_text(".error", "Verify your email first", RENDER_LIMIT).await;
        browser.screenshot("sign-in-unverified-desktop").await;
        browser.click("form.resend button[type=submit]").await;
        browser.wait_for_text("main", "waits for verification", RENDER_LIMIT).await;

        let outbox = dir.path().join(custard_server::mail::OUTBOX_DIR);
        let started = std::time::Instant::now();
        let count = || {
            std::fs::read_dir(&outbox).map_or(0, |d| {
                d.flatten().filter(|e| e.path().extension().is_some_and(|x| x == "eml")).count()
            })
        };
        while count() < 3 && started.elapsed() < RENDER_LIMIT {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(count(), 3, "the sign-up's email and two more");
        let token = outbox_token(&dir, "/verify-email").await;
        browser.goto(&format!("{base}/verify-email?token={token}")).await;
        browser.wait_for_text("main h1", "Your email is verified", RENDER_LIMIT).await;
        browser.close().await;
    })
    .await;
}

/// The status of `GET /api/v1/connections` with `token` as the bearer.
async fn connections_status(base: &str, token: &str) -> u16 {
    let reply = reqwest::Client::new()
        .get(format!("{base}/api/v1/connections"))
        .bearer_auth(token)
        .send()
        .await
        .expect("connections");
    reply.status().as_u16()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_personal_access_token_is_made_shown_once_used_and_revoked_on_settings() {
    bounded(async {
        let dir = tempfile::tempdir().expect("tempdir");
        verified_user(&dir).await;
        let base = serve(&dir).await;
        let browser = Browser::start().await;
        sign_in_as(&browser, &base, EMAIL, PASSWORD).await;
        browser.wait_for_text(".who", EMAIL, RENDER_LIMIT).await;

        browser.goto(&format!("{base}/settings")).await;
        browser.wait_for_text("#tokens-title", "Personal access tokens", RENDER_LIMIT).await;
        let explained = browser.text_of("#tokens .hint").await;
        assert!(explained.contains("API") && explained.contains("shown once"), "{explained}");
        browser.wait_for("#no-tokens", RENDER_LIMIT).await;
        let create = "form[action='/settings/tokens'] button[type=submit]";

        // A blank name comes back by its field, focused, with what was chosen kept.
        browser.fill("#token_name", "   ").await;
        run(&browser, "document.getElementById('token_expires').value = '30';", vec![]).await;
        browser.click(create).await;
        let error = browser.wait_for_text("#token_name-error", "Name must be", RENDER_LIMIT).await;
        assert_eq!(error, "Name must be 1 to 100 characters.");
        assert_in_view(&browser, "#token_name-error").await;
        assert_eq!(focused(&browser).await, "token_name");
        let kept = run(&browser, "return document.getElementById('token_expires').value;", vec![])
            .await;
        assert_eq!(kept, json!("30"), "the lifetime is kept");

        // Created: the secret and an MCP configuration, once, never in the URL.
        browser.fill("#token_name", "Claude Desktop").await;
        browser.click(create).await;
        browser.wait_for_text("#tokens .notice", "The token is created", RENDER_LIMIT).await;
        let secret = browser.text_of("#token-secret").await;
        assert!(secret.starts_with("custard_pat_"), "the secret is shown: {secret:?}");
        assert_in_view(&browser, "#token-secret").await;
        let url = browser.client().current_url().await.expect("url");
        assert_eq!(url.path(), "/settings");
        assert!(!url.as_str().contains(&secret), "the secret is not in the URL: {url}");
        let title = browser.text_of("#new-token-title").await;
        assert_eq!(title, "Your new token: Claude Desktop");
        let copies = run(
            &browser,
            "return [...document.querySelectorAll('#new-token [data-copy]')].map(b => b.getAttribute('data-copy'));",
            vec![],
        )
        .await;
        assert_eq!(copies, json!(["#token-secret", "#token-mcp"]));
        let config: Value =
            serde_json::from_str(&browser.text_of("#token-mcp").await).expect("MCP config is JSON");
        let server = &config["mcpServers"]["custard"];
        assert_eq!(server["type"], json!("http"), "{config}");
        assert!(server["url"].as_str().is_some_and(|u| u.ends_with("/mcp")), "{config}");
        assert_eq!(server["headers"]["Authorization"], json!(format!("Bearer {secret}")));
        browser.screenshot("settings-new-token-desktop").await;
        browser.set_size(390, 844).await;
        run(&browser, "document.getElementById('new-token').scrollIntoView();", vec![]).await;
        browser.screenshot("settings-new-token-phone").await;
        browser.set_size(DESKTOP_SIZE.0, DESKTOP_SIZE.1).await;

        // The token works on the API.
        assert_eq!(connections_status(&base, &secret).await, 200, "the token is accepted");

        // A reload: the secret is gone, the token listed (used now, expiring).
        browser.client().refresh().await.expect("reload");
        browser.wait_for_text("#tokens-title", "Personal access tokens", RENDER_LIMIT).await;
        let source = browser.source().await;
        assert!(!source.contains("id=\"token-secret\"") && !source.contains(&secret), "shown once");
        let row = "#tokens tbody tr:first-child";
        let cells = run(
            &browser,
            "return [...document.querySelectorAll(arguments[0] + ' td')].map(c => c.textContent.trim());",
            vec![json!(row)],
        )
        .await;
        let cell = |i: usize| cells[i].as_str().unwrap_or_default().to_owned();
        assert_eq!(cell(0), "Claude Desktop", "{cells}");
        assert!(!cell(1).is_empty() && !cell(1).contains("UTC"), "created, in local time: {cells}");
        assert!(cell(2) != "never" && !cell(2).contains("UTC"), "it expires: {cells}");
        assert!(cell(3) != "never", "it was used: {cells}");
        assert!(!source.contains("UTC</time>"), "times shown in the browser's zone");

        // Revoked: the row goes and the API refuses the token.
        browser.click(&format!("{row} button[aria-label='Revoke the token Claude Desktop']")).await;
        browser.wait_for_text("#tokens .notice", "The token is revoked", RENDER_LIMIT).await;
        assert_in_view(&browser, "#tokens .notice").await;
        browser.wait_for("#no-tokens", RENDER_LIMIT).await;
        assert_eq!(connections_status(&base, &secret).await, 401, "the token is refused");
        browser.close().await;
    })
    .await;
}

//! History in Chromium: who asked each question, the search and filters (kept
//! across pages), deleting one's own questions, and the layout at desktop and
//! phone widths.
//!
//! The history is written straight to the store before the server starts (an
//! owner, a member, a connection and questions of both, answered and failed),
//! so the tests need no agent and no model.

use std::time::Duration;

use chrono::Utc;
use custard_server::store::{
    NewConnection, NewQueryRecord, NewToken, NewUser, OrgId, QueryId, SqliteStore, Store, User,
};
use custard_testkit::browser::{Browser, DESKTOP_SIZE};
use fantoccini::Locator;

use super::{EMAIL, PASSWORD, RENDER_LIMIT, bounded, serve, sign_in_as};

/// The member's email (the owner is [`EMAIL`], Ui Tester).
const MEMBER: &str = "mo@example.com";
/// Questions asked before the ones the tests look at, so the list has a second page.
const EARLIER: usize = 52;

/// The questions the tests look at, oldest first: (asked by the member,
/// question, failure code when it failed).
const RECENT: [(bool, &str, Option<&str>); 6] = [
    (false, "How many customers are there?", None),
    (true, "Revenue by month in 2025", None),
    (false, "Which products sold 100% of their stock?", Some("no_valid_query")),
    (true, "Top 5 customers by spend", None),
    (true, "What will the weather be like in Paris tomorrow?", Some("cannot_answer")),
    (false, "Orders shipped late last week, by carrier and warehouse", None),
];

/// What [`seed`] wrote: the ids of [`RECENT`]'s questions, in its order.
struct Seeded {
    recent: Vec<QueryId>,
}

/// A user to write to the store, with the tests' password.
fn user(email: &str, first: &str, last: &str) -> NewUser {
    NewUser {
        email: email.into(),
        password_hash: custard_server::auth::hash_password(PASSWORD).expect("hash"),
        first_name: first.into(),
        last_name: last.into(),
    }
}

/// Writes the organisation (owner Ui Tester, member Mo Member), its Shop
/// connection and the history: [`EARLIER`] questions of the member's, then [`RECENT`].
async fn seed(dir: &tempfile::TempDir) -> Seeded {
    let store = SqliteStore::open(&dir.path().join("custard.db")).expect("store");
    let owner = user(EMAIL, "Ui", "Tester");
    let signup = store.create_user_with_org(owner, "UI org".into()).await.expect("owner");
    store.mark_email_verified(&signup.user.id).await.expect("verified");
    let org = signup.organization.id.clone();
    let member = store.create_user(user(MEMBER, "Mo", "Member")).await.expect("mo");
    store.mark_email_verified(&member.id).await.expect("verified");
    let hash = custard_server::auth::hash_secret("ui-invitation");
    let expires = Utc::now() + chrono::TimeDelta::hours(1);
    let invitation = NewToken::invitation(
        &org,
        &signup.user.id,
        MEMBER,
        custard_server::store::Role::Member,
        hash.clone(),
        expires,
    );
    store.create_token(invitation).await.expect("invitation");
    store.accept_invitation(&hash, &member.id, Utc::now()).await.expect("joined");
    let connection = store
        .create_connection(NewConnection {
            org_id: org.clone(),
            name: "Shop".into(),
            dialect: custard_core::Dialect::Sqlite,
            key_hash: custard_server::auth::hash_secret("ui-connection-key"),
            key_prefix: "custard_UiUi".into(),
        })
        .await
        .expect("connection");
    let record = |by: &User, question: &str, failure: Option<&str>| {
        record(&org, &connection.id, by, question, failure)
    };
    for i in 0..EARLIER {
        let question = format!("Daily stock check number {i}");
        store.record_query(record(&member, &question, None)).await.expect("earlier");
    }
    let mut recent = Vec::new();
    for (by_member, question, failure) in RECENT {
        let by = if by_member { &member } else { &signup.user };
        let q = store.record_query(record(by, question, failure)).await.expect("recent");
        recent.push(q.id);
    }
    Seeded { recent }
}

/// A question about `connection`, answered or failed with `failure`.
fn record(
    org: &OrgId,
    connection: &custard_server::store::ConnectionId,
    by: &User,
    question: &str,
    failure: Option<&str>,
) -> NewQueryRecord {
    let answered = failure.is_none();
    NewQueryRecord {
        org_id: org.clone(),
        connection_id: connection.clone(),
        user_id: by.id.clone(),
        conversation_id: custard_server::store::ConversationId::from(format!("ui-{question}")),
        question: question.to_owned(),
        sql: Some("SELECT count(*) FROM customers".to_owned()).filter(|_| answered),
        outcome: failure.unwrap_or("ok").to_owned(),
        error_message: failure.map(|_| "Custard could not write a query for this.".to_owned()),
        answer: answered.then(|| "There are 42.".to_owned()),
        row_count: answered.then_some(1),
        truncated: false,
        engine: "offline".to_owned(),
        attempts: 1,
        timings_json: r#"{"total_ms":12.5}"#.to_owned(),
        result_json: answered.then(|| r#"{"columns":[],"rows":[],"row_count":1}"#.to_owned()),
        source: custard_server::store::QuerySource::Web,
    }
}

/// The questions the page lists, in order.
async fn listed(browser: &Browser) -> Vec<String> {
    let script = "return Array.from(document.querySelectorAll('.history-entry .history-question'))\
                  .map(function (a) { return a.textContent.trim(); });";
    let value = browser.client().execute(script, vec![]).await.expect("reading the list");
    serde_json::from_value(value).expect("a list of questions")
}

/// The text of the entry of question `id`.
async fn entry_text(browser: &Browser, id: &QueryId) -> String {
    browser.text_of(&format!(".history-entry[data-id='{id}']")).await
}

/// Waits until the list passes `check` (at most [`RENDER_LIMIT`]).
async fn wait_for_list(browser: &Browser, what: &str, check: impl Fn(&[String]) -> bool) {
    let started = std::time::Instant::now();
    loop {
        let got = listed(browser).await;
        if check(&got) {
            return;
        }
        assert!(started.elapsed() < RENDER_LIMIT, "{what}: the list reads {got:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Picks `value` in the `<select>` matching `css`.
async fn choose(browser: &Browser, css: &str, value: &str) {
    let select = browser.client().find(Locator::Css(css)).await.expect(css);
    select.select_by_value(value).await.expect(css);
}

/// Submits the search and filter form and waits for the new page.
async fn show(browser: &Browser) {
    let before = browser.client().current_url().await.expect("url");
    browser.click(".history-filters button[type=submit]").await;
    let started = std::time::Instant::now();
    while browser.client().current_url().await.expect("url") == before {
        assert!(started.elapsed() < RENDER_LIMIT, "the filters were not applied");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    browser.wait_for(".history-filters", RENDER_LIMIT).await;
}

/// Whether the page is wider than the viewport or the list sits in a box
/// that scrolls on its own: `(page overflows, inner scroll boxes)`.
async fn overflow(browser: &Browser) -> (bool, u64) {
    let script = "var d = document.documentElement;\
        var boxes = Array.from(document.querySelectorAll('main *')).filter(function (e) {\
          var s = getComputedStyle(e);\
          return /(auto|scroll)/.test(s.overflowY + s.overflowX) && e.scrollHeight > e.clientHeight + 1\
            && !e.classList.contains('sql-line');\
        }).length;\
        return [d.scrollWidth > d.clientWidth, boxes];";
    let value = browser.client().execute(script, vec![]).await.expect("measuring");
    (value[0].as_bool().expect("a boolean"), value[1].as_u64().expect("a count"))
}

/// Each entry says who asked; search (literal `%`), outcome and person
/// filters narrow the list and survive paging; the list reads well at
/// desktop and phone widths.
#[tokio::test(flavor = "multi_thread")]
async fn history_shows_who_asked_and_search_and_filters_narrow_it() {
    bounded(async {
        let dir = tempfile::tempdir().expect("tempdir");
        let seeded = seed(&dir).await;
        let base = serve(&dir).await;
        let browser = Browser::start().await;
        sign_in_as(&browser, &base, EMAIL, PASSWORD).await;
        browser.wait_for_text(".who", EMAIL, RENDER_LIMIT).await;
        browser.goto(&format!("{base}/history")).await;
        browser.wait_for("#history-list", RENDER_LIMIT).await;

        // Newest first, each with who asked and its outcome.
        let all = listed(&browser).await;
        assert_eq!(all.len(), 50, "a page of 50");
        let newest: Vec<&str> = RECENT.iter().rev().map(|r| r.1).collect();
        assert_eq!(all[..6], newest[..], "the newest first");
        for ((by_member, question, failure), id) in RECENT.iter().zip(&seeded.recent) {
            let text = entry_text(&browser, id).await;
            let who = if *by_member { "Mo Member" } else { "Ui Tester" };
            assert!(text.contains(question) && text.contains(who), "{who} asked: {text}");
            let outcome = if failure.is_some() { "Failed" } else { "Answered" };
            assert!(text.contains(outcome) && text.contains("Shop"), "{text}");
        }
        let (wide, boxes) = overflow(&browser).await;
        assert!(!wide && boxes == 0, "no sideways scrolling, no inner scroll box at 1280 px");
        browser.screenshot("history-desktop").await;
        browser.set_size(900, 900).await;
        let (wide, boxes) = overflow(&browser).await;
        assert!(!wide && boxes == 0, "no sideways scrolling, no inner scroll box at 900 px");
        browser.screenshot("history-tablet").await;
        browser.set_size(390, 844).await;
        let (wide, boxes) = overflow(&browser).await;
        assert!(!wide && boxes == 0, "no sideways scrolling, no inner scroll box at 390 px");
        let height =
            "return document.querySelector('.history-entry').getBoundingClientRect().height;";
        let height = browser.client().execute(height, vec![]).await.expect("measuring");
        assert!(height.as_f64().is_some_and(|h| h < 160.0), "a compact entry: {height} px");
        browser.screenshot("history-phone").await;
        browser.set_size(DESKTOP_SIZE.0, DESKTOP_SIZE.1).await;

        // Search: ASCII case ignored, `%` a plain character.
        browser.fill("#history-q", "CUSTOMERS").await;
        show(&browser).await;
        wait_for_list(&browser, "customers", |got| {
            got == ["Top 5 customers by spend", "How many customers are there?"]
        })
        .await;
        browser.fill("#history-q", "100%").await;
        show(&browser).await;
        wait_for_list(&browser, "100%", |got| got == ["Which products sold 100% of their stock?"])
            .await;
        browser.fill("#history-q", "1%").await;
        show(&browser).await;
        browser.wait_for_text("#history-empty", "No questions match", RENDER_LIMIT).await;

        // Outcome, then person on top of it.
        browser.fill("#history-q", "").await;
        choose(&browser, "#history-outcome", "failed").await;
        show(&browser).await;
        wait_for_list(&browser, "failed", |got| {
            got == [
                "What will the weather be like in Paris tomorrow?",
                "Which products sold 100% of their stock?",
            ]
        })
        .await;
        let mo = "return Array.from(document.querySelectorAll('#history-person option'))\
                  .find(function (o) { return o.textContent.indexOf('Mo Member') === 0; }).value;";
        let mo = browser.client().execute(mo, vec![]).await.expect("Mo's option");
        let mo = mo.as_str().expect("a user id").to_owned();
        choose(&browser, "#history-person", &mo).await;
        show(&browser).await;
        wait_for_list(&browser, "Mo's failed", |got| {
            got == ["What will the weather be like in Paris tomorrow?"]
        })
        .await;

        // Paging keeps the filters: Mo's 54 answered questions span two pages.
        choose(&browser, "#history-outcome", "answered").await;
        show(&browser).await;
        wait_for_list(&browser, "Mo's answered", |got| got.len() == 50).await;
        browser.click(".history-pages a[rel=next]").await;
        wait_for_list(&browser, "Mo's answered, page 2", |got| {
            let expected: Vec<String> =
                (0..4).rev().map(|i| format!("Daily stock check number {i}")).collect();
            got == expected
        })
        .await;
        let url = browser.client().current_url().await.expect("url");
        let query = url.query().unwrap_or_default().to_owned();
        assert!(query.contains("outcome=answered") && query.contains(&mo), "{query}");
        let kept = browser.client().find(Locator::Css("#history-outcome")).await.expect("select");
        assert_eq!(kept.prop("value").await.expect("value").as_deref(), Some("answered"));
        browser.click(".history-pages a[rel=prev]").await;
        wait_for_list(&browser, "Mo's answered, page 1", |got| {
            got.first().map(String::as_str) == Some("Top 5 customers by spend")
        })
        .await;
        browser.close().await;
    })
    .await;
}

/// A member deletes their own question (the list keeps its filters and says
/// so; its page is gone), and sees no delete button on anyone else's.
#[tokio::test(flavor = "multi_thread")]
async fn a_member_deletes_their_own_question_but_not_someone_elses() {
    bounded(async {
        let dir = tempfile::tempdir().expect("tempdir");
        let seeded = seed(&dir).await;
        let base = serve(&dir).await;
        let browser = Browser::start().await;
        sign_in_as(&browser, &base, MEMBER, PASSWORD).await;
        browser.wait_for_text(".who", MEMBER, RENDER_LIMIT).await;
        browser.goto(&format!("{base}/history?q=customers")).await;
        browser.wait_for("#history-list", RENDER_LIMIT).await;

        let (owners, mine) = (&seeded.recent[0], &seeded.recent[3]);
        let delete = |id: &QueryId| format!(".history-entry[data-id='{id}'] .history-delete");
        let source = browser.source().await;
        assert!(source.contains(&format!("/history/{mine}/delete")), "Mo may delete Mo's");
        assert!(!source.contains(&format!("/history/{owners}/delete")), "not the owner's");
        let none = browser.client().find(Locator::Css(&delete(owners))).await;
        assert!(none.is_err(), "no delete control on someone else's question");

        // Deleting asks first (a disclosure, no script), then the list returns as it was.
        browser.click(&format!("{} summary", delete(mine))).await;
        browser.screenshot("history-delete-open-desktop").await;
        browser.click(&format!("{} button[type=submit]", delete(mine))).await;
        browser.wait_for_text("#history-notice", "deleted", RENDER_LIMIT).await;
        wait_for_list(&browser, "after deleting", |got| got == ["How many customers are there?"])
            .await;
        let url = browser.client().current_url().await.expect("url");
        assert_eq!(url.path(), "/history");
        assert!(url.query().unwrap_or_default().contains("q=customers"), "{url}");
        let search = browser.client().find(Locator::Css("#history-q")).await.expect("search");
        assert_eq!(search.prop("value").await.expect("value").as_deref(), Some("customers"));

        browser.goto(&format!("{base}/history/{mine}")).await;
        browser.wait_for_text("main h1", "Not found", RENDER_LIMIT).await;
        browser.goto(&format!("{base}/history/{owners}")).await;
        browser.wait_for_text("main", "How many customers are there?", RENDER_LIMIT).await;
        browser.close().await;
    })
    .await;
}

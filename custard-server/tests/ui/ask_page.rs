//! The Ask page in Chromium, on the demo (offline engine, no model): every
//! card shows its question, failed ones take feedback, a conversation is one
//! thread and the page says follow-ups are not read, example questions the
//! engine answers, asking again from History, and the CSV's file name.

use std::time::Duration;

use custard_testkit::browser::{Browser, DESKTOP_SIZE};
use serde_json::Value;

use super::{RENDER_LIMIT, bounded};
use crate::demo::DemoServer;

/// Questions the offline engine cannot read in the demo shop.
const UNANSWERABLE: [&str; 2] =
    ["What is the revenue growth?", "What will the weather be like tomorrow?"];
/// A question it answers.
const ANSWERABLE: &str = "How many customers are there?";
/// How long one question may take to be answered on a busy machine.
const ANSWER_LIMIT: Duration = Duration::from_secs(30);

/// Types `question` in the box and presses Enter, then waits for the
/// `count`-th card on the page.
async fn ask(browser: &Browser, question: &str, count: usize) {
    let enter: char = fantoccini::key::Key::Enter.into();
    browser.fill("#question", &format!("{question}{enter}")).await;
    wait_for_cards(browser, count).await;
}

/// Waits until the page shows `count` cards (answered or failed) and no
/// question is on its way.
async fn wait_for_cards(browser: &Browser, count: usize) {
    let started = std::time::Instant::now();
    loop {
        let shown = script(
            browser,
            "return [document.querySelectorAll('#answers article').length,
                     document.getElementById('ask-button').disabled];",
        )
        .await;
        if shown[0].as_u64() == Some(count as u64) && shown[1] == Value::Bool(false) {
            return;
        }
        assert!(started.elapsed() < ANSWER_LIMIT, "{count} cards within {ANSWER_LIMIT:?}: {shown}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs `code` in the page and returns what it returns.
async fn script(browser: &Browser, code: &str) -> Value {
    browser.client().execute(code, vec![]).await.unwrap_or_else(|e| panic!("{code}: {e}"))
}

/// The threads on the page, top first: each one's cards as (kind, question),
/// kind `answer` or `error`.
async fn threads(browser: &Browser) -> Vec<Vec<(String, String)>> {
    let found = script(
        browser,
        "return Array.from(document.querySelectorAll('#answers > .thread')).map(t =>
           Array.from(t.querySelectorAll(':scope > article')).map(a => [
             a.classList.contains('answer-error') ? 'error' : 'answer',
             (a.querySelector('h2.question') || {textContent: ''}).textContent.trim()]));",
    )
    .await;
    serde_json::from_value(found).expect("threads of (kind, question) pairs")
}

#[tokio::test(flavor = "multi_thread")]
async fn failed_questions_show_their_question_take_feedback_and_conversations_are_threads() {
    bounded(async {
        let demo = DemoServer::start("ask-failed-cards", &[]).await;
        let browser = Browser::start().await;
        demo.sign_in(&browser).await;

        // Without a model the page says each question stands alone.
        let hint = browser.text_of("#question-hint").await;
        assert!(hint.contains("Each question is answered on its own"), "{hint}");
        assert!(!hint.contains("Follow-up questions continue"), "no follow-up promise: {hint}");

        // Two failures of one conversation: one thread, each card its own question.
        ask(&browser, UNANSWERABLE[0], 1).await;
        ask(&browser, UNANSWERABLE[1], 2).await;
        let error = |q: &str| ("error".to_owned(), q.to_owned());
        assert_eq!(threads(&browser).await, [vec![error(UNANSWERABLE[0]), error(UNANSWERABLE[1])]]);
        let card = browser.text_of("#answers article.answer-error").await;
        let hints = card.matches("Rephrase").count();
        assert_eq!(hints, 1, "the advice is given once: {card}");

        // Feedback on a failed answer is accepted and shown.
        browser.click("#answers article.answer-error .feedback button[value='false']").await;
        browser.wait_for_text("#answers article.answer-error .feedback", "Thanks", RENDER_LIMIT).await;

        // A new conversation is a new thread, on top.
        browser.click("#new-conversation").await;
        ask(&browser, ANSWERABLE, 3).await;
        let answer = ("answer".to_owned(), ANSWERABLE.to_owned());
        assert_eq!(
            threads(&browser).await,
            [vec![answer], vec![error(UNANSWERABLE[0]), error(UNANSWERABLE[1])]]
        );
        let labels = script(
            &browser,
            "return Array.from(document.querySelectorAll('#answers .thread-label'), l => l.textContent);",
        )
        .await;
        assert_eq!(
            labels,
            serde_json::json!(["Current conversation · 1 question", "Earlier conversation · 2 questions"])
        );

        // The Ask page with an answered and a failed question in view.
        script(&browser, "document.getElementById('answers').scrollIntoView();").await;
        browser.screenshot("ask-answers-desktop").await;
        browser.set_size(390, 844).await;
        script(&browser, "document.getElementById('answers').scrollIntoView();").await;
        browser.screenshot("ask-answers-phone").await;
        browser.set_size(DESKTOP_SIZE.0, DESKTOP_SIZE.1).await;

        // The failed question's History page shows the question and the feedback.
        let link = script(
            &browser,
            "return document.querySelector('#answers article.answer-error a[href^=\"/history/\"]').href;",
        )
        .await;
        browser.goto(link.as_str().expect("a link to the history entry")).await;
        let heading = browser.wait_for_text("article h2.question", UNANSWERABLE[0], RENDER_LIMIT).await;
        assert_eq!(heading, UNANSWERABLE[0]);
        let pressed = script(
            &browser,
            "return document.querySelector('.feedback button[value=\"false\"]').getAttribute('aria-pressed');",
        )
        .await;
        assert_eq!(pressed, "true", "the feedback given is shown");
        let links = script(&browser, "return document.querySelectorAll('article a[href^=\"/history/\"]').length;").await;
        assert_eq!(links, 0, "the page links not to itself");
        browser.screenshot("history-detail-failed-desktop").await;
        browser.set_size(390, 844).await;
        browser.screenshot("history-detail-failed-phone").await;
        browser.close().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn example_questions_are_answered_and_the_box_has_focus() {
    bounded(async {
        let demo = DemoServer::start("ask-examples", &[]).await;
        let browser = Browser::start().await;
        demo.sign_in(&browser).await;

        let focused = script(&browser, "return document.activeElement.id;").await;
        assert_eq!(focused, "question", "the question box has focus on load");
        let placeholder =
            script(&browser, "return document.getElementById('question').placeholder;").await;
        assert!(!placeholder.as_str().unwrap_or_default().contains("last month"), "{placeholder}");

        // Examples of the demo's own tables, 3 to 5; each one asked is answered.
        browser.wait_for("#examples button.example", RENDER_LIMIT).await;
        browser.screenshot("ask-examples-desktop").await;
        browser.set_size(390, 844).await;
        browser.screenshot("ask-examples-phone").await;
        browser.set_size(DESKTOP_SIZE.0, DESKTOP_SIZE.1).await;
        let examples = script(
            &browser,
            "return Array.from(document.querySelectorAll('#examples button.example'),
                               b => b.getAttribute('data-question'));",
        )
        .await;
        let examples: Vec<String> = serde_json::from_value(examples).expect("questions");
        assert!((3..=5).contains(&examples.len()), "{examples:?}");
        for (i, example) in examples.iter().enumerate() {
            let button = format!("#examples li:nth-child({}) button.example", i + 1);
            browser.click(&button).await;
            wait_for_cards(&browser, i + 1).await;
            let card = threads(&browser).await.concat().pop().expect("a card");
            assert_eq!(card, ("answer".to_owned(), example.clone()), "{example} is answered");
        }

        // They follow the selected connection: one without an agent has none yet.
        browser.goto(&demo.url("/connections")).await;
        browser.fill("#connection-name", "Warehouse").await;
        browser.click("form[action='/connections'] button[type=submit]").await;
        browser.wait_for_text("main", "Warehouse", RENDER_LIMIT).await;
        browser.goto(&demo.url("/")).await;
        browser.wait_for("#examples button.example", RENDER_LIMIT).await;
        let pick = |name: &str| {
            format!(
                "const s = document.getElementById('connection');
                 s.value = Array.from(s.options).find(o => o.dataset.name === '{name}').value;
                 s.dispatchEvent(new Event('change'));"
            )
        };
        script(&browser, &pick("Warehouse")).await;
        browser.wait_for_text("#examples", "appear once", RENDER_LIMIT).await;
        let buttons =
            script(&browser, "return document.querySelectorAll('button.example').length;");
        assert_eq!(buttons.await, 0, "no examples without a schema");
        script(&browser, &pick("Demo shop")).await;
        browser.wait_for("#examples button.example", RENDER_LIMIT).await;
        browser.close().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn asking_again_leaves_the_box_empty_and_the_csv_is_named_after_the_question() {
    bounded(async {
        let demo = DemoServer::start("ask-again", &[]).await;
        let browser = Browser::start().await;
        demo.sign_in(&browser).await;
        let question = "How many orders per status?";
        ask(&browser, question, 1).await;

        // The CSV is named after the question and the day, in both forms.
        let before = chrono::Utc::now().date_naive();
        let disposition = browser
            .client()
            .execute_async(
                "const done = arguments[arguments.length - 1];\
                 fetch(document.querySelector('#answers a.csv').href)\
                 .then(r => done(r.headers.get('content-disposition')), e => done(String(e)));",
                vec![],
            )
            .await
            .expect("downloading the CSV");
        let after = chrono::Utc::now().date_naive();
        let disposition = disposition.as_str().unwrap_or_default();
        let named = [before, after].iter().any(|day| {
            let name = format!("how-many-orders-per-status-{}.csv", day.format("%Y-%m-%d"));
            disposition == format!("attachment; filename=\"{name}\"; filename*=UTF-8''{name}")
        });
        assert!(named, "{disposition}");

        // The History page of the answer: no link to itself; Ask again answers
        // it on the Ask page and leaves the box empty, as any answer does.
        let id = script(
            &browser,
            "return document.querySelector('#answers article.answer').dataset.answerId;",
        )
        .await;
        let id = id.as_str().expect("the answer's id").to_owned();
        browser.goto(&demo.url(&format!("/history/{id}"))).await;
        browser.wait_for("article.answer", RENDER_LIMIT).await;
        let text = browser.text_of("article.answer").await;
        assert!(!text.contains("Open in History"), "{text}");
        assert!(text.contains(question), "{text}");
        browser.click("form[action$='/rerun'] button[type=submit]").await;
        browser.wait_for("#answers article.answer", ANSWER_LIMIT).await;
        wait_for_cards(&browser, 1).await;
        let value = script(&browser, "return document.getElementById('question').value;").await;
        assert_eq!(value, "", "the box is empty once the answer is shown");
        let card = threads(&browser).await.concat();
        assert_eq!(card, [("answer".to_owned(), question.to_owned())]);
        // A reload then is a fresh Ask page, not the question filled in again.
        browser.client().refresh().await.expect("reload");
        browser.wait_for("#examples button.example", RENDER_LIMIT).await;
        let value = script(&browser, "return document.getElementById('question').value;").await;
        assert_eq!(value, "", "a reload does not fill the question in again");
        browser.close().await;
    })
    .await;
}

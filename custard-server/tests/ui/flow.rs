//! The whole web flow in real headless Chromium, with a real agent binary
//! and PostgreSQL: sign up, verify through the emailed link, sign in, create a
//! connection, start the agent with the key the page showed, watch the status
//! turn online without a reload, ask, see the table and the chart, give
//! feedback, find it in History; and a second organisation sees none of it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use clap::Parser;
use custard_server::config::ServerConfig;
use custard_server::{AppState, app};
use custard_testkit::ReadableDb;
use custard_testkit::bins::workspace_binary;
use custard_testkit::browser::{Browser, DESKTOP_SIZE};
use custard_testkit::fake_openai::{Behaviour, FakeOpenAi};
use custard_testkit::smtp_sink::SmtpSink;

/// The longest the flow may take, browser and agent start included.
const FLOW_LIMIT: Duration = Duration::from_secs(150);
/// How long a page may take to show what the test waits for.
const RENDER_LIMIT: Duration = Duration::from_secs(20);

const PASSWORD: &str = "correct horse battery staple";
/// How long the fake model takes to answer.
const MODEL_DELAY: Duration = Duration::from_millis(1500);
const MODEL: &str = "fake-model-1";
/// What the fake model answers to every question.
const MODEL_SQL: &str = "SELECT status, count(*) AS orders, sum(amount) AS revenue FROM orders GROUP BY status ORDER BY status";

/// The shop's orders: 3 delivered, 2 pending, 4 shipped.
const SHOP_SQL: &str = "
CREATE TABLE orders (id serial PRIMARY KEY, status text NOT NULL, amount numeric(10,2) NOT NULL);
COMMENT ON TABLE orders IS 'Orders placed in the shop';
INSERT INTO orders (status, amount) VALUES
  ('delivered', 10), ('delivered', 20), ('delivered', 30),
  ('pending', 5), ('pending', 7),
  ('shipped', 1), ('shipped', 2), ('shipped', 3), ('shipped', 4);
";

/// The server in process on a loopback port, its public URL set to that port.
struct Server {
    base: String,
    sink: SmtpSink,
    _dir: tempfile::TempDir,
}

impl Server {
    async fn start(model: &FakeOpenAi) -> Server {
        let dir = tempfile::tempdir().expect("tempdir");
        let sink = SmtpSink::start().await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("address"));
        let config = ServerConfig::parse_from([
            "custard-server",
            "--data-dir",
            dir.path().to_str().expect("utf-8"),
            "--public-url",
            &base,
            "--smtp-url",
            &sink.url(),
            "--llm-model",
            MODEL,
            "--llm-base-url",
            &model.base_url(),
        ]);
        let state = AppState::open(config).await.expect("state");
        let service = app(state).into_make_service_with_connect_info::<SocketAddr>();
        tokio::spawn(async move { axum::serve(listener, service).await });
        Server { base, sink, _dir: dir }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The link to `path` in the `count`-th email.
    async fn link_from_email(&self, count: usize, path: &str) -> String {
        let mails = self.sink.wait_for(count, RENDER_LIMIT).await;
        let body = mails.last().expect("an email").body().to_owned();
        let start = body.find(&format!("{path}?token=")).expect("the link in the email");
        let link: String = body[start..].chars().take_while(|c| !c.is_whitespace()).collect();
        self.url(&link)
    }
}

/// The agent binary, with its child process killed when dropped.
struct Agent(#[allow(dead_code, reason = "kills the agent when dropped")] tokio::process::Child);

impl Agent {
    fn start(binary: &PathBuf, env_lines: &str, database_url: &str) -> Agent {
        let mut command = tokio::process::Command::new(binary);
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("CUSTARD_") {
                command.env_remove(&key);
            }
        }
        // The page's env lines, with the database placeholder replaced.
        for line in env_lines.lines().filter(|l| !l.trim().is_empty()) {
            let (key, value) = line.split_once('=').expect("KEY=value lines");
            let value = if key == "CUSTARD_DATABASE_URL" { database_url } else { value };
            command.env(key, value);
        }
        command.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).kill_on_drop(true);
        Agent(command.spawn().expect("starting custard-agent"))
    }
}

/// Signs in through the form and waits for the Ask page.
async fn sign_in(browser: &Browser, server: &Server, email: &str) {
    browser.goto(&server.url("/login")).await;
    browser.fill("#email", email).await;
    browser.fill("#password", PASSWORD).await;
    browser.click("form[action='/login'] button[type=submit]").await;
    browser.wait_for_text(".who", email, RENDER_LIMIT).await;
    assert_eq!(browser.path().await, "/", "signing in lands on the Ask page");
}

async fn sign_out(browser: &Browser) {
    browser.click("form[action='/logout'] button").await;
    browser.wait_for("form[action='/login']", RENDER_LIMIT).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sign_up_to_answer_in_chromium_and_other_organisations_see_nothing() {
    // Built before the clock starts: cargo may wait for the build directory.
    let agent_binary = tokio::task::spawn_blocking(|| workspace_binary("custard-agent"))
        .await
        .expect("building the agent");
    let flow = async {
        // A model that takes a moment, so the progress steps can be seen.
        let reply = Behaviour::reply(format!("```sql\n{MODEL_SQL}\n```"));
        let model = FakeOpenAi::always(Behaviour::delay(MODEL_DELAY, reply)).await;
        let server = Server::start(&model).await;
        let shop = ReadableDb::create("ui").await;
        let (db, reader) = (&shop.db, &shop.reader);
        let admin = db.client().await;
        admin.batch_execute(SHOP_SQL).await.expect("creating the shop");
        admin
            .batch_execute(&format!(
                "GRANT USAGE ON SCHEMA public TO \"{0}\"; GRANT SELECT ON orders TO \"{0}\";",
                reader.name
            ))
            .await
            .expect("granting read access");

        let browser = Browser::start().await;
        assert_eq!(browser.viewport().await, DESKTOP_SIZE);

        // Sign up, then verify with the emailed link.
        let email = "ada@example.com";
        browser.goto(&server.url("/signup")).await;
        browser.fill("#first_name", "Ada").await;
        browser.fill("#last_name", "Lovelace").await;
        browser.fill("#email", email).await;
        browser.fill("#password", PASSWORD).await;
        browser.click("form[action='/signup'] button[type=submit]").await;
        browser.wait_for_text("main h1", "Check your email", RENDER_LIMIT).await;
        let verify = server.link_from_email(1, "/verify-email").await;
        browser.goto(&verify).await;
        browser.wait_for_text("main h1", "verified", RENDER_LIMIT).await;
        sign_in(&browser, &server, email).await;
        assert!(
            browser.text_of("main").await.contains("no connection yet"),
            "a new organisation's Ask page points to creating a connection"
        );

        // Create a connection: its page shows the key and the agent's lines once.
        browser.goto(&server.url("/connections")).await;
        browser.fill("#connection-name", "Analytical Engine").await;
        browser.click("form[action='/connections'] button[type=submit]").await;
        browser.wait_for("#api-key", RENDER_LIMIT).await;
        let key = browser.text_of("#api-key").await;
        assert!(key.starts_with("custard_"), "the API key is shown: {key:?}");
        let env = browser.text_of("#setup-env").await;
        assert!(env.contains(&format!("CUSTARD_API_KEY={key}")), "{env}");
        assert!(browser.text_of("#setup-docker").await.contains("docker run"));
        assert_eq!(browser.text_of("#new-key-status").await, "pending");
        assert!(browser.text_of("#connection-title").await.contains("Analytical Engine"));

        // Start the agent with the page's lines: the status turns online, no reload.
        let marker = "the page was not reloaded";
        browser
            .client()
            .execute("window.__custard_marker = arguments[0];", vec![marker.into()])
            .await
            .expect("marking the page");
        let _agent = Agent::start(&agent_binary, &env, &shop.reader_url());
        browser.wait_for_text("#new-key-status", "online", RENDER_LIMIT).await;
        let page_status = browser.text_of("#connection-title ~ table .status").await;
        assert_eq!(page_status, "online", "the page's badge follows too");
        let still = browser
            .client()
            .execute("return window.__custard_marker;", vec![])
            .await
            .expect("reading the marker");
        assert_eq!(still, marker, "the status changed in the same page");
        let shot = browser.screenshot("flow-connections-desktop").await;
        println!("screenshot: {}", shot.display());

        // Ask with Enter: progress, then the answer card with the table and chart.
        browser.goto(&server.url("/")).await;
        browser.wait_for_text("[data-selected-status]", "online", RENDER_LIMIT).await;
        let question = "How many orders and how much revenue per status?";
        let enter: char = fantoccini::key::Key::Enter.into();
        browser.fill("#question", &format!("{question}{enter}")).await;
        browser.wait_for_text("#steps", "Writing SQL", RENDER_LIMIT).await;
        let shot = browser.screenshot("ask-progress-desktop").await;
        println!("screenshot: {}", shot.display());
        browser.wait_for("#answers article.answer table.result", RENDER_LIMIT).await;
        let table = browser.text_of("#answers table.result").await;
        for expected in ["delivered 3 60.00", "pending 2 12.00", "shipped 4 10.00"] {
            assert!(table.contains(expected), "the table shows {expected:?}: {table}");
        }
        browser.wait_for("#answers figure.chart svg rect", RENDER_LIMIT).await;
        let meta = browser.text_of("#answers .answer .meta").await;
        assert!(meta.contains(MODEL), "the card names the engine: {meta}");
        let sql = browser.source().await;
        assert!(sql.contains("class=\"kw\""), "the SQL is highlighted");
        let shot = browser.screenshot("ask-desktop").await;
        println!("screenshot: {}", shot.display());
        browser.set_size(390, 844).await;
        let shot = browser.screenshot("ask-phone").await;
        println!("screenshot: {}", shot.display());
        browser.set_size(DESKTOP_SIZE.0, DESKTOP_SIZE.1).await;

        // Sorting by a number column puts the biggest count first on the second click.
        browser.click("#answers table.result th:nth-child(2) button").await;
        browser.click("#answers table.result th:nth-child(2) button").await;
        let first = browser.text_of("#answers table.result tbody tr:first-child").await;
        assert!(first.starts_with("shipped"), "sorted by orders, descending: {first}");

        // The CSV link downloads the whole result with the browser's session.
        let csv = browser
            .client()
            .execute_async(
                "const done = arguments[arguments.length - 1];\
                 fetch(document.querySelector('#answers a.csv').href)\
                 .then(r => r.text()).then(done, e => done(String(e)));",
                vec![],
            )
            .await
            .expect("downloading the CSV");
        let csv = csv.as_str().unwrap_or_default();
        assert!(
            csv.starts_with("status,orders,revenue") && csv.contains("delivered,3,60.00"),
            "{csv}"
        );

        // Feedback on the answer.
        browser.click("#answers .feedback button[value='true']").await;
        browser.wait_for_text("#answers .feedback", "Thanks", RENDER_LIMIT).await;

        // A follow-up continues the conversation: the model sees the first question.
        let follow_up = "And only the delivered ones?";
        browser.fill("#question", &format!("{follow_up}{enter}")).await;
        browser.wait_for("#answers article.answer:nth-of-type(2) table.result", RENDER_LIMIT).await;
        let conversations = browser
            .client()
            .execute(
                "return Array.from(document.querySelectorAll('#answers article.answer'))\
                 .map(a => a.getAttribute('data-conversation'));",
                vec![],
            )
            .await
            .expect("reading the cards");
        assert_eq!(conversations[0], conversations[1], "one conversation: {conversations}");
        let said: String = model
            .requests()
            .iter()
            .filter_map(|r| r.body.as_ref())
            .map(|body| body.roles_and_contents().iter().map(|(_, c)| *c).collect::<String>())
            .find(|text| text.contains(follow_up))
            .expect("the follow-up's chat request");
        assert!(said.contains(question), "the follow-up's prompt holds the first question");

        // Both are in History, newest first; the first one shows its feedback.
        browser.goto(&server.url("/history")).await;
        let history = browser.wait_for_text("#history-list", question, RENDER_LIMIT).await;
        assert!(history.contains(follow_up) && history.contains("Answered"), "{history}");
        assert!(!history.contains("Failed"), "both were answered: {history}");
        assert!(history.find(follow_up) < history.find(question), "newest first: {history}");
        browser.click("#history-list li.history-entry:last-child a.history-question").await;
        browser.wait_for("article.answer table.result", RENDER_LIMIT).await;
        let pressed = browser
            .wait_for(".feedback button[value='true']", RENDER_LIMIT)
            .await
            .attr("aria-pressed")
            .await
            .expect("aria-pressed");
        assert_eq!(pressed.as_deref(), Some("true"), "History shows the feedback given");
        let connection_page = browser.source().await;
        let connection_id = connection_page
            .split("data-connection=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .expect("the card names its connection")
            .to_owned();

        // A second organisation sees none of the first's connections or questions.
        sign_out(&browser).await;
        let other = "grace@example.com";
        browser.goto(&server.url("/signup")).await;
        browser.fill("#first_name", "Grace").await;
        browser.fill("#last_name", "Hopper").await;
        browser.fill("#email", other).await;
        browser.fill("#password", PASSWORD).await;
        browser.click("form[action='/signup'] button[type=submit]").await;
        browser.wait_for_text("main h1", "Check your email", RENDER_LIMIT).await;
        browser.goto(&server.link_from_email(2, "/verify-email").await).await;
        browser.wait_for_text("main h1", "verified", RENDER_LIMIT).await;
        sign_in(&browser, &server, other).await;
        for path in ["/", "/connections", "/history"] {
            browser.goto(&server.url(path)).await;
            let page = browser.source().await;
            assert!(
                !page.contains("Analytical Engine"),
                "{path} shows nothing of the first organisation"
            );
            assert!(!page.contains(&connection_id), "{path} holds no id of the first organisation");
        }
        browser.goto(&server.url(&format!("/connections/{connection_id}"))).await;
        let page = browser.source().await;
        assert!(
            page.contains("data-code=\"not_found\"") && !page.contains("Analytical Engine"),
            "{page}"
        );
        browser.close().await;
    };
    tokio::time::timeout(FLOW_LIMIT, flow).await.expect("the flow finished within its time limit");
}

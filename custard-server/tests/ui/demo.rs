//! The demo server (`custard-server --demo`, the binary itself) for page
//! tests: an organisation, a user and the SQLite shop with its in-process
//! agent, answered by the offline engine (no model).

use std::time::{Duration, Instant};

use custard_testkit::browser::Browser;
use custard_testkit::processes::{Process, Scene, free_port, start_server};

/// How long the demo may take to start and print its login.
const START_LIMIT: Duration = Duration::from_secs(30);

/// A running demo server and its login.
pub(crate) struct DemoServer {
    /// `http://127.0.0.1:PORT`.
    pub(crate) base: String,
    /// The demo user's email.
    pub(crate) email: String,
    /// The demo user's password, printed on the console.
    pub(crate) password: String,
    _process: Process,
    _scene: Scene,
}

impl DemoServer {
    /// Starts `custard-server --demo` on a fresh data dir, with `args` added,
    /// and waits until the demo connection's agent is online.
    pub(crate) async fn start(name: &str, args: &[&str]) -> DemoServer {
        let scene = Scene::new(name);
        let address = format!("127.0.0.1:{}", free_port());
        let data_dir = scene.path().join("server-data");
        let binary = std::path::Path::new(env!("CARGO_BIN_EXE_custard-server"));
        let mut all = vec!["--demo"];
        all.extend_from_slice(args);
        let process = start_server(&scene, binary, &address, &data_dir, &all, START_LIMIT).await;
        let deadline = Instant::now() + START_LIMIT;
        let (email, password) = loop {
            let text = process.log_text();
            let field = |name: &str| {
                text.lines().find_map(|l| l.trim().strip_prefix(name).map(|v| v.trim().to_owned()))
            };
            if let (Some(email), Some(password)) = (field("email:"), field("password:")) {
                break (email, password);
            }
            assert!(Instant::now() < deadline, "the demo printed no login within {START_LIMIT:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        DemoServer {
            base: format!("http://{address}"),
            email,
            password,
            _process: process,
            _scene: scene,
        }
    }

    /// The URL of `path` on this server.
    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Signs in through the form and waits for the Ask page.
    pub(crate) async fn sign_in(&self, browser: &Browser) {
        browser.goto(&self.url("/login")).await;
        browser.fill("#email", &self.email).await;
        browser.fill("#password", &self.password).await;
        browser.click("form[action='/login'] button[type=submit]").await;
        browser.wait_for_text(".who", &self.email, Duration::from_secs(15)).await;
    }
}

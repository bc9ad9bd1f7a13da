//! Headless Chromium driven over WebDriver, for end-to-end tests of the web UI.
//!
//! [`Browser::start`] runs a private `chromedriver` on a free loopback port and
//! opens one headless Chromium session through it; [`Browser::client`] is the
//! [`fantoccini`] client for anything the helpers here do not cover. Every
//! helper is bounded in time and panics with a clear message when the browser
//! does not do what the test expects. Dropping the browser quits Chromium and
//! stops chromedriver.
//!
//! Chromium and chromedriver come from Debian's `chromium` and
//! `chromium-driver` packages; `scripts/ensure-chromium.sh` installs them.
//!
//! ```no_run
//! # async fn demo() {
//! use std::time::Duration;
//! use custard_testkit::browser::Browser;
//!
//! let browser = Browser::start().await;
//! browser.goto("http://127.0.0.1:8000/").await;
//! let title = browser.wait_for("h1", Duration::from_secs(10)).await;
//! browser.set_size(390, 844).await;
//! let png = browser.screenshot("home-phone").await;
//! # let _ = (title, png);
//! # }
//! ```

use std::future::Future;
use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{Value, json};
use tokio::process::{Child, Command};

/// The viewport size sessions start with, in CSS pixels.
pub const DESKTOP_SIZE: (u32, u32) = (1280, 900);
/// How long chromedriver may take to answer `/status` after it starts.
const DRIVER_START_LIMIT: Duration = Duration::from_secs(20);
/// How long Chromium may take to start and open the session.
const SESSION_LIMIT: Duration = Duration::from_secs(60);
/// How long any one WebDriver command may take (page loads included).
const COMMAND_LIMIT: Duration = Duration::from_secs(30);
/// How long closing the session may take when the browser is dropped.
const CLOSE_LIMIT: Duration = Duration::from_secs(10);
/// Ports tried before giving up when another process takes the free one first.
const PORT_ATTEMPTS: usize = 3;
/// What to do when the binaries are missing.
const INSTALL_HINT: &str =
    "run scripts/ensure-chromium.sh (Debian packages chromium and chromium-driver)";

/// One headless Chromium session and the chromedriver that serves it.
#[derive(Debug)]
pub struct Browser {
    client: Client,
    driver: Child,
    port: u16,
    /// The WebDriver session, until it is closed.
    session: Option<String>,
}

impl Browser {
    /// Starts chromedriver and opens a headless Chromium session with a viewport of
    /// [`DESKTOP_SIZE`].
    ///
    /// # Panics
    ///
    /// When chromium or chromedriver is not installed, or does not start in time.
    pub async fn start() -> Browser {
        let chromedriver = find_on_path("chromedriver")
            .unwrap_or_else(|| panic!("chromedriver is not on PATH; {INSTALL_HINT}"));
        let chromium = Some(PathBuf::from("/usr/bin/chromium"))
            .filter(|p| p.is_file())
            .or_else(|| find_on_path("chromium"))
            .unwrap_or_else(|| panic!("chromium is not installed; {INSTALL_HINT}"));
        let (driver, port) = start_driver(&chromedriver).await;
        let (width, height) = DESKTOP_SIZE;
        let capabilities = json!({
            "browserName": "chrome",
            "timeouts": {"pageLoad": COMMAND_LIMIT.as_millis(), "script": COMMAND_LIMIT.as_millis()},
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    format!("--window-size={width},{height}"),
                ],
            },
        });
        let Value::Object(capabilities) = capabilities else { unreachable!("an object literal") };
        let connect = async {
            ClientBuilder::new(HttpConnector::new())
                .capabilities(capabilities)
                .connect(&format!("http://127.0.0.1:{port}"))
                .await
        };
        let client = match tokio::time::timeout(SESSION_LIMIT, connect).await {
            Ok(Ok(client)) => client,
            Ok(Err(e)) => panic!(
                "chromedriver could not start {} headless: {e}; {INSTALL_HINT}",
                chromium.display()
            ),
            Err(_) => panic!(
                "{} did not start within {SESSION_LIMIT:?}; {INSTALL_HINT}",
                chromium.display()
            ),
        };
        let mut browser = Browser { client, driver, port, session: None };
        browser.session =
            browser.bounded("reading the session id", browser.client.session_id()).await;
        // `--window-size` is the outer size, which even headless has a frame in.
        browser.set_size(width, height).await;
        browser
    }

    /// The WebDriver client, for what the helpers do not cover.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Opens `url` and waits until it has loaded.
    pub async fn goto(&self, url: &str) {
        self.bounded(&format!("opening {url}"), self.client.goto(url)).await;
    }

    /// Resizes the window so the page's viewport is `width` x `height` CSS pixels.
    pub async fn set_size(&self, width: u32, height: u32) {
        let what = format!("resizing the window to {width}x{height}");
        self.bounded(&what, self.client.set_window_size(width, height)).await;
        // The window includes any browser frame; grow it by the difference once.
        let (inner_width, inner_height) = self.viewport().await;
        if (inner_width, inner_height) != (width, height) {
            let outer_width = (2 * width).saturating_sub(inner_width);
            let outer_height = (2 * height).saturating_sub(inner_height);
            self.bounded(&what, self.client.set_window_size(outer_width, outer_height)).await;
        }
    }

    /// The page's viewport (`innerWidth`, `innerHeight`) in CSS pixels.
    pub async fn viewport(&self) -> (u32, u32) {
        let script = "return [window.innerWidth, window.innerHeight];";
        let size =
            self.bounded("reading the viewport size", self.client.execute(script, vec![])).await;
        let dimension = |i: usize| {
            size[i]
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .unwrap_or_else(|| panic!("the viewport size is not two numbers: {size}"))
        };
        (dimension(0), dimension(1))
    }

    /// Saves a PNG of the viewport as `<target dir>/ui-screenshots/<name>.png`
    /// and returns its path.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        assert!(
            !name.is_empty() && !name.contains(['/', '\\']) && name != "..",
            "a screenshot name is one file name without extension, not {name:?}"
        );
        let png =
            self.bounded(&format!("taking screenshot {name}"), self.client.screenshot()).await;
        let dir = target_dir().join("ui-screenshots");
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        path
    }

    /// The first element matching the CSS selector `css`, once there is one
    /// (waiting at most `timeout`).
    pub async fn wait_for(&self, css: &str, timeout: Duration) -> Element {
        let wait = self.client.wait().at_most(timeout).for_element(Locator::Css(css));
        // A command in flight when the wait runs out may still take its own time.
        match tokio::time::timeout(timeout + COMMAND_LIMIT, wait).await {
            Ok(Ok(element)) => element,
            Ok(Err(e)) => panic!("no element matches {css:?} after {timeout:?}: {e}"),
            Err(_) => panic!("no element matches {css:?} after {timeout:?}: chromedriver hangs"),
        }
    }

    /// The rendered text of the first element matching the CSS selector `css`.
    pub async fn text_of(&self, css: &str) -> String {
        let what = format!("finding {css:?}");
        let element = self.bounded(&what, self.client.find(Locator::Css(css))).await;
        self.bounded(&format!("reading the text of {css:?}"), element.text()).await
    }

    /// Replaces the value of the form field matching `css` with `text`, as typed.
    pub async fn fill(&self, css: &str, text: &str) {
        let what = format!("filling {css:?}");
        let field = self.bounded(&what, self.client.find(Locator::Css(css))).await;
        self.bounded(&what, field.clear()).await;
        self.bounded(&what, field.send_keys(text)).await;
    }

    /// Clicks the first element matching `css`.
    pub async fn click(&self, css: &str) {
        let what = format!("clicking {css:?}");
        let element = self.bounded(&what, self.client.find(Locator::Css(css))).await;
        self.bounded(&what, element.click()).await;
    }

    /// The text of the first element matching `css` once it contains `needle`
    /// (waiting at most `timeout`; the page is not reloaded meanwhile).
    pub async fn wait_for_text(&self, css: &str, needle: &str, timeout: Duration) -> String {
        let started = Instant::now();
        let mut last = String::new();
        while started.elapsed() < timeout {
            if let Ok(Ok(element)) =
                tokio::time::timeout(COMMAND_LIMIT, self.client.find(Locator::Css(css))).await
                && let Ok(Ok(text)) = tokio::time::timeout(COMMAND_LIMIT, element.text()).await
            {
                if text.contains(needle) {
                    return text;
                }
                last = text;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{css:?} did not come to contain {needle:?} within {timeout:?}; it reads {last:?}")
    }

    /// The path of the page the browser shows (`/login`, `/history/...`).
    pub async fn path(&self) -> String {
        let url = self.bounded("reading the URL", self.client.current_url()).await;
        url.path().to_owned()
    }

    /// The page's HTML source.
    pub async fn source(&self) -> String {
        self.bounded("reading the page source", self.client.source()).await
    }

    /// Quits Chromium and stops chromedriver, waiting for both; dropping the
    /// browser does the same without waiting for chromedriver to exit.
    pub async fn close(mut self) {
        if self.session.take().is_some() {
            let close = self.client.clone().close();
            let _ = tokio::time::timeout(CLOSE_LIMIT, close).await;
        }
        let _ = self.driver.start_kill();
        let _ = tokio::time::timeout(CLOSE_LIMIT, self.driver.wait()).await;
    }

    /// Runs one WebDriver command under [`COMMAND_LIMIT`], panicking with `what` when it fails.
    async fn bounded<T, E: std::fmt::Display>(
        &self,
        what: &str,
        command: impl Future<Output = Result<T, E>>,
    ) -> T {
        match tokio::time::timeout(COMMAND_LIMIT, command).await {
            Ok(Ok(value)) => value,
            Ok(Err(e)) => panic!("{what}: {e}"),
            Err(_) => panic!("{what}: no answer within {COMMAND_LIMIT:?}"),
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // A blocking request, not the async client: Drop may run on a runtime
        // that is shutting down, and chromedriver is killed right after.
        if let Some(session) = self.session.take() {
            let _ = http(self.port, "DELETE", &format!("/session/{session}"), CLOSE_LIMIT);
        }
        let _ = self.driver.start_kill();
    }
}

/// Starts chromedriver on a free loopback port and waits until it is ready.
async fn start_driver(chromedriver: &Path) -> (Child, u16) {
    for _ in 0..PORT_ATTEMPTS {
        let port = free_port();
        let mut driver = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}; {INSTALL_HINT}", chromedriver.display()));
        let deadline = Instant::now() + DRIVER_START_LIMIT;
        loop {
            if driver_ready(port).await {
                return (driver, port);
            }
            if let Ok(Some(status)) = driver.try_wait() {
                // Most likely the port was taken meanwhile; try another.
                eprintln!("chromedriver on port {port} exited ({status}); retrying");
                break;
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver did not answer on port {port} within {DRIVER_START_LIMIT:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    panic!(
        "chromedriver exited at start {PORT_ATTEMPTS} times; run {} by hand to see why",
        chromedriver.display()
    )
}

/// Whether chromedriver on `port` answers `/status` with `ready: true`.
async fn driver_ready(port: u16) -> bool {
    let status =
        tokio::task::spawn_blocking(move || http(port, "GET", "/status", Duration::from_secs(2)))
            .await;
    let Ok(Ok(body)) = status else { return false };
    serde_json::from_str::<Value>(&body)
        .is_ok_and(|status| status["value"]["ready"].as_bool() == Some(true))
}

/// One HTTP/1.1 request to chromedriver on `port`: the response body.
fn http(port: u16, method: &str, path: &str, limit: Duration) -> std::io::Result<String> {
    let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut stream = TcpStream::connect_timeout(&address, limit)?;
    stream.set_read_timeout(Some(limit))?;
    stream.set_write_timeout(Some(limit))?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    // chromedriver keeps the connection open despite `Connection: close`: read
    // the head, then exactly `Content-Length` bytes of body.
    let mut response = Vec::new();
    let mut chunk = [0_u8; 4096];
    let body_start = loop {
        if let Some(end) = response.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        let read = stream.read(&mut chunk)?;
        if read == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        response.extend_from_slice(&chunk[..read]);
    };
    let head = String::from_utf8_lossy(&response[..body_start]).to_ascii_lowercase();
    let length = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length:"))
        .and_then(|n| n.trim().parse::<usize>().ok())
        .unwrap_or(0);
    let mut body = response.split_off(body_start);
    while body.len() < length {
        let read = stream.read(&mut chunk)?;
        if read == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..read]);
    }
    body.truncate(length);
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// A loopback port that was free a moment ago.
fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("finding a free loopback port")
}

/// The full path of `program` in a folder of `PATH`, if there is one.
fn find_on_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(program)).find(|p| p.is_file())
}

/// The workspace's target folder: `CARGO_TARGET_DIR`, or three folders up from
/// the running test (`target/debug/deps/ui-xxxx`).
fn target_dir() -> PathBuf {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap_or(Path::new("."));
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR").filter(|d| !d.is_empty()) {
        return workspace.join(dir);
    }
    crate::bins::profile_dir()
        .ok()
        .and_then(|profile| profile.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| workspace.join("target"))
}

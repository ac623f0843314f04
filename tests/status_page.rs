//! The live status page in a real headless Chromium, driven through chromedriver (WebDriver),
//! against the real binary: log in with a token, watch a point go live when ffmpeg pushes and
//! its client count change when a player connects, kick that player, drain the point with the
//! page's button and see a new client refused, then undrain it.
//!
//! Chromium and chromedriver are Debian's `chromium` and `chromium-driver` (`.ci/run` installs
//! them); without them the test fails and says so. A screenshot of the page is saved under
//! `target/status-page/`.

use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use ferrocast_tests::admin::config_with_admin;
use ferrocast_tests::{
    build_dir, free_port, loopback, point_toml, standard_plugin_dir, Encoder, Ferrocast, TsReader,
};
use serde_json::json;

const TOKEN: &str = "status-page-token-0123456789";

/// How long one thing may take to show on the page.
const SHOW: Duration = Duration::from_secs(20);
/// The whole browser session, start to end.
const WHOLE_TEST: Duration = Duration::from_secs(240);

fn config(http: SocketAddr, admin: SocketAddr) -> String {
    config_with_admin(
        http,
        admin,
        &[TOKEN],
        &point_toml("live", "broadcast", "push", &["http"]),
    )
}

/// Where `program` is on the PATH; fails the test, naming the Debian package, if nowhere.
fn required_program(program: &str, package: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!(
                "`{program}` is not installed: the status page is tested in a real headless \
                 Chromium; install the Debian package `{package}` (.ci/run does)"
            )
        })
}

/// chromedriver on a free loopback port, stopped when dropped.
struct ChromeDriver {
    child: Child,
    url: String,
}

impl ChromeDriver {
    fn start() -> Self {
        let program = required_program("chromedriver", "chromium-driver");
        let port = free_port();
        let child = Command::new(program)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let driver = Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        let address = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_err() {
            assert!(
                Instant::now() < deadline,
                "chromedriver did not listen on {address} within 20 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        driver
    }
}

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A headless Chromium session through `driver`.
async fn browser(driver: &ChromeDriver) -> Client {
    let chromium = required_program("chromium", "chromium");
    let capabilities = json!({
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": chromium,
            "args": [
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--window-size=1100,760",
            ],
        },
    });
    let serde_json::Value::Object(capabilities) = capabilities else {
        unreachable!()
    };
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(capabilities)
        .connect(&driver.url)
        .await
        .expect("start a headless Chromium session through chromedriver")
}

/// The page as a person would drive it; every wait is bounded by [`SHOW`].
struct Page {
    client: Client,
}

impl Page {
    /// Wait until the text of the first element matching `css` satisfies `wanted`; the text.
    /// The page redraws its tables every second, so a vanished element is simply looked up
    /// again.
    async fn wait_text(&self, css: &str, what: &str, wanted: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + SHOW;
        let mut last = String::from("(no such element)");
        while Instant::now() < deadline {
            if let Ok(element) = self.client.find(Locator::Css(css)).await {
                if let Ok(text) = element.text().await {
                    if wanted(&text) {
                        return text;
                    }
                    last = text;
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let source = self.client.source().await.unwrap_or_default();
        panic!("the page did not show {what} ({css}) within {SHOW:?}; last text {last:?}; page:\n{source}");
    }

    /// Click the button inside the first element matching `css` whose text is `label`.
    async fn click(&self, css: &str, label: &str) {
        let deadline = Instant::now() + SHOW;
        let mut last = String::new();
        while Instant::now() < deadline {
            match self.try_click(css, label).await {
                Ok(()) => return,
                Err(error) => last = error,
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!("could not click `{label}` in {css} within {SHOW:?}: {last}");
    }

    async fn try_click(&self, css: &str, label: &str) -> Result<(), String> {
        let row = self
            .client
            .find(Locator::Css(css))
            .await
            .map_err(|e| e.to_string())?;
        let button = row
            .find(Locator::Css("button"))
            .await
            .map_err(|e| e.to_string())?;
        let text = button.text().await.map_err(|e| e.to_string())?;
        if text != label {
            return Err(format!("the button says `{text}`"));
        }
        button.click().await.map_err(|e| e.to_string())
    }

    /// The ids of the sessions listed on the page.
    async fn session_ids(&self) -> Vec<String> {
        let Ok(rows) = self
            .client
            .find_all(Locator::Css("#sessions tbody tr"))
            .await
        else {
            return Vec::new();
        };
        let mut ids = Vec::new();
        for row in rows {
            if let Ok(Some(id)) = row.attr("data-session").await {
                ids.push(id);
            }
        }
        ids
    }

    /// Save a screenshot under `target/status-page/`; its path.
    async fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.client.screenshot().await.expect("take a screenshot");
        let dir = build_dir().parent().expect("target/").join("status-page");
        std::fs::create_dir_all(&dir).expect("create target/status-page");
        let path = dir.join(name);
        std::fs::write(&path, png).expect("write the screenshot");
        println!("status page screenshot: {}", path.display());
        path
    }
}

/// A new `GET /live`: its HTTP status once the answer came (bounded).
fn new_client_status(server: &Ferrocast) -> Option<u16> {
    let reader = TsReader::http(server.http, "/live");
    let deadline = Instant::now() + Duration::from_secs(10);
    while reader.status().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    reader.status()
}

#[test]
fn the_status_page_in_chromium_follows_points_and_drives_the_server() {
    // Fail before anything starts if the browser is missing.
    required_program("chromium", "chromium");
    let driver = ChromeDriver::start();
    let plugins = standard_plugin_dir();
    let (http, admin) = (loopback(), loopback());
    let server = Ferrocast::start(&config(http, admin), plugins.path(), http);
    server.wait_for("admin API ready", Duration::from_secs(10));

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let client = browser(&driver).await;
        let page = Page { client };
        let outcome = tokio::time::timeout(WHOLE_TEST, drive(&page, &server, admin)).await;
        let _ = page.client.clone().close().await;
        outcome.unwrap_or_else(|_| {
            panic!(
                "the browser session took longer than {WHOLE_TEST:?}; server log:\n{}",
                server.logs()
            )
        });
    });
}

async fn drive(page: &Page, server: &Ferrocast, admin: SocketAddr) {
    let client = &page.client;
    client
        .goto(&format!("http://{admin}/"))
        .await
        .expect("open the status page");
    // Without a token the page asks for one; a wrong token is refused.
    page.wait_text("#error", "the refusal of no token", |t| {
        t.contains("wrong token")
    })
    .await;
    let token = client.find(Locator::Id("token")).await.unwrap();
    token.send_keys("not-the-token").await.unwrap();
    client
        .find(Locator::Css("#login button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    page.wait_text("#error", "the refusal of a wrong token", |t| {
        t.contains("wrong token")
    })
    .await;
    assert!(!client
        .find(Locator::Id("dashboard"))
        .await
        .unwrap()
        .is_displayed()
        .await
        .unwrap());

    // Log in.
    token.clear().await.unwrap();
    token.send_keys(TOKEN).await.unwrap();
    client
        .find(Locator::Css("#login button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let live_row = "#points tr[data-point=\"live\"]";
    let state = format!("{live_row} td:nth-child(2)");
    page.wait_text(&state, "the point waiting for its source", |t| {
        t == "waiting"
    })
    .await;
    page.wait_text("#version", "the server version", |t| !t.is_empty())
        .await;

    // ffmpeg pushes: the point goes live; the publisher is its one HTTP client.
    let _encoder = Encoder::push(&server.url("live"), 120);
    page.wait_text(&state, "the point live", |t| t == "live")
        .await;
    let clients = format!("{live_row} td.clients");
    page.wait_text(&clients, "the publisher counted", |t| t == "http 1")
        .await;
    let before_player = wait_sessions(page, 1).await;

    // A player connects: the count goes up and its session is listed.
    let player = TsReader::http(server.http, "/live");
    assert!(
        player.wait_bytes(188 * 100, SHOW),
        "the player got no media"
    );
    page.wait_text(&clients, "the player counted", |t| t == "http 2")
        .await;
    let listed = wait_sessions(page, 2).await;
    let player_id = listed
        .iter()
        .find(|id| !before_player.contains(id))
        .expect("the player's session is listed")
        .clone();
    // The player's row shows what it was sent so far.
    page.wait_text(
        &format!("#sessions tr[data-session=\"{player_id}\"] td.sent"),
        "the bytes sent to the player",
        |t| t.ends_with(" kB") || t.ends_with(" MB"),
    )
    .await;
    // The encoder sends about 470 kbit/s; the page graphs and prints the ingest bitrate.
    page.wait_text(
        &format!("{live_row} td.ingest"),
        "the ingest bitrate",
        |t| {
            t.trim()
                .strip_suffix(" kbit/s")
                .and_then(|n| n.parse::<u64>().ok())
                .is_some_and(|kbits| kbits > 100)
        },
    )
    .await;
    page.screenshot("status-page.png").await;

    // Kick the player with its button: it gets the end of its stream, the count goes down.
    page.click(
        &format!("#sessions tr[data-session=\"{player_id}\"]"),
        "kick",
    )
    .await;
    assert!(player.wait_end(SHOW), "the kicked player was not ended");
    page.wait_text(&clients, "the kicked player gone", |t| t == "http 1")
        .await;

    // Drain with the point's button: the page shows it, and a new client is refused.
    page.click(live_row, "drain").await;
    page.wait_text(&state, "the point draining", |t| t == "live (draining)")
        .await;
    assert_eq!(
        new_client_status(server),
        Some(503),
        "a new client of a drained point must be refused"
    );
    page.screenshot("status-page-draining.png").await;

    // Undrain: the button turns back, and a new client plays.
    page.click(live_row, "undrain").await;
    page.wait_text(&state, "the point live again", |t| t == "live")
        .await;
    let admitted = TsReader::http(server.http, "/live");
    assert!(
        admitted.wait_bytes(188 * 10, SHOW),
        "a client after undrain got no media"
    );
    assert_eq!(admitted.status(), Some(200));
}

/// Wait until the page lists `count` sessions; their ids.
async fn wait_sessions(page: &Page, count: usize) -> Vec<String> {
    let deadline = Instant::now() + SHOW;
    loop {
        let ids = page.session_ids().await;
        if ids.len() == count {
            return ids;
        }
        assert!(
            Instant::now() < deadline,
            "the page listed {ids:?}, not {count} sessions, within {SHOW:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

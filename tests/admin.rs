//! The admin HTTP API against the real binary: tokens, every endpoint, kicks, drains and
//! reloads with untouched sessions still playing, and bad input.

use std::io::Write;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use ferrocast_tests::admin::{
    admin_request, config_with_admin, metric_sample, promtool_findings, scrape_metrics,
};
use ferrocast_tests::{
    all_plugins_dir, check_config, ensure_built, ferrocast_binary, loopback, standard_plugin_dir,
    standard_points, wait_until, Encoder, Ferrocast, TsReader,
};
use serde_json::Value;

const TOKEN: &str = "test-token-0123456789";

struct Admin {
    address: SocketAddr,
}

struct Answer {
    status: u16,
    json: Value,
}

impl Admin {
    /// Status and body text of a request.
    fn raw(&self, method: &str, path: &str, token: Option<&str>, body: &str) -> (u16, String) {
        let response = admin_request(self.address, method, path, token, body);
        (response.status, response.body_text())
    }

    fn call(&self, method: &str, path: &str, token: Option<&str>, body: &str) -> Answer {
        let (status, body) = self.raw(method, path, token, body);
        let json = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("{method} {path}: not JSON ({e}): {body}"));
        Answer { status, json }
    }

    fn get(&self, path: &str) -> Answer {
        self.call("GET", path, Some(TOKEN), "")
    }

    fn post(&self, path: &str) -> Answer {
        self.call("POST", path, Some(TOKEN), "")
    }

    /// The ids on `point` once only its encoder's session remains (the readiness probe's
    /// connections close shortly).
    fn publisher_ids(&self, point: &str) -> Vec<u64> {
        assert!(
            wait_until(Duration::from_secs(10), || self.session_ids(point).len()
                == 1),
            "{point} lists more than its publisher"
        );
        self.session_ids(point)
    }

    /// The session on `point` that is not one of `others`.
    fn other_session(&self, point: &str, others: &[u64]) -> u64 {
        *self
            .session_ids(point)
            .iter()
            .find(|id| !others.contains(id))
            .expect("the player is listed")
    }

    fn session_ids(&self, point: &str) -> Vec<u64> {
        let answer = self.get(&format!("/api/v1/sessions?point={point}"));
        assert_eq!(answer.status, 200);
        answer
            .json
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["id"].as_u64().unwrap())
            .collect()
    }
}

fn config(http: SocketAddr, admin: SocketAddr) -> String {
    format!(
        "# The operator's comment stays.\n{}",
        config_with_admin(http, admin, &[TOKEN], &standard_points())
    )
}

/// HTTP and RTSP, with `live` and `vod` on HTTP only.
fn config_with_rtsp(http: SocketAddr, admin: SocketAddr) -> String {
    let rtsp = loopback();
    config(http, admin).replace(
        "[[point]]\nname = \"live\"",
        &format!("[plugins.rtsp]\nlisten = [\"{rtsp}\"]\n\n[[point]]\nname = \"live\""),
    )
}

fn start() -> (Ferrocast, Admin, tempfile::TempDir) {
    let plugins = standard_plugin_dir();
    let (http, admin) = (loopback(), loopback());
    let server = Ferrocast::start(&config(http, admin), plugins.path(), http);
    server.wait_for("admin API ready", Duration::from_secs(10));
    (server, Admin { address: admin }, plugins)
}

#[test]
fn tokens_guard_everything_but_the_probes() {
    let (server, admin, _plugins) = start();
    for path in ["/healthz", "/readyz"] {
        assert_eq!(admin.call("GET", path, None, "").status, 200, "{path}");
    }
    for token in [None, Some("wrong")] {
        let answer = admin.call("GET", "/api/v1/status", token, "");
        assert_eq!(answer.status, 401, "token {token:?}");
        assert!(answer.json["error"].as_str().unwrap().contains("token"));
        assert_eq!(admin.call("POST", "/api/v1/reload", token, "").status, 401);
    }
    let logs = server.logs();
    assert!(logs.contains("ADMIN_UNAUTHORIZED"), "{logs}");
    assert!(!logs.contains("wrong"), "the token must not be logged");

    let status = admin.get("/api/v1/status");
    assert_eq!(status.status, 200);
    assert_eq!(status.json["points"].as_array().unwrap().len(), 2);
    let points = admin.get("/api/v1/points");
    assert_eq!(points.json[0]["name"], "live");
    assert_eq!(points.json[0]["state"], "waiting");
    assert_eq!(points.json[1]["state"], "on-demand");
    let live = admin.get("/api/v1/points/live");
    assert_eq!(live.json["source"], "push");
    assert_eq!(live.json["clients"]["http"], 0);
    let plugins = admin.get("/api/v1/plugins");
    let http = plugins
        .json
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["plugin"] == "http");
    assert_eq!(http.unwrap()["role"], "current");
    assert_eq!(admin.get("/api/v1/sessions").json, Value::Array(vec![]));
    let openapi = admin.get("/api/v1/openapi.json");
    assert_eq!(openapi.json["openapi"], "3.0.3");
    // Every documented GET without parameters answers.
    for (path, operations) in openapi.json["paths"].as_object().unwrap() {
        // The event stream never ends; its own test reads it.
        if operations.get("get").is_some() && !path.contains('{') && path != "/api/v1/events" {
            let (status, body) = admin.raw("GET", path, Some(TOKEN), "");
            assert_eq!(status, 200, "{path}: {body}");
        }
    }
}

#[test]
fn bad_input_gets_a_clear_4xx_and_changes_nothing() {
    let (server, admin, _plugins) = start();
    let unknown = admin.get("/api/v1/points/nope");
    assert_eq!(unknown.status, 404);
    assert_eq!(unknown.json["field"], "name");
    let drain = admin.post("/api/v1/points/nope/drain");
    assert_eq!(drain.status, 404);
    assert!(drain.json["error"].as_str().unwrap().contains("nope"));
    assert_eq!(admin.post("/api/v1/plugins/nope/drain").status, 404);
    let kick = admin.call("DELETE", "/api/v1/sessions/abc", Some(TOKEN), "");
    assert_eq!(
        (kick.status, kick.json["field"].as_str()),
        (400, Some("id"))
    );
    assert_eq!(
        admin
            .call("DELETE", "/api/v1/sessions/999999", Some(TOKEN), "")
            .status,
        404
    );
    assert_eq!(admin.get("/api/v1/nothing-here").status, 404);
    // A reload of a broken file returns the errors and changes nothing.
    let path = server.config_path();
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        text.replace("kind = \"broadcast\"", "kind = \"broadcst\""),
    )
    .unwrap();
    let reload = admin.post("/api/v1/reload");
    assert_eq!(reload.status, 422, "{}", reload.json);
    assert!(
        reload.json["error"].as_str().unwrap().contains("broadcst"),
        "{}",
        reload.json
    );
    std::fs::write(&path, text).unwrap();
    assert_eq!(
        admin.get("/api/v1/points").json.as_array().unwrap().len(),
        2
    );
    let status = admin.get("/api/v1/status");
    assert_eq!(status.json["draining"]["points"], Value::Array(vec![]));
    assert_eq!(status.json["draining"]["plugins"], Value::Array(vec![]));
}

#[test]
fn kick_drain_and_reload_leave_other_sessions_playing() {
    let (server, admin, _plugins) = start();
    let _encoder = Encoder::push_live(&server, 60);
    let publisher = admin.publisher_ids("live");

    let kicked = TsReader::http(server.http, "/live");
    assert!(kicked.wait_bytes(188 * 100, Duration::from_secs(10)));
    let kicked_id = admin.other_session("live", &publisher);
    let kept = TsReader::http(server.http, "/live");
    assert!(kept.wait_bytes(188 * 100, Duration::from_secs(10)));
    assert_eq!(admin.get("/api/v1/points/live").json["clients"]["http"], 3);
    // The encoder sends about 470 kbit/s.
    assert!(wait_until(Duration::from_secs(5), || {
        let live = admin.get("/api/v1/points/live").json;
        live["ingest_bits_per_second"].as_u64().unwrap() > 100_000
            && live["uptime_ms"].as_u64().unwrap() > 0
            && live["state"] == "live"
    }));

    let answer = admin.call(
        "DELETE",
        &format!("/api/v1/sessions/{kicked_id}"),
        Some(TOKEN),
        "",
    );
    assert_eq!(answer.status, 200, "{}", answer.json);
    assert_eq!(answer.json["kicked"], kicked_id);
    assert!(
        kicked.wait_end(Duration::from_secs(10)),
        "the kicked client was not ended"
    );
    assert_eq!(
        kicked.end_reason().as_deref(),
        Some("the server closed the connection")
    );
    assert!(wait_until(Duration::from_secs(5), || !admin
        .session_ids("live")
        .contains(&kicked_id)));

    // Drain: a new client is refused, the playing one goes on; undrain lets clients in.
    assert_eq!(admin.post("/api/v1/points/live/drain").status, 200);
    let refused = TsReader::http(server.http, "/live");
    assert!(wait_until(Duration::from_secs(10), || refused
        .status()
        .is_some()));
    assert_ne!(refused.status(), Some(200), "{:?}", refused.head());
    assert_eq!(admin.post("/api/v1/points/live/undrain").status, 200);
    let admitted = TsReader::http(server.http, "/live");
    assert!(admitted.wait_bytes(188 * 10, Duration::from_secs(10)));
    assert_eq!(admitted.status(), Some(200));

    // A reload through the API returns the plan.
    let path = server.config_path();
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, text.replace("name = \"vod\"", "name = \"vod2\"")).unwrap();
    let reload = admin.post("/api/v1/reload");
    assert_eq!(reload.status, 200, "{}", reload.json);
    assert!(
        reload.json["plan"].as_str().unwrap().contains("vod2"),
        "{}",
        reload.json
    );
    assert_eq!(admin.get("/api/v1/points/vod2").status, 200);

    let before = kept.bytes();
    assert!(kept.wait_bytes(before + 188 * 100, Duration::from_secs(10)));
    assert!(!kept.ended(), "an untouched client was ended");
    assert!(
        kept.continuity_errors().is_empty(),
        "{:?}",
        kept.continuity_errors()
    );
}

#[test]
fn a_non_loopback_admin_listener_needs_a_token() {
    ensure_built();
    let plugins = standard_plugin_dir();
    let output = check_config(
        "[admin]\nlisten = \"0.0.0.0:0\"\n\n[plugins.http]\nlisten = [\"127.0.0.1:0\"]\n",
        plugins.path(),
    );
    let text = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        text.contains("not a loopback address, without a token"),
        "{text}"
    );
}

#[test]
fn a_protocol_toggle_is_written_back_and_survives_a_restart() {
    let plugins = all_plugins_dir();
    let (http, admin_address) = (loopback(), loopback());
    let server = Ferrocast::start(&config_with_rtsp(http, admin_address), plugins.path(), http);
    server.wait_for("admin API ready", Duration::from_secs(10));
    let admin = Admin {
        address: admin_address,
    };
    let _encoder = Encoder::push_live(&server, 60);
    let kept = TsReader::http(server.http, "/live");
    assert!(kept.wait_bytes(188 * 100, Duration::from_secs(10)));
    let path = server.config_path();
    let original = std::fs::read_to_string(&path).unwrap();

    // Bad input changes nothing.
    let put = |point: &str, body: &str| {
        admin.call(
            "PUT",
            &format!("/api/v1/points/{point}/protocols"),
            Some(TOKEN),
            body,
        )
    };
    let malformed = put("live", "{\"protocols\": [");
    assert_eq!(
        (malformed.status, malformed.json["field"].as_str()),
        (400, Some("body"))
    );
    let unknown = put("live", r#"{"protocols": ["http", "nope"]}"#);
    assert_eq!(
        (unknown.status, unknown.json["field"].as_str()),
        (400, Some("protocols"))
    );
    assert!(unknown.json["error"].as_str().unwrap().contains("nope"));
    assert_eq!(put("nope", r#"{"protocols": ["http"]}"#).status, 404);
    let huge = format!(r#"{{"protocols": ["{}"]}}"#, "x".repeat(200_000));
    assert_eq!(put("live", &huge).status, 413);
    let empty = put("live", r#"{"protocols": []}"#);
    assert_eq!(empty.status, 422, "{}", empty.json);
    assert_eq!(std::fs::read_to_string(&path).unwrap(), original);

    // Add RTSP to `live`, take HTTP off `vod`.
    let added = put("live", r#"{"protocols": ["http", "rtsp"]}"#);
    assert_eq!(added.status, 200, "{}", added.json);
    let moved = put("vod", r#"{"protocols": ["rtsp"]}"#);
    assert_eq!(moved.status, 200, "{}", moved.json);
    let written = std::fs::read_to_string(&path).unwrap();
    assert!(
        written.starts_with("# The operator's comment stays.\n"),
        "{written}"
    );
    assert!(
        written.contains("protocols = [\"http\", \"rtsp\"]"),
        "{written}"
    );
    assert_eq!(
        admin.get("/api/v1/points/live").json["protocols"],
        serde_json::json!(["http", "rtsp"])
    );
    // Refused: the answer may come on a connection kept alive, so wait for the head only.
    let vod = TsReader::http(server.http, "/vod");
    assert!(wait_until(Duration::from_secs(10), || vod
        .status()
        .is_some()));
    assert_ne!(vod.status(), Some(200), "{:?}", vod.head());
    let before = kept.bytes();
    assert!(kept.wait_bytes(before + 188 * 100, Duration::from_secs(10)));
    assert!(!kept.ended(), "an untouched client was ended");

    // A restart on the written file keeps the change.
    drop(server);
    let restarted = Ferrocast::start(&written, plugins.path(), http);
    restarted.wait_for("admin API ready", Duration::from_secs(10));
    assert_eq!(
        admin.get("/api/v1/points/vod").json["protocols"],
        serde_json::json!(["rtsp"])
    );
}

#[test]
fn metrics_follow_clients_and_pass_promtool() {
    let plugins = standard_plugin_dir();
    let (http, admin_address) = (loopback(), loopback());
    let text = config(http, admin_address)
        .replace("tokens = [", "metrics_allow = [\"127.0.0.2\"]\ntokens = [");
    let server = Ferrocast::start(&text, plugins.path(), http);
    server.wait_for("admin API ready", Duration::from_secs(10));
    let admin = Admin {
        address: admin_address,
    };
    // 127.0.0.1 is not in the allow-list: a token is needed.
    assert_eq!(admin.raw("GET", "/metrics", None, "").0, 401);
    // A scraper at 127.0.0.2 is listed: no token needed for /metrics, and only for it.
    let from_allowed = |path: &str| {
        let socket =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        socket
            .bind(&SocketAddr::from(([127, 0, 0, 2], 0)).into())
            .unwrap();
        socket.connect(&admin_address.into()).unwrap();
        let mut stream: std::net::TcpStream = socket.into();
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        ferrocast_tests::read_response(&mut stream, 1 << 20, Duration::from_secs(10))
            .unwrap()
            .status
    };
    assert_eq!(from_allowed("/metrics"), 200);
    assert_eq!(from_allowed("/api/v1/status"), 401);
    let scrape = || scrape_metrics(admin_address, Some(TOKEN));
    let before = scrape();
    assert_eq!(promtool_findings(&before), "", "{before}");
    let clients = "ferrocast_clients{point=\"live\",protocol=\"http\"}";
    assert_eq!(metric_sample(&before, clients), Some(0.0), "{before}");
    let waiting = "ferrocast_point_source_state{point=\"live\",state=\"waiting\"}";
    assert_eq!(metric_sample(&before, waiting), Some(1.0), "{before}");
    let lost = "ferrocast_point_source_lost_seconds{point=\"live\"}";
    assert_eq!(metric_sample(&before, lost), Some(0.0), "{before}");

    let _encoder = Encoder::push_live(&server, 60);
    let reader = TsReader::http(server.http, "/live");
    assert!(reader.wait_bytes(188 * 100, Duration::from_secs(10)));
    assert!(wait_until(Duration::from_secs(10), || metric_sample(
        &scrape(),
        clients
    ) == Some(2.0)));
    let during = scrape();
    let live = "ferrocast_point_source_state{point=\"live\",state=\"live\"}";
    assert_eq!(metric_sample(&during, live), Some(1.0), "{during}");
    assert!(
        metric_sample(&during, "ferrocast_first_media_seconds_count").unwrap() >= 1.0,
        "{during}"
    );
    assert_eq!(promtool_findings(&during), "", "{during}");

    // The bytes count grows while the player plays, not only when it ends.
    let sent = "ferrocast_sent_bytes_total{point=\"live\",protocol=\"http\"}";
    let sent_now = || metric_sample(&scrape(), sent).unwrap_or(0.0);
    let received = reader.bytes() as f64;
    let first = sent_now();
    assert!(
        first >= received,
        "{sent} is {first}, the player already received {received}"
    );
    assert!(
        wait_until(Duration::from_secs(10), || sent_now()
            >= first + (188 * 200) as f64),
        "{sent} did not grow past {first} while the player played"
    );
    assert!(!reader.ended(), "the player must still be playing");

    // When the player ends, its bytes stay counted: the total never steps back.
    let playing = sent_now();
    reader.stop();
    drop(reader);
    assert!(wait_until(Duration::from_secs(10), || metric_sample(
        &scrape(),
        clients
    ) == Some(1.0)));
    let ended = sent_now();
    assert!(
        ended >= playing,
        "{sent} went from {playing} back to {ended}"
    );
}

#[test]
fn the_access_log_has_a_line_per_play_and_reopens_on_sigusr2() {
    let plugins = standard_plugin_dir();
    let (http, admin_address) = (loopback(), loopback());
    let text = config(http, admin_address).replace(
        "[plugins.http]",
        "[access_log]\npath = \"{dir}/access.log\"\n\n[plugins.http]",
    );
    let server = Ferrocast::start(&text, plugins.path(), http);
    server.wait_for("access log ready", Duration::from_secs(10));
    let path = server.dir.path().join("access.log");
    let play_once = || {
        let reader = TsReader::http(server.http, "/vod");
        assert!(
            reader.wait_end(Duration::from_secs(20)),
            "the file was not sent"
        );
        reader.bytes()
    };
    let bytes = play_once();
    let lines_of = |path: &std::path::Path| -> Vec<String> {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    };
    assert!(wait_until(Duration::from_secs(5), || lines_of(&path).len() >= 5));
    let lines = lines_of(&path);
    assert_eq!(lines[0], "#Version: 1.0");
    assert!(
        lines[3].starts_with("#Fields: date time c-ip cs-uri-stem"),
        "{lines:?}"
    );
    let fields: Vec<&str> = lines[4].split(' ').collect();
    assert_eq!(fields.len(), 12, "{}", lines[4]);
    assert_eq!(&fields[2..5], ["127.0.0.1", "/vod", "-"]);
    assert!(fields[6].parse::<usize>().unwrap() >= bytes, "{}", lines[4]);
    assert_eq!(
        &fields[8..],
        ["http", "http/1", "vod", "closed"],
        "{}",
        lines[4]
    );

    // logrotate moves the file away, then SIGUSR2 makes the server write a new one.
    let rotated = server.dir.path().join("access.log.old");
    std::fs::rename(&path, &rotated).unwrap();
    server.signal("USR2");
    server.wait_for("reopening the access log", Duration::from_secs(5));
    play_once();
    assert!(wait_until(Duration::from_secs(5), || lines_of(&path).len() == 5));
    assert_eq!(
        lines_of(&rotated).len(),
        5,
        "the rotated file got more lines"
    );
    assert!(lines_of(&path)[4].contains(" /vod "));
}

/// The notifications received on a `NOTIFY_SOCKET`, collected on a thread.
struct NotifySocket {
    path: std::path::PathBuf,
    received: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl NotifySocket {
    fn bind(dir: &std::path::Path) -> Self {
        let path = dir.join("notify.sock");
        let socket = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let received = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = std::sync::Arc::clone(&received);
        std::thread::spawn(move || {
            let mut buffer = [0u8; 4096];
            // Ends with the test process; reads time out, so the loop stays responsive.
            for _ in 0..3000 {
                if let Ok(n) = socket.recv(&mut buffer) {
                    let text = String::from_utf8_lossy(&buffer[..n]).into_owned();
                    sink.lock().unwrap().push(text);
                }
            }
        });
        Self { path, received }
    }

    fn messages(&self) -> Vec<String> {
        self.received.lock().unwrap().clone()
    }

    fn wait_count(&self, message: &str, count: usize) -> bool {
        wait_until(Duration::from_secs(10), || {
            self.messages().iter().filter(|m| *m == message).count() >= count
        })
    }
}

#[test]
fn systemd_is_told_ready_reloading_and_stopping_and_sigterm_ends_sessions_cleanly() {
    ensure_built();
    let plugins = standard_plugin_dir();
    let dir = tempfile::tempdir().unwrap();
    let notify = NotifySocket::bind(dir.path());
    let http = loopback();
    let config = dir.path().join("ferrocast.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nshutdown_timeout_ms = 5000\n\n[plugins.http]\nlisten = [\"{http}\"]\n\n\
             [[point]]\nname = \"live\"\nkind = \"broadcast\"\nsource = \"push\"\nprotocols = [\"http\"]\n"
        ),
    )
    .unwrap();
    let mut child = Command::new(ferrocast_binary())
        .arg("--config")
        .arg(&config)
        .arg("--plugin-dir")
        .arg(plugins.path())
        .env("NOTIFY_SOCKET", &notify.path)
        .env("WATCHDOG_USEC", "200000")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(notify.wait_count("READY=1", 1), "{:?}", notify.messages());
    assert!(
        notify.wait_count("WATCHDOG=1", 2),
        "{:?}",
        notify.messages()
    );

    let _encoder = Encoder::push(&format!("http://{http}/live"), 60);
    ferrocast_tests::wait_until_live(http, "/live", Duration::from_secs(15));
    let player = TsReader::http(http, "/live");
    assert!(player.wait_bytes(188 * 100, Duration::from_secs(10)));

    let pid = child.id().to_string();
    let kill = |signal: &str| {
        let status = Command::new("kill").args([signal, &pid]).status().unwrap();
        assert!(status.success());
    };
    kill("-HUP");
    assert!(
        notify.wait_count("RELOADING=1", 1),
        "{:?}",
        notify.messages()
    );
    assert!(notify.wait_count("READY=1", 2), "{:?}", notify.messages());

    kill("-TERM");
    assert!(
        notify.wait_count("STOPPING=1", 1),
        "{:?}",
        notify.messages()
    );
    assert!(
        player.wait_end(Duration::from_secs(10)),
        "the player was not ended"
    );
    assert_eq!(
        player.end_reason().as_deref(),
        Some("the server closed the connection")
    );
    let status = ferrocast_tests::wait_child(&mut child, Duration::from_secs(10));
    let _ = child.kill();
    assert_eq!(status.map(|s| s.code()), Some(Some(0)), "exit status");
    let order: Vec<String> = notify
        .messages()
        .into_iter()
        .filter(|m| m != "WATCHDOG=1")
        .collect();
    assert_eq!(
        order,
        ["READY=1", "RELOADING=1", "READY=1", "STOPPING=1"],
        "notification order"
    );
}

#[test]
fn version_and_the_effective_configuration() {
    ensure_built();
    let version = Command::new(ferrocast_binary())
        .arg("--version")
        .output()
        .unwrap();
    assert!(version.status.success());
    let text = String::from_utf8(version.stdout).unwrap();
    assert!(text.starts_with("ferrocast 0."), "{text}");

    let plugins = standard_plugin_dir();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ferrocast.toml");
    std::fs::write(
        &path,
        "[admin]\n\n[plugins.http]\nlisten = [\"127.0.0.1:0\"]\n",
    )
    .unwrap();
    let show = Command::new(ferrocast_binary())
        .arg("--config")
        .arg(&path)
        .arg("--plugin-dir")
        .arg(plugins.path())
        .args(["config", "show"])
        .output()
        .unwrap();
    let shown = String::from_utf8(show.stdout).unwrap();
    assert!(show.status.success(), "{shown}");
    for line in [
        "write_timeout_ms = 20000",
        "shutdown_timeout_ms = 5000",
        "listen = \"127.0.0.1:8081\"",
        "enabled = true",
    ] {
        assert!(
            shown.lines().any(|l| l == line),
            "{line} missing from:\n{shown}"
        );
    }
    // What it prints is itself a valid configuration.
    let check = check_config(&shown, plugins.path());
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
}

#[test]
fn the_status_page_and_its_event_stream() {
    use std::io::Read;
    let (_server, admin, _plugins) = start();
    let (status, page) = admin.raw("GET", "/", None, "");
    assert_eq!(status, 200);
    assert!(page.contains("<title>ferrocast status</title>"), "{page}");
    assert!(page.contains("/api/v1/events"), "{page}");
    assert_eq!(admin.raw("GET", "/api/v1/events", None, "").0, 401);

    let mut stream = std::net::TcpStream::connect(admin.address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    write!(
        stream,
        "GET /api/v1/events HTTP/1.1\r\nHost: admin\r\nAuthorization: Bearer {TOKEN}\r\n\r\n"
    )
    .unwrap();
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    let events = |text: &str| text.matches("event: status").count();
    assert!(wait_until(Duration::from_secs(10), || {
        if let Ok(n) = stream.read(&mut buffer) {
            received.extend_from_slice(&buffer[..n]);
        }
        events(&String::from_utf8_lossy(&received)) >= 2
    }));
    let text = String::from_utf8_lossy(&received);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("text/event-stream"), "{text}");
    let data = text
        .lines()
        .find_map(|line| line.strip_prefix("data: "))
        .unwrap();
    let status: Value = serde_json::from_str(data).unwrap();
    assert_eq!(status["points"][0]["name"], "live");
}

#[test]
fn the_session_list_counts_bytes_while_a_client_plays() {
    let (server, admin, _plugins) = start();
    let _encoder = Encoder::push_live(&server, 60);
    let publisher = admin.publisher_ids("live");
    let player = TsReader::http(server.http, "/live");
    assert!(player.wait_bytes(188 * 100, Duration::from_secs(10)));
    let id = admin.other_session("live", &publisher);
    let sent = || -> u64 {
        let sessions = admin.get("/api/v1/sessions?point=live").json;
        let session = sessions
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["id"] == id)
            .cloned()
            .unwrap_or_else(|| panic!("session {id} not listed: {sessions}"));
        session["bytes_sent"]
            .as_u64()
            .unwrap_or_else(|| panic!("no bytes_sent: {session}"))
    };
    // Whatever the player received was sent before the server is asked.
    let received = player.bytes() as u64;
    let first = sent();
    assert!(
        first >= received,
        "listed {first} bytes, the player already received {received}"
    );
    // The count grows while the session plays, not only when it ends.
    assert!(
        wait_until(Duration::from_secs(10), || sent() >= first + 188 * 200),
        "the byte count of a playing session did not grow past {first}"
    );
    assert!(!player.ended(), "the player must still be playing");
}

/// `ferrocast --config <config> <args>` with `FERROCAST_ADMIN_TOKEN` set to `env_token` (or
/// unset): exit code and stdout + stderr.
fn cli(config: &std::path::Path, env_token: Option<&str>, args: &[&str]) -> (Option<i32>, String) {
    let mut command = Command::new(ferrocast_binary());
    command
        .arg("--config")
        .arg(config)
        .args(args)
        .env_remove("FERROCAST_ADMIN_TOKEN")
        .stdin(Stdio::null());
    if let Some(token) = env_token {
        command.env("FERROCAST_ADMIN_TOKEN", token);
    }
    let (tx, rx) = std::sync::mpsc::channel();
    let child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run ferrocast");
    std::thread::spawn(move || tx.send(child.wait_with_output()));
    let output = rx
        .recv_timeout(Duration::from_secs(60))
        .unwrap_or_else(|_| panic!("`ferrocast {}` did not finish in 60 s", args.join(" ")))
        .unwrap();
    (
        output.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    )
}

#[test]
fn control_commands_go_through_the_admin_api_with_a_token() {
    let (server, admin, _plugins) = start();
    // The commands' own configuration: the server's, with a control socket nobody serves, so
    // only the admin API can answer.
    let text = std::fs::read_to_string(server.config_path()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let no_socket = dir.path().join("nobody.sock");
    let config = dir.path().join("cli.toml");
    std::fs::write(
        &config,
        text.replace(
            "[server]\n",
            &format!("[server]\ncontrol_socket = \"{}\"\n", no_socket.display()),
        ),
    )
    .unwrap();

    let (code, output) = cli(&config, None, &["status"]);
    assert_eq!(
        code,
        Some(1),
        "without a token the control socket is used: {output}"
    );
    let (code, output) = cli(&config, None, &["--admin-token", TOKEN, "status"]);
    assert_eq!(code, Some(0), "{output}");
    assert!(output.contains("plugin http generation 1"), "{output}");
    assert!(
        output.lines().any(|l| l.starts_with("point live")),
        "{output}"
    );

    let (code, output) = cli(&config, Some(TOKEN), &["drain", "point", "live"]);
    assert_eq!(code, Some(0), "{output}");
    assert!(output.contains("live"), "{output}");
    let draining = admin.get("/api/v1/status").json["draining"]["points"].clone();
    assert_eq!(draining, serde_json::json!(["live"]));
    let (code, output) = cli(&config, Some(TOKEN), &["undrain", "point", "live"]);
    assert_eq!(code, Some(0), "{output}");
    assert_eq!(
        admin.get("/api/v1/status").json["draining"]["points"],
        serde_json::json!([])
    );
    let (code, output) = cli(&config, Some(TOKEN), &["drain", "plugin", "nope"]);
    assert_eq!(code, Some(1), "{output}");
    assert!(output.contains("nope"), "{output}");

    for args in [&["reload"][..], &["reload", "--plugins-only"]] {
        let (code, output) = cli(&config, Some(TOKEN), args);
        assert_eq!(code, Some(0), "{args:?}: {output}");
    }
    let odd = admin.post("/api/v1/reload?plugins_only=maybe");
    assert_eq!(
        (odd.status, odd.json["field"].as_str()),
        (400, Some("plugins_only")),
        "{}",
        odd.json
    );
    let (code, output) = cli(&config, Some("wrong"), &["status"]);
    assert_eq!(code, Some(1), "{output}");
    assert!(output.contains("refused the token"), "{output}");

    // An admin listener that does not answer: the command says so and uses the control socket.
    let socket = server
        .logs()
        .lines()
        .find_map(|l| l.strip_prefix("control  socket "))
        .expect("the server printed its control socket")
        .trim()
        .to_owned();
    let unreachable = dir.path().join("unreachable.toml");
    std::fs::write(
        &unreachable,
        format!(
            "[server]\ncontrol_socket = \"{socket}\"\n\n[admin]\nlisten = \"{}\"\n",
            loopback()
        ),
    )
    .unwrap();
    let (code, output) = cli(&unreachable, Some(TOKEN), &["status"]);
    assert_eq!(code, Some(0), "{output}");
    assert!(output.contains("using the control socket"), "{output}");
    assert!(output.contains("plugin http generation 1"), "{output}");
}

//! Icecast sources against the real binary: ffmpeg's `icecast://` protocol, in its PUT form
//! (`Expect: 100-continue`, a body until close) and its legacy `SOURCE` form, publishes to a
//! point that an HTTP player then decodes; the stream's Ice name and description show in
//! `ferrocast status` and the admin API; wrong credentials are refused where the point has a
//! publish rule.

use std::io::Read;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferrocast_tests::admin::{admin_request, config_with_admin};
use ferrocast_tests::auth::hash_password;
use ferrocast_tests::*;
use serde_json::Value;

const NAME: &str = "Radio One";
const DESCRIPTION: &str = "Live from the loopback";
const PASSWORD: &str = "pw-of-the-source";
const TOKEN: &str = "icecast-test-token-0123";

/// The server with the admin API and a push point `live`; `publish` is the point's publish
/// rule (a TOML line), if any.
fn start(publish: Option<&str>) -> (Ferrocast, SocketAddr, tempfile::TempDir) {
    let plugins = standard_plugin_dir();
    let (http, admin) = (loopback(), loopback());
    let points = format!(
        "{}{}\n",
        point_toml("live", "broadcast", "push", &["http"]),
        publish.unwrap_or_default(),
    );
    let config = config_with_admin(http, admin, &[TOKEN], &points);
    let server = Ferrocast::start(&config, plugins.path(), http);
    server.wait_for("admin API ready", Duration::from_secs(10));
    (server, admin, plugins)
}

/// ffmpeg as an Icecast source of the sample (looped), killed on drop.
struct Source {
    child: Child,
    /// What ffmpeg printed (errors only).
    errors: Arc<Mutex<String>>,
}

impl Source {
    fn start(server: &Ferrocast, password: &str, legacy: bool) -> Self {
        let url = format!("icecast://source:{password}@{}/live", server.http);
        let mut command = Command::new("ffmpeg");
        command
            .args(["-hide_banner", "-loglevel", "error", "-nostdin", "-re"])
            .args(["-stream_loop", "-1", "-i"])
            .arg(sample_ts())
            .args(["-t", "40", "-c", "copy", "-f", "mpegts"])
            .args(["-content_type", "video/mp2t", "-ice_name", NAME]);
        if legacy {
            command.args(["-legacy_icecast", "1"]);
        } else {
            command.args(["-ice_description", DESCRIPTION]);
        }
        let mut child = command
            .arg(url)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start ffmpeg (is it installed? .ci/run installs it)");
        let errors = Arc::new(Mutex::new(String::new()));
        let mut stderr = child.stderr.take().unwrap();
        let sink = Arc::clone(&errors);
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text);
            sink.lock().unwrap().push_str(&text);
        });
        Self { child, errors }
    }
}

impl Drop for Source {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn admin_point(admin: SocketAddr) -> Value {
    let response = admin_request(admin, "GET", "/api/v1/points/live", Some(TOKEN), "");
    assert_eq!(response.status, 200, "{}", response.body_text());
    serde_json::from_str(&response.body_text()).expect("JSON")
}

/// Publish with ffmpeg (`legacy`: the SOURCE method), check that a player decodes the point
/// and that the source's description is in the status.
fn publishes_and_plays(legacy: bool) {
    let (server, admin, _plugins) = start(None);
    let source = Source::start(&server, PASSWORD, legacy);
    wait_until_live(server.http, "/live", Duration::from_secs(15));
    let decoded = decode(&server.url("live"), &[], Some(3.0));
    decoded.assert_clean(50, "the Icecast source's point");

    let status = server.command(&["status"]);
    let description = if legacy { "" } else { DESCRIPTION };
    let expected = format!("source-name {NAME:?} source-description {description:?}");
    assert!(
        status
            .text
            .lines()
            .any(|line| line.starts_with("point live live ") && line.contains(&expected)),
        "status lacks {expected}:\n{}",
        status.text
    );
    let point = admin_point(admin);
    assert_eq!(point["source_name"], NAME, "{point}");
    let description = if legacy {
        Value::Null
    } else {
        DESCRIPTION.into()
    };
    assert_eq!(point["source_description"], description, "{point}");
    let method = if legacy { "SOURCE" } else { "PUT" };
    server.wait_for(
        &format!("{method} /live: source name \"{NAME}\""),
        Duration::from_secs(5),
    );
    let errors = source.errors.lock().unwrap().clone();
    assert!(errors.trim().is_empty(), "ffmpeg complained: {errors}");
}

#[test]
fn icecast_put_source_publishes_and_a_player_decodes_it() {
    publishes_and_plays(false);
}

#[test]
fn legacy_icecast_source_method_publishes_and_a_player_decodes_it() {
    publishes_and_plays(true);
}

#[test]
fn wrong_source_password_is_refused_where_the_point_has_a_publish_rule() {
    let rule = format!(
        "publish = {{ users = [{{ name = \"source\", password = \"{}\" }}] }}\n",
        hash_password(PASSWORD)
    );
    let (server, _admin, _plugins) = start(Some(&rule));
    for legacy in [false, true] {
        let mut wrong = Source::start(&server, "wrong-pw", legacy);
        let exited = wait_child(&mut wrong.child, Duration::from_secs(15));
        assert!(
            exited.is_some_and(|status| !status.success()),
            "ffmpeg went on with a wrong password (legacy: {legacy})"
        );
        assert_ne!(http_get(server.http, "/live", 188).status, 200);
    }
    server.wait_for_count("PUBLISH_REFUSED", 2, Duration::from_secs(5));
    assert!(server
        .event_lines("PUBLISH_REFUSED")
        .iter()
        .all(|line| line.contains("wrong credentials")));

    let _source = Source::start(&server, PASSWORD, false);
    wait_until_live(server.http, "/live", Duration::from_secs(15));
    decode(&server.url("live"), &[], Some(2.0)).assert_clean(30, "the protected point");
    assert!(
        !server.logs().contains(PASSWORD) && !server.logs().contains("wrong-pw"),
        "a password reached the log"
    );
}

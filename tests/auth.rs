//! Access control against the real server: stream keys and users for encoders, the default
//! loopback rule, allow-lists, signed player URLs over HTTP and RTSP, and the lockout after
//! repeated failures. Secrets never reach the log.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use ferrocast_tests::auth::hash_password;
use ferrocast_tests::*;

const KEY: &str = "k3y-for-the-encoder";
const PASSWORD: &str = "pw-of-enc";
const SIGNING_KEY: &str = "0123456789abcdef0123456789abcdef";

fn basic(user: &str, password: &str) -> String {
    // A tiny base64 encoder: the tests crate has no dependency for it.
    const TABLE: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let input = format!("{user}:{password}");
    let mut out = String::new();
    for chunk in input.as_bytes().chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(TABLE[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    format!("Basic {out}")
}

/// A PUT of a little TS to `target` with `headers`; the response.
fn put(server: &Ferrocast, target: &str, headers: &str) -> Response {
    let body = std::fs::read(sample_ts()).unwrap();
    let body = &body[..188 * 200];
    let mut request = format!(
        "PUT {target} HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n{headers}\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    http_exchange(server.http, &request, 4096, Duration::from_secs(10)).expect("PUT")
}

fn get(server: &Ferrocast, target: &str) -> Response {
    http_get(server.http, target, 188)
}

fn assert_no_secrets(server: &Ferrocast) {
    let logs = server.logs();
    for secret in [KEY, PASSWORD, SIGNING_KEY, "wrong-key", "wrong-pw"] {
        assert!(
            !logs.contains(secret),
            "the log shows a secret ({secret}):\n{logs}"
        );
    }
}

fn protected_live(extra: &str) -> String {
    let publish = format!(
        "publish = {{ keys = [\"{}\"], users = [{{ name = \"enc\", password = \"{}\" }}] }}\n",
        hash_password(KEY),
        hash_password(PASSWORD)
    );
    format!(
        "{extra}\n{}{publish}",
        point_toml("live", "broadcast", "push", &["http"])
    )
}

#[test]
fn encoders_need_the_key_or_a_user_and_players_get_the_stream() {
    let (server, _plugins) = start_with_points(&protected_live(""));
    let missing = put(&server, "/live", "");
    assert_eq!(missing.status, 401, "{}", missing.head);
    assert_eq!(
        missing.header("WWW-Authenticate").as_deref(),
        Some("Basic realm=\"ferrocast\"")
    );
    assert_eq!(put(&server, "/live?key=wrong-key", "").status, 401);
    let wrong_user = format!("Authorization: {}\r\n", basic("enc", "wrong-pw"));
    assert_eq!(put(&server, "/live", &wrong_user).status, 401);
    let bearer = "Authorization: Bearer wrong-key\r\n";
    assert_eq!(put(&server, "/live", bearer).status, 401);

    // A user's Basic credentials publish (the body ends, so the push ends with 200).
    let user = format!("Authorization: {}\r\n", basic("enc", PASSWORD));
    let pushed = put(&server, "/live", &user);
    assert_eq!(pushed.status, 200, "{}", pushed.head);

    // ffmpeg with the key in the URL publishes, and a player decodes the stream.
    let _encoder = Encoder::push(&server.url(&format!("live?key={KEY}")), 30);
    wait_until_live(server.http, "/live", Duration::from_secs(15));
    let decoded = decode(&server.url("live"), &[], Some(3.0));
    decoded.assert_clean(50, "the protected point");

    server.wait_for_count("PUBLISH_REFUSED", 4, Duration::from_secs(5));
    let refused = server.event_lines("PUBLISH_REFUSED");
    assert!(refused.iter().all(|line| line.contains("127.0.0.1")));
    assert!(refused
        .iter()
        .any(|line| line.contains("wrong credentials")));
    assert!(refused.iter().any(|line| line.contains("no credentials")));
    assert_no_secrets(&server);
}

#[test]
fn ffmpeg_publishes_with_basic_credentials_in_its_url() {
    let (server, _plugins) = start_with_points(&protected_live(""));
    let url = format!("http://enc:{PASSWORD}@{}/live", server.http);
    let mut encoder = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-nostdin", "-re"])
        .args([
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=320x240:rate=25",
            "-t",
            "20",
        ])
        .args([
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-g",
            "25",
            "-pix_fmt",
            "yuv420p",
        ])
        .args([
            "-f",
            "mpegts",
            "-method",
            "PUT",
            "-auth_type",
            "basic",
            &url,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start ffmpeg");
    wait_until_live(server.http, "/live", Duration::from_secs(15));
    let _ = encoder.kill();
    let _ = encoder.wait();
    assert!(server.event_lines("PUBLISH_REFUSED").is_empty());
    assert_no_secrets(&server);
}

#[test]
fn this_machine_publishes_by_default_but_not_outside_an_allow_list() {
    let points = format!(
        "{}{}publish = {{ allow = [\"10.0.0.0/8\", \"::1\"] }}\n",
        point_toml("live", "broadcast", "push", &["http"]),
        point_toml("elsewhere", "broadcast", "push", &["http"]),
    );
    let (server, _plugins) = start_with_points(&points);
    assert_eq!(put(&server, "/live", "").status, 200, "loopback by default");
    let refused = put(&server, "/elsewhere", "");
    assert_eq!(refused.status, 403, "{}", refused.head);
    assert!(
        refused.body_text().contains("address"),
        "{}",
        refused.body_text()
    );
    server.wait_for("reason=\"address not allowed\"", Duration::from_secs(5));
}

#[test]
fn open_and_key_rules_from_security_defaults_and_a_reload() {
    let points = point_toml("live", "broadcast", "push", &["http"]);
    let (server, _plugins) =
        start_with_points(&format!("[security]\npublish = \"open\"\n\n{points}"));
    assert_eq!(put(&server, "/live", "").status, 200);
    // Reload with a key required by default: new pushes need it at once.
    let config = std::fs::read_to_string(server.config_path()).unwrap();
    let keyed = config.replace(
        "publish = \"open\"",
        &format!("publish = {{ keys = [\"{}\"] }}", hash_password(KEY)),
    );
    std::fs::write(server.config_path(), keyed).unwrap();
    let reload = server.command(&["reload"]);
    assert_eq!(reload.code, Some(0), "{}", reload.text);
    assert_eq!(put(&server, "/live", "").status, 401);
    assert_eq!(put(&server, &format!("/live?key={KEY}"), "").status, 200);
    assert_no_secrets(&server);
}

fn signed_points() -> String {
    let sample = sample_ts().display().to_string();
    format!(
        "[security]\nurl_signing_key = \"{SIGNING_KEY}\"\n\n{}play = {{ signed = true }}\n{}play = {{ deny = [\"127.0.0.0/8\"] }}\n",
        point_toml("vod", "on-demand", &sample, &["http", "rtsp", "tcp"]),
        point_toml("blocked", "on-demand", &sample, &["http"]),
    )
}

fn sign(server: &Ferrocast, args: &[&str]) -> String {
    let mut all = vec!["sign-url", "--point", "vod"];
    all.extend_from_slice(args);
    let output = server.command(&all);
    assert_eq!(output.code, Some(0), "{}", output.text);
    output.text.trim().to_owned()
}

fn start_signed() -> (Ferrocast, TempDir) {
    let plugins = shipped_plugins_dir(&["http", "rtsp", "tcp"]);
    let http = loopback();
    let rtsp = loopback();
    let config = format!(
        "{}\n[plugins.rtsp]\nlisten = [\"{rtsp}\"]\n\n[plugins.tcp]\n",
        config_with(http, &signed_points())
    );
    let server = Ferrocast::start(&config, plugins.path(), http);
    (server, plugins)
}

fn rtsp_address(server: &Ferrocast) -> String {
    let config = std::fs::read_to_string(server.config_path()).unwrap();
    let rtsp = config.split("[plugins.rtsp]").nth(1).unwrap();
    rtsp.split('"').nth(1).unwrap().to_owned()
}

#[test]
fn signed_urls_admit_players_until_they_expire_over_http() {
    let (server, _plugins) = start_signed();
    let good = sign(&server, &["--expires-in", "1h"]);
    let decoded = decode(&server.url(&format!("vod?{good}")), &[], Some(2.0));
    decoded.assert_clean(25, "a signed URL");
    assert_eq!(get(&server, "/vod").status, 403, "no token");

    let tampered = good.replace("expires=", "expires=9");
    assert_eq!(get(&server, &format!("/vod?{tampered}")).status, 403);
    let bound = sign(&server, &["--ip", "192.0.2.1"]);
    assert_eq!(
        get(&server, &format!("/vod?{bound}")).status,
        403,
        "wrong IP"
    );
    let ours = sign(&server, &["--ip", "127.0.0.1"]);
    assert_eq!(get(&server, &format!("/vod?{ours}")).status, 200);

    let short = sign(&server, &["--expires-in", "0s"]);
    std::thread::sleep(Duration::from_millis(2100));
    let expired = get(&server, &format!("/vod?{short}"));
    assert_eq!(expired.status, 403);
    assert!(
        expired.body_text().contains("expired"),
        "{}",
        expired.body_text()
    );

    let denied = get(&server, "/blocked");
    assert_eq!(denied.status, 403, "a deny list");
    // The log is read as the server writes it: wait for each line.
    for reason in [
        "no token",
        "token invalid",
        "token expired",
        "address not allowed",
    ] {
        server.wait_for(&format!("reason=\"{reason}\""), Duration::from_secs(5));
    }
    assert!(server
        .event_lines("PLAY_REFUSED")
        .iter()
        .all(|line| line.contains("peer=127.0.0.1")));
    assert_no_secrets(&server);
}

#[test]
fn signed_urls_admit_players_over_rtsp() {
    let (server, _plugins) = start_signed();
    let rtsp = rtsp_address(&server);
    let good = sign(&server, &["--expires-in", "1h"]);
    let url = format!("rtsp://{rtsp}/vod?{good}");
    let decoded = decode(&url, &["-rtsp_transport", "tcp"], Some(2.0));
    decoded.assert_clean(25, "a signed RTSP URL");

    let mut client = RtspClient::connect(rtsp.parse().unwrap());
    let refused = client.request("DESCRIBE", &format!("rtsp://{rtsp}/vod"), &[]);
    assert_eq!(refused.status, 403, "{refused:?}");
    let tampered = good.replace("token=", "token=A");
    let refused = client.request("DESCRIBE", &format!("rtsp://{rtsp}/vod?{tampered}"), &[]);
    assert_eq!(refused.status, 403, "{refused:?}");
    assert_no_secrets(&server);
}

#[test]
fn repeated_failures_lock_the_address_out() {
    let extra = "[security]\nmax_failed_attempts = 3\nlockout_ms = 3000\n";
    let (server, _plugins) = start_with_points(&protected_live(extra));
    for _ in 0..3 {
        assert_eq!(put(&server, "/live?key=wrong-key", "").status, 401);
    }
    let limited = put(&server, &format!("/live?key={KEY}"), "");
    assert_eq!(limited.status, 429, "{}", limited.head);
    let retry: u64 = limited.header("Retry-After").unwrap().parse().unwrap();
    assert!((1..=3).contains(&retry), "{retry}");
    std::thread::sleep(Duration::from_millis(3200));
    assert_eq!(put(&server, &format!("/live?key={KEY}"), "").status, 200);
    server.wait_for("reason=\"rate limited\"", Duration::from_secs(5));
    assert_no_secrets(&server);
}

/// A pull source sends the `user:password@` of its URL to the origin as Basic credentials,
/// and the password shows up nowhere in the server's output.
#[test]
fn a_pull_source_authenticates_to_its_origin() {
    use std::io::Read;
    use std::net::TcpListener;

    let origin = TcpListener::bind("127.0.0.1:0").unwrap();
    let origin_address = origin.local_addr().unwrap();
    let (heads, received) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let sample = std::fs::read(sample_ts()).unwrap();
        // Bounded: the first few connections only.
        for stream in origin.incoming().take(3) {
            let Ok(mut stream) = stream else { continue };
            stream
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap_or(0) == 1 {
                head.push(byte[0]);
            }
            let head = String::from_utf8_lossy(&head).into_owned();
            let authorized =
                head.contains(&format!("Authorization: {}\r\n", basic("enc", PASSWORD)));
            let _ = heads.send(head);
            if authorized {
                let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: video/mp2t\r\n\r\n");
                let _ = stream.write_all(&sample[..188 * 2000]);
            } else {
                let _ = stream.write_all(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n");
            }
        }
    });
    let source = format!("http://enc:{PASSWORD}@{origin_address}/live");
    let points = point_toml("relay", "broadcast", &source, &["http"]);
    let (server, _plugins) = start_with_points(&points);
    let head = received
        .recv_timeout(Duration::from_secs(10))
        .expect("the pull connects to the origin");
    assert!(
        head.contains(&format!("Authorization: {}", basic("enc", PASSWORD))),
        "{head}"
    );
    server.wait_for(&format!("{origin_address}"), Duration::from_secs(5));
    let status = server.command(&["status"]);
    assert!(!status.text.contains(PASSWORD), "{}", status.text);
    assert_no_secrets(&server);
}

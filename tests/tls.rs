//! TLS terminated by the host, against the real binary and real clients: curl and ffmpeg play
//! and push over HTTPS, ffmpeg plays RTSPS, raw TS over TLS, the admin API over HTTPS; SNI picks
//! the certificate; certificates reload under a playing client and a bad one is refused; plain
//! text and silent clients on a TLS port are closed; an encoder publishes over RTMPS. The CA and
//! certificates are made at test time.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ferrocast_tests::admin::scrape_metrics;
use ferrocast_tests::*;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};

/// A test certificate authority that issues server certificates into a directory.
struct Pki {
    dir: tempfile::TempDir,
    ca: rcgen::Certificate,
    ca_key: KeyPair,
}

impl Pki {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "ferrocast test CA");
        let ca_key = KeyPair::generate().expect("CA key");
        let ca = params.self_signed(&ca_key).expect("CA certificate");
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).expect("write CA");
        Self { dir, ca, ca_key }
    }

    fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }

    /// Issue a certificate for `names` with common name `label` into `<stem>.pem` and
    /// `<stem>.key`; `expired` makes one that ended in 2020.
    fn issue(&self, stem: &str, label: &str, names: &[&str], expired: bool) -> (PathBuf, PathBuf) {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("server params");
        if expired {
            params.not_before = rcgen::date_time_ymd(2019, 1, 1);
            params.not_after = rcgen::date_time_ymd(2020, 1, 1);
        }
        self.issue_with(params, stem, label, names)
    }

    fn issue_with(
        &self,
        mut params: CertificateParams,
        stem: &str,
        label: &str,
        names: &[&str],
    ) -> (PathBuf, PathBuf) {
        let names: Vec<String> = names.iter().map(|name| name.to_string()).collect();
        params.subject_alt_names = CertificateParams::new(names)
            .expect("server names")
            .subject_alt_names;
        params.distinguished_name.push(DnType::CommonName, label);
        let key = KeyPair::generate().expect("server key");
        let cert = params
            .signed_by(&key, &self.ca, &self.ca_key)
            .expect("sign server certificate");
        let (cert_path, key_path) = (
            self.path(&format!("{stem}.pem")),
            self.path(&format!("{stem}.key")),
        );
        std::fs::write(&cert_path, cert.pem()).expect("write certificate");
        std::fs::write(&key_path, key.serialize_pem()).expect("write key");
        (cert_path, key_path)
    }
}

/// The subject line `openssl s_client` shows for a handshake with `server_name`, or its output
/// when the handshake failed.
fn presented_subject(address: SocketAddr, server_name: &str, ca: &Path) -> String {
    let output = Command::new("timeout")
        .args([
            "10",
            "openssl",
            "s_client",
            "-connect",
            &address.to_string(),
        ])
        .args(["-servername", server_name, "-CAfile"])
        .arg(ca)
        .stdin(Stdio::null())
        .output()
        .expect("run openssl s_client");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.lines()
        .find(|line| line.starts_with("subject="))
        .map(str::to_owned)
        .unwrap_or_else(|| {
            format!(
                "no subject; output: {text}{}",
                String::from_utf8_lossy(&output.stderr)
            )
        })
}

/// `body` cut before the last video PES that starts in it, so a capture ended by killing the
/// client holds no truncated frame (which would decode with errors).
fn whole_frames(body: &[u8]) -> &[u8] {
    let packets = body.len() / 188;
    let last_video_start = (0..packets).rev().find(|&index| {
        let packet = &body[index * 188..(index + 1) * 188];
        let starts_unit = packet[0] == 0x47 && packet[1] & 0x40 != 0;
        let payload_at = match packet[3] & 0x30 {
            0x10 => 4,
            0x30 => 5 + packet[4] as usize,
            _ => return false,
        };
        starts_unit && packet.get(payload_at..payload_at + 4) == Some(&[0, 0, 1, 0xE0][..])
    });
    &body[..last_video_start.unwrap_or(packets) * 188]
}

/// Send `request` over TLS (verified against `ca`) and collect the answer for two seconds.
fn tls_exchange(address: SocketAddr, ca: &Path, request: &[u8]) -> Vec<u8> {
    let mut client = Command::new("openssl")
        .args([
            "s_client",
            "-quiet",
            "-verify_return_error",
            "-connect",
            &address.to_string(),
        ])
        .arg("-CAfile")
        .arg(ca)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start openssl s_client");
    client
        .stdin
        .as_mut()
        .unwrap()
        .write_all(request)
        .expect("send the request");
    let mut stdout = client.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut answer = Vec::new();
        let _ = stdout.read_to_end(&mut answer);
        answer
    });
    std::thread::sleep(Duration::from_secs(2));
    let _ = client.kill();
    let _ = client.wait();
    reader.join().unwrap()
}

/// The ALPN protocol a handshake offering `http/1.1` negotiates, or "none".
fn negotiated_alpn(address: SocketAddr) -> String {
    let output = Command::new("timeout")
        .args(["10", "openssl", "s_client", "-alpn", "http/1.1", "-connect"])
        .arg(address.to_string())
        .stdin(Stdio::null())
        .output()
        .expect("run openssl s_client");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    if text.contains("No ALPN negotiated") {
        return "none".to_owned();
    }
    text.lines()
        .find_map(|line| line.strip_prefix("ALPN protocol: "))
        .map(str::to_owned)
        .unwrap_or_else(|| format!("no ALPN line in: {text}"))
}

fn curl(ca: &Path) -> Command {
    let mut command = Command::new("curl");
    command.args(["-sS", "--cacert"]).arg(ca);
    command
}

/// `curl` reading `url` into a file for `seconds`; returns the bytes and curl's stderr.
fn curl_capture(ca: &Path, url: &str, seconds: u32, dir: &Path) -> (Vec<u8>, String) {
    let file = dir.join("curl-capture.ts");
    let output = curl(ca)
        .args(["--max-time", &seconds.to_string(), "-o"])
        .arg(&file)
        .arg(url)
        .output()
        .expect("run curl");
    let body = std::fs::read(&file).unwrap_or_default();
    (body, String::from_utf8_lossy(&output.stderr).into_owned())
}

fn tls_table(name: &str, cert: &Path, key: &Path, extra: &str) -> String {
    format!(
        "[tls.{name}]\ncert = \"{}\"\nkey = \"{}\"\nhandshake_timeout_ms = 1500\n{extra}\n",
        cert.display(),
        key.display()
    )
}

/// A server with HTTP on `plain` and `https` (TLS "main"), and the standard points.
fn https_server(pki: &Pki, extra: &str) -> (Ferrocast, tempfile::TempDir, SocketAddr) {
    let (cert, key) = pki.issue("main", "first", &["localhost", "127.0.0.1"], false);
    let plugins = standard_plugin_dir();
    let (plain, https) = (loopback(), loopback());
    let config = format!(
        "[server]\nwrite_timeout_ms = 5000\n\n{}\n[plugins.http]\nlisten = [\"{plain}\", {{ address = \"{https}\", tls = \"main\" }}]\n\n{}\n{extra}",
        tls_table("main", &cert, &key, ""),
        standard_points()
    );
    let server = Ferrocast::start(&config, plugins.path(), plain);
    server.wait_for(&format!("listening on {https}"), Duration::from_secs(10));
    (server, plugins, https)
}

#[test]
fn curl_and_ffmpeg_play_and_push_over_https() {
    let pki = Pki::new();
    let (server, _plugins, https) = https_server(&pki, "");
    let ca = pki.ca_file();

    // On-demand, decoded by ffmpeg verifying the chain against the test CA.
    let ca_text = ca.display().to_string();
    let verify = ["-tls_verify", "1", "-ca_file", ca_text.as_str()];
    let vod = decode(
        &format!("https://127.0.0.1:{}/vod", https.port()),
        &verify,
        None,
    );
    assert!(
        vod.status.success(),
        "ffmpeg over https failed: {}",
        vod.errors
    );
    vod.assert_clean(300, "ffmpeg playing on-demand over https");

    // An ffmpeg encoder pushing over HTTPS, ffmpeg playing live over HTTPS.
    let push_url = format!("https://127.0.0.1:{}/live", https.port());
    let encoder = Encoder::push(&push_url, 30);
    wait_until_live(server.http, "/live", Duration::from_secs(15));
    let live = decode(&push_url, &verify, Some(3.0));
    assert!(
        live.status.success() && live.errors.trim().is_empty(),
        "ffmpeg live over https failed: {}\nserver: {}",
        live.errors,
        server.logs()
    );
    live.assert_clean(50, "ffmpeg playing live over https");
    drop(encoder);
    // The point takes a new encoder once the old one's connection is gone.
    std::thread::sleep(Duration::from_secs(1));

    // curl pushes the sample over HTTPS; curl plays it back live over HTTPS.
    let mut pusher = curl(&ca)
        .args(["--limit-rate", "200k", "-T"])
        .arg(sample_ts())
        .arg(&push_url)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start curl push");
    wait_until_live(server.http, "/live", Duration::from_secs(15));
    let (body, errors) = curl_capture(&ca, &push_url, 4, server.dir.path());
    let _ = pusher.kill();
    let _ = pusher.wait();
    assert!(
        body.len() > 50_000,
        "curl played {} bytes over https: {errors}",
        body.len()
    );
    assert_decodes(server.dir.path(), whole_frames(&body), 20);
}

#[test]
fn rtsps_raw_ts_and_websocket_over_tls_and_the_admin_api_over_https() {
    let pki = Pki::new();
    let (cert, key) = pki.issue("main", "first", &["localhost", "127.0.0.1"], false);
    let plugins = shipped_plugins_dir(&["http", "rtsp", "tcp", "ws"]);
    let (http, rtsps, ts, admin) = (loopback(), loopback(), loopback(), loopback());
    let wss = loopback();
    let points = standard_points().replace(
        "protocols = [\"http\"]",
        "protocols = [\"http\", \"rtsp\", \"tcp\", \"ws\"]",
    );
    let config = format!(
        "{}\n{}\n[plugins.ws]\nlisten = [{{ address = \"{wss}\", tls = \"main\" }}]\n\n[plugins.rtsp]\nlisten = [{{ address = \"{rtsps}\", tls = \"main\" }}]\n\n[plugins.tcp]\nlisten = [{{ address = \"{ts}\", tls = \"main\" }}]\nserve = {{ \"{}\" = \"vod\" }}\n\n[admin]\nlisten = \"{admin}\"\ntls = \"main\"\n",
        config_with(http, &points),
        tls_table("main", &cert, &key, ""),
        ts.port()
    );
    let server = Ferrocast::start(&config, plugins.path(), http);
    server.wait_for(&format!("listening on {ts}"), Duration::from_secs(10));
    server.wait_for("admin API ready", Duration::from_secs(10));

    let rtsp = decode(
        &format!("rtsps://127.0.0.1:{}/vod", rtsps.port()),
        &["-rtsp_transport", "tcp"],
        Some(4.0),
    );
    assert!(
        rtsp.status.success(),
        "ffmpeg over rtsps failed: {}",
        rtsp.errors
    );
    rtsp.assert_clean(80, "ffmpeg playing rtsps");

    // The plugin learns that its connection is secure: the Content-Base it gives back is
    // rtsps:// even for a client that wrote rtsp://.
    let describe = tls_exchange(
        rtsps,
        &pki.ca_file(),
        format!(
            "DESCRIBE rtsp://127.0.0.1:{}/vod RTSP/1.0\r\nCSeq: 2\r\n\r\n",
            rtsps.port()
        )
        .as_bytes(),
    );
    let describe = String::from_utf8_lossy(&describe);
    assert!(
        describe.contains(&format!(
            "Content-Base: rtsps://127.0.0.1:{}/vod/",
            rtsps.port()
        )),
        "{describe}"
    );

    // WebSocket over TLS: the upgrade is answered inside TLS, the listener offers http/1.1.
    let upgrade = tls_exchange(
        wss,
        &pki.ca_file(),
        b"GET /vod HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    );
    let upgrade = String::from_utf8_lossy(&upgrade[..upgrade.len().min(200)]).into_owned();
    assert!(upgrade.starts_with("HTTP/1.1 101"), "{upgrade}");
    assert_eq!(negotiated_alpn(wss), "http/1.1");
    assert_eq!(negotiated_alpn(admin), "http/1.1");
    assert_eq!(negotiated_alpn(rtsps), "none", "no ALPN on RTSP");

    // Raw TS over TLS: openssl s_client verifies the chain and writes the decrypted stream.
    let mut client = Command::new("openssl")
        .args([
            "s_client",
            "-quiet",
            "-verify_return_error",
            "-connect",
            &ts.to_string(),
        ])
        .arg("-CAfile")
        .arg(pki.ca_file())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start openssl s_client");
    let mut body = Vec::new();
    let mut stdout = client.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let _ = stdout.read_to_end(&mut body);
        body
    });
    std::thread::sleep(Duration::from_secs(3));
    let _ = client.kill();
    let _ = client.wait();
    let body = reader.join().unwrap();
    assert!(
        body.len() > 100_000,
        "raw TS over TLS: {} bytes",
        body.len()
    );
    assert_decodes(server.dir.path(), whole_frames(&body), 100);

    let health = curl(&pki.ca_file())
        .arg(format!("https://127.0.0.1:{}/healthz", admin.port()))
        .output()
        .expect("run curl");
    assert!(
        health.status.success(),
        "admin over https: {}",
        String::from_utf8_lossy(&health.stderr)
    );
    let points = curl(&pki.ca_file())
        .arg(format!("https://127.0.0.1:{}/api/v1/points", admin.port()))
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&points.stdout);
    assert!(text.contains("\"vod\""), "admin points over https: {text}");
}

#[test]
fn sni_picks_the_certificate_of_the_name_asked_for() {
    let pki = Pki::new();
    let (alpha_cert, alpha_key) = pki.issue("alpha", "alpha-cert", &["alpha.test"], false);
    let (beta_cert, beta_key) = pki.issue("beta", "beta-cert", &["*.beta.test"], false);
    let plugins = standard_plugin_dir();
    let (plain, https) = (loopback(), loopback());
    let sni = format!(
        "sni = [{{ cert = \"{}\", key = \"{}\" }}]",
        beta_cert.display(),
        beta_key.display()
    );
    let config = format!(
        "{}\n[plugins.http]\nlisten = [\"{plain}\", {{ address = \"{https}\", tls = \"main\" }}]\n\n{}",
        tls_table("main", &alpha_cert, &alpha_key, &sni),
        standard_points()
    );
    let server = Ferrocast::start(&config, plugins.path(), plain);
    server.wait_for(&format!("listening on {https}"), Duration::from_secs(10));
    let ca = pki.ca_file();
    let alpha = presented_subject(https, "alpha.test", &ca);
    let beta = presented_subject(https, "www.beta.test", &ca);
    let unknown = presented_subject(https, "other.test", &ca);
    assert!(alpha.contains("alpha-cert"), "{alpha}");
    assert!(beta.contains("beta-cert"), "{beta}");
    assert!(
        unknown.contains("alpha-cert"),
        "the default for other names: {unknown}"
    );
}

/// Read from `child`'s output file until it grows past `size`, within `timeout`.
fn grows_past(file: &Path, size: u64, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if std::fs::metadata(file).map(|m| m.len()).unwrap_or(0) > size {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

fn file_len(file: &Path) -> u64 {
    std::fs::metadata(file).map(|m| m.len()).unwrap_or(0)
}

#[test]
fn replaced_certificates_serve_new_handshakes_while_old_clients_play_and_bad_ones_are_refused() {
    let pki = Pki::new();
    let (server, _plugins, https) = https_server(&pki, "");
    let ca = pki.ca_file();
    let _encoder = Encoder::push_live(&server, 60);
    assert!(presented_subject(https, "localhost", &ca).contains("first"));

    // A client playing over HTTPS for the whole test.
    let capture = server.dir.path().join("playing.ts");
    let mut player: Child = curl(&ca)
        .args(["--max-time", "40", "-o"])
        .arg(&capture)
        .arg(format!("https://127.0.0.1:{}/live", https.port()))
        .stderr(Stdio::null())
        .spawn()
        .expect("start curl player");
    assert!(
        grows_past(&capture, 20_000, Duration::from_secs(10)),
        "the player got nothing"
    );

    // Renewal: new files written over the old ones; the file watch reloads them.
    pki.issue("main", "second", &["localhost", "127.0.0.1"], false);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut subject = String::new();
    while Instant::now() < deadline {
        subject = presented_subject(https, "localhost", &ca);
        if subject.contains("second") {
            break;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(
        subject.contains("second"),
        "new handshakes present the new certificate: {subject}\n{}",
        server.logs()
    );
    std::thread::sleep(Duration::from_secs(2));
    let before = file_len(&capture);
    assert!(
        grows_past(&capture, before + 100_000, Duration::from_secs(10)),
        "the old client stopped playing"
    );

    // A key that does not match its certificate is refused, naming the file; the previous
    // certificate keeps serving.
    let (_, other_key) = pki.issue("other", "other", &["localhost"], false);
    std::fs::copy(&other_key, pki.path("main.key")).expect("swap in a wrong key");
    let reload = server.command(&["reload"]);
    assert_ne!(
        reload.code,
        Some(0),
        "a reload with a bad certificate reports it: {}",
        reload.text
    );
    assert!(reload.text.contains("main.key"), "{}", reload.text);
    let refused = server.event_lines("TLS_CERT_REFUSED");
    assert!(
        refused.iter().any(|line| line.contains("main.key")),
        "{}",
        server.logs()
    );
    assert!(presented_subject(https, "localhost", &ca).contains("second"));

    // An expired certificate is refused too.
    pki.issue("main", "expired", &["localhost", "127.0.0.1"], true);
    let reload = server.command(&["reload"]);
    assert!(reload.text.contains("expired"), "{}", reload.text);
    assert!(presented_subject(https, "localhost", &ca).contains("second"));

    std::thread::sleep(Duration::from_secs(2));
    let before = file_len(&capture);
    assert!(
        grows_past(&capture, before + 100_000, Duration::from_secs(10)),
        "the old client stopped playing"
    );
    let _ = player.kill();
    let _ = player.wait();
    let body = std::fs::read(&capture).unwrap();
    assert_decodes(server.dir.path(), whole_frames(&body), 150);
}

#[test]
fn plain_text_and_silent_clients_on_a_tls_port_are_closed_cleanly() {
    let pki = Pki::new();
    let (server, _plugins, https) = https_server(&pki, "");

    let mut plain = TcpStream::connect(https).expect("connect");
    plain
        .write_all(b"GET /vod HTTP/1.1\r\nHost: t\r\n\r\n")
        .expect("send plain text");
    plain
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut buffer = [0u8; 64];
    let read = plain.read(&mut buffer);
    assert!(
        matches!(read, Ok(0)),
        "plain text must get a clean close (end of stream), got {read:?}"
    );
    server.wait_for("TLS_PLAINTEXT_REFUSED", Duration::from_secs(5));

    // Connect and say nothing: closed at the handshake timeout (1.5 s here).
    let started = Instant::now();
    let mut silent = TcpStream::connect(https).expect("connect");
    silent
        .set_read_timeout(Some(Duration::from_secs(8)))
        .unwrap();
    let read = silent.read(&mut buffer);
    assert!(
        matches!(read, Ok(0)),
        "a silent client is closed, got {read:?}"
    );
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(1000) && waited < Duration::from_secs(6),
        "closed after {waited:?}"
    );
    server.wait_for("TLS_HANDSHAKE_FAILED", Duration::from_secs(5));

    // The port still serves TLS afterwards.
    let (body, errors) = curl_capture(
        &pki.ca_file(),
        &format!("https://127.0.0.1:{}/vod", https.port()),
        5,
        server.dir.path(),
    );
    assert!(body.len() > 100_000, "{errors}");
}

#[test]
fn a_listen_entry_naming_a_missing_tls_table_is_a_config_error_with_its_line() {
    let plugins = standard_plugin_dir();
    let https = loopback();
    let config = format!(
        "[plugins.http]\nlisten = [\n  {{ address = \"{https}\", tls = \"nope\" }},\n]\n\n{}",
        standard_points()
    );
    let mut server = Ferrocast::spawn(&config, plugins.path(), https);
    let status = server.wait_exit(Duration::from_secs(20));
    assert!(!status.success());
    let logs = server.logs();
    assert!(
        logs.contains(":3:") && logs.contains("[tls.nope]"),
        "{logs}"
    );
}

/// The UTC date `days` from now, as (year, month, day), from `date`.
fn date_in(days: u32) -> (i32, u8, u8) {
    let output = Command::new("date")
        .args(["-u", "-d", &format!("+{days} days"), "+%Y %m %d"])
        .output()
        .expect("run date");
    let text = String::from_utf8_lossy(&output.stdout);
    let parts: Vec<&str> = text.split_whitespace().collect();
    (
        parts[0].parse().unwrap(),
        parts[1].parse().unwrap(),
        parts[2].parse().unwrap(),
    )
}

#[test]
fn a_certificate_close_to_expiry_is_warned_about_and_measured() {
    let pki = Pki::new();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    let (year, month, day) = date_in(5);
    params.not_after = rcgen::date_time_ymd(year, month, day);
    let (cert, key) = pki.issue_with(params, "soon", "soon", &["localhost", "127.0.0.1"]);
    let plugins = standard_plugin_dir();
    let (plain, https, admin) = (loopback(), loopback(), loopback());
    let config = format!(
        "{}\n[plugins.http]\nlisten = [\"{plain}\", {{ address = \"{https}\", tls = \"main\" }}]\n\n[admin]\nlisten = \"{admin}\"\n\n{}",
        tls_table("main", &cert, &key, ""),
        standard_points()
    );
    let server = Ferrocast::start(&config, plugins.path(), plain);
    server.wait_for("TLS_CERT_EXPIRING", Duration::from_secs(10));
    let warning = server.event_lines("TLS_CERT_EXPIRING").join("\n");
    assert!(
        warning.contains("soon.pem")
            && (warning.contains("days_left=4") || warning.contains("days_left=5")),
        "{warning}"
    );
    server.wait_for("admin API ready", Duration::from_secs(10));
    let metrics = scrape_metrics(admin, None);
    let line = metrics
        .lines()
        .find(|line| line.starts_with("ferrocast_tls_cert_expiry_seconds{"))
        .unwrap_or_else(|| panic!("no expiry gauge in:\n{metrics}"));
    let seconds: i64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!((3 * 86_400..6 * 86_400).contains(&seconds), "{line}");
    assert!(
        line.contains("set=\"main\"") && line.contains("name=\"localhost\""),
        "{line}"
    );
}

#[test]
fn an_encoder_publishes_over_rtmps_and_players_decode_it() {
    let pki = Pki::new();
    let (cert, key) = pki.issue("main", "first", &["localhost", "127.0.0.1"], false);
    let plugins = shipped_plugins_dir(&["http", "rtmp"]);
    let (http, rtmps) = (loopback(), loopback());
    let points =
        standard_points().replace("protocols = [\"http\"]", "protocols = [\"http\", \"rtmp\"]");
    let config = format!(
        "{}\n{}\n[plugins.rtmp]\nlisten = [{{ address = \"{rtmps}\", tls = \"main\" }}]\n",
        config_with(http, &points),
        tls_table("main", &cert, &key, ""),
    );
    let server = Ferrocast::start(&config, plugins.path(), http);
    server.wait_for(&format!("listening on {rtmps}"), Duration::from_secs(10));

    let url = format!("rtmps://127.0.0.1:{}/live/live", rtmps.port());
    let _encoder = Encoder::publish_rtmp(&url, 30);
    wait_until_live(http, "/live", Duration::from_secs(15));
    let live = decode(&format!("http://{http}/live"), &[], Some(3.0));
    assert!(
        live.status.success() && live.errors.trim().is_empty(),
        "playing what arrived over RTMPS failed: {}\nserver: {}",
        live.errors,
        server.logs()
    );
    live.assert_clean(50, "an RTMPS publish played over HTTP");
    assert!(
        !server.logs().contains("TLS_HANDSHAKE_FAILED"),
        "{}",
        server.logs()
    );
}

//! Hostile input against the real server: each test asserts what the attacker gets, that a
//! real player keeps receiving with no gap over 1 s (and decodes), and where it matters that
//! the server's memory stays bounded.

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use ferrocast_tests::rtsp_rig::RtspRig;
use ferrocast_tests::*;

/// The point's source timeout: a publisher without media is dropped after this.
const SOURCE_TIMEOUT_MS: u64 = 1500;
/// The largest silence a player may see.
const MAX_GAP: Duration = Duration::from_secs(1);
/// The server's resident memory must stay under this through an attack.
const MEMORY_BOUND_KIB: u64 = 256 * 1024;

fn server() -> (Ferrocast, TempDir) {
    let plugins = standard_plugin_dir();
    let address = loopback();
    let points = standard_points().replace(
        "source = \"push\"\n",
        &format!(
            "source = \"push\"\nreconnect_grace_ms = 20000\nsource_timeout_ms = {SOURCE_TIMEOUT_MS}\n"
        ),
    );
    let server = Ferrocast::start(&config_with(address, &points), plugins.path(), address);
    (server, plugins)
}

/// A raw HTTP publisher: `PUT path` with a chunked body, written by hand.
struct RawPublisher {
    socket: TcpStream,
}

impl RawPublisher {
    fn put(address: SocketAddr, path: &str) -> Self {
        let mut socket = TcpStream::connect_timeout(&address, Duration::from_secs(5))
            .expect("connect the publisher");
        socket
            .write_all(
                format!(
                    "PUT {path} HTTP/1.1\r\nHost: t\r\nContent-Type: video/mp2t\r\nTransfer-Encoding: chunked\r\n\r\n"
                )
                .as_bytes(),
            )
            .expect("send the PUT head");
        socket
            .set_write_timeout(Some(Duration::from_secs(2)))
            .expect("write timeout");
        Self { socket }
    }

    /// Send one chunk; `false` once the server closed the connection.
    fn send(&mut self, data: &[u8]) -> bool {
        let mut chunk = format!("{:x}\r\n", data.len()).into_bytes();
        chunk.extend_from_slice(data);
        chunk.extend_from_slice(b"\r\n");
        self.socket.write_all(&chunk).is_ok()
    }
}

/// What a junk publisher sends: null packets, packets on PIDs no PMT announces, and bytes
/// that are not TS at all. It looks busy, but carries no media.
fn junk() -> Vec<u8> {
    let mut data = Vec::new();
    for pid in [0x1fffu16, 0x0100, 0x1234] {
        let mut packet = [0xffu8; 188];
        packet[0] = 0x47;
        packet[1] = (pid >> 8) as u8;
        packet[2] = pid as u8;
        packet[3] = 0x10;
        data.extend_from_slice(&packet);
    }
    data.extend_from_slice(&[0x55; 500]);
    data
}

fn assert_memory_bounded(server: &Ferrocast) {
    let rss = server.rss_kib();
    assert!(
        rss < MEMORY_BOUND_KIB,
        "server uses {rss} KiB, over the {MEMORY_BOUND_KIB} KiB bound"
    );
}

#[test]
fn a_publisher_without_media_is_dropped_and_players_get_null_packets_throughout() {
    let (server, _plugins) = server();
    let (encoder, watching) = push_and_play(&server, &server.url("live"));
    encoder.signal("KILL");
    server.wait_for("SOURCE_LOST", Duration::from_secs(5));

    // A player joining during the grace, with no encoder connected, gets null packets at once.
    let joined = TsReader::http(server.http, "/live");
    assert!(
        joined.wait_bytes(188, MAX_GAP),
        "a client joining during the grace got no null packet within 1 s"
    );

    // A publisher that sends bytes but no media: it holds the point only for the timeout.
    let attacked = Instant::now();
    let mut squatter = RawPublisher::put(server.http, "/live");
    let mut closed = false;
    while attacked.elapsed() < Duration::from_millis(SOURCE_TIMEOUT_MS + 3000) {
        if !squatter.send(&junk()) {
            closed = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let lost = server
        .event_lines("SOURCE_LOST")
        .into_iter()
        .find(|line| line.contains("no decodable media"));
    let lost =
        lost.unwrap_or_else(|| panic!("no SOURCE_LOST for the junk publisher:\n{}", server.logs()));
    assert!(
        lost.contains(&format!("for {SOURCE_TIMEOUT_MS} ms")),
        "{lost}"
    );
    assert!(closed, "the junk publisher's connection must be closed");
    assert_memory_bounded(&server);

    // The real encoder takes the point back; both players resume and decode.
    let resumed = Instant::now();
    let _encoder = Encoder::push(&server.url("live"), 60);
    server.wait_for("SOURCE_RESUMED", Duration::from_secs(10));
    std::thread::sleep(Duration::from_secs(3));
    for reader in [&watching, &joined] {
        assert!(reader.ended_at().is_none(), "{} ended", reader.label);
        let gap = reader.longest_gap_since(reader.started + Duration::from_millis(500));
        assert!(gap <= MAX_GAP, "{} saw {gap:?} of silence", reader.label);
        assert!(
            reader.first_media_after(resumed).is_some(),
            "{} got no media",
            reader.label
        );
    }
    assert_decodes(server.dir.path(), &watching.body(), 50);
    assert_decodes(server.dir.path(), &joined.body(), 50);
}

/// An encoder pushing a file as fast as the network takes it (no `-re`): about 6 minutes of
/// media, 17 MB, more than the kernel's socket buffers hold.
fn fast_publisher(url: &str) -> std::process::Child {
    std::process::Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-nostdin"])
        .args(["-stream_loop", "30", "-i"])
        .arg(sample_ts())
        .args(["-c", "copy", "-f", "mpegts", "-method", "PUT", url])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start ffmpeg")
}

#[test]
fn a_publisher_faster_than_real_time_is_paced_and_viewers_keep_playing() {
    let (server, _plugins) = server();
    let mut publisher = fast_publisher(&server.url("live"));
    wait_until_live(server.http, "/live", Duration::from_secs(15));
    let viewers: Vec<TsReader> = (0..3)
        .map(|_| TsReader::http(server.http, "/live"))
        .collect();
    // A real player decodes 6 s of it, in about that much time.
    let played = Instant::now();
    let decoded = decode(&server.url("live"), &[], Some(6.0));
    decoded.assert_clean(140, "a player of the fast publisher's point");
    assert!(
        played.elapsed() >= Duration::from_secs(3),
        "6 s of media played in {:?}: not real time",
        played.elapsed()
    );

    // The publisher is held near real time: minutes of media are not through in seconds.
    assert!(
        publisher.try_wait().expect("poll ffmpeg").is_none(),
        "the fast publisher finished: it was not paced"
    );
    assert!(
        server.event_lines("CLIENT_LAGGING").is_empty(),
        "viewers fell behind:\n{}",
        server.logs()
    );
    assert_memory_bounded(&server);
    for viewer in &viewers {
        assert!(viewer.ended_at().is_none(), "{} ended", viewer.label);
        let gap = viewer.longest_gap_since(viewer.started + Duration::from_millis(500));
        assert!(gap <= MAX_GAP, "{} saw {gap:?} of silence", viewer.label);
        // Media all along, not a skipped-ahead trickle: about 400 kbit/s.
        assert!(
            viewer.bytes() > 200_000,
            "{} got {} bytes",
            viewer.label,
            viewer.bytes()
        );
        assert!(
            viewer.continuity_errors().is_empty(),
            "{:?}",
            viewer.continuity_errors()
        );
    }
    let _ = publisher.kill();
    let _ = publisher.wait();
}

/// A large TS file without a single PCR: every packet must be read to learn it has no index.
fn write_pcr_less_file(path: &std::path::Path, megabytes: usize) {
    let mut packet = [0u8; 188];
    packet[0] = 0x47;
    packet[1] = 0x01; // PID 0x100
    packet[3] = 0x10; // payload only
    let block = packet.repeat(1024 * 1024 / 188);
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).expect("create file"));
    for _ in 0..megabytes {
        file.write_all(&block).expect("write file");
    }
    file.flush().expect("flush file");
}

#[test]
fn hammering_an_unindexable_file_stalls_neither_live_clients_nor_other_files() {
    let media = tempfile::tempdir().expect("temp dir");
    let big = media.path().join("big.ts");
    write_pcr_less_file(&big, 300);
    let plugins = shipped_plugins_dir(&["http", "rtsp"]);
    let (http, rtsp) = (loopback(), loopback());
    let points = format!(
        "{}\n{}",
        standard_points(),
        point_toml(
            "big",
            "on-demand",
            &big.display().to_string(),
            &["http", "rtsp"]
        )
    );
    let config = format!(
        "{}\n[plugins.rtsp]\nlisten = [\"{rtsp}\"]\n",
        config_with(http, &points)
    );
    let server = Ferrocast::start(&config, plugins.path(), http);
    let (_encoder, live) = push_and_play(&server, &server.url("live"));

    let hammer_from = Instant::now();
    let hammering = Duration::from_secs(6);
    let attackers: Vec<_> = (0..16)
        .map(|i| {
            std::thread::spawn(move || {
                let mut requests = 0;
                while hammer_from.elapsed() < hammering && requests < 2000 {
                    if i % 2 == 0 {
                        let request = b"GET /big HTTP/1.1\r\nHost: t\r\nRange: bytes=0-0\r\n\r\n";
                        let _ = http_exchange(http, request, 1, Duration::from_secs(5));
                    } else {
                        let mut client = ferrocast_tests::rtsp::RtspClient::connect(rtsp);
                        client.request("DESCRIBE", &format!("rtsp://{rtsp}/big"), &[]);
                    }
                    requests += 1;
                }
                requests
            })
        })
        .collect();
    // Meanwhile another on-demand file answers at once, again and again.
    let mut slowest = Duration::ZERO;
    while hammer_from.elapsed() < hammering {
        let asked = Instant::now();
        let response = http_exchange(
            http,
            b"GET /vod HTTP/1.1\r\nHost: t\r\nRange: bytes=0-187\r\n\r\n",
            188,
            Duration::from_secs(10),
        )
        .expect("GET /vod");
        assert_eq!(response.status, 206, "{}", response.head);
        slowest = slowest.max(asked.elapsed());
        std::thread::sleep(Duration::from_millis(100));
    }
    let requests: usize = attackers
        .into_iter()
        .map(|attacker| attacker.join().expect("attacker thread"))
        .sum();
    assert!(requests >= 16, "only {requests} requests were made");
    assert!(
        slowest < Duration::from_secs(1),
        "GET /vod took {slowest:?}"
    );

    // The file was read once for its version, and the failure remembered.
    let failures = server
        .event_lines("INDEX_FAILED")
        .into_iter()
        .filter(|line| line.contains("big.ts"))
        .count();
    assert_eq!(failures, 1, "index failures logged for one file version");
    assert_memory_bounded(&server);
    let gap = live.longest_gap_since(live.started + Duration::from_millis(500));
    assert!(gap <= MAX_GAP, "the live client saw {gap:?} of silence");
    assert!(live.ended_at().is_none(), "the live client was dropped");
    assert!(live
        .first_media_after(hammer_from + hammering - Duration::from_secs(1))
        .is_some());
}

/// A server started by hand: `sh -c 'umask …; exec ferrocast …'`, its output in a file.
struct ControlRig {
    child: std::process::Child,
    dir: TempDir,
    _plugins: TempDir,
}

impl ControlRig {
    fn start(umask: &str, control_socket: &std::path::Path) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let plugins = standard_plugin_dir();
        let config = dir.path().join("ferrocast.toml");
        std::fs::write(&config, config_with(loopback(), &standard_points())).expect("config");
        let log = std::fs::File::create(dir.path().join("out.log")).expect("log file");
        let child = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("umask {umask}; exec \"$@\""))
            .arg("sh")
            .arg(ferrocast_binary())
            .arg("--config")
            .arg(&config)
            .arg("--plugin-dir")
            .arg(plugins.path())
            .arg("--control-socket")
            .arg(control_socket)
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("start ferrocast");
        Self {
            child,
            dir,
            _plugins: plugins,
        }
    }

    fn output(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("out.log")).unwrap_or_default()
    }

    /// Wait until the output holds `needle` (or the server exited).
    fn wait_for(&mut self, needle: &str) -> bool {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if self.output().contains(needle) {
                return true;
            }
            if self.child.try_wait().expect("poll server").is_some() {
                return self.output().contains(needle);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    fn exited_with_failure(&mut self) -> bool {
        wait_child(&mut self.child, Duration::from_secs(10)).is_some_and(|status| !status.success())
    }
}

impl Drop for ControlRig {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `ferrocast --control-socket SOCKET COMMAND…`, as `uid` if given.
fn control_command(socket: &std::path::Path, args: &[&str], uid: Option<u32>) -> CommandOutput {
    use std::os::unix::process::CommandExt;
    let mut command = std::process::Command::new(ferrocast_binary());
    command.arg("--control-socket").arg(socket).args(args);
    if let Some(uid) = uid {
        command.uid(uid).gid(uid);
    }
    command.output().expect("run ferrocast").into()
}

fn is_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
}

#[test]
fn the_control_socket_is_private_even_with_umask_000_and_follows_the_command_line() {
    let dir = tempfile::tempdir().expect("temp dir");
    // A directory everyone may enter, so that only the socket's own mode protects it.
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod");
    let socket = dir.path().join("control.sock");
    let mut server = ControlRig::start("000", &socket);
    assert!(
        server.wait_for(&format!("control  socket {}", socket.display())),
        "--control-socket not honoured at start:\n{}",
        server.output()
    );
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&socket).expect("socket").permissions(),
    );
    assert_eq!(mode & 0o777, 0o600, "socket mode {mode:o}");

    let status = control_command(&socket, &["status"], None);
    assert_eq!(status.code, Some(0), "{}", status.text);
    assert!(status.text.contains("point"), "{}", status.text);
    if is_root() {
        // Another user cannot drain a point: the socket does not let them in.
        let drain = control_command(&socket, &["drain", "point", "live"], Some(65534));
        assert_ne!(drain.code, Some(0), "{}", drain.text);
        let status = control_command(&socket, &["status"], None);
        assert!(!status.text.contains("draining"), "{}", status.text);
    }
}

#[test]
fn stale_live_and_foreign_control_sockets_at_the_path() {
    let dir = tempfile::tempdir().expect("temp dir");
    let socket = dir.path().join("control.sock");
    // Stale: a socket file nobody listens on any more.
    drop(std::os::unix::net::UnixListener::bind(&socket).expect("bind"));
    let mut first = ControlRig::start("022", &socket);
    assert!(first.wait_for("control socket ready"), "{}", first.output());
    assert!(first.output().contains("replacing a stale control socket"));
    assert_eq!(control_command(&socket, &["status"], None).code, Some(0));

    // Live: another server answers there; the second one refuses to start, clearly.
    let mut second = ControlRig::start("022", &socket);
    assert!(second.exited_with_failure(), "{}", second.output());
    assert!(
        second.output().contains("another ferrocast answers on it"),
        "{}",
        second.output()
    );
    assert_eq!(control_command(&socket, &["status"], None).code, Some(0));

    if is_root() {
        // Foreign: a socket another user made first (and would answer "ok" on).
        let foreign = dir.path().join("foreign.sock");
        let _listener = std::os::unix::net::UnixListener::bind(&foreign).expect("bind");
        std::os::unix::fs::chown(&foreign, Some(65534), Some(65534)).expect("chown");
        let mut third = ControlRig::start("022", &foreign);
        assert!(third.exited_with_failure(), "{}", third.output());
        assert!(
            third.output().contains("belongs to uid 65534"),
            "{}",
            third.output()
        );
        let fooled = control_command(&foreign, &["drain", "point", "live"], None);
        assert_ne!(fooled.code, Some(0), "{}", fooled.text);
        assert!(
            fooled.text.contains("belongs to uid 65534"),
            "{}",
            fooled.text
        );
    }
}

#[test]
fn malformed_requests_get_plain_refusals_and_do_not_flood_the_log() {
    let rig = RtspRig::standard_over_udp();
    let (server, rtsp) = (&rig.server, rig.rtsp);
    let http = server.http;

    // A 404 does not send the request's own input back, and no response may be sniffed.
    let probe = "/%3Cscript%3Ealert(1)%3C%2Fscript%3E";
    let missing = http_exchange(
        http,
        format!("GET {probe} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes(),
        4096,
        Duration::from_secs(5),
    )
    .expect("GET");
    assert_eq!(missing.status, 404);
    assert!(
        !missing.body_text().contains("script"),
        "{}",
        missing.body_text()
    );
    assert_eq!(
        missing.header("X-Content-Type-Options").as_deref(),
        Some("nosniff")
    );
    let vod = http_get(http, "/vod", 188);
    assert_eq!(
        vod.header("X-Content-Type-Options").as_deref(),
        Some("nosniff")
    );

    // Two Host headers: 400.
    let two_hosts = http_exchange(
        http,
        b"GET /vod HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        4096,
        Duration::from_secs(5),
    )
    .expect("GET");
    assert_eq!(two_hosts.status, 400, "{}", two_hosts.head);

    // RTCP must go to the RTP port + 1: a pair aimed elsewhere is refused with 461.
    let mut client = ferrocast_tests::rtsp::RtspClient::connect(rtsp);
    let refused = client.request(
        "SETUP",
        &format!("rtsp://{rtsp}/vod/trackID=0"),
        &[("Transport", "RTP/AVP;unicast;client_port=45000-50000")],
    );
    assert_eq!(refused.status, 461);

    // A flood of 600 bad requests: the log takes a bounded number of warnings.
    let before = server.logs().matches("PLUGIN_MESSAGE").count();
    for _ in 0..600 {
        let _ = http_exchange(http, b"GARBAGE\r\n\r\n", 0, Duration::from_secs(2));
    }
    let logged = server.logs().matches("PLUGIN_MESSAGE").count() - before;
    assert!(
        logged <= 60,
        "{logged} warnings logged for 600 bad requests"
    );
    assert_eq!(http_get(http, "/vod", 188).status, 200, "still serving");
    assert_memory_bounded(server);
}

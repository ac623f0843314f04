//! Connection limits against hostile clients, with the real binary: floods of idle and
//! slowloris connections on HTTP and RTSP, clients that never read, the per-address and
//! global caps and the connection rate, and running out of file descriptors.
//!
//! Attackers connect from their own loopback addresses (127.0.0.2 and up), the encoder and
//! the player from 127.0.0.1. Each test checks what the attacker gets (the documented
//! refusal, or a close within the stated time), that a player of the live point keeps
//! receiving with no gap over a second, and that the server's memory stays bounded.

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use ferrocast_tests::*;
use socket2::{Domain, Socket, Type};

/// Longest silence a player may see while the server is attacked.
const MAX_GAP: Duration = Duration::from_secs(1);

struct Limited {
    server: Ferrocast,
    rtsp: SocketAddr,
    _plugins: TempDir,
    _encoder: Encoder,
    player: TsReader,
}

/// A server with HTTP and RTSP, a live point with an encoder and a player on it, and
/// `limits` (TOML lines) in `[limits]`.
fn limited_server(limits: &str, write_timeout_ms: u64, point_extra: &str) -> Limited {
    raise_own_descriptor_limit();
    let plugins = shipped_plugins_dir(&["http", "rtsp", "tcp"]);
    let http = loopback();
    let rtsp = loopback();
    let points = point_toml("live", "broadcast", "push", &["http", "rtsp", "tcp"]) + point_extra;
    let config = format!(
        "[server]\nwrite_timeout_ms = {write_timeout_ms}\n\n[limits]\n{limits}\n\n\
         [plugins.http]\nlisten = [\"{http}\"]\n\n[plugins.rtsp]\nlisten = [\"{rtsp}\"]\n\n\
         [plugins.tcp]\n\n{points}"
    );
    let server = Ferrocast::start(&config, plugins.path(), http);
    server.wait_for(&format!("listening on {rtsp}"), Duration::from_secs(10));
    let (encoder, player) = push_and_play(&server, &server.url("live"));
    Limited {
        server,
        rtsp,
        _plugins: plugins,
        _encoder: encoder,
        player,
    }
}

/// The test process opens thousands of sockets.
fn raise_own_descriptor_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

/// A TCP connection to `to` from the loopback address 127.0.0.`from`; a small receive
/// buffer when `rcvbuf` is given (a client that does not read then holds little itself).
fn connect_from(from: u8, to: SocketAddr, rcvbuf: Option<usize>) -> std::io::Result<TcpStream> {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    if let Some(size) = rcvbuf {
        socket.set_recv_buffer_size(size)?;
    }
    socket.bind(&SocketAddr::from((Ipv4Addr::new(127, 0, 0, from), 0)).into())?;
    socket.connect_timeout(&to.into(), Duration::from_secs(3))?;
    Ok(socket.into())
}

/// Send `request` and read the answer's head (empty if the server closed without one).
fn ask(stream: &mut TcpStream, request: &str) -> String {
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    if stream.write_all(request.as_bytes()).is_err() {
        return String::new();
    }
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// Whether the server closed `stream` (EOF or reset) within `timeout`; data is discarded.
fn closed_within(stream: &mut TcpStream, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 4096];
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        stream
            .set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .unwrap();
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return false
            }
            Err(_) => return true,
        }
    }
    false
}

/// The server's resident memory in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .expect("VmRSS in /proc/<pid>/status")
}

/// Kernel memory of every TCP socket on the machine, in KiB (`/proc/net/sockstat`, pages).
fn tcp_kernel_kib() -> u64 {
    let sockstat = std::fs::read_to_string("/proc/net/sockstat").unwrap();
    let pages: u64 = sockstat
        .lines()
        .find(|line| line.starts_with("TCP:"))
        .and_then(|line| line.split_whitespace().skip_while(|w| *w != "mem").nth(1))
        .and_then(|pages| pages.parse().ok())
        .expect("TCP mem in /proc/net/sockstat");
    pages * 4
}

/// `open`, `refused` and `dropped` from `ferrocast status`.
fn connection_counters(server: &Ferrocast) -> (u64, u64, u64) {
    let status = server.command(&["status"]).text;
    let line = status
        .lines()
        .find(|line| line.starts_with("connections open"))
        .unwrap_or_else(|| panic!("no connections line in status:\n{status}"));
    let numbers: Vec<u64> = line
        .split_whitespace()
        .filter_map(|word| word.parse().ok())
        .collect();
    (numbers[0], numbers[1], numbers[2])
}

fn assert_player_unharmed(player: &TsReader, since: Instant) {
    let gap = player.longest_gap_since(since);
    assert!(gap < MAX_GAP, "the player saw {gap:?} of silence");
    assert!(player.ended_at().is_none(), "the player was disconnected");
    assert!(
        player.continuity_errors().is_empty(),
        "{:?}",
        player.continuity_errors()
    );
}

/// 2,000 idle and 2,000 slowloris connections at one listener, from two addresses, within
/// `per_ip` each: every one is closed within the idle timeout (plus the refused grace).
fn flood(target: SocketAddr, first_address: u8, slow_request: &str) -> Vec<TcpStream> {
    let mut held = Vec::new();
    for n in 0..4_000u32 {
        let from = first_address + (n % 4) as u8;
        match connect_from(from, target, Some(4096)) {
            Ok(mut stream) => {
                if n % 2 == 1 {
                    // Slowloris: a request that never ends, a byte at a time.
                    let _ = stream.write_all(slow_request.as_bytes());
                }
                held.push(stream);
            }
            // Dropped at once, unread: the server may close before the handshake is used.
            Err(_) => continue,
        }
    }
    held
}

#[test]
fn idle_and_slowloris_floods_are_closed_and_a_player_keeps_playing() {
    let idle_timeout = Duration::from_millis(2_000);
    let limited = limited_server(
        "max_connections = 3000\nmax_connections_per_ip = 600\nidle_timeout_ms = 2000",
        5_000,
        "",
    );
    let server = &limited.server;
    let pid = server.pid();
    let rss_before = rss_kib(pid);
    let started = Instant::now();
    let targets = [
        (
            server.http,
            2u8,
            "GET /live HTTP/1.1\r\nHost: x\r\nX-Slow: ",
        ),
        (
            limited.rtsp,
            10u8,
            "DESCRIBE rtsp://x/live RTSP/1.0\r\nCSeq: 1\r\nX-Slow: ",
        ),
    ];
    for (target, first_address, slow) in targets {
        let round = Instant::now();
        let mut held = flood(target, first_address, slow);
        let opened = held.len();
        let rss_during = rss_kib(pid);
        eprintln!(
            "{target}: {opened} opened in {:?}, rss {rss_before} -> {rss_during} KiB, counters {:?}",
            round.elapsed(),
            connection_counters(server)
        );
        // The slow clients keep dribbling until the server gives up on them.
        for _ in 0..4 {
            std::thread::sleep(Duration::from_millis(500));
            for stream in held.iter_mut().skip(1).step_by(2) {
                let _ = stream.write_all(b"a");
            }
        }
        let deadline = round + idle_timeout + Duration::from_secs(4);
        let mut still_open = 0;
        for stream in &mut held {
            let left = deadline.saturating_duration_since(Instant::now());
            if !closed_within(stream, left.max(Duration::from_millis(10))) {
                still_open += 1;
            }
        }
        assert_eq!(
            still_open, 0,
            "{still_open} of {opened} flood connections to {target} outlived the idle timeout"
        );
        assert!(
            rss_during < rss_before + 200 * 1024,
            "server memory grew from {rss_before} KiB to {rss_during} KiB under the flood"
        );
        assert!(
            round.elapsed() < Duration::from_secs(30),
            "the round took {:?}",
            round.elapsed()
        );
    }
    let (_, refused, dropped) = connection_counters(server);
    assert!(
        refused + dropped > 0,
        "4 × 1,000 connections per address over a cap of 600 must be refused"
    );
    assert!(!server.event_lines("CONNECTION_REFUSED").is_empty());
    assert!(
        server.event_lines("CONNECTION_REFUSED").len() < 20,
        "refusals are summarised, not logged one by one"
    );
    assert_player_unharmed(&limited.player, started);
}

#[test]
fn clients_that_never_read_are_dropped_within_the_write_timeout() {
    let send_buffer = 64 * 1024;
    let client_rcvbuf = 16 * 1024;
    let limited = limited_server(
        &format!("send_buffer_bytes = {send_buffer}\nidle_timeout_ms = 10000"),
        2_000,
        "",
    );
    let server = &limited.server;
    let pid = server.pid();
    let rss_before = rss_kib(pid);
    let kernel_before = tcp_kernel_kib();
    let started = Instant::now();
    let mut stalled = Vec::new();
    for n in 0..500u32 {
        let mut stream = connect_from(20 + (n % 4) as u8, server.http, Some(client_rcvbuf))
            .expect("connect a non-reading client");
        stream
            .write_all(b"GET /live HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        stalled.push(stream);
    }
    // Each non-reading client holds at most the server's send buffer (the kernel doubles
    // SO_SNDBUF for its bookkeeping) and its own receive buffer (doubled too) in the kernel.
    // Uncapped, the server's buffer grows by the stream's bitrate to megabytes while the
    // write timeout waits for it to fill.
    let per_client_kib = (2 * send_buffer + 2 * client_rcvbuf) as u64 / 1024 + 64;
    let kernel_bound = 500 * per_client_kib;
    // Dropped within the write timeout once their sockets are full (filling takes a few
    // seconds at the stream's bitrate).
    let (mut open, mut kernel_peak, mut rss_peak) = (u64::MAX, 0, 0);
    while started.elapsed() < Duration::from_secs(15) {
        std::thread::sleep(Duration::from_millis(500));
        kernel_peak = kernel_peak.max(tcp_kernel_kib().saturating_sub(kernel_before));
        rss_peak = rss_peak.max(rss_kib(pid));
        open = connection_counters(server).0;
        if open <= 4 {
            break;
        }
    }
    eprintln!(
        "non-reading clients: kernel peak +{kernel_peak} KiB (bound {kernel_bound}), rss {rss_before} -> peak {rss_peak} KiB, {open} open after {:?}",
        started.elapsed()
    );
    assert!(
        open <= 4,
        "{open} connections still open {:?} after 500 clients stopped reading",
        started.elapsed()
    );
    assert!(server.logs().matches("client stopped reading").count() > 0);
    assert!(
        kernel_peak < kernel_bound,
        "TCP kernel memory grew by {kernel_peak} KiB for 500 non-reading clients (bound {kernel_bound} KiB)"
    );
    assert!(
        rss_peak < rss_before + 100 * 1024,
        "server memory grew from {rss_before} KiB to {rss_peak} KiB"
    );
    drop(stalled);
    assert_player_unharmed(&limited.player, started);
}

#[test]
fn caps_per_address_and_overall_answer_503_and_453() {
    let limited = limited_server(
        "max_connections = 40\nmax_connections_per_ip = 5\nidle_timeout_ms = 10000",
        5_000,
        "",
    );
    let server = &limited.server;
    let pid = server.pid();
    let rss_before = rss_kib(pid);
    let started = Instant::now();

    // Per address: five idle connections are within the cap, the sixth is answered.
    let mut holding: Vec<TcpStream> = (0..5)
        .map(|_| connect_from(30, server.http, None).unwrap())
        .collect();
    let mut sixth = connect_from(30, server.http, None).unwrap();
    let head = ask(&mut sixth, "GET /live HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(head.starts_with("HTTP/1.1 503"), "{head}");
    assert!(head.contains("Retry-After: 5"), "{head}");
    assert!(closed_within(&mut sixth, Duration::from_secs(3)));
    let mut rtsp = connect_from(30, limited.rtsp, None).unwrap();
    let head = ask(
        &mut rtsp,
        "DESCRIBE rtsp://x/live RTSP/1.0\r\nCSeq: 1\r\n\r\n",
    );
    assert!(
        head.starts_with("RTSP/1.0 453 Not Enough Bandwidth"),
        "{head}"
    );
    assert!(closed_within(&mut rtsp, Duration::from_secs(3)));
    // Another address is not affected by the first one's cap.
    let mut other = connect_from(31, server.http, None).unwrap();
    let head = ask(&mut other, "HEAD /live HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    drop(other);

    // Overall: fill to the cap of 40 (the encoder and the player hold two) from many
    // addresses, then one more is refused, and past twice the cap closed unread.
    for n in 0..33u8 {
        holding.push(connect_from(40 + n / 4, server.http, None).unwrap());
    }
    std::thread::sleep(Duration::from_millis(300));
    let mut over = connect_from(99, server.http, None).unwrap();
    let head = ask(&mut over, "GET /live HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(head.starts_with("HTTP/1.1 503"), "{head}");
    let mut refused_held = Vec::new();
    for n in 0..45u8 {
        if let Ok(stream) = connect_from(100 + n / 4, server.http, None) {
            refused_held.push(stream);
        }
    }
    let mut beyond = connect_from(120, server.http, None).unwrap();
    let head = ask(&mut beyond, "GET /live HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(
        head.is_empty(),
        "past twice the cap: closed unread, got {head}"
    );
    let (_, refused, dropped) = connection_counters(server);
    assert!(
        refused >= 3 && dropped >= 1,
        "refused {refused}, dropped {dropped}"
    );
    assert!(rss_kib(pid) < rss_before + 50 * 1024);
    drop(holding);
    drop(refused_held);

    // The rate per address, set by a reload: 5 a second, so of 10 at once 5 are refused.
    std::thread::sleep(Duration::from_millis(2_500));
    let config = std::fs::read_to_string(server.config_path()).unwrap();
    let config = config.replace(
        "max_connections = 40\n",
        "max_connections = 40\nconnection_rate_per_ip = 5\n",
    );
    std::fs::write(server.config_path(), config).unwrap();
    let reload = server.command(&["reload"]);
    assert_eq!(reload.code, Some(0), "{}", reload.text);
    let mut statuses = Vec::new();
    for _ in 0..10 {
        let mut stream = connect_from(60, server.http, None).unwrap();
        let head = ask(
            &mut stream,
            "HEAD /live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        );
        statuses.push(head.get(9..12).unwrap_or("").to_owned());
    }
    let ok = statuses.iter().filter(|s| *s == "200").count();
    let refused = statuses.iter().filter(|s| *s == "503").count();
    assert!(
        (5..=6).contains(&ok) && ok + refused == 10,
        "statuses {statuses:?}"
    );
    assert_player_unharmed(&limited.player, started);
}

#[test]
fn running_out_of_descriptors_recovers_within_two_seconds() {
    let limited = limited_server("idle_timeout_ms = 30000", 5_000, "");
    let server = &limited.server;
    let pid = server.pid();
    let rss_before = rss_kib(pid);
    let open_fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count();
    let limit = open_fds + 30;
    let status = std::process::Command::new("prlimit")
        .arg(format!("--pid={pid}"))
        .arg(format!("--nofile={limit}:{limit}"))
        .status()
        .expect("run prlimit");
    assert!(status.success());
    let started = Instant::now();

    // Exhaust: far more idle connections than descriptors left.
    let mut hogs: Vec<TcpStream> = (0..100)
        .filter_map(|n| connect_from(70 + n % 4, server.http, None).ok())
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    server.wait_for("ACCEPT_FAILED", Duration::from_secs(5));
    // Meanwhile a client is closed promptly rather than left hanging.
    let mut during = connect_from(80, server.http, None).unwrap();
    let asked = Instant::now();
    let head = ask(&mut during, "HEAD /live HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(head.is_empty(), "no descriptors, yet an answer: {head}");
    assert!(
        asked.elapsed() < Duration::from_secs(2),
        "{:?}",
        asked.elapsed()
    );

    // Release, and a new client is served at once.
    hogs.clear();
    let released = Instant::now();
    let served = loop {
        let mut stream = connect_from(81, server.http, None).unwrap();
        let head = ask(&mut stream, "HEAD /live HTTP/1.1\r\nHost: x\r\n\r\n");
        if head.starts_with("HTTP/1.1 200") {
            break released.elapsed();
        }
        assert!(
            released.elapsed() < Duration::from_secs(5),
            "not served {:?} after the descriptors were released",
            released.elapsed()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    eprintln!("descriptors released: a new client was served after {served:?}");
    assert!(served < Duration::from_secs(2), "served after {served:?}");
    assert!(rss_kib(pid) < rss_before + 50 * 1024);
    assert_player_unharmed(&limited.player, started);
}

#[test]
fn a_point_refuses_players_over_its_client_and_bandwidth_caps() {
    let limited = limited_server("idle_timeout_ms = 10000", 5_000, "max_clients = 2\n");
    let server = &limited.server;
    let pid = server.pid();
    let rss_before = rss_kib(pid);
    let started = Instant::now();

    // The player is one client; a second fits, a third is refused on every protocol.
    let second = TsReader::http(server.http, "/live");
    assert!(second.wait_bytes(188, Duration::from_secs(5)));
    let mut third = connect_from(50, server.http, None).unwrap();
    let head = ask(&mut third, "GET /live HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(head.starts_with("HTTP/1.1 503"), "{head}");
    assert!(head.contains("Retry-After: 5"), "{head}");
    let url = format!("rtsp://{}/live", limited.rtsp);
    let mut rtsp = RtspClient::connect(limited.rtsp);
    assert_eq!(rtsp.setup_interleaved(&url).status, 200);
    let played = rtsp.request("PLAY", &format!("{url}/"), &[("Range", "npt=0-")]);
    assert_eq!(played.status, 453, "{}{}", played.head, played.body);
    assert!(
        played.body.contains("maximum of 2 clients"),
        "{}",
        played.body
    );

    // Bandwidth, set by a reload: the encoder sends about 0.5 Mbit/s, so with 1.2 Mbit/s
    // two clients fit and a third does not.
    let config = std::fs::read_to_string(server.config_path()).unwrap();
    let config = config.replace("max_clients = 2\n", "max_bandwidth = \"1.2M\"\n");
    std::fs::write(server.config_path(), config).unwrap();
    let reload = server.command(&["reload"]);
    assert_eq!(reload.code, Some(0), "{}", reload.text);
    let mut over = connect_from(51, server.http, None).unwrap();
    let head = ask(&mut over, "GET /live HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(head.starts_with("HTTP/1.1 503"), "{head}");
    // The head may arrive with the body.
    let mut rest = String::new();
    let _ = over.read_to_string(&mut rest);
    let answer = head + &rest;
    assert!(answer.contains("outgoing bandwidth"), "{answer}");

    assert!(server
        .event_lines("CONNECTION_REFUSED")
        .iter()
        .any(|line| line.contains("point=live")));
    assert!(rss_kib(pid) < rss_before + 50 * 1024);
    assert!(second.ended_at().is_none());
    assert_player_unharmed(&limited.player, started);
}

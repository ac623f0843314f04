//! MPEG-TS over WebSocket through the `ws` plugin, which frames the media itself: a real
//! WebSocket client plays a live point fed by ffmpeg and the received TS decodes cleanly; an
//! on-demand file arrives byte for byte and ends with a normal close; unmasked, oversized and
//! malformed client frames each get RFC 6455's close status; a hot swap of the plugin keeps
//! the playing client on its generation while a new one lands on the new generation; a client
//! too slow for the stream is skipped ahead to keyframes, then closed with 1008, while another
//! plays on.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use ferrocast_tests::*;
use tempfile::TempDir;
use tungstenite::Message;

/// A server with the HTTP and WebSocket plugins; `live` and `vod` are enabled for both.
fn start_ws() -> (Ferrocast, TempDir, SocketAddr) {
    let plugins = shipped_plugins_dir(&["http", "ws"]);
    let http = loopback();
    let ws = loopback();
    let sample = sample_ts().display().to_string();
    let points = format!(
        "{}\n{}",
        point_toml("live", "broadcast", "push", &["http", "ws"]),
        point_toml("vod", "on-demand", &sample, &["http", "ws"])
    );
    let config = config_with(
        http,
        &format!("[plugins.ws]\nlisten = [\"{ws}\"]\n\n{points}"),
    );
    let server = Ferrocast::start(&config, plugins.path(), http);
    (server, plugins, ws)
}

/// A WebSocket client (tungstenite) on `path`, reading with a bounded wait.
fn client(address: SocketAddr, path: &str) -> tungstenite::WebSocket<TcpStream> {
    let stream = TcpStream::connect_timeout(&address, Duration::from_secs(5)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let (socket, response) =
        tungstenite::client(format!("ws://{address}{path}"), stream).expect("WebSocket handshake");
    assert_eq!(response.status(), 101);
    socket
}

/// The binary payloads `socket` receives for `duration` (answering pings, as the library
/// does), concatenated.
fn receive_for(socket: &mut tungstenite::WebSocket<TcpStream>, duration: Duration) -> Vec<u8> {
    let deadline = Instant::now() + duration;
    let mut body = Vec::new();
    while Instant::now() < deadline {
        match socket.read().expect("read a WebSocket message") {
            Message::Binary(data) => body.extend_from_slice(&data),
            Message::Close(frame) => panic!("the server closed early: {frame:?}"),
            _ => {}
        }
    }
    body
}

#[test]
fn a_websocket_client_plays_a_live_point_that_decodes_cleanly() {
    let (server, _plugins, ws) = start_ws();
    let _encoder = Encoder::push_live(&server, 30);
    let mut socket = client(ws, "/live");
    let body = receive_for(&mut socket, Duration::from_secs(5));
    assert!(body.len() > 100_000, "only {} bytes", body.len());
    assert_eq!(body.len() % 188, 0, "whole TS packets");
    assert_eq!(body[0], 0x47);
    assert_decodes(server.dir.path(), &body, 80);

    // A ping from the client is answered while media flows.
    socket
        .send(Message::Ping(b"are you there".to_vec()))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        assert!(Instant::now() < deadline, "no pong");
        if let Message::Pong(data) = socket.read().unwrap() {
            assert_eq!(data, b"are you there");
            break;
        }
    }
    socket.close(None).unwrap();
    assert!(
        server.logs().lines().any(|l| l.contains("event=\"PLAY\"")
            && l.contains("plugin=ws")
            && l.contains("point=live")),
        "{}",
        server.logs()
    );
}

#[test]
fn an_on_demand_file_arrives_byte_for_byte_and_ends_with_a_normal_close() {
    let (_server, _plugins, ws) = start_ws();
    let mut socket = client(ws, "/vod");
    let expected = std::fs::read(sample_ts()).unwrap();
    let mut body = Vec::new();
    let code = loop {
        match socket.read().expect("read") {
            Message::Binary(data) => body.extend_from_slice(&data),
            Message::Close(frame) => break frame.map(|f| u16::from(f.code)),
            _ => {}
        }
        assert!(body.len() <= expected.len(), "more than the file");
    };
    assert_eq!(code, Some(1000));
    assert!(
        body == expected,
        "{} of {} bytes",
        body.len(),
        expected.len()
    );
}

#[test]
fn an_unknown_point_is_refused_in_http() {
    let (_server, _plugins, ws) = start_ws();
    let stream = TcpStream::connect(ws).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let error = tungstenite::client(format!("ws://{ws}/nowhere"), stream).unwrap_err();
    match error {
        tungstenite::HandshakeError::Failure(tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 404)
        }
        other => panic!("expected an HTTP refusal, got {other}"),
    }
}

/// A raw connection upgraded to a WebSocket on `live` (its frames follow at once).
fn raw_upgraded(address: SocketAddr) -> TcpStream {
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(5)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream
        .write_all(
            b"GET /live HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        )
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8];
    while !head.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).expect("read the 101 head");
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    assert!(head.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
    stream
}

/// Skip the server's data frames until its close frame; its status code. `header` is the
/// first frame's first two bytes, already read.
fn close_code(stream: &mut TcpStream, mut header: [u8; 2]) -> u16 {
    for _ in 0..100_000 {
        assert_eq!(header[1] & 0x80, 0, "server frames are never masked");
        let length = match header[1] & 0x7F {
            126 => {
                let mut b = [0u8; 2];
                stream.read_exact(&mut b).unwrap();
                u64::from(u16::from_be_bytes(b))
            }
            127 => {
                let mut b = [0u8; 8];
                stream.read_exact(&mut b).unwrap();
                u64::from_be_bytes(b)
            }
            short => u64::from(short),
        };
        let mut payload = vec![0u8; length as usize];
        stream.read_exact(&mut payload).unwrap();
        if header[0] & 0x0F == 0x8 {
            assert!(payload.len() >= 2, "a close status");
            return u16::from_be_bytes([payload[0], payload[1]]);
        }
        stream.read_exact(&mut header).expect("a frame header");
    }
    panic!("no close frame");
}

/// A masked client frame.
fn masked(first: u8, length_bytes: &[u8], payload: &[u8]) -> Vec<u8> {
    let mask = [1u8, 2, 3, 4];
    let mut frame = vec![first];
    frame.extend_from_slice(length_bytes);
    frame[1] |= 0x80;
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    frame
}

#[test]
fn bad_client_frames_get_the_protocols_close_codes() {
    let (server, _plugins, ws) = start_ws();
    let _encoder = Encoder::push_live(&server, 30);
    let cases: [(&str, Vec<u8>, u16); 5] = [
        ("unmasked", vec![0x89, 0x02, b'h', b'i'], 1002),
        // 70000 bytes announced, over the default 65536 limit: refused from the header.
        (
            "oversized",
            masked(0x82, &[127, 0, 0, 0, 0, 0, 1, 0x11, 0x70], &[]),
            1009,
        ),
        ("reserved opcode", masked(0x83, &[1], b"x"), 1002),
        ("reserved bit", masked(0xC2, &[1], b"x"), 1002),
        ("fragmented ping", masked(0x09, &[1], b"x"), 1002),
    ];
    for (what, frame, expected) in cases {
        let mut stream = raw_upgraded(ws);
        // Into the stream: media is flowing when the bad frame arrives.
        let mut first = [0u8; 2];
        stream.read_exact(&mut first).unwrap();
        assert_eq!(first[0], 0x82, "a binary frame of media first");
        stream.write_all(&frame).unwrap();
        assert_eq!(close_code(&mut stream, first), expected, "{what}");
        // The server closes the connection after its close frame.
        let mut rest = Vec::new();
        let _ = stream.read_to_end(&mut rest);
        assert!(
            rest.is_empty(),
            "{what}: {} bytes after the close frame",
            rest.len()
        );
    }
}

/// Poll `ferrocast status` until `ok` holds for the ws plugin's generations.
fn wait_for_ws_generations(
    server: &Ferrocast,
    what: &str,
    ok: impl Fn(&[GenerationStatus]) -> bool,
) -> Vec<GenerationStatus> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let generations = server.generations_of("ws");
        if ok(&generations) {
            return generations;
        }
        assert!(
            Instant::now() < deadline,
            "ws generations: expected {what}, got {generations:#?}\nserver log:\n{}",
            server.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn the_ws_plugin_is_swapped_under_a_playing_client() {
    let (server, plugins, ws) = start_ws();
    let _encoder = Encoder::push_live(&server, 40);
    let mut old = client(ws, "/live");
    let before = receive_for(&mut old, Duration::from_secs(2));
    assert!(!before.is_empty(), "the client plays before the swap");

    // A fresh copy is a new inode: a new build as far as the server can tell.
    install_build(
        plugins.path(),
        "libferrocast_ws.so",
        &built_library("libferrocast_ws.so"),
    );
    let reload = server.command(&["reload", "--plugins-only"]);
    assert_eq!(reload.code, Some(0), "reload failed: {}", reload.text);
    assert!(
        reload.text.contains("plugin ws: generation 2"),
        "reload report: {}",
        reload.text
    );

    let mut new = client(ws, "/live");
    wait_for_ws_generations(
        &server,
        "the old client on generation 1 (draining), the new one on generation 2",
        |g| {
            generation(g, 1).is_some_and(|g| g.sessions == 1 && g.role == "draining")
                && generation(g, 2).is_some_and(|g| g.sessions == 1 && g.role == "current")
        },
    );
    // Both keep playing; the old client's stream runs on without a break.
    let mut old_body = before;
    old_body.extend(receive_for(&mut old, Duration::from_secs(3)));
    let new_body = receive_for(&mut new, Duration::from_secs(3));
    assert!(
        new_body.len() > 50_000,
        "the new client got {} bytes",
        new_body.len()
    );
    assert_decodes(server.dir.path(), &old_body, 100);
    assert_decodes(server.dir.path(), &new_body, 40);

    // The old client leaves: generation 1 drains away.
    old.close(None).unwrap();
    let _ = receive_until_closed(&mut old);
    wait_for_ws_generations(&server, "only generation 2", |g| {
        g.len() == 1 && g[0].generation == 2
    });
}

/// Read until the server's answer to our close (bounded by the read timeout).
fn receive_until_closed(socket: &mut tungstenite::WebSocket<TcpStream>) -> usize {
    let mut messages = 0;
    while socket.read().is_ok() && messages < 100_000 {
        messages += 1;
    }
    messages
}

/// A WebSocket client on `path` whose socket has a small receive buffer, so that what it does
/// not read stays on the server instead of in this machine's kernel.
fn client_with_small_receive_buffer(
    address: SocketAddr,
    path: &str,
) -> tungstenite::WebSocket<TcpStream> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(8 * 1024).unwrap();
    socket
        .connect_timeout(&address.into(), Duration::from_secs(5))
        .expect("connect");
    let stream: TcpStream = socket.into();
    stream
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let (socket, response) =
        tungstenite::client(format!("ws://{address}{path}"), stream).expect("WebSocket handshake");
    assert_eq!(response.status(), 101);
    socket
}

/// What a slow client got: media bytes, and the server's close status and reason.
struct SlowOutcome {
    media: usize,
    close: Option<(u16, String)>,
}

/// Read nothing for `stopped` (the server's queue for the client fills up), then read `socket`
/// in bursts of `burst` bytes with `pause` between them, slower than the stream, until the
/// server logs that it dropped a client for lagging; then read at full speed to the server's
/// close. Bounded by `within`.
fn read_slowly_until_dropped(
    server: &Ferrocast,
    socket: &mut tungstenite::WebSocket<TcpStream>,
    stopped: Duration,
    (burst, pause): (usize, Duration),
    within: Duration,
) -> SlowOutcome {
    let deadline = Instant::now() + within;
    std::thread::sleep(stopped);
    let dropped = || server.logs().contains("client keeps falling behind");
    let mut outcome = SlowOutcome {
        media: 0,
        close: None,
    };
    let mut budget = burst;
    let mut fast = false;
    while Instant::now() < deadline {
        match socket.read() {
            Ok(Message::Binary(data)) => {
                outcome.media += data.len();
                budget = budget.saturating_sub(data.len());
            }
            Ok(Message::Close(frame)) => {
                outcome.close = frame.map(|f| (u16::from(f.code), f.reason.to_string()));
                return outcome;
            }
            Ok(_) => {}
            Err(tungstenite::Error::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => {
                return outcome
            }
            Err(e) => panic!("the slow client's read failed: {e}"),
        }
        if !fast && budget == 0 {
            std::thread::sleep(pause);
            budget = burst;
            fast = dropped();
        }
    }
    panic!(
        "the slow client was not dropped within {within:?} ({} bytes read); server log:\n{}",
        outcome.media,
        server.logs()
    );
}

#[test]
fn a_slow_websocket_client_is_skipped_to_keyframes_then_dropped_while_another_plays() {
    let plugins = shipped_plugins_dir(&["http", "ws"]);
    let (http, ws) = (loopback(), loopback());
    // A short ring (16 chunks) makes a paused reader fall off it within seconds; a long write
    // timeout keeps the stall rule out of it, so what ends the client is the lag rule.
    let config = format!(
        "[server]\nwrite_timeout_ms = 30000\nclient_queue = 16\n\n\
         [plugins.http]\nlisten = [\"{http}\"]\n\n[plugins.ws]\nlisten = [\"{ws}\"]\n\n{}",
        point_toml("live", "broadcast", "push", &["http", "ws"])
    );
    let server = Ferrocast::start(&config, plugins.path(), http);
    let _encoder = Encoder::push_live(&server, 120);

    // The normal client reads everything on a thread of its own until told to stop.
    let mut normal = client(ws, "/live");
    let normal_peer = normal.get_ref().local_addr().unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop_normal = std::sync::Arc::clone(&stop);
    let normal_thread = std::thread::spawn(move || {
        let mut body = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(150);
        while !stop_normal.load(std::sync::atomic::Ordering::Relaxed) && Instant::now() < deadline {
            match normal.read().expect("the normal client reads") {
                Message::Binary(data) => body.extend_from_slice(&data),
                Message::Close(frame) => panic!("the normal client was closed: {frame:?}"),
                _ => {}
            }
        }
        body
    });

    let mut slow = client_with_small_receive_buffer(ws, "/live");
    let slow_peer = slow.get_ref().local_addr().unwrap();
    // Stopped for 8 s, then 40 KiB a second: well below the stream's rate (about 70 kB/s).
    let started = Instant::now();
    let outcome = read_slowly_until_dropped(
        &server,
        &mut slow,
        Duration::from_secs(8),
        (40 * 1024, Duration::from_secs(1)),
        Duration::from_secs(100),
    );
    assert_eq!(
        outcome.media % 188,
        0,
        "whole TS packets, even when skipped"
    );
    assert_eq!(
        outcome.close,
        Some((1008, "client too slow for the stream".to_owned())),
        "the slow client's close ({} media bytes read)",
        outcome.media
    );

    // The server skipped the slow client ahead to keyframes before it dropped it, and never
    // touched the normal one.
    let lagging = server.event_lines("CLIENT_LAGGING");
    println!(
        "slow client: {} media bytes in {:?}; lag events:\n{}",
        outcome.media,
        started.elapsed(),
        lagging.join("\n")
    );
    let of = |peer: SocketAddr, message: &str| {
        lagging
            .iter()
            .filter(|l| l.contains(&format!("peer={peer}")) && l.contains(message))
            .count()
    };
    assert!(
        of(slow_peer, "skipping it ahead to the next keyframe") >= 1,
        "no skip logged:\n{}",
        lagging.join("\n")
    );
    assert_eq!(
        of(slow_peer, "disconnecting it"),
        1,
        "{}",
        lagging.join("\n")
    );
    assert!(
        !lagging
            .iter()
            .any(|l| l.contains(&format!("peer={normal_peer}"))),
        "the normal client lagged:\n{}",
        lagging.join("\n")
    );

    // The normal client plays on after the drop, and what it got decodes cleanly.
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let body = normal_thread.join().expect("the normal client's thread");
    assert!(
        body.len() > 500_000,
        "the normal client got {} bytes",
        body.len()
    );
    assert_decodes(server.dir.path(), &body, 250);
}

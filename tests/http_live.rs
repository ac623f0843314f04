//! Live streaming over HTTP with real encoders and players: ffmpeg pushes with PUT (chunked) or
//! a client POSTs with Content-Length, ffmpeg/ffprobe play; late joiners start on a keyframe
//! and decode without errors; a second encoder is refused; slow clients never hold others up.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use ferrocast_tests::*;

#[test]
fn pushed_live_stream_plays_and_a_late_joiner_starts_on_a_keyframe() {
    let (server, _plugins) = start_with_points(&standard_points());
    let _encoder = Encoder::push_live(&server, 40);
    // Join well into a GOP (one keyframe per second), so the joiner must be moved back to one.
    std::thread::sleep(Duration::from_millis(2500));

    let (frames, errors) = first_frames(&server.url("live"), 10);
    assert!(
        errors.trim().is_empty(),
        "ffprobe reported errors: {errors}"
    );
    assert!(frames.len() >= 5, "too few frames: {frames:?}");
    assert_eq!(
        frames[0],
        (true, "I".to_owned()),
        "late joiner must start on a keyframe: {frames:?}"
    );

    let decoded = decode(&server.url("live"), &[], Some(4.0));
    assert!(
        decoded.status.success(),
        "ffmpeg failed: {}",
        decoded.errors
    );
    decoded.assert_clean(80, "the player");

    let logs = server.logs();
    assert!(
        logs.contains("event=\"PUSH_START\"") && logs.contains("point=live"),
        "{logs}"
    );
    assert!(
        logs.lines()
            .any(|l| l.contains("event=\"PLAY\"") && l.contains("point=live")),
        "{logs}"
    );
}

#[test]
fn a_second_encoder_is_refused_with_409() {
    let (server, _plugins) = start_with_points(&standard_points());
    let address = server.http;
    let _encoder = Encoder::push_live(&server, 30);

    let request = b"PUT /live HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n";
    let response = http_exchange(address, request, 4096, Duration::from_secs(5)).unwrap();
    assert_eq!(response.status, 409, "{}", response.head);
    assert!(
        response.body_text().contains("already publishing"),
        "{}",
        response.body_text()
    );
    server.wait_for("event=\"REFUSED\"", Duration::from_secs(5));
}

#[test]
fn no_encoder_means_503_not_an_endless_wait() {
    let (server, _plugins) = start_with_points(&standard_points());
    let address = server.http;
    let response = http_get(address, "/live", 4096);
    assert_eq!(response.status, 503);
    assert!(
        response
            .body_text()
            .contains("no encoder is publishing to `live`"),
        "{}",
        response.body_text()
    );
    drop(server);
}

#[test]
fn content_length_post_feeds_clients_and_the_stream_ends_after_the_grace() {
    let points = standard_points().replace(
        "source = \"push\"\n",
        "source = \"push\"\nreconnect_grace_ms = 500\n",
    );
    let (server, _plugins) = start_with_points(&points);
    let address = server.http;
    let media = std::fs::read(sample_ts()).unwrap();
    let half = (media.len() / 2 / 188) * 188;

    let mut encoder = TcpStream::connect(address).unwrap();
    encoder
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        encoder,
        "POST /live HTTP/1.1\r\nHost: t\r\nContent-Type: video/mp2t\r\nContent-Length: {}\r\n\r\n",
        media.len()
    )
    .unwrap();
    encoder.write_all(&media[..half]).unwrap();
    wait_until_live(address, "/live", Duration::from_secs(10));

    let mut player = TcpStream::connect(address).unwrap();
    player
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    player
        .write_all(b"GET /live HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    encoder.write_all(&media[half..]).unwrap();
    let posted = read_response(&mut encoder, 0, Duration::from_secs(10)).unwrap();
    assert_eq!(posted.status, 200, "{}", posted.head);
    drop(encoder);

    // The player gets the rest of the stream, then a clean end once the grace runs out.
    let started = Instant::now();
    let mut received = Vec::new();
    player
        .read_to_end(&mut received)
        .expect("stream must end, not hang");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "stream should end ~0.5 s after the encoder left"
    );
    let head_end = received.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert!(
        received.starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&received[..head_end])
    );
    let body = &received[head_end..];
    assert!(
        body.len() > media.len() / 3,
        "player got only {} bytes",
        body.len()
    );
    assert_eq!(body.len() % 188, 0, "whole TS packets only");

    assert_decodes(server.dir.path(), body, 101);
    server.wait_for("SOURCE_GAVE_UP", Duration::from_secs(5));
}

#[test]
fn a_client_that_stops_reading_is_dropped_without_disturbing_others() {
    let plugins = standard_plugin_dir();
    let address = loopback();
    let config = config_with(address, &standard_points()).replace(
        "write_timeout_ms = 5000",
        "write_timeout_ms = 1000\nclient_queue = 16",
    );
    let server = Ferrocast::start(&config, plugins.path(), address);
    // Feed the point quickly (8x real time) so the stalled client's buffers fill within seconds.
    let mut feeder = std::process::Command::new("ffmpeg")
        .args([
            "-hide_banner",
            "-loglevel",
            "error",
            "-nostdin",
            "-readrate",
            "8",
            "-stream_loop",
            "-1",
        ])
        .arg("-i")
        .arg(sample_ts())
        .args([
            "-c",
            "copy",
            "-f",
            "mpegts",
            "-method",
            "PUT",
            &server.url("live"),
        ])
        .spawn()
        .unwrap();
    wait_until_live(address, "/live", Duration::from_secs(15));

    let stalled = socket_with_small_receive_buffer(address);
    let mut stalled = stalled;
    stalled
        .write_all(b"GET /live HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();

    let decoded = decode(&server.url("live"), &[], Some(20.0));
    decoded.assert_clean(400, "the healthy client");
    // Once the stalled client's socket buffers are full, its writes make no progress and the
    // server drops it after write_timeout_ms.
    server.wait_for("client stopped reading", Duration::from_secs(40));
    let _ = feeder.kill();
    let _ = feeder.wait();
    drop(stalled);
}

/// A client socket with a tiny receive window (set before connecting, so the window is small
/// from the handshake on), so that not reading stalls the server quickly.
fn socket_with_small_receive_buffer(address: std::net::SocketAddr) -> TcpStream {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(&address.into()).unwrap();
    socket.into()
}

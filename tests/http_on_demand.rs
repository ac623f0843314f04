//! On-demand playback over HTTP: full decode, Range seeks (raw and by ffmpeg), HEAD,
//! keep-alive, directory points with traversal protection, and the 403/404/400 answers. Also
//! checks that the shipped default configuration serves its sample out of the box.

use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

use ferrocast_tests::*;

fn media_points() -> String {
    let directory = workspace().join("config/media").display().to_string();
    let sample = sample_ts().display().to_string();
    format!(
        "{}\n{}\n{}",
        standard_points(),
        point_toml("files", "on-demand", &directory, &["http"]),
        point_toml("private", "on-demand", &sample, &["example"])
    )
}

#[test]
fn on_demand_file_decodes_in_full() {
    let (server, _plugins) = start_with_points(&standard_points());
    let decoded = decode(&server.url("vod"), &[], None);
    assert!(decoded.status.success(), "{}", decoded.errors);
    assert!(
        decoded.errors.trim().is_empty(),
        "decoder errors: {}",
        decoded.errors
    );
    // 12 s at 25 fps.
    assert_eq!(decoded.video_frames, 300);
}

#[test]
fn range_requests_return_exact_bytes() {
    let (server, _plugins) = start_with_points(&standard_points());
    let media = std::fs::read(sample_ts()).unwrap();
    let size = media.len();

    let head = http_exchange(
        server.http,
        b"HEAD /vod HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        0,
        Duration::from_secs(5),
    )
    .unwrap();
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-length"), Some(size.to_string()));
    assert_eq!(head.header("accept-ranges").as_deref(), Some("bytes"));
    assert!(head.body.is_empty());

    let ranged = get_range(server.http, "1000-1999");
    assert_eq!(ranged.status, 206);
    assert_eq!(
        ranged.header("content-range"),
        Some(format!("bytes 1000-1999/{size}"))
    );
    assert_eq!(ranged.body, media[1000..2000]);

    let suffix = get_range(server.http, "-188");
    assert_eq!(suffix.status, 206);
    assert_eq!(suffix.body, media[size - 188..]);

    let refused = get_range(server.http, &format!("{size}-"));
    assert_eq!(refused.status, 416);
    assert_eq!(
        refused.header("content-range"),
        Some(format!("bytes */{size}"))
    );
}

#[test]
fn ffmpeg_seeks_with_range_and_decodes_from_there() {
    let (server, _plugins) = start_with_points(&standard_points());
    // ffmpeg seeks in an HTTP resource by byte position (Range requests), so it resumes
    // mid-GOP; its H.264 decoder then reports the B-frames before the next keyframe as
    // missing references, with any server. Decoding only keyframes keeps the check strict:
    // every keyframe after the seek must decode without a single error.
    let decoded = decode(
        &server.url("vod"),
        &["-skip_frame", "nokey", "-ss", "6"],
        Some(3.0),
    );
    assert!(decoded.status.success(), "{}", decoded.errors);
    assert!(
        decoded.errors.trim().is_empty(),
        "decoder errors after seek: {}",
        decoded.errors
    );
    // One keyframe a second: about 3 in 3 s (ffmpeg may round the window either way).
    assert!(
        (2..=4).contains(&decoded.video_frames),
        "{} keyframes for 3 s",
        decoded.video_frames
    );
    let logs = server.logs();
    assert!(
        logs.lines().any(|l| l.contains("event=\"PLAY\"")
            && l.contains("point=vod")
            && !l.contains("start=0")),
        "no ranged PLAY in the log:\n{logs}"
    );
}

#[test]
fn keep_alive_serves_several_requests_on_one_connection() {
    let (server, _plugins) = start_with_points(&standard_points());
    let media = std::fs::read(sample_ts()).unwrap();
    let mut stream = TcpStream::connect(server.http).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    // Two pipelined requests, answered in order.
    stream
        .write_all(b"GET /vod HTTP/1.1\r\nHost: t\r\nRange: bytes=0-187\r\n\r\nGET /vod HTTP/1.1\r\nHost: t\r\nRange: bytes=188-375\r\n\r\n")
        .unwrap();
    // Read until both responses are in: each is a head plus its Content-Length of body.
    let mut data = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let responses = loop {
        if let Some(parsed) = split_responses(&data, 2) {
            break parsed;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "got {:?}",
            String::from_utf8_lossy(&data)
        );
        let mut buf = [0u8; 4096];
        let n = std::io::Read::read(&mut stream, &mut buf).unwrap();
        assert!(n > 0, "connection closed after {} bytes", data.len());
        data.extend_from_slice(&buf[..n]);
    };
    let (first, second) = (&responses[0], &responses[1]);
    assert!(first.0.starts_with("HTTP/1.1 206"), "{}", first.0);
    assert_eq!(first.1, media[..188]);
    assert!(second.0.starts_with("HTTP/1.1 206"), "{}", second.0);
    assert_eq!(second.1, media[188..376]);
}

#[test]
fn directory_points_serve_files_and_refuse_traversal() {
    let (server, _plugins) = start_with_points(&media_points());
    let size = std::fs::metadata(sample_ts()).unwrap().len();
    let file = http_get(server.http, "/files/sample.ts", 0);
    assert_eq!(file.status, 200);
    assert_eq!(file.header("content-length"), Some(size.to_string()));

    for path in [
        "/files/../ferrocast.toml",
        "/files/%2e%2e/ferrocast.toml",
        "/files/..%2fferrocast.toml",
    ] {
        let response = http_get(server.http, path, 4096);
        assert!(
            matches!(response.status, 400 | 403),
            "{path}: {}",
            response.head
        );
    }
    assert_eq!(http_get(server.http, "/files/missing.ts", 4096).status, 404);
    assert_eq!(http_get(server.http, "/files", 4096).status, 404);
}

#[test]
fn unknown_points_disabled_protocols_and_garbage_get_clear_answers() {
    let (server, _plugins) = start_with_points(&media_points());
    let missing = http_get(server.http, "/nope", 4096);
    assert_eq!(missing.status, 404);
    // Clear, without repeating the request back to the client.
    assert_eq!(
        missing.body_text(),
        "no such publishing point or file\n",
        "{}",
        missing.body_text()
    );

    let disabled = http_get(server.http, "/private", 4096);
    assert_eq!(disabled.status, 403);
    assert!(
        disabled
            .body_text()
            .contains("HTTP is not enabled on publishing point `private`"),
        "{}",
        disabled.body_text()
    );

    let garbage = http_exchange(
        server.http,
        b"\x16\x03\x01\x02\x00 not http\r\n\r\n",
        4096,
        Duration::from_secs(5),
    )
    .unwrap();
    assert_eq!(garbage.status, 400, "{}", garbage.head);

    let huge = format!(
        "GET /vod HTTP/1.1\r\nHost: t\r\nX-Big: {}\r\n\r\n",
        "a".repeat(40_000)
    );
    let oversized =
        http_exchange(server.http, huge.as_bytes(), 4096, Duration::from_secs(5)).unwrap();
    assert_eq!(oversized.status, 431);

    // The server is unaffected.
    assert_eq!(http_get(server.http, "/vod", 0).status, 200);
}

#[test]
fn a_stalled_request_head_times_out() {
    let plugins = standard_plugin_dir();
    let address = loopback();
    let config = format!(
        "{}\n",
        config_with(address, &standard_points()).replace(
            &format!("listen = [\"{address}\"]"),
            &format!("listen = [\"{address}\"]\nheader_timeout_ms = 500")
        )
    );
    let server = Ferrocast::start(&config, plugins.path(), address);
    let mut stream = TcpStream::connect(server.http).unwrap();
    stream.write_all(b"GET /vod HTTP/1.1\r\nHost:").unwrap();
    let response = read_response(&mut stream, 4096, Duration::from_secs(5)).unwrap();
    assert_eq!(response.status, 408);
}

#[test]
fn the_default_configuration_serves_its_sample_out_of_the_box() {
    let plugins = all_plugins_dir();
    let address = loopback();
    let shipped = std::fs::read_to_string(workspace().join("config/ferrocast.toml")).unwrap();
    let media = workspace().join("config/media");
    let raw_tcp = loopback();
    let rtsp = loopback();
    let config = shipped
        .replace("0.0.0.0:8080", &address.to_string())
        .replace("127.0.0.1:8090", &loopback().to_string())
        .replace("0.0.0.0:8554", &rtsp.to_string())
        .replace("0.0.0.0:8082", &loopback().to_string())
        .replace("0.0.0.0:9000", &raw_tcp.to_string())
        .replace("\"9000\"", &format!("\"{}\"", raw_tcp.port()))
        .replace(
            "\"media/sample.ts\"",
            &format!("\"{}\"", media.join("sample.ts").display()),
        )
        .replace("\"media\"", &format!("\"{}\"", media.display()));
    let server = Ferrocast::start(&config, plugins.path(), address);
    let decoded = decode(&server.url("vod"), &[], Some(2.0));
    decoded.assert_clean(45, "the player");
    assert_eq!(http_get(address, "/files/sample.ts", 0).status, 200);
    let over_rtsp = decode(&format!("rtsp://{rtsp}/vod"), &[], Some(2.0));
    over_rtsp.assert_clean(45, "over RTSP");
}

/// `GET /vod` with `Range: bytes={range}` on a connection of its own.
fn get_range(address: std::net::SocketAddr, range: &str) -> Response {
    let request = format!(
        "GET /vod HTTP/1.1\r\nHost: t\r\nRange: bytes={range}\r\nConnection: close\r\n\r\n"
    );
    http_exchange(address, request.as_bytes(), 4096, Duration::from_secs(5)).unwrap()
}

/// The first `count` responses in `data` as (head, body), if all are complete.
fn split_responses(data: &[u8], count: usize) -> Option<Vec<(String, Vec<u8>)>> {
    let mut responses = Vec::new();
    let mut rest = data;
    while responses.len() < count {
        let head_end = rest.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
        let head = String::from_utf8_lossy(&rest[..head_end]).into_owned();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("Content-Length: "))
            .and_then(|v| v.trim().parse().ok())?;
        if rest.len() < head_end + length {
            return None;
        }
        responses.push((head, rest[head_end..head_end + length].to_vec()));
        rest = &rest[head_end + length..];
    }
    Some(responses)
}

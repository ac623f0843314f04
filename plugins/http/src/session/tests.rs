//! Behaviour tests of [`HttpSession`] against [`MockHost`], fed with requests captured from
//! real clients (see `tests/fixtures/README.md`).

use std::ops::{Deref, DerefMut};

use super::*;
use ferrocast_plugin_api::testing::MockHost;
use ferrocast_plugin_api::Credentials;
use ferrocast_plugin_kit::chunked::ChunkedDecoder;
use ferrocast_plugin_kit::testing::{unique_header, SessionHarness};

const FFMPEG_GET_LIVE: &[u8] = include_bytes!("../../tests/fixtures/ffmpeg-get-live.http");
const FFPROBE_GET_VOD: &[u8] = include_bytes!("../../tests/fixtures/ffprobe-get-vod.http");
const CURL_RANGE: &[u8] = include_bytes!("../../tests/fixtures/curl-range.http");
const CURL_HEAD: &[u8] = include_bytes!("../../tests/fixtures/curl-head.http");
const CURL_HTTP10: &[u8] = include_bytes!("../../tests/fixtures/curl-http10.http");
const FFMPEG_PUT: &[u8] = include_bytes!("../../tests/fixtures/ffmpeg-put-live.http");
/// The body of `FFMPEG_PUT`, de-chunked independently by Python when captured.
const FFMPEG_PUT_BODY: &[u8] = include_bytes!("../../tests/fixtures/ffmpeg-put-live.ts");
const CURL_POST_CHUNKED: &[u8] = include_bytes!("../../tests/fixtures/curl-post-chunked.http");
const CURL_PUT_LENGTH: &[u8] = include_bytes!("../../tests/fixtures/curl-put-length.http");
const ICECAST_PUT: &[u8] = include_bytes!("../../tests/fixtures/ffmpeg-icecast-put.http");
const ICECAST_SOURCE: &[u8] = include_bytes!("../../tests/fixtures/ffmpeg-icecast-source.http");

/// A session on a mock host with a live point `live` and on-demand points `vod` and
/// `vod/clip.ts` of 1000 bytes each.
struct Client {
    harness: SessionHarness<HttpSession>,
}

impl Deref for Client {
    type Target = SessionHarness<HttpSession>;

    fn deref(&self) -> &Self::Target {
        &self.harness
    }
}

impl DerefMut for Client {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.harness
    }
}

impl Client {
    fn new() -> Self {
        Self::with_config(Config::default())
    }

    fn with_config(config: Config) -> Self {
        let mut mock = MockHost::new();
        mock.add_point("live", PointKind::BROADCAST, 0)
            .add_point("vod", PointKind::ON_DEMAND, 1000)
            .add_point("vod/clip.ts", PointKind::ON_DEMAND, 1000);
        Self {
            harness: SessionHarness::new(mock, HttpSession::new(config)),
        }
    }

    fn fire_header_timer(&mut self) {
        self.fire(HEADER_TIMER);
    }

    /// Take the written bytes and parse them as one response; `head_only` for a HEAD.
    fn response(&mut self) -> Response {
        let written = self.take_written();
        let (response, rest) = Response::parse(&written, false);
        assert!(
            rest.is_empty(),
            "more than one response: {:?}",
            String::from_utf8_lossy(rest)
        );
        response
    }

    fn head_response(&mut self) -> Response {
        let written = self.take_written();
        let (response, rest) = Response::parse(&written, true);
        assert!(rest.is_empty(), "more than one response");
        response
    }

    fn header_timer(&self) -> Option<u64> {
        self.timer(HEADER_TIMER)
    }
}

/// A response as the client sees it, parsed with httparse.
#[derive(Debug)]
struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Response {
    /// Parse one response from `bytes`; the body is `Content-Length` bytes, or the rest when
    /// the length is absent. Media bodies are streamed by the host after `play`, never written
    /// by the session, so an MPEG-TS response is only a head here. Returns the bytes after it.
    fn parse(bytes: &[u8], head_only: bool) -> (Self, &[u8]) {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut parsed = httparse::Response::new(&mut headers);
        let httparse::Status::Complete(len) = parsed.parse(bytes).expect("valid response") else {
            panic!("incomplete response: {:?}", String::from_utf8_lossy(bytes));
        };
        let status = parsed.code.unwrap();
        assert_eq!(parsed.reason, Some(response::reason(status)));
        assert_eq!(parsed.version, Some(1));
        let headers: Vec<(String, String)> = parsed
            .headers
            .iter()
            .map(|h| {
                (
                    h.name.to_owned(),
                    String::from_utf8(h.value.to_vec()).unwrap(),
                )
            })
            .collect();
        let mut response = Self {
            status,
            headers,
            body: Vec::new(),
        };
        let rest = &bytes[len..];
        let body_len = match response.get("Content-Length") {
            _ if head_only || status == 204 => 0,
            _ if response.get("Content-Type") == Some("video/mp2t") => 0,
            Some(length) => length.parse().unwrap(),
            None => rest.len(),
        };
        response.body = rest[..body_len].to_vec();
        (response, &rest[body_len..])
    }

    fn get<'a>(&'a self, name: &'a str) -> Option<&'a str> {
        unique_header(&self.headers, name)
    }

    fn text(&self) -> &str {
        std::str::from_utf8(&self.body).unwrap()
    }

    /// An error response: plain-text body, exact length, our Server header.
    fn assert_error(&self, status: u16, body: &str) {
        assert_eq!(self.status, status, "{self:?}");
        assert_eq!(self.text(), format!("{body}\n"));
        assert_eq!(self.get("Content-Type"), Some("text/plain; charset=utf-8"));
        assert_eq!(
            self.get("Content-Length"),
            Some(self.body.len().to_string().as_str())
        );
        assert_eq!(self.get("Server"), Some(SERVER));
        assert_eq!(self.get("X-Content-Type-Options"), Some("nosniff"));
    }
}

fn range(start: u64, end: u64) -> ByteRange {
    ByteRange { start, end }
}

// ---------------------------------------------------------------------------------------------
// Live GET

#[test]
fn live_get_from_real_ffmpeg_plays_all_and_ignores_its_range() {
    let mut client = Client::new();
    client.send(FFMPEG_GET_LIVE); // sends `Range: bytes=0-`, which must not make it a 206
    let response = client.response();
    assert_eq!(response.status, 200);
    assert_eq!(response.get("Content-Type"), Some("video/mp2t"));
    assert_eq!(response.get("Cache-Control"), Some("no-cache, no-store"));
    assert_eq!(response.get("Connection"), Some("close"));
    assert_eq!(response.get("Server"), Some(SERVER));
    assert_eq!(
        response.get("Content-Length"),
        None,
        "live bodies are close-delimited"
    );
    assert_eq!(response.get("Content-Range"), None);
    assert!(response.body.is_empty());
    assert_eq!(client.mock.plays, [("live".to_owned(), ByteRange::ALL)]);
    assert!(
        !client.mock.closed,
        "the host streams until the stream ends"
    );
    assert_eq!(
        client.header_timer(),
        None,
        "no header timeout while streaming"
    );
    assert_eq!(client.logs(LogLevel::INFO), ["GET /live -> 200 (live)"]);

    client.stream_ended(EndReason::SOURCE_ENDED);
    assert!(client.mock.closed);
    assert!(client.mock.written.is_empty());
}

#[test]
fn live_get_refused_by_play_gets_its_own_status_and_no_200() {
    let mut client = Client::new();
    client.mock.play_refusals.insert(
        "live".into(),
        HostError::new(
            ErrorCode::UNAVAILABLE,
            "no encoder is publishing to `live` right now",
        ),
    );
    client.send(b"GET /live HTTP/1.1\r\nHost: t\r\n\r\n");
    let written = client.mock.take_written();
    assert!(written.starts_with("HTTP/1.1 503 "), "{written}");
    assert!(!written.contains("200 OK"), "{written}");
    assert!(
        written.ends_with("no encoder is publishing to `live` right now\n"),
        "{written}"
    );
    assert!(client.mock.closed);
}

#[test]
fn live_get_closes_even_when_the_stream_completes() {
    let mut client = Client::new();
    client.send(b"GET /live HTTP/1.1\r\nHost: x\r\n\r\nGET /vod HTTP/1.1\r\n\r\n");
    assert_eq!(client.response().get("Connection"), Some("close"));
    client.stream_ended(EndReason::COMPLETE);
    assert!(client.mock.closed);
    assert!(
        client.mock.written.is_empty(),
        "the pipelined request is not served"
    );
    assert_eq!(client.mock.plays.len(), 1);
}

#[test]
fn head_on_live_sends_the_head_and_closes() {
    let mut client = Client::new();
    client.send(b"HEAD /live HTTP/1.1\r\nHost: x\r\n\r\n");
    let response = client.head_response();
    assert_eq!(response.status, 200);
    assert_eq!(response.get("Content-Type"), Some("video/mp2t"));
    assert_eq!(response.get("Connection"), Some("close"));
    assert!(client.mock.plays.is_empty());
    assert!(client.mock.closed);
}

// ---------------------------------------------------------------------------------------------
// On-demand GET and HEAD

#[test]
fn on_demand_get_without_range_plays_the_whole_file() {
    let mut client = Client::new();
    client.send(b"GET /vod HTTP/1.1\r\nHost: x\r\n\r\n");
    let response = client.response();
    assert_eq!(response.status, 200);
    assert_eq!(response.get("Content-Length"), Some("1000"));
    assert_eq!(response.get("Accept-Ranges"), Some("bytes"));
    assert_eq!(response.get("Content-Type"), Some("video/mp2t"));
    assert_eq!(response.get("Content-Range"), None);
    assert_eq!(response.get("Connection"), Some("keep-alive"));
    assert_eq!(client.mock.plays, [("vod".to_owned(), range(0, 1000))]);
    assert_eq!(
        client.logs(LogLevel::INFO),
        ["GET /vod -> 200 (on-demand, 1000 bytes)"]
    );
}

#[test]
fn real_ffprobe_get_gets_a_206_for_bytes_0_and_then_closes() {
    let mut client = Client::new();
    client.send(FFPROBE_GET_VOD);
    let response = client.response();
    assert_eq!(response.status, 206);
    assert_eq!(response.get("Content-Range"), Some("bytes 0-999/1000"));
    assert_eq!(response.get("Content-Length"), Some("1000"));
    assert_eq!(
        response.get("Connection"),
        Some("close"),
        "ffprobe sent Connection: close"
    );
    assert_eq!(client.mock.plays, [("vod".to_owned(), range(0, 1000))]);
    client.stream_ended(EndReason::COMPLETE);
    assert!(client.mock.closed);
}

#[test]
fn real_curl_range_request_on_a_directory_item() {
    let mut client = Client::new();
    client.send(CURL_RANGE);
    let response = client.response();
    assert_eq!(response.status, 206);
    assert_eq!(response.get("Content-Range"), Some("bytes 100-199/1000"));
    assert_eq!(response.get("Content-Length"), Some("100"));
    assert_eq!(
        client.mock.plays,
        [("vod/clip.ts".to_owned(), range(100, 200))]
    );
    assert_eq!(
        client.logs(LogLevel::INFO),
        ["GET /vod/clip.ts -> 206 (bytes 100-199/1000)"]
    );
}

#[test]
fn suffix_and_open_ranges() {
    let mut client = Client::new();
    client.send(b"GET /vod HTTP/1.1\r\nRange: bytes=-100\r\nConnection: close\r\n\r\n");
    let response = client.response();
    assert_eq!(response.get("Content-Range"), Some("bytes 900-999/1000"));
    assert_eq!(client.mock.plays, [("vod".to_owned(), range(900, 1000))]);

    let mut client = Client::new();
    client.send(b"GET /vod HTTP/1.1\r\nRange: bytes=640-\r\n\r\n");
    assert_eq!(
        client.response().get("Content-Range"),
        Some("bytes 640-999/1000")
    );
    assert_eq!(client.mock.plays, [("vod".to_owned(), range(640, 1000))]);
}

#[test]
fn unsatisfiable_range_is_a_416_that_keeps_the_connection() {
    let mut client = Client::new();
    client.send(b"GET /vod HTTP/1.1\r\nHost: x\r\nRange: bytes=1000-\r\n\r\n");
    let response = client.response();
    response.assert_error(416, "range `bytes=1000-` is outside `/vod` (1000 bytes)");
    assert_eq!(response.get("Content-Range"), Some("bytes */1000"));
    assert_eq!(response.get("Connection"), Some("keep-alive"));
    assert!(client.mock.plays.is_empty());
    assert!(!client.mock.closed);
    assert_eq!(
        client.header_timer(),
        Some(10_000),
        "re-armed for the next request"
    );
    assert_eq!(
        client.logs(LogLevel::WARN),
        ["GET /vod -> 416: range `bytes=1000-` is outside `/vod` (1000 bytes)"]
    );
}

#[test]
fn unparsable_range_and_if_range_get_the_whole_file() {
    let mut client = Client::new();
    client.send(b"GET /vod HTTP/1.1\r\nRange: bytes=9-1\r\n\r\n");
    assert_eq!(client.response().status, 200);
    let mut client = Client::new();
    client.send(b"GET /vod HTTP/1.1\r\nRange: bytes=0-9\r\nIf-Range: \"abc\"\r\n\r\n");
    assert_eq!(client.response().status, 200);
    assert_eq!(client.mock.plays, [("vod".to_owned(), range(0, 1000))]);
}

#[test]
fn real_curl_head_on_demand_keeps_the_connection_for_the_next_request() {
    let mut client = Client::new();
    client.send(CURL_HEAD);
    let response = client.head_response();
    assert_eq!(response.status, 200);
    assert_eq!(
        response.get("Content-Length"),
        Some("1000"),
        "the length a GET would have"
    );
    assert_eq!(response.get("Accept-Ranges"), Some("bytes"));
    assert!(client.mock.plays.is_empty());
    assert!(!client.mock.closed);
    assert_eq!(client.header_timer(), Some(10_000));

    client.send(CURL_RANGE);
    assert_eq!(client.response().status, 206);
    assert_eq!(client.mock.plays.len(), 1);
}

#[test]
fn empty_file_is_answered_without_playing() {
    let mut client = Client::new();
    client.mock.add_point("empty", PointKind::ON_DEMAND, 0);
    client.send(b"GET /empty HTTP/1.1\r\n\r\n");
    let response = client.response();
    assert_eq!(
        (response.status, response.get("Content-Length")),
        (200, Some("0"))
    );
    assert!(client.mock.plays.is_empty());
    assert_eq!(
        client.header_timer(),
        Some(10_000),
        "the response is already complete"
    );
}

// ---------------------------------------------------------------------------------------------
// Keep-alive and pipelining

#[test]
fn pipelined_requests_wait_for_the_stream_to_complete() {
    let mut client = Client::new();
    let mut pipeline = CURL_RANGE.to_vec();
    pipeline.extend_from_slice(CURL_HEAD);
    pipeline.extend_from_slice(b"GET /vod HTTP/1.1\r\nRange: bytes=0-9\r\n\r\n");
    client.send(&pipeline);

    assert_eq!(client.response().status, 206);
    assert_eq!(
        client.mock.plays,
        [("vod/clip.ts".to_owned(), range(100, 200))]
    );
    assert_eq!(client.header_timer(), None);

    // Bytes arriving during the response are held too.
    client.send(b"OPTIONS * HTTP/1.1\r\n\r\n");
    assert!(
        client.mock.written.is_empty(),
        "nothing parsed while streaming"
    );

    client.stream_ended(EndReason::COMPLETE);
    // The HEAD is answered at once, then the GET starts streaming and parsing stops again.
    let written = std::mem::take(&mut client.mock.written);
    let (head, rest) = Response::parse(&written, true);
    assert_eq!(head.get("Content-Length"), Some("1000"));
    let (get, rest) = Response::parse(rest, false);
    assert!(rest.is_empty());
    assert_eq!(get.get("Content-Range"), Some("bytes 0-9/1000"));
    assert_eq!(client.mock.plays.len(), 2);
    assert_eq!(client.mock.plays[1], ("vod".to_owned(), range(0, 10)));

    client.stream_ended(EndReason::COMPLETE);
    let response = client.response();
    assert_eq!(response.status, 204);
    assert!(!client.mock.closed);
    assert_eq!(client.header_timer(), Some(10_000));
}

#[test]
fn a_stream_that_does_not_complete_closes_the_connection() {
    let mut client = Client::new();
    client.send(CURL_RANGE);
    client.send(CURL_HEAD);
    client.mock.written.clear();
    client.stream_ended(EndReason::SOURCE_ERROR);
    assert!(client.mock.closed);
    assert!(
        client.mock.written.is_empty(),
        "the pipelined HEAD is dropped"
    );
}

#[test]
fn http10_closes_unless_keep_alive_is_asked_for() {
    let mut client = Client::new();
    client.send(CURL_HTTP10);
    assert_eq!(client.response().get("Connection"), Some("close"));
    client.stream_ended(EndReason::COMPLETE);
    assert!(client.mock.closed);

    let mut client = Client::new();
    client.send(b"GET /vod HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    assert_eq!(client.response().get("Connection"), Some("keep-alive"));
    client.stream_ended(EndReason::COMPLETE);
    assert!(!client.mock.closed);
}

#[test]
fn keepalive_requests_limits_requests_per_connection() {
    let mut client = Client::with_config(Config {
        keepalive_requests: 2,
        ..Config::default()
    });
    client.send(CURL_HEAD);
    assert_eq!(client.head_response().get("Connection"), Some("keep-alive"));
    client.send(CURL_HEAD);
    assert_eq!(client.head_response().get("Connection"), Some("close"));
    assert!(client.mock.closed);
}

#[test]
fn too_much_pipelined_input_closes_after_the_current_response() {
    let mut client = Client::with_config(Config {
        max_header_bytes: 1024,
        ..Config::default()
    });
    client.send(CURL_RANGE);
    client.response();
    for _ in 0..20 {
        client.send(CURL_HEAD);
    }
    assert!(!client.mock.closed, "the current response goes on");
    client.stream_ended(EndReason::COMPLETE);
    assert!(client.mock.closed);
    assert!(client.mock.written.is_empty());
    assert_eq!(client.logs(LogLevel::WARN).len(), 1);
}

#[test]
fn a_get_with_a_body_closes_after_the_response() {
    let mut client = Client::new();
    client.send(b"GET /vod HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello");
    assert_eq!(client.response().get("Connection"), Some("close"));
}

#[test]
fn idle_keep_alive_connection_closes_silently_on_timeout() {
    let mut client = Client::new();
    client.send(CURL_HEAD);
    client.head_response();
    client.fire_header_timer();
    assert!(client.mock.closed);
    assert!(client.mock.written.is_empty());
}

// ---------------------------------------------------------------------------------------------
// Refusals

#[test]
fn unknown_point_is_a_404_that_does_not_echo_the_request() {
    let mut client = Client::new();
    client.send(b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n");
    let response = client.response();
    response.assert_error(404, "no such publishing point or file");
    assert_eq!(response.get("X-Content-Type-Options"), Some("nosniff"));
    assert_eq!(response.get("Connection"), Some("keep-alive"));
    assert!(!client.mock.closed);
    assert_eq!(
        client.logs(LogLevel::WARN),
        ["GET /nope -> 404: no such publishing point or file"]
    );
}

#[test]
fn head_404_has_the_length_but_no_body() {
    let mut client = Client::new();
    client.send(b"HEAD /nope HTTP/1.1\r\n\r\n");
    let response = client.head_response();
    assert_eq!(response.status, 404);
    assert_eq!(response.get("Content-Length"), Some("33"));
    assert!(response.body.is_empty());
}

#[test]
fn empty_path_is_a_404_that_explains_the_url_form() {
    let mut client = Client::new();
    client.send(b"GET /?x=1 HTTP/1.1\r\n\r\n");
    client
        .response()
        .assert_error(404, "no publishing point in the request path; use /<point>");
}

#[test]
fn disabled_protocol_and_forbidden_are_403() {
    let mut client = Client::new();
    client.mock.refuse(
        "live",
        ErrorCode::PROTOCOL_DISABLED,
        "HTTP is not enabled on publishing point `live`",
    );
    client.send(b"GET /live HTTP/1.1\r\n\r\n");
    client
        .response()
        .assert_error(403, "HTTP is not enabled on publishing point `live`");

    client
        .mock
        .refuse("vod/secret", ErrorCode::FORBIDDEN, "outside the point");
    client.send(b"GET /vod/secret HTTP/1.1\r\n\r\n");
    client.response().assert_error(403, "outside the point");
    assert!(!client.mock.closed);
}

#[test]
fn draining_and_unknown_host_errors_close() {
    let mut client = Client::new();
    client
        .mock
        .refuse("live", ErrorCode::DRAINING, "point `live` is draining");
    client.send(b"GET /live HTTP/1.1\r\n\r\n");
    let response = client.response();
    response.assert_error(503, "point `live` is draining");
    assert_eq!(response.get("Connection"), Some("close"));
    assert!(client.mock.closed);

    let mut client = Client::new();
    client.mock.refuse("live", ErrorCode(999), "something new");
    client.send(b"GET /live HTTP/1.1\r\n\r\n");
    client.response().assert_error(500, "something new");
    assert!(client.mock.closed);
}

#[test]
fn over_capacity_is_a_503_with_retry_after_and_closes() {
    let mut client = Client::new();
    client.mock.refuse(
        "live",
        ErrorCode::OVER_CAPACITY,
        "the server is at its connection limit (max_connections)",
    );
    client.send(b"GET /live HTTP/1.1\r\n\r\n");
    let response = client.response();
    response.assert_error(
        503,
        "the server is at its connection limit (max_connections)",
    );
    assert_eq!(response.get("Retry-After"), Some("5"));
    assert_eq!(response.get("Connection"), Some("close"));
    assert!(client.mock.closed);
}

#[test]
fn host_error_codes_map_to_statuses() {
    let cases = [
        (ErrorCode::NOT_FOUND, 404),
        (ErrorCode::PROTOCOL_DISABLED, 403),
        (ErrorCode::FORBIDDEN, 403),
        (ErrorCode::ALREADY_PUBLISHING, 409),
        (ErrorCode::WRONG_KIND, 405),
        (ErrorCode::BAD_RANGE, 416),
        (ErrorCode::UNAVAILABLE, 503),
        (ErrorCode::DRAINING, 503),
        (ErrorCode::OVER_CAPACITY, 503),
        (ErrorCode::INVALID_STATE, 409),
        (ErrorCode(0), 500),
    ];
    for (code, status) in cases {
        assert_eq!(status_for(code), status, "{code:?}");
    }
}

#[test]
fn wrong_kind_on_get_is_a_405_with_allow() {
    let mut client = Client::new();
    client
        .mock
        .refuse("odd", ErrorCode::WRONG_KIND, "not playable");
    client.send(b"GET /odd HTTP/1.1\r\n\r\n");
    let response = client.response();
    response.assert_error(405, "not playable");
    assert_eq!(response.get("Allow"), Some("PUT, POST"));
}

#[test]
fn garbage_is_a_400_and_closes() {
    let mut client = Client::new();
    client.send(b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03\r\n\r\n");
    let response = client.response();
    assert_eq!(response.status, 400);
    assert!(
        response.text().starts_with("malformed request: "),
        "{}",
        response.text()
    );
    assert_eq!(response.get("Connection"), Some("close"));
    assert!(client.mock.closed);
    assert_eq!(client.header_timer(), None);
    assert_eq!(client.logs(LogLevel::WARN).len(), 1);

    // Input after the close is ignored.
    client.send(b"GET /live HTTP/1.1\r\n\r\n");
    assert!(client.mock.written.is_empty());
}

#[test]
fn malformed_targets_and_framing_are_400() {
    for request in [
        &b"GET /vod/../etc/passwd HTTP/1.1\r\n\r\n"[..],
        b"GET /vod/%2E%2E/x HTTP/1.1\r\n\r\n",
        b"GET /%zz HTTP/1.1\r\n\r\n",
        b"GET live HTTP/1.1\r\n\r\n",
        b"GET * HTTP/1.1\r\n\r\n",
        b"PUT /live HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"PUT /live HTTP/1.1\r\nContent-Length: abc\r\n\r\n",
    ] {
        let mut client = Client::new();
        client.send(request);
        let response = client.response();
        assert_eq!(
            response.status,
            400,
            "{:?}",
            String::from_utf8_lossy(request)
        );
        assert!(client.mock.closed);
        assert!(client.mock.published.is_empty() && client.mock.plays.is_empty());
    }
}

#[test]
fn absolute_form_target_is_accepted() {
    let mut client = Client::new();
    client.send(b"GET http://127.0.0.1:8080/vod/clip.ts?t=1 HTTP/1.1\r\n\r\n");
    assert_eq!(client.response().status, 200);
    assert_eq!(client.mock.plays[0].0, "vod/clip.ts");
}

#[test]
fn oversized_head_is_a_431() {
    let mut client = Client::with_config(Config {
        max_header_bytes: 1024,
        ..Config::default()
    });
    client.send(b"GET /live HTTP/1.1\r\nCookie: ");
    client.send(&[b'a'; 600]);
    assert!(client.mock.written.is_empty(), "still within the limit");
    client.send(&[b'a'; 600]);
    let response = client.response();
    response.assert_error(431, "request head too large");
    assert_eq!(response.get("Connection"), Some("close"));
    assert!(client.mock.closed);
}

#[test]
fn incomplete_head_times_out_with_408() {
    let mut client = Client::new();
    client.send(b"GET /live HTTP/1.1\r\nHost: 127.0.0.1\r\n");
    assert_eq!(client.header_timer(), Some(10_000));
    client.send(b"User-Agent: slow\r\n");
    client.fire_header_timer();
    let response = client.response();
    response.assert_error(408, "request head not received within 10000 ms");
    assert_eq!(response.get("Connection"), Some("close"));
    assert!(client.mock.closed);
}

#[test]
fn header_timer_is_cancelled_once_the_head_is_complete() {
    let mut client = Client::new();
    client.send_in_pieces(FFMPEG_GET_LIVE, 10);
    assert_eq!(client.header_timer(), None);
    // A stale expiry (delivered before the cancel took effect) changes nothing.
    client.mock.written.clear();
    client.fire_header_timer();
    assert!(client.mock.written.is_empty());
    assert!(!client.mock.closed);
}

#[test]
fn unknown_methods_are_501() {
    for request in [
        &b"DELETE /live HTTP/1.1\r\n\r\n"[..],
        b"get /live HTTP/1.1\r\n\r\n",
        b"source /live HTTP/1.0\r\n\r\n",
    ] {
        let mut client = Client::new();
        client.send(request);
        let response = client.response();
        assert_eq!(response.status, 501);
        assert!(response
            .text()
            .contains("is not supported; use GET, HEAD, PUT, POST, SOURCE, OPTIONS"));
        assert!(client.mock.closed);
    }
}

#[test]
fn unknown_transfer_coding_is_501_and_other_versions_505() {
    let mut client = Client::new();
    client.send(b"PUT /live HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n");
    client
        .response()
        .assert_error(501, "unsupported transfer coding `gzip`; use chunked");
    assert!(client.mock.published.is_empty());

    let mut client = Client::new();
    client.send(b"GET /live HTTP/3.0\r\n\r\n");
    assert_eq!(client.response().status, 505);
}

#[test]
fn options_lists_the_methods() {
    let mut client = Client::new();
    client.send(b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n");
    let response = client.response();
    assert_eq!(response.status, 204);
    assert_eq!(
        response.get("Allow"),
        Some("GET, HEAD, PUT, POST, SOURCE, OPTIONS")
    );
    assert!(!client.mock.closed);
    assert_eq!(client.logs(LogLevel::INFO), ["OPTIONS * -> 204"]);
}

// ---------------------------------------------------------------------------------------------
// Encoder push

/// Check the final response of a successful push.
fn assert_push_accepted(client: &mut Client) {
    let response = client.response();
    assert_eq!(response.status, 200);
    assert_eq!(response.get("Content-Length"), Some("0"));
    assert_eq!(response.get("Connection"), Some("close"));
    assert!(client.mock.closed);
}

#[test]
fn real_ffmpeg_put_one_byte_at_a_time() {
    let mut client = Client::new();
    client.send_in_pieces(FFMPEG_PUT, 1);
    assert_eq!(client.mock.published, ["live"]);
    assert_eq!(client.mock.pushed, FFMPEG_PUT_BODY);
    assert_push_accepted(&mut client);
    assert_eq!(
        client.logs(LogLevel::INFO),
        [
            "PUT /live -> publishing (body chunked)",
            "PUT /live -> 200 (11844 bytes pushed)"
        ]
    );
}

#[test]
fn real_ffmpeg_put_in_seven_byte_pieces_streams_without_buffering() {
    let mut client = Client::new();
    let (most, last) = FFMPEG_PUT.split_at(FFMPEG_PUT.len() - 5);
    let mut pushed_so_far = Vec::new();
    for part in most.chunks(7) {
        client.send(part);
        pushed_so_far.push(client.mock.pushed.len());
    }
    // Media reaches the host as it arrives, well before the body ends.
    assert!(
        pushed_so_far[FFMPEG_PUT.len() / 7 / 2] > 4000,
        "{pushed_so_far:?}"
    );
    assert_eq!(client.mock.pushed, FFMPEG_PUT_BODY);
    assert!(
        client.mock.written.is_empty(),
        "no response before the last chunk"
    );
    assert!(!client.mock.closed);
    assert_eq!(
        client.header_timer(),
        None,
        "no header timeout while a body streams"
    );

    client.send(last);
    assert_eq!(client.mock.pushed, FFMPEG_PUT_BODY);
    assert_push_accepted(&mut client);
}

#[test]
fn real_ffmpeg_put_in_one_piece() {
    let mut client = Client::new();
    client.send(FFMPEG_PUT);
    assert_eq!(client.mock.pushed, FFMPEG_PUT_BODY);
    assert_push_accepted(&mut client);
}

#[test]
fn real_curl_post_chunked() {
    let mut client = Client::new();
    client.send_in_pieces(CURL_POST_CHUNKED, 100);
    assert_eq!(client.mock.published, ["live"]);
    assert_eq!(client.mock.pushed, &FFMPEG_PUT_BODY[..16 * 188]);
    assert_push_accepted(&mut client);
}

#[test]
fn real_curl_put_with_content_length_and_100_continue() {
    let head_len = CURL_PUT_LENGTH
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap()
        + 4;
    let (head, body) = CURL_PUT_LENGTH.split_at(head_len);
    let mut client = Client::new();
    client.send(head);
    assert_eq!(client.mock.written, b"HTTP/1.1 100 Continue\r\n\r\n");
    assert_eq!(client.mock.published, ["live"]);
    client.mock.written.clear();

    client.send_in_pieces(body, 1000);
    assert_eq!(client.mock.pushed, &FFMPEG_PUT_BODY[..16 * 188]);
    assert_push_accepted(&mut client);
}

#[test]
fn content_length_body_ignores_bytes_after_it() {
    let mut client = Client::new();
    client.send(b"POST /live HTTP/1.1\r\nContent-Length: 4\r\n\r\nG\x00\x11\x10trailing junk");
    assert_eq!(client.mock.pushed, b"G\x00\x11\x10");
    assert_push_accepted(&mut client);
}

#[test]
fn empty_push_body_is_accepted_at_once() {
    let mut client = Client::new();
    client.send(b"PUT /live HTTP/1.1\r\nContent-Length: 0\r\nExpect: 100-continue\r\n\r\n");
    assert_eq!(client.mock.published, ["live"]);
    assert!(client.mock.pushed.is_empty());
    assert_push_accepted(&mut client); // no 100 Continue: there is no body to wait for
}

#[test]
fn close_delimited_push_ends_when_the_encoder_closes() {
    let mut client = Client::new();
    client.send(b"PUT /live HTTP/1.1\r\nHost: x\r\n\r\nG@");
    client.send(b"\x11\x10");
    assert_eq!(client.mock.pushed, b"G@\x11\x10");
    assert!(client.mock.written.is_empty());
    client.peer_closed();
    assert_push_accepted(&mut client);
}

/// The head of a captured request: everything up to and including the blank line.
fn head_of(request: &[u8]) -> &[u8] {
    let end = request.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    &request[..end]
}

#[test]
fn icecast_put_gets_100_continue_once_accepted_and_describes_the_source() {
    let mut client = Client::new();
    client.send(ICECAST_PUT);
    assert_eq!(client.mock.published, ["live"]);
    assert_eq!(
        client.take_written(),
        b"HTTP/1.1 100 Continue\r\n\r\n",
        "the body runs until close, and ffmpeg sends none of it before this"
    );
    let basic = &client.mock.credentials[0];
    assert_eq!(basic.kind, ferrocast_plugin_api::CredentialKind::BASIC);
    assert_eq!(
        (basic.user.as_str(), basic.secret.as_str()),
        ("source", "hackme")
    );
    assert_eq!(
        client.mock.source_descriptions,
        [("Radio One".to_owned(), "Live from the loopback".to_owned())]
    );
    assert!(client.logs(LogLevel::INFO).contains(
        &r#"PUT /live: source name "Radio One", description "Live from the loopback""#.to_owned()
    ));
    client.send(&ICECAST_SOURCE[head_of(ICECAST_SOURCE).len()..]);
    assert_eq!(client.mock.pushed.len(), 10 * 188);
    client.peer_closed();
    assert_push_accepted(&mut client);
}

#[test]
fn icecast_put_refused_gets_no_100_continue() {
    let mut client = Client::new();
    client.mock.busy.push("live".to_owned());
    client.send(ICECAST_PUT);
    let written = String::from_utf8(client.take_written()).unwrap();
    assert!(written.starts_with("HTTP/1.1 409 "), "{written}");
    assert!(!written.contains("100 Continue"));
    assert!(client.mock.source_descriptions.is_empty());
}

#[test]
fn legacy_source_is_answered_like_icecast_and_pushes_until_close() {
    let mut client = Client::new();
    client.send_in_pieces(ICECAST_SOURCE, 50);
    assert_eq!(client.mock.published, ["live"]);
    assert_eq!(client.take_written(), b"HTTP/1.0 200 OK\r\n\r\n");
    assert_eq!(client.mock.pushed.len(), 10 * 188);
    assert_eq!(client.mock.credentials[0].user.as_str(), "source");
    assert_eq!(
        client.mock.source_descriptions,
        [("Radio One".to_owned(), String::new())]
    );
    client.peer_closed();
    assert!(client.mock.closed);
    assert!(
        client.mock.written.is_empty(),
        "the answer was given when the source was taken"
    );
    assert_eq!(
        client.logs(LogLevel::INFO).last().map(String::as_str),
        Some("SOURCE /live -> 200 (1880 bytes pushed)")
    );
}

#[test]
fn legacy_source_refused_gets_the_refusal() {
    let mut client = Client::new();
    client
        .mock
        .refuse("live", ErrorCode::UNAUTHORIZED, "wrong password");
    client.send(ICECAST_SOURCE);
    let response = client.response();
    response.assert_error(401, "wrong password");
    assert!(response.get("WWW-Authenticate").is_some());
    assert!(client.mock.pushed.is_empty());
    assert!(client.mock.closed);
}

#[test]
fn push_without_source_headers_describes_nothing() {
    let mut client = Client::new();
    client.send(FFMPEG_PUT);
    assert!(client.mock.source_descriptions.is_empty());
}

#[test]
fn encoder_closing_mid_body_just_closes() {
    let mut client = Client::new();
    client.send(&FFMPEG_PUT[..2000]);
    client.peer_closed();
    assert!(client.mock.closed);
    assert!(client.mock.written.is_empty());
    assert_eq!(client.logs(LogLevel::WARN).len(), 1);
}

#[test]
fn publish_conflict_is_a_409_and_closes() {
    let mut client = Client::new();
    client.mock.busy.push("live".to_owned());
    client.send(FFMPEG_PUT);
    let response = client.response();
    response.assert_error(409, "another encoder is publishing");
    assert_eq!(response.get("Connection"), Some("close"));
    assert!(client.mock.closed);
    assert!(client.mock.pushed.is_empty());
    assert_eq!(
        client.logs(LogLevel::WARN),
        ["PUT /live -> 409: another encoder is publishing"]
    );
}

#[test]
fn publish_refusal_with_expect_sends_no_100() {
    let mut client = Client::new();
    client.send(b"PUT /nope HTTP/1.1\r\nContent-Length: 10\r\nExpect: 100-continue\r\n\r\n");
    let response = client.response();
    response.assert_error(404, "no such publishing point or file");
    assert_eq!(
        response.get("Connection"),
        Some("close"),
        "errors on push always close"
    );
    assert!(client.mock.closed);
}

#[test]
fn push_to_on_demand_point_is_405() {
    let mut client = Client::new();
    client.send(b"PUT /vod HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n");
    let response = client.response();
    response.assert_error(
        405,
        "publishing point `vod` serves files; encoders can only push to broadcast points",
    );
    assert_eq!(response.get("Allow"), Some("GET, HEAD"));
    assert!(client.mock.published.is_empty());
    assert!(client.mock.closed);
}

#[test]
fn chunked_error_during_push_is_a_400() {
    let mut client = Client::new();
    client.send(b"PUT /live HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nG@\x11\x10\r\n");
    client.send(b"zz\r\n");
    assert_eq!(
        client.mock.pushed, b"G@\x11\x10",
        "what was valid was pushed"
    );
    let response = client.response();
    response.assert_error(400, "malformed chunked body: invalid chunk size");
    assert_eq!(response.get("Connection"), Some("close"));
    assert!(client.mock.closed);
}

#[test]
fn push_media_refusal_ends_the_push_with_its_status() {
    let mut client = Client::new();
    client.send(&FFMPEG_PUT[..1000]);
    let pushed = client.mock.pushed.len();
    assert!(pushed > 0);
    client.mock.published.clear(); // the mock now answers push_media with INVALID_STATE
    client.send(&FFMPEG_PUT[1000..]);
    assert_eq!(client.mock.pushed.len(), pushed);
    let response = client.response();
    response.assert_error(409, "not publishing");
    assert!(client.mock.closed);

    // Nothing more is decoded or pushed after the refusal.
    client.send(b"c7c\r\n");
    assert!(client.mock.written.is_empty());
}

#[test]
fn stream_ended_during_push_closes() {
    let mut client = Client::new();
    client.send(&FFMPEG_PUT[..500]);
    client.stream_ended(EndReason::POINT_CLOSED);
    assert!(client.mock.closed);
}

// ---------------------------------------------------------------------------------------------
// Robustness

/// A small deterministic generator, so failures reproduce without a fuzzing dependency.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Feed `input` in random pieces, with a stream end now and then when `interrupt`; the session
/// must not panic, and whatever it writes must start with a well-formed status line.
fn survives(input: &[u8], rng: &mut XorShift, interrupt: bool) -> Client {
    let mut client = Client::with_config(Config {
        max_header_bytes: 1024,
        ..Config::default()
    });
    let mut rest = input;
    while !rest.is_empty() {
        let take = 1 + rng.below(rest.len().min(64));
        client.send(&rest[..take]);
        rest = &rest[take..];
        if interrupt && rng.below(8) == 0 {
            client.stream_ended(EndReason::COMPLETE);
        }
    }
    if !client.mock.written.is_empty() {
        let written = std::mem::take(&mut client.mock.written);
        assert!(
            written.starts_with(b"HTTP/1.1 "),
            "{:?}",
            String::from_utf8_lossy(&written)
        );
    }
    client.fire_header_timer();
    client.peer_closed();
    client
}

#[test]
fn random_bytes_and_mutated_fixtures_never_panic() {
    let mut rng = XorShift(0x5eed_f00d_dead_beef);
    for _ in 0..300 {
        let len = rng.below(400);
        let noise: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        survives(&noise, &mut rng, true);
    }
    let fixtures = [
        FFMPEG_PUT,
        CURL_PUT_LENGTH,
        CURL_RANGE,
        FFPROBE_GET_VOD,
        CURL_HEAD,
    ];
    for round in 0..300 {
        let mut input = fixtures[round % fixtures.len()].to_vec();
        input.truncate(2048);
        for _ in 0..1 + rng.below(4) {
            let at = rng.below(input.len());
            input[at] = rng.next() as u8;
        }
        survives(&input, &mut rng, true);
    }
}

#[test]
fn corruption_in_a_push_never_alters_the_media_before_it() {
    let head_len = FFMPEG_PUT
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap()
        + 4;
    let mut rng = XorShift(42);
    for _ in 0..200 {
        let at = head_len + rng.below(FFMPEG_PUT.len() - head_len);
        let mut input = FFMPEG_PUT.to_vec();
        input[at] ^= 1 + rng.below(255) as u8;
        // The payload carried by the bytes before the corrupted one, decoded independently.
        let mut decoder = ChunkedDecoder::new();
        let (mut before, mut intact) = (&FFMPEG_PUT[head_len..at], 0);
        while !before.is_empty() {
            let decoded = decoder.decode(before).unwrap();
            intact += decoded.data.len();
            before = &before[decoded.consumed..];
        }
        let client = survives(&input, &mut rng, false);
        let pushed = &client.mock.pushed;
        assert!(
            pushed.len() >= intact,
            "corruption at {at} lost earlier media: pushed {} of {intact}",
            pushed.len()
        );
        assert_eq!(
            &pushed[..intact],
            &FFMPEG_PUT_BODY[..intact],
            "corruption at {at}"
        );
        assert!(pushed.len() <= input.len() - head_len);
    }
}

#[test]
fn every_request_presents_what_the_client_sent_or_nothing() {
    let mut client = Client::new();
    client.send(b"HEAD /vod?expires=9&token=abc HTTP/1.1\r\nHost: x\r\n\r\n");
    client.send(b"HEAD /vod HTTP/1.1\r\nHost: x\r\nAuthorization: Basic ZW5jOnB3\r\n\r\n");
    client.send(b"GET /vod HTTP/1.1\r\nHost: x\r\nRange: bytes=0-0\r\n\r\n");
    assert_eq!(
        client.mock.credentials,
        vec![
            Credentials::url_query("expires=9&token=abc"),
            Credentials::basic("enc", "pw"),
            Credentials::none(),
        ]
    );
}

#[test]
fn a_push_presents_its_key_before_publishing() {
    let mut client = Client::new();
    client.send(b"PUT /live?key=k3y HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(
        client.mock.credentials,
        vec![Credentials::url_query("key=k3y")]
    );
    assert_eq!(client.mock.published, vec!["live".to_owned()]);
}

#[test]
fn unauthorized_is_401_with_a_basic_challenge() {
    let mut client = Client::new();
    client
        .mock
        .refuse("live", ErrorCode::UNAUTHORIZED, "credentials are required");
    client.send(b"PUT /live HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
    let response = client.response();
    response.assert_error(401, "credentials are required");
    assert_eq!(
        response.get("WWW-Authenticate"),
        Some("Basic realm=\"ferrocast\"")
    );
    assert!(client.mock.published.is_empty());
}

#[test]
fn forbidden_is_403_and_rate_limited_is_429_with_retry_after() {
    let mut client = Client::new();
    client
        .mock
        .refuse("live", ErrorCode::FORBIDDEN, "the signed URL expired");
    client.send(b"GET /live?expires=1&token=x HTTP/1.1\r\nHost: x\r\n\r\n");
    let response = client.response();
    response.assert_error(403, "the signed URL expired");
    assert_eq!(response.get("WWW-Authenticate"), None);

    let mut client = Client::new();
    let message = "too many failed attempts; retry in 17 s";
    client.mock.refuse("live", ErrorCode::RATE_LIMITED, message);
    client.send(b"GET /live HTTP/1.1\r\nHost: x\r\n\r\n");
    let response = client.response();
    response.assert_error(429, message);
    assert_eq!(response.get("Retry-After"), Some("17"));
}

#[test]
fn responses_are_counted_by_status() {
    let mut client = Client::new();
    client.send(b"GET /vod HTTP/1.1\r\nHost: t\r\n\r\n");
    client.stream_ended(EndReason::COMPLETE);
    client.send(b"GET /nope HTTP/1.1\r\nHost: t\r\n\r\nGET /nope HTTP/1.1\r\nHost: t\r\n\r\n");
    let counters = &client.mock.counters;
    assert_eq!(counters.get("responses_200"), Some(&1), "{counters:?}");
    assert_eq!(counters.get("responses_404"), Some(&2), "{counters:?}");
}

#[test]
fn an_rtsp_over_http_request_hands_the_connection_to_rtsp() {
    let get = b"GET /live HTTP/1.1\r\nHost: h\r\nx-sessioncookie: abc\r\nAccept: application/x-rtsp-tunnelled\r\n\r\n";
    for split in [1, 9, usize::MAX] {
        let mut client = Client::new();
        client.send_in_pieces(get, split);
        assert_eq!(
            client.mock.handed_over,
            Some(("rtsp".to_owned(), get.to_vec())),
            "split {split}"
        );
        assert!(client.take_written().is_empty(), "rtsp answers, not http");
        assert!(client.mock.plays.is_empty());
        assert!(!client.mock.closed);
    }
    // A POST with its first base64 in the same read goes over with it.
    let post = b"POST /live HTTP/1.1\r\nx-sessioncookie: abc\r\nContent-Type: application/x-rtsp-tunnelled\r\nContent-Length: 32767\r\n\r\nT1BUSU9O";
    let mut client = Client::new();
    client.send(post);
    assert_eq!(
        client.mock.handed_over,
        Some(("rtsp".to_owned(), post.to_vec()))
    );
}

#[test]
fn only_the_first_request_of_a_connection_may_open_a_tunnel() {
    let mut client = Client::new();
    client.send(b"GET /vod HTTP/1.1\r\nHost: h\r\nRange: bytes=0-0\r\n\r\n");
    client.take_written();
    client.send(b"GET /live HTTP/1.1\r\nHost: h\r\nx-sessioncookie: abc\r\nAccept: application/x-rtsp-tunnelled\r\n\r\n");
    assert_eq!(client.mock.handed_over, None);
}

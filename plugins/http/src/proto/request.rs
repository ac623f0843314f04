//! Incremental parsing of HTTP/1.x request heads.
//!
//! [`HeadReader`] collects bytes as they arrive and yields one [`Request`] per complete head,
//! leaving whatever follows (a body, or pipelined requests) in its buffer; the kit's
//! [`HeadBuffer`] does the incremental search and the size limit. httparse does the
//! tokenising; this module adds what a server must decide on top of it: the request target
//! (origin-form, absolute-form or `*`, then percent-decoded and normalised into a
//! publishing-point path by the kit), message framing (`Content-Length` versus chunked, by the
//! kit's RFC 9112 §6 rules), persistence (`Connection`) and the few headers the session uses.

use ferrocast_plugin_kit::framing::{FramingError, FramingFields};
use ferrocast_plugin_kit::head::{self, HeadBuffer, HeadError};
use ferrocast_plugin_kit::path::normalise_path;
use thiserror::Error;

pub use ferrocast_plugin_kit::framing::Framing;

/// Most header fields in one request. More than this is treated like an oversized head.
const MAX_HEADERS: usize = 64;

/// Why a request head is refused. Each maps to one response status.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum RequestError {
    /// The head exceeds the size limit or has too many fields (`431`).
    #[error("request head too large")]
    TooLarge,
    /// Not a valid HTTP/1.x request (`400`).
    #[error("malformed request: {0}")]
    Malformed(String),
    /// An HTTP version other than 1.0 and 1.1 (`505`).
    #[error("only HTTP/1.0 and HTTP/1.1 are supported")]
    Version,
    /// A transfer coding other than `chunked` (`501`, RFC 9112 §6.1).
    #[error("unsupported transfer coding `{0}`; use chunked")]
    UnsupportedCoding(String),
}

impl RequestError {
    pub fn status(&self) -> u16 {
        match self {
            Self::TooLarge => 431,
            Self::Malformed(_) => 400,
            Self::Version => 505,
            Self::UnsupportedCoding(_) => 501,
        }
    }
}

impl From<FramingError> for RequestError {
    fn from(error: FramingError) -> Self {
        match error {
            FramingError::UnsupportedCoding(coding) => Self::UnsupportedCoding(coding),
            other => Self::Malformed(other.to_string()),
        }
    }
}

/// A parsed request head.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// As sent; methods are case-sensitive.
    pub method: String,
    /// The request target as sent, for logs.
    pub target: String,
    /// The decoded, normalised path without its leading slash, query or empty and `.`
    /// segments: `point` or `point/file`, `""` for `/`. Empty for `*`.
    pub path: String,
    /// The target was `*` (only meaningful for `OPTIONS`).
    pub asterisk: bool,
    /// Minor version: `0` for HTTP/1.0, `1` for HTTP/1.1.
    pub minor_version: u8,
    /// The client allows the connection to stay open after the response.
    pub keep_alive: bool,
    pub framing: Framing,
    /// `Expect: 100-continue` on an HTTP/1.1 request (1.0 clients do not know 100).
    pub expect_continue: bool,
    /// The `Range` header's value.
    pub range: Option<String>,
    /// An `If-Range` header is present.
    pub if_range: bool,
    /// The `Authorization` header's value (never logged).
    pub authorization: Option<String>,
    /// The `If-None-Match` header's value.
    pub if_none_match: Option<String>,
    /// The `If-Modified-Since` header's value.
    pub if_modified_since: Option<String>,
    /// An Icecast source's name for its stream (`Ice-Name`, or SHOUTcast's `icy-name`).
    pub source_name: Option<String>,
    /// An Icecast source's description of its stream (`Ice-Description` or `icy-description`).
    pub source_description: Option<String>,
}

impl Request {
    /// The request carries a body that the server has to read or skip.
    pub fn has_body(&self) -> bool {
        !matches!(self.framing, Framing::None | Framing::Length(0))
    }
}

/// Accumulates input and splits request heads off its front.
#[derive(Debug)]
pub struct HeadReader {
    input: HeadBuffer,
}

impl HeadReader {
    /// A reader refusing heads longer than `max_head` bytes.
    pub fn new(max_head: usize) -> Self {
        Self {
            input: HeadBuffer::new(max_head),
        }
    }

    pub fn push(&mut self, data: &[u8]) {
        self.input.push(data);
    }

    /// Bytes buffered and not yet taken.
    pub fn buffered(&self) -> usize {
        self.input.buffered()
    }

    pub fn is_empty(&self) -> bool {
        self.input.is_empty()
    }

    /// Take everything buffered (the start of a body, say).
    pub fn take(&mut self) -> Vec<u8> {
        self.input.take()
    }

    pub fn clear(&mut self) {
        self.input.clear();
    }

    /// The next complete request head, removed from the buffer; `Ok(None)` until one is
    /// complete. After an error the buffer's contents are meaningless.
    pub fn next_request(&mut self) -> Result<Option<Request>, RequestError> {
        self.input.next_head(parse).map_err(|error| match error {
            HeadError::TooLarge => RequestError::TooLarge,
            HeadError::Parse(error) => error,
        })
    }
}

/// Parse a complete head; `None` if it held only empty lines (httparse skips those, RFC 9112
/// §2.2).
fn parse(head: &[u8]) -> Result<Option<(Request, usize)>, RequestError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    match parsed.parse(head) {
        Ok(httparse::Status::Complete(len)) => Ok(Some((build(&parsed)?, len))),
        Ok(httparse::Status::Partial) => Ok(None),
        Err(httparse::Error::TooManyHeaders) => Err(RequestError::TooLarge),
        Err(httparse::Error::Version) => Err(RequestError::Version),
        Err(error) => Err(RequestError::Malformed(error.to_string())),
    }
}

fn build(parsed: &httparse::Request<'_, '_>) -> Result<Request, RequestError> {
    let method = parsed.method.unwrap_or_default().to_owned();
    let target = parsed.path.unwrap_or_default().to_owned();
    let minor_version = parsed.version.unwrap_or(1);

    let mut connection = Vec::new();
    let mut framing = FramingFields::new();
    let mut expect_continue = false;
    let mut range = None;
    let mut if_range = false;
    let mut authorization = None;
    let mut if_none_match = None;
    let mut if_modified_since = None;
    let mut source_name = None;
    let mut source_description = None;
    let mut hosts = 0;
    for header in parsed.headers.iter() {
        let name = header.name;
        let value = || {
            std::str::from_utf8(header.value)
                .map(str::trim)
                .map_err(|_| RequestError::Malformed(format!("non-UTF-8 value in {name}")))
        };
        if name.eq_ignore_ascii_case("connection") {
            connection.extend(head::list(value()?).map(str::to_ascii_lowercase));
        } else if FramingFields::is_framing(name) {
            framing.add(name, value()?)?;
        } else if name.eq_ignore_ascii_case("expect") {
            expect_continue |= value()?.eq_ignore_ascii_case("100-continue");
        } else if name.eq_ignore_ascii_case("range") {
            range = Some(value()?.to_owned());
        } else if name.eq_ignore_ascii_case("if-range") {
            if_range = true;
        } else if name.eq_ignore_ascii_case("authorization") {
            authorization = Some(value()?.to_owned());
        } else if name.eq_ignore_ascii_case("host") {
            hosts += 1;
        } else if name.eq_ignore_ascii_case("if-none-match") {
            if_none_match = Some(value()?.to_owned());
        } else if name.eq_ignore_ascii_case("if-modified-since") {
            if_modified_since = Some(value()?.to_owned());
        } else if let Some(field) = icecast_field(name) {
            // Source tools of the Latin-1 era send such text unconverted: take it as best we
            // can rather than refuse the encoder over a name.
            let text = String::from_utf8_lossy(header.value).trim().to_owned();
            match field {
                IcecastField::Name => source_name = Some(text),
                IcecastField::Description => source_description = Some(text),
            }
        }
    }
    // Two Host fields are how requests get routed differently by two servers in a chain
    // (RFC 9112 §3.2: a server must answer 400).
    if hosts > 1 {
        return Err(RequestError::Malformed("more than one Host header".into()));
    }

    let framing = framing.framing(minor_version)?;
    let keep_alive = if connection.iter().any(|token| token == "close") {
        false
    } else if minor_version >= 1 {
        true
    } else {
        connection.iter().any(|token| token == "keep-alive")
    };
    let (path, asterisk) = if target == "*" {
        (String::new(), true)
    } else {
        (
            normalise_path(origin_path(&target)?)
                .map_err(|error| RequestError::Malformed(error.to_string()))?,
            false,
        )
    };
    Ok(Request {
        method,
        target,
        path,
        asterisk,
        minor_version,
        keep_alive,
        framing,
        expect_continue: expect_continue && minor_version >= 1,
        range,
        if_range,
        authorization,
        if_none_match,
        if_modified_since,
        source_name,
        source_description,
    })
}

/// The Icecast source headers the server keeps; other `Ice-*`/`icy-*` headers (genre, URL,
/// public, bitrate, audio info) are accepted and ignored.
enum IcecastField {
    Name,
    Description,
}

fn icecast_field(name: &str) -> Option<IcecastField> {
    let lower = name.to_ascii_lowercase();
    let field = lower
        .strip_prefix("ice-")
        .or_else(|| lower.strip_prefix("icy-"))?;
    match field {
        "name" => Some(IcecastField::Name),
        "description" => Some(IcecastField::Description),
        _ => None,
    }
}

/// The path part of an origin-form (`/p?q`) or absolute-form (`http://host/p?q`) target.
fn origin_path(target: &str) -> Result<&str, RequestError> {
    let path = if target.starts_with('/') {
        target
    } else {
        let lower = target.get(..8).unwrap_or(target).to_ascii_lowercase();
        let rest = if lower.starts_with("http://") {
            &target[7..]
        } else if lower.starts_with("https://") {
            &target[8..]
        } else {
            return Err(RequestError::Malformed(format!(
                "request target `{target}` must start with /"
            )));
        };
        rest.find('/').map_or("/", |slash| &rest[slash..])
    };
    Ok(path.split(['?', '#']).next().unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    const FFPROBE: &[u8] = include_bytes!("../../tests/fixtures/ffprobe-get-vod.http");
    const CURL_RANGE: &[u8] = include_bytes!("../../tests/fixtures/curl-range.http");
    const CURL_HTTP10: &[u8] = include_bytes!("../../tests/fixtures/curl-http10.http");
    const FFMPEG_PUT: &[u8] = include_bytes!("../../tests/fixtures/ffmpeg-put-live.http");
    const ICECAST_PUT: &[u8] = include_bytes!("../../tests/fixtures/ffmpeg-icecast-put.http");
    const ICECAST_SOURCE: &[u8] = include_bytes!("../../tests/fixtures/ffmpeg-icecast-source.http");

    fn parse(bytes: &[u8]) -> Result<Option<Request>, RequestError> {
        let mut reader = HeadReader::new(16384);
        reader.push(bytes);
        reader.next_request()
    }

    fn parse_ok(bytes: &[u8]) -> Request {
        parse(bytes).unwrap().expect("complete head")
    }

    #[test]
    fn duplicate_host_headers_are_refused() {
        let mut reader = HeadReader::new(8192);
        reader.push(b"GET /live HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n");
        let error = reader.next_request().unwrap_err();
        assert_eq!(error.status(), 400);
        assert!(error.to_string().contains("more than one Host"));
    }

    #[test]
    fn parses_real_ffprobe_get() {
        let request = parse_ok(FFPROBE);
        assert_eq!(request.method, "GET");
        assert_eq!(request.path, "vod");
        assert_eq!(request.minor_version, 1);
        assert!(!request.keep_alive, "ffprobe sends Connection: close");
        assert_eq!(request.range.as_deref(), Some("bytes=0-"));
        assert_eq!(request.framing, Framing::None);
    }

    #[test]
    fn parses_real_curl_range_and_http10() {
        let request = parse_ok(CURL_RANGE);
        assert_eq!(request.path, "vod/clip.ts");
        assert!(request.keep_alive, "HTTP/1.1 defaults to keep-alive");
        assert_eq!(request.range.as_deref(), Some("bytes=100-199"));
        let request = parse_ok(CURL_HTTP10);
        assert_eq!(request.minor_version, 0);
        assert!(!request.keep_alive, "HTTP/1.0 defaults to close");
        let request = parse_ok(b"GET /vod HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n");
        assert!(request.keep_alive);
    }

    #[test]
    fn parses_real_ffmpeg_put_and_leaves_the_body() {
        let mut reader = HeadReader::new(16384);
        reader.push(FFMPEG_PUT);
        let request = reader.next_request().unwrap().unwrap();
        assert_eq!(
            (request.method.as_str(), request.path.as_str()),
            ("PUT", "live")
        );
        assert_eq!(request.framing, Framing::Chunked);
        assert!(request.has_body());
        let body = reader.take();
        assert!(body.starts_with(b"c7c\r\n\x47"));
        let head_len = FFMPEG_PUT
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap()
            + 4;
        assert_eq!(body, &FFMPEG_PUT[head_len..]);
    }

    #[test]
    fn parses_real_ffmpeg_icecast_sources() {
        let request = parse_ok(ICECAST_PUT);
        assert_eq!(
            (request.method.as_str(), request.path.as_str()),
            ("PUT", "live")
        );
        assert_eq!(request.framing, Framing::None, "the body runs until close");
        assert!(request.expect_continue);
        assert_eq!(request.source_name.as_deref(), Some("Radio One"));
        assert_eq!(
            request.source_description.as_deref(),
            Some("Live from the loopback")
        );
        assert!(request.authorization.is_some());

        let mut reader = HeadReader::new(16384);
        reader.push(ICECAST_SOURCE);
        let request = reader.next_request().unwrap().unwrap();
        assert_eq!(request.method, "SOURCE");
        assert!(!request.expect_continue);
        assert_eq!(request.source_name.as_deref(), Some("Radio One"));
        assert_eq!(request.source_description, None);
        assert_eq!(reader.take().len(), 10 * 188, "the body follows the head");
    }

    #[test]
    fn shoutcast_icy_headers_and_latin1_text_are_accepted() {
        let request = parse_ok(
            b"SOURCE /radio HTTP/1.0\r\nicy-name: Caf\xe9 FM\r\nICY-DESCRIPTION:  jazz \r\nicy-genre: x\r\n\r\n",
        );
        assert_eq!(request.source_name.as_deref(), Some("Caf\u{fffd} FM"));
        assert_eq!(request.source_description.as_deref(), Some("jazz"));
    }

    #[test]
    fn one_byte_at_a_time() {
        let mut reader = HeadReader::new(16384);
        for (i, byte) in CURL_RANGE.iter().enumerate() {
            reader.push(std::slice::from_ref(byte));
            let parsed = reader.next_request().unwrap();
            assert_eq!(parsed.is_some(), i == CURL_RANGE.len() - 1, "byte {i}");
        }
        assert!(reader.is_empty());
    }

    #[test]
    fn pipelined_heads_come_out_one_by_one() {
        let mut reader = HeadReader::new(16384);
        reader.push(b"\r\nGET /a HTTP/1.1\r\n\r\nHEAD /b HTTP/1.1\r\n\r\nGET /c");
        assert_eq!(reader.next_request().unwrap().unwrap().path, "a");
        assert_eq!(reader.next_request().unwrap().unwrap().method, "HEAD");
        assert_eq!(reader.next_request().unwrap(), None);
        assert_eq!(reader.buffered(), 6);
    }

    #[test]
    fn blank_lines_alone_wait_for_a_head() {
        // Bare-LF blank lines once made the search start over at the same terminator forever.
        for blank in [&b"\n\n"[..], b"\r\n\n", b"\n\n\n\n", b"\r\n\r\n"] {
            let mut reader = HeadReader::new(16384);
            reader.push(blank);
            assert_eq!(reader.next_request(), Ok(None), "{blank:?}");
            reader.push(b"GET /live HTTP/1.1\r\n\r\n");
            assert_eq!(reader.next_request().unwrap().unwrap().path, "live");
        }
    }

    #[test]
    fn bare_lf_heads_are_accepted() {
        let request = parse_ok(b"GET /live HTTP/1.1\nHost: x\n\n");
        assert_eq!(request.path, "live");
    }

    #[test]
    fn size_limit_applies_with_and_without_a_terminator() {
        let mut reader = HeadReader::new(1024);
        reader.push(b"GET /live HTTP/1.1\r\nX-Pad: ");
        reader.push(&[b'a'; 1000]);
        assert_eq!(reader.next_request(), Err(RequestError::TooLarge));

        let mut head = b"GET /live HTTP/1.1\r\nX-Pad: ".to_vec();
        head.extend_from_slice(&[b'a'; 1000]);
        head.extend_from_slice(b"\r\n\r\n");
        let mut reader = HeadReader::new(1024);
        reader.push(&head);
        assert_eq!(reader.next_request(), Err(RequestError::TooLarge));

        let mut many = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..=MAX_HEADERS {
            many.extend_from_slice(format!("X-{i}: 1\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert_eq!(parse(&many), Err(RequestError::TooLarge));
    }

    #[test]
    fn garbage_and_bad_versions() {
        assert!(matches!(
            parse(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n"),
            Err(RequestError::Malformed(_))
        ));
        assert!(matches!(
            parse(b"GET /live\r\n\r\n"),
            Err(RequestError::Malformed(_)) | Err(RequestError::Version)
        ));
        assert_eq!(
            parse(b"GET /live HTTP/2.0\r\n\r\n"),
            Err(RequestError::Version)
        );
        assert!(matches!(
            parse(b"GET /live HTTP/1.1\r\nBad Header: x\r\n\r\n"),
            Err(RequestError::Malformed(_))
        ));
    }

    #[test]
    fn paths_are_decoded_and_normalised() {
        let path = |target: &str| {
            parse(format!("GET {target} HTTP/1.1\r\n\r\n").as_bytes())
                .map(|request| request.unwrap().path)
        };
        assert_eq!(path("/live").unwrap(), "live");
        assert_eq!(path("/live?token=1&x=/..").unwrap(), "live");
        assert_eq!(path("//vod/./my%20clip.ts/").unwrap(), "vod/my clip.ts");
        assert_eq!(path("/vod%2Fclip.ts").unwrap(), "vod/clip.ts");
        assert_eq!(path("/caf%C3%A9").unwrap(), "café");
        assert_eq!(path("/").unwrap(), "");
        assert_eq!(path("http://example.com:8080/live?x").unwrap(), "live");
        assert_eq!(path("HTTP://example.com").unwrap(), "");
        for bad in [
            "/vod/../etc/passwd",
            "/vod/%2e%2e/secret",
            "/vod/..%2fsecret",
            "/%zz",
            "/%4",
            "/%+1",
            "/%ff",
            "/a%00b",
            "/a%5cb",
            "live",
            "ftp://host/live",
        ] {
            assert!(
                matches!(path(bad), Err(RequestError::Malformed(_))),
                "{bad}"
            );
        }
        let star = parse_ok(b"OPTIONS * HTTP/1.1\r\n\r\n");
        assert!(star.asterisk);
        assert_eq!(star.path, "");
    }

    #[test]
    fn framing_rules() {
        let framing = |headers: &str| {
            parse(format!("PUT /live HTTP/1.1\r\n{headers}\r\n").as_bytes())
                .map(|r| r.unwrap().framing)
        };
        assert_eq!(framing(""), Ok(Framing::None));
        assert_eq!(framing("Content-Length: 42\r\n"), Ok(Framing::Length(42)));
        assert_eq!(
            framing("Content-Length: 42\r\nContent-Length: 42\r\n"),
            Ok(Framing::Length(42))
        );
        assert_eq!(
            framing("Content-Length: 42, 42\r\n"),
            Ok(Framing::Length(42))
        );
        assert_eq!(
            framing("Transfer-Encoding: Chunked\r\n"),
            Ok(Framing::Chunked)
        );
        for bad in [
            "Content-Length: 42\r\nContent-Length: 43\r\n",
            "Content-Length: -1\r\n",
            "Content-Length: +5\r\n",
            "Content-Length: \r\n",
            "Content-Length: 0x10\r\n",
            "Content-Length: 99999999999999999999999\r\n",
            "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
            "Transfer-Encoding: chunked, identity\r\n",
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
        ] {
            assert!(
                matches!(framing(bad), Err(RequestError::Malformed(_))),
                "{bad:?}"
            );
        }
        assert_eq!(
            framing("Transfer-Encoding: gzip, chunked\r\n"),
            Err(RequestError::UnsupportedCoding("gzip".into()))
        );
        assert!(matches!(
            parse(b"PUT /live HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Err(RequestError::Malformed(_))
        ));
    }

    #[test]
    fn connection_expect_and_if_range() {
        let request = parse_ok(b"PUT /live HTTP/1.1\r\nConnection: TE, Close\r\nExpect: 100-Continue\r\nIf-Range: \"x\"\r\n\r\n");
        assert!(!request.keep_alive);
        assert!(request.expect_continue);
        assert!(request.if_range);
        let request = parse_ok(b"PUT /live HTTP/1.0\r\nExpect: 100-continue\r\n\r\n");
        assert!(
            !request.expect_continue,
            "HTTP/1.0 clients do not understand 100"
        );
    }

    #[test]
    fn errors_map_to_statuses() {
        assert_eq!(RequestError::TooLarge.status(), 431);
        assert_eq!(RequestError::Malformed(String::new()).status(), 400);
        assert_eq!(RequestError::Version.status(), 505);
        assert_eq!(RequestError::UnsupportedCoding("gzip".into()).status(), 501);
    }
}

//! Incremental parsing of what an RTSP client sends on its control connection.
//!
//! Two kinds of message share the connection (RFC 2326 §10.12):
//!
//! - **Requests**: a request line (`METHOD rtsp://host/path RTSP/1.0`), header fields up to a
//!   blank line, and a body of exactly `Content-Length` bytes (none without the header).
//! - **Interleaved binary frames**: `$`, a channel byte, a 16-bit big-endian length and that
//!   many bytes. Players send RTCP receiver reports this way when media comes interleaved
//!   (GStreamer does; ffmpeg 5.1 does not).
//!
//! [`RequestParser`] collects bytes as they arrive and yields one [`Message`] at a time. It
//! looks for the end of a head only in bytes it has not searched before (the kit's
//! [`HeadScanner`]: a head trickling in one byte at a time costs linear time), refuses heads
//! and bodies over its [`Limits`] before buffering more of them, and never buffers the payload
//! of an interleaved frame: it reports the frame's channel and length when the 4-byte header
//! is complete and then discards the payload as it arrives.
//!
//! The parser checks syntax only. What a request means (version `RTSP/1.0`, a valid `CSeq`,
//! the URL) is for the session to judge, so that it can still answer with the request's
//! `CSeq`. Every [`ParseError`] leaves the stream without a known message boundary: the
//! connection has to be closed after the error response.

use ferrocast_plugin_kit::head::{self, HeadScanner};
use thiserror::Error;

/// Most header fields in one request. More than this is treated like an oversized head.
pub const MAX_HEADERS: usize = 64;

/// Size limits for one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest request line plus header fields, terminator included.
    pub max_head: usize,
    /// Largest body (`Content-Length`).
    pub max_body: usize,
}

/// Why the input cannot be parsed further.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum ErrorKind {
    /// The head exceeds [`Limits::max_head`] or has more than [`MAX_HEADERS`] fields.
    #[error("request head too large")]
    HeadTooLarge,
    /// `Content-Length` exceeds [`Limits::max_body`].
    #[error("request body of {0} bytes is too large")]
    BodyTooLarge(u64),
    /// Not an RTSP request.
    #[error("malformed request: {0}")]
    Malformed(String),
}

/// A parse failure, with the request's `CSeq` when one could be found so the error response
/// can still echo it.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[error("{kind}")]
pub struct ParseError {
    pub kind: ErrorKind,
    pub cseq: Option<String>,
}

impl ParseError {
    /// The RTSP status answering this error.
    pub fn status(&self) -> u16 {
        match self.kind {
            ErrorKind::HeadTooLarge | ErrorKind::Malformed(_) => 400,
            ErrorKind::BodyTooLarge(_) => 413,
        }
    }
}

/// A parsed request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// As sent; methods are case-sensitive (RFC 2326 §6.1).
    pub method: String,
    /// The request URI as sent: visible ASCII only, so it is safe to echo.
    pub uri: String,
    /// The protocol version as sent, `RTSP/<major>.<minor>`.
    pub version: String,
    /// Header fields in order, names as sent, values trimmed and folded lines joined.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    /// The value of the first header field named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        head::header(&self.headers, name)
    }

    /// Every value of the header fields named `name` (case-insensitive), in order.
    pub fn headers_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        head::headers_named(&self.headers, name)
    }
}

/// One message from the client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    Request(Request),
    /// An interleaved binary frame. Its payload is skipped by the parser, not returned.
    Interleaved {
        channel: u8,
        length: u16,
    },
}

/// Accumulates input and splits messages off its front.
#[derive(Debug)]
pub struct RequestParser {
    buf: Vec<u8>,
    /// Where the search for the end of the head at the front of `buf` has got to.
    scanner: HeadScanner,
    /// Payload bytes of an interleaved frame still to discard.
    skip: usize,
    /// A complete head waiting for `usize` body bytes.
    pending: Option<(Request, usize)>,
    limits: Limits,
    /// The method at the front of `buf` has been checked (a space followed it).
    method_checked: bool,
    /// Set after an error: the stream has no known message boundary any more.
    failed: bool,
}

impl RequestParser {
    pub fn new(limits: Limits) -> Self {
        Self {
            buf: Vec::new(),
            scanner: HeadScanner::new(),
            skip: 0,
            pending: None,
            limits,
            method_checked: false,
            failed: false,
        }
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Add bytes from the connection.
    pub fn push(&mut self, data: &[u8]) {
        if self.failed {
            return;
        }
        // Payload of an interleaved frame is dropped on arrival rather than buffered.
        let dropped = self.skip.min(data.len());
        if self.buf.is_empty() && dropped > 0 {
            self.skip -= dropped;
            self.buf.extend_from_slice(&data[dropped..]);
        } else {
            self.buf.extend_from_slice(data);
        }
    }

    /// Bytes buffered and not yet returned as a message.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// A message has started and is not complete: a partial head, a head waiting for its
    /// body, or an interleaved frame whose payload has not all arrived.
    pub fn in_message(&self) -> bool {
        !self.failed && (!self.buf.is_empty() || self.skip > 0 || self.pending.is_some())
    }

    /// Forget everything buffered (the connection is closing).
    pub fn clear(&mut self) {
        self.buf = Vec::new();
        self.scanner.reset();
        self.skip = 0;
        self.pending = None;
        self.method_checked = false;
    }

    /// The next complete message, removed from the buffer; `Ok(None)` until one is complete.
    /// After an error every later call returns `Ok(None)`.
    pub fn next_message(&mut self) -> Result<Option<Message>, ParseError> {
        if self.failed {
            return Ok(None);
        }
        let result = self.next_inner();
        if result.is_err() {
            self.failed = true;
            self.clear();
        }
        result
    }

    fn next_inner(&mut self) -> Result<Option<Message>, ParseError> {
        if self.skip > 0 {
            let take = self.skip.min(self.buf.len());
            self.buf.drain(..take);
            self.skip -= take;
            if self.skip > 0 {
                return Ok(None);
            }
        }
        if let Some((_, length)) = &self.pending {
            if self.buf.len() < *length {
                return Ok(None);
            }
            let (mut request, length) = self.pending.take().expect("checked above");
            request.body = self.buf.drain(..length).collect();
            return Ok(Some(Message::Request(request)));
        }
        // Empty lines between messages are tolerated (RFC 2616 §4.1, which RTSP inherits).
        let blank = self
            .buf
            .iter()
            .take_while(|&&b| b == b'\r' || b == b'\n')
            .count();
        if blank > 0 {
            self.buf.drain(..blank);
            self.scanner.reset();
            self.method_checked = false;
        }
        match self.buf.first() {
            None => return Ok(None),
            Some(b'$') => {
                if self.buf.len() < 4 {
                    return Ok(None);
                }
                let channel = self.buf[1];
                let length = u16::from_be_bytes([self.buf[2], self.buf[3]]);
                let take = (4 + usize::from(length)).min(self.buf.len());
                self.skip = 4 + usize::from(length) - take;
                self.buf.drain(..take);
                self.scanner.reset();
                return Ok(Some(Message::Interleaved { channel, length }));
            }
            Some(_) => {}
        }
        self.check_method_prefix()?;
        let Some(end) = self.scanner.scan(&self.buf) else {
            if self.buf.len() > self.limits.max_head {
                return Err(self.error(ErrorKind::HeadTooLarge));
            }
            return Ok(None);
        };
        if end > self.limits.max_head {
            return Err(self.error(ErrorKind::HeadTooLarge));
        }
        let request = parse_head(&self.buf[..end]).map_err(|kind| self.error(kind))?;
        let length = content_length(&request).map_err(|kind| self.error(kind))?;
        if length > self.limits.max_body as u64 {
            return Err(self.error(ErrorKind::BodyTooLarge(length)));
        }
        self.buf.drain(..end);
        self.scanner.reset();
        self.method_checked = false;
        let length = length as usize; // at most max_body
        if length == 0 {
            return Ok(Some(Message::Request(request)));
        }
        self.pending = Some((request, length));
        self.next_inner()
    }

    /// Refuse at once input whose first word cannot be a method: a client speaking another
    /// protocol (a TLS handshake, say) gets its answer without waiting for a timeout.
    fn check_method_prefix(&mut self) -> Result<(), ParseError> {
        if self.method_checked {
            return Ok(());
        }
        // Bytes the scanner searched were checked by an earlier call and held no space. Bytes
        // past the head limit are not looked at: a head that long is refused for its size,
        // whatever it holds, so the outcome does not depend on how the input was split.
        let end = self.buf.len().min(self.limits.max_head);
        for &byte in &self.buf[self.scanner.searched().min(end)..end] {
            if byte == b' ' {
                self.method_checked = true;
                return Ok(());
            }
            if !is_token(byte) {
                return Err(self.error(ErrorKind::Malformed(
                    "the request line does not start with a method".into(),
                )));
            }
        }
        Ok(())
    }

    fn error(&self, kind: ErrorKind) -> ParseError {
        ParseError {
            kind,
            cseq: find_cseq(&self.buf[..self.buf.len().min(self.limits.max_head)]),
        }
    }
}

/// RFC 2616 `token` characters (methods and header names).
fn is_token(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte)
}

fn malformed(why: impl Into<String>) -> ErrorKind {
    ErrorKind::Malformed(why.into())
}

/// Parse a complete head (request line, header fields, blank line).
fn parse_head(head: &[u8]) -> Result<Request, ErrorKind> {
    let mut lines = head
        .split(|&b| b == b'\n')
        .map(|line| line.strip_suffix(b"\r").unwrap_or(line));
    let line = lines.next().unwrap_or_default();
    let line = std::str::from_utf8(line)
        .ok()
        .filter(|line| line.bytes().all(|b| b == b' ' || b.is_ascii_graphic()))
        .ok_or_else(|| malformed("the request line is not printable ASCII"))?;
    let mut parts = line.split(' ').filter(|part| !part.is_empty());
    let (Some(method), Some(uri), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(malformed("the request line must be `METHOD URL RTSP/1.0`"));
    };
    if !method.bytes().all(is_token) {
        return Err(malformed(format!("invalid method `{method}`")));
    }
    if !valid_version(version) {
        return Err(malformed(format!(
            "`{version}` is not an RTSP version; use RTSP/1.0"
        )));
    }
    let mut headers: Vec<(String, String)> = Vec::new();
    for line in lines {
        if line.is_empty() {
            break; // the blank line ending the head
        }
        if line[0] == b' ' || line[0] == b'\t' {
            // A folded continuation of the previous field's value (RFC 2616 §2.2).
            let Some((_, value)) = headers.last_mut() else {
                return Err(malformed("a continuation line before any header field"));
            };
            let more = field_text(line)?;
            if !more.is_empty() {
                if !value.is_empty() {
                    value.push(' ');
                }
                value.push_str(more);
            }
            continue;
        }
        let colon = line
            .iter()
            .position(|&b| b == b':')
            .ok_or_else(|| malformed("a header line without a colon"))?;
        let name = &line[..colon];
        if name.is_empty() || !name.iter().copied().all(is_token) {
            return Err(malformed("invalid header field name"));
        }
        if headers.len() == MAX_HEADERS {
            return Err(ErrorKind::HeadTooLarge);
        }
        let name = String::from_utf8(name.to_vec()).expect("tokens are ASCII");
        headers.push((name, field_text(&line[colon + 1..])?.to_owned()));
    }
    Ok(Request {
        method: method.to_owned(),
        uri: uri.to_owned(),
        version: version.to_owned(),
        headers,
        body: Vec::new(),
    })
}

/// A header value, trimmed; UTF-8 without control characters other than tab.
fn field_text(raw: &[u8]) -> Result<&str, ErrorKind> {
    let text = std::str::from_utf8(raw).map_err(|_| malformed("a header value is not UTF-8"))?;
    if text.chars().any(|c| c.is_control() && c != '\t') {
        return Err(malformed("a control character in a header value"));
    }
    Ok(text.trim_matches([' ', '\t']))
}

/// `RTSP/<digits>.<digits>` (which version is supported is the session's business).
fn valid_version(version: &str) -> bool {
    let Some(number) = version.strip_prefix("RTSP/") else {
        return false;
    };
    let Some((major, minor)) = number.split_once('.') else {
        return false;
    };
    let digits = |s: &str| !s.is_empty() && s.len() <= 3 && s.bytes().all(|b| b.is_ascii_digit());
    digits(major) && digits(minor)
}

/// The body length: `Content-Length`, repeated only with the same value, or 0.
fn content_length(request: &Request) -> Result<u64, ErrorKind> {
    let mut length = None;
    for value in request.headers_named("Content-Length") {
        if value.is_empty() || value.len() > 19 || !value.bytes().all(|b| b.is_ascii_digit()) {
            return Err(malformed(format!("invalid Content-Length `{value}`")));
        }
        let parsed: u64 = value
            .parse()
            .map_err(|_| malformed(format!("invalid Content-Length `{value}`")))?;
        if length.is_some_and(|known| known != parsed) {
            return Err(malformed("conflicting Content-Length fields"));
        }
        length = Some(parsed);
    }
    Ok(length.unwrap_or(0))
}

/// A `CSeq` header value made of digits in a (possibly incomplete or malformed) head, so an
/// error response can echo it.
fn find_cseq(head: &[u8]) -> Option<String> {
    head.split(|&b| b == b'\n').find_map(|line| {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let colon = line.iter().position(|&b| b == b':')?;
        if !line[..colon].eq_ignore_ascii_case(b"cseq") {
            return None;
        }
        let value = std::str::from_utf8(&line[colon + 1..]).ok()?.trim();
        valid_cseq(value).then(|| value.to_owned())
    })
}

/// A `CSeq` value this server echoes: 1 to 10 digits (RFC 2326 §12.17: `1*DIGIT`).
pub fn valid_cseq(value: &str) -> bool {
    !value.is_empty() && value.len() <= 10 && value.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    const FFMPEG_TCP: &[u8] = include_bytes!("../../tests/fixtures/ffmpeg-tcp-vod.rtsp");
    const GST_TCP: &[u8] = include_bytes!("../../tests/fixtures/gst-tcp-vod.rtsp");
    const GST_ROLLOVER: &[u8] = include_bytes!("../../tests/fixtures/gst-rollover-live.rtsp");

    const LIMITS: Limits = Limits {
        max_head: 4096,
        max_body: 4096,
    };

    /// Everything `bytes` parses into, fed in pieces of `piece` bytes.
    fn messages(bytes: &[u8], piece: usize) -> Result<Vec<Message>, ParseError> {
        let mut parser = RequestParser::new(LIMITS);
        let mut out = Vec::new();
        for part in bytes.chunks(piece) {
            parser.push(part);
            while let Some(message) = parser.next_message()? {
                out.push(message);
            }
        }
        assert!(!parser.in_message(), "input left over");
        Ok(out)
    }

    fn request(message: &Message) -> &Request {
        match message {
            Message::Request(request) => request,
            other => panic!("not a request: {other:?}"),
        }
    }

    fn parse_one(bytes: &[u8]) -> Result<Option<Message>, ParseError> {
        let mut parser = RequestParser::new(LIMITS);
        parser.push(bytes);
        parser.next_message()
    }

    #[test]
    fn real_ffmpeg_session_in_any_split() {
        let whole = messages(FFMPEG_TCP, FFMPEG_TCP.len()).unwrap();
        let methods: Vec<&str> = whole.iter().map(|m| request(m).method.as_str()).collect();
        assert_eq!(
            methods,
            [
                "OPTIONS",
                "DESCRIBE",
                "SETUP",
                "PLAY",
                "GET_PARAMETER",
                "GET_PARAMETER",
                "TEARDOWN"
            ]
        );
        let setup = request(&whole[2]);
        assert_eq!(setup.uri, "rtsp://127.0.0.1:18556/vod/trackID=0");
        assert_eq!(setup.version, "RTSP/1.0");
        assert_eq!(
            setup.header("transport"),
            Some("RTP/AVP/TCP;unicast;interleaved=0-1")
        );
        assert_eq!(setup.header("CSEQ"), Some("3"));
        assert_eq!(request(&whole[3]).header("Range"), Some("npt=0.000-"));
        for piece in [1, 2, 3, 7, 13, 64] {
            assert_eq!(messages(FFMPEG_TCP, piece).unwrap(), whole, "piece {piece}");
        }
    }

    #[test]
    fn interleaved_rtcp_between_requests_is_reported_and_skipped() {
        for piece in [1, 5, 11, GST_TCP.len()] {
            let found = messages(GST_TCP, piece).unwrap();
            let kinds: Vec<String> = found
                .iter()
                .map(|m| match m {
                    Message::Request(r) => r.method.clone(),
                    Message::Interleaved { channel, length } => format!("${channel}:{length}"),
                })
                .collect();
            assert_eq!(
                kinds,
                ["OPTIONS", "DESCRIBE", "SETUP", "PLAY", "$1:80", "TEARDOWN"],
                "piece {piece}"
            );
        }
        let found = messages(GST_ROLLOVER, 9).unwrap();
        let frames = found
            .iter()
            .filter(|m| matches!(m, Message::Interleaved { channel: 1, .. }))
            .count();
        assert_eq!(frames, 2);
        let setups: Vec<&str> = found
            .iter()
            .filter_map(|m| match m {
                Message::Request(r) if r.method == "SETUP" => r.header("Transport"),
                _ => None,
            })
            .collect();
        assert_eq!(
            setups,
            [
                "RTP/AVP;unicast;client_port=54184-54185",
                "RTP/AVP;multicast",
                "RTP/AVP/TCP;unicast;interleaved=0-1"
            ]
        );
    }

    #[test]
    fn interleaved_payload_is_not_buffered() {
        let mut parser = RequestParser::new(LIMITS);
        parser.push(b"$\x01\xff\xff");
        assert_eq!(
            parser.next_message().unwrap(),
            Some(Message::Interleaved {
                channel: 1,
                length: 65535
            })
        );
        assert!(parser.in_message());
        parser.push(&[0x55; 60000]);
        assert_eq!(parser.buffered(), 0);
        assert_eq!(parser.next_message().unwrap(), None);
        let mut tail = vec![0x55; 5535];
        tail.extend_from_slice(b"OPTIONS * RTSP/1.0\r\nCSeq: 9\r\n\r\n");
        parser.push(&tail);
        let options = parser.next_message().unwrap().unwrap();
        assert_eq!(request(&options).uri, "*");
        assert!(!parser.in_message());
    }

    #[test]
    fn bodies_follow_content_length() {
        let bytes = b"SET_PARAMETER rtsp://h/live RTSP/1.0\r\nCSeq: 4\r\nContent-Length: 12\r\n\r\nbarparam: 1\nOPTIONS * RTSP/1.0\r\nCSeq: 5\r\n\r\n";
        for piece in [1, 4, bytes.len()] {
            let found = messages(bytes, piece).unwrap();
            assert_eq!(request(&found[0]).body, b"barparam: 1\n");
            assert_eq!(request(&found[1]).method, "OPTIONS");
        }
    }

    #[test]
    fn bare_lf_folding_and_blank_lines() {
        let found = messages(
            b"\r\n\r\nOPTIONS * RTSP/1.0\nCSeq: 1\nX-Long: a\n\t b\n\n",
            3,
        )
        .unwrap();
        let options = request(&found[0]);
        assert_eq!(options.header("x-long"), Some("a b"));
        assert_eq!(options.header("cseq"), Some("1"));
    }

    #[test]
    fn versions_are_syntax_checked_only() {
        let two = parse_one(b"OPTIONS * RTSP/2.0\r\nCSeq: 1\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(request(&two).version, "RTSP/2.0");
        for bad in ["HTTP/1.1", "RTSP/1", "RTSP/x.0", "RTSP/1.0.0"] {
            let error =
                parse_one(format!("OPTIONS * {bad}\r\nCSeq: 7\r\n\r\n").as_bytes()).unwrap_err();
            assert!(matches!(error.kind, ErrorKind::Malformed(_)), "{bad}");
            assert_eq!(error.cseq.as_deref(), Some("7"));
            assert_eq!(error.status(), 400);
        }
    }

    #[test]
    fn malformed_heads() {
        for bad in [
            &b"OPTIONS\r\n\r\n"[..],
            b"OPTIONS * RTSP/1.0 extra\r\n\r\n",
            b"OPTIONS * RTSP/1.0\r\nNo colon here\r\n\r\n",
            b"OPTIONS * RTSP/1.0\r\n folded first\r\n\r\n",
            b"OPTIONS * RTSP/1.0\r\nBad Name: x\r\n\r\n",
            b"OPTIONS * RTSP/1.0\r\nX: a\x01b\r\n\r\n",
            b"OPTIONS * RTSP/1.0\r\nX: \xff\r\n\r\n",
            b"OPTIONS \x7f RTSP/1.0\r\n\r\n",
            b"OPTIONS * RTSP/1.0\r\nContent-Length: -1\r\n\r\n",
            b"OPTIONS * RTSP/1.0\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            b"OPTIONS * RTSP/1.0\r\nContent-Length: 99999999999999999999\r\n\r\n",
        ] {
            let error = parse_one(bad).unwrap_err();
            assert!(
                matches!(error.kind, ErrorKind::Malformed(_)),
                "{:?}: {error:?}",
                String::from_utf8_lossy(bad)
            );
        }
        // A TLS handshake is refused on its first bytes, with no head terminator in sight.
        let error = parse_one(b"\x16\x03\x01\x02\x00\x01").unwrap_err();
        assert!(matches!(error.kind, ErrorKind::Malformed(_)));
    }

    #[test]
    fn limits() {
        let mut parser = RequestParser::new(LIMITS);
        parser.push(b"OPTIONS * RTSP/1.0\r\nCSeq: 3\r\nX-Pad: ");
        parser.push(&[b'a'; 4096]);
        let error = parser.next_message().unwrap_err();
        assert_eq!(error.kind, ErrorKind::HeadTooLarge);
        assert_eq!(error.cseq.as_deref(), Some("3"));
        assert_eq!(error.status(), 400);
        // Poisoned afterwards.
        parser.push(b"OPTIONS * RTSP/1.0\r\n\r\n");
        assert_eq!(parser.next_message().unwrap(), None);

        let error =
            parse_one(b"SET_PARAMETER * RTSP/1.0\r\nContent-Length: 4097\r\n\r\n").unwrap_err();
        assert_eq!(error.kind, ErrorKind::BodyTooLarge(4097));
        assert_eq!(error.status(), 413);

        let mut many = b"OPTIONS * RTSP/1.0\r\n".to_vec();
        for i in 0..=MAX_HEADERS {
            many.extend_from_slice(format!("X-{i}: 1\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert_eq!(parse_one(&many).unwrap_err().kind, ErrorKind::HeadTooLarge);
    }

    #[test]
    fn cseq_values() {
        assert!(valid_cseq("0"));
        assert!(valid_cseq("4294967295"));
        for bad in ["", "12345678901", "1a", "-1", " 1"] {
            assert!(!valid_cseq(bad), "{bad:?}");
        }
    }
}

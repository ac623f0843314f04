//! Building RTSP/1.0 responses.
//!
//! A response is a status line, header fields and an optional body with its
//! `Content-Type` and `Content-Length`. Header values come from this server (numbers, fixed
//! strings, URLs the parser already checked to be visible ASCII), never from the host's
//! messages, so they cannot smuggle a line break into the head; host messages go into bodies.

use std::borrow::Cow;

/// The reason phrase for the statuses this server sends (RFC 2326 §7.1.1).
pub fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Request Entity Too Large",
        451 => "Parameter Not Understood",
        454 => "Session Not Found",
        455 => "Method Not Valid in This State",
        457 => "Invalid Range",
        459 => "Aggregate Operation Not Allowed",
        461 => "Unsupported Transport",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        505 => "RTSP Version Not Supported",
        551 => "Option not supported",
        _ => "Unknown",
    }
}

/// A response under construction; [`Response::encode`] serialises it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub reason: Cow<'static, str>,
    pub headers: Vec<(&'static str, String)>,
    pub content_type: &'static str,
    pub body: Vec<u8>,
}

impl Response {
    pub fn new(status: u16) -> Self {
        Self {
            status,
            reason: Cow::Borrowed(reason(status)),
            headers: Vec::new(),
            content_type: "",
            body: Vec::new(),
        }
    }

    /// Replace the standard reason phrase (a fixed string of this server's).
    pub fn reason(mut self, reason: &'static str) -> Self {
        self.reason = Cow::Borrowed(reason);
        self
    }

    /// Add a header field.
    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        let value = value.into();
        debug_assert!(
            !value.bytes().any(|b| b.is_ascii_control()),
            "control character in header {name}"
        );
        self.headers.push((name, value));
        self
    }

    /// Set the body and its type.
    pub fn body(mut self, content_type: &'static str, body: impl Into<Vec<u8>>) -> Self {
        self.content_type = content_type;
        self.body = body.into();
        self
    }

    /// The value of the first header named `name` (case-insensitive).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Status line, header fields, blank line and body.
    pub fn encode(&self) -> Vec<u8> {
        let mut head = format!("RTSP/1.0 {} {}\r\n", self.status, self.reason);
        for (name, value) in &self.headers {
            head.push_str(name);
            head.push_str(": ");
            head.push_str(value);
            head.push_str("\r\n");
        }
        if !self.body.is_empty() {
            head.push_str(&format!(
                "Content-Type: {}\r\nContent-Length: {}\r\n",
                self.content_type,
                self.body.len()
            ));
        }
        head.push_str("\r\n");
        let mut out = head.into_bytes();
        out.extend_from_slice(&self.body);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_status_headers_and_body() {
        let response = Response::new(200)
            .header("CSeq", "2")
            .header("Content-Base", "rtsp://h/vod/")
            .body("application/sdp", "v=0\r\n");
        assert_eq!(
            String::from_utf8(response.encode()).unwrap(),
            "RTSP/1.0 200 OK\r\nCSeq: 2\r\nContent-Base: rtsp://h/vod/\r\n\
             Content-Type: application/sdp\r\nContent-Length: 5\r\n\r\nv=0\r\n"
        );
        assert_eq!(response.get("cseq"), Some("2"));
        assert_eq!(response.get("Session"), None);
    }

    #[test]
    fn reason_phrases() {
        assert_eq!(
            String::from_utf8(Response::new(461).encode()).unwrap(),
            "RTSP/1.0 461 Unsupported Transport\r\n\r\n"
        );
        let custom = Response::new(403).reason("RTSP Disabled On This Point");
        assert!(custom
            .encode()
            .starts_with(b"RTSP/1.0 403 RTSP Disabled On This Point\r\n"));
        assert_eq!(reason(455), "Method Not Valid in This State");
        assert_eq!(reason(599), "Unknown");
    }
}

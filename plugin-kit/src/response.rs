//! Building responses: status line, header fields and an optional body.
//!
//! HTTP/1.1 and RTSP/1.0 responses share one shape; only the version string and some reason
//! phrases differ, so the version is a parameter of [`Response::new`] and the reason phrases
//! come from [`http_reason`] or [`rtsp_reason`]. Header values come from the plugin itself
//! (numbers, fixed strings, URLs its parser already checked to be visible ASCII), never
//! verbatim from a client or the host's messages, so they cannot smuggle a line break into the
//! head; messages go into bodies. A debug build asserts as much.

use std::borrow::Cow;

use crate::head;

/// The status line version of HTTP/1.1 responses.
pub const HTTP_11: &str = "HTTP/1.1";
/// The status line version of RTSP/1.0 responses.
pub const RTSP_10: &str = "RTSP/1.0";

/// The reason phrase of an HTTP status (RFC 9110 §15), `Unknown` for others.
pub fn http_reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        204 => "No Content",
        206 => "Partial Content",
        304 => "Not Modified",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        416 => "Range Not Satisfiable",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}

/// The reason phrase of an RTSP status (RFC 2326 §7.1.1): RTSP's own, else HTTP's.
pub fn rtsp_reason(status: u16) -> &'static str {
    match status {
        413 => "Request Entity Too Large",
        451 => "Parameter Not Understood",
        453 => "Not Enough Bandwidth",
        454 => "Session Not Found",
        455 => "Method Not Valid in This State",
        457 => "Invalid Range",
        459 => "Aggregate Operation Not Allowed",
        461 => "Unsupported Transport",
        505 => "RTSP Version Not Supported",
        551 => "Option not supported",
        _ => http_reason(status),
    }
}

/// A response under construction; [`Response::encode`] serialises it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    /// `HTTP/1.1`, `RTSP/1.0`, …
    pub version: &'static str,
    pub status: u16,
    pub reason: Cow<'static, str>,
    pub headers: Vec<(&'static str, String)>,
    /// The body's `Content-Type`, sent with `Content-Length` when the body is not empty.
    pub content_type: &'static str,
    pub body: Vec<u8>,
}

impl Response {
    pub fn new(version: &'static str, status: u16, reason: &'static str) -> Self {
        Self {
            version,
            status,
            reason: Cow::Borrowed(reason),
            headers: Vec::new(),
            content_type: "",
            body: Vec::new(),
        }
    }

    /// Replace the reason phrase (a fixed string of the plugin's).
    pub fn reason(mut self, reason: &'static str) -> Self {
        self.reason = Cow::Borrowed(reason);
        self
    }

    /// Add a header field.
    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        let value = value.into();
        debug_assert!(
            !value.bytes().any(|b| b.is_ascii_control() && b != b'\t'),
            "control character in header {name}"
        );
        self.headers.push((name, value));
        self
    }

    /// Set the body and its type; [`Response::encode`] adds `Content-Type` and
    /// `Content-Length` for a body that is not empty.
    pub fn body(mut self, content_type: &'static str, body: impl Into<Vec<u8>>) -> Self {
        self.content_type = content_type;
        self.body = body.into();
        self
    }

    /// The value of the first header named `name` (case-insensitive).
    pub fn get(&self, name: &str) -> Option<&str> {
        head::header(&self.headers, name)
    }

    /// Status line, header fields, blank line and body.
    pub fn encode(&self) -> Vec<u8> {
        let mut head = format!("{} {} {}\r\n", self.version, self.status, self.reason);
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
    fn encodes_a_head_without_body() {
        let head = Response::new(HTTP_11, 206, http_reason(206))
            .header("Content-Range", "bytes 0-9/100")
            .header("Content-Length", "10");
        assert_eq!(
            String::from_utf8(head.encode()).unwrap(),
            "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 0-9/100\r\nContent-Length: 10\r\n\r\n"
        );
        assert_eq!(head.get("content-length"), Some("10"));
        assert_eq!(head.get("Allow"), None);
    }

    #[test]
    fn encodes_a_body_with_its_type_and_length() {
        let response = Response::new(RTSP_10, 200, rtsp_reason(200))
            .header("CSeq", "2")
            .body("application/sdp", "v=0\r\n");
        assert_eq!(
            String::from_utf8(response.encode()).unwrap(),
            "RTSP/1.0 200 OK\r\nCSeq: 2\r\n\
             Content-Type: application/sdp\r\nContent-Length: 5\r\n\r\nv=0\r\n"
        );
    }

    #[test]
    fn custom_reason() {
        let custom = Response::new(RTSP_10, 403, rtsp_reason(403)).reason("Disabled Here");
        assert_eq!(custom.encode(), b"RTSP/1.0 403 Disabled Here\r\n\r\n");
    }

    #[test]
    fn reason_phrases_per_protocol() {
        assert_eq!(http_reason(431), "Request Header Fields Too Large");
        assert_eq!(http_reason(505), "HTTP Version Not Supported");
        assert_eq!(rtsp_reason(505), "RTSP Version Not Supported");
        assert_eq!(rtsp_reason(461), "Unsupported Transport");
        assert_eq!(rtsp_reason(404), "Not Found");
        assert_eq!(http_reason(599), "Unknown");
        assert_eq!(rtsp_reason(599), "Unknown");
    }
}

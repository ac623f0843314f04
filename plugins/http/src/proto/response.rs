//! Building HTTP/1.1 response heads.
//!
//! The status line always says `HTTP/1.1`, also to HTTP/1.0 clients: a server sends its own
//! highest version (RFC 9110 §6.2), and the headers chosen by the session keep the exchange
//! valid for 1.0 (no chunked bodies, explicit `Connection: keep-alive`).

/// The interim response sent to a client that asked for `Expect: 100-continue`.
pub const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// Reason phrase for the statuses this server sends.
pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        204 => "No Content",
        206 => "Partial Content",
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

/// A status line and header fields, serialised by [`ResponseHead::encode`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResponseHead {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
}

impl ResponseHead {
    pub fn new(status: u16) -> Self {
        Self {
            status,
            headers: Vec::new(),
        }
    }

    /// Add a header field. Values come from this server (numbers, fixed strings), never from
    /// the client or the host's messages, so they cannot smuggle a CRLF into the head.
    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        let value = value.into();
        debug_assert!(!value.contains(['\r', '\n']), "CR/LF in header {name}");
        self.headers.push((name, value));
        self
    }

    /// The value of the first header named `name` (case-insensitive).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Status line, header fields and the blank line that ends the head.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = format!("HTTP/1.1 {} {}\r\n", self.status, reason(self.status));
        for (name, value) in &self.headers {
            out.push_str(name);
            out.push_str(": ");
            out.push_str(value);
            out.push_str("\r\n");
        }
        out.push_str("\r\n");
        out.into_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_status_line_headers_and_blank_line() {
        let head = ResponseHead::new(206)
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
    fn reason_phrases() {
        assert_eq!(reason(431), "Request Header Fields Too Large");
        assert_eq!(reason(416), "Range Not Satisfiable");
        assert_eq!(reason(599), "Unknown");
        assert_eq!(CONTINUE, b"HTTP/1.1 100 Continue\r\n\r\n");
    }
}

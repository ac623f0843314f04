//! HTTP/1.1 response heads, built with the kit's [`Response`].
//!
//! The status line always says `HTTP/1.1`, also to HTTP/1.0 clients: a server sends its own
//! highest version (RFC 9110 §6.2), and the headers chosen by the session keep the exchange
//! valid for 1.0 (no chunked bodies, explicit `Connection: keep-alive`).

use ferrocast_plugin_kit::response::HTTP_11;
pub use ferrocast_plugin_kit::response::{http_reason as reason, Response};

/// The interim response sent to a client that asked for `Expect: 100-continue`.
pub const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// The head of a response with `status` and its standard reason phrase.
pub fn head(status: u16) -> Response {
    Response::new(HTTP_11, status, reason(status))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_say_http_1_1_with_the_standard_reason() {
        let head = head(206).header("Content-Length", "10");
        assert_eq!(
            String::from_utf8(head.encode()).unwrap(),
            "HTTP/1.1 206 Partial Content\r\nContent-Length: 10\r\n\r\n"
        );
    }

    #[test]
    fn reason_phrases() {
        assert_eq!(reason(431), "Request Header Fields Too Large");
        assert_eq!(reason(416), "Range Not Satisfiable");
        assert_eq!(reason(599), "Unknown");
        assert_eq!(CONTINUE, b"HTTP/1.1 100 Continue\r\n\r\n");
    }
}

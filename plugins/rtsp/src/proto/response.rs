//! RTSP/1.0 responses, built with the kit's [`Response`].
//!
//! A response is a status line, header fields and an optional body with its `Content-Type`
//! and `Content-Length`. Header values come from this server (numbers, fixed strings, URLs the
//! parser already checked to be visible ASCII), never from the host's messages, so they cannot
//! smuggle a line break into the head; host messages go into bodies.

use ferrocast_plugin_kit::response::RTSP_10;
pub use ferrocast_plugin_kit::response::{rtsp_reason as reason, Response};

/// A response with `status` and its standard reason phrase (RFC 2326 §7.1.1).
pub fn new(status: u16) -> Response {
    Response::new(RTSP_10, status, reason(status))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_status_headers_and_body() {
        let response = new(200)
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
            String::from_utf8(new(461).encode()).unwrap(),
            "RTSP/1.0 461 Unsupported Transport\r\n\r\n"
        );
        let custom = new(403).reason("RTSP Disabled On This Point");
        assert!(custom
            .encode()
            .starts_with(b"RTSP/1.0 403 RTSP Disabled On This Point\r\n"));
        assert_eq!(reason(455), "Method Not Valid in This State");
        assert_eq!(reason(599), "Unknown");
    }
}

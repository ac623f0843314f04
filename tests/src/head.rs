//! Heads of text protocol messages (HTTP/1.1 responses, RTSP/1.0 responses) as the test
//! clients read them off a socket: where a head ends, its status code and its header values.

/// The offset just past the blank line that ends the head at the start of `data`, once it is
/// all there.
pub fn head_end(data: &[u8]) -> Option<usize> {
    data.windows(4)
        .position(|window| window == b"\r\n\r\n")
        .map(|position| position + 4)
}

/// The status code of a response head (`HTTP/1.1 200 OK`, `RTSP/1.0 461 …`); 0 if the first
/// line carries none.
pub fn status_code(head: &str) -> u16 {
    head.split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0)
}

/// The value of header `name` (case-insensitive) in a head, trimmed; the first one if it
/// repeats.
pub fn header(head: &str, name: &str) -> Option<String> {
    head.lines().skip(1).find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.trim()
            .eq_ignore_ascii_case(name)
            .then(|| value.trim().to_owned())
    })
}

/// The Content-Length of a head, if it has a valid one.
pub fn content_length(head: &str) -> Option<usize> {
    header(head, "content-length")?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_head_ends_after_its_blank_line() {
        assert_eq!(head_end(b"HTTP/1.1 200 OK\r\nA: b\r\n\r\nbody"), Some(25));
        assert_eq!(head_end(b"HTTP/1.1 200 OK\r\nA: b\r\n"), None);
    }

    #[test]
    fn status_and_headers_are_read_from_the_head() {
        let head = "RTSP/1.0 461 Unsupported Transport\r\nCSeq: 3\r\ncontent-LENGTH: 12\r\n\r\n";
        assert_eq!(status_code(head), 461);
        assert_eq!(header(head, "cseq").as_deref(), Some("3"));
        assert_eq!(content_length(head), Some(12));
        assert_eq!(header(head, "session"), None);
        assert_eq!(status_code("garbage"), 0);
    }
}

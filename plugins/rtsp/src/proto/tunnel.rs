//! RTSP tunnelled over HTTP (the QuickTime scheme): recognising the opening HTTP request of a
//! connection, and decoding the base64 stream of a POST.
//!
//! The client opens a `GET` with `x-sessioncookie` and `Accept: application/x-rtsp-tunnelled`
//! (the server's answers and media go down it) and a `POST` with the same cookie and
//! `Content-Type: application/x-rtsp-tunnelled`, whose body is the base64 of its requests,
//! split anywhere and padded at the end of each request. The server never answers the POST.

use ferrocast_plugin_kit::head::{find_head_end, header};

/// The media type of both halves of a tunnel.
pub const TUNNEL_TYPE: &str = "application/x-rtsp-tunnelled";

/// What the first bytes of a connection are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Opening {
    /// Not HTTP: an RTSP connection (or garbage the RTSP parser will refuse).
    Rtsp,
    /// Could still be either; wait for more bytes.
    Undecided,
    /// The GET half of tunnel `cookie`; `head_len` bytes of head.
    Get { cookie: String, head_len: usize },
    /// The POST half of tunnel `cookie`; its body starts after `head_len` bytes.
    Post { cookie: String, head_len: usize },
    /// HTTP that is not a tunnel: answer with `status` and `message`, then close.
    Refused { status: u16, message: String },
}

/// Classify the first bytes `buf` of a connection; a head longer than `max_head` is refused.
pub fn classify(buf: &[u8], max_head: usize) -> Opening {
    let http = [&b"GET "[..], &b"POST "[..]];
    let prefix = |m: &[u8]| buf.len() < m.len() && m.starts_with(buf);
    if http.iter().any(|m| prefix(m)) {
        return Opening::Undecided;
    }
    if !http.iter().any(|m| buf.starts_with(m)) {
        return Opening::Rtsp;
    }
    let Some(head_len) = find_head_end(buf) else {
        if buf.len() > max_head {
            return refused(431, format!("request head longer than {max_head} bytes"));
        }
        return Opening::Undecided;
    };
    if head_len > max_head {
        return refused(431, format!("request head longer than {max_head} bytes"));
    }
    let Ok(head) = std::str::from_utf8(&buf[..head_len]) else {
        return refused(400, "request head is not UTF-8".to_owned());
    };
    let mut lines = head.lines();
    let start: Vec<&str> = lines.next().unwrap_or_default().split(' ').collect();
    let fields: Vec<(&str, &str)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim(), value.trim()))
        .collect();
    if start.len() != 3 || !start[2].starts_with("HTTP/1.") {
        return refused(400, "malformed HTTP request line".to_owned());
    }
    let tunnelled = |name: &str| {
        header(&fields, name).is_some_and(|v| v.to_ascii_lowercase().contains(TUNNEL_TYPE))
    };
    let (is_get, typed) = match start[0] {
        "GET" => (true, tunnelled("Accept")),
        _ => (false, tunnelled("Content-Type")),
    };
    let cookie = header(&fields, "x-sessioncookie").unwrap_or_default();
    if !typed || cookie.is_empty() {
        let needs = if is_get { "Accept" } else { "Content-Type" };
        let message = format!(
            "this is an RTSP port; RTSP over HTTP needs x-sessioncookie and {needs}: {TUNNEL_TYPE}"
        );
        return refused(400, message);
    }
    let cookie = cookie.to_owned();
    if is_get {
        Opening::Get { cookie, head_len }
    } else {
        Opening::Post { cookie, head_len }
    }
}

fn refused(status: u16, message: String) -> Opening {
    Opening::Refused { status, message }
}

/// The answer that opens the GET half: the rest of the connection is RTSP.
pub fn get_answer(server: &str) -> Vec<u8> {
    format!(
        "HTTP/1.0 200 OK\r\nServer: {server}\r\nConnection: close\r\nCache-Control: no-store\r\nPragma: no-cache\r\nContent-Type: {TUNNEL_TYPE}\r\n\r\n"
    )
    .into_bytes()
}

/// An HTTP refusal with a plain-text message; the connection closes after it.
pub fn http_refusal(status: u16, server: &str, message: &str) -> Vec<u8> {
    let reason = match status {
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Error",
    };
    let body = format!("{message}\n");
    format!(
        "HTTP/1.0 {status} {reason}\r\nServer: {server}\r\nConnection: close\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// A base64 body that is not base64.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the POST body is not base64 (byte {offset} of the body)")]
pub struct BadBase64 {
    pub offset: u64,
}

/// Decodes a base64 stream split anywhere, in which every request ends its own padded
/// quantum. Line breaks and spaces are skipped.
#[derive(Clone, Debug, Default)]
pub struct Base64Stream {
    quantum: [u8; 4],
    filled: usize,
    offset: u64,
}

fn sextet(c: u8) -> Option<u8> {
    match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    }
}

impl Base64Stream {
    /// Decode `input`, appending to `out`; what does not complete a quantum waits for more.
    pub fn decode(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), BadBase64> {
        for &c in input {
            let at = self.offset;
            self.offset += 1;
            if c.is_ascii_whitespace() {
                continue;
            }
            if c != b'=' && sextet(c).is_none() {
                return Err(BadBase64 { offset: at });
            }
            self.quantum[self.filled] = c;
            self.filled += 1;
            if self.filled == 4 {
                self.filled = 0;
                self.flush(out).map_err(|()| BadBase64 { offset: at })?;
            }
        }
        Ok(())
    }

    fn flush(&self, out: &mut Vec<u8>) -> Result<(), ()> {
        let q = self.quantum;
        let pads = q.iter().rev().take_while(|&&c| c == b'=').count();
        if pads > 2 || q[..4 - pads].contains(&b'=') {
            return Err(());
        }
        let mut bits: u32 = 0;
        for &c in &q[..4 - pads] {
            bits = (bits << 6) | u32::from(sextet(c).ok_or(())?);
        }
        bits <<= 6 * pads as u32;
        let bytes = bits.to_be_bytes();
        out.extend_from_slice(&bytes[1..4 - pads]);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GET: &[u8] = b"GET /live HTTP/1.1\r\nHost: 127.0.0.1:8554\r\nx-sessioncookie: 7d3a9c1e\r\nAccept: application/x-rtsp-tunnelled\r\nPragma: no-cache\r\n\r\n";
    const POST: &[u8] = b"POST /live HTTP/1.1\r\nx-sessioncookie: 7d3a9c1e\r\nContent-Type: application/x-rtsp-tunnelled\r\nContent-Length: 32767\r\n\r\nT1BU";

    #[test]
    fn the_two_halves_are_recognised_in_any_split() {
        for split in 1..GET.len() {
            assert_eq!(
                classify(&GET[..split], 16384),
                Opening::Undecided,
                "{split}"
            );
        }
        assert_eq!(
            classify(GET, 16384),
            Opening::Get {
                cookie: "7d3a9c1e".into(),
                head_len: GET.len()
            }
        );
        assert_eq!(
            classify(POST, 16384),
            Opening::Post {
                cookie: "7d3a9c1e".into(),
                head_len: POST.len() - 4
            }
        );
    }

    #[test]
    fn rtsp_and_plain_http_are_told_apart() {
        assert_eq!(classify(b"OPTIONS * RTSP/1.0\r\n", 16384), Opening::Rtsp);
        assert_eq!(classify(b"G", 16384), Opening::Undecided);
        assert_eq!(classify(b"GE", 16384), Opening::Undecided);
        assert_eq!(classify(b"GEX", 16384), Opening::Rtsp);
        assert_eq!(classify(b"$\x00\x00\x04", 16384), Opening::Rtsp);
        let plain = classify(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", 16384);
        assert!(
            matches!(&plain, Opening::Refused { status: 400, message } if message.contains("x-sessioncookie")),
            "{plain:?}"
        );
        let untyped = classify(b"POST /x HTTP/1.0\r\nx-sessioncookie: a\r\n\r\n", 16384);
        assert!(matches!(untyped, Opening::Refused { status: 400, .. }));
        let long = [b"GET /".as_slice(), &[b'a'; 2000]].concat();
        assert!(matches!(
            classify(&long, 1024),
            Opening::Refused { status: 431, .. }
        ));
    }

    #[test]
    fn base64_requests_decode_across_any_split_and_padding() {
        let requests = [
            "OPTIONS * RTSP/1.0\r\nCSeq: 1\r\n\r\n",
            "X",
            "GET_PARAMETER x RTSP/1.0\r\n\r\n",
        ];
        let encoded: String = requests.iter().map(|r| encode(r.as_bytes())).collect();
        let encoded = format!("{}\r\n", encoded);
        for split in [1, 2, 3, 5, 7, 64, usize::MAX] {
            let mut stream = Base64Stream::default();
            let mut out = Vec::new();
            for piece in encoded.as_bytes().chunks(split.min(encoded.len())) {
                stream.decode(piece, &mut out).unwrap();
            }
            assert_eq!(out, requests.concat().as_bytes(), "split {split}");
        }
    }

    #[test]
    fn broken_base64_is_refused_where_it_breaks() {
        let mut out = Vec::new();
        assert_eq!(
            Base64Stream::default().decode(b"T1BU!!", &mut out),
            Err(BadBase64 { offset: 4 })
        );
        assert_eq!(
            Base64Stream::default().decode(b"T=BU", &mut out),
            Err(BadBase64 { offset: 3 })
        );
        assert_eq!(
            Base64Stream::default().decode(b"T===", &mut out),
            Err(BadBase64 { offset: 3 })
        );
    }

    /// A reference encoder, as clients encode each request.
    fn encode(bytes: &[u8]) -> String {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let mut n = [0u8; 3];
            n[..chunk.len()].copy_from_slice(chunk);
            let bits = u32::from_be_bytes([0, n[0], n[1], n[2]]);
            for i in 0..4 {
                if i <= chunk.len() {
                    out.push(ALPHABET[(bits >> (18 - 6 * i) & 63) as usize] as char);
                } else {
                    out.push('=');
                }
            }
        }
        out
    }
}

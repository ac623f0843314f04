//! The opening handshake (RFC 6455 §4.2): an HTTP/1.1 `GET` asking to upgrade to
//! `websocket`, answered by `101 Switching Protocols` with `Sec-WebSocket-Accept`.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use ferrocast_plugin_kit::head::{header, list};
use ferrocast_plugin_kit::path::{normalise_path, PathError};
use ferrocast_plugin_kit::response::{http_reason, Response};
use thiserror::Error;

/// The GUID every server appends to the client's key (RFC 6455 §1.3).
const ACCEPT_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
/// The only protocol version this server speaks.
pub const VERSION: &str = "13";
const MAX_HEADERS: usize = 64;

/// A valid upgrade request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Upgrade {
    /// The requested point path (`point` or `point/file`), normalised.
    pub path: String,
    /// The raw query string, without the `?`, if the target had one.
    pub query: Option<String>,
    /// `Sec-WebSocket-Key`, as sent.
    pub key: String,
}

/// Why an upgrade request is refused, each with its HTTP status.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum HandshakeError {
    #[error("malformed request head")]
    Malformed,
    #[error("the request head is too large")]
    TooLarge,
    #[error("only GET opens a WebSocket")]
    NotGet,
    #[error("a WebSocket handshake needs HTTP/1.1")]
    NotHttp11,
    #[error("not a WebSocket upgrade request (Upgrade: websocket and Connection: Upgrade)")]
    NotUpgrade,
    #[error("unsupported WebSocket version; this server speaks version 13")]
    Version,
    #[error("missing or invalid Sec-WebSocket-Key")]
    BadKey,
    #[error("bad request path: {0}")]
    Path(#[from] PathError),
}

impl HandshakeError {
    pub fn status(&self) -> u16 {
        match self {
            Self::TooLarge => 431,
            Self::NotGet => 405,
            Self::NotUpgrade | Self::Version => 426,
            _ => 400,
        }
    }

    /// The HTTP answer to the refused request; the connection closes after it.
    pub fn response(&self) -> Response {
        let mut response = error_response(self.status(), &self.to_string());
        match self {
            Self::Version => response = response.header("Sec-WebSocket-Version", VERSION),
            Self::NotUpgrade => response = response.header("Upgrade", "websocket"),
            Self::NotGet => response = response.header("Allow", "GET"),
            _ => {}
        }
        response
    }
}

/// An HTTP error answer that closes the connection.
pub fn error_response(status: u16, message: &str) -> Response {
    Response::new("HTTP/1.1", status, http_reason(status))
        .header("Connection", "close")
        .body("text/plain; charset=utf-8", format!("{message}\n"))
}

/// Parse a complete request head (through its blank line) as an upgrade request; `None` if it
/// held only blank lines. For [`ferrocast_plugin_kit::head::HeadBuffer::next_head`].
pub fn parse(head: &[u8]) -> Result<Option<(Upgrade, usize)>, HandshakeError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    let used = match request.parse(head) {
        Ok(httparse::Status::Complete(used)) => used,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(HandshakeError::TooLarge),
        Err(_) => return Err(HandshakeError::Malformed),
    };
    let fields: Vec<(&str, &str)> = request
        .headers
        .iter()
        .map(|h| Ok((h.name, std::str::from_utf8(h.value)?)))
        .collect::<Result<_, std::str::Utf8Error>>()
        .map_err(|_| HandshakeError::Malformed)?;
    if request.method != Some("GET") {
        return Err(HandshakeError::NotGet);
    }
    if request.version != Some(1) {
        return Err(HandshakeError::NotHttp11);
    }
    let upgrade = header(&fields, "Upgrade")
        .is_some_and(|value| list(value).any(|p| p.eq_ignore_ascii_case("websocket")));
    let connection = header(&fields, "Connection")
        .is_some_and(|value| list(value).any(|t| t.eq_ignore_ascii_case("upgrade")));
    if !upgrade || !connection {
        return Err(HandshakeError::NotUpgrade);
    }
    if header(&fields, "Sec-WebSocket-Version").map(str::trim) != Some(VERSION) {
        return Err(HandshakeError::Version);
    }
    let key = header(&fields, "Sec-WebSocket-Key")
        .map(str::trim)
        .filter(|key| STANDARD.decode(key).is_ok_and(|raw| raw.len() == 16))
        .ok_or(HandshakeError::BadKey)?;
    let target = request.path.unwrap_or("/");
    let (path, query) = match target.split_once('?') {
        Some((path, query)) => (path, Some(query.to_owned())),
        None => (target, None),
    };
    let upgrade = Upgrade {
        path: normalise_path(path)?,
        query,
        key: key.to_owned(),
    };
    Ok(Some((upgrade, used)))
}

/// `Sec-WebSocket-Accept` for a client's key: base64 of the SHA-1 of key and GUID.
pub fn accept_key(key: &str) -> String {
    let mut sha = sha1_smol::Sha1::new();
    sha.update(key.as_bytes());
    sha.update(ACCEPT_GUID.as_bytes());
    STANDARD.encode(sha.digest().bytes())
}

/// The `101 Switching Protocols` answer to `upgrade`.
pub fn accept(upgrade: &Upgrade) -> Response {
    Response::new("HTTP/1.1", 101, "Switching Protocols")
        .header("Upgrade", "websocket")
        .header("Connection", "Upgrade")
        .header("Sec-WebSocket-Accept", accept_key(&upgrade.key))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

    fn request(extra: &str) -> String {
        format!("GET /live?token=abc HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\nSec-WebSocket-Key: {KEY}\r\n{extra}\r\n")
    }

    #[test]
    fn the_accept_key_is_the_rfc_example() {
        assert_eq!(accept_key(KEY), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    #[test]
    fn a_valid_upgrade_names_its_point_and_query() {
        let text = request("Sec-WebSocket-Version: 13\r\n");
        let (upgrade, used) = parse(text.as_bytes()).unwrap().unwrap();
        assert_eq!(used, text.len());
        assert_eq!(upgrade.path, "live");
        assert_eq!(upgrade.query.as_deref(), Some("token=abc"));
        let answer = String::from_utf8(accept(&upgrade).encode()).unwrap();
        assert!(answer.starts_with("HTTP/1.1 101 Switching Protocols\r\n"));
        assert!(answer.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
    }

    #[test]
    fn refusals_carry_their_status() {
        let cases = [
            (request("Sec-WebSocket-Version: 8\r\n"), 426),
            (request(""), 426),
            (
                "GET /live HTTP/1.1\r\nSec-WebSocket-Version: 13\r\n\r\n".to_owned(),
                426,
            ),
            (
                request("Sec-WebSocket-Version: 13\r\n").replacen("GET", "POST", 1),
                405,
            ),
            (
                request("Sec-WebSocket-Version: 13\r\n").replacen("HTTP/1.1", "HTTP/1.0", 1),
                400,
            ),
            (
                request("Sec-WebSocket-Version: 13\r\n").replace(KEY, "c2hvcnQ="),
                400,
            ),
            (
                request("Sec-WebSocket-Version: 13\r\n").replace("/live?", "/../x?"),
                400,
            ),
            ("GET /live HTTP/1.1\r\nBad Header\r\n\r\n".to_owned(), 400),
        ];
        for (text, status) in cases {
            let error = parse(text.as_bytes()).unwrap_err();
            assert_eq!(error.status(), status, "{text:?}: {error}");
        }
        let version = HandshakeError::Version.response();
        assert_eq!(version.get("Sec-WebSocket-Version"), Some("13"));
    }
}

//! The `ferrocast` command's client for the admin API: `status`, `reload`, `drain` and
//! `undrain` sent as HTTP requests with a bearer token, answered as the control socket answers
//! them (the same text, the same success or failure).
//!
//! One request per connection (`Connection: close`), on loopback or wherever `[admin] listen`
//! points; the answers are small, complete bodies.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::time::Duration;

use serde_json::Value;

use crate::reload::control::{DrainTarget, Reply, Request};

/// How long to wait for the listener to accept.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long an answer may take (a reload loads plugin builds; as long as the control socket).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);
/// Largest answer read.
const MAX_ANSWER: u64 = 16 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum AdminClientError {
    #[error("cannot reach the admin API at {address}: {source}")]
    Connect {
        address: SocketAddr,
        source: std::io::Error,
    },
    #[error("talking to the admin API at {address}: {source}")]
    Io {
        address: SocketAddr,
        source: std::io::Error,
    },
    #[error("the admin API at {address} sent an answer that is not HTTP")]
    Malformed { address: SocketAddr },
    #[error("the admin API at {address} refused the token; check FERROCAST_ADMIN_TOKEN or --admin-token")]
    Unauthorized { address: SocketAddr },
}

/// An HTTP answer: status and body text.
#[derive(Debug, PartialEq, Eq)]
struct Answer {
    status: u16,
    body: String,
}

/// Where to reach a listener bound to `listen`: a wildcard address is reached on loopback.
pub fn reachable_address(listen: SocketAddr) -> SocketAddr {
    let ip = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, listen.port())
}

/// The admin API of a running server, with the token to present.
pub struct AdminClient {
    pub address: SocketAddr,
    token: String,
}

impl AdminClient {
    pub fn new(listen: SocketAddr, token: String) -> Self {
        Self {
            address: reachable_address(listen),
            token,
        }
    }

    /// Send a control request through the API; the answer as the control socket gives it.
    pub fn request(&self, request: &Request) -> Result<Reply, AdminClientError> {
        let (method, path) = match request {
            Request::Status => ("GET", "/api/v1/status".to_owned()),
            Request::Reload => ("POST", "/api/v1/reload".to_owned()),
            Request::ReloadPlugins => ("POST", "/api/v1/reload?plugins_only=true".to_owned()),
            Request::Drain { target, name, on } => {
                let kind = match target {
                    DrainTarget::Point => "points",
                    DrainTarget::Plugin => "plugins",
                };
                let verb = if *on { "drain" } else { "undrain" };
                (
                    "POST",
                    format!("/api/v1/{kind}/{}/{verb}", encode_path(name)),
                )
            }
        };
        let answer = self.exchange(method, &path)?;
        if answer.status == 401 {
            return Err(AdminClientError::Unauthorized {
                address: self.address,
            });
        }
        Ok(reply_of(request, &answer))
    }

    fn exchange(&self, method: &str, path: &str) -> Result<Answer, AdminClientError> {
        let address = self.address;
        let io = |source| AdminClientError::Io { address, source };
        let mut stream = TcpStream::connect_timeout(&address, CONNECT_TIMEOUT)
            .map_err(|source| AdminClientError::Connect { address, source })?;
        stream.set_read_timeout(Some(ANSWER_TIMEOUT)).map_err(io)?;
        stream.set_write_timeout(Some(ANSWER_TIMEOUT)).map_err(io)?;
        // `Accept: text/plain` asks `status` for the text the control socket prints.
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {}\r\n\
             Accept: text/plain, application/json\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.token
        );
        stream.write_all(head.as_bytes()).map_err(io)?;
        let mut received = Vec::new();
        stream
            .take(MAX_ANSWER)
            .read_to_end(&mut received)
            .map_err(io)?;
        parse_answer(&received).ok_or(AdminClientError::Malformed { address })
    }
}

/// Percent-encode a point or plugin name for a path segment.
fn encode_path(name: &str) -> String {
    name.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The control socket's answer to `request`, from the API's answer.
fn reply_of(request: &Request, answer: &Answer) -> Reply {
    let ok = (200..300).contains(&answer.status);
    let json: Option<Value> = serde_json::from_str(&answer.body).ok();
    let field = |name: &str| {
        json.as_ref()
            .and_then(|value| value[name].as_str())
            .map(str::to_owned)
    };
    let text = match (request, ok) {
        (Request::Status, true) => answer.body.clone(),
        (Request::Reload | Request::ReloadPlugins, true) => field("plan").unwrap_or_default(),
        (Request::Drain { .. }, true) => field("message").unwrap_or_default(),
        (_, false) => field("error")
            .unwrap_or_else(|| format!("HTTP {}: {}", answer.status, answer.body.trim())),
    };
    let text = if text.is_empty() || text.ends_with('\n') {
        text
    } else {
        text + "\n"
    };
    Reply { ok, text }
}

/// Status and body of a complete HTTP/1.1 response (a `Content-Length` body, a chunked one,
/// or one that ends with the connection).
fn parse_answer(received: &[u8]) -> Option<Answer> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut headers);
    let httparse::Status::Complete(head_len) = response.parse(received).ok()? else {
        return None;
    };
    let status = response.code?;
    let header = |name: &str| {
        response
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .and_then(|h| std::str::from_utf8(h.value).ok())
    };
    let rest = &received[head_len..];
    let body = if header("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        dechunk(rest)?
    } else if let Some(length) = header("content-length") {
        rest.get(..length.trim().parse::<usize>().ok()?)?.to_vec()
    } else {
        rest.to_vec()
    };
    Some(Answer {
        status,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

/// The body of a chunked transfer coding.
fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&data[..line_end]).ok()?;
        let size_text = size_text.split(';').next()?.trim();
        let size = usize::from_str_radix(size_text, 16).ok()?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Some(body);
        }
        body.extend_from_slice(data.get(..size)?);
        data = data.get(size + 2..)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, body: &str) -> Answer {
        Answer {
            status,
            body: body.to_owned(),
        }
    }

    #[test]
    fn answers_are_read_by_length_chunked_or_to_the_end() {
        let sized = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello";
        assert_eq!(parse_answer(sized), Some(answer(200, "hello")));
        let chunked =
            b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n";
        assert_eq!(parse_answer(chunked), Some(answer(404, "abcde")));
        let open = b"HTTP/1.1 200 OK\r\n\r\nuntil the end";
        assert_eq!(parse_answer(open), Some(answer(200, "until the end")));
        assert_eq!(
            parse_answer(b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\nshort"),
            None
        );
        assert_eq!(parse_answer(b"not http at all\r\n\r\n"), None);
    }

    #[test]
    fn api_answers_become_control_replies() {
        let drain = Request::Drain {
            target: DrainTarget::Point,
            name: "live".into(),
            on: true,
        };
        let drained = reply_of(&drain, &answer(200, r#"{"message":"point live draining"}"#));
        assert_eq!(
            (drained.ok, drained.text.as_str()),
            (true, "point live draining\n")
        );
        let unknown = reply_of(
            &drain,
            &answer(404, r#"{"error":"no point named nope","field":"name"}"#),
        );
        assert_eq!(
            (unknown.ok, unknown.text.as_str()),
            (false, "no point named nope\n")
        );
        let plan = reply_of(&Request::Reload, &answer(200, r#"{"plan":"unchanged\n"}"#));
        assert_eq!((plan.ok, plan.text.as_str()), (true, "unchanged\n"));
        let status = reply_of(&Request::Status, &answer(200, "point live live\n"));
        assert_eq!(status.text, "point live live\n");
        let odd = reply_of(&Request::Status, &answer(500, "boom"));
        assert_eq!((odd.ok, odd.text.as_str()), (false, "HTTP 500: boom\n"));
    }

    #[test]
    fn wildcard_listeners_are_reached_on_loopback_and_names_are_encoded() {
        let any: SocketAddr = "0.0.0.0:8081".parse().unwrap();
        assert_eq!(reachable_address(any), "127.0.0.1:8081".parse().unwrap());
        let any6: SocketAddr = "[::]:8081".parse().unwrap();
        assert_eq!(reachable_address(any6), "[::1]:8081".parse().unwrap());
        let set: SocketAddr = "10.0.0.5:9000".parse().unwrap();
        assert_eq!(reachable_address(set), set);
        assert_eq!(encode_path("live-1_a.b"), "live-1_a.b");
        assert_eq!(encode_path("a b/c"), "a%20b%2Fc");
    }
}

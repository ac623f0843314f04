//! Pull sources: the server fetches a broadcast point's MPEG-TS from an HTTP URL (another
//! ferrocast included: an edge pulling from an origin), a TCP port, or a UDP port or multicast
//! group, and feeds the point as a pushing encoder would.
//!
//! A pull that fails or goes silent reconnects with exponential backoff and jitter, capped;
//! meanwhile the point holds its clients exactly as for a dropped push (SOURCE_LOST, null
//! packets, grace). An on-demand pull starts with the first client and stops once the last
//! one has been gone for the idle timeout.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tracing::{info, warn};

use crate::config::{PullMode, PullSource, PullUrl};
use crate::events;
use crate::points::LiveStream;
use crate::random::random_u32;

/// Connecting and reading an HTTP response head must not take longer than this.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest HTTP response head accepted from an origin.
const MAX_HEAD: usize = 16 * 1024;
/// How often an idle on-demand pull checks for clients.
const DEMAND_POLL: Duration = Duration::from_millis(100);

/// Why a pull connection ended.
enum Ended {
    /// The source closed, failed or went silent; clients are held for it to come back.
    Lost(String),
    /// No clients for the idle timeout (on-demand pulls).
    Idle,
}

/// Byte source of one pull connection.
enum Connection {
    /// An HTTP body (after the head) or raw TCP.
    Stream {
        socket: TcpStream,
        body: BodyDecoder,
        /// Bytes read along with the response head.
        initial: Vec<u8>,
    },
    Datagrams(UdpSocket),
}

/// Runs one point's pull for as long as the server runs.
pub struct Puller {
    pub stream: Arc<LiveStream>,
    pub source: PullSource,
    /// The pull's session number, as publisher of the point.
    pub session: u64,
}

impl Puller {
    pub async fn run(self) {
        let url = self.source.url.to_string();
        let mut failures: u32 = 0;
        loop {
            if self.source.mode == PullMode::OnDemand {
                self.wait_for_demand().await;
            }
            match self.connect().await {
                Ok(connection) => {
                    if let Err(busy) = self.stream.publish(self.session) {
                        warn!(event = events::PULL_FAILED, point = %self.stream.name, %url, reason = %busy, "an encoder pushes to this point; the pull waits");
                    } else {
                        info!(event = events::PULL_CONNECTED, point = %self.stream.name, %url, after_failures = failures, "pulling");
                        let (ended, bytes) = self.pump(connection).await;
                        if bytes > 0 {
                            failures = 0;
                        }
                        match ended {
                            Ended::Idle => {
                                info!(event = events::PULL_STOPPED, point = %self.stream.name, %url, idle_ms = self.source.idle_timeout.as_millis() as u64, "no clients left; pull stopped");
                                self.stream.stop_source(self.session);
                                continue;
                            }
                            Ended::Lost(reason) => self.stream.unpublish(self.session, &reason),
                        }
                    }
                }
                Err(reason) => {
                    warn!(event = events::PULL_FAILED, point = %self.stream.name, %url, attempt = failures + 1, %reason, "pull failed");
                    self.stream.note_error(&reason);
                }
            }
            let wait = backoff(&self.source, failures);
            failures = failures.saturating_add(1);
            info!(point = %self.stream.name, %url, retry_in_ms = wait.as_millis() as u64, "reconnecting");
            tokio::time::sleep(wait).await;
        }
    }

    /// On-demand: return once a client is there.
    async fn wait_for_demand(&self) {
        while self.stream.client_count() == 0 {
            tokio::time::sleep(DEMAND_POLL).await;
        }
    }

    async fn connect(&self) -> Result<Connection, String> {
        match &self.source.url {
            PullUrl::Http {
                authority,
                host,
                path,
            } => {
                let mut socket = connect_tcp(authority).await?;
                let request = format!(
                    "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: ferrocast/{}\r\nAccept: */*\r\nConnection: close\r\n\r\n",
                    env!("CARGO_PKG_VERSION")
                );
                socket
                    .write_all(request.as_bytes())
                    .await
                    .map_err(|e| format!("sending the request failed: {e}"))?;
                let (body, initial) = tokio::time::timeout(CONNECT_TIMEOUT, read_head(&mut socket))
                    .await
                    .map_err(|_| "no response head within 5 s".to_owned())??;
                Ok(Connection::Stream {
                    socket,
                    body,
                    initial,
                })
            }
            PullUrl::Tcp { authority } => Ok(Connection::Stream {
                socket: connect_tcp(authority).await?,
                body: BodyDecoder::UntilClose,
                initial: Vec::new(),
            }),
            PullUrl::Udp {
                bind,
                group,
                interface,
            } => bind_udp(*bind, *group, *interface)
                .map(Connection::Datagrams)
                .map_err(|e| format!("cannot listen on {bind}: {e}")),
        }
    }

    /// Feed the point until the source ends, goes silent, or (on demand) nobody watches.
    async fn pump(&self, connection: Connection) -> (Ended, u64) {
        let silence = self.stream.source_timeout();
        let mut pushed = 0u64;
        let mut idle_since: Option<tokio::time::Instant> = None;
        let mut last_data = tokio::time::Instant::now();
        let mut buf = vec![0u8; 64 * 1024];
        let mut media = Vec::new();
        let (mut stream, mut datagrams, mut body) = match connection {
            Connection::Stream {
                socket,
                mut body,
                initial,
            } => {
                if let Err(reason) = body.decode(&initial, &mut media) {
                    return (Ended::Lost(reason), 0);
                }
                (Some(socket), None, body)
            }
            Connection::Datagrams(socket) => (None, Some(socket), BodyDecoder::UntilClose),
        };
        loop {
            if !media.is_empty() {
                pushed += media.len() as u64;
                self.stream.push(self.session, &media);
                media.clear();
            }
            if body.finished() {
                return (Ended::Lost("the source ended its response".into()), pushed);
            }
            if self.source.mode == PullMode::OnDemand {
                if self.stream.client_count() == 0 {
                    let since = *idle_since.get_or_insert_with(tokio::time::Instant::now);
                    if since.elapsed() >= self.source.idle_timeout {
                        return (Ended::Idle, pushed);
                    }
                } else {
                    idle_since = None;
                }
            }
            let read = async {
                match (&mut stream, &mut datagrams) {
                    (Some(socket), _) => socket.read(&mut buf).await,
                    (_, Some(socket)) => socket.recv(&mut buf).await,
                    _ => unreachable!("a connection is a stream or datagrams"),
                }
            };
            match tokio::time::timeout(silence.min(Duration::from_secs(1)), read).await {
                Ok(Ok(0)) if stream.is_some() => {
                    return (
                        Ended::Lost("the source closed the connection".into()),
                        pushed,
                    )
                }
                Ok(Ok(n)) => {
                    if let Err(reason) = body.decode(&buf[..n], &mut media) {
                        return (Ended::Lost(reason), pushed);
                    }
                    if n > 0 {
                        last_data = tokio::time::Instant::now();
                    }
                }
                Ok(Err(error)) => return (Ended::Lost(format!("reading failed: {error}")), pushed),
                Err(_) => {
                    if last_data.elapsed() >= silence {
                        return (
                            Ended::Lost(format!(
                                "no data from the source for {} ms",
                                silence.as_millis()
                            )),
                            pushed,
                        );
                    }
                }
            }
        }
    }
}

/// The wait before reconnect attempt `failures + 1`: doubling from the minimum, capped, with
/// ±20 % jitter so that many edges do not reconnect to an origin in lockstep.
pub fn backoff(source: &PullSource, failures: u32) -> Duration {
    let base = source
        .backoff_min
        .saturating_mul(1u32 << failures.min(16))
        .min(source.backoff_max);
    let jitter = f64::from(random_u32() % 401) / 1000.0 - 0.2;
    base.mul_f64(1.0 + jitter)
}

async fn connect_tcp(authority: &str) -> Result<TcpStream, String> {
    let socket = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(authority))
        .await
        .map_err(|_| format!("connecting to {authority} timed out"))?
        .map_err(|e| format!("cannot connect to {authority}: {e}"))?;
    let _ = socket.set_nodelay(true);
    Ok(socket)
}

/// Read an HTTP response head; a non-200 status is a failure naming it.
async fn read_head(socket: &mut TcpStream) -> Result<(BodyDecoder, Vec<u8>), String> {
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = socket
            .read(&mut buf)
            .await
            .map_err(|e| format!("reading the response failed: {e}"))?;
        if n == 0 {
            return Err("the source closed the connection before answering".into());
        }
        data.extend_from_slice(&buf[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut response = httparse::Response::new(&mut headers);
        match response.parse(&data) {
            Ok(httparse::Status::Complete(head_len)) => {
                let status = response.code.unwrap_or(0);
                if status != 200 {
                    let reason = response.reason.unwrap_or("");
                    return Err(format!("the source answered {status} {reason}"));
                }
                let header = |name: &str| {
                    response
                        .headers
                        .iter()
                        .find(|h| h.name.eq_ignore_ascii_case(name))
                        .map(|h| String::from_utf8_lossy(h.value).to_ascii_lowercase())
                };
                let body = if header("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
                    BodyDecoder::Chunked(ChunkState::Size(Vec::new()))
                } else if let Some(length) =
                    header("content-length").and_then(|v| v.trim().parse().ok())
                {
                    BodyDecoder::Length(length)
                } else {
                    BodyDecoder::UntilClose
                };
                return Ok((body, data[head_len..].to_vec()));
            }
            Ok(httparse::Status::Partial) if data.len() < MAX_HEAD => {}
            Ok(httparse::Status::Partial) => return Err("the response head is too large".into()),
            Err(e) => return Err(format!("the source's response is not HTTP: {e}")),
        }
    }
}

/// How an HTTP response body is delimited, decoding as bytes arrive.
enum BodyDecoder {
    UntilClose,
    Length(u64),
    Chunked(ChunkState),
}

enum ChunkState {
    /// Reading a chunk-size line.
    Size(Vec<u8>),
    /// Inside a chunk with this many bytes left.
    Data(u64),
    /// Expecting the CRLF after a chunk's data; the count of bytes of it already seen.
    DataEnd(u8),
    /// The last chunk was seen.
    Done,
}

impl BodyDecoder {
    fn finished(&self) -> bool {
        matches!(self, Self::Length(0) | Self::Chunked(ChunkState::Done))
    }

    fn decode(&mut self, mut input: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
        match self {
            Self::UntilClose => out.extend_from_slice(input),
            Self::Length(left) => {
                let take = (*left).min(input.len() as u64) as usize;
                out.extend_from_slice(&input[..take]);
                *left -= take as u64;
            }
            Self::Chunked(state) => {
                while !input.is_empty() {
                    match state {
                        ChunkState::Size(line) => {
                            let Some(end) = input.iter().position(|&b| b == b'\n') else {
                                line.extend_from_slice(input);
                                if line.len() > 1024 {
                                    return Err("a chunk-size line is too long".into());
                                }
                                return Ok(());
                            };
                            line.extend_from_slice(&input[..end]);
                            input = &input[end + 1..];
                            let text = String::from_utf8_lossy(line);
                            let size_text = text.trim().split(';').next().unwrap_or("").trim();
                            let size = u64::from_str_radix(size_text, 16)
                                .map_err(|_| format!("bad chunk size `{size_text}`"))?;
                            *state = if size == 0 {
                                ChunkState::Done
                            } else {
                                ChunkState::Data(size)
                            };
                        }
                        ChunkState::Data(left) => {
                            let take = (*left).min(input.len() as u64) as usize;
                            out.extend_from_slice(&input[..take]);
                            input = &input[take..];
                            *left -= take as u64;
                            if *left == 0 {
                                *state = ChunkState::DataEnd(0);
                            }
                        }
                        ChunkState::DataEnd(seen) => {
                            // CRLF (or a bare LF) after the data.
                            if input[0] == b'\n' {
                                *state = ChunkState::Size(Vec::new());
                            } else if input[0] == b'\r' && *seen == 0 {
                                *seen = 1;
                            } else {
                                return Err("chunk data is not followed by CRLF".into());
                            }
                            input = &input[1..];
                        }
                        ChunkState::Done => return Ok(()),
                    }
                }
            }
        }
        Ok(())
    }
}

/// A UDP socket on `bind`, joined to `group` on `interface` if given. Several listeners may
/// share a multicast port.
fn bind_udp(
    bind: SocketAddr,
    group: Option<Ipv4Addr>,
    interface: Option<Ipv4Addr>,
) -> std::io::Result<UdpSocket> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(bind),
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )?;
    socket.set_reuse_address(true)?;
    socket.set_recv_buffer_size(4 * 1024 * 1024).ok();
    socket.set_nonblocking(true)?;
    socket.bind(&bind.into())?;
    if let Some(group) = group {
        socket.join_multicast_v4(&group, &interface.unwrap_or(Ipv4Addr::UNSPECIFIED))?;
    }
    UdpSocket::from_std(socket.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(
        decoder: &mut BodyDecoder,
        input: &[u8],
        piece: usize,
    ) -> Result<Vec<u8>, String> {
        let mut out = Vec::new();
        for part in input.chunks(piece) {
            decoder.decode(part, &mut out)?;
        }
        Ok(out)
    }

    #[test]
    fn chunked_bodies_decode_in_any_split() {
        let body = b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\n";
        for piece in [1, 2, 3, 7, body.len()] {
            let mut decoder = BodyDecoder::Chunked(ChunkState::Size(Vec::new()));
            assert_eq!(
                decode_all(&mut decoder, body, piece).unwrap(),
                b"hello world"
            );
            assert!(decoder.finished());
        }
        let mut decoder = BodyDecoder::Chunked(ChunkState::Size(Vec::new()));
        assert!(decode_all(&mut decoder, b"zz\r\n", 1).is_err());
    }

    #[test]
    fn length_bodies_stop_at_their_length() {
        let mut decoder = BodyDecoder::Length(4);
        assert_eq!(decode_all(&mut decoder, b"abcdef", 3).unwrap(), b"abcd");
        assert!(decoder.finished());
    }

    #[test]
    fn backoff_doubles_to_the_cap_with_jitter() {
        let source = PullSource {
            url: PullUrl::Tcp {
                authority: "127.0.0.1:1".into(),
            },
            mode: PullMode::Always,
            idle_timeout: Duration::from_secs(1),
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_millis(1000),
        };
        for (failures, nominal) in [
            (0, 100.0),
            (1, 200.0),
            (2, 400.0),
            (3, 800.0),
            (4, 1000.0),
            (30, 1000.0),
        ] {
            let wait = backoff(&source, failures).as_secs_f64() * 1000.0;
            assert!(
                (nominal * 0.79..=nominal * 1.21).contains(&wait),
                "{failures}: {wait}"
            );
        }
    }
}

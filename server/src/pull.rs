//! Pull sources: the server fetches a broadcast point's MPEG-TS from an HTTP URL (another
//! ferrocast included: an edge pulling from an origin), a TCP port, or a UDP port or multicast
//! group, and feeds the point as a pushing encoder would.
//!
//! A pull that fails or goes silent reconnects with exponential backoff and jitter, capped;
//! meanwhile the point holds its clients exactly as for a dropped push (SOURCE_LOST, null
//! packets, grace). An on-demand pull starts with the first client and stops once the last
//! one has been gone for the idle timeout.
//!
//! An HTTP origin's response is read with `ferrocast-plugin-kit`: the same head scanning,
//! framing rules and strict chunked decoder as the HTTP plugin applies to encoders, so what the
//! plugin refuses from an encoder (a chunk size of `+5`, bare LF line ends in chunk framing,
//! conflicting lengths) is refused from an origin too. Each pull runs in one `pull` span
//! carrying its point, source URL and session.

use std::convert::Infallible;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use ferrocast_plugin_kit::chunked::ChunkedError;
use ferrocast_plugin_kit::client::{ResponseError, ResponseReader};
use ferrocast_plugin_kit::framing::{BodyDecoder, FeedError};
use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::time::Instant;
use tracing::{info, warn, warn_span, Instrument};

use crate::config::{PullMode, PullSource, PullUrl, UpstreamCredentials};
use crate::events;
use crate::points::LiveStream;
use crate::random::random_u32;

/// Connecting and reading an HTTP response head must not take longer than this.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest HTTP response head accepted from an origin.
const MAX_HEAD: usize = 16 * 1024;
/// How often an idle on-demand pull checks for clients.
const DEMAND_POLL: Duration = Duration::from_millis(100);
/// Longest wait for one read, so that an on-demand pull notices its last client leaving.
const READ_POLL: Duration = Duration::from_secs(1);

/// Why a pull could not connect, or why its connection ended.
#[derive(Debug, Error)]
pub enum PullError {
    #[error("connecting to {authority} timed out")]
    ConnectTimeout { authority: String },
    #[error("cannot connect to {authority}: {source}")]
    Connect {
        authority: String,
        source: io::Error,
    },
    #[error("cannot listen on {bind}: {source}")]
    Bind { bind: SocketAddr, source: io::Error },
    #[error("sending the request failed: {0}")]
    SendRequest(io::Error),
    #[error("no response head within {} s", CONNECT_TIMEOUT.as_secs())]
    HeadTimeout,
    #[error("reading the response failed: {0}")]
    ReadHead(io::Error),
    #[error("the source closed the connection before answering")]
    ClosedBeforeAnswer,
    #[error("the source answered {status} {reason}")]
    Status { status: u16, reason: String },
    #[error(transparent)]
    Response(#[from] ResponseError),
    #[error("the source's body is malformed: {0}")]
    Body(ChunkedError),
    #[error("the source ended its response")]
    ResponseEnded,
    #[error("the source closed the connection")]
    Closed,
    #[error("reading failed: {0}")]
    Read(io::Error),
    #[error("no data from the source for {} ms", .0.as_millis())]
    Silent(Duration),
}

/// Why a pull connection ended.
enum Ended {
    /// The source closed, failed or went silent; clients are held for it to come back.
    Lost(PullError),
    /// No clients for the idle timeout (on-demand pulls).
    Idle,
}

/// What one connection attempt came to.
struct Attempt {
    /// Media reached the point, so the source works: the backoff starts over.
    fed: bool,
    /// The pull stopped for lack of clients; it waits for demand, not for a backoff.
    idle: bool,
}

/// Where a pull connection's bytes come from.
enum Source {
    /// An HTTP body (after the head) or raw TCP.
    Stream(TcpStream),
    Datagrams(UdpSocket),
}

impl Source {
    async fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Self::Stream(socket) => socket.read(buf).await,
            Self::Datagrams(socket) => socket.recv(buf).await,
        }
    }
}

/// One pull connection: its byte source, how its body is delimited, and the bytes read along
/// with the response head.
struct Connection {
    source: Source,
    body: BodyDecoder,
    initial: Vec<u8>,
}

/// Decides when a running pull gives up: the source silent for too long, or (on demand) no
/// clients for the idle timeout. Times are parameters, so the decisions are tested without
/// sockets.
#[derive(Debug)]
struct Watchdog {
    silence: Duration,
    /// The on-demand idle timeout; `None` for pulls that always run.
    idle_timeout: Option<Duration>,
    last_data: Instant,
    idle_since: Option<Instant>,
}

impl Watchdog {
    fn new(silence: Duration, idle_timeout: Option<Duration>, now: Instant) -> Self {
        Self {
            silence,
            idle_timeout,
            last_data: now,
            idle_since: None,
        }
    }

    /// Media arrived.
    fn data(&mut self, now: Instant) {
        self.last_data = now;
    }

    /// With `clients` watching now, whether an on-demand pull has been idle long enough to stop.
    fn idle(&mut self, clients: usize, now: Instant) -> bool {
        let Some(timeout) = self.idle_timeout else {
            return false;
        };
        if clients > 0 {
            self.idle_since = None;
            return false;
        }
        now.duration_since(*self.idle_since.get_or_insert(now)) >= timeout
    }

    /// Whether the source has been silent for too long.
    fn silent(&self, now: Instant) -> bool {
        now.duration_since(self.last_data) >= self.silence
    }

    /// The longest wait for one read.
    fn read_timeout(&self) -> Duration {
        self.silence.min(READ_POLL)
    }
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
        // At WARN level, so that a log filtered down to warnings still names the pull.
        let span = warn_span!(
            "pull",
            point = %self.stream.name,
            url = %self.source.url,
            session = self.session
        );
        self.reconnect_forever().instrument(span).await;
    }

    async fn reconnect_forever(self) {
        let mut failures: u32 = 0;
        loop {
            if self.source.mode == PullMode::OnDemand {
                self.wait_for_demand().await;
            }
            let attempt = self.attempt(failures).await;
            if attempt.fed {
                failures = 0;
            }
            if attempt.idle {
                continue;
            }
            let wait = backoff(&self.source, failures);
            failures = failures.saturating_add(1);
            info!(retry_in_ms = wait.as_millis() as u64, "reconnecting");
            tokio::time::sleep(wait).await;
        }
    }

    /// Connect, publish and feed the point until the connection ends.
    async fn attempt(&self, failures: u32) -> Attempt {
        let failed = Attempt {
            fed: false,
            idle: false,
        };
        let connection = match self.connect().await {
            Ok(connection) => connection,
            Err(error) => {
                warn!(event = events::PULL_FAILED, attempt = failures + 1, reason = %error, "pull failed");
                self.stream.note_error(&error.to_string());
                return failed;
            }
        };
        if let Err(busy) = self.stream.publish(self.session) {
            warn!(event = events::PULL_FAILED, reason = %busy, "an encoder pushes to this point; the pull waits");
            return failed;
        }
        info!(
            event = events::PULL_CONNECTED,
            after_failures = failures,
            "pulling"
        );
        let (ended, bytes) = self.pump(connection).await;
        let fed = bytes > 0;
        match ended {
            Ended::Idle => {
                let idle_ms = self.source.idle_timeout.as_millis() as u64;
                info!(
                    event = events::PULL_STOPPED,
                    idle_ms, "no clients left; pull stopped"
                );
                self.stream.stop_source(self.session);
                Attempt { fed, idle: true }
            }
            Ended::Lost(error) => {
                self.stream.unpublish(self.session, &error.to_string());
                Attempt { fed, idle: false }
            }
        }
    }

    /// On-demand: return once a client is there, or HLS players ask for the point.
    async fn wait_for_demand(&self) {
        while !self.stream.wanted() {
            tokio::time::sleep(DEMAND_POLL).await;
        }
    }

    async fn connect(&self) -> Result<Connection, PullError> {
        match &self.source.url {
            PullUrl::Http {
                authority,
                host,
                path,
                basic,
            } => connect_http(authority, host, path, basic.as_ref()).await,
            PullUrl::Tcp { authority } => Ok(Connection {
                source: Source::Stream(connect_tcp(authority).await?),
                body: BodyDecoder::UntilClose,
                initial: Vec::new(),
            }),
            PullUrl::Udp {
                bind,
                group,
                interface,
            } => Ok(Connection {
                source: Source::Datagrams(bind_udp(*bind, *group, *interface).map_err(
                    |source| PullError::Bind {
                        bind: *bind,
                        source,
                    },
                )?),
                body: BodyDecoder::UntilClose,
                initial: Vec::new(),
            }),
        }
    }

    /// Feed the point until the source ends, goes silent, or (on demand) nobody watches.
    /// Returns why it ended and how many media bytes reached the point.
    async fn pump(&self, connection: Connection) -> (Ended, u64) {
        let Connection {
            mut source,
            mut body,
            initial,
        } = connection;
        let idle_timeout =
            (self.source.mode == PullMode::OnDemand).then_some(self.source.idle_timeout);
        let mut watchdog =
            Watchdog::new(self.stream.source_timeout(), idle_timeout, Instant::now());
        let mut media = Vec::new();
        let mut pushed = match self.forward(&mut body, &initial, &mut media) {
            Ok(bytes) => bytes,
            Err(error) => return (Ended::Lost(error), 0),
        };
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            if body.is_done() {
                return (Ended::Lost(PullError::ResponseEnded), pushed);
            }
            if watchdog.idle(usize::from(self.stream.wanted()), Instant::now()) {
                return (Ended::Idle, pushed);
            }
            let read = tokio::time::timeout(watchdog.read_timeout(), source.read(&mut buf)).await;
            let lost = match read {
                Ok(Ok(0)) if matches!(source, Source::Stream(_)) => PullError::Closed,
                Ok(Ok(n)) => match self.forward(&mut body, &buf[..n], &mut media) {
                    Ok(bytes) => {
                        pushed += bytes;
                        if n > 0 {
                            watchdog.data(Instant::now());
                        }
                        continue;
                    }
                    Err(error) => error,
                },
                Ok(Err(error)) => PullError::Read(error),
                Err(_) if watchdog.silent(Instant::now()) => PullError::Silent(watchdog.silence),
                Err(_) => continue,
            };
            return (Ended::Lost(lost), pushed);
        }
    }

    /// Decode `input` and push its media to the point; returns the media bytes pushed.
    fn forward(
        &self,
        body: &mut BodyDecoder,
        input: &[u8],
        media: &mut Vec<u8>,
    ) -> Result<u64, PullError> {
        decode_media(body, input, media)?;
        if !media.is_empty() {
            self.stream.push(self.session, media);
        }
        Ok(media.len() as u64)
    }
}

/// Decode `input` as the body into `media` (cleared first). A malformed body pushes nothing of
/// what this input held.
fn decode_media(
    body: &mut BodyDecoder,
    input: &[u8],
    media: &mut Vec<u8>,
) -> Result<(), PullError> {
    media.clear();
    let fed = body.feed(input, |data| {
        media.extend_from_slice(data);
        Ok::<(), Infallible>(())
    });
    match fed {
        Ok(_) => Ok(()),
        Err(FeedError::Chunked(error)) => Err(PullError::Body(error)),
        Err(FeedError::Sink(never)) => match never {},
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

async fn connect_tcp(authority: &str) -> Result<TcpStream, PullError> {
    let socket = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(authority))
        .await
        .map_err(|_| PullError::ConnectTimeout {
            authority: authority.to_owned(),
        })?
        .map_err(|source| PullError::Connect {
            authority: authority.to_owned(),
            source,
        })?;
    let _ = socket.set_nodelay(true);
    Ok(socket)
}

/// Send the GET for `path` and read the response head.
async fn connect_http(
    authority: &str,
    host: &str,
    path: &str,
    basic: Option<&UpstreamCredentials>,
) -> Result<Connection, PullError> {
    let mut socket = connect_tcp(authority).await?;
    let authorization = basic
        .map(|credentials| format!("Authorization: {}\r\n", credentials.authorization()))
        .unwrap_or_default();
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: ferrocast/{}\r\nAccept: */*\r\n{authorization}Connection: close\r\n\r\n",
        env!("CARGO_PKG_VERSION")
    );
    socket
        .write_all(request.as_bytes())
        .await
        .map_err(PullError::SendRequest)?;
    let (body, initial) = tokio::time::timeout(CONNECT_TIMEOUT, read_head(&mut socket))
        .await
        .map_err(|_| PullError::HeadTimeout)??;
    Ok(Connection {
        source: Source::Stream(socket),
        body,
        initial,
    })
}

/// Read an HTTP response head; a non-200 status is a failure naming it. Returns the body's
/// decoder and the bytes of the body read along with the head.
async fn read_head<R: AsyncReadExt + Unpin>(
    socket: &mut R,
) -> Result<(BodyDecoder, Vec<u8>), PullError> {
    let mut reader = ResponseReader::new(MAX_HEAD);
    let mut buf = [0u8; 4096];
    loop {
        let n = socket.read(&mut buf).await.map_err(PullError::ReadHead)?;
        if n == 0 {
            return Err(PullError::ClosedBeforeAnswer);
        }
        reader.push(&buf[..n]);
        if let Some(head) = reader.next_head()? {
            if head.status != 200 {
                return Err(PullError::Status {
                    status: head.status,
                    reason: head.reason,
                });
            }
            return Ok((BodyDecoder::new(head.framing), reader.take()));
        }
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
    use ferrocast_plugin_kit::framing::Framing;

    fn decode_in_pieces(
        body: &mut BodyDecoder,
        input: &[u8],
        piece: usize,
    ) -> Result<Vec<u8>, PullError> {
        let mut out = Vec::new();
        let mut media = Vec::new();
        for part in input.chunks(piece) {
            decode_media(body, part, &mut media)?;
            out.extend_from_slice(&media);
        }
        Ok(out)
    }

    #[test]
    fn chunked_bodies_decode_in_any_split() {
        let body = b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\n";
        for piece in [1, 2, 3, 7, body.len()] {
            let mut decoder = BodyDecoder::new(Framing::Chunked);
            assert_eq!(
                decode_in_pieces(&mut decoder, body, piece).unwrap(),
                b"hello world"
            );
            assert!(decoder.is_done());
        }
        let mut decoder = BodyDecoder::new(Framing::Chunked);
        assert!(decode_in_pieces(&mut decoder, b"zz\r\n", 1).is_err());
    }

    #[test]
    fn chunk_sizes_with_a_sign_are_refused() {
        for piece in [1, 64] {
            let mut decoder = BodyDecoder::new(Framing::Chunked);
            let result = decode_in_pieces(&mut decoder, b"+5\r\nhello\r\n0\r\n\r\n", piece);
            assert!(
                matches!(result, Err(PullError::Body(ChunkedError::BadSize))),
                "{result:?}"
            );
        }
    }

    #[test]
    fn bare_lf_line_ends_in_chunk_framing_are_refused() {
        for (body, error) in [
            (&b"5\nhello\r\n0\r\n\r\n"[..], ChunkedError::BadSize),
            (b"5\r\nhello\n0\r\n\r\n", ChunkedError::BadLineEnd),
            (b"5;ext\nhello\r\n", ChunkedError::BadLineEnd),
            (b"5\r\nhello\r\n0\r\n\n", ChunkedError::BadLineEnd),
        ] {
            let mut decoder = BodyDecoder::new(Framing::Chunked);
            let result = decode_in_pieces(&mut decoder, body, 3);
            assert!(
                matches!(result, Err(PullError::Body(found)) if found == error),
                "{:?}: {result:?}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn length_bodies_stop_at_their_length() {
        let mut decoder = BodyDecoder::new(Framing::Length(4));
        assert_eq!(
            decode_in_pieces(&mut decoder, b"abcdef", 3).unwrap(),
            b"abcd"
        );
        assert!(decoder.is_done());
    }

    async fn head_of(response: &'static [u8]) -> Result<(BodyDecoder, Vec<u8>), PullError> {
        let (mut client, mut server) = tokio::io::duplex(64);
        let writer = tokio::spawn(async move {
            for part in response.chunks(5) {
                let _ = server.write_all(part).await;
            }
        });
        let result = read_head(&mut client).await;
        writer.abort();
        result
    }

    #[tokio::test]
    async fn response_heads_are_framed_like_the_http_plugin_frames_requests() {
        let (body, initial) =
            head_of(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel")
                .await
                .unwrap();
        assert!(matches!(body, BodyDecoder::Chunked(_)));
        assert_eq!(initial, b"5\r\nhel");
        let (body, _) = head_of(b"HTTP/1.0 200 OK\nContent-Length: 10\n\n")
            .await
            .unwrap();
        assert!(matches!(body, BodyDecoder::Length(10)));
        let (body, _) = head_of(b"HTTP/1.0 200 OK\r\n\r\n").await.unwrap();
        assert!(body.is_until_close());
        for refused in [
            &b"HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
            b"ICY 200 OK\r\n\r\n",
        ] {
            let result = head_of(refused).await;
            assert!(matches!(result, Err(PullError::Response(_))), "{result:?}");
        }
    }

    #[tokio::test]
    async fn statuses_other_than_200_and_early_closes_fail() {
        let result = head_of(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n").await;
        assert_eq!(
            result.unwrap_err().to_string(),
            "the source answered 404 Not Found"
        );
        let result = head_of(b"HTTP/1.1 200 OK\r\n").await;
        assert!(
            matches!(result, Err(PullError::ClosedBeforeAnswer)),
            "{result:?}"
        );
    }

    #[test]
    fn watchdog_notices_silence() {
        let start = Instant::now();
        let mut watchdog = Watchdog::new(Duration::from_secs(3), None, start);
        assert_eq!(watchdog.read_timeout(), READ_POLL);
        assert!(!watchdog.silent(start + Duration::from_millis(2999)));
        assert!(watchdog.silent(start + Duration::from_secs(3)));
        watchdog.data(start + Duration::from_secs(2));
        assert!(!watchdog.silent(start + Duration::from_secs(4)));
        assert!(
            !watchdog.idle(0, start + Duration::from_secs(3600)),
            "always-on pulls never idle"
        );
        let short = Watchdog::new(Duration::from_millis(300), None, start);
        assert_eq!(short.read_timeout(), Duration::from_millis(300));
    }

    #[test]
    fn watchdog_stops_on_demand_pulls_after_the_idle_timeout() {
        let start = Instant::now();
        let second = Duration::from_secs(1);
        let mut watchdog = Watchdog::new(Duration::from_secs(10), Some(2 * second), start);
        assert!(!watchdog.idle(1, start));
        assert!(!watchdog.idle(0, start + second), "idle from now on");
        assert!(!watchdog.idle(0, start + 2 * second));
        assert!(!watchdog.idle(1, start + 3 * second), "a client came back");
        assert!(!watchdog.idle(0, start + 4 * second));
        assert!(watchdog.idle(0, start + 6 * second));
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

//! One client connection: the IO loop that drives a plugin session.
//!
//! The loop only moves bytes and waits on timers: it reads the socket, writes the output
//! queue, receives from the live ring, reads file blocks, and hands each event to the plugin
//! session or to the connection's state (`connection::Connection`), whose parts make the
//! decisions. Media is pulled into the output queue only while the queue is short, so a slow
//! client's backlog stays in the point's shared ring, where falling too far behind means
//! skipping to the next keyframe, never slowing anyone else.
//!
//! - `connection`: the connection's state and its reactions to events;
//! - `calls`: what the plugin asks of the host ([`HostCalls`](ferrocast_plugin_api::host::HostCalls));
//! - `output`: the output queue, backpressure and the slow-client policy;
//! - `media`: the media cursors (live ring, file range, paced RTP file);
//! - `framed`: media handed to a session that frames it itself (`play_framed`);
//! - `publisher`: a session that publishes to a point;
//! - `ingest_pace`: holds a publisher that runs ahead of real time to a bounded lead;
//! - `transports`: the session's RTP transports and RTCP schedule;
//! - `admission`: admission, drain and the re-check after a reload;
//! - `play`: play, seek, resume and pause decisions;
//! - `zero_copy`: on-demand file ranges sent with `sendfile` on a plain TCP socket;
//! - `resource`: a packaged (HLS) resource the session asked for, held while a blocking
//!   playlist reload waits.

mod admission;
mod calls;
mod connection;
mod framed;
mod ingest_pace;
mod media;
mod output;
mod play;
mod publisher;
mod resource;
mod transports;
mod zero_copy;

use std::future::Future;
use std::io::IoSlice;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use ferrocast_plugin_api::host::{PluginFault, PluginSession};
use ferrocast_plugin_api::SessionInfo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{debug, error, info, info_span, warn, Span};

pub use self::admission::LostUse;
use self::connection::Connection;
use self::media::{LiveStep, Media};
pub(crate) use self::output::{Coalesce, HoldRule, COALESCE};
use self::output::{OutputQueue, MAX_IOVECS};
use self::publisher::Silence;
use self::transports::RtcpSource;
use self::zero_copy::FileSpan;
use crate::events;
use crate::media::rtp::{parse_rtcp, RtcpPacket};
use crate::state::{ServingPlugin, Shared};
use crate::waits::sleep_until_opt;

/// How long, and how much, to keep reading from a client after closing our side.
const LINGER_TIME: Duration = Duration::from_secs(2);
const LINGER_MAX_BYTES: usize = 4 * 1024 * 1024;
/// Size of one read from the client, once it has sent a read's worth at once (a publisher):
/// an encoder's write of a few tens of milliseconds is one read, taken in as one burst.
const READ_BUFFER: usize = 64 * 1024;
/// Size of one read from a publisher well ahead of real time (`ingest_pace`): its socket is always
/// full, so every read is a whole block, and a block must stay a short stretch of media even
/// at a low bitrate, or its viewers would get it in bursts a second apart.
const PACED_READ_BUFFER: usize = 8 * 1024;
/// Size of the first reads: a player sends a request or two and then mostly nothing, and
/// thousands of listeners each holding [`READ_BUFFER`] bytes would cost more than their
/// output. On a plain TCP socket even this is held only while a read is being taken in (see
/// [`ClientReader`]).
const FIRST_READ_BUFFER: usize = 2 * 1024;

/// How long a connection refused by a limit may take to get its answer out.
const REFUSED_GRACE: Duration = Duration::from_secs(2);

/// A connection the limits let in: its place in the counts, and whether it is served only to
/// be refused (its first request gets OVER_CAPACITY, then it is closed).
pub struct Admitted {
    pub _guard: crate::limits::ConnectionGuard,
    pub refused: Option<crate::limits::Refusal>,
}

/// Why a connection ended.
#[derive(Debug)]
enum Ending {
    Closed,
    /// No first valid request within the idle timeout.
    Idle(Duration),
    /// Refused by a limit; answered (or given up on) and closed.
    Refused(crate::limits::Refusal),
    /// A publishing encoder sent no media for the point's source timeout.
    SourceSilent(Silence),
    PeerGone(std::io::Error),
    /// The socket took nothing for the write timeout.
    TooSlow,
    Fault(PluginFault),
}

impl From<PluginFault> for Ending {
    fn from(fault: PluginFault) -> Self {
        Self::Fault(fault)
    }
}

impl Ending {
    /// The access log's `x-end-reason`.
    fn as_str(&self) -> &'static str {
        match self {
            Ending::Closed => "closed",
            Ending::Idle(_) => "idle",
            Ending::Refused(_) => "refused",
            Ending::SourceSilent(_) => "source-silent",
            Ending::PeerGone(_) => "client-gone",
            Ending::TooSlow => "client-too-slow",
            Ending::Fault(_) => "plugin-fault",
        }
    }

    /// Why a session that was publishing stopped, for SOURCE_LOST.
    fn publisher_gone(&self) -> String {
        match self {
            Ending::SourceSilent(silence) => silence.reason(),
            Ending::Fault(_) => "the plugin serving the encoder faulted".to_owned(),
            _ => "the encoder disconnected".to_owned(),
        }
    }

    fn log(&self, seconds: f64, bytes_sent: u64, write_timeout: Duration) {
        match self {
            Ending::Closed => {
                info!(
                    event = events::DISCONNECT,
                    seconds, bytes_sent, "session closed"
                )
            }
            Ending::Idle(timeout) => {
                info!(
                    event = events::DISCONNECT,
                    seconds,
                    timeout_ms = timeout.as_millis() as u64,
                    "no valid request within the idle timeout; connection closed"
                )
            }
            Ending::Refused(refusal) => {
                debug!(
                    limit = refusal.as_str(),
                    seconds, "refused connection closed"
                )
            }
            Ending::PeerGone(why) => {
                info!(event = events::DISCONNECT, seconds, bytes_sent, reason = %why, "client went away")
            }
            Ending::SourceSilent(silence) => {
                warn!(
                    event = events::DISCONNECT,
                    seconds,
                    reason = %silence.reason(),
                    "encoder sent no media within the source timeout; connection closed"
                )
            }
            Ending::TooSlow => {
                warn!(
                    event = events::DISCONNECT,
                    seconds,
                    bytes_sent,
                    timeout_ms = write_timeout.as_millis() as u64,
                    "client stopped reading; disconnected"
                )
            }
            Ending::Fault(fault) => {
                error!(event = events::PLUGIN_FAULT, %fault, "plugin panicked; session closed, the server continues")
            }
        }
    }
}

/// Serve one accepted connection until it ends. Its log lines sit in a span that names its
/// plugin, generation, session and peer (and its point, once known).
///
/// The span is entered around the work that may log, not around every poll of the task: a
/// live client's task is polled once per chunk, and entering a span costs a lock read in the
/// log filter each time.
pub async fn serve_connection<S: ClientStream>(
    socket: S,
    peer: SocketAddr,
    local: SocketAddr,
    plugin: Arc<ServingPlugin>,
    shared: Arc<Shared>,
    admitted: Admitted,
) {
    let secure = socket.is_secure();
    let info = SessionInfo {
        id: shared.new_session_id(),
        peer: peer.to_string().into(),
        local: local.to_string().into(),
    };
    let info_id = info.id;
    let span = info_span!(
        "conn",
        plugin = %plugin.name,
        generation = plugin.generation.number,
        session = info.id,
        %peer,
        point = tracing::field::Empty,
    );
    if admitted.refused.is_none() {
        span.in_scope(|| info!(event = events::CONNECT, %local, "client connected"));
    }
    let started = std::time::Instant::now();
    let sent = crate::state::SentBytes::default();
    let _listed = shared.sessions.register(crate::state::SessionEntry {
        id: info.id,
        plugin: plugin.name.clone(),
        peer,
        started: std::time::SystemTime::now(),
        point: None,
        kicked: false,
        transports: Vec::new(),
        sent: sent.clone(),
    });
    // Counted on its generation for as long as the connection lives.
    let _counted = plugin.generation.session_started();
    let Some(mut session) = span.in_scope(|| open_session(&plugin, &info)) else {
        return;
    };
    // The socket is made before the connection's state and so outlives it: a live point's
    // TCP fan-out writing to it is let go of when the state (its media cursor) drops.
    let (reader, writer) = socket.into_halves();
    let mut io = Io::new(reader, writer);
    let mut conn = Connection::new(&shared, &plugin.name, info, span.clone());
    conn.out.count_sent_in(sent);
    conn.refused = admitted.refused;
    conn.secure = secure;
    conn.plain_socket = zero_copy::plain_tcp(&io.writer).map(std::os::fd::AsRawFd::as_raw_fd);
    let ending = match span.in_scope(|| session.on_open(&mut conn)) {
        Ok(()) => drive(&mut io, &mut session, &mut conn, &span).await,
        Err(fault) => Ending::Fault(fault),
    };
    span.in_scope(|| {
        conn.stop_media("connection ended");
        if conn.publisher.is_some() {
            conn.end_publishing(&ending.publisher_gone());
        }
        let seconds = started.elapsed().as_secs_f64();
        log_receiver_report(&conn);
        match (conn.refused, &ending) {
            // A refused connection ends quietly however it ends: CONNECTION_REFUSED
            // summarises them.
            (Some(refusal), ending) if !matches!(ending, Ending::Fault(_)) => {
                debug!(
                    limit = refusal.as_str(),
                    seconds,
                    ?ending,
                    "refused connection closed"
                )
            }
            _ => ending.log(seconds, conn.bytes_sent(), shared.write_timeout()),
        }
    });
    if let Ending::Fault(_) = ending {
        crate::metrics::plugin_fault(&plugin.name);
    }
    if let Some(point) = shared.sessions.point(info_id) {
        // The session table adds these bytes to the metrics when `_listed` drops.
        let bytes_sent = conn.bytes_sent();
        crate::access_log::record(crate::access_log::AccessRecord {
            ended: std::time::SystemTime::now(),
            client: peer.ip(),
            uri_stem: format!("/{point}"),
            status: None,
            duration: started.elapsed(),
            bytes_sent,
            user_agent: None,
            protocol: plugin.name.clone(),
            plugin: format!("{}/{}", plugin.name, plugin.generation.number),
            point,
            end_reason: ending.as_str().to_owned(),
        });
    }
}

/// The client's last RTCP receiver report, if it sent any: its loss and jitter as the client
/// saw them, so UDP loss shows in the log without a packet capture.
fn log_receiver_report(conn: &Connection<'_>) {
    let Some((transport, report)) = conn.transports.receiver_report() else {
        return;
    };
    info!(
        event = events::RECEIVER_REPORT,
        transport,
        packets_lost = report.cumulative_lost,
        fraction_lost_pct = f64::from(report.fraction_lost) * 100.0 / 256.0,
        jitter_ms = f64::from(report.jitter) / 90.0,
        highest_seq = report.highest_seq,
        "client's last RTCP receiver report"
    );
}

/// A client's byte stream: a plain TCP socket, or TLS over one (terminated by the host).
pub trait ClientStream: Send + 'static {
    type Reader: ClientReader;
    type Writer: AsyncWrite + Unpin + Send;
    fn into_halves(self) -> (Self::Reader, Self::Writer);
    /// Whether the bytes cross the network encrypted.
    fn is_secure(&self) -> bool;
}

impl ClientStream for TcpStream {
    type Reader = tokio::net::tcp::OwnedReadHalf;
    type Writer = tokio::net::tcp::OwnedWriteHalf;
    fn into_halves(self) -> (Self::Reader, Self::Writer) {
        self.into_split()
    }
    fn is_secure(&self) -> bool {
        false
    }
}

impl ClientStream for tokio_rustls::server::TlsStream<TcpStream> {
    type Reader = tokio::io::ReadHalf<Self>;
    type Writer = tokio::io::WriteHalf<Self>;
    fn into_halves(self) -> (Self::Reader, Self::Writer) {
        tokio::io::split(self)
    }
    fn is_secure(&self) -> bool {
        true
    }
}

/// The reading half of a client's stream.
pub trait ClientReader: AsyncRead + Unpin + Send {
    /// [`Self::wait_readable`] waits for the client's bytes without a buffer, so the
    /// connection holds no read buffer while the client sends nothing (a listener, nearly
    /// always).
    const WAITS_WITHOUT_BUFFER: bool = false;

    /// Wait until a read would find bytes (or an error); at once for a reader that cannot
    /// tell, which then waits in the read itself, holding its buffer.
    fn wait_readable(&self) -> impl Future<Output = std::io::Result<()>> + Send {
        std::future::ready(Ok(()))
    }
}

impl ClientReader for tokio::net::tcp::OwnedReadHalf {
    const WAITS_WITHOUT_BUFFER: bool = true;

    fn wait_readable(&self) -> impl Future<Output = std::io::Result<()>> + Send {
        self.readable()
    }
}

/// TLS decrypts into its own buffers: readiness of the socket says nothing about plaintext.
impl ClientReader for tokio::io::ReadHalf<tokio_rustls::server::TlsStream<TcpStream>> {}

#[cfg(test)]
impl ClientReader for tokio::io::DuplexStream {}

/// The plugin's session for a new connection; `None` (logged) if the plugin panicked.
fn open_session(plugin: &ServingPlugin, info: &SessionInfo) -> Option<PluginSession> {
    match plugin.instance.new_session(info.clone()) {
        Ok(session) => Some(session),
        Err(fault) => {
            crate::metrics::plugin_fault(&plugin.name);
            error!(event = events::PLUGIN_FAULT, %fault, "plugin panicked creating a session; connection closed");
            None
        }
    }
}

/// The connection's socket halves and read state.
struct Io<R, W> {
    reader: R,
    writer: W,
    /// Empty until a read needs it, and again after a small read where the reader can wait
    /// without it.
    read_buf: Vec<u8>,
    /// The peer has not closed its side yet.
    reading: bool,
}

impl<R: ClientReader, W> Io<R, W> {
    /// A read of `n` bytes was handled. If it filled the buffer the client sends more than it
    /// holds (a publisher): read in blocks of `block` bytes from now on ([`READ_BUFFER`], or
    /// [`PACED_READ_BUFFER`] while the publisher is held to real time). Otherwise a buffer
    /// smaller than [`READ_BUFFER`] is given back if the reader can wait without one: a
    /// listener's request was read, and it may send nothing more for hours.
    fn after_read(&mut self, n: usize, block: usize) {
        if n >= self.read_buf.len() || self.read_buf.len() > block {
            self.read_buf.resize(block, 0);
        } else if R::WAITS_WITHOUT_BUFFER && self.read_buf.len() < READ_BUFFER {
            self.read_buf = Vec::new();
        }
    }

    /// Read what the client sent into the read buffer; how many bytes (0 at its end).
    #[cfg(test)]
    async fn read(&mut self) -> std::io::Result<usize> {
        read_client(&mut self.reader, &mut self.read_buf).await
    }
}

/// Wait for the client's bytes, then read them into `read_buf` (made at its first size if it
/// was given back); how many bytes (0 at the client's end).
async fn read_client<R: ClientReader>(
    reader: &mut R,
    read_buf: &mut Vec<u8>,
) -> std::io::Result<usize> {
    reader.wait_readable().await?;
    if read_buf.is_empty() {
        *read_buf = vec![0u8; FIRST_READ_BUFFER];
    }
    reader.read(read_buf).await
}

impl<R: ClientReader, W: AsyncWrite + Unpin> Io<R, W> {
    fn new(reader: R, writer: W) -> Self {
        Self {
            reader,
            writer,
            read_buf: Vec::new(),
            reading: true,
        }
    }

    /// Shut our side down, then read and discard what the client is still sending for a
    /// short while, so that closing with unread data does not make the kernel send a reset
    /// that could destroy the response before the client reads it (e.g. a refused encoder
    /// mid-body).
    async fn close(&mut self) {
        let _ = self.writer.shutdown().await;
        if !self.reading {
            return;
        }
        let deadline = Instant::now() + LINGER_TIME;
        let mut discarded = 0usize;
        if self.read_buf.is_empty() {
            self.read_buf = vec![0u8; FIRST_READ_BUFFER];
        }
        while discarded < LINGER_MAX_BYTES {
            match tokio::time::timeout_at(deadline, self.reader.read(&mut self.read_buf)).await {
                Ok(Ok(n)) if n > 0 => discarded += n,
                _ => return,
            }
        }
    }
}

/// What woke the IO loop.
enum Wakeup {
    Read(std::io::Result<usize>),
    Wrote(std::io::Result<Written>),
    WriteStalled,
    SourceSilent,
    /// No first valid request within the idle timeout (or a refused connection's grace).
    Idle,
    Live(LiveStep),
    /// Small live media held back to gather more may go out now.
    Flush,
    /// Paced media became due: the loop sends it.
    PaceDue,
    /// A publisher that ran ahead of real time may be read again.
    IngestDue,
    ReportsDue,
    TablesChanged,
    /// RTCP from the client on a transport: the transport and the packets.
    Rtcp(Option<(u64, Vec<RtcpPacket>)>),
    Timer(Option<u64>),
    /// A resource request made progress (see `resource`).
    Resource(resource::ResourceStep),
    /// Request bytes fed into the connection's HTTP tunnel; `None` once it was closed.
    Tunnel(Option<Vec<u8>>),
}

/// The IO loop: one `select!` over every way the connection can wake (socket, ring, file,
/// timers, RTCP, resources, tunnels). It stays one function, longer than most, so that every
/// wake-up source and its priority is visible in one place; each arm hands off to `Connection`.
async fn drive<R, W>(
    io: &mut Io<R, W>,
    session: &mut PluginSession,
    conn: &mut Connection<'_>,
    span: &Span,
) -> Ending
where
    R: ClientReader,
    W: AsyncWrite + Unpin + 'static,
{
    // File ranges go out by `sendfile` when the socket is plain TCP and it is allowed.
    let zero_copy = zero_copy::enabled() && zero_copy::plain_tcp(&io.writer).is_some();
    let write_timeout = conn.shared.write_timeout();
    let mut changes = conn.shared.subscribe_changes();
    let idle = IdlePolicy {
        accepted: Instant::now(),
        timeout: conn.shared.gate.limits().idle_timeout,
    };
    loop {
        // Every plugin call returns to here, so media started during a call follows whatever
        // the plugin wrote in that call (a response head, say).
        if let Some(ended) = conn.take_pending() {
            if let Err(fault) = span.in_scope(|| session.on_stream_ended(conn, ended)) {
                return Ending::Fault(fault);
            }
            continue;
        }
        // Framed media goes to the session one chunk per turn, before anything else; what
        // the session writes for it fills the output queue that gates the next chunk. Like
        // the other per-chunk work, this runs outside the span (see `serve_connection`).
        if let Some(chunk) = conn.framed.next() {
            if let Err(fault) = session.on_media(conn, chunk.as_media()) {
                return Ending::Fault(fault);
            }
            continue;
        }
        if let Some(handover) = conn.pending_handover.take() {
            if let Err(ending) = span.in_scope(|| take_over(session, conn, handover)) {
                return ending;
            }
            continue;
        }
        if let Some(answer) = conn.resource.take_ready() {
            if let Err(fault) = span.in_scope(|| deliver_resource(session, conn, answer)) {
                return Ending::Fault(fault);
            }
            continue;
        }
        let now = Instant::now();
        let mut direct = None;
        if conn.out.is_empty() {
            if conn.close_requested {
                io.close().await;
                return Ending::Closed;
            }
            if let Some(refusal) = conn.refused.filter(|_| conn.answered) {
                io.close().await;
                return Ending::Refused(refusal);
            }
            if let Some(Media::File(cursor)) = &mut conn.media {
                if !zero_copy || conn.framed.is_active() || cursor.is_done() {
                    let block = cursor.read_block().await;
                    span.in_scope(|| conn.on_file_block(block));
                    continue;
                }
                if let Err(error) = cursor.open().await {
                    span.in_scope(|| conn.on_file_block(Err(error)));
                    continue;
                }
                direct = cursor.rest();
            }
        }
        conn.out.watch_stall(now, direct.is_some());
        if conn.pace_due(now) {
            span.in_scope(|| conn.pace());
            continue;
        }
        let idle_deadline = idle.deadline(conn.refused.is_some(), conn.answered);
        let wakeup = next_wakeup(
            io,
            conn,
            &mut changes,
            (write_timeout, direct),
            idle_deadline,
        )
        .await;
        let fed_the_point = matches!(wakeup, Wakeup::Read(Ok(1..))) && conn.is_publishing();
        let handled = if wakeup.is_routine() {
            handle(wakeup, io, session, conn)
        } else {
            span.in_scope(|| handle(wakeup, io, session, conn))
        };
        if let Err(ending) = handled {
            return ending;
        }
        if fed_the_point {
            // Let the point's readers (its fan-outs first) take what this read put in the
            // ring before reading on: tokio runs a task woken here only once this one
            // yields, and an encoder with a backlog (after a pause, or faster than real
            // time) would otherwise fill a short ring before any reader ran.
            tokio::task::yield_now().await;
        }
    }
}

/// When a connection that has not made its first valid request is closed.
///
/// The first valid request is the first `play`, `publish`, `setup_transport` or
/// `play_transports` the host grants, or the first bytes the plugin writes (plugins write
/// only once a request is complete, so any answer counts, an error included). Until then the connection is closed `timeout` after
/// it was accepted, whatever the protocol; a refused connection gets [`REFUSED_GRACE`] at
/// most, answered or not.
#[derive(Debug, Clone, Copy)]
struct IdlePolicy {
    accepted: Instant,
    timeout: Duration,
}

impl IdlePolicy {
    fn deadline(&self, refused: bool, answered: bool) -> Option<Instant> {
        if refused {
            Some(self.accepted + self.timeout.min(REFUSED_GRACE))
        } else if answered {
            None
        } else {
            Some(self.accepted + self.timeout)
        }
    }
}

impl Wakeup {
    /// Media in or bytes out: the hot path, which logs nothing (so needs no span).
    fn is_routine(&self) -> bool {
        matches!(self, Wakeup::Live(LiveStep::Data(_)) | Wakeup::Wrote(Ok(_)))
    }
}

/// Wait for whatever comes first: bytes in, bytes out, live media, a timer or a deadline.
async fn next_wakeup<R, W>(
    io: &mut Io<R, W>,
    conn: &mut Connection<'_>,
    changes: &mut watch::Receiver<u64>,
    (write_timeout, direct): (Duration, Option<FileSpan>),
    idle_deadline: Option<Instant>,
) -> Wakeup
where
    R: ClientReader,
    W: AsyncWrite + Unpin + 'static,
{
    // While small live media is held back, the ring is left alone: what arrives meanwhile is
    // taken in one go when the hold ends, so a listener wakes once per hold, not per chunk.
    let held = conn.out.held_until();
    let want_live = conn.wants_live() && held.is_none();
    let rtcp_in = conn.transports.rtcp_source();
    let write_deadline = conn.out.stall_deadline(write_timeout);
    let ingest_paused = conn.ingest_paused_until(Instant::now());
    let deadlines = Deadlines {
        source_silent: conn.source_deadline(),
        idle: idle_deadline,
        timer: conn.timers.next(),
        reports: conn.transports.reports_due(),
        pace: conn.pace_wake(),
        flush: held,
        ingest: ingest_paused,
    };
    tokio::select! {
        read = read_client(&mut io.reader, &mut io.read_buf), if io.reading && ingest_paused.is_none() => {
            Wakeup::Read(read)
        }
        wrote = write_some(&mut io.writer, &conn.out, direct, write_deadline), if held.is_none() => wrote,
        _ = sleep_until_opt(deadlines.earliest()) => deadlines.due(Instant::now()),
        step = next_live(&mut conn.media), if want_live => Wakeup::Live(step),
        Ok(()) = changes.changed() => Wakeup::TablesChanged,
        packets = recv_rtcp(rtcp_in.as_ref().map(|(_, source)| source)) => {
            Wakeup::Rtcp(rtcp_in.map(|(transport, _)| (transport, packets)))
        }
        step = resource::resource_step(&mut conn.resource) => Wakeup::Resource(step),
        fed = next_tunnel_piece(&mut conn.tunnel) => Wakeup::Tunnel(fed),
    }
}

/// The connection's deadlines. The IO loop sleeps on one timer until the earliest, not one
/// per deadline: fewer timers to arm per turn, and less room in the task.
#[derive(Debug, Clone, Copy, Default)]
struct Deadlines {
    /// A publisher's source timeout.
    source_silent: Option<Instant>,
    /// No valid request yet (see [`IdlePolicy`]).
    idle: Option<Instant>,
    /// The session's earliest timer, by its id.
    timer: Option<(u64, Instant)>,
    /// RTCP sender reports.
    reports: Option<Instant>,
    /// Paced media (a file on RTP transports, a UDP joiner's catch-up).
    pace: Option<Instant>,
    /// The end of a hold on small live media (see `output::coalescing`).
    flush: Option<Instant>,
    /// A publisher held back by its ingest pace.
    ingest: Option<Instant>,
}

impl Deadlines {
    fn earliest(&self) -> Option<Instant> {
        [
            self.source_silent,
            self.idle,
            self.timer.map(|(_, at)| at),
            self.reports,
            self.pace,
            self.flush,
            self.ingest,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// What is due at `now`: endings first, then the session's timer, then routine work.
    /// Anything else (a paused ingest, or nothing yet) only turns the loop, which then sees
    /// what changed.
    fn due(&self, now: Instant) -> Wakeup {
        let passed = |at: Option<Instant>| at.is_some_and(|at| at <= now);
        if passed(self.source_silent) {
            Wakeup::SourceSilent
        } else if passed(self.idle) {
            Wakeup::Idle
        } else if let Some((timer, _)) = self.timer.filter(|(_, at)| *at <= now) {
            Wakeup::Timer(Some(timer))
        } else if passed(self.reports) {
            Wakeup::ReportsDue
        } else if passed(self.pace) {
            Wakeup::PaceDue
        } else if passed(self.flush) {
            Wakeup::Flush
        } else {
            Wakeup::IngestDue
        }
    }
}

/// Hand one event to the plugin session or the connection; `Err` ends the connection.
fn handle<R: ClientReader, W>(
    wakeup: Wakeup,
    io: &mut Io<R, W>,
    session: &mut PluginSession,
    conn: &mut Connection<'_>,
) -> Result<(), Ending> {
    if !matches!(wakeup, Wakeup::Live(_)) {
        // Anything but media may write or change what plays: the connection writes itself.
        conn.take_back_from_tcp_fanout();
    }
    match wakeup {
        Wakeup::Read(Ok(0)) => {
            io.reading = false;
            session.on_peer_closed(conn)?;
            conn.on_peer_closed();
        }
        Wakeup::Read(Ok(n)) => {
            conn.taking_in_read();
            let taken = session.on_data(conn, &io.read_buf[..n]);
            conn.read_taken_in();
            taken?;
            let block = if conn.is_paced(Instant::now()) {
                PACED_READ_BUFFER
            } else {
                READ_BUFFER
            };
            io.after_read(n, block);
        }
        Wakeup::Read(Err(error)) | Wakeup::Wrote(Err(error)) => {
            return Err(Ending::PeerGone(error))
        }
        Wakeup::Wrote(Ok(Written::Queued(n))) => {
            conn.out.consume(n, Instant::now());
            if conn.out.is_empty() {
                conn.hand_over_to_tcp_fanout();
            }
        }
        Wakeup::Wrote(Ok(Written::FromFile(n))) => on_file_sent(conn, n),
        Wakeup::WriteStalled => return Err(Ending::TooSlow),
        Wakeup::SourceSilent => return Err(Ending::SourceSilent(conn.silence())),
        Wakeup::Idle => {
            return Err(match conn.refused {
                Some(refusal) => Ending::Refused(refusal),
                None => Ending::Idle(conn.shared.gate.limits().idle_timeout),
            })
        }
        Wakeup::Live(step) => {
            let was_empty = conn.out.is_empty();
            conn.on_live_step(step);
            take_ready_live(conn);
            let coalesce = output::coalescing(conn.shared.gate.open_connections());
            conn.out.coalesce_live(was_empty, Instant::now(), coalesce);
        }
        Wakeup::Flush => take_waiting_live(conn),
        Wakeup::PaceDue | Wakeup::IngestDue => {}
        Wakeup::ReportsDue => conn.send_reports(Instant::now()),
        Wakeup::TablesChanged => conn.recheck(),
        Wakeup::Rtcp(Some((transport, packets))) => {
            debug!(transport, packets = packets.len(), "RTCP from the client");
            conn.transports.note_rtcp(transport, &packets);
            session.on_transport_activity(conn, transport)?;
        }
        Wakeup::Timer(Some(timer)) => {
            conn.timers.cancel(timer);
            session.on_timer(conn, timer)?;
        }
        Wakeup::Resource(step) => conn.resource.on_step(step, Instant::now()),
        // Bytes from the tunnel's request side reach the session as if read here.
        Wakeup::Tunnel(Some(fed)) => session.on_data(conn, &fed)?,
        Wakeup::Tunnel(None) => {
            conn.tunnel = None;
            session.on_peer_closed(conn)?;
        }
        Wakeup::Rtcp(None) | Wakeup::Timer(None) => {}
    }
    Ok(())
}

/// Pass the connection to a session of the plugin the current session handed it to, and
/// replay what the first session read.
fn take_over(
    session: &mut PluginSession,
    conn: &mut Connection<'_>,
    handover: crate::tunnels::Handover,
) -> Result<(), Ending> {
    let Some(next) = open_session(&handover.plugin, &conn.info) else {
        return Err(Ending::Closed);
    };
    info!(from = conn.plugin, to = %handover.plugin.name, "connection handed over");
    *session = next;
    conn.plugin = crate::tunnels::static_name(&handover.plugin.name);
    conn.counters = conn.shared.counters_of(conn.plugin);
    conn.timers = Default::default();
    conn.handed_over = Some(handover.plugin.generation.session_started());
    session.on_open(conn)?;
    session.on_data(conn, &handover.data)?;
    Ok(())
}

/// Hand the session the resource it asked for (or why it could not be had); its body stays
/// the host's, queued by reference if the session calls `send_resource_body`.
fn deliver_resource(
    session: &mut PluginSession,
    conn: &mut Connection<'_>,
    answer: Result<crate::hls::Prepared, ferrocast_plugin_api::HostError>,
) -> Result<(), PluginFault> {
    let prepared = match answer {
        Ok(prepared) => prepared,
        Err(error) => return session.on_resource(conn, Err(error)),
    };
    let pieces: Vec<&[u8]> = prepared.body.iter().map(|piece| &piece[..]).collect();
    let parts = ferrocast_plugin_api::host::ResourceParts {
        content_type: prepared.content_type,
        etag: &prepared.etag,
        last_modified: prepared.last_modified_secs(),
        max_age: prepared.max_age,
        immutable: prepared.immutable,
        body: &pieces,
    };
    conn.resource.body = Some(prepared.body.clone());
    let delivered = session.on_resource(conn, Ok(parts));
    conn.resource.body = None;
    delivered
}

/// What the socket took.
enum Written {
    /// Bytes from the front of the output queue.
    Queued(usize),
    /// Bytes of the file range, sent by the kernel from the file.
    FromFile(usize),
}

/// Write as much of the queue as the socket takes, or say the client stalled: the socket
/// took nothing by `stall_deadline`. The stall timer is armed only once the socket has no
/// room: a socket that takes the bytes at once (nearly every write) costs no timer.
async fn write_some<W: AsyncWrite + Unpin + 'static>(
    writer: &mut W,
    out: &OutputQueue,
    direct: Option<FileSpan>,
    stall_deadline: Option<Instant>,
) -> Wakeup {
    let write = write_once(writer, out, direct);
    tokio::pin!(write);
    let first = std::future::poll_fn(|cx| Poll::Ready(write.as_mut().poll(cx))).await;
    if let Poll::Ready(written) = first {
        return Wakeup::Wrote(written);
    }
    tokio::select! {
        biased;
        written = &mut write => Wakeup::Wrote(written),
        _ = sleep_until_opt(stall_deadline) => Wakeup::WriteStalled,
    }
}

/// Write as much of the queue as the socket takes in one vectored write; with the queue empty,
/// send the `direct` file range with `sendfile` (on a plain TCP socket). Pending forever when
/// there is neither, so it can sit in a `select!`.
async fn write_once<W: AsyncWrite + Unpin + 'static>(
    writer: &mut W,
    out: &OutputQueue,
    direct: Option<FileSpan>,
) -> std::io::Result<Written> {
    if out.is_empty() {
        return match (direct, zero_copy::plain_tcp(&*writer)) {
            (Some(span), Some(socket)) => {
                zero_copy::send(socket, span).await.map(Written::FromFile)
            }
            _ => std::future::pending().await,
        };
    }
    // The slices are made on the stack for each attempt, never kept in the connection.
    let n = std::future::poll_fn(|cx| {
        let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
        let filled = out.fill_batch(&mut slices);
        Pin::new(&mut *writer).poll_write_vectored(cx, &slices[..filled])
    })
    .await?;
    if n == 0 {
        return Err(std::io::ErrorKind::WriteZero.into());
    }
    Ok(Written::Queued(n))
}

/// End a hold: take in the live media that waited in the ring meanwhile (as much as the
/// queue has room for), to go out in one write.
fn take_waiting_live(conn: &mut Connection<'_>) {
    conn.out.release();
    take_ready_live(conn);
}

/// Take in the live media already waiting in the ring (as much as the queue has room for),
/// so that the chunks a publisher's push delivered together go out in one write and cost one
/// wake-up of this task, not one each.
fn take_ready_live(conn: &mut Connection<'_>) {
    while conn.wants_live() {
        let Some(Media::Live(cursor)) = &mut conn.media else {
            return;
        };
        let Some(step) = cursor.next_ready() else {
            return;
        };
        match step {
            LiveStep::Data(_) | LiveStep::Rest(_) => conn.on_live_step(step),
            // The end of a stream is logged, in the connection's span (this may run outside).
            LiveStep::End(..) => {
                let span = conn.span.clone();
                span.in_scope(|| conn.on_live_step(step));
            }
        }
    }
}

/// The kernel sent `n` bytes of the file range.
fn on_file_sent(conn: &mut Connection<'_>, n: usize) {
    let Some(Media::File(cursor)) = &mut conn.media else {
        return;
    };
    match cursor.on_sent(n) {
        Ok(()) => {
            conn.out.sent_direct(n, Instant::now());
            conn.note_first_media();
        }
        Err(error) => conn.on_file_block(Err(error)),
    }
}

/// The next RTCP compound packet from the client, parsed; pending forever without a socket.
/// Datagrams that are not RTCP, or that come from another IP than the client's, are skipped:
/// they must not keep a session alive.
async fn recv_rtcp(source: Option<&RtcpSource>) -> Vec<RtcpPacket> {
    let Some((socket, client)) = source else {
        return std::future::pending().await;
    };
    loop {
        // Waiting needs no buffer; the datagram is taken in by a plain call, so the task's
        // state never holds room for one.
        let received = match socket.readable().await {
            Ok(()) => take_rtcp(socket, *client),
            Err(error) => Err(error),
        };
        match received {
            Ok(Some(packets)) => return packets,
            Ok(None) => {}
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {}
            // Errors on an unconnected UDP socket are transient; don't spin on them. (Boxed:
            // every connection's task would otherwise hold room for the timer.)
            Err(_) => Box::pin(tokio::time::sleep(Duration::from_millis(100))).await,
        }
    }
}

/// The RTCP datagram waiting on `socket`, parsed, if it is RTCP from the client's IP.
fn take_rtcp(
    socket: &tokio::net::UdpSocket,
    client: std::net::IpAddr,
) -> std::io::Result<Option<Vec<RtcpPacket>>> {
    let mut buf = [0u8; 1500];
    let (n, from) = socket.try_recv_from(&mut buf)?;
    if !rtcp_from_client(from, client) {
        return Ok(None);
    }
    Ok(parse_rtcp(&buf[..n]).ok())
}

/// Whether RTCP from `from` is the client's (at `client`): the same IP, IPv4-mapped or not.
fn rtcp_from_client(from: SocketAddr, client: std::net::IpAddr) -> bool {
    from.ip().to_canonical() == client.to_canonical()
}

/// The next piece fed into the connection's tunnel; pending forever without one.
async fn next_tunnel_piece(tunnel: &mut Option<crate::tunnels::TunnelEnd>) -> Option<Vec<u8>> {
    match tunnel {
        Some(end) => end.recv().await,
        None => std::future::pending().await,
    }
}

/// The next step of the live cursor; pending forever when nothing live plays.
async fn next_live(media: &mut Option<Media>) -> LiveStep {
    match media {
        Some(Media::Live(cursor)) => cursor.next().await,
        _ => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_connections_without_a_valid_request_have_an_idle_deadline() {
        let accepted = Instant::now();
        let idle = IdlePolicy {
            accepted,
            timeout: Duration::from_secs(10),
        };
        assert_eq!(
            idle.deadline(false, false),
            Some(accepted + Duration::from_secs(10))
        );
        assert_eq!(idle.deadline(false, true), None);
        for answered in [false, true] {
            assert_eq!(
                idle.deadline(true, answered),
                Some(accepted + REFUSED_GRACE)
            );
        }
        let short = IdlePolicy {
            accepted,
            timeout: Duration::from_millis(500),
        };
        assert_eq!(
            short.deadline(true, false),
            Some(accepted + Duration::from_millis(500))
        );
    }

    #[tokio::test]
    async fn the_read_buffer_is_made_at_the_first_read_and_grows_each_time_a_read_fills_it() {
        use tokio::io::AsyncWriteExt;
        let (reader, mut client) = tokio::io::duplex(256 * 1024);
        let (_other, writer) = tokio::io::duplex(64);
        let mut io = Io::new(reader, writer);
        assert!(io.read_buf.is_empty(), "no buffer before the first read");
        client.write_all(&[1; 100]).await.unwrap();
        assert_eq!(io.read().await.unwrap(), 100);
        assert_eq!(io.read_buf.len(), FIRST_READ_BUFFER);
        io.after_read(100, READ_BUFFER);
        assert_eq!(
            io.read_buf.len(),
            FIRST_READ_BUFFER,
            "a reader that cannot wait without it keeps it"
        );
        for (sent, after) in [
            (FIRST_READ_BUFFER, READ_BUFFER),
            (READ_BUFFER - 1, READ_BUFFER),
            (READ_BUFFER, READ_BUFFER),
            (10, READ_BUFFER),
        ] {
            client.write_all(&vec![2; sent]).await.unwrap();
            assert_eq!(io.read().await.unwrap(), sent);
            io.after_read(sent, READ_BUFFER);
            assert_eq!(io.read_buf.len(), after, "after a read of {sent} bytes");
        }
        // Held to real time, a publisher reads in smaller blocks, and in full ones again after.
        client.write_all(&[3; 100]).await.unwrap();
        assert_eq!(io.read().await.unwrap(), 100);
        io.after_read(100, PACED_READ_BUFFER);
        assert_eq!(io.read_buf.len(), PACED_READ_BUFFER);
        client.write_all(&vec![4; PACED_READ_BUFFER]).await.unwrap();
        assert_eq!(io.read().await.unwrap(), PACED_READ_BUFFER);
        io.after_read(PACED_READ_BUFFER, READ_BUFFER);
        assert_eq!(io.read_buf.len(), READ_BUFFER);
    }

    #[tokio::test]
    async fn a_tcp_listener_holds_no_read_buffer_between_requests_and_a_publisher_keeps_its_own() {
        use tokio::io::AsyncWriteExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (served, _) = listener.accept().await.unwrap();
        let (reader, writer) = served.into_split();
        let mut io = Io::new(reader, writer);
        client
            .write_all(b"GET /live HTTP/1.1\r\n\r\n")
            .await
            .unwrap();
        let n = io.read().await.unwrap();
        assert_eq!(&io.read_buf[..n], b"GET /live HTTP/1.1\r\n\r\n");
        io.after_read(n, READ_BUFFER);
        assert!(io.read_buf.is_empty(), "given back after a small read");
        client.write_all(b"x").await.unwrap();
        assert_eq!(io.read().await.unwrap(), 1);
        assert_eq!(
            io.read_buf.len(),
            FIRST_READ_BUFFER,
            "made again for the next read"
        );
        io.after_read(1, READ_BUFFER);
        assert!(io.read_buf.is_empty());
        // A publisher: reads fill the buffer, which grows and is then kept, even after a
        // small read.
        client.write_all(&[7; 40 * 1024]).await.unwrap();
        let mut total = 0;
        while total < 40 * 1024 {
            let n = io.read().await.unwrap();
            assert!(io.read_buf[..n].iter().all(|&b| b == 7));
            io.after_read(n, READ_BUFFER);
            total += n;
        }
        assert!(
            io.read_buf.len() >= READ_BUFFER,
            "a publisher keeps its buffer"
        );
        client.write_all(b"y").await.unwrap();
        assert_eq!(io.read().await.unwrap(), 1);
        io.after_read(1, READ_BUFFER);
        assert!(io.read_buf.len() >= READ_BUFFER, "kept after a small read");
        drop(client);
        assert_eq!(io.read().await.unwrap(), 0, "the client's end reads as 0");
    }

    #[tokio::test(start_paused = true)]
    async fn the_stall_timer_counts_only_when_the_socket_is_full() {
        let mut out = OutputQueue::default();
        out.push(bytes::Bytes::from(vec![1u8; 100]));
        let (mut writer, _reader) = tokio::io::duplex(64);
        let passed = Instant::now() - Duration::from_secs(1);
        let wrote = write_some(&mut writer, &out, None, Some(passed)).await;
        assert!(
            matches!(wrote, Wakeup::Wrote(Ok(Written::Queued(64)))),
            "a socket with room takes the bytes, however late the deadline"
        );
        let soon = Instant::now() + Duration::from_secs(5);
        let stalled = write_some(&mut writer, &out, None, Some(soon)).await;
        assert!(
            matches!(stalled, Wakeup::WriteStalled),
            "a full socket waits until the deadline"
        );
        assert!(Instant::now() >= soon);
    }

    #[test]
    fn the_loop_sleeps_until_the_earliest_deadline_and_then_names_what_is_due() {
        let now = Instant::now();
        let at = |ms: u64| now + Duration::from_millis(ms);
        assert_eq!(Deadlines::default().earliest(), None);
        let deadlines = Deadlines {
            source_silent: Some(at(300)),
            timer: Some((4, at(100))),
            reports: Some(at(200)),
            flush: Some(at(150)),
            ..Deadlines::default()
        };
        assert_eq!(deadlines.earliest(), Some(at(100)));
        assert!(matches!(deadlines.due(at(100)), Wakeup::Timer(Some(4))));
        assert!(matches!(deadlines.due(at(250)), Wakeup::Timer(Some(4))));
        let fired = Deadlines {
            timer: None,
            ..deadlines
        };
        assert_eq!(fired.earliest(), Some(at(150)));
        assert!(matches!(fired.due(at(150)), Wakeup::Flush));
        assert!(matches!(fired.due(at(250)), Wakeup::ReportsDue));
        assert!(
            matches!(fired.due(at(300)), Wakeup::SourceSilent),
            "an ending comes before anything else due"
        );
        let idle = Deadlines {
            idle: Some(at(50)),
            pace: Some(at(10)),
            ..Deadlines::default()
        };
        assert_eq!(idle.earliest(), Some(at(10)));
        assert!(matches!(idle.due(at(20)), Wakeup::PaceDue));
        assert!(matches!(idle.due(at(60)), Wakeup::Idle));
        let paused = Deadlines {
            ingest: Some(at(30)),
            ..Deadlines::default()
        };
        assert!(matches!(paused.due(at(30)), Wakeup::IngestDue));
    }

    #[tokio::test]
    async fn a_live_client_woken_by_one_chunk_takes_every_chunk_waiting_in_the_ring() {
        use crate::media::test_support::{pat_packet, pmt_packet, PacketSpec};
        use crate::points::{LiveStream, PointRegistry};
        let shared = Shared::new(
            PointRegistry::default(),
            Duration::from_secs(10),
            crate::state::PluginTable::new(),
        );
        let info = SessionInfo {
            id: 1,
            peer: "127.0.0.1:40000".into(),
            local: "127.0.0.1:8080".into(),
        };
        let mut conn = Connection::new(&shared, "http", info, Span::none());
        let stream = LiveStream::for_tests("live", Duration::from_secs(5), Duration::from_secs(5));
        stream.publish(1).unwrap();
        let join = stream.join();
        let cursor = media::LiveCursor::new(Arc::clone(&stream), join, false, Span::none());
        conn.media = Some(Media::Live(cursor));
        let mut start = pat_packet(0x1000, 0).to_vec();
        start.extend_from_slice(&pmt_packet(0x1000, 0x100, &[(0x1b, 0x100)], 0));
        start.extend_from_slice(&PacketSpec::new(0x100).pusi().rai().build());
        stream.push(1, &start).unwrap();
        for cc in 1..3 {
            stream
                .push(1, &PacketSpec::new(0x100).cc(cc).build())
                .unwrap();
        }
        let first = next_live(&mut conn.media).await;
        conn.on_live_step(first);
        take_ready_live(&mut conn);
        assert_eq!(conn.out.write_batch().len(), 3, "three pushes, one write");
        take_ready_live(&mut conn);
        assert_eq!(conn.out.write_batch().len(), 3, "nothing more was waiting");
    }

    #[test]
    fn only_rtcp_from_the_clients_ip_counts() {
        let client: std::net::IpAddr = "192.0.2.7".parse().unwrap();
        assert!(rtcp_from_client("192.0.2.7:5001".parse().unwrap(), client));
        assert!(rtcp_from_client("192.0.2.7:40000".parse().unwrap(), client));
        assert!(rtcp_from_client(
            "[::ffff:192.0.2.7]:5001".parse().unwrap(),
            client
        ));
        assert!(!rtcp_from_client(
            "198.51.100.1:5001".parse().unwrap(),
            client
        ));
    }

    #[test]
    fn a_publisher_ending_says_why_its_source_went_away() {
        let silent = Ending::SourceSilent(Silence::NoData(Duration::from_millis(3000)));
        assert_eq!(
            silent.publisher_gone(),
            "no data from the encoder for 3000 ms"
        );
        let fault = Ending::Fault(PluginFault {
            message: "boom".into(),
        });
        assert_eq!(
            fault.publisher_gone(),
            "the plugin serving the encoder faulted"
        );
        for ending in [Ending::Closed, Ending::TooSlow] {
            assert_eq!(ending.publisher_gone(), "the encoder disconnected");
        }
    }

    /// The size of a connection task's state, without making one.
    fn task_size<S, Fut>(
        _: fn(S, SocketAddr, SocketAddr, Arc<ServingPlugin>, Arc<Shared>, Admitted) -> Fut,
    ) -> usize {
        std::mem::size_of::<Fut>()
    }

    #[test]
    fn a_connection_task_stays_small() {
        // Every listener holds one for its whole session: at radio scale it is most of what a
        // listener costs. Unoptimised builds lay it out larger than release builds do.
        let size = task_size(serve_connection::<TcpStream>);
        assert!(size <= 3_712, "{size} bytes");
    }
}

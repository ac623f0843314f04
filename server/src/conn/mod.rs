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
//! - `transports`: the session's RTP transports and RTCP schedule;
//! - `admission`: admission, drain and the re-check after a reload;
//! - `play`: play, seek, resume and pause decisions.

mod admission;
mod calls;
mod connection;
mod framed;
mod media;
mod output;
mod play;
mod publisher;
mod transports;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ferrocast_plugin_api::host::{PluginFault, PluginSession};
use ferrocast_plugin_api::SessionInfo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{debug, error, info, info_span, warn, Span};

use self::connection::Connection;
use self::media::{LiveStep, Media};
use self::output::OutputQueue;
use crate::events;
use crate::media::rtp::{parse_rtcp, RtcpPacket};
use crate::state::{ServingPlugin, Shared};

/// How long, and how much, to keep reading from a client after closing our side.
const LINGER_TIME: Duration = Duration::from_secs(2);
const LINGER_MAX_BYTES: usize = 4 * 1024 * 1024;
/// Size of one read from the client.
const READ_BUFFER: usize = 16 * 1024;

/// Why a connection ended.
#[derive(Debug)]
enum Ending {
    Closed,
    /// A publishing encoder sent nothing for the point's source timeout.
    SourceSilent(Duration),
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
    /// Why a session that was publishing stopped, for SOURCE_LOST.
    fn publisher_gone(&self) -> String {
        match self {
            Ending::SourceSilent(timeout) => {
                format!("no data from the encoder for {} ms", timeout.as_millis())
            }
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
            Ending::PeerGone(why) => {
                info!(event = events::DISCONNECT, seconds, bytes_sent, reason = %why, "client went away")
            }
            Ending::SourceSilent(timeout) => {
                warn!(
                    event = events::DISCONNECT,
                    seconds,
                    timeout_ms = timeout.as_millis() as u64,
                    "encoder sent nothing within the source timeout; connection closed"
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
pub async fn serve_connection(
    socket: TcpStream,
    peer: SocketAddr,
    local: SocketAddr,
    plugin: Arc<ServingPlugin>,
    shared: Arc<Shared>,
) {
    let _ = socket.set_nodelay(true);
    let info = SessionInfo {
        id: shared.new_session_id(),
        peer: peer.to_string().into(),
        local: local.to_string().into(),
    };
    let span = info_span!(
        "conn",
        plugin = %plugin.name,
        generation = plugin.generation.number,
        session = info.id,
        %peer,
        point = tracing::field::Empty,
    );
    span.in_scope(|| info!(event = events::CONNECT, %local, "client connected"));
    let started = std::time::Instant::now();
    // Counted on its generation for as long as the connection lives.
    let _counted = plugin.generation.session_started();
    let Some(mut session) = span.in_scope(|| open_session(&plugin, &info)) else {
        return;
    };
    let mut conn = Connection::new(&shared, &plugin.name, info, span.clone());
    let ending = match span.in_scope(|| session.on_open(&mut conn)) {
        Ok(()) => {
            let (reader, writer) = socket.into_split();
            drive(Io::new(reader, writer), &mut session, &mut conn, &span).await
        }
        Err(fault) => Ending::Fault(fault),
    };
    span.in_scope(|| {
        conn.stop_media("connection ended");
        if conn.publisher.is_some() {
            conn.end_publishing(&ending.publisher_gone());
        }
        let seconds = started.elapsed().as_secs_f64();
        ending.log(seconds, conn.out.bytes_sent(), shared.write_timeout());
    });
}

/// The plugin's session for a new connection; `None` (logged) if the plugin panicked.
fn open_session(plugin: &ServingPlugin, info: &SessionInfo) -> Option<PluginSession> {
    match plugin.instance.new_session(info.clone()) {
        Ok(session) => Some(session),
        Err(fault) => {
            error!(event = events::PLUGIN_FAULT, %fault, "plugin panicked creating a session; connection closed");
            None
        }
    }
}

/// The connection's socket halves and read state.
struct Io<R, W> {
    reader: R,
    writer: W,
    read_buf: Vec<u8>,
    /// The peer has not closed its side yet.
    reading: bool,
}

impl<R: AsyncRead + Unpin, W: AsyncWrite + Unpin> Io<R, W> {
    fn new(reader: R, writer: W) -> Self {
        Self {
            reader,
            writer,
            read_buf: vec![0u8; READ_BUFFER],
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
    Wrote(std::io::Result<usize>),
    WriteStalled,
    SourceSilent,
    Live(LiveStep),
    /// Paced media became due: the loop sends it.
    PaceDue,
    ReportsDue,
    TablesChanged,
    /// RTCP from the client on a transport: the transport and how many packets.
    Rtcp(Option<(u64, usize)>),
    Timer(Option<u64>),
}

async fn drive<R, W>(
    mut io: Io<R, W>,
    session: &mut PluginSession,
    conn: &mut Connection<'_>,
    span: &Span,
) -> Ending
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let write_timeout = conn.shared.write_timeout();
    let mut changes = conn.shared.subscribe_changes();
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
        let now = Instant::now();
        conn.out.watch_stall(now);
        if conn.out.is_empty() {
            if conn.close_requested {
                io.close().await;
                return Ending::Closed;
            }
            if let Some(Media::File(cursor)) = &mut conn.media {
                let block = cursor.read_block().await;
                span.in_scope(|| conn.on_file_block(block));
                continue;
            }
        }
        if conn.pace_due(now) {
            span.in_scope(|| conn.pace());
            continue;
        }
        let wakeup = next_wakeup(&mut io, conn, &mut changes, write_timeout).await;
        let handled = if wakeup.is_routine() {
            handle(wakeup, &mut io, session, conn)
        } else {
            span.in_scope(|| handle(wakeup, &mut io, session, conn))
        };
        if let Err(ending) = handled {
            return ending;
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
    write_timeout: Duration,
) -> Wakeup
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let next_timer = conn.timers.next();
    let want_live = conn.wants_live();
    let rtcp_in = conn.transports.rtcp_source();
    let write_deadline = conn.out.stall_deadline(write_timeout);
    let source_deadline = conn.source_deadline();
    let pace_wake = conn.pace_wake();
    let reports_due = conn.transports.reports_due();
    tokio::select! {
        read = io.reader.read(&mut io.read_buf), if io.reading => Wakeup::Read(read),
        written = write_some(&mut io.writer, &conn.out) => Wakeup::Wrote(written),
        _ = sleep_until_opt(write_deadline) => Wakeup::WriteStalled,
        _ = sleep_until_opt(source_deadline) => Wakeup::SourceSilent,
        step = next_live(&mut conn.media), if want_live => Wakeup::Live(step),
        _ = sleep_until_opt(pace_wake) => Wakeup::PaceDue,
        _ = sleep_until_opt(reports_due) => Wakeup::ReportsDue,
        Ok(()) = changes.changed() => Wakeup::TablesChanged,
        packets = recv_rtcp(rtcp_in.as_ref().map(|(_, socket)| socket)) => {
            Wakeup::Rtcp(rtcp_in.map(|(transport, _)| (transport, packets.len())))
        }
        _ = sleep_until_opt(next_timer.map(|(_, at)| at)) => {
            Wakeup::Timer(next_timer.map(|(timer, _)| timer))
        }
    }
}

/// Hand one event to the plugin session or the connection; `Err` ends the connection.
fn handle<R, W>(
    wakeup: Wakeup,
    io: &mut Io<R, W>,
    session: &mut PluginSession,
    conn: &mut Connection<'_>,
) -> Result<(), Ending> {
    match wakeup {
        Wakeup::Read(Ok(0)) => {
            io.reading = false;
            session.on_peer_closed(conn)?;
            conn.on_peer_closed();
        }
        Wakeup::Read(Ok(n)) => session.on_data(conn, &io.read_buf[..n])?,
        Wakeup::Read(Err(error)) | Wakeup::Wrote(Err(error)) => {
            return Err(Ending::PeerGone(error))
        }
        Wakeup::Wrote(Ok(n)) => conn.out.consume(n, Instant::now()),
        Wakeup::WriteStalled => return Err(Ending::TooSlow),
        Wakeup::SourceSilent => return Err(Ending::SourceSilent(conn.source_timeout())),
        Wakeup::Live(step) => conn.on_live_step(step),
        Wakeup::PaceDue => {}
        Wakeup::ReportsDue => conn.send_reports(Instant::now()),
        Wakeup::TablesChanged => conn.recheck(),
        Wakeup::Rtcp(Some((transport, packets))) => {
            debug!(transport, packets, "RTCP from the client");
            session.on_transport_activity(conn, transport)?;
        }
        Wakeup::Timer(Some(timer)) => {
            conn.timers.cancel(timer);
            session.on_timer(conn, timer)?;
        }
        Wakeup::Rtcp(None) | Wakeup::Timer(None) => {}
    }
    Ok(())
}

/// Write as much of the queue as the socket takes in one vectored write. Pending forever when
/// the queue is empty, so it can sit in a `select!`.
async fn write_some<W: AsyncWrite + Unpin>(
    writer: &mut W,
    out: &OutputQueue,
) -> std::io::Result<usize> {
    if out.is_empty() {
        return std::future::pending().await;
    }
    let n = writer.write_vectored(&out.write_batch()).await?;
    if n == 0 {
        return Err(std::io::ErrorKind::WriteZero.into());
    }
    Ok(n)
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The next RTCP compound packet from a client, parsed; pending forever without a socket.
/// Datagrams that are not RTCP are skipped.
async fn recv_rtcp(socket: Option<&Arc<tokio::net::UdpSocket>>) -> Vec<RtcpPacket> {
    let Some(socket) = socket else {
        return std::future::pending().await;
    };
    let mut buf = [0u8; 1500];
    loop {
        match socket.recv_from(&mut buf).await {
            Ok((n, _)) => {
                if let Ok(packets) = parse_rtcp(&buf[..n]) {
                    return packets;
                }
            }
            // Errors on an unconnected UDP socket are transient; don't spin on them.
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
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
    fn a_publisher_ending_says_why_its_source_went_away() {
        let silent = Ending::SourceSilent(Duration::from_millis(3000));
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
}

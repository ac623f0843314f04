//! One client connection: the host-side IO loop that drives a plugin session.
//!
//! The task owns the socket, the session's timers and its media cursor. It hands the plugin
//! events (bytes in, timer fired, media ended, peer closed) and carries out what the plugin
//! asks through [`HostCalls`]. Media is pulled into the output queue only while the queue is
//! short, so a slow client's backlog stays in the point's shared ring, where falling too far
//! behind means skipping to the next keyframe, never slowing anyone else.

use std::collections::{HashMap, VecDeque};
use std::io::IoSlice;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ferrocast_plugin_api::host::{HostCalls, PluginInstance, PluginSession};
use ferrocast_plugin_api::{
    ByteRange, EndReason, ErrorCode, HostError, LogLevel, PlayInfo, PointInfo, SessionInfo,
    StreamEnded, TransportInfo, TransportRequest,
};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::broadcast::error::RecvError;
use tracing::{debug, error, info, warn};

use crate::events;
use crate::points::{LiveEvent, LiveStream, PointRegistry, Resolved};

/// Stop pulling live media into a client's output queue above this many bytes.
const OUTPUT_HIGH_WATER: usize = 256 * 1024;
/// Size of one read from an on-demand file.
const FILE_BLOCK: usize = 64 * 1024;
/// Most buffers handed to one vectored write.
const MAX_IOVECS: usize = 64;
/// A live client that lags this many times within [`LAG_WINDOW`] is disconnected.
const MAX_LAGS: usize = 5;
const LAG_WINDOW: Duration = Duration::from_secs(60);
/// How long, and how much, to keep reading from a client after closing our side.
const LINGER_TIME: Duration = Duration::from_secs(2);
const LINGER_MAX_BYTES: usize = 4 * 1024 * 1024;

/// State shared by every connection.
pub struct Shared {
    pub points: PointRegistry,
    pub write_timeout: Duration,
    next_session: AtomicU64,
}

impl Shared {
    pub fn new(points: PointRegistry, write_timeout: Duration) -> Self {
        Self {
            points,
            write_timeout,
            next_session: AtomicU64::new(1),
        }
    }

    pub fn new_session_id(&self) -> u64 {
        self.next_session.fetch_add(1, Ordering::Relaxed)
    }
}

/// A configured plugin that serves connections.
pub struct ServingPlugin {
    pub name: String,
    pub instance: PluginInstance,
}

/// Reads through a live point's ring, skipping ahead to a keyframe when the client lags.
struct LiveCursor {
    stream: Arc<LiveStream>,
    rx: tokio::sync::broadcast::Receiver<LiveEvent>,
    waiting_for_keyframe: bool,
    lags: VecDeque<Instant>,
}

enum LiveStep {
    Data(Vec<Bytes>),
    End(EndReason, String),
}

impl LiveCursor {
    async fn next(&mut self, session: u64) -> LiveStep {
        loop {
            match self.rx.recv().await {
                Ok(LiveEvent::Media(chunk)) => {
                    if chunk.random_access {
                        self.waiting_for_keyframe = false;
                    }
                    if !self.waiting_for_keyframe {
                        return LiveStep::Data(vec![chunk.data]);
                    }
                }
                Ok(LiveEvent::SourceRestarted) => self.waiting_for_keyframe = true,
                Ok(LiveEvent::Ended) => {
                    return LiveStep::End(
                        EndReason::SOURCE_ENDED,
                        "the encoder did not come back".into(),
                    )
                }
                Err(RecvError::Lagged(skipped)) => {
                    let now = Instant::now();
                    self.lags.push_back(now);
                    while self
                        .lags
                        .front()
                        .is_some_and(|t| now.duration_since(*t) > LAG_WINDOW)
                    {
                        self.lags.pop_front();
                    }
                    if self.lags.len() >= MAX_LAGS {
                        warn!(event = events::CLIENT_LAGGING, point = %self.stream.name, session, lags = self.lags.len(), "client keeps falling behind; disconnecting it");
                        return LiveStep::End(
                            EndReason::SOURCE_ERROR,
                            "client too slow for the stream".into(),
                        );
                    }
                    warn!(event = events::CLIENT_LAGGING, point = %self.stream.name, session, skipped_chunks = skipped, "client fell behind; skipping it ahead to the next keyframe");
                    self.waiting_for_keyframe = true;
                }
                Err(RecvError::Closed) => {
                    return LiveStep::End(EndReason::POINT_CLOSED, "point closed".into())
                }
            }
        }
    }
}

/// Streams a byte range of an on-demand file.
struct FileCursor {
    path: std::path::PathBuf,
    file: Option<tokio::fs::File>,
    position: u64,
    end: u64,
}

enum Media {
    Live(LiveCursor),
    File(FileCursor),
}

/// The session's view of the host during plugin calls, and its IO state between them.
struct ConnCtx<'a> {
    shared: &'a Shared,
    plugin: &'a str,
    info: SessionInfo,
    out: VecDeque<Bytes>,
    out_bytes: usize,
    close_requested: bool,
    timers: HashMap<u64, tokio::time::Instant>,
    media: Option<Media>,
    playing: Option<String>,
    publishing: Option<Arc<LiveStream>>,
    pending_end: Option<StreamEnded>,
    /// Media a `play` call produced at once (a live point's PAT/PMT and current GOP); queued
    /// after everything the plugin writes during the same event.
    pending_media: Vec<Bytes>,
    bytes_sent: u64,
    bytes_pushed: u64,
    /// When the publishing encoder last delivered media (or started publishing).
    last_push: tokio::time::Instant,
}

impl ConnCtx<'_> {
    fn enqueue(&mut self, data: Bytes) {
        if !data.is_empty() {
            self.out_bytes += data.len();
            self.out.push_back(data);
        }
    }

    fn refuse(&self, action: &str, path: &str, error: &HostError) {
        info!(event = events::REFUSED, plugin = %self.plugin, session = self.info.id, peer = %self.info.peer, action, path, code = error.code.as_str(), reason = %error.message, "request refused");
    }

    fn stop_media(&mut self, why: &str) {
        self.pending_media.clear();
        if let Some(point) = self.playing.take() {
            info!(event = events::STOP, plugin = %self.plugin, session = self.info.id, peer = %self.info.peer, %point, why, "play stopped");
        }
        self.media = None;
    }

    fn end_media(&mut self, reason: EndReason, message: String) {
        self.stop_media(reason.as_str());
        self.pending_end = Some(StreamEnded {
            reason,
            message: message.into(),
        });
    }
}

impl HostCalls for ConnCtx<'_> {
    fn write(&mut self, data: &[u8]) {
        self.enqueue(Bytes::copy_from_slice(data));
    }

    fn close(&mut self) {
        self.close_requested = true;
    }

    fn set_timer(&mut self, timer: u64, after: Duration) {
        self.timers
            .insert(timer, tokio::time::Instant::now() + after);
    }

    fn cancel_timer(&mut self, timer: u64) {
        self.timers.remove(&timer);
    }

    fn lookup(&self, path: &str) -> Result<PointInfo, HostError> {
        self.shared
            .points
            .resolve(self.plugin, path)
            .map(|(info, _)| info)
    }

    fn play(&mut self, path: &str, range: ByteRange) -> Result<PointInfo, HostError> {
        let (info, resolved) = match self.shared.points.resolve_playable(self.plugin, path) {
            Ok(found) => found,
            Err(error) => {
                self.refuse("play", path, &error);
                return Err(error);
            }
        };
        self.stop_media("replaced by a new play request");
        let media = match resolved {
            Resolved::Live(stream) => {
                let join = stream.join();
                self.pending_media = join.backlog;
                Media::Live(LiveCursor {
                    stream,
                    rx: join.rx,
                    waiting_for_keyframe: !join.at_keyframe,
                    lags: VecDeque::new(),
                })
            }
            Resolved::File { path: file, size } => {
                let end = range.end.min(size);
                if range.start > end || (range.start == end && size > 0) {
                    let error = HostError::new(
                        ErrorCode::BAD_RANGE,
                        format!(
                            "range {}..{} is outside the file ({size} bytes)",
                            range.start, range.end
                        ),
                    );
                    self.refuse("play", path, &error);
                    return Err(error);
                }
                Media::File(FileCursor {
                    path: file,
                    file: None,
                    position: range.start,
                    end,
                })
            }
        };
        info!(event = events::PLAY, plugin = %self.plugin, session = self.info.id, peer = %self.info.peer, point = %info.name, item = %info.item, kind = info.kind.as_str(), start = range.start, "play started");
        self.media = Some(media);
        self.playing = Some(path.to_owned());
        Ok(info)
    }

    fn stop(&mut self) {
        self.stop_media("stopped by the client");
    }

    fn publish(&mut self, path: &str) -> Result<PointInfo, HostError> {
        let refused = |ctx: &Self, error: HostError| {
            ctx.refuse("publish", path, &error);
            Err(error)
        };
        if self.publishing.is_some() {
            return refused(
                self,
                HostError::new(
                    ErrorCode::INVALID_STATE,
                    "this session is already publishing",
                ),
            );
        }
        let (mut info, resolved) = match self.shared.points.resolve(self.plugin, path) {
            Ok(found) => found,
            Err(error) => return refused(self, error),
        };
        let Resolved::Live(stream) = resolved else {
            return refused(
                self,
                HostError::new(
                    ErrorCode::WRONG_KIND,
                    format!("publishing point `{}` is on-demand; encoders can only publish to broadcast points", info.name),
                ),
            );
        };
        if let Err(busy) = stream.publish(self.info.id) {
            return refused(
                self,
                HostError::new(ErrorCode::ALREADY_PUBLISHING, busy.to_string()),
            );
        }
        info!(event = events::PUSH_START, plugin = %self.plugin, session = self.info.id, peer = %self.info.peer, point = %info.name, "encoder started publishing");
        info.live = true;
        self.last_push = tokio::time::Instant::now();
        self.publishing = Some(stream);
        Ok(info)
    }

    fn push_media(&mut self, data: &[u8]) -> Result<(), HostError> {
        let Some(stream) = &self.publishing else {
            return Err(HostError::new(
                ErrorCode::INVALID_STATE,
                "push_media before publish",
            ));
        };
        if !stream.push(self.info.id, data) {
            return Err(HostError::new(
                ErrorCode::INVALID_STATE,
                "this session no longer publishes to the point",
            ));
        }
        self.bytes_pushed += data.len() as u64;
        self.last_push = tokio::time::Instant::now();
        Ok(())
    }

    fn log(&self, level: LogLevel, message: &str) {
        let (plugin, session, peer) = (self.plugin, self.info.id, &*self.info.peer);
        match level {
            LogLevel::ERROR => error!(plugin = %plugin, session, peer = %peer, "{message}"),
            LogLevel::WARN => warn!(plugin = %plugin, session, peer = %peer, "{message}"),
            LogLevel::INFO => info!(plugin = %plugin, session, peer = %peer, "{message}"),
            _ => debug!(plugin = %plugin, session, peer = %peer, "{message}"),
        }
    }

    fn session(&self) -> SessionInfo {
        self.info.clone()
    }

    fn setup_transport(&mut self, request: TransportRequest) -> Result<TransportInfo, HostError> {
        let _ = request;
        Err(HostError::new(
            ErrorCode::UNSUPPORTED_TRANSPORT,
            "transports are not available yet",
        ))
    }

    fn teardown_transport(&mut self, transport: u64) {
        let _ = transport;
    }

    fn play_transports(&mut self, path: &str, start_ms: u64) -> Result<PlayInfo, HostError> {
        let _ = (path, start_ms);
        Err(HostError::new(
            ErrorCode::UNSUPPORTED_TRANSPORT,
            "transports are not available yet",
        ))
    }

    fn pause_transports(&mut self) -> Result<u64, HostError> {
        Err(HostError::new(
            ErrorCode::UNSUPPORTED_TRANSPORT,
            "transports are not available yet",
        ))
    }
}

/// Why a connection ended.
enum Ending {
    Closed,
    /// A publishing encoder sent nothing for the point's source timeout.
    SourceSilent(Duration),
    PeerGone(String),
    TooSlow,
    Fault(String),
}

/// Serve one accepted connection until it ends.
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
    let session_id = info.id;
    info!(event = events::CONNECT, plugin = %plugin.name, session = session_id, %peer, %local, "client connected");
    let started = Instant::now();
    let mut session = match plugin.instance.new_session(info.clone()) {
        Ok(session) => session,
        Err(fault) => {
            error!(event = events::PLUGIN_FAULT, plugin = %plugin.name, session = session_id, %peer, %fault, "plugin panicked creating a session; connection closed");
            return;
        }
    };
    let mut ctx = ConnCtx {
        shared: &shared,
        plugin: &plugin.name,
        info,
        out: VecDeque::new(),
        out_bytes: 0,
        close_requested: false,
        timers: HashMap::new(),
        media: None,
        playing: None,
        publishing: None,
        pending_end: None,
        pending_media: Vec::new(),
        bytes_sent: 0,
        bytes_pushed: 0,
        last_push: tokio::time::Instant::now(),
    };
    let ending = match session.on_open(&mut ctx) {
        Ok(()) => drive(socket, &mut session, &mut ctx).await,
        Err(fault) => Ending::Fault(fault),
    };
    ctx.stop_media("connection ended");
    if let Some(stream) = ctx.publishing.take() {
        info!(event = events::PUSH_END, plugin = %plugin.name, session = session_id, %peer, point = %stream.name, bytes = ctx.bytes_pushed, "encoder stopped publishing");
        let why = match &ending {
            Ending::SourceSilent(timeout) => {
                format!("no data from the encoder for {} ms", timeout.as_millis())
            }
            Ending::Fault(_) => "the plugin serving the encoder faulted".to_owned(),
            _ => "the encoder disconnected".to_owned(),
        };
        stream.unpublish(session_id, &why);
    }
    let (plugin_name, seconds, sent) = (
        &plugin.name,
        started.elapsed().as_secs_f64(),
        ctx.bytes_sent,
    );
    match ending {
        Ending::Closed => {
            info!(event = events::DISCONNECT, plugin = %plugin_name, session = session_id, %peer, seconds, bytes_sent = sent, "session closed")
        }
        Ending::PeerGone(why) => {
            info!(event = events::DISCONNECT, plugin = %plugin_name, session = session_id, %peer, seconds, bytes_sent = sent, reason = %why, "client went away")
        }
        Ending::SourceSilent(timeout) => {
            warn!(event = events::DISCONNECT, plugin = %plugin_name, session = session_id, %peer, seconds, timeout_ms = timeout.as_millis() as u64, "encoder sent nothing within the source timeout; connection closed")
        }
        Ending::TooSlow => {
            warn!(event = events::DISCONNECT, plugin = %plugin_name, session = session_id, %peer, seconds, bytes_sent = sent, timeout_ms = shared.write_timeout.as_millis() as u64, "client stopped reading; disconnected")
        }
        Ending::Fault(fault) => {
            error!(event = events::PLUGIN_FAULT, plugin = %plugin_name, session = session_id, %peer, %fault, "plugin panicked; session closed, the server continues")
        }
    }
}

/// Run one plugin call, turning a fault into the connection's ending.
macro_rules! call {
    ($result:expr) => {
        if let Err(fault) = $result {
            return Ending::Fault(fault);
        }
    };
}

async fn drive(socket: TcpStream, session: &mut PluginSession, ctx: &mut ConnCtx<'_>) -> Ending {
    let (mut reader, mut writer) = socket.into_split();
    let mut read_buf = vec![0u8; 16 * 1024];
    let mut reading = true;
    let mut stalled_since: Option<tokio::time::Instant> = None;
    let write_timeout = ctx.shared.write_timeout;

    loop {
        // Every plugin call returns to here, so media started during a call follows whatever
        // the plugin wrote in that call (a response head, say).
        for data in std::mem::take(&mut ctx.pending_media) {
            ctx.enqueue(data);
        }
        if let Some(ended) = ctx.pending_end.take() {
            call!(session.on_stream_ended(ctx, ended));
            continue;
        }
        if ctx.out.is_empty() {
            stalled_since = None;
            if ctx.close_requested {
                let _ = writer.shutdown().await;
                if reading {
                    linger(&mut reader, &mut read_buf).await;
                }
                return Ending::Closed;
            }
            if let Some(Media::File(cursor)) = &mut ctx.media {
                match read_file_block(cursor).await {
                    Ok(Some(block)) => ctx.enqueue(block),
                    Ok(None) => ctx.end_media(EndReason::COMPLETE, "range sent".into()),
                    Err(error) => {
                        warn!(session = ctx.info.id, path = %cursor.path.display(), %error, "reading on-demand file failed");
                        ctx.end_media(EndReason::SOURCE_ERROR, error.to_string());
                    }
                }
                continue;
            }
        } else if stalled_since.is_none() {
            stalled_since = Some(tokio::time::Instant::now());
        }

        let next_timer = ctx
            .timers
            .iter()
            .min_by_key(|(_, at)| **at)
            .map(|(id, at)| (*id, *at));
        let want_live =
            ctx.out_bytes < OUTPUT_HIGH_WATER && matches!(ctx.media, Some(Media::Live(_)));
        let write_deadline = stalled_since.map(|since| since + write_timeout);
        let source_deadline = ctx
            .publishing
            .as_ref()
            .map(|stream| ctx.last_push + stream.source_timeout);
        let session_id = ctx.info.id;

        tokio::select! {
            read = reader.read(&mut read_buf), if reading => match read {
                Ok(0) => {
                    reading = false;
                    call!(session.on_peer_closed(ctx));
                    // Nothing more can arrive; unless media is still flowing out to a client
                    // that only half-closed, finish once queued output is sent.
                    if ctx.media.is_none() {
                        ctx.close_requested = true;
                    }
                }
                Ok(n) => call!(session.on_data(ctx, &read_buf[..n])),
                Err(error) => return Ending::PeerGone(error.to_string()),
            },
            written = write_some(&mut writer, &ctx.out) => match written {
                Ok(n) => {
                    consume(&mut ctx.out, n);
                    ctx.out_bytes -= n;
                    ctx.bytes_sent += n as u64;
                    stalled_since = Some(tokio::time::Instant::now());
                }
                Err(error) => return Ending::PeerGone(error.to_string()),
            },
            _ = sleep_until_opt(write_deadline) => return Ending::TooSlow,
            _ = sleep_until_opt(source_deadline) => {
                let timeout = ctx.publishing.as_ref().map_or(Duration::ZERO, |s| s.source_timeout);
                return Ending::SourceSilent(timeout);
            }
            step = next_live(&mut ctx.media, session_id), if want_live => match step {
                LiveStep::Data(buffers) => buffers.into_iter().for_each(|b| ctx.enqueue(b)),
                LiveStep::End(reason, message) => ctx.end_media(reason, message),
            },
            _ = sleep_until_opt(next_timer.map(|(_, at)| at)) => {
                if let Some((timer, _)) = next_timer {
                    ctx.timers.remove(&timer);
                    call!(session.on_timer(ctx, timer));
                }
            },
        }
    }
}

/// After our side is shut down, read and discard what the client is still sending for a
/// short while, so that closing with unread data does not make the kernel send a reset that
/// could destroy the response before the client reads it (e.g. a refused encoder mid-body).
async fn linger(reader: &mut tokio::net::tcp::OwnedReadHalf, buf: &mut [u8]) {
    let deadline = tokio::time::Instant::now() + LINGER_TIME;
    let mut discarded = 0usize;
    while discarded < LINGER_MAX_BYTES {
        match tokio::time::timeout_at(deadline, reader.read(buf)).await {
            Ok(Ok(n)) if n > 0 => discarded += n,
            _ => return,
        }
    }
}

/// Write as much of the queue as the socket takes in one vectored write. Pending forever when
/// the queue is empty, so it can sit in a `select!`.
async fn write_some(
    writer: &mut tokio::net::tcp::OwnedWriteHalf,
    out: &VecDeque<Bytes>,
) -> std::io::Result<usize> {
    if out.is_empty() {
        return std::future::pending().await;
    }
    let slices: Vec<IoSlice<'_>> = out
        .iter()
        .take(MAX_IOVECS)
        .map(|b| IoSlice::new(b))
        .collect();
    let n = writer.write_vectored(&slices).await?;
    if n == 0 {
        return Err(std::io::ErrorKind::WriteZero.into());
    }
    Ok(n)
}

fn consume(out: &mut VecDeque<Bytes>, mut n: usize) {
    while n > 0 {
        let front = out.front_mut().expect("wrote more than was queued");
        if front.len() <= n {
            n -= front.len();
            out.pop_front();
        } else {
            let _ = front.split_to(n);
            n = 0;
        }
    }
}

async fn sleep_until_opt(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

async fn next_live(media: &mut Option<Media>, session: u64) -> LiveStep {
    match media {
        Some(Media::Live(cursor)) => cursor.next(session).await,
        _ => std::future::pending().await,
    }
}

/// The next block of the range, or `None` when it has been sent in full.
async fn read_file_block(cursor: &mut FileCursor) -> std::io::Result<Option<Bytes>> {
    if cursor.position >= cursor.end {
        return Ok(None);
    }
    if cursor.file.is_none() {
        let mut file = tokio::fs::File::open(&cursor.path).await?;
        file.seek(std::io::SeekFrom::Start(cursor.position)).await?;
        cursor.file = Some(file);
    }
    let file = cursor.file.as_mut().expect("opened above");
    let want = (cursor.end - cursor.position).min(FILE_BLOCK as u64) as usize;
    let mut block = vec![0u8; want];
    let n = file.read(&mut block).await?;
    if n == 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            format!("{} ended early; was it truncated?", cursor.path.display()),
        ));
    }
    block.truncate(n);
    cursor.position += n as u64;
    Ok(Some(Bytes::from(block)))
}

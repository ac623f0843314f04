//! One client connection: the host-side IO loop that drives a plugin session.
//!
//! The task owns the socket, the session's timers and its media cursor. It hands the plugin
//! events (bytes in, timer fired, media ended, peer closed) and carries out what the plugin
//! asks through [`HostCalls`]. Media is pulled into the output queue only while the queue is
//! short, so a slow client's backlog stays in the point's shared ring, where falling too far
//! behind means skipping to the next keyframe, never slowing anyone else.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::io::IoSlice;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ferrocast_plugin_api::host::{HostCalls, PluginSession};
use ferrocast_plugin_api::{
    ByteRange, EndReason, ErrorCode, HostError, LogLevel, PlayInfo, PointInfo, SessionInfo,
    StreamEnded, TransportInfo, TransportRequest, RESUME,
};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::broadcast::error::RecvError;
use tracing::{debug, error, info, warn};

use crate::events;
use crate::media::pacer::{FilePacer, PacerStep};
use crate::media::rtp::{parse_rtcp, RtcpPacket, RtpBatch, RtpPacketizer};
use crate::points::{LiveChunk, LiveEvent, LiveStream, PointMedia, Resolved};
use crate::random::random_u32;
use crate::state::{ServingPlugin, Shared};
use crate::transport::{plugin_for, Transport, SENDER_REPORT_INTERVAL};

/// Stop pulling live media into a client's output queue above this many bytes.
const OUTPUT_HIGH_WATER: usize = 256 * 1024;
/// Size of one read from an on-demand file.
const FILE_BLOCK: usize = 64 * 1024;
/// Most buffers handed to one vectored write.
const MAX_IOVECS: usize = 64;
/// A live client that lags this many times within [`LAG_WINDOW`] is disconnected.
const MAX_LAGS: usize = 5;
const LAG_WINDOW: Duration = Duration::from_secs(60);
/// Paced sends handled before the connection task looks at its socket again.
const PACED_SENDS_PER_TURN: usize = 32;
/// How long, and how much, to keep reading from a client after closing our side.
const LINGER_TIME: Duration = Duration::from_secs(2);
const LINGER_MAX_BYTES: usize = 4 * 1024 * 1024;

/// Reads through a live point's ring, skipping ahead to a keyframe when the client lags.
struct LiveCursor {
    stream: Arc<LiveStream>,
    /// Sent as RTP on transports, rather than raw TS on the connection.
    rtp: bool,
    rx: tokio::sync::broadcast::Receiver<LiveEvent>,
    waiting_for_keyframe: bool,
    lags: VecDeque<Instant>,
}

enum LiveStep {
    Data(Arc<LiveChunk>),
    End(EndReason, String),
}

impl LiveCursor {
    async fn next(&mut self, session: u64) -> LiveStep {
        loop {
            match self.rx.recv().await {
                Ok(LiveEvent::Media(live)) => {
                    if live.chunk.random_access {
                        self.waiting_for_keyframe = false;
                    }
                    if !self.waiting_for_keyframe {
                        return LiveStep::Data(live);
                    }
                }
                // A raw TS client restarts at the new stream's first keyframe. An RTP client
                // takes every packet: its sequence numbers are the point's, so skipping the
                // new stream's first chunks would show up as loss.
                Ok(LiveEvent::SourceRestarted) => self.waiting_for_keyframe = !self.rtp,
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

/// An on-demand file sent over RTP transports, paced in real time by its PCR.
struct PacedFile {
    pacer: FilePacer,
    packetizer: RtpPacketizer,
    /// RTP timestamp of media time zero: timestamps follow the media position, so they run on
    /// across pause and resume.
    timestamp_base: u32,
    /// When the pacer said the next data is due.
    due: Option<tokio::time::Instant>,
}

impl PacedFile {
    fn timestamp_at(&self, media_time: Duration) -> u32 {
        let ticks = media_time.as_micros() * 9 / 100;
        self.timestamp_base.wrapping_add(ticks as u32)
    }
}

enum Media {
    /// A live point, as raw TS on the connection or as the point's shared RTP packets on the
    /// session's transports (`LiveCursor::rtp`).
    Live(LiveCursor),
    /// A byte range of a file on the connection, as fast as the client takes it.
    File(FileCursor),
    /// A file on the session's transports, in real time.
    Paced(Box<PacedFile>),
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
    /// Media a `play` call produced at once (a live point's current GOP); sent after
    /// everything the plugin writes during the same event.
    pending_media: Vec<Arc<LiveChunk>>,
    /// Media transports (RTSP), in setup order.
    transports: Vec<Transport>,
    transports_set_up: u64,
    /// When the next RTCP sender reports are due, while media flows on transports.
    reports_due: Option<tokio::time::Instant>,
    bytes_sent: u64,
    bytes_pushed: u64,
    /// When the publishing encoder last delivered media (or started publishing).
    last_push: tokio::time::Instant,
    /// Point and carrier plugin of each transport, by transport id.
    transport_uses: Vec<(u64, String, &'static str)>,
    /// The session's plugin was draining when it connected: it may not start anything.
    arrived_draining: bool,
}

impl ConnCtx<'_> {
    fn enqueue(&mut self, data: Bytes) {
        if !data.is_empty() {
            self.out_bytes += data.len();
            self.out.push_back(data);
        }
    }

    /// Points this session plays, publishes to or has transports for.
    fn attached_points(&self) -> BTreeSet<String> {
        let mut points: BTreeSet<String> = self
            .transport_uses
            .iter()
            .map(|(_, point, _)| point.clone())
            .collect();
        if let Some(path) = &self.playing {
            points.insert(point_of(path).to_owned());
        }
        if let Some(stream) = &self.publishing {
            points.insert(stream.name.clone());
        }
        points
    }

    /// May this session start something on `point`? Not if its plugin was draining when it
    /// connected, nor if the point is draining and the session is not already on it.
    fn admit(&self, point: &str) -> Result<(), HostError> {
        if self.arrived_draining {
            return Err(HostError::new(
                ErrorCode::DRAINING,
                format!(
                    "the {} service is draining and takes no new sessions; try again later",
                    self.plugin.to_uppercase()
                ),
            ));
        }
        if self.shared.point_draining(point) && !self.attached_points().contains(point) {
            return Err(HostError::new(
                ErrorCode::DRAINING,
                format!("publishing point `{point}` is draining and takes no new sessions; try again later"),
            ));
        }
        Ok(())
    }

    /// After a reload: is everything this session uses still configured? `Err` says what
    /// was taken away.
    fn still_allowed(&self) -> Result<(), String> {
        let plugins = self.shared.plugins.load();
        if !plugins.contains_key(self.plugin) {
            return Err(format!("plugin `{}` was disabled", self.plugin));
        }
        let points = self.shared.points.load();
        let live_streams = [
            self.publishing.as_ref(),
            match &self.media {
                Some(Media::Live(cursor)) => Some(&cursor.stream),
                _ => None,
            },
        ];
        for name in self.attached_points() {
            let Some(point) = points.get(&name) else {
                return Err(format!("publishing point `{name}` was removed"));
            };
            if !point.protocols.iter().any(|p| p == self.plugin) {
                return Err(format!(
                    "{} was disabled on publishing point `{name}`",
                    self.plugin.to_uppercase()
                ));
            }
            if point.pull.is_some() && self.publishing.as_ref().is_some_and(|s| s.name == name) {
                return Err(format!("publishing point `{name}` now pulls its source; encoders can no longer push to it"));
            }
            for stream in live_streams.iter().flatten().filter(|s| s.name == name) {
                if !matches!(&point.media, PointMedia::Live(current) if Arc::ptr_eq(current, stream))
                {
                    return Err(format!(
                        "publishing point `{name}` was replaced by one of another kind"
                    ));
                }
            }
            for (_, _, carrier) in self.transport_uses.iter().filter(|(_, p, _)| *p == name) {
                if !plugins.contains_key(*carrier) || !point.protocols.iter().any(|p| p == carrier)
                {
                    return Err(format!(
                        "{} was disabled on publishing point `{name}`",
                        carrier.to_uppercase()
                    ));
                }
            }
        }
        Ok(())
    }

    /// A reload changed the tables: end the session, the way its protocol ends a stream, if
    /// the reload took away something it uses. Untouched sessions carry on.
    fn recheck(&mut self) {
        if self.close_requested {
            return;
        }
        let Err(why) = self.still_allowed() else {
            return;
        };
        info!(event = events::SESSION_RECONFIGURED, plugin = %self.plugin, session = self.info.id, peer = %self.info.peer, reason = %why, "a reload removed what this session used; ending it");
        // RTP players end on an RTCP BYE; the plugin ends its own protocol in on_stream_ended.
        let mut frames = Vec::new();
        for transport in &self.transports {
            transport.send_bye(&mut frames);
        }
        frames.into_iter().for_each(|frame| self.enqueue(frame));
        // Free the point for its next source now, not after the connection's closing linger.
        self.end_publishing(&why);
        if self.media.is_some() {
            self.end_media(EndReason::POINT_CLOSED, why);
        }
        self.close_requested = true;
    }

    /// The session stops being the point's publisher (`why` is logged with SOURCE_LOST).
    fn end_publishing(&mut self, why: &str) {
        if let Some(stream) = self.publishing.take() {
            info!(event = events::PUSH_END, plugin = %self.plugin, session = self.info.id, peer = %self.info.peer, point = %stream.name, bytes = self.bytes_pushed, "encoder stopped publishing");
            stream.unpublish(self.info.id, why);
        }
    }

    fn refuse(&self, action: &str, path: &str, error: &HostError) {
        info!(event = events::REFUSED, plugin = %self.plugin, session = self.info.id, peer = %self.info.peer, action, path, code = error.code.as_str(), reason = %error.message, "request refused");
    }

    fn stop_media(&mut self, why: &str) {
        self.pending_media.clear();
        self.reports_due = None;
        if let Some(point) = self.playing.take() {
            info!(event = events::STOP, plugin = %self.plugin, session = self.info.id, peer = %self.info.peer, %point, why, "play stopped");
        }
        self.media = None;
    }

    /// Send live chunks in the session's framing: raw TS on the connection, or the shared
    /// RTP packets on every transport.
    fn deliver_live(&mut self, chunks: Vec<Arc<LiveChunk>>) {
        let rtp = matches!(&self.media, Some(Media::Live(cursor)) if cursor.rtp);
        for live in chunks {
            if rtp {
                self.deliver_rtp(&live.rtp);
            } else {
                self.enqueue(live.chunk.data.clone());
            }
        }
    }

    fn deliver_rtp(&mut self, batch: &RtpBatch) {
        let mut frames = Vec::new();
        for transport in &mut self.transports {
            transport.send_rtp(batch, &mut frames);
        }
        frames.into_iter().for_each(|frame| self.enqueue(frame));
    }

    /// RTCP sender reports on every transport, stamped with the stream's current time.
    fn send_reports(&mut self) {
        let rtp_time = match &self.media {
            Some(Media::Live(cursor)) => cursor.stream.rtp_start().timestamp,
            Some(Media::Paced(paced)) => paced.timestamp_at(paced.pacer.position(Instant::now())),
            _ => return,
        };
        let mut frames = Vec::new();
        for transport in &self.transports {
            transport.send_report(rtp_time, &mut frames);
        }
        frames.into_iter().for_each(|frame| self.enqueue(frame));
        self.reports_due = Some(tokio::time::Instant::now() + SENDER_REPORT_INTERVAL);
    }

    /// Pace an on-demand file: send what is due, or note when the next data is due.
    fn pace(&mut self) {
        for _ in 0..PACED_SENDS_PER_TURN {
            let Some(Media::Paced(paced)) = &mut self.media else {
                return;
            };
            let now = Instant::now();
            match paced.pacer.next(now) {
                Ok(PacerStep::Send {
                    data, media_time, ..
                }) => {
                    let timestamp = paced.timestamp_at(media_time);
                    let batch = paced.packetizer.packetize(&data, timestamp);
                    paced.due = None;
                    self.deliver_rtp(&batch);
                }
                Ok(PacerStep::Wait(at)) => {
                    paced.due = Some(tokio::time::Instant::from_std(at));
                    return;
                }
                Ok(PacerStep::Paused) => {
                    paced.due = None;
                    return;
                }
                Ok(PacerStep::End) => {
                    // RTP has no end of stream of its own; players end on an RTCP BYE.
                    self.send_reports();
                    let mut frames = Vec::new();
                    for transport in &self.transports {
                        transport.send_bye(&mut frames);
                    }
                    frames.into_iter().for_each(|frame| self.enqueue(frame));
                    return self.end_media(EndReason::COMPLETE, "file sent".into());
                }
                Err(error) => {
                    warn!(session = self.info.id, %error, "reading on-demand file failed");
                    return self.end_media(EndReason::SOURCE_ERROR, error.to_string());
                }
            }
        }
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
        let (info, _) = self.shared.points.load().resolve(self.plugin, path)?;
        self.admit(&info.name)?;
        Ok(info)
    }

    fn play(&mut self, path: &str, range: ByteRange) -> Result<PointInfo, HostError> {
        let found = self.admit(point_of(path)).and_then(|()| {
            self.shared
                .points
                .load()
                .resolve_playable(self.plugin, path)
        });
        let (info, resolved) = match found {
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
                    rtp: false,
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
        if let Err(error) = self.admit(point_of(path)) {
            return refused(self, error);
        }
        let (mut info, resolved) = match self.shared.points.load().resolve(self.plugin, path) {
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
        let path = request.path.to_string();
        let refused = |ctx: &Self, error: HostError| {
            ctx.refuse("setup", &path, &error);
            Err(error)
        };
        if let Err(error) = self.admit(point_of(&path)) {
            return refused(self, error);
        }
        let points = self.shared.points.load();
        let (info, _) = match points.resolve(self.plugin, &path) {
            Ok(found) => found,
            Err(error) => return refused(self, error),
        };
        let Some(carrier) = plugin_for(request.kind) else {
            return refused(
                self,
                HostError::new(
                    ErrorCode::UNSUPPORTED_TRANSPORT,
                    format!("{} is not supported", request.kind.as_str()),
                ),
            );
        };
        let allowed = points
            .get(&info.name)
            .is_some_and(|point| point.protocols.iter().any(|p| p == carrier));
        let plugins = self.shared.plugins.load();
        let Some(plugin) = plugins.get(carrier).filter(|_| allowed) else {
            return refused(
                self,
                HostError::new(
                    ErrorCode::UNSUPPORTED_TRANSPORT,
                    format!(
                        "{} is not enabled on publishing point `{}`; the operator can add \"{carrier}\" to its protocols",
                        carrier.to_uppercase(),
                        info.name
                    ),
                ),
            );
        };
        if let Err(error) = plugin
            .instance
            .validate_transport(request.clone(), &self.info.peer)
        {
            return refused(self, error);
        }
        let peer_ip = self.info.peer.parse::<SocketAddr>().map(|a| a.ip());
        let local_ip = self.info.local.parse::<SocketAddr>().map(|a| a.ip());
        let (Ok(peer_ip), Ok(local_ip)) = (peer_ip, local_ip) else {
            return refused(
                self,
                HostError::new(ErrorCode::UNAVAILABLE, "connection addresses unknown"),
            );
        };
        self.transports_set_up += 1;
        let id = (self.info.id << 8) | (self.transports_set_up & 0xff);
        let ssrc = match points.get(&info.name).map(|p| &p.media) {
            Some(PointMedia::Live(stream)) => stream.rtp_start().ssrc,
            _ => random_u32(),
        };
        match Transport::open(id, carrier, &request, local_ip, peer_ip, ssrc) {
            Ok(transport) => {
                info!(plugin = %self.plugin, session = self.info.id, peer = %self.info.peer, point = %info.name, transport = %transport.info.kind.as_str(), carrier, server_rtp_port = transport.info.server_rtp_port, "transport set up");
                let described = transport.info.clone();
                self.transport_uses
                    .push((described.id, info.name.to_string(), carrier));
                self.transports.push(transport);
                Ok(described)
            }
            Err(error) => refused(self, error),
        }
    }

    fn teardown_transport(&mut self, transport: u64) {
        self.transports.retain(|t| t.info.id != transport);
        self.transport_uses.retain(|(id, _, _)| *id != transport);
        if self.transports.is_empty()
            && matches!(
                self.media,
                Some(Media::Live(LiveCursor { rtp: true, .. })) | Some(Media::Paced(_))
            )
        {
            self.stop_media("transport torn down");
        }
    }

    fn play_transports(&mut self, path: &str, start_ms: u64) -> Result<PlayInfo, HostError> {
        if self.transports.is_empty() {
            return Err(HostError::new(
                ErrorCode::INVALID_STATE,
                "no transport is set up; SETUP comes before PLAY",
            ));
        }
        let found = self.admit(point_of(path)).and_then(|()| {
            self.shared
                .points
                .load()
                .resolve_playable(self.plugin, path)
        });
        let (point, resolved) = match found {
            Ok(found) => found,
            Err(error) => {
                self.refuse("play", path, &error);
                return Err(error);
            }
        };
        let now = Instant::now();
        let play = match resolved {
            Resolved::Live(stream) => {
                if let Some(Media::Live(cursor @ LiveCursor { rtp: true, .. })) = &self.media {
                    // PLAY on a live session that already plays is a no-op.
                    let start = cursor.stream.rtp_start();
                    return Ok(PlayInfo {
                        point,
                        start_ms: 0,
                        rtp_seq: start.seq,
                        rtp_time: start.timestamp,
                    });
                }
                if start_ms != RESUME && start_ms != 0 {
                    return Err(HostError::new(
                        ErrorCode::NOT_SEEKABLE,
                        format!(
                            "`{}` is live; it can only be started and stopped",
                            point.name
                        ),
                    ));
                }
                let join = stream.join();
                let start = join.rtp;
                self.stop_media("replaced by a new play request");
                self.pending_media = join.backlog;
                self.media = Some(Media::Live(LiveCursor {
                    stream,
                    rtp: true,
                    rx: join.rx,
                    waiting_for_keyframe: !join.at_keyframe,
                    lags: VecDeque::new(),
                }));
                PlayInfo {
                    point: point.clone(),
                    start_ms: 0,
                    rtp_seq: start.seq,
                    rtp_time: start.timestamp,
                }
            }
            Resolved::File { path: file, .. } => {
                let resume = matches!(&self.media, Some(Media::Paced(_))) && start_ms == RESUME;
                if !resume {
                    let index = match self.shared.points.load().file_index(&file).ready_for_play() {
                        Ok(index) => index,
                        Err(error) => {
                            self.refuse("play", path, &error);
                            return Err(error);
                        }
                    };
                    let pacer = FilePacer::open(&file, (*index).clone()).map_err(|error| {
                        HostError::new(
                            ErrorCode::UNAVAILABLE,
                            format!("cannot open the file: {error}"),
                        )
                    })?;
                    // A new file or a seek: sequence numbers run on from the session's
                    // previous stream, so the client sees one continuous RTP stream.
                    let packetizer = match self.media.take() {
                        Some(Media::Paced(previous)) => previous.packetizer,
                        _ => RtpPacketizer::new(self.transports[0].info.ssrc, random_u32() as u16),
                    };
                    self.stop_media("replaced by a new play request");
                    self.media = Some(Media::Paced(Box::new(PacedFile {
                        pacer,
                        packetizer,
                        timestamp_base: random_u32(),
                        due: None,
                    })));
                }
                let Some(Media::Paced(paced)) = &mut self.media else {
                    unreachable!("set above");
                };
                if !resume {
                    let target = if start_ms == RESUME { 0 } else { start_ms };
                    paced.pacer.seek(Duration::from_millis(target));
                }
                let position = paced.pacer.position(now);
                paced.pacer.start(now);
                paced.due = None;
                PlayInfo {
                    point: point.clone(),
                    start_ms: position.as_millis() as u64,
                    rtp_seq: paced.packetizer.next_seq(),
                    rtp_time: paced.timestamp_at(position),
                }
            }
        };
        self.playing = Some(path.to_owned());
        self.reports_due = Some(tokio::time::Instant::now() + Duration::from_secs(1));
        info!(event = events::PLAY, plugin = %self.plugin, session = self.info.id, peer = %self.info.peer, point = %point.name, item = %point.item, kind = point.kind.as_str(), start_ms = play.start_ms, rtp_seq = play.rtp_seq, "play started on transports");
        Ok(play)
    }

    fn pause_transports(&mut self) -> Result<u64, HostError> {
        match &mut self.media {
            Some(Media::Paced(paced)) => {
                let position = paced.pacer.pause(Instant::now());
                paced.due = None;
                info!(plugin = %self.plugin, session = self.info.id, peer = %self.info.peer, position_ms = position.as_millis() as u64, "paused");
                Ok(position.as_millis() as u64)
            }
            Some(Media::Live(_)) => Err(HostError::new(
                ErrorCode::NOT_SEEKABLE,
                "a broadcast point cannot be paused; it can only be started and stopped",
            )),
            _ => Err(HostError::new(
                ErrorCode::INVALID_STATE,
                "nothing is playing",
            )),
        }
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
    // Counted on its generation for as long as the connection lives.
    let _counted = plugin.generation.session_started();
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
        transports: Vec::new(),
        transports_set_up: 0,
        reports_due: None,
        bytes_sent: 0,
        bytes_pushed: 0,
        last_push: tokio::time::Instant::now(),
        transport_uses: Vec::new(),
        arrived_draining: shared.plugin_draining(&plugin.name),
    };
    let ending = match session.on_open(&mut ctx) {
        Ok(()) => drive(socket, &mut session, &mut ctx).await,
        Err(fault) => Ending::Fault(fault),
    };
    ctx.stop_media("connection ended");
    if ctx.publishing.is_some() {
        let why = match &ending {
            Ending::SourceSilent(timeout) => {
                format!("no data from the encoder for {} ms", timeout.as_millis())
            }
            Ending::Fault(_) => "the plugin serving the encoder faulted".to_owned(),
            _ => "the encoder disconnected".to_owned(),
        };
        ctx.end_publishing(&why);
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
            warn!(event = events::DISCONNECT, plugin = %plugin_name, session = session_id, %peer, seconds, bytes_sent = sent, timeout_ms = shared.write_timeout().as_millis() as u64, "client stopped reading; disconnected")
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
    let write_timeout = ctx.shared.write_timeout();
    let mut changes = ctx.shared.subscribe_changes();

    loop {
        // Every plugin call returns to here, so media started during a call follows whatever
        // the plugin wrote in that call (a response head, say).
        let backlog = std::mem::take(&mut ctx.pending_media);
        ctx.deliver_live(backlog);
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
        if let Some(Media::Paced(paced)) = &ctx.media {
            let due = match paced.due {
                Some(at) => at <= tokio::time::Instant::now(),
                None => true,
            };
            if paced.pacer.is_playing() && due && ctx.out_bytes < OUTPUT_HIGH_WATER {
                ctx.pace();
                continue;
            }
        }

        let next_timer = ctx
            .timers
            .iter()
            .min_by_key(|(_, at)| **at)
            .map(|(id, at)| (*id, *at));
        let want_live =
            ctx.out_bytes < OUTPUT_HIGH_WATER && matches!(ctx.media, Some(Media::Live(_)));
        let pace_due = match &ctx.media {
            Some(Media::Paced(paced)) if paced.pacer.is_playing() => paced.due,
            _ => None,
        };
        let rtcp_in = ctx
            .transports
            .iter()
            .find_map(|t| t.rtcp_socket().map(|socket| (t.info.id, socket)));
        let write_deadline = stalled_since.map(|since| since + write_timeout);
        let source_deadline = ctx
            .publishing
            .as_ref()
            .map(|stream| ctx.last_push + stream.source_timeout());
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
                let timeout = ctx.publishing.as_ref().map_or(Duration::ZERO, |s| s.source_timeout());
                return Ending::SourceSilent(timeout);
            }
            step = next_live(&mut ctx.media, session_id), if want_live => match step {
                LiveStep::Data(live) => ctx.deliver_live(vec![live]),
                LiveStep::End(reason, message) => {
                    // A reload that removed the point also ends its stream; say so, the way
                    // every other reconfigured session ends.
                    ctx.recheck();
                    if !ctx.close_requested {
                        ctx.end_media(reason, message);
                    }
                }
            },
            // Paced media becomes due: the loop sends it.
            _ = sleep_until_opt(pace_due) => {}
            _ = sleep_until_opt(ctx.reports_due) => ctx.send_reports(),
            Ok(()) = changes.changed() => ctx.recheck(),
            report = recv_rtcp(rtcp_in.as_ref().map(|(_, socket)| socket)) => {
                if let Some((transport, _)) = &rtcp_in {
                    let packets = report;
                    debug!(session = session_id, transport, packets = packets.len(), "RTCP from the client");
                    call!(session.on_transport_activity(ctx, *transport));
                }
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

/// The point name of a request path (`point` or `point/item`).
fn point_of(path: &str) -> &str {
    path.split_once('/').map_or(path, |(point, _)| point)
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

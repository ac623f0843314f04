//! The live fan-out of a broadcast point: its state machine (waiting, live, source lost,
//! ended), the once-framed chunks every client shares, and late joiners' snapshots.
//!
//! The encoder's bytes are aligned and framed into chunks once, and every client receives the
//! same refcounted chunks through a bounded broadcast ring. A client that falls behind the
//! ring is skipped forward to the next keyframe by its own connection task; neither the
//! encoder nor the other clients wait for it.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::broadcast;
use tracing::{info, warn};

use crate::events;
use crate::media::ingest::{Chunk, TsIngest};
use crate::media::rtp::{RtpBatch, RtpClock, RtpPacketizer};
use crate::media::ts::{mark_discontinuity, null_packet, CcRestamper, TS_PACKET_LEN};
use crate::random::random_u32;

use super::timeline::{Timeline, TimelineMode};

/// The most chunks kept from the last keyframe for late joiners; a longer GOP is not cached
/// and late joiners wait for the next keyframe instead.
const GOP_CACHE_MAX_CHUNKS: usize = 4096;

/// What a live point sends to its clients.
#[derive(Clone, Debug)]
pub enum LiveEvent {
    /// Media, framed once for every protocol. A random-access chunk starts with the point's
    /// current PAT and PMT, so that any client (re)starting there can decode from its first
    /// byte.
    Media(Arc<LiveChunk>),
    /// A new encoder connection took over: clients restart at its first keyframe.
    SourceRestarted,
    /// The source is gone for good; clients end their streams.
    Ended,
}

/// One chunk of a live point in every framing its clients use: raw TS (HTTP, raw TCP, UDP
/// pushes) and RTP/MP2T (RTSP over UDP or interleaved, RTP pushes). Shared by reference.
#[derive(Debug)]
pub struct LiveChunk {
    pub chunk: Chunk,
    pub rtp: RtpBatch,
    /// The chunk's place in the point's ring: every chunk sent gets the next number, so a
    /// client can tell where it stands against the TCP fan-out (`super::tcp_fanout`).
    pub index: u64,
}

impl LiveChunk {
    /// A lone null packet (the point's keep-alive): harmless to any client, even one
    /// waiting for a keyframe, and what keeps its player from timing out.
    pub fn is_keepalive(&self) -> bool {
        self.chunk.data.len() == TS_PACKET_LEN
            && crate::media::ts::TsPacket::new(&self.chunk.data)
                .is_ok_and(|packet| packet.pid() == crate::media::ts::NULL_PID)
    }
}

/// The RTP stream position a new RTP client starts at (RTSP `RTP-Info`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RtpStart {
    pub ssrc: u32,
    pub seq: u16,
    pub timestamp: u32,
}

/// What one push of encoder bytes delivered.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pushed {
    /// Packets on the program's streams arrived (not just PSI, null packets or junk).
    pub media: bool,
    /// The PCRs among the pushed packets, in order, in 90 kHz units.
    pub pcrs_90k: Vec<u64>,
}

/// Why a publish attempt was refused.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("another encoder (session {0}) is already publishing to this point; stop it first or publish to another point")]
    Busy(u64),
    #[error("the point was removed from the configuration")]
    Retired,
}

/// Where a broadcast point is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LiveState {
    /// No encoder has published yet.
    Waiting,
    /// An encoder is publishing.
    Live,
    /// The encoder went away; clients are held until `deadline` for it to come back.
    SourceLost { deadline: tokio::time::Instant },
    /// The encoder did not come back in time; clients were ended. A new encoder may publish.
    Ended,
}

impl LiveState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Waiting => "waiting",
            Self::Live => "live",
            Self::SourceLost { .. } => "source lost",
            Self::Ended => "ended",
        }
    }
}

/// Longest source name or description kept, in characters.
const MAX_SOURCE_TEXT_CHARS: usize = 200;

/// What the publishing encoder says its stream is (an Icecast source's `ice-name` and
/// `ice-description`), for operators.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SourceDescription {
    /// Empty when the encoder gave none.
    pub name: String,
    /// Empty when the encoder gave none.
    pub description: String,
}

impl SourceDescription {
    /// Encoder-supplied text made safe for one-line status output and bounded in length:
    /// control characters become spaces, and the text is cut at [`MAX_SOURCE_TEXT_CHARS`].
    pub fn new(name: &str, description: &str) -> Self {
        let clean = |text: &str| {
            text.chars()
                .map(|c| if c.is_control() { ' ' } else { c })
                .take(MAX_SOURCE_TEXT_CHARS)
                .collect::<String>()
                .trim()
                .to_owned()
        };
        Self {
            name: clean(name),
            description: clean(description),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.name.is_empty() && self.description.is_empty()
    }
}

/// A broadcast point's state, for the status report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LiveStatus {
    pub state: LiveState,
    /// While the source is lost: how long clients are still held.
    pub grace_left: Option<Duration>,
    /// Times a source came back within the grace.
    pub reconnects: u64,
    pub last_error: Option<String>,
    /// Subscribers of the point: clients and pushes (not HLS packagers or recorders).
    pub clients: usize,
    /// The source's bitrate over the last second or so (zero without a source).
    pub ingest_bits_per_second: u64,
    /// How long the current source has been live (through reconnects within the grace).
    pub uptime: Option<Duration>,
    /// Time spent holding clients without a source, since start.
    pub source_lost: Duration,
    /// How the current (or last) encoder described its stream.
    pub source_description: Option<SourceDescription>,
}

/// How often a point without its source sends a null packet to its clients.
const KEEPALIVE_INTERVAL: Duration = Duration::from_millis(500);
/// A publisher that has delivered no media for this long may be taken over by one whose
/// credentials were checked.
const STALE_PUBLISHER: Duration = Duration::from_secs(1);
/// Clients sent nothing for this long get null packets: with the check every
/// [`KEEPALIVE_INTERVAL`], no client waits more than 1 s for a byte.
const SILENCE_BEFORE_KEEPALIVE: Duration = Duration::from_millis(500);

/// Mutable state of a live point, behind one lock so that a late joiner's snapshot and its
/// subscription are taken atomically (no gap, no duplicate).
struct LiveInner {
    state: LiveState,
    publisher: Option<u64>,
    ingest: TsIngest,
    /// Chunks since the most recent keyframe, starting with it.
    gop: Vec<Arc<LiveChunk>>,
    /// The index the next framed chunk gets ([`LiveChunk::index`]).
    next_chunk_index: u64,
    /// Bumped on every publisher change; grace timers check it to know they are stale.
    epoch: u64,
    /// The next keyframe (and its PAT/PMT) is the first after a source change: flag it.
    mark_discontinuity: bool,
    reconnects: u64,
    /// Why the source was last lost or could not be reached, for operators.
    last_error: Option<String>,
    /// When clients were last sent media: a point whose clients get nothing gets null
    /// packets, whatever its publisher sends.
    last_sent: tokio::time::Instant,
    /// The point's one RTP stream: sequence numbers and timestamps continue across encoder
    /// changes, so RTP clients never see the stream restart.
    rtp: RtpPacketizer,
    rtp_clock: RtpClock,
    /// The point was removed by a reload; it never takes a source again.
    retired: bool,
    /// Continuity counters run on across sources and inserted PAT/PMT copies.
    counters: CcRestamper,
    /// PTS/DTS/PCR re-based across sources, and the mode the configuration asks for (taken
    /// up at the next keyframe).
    timeline: Timeline,
    timeline_wanted: TimelineMode,
    /// A source just started: its media is dropped until its first keyframe.
    awaiting_keyframe: bool,
    /// The source's bitrate, for operators.
    ingest_rate: super::ingest_rate::IngestRate,
    /// When the current source went live (kept across a reconnect within the grace).
    live_since: Option<std::time::Instant>,
    /// Time spent without a source while holding clients, before the current loss.
    source_lost_before: Duration,
    /// When the current loss of the source began.
    lost_since: Option<tokio::time::Instant>,
    /// How the current (or last) encoder described its stream; a new publisher starts
    /// without one.
    source_description: Option<SourceDescription>,
}

impl LiveInner {
    /// Change state, accounting the time spent in the source-lost state.
    fn set_state(&mut self, state: LiveState) {
        let now = tokio::time::Instant::now();
        if let Some(since) = self.lost_since.take() {
            self.source_lost_before += now.saturating_duration_since(since);
        }
        if let LiveState::SourceLost { .. } = state {
            self.lost_since = Some(now);
        }
        self.state = state;
    }

    /// Total time spent in the source-lost state since start.
    fn source_lost_total(&self) -> Duration {
        let current = self
            .lost_since
            .map_or(Duration::ZERO, |since| since.elapsed());
        self.source_lost_before + current
    }

    /// Frame a chunk for every protocol and number it; it must then be sent to the ring.
    fn frame(&mut self, chunk: Chunk) -> Arc<LiveChunk> {
        let timestamp = self
            .rtp_clock
            .timestamp(chunk.pcr_90k, std::time::Instant::now());
        let rtp = self.rtp.packetize(&chunk.data, timestamp);
        let index = self.next_chunk_index;
        self.next_chunk_index += 1;
        Arc::new(LiveChunk { chunk, rtp, index })
    }
}

/// The live fan-out of one broadcast point.
pub struct LiveStream {
    pub name: String,
    inner: Mutex<LiveInner>,
    tx: broadcast::Sender<LiveEvent>,
    /// The point's timing, in milliseconds; atomics because a reload may change it while
    /// clients play.
    reconnect_grace_ms: AtomicU64,
    /// An encoder silent for this long is treated as gone.
    source_timeout_ms: AtomicU64,
    /// The source is pulled on demand: a client arriving while there is no source is held
    /// (within the grace) while the pull connects.
    pull_on_demand: AtomicBool,
    /// A late joiner on UDP transports catches up at this multiple of the stream's bitrate
    /// (0: at once).
    udp_join_rate: AtomicU32,
    /// Ring subscribers that are not clients (HLS packagers, recorders: `super::tap`).
    pub(super) taps: AtomicUsize,
    /// Until when requests that hold no subscription (HLS) want the source, in milliseconds
    /// since `created`.
    pub(super) demand_until_ms: AtomicU64,
    pub(super) created: tokio::time::Instant,
    /// Sends the chunks of the UDP sessions that caught up.
    pub udp_fanout: Arc<crate::udp::fanout::PointFanout>,
    /// Write the chunks of the raw TS listeners on plain TCP that caught up.
    pub tcp_fanouts: super::tcp_fanout::TcpFanouts,
}

/// What a late joiner receives before the live ring: PAT/PMT, then the current GOP.
pub struct JoinSnapshot {
    pub backlog: Vec<Arc<LiveChunk>>,
    /// Whether the backlog starts at a keyframe; if not, the client waits for the next one.
    pub at_keyframe: bool,
    pub rx: broadcast::Receiver<LiveEvent>,
    /// Where an RTP client starts: the first packet of the backlog, or the next one.
    pub rtp: RtpStart,
    /// The index of the first chunk `rx` will give ([`LiveChunk::index`]).
    pub next_index: u64,
}

impl LiveStream {
    pub fn new(
        name: &str,
        queue: usize,
        reconnect_grace: Duration,
        source_timeout: Duration,
        pull_on_demand: bool,
        timeline: TimelineMode,
    ) -> Arc<Self> {
        let (tx, _) = broadcast::channel(queue.max(16));
        Arc::new(Self {
            name: name.to_owned(),
            inner: Mutex::new(LiveInner {
                state: LiveState::Waiting,
                publisher: None,
                ingest: TsIngest::new(),
                gop: Vec::new(),
                next_chunk_index: 0,
                epoch: 0,
                mark_discontinuity: false,
                reconnects: 0,
                last_error: None,
                last_sent: tokio::time::Instant::now(),
                rtp: RtpPacketizer::new(random_u32(), random_u32() as u16),
                rtp_clock: RtpClock::new(random_u32()),
                retired: false,
                counters: CcRestamper::default(),
                timeline: Timeline::new(timeline),
                timeline_wanted: timeline,
                awaiting_keyframe: true,
                ingest_rate: super::ingest_rate::IngestRate::new(std::time::Instant::now()),
                live_since: None,
                source_lost_before: Duration::ZERO,
                lost_since: None,
                source_description: None,
            }),
            tx,
            reconnect_grace_ms: AtomicU64::new(reconnect_grace.as_millis() as u64),
            source_timeout_ms: AtomicU64::new(source_timeout.as_millis() as u64),
            pull_on_demand: AtomicBool::new(pull_on_demand),
            udp_join_rate: AtomicU32::new(crate::config::DEFAULT_UDP_JOIN_RATE),
            taps: AtomicUsize::new(0),
            demand_until_ms: AtomicU64::new(0),
            created: tokio::time::Instant::now(),
            udp_fanout: Arc::default(),
            tcp_fanouts: Default::default(),
        })
    }

    /// Apply reloaded timing and timeline mode; sessions and timers pick up the timing at
    /// their next check, the point its timeline mode at the next keyframe.
    pub fn reconfigure(
        &self,
        reconnect_grace: Duration,
        source_timeout: Duration,
        pull_on_demand: bool,
        timeline: TimelineMode,
    ) {
        self.lock().timeline_wanted = timeline;
        self.reconnect_grace_ms
            .store(reconnect_grace.as_millis() as u64, Ordering::Relaxed);
        self.source_timeout_ms
            .store(source_timeout.as_millis() as u64, Ordering::Relaxed);
        self.pull_on_demand.store(pull_on_demand, Ordering::Relaxed);
    }

    /// Set how fast a late joiner on UDP transports catches up (a multiple of the stream's
    /// bitrate; 0 sends its backlog at once). New joins use it.
    pub fn set_udp_join_rate(&self, multiple: u32) {
        self.udp_join_rate.store(multiple, Ordering::Relaxed);
    }

    pub fn udp_join_rate(&self) -> u32 {
        self.udp_join_rate.load(Ordering::Relaxed)
    }

    /// The source's bitrate over the last second or so (zero without a source).
    pub fn ingest_bits_per_second(&self) -> u64 {
        self.lock()
            .ingest_rate
            .bits_per_second(std::time::Instant::now())
    }

    pub fn reconnect_grace(&self) -> Duration {
        Duration::from_millis(self.reconnect_grace_ms.load(Ordering::Relaxed))
    }

    /// An encoder silent for this long is treated as gone.
    pub fn source_timeout(&self) -> Duration {
        Duration::from_millis(self.source_timeout_ms.load(Ordering::Relaxed))
    }

    /// The point was removed from the configuration: its source is dropped, every client's
    /// stream ends, and nobody can publish to it again.
    pub fn retire(&self) {
        let mut inner = self.lock();
        inner.publisher = None;
        inner.set_state(LiveState::Ended);
        inner.retired = true;
        inner.epoch += 1;
        inner.gop.clear();
        let _ = self.tx.send(LiveEvent::Ended);
    }

    fn lock(&self) -> MutexGuard<'_, LiveInner> {
        // A panic while holding the lock cannot leave the state half-updated in a way that
        // matters more than losing the point, so recover the guard.
        self.inner
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    pub fn state(&self) -> LiveState {
        self.lock().state
    }

    /// An encoder is feeding the point now.
    pub fn is_live(&self) -> bool {
        self.state() == LiveState::Live
    }

    /// Whether a play request can be served: the point is live, or waiting within its grace
    /// for the encoder to come back (the client is held like those already attached).
    pub(crate) fn playable(self: &Arc<Self>) -> bool {
        match self.state() {
            LiveState::Live | LiveState::SourceLost { .. } => true,
            LiveState::Waiting | LiveState::Ended
                if self.pull_on_demand.load(Ordering::Relaxed) && !self.lock().retired =>
            {
                self.expect_source();
                true
            }
            _ => false,
        }
    }

    /// A client arrived at an on-demand pull point without a source: hold it (and any that
    /// follow) for the grace while the pull connects, as if the source had just been lost.
    fn expect_source(self: &Arc<Self>) {
        let deadline = tokio::time::Instant::now() + self.reconnect_grace();
        let epoch = {
            let mut inner = self.lock();
            if !matches!(inner.state, LiveState::Waiting | LiveState::Ended) || inner.retired {
                return;
            }
            inner.set_state(LiveState::SourceLost { deadline });
            inner.epoch += 1;
            inner.epoch
        };
        info!(point = %self.name, grace_ms = self.reconnect_grace().as_millis() as u64, "first client of an on-demand pull point; holding it while the pull connects");
        let stream = Arc::clone(self);
        tokio::spawn(async move { stream.hold_clients(epoch, deadline).await });
    }

    /// A pull stopped on purpose (no clients left): back to waiting, no grace.
    pub fn stop_source(&self, session: u64) {
        let mut inner = self.lock();
        if inner.publisher != Some(session) {
            return;
        }
        inner.publisher = None;
        inner.set_state(LiveState::Waiting);
        inner.epoch += 1;
        inner.gop.clear();
        let _ = self.tx.send(LiveEvent::Ended);
    }

    pub fn publish(self: &Arc<Self>, session: u64) -> Result<(), PublishError> {
        let mut inner = self.lock();
        if let Some(current) = inner.publisher {
            return Err(PublishError::Busy(current));
        }
        if inner.retired {
            return Err(PublishError::Retired);
        }
        let previous = inner.state;
        inner.publisher = Some(session);
        inner.source_description = None;
        inner.set_state(LiveState::Live);
        inner.epoch += 1;
        inner.ingest.reset();
        inner.gop.clear();
        inner.counters.new_source();
        inner.timeline.new_source();
        inner.awaiting_keyframe = true;
        if !matches!(previous, LiveState::SourceLost { .. }) || inner.live_since.is_none() {
            inner.live_since = Some(std::time::Instant::now());
        }
        let stream = Arc::clone(self);
        let epoch = inner.epoch;
        tokio::spawn(async move { stream.watch_silence(epoch).await });
        if let LiveState::SourceLost { deadline } = previous {
            inner.reconnects += 1;
            inner.mark_discontinuity = true;
            inner.rtp_clock.restart();
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            info!(
                event = events::SOURCE_RESUMED,
                point = %self.name,
                session,
                reconnects = inner.reconnects,
                grace_left_ms = left.as_millis() as u64,
                clients = self.client_count(),
                "encoder is back; clients resume at its first keyframe"
            );
            // Clients still attached resync on the new stream.
            let _ = self.tx.send(LiveEvent::SourceRestarted);
        }
        Ok(())
    }

    /// Feed encoder bytes; `None` if `session` is not the publisher.
    pub fn push(&self, session: u64, data: &[u8]) -> Option<Pushed> {
        self.push_with(session, data, true)
    }

    /// [`LiveStream::push`] with more of the same read to come: the last, incomplete chunk
    /// waits for it (or for [`LiveStream::flush`]), so a read the protocol hands over in
    /// small pieces still makes full chunks.
    pub fn push_more(&self, session: u64, data: &[u8]) -> Option<Pushed> {
        self.push_with(session, data, false)
    }

    /// Send what [`LiveStream::push_more`] held: the read is over.
    pub fn flush(&self, session: u64) {
        let mut inner = self.lock();
        if inner.publisher != Some(session) {
            return;
        }
        let mut chunks = Vec::new();
        inner.ingest.flush(&mut chunks);
        self.send_chunks(inner, chunks);
    }

    fn push_with(&self, session: u64, data: &[u8], flush: bool) -> Option<Pushed> {
        let mut inner = self.lock();
        if inner.publisher != Some(session) {
            return None;
        }
        let mut chunks = Vec::new();
        inner.ingest_rate.add(data.len(), std::time::Instant::now());
        let media_before = inner.ingest.stats().media_packets;
        inner.ingest.push_more(data, &mut chunks);
        if flush {
            inner.ingest.flush(&mut chunks);
        }
        let pushed = Pushed {
            media: inner.ingest.stats().media_packets > media_before,
            pcrs_90k: inner.ingest.latest_pcrs_90k().to_vec(),
        };
        self.send_chunks(inner, chunks);
        Some(pushed)
    }

    /// Frame the ingest's new chunks (keyframe gate, timeline, PSI before keyframes,
    /// continuity, the GOP cache) and send them to the ring.
    fn send_chunks(&self, mut inner: MutexGuard<'_, LiveInner>, chunks: Vec<Chunk>) {
        if chunks.is_empty() {
            return;
        }
        let mut framed = Vec::new();
        for mut chunk in chunks {
            if inner.awaiting_keyframe {
                // A new source's media before its first keyframe cannot be decoded by anyone
                // (and would reach RTP clients, who take every packet, unflagged).
                if !chunk.random_access {
                    continue;
                }
                inner.awaiting_keyframe = false;
            }
            let mut data = chunk.data.to_vec();
            if chunk.random_access {
                let wanted = inner.timeline_wanted;
                if inner.timeline.set_mode(wanted) {
                    inner.mark_discontinuity = true;
                }
            }
            if let Some(pcr_90k) = inner.timeline.rewrite(&mut data, std::time::Instant::now()) {
                chunk.pcr_90k = Some(pcr_90k);
            }
            if chunk.random_access {
                inner.gop.clear();
                // PAT/PMT before every keyframe, so a late joiner or a client skipped ahead
                // starts decodable; they count as new packets in the continuity sequence.
                if let Some(psi) = inner.ingest.psi() {
                    let mut psi = psi.to_vec();
                    inner.counters.restamp_inserted(&mut psi);
                    inner.counters.restamp(&mut data);
                    data = [psi, data].concat();
                } else {
                    inner.counters.restamp(&mut data);
                }
                if inner.mark_discontinuity {
                    inner.mark_discontinuity = false;
                    flag_discontinuity(&mut data);
                }
            } else {
                inner.counters.restamp(&mut data);
            }
            chunk.data = data.into();
            let live = inner.frame(chunk);
            if live.chunk.random_access || !inner.gop.is_empty() {
                if inner.gop.len() < GOP_CACHE_MAX_CHUNKS {
                    inner.gop.push(Arc::clone(&live));
                } else {
                    inner.gop.clear();
                }
            }
            framed.push(live);
        }
        if !framed.is_empty() {
            inner.last_sent = tokio::time::Instant::now();
        }
        // Framed first, then sent back to back: a client woken by the first finds the rest
        // in the ring and writes them together, instead of waking (and writing) once per chunk.
        for live in framed {
            // No receivers is normal (nobody watching); the chunk is simply dropped.
            let _ = self.tx.send(LiveEvent::Media(live));
        }
    }

    /// Publish, taking the point over from a stale publisher: one that is still connected
    /// but has delivered no media for a second (a half-open connection of the encoder that
    /// is now reconnecting). Only for a publisher whose credentials the host checked.
    /// Returns the displaced session, if any; its next push is refused.
    pub fn publish_or_take_over(
        self: &Arc<Self>,
        session: u64,
    ) -> Result<Option<u64>, PublishError> {
        let displaced = {
            let mut inner = self.lock();
            match inner.publisher {
                Some(stale) if inner.last_sent.elapsed() >= STALE_PUBLISHER => {
                    inner.publisher = None;
                    // As if the source had just been lost: clients resync on the new one.
                    let now = tokio::time::Instant::now();
                    inner.set_state(LiveState::SourceLost { deadline: now });
                    Some(stale)
                }
                _ => None,
            }
        };
        self.publish(session).map(|()| displaced)
    }

    /// A reload took pushing away from this point (it now pulls): the encoder publishing
    /// to it, if any, stops being the publisher now, so that the pull starting next is not
    /// refused while the encoder's connection winds down. Clients are held as for a lost
    /// source, and resume on the pull's first keyframe.
    pub fn release_publisher(self: &Arc<Self>, why: &str) {
        let current = self.lock().publisher;
        if let Some(session) = current {
            self.unpublish(session, why);
        }
    }

    /// The publisher went away (`why`). Clients stay attached for the reconnect grace, kept
    /// alive with null packets; if no encoder takes over by then, their streams end.
    pub fn unpublish(self: &Arc<Self>, session: u64, why: &str) {
        let grace = self.reconnect_grace();
        let deadline = tokio::time::Instant::now() + grace;
        let epoch = {
            let mut inner = self.lock();
            if inner.publisher != Some(session) {
                return;
            }
            inner.publisher = None;
            inner.set_state(LiveState::SourceLost { deadline });
            inner.epoch += 1;
            inner.gop.clear();
            inner.last_error = Some(why.to_owned());
            inner.epoch
        };
        warn!(
            event = events::SOURCE_LOST,
            point = %self.name,
            session,
            reason = why,
            grace_ms = grace.as_millis() as u64,
            clients = self.client_count(),
            "encoder lost; holding clients for it to reconnect"
        );
        let stream = Arc::clone(self);
        tokio::spawn(async move { stream.hold_clients(epoch, deadline).await });
    }

    /// While the source is lost: keep clients' connections busy, then end them at `deadline`
    /// unless an encoder came back (the epoch moved on).
    async fn hold_clients(&self, epoch: u64, deadline: tokio::time::Instant) {
        // The first keep-alive goes out at once: clients learn nothing is wrong.
        self.send_keepalive(&mut self.lock());
        loop {
            let next = (tokio::time::Instant::now() + KEEPALIVE_INTERVAL).min(deadline);
            tokio::time::sleep_until(next).await;
            let mut inner = self.lock();
            if inner.epoch != epoch {
                return;
            }
            if tokio::time::Instant::now() >= deadline {
                inner.set_state(LiveState::Ended);
                warn!(
                    event = events::SOURCE_GAVE_UP,
                    point = %self.name,
                    grace_ms = self.reconnect_grace().as_millis() as u64,
                    clients = self.client_count(),
                    "no encoder reconnected within the reconnect grace; ending the point's streams"
                );
                let _ = self.tx.send(LiveEvent::Ended);
                return;
            }
            self.send_keepalive(&mut inner);
        }
    }

    /// While a publisher is connected but clients get nothing from it (a stall, junk, or media
    /// before its first keyframe; until the source timeout declares it lost), keep clients'
    /// connections busy so that their players do not time out. Ends when the publisher
    /// changes.
    async fn watch_silence(&self, epoch: u64) {
        loop {
            tokio::time::sleep(KEEPALIVE_INTERVAL).await;
            let mut inner = self.lock();
            if inner.epoch != epoch {
                return;
            }
            if inner.last_sent.elapsed() >= SILENCE_BEFORE_KEEPALIVE {
                self.send_keepalive(&mut inner);
            }
        }
    }

    /// One null packet to every client, framed like media (RTP clients get it too).
    fn send_keepalive(&self, inner: &mut LiveInner) {
        let keepalive = inner.frame(Chunk {
            data: Bytes::copy_from_slice(&null_packet()),
            random_access: false,
            pcr_90k: None,
        });
        let _ = self.tx.send(LiveEvent::Media(keepalive));
    }

    /// Subscribe a new client: the current GOP (which starts with PAT/PMT and a keyframe),
    /// then everything after.
    pub fn join(&self) -> JoinSnapshot {
        let inner = self.lock();
        let rx = self.tx.subscribe();
        JoinSnapshot {
            backlog: inner.gop.clone(),
            at_keyframe: !inner.gop.is_empty(),
            rx,
            rtp: Self::rtp_start_of(&inner),
            next_index: inner.next_chunk_index,
        }
    }

    /// Where an RTP client joining now starts: the first packet of the cached GOP, or the
    /// next packet the point will send.
    pub fn rtp_start(&self) -> RtpStart {
        Self::rtp_start_of(&self.lock())
    }

    fn rtp_start_of(inner: &LiveInner) -> RtpStart {
        match inner.gop.first() {
            Some(first) if !first.rtp.is_empty() => RtpStart {
                ssrc: inner.rtp.ssrc(),
                seq: first.rtp.first_seq(),
                timestamp: rtp_timestamp_of(&first.rtp),
            },
            _ => RtpStart {
                ssrc: inner.rtp.ssrc(),
                seq: inner.rtp.next_seq(),
                timestamp: inner.rtp_clock.last(),
            },
        }
    }

    /// Clients and pushes on the point's ring; taps (HLS packagers, recorders) are not clients.
    pub fn client_count(&self) -> usize {
        // Taps (HLS packagers, recorders) and the fan-outs' subscriptions are not clients.
        // TCP listeners keep their subscriptions on the fan-out; UDP sessions hold none there.
        let not_clients = self.taps.load(Ordering::Acquire)
            + self.udp_fanout.subscriptions()
            + self.tcp_fanouts.subscriptions();
        (self.tx.receiver_count() + self.udp_fanout.members()).saturating_sub(not_clients)
    }

    /// Remember why the source could not be reached (a pull that failed to connect).
    pub fn note_error(&self, reason: &str) {
        self.lock().last_error = Some(reason.to_owned());
    }

    /// Keep the publisher's description of its stream; `false` (and nothing kept) when
    /// `session` is not the publisher.
    pub fn describe_source(&self, session: u64, description: SourceDescription) -> bool {
        let mut inner = self.lock();
        if inner.publisher != Some(session) {
            return false;
        }
        inner.source_description = (!description.is_empty()).then_some(description);
        true
    }

    /// What an operator needs to know about the point now.
    pub fn status(&self) -> LiveStatus {
        let inner = self.lock();
        LiveStatus {
            state: inner.state,
            grace_left: match inner.state {
                LiveState::SourceLost { deadline } => {
                    Some(deadline.saturating_duration_since(tokio::time::Instant::now()))
                }
                _ => None,
            },
            reconnects: inner.reconnects,
            last_error: inner.last_error.clone(),
            clients: self.client_count(),
            ingest_bits_per_second: inner.ingest_rate.bits_per_second(std::time::Instant::now()),
            source_lost: inner.source_lost_total(),
            source_description: inner.source_description.clone(),
            uptime: match inner.state {
                LiveState::Live | LiveState::SourceLost { .. } => {
                    inner.live_since.map(|since| since.elapsed())
                }
                _ => None,
            },
        }
    }
}

/// The timestamp field of a batch's first RTP packet.
fn rtp_timestamp_of(batch: &RtpBatch) -> u32 {
    let packet = batch.packet(0);
    u32::from_be_bytes([packet[4], packet[5], packet[6], packet[7]])
}

/// Set the discontinuity indicator on every packet of `data` (whole TS packets) that can carry
/// it, for the first keyframe after a source change: players reset their clocks there.
fn flag_discontinuity(data: &mut [u8]) {
    for packet in data.chunks_exact_mut(TS_PACKET_LEN) {
        mark_discontinuity(packet);
    }
}

#[cfg(test)]
impl LiveStream {
    /// A pushed point for unit tests elsewhere in the host.
    pub fn for_tests(name: &str, grace: Duration, source_timeout: Duration) -> Arc<Self> {
        Self::new(
            name,
            16,
            grace,
            source_timeout,
            false,
            TimelineMode::default(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts_packet(pid: u16, random_access: bool) -> Vec<u8> {
        let mut packet = vec![0xffu8; 188];
        packet[0] = 0x47;
        packet[1] = (pid >> 8) as u8 & 0x1f;
        packet[2] = pid as u8;
        if random_access {
            packet[3] = 0x30; // adaptation field + payload
            packet[4] = 1;
            packet[5] = 0x40; // random_access_indicator
        } else {
            packet[3] = 0x10;
        }
        packet
    }

    #[tokio::test]
    async fn second_publisher_is_refused_and_first_can_republish() {
        let stream = test_stream(Duration::from_secs(60));
        assert_eq!(stream.state(), LiveState::Waiting);
        stream.publish(1).unwrap();
        assert!(matches!(stream.publish(2), Err(PublishError::Busy(1))));
        assert!(stream.push(2, &ts_packet(0x100, false)).is_none());
        assert!(stream.push(1, &ts_packet(0x100, false)).is_some());
        stream.unpublish(1, "test");
        assert!(matches!(stream.state(), LiveState::SourceLost { .. }));
        assert!(
            stream.playable(),
            "clients may join while the encoder is expected back"
        );
        stream.publish(2).unwrap();
        assert!(stream.is_live());
    }

    #[tokio::test]
    async fn a_released_encoder_frees_the_point_for_the_next_source_at_once() {
        let stream = test_stream(Duration::from_secs(60));
        stream.publish(1).unwrap();
        stream.release_publisher("the point now pulls");
        assert!(matches!(stream.state(), LiveState::SourceLost { .. }));
        assert!(stream.push(1, &ts_packet(0x100, false)).is_none());
        stream.publish(2).unwrap();
        assert!(stream.is_live());
        // The released encoder's own end, later, leaves the new source alone.
        stream.unpublish(1, "its connection closed");
        assert!(stream.is_live());
    }

    #[tokio::test]
    async fn only_the_publisher_describes_the_source_until_the_next_publish() {
        let stream = test_stream(Duration::from_secs(60));
        let radio = SourceDescription::new("Radio\r\nOne", "all day");
        assert!(
            !stream.describe_source(1, radio.clone()),
            "not publishing yet"
        );
        stream.publish(1).unwrap();
        assert!(stream.describe_source(1, radio.clone()));
        assert!(!stream.describe_source(2, SourceDescription::new("other", "")));
        assert_eq!(stream.status().source_description, Some(radio.clone()));
        assert_eq!(
            radio.name, "Radio  One",
            "control characters cannot break a status line"
        );
        stream.unpublish(1, "test");
        assert!(
            stream.status().source_description.is_some(),
            "kept while the encoder is expected back"
        );
        stream.publish(2).unwrap();
        assert_eq!(stream.status().source_description, None);
        let long = SourceDescription::new(&"x".repeat(1000), "");
        assert_eq!(long.name.chars().count(), MAX_SOURCE_TEXT_CHARS);
        assert!(SourceDescription::new(" ", "\t").is_empty());
    }

    /// A push point with the given reconnect grace and a 5 s source timeout.
    fn test_stream(grace: Duration) -> Arc<LiveStream> {
        LiveStream::new(
            "live",
            64,
            grace,
            Duration::from_secs(5),
            false,
            TimelineMode::default(),
        )
    }

    /// PAT, PMT (H.264 on PID 0x100), then a keyframe packet: what an encoder sends first.
    fn stream_start() -> Vec<u8> {
        use crate::media::test_support::{pat_packet, pmt_packet};
        let mut data = pat_packet(0x1000, 0).to_vec();
        data.extend_from_slice(&pmt_packet(0x1000, 0x100, &[(0x1b, 0x100)], 0));
        data.extend_from_slice(&ts_packet(0x100, true));
        data
    }

    async fn next_event(rx: &mut broadcast::Receiver<LiveEvent>) -> LiveEvent {
        tokio::time::timeout(Duration::from_secs(3600), rx.recv())
            .await
            .expect("an event")
            .expect("open channel")
    }

    #[tokio::test(start_paused = true)]
    async fn status_reports_state_grace_reconnects_and_last_error() {
        let stream = test_stream(Duration::from_secs(10));
        assert_eq!(stream.status().state, LiveState::Waiting);
        stream.publish(1).unwrap();
        let _client = stream.join();
        stream.unpublish(1, "the encoder disconnected");
        tokio::time::sleep(Duration::from_secs(4)).await;
        let status = stream.status();
        assert!(matches!(status.state, LiveState::SourceLost { .. }));
        assert_eq!(status.grace_left, Some(Duration::from_secs(6)));
        assert_eq!(
            status.last_error.as_deref(),
            Some("the encoder disconnected")
        );
        assert_eq!(status.clients, 1);
        assert_eq!(status.source_lost, Duration::from_secs(4));
        stream.publish(2).unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(stream.status().source_lost, Duration::from_secs(4));
        assert_eq!(stream.status().reconnects, 1);
        assert_eq!(stream.status().state, LiveState::Live);
    }

    #[tokio::test(start_paused = true)]
    async fn a_lost_source_keeps_clients_alive_then_ends_them_at_the_deadline() {
        let stream = test_stream(Duration::from_secs(2));
        stream.publish(1).unwrap();
        let mut rx = stream.join().rx;
        let lost_at = tokio::time::Instant::now();
        stream.unpublish(1, "test");

        let mut keepalives = 0;
        let ended_at = loop {
            match next_event(&mut rx).await {
                LiveEvent::Media(live) => {
                    assert_eq!(live.chunk.data.as_ref(), &null_packet()[..]);
                    assert_eq!(live.rtp.len(), 1, "keep-alives reach RTP clients too");
                    keepalives += 1;
                }
                LiveEvent::Ended => break tokio::time::Instant::now(),
                LiveEvent::SourceRestarted => panic!("no encoder came back"),
            }
        };
        assert!(keepalives >= 3, "{keepalives} keepalives in a 2 s grace");
        assert_eq!(ended_at - lost_at, Duration::from_secs(2));
        assert_eq!(stream.state(), LiveState::Ended);
        assert!(!stream.playable());
    }

    #[tokio::test(start_paused = true)]
    async fn an_encoder_back_within_the_grace_resumes_on_a_flagged_keyframe() {
        let stream = test_stream(Duration::from_secs(2));
        stream.publish(1).unwrap();
        assert!(stream.push(1, &stream_start()).is_some());
        let mut rx = stream.join().rx;
        stream.unpublish(1, "test");
        tokio::time::sleep(Duration::from_millis(700)).await;
        stream.publish(2).unwrap();
        assert!(stream.push(2, &stream_start()).is_some());

        let mut saw_restart = false;
        loop {
            match next_event(&mut rx).await {
                LiveEvent::SourceRestarted => saw_restart = true,
                LiveEvent::Media(live) if live.chunk.random_access => {
                    let chunk = &live.chunk;
                    assert!(saw_restart, "restart is announced before the new stream");
                    // PAT, PMT, then the keyframe packet: all flagged.
                    let packets: Vec<_> = chunk.data.chunks(TS_PACKET_LEN).collect();
                    let pids: Vec<u16> = packets
                        .iter()
                        .map(|p| crate::media::ts::TsPacket::new(p).unwrap().pid())
                        .collect();
                    assert_eq!(pids, [0, 0x1000, 0x100]);
                    for packet in packets {
                        let packet = crate::media::ts::TsPacket::new(packet).unwrap();
                        assert!(packet.discontinuity_indicator());
                    }
                    break;
                }
                LiveEvent::Media(_) => {}
                LiveEvent::Ended => panic!("the encoder came back in time"),
            }
        }
        // The grace timer of the lost source must not end the resumed stream.
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(stream.is_live());
        while let Ok(event) = rx.try_recv() {
            assert!(!matches!(event, LiveEvent::Ended));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_publisher_sending_no_media_leaves_clients_on_keepalives() {
        let stream = test_stream(Duration::from_secs(2));
        stream.publish(1).unwrap();
        assert!(stream.push(1, &stream_start()).is_some());
        let mut rx = stream.join().rx;
        stream.unpublish(1, "test");
        stream.publish(2).unwrap();
        // The new publisher sends PSI and null packets only, every 100 ms, for 3 s.
        let junk = [
            &stream_start()[..2 * TS_PACKET_LEN],
            &null_packet()[..],
            &null_packet()[..],
        ]
        .concat();
        let mut last = tokio::time::Instant::now();
        let mut keepalives = 0;
        for _ in 0..30 {
            let pushed = stream.push(2, &junk).unwrap();
            assert!(!pushed.media);
            tokio::time::sleep(Duration::from_millis(100)).await;
            while let Ok(event) = rx.try_recv() {
                if let LiveEvent::Media(live) = event {
                    if live.is_keepalive() {
                        keepalives += 1;
                        assert!(last.elapsed() <= Duration::from_secs(1));
                        last = tokio::time::Instant::now();
                    }
                }
            }
        }
        assert!(keepalives >= 3, "{keepalives} keep-alives in 3 s");
        assert!(last.elapsed() <= Duration::from_secs(1));
    }
}

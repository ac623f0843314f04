//! The connection's state between IO events: its parts (output queue, timers, media cursor,
//! publisher, transports) and what happens when the loop hands it an event.
//!
//! The IO loop owns the socket and waits; everything it learns (a live chunk, a file block, a
//! reload, a timer, RTCP) comes here, and everything to send goes into the output queue.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ferrocast_plugin_api::{EndReason, ErrorCode, HostError, SessionInfo, StreamEnded};
use tokio::time::Instant;
use tracing::{info, warn, Span};

use super::admission::{CurrentTables, DrainState, Uses};
use super::framed::{FramedChunk, FramedMedia};
use super::media::{LiveStep, Media};
use super::output::OutputQueue;
use super::play::NowPlaying;
use super::publisher::{Publisher, Silence};
use super::transports::TransportSet;
use crate::events;
use crate::media::pacer::PacerStep;
use crate::media::rtp::RtpBatch;
use crate::points::{JoinPacer, LiveChunk};
use crate::state::{PluginCounters, Shared};
use crate::udp::fanout::NewMember;

/// Paced sends handled before the connection task looks at its socket again.
const PACED_SENDS_PER_TURN: usize = 32;

/// The session's timers, by the plugin's ids.
#[derive(Default)]
pub struct Timers(HashMap<u64, Instant>);

impl Timers {
    pub fn set(&mut self, timer: u64, at: Instant) {
        self.0.insert(timer, at);
    }

    pub fn cancel(&mut self, timer: u64) {
        self.0.remove(&timer);
        if self.0.is_empty() {
            // A player's session sets a timer for its request and then none: hold no table.
            self.0 = HashMap::new();
        }
    }

    /// The timer that fires first.
    pub fn next(&self) -> Option<(u64, Instant)> {
        self.0
            .iter()
            .min_by_key(|(_, at)| **at)
            .map(|(id, at)| (*id, *at))
    }
}

/// The session's view of the host during plugin calls, and its state between them.
pub struct Connection<'a> {
    pub(super) shared: &'a Shared,
    /// The session's (control) plugin.
    pub(super) plugin: &'a str,
    pub(super) info: SessionInfo,
    /// The connection's span; the point is recorded on it once known.
    pub(super) span: Span,
    point_recorded: bool,
    /// The session's plugin was draining when it connected: it may not start anything.
    pub(super) plugin_drained_at_connect: bool,
    pub(super) out: OutputQueue,
    pub(super) close_requested: bool,
    pub(super) timers: Timers,
    pub(super) media: Option<Media>,
    /// The path (`point` or `point/item`) being played.
    pub(super) playing: Option<String>,
    /// Media a `play` call produced at once (a live point's current GOP); sent after
    /// everything the plugin writes during the same event.
    pub(super) pending_media: Vec<Arc<LiveChunk>>,
    /// A late joiner on UDP transports: its backlog and the chunks that follow it until it
    /// has caught up, paced.
    join_pacer: Option<JoinPacer>,
    pending_end: Option<StreamEnded>,
    pub(super) publisher: Option<Publisher>,
    pub(super) transports: TransportSet,
    /// What the client presented with its current request, for the access checks.
    pub(super) credentials: ferrocast_plugin_api::Credentials,
    /// Served only to be refused: every request gets OVER_CAPACITY.
    pub(super) refused: Option<crate::limits::Refusal>,
    /// The connection arrived over TLS (terminated by the host).
    pub(super) secure: bool,
    /// The first valid request was made (a host call succeeded, or the plugin answered).
    pub(super) answered: bool,
    /// The plugin is taking in a read from the client: what it pushes to a point is one burst
    /// (see [`Connection::read_taken_in`]).
    pub(super) reading: bool,
    /// When the current play was accepted, until its first media byte is queued.
    pub(super) play_accepted: Option<std::time::Instant>,
    /// Media the session asked to frame itself (`play_framed`).
    pub(super) framed: FramedMedia,
    /// The counters and gauges the session's plugin publishes.
    pub(super) counters: Arc<PluginCounters>,
    /// A packaged (HLS) resource the session asked for.
    pub(super) resource: super::resource::ResourceSlot,
    /// The receiving end of an HTTP tunnel this connection carries (RTSP over HTTP).
    pub(super) tunnel: Option<crate::tunnels::TunnelEnd>,
    /// The session asked to pass the connection to another control plugin.
    pub(super) pending_handover: Option<crate::tunnels::Handover>,
    /// The connection was handed over: counted on the new plugin's generation.
    pub(super) handed_over: Option<crate::plugins::GenerationSession>,
    /// The client's socket, if it is plain TCP: a live point's TCP fan-out may write to it.
    /// It stays open for as long as the connection (and so its media cursor) lives.
    pub(super) plain_socket: Option<std::os::fd::RawFd>,
}

impl<'a> Connection<'a> {
    pub fn new(shared: &'a Shared, plugin: &'a str, info: SessionInfo, span: Span) -> Self {
        Self {
            shared,
            plugin,
            info,
            span,
            point_recorded: false,
            plugin_drained_at_connect: shared.plugin_draining(plugin),
            out: OutputQueue::default(),
            close_requested: false,
            timers: Timers::default(),
            media: None,
            playing: None,
            pending_media: Vec::new(),
            join_pacer: None,
            pending_end: None,
            publisher: None,
            credentials: ferrocast_plugin_api::Credentials::none(),
            refused: None,
            secure: false,
            answered: false,
            reading: false,
            transports: TransportSet::default(),
            play_accepted: None,
            framed: FramedMedia::default(),
            counters: shared.counters_of(plugin),
            resource: super::resource::ResourceSlot::default(),
            tunnel: None,
            pending_handover: None,
            handed_over: None,
            plain_socket: None,
        }
    }

    /// Bytes sent to the client: on the connection (including interleaved RTP) and as UDP
    /// datagrams on its transports.
    pub fn bytes_sent(&self) -> u64 {
        self.out.bytes_sent()
    }

    /// What the session holds on the server's tables.
    pub fn uses(&self) -> Uses<'_> {
        Uses {
            plugin: self.plugin,
            playing: self.playing.as_deref().map(point_of),
            live: self.media.as_ref().and_then(Media::live_stream),
            publishing: self.publisher.as_ref().map(Publisher::stream),
            transports: self.transports.uses(),
        }
    }

    /// A connection served only to be refused gets OVER_CAPACITY for every request.
    pub fn check_refused(&self) -> Result<(), HostError> {
        match self.refused {
            Some(refusal) => Err(HostError::new(
                ErrorCode::OVER_CAPACITY,
                format!(
                    "the server is at its connection limit ({})",
                    refusal.as_str()
                ),
            )),
            None => Ok(()),
        }
    }

    /// May this session start something on `point`?
    pub fn admit(&self, point: &str) -> Result<(), HostError> {
        if let Some(refusal) = self.refused {
            return Err(HostError::new(
                ErrorCode::OVER_CAPACITY,
                format!(
                    "the server is at its connection limit ({})",
                    refusal.as_str()
                ),
            ));
        }
        let drains = DrainState {
            plugin_at_connect: self.plugin_drained_at_connect,
            point: self.shared.point_draining(point),
        };
        self.uses().admit(point, drains).map_err(HostError::from)
    }

    /// What plays now, for play decisions.
    pub fn now_playing(&self) -> NowPlaying {
        match &self.media {
            None => NowPlaying::Nothing,
            Some(Media::Live(cursor)) if cursor.rtp => NowPlaying::LiveOnTransports,
            Some(Media::Live(_)) => NowPlaying::LiveOnConnection,
            Some(Media::File(_)) => NowPlaying::FileOnConnection,
            Some(Media::Paced(_)) => NowPlaying::PacedFile,
        }
    }

    /// The first point the session uses goes on its span, so every later line names it.
    pub fn record_point(&mut self, point: &str) {
        if !self.point_recorded {
            self.span.record("point", tracing::field::display(point));
            self.shared.sessions.set_point(self.info.id, point);
            self.point_recorded = true;
        }
    }

    pub fn refuse(&self, action: &str, path: &str, error: &HostError) {
        crate::metrics::refused(self.plugin, error.code.as_str());
        if self.refused.is_some() {
            // Summarised by CONNECTION_REFUSED at the accept path.
            return;
        }
        info!(event = events::REFUSED, action, path, code = error.code.as_str(), reason = %error.message, "request refused");
    }

    /// A reload changed the tables: end the session, the way its protocol ends a stream, if
    /// the reload took away something it uses. Untouched sessions carry on.
    pub fn recheck(&mut self) {
        if self.close_requested {
            return;
        }
        let lost = if self.shared.sessions.is_kicked(self.info.id) {
            Err(super::admission::LostUse::Kicked)
        } else {
            let points = self.shared.points.load();
            let plugins = self.shared.plugins.load();
            let tables = CurrentTables {
                points: &points,
                plugins: &plugins,
            };
            self.uses().still_allowed(&tables)
        };
        let Err(lost) = lost else {
            return;
        };
        let why = lost.to_string();
        info!(event = events::SESSION_RECONFIGURED, reason = %why, "a reload removed what this session used; ending it");
        // RTP players end on an RTCP BYE; the plugin ends its own protocol in on_stream_ended.
        self.transports.send_bye(&mut self.out);
        // Free the point for its next source now, not after the connection's closing linger.
        self.end_publishing(&why);
        if self.media.is_some() {
            self.end_media(EndReason::POINT_CLOSED, why);
        }
        self.close_requested = true;
    }

    /// The first media of a play is on its way: how long it took goes to the metrics.
    pub fn note_first_media(&mut self) {
        if let Some(accepted) = self.play_accepted.take() {
            crate::metrics::first_media(accepted.elapsed());
        }
    }

    /// The session stops being the point's publisher (`why` is logged with SOURCE_LOST).
    pub fn end_publishing(&mut self, why: &str) {
        if let Some(publisher) = self.publisher.take() {
            publisher.end(self.info.id, why);
        }
    }

    pub fn stop_media(&mut self, why: &str) {
        self.pending_media.clear();
        self.join_pacer = None;
        self.framed.stop();
        self.transports.stop_reports();
        if let Some(point) = self.playing.take() {
            info!(event = events::STOP, %point, why, "play stopped");
        }
        self.media = None;
    }

    /// The media ended: stop it, and tell the plugin at the next turn of the loop.
    pub fn end_media(&mut self, reason: EndReason, message: String) {
        self.stop_media(reason.as_str());
        self.pending_end = Some(StreamEnded {
            reason,
            message: message.into(),
        });
    }

    /// What the last plugin call left to do, in order: first the media it started (after
    /// whatever it wrote), then the end of a stream to report.
    pub fn take_pending(&mut self) -> Option<StreamEnded> {
        let backlog = std::mem::take(&mut self.pending_media);
        match self.join_pace_multiple() {
            Some(multiple) if !backlog.is_empty() => {
                self.note_first_media();
                let stream = self.media.as_ref().and_then(Media::live_stream);
                let rate = stream.map_or(0, |stream| stream.ingest_bits_per_second());
                self.join_pacer = Some(JoinPacer::new(backlog, rate, multiple, Instant::now()));
                self.pace();
            }
            _ => {
                self.deliver_live(backlog);
                self.hand_over_to_fanout();
            }
        }
        self.pending_end.take()
    }

    /// A live point played on UDP transports, with joins paced: the pace's multiple of the
    /// stream's bitrate.
    fn join_pace_multiple(&self) -> Option<u32> {
        if self.now_playing() != NowPlaying::LiveOnTransports || !self.transports.has_udp() {
            return None;
        }
        let stream = self.media.as_ref().and_then(Media::live_stream)?;
        Some(stream.udp_join_rate()).filter(|multiple| *multiple > 0)
    }

    /// Send live chunks in the session's framing: raw TS on the connection, the shared RTP
    /// packets on every transport, or to the session to frame itself.
    pub fn deliver_live(&mut self, chunks: impl IntoIterator<Item = Arc<LiveChunk>>) {
        let mut chunks = chunks.into_iter().peekable();
        if chunks.peek().is_some() {
            self.note_first_media();
        }
        let rtp = self.now_playing() == NowPlaying::LiveOnTransports;
        for live in chunks {
            if rtp {
                self.send_live_rtp(&live);
            } else if self.framed.is_active() {
                self.framed.push(FramedChunk::of_live(&live.chunk));
            } else {
                self.out.push(live.chunk.data.clone());
            }
        }
    }

    /// A live chunk's RTP on every transport, noting it as sent for a later hand-over.
    fn send_live_rtp(&mut self, live: &LiveChunk) {
        self.transports.send_rtp(&live.rtp, &mut self.out);
        if let Some(Media::Live(cursor)) = &mut self.media {
            cursor.sent_rtp(&live.rtp);
        }
    }

    /// A session whose transports are all UDP, sending live chunks as they come (its
    /// catch-up, if any, done), hands its sending to the point's fan-out. What waits in its
    /// ring goes out from here first, after a subscription for the fan-out is taken, so the
    /// fan-out (which skips what the session already sent) misses nothing.
    fn hand_over_to_fanout(&mut self) {
        if self.join_pacer.is_some() || !crate::udp::fanout::enabled() {
            return;
        }
        let cursor = match &self.media {
            Some(Media::Live(cursor)) if cursor.rtp && !cursor.on_fanout() => cursor,
            _ => return,
        };
        let Some(destinations) = self.transports.udp_destinations() else {
            return;
        };
        let ring = cursor.resubscribe();
        loop {
            let Some(Media::Live(cursor)) = &mut self.media else {
                return;
            };
            match cursor.next_ready() {
                Some(LiveStep::Data(live)) => self.deliver_live(vec![live]),
                Some(end) => return self.on_live_step(end),
                None => break,
            }
        }
        let sent = self.out.sent_counter();
        let Some(Media::Live(cursor)) = &mut self.media else {
            return;
        };
        let Some(next_seq) = cursor.rtp_next() else {
            return;
        };
        let member = NewMember {
            destinations,
            sent,
            next_seq,
        };
        cursor.join_fanout(member, ring);
    }

    /// A raw TS listener on plain TCP that has written everything and finds nothing waiting
    /// in the ring hands its writing to the point's TCP fan-out (`points::tcp_fanout`).
    pub fn hand_over_to_tcp_fanout(&mut self) {
        let Some(socket) = self.plain_socket else {
            return;
        };
        if !self.out.is_empty()
            || self.framed.is_active()
            || self.close_requested
            || self.publisher.is_some()
            || !crate::points::tcp_fanout::enabled()
        {
            return;
        }
        let Some(Media::Live(cursor)) = &mut self.media else {
            return;
        };
        if !cursor.may_join_tcp_fanout() {
            return;
        }
        if let Some(step) = cursor.next_ready() {
            // Not caught up after all: this goes out first, the hand-over waits for the next
            // time the queue empties.
            return self.on_live_step(step);
        }
        let hold = super::HoldRule::ByOpenConnections(Arc::clone(&self.shared.gate));
        let sent = self.out.sent_counter();
        if let Some(Media::Live(cursor)) = &mut self.media {
            cursor.join_tcp_fanout(socket, sent, hold);
        }
    }

    /// Take the writing back from the TCP fan-out, before anything else may be written: the
    /// rest of a chunk it cut goes out first.
    pub fn take_back_from_tcp_fanout(&mut self) {
        if let Some(Media::Live(cursor)) = &mut self.media {
            if cursor.on_tcp_fanout() {
                let rest = cursor.leave_tcp_fanout();
                self.out.push(rest);
            }
        }
    }

    /// The session's transports changed: it sends its own chunks again until it hands over
    /// with the new set.
    pub fn transports_changed(&mut self) {
        if let Some(Media::Live(cursor)) = &mut self.media {
            cursor.leave_fanout();
        }
    }

    /// The live ring gave something.
    pub fn on_live_step(&mut self, step: LiveStep) {
        match step {
            LiveStep::Data(live) => match &mut self.join_pacer {
                Some(pacer) => pacer.push(live),
                None => {
                    self.deliver_live(std::iter::once(live));
                    self.hand_over_to_fanout();
                }
            },
            LiveStep::Rest(rest) => self.out.push(rest),
            LiveStep::End(reason, message) => {
                // A reload that removed the point also ends its stream; say so, the way
                // every other reconfigured session ends.
                self.recheck();
                if !self.close_requested {
                    self.end_media(reason, message);
                }
            }
        }
    }

    /// A block of the on-demand range was read (`None`: the range is complete).
    pub fn on_file_block(&mut self, block: std::io::Result<Option<Bytes>>) {
        match block {
            Ok(Some(block)) if self.framed.is_active() => {
                self.note_first_media();
                self.framed.push(FramedChunk::of_file(block))
            }
            Ok(Some(block)) => {
                self.note_first_media();
                self.out.push(block)
            }
            Ok(None) => self.end_media(EndReason::COMPLETE, "range sent".into()),
            Err(error) => {
                let path = match &self.media {
                    Some(Media::File(cursor)) => cursor.path.display().to_string(),
                    _ => String::new(),
                };
                warn!(event = events::FILE_READ_FAILED, %path, %error, "reading on-demand file failed");
                self.end_media(EndReason::SOURCE_ERROR, error.to_string());
            }
        }
    }

    /// The peer closed its side: nothing more can arrive. Unless media is still flowing out
    /// to a client that only half-closed, finish once queued output is sent.
    pub fn on_peer_closed(&mut self) {
        if self.media.is_none() {
            self.close_requested = true;
        }
    }

    /// RTCP sender reports on every transport, stamped with the stream's current time.
    pub fn send_reports(&mut self, now: Instant) {
        let rtp_time = match &self.media {
            Some(Media::Live(cursor)) => cursor.stream.rtp_start().timestamp,
            Some(Media::Paced(paced)) => paced.timestamp_at(paced.pacer.position(now.into_std())),
            _ => return,
        };
        self.transports.send_reports(rtp_time, &mut self.out, now);
    }

    /// Whether the loop should wait for live media now: only while the queue has room.
    pub fn wants_live(&self) -> bool {
        self.out.has_room()
            && matches!(self.media, Some(Media::Live(_)))
            && self.join_pacer.as_ref().map_or(true, JoinPacer::has_room)
    }

    /// Whether a UDP joiner's catch-up may send, or paced file media is due and the queue has
    /// room for it.
    pub fn pace_due(&self, now: Instant) -> bool {
        let join_due = self
            .join_pacer
            .as_ref()
            .and_then(|pacer| pacer.next_due(now))
            .is_some_and(|due| due <= now);
        join_due
            || matches!(&self.media, Some(Media::Paced(paced)) if paced.is_due(now))
                && self.out.has_room()
    }

    /// When a UDP joiner's catch-up or paced file media becomes due.
    pub fn pace_wake(&self) -> Option<Instant> {
        let join = self
            .join_pacer
            .as_ref()
            .and_then(|pacer| pacer.next_due(Instant::now()));
        let file = match &self.media {
            Some(Media::Paced(paced)) => paced.wake_at(),
            _ => None,
        };
        join.into_iter().chain(file).min()
    }

    /// Whether this connection feeds a point (an encoder publishing to it).
    pub fn is_publishing(&self) -> bool {
        self.publisher.is_some()
    }

    /// Whether this connection's encoder runs well ahead of real time (it pushes faster, and
    /// is or soon will be held back).
    pub fn is_paced(&self, now: Instant) -> bool {
        self.publisher
            .as_ref()
            .is_some_and(|publisher| publisher.is_paced(now))
    }

    /// The plugin starts taking in a read: what it pushes until [`Connection::read_taken_in`]
    /// is one burst, cut into full chunks however small the pieces (an HTTP chunked body
    /// often brings one frame per piece).
    pub fn taking_in_read(&mut self) {
        self.reading = true;
    }

    /// The read is taken in: the point gets the last, incomplete chunk of the burst.
    pub fn read_taken_in(&mut self) {
        self.reading = false;
        if let Some(publisher) = &self.publisher {
            publisher.flush(self.info.id);
        }
    }

    /// When a publishing encoder counts as silent.
    pub fn source_deadline(&self) -> Option<Instant> {
        self.publisher.as_ref().map(Publisher::source_deadline)
    }

    /// While a publishing encoder runs too far ahead of real time: when reading may resume.
    pub fn ingest_paused_until(&self, now: Instant) -> Option<Instant> {
        self.publisher.as_ref()?.paused_until(now)
    }

    /// Why the publishing encoder is lost if its source deadline passed.
    pub fn silence(&self) -> Silence {
        self.publisher
            .as_ref()
            .map_or(Silence::NoData(Duration::ZERO), Publisher::silence)
    }

    /// Pace a UDP joiner's catch-up (send what its bucket allows) or an on-demand file (send
    /// what is due, or note when the next data is due).
    pub fn pace(&mut self) {
        if let Some(pacer) = &mut self.join_pacer {
            let now = Instant::now();
            let mut due = Vec::new();
            while let Some(live) = pacer.take(now) {
                due.push(live);
            }
            let caught_up = pacer.caught_up();
            for live in due {
                self.send_live_rtp(&live);
            }
            if caught_up {
                self.join_pacer = None;
                self.hand_over_to_fanout();
            }
            return;
        }
        for _ in 0..PACED_SENDS_PER_TURN {
            let Some(Media::Paced(paced)) = &mut self.media else {
                return;
            };
            match paced.pacer.next(std::time::Instant::now()) {
                Ok(PacerStep::Send {
                    data, media_time, ..
                }) => {
                    let timestamp = paced.timestamp_at(media_time);
                    let batch = paced.packetizer.packetize(&data, timestamp);
                    paced.due = None;
                    self.deliver_rtp(&batch);
                }
                Ok(PacerStep::Wait(at)) => {
                    paced.due = Some(Instant::from_std(at));
                    return;
                }
                Ok(PacerStep::Paused) => {
                    paced.due = None;
                    return;
                }
                Ok(PacerStep::End) => return self.end_paced_file(),
                Err(error) => {
                    warn!(event = events::FILE_READ_FAILED, %error, "reading on-demand file failed");
                    return self.end_media(EndReason::SOURCE_ERROR, error.to_string());
                }
            }
        }
    }

    fn deliver_rtp(&mut self, batch: &RtpBatch) {
        self.transports.send_rtp(batch, &mut self.out);
    }

    /// RTP has no end of stream of its own; players end on an RTCP BYE.
    fn end_paced_file(&mut self) {
        self.send_reports(Instant::now());
        self.transports.send_bye(&mut self.out);
        self.end_media(EndReason::COMPLETE, "file sent".into());
    }
}

/// The point name of a request path (`point` or `point/item`).
pub fn point_of(path: &str) -> &str {
    path.split_once('/').map_or(path, |(point, _)| point)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_point_of_a_path_is_its_first_segment() {
        assert_eq!(point_of("live"), "live");
        assert_eq!(point_of("films/a.ts"), "films");
    }

    #[test]
    fn the_earliest_timer_fires_first() {
        let now = Instant::now();
        let mut timers = Timers::default();
        assert_eq!(timers.next(), None);
        timers.set(1, now + Duration::from_secs(5));
        timers.set(2, now + Duration::from_secs(1));
        assert_eq!(timers.next(), Some((2, now + Duration::from_secs(1))));
        timers.cancel(2);
        assert_eq!(timers.next(), Some((1, now + Duration::from_secs(5))));
        timers.set(1, now + Duration::from_secs(9));
        assert_eq!(
            timers.next(),
            Some((1, now + Duration::from_secs(9))),
            "re-arming replaces"
        );
    }
}

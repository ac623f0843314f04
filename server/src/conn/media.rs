//! What a connection is playing: its media cursor over a live point's ring, an on-demand
//! file's byte range, or a file paced in real time onto RTP transports.
//!
//! The cursors hold the position and make the per-event decisions (wait for a keyframe, skip
//! a lagging client ahead or drop it, how much of the range is left); the IO loop does the
//! receiving and reading.

use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ferrocast_plugin_api::EndReason;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::sync::broadcast::Receiver;
use tokio::time::Instant;
use tracing::{warn, Span};

use super::output::{LagVerdict, LagWindow};
use super::zero_copy::FileSpan;
use crate::events;
use crate::media::pacer::FilePacer;
use crate::media::rtp::{RtpBatch, RtpPacketizer};
use crate::points::tcp_fanout::{Handback, Listening, NewListener};
use crate::points::{JoinSnapshot, LiveChunk, LiveEvent, LiveStream};
use crate::udp::fanout::{FanoutEnd, Membership, NewMember};

/// Size of one read from an on-demand file.
const FILE_BLOCK: usize = 64 * 1024;

/// What the session plays.
pub enum Media {
    /// A live point, as raw TS on the connection or as the point's shared RTP packets on the
    /// session's transports (`LiveCursor::rtp`).
    Live(LiveCursor),
    /// A byte range of a file on the connection, as fast as the client takes it.
    File(FileCursor),
    /// A file on the session's transports, in real time.
    Paced(Box<PacedFile>),
}

impl Media {
    /// The live point this media reads from, if any.
    pub fn live_stream(&self) -> Option<&Arc<LiveStream>> {
        match self {
            Media::Live(cursor) => Some(&cursor.stream),
            _ => None,
        }
    }
}

/// What the live ring gave a client.
#[derive(Debug)]
pub enum LiveStep {
    Data(Arc<LiveChunk>),
    /// The rest of a chunk the TCP fan-out's last write to the client was cut in: it goes
    /// out before anything else.
    Rest(Bytes),
    End(EndReason, String),
}

/// Reads through a live point's ring, skipping ahead to a keyframe when the client lags.
pub struct LiveCursor {
    pub stream: Arc<LiveStream>,
    /// Sent as RTP on transports, rather than raw TS on the connection.
    pub rtp: bool,
    /// The client's subscription to the ring; with the TCP fan-out while it writes for the
    /// client.
    rx: Option<Receiver<LiveEvent>>,
    waiting_for_keyframe: bool,
    lags: LagWindow,
    /// The connection's span: the cursor logs while the IO loop waits, outside it.
    span: Span,
    /// The RTP sequence number after the last chunk the session sent itself.
    rtp_next: Option<u16>,
    /// The point's UDP fan-out sends for the session; the ring is left alone meanwhile.
    fanout: Option<Membership>,
    /// The point's TCP fan-out writes for the client; the ring is left alone meanwhile.
    tcp: Option<Listening>,
    /// The index of the next chunk the client needs ([`LiveChunk::index`]).
    next_index: u64,
    /// Back from the TCP fan-out: the subscription may still hold chunks the fan-out wrote
    /// (if the fan-out lost step with it; they are skipped by index) and report a lag that is
    /// not the client's.
    resuming: bool,
}

impl LiveCursor {
    /// A cursor that starts after the join's backlog (which the caller sends first).
    pub fn new(stream: Arc<LiveStream>, join: JoinSnapshot, rtp: bool, span: Span) -> Self {
        Self {
            stream,
            rtp,
            rx: Some(join.rx),
            waiting_for_keyframe: !join.at_keyframe,
            lags: LagWindow::default(),
            span,
            rtp_next: None,
            fanout: None,
            tcp: None,
            next_index: join.next_index,
            resuming: false,
        }
    }

    /// The session sent `batch` itself.
    pub fn sent_rtp(&mut self, batch: &RtpBatch) {
        if !batch.is_empty() {
            self.rtp_next = Some(crate::udp::fanout::seq_after(batch));
        }
    }

    /// The RTP sequence number the session needs next, once it sent something.
    pub fn rtp_next(&self) -> Option<u16> {
        self.rtp_next
    }

    /// Whether the point's UDP fan-out sends for the session.
    pub fn on_fanout(&self) -> bool {
        self.fanout.is_some()
    }

    /// A subscription to the ring from now on, for a fan-out the hand-over may start.
    pub fn resubscribe(&self) -> Receiver<LiveEvent> {
        match &self.rx {
            Some(rx) => rx.resubscribe(),
            None => self.stream.join().rx,
        }
    }

    /// Hand the sending to the point's UDP fan-out (`ring`: see
    /// [`crate::udp::fanout::PointFanout::join`]).
    pub fn join_fanout(&mut self, member: NewMember, ring: Receiver<LiveEvent>) {
        let fanout = Arc::clone(&self.stream.udp_fanout);
        self.fanout = Some(fanout.join(&self.stream.name, member, ring));
        // The session's own subscription is not read while the fan-out sends (it takes a new
        // one when it leaves): kept unread, it would hold the ring's chunks alive.
        self.rx = None;
    }

    /// Take the sending back from the fan-out (the transports changed): the ring goes on
    /// from now.
    pub fn leave_fanout(&mut self) {
        if self.fanout.take().is_some() {
            self.rx = Some(self.resubscribe());
        }
    }

    /// Whether the client may hand its writing to the point's TCP fan-out: it takes raw TS,
    /// is not on the fan-out already, and is not waiting for a keyframe.
    pub fn may_join_tcp_fanout(&self) -> bool {
        !self.rtp && self.rx.is_some() && self.tcp.is_none() && !self.waiting_for_keyframe
    }

    /// Whether the point's TCP fan-out writes for the client.
    pub fn on_tcp_fanout(&self) -> bool {
        self.tcp.is_some()
    }

    /// Hand the writing to the point's TCP fan-out, from the next chunk on. The caller
    /// makes sure everything before it was written and nothing waits in the ring.
    pub fn join_tcp_fanout(
        &mut self,
        socket: std::os::fd::RawFd,
        sent: crate::state::SentBytes,
        hold: super::HoldRule,
    ) {
        let Some(ring) = self.rx.take() else {
            return;
        };
        let listener = NewListener {
            socket,
            sent,
            next_index: self.next_index,
            hold,
            ring,
        };
        let fanout = Arc::clone(self.stream.tcp_fanouts.next_lane());
        self.tcp = Some(fanout.join(&self.stream.name, listener));
    }

    /// Take the writing back from the TCP fan-out: the rest of a chunk it cut, to be written
    /// before anything else (empty if none).
    pub fn leave_tcp_fanout(&mut self) -> Bytes {
        match self.tcp.take().and_then(Listening::leave) {
            Some(returned) => self.take_back(returned),
            None => Bytes::new(),
        }
    }

    /// The fan-out gave the client back: go on from the chunk it needs next, with its
    /// subscription (a new one if the fan-out lost it, which the index then treats as a gap).
    fn take_back(&mut self, back: Handback) -> Bytes {
        self.rx = Some(back.ring.unwrap_or_else(|| self.stream.join().rx));
        self.next_index = back.returned.next_index;
        self.resuming = true;
        back.returned.rest
    }

    /// The next chunk to send, or the end of the stream.
    pub async fn next(&mut self) -> LiveStep {
        if let Some(fanout) = &mut self.fanout {
            return fanout_ended(fanout.ended().await);
        }
        if let Some(listening) = &mut self.tcp {
            let returned = listening.returned().await;
            self.tcp = None;
            let rest = self.take_back(returned);
            if !rest.is_empty() {
                return LiveStep::Rest(rest);
            }
        }
        loop {
            let Some(rx) = &mut self.rx else {
                return std::future::pending().await;
            };
            let received = rx.recv().await;
            if let Some(step) = self.on_event(received, Instant::now()) {
                return step;
            }
        }
    }

    /// The next chunk or end already waiting in the ring, without waiting; `None` when there
    /// is none yet.
    pub fn next_ready(&mut self) -> Option<LiveStep> {
        if let Some(fanout) = &mut self.fanout {
            return fanout.try_ended().map(fanout_ended);
        }
        if let Some(listening) = &mut self.tcp {
            let returned = listening.try_returned()?;
            self.tcp = None;
            let rest = self.take_back(returned);
            if !rest.is_empty() {
                return Some(LiveStep::Rest(rest));
            }
        }
        loop {
            let received = match self.rx.as_mut()?.try_recv() {
                Err(TryRecvError::Empty) => return None,
                Ok(event) => Ok(event),
                Err(TryRecvError::Lagged(skipped)) => Err(RecvError::Lagged(skipped)),
                Err(TryRecvError::Closed) => Err(RecvError::Closed),
            };
            if let Some(step) = self.on_event(received, Instant::now()) {
                return Some(step);
            }
        }
    }

    /// Decide what one event from the ring means for this client at `now`; `None` means
    /// nothing to send yet.
    pub fn on_event(
        &mut self,
        received: Result<LiveEvent, RecvError>,
        now: Instant,
    ) -> Option<LiveStep> {
        match received {
            Ok(LiveEvent::Media(live)) => {
                if self.resuming {
                    if live.index < self.next_index {
                        return None;
                    }
                    self.resuming = false;
                    if live.index > self.next_index {
                        // The ring moved on past what the fan-out wrote.
                        let skipped = live.index - self.next_index;
                        if let Some(end) = self.on_lag(skipped, now) {
                            return Some(end);
                        }
                    }
                }
                self.next_index = live.index + 1;
                if live.chunk.random_access {
                    self.waiting_for_keyframe = false;
                }
                // Keep-alives reach a client waiting for a keyframe too: during a grace or a
                // publisher's stall they are all it gets.
                (!self.waiting_for_keyframe || live.is_keepalive()).then_some(LiveStep::Data(live))
            }
            // A raw TS client restarts at the new stream's first keyframe. An RTP client takes
            // every packet: its sequence numbers are the point's, so skipping the new stream's
            // first chunks would show up as loss.
            Ok(LiveEvent::SourceRestarted) => {
                self.waiting_for_keyframe = !self.rtp;
                None
            }
            Ok(LiveEvent::Ended) => Some(LiveStep::End(
                EndReason::SOURCE_ENDED,
                "the encoder did not come back".into(),
            )),
            // A ring left unread while the fan-out wrote: where the client stands is decided
            // by the next chunk's index.
            Err(RecvError::Lagged(_)) if self.resuming => None,
            Err(RecvError::Lagged(skipped)) => self.on_lag(skipped, now),
            Err(RecvError::Closed) => Some(LiveStep::End(
                EndReason::POINT_CLOSED,
                "point closed".into(),
            )),
        }
    }
}

impl LiveCursor {
    /// The client fell off the ring, `skipped` chunks behind.
    fn on_lag(&mut self, skipped: u64, now: Instant) -> Option<LiveStep> {
        let point = &self.stream.name;
        match self.lags.on_lag(now) {
            LagVerdict::Drop { lags } => {
                crate::metrics::slow_client(point, true);
                warn!(parent: &self.span, event = events::CLIENT_LAGGING, %point, lags, "client keeps falling behind; disconnecting it");
                Some(LiveStep::End(
                    EndReason::CLIENT_TOO_SLOW,
                    "client too slow for the stream".into(),
                ))
            }
            LagVerdict::SkipToKeyframe => {
                crate::metrics::slow_client(point, false);
                warn!(parent: &self.span, event = events::CLIENT_LAGGING, %point, skipped_chunks = skipped, "client fell behind; skipping it ahead to the next keyframe");
                self.waiting_for_keyframe = true;
                None
            }
        }
    }
}

fn fanout_ended(end: FanoutEnd) -> LiveStep {
    LiveStep::End(end.reason, end.message)
}

/// Streams a byte range of an on-demand file: read block by block into the output queue, or
/// handed to the kernel with `sendfile` (see `zero_copy`) when the socket is plain TCP.
pub struct FileCursor {
    pub path: PathBuf,
    file: Option<tokio::fs::File>,
    /// Where the next byte of the range is.
    position: u64,
    /// Where the open file's own read position is (`sendfile` sends from an explicit offset
    /// and leaves it alone).
    read_position: u64,
    end: u64,
}

impl FileCursor {
    pub fn new(path: PathBuf, start: u64, end: u64) -> Self {
        Self {
            path,
            file: None,
            position: start,
            read_position: 0,
            end,
        }
    }

    /// How much to read next; `None` once the range is sent in full.
    pub fn next_read(&self) -> Option<usize> {
        (self.position < self.end)
            .then(|| (self.end - self.position).min(FILE_BLOCK as u64) as usize)
    }

    /// Whether the range has been sent in full.
    pub fn is_done(&self) -> bool {
        self.position >= self.end
    }

    /// Open the file if it is not open yet.
    pub async fn open(&mut self) -> std::io::Result<()> {
        if self.file.is_none() {
            self.file = Some(tokio::fs::File::open(&self.path).await?);
        }
        Ok(())
    }

    /// The rest of the range, for `sendfile`; `None` until the file is open or once the range
    /// is sent.
    pub fn rest(&self) -> Option<FileSpan> {
        let file = self.file.as_ref()?;
        (!self.is_done()).then(|| FileSpan {
            fd: file.as_raw_fd(),
            offset: self.position,
            len: usize::try_from(self.end - self.position).unwrap_or(usize::MAX),
        })
    }

    /// The kernel sent `n` bytes of the range from the file; `n == 0` short of the range's
    /// end means the file is shorter than it was.
    pub fn on_sent(&mut self, n: usize) -> std::io::Result<()> {
        if n == 0 && !self.is_done() {
            return Err(self.ended_early());
        }
        self.position += n as u64;
        Ok(())
    }

    /// The next block of the range, or `None` when it has been sent in full.
    pub async fn read_block(&mut self) -> std::io::Result<Option<Bytes>> {
        let Some(want) = self.next_read() else {
            return Ok(None);
        };
        self.open().await?;
        let file = self.file.as_mut().expect("opened above");
        if self.read_position != self.position {
            file.seek(std::io::SeekFrom::Start(self.position)).await?;
            self.read_position = self.position;
        }
        let mut block = vec![0u8; want];
        let n = file.read(&mut block).await?;
        if n == 0 {
            return Err(self.ended_early());
        }
        block.truncate(n);
        self.position += n as u64;
        self.read_position = self.position;
        Ok(Some(Bytes::from(block)))
    }

    fn ended_early(&self) -> std::io::Error {
        std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            format!("{} ended early; was it truncated?", self.path.display()),
        )
    }
}

/// An on-demand file sent over RTP transports, paced in real time by its PCR.
pub struct PacedFile {
    pub pacer: FilePacer,
    pub packetizer: RtpPacketizer,
    /// RTP timestamp of media time zero: timestamps follow the media position, so they run on
    /// across pause and resume.
    pub timestamp_base: u32,
    /// When the pacer said the next data is due.
    pub due: Option<Instant>,
}

impl PacedFile {
    pub fn timestamp_at(&self, media_time: Duration) -> u32 {
        let ticks = media_time.as_micros() * 9 / 100;
        self.timestamp_base.wrapping_add(ticks as u32)
    }

    /// When the IO loop must wake to send more; `None` while paused.
    pub fn wake_at(&self) -> Option<Instant> {
        self.pacer.is_playing().then_some(self.due).flatten()
    }

    /// Whether data is due now (playing, and its time has come or is not known yet).
    pub fn is_due(&self, now: Instant) -> bool {
        self.pacer.is_playing() && self.due.map_or(true, |at| at <= now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::ingest::Chunk;

    fn stream() -> Arc<LiveStream> {
        LiveStream::for_tests("live", Duration::from_secs(5), Duration::from_secs(5))
    }

    fn cursor(rtp: bool) -> LiveCursor {
        let stream = stream();
        let join = stream.join();
        LiveCursor::new(stream, join, rtp, Span::none())
    }

    fn chunk(keyframe: bool) -> Result<LiveEvent, RecvError> {
        let data = Bytes::from(vec![0x47u8; 188]);
        let rtp = RtpPacketizer::new(1, 1).packetize(&data, 0);
        Ok(LiveEvent::Media(Arc::new(LiveChunk {
            chunk: Chunk {
                data,
                random_access: keyframe,
                pcr_90k: None,
            },
            rtp,
            index: 0,
        })))
    }

    fn sends(step: Option<LiveStep>) -> bool {
        matches!(step, Some(LiveStep::Data(_)))
    }

    #[test]
    fn a_client_joining_without_a_gop_waits_for_the_first_keyframe() {
        let mut live = cursor(false);
        let now = Instant::now();
        assert!(!sends(live.on_event(chunk(false), now)));
        assert!(sends(live.on_event(chunk(true), now)));
        assert!(sends(live.on_event(chunk(false), now)));
    }

    #[test]
    fn a_client_waiting_for_a_keyframe_still_gets_keepalives() {
        let mut live = cursor(false);
        let data = Bytes::copy_from_slice(&crate::media::ts::null_packet());
        let rtp = RtpPacketizer::new(1, 1).packetize(&data, 0);
        let keepalive = LiveEvent::Media(Arc::new(LiveChunk {
            chunk: Chunk {
                data,
                random_access: false,
                pcr_90k: None,
            },
            rtp,
            index: 0,
        }));
        let now = Instant::now();
        assert!(sends(live.on_event(Ok(keepalive), now)));
        assert!(!sends(live.on_event(chunk(false), now)), "still waiting");
    }

    #[test]
    fn a_lagging_client_skips_to_the_next_keyframe() {
        let mut live = cursor(false);
        let now = Instant::now();
        live.on_event(chunk(true), now);
        assert!(live.on_event(Err(RecvError::Lagged(3)), now).is_none());
        assert!(!sends(live.on_event(chunk(false), now)));
        assert!(sends(live.on_event(chunk(true), now)));
    }

    #[test]
    fn a_client_that_keeps_lagging_ends_as_too_slow() {
        let mut live = cursor(false);
        let now = Instant::now();
        for _ in 0..4 {
            assert!(live.on_event(Err(RecvError::Lagged(1)), now).is_none());
        }
        match live.on_event(Err(RecvError::Lagged(1)), now) {
            Some(LiveStep::End(reason, _)) => assert_eq!(reason, EndReason::CLIENT_TOO_SLOW),
            other => panic!("expected the end, got {other:?}"),
        }
    }

    #[test]
    fn after_a_source_change_raw_ts_waits_for_a_keyframe_but_rtp_takes_every_packet() {
        let now = Instant::now();
        let mut raw = cursor(false);
        let mut rtp = cursor(true);
        for live in [&mut raw, &mut rtp] {
            live.on_event(chunk(true), now);
            live.on_event(Ok(LiveEvent::SourceRestarted), now);
        }
        assert!(!sends(raw.on_event(chunk(false), now)));
        assert!(sends(rtp.on_event(chunk(false), now)));
    }

    #[test]
    fn the_end_of_the_source_and_a_closed_point_end_the_stream_with_their_reasons() {
        let now = Instant::now();
        let ended = cursor(false).on_event(Ok(LiveEvent::Ended), now);
        assert!(matches!(
            ended,
            Some(LiveStep::End(EndReason::SOURCE_ENDED, _))
        ));
        let closed = cursor(false).on_event(Err(RecvError::Closed), now);
        assert!(matches!(
            closed,
            Some(LiveStep::End(EndReason::POINT_CLOSED, _))
        ));
    }

    #[test]
    fn a_file_range_is_read_in_blocks_until_its_end() {
        let mut cursor = FileCursor::new("f.ts".into(), 10, 10 + FILE_BLOCK as u64 + 5);
        assert_eq!(cursor.next_read(), Some(FILE_BLOCK));
        cursor.position += FILE_BLOCK as u64;
        assert_eq!(cursor.next_read(), Some(5));
        cursor.position += 5;
        assert_eq!(cursor.next_read(), None);
    }

    #[tokio::test]
    async fn a_range_sent_partly_by_the_kernel_then_read_continues_where_it_left_off() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        let content: Vec<u8> = (0..200_000u32).map(|i| (i % 253) as u8).collect();
        std::io::Write::write_all(&mut file, &content).unwrap();
        let mut cursor = FileCursor::new(file.path().into(), 100, 150_000);
        assert!(cursor.rest().is_none(), "not open yet");
        cursor.open().await.unwrap();
        let span = cursor.rest().unwrap();
        assert_eq!((span.offset, span.len), (100, 149_900));
        cursor.on_sent(1_000).unwrap();
        let block = cursor.read_block().await.unwrap().unwrap();
        assert_eq!(&block[..], &content[1_100..1_100 + FILE_BLOCK]);
        cursor.on_sent(10).unwrap();
        let block = cursor.read_block().await.unwrap().unwrap();
        let from = 1_110 + FILE_BLOCK;
        assert_eq!(&block[..], &content[from..from + FILE_BLOCK]);
    }

    #[test]
    fn nothing_sent_short_of_the_end_means_the_file_shrank() {
        let mut cursor = FileCursor::new("f.ts".into(), 0, 10);
        assert!(cursor.on_sent(0).is_err());
        cursor.on_sent(10).unwrap();
        assert!(cursor.is_done());
        assert!(cursor.on_sent(0).is_ok());
    }

    /// The fan-out giving `live` back at `next_index`, with `rest` of a cut chunk.
    fn back(live: &LiveCursor, next_index: u64, rest: &'static [u8]) -> Handback {
        Handback {
            returned: crate::points::tcp_fanout::Returned {
                next_index,
                rest: Bytes::from_static(rest),
            },
            ring: Some(live.resubscribe()),
        }
    }

    fn indexed(index: u64, keyframe: bool) -> Result<LiveEvent, RecvError> {
        let Ok(LiveEvent::Media(live)) = chunk(keyframe) else {
            unreachable!()
        };
        let live = Arc::into_inner(live).unwrap();
        Ok(LiveEvent::Media(Arc::new(LiveChunk { index, ..live })))
    }

    #[test]
    fn back_from_the_tcp_fanout_a_client_skips_what_it_wrote_and_is_not_blamed_for_the_rings_lag() {
        let mut live = cursor(false);
        let now = Instant::now();
        assert!(sends(live.on_event(indexed(0, true), now)));
        let rest = live.take_back(back(&live, 5, b"tail"));
        assert_eq!(&rest[..], b"tail");
        assert_eq!(
            live.on_event(Err(RecvError::Lagged(900)), now).map(|_| ()),
            None
        );
        assert!(
            !sends(live.on_event(indexed(3, false), now)),
            "the fan-out wrote it"
        );
        assert!(
            !sends(live.on_event(indexed(4, false), now)),
            "the fan-out wrote it"
        );
        assert!(
            sends(live.on_event(indexed(5, false), now)),
            "the next one it needs"
        );
        assert!(
            sends(live.on_event(indexed(6, false), now)),
            "the ring's lag report did not skip it to a keyframe"
        );
    }

    #[test]
    fn back_from_the_tcp_fanout_past_a_gap_a_client_skips_to_the_next_keyframe() {
        let mut live = cursor(false);
        let now = Instant::now();
        assert!(sends(live.on_event(indexed(0, true), now)));
        live.take_back(back(&live, 5, b""));
        assert!(
            !sends(live.on_event(indexed(7, false), now)),
            "5 and 6 are gone"
        );
        assert!(!sends(live.on_event(indexed(8, false), now)));
        assert!(
            sends(live.on_event(indexed(9, true), now)),
            "a keyframe starts it again"
        );
        assert!(sends(live.on_event(indexed(10, false), now)));
        assert_eq!(live.next_index, 11);
    }

    #[test]
    fn a_client_may_hand_over_only_as_raw_ts_and_not_while_waiting_for_a_keyframe() {
        let mut live = cursor(false);
        assert!(!live.may_join_tcp_fanout(), "no keyframe yet");
        assert!(sends(live.on_event(indexed(0, true), Instant::now())));
        assert!(live.may_join_tcp_fanout());
        assert_eq!(live.next_index, 1);
        assert!(
            !cursor(true).may_join_tcp_fanout(),
            "RTP goes to transports"
        );
    }
}

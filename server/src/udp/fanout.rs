//! The RTP/UDP fan-out of a live point. A UDP session catches up on its own (its join backlog
//! paced by `points::join_pace`); once it sends live chunks as they come, it hands its
//! destinations to the point's fan-out: one task per point that takes each chunk from the
//! ring once, groups its packets into GSO messages once, and sends them to every destination
//! (each from the session's own socket, so its server port stays what SETUP answered and a
//! full socket buffer drops only its own packets). So a chunk costs one task wake-up for the
//! point instead of one per session. The session's connection task keeps its RTSP, RTCP
//! and timers; the fan-out tells it when the stream ends.
//!
//! The hand-over is gapless: the session says which RTP sequence number it needs next, and the
//! fan-out either is there, or sends the chunks it already sent from its short history, or
//! skips the session until it reaches that number.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use ferrocast_plugin_api::EndReason;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::sync::{broadcast, oneshot};
use tracing::{info, warn};

use super::{send_prepared, Peer, PreparedPackets, GSO};
use crate::events;
use crate::media::rtp::RtpBatch;
use crate::points::{LiveChunk, LiveEvent};
use crate::state::SentBytes;
use crate::transport::UdpDestination;
use crate::waits::Told;

/// Chunks the fan-out remembers having sent, for a session that hands over behind it.
const HISTORY: usize = 64;

/// The environment variable that turns the fan-out off (`off`, `0`, `false` or `no`): every
/// UDP session then sends each chunk from its own task, as a way to compare the two or to rule
/// the fan-out out when diagnosing.
pub const FANOUT_VARIABLE: &str = "FERROCAST_UDP_FANOUT";

/// Whether caught-up UDP sessions hand their sending to the point's fan-out.
pub fn enabled() -> bool {
    static ENABLED: OnceLock<bool> = OnceLock::new();
    crate::switches::on_unless_switched_off(
        &ENABLED,
        FANOUT_VARIABLE,
        "point-wide RTP/UDP fan-out turned off; every UDP session sends its own chunks",
    )
}

/// Whether RTP sequence number `a` comes before `b` (within half the sequence space).
pub fn seq_before(a: u16, b: u16) -> bool {
    (a.wrapping_sub(b) as i16) < 0
}

/// The sequence number after a batch's last packet.
pub fn seq_after(batch: &RtpBatch) -> u16 {
    batch.first_seq().wrapping_add(batch.len() as u16)
}

/// Where a session handing over stands against the fan-out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handover {
    /// The fan-out's next chunk is the session's next: it joins as is.
    InStep,
    /// The fan-out already sent what the session needs next: the chunks of its history from
    /// this index on go to the session first.
    CatchUp(usize),
    /// The fan-out has not reached the session's next chunk: it skips the chunks before it.
    Behind,
}

/// Where a session needing `session_next` stands against a fan-out whose next chunk starts at
/// `fanout_next` (`None`: none sent yet) and whose history holds chunks starting at
/// `history` (oldest first).
pub fn hand_over(
    session_next: u16,
    fanout_next: Option<u16>,
    mut history: impl Iterator<Item = u16>,
) -> Handover {
    let Some(fanout_next) = fanout_next else {
        return Handover::Behind;
    };
    if session_next == fanout_next {
        return Handover::InStep;
    }
    if seq_before(fanout_next, session_next) {
        return Handover::Behind;
    }
    // Further behind than the history reaches: from its oldest chunk, as after a loss.
    history
        .position(|first| !seq_before(first, session_next))
        .map_or(Handover::InStep, Handover::CatchUp)
}

/// Why the fan-out stopped sending to a session: its stream ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FanoutEnd {
    pub reason: EndReason,
    pub message: String,
}

/// A session handing over: where its RTP goes, its byte counter, and the RTP sequence number
/// it needs next.
pub struct NewMember {
    pub destinations: Vec<UdpDestination>,
    pub sent: SentBytes,
    pub next_seq: u16,
}

struct Member {
    id: u64,
    destinations: Vec<UdpDestination>,
    sent: SentBytes,
    /// The session's next sequence number, while the fan-out has not reached it.
    from: Option<u16>,
    end: Option<oneshot::Sender<FanoutEnd>>,
}

impl Member {
    /// Send chunks (with their packets grouped into messages, `prepared`) to every destination
    /// of the session, from the first it does not have yet, together.
    fn send(&mut self, chunks: &[Arc<LiveChunk>], prepared: &[PreparedPackets<'_>]) {
        let mut first = 0;
        if let Some(from) = self.from {
            let Some(at) = chunks
                .iter()
                .position(|live| !seq_before(live.rtp.first_seq(), from))
            else {
                return;
            };
            first = at;
            self.from = None;
        }
        let (chunks, prepared) = (&chunks[first..], &prepared[first..]);
        for destination in &self.destinations {
            // As when a session sends itself: a full buffer drops, errors are the network's.
            let _ = send_prepared(&GSO, destination.socket.as_ref(), prepared, Peer::Connected);
            for live in chunks {
                destination.counts.add(&live.rtp);
            }
        }
        let bytes: u64 = chunks.iter().map(|live| live.rtp.data().len() as u64).sum();
        self.sent.add(bytes * self.destinations.len() as u64);
    }

    fn end(mut self, end: &FanoutEnd) {
        if let Some(tell) = self.end.take() {
            let _ = tell.send(end.clone());
        }
    }
}

#[derive(Default)]
struct Inner {
    members: Vec<Member>,
    /// A task holds a subscription to the point's ring and sends.
    running: bool,
    /// The sequence number after the last chunk sent.
    next_seq: Option<u16>,
    history: VecDeque<Arc<LiveChunk>>,
    next_id: u64,
}

/// The UDP fan-out of one live point.
#[derive(Default)]
pub struct PointFanout {
    inner: Mutex<Inner>,
}

impl PointFanout {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// How many ring subscriptions the fan-out holds (0 or 1): they are not clients.
    pub fn subscriptions(&self) -> usize {
        usize::from(self.lock().running)
    }

    /// How many sessions it sends to.
    pub fn members(&self) -> usize {
        self.lock().members.len()
    }

    /// Take over sending to a session. `ring` is a subscription taken before the session took
    /// the last chunks waiting in its own: it starts the fan-out's task if none runs.
    pub fn join(
        self: &Arc<Self>,
        point: &str,
        session: NewMember,
        ring: broadcast::Receiver<LiveEvent>,
    ) -> Membership {
        let (tell, end) = oneshot::channel();
        let mut inner = self.lock();
        if !inner.running {
            inner.running = true;
            inner.next_seq = None;
            inner.history.clear();
            info!(%point, "RTP/UDP fan-out started: the point's caught-up UDP sessions share one sender");
            tokio::spawn(run(Arc::clone(self), ring, point.to_owned()));
        }
        let id = inner.next_id;
        inner.next_id += 1;
        let mut member = Member {
            id,
            destinations: session.destinations,
            sent: session.sent,
            from: None,
            end: Some(tell),
        };
        let history = inner.history.iter().map(|live| live.rtp.first_seq());
        match hand_over(session.next_seq, inner.next_seq, history) {
            Handover::InStep => {}
            Handover::Behind => member.from = Some(session.next_seq),
            Handover::CatchUp(from) => {
                let missed: Vec<_> = inner.history.range(from..).cloned().collect();
                member.send(&missed, &prepare(&missed));
            }
        }
        inner.members.push(member);
        Membership {
            fanout: Arc::clone(self),
            id,
            end: Told::new(end),
        }
    }

    fn leave(&self, id: u64) {
        self.lock().members.retain(|member| member.id != id);
    }

    /// Send chunks that arrived together to every member, each grouped into messages once
    /// and all of a member's messages sent together.
    fn send_chunks(&self, chunks: &[Arc<LiveChunk>]) {
        let chunks: Vec<_> = chunks
            .iter()
            .filter(|live| !live.rtp.is_empty())
            .cloned()
            .collect();
        let Some(last) = chunks.last() else {
            return;
        };
        let prepared = prepare(&chunks);
        let mut inner = self.lock();
        for member in &mut inner.members {
            member.send(&chunks, &prepared);
        }
        inner.next_seq = Some(seq_after(&last.rtp));
        for live in chunks {
            if inner.history.len() == HISTORY {
                inner.history.pop_front();
            }
            inner.history.push_back(live);
        }
    }

    /// The stream ended: tell every member, and let go of them.
    fn end_all(&self, end: FanoutEnd) {
        let members = std::mem::take(&mut self.lock().members);
        for member in members {
            member.end(&end);
        }
    }

    /// Whether the task goes on: not once the ring closed or nobody is left (the next
    /// hand-over starts another).
    fn keep_running(&self, ring_closed: bool) -> bool {
        let mut inner = self.lock();
        if ring_closed || inner.members.is_empty() {
            inner.running = false;
            inner.history.clear();
            return false;
        }
        true
    }
}

/// Each chunk's packets grouped into messages.
fn prepare(chunks: &[Arc<LiveChunk>]) -> Vec<PreparedPackets<'_>> {
    chunks
        .iter()
        .map(|live| PreparedPackets::new(live.rtp.data(), live.rtp.ranges()))
        .collect()
}

/// The fan-out's task: each event of the point's ring once, for every member. The chunks of
/// one push arrive together; they go out to a member together too.
async fn run(fanout: Arc<PointFanout>, mut ring: broadcast::Receiver<LiveEvent>, point: String) {
    loop {
        let mut received = Some(ring.recv().await);
        if let Some(Ok(LiveEvent::Media(live))) = received {
            let mut chunks = vec![live];
            // What follows at once: more media, then perhaps another event (handled below).
            received = loop {
                match ring.try_recv() {
                    Ok(LiveEvent::Media(live)) => chunks.push(live),
                    Ok(event) => break Some(Ok(event)),
                    Err(TryRecvError::Empty) => break None,
                    Err(TryRecvError::Lagged(skipped)) => {
                        break Some(Err(RecvError::Lagged(skipped)))
                    }
                    Err(TryRecvError::Closed) => break Some(Err(RecvError::Closed)),
                }
            };
            fanout.send_chunks(&chunks);
        }
        let closed = match received {
            // Sent above, or nothing else came.
            None | Some(Ok(LiveEvent::Media(_))) => false,
            // RTP sessions take every packet across a source change: the sequence goes on.
            Some(Ok(LiveEvent::SourceRestarted)) => false,
            Some(Ok(LiveEvent::Ended)) => {
                fanout.end_all(FanoutEnd {
                    reason: EndReason::SOURCE_ENDED,
                    message: "the encoder did not come back".into(),
                });
                false
            }
            Some(Err(RecvError::Lagged(skipped))) => {
                warn!(event = events::UDP_FANOUT_LAGGING, %point, skipped_chunks = skipped, "the RTP/UDP fan-out fell behind the point; its sessions lost the skipped chunks");
                false
            }
            Some(Err(RecvError::Closed)) => {
                fanout.end_all(FanoutEnd {
                    reason: EndReason::POINT_CLOSED,
                    message: "point closed".into(),
                });
                true
            }
        };
        if !fanout.keep_running(closed) {
            return;
        }
    }
}

/// A session's place in its point's fan-out; dropping it ends the fan-out's sending to it.
pub struct Membership {
    fanout: Arc<PointFanout>,
    id: u64,
    end: Told<FanoutEnd>,
}

impl Membership {
    /// When the fan-out stops sending to the session because the stream ended; pending
    /// forever after it said so once.
    pub async fn ended(&mut self) -> FanoutEnd {
        self.end.recv(point_closed).await
    }

    /// The end of the stream, if the fan-out said so already.
    pub fn try_ended(&mut self) -> Option<FanoutEnd> {
        self.end.try_recv(point_closed)
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        self.fanout.leave(self.id);
    }
}

fn point_closed() -> FanoutEnd {
    FanoutEnd {
        reason: EndReason::POINT_CLOSED,
        message: "point closed".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::rtp::RtpPacketizer;
    use crate::media::test_support;
    use crate::transport::RtpCounts;
    use std::net::SocketAddr;
    use std::time::Duration;

    #[test]
    fn sequence_order_wraps() {
        assert!(seq_before(1, 2));
        assert!(!seq_before(2, 2));
        assert!(seq_before(65_535, 0), "0 follows 65535");
        assert!(!seq_before(0, 65_535));
    }

    #[test]
    fn a_session_where_the_fan_out_is_joins_in_step() {
        assert_eq!(
            hand_over(10, Some(10), [0, 5].into_iter()),
            Handover::InStep
        );
    }

    #[test]
    fn a_session_ahead_of_the_fan_out_waits_for_it() {
        assert_eq!(
            hand_over(20, Some(10), [0, 5].into_iter()),
            Handover::Behind
        );
        assert_eq!(hand_over(3, None, std::iter::empty()), Handover::Behind);
        assert_eq!(
            hand_over(2, Some(65_530), std::iter::empty()),
            Handover::Behind
        );
    }

    #[test]
    fn a_session_behind_the_fan_out_gets_the_chunks_it_missed_from_the_history() {
        // Chunks starting at 0, 5, 10 and 15 were sent; the fan-out is at 20.
        let history = || [0u16, 5, 10, 15].into_iter();
        assert_eq!(hand_over(10, Some(20), history()), Handover::CatchUp(2));
        assert_eq!(hand_over(15, Some(20), history()), Handover::CatchUp(3));
        // Across the wrap: chunks at 65530 and 2, the fan-out at 7.
        let wrapped = [65_530u16, 2].into_iter();
        assert_eq!(hand_over(65_530, Some(7), wrapped), Handover::CatchUp(0));
        // Behind the whole history: from its oldest chunk (the ones before are lost).
        let later = || [1000u16, 1005].into_iter();
        assert_eq!(hand_over(900, Some(1010), later()), Handover::CatchUp(0));
        assert_eq!(
            hand_over(900, Some(1010), std::iter::empty()),
            Handover::InStep
        );
    }

    /// A live chunk of `packets` RTP packets.
    fn live_chunk(packetizer: &mut RtpPacketizer, packets: usize) -> Arc<LiveChunk> {
        test_support::live_chunk(packetizer, 7 * packets)
    }

    struct Client {
        socket: std::net::UdpSocket,
    }

    impl Client {
        fn new() -> Self {
            let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            socket
                .set_read_timeout(Some(Duration::from_millis(300)))
                .unwrap();
            Self { socket }
        }

        fn addr(&self) -> SocketAddr {
            self.socket.local_addr().unwrap()
        }

        /// The sequence numbers of the RTP packets that arrived.
        fn sequences(&self) -> Vec<u16> {
            let mut buf = [0u8; 2048];
            let mut seen = Vec::new();
            while let Ok(n) = self.socket.recv(&mut buf) {
                assert!(n > 12);
                seen.push(u16::from_be_bytes([buf[2], buf[3]]));
            }
            seen
        }
    }

    async fn member(client: &Client, next_seq: u16) -> (NewMember, Arc<RtpCounts>, SentBytes) {
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        socket.connect(client.addr()).await.unwrap();
        let counts = Arc::new(RtpCounts::default());
        let sent = SentBytes::default();
        let member = NewMember {
            destinations: vec![UdpDestination {
                socket: Arc::new(socket),
                to: client.addr(),
                counts: Arc::clone(&counts),
            }],
            sent: sent.clone(),
            next_seq,
        };
        (member, counts, sent)
    }

    #[tokio::test]
    async fn sessions_on_the_fan_out_count_as_the_points_clients_and_its_subscription_does_not() {
        let stream = crate::points::LiveStream::for_tests(
            "live",
            Duration::from_secs(5),
            Duration::from_secs(5),
        );
        let client = Client::new();
        let (new_member, _, _) = member(&client, 0).await;
        // As a session hands over: the fan-out's subscription, and none of its own.
        let membership = stream.udp_fanout.join("live", new_member, stream.join().rx);
        assert_eq!(stream.udp_fanout.members(), 1);
        assert_eq!(stream.client_count(), 1);
        drop(membership);
        assert_eq!(stream.client_count(), 0);
    }

    /// Let the fan-out's task take what was sent into the ring.
    async fn settle() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    #[tokio::test]
    async fn members_get_each_chunk_from_their_next_sequence_number_on_and_are_counted() {
        let (ring, _keep) = broadcast::channel(16);
        let fanout = Arc::new(PointFanout::default());
        let mut packetizer = RtpPacketizer::new(7, 100);
        let first = live_chunk(&mut packetizer, 3); // 100..=102
        let second = live_chunk(&mut packetizer, 3); // 103..=105

        // One session sent `first` itself; the other needs it too: the fan-out has not
        // started, so both wait for what they need.
        let (a, b) = (Client::new(), Client::new());
        let (member_a, counts_a, sent_a) = member(&a, 103).await;
        let (member_b, _, _) = member(&b, 100).await;
        let _in_a = fanout.join("live", member_a, ring.subscribe());
        let _in_b = fanout.join("live", member_b, ring.subscribe());
        assert_eq!(fanout.subscriptions(), 1, "one task, one subscription");
        for live in [&first, &second] {
            ring.send(LiveEvent::Media(Arc::clone(live))).unwrap();
        }
        settle().await;
        assert_eq!(a.sequences(), vec![103, 104, 105]);
        assert_eq!(b.sequences(), vec![100, 101, 102, 103, 104, 105]);
        assert_eq!(counts_a.packets(), 3);
        assert_eq!(sent_a.get(), second.rtp.data().len() as u64);

        // A session that sent only `first` hands over now: it gets `second` from the history.
        let c = Client::new();
        let (member_c, _, _) = member(&c, 103).await;
        let _in_c = fanout.join("live", member_c, ring.subscribe());
        assert_eq!(c.sequences(), vec![103, 104, 105]);
        assert_eq!(fanout.members(), 3);
    }

    #[tokio::test]
    async fn members_that_leave_get_nothing_more_and_the_task_stops_when_none_are_left() {
        let (ring, _keep) = broadcast::channel(16);
        let fanout = Arc::new(PointFanout::default());
        let mut packetizer = RtpPacketizer::new(7, 0);
        let client = Client::new();
        let (new, _, _) = member(&client, 0).await;
        let membership = fanout.join("live", new, ring.subscribe());
        ring.send(LiveEvent::Media(live_chunk(&mut packetizer, 2)))
            .unwrap();
        settle().await;
        assert_eq!(client.sequences(), vec![0, 1]);
        drop(membership);
        assert_eq!(fanout.members(), 0);
        ring.send(LiveEvent::Media(live_chunk(&mut packetizer, 2)))
            .unwrap();
        settle().await;
        assert!(client.sequences().is_empty());
        assert_eq!(fanout.subscriptions(), 0, "the task let go of the ring");

        // The next hand-over starts another task, from the sequence it asks for.
        let (new, _, _) = member(&client, 4).await;
        let _again = fanout.join("live", new, ring.subscribe());
        ring.send(LiveEvent::Media(live_chunk(&mut packetizer, 2)))
            .unwrap();
        settle().await;
        assert_eq!(client.sequences(), vec![4, 5]);
    }

    #[tokio::test]
    async fn the_end_of_the_stream_reaches_every_member() {
        let (ring, _keep) = broadcast::channel(16);
        let fanout = Arc::new(PointFanout::default());
        let client = Client::new();
        let (new, _, _) = member(&client, 0).await;
        let mut membership = fanout.join("live", new, ring.subscribe());
        assert_eq!(membership.try_ended(), None);
        ring.send(LiveEvent::SourceRestarted).unwrap();
        ring.send(LiveEvent::Ended).unwrap();
        let end = tokio::time::timeout(Duration::from_secs(2), membership.ended())
            .await
            .unwrap();
        assert_eq!(end.reason, EndReason::SOURCE_ENDED);
        assert_eq!(fanout.members(), 0);
        assert!(
            tokio::time::timeout(Duration::from_millis(50), membership.ended())
                .await
                .is_err(),
            "said once"
        );

        let (new, _, _) = member(&client, 0).await;
        let mut membership = fanout.join("live", new, ring.subscribe());
        drop(ring);
        let end = tokio::time::timeout(Duration::from_secs(2), membership.ended())
            .await
            .unwrap();
        assert_eq!(end.reason, EndReason::POINT_CLOSED);
    }
}

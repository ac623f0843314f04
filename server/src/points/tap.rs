//! A subscriber of a live point's ring that is not a client: the HLS packager and the
//! recorder read the point through a [`RingTap`].
//!
//! A tap gets whole chunks from a keyframe on (a keyframe chunk starts with the point's PAT
//! and PMT), hears of source changes and of what it lost, and is not counted as a client:
//! it shows in no client count (status, the admin API, the status page, `/metrics`), takes
//! no slot of a point's `max_clients`, and does not keep an on-demand pull going.
//!
//! Requests that hold no subscription but want the source (HLS playlist and segment
//! requests) say so with [`LiveStream::note_demand`]: an on-demand pull starts for them and
//! keeps going while they come. A recorder is not demand: on an on-demand pull it records
//! while someone watches (`pull = "always"` records all the time).
//!
//! When a tap falls off the ring, it rejoins at the point's cached GOP: if the last chunk it
//! handed out is still cached, the chunks after it continue the stream without a gap and the
//! consumer notices nothing; otherwise the consumer hears [`TapEvent::Lagged`] and the tap
//! resumes at a keyframe.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast::{self, error::RecvError};

use super::live::{LiveChunk, LiveEvent, LiveStream};

/// What a tap hands its consumer.
#[derive(Debug)]
pub enum TapEvent {
    /// The next chunk of the point. The first one after the tap starts, after `Lagged`, and
    /// after [`RingTap::skip_to_keyframe`] is a keyframe chunk (PAT, PMT, then the picture).
    Chunk(Arc<LiveChunk>),
    /// A chunk passed over while waiting for a keyframe after a loss (`Lagged`, or the
    /// consumer's own drop): its bytes are lost to the consumer.
    Skipped { bytes: u64 },
    /// The tap fell off the ring and lost `missed` events; the stream goes on at a keyframe.
    Lagged { missed: u64 },
    /// A new source took over within the grace: its first keyframe follows.
    SourceRestarted,
    /// The source ended (the grace ran out, an on-demand pull stopped, or the point was
    /// retired); a later source starts at its first keyframe.
    Ended,
}

/// Why a tap waits for a keyframe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Gap {
    /// Joined mid-picture: nothing was lost yet, so what is passed over is not reported.
    Joined,
    /// Media was lost: what is passed over until the keyframe is reported as skipped.
    Lost,
}

/// What to do with one chunk from the ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    Deliver,
    /// Report it as skipped.
    Skip,
    /// Not for the consumer: a keep-alive, or media before the first keyframe after joining.
    Ignore,
}

/// The keyframe walk of a tap: a plain state machine, tested without a ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Walk {
    waiting: Option<Gap>,
}

impl Walk {
    fn joined() -> Self {
        Self {
            waiting: Some(Gap::Joined),
        }
    }

    fn chunk(&mut self, keyframe: bool, keepalive: bool) -> Step {
        match self.waiting {
            _ if keepalive => Step::Ignore,
            None => Step::Deliver,
            Some(_) if keyframe => {
                self.waiting = None;
                Step::Deliver
            }
            Some(Gap::Joined) => Step::Ignore,
            Some(Gap::Lost) => Step::Skip,
        }
    }

    /// Media was lost: wait for the next keyframe, reporting what is passed over.
    fn lost(&mut self) {
        self.waiting = Some(Gap::Lost);
    }
}

/// Where the chunks after `last` start in a rejoin's `backlog`: `Some` when `last` is in it,
/// so that the rest of the backlog continues the stream without a gap.
fn continuation(last: Option<&Arc<LiveChunk>>, backlog: &[Arc<LiveChunk>]) -> Option<usize> {
    let last = last?;
    backlog
        .iter()
        .position(|chunk| Arc::ptr_eq(chunk, last))
        .map(|at| at + 1)
}

/// Counts one tap on a stream for as long as it lives, so that the ring receiver it holds is
/// not counted as a client. Taken before subscribing and released after the receiver is
/// dropped, so a count read in between errs towards fewer clients, never more.
struct TapCount(Arc<LiveStream>);

impl TapCount {
    fn new(stream: &Arc<LiveStream>) -> Self {
        stream.taps.fetch_add(1, Ordering::AcqRel);
        Self(Arc::clone(stream))
    }
}

impl Drop for TapCount {
    fn drop(&mut self) {
        self.0.taps.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A non-client subscription to a live point's ring.
pub struct RingTap {
    // Declared before the count: the receiver is dropped first.
    rx: broadcast::Receiver<LiveEvent>,
    /// Chunks of the cached GOP still to hand out after (re)joining.
    pending: VecDeque<Arc<LiveChunk>>,
    walk: Walk,
    /// The last chunk handed out, to continue after a rejoin.
    last: Option<Arc<LiveChunk>>,
    count: TapCount,
}

impl RingTap {
    /// Subscribe to `stream`: its cached GOP first if it has one, else from its next
    /// keyframe.
    pub fn new(stream: &Arc<LiveStream>) -> Self {
        let count = TapCount::new(stream);
        let join = stream.join();
        Self {
            rx: join.rx,
            pending: join.backlog.into(),
            walk: Walk::joined(),
            last: None,
            count,
        }
    }

    /// The next event; `None` once the point is gone.
    pub async fn next(&mut self) -> Option<TapEvent> {
        loop {
            let event = match self.pending.pop_front() {
                Some(chunk) => LiveEvent::Media(chunk),
                None => match self.rx.recv().await {
                    Ok(event) => event,
                    Err(RecvError::Lagged(missed)) => match self.rejoin(missed) {
                        Some(lagged) => return Some(lagged),
                        None => continue,
                    },
                    Err(RecvError::Closed) => return None,
                },
            };
            let chunk = match event {
                LiveEvent::Media(chunk) => chunk,
                LiveEvent::SourceRestarted => {
                    self.last = None;
                    return Some(TapEvent::SourceRestarted);
                }
                LiveEvent::Ended => {
                    self.last = None;
                    return Some(TapEvent::Ended);
                }
            };
            match self
                .walk
                .chunk(chunk.chunk.random_access, chunk.is_keepalive())
            {
                Step::Deliver => {
                    self.last = Some(Arc::clone(&chunk));
                    return Some(TapEvent::Chunk(chunk));
                }
                Step::Skip => {
                    let bytes = chunk.chunk.data.len() as u64;
                    return Some(TapEvent::Skipped { bytes });
                }
                Step::Ignore => {}
            }
        }
    }

    /// The consumer dropped a chunk (its own queue was full): resume at the next keyframe,
    /// reporting what is passed over until then.
    pub fn skip_to_keyframe(&mut self) {
        self.walk.lost();
        self.last = None;
    }

    /// Subscribe again after falling off the ring; `Some(Lagged)` unless the cached GOP
    /// continues from the last chunk handed out.
    fn rejoin(&mut self, missed: u64) -> Option<TapEvent> {
        // Counted twice while both receivers live, so no client count sees the new one.
        let _rejoining = TapCount::new(&self.count.0);
        let join = self.count.0.join();
        self.rx = join.rx;
        let backlog = join.backlog;
        match continuation(self.last.as_ref(), &backlog) {
            Some(next) => {
                self.pending = backlog[next..].iter().cloned().collect();
                None
            }
            None => {
                self.walk.lost();
                self.last = None;
                self.pending = backlog.into();
                Some(TapEvent::Lagged { missed })
            }
        }
    }
}

impl LiveStream {
    /// A request that holds no subscription (an HLS playlist or segment) wants the source for
    /// `hold` from now: an on-demand pull starts, or keeps going, for it.
    pub fn note_demand(&self, hold: Duration) {
        let until = (tokio::time::Instant::now() + hold).saturating_duration_since(self.created);
        self.demand_until_ms
            .fetch_max(until.as_millis() as u64, Ordering::AcqRel);
    }

    /// Whether anyone wants the source now: a client or push on the ring, or recent demand.
    /// Taps (HLS packagers, recorders) do not count.
    pub fn wanted(&self) -> bool {
        let now = tokio::time::Instant::now().saturating_duration_since(self.created);
        self.client_count() > 0
            || (now.as_millis() as u64) < self.demand_until_ms.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::ingest::Chunk;
    use crate::media::rtp::RtpPacketizer;
    use crate::media::test_support::{pat_packet, pmt_packet};
    use crate::media::ts::{null_packet, TS_PACKET_LEN};

    #[test]
    fn a_tap_joined_mid_picture_starts_silently_at_the_next_keyframe() {
        let mut walk = Walk::joined();
        assert_eq!(walk.chunk(false, false), Step::Ignore);
        assert_eq!(walk.chunk(false, true), Step::Ignore);
        assert_eq!(walk.chunk(true, false), Step::Deliver);
        assert_eq!(walk.chunk(false, false), Step::Deliver);
        assert_eq!(walk.chunk(false, true), Step::Ignore, "keep-alives never");
    }

    #[test]
    fn after_a_loss_what_is_passed_over_is_reported_until_the_keyframe() {
        let mut walk = Walk::joined();
        walk.chunk(true, false);
        walk.lost();
        assert_eq!(walk.chunk(false, false), Step::Skip);
        assert_eq!(walk.chunk(false, true), Step::Ignore);
        assert_eq!(walk.chunk(true, false), Step::Deliver);
        assert_eq!(walk.chunk(false, false), Step::Deliver);
    }

    fn live_chunk(keyframe: bool) -> Arc<LiveChunk> {
        let data = bytes::Bytes::from(null_packet().to_vec());
        Arc::new(LiveChunk {
            rtp: RtpPacketizer::new(1, 1).packetize(&data, 0),
            chunk: Chunk {
                data,
                random_access: keyframe,
                pcr_90k: None,
            },
            index: 0,
        })
    }

    #[test]
    fn a_rejoin_continues_after_the_last_chunk_only_when_the_cache_still_holds_it() {
        let gop: Vec<_> = [true, false, false, false]
            .into_iter()
            .map(live_chunk)
            .collect();
        assert_eq!(continuation(Some(&gop[1]), &gop), Some(2));
        assert_eq!(continuation(Some(&gop[3]), &gop), Some(4), "nothing missed");
        let older = live_chunk(false);
        assert_eq!(continuation(Some(&older), &gop), None, "a new GOP began");
        assert_eq!(continuation(None, &gop), None, "nothing handed out yet");
    }

    /// PAT, PMT (H.264 on PID 0x100), then a keyframe packet.
    fn keyframe_push() -> Vec<u8> {
        let mut data = pat_packet(0x1000, 0).to_vec();
        data.extend_from_slice(&pmt_packet(0x1000, 0x100, &[(0x1b, 0x100)], 0));
        data.extend_from_slice(&media_packet(true));
        data
    }

    fn media_packet(keyframe: bool) -> Vec<u8> {
        let mut packet = vec![0xffu8; TS_PACKET_LEN];
        packet[..3].copy_from_slice(&[0x47, 0x01, 0x00]);
        if keyframe {
            packet[3] = 0x30;
            packet[4] = 1;
            packet[5] = 0x40; // random_access_indicator
        } else {
            packet[3] = 0x10;
        }
        packet
    }

    async fn next(tap: &mut RingTap) -> TapEvent {
        tokio::time::timeout(Duration::from_secs(3600), tap.next())
            .await
            .expect("an event")
            .expect("the point is there")
    }

    #[tokio::test(start_paused = true)]
    async fn a_tap_is_not_a_client_and_starts_at_a_keyframe_with_the_tables() {
        let stream = LiveStream::for_tests("live", Duration::from_secs(5), Duration::from_secs(5));
        stream.publish(1).unwrap();
        let mut tap = RingTap::new(&stream);
        assert_eq!(stream.client_count(), 0);
        assert_eq!(stream.status().clients, 0);
        assert!(!stream.wanted(), "a tap does not keep a pull going");
        let client = stream.join();
        assert_eq!(stream.status().clients, 1);

        stream.push(1, &keyframe_push()).unwrap();
        let TapEvent::Chunk(first) = next(&mut tap).await else {
            panic!("media first")
        };
        assert!(first.chunk.random_access);
        let pids: Vec<u16> = first
            .chunk
            .data
            .chunks(TS_PACKET_LEN)
            .map(|p| crate::media::ts::TsPacket::new(p).unwrap().pid())
            .collect();
        assert_eq!(pids, [0, 0x1000, 0x100], "PAT and PMT first");
        drop(client);
        drop(tap);
        assert_eq!(stream.client_count(), 0);
        assert_eq!(stream.taps.load(Ordering::Acquire), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn demand_without_a_subscription_holds_for_its_time() {
        let stream = LiveStream::for_tests("live", Duration::from_secs(5), Duration::from_secs(5));
        assert!(!stream.wanted());
        stream.note_demand(Duration::from_secs(4));
        stream.note_demand(Duration::from_secs(1));
        tokio::time::sleep(Duration::from_millis(3900)).await;
        assert!(stream.wanted(), "the longer hold counts");
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!stream.wanted());
    }

    #[tokio::test(start_paused = true)]
    async fn a_tap_that_falls_off_the_ring_goes_on_from_the_cached_gop_without_a_gap() {
        // The test stream's ring holds 16 events.
        let stream = LiveStream::for_tests("live", Duration::from_secs(5), Duration::from_secs(5));
        stream.publish(1).unwrap();
        let mut tap = RingTap::new(&stream);
        stream.push(1, &keyframe_push()).unwrap();
        assert!(matches!(next(&mut tap).await, TapEvent::Chunk(_)));
        for _ in 0..40 {
            stream.push(1, &media_packet(false)).unwrap();
        }
        let mut delivered = 0;
        while let Ok(Some(event)) =
            tokio::time::timeout(Duration::from_millis(10), tap.next()).await
        {
            match event {
                TapEvent::Chunk(chunk) => {
                    assert!(!chunk.chunk.random_access);
                    delivered += chunk.chunk.data.len() / TS_PACKET_LEN;
                }
                other => panic!("the cached GOP bridges the lag: {other:?}"),
            }
        }
        assert_eq!(delivered, 40, "every packet after the keyframe, once");

        // A lag across a source change cannot be bridged: reported, then a keyframe.
        for _ in 0..20 {
            stream.push(1, &media_packet(false)).unwrap();
        }
        stream.unpublish(1, "test");
        stream.publish(2).unwrap();
        stream.push(2, &keyframe_push()).unwrap();
        for _ in 0..20 {
            stream.push(2, &media_packet(false)).unwrap();
        }
        assert!(matches!(next(&mut tap).await, TapEvent::Lagged { .. }));
        let TapEvent::Chunk(resumed) = next(&mut tap).await else {
            panic!("the new source's keyframe follows")
        };
        assert!(resumed.chunk.random_access);
    }

    #[tokio::test(start_paused = true)]
    async fn a_consumer_drop_skips_to_the_next_keyframe_reporting_the_bytes() {
        let stream = LiveStream::for_tests("live", Duration::from_secs(5), Duration::from_secs(5));
        stream.publish(1).unwrap();
        let mut tap = RingTap::new(&stream);
        stream.push(1, &keyframe_push()).unwrap();
        stream.push(1, &media_packet(false)).unwrap();
        stream.push(1, &media_packet(true)).unwrap();
        assert!(matches!(next(&mut tap).await, TapEvent::Chunk(_)));
        tap.skip_to_keyframe();
        assert!(
            matches!(next(&mut tap).await, TapEvent::Skipped { bytes } if bytes == TS_PACKET_LEN as u64)
        );
        let TapEvent::Chunk(keyframe) = next(&mut tap).await else {
            panic!("the keyframe")
        };
        assert!(keyframe.chunk.random_access);
        stream.unpublish(1, "test");
        stream.publish(2).unwrap();
        assert!(matches!(next(&mut tap).await, TapEvent::SourceRestarted));
    }
}

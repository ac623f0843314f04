//! Paced catch-up for a late joiner over UDP: an RTSP session's RTP/UDP transports, or a UDP
//! push that starts while the point is mid-GOP.
//!
//! A client joining a live point gets the current GOP first. Over TCP the kernel paces it; over
//! UDP it would go out as one burst of up to a GOP of datagrams, far more than a default
//! socket receive buffer holds. So a UDP joiner's backlog, and the live chunks that arrive
//! while it is still behind, go through a token bucket: the first [`FIRST_BURST`] bytes (the
//! start of the keyframe) at once, the rest at `multiple` times the stream's bitrate. Each live
//! chunk that arrives earns its own size, so the client keeps the stream's pace whatever its
//! bitrate turns out to be; time earns `multiple - 1` times the bitrate measured at the join,
//! so a backlog of `G` seconds is sent within `G / (multiple - 1)` seconds. Then the client is
//! live and chunks go straight out again.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::LiveChunk;

/// Sent at once when the catch-up starts: the first keyframe's start, about 50 datagrams, which
/// a default 208 KiB receive buffer holds even if the player does not read for a while.
pub const FIRST_BURST: usize = 64 * 1024;
/// The most a bucket that was not drained saves up (about a dozen datagrams).
const BUCKET_DEPTH: usize = 16 * 1024;
/// The least catch-up rate on top of the stream's own: when its bitrate is not known yet (a
/// point that has just gone live), or very low.
const MIN_RATE_BITS: u64 = 2_000_000;
/// While this much is queued, the client reads no more from the point's ring (which holds the
/// rest for it, and skips it ahead if it falls too far behind).
const QUEUE_LIMIT: usize = 1024 * 1024;

/// A late UDP joiner's catch-up queue and its token bucket.
#[derive(Debug)]
pub struct JoinPacer {
    queue: VecDeque<Arc<LiveChunk>>,
    queued_bytes: usize,
    /// What time earns on top of the live chunks' own sizes: the catch-up.
    bytes_per_second: u64,
    /// Bytes that may go out now; negative after a chunk larger than the tokens left.
    tokens: i64,
    refilled: Instant,
}

impl JoinPacer {
    /// A catch-up at `multiple` times `stream_bits_per_second`, starting at `now` with
    /// `backlog`.
    pub fn new(
        backlog: Vec<Arc<LiveChunk>>,
        stream_bits_per_second: u64,
        multiple: u32,
        now: Instant,
    ) -> Self {
        let extra = u64::from(multiple.saturating_sub(1));
        let bits = (stream_bits_per_second * extra).max(MIN_RATE_BITS);
        let mut pacer = Self {
            queue: VecDeque::new(),
            queued_bytes: 0,
            bytes_per_second: bits / 8,
            tokens: FIRST_BURST as i64,
            refilled: now,
        };
        for chunk in backlog {
            pacer.enqueue(chunk);
        }
        pacer
    }

    /// Queue a live chunk behind the backlog. It earns its own size: the stream's pace is
    /// kept even when the bitrate measured at the join was too low (or not known yet).
    pub fn push(&mut self, chunk: Arc<LiveChunk>) {
        self.tokens += chunk_bytes(&chunk) as i64;
        self.enqueue(chunk);
    }

    fn enqueue(&mut self, chunk: Arc<LiveChunk>) {
        self.queued_bytes += chunk_bytes(&chunk);
        self.queue.push_back(chunk);
    }

    /// Whether the client may take more from the point's ring now.
    pub fn has_room(&self) -> bool {
        self.queued_bytes < QUEUE_LIMIT
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.refilled);
        let earned = elapsed.as_micros() as u64 * self.bytes_per_second / 1_000_000;
        if earned > 0 {
            self.tokens = (self.tokens + earned as i64).min(self.depth());
            self.refilled = now;
        }
    }

    /// Tokens never pile up past the first burst (at the start) or the bucket's depth.
    fn depth(&self) -> i64 {
        self.tokens.max(BUCKET_DEPTH as i64)
    }

    /// The next chunk, if its time has come at `now`.
    pub fn take(&mut self, now: Instant) -> Option<Arc<LiveChunk>> {
        self.refill(now);
        if self.tokens < 0 {
            return None;
        }
        let chunk = self.queue.pop_front()?;
        let bytes = chunk_bytes(&chunk);
        self.queued_bytes -= bytes;
        self.tokens -= bytes as i64;
        Some(chunk)
    }

    /// When the next chunk may go out; `None` with nothing queued.
    pub fn next_due(&self, now: Instant) -> Option<Instant> {
        if self.queue.is_empty() {
            return None;
        }
        if self.tokens >= 0 {
            return Some(now);
        }
        let wait_us = (-self.tokens) as u64 * 1_000_000 / self.bytes_per_second.max(1);
        Some(self.refilled + Duration::from_micros(wait_us + 1))
    }

    /// Nothing is queued and the bucket is not in debt: the client is live.
    pub fn caught_up(&self) -> bool {
        self.queue.is_empty() && self.tokens >= 0
    }
}

/// What a chunk costs on the wire (its RTP packets' payload and headers).
fn chunk_bytes(chunk: &LiveChunk) -> usize {
    chunk.rtp.data().len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::rtp::RtpPacketizer;
    use crate::media::test_support::live_chunk;

    /// A chunk of `packets` TS packets (7 per RTP packet).
    fn chunk(packets: usize) -> Arc<LiveChunk> {
        live_chunk(&mut RtpPacketizer::new(1, 1), packets)
    }

    /// Drain `pacer` as an IO loop would, waking when it says; returns when each chunk left.
    fn drain(pacer: &mut JoinPacer, start: Instant) -> Vec<Instant> {
        let mut now = start;
        let mut sent = Vec::new();
        while let Some(due) = pacer.next_due(now) {
            now = now.max(due);
            if pacer.take(now).is_some() {
                sent.push(now);
            }
            assert!(sent.len() < 100_000, "bounded");
        }
        sent
    }

    #[test]
    fn the_first_burst_goes_at_once_and_the_rest_at_the_catch_up_rate() {
        let start = Instant::now();
        // 2 s of a 4 Mbps stream: 1 MB in chunks of 64 TS packets (~12.6 kB with RTP).
        let backlog: Vec<_> = (0..80).map(|_| chunk(64)).collect();
        let total: usize = backlog.iter().map(|c| chunk_bytes(c)).sum();
        let mut pacer = JoinPacer::new(backlog, 4_000_000, 4, start);
        let sent = drain(&mut pacer, start);
        assert_eq!(sent.len(), 80);
        let at_once = sent.iter().filter(|at| **at == start).count();
        assert_eq!(at_once, FIRST_BURST / chunk_bytes(&chunk(64)) + 1);
        // With no live chunks arriving, time alone drains it at 3 × 4 Mbps: the rest
        // within (total - first burst) / 1.5 MB/s.
        let bound = Duration::from_micros(((total - FIRST_BURST) as u64) * 1_000_000 / 1_500_000);
        let took = *sent.last().unwrap() - start;
        assert!(
            took <= bound + Duration::from_millis(10),
            "{took:?} > {bound:?}"
        );
        assert!(
            took >= bound - Duration::from_millis(20),
            "{took:?} too fast"
        );
        // No more than the bucket's depth plus one chunk in any 10 ms after the burst.
        for (i, at) in sent.iter().enumerate().filter(|(_, at)| **at > start) {
            let within: usize = sent[i..]
                .iter()
                .take_while(|later| **later < *at + Duration::from_millis(10))
                .count();
            assert!(within <= 4, "{within} chunks within 10 ms");
        }
        assert!(pacer.caught_up() || pacer.next_due(start).is_none());
    }

    #[test]
    fn chunks_arriving_meanwhile_queue_behind_and_the_client_catches_up() {
        let start = Instant::now();
        let mut pacer = JoinPacer::new(vec![chunk(64); 20], 1_000_000, 4, start);
        assert!(pacer.has_room());
        let mut now = start;
        let mut sent = 0;
        // Live chunks keep coming at the stream's rate (one 12.6 kB chunk every 100 ms).
        for tick in 0..200u64 {
            now = start + Duration::from_millis(tick * 10);
            if tick % 10 == 0 {
                pacer.push(chunk(64));
            }
            while pacer.take(now).is_some() {
                sent += 1;
            }
            if pacer.caught_up() {
                break;
            }
        }
        assert!(pacer.caught_up(), "caught up within 2 s");
        assert!(now - start < Duration::from_secs(2));
        assert!(sent >= 20);
    }

    #[test]
    fn a_joiner_keeps_up_with_a_stream_faster_than_the_rate_measured_at_the_join() {
        let start = Instant::now();
        // Joined before the bitrate was known (0), to a stream of one ~12.6 kB chunk every
        // 20 ms (~5 Mbps, more than the minimum catch-up rate): the live chunks' own sizes
        // keep the client at the stream's pace, and time drains the backlog on top.
        let mut pacer = JoinPacer::new(vec![chunk(64); 20], 0, 4, start);
        let mut now = start;
        for tick in 0..1000u64 {
            now = start + Duration::from_millis(tick);
            if tick % 20 == 0 {
                pacer.push(chunk(64));
            }
            while pacer.take(now).is_some() {}
            if pacer.caught_up() {
                break;
            }
        }
        assert!(pacer.caught_up(), "still behind after {:?}", now - start);
        // The backlog past the first burst, at 2 Mbps: about 0.8 s.
        let backlog = 20 * chunk_bytes(&chunk(64)) - FIRST_BURST;
        let bound = Duration::from_secs_f64(backlog as f64 / (MIN_RATE_BITS / 8) as f64);
        assert!(
            now - start <= bound + Duration::from_millis(60),
            "{:?}",
            now - start
        );
    }

    #[test]
    fn an_unknown_bitrate_paces_at_the_minimum_rate() {
        let start = Instant::now();
        let mut pacer = JoinPacer::new(vec![chunk(64); 20], 0, 4, start);
        let sent = drain(&mut pacer, start);
        let total = 20 * chunk_bytes(&chunk(64));
        let expected = (total - FIRST_BURST) as f64 / (MIN_RATE_BITS / 8) as f64;
        let took = (*sent.last().unwrap() - start).as_secs_f64();
        assert!((took - expected).abs() < 0.1, "{took} vs {expected}");
    }
}

//! A connection's output queue and the slow-client policy.
//!
//! Everything bound for the client's socket waits here as shared `Bytes` (live chunks are
//! never copied). The queue decides three things, with the time passed in: whether more live
//! media may be pulled in (only below the high-water mark, so a slow client's backlog stays in
//! the point's ring), when a socket that takes nothing has stalled for the write timeout, and
//! — through [`LagWindow`] — whether a live client that fell off the ring is skipped ahead to
//! the next keyframe or dropped.

use std::collections::VecDeque;
use std::io::IoSlice;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use crate::limits::ConnectionGate;
use crate::state::SentBytes;

/// Stop pulling live media into a client's output queue above this many bytes.
pub const OUTPUT_HIGH_WATER: usize = 256 * 1024;
/// Most buffers handed to one vectored write.
pub const MAX_IOVECS: usize = 64;
/// A live client that lags this many times within [`LAG_WINDOW`] is disconnected.
pub const MAX_LAGS: usize = 5;
pub const LAG_WINDOW: Duration = Duration::from_secs(60);
/// How long small live media arriving at an empty queue waits for more before it is
/// written, and how much is enough to write at once. At radio bitrates a chunk is a few
/// hundred bytes, and one write (and one wake-up) per chunk and listener costs more than the
/// bytes. The delay is the latency budget this adds for such streams (players buffer seconds
/// of them); at video bitrates `bytes` gather sooner and go out at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Coalesce {
    pub delay: Duration,
    pub bytes: usize,
}

/// The hold while the server is not crowded.
pub const COALESCE: Coalesce = Coalesce {
    delay: Duration::from_millis(100),
    bytes: 8 * 1024,
};
/// The hold once the server has [`CROWD`] connections or more: with 10,000 radio listeners a
/// 100 ms hold cost about twice the CPU of this one.
pub const CROWDED_COALESCE: Coalesce = Coalesce {
    delay: Duration::from_millis(250),
    bytes: 8 * 1024,
};
pub const CROWD: usize = 1000;
/// The hold once the server has [`THRONG`] connections or more. Nearly all of a listener's
/// cost is then the kernel's work for each write (over 90 % of the server's CPU with 10,000
/// radio listeners), so half as many writes is about half the CPU: a 128 kbit/s stream goes
/// out twice a second instead of about four times. Radio players buffer seconds, so half a
/// second is not heard; a video stream gathers 16 KiB in tens of milliseconds.
pub const THRONG_COALESCE: Coalesce = Coalesce {
    delay: Duration::from_millis(500),
    bytes: 16 * 1024,
};
pub const THRONG: usize = 5000;

/// How small live media is held, with `open_connections` on the server: longer when there
/// are many, where the wake-ups and writes of listeners are the server's cost.
pub fn coalescing(open_connections: usize) -> Coalesce {
    if open_connections >= THRONG {
        THRONG_COALESCE
    } else if open_connections >= CROWD {
        CROWDED_COALESCE
    } else {
        COALESCE
    }
}
/// Where a hold comes from, for a writer that lives longer than one decision: the server's
/// open connections at each write (so a crowd that thins stops being held for as a crowd), or
/// a fixed hold.
#[derive(Clone)]
pub enum HoldRule {
    ByOpenConnections(Arc<ConnectionGate>),
    Fixed(Coalesce),
}

impl HoldRule {
    /// The hold for a write now.
    pub fn current(&self) -> Coalesce {
        match self {
            Self::ByOpenConnections(gate) => coalescing(gate.open_connections()),
            Self::Fixed(hold) => *hold,
        }
    }
}

/// A queue that held more buffers than this gives the room back once it is empty, so a join's
/// backlog does not leave every listener holding room for a GOP of buffers.
const KEPT_BUFFER_SLOTS: usize = 8;

/// Bytes waiting for the client's socket.
#[derive(Default)]
pub struct OutputQueue {
    buffers: VecDeque<Bytes>,
    queued: usize,
    /// Shared with the session table, so the admin API sees the count grow.
    sent: SentBytes,
    /// Since when the queue has waited for the socket without any progress.
    stalled_since: Option<Instant>,
    /// Small live media waits until then for more, unless this many bytes gather first
    /// (see [`Coalesce`]).
    coalesce_until: Option<(Instant, usize)>,
}

impl OutputQueue {
    pub fn push(&mut self, data: Bytes) {
        if !data.is_empty() {
            self.queued += data.len();
            self.buffers.push_back(data);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.buffers.is_empty()
    }

    #[cfg(test)]
    pub fn queued_bytes(&self) -> usize {
        self.queued
    }

    /// Whether more live media may be pulled in now.
    pub fn has_room(&self) -> bool {
        self.queued < OUTPUT_HIGH_WATER
    }

    /// Bytes the socket has taken so far.
    pub fn bytes_sent(&self) -> u64 {
        self.sent.get()
    }

    /// Count RTP the session sent as UDP datagrams, beside its connection, as sent.
    pub fn count_datagrams(&self, bytes: u64) {
        self.sent.add(bytes);
    }

    /// The counter of bytes sent, for RTP sent on the session's behalf.
    pub fn sent_counter(&self) -> SentBytes {
        self.sent.clone()
    }

    /// Count what the socket takes in `sent` (the session table's counter); called before
    /// anything is written.
    pub fn count_sent_in(&mut self, sent: SentBytes) {
        self.sent = sent;
    }

    /// Live media was just queued at `now`, into a queue that was empty if `was_empty`: if it
    /// is small, hold it back to gather more, as `coalesce` says.
    pub fn coalesce_live(&mut self, was_empty: bool, now: Instant, coalesce: Coalesce) {
        if was_empty && !self.buffers.is_empty() && self.queued < coalesce.bytes {
            self.coalesce_until = Some((now + coalesce.delay, coalesce.bytes));
        }
    }

    /// Until when the queue's media is held back to gather more; `None` when it may be
    /// written now.
    pub fn held_until(&self) -> Option<Instant> {
        self.coalesce_until
            .filter(|&(_, enough)| self.queued < enough)
            .map(|(until, _)| until)
    }

    /// The hold is over: write what was gathered.
    pub fn release(&mut self) {
        self.coalesce_until = None;
    }

    /// Fill `slices` with the front of the queue, for one vectored write; how many were
    /// filled. The caller's array lives only during the write's poll, not in the connection.
    pub fn fill_batch<'q>(&'q self, slices: &mut [IoSlice<'q>]) -> usize {
        let mut filled = 0;
        for (slot, buffer) in slices.iter_mut().zip(&self.buffers) {
            *slot = IoSlice::new(buffer);
            filled += 1;
        }
        filled
    }

    /// The front of the queue as one vectored write.
    #[cfg(test)]
    pub fn write_batch(&self) -> Vec<IoSlice<'_>> {
        let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
        let filled = self.fill_batch(&mut slices);
        slices[..filled].to_vec()
    }

    /// The socket took `n` bytes at `now`.
    pub fn consume(&mut self, mut n: usize, now: Instant) {
        self.queued -= n;
        self.sent.add(n as u64);
        self.stalled_since = Some(now);
        self.coalesce_until = None;
        while n > 0 {
            let front = self
                .buffers
                .front_mut()
                .expect("wrote more than was queued");
            if front.len() <= n {
                n -= front.len();
                self.buffers.pop_front();
            } else {
                let _ = front.split_to(n);
                n = 0;
            }
        }
        if self.buffers.is_empty() && self.buffers.capacity() > KEPT_BUFFER_SLOTS {
            self.buffers = VecDeque::new();
        }
    }

    /// The socket took `n` bytes at `now` straight from a file (`sendfile`), past the queue.
    pub fn sent_direct(&mut self, n: usize, now: Instant) {
        self.sent.add(n as u64);
        self.stalled_since = Some(now);
    }

    /// Start the stall clock when output starts waiting (queued bytes, or a file range the
    /// socket must take directly: `file_waiting`), and stop it when nothing waits. Called once
    /// per turn of the IO loop.
    pub fn watch_stall(&mut self, now: Instant, file_waiting: bool) {
        if self.buffers.is_empty() && !file_waiting {
            self.stalled_since = None;
        } else if self.stalled_since.is_none() {
            self.stalled_since = Some(now);
        }
    }

    /// When the client counts as too slow unless the socket takes something first.
    pub fn stall_deadline(&self, write_timeout: Duration) -> Option<Instant> {
        self.stalled_since.map(|since| since + write_timeout)
    }

    /// Whether the socket has taken nothing for `write_timeout` while output waited (the IO
    /// loop sleeps until [`Self::stall_deadline`] instead of asking).
    #[cfg(test)]
    pub fn is_stalled(&self, now: Instant, write_timeout: Duration) -> bool {
        self.stall_deadline(write_timeout)
            .is_some_and(|deadline| now >= deadline)
    }
}

impl Extend<Bytes> for OutputQueue {
    fn extend<I: IntoIterator<Item = Bytes>>(&mut self, iter: I) {
        iter.into_iter().for_each(|data| self.push(data));
    }
}

/// What to do with a live client that fell off the point's ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LagVerdict {
    /// Skip it ahead to the next keyframe and carry on.
    SkipToKeyframe,
    /// It keeps falling behind: disconnect it. `lags` counts the falls within the window.
    Drop { lags: usize },
}

/// The times a live client fell behind, within [`LAG_WINDOW`].
#[derive(Default)]
pub struct LagWindow {
    lags: VecDeque<Instant>,
}

impl LagWindow {
    /// The client fell behind at `now`.
    pub fn on_lag(&mut self, now: Instant) -> LagVerdict {
        self.lags.push_back(now);
        while self
            .lags
            .front()
            .is_some_and(|at| now.duration_since(*at) > LAG_WINDOW)
        {
            self.lags.pop_front();
        }
        if self.lags.len() >= MAX_LAGS {
            LagVerdict::Drop {
                lags: self.lags.len(),
            }
        } else {
            LagVerdict::SkipToKeyframe
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(len: usize, byte: u8) -> Bytes {
        Bytes::from(vec![byte; len])
    }

    #[test]
    fn media_is_pulled_in_only_below_the_high_water_mark() {
        let mut out = OutputQueue::default();
        assert!(out.has_room());
        out.push(block(OUTPUT_HIGH_WATER - 1, 1));
        assert!(out.has_room());
        out.push(block(1, 2));
        assert!(!out.has_room());
        out.consume(1, Instant::now());
        assert!(out.has_room());
    }

    #[test]
    fn partial_writes_keep_the_rest_of_a_buffer_in_order() {
        let mut out = OutputQueue::default();
        out.push(block(3, 1));
        out.push(Bytes::new());
        out.push(block(2, 2));
        assert_eq!(out.write_batch().len(), 2, "empty buffers are never queued");
        out.consume(4, Instant::now());
        assert_eq!(out.queued_bytes(), 1);
        assert_eq!(out.bytes_sent(), 4);
        assert_eq!(&*out.write_batch()[0], &[2]);
        out.consume(1, Instant::now());
        assert!(out.is_empty());
    }

    #[test]
    fn one_vectored_write_takes_at_most_max_iovecs_buffers() {
        let mut out = OutputQueue::default();
        out.extend((0..MAX_IOVECS + 10).map(|i| block(1, i as u8)));
        assert_eq!(out.write_batch().len(), MAX_IOVECS);
    }

    #[test]
    fn a_socket_that_takes_nothing_for_the_write_timeout_is_a_stall() {
        let timeout = Duration::from_secs(10);
        let start = Instant::now();
        let mut out = OutputQueue::default();
        out.watch_stall(start, false);
        assert_eq!(
            out.stall_deadline(timeout),
            None,
            "nothing waits, nothing stalls"
        );
        out.push(block(10, 1));
        out.watch_stall(start, false);
        out.watch_stall(start + Duration::from_secs(5), false);
        assert_eq!(out.stall_deadline(timeout), Some(start + timeout));
        assert!(!out.is_stalled(start + Duration::from_secs(9), timeout));
        assert!(out.is_stalled(start + timeout, timeout));
    }

    #[test]
    fn any_progress_restarts_the_stall_clock() {
        let timeout = Duration::from_secs(10);
        let start = Instant::now();
        let mut out = OutputQueue::default();
        out.push(block(10, 1));
        out.watch_stall(start, false);
        out.consume(1, start + Duration::from_secs(8));
        assert!(!out.is_stalled(start + Duration::from_secs(12), timeout));
        assert!(out.is_stalled(start + Duration::from_secs(18), timeout));
        out.consume(9, start + Duration::from_secs(19));
        out.watch_stall(start + Duration::from_secs(19), false);
        assert_eq!(
            out.stall_deadline(timeout),
            None,
            "an empty queue never stalls"
        );
    }

    #[test]
    fn five_lags_within_the_window_drop_the_client() {
        let start = Instant::now();
        let mut lags = LagWindow::default();
        for i in 0..4 {
            let at = start + Duration::from_secs(i * 10);
            assert_eq!(lags.on_lag(at), LagVerdict::SkipToKeyframe);
        }
        assert_eq!(
            lags.on_lag(start + Duration::from_secs(59)),
            LagVerdict::Drop { lags: 5 }
        );
    }

    #[test]
    fn lags_outside_the_window_are_forgotten() {
        let start = Instant::now();
        let mut lags = LagWindow::default();
        for i in 0..20 {
            // One lag every 16 s: never five within a minute.
            let at = start + Duration::from_secs(i * 16);
            assert_eq!(lags.on_lag(at), LagVerdict::SkipToKeyframe, "lag {i}");
        }
    }

    #[test]
    fn a_file_range_waiting_for_the_socket_stalls_like_queued_bytes() {
        let timeout = Duration::from_secs(10);
        let start = Instant::now();
        let mut out = OutputQueue::default();
        out.watch_stall(start, true);
        assert_eq!(out.stall_deadline(timeout), Some(start + timeout));
        out.sent_direct(1000, start + Duration::from_secs(4));
        out.watch_stall(start + Duration::from_secs(4), true);
        assert_eq!(
            out.stall_deadline(timeout),
            Some(start + Duration::from_secs(14))
        );
        assert_eq!(out.bytes_sent(), 1000);
        out.watch_stall(start + Duration::from_secs(5), false);
        assert_eq!(out.stall_deadline(timeout), None);
    }

    #[test]
    fn small_live_media_into_an_empty_queue_is_held_for_the_delay_large_media_is_not() {
        let now = Instant::now();
        let mut out = OutputQueue::default();
        out.push(block(800, 1));
        out.coalesce_live(true, now, COALESCE);
        assert_eq!(out.held_until(), Some(now + COALESCE.delay));
        out.push(block(800, 2));
        out.coalesce_live(false, now, COALESCE);
        assert_eq!(out.held_until(), Some(now + COALESCE.delay), "no new hold");
        out.push(block(COALESCE.bytes, 3));
        assert_eq!(out.held_until(), None, "enough gathered: write now");
        out.release();
        out.consume(out.queued_bytes(), now);

        let mut video = OutputQueue::default();
        video.push(block(COALESCE.bytes, 1));
        video.coalesce_live(true, now, COALESCE);
        assert_eq!(video.held_until(), None);
        let mut busy = OutputQueue::default();
        busy.push(block(10, 1));
        busy.coalesce_live(false, now, COALESCE);
        assert_eq!(
            busy.held_until(),
            None,
            "only media into an empty queue waits"
        );
    }

    #[test]
    fn a_hold_rule_follows_the_connections_open_at_each_write() {
        let gate = Arc::new(ConnectionGate::default());
        let rule = HoldRule::ByOpenConnections(Arc::clone(&gate));
        assert_eq!(rule.current(), COALESCE);
        let crowd: Vec<_> = (0..CROWD as u32)
            .filter_map(|n| {
                gate.admit(std::net::Ipv4Addr::from(0x0a00_0000 + n).into())
                    .1
            })
            .collect();
        assert_eq!(gate.open_connections(), CROWD, "every connection admitted");
        assert_eq!(rule.current(), CROWDED_COALESCE);
        drop(crowd);
        assert_eq!(rule.current(), COALESCE, "the crowd left");
        assert_eq!(HoldRule::Fixed(THRONG_COALESCE).current(), THRONG_COALESCE);
    }

    #[test]
    fn a_crowded_server_holds_small_live_media_longer() {
        assert_eq!(coalescing(0), COALESCE);
        assert_eq!(coalescing(CROWD - 1), COALESCE);
        assert_eq!(coalescing(CROWD), CROWDED_COALESCE);
        assert_eq!(coalescing(THRONG - 1), CROWDED_COALESCE);
        assert_eq!(coalescing(THRONG), THRONG_COALESCE);
        assert!(COALESCE.delay < CROWDED_COALESCE.delay);
        assert!(CROWDED_COALESCE.delay < THRONG_COALESCE.delay);
    }

    #[test]
    fn a_throngs_hold_gathers_more_before_it_writes() {
        let now = Instant::now();
        let mut out = OutputQueue::default();
        out.push(block(COALESCE.bytes, 1));
        out.coalesce_live(true, now, THRONG_COALESCE);
        assert_eq!(out.held_until(), Some(now + THRONG_COALESCE.delay));
        out.push(block(THRONG_COALESCE.bytes - COALESCE.bytes, 2));
        assert_eq!(out.held_until(), None, "enough gathered: write now");
    }

    #[test]
    fn a_write_ends_the_hold() {
        let now = Instant::now();
        let mut out = OutputQueue::default();
        out.push(block(100, 1));
        out.coalesce_live(true, now, COALESCE);
        out.consume(10, now);
        assert_eq!(out.held_until(), None);
    }

    #[test]
    fn an_emptied_queue_gives_back_a_backlogs_room() {
        let mut out = OutputQueue::default();
        out.extend((0..40).map(|i| block(10, i as u8)));
        out.consume(400, Instant::now());
        assert!(out.is_empty());
        assert!(out.buffers.capacity() <= KEPT_BUFFER_SLOTS);
        out.extend((0..3).map(|i| block(10, i as u8)));
        let kept = out.buffers.capacity();
        out.consume(30, Instant::now());
        assert_eq!(out.buffers.capacity(), kept, "a small queue keeps its room");
    }
}

//! Bookkeeping shared by the stream readers ([`crate::ts::TsReader`],
//! [`crate::watch::RtpWatch`]): when data arrived and when reading ended, and the bounded
//! waits the tests make on them.

use std::io::ErrorKind;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Lock a reader's state; a reading thread that panicked leaves what it recorded usable.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Arrival times and what the reading thread saw of the session's end.
#[derive(Default)]
pub(crate) struct Timeline {
    /// When each read (or packet) arrived, with its size.
    pub arrivals: Vec<(Instant, usize)>,
    /// The server closed the connection (or it failed).
    pub closed: Option<Instant>,
    /// The reading threads stopped (for whatever reason).
    pub finished: Option<Instant>,
}

impl Timeline {
    /// Longest time between arrivals from the last one before `since` on, up to now (or
    /// until reading stopped), so a stream that stalls counts as a gap too.
    pub fn longest_gap_since(&self, since: Instant) -> Duration {
        let before = self
            .arrivals
            .iter()
            .rev()
            .find(|(at, _)| *at < since)
            .map(|(at, _)| *at);
        let mut times: Vec<Instant> = before.into_iter().collect();
        times.extend(
            self.arrivals
                .iter()
                .map(|(at, _)| *at)
                .filter(|at| *at >= since),
        );
        times.push(self.finished.unwrap_or_else(Instant::now));
        times
            .windows(2)
            .map(|w| w[1].saturating_duration_since(w[0]))
            .max()
            .unwrap_or_default()
    }

    /// Longest time between two consecutive arrivals that overlap `from..to`; the whole span
    /// if nothing arrived across it.
    pub fn longest_gap_overlapping(&self, from: Instant, to: Instant) -> Duration {
        self.arrivals
            .windows(2)
            .filter(|pair| pair[1].0 >= from && pair[0].0 <= to)
            .map(|pair| pair[1].0 - pair[0].0)
            .max()
            .unwrap_or(to - from)
    }

    /// Amount received (bytes, or packets) in arrivals at or after `since`.
    pub fn after(&self, since: Instant) -> usize {
        self.arrivals
            .iter()
            .filter(|(at, _)| *at >= since)
            .map(|(_, n)| n)
            .sum()
    }

    /// Arrivals at or after `since`.
    pub fn count_after(&self, since: Instant) -> usize {
        self.arrivals.iter().filter(|(at, _)| *at >= since).count()
    }
}

/// Poll `done` (every 20 ms) until it holds or `timeout` passes; whether it held.
pub fn wait_until(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A read that only timed out (the reading loop looks at its stop conditions and goes on).
pub(crate) fn is_timeout(error: &std::io::Error) -> bool {
    matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaps_are_measured_between_arrivals_around_a_moment_or_a_window() {
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        let timeline = Timeline {
            arrivals: [0, 100, 400, 450, 1000].map(|ms| (at(ms), 10)).to_vec(),
            closed: None,
            finished: Some(at(1100)),
        };
        // From the last arrival before 420 ms on, to the end of reading.
        assert_eq!(
            timeline.longest_gap_since(at(420)),
            Duration::from_millis(550)
        );
        assert_eq!(
            timeline.longest_gap_overlapping(at(50), at(420)),
            Duration::from_millis(300)
        );
        assert_eq!(
            timeline.longest_gap_overlapping(at(1050), at(1090)),
            Duration::from_millis(40),
            "nothing arrived across the window: all of it is a gap"
        );
        assert_eq!(timeline.after(at(400)), 30);
        assert_eq!(timeline.count_after(at(401)), 2);
    }
}

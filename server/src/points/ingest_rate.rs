//! The ingest bitrate of a live point: bytes from its source counted per window of about a
//! second, for operators (status, API, metrics). Time is a parameter, so it is unit-tested.

use std::time::{Duration, Instant};

/// A window shorter than this is not reported yet.
const WINDOW: Duration = Duration::from_secs(1);

#[derive(Debug, Clone)]
pub struct IngestRate {
    window_start: Instant,
    window_bytes: u64,
    /// Bits per second over the last complete window, and when that window ended.
    last: Option<(u64, Instant)>,
}

impl IngestRate {
    pub fn new(now: Instant) -> Self {
        Self {
            window_start: now,
            window_bytes: 0,
            last: None,
        }
    }

    /// `bytes` arrived from the source at `now`.
    pub fn add(&mut self, bytes: usize, now: Instant) {
        self.window_bytes += bytes as u64;
        let elapsed = now.saturating_duration_since(self.window_start);
        if elapsed >= WINDOW {
            let bits_per_second = self.window_bytes * 8 * 1000 / elapsed.as_millis().max(1) as u64;
            self.last = Some((bits_per_second, now));
            self.window_start = now;
            self.window_bytes = 0;
        }
    }

    /// Bits per second; zero once the source has sent nothing for two windows.
    pub fn bits_per_second(&self, now: Instant) -> u64 {
        match self.last {
            Some((rate, at)) if now.saturating_duration_since(at) <= 2 * WINDOW => rate,
            _ => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_is_measured_over_whole_windows_and_fades_when_the_source_stops() {
        let start = Instant::now();
        let mut rate = IngestRate::new(start);
        rate.add(50_000, start + Duration::from_millis(500));
        assert_eq!(rate.bits_per_second(start + Duration::from_millis(500)), 0);
        rate.add(50_000, start + Duration::from_millis(1000));
        let at = start + Duration::from_millis(1000);
        assert_eq!(rate.bits_per_second(at), 800_000);
        assert_eq!(rate.bits_per_second(at + Duration::from_secs(3)), 0);
    }
}

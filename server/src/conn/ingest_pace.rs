//! Paces a publisher by its stream's clock: an encoder that pushes media faster than real time
//! (a file sent without `-re`, or a hostile publisher) is held to a bounded lead, so that the
//! point's ring never floods and its viewers are not dropped as too slow. The connection stops
//! reading the socket until real time catches up; TCP backpressure does the rest.

use std::time::Duration;

use tokio::time::Instant;

/// How far the stream's clock may run ahead of the wall clock: an encoder's buffered GOP at
/// the start, or a burst after a network hiccup, passes unslowed.
pub const MAX_LEAD: Duration = Duration::from_secs(2);
/// Once the stream's clock runs this far ahead, it is read in short blocks: one large read of a
/// low-bitrate stream can carry seconds of media, and past the bound each of those seconds is
/// a second in which nothing more is read, so viewers would get it in bursts far apart. Half
/// the bound leaves room for the server to miss a beat without the next read being a large one.
const SHORT_READS_FROM: Duration = Duration::from_secs(1);
/// A PCR step larger than this (or backwards) is a discontinuity, not a stream running fast:
/// the clocks are matched again from there.
const MAX_PCR_STEP: Duration = Duration::from_secs(5);
/// PCR in 90 kHz units wraps at 2^33.
const PCR_WRAP: u64 = 1 << 33;

/// The stream's clock against the wall clock, for one publisher.
#[derive(Debug, Default)]
pub struct IngestPace {
    /// Wall-clock time at which the media counted in `media_90k` began (moved forward when
    /// the stream falls behind, so lost time is not banked as credit for a later burst).
    origin: Option<Instant>,
    last_pcr: u64,
    /// Media time since `origin`, in 90 kHz units, unwrapped.
    media_90k: u64,
}

impl IngestPace {
    pub fn new() -> Self {
        Self::default()
    }

    /// A PCR (90 kHz units) arrived at `now`.
    pub fn on_pcr(&mut self, pcr_90k: u64, now: Instant) {
        let Some(origin) = self.origin else {
            self.restart(pcr_90k, now);
            return;
        };
        let step = pcr_90k.wrapping_sub(self.last_pcr) % PCR_WRAP;
        if step > duration_to_90k(MAX_PCR_STEP) {
            self.restart(pcr_90k, now);
            return;
        }
        self.last_pcr = pcr_90k;
        self.media_90k += step;
        if origin + media_duration(self.media_90k) < now {
            // Behind real time (a slow network): forgive it rather than allow a catch-up burst.
            self.origin = Some(now);
            self.media_90k = 0;
        }
    }

    /// While the stream is too far ahead: when reading may resume.
    pub fn paused_until(&self, now: Instant) -> Option<Instant> {
        let resume = self.caught_up_at()?.checked_sub(MAX_LEAD)?;
        (resume > now).then_some(resume)
    }

    /// Whether the stream runs well ahead of real time: the encoder is being held back, or
    /// soon will be, and is read in short blocks (see [`SHORT_READS_FROM`]).
    pub fn is_pacing(&self, now: Instant) -> bool {
        self.caught_up_at()
            .is_some_and(|at| at.saturating_duration_since(now) > SHORT_READS_FROM)
    }

    /// When real time reaches the media read so far.
    fn caught_up_at(&self) -> Option<Instant> {
        Some(self.origin? + media_duration(self.media_90k))
    }

    fn restart(&mut self, pcr_90k: u64, now: Instant) {
        self.origin = Some(now);
        self.last_pcr = pcr_90k;
        self.media_90k = 0;
    }
}

fn media_duration(media_90k: u64) -> Duration {
    Duration::from_micros(media_90k * 100 / 9)
}

fn duration_to_90k(duration: Duration) -> u64 {
    duration.as_micros() as u64 * 9 / 100
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: u64 = 90_000;

    #[test]
    fn a_real_time_stream_is_never_paused() {
        let start = Instant::now();
        let mut pace = IngestPace::new();
        for tenth in 0..600u64 {
            let now = start + Duration::from_millis(100 * tenth);
            pace.on_pcr(1_000 + tenth * SECOND / 10, now);
            assert_eq!(pace.paused_until(now), None);
            assert!(!pace.is_pacing(now));
        }
    }

    #[test]
    fn a_start_burst_within_the_lead_passes() {
        let start = Instant::now();
        let mut pace = IngestPace::new();
        // An encoder's buffered GOP: 1.9 s of media at once.
        for tenth in 0..=19u64 {
            pace.on_pcr(tenth * SECOND / 10, start);
        }
        assert_eq!(pace.paused_until(start), None);
    }

    #[test]
    fn a_fast_stream_waits_until_real_time_catches_up() {
        let start = Instant::now();
        let mut pace = IngestPace::new();
        pace.on_pcr(0, start);
        // 6 s of media in 1 s of wall time.
        let now = start + Duration::from_secs(1);
        for half in 2..=12u64 {
            pace.on_pcr(half * SECOND / 2, now);
        }
        // Lead 5 s: wait 3 s, until the lead is back at the bound.
        assert_eq!(pace.paused_until(now), Some(now + Duration::from_secs(3)));
        let resumed = now + Duration::from_secs(3);
        assert_eq!(pace.paused_until(resumed), None);
        assert!(pace.is_pacing(resumed), "still at the bound");
        pace.on_pcr(6 * SECOND + SECOND / 10, resumed);
        assert!(pace.paused_until(resumed).is_some(), "still at the bound");
    }

    #[test]
    fn a_stream_well_ahead_is_read_in_short_blocks_before_the_bound() {
        let start = Instant::now();
        let mut pace = IngestPace::new();
        pace.on_pcr(0, start);
        pace.on_pcr(SECOND / 2, start);
        assert!(
            !pace.is_pacing(start),
            "half a second ahead: an encoder's buffer"
        );
        // 1.5 s ahead: not paused yet, but one large read could now carry it seconds past
        // the bound.
        pace.on_pcr(3 * SECOND / 2, start);
        assert_eq!(pace.paused_until(start), None);
        assert!(pace.is_pacing(start));
        // Falling behind (the server missed a beat) forgives the lead.
        let late = start + Duration::from_secs(3);
        pace.on_pcr(2 * SECOND, late);
        assert!(!pace.is_pacing(late));
    }

    #[test]
    fn time_lost_behind_real_time_is_no_credit_for_a_burst() {
        let start = Instant::now();
        let mut pace = IngestPace::new();
        pace.on_pcr(0, start);
        // 10 s late (the network stalled), then 5 s of media at once.
        let late = start + Duration::from_secs(11);
        pace.on_pcr(SECOND, late);
        for half in 3..=12u64 {
            pace.on_pcr(half * SECOND / 2, late);
        }
        assert_eq!(pace.paused_until(late), Some(late + Duration::from_secs(3)));
    }

    #[test]
    fn pcr_jumps_and_wraps_restart_the_clock_match() {
        let start = Instant::now();
        let mut pace = IngestPace::new();
        pace.on_pcr(PCR_WRAP - SECOND / 10, start);
        // Across the 33-bit wrap: a normal 0.2 s step.
        let now = start + Duration::from_millis(200);
        pace.on_pcr(SECOND / 10, now);
        assert_eq!(pace.paused_until(now), None);
        // A jump of an hour (a new programme): not a reason to stop reading for an hour.
        pace.on_pcr(SECOND / 10 + 3600 * SECOND, now);
        assert_eq!(pace.paused_until(now), None);
        // Backwards: likewise.
        pace.on_pcr(5, now);
        assert_eq!(pace.paused_until(now), None);
    }
}

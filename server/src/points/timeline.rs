//! A broadcast point's output timeline: when its source changes (a new encoder, push → pull,
//! an origin restart), PTS, DTS and PCR are re-based so that the timestamps players see keep
//! increasing in step with the wall clock, instead of starting over with the new source.
//!
//! The rewrite happens once, on the chunk before it is shared with every client, so raw TS,
//! RTP, recordings and framed outputs all follow the same timeline.

use std::collections::HashMap;
use std::time::{Duration, Instant};

pub use crate::config::TimelineMode;
use crate::media::ts::{
    packet_timestamps, write_pcr, write_timestamp, PCR_WRAP_27MHZ, PTS_WRAP_90K, TS_PACKET_LEN,
};

/// A PCR step larger than this (or any backward step) within one source is a break in the
/// source's clock, re-based like a new source.
const MAX_PCR_STEP_90K: u64 = 2 * 90_000;
/// How long after a re-base a stream's decode time that would not follow its last one still
/// moves the whole timeline forward (the new source's first audio may start before its video).
const SETTLE: Duration = Duration::from_secs(2);
/// The gap left after a stream's last decode time when the timeline has to move forward for
/// it: about a video frame.
const MIN_DECODE_STEP_90K: u64 = 3_600;

/// Where the timeline is relative to its source.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// The first source: its timestamps go out as they are (offset zero).
    First,
    /// A new source started; its first timestamp sets the offset.
    Rebase,
    /// The offset is set; until `until`, a stream whose decode time would step back moves
    /// the timeline forward.
    Settling {
        until: Instant,
    },
    Steady,
}

/// The re-basing state of one point.
#[derive(Debug)]
pub struct Timeline {
    mode: TimelineMode,
    /// Added to the source's timestamps, in 90 kHz ticks modulo 2^33.
    offset_90k: u64,
    phase: Phase,
    /// The last PCR sent (27 MHz) and when.
    last_pcr_out: Option<(u64, Instant)>,
    /// The last source PCR (90 kHz), to notice a break in the source's clock.
    last_pcr_in: Option<u64>,
    /// Each PID's last decode time sent (90 kHz), and the latest over all PIDs with when it
    /// was sent.
    last_decode_out: HashMap<u16, u64>,
    latest_decode_out: Option<(u64, Instant)>,
}

impl Timeline {
    pub fn new(mode: TimelineMode) -> Self {
        Self {
            mode,
            offset_90k: 0,
            phase: Phase::First,
            last_pcr_out: None,
            last_pcr_in: None,
            last_decode_out: HashMap::new(),
            latest_decode_out: None,
        }
    }

    pub fn mode(&self) -> TimelineMode {
        self.mode
    }

    /// Switch modes (at a keyframe, which carries the discontinuity indicator when the
    /// timestamps jump). Returns whether the output timestamps jump here.
    pub fn set_mode(&mut self, mode: TimelineMode) -> bool {
        if mode == self.mode {
            return false;
        }
        self.mode = mode;
        // Continuing from the source's timestamps (offset zero) until the next source change
        // keeps a switch to `continuous` seamless; a switch to `source` drops the offset.
        let jumps = self.offset_90k != 0;
        self.offset_90k = 0;
        self.phase = Phase::First;
        self.last_pcr_in = None;
        jumps
    }

    /// A new source starts: its timestamps are unrelated to the previous ones.
    pub fn new_source(&mut self) {
        self.last_pcr_in = None;
        if self.mode == TimelineMode::Continuous && self.has_sent_timestamps() {
            self.phase = Phase::Rebase;
        }
    }

    fn has_sent_timestamps(&self) -> bool {
        self.last_pcr_out.is_some() || self.latest_decode_out.is_some()
    }

    /// Rewrite the PCRs, PTSs and DTSs of `data` (whole TS packets) onto the output timeline,
    /// sent at `now`. Returns the first output PCR in 90 kHz units, if any.
    pub fn rewrite(&mut self, data: &mut [u8], now: Instant) -> Option<u64> {
        let mut first_pcr_90k = None;
        if self.mode == TimelineMode::Source {
            return None;
        }
        for packet in data.chunks_exact_mut(TS_PACKET_LEN) {
            let found = packet_timestamps(packet);
            let pid = u16::from_be_bytes([packet[1], packet[2]]) & 0x1FFF;
            if let Some(pcr) = found.pcr {
                let out = self.on_pcr(pcr, now);
                write_pcr(packet, out);
                first_pcr_90k.get_or_insert(out / 300);
            }
            if let Some(decode) = found.decode_time() {
                self.on_decode_time(pid, decode, now);
                for (at, value) in [found.pts, found.dts].into_iter().flatten() {
                    write_timestamp(&mut packet[at..at + 5], self.shift(value));
                }
                let out = self.shift(decode);
                self.last_decode_out.insert(pid, out);
                let later = self
                    .latest_decode_out
                    .map_or(true, |(latest, _)| signed_90k(out, latest) > 0);
                if later {
                    self.latest_decode_out = Some((out, now));
                }
            }
        }
        first_pcr_90k
    }

    fn shift(&self, value_90k: u64) -> u64 {
        (value_90k + self.offset_90k) % PTS_WRAP_90K
    }

    /// A source PCR (27 MHz): re-base if it starts a new source or breaks the source's
    /// clock, and return it on the output timeline.
    fn on_pcr(&mut self, pcr: u64, now: Instant) -> u64 {
        let pcr_90k = pcr / 300;
        let broke = self.last_pcr_in.is_some_and(|last| {
            let step = (pcr_90k + PTS_WRAP_90K - last) % PTS_WRAP_90K;
            step > MAX_PCR_STEP_90K
        });
        self.last_pcr_in = Some(pcr_90k);
        if broke || self.phase == Phase::Rebase {
            if let Some((last, at)) = self.last_pcr_out {
                self.rebase(last / 300 + elapsed_90k(at, now), pcr_90k, now);
            }
        }
        let out = (pcr + self.offset_90k * 300) % PCR_WRAP_27MHZ;
        self.last_pcr_out = Some((out, now));
        out
    }

    /// A PES decode time (90 kHz) on `pid`: sets the offset for a new source whose PCR has
    /// not come yet, and while settling keeps every stream's decode time moving forward.
    fn on_decode_time(&mut self, pid: u16, decode_90k: u64, now: Instant) {
        if self.phase == Phase::Rebase {
            if let Some((latest, at)) = self.latest_decode_out {
                self.rebase(
                    latest + MIN_DECODE_STEP_90K + elapsed_90k(at, now),
                    decode_90k,
                    now,
                );
            }
        }
        let Phase::Settling { until } = self.phase else {
            return;
        };
        if now >= until {
            self.phase = Phase::Steady;
            return;
        }
        if let Some(&last) = self.last_decode_out.get(&pid) {
            let behind = signed_90k(last + MIN_DECODE_STEP_90K, self.shift(decode_90k));
            if behind > 0 {
                self.offset_90k = (self.offset_90k + behind as u64) % PTS_WRAP_90K;
            }
        }
    }

    /// Make the source's `source_90k` come out as `expected_90k`.
    fn rebase(&mut self, expected_90k: u64, source_90k: u64, now: Instant) {
        self.offset_90k =
            (expected_90k % PTS_WRAP_90K + PTS_WRAP_90K - source_90k % PTS_WRAP_90K) % PTS_WRAP_90K;
        self.phase = Phase::Settling {
            until: now + SETTLE,
        };
    }
}

/// Wall-clock time since `since`, in 90 kHz ticks.
fn elapsed_90k(since: Instant, now: Instant) -> u64 {
    (now.saturating_duration_since(since).as_micros() * 9 / 100) as u64
}

/// `a - b` on the 33-bit circle, in (-2^32, 2^32].
fn signed_90k(a: u64, b: u64) -> i64 {
    let diff = (a % PTS_WRAP_90K + PTS_WRAP_90K - b % PTS_WRAP_90K) % PTS_WRAP_90K;
    if diff > PTS_WRAP_90K / 2 {
        diff as i64 - PTS_WRAP_90K as i64
    } else {
        diff as i64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::test_support::{timed_pes_packet, AUDIO_PID, VIDEO_PID};
    use crate::media::ts::packet_timestamps;

    const SECOND: u64 = 90_000;

    /// One video packet with a PCR `lead` before its DTS, rewritten at `now`; returns the
    /// output (PCR in 90 kHz, PTS, DTS).
    fn video(timeline: &mut Timeline, dts: u64, now: Instant) -> (u64, u64, u64) {
        let pcr = (dts + PTS_WRAP_90K - SECOND / 2) % PTS_WRAP_90K * 300;
        let mut packet = timed_pes_packet(VIDEO_PID, Some(pcr), dts + 3_600, Some(dts));
        timeline.rewrite(&mut packet, now);
        let found = packet_timestamps(&packet);
        (
            found.pcr.unwrap() / 300,
            found.pts.unwrap().1,
            found.dts.unwrap().1,
        )
    }

    fn audio(timeline: &mut Timeline, pts: u64, now: Instant) -> u64 {
        let mut packet = timed_pes_packet(AUDIO_PID, None, pts, None);
        timeline.rewrite(&mut packet, now);
        packet_timestamps(&packet).pts.unwrap().1
    }

    #[test]
    fn the_first_source_goes_out_unchanged() {
        let mut timeline = Timeline::new(TimelineMode::Continuous);
        let t0 = Instant::now();
        assert_eq!(
            video(&mut timeline, 10 * SECOND, t0),
            (10 * SECOND - SECOND / 2, 10 * SECOND + 3_600, 10 * SECOND)
        );
    }

    #[test]
    fn a_new_source_continues_from_the_last_timestamps_plus_the_time_that_passed() {
        let mut timeline = Timeline::new(TimelineMode::Continuous);
        let t0 = Instant::now();
        let (pcr, _, dts) = video(&mut timeline, 500 * SECOND, t0);
        assert_eq!(
            audio(&mut timeline, 500 * SECOND + 100, t0),
            500 * SECOND + 100
        );
        timeline.new_source();
        let later = t0 + Duration::from_secs(3);
        // The new encoder starts its clock at 1.4 s.
        let (pcr2, pts2, dts2) = video(&mut timeline, 1_400_000 / 1000 * 90, later);
        assert_eq!(pcr2, pcr + 3 * SECOND);
        assert_eq!(dts2, dts + 3 * SECOND);
        assert_eq!(pts2, dts2 + 3_600);
        // Its audio follows the same offset.
        let audio2 = audio(&mut timeline, 1_400_000 / 1000 * 90 + 900, later);
        assert_eq!(audio2, dts2 + 900);
    }

    #[test]
    fn a_stream_that_would_step_back_after_a_quick_change_moves_the_timeline_forward() {
        let mut timeline = Timeline::new(TimelineMode::Continuous);
        let t0 = Instant::now();
        video(&mut timeline, 100 * SECOND, t0);
        let last_audio = audio(&mut timeline, 100 * SECOND + 2 * SECOND, t0);
        timeline.new_source();
        let (_, _, dts) = video(&mut timeline, 5 * SECOND, t0 + Duration::from_millis(10));
        let audio2 = audio(&mut timeline, 5 * SECOND, t0 + Duration::from_millis(20));
        assert!(audio2 > last_audio, "{audio2} after {last_audio}");
        let (_, _, dts2) = video(
            &mut timeline,
            5 * SECOND + 3_600,
            t0 + Duration::from_millis(50),
        );
        assert!(dts2 > dts);
    }

    #[test]
    fn the_output_wraps_like_the_source_near_the_33_bit_limit() {
        let mut timeline = Timeline::new(TimelineMode::Continuous);
        let t0 = Instant::now();
        let near_wrap = PTS_WRAP_90K - SECOND;
        let (pcr, _, dts) = video(&mut timeline, near_wrap, t0);
        assert_eq!(dts, near_wrap);
        timeline.new_source();
        let (pcr2, _, dts2) = video(&mut timeline, 77 * SECOND, t0 + Duration::from_secs(2));
        assert_eq!(dts2, SECOND, "wrapped past zero");
        assert_eq!(pcr2, (pcr + 2 * SECOND) % PTS_WRAP_90K);
        // A source that wraps by itself keeps its offset.
        let (_, _, dts3) = video(&mut timeline, 78 * SECOND, t0 + Duration::from_secs(3));
        assert_eq!(dts3, 2 * SECOND);
        let mut at_wrap = Timeline::new(TimelineMode::Continuous);
        video(&mut at_wrap, PTS_WRAP_90K - 100, t0);
        let (_, _, wrapped) = video(&mut at_wrap, 900, t0 + Duration::from_millis(11));
        assert_eq!(wrapped, 900, "a wrap is not a break in the source's clock");
    }

    #[test]
    fn a_jump_in_the_source_clock_is_re_based_like_a_new_source() {
        let mut timeline = Timeline::new(TimelineMode::Continuous);
        let t0 = Instant::now();
        let (pcr, _, _) = video(&mut timeline, 1_000 * SECOND, t0);
        let (pcr2, _, dts2) = video(&mut timeline, 3 * SECOND, t0 + Duration::from_secs(1));
        assert_eq!(pcr2, pcr + SECOND);
        assert_eq!(dts2, 1_000 * SECOND + SECOND);
    }

    #[test]
    fn source_mode_keeps_the_encoders_timestamps_and_switching_is_flagged_when_they_jump() {
        let mut timeline = Timeline::new(TimelineMode::Source);
        let t0 = Instant::now();
        video(&mut timeline, 100 * SECOND, t0);
        timeline.new_source();
        assert_eq!(video(&mut timeline, 2 * SECOND, t0).2, 2 * SECOND);
        assert!(
            !timeline.set_mode(TimelineMode::Continuous),
            "offset zero: no jump"
        );
        video(&mut timeline, 3 * SECOND, t0);
        timeline.new_source();
        assert_eq!(
            video(&mut timeline, 50 * SECOND, t0 + Duration::from_secs(1)).2,
            4 * SECOND
        );
        assert!(timeline.set_mode(TimelineMode::Source));
        assert_eq!(video(&mut timeline, 51 * SECOND, t0).2, 51 * SECOND);
    }
}

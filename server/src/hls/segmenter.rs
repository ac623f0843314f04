//! Cuts a live point's chunks into HLS segments and partial segments.
//!
//! A plain state machine fed one chunk at a time, with the wall-clock time as a parameter, so
//! its decisions are unit-tested without a server. Segments start at keyframes (whose chunks
//! carry PAT/PMT first, see `points::live`) once the target duration is reached; partial
//! segments (low-latency HLS) are cut at chunk boundaries every part duration. Durations come
//! from the stream's PCRs. The chunks are the point's own refcounted buffers: a segment holds
//! references, never copies.

use std::collections::VecDeque;
use std::time::{Duration, SystemTime};

use bytes::Bytes;

/// PCRs in 90 kHz units wrap at 2^33.
const PCR_WRAP: u64 = 1 << 33;
/// A jump in the stream clock larger than this is a discontinuity, not elapsed time.
const MAX_CLOCK_STEP: Duration = Duration::from_secs(60);
/// Segments kept after they leave the playlist, for clients (and caches) still fetching them.
const SEGMENTS_KEPT_AFTER_WINDOW: usize = 2;

/// How a point's HLS is cut and how much of it is kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HlsSettings {
    /// A segment is closed at the first keyframe after this much media.
    pub target_duration: Duration,
    /// Segments listed in the playlist.
    pub window: usize,
    /// Partial segments of this duration (low-latency HLS); `None` turns them off.
    pub part_duration: Option<Duration>,
    /// Most bytes of segments held per point; the oldest go first past it.
    pub max_bytes: usize,
}

impl Default for HlsSettings {
    fn default() -> Self {
        Self {
            target_duration: Duration::from_secs(2),
            window: 6,
            part_duration: None,
            max_bytes: 64 * 1024 * 1024,
        }
    }
}

/// A partial segment: a run of its segment's chunks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Part {
    pub chunks: std::ops::Range<usize>,
    pub duration: Duration,
    /// Starts at a keyframe.
    pub independent: bool,
}

/// One segment, open (still growing) or complete.
#[derive(Clone, Debug)]
pub struct Segment {
    pub msn: u64,
    pub chunks: Vec<Bytes>,
    pub bytes: usize,
    /// Media duration; for the open segment, so far.
    pub duration: Duration,
    /// Wall-clock time of its first byte (`EXT-X-PROGRAM-DATE-TIME`).
    pub started: SystemTime,
    /// When it was completed (Last-Modified).
    pub completed: Option<SystemTime>,
    /// The encoder changed before this segment (`EXT-X-DISCONTINUITY`).
    pub discontinuity: bool,
    /// Completed partial segments.
    pub parts: Vec<Part>,
    /// The part being filled starts at a keyframe.
    next_part_independent: bool,
}

impl Segment {
    /// The bytes of chunks `range`, shared.
    pub fn pieces(&self, range: std::ops::Range<usize>) -> &[Bytes] {
        &self.chunks[range]
    }
}

/// Where the stream clock stands, for measuring durations.
#[derive(Clone, Copy, Debug, Default)]
struct Clock {
    segment_start: Option<u64>,
    part_start: Option<u64>,
    last: Option<u64>,
    /// The stream time between the last two chunks with a PCR: a part is closed when the
    /// next chunk would take it past its target.
    step: Duration,
}

/// Elapsed 90 kHz time from `from` to `to`, across a wrap; `None` for a jump.
fn elapsed(from: u64, to: u64) -> Option<Duration> {
    let ticks = (to + PCR_WRAP - from) % PCR_WRAP;
    let elapsed = Duration::from_micros(ticks * 100 / 9);
    (elapsed <= MAX_CLOCK_STEP).then_some(elapsed)
}

/// The segments of one live point.
#[derive(Debug)]
pub struct Segmenter {
    settings: HlsSettings,
    /// Completed segments, oldest first (the playlist's window plus a few kept after it).
    complete: VecDeque<Segment>,
    open: Option<Segment>,
    next_msn: u64,
    /// Discontinuities that left the window (`EXT-X-DISCONTINUITY-SEQUENCE`).
    discontinuity_sequence: u64,
    pending_discontinuity: bool,
    clock: Clock,
    /// Segments dropped early to stay under `max_bytes`.
    evicted_for_memory: u64,
    /// When the playlist last changed.
    pub changed: SystemTime,
}

impl Segmenter {
    pub fn new(settings: HlsSettings, now: SystemTime) -> Self {
        Self {
            settings,
            complete: VecDeque::new(),
            open: None,
            next_msn: 0,
            discontinuity_sequence: 0,
            pending_discontinuity: false,
            clock: Clock::default(),
            evicted_for_memory: 0,
            changed: now,
        }
    }

    pub fn settings(&self) -> &HlsSettings {
        &self.settings
    }

    /// New settings apply from the next cut.
    pub fn reconfigure(&mut self, settings: HlsSettings) {
        self.settings = settings;
    }

    /// Feed one chunk of the point. Returns whether the playlist changed (a part or a
    /// segment was completed).
    pub fn feed(
        &mut self,
        data: Bytes,
        random_access: bool,
        pcr_90k: Option<u64>,
        now: SystemTime,
    ) -> bool {
        let at = pcr_90k.or(self.clock.last);
        if let (Some(last), Some(pcr)) = (self.clock.last, pcr_90k) {
            self.clock.step = elapsed(last, pcr).unwrap_or_default();
        }
        if pcr_90k.is_some() {
            self.clock.last = pcr_90k;
        }
        let mut changed = false;
        if random_access && self.segment_due(at) {
            self.close_segment(at, now);
            changed = true;
        }
        if self.open.is_none() {
            if !random_access {
                return changed; // a segment starts at a keyframe
            }
            self.open_segment(at, now);
        }
        if self.part_due(at) {
            self.close_part(at, random_access);
            changed = true;
        }
        let open = self.open.as_mut().expect("opened above");
        open.bytes += data.len();
        open.chunks.push(data);
        if let (Some(start), Some(at)) = (self.clock.segment_start, at) {
            open.duration = elapsed(start, at).unwrap_or(open.duration);
        }
        self.enforce_memory_bound();
        if changed {
            self.changed = now;
        }
        changed
    }

    /// A new encoder took over within the grace: the open segment ends here and the next
    /// one is flagged as a discontinuity.
    pub fn restart(&mut self, now: SystemTime) {
        self.close_segment(self.clock.last, now);
        self.pending_discontinuity = true;
        self.clock = Clock::default();
        self.changed = now;
    }

    /// The point stopped being live: nothing is served until it is live again, then as a
    /// continuation (sequence numbers go on, so no cache ever sees a name reused).
    pub fn clear(&mut self, now: SystemTime) {
        self.open = None;
        self.complete.clear();
        self.pending_discontinuity = true;
        self.clock = Clock::default();
        self.changed = now;
    }

    fn segment_due(&self, at: Option<u64>) -> bool {
        let (Some(open), Some(start), Some(at)) = (&self.open, self.clock.segment_start, at) else {
            return false;
        };
        match elapsed(start, at) {
            Some(elapsed) => elapsed >= self.settings.target_duration,
            None => !open.chunks.is_empty(), // the clock jumped: start afresh
        }
    }

    fn part_due(&self, at: Option<u64>) -> bool {
        let (Some(target), Some(open), Some(start), Some(at)) = (
            self.settings.part_duration,
            &self.open,
            self.clock.part_start,
            at,
        ) else {
            return false;
        };
        let done = open.parts.last().map_or(0, |part| part.chunks.end);
        let step = self.clock.step;
        open.chunks.len() > done
            && elapsed(start, at)
                .map_or(true, |elapsed| elapsed >= target || elapsed + step > target)
    }

    fn open_segment(&mut self, at: Option<u64>, now: SystemTime) {
        self.open = Some(Segment {
            msn: self.next_msn,
            chunks: Vec::new(),
            bytes: 0,
            duration: Duration::ZERO,
            started: now,
            completed: None,
            discontinuity: std::mem::take(&mut self.pending_discontinuity),
            parts: Vec::new(),
            next_part_independent: true,
        });
        self.next_msn += 1;
        self.clock.segment_start = at;
        self.clock.part_start = at;
    }

    /// Complete the open part (its chunks so far), the next starting at a keyframe or not.
    fn close_part(&mut self, at: Option<u64>, next_independent: bool) {
        let Some(open) = self.open.as_mut() else {
            return;
        };
        let start = open.parts.last().map_or(0, |part| part.chunks.end);
        if open.chunks.len() <= start {
            return;
        }
        let duration = match (self.clock.part_start, at) {
            (Some(from), Some(to)) => elapsed(from, to).unwrap_or_default(),
            _ => Duration::ZERO,
        };
        open.parts.push(Part {
            chunks: start..open.chunks.len(),
            duration,
            independent: open.next_part_independent,
        });
        open.next_part_independent = next_independent;
        self.clock.part_start = at;
    }

    fn close_segment(&mut self, at: Option<u64>, now: SystemTime) {
        if self.settings.part_duration.is_some() {
            self.close_part(at, true);
        }
        let Some(mut segment) = self.open.take() else {
            return;
        };
        if segment.chunks.is_empty() {
            return;
        }
        if let (Some(start), Some(at)) = (self.clock.segment_start, at) {
            segment.duration = elapsed(start, at).unwrap_or(segment.duration);
        }
        segment.completed = Some(now);
        self.complete.push_back(segment);
        while self.complete.len() > self.settings.window + SEGMENTS_KEPT_AFTER_WINDOW {
            self.drop_oldest();
        }
    }

    fn drop_oldest(&mut self) {
        if let Some(gone) = self.complete.pop_front() {
            if gone.discontinuity {
                self.discontinuity_sequence += 1;
            }
        }
    }

    fn enforce_memory_bound(&mut self) {
        while self.bytes() > self.settings.max_bytes && self.complete.len() > 1 {
            self.drop_oldest();
            self.evicted_for_memory += 1;
        }
    }

    /// Bytes of media held.
    pub fn bytes(&self) -> usize {
        self.complete.iter().map(|s| s.bytes).sum::<usize>()
            + self.open.as_ref().map_or(0, |s| s.bytes)
    }

    pub fn evicted_for_memory(&self) -> u64 {
        self.evicted_for_memory
    }

    /// The completed segments in the playlist, oldest first.
    pub fn window(&self) -> impl Iterator<Item = &Segment> {
        let skip = self.complete.len().saturating_sub(self.settings.window);
        self.complete.iter().skip(skip)
    }

    /// The segment still growing, if any.
    pub fn open(&self) -> Option<&Segment> {
        self.open.as_ref()
    }

    /// A segment still held (in the window, or kept just after it), or the open one.
    pub fn segment(&self, msn: u64) -> Option<&Segment> {
        self.complete
            .iter()
            .chain(self.open.as_ref())
            .find(|segment| segment.msn == msn)
    }

    /// How many discontinuities went out of the window before its first segment.
    pub fn discontinuity_sequence(&self) -> u64 {
        let hidden = self.complete.len().saturating_sub(self.settings.window);
        self.discontinuity_sequence
            + self
                .complete
                .iter()
                .take(hidden)
                .filter(|segment| segment.discontinuity)
                .count() as u64
    }

    /// Whether anything can be listed yet.
    pub fn has_media(&self) -> bool {
        !self.complete.is_empty()
    }

    /// The last completed part: (msn, part index), for blocking reloads.
    pub fn last_part(&self) -> Option<(u64, u64)> {
        if let Some(open) = &self.open {
            if !open.parts.is_empty() {
                return Some((open.msn, open.parts.len() as u64 - 1));
            }
        }
        self.complete
            .back()
            .map(|s| (s.msn, s.parts.len().max(1) as u64 - 1))
    }

    /// The next media sequence number to be completed.
    pub fn next_complete_msn(&self) -> u64 {
        self.complete.back().map_or(0, |s| s.msn + 1)
    }
}

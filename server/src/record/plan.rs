//! The recorder's decisions as plain functions of time: file names, when a new file starts,
//! which old files retention deletes, and the rate of lag warnings. Nothing here touches the
//! disk, so every rule is unit-tested without a server.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// `YYYYMMDDTHHMMSSZ`: the start time in a file name.
const STAMP_LEN: usize = 16;
const EXTENSION: &str = ".ts";

/// The file name of `point`'s recording started at `start`: `<point>-YYYYMMDDTHHMMSSZ.ts`
/// (UTC, to the second).
pub fn file_name(point: &str, start: SystemTime) -> String {
    let secs = start
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs());
    let (year, month, day) = crate::access_log::civil_from_days((secs / 86_400) as i64);
    let of_day = secs % 86_400;
    format!(
        "{point}-{year:04}{month:02}{day:02}T{:02}{:02}{:02}Z{EXTENSION}",
        of_day / 3600,
        of_day / 60 % 60,
        of_day % 60
    )
}

/// The start time in `name` if it is one of `point`'s recordings (exactly the pattern of
/// [`file_name`]); anything else in the directory is never touched.
pub fn parse_file_name(point: &str, name: &str) -> Option<SystemTime> {
    let stamp = name
        .strip_prefix(point)?
        .strip_prefix('-')?
        .strip_suffix(EXTENSION)?;
    if stamp.len() != STAMP_LEN || !stamp.is_ascii() {
        return None;
    }
    let (date, rest) = stamp.split_at(8);
    let time = rest.strip_prefix('T')?.strip_suffix('Z')?;
    let digits = |text: &str| -> Option<u64> {
        text.bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| text.parse().ok())?
    };
    let (year, month, day) = (
        digits(&date[..4])?,
        digits(&date[4..6])?,
        digits(&date[6..])?,
    );
    let (hour, minute, second) = (
        digits(&time[..2])?,
        digits(&time[2..4])?,
        digits(&time[4..])?,
    );
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 59
    {
        return None;
    }
    let days = u64::try_from(days_from_civil(year as i64, month as u32, day as u32)).ok()?;
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second;
    let start = UNIX_EPOCH + Duration::from_secs(secs);
    // Round trip: a day that does not exist (31 February) is not our name.
    (file_name(point, start) == name).then_some(start)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_index = i64::from((month + 9) % 12);
    let day_of_year = (153 * month_index + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// What the writer does with one chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkAction {
    /// Close the current file (if any) and start one named by this time, with this chunk.
    Open(SystemTime),
    Write,
    /// No file can take this chunk: wait for a keyframe (or for the retry time).
    Skip,
}

/// When a new file starts: at a keyframe once the segment time is reached (less
/// [`KEYFRAME_JITTER`]) or the encoder restarted, and after a failure once the retry time has
/// come.
#[derive(Debug, Clone)]
pub struct Rotation {
    segment: Duration,
    /// Start of the open file.
    current: Option<SystemTime>,
    /// After a write failure: no file until then.
    retry_at: Option<SystemTime>,
    /// Consecutive failures, for the retry backoff.
    failures: u32,
}

/// How early a keyframe may arrive and still close a segment. A real-time encoder's keyframes
/// reach us with a few milliseconds of jitter; without this slack, a keyframe every second and
/// a one-second segment would give two-second files whenever a keyframe came a little early.
/// A tenth of the segment, at most this.
pub const KEYFRAME_JITTER: Duration = Duration::from_millis(250);

/// The first retry after a failure; each further failure doubles it, up to [`MAX_RETRY`].
pub const FIRST_RETRY: Duration = Duration::from_secs(1);
pub const MAX_RETRY: Duration = Duration::from_secs(60);

impl Rotation {
    pub fn new(segment: Duration) -> Self {
        Self {
            segment,
            current: None,
            retry_at: None,
            failures: 0,
        }
    }

    pub fn set_segment(&mut self, segment: Duration) {
        self.segment = segment;
    }

    /// The chunk at `now`: whether it starts a decodable picture, and whether it is the first
    /// of a new encoder (after a restart, or after the point ended).
    pub fn decide(&self, keyframe: bool, new_source: bool, now: SystemTime) -> ChunkAction {
        match self.current {
            None if !keyframe => ChunkAction::Skip,
            None => match self.retry_at {
                Some(retry) if now < retry => ChunkAction::Skip,
                _ => ChunkAction::Open(now),
            },
            Some(start) => {
                let slack = (self.segment / 10).min(KEYFRAME_JITTER);
                let elapsed = now.duration_since(start).unwrap_or_default();
                let due = new_source || elapsed + slack >= self.segment;
                // Names are to the second: a file never starts in its predecessor's second
                // (an encoder restart within it continues the file, from a keyframe).
                if keyframe && due && whole_seconds(now) > whole_seconds(start) {
                    ChunkAction::Open(now)
                } else {
                    ChunkAction::Write
                }
            }
        }
    }

    /// A file started at `start` is open.
    pub fn opened(&mut self, start: SystemTime) {
        self.current = Some(start);
        self.retry_at = None;
    }

    /// A file was written successfully: the backoff starts over.
    pub fn written(&mut self) {
        self.failures = 0;
    }

    /// The file is closed (the point ended).
    pub fn closed(&mut self) {
        self.current = None;
    }

    /// Opening or writing failed at `now`: no file until the returned retry time.
    pub fn failed(&mut self, now: SystemTime) -> SystemTime {
        self.current = None;
        let backoff = FIRST_RETRY
            .saturating_mul(1 << self.failures.min(16))
            .min(MAX_RETRY);
        self.failures = self.failures.saturating_add(1);
        let retry = now + backoff;
        self.retry_at = Some(retry);
        retry
    }
}

fn whole_seconds(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

/// The recordings of `point` among `names` that retention deletes at `now`: those whose
/// every byte is older than `retain`, i.e. whose successor started before `now - retain`.
/// The newest file (the one being written) is never among them; other names are ignored.
pub fn expired<'n>(
    point: &str,
    names: impl IntoIterator<Item = &'n str>,
    now: SystemTime,
    retain: Duration,
) -> Vec<&'n str> {
    let Some(cutoff) = now.checked_sub(retain) else {
        return Vec::new();
    };
    let mut files: Vec<(SystemTime, &str)> = names
        .into_iter()
        .filter_map(|name| Some((parse_file_name(point, name)?, name)))
        .collect();
    files.sort();
    files
        .windows(2)
        .filter(|pair| pair[1].0 <= cutoff)
        .map(|pair| pair[0].1)
        .collect()
}

/// Rate limit of `RECORDING_LAGGING`: one line per window, carrying what was dropped since
/// the last line.
#[derive(Debug, Clone)]
pub struct LagReport {
    window: Duration,
    last: Option<std::time::Instant>,
    dropped_bytes: u64,
    dropped_chunks: u64,
}

/// What a lag line reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dropped {
    pub bytes: u64,
    pub chunks: u64,
}

impl LagReport {
    pub fn new(window: Duration) -> Self {
        Self {
            window,
            last: None,
            dropped_bytes: 0,
            dropped_chunks: 0,
        }
    }

    /// `bytes` were dropped at `now`: what to log now, if anything.
    pub fn dropped(&mut self, bytes: u64, now: std::time::Instant) -> Option<Dropped> {
        self.dropped_bytes += bytes;
        self.dropped_chunks += 1;
        let due = self.last.map_or(true, |last| {
            now.saturating_duration_since(last) >= self.window
        });
        if !due {
            return None;
        }
        self.last = Some(now);
        let report = Dropped {
            bytes: std::mem::take(&mut self.dropped_bytes),
            chunks: std::mem::take(&mut self.dropped_chunks),
        };
        Some(report)
    }
}

/// A duration written as `90s`, `1h`, `1h30m`, `7d` or `500ms`.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let mut total = Duration::ZERO;
    let mut rest = text.trim();
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let value: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let unit = match &rest[..unit_len] {
            "ms" => Duration::from_millis(1),
            "s" => Duration::from_secs(1),
            "m" => Duration::from_secs(60),
            "h" => Duration::from_secs(3600),
            "d" => Duration::from_secs(86_400),
            _ => return None,
        };
        rest = &rest[unit_len..];
        total = total.checked_add(unit.checked_mul(u32::try_from(value).ok()?)?)?;
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    /// 2026-11-30T20:30:00Z
    const NOV_30: u64 = 1_796_070_600;

    #[test]
    fn names_are_the_utc_start_time_and_parse_back() {
        assert_eq!(file_name("live", at(NOV_30)), "live-20261130T203000Z.ts");
        assert_eq!(file_name("a", at(0)), "a-19700101T000000Z.ts");
        assert_eq!(file_name("x", at(951_782_400)), "x-20000229T000000Z.ts");
        for secs in [0, 951_782_400, NOV_30, NOV_30 + 86_399, 4_102_444_800] {
            let name = file_name("live", at(secs));
            assert_eq!(parse_file_name("live", &name), Some(at(secs)), "{name}");
        }
    }

    #[test]
    fn only_the_points_own_pattern_parses() {
        assert_eq!(
            parse_file_name("live", "live-20261130T203000Z.ts"),
            Some(at(NOV_30))
        );
        for other in [
            "live-b-20261130T203000Z.ts",
            "live-20261130T203000Z.ts.part",
            "live-20261130T203000.ts",
            "live-20260230T203000Z.ts",
            "live-20261130T246000Z.ts",
            "live2-20261130T203000Z.ts",
            "notes.txt",
            "live-2026113OT203000Z.ts",
        ] {
            assert_eq!(parse_file_name("live", other), None, "{other}");
        }
        // A point whose name is a prefix of another's never takes the other's files.
        assert_eq!(parse_file_name("a", "a-b-20261130T203000Z.ts"), None);
    }

    #[test]
    fn a_file_starts_at_the_first_keyframe() {
        let rotation = Rotation::new(Duration::from_secs(10));
        assert_eq!(rotation.decide(false, false, at(5)), ChunkAction::Skip);
        assert_eq!(
            rotation.decide(true, false, at(5)),
            ChunkAction::Open(at(5))
        );
    }

    #[test]
    fn a_new_file_starts_at_the_first_keyframe_past_the_segment_time() {
        let mut rotation = Rotation::new(Duration::from_secs(10));
        rotation.opened(at(100));
        assert_eq!(rotation.decide(true, false, at(109)), ChunkAction::Write);
        let too_early = at(110) - KEYFRAME_JITTER - Duration::from_millis(1);
        assert_eq!(rotation.decide(true, false, too_early), ChunkAction::Write);
        assert_eq!(rotation.decide(false, false, at(111)), ChunkAction::Write);
        assert_eq!(
            rotation.decide(true, false, at(111)),
            ChunkAction::Open(at(111))
        );
    }

    #[test]
    fn a_keyframe_a_little_early_still_closes_the_segment() {
        // A keyframe a second, a one-second segment: each keyframe, early by a few ms, rotates.
        let mut rotation = Rotation::new(Duration::from_secs(1));
        let start = at(100) + Duration::from_millis(900);
        rotation.opened(start);
        let early = start + Duration::from_millis(995);
        assert_eq!(
            rotation.decide(true, false, early),
            ChunkAction::Open(early)
        );
        // Early by more than a tenth of the segment: not yet.
        let too_early = start + Duration::from_millis(850);
        assert_eq!(rotation.decide(true, false, too_early), ChunkAction::Write);
    }

    #[test]
    fn an_encoder_restart_starts_a_new_file_unless_in_the_same_second() {
        let mut rotation = Rotation::new(Duration::from_secs(3600));
        rotation.opened(at(100));
        assert_eq!(
            rotation.decide(true, true, at(105)),
            ChunkAction::Open(at(105))
        );
        let same_second = at(100) + Duration::from_millis(700);
        assert_eq!(rotation.decide(true, true, same_second), ChunkAction::Write);
        rotation.closed();
        assert_eq!(rotation.decide(false, true, at(200)), ChunkAction::Skip);
        assert_eq!(
            rotation.decide(true, true, at(200)),
            ChunkAction::Open(at(200))
        );
    }

    #[test]
    fn a_failure_waits_with_a_bounded_backoff_then_reopens_at_a_keyframe() {
        let mut rotation = Rotation::new(Duration::from_secs(10));
        rotation.opened(at(100));
        assert_eq!(rotation.failed(at(100)), at(101));
        assert_eq!(rotation.decide(true, false, at(100)), ChunkAction::Skip);
        assert_eq!(rotation.decide(false, false, at(101)), ChunkAction::Skip);
        assert_eq!(
            rotation.decide(true, false, at(101)),
            ChunkAction::Open(at(101))
        );
        assert_eq!(rotation.failed(at(101)), at(103));
        assert_eq!(rotation.failed(at(103)), at(107));
        for _ in 0..20 {
            rotation.failed(at(200));
        }
        assert_eq!(rotation.failed(at(200)), at(200) + MAX_RETRY);
        rotation.opened(at(300));
        rotation.written();
        assert_eq!(rotation.failed(at(400)), at(401));
    }

    #[test]
    fn retention_deletes_files_whose_successor_started_before_the_cutoff() {
        let names: Vec<String> = [0, 10, 20, 30]
            .iter()
            .map(|offset| file_name("live", at(NOV_30 + offset)))
            .chain([
                "other-20261130T203000Z.ts".to_owned(),
                "live.txt".to_owned(),
            ])
            .collect();
        let names = || names.iter().map(String::as_str);
        // Now +35, retain 15: the cutoff is +20; files started at +0 and +10 end by +20.
        let gone = expired("live", names(), at(NOV_30 + 35), Duration::from_secs(15));
        assert_eq!(
            gone,
            [
                file_name("live", at(NOV_30)),
                file_name("live", at(NOV_30 + 10))
            ]
        );
        // The newest is kept however old.
        let gone = expired("live", names(), at(NOV_30 + 10_000), Duration::from_secs(1));
        assert_eq!(gone.len(), 3);
        assert!(!gone.contains(&file_name("live", at(NOV_30 + 30)).as_str()));
        assert!(expired("live", names(), at(NOV_30 + 35), Duration::from_secs(3600)).is_empty());
    }

    #[test]
    fn lag_lines_are_limited_to_one_per_window_and_carry_the_drops_between() {
        let start = std::time::Instant::now();
        let mut report = LagReport::new(Duration::from_secs(10));
        assert_eq!(
            report.dropped(100, start),
            Some(Dropped {
                bytes: 100,
                chunks: 1
            })
        );
        assert_eq!(report.dropped(50, start + Duration::from_secs(1)), None);
        assert_eq!(report.dropped(50, start + Duration::from_secs(9)), None);
        assert_eq!(
            report.dropped(10, start + Duration::from_secs(10)),
            Some(Dropped {
                bytes: 110,
                chunks: 3
            })
        );
    }

    #[test]
    fn durations_take_units_and_sums() {
        assert_eq!(parse_duration("2s"), Some(Duration::from_secs(2)));
        assert_eq!(parse_duration("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_duration("7d"), Some(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        for bad in ["", "1", "h", "1x", "1.5h", "-1s", "1 h"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }
}

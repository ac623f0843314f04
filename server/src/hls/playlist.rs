//! Media playlists (RFC 8216 and its low-latency extensions, RFC 8216bis) as text: the live
//! sliding window of a [`Segmenter`], and the on-demand playlist of an indexed file, cut at
//! its keyframes into segments that each start with PAT and PMT.

use std::fmt::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::segmenter::{Segment, Segmenter};
use crate::media::index::FileIndex;

/// Segments (counted from the newest) whose parts are listed; older ones only as segments.
const SEGMENTS_WITH_PARTS: usize = 3;

/// The name of segment `msn`.
pub fn segment_name(msn: u64) -> String {
    format!("seg{msn}.ts")
}

/// The name of part `part` of segment `msn`.
pub fn part_name(msn: u64, part: u64) -> String {
    format!("part{msn}.{part}.ts")
}

/// What a resource name below a point asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResourceName {
    Playlist,
    /// An initialisation section: never served (every segment carries its PAT and PMT);
    /// recognised so that it is answered 404 rather than as a file.
    Init,
    Segment(u64),
    Part(u64, u64),
}

impl ResourceName {
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "index.m3u8" => return Some(Self::Playlist),
            "init.ts" => return Some(Self::Init),
            _ => {}
        }
        let stem = name.strip_suffix(".ts")?;
        if let Some(msn) = stem.strip_prefix("seg") {
            return number(msn).map(Self::Segment);
        }
        let (msn, part) = stem.strip_prefix("part")?.split_once('.')?;
        Some(Self::Part(number(msn)?, number(part)?))
    }
}

/// Digits only: no sign, no leading `+`, bounded.
fn number(text: &str) -> Option<u64> {
    if text.is_empty() || text.len() > 18 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

fn seconds(duration: Duration) -> String {
    format!("{:.5}", duration.as_secs_f64())
}

/// `EXT-X-TARGETDURATION`: whole seconds, at least every segment's rounded duration.
fn target_duration<'a>(configured: Duration, segments: impl Iterator<Item = &'a Segment>) -> u64 {
    let longest = segments
        .map(|segment| segment.duration.as_secs_f64().round() as u64)
        .max()
        .unwrap_or(0);
    longest.max(configured.as_secs_f64().ceil() as u64).max(1)
}

/// The live playlist of `segmenter`, or `None` before its first segment is complete.
pub fn live(segmenter: &Segmenter) -> Option<String> {
    let first = segmenter.window().next()?;
    let settings = segmenter.settings();
    let target = target_duration(settings.target_duration, segmenter.window());
    let mut text = String::with_capacity(2048);
    text.push_str("#EXTM3U\n#EXT-X-VERSION:6\n");
    let _ = writeln!(text, "#EXT-X-TARGETDURATION:{target}");
    let _ = writeln!(text, "#EXT-X-MEDIA-SEQUENCE:{}", first.msn);
    let _ = writeln!(
        text,
        "#EXT-X-DISCONTINUITY-SEQUENCE:{}",
        segmenter.discontinuity_sequence()
    );
    if let Some(part) = settings.part_duration {
        let _ = writeln!(
            text,
            "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK={}",
            seconds(part * 3)
        );
        let _ = writeln!(text, "#EXT-X-PART-INF:PART-TARGET={}", seconds(part));
    }
    let listed: Vec<&Segment> = segmenter.window().collect();
    let with_parts = listed.len().saturating_sub(SEGMENTS_WITH_PARTS);
    for (i, segment) in listed.iter().enumerate() {
        segment_head(&mut text, segment);
        if settings.part_duration.is_some() && i >= with_parts {
            parts(&mut text, segment);
        }
        let _ = writeln!(text, "#EXTINF:{},", seconds(segment.duration));
        let _ = writeln!(text, "{}", segment_name(segment.msn));
    }
    if settings.part_duration.is_some() {
        if let Some(open) = segmenter.open() {
            segment_head(&mut text, open);
            parts(&mut text, open);
            let _ = writeln!(
                text,
                "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"{}\"",
                part_name(open.msn, open.parts.len() as u64)
            );
        }
    }
    Some(text)
}

fn segment_head(text: &mut String, segment: &Segment) {
    if segment.discontinuity {
        text.push_str("#EXT-X-DISCONTINUITY\n");
    }
    let _ = writeln!(
        text,
        "#EXT-X-PROGRAM-DATE-TIME:{}",
        iso8601(segment.started)
    );
}

fn parts(text: &mut String, segment: &Segment) {
    for (index, part) in segment.parts.iter().enumerate() {
        let _ = write!(
            text,
            "#EXT-X-PART:DURATION={},URI=\"{}\"",
            seconds(part.duration),
            part_name(segment.msn, index as u64)
        );
        text.push_str(if part.independent {
            ",INDEPENDENT=YES\n"
        } else {
            "\n"
        });
    }
}

/// One on-demand segment: a byte range of the file and its duration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileSegment {
    pub offset: u64,
    pub length: u64,
    pub duration: Duration,
}

/// Cut a file at its keyframes into segments of at least `target` (the last may be shorter).
pub fn file_segments(index: &FileIndex, target: Duration) -> Vec<FileSegment> {
    let mut starts: Vec<(u64, Duration)> = Vec::new();
    for entry in index.entries.iter().filter(|entry| entry.random_access) {
        let due = starts
            .last()
            .map_or(true, |(_, time)| entry.time.saturating_sub(*time) >= target);
        if due {
            starts.push((entry.offset, entry.time));
        }
    }
    if starts.first().map_or(true, |(offset, _)| *offset != 0) {
        // What precedes the first keyframe (PAT/PMT, say) belongs to the first segment.
        match starts.first_mut() {
            Some(first) => first.0 = 0,
            None => starts.push((0, Duration::ZERO)),
        }
    }
    let ends = starts
        .iter()
        .skip(1)
        .map(|&(offset, time)| (offset, time))
        .chain(std::iter::once((index.size, index.duration)));
    starts
        .iter()
        .zip(ends)
        .map(|(&(offset, time), (end, end_time))| FileSegment {
            offset,
            length: end.saturating_sub(offset),
            duration: end_time.saturating_sub(time),
        })
        .filter(|segment| segment.length > 0)
        .collect()
}

/// The on-demand playlist of a file: every segment, then the end.
pub fn on_demand(segments: &[FileSegment], target: Duration) -> String {
    let longest = segments
        .iter()
        .map(|segment| segment.duration.as_secs_f64().round() as u64)
        .max()
        .unwrap_or(0);
    let target = longest.max(target.as_secs_f64().ceil() as u64).max(1);
    let mut text = String::with_capacity(32 * segments.len() + 256);
    text.push_str("#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-PLAYLIST-TYPE:VOD\n");
    let _ = writeln!(text, "#EXT-X-TARGETDURATION:{target}");
    text.push_str("#EXT-X-MEDIA-SEQUENCE:0\n");
    for (n, segment) in segments.iter().enumerate() {
        let _ = writeln!(text, "#EXTINF:{},", seconds(segment.duration));
        let _ = writeln!(text, "{}", segment_name(n as u64));
    }
    text.push_str("#EXT-X-ENDLIST\n");
    text
}

/// `2026-11-30T19:48:44.123Z`.
pub fn iso8601(time: SystemTime) -> String {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = crate::access_log::civil_from_days(days as i64);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60,
        since.subsec_millis()
    )
}

use std::time::{Duration, SystemTime};

use bytes::Bytes;

use super::playlist::{self, ResourceName};
use super::segmenter::{HlsSettings, Segmenter};

const T0: u64 = 900_000;

fn settings(part_ms: Option<u64>) -> HlsSettings {
    HlsSettings {
        target_duration: Duration::from_secs(2),
        window: 3,
        part_duration: part_ms.map(Duration::from_millis),
        max_bytes: 1 << 30,
    }
}

/// Feed `seconds` of media in 100 ms chunks with a keyframe every second.
fn feed(segmenter: &mut Segmenter, start_90k: u64, seconds: u64) -> u64 {
    let now = SystemTime::now();
    let mut pcr = start_90k;
    for i in 0..seconds * 10 {
        segmenter.feed(Bytes::from(vec![0x47; 188]), i % 10 == 0, Some(pcr), now);
        pcr += 9_000;
    }
    pcr
}

#[test]
fn segments_start_at_keyframes_once_the_target_is_reached() {
    let mut segmenter = Segmenter::new(settings(None), SystemTime::now());
    // Media before the first keyframe is dropped.
    segmenter.feed(
        Bytes::from(vec![0x47; 188]),
        false,
        Some(T0),
        SystemTime::now(),
    );
    feed(&mut segmenter, T0, 7);
    let window: Vec<_> = segmenter.window().collect();
    assert_eq!(window.len(), 3, "two-second segments of seven seconds");
    assert_eq!(window[0].msn, 0);
    for segment in &window {
        assert_eq!(segment.duration, Duration::from_secs(2));
        assert_eq!(segment.chunks.len(), 20);
    }
    assert_eq!(segmenter.open().unwrap().msn, 3);
}

#[test]
fn the_window_slides_and_keeps_two_segments_after_it() {
    let mut segmenter = Segmenter::new(settings(None), SystemTime::now());
    feed(&mut segmenter, T0, 21);
    let first = segmenter.window().next().unwrap().msn;
    assert_eq!(first, 7, "segments 7, 8, 9 listed of 0..=9");
    assert!(segmenter.segment(5).is_some() && segmenter.segment(6).is_some());
    assert!(segmenter.segment(4).is_none());
}

#[test]
fn memory_is_bounded_by_dropping_the_oldest_segments() {
    let mut bounded = settings(None);
    bounded.max_bytes = 188 * 50;
    let mut segmenter = Segmenter::new(bounded, SystemTime::now());
    feed(&mut segmenter, T0, 9);
    assert!(segmenter.bytes() <= 188 * 50, "{}", segmenter.bytes());
    assert!(segmenter.evicted_for_memory() > 0);
    assert!(segmenter.window().count() >= 1);
}

#[test]
fn an_encoder_restart_is_a_discontinuity_and_numbering_goes_on() {
    let mut segmenter = Segmenter::new(settings(None), SystemTime::now());
    feed(&mut segmenter, T0, 5);
    segmenter.restart(SystemTime::now());
    // The new encoder's clock starts elsewhere.
    feed(&mut segmenter, 12_345, 5);
    let text = playlist::live(&segmenter).unwrap();
    assert_eq!(text.matches("#EXT-X-DISCONTINUITY\n").count(), 1, "{text}");
    let msns: Vec<u64> = segmenter.window().map(|s| s.msn).collect();
    assert!(msns.windows(2).all(|w| w[1] == w[0] + 1), "{msns:?}");
    assert!(text.contains("#EXT-X-PROGRAM-DATE-TIME:"));
    // Slide the discontinuity out of the window: the sequence counts it.
    feed(&mut segmenter, 500_000, 12);
    let text = playlist::live(&segmenter).unwrap();
    assert!(text.contains("#EXT-X-DISCONTINUITY-SEQUENCE:1\n"), "{text}");
    assert!(!text.contains("#EXT-X-DISCONTINUITY\n"));
}

#[test]
fn parts_are_cut_every_part_duration_and_the_next_is_hinted() {
    let mut segmenter = Segmenter::new(settings(Some(500)), SystemTime::now());
    feed(&mut segmenter, T0, 5);
    let window: Vec<_> = segmenter.window().collect();
    assert_eq!(window[0].parts.len(), 4, "{:?}", window[0].parts);
    assert!(window[0].parts[0].independent);
    assert!(!window[0].parts[1].independent);
    assert!(
        window[0].parts[2].independent,
        "the keyframe at 1 s starts the third part"
    );
    let text = playlist::live(&segmenter).unwrap();
    assert!(
        text.contains("#EXT-X-PART-INF:PART-TARGET=0.50000"),
        "{text}"
    );
    assert!(text.contains("CAN-BLOCK-RELOAD=YES"));
    assert!(text.contains("#EXT-X-PART:DURATION=0.50000,URI=\"part0.0.ts\",INDEPENDENT=YES"));
    let open = segmenter.open().unwrap();
    let hint = format!(
        "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"part{}.{}.ts\"",
        open.msn,
        open.parts.len()
    );
    assert!(text.ends_with(&format!("{hint}\n")), "{text}");
}

#[test]
fn nothing_is_listed_before_the_first_segment_and_after_a_clear() {
    let mut segmenter = Segmenter::new(settings(None), SystemTime::now());
    assert!(playlist::live(&segmenter).is_none());
    feed(&mut segmenter, T0, 5);
    assert!(playlist::live(&segmenter).is_some());
    segmenter.clear(SystemTime::now());
    assert!(playlist::live(&segmenter).is_none());
    feed(&mut segmenter, T0, 5);
    assert_eq!(
        segmenter.window().next().unwrap().msn,
        3,
        "names are never reused"
    );
}

#[test]
fn resource_names() {
    assert_eq!(
        ResourceName::parse("index.m3u8"),
        Some(ResourceName::Playlist)
    );
    assert_eq!(
        ResourceName::parse("seg12.ts"),
        Some(ResourceName::Segment(12))
    );
    assert_eq!(
        ResourceName::parse("part12.3.ts"),
        Some(ResourceName::Part(12, 3))
    );
    assert_eq!(ResourceName::parse("init.ts"), Some(ResourceName::Init));
    for bad in [
        "seg.ts",
        "seg-1.ts",
        "seg+1.ts",
        "part1.ts",
        "movie.ts",
        "seg1.m3u8",
    ] {
        assert_eq!(ResourceName::parse(bad), None, "{bad}");
    }
}

#[test]
fn dates_are_iso_8601_in_utc() {
    let time = SystemTime::UNIX_EPOCH + Duration::from_millis(1_796_067_724_123);
    assert_eq!(playlist::iso8601(time), "2026-11-30T19:42:04.123Z");
    let leap_day = SystemTime::UNIX_EPOCH + Duration::from_secs(951_782_400);
    assert_eq!(playlist::iso8601(leap_day), "2000-02-29T00:00:00.000Z");
    assert_eq!(
        playlist::iso8601(SystemTime::UNIX_EPOCH),
        "1970-01-01T00:00:00.000Z"
    );
}

#[test]
fn a_file_is_cut_at_keyframes_into_byte_ranges() {
    use crate::media::index::{FileIndex, IndexEntry};
    let entries = (0..10)
        .map(|i| IndexEntry {
            time: Duration::from_secs(i),
            offset: 188 * 100 * i + 376,
            random_access: true,
        })
        .collect();
    let index = FileIndex {
        duration: Duration::from_secs(10),
        size: 188 * 1000 + 376,
        entries,
        psi: Some(Bytes::from(vec![0x47; 376])),
    };
    let segments = playlist::file_segments(&index, Duration::from_secs(3));
    assert_eq!(segments.len(), 4);
    assert_eq!(
        segments[0].offset, 0,
        "the tables before the first keyframe belong to it"
    );
    assert_eq!(segments[1].offset, 188 * 300 + 376);
    let total: u64 = segments.iter().map(|s| s.length).sum();
    assert_eq!(total, index.size);
    let text = playlist::on_demand(&segments, Duration::from_secs(3));
    assert!(text.contains("#EXTINF:3.00000,\nseg0.ts\n"), "{text}");
    assert!(text.contains("#EXTINF:1.00000,\nseg3.ts\n"), "{text}");
    assert!(text.ends_with("#EXT-X-ENDLIST\n"));
    assert!(text.contains("#EXT-X-TARGETDURATION:3\n"));
}

#[test]
fn a_blocking_reload_is_satisfied_once_its_segment_or_part_exists() {
    use ferrocast_plugin_api::NO_BLOCK;
    let mut segmenter = Segmenter::new(settings(Some(500)), SystemTime::now());
    feed(&mut segmenter, T0, 5);
    let open = segmenter.open().unwrap();
    let (open_msn, parts) = (open.msn, open.parts.len() as u64);
    assert!(super::reload_satisfied(&segmenter, 0, NO_BLOCK));
    assert!(super::reload_satisfied(&segmenter, open_msn - 1, 3));
    assert!(super::reload_satisfied(&segmenter, open_msn, parts - 1));
    assert!(
        !super::reload_satisfied(&segmenter, open_msn, parts),
        "the hinted part"
    );
    assert!(
        !super::reload_satisfied(&segmenter, open_msn, NO_BLOCK),
        "still open"
    );
    assert!(!super::reload_satisfied(&segmenter, open_msn + 1, 0));
}

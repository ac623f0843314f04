//! End to end against ffmpeg: an FLV made by ffmpeg from the shipped sample is split into its
//! tags, remuxed, and the TS must decode without a single error, with both streams starting
//! together. Skipped (with the reason printed) where ffmpeg is not installed.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::ts::PACKET_LEN;
use super::{FlvToTs, TagKind};

fn sample() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/media/sample.ts")
}

fn have(tool: &str) -> bool {
    Command::new(tool)
        .arg("-version")
        .output()
        .is_ok_and(|o| o.status.success())
}

fn scratch(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("ferrocast-remux-{}-{name}", std::process::id()))
}

/// Sync bytes, and continuity counters that step by one per PID on every packet with payload
/// and repeat on packets without.
fn assert_well_formed(ts: &[u8]) {
    assert_eq!(ts.len() % PACKET_LEN, 0);
    let mut counters = std::collections::HashMap::new();
    for (index, packet) in ts.chunks(PACKET_LEN).enumerate() {
        assert_eq!(packet[0], 0x47, "packet {index}");
        let pid = u16::from_be_bytes([packet[1], packet[2]]) & 0x1FFF;
        let step = u8::from(packet[3] & 0x10 != 0);
        let counter = packet[3] & 0x0F;
        if let Some(previous) = counters.insert(pid, counter) {
            assert_eq!(
                counter,
                (previous + step) & 0x0F,
                "packet {index} on PID {pid:#x}"
            );
        }
    }
}

/// `ffmpeg -i sample.ts <extra> -c copy -f flv` into a file, read back.
fn make_flv(name: &str, extra: &[&str]) -> Vec<u8> {
    let path = scratch(name);
    let status = Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-i"])
        .arg(sample())
        .args(extra)
        .args(["-c", "copy", "-f", "flv"])
        .arg(&path)
        .status()
        .unwrap();
    assert!(status.success(), "ffmpeg could not make {name}");
    let flv = std::fs::read(&path).unwrap();
    let _ = std::fs::remove_file(path);
    flv
}

/// The (type, timestamp, body) of every tag of an FLV file.
fn flv_tags(flv: &[u8]) -> Vec<(u8, u32, &[u8])> {
    assert_eq!(&flv[..3], b"FLV");
    let header_len = u32::from_be_bytes(flv[5..9].try_into().unwrap()) as usize;
    let mut at = header_len + 4;
    let mut tags = Vec::new();
    while at + 11 <= flv.len() {
        let head = &flv[at..at + 11];
        let size = u32::from_be_bytes([0, head[1], head[2], head[3]]) as usize;
        let timestamp = u32::from_be_bytes([head[7], head[4], head[5], head[6]]);
        let body = &flv[at + 11..at + 11 + size];
        tags.push((head[0] & 0x1F, timestamp, body));
        at += 11 + size + 4;
    }
    tags
}

fn remux(flv: &[u8]) -> Vec<u8> {
    let mut remux = FlvToTs::new();
    let mut ts = Vec::new();
    for (tag_type, timestamp, body) in flv_tags(flv) {
        let kind = match tag_type {
            8 => TagKind::Audio,
            9 => TagKind::Video,
            _ => TagKind::Script,
        };
        let before = ts.len();
        remux.push(kind, timestamp, body, &mut ts).unwrap();
        assert_eq!((ts.len() - before) % PACKET_LEN, 0);
    }
    assert_well_formed(&ts);
    ts
}

/// The video packets ffprobe counts in the scratch file `name`, which is then removed.
fn video_packets(name: &str) -> u32 {
    let packets = Command::new("ffprobe")
        .args(["-v", "error", "-count_packets", "-select_streams", "v"])
        .args(["-show_entries", "stream=nb_read_packets", "-of", "flat"])
        .arg(scratch(name))
        .output()
        .unwrap();
    let _ = std::fs::remove_file(scratch(name));
    let packets = String::from_utf8(packets.stdout).unwrap();
    packets
        .lines()
        .find_map(|line| line.strip_prefix("streams.stream.0.nb_read_packets="))
        .and_then(|value| value.trim_matches('"').parse().ok())
        .unwrap_or_else(|| panic!("no packet count in {packets}"))
}

/// Decodes `ts` with `-xerror`; returns ffprobe's `codec_name,start_time` per stream.
fn decode_and_probe(name: &str, ts: &[u8]) -> Vec<(String, f64)> {
    let path = scratch(name);
    std::fs::write(&path, ts).unwrap();
    let decode = Command::new("ffmpeg")
        .args(["-v", "error", "-xerror", "-i"])
        .arg(&path)
        .args(["-f", "null", "-"])
        .output()
        .unwrap();
    let errors = String::from_utf8_lossy(&decode.stderr);
    assert!(
        decode.status.success() && errors.trim().is_empty(),
        "decode errors: {errors}"
    );
    let probe = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "stream=codec_name,start_time",
        ])
        .args(["-of", "flat"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(probe.status.success());
    // Lines such as `streams.stream.0.codec_name="h264"`; the program's copies are skipped.
    let probe = String::from_utf8(probe.stdout).unwrap();
    let field = |line: &str, name: &str| {
        let value = line.split_once(&format!(".{name}="))?.1;
        Some(value.trim_matches('"').to_owned())
    };
    let lines: Vec<&str> = probe
        .lines()
        .filter(|l| l.starts_with("streams."))
        .collect();
    let codecs = lines.iter().filter_map(|line| field(line, "codec_name"));
    let starts = lines.iter().filter_map(|line| field(line, "start_time"));
    codecs
        .zip(starts)
        .map(|(codec, start)| (codec, start.parse().unwrap()))
        .collect()
}

#[test]
fn ffmpeg_flv_of_the_sample_remuxes_to_a_ts_that_decodes_in_sync() {
    if !have("ffmpeg") || !have("ffprobe") {
        eprintln!("skipped: ffmpeg and ffprobe are needed to make and check the streams");
        return;
    }
    let ts = remux(&make_flv("av.flv", &[]));
    let streams = decode_and_probe("av.ts", &ts);
    let codecs: Vec<&str> = streams.iter().map(|(codec, _)| codec.as_str()).collect();
    assert_eq!(codecs, ["h264", "aac"]);
    let skew = (streams[0].1 - streams[1].1).abs();
    assert!(
        skew < 0.1,
        "audio and video start {skew:.3} s apart: {streams:?}"
    );

    let frames = video_packets("av.ts");
    // 12 s at 25 fps in the sample (300 frames): every frame made it through.
    assert!(frames == 300, "only {frames} video frames");
}

#[test]
fn audio_only_flv_remuxes_to_a_ts_that_decodes() {
    if !have("ffmpeg") || !have("ffprobe") {
        eprintln!("skipped: ffmpeg and ffprobe are needed to make and check the streams");
        return;
    }
    let ts = remux(&make_flv("audio.flv", &["-vn"]));
    let streams = decode_and_probe("audio.ts", &ts);
    let _ = std::fs::remove_file(scratch("audio.ts"));
    assert_eq!(streams.len(), 1);
    assert_eq!(streams[0].0, "aac");
}

/// The NAL units of an Annex B stream, without start codes.
fn annex_b_nal_units(stream: &[u8]) -> Vec<&[u8]> {
    let mut starts = Vec::new();
    let mut at = 0;
    while at + 3 <= stream.len() {
        if stream[at..at + 3] == [0, 0, 1] {
            starts.push(at + 3);
            at += 3;
        } else {
            at += 1;
        }
    }
    let ends = starts
        .iter()
        .skip(1)
        .map(|&next| next - 3)
        .chain([stream.len()]);
    starts
        .iter()
        .zip(ends)
        .map(|(&start, end)| {
            let mut nal = &stream[start..end];
            // The zero byte of the next 4-byte start code.
            while nal.last() == Some(&0) {
                nal = &nal[..nal.len() - 1];
            }
            nal
        })
        .collect()
}

#[test]
fn hevc_over_enhanced_rtmp_remuxes_to_a_ts_that_decodes() {
    let x265 = Command::new("ffmpeg")
        .args(["-hide_banner", "-encoders"])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("libx265"));
    if !x265 || !have("ffprobe") {
        eprintln!("skipped: ffmpeg with libx265 and ffprobe are needed to make and check HEVC");
        return;
    }
    // 50 frames, one keyframe a second, no B-frames, an access unit delimiter in front of
    // each access unit (to find where each one starts).
    let path = scratch("hevc.h265");
    let status = Command::new("ffmpeg")
        .args([
            "-v",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=320x240:rate=25",
        ])
        .args(["-t", "2", "-c:v", "libx265"])
        .args(["-x265-params", "log-level=none:bframes=0:keyint=25:aud=1"])
        .args(["-f", "hevc"])
        .arg(&path)
        .status()
        .unwrap();
    assert!(status.success());
    let stream = std::fs::read(&path).unwrap();
    let _ = std::fs::remove_file(&path);
    let nal_type = |nal: &[u8]| (nal[0] >> 1) & 0x3F;

    // Enhanced RTMP: a SequenceStart with an HEVCDecoderConfigurationRecord, then
    // CodedFramesX (no composition offset) of length-prefixed NAL units.
    let nals = annex_b_nal_units(&stream);
    let mut record = vec![1];
    record.extend_from_slice(&[0; 20]);
    record.push(0x0F);
    record.push(3);
    for wanted in [32, 33, 34] {
        let set = nals.iter().find(|nal| nal_type(nal) == wanted).unwrap();
        record.extend_from_slice(&[0x80 | wanted, 0, 1]);
        record.extend_from_slice(&(set.len() as u16).to_be_bytes());
        record.extend_from_slice(set);
    }
    let mut remux = FlvToTs::new();
    let mut ts = Vec::new();
    let mut sequence_start = b"\x90hvc1".to_vec();
    sequence_start.extend_from_slice(&record);
    remux
        .push(TagKind::Video, 0, &sequence_start, &mut ts)
        .unwrap();
    let units = nals
        .split(|nal| nal_type(nal) == 35)
        .filter(|unit| !unit.is_empty());
    let mut frames = 0u32;
    for (index, unit) in units.enumerate() {
        // IRAP pictures (types 16 to 23) are keyframes.
        let keyframe = unit.iter().any(|nal| (16..=23).contains(&nal_type(nal)));
        let mut tag = vec![0x80 | if keyframe { 0x10 } else { 0x20 } | 3];
        tag.extend_from_slice(b"hvc1");
        for nal in unit {
            tag.extend_from_slice(&(nal.len() as u32).to_be_bytes());
            tag.extend_from_slice(nal);
        }
        remux
            .push(TagKind::Video, index as u32 * 40, &tag, &mut ts)
            .unwrap();
        frames += 1;
    }
    assert_eq!(frames, 50);
    assert_well_formed(&ts);
    let streams = decode_and_probe("hevc.ts", &ts);
    assert_eq!(streams.len(), 1);
    assert_eq!(streams[0].0, "hevc");
    assert_eq!(video_packets("hevc.ts"), 50);
}

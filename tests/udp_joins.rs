//! Late joiners over RTP/UDP: 50 RTSP clients join a 4 Mbps stream with a 2 s GOP one after
//! another, each with the default socket receive buffer and reading its RTP socket from PLAY
//! on. Their catch-up GOP is paced, so none loses a packet, each gets the start of its first
//! keyframe at once, and the first 3 s of each decode without errors.

use std::collections::VecDeque;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferrocast_tests::paced::{bytes_per_tick, PacedEncoder};
use ferrocast_tests::watch::RtpWatch;
use ferrocast_tests::*;

const CLIENTS: usize = 50;
/// A client joins this long after the previous one.
const JOIN_EVERY: Duration = Duration::from_millis(500);
/// How long each client watches.
const WATCH_FOR: Duration = Duration::from_secs(4);
/// The first keyframe's start (the pacer's first burst, 64 KiB: about 50 RTP packets) is sent
/// at once; on a loaded test machine it must still arrive within this.
const FIRST_KEYFRAME_WITHIN: Duration = Duration::from_millis(500);
const FIRST_BURST_PACKETS: usize = 48;

/// 12 s of a 640x360 test pattern at a constant 4 Mbps, one keyframe every 2 s, with AAC.
fn stream_sample(dir: &std::path::Path) -> Arc<[u8]> {
    let file = dir.join("4mbps-2s-gop.ts");
    let status = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-nostdin", "-y"])
        .args(["-f", "lavfi", "-i", "testsrc2=size=640x360:rate=25"])
        .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"])
        .args(["-t", "12", "-c:v", "libx264", "-preset", "ultrafast"])
        .args(["-g", "50", "-keyint_min", "50", "-sc_threshold", "0"])
        .args([
            "-b:v", "4M", "-minrate", "4M", "-maxrate", "4M", "-bufsize", "2M",
        ])
        .args(["-x264-params", "nal-hrd=cbr", "-pix_fmt", "yuv420p"])
        .args(["-c:a", "aac", "-b:a", "128k", "-f", "mpegts"])
        .arg(&file)
        .status()
        .expect("run ffmpeg");
    assert!(status.success(), "encoding the sample failed");
    std::fs::read(&file).unwrap().into()
}

/// What one client saw, checked when it is done.
fn check_client(number: usize, watch: RtpWatch, dir: &std::path::Path) {
    watch.stop();
    let gaps = watch.seq_gaps();
    assert!(
        gaps.is_empty(),
        "client {number} lost packets: {} gaps, first {:?} of {} packets",
        gaps.len(),
        gaps.first(),
        watch.packets()
    );
    assert!(
        watch.packets() > 1000,
        "client {number}: {} packets",
        watch.packets()
    );
    let file = dir.join(format!("client-{number}.ts"));
    std::fs::write(&file, watch.transport_stream()).unwrap();
    let path = file.display().to_string();
    let decoded = decode(&path, &[], Some(3.0));
    decoded.assert_clean(60, &format!("client {number}"));
    let (frames, _) = first_frames(&path, 1);
    assert_eq!(
        frames.first().map(|f| f.0),
        Some(true),
        "client {number} starts at a keyframe"
    );
}

#[test]
fn fifty_udp_joiners_lose_nothing_and_start_at_once() {
    let plugins = shipped_plugins_dir(&["http", "rtsp", "udp"]);
    let (http, rtsp) = (loopback(), loopback());
    let points = standard_points().replace(
        "protocols = [\"http\"]",
        "protocols = [\"http\", \"rtsp\", \"udp\"]",
    );
    let config = format!(
        "{}\n[plugins.rtsp]\nlisten = [\"{rtsp}\"]\n\n[plugins.udp]\n",
        config_with(http, &points)
    );
    let server = Ferrocast::start(&config, plugins.path(), http);
    let dir = server.dir.path().to_path_buf();
    let sample = stream_sample(&dir);
    let per_tick = bytes_per_tick(&sample);
    let _encoder = PacedEncoder::start(http, Arc::clone(&sample), per_tick);
    wait_until_live(http, "/live", Duration::from_secs(10));
    // A full GOP and its bitrate known to the point.
    std::thread::sleep(Duration::from_secs(3));

    let mut watching: VecDeque<(usize, RtpWatch)> = VecDeque::new();
    let mut next_join = Instant::now();
    let mut joined = 0;
    while joined < CLIENTS || !watching.is_empty() {
        if joined < CLIENTS && Instant::now() >= next_join {
            let watch = RtpWatch::rtsp_udp(rtsp, "live");
            assert!(
                watch.wait_packets(FIRST_BURST_PACKETS, FIRST_KEYFRAME_WITHIN),
                "client {joined}: the first keyframe did not arrive within {FIRST_KEYFRAME_WITHIN:?}"
            );
            watching.push_back((joined, watch));
            joined += 1;
            next_join = Instant::now() + JOIN_EVERY;
        }
        let done = watching
            .front()
            .is_some_and(|(_, watch)| watch.started.elapsed() >= WATCH_FOR);
        if done {
            let (number, watch) = watching.pop_front().unwrap();
            check_client(number, watch, &dir);
        } else {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

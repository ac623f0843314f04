//! Late joiners over RTP/UDP: 50 RTSP clients join a 4 Mbps stream with a 2 s GOP one after
//! another, each with the default socket receive buffer and reading its RTP socket from PLAY
//! on. Their catch-up GOP is paced, so none loses a packet, each gets the start of its first
//! keyframe at once, and the first 3 s of each decode without errors. A UDP push added by a
//! reload while the point is mid-GOP is paced the same way.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::UdpSocket;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferrocast_tests::paced::{bytes_per_tick, PacedEncoder};
use ferrocast_tests::rtsp_rig::RtspRig;
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
    let rig = RtspRig::standard_over_udp();
    let (server, rtsp) = (&rig.server, rig.rtsp);
    let http = server.http;
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

/// How long a push receiver does not read after its first packet.
const PLAYER_SETUP: Duration = Duration::from_millis(10);

/// RTP sequence numbers arriving on `socket` (default receive buffer), for [`WATCH_FOR`] after
/// the first (or until `limit` passes).
fn receive_sequence(socket: UdpSocket, limit: Duration) -> std::thread::JoinHandle<Vec<u16>> {
    std::thread::spawn(move || {
        socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let deadline = Instant::now() + limit;
        let mut first: Option<Instant> = None;
        let mut sequence = Vec::new();
        let mut buf = [0u8; 2048];
        while Instant::now() < deadline && first.is_none_or(|at| at.elapsed() < WATCH_FOR) {
            if let Ok(n) = socket.recv(&mut buf) {
                if n >= 12 {
                    if first.is_none() {
                        // A player sets up its decoder on the first packet before it reads on.
                        std::thread::sleep(PLAYER_SETUP);
                        first = Some(Instant::now());
                    }
                    sequence.push(u16::from_be_bytes([buf[2], buf[3]]));
                }
            }
        }
        sequence
    })
}

/// When a keyframe of the live stream (not of a join's backlog) reached an HTTP client: the
/// second video packet with the random access indicator it receives.
fn next_live_keyframe(http: std::net::SocketAddr) -> Instant {
    let mut stream = std::net::TcpStream::connect(http).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream
        .write_all(b"GET /live HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    let (mut data, mut keyframes, mut buf) = (Vec::new(), 0, [0u8; 65536]);
    while Instant::now() < deadline {
        let n = stream.read(&mut buf).expect("read the live stream");
        assert!(n > 0, "the live stream ended");
        data.extend_from_slice(&buf[..n]);
        let body = match data.windows(4).position(|w| w == b"\r\n\r\n") {
            Some(end) => &data[end + 4..],
            None => continue,
        };
        // ffmpeg flags audio packets too; the video is on PID 0x100.
        let random_access = |p: &[u8]| {
            p[0] == 0x47
                && u16::from_be_bytes([p[1], p[2]]) & 0x1fff == 0x100
                && p[3] & 0x20 != 0
                && p[4] > 0
                && p[5] & 0x40 != 0
        };
        let seen = body.chunks_exact(188).filter(|p| random_access(p)).count();
        if seen > keyframes && keyframes >= 1 {
            return Instant::now();
        }
        keyframes = seen;
    }
    panic!("no keyframe within 15 s");
}

#[test]
fn a_udp_push_added_mid_gop_loses_nothing() {
    let plugins = shipped_plugins_dir(&["http", "udp"]);
    let http = loopback();
    let points =
        standard_points().replace("protocols = [\"http\"]", "protocols = [\"http\", \"udp\"]");
    let config = format!("{}\n[plugins.udp]\n", config_with(http, &points));
    let server = Ferrocast::start(&config, plugins.path(), http);
    let dir = server.dir.path().to_path_buf();
    let sample = stream_sample(&dir);
    let _encoder = PacedEncoder::start(http, Arc::clone(&sample), bytes_per_tick(&sample));
    wait_until_live(http, "/live", Duration::from_secs(10));

    let receiver = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = receiver.local_addr().unwrap().port();
    let received = receive_sequence(receiver, Duration::from_secs(30));
    // Add the push 1.5 s into a GOP, when the point holds most of one.
    let keyframe = next_live_keyframe(http);
    std::thread::sleep(
        (keyframe + Duration::from_millis(1500)).saturating_duration_since(Instant::now()),
    );
    let with_push = config.replace(
        "[plugins.udp]\n",
        &format!("[plugins.udp]\npush = [{{ point = \"live\", destination = \"127.0.0.1:{port}\", format = \"rtp\" }}]\n"),
    );
    let path = server.config_path();
    std::fs::write(path.with_extension("new"), with_push).unwrap();
    std::fs::rename(path.with_extension("new"), &path).unwrap();
    let reload = server.command(&["reload"]);
    assert_eq!(reload.code, Some(0), "{}", reload.text);
    server.wait_for("pushing point", Duration::from_secs(15));

    let sequence = received.join().unwrap();
    assert!(sequence.len() > 1000, "{} packets", sequence.len());
    let gaps = sequence
        .windows(2)
        .filter(|pair| pair[1] != pair[0].wrapping_add(1))
        .count();
    assert_eq!(gaps, 0, "the push lost packets at its start");
}

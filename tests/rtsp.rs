//! RTSP with the real binary and the real `rtsp`, `udp` and `tcp` plugins, against ffmpeg:
//! live over UDP and over TCP interleaved, on-demand with a seek and its duration, PAUSE and
//! resume with continuous RTP sequence numbers, rollover from UDP to TCP when a point does
//! not allow UDP, and the refusals.

use std::process::Command;
use std::time::Duration;

use ferrocast_tests::rtsp_rig::{standard_points_over, RtspRig};
use ferrocast_tests::*;

/// HTTP, RTSP and both RTP transports: `live` and `vod` on all of them, `tcponly` on demand
/// over RTSP with interleaved RTP only, `httponly` on demand over HTTP only.
fn rig() -> RtspRig {
    let sample = sample_ts().display().to_string();
    let points = format!(
        "{}\n{}\n{}",
        standard_points_over(&["rtsp", "udp", "tcp"]),
        point_toml("tcponly", "on-demand", &sample, &["rtsp", "tcp"]),
        point_toml("httponly", "on-demand", &sample, &["http"])
    );
    RtspRig::start(&["udp", "tcp"], &points)
}

#[test]
fn live_over_rtsp_with_udp_and_with_tcp() {
    let rig = rig();
    let _encoder = Encoder::push_live(&rig.server, 40);
    std::thread::sleep(Duration::from_millis(1500));

    let udp = decode(&rig.url("live"), &["-rtsp_transport", "udp"], Some(3.0));
    udp.assert_clean(60, "RTSP/UDP");
    let tcp = decode(&rig.url("live"), &["-rtsp_transport", "tcp"], Some(3.0));
    tcp.assert_clean(60, "RTSP/TCP");
    let (frames, errors) = first_frames(&rig.url("live"), 3);
    assert!(errors.trim().is_empty(), "{errors}");
    assert_eq!(frames.first(), Some(&(true, "I".to_owned())), "{frames:?}");
    let logs = rig.server.logs();
    assert!(logs.contains("transport=RTP/AVP/UDP unicast"), "{logs}");
    assert!(logs.contains("transport=RTP/AVP/TCP interleaved"), "{logs}");
}

#[test]
fn on_demand_over_rtsp_seeks_and_reports_its_duration() {
    let rig = rig();
    let probe = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-rtsp_transport",
            "tcp",
            "-show_entries",
            "format=duration",
            "-of",
            "csv=p=0",
        ])
        .arg(rig.url("vod"))
        .output()
        .unwrap();
    let duration: f64 = String::from_utf8_lossy(&probe.stdout)
        .trim()
        .parse()
        .unwrap_or(0.0);
    assert!(
        (11.5..=12.5).contains(&duration),
        "duration {duration}: {}",
        String::from_utf8_lossy(&probe.stderr)
    );

    let whole = decode(&rig.url("vod"), &["-rtsp_transport", "tcp"], None);
    whole.assert_clean(295, "whole file over RTSP/TCP");

    // A PLAY with a Range starts at the keyframe at or before it, PAT/PMT first; the bytes
    // are the file's own from there, and they decode without a single error.
    let mut client = RtspClient::connect(rig.rtsp);
    let url = rig.url("vod");
    let play = client.setup_and_play(&url, Some("npt=6.5-"));
    let range = play.header("range").unwrap_or_default();
    let start = play.range_start().unwrap_or(-1.0);
    assert!(
        (5.5..=6.5).contains(&start),
        "seek to 6.5 s started at {range}"
    );
    client.receive_for(Duration::from_millis(2500));
    let received = client.transport_stream();
    let file = rig.server.dir.path().join("seeked.ts");
    std::fs::write(&file, &received).unwrap();
    let (frames, errors) = first_frames(&file.display().to_string(), 3);
    assert!(errors.trim().is_empty(), "{errors}");
    assert_eq!(frames.first(), Some(&(true, "I".to_owned())), "{frames:?}");
    let decoded = decode(&file.display().to_string(), &[], Some(2.0));
    decoded.assert_clean(45, "seek");

    // ffmpeg seeks the same way: `-ss` before `-i` sends a PLAY with a Range. (ffmpeg first
    // plays from the start and then seeks; its RTP/MP2T depacketizer keeps the partial frame
    // from before the seek, so its decoder reports that frame, and its output clock starts
    // about a second late; both are ffmpeg's own, whatever the server. The exact bytes and a
    // clean decode after a seek are checked above.)
    let seeked = decode(
        &rig.url("vod"),
        &["-rtsp_transport", "udp", "-ss", "6"],
        Some(3.0),
    );
    assert!(seeked.status.success(), "{}", seeked.errors);
    assert!(
        (40..=80).contains(&seeked.video_frames),
        "{} frames",
        seeked.video_frames
    );
    let logs = rig.server.logs();
    assert!(
        logs.lines()
            .any(|l| l.contains("play started on transports") && !l.contains("start_ms=0 ")),
        "no ranged PLAY in the log:\n{logs}"
    );
}

#[test]
fn pause_and_resume_keep_position_and_rtp_sequence() {
    let rig = rig();
    let mut client = RtspClient::connect(rig.rtsp);
    let url = rig.url("vod");
    let described = client.request("DESCRIBE", &url, &[("Accept", "application/sdp")]);
    assert_eq!(described.status, 200, "{described:?}");
    let end: f64 = described
        .body
        .lines()
        .find_map(|l| l.strip_prefix("a=range:npt=0-"))
        .and_then(|v| v.trim().parse().ok())
        .expect("a=range with the file's duration");
    assert!((11.5..=12.5).contains(&end), "{}", described.body);
    assert!(
        described.body.contains("a=rtpmap:33 MP2T/90000"),
        "{}",
        described.body
    );
    let play = client.setup_and_play(&url, Some("npt=0-"));
    let rtp_info = play.header("rtp-info").expect("RTP-Info");
    let first_seq: u16 = rtp_info
        .split(';')
        .find_map(|p| p.trim().strip_prefix("seq="))
        .and_then(|s| s.parse().ok())
        .expect("seq in RTP-Info");

    client.receive_for(Duration::from_millis(2000));
    let paused = client.request("PAUSE", &format!("{url}/"), &[]);
    assert_eq!(paused.status, 200, "{paused:?}");
    let before_pause = client.rtp.len();
    assert!(before_pause > 50, "only {before_pause} RTP packets in 2 s");
    client.receive_for(Duration::from_millis(1000));
    let during_pause = client.rtp.len() - before_pause;
    assert!(
        during_pause <= 2,
        "{during_pause} packets arrived while paused"
    );

    let resumed = client.request("PLAY", &format!("{url}/"), &[]);
    assert_eq!(resumed.status, 200, "{resumed:?}");
    let range = resumed.header("range").unwrap_or_default();
    let resumed_at = resumed.range_start().unwrap_or(0.0);
    assert!((1.5..=3.0).contains(&resumed_at), "resumed at {range}");
    client.receive_for(Duration::from_millis(2000));
    assert!(client.rtp.len() > before_pause + during_pause + 50);

    // One continuous RTP stream: no gaps or repeats in sequence numbers.
    assert_eq!(client.rtp[0].0, first_seq);
    for pair in client.rtp.windows(2) {
        assert_eq!(pair[1].0, pair[0].0.wrapping_add(1), "sequence jumped");
        assert!(
            pair[1].1.wrapping_sub(pair[0].1) < 90_000 * 2,
            "timestamp jumped"
        );
    }
    assert!(
        client.other_frames >= 1,
        "an RTCP sender report arrives within a few seconds"
    );
    let teardown = client.request("TEARDOWN", &format!("{url}/"), &[]);
    assert_eq!(teardown.status, 200);

    // What was received across the pause is the file itself, without a gap or a repeat, and
    // decodes cleanly.
    // After its PLAY, the server sends PAT and PMT, then the file from the keyframe on.
    let received = client.transport_stream();
    let original = std::fs::read(sample_ts()).unwrap();
    let after_psi = &received[2 * 188..];
    let start = (0..original.len() - after_psi.len())
        .step_by(188)
        .find(|&offset| original[offset..offset + 188] == after_psi[..188])
        .expect("the stream starts at a packet of the file");
    let first_difference = after_psi
        .iter()
        .zip(&original[start..])
        .position(|(a, b)| a != b);
    assert_eq!(
        first_difference,
        None,
        "received {} bytes from offset {start}",
        received.len()
    );
    let file = rig.server.dir.path().join("paused.ts");
    std::fs::write(&file, &received).unwrap();
    // The capture stops mid-frame at TEARDOWN; decode the first 3 of its ~4 seconds.
    let decoded = decode(&file.display().to_string(), &[], Some(3.0));
    decoded.assert_clean(70, "stream across pause");
}

#[test]
fn udp_refused_on_a_point_rolls_over_to_tcp() {
    let rig = rig();
    // ffmpeg's default tries UDP first; the point allows only TCP. ffmpeg reports the 461
    // it gets for UDP (that refusal is the rollover signal) and then plays over TCP.
    let mut decoded = decode(&rig.url("tcponly"), &[], Some(2.0));
    let refusal = "method SETUP failed: 461 Unsupported Transport";
    assert!(decoded.errors.contains(refusal), "{}", decoded.errors);
    decoded.errors = decoded
        .errors
        .lines()
        .filter(|line| !line.contains(refusal))
        .collect::<Vec<_>>()
        .join("\n");
    decoded.assert_clean(45, "rollover");
    let logs = rig.server.logs();
    assert!(
        logs.contains("UDP is not enabled on publishing point `tcponly`"),
        "{logs}"
    );
    assert!(logs.contains("transport=RTP/AVP/TCP interleaved"), "{logs}");
}

#[test]
fn refusals_have_the_right_status() {
    let rig = rig();
    let mut client = RtspClient::connect(rig.rtsp);
    let missing = client.request("DESCRIBE", &rig.url("nope"), &[]);
    assert_eq!(missing.status, 404);
    let disabled = client.request("DESCRIBE", &rig.url("httponly"), &[]);
    assert_eq!(disabled.status, 403, "{disabled:?}");
    assert!(
        disabled.head.to_lowercase().contains("rtsp"),
        "{}",
        disabled.head
    );
    let early = client.request("PLAY", &rig.url("vod"), &[]);
    assert_eq!(early.status, 455, "PLAY before SETUP: {early:?}");
    let unknown = client.request("FLY", &rig.url("vod"), &[]);
    assert_eq!(unknown.status, 501);

    // Pause and seek on a live point.
    let _encoder = Encoder::push_live(&rig.server, 20);
    let mut live = RtspClient::connect(rig.rtsp);
    let url = rig.url("live");
    let setup = live.setup_interleaved(&url);
    assert_eq!(setup.status, 200, "{setup:?}");
    let seek = live.request("PLAY", &format!("{url}/"), &[("Range", "npt=30-")]);
    assert_eq!(seek.status, 457, "{seek:?}");
    let play = live.request("PLAY", &format!("{url}/"), &[]);
    assert_eq!(play.status, 200, "{play:?}");
    let pause = live.request("PAUSE", &format!("{url}/"), &[]);
    assert_eq!(pause.status, 455, "{pause:?}");

    // Reserved client ports are refused.
    let mut reserved = RtspClient::connect(rig.rtsp);
    let answer = reserved.request(
        "SETUP",
        &format!("{}/trackID=0", rig.url("vod")),
        &[("Transport", "RTP/AVP;unicast;client_port=53-54")],
    );
    assert!(matches!(answer.status, 400 | 461), "{answer:?}");
}

//! Counts that follow the media: an RTSP session counts under `rtsp` and under the transport
//! plugin its media goes out through (`udp` or `tcp`) in `ferrocast status`; its DISCONNECT
//! line's `bytes_sent` includes the RTP sent over UDP; the client's last RTCP receiver report
//! (loss, jitter) is logged when the session ends.

use std::process::{Command, Stdio};
use std::time::Duration;

use ferrocast_tests::rtsp_rig::{standard_points_over, RtspRig};
use ferrocast_tests::watch::RtpWatch;
use ferrocast_tests::*;

/// The sessions `ferrocast status` counts under `plugin`.
fn sessions_of(server: &Ferrocast, plugin: &str) -> usize {
    server
        .generations_of(plugin)
        .iter()
        .map(|g| g.sessions)
        .sum()
}

#[test]
fn rtsp_sessions_count_under_their_transport_and_report_the_media_they_sent() {
    let RtspRig {
        server,
        rtsp,
        plugins: _plugins,
    } = RtspRig::start(
        &["udp", "tcp"],
        &standard_points_over(&["rtsp", "udp", "tcp"]),
    );
    let _encoder = Encoder::push_live(&server, 60);

    // ffmpeg plays over RTP/UDP for 6 s and sends RTCP receiver reports meanwhile.
    let mut player = Command::new("ffmpeg")
        .args(["-hide_banner", "-nostdin", "-loglevel", "error"])
        .args(["-timeout", "10000000", "-rtsp_transport", "udp"])
        .args(["-i", &format!("rtsp://{rtsp}/live"), "-t", "6"])
        .args(["-f", "null", "-"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start ffmpeg");
    let interleaved = RtpWatch::rtsp_tcp(rtsp, "live");
    assert!(interleaved.wait_packets(50, Duration::from_secs(5)));
    assert!(
        wait_until(Duration::from_secs(10), || sessions_of(&server, "udp") == 1),
        "status: {:?}",
        server.plugin_generations()
    );
    assert_eq!(sessions_of(&server, "rtsp"), 2);
    assert_eq!(sessions_of(&server, "tcp"), 1, "the interleaved session");

    assert!(
        wait_child(&mut player, Duration::from_secs(30)).is_some(),
        "ffmpeg finished"
    );
    interleaved.stop();
    drop(interleaved);
    assert!(
        wait_until(Duration::from_secs(10), || sessions_of(&server, "udp") == 0
            && sessions_of(&server, "tcp") == 0),
        "counts drop with the sessions: {:?}",
        server.plugin_generations()
    );

    // The UDP session's bytes are its media: 6 s of a ~470 kbit/s stream, not ~1 kB of RTSP.
    server.wait_for_count("RECEIVER_REPORT", 1, Duration::from_secs(5));
    let disconnects = server.event_lines("DISCONNECT");
    let receiver_report = &server.event_lines("RECEIVER_REPORT")[0];
    let session = log_field(receiver_report, "session").expect("the session of the report");
    let udp_disconnect = disconnects
        .iter()
        .find(|line| log_field(line, "session") == Some(session))
        .unwrap_or_else(|| panic!("no DISCONNECT of session {session}: {disconnects:#?}"));
    let bytes: u64 = log_field(udp_disconnect, "bytes_sent")
        .and_then(|b| b.parse().ok())
        .expect("bytes_sent");
    assert!(bytes > 200_000, "{udp_disconnect}");
    assert_eq!(
        log_field(receiver_report, "packets_lost"),
        Some("0"),
        "{receiver_report}"
    );
    assert!(log_field(receiver_report, "jitter_ms").is_some());
}

//! The UDP transport plugin's pushes: a live point sent as raw MPEG-TS to a multicast group
//! (on loopback) and as RTP/MP2T to a unicast port, received and decoded by ffmpeg.

use std::process::{Command, Stdio};
use std::time::Duration;

use ferrocast_tests::*;

/// Receive `url` with ffmpeg for `seconds` of media and return what it decoded.
fn receive(url: &str, extra: &[&str], seconds: f64) -> std::process::Child {
    Command::new("ffmpeg")
        .args(["-hide_banner", "-nostdin", "-loglevel", "error"])
        .args(extra)
        .args([
            "-i",
            url,
            "-t",
            &seconds.to_string(),
            "-map",
            "0:v:0",
            "-f",
            "framecrc",
            "-",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start ffmpeg")
}

/// Wait (at most 60 s, then kill) and return ffmpeg's errors and the frames it decoded.
fn finish(mut child: std::process::Child) -> (String, u64) {
    wait_child(&mut child, Duration::from_secs(60));
    let _ = child.kill();
    let output = child.wait_with_output().unwrap();
    let errors = String::from_utf8_lossy(&output.stderr).into_owned();
    (errors, framecrc_frames(&output.stdout))
}

#[test]
fn a_live_point_is_pushed_to_multicast_and_to_a_unicast_rtp_receiver() {
    let plugins = shipped_plugins_dir(&["http", "udp"]);
    let http = loopback();
    let multicast_port = free_port();
    let rtp_port = free_port() & !1; // RTP on an even port, RTCP next to it
    let points =
        standard_points().replace("protocols = [\"http\"]", "protocols = [\"http\", \"udp\"]");
    let config = format!(
        "{}\n[plugins.udp]\npush = [\n  {{ point = \"live\", destination = \"239.255.42.1:{multicast_port}\", format = \"ts\", interface = \"127.0.0.1\" }},\n  {{ point = \"live\", destination = \"127.0.0.1:{rtp_port}\", format = \"rtp\", interface = \"127.0.0.1\" }},\n]\n",
        config_with(http, &points)
    );
    let server = Ferrocast::start(&config, plugins.path(), http);
    server.wait_for("pushing point", Duration::from_secs(10));

    // The receivers listen before the encoder starts, as a multicast audience would.
    let multicast = receive(
        &format!("udp://239.255.42.1:{multicast_port}?localaddr=127.0.0.1&timeout=20000000"),
        &[],
        4.0,
    );
    let sdp = server.dir.path().join("push.sdp");
    std::fs::write(
        &sdp,
        format!("v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=push\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=video {rtp_port} RTP/AVP 33\r\na=rtpmap:33 MP2T/90000\r\n"),
    )
    .unwrap();
    let unicast = receive(
        &sdp.display().to_string(),
        &["-protocol_whitelist", "file,udp,rtp"],
        4.0,
    );
    std::thread::sleep(Duration::from_millis(500));
    let _encoder = Encoder::push(&server.url("live"), 20);

    let (errors, frames) = finish(multicast);
    assert!(errors.trim().is_empty(), "multicast receiver: {errors}");
    assert!(frames >= 80, "multicast receiver decoded {frames} frames");
    let (errors, frames) = finish(unicast);
    assert!(errors.trim().is_empty(), "RTP receiver: {errors}");
    assert!(frames >= 80, "RTP receiver decoded {frames} frames");
}

//! RTSP tunnelled over HTTP (the QuickTime scheme) on the RTSP listener and on the HTTP
//! plugin's port, with the real binary and plugins: ffmpeg's `-rtsp_transport http` on a live
//! and an on-demand point, a hand-written tunnel client that pauses and seeks an on-demand
//! point, and the refusals (a POST without its GET, a body that is not base64).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use ferrocast_tests::rtsp::{base64, post_head};
use ferrocast_tests::rtsp_rig::{standard_points_over, RtspRig};
use ferrocast_tests::*;

/// HTTP and RTSP (with both RTP transport plugins), `live` and `vod` on RTSP with
/// interleaved RTP.
fn rig() -> RtspRig {
    RtspRig::start(&["udp", "tcp"], &standard_points_over(&["rtsp", "tcp"]))
}

/// `rtsp://` on the HTTP plugin's port: the same point, tunnelled there.
fn http_url(rig: &RtspRig, path: &str) -> String {
    format!("rtsp://{}/{}", rig.server.http, path)
}

/// Everything the server sends on `stream` until it closes it (bounded in time).
fn read_until_closed(stream: &mut TcpStream, within: Duration) -> (String, bool) {
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let deadline = Instant::now() + within;
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        match stream.read(&mut buf) {
            Ok(0) => return (String::from_utf8_lossy(&received).into_owned(), true),
            Ok(n) => received.extend_from_slice(&buf[..n]),
            Err(error) if error.kind() == std::io::ErrorKind::ConnectionReset => {
                return (String::from_utf8_lossy(&received).into_owned(), true)
            }
            Err(_) => {}
        }
    }
    (String::from_utf8_lossy(&received).into_owned(), false)
}

#[test]
fn ffmpeg_plays_a_live_point_through_the_tunnel() {
    let rig = rig();
    let _encoder = Encoder::push_live(&rig.server, 40);
    std::thread::sleep(Duration::from_millis(1500));
    let decoded = decode(&rig.url("live"), &["-rtsp_transport", "http"], Some(3.0));
    decoded.assert_clean(60, "RTSP over HTTP");
    let logs = rig.server.logs();
    assert!(logs.contains("HTTP tunnel opened"), "{logs}");
    assert!(logs.contains("transport=RTP/AVP/TCP interleaved"), "{logs}");
    // The same on the HTTP plugin's port: one open port is enough.
    let decoded = decode(
        &http_url(&rig, "live"),
        &["-rtsp_transport", "http"],
        Some(3.0),
    );
    decoded.assert_clean(60, "RTSP over HTTP on the HTTP port");
    let logs = rig.server.logs();
    assert!(logs.contains("connection handed over"), "{logs}");
}

#[test]
fn ffmpeg_plays_an_on_demand_point_through_the_tunnel() {
    let rig = rig();
    for url in [rig.url("vod"), http_url(&rig, "vod")] {
        let decoded = decode(&url, &["-rtsp_transport", "http"], Some(4.0));
        decoded.assert_clean(90, &format!("on-demand RTSP over HTTP at {url}"));
    }
}

#[test]
fn pause_and_seek_through_the_tunnel() {
    let rig = rig();
    pause_and_seek(&rig, rig.rtsp, "tunnel-seek-1");
}

#[test]
fn pause_and_seek_through_the_tunnel_on_the_http_port() {
    let rig = rig();
    pause_and_seek(&rig, rig.server.http, "tunnel-seek-2");
}

fn pause_and_seek(rig: &RtspRig, address: SocketAddr, cookie: &str) {
    let url = format!("rtsp://{address}/vod");
    let mut client = RtspClient::connect_tunnel(address, "vod", cookie);
    let described = client.request("DESCRIBE", &url, &[("Accept", "application/sdp")]);
    assert_eq!(described.status, 200, "{described:?}");
    client.setup_and_play(&url, Some("npt=0-"));
    client.receive_for(Duration::from_millis(1500));
    let before_pause = client.rtp.len();
    assert!(
        before_pause > 30,
        "only {before_pause} RTP packets in 1.5 s"
    );

    let paused = client.request("PAUSE", &format!("{url}/"), &[]);
    assert_eq!(paused.status, 200, "{paused:?}");
    let at_pause = client.rtp.len();
    client.receive_for(Duration::from_millis(800));
    assert!(client.rtp.len() - at_pause <= 2, "RTP flowed while paused");

    let seeked = client.request("PLAY", &format!("{url}/"), &[("Range", "npt=6.5-")]);
    assert_eq!(seeked.status, 200, "{seeked:?}");
    let start = seeked.range_start().unwrap_or(-1.0);
    assert!((5.5..=6.5).contains(&start), "seek started at {start}");
    let at_seek = client.rtp.len();
    client.receive_for(Duration::from_millis(1500));
    assert!(
        client.rtp.len() > at_seek + 30,
        "RTP did not flow again after the seek"
    );
    // What came after the seek starts at a keyframe and decodes cleanly (the capture stops
    // mid-frame: decode its first second of about 1.5).
    let after: Vec<u8> = client.rtp[at_seek..]
        .iter()
        .flat_map(|(_, _, payload)| payload.clone())
        .collect();
    let file = rig.server.dir.path().join("seeked.ts");
    std::fs::write(&file, &after).unwrap();
    let (frames, errors) = first_frames(&file.display().to_string(), 3);
    assert!(errors.trim().is_empty(), "{errors}");
    assert_eq!(frames.first(), Some(&(true, "I".to_owned())), "{frames:?}");
    decode(&file.display().to_string(), &[], Some(1.0)).assert_clean(20, "after the seek");

    let teardown = client.request("TEARDOWN", &format!("{url}/"), &[]);
    assert_eq!(teardown.status, 200, "{teardown:?}");
}

#[test]
fn a_post_without_its_get_is_refused() {
    let rig = rig();
    for address in [rig.rtsp, rig.server.http] {
        let mut post = TcpStream::connect(address).unwrap();
        post.write_all(post_head(address, "vod", "no-such-get").as_bytes())
            .unwrap();
        post.write_all(base64(b"OPTIONS * RTSP/1.0\r\nCSeq: 1\r\n\r\n").as_bytes())
            .unwrap();
        let (answer, closed) = read_until_closed(&mut post, Duration::from_secs(5));
        assert!(
            answer.starts_with("HTTP/1.0 404 Not Found\r\n"),
            "{address}: {answer}"
        );
        assert!(answer.contains("no-such-get"), "{answer}");
        assert!(closed, "the refused POST is closed");
    }
}

#[test]
fn a_broken_base64_body_is_refused_and_ends_the_session() {
    let rig = rig();
    broken_base64(&rig, rig.rtsp, "tunnel-broken-1");
    broken_base64(&rig, rig.server.http, "tunnel-broken-2");
}

fn broken_base64(rig: &RtspRig, address: SocketAddr, cookie: &str) {
    let url = format!("rtsp://{address}/vod");
    let mut client = RtspClient::connect_tunnel(address, "vod", cookie);
    let options = client.request("OPTIONS", &url, &[]);
    assert_eq!(options.status, 200, "{options:?}");
    let setup = client.setup_interleaved(&url);
    assert_eq!(setup.status, 200, "{setup:?}");
    client.tunnel_post().write_all(b"!!not base64!!").unwrap();
    let (answer, closed) = read_until_closed(client.tunnel_post(), Duration::from_secs(5));
    assert!(
        answer.starts_with("HTTP/1.0 400 Bad Request\r\n"),
        "{answer}"
    );
    assert!(answer.contains("not base64"), "{answer}");
    assert!(closed, "the POST is closed");
    // The GET half, and so the RTSP session, ends too.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut ended = false;
    while Instant::now() < deadline {
        match client.read_some() {
            Ok(false) | Err(_) => {
                ended = true;
                break;
            }
            Ok(true) => {}
        }
    }
    assert!(ended, "the tunnel's GET stayed open");
    rig.server.wait_for(
        "HTTP tunnel closed by its request side",
        Duration::from_secs(5),
    );
}

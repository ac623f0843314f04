//! RTMP ingest with the real binary and the real `rtmp` plugin, with ffmpeg as the encoder
//! (`-f flv rtmp://…`): what it publishes plays over HTTP, RTSP and
//! raw TCP and decodes without errors, with audio and video starting together; an encoder
//! killed and restarted keeps its clients; a second encoder, a point without `rtmp` and a
//! missing stream key are refused with the reason in the encoder's own error; a broken
//! handshake, bad chunk sizes, an overlong message and AMF0 nested a thousand deep are each
//! closed with a log line while a publish goes on undisturbed.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ferrocast_tests::auth::hash_password;
use ferrocast_tests::*;

const KEY: &str = "rtmp-k3y";

struct Rig {
    server: Ferrocast,
    _plugins: TempDir,
    rtmp: SocketAddr,
    rtsp: SocketAddr,
    tcp: SocketAddr,
}

impl Rig {
    fn rtmp_url(&self, stream: &str) -> String {
        format!("rtmp://{}/live/{stream}", self.rtmp)
    }
}

/// A server with `live` open to RTMP, HTTP, RTSP and TCP; `httponly` without RTMP; and
/// `keyed`, which takes RTMP encoders with a stream key only.
fn start() -> Rig {
    let plugins = shipped_plugins_dir(&["http", "rtsp", "tcp", "rtmp"]);
    let (http, rtmp, rtsp, tcp) = (loopback(), loopback(), loopback(), loopback());
    let grace = "reconnect_grace_ms = 15000\n";
    let points = format!(
        "{}{grace}\n{}\n{}publish = {{ keys = [\"{}\"] }}\n",
        point_toml(
            "live",
            "broadcast",
            "push",
            &["http", "rtsp", "tcp", "rtmp"]
        ),
        point_toml("httponly", "broadcast", "push", &["http"]),
        point_toml("keyed", "broadcast", "push", &["http", "rtmp"]),
        hash_password(KEY),
    );
    let plugin_tables = format!(
        "[plugins.rtmp]\nlisten = [\"{rtmp}\"]\n\n[plugins.rtsp]\nlisten = [\"{rtsp}\"]\n\n\
         [plugins.tcp]\nlisten = [\"{tcp}\"]\nserve = {{ \"{}\" = \"live\" }}\n\n{points}",
        tcp.port()
    );
    let server = Ferrocast::start(&config_with(http, &plugin_tables), plugins.path(), http);
    server.wait_for(&format!("address={rtmp}"), Duration::from_secs(10));
    Rig {
        server,
        _plugins: plugins,
        rtmp,
        rtsp,
        tcp,
    }
}

/// Decode `seconds` of every stream of `input` with `-xerror`; panics on any decoder error.
fn assert_decodes_cleanly(input: &str, extra: &[&str], seconds: u32) {
    let output = Command::new("ffmpeg")
        .args(["-hide_banner", "-nostdin", "-v", "error", "-xerror"])
        .args(extra)
        .args(["-i", input, "-t", &seconds.to_string()])
        // 90 kHz frame times: ffmpeg's default one-frame time base can round two frames of a
        // live join onto one tick, which the muxer reports as an error.
        .args(["-enc_time_base:v", "-1", "-f", "null", "-"])
        .stdin(Stdio::null())
        .output()
        .expect("run ffmpeg");
    let errors = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && errors.trim().is_empty(),
        "{input}: {errors}"
    );
}

/// The start times of the first video and audio streams of `input`, from ffprobe.
fn start_times(input: &str, extra: &[&str]) -> (f64, f64) {
    let output = Command::new("ffprobe")
        .args(["-v", "error"])
        .args(extra)
        .args([
            "-show_entries",
            "stream=codec_type,start_time",
            "-of",
            "csv=p=0",
        ])
        .arg(input)
        .stdin(Stdio::null())
        .output()
        .expect("run ffprobe");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let start = |kind: &str| -> f64 {
        text.lines()
            .find_map(|line| {
                let (codec_type, start) = line.split_once(',')?;
                (codec_type == kind).then(|| start.trim().parse().ok())?
            })
            .unwrap_or_else(|| panic!("no {kind} start time in {text:?}"))
    };
    (start("video"), start("audio"))
}

fn assert_in_sync(input: &str, extra: &[&str]) {
    let (video, audio) = start_times(input, extra);
    assert!(
        (video - audio).abs() <= 0.1,
        "{input}: video starts at {video}, audio at {audio}"
    );
}

#[test]
fn an_rtmp_publish_plays_cleanly_over_http_rtsp_and_tcp_in_sync() {
    let rig = start();
    let _encoder = Encoder::publish_rtmp(&rig.rtmp_url("live"), 60);
    wait_until_live(rig.server.http, "/live", Duration::from_secs(15));
    rig.server
        .wait_for("encoder publishing to `live`", Duration::from_secs(5));

    let http = rig.server.url("live");
    let rtsp = format!("rtsp://{}/live", rig.rtsp);
    let tcp = format!("tcp://{}", rig.tcp);
    assert_decodes_cleanly(&http, &["-rw_timeout", "10000000"], 4);
    let rtsp_options = ["-rtsp_transport", "tcp", "-timeout", "10000000"];
    assert_decodes_cleanly(&rtsp, &rtsp_options, 4);
    assert_decodes_cleanly(&tcp, &["-rw_timeout", "10000000"], 4);
    assert_in_sync(&http, &["-rw_timeout", "10000000"]);
    assert_in_sync(&tcp, &["-rw_timeout", "10000000"]);

    let (frames, errors) = first_frames(&http, 3);
    assert!(
        frames.first().is_some_and(|(key, _)| *key),
        "{frames:?} {errors}"
    );
    let logs = rig.server.logs();
    assert!(!logs.contains("closing the RTMP connection"), "{logs}");
}

#[test]
fn a_killed_and_restarted_rtmp_encoder_keeps_its_clients() {
    let rig = start();
    let first = Encoder::publish_rtmp(&rig.rtmp_url("live"), 60);
    wait_until_live(rig.server.http, "/live", Duration::from_secs(15));
    let reader = TsReader::http(rig.server.http, "/live");
    std::thread::sleep(Duration::from_secs(2));

    drop(first);
    rig.server.wait_for("SOURCE_LOST", Duration::from_secs(5));
    std::thread::sleep(Duration::from_secs(1));
    let restarted = Instant::now();
    let _second = Encoder::publish_rtmp(&rig.rtmp_url("live"), 60);
    rig.server
        .wait_for("SOURCE_RESUMED", Duration::from_secs(10));
    std::thread::sleep(Duration::from_secs(3));

    assert!(reader.ended_at().is_none(), "the client must stay attached");
    let resumed = reader
        .first_media_after(restarted)
        .expect("media after the restart");
    assert!(
        resumed - restarted < Duration::from_secs(5),
        "resumed after {:?}",
        resumed - restarted
    );
    assert_decodes(rig.server.dir.path(), &reader.body(), 100);
}

#[test]
fn a_second_encoder_and_a_point_without_rtmp_are_refused() {
    let rig = start();
    let _first = Encoder::publish_rtmp(&rig.rtmp_url("live"), 60);
    wait_until_live(rig.server.http, "/live", Duration::from_secs(15));

    let second = Encoder::publish_rtmp(&rig.rtmp_url("live"), 60);
    let errors = second.refused(Duration::from_secs(15));
    assert!(errors.contains("Server error"), "{errors}");
    rig.server.wait_for(
        "publish refused (NetStream.Publish.BadName)",
        Duration::from_secs(5),
    );
    // The first encoder is undisturbed.
    assert_decodes_cleanly(&rig.server.url("live"), &["-rw_timeout", "10000000"], 2);

    let disabled = Encoder::publish_rtmp(&rig.rtmp_url("httponly"), 60);
    let errors = disabled.refused(Duration::from_secs(15));
    assert!(errors.contains("Server error"), "{errors}");
    rig.server
        .wait_for_count("publish refused", 2, Duration::from_secs(5));
}

#[test]
fn a_stream_key_is_checked() {
    let rig = start();
    let without = Encoder::publish_rtmp(&rig.rtmp_url("keyed"), 60);
    let errors = without.refused(Duration::from_secs(15));
    assert!(errors.contains("Server error"), "{errors}");
    rig.server.wait_for(
        "publish refused (NetStream.Publish.Denied)",
        Duration::from_secs(5),
    );
    let wrong = Encoder::publish_rtmp(&rig.rtmp_url("keyed?key=wrong"), 60);
    wrong.refused(Duration::from_secs(15));

    let _keyed = Encoder::publish_rtmp(&rig.rtmp_url(&format!("keyed?key={KEY}")), 60);
    wait_until_live(rig.server.http, "/keyed", Duration::from_secs(15));
    assert!(
        !rig.server.logs().contains(KEY),
        "the key must not be logged"
    );
}

/// A raw connection to the RTMP port that completes the handshake (unless `handshake` is
/// false), sends `bytes`, and reports whether the server closed it within five seconds.
fn closed_after(rtmp: SocketAddr, handshake: bool, bytes: &[u8]) -> bool {
    use std::net::TcpStream;
    let mut stream = TcpStream::connect_timeout(&rtmp, Duration::from_secs(5)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    if handshake {
        let mut c0c1 = vec![3u8];
        c0c1.extend((0..1536).map(|i| (i % 251) as u8));
        stream.write_all(&c0c1).unwrap();
        let mut s0s1s2 = vec![0; 1 + 2 * 1536];
        stream.read_exact(&mut s0s1s2).expect("S0, S1 and S2");
        assert_eq!(s0s1s2[0], 3);
        stream.write_all(&s0s1s2[1..1 + 1536]).unwrap();
    }
    // The server may close while this is still being written.
    let _ = stream.write_all(bytes);
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut buffer = [0u8; 4096];
    while Instant::now() < deadline {
        match stream.read(&mut buffer) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(error) if error.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
    false
}

/// A type 0 chunk header on chunk stream 3 for a message of `length` bytes of type `type_id`.
fn chunk_header(length: u32, type_id: u8) -> Vec<u8> {
    let mut header = vec![0x03, 0, 0, 0];
    header.extend_from_slice(&length.to_be_bytes()[1..]);
    header.push(type_id);
    header.extend_from_slice(&[0, 0, 0, 0]);
    header
}

#[test]
fn hostile_rtmp_input_is_closed_without_disturbing_a_publish() {
    let rig = start();
    let _encoder = Encoder::publish_rtmp(&rig.rtmp_url("live"), 60);
    wait_until_live(rig.server.http, "/live", Duration::from_secs(15));
    let reader = TsReader::http(rig.server.http, "/live");

    assert!(closed_after(rig.rtmp, false, b"GET / HTTP/1.1\r\n\r\n"));
    let mut zero_chunk_size = chunk_header(4, 1);
    zero_chunk_size.extend_from_slice(&0u32.to_be_bytes());
    assert!(closed_after(rig.rtmp, true, &zero_chunk_size));
    let mut huge_chunk_size = chunk_header(4, 1);
    huge_chunk_size.extend_from_slice(&0x0100_0000u32.to_be_bytes());
    assert!(closed_after(rig.rtmp, true, &huge_chunk_size));
    // 16 MiB - 1 announced: over `max_message_bytes`, refused from the header alone.
    assert!(closed_after(rig.rtmp, true, &chunk_header(0xFF_FFFF, 9)));
    // `connect` whose command object is a thousand nested arrays.
    let mut deep = vec![0x02, 0, 7];
    deep.extend_from_slice(b"connect");
    deep.push(0);
    deep.extend_from_slice(&1.0f64.to_be_bytes());
    for _ in 0..1000 {
        deep.extend_from_slice(&[0x0A, 0, 0, 0, 1]);
    }
    let mut nested = Vec::new();
    for (index, piece) in deep.chunks(128).enumerate() {
        if index == 0 {
            nested.extend(chunk_header(deep.len() as u32, 20));
        } else {
            nested.push(0xC3);
        }
        nested.extend_from_slice(piece);
    }
    assert!(closed_after(rig.rtmp, true, &nested));

    // The server's log reaches the test through a pipe: wait for each line.
    for reason in [
        "handshake refused",
        "chunk size 0 is out of range",
        "chunk size 16777216 is out of range",
        "over the limit",
        "nested deeper than 32",
    ] {
        rig.server.wait_for(reason, Duration::from_secs(5));
    }
    // The encoder and its player went on undisturbed.
    std::thread::sleep(Duration::from_secs(1));
    assert!(reader.ended_at().is_none(), "the player must stay attached");
    assert_decodes(rig.server.dir.path(), &reader.body(), 25);
    assert_eq!(rig.server.logs().matches("PUSH_START").count(), 1);
}

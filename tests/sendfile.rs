//! On-demand ranges over HTTP sent by the kernel (`sendfile`) and by the read-and-write
//! fallback (`FERROCAST_SENDFILE=off`): both give byte-exact ranges of the file on disk, and
//! in both a client that stops reading is disconnected after the write timeout without
//! holding up anyone else.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use ferrocast_tests::*;

/// Copies of the sample in the large file: far more than loopback socket buffers hold.
const LARGE_COPIES: usize = 80;

/// The two ways a range goes out: the server's environment for each.
const MODES: [(&str, &[(&str, &str)]); 2] = [
    ("sendfile", &[]),
    ("read and write", &[("FERROCAST_SENDFILE", "off")]),
];

fn start(mode: &[(&str, &str)], large: &Path) -> (Ferrocast, tempfile::TempDir) {
    let plugins = standard_plugin_dir();
    let address = loopback();
    let points = format!(
        "{}\n{}",
        standard_points(),
        point_toml(
            "large",
            "on-demand",
            &large.display().to_string(),
            &["http"]
        )
    );
    let server = Ferrocast::start_with_env(
        &config_with(address, &points),
        plugins.path(),
        address,
        mode,
    );
    (server, plugins)
}

/// A file of [`LARGE_COPIES`] samples back to back.
fn large_file() -> (tempfile::NamedTempFile, Vec<u8>) {
    let sample = std::fs::read(sample_ts()).unwrap();
    let content = sample.repeat(LARGE_COPIES);
    let mut file = tempfile::Builder::new().suffix(".ts").tempfile().unwrap();
    file.write_all(&content).unwrap();
    (file, content)
}

/// `GET /{point}`, with `Range: bytes={range}` if given, read in full.
fn get(address: SocketAddr, point: &str, range: Option<&str>, size: usize) -> Response {
    let range = range.map_or(String::new(), |r| format!("Range: bytes={r}\r\n"));
    let request = format!("GET /{point} HTTP/1.1\r\nHost: t\r\n{range}Connection: close\r\n\r\n");
    http_exchange(address, request.as_bytes(), size, Duration::from_secs(20)).unwrap()
}

#[test]
fn ranges_are_byte_exact_with_sendfile_and_with_the_fallback() {
    let media = std::fs::read(sample_ts()).unwrap();
    let size = media.len();
    let (large, content) = large_file();
    for (mode, env) in MODES {
        let (server, _plugins) = start(env, large.path());
        let whole = get(server.http, "vod", None, size);
        assert_eq!(whole.status, 200, "{mode}");
        assert!(whole.body == media, "{mode}: the whole file differs");
        let cases: [(&str, std::ops::Range<usize>); 5] = [
            ("0-99999", 0..100_000),
            ("1000-1999", 1000..2000),
            ("188-300187", 188..300_188),
            (&format!("{}-", size - 5000), size - 5000..size),
            ("-188", size - 188..size),
        ];
        for (range, expected) in &cases {
            let ranged = get(server.http, "vod", Some(range), size);
            assert_eq!(ranged.status, 206, "{mode} {range}");
            assert_eq!(
                ranged.header("content-range"),
                Some(format!(
                    "bytes {}-{}/{size}",
                    expected.start,
                    expected.end - 1
                )),
                "{mode} {range}"
            );
            assert!(
                ranged.body == media[expected.clone()],
                "{mode} {range}: the bytes differ"
            );
        }
        // A range in the middle of a file far larger than the socket buffers.
        let middle = 7_000_001..31_000_000;
        let range = format!("{}-{}", middle.start, middle.end - 1);
        let ranged = get(server.http, "large", Some(&range), middle.len());
        assert_eq!(ranged.status, 206, "{mode}");
        assert!(
            ranged.body == content[middle],
            "{mode}: the large range differs"
        );
        if env.is_empty() {
            assert!(!server.logs().contains("sendfile turned off"));
        } else {
            server.wait_for("sendfile turned off", Duration::from_secs(5));
        }
    }
}

#[test]
fn a_client_that_stops_reading_is_dropped_and_others_are_served_meanwhile() {
    let (large, content) = large_file();
    for (mode, env) in MODES {
        let (server, _plugins) = start(env, large.path());
        let mut stalled = TcpStream::connect(server.http).unwrap();
        stalled
            .write_all(b"GET /large HTTP/1.1\r\nHost: t\r\n\r\n")
            .unwrap();
        // Read the head and a little, then nothing.
        let mut first = [0u8; 4096];
        stalled
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        assert!(stalled.read(&mut first).unwrap() > 0, "{mode}");
        let started = Instant::now();
        let range = get(server.http, "large", Some("5000000-5999999"), 1_000_000);
        assert!(
            range.body == content[5_000_000..6_000_000],
            "{mode}: the other client's range differs"
        );
        server.wait_for("client stopped reading", Duration::from_secs(15));
        // The write timeout is 5 s.
        assert!(
            started.elapsed() >= Duration::from_secs(4),
            "{mode}: dropped too early"
        );
        drop(stalled);
    }
}

//! Interface compatibility within 1.x, against the real binary: a plugin built against the
//! frozen plugin-api 1.0.0 (`tests/fixtures/plugin-v1-0`) loads on this 1.1 server and serves a
//! live and an on-demand point beside the current plugins, while a plugin built against a newer
//! minor version (1.2) and one built against 2.0 are refused with messages naming both versions.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use ferrocast_tests::panicky::{LineClient, PANICKY};
use ferrocast_tests::*;

/// The name the 1.0 fixture is installed under.
const LEGACY: &str = "libferrocast_legacy.so";

/// Build the 1.0 fixture plugin once per test process. It is a workspace of its own (its
/// interface crate has the current one's package name), built into `target/abi-fixtures`.
fn legacy_plugin() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let target = build_dir()
                .parent()
                .expect("target directory")
                .join("abi-fixtures");
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let status = Command::new(cargo)
                .args(["build", "--quiet", "--locked", "--target-dir"])
                .arg(&target)
                .current_dir(workspace().join("tests/fixtures/plugin-v1-0"))
                .status()
                .expect("run cargo build for the 1.0 fixture plugin");
            assert!(status.success(), "building the 1.0 fixture plugin failed");
            let library = target.join("debug/libfixture_plugin_v1_0.so");
            assert!(library.exists(), "{} was not built", library.display());
            library
        })
        .clone()
}

/// A connection to the `legacy` plugin that asked to play `point` and got `OK playing`.
fn play(legacy: SocketAddr, point: &str) -> TcpStream {
    let mut stream =
        TcpStream::connect_timeout(&legacy, Duration::from_secs(5)).expect("connect to legacy");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream
        .write_all(format!("PLAY {point}\n").as_bytes())
        .unwrap();
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while line.last() != Some(&b'\n') && line.len() < 256 {
        stream.read_exact(&mut byte).expect("read the answer line");
        line.push(byte[0]);
    }
    assert_eq!(String::from_utf8_lossy(&line), "OK playing\n");
    stream
}

/// Read from `stream` until it closes, `limit` bytes arrived, or `within` passed.
fn read_media(stream: &mut TcpStream, limit: usize, within: Duration) -> Vec<u8> {
    let deadline = Instant::now() + within;
    let mut media = Vec::new();
    let mut buffer = vec![0u8; 64 * 1024];
    while media.len() < limit && Instant::now() < deadline {
        match stream.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => media.extend_from_slice(&buffer[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => continue,
            Err(e) => panic!("reading media from the legacy plugin: {e}"),
        }
    }
    media
}

#[test]
fn a_plugin_built_against_1_0_serves_live_and_on_demand_beside_current_plugins() {
    let plugins = plugin_dir(&[
        (
            "libferrocast_http.so",
            &built_library("libferrocast_http.so"),
        ),
        (PANICKY, &built_library("libfixture_panic.so")),
        (LEGACY, &legacy_plugin()),
    ]);
    // Files load in name order: `panicky` after `legacy`, so a current plugin's own layout
    // check runs after the older plugin's was proven.
    let (http, legacy, panicky) = (loopback(), loopback(), loopback());
    let points = standard_points().replace(
        "protocols = [\"http\"]",
        "protocols = [\"http\", \"legacy\"]",
    );
    let config = format!(
        "{}\n[plugins.legacy]\nlisten = [\"{legacy}\"]\n\n[plugins.panicky]\nlisten = [\"{panicky}\"]\n",
        config_with(http, &points)
    );
    let server = Ferrocast::start(&config, plugins.path(), http);
    server.wait_for(
        &format!("legacy     listening on {legacy}"),
        Duration::from_secs(10),
    );
    let loaded = server.event_lines("PLUGIN_LOADED");
    assert!(
        loaded
            .iter()
            .any(|l| l.contains("plugin=legacy") && l.contains("abi=1.0.0")),
        "{loaded:#?}"
    );
    for current in ["plugin=http", "plugin=panicky"] {
        assert!(
            loaded
                .iter()
                .any(|l| l.contains(current) && l.contains("abi=1.1.0")),
            "{current}: {loaded:#?}"
        );
    }
    let captures = tempfile::tempdir().unwrap();

    // On demand: the whole file, byte for byte, then the plugin closes the connection.
    let mut vod = play(legacy, "vod");
    let file = std::fs::read(sample_ts()).unwrap();
    let body = read_media(&mut vod, file.len() + 1, Duration::from_secs(30));
    assert_eq!(body.len(), file.len(), "on-demand bytes received");
    assert!(body == file, "the on-demand body differs from the file");
    assert_decodes(captures.path(), &body, 300);

    // Live: from a keyframe, decoding cleanly, while HTTP serves the same point.
    let _encoder = Encoder::push_live(&server, 30);
    let http_reader = TsReader::http(http, "/live");
    let mut live = play(legacy, "live");
    let mut body = read_media(&mut live, 400_000, Duration::from_secs(4));
    body.truncate(body.len() / 188 * 188);
    assert!(body.len() > 50_000, "only {} live bytes", body.len());
    assert_eq!(body[0], 0x47, "live media starts on a packet boundary");
    assert_decodes(captures.path(), &body, 50);
    let (frames, errors) = first_frames(
        &{
            let path = captures.path().join("live.ts");
            std::fs::write(&path, &body).unwrap();
            path.display().to_string()
        },
        1,
    );
    assert!(errors.trim().is_empty(), "{errors}");
    assert_eq!(frames.first(), Some(&(true, "I".to_owned())), "{frames:?}");

    // The other plugins were not disturbed.
    assert!(http_reader.wait_bytes(100_000, Duration::from_secs(10)));
    assert!(http_reader.continuity_errors().is_empty());
    let mut line = LineClient::connect(panicky);
    line.send("hello");
    assert_eq!(line.read_line(), "hi\n");
    assert!(
        server.event_lines("PLUGIN_FAULT").is_empty(),
        "{}",
        server.logs()
    );
}

#[test]
fn newer_minor_and_other_major_plugins_are_refused_naming_both_versions() {
    let plugins = plugin_dir(&[
        (
            "libferrocast_http.so",
            &built_library("libferrocast_http.so"),
        ),
        (
            "libferrocast_future_minor.so",
            &built_library("libfixture_future_minor.so"),
        ),
        (
            "libferrocast_future_major.so",
            &built_library("libfixture_future_abi.so"),
        ),
        (LEGACY, &legacy_plugin()),
    ]);
    let address = loopback();
    let server = Ferrocast::start(
        &config_with(address, &standard_points()),
        plugins.path(),
        address,
    );
    let refusals = server.event_lines("PLUGIN_REFUSED");
    let refused = |file: &str, reason: &str| {
        assert!(
            refusals
                .iter()
                .any(|l| l.contains(file) && l.contains(reason)),
            "expected PLUGIN_REFUSED for {file} with {reason:?}; refusals: {refusals:#?}"
        );
    };
    refused(
        "libferrocast_future_minor.so",
        "built against plugin-api 1.2.0, newer than this server's 1.1.0",
    );
    refused(
        "libferrocast_future_major.so",
        "built against plugin-api 2.0.0, this server speaks 1.1.0",
    );
    assert_eq!(refusals.len(), 2, "{refusals:#?}");
    assert!(
        server
            .event_lines("PLUGIN_LOADED")
            .iter()
            .any(|l| l.contains("plugin=legacy") && l.contains("abi=1.0.0")),
        "{}",
        server.logs()
    );
    assert_eq!(http_get(address, "/vod", 188).status, 200);

    // The same verdicts without starting a server.
    let output = Command::new(ferrocast_binary())
        .args(["--list-plugins", "--plugin-dir"])
        .arg(plugins.path())
        .arg("--config")
        .arg(workspace().join("config/ferrocast.toml"))
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{listing}");
    let legacy_line = listing
        .lines()
        .find(|l| l.trim_start().starts_with("legacy"))
        .unwrap_or_else(|| panic!("{listing}"));
    assert!(legacy_line.contains("abi 1.0.0"), "{legacy_line}");
    assert!(
        listing.contains("plugin-api 1.2.0, newer than this server's 1.1.0"),
        "{listing}"
    );
}

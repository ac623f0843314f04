//! `ferrocast plugin new` end to end: the generated crate builds out of tree against the
//! workspace's `plugin-api`, its own tests pass, and the library loads into the real server and
//! plays the sample file through its line protocol.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use ferrocast_tests::*;

/// Run cargo `args` in `crate_dir` with the shared target directory; panic with its output on
/// failure.
fn cargo(crate_dir: &Path, target_dir: &Path, args: &[&str]) {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = Command::new(cargo)
        .args(args)
        .arg("--offline")
        .current_dir(crate_dir)
        .env("CARGO_TARGET_DIR", target_dir)
        .output()
        .expect("run cargo");
    assert!(
        output.status.success(),
        "cargo {args:?} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn scaffolded_plugin_builds_loads_and_plays() {
    let work = tempfile::tempdir().unwrap();
    let crate_dir = work.path().join("demo");
    let output = Command::new(ferrocast_binary())
        .args(["plugin", "new", "demo", "--dir"])
        .arg(&crate_dir)
        .arg("--api-path")
        .arg(workspace().join("plugin-api"))
        .output()
        .expect("run ferrocast plugin new");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for file in ["Cargo.toml", "src/lib.rs", "README.md"] {
        assert!(crate_dir.join(file).is_file(), "{file} was not written");
    }

    // Shared across runs, so only the first one compiles the dependencies.
    let target_dir = workspace().join("target/scaffold-test");
    cargo(&crate_dir, &target_dir, &["build", "--release"]);
    cargo(&crate_dir, &target_dir, &["test", "--release"]);
    let library = target_dir.join("release/libferrocast_demo.so");

    let plugins = shipped_plugins_dir(&["http"]);
    std::fs::copy(&library, plugins.path().join("libferrocast_demo.so")).unwrap();
    let (http, demo) = (loopback(), loopback());
    let sample = sample_ts().display().to_string();
    let config = format!(
        "{}\n[plugins.demo]\nlisten = [\"{demo}\"]\nidle_timeout_ms = 5000\n",
        config_with(
            http,
            &point_toml("vod", "on-demand", &sample, &["http", "demo"])
        )
    );
    let server = Ferrocast::start(&config, plugins.path(), http);
    server.wait_for(
        &format!("demo       listening on {demo}"),
        Duration::from_secs(10),
    );

    let expected = std::fs::read(sample_ts()).unwrap();
    let mut stream = TcpStream::connect(demo).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(b"PLAY vod\n").unwrap();
    let header = b"OK playing\n";
    let wanted = header.len() + expected.len();
    let mut received = Vec::with_capacity(wanted);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut buffer = vec![0; 64 * 1024];
    while received.len() < wanted && Instant::now() < deadline {
        match stream.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(n) => received.extend_from_slice(&buffer[..n]),
        }
    }
    assert!(
        received.starts_with(header),
        "{:?}",
        String::from_utf8_lossy(&received[..received.len().min(80)])
    );
    let media = &received[header.len()..];
    assert_eq!(media.len(), expected.len(), "media length");
    assert!(
        media == expected.as_slice(),
        "media differs from the sample"
    );

    // An unknown point is refused with an error line, never `OK`.
    drop(stream);
    let mut refused = TcpStream::connect(demo).unwrap();
    refused
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    refused.write_all(b"PLAY nope\n").unwrap();
    let mut answer = Vec::new();
    let _ = refused.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("ERR "), "{answer}");
}

#[test]
fn invalid_names_and_existing_directories_are_refused() {
    let work = tempfile::tempdir().unwrap();
    let run = |name: &str, dir: &Path| {
        Command::new(ferrocast_binary())
            .args(["plugin", "new", name, "--dir"])
            .arg(dir)
            .output()
            .expect("run ferrocast plugin new")
    };
    for (name, message) in [
        ("My-Plugin", "invalid plugin name `My-Plugin`"),
        (
            "rtsp",
            "plugin name `rtsp` is taken by a plugin shipped with ferrocast",
        ),
    ] {
        let output = run(name, &work.path().join("x"));
        assert!(!output.status.success());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(message), "{stderr}");
        assert!(!work.path().join("x").exists());
    }
    let output = run("demo", work.path());
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("already exists"), "{stderr}");
}

//! Plugin loading and refusal with the real binary: files that are not plugins, a plugin built
//! against an incompatible ABI and a duplicate name are each refused with the file and the
//! reason, while the good plugins load and serve. A panicking plugin closes only its session.

use std::time::Duration;

use ferrocast_tests::panicky::{panicky_server, LineClient};
use ferrocast_tests::*;

#[test]
fn bad_libraries_are_refused_one_by_one_and_the_rest_serve() {
    let http = built_library("libferrocast_http.so");
    let garbage_dir = tempfile::tempdir().unwrap();
    let garbage = garbage_dir.path().join("garbage");
    std::fs::write(&garbage, b"this is not an ELF shared object").unwrap();
    // A real shared library that is not a ferrocast plugin.
    let not_a_plugin = [
        "/lib/x86_64-linux-gnu/libm.so.6",
        "/usr/lib/x86_64-linux-gnu/libm.so.6",
    ]
    .into_iter()
    .map(std::path::PathBuf::from)
    .find(|p| p.exists())
    .expect("libm to stand in for a foreign shared library");
    let plugins = plugin_dir(&[
        ("libferrocast_http.so", &http),
        ("libferrocast_http_copy.so", &http),
        ("libferrocast_garbage.so", &garbage),
        ("libferrocast_libm.so", &not_a_plugin),
        (
            "libferrocast_future.so",
            &built_library("libfixture_future_abi.so"),
        ),
    ]);
    let address = loopback();
    let server = Ferrocast::start(
        &config_with(address, &standard_points()),
        plugins.path(),
        address,
    );
    let logs = server.logs();

    let refused = |file: &str, reason: &str| {
        assert!(
            logs.lines()
                .any(|l| l.contains("PLUGIN_REFUSED") && l.contains(file) && l.contains(reason)),
            "expected PLUGIN_REFUSED for {file} with {reason:?}; log:\n{logs}"
        );
    };
    refused("libferrocast_garbage.so", "not a loadable shared library");
    refused("libferrocast_libm.so", "not a ferrocast plugin");
    refused(
        "libferrocast_future.so",
        "built against plugin-api 2.0.0, this server speaks 1.1.0",
    );
    refused("libferrocast_http_copy.so", "duplicate plugin name `http`");

    // The startup report names each plugin with version, ABI, kind and path.
    assert!(
        logs.lines().any(|l| l.contains("http")
            && l.contains("abi 1.1.0")
            && l.contains("control")
            && l.contains("libferrocast_http.so")),
        "startup report missing; log:\n{logs}"
    );
    assert!(
        logs.contains("event=\"PLUGIN_LOADED\" plugin=http"),
        "{logs}"
    );

    // The server still serves.
    let response = http_get(address, "/vod", 188);
    assert_eq!(response.status, 200, "{}", response.head);
}

#[test]
fn list_plugins_reports_name_version_abi_kind_and_path() {
    let plugins = standard_plugin_dir();
    let output = std::process::Command::new(ferrocast_binary())
        .args(["--list-plugins", "--plugin-dir"])
        .arg(plugins.path())
        .args([
            "--config",
            &workspace()
                .join("config/ferrocast.toml")
                .display()
                .to_string(),
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success());
    let http_line = stdout
        .lines()
        .find(|l| l.trim_start().starts_with("http"))
        .expect(&stdout);
    for part in ["v0.1.0", "abi 1.1.0", "control", "libferrocast_http.so"] {
        assert!(
            http_line.contains(part),
            "{part} missing from {http_line:?}"
        );
    }
}

#[test]
fn a_panicking_plugin_closes_only_its_session() {
    let (server, _plugins, panicky) = panicky_server();
    let address = server.http;

    // A healthy session, kept open across the fault.
    let mut healthy = LineClient::connect(panicky);
    healthy.send("hello");
    assert_eq!(healthy.read_line(), "hi\n");

    // The faulting session is closed.
    let mut faulty = LineClient::connect(panicky);
    faulty.send("boom");
    let read = faulty.read_to_end();
    assert!(
        read.as_ref().is_ok_and(|rest| rest.is_empty()),
        "faulting session should be closed: {read:?}"
    );
    server.wait_for("PLUGIN_FAULT", Duration::from_secs(5));
    let logs = server.logs();
    let fault = logs.lines().find(|l| l.contains("PLUGIN_FAULT")).unwrap();
    assert!(
        fault.contains("plugin=panicky")
            && fault.contains("session=")
            && fault.contains("fixture asked to panic"),
        "{fault}"
    );

    // The other session of the same plugin, a new one, and the HTTP plugin all still work.
    healthy.send("hello");
    assert_eq!(healthy.read_line(), "hi\n");
    let mut fresh = LineClient::connect(panicky);
    fresh.send("hello");
    assert_eq!(fresh.read_line(), "hi\n");
    assert_eq!(http_get(address, "/vod", 0).status, 200);
}

#[test]
fn a_plugin_that_panics_during_init_is_reported_as_a_config_error() {
    let plugins = plugin_dir(&[(
        "libferrocast_panicky.so",
        &built_library("libfixture_panic.so"),
    )]);
    let output = check_config(
        "[plugins.panicky]\nlisten = []\npanic_on_create = true\n",
        plugins.path(),
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("ferrocast.toml:1") && stderr.contains("panicked"),
        "{stderr}"
    );
}

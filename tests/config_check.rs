//! `ferrocast --check-config` and startup on bad configuration: every error at once, each with
//! file:line, and a non-zero exit.

use ferrocast_tests::*;

fn check(config: &str) -> (Option<i32>, String, String) {
    let plugins = standard_plugin_dir();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, config).unwrap();
    let output = check_config_file(&path, plugins.path());
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn the_default_configuration_is_valid() {
    let plugins = all_plugins_dir();
    let output = check_config_file(&workspace().join("config/ferrocast.toml"), plugins.path());
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("OK") && stdout.contains("3 publishing point(s)"),
        "{stdout}"
    );
}

#[test]
fn every_error_is_reported_at_once_with_its_line() {
    let config = r#"[server]
log_format = "xml"

[plugins.http]
enabeld = true
listen = ["127.0.0.1:99999", "localhost"]
header_timeout_ms = 0

[plugins.htp]
listen = []

[[point]]
name = "live"
kind = "broadcast"
source = "push"
protocols = ["http", "rtspp"]

[[point]]
name = "live"
kind = "on-demand"
source = "/no/such/file.ts"
protocols = ["http"]
"#;
    let (code, _, stderr) = check(config);
    assert_eq!(code, Some(1), "{stderr}");
    let expect = [
        ("bad.toml:2:", "log_format"),
        ("bad.toml:5:", "did you mean `enabled`"),
        ("bad.toml:6:", "127.0.0.1:99999"),
        ("bad.toml:6:", "localhost"),
        ("bad.toml:7:", "header_timeout_ms"),
        ("bad.toml:9:", "unknown plugin `htp`"),
        ("bad.toml:16:", "rtspp"),
        ("bad.toml:19:", "duplicate"),
        ("bad.toml:21:", "/no/such/file.ts"),
    ];
    for (location, text) in expect {
        assert!(
            stderr
                .lines()
                .any(|l| l.contains(location) && l.contains(text)),
            "expected an error at {location} mentioning {text:?}; got:\n{stderr}"
        );
    }
}

#[test]
fn syntax_errors_name_the_line() {
    let (code, _, stderr) = check("[server]\nlog_format = \"text\"\n[[point]\nname = 1\n");
    assert_eq!(code, Some(1));
    assert!(stderr.contains("bad.toml:3"), "{stderr}");
}

#[test]
fn the_server_refuses_to_start_on_a_bad_configuration() {
    let plugins = standard_plugin_dir();
    let address = loopback();
    let mut server = Ferrocast::spawn(
        &format!("[plugins.http]\nlisten = [\"{address}\"]\n\n[[point]]\nname = \"x\"\nkind = \"sideways\"\nsource = \"push\"\nprotocols = [\"http\"]\n"),
        plugins.path(),
        address,
    );
    let status = server.wait_exit(std::time::Duration::from_secs(10));
    assert_eq!(status.code(), Some(1));
    let logs = server.logs();
    assert!(
        logs.contains("ferrocast.toml:6") && logs.contains("sideways"),
        "{logs}"
    );
    assert!(logs.contains("nothing was started"), "{logs}");
}

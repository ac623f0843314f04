//! Tests for the configuration compiler, run against real files in temp dirs.

use std::cell::RefCell;
use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;

/// Stands in for the loaded plugins: "http" and "example". "http" rejects
/// `header_timeout_ms = 0` and complains about its table as a whole when
/// given `fail_table = true`.
#[derive(Default)]
struct FakeCatalog {
    /// Every (plugin, settings text) pair the compiler handed over.
    validated: RefCell<Vec<(String, String)>>,
}

impl PluginCatalog for FakeCatalog {
    fn plugin_names(&self) -> Vec<String> {
        vec!["example".to_string(), "http".to_string()]
    }

    fn validate_settings(&self, plugin: &str, settings: &str) -> Vec<SettingIssue> {
        self.validated
            .borrow_mut()
            .push((plugin.to_string(), settings.to_string()));
        let document: toml_edit::DocumentMut =
            settings.parse().expect("settings text must be valid TOML");
        let mut issues = Vec::new();
        if plugin == "http" {
            if document
                .get("header_timeout_ms")
                .and_then(|item| item.as_integer())
                == Some(0)
            {
                issues.push(SettingIssue {
                    key: "header_timeout_ms".to_string(),
                    message: "must be at least 1".to_string(),
                });
            }
            if document.get("fail_table").is_some() {
                issues.push(SettingIssue {
                    key: String::new(),
                    message: "this table is wrong as a whole".to_string(),
                });
            }
        }
        issues
    }
}

struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    /// Canonical root, so expected paths match the compiler's canonical ones.
    fn root(&self) -> PathBuf {
        fs::canonicalize(self.dir.path()).unwrap()
    }

    fn file(&self, relative: &str) -> PathBuf {
        let path = self.root().join(relative);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, b"\x47").unwrap();
        path
    }

    fn mkdir(&self, relative: &str) -> PathBuf {
        let path = self.root().join(relative);
        fs::create_dir_all(&path).unwrap();
        path
    }

    fn config(&self, relative: &str, text: &str) -> PathBuf {
        let path = self.root().join(relative);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, text).unwrap();
        path
    }
}

fn compile_file(path: &Path, catalog: &FakeCatalog) -> Result<Config, ConfigErrors> {
    load(path, catalog)
}

fn expect_errors(result: Result<Config, ConfigErrors>) -> Vec<ConfigError> {
    match result {
        Ok(config) => panic!("expected errors, got {config:#?}"),
        Err(errors) => errors.0,
    }
}

/// Asserts the errors are exactly on `expected` lines, in order, each
/// containing its phrase.
fn assert_errors(errors: &[ConfigError], expected: &[(usize, &str)]) {
    let described = errors
        .iter()
        .map(|error| format!("  {}: {}", error.line, error.message))
        .collect::<Vec<_>>()
        .join("\n");
    assert_eq!(
        errors.len(),
        expected.len(),
        "wrong number of errors:\n{described}"
    );
    for (error, (line, phrase)) in errors.iter().zip(expected) {
        assert_eq!(error.line, *line, "wrong line for:\n{described}");
        assert!(
            error.message.contains(phrase),
            "line {line}: expected {phrase:?} in {:?}",
            error.message
        );
    }
}

const VALID: &str = r#"[server]
plugin_dir = "plugins"
log_format = "json"
client_queue = 256
write_timeout_ms = 5000
control_socket = "run/ferrocast.sock"

[plugins.http]
enabled = true
listen = ["0.0.0.0:8080", "[::1]:8080"]
header_timeout_ms = 10000

[plugins.example]
listen = ["127.0.0.1:9000"]

[[point]]
name = "live"
kind = "broadcast"
source = "push"
protocols = ["http", "example"]
reconnect_grace_ms = 1500

[[point]]
name = "vod"
kind = "on-demand"
source = "media/sample.ts"
protocols = ["http"]

[[point]]
name = "library"
kind = "on-demand"
source = "media"
protocols = ["http"]
"#;

#[test]
fn valid_full_file_compiles() {
    let fixture = Fixture::new();
    let plugin_dir = fixture.mkdir("plugins");
    let sample = fixture.file("media/sample.ts");
    let path = fixture.config("ferrocast.toml", VALID);
    let catalog = FakeCatalog::default();

    let config = compile_file(&path, &catalog).expect("valid config");

    assert_eq!(config.path, path);
    assert_eq!(
        config.server,
        ServerConfig {
            plugin_dir: Some(plugin_dir),
            log_format: LogFormat::Json,
            client_queue: 256,
            write_timeout: Duration::from_millis(5000),
            control_socket: Some(path.parent().unwrap().join("run/ferrocast.sock")),
            shutdown_timeout: Duration::from_millis(5_000),
        }
    );
    let http = &config.plugins["http"];
    assert!(http.enabled);
    assert_eq!(
        http.listen,
        vec![
            "0.0.0.0:8080".parse::<SocketAddr>().unwrap(),
            "[::1]:8080".parse().unwrap()
        ]
    );
    assert_eq!(http.settings, "header_timeout_ms = 10000\n");
    assert_eq!(http.line, 8);
    assert_eq!(config.plugins["example"].settings, "");
    assert!(config.plugin_enabled("http") && config.plugin_enabled("example"));
    assert!(!config.plugin_enabled("missing"));

    assert_eq!(
        config
            .points
            .iter()
            .map(|p| p.name.as_str())
            .collect::<Vec<_>>(),
        ["live", "vod", "library"]
    );
    let live = config.point("live").unwrap();
    assert_eq!(live.kind, PointKind::Broadcast);
    assert_eq!(live.source, PointSource::Push);
    assert_eq!(live.protocols, ["http", "example"]);
    assert_eq!(live.reconnect_grace, Duration::from_millis(1500));
    assert_eq!(live.line, 16);
    let vod = config.point("vod").unwrap();
    assert_eq!(vod.kind.as_str(), "on-demand");
    assert_eq!(vod.source, PointSource::File(sample));
    assert_eq!(
        config.point("library").unwrap().source,
        PointSource::Directory(fixture.root().join("media"))
    );
    assert!(config.point("nope").is_none());
    assert!(config.warnings.is_empty(), "{:?}", config.warnings);

    // Both known plugins were asked about their settings, with exactly their own keys.
    assert_eq!(
        *catalog.validated.borrow(),
        [
            (
                "http".to_string(),
                "header_timeout_ms = 10000\n".to_string()
            ),
            ("example".to_string(), String::new()),
        ]
    );
}

#[test]
fn empty_file_gives_defaults() {
    let fixture = Fixture::new();
    let path = fixture.config("ferrocast.toml", "# nothing yet\n");
    let config = compile_file(&path, &FakeCatalog::default()).unwrap();
    assert_eq!(config.server, ServerConfig::default());
    assert_eq!(config.server.client_queue, 1024);
    assert_eq!(config.server.write_timeout, Duration::from_secs(20));
    assert!(config.plugins.is_empty() && config.points.is_empty());
}

#[test]
fn many_errors_are_reported_at_once_with_lines() {
    let fixture = Fixture::new();
    let text = r#"[server]
log_format = "xml"
client_queue = 8
write_timeout_ms = "20000"
plugn_dir = "plugins"

[plugins.http]
enabeld = true
listen = ["0.0.0.0:8080", "localhost:80"]
header_timeout_ms = 0

[plugins.htp]
enabled = "yes"

[[point]]
name = "live"
kind = "broadcast"
source = "rtmp://encoder.example/live"
protocols = ["http", "htp"]

[[point]]
name = "live"
kind = "on-demand"
source = "media/missing.ts"
protocols = []
reconnect_grace_ms = 5000

[[point]]
kind = "stream"

[pointz]
"#;
    let path = fixture.config("ferrocast.toml", text);
    let errors = expect_errors(compile_file(&path, &FakeCatalog::default()));
    assert_errors(
        &errors,
        &[
            (2, "`log_format` must be one of \"text\", \"json\", found \"xml\""),
            (3, "`client_queue` must be between 16 and 65536, found 8"),
            (4, "`write_timeout_ms` must be an integer from 100 to 600000, found a string; remove the quotes"),
            (5, "unknown key `plugn_dir` in [server]; expected one of: plugin_dir, log_format, client_queue, write_timeout_ms, control_socket, shutdown_timeout_ms (did you mean `plugin_dir`?)"),
            (8, "unknown key `enabeld` in [plugins.http]; expected one of: enabled, listen (did you mean `enabled`?)"),
            (9, "invalid listen address \"localhost:80\""),
            (10, "plugin `http`: setting `header_timeout_ms`: must be at least 1"),
            (12, "unknown plugin `htp` in [plugins.htp]; loaded plugins: example, http (did you mean `http`?)"),
            (13, "`enabled` must be a boolean (true or false), found a string"),
            (18, "pulling over `rtmp` is not supported; use http://host:port/path, tcp://host:port or udp://@:port"),
            (19, "unknown plugin `htp` in `protocols`; loaded plugins: example, http (did you mean `http`?)"),
            (22, "duplicate point name `live`: the first point with this name is on line 16"),
            (24, "file not found: "),
            (25, "`protocols` must list at least one plugin"),
            (26, "`reconnect_grace_ms` only applies to broadcast points"),
            (28, "is missing required key `name`"),
            (28, "is missing required key `source`"),
            (28, "is missing required key `protocols`"),
            (29, "`kind` must be one of \"broadcast\", \"on-demand\", found \"stream\""),
            (31, "unknown top-level table [pointz]; expected one of: server, plugins, point, limits, security, admin, access_log, hls, tls (did you mean `point`?)"),
        ],
    );
    // Every error carries the file, and Display is `file:line: message`.
    assert!(errors.iter().all(|error| error.file == path));
    assert_eq!(
        errors[0].to_string(),
        format!("{}:2: {}", path.display(), errors[0].message)
    );
}

#[test]
fn config_errors_display_one_per_line() {
    let fixture = Fixture::new();
    let path = fixture.config(
        "ferrocast.toml",
        "[server]\nclient_queue = 1\nlog_format = 3\n",
    );
    let errors = compile_file(&path, &FakeCatalog::default()).unwrap_err();
    let shown = errors.to_string();
    let lines: Vec<&str> = shown.lines().collect();
    assert_eq!(lines.len(), 2, "{shown}");
    assert!(lines[0].starts_with(&format!("{}:2: ", path.display())));
    assert!(lines[1].starts_with(&format!("{}:3: ", path.display())));
    assert!(lines[1].ends_with("found an integer"), "{}", lines[1]);
    let as_std_error: &dyn std::error::Error = &errors;
    assert_eq!(as_std_error.to_string(), shown);
}

#[test]
fn syntax_error_is_reported_alone() {
    let fixture = Fixture::new();
    // Line 1 would be an unknown-key error, but syntax comes first and alone.
    let text = "bogus = 1\n[server]\nlog_format = \"text\nclient_queue = 1\n";
    let path = fixture.config("ferrocast.toml", text);
    let errors = expect_errors(compile_file(&path, &FakeCatalog::default()));
    assert_errors(&errors, &[(3, "TOML syntax error")]);
}

#[test]
fn syntax_error_with_empty_parser_message_still_explains() {
    let fixture = Fixture::new();
    let path = fixture.config("ferrocast.toml", "[server]\nlog_format =\n");
    let errors = expect_errors(compile_file(&path, &FakeCatalog::default()));
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].line, 2);
    assert!(
        errors[0].message.starts_with("TOML syntax error at column"),
        "{}",
        errors[0].message
    );
    assert!(!errors[0].message.contains(": ;"), "{}", errors[0].message);
}

#[test]
fn duplicate_point_names() {
    let fixture = Fixture::new();
    let text = r#"[plugins.http]
[[point]]
name = "live"
kind = "broadcast"
source = "push"
protocols = ["http"]
[[point]]
name = "other"
kind = "broadcast"
source = "push"
protocols = ["http"]
[[point]]
name = "live"
kind = "broadcast"
source = "push"
protocols = ["http"]
"#;
    let path = fixture.config("ferrocast.toml", text);
    let errors = expect_errors(compile_file(&path, &FakeCatalog::default()));
    assert_errors(
        &errors,
        &[(
            13,
            "duplicate point name `live`: the first point with this name is on line 3",
        )],
    );
}

#[test]
fn invalid_point_names() {
    let fixture = Fixture::new();
    let long = "a".repeat(65);
    let text = format!(
        "[plugins.http]\n[[point]]\nname = \".hidden\"\nkind = \"broadcast\"\nsource = \"push\"\nprotocols = [\"http\"]\n[[point]]\nname = \"{long}\"\nkind = \"broadcast\"\nsource = \"push\"\nprotocols = [\"http\"]\n[[point]]\nname = \"a b\"\nkind = \"broadcast\"\nsource = \"push\"\nprotocols = [\"http\"]\n"
    );
    let path = fixture.config("ferrocast.toml", &text);
    let errors = expect_errors(compile_file(&path, &FakeCatalog::default()));
    assert_errors(
        &errors,
        &[
            (3, "it starts with '.'"),
            (8, "it is 65 characters long"),
            (13, "it contains ' '"),
        ],
    );
}

#[test]
fn unknown_protocol_suggests_closest_plugin() {
    let fixture = Fixture::new();
    let text = r#"[plugins.http]
[[point]]
name = "live"
kind = "broadcast"
source = "push"
protocols = [
  "htp",
  "rtmp",
  "http",
  "http",
]
"#;
    let path = fixture.config("ferrocast.toml", text);
    let errors = expect_errors(compile_file(&path, &FakeCatalog::default()));
    assert_errors(
        &errors,
        &[
            (
                7,
                "unknown plugin `htp` in `protocols`; loaded plugins: example, http (did you mean `http`?)",
            ),
            (8, "unknown plugin `rtmp` in `protocols`"),
            (10, "`http` is listed twice in `protocols`"),
        ],
    );
    assert!(
        !errors[1].message.contains("did you mean"),
        "nothing is close to rtmp: {}",
        errors[1].message
    );
}

#[test]
fn bad_listen_addresses_are_each_reported() {
    let fixture = Fixture::new();
    let text = r#"[plugins.http]
listen = [
  "0.0.0.0:8080",
  "8080",
  "127.0.0.1",
  "::1:80:x",
  42,
  "0.0.0.0:8080",
]
"#;
    let path = fixture.config("ferrocast.toml", text);
    let errors = expect_errors(compile_file(&path, &FakeCatalog::default()));
    let hint = "use ip:port, e.g. \"0.0.0.0:8080\" or \"[::1]:8080\"";
    assert_errors(
        &errors,
        &[
            (4, "a port alone is not enough"),
            (5, "the port is missing"),
            (6, "invalid listen address \"::1:80:x\" in [plugins.http]"),
            (7, "each entry of `listen` must be a string, found an integer"),
            (
                8,
                "duplicate listen address 0.0.0.0:8080 in [plugins.http] (already listed on line 3)",
            ),
        ],
    );
    for error in &errors[..3] {
        assert!(error.message.ends_with(hint), "{}", error.message);
    }
}

#[test]
fn listen_must_be_an_array() {
    let fixture = Fixture::new();
    let path = fixture.config(
        "ferrocast.toml",
        "[plugins.http]\nlisten = \"0.0.0.0:8080\"\n",
    );
    let errors = expect_errors(compile_file(&path, &FakeCatalog::default()));
    assert_errors(
        &errors,
        &[(2, "`listen` must be an array of strings, found a string")],
    );
}

#[test]
fn same_address_in_two_plugins_is_an_error_but_same_port_on_other_ip_is_not() {
    let fixture = Fixture::new();
    let text = r#"[plugins.http]
listen = ["127.0.0.1:8080", "[::1]:8080"]

[plugins.example]
listen = [
  "127.0.0.2:8080",
  "127.0.0.1:8080",
]
"#;
    let path = fixture.config("ferrocast.toml", text);
    let errors = expect_errors(compile_file(&path, &FakeCatalog::default()));
    assert_errors(
        &errors,
        &[(
            7,
            "listen address 127.0.0.1:8080 is also used by plugin `http` (line 2)",
        )],
    );

    // Different IPs on one port are fine.
    let fixed = text.replace("  \"127.0.0.1:8080\",\n", "");
    let path = fixture.config("ferrocast.toml", &fixed);
    let config = compile_file(&path, &FakeCatalog::default()).expect("no clash");
    assert_eq!(config.plugins["example"].listen.len(), 1);
}

#[test]
fn wildcard_address_overlaps_specific_address_on_same_port() {
    let fixture = Fixture::new();
    let text = r#"[plugins.http]
listen = ["0.0.0.0:8080", "[::1]:8080"]
[plugins.example]
listen = ["127.0.0.1:8080", "127.0.0.1:9090"]
"#;
    let path = fixture.config("ferrocast.toml", text);
    let errors = expect_errors(compile_file(&path, &FakeCatalog::default()));
    assert_errors(
        &errors,
        &[(
            4,
            "listen address 127.0.0.1:8080 overlaps 0.0.0.0:8080 of plugin `http` (line 2): 0.0.0.0 already covers every IPv4 address on port 8080",
        )],
    );
}

#[test]
fn wildcard_overlap_within_one_plugin_is_an_error_even_when_disabled() {
    let fixture = Fixture::new();
    let text =
        "[plugins.http]\nenabled = false\nlisten = [\"[::]:80\", \"[::1]:80\", \"0.0.0.0:81\"]\n";
    let path = fixture.config("ferrocast.toml", text);
    let errors = expect_errors(compile_file(&path, &FakeCatalog::default()));
    assert_errors(
        &errors,
        &[(
            3,
            "listen address [::1]:80 overlaps [::]:80 of this plugin (line 3): :: already covers every IPv6 address on port 80",
        )],
    );
}

#[test]
fn port_zero_never_clashes() {
    let fixture = Fixture::new();
    let text = r#"[plugins.http]
listen = ["127.0.0.1:0", "127.0.0.1:0", "0.0.0.0:0"]
[plugins.example]
listen = ["127.0.0.1:0"]
"#;
    let path = fixture.config("ferrocast.toml", text);
    let config =
        compile_file(&path, &FakeCatalog::default()).expect("port 0 is a fresh port each time");
    assert_eq!(config.plugins["http"].listen.len(), 3);
    assert_eq!(config.plugins["example"].listen.len(), 1);
}

#[test]
fn disabled_plugin_does_not_clash_with_other_plugins() {
    let fixture = Fixture::new();
    let text = r#"[plugins.http]
enabled = false
listen = ["0.0.0.0:8080"]
[plugins.example]
listen = ["0.0.0.0:8080"]
"#;
    let path = fixture.config("ferrocast.toml", text);
    let config =
        compile_file(&path, &FakeCatalog::default()).expect("a disabled plugin binds nothing");
    assert!(!config.plugin_enabled("http"));
    assert!(config.plugin_enabled("example"));
    assert_eq!(config.plugins["http"].listen.len(), 1);
}

#[test]
fn missing_on_demand_file_names_the_resolved_path() {
    let fixture = Fixture::new();
    let text = r#"[plugins.http]
[[point]]
name = "vod"
kind = "on-demand"
source = "media/x.ts"
protocols = ["http"]
"#;
    let path = fixture.config("ferrocast.toml", text);
    let errors = expect_errors(compile_file(&path, &FakeCatalog::default()));
    let root = fixture.root();
    let expected = format!(
        "file not found: {} (resolved from `media/x.ts` relative to {})",
        root.join("media/x.ts").display(),
        root.display()
    );
    assert_errors(&errors, &[(5, &expected)]);
}

#[test]
fn on_demand_source_must_be_ts_file_or_directory() {
    let fixture = Fixture::new();
    fixture.file("media/clip.mp4");
    let text = r#"[plugins.http]
[[point]]
name = "a"
kind = "on-demand"
source = "media/clip.mp4"
protocols = ["http"]
[[point]]
name = "b"
kind = "on-demand"
source = "push"
protocols = ["http"]
[[point]]
name = "c"
kind = "broadcast"
source = "media/clip.mp4"
protocols = ["http"]
"#;
    let path = fixture.config("ferrocast.toml", text);
    let errors = expect_errors(compile_file(&path, &FakeCatalog::default()));
    assert_errors(
        &errors,
        &[
            (5, "`source` must be a .ts file or a directory of .ts files"),
            (10, "\"push\" is for kind = \"broadcast\""),
            (15, "a broadcast point's `source` must be \"push\""),
        ],
    );
}

#[test]
fn relative_paths_resolve_against_the_config_directory() {
    let fixture = Fixture::new();
    let plugins = fixture.mkdir("lib/plugins");
    let clip = fixture.file("media/clip.TS");
    let shows = fixture.mkdir("conf/shows");
    let absolute_clip = fixture.file("elsewhere/abs.ts");
    let text = format!(
        r#"[server]
plugin_dir = "../lib/plugins"
[plugins.http]
[[point]]
name = "clip"
kind = "on-demand"
source = "../media/clip.TS"
protocols = ["http"]
[[point]]
name = "shows"
kind = "on-demand"
source = "./shows"
protocols = ["http"]
[[point]]
name = "abs"
kind = "on-demand"
source = "{}"
protocols = ["http"]
"#,
        absolute_clip.display()
    );
    let path = fixture.config("conf/ferrocast.toml", &text);
    let config = compile_file(&path, &FakeCatalog::default()).expect("paths resolve");
    assert_eq!(config.server.plugin_dir, Some(plugins));
    assert_eq!(
        config.point("clip").unwrap().source,
        PointSource::File(clip)
    );
    assert_eq!(
        config.point("shows").unwrap().source,
        PointSource::Directory(shows)
    );
    assert_eq!(
        config.point("abs").unwrap().source,
        PointSource::File(absolute_clip)
    );
    assert_eq!(
        config.point("clip").unwrap().reconnect_grace,
        Duration::ZERO,
        "on-demand points have no encoder to wait for"
    );
}

#[test]
fn missing_plugin_dir_is_an_error() {
    let fixture = Fixture::new();
    let path = fixture.config(
        "conf/ferrocast.toml",
        "[server]\nplugin_dir = \"plugins\"\n",
    );
    let errors = expect_errors(compile_file(&path, &FakeCatalog::default()));
    let expected = format!(
        "plugin directory {}: not found (resolved from `plugins` relative to {})",
        fixture.root().join("conf/plugins").display(),
        fixture.root().join("conf").display()
    );
    assert_errors(&errors, &[(2, &expected)]);
}

#[test]
fn read_plugin_dir_resolves_without_a_catalog() {
    let fixture = Fixture::new();
    let plugins = fixture.mkdir("plugins");
    let text = "[server]\nplugin_dir = \"plugins\"\n[plugins.whatever]\n";
    let path = fixture.config("ferrocast.toml", text);
    assert_eq!(read_plugin_dir(&path, text).unwrap(), Some(plugins));
    assert_eq!(read_plugin_dir(&path, "").unwrap(), None);
    let errors = read_plugin_dir(&path, "[server]\nplugin_dir = 5\n").unwrap_err();
    assert_errors(
        &errors.0,
        &[(2, "`plugin_dir` must be a string, found an integer")],
    );
}

#[test]
fn plugin_setting_issues_map_to_their_lines() {
    let fixture = Fixture::new();
    let text = r#"[plugins.http]
listen = ["127.0.0.1:8080"]
# a comment
fail_table = true
header_timeout_ms = 0
"#;
    let path = fixture.config("ferrocast.toml", text);
    let catalog = FakeCatalog::default();
    let errors = expect_errors(compile_file(&path, &catalog));
    assert_errors(
        &errors,
        &[
            (1, "plugin `http`: this table is wrong as a whole"),
            (
                5,
                "plugin `http`: setting `header_timeout_ms`: must be at least 1",
            ),
        ],
    );
    assert_eq!(
        catalog.validated.borrow()[0].1,
        "fail_table = true\nheader_timeout_ms = 0\n",
        "host keys and comments are not passed to the plugin"
    );
}

#[test]
fn plugin_settings_are_one_per_line_whatever_their_layout() {
    let fixture = Fixture::new();
    let text = r#"[plugins.example]
routes = [
  "a", # first
  "b",
]
banner = """two
lines"""
limits = { max = 3 }
tls.cert = "c.pem"
path = 'C:\dir "x"'

[plugins.example.cache]
size = 10
"#;
    let path = fixture.config("ferrocast.toml", text);
    let config = compile_file(&path, &FakeCatalog::default()).unwrap();
    assert_eq!(
        config.plugins["example"].settings,
        "routes = [\"a\", \"b\"]\n\
         banner = \"two\\nlines\"\n\
         limits = { max = 3 }\n\
         tls = { cert = \"c.pem\" }\n\
         path = \"C:\\\\dir \\\"x\\\"\"\n\
         cache = { size = 10 }\n"
    );
}

#[test]
fn disabled_plugin_on_a_point_is_a_warning_not_an_error() {
    let fixture = Fixture::new();
    let text = r#"[plugins.http]
listen = ["127.0.0.1:8080"]
[plugins.example]
enabled = false

[[point]]
name = "live"
kind = "broadcast"
source = "push"
protocols = ["http", "example"]
"#;
    let path = fixture.config("ferrocast.toml", text);
    let config = compile_file(&path, &FakeCatalog::default()).expect("only a warning");
    assert_eq!(config.warnings.len(), 1, "{:?}", config.warnings);
    let warning = &config.warnings[0];
    assert!(
        warning.starts_with(&format!("{}:10: ", path.display())),
        "{warning}"
    );
    assert!(
        warning.contains(
            "plugin `example` is disabled (enabled = false in [plugins.example] on line 3)"
        ),
        "{warning}"
    );
    assert_eq!(config.point("live").unwrap().protocols, ["http", "example"]);
    assert!(!config.plugin_enabled("example"));
}

#[test]
fn protocol_without_plugin_table_is_a_warning() {
    let fixture = Fixture::new();
    let text = "[[point]]\nname = \"live\"\nkind = \"broadcast\"\nsource = \"push\"\nprotocols = [\"example\"]\n";
    let path = fixture.config("ferrocast.toml", text);
    let config = compile_file(&path, &FakeCatalog::default()).unwrap();
    assert_eq!(config.warnings.len(), 1);
    assert!(
        config.warnings[0].contains(":5: "),
        "{}",
        config.warnings[0]
    );
    assert!(config.warnings[0].contains("no [plugins.example] table"));
}

#[test]
fn wrong_table_shapes_are_reported() {
    let fixture = Fixture::new();
    let text = "server = 1\nplugins = { http = 3 }\npoint = \"live\"\n";
    let path = fixture.config("ferrocast.toml", text);
    let errors = expect_errors(compile_file(&path, &FakeCatalog::default()));
    assert_errors(
        &errors,
        &[
            (
                1,
                "`server` must be a table (write it as [server]), found an integer",
            ),
            (
                2,
                "`plugins.http` must be a table of that plugin's settings",
            ),
            (3, "`point` must be an array of tables"),
        ],
    );
}

#[test]
fn inline_points_are_accepted() {
    let fixture = Fixture::new();
    let text = "point = [{ name = \"a\", kind = \"broadcast\", source = \"push\", protocols = [\"http\"] }]\n[plugins.http]\n";
    let path = fixture.config("ferrocast.toml", text);
    let config = compile_file(&path, &FakeCatalog::default()).unwrap();
    assert_eq!(config.points[0].name, "a");
    assert_eq!(config.points[0].line, 1);
}

#[test]
fn unreadable_file_is_one_error() {
    let fixture = Fixture::new();
    let path = fixture.root().join("missing.toml");
    let errors = load(&path, &FakeCatalog::default()).unwrap_err();
    assert_eq!(errors.len(), 1);
    assert_eq!(errors.0[0].line, 0);
    let shown = errors.to_string();
    assert!(
        shown.starts_with(&format!(
            "{}: cannot read the configuration file",
            path.display()
        )),
        "{shown}"
    );
}

#[test]
fn no_plugins_loaded_says_so() {
    struct Empty;
    impl PluginCatalog for Empty {
        fn plugin_names(&self) -> Vec<String> {
            Vec::new()
        }
        fn validate_settings(&self, _: &str, _: &str) -> Vec<SettingIssue> {
            unreachable!("no plugin is known")
        }
    }
    let fixture = Fixture::new();
    let path = fixture.config("ferrocast.toml", "[plugins.http]\n");
    let errors = expect_errors(load(&path, &Empty));
    assert_errors(
        &errors,
        &[(
            1,
            "unknown plugin `http` in [plugins.http]; no plugins were loaded",
        )],
    );
}

// ---- [limits] and per-point limits -------------------------------------------------------

#[test]
fn limits_compile_with_defaults_for_what_is_absent() {
    let fixture = Fixture::new();
    let path = fixture.config(
        "ferrocast.toml",
        r#"[limits]
max_connections = 500
max_connections_per_ip = 20
connection_rate_per_ip = 5
idle_timeout_ms = 3000

[plugins.http]
listen = ["127.0.0.1:8080"]

[[point]]
name = "live"
kind = "broadcast"
source = "push"
protocols = ["http"]
max_clients = 10
max_bandwidth = "50M"

[[point]]
name = "other"
kind = "broadcast"
source = "push"
protocols = ["http"]
max_bandwidth_kbps = 800
"#,
    );
    let config = compile_file(&path, &FakeCatalog::default()).expect("valid config");
    assert_eq!(
        config.limits,
        LimitsConfig {
            max_connections: 500,
            max_connections_per_ip: 20,
            connection_rate_per_ip: 5,
            idle_timeout: Duration::from_millis(3000),
            send_buffer_bytes: 256 * 1024,
        }
    );
    assert_eq!(
        config.point("live").unwrap().limits,
        PointLimits {
            max_clients: Some(10),
            max_bandwidth_bps: Some(50_000_000),
        }
    );
    assert_eq!(
        config.point("other").unwrap().limits.max_bandwidth_bps,
        Some(800_000)
    );
    let empty = fixture.config("empty.toml", "");
    let defaults = compile_file(&empty, &FakeCatalog::default()).unwrap();
    assert_eq!(defaults.limits, LimitsConfig::default());
    assert_eq!(defaults.limits.idle_timeout, Duration::from_secs(10));
}

#[test]
fn bad_limits_are_reported_with_lines() {
    let fixture = Fixture::new();
    let path = fixture.config(
        "ferrocast.toml",
        r#"[limits]
max_connections = 0
idle_timeout_ms = 50
send_buffer_bytes = "big"
max_conections_per_ip = 3

[plugins.http]
listen = ["127.0.0.1:8080"]

[[point]]
name = "live"
kind = "broadcast"
source = "push"
protocols = ["http"]
max_clients = -1
max_bandwidth = "fast"

[[point]]
name = "both"
kind = "broadcast"
source = "push"
protocols = ["http"]
max_bandwidth = "5M"
max_bandwidth_kbps = 5000
"#,
    );
    let errors = expect_errors(compile_file(&path, &FakeCatalog::default()));
    assert_errors(
        &errors,
        &[
            (
                2,
                "`max_connections` must be between 1 and 1000000, found 0",
            ),
            (3, "`idle_timeout_ms` must be between 100 and 3600000"),
            (4, "`send_buffer_bytes` must be an integer"),
            (5, "did you mean `max_connections_per_ip`?"),
            (15, "`max_clients` must be between 1 and 1000000"),
            (16, "`max_bandwidth` must be bits per second"),
            (23, "either `max_bandwidth` or `max_bandwidth_kbps`"),
        ],
    );
}

// ---- access rules ------------------------------------------------------------

/// A real argon2id hash (of "k3y"), so the compiler's hash check sees the real format.
fn key_hash() -> String {
    crate::access::secret::hash("k3y").unwrap()
}

#[test]
fn access_rules_default_to_loopback_publishing_and_public_play() {
    let fixture = Fixture::new();
    let path = fixture.config(
        "ferrocast.toml",
        "[[point]]\nname = \"live\"\nkind = \"broadcast\"\nsource = \"push\"\nprotocols = [\"http\"]\n",
    );
    let config = compile_file(&path, &FakeCatalog::default()).unwrap();
    assert_eq!(
        config.security.publish,
        crate::access::PublishRule::Loopback
    );
    assert_eq!(config.security.play, crate::access::PlayRule::default());
    assert_eq!(config.points[0].publish, None);
    assert!(config.security.url_signing_key.is_none());
}

#[test]
fn security_and_point_rules_compile() {
    let fixture = Fixture::new();
    let hash = key_hash();
    let text = format!(
        r#"[security]
url_signing_key = "0123456789abcdef0123"
publish = "open"
max_failed_attempts = 3
lockout_ms = 5000

[[point]]
name = "live"
kind = "broadcast"
source = "push"
protocols = ["http"]
publish = {{ keys = ["{hash}"], users = [{{ name = "enc", password = "{hash}" }}], allow = ["10.0.0.0/8", "127.0.0.1"] }}
play = {{ allow = ["192.0.2.0/24"], deny = ["192.0.2.9"], signed = true }}
"#
    );
    let path = fixture.config("ferrocast.toml", &text);
    let config = compile_file(&path, &FakeCatalog::default()).unwrap();
    assert_eq!(config.security.publish, crate::access::PublishRule::Open);
    assert_eq!(config.security.limiter.max_failures, 3);
    assert_eq!(config.security.limiter.lockout, Duration::from_secs(5));
    let point = &config.points[0];
    let Some(crate::access::PublishRule::Protected { keys, users, allow }) = &point.publish else {
        panic!("a protected publish rule: {:?}", point.publish);
    };
    assert_eq!((keys.len(), users.len()), (1, 1));
    assert_eq!(users[0].name, "enc");
    assert_eq!(allow.as_ref().map(|list| list.0.len()), Some(2));
    let play = point.play.as_ref().unwrap();
    assert!(play.signed && play.deny.0.len() == 1);
    let debug = format!("{config:?}");
    assert!(
        !debug.contains("0123456789abcdef0123") && !debug.contains(&hash),
        "secrets stay out of Debug output"
    );
}

#[test]
fn bad_access_rules_are_reported_with_lines() {
    let fixture = Fixture::new();
    let text = r#"[security]
url_signing_key = "short"
publish = "everyone"

[[point]]
name = "live"
kind = "broadcast"
source = "push"
protocols = ["http"]
publish = { keys = ["plaintext"], allow = ["10.0.0.0/33"] }
play = { signed = "yes", deny = ["nowhere"] }

[[point]]
name = "other"
kind = "broadcast"
source = "push"
protocols = ["http"]
publish = {}
"#;
    let path = fixture.config("ferrocast.toml", text);
    let errors = expect_errors(compile_file(&path, &FakeCatalog::default()));
    assert_errors(
        &errors,
        &[
            (2, "`url_signing_key` must be at least 16 characters"),
            (
                3,
                "`publish` must be one of \"loopback\", \"open\", found \"everyone\"",
            ),
            (10, "entry of `keys`: not an argon2 PHC string"),
            (10, "entry of `allow`: `10.0.0.0/33` has prefix length 33"),
            (
                11,
                "entry of `deny`: `nowhere` is not an IP address or network",
            ),
            (11, "`signed` must be a boolean"),
            (18, "gives no `keys`, `users` or `allow`"),
        ],
    );
}

#[test]
fn signed_points_need_a_signing_key() {
    let fixture = Fixture::new();
    let text = "[[point]]\nname = \"live\"\nkind = \"broadcast\"\nsource = \"push\"\nprotocols = [\"http\"]\nplay = { signed = true }\n";
    let path = fixture.config("ferrocast.toml", text);
    let errors = expect_errors(compile_file(&path, &FakeCatalog::default()));
    assert_errors(&errors, &[(1, "has no `url_signing_key`")]);
}

#[test]
fn timeline_and_udp_join_rate_default_and_on_request() {
    let fixture = Fixture::new();
    fixture.file("media/clip.ts");
    let text = r#"[plugins.http]
[[point]]
name = "live"
kind = "broadcast"
source = "push"
protocols = ["http"]
[[point]]
name = "raw"
kind = "broadcast"
source = "push"
protocols = ["http"]
timeline = "source"
udp_join_rate = 0
"#;
    let path = fixture.config("ferrocast.toml", text);
    let config = compile_file(&path, &FakeCatalog::default()).unwrap();
    assert_eq!(
        config.point("live").unwrap().timeline,
        TimelineMode::Continuous
    );
    assert_eq!(config.point("raw").unwrap().timeline, TimelineMode::Source);
    assert_eq!(
        config.point("live").unwrap().udp_join_rate,
        DEFAULT_UDP_JOIN_RATE
    );
    assert_eq!(config.point("raw").unwrap().udp_join_rate, 0);

    let wrong = r#"[plugins.http]
[[point]]
name = "live"
kind = "broadcast"
source = "push"
protocols = ["http"]
timeline = "sorce"
[[point]]
name = "clip"
kind = "on-demand"
source = "media/clip.ts"
protocols = ["http"]
timeline = "source"
"#;
    let path = fixture.config("wrong.toml", wrong);
    let errors = expect_errors(compile_file(&path, &FakeCatalog::default()));
    assert_errors(
        &errors,
        &[
            (7, "`timeline` must be one of \"continuous\", \"source\", found \"sorce\" (did you mean `source`?)"),
            (13, "`timeline` only applies to broadcast points"),
        ],
    );
}

#[test]
fn listen_entries_may_name_a_tls_table() {
    let fixture = Fixture::new();
    let text = r#"[tls.main]
cert = "certs/fullchain.pem"
key = "certs/privkey.pem"
sni = [{ cert = "other.pem", key = "other.key" }]

[plugins.http]
listen = ["127.0.0.1:8080", { address = "127.0.0.1:8443", tls = "main" }]

[admin]
tls = "main"
"#;
    let path = fixture.config("ferrocast.toml", text);
    let config = compile_file(&path, &FakeCatalog::default()).expect("valid");
    let http = &config.plugins["http"];
    let tls_address: SocketAddr = "127.0.0.1:8443".parse().unwrap();
    assert_eq!(http.listen.len(), 2);
    assert_eq!(
        http.tls_listen.get(&tls_address).map(String::as_str),
        Some("main")
    );
    let main = &config.tls["main"];
    assert_eq!(main.certs.len(), 2);
    assert_eq!(
        main.certs[0].cert,
        fixture.root().join("certs/fullchain.pem")
    );
    assert_eq!(main.certs[1].key, fixture.root().join("other.key"));
    assert_eq!(main.handshake_timeout, DEFAULT_HANDSHAKE_TIMEOUT);
    assert_eq!(config.admin.unwrap().tls.as_deref(), Some("main"));
}

#[test]
fn tls_mistakes_are_reported_with_their_lines() {
    let fixture = Fixture::new();
    let text = r#"[tls.main]
cert = "a.pem"
handshake_timeout_ms = 5

[plugins.http]
listen = [
  { address = "127.0.0.1:8443", tls = "mian" },
  { tls = "main" },
]
"#;
    let path = fixture.config("ferrocast.toml", text);
    let errors = expect_errors(compile_file(&path, &FakeCatalog::default()));
    assert_errors(
        &errors,
        &[
            (1, "[tls.main] is missing required key `key`"),
            (3, "`handshake_timeout_ms` must be"),
            (7, "refers to no [tls.mian] table"),
            (8, "is missing required key `address`"),
        ],
    );
}

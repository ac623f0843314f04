//! Plugin code hot reload with the real binary: a new build installed by atomic rename into
//! the plugin directory becomes a new *generation* that takes every new session, while the
//! sessions already open stay on the generation they started on until they end (then
//! GENERATION_DRAINED). A protocol plugin is swapped under a playing HTTP client, triggered by
//! `ferrocast reload --plugins-only`. Builds that cannot be used (garbage, a future ABI, a
//! shared library without the plugin symbol, a build that panics at init) are refused, and
//! nothing changes.
//!
//! The `panicky` fixture answers `version` with its crate version: `libfixture_panic.so` is
//! 0.1.0, `libfixture_panic_v2.so` (the same source) is 0.2.0.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use ferrocast_tests::panicky::{panicky_server, panicky_server_with, LineClient, PANICKY};
use ferrocast_tests::*;

/// Poll `ferrocast status` until `ok` holds for `plugin`'s generations (session counts follow
/// connections asynchronously); panic with the last status and the log if it does not.
fn wait_for_generations(
    server: &Ferrocast,
    plugin: &str,
    what: &str,
    ok: impl Fn(&[GenerationStatus]) -> bool,
) -> Vec<GenerationStatus> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let generations = server.generations_of(plugin);
        if ok(&generations) {
            return generations;
        }
        assert!(
            Instant::now() < deadline,
            "status of plugin {plugin}: expected {what}, got {generations:#?}\nserver log:\n{}",
            server.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The one log line of `event`, which must carry each of `fields` (key, value).
fn the_event(server: &Ferrocast, event: &str, fields: &[(&str, &str)]) -> String {
    let lines = server.event_lines(event);
    assert_eq!(lines.len(), 1, "{lines:#?}");
    let line = lines.into_iter().next().unwrap_or_default();
    for (key, value) in fields {
        assert_eq!(log_field(&line, key), Some(*value), "{key} in {line}");
    }
    line
}

#[test]
fn a_new_build_takes_new_sessions_while_old_sessions_stay_on_theirs() {
    let (server, plugins, panicky) = panicky_server();
    let v2 = built_library("libfixture_panic_v2.so");

    let mut old: Vec<LineClient> = (0..3).map(|_| LineClient::connect(panicky)).collect();
    for client in &mut old {
        assert_eq!(client.version(), "version 0.1.0");
    }

    install_build(plugins.path(), PANICKY, &v2);
    server.wait_for("PLUGIN_SWAPPED", Duration::from_secs(10));
    let line = &the_event(
        &server,
        "PLUGIN_SWAPPED",
        &[
            ("plugin", "panicky"),
            ("generation", "2"),
            ("version", "0.2.0"),
            ("previous_generation", "1"),
            ("previous_sessions", "3"),
        ],
    );
    assert!(
        log_field(line, "took_ms").is_some_and(|ms| ms.parse::<f64>().is_ok()),
        "{line}"
    );

    // The old sessions are still served by 0.1.0; new ones by 0.2.0.
    for client in &mut old {
        assert_eq!(client.version(), "version 0.1.0");
        assert_eq!(client.ask("hello"), "hi");
    }
    let mut new: Vec<LineClient> = (0..2).map(|_| LineClient::connect(panicky)).collect();
    for client in &mut new {
        assert_eq!(client.version(), "version 0.2.0");
    }

    let generations = wait_for_generations(&server, "panicky", "3 sessions on 1, 2 on 2", |g| {
        generation(g, 1).is_some_and(|g| g.sessions == 3)
            && generation(g, 2).is_some_and(|g| g.sessions == 2)
    });
    assert_eq!(generations.len(), 2, "{generations:#?}");
    let (first, second) = (&generations[0], &generations[1]);
    assert_eq!(
        (first.version.as_str(), first.role.as_str()),
        ("0.1.0", "draining"),
        "{generations:#?}"
    );
    assert_eq!(
        (second.version.as_str(), second.role.as_str()),
        ("0.2.0", "current"),
        "{generations:#?}"
    );

    // The log view of the same, on SIGUSR1: one PLUGIN_STATUS line per generation.
    server.signal("USR1");
    server.wait_for_count("PLUGIN_STATUS", 3, Duration::from_secs(10));
    let statuses: Vec<String> = server
        .event_lines("PLUGIN_STATUS")
        .into_iter()
        .filter(|line| log_field(line, "plugin") == Some("panicky"))
        .collect();
    assert_eq!(statuses.len(), 2, "{statuses:#?}");
    for (line, (number, sessions, role)) in statuses
        .iter()
        .zip([("1", "3", "draining"), ("2", "2", "current")])
    {
        assert_eq!(log_field(line, "generation"), Some(number), "{line}");
        assert_eq!(log_field(line, "sessions"), Some(sessions), "{line}");
        assert_eq!(log_field(line, "role"), Some(role), "{line}");
    }

    // The old sessions end: generation 1 has drained and is no longer listed.
    drop(old);
    server.wait_for("GENERATION_DRAINED", Duration::from_secs(10));
    the_event(
        &server,
        "GENERATION_DRAINED",
        &[("plugin", "panicky"), ("generation", "1")],
    );
    let generations = wait_for_generations(&server, "panicky", "only generation 2", |g| {
        g.len() == 1 && g[0].generation == 2
    });
    assert_eq!(
        (generations[0].sessions, generations[0].role.as_str()),
        (2, "current")
    );
    for client in &mut new {
        assert_eq!(client.version(), "version 0.2.0");
    }
    assert_eq!(LineClient::connect(panicky).version(), "version 0.2.0");
}

#[test]
fn the_http_plugin_is_swapped_under_a_playing_client() {
    let http = built_library("libferrocast_http.so");
    let plugins = plugin_dir(&[("libferrocast_http.so", &http)]);
    let address = loopback();
    let server = Ferrocast::start(
        &config_with(address, &standard_points()),
        plugins.path(),
        address,
    );
    let (_encoder, old_reader) = push_and_play(&server, &server.url("live"));
    assert!(
        !old_reader.body().is_empty(),
        "the client plays before the swap"
    );

    // A fresh copy is a new inode: a new build as far as the server can tell.
    install_build(plugins.path(), "libferrocast_http.so", &http);
    let before_swap = old_reader.body().len();
    let reload = server.command(&["reload", "--plugins-only"]);
    assert_eq!(
        reload.code,
        Some(0),
        "reload failed: {}\nserver log:\n{}",
        reload.text,
        server.logs()
    );
    assert!(
        reload.text.contains("plugin http: generation 2"),
        "reload report: {}",
        reload.text
    );
    the_event(
        &server,
        "PLUGIN_SWAPPED",
        &[("plugin", "http"), ("generation", "2")],
    );

    // A new client is served by generation 2.
    let new_reader = TsReader::http(address, "/live");
    std::thread::sleep(Duration::from_secs(3));
    let generations = wait_for_generations(
        &server,
        "http",
        "generation 1 with the old client and the encoder, generation 2 current with the new client",
        |g| {
            generation(g, 1).is_some_and(|g| g.sessions >= 2 && g.role == "draining")
                && generation(g, 2).is_some_and(|g| g.sessions >= 1 && g.role == "current")
        },
    );
    assert_eq!(generations.len(), 2, "{generations:#?}");

    // The old client kept playing through the swap, without a stall.
    assert!(
        old_reader.ended_at().is_none(),
        "the old client must stay attached"
    );
    let after_swap = old_reader.body().len() - before_swap;
    assert!(
        after_swap > 50_000,
        "only {after_swap} bytes after the swap"
    );
    let gap = old_reader.longest_gap_since(old_reader.started + Duration::from_millis(500));
    assert!(
        gap < Duration::from_secs(2),
        "the old client saw {gap:?} of silence"
    );
    assert!(
        new_reader.ended_at().is_none(),
        "the new client must stay attached"
    );
    assert!(
        new_reader.body().len() > 50_000,
        "the new client got only {} bytes",
        new_reader.body().len()
    );
    assert_decodes(server.dir.path(), &old_reader.body(), 100);
    assert_decodes(server.dir.path(), &new_reader.body(), 50);
    let response = http_get(address, "/vod", 188);
    assert_eq!(response.status, 200, "{}", response.head);
}

/// Build a shared library that is not a ferrocast plugin (no plugin symbol).
fn library_without_plugin_symbol(dir: &Path) -> PathBuf {
    let source = dir.join("empty.c");
    std::fs::write(
        &source,
        "int ferrocast_fixture_nothing(void) { return 0; }\n",
    )
    .unwrap();
    let library = dir.join("libempty.so");
    let output = Command::new("cc")
        .args(["-shared", "-fPIC", "-o"])
        .arg(&library)
        .arg(&source)
        .output()
        .expect("run cc");
    assert!(
        output.status.success(),
        "cc failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    library
}

/// The server still runs generation 1 of `panicky`: the open sessions answer, a new one gets
/// 0.1.0, and status lists generation 1 as current and nothing else.
fn assert_unchanged(server: &Ferrocast, panicky: SocketAddr, open: &mut [LineClient]) {
    for client in open.iter_mut() {
        assert_eq!(client.version(), "version 0.1.0");
        assert_eq!(client.ask("hello"), "hi");
    }
    assert_eq!(LineClient::connect(panicky).version(), "version 0.1.0");
    let generations = wait_for_generations(
        server,
        "panicky",
        "generation 1 current with the open sessions, and nothing else",
        |g| g.len() == 1 && g[0].sessions == open.len(),
    );
    assert_eq!(
        (
            generations[0].generation,
            generations[0].version.as_str(),
            generations[0].role.as_str()
        ),
        (1, "0.1.0", "current"),
        "{generations:#?}"
    );
    assert!(
        server.event_lines("PLUGIN_SWAPPED").is_empty(),
        "nothing may be swapped; log:\n{}",
        server.logs()
    );
}

/// Wait for refusal number `count` and return its log line, which must name the plugin file.
fn refusal(server: &Ferrocast, count: usize) -> String {
    server.wait_for_count("PLUGIN_REFUSED", count, Duration::from_secs(10));
    let refused = server.event_lines("PLUGIN_REFUSED");
    let line = refused[count - 1].clone();
    assert!(line.contains(PANICKY), "{line}");
    line
}

#[test]
fn bad_builds_are_refused_and_the_running_generation_keeps_serving() {
    let (server, plugins, panicky) = panicky_server();
    let mut open: Vec<LineClient> = (0..2).map(|_| LineClient::connect(panicky)).collect();
    for client in &mut open {
        assert_eq!(client.version(), "version 0.1.0");
    }
    let scratch = tempfile::tempdir().unwrap();

    // (i) Garbage, noticed by the directory watch.
    let garbage = scratch.path().join("garbage.so");
    std::fs::write(&garbage, b"this is not an ELF shared object").unwrap();
    install_build(plugins.path(), PANICKY, &garbage);
    let line = refusal(&server, 1);
    assert!(line.contains("not a loadable shared library"), "{line}");
    assert_unchanged(&server, panicky, &mut open);

    // (ii) A plugin built against a future, incompatible plugin API.
    install_build(
        plugins.path(),
        PANICKY,
        &built_library("libfixture_future_abi.so"),
    );
    let line = refusal(&server, 2);
    assert!(
        line.contains("built against plugin-api 2.0.0, this server speaks 1.1.0"),
        "{line}"
    );
    assert_unchanged(&server, panicky, &mut open);

    // (iii) A real shared library without the plugin symbol, picked up by `ferrocast reload`
    //       (well before the watch's 400 ms debounce ends).
    install_build(
        plugins.path(),
        PANICKY,
        &library_without_plugin_symbol(scratch.path()),
    );
    let _reload = server.command(&["reload", "--plugins-only"]);
    let line = refusal(&server, 3);
    assert!(line.contains("not a ferrocast plugin"), "{line}");
    assert_unchanged(&server, panicky, &mut open);
    // What `ferrocast reload` prints and returns for this build is checked by
    // `reload_reports_a_build_refused_while_loading`.
}

/// A build that fails to load (here: a shared library without the plugin symbol) is reported
/// by `ferrocast reload` itself, with the reason, and the command exits 1.
#[test]
fn reload_reports_a_build_refused_while_loading() {
    let (server, plugins, panicky) = panicky_server();
    let mut open = vec![LineClient::connect(panicky)];
    assert_eq!(open[0].version(), "version 0.1.0");
    let scratch = tempfile::tempdir().unwrap();
    install_build(
        plugins.path(),
        PANICKY,
        &library_without_plugin_symbol(scratch.path()),
    );
    let reload = server.command(&["reload", "--plugins-only"]);
    let line = refusal(&server, 1);
    assert!(line.contains("not a ferrocast plugin"), "{line}");
    assert_unchanged(&server, panicky, &mut open);
    assert!(
        reload.text.contains(PANICKY) && reload.text.contains("not a ferrocast plugin"),
        "`ferrocast reload` must report the refused build and why; it printed {:?} (exit {:?})",
        reload.text,
        reload.code
    );
    assert_eq!(
        reload.code,
        Some(1),
        "`ferrocast reload` must exit 1 when a build is refused; it printed {:?}",
        reload.text
    );
}

/// A new build that panics while it is created (its self-check) is refused; generation 1,
/// which accepts the same settings, keeps serving.
#[test]
fn a_build_that_panics_at_init_is_refused() {
    let (server, plugins, panicky) = panicky_server_with("panic_on_create_version = \"0.2.0\"\n");
    let mut open = vec![LineClient::connect(panicky)];
    assert_eq!(open[0].version(), "version 0.1.0");
    install_build(
        plugins.path(),
        PANICKY,
        &built_library("libfixture_panic_v2.so"),
    );
    let reload = server.command(&["reload", "--plugins-only"]);
    let line = refusal(&server, 1);
    assert!(line.contains("panicked during initialisation"), "{line}");
    assert!(
        line.contains("fixture build 0.2.0 asked to panic"),
        "{line}"
    );
    assert_unchanged(&server, panicky, &mut open);
    assert!(
        reload.text.contains("new build refused") && reload.text.contains("panicked"),
        "`ferrocast reload` must report the refused build; it printed {:?}",
        reload.text
    );
    assert_eq!(reload.code, Some(1), "{:?}", reload.text);
}

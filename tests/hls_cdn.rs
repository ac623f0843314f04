//! Scale-out: nginx, as a caching reverse proxy running `config/nginx/hls-cache.conf` as it
//! is, in front of a ferrocast origin; 200 HLS clients read a live point through it. The
//! origin must see about one request per segment and a bounded rate of playlist requests;
//! every client must get the same segment bytes, which decode. And the two-tier layout
//! without a CDN: an edge ferrocast pulls the origin's point and serves HLS itself.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use ferrocast_tests::{
    config_with, decode, http_exchange, loopback, point_toml, standard_plugin_dir, workspace,
    Encoder, Ferrocast,
};

const CLIENTS: usize = 200;
const WATCH: Duration = Duration::from_secs(20);

/// nginx with its own prefix (cache, temporary files, logs), on a loopback port. Stopped
/// on drop.
struct Nginx {
    child: Child,
    prefix: tempfile::TempDir,
    address: SocketAddr,
}

impl Nginx {
    fn start(origin: SocketAddr) -> Self {
        let prefix = tempfile::tempdir().expect("nginx prefix");
        let address = loopback();
        let root = prefix.path();
        std::fs::write(root.join("listen.conf"), format!("listen {address};\n")).unwrap();
        std::fs::write(
            root.join("origin.conf"),
            format!("upstream ferrocast_origin {{ server {origin}; keepalive 32; }}\n"),
        )
        .unwrap();
        for dir in ["tmp", "cache"] {
            std::fs::create_dir(root.join(dir)).unwrap();
        }
        // Run as root (as CI does), nginx's workers become `nobody`: they must reach and
        // write the prefix.
        open_up(root);
        // Copied as it is: its includes and relative paths resolve in the prefix.
        let config = root.join("hls-cache.conf");
        std::fs::copy(workspace().join("config/nginx/hls-cache.conf"), &config).unwrap();
        let child = Command::new(nginx_binary())
            .arg("-p")
            .arg(root)
            .args(["-e", "error.log", "-g", "daemon off;", "-c"])
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start nginx (.ci/run installs it)");
        let nginx = Self {
            child,
            prefix,
            address,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(address).is_err() {
            assert!(
                Instant::now() < deadline,
                "nginx did not listen on {address}: {}",
                std::fs::read_to_string(nginx.prefix.path().join("error.log")).unwrap_or_default()
            );
            thread::sleep(Duration::from_millis(100));
        }
        nginx
    }
}

impl Drop for Nginx {
    /// SIGTERM: the master stops its workers, then exits (SIGKILL would orphan them).
    fn drop(&mut self) {
        // SAFETY: `kill` with a pid we spawned and still own (not yet reaped).
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        if ferrocast_tests::wait_child(&mut self.child, Duration::from_secs(10)).is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn nginx_binary() -> PathBuf {
    let sbin = PathBuf::from("/usr/sbin/nginx");
    if sbin.exists() {
        sbin
    } else {
        PathBuf::from("nginx")
    }
}

fn open_up(root: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o755));
    for dir in ["tmp", "cache"] {
        let _ = std::fs::set_permissions(root.join(dir), std::fs::Permissions::from_mode(0o777));
    }
}

fn get(address: SocketAddr, path: &str) -> Option<ferrocast_tests::Response> {
    let request = format!("GET {path} HTTP/1.1\r\nHost: edge\r\nConnection: close\r\n\r\n");
    http_exchange(
        address,
        request.as_bytes(),
        16 << 20,
        Duration::from_secs(10),
    )
    .ok()
}

/// What every client saw: each segment's bytes by name (the first copy), and mismatches.
#[derive(Default)]
struct Seen {
    segments: HashMap<String, Vec<u8>>,
    mismatches: Vec<String>,
    fetched: usize,
    playlists: usize,
    failures: Vec<String>,
}

/// One lean HLS client: reload the playlist every second, fetch each new segment once.
fn client(nginx: SocketAddr, seen: Arc<Mutex<Seen>>, until: Instant) {
    let mut done: Vec<String> = Vec::new();
    while Instant::now() < until {
        let Some(playlist) = get(nginx, "/live/index.m3u8") else {
            seen.lock()
                .unwrap()
                .failures
                .push("playlist: no answer".into());
            thread::sleep(Duration::from_millis(500));
            continue;
        };
        seen.lock().unwrap().playlists += 1;
        if playlist.status != 200 {
            seen.lock()
                .unwrap()
                .failures
                .push(format!("playlist {}", playlist.status));
            thread::sleep(Duration::from_millis(500));
            continue;
        }
        let text = playlist.body_text();
        let names: Vec<String> = text
            .lines()
            .filter(|line| line.starts_with("seg"))
            .map(str::to_owned)
            .collect();
        // A player starts three segments from the end.
        let start = if done.is_empty() {
            names.len().saturating_sub(3)
        } else {
            0
        };
        for name in &names[start..] {
            if done.contains(name) {
                continue;
            }
            match get(nginx, &format!("/live/{name}")) {
                Some(segment) if segment.status == 200 => {
                    let mut seen = seen.lock().unwrap();
                    seen.fetched += 1;
                    let first = seen
                        .segments
                        .entry(name.clone())
                        .or_insert_with(|| segment.body.clone());
                    if *first != segment.body {
                        seen.mismatches.push(name.clone());
                    }
                }
                other => seen
                    .lock()
                    .unwrap()
                    .failures
                    .push(format!("{name}: {:?}", other.map(|r| r.status))),
            }
            done.push(name.clone());
        }
        thread::sleep(Duration::from_secs(1));
    }
}

/// The origin's counter `name` of the http plugin, from `status`.
fn origin_counter(origin: &Ferrocast, name: &str) -> u64 {
    let status = origin.command(&["status"]);
    let prefix = format!("counter http {name} ");
    status
        .text
        .lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .map_or(0, |value| value.trim().parse().unwrap())
}

fn hls_points() -> String {
    format!(
        "[hls]\ntarget_duration_ms = 2000\nwindow = 6\n\n{}",
        point_toml("live", "broadcast", "push", &["http", "hls"])
    )
}

#[test]
fn two_hundred_clients_through_nginx_cost_the_origin_one_request_per_segment() {
    let plugins = standard_plugin_dir();
    let http = loopback();
    let origin = Ferrocast::start(&config_with(http, &hls_points()), plugins.path(), http);
    let _encoder = Encoder::push(&origin.url("live"), 60);
    let nginx = Nginx::start(http);
    // Wait for a playlist with a segment, through the cache.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !get(nginx.address, "/live/index.m3u8")
        .is_some_and(|r| r.status == 200 && r.body_text().contains("seg"))
    {
        assert!(Instant::now() < deadline, "no playlist through nginx");
        thread::sleep(Duration::from_millis(500));
    }
    let (playlists_before, segments_before) = (
        origin_counter(&origin, "hls_playlists"),
        origin_counter(&origin, "hls_segments"),
    );
    let seen = Arc::new(Mutex::new(Seen::default()));
    let started = Instant::now();
    let until = started + WATCH;
    let clients: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let seen = Arc::clone(&seen);
            let address = nginx.address;
            thread::Builder::new()
                .stack_size(256 * 1024)
                .spawn(move || {
                    // Spread the clients over the first second, as real audiences are.
                    thread::sleep(Duration::from_millis((i as u64 * 5) % 1000));
                    client(address, seen, until)
                })
                .unwrap()
        })
        .collect();
    for client in clients {
        client.join().unwrap();
    }
    let elapsed = started.elapsed().as_secs_f64();
    let origin_playlists = origin_counter(&origin, "hls_playlists") - playlists_before;
    let origin_segments = origin_counter(&origin, "hls_segments") - segments_before;
    let seen = seen.lock().unwrap();
    let distinct = seen.segments.len() as u64;
    println!(
        "CDN figures: {CLIENTS} clients for {elapsed:.1} s; clients fetched {} playlists and {} segments ({distinct} distinct); origin answered {origin_playlists} playlists ({:.2}/s) and {origin_segments} segments ({:.2} per distinct segment)",
        seen.playlists,
        seen.fetched,
        origin_playlists as f64 / elapsed,
        origin_segments as f64 / distinct.max(1) as f64,
    );
    assert!(
        seen.failures.len() <= CLIENTS / 10,
        "failures: {:?}",
        &seen.failures[..seen.failures.len().min(20)]
    );
    assert!(
        seen.mismatches.is_empty(),
        "clients got different bytes: {:?}",
        seen.mismatches
    );
    assert!(
        seen.fetched as u64 >= CLIENTS as u64 * 5,
        "clients fetched only {} segments",
        seen.fetched
    );
    assert!(distinct >= 5, "only {distinct} segments");
    // Generous bounds: the figures above are what to look at.
    assert!(
        origin_segments <= 2 * distinct + 4,
        "the origin served {origin_segments} segments for {distinct} distinct ones"
    );
    assert!(
        (origin_playlists as f64) <= 3.0 * elapsed + 10.0,
        "the origin served {origin_playlists} playlists in {elapsed:.1} s"
    );
    // Every client got these bytes: they decode, in order.
    let mut names: Vec<&String> = seen.segments.keys().collect();
    names.sort_by_key(|name| {
        name.trim_start_matches("seg")
            .trim_end_matches(".ts")
            .parse::<u64>()
            .unwrap()
    });
    let mut stream = Vec::new();
    for name in names {
        stream.extend_from_slice(&seen.segments[name]);
    }
    ferrocast_tests::assert_decodes(origin.dir.path(), &stream, distinct * 40);
}

#[test]
fn an_edge_ferrocast_pulls_the_origin_and_serves_hls_itself() {
    let origin_plugins = standard_plugin_dir();
    let origin_http = loopback();
    let origin = Ferrocast::start(
        &config_with(origin_http, &hls_points()),
        origin_plugins.path(),
        origin_http,
    );
    let _encoder = Encoder::push(&origin.url("live"), 60);
    let edge_plugins = standard_plugin_dir();
    let edge_http = loopback();
    let edge_points = format!(
        "[hls]\ntarget_duration_ms = 2000\n\n[[point]]\nname = \"relay\"\nkind = \"broadcast\"\nsource = \"http://{origin_http}/live\"\nprotocols = [\"http\", \"hls\"]\nreconnect_min_ms = 200\nreconnect_max_ms = 2000\n"
    );
    let edge = Ferrocast::start(
        &config_with(edge_http, &edge_points),
        edge_plugins.path(),
        edge_http,
    );
    edge.wait_for("PULL_CONNECTED", Duration::from_secs(20));
    let deadline = Instant::now() + Duration::from_secs(30);
    let listed = || matches!(get(edge_http, "/relay/index.m3u8"), Some(r) if r.status == 200);
    while !listed() {
        assert!(Instant::now() < deadline, "the edge never listed a segment");
        thread::sleep(Duration::from_millis(500));
    }
    decode(&edge.url("relay/index.m3u8"), &[], Some(6.0)).assert_clean(120, "HLS from the edge");
}

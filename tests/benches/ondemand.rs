//! Benchmark: many on-demand HTTP clients fetching byte ranges of one file, with the server's
//! zero-copy path (`sendfile`) and with its read-and-write fallback (`FERROCAST_SENDFILE=off`),
//! the same release binary in the same sitting.
//!
//! `cargo bench -p ferrocast-tests --bench ondemand`. It builds the release server, writes a
//! file of the sample repeated (about 57 MB, so it sits in the page cache like any popular
//! file), and for each run and each mode starts the server and connects the clients. Each
//! client asks, on one keep-alive connection, for one range after another (random starts,
//! `ONDEMAND_RANGE_KIB` long) and reads it at `ONDEMAND_MBPS`, like a player filling its
//! buffer; 0 means as fast as it can. Over a steady window it reports the bytes the clients
//! received, the server's CPU (utime + stime from /proc) and Gbps per core, ranges per
//! second, failed requests and the server's RSS.
//!
//! Settings (environment): `ONDEMAND_CLIENTS` (500), `ONDEMAND_MBPS` per client (4),
//! `ONDEMAND_RANGE_KIB` (2048), `ONDEMAND_WINDOW_S` (10), `ONDEMAND_RUNS` (3; figures are
//! medians). The load generator shares the machine: compare the two modes, not absolutes.
//! Nothing asserts on the figures.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferrocast_tests::bench;
use ferrocast_tests::head;
use ferrocast_tests::load::{cpu_seconds, rss_kib};
use ferrocast_tests::*;

/// Copies of the sample in the served file.
const COPIES: usize = 100;
/// Time from the last client's connect to the window.
const SETTLE: Duration = Duration::from_secs(3);
/// A client thread's stack: it only holds a read buffer on the heap.
const STACK: usize = 128 * 1024;

struct Settings {
    clients: usize,
    mbps: f64,
    range: usize,
    window: Duration,
    runs: usize,
}

impl Settings {
    fn from_env() -> Self {
        let number = |name: &str, default: f64| {
            std::env::var(name)
                .ok()
                .and_then(|v| v.parse::<f64>().ok())
                .filter(|v| *v >= 0.0)
                .unwrap_or(default)
        };
        Self {
            clients: number("ONDEMAND_CLIENTS", 500.0).max(1.0) as usize,
            mbps: number("ONDEMAND_MBPS", 4.0),
            range: (number("ONDEMAND_RANGE_KIB", 2048.0).max(1.0) as usize) * 1024,
            window: Duration::from_secs_f64(number("ONDEMAND_WINDOW_S", 10.0).max(1.0)),
            runs: bench::runs("ONDEMAND_RUNS", 3, 20),
        }
    }
}

/// What the clients count, together.
#[derive(Default)]
struct Counters {
    bytes: AtomicU64,
    ranges: AtomicU64,
    failures: AtomicU64,
}

/// One mode's figures in one run.
#[derive(Clone, Copy)]
struct Figures {
    gbps: f64,
    cores: f64,
    ranges_per_s: f64,
    failures: u64,
    rss_mib: f64,
}

fn main() {
    if !bench::requested("ondemand") {
        return;
    }
    let settings = Settings::from_env();
    bench::ensure_fd_limit(
        "ondemand",
        settings.clients * 2 + 256,
        65536,
        "ONDEMAND_RAISED",
    );
    bench::build_release_server();
    let work = tempfile::tempdir().expect("temp dir");
    let path = work.path().join("movie.ts");
    let sample = std::fs::read(sample_ts()).expect("read the sample");
    std::fs::write(&path, sample.repeat(COPIES)).expect("write the served file");
    let size = sample.len() * COPIES;
    println!(
        "\non-demand: {} clients, {} Mbps each (0: unpaced), {} KiB ranges of a {:.1} MB file, {} s window, {} run(s)\n",
        settings.clients,
        settings.mbps,
        settings.range / 1024,
        size as f64 / 1e6,
        settings.window.as_secs_f64(),
        settings.runs
    );
    let modes: [(&str, &[(&str, &str)]); 2] = [
        ("read and write", &[("FERROCAST_SENDFILE", "off")]),
        ("sendfile", &[]),
    ];
    let mut results: Vec<Vec<Figures>> = vec![Vec::new(); modes.len()];
    for run in 1..=settings.runs {
        for (i, (name, env)) in modes.iter().enumerate() {
            let figures = run_mode(&settings, &path, size, env);
            println!(
                "run {run} {name:>15}: {:.2} Gbps at {:.2} cores = {:.1} Gbps/core, {:.0} ranges/s, {} failed, RSS {:.0} MiB",
                figures.gbps,
                figures.cores,
                figures.gbps / figures.cores,
                figures.ranges_per_s,
                figures.failures,
                figures.rss_mib
            );
            results[i].push(figures);
        }
    }
    println!(
        "\n| mode | clients | Gbps | server cores | Gbps/core | ranges/s | failed | server RSS |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for ((name, _), runs) in modes.iter().zip(&results) {
        let median = |f: &dyn Fn(&Figures) -> f64| {
            let mut values: Vec<f64> = runs.iter().map(f).collect();
            values.sort_by(f64::total_cmp);
            values[values.len() / 2]
        };
        println!(
            "| {name} | {} | {:.2} | {:.2} | **{:.1}** | {:.0} | {} | {:.0} MiB |",
            settings.clients,
            median(&|f| f.gbps),
            median(&|f| f.cores),
            median(&|f| f.gbps / f.cores),
            median(&|f| f.ranges_per_s),
            runs.iter().map(|f| f.failures).max().unwrap_or(0),
            median(&|f| f.rss_mib),
        );
    }
}

/// Start the server with `env`, load it, and measure one window.
fn run_mode(
    settings: &Settings,
    path: &std::path::Path,
    size: usize,
    env: &[(&str, &str)],
) -> Figures {
    let plugins = standard_plugin_dir();
    let address = loopback();
    let points = point_toml("movie", "on-demand", &path.display().to_string(), &["http"]);
    let config = format!(
        "[server]\nwrite_timeout_ms = 20000\n\n[limits]\nmax_connections = 60000\nmax_connections_per_ip = 60000\n\n\
         [plugins.http]\nlisten = [\"{address}\"]\n\n{points}"
    );
    let server = Ferrocast::start_with_env(&config, plugins.path(), address, env);
    let counters = Arc::new(Counters::default());
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..settings.clients)
        .map(|index| {
            let (counters, stop) = (Arc::clone(&counters), Arc::clone(&stop));
            let (mbps, range) = (settings.mbps, settings.range);
            std::thread::Builder::new()
                .stack_size(STACK)
                .spawn(move || client(address, index, size, range, mbps, &counters, &stop))
                .expect("spawn a client")
        })
        .collect();
    std::thread::sleep(SETTLE);
    let pid = server.pid();
    let (cpu_before, bytes_before) = (cpu_seconds(pid), counters.bytes.load(Ordering::Relaxed));
    let ranges_before = counters.ranges.load(Ordering::Relaxed);
    let started = Instant::now();
    std::thread::sleep(settings.window);
    let seconds = started.elapsed().as_secs_f64();
    let cores = (cpu_seconds(pid) - cpu_before) / seconds;
    let bytes = counters.bytes.load(Ordering::Relaxed) - bytes_before;
    let ranges = counters.ranges.load(Ordering::Relaxed) - ranges_before;
    let rss_mib = rss_kib(pid) as f64 / 1024.0;
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        let _ = client.join();
    }
    Figures {
        gbps: bytes as f64 * 8.0 / seconds / 1e9,
        cores: cores.max(0.001),
        ranges_per_s: ranges as f64 / seconds,
        failures: counters.failures.load(Ordering::Relaxed),
        rss_mib,
    }
}

/// One client: ranges one after another on a keep-alive connection, read at `mbps` (0: as
/// fast as it can), until `stop`.
fn client(
    address: SocketAddr,
    index: usize,
    size: usize,
    range: usize,
    mbps: f64,
    counters: &Counters,
    stop: &AtomicBool,
) {
    let mut seed = (index as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let mut buf = vec![0u8; 64 * 1024];
    let started = Instant::now();
    let mut received = 0u64;
    let mut stream = None;
    while !stop.load(Ordering::Relaxed) {
        let connection = match &mut stream {
            Some(connection) => connection,
            None => match TcpStream::connect(address) {
                Ok(connection) => stream.insert(connection),
                Err(_) => {
                    counters.failures.fetch_add(1, Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(100));
                    continue;
                }
            },
        };
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let start = (seed as usize % (size - range)) / 188 * 188;
        let request = format!(
            "GET /movie HTTP/1.1\r\nHost: t\r\nRange: bytes={start}-{}\r\n\r\n",
            start + range - 1
        );
        let fetched = connection.write_all(request.as_bytes()).is_ok()
            && read_range(connection, range, &mut buf, stop, |n| {
                received += n as u64;
                counters.bytes.fetch_add(n as u64, Ordering::Relaxed);
                if mbps > 0.0 {
                    let due =
                        started + Duration::from_secs_f64(received as f64 * 8.0 / (mbps * 1e6));
                    bench::sleep_until(due);
                }
            });
        if fetched {
            counters.ranges.fetch_add(1, Ordering::Relaxed);
        } else if !stop.load(Ordering::Relaxed) {
            counters.failures.fetch_add(1, Ordering::Relaxed);
            stream = None;
        }
    }
}

/// Read one 206 response of `range` body bytes, calling `on_bytes` for body bytes as they
/// come; whether it arrived whole.
fn read_range(
    connection: &mut TcpStream,
    range: usize,
    buf: &mut [u8],
    stop: &AtomicBool,
    mut on_bytes: impl FnMut(usize),
) -> bool {
    let mut head = Vec::new();
    let mut body = loop {
        let Ok(n) = connection.read(buf) else {
            return false;
        };
        if n == 0 {
            return false;
        }
        head.extend_from_slice(&buf[..n]);
        if let Some(end) = head::head_end(&head) {
            let text = String::from_utf8_lossy(&head[..end]);
            if head::status_code(&text) != 206 || head::content_length(&text) != Some(range) {
                return false;
            }
            break head.len() - end;
        }
    };
    on_bytes(body);
    while body < range {
        if stop.load(Ordering::Relaxed) {
            return true;
        }
        let want = (range - body).min(buf.len());
        match connection.read(&mut buf[..want]) {
            Ok(0) | Err(_) => return false,
            Ok(n) => {
                body += n;
                on_bytes(n);
            }
        }
    }
    true
}

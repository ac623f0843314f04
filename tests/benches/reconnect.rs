//! Benchmark: how long after a restarted encoder's first bytes do 100 attached HTTP clients
//! get media again?
//!
//! `cargo bench -p ferrocast-tests --bench reconnect` (`RECONNECT_RUNS=n` for other than 7
//! runs). It starts the real server (release build), plays the encoder itself over raw TCP
//! (`PUT /live` with the shipped sample, paced in real time: 1/25 s of bytes every 40 ms,
//! looped), and attaches 100 raw clients to `/live`. Each run drops the encoder, leaves the
//! point without a source for a second (clients get null packets), connects a new encoder and
//! takes t0 = the instant its first body bytes are written; a client's latency is the arrival
//! of its first non-null TS packet after t0, minus t0.
//!
//! The sample starts with PAT/PMT and a keyframe, so the new stream is decodable from its
//! first bytes: the figure is the server's own resume latency (ingest, keyframe detection,
//! fan-out to 100 sockets, loopback), not an encoder's GOP wait.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ferrocast_tests::paced::{bytes_per_tick, PacedEncoder, TICK};
use ferrocast_tests::*;

const CLIENTS: usize = 100;
const DEFAULT_RUNS: usize = 7;
/// How long the point stays without a source in each run.
const OUTAGE: Duration = Duration::from_secs(1);
/// How long the new encoder runs before the next run drops it.
const LIVE: Duration = Duration::from_millis(1500);
/// The longest a client may take to get media after t0 before it counts as missing.
const RESUME_LIMIT: Duration = Duration::from_secs(5);
const ONE_S: Duration = Duration::from_secs(1);
const TS_PACKET: usize = 188;
const NULL_PID: u16 = 0x1fff;

fn main() {
    // `cargo test --all-targets` runs benches without `--bench`: only check that it builds.
    if !std::env::args().any(|arg| arg == "--bench") {
        println!("reconnect: run with `cargo bench -p ferrocast-tests --bench reconnect`");
        return;
    }
    let runs = std::env::var("RECONNECT_RUNS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|&n| (1..=100).contains(&n))
        .unwrap_or(DEFAULT_RUNS);
    build_release_server();

    let sample: Arc<[u8]> = std::fs::read(sample_ts()).expect("read sample").into();
    let per_tick = bytes_per_tick(&sample);
    let plugins = standard_plugin_dir();
    let address = loopback();
    // A long grace so that no run ends the point; the default source timeout (10 s) never
    // fires because the encoder writes every 40 ms.
    let points = standard_points().replace(
        "source = \"push\"\n",
        "source = \"push\"\nreconnect_grace_ms = 600000\n",
    );
    let server = Ferrocast::start(&config_with(address, &points), plugins.path(), address);

    let mut encoder = PacedEncoder::start(server.http, Arc::clone(&sample), per_tick);
    wait_until_live(server.http, "/live", Duration::from_secs(15));
    // Every client reads until this deadline at most, so nothing outlives a stuck run.
    let deadline = Instant::now() + (OUTAGE + LIVE + RESUME_LIMIT * 2) * runs as u32 + 60 * ONE_S;
    let clients: Vec<Client> = (0..CLIENTS)
        .map(|_| Client::start(server.http, deadline))
        .collect();
    wait_for_clients(&server, &clients);
    std::thread::sleep(ONE_S);

    println!(
        "\nreconnect → first media byte at {CLIENTS} clients ({} bytes per {} ms tick)\n",
        per_tick,
        TICK.as_millis()
    );
    println!(
        "{:>4} {:>8} {:>10} {:>10} {:>10}",
        "run", "clients", "median", "p90", "worst"
    );
    let mut run_medians = Vec::new();
    let mut all = Vec::new();
    let mut problems = Vec::new();
    for run in 1..=runs {
        // Drop the encoder's connection and wait for the server to notice.
        drop(encoder);
        wait_for_count(&server, "SOURCE_LOST", run);
        std::thread::sleep(OUTAGE);
        for client in &clients {
            client.arm();
        }
        encoder = PacedEncoder::start(server.http, Arc::clone(&sample), per_tick);
        let t0 = encoder.first_body_write;
        let waited = Instant::now() + RESUME_LIMIT;
        while clients.iter().any(|c| c.hit().is_none()) && Instant::now() < waited {
            std::thread::sleep(Duration::from_millis(5));
        }
        let mut latencies = Vec::new();
        for (index, client) in clients.iter().enumerate() {
            match client.hit() {
                Some(at) if at >= t0 => latencies.push(at - t0),
                Some(at) => problems.push(format!(
                    "run {run}: client {index} got media {:?} before the new encoder wrote",
                    t0 - at
                )),
                None => problems.push(format!(
                    "run {run}: client {index} got no media within {RESUME_LIMIT:?}"
                )),
            }
        }
        latencies.sort();
        if let Some(median) = percentile(&latencies, 50) {
            println!(
                "{run:>4} {:>8} {:>10} {:>10} {:>10}",
                latencies.len(),
                ms(median),
                ms(percentile(&latencies, 90).unwrap()),
                ms(*latencies.last().unwrap())
            );
            run_medians.push(median);
        } else {
            println!("{run:>4} {:>8} {:>10}", 0, "-");
        }
        all.extend_from_slice(&latencies);
        std::thread::sleep(LIVE);
    }
    drop(encoder);
    all.sort();
    run_medians.sort();
    if let (Some(median), Some(worst)) = (percentile(&all, 50), all.last()) {
        println!(
            "{:>4} {:>8} {:>10} {:>10} {:>10}",
            "all",
            all.len(),
            ms(median),
            ms(percentile(&all, 90).unwrap()),
            ms(*worst)
        );
    }

    let ended = clients.iter().filter(|c| c.ended()).count();
    let unsynced: usize = clients.iter().map(Client::sync_errors).sum();
    if ended > 0 {
        problems.push(format!(
            "{ended} clients' streams ended during the benchmark"
        ));
    }
    if unsynced > 0 {
        problems.push(format!("{unsynced} packets without a sync byte"));
    }
    stop_all(clients);
    let logs = server.logs();
    let resumed = logs.matches("SOURCE_RESUMED").count();
    if resumed != runs {
        problems.push(format!(
            "SOURCE_RESUMED logged {resumed} times in {runs} runs"
        ));
    }
    // A client skipped ahead (or dropped) for lagging would not measure the resume path.
    let lagging = logs.matches("CLIENT_LAGGING").count();
    if lagging > 0 {
        problems.push(format!("CLIENT_LAGGING logged {lagging} times"));
    }
    for problem in &problems {
        println!("problem: {problem}");
    }
    match (percentile(&run_medians, 50), all.last()) {
        (Some(median), Some(worst)) => println!(
            "\nreconnect→first media byte, {CLIENTS} clients, {runs} runs: median {}, worst {}",
            ms(median),
            ms(*worst)
        ),
        _ => println!("\nreconnect→first media byte: no measurement"),
    }
    if !problems.is_empty() {
        eprintln!("server log:\n{}", server.logs());
        std::process::exit(1);
    }
}

/// `cargo bench` runs this from target/release, and the support library looks for the server
/// and plugins next to the running executable: build them in release first, so the benchmark
/// never measures a stale (or a debug) server.
fn build_release_server() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "--release", "--workspace", "--quiet"])
        .current_dir(workspace())
        .status()
        .expect("run cargo build --release");
    assert!(status.success(), "cargo build --release --workspace failed");
}

fn pid(packet: &[u8]) -> u16 {
    (u16::from(packet[1] & 0x1f) << 8) | u16::from(packet[2])
}

/// What a client thread shares with the benchmark.
#[derive(Default)]
struct ClientState {
    status: Option<u16>,
    /// Set by `arm`; the next non-null packet clears it and records its arrival in `hit`.
    armed: bool,
    hit: Option<Instant>,
    ended: bool,
    sync_errors: usize,
}

/// A raw HTTP client playing `/live` on its own thread.
struct Client {
    state: Arc<Mutex<ClientState>>,
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

impl Client {
    fn start(server: SocketAddr, deadline: Instant) -> Self {
        let state = Arc::new(Mutex::new(ClientState::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (shared, stopping) = (Arc::clone(&state), Arc::clone(&stop));
        let thread = std::thread::spawn(move || {
            let result = play(server, &shared, &stopping, deadline);
            let mut state = shared.lock().unwrap();
            state.ended = result.is_err() || !stopping.load(Ordering::SeqCst);
        });
        Self {
            state,
            stop,
            thread,
        }
    }

    fn arm(&self) {
        let mut state = self.state.lock().unwrap();
        state.armed = true;
        state.hit = None;
    }

    fn hit(&self) -> Option<Instant> {
        self.state.lock().unwrap().hit
    }

    fn status(&self) -> Option<u16> {
        self.state.lock().unwrap().status
    }

    fn ended(&self) -> bool {
        self.state.lock().unwrap().ended
    }

    fn sync_errors(&self) -> usize {
        self.state.lock().unwrap().sync_errors
    }
}

/// Stop every client thread: all are told at once, then waited for within one bound (reads
/// time out every 200 ms, so they finish promptly).
fn stop_all(clients: Vec<Client>) {
    for client in &clients {
        client.stop.store(true, Ordering::SeqCst);
    }
    let deadline = Instant::now() + Duration::from_secs(3);
    for client in clients {
        while !client.thread.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
        }
        if client.thread.is_finished() {
            let _ = client.thread.join();
        }
    }
}

/// Read `/live` until stopped, the deadline, or the server ends the stream (an error).
fn play(
    server: SocketAddr,
    state: &Mutex<ClientState>,
    stop: &AtomicBool,
    deadline: Instant,
) -> std::io::Result<()> {
    let mut socket = TcpStream::connect_timeout(&server, Duration::from_secs(5))?;
    socket.set_read_timeout(Some(Duration::from_millis(200)))?;
    socket.write_all(b"GET /live HTTP/1.1\r\nHost: bench\r\n\r\n")?;
    let mut buf = vec![0u8; 64 * 1024];
    // Bytes not yet part of a whole packet (or, before the body, of the head).
    let mut pending: Vec<u8> = Vec::new();
    let mut in_body = false;
    while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
        let n = match socket.read(&mut buf) {
            Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => n,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock) => continue,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::TimedOut) => continue,
            Err(e) => return Err(e),
        };
        // Packets completed by this read arrived now.
        let arrived = Instant::now();
        pending.extend_from_slice(&buf[..n]);
        if !in_body {
            let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") else {
                continue;
            };
            let head = String::from_utf8_lossy(&pending[..end]).into_owned();
            let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok());
            state.lock().unwrap().status = Some(status.unwrap_or(0));
            if status != Some(200) {
                return Err(std::io::ErrorKind::InvalidData.into());
            }
            pending.drain(..end + 4);
            in_body = true;
        }
        let whole = pending.len() / TS_PACKET * TS_PACKET;
        let mut state = state.lock().unwrap();
        for packet in pending[..whole].chunks_exact(TS_PACKET) {
            if packet[0] != 0x47 {
                state.sync_errors += 1;
            } else if state.armed && pid(packet) != NULL_PID {
                state.armed = false;
                state.hit = Some(arrived);
            }
        }
        drop(state);
        pending.drain(..whole);
    }
    Ok(())
}

/// Wait until every client has its response head, and fail plainly if one was refused.
fn wait_for_clients(server: &Ferrocast, clients: &[Client]) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while clients.iter().any(|c| c.status().is_none()) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let statuses: Vec<Option<u16>> = clients.iter().map(Client::status).collect();
    assert!(
        statuses.iter().all(|s| *s == Some(200)),
        "not every client got 200: {statuses:?}\nserver log:\n{}",
        server.logs()
    );
}

/// Wait until the server has logged `needle` `count` times.
fn wait_for_count(server: &Ferrocast, needle: &str, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while server.logs().matches(needle).count() < count {
        assert!(
            Instant::now() < deadline,
            "the server did not log {needle} #{count}; log:\n{}",
            server.logs()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The `p`th percentile (nearest rank) of sorted `values`.
fn percentile(values: &[Duration], p: usize) -> Option<Duration> {
    if values.is_empty() {
        return None;
    }
    let rank = (values.len() * p).div_ceil(100).max(1);
    Some(values[rank - 1])
}

fn ms(duration: Duration) -> String {
    format!("{:.1} ms", duration.as_secs_f64() * 1000.0)
}

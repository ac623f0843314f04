//! Benchmark: what does swapping a plugin's code under 500 live sessions cost them?
//!
//! `cargo bench -p ferrocast-tests --bench plugin_swap` (`PLUGIN_SWAP_RUNS=n` for other than
//! 5 swaps). It starts the real server (release build) with the HTTP and TCP plugins, plays
//! the encoder itself over raw HTTP (`PUT /live` with the shipped sample, paced in real time:
//! 1/25 s of bytes every 40 ms, looped) and opens 500 raw TCP sessions to the TCP plugin's
//! port serving `live`, each on a thread recording the arrival time of every read.
//!
//! Each run measures a quiet baseline window, then a window of the same length around a swap:
//! a fresh copy of `libferrocast_tcp.so` is renamed into the plugin directory (a new inode, so
//! a new build to the server) and `ferrocast reload --plugins-only` applies it. Reported per
//! run and as medians over the runs:
//! - apply time: `took_ms` of the PLUGIN_SWAPPED event (rescan, private copy, load, self-check,
//!   promotion);
//! - the command's round trip (process start, control socket, apply, answer);
//! - for each of the 500 untouched sessions its longest gap between two reads overlapping the
//!   window: the median and the worst over the sessions, swap window vs baseline window.
//!
//! After each swap it checks that all 500 sessions are still connected and still on generation
//! 1 (`ferrocast status`: `plugin tcp generation 1 … sessions 500`) while a new connection is
//! served by the newest generation.

use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ferrocast_tests::paced::{bytes_per_tick, PacedEncoder, TICK};
use ferrocast_tests::*;

const SESSIONS: usize = 500;
const DEFAULT_RUNS: usize = 5;
/// Length of the baseline window and of the window around each swap.
const WINDOW: Duration = Duration::from_secs(4);
/// How far into its window the swap is started.
const LEAD: Duration = Duration::from_secs(1);
const WARM_UP: Duration = Duration::from_secs(2);
const TS_PACKET: usize = 188;
/// Open files the benchmark (and the server, which inherits the limit) wants.
const FD_LIMIT: u32 = 4096;
const REEXEC_ENV: &str = "FERROCAST_PLUGIN_SWAP_BENCH_REEXEC";

fn main() {
    // `cargo test --all-targets` runs benches without `--bench`: only check that it builds.
    if !std::env::args().any(|arg| arg == "--bench") {
        println!("plugin_swap: run with `cargo bench -p ferrocast-tests --bench plugin_swap`");
        return;
    }
    ensure_fd_limit();
    let runs = std::env::var("PLUGIN_SWAP_RUNS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|&n| (1..=50).contains(&n))
        .unwrap_or(DEFAULT_RUNS);
    build_release_server();

    let sample: Arc<[u8]> = std::fs::read(sample_ts()).expect("read sample").into();
    let per_tick = bytes_per_tick(&sample);
    let tcp_library = built_library("libferrocast_tcp.so");
    let plugins = plugin_dir(&[
        (
            "libferrocast_http.so",
            &built_library("libferrocast_http.so"),
        ),
        ("libferrocast_tcp.so", &tcp_library),
    ]);
    let http = loopback();
    let tcp = loopback();
    // A long grace and both protocols on the live point.
    let points = standard_points()
        .replace(
            "source = \"push\"\n",
            "source = \"push\"\nreconnect_grace_ms = 600000\n",
        )
        .replace("protocols = [\"http\"]", "protocols = [\"http\", \"tcp\"]");
    let config = format!(
        "{}\n[plugins.tcp]\nlisten = [\"{tcp}\"]\nserve = {{ \"{}\" = \"live\" }}\n",
        config_with(http, &points),
        tcp.port()
    );
    let server = Ferrocast::start(&config, plugins.path(), http);
    server.wait_for(
        &format!("tcp        listening on {tcp}"),
        Duration::from_secs(10),
    );

    let encoder = PacedEncoder::start(http, Arc::clone(&sample), per_tick);
    wait_until_live(http, "/live", Duration::from_secs(15));
    let deadline = Instant::now() + (WINDOW * 2 + Duration::from_secs(10)) * runs as u32 + 60 * S;
    let sessions: Vec<Session> = (0..SESSIONS)
        .map(|_| Session::start(tcp, deadline))
        .collect();
    wait_for_sessions(&server, &sessions);
    let status = tcp_generations(&server);
    assert!(
        generation(&status, 1).is_some_and(|g| g.sessions == SESSIONS),
        "expected {SESSIONS} sessions on tcp generation 1: {status:#?}"
    );
    std::thread::sleep(WARM_UP);

    println!(
        "\nplugin swap under {SESSIONS} raw TCP sessions ({} bytes per {} ms tick)\n",
        per_tick,
        TICK.as_millis()
    );
    println!(
        "{:>4} {:>4} {:>10} {:>10}   {:>22}   {:>22}",
        "run", "gen", "apply", "command", "baseline median/worst", "swap median/worst"
    );
    let mut problems = Vec::new();
    let mut results = Vec::new();
    for run in 1..=runs {
        let number = run as u64 + 1;
        let baseline = (Instant::now(), Instant::now() + WINDOW);
        std::thread::sleep(WINDOW);

        let window_start = Instant::now();
        std::thread::sleep(LEAD);
        install(plugins.path(), "libferrocast_tcp.so", &tcp_library);
        let started = Instant::now();
        let reload = server.command(&["reload", "--plugins-only"]);
        let command = started.elapsed();
        if reload.code != Some(0)
            || !reload
                .text
                .contains(&format!("plugin tcp: generation {number}"))
        {
            problems.push(format!(
                "run {run}: reload exited {:?} with {:?}",
                reload.code, reload.text
            ));
        }
        let took = took_ms(&server, number);
        if took.is_none() {
            problems.push(format!(
                "run {run}: no PLUGIN_SWAPPED for tcp generation {number}"
            ));
        }
        let window = (window_start, window_start + WINDOW);
        sleep_until(window.1);

        // Outside the windows: a newcomer goes to the newest generation, the 500 stay on 1.
        match check_generations(&server, tcp, number) {
            Ok(()) => {}
            Err(problem) => problems.push(format!("run {run}: {problem}")),
        }
        results.push(Run {
            generation: number,
            took_ms: took,
            command,
            baseline,
            window,
        });
    }
    // Reads after the last window close its gaps.
    std::thread::sleep(Duration::from_millis(500));

    let mut apply = Vec::new();
    let mut round_trips = Vec::new();
    let mut baseline_medians = Vec::new();
    let mut baseline_worsts = Vec::new();
    let mut swap_medians = Vec::new();
    let mut swap_worsts = Vec::new();
    for (index, run) in results.iter().enumerate() {
        let base = longest_gaps(&sessions, run.baseline);
        let swap = longest_gaps(&sessions, run.window);
        let (base_median, base_worst) = (percentile(&base, 50), *base.last().unwrap());
        let (swap_median, swap_worst) = (percentile(&swap, 50), *swap.last().unwrap());
        println!(
            "{:>4} {:>4} {:>10} {:>10}   {:>10} {:>11}   {:>10} {:>11}",
            index + 1,
            run.generation,
            run.took_ms.map_or("-".into(), |t| format!("{t:.1} ms")),
            ms(run.command),
            ms(base_median),
            ms(base_worst),
            ms(swap_median),
            ms(swap_worst)
        );
        if let Some(took) = run.took_ms {
            apply.push(Duration::from_secs_f64(took / 1000.0));
        }
        round_trips.push(run.command);
        baseline_medians.push(base_median);
        baseline_worsts.push(base_worst);
        swap_medians.push(swap_median);
        swap_worsts.push(swap_worst);
    }

    let ended: Vec<String> = sessions
        .iter()
        .enumerate()
        .filter_map(|(i, s)| s.ended().map(|why| format!("session {i}: {why}")))
        .collect();
    if !ended.is_empty() {
        problems.push(format!(
            "{} sessions ended during the benchmark, e.g. {}",
            ended.len(),
            ended[0]
        ));
    }
    let unsynced: usize = sessions.iter().map(Session::sync_errors).sum();
    if unsynced > 0 {
        problems.push(format!("{unsynced} packets without a sync byte"));
    }
    let status = tcp_generations(&server);
    if !generation(&status, 1).is_some_and(|g| g.sessions == SESSIONS && g.role == "draining") {
        problems.push(format!(
            "at the end, tcp generation 1 should still serve all {SESSIONS} sessions: {status:#?}"
        ));
    }
    let lagging = server.logs().matches("CLIENT_LAGGING").count();
    if lagging > 0 {
        problems.push(format!("CLIENT_LAGGING logged {lagging} times"));
    }
    stop_all(sessions);
    drop(encoder);

    for problem in &problems {
        println!("problem: {problem}");
    }
    println!(
        "\nmedians over {runs} swaps, {SESSIONS} sessions: apply (took_ms) {}, `ferrocast reload --plugins-only` round trip {}",
        median_text(&mut apply),
        median_text(&mut round_trips)
    );
    println!(
        "longest gap between reads per session: swap window median {} worst {}; baseline window median {} worst {}",
        median_text(&mut swap_medians),
        median_text(&mut swap_worsts),
        median_text(&mut baseline_medians),
        median_text(&mut baseline_worsts)
    );
    println!(
        "final status: {}",
        status
            .iter()
            .map(|g| format!(
                "generation {} sessions {} {}",
                g.generation, g.sessions, g.role
            ))
            .collect::<Vec<_>>()
            .join("; ")
    );
    if !problems.is_empty() {
        eprintln!("server log:\n{}", server.logs());
        std::process::exit(1);
    }
}

const S: Duration = Duration::from_secs(1);

/// One swap and the two windows measured for it.
struct Run {
    generation: u64,
    took_ms: Option<f64>,
    command: Duration,
    baseline: (Instant, Instant),
    window: (Instant, Instant),
}

/// 500 sockets here, as many in the server (which inherits the limit): if the soft limit on
/// open files is low, run this benchmark again under `sh -c 'ulimit -Sn …; exec …'`.
fn ensure_fd_limit() {
    let soft = Command::new("sh")
        .args(["-c", "ulimit -Sn"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let enough = soft == "unlimited"
        || soft
            .parse::<u32>()
            .is_ok_and(|n| n as usize >= SESSIONS * 2 + 256);
    if enough {
        return;
    }
    assert!(
        std::env::var_os(REEXEC_ENV).is_none(),
        "the open files limit is {soft} and cannot be raised; raise the hard limit (ulimit -Hn)"
    );
    println!("plugin_swap: open files limit {soft}; running again with a higher one");
    let script = format!(
        "hard=$(ulimit -Hn); if [ \"$hard\" = unlimited ] || [ \"$hard\" -ge {FD_LIMIT} ]; then ulimit -Sn {FD_LIMIT}; else ulimit -Sn \"$hard\"; fi; exec \"$0\" \"$@\""
    );
    let status = Command::new("sh")
        .arg("-c")
        .arg(script)
        .arg(std::env::current_exe().expect("benchmark executable"))
        .args(std::env::args_os().skip(1))
        .env(REEXEC_ENV, "1")
        .status()
        .expect("run the benchmark again under sh");
    std::process::exit(status.code().unwrap_or(1));
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

/// Install `source` as `dir/name` the way an installer does: write `name.tmp`, rename it over.
fn install(dir: &Path, name: &str, source: &Path) {
    let temporary = dir.join(format!("{name}.tmp"));
    std::fs::copy(source, &temporary).expect("copy the new build");
    std::fs::rename(&temporary, dir.join(name)).expect("rename the new build into place");
}

fn sleep_until(at: Instant) {
    let now = Instant::now();
    if at > now {
        std::thread::sleep(at - now);
    }
}

/// The TCP plugin's generations, as `ferrocast status` lists them.
fn tcp_generations(server: &Ferrocast) -> Vec<GenerationStatus> {
    server
        .plugin_generations()
        .into_iter()
        .filter(|g| g.plugin == "tcp")
        .collect()
}

fn generation(status: &[GenerationStatus], number: u64) -> Option<&GenerationStatus> {
    status.iter().find(|g| g.generation == number)
}

/// A new connection is served by generation `newest` (current), while generation 1 still
/// holds all the benchmark's sessions.
fn check_generations(server: &Ferrocast, tcp: SocketAddr, newest: u64) -> Result<(), String> {
    let mut newcomer = TcpStream::connect_timeout(&tcp, Duration::from_secs(5))
        .map_err(|e| format!("a new connection failed: {e}"))?;
    newcomer
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut buf = [0u8; TS_PACKET];
    newcomer
        .read_exact(&mut buf)
        .map_err(|e| format!("a new connection got no media: {e}"))?;
    let status = tcp_generations(server);
    let old_ok =
        generation(&status, 1).is_some_and(|g| g.sessions == SESSIONS && g.role == "draining");
    let new_ok =
        generation(&status, newest).is_some_and(|g| g.sessions == 1 && g.role == "current");
    if old_ok && new_ok {
        Ok(())
    } else {
        Err(format!(
            "expected generation 1 with {SESSIONS} sessions and generation {newest} current with the newcomer: {status:#?}"
        ))
    }
}

/// `took_ms` of the PLUGIN_SWAPPED event for tcp generation `number`.
fn took_ms(server: &Ferrocast, number: u64) -> Option<f64> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let logs = server.logs();
        let found = logs
            .lines()
            .filter(|l| l.contains("event=\"PLUGIN_SWAPPED\""))
            .filter(|l| field(l, "plugin") == Some("tcp"))
            .find(|l| field(l, "generation") == Some(&number.to_string()))
            .and_then(|l| field(l, "took_ms")?.parse().ok());
        if found.is_some() || Instant::now() > deadline {
            return found;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The value of `key=value` in a log line (exact key).
fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split_whitespace().find_map(|word| {
        let (k, v) = word.split_once('=')?;
        (k == key).then(|| v.trim_matches('"'))
    })
}

/// Each session's longest gap between two consecutive reads that overlap `window`, sorted.
fn longest_gaps(sessions: &[Session], window: (Instant, Instant)) -> Vec<Duration> {
    let mut gaps: Vec<Duration> = sessions
        .iter()
        .map(|session| {
            let log = session.log.lock().unwrap();
            log.reads
                .windows(2)
                .filter(|pair| pair[1] >= window.0 && pair[0] <= window.1)
                .map(|pair| pair[1] - pair[0])
                .max()
                // No read at all across the window: the whole window is a gap.
                .unwrap_or(window.1 - window.0)
        })
        .collect();
    gaps.sort();
    gaps
}

/// What a session thread records.
#[derive(Default)]
struct SessionLog {
    /// When each read returned data.
    reads: Vec<Instant>,
    ended: Option<String>,
    sync_errors: usize,
}

/// A raw TCP client of the tcp plugin's port, reading on its own thread.
struct Session {
    log: Arc<Mutex<SessionLog>>,
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

impl Session {
    fn start(address: SocketAddr, deadline: Instant) -> Self {
        let log = Arc::new(Mutex::new(SessionLog::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (shared, stopping) = (Arc::clone(&log), Arc::clone(&stop));
        let thread = std::thread::Builder::new()
            .stack_size(128 * 1024)
            .spawn(move || {
                if let Err(error) = read_session(address, &shared, &stopping, deadline) {
                    shared.lock().unwrap().ended = Some(error.to_string());
                }
            })
            .expect("start a session thread");
        Self { log, stop, thread }
    }

    fn reads(&self) -> usize {
        self.log.lock().unwrap().reads.len()
    }

    fn ended(&self) -> Option<String> {
        self.log.lock().unwrap().ended.clone()
    }

    fn sync_errors(&self) -> usize {
        self.log.lock().unwrap().sync_errors
    }
}

fn read_session(
    address: SocketAddr,
    log: &Mutex<SessionLog>,
    stop: &AtomicBool,
    deadline: Instant,
) -> std::io::Result<()> {
    let mut socket = TcpStream::connect_timeout(&address, Duration::from_secs(5))?;
    socket.set_read_timeout(Some(Duration::from_millis(200)))?;
    let mut buf = vec![0u8; 32 * 1024];
    // Bytes not yet part of a whole packet.
    let mut pending: Vec<u8> = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        if Instant::now() > deadline {
            return Err(std::io::Error::other("the benchmark's deadline passed"));
        }
        let n = match socket.read(&mut buf) {
            Ok(0) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the server closed the session",
                ))
            }
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue
            }
            Err(e) => return Err(e),
        };
        let at = Instant::now();
        pending.extend_from_slice(&buf[..n]);
        let whole = pending.len() / TS_PACKET * TS_PACKET;
        let unsynced = pending[..whole]
            .chunks_exact(TS_PACKET)
            .filter(|packet| packet[0] != 0x47)
            .count();
        pending.drain(..whole);
        let mut log = log.lock().unwrap();
        log.reads.push(at);
        log.sync_errors += unsynced;
    }
    Ok(())
}

/// Wait until every session has received data; fail plainly if one did not.
fn wait_for_sessions(server: &Ferrocast, sessions: &[Session]) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while sessions.iter().any(|s| s.reads() == 0) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let silent = sessions.iter().filter(|s| s.reads() == 0).count();
    assert!(
        silent == 0,
        "{silent} of {SESSIONS} sessions got no data (first error: {:?})\nserver log:\n{}",
        sessions.iter().find_map(Session::ended),
        server.logs()
    );
}

/// Stop every session thread: all are told at once, then waited for within one bound (reads
/// time out every 200 ms).
fn stop_all(sessions: Vec<Session>) {
    for session in &sessions {
        session.stop.store(true, Ordering::Relaxed);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    for session in sessions {
        while !session.thread.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
        }
        if session.thread.is_finished() {
            let _ = session.thread.join();
        }
    }
}

/// The `p`th percentile (nearest rank) of sorted `values`.
fn percentile(values: &[Duration], p: usize) -> Duration {
    let rank = (values.len() * p).div_ceil(100).max(1);
    values[rank - 1]
}

fn median_text(values: &mut [Duration]) -> String {
    if values.is_empty() {
        return "-".into();
    }
    values.sort();
    ms(percentile(values, 50))
}

fn ms(duration: Duration) -> String {
    format!("{:.1} ms", duration.as_secs_f64() * 1000.0)
}

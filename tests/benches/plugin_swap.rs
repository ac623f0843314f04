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
use std::time::{Duration, Instant};

use ferrocast_tests::bench::{self, median_text, ms, percentile, Feed, Problems};
use ferrocast_tests::paced::TICK;
use ferrocast_tests::ts::{ReadOptions, TS_PACKET};
use ferrocast_tests::*;

const SESSIONS: usize = 500;
const DEFAULT_RUNS: usize = 5;
/// Length of the baseline window and of the window around each swap.
const WINDOW: Duration = Duration::from_secs(4);
/// How far into its window the swap is started.
const LEAD: Duration = Duration::from_secs(1);
const WARM_UP: Duration = Duration::from_secs(2);
/// Open files the benchmark (and the server, which inherits the limit) wants.
const FD_LIMIT: u32 = 4096;
const REEXEC_ENV: &str = "FERROCAST_PLUGIN_SWAP_BENCH_REEXEC";

fn main() {
    if !bench::requested("plugin_swap") {
        return;
    }
    // 500 sockets here, as many in the server (which inherits the limit).
    bench::ensure_fd_limit("plugin_swap", SESSIONS * 2 + 256, FD_LIMIT, REEXEC_ENV);
    let runs = bench::runs("PLUGIN_SWAP_RUNS", DEFAULT_RUNS, 50);
    bench::build_release_server();

    let feed = Feed::load();
    let tcp_library = built_library("libferrocast_tcp.so");
    let plugins = shipped_plugins_dir(&["http", "tcp"]);
    let http = loopback();
    let tcp = loopback();
    // A long grace and both protocols on the live point.
    let points = bench::long_grace_points()
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

    let encoder = feed.start(http);
    wait_until_live(http, "/live", Duration::from_secs(15));
    let deadline = Instant::now() + (WINDOW * 2 + Duration::from_secs(10)) * runs as u32 + 60 * S;
    let sessions: Vec<TsReader> = (0..SESSIONS)
        .map(|_| TsReader::tcp_with(tcp, ReadOptions::lean(deadline)))
        .collect();
    wait_for_sessions(&server, &sessions);
    let status = server.generations_of("tcp");
    assert!(
        generation(&status, 1).is_some_and(|g| g.sessions == SESSIONS),
        "expected {SESSIONS} sessions on tcp generation 1: {status:#?}"
    );
    std::thread::sleep(WARM_UP);

    println!(
        "\nplugin swap under {SESSIONS} raw TCP sessions ({} bytes per {} ms tick)\n",
        feed.per_tick,
        TICK.as_millis()
    );
    println!(
        "{:>4} {:>4} {:>10} {:>10}   {:>22}   {:>22}",
        "run", "gen", "apply", "command", "baseline median/worst", "swap median/worst"
    );
    let mut problems = Problems::default();
    let mut results = Vec::new();
    for run in 1..=runs {
        let number = run as u64 + 1;
        let baseline = (Instant::now(), Instant::now() + WINDOW);
        std::thread::sleep(WINDOW);

        let window_start = Instant::now();
        std::thread::sleep(LEAD);
        install_build(plugins.path(), "libferrocast_tcp.so", &tcp_library);
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
        bench::sleep_until(window.1);

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
        let median = |gaps: &[Duration]| percentile(gaps, 50).expect("a gap per session");
        let (base_median, base_worst) = (median(&base), *base.last().unwrap());
        let (swap_median, swap_worst) = (median(&swap), *swap.last().unwrap());
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
        .filter_map(|(i, s)| s.end_reason().map(|why| format!("session {i}: {why}")))
        .collect();
    if !ended.is_empty() {
        problems.push(format!(
            "{} sessions ended during the benchmark, e.g. {}",
            ended.len(),
            ended[0]
        ));
    }
    let unsynced: usize = sessions.iter().map(TsReader::sync_errors).sum();
    if unsynced > 0 {
        problems.push(format!("{unsynced} packets without a sync byte"));
    }
    let status = server.generations_of("tcp");
    if !generation(&status, 1).is_some_and(|g| g.sessions == SESSIONS && g.role == "draining") {
        problems.push(format!(
            "at the end, tcp generation 1 should still serve all {SESSIONS} sessions: {status:#?}"
        ));
    }
    problems.check_no_lagging(&server);
    TsReader::stop_all(sessions, Duration::from_secs(5));
    drop(encoder);

    problems.print();
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
    problems.exit_if_any(&server);
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
    let status = server.generations_of("tcp");
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
        let found = server
            .event_lines("PLUGIN_SWAPPED")
            .into_iter()
            .filter(|l| log_field(l, "plugin") == Some("tcp"))
            .find(|l| log_field(l, "generation") == Some(&number.to_string()))
            .and_then(|l| log_field(&l, "took_ms")?.parse().ok());
        if found.is_some() || Instant::now() > deadline {
            return found;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Each session's longest gap between two consecutive reads that overlap `window`, sorted.
fn longest_gaps(sessions: &[TsReader], window: (Instant, Instant)) -> Vec<Duration> {
    let mut gaps: Vec<Duration> = sessions
        .iter()
        .map(|session| session.longest_gap_overlapping(window.0, window.1))
        .collect();
    gaps.sort();
    gaps
}

/// Wait until every session has received data; fail plainly if one did not.
fn wait_for_sessions(server: &Ferrocast, sessions: &[TsReader]) {
    bench::wait_for_all(sessions, Duration::from_secs(20), |s| s.bytes() > 0);
    let silent = sessions.iter().filter(|s| s.bytes() == 0).count();
    assert!(
        silent == 0,
        "{silent} of {SESSIONS} sessions got no data (first error: {:?})\nserver log:\n{}",
        sessions.iter().find_map(TsReader::end_reason),
        server.logs()
    );
}

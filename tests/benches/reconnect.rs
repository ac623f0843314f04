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

use std::time::{Duration, Instant};

use ferrocast_tests::bench::{self, ms, percentile, Feed, Problems};
use ferrocast_tests::paced::TICK;
use ferrocast_tests::ts::ReadOptions;
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

fn main() {
    if !bench::requested("reconnect") {
        return;
    }
    let runs = bench::runs("RECONNECT_RUNS", DEFAULT_RUNS, 100);
    bench::build_release_server();

    let feed = Feed::load();
    let plugins = standard_plugin_dir();
    let address = loopback();
    let points = bench::long_grace_points();
    let server = Ferrocast::start(&config_with(address, &points), plugins.path(), address);

    let mut encoder = feed.start(server.http);
    wait_until_live(server.http, "/live", Duration::from_secs(15));
    // Every client reads until this deadline at most, so nothing outlives a stuck run.
    let deadline = Instant::now() + (OUTAGE + LIVE + RESUME_LIMIT * 2) * runs as u32 + 60 * ONE_S;
    let clients: Vec<TsReader> = (0..CLIENTS)
        .map(|_| TsReader::http_with(server.http, "/live", ReadOptions::lean(deadline)))
        .collect();
    wait_for_clients(&server, &clients);
    std::thread::sleep(ONE_S);

    println!(
        "\nreconnect → first media byte at {CLIENTS} clients ({} bytes per {} ms tick)\n",
        feed.per_tick,
        TICK.as_millis()
    );
    println!(
        "{:>4} {:>8} {:>10} {:>10} {:>10}",
        "run", "clients", "median", "p90", "worst"
    );
    let mut run_medians = Vec::new();
    let mut all = Vec::new();
    let mut problems = Problems::default();
    for run in 1..=runs {
        // Drop the encoder's connection and wait for the server to notice.
        drop(encoder);
        server.wait_for_count("SOURCE_LOST", run, Duration::from_secs(5));
        std::thread::sleep(OUTAGE);
        // Only null packets reach the clients now: their first media from here on is the
        // new encoder's.
        let armed = Instant::now();
        encoder = feed.start(server.http);
        let t0 = encoder.first_body_write;
        let waited = Instant::now() + RESUME_LIMIT;
        let hit = |client: &TsReader| client.first_media_after(armed);
        while clients.iter().any(|c| hit(c).is_none()) && Instant::now() < waited {
            std::thread::sleep(Duration::from_millis(5));
        }
        let mut latencies = Vec::new();
        for (index, client) in clients.iter().enumerate() {
            match hit(client) {
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

    let ended = clients.iter().filter(|c| c.end_reason().is_some()).count();
    let unsynced: usize = clients.iter().map(TsReader::sync_errors).sum();
    if ended > 0 {
        problems.push(format!(
            "{ended} clients' streams ended during the benchmark"
        ));
    }
    if unsynced > 0 {
        problems.push(format!("{unsynced} packets without a sync byte"));
    }
    TsReader::stop_all(clients, Duration::from_secs(3));
    let resumed = server.logs().matches("SOURCE_RESUMED").count();
    if resumed != runs {
        problems.push(format!(
            "SOURCE_RESUMED logged {resumed} times in {runs} runs"
        ));
    }
    // A client skipped ahead (or dropped) for lagging would not measure the resume path.
    problems.check_no_lagging(&server);
    problems.print();
    match (percentile(&run_medians, 50), all.last()) {
        (Some(median), Some(worst)) => println!(
            "\nreconnect→first media byte, {CLIENTS} clients, {runs} runs: median {}, worst {}",
            ms(median),
            ms(*worst)
        ),
        _ => println!("\nreconnect→first media byte: no measurement"),
    }
    problems.exit_if_any(&server);
}

/// Wait until every client has its response head, and fail plainly if one was refused.
fn wait_for_clients(server: &Ferrocast, clients: &[TsReader]) {
    bench::wait_for_all(clients, Duration::from_secs(15), |c| c.status().is_some());
    let statuses: Vec<Option<u16>> = clients.iter().map(TsReader::status).collect();
    assert!(
        statuses.iter().all(|s| *s == Some(200)),
        "not every client got 200: {statuses:?}\nserver log:\n{}",
        server.logs()
    );
}

//! Benchmark: fan-out of one live stream to many clients, per protocol, against an ideal
//! server on the same machine in the same run.
//!
//! `cargo bench -p ferrocast-tests --bench fanout`. It builds the release server, encodes a
//! test stream at the bitrate asked for (ffmpeg, 1280x720 H.264 with one keyframe a second, and
//! AAC; below 0.5 Mbps a radio-like stream with a thumbnail picture), starts ferrocast with
//! the http, rtsp, udp and tcp plugins and pushes the stream to a live point in real time; it
//! also starts the ideal server (`ferrocast_tests::ideal`, this executable in a process of its
//! own) playing the same stream. Then for each protocol and
//! each server in turn it joins clients at the join rate, lets them settle, and measures over a
//! steady window:
//!
//! - Gbps per core: bytes the clients received over the server's CPU time (utime + stime from
//!   /proc/<pid>/stat) in the window;
//! - healthy clients: those that received at least 90 % of the stream rate in the window's
//!   second half;
//! - time to first byte, p50 and p99, from before the client connects (for RTSP: before the
//!   control connection, through OPTIONS, DESCRIBE, SETUP and PLAY) to its first media byte;
//!   and how many streams started cleanly (PAT before the first video PES, which is a keyframe);
//! - the server's RSS growth per client.
//!
//! Settings (environment): `FANOUT_MBPS` stream bitrate (4), `FANOUT_CLIENTS` HTTP and raw TCP
//! clients (300), `FANOUT_SESSIONS` RTSP sessions for each RTSP transport (100),
//! `FANOUT_JOIN_RATE` joins per second (100), `FANOUT_WINDOW_S` measured window (10),
//! `FANOUT_PROTOCOLS` a comma list of `http`, `rtsp-tcp`, `rtsp-udp`, `tcp` (all), and
//! `FANOUT_RUNS` runs of everything (1; figures are then medians over runs),
//! `FANOUT_LOAD_THREADS` the load generator's worker threads (1) and `FANOUT_UDP_GRO`
//! `on`/`off`, UDP GRO on the RTSP/UDP clients' RTP sockets (on).
//!
//! `FANOUT_REFERENCE=gstreamer` also measures GStreamer's rtsp-server (`tests/reference/
//! gst_rtsp_server.py`, started by `ferrocast_tests::gst_reference`: the same sample, looped
//! and fed in real time, as one shared live media, MP2T over RTP with 7 TS packets per RTP
//! packet) for `rtsp-tcp` and `rtsp-udp`, after the other two servers in each run, and prints
//! its figures in a second table with ferrocast's Gbps/core over GStreamer's. It needs
//! `apt-get install python3-gi python3-gst-1.0 gir1.2-gst-rtsp-server-1.0`.
//!
//! The load generator shares the machine with both servers: figures are for comparing the two
//! servers in one sitting, not absolutes. Nothing here asserts on them.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferrocast_tests::bench::{self, percentile, sleep_until};
use ferrocast_tests::gst_reference::GstReference;
use ferrocast_tests::ideal::{self, IdealPorts};
use ferrocast_tests::load::{cpu_seconds, rss_kib, Generator, LoadClient, Protocol, Target};
use ferrocast_tests::paced::{bytes_per_tick, PacedEncoder, TICK};
use ferrocast_tests::*;

/// Tells a process started from this executable to be the ideal server: its ports.
const IDEAL_VARIABLE: &str = "FANOUT_IDEAL";
/// The sample the ideal server plays.
const IDEAL_SAMPLE_VARIABLE: &str = "FANOUT_IDEAL_SAMPLE";
/// Time between the last join and the measured window.
const SETTLE: Duration = Duration::from_secs(3);
/// Seconds of stream encoded (and looped by both servers).
const SAMPLE_SECONDS: u32 = 12;
/// A client is healthy at this share of the stream rate.
const HEALTHY_SHARE: f64 = 0.9;

struct Settings {
    mbps: f64,
    clients: usize,
    sessions: usize,
    join_rate: f64,
    window: Duration,
    protocols: Vec<Protocol>,
    runs: usize,
    /// Whether GStreamer's rtsp-server is measured too (`FANOUT_REFERENCE=gstreamer`).
    gstreamer: bool,
    load_threads: usize,
    udp_gro: bool,
}

impl Settings {
    fn from_env() -> Self {
        let number = |name: &str, default: f64| {
            std::env::var(name)
                .ok()
                .and_then(|v| v.parse::<f64>().ok())
                .filter(|v| *v > 0.0)
                .unwrap_or(default)
        };
        let protocols = std::env::var("FANOUT_PROTOCOLS")
            .map(|list| {
                Protocol::ALL
                    .into_iter()
                    .filter(|p| list.split(',').any(|name| name.trim() == p.name()))
                    .collect()
            })
            .unwrap_or_else(|_| Protocol::ALL.to_vec());
        Self {
            mbps: number("FANOUT_MBPS", 4.0),
            clients: number("FANOUT_CLIENTS", 300.0) as usize,
            sessions: number("FANOUT_SESSIONS", 100.0) as usize,
            join_rate: number("FANOUT_JOIN_RATE", 100.0),
            window: Duration::from_secs_f64(number("FANOUT_WINDOW_S", 10.0)),
            protocols,
            runs: bench::runs("FANOUT_RUNS", 1, 20),
            gstreamer: match std::env::var("FANOUT_REFERENCE").as_deref() {
                Ok("gstreamer") => true,
                Ok("") | Err(_) => false,
                Ok(other) => panic!("FANOUT_REFERENCE={other}: the one reference is `gstreamer`"),
            },
            load_threads: number("FANOUT_LOAD_THREADS", 1.0) as usize,
            udp_gro: !matches!(
                std::env::var("FANOUT_UDP_GRO").as_deref(),
                Ok("off" | "0" | "false" | "no")
            ),
        }
    }

    fn clients_of(&self, protocol: Protocol) -> usize {
        match protocol {
            Protocol::Http | Protocol::Tcp => self.clients,
            Protocol::RtspTcp | Protocol::RtspUdp => self.sessions,
        }
    }
}

fn main() {
    if let Ok(ports) = std::env::var(IDEAL_VARIABLE) {
        run_ideal(&ports);
    }
    if !bench::requested("fanout") {
        return;
    }
    let settings = Settings::from_env();
    // A load's descriptors in this process: a socket per HTTP, TCP or interleaved RTSP
    // client, a control connection and an RTP/RTCP pair per RTSP/UDP session (the servers,
    // which inherit the limit, hold one per client), with headroom.
    let most = settings
        .protocols
        .iter()
        .map(|&p| settings.clients_of(p) * p.sockets_per_client())
        .max()
        .unwrap_or(0);
    bench::ensure_fd_limit("fanout", most + 512, 65536, "FANOUT_RAISED");
    let generator = Generator::new(settings.load_threads, settings.udp_gro);
    bench::build_release_server();

    let work = tempfile::tempdir().expect("temp dir");
    let sample_path = work.path().join("stream.ts");
    encode_sample(&sample_path, settings.mbps);
    let sample: Arc<[u8]> = std::fs::read(&sample_path).expect("read the stream").into();
    let per_tick = bytes_per_tick(&sample);
    let stream_rate = per_tick as f64 / TICK.as_secs_f64();

    let plugins = shipped_plugins_dir(&["http", "rtsp", "udp", "tcp"]);
    let server_target = target();
    let server = Ferrocast::start(
        &server_config(&server_target),
        plugins.path(),
        server_target.http,
    );
    let _encoder = PacedEncoder::start(server.http, Arc::clone(&sample), per_tick);
    wait_until_live(server.http, "/live", Duration::from_secs(15));
    let ideal_target = target();
    let mut ideal = start_ideal(&ideal_target, &sample_path);
    let gstreamer_target = target();
    let gstreamer = settings.gstreamer.then(|| {
        GstReference::start(
            gstreamer_target.rtsp,
            &gstreamer_target.path,
            &sample_path,
            per_tick,
        )
        .unwrap_or_else(|error| panic!("{error}"))
    });

    println!(
        "\nfan-out: {:.2} Mbps stream, {} HTTP/TCP clients, {} RTSP sessions, {} joins/s, {} s window, {} run(s); load generator: {} thread(s), UDP GRO {}\n",
        stream_rate * 8.0 / 1e6,
        settings.clients,
        settings.sessions,
        settings.join_rate,
        settings.window.as_secs_f64(),
        settings.runs,
        settings.load_threads,
        if settings.udp_gro { "on" } else { "off" },
    );
    let mut rows = Vec::new();
    for protocol in settings.protocols.clone() {
        let mut ours = Vec::new();
        let mut floor = Vec::new();
        let mut reference = Vec::new();
        for _ in 0..settings.runs {
            let load = Load {
                protocol,
                clients: settings.clients_of(protocol),
                join_rate: settings.join_rate,
                window: settings.window,
                stream_rate,
            };
            let (server_run, ideal_run) = (
                load.run(&generator, &server_target, server.pid()),
                load.run(&generator, &ideal_target, ideal.id()),
            );
            eprintln!(
                "{} run {}: ferrocast {}; ideal {}",
                protocol.name(),
                ours.len() + 1,
                server_run.costs(),
                ideal_run.costs(),
            );
            ours.push(server_run);
            floor.push(ideal_run);
            if let Some(gstreamer) = gstreamer.as_ref().filter(|_| is_rtsp(protocol)) {
                let run = load.run(&generator, &gstreamer_target, gstreamer.pid());
                eprintln!(
                    "{} run {}: GStreamer {:.2} Gbps/core",
                    protocol.name(),
                    reference.len() + 1,
                    run.gbps / run.cores.max(f64::MIN_POSITIVE),
                );
                reference.push(run);
            }
        }
        let row = Row {
            protocol,
            server: Summary::of(ours),
            ideal: Summary::of(floor),
            gstreamer: (!reference.is_empty()).then(|| Summary::of(reference)),
        };
        eprintln!("{}", row.line());
        rows.push(row);
    }
    let _ = ideal.kill();
    let _ = ideal.wait();
    drop(gstreamer);
    print_table(&rows);
    print_gstreamer_table(&rows);
    print_costs(&rows);
    let lagging = server.logs().matches("CLIENT_LAGGING").count();
    if lagging > 0 {
        println!("\nnote: the server logged CLIENT_LAGGING {lagging} times");
    }
}

/// Be the ideal server (this process was started for that), forever.
fn run_ideal(ports: &str) -> ! {
    let addresses: Vec<SocketAddr> = ports
        .split(',')
        .map(|a| a.parse().expect("an ideal server address"))
        .collect();
    let sample_path = std::env::var(IDEAL_SAMPLE_VARIABLE).expect("the ideal server's sample");
    let sample = std::fs::read(sample_path).expect("read the ideal server's sample");
    let per_tick = bytes_per_tick(&sample);
    let ports = IdealPorts {
        http: addresses[0],
        rtsp: addresses[1],
        tcp: addresses[2],
    };
    ideal::serve(sample, per_tick, ports)
}

fn start_ideal(target: &Target, sample: &Path) -> Child {
    let mut child = Command::new(std::env::current_exe().expect("this executable"))
        .env(
            IDEAL_VARIABLE,
            format!("{},{},{}", target.http, target.rtsp, target.tcp),
        )
        .env(IDEAL_SAMPLE_VARIABLE, sample)
        .stdout(Stdio::null())
        .spawn()
        .expect("start the ideal server");
    let listening = wait_until(Duration::from_secs(10), || {
        std::net::TcpStream::connect(target.tcp).is_ok()
    });
    if !listening {
        let _ = child.kill();
        panic!("the ideal server did not listen on {}", target.tcp);
    }
    child
}

fn target() -> Target {
    Target {
        http: loopback(),
        rtsp: loopback(),
        tcp: loopback(),
        path: "/live".into(),
    }
}

fn server_config(target: &Target) -> String {
    let points = bench::long_grace_points().replacen(
        "protocols = [\"http\"]",
        "protocols = [\"http\", \"rtsp\", \"udp\", \"tcp\"]",
        1,
    );
    format!(
        "[server]\nwrite_timeout_ms = 5000\n\n[limits]\nmax_connections = 60000\nmax_connections_per_ip = 60000\n\n\
         [plugins.http]\nlisten = [\"{}\"]\n\n[plugins.rtsp]\nlisten = [\"{}\"]\n\n[plugins.udp]\n\n\
         [plugins.tcp]\nlisten = [\"{}\"]\nserve = {{ \"{}\" = \"live\" }}\n\n{points}",
        target.http,
        target.rtsp,
        target.tcp,
        target.tcp.port()
    )
}

/// Below this bitrate (Mbps) the sample is a radio-like stream: a thumbnail video and a
/// low-rate AAC track (see [`StreamShape`]).
const LOW_BITRATE_MBPS: f64 = 0.5;

/// Picture size and the video and audio rates (kbps) of the encoded stream.
struct StreamShape {
    size: &'static str,
    video_kbps: u64,
    audio_kbps: u64,
}

impl StreamShape {
    /// 720p with 128 kbps AAC, or below [`LOW_BITRATE_MBPS`] a 192x108 picture and 48 kbps
    /// AAC: at 0.16 Mbps that is the packet rate and size of a 128 kbps radio stream as TS,
    /// with keyframes still there for the clean-join check and the ideal server's GOP.
    fn for_mbps(mbps: f64) -> Self {
        let kbps = mbps * 1000.0;
        if mbps < LOW_BITRATE_MBPS {
            Self {
                size: "192x108",
                video_kbps: (kbps * 0.75 - 48.0).max(16.0).round() as u64,
                audio_kbps: 48,
            }
        } else {
            Self {
                size: "1280x720",
                video_kbps: (kbps - 128.0).max(100.0).round() as u64,
                audio_kbps: 128,
            }
        }
    }
}

/// Encode `SAMPLE_SECONDS` of H.264 and AAC at about `mbps` into `path`.
fn encode_sample(path: &Path, mbps: f64) {
    let shape = StreamShape::for_mbps(mbps);
    let video_kbps = shape.video_kbps;
    let rate = format!("{video_kbps}k");
    let buffer = format!("{}k", video_kbps / 2);
    let picture = format!("testsrc2=size={}:rate=25", shape.size);
    let audio_rate = format!("{}k", shape.audio_kbps);
    let status = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-nostdin", "-y"])
        .args(["-f", "lavfi", "-i", &picture])
        .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"])
        .args(["-t", &SAMPLE_SECONDS.to_string()])
        .args([
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-pix_fmt",
            "yuv420p",
        ])
        .args(["-g", "25", "-keyint_min", "25", "-sc_threshold", "0"])
        .args(["-b:v", &rate, "-minrate", &rate, "-maxrate", &rate])
        .args(["-bufsize", &buffer, "-x264-params", "nal-hrd=cbr"])
        .args(["-c:a", "aac", "-b:a", &audio_rate, "-f", "mpegts"])
        .arg(path)
        .status()
        .expect("run ffmpeg (is it installed?)");
    assert!(status.success(), "ffmpeg could not encode the stream");
}

/// One load: `clients` of `protocol` joining at `join_rate`, measured over `window`.
struct Load {
    protocol: Protocol,
    clients: usize,
    join_rate: f64,
    window: Duration,
    /// Transport-stream bytes per second of the stream.
    stream_rate: f64,
}

/// What one load on one server measured.
struct Measurement {
    gbps: f64,
    cores: f64,
    clients: usize,
    healthy: usize,
    /// Sorted.
    first_bytes: Vec<Duration>,
    clean_joins: usize,
    rss_per_client_kib: f64,
    failures: Vec<String>,
    /// The load generator's own CPU (this process) over the window, in cores.
    load_cores: f64,
    /// RTP packets over UDP received, and missing by sequence number, over the whole load.
    rtp_packets: u64,
    rtp_missing: u64,
}

impl Measurement {
    /// One run's figures, as printed while the benchmark goes.
    fn costs(&self) -> String {
        let mut text = format!(
            "{:.2} Gbps/core ({:.2} cores, {}/{} healthy, {:.1} KiB RSS per client; load generator {:.2} cores)",
            self.gbps / self.cores.max(f64::MIN_POSITIVE),
            self.cores,
            self.healthy,
            self.clients,
            self.rss_per_client_kib,
            self.load_cores,
        );
        if self.rtp_packets > 0 {
            text.push_str(&format!(
                ", RTP {} packets, {} missing",
                self.rtp_packets, self.rtp_missing
            ));
        }
        text
    }
}

impl Load {
    fn run(&self, generator: &Generator, target: &Target, pid: u32) -> Measurement {
        let rss_before = rss_kib(pid);
        let join_time = Duration::from_secs_f64(self.clients as f64 / self.join_rate);
        let deadline = Instant::now() + join_time + SETTLE + self.window + Duration::from_secs(30);
        let started = Instant::now();
        let clients: Vec<LoadClient> = (0..self.clients)
            .map(|index| {
                sleep_until(started + Duration::from_secs_f64(index as f64 / self.join_rate));
                LoadClient::spawn(generator, self.protocol, target, deadline)
            })
            .collect();
        std::thread::sleep(SETTLE);
        let wire = |clients: &[LoadClient]| -> u64 {
            clients
                .iter()
                .map(|c| c.stats.wire_bytes.load(Ordering::Relaxed))
                .sum()
        };
        let media = |clients: &[LoadClient]| -> Vec<u64> {
            clients
                .iter()
                .map(|c| c.stats.media_bytes.load(Ordering::Relaxed))
                .collect()
        };
        let (from, cpu_from, wire_from) = (Instant::now(), cpu_seconds(pid), wire(&clients));
        let load_from = cpu_seconds(std::process::id());
        std::thread::sleep(self.window / 2);
        let (half, media_half) = (Instant::now(), media(&clients));
        std::thread::sleep(self.window / 2);
        let (to, cpu_to, wire_to) = (Instant::now(), cpu_seconds(pid), wire(&clients));
        let load_to = cpu_seconds(std::process::id());
        let (media_to, rss_after) = (media(&clients), rss_kib(pid));

        let seconds = (to - from).as_secs_f64();
        let needed = self.stream_rate * (to - half).as_secs_f64() * HEALTHY_SHARE;
        let healthy = media_half
            .iter()
            .zip(&media_to)
            .filter(|(a, b)| (**b - **a) as f64 >= needed)
            .count();
        let mut first_bytes: Vec<Duration> = clients
            .iter()
            .filter_map(|c| c.stats.first_byte())
            .collect();
        first_bytes.sort();
        let clean_joins = clients
            .iter()
            .filter(|c| c.stats.clean_join() == Some(true))
            .count();
        let failures = clients.iter().filter_map(|c| c.stats.failure()).collect();
        let rtp = |count: fn(&ferrocast_tests::load::ClientStats) -> u64| -> u64 {
            clients.iter().map(|c| count(&c.stats)).sum()
        };
        let rtp_packets = rtp(|s| s.rtp_packets.load(Ordering::Relaxed));
        let rtp_missing = rtp(|s| s.rtp_missing.load(Ordering::Relaxed));
        LoadClient::stop_all(clients, Duration::from_secs(15));
        // Let the server notice the departures before the next load.
        std::thread::sleep(Duration::from_secs(2));
        Measurement {
            gbps: (wire_to - wire_from) as f64 * 8.0 / seconds / 1e9,
            cores: (cpu_to - cpu_from) / seconds,
            clients: self.clients,
            healthy,
            first_bytes,
            clean_joins,
            rss_per_client_kib: rss_after.saturating_sub(rss_before) as f64 / self.clients as f64,
            failures,
            load_cores: (load_to - load_from) / seconds,
            rtp_packets,
            rtp_missing,
        }
    }
}

/// One server's measurements of one protocol over the runs.
struct Summary {
    runs: Vec<Measurement>,
}

impl Summary {
    fn of(runs: Vec<Measurement>) -> Self {
        Self { runs }
    }

    fn median(&self, figure: impl Fn(&Measurement) -> f64) -> f64 {
        let mut values: Vec<f64> = self.runs.iter().map(figure).collect();
        values.sort_by(f64::total_cmp);
        values[values.len() / 2]
    }

    fn gbps_per_core(&self) -> f64 {
        self.median(|m| if m.cores > 0.0 { m.gbps / m.cores } else { 0.0 })
    }

    /// Healthy clients of the worst run, out of the clients of a run.
    fn healthy(&self) -> String {
        let worst = self.runs.iter().map(|m| m.healthy).min().unwrap_or(0);
        format!("{worst}/{}", self.runs[0].clients)
    }

    fn clean_joins(&self) -> String {
        let worst = self.runs.iter().map(|m| m.clean_joins).min().unwrap_or(0);
        format!("{worst}/{}", self.runs[0].clients)
    }

    /// p50 / p99 over every client of every run.
    fn first_byte(&self) -> String {
        let mut all: Vec<Duration> = self
            .runs
            .iter()
            .flat_map(|m| m.first_bytes.iter().copied())
            .collect();
        all.sort();
        match (percentile(&all, 50), percentile(&all, 99)) {
            (Some(p50), Some(p99)) => format!("{:.0} / {:.0} ms", millis(p50), millis(p99)),
            _ => "-".into(),
        }
    }

    fn first_failure(&self) -> Option<&String> {
        self.runs.iter().flat_map(|m| m.failures.first()).next()
    }
}

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

struct Row {
    protocol: Protocol,
    server: Summary,
    ideal: Summary,
    /// GStreamer's rtsp-server, for RTSP with `FANOUT_REFERENCE=gstreamer`.
    gstreamer: Option<Summary>,
}

impl Row {
    fn line(&self) -> String {
        let (s, i) = (&self.server, &self.ideal);
        format!(
            "| {} | {} | {:.2} | {:.2} | **{:.1}** | {:.1} | {:.2} | {} | {} | {} | {} | {} | {} | {:.1} KiB |",
            self.protocol.name(),
            s.runs[0].clients,
            s.median(|m| m.gbps),
            s.median(|m| m.cores),
            s.gbps_per_core(),
            i.gbps_per_core(),
            s.gbps_per_core() / i.gbps_per_core().max(f64::MIN_POSITIVE),
            s.healthy(),
            i.healthy(),
            s.first_byte(),
            i.first_byte(),
            s.clean_joins(),
            i.clean_joins(),
            s.median(|m| m.rss_per_client_kib),
        )
    }
}

fn print_table(rows: &[Row]) {
    println!("| protocol | clients | ferrocast Gbps | ferrocast cores | ferrocast Gbps/core | ideal Gbps/core | ratio | healthy | healthy (ideal) | TTFB p50 / p99 | TTFB p50 / p99 (ideal) | clean joins | clean joins (ideal) | RSS per client |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for row in rows {
        println!("{}", row.line());
    }
    for row in rows {
        for (who, summary) in [("ferrocast", &row.server), ("ideal", &row.ideal)] {
            if let Some(failure) = summary.first_failure() {
                println!(
                    "note: {} {who}: a client stopped early: {failure}",
                    row.protocol.name()
                );
            }
        }
    }
}

/// The protocols GStreamer's rtsp-server is measured on.
fn is_rtsp(protocol: Protocol) -> bool {
    matches!(protocol, Protocol::RtspTcp | Protocol::RtspUdp)
}

/// GStreamer's figures, for the rows that have them, beside ferrocast's and the ideal's.
fn print_gstreamer_table(rows: &[Row]) {
    let measured: Vec<(&Row, &Summary)> = rows
        .iter()
        .filter_map(|row| row.gstreamer.as_ref().map(|g| (row, g)))
        .collect();
    if measured.is_empty() {
        return;
    }
    println!("\nAgainst GStreamer rtsp-server (shared media):\n");
    println!("| protocol | sessions | GStreamer Gbps | GStreamer cores | GStreamer Gbps/core | ferrocast Gbps/core | ideal Gbps/core | ferrocast / GStreamer | healthy (GStreamer) | TTFB p50 / p99 (GStreamer) | clean joins (GStreamer) | RSS per client (GStreamer) |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    for (row, g) in &measured {
        println!(
            "| {} | {} | {:.2} | {:.2} | **{:.1}** | {:.1} | {:.1} | {:.2} | {} | {} | {} | {:.1} KiB |",
            row.protocol.name(),
            g.runs[0].clients,
            g.median(|m| m.gbps),
            g.median(|m| m.cores),
            g.gbps_per_core(),
            row.server.gbps_per_core(),
            row.ideal.gbps_per_core(),
            row.server.gbps_per_core() / g.gbps_per_core().max(f64::MIN_POSITIVE),
            g.healthy(),
            g.first_byte(),
            g.clean_joins(),
            g.median(|m| m.rss_per_client_kib),
        );
    }
    for (row, g) in &measured {
        if let Some(failure) = g.first_failure() {
            println!(
                "note: {} GStreamer: a client stopped early: {failure}",
                row.protocol.name()
            );
        }
    }
}

/// What each server spent, and the load generator beside it: medians over the runs.
fn print_costs(rows: &[Row]) {
    println!("\n| protocol | server | cores | Gbps/core | healthy | TTFB p50 / p99 | RSS per client | load generator cores | RTP missing / received |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for row in rows {
        for (who, summary) in [("ferrocast", &row.server), ("ideal", &row.ideal)] {
            let rtp = summary.runs.iter().fold((0, 0), |(missing, packets), m| {
                (missing + m.rtp_missing, packets + m.rtp_packets)
            });
            println!(
                "| {} | {who} | {:.2} | {:.1} | {} | {} | {:.1} KiB | {:.2} | {} |",
                row.protocol.name(),
                summary.median(|m| m.cores),
                summary.gbps_per_core(),
                summary.healthy(),
                summary.first_byte(),
                summary.median(|m| m.rss_per_client_kib),
                summary.median(|m| m.load_cores),
                if rtp.1 > 0 {
                    format!("{} / {}", rtp.0, rtp.1)
                } else {
                    "-".into()
                },
            );
        }
    }
}

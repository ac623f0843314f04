//! Load clients for the fan-out benchmark, event-driven: a [`Generator`] is a tokio runtime
//! with a small, fixed number of worker threads, and every client is a task on it that counts
//! what arrives instead of keeping it, over HTTP, raw TCP, RTSP with interleaved RTP and RTSP
//! with RTP over UDP (the client binds its own RTP/RTCP port pair and may receive with UDP
//! GRO, see [`udp`]). Each client records when its first media byte arrived and whether its
//! stream started cleanly: PAT before the first video PES, and that PES a keyframe. Also: a
//! process's CPU time and RSS from /proc.

mod clients;
mod control;
mod join_check;
pub mod udp;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use join_check::{payload, pid, video_pes_start, JoinCheck};

use crate::rtsp::{rtp_payload, FrameSink};

const NO_FIRST_BYTE: u64 = u64::MAX;

/// The ways a load client reaches a point.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Http,
    RtspTcp,
    RtspUdp,
    Tcp,
}

impl Protocol {
    pub const ALL: [Protocol; 4] = [Self::Http, Self::RtspTcp, Self::RtspUdp, Self::Tcp];

    /// The name used in tables and in `FANOUT_PROTOCOLS`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::RtspTcp => "rtsp-tcp",
            Self::RtspUdp => "rtsp-udp",
            Self::Tcp => "tcp",
        }
    }

    /// Descriptors one client holds in the load generator (the server holds one per client
    /// for the stream connection, plus any UDP it shares).
    pub fn sockets_per_client(self) -> usize {
        match self {
            Self::Http | Self::Tcp | Self::RtspTcp => 1,
            Self::RtspUdp => 3,
        }
    }
}

/// Where a server under load listens, and the point's path.
#[derive(Clone, Debug)]
pub struct Target {
    pub http: SocketAddr,
    pub rtsp: SocketAddr,
    pub tcp: SocketAddr,
    pub path: String,
}

/// Why a load client stopped early.
#[derive(Debug, thiserror::Error)]
pub enum ClientFailure {
    #[error("connect to {address}: {source}")]
    Connect {
        address: SocketAddr,
        source: std::io::Error,
    },
    #[error("connect to {address}: no answer within {within:?}")]
    ConnectTimeout {
        address: SocketAddr,
        within: Duration,
    },
    #[error("send {what}: {source}")]
    Send {
        what: &'static str,
        source: std::io::Error,
    },
    #[error("read: {0}")]
    Read(std::io::Error),
    #[error("the server closed the connection")]
    Closed,
    #[error("closed before the response head")]
    ClosedBeforeHead,
    #[error("closed before an RTSP response")]
    ClosedBeforeResponse,
    #[error("HTTP status {0}")]
    HttpStatus(u16),
    #[error("RTSP {method} answered {status}: {response}")]
    RtspRefused {
        method: &'static str,
        status: u16,
        response: String,
    },
    #[error("RTSP {method}: no response within {within:?}")]
    RtspTimeout {
        method: &'static str,
        within: Duration,
    },
    #[error("turn UDP GRO on: {0}")]
    Gro(std::io::Error),
    #[error("receive RTP: {0}")]
    Receive(std::io::Error),
}

/// What one client counted so far.
pub struct ClientStats {
    /// Transport-stream bytes received (the RTP payloads, for RTSP).
    pub media_bytes: AtomicU64,
    /// Bytes as they came off the socket: body, interleaved frames, whole datagrams.
    pub wire_bytes: AtomicU64,
    /// RTP packets received over UDP (each datagram of a GRO receive counts).
    pub rtp_packets: AtomicU64,
    /// RTP packets over UDP missing by their sequence numbers.
    pub rtp_missing: AtomicU64,
    /// Microseconds from the client's start (before connecting) to its first media byte.
    first_byte_us: AtomicU64,
    /// 0 undecided, 1 clean, 2 not clean.
    join: AtomicU8,
    failure: Mutex<Option<String>>,
}

impl ClientStats {
    fn new() -> Self {
        Self {
            media_bytes: AtomicU64::new(0),
            wire_bytes: AtomicU64::new(0),
            rtp_packets: AtomicU64::new(0),
            rtp_missing: AtomicU64::new(0),
            first_byte_us: AtomicU64::new(NO_FIRST_BYTE),
            join: AtomicU8::new(0),
            failure: Mutex::new(None),
        }
    }

    /// Time to the first media byte, from before the connection was made.
    pub fn first_byte(&self) -> Option<Duration> {
        match self.first_byte_us.load(Ordering::Relaxed) {
            NO_FIRST_BYTE => None,
            us => Some(Duration::from_micros(us)),
        }
    }

    /// Whether the stream started with PAT and a keyframe, once that is known.
    pub fn clean_join(&self) -> Option<bool> {
        match self.join.load(Ordering::Relaxed) {
            1 => Some(true),
            2 => Some(false),
            _ => None,
        }
    }

    /// Why the client stopped early, if it did.
    pub fn failure(&self) -> Option<String> {
        self.failure.lock().unwrap().clone()
    }
}

/// The runtime that drives every load client: `threads` worker threads, however many
/// clients. `udp_gro` turns UDP GRO on for RTSP/UDP clients' RTP sockets.
pub struct Generator {
    runtime: tokio::runtime::Runtime,
    udp_gro: bool,
}

impl Generator {
    pub fn new(threads: usize, udp_gro: bool) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads.max(1))
            .thread_name("load")
            .enable_all()
            .build()
            .expect("start the load generator's runtime");
        Self { runtime, udp_gro }
    }
}

/// One running load client.
pub struct LoadClient {
    pub stats: Arc<ClientStats>,
    task: tokio::task::JoinHandle<()>,
}

impl LoadClient {
    /// Start a client of `protocol` against `target` on `generator`; it reads until it is
    /// stopped ([`Self::stop_all`]) or `deadline` passes. Its time to first byte counts from
    /// when its task first runs, just before it connects.
    pub fn spawn(
        generator: &Generator,
        protocol: Protocol,
        target: &Target,
        deadline: Instant,
    ) -> Self {
        let stats = Arc::new(ClientStats::new());
        let target = target.clone();
        let udp_gro = generator.udp_gro;
        let mut counter = Counter {
            stats: Arc::clone(&stats),
            check: Some(JoinCheck::default()),
            started: Instant::now(),
        };
        let task = generator.runtime.spawn(async move {
            counter.started = Instant::now();
            let client = clients::run(protocol, &target, &mut counter, udp_gro);
            let deadline = tokio::time::Instant::from_std(deadline);
            if let Ok(Err(failure)) = tokio::time::timeout_at(deadline, client).await {
                *counter.stats.failure.lock().unwrap() = Some(failure.to_string());
            }
        });
        Self { stats, task }
    }

    /// Stop the clients (closing their connections) and wait, at most `within`, until they
    /// have.
    pub fn stop_all(clients: Vec<LoadClient>, within: Duration) {
        for client in &clients {
            client.task.abort();
        }
        let deadline = Instant::now() + within;
        while Instant::now() < deadline && !clients.iter().all(|c| c.task.is_finished()) {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// What a client task carries: its counters, its join check (until it has a verdict) and
/// when it started.
struct Counter {
    stats: Arc<ClientStats>,
    check: Option<JoinCheck>,
    started: Instant,
}

impl Counter {
    /// Count `ts` (transport-stream bytes) that came in `wire` bytes.
    fn media(&mut self, ts: &[u8], wire: usize) {
        let stats = &self.stats;
        stats.wire_bytes.fetch_add(wire as u64, Ordering::Relaxed);
        if ts.is_empty() {
            return;
        }
        if stats.first_byte_us.load(Ordering::Relaxed) == NO_FIRST_BYTE {
            let us = self.started.elapsed().as_micros() as u64;
            stats.first_byte_us.store(us, Ordering::Relaxed);
        }
        stats
            .media_bytes
            .fetch_add(ts.len() as u64, Ordering::Relaxed);
        if let Some(check) = &mut self.check {
            if let Some(clean) = check.feed(ts) {
                stats
                    .join
                    .store(if clean { 1 } else { 2 }, Ordering::Relaxed);
                self.check = None;
            }
        }
    }

    /// Count one RTP packet over UDP, `missing` packets after the one before it.
    fn rtp_packet(&mut self, missing: u64) {
        self.stats.rtp_packets.fetch_add(1, Ordering::Relaxed);
        if missing > 0 {
            self.stats.rtp_missing.fetch_add(missing, Ordering::Relaxed);
        }
    }
}

impl FrameSink for Counter {
    fn frame(&mut self, channel: u8, data: &[u8]) {
        match rtp_payload(data) {
            Some(payload) if channel == 0 => self.media(payload, data.len() + 4),
            _ => self.media(&[], data.len() + 4),
        }
    }
}

/// A process's user plus system CPU time so far, from /proc/<pid>/stat.
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc stat");
    // Fields after the command name (which may hold spaces) start at field 3 (state).
    let after = &stat[stat.rfind(')').expect("stat has a command name") + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    ticks as f64 / per_second
}

/// A process's resident memory in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .expect("read /proc status")
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc status")
}

#[cfg(test)]
mod tests {
    use super::clients::take_interleaved;
    use super::*;

    #[test]
    fn interleaved_frames_are_taken_whole_and_responses_skipped() {
        struct Frames(Vec<(u8, usize)>);
        impl FrameSink for Frames {
            fn frame(&mut self, channel: u8, data: &[u8]) {
                self.0.push((channel, data.len()));
            }
        }
        let mut bytes = b"RTSP/1.0 200 OK\r\nCSeq: 4\r\n\r\n".to_vec();
        bytes.extend_from_slice(&[b'$', 0, 0, 3, 1, 2, 3, b'$', 1, 0, 2, 9]);
        let mut frames = Frames(Vec::new());
        let taken = take_interleaved(&bytes, &mut frames);
        assert_eq!(frames.0, vec![(0, 3)]);
        assert_eq!(taken, bytes.len() - 5);
    }
}

//! Lean load clients for the fan-out benchmark: one thread per client (small stack), counting
//! what arrives instead of keeping it, over HTTP, raw TCP, RTSP with interleaved RTP and RTSP
//! with RTP over UDP (the client binds its own RTP/RTCP port pair). Each client records when
//! its first media byte arrived and whether its stream started cleanly: PAT before the first
//! video PES, and that PES a keyframe. Also: a process's CPU time and RSS from /proc.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::head::{content_length, head_end, status_code};
use crate::rtsp::{rtp_payload, FrameSink, RtspClient};
use crate::ts::TS_PACKET;
use crate::watch::udp_pair;

/// How long one read waits before the client looks at its stop flag again.
const POLL: Duration = Duration::from_millis(200);
/// Stack of a client thread: hundreds of them run at once.
const STACK: usize = 256 * 1024;
/// Receive buffer asked for on a client's RTP socket, so that a join's burst is not dropped
/// by the load generator itself.
const UDP_RECEIVE_BUFFER: usize = 4 * 1024 * 1024;
/// Packets after which a stream that has shown no video PES yet counts as not clean.
const JOIN_CHECK_PACKETS: usize = 4000;
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
}

/// Where a server under load listens, and the point's path.
#[derive(Clone, Debug)]
pub struct Target {
    pub http: SocketAddr,
    pub rtsp: SocketAddr,
    pub tcp: SocketAddr,
    pub path: String,
}

/// What one client counted so far.
pub struct ClientStats {
    /// Transport-stream bytes received (the RTP payloads, for RTSP).
    pub media_bytes: AtomicU64,
    /// Bytes as they came off the socket: body, interleaved frames, whole datagrams.
    pub wire_bytes: AtomicU64,
    /// Microseconds from the client's start (before connecting) to its first media byte.
    first_byte_us: AtomicU64,
    /// 0 undecided, 1 clean, 2 not clean.
    join: AtomicU8,
    failure: Mutex<Option<String>>,
    started: Instant,
}

impl ClientStats {
    fn new() -> Self {
        Self {
            media_bytes: AtomicU64::new(0),
            wire_bytes: AtomicU64::new(0),
            first_byte_us: AtomicU64::new(NO_FIRST_BYTE),
            join: AtomicU8::new(0),
            failure: Mutex::new(None),
            started: Instant::now(),
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

/// One running load client.
pub struct LoadClient {
    pub stats: Arc<ClientStats>,
    thread: JoinHandle<()>,
}

impl LoadClient {
    /// Start a client of `protocol` against `target` on a thread of its own; it reads until
    /// `stop` is set or `deadline` passes.
    pub fn spawn(
        protocol: Protocol,
        target: &Target,
        stop: &Arc<AtomicBool>,
        deadline: Instant,
    ) -> Self {
        let stats = Arc::new(ClientStats::new());
        let mut counter = Counter {
            stats: Arc::clone(&stats),
            check: JoinCheck::default(),
            stop: Arc::clone(stop),
            deadline,
        };
        let target = target.clone();
        let thread = std::thread::Builder::new()
            .stack_size(STACK)
            .spawn(move || {
                let result = match protocol {
                    Protocol::Http => read_http(&target, &mut counter),
                    Protocol::Tcp => read_tcp(&target, &mut counter),
                    Protocol::RtspTcp => read_rtsp_tcp(&target, &mut counter),
                    Protocol::RtspUdp => read_rtsp_udp(&target, &mut counter),
                };
                if let Err(failure) = result {
                    *counter.stats.failure.lock().unwrap() = Some(failure);
                }
            })
            .expect("start a load client thread");
        Self { stats, thread }
    }

    /// Wait (at most `within`) for the clients, told to stop beforehand, to finish.
    pub fn join_all(clients: Vec<LoadClient>, within: Duration) {
        let deadline = Instant::now() + within;
        for client in clients {
            while !client.thread.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            if client.thread.is_finished() {
                let _ = client.thread.join();
            }
        }
    }
}

/// What a client thread carries: its counters, its join check and when to stop.
struct Counter {
    stats: Arc<ClientStats>,
    check: JoinCheck,
    stop: Arc<AtomicBool>,
    deadline: Instant,
}

impl Counter {
    fn running(&self) -> bool {
        !self.stop.load(Ordering::Relaxed) && Instant::now() < self.deadline
    }

    /// Count `ts` (transport-stream bytes) that came in `wire` bytes.
    fn media(&mut self, ts: &[u8], wire: usize) {
        let stats = &self.stats;
        stats.wire_bytes.fetch_add(wire as u64, Ordering::Relaxed);
        if ts.is_empty() {
            return;
        }
        if stats.first_byte_us.load(Ordering::Relaxed) == NO_FIRST_BYTE {
            let us = stats.started.elapsed().as_micros() as u64;
            stats.first_byte_us.store(us, Ordering::Relaxed);
        }
        stats
            .media_bytes
            .fetch_add(ts.len() as u64, Ordering::Relaxed);
        if stats.join.load(Ordering::Relaxed) == 0 {
            if let Some(clean) = self.check.feed(ts) {
                stats
                    .join
                    .store(if clean { 1 } else { 2 }, Ordering::Relaxed);
            }
        }
    }

    /// Read `stream` until the end, the stop flag or the deadline, counting it all as media.
    fn read_stream(&mut self, stream: &mut TcpStream) -> Result<(), String> {
        let mut buf = vec![0u8; 64 * 1024];
        while self.running() {
            match stream.read(&mut buf) {
                Ok(0) => return Err("the server closed the connection".into()),
                Ok(n) => self.media(&buf[..n], n),
                Err(error) if is_timeout(&error) => {}
                Err(error) => return Err(format!("read: {error}")),
            }
        }
        Ok(())
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

fn is_timeout(error: &std::io::Error) -> bool {
    matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
}

fn connect(address: SocketAddr) -> Result<TcpStream, String> {
    let stream = TcpStream::connect_timeout(&address, Duration::from_secs(5))
        .map_err(|error| format!("connect to {address}: {error}"))?;
    stream
        .set_read_timeout(Some(POLL))
        .map_err(|error| format!("set a read timeout: {error}"))?;
    Ok(stream)
}

fn read_http(target: &Target, counter: &mut Counter) -> Result<(), String> {
    let mut stream = connect(target.http)?;
    let request = format!("GET {} HTTP/1.1\r\nHost: bench\r\n\r\n", target.path);
    stream
        .write_all(request.as_bytes())
        .map_err(|error| format!("send GET: {error}"))?;
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    let end = loop {
        if let Some(end) = head_end(&head) {
            break end;
        }
        if !counter.running() {
            return Ok(());
        }
        match stream.read(&mut buf) {
            Ok(0) => return Err("closed before the response head".into()),
            Ok(n) => head.extend_from_slice(&buf[..n]),
            Err(error) if is_timeout(&error) => {}
            Err(error) => return Err(format!("read the head: {error}")),
        }
    };
    let status = status_code(&String::from_utf8_lossy(&head[..end]));
    if status != 200 {
        return Err(format!("HTTP status {status}"));
    }
    let body = head.split_off(end);
    counter.media(&body, body.len());
    counter.read_stream(&mut stream)
}

fn read_tcp(target: &Target, counter: &mut Counter) -> Result<(), String> {
    let mut stream = connect(target.tcp)?;
    counter.read_stream(&mut stream)
}

fn rtsp_url(target: &Target) -> String {
    format!(
        "rtsp://{}/{}",
        target.rtsp,
        target.path.trim_start_matches('/')
    )
}

fn read_rtsp_tcp(target: &Target, counter: &mut Counter) -> Result<(), String> {
    let mut client = RtspClient::try_connect(target.rtsp).map_err(|r| format!("{r:?}"))?;
    client
        .play_first_track(
            &rtsp_url(target),
            "RTP/AVP/TCP;unicast;interleaved=0-1",
            counter,
        )
        .map_err(|refusal| format!("{refusal:?}"))?;
    let (mut stream, mut buffered) = client.into_parts();
    stream
        .set_read_timeout(Some(POLL))
        .map_err(|error| format!("set a read timeout: {error}"))?;
    let mut buf = vec![0u8; 64 * 1024];
    while counter.running() {
        let taken = take_interleaved(&buffered, counter);
        buffered.drain(..taken);
        match stream.read(&mut buf) {
            Ok(0) => return Err("the server closed the connection".into()),
            Ok(n) => buffered.extend_from_slice(&buf[..n]),
            Err(error) if is_timeout(&error) => {}
            Err(error) => return Err(format!("read: {error}")),
        }
    }
    Ok(())
}

/// Hand the complete interleaved frames in `buffered` to `sink`, skipping RTSP messages
/// between them; how many bytes were used up.
fn take_interleaved(buffered: &[u8], sink: &mut impl FrameSink) -> usize {
    let mut at = 0;
    while at < buffered.len() {
        let rest = &buffered[at..];
        if rest[0] == b'$' {
            if rest.len() < 4 {
                break;
            }
            let length = usize::from(u16::from_be_bytes([rest[2], rest[3]]));
            if rest.len() < 4 + length {
                break;
            }
            sink.frame(rest[1], &rest[4..4 + length]);
            at += 4 + length;
        } else if rest.starts_with(b"RTSP/") {
            let Some(end) = head_end(rest) else { break };
            let length = content_length(&String::from_utf8_lossy(&rest[..end])).unwrap_or(0);
            if rest.len() < end + length {
                break;
            }
            at += end + length;
        } else if b"RTSP/".starts_with(rest) {
            break;
        } else {
            at += 1;
        }
    }
    at
}

fn read_rtsp_udp(target: &Target, counter: &mut Counter) -> Result<(), String> {
    let (rtp, _rtcp) = udp_pair();
    let _ = socket2::SockRef::from(&rtp).set_recv_buffer_size(UDP_RECEIVE_BUFFER);
    rtp.set_read_timeout(Some(POLL))
        .map_err(|error| format!("set a read timeout: {error}"))?;
    let port = rtp.local_addr().map_err(|e| e.to_string())?.port();
    let mut client = RtspClient::try_connect(target.rtsp).map_err(|r| format!("{r:?}"))?;
    let transport = format!("RTP/AVP;unicast;client_port={port}-{}", port + 1);
    client
        .play_first_track(&rtsp_url(target), &transport, &mut ())
        .map_err(|refusal| format!("{refusal:?}"))?;
    let mut buf = vec![0u8; 65536];
    while counter.running() {
        match rtp.recv(&mut buf) {
            Ok(n) => {
                let payload = rtp_payload(&buf[..n]).unwrap_or(&[]);
                counter.media(payload, n);
            }
            Err(error) if is_timeout(&error) => {}
            Err(error) => return Err(format!("receive RTP: {error}")),
        }
    }
    // The control connection lives as long as the session is watched.
    drop(client);
    Ok(())
}

/// Whether a stream starts cleanly: a PAT before the first video PES, and that PES starting
/// a keyframe (random access indicator, or an IDR slice or SPS in its first packet).
#[derive(Default)]
pub struct JoinCheck {
    pending: Vec<u8>,
    packets: usize,
    saw_pat: bool,
}

impl JoinCheck {
    /// Feed the next bytes of the stream; the verdict once there is one.
    pub fn feed(&mut self, data: &[u8]) -> Option<bool> {
        self.pending.extend_from_slice(data);
        let whole = self.pending.len() / TS_PACKET * TS_PACKET;
        let mut verdict = None;
        for packet in self.pending[..whole].chunks_exact(TS_PACKET) {
            self.packets += 1;
            if packet[0] != 0x47 || self.packets > JOIN_CHECK_PACKETS {
                verdict = Some(false);
                break;
            }
            if pid(packet) == 0 {
                self.saw_pat = true;
            }
            if let Some(keyframe) = video_pes_start(packet) {
                verdict = Some(self.saw_pat && keyframe);
                break;
            }
        }
        self.pending.drain(..whole);
        verdict
    }
}

pub fn pid(packet: &[u8]) -> u16 {
    u16::from_be_bytes([packet[1] & 0x1f, packet[2]])
}

/// The payload of a TS packet, after its adaptation field.
pub fn payload(packet: &[u8]) -> &[u8] {
    let mut start = 4;
    if packet[3] & 0x20 != 0 {
        start += 1 + usize::from(packet[4]);
    }
    if packet[3] & 0x10 == 0 || start >= packet.len() {
        return &[];
    }
    &packet[start..]
}

/// For a packet that starts a video PES: whether it starts a keyframe.
pub fn video_pes_start(packet: &[u8]) -> Option<bool> {
    let unit_start = packet[1] & 0x40 != 0;
    let data = payload(packet);
    if !unit_start || data.len() < 9 || data[..3] != [0, 0, 1] || data[3] & 0xf0 != 0xe0 {
        return None;
    }
    let random_access = packet[3] & 0x20 != 0 && packet[4] > 0 && packet[5] & 0x40 != 0;
    let es = data.get(9 + usize::from(data[8])..).unwrap_or(&[]);
    let keyframe_nal = es
        .windows(4)
        .any(|w| w[..3] == [0, 0, 1] && matches!(w[3] & 0x1f, 5 | 7));
    Some(random_access || keyframe_nal)
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
    use super::*;

    fn packet(pid: u16, unit_start: bool, random_access: bool, payload: &[u8]) -> Vec<u8> {
        let mut p = vec![0x47, (pid >> 8) as u8, pid as u8, 0x30];
        if unit_start {
            p[1] |= 0x40;
        }
        p.extend_from_slice(&[1, if random_access { 0x40 } else { 0 }]);
        p.extend_from_slice(payload);
        p.resize(TS_PACKET, 0xff);
        p
    }

    const VIDEO_PES: [u8; 9] = [0, 0, 1, 0xe0, 0, 0, 0x80, 0x80, 0];

    #[test]
    fn a_stream_is_clean_with_pat_first_and_a_keyframe() {
        let mut stream = packet(0, true, false, &[0]);
        stream.extend(packet(0x100, true, true, &VIDEO_PES));
        let mut check = JoinCheck::default();
        assert_eq!(check.feed(&stream[..100]), None);
        assert_eq!(check.feed(&stream[100..]), Some(true));
    }

    #[test]
    fn a_stream_is_not_clean_without_pat_or_without_a_keyframe() {
        let mut check = JoinCheck::default();
        assert_eq!(
            check.feed(&packet(0x100, true, true, &VIDEO_PES)),
            Some(false)
        );
        let mut stream = packet(0, true, false, &[0]);
        stream.extend(packet(0x100, true, false, &VIDEO_PES));
        assert_eq!(JoinCheck::default().feed(&stream), Some(false));
        let mut idr = VIDEO_PES.to_vec();
        idr.extend_from_slice(&[0, 0, 0, 1, 0x65]);
        let mut stream = packet(0, true, false, &[0]);
        stream.extend(packet(0x100, true, false, &idr));
        assert_eq!(JoinCheck::default().feed(&stream), Some(true));
    }

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

//! Session watchers for tests that change the server under running sessions: each one holds
//! a real client session (HTTP, raw TCP, RTSP with RTP over UDP or TCP interleaved) and reads
//! it on threads of its own, recording what arrived and when, until the server ends the
//! session, the watcher is dropped, or [`WATCH_LIMIT`] passes.
//!
//! What they record answers the questions a reload test asks: did this session see a gap
//! (MPEG-TS continuity counters, RTP sequence numbers, time between reads), is it still
//! receiving, and did the server end it, and how (connection closed, RTCP BYE).

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The longest a watcher reads before giving up on its own.
pub const WATCH_LIMIT: Duration = Duration::from_secs(120);
/// How often reading threads look at their stop flag.
const POLL: Duration = Duration::from_millis(200);
/// Received media kept for decoding, per watcher.
const KEEP_BYTES: usize = 64 * 1024 * 1024;
const TS_PACKET: usize = 188;
const NULL_PID: u16 = 0x1fff;

// ---- MPEG-TS continuity -----------------------------------------------------------------

/// Checks the continuity counters of an MPEG-TS byte stream fed in arbitrary pieces.
///
/// Per PID (the null PID is ignored): the 4-bit counter increases by one on each packet that
/// carries a payload (adaptation_field_control `01` or `11`); packets without a payload do not
/// advance it. One exact duplicate of the previous packet (same counter, same bytes) is
/// allowed. A packet with the discontinuity_indicator set starts the PID afresh. Packets are
/// assumed to start at the first byte fed, 188 bytes each; if a packet does not start with
/// the sync byte the checker reports it and resynchronises on the next `0x47`.
#[derive(Default)]
pub struct Continuity {
    pending: Vec<u8>,
    /// Stream offset of `pending[0]`.
    offset: u64,
    pids: HashMap<u16, PidState>,
    packets: u64,
    errors: Vec<String>,
}

struct PidState {
    counter: u8,
    last: Vec<u8>,
    duplicated: bool,
}

impl Continuity {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn feed(&mut self, data: &[u8]) {
        self.pending.extend_from_slice(data);
        let mut pos = 0;
        while self.pending.len() - pos >= TS_PACKET {
            if self.pending[pos] != 0x47 {
                let rest = &self.pending[pos..];
                let skip = (1..rest.len())
                    .find(|&i| {
                        // A sync byte, and another one a packet later (unless that is not
                        // here yet).
                        rest[i] == 0x47 && !matches!(rest.get(i + TS_PACKET), Some(&b) if b != 0x47)
                    })
                    .unwrap_or(rest.len());
                self.errors.push(format!(
                    "lost sync at byte {}: skipped {skip} byte(s) to the next 0x47",
                    self.offset + pos as u64
                ));
                pos += skip;
                continue;
            }
            let packet = self.pending[pos..pos + TS_PACKET].to_vec();
            self.check(&packet, self.offset + pos as u64);
            pos += TS_PACKET;
        }
        self.pending.drain(..pos);
        self.offset += pos as u64;
    }

    fn check(&mut self, packet: &[u8], at: u64) {
        let pid = (u16::from(packet[1] & 0x1f) << 8) | u16::from(packet[2]);
        if pid == NULL_PID {
            return;
        }
        self.packets += 1;
        let control = (packet[3] >> 4) & 0x3;
        let counter = packet[3] & 0x0f;
        let has_payload = control & 0x1 != 0;
        let discontinuity = control & 0x2 != 0 && packet[4] > 0 && packet[5] & 0x80 != 0;
        if discontinuity {
            self.pids.insert(
                pid,
                PidState {
                    counter,
                    last: packet.to_vec(),
                    duplicated: false,
                },
            );
            return;
        }
        if !has_payload {
            return;
        }
        let Some(state) = self.pids.get_mut(&pid) else {
            self.pids.insert(
                pid,
                PidState {
                    counter,
                    last: packet.to_vec(),
                    duplicated: false,
                },
            );
            return;
        };
        let expected = (state.counter + 1) & 0x0f;
        if counter == expected {
            state.counter = counter;
            state.last = packet.to_vec();
            state.duplicated = false;
        } else if counter == state.counter && !state.duplicated && state.last == packet {
            state.duplicated = true;
        } else {
            let why = if counter == state.counter {
                "repeated (not an exact single duplicate)".to_owned()
            } else {
                format!(
                    "{} packet(s) missing",
                    counter.wrapping_sub(expected) & 0x0f
                )
            };
            let previous = state.counter;
            self.errors.push(format!(
                "PID {pid:#06x}: continuity counter {previous} then {counter} \
                 (expected {expected}) at byte {at}: {why}"
            ));
            state.counter = counter;
            state.last = packet.to_vec();
            state.duplicated = false;
        }
    }

    /// Every discontinuity found so far.
    pub fn errors(&self) -> &[String] {
        &self.errors
    }

    /// Packets checked (the null PID not counted).
    pub fn packets(&self) -> u64 {
        self.packets
    }
}

// ---- shared bookkeeping --------------------------------------------------------------------

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Arrival times and what the reader thread saw of the session's end.
#[derive(Default)]
struct Timeline {
    /// When each read (or packet) arrived, with its size.
    arrivals: Vec<(Instant, usize)>,
    /// The server closed the connection (or it failed).
    closed: Option<Instant>,
    /// The reading threads stopped (for whatever reason).
    finished: Option<Instant>,
}

impl Timeline {
    /// Longest time between arrivals from the last one before `since` on, up to now (or
    /// until reading stopped), so a stream that stalls counts as a gap too.
    fn longest_gap_since(&self, since: Instant) -> Duration {
        let before = self
            .arrivals
            .iter()
            .rev()
            .find(|(at, _)| *at < since)
            .map(|(at, _)| *at);
        let mut times: Vec<Instant> = before.into_iter().collect();
        times.extend(
            self.arrivals
                .iter()
                .map(|(at, _)| *at)
                .filter(|at| *at >= since),
        );
        times.push(self.finished.unwrap_or_else(Instant::now));
        times
            .windows(2)
            .map(|w| w[1].saturating_duration_since(w[0]))
            .max()
            .unwrap_or_default()
    }

    fn after(&self, since: Instant) -> usize {
        self.arrivals
            .iter()
            .filter(|(at, _)| *at >= since)
            .map(|(_, n)| n)
            .sum()
    }

    fn count_after(&self, since: Instant) -> usize {
        self.arrivals.iter().filter(|(at, _)| *at >= since).count()
    }
}

fn wait_until(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn is_timeout(error: &std::io::Error) -> bool {
    matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
}

// ---- MPEG-TS over HTTP and raw TCP ---------------------------------------------------------

#[derive(Default)]
struct TsState {
    timeline: Timeline,
    /// Bytes of the HTTP response head, until it is complete.
    head_buffer: Vec<u8>,
    head: Option<String>,
    body: Vec<u8>,
    body_bytes: usize,
    continuity: Continuity,
}

/// An MPEG-TS session read on a thread of its own: an HTTP GET of a point, or a raw TCP
/// connection to a port the `tcp` plugin serves.
pub struct TsWatch {
    state: Arc<Mutex<TsState>>,
    stop: Arc<AtomicBool>,
    pub label: String,
    pub started: Instant,
}

impl TsWatch {
    /// `GET path` over HTTP/1.1 on a raw connection; the response head is kept apart.
    pub fn http(address: SocketAddr, path: &str) -> Self {
        let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("connect to {address} for GET {path}: {e}"));
        stream
            .write_all(format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").as_bytes())
            .expect("send GET");
        Self::run(stream, true, format!("HTTP {path} via {address}"))
    }

    /// A plain TCP connection: the server sends raw MPEG-TS at once.
    pub fn tcp(address: SocketAddr) -> Self {
        let stream = TcpStream::connect_timeout(&address, Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("connect to {address} for raw TS: {e}"));
        Self::run(stream, false, format!("raw TS via {address}"))
    }

    fn run(mut stream: TcpStream, http: bool, label: String) -> Self {
        let state = Arc::new(Mutex::new(TsState::default()));
        let stop = Arc::new(AtomicBool::new(false));
        stream.set_read_timeout(Some(POLL)).expect("read timeout");
        let (sink, stopped) = (Arc::clone(&state), Arc::clone(&stop));
        let started = Instant::now();
        std::thread::spawn(move || {
            let deadline = started + WATCH_LIMIT;
            let mut buf = vec![0u8; 64 * 1024];
            let mut in_head = http;
            while !stopped.load(Ordering::Relaxed) && Instant::now() < deadline {
                let n = match stream.read(&mut buf) {
                    Ok(0) => {
                        lock(&sink).timeline.closed = Some(Instant::now());
                        break;
                    }
                    Ok(n) => n,
                    Err(e) if is_timeout(&e) => continue,
                    Err(_) => {
                        lock(&sink).timeline.closed = Some(Instant::now());
                        break;
                    }
                };
                let now = Instant::now();
                let mut state = lock(&sink);
                let after_head;
                let data = if in_head {
                    state.head_buffer.extend_from_slice(&buf[..n]);
                    let Some(end) = state.head_buffer.windows(4).position(|w| w == b"\r\n\r\n")
                    else {
                        continue;
                    };
                    in_head = false;
                    let head_buffer = std::mem::take(&mut state.head_buffer);
                    state.head = Some(String::from_utf8_lossy(&head_buffer[..end + 4]).into());
                    after_head = head_buffer[end + 4..].to_vec();
                    &after_head[..]
                } else {
                    &buf[..n]
                };
                if data.is_empty() {
                    continue;
                }
                state.timeline.arrivals.push((now, data.len()));
                state.body_bytes += data.len();
                state.continuity.feed(data);
                if state.body.len() + data.len() <= KEEP_BYTES {
                    state.body.extend_from_slice(data);
                }
            }
            lock(&sink).timeline.finished = Some(Instant::now());
        });
        Self {
            state,
            stop,
            label,
            started,
        }
    }

    /// The HTTP status, once the response head arrived.
    pub fn status(&self) -> Option<u16> {
        lock(&self.state)
            .head
            .as_deref()
            .and_then(|head| head.split_whitespace().nth(1))
            .and_then(|code| code.parse().ok())
    }

    /// The HTTP response head, once it arrived.
    pub fn head(&self) -> Option<String> {
        lock(&self.state).head.clone()
    }

    /// Continuity problems in the received transport stream.
    pub fn continuity_errors(&self) -> Vec<String> {
        lock(&self.state).continuity.errors().to_vec()
    }

    /// Transport stream bytes received (the HTTP head not counted).
    pub fn bytes(&self) -> usize {
        lock(&self.state).body_bytes
    }

    /// The transport stream received so far (the first 64 MiB).
    pub fn body(&self) -> Vec<u8> {
        lock(&self.state).body.clone()
    }

    /// Bytes received in reads at or after `since`.
    pub fn received_after(&self, since: Instant) -> usize {
        lock(&self.state).timeline.after(since)
    }

    /// The longest time without data from just before `since` until now (or the end).
    pub fn longest_gap_since(&self, since: Instant) -> Duration {
        lock(&self.state).timeline.longest_gap_since(since)
    }

    /// Has the server closed the connection?
    pub fn ended(&self) -> bool {
        self.ended_at().is_some()
    }

    /// When the server closed the connection, if it has.
    pub fn ended_at(&self) -> Option<Instant> {
        lock(&self.state).timeline.closed
    }

    /// Wait up to `timeout` for the server to close the connection.
    pub fn wait_end(&self, timeout: Duration) -> bool {
        wait_until(timeout, || self.ended())
    }

    /// Wait up to `timeout` until at least `bytes` of transport stream arrived.
    pub fn wait_bytes(&self, bytes: usize, timeout: Duration) -> bool {
        wait_until(timeout, || self.bytes() >= bytes)
    }

    /// Stop reading (the connection is closed when the thread notices).
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl Drop for TsWatch {
    fn drop(&mut self) {
        self.stop();
    }
}

// ---- RTSP with RTP over UDP or TCP interleaved ----------------------------------------------

#[derive(Default)]
struct RtpState {
    timeline: Timeline,
    /// Sequence numbers of the RTP packets, in arrival order.
    sequence: Vec<u16>,
    payload: Vec<u8>,
    continuity: Continuity,
    rtcp_packets: usize,
    bye: Option<Instant>,
}

impl RtpState {
    fn rtp(&mut self, packet: &[u8]) {
        let Some(payload) = rtp_payload(packet) else {
            return;
        };
        self.timeline.arrivals.push((Instant::now(), 1));
        self.sequence
            .push(u16::from_be_bytes([packet[2], packet[3]]));
        self.continuity.feed(payload);
        if self.payload.len() + payload.len() <= KEEP_BYTES {
            self.payload.extend_from_slice(payload);
        }
    }

    fn rtcp(&mut self, packet: &[u8]) {
        self.rtcp_packets += 1;
        if rtcp_has_bye(packet) && self.bye.is_none() {
            self.bye = Some(Instant::now());
        }
    }
}

/// The payload of an RTP packet (version 2; CSRCs, extension and padding skipped).
fn rtp_payload(packet: &[u8]) -> Option<&[u8]> {
    if packet.len() < 12 || packet[0] >> 6 != 2 {
        return None;
    }
    let mut start = 12 + 4 * usize::from(packet[0] & 0x0f);
    if packet[0] & 0x10 != 0 {
        let words = packet.get(start + 2..start + 4)?;
        start += 4 + 4 * usize::from(u16::from_be_bytes([words[0], words[1]]));
    }
    let mut end = packet.len();
    if packet[0] & 0x20 != 0 {
        end = end.checked_sub(usize::from(*packet.last()?))?;
    }
    packet.get(start..end)
}

/// Does this (compound) RTCP packet hold a BYE (packet type 203)?
pub fn rtcp_has_bye(mut packet: &[u8]) -> bool {
    while packet.len() >= 4 {
        if packet[1] == 203 {
            return true;
        }
        let length = 4 * (usize::from(u16::from_be_bytes([packet[2], packet[3]])) + 1);
        if length > packet.len() {
            return false;
        }
        packet = &packet[length..];
    }
    false
}

/// An RTSP exchange that failed: the status the server answered (0 if it answered nothing
/// usable) and what it said.
#[derive(Debug)]
pub struct RtspRefusal {
    pub method: String,
    pub status: u16,
    pub response: String,
}

/// One RTSP control connection during setup.
struct Control {
    stream: TcpStream,
    buffered: Vec<u8>,
    cseq: u32,
    session: Option<String>,
}

impl Control {
    fn connect(address: SocketAddr) -> Result<Self, RtspRefusal> {
        let stream = TcpStream::connect_timeout(&address, Duration::from_secs(5)).map_err(|e| {
            RtspRefusal {
                method: "connect".into(),
                status: 0,
                response: e.to_string(),
            }
        })?;
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("read timeout");
        Ok(Self {
            stream,
            buffered: Vec::new(),
            cseq: 0,
            session: None,
        })
    }

    /// Send a request and read its response; interleaved frames that arrive first go to
    /// `state`.
    fn request(
        &mut self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        state: &Mutex<RtpState>,
    ) -> Result<String, RtspRefusal> {
        self.cseq += 1;
        let mut text = format!(
            "{method} {url} RTSP/1.0\r\nCSeq: {}\r\nUser-Agent: ferrocast-tests watch\r\n",
            self.cseq
        );
        if let Some(session) = &self.session {
            text.push_str(&format!("Session: {session}\r\n"));
        }
        for (name, value) in headers {
            text.push_str(&format!("{name}: {value}\r\n"));
        }
        text.push_str("\r\n");
        let failed = |status: u16, response: String| RtspRefusal {
            method: method.to_owned(),
            status,
            response,
        };
        self.stream
            .write_all(text.as_bytes())
            .map_err(|e| failed(0, e.to_string()))?;
        let deadline = Instant::now() + Duration::from_secs(10);
        let response = loop {
            take_frames(&mut self.buffered, &mut lock(state));
            if let Some(response) = take_response(&mut self.buffered) {
                break response;
            }
            if Instant::now() > deadline {
                return Err(failed(0, "no response within 10 s".into()));
            }
            let mut buf = [0u8; 65536];
            match self.stream.read(&mut buf) {
                Ok(0) => return Err(failed(0, "connection closed".into())),
                Ok(n) => self.buffered.extend_from_slice(&buf[..n]),
                Err(e) if is_timeout(&e) => {}
                Err(e) => return Err(failed(0, e.to_string())),
            }
        };
        let status = response
            .split_whitespace()
            .nth(1)
            .and_then(|code| code.parse().ok())
            .unwrap_or(0);
        if status != 200 {
            return Err(failed(status, response));
        }
        if let Some(session) = header(&response, "session") {
            self.session = Some(session.split(';').next().unwrap_or("").trim().to_owned());
        }
        Ok(response)
    }
}

fn header(response: &str, name: &str) -> Option<String> {
    response.lines().skip(1).find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.trim()
            .eq_ignore_ascii_case(name)
            .then(|| value.trim().to_owned())
    })
}

/// Take one complete RTSP message (head and body) from the front of `buffered`.
fn take_response(buffered: &mut Vec<u8>) -> Option<String> {
    if buffered.first() == Some(&b'$') {
        return None;
    }
    let end = buffered.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&buffered[..end]).into_owned();
    let length = header(&head, "content-length")
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(0);
    if buffered.len() < end + length {
        return None;
    }
    let message = String::from_utf8_lossy(&buffered[..end + length]).into_owned();
    buffered.drain(..end + length);
    Some(message)
}

/// Consume the complete interleaved frames at the front of `buffered` (channel 0 RTP,
/// channel 1 RTCP).
fn take_frames(buffered: &mut Vec<u8>, state: &mut RtpState) {
    while buffered.len() >= 4 && buffered[0] == b'$' {
        let length = usize::from(u16::from_be_bytes([buffered[2], buffered[3]]));
        if buffered.len() < 4 + length {
            return;
        }
        let channel = buffered[1];
        let frame: Vec<u8> = buffered.drain(..4 + length).skip(4).collect();
        match channel {
            0 => state.rtp(&frame),
            1 => state.rtcp(&frame),
            _ => {}
        }
    }
}

/// An RTSP session playing a point, with its RTP read on threads of its own.
pub struct RtpWatch {
    state: Arc<Mutex<RtpState>>,
    stop: Arc<AtomicBool>,
    pub label: String,
    pub session: String,
    pub started: Instant,
}

impl RtpWatch {
    /// DESCRIBE, SETUP with `RTP/AVP/TCP;unicast;interleaved=0-1` and PLAY on one connection;
    /// panics if the server refuses.
    pub fn rtsp_tcp(address: SocketAddr, path: &str) -> Self {
        Self::try_rtsp_tcp(address, path)
            .unwrap_or_else(|refusal| panic!("RTSP/TCP of {path}: {refusal:?}"))
    }

    /// DESCRIBE, SETUP with `RTP/AVP;unicast;client_port=p-(p+1)` on a fresh loopback port
    /// pair, and PLAY; panics if the server refuses.
    pub fn rtsp_udp(address: SocketAddr, path: &str) -> Self {
        Self::try_rtsp_udp(address, path)
            .unwrap_or_else(|refusal| panic!("RTSP/UDP of {path}: {refusal:?}"))
    }

    pub fn try_rtsp_tcp(address: SocketAddr, path: &str) -> Result<Self, RtspRefusal> {
        let state = Arc::new(Mutex::new(RtpState::default()));
        let mut control = Control::connect(address)?;
        let session = setup_and_play(
            &mut control,
            address,
            path,
            "RTP/AVP/TCP;unicast;interleaved=0-1",
            &state,
        )?;
        let stop = Arc::new(AtomicBool::new(false));
        let Control {
            mut stream,
            mut buffered,
            ..
        } = control;
        stream.set_read_timeout(Some(POLL)).expect("read timeout");
        let (sink, stopped) = (Arc::clone(&state), Arc::clone(&stop));
        let started = Instant::now();
        std::thread::spawn(move || {
            let deadline = started + WATCH_LIMIT;
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                {
                    let mut state = lock(&sink);
                    loop {
                        take_frames(&mut buffered, &mut state);
                        // Anything else on the connection is an RTSP message (or junk).
                        if buffered.is_empty() || buffered[0] == b'$' {
                            break;
                        }
                        if buffered.starts_with(b"RTSP/") {
                            if take_response(&mut buffered).is_none() {
                                break;
                            }
                        } else if b"RTSP/".starts_with(&buffered) {
                            break; // the start of a message; wait for the rest
                        } else {
                            buffered.remove(0);
                        }
                    }
                }
                if stopped.load(Ordering::Relaxed) || Instant::now() >= deadline {
                    break;
                }
                match stream.read(&mut buf) {
                    Ok(0) => {
                        lock(&sink).timeline.closed = Some(Instant::now());
                        break;
                    }
                    Ok(n) => buffered.extend_from_slice(&buf[..n]),
                    Err(e) if is_timeout(&e) => {}
                    Err(_) => {
                        lock(&sink).timeline.closed = Some(Instant::now());
                        break;
                    }
                }
            }
            lock(&sink).timeline.finished = Some(Instant::now());
        });
        Ok(Self {
            state,
            stop,
            label: format!("RTSP/TCP {path} via {address}"),
            session,
            started,
        })
    }

    pub fn try_rtsp_udp(address: SocketAddr, path: &str) -> Result<Self, RtspRefusal> {
        let state = Arc::new(Mutex::new(RtpState::default()));
        let (rtp, rtcp) = udp_pair();
        let port = rtp.local_addr().expect("local address").port();
        let mut control = Control::connect(address)?;
        let transport = format!("RTP/AVP;unicast;client_port={port}-{}", port + 1);
        let session = setup_and_play(&mut control, address, path, &transport, &state)?;
        let stop = Arc::new(AtomicBool::new(false));
        let started = Instant::now();
        let deadline = started + WATCH_LIMIT;
        let running = Arc::new(Mutex::new(3usize));
        let finish = |sink: &Arc<Mutex<RtpState>>, running: &Arc<Mutex<usize>>| {
            let mut left = lock(running);
            *left -= 1;
            if *left == 0 {
                lock(sink).timeline.finished = Some(Instant::now());
            }
        };
        for (socket, is_rtp) in [(rtp, true), (rtcp, false)] {
            let (sink, stopped, running) =
                (Arc::clone(&state), Arc::clone(&stop), Arc::clone(&running));
            socket.set_read_timeout(Some(POLL)).expect("read timeout");
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 65536];
                while !stopped.load(Ordering::Relaxed) && Instant::now() < deadline {
                    match socket.recv(&mut buf) {
                        Ok(n) if is_rtp => lock(&sink).rtp(&buf[..n]),
                        Ok(n) => lock(&sink).rtcp(&buf[..n]),
                        Err(_) => {}
                    }
                }
                finish(&sink, &running);
            });
        }
        // The control connection: the server closing it ends the session.
        let (sink, stopped) = (Arc::clone(&state), Arc::clone(&stop));
        let Control { mut stream, .. } = control;
        stream.set_read_timeout(Some(POLL)).expect("read timeout");
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while !stopped.load(Ordering::Relaxed) && Instant::now() < deadline {
                match stream.read(&mut buf) {
                    Ok(0) => {
                        lock(&sink).timeline.closed = Some(Instant::now());
                        break;
                    }
                    Ok(_) => {}
                    Err(e) if is_timeout(&e) => {}
                    Err(_) => {
                        lock(&sink).timeline.closed = Some(Instant::now());
                        break;
                    }
                }
            }
            finish(&sink, &running);
        });
        Ok(Self {
            state,
            stop,
            label: format!("RTSP/UDP {path} via {address} (client port {port})"),
            session,
            started,
        })
    }

    /// Places where the RTP sequence number did not go up by exactly one: (expected, got).
    pub fn seq_gaps(&self) -> Vec<(u16, u16)> {
        lock(&self.state)
            .sequence
            .windows(2)
            .filter(|w| w[1] != w[0].wrapping_add(1))
            .map(|w| (w[0].wrapping_add(1), w[1]))
            .collect()
    }

    /// RTP packets received.
    pub fn packets(&self) -> usize {
        lock(&self.state).sequence.len()
    }

    /// RTP packets received at or after `since`.
    pub fn packets_after(&self, since: Instant) -> usize {
        lock(&self.state).timeline.count_after(since)
    }

    /// RTCP packets received (sender reports, BYE).
    pub fn rtcp_packets(&self) -> usize {
        lock(&self.state).rtcp_packets
    }

    /// Continuity problems in the transport stream carried by the RTP packets.
    pub fn continuity_errors(&self) -> Vec<String> {
        lock(&self.state).continuity.errors().to_vec()
    }

    /// The transport stream carried by the RTP packets (the first 64 MiB).
    pub fn transport_stream(&self) -> Vec<u8> {
        lock(&self.state).payload.clone()
    }

    /// The longest time without an RTP packet from just before `since` until now (or the
    /// end).
    pub fn longest_gap_since(&self, since: Instant) -> Duration {
        lock(&self.state).timeline.longest_gap_since(since)
    }

    /// Did an RTCP BYE arrive?
    pub fn got_bye(&self) -> bool {
        lock(&self.state).bye.is_some()
    }

    /// Did the server close the RTSP connection?
    pub fn closed(&self) -> bool {
        lock(&self.state).timeline.closed.is_some()
    }

    /// Has the server ended the session (a BYE, or the RTSP connection closed)?
    pub fn ended(&self) -> bool {
        let state = lock(&self.state);
        state.bye.is_some() || state.timeline.closed.is_some()
    }

    /// Wait up to `timeout` for the server to end the session.
    pub fn wait_end(&self, timeout: Duration) -> bool {
        wait_until(timeout, || self.ended())
    }

    /// Wait up to `timeout` for the server to close the RTSP connection.
    pub fn wait_closed(&self, timeout: Duration) -> bool {
        wait_until(timeout, || self.closed())
    }

    /// Wait up to `timeout` for both the BYE and the connection close.
    pub fn wait_bye_and_close(&self, timeout: Duration) -> bool {
        wait_until(timeout, || self.got_bye() && self.closed())
    }

    /// Wait up to `timeout` until at least `packets` RTP packets arrived.
    pub fn wait_packets(&self, packets: usize, timeout: Duration) -> bool {
        wait_until(timeout, || self.packets() >= packets)
    }

    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl Drop for RtpWatch {
    fn drop(&mut self) {
        self.stop();
    }
}

/// OPTIONS, DESCRIBE, SETUP of the SDP's track with `transport`, and PLAY. Returns the
/// session id.
fn setup_and_play(
    control: &mut Control,
    address: SocketAddr,
    path: &str,
    transport: &str,
    state: &Mutex<RtpState>,
) -> Result<String, RtspRefusal> {
    let url = format!("rtsp://{address}/{}", path.trim_start_matches('/'));
    control.request("OPTIONS", &url, &[], state)?;
    let described = control.request("DESCRIBE", &url, &[("Accept", "application/sdp")], state)?;
    let body = described
        .split_once("\r\n\r\n")
        .map_or("", |(_, body)| body);
    let base = header(&described, "content-base").unwrap_or_else(|| format!("{url}/"));
    // The media's control attribute (the session-level one is `*`).
    let track = body
        .lines()
        .filter_map(|line| line.trim().strip_prefix("a=control:"))
        .find(|control| *control != "*")
        .unwrap_or("trackID=0")
        .to_owned();
    let track_url = if track.starts_with("rtsp://") {
        track
    } else {
        format!("{}/{track}", base.trim_end_matches('/'))
    };
    control.request("SETUP", &track_url, &[("Transport", transport)], state)?;
    let session = control.session.clone().unwrap_or_default();
    control.request("PLAY", &format!("{url}/"), &[("Range", "npt=0-")], state)?;
    Ok(session)
}

/// Two UDP sockets on loopback, on an even port and the next one.
fn udp_pair() -> (UdpSocket, UdpSocket) {
    for _ in 0..200 {
        let rtp = UdpSocket::bind("127.0.0.1:0").expect("bind UDP");
        let port = rtp.local_addr().expect("local address").port();
        if port & 1 == 1 || port == u16::MAX {
            continue;
        }
        if let Ok(rtcp) = UdpSocket::bind(("127.0.0.1", port + 1)) {
            return (rtp, rtcp);
        }
    }
    panic!("no free even/odd UDP port pair on loopback");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A TS packet of `pid` with counter `cc`, a payload, and optionally the discontinuity
    /// indicator.
    fn packet(pid: u16, cc: u8, discontinuity: bool) -> Vec<u8> {
        let mut p = vec![0xffu8; TS_PACKET];
        p[0] = 0x47;
        p[1] = (pid >> 8) as u8 & 0x1f;
        p[2] = pid as u8;
        if discontinuity {
            p[3] = 0x30 | (cc & 0x0f);
            p[4] = 1;
            p[5] = 0x80;
        } else {
            p[3] = 0x10 | (cc & 0x0f);
        }
        p[6] = cc; // payload differs from packet to packet
        p
    }

    fn stream(packets: &[Vec<u8>]) -> Vec<u8> {
        packets.concat()
    }

    fn check(data: &[u8], piece: usize) -> Vec<String> {
        let mut checker = Continuity::new();
        for chunk in data.chunks(piece) {
            checker.feed(chunk);
        }
        checker.errors().to_vec()
    }

    #[test]
    fn a_clean_stream_has_no_errors_however_it_is_split() {
        let packets: Vec<Vec<u8>> = (0..40u8)
            .flat_map(|i| [packet(0x100, i, false), packet(0x101, i % 16, false)])
            .collect();
        let data = stream(&packets);
        for piece in [1, 7, 100, 188, 1000, data.len()] {
            assert_eq!(
                check(&data, piece),
                Vec::<String>::new(),
                "pieces of {piece}"
            );
        }
    }

    #[test]
    fn a_dropped_packet_is_an_error() {
        let data = stream(&[
            packet(0x100, 3, false),
            packet(0x100, 4, false),
            packet(0x100, 6, false),
            packet(0x100, 7, false),
        ]);
        let errors = check(&data, 50);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].contains("0x0100"), "{errors:?}");
        assert!(errors[0].contains("1 packet(s) missing"), "{errors:?}");
    }

    #[test]
    fn one_exact_duplicate_is_allowed_two_are_not() {
        let one = stream(&[
            packet(0x100, 3, false),
            packet(0x100, 3, false),
            packet(0x100, 4, false),
        ]);
        assert!(check(&one, 188).is_empty());
        let two = stream(&[
            packet(0x100, 3, false),
            packet(0x100, 3, false),
            packet(0x100, 3, false),
        ]);
        assert_eq!(check(&two, 188).len(), 1);
        let mut different = packet(0x100, 3, false);
        different[100] = 0;
        let not_exact = stream(&[packet(0x100, 3, false), different]);
        assert_eq!(check(&not_exact, 188).len(), 1);
    }

    #[test]
    fn the_discontinuity_indicator_resets_the_counter() {
        let data = stream(&[
            packet(0x100, 3, false),
            packet(0x100, 9, true),
            packet(0x100, 10, false),
        ]);
        assert!(check(&data, 188).is_empty());
    }

    #[test]
    fn null_packets_and_packets_without_payload_do_not_count() {
        let mut adaptation_only = packet(0x100, 4, false);
        adaptation_only[3] = 0x20 | 4; // adaptation field only: the counter does not advance
        adaptation_only[4] = 183;
        adaptation_only[5] = 0;
        let data = stream(&[
            packet(0x100, 4, false),
            packet(NULL_PID, 0, false),
            packet(NULL_PID, 9, false),
            adaptation_only,
            packet(0x100, 5, false),
        ]);
        assert!(check(&data, 188).is_empty());
    }

    #[test]
    fn lost_sync_is_reported_and_recovered() {
        let mut data = stream(&[packet(0x100, 0, false), packet(0x100, 1, false)]);
        data.extend_from_slice(&[1, 2, 3]);
        data.extend(stream(&[packet(0x100, 2, false), packet(0x100, 3, false)]));
        let errors = check(&data, 64);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].contains("lost sync"), "{errors:?}");
    }

    #[test]
    fn rtcp_bye_is_found_in_a_compound_packet() {
        // A sender report (28 bytes), then a BYE.
        let mut compound = vec![0x80, 200, 0, 6];
        compound.extend_from_slice(&[0; 24]);
        compound.extend_from_slice(&[0x81, 203, 0, 1, 0, 0, 0, 1]);
        assert!(rtcp_has_bye(&compound));
        assert!(!rtcp_has_bye(&compound[..28]));
    }

    #[test]
    fn rtp_payload_skips_the_header() {
        let mut packet = vec![0x80, 33, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0];
        packet.extend_from_slice(&[0x47; 10]);
        assert_eq!(rtp_payload(&packet), Some(&[0x47u8; 10][..]));
    }
}

//! MPEG-TS as the tests receive it: the tests' one TS reader ([`TsReader`], an HTTP GET of a
//! point or a raw TCP connection, read on a thread of its own within a bounded time), and the
//! continuity check it runs on what arrives ([`Continuity`]).
//!
//! What a reader records answers what the tests and benchmarks ask of a stream: its HTTP
//! status, the bytes (kept for decoding), when each read arrived and so the longest silence,
//! when media (not null packets) arrived after a moment, continuity errors, packets without a
//! sync byte, and whether and why the stream ended.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::head::{head_end, status_code};
use crate::timeline::{is_timeout, lock, wait_until, Timeline};

pub const TS_PACKET: usize = 188;
pub const NULL_PID: u16 = 0x1fff;
/// The longest a reader reads before giving up on its own (unless told otherwise).
pub const READ_LIMIT: Duration = Duration::from_secs(120);
/// How often a reading thread looks at its stop flag and deadline.
const POLL: Duration = Duration::from_millis(200);
/// Received media kept for decoding, per reader (unless told otherwise).
const KEEP_BYTES: usize = 64 * 1024 * 1024;

/// The PID of a TS packet.
pub fn pid(packet: &[u8]) -> u16 {
    (u16::from(packet[1] & 0x1f) << 8) | u16::from(packet[2])
}

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

impl PidState {
    /// A PID whose counting starts afresh at `packet`.
    fn starting(counter: u8, packet: &[u8]) -> Self {
        Self {
            counter,
            last: packet.to_vec(),
            duplicated: false,
        }
    }
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
            self.pids.insert(pid, PidState::starting(counter, packet));
            return;
        }
        if !has_payload {
            return;
        }
        let Some(state) = self.pids.get_mut(&pid) else {
            self.pids.insert(pid, PidState::starting(counter, packet));
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

// ---- the reader -------------------------------------------------------------------------

/// What a [`TsReader`] does besides recording arrivals.
#[derive(Clone, Copy, Debug)]
pub struct ReadOptions {
    /// Keep the received transport stream for decoding, up to this many bytes.
    pub keep_bytes: usize,
    /// Check continuity counters (a per-packet cost a benchmark with hundreds of readers
    /// does without).
    pub continuity: bool,
    /// Stop reading at this instant at the latest.
    pub deadline: Instant,
    /// Stack size of the reading thread, for benchmarks that run hundreds of them.
    pub stack_size: Option<usize>,
}

impl Default for ReadOptions {
    fn default() -> Self {
        Self {
            keep_bytes: KEEP_BYTES,
            continuity: true,
            deadline: Instant::now() + READ_LIMIT,
            stack_size: None,
        }
    }
}

impl ReadOptions {
    /// For many readers at once: timing, sync and media arrivals only, nothing kept, until
    /// `deadline`.
    pub fn lean(deadline: Instant) -> Self {
        Self {
            keep_bytes: 0,
            continuity: false,
            deadline,
            stack_size: Some(128 * 1024),
        }
    }
}

#[derive(Default)]
struct TsState {
    timeline: Timeline,
    /// When reads that completed a media packet (a synced packet not of the null PID)
    /// arrived, in order.
    media: Vec<Instant>,
    head: Option<String>,
    body: Vec<u8>,
    body_bytes: usize,
    sync_errors: usize,
    continuity: Continuity,
    /// Why reading ended, unless it was told to stop.
    end: Option<String>,
}

/// What the reading thread carries besides the socket.
struct Reading {
    state: Arc<Mutex<TsState>>,
    stop: Arc<AtomicBool>,
    options: ReadOptions,
    /// Still reading the HTTP response head.
    in_head: bool,
    /// Bytes of the head until it is complete, then of a packet not yet complete.
    pending: Vec<u8>,
}

/// An MPEG-TS stream read on a thread of its own until the server ends it, the reader is
/// stopped or dropped, or its deadline passes: an HTTP GET of a point, or a raw TCP
/// connection to a port the `tcp` plugin serves.
pub struct TsReader {
    state: Arc<Mutex<TsState>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    pub label: String,
    pub started: Instant,
}

impl TsReader {
    /// `GET path` over HTTP/1.1 on a raw connection; the response head is kept apart.
    pub fn http(address: SocketAddr, path: &str) -> Self {
        Self::http_with(address, path, ReadOptions::default())
    }

    /// A plain TCP connection: the server sends raw MPEG-TS at once.
    pub fn tcp(address: SocketAddr) -> Self {
        Self::tcp_with(address, ReadOptions::default())
    }

    pub fn http_with(address: SocketAddr, path: &str, options: ReadOptions) -> Self {
        let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("connect to {address} for GET {path}: {e}"));
        stream
            .write_all(format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").as_bytes())
            .expect("send GET");
        Self::run(stream, true, format!("HTTP {path} via {address}"), options)
    }

    pub fn tcp_with(address: SocketAddr, options: ReadOptions) -> Self {
        let stream = TcpStream::connect_timeout(&address, Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("connect to {address} for raw TS: {e}"));
        Self::run(stream, false, format!("raw TS via {address}"), options)
    }

    fn run(mut stream: TcpStream, http: bool, label: String, options: ReadOptions) -> Self {
        let state = Arc::new(Mutex::new(TsState::default()));
        let stop = Arc::new(AtomicBool::new(false));
        stream.set_read_timeout(Some(POLL)).expect("read timeout");
        let mut reading = Reading {
            state: Arc::clone(&state),
            stop: Arc::clone(&stop),
            options,
            in_head: http,
            pending: Vec::new(),
        };
        let mut builder = std::thread::Builder::new();
        if let Some(size) = options.stack_size {
            builder = builder.stack_size(size);
        }
        let thread = builder
            .spawn(move || reading.read_all(&mut stream))
            .expect("start a reading thread");
        Self {
            state,
            stop,
            thread: Some(thread),
            label,
            started: Instant::now(),
        }
    }

    /// The HTTP status, once the response head arrived.
    pub fn status(&self) -> Option<u16> {
        lock(&self.state).head.as_deref().map(status_code)
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

    /// The transport stream received so far (up to what the options keep).
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

    /// The longest time between two reads that overlap `from..to` (all of it if none did).
    pub fn longest_gap_overlapping(&self, from: Instant, to: Instant) -> Duration {
        lock(&self.state).timeline.longest_gap_overlapping(from, to)
    }

    /// When the first read at or after `since` that completed a media packet (not a null
    /// packet) arrived.
    pub fn first_media_after(&self, since: Instant) -> Option<Instant> {
        let state = lock(&self.state);
        let index = state.media.partition_point(|at| *at < since);
        state.media.get(index).copied()
    }

    /// Wait up to `timeout` for the first media packet that arrived at or after `since`.
    pub fn wait_media_after(&self, since: Instant, timeout: Duration) -> Option<Instant> {
        let mut found = None;
        wait_until(timeout, || {
            found = self.first_media_after(since);
            found.is_some()
        });
        found
    }

    /// Packets that did not start with the sync byte.
    pub fn sync_errors(&self) -> usize {
        lock(&self.state).sync_errors
    }

    /// Has the server closed the connection (or did reading it fail)?
    pub fn ended(&self) -> bool {
        self.ended_at().is_some()
    }

    /// When the server closed the connection (or reading it failed), if it has.
    pub fn ended_at(&self) -> Option<Instant> {
        lock(&self.state).timeline.closed
    }

    /// Why reading ended (the server closed, a read failed, the deadline passed), unless it
    /// was stopped or is still going on.
    pub fn end_reason(&self) -> Option<String> {
        lock(&self.state).end.clone()
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

    /// Stop every reader at once, then wait for their threads within one bound (reads time
    /// out every 200 ms, so they finish promptly).
    pub fn stop_all(readers: Vec<TsReader>, within: Duration) {
        for reader in &readers {
            reader.stop();
        }
        let deadline = Instant::now() + within;
        for mut reader in readers {
            let Some(thread) = reader.thread.take() else {
                continue;
            };
            while !thread.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(2));
            }
            if thread.is_finished() {
                let _ = thread.join();
            }
        }
    }
}

impl Drop for TsReader {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Reading {
    /// Read until stopped, the deadline, or the end of the stream.
    fn read_all(&mut self, stream: &mut TcpStream) {
        let mut buf = vec![0u8; 64 * 1024];
        let end = loop {
            if self.stop.load(Ordering::Relaxed) {
                break None;
            }
            if Instant::now() >= self.options.deadline {
                break Some("the deadline passed".to_owned());
            }
            match stream.read(&mut buf) {
                Ok(0) => break Some(self.closed("the server closed the connection")),
                Ok(n) => self.received(&buf[..n]),
                Err(e) if is_timeout(&e) => {}
                Err(e) => break Some(self.closed(&e.to_string())),
            }
        };
        let mut state = lock(&self.state);
        state.end = end;
        state.timeline.finished = Some(Instant::now());
    }

    fn closed(&self, why: &str) -> String {
        lock(&self.state).timeline.closed = Some(Instant::now());
        why.to_owned()
    }

    /// Record one read: the head until it is complete, then transport stream.
    fn received(&mut self, data: &[u8]) {
        // Packets completed by this read arrived now.
        let now = Instant::now();
        if !self.in_head {
            return self.transport_stream(data, now);
        }
        self.pending.extend_from_slice(data);
        let Some(end) = head_end(&self.pending) else {
            return;
        };
        self.in_head = false;
        lock(&self.state).head = Some(String::from_utf8_lossy(&self.pending[..end]).into());
        let after_head = self.pending.split_off(end);
        self.pending.clear();
        self.transport_stream(&after_head, now);
    }

    /// Record transport stream bytes that arrived at `now`.
    fn transport_stream(&mut self, data: &[u8], now: Instant) {
        if data.is_empty() {
            return;
        }
        self.pending.extend_from_slice(data);
        let whole = self.pending.len() / TS_PACKET * TS_PACKET;
        let (mut unsynced, mut media) = (0, false);
        for packet in self.pending[..whole].chunks_exact(TS_PACKET) {
            if packet[0] != 0x47 {
                unsynced += 1;
            } else if pid(packet) != NULL_PID {
                media = true;
            }
        }
        self.pending.drain(..whole);
        let mut state = lock(&self.state);
        state.timeline.arrivals.push((now, data.len()));
        state.body_bytes += data.len();
        state.sync_errors += unsynced;
        if media {
            state.media.push(now);
        }
        if self.options.continuity {
            state.continuity.feed(data);
        }
        if state.body.len() + data.len() <= self.options.keep_bytes {
            state.body.extend_from_slice(data);
        }
    }
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

    /// A reading thread's bookkeeping, fed by hand.
    fn reading(http: bool, keep_bytes: usize) -> Reading {
        Reading {
            state: Arc::new(Mutex::new(TsState::default())),
            stop: Arc::new(AtomicBool::new(false)),
            options: ReadOptions {
                keep_bytes,
                ..ReadOptions::default()
            },
            in_head: http,
            pending: Vec::new(),
        }
    }

    #[test]
    fn the_head_is_kept_apart_and_packets_are_counted_however_reads_split_them() {
        let head = b"HTTP/1.1 200 OK\r\nContent-Type: video/mp2t\r\n\r\n".to_vec();
        let mut unsynced = packet(0x100, 2, false);
        unsynced[0] = 0;
        let body = stream(&[
            packet(NULL_PID, 0, false),
            packet(0x100, 1, false),
            unsynced,
        ]);
        let data = [head.clone(), body.clone()].concat();
        for piece in [1, 5, 40, 188, data.len()] {
            let mut reading = reading(true, usize::MAX);
            for chunk in data.chunks(piece) {
                reading.received(chunk);
            }
            let state = lock(&reading.state);
            assert_eq!(
                state.head.as_deref().map(status_code),
                Some(200),
                "pieces of {piece}"
            );
            assert_eq!(state.body, body, "pieces of {piece}");
            assert_eq!(state.body_bytes, body.len(), "pieces of {piece}");
            assert_eq!(state.sync_errors, 1, "pieces of {piece}");
            assert!(!state.media.is_empty(), "pieces of {piece}");
        }
    }

    #[test]
    fn null_packets_are_not_media_and_the_kept_body_is_bounded() {
        let mut reading = reading(false, TS_PACKET);
        reading.received(&stream(&[packet(NULL_PID, 0, false)]));
        assert!(lock(&reading.state).media.is_empty());
        let since = Instant::now();
        reading.received(&packet(0x100, 0, false));
        let state = lock(&reading.state);
        assert_eq!(state.media.len(), 1);
        assert!(state.media[0] >= since);
        assert_eq!(state.body.len(), TS_PACKET, "only what the options keep");
        assert_eq!(state.body_bytes, 2 * TS_PACKET);
    }
}

//! RTSP session watchers for tests that change the server under running sessions: each one
//! holds a real RTSP session (RTP over UDP or TCP interleaved), set up with the tests'
//! [`RtspClient`], and reads it on threads of its own, recording what arrived and when, until
//! the server ends the session, the watcher is dropped, or [`WATCH_LIMIT`] passes. (MPEG-TS
//! sessions over HTTP and raw TCP are watched by [`crate::ts::TsReader`].)
//!
//! What they record answers the questions a reload test asks: did this session see a gap
//! (RTP sequence numbers, MPEG-TS continuity counters, time between packets), is it still
//! receiving, and did the server end it, and how (connection closed, RTCP BYE).

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use crate::rtsp::RtspRefusal;
use crate::rtsp::{rtcp_has_bye, rtp_payload, FrameSink, RtspClient};
use crate::timeline::{lock, wait_until, Timeline};
use crate::ts::Continuity;

/// The longest a watcher reads before giving up on its own.
pub const WATCH_LIMIT: Duration = Duration::from_secs(120);
/// How often reading threads look at their stop flag.
const POLL: Duration = Duration::from_millis(200);
/// Received media kept for decoding, per watcher.
const KEEP_BYTES: usize = 64 * 1024 * 1024;

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

/// Interleaved channel 0 is RTP, channel 1 RTCP.
impl FrameSink for RtpState {
    fn frame(&mut self, channel: u8, data: &[u8]) {
        match channel {
            0 => self.rtp(data),
            1 => self.rtcp(data),
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
        let mut client = RtspClient::try_connect(address)?;
        let session = client.play_first_track(
            &point_url(address, path),
            "RTP/AVP/TCP;unicast;interleaved=0-1",
            &mut *lock(&state),
        )?;
        let stop = Arc::new(AtomicBool::new(false));
        client.set_poll_interval(POLL);
        let (sink, stopped) = (Arc::clone(&state), Arc::clone(&stop));
        let started = Instant::now();
        std::thread::spawn(move || {
            let deadline = started + WATCH_LIMIT;
            loop {
                client.dispatch(&mut *lock(&sink));
                if stopped.load(Ordering::Relaxed) || Instant::now() >= deadline {
                    break;
                }
                if !matches!(client.read_some(), Ok(true)) {
                    lock(&sink).timeline.closed = Some(Instant::now());
                    break;
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
        let mut client = RtspClient::try_connect(address)?;
        let transport = format!("RTP/AVP;unicast;client_port={port}-{}", port + 1);
        let session =
            client.play_first_track(&point_url(address, path), &transport, &mut *lock(&state))?;
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
        client.set_poll_interval(POLL);
        std::thread::spawn(move || {
            while !stopped.load(Ordering::Relaxed) && Instant::now() < deadline {
                client.dispatch(&mut ());
                if !matches!(client.read_some(), Ok(true)) {
                    lock(&sink).timeline.closed = Some(Instant::now());
                    break;
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

/// The RTSP URL of the point at `path`.
fn point_url(address: SocketAddr, path: &str) -> String {
    format!("rtsp://{address}/{}", path.trim_start_matches('/'))
}

/// Two UDP sockets on loopback, on an even port and the next one.
pub fn udp_pair() -> (UdpSocket, UdpSocket) {
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

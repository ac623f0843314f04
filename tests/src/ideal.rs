//! The ideal fan-out server: the floor a real server is measured against on the same machine.
//! It plays a sample in real time from memory (no ingest, no parsing while serving) and writes
//! each tick's bytes, prepared once, to every client: the same buffer to every HTTP and raw
//! TCP client, one `$`-framed buffer to every interleaved RTSP session, and the same RTP
//! packets to every RTSP/UDP session (one buffer, one `sendmsg` with UDP segmentation offload
//! per 48 packets; one `sendmmsg` of separate datagrams where the kernel refuses that). A joining client gets
//! PAT/PMT and the current GOP from its keyframe first, as a real server's join does.
//!
//! Its RTSP is only what a player's handshake needs (OPTIONS, DESCRIBE, SETUP, PLAY answered
//! with canned responses). It runs in a process of its own so that its CPU time is its own.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::head::{head_end, header};
use crate::load::{payload, pid, video_pes_start};
use crate::paced::TICK;
use crate::ts::TS_PACKET;

/// TS packets per RTP packet (1316 bytes of payload, as servers commonly send).
const TS_PER_RTP: usize = 7;
/// A client whose unsent backlog grows beyond this is dropped.
const BACKLOG_LIMIT: usize = 16 * 1024 * 1024;
const SSRC: u32 = 0x1dea_1000;
/// Most datagrams in one `sendmmsg`.
const MMSG_BATCH: usize = 64;
/// Most RTP packets in one segmented send (under 65,507 bytes of UDP payload).
const GSO_PACKETS: usize = 48;
/// Whether segmented sends still work (the kernel refused none so far).
static GSO_WORKS: AtomicBool = AtomicBool::new(true);

/// The ports the ideal server listens on.
#[derive(Clone, Copy, Debug)]
pub struct IdealPorts {
    pub http: SocketAddr,
    pub rtsp: SocketAddr,
    pub tcp: SocketAddr,
}

/// How a client is reached.
enum Wire {
    /// HTTP (after its response head) and raw TCP: the transport stream as is.
    Stream(TcpStream),
    /// RTSP with RTP interleaved on the control connection.
    Interleaved(TcpStream),
    /// RTSP with RTP over UDP to the client's port; `alive` drops when its control
    /// connection closes.
    Udp(SocketAddr, Arc<AtomicBool>),
}

struct Client {
    wire: Wire,
    backlog: Vec<u8>,
}

/// One tick's bytes in every form a client takes them.
struct Prepared {
    stream: Vec<u8>,
    interleaved: Vec<u8>,
    datagrams: Vec<Vec<u8>>,
    /// The same datagrams back to back, for segmented sends.
    segmented: Vec<u8>,
}

/// Serve `sample` (looped, `per_tick` bytes every [`TICK`]) on `ports`, forever.
pub fn serve(sample: Vec<u8>, per_tick: usize, ports: IdealPorts) -> ! {
    let (joins, joined) = channel();
    let bind = |address| TcpListener::bind(address).expect("bind an ideal server port");
    let (http, rtsp, tcp) = (bind(ports.http), bind(ports.rtsp), bind(ports.tcp));
    accept_with(http, &joins, http_handshake);
    accept_with(rtsp, &joins, rtsp_handshake);
    accept_with(tcp, &joins, |stream, joins| {
        let _ = joins.send(Wire::Stream(stream));
    });
    println!("ideal listening");
    std::io::stdout().flush().ok();
    Player::new(sample, per_tick).run(&joined)
}

fn accept_with(
    listener: TcpListener,
    joins: &Sender<Wire>,
    handshake: fn(TcpStream, &Sender<Wire>),
) {
    let joins = joins.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let joins = joins.clone();
            let _ = stream.set_nodelay(true);
            std::thread::Builder::new()
                .stack_size(128 * 1024)
                .spawn(move || handshake(stream, &joins))
                .expect("start a handshake thread");
        }
    });
}

/// Read one request head (up to 5 s); `None` if the connection ended first.
fn read_head(stream: &mut TcpStream, buffered: &mut Vec<u8>) -> Option<String> {
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut buf = [0u8; 4096];
    loop {
        if let Some(end) = head_end(buffered) {
            let head = String::from_utf8_lossy(&buffered[..end]).into_owned();
            buffered.drain(..end);
            return Some(head);
        }
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return None,
            Ok(n) => buffered.extend_from_slice(&buf[..n]),
        }
    }
}

fn http_handshake(mut stream: TcpStream, joins: &Sender<Wire>) {
    if read_head(&mut stream, &mut Vec::new()).is_none() {
        return;
    }
    let head = "HTTP/1.1 200 OK\r\nContent-Type: video/mp2t\r\nCache-Control: no-cache\r\nConnection: close\r\n\r\n";
    if stream.write_all(head.as_bytes()).is_ok() {
        let _ = joins.send(Wire::Stream(stream));
    }
}

fn rtsp_handshake(mut stream: TcpStream, joins: &Sender<Wire>) {
    let mut buffered = Vec::new();
    let mut udp_to = None;
    while let Some(request) = read_head(&mut stream, &mut buffered) {
        let method = request.split_whitespace().next().unwrap_or("").to_owned();
        let url = request.split_whitespace().nth(1).unwrap_or("").to_owned();
        let cseq = header(&request, "cseq").unwrap_or_default();
        let mut body = String::new();
        let extra = match method.as_str() {
            "DESCRIBE" => {
                body = "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=ideal\r\nt=0 0\r\na=control:*\r\nm=video 0 RTP/AVP 33\r\na=rtpmap:33 MP2T/90000\r\na=control:trackID=0\r\n".into();
                format!(
                    "Content-Base: {}/\r\nContent-Type: application/sdp\r\n",
                    url.trim_end_matches('/')
                )
            }
            "SETUP" => {
                let transport = header(&request, "transport").unwrap_or_default();
                if let Some(port) = client_port(&transport) {
                    let peer = stream.peer_addr().expect("peer address").ip();
                    udp_to = Some(SocketAddr::new(peer, port));
                }
                format!("Session: 1\r\nTransport: {transport}\r\n")
            }
            "PLAY" => "Session: 1\r\n".into(),
            _ => "Public: OPTIONS, DESCRIBE, SETUP, PLAY\r\n".into(),
        };
        let response = format!(
            "RTSP/1.0 200 OK\r\nCSeq: {cseq}\r\n{extra}Content-Length: {}\r\n\r\n{body}",
            body.len()
        );
        if stream.write_all(response.as_bytes()).is_err() {
            return;
        }
        if method == "PLAY" {
            let Some(to) = udp_to else {
                let _ = joins.send(Wire::Interleaved(stream));
                return;
            };
            let alive = Arc::new(AtomicBool::new(true));
            let _ = joins.send(Wire::Udp(to, Arc::clone(&alive)));
            // The session lasts as long as its control connection.
            let _ = stream.set_read_timeout(None);
            let mut sink = [0u8; 1024];
            while matches!(stream.read(&mut sink), Ok(n) if n > 0) {}
            alive.store(false, Ordering::Relaxed);
            return;
        }
    }
}

/// The RTP port of a `Transport` header's `client_port=a-b`.
fn client_port(transport: &str) -> Option<u16> {
    let value = transport
        .split(';')
        .find_map(|p| p.trim().strip_prefix("client_port="))?;
    value.split('-').next()?.parse().ok()
}

/// The sample played in real time, and the clients it goes to.
struct Player {
    sample: Vec<u8>,
    per_tick: usize,
    position: usize,
    /// PAT and PMT, sent first to a joining client.
    psi: Vec<u8>,
    /// Offsets of the sample's keyframes (the packet starting each one's PES).
    keyframes: Vec<usize>,
    clients: Vec<Client>,
    udp: UdpSocket,
    /// The RTP sequence number of the last live packet.
    sequence: u16,
    ticks: u32,
}

impl Player {
    fn new(sample: Vec<u8>, per_tick: usize) -> Self {
        let sample_len = sample.len() / TS_PACKET * TS_PACKET;
        let packets = || sample[..sample_len].chunks_exact(TS_PACKET);
        let pmt = packets().find(|p| pid(p) == 0).and_then(pmt_pid);
        let psi: Vec<u8> = packets()
            .filter(|p| pid(p) == 0 || Some(pid(p)) == pmt)
            .take(2)
            .flatten()
            .copied()
            .collect();
        let keyframes: Vec<usize> = packets()
            .enumerate()
            .filter(|(_, p)| video_pes_start(p) == Some(true))
            .map(|(index, _)| index * TS_PACKET)
            .collect();
        assert!(!keyframes.is_empty(), "the sample has no keyframe");
        let udp = UdpSocket::bind("127.0.0.1:0").expect("bind the ideal server's UDP socket");
        udp.set_nonblocking(true).expect("non-blocking UDP");
        let _ = socket2::SockRef::from(&udp).set_send_buffer_size(4 * 1024 * 1024);
        Self {
            sample: sample[..sample_len].to_vec(),
            per_tick: per_tick / TS_PACKET * TS_PACKET,
            position: 0,
            psi,
            keyframes,
            clients: Vec::new(),
            udp,
            sequence: 0,
            ticks: 0,
        }
    }

    /// Send a tick every [`TICK`]; between ticks, serve each join as it arrives.
    fn run(mut self, joins: &Receiver<Wire>) -> ! {
        let mut next = Instant::now();
        loop {
            let now = Instant::now();
            if now < next {
                match joins.recv_timeout(next - now) {
                    Ok(wire) => self.join(wire),
                    Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => std::thread::sleep(next - now),
                }
                continue;
            }
            let chunk = self.next_chunk();
            let prepared = self.prepare(&chunk);
            self.send(&prepared);
            next = (next + TICK).max(now);
        }
    }

    fn next_chunk(&mut self) -> Vec<u8> {
        let mut chunk = Vec::with_capacity(self.per_tick);
        while chunk.len() < self.per_tick {
            let take = (self.per_tick - chunk.len()).min(self.sample.len() - self.position);
            chunk.extend_from_slice(&self.sample[self.position..self.position + take]);
            self.position = (self.position + take) % self.sample.len();
        }
        self.ticks = self.ticks.wrapping_add(1);
        chunk
    }

    fn prepare(&mut self, chunk: &[u8]) -> Prepared {
        let datagrams = self.live_rtp_packets(chunk);
        Prepared {
            stream: chunk.to_vec(),
            interleaved: interleave(&datagrams),
            segmented: datagrams.concat(),
            datagrams,
        }
    }

    /// A tick's RTP packets, numbered on from the last live packet.
    fn live_rtp_packets(&mut self, ts: &[u8]) -> Vec<Vec<u8>> {
        let packets = rtp_packets(ts, self.sequence.wrapping_add(1), self.timestamp());
        self.sequence = self.sequence.wrapping_add(packets.len() as u16);
        packets
    }

    /// A joining session's first RTP packets, numbered so that they end at the last live
    /// packet: the session's sequence runs on unbroken into the next tick, and the sessions
    /// already playing see no jump, as a real server's join from its history does.
    fn join_rtp_packets(&self, ts: &[u8]) -> Vec<Vec<u8>> {
        let count = ts.len().div_ceil(TS_PACKET * TS_PER_RTP) as u16;
        let first = self.sequence.wrapping_sub(count).wrapping_add(1);
        rtp_packets(ts, first, self.timestamp())
    }

    fn timestamp(&self) -> u32 {
        self.ticks.wrapping_mul(3600)
    }

    /// PAT/PMT and the current GOP up to now, in the client's form, then it takes ticks.
    fn join(&mut self, wire: Wire) {
        let gop_start = self
            .keyframes
            .iter()
            .rev()
            .find(|&&k| k <= self.position)
            .copied()
            .unwrap_or(0);
        let mut first = self.psi.clone();
        first.extend_from_slice(&self.sample[gop_start..self.position]);
        let mut client = Client {
            wire,
            backlog: Vec::new(),
        };
        let alive = match &client.wire {
            Wire::Stream(_) => client.write(&first),
            Wire::Interleaved(_) => {
                let packets = self.join_rtp_packets(&first);
                client.write(&interleave(&packets))
            }
            Wire::Udp(to, _) => {
                let packets = self.join_rtp_packets(&first);
                send_rtp(&self.udp, &packets, &packets.concat(), *to);
                true
            }
        };
        if alive {
            self.clients.push(client);
        }
    }

    fn send(&mut self, prepared: &Prepared) {
        let udp = &self.udp;
        self.clients.retain_mut(|client| match &client.wire {
            Wire::Stream(_) => client.write(&prepared.stream),
            Wire::Interleaved(_) => client.write(&prepared.interleaved),
            Wire::Udp(to, alive) => {
                send_rtp(udp, &prepared.datagrams, &prepared.segmented, *to);
                alive.load(Ordering::Relaxed)
            }
        });
    }
}

impl Client {
    /// Write `bytes` after any backlog without blocking; whether the client stays.
    fn write(&mut self, bytes: &[u8]) -> bool {
        let (Wire::Stream(stream) | Wire::Interleaved(stream)) = &mut self.wire else {
            return true;
        };
        if !self.backlog.is_empty() {
            self.backlog.extend_from_slice(bytes);
            let pending = std::mem::take(&mut self.backlog);
            return write_some(stream, &pending, &mut self.backlog);
        }
        write_some(stream, bytes, &mut self.backlog)
    }
}

/// Write what the socket takes now; keep the rest in `backlog`. Whether the client stays.
fn write_some(stream: &mut TcpStream, bytes: &[u8], backlog: &mut Vec<u8>) -> bool {
    let _ = stream.set_nonblocking(true);
    let mut written = 0;
    while written < bytes.len() {
        match stream.write(&bytes[written..]) {
            Ok(0) => return false,
            Ok(n) => written += n,
            Err(error) if error.kind() == ErrorKind::WouldBlock => break,
            Err(error) if error.kind() == ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
    backlog.extend_from_slice(&bytes[written..]);
    backlog.len() <= BACKLOG_LIMIT
}

/// `ts` in RTP packets of [`TS_PER_RTP`] TS packets, numbered from `first_sequence`.
fn rtp_packets(ts: &[u8], first_sequence: u16, timestamp: u32) -> Vec<Vec<u8>> {
    ts.chunks(TS_PACKET * TS_PER_RTP)
        .zip(0u16..)
        .map(|(payload, index)| {
            let mut packet = Vec::with_capacity(12 + payload.len());
            packet.extend_from_slice(&[0x80, 33]);
            packet.extend_from_slice(&first_sequence.wrapping_add(index).to_be_bytes());
            packet.extend_from_slice(&timestamp.to_be_bytes());
            packet.extend_from_slice(&SSRC.to_be_bytes());
            packet.extend_from_slice(payload);
            packet
        })
        .collect()
}

fn interleave(packets: &[Vec<u8>]) -> Vec<u8> {
    let mut framed = Vec::with_capacity(packets.iter().map(|p| p.len() + 4).sum());
    for packet in packets {
        framed.extend_from_slice(&[b'$', 0]);
        framed.extend_from_slice(&(packet.len() as u16).to_be_bytes());
        framed.extend_from_slice(packet);
    }
    framed
}

/// Send RTP `datagrams` (all of one size but the last, `segmented` holding them back to back)
/// to `to`: segmented sends while the kernel takes them, else [`send_datagrams`].
fn send_rtp(socket: &UdpSocket, datagrams: &[Vec<u8>], segmented: &[u8], to: SocketAddr) {
    let Some(segment) = datagrams.first().map(Vec::len) else {
        return;
    };
    if GSO_WORKS.load(Ordering::Relaxed) {
        let address = socket2::SockAddr::from(to);
        for part in segmented.chunks(segment * GSO_PACKETS) {
            match send_segmented(socket, part, segment, &address) {
                Ok(()) => {}
                Err(error) if error.kind() == ErrorKind::WouldBlock => return,
                Err(_) => {
                    GSO_WORKS.store(false, Ordering::Relaxed);
                    break;
                }
            }
        }
        if GSO_WORKS.load(Ordering::Relaxed) {
            return;
        }
    }
    send_datagrams(socket, datagrams, to);
}

/// One `sendmsg` of `part`, cut by the kernel into datagrams of `segment` bytes.
fn send_segmented(
    socket: &UdpSocket,
    part: &[u8],
    segment: usize,
    address: &socket2::SockAddr,
) -> std::io::Result<()> {
    let mut iovec = libc::iovec {
        iov_base: part.as_ptr() as *mut libc::c_void,
        iov_len: part.len(),
    };
    let mut control = [0u64; 4];
    // SAFETY: an all-zero msghdr is valid; its pointers go to locals that outlive the call,
    // and the control buffer (32 bytes, aligned) holds one cmsghdr with a u16.
    let sent = unsafe {
        let mut header: libc::msghdr = std::mem::zeroed();
        header.msg_name = address.as_ptr() as *mut libc::c_void;
        header.msg_namelen = address.len();
        header.msg_iov = &mut iovec;
        header.msg_iovlen = 1;
        header.msg_control = control.as_mut_ptr() as *mut libc::c_void;
        header.msg_controllen = libc::CMSG_SPACE(2) as _;
        let cmsg = libc::CMSG_FIRSTHDR(&header);
        (*cmsg).cmsg_level = libc::SOL_UDP;
        (*cmsg).cmsg_type = 103; // UDP_SEGMENT
        (*cmsg).cmsg_len = libc::CMSG_LEN(2) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg) as *mut u16, segment as u16);
        libc::sendmsg(socket.as_raw_fd(), &header, libc::MSG_DONTWAIT)
    };
    if sent < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// `sendmmsg` the datagrams to `to`; a full socket buffer drops the rest, as UDP would.
fn send_datagrams(socket: &UdpSocket, datagrams: &[Vec<u8>], to: SocketAddr) {
    let address = socket2::SockAddr::from(to);
    for batch in datagrams.chunks(MMSG_BATCH) {
        let mut iovecs: Vec<libc::iovec> = batch
            .iter()
            .map(|d| libc::iovec {
                iov_base: d.as_ptr() as *mut libc::c_void,
                iov_len: d.len(),
            })
            .collect();
        let mut messages: Vec<libc::mmsghdr> = iovecs
            .iter_mut()
            .map(|iovec| {
                // SAFETY: an all-zero msghdr is valid; the pointers set below outlive the call.
                let mut header: libc::msghdr = unsafe { std::mem::zeroed() };
                header.msg_name = address.as_ptr() as *mut libc::c_void;
                header.msg_namelen = address.len();
                header.msg_iov = iovec;
                header.msg_iovlen = 1;
                libc::mmsghdr {
                    msg_hdr: header,
                    msg_len: 0,
                }
            })
            .collect();
        // SAFETY: `messages` holds initialised headers whose buffers live through the call.
        let sent = unsafe {
            libc::sendmmsg(
                socket.as_raw_fd(),
                messages.as_mut_ptr(),
                messages.len() as libc::c_uint,
                libc::MSG_DONTWAIT,
            )
        };
        if sent < batch.len() as i32 {
            return;
        }
    }
}

/// The PMT's PID from a PAT packet: the first program that is not the network PID.
fn pmt_pid(pat: &[u8]) -> Option<u16> {
    let data = payload(pat);
    let section = data.get(1 + usize::from(*data.first()?)..)?;
    let length = usize::from(u16::from_be_bytes([section[1] & 0x0f, section[2]]));
    let programs = section.get(8..3 + length - 4)?;
    programs
        .chunks_exact(4)
        .find(|p| u16::from_be_bytes([p[0], p[1]]) != 0)
        .map(|p| u16::from_be_bytes([p[2] & 0x1f, p[3]]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_ports_come_from_the_transport_header() {
        assert_eq!(
            client_port("RTP/AVP;unicast;client_port=40000-40001"),
            Some(40000)
        );
        assert_eq!(client_port("RTP/AVP/TCP;unicast;interleaved=0-1"), None);
    }

    fn sequence_numbers(packets: &[Vec<u8>]) -> Vec<u16> {
        packets
            .iter()
            .map(|packet| u16::from_be_bytes([packet[2], packet[3]]))
            .collect()
    }

    #[test]
    fn every_rtp_session_gets_an_unbroken_sequence_across_joins() {
        let sample = std::fs::read(crate::sample_ts()).unwrap();
        let per_tick = 20 * TS_PER_RTP * TS_PACKET;
        let mut player = Player::new(sample, per_tick);
        player.sequence = u16::MAX - 30; // wraps during the test
        let mut playing = Vec::new();
        let mut joiner = Vec::new();
        for tick in 0..4 {
            if tick == 2 {
                // A join between ticks, its first bytes not a whole number of RTP packets.
                let first = vec![0x47u8; 45 * TS_PACKET];
                joiner = sequence_numbers(&player.join_rtp_packets(&first));
                assert_eq!(joiner.len(), 7);
            }
            let chunk = player.next_chunk();
            let tick_packets = sequence_numbers(&player.prepare(&chunk).datagrams);
            playing.extend_from_slice(&tick_packets);
            if tick >= 2 {
                joiner.extend_from_slice(&tick_packets);
            }
        }
        for sequence in [&playing, &joiner] {
            let gaps = sequence
                .windows(2)
                .filter(|pair| pair[1] != pair[0].wrapping_add(1))
                .count();
            assert_eq!(gaps, 0, "{sequence:?}");
        }
        assert_eq!(playing.len(), 80);
        assert_eq!(joiner.len(), 7 + 40);
    }

    #[test]
    fn the_pmt_pid_comes_from_the_pat() {
        let sample = std::fs::read(crate::sample_ts()).unwrap();
        let pat = sample
            .chunks_exact(TS_PACKET)
            .find(|p| pid(p) == 0)
            .unwrap();
        let pmt = pmt_pid(pat).expect("a PMT PID");
        assert!(sample.chunks_exact(TS_PACKET).any(|p| pid(p) == pmt));
    }
}

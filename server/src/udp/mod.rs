//! Sending many datagrams at once. A point's RTP fan-out sends a chunk's packets to every UDP
//! client: with UDP generic segmentation offload (`UDP_SEGMENT`), one message carries up to
//! [`GSO_MAX_SEGMENTS`] equal-sized packets that the kernel cuts into datagrams late, so a
//! session's share of a chunk is one `sendmmsg(2)` of a few large messages. Where the kernel
//! refuses GSO, or `FERROCAST_UDP_GSO=off` says not to try, every packet is its own message
//! (still one `sendmmsg` per batch). A session's RTP socket is connected to the client's RTP
//! port ([`Peer::Connected`]): its sends name no address, so the kernel reuses the socket's
//! cached route instead of looking one up for every message.

use std::io;
use std::net::SocketAddr;
use std::ops::Range;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU8, Ordering};

use socket2::SockAddr;
use tracing::{info, warn};

use crate::events;

pub mod fanout;

/// Most datagrams handed to one `sendmmsg` call.
const BATCH: usize = 64;
/// Most segments in one GSO message (the kernel's `UDP_MAX_SEGMENTS` before 6.x was 64).
pub const GSO_MAX_SEGMENTS: usize = 64;
/// Most payload bytes in one GSO message: under the 65,507 bytes of one IPv4 UDP datagram.
const GSO_MAX_BYTES: usize = 65_000;
/// `setsockopt`/cmsg level and type of UDP GSO (linux/udp.h).
const SOL_UDP: libc::c_int = 17;
const UDP_SEGMENT: libc::c_int = 103;
/// The environment variable that turns GSO off (`off`, `0`, `false` or `no`).
pub const GSO_VARIABLE: &str = "FERROCAST_UDP_GSO";

/// Where a send goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    /// The address the socket is connected to.
    Connected,
    /// This address, named in every message (the socket is not connected).
    To(SocketAddr),
}

impl From<SocketAddr> for Peer {
    fn from(to: SocketAddr) -> Self {
        Peer::To(to)
    }
}

impl Peer {
    /// The address to name in each message, if any.
    fn name(self) -> Option<SockAddr> {
        match self {
            Peer::Connected => None,
            Peer::To(to) => Some(SockAddr::from(to)),
        }
    }
}

/// Point `header` at `name` (none: the socket's connected peer); `name` must outlive every use
/// of `header`.
fn set_name(header: &mut libc::msghdr, name: Option<&SockAddr>) {
    if let Some(address) = name {
        header.msg_name = address.as_ptr() as *mut libc::c_void;
        header.msg_namelen = address.len();
    }
}

/// Whether UDP GSO is used: undecided until the first send, then on, or off for good (by the
/// environment, or after the kernel refused it once).
pub struct GsoSwitch(AtomicU8);

const GSO_UNDECIDED: u8 = 0;
const GSO_ON: u8 = 1;
const GSO_OFF: u8 = 2;

/// The process's switch.
pub static GSO: GsoSwitch = GsoSwitch::new();

impl GsoSwitch {
    pub const fn new() -> Self {
        Self(AtomicU8::new(GSO_UNDECIDED))
    }

    /// Whether to try GSO; the first call reads the environment (and logs what it says).
    pub fn enabled(&self) -> bool {
        match self.0.load(Ordering::Relaxed) {
            GSO_ON => true,
            GSO_OFF => false,
            _ => {
                let setting = std::env::var(GSO_VARIABLE).ok();
                let on = crate::switches::switched_on_by(setting.as_deref());
                if !on {
                    info!(
                        variable = GSO_VARIABLE,
                        "UDP segmentation offload turned off"
                    );
                }
                let state = if on { GSO_ON } else { GSO_OFF };
                // Another thread may have decided (or turned it off) meanwhile: keep that.
                let _ = self.0.compare_exchange(
                    GSO_UNDECIDED,
                    state,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                );
                self.0.load(Ordering::Relaxed) == GSO_ON
            }
        }
    }

    /// The kernel refused GSO with `error`: plain datagrams from now on, logged once.
    fn refused(&self, error: &io::Error) {
        if self.0.swap(GSO_OFF, Ordering::Relaxed) != GSO_OFF {
            warn!(
                event = events::UDP_GSO_REFUSED,
                %error,
                "the kernel refused UDP segmentation offload; sending one datagram per packet"
            );
        }
    }
}

impl Default for GsoSwitch {
    fn default() -> Self {
        Self::new()
    }
}

/// Whether a send error means this kernel, device or socket cannot do GSO (as opposed to a
/// full buffer or an unreachable peer).
pub fn refuses_gso(error: &io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(libc::EIO | libc::EINVAL | libc::ENOPROTOOPT | libc::EOPNOTSUPP)
    )
}

/// Consecutive packets sent as one GSO message: `bytes` in the batch's data, cut by the kernel
/// into datagrams of `segment` bytes (the last may be shorter).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentRun {
    pub bytes: Range<usize>,
    pub segment: usize,
    pub packets: usize,
}

/// Group packets (`ranges` into one buffer) into GSO messages: each run holds packets that
/// follow each other in the buffer and share a size, except a last one that may be shorter,
/// within `max_bytes` and `max_segments`.
pub fn segment_runs(
    ranges: &[Range<usize>],
    max_bytes: usize,
    max_segments: usize,
) -> Vec<SegmentRun> {
    let mut runs: Vec<SegmentRun> = Vec::new();
    let mut closed = true;
    for range in ranges {
        let size = range.len();
        if let Some(run) = runs.last_mut().filter(|_| !closed) {
            let fits = run.bytes.end == range.start
                && size <= run.segment
                && run.packets < max_segments
                && run.bytes.len() + size <= max_bytes;
            if fits {
                run.bytes.end = range.end;
                run.packets += 1;
                // A shorter packet can only be the last of its run.
                closed = size < run.segment;
                continue;
            }
        }
        runs.push(SegmentRun {
            bytes: range.clone(),
            segment: size,
            packets: 1,
        });
        closed = false;
    }
    runs
}

/// Send RTP packets (`ranges` into `data`, back to back) to `to` on a non-blocking UDP socket,
/// with GSO where the process's [`GSO`] switch allows. Returns how many packets went out; a
/// full socket buffer drops the rest, as a congested network would.
pub fn send_packets(
    socket: &impl AsRawFd,
    data: &[u8],
    ranges: &[Range<usize>],
    to: impl Into<Peer>,
) -> io::Result<usize> {
    send_packets_with(&GSO, socket, data, ranges, to)
}

/// [`send_packets`] with a switch of the caller's.
pub fn send_packets_with(
    gso: &GsoSwitch,
    socket: &impl AsRawFd,
    data: &[u8],
    ranges: &[Range<usize>],
    to: impl Into<Peer>,
) -> io::Result<usize> {
    PreparedPackets::new(data, ranges).send(gso, socket, to)
}

/// RTP packets grouped into GSO messages once, to be sent to any number of destinations.
pub struct PreparedPackets<'a> {
    data: &'a [u8],
    ranges: &'a [Range<usize>],
    runs: Vec<SegmentRun>,
}

impl<'a> PreparedPackets<'a> {
    /// Packets `ranges` into `data`, back to back.
    pub fn new(data: &'a [u8], ranges: &'a [Range<usize>]) -> Self {
        Self {
            data,
            ranges,
            runs: segment_runs(ranges, GSO_MAX_BYTES, GSO_MAX_SEGMENTS),
        }
    }

    /// Send the packets to `to` on a non-blocking UDP socket, with GSO where `gso` allows.
    /// Returns how many packets went out; a full socket buffer drops the rest, as a congested
    /// network would.
    pub fn send(
        &self,
        gso: &GsoSwitch,
        socket: &impl AsRawFd,
        to: impl Into<Peer>,
    ) -> io::Result<usize> {
        send_prepared(gso, socket, std::slice::from_ref(self), to)
    }

    fn datagrams(&self) -> impl Iterator<Item = &'a [u8]> + '_ {
        self.ranges.iter().map(|range| &self.data[range.clone()])
    }
}

/// Send the packets of several chunks, each grouped into messages once, to `to`: their
/// messages go out together, in as few `sendmmsg` calls as [`BATCH`] allows. Returns how many
/// packets went out; a full socket buffer drops the rest.
pub fn send_prepared(
    gso: &GsoSwitch,
    socket: &impl AsRawFd,
    chunks: &[PreparedPackets<'_>],
    to: impl Into<Peer>,
) -> io::Result<usize> {
    let to = to.into();
    if gso.enabled() {
        let parts: Vec<(&[u8], &[SegmentRun])> = chunks
            .iter()
            .map(|chunk| (chunk.data, &chunk.runs[..]))
            .collect();
        match send_runs(socket, &parts, to) {
            Err(error) if refuses_gso(&error) => gso.refused(&error),
            other => return other,
        }
    }
    let datagrams: Vec<&[u8]> = chunks.iter().flat_map(|chunk| chunk.datagrams()).collect();
    send_batch(socket, &datagrams, to)
}

/// One run in one `sendmsg`, built on the stack: a chunk's usual send. Packets sent.
fn send_one_run(
    socket: &impl AsRawFd,
    data: &[u8],
    run: &SegmentRun,
    name: Option<&SockAddr>,
) -> io::Result<usize> {
    let mut iovec = libc::iovec {
        iov_base: data[run.bytes.clone()].as_ptr() as *mut libc::c_void,
        iov_len: run.bytes.len(),
    };
    // Aligned for `cmsghdr`, and larger than CMSG_SPACE of a u16 (24 bytes on Linux).
    let mut control = [0u64; 4];
    // SAFETY: an all-zero msghdr is a valid empty header; the fields set below point into
    // `iovec`, `control` and `name`, which outlive the call.
    let mut header: libc::msghdr = unsafe { std::mem::zeroed() };
    set_name(&mut header, name);
    header.msg_iov = &mut iovec;
    header.msg_iovlen = 1;
    if run.packets > 1 {
        attach_segment_size(&mut header, &mut control, run.segment as u16);
    }
    // SAFETY: the header and the buffers it points to are initialised and outlive the call.
    let result = unsafe { libc::sendmsg(socket.as_raw_fd(), &header, libc::MSG_DONTWAIT) };
    if result < 0 {
        let error = io::Error::last_os_error();
        if error.kind() == io::ErrorKind::WouldBlock {
            return Ok(0);
        }
        return Err(error);
    }
    Ok(run.packets)
}

/// Bytes of control buffer one `UDP_SEGMENT` control message takes.
fn segment_control_space() -> usize {
    // SAFETY: CMSG_SPACE only computes a size.
    unsafe { libc::CMSG_SPACE(std::mem::size_of::<u16>() as u32) as usize }
}

/// The `u64`s (kept as u64s so the buffer is aligned for `cmsghdr`) one `UDP_SEGMENT`
/// control message takes.
fn segment_control_words() -> usize {
    segment_control_space().div_ceil(8)
}

/// Point `header` at `control` and write into it one `UDP_SEGMENT` control message asking
/// the kernel to cut the message into datagrams of `segment` bytes. `control` must outlive
/// every use of `header`.
fn attach_segment_size(header: &mut libc::msghdr, control: &mut [u64], segment: u16) {
    let space = segment_control_space();
    assert!(
        control.len() * 8 >= space,
        "control buffer too small for UDP_SEGMENT"
    );
    header.msg_control = control.as_mut_ptr() as *mut libc::c_void;
    header.msg_controllen = space as _;
    // SAFETY: the header points at `control`, which holds at least `space` bytes aligned for
    // `cmsghdr`: enough for one cmsghdr with a u16 of data, so CMSG_FIRSTHDR is not null and
    // every write below stays inside `control`.
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(header);
        (*cmsg).cmsg_level = SOL_UDP;
        (*cmsg).cmsg_type = UDP_SEGMENT;
        (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<u16>() as u32) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg) as *mut u16, segment);
    }
}

/// Runs of consecutive chunks joined into GSO messages: the runs `runs` (indices into the list
/// given to [`join_runs`]), cut into datagrams of `segment` bytes, `packets` of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinedRun {
    pub runs: Range<usize>,
    pub segment: usize,
    pub packets: usize,
}

/// Join consecutive runs (of one chunk or of chunks sent together) into as few GSO messages as
/// the kernel takes: a run joins the message before it when that message holds only
/// full-size packets (a datagram boundary falls at its end), the run's packets are the same
/// size, and the message stays within `max_bytes` and `max_segments`. A chunk cut at a whole
/// number of RTP packets and the next one so go out as one message, not two.
pub fn join_runs<'a>(
    runs: impl IntoIterator<Item = &'a SegmentRun>,
    max_bytes: usize,
    max_segments: usize,
) -> Vec<JoinedRun> {
    let mut joined: Vec<JoinedRun> = Vec::new();
    // Whether the last message ends on a full-size packet, and its bytes.
    let mut open = false;
    let mut bytes = 0;
    for (index, run) in runs.into_iter().enumerate() {
        let full = run.bytes.len() == run.segment * run.packets;
        if let Some(message) = joined.last_mut().filter(|_| open) {
            let fits = message.segment == run.segment
                && message.packets + run.packets <= max_segments
                && bytes + run.bytes.len() <= max_bytes;
            if fits {
                message.runs.end = index + 1;
                message.packets += run.packets;
                bytes += run.bytes.len();
                open = full;
                continue;
            }
        }
        joined.push(JoinedRun {
            runs: index..index + 1,
            segment: run.segment,
            packets: run.packets,
        });
        bytes = run.bytes.len();
        open = full;
    }
    joined
}

/// One `sendmmsg` per [`BATCH`] messages of the `parts` (each a chunk's data and its runs):
/// the runs joined into messages ([`join_runs`]), each with a `UDP_SEGMENT` control message
/// when it holds more than one packet. Packets sent, or the error of the first message.
fn send_runs(
    socket: &impl AsRawFd,
    parts: &[(&[u8], &[SegmentRun])],
    to: Peer,
) -> io::Result<usize> {
    let name = to.name();
    if let [(data, [run])] = parts {
        return send_one_run(socket, data, run, name.as_ref());
    }
    let runs: Vec<(&[u8], &SegmentRun)> = parts
        .iter()
        .flat_map(|(data, runs)| runs.iter().map(move |run| (*data, run)))
        .collect();
    let joined = join_runs(
        runs.iter().map(|(_, run)| *run),
        GSO_MAX_BYTES,
        GSO_MAX_SEGMENTS,
    );
    // One iovec per run, in order: a message's runs are consecutive iovecs.
    let mut iovecs: Vec<libc::iovec> = runs
        .iter()
        .map(|(data, run)| libc::iovec {
            iov_base: data[run.bytes.clone()].as_ptr() as *mut libc::c_void,
            iov_len: run.bytes.len(),
        })
        .collect();
    let words = segment_control_words();
    let mut sent = 0;
    for batch in joined.chunks(BATCH) {
        // u64s keep every control buffer aligned for `cmsghdr`.
        let mut controls = vec![0u64; batch.len() * words];
        let mut messages: Vec<libc::mmsghdr> = Vec::with_capacity(batch.len());
        for (index, message) in batch.iter().enumerate() {
            // SAFETY: an all-zero msghdr is a valid empty header; the fields set below
            // point into `iovecs`, `controls` and `name`, which outlive the call.
            let mut header: libc::msghdr = unsafe { std::mem::zeroed() };
            set_name(&mut header, name.as_ref());
            header.msg_iov = iovecs[message.runs.clone()].as_mut_ptr();
            header.msg_iovlen = message.runs.len() as _;
            if message.packets > 1 {
                let control = &mut controls[index * words..(index + 1) * words];
                attach_segment_size(&mut header, control, message.segment as u16);
            }
            messages.push(libc::mmsghdr {
                msg_hdr: header,
                msg_len: 0,
            });
        }
        let done = match send_messages(socket, &mut messages) {
            Ok(done) => done,
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => return Ok(sent),
            Err(error) => return Err(error),
        };
        sent += batch[..done]
            .iter()
            .map(|message| message.packets)
            .sum::<usize>();
        if done < batch.len() {
            return Ok(sent);
        }
    }
    Ok(sent)
}

/// Send `messages` without blocking: how many went out. A single message (a session's usual
/// share of a chunk, with GSO) goes by `sendmsg`: `sendmmsg` offers to reschedule after every
/// message, and on loopback the receiver it just woke takes the CPU there.
fn send_messages(socket: &impl AsRawFd, messages: &mut [libc::mmsghdr]) -> io::Result<usize> {
    let result = if let [only] = messages {
        // SAFETY: the header and the buffers it points to are initialised and outlive the call.
        let bytes = unsafe { libc::sendmsg(socket.as_raw_fd(), &only.msg_hdr, libc::MSG_DONTWAIT) };
        bytes.min(1) as libc::c_int
    } else {
        // SAFETY: `messages` holds initialised headers whose buffers stay alive and unmoved
        // for the duration of the call.
        unsafe {
            libc::sendmmsg(
                socket.as_raw_fd(),
                messages.as_mut_ptr(),
                messages.len() as libc::c_uint,
                libc::MSG_DONTWAIT,
            )
        }
    };
    if result < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(result as usize)
}

/// Send `datagrams` to `to` on a non-blocking UDP socket, in batches. Returns how many went
/// out; the rest were dropped because the socket buffer was full (as a congested network
/// would drop them), which is not an error for a media stream.
pub fn send_batch(
    socket: &impl AsRawFd,
    datagrams: &[impl AsRef<[u8]>],
    to: impl Into<Peer>,
) -> io::Result<usize> {
    let name = to.into().name();
    let mut sent = 0;
    for batch in datagrams.chunks(BATCH) {
        let mut iovecs: Vec<libc::iovec> = batch
            .iter()
            .map(|datagram| libc::iovec {
                iov_base: datagram.as_ref().as_ptr() as *mut libc::c_void,
                iov_len: datagram.as_ref().len(),
            })
            .collect();
        let mut messages: Vec<libc::mmsghdr> = iovecs
            .iter_mut()
            .map(|iovec| {
                // SAFETY: an all-zero msghdr is a valid empty header; the fields set below
                // point into `iovecs` and `name`, which outlive the call.
                let mut header: libc::msghdr = unsafe { std::mem::zeroed() };
                set_name(&mut header, name.as_ref());
                header.msg_iov = iovec as *mut libc::iovec;
                header.msg_iovlen = 1;
                libc::mmsghdr {
                    msg_hdr: header,
                    msg_len: 0,
                }
            })
            .collect();
        let went = match send_messages(socket, &mut messages) {
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => return Ok(sent),
            other => other?,
        };
        sent += went;
        if went < batch.len() {
            return Ok(sent);
        }
    }
    Ok(sent)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn ranges(sizes: &[usize]) -> Vec<Range<usize>> {
        let mut at = 0;
        sizes
            .iter()
            .map(|&size| {
                at += size;
                at - size..at
            })
            .collect()
    }

    fn run(bytes: Range<usize>, segment: usize, packets: usize) -> SegmentRun {
        SegmentRun {
            bytes,
            segment,
            packets,
        }
    }

    #[test]
    fn equal_packets_and_a_shorter_last_make_one_run() {
        let runs = segment_runs(&ranges(&[1328, 1328, 1328, 200]), 65_000, 64);
        assert_eq!(runs, vec![run(0..4184, 1328, 4)]);
    }

    #[test]
    fn a_shorter_packet_ends_its_run_and_a_longer_one_starts_another() {
        let runs = segment_runs(&ranges(&[1328, 200, 1328, 1328, 1400]), 65_000, 64);
        assert_eq!(
            runs,
            vec![
                run(0..1528, 1328, 2),
                run(1528..4184, 1328, 2),
                run(4184..5584, 1400, 1)
            ]
        );
    }

    #[test]
    fn runs_stay_within_the_segment_and_byte_limits() {
        let runs = segment_runs(&ranges(&[100; 10]), 65_000, 4);
        let counts: Vec<usize> = runs.iter().map(|r| r.packets).collect();
        assert_eq!(counts, vec![4, 4, 2]);
        let runs = segment_runs(&ranges(&[1328; 100]), 65_000, 64);
        assert!(runs.iter().all(|r| r.bytes.len() <= 65_000));
        assert_eq!(runs.iter().map(|r| r.packets).sum::<usize>(), 100);
        assert_eq!(runs[0].packets, 48);
    }

    #[test]
    fn packets_apart_in_the_buffer_are_not_joined() {
        let runs = segment_runs(&[0..100, 150..250], 65_000, 64);
        assert_eq!(runs.len(), 2);
    }

    fn joined(runs: Range<usize>, segment: usize, packets: usize) -> JoinedRun {
        JoinedRun {
            runs,
            segment,
            packets,
        }
    }

    #[test]
    fn a_run_of_full_packets_joins_the_next_chunks_run() {
        // Two chunks of 9 full packets, then one with a short last: one message.
        let (full, short) = (run(0..9 * 1328, 1328, 9), run(0..3 * 1328 + 564, 1328, 4));
        let joins = join_runs([&full, &full, &short], 65_000, 64);
        assert_eq!(joins, vec![joined(0..3, 1328, 22)]);
    }

    #[test]
    fn a_short_last_packet_or_another_size_starts_a_new_message() {
        let short = run(0..2 * 1328 + 376, 1328, 3);
        let full = run(0..1328, 1328, 1);
        let other = run(0..2 * 1000, 1000, 2);
        let joins = join_runs([&short, &full, &other, &full], 65_000, 64);
        assert_eq!(
            joins,
            vec![
                joined(0..1, 1328, 3),
                joined(1..2, 1328, 1),
                joined(2..3, 1000, 2),
                joined(3..4, 1328, 1)
            ]
        );
    }

    #[test]
    fn joined_messages_stay_within_the_segment_and_byte_limits() {
        let full = run(0..9 * 1328, 1328, 9);
        let runs = [&full; 10];
        let joins = join_runs(runs.iter().copied(), 65_000, 64);
        // Five runs of nine packets (59,760 bytes) fit in 65,000, six do not.
        let counts: Vec<usize> = joins.iter().map(|j| j.packets).collect();
        assert_eq!(counts, vec![45, 45]);
        let joins = join_runs(runs.iter().copied(), 1 << 20, 20);
        let counts: Vec<usize> = joins.iter().map(|j| j.packets).collect();
        assert_eq!(counts, vec![18, 18, 18, 18, 18]);
    }

    #[test]
    fn only_errors_about_gso_itself_turn_it_off() {
        for code in [libc::EIO, libc::EINVAL, libc::ENOPROTOOPT, libc::EOPNOTSUPP] {
            assert!(refuses_gso(&io::Error::from_raw_os_error(code)));
        }
        for code in [libc::EAGAIN, libc::ECONNREFUSED, libc::ENOBUFS] {
            assert!(!refuses_gso(&io::Error::from_raw_os_error(code)));
        }
    }

    /// RTP-like packets back to back: 1,328 bytes each (the last 200), numbered.
    fn numbered_packets(count: usize) -> (Vec<u8>, Vec<Range<usize>>) {
        let mut sizes = vec![1328; count - 1];
        sizes.push(200);
        let ranges = ranges(&sizes);
        let mut data = vec![0u8; ranges.last().unwrap().end];
        for (index, range) in ranges.iter().enumerate() {
            data[range.clone()].fill(index as u8);
        }
        (data, ranges)
    }

    fn receive_in_order(receiver: &std::net::UdpSocket, ranges: &[Range<usize>]) {
        let mut buf = [0u8; 65536];
        for (index, range) in ranges.iter().enumerate() {
            let (n, _) = receiver.recv_from(&mut buf).unwrap();
            assert_eq!(n, range.len(), "datagram {index}");
            assert!(
                buf[..n].iter().all(|&b| b == index as u8),
                "datagram {index}"
            );
        }
    }

    fn receiver() -> std::net::UdpSocket {
        let receiver = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        receiver
            .set_read_timeout(Some(std::time::Duration::from_secs(2)))
            .unwrap();
        let _ = socket2::SockRef::from(&receiver).set_recv_buffer_size(1 << 20);
        receiver
    }

    #[test]
    fn gso_sends_arrive_as_separate_datagrams_in_order() {
        let receiver = receiver();
        let sender = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let (data, ranges) = numbered_packets(120);
        let gso = GsoSwitch::new();
        let sent = send_packets_with(
            &gso,
            &sender,
            &data,
            &ranges,
            receiver.local_addr().unwrap(),
        );
        assert_eq!(sent.unwrap(), 120);
        assert!(
            gso.enabled(),
            "this kernel refused GSO: the offload path was not tested"
        );
        receive_in_order(&receiver, &ranges);
    }

    #[test]
    fn chunks_sent_together_arrive_in_order_each_cut_as_its_own() {
        let receiver = receiver();
        let sender = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        // Two chunks, each with a short last packet: their runs cannot merge, their messages
        // go out in one call.
        let (first, first_ranges) = numbered_packets(5);
        let (mut second, second_ranges) = numbered_packets(4);
        for (index, range) in second_ranges.iter().enumerate() {
            second[range.clone()].fill(5 + index as u8);
        }
        let gso = GsoSwitch::new();
        let chunks = [
            PreparedPackets::new(&first, &first_ranges),
            PreparedPackets::new(&second, &second_ranges),
        ];
        let sent = send_prepared(&gso, &sender, &chunks, receiver.local_addr().unwrap());
        assert_eq!(sent.unwrap(), 9);
        assert!(gso.enabled());
        let sizes: Vec<usize> = first_ranges
            .iter()
            .chain(&second_ranges)
            .map(|range| range.len())
            .collect();
        receive_in_order(&receiver, &ranges(&sizes));
    }

    #[test]
    fn chunks_ending_on_a_full_packet_go_out_joined_and_arrive_as_their_packets() {
        let receiver = receiver();
        let sender = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        // Three chunks: nine full packets, nine full packets, then three and a short one.
        let sizes: [&[usize]; 3] = [&[1328; 9], &[1328; 9], &[1328, 1328, 1328, 200]];
        let mut number = 0u8;
        let buffers: Vec<(Vec<u8>, Vec<Range<usize>>)> = sizes
            .iter()
            .map(|sizes| {
                let ranges = ranges(sizes);
                let mut data = vec![0u8; ranges.last().unwrap().end];
                for range in &ranges {
                    data[range.clone()].fill(number);
                    number += 1;
                }
                (data, ranges)
            })
            .collect();
        let chunks: Vec<PreparedPackets<'_>> = buffers
            .iter()
            .map(|(data, ranges)| PreparedPackets::new(data, ranges))
            .collect();
        let gso = GsoSwitch::new();
        let sent = send_prepared(&gso, &sender, &chunks, receiver.local_addr().unwrap());
        assert_eq!(sent.unwrap(), 22);
        assert!(gso.enabled());
        let all: Vec<usize> = sizes.concat();
        receive_in_order(&receiver, &ranges(&all));
    }

    #[test]
    fn a_socket_that_refuses_gso_falls_back_to_one_datagram_per_packet() {
        let receiver = receiver();
        let sender = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        // Without UDP checksums the kernel refuses GSO (EINVAL), as an old kernel would.
        let on: libc::c_int = 1;
        // SAFETY: a valid socket and an int option of the right size.
        let set = unsafe {
            libc::setsockopt(
                sender.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_NO_CHECK,
                &on as *const libc::c_int as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        assert_eq!(set, 0);
        let (data, ranges) = numbered_packets(10);
        let gso = GsoSwitch::new();
        assert!(gso.enabled());
        let to = receiver.local_addr().unwrap();
        assert_eq!(
            send_packets_with(&gso, &sender, &data, &ranges, to).unwrap(),
            10
        );
        assert!(!gso.enabled(), "refused once, GSO stays off");
        receive_in_order(&receiver, &ranges);
    }

    #[test]
    fn a_batch_arrives_as_separate_datagrams_in_order() {
        let receiver = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        receiver
            .set_read_timeout(Some(std::time::Duration::from_secs(2)))
            .unwrap();
        let sender = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let datagrams: Vec<Bytes> = (0..100u8)
            .map(|i| Bytes::from(vec![i; 10 + i as usize]))
            .collect();
        let sent = send_batch(&sender, &datagrams, receiver.local_addr().unwrap()).unwrap();
        assert_eq!(sent, 100);
        let mut buf = [0u8; 256];
        for i in 0..100u8 {
            let (n, _) = receiver.recv_from(&mut buf).unwrap();
            assert_eq!(n, 10 + i as usize);
            assert!(buf[..n].iter().all(|&b| b == i));
        }
    }
}

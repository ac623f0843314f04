//! What each kind of load client does on the generator's runtime: connect, ask for the stream
//! (HTTP GET, nothing for raw TCP, the RTSP exchange) and count what arrives until the task is
//! stopped. Reads go into one scratch buffer per worker thread, so a client keeps no buffer
//! of its own beyond an incomplete interleaved frame.

use std::cell::RefCell;
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::time::Duration;

use tokio::io::Interest;
use tokio::net::{TcpStream, UdpSocket};

use super::control::Control;
use super::udp::{self, SequenceCheck};
use super::{ClientFailure, Counter, Protocol, Target};
use crate::head::{content_length, head_end, status_code};
use crate::rtsp::{rtp_payload, FrameSink};
use crate::watch::udp_pair;

/// The longest a connection attempt takes.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Receive buffer asked for on a client's RTP socket, so that a join's burst is not dropped
/// by the load generator itself.
const UDP_RECEIVE_BUFFER: usize = 4 * 1024 * 1024;
/// The scratch buffer: the largest datagram (or GRO batch) fits.
const SCRATCH_BYTES: usize = 64 * 1024;

thread_local! {
    static SCRATCH: RefCell<Vec<u8>> = RefCell::new(vec![0; SCRATCH_BYTES]);
}

/// Run one client of `protocol` until it fails or its task is stopped.
pub(super) async fn run(
    protocol: Protocol,
    target: &Target,
    counter: &mut Counter,
    udp_gro: bool,
) -> Result<(), ClientFailure> {
    match protocol {
        Protocol::Http => read_http(target, counter).await,
        Protocol::Tcp => {
            let stream = connect(target.tcp).await?;
            read_each(&stream, |data| counter.media(data, data.len())).await
        }
        Protocol::RtspTcp => read_rtsp_tcp(target, counter).await,
        Protocol::RtspUdp => read_rtsp_udp(target, counter, udp_gro).await,
    }
}

pub(super) async fn connect(address: SocketAddr) -> Result<TcpStream, ClientFailure> {
    match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(address)).await {
        Ok(Ok(stream)) => Ok(stream),
        Ok(Err(source)) => Err(ClientFailure::Connect { address, source }),
        Err(_) => Err(ClientFailure::ConnectTimeout {
            address,
            within: CONNECT_TIMEOUT,
        }),
    }
}

pub(super) async fn write_all(
    stream: &TcpStream,
    mut data: &[u8],
    what: &'static str,
) -> Result<(), ClientFailure> {
    while !data.is_empty() {
        stream
            .writable()
            .await
            .map_err(|source| ClientFailure::Send { what, source })?;
        match stream.try_write(data) {
            Ok(n) => data = &data[n..],
            Err(error) if error.kind() == ErrorKind::WouldBlock => {}
            Err(source) => return Err(ClientFailure::Send { what, source }),
        }
    }
    Ok(())
}

/// One read appended to `buffered`; `false` once the server closed the connection.
pub(super) async fn read_some(
    stream: &TcpStream,
    buffered: &mut Vec<u8>,
) -> Result<bool, ClientFailure> {
    let read = read_until(stream, |data| {
        buffered.extend_from_slice(data);
        false
    })
    .await;
    match read {
        Ok(()) => Ok(true),
        Err(ClientFailure::Closed) => Ok(false),
        Err(other) => Err(other),
    }
}

/// Hand everything read from `stream` to `take` until the connection ends.
async fn read_each(stream: &TcpStream, mut take: impl FnMut(&[u8])) -> Result<(), ClientFailure> {
    read_until(stream, |data| {
        take(data);
        true
    })
    .await
}

/// Hand what is read from `stream` to `take` while it answers `true`. A closed connection is
/// [`ClientFailure::Closed`].
async fn read_until(
    stream: &TcpStream,
    mut take: impl FnMut(&[u8]) -> bool,
) -> Result<(), ClientFailure> {
    loop {
        stream.readable().await.map_err(ClientFailure::Read)?;
        let more = SCRATCH.with(|scratch| {
            let mut scratch = scratch.borrow_mut();
            match stream.try_read(&mut scratch) {
                Ok(0) => Err(ClientFailure::Closed),
                Ok(n) => Ok(take(&scratch[..n])),
                Err(error) if error.kind() == ErrorKind::WouldBlock => Ok(true),
                Err(error) => Err(ClientFailure::Read(error)),
            }
        })?;
        if !more {
            return Ok(());
        }
    }
}

async fn read_http(target: &Target, counter: &mut Counter) -> Result<(), ClientFailure> {
    let stream = connect(target.http).await?;
    let request = format!("GET {} HTTP/1.1\r\nHost: bench\r\n\r\n", target.path);
    write_all(&stream, request.as_bytes(), "GET").await?;
    let mut head = Vec::new();
    let end = loop {
        if let Some(end) = head_end(&head) {
            break end;
        }
        if !read_some(&stream, &mut head).await? {
            return Err(ClientFailure::ClosedBeforeHead);
        }
    };
    let status = status_code(&String::from_utf8_lossy(&head[..end]));
    if status != 200 {
        return Err(ClientFailure::HttpStatus(status));
    }
    counter.media(&head[end..], head.len() - end);
    drop(head);
    read_each(&stream, |data| counter.media(data, data.len())).await
}

fn rtsp_url(target: &Target) -> String {
    format!(
        "rtsp://{}/{}",
        target.rtsp,
        target.path.trim_start_matches('/')
    )
}

async fn read_rtsp_tcp(target: &Target, counter: &mut Counter) -> Result<(), ClientFailure> {
    let mut control = Control::connect(target.rtsp).await?;
    control
        .play_first_track(
            &rtsp_url(target),
            "RTP/AVP/TCP;unicast;interleaved=0-1",
            counter,
        )
        .await?;
    let (stream, mut pending) = control.into_parts();
    let taken = take_interleaved(&pending, counter);
    pending.drain(..taken);
    read_each(&stream, |data| {
        if pending.is_empty() {
            // Frames straight from the scratch buffer; only an incomplete one is kept.
            let taken = take_interleaved(data, counter);
            pending.extend_from_slice(&data[taken..]);
        } else {
            pending.extend_from_slice(data);
            let taken = take_interleaved(&pending, counter);
            pending.drain(..taken);
        }
    })
    .await
}

/// Hand the complete interleaved frames in `buffered` to `sink`, skipping RTSP messages
/// between them; how many bytes were used up.
pub(super) fn take_interleaved(buffered: &[u8], sink: &mut impl FrameSink) -> usize {
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

async fn read_rtsp_udp(
    target: &Target,
    counter: &mut Counter,
    gro: bool,
) -> Result<(), ClientFailure> {
    let (rtp, _rtcp) = udp_pair();
    let _ = socket2::SockRef::from(&rtp).set_recv_buffer_size(UDP_RECEIVE_BUFFER);
    if gro {
        udp::enable_gro(rtp.as_raw_fd()).map_err(ClientFailure::Gro)?;
    }
    rtp.set_nonblocking(true).map_err(ClientFailure::Receive)?;
    let port = rtp.local_addr().map_err(ClientFailure::Receive)?.port();
    let rtp = UdpSocket::from_std(rtp).map_err(ClientFailure::Receive)?;
    let mut control = Control::connect(target.rtsp).await?;
    let transport = format!("RTP/AVP;unicast;client_port={port}-{}", port + 1);
    control
        .play_first_track(&rtsp_url(target), &transport, &mut ())
        .await?;
    let mut sequence = SequenceCheck::default();
    // The control connection lives as long as the session is watched.
    let _control = control;
    loop {
        rtp.readable().await.map_err(ClientFailure::Receive)?;
        SCRATCH.with(|scratch| {
            let mut scratch = scratch.borrow_mut();
            let received = rtp.try_io(Interest::READABLE, || {
                udp::receive(rtp.as_raw_fd(), &mut scratch)
            });
            match received {
                Ok(received) => {
                    let data = &scratch[..received.len];
                    for datagram in udp::datagrams(data, received.segment) {
                        counter.datagram(datagram, &mut sequence);
                    }
                    Ok(())
                }
                Err(error) if error.kind() == ErrorKind::WouldBlock => Ok(()),
                Err(error) => Err(ClientFailure::Receive(error)),
            }
        })?;
    }
}

impl Counter {
    /// Count one RTP datagram: its payload as media, a gap in its sequence as missing.
    fn datagram(&mut self, datagram: &[u8], sequence: &mut SequenceCheck) {
        if let Some(number) = udp::rtp_sequence(datagram) {
            self.rtp_packet(sequence.packet(number));
        }
        self.media(rtp_payload(datagram).unwrap_or(&[]), datagram.len());
    }
}

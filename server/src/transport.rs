//! Media transports of RTSP-style sessions: RTP/MP2T over UDP to the client's ports, or
//! interleaved on the control connection (the [`TransportWire`]).
//!
//! A control plugin asks for a transport (RTSP SETUP); the host checks that the transport's
//! plugin (`udp` or `tcp`) is enabled on the point and accepts the request, binds the server's
//! RTP/RTCP ports for UDP, and from then on delivers the point's shared RTP packets itself.
//! RTCP sender reports go out every few seconds; receiver reports coming back count as
//! keep-alives for the session.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ferrocast_plugin_api::{ErrorCode, HostError, TransportInfo, TransportKind, TransportRequest};
use tokio::net::UdpSocket;

use crate::media::rtp::{bye, interleaved_header, sender_report, NtpTime, RtpBatch};
use crate::udp::{send_packets, Peer};

/// How often RTCP sender reports go out (RFC 3550's minimum interval).
pub const SENDER_REPORT_INTERVAL: Duration = Duration::from_secs(5);
/// CNAME in our SDES items.
const CNAME: &str = "ferrocast";
/// Attempts at binding an even RTP port with the odd RTCP port above it.
const PORT_PAIR_ATTEMPTS: usize = 16;

/// The transport plugin that accepts a transport kind (`udp`, `tcp`); it must be enabled on
/// the point.
pub fn transport_plugin_for(kind: TransportKind) -> Option<&'static str> {
    match kind {
        TransportKind::UDP_UNICAST => Some("udp"),
        TransportKind::TCP_INTERLEAVED => Some("tcp"),
        _ => None,
    }
}

/// The wire mechanism by which a transport reaches the client.
pub enum TransportWire {
    /// `$ channel length` frames on the control connection.
    Interleaved { rtp: u8, rtcp: u8 },
    /// Datagrams from the server's port pair to the client's; the RTP socket is connected to
    /// `to_rtp` (see [`Peer::Connected`]).
    Udp {
        rtp: Arc<UdpSocket>,
        rtcp: Arc<UdpSocket>,
        to_rtp: SocketAddr,
        to_rtcp: SocketAddr,
    },
}

/// RTP packets and payload octets sent on a transport, for its sender reports; shared with
/// the point's UDP fan-out, which sends for the session once it has caught up.
#[derive(Debug, Default)]
pub struct RtpCounts {
    packets: AtomicU32,
    octets: AtomicU32,
}

impl RtpCounts {
    /// Count a batch as sent (the counts wrap, as RTCP's do).
    pub fn add(&self, batch: &RtpBatch) {
        let octets: usize = batch
            .ranges()
            .iter()
            .map(|packet| packet.len().saturating_sub(12))
            .sum();
        self.packets
            .fetch_add(batch.len() as u32, Ordering::Relaxed);
        self.octets.fetch_add(octets as u32, Ordering::Relaxed);
    }

    pub fn packets(&self) -> u32 {
        self.packets.load(Ordering::Relaxed)
    }

    pub fn octets(&self) -> u32 {
        self.octets.load(Ordering::Relaxed)
    }
}

/// Where a UDP transport's RTP goes: the server's RTP socket, connected to the client's RTP
/// port `to` (so sends name no address: [`Peer::Connected`]), and the counts its sender
/// reports quote.
#[derive(Clone, Debug)]
pub struct UdpDestination {
    pub socket: Arc<UdpSocket>,
    pub to: SocketAddr,
    pub counts: Arc<RtpCounts>,
}

/// One transport of a session, with what was sent on it (for sender reports).
pub struct Transport {
    pub info: TransportInfo,
    pub wire: TransportWire,
    counts: Arc<RtpCounts>,
}

impl Transport {
    /// Set up the wire for an accepted request, accepted by `transport_plugin`. UDP binds the server's port pair on
    /// `local_ip` (the address the control connection arrived on).
    pub fn open(
        id: u64,
        transport_plugin: &str,
        request: &TransportRequest,
        local_ip: IpAddr,
        peer_ip: IpAddr,
        ssrc: u32,
    ) -> Result<Self, HostError> {
        let (wire, server_ports) = match request.kind {
            TransportKind::TCP_INTERLEAVED => (
                TransportWire::Interleaved {
                    rtp: request.rtp_channel,
                    rtcp: request.rtcp_channel,
                },
                (0, 0),
            ),
            TransportKind::UDP_UNICAST => {
                let (rtp, rtcp) = bind_port_pair(local_ip).map_err(|error| {
                    HostError::new(
                        ErrorCode::UNAVAILABLE,
                        format!("cannot bind UDP ports for RTP on {local_ip}: {error}"),
                    )
                })?;
                let to_rtp = SocketAddr::new(peer_ip, request.client_rtp_port);
                // Connected, the socket keeps its route to the client: no lookup per send.
                // (Nothing is read from it; RTCP comes on the other socket of the pair.)
                socket2::SockRef::from(&rtp)
                    .connect(&to_rtp.into())
                    .map_err(|error| {
                        HostError::new(
                            ErrorCode::UNAVAILABLE,
                            format!("cannot send RTP from {local_ip} to {to_rtp}: {error}"),
                        )
                    })?;
                let ports = (
                    rtp.local_addr().map_or(0, |a| a.port()),
                    rtcp.local_addr().map_or(0, |a| a.port()),
                );
                let wire = TransportWire::Udp {
                    rtp: Arc::new(rtp),
                    rtcp: Arc::new(rtcp),
                    to_rtp,
                    to_rtcp: SocketAddr::new(peer_ip, request.client_rtcp_port),
                };
                (wire, ports)
            }
            other => {
                return Err(HostError::new(
                    ErrorCode::UNSUPPORTED_TRANSPORT,
                    format!("{} is not supported", other.as_str()),
                ))
            }
        };
        let destination = match &wire {
            TransportWire::Udp { .. } => peer_ip.to_string(),
            TransportWire::Interleaved { .. } => String::new(),
        };
        Ok(Self {
            info: TransportInfo {
                id,
                plugin: transport_plugin.into(),
                kind: request.kind,
                server_rtp_port: server_ports.0,
                server_rtcp_port: server_ports.1,
                destination: destination.into(),
                ssrc,
            },
            wire,
            counts: Arc::default(),
        })
    }

    /// Send a batch of RTP packets. Interleaved frames are appended to `out` (the control
    /// connection's queue, sharing the packets' bytes); datagrams go out at once; a full
    /// socket buffer drops them, as UDP would on the network.
    pub fn send_rtp(&mut self, batch: &RtpBatch, out: &mut impl Extend<Bytes>) {
        self.counts.add(batch);
        match &self.wire {
            TransportWire::Interleaved { rtp, .. } => {
                for packet in batch.iter() {
                    let header = interleaved_header(*rtp, packet.len() as u16);
                    out.extend([Bytes::copy_from_slice(&header), packet]);
                }
            }
            TransportWire::Udp { rtp, .. } => {
                let _ = send_packets(rtp.as_ref(), batch.data(), batch.ranges(), Peer::Connected);
            }
        }
    }

    /// Send an RTCP sender report for the stream's current `rtp_time`.
    pub fn send_report(&self, rtp_time: u32, out: &mut impl Extend<Bytes>) {
        let report = sender_report(
            self.info.ssrc,
            NtpTime::now(),
            rtp_time,
            self.counts.packets(),
            self.counts.octets(),
            CNAME,
        );
        match &self.wire {
            TransportWire::Interleaved { rtcp, .. } => {
                let header = interleaved_header(*rtcp, report.len() as u16);
                out.extend([Bytes::copy_from_slice(&header), report]);
            }
            TransportWire::Udp { rtcp, to_rtcp, .. } => send_datagram(rtcp, &report, *to_rtcp),
        }
    }

    /// Send an RTCP BYE: the stream is over (players end their playback on it).
    pub fn send_bye(&self, out: &mut impl Extend<Bytes>) {
        let goodbye = bye(self.info.ssrc, Some("end of stream"));
        match &self.wire {
            TransportWire::Interleaved { rtcp, .. } => {
                let header = interleaved_header(*rtcp, goodbye.len() as u16);
                out.extend([Bytes::copy_from_slice(&header), goodbye]);
            }
            TransportWire::Udp { rtcp, to_rtcp, .. } => send_datagram(rtcp, &goodbye, *to_rtcp),
        }
    }

    /// Where the transport's RTP goes, for UDP transports.
    pub fn udp_destination(&self) -> Option<UdpDestination> {
        match &self.wire {
            TransportWire::Udp { rtp, to_rtp, .. } => Some(UdpDestination {
                socket: Arc::clone(rtp),
                to: *to_rtp,
                counts: Arc::clone(&self.counts),
            }),
            TransportWire::Interleaved { .. } => None,
        }
    }

    /// The socket RTCP from the client arrives on, and the client's IP (only its RTCP counts),
    /// for UDP transports.
    pub fn rtcp_socket(&self) -> Option<(Arc<UdpSocket>, IpAddr)> {
        match &self.wire {
            TransportWire::Udp { rtcp, to_rtcp, .. } => Some((Arc::clone(rtcp), to_rtcp.ip())),
            TransportWire::Interleaved { .. } => None,
        }
    }
}

/// Send one datagram now on a non-blocking socket. A full socket buffer drops it, as a
/// congested network would; the syscall is made directly because tokio's `try_send_to` refuses
/// until the reactor has seen the socket writable once.
fn send_datagram(socket: &UdpSocket, datagram: &[u8], to: SocketAddr) {
    let _ = socket2::SockRef::from(socket).send_to(datagram, &to.into());
}

/// Bind an even port for RTP and the next odd one for RTCP (RFC 3550 §11), falling back to
/// any two ports if the pairs keep colliding.
fn bind_port_pair(ip: IpAddr) -> std::io::Result<(UdpSocket, UdpSocket)> {
    let bind = |port: u16| -> std::io::Result<UdpSocket> {
        let socket = std::net::UdpSocket::bind(SocketAddr::new(ip, port))?;
        socket.set_nonblocking(true)?;
        UdpSocket::from_std(socket)
    };
    for _ in 0..PORT_PAIR_ATTEMPTS {
        let rtp = bind(0)?;
        let port = rtp.local_addr()?.port();
        if port % 2 == 0 && port < u16::MAX {
            if let Ok(rtcp) = bind(port + 1) {
                return Ok((rtp, rtcp));
            }
        }
    }
    Ok((bind(0)?, bind(0)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::rtp::RtpPacketizer;

    fn request(kind: TransportKind) -> TransportRequest {
        TransportRequest {
            path: "live".into(),
            kind,
            client_rtp_port: 40000,
            client_rtcp_port: 40001,
            rtp_channel: 2,
            rtcp_channel: 3,
        }
    }

    #[tokio::test]
    async fn udp_transports_get_an_even_odd_port_pair_and_send_datagrams() {
        let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let mut req = request(TransportKind::UDP_UNICAST);
        req.client_rtp_port = client.local_addr().unwrap().port();
        let localhost: IpAddr = "127.0.0.1".parse().unwrap();
        let mut transport = Transport::open(1, "udp", &req, localhost, localhost, 7).unwrap();
        assert_eq!(transport.info.server_rtp_port % 2, 0);
        assert_eq!(
            transport.info.server_rtcp_port,
            transport.info.server_rtp_port + 1
        );

        let mut packetizer = RtpPacketizer::new(7, 100);
        let batch = packetizer.packetize(&[0x47u8; 188 * 8], 1234);
        let mut out = Vec::new();
        transport.send_rtp(&batch, &mut out);
        assert!(out.is_empty());
        let mut buf = [0u8; 2048];
        let (n, _) = client.recv_from(&mut buf).unwrap();
        assert_eq!(n, 12 + 7 * 188);
        assert_eq!(u16::from_be_bytes([buf[2], buf[3]]), 100);
    }

    #[test]
    fn interleaved_transports_frame_packets_for_the_connection() {
        let localhost: IpAddr = "127.0.0.1".parse().unwrap();
        let mut transport = Transport::open(
            1,
            "tcp",
            &request(TransportKind::TCP_INTERLEAVED),
            localhost,
            localhost,
            7,
        )
        .unwrap();
        let mut packetizer = RtpPacketizer::new(7, 0);
        let batch = packetizer.packetize(&[0x47u8; 188], 0);
        let mut out = Vec::new();
        transport.send_rtp(&batch, &mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(&out[0][..], &[b'$', 2, 0, 200]);
        assert_eq!(out[1].len(), 200);
        out.clear();
        transport.send_report(0, &mut out);
        assert_eq!(out[0][1], 3, "sender reports go on the RTCP channel");
    }
}

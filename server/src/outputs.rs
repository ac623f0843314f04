//! Standalone outputs: a broadcast point pushed to a fixed UDP destination (unicast or
//! multicast), as raw MPEG-TS (7 packets per datagram) or RTP/MP2T, for as long as the server
//! runs. The transport plugin's settings declare them; the host owns the socket.
//!
//! An output follows its point through encoder changes: it starts at a keyframe, skips ahead
//! to the next keyframe when it falls behind, and simply waits while the point has no source.
//! One that starts mid-GOP sends the GOP so far paced (`udp_join_rate`), not as one burst.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::ops::ControlFlow;
use std::sync::Arc;

use bytes::Bytes;
use ferrocast_plugin_api::Framing;
use tokio::net::UdpSocket;
use tokio::sync::broadcast::error::RecvError;
use tracing::{debug, info, info_span, warn, Instrument};

use crate::events;
use crate::media::ts::TS_PACKET_LEN;
use crate::points::{JoinPacer, LiveChunk, LiveEvent, LiveStream};
use crate::udp::send_batch;
use crate::waits::sleep_until_opt;

/// 7 TS packets per datagram: 1316 bytes, under any Ethernet MTU.
const DATAGRAM_LEN: usize = 7 * TS_PACKET_LEN;

/// One configured push.
pub struct Output {
    pub plugin: String,
    pub stream: Arc<LiveStream>,
    pub destination: SocketAddr,
    pub framing: Framing,
    pub ttl: u8,
    /// Local address to send from (the multicast interface).
    pub interface: Option<IpAddr>,
}

impl Output {
    /// Run until the server stops, inside a span that names the plugin, point and
    /// destination. Socket errors are logged and retried, never fatal.
    pub async fn run(self) {
        let span = info_span!(
            "output",
            plugin = %self.plugin,
            point = %self.stream.name,
            destination = %self.destination,
        );
        self.push().instrument(span).await;
    }

    async fn push(self) {
        let socket = match self.open_socket().await {
            Ok(socket) => socket,
            Err(error) => {
                warn!(event = events::OUTPUT_FAILED, %error, "cannot open the UDP output socket; this push is off");
                return;
            }
        };
        info!(rtp = (self.framing == Framing::RTP), "pushing point");
        let join = self.stream.join();
        let mut rx = join.rx;
        let mut waiting_for_keyframe = !join.at_keyframe;
        let mut pacer = self.pacer_for(join.backlog, &socket).await;
        loop {
            let due = pacer
                .as_ref()
                .and_then(|p| p.next_due(tokio::time::Instant::now()));
            let room = pacer.as_ref().map_or(true, JoinPacer::has_room);
            let received = tokio::select! {
                () = sleep_until_opt(due) => {
                    if let Some(catching_up) = &mut pacer {
                        while let Some(live) = catching_up.take(tokio::time::Instant::now()) {
                            self.send(&socket, &live).await;
                        }
                    }
                    pacer = pacer.filter(|p| !p.caught_up());
                    continue;
                }
                received = rx.recv(), if room => received,
            };
            let live = match Self::to_send(received, &mut waiting_for_keyframe) {
                ControlFlow::Continue(Some(live)) => live,
                ControlFlow::Continue(None) => continue,
                ControlFlow::Break(()) => {
                    debug!("the point's stream is gone; push stopped");
                    return;
                }
            };
            match &mut pacer {
                Some(catching_up) => catching_up.push(live),
                None => self.send(&socket, &live).await,
            }
        }
    }

    /// The catch-up of the point's GOP so far, paced at the point's `udp_join_rate`; with a
    /// rate of 0 it is sent at once and there is nothing to pace.
    async fn pacer_for(
        &self,
        backlog: Vec<Arc<LiveChunk>>,
        socket: &UdpSocket,
    ) -> Option<JoinPacer> {
        let multiple = self.stream.udp_join_rate();
        if multiple == 0 {
            for live in backlog {
                self.send(socket, &live).await;
            }
            return None;
        }
        let rate = self.stream.ingest_bits_per_second();
        Some(JoinPacer::new(
            backlog,
            rate,
            multiple,
            tokio::time::Instant::now(),
        ))
        .filter(|pacer| !pacer.caught_up())
    }

    /// What an event from the point's ring means for the push: a chunk to send, or nothing
    /// (waiting for a keyframe); `Break` when the point's ring is gone.
    fn to_send(
        received: Result<LiveEvent, RecvError>,
        waiting_for_keyframe: &mut bool,
    ) -> ControlFlow<(), Option<Arc<LiveChunk>>> {
        let chunk = match received {
            Ok(LiveEvent::Media(live)) => {
                if live.chunk.random_access {
                    *waiting_for_keyframe = false;
                }
                (!*waiting_for_keyframe).then_some(live)
            }
            Ok(LiveEvent::SourceRestarted) | Ok(LiveEvent::Ended) => {
                *waiting_for_keyframe = true;
                None
            }
            Err(RecvError::Lagged(skipped)) => {
                warn!(
                    event = events::CLIENT_LAGGING,
                    skipped_chunks = skipped,
                    "push fell behind; skipping to the next keyframe"
                );
                *waiting_for_keyframe = true;
                None
            }
            Err(RecvError::Closed) => return ControlFlow::Break(()),
        };
        ControlFlow::Continue(chunk)
    }

    /// A UDP socket bound to the configured interface address (or any), with the multicast
    /// options set when the destination is a group.
    async fn open_socket(&self) -> std::io::Result<UdpSocket> {
        let local: IpAddr = match (&self.interface, self.destination) {
            (Some(address), _) => *address,
            (None, SocketAddr::V4(_)) => Ipv4Addr::UNSPECIFIED.into(),
            (None, SocketAddr::V6(_)) => Ipv6Addr::UNSPECIFIED.into(),
        };
        let domain = socket2::Domain::for_address(self.destination);
        let socket =
            socket2::Socket::new(domain, socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
        socket.set_nonblocking(true)?;
        socket.bind(&SocketAddr::new(local, 0).into())?;
        match (self.destination.ip(), local) {
            (IpAddr::V4(group), local) if group.is_multicast() => {
                socket.set_multicast_ttl_v4(u32::from(self.ttl))?;
                // Receivers on this host (and the tests, on loopback) see the group too.
                socket.set_multicast_loop_v4(true)?;
                if let IpAddr::V4(interface) = local {
                    if !interface.is_unspecified() {
                        socket.set_multicast_if_v4(&interface)?;
                    }
                }
            }
            (IpAddr::V6(group), _) if group.is_multicast() => {
                socket.set_multicast_hops_v6(u32::from(self.ttl))?;
                socket.set_multicast_loop_v6(true)?;
            }
            _ => socket.set_ttl(u32::from(self.ttl).max(64))?,
        }
        UdpSocket::from_std(socket.into())
    }

    /// Send a chunk as datagrams: the point's shared RTP packets, or up to 7 TS packets each.
    async fn send(&self, socket: &UdpSocket, live: &LiveChunk) {
        let datagrams: Vec<Bytes> = if self.framing == Framing::RTP {
            live.rtp.iter().collect()
        } else {
            let data = &live.chunk.data;
            (0..data.len())
                .step_by(DATAGRAM_LEN)
                .map(|start| data.slice(start..(start + DATAGRAM_LEN).min(data.len())))
                .collect()
        };
        // Wait until the socket can take data, then hand the kernel the whole chunk at once.
        if socket.writable().await.is_err() {
            return;
        }
        if let Err(error) = send_batch(socket, &datagrams, self.destination) {
            // A receiver that is not there (ICMP port unreachable) must not stop the push.
            debug!(%error, "datagrams not sent");
        }
    }
}

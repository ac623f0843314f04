//! A session's RTP transports: the ones set up so far, the point and transport plugin each
//! uses (re-checked after a reload), the session's count under each transport plugin, the
//! bytes sent over UDP, the RTCP sender-report schedule, the client's last receiver report,
//! and the BYE that ends RTP playback.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use ferrocast_plugin_api::{ErrorCode, HostError, TransportKind};
use tokio::net::UdpSocket;
use tokio::time::Instant;

use super::output::OutputQueue;
use crate::media::rtp::{ReportBlock, RtcpPacket, RtpBatch};
use crate::plugins::GenerationSession;
use crate::transport::{Transport, TransportWire, UdpDestination, SENDER_REPORT_INTERVAL};

/// How soon after PLAY the first sender reports go out.
const FIRST_REPORT_AFTER: Duration = Duration::from_secs(1);

/// Why a transport could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TransportRefusal {
    #[error("{} is not supported", .kind.as_str())]
    Unsupported { kind: TransportKind },
    #[error("{} is not enabled on publishing point `{point}`; the operator can add \"{transport_plugin}\" to its protocols", .transport_plugin.to_uppercase())]
    NotEnabled {
        transport_plugin: &'static str,
        point: String,
    },
    #[error("connection addresses unknown")]
    AddressesUnknown,
}

impl From<TransportRefusal> for HostError {
    fn from(refusal: TransportRefusal) -> Self {
        let code = match &refusal {
            TransportRefusal::Unsupported { .. } | TransportRefusal::NotEnabled { .. } => {
                ErrorCode::UNSUPPORTED_TRANSPORT
            }
            TransportRefusal::AddressesUnknown => ErrorCode::UNAVAILABLE,
        };
        HostError::new(code, refusal.to_string())
    }
}

/// The point and transport plugin a transport uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransportUse {
    pub id: u64,
    pub point: String,
    pub transport_plugin: &'static str,
}

/// The session's transports, in setup order.
#[derive(Default)]
pub struct TransportSet {
    transports: Vec<Transport>,
    uses: Vec<TransportUse>,
    set_up: u64,
    /// When the next RTCP sender reports are due, while media flows on the transports.
    reports_due: Option<Instant>,
    /// The session counted on each transport plugin it uses, while it uses it.
    counted: Vec<(&'static str, GenerationSession)>,
    /// The client's latest RTCP receiver report about the session's stream, by transport.
    receiver_report: Option<(u64, ReportBlock)>,
}

impl TransportSet {
    pub fn is_empty(&self) -> bool {
        self.transports.is_empty()
    }

    pub fn uses(&self) -> &[TransportUse] {
        &self.uses
    }

    /// The id for the next transport of `session`: unique server-wide, because the session
    /// id sits in its upper bits.
    pub fn next_id(&mut self, session: u64) -> u64 {
        self.set_up += 1;
        (session << 8) | (self.set_up & 0xff)
    }

    pub fn add(&mut self, transport: Transport, point: &str, transport_plugin: &'static str) {
        self.uses.push(TransportUse {
            id: transport.info.id,
            point: point.to_owned(),
            transport_plugin,
        });
        self.transports.push(transport);
    }

    pub fn remove(&mut self, id: u64) {
        self.transports.retain(|t| t.info.id != id);
        self.uses.retain(|used| used.id != id);
        let uses = &self.uses;
        self.counted
            .retain(|(plugin, _)| uses.iter().any(|used| used.transport_plugin == *plugin));
    }

    /// Whether the session is already counted on `transport_plugin`.
    pub fn counted_on(&self, transport_plugin: &str) -> bool {
        self.counted
            .iter()
            .any(|(plugin, _)| *plugin == transport_plugin)
    }

    /// Keep the session counted on `transport_plugin` while a transport uses it.
    pub fn count_on(&mut self, transport_plugin: &'static str, counted: GenerationSession) {
        if !self.counted_on(transport_plugin) {
            self.counted.push((transport_plugin, counted));
        }
    }

    /// The transport plugins in use, in setup order, each once.
    pub fn plugins(&self) -> Vec<String> {
        let mut plugins: Vec<String> = Vec::new();
        for used in &self.uses {
            if !plugins.iter().any(|p| p == used.transport_plugin) {
                plugins.push(used.transport_plugin.to_owned());
            }
        }
        plugins
    }

    /// Keep the client's latest receiver report about our stream from `packets`, which
    /// arrived on `transport`.
    pub fn note_rtcp(&mut self, transport: u64, packets: &[RtcpPacket]) {
        let ours = |block: &&ReportBlock| {
            self.transports
                .iter()
                .any(|t| t.info.id == transport && t.info.ssrc == block.ssrc)
        };
        let latest = packets.iter().rev().find_map(|packet| match packet {
            RtcpPacket::ReceiverReport { reports, .. } => reports.iter().find(ours).cloned(),
            _ => None,
        });
        if let Some(block) = latest {
            self.receiver_report = Some((transport, block));
        }
    }

    /// The client's latest receiver report, and the transport it came on.
    pub fn receiver_report(&self) -> Option<&(u64, ReportBlock)> {
        self.receiver_report.as_ref()
    }

    /// Whether media goes out as UDP datagrams, which nothing paces but the sender.
    pub fn has_udp(&self) -> bool {
        self.transports
            .iter()
            .any(|t| matches!(t.wire, TransportWire::Udp { .. }))
    }

    /// Where RTP goes when every transport is UDP (the point's fan-out can then send for the
    /// session); `None` with no transports or an interleaved one.
    pub fn udp_destinations(&self) -> Option<Vec<UdpDestination>> {
        self.transports
            .iter()
            .map(Transport::udp_destination)
            .collect::<Option<Vec<_>>>()
            .filter(|destinations| !destinations.is_empty())
    }

    /// The SSRC of the first transport (a paced file's RTP stream uses it).
    pub fn first_ssrc(&self) -> Option<u32> {
        self.transports.first().map(|t| t.info.ssrc)
    }

    /// Send a batch of RTP packets on every transport; interleaved frames join `out`.
    pub fn send_rtp(&mut self, batch: &RtpBatch, out: &mut OutputQueue) {
        for transport in &mut self.transports {
            if matches!(transport.wire, TransportWire::Udp { .. }) {
                out.count_datagrams(batch.data().len() as u64);
            }
            transport.send_rtp(batch, out);
        }
    }

    /// RTCP sender reports on every transport for the stream's `rtp_time`; the next ones are
    /// due a report interval after `now`.
    pub fn send_reports(&mut self, rtp_time: u32, out: &mut OutputQueue, now: Instant) {
        for transport in &self.transports {
            transport.send_report(rtp_time, out);
        }
        self.reports_due = Some(now + SENDER_REPORT_INTERVAL);
    }

    /// An RTCP BYE on every transport: RTP players end their playback on it.
    pub fn send_bye(&self, out: &mut OutputQueue) {
        for transport in &self.transports {
            transport.send_bye(out);
        }
    }

    /// Media started at `now`: the first reports follow shortly.
    pub fn start_reports(&mut self, now: Instant) {
        self.reports_due = Some(now + FIRST_REPORT_AFTER);
    }

    pub fn stop_reports(&mut self) {
        self.reports_due = None;
    }

    pub fn reports_due(&self) -> Option<Instant> {
        self.reports_due
    }

    /// A UDP transport's RTCP socket, where the client's receiver reports arrive, and the
    /// client's IP they must come from.
    pub fn rtcp_source(&self) -> Option<(u64, RtcpSource)> {
        self.transports
            .iter()
            .find_map(|t| t.rtcp_socket().map(|socket| (t.info.id, socket)))
    }
}

/// Where a client's RTCP arrives, and the IP it must come from.
pub type RtcpSource = (Arc<UdpSocket>, IpAddr);

/// The IPs of a session's connection, which UDP transports bind on and send to.
pub fn connection_ips(local: &str, peer: &str) -> Result<(IpAddr, IpAddr), TransportRefusal> {
    let local = local.parse::<SocketAddr>().map(|a| a.ip());
    let peer = peer.parse::<SocketAddr>().map(|a| a.ip());
    match (local, peer) {
        (Ok(local), Ok(peer)) => Ok((local, peer)),
        _ => Err(TransportRefusal::AddressesUnknown),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::rtp::RtpPacketizer;
    use ferrocast_plugin_api::TransportRequest;

    fn interleaved(id: u64) -> Transport {
        let request = TransportRequest {
            path: "live".into(),
            kind: TransportKind::TCP_INTERLEAVED,
            client_rtp_port: 0,
            client_rtcp_port: 0,
            rtp_channel: 0,
            rtcp_channel: 1,
        };
        let localhost: IpAddr = "127.0.0.1".parse().unwrap();
        Transport::open(id, "tcp", &request, localhost, localhost, 7).unwrap()
    }

    #[test]
    fn transport_ids_carry_the_session_and_a_counter() {
        let mut set = TransportSet::default();
        assert_eq!(set.next_id(3), (3 << 8) | 1);
        assert_eq!(set.next_id(3), (3 << 8) | 2);
    }

    #[test]
    fn each_transport_records_its_point_and_plugin_until_torn_down() {
        let mut set = TransportSet::default();
        let id = set.next_id(1);
        set.add(interleaved(id), "live", "tcp");
        assert_eq!(
            set.uses(),
            &[TransportUse {
                id,
                point: "live".into(),
                transport_plugin: "tcp"
            }]
        );
        assert_eq!(set.first_ssrc(), Some(7));
        set.remove(id);
        assert!(set.is_empty() && set.uses().is_empty());
    }

    #[test]
    fn reports_start_soon_after_play_then_follow_the_interval() {
        let now = Instant::now();
        let mut set = TransportSet::default();
        set.add(interleaved(1), "live", "tcp");
        set.start_reports(now);
        assert_eq!(set.reports_due(), Some(now + FIRST_REPORT_AFTER));
        let mut out = OutputQueue::default();
        set.send_reports(0, &mut out, now + FIRST_REPORT_AFTER);
        assert_eq!(
            set.reports_due(),
            Some(now + FIRST_REPORT_AFTER + SENDER_REPORT_INTERVAL)
        );
        assert!(!out.is_empty(), "interleaved reports go on the connection");
        set.stop_reports();
        assert_eq!(set.reports_due(), None);
    }

    #[test]
    fn interleaved_rtp_and_bye_go_into_the_output_queue() {
        let mut set = TransportSet::default();
        set.add(interleaved(1), "live", "tcp");
        let mut out = OutputQueue::default();
        let batch = RtpPacketizer::new(7, 0).packetize(&[0x47u8; 188], 0);
        set.send_rtp(&batch, &mut out);
        assert_eq!(out.queued_bytes(), 4 + 200);
        set.send_bye(&mut out);
        assert!(out.queued_bytes() > 204);
    }

    #[test]
    fn the_last_receiver_report_about_our_stream_is_kept() {
        let mut set = TransportSet::default();
        set.add(interleaved(1), "live", "tcp");
        let block = |ssrc, lost| ReportBlock {
            ssrc,
            cumulative_lost: lost,
            jitter: 90,
            ..ReportBlock::default()
        };
        let report = |blocks| RtcpPacket::ReceiverReport {
            ssrc: 99,
            reports: blocks,
        };
        set.note_rtcp(1, &[report(vec![block(8, 5)])]);
        assert_eq!(set.receiver_report(), None, "about another stream");
        set.note_rtcp(1, &[report(vec![block(7, 2)]), report(vec![block(7, 3)])]);
        assert_eq!(set.receiver_report(), Some(&(1, block(7, 3))));
        set.note_rtcp(
            1,
            &[RtcpPacket::Bye {
                sources: vec![99],
                reason: None,
            }],
        );
        assert_eq!(set.receiver_report(), Some(&(1, block(7, 3))), "kept");
    }

    #[test]
    fn transport_plugins_are_listed_once_and_interleaved_rtp_is_not_counted_as_datagrams() {
        let mut set = TransportSet::default();
        set.add(interleaved(1), "live", "tcp");
        set.add(interleaved(2), "live", "tcp");
        assert_eq!(set.plugins(), vec!["tcp".to_owned()]);
        assert!(!set.has_udp());
        let mut out = OutputQueue::default();
        let batch = RtpPacketizer::new(7, 0).packetize(&[0x47u8; 188], 0);
        set.send_rtp(&batch, &mut out);
        assert_eq!(
            out.bytes_sent(),
            0,
            "interleaved RTP counts once the socket takes it"
        );
        set.remove(1);
        set.remove(2);
        assert!(set.plugins().is_empty());
    }

    #[tokio::test]
    async fn only_a_session_whose_transports_are_all_udp_has_udp_destinations() {
        let mut set = TransportSet::default();
        assert!(set.udp_destinations().is_none(), "no transports");
        let request = TransportRequest {
            path: "live".into(),
            kind: TransportKind::UDP_UNICAST,
            client_rtp_port: 40_000,
            client_rtcp_port: 40_001,
            rtp_channel: 0,
            rtcp_channel: 0,
        };
        let localhost: IpAddr = "127.0.0.1".parse().unwrap();
        let udp = Transport::open(1, "udp", &request, localhost, localhost, 7).unwrap();
        set.add(udp, "live", "udp");
        let destinations = set.udp_destinations().unwrap();
        assert_eq!(destinations.len(), 1);
        assert_eq!(destinations[0].to, "127.0.0.1:40000".parse().unwrap());
        set.add(interleaved(2), "live", "tcp");
        assert!(set.udp_destinations().is_none(), "one is interleaved");
    }

    #[test]
    fn connection_addresses_must_parse() {
        assert!(connection_ips("127.0.0.1:554", "10.0.0.1:4000").is_ok());
        assert!(matches!(
            connection_ips("", "10.0.0.1:4000"),
            Err(TransportRefusal::AddressesUnknown)
        ));
    }
}

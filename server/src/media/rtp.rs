//! RTP/MP2T framing (RFC 2250 over RFC 3550) and the bits of RTCP the server
//! needs, built so a chunk is framed once and the result shared by every
//! receiver of a publishing point.
//!
//! - [`RtpPacketizer`] packs whole TS packets, seven per RTP packet, into one
//!   [`RtpBatch`] buffer that callers slice without copying.
//! - [`RtpClock`] turns PCRs into a 90 kHz RTP timestamp that never runs
//!   backwards, even when the PCR wraps or a new encoder takes over.
//! - [`sender_report`], [`receiver_report`], [`bye`] build RTCP packets and
//!   [`parse_rtcp`] reads what receivers send (used as keep-alive and to
//!   notice BYE).
//! - [`interleaved_header`] frames RTP/RTCP for RTSP over TCP (RFC 2326 §10.12).

use std::ops::Range;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{BufMut, Bytes, BytesMut};
use thiserror::Error;

use super::ts::TS_PACKET_LEN;

/// Static payload type of MPEG-2 transport streams (RFC 3551).
pub const PAYLOAD_TYPE_MP2T: u8 = 33;
/// Fixed RTP header without CSRCs or extension.
pub const RTP_HEADER_LEN: usize = 12;
/// Seven TS packets (1316 bytes) plus headers stay under a 1500-byte MTU
/// with room for IP/UDP or RTSP interleaving.
pub const TS_PACKETS_PER_RTP: usize = 7;
/// Largest RTP payload the packetizer produces.
pub const MAX_RTP_PAYLOAD: usize = TS_PACKETS_PER_RTP * TS_PACKET_LEN;
/// RTP clock rate of MP2T.
pub const RTP_CLOCK_HZ: u64 = 90_000;

const RTP_VERSION: u8 = 2;

/// Frames whole TS packets as RTP/MP2T packets.
///
/// One packetizer serves one RTP stream (one SSRC): sequence numbers and the
/// sender counters continue across calls, so the batches it produces can be
/// sent unchanged to every receiver of that stream.
#[derive(Debug, Clone)]
pub struct RtpPacketizer {
    ssrc: u32,
    seq: u16,
    packet_count: u32,
    octet_count: u32,
}

impl RtpPacketizer {
    /// `ssrc` and `initial_seq` should be random (RFC 3550 §5.1) and are
    /// chosen by the caller, which knows its source of randomness.
    pub fn new(ssrc: u32, initial_seq: u16) -> Self {
        Self {
            ssrc,
            seq: initial_seq,
            packet_count: 0,
            octet_count: 0,
        }
    }

    pub fn ssrc(&self) -> u32 {
        self.ssrc
    }

    /// Sequence number the next RTP packet will carry (for RTSP `RTP-Info`).
    pub fn next_seq(&self) -> u16 {
        self.seq
    }

    /// RTP packets produced so far, wrapping as the SR field does.
    pub fn packet_count(&self) -> u32 {
        self.packet_count
    }

    /// Payload octets produced so far (headers excluded), wrapping as the SR field does.
    pub fn octet_count(&self) -> u32 {
        self.octet_count
    }

    /// Frames `ts` (whole TS packets) into RTP packets of up to seven TS
    /// packets each, all stamped with `timestamp`, back to back in one buffer.
    ///
    /// A trailing partial TS packet is dropped: RFC 2250 payloads hold whole
    /// packets, and the callers' chunks always do.
    pub fn packetize(&mut self, ts: &[u8], timestamp: u32) -> RtpBatch {
        let whole = ts.len() - ts.len() % TS_PACKET_LEN;
        if whole != ts.len() {
            tracing::warn!(
                event = crate::events::MEDIA_DROPPED,
                len = ts.len(),
                "dropping trailing partial TS packet before RTP framing"
            );
        }
        let ts = &ts[..whole];
        let count = ts.len().div_ceil(MAX_RTP_PAYLOAD);
        let mut data = BytesMut::with_capacity(ts.len() + count * RTP_HEADER_LEN);
        let mut packets = Vec::with_capacity(count);
        let first_seq = self.seq;
        for payload in ts.chunks(MAX_RTP_PAYLOAD) {
            let start = data.len();
            data.put_u8(RTP_VERSION << 6); // P=0, X=0, CC=0
            data.put_u8(PAYLOAD_TYPE_MP2T); // M=0
            data.put_u16(self.seq);
            data.put_u32(timestamp);
            data.put_u32(self.ssrc);
            data.put_slice(payload);
            packets.push(start..data.len());
            self.seq = self.seq.wrapping_add(1);
            self.packet_count = self.packet_count.wrapping_add(1);
            self.octet_count = self.octet_count.wrapping_add(payload.len() as u32);
        }
        RtpBatch {
            data: data.freeze(),
            packets,
            first_seq,
        }
    }
}

/// RTP packets stored back to back in one shared buffer.
///
/// Cloning is cheap (reference counted) and [`RtpBatch::packet`] slices
/// without copying, so one batch can feed any number of receivers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtpBatch {
    data: Bytes,
    packets: Vec<Range<usize>>,
    first_seq: u16,
}

impl RtpBatch {
    /// Number of RTP packets.
    pub fn len(&self) -> usize {
        self.packets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.packets.is_empty()
    }

    /// All packets back to back, headers included.
    pub fn data(&self) -> &Bytes {
        &self.data
    }

    /// Byte range of each packet within [`RtpBatch::data`].
    pub fn ranges(&self) -> &[Range<usize>] {
        &self.packets
    }

    /// Sequence number of the first packet.
    pub fn first_seq(&self) -> u16 {
        self.first_seq
    }

    /// Packet `i` as a zero-copy slice. Panics if `i >= len()`, like indexing.
    pub fn packet(&self, i: usize) -> Bytes {
        self.data.slice(self.packets[i].clone())
    }

    /// Every packet, in order, as zero-copy slices.
    pub fn iter(&self) -> impl Iterator<Item = Bytes> + '_ {
        self.packets
            .iter()
            .map(|range| self.data.slice(range.clone()))
    }
}

/// 90 kHz ticks in a duration (truncating).
fn ticks(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos() * u128::from(RTP_CLOCK_HZ) / 1_000_000_000)
        .unwrap_or(u64::MAX)
}

/// PCR base (90 kHz) is a 33-bit counter.
const PCR_90K_WRAP: u64 = 1 << 33;
/// A larger forward PCR step is a discontinuity, not elapsed time.
const MAX_PCR_STEP_90K: u64 = 2 * RTP_CLOCK_HZ;

#[derive(Debug, Clone, Copy)]
struct PcrAnchor {
    pcr_90k: u64,
    /// Clock ticks (since the clock's origin) that this PCR maps to.
    ticks: u64,
    at: Instant,
}

/// Maps PCRs (90 kHz, 33-bit, wrapping) to a continuous RTP timestamp.
///
/// While the PCR runs smoothly the timestamp follows PCR deltas, so it
/// matches the stream's own timing rather than arrival jitter. On a
/// discontinuity (a wrap is not one; a backward jump, a forward jump of more
/// than 2 s, or [`RtpClock::restart`] is) the clock re-bases: the timestamp
/// continues from the last one issued plus the wall-clock time elapsed since,
/// so receivers see neither a jump nor a step backwards when a new encoder
/// takes over. Chunks without a PCR get the last PCR's timestamp advanced by
/// the wall-clock time since that PCR arrived.
///
/// Timestamps never decrease (modulo the 32-bit RTP wrap): if wall-clock
/// extrapolation ran ahead of the next PCR, the timestamp holds still until
/// the PCR catches up.
///
/// For on-demand files, call `restart` after a seek too: a short forward seek
/// moves the PCR by less than 2 s and would otherwise count as media time.
#[derive(Debug, Clone)]
pub struct RtpClock {
    initial: u32,
    /// Largest value issued, in ticks since the origin (not wrapped).
    last_ticks: u64,
    /// When `last_ticks` was issued; `None` before the first timestamp.
    last_at: Option<Instant>,
    anchor: Option<PcrAnchor>,
    restart: bool,
}

impl RtpClock {
    /// `initial` is the first timestamp issued; RFC 3550 wants it random.
    pub fn new(initial: u32) -> Self {
        Self {
            initial,
            last_ticks: 0,
            last_at: None,
            anchor: None,
            restart: false,
        }
    }

    /// The source changed (e.g. a new encoder connected): the next PCR is
    /// unrelated to the previous ones and re-bases the clock.
    pub fn restart(&mut self) {
        self.restart = true;
    }

    /// Timestamp for data sent at `now` whose first PCR (90 kHz) is `pcr_90k`.
    pub fn timestamp(&mut self, pcr_90k: Option<u64>, now: Instant) -> u32 {
        let since = |at: Instant| ticks(now.saturating_duration_since(at));
        // Continuing from the last issued value keeps timing across a re-base.
        let from_wall = match self.last_at {
            Some(at) => self.last_ticks + since(at),
            None => 0,
        };
        let raw = match (pcr_90k, self.anchor) {
            (Some(pcr), Some(anchor)) if !self.restart => {
                let step = pcr_step(anchor.pcr_90k, pcr);
                if step <= MAX_PCR_STEP_90K {
                    anchor.ticks + step
                } else {
                    tracing::debug!(
                        last = anchor.pcr_90k,
                        pcr,
                        "PCR discontinuity, re-basing RTP clock"
                    );
                    from_wall
                }
            }
            (Some(_), _) => from_wall,
            (None, Some(anchor)) => anchor.ticks + since(anchor.at),
            (None, None) => from_wall,
        };
        if let Some(pcr) = pcr_90k {
            // Anchor on the PCR's own mapping, not the clamped output, so a
            // temporary hold does not shift all later timestamps.
            self.anchor = Some(PcrAnchor {
                pcr_90k: pcr % PCR_90K_WRAP,
                ticks: raw,
                at: now,
            });
            self.restart = false;
        }
        self.last_ticks = self.last_ticks.max(raw);
        self.last_at = Some(now);
        self.initial.wrapping_add(self.last_ticks as u32)
    }

    /// Last timestamp issued (the initial one before any).
    pub fn last(&self) -> u32 {
        self.initial.wrapping_add(self.last_ticks as u32)
    }
}

/// Forward distance from `from` to `to` on the 33-bit PCR circle.
fn pcr_step(from: u64, to: u64) -> u64 {
    (to % PCR_90K_WRAP + PCR_90K_WRAP - from % PCR_90K_WRAP) % PCR_90K_WRAP
}

/// Length of an RTSP interleaved frame header.
pub const INTERLEAVED_HEADER_LEN: usize = 4;

/// RTSP interleaved frame header (RFC 2326 §10.12): `$`, channel, length.
pub fn interleaved_header(channel: u8, len: u16) -> [u8; INTERLEAVED_HEADER_LEN] {
    let [high, low] = len.to_be_bytes();
    [b'$', channel, high, low]
}

/// Channel and payload length of an interleaved frame header at the start
/// of `buf`, or `None` if `buf` does not start with one.
pub fn parse_interleaved_header(buf: &[u8]) -> Option<(u8, u16)> {
    match buf {
        [b'$', channel, high, low, ..] => Some((*channel, u16::from_be_bytes([*high, *low]))),
        _ => None,
    }
}

/// RTCP packet types (RFC 3550 §12.1).
pub const RTCP_SR: u8 = 200;
pub const RTCP_RR: u8 = 201;
pub const RTCP_SDES: u8 = 202;
pub const RTCP_BYE: u8 = 203;
pub const RTCP_APP: u8 = 204;

const SDES_END: u8 = 0;
const SDES_CNAME: u8 = 1;
/// Seconds from the NTP epoch (1900) to the Unix epoch (1970).
const NTP_UNIX_OFFSET: u64 = 2_208_988_800;
/// Report count and source count are 5-bit fields.
const MAX_RTCP_COUNT: usize = 31;

/// 64-bit NTP timestamp as carried in a sender report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NtpTime {
    pub seconds: u32,
    pub fraction: u32,
}

impl NtpTime {
    pub fn from_system_time(time: SystemTime) -> Self {
        let since_unix = time.duration_since(UNIX_EPOCH).unwrap_or_default();
        let fraction = (u64::from(since_unix.subsec_nanos()) << 32) / 1_000_000_000;
        Self {
            // The NTP era wraps in 2036; the field wraps with it.
            seconds: (since_unix.as_secs() + NTP_UNIX_OFFSET) as u32,
            fraction: fraction as u32,
        }
    }

    pub fn now() -> Self {
        Self::from_system_time(SystemTime::now())
    }

    /// The middle 32 bits, as echoed in a report block's LSR field.
    pub fn middle_32(&self) -> u32 {
        (self.seconds << 16) | (self.fraction >> 16)
    }
}

impl From<SystemTime> for NtpTime {
    fn from(time: SystemTime) -> Self {
        Self::from_system_time(time)
    }
}

/// Reception report block carried by SR and RR packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReportBlock {
    pub ssrc: u32,
    pub fraction_lost: u8,
    /// 24-bit signed cumulative number of packets lost.
    pub cumulative_lost: i32,
    pub highest_seq: u32,
    pub jitter: u32,
    pub last_sr: u32,
    pub delay_since_last_sr: u32,
}

impl ReportBlock {
    const LEN: usize = 24;

    fn write(&self, out: &mut BytesMut) {
        out.put_u32(self.ssrc);
        out.put_u8(self.fraction_lost);
        let lost = self.cumulative_lost.clamp(-(1 << 23), (1 << 23) - 1) as u32;
        out.put_slice(&lost.to_be_bytes()[1..]);
        out.put_u32(self.highest_seq);
        out.put_u32(self.jitter);
        out.put_u32(self.last_sr);
        out.put_u32(self.delay_since_last_sr);
    }

    fn read(b: &[u8]) -> Self {
        // Sign-extend the 24-bit count.
        let cumulative_lost = i32::from_be_bytes([b[5], b[6], b[7], 0]) >> 8;
        Self {
            ssrc: be32(&b[0..]),
            fraction_lost: b[4],
            cumulative_lost,
            highest_seq: be32(&b[8..]),
            jitter: be32(&b[12..]),
            last_sr: be32(&b[16..]),
            delay_since_last_sr: be32(&b[20..]),
        }
    }
}

/// Sender report contents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SenderReport {
    pub ssrc: u32,
    pub ntp: NtpTime,
    pub rtp_time: u32,
    pub packet_count: u32,
    pub octet_count: u32,
    pub reports: Vec<ReportBlock>,
}

/// One SDES chunk; only CNAME is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SdesChunk {
    pub ssrc: u32,
    pub cname: Option<String>,
}

/// One packet of a (compound) RTCP datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RtcpPacket {
    SenderReport(SenderReport),
    ReceiverReport {
        ssrc: u32,
        reports: Vec<ReportBlock>,
    },
    SourceDescription(Vec<SdesChunk>),
    Bye {
        sources: Vec<u32>,
        reason: Option<String>,
    },
    /// APP, feedback and anything else: type and, if present, the first SSRC.
    Other {
        packet_type: u8,
        ssrc: Option<u32>,
    },
}

impl RtcpPacket {
    /// SSRC of the reporter (the first source for SDES and BYE), if any.
    pub fn ssrc(&self) -> Option<u32> {
        match self {
            Self::SenderReport(sr) => Some(sr.ssrc),
            Self::ReceiverReport { ssrc, .. } => Some(*ssrc),
            Self::SourceDescription(chunks) => chunks.first().map(|chunk| chunk.ssrc),
            Self::Bye { sources, .. } => sources.first().copied(),
            Self::Other { ssrc, .. } => *ssrc,
        }
    }

    pub fn packet_type(&self) -> u8 {
        match self {
            Self::SenderReport(_) => RTCP_SR,
            Self::ReceiverReport { .. } => RTCP_RR,
            Self::SourceDescription(_) => RTCP_SDES,
            Self::Bye { .. } => RTCP_BYE,
            Self::Other { packet_type, .. } => *packet_type,
        }
    }
}

/// Why bytes are not a valid RTCP datagram.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum RtcpError {
    #[error("empty RTCP datagram")]
    Empty,
    #[error("RTCP header needs 4 bytes, {0} left")]
    ShortHeader(usize),
    #[error("unsupported RTCP version {0}")]
    Version(u8),
    #[error("RTCP packet declares {declared} bytes, {available} left")]
    Truncated { declared: usize, available: usize },
    #[error("malformed RTCP packet (type {packet_type}): {reason}")]
    Malformed {
        packet_type: u8,
        reason: &'static str,
    },
}

/// Writes an RTCP header whose length field is patched by [`finish_rtcp`].
fn start_rtcp(out: &mut BytesMut, count: usize, packet_type: u8) -> usize {
    let start = out.len();
    out.put_u8((RTP_VERSION << 6) | count as u8);
    out.put_u8(packet_type);
    out.put_u16(0);
    start
}

/// Pads the packet begun at `start` to 32 bits and sets its length field.
fn finish_rtcp(out: &mut BytesMut, start: usize) {
    while (out.len() - start) % 4 != 0 {
        out.put_u8(0);
    }
    let words = ((out.len() - start) / 4 - 1) as u16;
    out[start + 2..start + 4].copy_from_slice(&words.to_be_bytes());
}

/// Compound SR + SDES(CNAME) packet, as RFC 3550 §6.1 requires every RTCP
/// datagram to start with a report and carry a CNAME. Carries no report
/// blocks: the server only sends.
pub fn sender_report(
    ssrc: u32,
    ntp: NtpTime,
    rtp_time: u32,
    packet_count: u32,
    octet_count: u32,
    cname: &str,
) -> Bytes {
    let mut out = BytesMut::with_capacity(28 + 12 + cname.len());
    let start = start_rtcp(&mut out, 0, RTCP_SR);
    out.put_u32(ssrc);
    out.put_u32(ntp.seconds);
    out.put_u32(ntp.fraction);
    out.put_u32(rtp_time);
    out.put_u32(packet_count);
    out.put_u32(octet_count);
    finish_rtcp(&mut out, start);
    put_sdes_cname(&mut out, ssrc, cname);
    out.freeze()
}

/// Compound RR + SDES(CNAME) packet; at most 31 blocks are sent.
pub fn receiver_report(ssrc: u32, reports: &[ReportBlock], cname: &str) -> Bytes {
    let reports = &reports[..reports.len().min(MAX_RTCP_COUNT)];
    let mut out = BytesMut::with_capacity(8 + ReportBlock::LEN * reports.len() + 12 + cname.len());
    let start = start_rtcp(&mut out, reports.len(), RTCP_RR);
    out.put_u32(ssrc);
    for block in reports {
        block.write(&mut out);
    }
    finish_rtcp(&mut out, start);
    put_sdes_cname(&mut out, ssrc, cname);
    out.freeze()
}

/// BYE for `ssrc`, with an optional reason (truncated to 255 bytes). RFC 3550
/// wants it appended to a report in a compound datagram.
pub fn bye(ssrc: u32, reason: Option<&str>) -> Bytes {
    let mut out = BytesMut::with_capacity(8 + 256);
    let start = start_rtcp(&mut out, 1, RTCP_BYE);
    out.put_u32(ssrc);
    if let Some(reason) = reason {
        let reason = truncate_utf8(reason, 255);
        out.put_u8(reason.len() as u8);
        out.put_slice(reason.as_bytes());
    }
    finish_rtcp(&mut out, start);
    out.freeze()
}

fn put_sdes_cname(out: &mut BytesMut, ssrc: u32, cname: &str) {
    let cname = truncate_utf8(cname, 255);
    let start = start_rtcp(out, 1, RTCP_SDES);
    out.put_u32(ssrc);
    out.put_u8(SDES_CNAME);
    out.put_u8(cname.len() as u8);
    out.put_slice(cname.as_bytes());
    // The item list ends with at least one null octet, then pads to 32 bits.
    out.put_u8(SDES_END);
    finish_rtcp(out, start);
}

fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// Parses a (compound) RTCP datagram. Strict about structure (version 2,
/// lengths that fit, padding) but not about packet order, so a reduced-size
/// or odd receiver still counts as alive. Never panics.
pub fn parse_rtcp(mut buf: &[u8]) -> Result<Vec<RtcpPacket>, RtcpError> {
    if buf.is_empty() {
        return Err(RtcpError::Empty);
    }
    let mut packets = Vec::new();
    while !buf.is_empty() {
        let header: [u8; 4] = buf
            .get(..4)
            .and_then(|h| h.try_into().ok())
            .ok_or(RtcpError::ShortHeader(buf.len()))?;
        let version = header[0] >> 6;
        if version != RTP_VERSION {
            return Err(RtcpError::Version(version));
        }
        let packet_type = header[1];
        let declared = (usize::from(u16::from_be_bytes([header[2], header[3]])) + 1) * 4;
        let packet = buf.get(..declared).ok_or(RtcpError::Truncated {
            declared,
            available: buf.len(),
        })?;
        buf = &buf[declared..];
        let malformed = |reason| RtcpError::Malformed {
            packet_type,
            reason,
        };
        let mut body = &packet[4..];
        if header[0] & 0x20 != 0 {
            let padding = usize::from(*packet.last().unwrap_or(&0));
            if padding == 0 || padding > body.len() {
                return Err(malformed("bad padding length"));
            }
            body = &body[..body.len() - padding];
        }
        let count = usize::from(header[0] & 0x1F);
        packets.push(parse_one(packet_type, count, body).map_err(malformed)?);
    }
    Ok(packets)
}

fn parse_one(packet_type: u8, count: usize, body: &[u8]) -> Result<RtcpPacket, &'static str> {
    let report_blocks = |blocks: &[u8]| -> Result<Vec<ReportBlock>, &'static str> {
        let blocks = blocks
            .get(..count * ReportBlock::LEN)
            .ok_or("report blocks run past the packet")?;
        Ok(blocks
            .chunks_exact(ReportBlock::LEN)
            .map(ReportBlock::read)
            .collect())
    };
    Ok(match packet_type {
        RTCP_SR => {
            if body.len() < 24 {
                return Err("sender info truncated");
            }
            RtcpPacket::SenderReport(SenderReport {
                ssrc: be32(body),
                ntp: NtpTime {
                    seconds: be32(&body[4..]),
                    fraction: be32(&body[8..]),
                },
                rtp_time: be32(&body[12..]),
                packet_count: be32(&body[16..]),
                octet_count: be32(&body[20..]),
                reports: report_blocks(&body[24..])?,
            })
        }
        RTCP_RR => {
            if body.len() < 4 {
                return Err("reporter SSRC missing");
            }
            RtcpPacket::ReceiverReport {
                ssrc: be32(body),
                reports: report_blocks(&body[4..])?,
            }
        }
        RTCP_SDES => RtcpPacket::SourceDescription(parse_sdes(count, body)?),
        RTCP_BYE => {
            let sources = body
                .get(..count * 4)
                .ok_or("BYE sources run past the packet")?;
            let rest = &body[count * 4..];
            let reason = match rest.split_first() {
                Some((&len, text)) if len > 0 => Some(String::from_utf8_lossy(
                    text.get(..usize::from(len))
                        .ok_or("BYE reason runs past the packet")?,
                )),
                _ => None,
            };
            RtcpPacket::Bye {
                sources: sources.chunks_exact(4).map(be32).collect(),
                reason: reason.map(|r| r.into_owned()),
            }
        }
        _ => RtcpPacket::Other {
            packet_type,
            ssrc: body.get(..4).map(be32),
        },
    })
}

fn parse_sdes(count: usize, body: &[u8]) -> Result<Vec<SdesChunk>, &'static str> {
    let mut chunks = Vec::with_capacity(count);
    let mut pos = 0;
    for _ in 0..count {
        let ssrc = body.get(pos..pos + 4).ok_or("SDES chunk truncated")?;
        let mut chunk = SdesChunk {
            ssrc: be32(ssrc),
            cname: None,
        };
        pos += 4;
        loop {
            let item_type = *body.get(pos).ok_or("SDES items not terminated")?;
            if item_type == SDES_END {
                // Chunks start on 32-bit boundaries (the body itself does).
                pos = (pos + 4) & !3;
                break;
            }
            let len = usize::from(*body.get(pos + 1).ok_or("SDES item truncated")?);
            let text = body
                .get(pos + 2..pos + 2 + len)
                .ok_or("SDES item runs past the packet")?;
            if item_type == SDES_CNAME {
                chunk.cname = Some(String::from_utf8_lossy(text).into_owned());
            }
            pos += 2 + len;
        }
        chunks.push(chunk);
    }
    Ok(chunks)
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::super::ts::{packets, TsPacket};
    use super::*;

    fn ts_packets(n: usize) -> Vec<u8> {
        (0..n)
            .flat_map(|i| {
                PacketSpec::new(VIDEO_PID)
                    .cc(i as u8)
                    .payload(&[i as u8; 184])
                    .build()
            })
            .collect()
    }

    fn header(packet: &[u8]) -> (u8, u8, u16, u32, u32) {
        (
            packet[0],
            packet[1],
            u16::from_be_bytes([packet[2], packet[3]]),
            be32(&packet[4..]),
            be32(&packet[8..]),
        )
    }

    #[test]
    fn packs_seven_ts_packets_per_rtp_packet() {
        let ts = ts_packets(16);
        let mut packetizer = RtpPacketizer::new(0xDEAD_BEEF, 100);
        let batch = packetizer.packetize(&ts, 9000);
        assert_eq!(batch.len(), 3);
        assert_eq!(batch.first_seq(), 100);
        let sizes: Vec<usize> = batch.iter().map(|p| p.len()).collect();
        assert_eq!(sizes, vec![12 + 1316, 12 + 1316, 12 + 2 * 188]);
        let mut payload = Vec::new();
        for (i, packet) in batch.iter().enumerate() {
            // V=2 P=0 X=0 CC=0 | M=0 PT=33 | seq | ts | ssrc
            assert_eq!(
                header(&packet),
                (0x80, 33, 100 + i as u16, 9000, 0xDEAD_BEEF)
            );
            assert!(packets(&packet[12..]).all(|p| p.pid() == VIDEO_PID));
            payload.extend_from_slice(&packet[12..]);
        }
        assert_eq!(payload, ts);
        assert_eq!(packetizer.next_seq(), 103);
        assert_eq!(packetizer.packet_count(), 3);
        assert_eq!(packetizer.octet_count(), 16 * 188);
        assert_eq!(packetizer.ssrc(), 0xDEAD_BEEF);
    }

    #[test]
    fn sequence_continues_across_calls_and_wraps() {
        let mut packetizer = RtpPacketizer::new(1, 65_534);
        let first = packetizer.packetize(&ts_packets(7), 0);
        let second = packetizer.packetize(&ts_packets(15), 0);
        let seqs: Vec<u16> = first
            .iter()
            .chain(second.iter())
            .map(|p| header(&p).2)
            .collect();
        assert_eq!(seqs, vec![65_534, 65_535, 0, 1]);
        assert_eq!(second.first_seq(), 65_535);
        assert_eq!(packetizer.next_seq(), 2);
    }

    #[test]
    fn batch_slices_share_one_buffer() {
        let mut packetizer = RtpPacketizer::new(7, 0);
        let batch = packetizer.packetize(&ts_packets(10), 0);
        let data_addr = batch.data().as_ptr() as usize;
        assert_eq!(batch.ranges(), &[0..1328, 1328..1328 + 12 + 564]);
        let second = batch.packet(1);
        // Zero-copy: the slice points into the batch's buffer.
        assert_eq!(second.as_ptr() as usize, data_addr + 1328);
        assert_eq!(&second[..], &batch.data()[1328..]);
        assert_eq!(batch.data().len(), 1328 + 576);
    }

    #[test]
    fn empty_input_and_partial_packet() {
        let mut packetizer = RtpPacketizer::new(7, 5);
        let batch = packetizer.packetize(&[], 0);
        assert!(batch.is_empty());
        assert_eq!(packetizer.next_seq(), 5);

        let mut ts = ts_packets(2);
        ts.extend_from_slice(&[0x47, 1, 2]);
        let batch = packetizer.packetize(&ts, 0);
        assert_eq!(batch.len(), 1);
        assert_eq!(batch.packet(0).len(), 12 + 2 * 188);
        assert!(TsPacket::new(&batch.packet(0)[12 + 188..]).is_ok());
    }

    const SEC: u64 = 90_000;

    #[test]
    fn clock_follows_pcr_deltas_not_arrival_jitter() {
        let t0 = Instant::now();
        let mut clock = RtpClock::new(1000);
        assert_eq!(clock.timestamp(Some(5 * SEC), t0), 1000);
        // Arrives late: the timestamp still follows the PCR.
        let ms = Duration::from_millis;
        assert_eq!(
            clock.timestamp(Some(5 * SEC + 3600), t0 + ms(70)),
            1000 + 3600
        );
        assert_eq!(
            clock.timestamp(Some(5 * SEC + 7200), t0 + ms(75)),
            1000 + 7200
        );
        // No PCR: extrapolated from wall clock since the last PCR.
        assert_eq!(clock.timestamp(None, t0 + ms(75 + 20)), 1000 + 7200 + 1800);
        assert_eq!(clock.last(), 1000 + 9000);
    }

    #[test]
    fn clock_unwraps_33_bit_pcr() {
        let t0 = Instant::now();
        let mut clock = RtpClock::new(u32::MAX - 100);
        let start = (1 << 33) - SEC / 2;
        let mut last = clock.timestamp(Some(start), t0);
        for i in 1..=20u64 {
            let pcr = (start + i * 4500) % (1 << 33);
            let now = t0 + Duration::from_millis(i * 50);
            let ts = clock.timestamp(Some(pcr), now);
            // 4500 ticks per step, straight through the PCR and RTP wraps.
            assert_eq!(ts.wrapping_sub(last), 4500, "step {i}");
            last = ts;
        }
        assert_eq!(last, (u32::MAX - 100).wrapping_add(20 * 4500));
    }

    #[test]
    fn clock_rebases_on_restart_and_jumps() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut clock = RtpClock::new(0);
        clock.timestamp(Some(100 * SEC), t0);
        assert_eq!(
            clock.timestamp(Some(100 * SEC + SEC), t0 + ms(1000)),
            90_000
        );

        // A new encoder starting from a small PCR: continue by wall clock.
        clock.restart();
        assert_eq!(clock.timestamp(Some(42), t0 + ms(1500)), 90_000 + 45_000);
        assert_eq!(clock.timestamp(Some(42 + 900), t0 + ms(1510)), 135_900);

        // Backwards without restart: still a re-base, never a step back.
        assert_eq!(clock.timestamp(Some(10), t0 + ms(1610)), 135_900 + 9000);
        // Forward by more than 2 s: re-based on wall clock too.
        assert_eq!(
            clock.timestamp(Some(10 + 10 * SEC), t0 + ms(1710)),
            144_900 + 9000
        );
        // And then follows the new PCRs again.
        assert_eq!(
            clock.timestamp(Some(10 + 10 * SEC + 1800), t0 + ms(1800)),
            153_900 + 1800
        );
    }

    #[test]
    fn clock_never_goes_backwards() {
        let t0 = Instant::now();
        let mut clock = RtpClock::new(0x7FFF_FFF0);
        let mut state = 0x2545_F491u32;
        let mut rand = move || {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state
        };
        let mut pcr = (1u64 << 33) - 3 * SEC;
        let mut now = t0;
        let mut last = clock.timestamp(Some(pcr), now);
        for _ in 0..5000 {
            now += Duration::from_millis(u64::from(rand() % 60));
            let pcr_now = match rand() % 10 {
                0 => None,
                1 => {
                    clock.restart();
                    pcr = u64::from(rand()) << 1;
                    Some(pcr)
                }
                2 => Some(u64::from(rand()) % (1 << 33)), // garbage jump
                _ => {
                    pcr = (pcr + u64::from(rand() % 9000)) % (1 << 33);
                    Some(pcr)
                }
            };
            let ts = clock.timestamp(pcr_now, now);
            let step = ts.wrapping_sub(last);
            assert!(step < 1 << 31, "went backwards: {last} -> {ts}");
            last = ts;
        }
    }

    #[test]
    fn interleaved_framing() {
        assert_eq!(interleaved_header(1, 0x0524), [b'$', 1, 0x05, 0x24]);
        assert_eq!(
            parse_interleaved_header(&[b'$', 3, 0, 28, 0x80]),
            Some((3, 28))
        );
        assert_eq!(parse_interleaved_header(b"RTSP/1.0"), None);
        assert_eq!(parse_interleaved_header(b"$\x00"), None);
    }

    #[test]
    fn ntp_from_system_time() {
        let t = UNIX_EPOCH + Duration::new(1_700_000_000, 500_000_000);
        let ntp = NtpTime::from(t);
        assert_eq!(u64::from(ntp.seconds), 1_700_000_000 + NTP_UNIX_OFFSET);
        assert_eq!(ntp.fraction, 1 << 31);
        assert_eq!(ntp.middle_32(), (ntp.seconds << 16) | 0x8000);
    }

    #[test]
    fn sender_report_round_trips() {
        let ntp = NtpTime {
            seconds: 0xE000_0001,
            fraction: 0x1234_5678,
        };
        let sr = sender_report(0xCAFE, ntp, 123_456, 10, 13_160, "ferrocast@host");
        // SR (28 bytes) + SDES: header, SSRC, CNAME item (2 + 14), end, pad.
        assert_eq!(sr.len(), 28 + 28);
        assert_eq!(&sr[..4], &[0x80, 200, 0, 6]);
        assert_eq!(sr[29], 202);
        let parsed = parse_rtcp(&sr).unwrap();
        assert_eq!(
            parsed,
            vec![
                RtcpPacket::SenderReport(SenderReport {
                    ssrc: 0xCAFE,
                    ntp,
                    rtp_time: 123_456,
                    packet_count: 10,
                    octet_count: 13_160,
                    reports: vec![],
                }),
                RtcpPacket::SourceDescription(vec![SdesChunk {
                    ssrc: 0xCAFE,
                    cname: Some("ferrocast@host".into()),
                }]),
            ]
        );
        // CNAME lengths that need 1..4 bytes of padding all parse back.
        for len in 0..8 {
            let cname = "x".repeat(len);
            let sr = sender_report(1, ntp, 0, 0, 0, &cname);
            assert_eq!(sr.len() % 4, 0);
            let parsed = parse_rtcp(&sr).unwrap();
            assert_eq!(
                parsed[1],
                RtcpPacket::SourceDescription(vec![SdesChunk {
                    ssrc: 1,
                    cname: Some(cname),
                }])
            );
        }
    }

    #[test]
    fn receiver_report_and_bye_round_trip() {
        let block = ReportBlock {
            ssrc: 0xCAFE,
            fraction_lost: 12,
            cumulative_lost: -3,
            highest_seq: 0x0001_0005,
            jitter: 77,
            last_sr: 0x0001_1234,
            delay_since_last_sr: 65_536,
        };
        let mut datagram =
            receiver_report(0xBEEF, &[block, ReportBlock::default()], "vlc").to_vec();
        datagram.extend_from_slice(&bye(0xBEEF, Some("teardown")));
        let parsed = parse_rtcp(&datagram).unwrap();
        assert_eq!(parsed.len(), 3);
        assert_eq!(
            parsed[0],
            RtcpPacket::ReceiverReport {
                ssrc: 0xBEEF,
                reports: vec![block, ReportBlock::default()],
            }
        );
        assert_eq!(parsed[1].packet_type(), RTCP_SDES);
        assert_eq!(
            parsed[2],
            RtcpPacket::Bye {
                sources: vec![0xBEEF],
                reason: Some("teardown".into()),
            }
        );
        assert!(parsed.iter().all(|p| p.ssrc() == Some(0xBEEF)));
        assert_eq!(
            parse_rtcp(&bye(9, None)).unwrap(),
            vec![RtcpPacket::Bye {
                sources: vec![9],
                reason: None
            }]
        );
    }

    #[test]
    fn parses_padding_and_unknown_types() {
        // APP packet with padding (P bit, last byte = 4 padding octets).
        let app = [
            0xA0, 204, 0, 3, 0, 0, 0, 5, b'n', b'a', b'm', b'e', 0, 0, 0, 4,
        ];
        assert_eq!(
            parse_rtcp(&app).unwrap(),
            vec![RtcpPacket::Other {
                packet_type: RTCP_APP,
                ssrc: Some(5)
            }]
        );
        // Empty RR (no blocks) as sent by many players.
        assert_eq!(
            parse_rtcp(&[0x80, 201, 0, 1, 0, 0, 0, 9]).unwrap(),
            vec![RtcpPacket::ReceiverReport {
                ssrc: 9,
                reports: vec![]
            }]
        );
    }

    #[test]
    fn rejects_garbage_without_panicking() {
        assert_eq!(parse_rtcp(&[]), Err(RtcpError::Empty));
        assert_eq!(parse_rtcp(&[0x80, 200]), Err(RtcpError::ShortHeader(2)));
        assert_eq!(
            parse_rtcp(&[0x40, 201, 0, 1, 0, 0, 0, 0]),
            Err(RtcpError::Version(1))
        );
        assert_eq!(
            parse_rtcp(&[0x80, 200, 0, 6, 0, 0, 0, 0]),
            Err(RtcpError::Truncated {
                declared: 28,
                available: 8
            })
        );
        // RR claiming two report blocks but carrying none.
        assert!(matches!(
            parse_rtcp(&[0x82, 201, 0, 1, 0, 0, 0, 9]),
            Err(RtcpError::Malformed {
                packet_type: 201,
                ..
            })
        ));
        // Padding count larger than the packet.
        assert!(matches!(
            parse_rtcp(&[0xA0, 201, 0, 1, 0, 0, 0, 99]),
            Err(RtcpError::Malformed { .. })
        ));
        // SDES item running past the packet.
        assert!(matches!(
            parse_rtcp(&[0x81, 202, 0, 2, 0, 0, 0, 1, 1, 200, b'a', b'b']),
            Err(RtcpError::Malformed { .. })
        ));
        // An RTP packet is not RTCP-valid past its header.
        let mut packetizer = RtpPacketizer::new(1, 0);
        let rtp = packetizer.packetize(&ts_packets(1), 0).packet(0);
        assert!(parse_rtcp(&rtp).is_err());

        let mut state = 0x1234_5678u32;
        let mut rand = move || {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state
        };
        let valid = sender_report(1, NtpTime::now(), 0, 0, 0, "cname").to_vec();
        for _ in 0..20_000 {
            let len = (rand() % 80) as usize;
            let mut data: Vec<u8> = if rand() % 2 == 0 {
                (0..len).map(|_| rand() as u8).collect()
            } else {
                // Mutations of a valid packet reach deeper into the parser.
                let mut data = valid.clone();
                for _ in 0..3 {
                    let at = rand() as usize % data.len();
                    data[at] = rand() as u8;
                }
                data.truncate(len.max(4));
                data
            };
            if rand() % 2 == 0 && !data.is_empty() {
                data[0] = 0x80 | (data[0] & 0x3F);
            }
            let _ = parse_rtcp(&data);
        }
    }
}

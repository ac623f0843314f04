//! MPEG-TS packet-level primitives: a zero-copy packet view, packet alignment
//! over an unaligned byte stream, and PAT/PMT parsing.
//!
//! Only what the server needs to cut a stream at random-access points is
//! decoded; everything else is passed through untouched.
//!
//! PSI limitation: a PAT or PMT section must fit in the packet where it starts
//! (after the pointer_field). Sections spanning several packets are rejected
//! with [`PsiError::SpansPackets`]. Single-program streams from ffmpeg and
//! typical encoders always fit; a PMT with very many streams or descriptors
//! would not.

use thiserror::Error;

/// Size of every transport stream packet.
pub const TS_PACKET_LEN: usize = 188;
/// First byte of every transport stream packet.
pub const SYNC_BYTE: u8 = 0x47;
/// PID that always carries the Program Association Table.
pub const PAT_PID: u16 = 0x0000;
/// PID of stuffing packets.
pub const NULL_PID: u16 = 0x1FFF;

/// PCR wraps at 2^33 ticks of its 90 kHz base, i.e. 2^33 * 300 ticks of 27 MHz.
pub const PCR_WRAP_27MHZ: u64 = (1 << 33) * 300;

const TABLE_ID_PAT: u8 = 0x00;
const TABLE_ID_PMT: u8 = 0x02;

/// Why a byte slice is not a TS packet.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum PacketError {
    #[error("TS packet must be {TS_PACKET_LEN} bytes, got {0}")]
    Length(usize),
    #[error("TS packet must start with sync byte 0x47, got {0:#04x}")]
    NoSync(u8),
}

/// Zero-copy view of one 188-byte TS packet.
///
/// Accessors never panic: malformed adaptation field lengths yield an empty
/// payload and no adaptation field flags.
#[derive(Clone, Copy)]
pub struct TsPacket<'a> {
    bytes: &'a [u8; TS_PACKET_LEN],
}

impl std::fmt::Debug for TsPacket<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TsPacket")
            .field("pid", &self.pid())
            .field("pusi", &self.payload_unit_start())
            .field("cc", &self.continuity_counter())
            .field("rai", &self.random_access_indicator())
            .field("pcr", &self.pcr())
            .field("payload_len", &self.payload().len())
            .finish()
    }
}

impl<'a> TsPacket<'a> {
    /// Wraps `bytes`, which must be exactly one packet starting with the sync byte.
    pub fn new(bytes: &'a [u8]) -> Result<Self, PacketError> {
        let bytes: &[u8; TS_PACKET_LEN] = bytes
            .try_into()
            .map_err(|_| PacketError::Length(bytes.len()))?;
        if bytes[0] != SYNC_BYTE {
            return Err(PacketError::NoSync(bytes[0]));
        }
        Ok(Self { bytes })
    }

    pub fn as_bytes(&self) -> &'a [u8; TS_PACKET_LEN] {
        self.bytes
    }

    pub fn transport_error(&self) -> bool {
        self.bytes[1] & 0x80 != 0
    }

    pub fn payload_unit_start(&self) -> bool {
        self.bytes[1] & 0x40 != 0
    }

    pub fn pid(&self) -> u16 {
        u16::from_be_bytes([self.bytes[1] & 0x1F, self.bytes[2]])
    }

    /// True if transport_scrambling_control is non-zero (payload is encrypted).
    pub fn scrambled(&self) -> bool {
        self.bytes[3] & 0xC0 != 0
    }

    pub fn has_adaptation_field(&self) -> bool {
        self.bytes[3] & 0x20 != 0
    }

    pub fn has_payload(&self) -> bool {
        self.bytes[3] & 0x10 != 0
    }

    pub fn continuity_counter(&self) -> u8 {
        self.bytes[3] & 0x0F
    }

    /// Adaptation field bytes after its length byte, or `None` if absent or
    /// its length runs past the packet.
    pub fn adaptation_field(&self) -> Option<&'a [u8]> {
        if !self.has_adaptation_field() {
            return None;
        }
        let len = usize::from(self.bytes[4]);
        self.bytes.get(5..5 + len)
    }

    fn adaptation_flags(&self) -> u8 {
        self.adaptation_field()
            .and_then(|af| af.first().copied())
            .unwrap_or(0)
    }

    pub fn discontinuity_indicator(&self) -> bool {
        self.adaptation_flags() & 0x80 != 0
    }

    pub fn random_access_indicator(&self) -> bool {
        self.adaptation_flags() & 0x40 != 0
    }

    /// Program clock reference in 27 MHz ticks (base * 300 + extension).
    pub fn pcr(&self) -> Option<u64> {
        let af = self.adaptation_field()?;
        if af.len() < 7 || af[0] & 0x10 == 0 {
            return None;
        }
        let b = &af[1..7];
        let base = (u64::from(b[0]) << 25)
            | (u64::from(b[1]) << 17)
            | (u64::from(b[2]) << 9)
            | (u64::from(b[3]) << 1)
            | (u64::from(b[4]) >> 7);
        let extension = (u64::from(b[4] & 0x01) << 8) | u64::from(b[5]);
        Some(base * 300 + extension)
    }

    /// PCR in 90 kHz units (the PCR base), comparable with PTS/DTS.
    pub fn pcr_90k(&self) -> Option<u64> {
        self.pcr().map(pcr_to_90khz)
    }

    /// Payload bytes; empty if the packet has none or its adaptation field is malformed.
    pub fn payload(&self) -> &'a [u8] {
        if !self.has_payload() {
            return &[];
        }
        let start = if self.has_adaptation_field() {
            5 + usize::from(self.bytes[4])
        } else {
            4
        };
        self.bytes.get(start..).unwrap_or(&[])
    }
}

/// Converts a 27 MHz PCR to the 90 kHz clock used by PTS/DTS.
pub fn pcr_to_90khz(pcr_27mhz: u64) -> u64 {
    pcr_27mhz / 300
}

/// Iterates over the packets of a buffer of whole, aligned packets
/// (such as a chunk), skipping any that lack the sync byte.
pub fn packets(data: &[u8]) -> impl Iterator<Item = TsPacket<'_>> {
    data.chunks_exact(TS_PACKET_LEN)
        .filter_map(|bytes| TsPacket::new(bytes).ok())
}

/// Sets the discontinuity_indicator in place, so a decoder accepts a
/// continuity-counter or timebase jump (e.g. when splicing a late joiner in).
///
/// Returns `false` and leaves the packet untouched if it has no adaptation
/// field with a flags byte: adding one would shift the payload.
pub fn set_discontinuity(packet: &mut [u8]) -> bool {
    if packet.len() != TS_PACKET_LEN || packet[0] != SYNC_BYTE || packet[3] & 0x20 == 0 {
        return false;
    }
    let len = usize::from(packet[4]);
    if len == 0 || 5 + len > TS_PACKET_LEN {
        return false;
    }
    packet[5] |= 0x80;
    true
}

/// Flag a packet as the first after a discontinuity (a new encoder, say): set the
/// discontinuity_indicator in its adaptation field, inserting a minimal adaptation field into a
/// packet without one when its payload ends in at least two stuffing bytes (PSI packets do).
/// Returns whether the packet now carries the flag.
pub fn mark_discontinuity(packet: &mut [u8]) -> bool {
    if packet.len() != TS_PACKET_LEN || packet[0] != SYNC_BYTE {
        return false;
    }
    if packet[3] & 0x20 != 0 {
        if packet[4] == 0 {
            return false; // a single stuffing byte: no room for flags
        }
        return set_discontinuity(packet);
    }
    if packet[3] & 0x10 == 0 || packet[TS_PACKET_LEN - 2..] != [0xff, 0xff] {
        return false;
    }
    // Shift the payload right by two and drop two stuffing bytes from its end.
    packet.copy_within(4..TS_PACKET_LEN - 2, 6);
    packet[3] |= 0x20;
    packet[4] = 1; // adaptation_field_length: just the flags byte
    packet[5] = 0x80; // discontinuity_indicator
    true
}

/// PTS and DTS are 33-bit counters of a 90 kHz clock.
pub const PTS_WRAP_90K: u64 = 1 << 33;

/// The timestamps one TS packet carries, with where they sit so they can be rewritten.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PacketTimestamps {
    /// PCR in 27 MHz ticks.
    pub pcr: Option<u64>,
    /// PTS and DTS (90 kHz) of a PES header starting in this packet, with their byte offsets.
    pub pts: Option<(usize, u64)>,
    pub dts: Option<(usize, u64)>,
}

impl PacketTimestamps {
    /// Where decoding happens: the DTS, or the PTS when the PES has no separate DTS.
    pub fn decode_time(&self) -> Option<u64> {
        self.dts.or(self.pts).map(|(_, value)| value)
    }
}

/// Stream ids whose PES packets have no optional header (and so no timestamps).
fn pes_has_optional_header(stream_id: u8) -> bool {
    !matches!(
        stream_id,
        0xBC | 0xBE | 0xBF | 0xF0 | 0xF1 | 0xF2 | 0xF8 | 0xFF
    )
}

/// The PCR of `packet` and the PTS/DTS of a PES header starting in it. A PES header that
/// does not fit in the packet, or a malformed one, yields no PTS/DTS.
pub fn packet_timestamps(packet: &[u8]) -> PacketTimestamps {
    let Ok(view) = TsPacket::new(packet) else {
        return PacketTimestamps::default();
    };
    let mut found = PacketTimestamps {
        pcr: view.pcr(),
        ..PacketTimestamps::default()
    };
    if !view.payload_unit_start() || view.pid() == PAT_PID || view.pid() == NULL_PID {
        return found;
    }
    let payload = view.payload();
    let start = TS_PACKET_LEN - payload.len();
    if payload.len() < 19
        || payload[..3] != [0, 0, 1]
        || !pes_has_optional_header(payload[3])
        || payload[6] & 0xC0 != 0x80
    {
        return found;
    }
    let header_len = usize::from(payload[8]);
    match payload[7] >> 6 {
        0b10 if header_len >= 5 => {
            found.pts = Some((start + 9, read_timestamp(&payload[9..14])));
        }
        0b11 if header_len >= 10 => {
            found.pts = Some((start + 9, read_timestamp(&payload[9..14])));
            found.dts = Some((start + 14, read_timestamp(&payload[14..19])));
        }
        _ => {}
    }
    found
}

/// A 33-bit PTS/DTS from its 5-byte field (prefix and marker bits ignored).
pub fn read_timestamp(field: &[u8]) -> u64 {
    (u64::from(field[0] >> 1) & 0x07) << 30
        | u64::from(field[1]) << 22
        | u64::from(field[2] >> 1) << 15
        | u64::from(field[3]) << 7
        | u64::from(field[4] >> 1)
}

/// Write a 33-bit PTS/DTS into its 5-byte field, keeping the field's 4-bit prefix and setting
/// the marker bits.
pub fn write_timestamp(field: &mut [u8], value: u64) {
    let value = value % PTS_WRAP_90K;
    field[0] = (field[0] & 0xF0) | ((value >> 29) as u8 & 0x0E) | 1;
    field[1] = (value >> 22) as u8;
    field[2] = ((value >> 14) as u8 & 0xFE) | 1;
    field[3] = (value >> 7) as u8;
    field[4] = ((value << 1) as u8 & 0xFE) | 1;
}

/// Write a PCR (27 MHz ticks, wrapped at [`PCR_WRAP_27MHZ`]) into a packet that carries one;
/// returns whether it did. The reserved bits are set, as the standard asks.
pub fn write_pcr(packet: &mut [u8], pcr_27mhz: u64) -> bool {
    if TsPacket::new(packet).map_or(true, |view| view.pcr().is_none()) {
        return false;
    }
    let pcr = pcr_27mhz % PCR_WRAP_27MHZ;
    let (base, extension) = (pcr / 300, pcr % 300);
    let field = &mut packet[6..12];
    field[0] = (base >> 25) as u8;
    field[1] = (base >> 17) as u8;
    field[2] = (base >> 9) as u8;
    field[3] = (base >> 1) as u8;
    field[4] = ((base << 7) as u8 & 0x80) | 0x7E | (extension >> 8) as u8;
    field[5] = extension as u8;
    true
}

/// Rewrites continuity counters so that every PID's counter runs on across source changes,
/// and so that packets the server inserts (PAT/PMT copies before a keyframe) fit into the
/// sequence, for players that count every gap as loss.
///
/// Within one source, each PID's counter keeps its source's steps (an upstream gap stays a
/// gap, a legal duplicate stays a duplicate), shifted by a per-PID offset. When a new source
/// starts, each PID's first packet with payload continues from the last counter sent. An
/// inserted packet gets the next counter, as a repeated section legitimately does. At most
/// one duplicate in a row is sent: a further repeat gets the next counter.
#[derive(Debug, Default)]
pub struct CcRestamper {
    pids: std::collections::HashMap<u16, PidCounter>,
}

#[derive(Debug, Clone, Copy)]
struct PidCounter {
    offset: u8,
    /// The counter of the last packet with payload sent on this PID.
    last_out: Option<u8>,
    /// Whether the last packet sent was a duplicate of the one before.
    last_was_duplicate: bool,
    /// The current source's offset is known (its first packet with payload was seen).
    based: bool,
}

impl CcRestamper {
    /// A new source starts: each PID's next packet continues from the last counter sent.
    pub fn new_source(&mut self) {
        for counter in self.pids.values_mut() {
            counter.based = false;
        }
    }

    /// Restamp the source's own packets (whole packets, in place).
    pub fn restamp(&mut self, packets: &mut [u8]) {
        self.each_packet(packets, false);
    }

    /// Restamp packets the server inserts into the stream (copies of earlier packets).
    pub fn restamp_inserted(&mut self, packets: &mut [u8]) {
        self.each_packet(packets, true);
    }

    fn each_packet(&mut self, packets: &mut [u8], inserted: bool) {
        for packet in packets.chunks_exact_mut(TS_PACKET_LEN) {
            if packet[0] != SYNC_BYTE {
                continue;
            }
            let pid = (u16::from(packet[1] & 0x1f) << 8) | u16::from(packet[2]);
            if pid == NULL_PID {
                continue;
            }
            let has_payload = packet[3] & 0x10 != 0;
            let cc_in = packet[3] & 0x0f;
            let counter = self.pids.entry(pid).or_insert(PidCounter {
                offset: 0,
                last_out: None,
                last_was_duplicate: false,
                based: true,
            });
            if !has_payload {
                // Counters do not advance without payload; keep it on the running sequence.
                if let Some(last) = counter.last_out {
                    packet[3] = (packet[3] & 0xf0) | last;
                }
                continue;
            }
            let next = counter.last_out.map(|last| (last + 1) & 0x0f);
            let mut out = (cc_in + counter.offset) & 0x0f;
            if inserted || !counter.based {
                out = next.unwrap_or(cc_in);
            } else if Some(out) == counter.last_out && counter.last_was_duplicate {
                out = next.unwrap_or(out);
            }
            counter.last_was_duplicate = Some(out) == counter.last_out;
            counter.offset = out.wrapping_sub(cc_in) & 0x0f;
            counter.based = true;
            counter.last_out = Some(out);
            packet[3] = (packet[3] & 0xf0) | out;
        }
    }
}

/// A null packet (PID 0x1FFF): ignored by every receiver, it keeps a connection carrying
/// bytes while a source is away, so that players do not time out.
pub fn null_packet() -> [u8; TS_PACKET_LEN] {
    let mut packet = [0xffu8; TS_PACKET_LEN];
    packet[0] = SYNC_BYTE;
    packet[1] = (NULL_PID >> 8) as u8;
    packet[2] = NULL_PID as u8;
    packet[3] = 0x10;
    packet
}

/// Finds packet boundaries in a byte stream that arrives in arbitrary pieces
/// and may start mid-packet or contain garbage.
///
/// Sync is acquired (and re-acquired after loss) only where the sync byte
/// appears at a position and again 188 bytes later, so a stray 0x47 inside
/// garbage is not mistaken for a packet start. While in sync, a packet is
/// delivered as soon as its 188 bytes are available.
#[derive(Debug, Default, Clone)]
pub struct PacketAligner {
    /// Unconsumed bytes from earlier calls: a partial packet, or a sync
    /// candidate still waiting for its confirming byte (at most 188 bytes).
    carry: Vec<u8>,
    /// Stream offset of `carry[0]` (or of the next byte when `carry` is empty).
    offset: u64,
    in_sync: bool,
    resyncs: u64,
    skipped_bytes: u64,
}

impl PacketAligner {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds the next bytes of the stream; `on_packet` gets each complete
    /// packet with its byte offset from the start of the stream.
    pub fn push(&mut self, input: &[u8], mut on_packet: impl FnMut(u64, TsPacket<'_>)) {
        let mut rest = input;
        while !self.carry.is_empty() && !rest.is_empty() {
            // Join only a bounded prefix of the input with the carried bytes,
            // so the bulk of the input is scanned in place without copying.
            let carried = self.carry.len();
            let take = rest.len().min(2 * TS_PACKET_LEN);
            let mut joined = std::mem::take(&mut self.carry);
            joined.extend_from_slice(&rest[..take]);
            let used = self.scan(&joined, &mut on_packet);
            if used >= carried {
                rest = &rest[used - carried..];
                joined.clear();
            } else {
                rest = &rest[take..];
                joined.drain(..used);
            }
            self.carry = joined;
        }
        if self.carry.is_empty() {
            let used = self.scan(rest, &mut on_packet);
            self.carry.extend_from_slice(&rest[used..]);
        }
    }

    /// Ends the stream: delivers a final packet still waiting for sync
    /// confirmation (its successor will never come) and drops any partial one.
    pub fn finish(&mut self, mut on_packet: impl FnMut(u64, TsPacket<'_>)) {
        let carry = std::mem::take(&mut self.carry);
        let mut used = 0;
        if let Some(bytes) = carry.get(..TS_PACKET_LEN) {
            if let Ok(packet) = TsPacket::new(bytes) {
                on_packet(self.offset, packet);
                used = TS_PACKET_LEN;
            }
        }
        self.skipped_bytes += (carry.len() - used) as u64;
        self.offset += carry.len() as u64;
        self.in_sync = false;
    }

    /// Forgets buffered bytes and sync state (a new, unrelated stream starts).
    /// Counters and offsets keep running.
    pub fn reset(&mut self) {
        self.offset += self.carry.len() as u64;
        self.carry.clear();
        self.in_sync = false;
    }

    /// Times sync was lost after having been acquired.
    pub fn resyncs(&self) -> u64 {
        self.resyncs
    }

    /// Bytes discarded while searching for sync (initial search included).
    pub fn skipped_bytes(&self) -> u64 {
        self.skipped_bytes
    }

    pub fn in_sync(&self) -> bool {
        self.in_sync
    }

    /// Delivers packets from `buf` and returns how many leading bytes were
    /// consumed (delivered or skipped); the rest needs more input.
    fn scan(&mut self, buf: &[u8], on_packet: &mut impl FnMut(u64, TsPacket<'_>)) -> usize {
        let mut pos = 0;
        loop {
            if self.in_sync {
                let Some(bytes) = buf.get(pos..pos + TS_PACKET_LEN) else {
                    break;
                };
                if let Ok(packet) = TsPacket::new(bytes) {
                    on_packet(self.offset + pos as u64, packet);
                    pos += TS_PACKET_LEN;
                    continue;
                }
                self.in_sync = false;
                self.resyncs += 1;
                tracing::debug!(offset = self.offset + pos as u64, "lost TS sync");
            }
            match self.find_sync(buf, pos) {
                Some(found) => {
                    pos = found;
                    self.in_sync = true;
                    tracing::trace!(offset = self.offset + pos as u64, "acquired TS sync");
                }
                None => {
                    // find_sync rejected every position that has a byte 188
                    // further on; keep only a candidate still waiting for
                    // that byte, so at most one packet's worth is carried.
                    let undecided = buf.len().saturating_sub(TS_PACKET_LEN).max(pos);
                    let waiting_from = buf[undecided..]
                        .iter()
                        .position(|&b| b == SYNC_BYTE)
                        .map_or(buf.len(), |i| undecided + i);
                    self.skipped_bytes += (waiting_from - pos) as u64;
                    pos = waiting_from;
                    break;
                }
            }
        }
        self.offset += pos as u64;
        pos
    }

    /// First position at or after `from` with a sync byte there and one
    /// packet later; counts the bytes skipped to get there.
    fn find_sync(&mut self, buf: &[u8], from: usize) -> Option<usize> {
        let mut pos = from;
        while pos + TS_PACKET_LEN < buf.len() {
            if buf[pos] == SYNC_BYTE && buf[pos + TS_PACKET_LEN] == SYNC_BYTE {
                self.skipped_bytes += (pos - from) as u64;
                return Some(pos);
            }
            pos += 1;
        }
        None
    }
}

/// Why a packet did not yield a PAT or PMT.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum PsiError {
    #[error("packet does not start a PSI section (payload_unit_start not set)")]
    NotSectionStart,
    #[error("PSI section spans several packets, which is not supported")]
    SpansPackets,
    #[error("unexpected table_id {found:#04x}, expected {expected:#04x}")]
    WrongTable { expected: u8, found: u8 },
    #[error("PSI section CRC mismatch")]
    Crc,
    #[error("PSI section is not yet applicable (current_next_indicator = 0)")]
    NotCurrent,
    #[error("malformed PSI section: {0}")]
    Malformed(&'static str),
}

/// Returns the PSI section that starts in this packet, honouring the pointer_field.
pub fn section_in_packet<'a>(packet: &TsPacket<'a>) -> Result<&'a [u8], PsiError> {
    if !packet.payload_unit_start() {
        return Err(PsiError::NotSectionStart);
    }
    let payload = packet.payload();
    let pointer = usize::from(
        *payload
            .first()
            .ok_or(PsiError::Malformed("empty payload"))?,
    );
    let section = payload
        .get(1 + pointer..)
        .ok_or(PsiError::Malformed("pointer_field runs past the packet"))?;
    if section.len() < 3 {
        return Err(PsiError::SpansPackets);
    }
    let section_length = usize::from(u16::from_be_bytes([section[1] & 0x0F, section[2]]));
    section
        .get(..3 + section_length)
        .ok_or(PsiError::SpansPackets)
}

/// Header fields common to PAT and PMT sections.
struct LongSection<'a> {
    table_id_extension: u16,
    version: u8,
    /// Bytes between the 8-byte header and the CRC.
    body: &'a [u8],
}

fn parse_long_section(section: &[u8], table_id: u8) -> Result<LongSection<'_>, PsiError> {
    let found = *section
        .first()
        .ok_or(PsiError::Malformed("empty section"))?;
    if found != table_id {
        return Err(PsiError::WrongTable {
            expected: table_id,
            found,
        });
    }
    // 8 header bytes + 4 CRC bytes.
    if section.len() < 12 {
        return Err(PsiError::Malformed("section too short"));
    }
    if section[1] & 0x80 == 0 {
        return Err(PsiError::Malformed("section_syntax_indicator not set"));
    }
    if crc32_mpeg2(section) != 0 {
        return Err(PsiError::Crc);
    }
    if section[5] & 0x01 == 0 {
        return Err(PsiError::NotCurrent);
    }
    Ok(LongSection {
        table_id_extension: u16::from_be_bytes([section[3], section[4]]),
        version: (section[5] >> 1) & 0x1F,
        body: &section[8..section.len() - 4],
    })
}

fn pid_at(bytes: &[u8]) -> u16 {
    u16::from_be_bytes([bytes[0] & 0x1F, bytes[1]])
}

fn length12_at(bytes: &[u8]) -> usize {
    usize::from(u16::from_be_bytes([bytes[0] & 0x0F, bytes[1]]))
}

/// One program listed in the PAT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PatProgram {
    pub program_number: u16,
    pub pmt_pid: u16,
}

/// Program Association Table: which PID carries each program's PMT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pat {
    pub transport_stream_id: u16,
    pub version: u8,
    /// Programs in table order; program 0 (the network PID) is left out.
    pub programs: Vec<PatProgram>,
}

impl Pat {
    pub fn from_section(section: &[u8]) -> Result<Self, PsiError> {
        let header = parse_long_section(section, TABLE_ID_PAT)?;
        let programs = header
            .body
            .chunks_exact(4)
            .map(|entry| PatProgram {
                program_number: u16::from_be_bytes([entry[0], entry[1]]),
                pmt_pid: pid_at(&entry[2..]),
            })
            .filter(|program| program.program_number != 0)
            .collect();
        Ok(Self {
            transport_stream_id: header.table_id_extension,
            version: header.version,
            programs,
        })
    }
}

/// Parses the PAT section starting in `packet`.
pub fn parse_pat(packet: &TsPacket<'_>) -> Result<Pat, PsiError> {
    Pat::from_section(section_in_packet(packet)?)
}

/// Codecs whose keyframes the server can recognise in the elementary stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VideoCodec {
    /// MPEG-1 or MPEG-2 video (same sequence header start code).
    Mpeg12,
    H264,
    Hevc,
}

/// One elementary stream listed in a PMT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ElementaryStream {
    pub stream_type: u8,
    pub pid: u16,
}

impl ElementaryStream {
    pub fn video_codec(&self) -> Option<VideoCodec> {
        match self.stream_type {
            0x01 | 0x02 => Some(VideoCodec::Mpeg12),
            0x1B => Some(VideoCodec::H264),
            0x24 => Some(VideoCodec::Hevc),
            _ => None,
        }
    }

    /// MPEG-1/2 audio, AAC (ADTS and LATM), AC-3 and E-AC-3 as used by ATSC.
    pub fn is_audio(&self) -> bool {
        matches!(self.stream_type, 0x03 | 0x04 | 0x0F | 0x11 | 0x81 | 0x87)
    }
}

/// Program Map Table: the elementary streams of one program and its PCR PID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pmt {
    pub program_number: u16,
    pub version: u8,
    /// PID whose adaptation fields carry the program clock; 0x1FFF if none.
    pub pcr_pid: u16,
    /// Streams in table order (descriptors are skipped).
    pub streams: Vec<ElementaryStream>,
}

impl Pmt {
    pub fn from_section(section: &[u8]) -> Result<Self, PsiError> {
        let header = parse_long_section(section, TABLE_ID_PMT)?;
        let body = header.body;
        if body.len() < 4 {
            return Err(PsiError::Malformed("PMT too short"));
        }
        let pcr_pid = pid_at(body);
        let program_info_length = length12_at(&body[2..]);
        let mut rest = body
            .get(4 + program_info_length..)
            .ok_or(PsiError::Malformed(
                "program_info_length runs past the section",
            ))?;
        let mut streams = Vec::new();
        while !rest.is_empty() {
            if rest.len() < 5 {
                return Err(PsiError::Malformed("truncated elementary stream entry"));
            }
            streams.push(ElementaryStream {
                stream_type: rest[0],
                pid: pid_at(&rest[1..]),
            });
            let es_info_length = length12_at(&rest[3..]);
            rest = rest
                .get(5 + es_info_length..)
                .ok_or(PsiError::Malformed("ES_info_length runs past the section"))?;
        }
        Ok(Self {
            program_number: header.table_id_extension,
            version: header.version,
            pcr_pid,
            streams,
        })
    }

    /// First video stream whose keyframes can be detected.
    pub fn video_stream(&self) -> Option<(ElementaryStream, VideoCodec)> {
        self.streams
            .iter()
            .find_map(|stream| stream.video_codec().map(|codec| (*stream, codec)))
    }

    pub fn first_audio_stream(&self) -> Option<ElementaryStream> {
        self.streams
            .iter()
            .copied()
            .find(ElementaryStream::is_audio)
    }
}

/// Parses the PMT section starting in `packet`.
pub fn parse_pmt(packet: &TsPacket<'_>) -> Result<Pmt, PsiError> {
    Pmt::from_section(section_in_packet(packet)?)
}

const CRC32_MPEG2_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = (i as u32) << 24;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 0x8000_0000 != 0 {
                (crc << 1) ^ 0x04C1_1DB7
            } else {
                crc << 1
            };
            bit += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
};

/// CRC-32/MPEG-2 as used by PSI sections. Over a whole section including
/// its trailing CRC, the result is 0 when the section is intact.
pub fn crc32_mpeg2(data: &[u8]) -> u32 {
    data.iter().fold(0xFFFF_FFFF, |crc, &byte| {
        (crc << 8) ^ CRC32_MPEG2_TABLE[usize::from((crc >> 24) as u8 ^ byte)]
    })
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;

    #[test]
    fn timestamps_near_the_wrap_round_trip() {
        for pts in [0, 1, PTS_WRAP_90K - 1, PTS_WRAP_90K - 90_000, 0x1_2345_6789] {
            let pcr = (pts * 300 + 299) % PCR_WRAP_27MHZ;
            let packet = timed_pes_packet(0x100, Some(pcr), pts, Some(pts.saturating_sub(3000)));
            let found = packet_timestamps(&packet);
            assert_eq!(found.pcr, Some(pcr));
            assert_eq!(found.pts.map(|(_, v)| v), Some(pts));
            assert_eq!(found.decode_time(), Some(pts.saturating_sub(3000)));
            assert_eq!(packet[21] & 0xF1, 0x31, "prefix and marker kept");
            assert_eq!(packet[26] & 0xF1, 0x11);
        }
        let mut packet = timed_pes_packet(0x100, Some(5), 7, None);
        assert!(write_pcr(&mut packet, PCR_WRAP_27MHZ + 12));
        assert_eq!(TsPacket::new(&packet).unwrap().pcr(), Some(12));
        write_timestamp(&mut packet[21..26], PTS_WRAP_90K + 3);
        assert_eq!(packet_timestamps(&packet).pts.map(|(_, v)| v), Some(3));
        assert_eq!(packet_timestamps(&packet).dts, None);
    }

    #[test]
    fn psi_and_packets_without_pcr_have_no_timestamps_to_rewrite() {
        let pat = pat_packet(0x1000, 0);
        assert_eq!(packet_timestamps(&pat), PacketTimestamps::default());
        let mut plain = packet(0x100, 0, true).to_vec();
        assert!(!write_pcr(&mut plain, 42));
        assert_eq!(packet_timestamps(&plain), PacketTimestamps::default());
    }

    fn packet(pid: u16, cc: u8, payload: bool) -> [u8; TS_PACKET_LEN] {
        let mut packet = [0xffu8; TS_PACKET_LEN];
        packet[0] = SYNC_BYTE;
        packet[1] = (pid >> 8) as u8;
        packet[2] = pid as u8;
        packet[3] = if payload { 0x10 } else { 0x20 } | cc;
        if !payload {
            packet[4] = 183;
        }
        packet
    }

    fn stamp(restamper: &mut CcRestamper, pid: u16, cc: u8, inserted: bool) -> u8 {
        let mut p = packet(pid, cc, true);
        if inserted {
            restamper.restamp_inserted(&mut p);
        } else {
            restamper.restamp(&mut p);
        }
        p[3] & 0x0f
    }

    #[test]
    fn restamping_keeps_a_single_source_unchanged() {
        let mut r = CcRestamper::default();
        let out: Vec<u8> = (0..20).map(|i| stamp(&mut r, 256, i % 16, false)).collect();
        assert_eq!(out, (0..20).map(|i| i % 16).collect::<Vec<u8>>());
    }

    #[test]
    fn restamping_continues_across_a_new_source() {
        let mut r = CcRestamper::default();
        for cc in 0..5 {
            stamp(&mut r, 256, cc, false);
        }
        r.new_source();
        // The new encoder starts its own counters at 9.
        assert_eq!(stamp(&mut r, 256, 9, false), 5);
        assert_eq!(stamp(&mut r, 256, 10, false), 6);
        // An upstream gap stays a gap.
        assert_eq!(stamp(&mut r, 256, 12, false), 8);
    }

    #[test]
    fn inserted_copies_take_the_next_counter_and_shift_the_rest() {
        let mut r = CcRestamper::default();
        assert_eq!(stamp(&mut r, 0, 3, false), 3);
        // A copy of that PAT inserted before a keyframe: a new counter.
        assert_eq!(stamp(&mut r, 0, 3, true), 4);
        // The source's next PAT follows it.
        assert_eq!(stamp(&mut r, 0, 4, false), 5);
    }

    #[test]
    fn at_most_one_duplicate_in_a_row() {
        let mut r = CcRestamper::default();
        assert_eq!(stamp(&mut r, 0, 7, false), 7);
        assert_eq!(stamp(&mut r, 0, 7, false), 7); // one legal duplicate
        assert_eq!(stamp(&mut r, 0, 7, false), 8); // a second one becomes a new packet
        assert_eq!(stamp(&mut r, 0, 8, false), 9);
    }

    #[test]
    fn packets_without_payload_keep_the_running_counter() {
        let mut r = CcRestamper::default();
        stamp(&mut r, 256, 2, false);
        r.new_source();
        stamp(&mut r, 256, 11, false); // → 3
        let mut adaptation_only = packet(256, 11, false);
        r.restamp(&mut adaptation_only);
        assert_eq!(adaptation_only[3] & 0x0f, 3);
    }

    #[test]
    fn discontinuity_is_set_in_place_or_inserted_into_psi() {
        let mut with_af = PacketSpec::new(0x0100).rai().payload(&[1, 2, 3]).build();
        assert!(mark_discontinuity(&mut with_af));
        assert!(TsPacket::new(&with_af).unwrap().discontinuity_indicator());
        assert_eq!(TsPacket::new(&with_af).unwrap().payload(), &[1, 2, 3]);

        let mut psi = null_packet();
        psi[1] = 0x40; // payload_unit_start, PID 0
        psi[2] = 0;
        psi[4..12].copy_from_slice(&[0, 0, 0xb0, 0x0d, 0, 1, 0xc1, 0]);
        let payload_before = psi[4..20].to_vec();
        assert!(mark_discontinuity(&mut psi));
        let packet = TsPacket::new(&psi).unwrap();
        assert!(packet.discontinuity_indicator());
        assert_eq!(&packet.payload()[..16], &payload_before[..]);

        // A full payload with no stuffing cannot take an adaptation field.
        let mut full = PacketSpec::new(0x0101).payload(&[7u8; 184]).build();
        assert!(!mark_discontinuity(&mut full));
    }

    #[test]
    fn crc_matches_known_vector() {
        // CRC-32/MPEG-2 check value for "123456789".
        assert_eq!(crc32_mpeg2(b"123456789"), 0x0376_E6E7);
    }

    #[test]
    fn packet_header_fields() {
        let bytes = PacketSpec::new(0x0100)
            .pusi()
            .cc(7)
            .rai()
            .pcr(27_000_000 * 3 + 123)
            .payload(&[1, 2, 3])
            .build();
        let packet = TsPacket::new(&bytes).unwrap();
        assert_eq!(packet.pid(), 0x0100);
        assert!(packet.payload_unit_start());
        assert_eq!(packet.continuity_counter(), 7);
        assert!(packet.has_adaptation_field());
        assert!(packet.random_access_indicator());
        assert!(!packet.discontinuity_indicator());
        assert_eq!(packet.pcr(), Some(27_000_000 * 3 + 123));
        assert_eq!(packet.pcr_90k(), Some(90_000 * 3));
        assert_eq!(packet.payload(), &[1, 2, 3]);
    }

    #[test]
    fn packet_without_adaptation_field() {
        let bytes = PacketSpec::new(0x0101).payload(&[9; 184]).build();
        let packet = TsPacket::new(&bytes).unwrap();
        assert!(!packet.has_adaptation_field());
        assert!(!packet.random_access_indicator());
        assert_eq!(packet.pcr(), None);
        assert_eq!(packet.payload().len(), 184);
    }

    #[test]
    fn rejects_bad_length_and_sync() {
        assert_eq!(
            TsPacket::new(&[SYNC_BYTE; 10]).unwrap_err(),
            PacketError::Length(10)
        );
        assert_eq!(
            TsPacket::new(&[0u8; TS_PACKET_LEN]).unwrap_err(),
            PacketError::NoSync(0)
        );
    }

    #[test]
    fn malformed_adaptation_length_gives_empty_payload() {
        let mut bytes = PacketSpec::new(0x0100).payload(&[0; 184]).build();
        bytes[3] |= 0x30;
        bytes[4] = 250;
        let packet = TsPacket::new(&bytes).unwrap();
        assert!(packet.payload().is_empty());
        assert!(packet.adaptation_field().is_none());
        assert!(!packet.random_access_indicator());
    }

    #[test]
    fn set_discontinuity_only_with_adaptation_field() {
        let mut with_af = PacketSpec::new(0x0100).pcr(0).payload(&[1]).build();
        assert!(set_discontinuity(&mut with_af));
        assert!(TsPacket::new(&with_af).unwrap().discontinuity_indicator());
        assert_eq!(TsPacket::new(&with_af).unwrap().payload(), &[1]);

        let mut without_af = PacketSpec::new(0x0100).payload(&[1; 184]).build();
        let before = without_af;
        assert!(!set_discontinuity(&mut without_af));
        assert_eq!(without_af, before);
        assert!(!set_discontinuity(&mut [0u8; 5]));
    }

    #[test]
    fn parses_pat_and_pmt() {
        let pat = parse_pat(&TsPacket::new(&pat_packet(0x1000, 0)).unwrap()).unwrap();
        assert_eq!(
            pat.programs,
            vec![PatProgram {
                program_number: 1,
                pmt_pid: 0x1000
            }]
        );

        let pmt_bytes = pmt_packet(0x1000, 0x0100, &[(0x1B, 0x0100), (0x0F, 0x0101)], 0);
        let pmt = parse_pmt(&TsPacket::new(&pmt_bytes).unwrap()).unwrap();
        assert_eq!(pmt.program_number, 1);
        assert_eq!(pmt.pcr_pid, 0x0100);
        assert_eq!(
            pmt.video_stream(),
            Some((
                ElementaryStream {
                    stream_type: 0x1B,
                    pid: 0x0100
                },
                VideoCodec::H264
            ))
        );
        assert_eq!(pmt.first_audio_stream().map(|s| s.pid), Some(0x0101));
    }

    #[test]
    fn honours_pointer_field() {
        let section = pat_section(0x0200);
        // Three bytes of a previous section's tail come before ours.
        let mut payload = vec![3, 0xAA, 0xBB, 0xCC];
        payload.extend_from_slice(&section);
        let bytes = PacketSpec::new(PAT_PID)
            .pusi()
            .psi_payload(&payload)
            .build();
        let pat = parse_pat(&TsPacket::new(&bytes).unwrap()).unwrap();
        assert_eq!(pat.programs[0].pmt_pid, 0x0200);
    }

    #[test]
    fn rejects_corrupt_and_oversized_sections() {
        let mut bytes = pat_packet(0x1000, 0);
        bytes[10] ^= 0xFF;
        assert_eq!(
            parse_pat(&TsPacket::new(&bytes).unwrap()),
            Err(PsiError::Crc)
        );

        let mut long = pat_section(0x1000);
        // Claim a section longer than the packet can hold.
        long[1] = 0xB0 | 0x03;
        long[2] = 0xFF;
        let bytes = PacketSpec::new(PAT_PID)
            .pusi()
            .psi_payload(&[&[0][..], &long].concat())
            .build();
        assert_eq!(
            parse_pat(&TsPacket::new(&bytes).unwrap()),
            Err(PsiError::SpansPackets)
        );

        let not_start = PacketSpec::new(PAT_PID).payload(&[0; 184]).build();
        assert_eq!(
            parse_pat(&TsPacket::new(&not_start).unwrap()),
            Err(PsiError::NotSectionStart)
        );
    }

    fn align_all(splits: &[usize], stream: &[u8]) -> (Vec<(u64, Vec<u8>)>, PacketAligner) {
        let mut aligner = PacketAligner::new();
        let mut got = Vec::new();
        let mut rest = stream;
        for &size in splits.iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let (head, tail) = rest.split_at(size.min(rest.len()));
            aligner.push(head, |offset, packet| {
                got.push((offset, packet.as_bytes().to_vec()))
            });
            rest = tail;
        }
        (got, aligner)
    }

    #[test]
    fn aligner_handles_arbitrary_splits() {
        let packets: Vec<[u8; TS_PACKET_LEN]> = (0..20)
            .map(|i| PacketSpec::new(0x100).cc(i).payload(&[i; 184]).build())
            .collect();
        let stream = packets.concat();
        for splits in [
            &[1][..],
            &[187],
            &[188],
            &[189],
            &[1000],
            &[1, 187, 189, 1000, 7],
        ] {
            let (got, mut aligner) = align_all(splits, &stream);
            // Once in sync, the last packet needs no confirming successor.
            assert_eq!(got.len(), 20, "splits {splits:?}");
            for (i, (offset, bytes)) in got.iter().enumerate() {
                assert_eq!(*offset, (i * TS_PACKET_LEN) as u64);
                assert_eq!(bytes[..], packets[i][..]);
            }
            assert_eq!(aligner.skipped_bytes(), 0);
            let mut tail = 0;
            aligner.finish(|_, _| tail += 1);
            assert_eq!(tail, 0);
        }
    }

    #[test]
    fn aligner_resyncs_after_garbage() {
        let packet = |i: u8| PacketSpec::new(0x100).cc(i).payload(&[i; 184]).build();
        // Leading garbage holds stray sync bytes that are not confirmed 188 bytes later.
        let mut stream = vec![0x12, 0x47, 0x00, 0x47, 0x99];
        stream.extend_from_slice(&packet(0));
        stream.extend_from_slice(&packet(1));
        stream.extend_from_slice(&[0x00; 13]);
        stream.extend_from_slice(&[0x47; 50]);
        stream.extend_from_slice(&packet(2));
        stream.extend_from_slice(&packet(3));
        for splits in [&[1][..], &[189], &[4096]] {
            let (got, aligner) = align_all(splits, &stream);
            let ccs: Vec<u8> = got.iter().map(|(_, bytes)| bytes[3] & 0x0F).collect();
            assert_eq!(ccs, vec![0, 1, 2, 3], "splits {splits:?}");
            assert_eq!(got[2].0, (5 + 2 * 188 + 63) as u64);
            assert_eq!(aligner.skipped_bytes(), 5 + 63);
            assert_eq!(aligner.resyncs(), 1);
        }
    }

    #[test]
    fn aligner_recovers_every_packet_around_sync_free_garbage() {
        let mut state = 0x9E37_79B9u32;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state
        };
        for _round in 0..20 {
            let mut stream = Vec::new();
            let mut expected = Vec::new();
            let mut since_garbage = 0;
            for i in 0..200u32 {
                // Garbage without sync bytes cannot be mistaken for a packet
                // start. Runs are two packets apart: a lone packet between two
                // runs has no successor to confirm it and is rightly dropped.
                since_garbage += 1;
                if since_garbage > 2 && next() % 4 == 0 {
                    since_garbage = 0;
                    let len = next() % 400;
                    stream.extend((0..len).map(|_| (next() as u8) & 0x3F));
                }
                let mut packet = [0u8; TS_PACKET_LEN];
                packet.iter_mut().for_each(|b| *b = next() as u8);
                packet[0] = SYNC_BYTE;
                packet[3] = 0x10 | (i as u8 & 0x0F);
                expected.push((stream.len() as u64, packet));
                stream.extend_from_slice(&packet);
            }
            let mut aligner = PacketAligner::new();
            let mut got = Vec::new();
            let mut rest = &stream[..];
            while !rest.is_empty() {
                let size = (next() as usize % 700 + 1).min(rest.len());
                let (head, tail) = rest.split_at(size);
                aligner.push(head, |offset, packet| {
                    got.push((offset, *packet.as_bytes()))
                });
                rest = tail;
            }
            aligner.finish(|offset, packet| got.push((offset, *packet.as_bytes())));
            let offsets = |packets: &[(u64, [u8; TS_PACKET_LEN])]| -> Vec<u64> {
                packets.iter().map(|(offset, _)| *offset).collect()
            };
            assert_eq!(offsets(&got), offsets(&expected));
            assert!(got == expected);
        }
    }

    #[test]
    fn aligner_finish_delivers_unconfirmed_last_packet() {
        let packet = PacketSpec::new(0x100).payload(&[1; 184]).build();
        let mut aligner = PacketAligner::new();
        let mut got = 0;
        aligner.push(&packet, |_, _| got += 1);
        assert_eq!(got, 0, "a lone packet cannot confirm sync yet");
        aligner.finish(|offset, _| {
            assert_eq!(offset, 0);
            got += 1
        });
        assert_eq!(got, 1);
    }

    #[test]
    fn aligner_survives_random_bytes() {
        // Deterministic pseudo-random garbage, rich in sync bytes.
        let mut state = 0x1234_5678u32;
        let garbage: Vec<u8> = (0..50_000)
            .map(|_| {
                state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                if state >> 30 == 0 {
                    SYNC_BYTE
                } else {
                    (state >> 24) as u8
                }
            })
            .collect();
        let (got, aligner) = align_all(&[1, 333, 7, 4000], &garbage);
        let skipped = aligner.skipped_bytes() as usize;
        assert!(got.len() * TS_PACKET_LEN + skipped <= garbage.len());
        assert!(aligner.carry.len() <= TS_PACKET_LEN);

        // One big push of garbage leaves at most one undecided packet behind.
        let mut aligner = PacketAligner::new();
        let sparse: Vec<u8> = (0..10_000)
            .map(|i| if i % 100 == 0 { SYNC_BYTE } else { 0 })
            .collect();
        aligner.push(&sparse, |_, _| panic!("no packet expected"));
        // Only the sync byte at 9900 could still be confirmed by later input.
        assert_eq!(aligner.carry.len(), 100);
        assert_eq!(aligner.skipped_bytes(), 9_900);
    }
}

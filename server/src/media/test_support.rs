//! Builders for hand-made TS packets, PSI sections, PES headers and live chunks used by
//! the unit tests.

use std::sync::Arc;

use bytes::Bytes;

use super::ingest::Chunk;
use super::rtp::RtpPacketizer;
use super::ts::{crc32_mpeg2, write_pcr, write_timestamp, PAT_PID, TS_PACKET_LEN};
use crate::points::LiveChunk;

pub const PMT_PID: u16 = 0x1000;
pub const VIDEO_PID: u16 = 0x0100;
pub const AUDIO_PID: u16 = 0x0101;

/// Describes one packet; `build` fills the rest with adaptation-field stuffing
/// (or 0xFF after the section for PSI packets, as muxers do).
#[derive(Debug, Clone, Default)]
pub struct PacketSpec {
    pid: u16,
    pusi: bool,
    cc: u8,
    rai: bool,
    discontinuity: bool,
    pcr: Option<u64>,
    payload: Vec<u8>,
    psi: bool,
}

impl PacketSpec {
    pub fn new(pid: u16) -> Self {
        Self {
            pid,
            ..Self::default()
        }
    }

    pub fn pusi(mut self) -> Self {
        self.pusi = true;
        self
    }

    pub fn cc(mut self, cc: u8) -> Self {
        self.cc = cc & 0x0F;
        self
    }

    pub fn rai(mut self) -> Self {
        self.rai = true;
        self
    }

    pub fn discontinuity(mut self) -> Self {
        self.discontinuity = true;
        self
    }

    pub fn pcr(mut self, pcr_27mhz: u64) -> Self {
        self.pcr = Some(pcr_27mhz);
        self
    }

    pub fn payload(mut self, payload: &[u8]) -> Self {
        self.payload = payload.to_vec();
        self
    }

    /// Payload that begins with the pointer_field; padded with 0xFF.
    pub fn psi_payload(mut self, payload: &[u8]) -> Self {
        self.payload = payload.to_vec();
        self.psi = true;
        self
    }

    pub fn build(&self) -> [u8; TS_PACKET_LEN] {
        let mut packet = [0xFFu8; TS_PACKET_LEN];
        packet[0] = 0x47;
        packet[1] = ((self.pid >> 8) as u8 & 0x1F) | if self.pusi { 0x40 } else { 0 };
        packet[2] = self.pid as u8;
        let mut flags = 0u8;
        let mut af_body = Vec::new();
        if self.discontinuity {
            flags |= 0x80;
        }
        if self.rai {
            flags |= 0x40;
        }
        if let Some(pcr) = self.pcr {
            flags |= 0x10;
            af_body.extend_from_slice(&encode_pcr(pcr));
        }
        let needs_flags = flags != 0;
        let room = TS_PACKET_LEN - 4;
        assert!(self.payload.len() <= room, "payload too large");
        let needs_af = needs_flags || (!self.psi && self.payload.len() < room);
        if !needs_af {
            packet[3] = 0x10 | self.cc;
            packet[4..4 + self.payload.len()].copy_from_slice(&self.payload);
            return packet;
        }
        let af_len = room - 1 - self.payload.len();
        if self.psi {
            // PSI pads after the section; keep the adaptation field minimal.
            let af_len = 1 + af_body.len();
            packet[4] = af_len as u8;
            packet[5] = flags;
            packet[6..6 + af_body.len()].copy_from_slice(&af_body);
            let start = 5 + af_len;
            packet[start..start + self.payload.len()].copy_from_slice(&self.payload);
        } else {
            assert!(
                !needs_flags || af_len > af_body.len(),
                "payload leaves no room for adaptation flags"
            );
            packet[4] = af_len as u8;
            if af_len > 0 {
                packet[5] = flags;
                packet[6..6 + af_body.len()].copy_from_slice(&af_body);
            }
            packet[5 + af_len..].copy_from_slice(&self.payload);
        }
        let control = if self.payload.is_empty() { 0x20 } else { 0x30 };
        packet[3] = control | self.cc;
        packet
    }
}

fn encode_pcr(pcr: u64) -> [u8; 6] {
    let base = pcr / 300;
    let ext = pcr % 300;
    [
        (base >> 25) as u8,
        (base >> 17) as u8,
        (base >> 9) as u8,
        (base >> 1) as u8,
        ((base & 1) << 7) as u8 | 0x7E | (ext >> 8) as u8,
        ext as u8,
    ]
}

/// A long-form PSI section with a valid CRC.
pub fn long_section(table_id: u8, table_id_extension: u16, body: &[u8]) -> Vec<u8> {
    let section_length = 5 + body.len() + 4;
    let mut section = vec![
        table_id,
        0xB0 | (section_length >> 8) as u8,
        section_length as u8,
    ];
    section.extend_from_slice(&table_id_extension.to_be_bytes());
    // Version 0, current_next_indicator 1, section 0 of 0.
    section.extend_from_slice(&[0xC1, 0x00, 0x00]);
    section.extend_from_slice(body);
    let crc = crc32_mpeg2(&section);
    section.extend_from_slice(&crc.to_be_bytes());
    section
}

/// PAT with program 1 on `pmt_pid`.
pub fn pat_section(pmt_pid: u16) -> Vec<u8> {
    let mut body = vec![0x00, 0x01];
    body.extend_from_slice(&(0xE000 | pmt_pid).to_be_bytes());
    long_section(0x00, 0x0001, &body)
}

/// PMT of program 1; `streams` are (stream_type, pid).
pub fn pmt_section(pcr_pid: u16, streams: &[(u8, u16)]) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&(0xE000 | pcr_pid).to_be_bytes());
    body.extend_from_slice(&[0xF0, 0x00]);
    for &(stream_type, pid) in streams {
        body.push(stream_type);
        body.extend_from_slice(&(0xE000 | pid).to_be_bytes());
        body.extend_from_slice(&[0xF0, 0x00]);
    }
    long_section(0x02, 0x0001, &body)
}

pub fn pat_packet(pmt_pid: u16, cc: u8) -> [u8; TS_PACKET_LEN] {
    PacketSpec::new(PAT_PID)
        .pusi()
        .cc(cc)
        .psi_payload(&[&[0u8][..], &pat_section(pmt_pid)].concat())
        .build()
}

pub fn pmt_packet(
    pmt_pid: u16,
    pcr_pid: u16,
    streams: &[(u8, u16)],
    cc: u8,
) -> [u8; TS_PACKET_LEN] {
    PacketSpec::new(pmt_pid)
        .pusi()
        .cc(cc)
        .psi_payload(&[&[0u8][..], &pmt_section(pcr_pid, streams)].concat())
        .build()
}

/// PES packet start: header with a PTS, then `es`.
pub fn pes(stream_id: u8, es: &[u8]) -> Vec<u8> {
    pes_with_header_data(stream_id, &[0x21, 0x00, 0x01, 0x00, 0x01], es)
}

/// PES packet start whose optional header data is `header_data` verbatim.
pub fn pes_with_header_data(stream_id: u8, header_data: &[u8], es: &[u8]) -> Vec<u8> {
    let mut pes = vec![0x00, 0x00, 0x01, stream_id, 0x00, 0x00, 0x80, 0x80];
    pes.push(header_data.len() as u8);
    pes.extend_from_slice(header_data);
    pes.extend_from_slice(es);
    pes
}

/// H.264 access unit start: AUD, SPS, PPS, IDR slice.
pub const H264_IDR: &[u8] = &[
    0, 0, 0, 1, 0x09, 0x10, 0, 0, 0, 1, 0x67, 0x64, 0x00, 0x0A, 0, 0, 1, 0x68, 0xEE, 0x3C, 0, 0, 1,
    0x65, 0x88, 0x84,
];
/// H.264 access unit start: AUD, IDR slice only (no SPS repeated).
pub const H264_IDR_ONLY: &[u8] = &[0, 0, 0, 1, 0x09, 0x10, 0, 0, 1, 0x65, 0x88, 0x84];
/// H.264 access unit start: AUD, non-IDR slice.
pub const H264_P: &[u8] = &[0, 0, 0, 1, 0x09, 0x30, 0, 0, 1, 0x41, 0x9A, 0x02];

/// A packet on `pid` starting a PES with `pts` (and `dts`), with a PCR if given.
pub fn timed_pes_packet(pid: u16, pcr: Option<u64>, pts: u64, dts: Option<u64>) -> Vec<u8> {
    let mut packet = vec![0xffu8; TS_PACKET_LEN];
    packet[..4].copy_from_slice(&[0x47, 0x40 | (pid >> 8) as u8, pid as u8, 0x30]);
    packet[4] = 7;
    packet[5] = 0x10;
    packet[12..17].copy_from_slice(&[0, 0, 1, 0xE0, 0]);
    packet[17] = 0;
    packet[18] = 0x80;
    packet[19] = if dts.is_some() { 0xC0 } else { 0x80 };
    packet[20] = if dts.is_some() { 10 } else { 5 };
    packet[21] = if dts.is_some() { 0x30 } else { 0x20 };
    write_timestamp(&mut packet[21..26], pts);
    if let Some(dts) = dts {
        packet[26] = 0x10;
        write_timestamp(&mut packet[26..31], dts);
    }
    if let Some(pcr) = pcr {
        assert!(write_pcr(&mut packet, pcr));
    } else {
        packet[5] = 0;
    }
    packet
}

/// A live chunk of `ts_packets` filler TS packets (7 per RTP packet), its RTP packets
/// numbered on from where `packetizer` stands.
pub fn live_chunk(packetizer: &mut RtpPacketizer, ts_packets: usize) -> Arc<LiveChunk> {
    let data = Bytes::from(vec![0x47u8; TS_PACKET_LEN * ts_packets]);
    let rtp = packetizer.packetize(&data, 0);
    Arc::new(LiveChunk {
        chunk: Chunk {
            data,
            random_access: false,
            pcr_90k: None,
        },
        rtp,
        index: 0,
    })
}

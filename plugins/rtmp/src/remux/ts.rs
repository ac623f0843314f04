//! The MPEG-TS muxer: one program with at most one video and one audio stream, PAT and PMT,
//! PES packets with PTS/DTS, PCR, adaptation-field stuffing and continuity counters. Every call
//! appends whole 188-byte packets.

/// Size of every transport stream packet.
pub const PACKET_LEN: usize = 188;
/// Payload room of a packet without adaptation field.
const PAYLOAD_ROOM: usize = PACKET_LEN - 4;
/// Timestamps (PTS, DTS, PCR base) count 90 kHz ticks modulo 2^33.
pub const TIMESTAMP_WRAP: i64 = 1 << 33;

const PAT_PID: u16 = 0x0000;
const PMT_PID: u16 = 0x1000;
pub const VIDEO_PID: u16 = 0x0100;
pub const AUDIO_PID: u16 = 0x0101;
const PROGRAM_NUMBER: u16 = 1;
const VIDEO_STREAM_ID: u8 = 0xE0;
const AUDIO_STREAM_ID: u8 = 0xC0;
/// PMT stream_type of AAC in ADTS.
const AAC_ADTS_STREAM_TYPE: u8 = 0x0F;

/// Reduces a tick count to the 33-bit range of PTS, DTS and PCR.
pub fn wrap_ticks(ticks: i64) -> u64 {
    ticks.rem_euclid(TIMESTAMP_WRAP) as u64
}

/// The 5-byte PTS or DTS field: a 4-bit prefix, then 33 bits split 3/15/15 with marker bits.
pub fn encode_timestamp(prefix: u8, ticks: u64) -> [u8; 5] {
    [
        (prefix << 4) | (((ticks >> 30) & 0x07) as u8) << 1 | 1,
        (ticks >> 22) as u8,
        (((ticks >> 15) & 0x7F) as u8) << 1 | 1,
        (ticks >> 7) as u8,
        ((ticks & 0x7F) as u8) << 1 | 1,
    ]
}

/// The 6-byte PCR field: a 33-bit base, 6 reserved bits, a 9-bit extension (always 0 here).
pub fn encode_pcr(base: u64) -> [u8; 6] {
    [
        (base >> 25) as u8,
        (base >> 17) as u8,
        (base >> 9) as u8,
        (base >> 1) as u8,
        ((base & 1) as u8) << 7 | 0x7E,
        0,
    ]
}

/// CRC-32/MPEG-2 of a PSI section.
pub fn crc32_mpeg2(bytes: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &byte in bytes {
        crc ^= u32::from(byte) << 24;
        for _ in 0..8 {
            crc = if crc & 0x8000_0000 != 0 {
                (crc << 1) ^ 0x04C1_1DB7
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// Where a packet's payload starts and what its adaptation field carries.
#[derive(Clone, Copy, Default)]
struct PacketStart {
    pcr: Option<u64>,
    random_access: bool,
}

/// Splits `payload` into packets on `pid`, the first with payload_unit_start_indicator set
/// and `start`'s adaptation fields; the last packet is padded with adaptation-field stuffing.
fn packetize(out: &mut Vec<u8>, pid: u16, counter: &mut u8, payload: &[u8], start: PacketStart) {
    let mut rest = payload;
    let mut first = true;
    loop {
        let PacketStart { pcr, random_access } = if first { start } else { PacketStart::default() };
        // Length byte and flags byte, plus the PCR.
        let fields = match (pcr.is_some(), random_access) {
            (false, false) => 0,
            (has_pcr, _) => 2 + if has_pcr { 6 } else { 0 },
        };
        let take = rest.len().min(PAYLOAD_ROOM - fields);
        let adaptation = PAYLOAD_ROOM - take;
        out.push(0x47);
        out.push(u8::from(first) << 6 | (pid >> 8) as u8);
        out.push(pid as u8);
        let control = if adaptation > 0 { 0x30 } else { 0x10 };
        out.push(control | *counter);
        *counter = (*counter + 1) & 0x0F;
        if adaptation > 0 {
            out.push((adaptation - 1) as u8);
        }
        if adaptation > 1 {
            out.push(u8::from(random_access) << 6 | u8::from(pcr.is_some()) << 4);
            let mut written = 2;
            if let Some(base) = pcr {
                out.extend_from_slice(&encode_pcr(base));
                written += 6;
            }
            out.resize(out.len() + adaptation - written, 0xFF);
        }
        out.extend_from_slice(&rest[..take]);
        rest = &rest[take..];
        first = false;
        if rest.is_empty() {
            return;
        }
    }
}

/// One PSI section (table id through CRC) in a packet of its own, padded with 0xFF.
fn write_section(out: &mut Vec<u8>, pid: u16, counter: &mut u8, section: &[u8]) {
    let start = out.len();
    out.extend_from_slice(&[0x47, 0x40 | (pid >> 8) as u8, pid as u8, 0x10 | *counter, 0]);
    *counter = (*counter + 1) & 0x0F;
    out.extend_from_slice(section);
    out.resize(start + PACKET_LEN, 0xFF);
}

/// A section's header up to its table-id-specific fields, with the length filled in later.
fn section_start(table_id: u8, id: u16, version: u8) -> Vec<u8> {
    let mut section = vec![table_id, 0, 0];
    section.extend_from_slice(&id.to_be_bytes());
    // Reserved bits, version, current_next_indicator; section 0 of 0.
    section.extend_from_slice(&[0xC1 | (version << 1), 0, 0]);
    section
}

/// Fills in section_length and appends the CRC.
fn section_finish(mut section: Vec<u8>) -> Vec<u8> {
    let length = section.len() - 3 + 4;
    section[1] = 0xB0 | (length >> 8) as u8;
    section[2] = length as u8;
    let crc = crc32_mpeg2(&section);
    section.extend_from_slice(&crc.to_be_bytes());
    section
}

/// One access unit ready to be muxed.
pub struct Frame<'a> {
    /// Presentation time, 90 kHz, already wrapped to 33 bits.
    pub pts: u64,
    /// Decoding time; `None` when it equals the presentation time.
    pub dts: Option<u64>,
    /// Program clock (base, 90 kHz) to send with this frame on the PCR PID.
    pub pcr: u64,
    /// Whether a decoder can start here.
    pub random_access: bool,
    /// Elementary stream bytes (Annex B or ADTS).
    pub data: &'a [u8],
}

/// Stream layout and per-PID state of the program.
#[derive(Default)]
pub struct TsMuxer {
    video_stream_type: Option<u8>,
    audio: bool,
    version: u8,
    tables_due: bool,
    counters: Counters,
    pes: Vec<u8>,
}

#[derive(Default)]
struct Counters {
    pat: u8,
    pmt: u8,
    video: u8,
    audio: u8,
}

impl TsMuxer {
    /// Sets the program's streams; a change bumps the PMT version and sends new tables before
    /// the next frame.
    pub fn set_streams(&mut self, video_stream_type: Option<u8>, audio: bool) {
        if (self.video_stream_type, self.audio) != (video_stream_type, audio) {
            self.video_stream_type = video_stream_type;
            self.audio = audio;
            self.version = (self.version + 1) & 0x1F;
            self.tables_due = true;
        }
    }

    pub fn has_video(&self) -> bool {
        self.video_stream_type.is_some()
    }

    /// The PID carrying PCR: video if there is video, else audio.
    fn pcr_pid(&self) -> u16 {
        if self.has_video() {
            VIDEO_PID
        } else {
            AUDIO_PID
        }
    }

    /// Appends a PAT and a PMT.
    pub fn write_tables(&mut self, out: &mut Vec<u8>) {
        let mut pat = section_start(0x00, 1, self.version);
        pat.extend_from_slice(&PROGRAM_NUMBER.to_be_bytes());
        pat.extend_from_slice(&(0xE000 | PMT_PID).to_be_bytes());
        write_section(out, PAT_PID, &mut self.counters.pat, &section_finish(pat));

        let mut pmt = section_start(0x02, PROGRAM_NUMBER, self.version);
        pmt.extend_from_slice(&(0xE000 | self.pcr_pid()).to_be_bytes());
        pmt.extend_from_slice(&0xF000u16.to_be_bytes());
        let video = self.video_stream_type.map(|kind| (kind, VIDEO_PID));
        let audio = self.audio.then_some((AAC_ADTS_STREAM_TYPE, AUDIO_PID));
        for (stream_type, pid) in video.into_iter().chain(audio) {
            pmt.push(stream_type);
            pmt.extend_from_slice(&(0xE000 | pid).to_be_bytes());
            pmt.extend_from_slice(&0xF000u16.to_be_bytes());
        }
        write_section(out, PMT_PID, &mut self.counters.pmt, &section_finish(pmt));
        self.tables_due = false;
    }

    /// Appends a packet carrying only a PCR, on the PCR PID: keeps the program clock within
    /// 100 ms of the last when frames on that PID are further apart (a slide show, say).
    pub fn write_pcr(&mut self, pcr: u64, out: &mut Vec<u8>) {
        let pid = self.pcr_pid();
        let next = if pid == VIDEO_PID {
            self.counters.video
        } else {
            self.counters.audio
        };
        // Without payload the continuity counter repeats the previous packet's.
        let counter = next.wrapping_sub(1) & 0x0F;
        let start = out.len();
        out.extend_from_slice(&[0x47, (pid >> 8) as u8, pid as u8, 0x20 | counter]);
        out.extend_from_slice(&[(PAYLOAD_ROOM - 1) as u8, 0x10]);
        out.extend_from_slice(&encode_pcr(pcr));
        out.resize(start + PACKET_LEN, 0xFF);
    }

    /// Appends a video frame, tables first on a keyframe or after a stream change.
    pub fn write_video(&mut self, frame: &Frame<'_>, out: &mut Vec<u8>) {
        if frame.random_access || self.tables_due {
            self.write_tables(out);
        }
        self.build_pes(VIDEO_STREAM_ID, frame, false);
        let start = PacketStart {
            pcr: Some(frame.pcr),
            random_access: frame.random_access,
        };
        packetize(out, VIDEO_PID, &mut self.counters.video, &self.pes, start);
    }

    /// Appends an audio frame; `tables` asks for PAT/PMT first (audio-only streams repeat
    /// them now and then, there being no keyframes).
    pub fn write_audio(&mut self, frame: &Frame<'_>, tables: bool, out: &mut Vec<u8>) {
        if tables || self.tables_due {
            self.write_tables(out);
        }
        self.build_pes(AUDIO_STREAM_ID, frame, true);
        let start = PacketStart {
            pcr: (!self.has_video()).then_some(frame.pcr),
            random_access: frame.random_access,
        };
        packetize(out, AUDIO_PID, &mut self.counters.audio, &self.pes, start);
    }

    /// The PES packet of `frame` in `self.pes`. Audio PES give their length; video PES may be
    /// longer than 64 KiB and use the unbounded length 0.
    fn build_pes(&mut self, stream_id: u8, frame: &Frame<'_>, bounded: bool) {
        let pes = &mut self.pes;
        pes.clear();
        pes.extend_from_slice(&[0, 0, 1, stream_id, 0, 0]);
        match frame.dts {
            Some(dts) => {
                pes.extend_from_slice(&[0x80, 0xC0, 10]);
                pes.extend_from_slice(&encode_timestamp(0x3, frame.pts));
                pes.extend_from_slice(&encode_timestamp(0x1, dts));
            }
            None => {
                pes.extend_from_slice(&[0x80, 0x80, 5]);
                pes.extend_from_slice(&encode_timestamp(0x2, frame.pts));
            }
        }
        pes.extend_from_slice(frame.data);
        let length = pes.len() - 6;
        if bounded && length <= usize::from(u16::MAX) {
            pes[4..6].copy_from_slice(&(length as u16).to_be_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_timestamp(field: &[u8]) -> u64 {
        (u64::from(field[0] >> 1) & 0x07) << 30
            | u64::from(field[1]) << 22
            | u64::from(field[2] >> 1) << 15
            | u64::from(field[3]) << 7
            | u64::from(field[4] >> 1)
    }

    #[test]
    fn timestamps_round_trip_with_markers_and_prefix() {
        for ticks in [0, 1, 90_000, (1 << 32) + 12_345, (1 << 33) - 1] {
            let field = encode_timestamp(0x2, ticks);
            assert_eq!(field[0] >> 4, 0x2);
            assert_eq!(field[0] & 1, 1);
            assert_eq!(field[2] & 1, 1);
            assert_eq!(field[4] & 1, 1);
            assert_eq!(decode_timestamp(&field), ticks);
        }
        // The 33rd bit is the top bit of the first 3-bit group.
        assert_eq!(encode_timestamp(0x3, 1 << 32), [0x39, 0, 1, 0, 1]);
    }

    #[test]
    fn ticks_wrap_at_33_bits_in_both_directions() {
        assert_eq!(wrap_ticks(TIMESTAMP_WRAP + 5), 5);
        assert_eq!(wrap_ticks(-1), (1 << 33) - 1);
    }

    #[test]
    fn pcr_base_is_encoded_in_33_bits() {
        let base = (1u64 << 33) - 2;
        let field = encode_pcr(base);
        let decoded = u64::from(field[0]) << 25
            | u64::from(field[1]) << 17
            | u64::from(field[2]) << 9
            | u64::from(field[3]) << 1
            | u64::from(field[4] >> 7);
        assert_eq!(decoded, base);
        assert_eq!(field[4] & 0x7E, 0x7E);
    }

    #[test]
    fn crc_matches_the_known_check_value() {
        assert_eq!(crc32_mpeg2(b"123456789"), 0x0376_E6E7);
    }

    #[test]
    fn payloads_of_every_length_fill_whole_packets_with_stuffing() {
        for len in [1, 2, 150, 182, 183, 184, 185, 368, 1000] {
            for start in [
                PacketStart::default(),
                PacketStart {
                    pcr: Some(1234),
                    random_access: true,
                },
            ] {
                let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
                let mut out = Vec::new();
                let mut counter = 15;
                packetize(&mut out, 0x101, &mut counter, &payload, start);
                assert_eq!(out.len() % PACKET_LEN, 0, "len {len}");
                let mut carried = Vec::new();
                for (index, packet) in out.chunks(PACKET_LEN).enumerate() {
                    assert_eq!(packet[0], 0x47);
                    assert_eq!(packet[1] & 0x40 != 0, index == 0);
                    assert_eq!(packet[3] & 0x0F, ((15 + index) % 16) as u8);
                    let mut offset = 4;
                    if packet[3] & 0x20 != 0 {
                        offset += 1 + usize::from(packet[4]);
                        if index == 0 && start.random_access {
                            assert_eq!(packet[5], 0x50);
                        }
                    }
                    carried.extend_from_slice(&packet[offset..]);
                }
                assert_eq!(carried, payload, "len {len}");
            }
        }
    }

    #[test]
    fn one_byte_short_is_a_bare_adaptation_length_and_two_short_add_a_flags_byte() {
        let mut out = Vec::new();
        packetize(&mut out, 0x100, &mut 0, &[7; 183], PacketStart::default());
        assert_eq!(out[3], 0x30);
        assert_eq!(out[4], 0);
        assert_eq!(out[5], 7);
        out.clear();
        packetize(&mut out, 0x100, &mut 0, &[7; 182], PacketStart::default());
        assert_eq!(&out[4..7], &[1, 0, 7]);
    }

    #[test]
    fn tables_describe_the_streams_and_follow_changes() {
        let mut muxer = TsMuxer::default();
        muxer.set_streams(Some(0x1B), true);
        let mut out = Vec::new();
        muxer.write_tables(&mut out);
        assert_eq!(out.len(), 2 * PACKET_LEN);
        let pmt = &out[PACKET_LEN..];
        assert_eq!(u16::from_be_bytes([pmt[1], pmt[2]]) & 0x1FFF, PMT_PID);
        let section = &pmt[5..];
        let length = usize::from(u16::from_be_bytes([section[1], section[2]]) & 0x0FFF);
        assert_eq!(
            crc32_mpeg2(&section[..3 + length]),
            0,
            "CRC over section + CRC is 0"
        );
        assert_eq!(
            u16::from_be_bytes([section[8], section[9]]) & 0x1FFF,
            VIDEO_PID
        );
        assert_eq!(&section[12..17], &[0x1B, 0xE1, 0x00, 0xF0, 0x00]);
        assert_eq!(&section[17..22], &[0x0F, 0xE1, 0x01, 0xF0, 0x00]);

        muxer.set_streams(None, true);
        let frame = Frame {
            pts: 100,
            dts: None,
            pcr: 50,
            random_access: true,
            data: &[1, 2, 3],
        };
        out.clear();
        muxer.write_audio(&frame, false, &mut out);
        assert_eq!(out.len(), 3 * PACKET_LEN, "changed tables come first");
        let section = &out[PACKET_LEN + 5..];
        assert_eq!((section[5] >> 1) & 0x1F, 2, "version bumped twice");
        assert_eq!(
            u16::from_be_bytes([section[8], section[9]]) & 0x1FFF,
            AUDIO_PID
        );
        let audio = &out[2 * PACKET_LEN..];
        assert_eq!(
            audio[5] & 0x10,
            0x10,
            "audio-only streams carry PCR on audio"
        );
    }

    #[test]
    fn pcr_only_packet_repeats_the_counter_and_carries_no_payload() {
        let mut muxer = TsMuxer::default();
        muxer.set_streams(Some(0x1B), true);
        let mut out = Vec::new();
        let frame = Frame {
            pts: 0,
            dts: None,
            pcr: 0,
            random_access: false,
            data: &[0; 400],
        };
        muxer.write_video(&frame, &mut out);
        let last_cc = out[out.len() - PACKET_LEN + 3] & 0x0F;
        out.clear();
        muxer.write_pcr(9000, &mut out);
        assert_eq!(out.len(), PACKET_LEN);
        assert_eq!(u16::from_be_bytes([out[1], out[2]]), VIDEO_PID);
        assert_eq!(out[3], 0x20 | last_cc, "adaptation only, same counter");
        assert_eq!((out[4], out[5]), (183, 0x10));
        assert_eq!(&out[6..12], &encode_pcr(9000));
    }

    #[test]
    fn pes_header_carries_dts_only_when_it_differs() {
        let mut muxer = TsMuxer::default();
        muxer.set_streams(Some(0x1B), false);
        let mut out = Vec::new();
        let frame = Frame {
            pts: 3600,
            dts: Some(0),
            pcr: 0,
            random_access: true,
            data: &[0, 0, 0, 1, 9, 0xF0],
        };
        muxer.write_video(&frame, &mut out);
        let video = &out[2 * PACKET_LEN..];
        assert_eq!(video[5], 0x50, "random access and PCR flags");
        let pes = &video[4 + 1 + usize::from(video[4])..];
        assert_eq!(&pes[..9], &[0, 0, 1, 0xE0, 0, 0, 0x80, 0xC0, 10]);
        assert_eq!(decode_timestamp(&pes[9..14]), 3600);
        assert_eq!(decode_timestamp(&pes[14..19]), 0);

        muxer.set_streams(Some(0x1B), true);
        out.clear();
        let audio = Frame {
            dts: None,
            random_access: false,
            ..frame
        };
        muxer.write_audio(&audio, false, &mut out);
        let pes = &out[2 * PACKET_LEN..];
        let pes = &pes[4 + 1 + usize::from(pes[4])..];
        assert_eq!(&pes[..9], &[0, 0, 1, 0xC0, 0, 14, 0x80, 0x80, 5]);
    }
}

//! Live ingest: turns bytes arriving from an encoder into chunks of whole TS
//! packets, each random-access point starting a new chunk, so a late joiner
//! can be started at a keyframe after the latest PAT/PMT.
//!
//! [`ProgramTracker`] holds the PSI and random-access logic; the on-demand
//! file index reuses it so live and file playback cut streams identically.

use bytes::{BufMut, Bytes, BytesMut};

use super::ts::{
    parse_pat, parse_pmt, PacketAligner, Pmt, TsPacket, VideoCodec, NULL_PID, PAT_PID,
    TS_PACKET_LEN,
};

/// Most packets one chunk may hold, bounding per-chunk latency and size. A whole number of
/// RTP packets' worth: a full chunk ends on a full RTP packet, so the RTP/UDP fan-out can send
/// it and the next chunk's packets in one segmented message.
pub const MAX_CHUNK_PACKETS: usize = 9 * super::rtp::TS_PACKETS_PER_RTP;

/// A run of whole TS packets (`data.len()` is a multiple of 188).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    pub data: Bytes,
    /// The first packet is a random-access point (a decoder can start here).
    pub random_access: bool,
    /// First PCR in the chunk, in 90 kHz units.
    pub pcr_90k: Option<u64>,
}

/// Running counters of one ingest point; they survive [`TsIngest::reset`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IngestStats {
    /// Bytes fed to `push`.
    pub bytes: u64,
    /// Whole packets emitted in chunks.
    pub packets: u64,
    pub chunks: u64,
    /// Times packet sync was lost after having been acquired.
    pub resyncs: u64,
    /// Bytes discarded to (re)gain packet sync.
    pub skipped_bytes: u64,
    pub random_access_points: u64,
    /// Packets on the elementary (or PCR) PIDs of the followed program's PMT: decodable
    /// media, as opposed to bytes that merely look like TS.
    pub media_packets: u64,
}

/// What the tracker learned from one packet.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PacketInfo {
    pub random_access: bool,
    /// PCR in 27 MHz units, only from the program's PCR PID.
    pub pcr: Option<u64>,
    /// The packet is on one of the PMT's elementary streams or its PCR PID.
    pub media: bool,
}

/// Which packets count as random-access points, once the PMT is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AccessRule {
    /// Keyframes of this video stream.
    Video { pid: u16, codec: VideoCodec },
    /// Audio-only program: every audio frame boundary is decodable on its own.
    AudioStart { pid: u16 },
    /// No stream we know how to start on.
    None,
}

impl AccessRule {
    fn for_pmt(pmt: &Pmt) -> Self {
        if let Some((stream, codec)) = pmt.video_stream() {
            Self::Video {
                pid: stream.pid,
                codec,
            }
        } else if let Some(stream) = pmt.first_audio_stream() {
            Self::AudioStart { pid: stream.pid }
        } else {
            Self::None
        }
    }
}

/// Program state learned from the PAT and PMT.
#[derive(Debug, Clone)]
struct Program {
    program_number: u16,
    pmt_pid: u16,
    /// `None` until a PMT for this program has been seen.
    map: Option<ProgramMap>,
}

#[derive(Debug, Clone)]
struct ProgramMap {
    pmt_packet: [u8; TS_PACKET_LEN],
    pcr_pid: u16,
    access: AccessRule,
    /// The PIDs of the program's elementary streams.
    stream_pids: Vec<u16>,
}

/// Follows the PAT and PMT of a stream and classifies packets as
/// random-access points and PCR carriers.
///
/// Only the first program listed in the PAT is followed (an encoder feed
/// carries one). Before its PMT is known nothing is random access and no PCR
/// is reported.
#[derive(Debug, Clone, Default)]
pub struct ProgramTracker {
    pat_packet: Option<[u8; TS_PACKET_LEN]>,
    program: Option<Program>,
}

impl ProgramTracker {
    pub fn new() -> Self {
        Self::default()
    }

    /// Forgets all PSI (a new, unrelated stream starts).
    pub fn reset(&mut self) {
        *self = Self::default();
    }

    /// Updates PSI from `packet` and classifies it.
    pub fn inspect(&mut self, packet: &TsPacket<'_>) -> PacketInfo {
        // A packet the demodulator or encoder flagged as corrupt tells us nothing reliable.
        if packet.transport_error() {
            return PacketInfo::default();
        }
        let pid = packet.pid();
        if pid == PAT_PID {
            self.on_pat(packet);
            return PacketInfo::default();
        }
        let Some(program) = &self.program else {
            return PacketInfo::default();
        };
        if pid == program.pmt_pid {
            self.on_pmt(packet);
            return PacketInfo::default();
        }
        let Some(map) = &program.map else {
            return PacketInfo::default();
        };
        let pcr = if pid == map.pcr_pid && pid != NULL_PID {
            packet.pcr()
        } else {
            None
        };
        let random_access = match map.access {
            AccessRule::Video { pid: video, codec } if video == pid => {
                packet.random_access_indicator()
                    || (packet.payload_unit_start()
                        && pes_starts_random_access(packet.payload(), codec))
            }
            AccessRule::AudioStart { pid: audio } if audio == pid => packet.payload_unit_start(),
            _ => false,
        };
        let media = (pid == map.pcr_pid && pid != NULL_PID) || map.stream_pids.contains(&pid);
        PacketInfo {
            random_access,
            pcr,
            media,
        }
    }

    /// Latest PAT packet followed by the latest PMT packet, as received.
    ///
    /// Because these are the most recent copies, their continuity counters
    /// run on into the next PAT/PMT of the live stream.
    pub fn psi(&self) -> Option<Bytes> {
        let pat = self.pat_packet.as_ref()?;
        let map = self.program.as_ref()?.map.as_ref()?;
        let mut psi = BytesMut::with_capacity(2 * TS_PACKET_LEN);
        psi.put_slice(pat);
        psi.put_slice(&map.pmt_packet);
        Some(psi.freeze())
    }

    /// The PID whose PES starts are random-access points, once known.
    pub fn access_pid(&self) -> Option<u16> {
        match self.program.as_ref()?.map.as_ref()?.access {
            AccessRule::Video { pid, .. } | AccessRule::AudioStart { pid } => Some(pid),
            AccessRule::None => None,
        }
    }

    fn on_pat(&mut self, packet: &TsPacket<'_>) {
        let pat = match parse_pat(packet) {
            Ok(pat) => pat,
            Err(error) => {
                tracing::trace!(%error, "ignoring PAT packet");
                return;
            }
        };
        let Some(first) = pat.programs.first() else {
            tracing::debug!("PAT lists no programs");
            return;
        };
        self.pat_packet = Some(*packet.as_bytes());
        let unchanged = self.program.as_ref().is_some_and(|program| {
            program.program_number == first.program_number && program.pmt_pid == first.pmt_pid
        });
        if !unchanged {
            tracing::debug!(
                program = first.program_number,
                pmt_pid = first.pmt_pid,
                "following program from PAT"
            );
            self.program = Some(Program {
                program_number: first.program_number,
                pmt_pid: first.pmt_pid,
                map: None,
            });
        }
    }

    fn on_pmt(&mut self, packet: &TsPacket<'_>) {
        let Some(program) = &mut self.program else {
            return;
        };
        let pmt = match parse_pmt(packet) {
            Ok(pmt) if pmt.program_number == program.program_number => pmt,
            Ok(pmt) => {
                tracing::trace!(
                    program = pmt.program_number,
                    "ignoring PMT of another program"
                );
                return;
            }
            Err(error) => {
                tracing::trace!(%error, "ignoring PMT packet");
                return;
            }
        };
        let access = AccessRule::for_pmt(&pmt);
        if program.map.as_ref().map(|map| (map.pcr_pid, map.access)) != Some((pmt.pcr_pid, access))
        {
            tracing::debug!(version = pmt.version, pcr_pid = pmt.pcr_pid, ?access, "PMT");
        }
        program.map = Some(ProgramMap {
            pmt_packet: *packet.as_bytes(),
            pcr_pid: pmt.pcr_pid,
            access,
            stream_pids: pmt.streams.iter().map(|stream| stream.pid).collect(),
        });
    }
}

/// Whether the elementary-stream bytes that follow the PES header in this
/// (payload_unit_start) payload contain a start code that begins a decodable
/// picture sequence for `codec`.
///
/// Only this packet's payload is scanned: an encoder puts the parameter sets
/// (and usually the IDR slice header) at the very start of a keyframe's PES.
pub fn pes_starts_random_access(payload: &[u8], codec: VideoCodec) -> bool {
    let Some(es) = pes_elementary_data(payload) else {
        return false;
    };
    start_code_values(es).any(|value| match codec {
        VideoCodec::H264 => matches!(value & 0x1F, 5 | 7),
        VideoCodec::Hevc => matches!((value >> 1) & 0x3F, 16..=21 | 32),
        VideoCodec::Mpeg12 => value == 0xB3,
    })
}

/// Elementary-stream bytes of a PES packet start, after the optional header.
fn pes_elementary_data(payload: &[u8]) -> Option<&[u8]> {
    if payload.get(..3)? != [0x00, 0x00, 0x01] {
        return None;
    }
    let stream_id = *payload.get(3)?;
    // Streams without the optional PES header (program_stream_map, padding,
    // private_stream_2, ECM, EMM, DSM-CC, H.222.1 type E, directory).
    if matches!(
        stream_id,
        0xBC | 0xBE | 0xBF | 0xF0 | 0xF1 | 0xF2 | 0xF8 | 0xFF
    ) {
        return payload.get(6..);
    }
    let header_data_length = usize::from(*payload.get(8)?);
    payload.get(9 + header_data_length..)
}

/// The byte after each 00 00 01 start code.
fn start_code_values(data: &[u8]) -> impl Iterator<Item = u8> + '_ {
    data.windows(4)
        .filter(|window| window[..3] == [0x00, 0x00, 0x01])
        .map(|window| window[3])
}

/// Accumulates packets into the chunk being built.
#[derive(Debug, Default)]
struct ChunkBuilder {
    /// Spare capacity is shared by consecutive chunks, so one allocation
    /// serves many small chunks.
    buf: BytesMut,
    packets: usize,
    random_access: bool,
    pcr_90k: Option<u64>,
}

impl ChunkBuilder {
    fn add(&mut self, packet: &TsPacket<'_>, info: PacketInfo, out: &mut Vec<Chunk>) {
        if self.packets == MAX_CHUNK_PACKETS || (info.random_access && self.packets > 0) {
            self.flush(out);
        }
        if self.packets == 0 {
            self.random_access = info.random_access;
        }
        if self.pcr_90k.is_none() {
            self.pcr_90k = info.pcr.map(super::ts::pcr_to_90khz);
        }
        if self.buf.capacity() - self.buf.len() < TS_PACKET_LEN {
            self.buf.reserve(MAX_CHUNK_PACKETS * TS_PACKET_LEN);
        }
        self.buf.put_slice(packet.as_bytes());
        self.packets += 1;
    }

    fn flush(&mut self, out: &mut Vec<Chunk>) {
        if self.packets == 0 {
            return;
        }
        out.push(Chunk {
            data: self.buf.split().freeze(),
            random_access: self.random_access,
            pcr_90k: self.pcr_90k.take(),
        });
        self.packets = 0;
        self.random_access = false;
    }

    fn clear(&mut self) {
        self.buf.clear();
        self.packets = 0;
        self.random_access = false;
        self.pcr_90k = None;
    }
}

/// Live ingest of one encoder feed: aligns packets, tracks PSI and cuts chunks.
#[derive(Debug, Default)]
pub struct TsIngest {
    aligner: PacketAligner,
    tracker: ProgramTracker,
    builder: ChunkBuilder,
    stats: IngestStats,
    /// The PCRs of the most recent push, in 90 kHz units.
    latest_pcrs_90k: Vec<u64>,
}

impl TsIngest {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feed bytes exactly as they arrived from the network (arbitrary splits,
    /// may not start on a packet boundary). Every whole packet received so far
    /// is appended to `out` before returning. Only an incomplete packet waits
    /// for more input, and, while sync is being (re)acquired, a packet whose
    /// position is not yet confirmed by the next packet's sync byte.
    pub fn push(&mut self, input: &[u8], out: &mut Vec<Chunk>) {
        self.push_more(input, out);
        self.flush(out);
    }

    /// [`TsIngest::push`], except that the chunk being built stays open: more of the same
    /// burst follows (an encoder's write that a protocol delivers in pieces), and
    /// [`TsIngest::flush`] ends it. A burst so makes chunks of [`MAX_CHUNK_PACKETS`], not one
    /// per piece.
    pub fn push_more(&mut self, input: &[u8], out: &mut Vec<Chunk>) {
        self.stats.bytes += input.len() as u64;
        let chunks_before = out.len();
        let Self {
            aligner,
            tracker,
            builder,
            stats,
            latest_pcrs_90k,
        } = self;
        latest_pcrs_90k.clear();
        aligner.push(input, |_, packet| {
            let info = tracker.inspect(&packet);
            if let Some(pcr) = info.pcr {
                latest_pcrs_90k.push(super::ts::pcr_to_90khz(pcr));
            }
            stats.packets += 1;
            stats.random_access_points += u64::from(info.random_access);
            stats.media_packets += u64::from(info.media);
            builder.add(&packet, info, out);
        });
        self.stats.chunks += (out.len() - chunks_before) as u64;
    }

    /// End the chunk being built, if any: appended to `out`.
    pub fn flush(&mut self, out: &mut Vec<Chunk>) {
        let chunks_before = out.len();
        self.builder.flush(out);
        self.stats.chunks += (out.len() - chunks_before) as u64;
    }

    /// Latest PAT packet followed by the latest PMT packet, ready to send
    /// before a late joiner's first keyframe.
    pub fn psi(&self) -> Option<Bytes> {
        self.tracker.psi()
    }

    /// The PCRs among the packets of the most recent push, in order, in 90 kHz units.
    pub fn latest_pcrs_90k(&self) -> &[u64] {
        &self.latest_pcrs_90k
    }

    pub fn stats(&self) -> IngestStats {
        IngestStats {
            resyncs: self.aligner.resyncs(),
            skipped_bytes: self.aligner.skipped_bytes(),
            ..self.stats
        }
    }

    /// Forgets partial data and PSI (a new encoder connection). Stats keep counting.
    pub fn reset(&mut self) {
        self.aligner.reset();
        self.tracker.reset();
        self.builder.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::super::ts::{packets, SYNC_BYTE};
    use super::*;

    const AV_STREAMS: &[(u8, u16)] = &[(0x1B, VIDEO_PID), (0x0F, AUDIO_PID)];

    fn psi_packets() -> Vec<u8> {
        [
            pat_packet(PMT_PID, 0),
            pmt_packet(PMT_PID, VIDEO_PID, AV_STREAMS, 0),
        ]
        .concat()
    }

    fn video_start(es: &[u8], pcr: Option<u64>, rai: bool) -> [u8; TS_PACKET_LEN] {
        let mut spec = PacketSpec::new(VIDEO_PID).pusi().payload(&pes(0xE0, es));
        if let Some(pcr) = pcr {
            spec = spec.pcr(pcr);
        }
        if rai {
            spec = spec.rai();
        }
        spec.build()
    }

    fn video_cont(fill: u8) -> [u8; TS_PACKET_LEN] {
        PacketSpec::new(VIDEO_PID).payload(&[fill; 184]).build()
    }

    fn audio_start() -> [u8; TS_PACKET_LEN] {
        PacketSpec::new(AUDIO_PID)
            .pusi()
            .payload(&pes(0xC0, &[0xFF, 0xF1, 0x50, 0x80]))
            .build()
    }

    /// PSI, then a GOP: IDR (by NAL only, no RAI), 3 continuation packets,
    /// audio, P frame, 2 continuation packets, then an IDR flagged by RAI.
    fn sample_stream() -> Vec<u8> {
        let mut stream = psi_packets();
        stream.extend_from_slice(&video_start(H264_IDR, Some(27_000_000), false));
        for i in 0..3 {
            stream.extend_from_slice(&video_cont(i));
        }
        stream.extend_from_slice(&audio_start());
        stream.extend_from_slice(&video_start(H264_P, Some(28_080_000), false));
        stream.extend_from_slice(&video_cont(7));
        stream.extend_from_slice(&video_cont(8));
        stream.extend_from_slice(&video_start(H264_P, None, true));
        stream
    }

    fn run(splits: &[usize], stream: &[u8]) -> (Vec<Chunk>, TsIngest) {
        let mut ingest = TsIngest::new();
        let mut out = Vec::new();
        let mut rest = stream;
        for &size in splits.iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let (head, tail) = rest.split_at(size.min(rest.len()));
            let before = out.len();
            ingest.push(head, &mut out);
            for chunk in &out[before..] {
                assert_eq!(chunk.data.len() % TS_PACKET_LEN, 0);
                assert!(!chunk.data.is_empty());
            }
            rest = tail;
        }
        (out, ingest)
    }

    /// Random-access flags of every emitted packet, chunk boundaries ignored.
    fn packet_flags(chunks: &[Chunk]) -> Vec<bool> {
        chunks
            .iter()
            .flat_map(|chunk| {
                let n = chunk.data.len() / TS_PACKET_LEN;
                (0..n).map(move |i| i == 0 && chunk.random_access)
            })
            .collect()
    }

    #[test]
    fn output_is_identical_for_any_split() {
        let stream = sample_stream();
        let (reference, _) = run(&[stream.len()], &stream);
        let reference_bytes: Vec<u8> = reference.iter().flat_map(|c| c.data.to_vec()).collect();
        // The first packet is only confirmed once the second one's sync byte
        // arrives, so everything is emitted by the end of the stream.
        assert_eq!(reference_bytes, stream);
        for splits in [
            &[1][..],
            &[187],
            &[188],
            &[189],
            &[1000],
            &[1, 187, 189, 1000],
        ] {
            let (chunks, ingest) = run(splits, &stream);
            let bytes: Vec<u8> = chunks.iter().flat_map(|c| c.data.to_vec()).collect();
            assert_eq!(bytes, stream, "splits {splits:?}");
            // Random-access starts are identical even though chunking differs.
            let ra_starts: Vec<usize> = packet_flags(&chunks)
                .iter()
                .enumerate()
                .filter_map(|(i, ra)| ra.then_some(i))
                .collect();
            assert_eq!(ra_starts, vec![2, 10], "splits {splits:?}");
            let stats = ingest.stats();
            assert_eq!(stats.packets, 11);
            assert_eq!(stats.bytes, stream.len() as u64);
            assert_eq!(stats.random_access_points, 2);
            assert_eq!(stats.skipped_bytes, 0);
        }
    }

    #[test]
    fn chunks_split_at_random_access_points() {
        let stream = sample_stream();
        let (chunks, _) = run(&[stream.len()], &stream);
        let sizes: Vec<(usize, bool)> = chunks
            .iter()
            .map(|c| (c.data.len() / TS_PACKET_LEN, c.random_access))
            .collect();
        assert_eq!(sizes, vec![(2, false), (8, true), (1, true)]);
        // PCR of the IDR packet, not of the later P frame.
        assert_eq!(chunks[1].pcr_90k, Some(90_000));
        assert_eq!(chunks[0].pcr_90k, None);
        assert_eq!(chunks[2].pcr_90k, None);
    }

    #[test]
    fn a_burst_pushed_in_pieces_makes_full_chunks_and_the_flush_ends_it() {
        let mut stream = psi_packets();
        stream.extend_from_slice(&video_start(H264_IDR, None, true));
        for i in 0..100 {
            stream.extend_from_slice(&video_cont(i as u8));
        }
        // One packet per piece, as an HTTP chunked body may bring them.
        let mut ingest = TsIngest::new();
        let mut out = Vec::new();
        for piece in stream.chunks(TS_PACKET_LEN) {
            ingest.push_more(piece, &mut out);
        }
        let sizes = |out: &[Chunk]| -> Vec<usize> {
            out.iter().map(|c| c.data.len() / TS_PACKET_LEN).collect()
        };
        // The open chunk waits; the full one went out.
        assert_eq!(sizes(&out), vec![2, 63]);
        ingest.flush(&mut out);
        assert_eq!(sizes(&out), vec![2, 63, 38]);
        assert_eq!(ingest.stats().chunks, 3);
        ingest.flush(&mut out);
        assert_eq!(out.len(), 3, "nothing more to flush");
        // The same pieces pushed one by one: a chunk per piece once the first is out.
        let (chunks, _) = run(&[TS_PACKET_LEN], &stream);
        assert_eq!(chunks.len(), 102);
    }

    #[test]
    fn a_chunk_holds_at_most_nine_rtp_packets_worth() {
        let mut stream = psi_packets();
        stream.extend_from_slice(&video_start(H264_IDR, None, true));
        for i in 0..150 {
            stream.extend_from_slice(&video_cont(i as u8));
        }
        let (chunks, _) = run(&[stream.len()], &stream);
        let sizes: Vec<(usize, bool)> = chunks
            .iter()
            .map(|c| (c.data.len() / TS_PACKET_LEN, c.random_access))
            .collect();
        assert_eq!(MAX_CHUNK_PACKETS, 63);
        assert_eq!(
            sizes,
            vec![(2, false), (63, true), (63, false), (25, false)]
        );
    }

    #[test]
    fn every_push_flushes() {
        let stream = sample_stream();
        let mut ingest = TsIngest::new();
        let mut out = Vec::new();
        ingest.push(&stream[..3 * TS_PACKET_LEN + 10], &mut out);
        // Three packets are complete; none are held back for more input.
        let emitted: usize = out.iter().map(|c| c.data.len()).sum();
        assert_eq!(emitted, 3 * TS_PACKET_LEN);
        ingest.push(&stream[3 * TS_PACKET_LEN + 10..4 * TS_PACKET_LEN], &mut out);
        let emitted: usize = out.iter().map(|c| c.data.len()).sum();
        assert_eq!(emitted, 4 * TS_PACKET_LEN);
    }

    #[test]
    fn random_access_by_indicator_and_by_nal() {
        let mut tracker = ProgramTracker::new();
        let mut inspect = |bytes: &[u8]| tracker.inspect(&TsPacket::new(bytes).unwrap());
        // Before the PMT, nothing is random access.
        assert!(!inspect(&video_start(H264_IDR, None, true)).random_access);
        for packet in packets(&psi_packets()) {
            inspect(packet.as_bytes());
        }
        assert!(inspect(&video_start(H264_IDR, None, false)).random_access);
        assert!(inspect(&video_start(H264_IDR_ONLY, None, false)).random_access);
        assert!(inspect(&video_start(H264_P, None, true)).random_access);
        assert!(!inspect(&video_start(H264_P, None, false)).random_access);
        // RAI on a continuation packet still counts.
        let rai_cont = PacketSpec::new(VIDEO_PID).rai().payload(&[0; 100]).build();
        assert!(inspect(&rai_cont).random_access);
        // An IDR start code without payload_unit_start is mid-PES data.
        let mid = PacketSpec::new(VIDEO_PID).payload(H264_IDR).build();
        assert!(!inspect(&mid).random_access);
        // Audio is not random access when there is video.
        assert!(!inspect(&audio_start()).random_access);
    }

    #[test]
    fn start_codes_inside_pes_header_are_ignored() {
        let payload = pes_with_header_data(0xE0, &[0x00, 0x00, 0x01, 0x65], H264_P);
        assert!(!pes_starts_random_access(&payload, VideoCodec::H264));
        let payload = pes_with_header_data(0xE0, &[0xFF, 0xFF], H264_IDR);
        assert!(pes_starts_random_access(&payload, VideoCodec::H264));
        assert!(!pes_starts_random_access(&[0x00, 0x00], VideoCodec::H264));
        assert!(!pes_starts_random_access(
            &[0x00, 0x00, 0x01, 0xE0, 0, 0, 0x80, 0x80, 200],
            VideoCodec::H264
        ));
    }

    #[test]
    fn hevc_and_mpeg2_keyframes() {
        // HEVC NAL header: type in bits 1..=6 of the first byte.
        let vps = [0, 0, 1, 32 << 1, 0x01];
        let idr_w_radl = [0, 0, 1, 19 << 1, 0x01];
        let trail = [0, 0, 1, 1 << 1, 0x01];
        assert!(pes_starts_random_access(&pes(0xE0, &vps), VideoCodec::Hevc));
        assert!(pes_starts_random_access(
            &pes(0xE0, &idr_w_radl),
            VideoCodec::Hevc
        ));
        assert!(!pes_starts_random_access(
            &pes(0xE0, &trail),
            VideoCodec::Hevc
        ));

        let sequence_header = [0, 0, 1, 0xB3, 0x0A, 0x00];
        let picture = [0, 0, 1, 0x00, 0x00, 0x0F];
        assert!(pes_starts_random_access(
            &pes(0xE0, &sequence_header),
            VideoCodec::Mpeg12
        ));
        assert!(!pes_starts_random_access(
            &pes(0xE0, &picture),
            VideoCodec::Mpeg12
        ));
    }

    #[test]
    fn audio_only_program_starts_on_every_audio_pes() {
        let mut stream = [
            pat_packet(PMT_PID, 0),
            pmt_packet(PMT_PID, AUDIO_PID, &[(0x06, 0x0102), (0x0F, AUDIO_PID)], 0),
        ]
        .concat();
        for i in 0..3 {
            stream.extend_from_slice(&audio_start());
            stream.extend_from_slice(&PacketSpec::new(AUDIO_PID).payload(&[i; 184]).build());
        }
        let (chunks, ingest) = run(&[stream.len()], &stream);
        let sizes: Vec<(usize, bool)> = chunks
            .iter()
            .map(|c| (c.data.len() / TS_PACKET_LEN, c.random_access))
            .collect();
        assert_eq!(sizes, vec![(2, false), (2, true), (2, true), (2, true)]);
        assert_eq!(ingest.stats().random_access_points, 3);
    }

    #[test]
    fn psi_is_latest_pat_and_pmt() {
        let mut ingest = TsIngest::new();
        let mut out = Vec::new();
        assert_eq!(ingest.psi(), None);
        ingest.push(&pat_packet(PMT_PID, 0), &mut out);
        ingest.push(&video_cont(0), &mut out);
        assert_eq!(ingest.psi(), None, "PMT not seen yet");

        let pat = pat_packet(PMT_PID, 1);
        let pmt = pmt_packet(PMT_PID, VIDEO_PID, AV_STREAMS, 1);
        ingest.push(&[pat, pmt, video_cont(1)].concat(), &mut out);
        let psi = ingest.psi().unwrap();
        assert_eq!(psi.len(), 2 * TS_PACKET_LEN);
        assert_eq!(&psi[..TS_PACKET_LEN], &pat[..]);
        assert_eq!(&psi[TS_PACKET_LEN..], &pmt[..]);

        // A PAT moving the PMT invalidates the old PMT until the new one arrives.
        ingest.push(&[pat_packet(0x1100, 2), video_cont(2)].concat(), &mut out);
        assert_eq!(ingest.psi(), None);
        let moved_pmt = pmt_packet(0x1100, VIDEO_PID, AV_STREAMS, 0);
        ingest.push(&[moved_pmt, video_cont(3)].concat(), &mut out);
        assert_eq!(&ingest.psi().unwrap()[TS_PACKET_LEN..], &moved_pmt[..]);

        ingest.reset();
        assert_eq!(ingest.psi(), None);
    }

    #[test]
    fn resyncs_after_garbage() {
        let packets = sample_stream();
        let mut stream = vec![0xAB, SYNC_BYTE, 0x00, 0x01];
        stream.extend_from_slice(&packets[..5 * TS_PACKET_LEN]);
        stream.extend_from_slice(&[0x00, 0x11, SYNC_BYTE, 0x22, 0x33]);
        stream.extend_from_slice(&packets[5 * TS_PACKET_LEN..]);
        for splits in [&[1][..], &[189], &[1000], &[stream.len()]] {
            let (chunks, ingest) = run(splits, &stream);
            let bytes: Vec<u8> = chunks.iter().flat_map(|c| c.data.to_vec()).collect();
            assert_eq!(bytes, packets, "splits {splits:?}");
            let stats = ingest.stats();
            assert_eq!(stats.skipped_bytes, 9);
            assert_eq!(stats.resyncs, 1);
            assert_eq!(stats.random_access_points, 2);
        }
    }

    #[test]
    fn reset_drops_partial_packet() {
        let stream = sample_stream();
        let mut ingest = TsIngest::new();
        let mut out = Vec::new();
        ingest.push(&stream[..2 * TS_PACKET_LEN + 100], &mut out);
        ingest.reset();
        out.clear();
        ingest.push(&stream, &mut out);
        let bytes: Vec<u8> = out.iter().flat_map(|c| c.data.to_vec()).collect();
        assert_eq!(bytes, stream);
    }

    #[test]
    fn garbage_never_panics() {
        let mut state = 0xDEAD_BEEFu32;
        let mut noise = || {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state
        };
        let mut ingest = TsIngest::new();
        let mut out = Vec::new();
        // Valid PSI, then packets with random bodies so the parsers see junk.
        ingest.push(&psi_packets(), &mut out);
        for _ in 0..2000 {
            let mut packet = [0u8; TS_PACKET_LEN];
            packet.iter_mut().for_each(|b| *b = noise() as u8);
            packet[0] = SYNC_BYTE;
            if noise() % 4 == 0 {
                packet[1] = (packet[1] & 0xE0) | (VIDEO_PID >> 8) as u8;
                packet[2] = VIDEO_PID as u8;
            }
            let cut = (noise() as usize) % TS_PACKET_LEN;
            ingest.push(&packet[..cut], &mut out);
            ingest.push(&packet[cut..], &mut out);
        }
        for chunk in &out {
            assert_eq!(chunk.data.len() % TS_PACKET_LEN, 0);
            assert!(chunk.data.len() <= MAX_CHUNK_PACKETS * TS_PACKET_LEN);
        }
        assert_eq!(ingest.stats().packets, 2002);
    }

    fn fixture() -> &'static [u8] {
        include_bytes!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/src/media/testdata/small.ts"
        ))
    }

    #[test]
    fn real_file_has_one_keyframe_per_second() {
        let file = fixture();
        for splits in [&[1316][..], &[1, 187, 189, 1000, 4096]] {
            let (chunks, ingest) = run(splits, file);
            let stats = ingest.stats();
            assert_eq!(stats.bytes, file.len() as u64);
            assert_eq!(stats.packets * TS_PACKET_LEN as u64, file.len() as u64);
            assert_eq!(stats.skipped_bytes, 0);
            // 4 s at 25 fps with a 25-frame GOP.
            assert!(
                (3..=5).contains(&stats.random_access_points),
                "{} random-access points",
                stats.random_access_points
            );
            let ra_chunks = chunks.iter().filter(|c| c.random_access).count() as u64;
            assert_eq!(ra_chunks, stats.random_access_points);
            for chunk in chunks.iter().filter(|c| c.random_access) {
                let first = packets(&chunk.data).next().unwrap();
                assert_eq!(first.pid(), 0x0100);
                assert!(first.payload_unit_start());
            }
            let pcrs: Vec<u64> = chunks.iter().filter_map(|c| c.pcr_90k).collect();
            assert!(pcrs.windows(2).all(|w| w[0] <= w[1]));

            let psi = ingest.psi().unwrap();
            assert_eq!(psi.len(), 2 * TS_PACKET_LEN);
            let pids: Vec<u16> = packets(&psi).map(|p| p.pid()).collect();
            assert_eq!(pids, vec![PAT_PID, 0x1000]);
        }
    }

    #[test]
    fn only_packets_on_the_programs_streams_count_as_media() {
        let mut out = Vec::new();
        let mut ingest = TsIngest::new();
        // Null packets and packets on unannounced PIDs, with and without PSI: no media.
        let null = PacketSpec::new(NULL_PID).payload(&[0xFF; 184]).build();
        ingest.push(&null.repeat(20), &mut out);
        ingest.push(&video_cont(1), &mut out);
        assert_eq!(ingest.stats().media_packets, 0, "no PMT yet");
        ingest.push(&psi_packets(), &mut out);
        ingest.push(&null.repeat(5), &mut out);
        ingest.push(
            &PacketSpec::new(0x1234).payload(&[0; 184]).build(),
            &mut out,
        );
        assert_eq!(ingest.stats().media_packets, 0, "PSI and foreign PIDs");
        ingest.push(&video_cont(2), &mut out);
        ingest.push(&audio_start(), &mut out);
        assert_eq!(ingest.stats().media_packets, 2);
    }
}

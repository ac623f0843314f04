//! FLV tags (H.264 or H.265 video, AAC audio) remuxed into MPEG-TS, without any IO.
//!
//! [`FlvToTs`] takes the bodies of RTMP audio, video and data messages (which are FLV tag
//! bodies) one at a time and appends whole 188-byte TS packets: PAT and PMT in front of every
//! keyframe (every second for audio-only streams), video as Annex B with access unit
//! delimiters and the parameter sets at every keyframe ([`avc`], [`hevc`]), audio as ADTS
//! ([`aac`]), PTS/DTS from the message timestamps and composition offsets, PCR on the video
//! PID ([`ts`]). Codecs MPEG-TS players cannot get from it are refused with the codec named.
//! Memory is bounded by one tag: nothing is buffered between calls beyond the codec
//! configurations.

pub mod aac;
pub mod avc;
pub mod hevc;
mod reader;
pub mod ts;

#[cfg(test)]
mod e2e_tests;

use std::fmt;

use thiserror::Error;

use self::aac::AacConfig;
use self::avc::{VideoCodec, VideoConfig};
use self::reader::Reader;
use self::ts::{wrap_ticks, Frame, TsMuxer};

/// The kind of an FLV tag (tag types 8, 9 and 18); RTMP message types 8, 9 and 18 carry them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TagKind {
    Audio,
    Video,
    Script,
}

impl fmt::Display for TagKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TagKind::Audio => "audio",
            TagKind::Video => "video",
            TagKind::Script => "script data",
        })
    }
}

/// How a codec was named in the stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CodecId {
    /// The 4-bit CodecID of a classic FLV video tag (7 is H.264).
    FlvVideo(u8),
    /// The 4-bit SoundFormat of a classic FLV audio tag (10 is AAC).
    FlvAudio(u8),
    /// The FourCC of an Enhanced RTMP tag.
    FourCc([u8; 4]),
}

impl fmt::Display for CodecId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CodecId::FlvVideo(id) => {
                let name = match id {
                    2 => " (Sorenson H.263)",
                    3 | 6 => " (Screen Video)",
                    4 | 5 => " (On2 VP6)",
                    12 => " (non-standard HEVC; use Enhanced RTMP)",
                    _ => "",
                };
                write!(
                    f,
                    "FLV video codec id {id}{name}, only H.264 (7) is supported"
                )
            }
            CodecId::FlvAudio(id) => {
                let name = match id {
                    0 | 3 => " (PCM)",
                    1 => " (ADPCM)",
                    2 | 14 => " (MP3)",
                    4..=6 => " (Nellymoser)",
                    7 | 8 => " (G.711)",
                    11 => " (Speex)",
                    _ => "",
                };
                write!(f, "FLV sound format {id}{name}, only AAC (10) is supported")
            }
            CodecId::FourCc(fourcc) => {
                write!(
                    f,
                    "Enhanced RTMP codec `{}`, only `avc1`, `hvc1` and `mp4a` are supported",
                    fourcc.escape_ascii()
                )
            }
        }
    }
}

/// What was wrong with a tag.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum Malformation {
    #[error("{what} cut short: needs {needed} bytes, {available} left")]
    Truncated {
        what: &'static str,
        needed: usize,
        available: usize,
    },
    #[error("NAL unit of {length} bytes where {available} are left in the tag")]
    NalBeyondTag { length: usize, available: usize },
    #[error("{0}")]
    Invalid(&'static str),
}

/// Why a tag cannot be remuxed. Every one ends the stream: what follows would not decode.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum RemuxError {
    #[error("unsupported video codec: {0}")]
    UnsupportedVideoCodec(CodecId),
    #[error("unsupported audio codec: {0}")]
    UnsupportedAudioCodec(CodecId),
    #[error("unsupported {kind}: {what}")]
    UnsupportedFeature { kind: TagKind, what: &'static str },
    #[error("video frame before the video sequence header (decoder configuration)")]
    VideoBeforeSequenceHeader,
    #[error("audio frame before the AAC sequence header (AudioSpecificConfig)")]
    AudioBeforeSequenceHeader,
    #[error("malformed {kind} tag: {reason}")]
    Malformed { kind: TagKind, reason: Malformation },
}

impl RemuxError {
    fn video(reason: Malformation) -> Self {
        RemuxError::Malformed {
            kind: TagKind::Video,
            reason,
        }
    }

    fn audio(reason: Malformation) -> Self {
        RemuxError::Malformed {
            kind: TagKind::Audio,
            reason,
        }
    }
}

/// 90 kHz ticks per millisecond.
const TICKS_PER_MS: i64 = 90;
/// How far decoding times run ahead of the program clock: the decoder's buffering time, and
/// room for negative composition offsets without a PTS before the first PCR.
const DECODE_DELAY_TICKS: i64 = 700 * TICKS_PER_MS;
/// How often an audio-only stream repeats PAT and PMT for players that join late.
const AUDIO_ONLY_TABLE_INTERVAL_MS: i64 = 1000;
/// When video frames are further apart than this, an audio frame brings a PCR-only packet on
/// the video PID: with AAC frames 21 to 23 ms apart (48 and 44.1 kHz), PCRs stay within the
/// 100 ms that ISO/IEC 13818-1 allows.
const PCR_REFRESH_MS: i64 = 70;
/// A video timestamp this far behind the last PCR is a jump of the encoder's clock, which the
/// PCR follows, not interleaving jitter, against which the PCR is held. Well below
/// [`DECODE_DELAY_TICKS`], so a held PCR never passes the frame's decoding time.
const PCR_HOLD_LIMIT_MS: i64 = 500;

/// Turns wrapping 32-bit millisecond timestamps into a continuous count: each step is taken
/// as the shortest signed distance from the previous timestamp.
#[derive(Default)]
struct Clock {
    last: Option<(u32, i64)>,
}

impl Clock {
    fn extend(&mut self, timestamp_ms: u32) -> i64 {
        let extended = match self.last {
            None => i64::from(timestamp_ms),
            Some((last, extended)) => extended + i64::from(timestamp_ms.wrapping_sub(last) as i32),
        };
        self.last = Some((timestamp_ms, extended));
        extended
    }
}

/// One video or audio payload as the tag header describes it.
enum Payload<'a> {
    /// Decoder configuration (sequence header / SequenceStart).
    Config(&'a [u8]),
    /// Coded frame with its composition time offset in ms.
    Frame {
        composition_ms: i32,
        keyframe: bool,
        data: &'a [u8],
    },
    /// Nothing to mux (end of sequence, command frames, metadata).
    Skip,
}

/// FLV-to-MPEG-TS remuxer for one published stream.
#[derive(Default)]
pub struct FlvToTs {
    clock: Clock,
    video: Option<VideoConfig>,
    audio: Option<AacConfig>,
    muxer: TsMuxer,
    /// Inter frames before the first keyframe are dropped: nothing could decode them.
    keyframe_seen: bool,
    last_audio_tables_ms: Option<i64>,
    /// The last PCR on the video PID, in ms of the extended clock.
    video_pcr_ms: Option<i64>,
    /// Reused for the elementary stream of each frame.
    es: Vec<u8>,
}

impl FlvToTs {
    pub fn new() -> Self {
        Self::default()
    }

    /// One RTMP audio/video/data message body (= an FLV tag body) with its RTMP timestamp in
    /// ms (absolute and monotonic; u32 wrapping allowed). Appends whole 188-byte MPEG-TS
    /// packets to `out`, PAT/PMT before every keyframe. On error `out` is left as it was.
    pub fn push(
        &mut self,
        kind: TagKind,
        timestamp_ms: u32,
        body: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), RemuxError> {
        match kind {
            TagKind::Script => Ok(()),
            TagKind::Video => {
                let codec = self.video.as_ref().map(|config| config.codec);
                let (codec, payload) = parse_video_tag(body, codec)?;
                self.on_video(codec, payload, timestamp_ms, out)
            }
            TagKind::Audio => {
                let payload = parse_audio_tag(body)?;
                self.on_audio(payload, timestamp_ms, out)
            }
        }
    }

    fn set_streams(&mut self) {
        let video = self.video.as_ref().map(|config| config.codec.stream_type());
        self.muxer.set_streams(video, self.audio.is_some());
    }

    fn on_video(
        &mut self,
        codec: VideoCodec,
        payload: Payload<'_>,
        timestamp_ms: u32,
        out: &mut Vec<u8>,
    ) -> Result<(), RemuxError> {
        let (composition_ms, keyframe, data) = match payload {
            // An empty sequence header announces a configuration still to come.
            Payload::Skip | Payload::Config([]) => return Ok(()),
            Payload::Config(record) => {
                let config = match codec {
                    VideoCodec::H264 => avc::parse_avc_config(record),
                    VideoCodec::H265 => hevc::parse_hevc_config(record),
                };
                self.video = Some(config.map_err(RemuxError::video)?);
                self.set_streams();
                return Ok(());
            }
            Payload::Frame {
                composition_ms,
                keyframe,
                data,
            } => (composition_ms, keyframe, data),
        };
        let config = match &self.video {
            Some(config) if config.codec == codec => config,
            _ => return Err(RemuxError::VideoBeforeSequenceHeader),
        };
        let ms = self.clock.extend(timestamp_ms);
        if !keyframe && !self.keyframe_seen {
            return Ok(());
        }
        self.es.clear();
        if !avc::write_access_unit(config, data, keyframe, &mut self.es)
            .map_err(RemuxError::video)?
        {
            return Ok(());
        }
        self.keyframe_seen = true;
        let dts = ms * TICKS_PER_MS + DECODE_DELAY_TICKS;
        let pts = dts + i64::from(composition_ms) * TICKS_PER_MS;
        // Never behind a PCR-only packet sent for audio a little ahead of this frame.
        let pcr_ms = match self.video_pcr_ms {
            Some(last) if last > ms && last - ms < PCR_HOLD_LIMIT_MS => last,
            _ => ms,
        };
        self.video_pcr_ms = Some(pcr_ms);
        let frame = Frame {
            pts: wrap_ticks(pts),
            dts: (pts != dts).then(|| wrap_ticks(dts)),
            pcr: wrap_ticks(pcr_ms * TICKS_PER_MS),
            random_access: keyframe,
            data: &self.es,
        };
        self.muxer.write_video(&frame, out);
        Ok(())
    }

    fn on_audio(
        &mut self,
        payload: Payload<'_>,
        timestamp_ms: u32,
        out: &mut Vec<u8>,
    ) -> Result<(), RemuxError> {
        let data = match payload {
            // ffmpeg sends an empty AAC sequence header when it learns the configuration
            // only from the first frames; the real one follows before any frame.
            Payload::Skip | Payload::Config([]) => return Ok(()),
            Payload::Config(config) => {
                self.audio = Some(aac::parse_audio_specific_config(config)?);
                self.set_streams();
                return Ok(());
            }
            Payload::Frame { data, .. } => data,
        };
        let config = self.audio.ok_or(RemuxError::AudioBeforeSequenceHeader)?;
        let ms = self.clock.extend(timestamp_ms);
        if data.is_empty() {
            return Ok(());
        }
        self.es.clear();
        config.write_adts(data, &mut self.es)?;
        let audio_only = !self.muxer.has_video();
        let tables = audio_only
            && self.last_audio_tables_ms.map_or(true, |last| {
                ms < last || ms - last >= AUDIO_ONLY_TABLE_INTERVAL_MS
            });
        if tables {
            self.last_audio_tables_ms = Some(ms);
        }
        if let Some(last) = self.video_pcr_ms.filter(|_| !audio_only) {
            if ms - last >= PCR_REFRESH_MS {
                self.muxer.write_pcr(wrap_ticks(ms * TICKS_PER_MS), out);
                self.video_pcr_ms = Some(ms);
            }
        }
        let pts = ms * TICKS_PER_MS + DECODE_DELAY_TICKS;
        let frame = Frame {
            pts: wrap_ticks(pts),
            dts: None,
            pcr: wrap_ticks(ms * TICKS_PER_MS),
            // Every AAC frame decodes on its own; only an audio-only stream starts at one.
            random_access: audio_only,
            data: &self.es,
        };
        self.muxer.write_audio(&frame, tables, out);
        Ok(())
    }
}

/// The codec and payload of a video tag, classic (CodecID 7) or Enhanced RTMP (`avc1`,
/// `hvc1`). `current` is the codec of the last sequence header, for error reporting.
fn parse_video_tag(
    body: &[u8],
    current: Option<VideoCodec>,
) -> Result<(VideoCodec, Payload<'_>), RemuxError> {
    let mut reader = Reader::new(body);
    let first = reader.u8("video tag header").map_err(RemuxError::video)?;
    let enhanced = first & 0x80 != 0;
    let frame_type = (first >> 4) & if enhanced { 0x07 } else { 0x0F };
    // Frame types 1 (keyframe) and 4 (server-generated keyframe) are random access points;
    // 5 is a command frame without picture.
    let keyframe = frame_type == 1 || frame_type == 4;
    let command = frame_type == 5;
    if !enhanced {
        let codec_id = first & 0x0F;
        if codec_id != 7 {
            return Err(RemuxError::UnsupportedVideoCodec(CodecId::FlvVideo(
                codec_id,
            )));
        }
        if command {
            return Ok((VideoCodec::H264, Payload::Skip));
        }
        let packet_type = reader.u8("AVC packet type").map_err(RemuxError::video)?;
        let composition_ms = reader.i24("composition time").map_err(RemuxError::video)?;
        let payload = match packet_type {
            0 => Payload::Config(reader.rest()),
            1 => Payload::Frame {
                composition_ms,
                keyframe,
                data: reader.rest(),
            },
            2 => Payload::Skip,
            _ => {
                return Err(RemuxError::video(Malformation::Invalid(
                    "AVC packet type other than 0, 1 or 2",
                )))
            }
        };
        return Ok((VideoCodec::H264, payload));
    }
    let packet_type = first & 0x0F;
    let unsupported = |what| RemuxError::UnsupportedFeature {
        kind: TagKind::Video,
        what,
    };
    match packet_type {
        6 => return Err(unsupported("multitrack video")),
        7 => return Err(unsupported("video packet modifier extensions")),
        _ => {}
    }
    let fourcc = reader.bytes(4, "video FourCC").map_err(RemuxError::video)?;
    let codec = match fourcc {
        b"avc1" => VideoCodec::H264,
        b"hvc1" => VideoCodec::H265,
        _ => {
            let fourcc = [fourcc[0], fourcc[1], fourcc[2], fourcc[3]];
            return Err(RemuxError::UnsupportedVideoCodec(CodecId::FourCc(fourcc)));
        }
    };
    if command {
        return Ok((current.unwrap_or(codec), Payload::Skip));
    }
    let payload = match packet_type {
        0 => Payload::Config(reader.rest()),
        1 | 3 => {
            // CodedFramesX (3) leaves out the offset when it is zero.
            let composition_ms = if packet_type == 1 {
                reader.i24("composition time").map_err(RemuxError::video)?
            } else {
                0
            };
            Payload::Frame {
                composition_ms,
                keyframe,
                data: reader.rest(),
            }
        }
        2 | 4 => Payload::Skip,
        5 => return Err(unsupported("MPEG-2 TS sequence start")),
        _ => {
            return Err(RemuxError::video(Malformation::Invalid(
                "reserved Enhanced RTMP video packet type",
            )))
        }
    };
    Ok((codec, payload))
}

/// The payload of an audio tag: classic AAC (SoundFormat 10) or Enhanced RTMP `mp4a`.
fn parse_audio_tag(body: &[u8]) -> Result<Payload<'_>, RemuxError> {
    let mut reader = Reader::new(body);
    let first = reader.u8("audio tag header").map_err(RemuxError::audio)?;
    let format = first >> 4;
    let frame = |data| Payload::Frame {
        composition_ms: 0,
        keyframe: true,
        data,
    };
    if format == 10 {
        let packet_type = reader.u8("AAC packet type").map_err(RemuxError::audio)?;
        return match packet_type {
            0 => Ok(Payload::Config(reader.rest())),
            1 => Ok(frame(reader.rest())),
            _ => Err(RemuxError::audio(Malformation::Invalid(
                "AAC packet type other than 0 or 1",
            ))),
        };
    }
    if format != 9 {
        return Err(RemuxError::UnsupportedAudioCodec(CodecId::FlvAudio(format)));
    }
    // Enhanced RTMP audio: the low nibble is the packet type, a FourCC follows.
    let packet_type = first & 0x0F;
    let unsupported = |what| RemuxError::UnsupportedFeature {
        kind: TagKind::Audio,
        what,
    };
    match packet_type {
        5 => return Err(unsupported("multitrack audio")),
        7 => return Err(unsupported("audio packet modifier extensions")),
        _ => {}
    }
    let fourcc = reader.bytes(4, "audio FourCC").map_err(RemuxError::audio)?;
    if fourcc != b"mp4a" {
        let fourcc = [fourcc[0], fourcc[1], fourcc[2], fourcc[3]];
        return Err(RemuxError::UnsupportedAudioCodec(CodecId::FourCc(fourcc)));
    }
    match packet_type {
        0 => Ok(Payload::Config(reader.rest())),
        1 => Ok(frame(reader.rest())),
        2 | 4 => Ok(Payload::Skip),
        _ => Err(RemuxError::audio(Malformation::Invalid(
            "reserved Enhanced RTMP audio packet type",
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::ts::PACKET_LEN;
    use super::*;

    const AVC_RECORD: &[u8] = &[
        1, 0x4D, 0x40, 0x1E, 0xFF, 0xE1, 0, 4, 0x67, 0x4D, 0x40, 0x1E, 1, 0, 3, 0x68, 0xEE, 0x3C,
    ];

    fn avc_tag(first: u8, packet_type: u8, composition: [u8; 3], data: &[u8]) -> Vec<u8> {
        let mut tag = vec![first, packet_type];
        tag.extend_from_slice(&composition);
        tag.extend_from_slice(data);
        tag
    }

    fn pids(ts: &[u8]) -> Vec<u16> {
        ts.chunks(PACKET_LEN)
            .map(|packet| u16::from_be_bytes([packet[1], packet[2]]) & 0x1FFF)
            .collect()
    }

    #[test]
    fn clock_follows_wrapping_timestamps() {
        let mut clock = Clock::default();
        assert_eq!(clock.extend(u32::MAX - 10), i64::from(u32::MAX) - 10);
        assert_eq!(clock.extend(5), i64::from(u32::MAX) + 6);
        assert_eq!(clock.extend(3), i64::from(u32::MAX) + 4, "small step back");
    }

    #[test]
    fn av_stream_gets_tables_at_keyframes_and_pcr_on_video() {
        let mut remux = FlvToTs::new();
        let mut out = Vec::new();
        remux
            .push(
                TagKind::Video,
                0,
                &avc_tag(0x17, 0, [0; 3], AVC_RECORD),
                &mut out,
            )
            .unwrap();
        remux
            .push(TagKind::Audio, 0, &[0xAF, 0, 0x11, 0x88], &mut out)
            .unwrap();
        remux
            .push(TagKind::Script, 0, b"onMetaData", &mut out)
            .unwrap();
        assert!(out.is_empty(), "configurations alone give no packets");

        let idr = [0, 0, 0, 2, 0x65, 0x88];
        remux
            .push(
                TagKind::Video,
                0,
                &avc_tag(0x17, 1, [0, 0, 80], &idr),
                &mut out,
            )
            .unwrap();
        assert_eq!(pids(&out), [0, 0x1000, 0x100]);
        let video = &out[2 * PACKET_LEN..];
        assert_eq!(video[5], 0x50, "random access and PCR on the keyframe");

        out.clear();
        remux
            .push(TagKind::Audio, 21, &[0xAF, 1, 0x21, 0x10], &mut out)
            .unwrap();
        remux
            .push(
                TagKind::Video,
                40,
                &avc_tag(0x27, 1, [0; 3], &[0, 0, 0, 2, 0x41, 0x9A]),
                &mut out,
            )
            .unwrap();
        assert_eq!(pids(&out), [0x101, 0x100], "no tables before inter frames");
    }

    /// The PCR (base) of a packet with one.
    fn pcr_of(packet: &[u8]) -> Option<u64> {
        (packet[3] & 0x20 != 0 && packet[4] > 0 && packet[5] & 0x10 != 0).then(|| {
            u64::from(packet[6]) << 25
                | u64::from(packet[7]) << 17
                | u64::from(packet[8]) << 9
                | u64::from(packet[9]) << 1
                | u64::from(packet[10] >> 7)
        })
    }

    #[test]
    fn slow_video_gets_pcr_from_audio_within_100_ms_and_never_backwards() {
        let mut remux = FlvToTs::new();
        let mut out = Vec::new();
        remux
            .push(
                TagKind::Video,
                0,
                &avc_tag(0x17, 0, [0; 3], AVC_RECORD),
                &mut out,
            )
            .unwrap();
        remux
            .push(TagKind::Audio, 0, &[0xAF, 0, 0x11, 0x88], &mut out)
            .unwrap();
        let idr = avc_tag(0x17, 1, [0; 3], &[0, 0, 0, 2, 0x65, 0x88]);
        let inter = avc_tag(0x27, 1, [0; 3], &[0, 0, 0, 2, 0x41, 0x9A]);
        // One video frame a second; audio every 21 ms, running 30 ms ahead of the video.
        for second in 0..3u32 {
            let video = if second == 0 { &idr } else { &inter };
            for frame in 0..48u32 {
                let at = second * 1000 + frame * 21;
                if frame == 2 {
                    remux
                        .push(TagKind::Video, second * 1000, video, &mut out)
                        .unwrap();
                }
                remux
                    .push(TagKind::Audio, at, &[0xAF, 1, 0x21, 0x10], &mut out)
                    .unwrap();
            }
        }
        let pcrs: Vec<u64> = out
            .chunks(PACKET_LEN)
            .filter(|packet| u16::from_be_bytes([packet[1], packet[2]]) & 0x1FFF == 0x100)
            .filter_map(pcr_of)
            .collect();
        assert!(pcrs.windows(2).all(|pair| pair[0] <= pair[1]), "{pcrs:?}");
        assert!(
            pcrs.windows(2).all(|pair| pair[1] - pair[0] <= 100 * 90),
            "{pcrs:?}"
        );
        assert!(pcrs.len() > 25, "{}", pcrs.len());
    }

    #[test]
    fn inter_frames_before_the_first_keyframe_are_dropped() {
        let mut remux = FlvToTs::new();
        let mut out = Vec::new();
        remux
            .push(
                TagKind::Video,
                0,
                &avc_tag(0x17, 0, [0; 3], AVC_RECORD),
                &mut out,
            )
            .unwrap();
        remux
            .push(
                TagKind::Video,
                0,
                &avc_tag(0x27, 1, [0; 3], &[0, 0, 0, 1, 0x41]),
                &mut out,
            )
            .unwrap();
        assert!(out.is_empty());
    }

    #[test]
    fn audio_only_stream_has_pcr_on_audio_and_tables_every_second() {
        let mut remux = FlvToTs::new();
        let mut out = Vec::new();
        remux
            .push(TagKind::Audio, 0, &[0xAF, 0, 0x11, 0x88], &mut out)
            .unwrap();
        let mut tables = 0;
        for frame in 0..100u32 {
            out.clear();
            remux
                .push(TagKind::Audio, frame * 21, &[0xAF, 1, 0x21, 0x10], &mut out)
                .unwrap();
            let pids = pids(&out);
            assert_eq!(pids.last(), Some(&0x101));
            if pids.len() == 3 {
                tables += 1;
            }
            let audio = &out[out.len() - PACKET_LEN..];
            assert_eq!(audio[5] & 0x50, 0x50, "random access and PCR on audio");
        }
        // 100 frames over 2.08 s: tables at 0, 1.008 and 2.016 s.
        assert_eq!(tables, 3);
    }

    #[test]
    fn refusals_name_the_problem() {
        let mut remux = FlvToTs::new();
        let mut out = Vec::new();
        let push = |remux: &mut FlvToTs, kind, body: &[u8], out: &mut Vec<u8>| {
            remux.push(kind, 0, body, out)
        };
        assert_eq!(
            push(&mut remux, TagKind::Video, &[0x12, 0], &mut out),
            Err(RemuxError::UnsupportedVideoCodec(CodecId::FlvVideo(2)))
        );
        assert_eq!(
            push(&mut remux, TagKind::Video, b"\x90av01", &mut out),
            Err(RemuxError::UnsupportedVideoCodec(CodecId::FourCc(*b"av01")))
        );
        assert_eq!(
            push(&mut remux, TagKind::Audio, &[0x2F, 0xFF], &mut out),
            Err(RemuxError::UnsupportedAudioCodec(CodecId::FlvAudio(2)))
        );
        assert_eq!(
            push(&mut remux, TagKind::Audio, b"\x91Opus", &mut out),
            Err(RemuxError::UnsupportedAudioCodec(CodecId::FourCc(*b"Opus")))
        );
        assert_eq!(
            push(
                &mut remux,
                TagKind::Video,
                &avc_tag(0x17, 1, [0; 3], &[0, 0, 0, 1, 0x65]),
                &mut out
            ),
            Err(RemuxError::VideoBeforeSequenceHeader)
        );
        assert_eq!(
            push(&mut remux, TagKind::Audio, &[0xAF, 1, 0x21], &mut out),
            Err(RemuxError::AudioBeforeSequenceHeader)
        );
        assert!(out.is_empty());
        let message = RemuxError::UnsupportedVideoCodec(CodecId::FourCc(*b"av01")).to_string();
        assert!(message.contains("`av01`"), "{message}");
    }

    #[test]
    fn malformed_tags_are_errors_and_never_panic() {
        let mut remux = FlvToTs::new();
        let mut out = Vec::new();
        // Truncated configuration records (an empty one announces one still to come) and tag
        // headers.
        for cut in 1..AVC_RECORD.len() {
            let tag = avc_tag(0x17, 0, [0; 3], &AVC_RECORD[..cut]);
            assert!(remux.push(TagKind::Video, 0, &tag, &mut out).is_err());
        }
        for body in [
            &[][..],
            &[0x17],
            &[0x17, 1, 0],
            &[0xAF],
            &[0x90, b'h'],
            &[0x17, 9, 0, 0, 0],
        ] {
            let kind = if body.first() == Some(&0xAF) {
                TagKind::Audio
            } else {
                TagKind::Video
            };
            assert!(remux.push(kind, 0, body, &mut out).is_err(), "{body:?}");
        }
        remux
            .push(
                TagKind::Video,
                0,
                &avc_tag(0x17, 0, [0; 3], AVC_RECORD),
                &mut out,
            )
            .unwrap();
        // A NAL length beyond the tag, and a length prefix cut short.
        let beyond = avc_tag(0x17, 1, [0; 3], &[0xFF, 0xFF, 0xFF, 0xFF, 0x65]);
        assert!(matches!(
            remux.push(TagKind::Video, 0, &beyond, &mut out),
            Err(RemuxError::Malformed {
                kind: TagKind::Video,
                reason: Malformation::NalBeyondTag { .. }
            })
        ));
        let short = avc_tag(0x17, 1, [0; 3], &[0, 0]);
        assert!(remux.push(TagKind::Video, 0, &short, &mut out).is_err());
        assert!(out.is_empty());
        // Random bodies of every kind: errors or packets, never a panic, packets always whole.
        let mut seed = 0x1234_5678u32;
        for round in 0..5000u32 {
            let len = (round % 64) as usize;
            let mut body: Vec<u8> = (0..len)
                .map(|_| {
                    seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                    (seed >> 24) as u8
                })
                .collect();
            if let Some(first) = body.first_mut() {
                // Steer half of the bodies into the supported codecs.
                if round % 2 == 0 {
                    *first = [0x17, 0x27, 0xAF, 0x90, 0x91][(round / 2 % 5) as usize];
                }
            }
            let kind = [TagKind::Audio, TagKind::Video, TagKind::Script][(round % 3) as usize];
            let before = out.len();
            let _ = remux.push(kind, round, &body, &mut out);
            assert_eq!((out.len() - before) % PACKET_LEN, 0);
        }
    }

    #[test]
    fn enhanced_rtmp_hevc_is_remuxed_with_its_stream_type() {
        let mut record = vec![1];
        record.extend_from_slice(&[0; 20]);
        record.push(0x0F);
        record.push(3);
        for nal in [&[0x40, 0x01][..], &[0x42, 0x01], &[0x44, 0x01]] {
            record.push(0x80 | (nal[0] >> 1));
            record.extend_from_slice(&[0, 1, 0, 2]);
            record.extend_from_slice(nal);
        }
        let mut remux = FlvToTs::new();
        let mut out = Vec::new();
        let mut config = b"\x90hvc1".to_vec();
        config.extend_from_slice(&record);
        remux.push(TagKind::Video, 0, &config, &mut out).unwrap();
        // CodedFramesX: no composition offset.
        let frame = b"\x93hvc1\x00\x00\x00\x03\x26\x01\xAF";
        remux.push(TagKind::Video, 0, frame, &mut out).unwrap();
        assert_eq!(pids(&out), [0, 0x1000, 0x100]);
        let pmt = &out[PACKET_LEN + 5..];
        assert_eq!(pmt[12], 0x24, "H.265 stream type");
    }
}

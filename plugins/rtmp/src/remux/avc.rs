//! H.264 (and H.265) video as FLV carries it: the decoder configuration record gives the
//! parameter sets and the NAL length size, and every frame is a run of length-prefixed NAL
//! units. MPEG-TS wants Annex B instead: start codes, an access unit delimiter first, and the
//! parameter sets in front of every keyframe so that a player can join at any of them.

use super::reader::Reader;
use super::Malformation;

/// Annex B start code written in front of every NAL unit.
const START_CODE: [u8; 4] = [0, 0, 0, 1];

/// The video codecs that can be remuxed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VideoCodec {
    H264,
    H265,
}

impl VideoCodec {
    /// PMT stream_type.
    pub fn stream_type(self) -> u8 {
        match self {
            VideoCodec::H264 => 0x1B,
            VideoCodec::H265 => 0x24,
        }
    }

    fn nal_type(self, first_byte: u8) -> u8 {
        match self {
            VideoCodec::H264 => first_byte & 0x1F,
            VideoCodec::H265 => (first_byte >> 1) & 0x3F,
        }
    }

    fn is_delimiter(self, nal_type: u8) -> bool {
        match self {
            VideoCodec::H264 => nal_type == 9,
            VideoCodec::H265 => nal_type == 35,
        }
    }

    fn is_parameter_set(self, nal_type: u8) -> bool {
        match self {
            VideoCodec::H264 => nal_type == 7 || nal_type == 8,
            VideoCodec::H265 => (32..=34).contains(&nal_type),
        }
    }

    /// An access unit delimiter NAL that allows any slice type.
    fn delimiter(self) -> &'static [u8] {
        match self {
            // nal_unit_type 9, primary_pic_type 7, stop bit.
            VideoCodec::H264 => &[0x09, 0xF0],
            // nal_unit_type 35 (layer 0, temporal id 1), pic_type 2, stop bit.
            VideoCodec::H265 => &[0x46, 0x01, 0x50],
        }
    }
}

/// What a decoder configuration record says about the frames that follow it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VideoConfig {
    pub codec: VideoCodec,
    /// Size of the big-endian length in front of every NAL unit (1 to 4).
    pub nal_length_size: usize,
    /// The parameter sets in decoding order (VPS, SPS, PPS), without start codes.
    pub parameter_sets: Vec<Vec<u8>>,
}

/// Parses an AVCDecoderConfigurationRecord (ISO/IEC 14496-15, 5.3.3.1).
pub fn parse_avc_config(record: &[u8]) -> Result<VideoConfig, Malformation> {
    let mut reader = Reader::new(record);
    let version = reader.u8("AVC configuration version")?;
    if version != 1 {
        return Err(Malformation::Invalid("AVC configuration version is not 1"));
    }
    reader.bytes(3, "AVC profile and level")?;
    let nal_length_size = usize::from(reader.u8("AVC NAL length size")? & 0x03) + 1;
    if nal_length_size == 3 {
        return Err(Malformation::Invalid("AVC NAL length size of 3 bytes"));
    }
    let mut parameter_sets = Vec::new();
    let sps_count = reader.u8("AVC SPS count")? & 0x1F;
    for _ in 0..sps_count {
        parameter_sets.push(reader.u16_prefixed("AVC SPS")?.to_vec());
    }
    let pps_count = reader.u8("AVC PPS count")?;
    for _ in 0..pps_count {
        parameter_sets.push(reader.u16_prefixed("AVC PPS")?.to_vec());
    }
    if sps_count == 0 || pps_count == 0 {
        return Err(Malformation::Invalid(
            "AVC configuration without an SPS or a PPS",
        ));
    }
    if parameter_sets.iter().any(Vec::is_empty) {
        return Err(Malformation::Invalid("empty AVC parameter set"));
    }
    // Any bytes after the PPS (high-profile chroma fields) are not needed for Annex B.
    Ok(VideoConfig {
        codec: VideoCodec::H264,
        nal_length_size,
        parameter_sets,
    })
}

/// Iterates over the NAL units of one length-prefixed frame.
struct NalUnits<'a> {
    reader: Reader<'a>,
    length_size: usize,
}

impl<'a> Iterator for NalUnits<'a> {
    type Item = Result<&'a [u8], Malformation>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.reader.is_empty() {
            return None;
        }
        let remaining = self.reader.rest().len();
        let prefix = match self.reader.bytes(self.length_size, "NAL unit length") {
            Ok(prefix) => prefix,
            Err(error) => return Some(Err(error)),
        };
        let length = prefix
            .iter()
            .fold(0usize, |acc, &byte| (acc << 8) | usize::from(byte));
        let available = remaining - self.length_size;
        if length > available {
            // Stop here: the rest of the frame cannot be framed any more.
            self.reader = Reader::new(&[]);
            return Some(Err(Malformation::NalBeyondTag { length, available }));
        }
        Some(self.reader.bytes(length, "NAL unit"))
    }
}

/// Appends one frame as an Annex B access unit to `out`: a delimiter, the parameter sets if
/// the frame is a keyframe that does not carry its own, then every NAL unit with a start code.
///
/// Nothing is appended when the frame is malformed. Returns whether any NAL unit was written
/// (an empty frame gives nothing to send).
pub fn write_access_unit(
    config: &VideoConfig,
    frame: &[u8],
    keyframe: bool,
    out: &mut Vec<u8>,
) -> Result<bool, Malformation> {
    let codec = config.codec;
    let nal_units = || NalUnits {
        reader: Reader::new(frame),
        length_size: config.nal_length_size,
    };
    let mut carries_parameter_sets = false;
    let mut any = false;
    for nal in nal_units() {
        if let Some(&first) = nal?.first() {
            any = true;
            carries_parameter_sets |= codec.is_parameter_set(codec.nal_type(first));
        }
    }
    if !any {
        return Ok(false);
    }
    out.extend_from_slice(&START_CODE);
    out.extend_from_slice(codec.delimiter());
    if keyframe && !carries_parameter_sets {
        for set in &config.parameter_sets {
            out.extend_from_slice(&START_CODE);
            out.extend_from_slice(set);
        }
    }
    // Already validated above.
    for nal in nal_units().flatten() {
        match nal.first() {
            Some(&first) if !codec.is_delimiter(codec.nal_type(first)) => {
                out.extend_from_slice(&START_CODE);
                out.extend_from_slice(nal);
            }
            _ => {}
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPS: &[u8] = &[0x67, 0x4D, 0x40, 0x1E, 0xAB];
    const PPS: &[u8] = &[0x68, 0xEE, 0x3C, 0x80];

    fn record(length_size_minus_one: u8) -> Vec<u8> {
        let mut record = vec![1, 0x4D, 0x40, 0x1E, 0xFC | length_size_minus_one, 0xE1];
        record.extend_from_slice(&(SPS.len() as u16).to_be_bytes());
        record.extend_from_slice(SPS);
        record.push(1);
        record.extend_from_slice(&(PPS.len() as u16).to_be_bytes());
        record.extend_from_slice(PPS);
        record
    }

    fn h264_config() -> VideoConfig {
        parse_avc_config(&record(3)).unwrap()
    }

    #[test]
    fn parses_the_parameter_sets_and_nal_length_size() {
        let config = h264_config();
        assert_eq!(config.nal_length_size, 4);
        assert_eq!(config.parameter_sets, vec![SPS.to_vec(), PPS.to_vec()]);
        assert_eq!(parse_avc_config(&record(1)).unwrap().nal_length_size, 2);
    }

    #[test]
    fn refuses_truncated_or_incomplete_records() {
        let full = record(3);
        for cut in 0..full.len() {
            assert!(parse_avc_config(&full[..cut]).is_err(), "cut at {cut}");
        }
        let mut no_pps = full[..6 + 2 + SPS.len()].to_vec();
        no_pps.push(0);
        assert!(matches!(
            parse_avc_config(&no_pps),
            Err(Malformation::Invalid(_))
        ));
        let mut bad_version = full.clone();
        bad_version[0] = 0;
        assert!(parse_avc_config(&bad_version).is_err());
    }

    #[test]
    fn keyframe_gets_delimiter_and_parameter_sets_in_front() {
        let frame = [0, 0, 0, 3, 0x65, 0x88, 0x84, 0, 0, 0, 2, 0x06, 0x05];
        let mut out = Vec::new();
        assert_eq!(
            write_access_unit(&h264_config(), &frame, true, &mut out),
            Ok(true)
        );
        let mut expected = vec![0, 0, 0, 1, 0x09, 0xF0, 0, 0, 0, 1];
        expected.extend_from_slice(SPS);
        expected.extend_from_slice(&[0, 0, 0, 1]);
        expected.extend_from_slice(PPS);
        expected.extend_from_slice(&[0, 0, 0, 1, 0x65, 0x88, 0x84, 0, 0, 0, 1, 0x06, 0x05]);
        assert_eq!(out, expected);
    }

    #[test]
    fn inter_frame_and_frame_with_own_parameter_sets_get_only_the_delimiter() {
        let config = h264_config();
        let mut out = Vec::new();
        write_access_unit(&config, &[0, 0, 0, 2, 0x41, 0x9A], false, &mut out).unwrap();
        assert_eq!(out, [0, 0, 0, 1, 0x09, 0xF0, 0, 0, 0, 1, 0x41, 0x9A]);

        let mut own = vec![0, 0, 0, 2, 0x09, 0x10, 0, 0, 0, SPS.len() as u8];
        own.extend_from_slice(SPS);
        own.extend_from_slice(&[0, 0, 0, 2, 0x65, 0x88]);
        out.clear();
        write_access_unit(&config, &own, true, &mut out).unwrap();
        let mut expected = vec![0, 0, 0, 1, 0x09, 0xF0, 0, 0, 0, 1];
        expected.extend_from_slice(SPS);
        expected.extend_from_slice(&[0, 0, 0, 1, 0x65, 0x88]);
        assert_eq!(
            out, expected,
            "the frame's own delimiter is replaced, its SPS kept"
        );
    }

    #[test]
    fn two_byte_lengths_are_honoured() {
        let config = parse_avc_config(&record(1)).unwrap();
        let mut out = Vec::new();
        write_access_unit(&config, &[0, 2, 0x41, 0x9A], false, &mut out).unwrap();
        assert_eq!(out, [0, 0, 0, 1, 0x09, 0xF0, 0, 0, 0, 1, 0x41, 0x9A]);
    }

    #[test]
    fn nal_length_beyond_the_tag_is_refused_and_nothing_written() {
        let mut out = Vec::new();
        let frame = [0, 0, 0, 2, 0x41, 0x9A, 0, 0, 0x10, 0, 0x41];
        assert_eq!(
            write_access_unit(&h264_config(), &frame, false, &mut out),
            Err(Malformation::NalBeyondTag {
                length: 0x1000,
                available: 1
            })
        );
        assert!(out.is_empty());
        assert!(write_access_unit(&h264_config(), &[0, 0], false, &mut out).is_err());
        assert!(out.is_empty());
    }

    #[test]
    fn empty_frame_writes_nothing() {
        let mut out = Vec::new();
        assert_eq!(
            write_access_unit(&h264_config(), &[], true, &mut out),
            Ok(false)
        );
        assert_eq!(
            write_access_unit(&h264_config(), &[0, 0, 0, 0], true, &mut out),
            Ok(false)
        );
        assert!(out.is_empty());
    }
}

//! The HEVCDecoderConfigurationRecord of Enhanced RTMP's `hvc1` video: its parameter set
//! arrays and NAL length size, so that H.265 frames can go through the same Annex B
//! conversion as H.264 ([`super::avc`]).

use super::avc::{VideoCodec, VideoConfig};
use super::reader::Reader;
use super::Malformation;

/// Bytes of the fixed part of the record, before the NAL unit arrays.
const FIXED_LEN: usize = 22;

/// Parses an HEVCDecoderConfigurationRecord (ISO/IEC 14496-15, 8.3.3.1), keeping the VPS,
/// SPS and PPS in that order.
pub fn parse_hevc_config(record: &[u8]) -> Result<VideoConfig, Malformation> {
    let mut reader = Reader::new(record);
    let fixed = reader.bytes(FIXED_LEN, "HEVC configuration")?;
    if fixed[0] != 1 {
        return Err(Malformation::Invalid("HEVC configuration version is not 1"));
    }
    let nal_length_size = usize::from(fixed[FIXED_LEN - 1] & 0x03) + 1;
    if nal_length_size == 3 {
        return Err(Malformation::Invalid("HEVC NAL length size of 3 bytes"));
    }
    let mut by_type: [Vec<Vec<u8>>; 3] = Default::default();
    let arrays = reader.u8("HEVC NAL array count")?;
    for _ in 0..arrays {
        let nal_type = reader.u8("HEVC NAL array type")? & 0x3F;
        let count = reader.u16("HEVC NAL count")?;
        for _ in 0..count {
            let nal = reader.u16_prefixed("HEVC parameter set")?;
            if let Some(slot) = usize::from(nal_type)
                .checked_sub(32)
                .and_then(|index| by_type.get_mut(index))
            {
                if nal.is_empty() {
                    return Err(Malformation::Invalid("empty HEVC parameter set"));
                }
                slot.push(nal.to_vec());
            }
        }
    }
    if by_type.iter().any(Vec::is_empty) {
        return Err(Malformation::Invalid(
            "HEVC configuration without a VPS, an SPS or a PPS",
        ));
    }
    Ok(VideoConfig {
        codec: VideoCodec::H265,
        nal_length_size,
        parameter_sets: by_type.into_iter().flatten().collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::super::avc::write_access_unit;
    use super::*;

    const VPS: &[u8] = &[0x40, 0x01, 0x0C];
    const SPS: &[u8] = &[0x42, 0x01, 0x01];
    const PPS: &[u8] = &[0x44, 0x01, 0xC1];
    const SEI: &[u8] = &[0x4E, 0x01, 0x05];

    fn record() -> Vec<u8> {
        let mut record = vec![1];
        record.extend_from_slice(&[0; FIXED_LEN - 2]);
        record.push(0x0F); // length size 4
                           // Arrays in a different order than decoding order, and one that is not a parameter set.
        record.push(4);
        for (nal_type, nal) in [(34u8, PPS), (39, SEI), (32, VPS), (33, SPS)] {
            record.push(0x80 | nal_type);
            record.extend_from_slice(&1u16.to_be_bytes());
            record.extend_from_slice(&(nal.len() as u16).to_be_bytes());
            record.extend_from_slice(nal);
        }
        record
    }

    #[test]
    fn parameter_sets_come_out_in_decoding_order() {
        let config = parse_hevc_config(&record()).unwrap();
        assert_eq!(config.codec, VideoCodec::H265);
        assert_eq!(config.nal_length_size, 4);
        assert_eq!(
            config.parameter_sets,
            vec![VPS.to_vec(), SPS.to_vec(), PPS.to_vec()]
        );
    }

    #[test]
    fn every_truncation_is_refused() {
        let full = record();
        for cut in 0..full.len() {
            assert!(parse_hevc_config(&full[..cut]).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn keyframe_gets_the_hevc_delimiter_and_parameter_sets() {
        let config = parse_hevc_config(&record()).unwrap();
        let mut out = Vec::new();
        write_access_unit(&config, &[0, 0, 0, 3, 0x26, 0x01, 0xAF], true, &mut out).unwrap();
        let mut expected = vec![0, 0, 0, 1, 0x46, 0x01, 0x50];
        for nal in [VPS, SPS, PPS, &[0x26, 0x01, 0xAF][..]] {
            expected.extend_from_slice(&[0, 0, 0, 1]);
            expected.extend_from_slice(nal);
        }
        assert_eq!(out, expected);
    }
}

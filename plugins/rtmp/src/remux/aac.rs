//! AAC as FLV carries it: an AudioSpecificConfig once, then raw frames. MPEG-TS (stream_type
//! 0x0F) wants every frame behind an ADTS header that repeats the profile, sampling rate and
//! channel layout, so that a player can join at any frame.

use super::{Malformation, RemuxError, TagKind};

/// Bytes of an ADTS header without CRC.
pub const ADTS_HEADER_LEN: usize = 7;
/// Largest ADTS frame (header included): the frame length field has 13 bits.
const MAX_ADTS_FRAME: usize = (1 << 13) - 1;

/// Sampling frequencies by their 4-bit index (ISO/IEC 14496-3, 1.6.3.3).
const SAMPLING_FREQUENCIES: [u32; 13] = [
    96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350,
];

/// What every ADTS header repeats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AacConfig {
    /// Audio object type of the core coder (2 = AAC LC); ADTS can carry 1 to 4.
    pub object_type: u8,
    pub sampling_index: u8,
    pub channel_config: u8,
}

/// Reads MSB-first bit fields.
struct Bits<'a> {
    bytes: &'a [u8],
    position: usize,
}

impl Bits<'_> {
    fn read(&mut self, count: usize) -> Result<u32, Malformation> {
        let mut value = 0u32;
        for _ in 0..count {
            let byte = self
                .bytes
                .get(self.position / 8)
                .ok_or(Malformation::Truncated {
                    what: "AudioSpecificConfig",
                    needed: self.position / 8 + 1,
                    available: self.bytes.len(),
                })?;
            let bit = (byte >> (7 - self.position % 8)) & 1;
            value = (value << 1) | u32::from(bit);
            self.position += 1;
        }
        Ok(value)
    }

    fn object_type(&mut self) -> Result<u8, Malformation> {
        let object_type = self.read(5)?;
        // 31 escapes to 32 + a 6-bit value; every value fits in a u8.
        Ok(if object_type == 31 {
            32 + self.read(6)? as u8
        } else {
            object_type as u8
        })
    }

    fn sampling_index(&mut self) -> Result<u8, Malformation> {
        let index = self.read(4)? as u8;
        if index != 15 {
            return Ok(index);
        }
        // An explicit rate: ADTS only has the index, so it must be one of the table's.
        let frequency = self.read(24)?;
        SAMPLING_FREQUENCIES
            .iter()
            .position(|&known| known == frequency)
            .map(|index| index as u8)
            .ok_or(Malformation::Invalid(
                "AAC sampling rate that ADTS cannot express",
            ))
    }
}

fn unsupported(what: &'static str) -> RemuxError {
    RemuxError::UnsupportedFeature {
        kind: TagKind::Audio,
        what,
    }
}

fn malformed(reason: Malformation) -> RemuxError {
    RemuxError::Malformed {
        kind: TagKind::Audio,
        reason,
    }
}

/// Parses an AudioSpecificConfig (ISO/IEC 14496-3, 1.6.2.1) into what ADTS can say. For
/// HE-AAC (explicit SBR/PS signalling) the core AAC configuration is kept: players find the
/// SBR/PS extension in the frames themselves, as with any implicitly signalled HE-AAC.
pub fn parse_audio_specific_config(config: &[u8]) -> Result<AacConfig, RemuxError> {
    let mut bits = Bits {
        bytes: config,
        position: 0,
    };
    let mut object_type = bits.object_type().map_err(malformed)?;
    let sampling_index = bits.sampling_index().map_err(malformed)?;
    let channel_config = bits.read(4).map_err(malformed)? as u8;
    if object_type == 5 || object_type == 29 {
        bits.sampling_index().map_err(malformed)?;
        object_type = bits.object_type().map_err(malformed)?;
    }
    if !(1..=4).contains(&object_type) {
        return Err(unsupported(
            "AAC object type that ADTS cannot carry (only Main, LC, SSR, LTP and HE-AAC)",
        ));
    }
    if usize::from(sampling_index) >= SAMPLING_FREQUENCIES.len() {
        return Err(malformed(Malformation::Invalid(
            "reserved AAC sampling frequency index",
        )));
    }
    match channel_config {
        0 => Err(unsupported(
            "AAC channel layout given by a program config element",
        )),
        1..=7 => Ok(AacConfig {
            object_type,
            sampling_index,
            channel_config,
        }),
        _ => Err(malformed(Malformation::Invalid(
            "reserved AAC channel configuration",
        ))),
    }
}

impl AacConfig {
    /// Sampling rate in Hz.
    pub fn sampling_rate(&self) -> u32 {
        SAMPLING_FREQUENCIES[usize::from(self.sampling_index)]
    }

    /// Appends `frame` behind its ADTS header.
    pub fn write_adts(&self, frame: &[u8], out: &mut Vec<u8>) -> Result<(), RemuxError> {
        let length = frame.len() + ADTS_HEADER_LEN;
        if length > MAX_ADTS_FRAME {
            return Err(malformed(Malformation::Invalid(
                "AAC frame longer than an ADTS frame can be",
            )));
        }
        let profile = self.object_type - 1;
        out.extend_from_slice(&[
            0xFF,
            // MPEG-4, layer 0, no CRC.
            0xF1,
            (profile << 6) | (self.sampling_index << 2) | (self.channel_config >> 2),
            ((self.channel_config & 0x03) << 6) | (length >> 11) as u8,
            (length >> 3) as u8,
            ((length & 0x07) as u8) << 5 | 0x1F,
            // Buffer fullness 0x7FF (variable rate), one raw data block.
            0xFC,
        ]);
        out.extend_from_slice(frame);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lc_mono_48k_gives_the_known_adts_header() {
        let config = parse_audio_specific_config(&[0x11, 0x88]).unwrap();
        assert_eq!(
            config,
            AacConfig {
                object_type: 2,
                sampling_index: 3,
                channel_config: 1
            }
        );
        assert_eq!(config.sampling_rate(), 48000);
        let mut out = Vec::new();
        config.write_adts(&[0xAA; 100], &mut out).unwrap();
        assert_eq!(out[..7], [0xFF, 0xF1, 0x4C, 0x40, 0x0D, 0x7F, 0xFC]);
        assert_eq!(out.len(), 107);
    }

    #[test]
    fn lc_stereo_44k1_gives_the_known_adts_header() {
        let config = parse_audio_specific_config(&[0x12, 0x10]).unwrap();
        let mut out = Vec::new();
        config.write_adts(&[0; 371 - 7], &mut out).unwrap();
        // Frame length 371 = 0b0_0001_0111_0011.
        assert_eq!(out[..7], [0xFF, 0xF1, 0x50, 0x80, 0x2E, 0x7F, 0xFC]);
    }

    #[test]
    fn he_aac_keeps_its_core_configuration() {
        // Object type 5 at 24 kHz stereo, extension rate 48 kHz, core object type 2.
        let config = parse_audio_specific_config(&[0x2B, 0x11, 0x88, 0x00]).unwrap();
        assert_eq!(
            config,
            AacConfig {
                object_type: 2,
                sampling_index: 6,
                channel_config: 2
            }
        );
    }

    #[test]
    fn explicit_rate_maps_to_its_index() {
        // Object type 2, index 15, 44100 Hz (0x00AC44), channel configuration 2.
        let config = parse_audio_specific_config(&[0x17, 0x80, 0x56, 0x22, 0x10]).unwrap();
        assert_eq!(config.sampling_index, 4);
        assert_eq!(config.channel_config, 2);
    }

    #[test]
    fn refuses_what_adts_cannot_carry_and_truncated_configs() {
        assert!(matches!(
            parse_audio_specific_config(&[0x11, 0x80]),
            Err(RemuxError::UnsupportedFeature { .. })
        ));
        // Object type 23 (ER AAC LD).
        assert!(matches!(
            parse_audio_specific_config(&[0xB9, 0x88]),
            Err(RemuxError::UnsupportedFeature { .. })
        ));
        assert!(matches!(
            parse_audio_specific_config(&[0x11]),
            Err(RemuxError::Malformed { .. })
        ));
        assert!(parse_audio_specific_config(&[]).is_err());
        let config = parse_audio_specific_config(&[0x11, 0x88]).unwrap();
        assert!(config.write_adts(&[0; 8200], &mut Vec::new()).is_err());
    }
}

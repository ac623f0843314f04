//! WebSocket frames (RFC 6455 §5): the incremental decoder of client frames, with the checks a
//! server must make, and the encoder of server frames (never masked).
//!
//! Every violation maps to the close status the RFC gives it: an unmasked client frame, a
//! reserved bit or opcode, a bad control frame or continuation is a protocol error (1002); a
//! frame longer than the configured limit is too big (1009), refused from its header alone,
//! before its payload is buffered.

use thiserror::Error;

/// Frame opcodes (RFC 6455 §5.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Opcode {
    Continuation,
    Text,
    Binary,
    Close,
    Ping,
    Pong,
}

impl Opcode {
    fn from_bits(bits: u8) -> Option<Self> {
        Some(match bits {
            0x0 => Self::Continuation,
            0x1 => Self::Text,
            0x2 => Self::Binary,
            0x8 => Self::Close,
            0x9 => Self::Ping,
            0xA => Self::Pong,
            _ => return None,
        })
    }

    fn bits(self) -> u8 {
        match self {
            Self::Continuation => 0x0,
            Self::Text => 0x1,
            Self::Binary => 0x2,
            Self::Close => 0x8,
            Self::Ping => 0x9,
            Self::Pong => 0xA,
        }
    }

    pub fn is_control(self) -> bool {
        matches!(self, Self::Close | Self::Ping | Self::Pong)
    }
}

/// Close status codes (RFC 6455 §7.4.1).
pub mod status {
    pub const NORMAL: u16 = 1000;
    pub const GOING_AWAY: u16 = 1001;
    pub const PROTOCOL_ERROR: u16 = 1002;
    pub const UNSUPPORTED_DATA: u16 = 1003;
    pub const INVALID_PAYLOAD: u16 = 1007;
    pub const POLICY_VIOLATION: u16 = 1008;
    pub const TOO_BIG: u16 = 1009;
    pub const INTERNAL_ERROR: u16 = 1011;
}

/// One complete, unmasked client frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    pub fin: bool,
    pub opcode: Opcode,
    pub payload: Vec<u8>,
}

/// Why the client's frames cannot be read any further; [`FrameError::status`] is the close
/// status to answer with.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum FrameError {
    #[error("client frame not masked")]
    Unmasked,
    #[error("reserved bits set without an extension")]
    ReservedBits,
    #[error("unknown opcode {0:#x}")]
    UnknownOpcode(u8),
    #[error("fragmented or oversized control frame")]
    BadControl,
    #[error(
        "continuation without a message to continue, or a new message inside a fragmented one"
    )]
    BadContinuation,
    #[error("non-minimal or out-of-range payload length")]
    BadLength,
    #[error("frame of {length} bytes is over the limit of {limit}")]
    TooBig { length: u64, limit: usize },
}

impl FrameError {
    pub fn status(&self) -> u16 {
        match self {
            Self::TooBig { .. } => status::TOO_BIG,
            _ => status::PROTOCOL_ERROR,
        }
    }
}

/// A parsed frame header.
struct Header {
    fin: bool,
    opcode: Opcode,
    mask: [u8; 4],
    length: usize,
    /// Bytes of the header itself.
    size: usize,
}

/// Takes client frames off the front of the bytes received so far.
#[derive(Debug)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    max_payload: usize,
    /// A fragmented data message is in progress.
    in_message: bool,
}

impl FrameDecoder {
    /// A decoder refusing frames with payloads over `max_payload` bytes.
    pub fn new(max_payload: usize) -> Self {
        Self {
            buf: Vec::new(),
            max_payload,
            in_message: false,
        }
    }

    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The next complete frame, unmasked; `Ok(None)` until one is complete. After an error
    /// the decoder must not be used again.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        let Some(header) = self.header()? else {
            return Ok(None);
        };
        let end = header.size + header.length;
        if self.buf.len() < end {
            return Ok(None);
        }
        let mut payload: Vec<u8> = self.buf.drain(..end).skip(header.size).collect();
        for (i, byte) in payload.iter_mut().enumerate() {
            *byte ^= header.mask[i % 4];
        }
        if !header.opcode.is_control() {
            self.in_message = !header.fin;
        }
        Ok(Some(Frame {
            fin: header.fin,
            opcode: header.opcode,
            payload,
        }))
    }

    /// The header at the front of the buffer, checked; `None` while incomplete.
    fn header(&self) -> Result<Option<Header>, FrameError> {
        let buf = &self.buf;
        let Some(&[first, second]) = buf.get(..2).map(|b| <&[u8; 2]>::try_from(b).unwrap()) else {
            return Ok(None);
        };
        if first & 0x70 != 0 {
            return Err(FrameError::ReservedBits);
        }
        let opcode =
            Opcode::from_bits(first & 0x0F).ok_or(FrameError::UnknownOpcode(first & 0x0F))?;
        let fin = first & 0x80 != 0;
        self.check_sequence(opcode)?;
        if second & 0x80 == 0 {
            return Err(FrameError::Unmasked);
        }
        let (length, at) = match second & 0x7F {
            126 => match buf.get(2..4) {
                None => return Ok(None),
                Some(b) => {
                    let length = u64::from(u16::from_be_bytes([b[0], b[1]]));
                    if length < 126 {
                        return Err(FrameError::BadLength);
                    }
                    (length, 4)
                }
            },
            127 => match buf.get(2..10) {
                None => return Ok(None),
                Some(b) => {
                    let length = u64::from_be_bytes(b.try_into().expect("eight bytes"));
                    if length >> 63 != 0 || length <= u64::from(u16::MAX) {
                        return Err(FrameError::BadLength);
                    }
                    (length, 10)
                }
            },
            short => (u64::from(short), 2),
        };
        if opcode.is_control() && (!fin || length > 125) {
            return Err(FrameError::BadControl);
        }
        if length > self.max_payload as u64 {
            return Err(FrameError::TooBig {
                length,
                limit: self.max_payload,
            });
        }
        let Some(mask) = buf.get(at..at + 4) else {
            return Ok(None);
        };
        Ok(Some(Header {
            fin,
            opcode,
            mask: mask.try_into().expect("four bytes"),
            // Within the limit, so it fits.
            length: length as usize,
            size: at + 4,
        }))
    }

    /// A continuation needs a fragmented message to continue; a new message must wait for the
    /// end of the one in progress.
    fn check_sequence(&self, opcode: Opcode) -> Result<(), FrameError> {
        match opcode {
            Opcode::Continuation if !self.in_message => Err(FrameError::BadContinuation),
            Opcode::Text | Opcode::Binary if self.in_message => Err(FrameError::BadContinuation),
            _ => Ok(()),
        }
    }
}

/// A final, unmasked server frame: header and payload.
pub fn encode(opcode: Opcode, payload: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(payload.len() + 10);
    frame.push(0x80 | opcode.bits());
    let length = payload.len();
    if length < 126 {
        frame.push(length as u8);
    } else if length <= usize::from(u16::MAX) {
        frame.push(126);
        frame.extend_from_slice(&(length as u16).to_be_bytes());
    } else {
        frame.push(127);
        frame.extend_from_slice(&(length as u64).to_be_bytes());
    }
    frame.extend_from_slice(payload);
    frame
}

/// A close frame with `code` and a short reason (cut to fit a control frame).
pub fn close(code: u16, reason: &str) -> Vec<u8> {
    let mut payload = code.to_be_bytes().to_vec();
    let mut cut = reason.len().min(123);
    while !reason.is_char_boundary(cut) {
        cut -= 1;
    }
    payload.extend_from_slice(&reason.as_bytes()[..cut]);
    encode(Opcode::Close, &payload)
}

/// What a client's close frame says, or the status to answer a malformed one with.
pub fn close_status(payload: &[u8]) -> Result<Option<u16>, u16> {
    match payload {
        [] => Ok(None),
        [_] => Err(status::PROTOCOL_ERROR),
        [high, low, reason @ ..] => {
            let code = u16::from_be_bytes([*high, *low]);
            let valid = matches!(code, 1000..=1003 | 1007..=1011 | 3000..=4999);
            if !valid {
                Err(status::PROTOCOL_ERROR)
            } else if std::str::from_utf8(reason).is_err() {
                Err(status::INVALID_PAYLOAD)
            } else {
                Ok(Some(code))
            }
        }
    }
}

#[cfg(test)]
pub mod tests {
    use super::*;

    /// A masked client frame, as a browser sends it.
    pub fn client_frame(first: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [0x37, 0xfa, 0x21, 0x3d];
        let mut frame = vec![first];
        if payload.len() < 126 {
            frame.push(0x80 | payload.len() as u8);
        } else if payload.len() <= 0xFFFF {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        } else {
            frame.push(0x80 | 127);
            frame.extend_from_slice(&(payload.len() as u64).to_be_bytes());
        }
        frame.extend_from_slice(&mask);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        frame
    }

    fn decode_all(bytes: &[u8], piece: usize) -> Result<Vec<Frame>, FrameError> {
        let mut decoder = FrameDecoder::new(1000);
        let mut frames = Vec::new();
        for part in bytes.chunks(piece) {
            decoder.push(part);
            while let Some(frame) = decoder.next_frame()? {
                frames.push(frame);
            }
        }
        Ok(frames)
    }

    #[test]
    fn masked_frames_decode_in_any_split() {
        let mut bytes = client_frame(0x89, b"ping!");
        bytes.extend(client_frame(0x02, &[7u8; 300]));
        bytes.extend(client_frame(0x80, &[8u8; 3]));
        for piece in [1, 2, 3, 7, 1000] {
            let frames = decode_all(&bytes, piece).unwrap();
            assert_eq!(frames.len(), 3, "piece {piece}");
            assert_eq!(frames[0].opcode, Opcode::Ping);
            assert_eq!(frames[0].payload, b"ping!");
            assert_eq!(frames[1].payload, vec![7u8; 300]);
            assert!(!frames[1].fin);
            assert_eq!(frames[2].opcode, Opcode::Continuation);
        }
    }

    #[test]
    fn violations_get_their_close_status() {
        let unmasked = [0x82, 0x01, 0xAA];
        let cases: Vec<(Vec<u8>, u16)> = vec![
            (unmasked.to_vec(), 1002),
            (client_frame(0xC2, b"x"), 1002),
            (client_frame(0x83, b"x"), 1002),
            (client_frame(0x8B, b"x"), 1002),
            (client_frame(0x09, b"x"), 1002),
            (client_frame(0x89, &[0u8; 126]), 1002),
            (client_frame(0x80, b"x"), 1002),
            (client_frame(0x82, &[0u8; 1001]), 1009),
            ([0x82, 0xFE, 0x00, 0x05].to_vec(), 1002),
        ];
        for (bytes, expected) in cases {
            let error = decode_all(&bytes, 1).unwrap_err();
            assert_eq!(error.status(), expected, "{bytes:02x?}: {error}");
        }
    }

    #[test]
    fn an_oversized_frame_is_refused_from_its_header_alone() {
        let mut decoder = FrameDecoder::new(1000);
        decoder.push(&[0x82, 0xFF, 0, 0, 0, 0, 0, 1, 0, 0]);
        assert!(matches!(
            decoder.next_frame(),
            Err(FrameError::TooBig { length: 65536, .. })
        ));
    }

    #[test]
    fn server_frames_use_the_shortest_length() {
        assert_eq!(encode(Opcode::Binary, &[1, 2])[..2], [0x82, 2]);
        assert_eq!(encode(Opcode::Binary, &[0; 200])[..4], [0x82, 126, 0, 200]);
        let big = encode(Opcode::Binary, &[0; 70_000]);
        assert_eq!(big[..2], [0x82, 127]);
        assert_eq!(big.len(), 70_010);
        assert_eq!(close(1009, "too big")[..4], [0x88, 9, 0x03, 0xF1]);
    }

    #[test]
    fn close_payloads_are_checked() {
        assert_eq!(close_status(&[]), Ok(None));
        assert_eq!(close_status(&[0x03]), Err(1002));
        assert_eq!(close_status(&[0x03, 0xE8]), Ok(Some(1000)));
        assert_eq!(close_status(&[0x03, 0xED]), Err(1002), "1005 is never sent");
        assert_eq!(close_status(&[0x03, 0xE8, 0xFF]), Err(1007));
    }
}

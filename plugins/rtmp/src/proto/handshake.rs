//! The RTMP handshake, server side: C0+C1 in, S0+S1+S2 out, then C2 in.
//!
//! This is the plain handshake of the RTMP specification (section 5.2). Encoders that try the
//! digest ("complex") variant accept a plain answer when they publish, ffmpeg and OBS
//! included, so no digest is computed. C2 is read and not checked against S1: some encoders
//! echo S1, others echo their own C1, and neither carries anything the server needs.

use thiserror::Error;

/// Size of C1, C2, S1 and S2.
pub const PACKET_SIZE: usize = 1536;
/// The only RTMP version there is (C0 and S0).
pub const VERSION: u8 = 3;

/// Why a handshake failed.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum HandshakeError {
    #[error(
        "C0 asks for RTMP version {0}; only version 3 is spoken (is this RTMPS or RTMPE, or not RTMP at all?)"
    )]
    Version(u8),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Waiting for C0 and C1.
    C0C1,
    /// S0–S2 sent; waiting for C2.
    C2,
    Done,
}

/// What one call to [`Handshake::push`] did.
#[derive(Debug, PartialEq, Eq)]
pub struct Step {
    /// How many input bytes were used; the rest belongs to the next call (or, once the
    /// handshake is done, to the chunk stream).
    pub consumed: usize,
    /// Bytes to send: S0, S1 and S2, once C1 is complete.
    pub reply: Option<Vec<u8>>,
}

/// The server side of one handshake. It buffers at most one C0+C1 packet.
#[derive(Debug)]
pub struct Handshake {
    stage: Stage,
    buffer: Vec<u8>,
    /// Written into S1's time field (the peer only echoes it).
    epoch_ms: u32,
}

impl Handshake {
    pub fn new(epoch_ms: u32) -> Self {
        Self {
            stage: Stage::C0C1,
            buffer: Vec::new(),
            epoch_ms,
        }
    }

    pub fn is_done(&self) -> bool {
        self.stage == Stage::Done
    }

    /// Use as much of `data` as the current stage needs.
    pub fn push(&mut self, data: &[u8]) -> Result<Step, HandshakeError> {
        let needed = match self.stage {
            Stage::C0C1 => 1 + PACKET_SIZE,
            Stage::C2 => PACKET_SIZE,
            Stage::Done => {
                return Ok(Step {
                    consumed: 0,
                    reply: None,
                })
            }
        };
        if self.stage == Stage::C0C1 && self.buffer.is_empty() {
            if let Some(&version) = data.first() {
                if version != VERSION {
                    return Err(HandshakeError::Version(version));
                }
            }
        }
        let consumed = (needed - self.buffer.len()).min(data.len());
        self.buffer.extend_from_slice(&data[..consumed]);
        let mut step = Step {
            consumed,
            reply: None,
        };
        if self.buffer.len() < needed {
            return Ok(step);
        }
        if self.stage == Stage::C0C1 {
            let mut reply = Vec::with_capacity(1 + 2 * PACKET_SIZE);
            reply.push(VERSION);
            reply.extend_from_slice(&s1(self.epoch_ms));
            // S2 echoes C1.
            reply.extend_from_slice(&self.buffer[1..]);
            step.reply = Some(reply);
            self.stage = Stage::C2;
        } else {
            self.stage = Stage::Done;
        }
        self.buffer = Vec::new();
        Ok(step)
    }
}

/// S1: time, four zero bytes, and filler. The filler need not be random for the plain
/// handshake; a fixed pattern keeps captures reproducible.
fn s1(epoch_ms: u32) -> Vec<u8> {
    let mut s1 = Vec::with_capacity(PACKET_SIZE);
    s1.extend_from_slice(&epoch_ms.to_be_bytes());
    s1.extend_from_slice(&[0; 4]);
    s1.extend((0..PACKET_SIZE - 8).map(|i| (i * 7 + 13) as u8));
    s1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c0c1() -> Vec<u8> {
        let mut bytes = vec![VERSION];
        bytes.extend((0..PACKET_SIZE).map(|i| i as u8));
        bytes
    }

    /// Run a whole input through in pieces of `piece`; the reply and the bytes left over.
    fn run(input: &[u8], piece: usize) -> (Vec<u8>, Vec<u8>, bool) {
        let mut handshake = Handshake::new(5);
        let mut replies = Vec::new();
        let mut rest = Vec::new();
        for part in input.chunks(piece) {
            let mut part = part;
            while !part.is_empty() && !handshake.is_done() {
                let step = handshake.push(part).unwrap();
                replies.extend(step.reply.unwrap_or_default());
                part = &part[step.consumed..];
            }
            rest.extend_from_slice(part);
        }
        (replies, rest, handshake.is_done())
    }

    #[test]
    fn answers_s0_s1_s2_and_hands_on_what_follows_c2_in_any_split() {
        let mut input = c0c1();
        input.extend([9u8; PACKET_SIZE]);
        input.extend(b"chunks");
        for piece in [1, 7, 1000, 1537, 5000] {
            let (reply, rest, done) = run(&input, piece);
            assert!(done);
            assert_eq!(reply.len(), 1 + 2 * PACKET_SIZE);
            assert_eq!(reply[0], VERSION);
            assert_eq!(reply[1..5], 5u32.to_be_bytes());
            assert_eq!(
                reply[1 + PACKET_SIZE..],
                input[1..1 + PACKET_SIZE],
                "S2 echoes C1"
            );
            assert_eq!(rest, b"chunks");
        }
    }

    #[test]
    fn waits_for_c2() {
        let (reply, rest, done) = run(&c0c1(), 100);
        assert_eq!(reply.len(), 1 + 2 * PACKET_SIZE);
        assert!(rest.is_empty() && !done);
    }

    #[test]
    fn a_wrong_version_is_refused_at_once() {
        let mut handshake = Handshake::new(0);
        assert_eq!(
            handshake.push(b"GET / HTTP/1.1"),
            Err(HandshakeError::Version(b'G'))
        );
        assert_eq!(
            Handshake::new(0).push(&[6]),
            Err(HandshakeError::Version(6))
        );
    }
}

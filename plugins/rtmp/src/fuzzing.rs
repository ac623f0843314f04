//! Fuzz bodies, shared by the cargo-fuzz targets in `fuzz/` and by unit tests that run them
//! on stable Rust (cargo-fuzz needs nightly) over the seed corpus and seeded, deterministic
//! mutations of it.
//!
//! Not part of the plugin's API.

use ferrocast_plugin_api::testing::MockHost;
use ferrocast_plugin_api::PointKind;
use ferrocast_plugin_kit::testing::SessionHarness;

use crate::proto::amf0::{self, Decoder};
use crate::proto::chunk::{ChunkError, ChunkReader, Message, DEFAULT_CHUNK_SIZE};
use crate::proto::handshake::PACKET_SIZE;
use crate::proto::message::{self, parse_control, Control};
use crate::session::{Config, RtmpSession};

/// The header bytes a chunk may have at most: 3 basic, 11 message, 4 extended timestamp.
const MAX_HEADER: usize = 18;

/// The first byte picks the piece size (1 to 32 bytes) and the message limit; the rest is a
/// chunk stream after the handshake. Set Chunk Size and Abort are applied as a session does.
/// The reader must never panic, never hold more than its bounds, never yield a message over
/// the limit, and yield the same messages and error however the input is split.
pub fn chunk_parser(data: &[u8]) {
    let Some((&control, input)) = data.split_first() else {
        return;
    };
    let limit = [64, 1024, 65_536, 1 << 20][usize::from(control >> 6)];
    let whole = read_in_pieces(input, input.len().max(1), limit);
    let split = read_in_pieces(input, usize::from(control & 0x1f) + 1, limit);
    assert_eq!(whole, split, "the split changed the outcome");
}

fn read_in_pieces(input: &[u8], piece: usize, limit: usize) -> (Vec<Message>, Option<ChunkError>) {
    let mut reader = ChunkReader::new(limit);
    let mut messages = Vec::new();
    for part in input.chunks(piece) {
        reader.push(part);
        loop {
            match reader.next_message() {
                Ok(Some(message)) => {
                    assert!(message.payload.len() <= limit);
                    let applied = match parse_control(message.type_id, &message.payload) {
                        Ok(Some(Control::SetChunkSize(size))) => reader.set_chunk_size(size),
                        Ok(Some(Control::Abort(csid))) => {
                            reader.abort(csid);
                            Ok(())
                        }
                        _ => Ok(()),
                    };
                    messages.push(message);
                    if let Err(error) = applied {
                        return (messages, Some(error));
                    }
                }
                Ok(None) => break,
                Err(error) => return (messages, Some(error)),
            }
        }
        let bound = reader.chunk_size().max(DEFAULT_CHUNK_SIZE) + MAX_HEADER + 2 * limit + piece;
        assert!(
            reader.buffered() <= bound,
            "{} bytes held",
            reader.buffered()
        );
    }
    (messages, None)
}

/// Arbitrary bytes as AMF0 values, and as a command message body. Decoding must never panic;
/// whatever decodes must encode to bytes that decode and encode to the same bytes again.
pub fn amf0(data: &[u8]) {
    if let Ok(values) = amf0::decode_all(data) {
        let encoded = amf0::encode_all(&values);
        let again = amf0::decode_all(&encoded).expect("what was encoded decodes");
        assert_eq!(amf0::encode_all(&again), encoded);
    }
    let mut decoder = Decoder::new(data);
    while !decoder.is_empty() {
        let before = decoder.rest().len();
        if decoder.value().is_err() {
            break;
        }
        assert!(decoder.rest().len() < before, "every value uses input");
    }
    let _ = message::parse_command(message::COMMAND_AMF0, data);
    let _ = message::parse_command(message::COMMAND_AMF3, data);
}

/// Largest message the session body allows, so the fuzzer reaches the limit quickly.
const SESSION_MAX_MESSAGE: usize = 65_536;

/// A valid handshake, then arbitrary bytes as the chunk stream of one encoder session on a
/// mock host with a broadcast point `live`; the first byte picks the read size. The session
/// must never panic (remuxer included), never hold more than its bounds, and write nothing
/// once it closed.
pub fn session(data: &[u8]) {
    let Some((&control, input)) = data.split_first() else {
        return;
    };
    let config = Config {
        max_message_bytes: SESSION_MAX_MESSAGE,
        ..Config::default()
    };
    let mut mock = MockHost::new();
    mock.add_point("live", PointKind::BROADCAST, 0);
    let mut harness = SessionHarness::new(mock, RtmpSession::new(config));
    harness.open();
    harness.send(&[3]);
    harness.send(&[0; 2 * PACKET_SIZE]);
    let piece = usize::from(control & 0x1f) + 1;
    let mut written_at_close = None;
    for part in input.chunks(piece) {
        harness.send(part);
        let bound =
            crate::proto::chunk::MAX_CHUNK_SIZE as usize + MAX_HEADER + 2 * SESSION_MAX_MESSAGE;
        assert!(harness.session.buffered() <= bound + piece);
        if harness.mock.closed {
            let written = harness.mock.written.len();
            assert_eq!(
                *written_at_close.get_or_insert(written),
                written,
                "written after close"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn corpus(target: &str) -> Vec<Vec<u8>> {
        ferrocast_plugin_kit::corpus::read(env!("CARGO_MANIFEST_DIR"), target)
    }

    /// A deterministic byte stream (xorshift), for mutations.
    struct Noise(u64);

    impl Noise {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    /// `file`, with `count` bytes flipped, a cut, or a span repeated, chosen by `noise`.
    fn mutate(file: &[u8], noise: &mut Noise) -> Vec<u8> {
        let mut data = file.to_vec();
        if data.is_empty() {
            return data;
        }
        match noise.next() % 3 {
            0 => {
                for _ in 0..1 + noise.next() % 4 {
                    let at = (noise.next() as usize) % data.len();
                    data[at] = noise.next() as u8;
                }
            }
            1 => data.truncate((noise.next() as usize) % data.len()),
            _ => {
                let at = (noise.next() as usize) % data.len();
                let span = data[at..].iter().take(32).copied().collect::<Vec<_>>();
                data.splice(at..at, span);
            }
        }
        data
    }

    #[test]
    fn the_chunk_parser_corpus_replays_cleanly_in_every_split() {
        let corpus = corpus("chunk_parser");
        assert!(corpus.len() >= 4, "seed corpus missing");
        let mut noise = Noise(0x9E37_79B9_7F4A_7C15);
        for file in &corpus {
            chunk_parser(file);
            let Some(body) = file.get(1..) else { continue };
            for control in [0u8, 6, 31, 0x41, 0x87, 0xC3, 0xFF] {
                let mut data = vec![control];
                data.extend_from_slice(body);
                chunk_parser(&data);
            }
            for _ in 0..200 {
                chunk_parser(&mutate(file, &mut noise));
            }
        }
    }

    #[test]
    fn the_session_corpus_replays_cleanly() {
        let corpus = corpus("session");
        assert!(!corpus.is_empty(), "seed corpus missing");
        let mut noise = Noise(0x5DEE_CE66_D1CE_4E5B);
        for file in &corpus {
            session(file);
            for _ in 0..40 {
                session(&mutate(file, &mut noise));
            }
        }
    }

    #[test]
    fn the_amf0_corpus_replays_cleanly() {
        let corpus = corpus("amf0");
        assert!(corpus.len() >= 4, "seed corpus missing");
        let mut noise = Noise(0x2545_F491_4F6C_DD1D);
        for file in &corpus {
            amf0(file);
            for cut in 0..file.len() {
                amf0(&file[..cut]);
            }
            for _ in 0..500 {
                amf0(&mutate(file, &mut noise));
            }
        }
    }
}

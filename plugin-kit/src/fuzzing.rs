//! Fuzz bodies of the toolkit's parsers, shared by the cargo-fuzz targets in `fuzz/` and by a
//! unit test that runs them on stable Rust over the checked-in corpus (`fuzz/corpus/`), so every
//! input ever saved there stays a regression test.
//!
//! Not part of the toolkit's API.

use crate::chunked::{ChunkedDecoder, ChunkedError};

/// The first byte picks the piece size (1 to 32 bytes); the rest is a chunked body. Decoding
/// must never panic, never yield more payload than input, and give the same payload, the same
/// end and the same error however the input is split.
pub fn chunked(data: &[u8]) {
    let Some((&control, input)) = data.split_first() else {
        return;
    };
    let whole = decode_in_pieces(input, input.len().max(1));
    let split = decode_in_pieces(input, usize::from(control & 0x1f) + 1);
    assert_eq!(whole, split, "the split changed the outcome");
    assert!(whole.payload.len() <= input.len());
    assert!(whole.consumed <= input.len());
}

#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    payload: Vec<u8>,
    consumed: usize,
    done: bool,
    error: Option<ChunkedError>,
}

fn decode_in_pieces(input: &[u8], piece: usize) -> Outcome {
    let mut decoder = ChunkedDecoder::new();
    let mut outcome = Outcome {
        payload: Vec::new(),
        consumed: 0,
        done: false,
        error: None,
    };
    'pieces: for part in input.chunks(piece) {
        let mut rest = part;
        while !rest.is_empty() && !decoder.is_done() {
            match decoder.decode(rest) {
                Ok(decoded) => {
                    assert!(decoded.consumed <= rest.len());
                    assert!(decoded.data.len() <= decoded.consumed);
                    outcome.payload.extend_from_slice(decoded.data);
                    outcome.consumed += decoded.consumed;
                    if decoded.consumed == 0 {
                        break;
                    }
                    rest = &rest[decoded.consumed..];
                }
                Err(error) => {
                    // How far a failed body got is not part of the outcome: an error reports
                    // no position.
                    outcome.error = Some(error);
                    outcome.consumed = 0;
                    break 'pieces;
                }
            }
        }
        if decoder.is_done() {
            break;
        }
    }
    outcome.done = decoder.is_done();
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every file of `fuzz/corpus/<target>/`, sorted by name.
    pub(crate) fn corpus(target: &str) -> Vec<Vec<u8>> {
        crate::corpus::read(env!("CARGO_MANIFEST_DIR"), target)
    }

    #[test]
    fn the_chunked_corpus_replays_cleanly_in_every_split() {
        let corpus = corpus("chunked");
        assert!(corpus.len() >= 4, "seed corpus missing");
        for file in &corpus {
            chunked(file);
            let Some(body) = file.get(1..) else { continue };
            for control in 0..32u8 {
                let mut data = vec![control];
                data.extend_from_slice(body);
                chunked(&data);
                // Every prefix: a body cut anywhere.
                for cut in (0..data.len()).step_by(7) {
                    chunked(&data[..cut]);
                }
            }
        }
    }
}

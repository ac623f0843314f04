//! Fuzz bodies of the HTTP plugin, shared by the cargo-fuzz targets in `fuzz/` and by a unit
//! test that runs them on stable Rust over the checked-in corpus (`fuzz/corpus/`), so every
//! input ever saved there stays a regression test.
//!
//! Not part of the plugin's API.

use crate::proto::request::{HeadReader, Request, RequestError};

/// The first byte picks the head size limit and the read size (1 to 32 bytes); the rest is
/// what a client sends. Parsing must never panic, must buffer no more than the limit, must
/// answer every error with a defined status, and must yield the same requests however the
/// input is split.
pub fn request_head(data: &[u8]) {
    let Some((&control, input)) = data.split_first() else {
        return;
    };
    let max_head = [64, 256, 1024, 16384][usize::from(control >> 6)];
    let whole = parse_in_pieces(input, max_head, input.len().max(1));
    let split = parse_in_pieces(input, max_head, usize::from(control & 0x1f) + 1);
    assert_eq!(whole.0, split.0, "the split changed the requests");
    for error in [&whole.1, &split.1].into_iter().flatten() {
        assert!(matches!(error.status(), 400 | 431 | 501 | 505));
    }
}

fn parse_in_pieces(
    input: &[u8],
    max_head: usize,
    piece: usize,
) -> (Vec<Request>, Option<RequestError>) {
    let mut reader = HeadReader::new(max_head);
    let mut requests = Vec::new();
    for part in input.chunks(piece) {
        reader.push(part);
        loop {
            match reader.next_request() {
                Ok(Some(request)) => {
                    assert!(!request.path.starts_with('/'), "{request:?}");
                    assert!(!request.path.split('/').any(|s| s == ".."), "{request:?}");
                    requests.push(request);
                }
                Ok(None) => break,
                Err(error) => return (requests, Some(error)),
            }
        }
        assert!(
            reader.buffered() <= max_head,
            "{} buffered",
            reader.buffered()
        );
    }
    (requests, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn corpus(target: &str) -> Vec<Vec<u8>> {
        ferrocast_plugin_kit::corpus::read(env!("CARGO_MANIFEST_DIR"), target)
    }

    #[test]
    fn the_request_head_corpus_replays_cleanly_in_every_split_and_limit() {
        let corpus = corpus("request_head");
        assert!(corpus.len() >= 5, "seed corpus missing");
        for file in &corpus {
            request_head(file);
            let Some(input) = file.get(1..) else { continue };
            for control in [0u8, 3, 0x1f, 0x40, 0x47, 0x80, 0x9f, 0xc0, 0xc1, 0xff] {
                let mut data = vec![control];
                data.extend_from_slice(input);
                request_head(&data);
            }
        }
    }
}

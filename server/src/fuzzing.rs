//! Fuzz bodies of the host's parsers that an anonymous peer or a config file reaches: live TS
//! ingest and the configuration compiler. Shared by the cargo-fuzz targets in `fuzz/` and by
//! a unit test that runs them on stable Rust over the checked-in corpus (`fuzz/corpus/`), so
//! every input ever saved there stays a regression test.
//!
//! Not part of the host's API.

use std::path::Path;

use crate::config::{self, PluginCatalog, SettingIssue};
use crate::media::ingest::TsIngest;
use crate::media::ts::{SYNC_BYTE, TS_PACKET_LEN};

/// The first byte picks the read size (1 to 256 bytes); the rest is what an encoder pushes.
/// Ingest must never panic, must emit only whole packets that start with the sync byte, and
/// must emit the same packets and find the same media however the input is split.
pub fn ts_ingest(data: &[u8]) {
    let Some((&control, input)) = data.split_first() else {
        return;
    };
    let whole = ingest_in_pieces(input, input.len().max(1));
    let split = ingest_in_pieces(input, usize::from(control) + 1);
    assert_eq!(whole, split, "the split changed what was ingested");
}

/// The packets emitted, the media packets seen and the keyframes found.
fn ingest_in_pieces(input: &[u8], piece: usize) -> (Vec<u8>, u64, u64) {
    let mut ingest = TsIngest::new();
    let mut emitted = Vec::new();
    let mut chunks = Vec::new();
    for part in input.chunks(piece) {
        chunks.clear();
        ingest.push(part, &mut chunks);
        for chunk in &chunks {
            assert!(!chunk.data.is_empty());
            assert_eq!(chunk.data.len() % TS_PACKET_LEN, 0);
            for packet in chunk.data.chunks(TS_PACKET_LEN) {
                assert_eq!(packet[0], SYNC_BYTE);
            }
            emitted.extend_from_slice(&chunk.data);
        }
    }
    assert!(emitted.len() <= input.len());
    let stats = ingest.stats();
    (emitted, stats.media_packets, stats.random_access_points)
}

/// A catalog with the `http` and `udp` plugins, which accepts any settings but checks that
/// the compiler hands each plugin valid TOML.
struct Catalog;

impl PluginCatalog for Catalog {
    fn plugin_names(&self) -> Vec<String> {
        vec!["http".to_owned(), "udp".to_owned()]
    }

    fn validate_settings(&self, plugin: &str, settings: &str) -> Vec<SettingIssue> {
        assert!(
            settings.parse::<toml_edit::DocumentMut>().is_ok(),
            "settings handed to {plugin} are not TOML: {settings:?}"
        );
        Vec::new()
    }
}

/// Arbitrary text as a configuration file: compiling must never panic, and every error must
/// render to text naming a line of the file.
pub fn config_compile(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let path = Path::new("/nonexistent/ferrocast-fuzz/ferrocast.toml");
    if let Err(errors) = config::compile(path, &text, &Catalog) {
        assert!(!errors.0.is_empty());
        let rendered = errors.to_string();
        assert!(!rendered.is_empty());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn corpus(target: &str) -> Vec<Vec<u8>> {
        ferrocast_plugin_kit::corpus::read(env!("CARGO_MANIFEST_DIR"), target)
    }

    #[test]
    fn the_ts_ingest_corpus_replays_cleanly_in_every_split() {
        let corpus = corpus("ts_ingest");
        assert!(corpus.len() >= 4, "seed corpus missing");
        for file in &corpus {
            ts_ingest(file);
            let Some(input) = file.get(1..) else { continue };
            for control in [0u8, 1, 6, 100, 186, 187, 188, 255] {
                let mut data = vec![control];
                data.extend_from_slice(input);
                ts_ingest(&data);
            }
        }
    }

    #[test]
    fn the_config_corpus_compiles_without_panics() {
        let corpus = corpus("config_compile");
        assert!(corpus.len() >= 4, "seed corpus missing");
        for file in &corpus {
            config_compile(file);
            // Every prefix: a file cut anywhere.
            for cut in (0..file.len()).step_by(13) {
                config_compile(&file[..cut]);
            }
        }
    }
}

//! Fuzz corpora replayed as ordinary tests: every crate keeps the inputs of its cargo-fuzz
//! targets (each crash ever found included) in `fuzz/corpus/<target>/`, and its unit tests
//! feed them to the same bodies the fuzzer runs.

use std::path::Path;

/// Every file of `<crate_dir>/fuzz/corpus/<target>/`, sorted by name. Panics, naming the
/// folder, when it cannot be read: a corpus that went missing must fail its test.
pub fn read(crate_dir: &str, target: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(crate_dir).join("fuzz/corpus").join(target);
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|error| panic!("{}: {error}", dir.display()))
        .map(|entry| entry.expect("a corpus entry").path())
        .collect();
    paths.sort();
    paths
        .iter()
        .map(|path| std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
        .collect()
}

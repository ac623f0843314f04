//! Arbitrary bytes into live TS ingest, as an encoder (or an attacker) pushes them.
//!
//! The first byte picks the read size; the rest is the pushed stream. Ingest must never
//! panic, emit only whole packets, and ingest the same however the input is split. See
//! `ferrocast::fuzzing`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ferrocast::fuzzing::ts_ingest(data);
});

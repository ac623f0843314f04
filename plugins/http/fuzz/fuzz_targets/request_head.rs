//! Arbitrary bytes into the HTTP plugin's request head reader.
//!
//! The first byte picks the head size limit and the read size; the rest is what a client
//! sends. The reader must never panic, stay within its limit and parse the same however the
//! input is split. See `ferrocast_http::fuzzing`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ferrocast_http::fuzzing::request_head(data);
});

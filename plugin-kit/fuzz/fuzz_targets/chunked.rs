//! Arbitrary bytes into the toolkit's chunked body decoder.
//!
//! The first byte picks the read size (1 to 32 bytes); the rest is the body. The decoder must
//! never panic and must decode the same however the input is split. See
//! `ferrocast_plugin_kit::fuzzing`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ferrocast_plugin_kit::fuzzing::chunked(data);
});

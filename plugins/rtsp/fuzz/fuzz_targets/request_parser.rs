//! Arbitrary bytes into the RTSP plugin's incremental request parser.
//!
//! The first byte picks the read size (1 to 32 bytes) and the limits; the rest is the input.
//! The parser must never panic, must keep what it buffers within its limits, and must return
//! the same messages however the input is split. See `ferrocast_rtsp::fuzzing`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ferrocast_rtsp::fuzzing::request_parser(data);
});

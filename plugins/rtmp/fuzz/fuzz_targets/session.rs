//! Arbitrary bytes, after a valid handshake, into a whole RTMP encoder session on a mock host,
//! remuxer included. It must never panic, stay within its buffer bounds, and write nothing
//! after closing. Seed it with `corpus/session` (the start of a captured ffmpeg publish):
//!
//!     cargo +nightly fuzz run session corpus/session

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ferrocast_rtmp::fuzzing::session(data);
});

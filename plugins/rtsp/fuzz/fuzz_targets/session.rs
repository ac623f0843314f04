//! Arbitrary bytes into a whole RTSP session on a mock host, with timers, transport activity
//! and stream ends interleaved. It must never panic, always answer with RTSP responses and
//! write nothing after closing. Seed it with the request parser's corpus:
//!
//!     cargo +nightly fuzz run session corpus/request_parser

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ferrocast_rtsp::fuzzing::session(data);
});

//! Arbitrary bytes into the RTMP chunk stream reader, with Set Chunk Size and Abort applied.
//!
//! The first byte picks the read size (1 to 32 bytes) and the message limit; the rest is the
//! chunk stream. The reader must never panic, must keep what it holds within its bounds, and
//! must return the same messages however the input is split. See `ferrocast_rtmp::fuzzing`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ferrocast_rtmp::fuzzing::chunk_parser(data);
});

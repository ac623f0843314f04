//! Arbitrary bytes into the AMF0 decoder and the command parser. They must never panic, and
//! whatever decodes must survive an encode and decode unchanged. See `ferrocast_rtmp::fuzzing`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ferrocast_rtmp::fuzzing::amf0(data);
});

//! Arbitrary text into the configuration compiler: it must never panic, and report every
//! error as text. See `ferrocast::fuzzing`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ferrocast::fuzzing::config_compile(data);
});

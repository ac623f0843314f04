//! Unpredictable numbers for protocol fields that must not be guessable: RTP SSRCs, initial
//! sequence numbers and timestamps (RFC 3550), and reconnect jitter.

/// A random 32-bit value for SSRCs and initial sequence numbers and timestamps (RFC 3550
/// wants them unpredictable; std's hasher keys are random per process and per call).
pub fn random_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64),
    );
    hasher.finish() as u32
}

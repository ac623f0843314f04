//! # ferrocast plugin kit
//!
//! Protocol building blocks shared by ferrocast's text protocols: the HTTP and RTSP plugins,
//! the server's HTTP pull client, and any third-party plugin that speaks a request/response
//! protocol. Everything here is sans-IO (pure functions and small state machines over bytes),
//! so each piece is unit-tested on its own and behaves the same in every crate that uses it.
//!
//! - [`auth`]: the credentials a request presents (`Authorization`, query) and the 401/429 helpers.
//! - [`head`]: the end of a request or response head, found incrementally; header lookup.
//! - [`path`]: percent-decoding and normalising request paths into publishing-point paths.
//! - [`response`]: status line, header fields and body; reason phrases.
//! - [`framing`]: HTTP/1.x body framing (`Content-Length` or chunked) and body decoding.
//! - [`chunked`]: the strict, incremental decoder of the chunked transfer coding.
//! - [`client`]: HTTP/1.x response heads, as a client such as the pull source reads them.
//! - [`settings`]: range-checked plugin settings that report every problem at once.
//! - `testing` (feature `testing`): a session harness over
//!   [`MockHost`](ferrocast_plugin_api::testing::MockHost).
//!
//! The kit sits outside the plugin ABI: `ferrocast-plugin-api` does not depend on it, and it is
//! versioned on its own.

#![forbid(unsafe_code)]

pub mod auth;
pub mod chunked;
pub mod client;
#[cfg(any(test, feature = "testing"))]
pub mod corpus;
pub mod framing;
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
pub mod head;
pub mod path;
pub mod response;
pub mod settings;
#[cfg(feature = "testing")]
pub mod testing;

/// The value of an ASCII hex digit (the caller has checked that it is one).
fn hex_value(byte: u8) -> u8 {
    match byte {
        b'0'..=b'9' => byte - b'0',
        b'a'..=b'f' => byte - b'a' + 10,
        _ => byte - b'A' + 10,
    }
}

//! The sans-IO HTTP/1.1 protocol core: pure functions and small state machines over bytes.
//!
//! Nothing here knows about the ferrocast host, publishing points or timers; [`crate::session`]
//! glues these pieces to the host. Keeping them separate keeps each one testable (and
//! fuzzable) on its own. What HTTP shares with RTSP and the server's pull client (head
//! scanning, path normalisation, response building, framing and the chunked coding) comes from
//! `ferrocast-plugin-kit`.

pub mod range;
pub mod request;
pub mod response;

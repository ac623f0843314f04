//! The sans-IO HTTP/1.1 protocol core: pure functions and small state machines over bytes.
//!
//! Nothing here knows about the ferrocast host, publishing points or timers; [`crate::session`]
//! glues these pieces to the host. Keeping them separate keeps each one testable (and
//! fuzzable) on its own.

pub mod chunked;
pub mod range;
pub mod request;
pub mod response;

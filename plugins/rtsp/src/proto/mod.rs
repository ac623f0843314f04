//! The sans-IO RTSP/1.0 protocol core: parsers and formatters over bytes and strings.
//!
//! Nothing here knows about the ferrocast host, publishing points or timers (there is no
//! dependency on the plugin API); [`crate::session`] glues these pieces to the host. Keeping
//! them separate keeps each one testable and fuzzable on its own.
//!
//! - [`request`]: the incremental parser of requests and interleaved `$` frames.
//! - [`url`]: request URLs to publishing-point paths and track numbers.
//! - [`transport`]: the `Transport` header, both ways.
//! - [`range`]: normal play time (`Range: npt=…`).
//! - [`sdp`]: the DESCRIBE answer.
//! - [`response`]: status lines and header fields.
//! - [`tunnel`]: RTSP over HTTP: the opening GET and POST, and the POST's base64 stream.

pub mod range;
pub mod request;
pub mod response;
pub mod sdp;
pub mod transport;
pub mod tunnel;
pub mod url;

//! # ferrocast RTMP control plugin
//!
//! RTMP ingest: an encoder publishes FLV-framed H.264/AAC to `rtmp://host/<app>/<point>`, and
//! the plugin remuxes it into MPEG-TS for the point ([`remux`]).

#![forbid(unsafe_code)]

pub mod proto;
pub mod remux;

#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;

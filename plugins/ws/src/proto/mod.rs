//! The WebSocket protocol (RFC 6455) without any host: the opening handshake and the frame
//! codec. Both are pure functions and small state machines over bytes.

pub mod frame;
pub mod handshake;

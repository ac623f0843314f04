//! The RTMP protocol core, without any host: the handshake, the chunk stream, AMF0 and the
//! messages built on them. [`crate::session`] turns it into host actions.

pub mod amf0;
pub mod chunk;
pub mod handshake;
pub mod message;

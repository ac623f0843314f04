//! MPEG-TS media handling for the server: packet primitives ([`ts`]), live
//! ingest that cuts an encoder feed into chunks at random-access points
//! ([`ingest`]), and a file index for time-based seeking and pacing of
//! on-demand files ([`index`]).

pub mod index;
pub mod ingest;
pub mod pacer;
pub mod rtp;
pub mod ts;

#[cfg(test)]
pub(crate) mod test_support;

pub use index::{index_file, FileIndex, IndexEntry, IndexError};
pub use ingest::{Chunk, IngestStats, TsIngest};
pub use ts::{TsPacket, SYNC_BYTE, TS_PACKET_LEN};

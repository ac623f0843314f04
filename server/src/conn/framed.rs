//! Framed media: a session that asked with `play_framed` receives its media as `on_media`
//! events, which it wraps in its own protocol's frames, instead of the host writing raw TS.
//!
//! The media is the same shared chunks a raw TS client gets, pulled from the same cursors
//! under the same rules: a live chunk is received only while the output queue is below its
//! high-water mark (what the plugin writes for a chunk lands in that queue), a client that
//! falls off the ring skips to the next keyframe, and the end comes as `on_stream_ended`.
//! Chunks wait here only between being received and the next turn of the IO loop, which
//! hands them to the session one per turn, before anything else happens.

use std::collections::VecDeque;

use bytes::Bytes;
use ferrocast_plugin_api::host::HostCalls;
use ferrocast_plugin_api::{ByteRange, HostError, MediaChunk, PointInfo};

use super::connection::Connection;
use crate::media::ingest::Chunk;

/// One piece of media on its way to the session: a view of the shared buffer, not a copy.
#[derive(Debug, Clone)]
pub struct FramedChunk {
    pub data: Bytes,
    pub keyframe: bool,
    pub timestamp_90k: Option<u64>,
}

impl FramedChunk {
    pub fn of_live(chunk: &Chunk) -> Self {
        Self {
            data: chunk.data.clone(),
            keyframe: chunk.random_access,
            timestamp_90k: chunk.pcr_90k,
        }
    }

    /// A block of an on-demand file: no keyframe flag, no timestamp.
    pub fn of_file(block: Bytes) -> Self {
        Self {
            data: block,
            keyframe: false,
            timestamp_90k: None,
        }
    }

    /// The chunk as the plugin sees it, borrowing the shared buffer for the call.
    pub fn as_media(&self) -> MediaChunk<'_> {
        MediaChunk::new(&self.data, self.keyframe, self.timestamp_90k)
    }
}

/// Whether the session takes its media framed, and the chunks not yet handed to it.
#[derive(Default)]
pub struct FramedMedia {
    active: bool,
    waiting: VecDeque<FramedChunk>,
}

impl FramedMedia {
    pub fn is_active(&self) -> bool {
        self.active
    }

    /// Media in the session's hands from now on is framed by the plugin.
    pub fn start(&mut self) {
        self.active = true;
    }

    /// The media stopped: nothing more goes to the session.
    pub fn stop(&mut self) {
        self.active = false;
        self.waiting.clear();
    }

    pub fn push(&mut self, chunk: FramedChunk) {
        if !chunk.data.is_empty() {
            self.waiting.push_back(chunk);
        }
    }

    /// The next chunk to hand to the session.
    pub fn next(&mut self) -> Option<FramedChunk> {
        self.waiting.pop_front()
    }
}

impl Connection<'_> {
    /// `play_framed`: start the media as `play` does, then hand it to the session as events.
    pub fn play_framed_media(
        &mut self,
        path: &str,
        range: ByteRange,
    ) -> Result<PointInfo, HostError> {
        let info = HostCalls::play(self, path, range)?;
        self.framed.start();
        Ok(info)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(byte: u8, keyframe: bool) -> FramedChunk {
        FramedChunk {
            data: Bytes::from(vec![byte; 188]),
            keyframe,
            timestamp_90k: Some(u64::from(byte) * 3000),
        }
    }

    #[test]
    fn chunks_go_to_the_session_in_order_and_stop_with_the_media() {
        let mut framed = FramedMedia::default();
        framed.start();
        framed.push(chunk(1, true));
        framed.push(chunk(2, false));
        framed.push(FramedChunk::of_file(Bytes::new()));
        let first = framed.next().unwrap();
        let media = first.as_media();
        assert!(media.keyframe);
        assert_eq!(media.timestamp(), Some(3000));
        assert_eq!(media.bytes(), &[1u8; 188][..]);
        framed.stop();
        assert!(!framed.is_active());
        assert!(
            framed.next().is_none(),
            "a stop drops what was not handed over"
        );
    }

    #[test]
    fn file_blocks_carry_neither_keyframe_nor_timestamp() {
        let block = FramedChunk::of_file(Bytes::from_static(b"abc"));
        let media = block.as_media();
        assert!(!media.keyframe);
        assert_eq!(media.timestamp(), None);
    }
}

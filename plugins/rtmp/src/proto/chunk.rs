//! The RTMP chunk stream (specification section 5.3): messages cut into chunks, interleaved
//! over chunk stream ids, with headers compressed against the previous chunk of the same
//! chunk stream.
//!
//! [`ChunkReader`] reassembles messages from any split of the input. Everything it holds is
//! bounded: at most one chunk of unparsed input (`chunk size` plus an 18-byte header), at most
//! [`MAX_CHUNK_STREAMS`] chunk streams, each partial message at most `max_message_bytes`, and
//! all partial messages together at most twice that. It also counts the bytes received, for
//! acknowledgements. [`ChunkWriter`] cuts outgoing messages.

use std::collections::BTreeMap;

use thiserror::Error;

/// The chunk size both sides start with.
pub const DEFAULT_CHUNK_SIZE: usize = 128;
/// Largest chunk size (the field has 31 bits, but the specification caps it at 0xFFFFFF).
pub const MAX_CHUNK_SIZE: u32 = 0xFF_FFFF;
/// Chunk streams one connection may use; an encoder uses a handful.
pub const MAX_CHUNK_STREAMS: usize = 64;
/// The timestamp value that means "see the extended timestamp".
const EXTENDED: u32 = 0xFF_FFFF;

/// Why the chunk stream cannot be read on.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum ChunkError {
    #[error("chunk stream {0} continues a message it never started")]
    NoPreviousHeader(u32),
    #[error("message of {length} bytes on chunk stream {csid} is over the limit of {limit} bytes")]
    MessageTooLong {
        csid: u32,
        length: u32,
        limit: usize,
    },
    #[error("partial messages would hold more than {0} bytes")]
    TooMuchPending(usize),
    #[error("more than {MAX_CHUNK_STREAMS} chunk streams in use")]
    TooManyChunkStreams,
    #[error("chunk size {0} is out of range (1 to 16777215)")]
    BadChunkSize(u32),
}

/// One reassembled message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub csid: u32,
    /// Absolute, as the sender's deltas add up (wrapping at 2^32).
    pub timestamp: u32,
    pub type_id: u8,
    pub stream_id: u32,
    pub payload: Vec<u8>,
}

/// What the last chunk of a chunk stream said, and the message it is building.
#[derive(Debug, Default, Clone)]
struct StreamState {
    timestamp: u32,
    delta: u32,
    length: u32,
    type_id: u8,
    stream_id: u32,
    /// The last header's timestamp field was extended: type 3 chunks carry one too.
    extended: bool,
    /// The message in progress; empty between messages.
    partial: Vec<u8>,
    in_message: bool,
}

/// Reassembles messages from chunks.
#[derive(Debug)]
pub struct ChunkReader {
    input: Vec<u8>,
    chunk_size: usize,
    max_message_bytes: usize,
    streams: BTreeMap<u32, StreamState>,
    pending_bytes: usize,
    received: u64,
}

/// A parsed chunk header, before it is applied to its stream's state.
struct Header {
    fmt: u8,
    csid: u32,
    /// The 24-bit timestamp or delta field, or the extended value.
    time: Option<u32>,
    length: Option<u32>,
    type_id: Option<u8>,
    stream_id: Option<u32>,
    extended: bool,
    size: usize,
}

impl ChunkReader {
    pub fn new(max_message_bytes: usize) -> Self {
        Self {
            input: Vec::new(),
            chunk_size: DEFAULT_CHUNK_SIZE,
            max_message_bytes,
            streams: BTreeMap::new(),
            pending_bytes: 0,
            received: 0,
        }
    }

    /// Apply the peer's Set Chunk Size; it governs every chunk after that message.
    pub fn set_chunk_size(&mut self, size: u32) -> Result<(), ChunkError> {
        if size == 0 || size > MAX_CHUNK_SIZE {
            return Err(ChunkError::BadChunkSize(size));
        }
        self.chunk_size = size as usize;
        Ok(())
    }

    pub fn chunk_size(&self) -> usize {
        self.chunk_size
    }

    /// Drop the partial message of chunk stream `csid` (an Abort message).
    pub fn abort(&mut self, csid: u32) {
        if let Some(stream) = self.streams.get_mut(&csid) {
            self.pending_bytes -= stream.partial.len();
            stream.partial = Vec::new();
            stream.in_message = false;
        }
    }

    /// Bytes received since the start, for acknowledgements.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Bytes held: unparsed input and partial messages.
    pub fn buffered(&self) -> usize {
        self.input.len() + self.pending_bytes
    }

    /// Add input.
    pub fn push(&mut self, data: &[u8]) {
        self.received += data.len() as u64;
        self.input.extend_from_slice(data);
    }

    /// The next complete message, if the input holds one. Call until `None` after each push,
    /// and apply Set Chunk Size between calls.
    pub fn next_message(&mut self) -> Result<Option<Message>, ChunkError> {
        let mut offset = 0;
        let result = loop {
            let Some(header) = self.header(&self.input[offset..])? else {
                break Ok(None);
            };
            let state = self.streams.get(&header.csid);
            let (length, in_message, have) = match state {
                // Only a type 3 chunk continues a message; any other header starts a new
                // one, and the unfinished one is dropped.
                Some(state) if state.in_message && header.fmt == 3 => {
                    (state.length, true, state.partial.len())
                }
                Some(state) => (header.length.unwrap_or(state.length), false, 0),
                None => (header.length.unwrap_or(0), false, 0),
            };
            let body = (length as usize - have).min(self.chunk_size);
            let available = self.input.len() - offset - header.size;
            if available < body {
                break Ok(None);
            }
            let start = offset + header.size;
            offset = start + body;
            let chunk = self.input[start..offset].to_vec();
            match self.apply(header, in_message, &chunk) {
                Ok(Some(message)) => break Ok(Some(message)),
                Ok(None) => continue,
                Err(error) => break Err(error),
            }
        };
        self.input.drain(..offset);
        result
    }

    /// The header at the start of `input`, if complete.
    fn header(&self, input: &[u8]) -> Result<Option<Header>, ChunkError> {
        let Some(&first) = input.first() else {
            return Ok(None);
        };
        let fmt = first >> 6;
        let (csid, mut size) = match first & 0x3F {
            0 => match input.get(1) {
                Some(&byte) => (64 + u32::from(byte), 2),
                None => return Ok(None),
            },
            1 => match input.get(1..3) {
                Some(bytes) => (64 + u32::from(bytes[0]) + 256 * u32::from(bytes[1]), 3),
                None => return Ok(None),
            },
            id => (u32::from(id), 1),
        };
        let fields = [11, 7, 3, 0][usize::from(fmt)];
        let Some(raw) = input.get(size..size + fields) else {
            return Ok(None);
        };
        size += fields;
        let be24 = |b: &[u8]| u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        let mut header = Header {
            fmt,
            csid,
            time: (fmt < 3).then(|| be24(&raw[0..3])),
            length: (fmt < 2).then(|| be24(&raw[3..6])),
            type_id: (fmt < 2).then(|| raw[6]),
            stream_id: (fmt == 0).then(|| u32::from_le_bytes([raw[7], raw[8], raw[9], raw[10]])),
            extended: false,
            size,
        };
        let previous = self.streams.get(&csid);
        header.extended = match header.time {
            Some(time) => time == EXTENDED,
            None => match previous {
                Some(state) => state.extended,
                None => return Err(ChunkError::NoPreviousHeader(csid)),
            },
        };
        if fmt > 0 && previous.is_none() {
            return Err(ChunkError::NoPreviousHeader(csid));
        }
        if header.extended {
            let Some(bytes) = input.get(size..size + 4) else {
                return Ok(None);
            };
            let value = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
            if header.time.is_some() {
                header.time = Some(value);
            }
            header.size += 4;
        }
        if let Some(length) = header.length {
            if length as usize > self.max_message_bytes {
                return Err(ChunkError::MessageTooLong {
                    csid,
                    length,
                    limit: self.max_message_bytes,
                });
            }
        }
        if previous.is_none() && self.streams.len() >= MAX_CHUNK_STREAMS {
            return Err(ChunkError::TooManyChunkStreams);
        }
        Ok(Some(header))
    }

    /// Apply one complete chunk to its stream; the message it completes, if any.
    fn apply(
        &mut self,
        header: Header,
        in_message: bool,
        chunk: &[u8],
    ) -> Result<Option<Message>, ChunkError> {
        let limit = 2 * self.max_message_bytes;
        let state = self.streams.entry(header.csid).or_default();
        if !in_message {
            self.pending_bytes -= state.partial.len();
            state.partial = Vec::new();
            // A new message: its header fields, and its timestamp.
            if let Some(length) = header.length {
                state.length = length;
            }
            if let Some(type_id) = header.type_id {
                state.type_id = type_id;
            }
            if let Some(stream_id) = header.stream_id {
                state.stream_id = stream_id;
            }
            match (header.fmt, header.time) {
                (0, Some(time)) => {
                    state.timestamp = time;
                    state.delta = 0;
                }
                (_, Some(delta)) => {
                    state.delta = delta;
                    state.timestamp = state.timestamp.wrapping_add(delta);
                }
                // Type 3 starting a message repeats the previous delta.
                (_, None) => state.timestamp = state.timestamp.wrapping_add(state.delta),
            }
            state.extended = header.extended;
            state.in_message = true;
        }
        if self.pending_bytes + chunk.len() > limit {
            return Err(ChunkError::TooMuchPending(limit));
        }
        self.pending_bytes += chunk.len();
        state.partial.extend_from_slice(chunk);
        if state.partial.len() < state.length as usize {
            return Ok(None);
        }
        let payload = std::mem::take(&mut state.partial);
        self.pending_bytes -= payload.len();
        state.in_message = false;
        Ok(Some(Message {
            csid: header.csid,
            timestamp: state.timestamp,
            type_id: state.type_id,
            stream_id: state.stream_id,
            payload,
        }))
    }
}

/// Cuts outgoing messages into chunks: a type 0 header, then type 3 continuations.
#[derive(Debug)]
pub struct ChunkWriter {
    chunk_size: usize,
}

impl Default for ChunkWriter {
    fn default() -> Self {
        Self {
            chunk_size: DEFAULT_CHUNK_SIZE,
        }
    }
}

impl ChunkWriter {
    /// Use `size` for every message after this one (once a Set Chunk Size was sent).
    pub fn set_chunk_size(&mut self, size: usize) {
        self.chunk_size = size.max(1);
    }

    /// Append `payload` as message `type_id` on chunk stream `csid` (2 to 63).
    pub fn write(
        &self,
        csid: u8,
        timestamp: u32,
        type_id: u8,
        stream_id: u32,
        payload: &[u8],
        out: &mut Vec<u8>,
    ) {
        let csid = csid & 0x3F;
        let extended = timestamp >= EXTENDED;
        let field = if extended { EXTENDED } else { timestamp };
        let length = payload.len().min(0xFF_FFFF) as u32;
        out.push(csid);
        out.extend_from_slice(&field.to_be_bytes()[1..]);
        out.extend_from_slice(&length.to_be_bytes()[1..]);
        out.push(type_id);
        out.extend_from_slice(&stream_id.to_le_bytes());
        if extended {
            out.extend_from_slice(&timestamp.to_be_bytes());
        }
        for (index, piece) in payload[..length as usize]
            .chunks(self.chunk_size)
            .enumerate()
        {
            if index > 0 {
                out.push(0xC0 | csid);
                if extended {
                    out.extend_from_slice(&timestamp.to_be_bytes());
                }
            }
            out.extend_from_slice(piece);
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn read_all(input: &[u8], piece: usize, reader: &mut ChunkReader) -> Vec<Message> {
        let mut messages = Vec::new();
        for part in input.chunks(piece) {
            reader.push(part);
            while let Some(message) = reader.next_message().unwrap() {
                messages.push(message);
            }
        }
        messages
    }

    #[test]
    fn written_messages_read_back_in_any_split() {
        let mut writer = ChunkWriter::default();
        writer.set_chunk_size(100);
        let mut out = Vec::new();
        writer.write(3, 0, 20, 0, &[1; 250], &mut out);
        writer.write(4, 0x0100_0000, 9, 1, &[2; 300], &mut out);
        writer.write(4, 5, 8, 1, &[], &mut out);
        for piece in [1, 7, 64, usize::MAX] {
            let mut reader = ChunkReader::new(1000);
            reader.set_chunk_size(100).unwrap();
            let messages = read_all(&out, piece, &mut reader);
            assert_eq!(messages.len(), 3);
            assert_eq!((messages[0].type_id, messages[0].payload.len()), (20, 250));
            assert_eq!(messages[1].timestamp, 0x0100_0000, "extended timestamp");
            assert_eq!(messages[1].stream_id, 1);
            assert_eq!(messages[1].payload, [2; 300]);
            assert_eq!((messages[2].timestamp, messages[2].payload.len()), (5, 0));
            assert_eq!(reader.received(), out.len() as u64);
            assert_eq!(reader.buffered(), 0);
        }
    }

    #[test]
    fn compressed_headers_carry_deltas_and_interleave() {
        let mut input = Vec::new();
        // csid 4, type 0: ts 1000, length 3, video, stream 1.
        input.extend([
            0x04, 0x00, 0x03, 0xE8, 0, 0, 3, 9, 1, 0, 0, 0, b'a', b'b', b'c',
        ]);
        // type 1: delta 40, length 2, audio.
        input.extend([0x44, 0, 0, 40, 0, 0, 2, 8, b'd', b'e']);
        // type 2: delta 20.
        input.extend([0x84, 0, 0, 20, b'f', b'g']);
        // type 3: a new message with the same delta.
        input.extend([0xC4, b'h', b'i']);
        // csid 320 (two-byte form), type 0.
        input.extend([0x01, 0x00, 0x01, 0, 0, 7, 0, 0, 1, 18, 0, 0, 0, 0, b'z']);
        let messages = read_all(&input, 1, &mut ChunkReader::new(100));
        let summary: Vec<_> = messages
            .iter()
            .map(|m| (m.csid, m.timestamp, m.type_id, m.payload.clone()))
            .collect();
        assert_eq!(
            summary,
            [
                (4, 1000, 9, b"abc".to_vec()),
                (4, 1040, 8, b"de".to_vec()),
                (4, 1060, 8, b"fg".to_vec()),
                (4, 1080, 8, b"hi".to_vec()),
                (320, 7, 18, b"z".to_vec()),
            ]
        );
    }

    #[test]
    fn abort_drops_a_partial_message() {
        let writer = ChunkWriter::default();
        let mut out = Vec::new();
        writer.write(5, 0, 9, 1, &[7; 200], &mut out);
        let mut reader = ChunkReader::new(1000);
        reader.push(&out[..12 + 128]);
        assert_eq!(reader.next_message().unwrap(), None);
        assert_eq!(reader.buffered(), 128);
        reader.abort(5);
        assert_eq!(reader.buffered(), 0);
    }

    #[test]
    fn bad_input_is_refused() {
        let mut reader = ChunkReader::new(1000);
        reader.push(&[0xC3, 1, 2]);
        assert_eq!(reader.next_message(), Err(ChunkError::NoPreviousHeader(3)));

        let mut reader = ChunkReader::new(1000);
        reader.push(&[0x03, 0, 0, 0, 0xFF, 0xFF, 0xFF, 9, 0, 0, 0, 0]);
        assert!(matches!(
            reader.next_message(),
            Err(ChunkError::MessageTooLong {
                length: 0xFF_FFFF,
                ..
            })
        ));

        let mut reader = ChunkReader::new(1000);
        assert_eq!(reader.set_chunk_size(0), Err(ChunkError::BadChunkSize(0)));
        assert_eq!(
            reader.set_chunk_size(0x0100_0000),
            Err(ChunkError::BadChunkSize(0x0100_0000))
        );

        let mut reader = ChunkReader::new(10);
        reader.set_chunk_size(5).unwrap();
        let mut input = Vec::new();
        for csid in 3..8u8 {
            // Half of a 10-byte message on each stream: the fifth passes the limit of 20.
            input.extend([csid, 0, 0, 0, 0, 0, 10, 9, 0, 0, 0, 0]);
            input.extend([0; 5]);
        }
        reader.push(&input);
        assert_eq!(reader.next_message(), Err(ChunkError::TooMuchPending(20)));

        let mut reader = ChunkReader::new(10);
        let mut input = Vec::new();
        for csid in 0..=MAX_CHUNK_STREAMS as u8 {
            input.extend([0, csid, 0, 0, 0, 0, 0, 0, 9, 0, 0, 0, 0]);
        }
        reader.push(&input);
        let mut outcome = Ok(None);
        for _ in 0..=MAX_CHUNK_STREAMS {
            outcome = reader.next_message();
            if outcome.is_err() {
                break;
            }
        }
        assert_eq!(outcome, Err(ChunkError::TooManyChunkStreams));
    }
}

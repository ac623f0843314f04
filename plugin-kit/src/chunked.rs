//! Incremental decoder for the HTTP/1.1 chunked transfer coding (RFC 9112 §7.1).
//!
//! An encoder such as ffmpeg pushes an endless MPEG-TS stream as chunks, and an origin may
//! answer a pull the same way. The decoder takes the
//! bytes exactly as they arrive — split anywhere, even inside a chunk-size line or a CRLF — and
//! hands back the payload as slices of the caller's input, so media is passed on without
//! copying or buffering. It is strict where leniency has caused request-smuggling bugs in other
//! servers: sizes are plain hex digits, framing lines must end in CRLF, and sizes that overflow
//! 64 bits are errors. Chunk extensions are skipped and trailer fields are read and discarded.

use thiserror::Error;

use crate::hex_value;

/// Longest chunk-size line (digits, whitespace and extensions) accepted.
const MAX_SIZE_LINE: usize = 4096;
/// Most bytes of trailer fields accepted after the last chunk.
const MAX_TRAILER: usize = 16 * 1024;

/// Why a chunked body is malformed. The connection cannot be resynchronised after any of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
pub enum ChunkedError {
    /// A chunk-size line without digits, or with a byte that is not a hex digit.
    #[error("invalid chunk size")]
    BadSize,
    /// The chunk size does not fit in 64 bits.
    #[error("chunk size too large")]
    SizeOverflow,
    /// A chunk-size line, chunk extension or trailer section longer than the limit.
    #[error("chunk-size line or trailer section too long")]
    LineTooLong,
    /// A framing line not ended by CRLF, or chunk data not followed by CRLF.
    #[error("chunk framing not terminated by CRLF")]
    BadLineEnd,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// At the start of a chunk-size line: at least one hex digit must follow.
    SizeStart,
    /// Inside the hex digits.
    Size,
    /// Whitespace after the digits; only `;` (an extension) may follow it.
    SizeWhitespace,
    /// Inside chunk extensions, which are skipped up to the CR.
    Extension,
    /// Expecting the LF of the chunk-size line.
    SizeLf,
    /// `remaining` payload bytes of the current chunk are still to come.
    Data,
    /// Expecting the CR after chunk data.
    DataCr,
    /// Expecting the LF after chunk data.
    DataLf,
    /// At the start of a trailer line, or of the final empty line.
    TrailerStart,
    /// Inside a trailer field line, which is discarded.
    TrailerLine,
    /// Expecting the LF of a trailer line.
    TrailerLineLf,
    /// Expecting the LF of the final empty line.
    EndLf,
    /// The last chunk and trailer section have been read.
    Done,
}

/// What one call to [`ChunkedDecoder::decode`] did.
#[derive(Debug, PartialEq, Eq)]
pub struct Decoded<'a> {
    /// Bytes of the input used, framing and payload alike.
    pub consumed: usize,
    /// Payload found in those bytes (a slice of the input; may be empty).
    pub data: &'a [u8],
}

/// State of one chunked body being decoded.
#[derive(Clone, Debug)]
pub struct ChunkedDecoder {
    state: State,
    /// Size of the chunk being read (while parsing its size line), then payload left in it.
    remaining: u64,
    /// Bytes of the current size line, or of the trailer section so far.
    line_len: usize,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl ChunkedDecoder {
    pub fn new() -> Self {
        Self {
            state: State::SizeStart,
            remaining: 0,
            line_len: 0,
        }
    }

    /// Whether the whole body, including the trailer section, has been read.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Decode from `input` until payload is found, the input runs out or the body ends.
    ///
    /// Returns at most one contiguous piece of payload per call, so callers loop while input
    /// remains and the body is not done. Input after the end of the body is not consumed.
    pub fn decode<'a>(&mut self, input: &'a [u8]) -> Result<Decoded<'a>, ChunkedError> {
        let mut pos = 0;
        while pos < input.len() {
            if self.state == State::Data {
                let available = input.len() - pos;
                let take = usize::try_from(self.remaining).map_or(available, |r| r.min(available));
                self.remaining -= take as u64;
                if self.remaining == 0 {
                    self.state = State::DataCr;
                }
                return Ok(Decoded {
                    consumed: pos + take,
                    data: &input[pos..pos + take],
                });
            }
            if self.state == State::Done {
                break;
            }
            self.step(input[pos])?;
            pos += 1;
        }
        Ok(Decoded {
            consumed: pos,
            data: &[],
        })
    }

    /// Advance over one framing byte.
    fn step(&mut self, byte: u8) -> Result<(), ChunkedError> {
        match self.state {
            State::SizeStart | State::Size | State::SizeWhitespace | State::Extension => {
                self.line_len += 1;
                if self.line_len > MAX_SIZE_LINE {
                    return Err(ChunkedError::LineTooLong);
                }
            }
            State::TrailerStart | State::TrailerLine => {
                self.line_len += 1;
                if self.line_len > MAX_TRAILER {
                    return Err(ChunkedError::LineTooLong);
                }
            }
            _ => {}
        }
        self.state = match (self.state, byte) {
            (State::SizeStart | State::Size, b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F') => {
                let digit = u64::from(hex_value(byte));
                self.remaining = self
                    .remaining
                    .checked_mul(16)
                    .and_then(|size| size.checked_add(digit))
                    .ok_or(ChunkedError::SizeOverflow)?;
                State::Size
            }
            (State::SizeStart, _) => return Err(ChunkedError::BadSize),
            (State::Size | State::SizeWhitespace, b' ' | b'\t') => State::SizeWhitespace,
            (State::Size | State::SizeWhitespace, b';') => State::Extension,
            (State::Size, b'\r') => State::SizeLf,
            (State::Size | State::SizeWhitespace, _) => return Err(ChunkedError::BadSize),
            (State::Extension, b'\r') => State::SizeLf,
            (State::Extension, b'\n') => return Err(ChunkedError::BadLineEnd),
            (State::Extension, _) => State::Extension,
            (State::SizeLf, b'\n') => {
                self.line_len = 0;
                if self.remaining == 0 {
                    State::TrailerStart
                } else {
                    State::Data
                }
            }
            (State::DataCr, b'\r') => State::DataLf,
            (State::DataLf, b'\n') => State::SizeStart,
            (State::TrailerStart, b'\r') => State::EndLf,
            (State::TrailerStart | State::TrailerLine, b'\n') => {
                return Err(ChunkedError::BadLineEnd)
            }
            (State::TrailerLine, b'\r') => State::TrailerLineLf,
            (State::TrailerStart | State::TrailerLine, _) => State::TrailerLine,
            (State::TrailerLineLf, b'\n') => State::TrailerStart,
            (State::EndLf, b'\n') => State::Done,
            (
                State::SizeLf | State::DataCr | State::DataLf | State::TrailerLineLf | State::EndLf,
                _,
            ) => return Err(ChunkedError::BadLineEnd),
            (State::Data | State::Done, _) => unreachable!("handled by decode"),
        };
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decode `input` delivered in pieces of `piece` bytes; returns payload, whether the body
    /// ended, and the bytes left unconsumed after its end.
    fn decode_in_pieces(
        input: &[u8],
        piece: usize,
    ) -> Result<(Vec<u8>, bool, usize), ChunkedError> {
        let mut decoder = ChunkedDecoder::new();
        let mut payload = Vec::new();
        let mut left_over = 0;
        for mut part in input.chunks(piece) {
            while !part.is_empty() && !decoder.is_done() {
                let decoded = decoder.decode(part)?;
                payload.extend_from_slice(decoded.data);
                part = &part[decoded.consumed..];
            }
            left_over += part.len();
        }
        Ok((payload, decoder.is_done(), left_over))
    }

    fn decode_all(input: &[u8]) -> Result<(Vec<u8>, bool, usize), ChunkedError> {
        decode_in_pieces(input, input.len().max(1))
    }

    #[test]
    fn decodes_simple_body() {
        let (data, done, rest) = decode_all(b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n").unwrap();
        assert_eq!(data, b"hello world");
        assert!(done);
        assert_eq!(rest, 0);
    }

    #[test]
    fn every_split_gives_the_same_payload() {
        let body = b"4\r\nWiki\r\n13;name=\"va;l\"\r\npedia in\r\n\r\nchunks.\r\n0\r\nExpires: never\r\n\r\n";
        for piece in 1..body.len() {
            let (data, done, rest) = decode_in_pieces(body, piece).unwrap();
            assert_eq!(data, b"Wikipedia in\r\n\r\nchunks.", "piece size {piece}");
            assert!(done, "piece size {piece}");
            assert_eq!(rest, 0);
        }
    }

    #[test]
    fn upper_and_lower_case_hex_and_leading_zeros() {
        let mut body = b"0000A\r\n".to_vec();
        body.extend_from_slice(&[b'x'; 10]);
        body.extend_from_slice(b"\r\n1a\r\n");
        body.extend_from_slice(&[b'y'; 26]);
        body.extend_from_slice(b"\r\n0\r\n\r\n");
        let (data, done, _) = decode_all(&body).unwrap();
        assert_eq!(data.len(), 36);
        assert!(data[..10].iter().all(|&b| b == b'x'));
        assert!(done);
    }

    #[test]
    fn extensions_with_whitespace_before_semicolon_are_skipped() {
        let (data, done, _) = decode_all(b"3 ;ext=1\r\nabc\r\n0;last\r\n\r\n").unwrap();
        assert_eq!(data, b"abc");
        assert!(done);
    }

    #[test]
    fn trailers_are_consumed_and_bytes_after_the_body_are_left() {
        let (data, done, rest) =
            decode_all(b"2\r\nok\r\n0\r\nX-A: 1\r\nX-B: 2\r\n\r\nGET / HTTP/1.1\r\n").unwrap();
        assert_eq!(data, b"ok");
        assert!(done);
        assert_eq!(rest, b"GET / HTTP/1.1\r\n".len());
    }

    #[test]
    fn incomplete_body_is_not_done() {
        let (data, done, _) = decode_all(b"5\r\nhel").unwrap();
        assert_eq!(data, b"hel");
        assert!(!done);
        let (_, done, _) = decode_all(b"0\r\n\r").unwrap();
        assert!(!done);
    }

    #[test]
    fn rejects_non_hex_sizes() {
        for bad in [
            &b"\r\n"[..],
            b"x\r\n",
            b"0x5\r\nhello\r\n",
            b"+5\r\nhello\r\n",
            b"-1\r\n",
            b" 5\r\nhello\r\n",
            b"5 5\r\n",
            b"5 \r\nhello\r\n",
        ] {
            assert_eq!(
                decode_all(bad),
                Err(ChunkedError::BadSize),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn rejects_size_overflow() {
        assert_eq!(
            decode_all(b"10000000000000000\r\n"),
            Err(ChunkedError::SizeOverflow)
        );
        // Sixteen digits still fit.
        let (data, done, _) = decode_all(b"000000000000000000000001\r\nz").unwrap();
        assert_eq!((data.as_slice(), done), (&b"z"[..], false));
        let mut decoder = ChunkedDecoder::new();
        assert!(decoder.decode(b"FFFFFFFFFFFFFFFF\r\n").is_ok());
    }

    #[test]
    fn rejects_bare_lf_and_missing_crlf_after_data() {
        assert_eq!(decode_all(b"5\nhello\r\n"), Err(ChunkedError::BadSize));
        assert_eq!(decode_all(b"5\r\rhello"), Err(ChunkedError::BadLineEnd));
        assert_eq!(
            decode_all(b"5\r\nhelloX\r\n"),
            Err(ChunkedError::BadLineEnd)
        );
        assert_eq!(decode_all(b"5\r\nhello\r\r"), Err(ChunkedError::BadLineEnd));
        assert_eq!(decode_all(b"5;a\nhello"), Err(ChunkedError::BadLineEnd));
        assert_eq!(decode_all(b"0\r\n\n"), Err(ChunkedError::BadLineEnd));
        assert_eq!(decode_all(b"0\r\nX: y\n"), Err(ChunkedError::BadLineEnd));
        assert_eq!(decode_all(b"0\r\n\rX"), Err(ChunkedError::BadLineEnd));
    }

    #[test]
    fn rejects_endless_extension_and_trailer() {
        let mut line = b"1;".to_vec();
        line.extend_from_slice(&[b'a'; MAX_SIZE_LINE]);
        assert_eq!(decode_all(&line), Err(ChunkedError::LineTooLong));
        let mut trailer = b"0\r\n".to_vec();
        for _ in 0..2000 {
            trailer.extend_from_slice(b"X-Padding: 1234\r\n");
        }
        assert_eq!(decode_all(&trailer), Err(ChunkedError::LineTooLong));
    }

    #[test]
    fn large_chunk_streams_through_without_buffering() {
        let mut decoder = ChunkedDecoder::new();
        assert_eq!(decoder.decode(b"100000\r\n").unwrap().data, b"");
        let block = vec![0x47u8; 4096];
        let mut total = 0;
        for _ in 0..256 {
            let decoded = decoder.decode(&block).unwrap();
            assert_eq!(decoded.consumed, block.len());
            total += decoded.data.len();
        }
        assert_eq!(total, 0x100000);
        let end = decoder.decode(b"\r\n0\r\n\r\nnext").unwrap();
        assert_eq!((end.consumed, end.data), (7, &b""[..]));
        assert!(decoder.is_done());
    }
}

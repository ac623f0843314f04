//! HTTP/1.x response heads, as a client (the server's pull source, say) reads them.
//!
//! [`ResponseReader`] collects the bytes of a response as they arrive and yields its head once
//! complete, leaving the start of the body buffered. The head is framed by exactly the rules
//! the HTTP plugin applies to requests ([`crate::framing`]), so a body that the plugin would
//! refuse from an encoder is refused from an origin too.

use thiserror::Error;

use crate::framing::{Framing, FramingError, FramingFields};
use crate::head::{HeadBuffer, HeadError};

/// Most header fields in one response. More than this is treated like an oversized head.
pub const MAX_HEADERS: usize = 64;

/// A parsed response head.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResponseHead {
    pub status: u16,
    pub reason: String,
    /// `0` for HTTP/1.0, `1` for HTTP/1.1.
    pub minor_version: u8,
    pub framing: Framing,
}

/// Why a response head is refused.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum ResponseError {
    #[error("the response head is too large")]
    TooLarge,
    #[error("the response is not HTTP: {0}")]
    Malformed(httparse::Error),
    #[error("a non-UTF-8 value in the response's {0} field")]
    NotUtf8(String),
    #[error("the response's framing is refused: {0}")]
    Framing(#[from] FramingError),
}

/// Accumulates a response and splits its head off the front.
#[derive(Clone, Debug)]
pub struct ResponseReader {
    input: HeadBuffer,
}

impl ResponseReader {
    /// A reader refusing heads longer than `max_head` bytes.
    pub fn new(max_head: usize) -> Self {
        Self {
            input: HeadBuffer::new(max_head),
        }
    }

    pub fn push(&mut self, data: &[u8]) {
        self.input.push(data);
    }

    /// The response head, removed from the buffer; `Ok(None)` until it is complete.
    pub fn next_head(&mut self) -> Result<Option<ResponseHead>, ResponseError> {
        self.input.next_head(parse).map_err(|error| match error {
            HeadError::TooLarge => ResponseError::TooLarge,
            HeadError::Parse(error) => error,
        })
    }

    /// Everything buffered after the head: the start of the body.
    pub fn take(&mut self) -> Vec<u8> {
        self.input.take()
    }
}

fn parse(head: &[u8]) -> Result<Option<(ResponseHead, usize)>, ResponseError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Response::new(&mut headers);
    let used = match parsed.parse(head) {
        Ok(httparse::Status::Complete(used)) => used,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(ResponseError::TooLarge),
        Err(error) => return Err(ResponseError::Malformed(error)),
    };
    let minor_version = parsed.version.unwrap_or(1);
    let mut fields = FramingFields::new();
    for header in parsed.headers.iter() {
        if FramingFields::is_framing(header.name) {
            let value = std::str::from_utf8(header.value)
                .map_err(|_| ResponseError::NotUtf8(header.name.to_owned()))?;
            fields.add(header.name, value.trim())?;
        }
    }
    let response = ResponseHead {
        status: parsed.code.unwrap_or(0),
        reason: parsed.reason.unwrap_or_default().to_owned(),
        minor_version,
        framing: fields.framing(minor_version)?,
    };
    Ok(Some((response, used)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(bytes: &[u8]) -> Result<Option<ResponseHead>, ResponseError> {
        let mut reader = ResponseReader::new(1024);
        reader.push(bytes);
        reader.next_head()
    }

    #[test]
    fn reads_a_head_in_any_split_and_keeps_the_body() {
        let response = b"HTTP/1.1 200 OK\r\nContent-Type: video/mp2t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n";
        for piece in 1..response.len() {
            let mut reader = ResponseReader::new(1024);
            let mut head = None;
            for part in response.chunks(piece) {
                reader.push(part);
                if head.is_none() {
                    head = reader.next_head().unwrap();
                }
            }
            let head = head.expect("complete head");
            assert_eq!((head.status, head.reason.as_str()), (200, "OK"));
            assert_eq!(head.framing, Framing::Chunked);
            assert_eq!(reader.take(), b"5\r\n", "piece {piece}");
        }
    }

    #[test]
    fn framing_of_responses() {
        let head = read(b"HTTP/1.0 200 OK\r\n\r\n").unwrap().unwrap();
        assert_eq!((head.minor_version, head.framing), (0, Framing::None));
        let head = read(b"HTTP/1.1 404 Not Found\nContent-Length: 9\n\n")
            .unwrap()
            .unwrap();
        assert_eq!((head.status, head.framing), (404, Framing::Length(9)));
        assert_eq!(
            read(b"HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\n"),
            Err(ResponseError::Framing(FramingError::InvalidLength(
                "+5".into()
            )))
        );
        assert_eq!(
            read(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n"),
            Err(ResponseError::Framing(FramingError::ChunkedNotLast))
        );
        assert_eq!(
            read(b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Err(ResponseError::Framing(FramingError::EncodingInHttp10))
        );
        assert_eq!(
            read(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Err(ResponseError::Framing(FramingError::LengthAndEncoding))
        );
    }

    #[test]
    fn refusals() {
        assert!(matches!(
            read(b"RTSP/1.0 200 OK\r\n\r\n"),
            Err(ResponseError::Malformed(_))
        ));
        assert!(matches!(
            read(b"\x16\x03\x01\x02\x00\r\n\r\n"),
            Err(ResponseError::Malformed(_))
        ));
        let mut long = b"HTTP/1.1 200 OK\r\nX-Pad: ".to_vec();
        long.extend_from_slice(&[b'a'; 1024]);
        assert_eq!(read(&long), Err(ResponseError::TooLarge));
        let mut many = b"HTTP/1.1 200 OK\r\n".to_vec();
        for i in 0..=MAX_HEADERS {
            many.extend_from_slice(format!("X-{i}: 1\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        let mut reader = ResponseReader::new(4096);
        reader.push(&many);
        assert_eq!(reader.next_head(), Err(ResponseError::TooLarge));
        assert_eq!(read(b"HTTP/1.1 200 OK\r\n"), Ok(None));
    }
}

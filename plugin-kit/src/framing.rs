//! HTTP/1.x message framing: how a body is delimited (RFC 9112 §6), and decoding it.
//!
//! [`FramingFields`] collects the `Content-Length` and `Transfer-Encoding` fields of a head and
//! decides the [`Framing`], refusing every ambiguity that request smuggling feeds on: both
//! fields at once, conflicting lengths, lengths that are not plain digits, `chunked` applied
//! twice or not last, and transfer codings in HTTP/1.0. [`BodyDecoder`] then delimits the
//! body as its bytes arrive, with the strict [`ChunkedDecoder`] for chunked bodies. Requests
//! (the HTTP plugin) and responses (the pull client) are framed by the same rules.

use thiserror::Error;

use crate::chunked::{ChunkedDecoder, ChunkedError};
use crate::head;

/// How a message's body is delimited (RFC 9112 §6.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// Neither `Content-Length` nor `Transfer-Encoding`: no body for a request, a body up to
    /// the end of the connection for a response.
    None,
    /// `Content-Length: n`.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// Why a head's framing fields are refused.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum FramingError {
    #[error("invalid Content-Length `{0}`")]
    InvalidLength(String),
    #[error("Content-Length `{0}` too large")]
    LengthTooLarge(String),
    #[error("conflicting Content-Length")]
    ConflictingLength,
    /// Both fields is how request smuggling starts; refused rather than picking one.
    #[error("both Content-Length and Transfer-Encoding")]
    LengthAndEncoding,
    /// HTTP/1.0 has no transfer codings, so the framing cannot be trusted (RFC 9112 §6.1).
    #[error("Transfer-Encoding in an HTTP/1.0 message")]
    EncodingInHttp10,
    #[error("Transfer-Encoding must end with chunked")]
    ChunkedNotLast,
    #[error("chunked applied twice")]
    ChunkedTwice,
    /// A transfer coding other than `chunked` (RFC 9112 §6.1).
    #[error("unsupported transfer coding `{0}`; use chunked")]
    UnsupportedCoding(String),
}

/// The framing fields of one head, collected field by field.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FramingFields {
    length: Option<u64>,
    /// Transfer codings in order, lower-cased.
    codings: Vec<String>,
}

impl FramingFields {
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether a field named `name` bears on framing (and so belongs in [`FramingFields::add`]).
    pub fn is_framing(name: &str) -> bool {
        name.eq_ignore_ascii_case("content-length")
            || name.eq_ignore_ascii_case("transfer-encoding")
    }

    /// Take note of a field; fields other than the framing ones are ignored.
    pub fn add(&mut self, name: &str, value: &str) -> Result<(), FramingError> {
        if name.eq_ignore_ascii_case("content-length") {
            // Repeats or a list of one identical value are tolerated (RFC 9112 §6.3, item 5).
            for item in value.split(',').map(str::trim) {
                let length = parse_length(item)?;
                if self.length.is_some_and(|known| known != length) {
                    return Err(FramingError::ConflictingLength);
                }
                self.length = Some(length);
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            self.codings
                .extend(head::list(value).map(str::to_ascii_lowercase));
        }
        Ok(())
    }

    /// The body framing of a message of HTTP/1.`minor_version` with these fields.
    pub fn framing(&self, minor_version: u8) -> Result<Framing, FramingError> {
        if self.codings.is_empty() {
            return Ok(self.length.map_or(Framing::None, Framing::Length));
        }
        if self.length.is_some() {
            return Err(FramingError::LengthAndEncoding);
        }
        if minor_version == 0 {
            return Err(FramingError::EncodingInHttp10);
        }
        if self.codings.last().map(String::as_str) != Some("chunked") {
            return Err(FramingError::ChunkedNotLast);
        }
        match self.codings.iter().find(|coding| *coding != "chunked") {
            Some(other) => Err(FramingError::UnsupportedCoding(other.clone())),
            None if self.codings.len() > 1 => Err(FramingError::ChunkedTwice),
            None => Ok(Framing::Chunked),
        }
    }
}

/// A `Content-Length` value: decimal digits only (no sign, no spaces, no hex).
fn parse_length(text: &str) -> Result<u64, FramingError> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(FramingError::InvalidLength(text.to_owned()));
    }
    text.parse()
        .map_err(|_| FramingError::LengthTooLarge(text.to_owned()))
}

/// Delimits a body as its bytes arrive.
#[derive(Clone, Debug)]
pub enum BodyDecoder {
    /// `Content-Length`: bytes still to come.
    Length(u64),
    Chunked(ChunkedDecoder),
    /// No framing fields: the body ends when the peer closes the connection.
    UntilClose,
}

/// Why feeding a body failed.
#[derive(Debug, PartialEq, Eq)]
pub enum FeedError<E> {
    /// The chunked framing is malformed; the stream cannot be resynchronised.
    Chunked(ChunkedError),
    /// The sink refused a piece of payload.
    Sink(E),
}

impl BodyDecoder {
    pub fn new(framing: Framing) -> Self {
        match framing {
            Framing::None => Self::UntilClose,
            Framing::Length(length) => Self::Length(length),
            Framing::Chunked => Self::Chunked(ChunkedDecoder::new()),
        }
    }

    /// The whole body has been read (never for a body delimited by closing).
    pub fn is_done(&self) -> bool {
        match self {
            Self::Length(remaining) => *remaining == 0,
            Self::Chunked(decoder) => decoder.is_done(),
            Self::UntilClose => false,
        }
    }

    /// The body ends only when the peer closes the connection.
    pub fn is_until_close(&self) -> bool {
        matches!(self, Self::UntilClose)
    }

    /// Decode `input`, handing each non-empty piece of payload to `sink`, until the input runs
    /// out or the body ends. Returns whether the body has ended; input after its end is
    /// ignored.
    pub fn feed<E>(
        &mut self,
        mut input: &[u8],
        mut sink: impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<bool, FeedError<E>> {
        while !input.is_empty() && !self.is_done() {
            let (consumed, data) = match self {
                Self::UntilClose => (input.len(), input),
                Self::Length(remaining) => {
                    let take =
                        usize::try_from(*remaining).map_or(input.len(), |r| r.min(input.len()));
                    *remaining -= take as u64;
                    (take, &input[..take])
                }
                Self::Chunked(decoder) => {
                    let decoded = decoder.decode(input).map_err(FeedError::Chunked)?;
                    (decoded.consumed, decoded.data)
                }
            };
            input = &input[consumed..];
            if !data.is_empty() {
                sink(data).map_err(FeedError::Sink)?;
            }
        }
        Ok(self.is_done())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framing(fields: &[(&str, &str)], minor_version: u8) -> Result<Framing, FramingError> {
        let mut collected = FramingFields::new();
        for (name, value) in fields {
            collected.add(name, value)?;
        }
        collected.framing(minor_version)
    }

    #[test]
    fn framing_rules() {
        assert_eq!(framing(&[], 1), Ok(Framing::None));
        assert_eq!(framing(&[("Host", "x")], 1), Ok(Framing::None));
        assert_eq!(
            framing(&[("Content-Length", "42")], 0),
            Ok(Framing::Length(42))
        );
        assert_eq!(
            framing(&[("content-length", "42"), ("Content-Length", "42, 42")], 1),
            Ok(Framing::Length(42))
        );
        assert_eq!(
            framing(&[("Transfer-Encoding", "Chunked")], 1),
            Ok(Framing::Chunked)
        );
        let refused = [
            (
                &[("Content-Length", "42"), ("Content-Length", "43")][..],
                FramingError::ConflictingLength,
            ),
            (
                &[("Content-Length", "+5")],
                FramingError::InvalidLength("+5".into()),
            ),
            (
                &[("Content-Length", "-1")],
                FramingError::InvalidLength("-1".into()),
            ),
            (
                &[("Content-Length", "")],
                FramingError::InvalidLength(String::new()),
            ),
            (
                &[("Content-Length", "0x10")],
                FramingError::InvalidLength("0x10".into()),
            ),
            (
                &[("Content-Length", "99999999999999999999999")],
                FramingError::LengthTooLarge("99999999999999999999999".into()),
            ),
            (
                &[("Content-Length", "5"), ("Transfer-Encoding", "chunked")],
                FramingError::LengthAndEncoding,
            ),
            (
                &[("Transfer-Encoding", "chunked, identity")],
                FramingError::ChunkedNotLast,
            ),
            (
                &[
                    ("Transfer-Encoding", "chunked"),
                    ("Transfer-Encoding", "chunked"),
                ],
                FramingError::ChunkedTwice,
            ),
            (
                &[("Transfer-Encoding", "gzip, chunked")],
                FramingError::UnsupportedCoding("gzip".into()),
            ),
        ];
        for (fields, error) in refused {
            assert_eq!(framing(fields, 1), Err(error), "{fields:?}");
        }
        assert_eq!(
            framing(&[("Transfer-Encoding", "chunked")], 0),
            Err(FramingError::EncodingInHttp10)
        );
        assert!(FramingFields::is_framing("TRANSFER-ENCODING"));
        assert!(!FramingFields::is_framing("Connection"));
    }

    fn feed_all(decoder: &mut BodyDecoder, input: &[u8], piece: usize) -> (Vec<u8>, bool) {
        let mut out = Vec::new();
        let mut done = false;
        for part in input.chunks(piece) {
            done = decoder
                .feed(part, |data| {
                    out.extend_from_slice(data);
                    Ok::<(), ()>(())
                })
                .unwrap();
        }
        (out, done)
    }

    #[test]
    fn bodies_by_framing() {
        let mut length = BodyDecoder::new(Framing::Length(4));
        assert_eq!(
            feed_all(&mut length, b"abcdef", 3),
            (b"abcd".to_vec(), true)
        );
        let mut empty = BodyDecoder::new(Framing::Length(0));
        assert!(empty.is_done());
        let mut close = BodyDecoder::new(Framing::None);
        assert!(close.is_until_close());
        assert_eq!(
            feed_all(&mut close, b"abcdef", 4),
            (b"abcdef".to_vec(), false)
        );
        let body = b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\nnext";
        for piece in [1, 2, 3, 7, body.len()] {
            let mut chunked = BodyDecoder::new(Framing::Chunked);
            assert_eq!(
                feed_all(&mut chunked, body, piece),
                (b"hello world".to_vec(), true)
            );
        }
        assert_eq!(empty.feed(b"x", |_| Err(())), Ok(true));
    }

    #[test]
    fn feed_errors_name_their_side() {
        let mut chunked = BodyDecoder::new(Framing::Chunked);
        assert_eq!(
            chunked.feed(b"+5\r\nhello\r\n", |_| Ok::<(), ()>(())),
            Err(FeedError::Chunked(ChunkedError::BadSize))
        );
        let mut close = BodyDecoder::new(Framing::None);
        assert_eq!(
            close.feed(b"x", |_| Err("full")),
            Err(FeedError::Sink("full"))
        );
    }
}

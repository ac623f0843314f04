//! Finding where a message head ends, and looking up its header fields.
//!
//! HTTP/1.x and RTSP/1.0 messages start with a head: a start line and header fields, ended by
//! a blank line. Bytes arrive in pieces, so [`HeadScanner`] remembers how far it has already
//! searched: a head trickling in one byte at a time costs linear time, not quadratic. Like
//! httparse and most servers, a bare LF is accepted as a line end in the head (the strictness
//! that matters for request smuggling lives in body framing, see [`crate::framing`]).

/// End (exclusive) of the first blank line in `buf`: `\n\r\n` or `\n\n`.
pub fn find_head_end(buf: &[u8]) -> Option<usize> {
    let mut i = 0;
    while let Some(offset) = buf[i..].iter().position(|&b| b == b'\n') {
        let lf = i + offset;
        match buf.get(lf + 1) {
            Some(b'\n') => return Some(lf + 2),
            Some(b'\r') if buf.get(lf + 2) == Some(&b'\n') => return Some(lf + 3),
            _ => i = lf + 1,
        }
    }
    None
}

/// Searches a growing buffer for the end of the head at its front, looking only at bytes it
/// has not searched before.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HeadScanner {
    /// `buf[..searched]` holds no end of head.
    searched: usize,
}

impl HeadScanner {
    pub fn new() -> Self {
        Self::default()
    }

    /// The end (exclusive) of the head at the front of `buf`, if it is complete. Without one,
    /// the whole of `buf` counts as searched.
    pub fn scan(&mut self, buf: &[u8]) -> Option<usize> {
        // A terminator may straddle the previous search boundary: back up two bytes.
        // A buffer shorter than what was searched is a new one: search it all.
        let from = if self.searched > buf.len() {
            0
        } else {
            self.searched.saturating_sub(2)
        };
        match find_head_end(&buf[from..]) {
            Some(end) => Some(from + end),
            None => {
                self.searched = buf.len();
                None
            }
        }
    }

    /// How many bytes at the front of the buffer are known to hold no end of head.
    pub fn searched(&self) -> usize {
        self.searched
    }

    /// Mark `buf[..position]` as holding no end of head (a blank line that a parser skipped,
    /// say).
    pub fn skip_to(&mut self, position: usize) {
        self.searched = position;
    }

    /// Start over: the buffer's front changed (a head was taken off it, or it was cleared).
    pub fn reset(&mut self) {
        self.searched = 0;
    }
}

/// Why [`HeadBuffer::next_head`] failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HeadError<E> {
    /// The head is longer than the buffer's limit, with or without its end in sight.
    TooLarge,
    /// The head's parser refused it.
    Parse(E),
}

/// Input of a connection, from which complete heads are taken off the front. Whatever follows
/// a head (a body, pipelined messages) stays buffered. A head longer than the limit is
/// refused before more of it is buffered.
#[derive(Clone, Debug)]
pub struct HeadBuffer {
    buf: Vec<u8>,
    scanner: HeadScanner,
    max_head: usize,
}

impl HeadBuffer {
    /// A buffer refusing heads longer than `max_head` bytes.
    pub fn new(max_head: usize) -> Self {
        Self {
            buf: Vec::new(),
            scanner: HeadScanner::new(),
            max_head,
        }
    }

    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Bytes buffered and not yet taken.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Take everything buffered (the start of a body, say).
    pub fn take(&mut self) -> Vec<u8> {
        self.scanner.reset();
        std::mem::take(&mut self.buf)
    }

    pub fn clear(&mut self) {
        self.buf.clear();
        self.scanner.reset();
    }

    /// The next complete head, parsed by `parse` and removed from the buffer; `Ok(None)` until
    /// one is complete. `parse` gets the bytes through the blank line and answers the value and
    /// how many bytes it used, or `None` if they were only blank lines, which are dropped (RFC 9112
    /// §2.2 lets a server skip those before a head). After an error the buffer's contents are meaningless.
    pub fn next_head<T, E>(
        &mut self,
        mut parse: impl FnMut(&[u8]) -> Result<Option<(T, usize)>, E>,
    ) -> Result<Option<T>, HeadError<E>> {
        loop {
            let Some(end) = self.scanner.scan(&self.buf) else {
                return if self.buf.len() > self.max_head {
                    Err(HeadError::TooLarge)
                } else {
                    Ok(None)
                };
            };
            if end > self.max_head {
                return Err(HeadError::TooLarge);
            }
            match parse(&self.buf[..end]).map_err(HeadError::Parse)? {
                Some((value, used)) => {
                    self.buf.drain(..used);
                    self.scanner.reset();
                    return Ok(Some(value));
                }
                // Only blank lines so far: drop them, so that they are not scanned again.
                None => {
                    self.buf.drain(..end);
                    self.scanner.reset();
                }
            }
        }
    }
}

/// The value of the first field named `name` (case-insensitive) in `fields`.
pub fn header<'a, N, V>(fields: &'a [(N, V)], name: &str) -> Option<&'a str>
where
    N: AsRef<str>,
    V: AsRef<str>,
{
    fields
        .iter()
        .find(|(n, _)| n.as_ref().eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_ref())
}

/// Every value of the fields named `name` (case-insensitive), in order.
pub fn headers_named<'a, N, V>(
    fields: &'a [(N, V)],
    name: &'a str,
) -> impl Iterator<Item = &'a str> + 'a
where
    N: AsRef<str>,
    V: AsRef<str>,
{
    fields
        .iter()
        .filter(move |(n, _)| n.as_ref().eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_ref())
}

/// Non-empty, trimmed elements of a comma-separated header list (`Connection: TE, close`).
pub fn list(value: &str) -> impl Iterator<Item = &str> {
    value
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_ends_at_the_first_blank_line() {
        assert_eq!(find_head_end(b"GET / HTTP/1.1\r\n\r\nbody"), Some(18));
        assert_eq!(find_head_end(b"GET / HTTP/1.1\n\nbody"), Some(16));
        assert_eq!(find_head_end(b"GET / HTTP/1.1\nA: b\r\n\r\n"), Some(23));
        assert_eq!(find_head_end(b"GET / HTTP/1.1\r\nA: b\r\n"), None);
        assert_eq!(find_head_end(b"\r\n\r"), None);
        assert_eq!(find_head_end(b""), None);
    }

    #[test]
    fn scanner_finds_a_terminator_split_across_pushes() {
        let head = b"OPTIONS * RTSP/1.0\r\nCSeq: 1\r\n\r\nrest";
        for split in 1..head.len() {
            let mut scanner = HeadScanner::new();
            assert_eq!(scanner.scan(&head[..split]), find_head_end(&head[..split]));
            assert_eq!(scanner.scan(head), Some(head.len() - 4), "split {split}");
        }
    }

    #[test]
    fn scanner_remembers_and_forgets() {
        let mut scanner = HeadScanner::new();
        assert_eq!(scanner.scan(b"GET / HT"), None);
        assert_eq!(scanner.searched(), 8);
        scanner.skip_to(3);
        assert_eq!(scanner.searched(), 3);
        scanner.reset();
        assert_eq!(scanner.searched(), 0);
        // A shorter buffer after a reset does not index out of bounds.
        scanner.skip_to(100);
        assert_eq!(scanner.scan(b"\n\n"), Some(2));
    }

    /// A parser of heads made of one line, skipping blank lines.
    fn one_line(head: &[u8]) -> Result<Option<(String, usize)>, &'static str> {
        if head.iter().all(|b| b.is_ascii_whitespace()) {
            return Ok(None);
        }
        let text = std::str::from_utf8(head).map_err(|_| "not UTF-8")?;
        let start = text.len() - text.trim_start().len();
        Ok(Some((
            text.trim().to_owned(),
            start + text.trim_start().len(),
        )))
    }

    #[test]
    fn buffer_yields_heads_one_by_one_and_keeps_the_rest() {
        let mut buffer = HeadBuffer::new(64);
        buffer.push(b"\r\nA\r\n\r\nB\n\nC");
        assert_eq!(buffer.next_head(one_line), Ok(Some("A".to_owned())));
        assert_eq!(buffer.next_head(one_line), Ok(Some("B".to_owned())));
        assert_eq!(buffer.next_head(one_line), Ok(None));
        assert_eq!(buffer.buffered(), 1);
        let mut blank = HeadBuffer::new(64);
        blank.push(b"\n\n\n\n\r\n\r\n");
        assert_eq!(blank.next_head(one_line), Ok(None));
        assert!(blank.is_empty());
        assert_eq!(buffer.take(), b"C");
        assert!(buffer.is_empty());
        buffer.push(&[0xff, b'\n', b'\n']);
        assert_eq!(
            buffer.next_head(one_line),
            Err(HeadError::Parse("not UTF-8"))
        );
    }

    #[test]
    fn buffer_refuses_long_heads_with_and_without_an_end() {
        let mut buffer = HeadBuffer::new(8);
        buffer.push(b"123456789");
        assert_eq!(buffer.next_head(one_line), Err(HeadError::TooLarge));
        let mut buffer = HeadBuffer::new(8);
        buffer.push(b"1234567\n\n");
        assert_eq!(buffer.next_head(one_line), Err(HeadError::TooLarge));
        buffer.clear();
        buffer.push(b"123456\n\n");
        assert_eq!(buffer.next_head(one_line), Ok(Some("123456".to_owned())));
    }

    #[test]
    fn header_lookup_is_case_insensitive_and_ordered() {
        let fields = vec![
            ("CSeq".to_owned(), "1".to_owned()),
            ("Via".to_owned(), "a".to_owned()),
            ("via".to_owned(), "b".to_owned()),
        ];
        assert_eq!(header(&fields, "cseq"), Some("1"));
        assert_eq!(header(&fields, "Session"), None);
        assert_eq!(
            headers_named(&fields, "VIA").collect::<Vec<_>>(),
            ["a", "b"]
        );
        let fixed = [("Content-Length", String::from("10"))];
        assert_eq!(header(&fixed, "content-length"), Some("10"));
    }

    #[test]
    fn lists_skip_empty_elements() {
        assert_eq!(list(" TE, , close ,").collect::<Vec<_>>(), ["TE", "close"]);
        assert_eq!(list("").count(), 0);
    }
}

//! The `Range` request header (RFC 9110 §14), for seeking in on-demand files.
//!
//! Only the `bytes` unit exists. A header the server cannot understand is ignored — the client
//! then gets the whole file with `200`, as the RFC asks — while a well-formed set of ranges that
//! lies entirely outside the file is an error (`416`). One response carries one range: when a
//! client asks for several, it gets the first satisfiable one, which every client that asks for
//! several ranges must accept anyway (RFC 9110 §14.2 lets a server ignore or coalesce them).

use std::ops::Range;

/// A syntactically valid `Range` header none of whose ranges overlaps the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Unsatisfiable;

/// One `range-spec` of a `bytes=` header, before it meets the file size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Spec {
    /// `first-last`; `last` absent for `first-`.
    FromTo(u64, Option<u64>),
    /// `-suffix`: the last `suffix` bytes.
    Suffix(u64),
}

/// Resolve a `Range` header value against a file of `size` bytes.
///
/// - `Ok(None)`: ignore the header and send the whole file (`200`).
/// - `Ok(Some(range))`: send `range` (half-open, within the file) with `206`.
/// - `Err(Unsatisfiable)`: answer `416` with `Content-Range: bytes */size`.
pub fn resolve(header: &str, size: u64) -> Result<Option<Range<u64>>, Unsatisfiable> {
    let Some(specs) = parse(header) else {
        return Ok(None);
    };
    specs
        .into_iter()
        .find_map(|spec| satisfy(spec, size))
        .map(Some)
        .ok_or(Unsatisfiable)
}

/// `Content-Range` value of a `206` response for `range` of a file of `size` bytes.
pub fn content_range(range: &Range<u64>, size: u64) -> String {
    format!("bytes {}-{}/{}", range.start, range.end - 1, size)
}

/// `Content-Range` value of a `416` response.
pub fn unsatisfied_range(size: u64) -> String {
    format!("bytes */{size}")
}

/// Parse `bytes=spec, spec, …`; `None` when any part is not understood.
fn parse(header: &str) -> Option<Vec<Spec>> {
    let (unit, set) = header.trim().split_once('=')?;
    if !unit.trim().eq_ignore_ascii_case("bytes") {
        return None;
    }
    let mut specs = Vec::new();
    // Empty list elements (`bytes=0-1,,5-`) are allowed by the list syntax (RFC 9110 §5.6.1).
    for part in set
        .split(',')
        .map(str::trim)
        .filter(|part| !part.is_empty())
    {
        let (first, last) = part.split_once('-')?;
        let spec = if first.is_empty() {
            Spec::Suffix(number(last)?)
        } else {
            let first = number(first)?;
            let last = if last.is_empty() {
                None
            } else {
                Some(number(last)?)
            };
            if last.is_some_and(|last| last < first) {
                return None; // invalid, so the whole header is ignored (RFC 9110 §14.1.1)
            }
            Spec::FromTo(first, last)
        };
        specs.push(spec);
    }
    (!specs.is_empty()).then_some(specs)
}

/// Digits only; values beyond `u64` saturate, which is past the end of any file.
fn number(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(text.parse().unwrap_or(u64::MAX))
}

fn satisfy(spec: Spec, size: u64) -> Option<Range<u64>> {
    match spec {
        Spec::FromTo(first, _) if first >= size => None,
        Spec::FromTo(first, last) => {
            let end = last.map_or(size, |last| last.saturating_add(1).min(size));
            Some(first..end)
        }
        Spec::Suffix(0) => None,
        Spec::Suffix(_) if size == 0 => None,
        Spec::Suffix(suffix) => Some(size.saturating_sub(suffix)..size),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_and_last() {
        assert_eq!(resolve("bytes=100-199", 1000), Ok(Some(100..200)));
        assert_eq!(resolve("bytes=0-0", 1000), Ok(Some(0..1)));
        assert_eq!(resolve("bytes=999-999", 1000), Ok(Some(999..1000)));
    }

    #[test]
    fn last_beyond_the_end_is_clamped() {
        assert_eq!(resolve("bytes=500-5000", 1000), Ok(Some(500..1000)));
        assert_eq!(
            resolve("bytes=0-99999999999999999999999", 1000),
            Ok(Some(0..1000))
        );
    }

    #[test]
    fn open_ended() {
        assert_eq!(resolve("bytes=0-", 1000), Ok(Some(0..1000)));
        assert_eq!(resolve("bytes=640-", 1000), Ok(Some(640..1000)));
    }

    #[test]
    fn suffix() {
        assert_eq!(resolve("bytes=-100", 1000), Ok(Some(900..1000)));
        assert_eq!(resolve("bytes=-5000", 1000), Ok(Some(0..1000)));
        assert_eq!(resolve("bytes=-0", 1000), Err(Unsatisfiable));
        assert_eq!(resolve("bytes=-10", 0), Err(Unsatisfiable));
    }

    #[test]
    fn start_at_or_past_the_end_is_unsatisfiable() {
        assert_eq!(resolve("bytes=1000-", 1000), Err(Unsatisfiable));
        assert_eq!(resolve("bytes=1000-2000", 1000), Err(Unsatisfiable));
        assert_eq!(resolve("bytes=0-", 0), Err(Unsatisfiable));
        assert_eq!(
            resolve("bytes=99999999999999999999-", 1000),
            Err(Unsatisfiable)
        );
    }

    #[test]
    fn several_ranges_use_the_first_satisfiable_one() {
        assert_eq!(resolve("bytes=0-0,-1", 1000), Ok(Some(0..1)));
        assert_eq!(resolve("bytes=10-19, 30-39", 1000), Ok(Some(10..20)));
        assert_eq!(resolve("bytes=5000-,10-19", 1000), Ok(Some(10..20)));
        assert_eq!(resolve("bytes=5000-,6000-6001", 1000), Err(Unsatisfiable));
    }

    #[test]
    fn whitespace_case_and_empty_elements() {
        assert_eq!(resolve(" Bytes = 1-2 ", 1000), Ok(Some(1..3)));
        assert_eq!(resolve("bytes=,1-2,", 1000), Ok(Some(1..3)));
    }

    #[test]
    fn headers_not_understood_are_ignored() {
        for header in [
            "",
            "bytes",
            "bytes=",
            "bytes=,",
            "items=0-5",
            "bytes=5-1",
            "bytes=a-b",
            "bytes=1-2-3",
            "bytes=-",
            "bytes=+1-2",
            "bytes= 1 - 2",
            "bytes=0-1,x",
        ] {
            assert_eq!(resolve(header, 1000), Ok(None), "{header:?}");
        }
    }

    #[test]
    fn content_range_values() {
        assert_eq!(content_range(&(100..200), 1000), "bytes 100-199/1000");
        assert_eq!(content_range(&(0..1), 1), "bytes 0-0/1");
        assert_eq!(unsatisfied_range(1000), "bytes */1000");
    }
}

//! Request paths: percent-decoding and normalising into publishing-point paths.
//!
//! A client names a point as `/<point>` or `/<point>/<file>`, possibly percent-encoded. The
//! decoded path is split on `/` (an encoded `%2F` separates too), empty and `.` segments are
//! dropped, and `..` is refused outright rather than resolved, because no player needs it and
//! resolving it is how traversal bugs happen. Control characters and backslashes (a path
//! separator on some hosts) are refused for the same reason, as is a decoded path that is not
//! UTF-8. Percent-encoding must be `%` and exactly two hex digits: `%+1` is refused, although
//! `u8::from_str_radix` alone would accept it.

use thiserror::Error;

use crate::hex_value;

/// Why a request path is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
pub enum PathError {
    #[error("bad percent-encoding in the path")]
    BadPercentEncoding,
    #[error("the path is not UTF-8 after percent-decoding")]
    NotUtf8,
    #[error("a control character or backslash in the path")]
    ForbiddenCharacter,
    #[error("`..` in the path")]
    ParentSegment,
}

/// Decode `%XX` escapes in `raw`; other bytes pass through.
pub fn percent_decode(raw: &str) -> Result<Vec<u8>, PathError> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let pair = bytes
                .get(i + 1..i + 3)
                .filter(|pair| pair.iter().all(u8::is_ascii_hexdigit))
                .ok_or(PathError::BadPercentEncoding)?;
            out.push(hex_value(pair[0]) << 4 | hex_value(pair[1]));
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Ok(out)
}

/// Percent-decode `raw` (a path without query or fragment) and split it into normalised
/// segments.
pub fn path_segments(raw: &str) -> Result<Vec<String>, PathError> {
    let decoded = String::from_utf8(percent_decode(raw)?).map_err(|_| PathError::NotUtf8)?;
    if decoded.chars().any(|c| c.is_control() || c == '\\') {
        return Err(PathError::ForbiddenCharacter);
    }
    let mut segments = Vec::new();
    for segment in decoded.split('/') {
        match segment {
            "" | "." => {}
            ".." => return Err(PathError::ParentSegment),
            _ => segments.push(segment.to_owned()),
        }
    }
    Ok(segments)
}

/// Percent-decode `raw` and normalise it into `point/file` form: `""` for `/`.
pub fn normalise_path(raw: &str) -> Result<String, PathError> {
    Ok(path_segments(raw)?.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_and_normalises() {
        assert_eq!(normalise_path("/live").unwrap(), "live");
        assert_eq!(
            normalise_path("//vod/./my%20clip.ts/").unwrap(),
            "vod/my clip.ts"
        );
        assert_eq!(normalise_path("/vod%2Fclip.ts").unwrap(), "vod/clip.ts");
        assert_eq!(normalise_path("/caf%C3%A9").unwrap(), "café");
        assert_eq!(normalise_path("/").unwrap(), "");
        assert_eq!(normalise_path("").unwrap(), "");
        assert_eq!(path_segments("/a/%2e/b").unwrap(), ["a", "b"]);
    }

    #[test]
    fn percent_escapes_are_exactly_two_hex_digits() {
        assert_eq!(percent_decode("%41%6a%4A").unwrap(), b"AjJ");
        assert_eq!(percent_decode("100%25").unwrap(), b"100%");
        for bad in ["%", "%4", "%zz", "%+1", "%-1", "% 1", "a%g0"] {
            assert_eq!(
                percent_decode(bad),
                Err(PathError::BadPercentEncoding),
                "{bad}"
            );
        }
    }

    #[test]
    fn refusals() {
        for (bad, error) in [
            ("/vod/../etc/passwd", PathError::ParentSegment),
            ("/vod/%2e%2e/secret", PathError::ParentSegment),
            ("/vod/..%2fsecret", PathError::ParentSegment),
            ("/%zz", PathError::BadPercentEncoding),
            ("/%ff", PathError::NotUtf8),
            ("/a%00b", PathError::ForbiddenCharacter),
            ("/a%5cb", PathError::ForbiddenCharacter),
            ("/a\\b", PathError::ForbiddenCharacter),
        ] {
            assert_eq!(normalise_path(bad), Err(error), "{bad}");
        }
    }
}

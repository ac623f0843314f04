//! Request URLs: which publishing point (and track) a request is about.
//!
//! RTSP requests name absolute URLs (`rtsp://host:port/live`, RFC 2326 §3.2). This server's
//! SDP gives its single track the relative control URL `trackID=0`, so clients address it as
//! `rtsp://host:port/<point>/trackID=0`, and the aggregate (the whole presentation) as the
//! point's URL with or without a trailing slash. A path is percent-decoded and normalised by
//! the kit's [`path_segments`], as the HTTP plugin's: empty and `.` segments dropped, `..`,
//! control characters and backslashes refused, because resolving them is how traversal bugs
//! happen.

use ferrocast_plugin_kit::path::{path_segments, PathError};
use thiserror::Error;

/// Why a request URL is refused (answered with `400`).
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum UrlError {
    #[error("`{0}` is not an rtsp:// URL")]
    NotAbsolute(String),
    #[error("`{0}://` URLs are not served; use rtsp://")]
    Scheme(String),
    #[error("`{0}` has no host")]
    NoHost(String),
    #[error(transparent)]
    Path(#[from] PathError),
}

/// What a request URL designates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// `scheme://authority/path` without user information, query, trailing slash or
    /// `trackID` segment: the base of the presentation, as the client spelled it.
    pub base: String,
    /// The decoded, normalised publishing-point path: `point` or `point/file`; empty for `*`
    /// or a URL without a path.
    pub path: String,
    /// The `trackID=N` the URL ends with, if any (`u32::MAX` for a number too large).
    pub track: Option<u32>,
    /// The request URL was `*`.
    pub asterisk: bool,
}

impl Target {
    /// The URL for logs: the base, plus the track segment. Never carries credentials or a
    /// query string (which may hold a token).
    pub fn display(&self) -> String {
        match self.track {
            Some(track) => format!("{}/trackID={track}", self.base),
            None => self.base.clone(),
        }
    }

    /// The `Content-Base` of a DESCRIBE answer: the base with a trailing slash, so that the
    /// SDP's relative `trackID=0` resolves to `<base>/trackID=0`.
    pub fn content_base(&self) -> String {
        format!("{}/", self.base)
    }

    /// The control URL of track 0, as clients build it from [`Target::content_base`].
    pub fn track_url(&self) -> String {
        format!("{}/trackID=0", self.base)
    }
}

/// Parse a request URL. `local` (`ip:port` of the connection) stands in for the authority
/// when a client sends only an absolute path. On a `secure` (TLS) connection the base is
/// `rtsps://` whatever the client wrote, so the URLs it is given back stay on TLS.
pub fn parse(uri: &str, local: &str, secure: bool) -> Result<Target, UrlError> {
    let mut target = parse_as_written(uri, local)?;
    if secure {
        if let Some(rest) = target.base.strip_prefix("rtsp://") {
            target.base = format!("rtsps://{rest}");
        }
    }
    Ok(target)
}

fn parse_as_written(uri: &str, local: &str) -> Result<Target, UrlError> {
    if uri == "*" {
        return Ok(Target {
            base: String::new(),
            path: String::new(),
            track: None,
            asterisk: true,
        });
    }
    let (prefix, raw_path) = if uri.starts_with('/') {
        (format!("rtsp://{local}"), uri)
    } else {
        let (scheme, rest) = uri
            .split_once("://")
            .ok_or_else(|| UrlError::NotAbsolute(uri.to_owned()))?;
        let scheme = scheme.to_ascii_lowercase();
        if !matches!(scheme.as_str(), "rtsp" | "rtsps" | "rtspu") {
            return Err(UrlError::Scheme(scheme));
        }
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let authority = &rest[..end];
        // Credentials are the client's business, never echoed or logged.
        let host = authority
            .rsplit_once('@')
            .map_or(authority, |(_, host)| host);
        if host.is_empty() {
            return Err(UrlError::NoHost(uri.to_owned()));
        }
        (format!("{scheme}://{host}"), &rest[end..])
    };
    let raw_path = raw_path.split(['?', '#']).next().unwrap_or_default();
    let mut segments = path_segments(raw_path)?;
    let track = segments.last().and_then(|last| track_id(last));
    if track.is_some() {
        segments.pop();
    }
    let path = segments.join("/");
    // The base keeps the client's own spelling (percent-encoding included), less the track
    // segment and trailing slashes.
    let mut base_path = raw_path.trim_end_matches('/');
    if track.is_some() {
        base_path = base_path
            .rsplit_once('/')
            .map_or("", |(before, _)| before)
            .trim_end_matches('/');
    }
    Ok(Target {
        base: format!("{prefix}{base_path}"),
        path,
        track,
        asterisk: false,
    })
}

/// `trackID=N` (case-insensitive), as this server's SDP names its track.
fn track_id(segment: &str) -> Option<u32> {
    let (name, number) = segment.split_once('=')?;
    if !name.eq_ignore_ascii_case("trackID")
        || number.is_empty()
        || !number.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    Some(number.parse().unwrap_or(u32::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(uri: &str) -> Target {
        parse(uri, "10.0.0.1:554", false).unwrap()
    }

    #[test]
    fn a_secure_connection_gets_rtsps_urls_back() {
        let written = parse("rtsp://example.com:8555/vod", "10.0.0.1:8555", true).unwrap();
        assert_eq!(written.content_base(), "rtsps://example.com:8555/vod/");
        let path_only = parse("/vod/trackID=0", "10.0.0.1:8555", true).unwrap();
        assert_eq!(path_only.track_url(), "rtsps://10.0.0.1:8555/vod/trackID=0");
        let plain = parse("/vod", "10.0.0.1:554", false).unwrap();
        assert_eq!(plain.content_base(), "rtsp://10.0.0.1:554/vod/");
    }

    #[test]
    fn aggregate_and_track_urls() {
        let t = target("rtsp://127.0.0.1:18554/vod");
        assert_eq!(
            (t.base.as_str(), t.path.as_str(), t.track),
            ("rtsp://127.0.0.1:18554/vod", "vod", None)
        );
        assert_eq!(t.content_base(), "rtsp://127.0.0.1:18554/vod/");
        assert_eq!(t.track_url(), "rtsp://127.0.0.1:18554/vod/trackID=0");
        assert_eq!(target("rtsp://127.0.0.1:18554/vod/"), t);

        let t = target("rtsp://127.0.0.1:18554/vod/trackID=0");
        assert_eq!(
            (t.base.as_str(), t.path.as_str(), t.track),
            ("rtsp://127.0.0.1:18554/vod", "vod", Some(0))
        );
        assert_eq!(t.display(), "rtsp://127.0.0.1:18554/vod/trackID=0");

        let t = target("RTSP://host/movies/my%20clip.ts/TRACKID=5");
        assert_eq!(
            (t.base.as_str(), t.path.as_str(), t.track),
            (
                "rtsp://host/movies/my%20clip.ts",
                "movies/my clip.ts",
                Some(5)
            )
        );
        assert_eq!(
            target("rtsp://h/vod/trackID=99999999999").track,
            Some(u32::MAX)
        );
        // Not a track segment: part of the path.
        assert_eq!(target("rtsp://h/vod/trackID=").path, "vod/trackID=");
    }

    #[test]
    fn credentials_query_and_paths_only() {
        let t = target("rtsp://user:secret@cam:8554/live?token=abc#x");
        assert_eq!(t.base, "rtsp://cam:8554/live");
        assert_eq!(t.path, "live");
        let t = target("/live/trackID=0");
        assert_eq!(t.base, "rtsp://10.0.0.1:554/live");
        assert_eq!(t.track, Some(0));
        let t = target("rtsp://h:554");
        assert_eq!((t.base.as_str(), t.path.as_str()), ("rtsp://h:554", ""));
        let t = target("rtsp://h//a/./b/");
        assert_eq!(t.path, "a/b");
        assert!(target("*").asterisk);
    }

    #[test]
    fn refusals() {
        for bad in [
            "http://h/live",
            "live",
            "rtsp:///live",
            "rtsp://h/vod/../etc/passwd",
            "rtsp://h/vod/%2e%2e/x",
            "rtsp://h/%zz",
            "rtsp://h/%4",
            "rtsp://h/a%00b",
            "rtsp://h/a%5cb",
            "rtsp://h/%ff",
        ] {
            assert!(parse(bad, "l:1", false).is_err(), "{bad}");
        }
    }
}

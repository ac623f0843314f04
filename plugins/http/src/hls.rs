//! HLS on the HTTP plugin's listeners: `GET`/`HEAD /<point>/index.m3u8` (with the blocking
//! reload parameters `_HLS_msn` and `_HLS_part`), `/<point>/seg<N>.ts`,
//! `/<point>/part<N>.<M>.ts` and, for on-demand files, `/<point>[/<file>]/init.ts`.
//!
//! The host packages the media and answers through `on_resource`; this module speaks HTTP
//! around it: conditional requests (`If-None-Match`, `If-Modified-Since` → `304`), `HEAD`, and
//! cache headers a CDN can use (segments immutable for a day, playlists for about half a
//! segment or part). While the host holds a blocking reload the connection waits like a
//! streaming response: pipelined requests are held until it is answered.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ferrocast_plugin_api::{ErrorCode, Host, HostError, LogLevel, Resource, ResourceRequest};

use super::{present_credentials, write_head, Exchange, HttpSession, State};
use crate::proto::request::Request;

/// The request being answered once the host hands over the resource.
pub(super) struct PendingResource {
    exchange: Exchange,
    keep_alive: bool,
    if_none_match: Option<String>,
    if_modified_since: Option<String>,
}

/// An HLS request: the point's path and the resource below it, and the reload parameters.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct HlsTarget {
    pub path: String,
    pub name: String,
    pub msn: Option<u64>,
    pub part: Option<u64>,
}

/// Whether `name` is one of the names the host packages.
fn is_hls_name(name: &str) -> bool {
    if name == "index.m3u8" || name == "init.ts" {
        return true;
    }
    let Some(stem) = name.strip_suffix(".ts") else {
        return false;
    };
    let digits = |text: &str| !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
    if let Some(msn) = stem.strip_prefix("seg") {
        return digits(msn);
    }
    stem.strip_prefix("part")
        .and_then(|rest| rest.split_once('.'))
        .is_some_and(|(msn, part)| digits(msn) && digits(part))
}

/// The HLS request in `request`, if its last path segment is an HLS name.
pub(super) fn target(request: &Request) -> Option<HlsTarget> {
    let (path, name) = request.path.rsplit_once('/')?;
    if path.is_empty() || !is_hls_name(name) {
        return None;
    }
    let query = request
        .target
        .split_once('?')
        .map_or("", |(_, query)| query);
    let param = |key: &str| {
        query
            .split('&')
            .filter_map(|pair| pair.split_once('='))
            .find(|(k, _)| *k == key)
            .and_then(|(_, v)| v.parse::<u64>().ok())
    };
    Some(HlsTarget {
        path: path.to_owned(),
        name: name.to_owned(),
        msn: param("_HLS_msn"),
        part: param("_HLS_part"),
    })
}

/// Whether the client's validators say it already has this version of the resource
/// (RFC 9110 §13.1.2 and §13.1.3: `If-None-Match` wins over `If-Modified-Since`).
pub(super) fn not_modified(
    etag: &str,
    last_modified: u64,
    if_none_match: Option<&str>,
    if_modified_since: Option<&str>,
) -> bool {
    if let Some(tags) = if_none_match {
        return tags.split(',').map(str::trim).any(|tag| {
            tag == "*"
                || tag.strip_prefix("W/").unwrap_or(tag) == etag.strip_prefix("W/").unwrap_or(etag)
        });
    }
    if_modified_since
        .and_then(|date| httpdate::parse_http_date(date).ok())
        .and_then(|since| since.duration_since(UNIX_EPOCH).ok())
        .is_some_and(|since| last_modified <= since.as_secs())
}

/// `Cache-Control` for a resource: shared caches may keep it `max_age` seconds.
fn cache_control(max_age: u32, immutable: bool) -> String {
    if immutable {
        format!("public, max-age={max_age}, immutable")
    } else {
        format!("public, max-age={max_age}")
    }
}

/// The status answering a refusal of an HLS request.
fn status_for(code: ErrorCode) -> u16 {
    match code {
        // A blocking reload too far ahead of the playlist (RFC 8216bis §6.2.5.2).
        ErrorCode::BAD_RANGE => 400,
        other => super::status_for(other),
    }
}

impl HttpSession {
    /// Ask the host for an HLS resource. Returns `false` when `hls` is not enabled on the
    /// point, so that the request is served as a plain file request instead (a directory
    /// point may hold a file named like a segment).
    pub(super) fn get_hls(
        &mut self,
        host: &mut Host<'_>,
        exchange: &Exchange,
        request: &Request,
        target: HlsTarget,
        keep_alive: bool,
    ) -> bool {
        present_credentials(host, request);
        let mut asked = ResourceRequest::new(&target.path, &target.name);
        if let Some(msn) = target.msn {
            asked.msn = msn;
            asked.part = target.part.unwrap_or(ferrocast_plugin_api::NO_BLOCK);
        }
        match host.get_resource(asked) {
            Ok(()) => {}
            Err(error) if error.code == ErrorCode::PROTOCOL_DISABLED => return false,
            Err(error) => {
                self.refuse_hls(host, exchange, &error, keep_alive);
                return true;
            }
        }
        self.pending_resource = Some(PendingResource {
            exchange: Exchange {
                label: exchange.label.clone(),
                head_only: exchange.head_only,
            },
            keep_alive,
            if_none_match: request.if_none_match.clone(),
            if_modified_since: request.if_modified_since.clone(),
        });
        // Like a streaming response: further requests wait until this one is answered.
        self.state = State::Streaming {
            label: exchange.label.clone(),
            keep_alive,
        };
        true
    }

    fn refuse_hls(
        &mut self,
        host: &mut Host<'_>,
        exchange: &Exchange,
        error: &HostError,
        keep_alive: bool,
    ) {
        let status = status_for(error.code);
        if status == 400 || status == 503 {
            let extra: &[(&'static str, &str)] = if status == 503 {
                &[("Retry-After", "1"), ("Cache-Control", "no-store")]
            } else {
                &[("Cache-Control", "no-store")]
            };
            return self.refuse(host, exchange, status, &error.message, extra, false);
        }
        self.refuse_host(host, exchange, error, &[], keep_alive);
    }

    /// The host's answer to the pending HLS request: write the response.
    pub(super) fn answer_resource(
        &mut self,
        host: &mut Host<'_>,
        answer: Result<&Resource<'_>, &HostError>,
    ) {
        let Some(pending) = self.pending_resource.take() else {
            return; // nothing asked: ignore a stray answer
        };
        let keep_alive = match &self.state {
            State::Streaming { keep_alive, .. } => *keep_alive && pending.keep_alive,
            _ => false,
        };
        self.state = State::Head;
        let resource = match answer {
            Ok(resource) => resource,
            Err(error) => return self.refuse_hls(host, &pending.exchange, error, keep_alive),
        };
        let etag = resource.etag.as_str();
        let last_modified = httpdate::fmt_http_date(
            SystemTime::UNIX_EPOCH + Duration::from_secs(resource.last_modified),
        );
        // A playlist can change several times within the second that Last-Modified names:
        // only its ETag tells versions apart.
        let if_modified_since = pending
            .if_modified_since
            .as_deref()
            .filter(|_| resource.immutable);
        let unchanged = not_modified(
            etag,
            resource.last_modified,
            pending.if_none_match.as_deref(),
            if_modified_since,
        );
        let status = if unchanged { 304 } else { 200 };
        let mut head = self
            .head(status)
            .header("ETag", etag)
            .header("Last-Modified", last_modified)
            .header(
                "Cache-Control",
                cache_control(resource.max_age, resource.immutable),
            )
            .header("Access-Control-Allow-Origin", "*");
        if !unchanged {
            head = head
                .header("Content-Type", resource.content_type.as_str())
                .header("Content-Length", resource.len().to_string());
        }
        head = head.header("Connection", super::connection(keep_alive));
        write_head(host, &head);
        // What the origin serves by kind: behind a CDN, about one segment answer per segment
        // and a bounded rate of playlist answers.
        let kind = if resource.immutable {
            "hls_segments"
        } else {
            "hls_playlists"
        };
        host.count(kind, 1);
        if !unchanged && !pending.exchange.head_only {
            host.send_resource_body();
        }
        host.log(
            LogLevel::DEBUG,
            &format!(
                "{} -> {status} ({} bytes)",
                pending.exchange.label,
                resource.len()
            ),
        );
        self.finish_response(host, keep_alive);
        self.drive(host);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::Config;
    use ferrocast_plugin_api::__private::abi_stable::std_types::{RSlice, RStr};
    use ferrocast_plugin_api::testing::MockHost;
    use ferrocast_plugin_api::{PointKind, Session, NO_BLOCK};

    fn send(mock: &mut MockHost, session: &mut HttpSession, request: &str) {
        mock.run(|host| session.on_data(host, request.as_bytes()));
    }

    fn answer(mock: &mut MockHost, session: &mut HttpSession, etag: &str, body: &[&[u8]]) {
        let pieces: Vec<RSlice<'_, u8>> =
            body.iter().map(|piece| RSlice::from_slice(piece)).collect();
        let resource = Resource {
            content_type: RStr::from_str("video/mp2t"),
            etag: RStr::from_str(etag),
            last_modified: 1_000_000,
            max_age: 86_400,
            immutable: true,
            body: RSlice::from_slice(&pieces),
        };
        mock.resource_body = body.concat();
        mock.run(|host| session.on_resource(host, Ok(&resource)));
    }

    #[test]
    fn a_segment_gets_cache_headers_and_a_revalidation_gets_304() {
        let mut mock = MockHost::new();
        let mut session = HttpSession::new(Config::default());
        send(
            &mut mock,
            &mut session,
            "GET /live/seg3.ts HTTP/1.1\r\nHost: x\r\n\r\n",
        );
        let asked = &mock.resource_requests[0];
        assert_eq!(
            (asked.path.as_str(), asked.name.as_str()),
            ("live", "seg3.ts")
        );
        assert_eq!((asked.msn, asked.part), (NO_BLOCK, NO_BLOCK));
        assert!(mock.written.is_empty(), "nothing before the host answers");
        // A pipelined request waits for the first answer.
        send(
            &mut mock,
            &mut session,
            "GET /live/seg3.ts HTTP/1.1\r\nHost: x\r\nIf-None-Match: \"e1\"\r\n\r\n",
        );
        assert_eq!(mock.resource_requests.len(), 1);
        answer(&mut mock, &mut session, "\"e1\"", &[b"TS", b"DATA"]);
        let text = mock.take_written();
        let (first, second) = text.split_at(text.find("TSDATA").expect("the body") + 6);
        assert!(first.starts_with("HTTP/1.1 200 OK\r\n"), "{first}");
        for header in [
            "ETag: \"e1\"\r\n",
            "Cache-Control: public, max-age=86400, immutable\r\n",
            "Content-Length: 6\r\n",
            "Content-Type: video/mp2t\r\n",
            "Last-Modified: Mon, 12 Jan 1970 13:46:40 GMT\r\n",
        ] {
            assert!(first.contains(header), "{header} in {first}");
        }
        assert!(
            second.is_empty(),
            "the second answer waits for its own resource"
        );
        assert_eq!(
            mock.resource_requests.len(),
            2,
            "the pipelined request was asked next"
        );
        answer(&mut mock, &mut session, "\"e1\"", &[b"TSDATA"]);
        let text = mock.take_written();
        assert!(text.starts_with("HTTP/1.1 304 Not Modified\r\n"), "{text}");
        assert!(
            !text.contains("TSDATA") && !text.contains("Content-Length"),
            "{text}"
        );
    }

    #[test]
    fn head_has_no_body_and_reload_parameters_are_passed_on() {
        let mut mock = MockHost::new();
        let mut session = HttpSession::new(Config::default());
        send(
            &mut mock,
            &mut session,
            "HEAD /live/index.m3u8?_HLS_msn=5&_HLS_part=2 HTTP/1.1\r\nHost: x\r\n\r\n",
        );
        let asked = &mock.resource_requests[0];
        assert_eq!((asked.msn, asked.part), (5, 2));
        answer(&mut mock, &mut session, "\"p\"", &[b"#EXTM3U\n"]);
        let text = mock.take_written();
        assert!(
            text.contains("Content-Length: 8\r\n") && text.ends_with("\r\n\r\n"),
            "{text}"
        );
    }

    #[test]
    fn refusals_get_their_status_and_a_point_without_hls_serves_the_file() {
        let mut mock = MockHost::new();
        mock.add_point("vod/seg1.ts", PointKind::ON_DEMAND, 1000);
        mock.resource_refusals.insert(
            "live/index.m3u8".into(),
            HostError::new(ErrorCode::UNAVAILABLE, "not live"),
        );
        mock.resource_refusals.insert(
            "vod/seg1.ts".into(),
            HostError::new(ErrorCode::PROTOCOL_DISABLED, "HLS is not enabled"),
        );
        let mut session = HttpSession::new(Config::default());
        send(
            &mut mock,
            &mut session,
            "GET /live/index.m3u8 HTTP/1.1\r\nHost: x\r\n\r\n",
        );
        let text = mock.take_written();
        assert!(text.starts_with("HTTP/1.1 503"), "{text}");
        assert!(text.contains("Cache-Control: no-store\r\n"), "{text}");
        let mut session = HttpSession::new(Config::default());
        send(
            &mut mock,
            &mut session,
            "GET /vod/seg1.ts HTTP/1.1\r\nHost: x\r\n\r\n",
        );
        assert_eq!(mock.plays.len(), 1, "served as a file of the directory");
        // A reload that stopped waiting is answered with its refusal.
        mock.take_written();
        let mut session = HttpSession::new(Config::default());
        send(
            &mut mock,
            &mut session,
            "GET /live/seg4.ts HTTP/1.1\r\nHost: x\r\n\r\n",
        );
        let gone = HostError::new(ErrorCode::BAD_RANGE, "too far ahead");
        mock.run(|host| session.on_resource(host, Err(&gone)));
        let text = mock.take_written();
        assert!(text.starts_with("HTTP/1.1 400"), "{text}");
    }

    fn request(target: &str) -> Request {
        let mut reader = crate::proto::request::HeadReader::new(4096);
        reader.push(format!("GET {target} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes());
        reader.next_request().unwrap().unwrap()
    }

    #[test]
    fn hls_targets_are_recognised_by_their_last_segment() {
        let found = target(&request("/live/index.m3u8?_HLS_msn=12&_HLS_part=3")).unwrap();
        assert_eq!(
            found,
            HlsTarget {
                path: "live".into(),
                name: "index.m3u8".into(),
                msn: Some(12),
                part: Some(3),
            }
        );
        let segment = target(&request("/live/seg7.ts")).unwrap();
        assert_eq!((segment.path.as_str(), segment.msn), ("live", None));
        assert!(target(&request("/vod/movie.ts/index.m3u8")).is_some());
        assert!(target(&request("/live/part7.2.ts")).is_some());
        for plain in [
            "/live",
            "/index.m3u8",
            "/vod/movie.ts",
            "/vod/seg.ts",
            "/vod/part1.ts",
        ] {
            assert_eq!(target(&request(plain)), None, "{plain}");
        }
    }

    #[test]
    fn validators_decide_not_modified() {
        let etag = "\"ab-s1\"";
        assert!(not_modified(etag, 100, Some("\"ab-s1\""), None));
        assert!(not_modified(etag, 100, Some("\"x\", W/\"ab-s1\""), None));
        assert!(not_modified(etag, 100, Some("*"), None));
        assert!(!not_modified(etag, 100, Some("\"ab-s2\""), None));
        // If-None-Match wins over If-Modified-Since.
        let later = httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(200));
        assert!(!not_modified(etag, 100, Some("\"other\""), Some(&later)));
        assert!(not_modified(etag, 100, None, Some(&later)));
        let earlier = httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(50));
        assert!(!not_modified(etag, 100, None, Some(&earlier)));
        assert!(!not_modified(etag, 100, None, Some("not a date")));
    }

    #[test]
    fn segments_are_immutable_and_playlists_short_lived() {
        assert_eq!(
            cache_control(86_400, true),
            "public, max-age=86400, immutable"
        );
        assert_eq!(cache_control(1, false), "public, max-age=1");
        assert_eq!(status_for(ErrorCode::BAD_RANGE), 400);
        assert_eq!(status_for(ErrorCode::UNAVAILABLE), 503);
        assert_eq!(status_for(ErrorCode::NOT_FOUND), 404);
    }
}

//! The session description answering DESCRIBE (SDP, RFC 4566; RTP/MP2T per RFC 2250).
//!
//! Every point is one MPEG-TS stream sent as a single RTP track of payload type 33
//! (`MP2T/90000`), whose control URL `trackID=0` is relative to the answer's `Content-Base`:
//!
//! ```text
//! v=0
//! o=- 2890844526 1 IN IP4 192.0.2.10
//! s=vod
//! c=IN IP4 0.0.0.0
//! t=0 0
//! a=control:*
//! a=range:npt=0-10.021
//! m=video 0 RTP/AVP 33
//! a=rtpmap:33 MP2T/90000
//! a=control:trackID=0
//! ```
//!
//! An on-demand point announces its duration in `a=range` (the end is left out when unknown);
//! a live one announces `npt=now-`.

use crate::proto::range::format_npt;

/// What the description says about the stream's timeline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Timeline {
    /// A file of this many milliseconds (0: unknown).
    OnDemand {
        duration_ms: u64,
    },
    Live,
}

/// The parts of a description that vary.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Description<'a> {
    /// `o=` session id: any number, unique enough to tell descriptions apart.
    pub session_id: u64,
    /// `o=` version: changes when the description of the same session changes.
    pub version: u64,
    /// The server's address as the client reached it (the IP of `SessionInfo::local_addr`).
    pub server_ip: &'a str,
    /// `s=`: the publishing point's name.
    pub name: &'a str,
    pub timeline: Timeline,
}

impl Description<'_> {
    /// The SDP text, with CRLF line ends.
    pub fn render(&self) -> String {
        let family = if self.server_ip.contains(':') {
            "IP6"
        } else {
            "IP4"
        };
        let range = match self.timeline {
            Timeline::Live => "npt=now-".to_owned(),
            Timeline::OnDemand { duration_ms: 0 } => "npt=0-".to_owned(),
            Timeline::OnDemand { duration_ms } => format!("npt=0-{}", format_npt(duration_ms)),
        };
        let lines = [
            "v=0".to_owned(),
            format!(
                "o=- {} {} IN {family} {}",
                self.session_id,
                self.version,
                sanitise(self.server_ip)
            ),
            format!("s={}", session_name(self.name)),
            "c=IN IP4 0.0.0.0".to_owned(),
            "t=0 0".to_owned(),
            "a=control:*".to_owned(),
            format!("a=range:{range}"),
            "m=video 0 RTP/AVP 33".to_owned(),
            "a=rtpmap:33 MP2T/90000".to_owned(),
            "a=control:trackID=0".to_owned(),
        ];
        let mut out = lines.join("\r\n");
        out.push_str("\r\n");
        out
    }
}

/// `s=` must be one non-empty line (RFC 4566 §5.3: a single space when there is no name).
fn session_name(name: &str) -> String {
    let name = sanitise(name);
    if name.trim().is_empty() {
        " ".to_owned()
    } else {
        name
    }
}

/// No control characters: a line break would start a new SDP line.
fn sanitise(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { '_' } else { c })
        .collect()
}

/// A stable number for a point path (FNV-1a), used as the `o=` session id so that every
/// description of the same point has the same origin.
pub fn origin_id(path: &str) -> u64 {
    let hash = path.bytes().fold(0xcbf2_9ce4_8422_2325u64, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    // SDP parsers commonly read the session id as a signed 64-bit number.
    hash >> 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn on_demand_description() {
        let sdp = Description {
            session_id: 42,
            version: 1,
            server_ip: "192.0.2.10",
            name: "vod",
            timeline: Timeline::OnDemand {
                duration_ms: 10_021,
            },
        }
        .render();
        assert_eq!(
            sdp,
            "v=0\r\no=- 42 1 IN IP4 192.0.2.10\r\ns=vod\r\nc=IN IP4 0.0.0.0\r\nt=0 0\r\n\
             a=control:*\r\na=range:npt=0-10.021\r\nm=video 0 RTP/AVP 33\r\n\
             a=rtpmap:33 MP2T/90000\r\na=control:trackID=0\r\n"
        );
    }

    #[test]
    fn live_unknown_duration_ipv6_and_odd_names() {
        let render = |timeline, ip, name| {
            Description {
                session_id: 1,
                version: 1,
                server_ip: ip,
                name,
                timeline,
            }
            .render()
        };
        let live = render(Timeline::Live, "::1", "live");
        assert!(live.contains("\r\no=- 1 1 IN IP6 ::1\r\n"), "{live}");
        assert!(live.contains("\r\na=range:npt=now-\r\n"));
        let unknown = render(Timeline::OnDemand { duration_ms: 0 }, "10.0.0.1", "x\r\ny");
        assert!(unknown.contains("\r\na=range:npt=0-\r\n"));
        assert!(unknown.contains("\r\ns=x__y\r\n"));
        assert!(render(Timeline::Live, "10.0.0.1", "").contains("\r\ns= \r\n"));
    }

    #[test]
    fn origin_ids_are_stable_and_positive() {
        assert_eq!(origin_id("vod"), origin_id("vod"));
        assert_ne!(origin_id("vod"), origin_id("live"));
        assert!(origin_id("live") <= i64::MAX as u64);
    }
}

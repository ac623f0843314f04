//! Behaviour tests of [`RtspSession`] against [`MockHost`], fed with requests captured from
//! real clients (see `tests/fixtures/README.md`) in odd splits, and with hand-written requests
//! for what the clients did not do.

use std::ops::{Deref, DerefMut};

use super::*;
use ferrocast_plugin_api::testing::MockHost;
use ferrocast_plugin_kit::head::find_head_end;
use ferrocast_plugin_kit::testing::{unique_header, SessionHarness};

const FFMPEG_TCP_VOD: &[u8] = include_bytes!("../../tests/fixtures/ffmpeg-tcp-vod.rtsp");
const FFMPEG_UDP_VOD: &[u8] = include_bytes!("../../tests/fixtures/ffmpeg-udp-vod.rtsp");
const FFMPEG_SEEK_VOD: &[u8] = include_bytes!("../../tests/fixtures/ffmpeg-seek-vod.rtsp");
const FFMPEG_ROLLOVER_LIVE: &[u8] =
    include_bytes!("../../tests/fixtures/ffmpeg-rollover-live.rtsp");
const FFPROBE_UDP_LIVE: &[u8] = include_bytes!("../../tests/fixtures/ffprobe-udp-live.rtsp");
const GST_TCP_VOD: &[u8] = include_bytes!("../../tests/fixtures/gst-tcp-vod.rtsp");
const GST_UDP_VOD: &[u8] = include_bytes!("../../tests/fixtures/gst-udp-vod.rtsp");
const GST_ROLLOVER_LIVE: &[u8] = include_bytes!("../../tests/fixtures/gst-rollover-live.rtsp");

/// Read sizes every fixture is replayed with; `usize::MAX` is the whole fixture at once.
const SPLITS: [usize; 6] = [1, 2, 7, 13, 100, usize::MAX];

/// The duration of the on-demand test file: the 10.021 s clip the fixtures were captured with.
const VOD_MS: u64 = 10_021;

/// A session on a mock host with a live point `live`, an on-demand file `vod` (10.021 s), a
/// directory point file `vod/clip.ts` (5 s), and points refused in every way the host can.
struct Client {
    harness: SessionHarness<RtspSession>,
}

impl Deref for Client {
    type Target = SessionHarness<RtspSession>;

    fn deref(&self) -> &Self::Target {
        &self.harness
    }
}

impl DerefMut for Client {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.harness
    }
}

impl Client {
    fn new() -> Self {
        Self::with_config(Config::default())
    }

    fn with_config(config: Config) -> Self {
        let mut mock = MockHost::new();
        mock.add_point("live", PointKind::BROADCAST, 0)
            .add_point("vod", PointKind::ON_DEMAND, 1_000_000)
            .add_point("vod/clip.ts", PointKind::ON_DEMAND, 500_000)
            .refuse(
                "off",
                ErrorCode::PROTOCOL_DISABLED,
                "the point `off` does not allow rtsp",
            )
            .refuse("secret", ErrorCode::FORBIDDEN, "outside the point")
            .refuse("broken", ErrorCode::UNAVAILABLE, "cannot read the file")
            .refuse("going", ErrorCode::DRAINING, "the point is draining")
            .refuse("odd", ErrorCode::WRONG_KIND, "wrong kind");
        for (path, duration) in [("vod", VOD_MS), ("vod/clip.ts", 5_000)] {
            if let Some(Ok(point)) = mock.points.get_mut(path) {
                point.duration_ms = duration;
            }
        }
        let info = mock.run(|host| host.session());
        let mut client = Self {
            harness: SessionHarness::new(mock, RtspSession::new(config, info)),
        };
        client.open();
        client
    }

    fn refuse_udp(&mut self) {
        self.mock.transport_refusals.insert(
            TransportKind::UDP_UNICAST.0,
            HostError::new(
                ErrorCode::UNSUPPORTED_TRANSPORT,
                "RTP over UDP is not enabled on this point",
            ),
        );
    }

    /// Send one request and take its one response.
    fn request(&mut self, method: &str, url: &str, cseq: u32, headers: &[&str]) -> Reply {
        self.send(&request(method, url, cseq, headers));
        self.response()
    }

    fn setup_tcp(&mut self, path: &str) -> Reply {
        let url = format!("rtsp://127.0.0.1:8554/{path}/trackID=0");
        let reply = self.request(
            "SETUP",
            &url,
            1,
            &["Transport: RTP/AVP/TCP;unicast;interleaved=0-1"],
        );
        assert_eq!(reply.status, 200, "{reply:?}");
        reply
    }

    fn play(&mut self, path: &str, cseq: u32, headers: &[&str]) -> Reply {
        let url = format!("rtsp://127.0.0.1:8554/{path}/");
        self.request("PLAY", &url, cseq, headers)
    }

    fn activity(&mut self, transport: u64) {
        self.transport_activity(transport);
    }

    /// Every response written since the last call, in order.
    fn responses(&mut self) -> Vec<Reply> {
        let written = self.take_written();
        let mut rest = written.as_slice();
        let mut replies = Vec::new();
        while !rest.is_empty() {
            let (reply, after) = Reply::parse(rest);
            replies.push(reply);
            rest = after;
        }
        replies
    }

    /// The one response written since the last call.
    fn response(&mut self) -> Reply {
        let mut replies = self.responses();
        assert_eq!(replies.len(), 1, "{replies:#?}");
        replies.remove(0)
    }

    fn session_timer(&self) -> Option<u64> {
        self.timer(SESSION_TIMER)
    }

    fn header_timer(&self) -> Option<u64> {
        self.timer(HEADER_TIMER)
    }

    /// The id our session gets on the mock host (session number 1).
    fn id() -> String {
        session_id(1)
    }
}

/// A request as a client would send it.
fn request(method: &str, url: &str, cseq: u32, headers: &[&str]) -> Vec<u8> {
    let mut text = format!("{method} {url} RTSP/1.0\r\nCSeq: {cseq}\r\n");
    for header in headers {
        text.push_str(header);
        text.push_str("\r\n");
    }
    text.push_str("\r\n");
    text.into_bytes()
}

/// A captured exchange with the capture server's session id replaced by the one this plugin
/// hands out on the mock host, so that the client's `Session` headers match as they did live.
fn fixture(bytes: &[u8]) -> Vec<u8> {
    let text = bytes;
    let marker = b"Session: ";
    let Some(at) = text.windows(marker.len()).position(|w| w == marker) else {
        return bytes.to_vec();
    };
    let start = at + marker.len();
    let end = start + text[start..].iter().position(|&b| b == b'\r').unwrap();
    let captured = &text[start..end];
    let ours = Client::id().into_bytes();
    let mut out = Vec::with_capacity(bytes.len() + 64);
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i..].starts_with(captured) {
            out.extend_from_slice(&ours);
            i += captured.len();
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    out
}

/// A response as the client sees it.
#[derive(Debug)]
struct Reply {
    status: u16,
    reason: String,
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    /// Parse one response off the front of `bytes`; the body is `Content-Length` bytes.
    fn parse(bytes: &[u8]) -> (Self, &[u8]) {
        let end = find_head_end(bytes).expect("complete response head");
        let head = std::str::from_utf8(&bytes[..end - 4]).expect("ASCII head");
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap();
        let (version, rest) = status_line.split_once(' ').unwrap();
        assert_eq!(version, "RTSP/1.0");
        let (code, reason) = rest.split_once(' ').unwrap();
        let headers: Vec<(String, String)> = lines
            .map(|line| {
                let (name, value) = line.split_once(": ").expect("header line");
                (name.to_owned(), value.to_owned())
            })
            .collect();
        let mut reply = Self {
            status: code.parse().unwrap(),
            reason: reason.to_owned(),
            headers,
            body: String::new(),
        };
        let length: usize = reply
            .get("Content-Length")
            .map_or(0, |length| length.parse().unwrap());
        reply.body = String::from_utf8(bytes[end..end + length].to_vec()).unwrap();
        assert_eq!(reply.get("Server"), Some(SERVER));
        (reply, &bytes[end + length..])
    }

    fn get<'a>(&'a self, name: &'a str) -> Option<&'a str> {
        unique_header(&self.headers, name)
    }

    fn cseq(&self) -> Option<&str> {
        self.get("CSeq")
    }

    /// An error response: the status, its standard reason, a plain-text body containing
    /// `text`.
    fn assert_error(&self, status: u16, text: &str) {
        assert_eq!(self.status, status, "{self:#?}");
        assert_eq!(self.reason, crate::proto::response::reason(status));
        assert_eq!(self.get("Content-Type"), Some("text/plain; charset=utf-8"));
        assert!(self.body.contains(text), "{:?} lacks {text:?}", self.body);
    }
}

fn statuses(replies: &[Reply]) -> Vec<u16> {
    replies.iter().map(|reply| reply.status).collect()
}

fn cseqs(replies: &[Reply]) -> Vec<&str> {
    replies.iter().map(|reply| reply.cseq().unwrap()).collect()
}

fn session_header() -> String {
    format!("{};timeout=60", Client::id())
}

// ---------------------------------------------------------------------------------------------
// Real clients, replayed

#[test]
fn ffmpeg_over_tcp_from_describe_to_teardown_in_any_split() {
    for piece in SPLITS {
        let mut client = Client::new();
        client.send_in_pieces(&fixture(FFMPEG_TCP_VOD), piece);
        let replies = client.responses();
        assert_eq!(statuses(&replies), [200; 7], "piece {piece}");
        assert_eq!(cseqs(&replies), ["1", "2", "3", "4", "5", "6", "7"]);

        let options = &replies[0];
        assert_eq!(options.get("Public"), Some(PUBLIC));
        assert_eq!(options.get("Session"), None, "no session yet");

        let describe = &replies[1];
        assert_eq!(describe.get("Content-Type"), Some("application/sdp"));
        assert_eq!(
            describe.get("Content-Base"),
            Some("rtsp://127.0.0.1:18556/vod/")
        );
        assert_eq!(
            describe.body,
            format!(
                "v=0\r\no=- {} 1 IN IP4 127.0.0.1\r\ns=vod\r\nc=IN IP4 0.0.0.0\r\nt=0 0\r\n\
                 a=control:*\r\na=range:npt=0-10.021\r\nm=video 0 RTP/AVP 33\r\n\
                 a=rtpmap:33 MP2T/90000\r\na=control:trackID=0\r\n",
                sdp::origin_id("vod")
            )
        );

        let setup = &replies[2];
        assert_eq!(
            setup.get("Transport"),
            Some("RTP/AVP/TCP;unicast;interleaved=0-1;ssrc=12345678")
        );
        assert_eq!(setup.get("Session"), Some(session_header().as_str()));

        let play = &replies[3];
        assert_eq!(play.get("Range"), Some("npt=0.000-10.021"));
        assert_eq!(
            play.get("RTP-Info"),
            Some("url=rtsp://127.0.0.1:18556/vod/trackID=0;seq=1000;rtptime=90000")
        );
        for reply in &replies[2..] {
            assert_eq!(reply.get("Session"), Some(session_header().as_str()));
        }

        let transport = &client.mock.transports[0];
        assert_eq!(transport.kind, TransportKind::TCP_INTERLEAVED);
        assert_eq!(transport.path.as_str(), "vod");
        assert_eq!((transport.rtp_channel, transport.rtcp_channel), (0, 1));
        assert_eq!(client.mock.transport_plays, [("vod".to_owned(), 0)]);
        assert_eq!(client.mock.torn_down, [1]);
        assert!(client.mock.closed, "TEARDOWN closes the connection");
        assert_eq!(client.logs(LogLevel::WARN), Vec::<String>::new());
        let info = client.logs(LogLevel::INFO);
        assert_eq!(info.len(), 7);
        assert_eq!(
            info[1],
            "DESCRIBE rtsp://127.0.0.1:18556/vod -> 200 (on-demand)"
        );
        assert!(
            info[3].starts_with("PLAY rtsp://127.0.0.1:18556/vod -> 200 (npt=0.000-10.021"),
            "{}",
            info[3]
        );
    }
}

#[test]
fn ffmpeg_over_udp() {
    for piece in SPLITS {
        let mut client = Client::new();
        client.send_in_pieces(&fixture(FFMPEG_UDP_VOD), piece);
        let replies = client.responses();
        assert_eq!(statuses(&replies), [200; 5]);
        assert_eq!(
            replies[2].get("Transport"),
            Some("RTP/AVP;unicast;client_port=25056-25057;server_port=6970-6971;ssrc=12345678")
        );
        let transport = &client.mock.transports[0];
        assert_eq!(transport.kind, TransportKind::UDP_UNICAST);
        assert_eq!(
            (transport.client_rtp_port, transport.client_rtcp_port),
            (25056, 25057)
        );
        assert_eq!(client.mock.torn_down, [1]);
    }
}

#[test]
fn ffmpeg_seek_pauses_then_plays_from_the_range() {
    for piece in SPLITS {
        let mut client = Client::new();
        client.send_in_pieces(&fixture(FFMPEG_SEEK_VOD), piece);
        let replies = client.responses();
        let methods = [
            "OPTIONS", "DESCRIBE", "SETUP", "PLAY", "PAUSE", "PLAY", "TEARDOWN",
        ];
        assert_eq!(statuses(&replies), [200; 7], "{methods:?}");
        assert_eq!(
            client.mock.transport_plays,
            [("vod".to_owned(), 0), ("vod".to_owned(), 6400)]
        );
        assert_eq!(client.mock.pauses, 1);
        assert_eq!(replies[5].get("Range"), Some("npt=6.400-10.021"));
    }
}

#[test]
fn ffmpeg_rolls_over_from_udp_to_tcp_after_461() {
    for piece in SPLITS {
        let mut client = Client::new();
        client.refuse_udp();
        client.send_in_pieces(&fixture(FFMPEG_ROLLOVER_LIVE), piece);
        let replies = client.responses();
        assert_eq!(statuses(&replies), [200, 200, 461, 200, 200, 200]);
        assert_eq!(cseqs(&replies), ["1", "2", "3", "4", "5", "6"]);
        let refused = &replies[2];
        refused.assert_error(461, "RTP over UDP is not enabled on this point");
        assert_eq!(
            refused.get("Session"),
            None,
            "no session before a SETUP works"
        );
        assert_eq!(
            replies[3].get("Transport"),
            Some("RTP/AVP/TCP;unicast;interleaved=0-1;ssrc=12345678")
        );
        // A live point plays from where it is, whatever ffmpeg's `npt=0.000-` says.
        assert_eq!(client.mock.transport_plays, [("live".to_owned(), RESUME)]);
        assert_eq!(replies[4].get("Range"), Some("npt=0.000-"));
        assert_eq!(
            client.mock.transports.len(),
            1,
            "only the TCP transport exists"
        );
        let warnings = client.logs(LogLevel::WARN);
        assert_eq!(warnings.len(), 1);
        assert!(
            warnings[0].starts_with("SETUP rtsp://127.0.0.1:18559/live/trackID=0 -> 461: "),
            "{}",
            warnings[0]
        );
    }
}

#[test]
fn ffprobe_on_a_live_point_over_udp() {
    for piece in SPLITS {
        let mut client = Client::new();
        client.send_in_pieces(&fixture(FFPROBE_UDP_LIVE), piece);
        let replies = client.responses();
        assert_eq!(statuses(&replies), [200; 5]);
        assert!(replies[1].body.contains("\r\na=range:npt=now-\r\n"));
        assert_eq!(client.mock.transport_plays, [("live".to_owned(), RESUME)]);
        assert_eq!(replies[3].get("Range"), Some("npt=0.000-"));
    }
}

#[test]
fn gstreamer_over_tcp_with_interleaved_rtcp() {
    for piece in SPLITS {
        let mut client = Client::new();
        client.send_in_pieces(&fixture(GST_TCP_VOD), piece);
        let replies = client.responses();
        assert_eq!(statuses(&replies), [200; 5]);
        // GStreamer asks for `npt=0-10`: from the start.
        assert_eq!(client.mock.transport_plays, [("vod".to_owned(), 0)]);
        assert_eq!(
            client.logs(LogLevel::WARN),
            Vec::<String>::new(),
            "RTCP on the session's channel is not stray"
        );
        assert!(client.mock.closed);
    }
}

#[test]
fn interleaved_rtcp_on_the_session_channel_is_a_keepalive() {
    let data = fixture(GST_TCP_VOD);
    let rtcp = data.iter().position(|&b| b == b'$').unwrap();
    let teardown = rtcp + 4 + 80;
    let mut client = Client::new();
    client.send(&data[..rtcp]);
    assert_eq!(statuses(&client.responses()), [200; 4]);
    client.mock.timers.remove(&SESSION_TIMER.get());
    client.send_in_pieces(&data[rtcp..teardown], 3);
    assert_eq!(client.session_timer(), Some(60_000), "re-armed by RTCP");
    assert!(client.responses().is_empty(), "frames get no answer");
    client.send(&data[teardown..]);
    assert_eq!(statuses(&client.responses()), [200]);
}

#[test]
fn gstreamer_rolls_over_through_multicast_to_tcp() {
    for piece in SPLITS {
        let mut client = Client::new();
        client.refuse_udp();
        client.send_in_pieces(&fixture(GST_ROLLOVER_LIVE), piece);
        let replies = client.responses();
        assert_eq!(statuses(&replies), [200, 200, 461, 461, 200, 200, 200]);
        replies[3].assert_error(461, "multicast is not offered");
        assert_eq!(client.mock.transports.len(), 1);
        // `npt=now-` is answered in kind.
        assert_eq!(replies[5].get("Range"), Some("npt=now-"));
        assert_eq!(client.mock.transport_plays, [("live".to_owned(), RESUME)]);
    }
}

#[test]
fn gstreamer_over_udp_pauses_before_teardown() {
    for piece in SPLITS {
        let mut client = Client::new();
        client.send_in_pieces(&fixture(GST_UDP_VOD), piece);
        let replies = client.responses();
        assert_eq!(statuses(&replies), [200; 6]);
        assert_eq!(client.mock.pauses, 1);
        assert_eq!(client.mock.torn_down, [1]);
        assert_eq!(
            replies[2].get("Transport"),
            Some("RTP/AVP;unicast;client_port=35400-35401;server_port=6970-6971;ssrc=12345678")
        );
    }
}

// ---------------------------------------------------------------------------------------------
// OPTIONS, DESCRIBE and host refusals

#[test]
fn options_lists_every_method() {
    let mut client = Client::new();
    let reply = client.request("OPTIONS", "*", 1, &[]);
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.get("Public"),
        Some("OPTIONS, DESCRIBE, SETUP, PLAY, PAUSE, TEARDOWN, GET_PARAMETER, SET_PARAMETER")
    );
    assert_eq!(client.logs(LogLevel::INFO), ["OPTIONS * -> 200"]);
}

#[test]
fn describe_names_the_server_address_the_client_reached_over_ipv6() {
    let mut client = Client::new();
    client.session = RtspSession::new(
        Config::default(),
        SessionInfo::new(
            1,
            "[::1]:50000".parse().unwrap(),
            "[::1]:8554".parse().unwrap(),
        ),
    );
    client.open();
    let live = client.request("DESCRIBE", "rtsp://[::1]:8554/live", 1, &[]);
    assert_eq!(live.status, 200, "{live:?}");
    assert!(live.body.contains(" IN IP6 ::1\r\n"), "{}", live.body);
}

#[test]
fn describe_live_and_directory_points() {
    let mut client = Client::new();
    let live = client.request("DESCRIBE", "rtsp://10.1.2.3:554/live", 1, &[]);
    assert_eq!(live.status, 200);
    assert_eq!(live.get("Content-Base"), Some("rtsp://10.1.2.3:554/live/"));
    assert!(live.body.contains("\r\ns=live\r\n"));
    assert!(live.body.contains("\r\na=range:npt=now-\r\n"));
    assert!(
        live.body.contains("IN IP4 127.0.0.1\r\n"),
        "from SessionInfo.local"
    );
    assert_eq!(
        live.get("Content-Length"),
        Some(live.body.len().to_string().as_str())
    );

    let clip = client.request("DESCRIBE", "rtsp://h/vod/clip.ts", 2, &[]);
    assert_eq!(clip.get("Content-Base"), Some("rtsp://h/vod/clip.ts/"));
    assert!(clip.body.contains("\r\na=range:npt=0-5.000\r\n"));
    assert!(clip.body.contains("\r\ns=vod\r\n"));

    // Unknown duration: the range has no end.
    if let Some(Ok(point)) = client.mock.points.get_mut("vod") {
        point.duration_ms = 0;
    }
    let vod = client.request("DESCRIBE", "rtsp://h/vod", 3, &[]);
    assert!(vod.body.contains("\r\na=range:npt=0-\r\n"));
}

#[test]
fn over_capacity_is_453_not_enough_bandwidth() {
    let mut client = Client::new();
    client.mock.refuse(
        "full",
        ErrorCode::OVER_CAPACITY,
        "the point `full` has 10 clients",
    );
    let reply = client.request("DESCRIBE", "rtsp://h/full", 1, &[]);
    reply.assert_error(453, "the point `full` has 10 clients");
    assert_eq!(reply.reason, "Not Enough Bandwidth");
    client.setup_tcp("live");
    client.mock.play_refusals.insert(
        "live".to_owned(),
        HostError::new(ErrorCode::OVER_CAPACITY, "bandwidth cap"),
    );
    client
        .play("live", 3, &[])
        .assert_error(453, "bandwidth cap");
}

#[test]
fn host_refusals_map_to_rtsp_statuses() {
    let mut client = Client::new();
    let cases = [
        ("nowhere", 404, "no publishing point `nowhere`"),
        ("secret", 403, "outside the point"),
        ("broken", 503, "cannot read the file"),
        ("going", 503, "the point is draining"),
        ("odd", 500, "wrong kind"),
    ];
    for (i, (path, status, text)) in cases.into_iter().enumerate() {
        let reply = client.request("DESCRIBE", &format!("rtsp://h/{path}"), i as u32, &[]);
        reply.assert_error(status, text);
        assert_eq!(reply.cseq(), Some(i.to_string().as_str()));
    }
    let reply = client.request("DESCRIBE", "rtsp://h/", 9, &[]);
    reply.assert_error(404, "no publishing point in the URL");
    assert!(!client.mock.closed, "refusals keep the connection");
    assert_eq!(client.logs(LogLevel::WARN).len(), 6);
    assert_eq!(
        client.logs(LogLevel::WARN)[0],
        "DESCRIBE rtsp://h/nowhere -> 404: no publishing point `nowhere` (not found)"
    );
}

#[test]
fn protocol_disabled_says_so_in_the_reason_phrase_and_body() {
    let mut client = Client::new();
    let reply = client.request("DESCRIBE", "rtsp://h/off", 1, &[]);
    assert_eq!(reply.status, 403);
    assert_eq!(reply.reason, "RTSP Disabled On This Point");
    assert!(reply.body.contains("the point `off` does not allow rtsp"));
    assert_eq!(reply.get("Content-Type"), Some("text/plain; charset=utf-8"));
    // SETUP on it gets the same answer.
    let reply = client.request(
        "SETUP",
        "rtsp://h/off/trackID=0",
        2,
        &["Transport: RTP/AVP/TCP;unicast"],
    );
    assert_eq!(
        (reply.status, reply.reason.as_str()),
        (403, "RTSP Disabled On This Point")
    );
    assert!(client.mock.transports.is_empty());
}

// ---------------------------------------------------------------------------------------------
// SETUP

#[test]
fn setup_transport_validation() {
    let mut client = Client::new();
    let setup = |client: &mut Client, transport: &str| {
        let header = format!("Transport: {transport}");
        client.request("SETUP", "rtsp://h/vod/trackID=0", 1, &[&header])
    };
    setup(&mut client, "RTP/AVP;unicast").assert_error(400, "client_port required");
    setup(&mut client, "RTP/AVP;unicast;client_port=554-555").assert_error(400, "reserved");
    setup(&mut client, "RTP/AVP;unicast;client_port=0-1").assert_error(400, "reserved");
    setup(&mut client, "RTP/AVP;multicast").assert_error(461, "multicast");
    setup(&mut client, "RAW/RAW/UDP;unicast;client_port=5000").assert_error(461, "RAW/RAW/UDP");
    let reply = client.request("SETUP", "rtsp://h/vod/trackID=0", 1, &[]);
    reply.assert_error(400, "Transport header required");
    assert!(
        client.mock.transports.is_empty(),
        "nothing reached the host"
    );
    let warnings = client.logs(LogLevel::WARN);
    assert!(
        warnings[1].contains("-> 400: client_port 554-555 is reserved"),
        "reserved ports are logged: {warnings:?}"
    );

    // Defaults: RTCP on the next port or channel; channels 0-1 without interleaved=.
    let reply = setup(&mut client, "RTP/AVP;unicast;client_port=5000");
    assert_eq!(
        reply.get("Transport"),
        Some("RTP/AVP;unicast;client_port=5000-5001;server_port=6970-6971;ssrc=12345678")
    );
    let reply = setup(&mut client, "RTP/AVP/TCP;unicast");
    assert_eq!(
        reply.get("Transport"),
        Some("RTP/AVP/TCP;unicast;interleaved=0-1;ssrc=12345678")
    );
    let reply = setup(&mut client, "RTP/AVP/TCP;unicast;interleaved=6");
    assert_eq!(
        reply.get("Transport"),
        Some("RTP/AVP/TCP;unicast;interleaved=6-7;ssrc=12345678")
    );
}

#[test]
fn setup_takes_the_first_transport_the_host_accepts() {
    let mut client = Client::new();
    client.refuse_udp();
    let reply = client.request(
        "SETUP",
        "rtsp://h/vod/trackID=0",
        1,
        &["Transport: RTP/AVP;multicast, RTP/AVP;unicast;client_port=5000-5001,RTP/AVP/TCP;unicast;interleaved=2-3"],
    );
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.get("Transport"),
        Some("RTP/AVP/TCP;unicast;interleaved=2-3;ssrc=12345678")
    );
    assert_eq!(client.mock.transports.len(), 1);

    // None accepted: the answer is about the client's first choice.
    let mut client = Client::new();
    client.refuse_udp();
    let reply = client.request(
        "SETUP",
        "rtsp://h/vod/trackID=0",
        1,
        &["Transport: RTP/AVP;unicast;client_port=5000-5001,RTP/AVP;unicast"],
    );
    reply.assert_error(461, "RTP over UDP is not enabled");
    assert!(reply.body.contains("client_port required"), "all reasons");
    let reply = client.request(
        "SETUP",
        "rtsp://h/vod/trackID=0",
        2,
        &["Transport: RTP/AVP;unicast;client_port=80,RTP/AVP;unicast;client_port=5000"],
    );
    reply.assert_error(400, "reserved");
}

#[test]
fn setup_refusals_by_track_point_and_state() {
    let mut client = Client::new();
    let reply = client.request(
        "SETUP",
        "rtsp://h/vod/trackID=5",
        1,
        &["Transport: RTP/AVP/TCP;unicast"],
    );
    reply.assert_error(404, "only track is trackID=0");
    client.setup_tcp("vod");
    let reply = client.request(
        "SETUP",
        "rtsp://h/live/trackID=0",
        3,
        &["Transport: RTP/AVP/TCP;unicast"],
    );
    reply.assert_error(459, "this connection's session plays `vod`");
    assert_eq!(reply.reason, "Aggregate Operation Not Allowed");
    assert_eq!(client.play("vod", 4, &[]).status, 200);
    let reply = client.request(
        "SETUP",
        "rtsp://h/vod/trackID=0",
        5,
        &["Transport: RTP/AVP/TCP;unicast"],
    );
    reply.assert_error(455, "PAUSE first");
    assert_eq!(reply.reason, "Method Not Valid in This State");
    assert_eq!(client.mock.transports.len(), 1);
}

#[test]
fn a_second_setup_replaces_the_transport() {
    let mut client = Client::new();
    let first = client.setup_tcp("vod");
    let session = first.get("Session").unwrap().to_owned();
    let reply = client.request(
        "SETUP",
        "rtsp://h/vod/trackID=0",
        2,
        &[
            "Transport: RTP/AVP;unicast;client_port=6000-6001",
            &format!("Session: {}", Client::id()),
        ],
    );
    assert_eq!(reply.status, 200);
    assert_eq!(reply.get("Session"), Some(session.as_str()), "same session");
    assert_eq!(client.mock.torn_down, [1], "the old transport went first");
    assert_eq!(client.mock.transports.len(), 2);
    // The new transport is the one torn down at the end.
    client.request("TEARDOWN", "rtsp://h/vod/", 3, &[]);
    assert_eq!(client.mock.torn_down, [1, 2]);
}

#[test]
fn setup_on_a_directory_point_file() {
    let mut client = Client::new();
    client.setup_tcp("vod/clip.ts");
    assert_eq!(client.mock.transports[0].path.as_str(), "vod/clip.ts");
    let reply = client.play("vod/clip.ts", 2, &[]);
    assert_eq!(reply.get("Range"), Some("npt=0.000-5.000"));
    assert_eq!(
        reply.get("RTP-Info"),
        Some("url=rtsp://127.0.0.1:8554/vod/clip.ts/trackID=0;seq=1000;rtptime=90000")
    );
    assert_eq!(
        client.mock.transport_plays,
        [("vod/clip.ts".to_owned(), RESUME)]
    );
}

// ---------------------------------------------------------------------------------------------
// PLAY, PAUSE and ranges

#[test]
fn play_before_setup_is_455() {
    let mut client = Client::new();
    let reply = client.play("vod", 1, &[]);
    reply.assert_error(455, "PLAY before SETUP");
    let reply = client.request("PAUSE", "rtsp://h/vod/", 2, &[]);
    reply.assert_error(455, "PAUSE before SETUP");
    assert!(client.mock.transport_plays.is_empty());
    assert_eq!(client.mock.pauses, 0);
}

#[test]
fn pause_and_resume_on_demand() {
    let mut client = Client::new();
    client.setup_tcp("vod");
    assert_eq!(client.play("vod", 2, &["Range: npt=2.5-"]).status, 200);
    client.mock.pause_answer = Some(Ok(4_200));
    let reply = client.request("PAUSE", "rtsp://h/vod/", 3, &[]);
    assert_eq!(reply.status, 200);
    assert_eq!(reply.get("Session"), Some(session_header().as_str()));
    assert_eq!(client.mock.pauses, 1);
    assert!(client
        .logs(LogLevel::INFO)
        .last()
        .unwrap()
        .ends_with("-> 200 (paused at npt 4.200)"));
    // PAUSE while paused: nothing to do.
    assert_eq!(client.request("PAUSE", "rtsp://h/vod/", 4, &[]).status, 200);
    assert_eq!(client.mock.pauses, 1);
    // PLAY without Range resumes.
    let reply = client.play("vod", 5, &[]);
    assert_eq!(reply.status, 200);
    assert_eq!(
        client.mock.transport_plays,
        [("vod".to_owned(), 2500), ("vod".to_owned(), RESUME)]
    );
}

#[test]
fn seek_ranges() {
    let mut client = Client::new();
    client.setup_tcp("vod");
    let reply = client.play("vod", 2, &["Range: npt=0:00:05.5-"]);
    assert_eq!(reply.get("Range"), Some("npt=5.500-10.021"));
    client.play("vod", 3, &["Range: npt=now-"]);
    assert_eq!(
        client.mock.transport_plays,
        [("vod".to_owned(), 5500), ("vod".to_owned(), RESUME)]
    );
    client
        .play("vod", 4, &["Range: npt=11-"])
        .assert_error(457, "past the end");
    client
        .play("vod", 5, &["Range: npt=abc-"])
        .assert_error(457, "invalid range");
    client
        .play("vod", 6, &["Range: smpte=0:10:00-"])
        .assert_error(457, "normal play time");
    assert_eq!(client.mock.transport_plays.len(), 2);
    let reply = client.play("vod", 7, &[]);
    assert_eq!(reply.status, 200, "refused ranges leave the session usable");
}

#[test]
fn live_points_refuse_seeks_and_pauses() {
    let mut client = Client::new();
    client.setup_tcp("live");
    // Not playing yet: the plugin knows a live point cannot pause.
    let reply = client.request("PAUSE", "rtsp://h/live/", 2, &[]);
    reply.assert_error(455, "is live and cannot pause");
    for (cseq, range) in [(3, "npt=5-"), (4, "npt=0-10"), (5, "npt=0.001-")] {
        let header = format!("Range: {range}");
        let reply = client.play("live", cseq, &[&header]);
        reply.assert_error(457, "cannot seek");
    }
    assert!(client.mock.transport_plays.is_empty());
    for (cseq, range, answer) in [
        (6, "npt=0-", "npt=0.000-"),
        (7, "npt=0.000-", "npt=0.000-"),
        (8, "npt=now-", "npt=now-"),
    ] {
        let header = format!("Range: {range}");
        let reply = client.play("live", cseq, &[&header]);
        assert_eq!(reply.get("Range"), Some(answer), "{range}");
    }
    assert_eq!(client.play("live", 9, &[]).get("Range"), Some("npt=now-"));
    // Playing: the host refuses the pause.
    client.mock.pause_answer = Some(Err(HostError::new(
        ErrorCode::NOT_SEEKABLE,
        "`live` is a broadcast point",
    )));
    let reply = client.request("PAUSE", "rtsp://h/live/", 10, &[]);
    reply.assert_error(455, "`live` is a broadcast point");
    assert_eq!(client.mock.pauses, 1);
}

#[test]
fn host_seek_refusals_are_457() {
    let mut client = Client::new();
    client.setup_tcp("vod");
    client.mock.play_refusals.insert(
        "vod".to_owned(),
        HostError::new(ErrorCode::NOT_SEEKABLE, "this file has no index"),
    );
    client
        .play("vod", 2, &["Range: npt=5-"])
        .assert_error(457, "this file has no index");
    client.mock.play_refusals.insert(
        "vod".to_owned(),
        HostError::new(ErrorCode::BAD_RANGE, "past the end"),
    );
    client
        .play("vod", 3, &["Range: npt=5-"])
        .assert_error(457, "past the end");
    client.mock.play_refusals.insert(
        "vod".to_owned(),
        HostError::new(ErrorCode::DRAINING, "draining"),
    );
    client.play("vod", 4, &[]).assert_error(503, "draining");
}

#[test]
fn play_on_another_point_or_track() {
    let mut client = Client::new();
    client.setup_tcp("vod");
    client
        .play("live", 2, &[])
        .assert_error(459, "plays `vod`, not `live`");
    let reply = client.request("PLAY", "rtsp://h/vod/trackID=2", 3, &[]);
    reply.assert_error(404, "no track 2");
    let reply = client.request("PLAY", "rtsp://127.0.0.1:8554/vod/trackID=0", 4, &[]);
    assert_eq!(reply.status, 200, "the track URL names the same session");
}

// ---------------------------------------------------------------------------------------------
// Sessions, CSeq, methods and syntax

#[test]
fn session_header_must_be_this_connections() {
    let mut client = Client::new();
    // Before any session exists.
    let reply = client.request("OPTIONS", "*", 1, &["Session: 12345678"]);
    reply.assert_error(454, "session `12345678` is not this connection's");
    assert_eq!(reply.reason, "Session Not Found");
    client.setup_tcp("vod");
    let reply = client.play("vod", 3, &["Session: 12345678;timeout=60"]);
    reply.assert_error(454, "12345678");
    assert_eq!(reply.get("Session"), None);
    assert!(client.mock.transport_plays.is_empty());
    let ours = format!("Session: {}", Client::id());
    assert_eq!(client.play("vod", 4, &[&ours]).status, 200);
}

#[test]
fn cseq_is_echoed_and_required() {
    let mut client = Client::new();
    for cseq in ["0", "7", "4294967295"] {
        client.send(format!("OPTIONS * RTSP/1.0\r\nCSeq: {cseq}\r\n\r\n").as_bytes());
        assert_eq!(client.response().cseq(), Some(cseq));
    }
    client.send(b"OPTIONS * RTSP/1.0\r\nUser-Agent: x\r\n\r\n");
    let reply = client.response();
    reply.assert_error(400, "CSeq header required");
    assert_eq!(reply.cseq(), None);
    client.send(b"OPTIONS * RTSP/1.0\r\ncseq: abc\r\n\r\n");
    let reply = client.response();
    reply.assert_error(400, "invalid CSeq");
    assert_eq!(reply.cseq(), None);
    // Header names are case-insensitive.
    client.send(b"OPTIONS * RTSP/1.0\r\ncseq: 12\r\n\r\n");
    assert_eq!(client.response().cseq(), Some("12"));
    assert!(!client.mock.closed);
}

#[test]
fn unknown_methods_are_501() {
    let mut client = Client::new();
    for (cseq, method) in [
        (1, "ANNOUNCE"),
        (2, "RECORD"),
        (3, "REDIRECT"),
        (4, "options"),
    ] {
        let reply = client.request(method, "rtsp://h/live", cseq, &[]);
        reply.assert_error(501, "is not implemented");
        assert_eq!(reply.get("Public"), Some(PUBLIC));
        assert_eq!(reply.cseq(), Some(cseq.to_string().as_str()));
    }
    assert!(!client.mock.closed);
}

#[test]
fn malformed_requests_are_400_and_close() {
    for bad in [
        &b"OPTIONS * RTSP/1.0\r\nNo colon\r\nCSeq: 3\r\n\r\n"[..],
        b"HELLO\r\n\r\n",
        b"\x16\x03\x01\x00\x05hello",
        b"OPTIONS * HTTP/1.1\r\nCSeq: 3\r\n\r\n",
    ] {
        let mut client = Client::new();
        client.send(bad);
        let reply = client.response();
        reply.assert_error(400, "malformed request");
        assert!(client.mock.closed, "{:?}", String::from_utf8_lossy(bad));
        client.send(b"OPTIONS * RTSP/1.0\r\nCSeq: 4\r\n\r\n");
        assert!(client.responses().is_empty(), "nothing after closing");
    }
    // The CSeq is echoed when it can be found.
    let mut client = Client::new();
    client.send(b"OPTIONS * RTSP/1.0\r\nNo colon\r\nCSeq: 3\r\n\r\n");
    assert_eq!(client.response().cseq(), Some("3"));
    // A URL that is not an RTSP one, in a well-formed request: 400, connection kept.
    let mut client = Client::new();
    client
        .request("DESCRIBE", "http://h/live", 5, &[])
        .assert_error(400, "not served");
    client
        .request("DESCRIBE", "rtsp://h/vod/../x", 6, &[])
        .assert_error(400, "`..`");
    assert!(!client.mock.closed);
}

#[test]
fn other_versions_are_505() {
    let mut client = Client::new();
    client.send(b"OPTIONS * RTSP/2.0\r\nCSeq: 1\r\n\r\n");
    let reply = client.response();
    reply.assert_error(505, "RTSP/2.0 is not supported; use RTSP/1.0");
    assert_eq!(reply.cseq(), Some("1"));
    assert!(!client.mock.closed);
}

#[test]
fn oversized_requests_are_refused_and_closed() {
    let config = Config {
        max_request_bytes: 1024,
        ..Config::default()
    };
    let mut client = Client::with_config(config);
    let mut big = b"OPTIONS * RTSP/1.0\r\nCSeq: 2\r\nX-Pad: ".to_vec();
    big.extend_from_slice(&[b'a'; 1100]);
    client.send_in_pieces(&big, 100);
    let reply = client.response();
    reply.assert_error(400, "request head too large");
    assert_eq!(reply.cseq(), Some("2"));
    assert!(client.mock.closed);

    let mut client = Client::with_config(config);
    client.send(b"SET_PARAMETER * RTSP/1.0\r\nCSeq: 3\r\nContent-Length: 2000\r\n\r\n");
    client.response().assert_error(413, "too large");
    assert!(client.mock.closed);
}

#[test]
fn require_is_refused_with_551() {
    let mut client = Client::new();
    let reply = client.request("OPTIONS", "*", 1, &["Require: com.example.feature"]);
    reply.assert_error(551, "com.example.feature");
    assert_eq!(reply.get("Unsupported"), Some("com.example.feature"));
}

#[test]
fn parameters() {
    let mut client = Client::new();
    client.setup_tcp("vod");
    let session = format!("Session: {}", Client::id());
    let reply = client.request("GET_PARAMETER", "rtsp://h/vod/", 2, &[&session]);
    assert_eq!(reply.status, 200);
    assert_eq!(reply.get("Session"), Some(session_header().as_str()));
    assert_eq!(reply.body, "");
    assert_eq!(
        client
            .request("SET_PARAMETER", "rtsp://h/vod/", 3, &[])
            .status,
        200
    );
    client.send(
        b"SET_PARAMETER rtsp://h/vod/ RTSP/1.0\r\nCSeq: 4\r\nContent-Type: text/parameters\r\nContent-Length: 11\r\n\r\nbarparam: ",
    );
    assert!(client.responses().is_empty(), "waits for the whole body");
    client.send(b"1");
    let reply = client.response();
    reply.assert_error(451, "no parameters that can be set");
    assert_eq!(reply.reason, "Parameter Not Understood");
    assert!(!client.mock.closed);
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let mut client = Client::new();
    let mut bytes = request("OPTIONS", "*", 1, &[]);
    bytes.extend(request("DESCRIBE", "rtsp://h/vod", 2, &[]));
    bytes.extend(request(
        "SETUP",
        "rtsp://h/vod/trackID=0",
        3,
        &["Transport: RTP/AVP/TCP;unicast;interleaved=0-1"],
    ));
    bytes.extend(request("PLAY", "rtsp://h/vod/", 4, &[]));
    bytes.extend(request("TEARDOWN", "rtsp://h/vod/", 5, &[]));
    bytes.extend(request("OPTIONS", "*", 6, &[]));
    client.send(&bytes);
    let replies = client.responses();
    assert_eq!(
        cseqs(&replies),
        ["1", "2", "3", "4", "5"],
        "none after TEARDOWN"
    );
    assert!(client.mock.closed);
}

// ---------------------------------------------------------------------------------------------
// Interleaved data, timers and events

#[test]
fn stray_interleaved_frames_are_logged_and_ignored() {
    let mut client = Client::new();
    client.send(b"$\x01\x00\x02ab");
    let warnings = client.logs(LogLevel::WARN);
    assert_eq!(warnings.len(), 1);
    assert!(
        warnings[0].contains("channel 1 (2 bytes) ignored: there is no session"),
        "{}",
        warnings[0]
    );
    client.setup_tcp("vod");
    // Channels 0-1 are the session's; 2 is not. Five stray frames: logged 1st, 2nd, 4th.
    for _ in 0..4 {
        client.send(b"$\x02\x00\x00");
    }
    client.send(b"$\x00\x00\x01x$\x01\x00\x00");
    let warnings = client.logs(LogLevel::WARN);
    assert_eq!(warnings.len(), 3, "{warnings:?}");
    assert!(warnings[2].contains("this session uses channels 0-1 (4 such frames so far)"));
    assert!(client.responses().is_empty());
    assert!(!client.mock.closed, "the session goes on");
    assert_eq!(client.play("vod", 2, &[]).status, 200);
}

#[test]
fn interleaved_frames_on_a_udp_session_are_stray() {
    let mut client = Client::new();
    client.request(
        "SETUP",
        "rtsp://h/vod/trackID=0",
        1,
        &["Transport: RTP/AVP;unicast;client_port=5000-5001"],
    );
    client.mock.timers.remove(&SESSION_TIMER.get());
    client.send(b"$\x01\x00\x00");
    assert_eq!(client.session_timer(), None, "not a keep-alive");
    assert!(client.logs(LogLevel::WARN)[0].contains("no interleaved transport"));
}

#[test]
fn session_timeout_tears_down_and_closes() {
    let mut client = Client::new();
    assert_eq!(client.session_timer(), Some(60_000), "armed on open");
    client.setup_tcp("vod");
    client.play("vod", 2, &[]);
    client.fire(SESSION_TIMER);
    assert!(client.mock.closed);
    assert_eq!(client.mock.torn_down, [1]);
    let warnings = client.logs(LogLevel::WARN);
    assert!(
        warnings
            .last()
            .unwrap()
            .contains("timed out: no request or RTCP for 60000 ms"),
        "{warnings:?}"
    );
    assert!(client.responses().is_empty());
}

#[test]
fn an_idle_connection_without_session_is_closed() {
    let config = Config {
        session_timeout: Duration::from_millis(1_500),
        ..Config::default()
    };
    let mut client = Client::with_config(config);
    assert_eq!(client.session_timer(), Some(1_500));
    client.fire(SESSION_TIMER);
    assert!(client.mock.closed);
    assert!(client.mock.torn_down.is_empty());
    assert_eq!(
        client.logs(LogLevel::INFO),
        ["idle connection closed: no request for 1500 ms"]
    );
}

#[test]
fn requests_and_rtcp_over_udp_reset_the_session_timer() {
    let config = Config {
        session_timeout: Duration::from_millis(1_500),
        ..Config::default()
    };
    let mut client = Client::with_config(config);
    let reply = client.setup_tcp("vod");
    assert_eq!(
        reply.get("Session"),
        Some(format!("{};timeout=1", Client::id()).as_str()),
        "whole seconds, rounded down"
    );
    client.mock.timers.remove(&SESSION_TIMER.get());
    client.request("GET_PARAMETER", "rtsp://h/vod/", 2, &[]);
    assert_eq!(client.session_timer(), Some(1_500));
    client.mock.timers.remove(&SESSION_TIMER.get());
    client.activity(99);
    assert_eq!(client.session_timer(), None, "not this session's transport");
    client.activity(1);
    assert_eq!(client.session_timer(), Some(1_500));
}

#[test]
fn header_timer_runs_only_while_a_request_is_partial() {
    let mut client = Client::new();
    assert_eq!(
        client.header_timer(),
        None,
        "idle is the session timer's business"
    );
    client.send(b"OPTIONS * RTSP/1.0\r\nCS");
    assert_eq!(client.header_timer(), Some(10_000));
    client.send(b"eq: 1\r\n\r\n");
    assert_eq!(client.header_timer(), None);
    assert_eq!(client.response().status, 200);
    // A stale expiry does nothing.
    client.fire(HEADER_TIMER);
    assert!(!client.mock.closed);
    // A request that stalls gets 408.
    client.send(b"DESCRIBE rtsp://h/vod RTSP/1.0\r\n");
    client.fire(HEADER_TIMER);
    client
        .response()
        .assert_error(408, "request not complete within 10000 ms");
    assert!(client.mock.closed);
    assert_eq!(client.header_timer(), None);
    assert_eq!(client.session_timer(), None, "cancelled on close");
}

#[test]
fn stream_end_on_demand_leaves_the_session_open() {
    let mut client = Client::new();
    client.setup_tcp("vod");
    client.play("vod", 2, &[]);
    client.stream_ended(EndReason::COMPLETE);
    assert!(!client.mock.closed);
    assert!(client.mock.torn_down.is_empty());
    assert!(client
        .logs(LogLevel::INFO)
        .last()
        .unwrap()
        .contains("stream complete"));
    // Not playing any more: PAUSE is a no-op.
    assert_eq!(client.request("PAUSE", "rtsp://h/vod/", 3, &[]).status, 200);
    assert_eq!(client.mock.pauses, 0);
}

#[test]
fn live_source_end_closes_the_connection() {
    for reason in [
        EndReason::SOURCE_ENDED,
        EndReason::POINT_CLOSED,
        EndReason::SOURCE_ERROR,
    ] {
        let mut client = Client::new();
        client.setup_tcp("live");
        client.play("live", 2, &[]);
        client.stream_ended(reason);
        assert!(client.mock.closed, "{reason:?}");
        assert_eq!(client.mock.torn_down, [1]);
        assert!(client
            .logs(LogLevel::INFO)
            .last()
            .unwrap()
            .contains("closing the connection"));
    }
}

#[test]
fn teardown_and_peer_close_release_the_transport() {
    let mut client = Client::new();
    client.setup_tcp("vod");
    let reply = client.request("TEARDOWN", "rtsp://h/vod/", 2, &[]);
    assert_eq!(reply.status, 200);
    assert_eq!(reply.get("Session"), Some(session_header().as_str()));
    assert!(client.mock.closed);
    assert_eq!(client.mock.torn_down, [1]);

    let mut client = Client::new();
    client.setup_tcp("vod");
    client.play("vod", 2, &[]);
    client.peer_closed();
    assert!(client.mock.closed);
    assert_eq!(client.mock.torn_down, [1]);
    // Late events change nothing.
    client.stream_ended(EndReason::SOURCE_ENDED);
    client.fire(SESSION_TIMER);
    assert_eq!(client.mock.torn_down, [1]);
    assert!(client.responses().is_empty());
}

#[test]
fn teardown_without_a_session_just_closes() {
    let mut client = Client::new();
    let reply = client.request("TEARDOWN", "rtsp://h/vod/", 1, &[]);
    assert_eq!(reply.status, 200);
    assert_eq!(reply.get("Session"), None);
    assert!(client.mock.closed);
    assert!(client.mock.torn_down.is_empty());
}

#[test]
fn session_ids_are_mixed_and_long() {
    let ids: Vec<String> = (0..4).map(session_id).collect();
    for id in &ids {
        assert_eq!(id.len(), 16);
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
    }
    assert_ne!(ids[1], ids[2]);
    assert_eq!(session_id(1), ids[1], "stable");
}

#[test]
fn a_signed_urls_token_carries_on_to_setup_and_play_on_the_control_url() {
    let mut client = Client::new();
    let described = client.request("DESCRIBE", "rtsp://h/vod?expires=9&token=abc", 1, &[]);
    assert_eq!(described.status, 200, "{described:?}");
    client.setup_tcp("vod");
    let played = client.play("vod", 3, &[]);
    assert_eq!(played.status, 200, "{played:?}");
    let signed = Credentials::url_query("expires=9&token=abc");
    assert!(client.mock.credentials.len() >= 3);
    assert!(client.mock.credentials.iter().all(|c| *c == signed));
}

#[test]
fn an_authorization_header_is_presented_and_a_request_without_anything_presents_none() {
    let mut client = Client::new();
    client.request("OPTIONS", "rtsp://h/vod", 1, &[]);
    client.request(
        "DESCRIBE",
        "rtsp://h/vod",
        2,
        &["Authorization: Bearer tok"],
    );
    assert_eq!(
        client.mock.credentials,
        vec![Credentials::none(), Credentials::bearer("tok")]
    );
}

#[test]
fn access_refusals_are_401_with_a_challenge_403_and_503_with_retry_after() {
    let mut client = Client::new();
    client
        .mock
        .refuse("keyed", ErrorCode::UNAUTHORIZED, "credentials are required")
        .refuse("signed", ErrorCode::FORBIDDEN, "the signed URL expired")
        .refuse(
            "busy",
            ErrorCode::RATE_LIMITED,
            "too many failed attempts; retry in 9 s",
        );
    let reply = client.request("DESCRIBE", "rtsp://h/keyed", 1, &[]);
    reply.assert_error(401, "credentials are required");
    assert_eq!(
        reply.get("WWW-Authenticate"),
        Some("Basic realm=\"ferrocast\"")
    );
    let reply = client.request("DESCRIBE", "rtsp://h/signed?expires=1&token=x", 2, &[]);
    reply.assert_error(403, "the signed URL expired");
    let reply = client.request("DESCRIBE", "rtsp://h/busy", 3, &[]);
    reply.assert_error(503, "retry in 9 s");
    assert_eq!(reply.get("Retry-After"), Some("9"));
    assert!(!client.mock.closed);
}

// ---------------------------------------------------------------------------------------------
// TEARDOWN in every state

#[test]
fn teardown_is_answered_in_every_state_of_a_session() {
    let session = format!("Session: {}", Client::id());
    // Playing live, and after a PAUSE the live point refused (GStreamer pauses before it
    // tears down when it stops).
    for paused in [false, true] {
        let mut client = Client::new();
        client.setup_tcp("live");
        assert_eq!(client.play("live", 2, &[session.as_str()]).status, 200);
        if paused {
            client.mock.pause_answer = Some(Err(HostError::new(
                ErrorCode::INVALID_STATE,
                "`live` is live and cannot pause",
            )));
            let reply = client.request("PAUSE", "rtsp://h/live/", 3, &[session.as_str()]);
            assert_eq!(reply.status, 455, "{reply:?}");
        }
        let reply = client.request("TEARDOWN", "rtsp://h/live/", 4, &[session.as_str()]);
        assert_eq!(reply.status, 200, "paused {paused}: {reply:?}");
        assert!(client.mock.closed);
        assert_eq!(client.mock.torn_down, [1]);
    }
    // On demand: playing, paused, and at the end of the file; on the track URL (as
    // GStreamer names it) and on the aggregate one.
    for state in ["playing", "paused", "complete"] {
        for url in ["rtsp://h/vod/trackID=0", "rtsp://h/vod/"] {
            let mut client = Client::new();
            client.setup_tcp("vod");
            assert_eq!(client.play("vod", 2, &[session.as_str()]).status, 200);
            match state {
                "paused" => {
                    let reply = client.request("PAUSE", "rtsp://h/vod/", 3, &[session.as_str()]);
                    assert_eq!(reply.status, 200, "{reply:?}");
                }
                "complete" => client.stream_ended(EndReason::COMPLETE),
                _ => {}
            }
            let reply = client.request("TEARDOWN", url, 4, &[session.as_str()]);
            assert_eq!(reply.status, 200, "{state} {url}: {reply:?}");
            assert_eq!(reply.get("Session"), Some(session_header().as_str()));
            assert!(client.mock.closed);
            assert_eq!(client.mock.torn_down, [1]);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// RTSP over HTTP

const COOKIE: &str = "3bf05ca8a1b9";

fn tunnel_get() -> Vec<u8> {
    format!("GET /live HTTP/1.1\r\nHost: 127.0.0.1\r\nx-sessioncookie: {COOKIE}\r\nAccept: application/x-rtsp-tunnelled\r\nPragma: no-cache\r\n\r\n").into_bytes()
}

fn tunnel_post() -> Vec<u8> {
    format!("POST /live HTTP/1.1\r\nHost: 127.0.0.1\r\nx-sessioncookie: {COOKIE}\r\nContent-Type: application/x-rtsp-tunnelled\r\nContent-Length: 32767\r\n\r\n").into_bytes()
}

fn base64(bytes: &[u8]) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    for chunk in bytes.chunks(3) {
        let mut n = [0u8; 3];
        n[..chunk.len()].copy_from_slice(chunk);
        let bits = u32::from_be_bytes([0, n[0], n[1], n[2]]);
        for i in 0..4 {
            out.push(if i <= chunk.len() {
                ALPHABET[(bits >> (18 - 6 * i) & 63) as usize]
            } else {
                b'='
            });
        }
    }
    out
}

#[test]
fn a_tunnel_get_opens_the_tunnel_and_then_speaks_rtsp() {
    for split in [1, 7, usize::MAX] {
        let mut client = Client::new();
        client.send_in_pieces(&tunnel_get(), split);
        let written = String::from_utf8(client.take_written()).unwrap();
        assert!(written.starts_with("HTTP/1.0 200 OK\r\n"), "{written}");
        assert!(written.contains("Content-Type: application/x-rtsp-tunnelled\r\n"));
        assert_eq!(client.mock.opened_tunnels, [COOKIE]);
        assert!(!client.mock.closed);
        assert_eq!(client.header_timer(), None);
        // What the POST half feeds arrives as on_data.
        let reply = client.request("OPTIONS", "*", 1, &[]);
        assert_eq!(reply.status, 200);
        client.setup_tcp("live");
    }
}

#[test]
fn a_tunnel_post_feeds_decoded_requests_and_is_never_answered() {
    let mut client = Client::new();
    client.mock.tunnels.push(COOKIE.to_owned());
    let requests = [
        request("OPTIONS", "rtsp://h/live", 1, &[]),
        request("DESCRIBE", "rtsp://h/live", 2, &["Accept: application/sdp"]),
    ];
    let mut bytes = tunnel_post();
    for one in &requests {
        bytes.extend(base64(one));
    }
    client.send_in_pieces(&bytes, 5);
    assert!(client.take_written().is_empty(), "the POST gets no answer");
    let fed: Vec<u8> = client
        .mock
        .tunnel_feeds
        .iter()
        .flat_map(|(cookie, data)| {
            assert_eq!(cookie, COOKIE);
            data.clone()
        })
        .collect();
    assert_eq!(fed, requests.concat());
    assert!(!client.mock.closed);
    // The POST going away leaves the tunnel alone.
    client.peer_closed();
    assert!(client.mock.closed_tunnels.is_empty());
}

#[test]
fn a_post_without_its_get_is_refused() {
    let mut client = Client::new();
    client.send(&tunnel_post());
    let written = String::from_utf8(client.take_written()).unwrap();
    assert!(
        written.starts_with("HTTP/1.0 404 Not Found\r\n"),
        "{written}"
    );
    assert!(client.mock.closed);
    assert!(client.mock.tunnel_feeds.is_empty());
}

#[test]
fn a_broken_base64_body_closes_the_tunnel() {
    let mut client = Client::new();
    client.mock.tunnels.push(COOKIE.to_owned());
    let mut bytes = tunnel_post();
    bytes.extend(base64(&request("OPTIONS", "*", 1, &[])));
    bytes.extend(b"not base64!");
    client.send(&bytes);
    let written = String::from_utf8(client.take_written()).unwrap();
    assert!(
        written.starts_with("HTTP/1.0 400 Bad Request\r\n"),
        "{written}"
    );
    assert!(written.contains("not base64"), "{written}");
    assert_eq!(client.mock.closed_tunnels, [COOKIE]);
    assert!(client.mock.closed);
}

#[test]
fn plain_http_on_the_rtsp_port_is_refused_in_http() {
    let mut client = Client::new();
    client.send(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n");
    let written = String::from_utf8(client.take_written()).unwrap();
    assert!(
        written.starts_with("HTTP/1.0 400 Bad Request\r\n"),
        "{written}"
    );
    assert!(client.mock.closed);
    assert!(client.mock.opened_tunnels.is_empty());
}

//! One RTSP connection: the state machine that turns requests into host actions.
//!
//! The connection carries at most one RTSP session (one client, one point, one track). Its
//! phases follow RFC 2326 Appendix A:
//!
//! ```text
//!            SETUP                PLAY
//!   Init ───────────▶ Ready ─────────────▶ Playing
//!     ▲   (461: stay)   ▲ ◀───────────────    │
//!     │                 │   PAUSE, end of     │
//!     └── TEARDOWN ─────┴── file ─────────────┘   (TEARDOWN closes the connection)
//! ```
//!
//! - **Init**: no transport. OPTIONS, DESCRIBE, GET/SET_PARAMETER and SETUP are valid; PLAY
//!   and PAUSE answer `455`. A SETUP whose transports the host refuses with
//!   `UNSUPPORTED_TRANSPORT` answers `461` and stays here: that is what makes ffmpeg and
//!   GStreamer roll over from UDP to TCP on the same connection.
//! - **Ready**: a transport is set up (the session id exists from the first successful SETUP
//!   on). Another SETUP replaces the transport; PLAY starts media.
//! - **Playing**: media flows on the transport. PAUSE (on-demand points only) returns to Ready
//!   keeping the position, so a PLAY without `Range` resumes.
//!
//! Requests are answered in order, several per read if the client pipelines. Interleaved `$`
//! frames between requests are skipped; on the session's RTCP channel they count as a sign of
//! life. Two timers guard the connection:
//!
//! - [`HEADER_TIMER`] runs only while a request is partly received: a request must be
//!   complete `header_timeout` after its first byte, or the client gets `408` and the
//!   connection closes.
//! - [`SESSION_TIMER`] runs all the time and is re-armed by every request, every RTCP frame on
//!   the session's interleaved channel and every [`Session::on_transport_activity`] (RTCP over
//!   UDP). When it fires, the transports are torn down and the connection is closed. Without
//!   a session it closes idle connections.
//!
//! Every request is logged once: INFO for successes, WARN for refusals with the reason.
//!
//! A connection's first bytes decide its role: RTSP, the GET half of an HTTP tunnel (an HTTP
//! answer, then RTSP as above, with the requests fed in by the host from the POST half), or
//! the POST half (base64 decoded and fed to the GET half, never answered; a body that is not
//! base64 closes the tunnel).

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use ferrocast_plugin_api::{
    CredentialKind, Credentials, EndReason, ErrorCode, Host, HostError, LogLevel, PlayInfo,
    PointInfo, PointKind, Session, SessionInfo, StreamEnded, TimerId, TransportInfo, TransportKind,
    TransportRequest, RESUME,
};

use ferrocast_plugin_kit::auth;

use crate::proto::range::{self, Npt, NptRange};
use crate::proto::request::{valid_cseq, Limits, Message, ParseError, Request, RequestParser};
use crate::proto::response::{self, Response};
use crate::proto::sdp::{self, Description, Timeline};
use crate::proto::transport::{self, Choice, Refusal};
use crate::proto::tunnel::{self, Base64Stream, Opening};
use crate::proto::url::{self, Target};

/// The `Server` header of every response.
pub const SERVER: &str = concat!("ferrocast/", env!("CARGO_PKG_VERSION"));
/// The timer of a partly received request.
pub const HEADER_TIMER: TimerId = TimerId::new(1);
/// The session (and idle connection) timer.
pub const SESSION_TIMER: TimerId = TimerId::new(2);
/// The methods this server implements, for `Public`.
pub const PUBLIC: &str =
    "OPTIONS, DESCRIBE, SETUP, PLAY, PAUSE, TEARDOWN, GET_PARAMETER, SET_PARAMETER";
/// The reason phrase of a `403` for a point that does not allow RTSP.
pub const PROTOCOL_DISABLED_REASON: &str = "RTSP Disabled On This Point";

const PLAIN_TEXT: &str = "text/plain; charset=utf-8";
const SDP: &str = "application/sdp";
/// Longest request URL (or other client text) quoted in a log line.
const MAX_LOGGED_URL: usize = 256;
/// Longest method name quoted in a log line.
const MAX_LOGGED_METHOD: usize = 32;

/// Validated plugin settings shared by every session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// A session with no request and no RTCP for this long is torn down; a connection
    /// without a session and without requests is closed.
    pub session_timeout: Duration,
    /// Time allowed for a request to arrive in full once it has started.
    pub header_timeout: Duration,
    /// Largest request head, and largest request body.
    pub max_request_bytes: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            session_timeout: Duration::from_millis(60_000),
            header_timeout: Duration::from_millis(10_000),
            max_request_bytes: 16 * 1024,
        }
    }
}

/// The status answering a host refusal, and the reason phrase when it is not the standard
/// one. `NOT_SEEKABLE` is `455` here; PLAY answers it with `457` itself.
pub fn status_for(code: ErrorCode) -> (u16, Option<&'static str>) {
    match code {
        ErrorCode::NOT_FOUND => (404, None),
        ErrorCode::PROTOCOL_DISABLED => (403, Some(PROTOCOL_DISABLED_REASON)),
        ErrorCode::FORBIDDEN => (403, None),
        ErrorCode::UNAVAILABLE | ErrorCode::DRAINING => (503, None),
        ErrorCode::OVER_CAPACITY => (453, None),
        ErrorCode::UNSUPPORTED_TRANSPORT => (461, None),
        ErrorCode::NOT_SEEKABLE | ErrorCode::INVALID_STATE => (455, None),
        ErrorCode::BAD_RANGE => (457, None),
        ErrorCode::UNAUTHORIZED => (401, None),
        ErrorCode::RATE_LIMITED => (503, None),
        _ => (500, None),
    }
}

/// The session id for the connection numbered `id`: the number, mixed (SplitMix64) so that
/// ids of consecutive connections look unrelated, as 16 hex digits. Sessions are bound to
/// their connection, so the id needs to be unique, not secret.
pub fn session_id(id: u64) -> String {
    let mut z = id.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    format!("{:016X}", z ^ (z >> 31))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Init,
    Ready,
    Playing,
}

/// A transport the host set up.
#[derive(Clone, Debug)]
struct Transport {
    info: TransportInfo,
    choice: Choice,
}

/// The RTSP session, from the first successful SETUP on.
#[derive(Clone, Debug)]
struct Active {
    id: String,
    /// The point path (`point` or `point/file`).
    path: String,
    point: PointInfo,
    /// Track 0's control URL as the client sent it in SETUP, for `RTP-Info`.
    control_url: String,
    /// `None` after a replacing SETUP failed.
    transport: Option<Transport>,
}

/// What a response and its log line need to know about the request being answered.
struct Exchange {
    method: String,
    /// The URL for logs (no credentials, no query).
    url: String,
    cseq: Option<String>,
}

/// The RTSP session of one client connection.
pub struct RtspSession {
    config: Config,
    info: SessionInfo,
    parser: RequestParser,
    phase: Phase,
    active: Option<Active>,
    header_timer_armed: bool,
    /// Interleaved frames on channels that are not the session's.
    stray_frames: u64,
    closed: bool,
    /// What the client last presented: later requests of the session (SETUP and PLAY on
    /// the control URL, which has no query) carry the signed URL's token on.
    credentials: Credentials,
    /// How the connection's bytes are read, decided by its first bytes.
    role: Role,
}

/// What a connection turned out to be.
#[derive(Debug)]
enum Role {
    /// The first bytes, until they tell RTSP from the HTTP of a tunnel.
    Opening(Vec<u8>),
    /// RTSP: on its own, or the GET half of a tunnel (requests then arrive through the host).
    Rtsp,
    /// The POST half of tunnel `cookie`: base64 requests, handed to the GET half.
    TunnelPost {
        cookie: String,
        base64: Base64Stream,
    },
}

impl RtspSession {
    pub fn new(config: Config, info: SessionInfo) -> Self {
        let limits = Limits {
            max_head: config.max_request_bytes,
            max_body: config.max_request_bytes,
        };
        Self {
            config,
            info,
            parser: RequestParser::new(limits),
            phase: Phase::Init,
            active: None,
            header_timer_armed: false,
            stray_frames: 0,
            credentials: Credentials::none(),
            closed: false,
            role: Role::Opening(Vec::new()),
        }
    }

    /// The RTSP session id, once a SETUP succeeded.
    pub fn session_id(&self) -> Option<&str> {
        self.active.as_ref().map(|active| active.id.as_str())
    }

    // -----------------------------------------------------------------------------------
    // Input

    /// Handle every complete message in the buffer.
    fn drive(&mut self, host: &mut Host<'_>) {
        let mut handled = false;
        while !self.closed {
            match self.parser.next_message() {
                Ok(None) => break,
                Ok(Some(Message::Request(request))) => {
                    handled = true;
                    self.handle(host, request);
                }
                Ok(Some(Message::Interleaved { channel, length })) => {
                    handled = true;
                    self.interleaved(host, channel, length);
                }
                Err(error) => return self.parse_failed(host, &error),
            }
        }
        if self.closed {
            return;
        }
        // The header timeout covers one message, from its first byte: re-armed when a new
        // message started after a complete one, cancelled when nothing partial is left.
        if self.parser.in_message() {
            if handled || !self.header_timer_armed {
                host.set_timer(HEADER_TIMER, self.config.header_timeout);
                self.header_timer_armed = true;
            }
        } else if self.header_timer_armed {
            host.cancel_timer(HEADER_TIMER);
            self.header_timer_armed = false;
        }
    }

    /// Re-arm the session timer: the client showed life.
    fn touch(&mut self, host: &mut Host<'_>) {
        host.set_timer(SESSION_TIMER, self.config.session_timeout);
    }

    fn parse_failed(&mut self, host: &mut Host<'_>, error: &ParseError) {
        let exchange = Exchange {
            method: "request".to_owned(),
            url: "-".to_owned(),
            cseq: error.cseq.clone(),
        };
        self.refuse(host, &exchange, error.status(), &error.to_string());
        self.close(host);
    }

    fn interleaved(&mut self, host: &mut Host<'_>, channel: u8, length: u16) {
        let channels = match self.transport().map(|t| t.choice) {
            Some(Choice::Tcp { rtp, rtcp }) => Some((rtp, rtcp)),
            _ => None,
        };
        match channels {
            // RTCP receiver reports: the client is alive.
            Some((_, rtcp)) if channel == rtcp => self.touch(host),
            // RTP from a player makes no sense, but it is on the session's own channel.
            Some((rtp, _)) if channel == rtp => {}
            _ => {
                self.stray_frames += 1;
                // Logged on the 1st, 2nd, 4th, 8th… so a flood cannot flood the log.
                if self.stray_frames.is_power_of_two() {
                    let expected = match channels {
                        Some((rtp, rtcp)) => format!("this session uses channels {rtp}-{rtcp}"),
                        None if self.active.is_some() => {
                            "this session has no interleaved transport".to_owned()
                        }
                        None => "there is no session on this connection".to_owned(),
                    };
                    host.log(
                        LogLevel::WARN,
                        &format!(
                            "interleaved frame on channel {channel} ({length} bytes) ignored: {expected} ({} such frames so far)",
                            self.stray_frames
                        ),
                    );
                }
            }
        }
    }

    fn transport(&self) -> Option<&Transport> {
        self.active.as_ref()?.transport.as_ref()
    }

    // -----------------------------------------------------------------------------------
    // RTSP over HTTP

    /// Decide what the connection is from its first bytes: RTSP, or a half of a tunnel.
    fn open_connection(&mut self, host: &mut Host<'_>) {
        let Role::Opening(first) = &self.role else {
            return;
        };
        match tunnel::classify(first, self.config.max_request_bytes) {
            Opening::Undecided => {
                if !self.header_timer_armed {
                    host.set_timer(HEADER_TIMER, self.config.header_timeout);
                    self.header_timer_armed = true;
                }
            }
            Opening::Rtsp => {
                let first = first.clone();
                self.start_rtsp(host, &first);
            }
            Opening::Get { cookie, head_len } => {
                let rest = first[head_len..].to_vec();
                self.open_tunnel(host, &cookie, &rest);
            }
            Opening::Post { cookie, head_len } => {
                let rest = first[head_len..].to_vec();
                self.open_post(host, cookie, &rest);
            }
            Opening::Refused { status, message } => self.refuse_http(host, status, &message),
        }
    }

    /// Read `first` and what follows as RTSP.
    fn start_rtsp(&mut self, host: &mut Host<'_>, first: &[u8]) {
        self.role = Role::Rtsp;
        if self.header_timer_armed {
            host.cancel_timer(HEADER_TIMER);
            self.header_timer_armed = false;
        }
        self.parser.push(first);
        self.drive(host);
    }

    /// The GET half: open the tunnel, answer, and serve RTSP fed in by the POST half.
    fn open_tunnel(&mut self, host: &mut Host<'_>, cookie: &str, rest: &[u8]) {
        if let Err(error) = host.open_tunnel(cookie) {
            let status = match error.code {
                ErrorCode::INVALID_STATE => 403,
                ErrorCode::OVER_CAPACITY | ErrorCode::UNSUPPORTED_TRANSPORT => 503,
                _ => 400,
            };
            return self.refuse_http(host, status, &error.message);
        }
        host.write(&tunnel::get_answer(SERVER));
        host.log(
            LogLevel::INFO,
            "GET tunnel -> 200 (RTSP over HTTP: requests come on the POST with the same x-sessioncookie)",
        );
        self.touch(host);
        self.start_rtsp(host, rest);
    }

    /// The POST half: its body goes to the GET half of an open tunnel; never answered.
    fn open_post(&mut self, host: &mut Host<'_>, cookie: String, rest: &[u8]) {
        if self.header_timer_armed {
            host.cancel_timer(HEADER_TIMER);
            self.header_timer_armed = false;
        }
        if let Err(error) = host.feed_tunnel(&cookie, &[]) {
            let status = match error.code {
                ErrorCode::NOT_FOUND => 404,
                ErrorCode::FORBIDDEN => 403,
                _ => 503,
            };
            return self.refuse_http(host, status, &error.message);
        }
        host.log(
            LogLevel::INFO,
            "POST tunnel: its requests go to the GET with the same x-sessioncookie",
        );
        self.role = Role::TunnelPost {
            cookie,
            base64: Base64Stream::default(),
        };
        self.feed_post(host, rest);
    }

    /// Decode a piece of the POST body and hand the requests to the GET half. A body that
    /// is not base64 ends the tunnel: nothing after it can be trusted.
    fn feed_post(&mut self, host: &mut Host<'_>, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        self.touch(host);
        let Role::TunnelPost { cookie, base64 } = &mut self.role else {
            return;
        };
        let mut decoded = Vec::with_capacity(data.len() / 4 * 3 + 3);
        if let Err(error) = base64.decode(data, &mut decoded) {
            host.close_tunnel(cookie);
            let message = format!("{error}; the tunnel is closed");
            return self.refuse_http(host, 400, &message);
        }
        if decoded.is_empty() {
            return;
        }
        if let Err(error) = host.feed_tunnel(cookie, &decoded) {
            host.log(
                LogLevel::INFO,
                &format!("POST tunnel closed: {}", error.message),
            );
            self.close(host);
        }
    }

    /// Answer the HTTP request that opened the connection with a refusal, and close.
    fn refuse_http(&mut self, host: &mut Host<'_>, status: u16, message: &str) {
        host.write(&tunnel::http_refusal(status, SERVER, message));
        host.log(LogLevel::WARN, &format!("HTTP -> {status}: {message}"));
        self.close(host);
    }

    // -----------------------------------------------------------------------------------
    // Requests

    fn handle(&mut self, host: &mut Host<'_>, request: Request) {
        self.touch(host);
        let target = url::parse(&request.uri, &self.info.local, host.is_secure());
        let cseq = request.header("CSeq").map(str::to_owned);
        let exchange = Exchange {
            method: request.method.chars().take(MAX_LOGGED_METHOD).collect(),
            url: match &target {
                Ok(target) if target.asterisk => "*".to_owned(),
                Ok(target) => target.display(),
                Err(_) => request.uri.chars().take(MAX_LOGGED_URL).collect(),
            },
            cseq: cseq.clone().filter(|cseq| valid_cseq(cseq)),
        };
        if request.version != "RTSP/1.0" {
            let message = format!("{} is not supported; use RTSP/1.0", request.version);
            return self.refuse(host, &exchange, 505, &message);
        }
        match &cseq {
            None => return self.refuse(host, &exchange, 400, "CSeq header required"),
            Some(cseq) if !valid_cseq(cseq) => {
                let message = format!("invalid CSeq `{cseq}`; use a number");
                return self.refuse(host, &exchange, 400, &message);
            }
            Some(_) => {}
        }
        let known = PUBLIC.split(", ").any(|method| method == request.method);
        if !known {
            let message = format!(
                "method {} is not implemented; use {PUBLIC}",
                exchange.method
            );
            let response = self.base(&exchange, 501).header("Public", PUBLIC);
            return self.send_refusal(host, &exchange, response, &message);
        }
        if let Some(options) = request.header("Require").filter(|o| !o.is_empty()) {
            let options: String = options
                .chars()
                .filter(|c| c.is_ascii_graphic() || *c == ' ')
                .take(MAX_LOGGED_URL)
                .collect();
            let message = format!("options `{options}` are not supported");
            let response = self.base(&exchange, 551).header("Unsupported", options);
            return self.send_refusal(host, &exchange, response, &message);
        }
        if let Some(value) = request.header("Session") {
            let id = value.split(';').next().unwrap_or_default().trim();
            if self.session_id() != Some(id) {
                let shown: String = id.chars().take(MAX_LOGGED_URL).collect();
                let message = format!("session `{shown}` is not this connection's");
                return self.refuse(host, &exchange, 454, &message);
            }
        }
        let target = match target {
            Ok(target) => target,
            Err(why) => return self.refuse(host, &exchange, 400, &why.to_string()),
        };
        self.present_credentials(host, &request);
        match request.method.as_str() {
            "OPTIONS" => {
                let response = self.base(&exchange, 200).header("Public", PUBLIC);
                self.send(host, &exchange, response, "");
            }
            "DESCRIBE" => self.describe(host, &exchange, &target),
            "SETUP" => self.setup(host, &exchange, &request, &target),
            "PLAY" => self.play(host, &exchange, &request, &target),
            "PAUSE" => self.pause(host, &exchange, &target),
            "TEARDOWN" => self.teardown(host, &exchange),
            "GET_PARAMETER" => {
                // A keep-alive (ffmpeg, GStreamer). No parameters are readable, so a body
                // asking for some gets an empty answer, as RFC 2326 §10.8 allows.
                let response = self.base(&exchange, 200);
                self.send(host, &exchange, response, "");
            }
            "SET_PARAMETER" => {
                if request.body.is_empty() {
                    let response = self.base(&exchange, 200);
                    self.send(host, &exchange, response, "");
                } else {
                    // No parameter can be set; accepting one silently would lie.
                    let message = "this server has no parameters that can be set";
                    self.refuse(host, &exchange, 451, message);
                }
            }
            _ => unreachable!("every method of PUBLIC is handled"),
        }
    }

    /// Hand the host what this request presents (`Authorization`, or the URL's query), or
    /// else what an earlier request of the session did.
    fn present_credentials(&mut self, host: &mut Host<'_>, request: &Request) {
        let presented = auth::credentials(request.header("Authorization"), &request.uri);
        if presented.kind != CredentialKind::NONE {
            self.credentials = presented;
        }
        host.present_credentials(self.credentials.clone());
    }

    fn describe(&mut self, host: &mut Host<'_>, exchange: &Exchange, target: &Target) {
        if target.path.is_empty() {
            return self.refuse(host, exchange, 404, NO_POINT);
        }
        let point = match host.lookup(&target.path) {
            Ok(point) => point,
            Err(error) => return self.refuse_host(host, exchange, &error, false),
        };
        let timeline = if point.kind == PointKind::ON_DEMAND {
            Timeline::OnDemand {
                duration_ms: point.duration_ms,
            }
        } else {
            Timeline::Live
        };
        // The host always writes `ip:port`; the unspecified address stands in otherwise.
        let server_ip = self
            .info
            .local_addr()
            .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |local| local.ip())
            .to_string();
        let body = Description {
            session_id: sdp::origin_id(&target.path),
            version: 1,
            server_ip: &server_ip,
            name: &point.name,
            timeline,
        }
        .render();
        let response = self
            .base(exchange, 200)
            .header("Content-Base", target.content_base())
            .body(SDP, body);
        self.send(host, exchange, response, point.kind.as_str());
    }

    fn setup(
        &mut self,
        host: &mut Host<'_>,
        exchange: &Exchange,
        request: &Request,
        target: &Target,
    ) {
        if target.path.is_empty() {
            return self.refuse(host, exchange, 404, NO_POINT);
        }
        if let Some(track) = target.track.filter(|&track| track != 0) {
            let message = format!(
                "`{}` has no track {track}; its only track is trackID=0",
                target.path
            );
            return self.refuse(host, exchange, 404, &message);
        }
        if let Some(active) = &self.active {
            if active.path != target.path {
                let message = format!(
                    "this connection's session plays `{}`; set up `{}` on a connection of its own",
                    active.path, target.path
                );
                return self.refuse(host, exchange, 459, &message);
            }
        }
        if self.phase == Phase::Playing {
            let message = "transports cannot change while playing; PAUSE first";
            return self.refuse(host, exchange, 455, message);
        }
        let point = match host.lookup(&target.path) {
            Ok(point) => point,
            Err(error) => return self.refuse_host(host, exchange, &error, false),
        };
        let header = request
            .headers_named("Transport")
            .collect::<Vec<_>>()
            .join(",");
        let specs = transport::parse(&header);
        if specs.is_empty() {
            let message = "Transport header required, e.g. RTP/AVP/TCP;unicast;interleaved=0-1";
            return self.refuse(host, exchange, 400, message);
        }
        // The client lists its transports by preference: the first one the host accepts
        // wins. When none does, the answer is the refusal of the client's first choice.
        let mut refusals: Vec<Refusal> = Vec::new();
        let mut accepted = None;
        for spec in specs {
            let choice = match spec.and_then(|spec| spec.choose()) {
                Ok(choice) => choice,
                Err(refusal) => {
                    refusals.push(refusal);
                    continue;
                }
            };
            // A new SETUP replaces the transport; the old one goes first so that a host
            // allowing one transport per session can accept the new one.
            self.release_transport(host);
            match host.setup_transport(transport_request(&target.path, choice)) {
                Ok(info) => {
                    accepted = Some(Transport { info, choice });
                    break;
                }
                Err(error) if error.code == ErrorCode::UNSUPPORTED_TRANSPORT => {
                    refusals.push(Refusal {
                        status: 461,
                        message: error.message.to_string(),
                    });
                }
                Err(error) => return self.refuse_host(host, exchange, &error, false),
            }
        }
        let Some(transport) = accepted else {
            let first = refusals.first().cloned().unwrap_or(Refusal {
                status: 461,
                message: String::new(),
            });
            let all: Vec<String> = refusals.iter().map(|r| r.message.clone()).collect();
            return self.refuse(host, exchange, first.status, &all.join("; "));
        };
        let id = match &self.active {
            Some(active) => active.id.clone(),
            None => session_id(self.info.id),
        };
        let control_url = if target.track == Some(0) {
            // Exactly as the client wrote it: ffmpeg matches RTP-Info URLs with strcmp.
            let raw = request.uri.trim_end_matches('/');
            if raw.starts_with('/') {
                target.track_url()
            } else {
                raw.to_owned()
            }
        } else {
            target.track_url()
        };
        let answer = match transport.choice {
            Choice::Udp { rtp, rtcp } => transport::format_udp(
                (rtp, rtcp),
                (
                    transport.info.server_rtp_port,
                    transport.info.server_rtcp_port,
                ),
                transport.info.ssrc,
            ),
            Choice::Tcp { rtp, rtcp } => transport::format_tcp((rtp, rtcp), transport.info.ssrc),
        };
        let detail = format!(
            "{} {}, transport {} by {}",
            transport.info.kind.as_str(),
            match transport.choice {
                Choice::Udp { rtp, rtcp } => format!("to client ports {rtp}-{rtcp}"),
                Choice::Tcp { rtp, rtcp } => format!("on channels {rtp}-{rtcp}"),
            },
            transport.info.id,
            transport.info.plugin
        );
        self.active = Some(Active {
            id,
            path: target.path.clone(),
            point,
            control_url,
            transport: Some(transport),
        });
        self.phase = Phase::Ready;
        let response = self.base(exchange, 200).header("Transport", answer);
        self.send(host, exchange, response, &detail);
    }

    fn play(
        &mut self,
        host: &mut Host<'_>,
        exchange: &Exchange,
        request: &Request,
        target: &Target,
    ) {
        let Some(active) = self.ready_session(host, exchange, target, "PLAY") else {
            return;
        };
        let (path, kind, duration) = (
            active.path.clone(),
            active.point.kind,
            active.point.duration_ms,
        );
        let range = match request.header("Range").map(range::parse) {
            None => None,
            Some(Ok(range)) => Some(range),
            Some(Err(error)) => return self.refuse(host, exchange, 457, &error.to_string()),
        };
        let start_ms = if kind == PointKind::ON_DEMAND {
            match range.map(|range| range.start) {
                None | Some(Npt::Now) => RESUME,
                Some(Npt::Ms(start)) if duration > 0 && start > duration => {
                    let message = format!(
                        "npt {} is past the end of `{path}` ({})",
                        range::format_npt(start),
                        range::format_npt(duration)
                    );
                    return self.refuse(host, exchange, 457, &message);
                }
                Some(Npt::Ms(start)) => start,
            }
        } else {
            if range.is_some_and(|range| !live_start(&range)) {
                let message = format!(
                    "`{path}` is live and cannot seek; use Range: npt=now- (asked for {})",
                    request.header("Range").unwrap_or_default()
                );
                return self.refuse(host, exchange, 457, &message);
            }
            RESUME
        };
        let play = match host.play_transports(&path, start_ms) {
            Ok(play) => play,
            Err(error) => return self.refuse_host(host, exchange, &error, true),
        };
        let range_answer = self.range_answer(&play, range);
        let rtp_info = format!(
            "url={};seq={};rtptime={}",
            self.active.as_ref().map_or("", |a| a.control_url.as_str()),
            play.rtp_seq,
            play.rtp_time
        );
        if let Some(active) = &mut self.active {
            active.point = play.point.clone();
        }
        self.phase = Phase::Playing;
        let response = self
            .base(exchange, 200)
            .header("Range", range_answer.clone())
            .header("RTP-Info", rtp_info);
        let detail = match (kind, start_ms) {
            (PointKind::ON_DEMAND, RESUME) => format!("{range_answer}, resumed"),
            (PointKind::ON_DEMAND, _) => range_answer,
            _ => format!("{range_answer}, live"),
        };
        self.send(host, exchange, response, &detail);
    }

    /// The `Range` of a PLAY answer.
    fn range_answer(&self, play: &PlayInfo, asked: Option<NptRange>) -> String {
        if play.point.kind == PointKind::ON_DEMAND {
            let duration = match play.point.duration_ms {
                0 => self.active.as_ref().map_or(0, |a| a.point.duration_ms),
                duration => duration,
            };
            range::format_range(play.start_ms, (duration > 0).then_some(duration))
        } else if asked.is_some_and(|range| range.starts_at_zero()) {
            // Echo the client's own way of saying "from the start" (ffmpeg: npt=0.000-).
            "npt=0.000-".to_owned()
        } else {
            "npt=now-".to_owned()
        }
    }

    fn pause(&mut self, host: &mut Host<'_>, exchange: &Exchange, target: &Target) {
        let Some(active) = self.ready_session(host, exchange, target, "PAUSE") else {
            return;
        };
        let (path, kind) = (active.path.clone(), active.point.kind);
        if self.phase != Phase::Playing {
            if kind != PointKind::ON_DEMAND {
                let message = format!("`{path}` is live and cannot pause");
                return self.refuse(host, exchange, 455, &message);
            }
            // Not playing: already where a PAUSE would leave it.
            let response = self.base(exchange, 200);
            return self.send(host, exchange, response, "not playing");
        }
        match host.pause_transports() {
            Ok(position) => {
                self.phase = Phase::Ready;
                let response = self.base(exchange, 200);
                let detail = format!("paused at npt {}", range::format_npt(position));
                self.send(host, exchange, response, &detail);
            }
            Err(error) => self.refuse_host(host, exchange, &error, false),
        }
    }

    /// The session for PLAY or PAUSE on `target`, or `None` after refusing the request.
    fn ready_session(
        &mut self,
        host: &mut Host<'_>,
        exchange: &Exchange,
        target: &Target,
        method: &str,
    ) -> Option<&Active> {
        let refusal = match &self.active {
            _ if self.phase == Phase::Init => Some((
                455,
                format!("{method} before SETUP; SETUP <url>/trackID=0 first"),
            )),
            None => Some((455, format!("{method} before SETUP"))),
            Some(active) if target.path != active.path => Some((
                459,
                format!(
                    "this connection's session plays `{}`, not `{}`",
                    active.path, target.path
                ),
            )),
            Some(_) => match target.track {
                Some(track) if track != 0 => Some((
                    404,
                    format!("no track {track}; the only track is trackID=0"),
                )),
                _ => None,
            },
        };
        if let Some((status, message)) = refusal {
            self.refuse(host, exchange, status, &message);
            return None;
        }
        self.active.as_ref()
    }

    fn teardown(&mut self, host: &mut Host<'_>, exchange: &Exchange) {
        // Built before the session goes, so that the answer still names it.
        let response = self.base(exchange, 200);
        self.release_transport(host);
        self.send(host, exchange, response, "closing");
        self.active = None;
        self.close(host);
    }

    // -----------------------------------------------------------------------------------
    // Responses

    /// A response with the headers every answer carries.
    fn base(&self, exchange: &Exchange, status: u16) -> Response {
        let mut response = response::new(status);
        if let Some(cseq) = &exchange.cseq {
            response = response.header("CSeq", cseq.clone());
        }
        response = response.header("Server", SERVER);
        if let Some(active) = &self.active {
            // A 454 says the client's session is unknown; naming ours would only confuse.
            if status != 454 {
                let timeout = (self.config.session_timeout.as_secs()).max(1);
                response = response.header("Session", format!("{};timeout={timeout}", active.id));
            }
        }
        response
    }

    fn send(&mut self, host: &mut Host<'_>, exchange: &Exchange, response: Response, detail: &str) {
        host.write(&response.encode());
        let detail = if detail.is_empty() {
            String::new()
        } else {
            format!(" ({detail})")
        };
        host.log(
            LogLevel::INFO,
            &format!(
                "{} {} -> {}{detail}",
                exchange.method, exchange.url, response.status
            ),
        );
    }

    /// Answer with `status` and `message` as a plain-text body, logged at WARN.
    fn refuse(&mut self, host: &mut Host<'_>, exchange: &Exchange, status: u16, message: &str) {
        let response = self.base(exchange, status);
        self.send_refusal(host, exchange, response, message);
    }

    fn send_refusal(
        &mut self,
        host: &mut Host<'_>,
        exchange: &Exchange,
        response: Response,
        message: &str,
    ) {
        let response = response.body(PLAIN_TEXT, format!("{message}\n"));
        host.write(&response.encode());
        host.log(
            LogLevel::WARN,
            &format!(
                "{} {} -> {}: {message}",
                exchange.method, exchange.url, response.status
            ),
        );
    }

    /// Answer a host refusal. `seeking`: a PLAY, where NOT_SEEKABLE means the Range was
    /// refused (`457`) rather than the method (`455`).
    fn refuse_host(
        &mut self,
        host: &mut Host<'_>,
        exchange: &Exchange,
        error: &HostError,
        seeking: bool,
    ) {
        let (status, reason) = match status_for(error.code) {
            (455, _) if seeking && error.code == ErrorCode::NOT_SEEKABLE => (457, None),
            mapped => mapped,
        };
        let mut response = self.base(exchange, status);
        if let Some(reason) = reason {
            response = response.reason(reason);
        }
        match error.code {
            ErrorCode::UNAUTHORIZED => {
                response = response.header("WWW-Authenticate", auth::BASIC_CHALLENGE);
            }
            ErrorCode::RATE_LIMITED => {
                let retry_after = auth::retry_after_secs(&error.message);
                response = response.header("Retry-After", retry_after.to_string());
            }
            _ => {}
        }
        let message = format!("{} ({})", error.message, error.code.as_str());
        self.send_refusal(host, exchange, response, &message);
    }

    // -----------------------------------------------------------------------------------
    // Teardown

    /// Release the session's transport, if it has one; the session is back in Init.
    fn release_transport(&mut self, host: &mut Host<'_>) {
        if let Some(transport) = self.active.as_mut().and_then(|a| a.transport.take()) {
            host.teardown_transport(transport.info.id);
        }
        self.phase = Phase::Init;
    }

    fn close(&mut self, host: &mut Host<'_>) {
        if self.closed {
            return;
        }
        self.release_transport(host);
        if self.header_timer_armed {
            host.cancel_timer(HEADER_TIMER);
            self.header_timer_armed = false;
        }
        host.cancel_timer(SESSION_TIMER);
        self.parser.clear();
        self.closed = true;
        host.close();
    }
}

const NO_POINT: &str = "no publishing point in the URL; use rtsp://<host>:<port>/<point>";

/// A Range that starts a live point where it is: `npt=now-`, `npt=0-`, `npt=0.000-`.
fn live_start(range: &NptRange) -> bool {
    range.end.is_none() && (range.start == Npt::Now || range.starts_at_zero())
}

fn transport_request(path: &str, choice: Choice) -> TransportRequest {
    let mut request = TransportRequest {
        path: path.into(),
        kind: TransportKind::UDP_UNICAST,
        client_rtp_port: 0,
        client_rtcp_port: 0,
        rtp_channel: 0,
        rtcp_channel: 0,
    };
    match choice {
        Choice::Udp { rtp, rtcp } => {
            request.client_rtp_port = rtp;
            request.client_rtcp_port = rtcp;
        }
        Choice::Tcp { rtp, rtcp } => {
            request.kind = TransportKind::TCP_INTERLEAVED;
            request.rtp_channel = rtp;
            request.rtcp_channel = rtcp;
        }
    }
    request
}

impl Session for RtspSession {
    fn on_open(&mut self, host: &mut Host<'_>) {
        // Idle connections are closed after the session timeout, session or not.
        self.touch(host);
    }

    fn on_data(&mut self, host: &mut Host<'_>, data: &[u8]) {
        if self.closed {
            return;
        }
        match &mut self.role {
            Role::Rtsp => {
                self.parser.push(data);
                self.drive(host);
            }
            Role::Opening(first) => {
                first.extend_from_slice(data);
                self.open_connection(host);
            }
            Role::TunnelPost { .. } => self.feed_post(host, data),
        }
    }

    fn on_timer_fired(&mut self, host: &mut Host<'_>, timer: TimerId) {
        if self.closed {
            return;
        }
        match timer {
            HEADER_TIMER => {
                self.header_timer_armed = false;
                let opening = matches!(&self.role, Role::Opening(first) if !first.is_empty());
                if !self.parser.in_message() && !opening {
                    return; // a stale expiry
                }
                let exchange = Exchange {
                    method: "request".to_owned(),
                    url: "-".to_owned(),
                    cseq: None,
                };
                let message = format!(
                    "request not complete within {} ms",
                    self.config.header_timeout.as_millis()
                );
                self.refuse(host, &exchange, 408, &message);
                self.close(host);
            }
            SESSION_TIMER => {
                let ms = self.config.session_timeout.as_millis();
                match &self.active {
                    Some(active) => host.log(
                        LogLevel::WARN,
                        &format!(
                            "session {} on `{}` timed out: no request or RTCP for {ms} ms; transports torn down, connection closed",
                            active.id, active.path
                        ),
                    ),
                    None => host.log(
                        LogLevel::INFO,
                        &format!("idle connection closed: no request for {ms} ms"),
                    ),
                }
                self.close(host);
            }
            _ => {}
        }
    }

    fn on_stream_ended(&mut self, host: &mut Host<'_>, ended: &StreamEnded) {
        if self.closed {
            return;
        }
        let label = match &self.active {
            Some(active) => format!("session {} on `{}`", active.id, active.path),
            None => "connection".to_owned(),
        };
        if ended.reason == EndReason::COMPLETE {
            // The end of a file: the client decides what next (usually TEARDOWN).
            if self.phase == Phase::Playing {
                self.phase = Phase::Ready;
            }
            host.log(
                LogLevel::INFO,
                &format!("{label}: stream complete ({})", ended.message),
            );
            return;
        }
        // A live source ended, the point closed or reading failed. No server-to-client
        // request tells ffmpeg so; closing the connection ends its session cleanly.
        host.log(
            LogLevel::INFO,
            &format!(
                "{label}: stream ended ({}: {}); closing the connection",
                ended.reason.as_str(),
                ended.message
            ),
        );
        self.close(host);
    }

    fn on_peer_closed(&mut self, host: &mut Host<'_>) {
        self.close(host);
    }

    fn on_transport_activity(&mut self, host: &mut Host<'_>, transport: u64) {
        if self.closed {
            return;
        }
        if self.transport().is_some_and(|t| t.info.id == transport) {
            self.touch(host);
        }
    }
}

#[cfg(test)]
mod tests;

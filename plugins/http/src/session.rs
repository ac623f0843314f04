//! One HTTP connection: the state machine that turns parsed requests into host actions.
//!
//! A connection is always in one of four states:
//!
//! - **Head**: collecting a request head, under the header timeout. Complete heads are handled
//!   at once; several pipelined requests in one read are handled in order.
//! - **Streaming**: a `GET` response body is being sent by the host after `play`. Nothing is
//!   parsed until `on_stream_ended`, because a second response must not start before the first
//!   has ended; pipelined bytes are held meanwhile.
//! - **Pushing**: an encoder's `PUT`/`POST`/`SOURCE` body is being decoded and fed to
//!   `push_media`.
//! - **Closed**: the connection is closing; further input is ignored.
//!
//! The session never buffers media: response bodies are sent by the host, and a pushed body is
//! handed on as soon as each piece of it is decoded.

use std::ops::Range;
use std::time::Duration;

use ferrocast_plugin_api::{
    ByteRange, EndReason, ErrorCode, Host, HostError, LogLevel, PointInfo, PointKind, Session,
    StreamEnded, TimerId,
};

use ferrocast_plugin_kit::auth;
use ferrocast_plugin_kit::framing::{BodyDecoder, FeedError};

use crate::proto::range;
use crate::proto::request::{Framing, HeadReader, Request};
use crate::proto::response::{self, Response};

/// The `Server` header of every response.
pub const SERVER: &str = concat!("ferrocast/", env!("CARGO_PKG_VERSION"));
/// The timer id of the header timeout (the session's only timer).
pub const HEADER_TIMER: TimerId = TimerId::new(1);

const MPEG_TS: &str = "video/mp2t";
const PLAIN_TEXT: &str = "text/plain; charset=utf-8";
/// The body of every 404 for a point or file that does not exist.
const NOT_FOUND: &str = "no such publishing point or file";
const ALLOW_ALL: &str = "GET, HEAD, PUT, POST, SOURCE, OPTIONS";
/// What Icecast answers a legacy `SOURCE` request with as soon as it takes the source: such
/// clients expect no other answer and start sending at once.
const SOURCE_ACCEPTED: &[u8] = b"HTTP/1.0 200 OK\r\n\r\n";

/// Validated plugin settings shared by every session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// Time allowed for a complete request head.
    pub header_timeout: Duration,
    /// Largest request head accepted.
    pub max_header_bytes: usize,
    /// Requests served on one connection before it is closed.
    pub keepalive_requests: u32,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_millis(10_000),
            max_header_bytes: 16 * 1024,
            keepalive_requests: 100,
        }
    }
}

/// Sent with an over-capacity 503: a limit is reached, come back in a few seconds.
const OVER_CAPACITY_HEADERS: &[(&str, &str)] = &[("Retry-After", "5")];

/// Hand the host what the client presented with `request` (nothing, when it presented
/// nothing), before anything the host checks access for.
fn present_credentials(host: &mut Host<'_>, request: &Request) {
    let credentials = auth::credentials(request.authorization.as_deref(), &request.target);
    host.present_credentials(credentials);
}

/// Write a response head, counting it under `responses_<status>` in the plugin's counters.
fn write_head(host: &mut Host<'_>, head: &Response) {
    host.write(&head.encode());
    host.count(&format!("responses_{}", head.status), 1);
}

/// The status answering a host refusal.
pub fn status_for(code: ErrorCode) -> u16 {
    match code {
        ErrorCode::NOT_FOUND => 404,
        ErrorCode::PROTOCOL_DISABLED | ErrorCode::FORBIDDEN => 403,
        ErrorCode::ALREADY_PUBLISHING | ErrorCode::INVALID_STATE => 409,
        ErrorCode::WRONG_KIND => 405,
        ErrorCode::BAD_RANGE => 416,
        ErrorCode::UNAVAILABLE | ErrorCode::DRAINING | ErrorCode::OVER_CAPACITY => 503,
        ErrorCode::UNAUTHORIZED => 401,
        ErrorCode::RATE_LIMITED => 429,
        _ => 500,
    }
}

/// Refusals after which the connection is still in a known state: the request was understood
/// and fully read, only its target was wrong. Anything else (bad syntax, server trouble,
/// draining) closes the connection.
fn keeps_connection(status: u16) -> bool {
    matches!(status, 401 | 403 | 404 | 405 | 409 | 416)
}

/// What a log line and a response need to know about the request being answered.
struct Exchange {
    /// `METHOD /path`, with the normalised path (no query string, which may carry secrets).
    label: String,
    /// `HEAD`: the response has no body.
    head_only: bool,
}

enum State {
    Head,
    Streaming { label: String, keep_alive: bool },
    Pushing(Push),
    Closed,
}

/// An encoder's body in progress.
struct Push {
    label: String,
    body: BodyDecoder,
    pushed: u64,
    /// The final response was sent when the push was accepted (legacy `SOURCE`), so the end
    /// of the push or a failure during it gets no other.
    answered: bool,
}

/// How feeding a piece of pushed body went.
enum PushOutcome {
    More,
    Done {
        label: String,
        pushed: u64,
    },
    Failed {
        label: String,
        status: u16,
        message: String,
    },
}

/// The HTTP session of one client connection.
pub struct HttpSession {
    config: Config,
    state: State,
    /// Unparsed input: a head in progress, or pipelined requests held while streaming.
    input: HeadReader,
    /// Requests received on this connection.
    served: u32,
    timer_armed: bool,
    /// An HLS request waiting for the host's `on_resource`.
    pending_resource: Option<hls::PendingResource>,
    /// The connection's first bytes, kept until its first request shows whether it opens an
    /// RTSP-over-HTTP tunnel (then the connection goes to the rtsp plugin with them).
    opening: Option<Vec<u8>>,
}

impl HttpSession {
    pub fn new(config: Config) -> Self {
        Self {
            config,
            state: State::Head,
            input: HeadReader::new(config.max_header_bytes),
            served: 0,
            timer_armed: false,
            pending_resource: None,
            opening: Some(Vec::new()),
        }
    }

    /// Watch the first request for an RTSP-over-HTTP tunnel and hand such a connection over
    /// to the rtsp plugin. True when the connection is no longer this session's to serve.
    fn hand_over_tunnel(&mut self, host: &mut Host<'_>, data: &[u8]) -> bool {
        let Some(opening) = &mut self.opening else {
            return false;
        };
        opening.extend_from_slice(data);
        let opens = crate::rtsp_tunnel::opens_tunnel(opening);
        if opens != Some(true) {
            if opens == Some(false) || opening.len() > self.config.max_header_bytes {
                self.opening = None;
            }
            return false;
        }
        let first = self.opening.take().unwrap_or_default();
        match host.hand_over(crate::rtsp_tunnel::RTSP_PLUGIN, &first) {
            Ok(()) => {
                self.cancel_header_timer(host);
                self.input.clear();
                self.state = State::Closed;
                host.log(
                    LogLevel::INFO,
                    "RTSP over HTTP: connection handed over to the rtsp plugin",
                );
                true
            }
            Err(error) => {
                let exchange = Exchange {
                    label: "RTSP-over-HTTP request".to_owned(),
                    head_only: false,
                };
                let message = format!("RTSP over HTTP is not served here: {}", error.message);
                self.refuse(host, &exchange, 404, &message, &[], false);
                true
            }
        }
    }

    fn arm_header_timer(&mut self, host: &mut Host<'_>) {
        if !self.timer_armed {
            host.set_timer(HEADER_TIMER, self.config.header_timeout);
            self.timer_armed = true;
        }
    }

    fn cancel_header_timer(&mut self, host: &mut Host<'_>) {
        if self.timer_armed {
            host.cancel_timer(HEADER_TIMER);
            self.timer_armed = false;
        }
    }

    fn close(&mut self, host: &mut Host<'_>) {
        self.cancel_header_timer(host);
        self.input.clear();
        self.state = State::Closed;
        host.close();
    }

    /// A response has been sent in full: wait for the next request or close.
    fn finish_response(&mut self, host: &mut Host<'_>, keep_alive: bool) {
        if keep_alive {
            self.state = State::Head;
            self.arm_header_timer(host);
        } else {
            self.close(host);
        }
    }

    /// Handle every complete request head in the buffer while no response is in progress.
    fn drive(&mut self, host: &mut Host<'_>) {
        while matches!(self.state, State::Head) {
            match self.input.next_request() {
                Ok(None) => break,
                Ok(Some(request)) => {
                    self.cancel_header_timer(host);
                    self.handle(host, request);
                }
                Err(error) => {
                    self.cancel_header_timer(host);
                    let exchange = Exchange {
                        label: "request".to_owned(),
                        head_only: false,
                    };
                    self.refuse(
                        host,
                        &exchange,
                        error.status(),
                        &error.to_string(),
                        &[],
                        false,
                    );
                }
            }
        }
    }

    fn handle(&mut self, host: &mut Host<'_>, request: Request) {
        self.served = self.served.saturating_add(1);
        let exchange = Exchange {
            label: if request.asterisk {
                format!("{} *", request.method)
            } else {
                format!("{} /{}", request.method, request.path)
            },
            head_only: request.method == "HEAD",
        };
        // A body on a request that does not use one is not read; closing afterwards is simpler
        // and safer than skipping it.
        let keep_alive = request.keep_alive
            && self.served < self.config.keepalive_requests
            && !request.has_body();

        if request.asterisk && request.method != "OPTIONS" {
            let message = "`*` is only a valid target for OPTIONS";
            return self.refuse(host, &exchange, 400, message, &[], false);
        }
        match request.method.as_str() {
            "GET" | "HEAD" => self.get(host, &exchange, &request, keep_alive),
            // SOURCE is the Icecast source protocol before it adopted PUT.
            "PUT" | "POST" | "SOURCE" => self.push(host, &exchange, &request),
            "OPTIONS" => {
                let head = self
                    .head(204)
                    .header("Allow", ALLOW_ALL)
                    .header("Connection", connection(keep_alive));
                write_head(host, &head);
                host.log(LogLevel::INFO, &format!("{} -> 204", exchange.label));
                self.finish_response(host, keep_alive);
            }
            other => {
                let message = format!("method {other} is not supported; use {ALLOW_ALL}");
                self.refuse(host, &exchange, 501, &message, &[], false);
            }
        }
    }

    /// `GET` or `HEAD`: a live stream or (part of) a file.
    fn get(
        &mut self,
        host: &mut Host<'_>,
        exchange: &Exchange,
        request: &Request,
        keep_alive: bool,
    ) {
        if request.path.is_empty() {
            let message = "no publishing point in the request path; use /<point>";
            return self.refuse(host, exchange, 404, message, &[], keep_alive);
        }
        if let Some(target) = hls::target(request) {
            if self.get_hls(host, exchange, request, target, keep_alive) {
                return;
            }
        }
        present_credentials(host, request);
        let info = match host.lookup(&request.path) {
            Ok(info) => info,
            Err(error) => {
                return self.refuse_host(
                    host,
                    exchange,
                    &error,
                    &[("Allow", "PUT, POST")],
                    keep_alive,
                )
            }
        };
        match info.kind {
            PointKind::BROADCAST => self.get_live(host, exchange, request, &info),
            PointKind::ON_DEMAND => self.get_file(host, exchange, request, info.size, keep_alive),
            other => {
                let message = format!(
                    "publishing point `{}` has a kind this plugin does not serve ({})",
                    info.name,
                    other.as_str()
                );
                self.refuse(host, exchange, 500, &message, &[], false);
            }
        }
    }

    /// A live point has no length and no end: the body is delimited by closing the
    /// connection, which HTTP/1.0 and 1.1 clients alike understand. A `Range` header (ffmpeg
    /// sends `bytes=0-` on every request) cannot apply to a live stream and is ignored.
    ///
    /// `play` comes before the head: media starts only after what is written during this
    /// event, and a refusal (no encoder publishing, say) can still get its own status.
    fn get_live(
        &mut self,
        host: &mut Host<'_>,
        exchange: &Exchange,
        request: &Request,
        info: &PointInfo,
    ) {
        if exchange.head_only {
            if !info.live {
                let error = HostError::new(
                    ErrorCode::UNAVAILABLE,
                    format!("no encoder is publishing to `{}` right now", info.name),
                );
                return self.refuse_host(host, exchange, &error, &[], false);
            }
            self.write_live_head(host, exchange);
            return self.close(host);
        }
        if let Err(error) = host.play(&request.path, ByteRange::ALL) {
            return self.refuse_host(host, exchange, &error, &[], false);
        }
        self.write_live_head(host, exchange);
        self.state = State::Streaming {
            label: exchange.label.clone(),
            keep_alive: false,
        };
        // A live response is the connection's last: nothing more is read, so the room the
        // request's head took is given back for the rest of the session.
        self.input = HeadReader::new(self.config.max_header_bytes);
    }

    fn write_live_head(&self, host: &mut Host<'_>, exchange: &Exchange) {
        let head = self
            .head(200)
            .header("Content-Type", MPEG_TS)
            .header("Cache-Control", "no-cache, no-store")
            .header("Connection", "close");
        write_head(host, &head);
        host.log(LogLevel::INFO, &format!("{} -> 200 (live)", exchange.label));
    }

    fn get_file(
        &mut self,
        host: &mut Host<'_>,
        exchange: &Exchange,
        request: &Request,
        size: u64,
        keep_alive: bool,
    ) {
        // Without validators of our own, an If-Range condition cannot be checked, and an
        // unchecked If-Range means the whole file must be sent (RFC 9110 §13.1.5).
        let header = request.range.as_deref().filter(|_| !request.if_range);
        let selected = match header.map(|value| range::resolve(value, size)) {
            None => Ok(None),
            Some(resolved) => resolved,
        };
        let (status, span) = match selected {
            Ok(Some(span)) => (206, span),
            Ok(None) => (200, 0..size),
            Err(range::Unsatisfiable) => {
                let message = format!(
                    "range `{}` is outside `/{}` ({size} bytes)",
                    header.unwrap_or_default(),
                    request.path
                );
                let content_range = range::unsatisfied_range(size);
                let extra = [("Content-Range", content_range.as_str())];
                return self.refuse(host, exchange, 416, &message, &extra, keep_alive);
            }
        };
        let mut head = self
            .head(status)
            .header("Content-Type", MPEG_TS)
            .header("Accept-Ranges", "bytes")
            .header("Content-Length", (span.end - span.start).to_string());
        let detail = if status == 206 {
            let content_range = range::content_range(&span, size);
            head = head.header("Content-Range", content_range.clone());
            content_range
        } else {
            format!("on-demand, {size} bytes")
        };
        head = head.header("Connection", connection(keep_alive));
        let streams_body = !exchange.head_only && !span.is_empty();
        if streams_body {
            // Before the head, so that a refusal can still get its own status; the media
            // starts after the head written below.
            if let Err(error) = host.play(&request.path, byte_range(&span)) {
                return self.refuse_host(host, exchange, &error, &[], keep_alive);
            }
        }
        write_head(host, &head);
        host.log(
            LogLevel::INFO,
            &format!("{} -> {status} ({detail})", exchange.label),
        );
        if !streams_body {
            return self.finish_response(host, keep_alive);
        }
        self.state = State::Streaming {
            label: exchange.label.clone(),
            keep_alive,
        };
    }

    /// `PUT`, `POST` or `SOURCE`: an encoder publishing to a broadcast point.
    fn push(&mut self, host: &mut Host<'_>, exchange: &Exchange, request: &Request) {
        if request.path.is_empty() {
            let message = "no publishing point in the request path; use /<point>";
            return self.refuse(host, exchange, 404, message, &[], false);
        }
        let allow_get = [("Allow", "GET, HEAD")];
        // No lookup first: a point's play rules do not bear on its encoder.
        present_credentials(host, request);
        match host.publish(&request.path) {
            Ok(_) => {}
            Err(error) if error.code == ErrorCode::WRONG_KIND => {
                let point = request.path.split('/').next().unwrap_or_default();
                let message = format!(
                    "publishing point `{point}` serves files; encoders can only push to broadcast points"
                );
                return self.refuse(host, exchange, 405, &message, &allow_get, false);
            }
            Err(error) => return self.refuse_host(host, exchange, &error, &allow_get, false),
        }
        let framing = match request.framing {
            Framing::None => "until close".to_owned(),
            Framing::Length(length) => format!("{length} bytes"),
            Framing::Chunked => "chunked".to_owned(),
        };
        let body = BodyDecoder::new(request.framing);
        // A push reads its body whatever the framing (without one, until close: Icecast
        // sources), so a client waiting for `100 Continue` gets it now that it is accepted.
        if request.expect_continue && request.framing != Framing::Length(0) {
            host.write(response::CONTINUE);
        }
        let answered = request.method == "SOURCE";
        if answered {
            host.write(SOURCE_ACCEPTED);
            host.count("responses_200", 1);
        }
        host.log(
            LogLevel::INFO,
            &format!("{} -> publishing (body {framing})", exchange.label),
        );
        describe_source(host, exchange, request);
        self.state = State::Pushing(Push {
            label: exchange.label.clone(),
            body,
            pushed: 0,
            answered,
        });
        // The start of the body may have arrived with the head.
        let start = self.input.take();
        self.push_body(host, &start);
    }

    fn push_body(&mut self, host: &mut Host<'_>, data: &[u8]) {
        let State::Pushing(push) = &mut self.state else {
            return;
        };
        let answered = push.answered;
        match feed(push, host, data) {
            PushOutcome::More => {}
            PushOutcome::Done { label, pushed } => self.push_done(host, &label, pushed),
            PushOutcome::Failed { label, message, .. } if answered => {
                host.log(LogLevel::WARN, &format!("{label}: push ended: {message}"));
                self.close(host);
            }
            PushOutcome::Failed {
                label,
                status,
                message,
            } => {
                let exchange = Exchange {
                    label,
                    head_only: false,
                };
                self.refuse(host, &exchange, status, &message, &[], false);
            }
        }
    }

    fn push_done(&mut self, host: &mut Host<'_>, label: &str, pushed: u64) {
        let answered = matches!(&self.state, State::Pushing(push) if push.answered);
        if !answered {
            let head = self
                .head(200)
                .header("Content-Length", "0")
                .header("Connection", "close");
            write_head(host, &head);
        }
        host.log(
            LogLevel::INFO,
            &format!("{label} -> 200 ({pushed} bytes pushed)"),
        );
        self.close(host);
    }

    /// Every response says `nosniff`: a browser must not guess that a plain-text or TS body
    /// is HTML.
    fn head(&self, status: u16) -> Response {
        response::head(status)
            .header("Server", SERVER)
            .header("X-Content-Type-Options", "nosniff")
    }

    /// Answer a host refusal.
    fn refuse_host(
        &mut self,
        host: &mut Host<'_>,
        exchange: &Exchange,
        error: &HostError,
        allow: &[(&'static str, &str)],
        keep_alive: bool,
    ) {
        let status = status_for(error.code);
        let retry_after = auth::retry_after_secs(&error.message).to_string();
        let extra: &[(&'static str, &str)] = match status {
            // A 405 must say what is allowed (RFC 9110 §15.5.6); over capacity says when to retry.
            405 => allow,
            401 => &[("WWW-Authenticate", auth::BASIC_CHALLENGE)],
            429 => &[("Retry-After", retry_after.as_str())],
            _ if error.code == ErrorCode::OVER_CAPACITY => OVER_CAPACITY_HEADERS,
            _ => &[],
        };
        if status == 404 {
            // The host's message repeats what was asked for; the client is not sent its own
            // input back (the log line names the request).
            return self.refuse(host, exchange, 404, NOT_FOUND, extra, keep_alive);
        }
        self.refuse(host, exchange, status, &error.message, extra, keep_alive);
    }

    /// Send an error response with a plain-text body, log it, and close unless the request
    /// allows keeping the connection and `status` leaves it in a known state.
    fn refuse(
        &mut self,
        host: &mut Host<'_>,
        exchange: &Exchange,
        status: u16,
        message: &str,
        extra: &[(&'static str, &str)],
        keep_alive: bool,
    ) {
        let keep_alive = keep_alive && keeps_connection(status);
        let body = format!("{message}\n");
        let mut head = self.head(status).header("Content-Type", PLAIN_TEXT);
        for (name, value) in extra {
            head = head.header(name, *value);
        }
        head = head
            .header("Content-Length", body.len().to_string())
            .header("Connection", connection(keep_alive));
        write_head(host, &head);
        if !exchange.head_only {
            host.write(body.as_bytes());
        }
        host.log(
            LogLevel::WARN,
            &format!("{} -> {status}: {message}", exchange.label),
        );
        self.finish_response(host, keep_alive);
    }
}

/// Log the name and description an Icecast source gave its stream, and hand them to the
/// host for the point's status.
fn describe_source(host: &mut Host<'_>, exchange: &Exchange, request: &Request) {
    if request.source_name.is_none() && request.source_description.is_none() {
        return;
    }
    let name = request.source_name.as_deref().unwrap_or_default();
    let description = request.source_description.as_deref().unwrap_or_default();
    host.log(
        LogLevel::INFO,
        &format!(
            "{}: source name {name:?}, description {description:?}",
            exchange.label
        ),
    );
    host.describe_source(name, description);
}

/// Decode `data` as the push body and hand its payload to the host.
fn feed(push: &mut Push, host: &mut Host<'_>, data: &[u8]) -> PushOutcome {
    let pushed = &mut push.pushed;
    let result = push.body.feed(data, |bytes| -> Result<(), HostError> {
        host.push_media(bytes)?;
        *pushed += bytes.len() as u64;
        Ok(())
    });
    let label = || push.label.clone();
    match result {
        Ok(false) => PushOutcome::More,
        Ok(true) => PushOutcome::Done {
            label: label(),
            pushed: push.pushed,
        },
        Err(FeedError::Chunked(error)) => PushOutcome::Failed {
            label: label(),
            status: 400,
            message: format!("malformed chunked body: {error}"),
        },
        Err(FeedError::Sink(error)) => PushOutcome::Failed {
            label: label(),
            status: status_for(error.code),
            message: error.message.to_string(),
        },
    }
}

/// The `Connection` header value for a response. HTTP/1.0 clients need `keep-alive` spelled
/// out; HTTP/1.1 ones persist by default, and saying so anyway is harmless.
fn connection(keep_alive: bool) -> &'static str {
    if keep_alive {
        "keep-alive"
    } else {
        "close"
    }
}

fn byte_range(span: &Range<u64>) -> ByteRange {
    ByteRange {
        start: span.start,
        end: span.end,
    }
}

impl Session for HttpSession {
    fn on_open(&mut self, host: &mut Host<'_>) {
        // The head timeout runs from the moment the connection opens, so a client that
        // connects and sends nothing is timed out too.
        self.arm_header_timer(host);
    }

    fn on_data(&mut self, host: &mut Host<'_>, data: &[u8]) {
        match &mut self.state {
            State::Closed => {}
            State::Head => {
                if self.hand_over_tunnel(host, data) {
                    return;
                }
                self.input.push(data);
                self.arm_header_timer(host);
                self.drive(host);
            }
            State::Streaming { label, keep_alive } => {
                if !*keep_alive {
                    return; // the connection closes after this response; nothing more is read
                }
                if self.input.buffered() + data.len() > self.config.max_header_bytes {
                    // Held input is bounded: a client pipelining this much gets its current
                    // response and then a closed connection, on which it retries the rest.
                    host.log(
                        LogLevel::WARN,
                        &format!(
                            "{label}: more than {} bytes pipelined during a response; closing after it",
                            self.config.max_header_bytes
                        ),
                    );
                    *keep_alive = false;
                    self.input.clear();
                } else {
                    self.input.push(data);
                }
            }
            State::Pushing(_) => self.push_body(host, data),
        }
    }

    fn on_timer_fired(&mut self, host: &mut Host<'_>, timer: TimerId) {
        if timer != HEADER_TIMER {
            return;
        }
        self.timer_armed = false;
        if !matches!(self.state, State::Head) {
            return; // a stale expiry from before the head completed
        }
        if self.input.is_empty() && self.served > 0 {
            // An idle keep-alive connection: closing it silently is the usual courtesy.
            return self.close(host);
        }
        let exchange = Exchange {
            label: "request".to_owned(),
            head_only: false,
        };
        let message = format!(
            "request head not received within {} ms",
            self.config.header_timeout.as_millis()
        );
        self.refuse(host, &exchange, 408, &message, &[], false);
    }

    fn on_stream_ended(&mut self, host: &mut Host<'_>, ended: &StreamEnded) {
        match &self.state {
            State::Streaming { label, keep_alive } => {
                if ended.reason == EndReason::COMPLETE {
                    let keep_alive = *keep_alive;
                    self.finish_response(host, keep_alive);
                    self.drive(host);
                } else {
                    host.log(
                        LogLevel::INFO,
                        &format!(
                            "{label}: stream ended ({}: {})",
                            ended.reason.as_str(),
                            ended.message
                        ),
                    );
                    self.close(host);
                }
            }
            State::Pushing(push) => {
                host.log(
                    LogLevel::WARN,
                    &format!(
                        "{}: the point stopped taking media ({}: {})",
                        push.label,
                        ended.reason.as_str(),
                        ended.message
                    ),
                );
                self.close(host);
            }
            // Nothing is playing: a late notice of a stream already finished.
            State::Head | State::Closed => {}
        }
    }

    fn on_resource(
        &mut self,
        host: &mut Host<'_>,
        answer: Result<&ferrocast_plugin_api::Resource<'_>, &HostError>,
    ) {
        self.answer_resource(host, answer);
    }

    fn on_peer_closed(&mut self, host: &mut Host<'_>) {
        match &mut self.state {
            State::Closed => {}
            State::Head => self.close(host),
            // The client may only have shut down its sending side and still be reading, so the
            // response goes on; but no further request can come.
            State::Streaming { keep_alive, .. } => {
                *keep_alive = false;
                self.input.clear();
            }
            State::Pushing(push) => {
                if push.body.is_until_close() {
                    let (label, pushed) = (push.label.clone(), push.pushed);
                    self.push_done(host, &label, pushed);
                } else {
                    host.log(
                        LogLevel::WARN,
                        &format!(
                            "{}: the encoder closed the connection before the end of the body ({} bytes pushed)",
                            push.label, push.pushed
                        ),
                    );
                    self.close(host);
                }
            }
        }
    }
}

#[path = "hls.rs"]
mod hls;
#[cfg(test)]
mod tests;

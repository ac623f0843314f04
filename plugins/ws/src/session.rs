//! One WebSocket client: the opening handshake, then the point's media as binary frames.
//!
//! The session asks the host for framed media (`play_framed`): each chunk of MPEG-TS arrives
//! as an `on_media` event and leaves as one binary frame, so a player reading the frames'
//! payloads in order sees the same TS a raw HTTP client gets. The host hands over a chunk only
//! while the connection's output is short, which keeps a slow browser's backlog in the
//! point's ring. Client frames are read only to answer pings and closes; their data is
//! ignored. Any protocol violation ends the connection with the close status RFC 6455 gives it.

use std::time::Duration;

use ferrocast_plugin_api::{
    ByteRange, Credentials, EndReason, ErrorCode, Host, LogLevel, MediaChunk, Session, StreamEnded,
    TimerId,
};
use ferrocast_plugin_kit::head::{HeadBuffer, HeadError};

use crate::proto::frame::{self, status, Frame, FrameDecoder, Opcode};
use crate::proto::handshake::{self, HandshakeError, Upgrade};

/// The timer that bounds the opening handshake.
pub const HANDSHAKE_TIMER: TimerId = TimerId::new(1);

/// Validated settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// The upgrade request must be complete this long after the connection opened.
    pub handshake_timeout: Duration,
    /// Longest upgrade request head.
    pub max_header_bytes: usize,
    /// Longest client frame payload; a longer one is closed with 1009.
    pub max_frame_bytes: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            handshake_timeout: Duration::from_secs(10),
            max_header_bytes: 16 * 1024,
            max_frame_bytes: 64 * 1024,
        }
    }
}

/// The HTTP status answering a host refusal of the upgrade.
pub fn status_for(code: ErrorCode) -> u16 {
    match code {
        ErrorCode::NOT_FOUND => 404,
        ErrorCode::UNAUTHORIZED => 401,
        ErrorCode::PROTOCOL_DISABLED | ErrorCode::FORBIDDEN => 403,
        ErrorCode::WRONG_KIND => 405,
        ErrorCode::INVALID_STATE => 409,
        ErrorCode::RATE_LIMITED => 429,
        ErrorCode::UNAVAILABLE | ErrorCode::DRAINING | ErrorCode::OVER_CAPACITY => 503,
        _ => 500,
    }
}

/// The close status ending a stream that stopped for `reason`.
pub fn close_status_for(reason: EndReason) -> u16 {
    match reason {
        EndReason::COMPLETE | EndReason::SOURCE_ENDED => status::NORMAL,
        EndReason::POINT_CLOSED => status::GOING_AWAY,
        EndReason::CLIENT_TOO_SLOW => status::POLICY_VIOLATION,
        _ => status::INTERNAL_ERROR,
    }
}

enum State {
    /// Reading the upgrade request.
    Handshake(HeadBuffer),
    /// Upgraded: media flows out, client frames are read.
    Open(FrameDecoder),
    /// A close frame or an HTTP refusal was sent; nothing more is read or sent.
    Closed,
}

/// One client connection.
pub struct WsSession {
    config: Config,
    state: State,
}

impl WsSession {
    pub fn new(config: Config) -> Self {
        Self {
            config,
            state: State::Handshake(HeadBuffer::new(config.max_header_bytes)),
        }
    }

    /// Whether the connection was upgraded and is still open.
    pub fn is_open(&self) -> bool {
        matches!(self.state, State::Open(_))
    }

    fn on_handshake_data(&mut self, host: &mut Host<'_>, data: &[u8]) {
        let State::Handshake(input) = &mut self.state else {
            return;
        };
        input.push(data);
        let upgrade = match input.next_head(handshake::parse) {
            Ok(None) => return,
            Ok(Some(upgrade)) => upgrade,
            Err(HeadError::TooLarge) => return self.refuse(host, &HandshakeError::TooLarge),
            Err(HeadError::Parse(error)) => return self.refuse(host, &error),
        };
        // A client may send frames right behind its request.
        let rest = input.take();
        host.cancel_timer(HANDSHAKE_TIMER);
        self.upgrade(host, &upgrade);
        if !rest.is_empty() {
            self.on_frame_data(host, &rest);
        }
    }

    fn refuse(&mut self, host: &mut Host<'_>, error: &HandshakeError) {
        host.log(LogLevel::DEBUG, &format!("upgrade refused: {error}"));
        host.write(&error.response().encode());
        self.end_http(host);
    }

    fn end_http(&mut self, host: &mut Host<'_>) {
        host.cancel_timer(HANDSHAKE_TIMER);
        host.close();
        self.state = State::Closed;
    }

    /// Ask for the point's media framed; answer 101 once the host accepted.
    fn upgrade(&mut self, host: &mut Host<'_>, upgrade: &Upgrade) {
        let credentials = match &upgrade.query {
            Some(query) => Credentials::url_query(query),
            None => Credentials::none(),
        };
        host.present_credentials(credentials);
        match host.play_framed(&upgrade.path, ByteRange::ALL) {
            Ok(_) => {
                host.write(&handshake::accept(upgrade).encode());
                self.state = State::Open(FrameDecoder::new(self.config.max_frame_bytes));
            }
            Err(error) => {
                let status = status_for(error.code);
                host.write(&handshake::error_response(status, &error.message).encode());
                self.end_http(host);
            }
        }
    }

    fn on_frame_data(&mut self, host: &mut Host<'_>, data: &[u8]) {
        if let State::Open(decoder) = &mut self.state {
            decoder.push(data);
        }
        loop {
            let State::Open(decoder) = &mut self.state else {
                return;
            };
            match decoder.next_frame() {
                Ok(Some(frame)) => self.on_frame(host, frame),
                Ok(None) => return,
                Err(error) => return self.fail(host, error.status(), &error.to_string()),
            }
        }
    }

    fn on_frame(&mut self, host: &mut Host<'_>, frame: Frame) {
        match frame.opcode {
            Opcode::Ping => host.write(&frame::encode(Opcode::Pong, &frame.payload)),
            Opcode::Close => match frame::close_status(&frame.payload) {
                Ok(code) => self.fail(host, code.unwrap_or(status::NORMAL), ""),
                Err(code) => self.fail(host, code, "malformed close frame"),
            },
            // A player has nothing to say in data frames: they are read and dropped.
            Opcode::Pong | Opcode::Text | Opcode::Binary | Opcode::Continuation => {}
        }
    }

    /// Send a close frame with `code`, stop the media and close the connection.
    fn fail(&mut self, host: &mut Host<'_>, code: u16, reason: &str) {
        if code != status::NORMAL {
            host.log(
                LogLevel::DEBUG,
                &format!("closing the WebSocket with {code}: {reason}"),
            );
        }
        host.write(&frame::close(code, reason));
        host.stop();
        host.close();
        self.state = State::Closed;
    }
}

impl Session for WsSession {
    fn on_open(&mut self, host: &mut Host<'_>) {
        host.set_timer(HANDSHAKE_TIMER, self.config.handshake_timeout);
    }

    fn on_data(&mut self, host: &mut Host<'_>, data: &[u8]) {
        match self.state {
            State::Handshake(_) => self.on_handshake_data(host, data),
            State::Open(_) => self.on_frame_data(host, data),
            State::Closed => {}
        }
    }

    fn on_timer_fired(&mut self, host: &mut Host<'_>, timer: TimerId) {
        if timer == HANDSHAKE_TIMER && matches!(self.state, State::Handshake(_)) {
            let response = handshake::error_response(408, "upgrade request not received in time");
            host.write(&response.encode());
            self.end_http(host);
        }
    }

    fn on_media(&mut self, host: &mut Host<'_>, chunk: &MediaChunk<'_>) {
        if self.is_open() {
            host.write(&frame::encode(Opcode::Binary, chunk.bytes()));
        }
    }

    fn on_stream_ended(&mut self, host: &mut Host<'_>, ended: &StreamEnded) {
        if self.is_open() {
            self.fail(host, close_status_for(ended.reason), ended.message.as_str());
        } else {
            host.close();
        }
    }

    fn on_peer_closed(&mut self, host: &mut Host<'_>) {
        host.stop();
        host.close();
        self.state = State::Closed;
    }
}

#[cfg(test)]
mod tests;

//! One encoder connection: the handshake, the connect/createStream/publish exchange, then
//! FLV audio, video and metadata remuxed into MPEG-TS for the point.
//!
//! The stream name of `publish` picks the point (`rtmp://host/<app>/<point>`); a query on
//! it (`<point>?key=…`), or else on the application name, is presented to the host as
//! credentials, like the query of an HTTP push. Every refusal is answered the way encoders
//! report it (`_error` for `connect`, `onStatus` with level `error` for `publish` and `play`),
//! logged in one line, and the connection is closed; nothing the peer sends can make the
//! session hold more than one chunk of input, its partial messages and one message of TS.

use std::time::Duration;

use ferrocast_plugin_api::{
    Credentials, ErrorCode, Host, HostError, LogLevel, Session, StreamEnded,
};

use crate::proto::amf0::{self, Decoder, Value};
use crate::proto::chunk::{ChunkReader, Message};
use crate::proto::handshake::Handshake;
use crate::proto::message::{self, parse_command, parse_control, Command, Control, Outbox};
use crate::remux::{FlvToTs, TagKind};

/// The timer that bounds the time from the connection's start to an accepted `publish`.
pub const HANDSHAKE_TIMER: u64 = 1;
/// The acknowledgement window and peer bandwidth the server announces.
pub const SERVER_WINDOW: u32 = 2_500_000;
/// The message stream id `createStream` hands out (one stream per connection).
pub const STREAM_ID: u32 = 1;

/// Validated settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// The application name encoders connect to (`rtmp://host/<app>`).
    pub app: String,
    /// The chunk size the server sends with.
    pub chunk_size: u32,
    /// Longest message accepted from an encoder (a video frame, usually).
    pub max_message_bytes: usize,
    /// The handshake and an accepted `publish` must be done this long after the connection
    /// opened.
    pub handshake_timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            app: "live".to_owned(),
            chunk_size: 4096,
            max_message_bytes: 4 * 1024 * 1024,
            handshake_timeout: Duration::from_secs(10),
        }
    }
}

/// The `onStatus` code an encoder is refused a publish with, for a host refusal.
pub fn publish_status_for(code: ErrorCode) -> &'static str {
    match code {
        ErrorCode::NOT_FOUND
        | ErrorCode::WRONG_KIND
        | ErrorCode::PROTOCOL_DISABLED
        | ErrorCode::ALREADY_PUBLISHING => "NetStream.Publish.BadName",
        ErrorCode::UNAUTHORIZED | ErrorCode::FORBIDDEN | ErrorCode::RATE_LIMITED => {
            "NetStream.Publish.Denied"
        }
        _ => "NetStream.Publish.Failed",
    }
}

/// `name?query` split, without a leading or trailing `/`.
fn split_query(name: &str) -> (&str, Option<&str>) {
    let (name, query) = match name.split_once('?') {
        Some((name, query)) => (name, Some(query).filter(|q| !q.is_empty())),
        None => (name, None),
    };
    (name.trim_matches('/'), query)
}

/// The point being published to.
struct Publishing {
    point: String,
    remux: FlvToTs,
    pushed: u64,
}

enum Phase {
    Handshake(Handshake),
    Chunks,
    Closed,
}

/// One encoder connection.
pub struct RtmpSession {
    config: Config,
    phase: Phase,
    reader: ChunkReader,
    outbox: Outbox,
    /// The peer's acknowledgement window, once it set one, and the byte count last acknowledged.
    ack_window: Option<u32>,
    acknowledged: u64,
    connected: bool,
    /// The query of the application name given to `connect` (`live?key=…`).
    app_query: Option<String>,
    publishing: Option<Publishing>,
    /// The TS of one message, reused.
    ts: Vec<u8>,
}

impl RtmpSession {
    pub fn new(config: Config) -> Self {
        let reader = ChunkReader::new(config.max_message_bytes);
        Self {
            config,
            phase: Phase::Handshake(Handshake::new(0)),
            reader,
            outbox: Outbox::default(),
            ack_window: None,
            acknowledged: 0,
            connected: false,
            app_query: None,
            publishing: None,
            ts: Vec::new(),
        }
    }

    /// The point this connection publishes to, once `publish` was accepted.
    pub fn point(&self) -> Option<&str> {
        self.publishing.as_ref().map(|p| p.point.as_str())
    }

    /// Bytes held from the peer: unparsed input and partial messages.
    pub fn buffered(&self) -> usize {
        self.reader.buffered()
    }

    pub fn is_closed(&self) -> bool {
        matches!(self.phase, Phase::Closed)
    }

    fn on_handshake_data(&mut self, host: &mut Host<'_>, mut data: &[u8]) {
        let Phase::Handshake(handshake) = &mut self.phase else {
            return;
        };
        while !data.is_empty() && !handshake.is_done() {
            match handshake.push(data) {
                Ok(step) => {
                    if let Some(reply) = step.reply {
                        host.write(&reply);
                    }
                    data = &data[step.consumed..];
                }
                Err(error) => return self.fail(host, &format!("handshake refused: {error}")),
            }
        }
        if handshake.is_done() {
            self.phase = Phase::Chunks;
            self.on_chunk_data(host, data);
        }
    }

    fn on_chunk_data(&mut self, host: &mut Host<'_>, data: &[u8]) {
        self.reader.push(data);
        loop {
            if !matches!(self.phase, Phase::Chunks) {
                return;
            }
            match self.reader.next_message() {
                Ok(Some(message)) => self.on_message(host, message),
                Ok(None) => break,
                Err(error) => return self.fail(host, &format!("bad chunk stream: {error}")),
            }
        }
        self.acknowledge();
        self.flush(host);
    }

    /// Send an Acknowledgement each time the peer's window of bytes has been received.
    fn acknowledge(&mut self) {
        let Some(window) = self.ack_window else {
            return;
        };
        let received = self.reader.received();
        if received - self.acknowledged >= u64::from(window) {
            self.acknowledged = received;
            // The field is the byte count modulo 2^32.
            self.outbox.acknowledgement(received as u32);
        }
    }

    fn flush(&mut self, host: &mut Host<'_>) {
        let bytes = self.outbox.take();
        if !bytes.is_empty() {
            host.write(&bytes);
        }
    }

    fn on_message(&mut self, host: &mut Host<'_>, message: Message) {
        match parse_control(message.type_id, &message.payload) {
            Ok(Some(control)) => return self.on_control(host, control),
            Ok(None) => {}
            Err(error) => return self.fail(host, &error.to_string()),
        }
        match message.type_id {
            message::COMMAND_AMF0 | message::COMMAND_AMF3 => {
                match parse_command(message.type_id, &message.payload) {
                    Ok(command) => self.on_command(host, &command, message.stream_id),
                    Err(error) => self.fail(host, &error.to_string()),
                }
            }
            message::AUDIO => self.on_media(host, TagKind::Audio, &message),
            message::VIDEO => self.on_media(host, TagKind::Video, &message),
            message::DATA_AMF0 | message::DATA_AMF3 => {
                self.on_media(host, TagKind::Script, &message)
            }
            // Shared objects and aggregates carry nothing an encoder's publish needs.
            other => host.log(
                LogLevel::DEBUG,
                &format!("ignoring an RTMP message of type {other}"),
            ),
        }
    }

    fn on_control(&mut self, host: &mut Host<'_>, control: Control) {
        match control {
            Control::SetChunkSize(size) => {
                if let Err(error) = self.reader.set_chunk_size(size) {
                    self.fail(host, &format!("bad Set Chunk Size: {error}"));
                }
            }
            Control::Abort(csid) => self.reader.abort(csid),
            Control::WindowAckSize(size) => self.ack_window = Some(size.max(1)),
            Control::UserControl { event, data } if event == message::PING_REQUEST => {
                self.outbox.user_control(message::PING_RESPONSE, &data);
            }
            Control::Acknowledgement(_)
            | Control::SetPeerBandwidth(_)
            | Control::UserControl { .. } => {}
        }
    }

    fn on_command(&mut self, host: &mut Host<'_>, command: &Command, stream_id: u32) {
        let name = command.name.as_str();
        if !self.connected && name != "connect" {
            return self.fail(host, &format!("`{name}` before `connect`"));
        }
        let txn = command.transaction;
        match name {
            "connect" => self.on_connect(host, command),
            "releaseStream" | "FCPublish" | "_checkbw" => {
                self.outbox
                    .result("_result", txn, Value::Null, Value::Undefined);
            }
            "createStream" => {
                let id = Value::Number(f64::from(STREAM_ID));
                self.outbox.result("_result", txn, Value::Null, id);
            }
            "publish" => self.on_publish(host, command, stream_id),
            "FCUnpublish" => {}
            "deleteStream" | "closeStream" => self.on_unpublish(host),
            "play" | "play2" => {
                let message = "this server takes encoders over RTMP; play the point over HTTP, RTSP or the other protocols it has enabled";
                self.outbox
                    .on_status(stream_id, "error", "NetStream.Play.Failed", message);
                self.fail_with(
                    host,
                    LogLevel::INFO,
                    "play refused: RTMP is for encoders here",
                );
            }
            other => {
                let description = format!("unknown command `{other}`");
                let info = status_info("error", "NetConnection.Call.Failed", &description);
                self.outbox.result("_error", txn, Value::Null, info);
                self.fail(host, &description);
            }
        }
    }

    fn on_connect(&mut self, host: &mut Host<'_>, command: &Command) {
        let txn = command.transaction;
        let requested = command
            .arg(0)
            .and_then(|object| object.property("app"))
            .and_then(Value::as_str)
            .unwrap_or_default();
        let (app, query) = split_query(requested);
        if app != self.config.app {
            let description = format!(
                "unknown application `{app}`; publish to rtmp://<server>/{}/<point>",
                self.config.app
            );
            let info = status_info("error", "NetConnection.Connect.Rejected", &description);
            self.outbox.result("_error", txn, Value::Null, info);
            return self.fail_with(
                host,
                LogLevel::INFO,
                &format!("connect refused: {description}"),
            );
        }
        self.app_query = query.map(str::to_owned);
        self.connected = true;
        self.outbox.window_ack_size(SERVER_WINDOW);
        self.outbox.set_peer_bandwidth(SERVER_WINDOW);
        self.outbox.set_chunk_size(self.config.chunk_size);
        let properties = amf0::object(&[
            ("fmsVer", amf0::string("FMS/3,0,1,123")),
            ("capabilities", Value::Number(31.0)),
        ]);
        let mut info = status_info(
            "status",
            "NetConnection.Connect.Success",
            "Connection succeeded.",
        );
        if let Value::Object(fields) = &mut info {
            fields.push(("objectEncoding".to_owned(), Value::Number(0.0)));
        }
        self.outbox.result("_result", txn, properties, info);
    }

    fn on_publish(&mut self, host: &mut Host<'_>, command: &Command, stream_id: u32) {
        if self.publishing.is_some() {
            return self.fail(host, "a second `publish` on one connection");
        }
        let name = command.arg(1).and_then(Value::as_str).unwrap_or_default();
        let (point, query) = split_query(name);
        if point.is_empty() {
            let description = format!(
                "no stream name; publish to rtmp://<server>/{}/<point>",
                self.config.app
            );
            return self.refuse_publish(host, stream_id, "NetStream.Publish.BadName", &description);
        }
        let credentials = match query.or(self.app_query.as_deref()) {
            Some(query) => Credentials::url_query(query),
            None => Credentials::none(),
        };
        host.present_credentials(credentials);
        if let Err(error) = host.publish(point) {
            let description = refusal_text(point, &error);
            let code = publish_status_for(error.code);
            return self.refuse_publish(host, stream_id, code, &description);
        }
        host.cancel_timer(HANDSHAKE_TIMER);
        host.count("publishes", 1);
        self.outbox
            .user_control(message::STREAM_BEGIN, &stream_id.to_be_bytes());
        let description = format!("publishing to `{point}`");
        self.outbox
            .on_status(stream_id, "status", "NetStream.Publish.Start", &description);
        host.log(LogLevel::INFO, &format!("encoder {description}"));
        self.publishing = Some(Publishing {
            point: point.to_owned(),
            remux: FlvToTs::new(),
            pushed: 0,
        });
    }

    fn refuse_publish(&mut self, host: &mut Host<'_>, stream_id: u32, code: &str, text: &str) {
        host.count("publish_refusals", 1);
        self.outbox.on_status(stream_id, "error", code, text);
        self.fail_with(
            host,
            LogLevel::INFO,
            &format!("publish refused ({code}): {text}"),
        );
    }

    fn on_unpublish(&mut self, host: &mut Host<'_>) {
        if let Some(publishing) = &self.publishing {
            let line = format!(
                "encoder stopped publishing to `{}` ({} bytes of MPEG-TS)",
                publishing.point, publishing.pushed
            );
            host.log(LogLevel::INFO, &line);
        }
        self.close(host);
    }

    fn on_media(&mut self, host: &mut Host<'_>, kind: TagKind, message: &Message) {
        let Some(publishing) = &mut self.publishing else {
            if matches!(kind, TagKind::Script) {
                return;
            }
            return self.fail(host, "media before an accepted `publish`");
        };
        let body = match kind {
            TagKind::Script => script_body(message),
            _ => &message.payload,
        };
        self.ts.clear();
        if let Err(error) = publishing
            .remux
            .push(kind, message.timestamp, body, &mut self.ts)
        {
            let line = format!("stream to `{}` refused: {error}", publishing.point);
            return self.fail(host, &line);
        }
        if self.ts.is_empty() {
            return;
        }
        match host.push_media(&self.ts) {
            Ok(()) => publishing.pushed += self.ts.len() as u64,
            Err(error) => {
                let line = format!(
                    "`{}` stopped taking media: {}",
                    publishing.point, error.message
                );
                self.fail_with(host, LogLevel::INFO, &line);
            }
        }
    }

    /// A protocol violation or a refused stream: log it, send what is queued, close.
    fn fail(&mut self, host: &mut Host<'_>, reason: &str) {
        host.count("protocol_errors", 1);
        self.fail_with(host, LogLevel::WARN, reason);
    }

    fn fail_with(&mut self, host: &mut Host<'_>, level: LogLevel, reason: &str) {
        host.log(level, &format!("closing the RTMP connection: {reason}"));
        self.close(host);
    }

    fn close(&mut self, host: &mut Host<'_>) {
        if self.is_closed() {
            return;
        }
        // Counted once per publish, not per message: counters are not for the media path.
        if let Some(publishing) = &self.publishing {
            host.count("ts_bytes", publishing.pushed);
        }
        self.flush(host);
        host.cancel_timer(HANDSHAKE_TIMER);
        host.close();
        self.phase = Phase::Closed;
    }
}

/// A data message as an FLV script tag: without RTMP's `@setDataFrame` wrapper (and the
/// AMF3 data message's format byte).
fn script_body(message: &Message) -> &[u8] {
    let body = if message.type_id == message::DATA_AMF3 {
        message.payload.get(1..).unwrap_or_default()
    } else {
        &message.payload
    };
    let mut decoder = Decoder::new(body);
    match decoder.value() {
        Ok(Value::String(name)) if name == "@setDataFrame" => decoder.rest(),
        _ => body,
    }
}

/// A status object: level, code and description.
fn status_info(level: &str, code: &str, description: &str) -> Value {
    amf0::object(&[
        ("level", amf0::string(level)),
        ("code", amf0::string(code)),
        ("description", amf0::string(description)),
    ])
}

/// A host refusal of a publish, worded for the encoder's user.
fn refusal_text(point: &str, error: &HostError) -> String {
    match error.code {
        ErrorCode::WRONG_KIND => format!(
            "publishing point `{point}` serves files; encoders can only push to broadcast points"
        ),
        _ => error.message.to_string(),
    }
}

impl Session for RtmpSession {
    fn on_open(&mut self, host: &mut Host<'_>) {
        host.set_timer(HANDSHAKE_TIMER, self.config.handshake_timeout);
    }

    fn on_data(&mut self, host: &mut Host<'_>, data: &[u8]) {
        match self.phase {
            Phase::Handshake(_) => self.on_handshake_data(host, data),
            Phase::Chunks => self.on_chunk_data(host, data),
            Phase::Closed => {}
        }
    }

    fn on_timer(&mut self, host: &mut Host<'_>, timer: u64) {
        if timer == HANDSHAKE_TIMER && self.publishing.is_none() && !self.is_closed() {
            let ms = self.config.handshake_timeout.as_millis();
            self.fail(host, &format!("no accepted `publish` within {ms} ms"));
        }
    }

    fn on_stream_ended(&mut self, host: &mut Host<'_>, ended: &StreamEnded) {
        if self.is_closed() {
            return;
        }
        let line = format!("the point stopped taking media: {}", ended.message);
        self.fail_with(host, LogLevel::INFO, &line);
    }

    fn on_peer_closed(&mut self, host: &mut Host<'_>) {
        if self.is_closed() {
            return;
        }
        if let Some(publishing) = &self.publishing {
            let line = format!(
                "encoder of `{}` disconnected ({} bytes of MPEG-TS)",
                publishing.point, publishing.pushed
            );
            host.log(LogLevel::INFO, &line);
        }
        self.close(host);
    }
}

#[cfg(test)]
mod tests;

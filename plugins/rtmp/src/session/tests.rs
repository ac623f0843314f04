use ferrocast_plugin_api::testing::MockHost;
use ferrocast_plugin_api::{CredentialKind, EndReason, PointKind};
use ferrocast_plugin_kit::testing::SessionHarness;

use super::*;
use crate::proto::chunk::ChunkWriter;
use crate::proto::handshake::PACKET_SIZE;
use crate::proto::message::{COMMAND_AMF0, SET_CHUNK_SIZE, USER_CONTROL, WINDOW_ACK_SIZE};

/// An encoder driving a session on a mock host, reading back what the server answers.
pub(crate) struct Client {
    pub harness: SessionHarness<RtmpSession>,
    writer: ChunkWriter,
    server: ChunkReader,
    handshake_seen: bool,
}

/// A server message as the client reads it.
#[derive(Debug)]
pub(crate) struct Reply {
    pub type_id: u8,
    pub stream_id: u32,
    pub payload: Vec<u8>,
    pub command: Option<Command>,
}

impl Reply {
    /// The `code` of a status object among the command's arguments.
    pub fn code(&self) -> Option<String> {
        let command = self.command.as_ref()?;
        command.args.iter().find_map(|value| {
            value
                .property("code")
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
    }
}

pub(crate) fn mock() -> MockHost {
    let mut mock = MockHost::new();
    mock.add_point("live", PointKind::BROADCAST, 0);
    mock.add_point("vod", PointKind::ON_DEMAND, 1000);
    mock
}

impl Client {
    pub fn new() -> Self {
        Self::with(mock(), Config::default())
    }

    pub fn with(mock: MockHost, config: Config) -> Self {
        let mut harness = SessionHarness::new(mock, RtmpSession::new(config));
        harness.open();
        Self {
            harness,
            writer: ChunkWriter::default(),
            server: ChunkReader::new(1 << 20),
            handshake_seen: false,
        }
    }

    pub fn handshake(&mut self) {
        let mut c0c1 = vec![3];
        c0c1.extend((0..PACKET_SIZE).map(|i| (i % 251) as u8));
        self.harness.send_in_pieces(&c0c1, 700);
        self.harness.send(&[0; PACKET_SIZE]);
    }

    pub fn send_message(&mut self, csid: u8, type_id: u8, stream_id: u32, payload: &[u8]) {
        let mut bytes = Vec::new();
        self.writer
            .write(csid, 0, type_id, stream_id, payload, &mut bytes);
        self.harness.send(&bytes);
    }

    pub fn command(&mut self, stream_id: u32, values: &[Value]) {
        self.send_message(3, COMMAND_AMF0, stream_id, &amf0::encode_all(values));
    }

    pub fn call(&mut self, name: &str, transaction: f64, args: &[Value]) {
        let mut values = vec![amf0::string(name), Value::Number(transaction)];
        values.extend_from_slice(args);
        self.command(0, &values);
    }

    pub fn connect(&mut self, app: &str) {
        let object = amf0::object(&[
            ("app", amf0::string(app)),
            ("type", amf0::string("nonprivate")),
            ("tcUrl", amf0::string(&format!("rtmp://127.0.0.1/{app}"))),
        ]);
        self.call("connect", 1.0, &[object]);
    }

    pub fn publish(&mut self, name: &str) {
        self.call("releaseStream", 2.0, &[Value::Null, amf0::string(name)]);
        self.call("FCPublish", 3.0, &[Value::Null, amf0::string(name)]);
        self.call("createStream", 4.0, &[Value::Null]);
        let values = [
            amf0::string("publish"),
            Value::Number(5.0),
            Value::Null,
            amf0::string(name),
            amf0::string("live"),
        ];
        self.command(STREAM_ID, &values);
    }

    /// Everything the server sent since the last call, as messages.
    pub fn replies(&mut self) -> Vec<Reply> {
        let mut written = self.harness.take_written();
        if !self.handshake_seen && written.len() > 2 * PACKET_SIZE {
            written.drain(..1 + 2 * PACKET_SIZE);
            self.handshake_seen = true;
        }
        self.server.push(&written);
        let mut replies = Vec::new();
        while let Some(message) = self.server.next_message().unwrap() {
            if message.type_id == SET_CHUNK_SIZE {
                let size = u32::from_be_bytes(message.payload[..4].try_into().unwrap());
                self.server.set_chunk_size(size).unwrap();
            }
            let command = (message.type_id == COMMAND_AMF0)
                .then(|| parse_command(COMMAND_AMF0, &message.payload).unwrap());
            replies.push(Reply {
                type_id: message.type_id,
                stream_id: message.stream_id,
                payload: message.payload,
                command,
            });
        }
        replies
    }

    pub fn codes(&mut self) -> Vec<String> {
        self.replies().iter().filter_map(Reply::code).collect()
    }

    pub fn closed(&self) -> bool {
        self.harness.mock.closed
    }
}

fn connected() -> Client {
    let mut client = Client::new();
    client.handshake();
    client.connect("live");
    assert_eq!(client.codes(), ["NetConnection.Connect.Success"]);
    client
}

#[test]
fn the_handshake_answers_s0_s1_s2_in_any_split() {
    for piece in [1, 7, 1536, usize::MAX] {
        let mut client = Client::new();
        let mut bytes = vec![3];
        bytes.extend([1u8; PACKET_SIZE]);
        client.harness.send_in_pieces(&bytes, piece);
        let written = client.harness.take_written();
        assert_eq!(written.len(), 1 + 2 * PACKET_SIZE);
        assert_eq!(written[1 + PACKET_SIZE..], [1u8; PACKET_SIZE]);
        assert!(!client.closed());
    }
}

#[test]
fn connect_create_and_publish_start_the_point() {
    let mut client = Client::new();
    assert_eq!(client.harness.timer(HANDSHAKE_TIMER), Some(10_000));
    client.handshake();
    client.connect("live");
    let replies = client.replies();
    let types: Vec<u8> = replies.iter().map(|r| r.type_id).collect();
    assert_eq!(types, [WINDOW_ACK_SIZE, 6, SET_CHUNK_SIZE, COMMAND_AMF0]);
    let result = replies[3].command.as_ref().unwrap();
    assert_eq!((result.name.as_str(), result.transaction), ("_result", 1.0));
    assert_eq!(replies[3].code().unwrap(), "NetConnection.Connect.Success");

    client.publish("live");
    let replies = client.replies();
    let create = replies
        .iter()
        .filter_map(|r| r.command.as_ref())
        .find(|c| c.transaction == 4.0)
        .unwrap();
    assert_eq!(create.arg(1), Some(&Value::Number(1.0)));
    let begin = replies.iter().find(|r| r.type_id == USER_CONTROL).unwrap();
    assert_eq!(begin.payload, [0, 0, 0, 0, 0, 1], "StreamBegin 1");
    let start = replies.last().unwrap();
    assert_eq!(start.code().unwrap(), "NetStream.Publish.Start");
    assert_eq!(start.stream_id, STREAM_ID);
    assert_eq!(client.harness.mock.published, ["live"]);
    assert_eq!(client.harness.session.point(), Some("live"));
    assert_eq!(client.harness.timer(HANDSHAKE_TIMER), None);
    assert_eq!(
        client.harness.mock.credentials[0].kind,
        CredentialKind::NONE
    );
    assert!(!client.closed());
}

#[test]
fn a_key_on_the_stream_name_or_the_app_is_presented() {
    let mut client = connected();
    client.publish("live?key=s3cret");
    assert_eq!(client.harness.mock.published, ["live"]);
    let presented = &client.harness.mock.credentials[0];
    assert_eq!(presented.kind, CredentialKind::URL_QUERY);
    assert_eq!(presented.secret.as_str(), "key=s3cret");

    let mut client = Client::new();
    client.handshake();
    client.connect("live?key=other");
    client.publish("live");
    assert_eq!(
        client.harness.mock.credentials[0].secret.as_str(),
        "key=other"
    );
}

#[test]
fn publish_refusals_answer_in_on_status_and_close() {
    let cases = [
        ("nope", "NetStream.Publish.BadName", None),
        ("vod", "NetStream.Publish.BadName", None),
        ("", "NetStream.Publish.BadName", None),
        (
            "live",
            "NetStream.Publish.BadName",
            Some(ErrorCode::ALREADY_PUBLISHING),
        ),
        (
            "live",
            "NetStream.Publish.Denied",
            Some(ErrorCode::UNAUTHORIZED),
        ),
        (
            "live",
            "NetStream.Publish.BadName",
            Some(ErrorCode::PROTOCOL_DISABLED),
        ),
    ];
    for (name, code, refusal) in cases {
        let mut client = connected();
        match refusal {
            Some(ErrorCode::ALREADY_PUBLISHING) => client.harness.mock.busy.push("live".into()),
            Some(refusal) => {
                client
                    .harness
                    .mock
                    .refuse("live", refusal, "refused by the host");
            }
            None => {}
        }
        client.publish(name);
        assert_eq!(client.codes().last().unwrap(), code, "{name} {refusal:?}");
        assert!(client.closed());
        assert!(client.harness.mock.published.is_empty());
        assert_eq!(
            client.harness.mock.counters.get("publish_refusals"),
            Some(&1)
        );
        let logs = client.harness.logs(LogLevel::INFO);
        assert!(logs[0].contains(code), "{logs:?}");
    }
}

#[test]
fn a_wrong_app_is_rejected() {
    let mut client = Client::new();
    client.handshake();
    client.connect("other");
    let replies = client.replies();
    let error = replies.last().unwrap();
    assert_eq!(error.command.as_ref().unwrap().name, "_error");
    assert_eq!(error.code().unwrap(), "NetConnection.Connect.Rejected");
    assert!(client.closed());
}

#[test]
fn play_is_refused_clearly() {
    let mut client = connected();
    client.call("createStream", 2.0, &[Value::Null]);
    let values = [
        amf0::string("play"),
        Value::Number(0.0),
        Value::Null,
        amf0::string("live"),
    ];
    client.command(STREAM_ID, &values);
    assert_eq!(client.codes(), ["NetStream.Play.Failed"]);
    assert!(client.closed());
}

#[test]
fn unknown_commands_and_commands_before_connect_close() {
    let mut client = connected();
    client.call("fly", 7.0, &[Value::Null]);
    assert_eq!(client.codes(), ["NetConnection.Call.Failed"]);
    assert!(client.closed());
    let warnings = client.harness.logs(LogLevel::WARN);
    assert!(
        warnings[0].contains("unknown command `fly`"),
        "{warnings:?}"
    );

    let mut client = Client::new();
    client.handshake();
    client.call("createStream", 2.0, &[Value::Null]);
    assert!(client.closed());
    assert!(client.harness.logs(LogLevel::WARN)[0].contains("before `connect`"));
}

#[test]
fn unpublishing_or_dropping_closes() {
    let mut client = connected();
    client.publish("live");
    client.replies();
    client.call("FCUnpublish", 6.0, &[Value::Null, amf0::string("live")]);
    assert!(!client.closed());
    client.call("deleteStream", 7.0, &[Value::Null, Value::Number(1.0)]);
    assert!(client.closed());
    let logs = client.harness.logs(LogLevel::INFO);
    assert!(logs
        .last()
        .unwrap()
        .contains("stopped publishing to `live`"));

    let mut client = connected();
    client.publish("live");
    client.harness.peer_closed();
    assert!(client.closed());

    let mut client = connected();
    client.publish("live");
    client.harness.stream_ended(EndReason::POINT_CLOSED);
    assert!(client.closed());
}

#[test]
fn bad_chunk_sizes_close_with_a_warning() {
    for size in [0u32, 0x0100_0000, 0x8000_0000] {
        let mut client = connected();
        client.send_message(2, SET_CHUNK_SIZE, 0, &size.to_be_bytes());
        assert!(client.closed(), "{size}");
        assert_eq!(
            client.harness.mock.counters.get("protocol_errors"),
            Some(&1)
        );
        let warnings = client.harness.logs(LogLevel::WARN);
        assert!(warnings[0].contains("chunk size"), "{warnings:?}");
    }
}

#[test]
fn an_overlong_message_closes_before_it_is_buffered() {
    let config = Config {
        max_message_bytes: 65_536,
        ..Config::default()
    };
    let mut client = Client::with(mock(), config);
    client.handshake();
    // A type 0 header announcing 16 MiB - 1 bytes.
    client
        .harness
        .send(&[0x04, 0, 0, 0, 0xFF, 0xFF, 0xFF, 9, 1, 0, 0, 0]);
    assert!(client.closed());
    assert!(client.harness.logs(LogLevel::WARN)[0].contains("over the limit"));
    assert!(client.harness.session.reader.buffered() < 100);
}

#[test]
fn amf_nested_a_thousand_deep_closes() {
    let mut client = Client::new();
    client.handshake();
    let mut body = amf0::encode_all(&[amf0::string("connect"), Value::Number(1.0)]);
    for _ in 0..1000 {
        body.extend([0x0A, 0, 0, 0, 1]);
    }
    client.send_message(3, COMMAND_AMF0, 0, &body);
    assert!(client.closed());
    assert!(client.harness.logs(LogLevel::WARN)[0].contains("nested deeper"));
}

#[test]
fn video_before_its_sequence_header_or_an_unknown_codec_closes() {
    // AVC NAL units (packet type 1) before any sequence header.
    let before_header = [0x17, 1, 0, 0, 0, 0, 0, 0, 2, 0x09, 0x10];
    // Codec id 2: Sorenson H.263.
    let unknown_codec = [0x12, 0, 0, 0, 0];
    for body in [&before_header[..], &unknown_codec[..]] {
        let mut client = connected();
        client.publish("live");
        client.replies();
        client.send_message(6, message::VIDEO, STREAM_ID, body);
        assert!(client.closed(), "{body:02x?}");
        let warnings = client.harness.logs(LogLevel::WARN);
        assert!(
            warnings[0].contains("stream to `live` refused"),
            "{warnings:?}"
        );
        assert!(client.harness.mock.pushed.is_empty());
    }
}

#[test]
fn media_before_publish_closes() {
    let mut client = connected();
    client.send_message(6, message::VIDEO, STREAM_ID, &[0x17, 0, 0, 0, 0]);
    assert!(client.closed());
}

#[test]
fn the_peer_window_is_acknowledged_and_pings_answered() {
    let mut client = connected();
    client.send_message(2, WINDOW_ACK_SIZE, 0, &1000u32.to_be_bytes());
    client.send_message(2, message::USER_CONTROL, 0, &[0, 6, 0, 0, 0, 9]);
    let replies = client.replies();
    assert_eq!(replies[0].type_id, USER_CONTROL);
    assert_eq!(replies[0].payload, [0, 7, 0, 0, 0, 9]);
    // Over the window: an Acknowledgement with the byte count so far.
    client.call(
        "_checkbw",
        2.0,
        &[Value::Null, amf0::string(&"x".repeat(1000))],
    );
    let replies = client.replies();
    let ack = replies.iter().find(|r| r.type_id == 3).expect("an ack");
    let received = client.harness.session.reader.received() as u32;
    assert_eq!(ack.payload, received.to_be_bytes());
}

#[test]
fn a_broken_or_slow_handshake_closes() {
    let mut client = Client::new();
    client.harness.send(b"GET / HTTP/1.1\r\n\r\n");
    assert!(client.closed());
    assert!(client.harness.take_written().is_empty());
    assert!(client.harness.logs(LogLevel::WARN)[0].contains("version 71"));

    let mut client = connected();
    client.harness.fire(HANDSHAKE_TIMER);
    assert!(client.closed());
    assert!(client.harness.logs(LogLevel::WARN)[0].contains("within 10000 ms"));
}

/// What ffmpeg 5.1 sent publishing four seconds of `config/media/sample.ts` (H.264 and AAC)
/// with `-c copy -f flv rtmp://127.0.0.1/live/live`: handshake, commands, media, unpublish.
const FFMPEG_PUBLISH: &[u8] = include_bytes!("../../tests/fixtures/ffmpeg-publish.rtmp");

/// Replay the capture in reads of the sizes `sizes` gives, in turn.
fn replay(sizes: &mut dyn FnMut() -> usize) -> Client {
    let mut client = Client::new();
    let mut rest = FFMPEG_PUBLISH;
    while !rest.is_empty() {
        let (part, tail) = rest.split_at(sizes().clamp(1, rest.len()));
        client.harness.send(part);
        rest = tail;
    }
    client
}

fn assert_replayed(mut client: Client, what: &str) {
    assert_eq!(client.harness.mock.published, ["live"], "{what}");
    let pushed = &client.harness.mock.pushed;
    let pushed_len = pushed.len();
    assert!(
        pushed.len() > 50 * 188,
        "{what}: {} bytes of TS",
        pushed.len()
    );
    assert_eq!(pushed.len() % 188, 0, "{what}: whole TS packets");
    assert!(pushed.chunks(188).all(|packet| packet[0] == 0x47), "{what}");
    assert!(client.harness.logs(LogLevel::WARN).is_empty(), "{what}");
    // The capture ends with FCUnpublish and deleteStream.
    assert!(client.closed(), "{what}");
    let logs = client.harness.logs(LogLevel::INFO);
    assert!(
        logs.last()
            .unwrap()
            .contains("stopped publishing to `live`"),
        "{what}: {logs:?}"
    );
    let codes = client.codes();
    assert_eq!(
        codes,
        ["NetConnection.Connect.Success", "NetStream.Publish.Start"],
        "{what}"
    );
    let counters = &client.harness.mock.counters;
    assert_eq!(counters.get("publishes"), Some(&1), "{what}");
    assert_eq!(
        counters.get("ts_bytes"),
        Some(&(pushed_len as u64)),
        "{what}"
    );
    assert_eq!(counters.get("protocol_errors"), None, "{what}");
}

#[test]
fn an_ffmpeg_publish_replays_in_odd_splits() {
    for piece in [1, 7, 4096, usize::MAX] {
        let client = replay(&mut || piece);
        assert_replayed(client, &format!("pieces of {piece}"));
    }
    let mut state = 0x1234_5678_9ABC_DEF0u64;
    for round in 0..3 {
        let client = replay(&mut || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            1 + (state % 3000) as usize
        });
        assert_replayed(client, &format!("random split {round}"));
    }
}

//! RTMP message types, protocol control messages (types 1–6), and AMF0 commands.
//!
//! Parsing turns a message's payload into a [`Control`] or a [`Command`]; the builders
//! append whole chunked messages the server sends, on the chunk streams encoders expect
//! (2 for control, 3 for connection commands, 5 for stream status).

use thiserror::Error;

use super::amf0::{self, AmfError, Value};
use super::chunk::ChunkWriter;

pub const SET_CHUNK_SIZE: u8 = 1;
pub const ABORT: u8 = 2;
pub const ACKNOWLEDGEMENT: u8 = 3;
pub const USER_CONTROL: u8 = 4;
pub const WINDOW_ACK_SIZE: u8 = 5;
pub const SET_PEER_BANDWIDTH: u8 = 6;
pub const AUDIO: u8 = 8;
pub const VIDEO: u8 = 9;
pub const DATA_AMF3: u8 = 15;
pub const COMMAND_AMF3: u8 = 17;
pub const DATA_AMF0: u8 = 18;
pub const COMMAND_AMF0: u8 = 20;

/// User control event: a stream starts (sent before `NetStream.Publish.Start`).
pub const STREAM_BEGIN: u16 = 0;
/// User control events: the peer's ping, and the answer.
pub const PING_REQUEST: u16 = 6;
pub const PING_RESPONSE: u16 = 7;

/// Chunk stream of protocol control messages.
pub const CONTROL_CSID: u8 = 2;
/// Chunk stream of connection-level command answers.
pub const COMMAND_CSID: u8 = 3;
/// Chunk stream of a NetStream's status messages.
pub const STREAM_CSID: u8 = 5;

/// Why a message could not be understood.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum MessageError {
    #[error("control message of type {type_id} has {length} bytes; it needs {needed}")]
    ShortControl {
        type_id: u8,
        length: usize,
        needed: usize,
    },
    #[error("malformed command: {0}")]
    Amf(#[from] AmfError),
    #[error("command message does not start with a name and a transaction id")]
    NotACommand,
}

/// A protocol control message from the peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Control {
    SetChunkSize(u32),
    Abort(u32),
    Acknowledgement(u32),
    WindowAckSize(u32),
    SetPeerBandwidth(u32),
    UserControl { event: u16, data: Vec<u8> },
}

/// Parse a control message (types 1 to 6), or `None` for any other type.
pub fn parse_control(type_id: u8, payload: &[u8]) -> Result<Option<Control>, MessageError> {
    let needed = match type_id {
        SET_CHUNK_SIZE | ABORT | ACKNOWLEDGEMENT | WINDOW_ACK_SIZE => 4,
        SET_PEER_BANDWIDTH => 5,
        USER_CONTROL => 2,
        _ => return Ok(None),
    };
    if payload.len() < needed {
        return Err(MessageError::ShortControl {
            type_id,
            length: payload.len(),
            needed,
        });
    }
    let word = || u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]]);
    Ok(Some(match type_id {
        // The top bit of a chunk size is reserved and must be zero: keep it, so that a
        // size with it set reads as out of range.
        SET_CHUNK_SIZE => Control::SetChunkSize(word()),
        ABORT => Control::Abort(word()),
        ACKNOWLEDGEMENT => Control::Acknowledgement(word()),
        WINDOW_ACK_SIZE => Control::WindowAckSize(word()),
        SET_PEER_BANDWIDTH => Control::SetPeerBandwidth(word()),
        _ => Control::UserControl {
            event: u16::from_be_bytes([payload[0], payload[1]]),
            data: payload[2..].to_vec(),
        },
    }))
}

/// An AMF0 command: `name`, transaction id, command object, arguments.
#[derive(Clone, Debug, PartialEq)]
pub struct Command {
    pub name: String,
    pub transaction: f64,
    /// The command object (`null` for most commands after `connect`) and the arguments.
    pub args: Vec<Value>,
}

impl Command {
    /// The `index`th value after the transaction id (0 is the command object).
    pub fn arg(&self, index: usize) -> Option<&Value> {
        self.args.get(index)
    }
}

/// Parse a command message body (type 20; type 17 after its leading format byte).
pub fn parse_command(type_id: u8, payload: &[u8]) -> Result<Command, MessageError> {
    let body = if type_id == COMMAND_AMF3 {
        payload.get(1..).unwrap_or_default()
    } else {
        payload
    };
    let mut values = amf0::decode_all(body)?.into_iter();
    let (Some(Value::String(name)), Some(Value::Number(transaction))) =
        (values.next(), values.next())
    else {
        return Err(MessageError::NotACommand);
    };
    Ok(Command {
        name,
        transaction,
        args: values.collect(),
    })
}

/// Appends the server's messages, chunked with the server's current chunk size.
#[derive(Debug, Default)]
pub struct Outbox {
    pub writer: ChunkWriter,
    pub bytes: Vec<u8>,
}

impl Outbox {
    fn control(&mut self, type_id: u8, payload: &[u8]) {
        self.writer
            .write(CONTROL_CSID, 0, type_id, 0, payload, &mut self.bytes);
    }

    /// Set Chunk Size; later messages use it.
    pub fn set_chunk_size(&mut self, size: u32) {
        self.control(SET_CHUNK_SIZE, &size.to_be_bytes());
        self.writer.set_chunk_size(size as usize);
    }

    pub fn window_ack_size(&mut self, size: u32) {
        self.control(WINDOW_ACK_SIZE, &size.to_be_bytes());
    }

    /// Set Peer Bandwidth, limit type dynamic.
    pub fn set_peer_bandwidth(&mut self, size: u32) {
        let mut payload = size.to_be_bytes().to_vec();
        payload.push(2);
        self.control(SET_PEER_BANDWIDTH, &payload);
    }

    pub fn acknowledgement(&mut self, received: u32) {
        self.control(ACKNOWLEDGEMENT, &received.to_be_bytes());
    }

    pub fn user_control(&mut self, event: u16, data: &[u8]) {
        let mut payload = event.to_be_bytes().to_vec();
        payload.extend_from_slice(data);
        self.control(USER_CONTROL, &payload);
    }

    /// An AMF0 command on chunk stream `csid` of message stream `stream_id`.
    pub fn command(&mut self, csid: u8, stream_id: u32, values: &[Value]) {
        let payload = amf0::encode_all(values);
        self.writer
            .write(csid, 0, COMMAND_AMF0, stream_id, &payload, &mut self.bytes);
    }

    /// `_result` (or `_error`) for transaction `transaction`.
    pub fn result(&mut self, name: &str, transaction: f64, object: Value, info: Value) {
        let values = [amf0::string(name), Value::Number(transaction), object, info];
        self.command(COMMAND_CSID, 0, &values);
    }

    /// `onStatus` on message stream `stream_id`.
    pub fn on_status(&mut self, stream_id: u32, level: &str, code: &str, description: &str) {
        let info = amf0::object(&[
            ("level", amf0::string(level)),
            ("code", amf0::string(code)),
            ("description", amf0::string(description)),
        ]);
        let values = [
            amf0::string("onStatus"),
            Value::Number(0.0),
            Value::Null,
            info,
        ];
        self.command(STREAM_CSID, stream_id, &values);
    }

    pub fn take(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::chunk::ChunkReader;

    #[test]
    fn control_messages_parse_and_short_ones_are_refused() {
        assert_eq!(
            parse_control(SET_CHUNK_SIZE, &[0, 0, 16, 0]),
            Ok(Some(Control::SetChunkSize(4096)))
        );
        assert_eq!(
            parse_control(USER_CONTROL, &[0, 6, 1, 2, 3, 4]),
            Ok(Some(Control::UserControl {
                event: PING_REQUEST,
                data: vec![1, 2, 3, 4]
            }))
        );
        assert!(parse_control(SET_PEER_BANDWIDTH, &[0, 0, 0, 1]).is_err());
        assert_eq!(parse_control(VIDEO, &[]), Ok(None));
    }

    #[test]
    fn commands_parse_in_both_encodings() {
        let body = amf0::encode_all(&[
            amf0::string("publish"),
            Value::Number(5.0),
            Value::Null,
            amf0::string("live"),
        ]);
        let command = parse_command(COMMAND_AMF0, &body).unwrap();
        assert_eq!(
            (command.name.as_str(), command.transaction),
            ("publish", 5.0)
        );
        assert_eq!(command.arg(1), Some(&amf0::string("live")));
        let mut amf3 = vec![0];
        amf3.extend(&body);
        assert_eq!(parse_command(COMMAND_AMF3, &amf3).unwrap(), command);
        assert_eq!(
            parse_command(COMMAND_AMF0, &amf0::encode_all(&[Value::Null])),
            Err(MessageError::NotACommand)
        );
    }

    #[test]
    fn the_outbox_writes_messages_a_reader_takes_back() {
        let mut outbox = Outbox::default();
        outbox.window_ack_size(2_500_000);
        outbox.set_chunk_size(4096);
        outbox.on_status(1, "status", "NetStream.Publish.Start", &"x".repeat(5000));
        let mut reader = ChunkReader::new(1 << 20);
        reader.push(&outbox.take());
        let first = reader.next_message().unwrap().unwrap();
        assert_eq!(first.type_id, WINDOW_ACK_SIZE);
        let second = reader.next_message().unwrap().unwrap();
        assert_eq!(
            parse_control(second.type_id, &second.payload),
            Ok(Some(Control::SetChunkSize(4096)))
        );
        reader.set_chunk_size(4096).unwrap();
        let status = reader.next_message().unwrap().unwrap();
        assert_eq!((status.csid, status.stream_id), (5, 1));
        let command = parse_command(status.type_id, &status.payload).unwrap();
        assert_eq!(command.name, "onStatus");
        assert_eq!(
            command.arg(1).unwrap().property("code"),
            Some(&amf0::string("NetStream.Publish.Start"))
        );
    }
}

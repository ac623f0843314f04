//! Plain data that crosses the plugin boundary.
//!
//! Every type here is `#[repr(C)]` and derives `StableAbi`, so its layout is checked when a
//! plugin is loaded. Enumerations are integer newtypes with named constants rather than Rust
//! enums: a later interface version can add a value without changing the layout, and code that
//! meets a value it does not know can treat it as "other".

use abi_stable::std_types::{RSlice, RStr, RString, RVec};
use abi_stable::StableAbi;
use std::fmt;
use std::net::SocketAddr;

/// What a plugin does for the server.
#[repr(transparent)]
#[derive(StableAbi, Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct PluginKind(pub u8);

impl PluginKind {
    /// A control protocol (HTTP, RTSP): talks to players and encoders.
    pub const CONTROL: Self = Self(0);
    /// A transport (TCP, UDP): carries media data.
    pub const TRANSPORT: Self = Self(1);

    /// The kind's name, for messages: `control`, `transport`, or `unknown` for a value this
    /// version does not know.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::CONTROL => "control",
            Self::TRANSPORT => "transport",
            _ => "unknown",
        }
    }
}

impl fmt::Display for PluginKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Static description of a plugin, reported by the host at load time.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq)]
pub struct PluginInfo {
    /// Unique name; it is the key of the plugin's table in the configuration (`[plugins.<name>]`)
    /// and the name used in a publishing point's `protocols` list.
    pub name: RString,
    /// The plugin's own version.
    pub version: RString,
    /// A one-line description, shown by `ferrocast --list-plugins`.
    pub description: RString,
    /// Control or transport.
    pub kind: PluginKind,
}

/// One client connection handed to a plugin.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq)]
pub struct SessionInfo {
    /// Server-wide unique session number, as it appears in the host's log.
    pub id: u64,
    /// Remote address, `ip:port`.
    pub peer: RString,
    /// Local address the connection arrived on, `ip:port`.
    pub local: RString,
}

impl SessionInfo {
    /// The connection `id` from `peer` to `local`, with the addresses written as the host
    /// writes them (`127.0.0.1:8080`, `[::1]:8080`). Handy in tests.
    pub fn new(id: u64, peer: SocketAddr, local: SocketAddr) -> Self {
        Self {
            id,
            peer: peer.to_string().into(),
            local: local.to_string().into(),
        }
    }

    /// The client's address. The ferrocast server always writes `ip:port` here (IPv6 as
    /// `[ip]:port`), so this is `None` only for a hand-made `SessionInfo` with another text.
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.peer.as_str().parse().ok()
    }

    /// The local address the connection arrived on; see [`SessionInfo::peer_addr`].
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.local.as_str().parse().ok()
    }
}

/// Whether a publishing point is live or serves files.
#[repr(transparent)]
#[derive(StableAbi, Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct PointKind(pub u8);

impl PointKind {
    /// Live, fed by an encoder. Clients can only start and stop.
    pub const BROADCAST: Self = Self(0);
    /// Files. Clients can start, stop, pause and seek.
    pub const ON_DEMAND: Self = Self(1);

    /// The kind's name, for messages; `unknown` for a value this version does not know.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BROADCAST => "broadcast",
            Self::ON_DEMAND => "on-demand",
            _ => "unknown",
        }
    }
}

/// What the host knows about a publishing point (or a file inside a directory point).
#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq)]
pub struct PointInfo {
    /// The publishing point's name.
    pub name: RString,
    /// The file within a directory point (`""` for a point that is a single stream or file).
    pub item: RString,
    /// Broadcast (live) or on-demand.
    pub kind: PointKind,
    /// Size in bytes of the on-demand file; 0 for broadcast points.
    pub size: u64,
    /// Duration of the on-demand file in milliseconds; 0 when unknown or live.
    pub duration_ms: u64,
    /// For broadcast points: an encoder is currently feeding the point.
    pub live: bool,
}

/// Why the host refused a request.
#[repr(transparent)]
#[derive(StableAbi, Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct ErrorCode(pub u16);

impl ErrorCode {
    /// No such publishing point, or no such file in a directory point.
    pub const NOT_FOUND: Self = Self(1);
    /// The point exists, but this plugin's protocol is not enabled on it.
    pub const PROTOCOL_DISABLED: Self = Self(2);
    /// The request names something outside the point (for example a path traversal).
    pub const FORBIDDEN: Self = Self(3);
    /// Another encoder is already publishing to the point.
    pub const ALREADY_PUBLISHING: Self = Self(4);
    /// The operation does not fit the point's kind (publishing to an on-demand point, say).
    pub const WRONG_KIND: Self = Self(5);
    /// A byte range outside the file.
    pub const BAD_RANGE: Self = Self(6);
    /// The point is temporarily unable to serve (a file could not be read, say).
    pub const UNAVAILABLE: Self = Self(7);
    /// The session is in a state where the call makes no sense (pushing media before publishing).
    pub const INVALID_STATE: Self = Self(8);
    /// The point or plugin is draining: existing sessions go on, new ones are refused.
    pub const DRAINING: Self = Self(9);
    /// The requested transport is not enabled on the point, or refused by its plugin.
    pub const UNSUPPORTED_TRANSPORT: Self = Self(10);
    /// The point cannot do that: pause or seek a broadcast point.
    pub const NOT_SEEKABLE: Self = Self(11);
    /// Since 1.1. The request needs credentials, and none or wrong ones were presented (HTTP
    /// 401 with `WWW-Authenticate`, RTSP 401).
    pub const UNAUTHORIZED: Self = Self(12);
    /// Since 1.1. A limit is reached (connections, clients or bandwidth of a point): try again
    /// later (HTTP 503 with `Retry-After`, RTSP 453 Not Enough Bandwidth).
    pub const OVER_CAPACITY: Self = Self(13);
    /// Since 1.1. Too many failed attempts from this client's address: it must wait (HTTP 429
    /// with `Retry-After`, RTSP 503).
    pub const RATE_LIMITED: Self = Self(14);

    /// The code's name, for messages; `error` for a value this version does not know.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NOT_FOUND => "not found",
            Self::PROTOCOL_DISABLED => "protocol disabled",
            Self::FORBIDDEN => "forbidden",
            Self::ALREADY_PUBLISHING => "already publishing",
            Self::WRONG_KIND => "wrong point kind",
            Self::BAD_RANGE => "bad range",
            Self::UNAVAILABLE => "unavailable",
            Self::INVALID_STATE => "invalid state",
            Self::DRAINING => "draining",
            Self::UNSUPPORTED_TRANSPORT => "unsupported transport",
            Self::NOT_SEEKABLE => "not seekable",
            Self::UNAUTHORIZED => "unauthorized",
            Self::OVER_CAPACITY => "over capacity",
            Self::RATE_LIMITED => "rate limited",
            _ => "error",
        }
    }
}

/// A refusal from the host, with a message written for the client or operator.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq)]
pub struct HostError {
    /// What went wrong; handle unknown values generically.
    pub code: ErrorCode,
    /// Why, in words for a person (a log line or a protocol error's text).
    pub message: RString,
}

impl HostError {
    /// An error with `code` and `message`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: RString::from(message.into()),
        }
    }
}

impl fmt::Display for HostError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code.as_str(), self.message)
    }
}

impl std::error::Error for HostError {}

/// A half-open byte range `start..end` of an on-demand file.
#[repr(C)]
#[derive(StableAbi, Clone, Copy, PartialEq, Eq, Debug)]
pub struct ByteRange {
    /// First byte.
    pub start: u64,
    /// One past the last byte; `u64::MAX` for "to the end".
    pub end: u64,
}

impl ByteRange {
    /// The range that plays a live point, or a whole file.
    pub const ALL: Self = Self {
        start: 0,
        end: u64::MAX,
    };

    /// Number of bytes in the range (0 if `end <= start`).
    pub fn len(self) -> u64 {
        self.end.saturating_sub(self.start)
    }

    /// Whether the range holds no byte.
    pub fn is_empty(self) -> bool {
        self.len() == 0
    }
}

/// Why the media the host was sending to a session stopped.
#[repr(transparent)]
#[derive(StableAbi, Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct EndReason(pub u8);

impl EndReason {
    /// The requested byte range was sent in full.
    pub const COMPLETE: Self = Self(0);
    /// The live source ended and will not come back (for example its reconnect grace ran out).
    pub const SOURCE_ENDED: Self = Self(1);
    /// The point was removed or its protocol disabled for it.
    pub const POINT_CLOSED: Self = Self(2);
    /// Reading the source failed.
    pub const SOURCE_ERROR: Self = Self(3);
    /// The client did not keep up with a live stream (it kept falling behind the point's
    /// ring) and was disconnected. A plugin built before this value existed sees a reason it
    /// does not know, and handles it as any other failure.
    pub const CLIENT_TOO_SLOW: Self = Self(4);

    /// The reason's name, for messages; `ended` for a value this version does not know.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::COMPLETE => "complete",
            Self::SOURCE_ENDED => "source ended",
            Self::POINT_CLOSED => "point closed",
            Self::SOURCE_ERROR => "source error",
            Self::CLIENT_TOO_SLOW => "client too slow",
            _ => "ended",
        }
    }
}

/// Delivered to a session when the media it was playing stops.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq)]
pub struct StreamEnded {
    /// Why the media stopped.
    pub reason: EndReason,
    /// Details, for the log or a protocol answer.
    pub message: RString,
}

/// Severity of a message a plugin logs through the host.
#[repr(transparent)]
#[derive(StableAbi, Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub struct LogLevel(pub u8);

impl LogLevel {
    /// A failure the operator must look at.
    pub const ERROR: Self = Self(1);
    /// Something unexpected the server survived.
    pub const WARN: Self = Self(2);
    /// A normal event worth recording.
    pub const INFO: Self = Self(3);
    /// Detail for debugging.
    pub const DEBUG: Self = Self(4);
    /// Very fine detail for debugging.
    pub const TRACE: Self = Self(5);
}

/// One problem with a plugin's settings, found by the plugin itself.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq)]
pub struct SettingError {
    /// The setting's key within the plugin's table, or `""` for the table as a whole.
    pub key: RString,
    /// What is wrong and how to fix it.
    pub message: RString,
}

impl SettingError {
    /// An error about the setting `key`; the host shows it at the key's line.
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            key: RString::from(key.into()),
            message: RString::from(message.into()),
        }
    }
}

/// Why a plugin could not create an instance from its settings.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq)]
pub struct CreateError {
    /// Problems with the settings; empty when the plugin faulted instead.
    pub settings: RVec<SettingError>,
    /// Set when the plugin panicked during initialisation.
    pub fault: RString,
}

/// How a transport carries media to a client.
#[repr(transparent)]
#[derive(StableAbi, Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct TransportKind(pub u8);

impl TransportKind {
    /// RTP/AVP over UDP to the client's ports (carried by the `udp` plugin).
    pub const UDP_UNICAST: Self = Self(0);
    /// RTP/AVP/TCP interleaved on the control connection (carried by the `tcp` plugin).
    pub const TCP_INTERLEAVED: Self = Self(1);

    /// The kind's name, for messages; `unknown transport` for a value this version does not know.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::UDP_UNICAST => "RTP/AVP/UDP unicast",
            Self::TCP_INTERLEAVED => "RTP/AVP/TCP interleaved",
            _ => "unknown transport",
        }
    }
}

/// A control plugin's request for a media transport (an RTSP SETUP, say).
#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq)]
pub struct TransportRequest {
    /// `point` or `point/file`.
    pub path: RString,
    /// RTP over UDP or interleaved in the RTSP connection.
    pub kind: TransportKind,
    /// UDP: the client's RTP and RTCP ports.
    pub client_rtp_port: u16,
    /// See `client_rtp_port`.
    pub client_rtcp_port: u16,
    /// TCP interleaved: the channels for RTP and RTCP.
    pub rtp_channel: u8,
    /// See `rtp_channel`.
    pub rtcp_channel: u8,
}

/// A transport the host set up for a session.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq)]
pub struct TransportInfo {
    /// Identifies the transport in later calls and events.
    pub id: u64,
    /// The transport plugin that accepted it (`udp`, `tcp`).
    pub plugin: RString,
    /// The kind the transport plugin set up.
    pub kind: TransportKind,
    /// UDP: the server's RTP and RTCP ports; 0 otherwise.
    pub server_rtp_port: u16,
    /// See `server_rtp_port`.
    pub server_rtcp_port: u16,
    /// UDP: the client address media goes to; empty otherwise.
    pub destination: RString,
    /// The RTP synchronisation source of the stream.
    pub ssrc: u32,
}

/// Where transport media starts, for the reply to the client (RTSP `Range` and `RTP-Info`).
#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq)]
pub struct PlayInfo {
    /// The point the media comes from.
    pub point: PointInfo,
    /// Media position of the first packet, in milliseconds (0 for live).
    pub start_ms: u64,
    /// Sequence number and timestamp of the first RTP packet the client will receive.
    pub rtp_seq: u16,
    /// See `rtp_seq`.
    pub rtp_time: u32,
}

/// `start_ms` for [`crate::Host::play_transports`]: resume where paused (or start at the
/// beginning), rather than seek.
pub const RESUME: u64 = u64::MAX;

/// How a standalone output frames media.
#[repr(transparent)]
#[derive(StableAbi, Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Framing(pub u8);

impl Framing {
    /// MPEG-TS packets as they are, 7 per datagram.
    pub const RAW_TS: Self = Self(0);
    /// RTP/MP2T (RFC 2250), 7 TS packets per RTP packet.
    pub const RTP: Self = Self(1);
}

/// A standalone output a transport plugin asks the host to run from its settings: a broadcast
/// point pushed to a UDP (unicast or multicast) destination.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq)]
pub struct OutputSpec {
    /// Name of the broadcast point to push.
    pub point: RString,
    /// `ip:port`; a multicast group is allowed.
    pub destination: RString,
    /// How the media is put in datagrams.
    pub framing: Framing,
    /// Multicast TTL (hops).
    pub ttl: u8,
    /// Local IP address to send from (and, for multicast, the interface to send on); empty
    /// for the system's choice.
    pub interface: RString,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn end_reasons_keep_their_values_and_names() {
        let reasons = [
            (EndReason::COMPLETE, 0, "complete"),
            (EndReason::SOURCE_ENDED, 1, "source ended"),
            (EndReason::POINT_CLOSED, 2, "point closed"),
            (EndReason::SOURCE_ERROR, 3, "source error"),
            (EndReason::CLIENT_TOO_SLOW, 4, "client too slow"),
        ];
        for (reason, value, name) in reasons {
            assert_eq!(reason.0, value, "{name}");
            assert_eq!(reason.as_str(), name);
        }
        assert_eq!(
            EndReason(200).as_str(),
            "ended",
            "a reason from a newer host"
        );
    }

    #[test]
    fn session_addresses_parse_as_the_host_writes_them() {
        let v4 = SessionInfo::new(
            7,
            "192.0.2.1:50000".parse().unwrap(),
            "127.0.0.1:8080".parse().unwrap(),
        );
        assert_eq!(v4.peer.as_str(), "192.0.2.1:50000");
        assert_eq!(v4.peer_addr(), Some("192.0.2.1:50000".parse().unwrap()));
        assert_eq!(v4.local_addr().map(|local| local.port()), Some(8080));

        let v6 = SessionInfo::new(
            8,
            "[::1]:40000".parse().unwrap(),
            "[2001:db8::1]:554".parse().unwrap(),
        );
        assert_eq!(v6.peer.as_str(), "[::1]:40000");
        assert!(v6.peer_addr().unwrap().ip().is_loopback());
        assert_eq!(v6.local_addr().unwrap().to_string(), "[2001:db8::1]:554");
    }

    #[test]
    fn session_addresses_that_are_not_ip_port_are_none() {
        let odd = SessionInfo {
            id: 1,
            peer: "localhost:80".into(),
            local: "::1".into(),
        };
        assert_eq!(odd.peer_addr(), None);
        assert_eq!(odd.local_addr(), None);
    }
}

/// Since 1.1. How a client presented credentials; the host checks them, the plugin only
/// reports what it parsed.
#[repr(transparent)]
#[derive(StableAbi, Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct CredentialKind(pub u8);

impl CredentialKind {
    /// Nothing presented (clears what an earlier request presented).
    pub const NONE: Self = Self(0);
    /// HTTP/RTSP Basic authentication: `user` and `secret` (the password).
    pub const BASIC: Self = Self(1);
    /// A bearer token (`Authorization: Bearer …`) in `secret`.
    pub const BEARER: Self = Self(2);
    /// The request URL's raw query string in `secret` (without the `?`): the host reads its
    /// stream key or signed-URL parameters from it.
    pub const URL_QUERY: Self = Self(3);

    /// The kind's name, for messages; `unknown` for a value this version does not know.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NONE => "none",
            Self::BASIC => "basic",
            Self::BEARER => "bearer",
            Self::URL_QUERY => "url query",
            _ => "unknown",
        }
    }
}

/// Since 1.1. What a client presented to prove who it is, for the host to check against the
/// point's publish or play rules. Secrets are never logged.
#[repr(C)]
#[derive(StableAbi, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// What was presented, and so how `user` and `secret` are read.
    pub kind: CredentialKind,
    /// The user name (Basic); empty otherwise.
    pub user: RString,
    /// The password, token or query; never logged.
    pub secret: RString,
}

impl Credentials {
    /// No credentials: a request that presented none.
    pub fn none() -> Self {
        Self {
            kind: CredentialKind::NONE,
            user: RString::new(),
            secret: RString::new(),
        }
    }

    /// HTTP/RTSP Basic authentication with `user` and `password`.
    pub fn basic(user: &str, password: &str) -> Self {
        Self {
            kind: CredentialKind::BASIC,
            user: user.into(),
            secret: password.into(),
        }
    }

    /// A bearer token.
    pub fn bearer(token: &str) -> Self {
        Self {
            kind: CredentialKind::BEARER,
            user: RString::new(),
            secret: token.into(),
        }
    }

    /// The request URL's raw query string, without the `?`.
    pub fn url_query(query: &str) -> Self {
        Self {
            kind: CredentialKind::URL_QUERY,
            user: RString::new(),
            secret: query.into(),
        }
    }
}

/// Shows the kind and user only: secrets stay out of logs and panic messages.
impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("kind", &self.kind.as_str())
            .field("user", &self.user.as_str())
            .finish_non_exhaustive()
    }
}

/// Since 1.1. One piece of a point's media handed to a session that asked for it with
/// `play_framed`, for the plugin to wrap in its own protocol's frames. `data` borrows the
/// host's shared buffer for the duration of the call: copy what must outlive it (writing it
/// with `write` does).
#[repr(C)]
#[derive(StableAbi, Clone, Copy, Debug)]
pub struct MediaChunk<'a> {
    /// Whole MPEG-TS packets.
    pub data: RSlice<'a, u8>,
    /// A decoder can start here (the chunk begins at a keyframe, tables first).
    pub keyframe: bool,
    /// The chunk's first program clock reference in 90 kHz units, or [`NO_TIMESTAMP`] when
    /// it carries none (on-demand file blocks, chunks between PCRs).
    pub timestamp_90k: u64,
}

/// Since 1.1. [`MediaChunk::timestamp_90k`] of a chunk without a timestamp.
pub const NO_TIMESTAMP: u64 = u64::MAX;

impl<'a> MediaChunk<'a> {
    /// A chunk over `data`; `timestamp_90k` is `None` for a chunk without one.
    pub fn new(data: &'a [u8], keyframe: bool, timestamp_90k: Option<u64>) -> Self {
        Self {
            data: RSlice::from_slice(data),
            keyframe,
            timestamp_90k: timestamp_90k.unwrap_or(NO_TIMESTAMP),
        }
    }

    /// The chunk's bytes.
    pub fn bytes(&self) -> &'a [u8] {
        self.data.as_slice()
    }

    /// The chunk's timestamp in 90 kHz units, if it has one.
    pub fn timestamp(&self) -> Option<u64> {
        (self.timestamp_90k != NO_TIMESTAMP).then_some(self.timestamp_90k)
    }
}

/// Since 1.1. [`ResourceRequest::msn`] and [`ResourceRequest::part`] when the client did not
/// ask to block.
pub const NO_BLOCK: u64 = u64::MAX;

/// Since 1.1. A request for an HTTP-delivered resource of a point that the host packages
/// itself (an HLS playlist, segment or partial segment), made with `get_resource`.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq, Eq)]
pub struct ResourceRequest {
    /// The point, or `point/file` for a file of a directory point.
    pub path: RString,
    /// The resource's name below the point: `index.m3u8`, `seg12.ts`, `part12.3.ts`.
    pub name: RString,
    /// Blocking playlist reload (`_HLS_msn`): answer once the playlist holds this media
    /// sequence number, or [`NO_BLOCK`].
    pub msn: u64,
    /// Blocking playlist reload (`_HLS_part`): with `msn`, the partial segment awaited, or
    /// [`NO_BLOCK`].
    pub part: u64,
}

impl ResourceRequest {
    /// A request that does not block.
    pub fn new(path: &str, name: &str) -> Self {
        Self {
            path: path.into(),
            name: name.into(),
            msn: NO_BLOCK,
            part: NO_BLOCK,
        }
    }
}

/// Since 1.1. A resource the host handed to `on_resource`. Everything borrows the host's
/// buffers for the duration of the call; `send_resource_body` queues the body without copying.
#[repr(C)]
#[derive(StableAbi, Clone, Copy, Debug)]
pub struct Resource<'a> {
    /// The media type, e.g. `application/vnd.apple.mpegurl` or `video/mp2t`.
    pub content_type: RStr<'a>,
    /// A strong entity tag, quotes included.
    pub etag: RStr<'a>,
    /// When the resource last changed, in seconds since the Unix epoch.
    pub last_modified: u64,
    /// How long a cache may keep it, in seconds.
    pub max_age: u32,
    /// The resource never changes under this name (a segment).
    pub immutable: bool,
    /// The body, in pieces, in order.
    pub body: RSlice<'a, RSlice<'a, u8>>,
}

impl Resource<'_> {
    /// The body's length in bytes.
    pub fn len(&self) -> u64 {
        self.body.iter().map(|piece| piece.len() as u64).sum()
    }

    /// Whether the body is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

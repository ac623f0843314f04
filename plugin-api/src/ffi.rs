//! The binary interface between the host and a plugin library.
//!
//! Plugin authors never use this module directly: [`crate::export_plugin!`] builds the root
//! module from a type implementing [`crate::Plugin`], and the host reaches it through
//! `crate::host`. It is public because the export macro expands inside the plugin's crate.
//!
//! Evolution rules (the interface is version 1.x; see `docs/plugin-abi.md`):
//! - the root module only grows by fields added after `create`, each readable as absent
//!   (`#[sabi(missing_field(option))]`); `#[sabi(last_prefix_field)]` stays on `create` for all
//!   of 1.x, because the fields before it are read without a check and a 1.0 plugin's module
//!   ends there;
//! - the `#[sabi_trait]` traits only grow by methods with default bodies, added at the end
//!   (never `#[sabi(last_prefix_field)]` nor `#[sabi(no_default_fallback)]` on them: the default
//!   body is what runs when an older plugin's vtable lacks the method);
//! - data types never change layout; new meanings go into new integer constants.

// The abi_stable macros generate items that trip these lints.
#![allow(non_local_definitions, non_camel_case_types)]

use abi_stable::library::RootModule;
use abi_stable::sabi_types::{RMut, VersionStrings};
use abi_stable::std_types::{RBox, RResult, RSlice, RStr, RString};
use abi_stable::{declare_root_module_statics, package_version_strings, sabi_trait, StableAbi};

use crate::types::{
    ByteRange, CreateError, Credentials, ErrorCode, HostError, LogLevel, MediaChunk, OutputSpec,
    PlayInfo, PluginInfo, PointInfo, Resource, ResourceRequest, SessionInfo, StreamEnded,
    TransportInfo, TransportRequest,
};
use abi_stable::std_types::RVec;

fn unsupported(what: &str) -> HostError {
    HostError::new(
        ErrorCode::UNSUPPORTED_TRANSPORT,
        format!("{what} is not supported by this server"),
    )
}

/// A plugin instance as the host holds it.
pub type PluginBox = FfiPlugin_TO<'static, RBox<()>>;
/// A session as the host holds it.
pub type SessionBox = FfiSession_TO<'static, RBox<()>>;
/// The host, as a plugin sees it during one call.
pub type HostRef<'a> = FfiHost_TO<'a, RMut<'a, ()>>;

/// The root module every plugin library exports.
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = PluginMod_Ref)))]
#[sabi(missing_field(panic))]
pub struct PluginMod {
    /// Name, version, description and kind.
    pub info: extern "C" fn() -> PluginInfo,
    /// Build an instance from the plugin's settings (TOML text, one `key = value` per line).
    #[sabi(last_prefix_field)]
    pub create: extern "C" fn(settings: RStr<'_>) -> RResult<PluginBox, CreateError>,
}

impl RootModule for PluginMod_Ref {
    declare_root_module_statics! {PluginMod_Ref}
    const BASE_NAME: &'static str = "ferrocast_plugin";
    const NAME: &'static str = "ferrocast_plugin";
    const VERSION_STRINGS: VersionStrings = package_version_strings!();
}

/// A configured plugin: it creates one session per client connection.
#[sabi_trait]
pub trait FfiPlugin: Send + Sync {
    /// `Err` carries a panic message: the host logs PLUGIN_FAULT and refuses the connection.
    fn new_session(&self, info: SessionInfo) -> RResult<SessionBox, RString>;
    /// Transport plugins: accept or refuse a transport a control plugin asked for, for a
    /// client at `peer` (`ip:port`). `Err(UNSUPPORTED_TRANSPORT)` with a reason refuses it.
    fn validate_transport(
        &self,
        request: TransportRequest,
        peer: RStr<'_>,
    ) -> RResult<(), HostError> {
        let _ = (request, peer);
        RResult::ROk(())
    }
    /// Transport plugins: standalone outputs the host should run (UDP pushes).
    fn outputs(&self) -> RVec<OutputSpec> {
        RVec::new()
    }
}

/// One client's protocol state machine. Every method returns `Err` only when the plugin
/// panicked; the host then closes the session and logs PLUGIN_FAULT.
#[sabi_trait]
pub trait FfiSession: Send {
    /// Bytes arrived from the client.
    fn on_data<'a>(&mut self, host: HostRef<'a>, data: RSlice<'a, u8>) -> RResult<(), RString>;
    /// A timer set with `set_timer` fired.
    fn on_timer<'a>(&mut self, host: HostRef<'a>, timer: u64) -> RResult<(), RString>;
    /// Media started with `play` stopped.
    fn on_stream_ended<'a>(
        &mut self,
        host: HostRef<'a>,
        ended: StreamEnded,
    ) -> RResult<(), RString>;
    /// The client closed its side of the connection.
    fn on_peer_closed<'a>(&mut self, host: HostRef<'a>) -> RResult<(), RString>;
    /// The connection is open; called once, before any other event (arm timeouts here).
    fn on_open<'a>(&mut self, host: HostRef<'a>) -> RResult<(), RString> {
        let _ = host;
        RResult::ROk(())
    }
    /// The client showed life on a transport (an RTCP receiver report arrived): a keep-alive.
    fn on_transport_activity<'a>(
        &mut self,
        host: HostRef<'a>,
        transport: u64,
    ) -> RResult<(), RString> {
        let _ = (host, transport);
        RResult::ROk(())
    }
    /// Since 1.1. The next piece of the media started with `FfiHost::play_framed`, for the
    /// plugin to frame and `write`. Called only on sessions that asked for framed media.
    fn on_media<'a>(&mut self, host: HostRef<'a>, chunk: MediaChunk<'a>) -> RResult<(), RString> {
        let _ = (host, chunk);
        RResult::ROk(())
    }
    /// Since 1.1. The answer to `FfiHost::get_resource`: the resource, or why the host could
    /// not produce it after all (the point stopped while a blocking reload waited, say).
    fn on_resource<'a>(
        &mut self,
        host: HostRef<'a>,
        answer: RResult<Resource<'a>, HostError>,
    ) -> RResult<(), RString> {
        let _ = (host, answer);
        RResult::ROk(())
    }
}

/// What a plugin can ask of the host during a call. The host owns every socket, timer and
/// media buffer; a plugin only describes what should happen.
#[sabi_trait]
pub trait FfiHost {
    /// Queue bytes for the client, after anything queued before.
    fn write(&mut self, data: RSlice<'_, u8>);
    /// Close the connection once queued output has been sent.
    fn close(&mut self);
    /// (Re)arm timer `timer` to fire once after `after_ms` milliseconds.
    fn set_timer(&mut self, timer: u64, after_ms: u64);
    /// Disarm timer `timer`, if armed.
    fn cancel_timer(&mut self, timer: u64);
    /// Resolve a request path (`point` or `point/file`) for this plugin's protocol.
    fn lookup(&self, path: RStr<'_>) -> RResult<PointInfo, HostError>;
    /// Start sending media from the point: a live point from its most recent keyframe
    /// (PAT/PMT first), an on-demand file over `range`. Media follows everything the plugin
    /// writes during the current event, before or after this call, so a plugin can play
    /// first and write its success response only once play was accepted.
    fn play(&mut self, path: RStr<'_>, range: ByteRange) -> RResult<PointInfo, HostError>;
    /// Stop media started with `play`.
    fn stop(&mut self);
    /// Become the encoder of a broadcast point.
    fn publish(&mut self, path: RStr<'_>) -> RResult<PointInfo, HostError>;
    /// Feed MPEG-TS bytes from the encoder to the point this session publishes.
    fn push_media(&mut self, data: RSlice<'_, u8>) -> RResult<(), HostError>;
    /// Log through the host's structured log, tagged with plugin and session.
    fn log(&self, level: LogLevel, message: RStr<'_>);
    /// This session's identity.
    fn session(&self) -> SessionInfo;
    /// Set up a media transport for this session (RTSP SETUP), through the transport plugin
    /// for `request.kind`, which must be enabled on the point.
    fn setup_transport(&mut self, request: TransportRequest) -> RResult<TransportInfo, HostError> {
        let _ = request;
        RResult::RErr(unsupported("setting up transports"))
    }
    /// Release a transport.
    fn teardown_transport(&mut self, transport: u64) {
        let _ = transport;
    }
    /// Start or resume media on this session's transports (RTSP PLAY). On-demand points seek
    /// to `start_ms` (or resume, with [`crate::types::RESUME`]) and are paced in real time.
    fn play_transports(&mut self, path: RStr<'_>, start_ms: u64) -> RResult<PlayInfo, HostError> {
        let _ = (path, start_ms);
        RResult::RErr(unsupported("playing over transports"))
    }
    /// Pause media on this session's transports; returns the position in milliseconds.
    /// Broadcast points refuse with NOT_SEEKABLE.
    fn pause_transports(&mut self) -> RResult<u64, HostError> {
        RResult::RErr(unsupported("pausing transports"))
    }
    /// Since 1.1. What the client presented with the request being handled (Basic
    /// credentials, a bearer token, the URL's query). It applies to the `lookup`, `play`,
    /// `publish`, `setup_transport` and `play_transports` calls that follow, until the next
    /// call of this method; present [`Credentials::none`] for a request that carried none.
    fn present_credentials(&mut self, credentials: Credentials) {
        let _ = credentials;
    }
    /// Since 1.1. Like `play`, but the host hands the media to the session as
    /// `FfiSession::on_media` events instead of writing raw MPEG-TS, so the plugin can wrap
    /// it in its own frames. Backpressure, slow-client skipping and the end of the stream
    /// (`on_stream_ended`) behave as for `play`: the next chunk is handed over only while the
    /// connection's output queue is below its high-water mark.
    fn play_framed(&mut self, path: RStr<'_>, range: ByteRange) -> RResult<PointInfo, HostError> {
        let _ = (path, range);
        RResult::RErr(unsupported("framed media"))
    }
    /// Since 1.1. Add `delta` to this plugin's counter `name` (created at zero on first use),
    /// shown under the plugin's name in the server's status.
    fn count(&mut self, name: RStr<'_>, delta: u64) {
        let _ = (name, delta);
    }
    /// Since 1.1. Set this plugin's gauge `name` to `value`.
    fn gauge(&mut self, name: RStr<'_>, value: i64) {
        let _ = (name, value);
    }
    /// Since 1.1. Ask for a resource the host packages itself from a point (an HLS playlist
    /// or segment). `Err` refuses it at once; `Ok` means the answer comes as one
    /// `FfiSession::on_resource` event: after the current event returns, or later for a
    /// blocking playlist reload. One request at a time per session.
    fn get_resource(&mut self, request: ResourceRequest) -> RResult<(), HostError> {
        let _ = request;
        RResult::RErr(unsupported("packaged resources (HLS)"))
    }
    /// Since 1.1. During `on_resource`: queue the resource's body after what was written,
    /// without copying it.
    fn send_resource_body(&mut self) {}
    /// Since 1.1. The publishing encoder's own description of its stream (an Icecast
    /// source's `ice-name` and `ice-description`), kept with the point it publishes and
    /// shown in its status until another encoder publishes. Empty means not given; ignored
    /// while the session publishes nothing.
    fn describe_source(&mut self, name: RStr<'_>, description: RStr<'_>) {
        let _ = (name, description);
    }
    /// Since 1.1. Whether the connection arrived over TLS terminated by the host (the
    /// session still sees plain bytes): build `https://` or `rtsps://` URLs then. A host
    /// without TLS answers false.
    fn is_secure(&self) -> bool {
        false
    }
    /// Since 1.1. Make this connection the receiving end of the HTTP tunnel `cookie` (RTSP
    /// over HTTP): bytes another connection feeds into it with `feed_tunnel` arrive as
    /// `FfiSession::on_data`, and `close_tunnel` ends it with `on_peer_closed`. The tunnel
    /// goes when this connection ends. Refused when the cookie is malformed or too long,
    /// already open (`INVALID_STATE`), or the server holds too many tunnels (`OVER_CAPACITY`).
    fn open_tunnel(&mut self, cookie: RStr<'_>) -> RResult<(), HostError> {
        let _ = cookie;
        RResult::RErr(unsupported("HTTP tunnelling"))
    }
    /// Since 1.1. Hand `data` to the session at the receiving end of tunnel `cookie`.
    /// `NOT_FOUND` when no such tunnel is open, `FORBIDDEN` when it was opened from another
    /// client address, `OVER_CAPACITY` when the receiving end is too far behind. An empty
    /// `data` only checks that the tunnel is open.
    fn feed_tunnel(&mut self, cookie: RStr<'_>, data: RSlice<'_, u8>) -> RResult<(), HostError> {
        let _ = (cookie, data);
        RResult::RErr(unsupported("HTTP tunnelling"))
    }
    /// Since 1.1. End tunnel `cookie` (opened from this client's address): its receiving
    /// session gets `on_peer_closed`. Nothing happens when there is no such tunnel.
    fn close_tunnel(&mut self, cookie: RStr<'_>) {
        let _ = cookie;
    }
    /// Since 1.1. Hand this connection over to the control plugin `plugin` (an HTTP port
    /// passing an RTSP-over-HTTP request to `rtsp`, say): after the current event, a new
    /// session of that plugin gets `on_open`, then `data` (what this session read so far) as
    /// `on_data`, and every later event. This session gets no more events. Refused when
    /// there is no such control plugin (`NOT_FOUND`) or this session already started
    /// something (`INVALID_STATE`).
    fn hand_over(&mut self, plugin: RStr<'_>, data: RSlice<'_, u8>) -> RResult<(), HostError> {
        let _ = (plugin, data);
        RResult::RErr(unsupported("handing a connection over"))
    }
}

//! The Rust-side API a plugin author implements, and the adapters that put it behind the ABI.
//!
//! Authors implement [`Plugin`] and [`Session`] with ordinary Rust types and call
//! [`crate::export_plugin!`]. The adapters here catch every panic at the boundary: a panic that
//! crossed into the host would abort the whole server, so a faulting session is reported to the
//! host as an error instead, and the host closes that one session.

use std::any::Any;
use std::net::SocketAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Duration;

use abi_stable::sabi_trait::TD_Opaque;
use abi_stable::std_types::{RResult, RSlice, RStr, RString};

use crate::ffi::{FfiPlugin, FfiSession, FfiSession_TO, HostRef, PluginBox, SessionBox};
use crate::types::{
    ByteRange, CreateError, Credentials, HostError, LogLevel, MediaChunk, OutputSpec, PlayInfo,
    PluginInfo, PluginKind, PointInfo, Resource, ResourceRequest, SessionInfo, SettingError,
    StreamEnded, TransportInfo, TransportRequest,
};
use abi_stable::std_types::RVec;

/// Static metadata of a plugin.
#[derive(Clone, Copy, Debug)]
pub struct PluginMeta {
    /// The protocol's name: the `[plugins.<name>]` table and the name in a point's `protocols`.
    pub name: &'static str,
    /// The plugin's own version (usually `env!("CARGO_PKG_VERSION")`).
    pub version: &'static str,
    /// A one-line description, shown by `ferrocast --list-plugins`.
    pub description: &'static str,
    /// [`PluginKind::CONTROL`] (speaks to clients) or [`PluginKind::TRANSPORT`] (carries media
    /// for control plugins).
    pub kind: PluginKind,
}

/// A plugin: created once per load from its settings, it makes one [`Session`] per connection.
pub trait Plugin: Send + Sync + Sized + 'static {
    /// The plugin's static metadata, read before any settings are given.
    fn meta() -> PluginMeta;
    /// Validate the settings (TOML text; see [`crate::parse_settings`]) and build the plugin.
    fn create(settings: &str) -> Result<Self, Vec<SettingError>>;
    /// Make the session for a new connection. Called for every connection, and once for a
    /// probe session (id 0) when a new build is checked before it takes traffic, so it must not
    /// have side effects.
    fn new_session(&self, info: &SessionInfo) -> Box<dyn Session>;
    /// Transport plugins: accept or refuse a transport for a client at `peer` (`ip:port`).
    fn validate_transport(&self, request: &TransportRequest, peer: &str) -> Result<(), HostError> {
        let _ = (request, peer);
        Ok(())
    }
    /// Transport plugins: standalone outputs for the host to run (UDP pushes).
    fn outputs(&self) -> Vec<OutputSpec> {
        Vec::new()
    }
}

/// A sans-IO protocol state machine for one client connection. It reacts to events and tells
/// the [`Host`] what to do; it never touches sockets, clocks or threads itself.
pub trait Session: Send + 'static {
    /// The connection is open; called once, before any other event. Arm timeouts here.
    fn on_open(&mut self, host: &mut Host<'_>) {
        let _ = host;
    }
    /// The client sent `data`: any split of its bytes, so buffer partial input (bounded).
    fn on_data(&mut self, host: &mut Host<'_>, data: &[u8]);
    /// The timer `timer`, armed with [`Host::set_timer`], fired, as the bare number on the
    /// interface. Prefer [`Session::on_timer_fired`], which receives a [`TimerId`]; by default
    /// this hands the timer on to it, so callers (the host, test harnesses) may call either.
    fn on_timer(&mut self, host: &mut Host<'_>, timer: u64) {
        self.on_timer_fired(host, TimerId::new(timer));
    }
    /// By default the connection is closed when its media stops.
    fn on_stream_ended(&mut self, host: &mut Host<'_>, ended: &StreamEnded) {
        let _ = ended;
        host.close();
    }
    /// The client closed its side of the connection. Nothing more arrives; the session may
    /// still write and close.
    fn on_peer_closed(&mut self, host: &mut Host<'_>) {
        let _ = host;
    }
    /// The client showed life on transport `transport` (an RTCP report): a keep-alive.
    fn on_transport_activity(&mut self, host: &mut Host<'_>, transport: u64) {
        let _ = (host, transport);
    }
    /// Since 1.1. The next piece of the media started with [`Host::play_framed`]: wrap it in
    /// the protocol's frames and [`Host::write`] it. Never called on a session that did not
    /// ask for framed media.
    fn on_media(&mut self, host: &mut Host<'_>, chunk: &MediaChunk<'_>) {
        let _ = (host, chunk);
    }
    /// The timer `timer`, armed with [`Host::set_timer`], fired: the typed form of
    /// [`Session::on_timer`], and the one to implement. Match it against the session's
    /// `TimerId` constants. Not called if the session implements [`Session::on_timer`] itself.
    fn on_timer_fired(&mut self, host: &mut Host<'_>, timer: TimerId) {
        let _ = (host, timer);
    }
    /// Since 1.1. The answer to [`Host::get_resource`]: the resource (write a response head,
    /// then [`Host::send_resource_body`]), or why the host could not produce it after all.
    /// Never called on a session that did not ask.
    fn on_resource(&mut self, host: &mut Host<'_>, answer: Result<&Resource<'_>, &HostError>) {
        let _ = (host, answer);
    }
}

/// A session's name for one of its timers: [`Host::set_timer`] arms it,
/// [`Session::on_timer_fired`] receives it. Each session has its own timers, so ids only need to
/// be distinct within one session. Declare them as constants and match on them:
///
/// ```
/// use ferrocast_plugin_api::TimerId;
/// const IDLE: TimerId = TimerId::new(1);
/// const HEADER: TimerId = TimerId::new(2);
/// # let fired = TimerId::new(2);
/// match fired {
///     IDLE => unreachable!(),
///     HEADER => {}
///     _ => {}
/// }
/// ```
///
/// On the interface a timer is a `u64`: `From<u64>` converts, so code that names timers by bare
/// numbers keeps working, and an enum of the session's own makes a timer with
/// `impl From<MyTimer> for TimerId`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct TimerId(u64);

impl TimerId {
    /// The timer numbered `id`.
    pub const fn new(id: u64) -> Self {
        Self(id)
    }

    /// The number that stands for this timer on the interface.
    pub const fn get(self) -> u64 {
        self.0
    }
}

impl From<u64> for TimerId {
    fn from(id: u64) -> Self {
        Self(id)
    }
}

impl From<TimerId> for u64 {
    fn from(timer: TimerId) -> Self {
        timer.0
    }
}

impl std::fmt::Display for TimerId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "timer {}", self.0)
    }
}

/// The host, as seen by a session during one event.
pub struct Host<'a> {
    ffi: HostRef<'a>,
}

impl<'a> Host<'a> {
    /// Wrap the host's side of the interface. The adapters of [`crate::export_plugin!`] and
    /// [`crate::testing::MockHost`] make one per event; plugin code receives it ready-made.
    pub fn new(ffi: HostRef<'a>) -> Self {
        Self { ffi }
    }

    /// Queue bytes for the client.
    pub fn write(&mut self, data: &[u8]) {
        self.ffi.write(RSlice::from_slice(data));
    }

    /// Close the connection once queued output has been sent.
    pub fn close(&mut self) {
        self.ffi.close();
    }

    /// (Re)arm a one-shot timer; [`Session::on_timer_fired`] receives `timer` when it fires.
    /// `timer` is a [`TimerId`] (or a bare `u64`); `after` counts in whole milliseconds.
    pub fn set_timer(&mut self, timer: impl Into<TimerId>, after: Duration) {
        let ms = u64::try_from(after.as_millis()).unwrap_or(u64::MAX);
        self.ffi.set_timer(timer.into().get(), ms);
    }

    /// Disarm the timer `timer`; nothing happens if it is not armed.
    pub fn cancel_timer(&mut self, timer: impl Into<TimerId>) {
        self.ffi.cancel_timer(timer.into().get());
    }

    /// Resolve `point` or `point/file` for this plugin's protocol.
    pub fn lookup(&self, path: &str) -> Result<PointInfo, HostError> {
        self.ffi.lookup(RStr::from_str(path)).into_result()
    }

    /// Start media; it follows everything written during the current event, so play first
    /// and write the success response after. See [`crate::ffi::FfiHost::play`].
    pub fn play(&mut self, path: &str, range: ByteRange) -> Result<PointInfo, HostError> {
        self.ffi.play(RStr::from_str(path), range).into_result()
    }

    /// Stop media started with [`Host::play`] or [`Host::play_framed`].
    pub fn stop(&mut self) {
        self.ffi.stop();
    }

    /// Become the encoder of a broadcast point.
    pub fn publish(&mut self, path: &str) -> Result<PointInfo, HostError> {
        self.ffi.publish(RStr::from_str(path)).into_result()
    }

    /// Feed MPEG-TS bytes to the point this session publishes.
    pub fn push_media(&mut self, data: &[u8]) -> Result<(), HostError> {
        self.ffi.push_media(RSlice::from_slice(data)).into_result()
    }

    /// Write `message` to the server's log at `level`, tagged with the plugin, session and peer.
    pub fn log(&self, level: LogLevel, message: &str) {
        self.ffi.log(level, RStr::from_str(message));
    }

    /// The connection this session serves: its id, peer and local addresses.
    pub fn session(&self) -> SessionInfo {
        self.ffi.session()
    }

    /// Set up a media transport (RTSP SETUP) through the transport plugin for its kind.
    pub fn setup_transport(
        &mut self,
        request: TransportRequest,
    ) -> Result<TransportInfo, HostError> {
        self.ffi.setup_transport(request).into_result()
    }

    /// Tear down the transport `transport` set up with [`Host::setup_transport`].
    pub fn teardown_transport(&mut self, transport: u64) {
        self.ffi.teardown_transport(transport);
    }

    /// Start or resume media on the session's transports; `start_ms` seeks on-demand points
    /// ([`crate::RESUME`] continues where paused).
    pub fn play_transports(&mut self, path: &str, start_ms: u64) -> Result<PlayInfo, HostError> {
        self.ffi
            .play_transports(RStr::from_str(path), start_ms)
            .into_result()
    }

    /// Pause media on the session's transports; returns the position in milliseconds.
    pub fn pause_transports(&mut self) -> Result<u64, HostError> {
        self.ffi.pause_transports().into_result()
    }

    /// Hand the host what the client presented with the current request (Basic credentials,
    /// a bearer token, the URL's query), before `lookup`, `play`, `publish` or
    /// `setup_transport`. The host decides; a refusal comes back from those calls as
    /// `UNAUTHORIZED` or `FORBIDDEN`. Present [`Credentials::none`] for a request without any.
    pub fn present_credentials(&mut self, credentials: Credentials) {
        self.ffi.present_credentials(credentials);
    }

    /// Since 1.1. Start media like [`Host::play`], but have it handed to
    /// [`Session::on_media`] chunk by chunk instead of written as raw MPEG-TS, so the session
    /// frames it itself. The host hands over the next chunk only while the connection's
    /// output is below its high-water mark, skips a client that falls behind to the next
    /// keyframe, and reports the end with [`Session::on_stream_ended`], as for `play`.
    pub fn play_framed(&mut self, path: &str, range: ByteRange) -> Result<PointInfo, HostError> {
        self.ffi
            .play_framed(RStr::from_str(path), range)
            .into_result()
    }

    /// Since 1.1. Add `delta` to the plugin's counter `name` (e.g. `responses_200`); the
    /// server keeps one per plugin, across its sessions, and shows it in its status. Use a
    /// small, fixed set of names: the server keeps a bounded number per plugin.
    pub fn count(&mut self, name: &str, delta: u64) {
        self.ffi.count(RStr::from_str(name), delta);
    }

    /// Since 1.1. Set the plugin's gauge `name` to `value`.
    pub fn gauge(&mut self, name: &str, value: i64) {
        self.ffi.gauge(RStr::from_str(name), value);
    }

    /// Since 1.1. Ask for a resource the host packages from a point: an HLS playlist
    /// (`index.m3u8`, optionally a blocking reload), segment or partial segment. `Err`
    /// refuses it at once (`NOT_FOUND`, `UNAVAILABLE` for a point that is not live,
    /// `BAD_RANGE` for a reload too far ahead, `PROTOCOL_DISABLED` where `hls` is not
    /// enabled); `Ok` means [`Session::on_resource`] follows, after the current event or,
    /// for a blocking reload, once the awaited part exists.
    pub fn get_resource(&mut self, request: ResourceRequest) -> Result<(), HostError> {
        self.ffi.get_resource(request).into_result()
    }

    /// Since 1.1. During [`Session::on_resource`]: queue the resource's body after what was
    /// written, sharing the host's buffers instead of copying them.
    pub fn send_resource_body(&mut self) {
        self.ffi.send_resource_body();
    }

    /// Since 1.1. The publishing encoder's own name and description of its stream (an
    /// Icecast source's `ice-name` and `ice-description`; empty when not given), kept with the
    /// point this session publishes and shown in its status. Call it after a successful
    /// [`Host::publish`]; before, it is ignored.
    pub fn describe_source(&mut self, name: &str, description: &str) {
        self.ffi
            .describe_source(RStr::from_str(name), RStr::from_str(description));
    }

    /// Since 1.1. Whether the connection arrived over TLS, terminated by the host: the
    /// session sees plain bytes either way, but URLs it gives out should then be `https://`
    /// or `rtsps://`. False on a host without TLS.
    pub fn is_secure(&self) -> bool {
        self.ffi.is_secure()
    }

    /// Since 1.1. Make this connection the receiving end of the HTTP tunnel `cookie` (the
    /// QuickTime scheme of RTSP over HTTP: a GET carries the answers, a POST the requests).
    /// What another connection feeds with [`Host::feed_tunnel`] arrives as
    /// [`Session::on_data`]; [`Host::close_tunnel`] ends it with
    /// [`Session::on_peer_closed`]. The tunnel goes when this connection ends.
    pub fn open_tunnel(&mut self, cookie: &str) -> Result<(), HostError> {
        self.ffi.open_tunnel(RStr::from_str(cookie)).into_result()
    }

    /// Since 1.1. Hand `data` to the session at the receiving end of tunnel `cookie`:
    /// `NOT_FOUND` without one, `FORBIDDEN` if it was opened from another client address.
    /// An empty `data` only checks that the tunnel is open.
    pub fn feed_tunnel(&mut self, cookie: &str, data: &[u8]) -> Result<(), HostError> {
        self.ffi
            .feed_tunnel(RStr::from_str(cookie), RSlice::from_slice(data))
            .into_result()
    }

    /// Since 1.1. End tunnel `cookie`: its receiving session gets [`Session::on_peer_closed`].
    pub fn close_tunnel(&mut self, cookie: &str) {
        self.ffi.close_tunnel(RStr::from_str(cookie));
    }

    /// Since 1.1. Hand this connection over to the control plugin `plugin`: after the
    /// current event, a new session of it gets [`Session::on_open`], then `data` (what this
    /// session read so far) as [`Session::on_data`], and every later event; this session
    /// gets none. An HTTP port uses it to pass an RTSP-over-HTTP request to `rtsp`.
    pub fn hand_over(&mut self, plugin: &str, data: &[u8]) -> Result<(), HostError> {
        self.ffi
            .hand_over(RStr::from_str(plugin), RSlice::from_slice(data))
            .into_result()
    }
}

/// Author-side conveniences over the calls above; nothing here crosses the interface.
impl Host<'_> {
    /// The client's address, from [`Host::session`]. `None` only for a host that filled the
    /// field with something other than `ip:port`, which the ferrocast server never does.
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.session().peer_addr()
    }

    /// The local address the connection arrived on, from [`Host::session`].
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.session().local_addr()
    }
}

/// Run `f`, turning a panic into its message.
fn guard<T>(f: impl FnOnce() -> T) -> Result<T, RString> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|payload| RString::from(panic_message(&*payload)))
}

fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "panic with a non-string payload".to_owned()
    }
}

/// Puts a [`Plugin`] behind [`FfiPlugin`].
struct PluginAdapter<P: Plugin>(P);

impl<P: Plugin> FfiPlugin for PluginAdapter<P> {
    fn new_session(&self, info: SessionInfo) -> RResult<SessionBox, RString> {
        guard(|| {
            let session = self.0.new_session(&info);
            FfiSession_TO::from_value(
                SessionAdapter {
                    session,
                    faulted: None,
                },
                TD_Opaque,
            )
        })
        .into()
    }

    fn validate_transport(
        &self,
        request: TransportRequest,
        peer: RStr<'_>,
    ) -> RResult<(), HostError> {
        match guard(|| self.0.validate_transport(&request, peer.as_str())) {
            Ok(answer) => answer.into(),
            Err(fault) => RResult::RErr(HostError::new(
                crate::ErrorCode::UNSUPPORTED_TRANSPORT,
                format!("the transport plugin faulted: {fault}"),
            )),
        }
    }

    fn outputs(&self) -> RVec<OutputSpec> {
        guard(|| self.0.outputs()).unwrap_or_default().into()
    }
}

/// Puts a [`Session`] behind [`FfiSession`]. After a panic the session's state may be broken,
/// so every later call fails with the same fault instead of running it again.
struct SessionAdapter {
    session: Box<dyn Session>,
    faulted: Option<RString>,
}

impl SessionAdapter {
    fn call(
        &mut self,
        host: HostRef<'_>,
        f: impl FnOnce(&mut dyn Session, &mut Host<'_>),
    ) -> RResult<(), RString> {
        if let Some(fault) = &self.faulted {
            return RResult::RErr(fault.clone());
        }
        let mut host = Host::new(host);
        let session = &mut *self.session;
        match guard(|| f(session, &mut host)) {
            Ok(()) => RResult::ROk(()),
            Err(fault) => {
                self.faulted = Some(fault.clone());
                RResult::RErr(fault)
            }
        }
    }
}

impl FfiSession for SessionAdapter {
    fn on_data<'a>(&mut self, host: HostRef<'a>, data: RSlice<'a, u8>) -> RResult<(), RString> {
        self.call(host, |s, h| s.on_data(h, data.as_slice()))
    }

    fn on_timer<'a>(&mut self, host: HostRef<'a>, timer: u64) -> RResult<(), RString> {
        self.call(host, |s, h| s.on_timer(h, timer))
    }

    fn on_stream_ended<'a>(
        &mut self,
        host: HostRef<'a>,
        ended: StreamEnded,
    ) -> RResult<(), RString> {
        self.call(host, |s, h| s.on_stream_ended(h, &ended))
    }

    fn on_peer_closed<'a>(&mut self, host: HostRef<'a>) -> RResult<(), RString> {
        self.call(host, |s, h| s.on_peer_closed(h))
    }

    fn on_open<'a>(&mut self, host: HostRef<'a>) -> RResult<(), RString> {
        self.call(host, |s, h| s.on_open(h))
    }

    fn on_transport_activity<'a>(
        &mut self,
        host: HostRef<'a>,
        transport: u64,
    ) -> RResult<(), RString> {
        self.call(host, |s, h| s.on_transport_activity(h, transport))
    }

    fn on_media<'a>(&mut self, host: HostRef<'a>, chunk: MediaChunk<'a>) -> RResult<(), RString> {
        self.call(host, |s, h| s.on_media(h, &chunk))
    }

    fn on_resource<'a>(
        &mut self,
        host: HostRef<'a>,
        answer: RResult<Resource<'a>, HostError>,
    ) -> RResult<(), RString> {
        self.call(host, |s, h| s.on_resource(h, answer.as_ref().into_result()))
    }
}

/// The root module's `info` entry, for plugin `P`. Used by [`crate::export_plugin!`].
#[doc(hidden)]
pub fn info_of<P: Plugin>() -> PluginInfo {
    // A panic here would cross the boundary; metadata is static, so fall back to a marker
    // that the host refuses as a plugin without a name.
    guard(|| {
        let meta = P::meta();
        PluginInfo {
            name: meta.name.into(),
            version: meta.version.into(),
            description: meta.description.into(),
            kind: meta.kind,
        }
    })
    .unwrap_or_else(|fault| PluginInfo {
        name: RString::new(),
        version: RString::new(),
        description: format!("plugin panicked while describing itself: {fault}").into(),
        kind: PluginKind::CONTROL,
    })
}

/// The root module's `create` entry, for plugin `P`. Used by [`crate::export_plugin!`].
#[doc(hidden)]
pub fn create_of<P: Plugin>(settings: RStr<'_>) -> RResult<PluginBox, CreateError> {
    match guard(|| P::create(settings.as_str())) {
        Ok(Ok(plugin)) => RResult::ROk(crate::ffi::FfiPlugin_TO::from_value(
            PluginAdapter(plugin),
            TD_Opaque,
        )),
        Ok(Err(errors)) => RResult::RErr(CreateError {
            settings: errors.into(),
            fault: RString::new(),
        }),
        Err(fault) => RResult::RErr(CreateError {
            settings: Default::default(),
            fault,
        }),
    }
}

/// Export a [`Plugin`] type as this library's ferrocast plugin.
///
/// ```
/// # use ferrocast_plugin_api::{Host, Plugin, PluginKind, PluginMeta, Session, SessionInfo};
/// # use ferrocast_plugin_api::SettingError;
/// # struct MyPlugin;
/// # impl Plugin for MyPlugin {
/// #     fn meta() -> PluginMeta {
/// #         PluginMeta { name: "myproto", version: "0.1.0", description: "", kind: PluginKind::CONTROL }
/// #     }
/// #     fn create(_settings: &str) -> Result<Self, Vec<SettingError>> {
/// #         Ok(MyPlugin)
/// #     }
/// #     fn new_session(&self, _info: &SessionInfo) -> Box<dyn Session> {
/// #         Box::new(Quiet)
/// #     }
/// # }
/// # struct Quiet;
/// # impl Session for Quiet {
/// #     fn on_data(&mut self, host: &mut Host<'_>, _data: &[u8]) {
/// #         host.close();
/// #     }
/// # }
/// ferrocast_plugin_api::export_plugin!(MyPlugin);
/// ```
///
/// The crate must be built with `crate-type = ["cdylib"]` and its library named
/// `ferrocast_<name>` so that the file is `libferrocast_<name>.so`.
#[macro_export]
macro_rules! export_plugin {
    ($plugin:ty) => {
        const _: () = {
            use $crate::__private::abi_stable;

            extern "C" fn ferrocast_plugin_info() -> $crate::PluginInfo {
                $crate::__private::info_of::<$plugin>()
            }

            extern "C" fn ferrocast_plugin_create(
                settings: abi_stable::std_types::RStr<'_>,
            ) -> abi_stable::std_types::RResult<$crate::ffi::PluginBox, $crate::CreateError> {
                $crate::__private::create_of::<$plugin>(settings)
            }

            fn ferrocast_plugin_root() -> $crate::ffi::PluginMod_Ref {
                use abi_stable::prefix_type::PrefixTypeTrait;
                $crate::ffi::PluginMod {
                    info: ferrocast_plugin_info,
                    create: ferrocast_plugin_create,
                }
                .leak_into_prefix()
            }

            extern "C" fn ferrocast_erased_root() -> abi_stable::library::RootModuleResult {
                abi_stable::library::__call_root_module_loader(ferrocast_plugin_root)
            }

            // What `#[abi_stable::export_root_module]` generates, spelled out so that a plugin
            // crate needs no direct dependency on abi_stable. The symbol name is
            // `abi_stable::library::ROOT_MODULE_LOADER_NAME` (checked by a test).
            // `#[no_mangle]` makes this static the library's entry point: nothing else in the
            // library may define the symbol, and `export_plugin!` is meant to be called once.
            #[no_mangle]
            pub static _1as_0lib_1header_0root_bmodule_bloader: abi_stable::library::LibHeader =
                // SAFETY: `from_constructor::<M>` requires that the erased root module returned by
                // the constructor was made from a `PrefixRef<M>`. `ferrocast_erased_root` passes
                // `ferrocast_plugin_root`, which returns a `PluginMod_Ref`, to
                // `__call_root_module_loader`, which erases exactly that reference; `M` is
                // `PluginMod_Ref` here too.
                unsafe {
                    abi_stable::library::LibHeader::from_constructor::<$crate::ffi::PluginMod_Ref>(
                        ferrocast_erased_root,
                        abi_stable::library::CheckTypeLayout::Yes,
                    )
                };
        };
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::MockHost;
    use abi_stable::sabi_trait::TD_Opaque;

    const FIRST: TimerId = TimerId::new(1);
    const SECOND: TimerId = TimerId::new(u64::MAX);

    /// Records the timers it received through the typed hook.
    #[derive(Default)]
    struct Typed {
        fired: Vec<TimerId>,
    }

    impl Session for Typed {
        fn on_data(&mut self, _host: &mut Host<'_>, _data: &[u8]) {}
        fn on_timer_fired(&mut self, _host: &mut Host<'_>, timer: TimerId) {
            self.fired.push(timer);
        }
    }

    /// Written against 1.0: bare `u64` timers through `on_timer`.
    #[derive(Default)]
    struct Bare {
        fired: Vec<u64>,
    }

    impl Session for Bare {
        fn on_data(&mut self, _host: &mut Host<'_>, _data: &[u8]) {}
        fn on_timer(&mut self, _host: &mut Host<'_>, timer: u64) {
            self.fired.push(timer);
        }
    }

    #[test]
    fn timer_ids_are_the_numbers_on_the_interface() {
        assert_eq!(FIRST.get(), 1);
        assert_eq!(TimerId::from(7u64), TimerId::new(7));
        assert_eq!(u64::from(SECOND), u64::MAX);
        assert_eq!(SECOND.to_string(), format!("timer {}", u64::MAX));
    }

    #[test]
    fn typed_and_bare_timers_arm_the_same_host_timer() {
        let mut mock = MockHost::new();
        mock.run(|host| {
            host.set_timer(FIRST, Duration::from_millis(250));
            host.set_timer(2, Duration::from_secs(1));
            host.set_timer(SECOND, Duration::MAX);
        });
        assert_eq!(mock.timers.get(&1), Some(&250));
        assert_eq!(mock.timers.get(&2), Some(&1000));
        assert_eq!(mock.timers.get(&u64::MAX), Some(&u64::MAX), "saturates");
        mock.run(|host| {
            host.cancel_timer(FIRST);
            host.cancel_timer(2);
        });
        assert_eq!(mock.timers.keys().collect::<Vec<_>>(), [&u64::MAX]);
    }

    /// Hands the timers it receives on to a shared list.
    struct Shared(std::sync::Arc<std::sync::Mutex<Vec<TimerId>>>);

    impl Session for Shared {
        fn on_data(&mut self, _host: &mut Host<'_>, _data: &[u8]) {}
        fn on_timer_fired(&mut self, _host: &mut Host<'_>, timer: TimerId) {
            self.0.lock().unwrap().push(timer);
        }
    }

    #[test]
    fn the_interface_delivers_timers_to_the_typed_hook() {
        let mut typed = Typed::default();
        let mut mock = MockHost::new();
        mock.fire(&mut typed, SECOND);
        mock.fire(&mut typed, 1);
        assert_eq!(typed.fired, [SECOND, FIRST]);

        // As the host does: through the adapter `export_plugin!` puts behind the interface.
        let fired = std::sync::Arc::default();
        let mut adapter = SessionAdapter {
            session: Box::new(Shared(std::sync::Arc::clone(&fired))),
            faulted: None,
        };
        let host = crate::ffi::FfiHost_TO::from_ptr(&mut mock, TD_Opaque);
        assert!(FfiSession::on_timer(&mut adapter, host, 9).is_ok());
        assert_eq!(*fired.lock().unwrap(), [TimerId::new(9)]);
    }

    #[test]
    fn sessions_with_bare_timers_keep_receiving_them() {
        let mut bare = Bare::default();
        let mut mock = MockHost::new();
        mock.fire(&mut bare, FIRST);
        mock.run(|host| bare.on_timer(host, 5));
        assert_eq!(bare.fired, [1, 5]);
    }
}

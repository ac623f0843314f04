//! Host side of the interface: loading plugin libraries and calling into them.
//!
//! Only the ferrocast server uses this (feature `host`). It keeps abi_stable out of the server:
//! the server sees plain Rust types and the [`HostCalls`] trait.
//!
//! Loading uses `lib_header_from_path`, never `RootModule::load_from*`: those cache one module
//! per root-module type, so a second plugin (or a second build of the same one) would silently
//! come back as the first.
//!
//! Versions (see `docs/plugin-abi.md`): a plugin built against this host's minor version is
//! checked by abi_stable as usual (`init_root_module`). A plugin built against an older minor of
//! the same major is also accepted, but abi_stable's own check cannot be used for it: it requires
//! every prefix type in the library to have at least the loader's fields, so it refuses the older
//! plugin's shorter host vtable. Its layout is checked the other way round instead: the plugin's
//! types must be a prefix of this host's (same names, packages, sizes, fields and signatures;
//! prefix types and trait vtables may only have fewer fields at the end). That is exactly what
//! makes the old plugin safe: it reads only the host vtable fields it knows, and the host reads
//! the plugin's shorter vtables through accessors that check which fields exist and fall back
//! to the default body of a method the plugin lacks. A plugin built against a newer minor is
//! refused: it may rely on calls and meanings this host does not have.

#![allow(non_local_definitions, non_camel_case_types)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use abi_stable::abi_stability::abi_checking::{
    check_layout_compatibility_with_globals, AbiInstabilityErrors, CheckingGlobals,
};
use abi_stable::library::{lib_header_from_path, LibHeader, LibraryError, RootModule};
use abi_stable::sabi_trait::TD_Opaque;
use abi_stable::sabi_types::VersionNumber;
use abi_stable::std_types::{RBoxError, RResult, RSlice, RStr, RString};
use abi_stable::type_layout::TypeLayout;
use abi_stable::StableAbi;

use crate::ffi::{FfiHost, FfiHost_TO, PluginBox, PluginMod_Ref, SessionBox};
use crate::types::{
    ByteRange, Credentials, HostError, LogLevel, MediaChunk, OutputSpec, PlayInfo, PluginInfo,
    PointInfo, Resource, ResourceRequest, SessionInfo, SettingError, StreamEnded, TransportInfo,
    TransportRequest,
};

/// The interface version this host was built with (`major.minor.patch`).
pub fn host_abi_version() -> String {
    PluginMod_Ref::VERSION_STRINGS.version.to_string()
}

/// Why a file could not be loaded as a plugin.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("not a loadable shared library: {reason}")]
    /// The dynamic loader could not open the file.
    NotALibrary {
        /// The loader's message.
        reason: String,
    },
    #[error("not a ferrocast plugin: it does not export a ferrocast root module ({reason})")]
    /// The library has no ferrocast root module.
    NotAPlugin {
        /// What is missing, from abi_stable.
        reason: String,
    },
    #[error("incompatible plugin ABI: the plugin was built against plugin-api {found}, this server speaks {expected}; rebuild the plugin against plugin-api {expected_major}.x")]
    /// Built against another major version of the interface.
    IncompatibleVersion {
        /// The plugin's interface version.
        found: String,
        /// This server's interface version.
        expected: String,
        /// This server's major version, for the advice.
        expected_major: String,
    },
    #[error("incompatible plugin ABI: the plugin was built against plugin-api {found}, newer than this server's {expected}; rebuild the plugin against plugin-api {expected} or run a server that speaks {found}")]
    /// Built against a newer minor version than this server's.
    NewerMinor {
        /// The plugin's interface version.
        found: String,
        /// This server's interface version.
        expected: String,
    },
    #[error("incompatible plugin ABI: the plugin's interface layout does not match this server's plugin-api {expected}; rebuild the plugin against the server's plugin-api ({detail})")]
    /// The interface types' layout differs from this server's.
    IncompatibleLayout {
        /// This server's interface version.
        expected: String,
        /// The first difference abi_stable found.
        detail: String,
    },
    #[error("the plugin failed to initialise: {reason}")]
    /// The library's root module failed to initialise.
    InitFailed {
        /// The loader's message.
        reason: String,
    },
    #[error("the plugin has no name; it panicked or is broken ({description})")]
    /// The plugin reported no name (its `meta` panicked).
    Nameless {
        /// The description the plugin reported, with the panic's message.
        description: String,
    },
}

impl LoadError {
    fn from_library(error: LibraryError) -> Self {
        // abi_stable's Display starts with a newline and spans lines; keep it on one line.
        let flat = |e: &dyn std::fmt::Display| {
            e.to_string()
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
        };
        match error {
            LibraryError::OpenError { err, .. } => Self::NotALibrary { reason: flat(&err) },
            LibraryError::GetSymbolError { .. } => Self::NotAPlugin {
                reason: "missing symbol for the plugin header".to_owned(),
            },
            LibraryError::InvalidAbiHeader(header) => Self::IncompatibleLayout {
                expected: host_abi_version(),
                detail: format!("abi_stable header {header:?}"),
            },
            LibraryError::IncompatibleVersionNumber { actual_version, .. } => {
                let expected = host_abi_version();
                Self::IncompatibleVersion {
                    found: actual_version.to_string(),
                    expected_major: expected.split('.').next().unwrap_or("1").to_owned(),
                    expected,
                }
            }
            LibraryError::ParseVersionError(e) => Self::IncompatibleLayout {
                expected: host_abi_version(),
                detail: flat(&e),
            },
            LibraryError::RootModule { err, .. } => Self::InitFailed { reason: flat(&err) },
            other => Self::IncompatibleLayout {
                expected: host_abi_version(),
                detail: truncate(flat(&other), 400),
            },
        }
    }
}

fn truncate(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut cut = max;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push('…');
    }
    text
}

/// A plugin library that passed the version and layout checks.
#[derive(Clone)]
pub struct PluginLibrary {
    /// The plugin's metadata, as it reported it.
    pub info: PluginInfo,
    /// The plugin-api version the plugin was built against.
    pub abi_version: String,
    /// The file the library was loaded from.
    pub path: PathBuf,
    module: PluginMod_Ref,
}

impl std::fmt::Debug for PluginLibrary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginLibrary")
            .field("info", &self.info)
            .field("abi_version", &self.abi_version)
            .field("path", &self.path)
            .finish()
    }
}

/// How a library's interface version relates to this host's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionMatch {
    /// Same major and minor version: abi_stable's own checks apply.
    Current,
    /// Same major, older minor: accepted once its layout is proven a prefix of the host's.
    OlderMinor,
    /// Same major, newer minor: refused.
    NewerMinor,
    /// Another major version: refused.
    OtherMajor,
}

impl VersionMatch {
    /// Classify a library built against `library` for a host speaking `host`.
    pub fn of(host: VersionNumber, library: VersionNumber) -> Self {
        use std::cmp::Ordering;
        // Before 1.0 the minor number is the breaking one, as in cargo's rules.
        let breaking = |v: VersionNumber| {
            if v.major == 0 {
                (0, v.minor)
            } else {
                (v.major, 0)
            }
        };
        if breaking(host) != breaking(library) {
            return Self::OtherMajor;
        }
        let additive = |v: VersionNumber| if v.major == 0 { v.patch } else { v.minor };
        match additive(library).cmp(&additive(host)) {
            Ordering::Equal => Self::Current,
            Ordering::Less => Self::OlderMinor,
            Ordering::Greater => Self::NewerMinor,
        }
    }
}

/// Load `path` as a plugin library. The library stays mapped for the life of the process,
/// because objects it created may still be alive.
pub fn load_library(path: &Path) -> Result<PluginLibrary, LoadError> {
    let header = lib_header_from_path(path).map_err(LoadError::from_library)?;
    let abi_version = header.version_strings().version.to_string();
    let module = root_module(header)?;
    let info = (module.info())();
    if info.name.is_empty() {
        return Err(LoadError::Nameless {
            description: info.description.to_string(),
        });
    }
    Ok(PluginLibrary {
        info,
        abi_version,
        path: path.to_owned(),
        module,
    })
}

/// The root module of `header`, once its version and layout were found compatible.
fn root_module(header: &'static LibHeader) -> Result<PluginMod_Ref, LoadError> {
    let parse = |strings| VersionNumber::new(strings).map_err(LibraryError::from);
    let host = parse(PluginMod_Ref::VERSION_STRINGS).map_err(LoadError::from_library)?;
    let library = parse(header.version_strings()).map_err(LoadError::from_library)?;
    match VersionMatch::of(host, library) {
        VersionMatch::Current => header
            .init_root_module::<PluginMod_Ref>()
            .map_err(LoadError::from_library),
        VersionMatch::OlderMinor => {
            check_older_layout(header)?;
            // SAFETY: the library's root module layout was just proven to be a prefix of this
            // host's `PluginMod_Ref` layout (every type equal, prefix types and vtables only
            // shorter at the end), and prefix-type accessors check at run time which fields the
            // library's instances have.
            unsafe { header.unchecked_layout::<PluginMod_Ref>() }.map_err(|error| {
                LoadError::from_library(error.into_library_error::<PluginMod_Ref>())
            })
        }
        VersionMatch::NewerMinor => Err(LoadError::NewerMinor {
            found: library.to_string(),
            expected: host.to_string(),
        }),
        VersionMatch::OtherMajor => Err(LoadError::from_library(
            LibraryError::IncompatibleVersionNumber {
                library_name: PluginMod_Ref::NAME,
                expected_version: host,
                actual_version: library,
            },
        )),
    }
}

/// Prove that the root module of a library built against an older minor version is a prefix
/// of this host's: abi_stable's checker run with the library's layout as the interface and the
/// host's as the implementation, which may only add fields at the end of prefix types.
fn check_older_layout(header: &'static LibHeader) -> Result<(), LoadError> {
    let Some(library_layout) = header.layout() else {
        return Err(LoadError::IncompatibleLayout {
            expected: host_abi_version(),
            detail: "the library was built without layout information, so an older interface version cannot be checked".to_owned(),
        });
    };
    is_prefix_of(library_layout, <PluginMod_Ref as StableAbi>::LAYOUT).map_err(|errors| {
        LoadError::from_library(LibraryError::AbiInstability(
            RBoxError::new(errors).to_formatted_error(),
        ))
    })
}

/// Whether every type reachable from `older` equals the one at the same place in `current`,
/// except that prefix types (root modules, trait vtables) may have fewer fields at the end.
fn is_prefix_of(
    older: &'static TypeLayout,
    current: &'static TypeLayout,
) -> Result<(), AbiInstabilityErrors> {
    // Private checking state: the process-wide one merges every prefix type it sees into the
    // longest known version and expects each later library to have at least that many fields,
    // so recording the older layout there would make current plugins fail their own check.
    let globals = CheckingGlobals::new();
    check_layout_compatibility_with_globals(older, current, &globals)
}

/// Why a plugin instance could not be created.
#[derive(Debug, thiserror::Error)]
pub enum CreateFailure {
    #[error("invalid settings")]
    /// The plugin refused its settings: one error per key.
    Settings(Vec<SettingError>),
    #[error("plugin panicked during initialisation: {0}")]
    /// The plugin panicked in `create`; the panic's message.
    Fault(String),
}

impl PluginLibrary {
    /// Ask the plugin to validate `settings` and build an instance.
    pub fn create(&self, settings: &str) -> Result<PluginInstance, CreateFailure> {
        match (self.module.create())(RStr::from_str(settings)) {
            RResult::ROk(plugin) => Ok(PluginInstance { plugin }),
            RResult::RErr(error) if !error.fault.is_empty() => {
                Err(CreateFailure::Fault(error.fault.into_string()))
            }
            RResult::RErr(error) => Err(CreateFailure::Settings(error.settings.into_vec())),
        }
    }
}

/// A plugin panicked inside a call; the session it was serving must be closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct PluginFault {
    /// The panic message the plugin's entry point caught.
    pub message: String,
}

impl From<RString> for PluginFault {
    fn from(message: RString) -> Self {
        Self {
            message: message.into_string(),
        }
    }
}

/// A configured plugin.
pub struct PluginInstance {
    plugin: PluginBox,
}

impl PluginInstance {
    /// `Err` carries the message of a panic inside the plugin.
    pub fn new_session(&self, info: SessionInfo) -> Result<PluginSession, PluginFault> {
        match self.plugin.new_session(info) {
            RResult::ROk(session) => Ok(PluginSession { session }),
            RResult::RErr(fault) => Err(fault.into()),
        }
    }

    /// Ask a transport plugin whether it carries `request` for a client at `peer`.
    pub fn validate_transport(
        &self,
        request: TransportRequest,
        peer: &str,
    ) -> Result<(), HostError> {
        self.plugin
            .validate_transport(request, RStr::from_str(peer))
            .into_result()
    }

    /// Standalone outputs the plugin's settings ask for.
    pub fn outputs(&self) -> Vec<OutputSpec> {
        self.plugin.outputs().into_vec()
    }
}

/// What the host does for a session while the plugin handles one event.
pub trait HostCalls {
    /// Queue bytes for the client.
    fn write(&mut self, data: &[u8]);
    /// Close the connection once queued output has been sent.
    fn close(&mut self);
    /// (Re)arm the session's one-shot timer `timer`.
    fn set_timer(&mut self, timer: u64, after: Duration);
    /// Disarm the session's timer `timer`.
    fn cancel_timer(&mut self, timer: u64);
    /// Resolve `point` or `point/file` for the session's protocol.
    fn lookup(&self, path: &str) -> Result<PointInfo, HostError>;
    /// Start raw media for the client after what the current event wrote.
    fn play(&mut self, path: &str, range: ByteRange) -> Result<PointInfo, HostError>;
    /// Stop the session's media.
    fn stop(&mut self);
    /// Make the session the encoder of a broadcast point.
    fn publish(&mut self, path: &str) -> Result<PointInfo, HostError>;
    /// Feed MPEG-TS to the point the session publishes.
    fn push_media(&mut self, data: &[u8]) -> Result<(), HostError>;
    /// Log for the plugin, tagged with plugin, session and peer.
    fn log(&self, level: LogLevel, message: &str);
    /// The session's identity.
    fn session(&self) -> SessionInfo;
    /// Set up a media transport through the transport plugin for its kind.
    fn setup_transport(&mut self, request: TransportRequest) -> Result<TransportInfo, HostError>;
    /// Release a transport of the session.
    fn teardown_transport(&mut self, transport: u64);
    /// Start or resume media on the session's transports.
    fn play_transports(&mut self, path: &str, start_ms: u64) -> Result<PlayInfo, HostError>;
    /// Pause media on the session's transports; the position in milliseconds.
    fn pause_transports(&mut self) -> Result<u64, HostError>;
    /// What the client presented with the current request (since 1.1).
    fn present_credentials(&mut self, credentials: Credentials);
    /// Play with the media handed to the session as [`PluginSession::on_media`] events
    /// (since 1.1). A host that cannot refuses it.
    fn play_framed(&mut self, path: &str, range: ByteRange) -> Result<PointInfo, HostError> {
        let _ = (path, range);
        Err(HostError::new(
            crate::types::ErrorCode::UNSUPPORTED_TRANSPORT,
            "framed media is not supported by this server",
        ))
    }
    /// Add to the plugin's counter `name` (since 1.1).
    fn count(&mut self, name: &str, delta: u64) {
        let _ = (name, delta);
    }
    /// Set the plugin's gauge `name` (since 1.1).
    fn gauge(&mut self, name: &str, value: i64) {
        let _ = (name, value);
    }
    /// Ask for a packaged resource (HLS); the answer comes as
    /// [`PluginSession::on_resource`] (since 1.1). A host that cannot refuses it.
    fn get_resource(&mut self, request: ResourceRequest) -> Result<(), HostError> {
        let _ = request;
        Err(HostError::new(
            crate::types::ErrorCode::UNSUPPORTED_TRANSPORT,
            "packaged resources (HLS) are not supported by this server",
        ))
    }
    /// During `on_resource`: queue the resource's body without copying (since 1.1).
    fn send_resource_body(&mut self) {}
    /// The publishing encoder's name and description of its stream (since 1.1).
    fn describe_source(&mut self, name: &str, description: &str) {
        let _ = (name, description);
    }
    /// Whether the connection arrived over TLS terminated by the host (since 1.1).
    fn is_secure(&self) -> bool {
        false
    }
    /// Make this connection the receiving end of HTTP tunnel `cookie` (since 1.1).
    fn open_tunnel(&mut self, cookie: &str) -> Result<(), HostError> {
        let _ = cookie;
        Err(HostError::new(
            crate::types::ErrorCode::UNSUPPORTED_TRANSPORT,
            "HTTP tunnelling is not supported by this server",
        ))
    }
    /// Hand `data` to the receiving end of tunnel `cookie` (since 1.1).
    fn feed_tunnel(&mut self, cookie: &str, data: &[u8]) -> Result<(), HostError> {
        let _ = (cookie, data);
        Err(HostError::new(
            crate::types::ErrorCode::UNSUPPORTED_TRANSPORT,
            "HTTP tunnelling is not supported by this server",
        ))
    }
    /// End tunnel `cookie`; its receiving session gets `on_peer_closed` (since 1.1).
    fn close_tunnel(&mut self, cookie: &str) {
        let _ = cookie;
    }
    /// Hand the connection over to control plugin `plugin`, replaying `data` (since 1.1).
    fn hand_over(&mut self, plugin: &str, data: &[u8]) -> Result<(), HostError> {
        let _ = (plugin, data);
        Err(HostError::new(
            crate::types::ErrorCode::UNSUPPORTED_TRANSPORT,
            "handing a connection over is not supported by this server",
        ))
    }
}

/// Presents a [`HostCalls`] as the ABI's [`FfiHost`].
struct HostAdapter<'h, H: HostCalls>(&'h mut H);

impl<H: HostCalls> FfiHost for HostAdapter<'_, H> {
    fn write(&mut self, data: RSlice<'_, u8>) {
        self.0.write(data.as_slice());
    }
    fn close(&mut self) {
        self.0.close();
    }
    fn set_timer(&mut self, timer: u64, after_ms: u64) {
        self.0.set_timer(timer, Duration::from_millis(after_ms));
    }
    fn cancel_timer(&mut self, timer: u64) {
        self.0.cancel_timer(timer);
    }
    fn lookup(&self, path: RStr<'_>) -> RResult<PointInfo, HostError> {
        self.0.lookup(path.as_str()).into()
    }
    fn play(&mut self, path: RStr<'_>, range: ByteRange) -> RResult<PointInfo, HostError> {
        self.0.play(path.as_str(), range).into()
    }
    fn stop(&mut self) {
        self.0.stop();
    }
    fn publish(&mut self, path: RStr<'_>) -> RResult<PointInfo, HostError> {
        self.0.publish(path.as_str()).into()
    }
    fn push_media(&mut self, data: RSlice<'_, u8>) -> RResult<(), HostError> {
        self.0.push_media(data.as_slice()).into()
    }
    fn log(&self, level: LogLevel, message: RStr<'_>) {
        self.0.log(level, message.as_str());
    }
    fn session(&self) -> SessionInfo {
        self.0.session()
    }
    fn setup_transport(&mut self, request: TransportRequest) -> RResult<TransportInfo, HostError> {
        self.0.setup_transport(request).into()
    }
    fn teardown_transport(&mut self, transport: u64) {
        self.0.teardown_transport(transport);
    }
    fn play_transports(&mut self, path: RStr<'_>, start_ms: u64) -> RResult<PlayInfo, HostError> {
        self.0.play_transports(path.as_str(), start_ms).into()
    }
    fn pause_transports(&mut self) -> RResult<u64, HostError> {
        self.0.pause_transports().into()
    }
    fn present_credentials(&mut self, credentials: Credentials) {
        self.0.present_credentials(credentials);
    }
    fn play_framed(&mut self, path: RStr<'_>, range: ByteRange) -> RResult<PointInfo, HostError> {
        self.0.play_framed(path.as_str(), range).into()
    }
    fn count(&mut self, name: RStr<'_>, delta: u64) {
        self.0.count(name.as_str(), delta);
    }
    fn gauge(&mut self, name: RStr<'_>, value: i64) {
        self.0.gauge(name.as_str(), value);
    }
    fn get_resource(&mut self, request: ResourceRequest) -> RResult<(), HostError> {
        self.0.get_resource(request).into()
    }
    fn send_resource_body(&mut self) {
        self.0.send_resource_body();
    }
    fn describe_source(&mut self, name: RStr<'_>, description: RStr<'_>) {
        self.0.describe_source(name.as_str(), description.as_str());
    }
    fn is_secure(&self) -> bool {
        self.0.is_secure()
    }
    fn open_tunnel(&mut self, cookie: RStr<'_>) -> RResult<(), HostError> {
        self.0.open_tunnel(cookie.as_str()).into()
    }
    fn feed_tunnel(&mut self, cookie: RStr<'_>, data: RSlice<'_, u8>) -> RResult<(), HostError> {
        self.0.feed_tunnel(cookie.as_str(), data.as_slice()).into()
    }
    fn close_tunnel(&mut self, cookie: RStr<'_>) {
        self.0.close_tunnel(cookie.as_str());
    }
    fn hand_over(&mut self, plugin: RStr<'_>, data: RSlice<'_, u8>) -> RResult<(), HostError> {
        self.0.hand_over(plugin.as_str(), data.as_slice()).into()
    }
}

/// A packaged resource as the host hands it to [`PluginSession::on_resource`]: the fields of
/// [`Resource`] in plain Rust.
#[derive(Clone, Copy, Debug)]
pub struct ResourceParts<'a> {
    /// The media type.
    pub content_type: &'a str,
    /// A strong entity tag, quotes included.
    pub etag: &'a str,
    /// Seconds since the Unix epoch.
    pub last_modified: u64,
    /// Seconds a cache may keep it.
    pub max_age: u32,
    /// It never changes under its name.
    pub immutable: bool,
    /// The body's pieces, in order.
    pub body: &'a [&'a [u8]],
}

/// A session inside a plugin. Every call returns a [`PluginFault`] if the plugin panicked;
/// the session must then be closed.
pub struct PluginSession {
    session: SessionBox,
}

fn fault(result: RResult<(), RString>) -> Result<(), PluginFault> {
    result.into_result().map_err(PluginFault::from)
}

impl PluginSession {
    /// Deliver `on_open` to the session.
    pub fn on_open(&mut self, host: &mut impl HostCalls) -> Result<(), PluginFault> {
        let mut adapter = HostAdapter(host);
        let host = FfiHost_TO::from_ptr(&mut adapter, TD_Opaque);
        fault(self.session.on_open(host))
    }

    /// Deliver `on_data` to the session.
    pub fn on_data(&mut self, host: &mut impl HostCalls, data: &[u8]) -> Result<(), PluginFault> {
        let mut adapter = HostAdapter(host);
        let host = FfiHost_TO::from_ptr(&mut adapter, TD_Opaque);
        fault(self.session.on_data(host, RSlice::from_slice(data)))
    }

    /// Deliver `on_timer` to the session.
    pub fn on_timer(&mut self, host: &mut impl HostCalls, timer: u64) -> Result<(), PluginFault> {
        let mut adapter = HostAdapter(host);
        let host = FfiHost_TO::from_ptr(&mut adapter, TD_Opaque);
        fault(self.session.on_timer(host, timer))
    }

    /// Deliver `on_stream_ended` to the session.
    pub fn on_stream_ended(
        &mut self,
        host: &mut impl HostCalls,
        ended: StreamEnded,
    ) -> Result<(), PluginFault> {
        let mut adapter = HostAdapter(host);
        let host = FfiHost_TO::from_ptr(&mut adapter, TD_Opaque);
        fault(self.session.on_stream_ended(host, ended))
    }

    /// Deliver `on_transport_activity` to the session.
    pub fn on_transport_activity(
        &mut self,
        host: &mut impl HostCalls,
        transport: u64,
    ) -> Result<(), PluginFault> {
        let mut adapter = HostAdapter(host);
        let host = FfiHost_TO::from_ptr(&mut adapter, TD_Opaque);
        fault(self.session.on_transport_activity(host, transport))
    }

    /// Deliver `on_peer_closed` to the session.
    pub fn on_peer_closed(&mut self, host: &mut impl HostCalls) -> Result<(), PluginFault> {
        let mut adapter = HostAdapter(host);
        let host = FfiHost_TO::from_ptr(&mut adapter, TD_Opaque);
        fault(self.session.on_peer_closed(host))
    }

    /// Hand the session the next piece of the media it asked for with `play_framed`.
    pub fn on_media(
        &mut self,
        host: &mut impl HostCalls,
        chunk: MediaChunk<'_>,
    ) -> Result<(), PluginFault> {
        let mut adapter = HostAdapter(host);
        let host = FfiHost_TO::from_ptr(&mut adapter, TD_Opaque);
        fault(self.session.on_media(host, chunk))
    }

    /// Hand the session the answer to its `get_resource` request.
    pub fn on_resource(
        &mut self,
        host: &mut impl HostCalls,
        answer: Result<ResourceParts<'_>, HostError>,
    ) -> Result<(), PluginFault> {
        let pieces: Vec<RSlice<'_, u8>> = match &answer {
            Ok(parts) => parts
                .body
                .iter()
                .map(|piece| RSlice::from_slice(piece))
                .collect(),
            Err(_) => Vec::new(),
        };
        let answer = answer.map(|parts| Resource {
            content_type: RStr::from_str(parts.content_type),
            etag: RStr::from_str(parts.etag),
            last_modified: parts.last_modified,
            max_age: parts.max_age,
            immutable: parts.immutable,
            body: RSlice::from_slice(&pieces),
        });
        let mut adapter = HostAdapter(host);
        let host = FfiHost_TO::from_ptr(&mut adapter, TD_Opaque);
        fault(self.session.on_resource(host, answer.into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn version(text: &'static str) -> VersionNumber {
        VersionNumber::new(abi_stable::sabi_types::VersionStrings::new(text)).unwrap()
    }

    #[test]
    fn older_minors_load_newer_minors_and_other_majors_do_not() {
        let host = version("1.1.0");
        let cases = [
            ("1.1.0", VersionMatch::Current),
            ("1.1.7", VersionMatch::Current),
            ("1.0.0", VersionMatch::OlderMinor),
            ("1.0.3", VersionMatch::OlderMinor),
            ("1.2.0", VersionMatch::NewerMinor),
            ("2.0.0", VersionMatch::OtherMajor),
            ("2.1.0", VersionMatch::OtherMajor),
            ("0.1.0", VersionMatch::OtherMajor),
        ];
        for (library, expected) in cases {
            assert_eq!(
                VersionMatch::of(host, version(library)),
                expected,
                "{library}"
            );
        }
        // Before 1.0, cargo's rule: the minor number breaks, the patch number adds.
        let early = version("0.3.2");
        assert_eq!(
            VersionMatch::of(early, version("0.3.1")),
            VersionMatch::OlderMinor
        );
        assert_eq!(
            VersionMatch::of(early, version("0.4.0")),
            VersionMatch::OtherMajor
        );
    }

    #[test]
    fn the_running_interface_is_a_prefix_of_itself() {
        let layout = <PluginMod_Ref as StableAbi>::LAYOUT;
        assert!(is_prefix_of(layout, layout).is_ok());
    }

    /// Two versions of one trait, as an interface crate would have them in successive minor
    /// versions: the same names and package, so only the shapes differ.
    mod first {
        use abi_stable::sabi_trait;
        use abi_stable::std_types::RBox;

        #[sabi_trait]
        pub trait Probe {
            fn id(&self) -> u32;
            fn label(&self) -> u32 {
                0
            }
        }
        pub type Object = Probe_TO<'static, RBox<()>>;
    }

    mod grown_at_the_end {
        use abi_stable::sabi_trait;
        use abi_stable::std_types::RBox;

        #[sabi_trait]
        pub trait Probe {
            fn id(&self) -> u32;
            fn label(&self) -> u32 {
                0
            }
            fn weight(&self) -> u64 {
                0
            }
        }
        pub type Object = Probe_TO<'static, RBox<()>>;
    }

    mod grown_in_the_middle {
        use abi_stable::sabi_trait;
        use abi_stable::std_types::RBox;

        #[sabi_trait]
        pub trait Probe {
            fn id(&self) -> u32;
            fn weight(&self) -> u64 {
                0
            }
            fn label(&self) -> u32 {
                0
            }
        }
        pub type Object = Probe_TO<'static, RBox<()>>;
    }

    mod changed_signature {
        use abi_stable::sabi_trait;
        use abi_stable::std_types::RBox;

        #[sabi_trait]
        pub trait Probe {
            fn id(&self) -> u64;
            fn label(&self) -> u32 {
                0
            }
        }
        pub type Object = Probe_TO<'static, RBox<()>>;
    }

    /// Successive versions of one root module.
    #[allow(dead_code)] // only the layouts are compared
    mod module_first {
        #[repr(C)]
        #[derive(abi_stable::StableAbi)]
        #[sabi(kind(Prefix(prefix_ref = Module_Ref)))]
        #[sabi(missing_field(panic))]
        pub struct Module {
            #[sabi(last_prefix_field)]
            pub id: extern "C" fn() -> u32,
        }
    }

    #[allow(dead_code)] // only the layouts are compared
    mod module_grown {
        #[repr(C)]
        #[derive(abi_stable::StableAbi)]
        #[sabi(kind(Prefix(prefix_ref = Module_Ref)))]
        #[sabi(missing_field(panic))]
        pub struct Module {
            #[sabi(last_prefix_field)]
            pub id: extern "C" fn() -> u32,
            #[sabi(missing_field(option))]
            pub weight: extern "C" fn() -> u64,
        }
    }

    #[allow(dead_code)] // only the layouts are compared
    mod module_moved_last_prefix_field {
        #[repr(C)]
        #[derive(abi_stable::StableAbi)]
        #[sabi(kind(Prefix(prefix_ref = Module_Ref)))]
        #[sabi(missing_field(panic))]
        pub struct Module {
            pub id: extern "C" fn() -> u32,
            #[sabi(last_prefix_field)]
            pub weight: extern "C" fn() -> u64,
        }
    }

    #[test]
    fn a_root_module_grows_after_its_last_prefix_field_which_never_moves() {
        let first = layout::<module_first::Module_Ref>();
        assert!(is_prefix_of(first, layout::<module_grown::Module_Ref>()).is_ok());
        assert!(is_prefix_of(
            first,
            layout::<module_moved_last_prefix_field::Module_Ref>()
        )
        .is_err());
    }

    fn layout<T: StableAbi>() -> &'static TypeLayout {
        T::LAYOUT
    }

    #[test]
    fn a_vtable_grown_at_the_end_extends_the_older_one() {
        assert!(is_prefix_of(
            layout::<first::Object>(),
            layout::<grown_at_the_end::Object>()
        )
        .is_ok());
    }

    struct Seven;

    impl first::Probe for Seven {
        fn id(&self) -> u32 {
            7
        }
        fn label(&self) -> u32 {
            3
        }
    }

    #[test]
    fn a_method_missing_from_an_older_vtable_runs_its_default_body() {
        let older = first::Probe_TO::from_value(Seven, TD_Opaque);
        assert!(is_prefix_of(
            layout::<first::Object>(),
            layout::<grown_at_the_end::Object>()
        )
        .is_ok());
        // SAFETY: the check above proved the older object's layout a prefix of the newer
        // one's; this is what the host does with a vtable from a plugin built against 1.0.
        let newer: grown_at_the_end::Object = unsafe { std::mem::transmute(older) };
        assert_eq!(newer.id(), 7);
        assert_eq!(newer.label(), 3);
        assert_eq!(
            newer.weight(),
            0,
            "not in the older vtable: the default body runs"
        );
    }

    #[test]
    fn a_newer_vtable_is_not_a_prefix_of_an_older_one() {
        assert!(is_prefix_of(
            layout::<grown_at_the_end::Object>(),
            layout::<first::Object>()
        )
        .is_err());
    }

    #[test]
    fn a_method_inserted_before_existing_ones_is_refused() {
        assert!(is_prefix_of(
            layout::<first::Object>(),
            layout::<grown_in_the_middle::Object>()
        )
        .is_err());
    }

    #[test]
    fn a_changed_signature_is_refused() {
        assert!(is_prefix_of(
            layout::<first::Object>(),
            layout::<changed_signature::Object>()
        )
        .is_err());
    }
}

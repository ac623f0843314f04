//! The configuration compiler: turns `ferrocast.toml` into a checked [`Config`].
//!
//! The server refuses to start on a bad configuration, so this module's job is
//! to make fixing one quick: it reports *every* problem in one go, each as
//! `file:line: what is wrong and how to fix it`, instead of stopping at the
//! first. To get there it parses with `toml_edit` (which keeps byte spans for
//! line numbers), walks the tables by hand, and checks each value on its own so
//! one bad value never hides another.
//!
//! Plugins own their settings: every key in `[plugins.<name>]` other than the
//! host keys `enabled` and `listen` is re-rendered one per line and handed to
//! the plugin through [`PluginCatalog::validate_settings`]; the issues it
//! returns are mapped back to lines of the original file.
//!
//! The format is documented in the default file, `config/ferrocast.toml`.

mod bounds;
mod compiler;
mod error;
mod lines;
mod pull;
mod show;
mod suggest;
mod value;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use error::{ConfigError, ConfigErrors};

use crate::access::{LimiterSettings, PlayRule, PublishRule, Secret};
pub use pull::{
    parse_pull_url, redact_url, PullMode, PullSource, PullUrl, PullUrlError, UpstreamCredentials,
};
pub use show::effective_toml;

/// What the configuration compiler needs to know about the loaded plugins.
pub trait PluginCatalog {
    /// Names of the plugins that were loaded, sorted.
    fn plugin_names(&self) -> Vec<String>;
    /// Ask the named (known) plugin to validate its own settings text.
    fn validate_settings(&self, plugin: &str, settings: &str) -> Vec<SettingIssue>;
}

/// A problem a plugin found in its own settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingIssue {
    /// The setting's key as written in the settings text; empty when the
    /// problem is not about one key (it is then reported at the table header).
    pub key: String,
    pub message: String,
}

impl From<ferrocast_plugin_api::SettingError> for SettingIssue {
    fn from(error: ferrocast_plugin_api::SettingError) -> Self {
        Self {
            key: error.key.into_string(),
            message: error.message.into_string(),
        }
    }
}

/// A fully checked configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The config file as given.
    pub path: PathBuf,
    pub server: ServerConfig,
    pub limits: LimitsConfig,
    /// Only plugins that have a `[plugins.<name>]` table.
    pub plugins: BTreeMap<String, PluginConfig>,
    /// Publishing points in file order; names are unique.
    pub points: Vec<PointConfig>,
    /// The `[security]` table: signing key, limiter and default access rules.
    pub security: SecurityConfig,
    /// The `[admin]` table: the admin HTTP API, when the file has one.
    pub admin: Option<AdminConfig>,
    /// The `[access_log]` table, when the file has one.
    pub access_log: Option<AccessLogConfig>,
    /// The `[hls]` table (defaults without one): how `hls` points are segmented.
    pub hls: crate::hls::HlsSettings,
    /// The `[tls.<name>]` tables: certificate sets that listen entries refer to by name.
    pub tls: BTreeMap<String, TlsConfig>,
    /// Each recorded broadcast point's `record` settings, by point name.
    pub recordings: BTreeMap<String, crate::record::RecordSettings>,
    /// Things that are allowed but probably not intended, as `file:line: message`.
    pub warnings: Vec<String>,
}

impl Config {
    pub fn point(&self, name: &str) -> Option<&PointConfig> {
        self.points.iter().find(|point| point.name == name)
    }

    /// True when the plugin has a `[plugins.<name>]` table and is not disabled.
    pub fn plugin_enabled(&self, name: &str) -> bool {
        self.plugins.get(name).is_some_and(|plugin| plugin.enabled)
    }
}

/// The `[server]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// Absolute, canonical directory of plugin libraries; `None` means the
    /// directory of the ferrocast executable.
    pub plugin_dir: Option<PathBuf>,
    pub log_format: LogFormat,
    /// Max chunks queued per live client before it is skipped ahead.
    pub client_queue: usize,
    /// A client whose socket accepts nothing for this long is disconnected.
    pub write_timeout: Duration,
    /// Where `ferrocast reload`, `status` and `drain` reach the running server; `None` means
    /// a path derived from the config file's path in the temporary directory.
    pub control_socket: Option<PathBuf>,
    /// On SIGTERM, how long sessions get to finish their clean end before the process exits.
    pub shutdown_timeout: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            plugin_dir: None,
            log_format: LogFormat::Text,
            client_queue: 1024,
            write_timeout: Duration::from_millis(20_000),
            control_socket: None,
            shutdown_timeout: Duration::from_millis(5_000),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

impl LogFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        }
    }
}

/// The `[admin]` table: where the admin HTTP API listens and who may use it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminConfig {
    pub listen: SocketAddr,
    /// Accepted bearer tokens, as argon2 PHC strings (`ferrocast hash-token` prints one).
    pub tokens: Vec<String>,
    /// Peers that may read `/metrics` without a token.
    pub metrics_allow: Vec<std::net::IpAddr>,
    /// The `[tls.<name>]` the API is served with (`tls = "name"`), or plain HTTP.
    pub tls: Option<String>,
}

/// One `[tls.<name>]` table: the certificates presented on the listeners that name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    pub name: String,
    /// The default certificate first (`cert`, `key`), then the `sni` ones; a client's server
    /// name picks the certificate whose names cover it, else the default.
    pub certs: Vec<CertFiles>,
    /// A connection that has not completed its handshake this long after it was accepted
    /// is closed.
    pub handshake_timeout: Duration,
}

/// A certificate chain and its private key, as PEM files (absolute paths).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Default `handshake_timeout_ms` of a `[tls.<name>]` table.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_millis(10_000);

/// The `[access_log]` table: the W3C access log file and its rotation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessLogConfig {
    pub path: PathBuf,
    /// The file is rotated before it would grow past this.
    pub max_bytes: u64,
    /// Rotated files kept (`path.1` … `path.<keep>`).
    pub keep: u32,
}

/// Default `[admin] listen`.
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:8081";

/// One `[plugins.<name>]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginConfig {
    pub name: String,
    pub enabled: bool,
    pub listen: Vec<SocketAddr>,
    /// The listen addresses written as `{ address = "...", tls = "name" }`, with their
    /// `[tls.<name>]`.
    pub tls_listen: BTreeMap<SocketAddr, String>,
    /// The plugin's own keys as TOML, one `key = value` per line.
    pub settings: String,
    /// Line of the table header, for later messages about this plugin.
    pub line: usize,
}

/// One `[[point]]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PointConfig {
    pub name: String,
    pub kind: PointKind,
    pub source: PointSource,
    /// Names of the plugins that serve this point, in file order.
    pub protocols: Vec<String>,
    /// How long clients are held when a broadcast encoder drops; zero for
    /// on-demand points, which have no encoder.
    pub reconnect_grace: Duration,
    /// A pushing encoder that sends nothing for this long is treated as gone; zero for
    /// on-demand points.
    pub source_timeout: Duration,
    /// `max_clients` and the outgoing bandwidth cap.
    pub limits: PointLimits,
    /// Line of the `[[point]]` header.
    pub line: usize,
    /// Who may publish; `None` takes `[security] publish`.
    pub publish: Option<PublishRule>,
    /// Who may play; `None` takes `[security] play`.
    pub play: Option<PlayRule>,
    /// A broadcast point's output timestamps across source changes.
    pub timeline: TimelineMode,
    /// How fast a late joiner on UDP transports catches up: a multiple of the stream's
    /// bitrate (0: its backlog goes out at once).
    pub udp_join_rate: u32,
}

/// Which timestamps a broadcast point sends (`timeline`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TimelineMode {
    /// One timeline across source changes (re-based PTS/DTS/PCR).
    #[default]
    Continuous,
    /// The source's own timestamps, which start over with every new source.
    Source,
}

impl TimelineMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Continuous => "continuous",
            Self::Source => "source",
        }
    }

    /// The mode a configuration value names.
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "continuous" => Some(Self::Continuous),
            "source" => Some(Self::Source),
            _ => None,
        }
    }
}

/// The `[security]` table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SecurityConfig {
    /// Key of the HMAC over signed player URLs.
    pub url_signing_key: Option<Secret>,
    /// Publish rule of points without their own (loopback only by default).
    pub publish: PublishRule,
    /// Play rule of points without their own (public by default).
    pub play: PlayRule,
    pub limiter: LimiterSettings,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PointKind {
    Broadcast,
    OnDemand,
}

impl PointKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PointKind::Broadcast => "broadcast",
            PointKind::OnDemand => "on-demand",
        }
    }
}

/// Where a point's media comes from. Paths are absolute and canonical.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PointSource {
    /// An encoder pushes the stream to us.
    Push,
    /// A single `.ts` file.
    File(PathBuf),
    /// A directory of `.ts` files.
    Directory(PathBuf),
    /// Broadcast: ferrocast pulls the stream from a URL.
    Pull(PullSource),
}

/// The `[limits]` table: what one address, and all clients together, may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitsConfig {
    /// Open connections on all listeners together.
    pub max_connections: u32,
    /// Open connections from one IP address.
    pub max_connections_per_ip: u32,
    /// New connections per second from one IP address (a token bucket with one second of
    /// burst); 0 means no limit.
    pub connection_rate_per_ip: u32,
    /// A connection without a first valid request this long after it was accepted is closed.
    pub idle_timeout: Duration,
    /// The kernel send buffer (`SO_SNDBUF`) of every accepted socket.
    pub send_buffer_bytes: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_connections: 10_000,
            max_connections_per_ip: 1_000,
            connection_rate_per_ip: 0,
            idle_timeout: Duration::from_millis(10_000),
            send_buffer_bytes: 256 * 1024,
        }
    }
}

/// A point's own limits; `None` means no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PointLimits {
    pub max_clients: Option<u32>,
    /// Outgoing bits per second to all of the point's clients together.
    pub max_bandwidth_bps: Option<u64>,
}

/// Default `reconnect_grace_ms` of broadcast points.
pub const DEFAULT_RECONNECT_GRACE: Duration = Duration::from_millis(60_000);
/// Default `source_timeout_ms` of broadcast points.
pub const DEFAULT_SOURCE_TIMEOUT: Duration = Duration::from_millis(10_000);
/// Default `udp_join_rate` of broadcast points: a 2 s GOP reaches a UDP joiner within 0.7 s.
pub const DEFAULT_UDP_JOIN_RATE: u32 = 4;

/// Checks `text`, the contents of the config file at `path`, against the
/// loaded plugins. Relative paths in it are resolved against `path`'s directory.
pub fn compile(
    path: &Path,
    text: &str,
    catalog: &dyn PluginCatalog,
) -> Result<Config, ConfigErrors> {
    compiler::compile(path, text, catalog)
}

/// Reads and compiles the config file at `path`.
pub fn load(path: &Path, catalog: &dyn PluginCatalog) -> Result<Config, ConfigErrors> {
    let text = read(path)?;
    compile(path, &text, catalog)
}

/// Only `[server] plugin_dir`, resolved and checked like [`compile`] does.
///
/// The plugins have to be loaded before the whole file can be compiled (the
/// catalog checks plugin names and settings), but where to load them from is
/// itself in the file; this breaks that cycle.
pub fn read_plugin_dir(path: &Path, text: &str) -> Result<Option<PathBuf>, ConfigErrors> {
    compiler::plugin_dir(path, text)
}

fn read(path: &Path) -> Result<String, ConfigErrors> {
    std::fs::read_to_string(path).map_err(|error| {
        ConfigErrors(vec![ConfigError::new(
            path,
            0,
            format!(
                "cannot read the configuration file: {error}; check the path and its permissions"
            ),
        )])
    })
}

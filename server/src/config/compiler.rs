//! The walk over a parsed document that checks every table and value.
//!
//! Each check records its error and carries on with a default, so a single
//! run finds every problem in the file; the collected errors only decide at
//! the very end whether a [`Config`] is returned.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml_edit::{ImDocument, Item, Key, Table, TableLike, Value};

mod admin;
mod bounded;
mod hls;
#[path = "limits.rs"]
mod limits;
mod record;

use super::error::{ConfigError, ConfigErrors, Location};
use super::lines::LineIndex;
use super::suggest::{did_you_mean, suggestion_suffix};

#[path = "security.rs"]
mod security;
#[path = "tls.rs"]
mod tls;
use super::value::{describe, settings_line};
use super::{parse_pull_url, PullMode, PullSource, PullUrl};
use super::{
    Config, LogFormat, PluginCatalog, PluginConfig, PointConfig, PointKind, PointSource,
    ServerConfig, SettingIssue, TimelineMode, DEFAULT_RECONNECT_GRACE, DEFAULT_SOURCE_TIMEOUT,
    DEFAULT_UDP_JOIN_RATE,
};

const TOP_LEVEL_KEYS: &[&str] = &[
    "server",
    "plugins",
    "point",
    "limits",
    "security",
    "admin",
    "access_log",
    "hls",
    "tls",
];
const SERVER_KEYS: &[&str] = &[
    "plugin_dir",
    "log_format",
    "client_queue",
    "write_timeout_ms",
    "control_socket",
    "shutdown_timeout_ms",
];
/// Keys of a `[plugins.<name>]` table that the host reads; all others belong to the plugin.
const PLUGIN_HOST_KEYS: &[&str] = &["enabled", "listen"];
const POINT_KEYS: &[&str] = &[
    "name",
    "kind",
    "source",
    "protocols",
    "reconnect_grace_ms",
    "source_timeout_ms",
    "pull",
    "pull_idle_timeout_ms",
    "reconnect_min_ms",
    "reconnect_max_ms",
    "max_clients",
    "max_bandwidth",
    "max_bandwidth_kbps",
    "publish",
    "play",
    "timeline",
    "udp_join_rate",
    "record",
];
/// Keys that only mean something for a point whose source is a pull URL.
const PULL_KEYS: &[&str] = &[
    "pull",
    "pull_idle_timeout_ms",
    "reconnect_min_ms",
    "reconnect_max_ms",
];
const PULL_MODES: &[&str] = &["always", "on-demand"];
const TIMELINE_MODES: &[&str] = &["continuous", "source"];
/// 0 turns pacing off; 2 is the least that catches up in real time at all.
const UDP_JOIN_RATE_RANGE: RangeInclusive<i64> = 0..=64;
const PULL_MS_RANGE: RangeInclusive<i64> = 10..=3_600_000;

const LOG_FORMATS: &[&str] = &["text", "json"];
const POINT_KINDS: &[&str] = &["broadcast", "on-demand"];
const CLIENT_QUEUE_RANGE: RangeInclusive<i64> = 16..=65_536;
const WRITE_TIMEOUT_MS_RANGE: RangeInclusive<i64> = 100..=600_000;
const RECONNECT_GRACE_MS_RANGE: RangeInclusive<i64> = 0..=86_400_000;
const SOURCE_TIMEOUT_MS_RANGE: RangeInclusive<i64> = 100..=3_600_000;
const MAX_POINT_NAME_CHARS: usize = 64;

const LISTEN_HINT: &str = "use ip:port, e.g. \"0.0.0.0:8080\" or \"[::1]:8080\"";

pub(super) fn compile(
    path: &Path,
    text: &str,
    catalog: &dyn PluginCatalog,
) -> Result<Config, ConfigErrors> {
    let document = parse(path, text)?;
    let root = document.as_table();
    let mut compiler = Compiler::new(path, text, catalog.plugin_names());

    compiler.check_top_level_keys(root);
    let server = compiler.server(root);
    let limits = compiler.limits(root);
    let tls = compiler.tls(root);
    let plugins = compiler.plugins(root, catalog);
    let points = compiler.points(root, &plugins);
    let security = compiler.security(root);
    compiler.check_signing_key(&security, &points);
    let admin = compiler.admin(root);
    let access_log = compiler.access_log(root);
    let hls = compiler.hls(root);

    let Compiler {
        errors,
        mut warnings,
        recordings,
        ..
    } = compiler;
    if !errors.is_empty() {
        return Err(ConfigErrors::sorted(errors));
    }
    warnings.sort_by_key(|(line, _)| *line);
    tracing::debug!(
        path = %path.display(),
        plugins = plugins.len(),
        points = points.len(),
        warnings = warnings.len(),
        "configuration compiled"
    );
    Ok(Config {
        path: path.to_path_buf(),
        server,
        limits,
        plugins,
        points,
        security,
        admin,
        access_log,
        hls,
        tls,
        recordings,
        warnings: warnings.into_iter().map(|(_, warning)| warning).collect(),
    })
}

pub(super) fn plugin_dir(path: &Path, text: &str) -> Result<Option<PathBuf>, ConfigErrors> {
    let document = parse(path, text)?;
    let mut compiler = Compiler::new(path, text, Vec::new());
    let plugin_dir = match compiler.table_section(document.as_table(), "server", "[server]") {
        Some(server) => compiler.plugin_dir(&server),
        None => None,
    };
    if compiler.errors.is_empty() {
        Ok(plugin_dir)
    } else {
        Err(ConfigErrors::sorted(compiler.errors))
    }
}

/// A syntax error makes every later check meaningless, so it is reported alone.
fn parse<'t>(path: &Path, text: &'t str) -> Result<ImDocument<&'t str>, ConfigErrors> {
    ImDocument::parse(text).map_err(|error| {
        let lines = LineIndex::new(text);
        let offset = error.span().map_or(0, |span| span.start);
        let detail = error
            .message()
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty())
            .collect::<Vec<_>>()
            .join("; ");
        let detail = if detail.is_empty() {
            "unexpected or missing text (is a value missing after `=`?)".to_string()
        } else {
            detail
        };
        ConfigErrors(vec![ConfigError::new(
            path,
            lines.line_of(offset),
            format!(
                "TOML syntax error at column {}: {detail}; the other checks run once the file parses",
                lines.column_of(text, offset)
            ),
        )])
    })
}

/// A table being checked, with how messages name it and where its header is.
struct Section<'d> {
    table: &'d dyn TableLike,
    label: String,
    line: usize,
}

/// One `listen` address, remembered for the checks across plugins.
struct ListenEntry {
    address: SocketAddr,
    plugin: String,
    plugin_enabled: bool,
    line: usize,
}

struct Compiler<'a> {
    file: &'a Path,
    /// Absolute directory of the config file; relative paths are resolved against it.
    config_dir: PathBuf,
    lines: LineIndex,
    known_plugins: Vec<String>,
    /// Names of the `[tls.<name>]` tables, which `tls = "name"` must refer to.
    tls_names: Vec<String>,
    errors: Vec<ConfigError>,
    warnings: Vec<(usize, String)>,
    /// Each point's valid `record` table, by point name.
    recordings: BTreeMap<String, crate::record::RecordSettings>,
}

impl<'a> Compiler<'a> {
    fn new(file: &'a Path, text: &str, known_plugins: Vec<String>) -> Self {
        Self {
            file,
            config_dir: config_dir(file),
            lines: LineIndex::new(text),
            known_plugins,
            tls_names: Vec::new(),
            errors: Vec::new(),
            warnings: Vec::new(),
            recordings: BTreeMap::new(),
        }
    }

    fn error(&mut self, line: usize, message: impl Into<String>) {
        self.errors.push(ConfigError::new(self.file, line, message));
    }

    fn warn(&mut self, line: usize, message: impl std::fmt::Display) {
        let location = Location {
            file: self.file,
            line,
        };
        self.warnings.push((line, format!("{location}: {message}")));
    }

    // ---- locating things -------------------------------------------------

    /// Line of `key` inside `table`: the key itself, else its value, else `fallback`.
    fn key_line(&self, table: &dyn TableLike, key: &str, fallback: usize) -> usize {
        table
            .key(key)
            .and_then(|key| self.lines.line_of_span(key.span()))
            .or_else(|| {
                table
                    .get(key)
                    .and_then(|item| self.lines.line_of_span(item.span()))
            })
            .unwrap_or(fallback)
    }

    /// Line of a sub-table: its `[header]` when it has one, else the key that
    /// created it (dotted keys, inline tables, tables only implied by a deeper header).
    fn table_line(&self, parent: &dyn TableLike, key: &str, item: &Item, fallback: usize) -> usize {
        let header_line = match item {
            Item::Table(table) => self.lines.line_of_span(table.span()),
            _ => None,
        };
        header_line.unwrap_or_else(|| self.key_line(parent, key, fallback))
    }

    fn value_line(&self, value: &Value, fallback: usize) -> usize {
        self.lines.line_of_span(value.span()).unwrap_or(fallback)
    }

    /// The sub-table `key` of `parent`, or `None` if absent or not a table (reported).
    fn table_section<'d>(
        &mut self,
        parent: &'d Table,
        key: &str,
        label: &str,
    ) -> Option<Section<'d>> {
        let item = parent.get(key)?;
        let line = self.table_line(parent, key, item, 1);
        match item.as_table_like() {
            Some(table) => Some(Section {
                table,
                label: label.to_string(),
                line,
            }),
            None => {
                self.error(
                    line,
                    format!(
                        "`{key}` must be a table (write it as {label}), found {}",
                        describe(item)
                    ),
                );
                None
            }
        }
    }

    fn loaded_plugins_note(&self) -> String {
        if self.known_plugins.is_empty() {
            "no plugins were loaded (check `plugin_dir` and the libferrocast_<name> libraries in it)"
                .to_string()
        } else {
            format!("loaded plugins: {}", self.known_plugins.join(", "))
        }
    }

    fn is_known_plugin(&self, name: &str) -> bool {
        self.known_plugins.iter().any(|known| known == name)
    }

    // ---- generic key and value checks ------------------------------------

    fn check_unknown_keys(&mut self, section: &Section<'_>, allowed: &[&str]) {
        for (key, _) in section.table.iter() {
            if !allowed.contains(&key) {
                let line = self.key_line(section.table, key, section.line);
                self.error(
                    line,
                    format!(
                        "unknown key `{key}` in {}; expected one of: {}{}",
                        section.label,
                        allowed.join(", "),
                        suggestion_suffix(key, allowed)
                    ),
                );
            }
        }
    }

    /// Reports a missing required key at the table header; true if present.
    fn require(&mut self, section: &Section<'_>, key: &str, example: &str) -> bool {
        if section.table.contains_key(key) {
            return true;
        }
        self.error(
            section.line,
            format!(
                "{} is missing required key `{key}`; add e.g. {example}",
                section.label
            ),
        );
        false
    }

    fn entry<'d>(&self, section: &Section<'d>, key: &str) -> Option<(&'d Item, usize)> {
        let item = section.table.get(key)?;
        Some((item, self.key_line(section.table, key, section.line)))
    }

    fn type_error(&mut self, line: usize, key: &str, expected: &str, found: &Item) {
        self.error(
            line,
            format!("`{key}` must be {expected}, found {}", describe(found)),
        );
    }

    fn read_bool(&mut self, section: &Section<'_>, key: &str) -> Option<bool> {
        let (item, line) = self.entry(section, key)?;
        if let Some(value) = item.as_bool() {
            return Some(value);
        }
        let mut message = format!(
            "`{key}` must be a boolean (true or false), found {}",
            describe(item)
        );
        if let Some(quoted @ ("true" | "false")) = item.as_str() {
            message += &format!("; remove the quotes: {key} = {quoted}");
        }
        self.error(line, message);
        None
    }

    fn read_integer(
        &mut self,
        section: &Section<'_>,
        key: &str,
        range: RangeInclusive<i64>,
    ) -> Option<i64> {
        let (item, line) = self.entry(section, key)?;
        self.integer_in(item, line, key, &format!("`{key}`"), range)
    }

    /// `item`, the value of `key` at `line`, as an integer in `range`; errors name it as
    /// `what` (the key, and its table where that helps).
    fn integer_in(
        &mut self,
        item: &Item,
        line: usize,
        key: &str,
        what: &str,
        range: RangeInclusive<i64>,
    ) -> Option<i64> {
        let (min, max) = (range.start(), range.end());
        let Some(value) = item.as_integer() else {
            let mut message = format!(
                "{what} must be an integer from {min} to {max}, found {}",
                describe(item)
            );
            if let Some(number) = item.as_str().and_then(|text| text.parse::<i64>().ok()) {
                message += &format!("; remove the quotes: {key} = {number}");
            }
            self.error(line, message);
            return None;
        };
        if !range.contains(&value) {
            self.error(
                line,
                format!("{what} must be between {min} and {max}, found {value}"),
            );
            return None;
        }
        Some(value)
    }

    fn read_string<'d>(&mut self, section: &Section<'d>, key: &str) -> Option<(&'d str, usize)> {
        let (item, line) = self.entry(section, key)?;
        match item.as_str() {
            Some(text) => Some((text, line)),
            None => {
                self.type_error(line, key, "a string", item);
                None
            }
        }
    }

    /// A string that must be one of `choices`; returns the matching choice.
    fn read_choice(
        &mut self,
        section: &Section<'_>,
        key: &str,
        choices: &[&'static str],
    ) -> Option<&'static str> {
        let (item, line) = self.entry(section, key)?;
        let allowed = choices
            .iter()
            .map(|choice| format!("\"{choice}\""))
            .collect::<Vec<_>>()
            .join(", ");
        let Some(text) = item.as_str() else {
            self.type_error(line, key, &format!("a string, one of {allowed}"), item);
            return None;
        };
        if let Some(choice) = choices.iter().find(|choice| **choice == text) {
            return Some(choice);
        }
        self.error(
            line,
            format!(
                "`{key}` must be one of {allowed}, found \"{text}\"{}",
                suggestion_suffix(text, choices)
            ),
        );
        None
    }

    /// The string entries of an array with each entry's line; entries of the
    /// wrong type are reported and skipped so the rest can still be checked.
    fn read_string_array<'d>(
        &mut self,
        section: &Section<'d>,
        key: &str,
    ) -> Option<Vec<(&'d str, usize)>> {
        let (item, line) = self.entry(section, key)?;
        let Some(array) = item.as_array() else {
            self.type_error(line, key, "an array of strings", item);
            return None;
        };
        let mut entries = Vec::with_capacity(array.len());
        for value in array.iter() {
            let value_line = self.value_line(value, line);
            match value.as_str() {
                Some(text) => entries.push((text, value_line)),
                None => self.error(
                    value_line,
                    format!(
                        "each entry of `{key}` must be a string, found {}",
                        describe(&Item::Value(value.clone()))
                    ),
                ),
            }
        }
        Some(entries)
    }

    /// `raw` resolved against the config file's directory (absolute paths stay as they are).
    fn resolve(&self, raw: &str) -> PathBuf {
        self.config_dir.join(raw).components().collect()
    }

    /// " (resolved from `raw` relative to dir)" for relative paths, so the
    /// user sees why an unexpected absolute path was looked up.
    fn resolution_note(&self, raw: &str) -> String {
        if Path::new(raw).is_absolute() {
            String::new()
        } else {
            format!(
                " (resolved from `{raw}` relative to {})",
                self.config_dir.display()
            )
        }
    }

    // ---- top level -------------------------------------------------------

    fn check_top_level_keys(&mut self, root: &Table) {
        for (key, item) in root.iter() {
            if TOP_LEVEL_KEYS.contains(&key) {
                continue;
            }
            let line = self.table_line(root, key, item, 1);
            let what = match item {
                Item::Table(table) if !table.is_dotted() => format!("table [{key}]"),
                Item::ArrayOfTables(_) => format!("table [[{key}]]"),
                _ => format!("key `{key}`"),
            };
            self.error(
                line,
                format!(
                    "unknown top-level {what}; expected one of: {}{}",
                    TOP_LEVEL_KEYS.join(", "),
                    suggestion_suffix(key, TOP_LEVEL_KEYS)
                ),
            );
        }
    }

    // ---- [server] ----------------------------------------------------------

    fn server(&mut self, root: &Table) -> ServerConfig {
        let mut server = ServerConfig::default();
        let Some(section) = self.table_section(root, "server", "[server]") else {
            return server;
        };
        self.check_unknown_keys(&section, SERVER_KEYS);
        server.plugin_dir = self.plugin_dir(&section);
        if let Some(format) = self.read_choice(&section, "log_format", LOG_FORMATS) {
            server.log_format = match format {
                "json" => LogFormat::Json,
                _ => LogFormat::Text,
            };
        }
        if let Some(queue) = self.read_integer(&section, "client_queue", CLIENT_QUEUE_RANGE) {
            // In range 16..=65536, so it fits any usize.
            server.client_queue = queue as usize;
        }
        if let Some(ms) = self.read_integer(&section, "write_timeout_ms", WRITE_TIMEOUT_MS_RANGE) {
            server.write_timeout = Duration::from_millis(ms.unsigned_abs());
        }
        if let Some(ms) = self.read_integer(&section, "shutdown_timeout_ms", 0..=600_000) {
            server.shutdown_timeout = Duration::from_millis(ms.unsigned_abs());
        }
        if let Some((raw, line)) = self.read_string(&section, "control_socket") {
            if raw.is_empty() {
                self.error(
                    line,
                    "`control_socket` must not be empty; remove it to use the default path",
                );
            } else {
                server.control_socket = Some(self.resolve(raw));
            }
        }
        server
    }

    fn plugin_dir(&mut self, section: &Section<'_>) -> Option<PathBuf> {
        let (raw, line) = self.read_string(section, "plugin_dir")?;
        if raw.is_empty() {
            self.error(
                line,
                "`plugin_dir` must not be empty; remove it to use the directory of the ferrocast executable",
            );
            return None;
        }
        let resolved = self.resolve(raw);
        let note = self.resolution_note(raw);
        match fs::metadata(&resolved) {
            Ok(metadata) if metadata.is_dir() => Some(canonical(resolved)),
            Ok(_) => {
                self.error(
                    line,
                    format!(
                        "`plugin_dir` is not a directory: {}{note}; point it at the directory that holds the libferrocast_<name> libraries",
                        resolved.display()
                    ),
                );
                None
            }
            Err(error) => {
                self.error(
                    line,
                    format!(
                        "plugin directory {}: {}{note}; create it or fix `plugin_dir`",
                        resolved.display(),
                        describe_io_error(&error)
                    ),
                );
                None
            }
        }
    }

    // ---- [plugins.<name>] --------------------------------------------------

    fn plugins(
        &mut self,
        root: &Table,
        catalog: &dyn PluginCatalog,
    ) -> BTreeMap<String, PluginConfig> {
        let mut plugins = BTreeMap::new();
        let Some(section) = self.table_section(root, "plugins", "[plugins]") else {
            return plugins;
        };
        let mut listen_entries = Vec::new();
        for (name, item) in section.table.iter() {
            let label = format!("[plugins.{}]", Key::new(name));
            let line = self.table_line(section.table, name, item, section.line);
            let Some(table) = item.as_table_like() else {
                self.error(
                    line,
                    format!(
                        "`plugins.{name}` must be a table of that plugin's settings (write it as {label}), found {}",
                        describe(item)
                    ),
                );
                continue;
            };
            let plugin_section = Section { table, label, line };
            let plugin = self.plugin(name, &plugin_section, catalog, &mut listen_entries);
            plugins.insert(name.to_string(), plugin);
        }
        self.check_listen_conflicts(&listen_entries);
        plugins
    }

    fn plugin(
        &mut self,
        name: &str,
        section: &Section<'_>,
        catalog: &dyn PluginCatalog,
        listen_entries: &mut Vec<ListenEntry>,
    ) -> PluginConfig {
        let known = self.is_known_plugin(name);
        if !known {
            let message = format!(
                "unknown plugin `{name}` in {}; {}{}",
                section.label,
                self.loaded_plugins_note(),
                suggestion_suffix(name, &self.known_plugins)
            );
            self.error(section.line, message);
        }
        let enabled = self.read_bool(section, "enabled").unwrap_or(true);
        let listen = self.listen(section);
        listen_entries.extend(listen.iter().map(|&(address, line, _)| ListenEntry {
            address,
            plugin: name.to_string(),
            plugin_enabled: enabled,
            line,
        }));

        let (settings, setting_lines) = self.plugin_settings(section);
        // Only a loaded plugin can judge its settings; an unknown one is already an error.
        if known {
            let issues = catalog.validate_settings(name, &settings);
            self.report_setting_issues(name, section, &setting_lines, issues);
        }

        PluginConfig {
            name: name.to_string(),
            enabled,
            tls_listen: listen
                .iter()
                .filter_map(|(address, _, tls)| Some((*address, tls.clone()?)))
                .collect(),
            listen: listen.into_iter().map(|(address, _, _)| address).collect(),
            settings,
            line: section.line,
        }
    }

    /// The `listen` entries: each a string address, or `{ address = "...", tls = "name" }`.
    fn listen(&mut self, section: &Section<'_>) -> Vec<(SocketAddr, usize, Option<String>)> {
        let Some(entries) = self.read_listen_array(section) else {
            return Vec::new();
        };
        let mut addresses: Vec<(SocketAddr, usize, Option<String>)> =
            Vec::with_capacity(entries.len());
        for (text, line, tls) in entries {
            let Ok(address) = text.parse::<SocketAddr>() else {
                let message = format!(
                    "invalid listen address \"{text}\" in {}: {}{LISTEN_HINT}",
                    section.label,
                    listen_mistake(&text)
                );
                self.error(line, message);
                continue;
            };
            // Port 0 asks the OS for a fresh port on every bind, so repeats can't collide.
            let repeated = addresses
                .iter()
                .find(|(seen, _, _)| *seen == address && address.port() != 0);
            if let Some(&(_, first_line, _)) = repeated {
                let message = format!(
                    "duplicate listen address {address} in {} (already listed on line {first_line}); remove one",
                    section.label
                );
                self.error(line, message);
                continue;
            }
            addresses.push((address, line, tls));
        }
        addresses
    }

    /// Two plugins cannot bind the same address, and a wildcard address
    /// (`0.0.0.0` or `[::]`) on a port collides with any specific address of the
    /// same family on that port. A disabled plugin binds nothing, so it only
    /// collides with itself; port 0 (a fresh port from the OS on every bind)
    /// collides with nothing.
    fn check_listen_conflicts(&mut self, entries: &[ListenEntry]) {
        for (index, entry) in entries.iter().enumerate() {
            if entry.address.port() == 0 {
                continue;
            }
            let clash = entries[..index].iter().find(|earlier| {
                let same_plugin = earlier.plugin == entry.plugin;
                let both_bound = earlier.plugin_enabled && entry.plugin_enabled;
                (!same_plugin && both_bound && earlier.address == entry.address)
                    || ((same_plugin || both_bound)
                        && wildcard_overlap(earlier.address, entry.address))
            });
            let Some(earlier) = clash else {
                continue;
            };
            let message = if earlier.address == entry.address {
                format!(
                    "listen address {} is also used by plugin `{}` (line {}); give each plugin its own address or port",
                    entry.address, earlier.plugin, earlier.line
                )
            } else {
                let wildcard = if entry.address.ip().is_unspecified() {
                    entry.address
                } else {
                    earlier.address
                };
                let owner = if earlier.plugin == entry.plugin {
                    "this plugin".to_string()
                } else {
                    format!("plugin `{}`", earlier.plugin)
                };
                format!(
                    "listen address {} overlaps {} of {owner} (line {}): {} already covers every {} address on port {}; use either the wildcard or specific addresses",
                    entry.address,
                    earlier.address,
                    earlier.line,
                    wildcard.ip(),
                    if wildcard.is_ipv4() { "IPv4" } else { "IPv6" },
                    wildcard.port()
                )
            };
            self.error(entry.line, message);
        }
    }

    /// The plugin's own keys as one-per-line TOML, plus each key's line so
    /// the plugin's complaints can be pointed back at the file.
    fn plugin_settings(&mut self, section: &Section<'_>) -> (String, Vec<(String, usize)>) {
        let mut settings = String::new();
        let mut setting_lines = Vec::new();
        for (key, item) in section.table.iter() {
            if PLUGIN_HOST_KEYS.contains(&key) {
                continue;
            }
            let line = self.key_line(section.table, key, section.line);
            // A near miss of a host key is almost certainly a typo of it; passing
            // it to the plugin would only produce a vaguer "unknown setting".
            if let Some(host_key) = did_you_mean(key, PLUGIN_HOST_KEYS) {
                let message = format!(
                    "unknown key `{key}` in {}; expected one of: {} (did you mean `{host_key}`?)",
                    section.label,
                    PLUGIN_HOST_KEYS.join(", ")
                );
                self.error(line, message);
                continue;
            }
            if let Some(setting) = settings_line(key, item) {
                settings.push_str(&setting);
                settings.push('\n');
                setting_lines.push((key.to_string(), line));
            }
        }
        (settings, setting_lines)
    }

    fn report_setting_issues(
        &mut self,
        plugin: &str,
        section: &Section<'_>,
        setting_lines: &[(String, usize)],
        issues: Vec<SettingIssue>,
    ) {
        for issue in issues {
            let line = setting_line(setting_lines, &issue.key).unwrap_or(section.line);
            let message = if issue.key.is_empty() {
                format!("plugin `{plugin}`: {}", issue.message)
            } else {
                format!(
                    "plugin `{plugin}`: setting `{}`: {}",
                    issue.key, issue.message
                )
            };
            self.error(line, message);
        }
    }

    // ---- [[point]] -----------------------------------------------------------

    fn points(
        &mut self,
        root: &Table,
        plugins: &BTreeMap<String, PluginConfig>,
    ) -> Vec<PointConfig> {
        let mut first_line_by_name = HashMap::new();
        let tables = self.point_tables(root);
        let mut points = Vec::with_capacity(tables.len());
        for (index, (table, line)) in tables.into_iter().enumerate() {
            let label = match table.get("name").and_then(Item::as_str) {
                Some(name) => format!("[[point]] `{name}`"),
                None => format!("[[point]] #{}", index + 1),
            };
            let section = Section { table, label, line };
            if let Some(point) = self.point(&section, plugins, &mut first_line_by_name) {
                points.push(point);
            }
        }
        points
    }

    /// The `[[point]]` tables (or inline tables) with their lines; anything else is an error.
    fn point_tables<'d>(&mut self, root: &'d Table) -> Vec<(&'d dyn TableLike, usize)> {
        let Some(item) = root.get("point") else {
            return Vec::new();
        };
        let key_line = self.key_line(root, "point", 1);
        match item {
            Item::ArrayOfTables(tables) => tables
                .iter()
                .map(|table| {
                    let line = self.lines.line_of_span(table.span()).unwrap_or(key_line);
                    (table as &dyn TableLike, line)
                })
                .collect(),
            // `point = [{ ... }, { ... }]` is the same thing written inline.
            Item::Value(Value::Array(values)) => {
                let mut tables = Vec::new();
                for value in values.iter() {
                    let line = self.value_line(value, key_line);
                    match value.as_inline_table() {
                        Some(table) => tables.push((table as &dyn TableLike, line)),
                        None => self.error(
                            line,
                            format!(
                                "each `point` must be a table, found {}; write each point as a [[point]] table",
                                describe(&Item::Value(value.clone()))
                            ),
                        ),
                    }
                }
                tables
            }
            other => {
                self.error(
                    key_line,
                    format!(
                        "`point` must be an array of tables (write each point as a [[point]] table), found {}",
                        describe(other)
                    ),
                );
                Vec::new()
            }
        }
    }

    fn point(
        &mut self,
        section: &Section<'_>,
        plugins: &BTreeMap<String, PluginConfig>,
        first_line_by_name: &mut HashMap<String, usize>,
    ) -> Option<PointConfig> {
        self.check_unknown_keys(section, POINT_KEYS);
        self.require_point_keys(section);
        let name = self.point_name(section, first_line_by_name);
        let kind = self
            .read_choice(section, "kind", POINT_KINDS)
            .map(|kind| match kind {
                "on-demand" => PointKind::OnDemand,
                _ => PointKind::Broadcast,
            });
        let source = self.point_source(section, kind);
        if !matches!(source, Some(PointSource::Pull(_))) && source.is_some() {
            self.refuse_pull_keys(section);
        }
        let protocols = self.protocols(section, plugins);
        let reconnect_grace = self.broadcast_duration(
            section,
            kind,
            "reconnect_grace_ms",
            RECONNECT_GRACE_MS_RANGE,
            DEFAULT_RECONNECT_GRACE,
        );
        let source_timeout = self.broadcast_duration(
            section,
            kind,
            "source_timeout_ms",
            SOURCE_TIMEOUT_MS_RANGE,
            DEFAULT_SOURCE_TIMEOUT,
        );
        let limits = self.point_limits(section);
        let publish = self.publish_rule(section);
        let play = self.play_rule(section);
        let timeline = self.timeline_mode(section, kind);
        let udp_join_rate = self.udp_join_rate(section, kind);
        let record = self.point_record(section, kind);
        let point = PointConfig {
            timeline,
            udp_join_rate,
            limits,
            publish,
            play,
            name: name?,
            kind: kind?,
            source: source?,
            protocols: protocols?,
            reconnect_grace,
            source_timeout,
            line: section.line,
        };
        if let Some(record) = record {
            self.recordings.insert(point.name.clone(), record);
        }
        Some(point)
    }

    fn require_point_keys(&mut self, section: &Section<'_>) {
        self.require(section, "name", "name = \"live\"");
        self.require(
            section,
            "kind",
            "kind = \"broadcast\" or kind = \"on-demand\"",
        );
        self.require(
            section,
            "source",
            "source = \"push\" (broadcast) or source = \"media/file.ts\" (on-demand)",
        );
        self.require(section, "protocols", "protocols = [\"http\"]");
    }

    /// Pull options on a point that does not pull are mistakes.
    fn refuse_pull_keys(&mut self, section: &Section<'_>) {
        for key in PULL_KEYS {
            if section.table.contains_key(key) {
                let line = self.key_line(section.table, key, section.line);
                self.error(
                    line,
                    format!("`{key}` only applies to points that pull (source = \"http://…\", \"tcp://…\" or \"udp://…\"); remove it"),
                );
            }
        }
    }

    fn point_name(
        &mut self,
        section: &Section<'_>,
        first_line_by_name: &mut HashMap<String, usize>,
    ) -> Option<String> {
        let (name, line) = self.read_string(section, "name")?;
        if let Some(problem) = point_name_problem(name) {
            self.error(
                line,
                format!(
                    "invalid point name \"{name}\": {problem}; use 1 to {MAX_POINT_NAME_CHARS} characters from A-Z, a-z, 0-9, '_', '.', '-', not starting with '.'"
                ),
            );
            return None;
        }
        if let Some(first_line) = first_line_by_name.get(name) {
            self.error(
                line,
                format!(
                    "duplicate point name `{name}`: the first point with this name is on line {first_line}; rename one of them"
                ),
            );
            return None;
        }
        first_line_by_name.insert(name.to_string(), line);
        Some(name.to_string())
    }

    fn point_source(
        &mut self,
        section: &Section<'_>,
        kind: Option<PointKind>,
    ) -> Option<PointSource> {
        let (raw, line) = self.read_string(section, "source")?;
        match kind? {
            PointKind::Broadcast if raw == "push" => Some(PointSource::Push),
            PointKind::Broadcast if raw.contains("://") => match parse_pull_url(raw) {
                Ok(url) => Some(PointSource::Pull(self.pull_source(section, url))),
                Err(error) => {
                    self.error(line, error.to_string());
                    None
                }
            },
            PointKind::Broadcast => {
                self.error(
                    line,
                    format!(
                        "a broadcast point's `source` must be \"push\" (an encoder pushes the stream to ferrocast) or a URL to pull from (http://, tcp://, udp://), found \"{raw}\"; to serve files use kind = \"on-demand\""
                    ),
                );
                None
            }
            PointKind::OnDemand => self.on_demand_source(raw, line),
        }
    }

    /// The pull options of a point whose source is a URL.
    fn pull_source(&mut self, section: &Section<'_>, url: PullUrl) -> PullSource {
        let mode = match self.read_choice(section, "pull", PULL_MODES) {
            Some("on-demand") => PullMode::OnDemand,
            _ => PullMode::Always,
        };
        let millis = |compiler: &mut Self, key: &str, default: u64| {
            compiler
                .read_integer(section, key, PULL_MS_RANGE)
                .map_or(Duration::from_millis(default), |ms| {
                    Duration::from_millis(ms.unsigned_abs())
                })
        };
        let idle_timeout = millis(self, "pull_idle_timeout_ms", 10_000);
        let backoff_min = millis(self, "reconnect_min_ms", 500);
        let backoff_max = millis(self, "reconnect_max_ms", 30_000);
        if backoff_max < backoff_min {
            let line = self.key_line(section.table, "reconnect_max_ms", section.line);
            self.error(
                line,
                "`reconnect_max_ms` must not be below `reconnect_min_ms`",
            );
        }
        PullSource {
            url,
            mode,
            idle_timeout,
            backoff_min,
            backoff_max,
        }
    }

    fn on_demand_source(&mut self, raw: &str, line: usize) -> Option<PointSource> {
        if raw == "push" || raw.is_empty() {
            self.error(
                line,
                format!(
                    "an on-demand point's `source` must be a .ts file or a directory of .ts files (relative to {}), found \"{raw}\"; \"push\" is for kind = \"broadcast\"",
                    self.config_dir.display()
                ),
            );
            return None;
        }
        let resolved = self.resolve(raw);
        let note = self.resolution_note(raw);
        let metadata = match fs::metadata(&resolved) {
            Ok(metadata) => metadata,
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                self.error(
                    line,
                    format!(
                        "file not found: {}{note}; fix `source` or create the file",
                        resolved.display()
                    ),
                );
                return None;
            }
            Err(error) => {
                self.error(
                    line,
                    format!(
                        "cannot access {}: {error}{note}; check its permissions",
                        resolved.display()
                    ),
                );
                return None;
            }
        };
        if metadata.is_dir() {
            return Some(PointSource::Directory(canonical(resolved)));
        }
        if metadata.is_file() && has_ts_extension(&resolved) {
            return Some(PointSource::File(canonical(resolved)));
        }
        self.error(
            line,
            format!(
                "`source` must be a .ts file or a directory of .ts files, found {}{note}; MPEG-TS is the only on-demand format",
                resolved.display()
            ),
        );
        None
    }

    fn protocols(
        &mut self,
        section: &Section<'_>,
        plugins: &BTreeMap<String, PluginConfig>,
    ) -> Option<Vec<String>> {
        let entries = self.read_string_array(section, "protocols")?;
        if section
            .table
            .get("protocols")
            .and_then(Item::as_array)
            .is_some_and(|array| array.is_empty())
        {
            let line = self.key_line(section.table, "protocols", section.line);
            let message = format!(
                "`protocols` must list at least one plugin, e.g. protocols = [\"http\"]; {}",
                self.loaded_plugins_note()
            );
            self.error(line, message);
            return None;
        }
        let mut protocols: Vec<String> = Vec::with_capacity(entries.len());
        for (name, line) in entries {
            if name == crate::hls::PROTOCOL && !protocols.iter().any(|p| p == name) {
                self.hls_protocol_served(line, plugins);
                protocols.push(name.to_string());
                continue;
            }
            if self.protocol_entry_ok(name, line, &protocols) {
                self.warn_if_not_serving(section, name, line, plugins);
                protocols.push(name.to_string());
            }
        }
        Some(protocols)
    }

    /// A `protocols` entry names a loaded plugin, once.
    fn protocol_entry_ok(&mut self, name: &str, line: usize, listed: &[String]) -> bool {
        if !self.is_known_plugin(name) {
            let message = format!(
                "unknown plugin `{name}` in `protocols`; {}{}",
                self.loaded_plugins_note(),
                suggestion_suffix(name, &self.known_plugins)
            );
            self.error(line, message);
            return false;
        }
        if listed.iter().any(|other| other == name) {
            self.error(
                line,
                format!("`{name}` is listed twice in `protocols`; remove one"),
            );
            return false;
        }
        true
    }

    /// A protocol whose plugin is not enabled is allowed, so that a protocol can be switched
    /// off in one place, but worth a word: the point silently loses that protocol.
    fn warn_if_not_serving(
        &mut self,
        section: &Section<'_>,
        name: &str,
        line: usize,
        plugins: &BTreeMap<String, PluginConfig>,
    ) {
        match plugins.get(name) {
            None => self.warn(
                line,
                format!(
                    "{} lists protocol `{name}`, but there is no [plugins.{name}] table, so that plugin is not enabled and will not serve this point; add [plugins.{name}] to enable it",
                    section.label
                ),
            ),
            Some(plugin) if !plugin.enabled => self.warn(
                line,
                format!(
                    "{} lists protocol `{name}`, but plugin `{name}` is disabled (enabled = false in [plugins.{name}] on line {}), so it will not serve this point",
                    section.label, plugin.line
                ),
            ),
            Some(_) => {}
        }
    }

    /// A duration that only broadcast points have (they have an encoder to wait for): zero
    /// for on-demand points, where setting one is a mistake worth pointing out.
    /// `timeline`: a broadcast point's timestamps across source changes.
    fn timeline_mode(&mut self, section: &Section<'_>, kind: Option<PointKind>) -> TimelineMode {
        if kind == Some(PointKind::OnDemand) && section.table.contains_key("timeline") {
            let line = self.key_line(section.table, "timeline", section.line);
            self.error(
                line,
                "`timeline` only applies to broadcast points; remove it from this on-demand point",
            );
            return TimelineMode::default();
        }
        self.read_choice(section, "timeline", TIMELINE_MODES)
            .and_then(TimelineMode::parse)
            .unwrap_or_default()
    }

    /// `udp_join_rate`: how fast a late UDP joiner catches up, in multiples of the bitrate.
    fn udp_join_rate(&mut self, section: &Section<'_>, kind: Option<PointKind>) -> u32 {
        if kind == Some(PointKind::OnDemand) && section.table.contains_key("udp_join_rate") {
            let line = self.key_line(section.table, "udp_join_rate", section.line);
            self.error(
                line,
                "`udp_join_rate` only applies to broadcast points; remove it from this on-demand point",
            );
        }
        self.read_integer(section, "udp_join_rate", UDP_JOIN_RATE_RANGE)
            .map_or(DEFAULT_UDP_JOIN_RATE, |multiple| multiple as u32)
    }

    fn broadcast_duration(
        &mut self,
        section: &Section<'_>,
        kind: Option<PointKind>,
        key: &str,
        range: RangeInclusive<i64>,
        default: Duration,
    ) -> Duration {
        if kind == Some(PointKind::OnDemand) {
            if section.table.contains_key(key) {
                let line = self.key_line(section.table, key, section.line);
                self.error(
                    line,
                    format!("`{key}` only applies to broadcast points; remove it from this on-demand point"),
                );
            }
            return Duration::ZERO;
        }
        self.read_integer(section, key, range)
            .map_or(default, |ms| Duration::from_millis(ms.unsigned_abs()))
    }
}

/// Absolute directory of the config file, canonical when it exists so
/// messages and resolved paths don't carry `..` or symlinks.
fn config_dir(file: &Path) -> PathBuf {
    let dir = match file.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    fs::canonicalize(dir)
        .or_else(|_| std::path::absolute(dir))
        .unwrap_or_else(|_| dir.to_path_buf())
}

fn canonical(path: PathBuf) -> PathBuf {
    fs::canonicalize(&path).unwrap_or(path)
}

fn describe_io_error(error: &io::Error) -> String {
    if error.kind() == io::ErrorKind::NotFound {
        "not found".to_string()
    } else {
        error.to_string()
    }
}

fn has_ts_extension(path: &Path) -> bool {
    path.extension()
        .is_some_and(|extension| extension.eq_ignore_ascii_case("ts"))
}

fn wildcard_overlap(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port()
        && a.ip() != b.ip()
        && a.is_ipv4() == b.is_ipv4()
        && (a.ip().is_unspecified() || b.ip().is_unspecified())
}

/// A more specific reason for a common wrong listen address, ending in "; ".
fn listen_mistake(text: &str) -> &'static str {
    if text.parse::<u16>().is_ok() {
        return "a port alone is not enough; ";
    }
    if text.parse::<IpAddr>().is_ok() {
        return "the port is missing; ";
    }
    if let Some((host, port)) = text.rsplit_once(':') {
        if port.parse::<u16>().is_ok() && !host.starts_with('[') && host.parse::<IpAddr>().is_err()
        {
            return "host names are not resolved, give an IP address; ";
        }
    }
    ""
}

/// What is wrong with a point name, if anything.
fn point_name_problem(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("it is empty".to_string());
    }
    if name.chars().count() > MAX_POINT_NAME_CHARS {
        return Some(format!("it is {} characters long", name.chars().count()));
    }
    if name.starts_with('.') {
        return Some("it starts with '.'".to_string());
    }
    name.chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
        .map(|c| format!("it contains {c:?}"))
}

/// Line of the setting a plugin complained about. Plugins may name a nested
/// value (`tls.cert`, `routes[0]`) or quote the key, so fall back to the
/// top-level key those refer to.
fn setting_line(setting_lines: &[(String, usize)], issue_key: &str) -> Option<usize> {
    let find = |wanted: &str| {
        setting_lines
            .iter()
            .find(|(key, _)| key == wanted)
            .map(|&(_, line)| line)
    };
    let unquoted = issue_key.trim_matches(|c| c == '"' || c == '\'');
    let top_level = issue_key.split(['.', '[']).next().unwrap_or_default();
    find(issue_key)
        .or_else(|| find(unquoted))
        .or_else(|| find(top_level.trim_matches(|c| c == '"' || c == '\'')))
}

//! `ferrocast config show`: the effective configuration, every default filled in and every
//! path resolved, as a TOML file the server would accept.

use std::path::Path;

use toml_edit::{value, Array, ArrayOfTables, DocumentMut, InlineTable, Item, Table, Value};

use super::bounds::{
    HLS_MAX_MEMORY_MB, HLS_PART, HLS_TARGET_DURATION, HLS_WINDOW, RECORD_RETAIN, RECORD_SEGMENT,
};
use super::{Config, PointSource, PullMode};

/// The effective configuration as TOML. `control_socket` is the path the server will use.
pub fn effective_toml(config: &Config, control_socket: &Path) -> String {
    let mut document = DocumentMut::new();
    document.insert("server", Item::Table(server_table(config, control_socket)));
    if let Some(admin) = &config.admin {
        let mut table = Table::new();
        table.insert("listen", value(admin.listen.to_string()));
        table.insert("tokens", value(strings(admin.tokens.iter())));
        let allow = admin.metrics_allow.iter().map(ToString::to_string);
        table.insert("metrics_allow", value(strings(allow)));
        if let Some(tls) = &admin.tls {
            table.insert("tls", value(tls.as_str()));
        }
        document.insert("admin", Item::Table(table));
    }
    if let Some(log) = &config.access_log {
        let mut table = Table::new();
        table.insert("path", value(log.path.display().to_string()));
        table.insert("max_bytes", value(log.max_bytes as i64));
        table.insert("keep", value(i64::from(log.keep)));
        document.insert("access_log", Item::Table(table));
    }
    document.insert("hls", Item::Table(hls_table(&config.hls)));
    let mut plugins = Table::new();
    plugins.set_implicit(true);
    for plugin in config.plugins.values() {
        let mut table = Table::new();
        table.insert("enabled", value(plugin.enabled));
        table.insert("listen", value(listen_array(plugin)));
        // The plugin's own settings are TOML already, one key per line.
        if let Ok(settings) = plugin.settings.parse::<DocumentMut>() {
            for (key, item) in settings.iter() {
                table.insert(key, item.clone());
            }
        }
        plugins.insert(&plugin.name, Item::Table(table));
    }
    document.insert("plugins", Item::Table(plugins));
    if !config.tls.is_empty() {
        document.insert("tls", Item::Table(tls_tables(config)));
    }
    let mut points = ArrayOfTables::new();
    for point in &config.points {
        let mut table = point_table(point);
        if let Some(record) = config.recordings.get(&point.name) {
            table.insert("record", value(record_table(record)));
        }
        points.push(table);
    }
    document.insert("point", Item::ArrayOfTables(points));
    document.to_string()
}

fn hls_table(hls: &crate::hls::HlsSettings) -> Table {
    let mut table = Table::new();
    let target = HLS_TARGET_DURATION.shown(hls.target_duration);
    table.insert(HLS_TARGET_DURATION.name, value(target));
    table.insert(HLS_WINDOW.name, value(hls.window as i64));
    let part = HLS_PART.shown(hls.part_duration.unwrap_or_default());
    table.insert(HLS_PART.name, value(part));
    table.insert(HLS_MAX_MEMORY_MB.name, value((hls.max_bytes >> 20) as i64));
    table
}

fn server_table(config: &Config, control_socket: &Path) -> Table {
    let server = &config.server;
    let mut table = Table::new();
    if let Some(dir) = &server.plugin_dir {
        table.insert("plugin_dir", value(dir.display().to_string()));
    }
    table.insert("log_format", value(server.log_format.as_str()));
    table.insert("client_queue", value(server.client_queue as i64));
    table.insert("write_timeout_ms", value(millis(server.write_timeout)));
    table.insert(
        "control_socket",
        value(control_socket.display().to_string()),
    );
    table.insert(
        "shutdown_timeout_ms",
        value(millis(server.shutdown_timeout)),
    );
    table
}

fn point_table(point: &super::PointConfig) -> Table {
    let mut table = Table::new();
    table.insert("name", value(&point.name));
    table.insert("kind", value(point.kind.as_str()));
    let source = match &point.source {
        PointSource::Push => "push".to_owned(),
        PointSource::File(path) | PointSource::Directory(path) => path.display().to_string(),
        PointSource::Pull(pull) => pull.url.to_string(),
    };
    table.insert("source", value(source));
    table.insert("protocols", value(strings(point.protocols.iter())));
    if point.kind == super::PointKind::Broadcast {
        table.insert("reconnect_grace_ms", value(millis(point.reconnect_grace)));
        table.insert("source_timeout_ms", value(millis(point.source_timeout)));
        table.insert("timeline", value(point.timeline.as_str()));
        table.insert("udp_join_rate", value(i64::from(point.udp_join_rate)));
    }
    if let PointSource::Pull(pull) = &point.source {
        let mode = match pull.mode {
            PullMode::Always => "always",
            PullMode::OnDemand => "on-demand",
        };
        table.insert("pull", value(mode));
        table.insert("pull_idle_timeout_ms", value(millis(pull.idle_timeout)));
        table.insert("reconnect_min_ms", value(millis(pull.backoff_min)));
        table.insert("reconnect_max_ms", value(millis(pull.backoff_max)));
    }
    table
}

/// A point's `record`, durations in milliseconds (`"5400000ms"` reads back the same).
fn record_table(record: &crate::record::RecordSettings) -> InlineTable {
    let mut table = InlineTable::new();
    table.insert("dir", record.dir.display().to_string().into());
    table.insert(RECORD_SEGMENT.name, RECORD_SEGMENT.shown(record.segment));
    if let Some(retain) = record.retain {
        table.insert(RECORD_RETAIN.name, RECORD_RETAIN.shown(retain));
    }
    table
}

fn millis(duration: std::time::Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// `listen`, with TLS entries as `{ address = "...", tls = "name" }`.
fn listen_array(plugin: &super::PluginConfig) -> Array {
    plugin
        .listen
        .iter()
        .map(|address| match plugin.tls_listen.get(address) {
            Some(tls) => {
                let mut entry = InlineTable::new();
                entry.insert("address", address.to_string().into());
                entry.insert("tls", tls.as_str().into());
                Value::InlineTable(entry)
            }
            None => address.to_string().into(),
        })
        .collect()
}

/// The `[tls.<name>]` tables.
fn tls_tables(config: &Config) -> Table {
    let mut tables = Table::new();
    tables.set_implicit(true);
    for tls in config.tls.values() {
        let mut table = Table::new();
        let mut certs = tls.certs.iter();
        if let Some(default) = certs.next() {
            table.insert("cert", value(default.cert.display().to_string()));
            table.insert("key", value(default.key.display().to_string()));
        }
        let sni: Array = certs
            .map(|files| {
                let mut entry = InlineTable::new();
                entry.insert("cert", files.cert.display().to_string().into());
                entry.insert("key", files.key.display().to_string().into());
                Value::InlineTable(entry)
            })
            .collect();
        table.insert("sni", value(sni));
        table.insert(
            "handshake_timeout_ms",
            value(tls.handshake_timeout.as_millis() as i64),
        );
        tables.insert(&tls.name, Item::Table(table));
    }
    tables
}

fn strings<T: ToString>(items: impl Iterator<Item = T>) -> Array {
    items.map(|item| item.to_string()).collect()
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::{compile, PluginCatalog, SettingIssue};

    struct Http;

    impl PluginCatalog for Http {
        fn plugin_names(&self) -> Vec<String> {
            vec!["http".into()]
        }
        fn validate_settings(&self, _: &str, _: &str) -> Vec<SettingIssue> {
            Vec::new()
        }
    }

    #[test]
    fn the_effective_configuration_compiles_to_the_same_configuration() {
        let path = Path::new("/etc/ferrocast/ferrocast.toml");
        let text = r#"
[admin]
tls = "main"
[access_log]
path = "access.log"
[tls.main]
cert = "certs/main.pem"
key = "certs/main.key"
sni = [{ cert = "b.pem", key = "b.key" }]
[plugins.http]
listen = ["127.0.0.1:8080", { address = "127.0.0.1:8443", tls = "main" }]
max_header_bytes = 8192
[[point]]
name = "live"
kind = "broadcast"
source = "push"
protocols = ["http"]
record = { dir = "rec", segment = "1h30m", retain = "7d" }
[[point]]
name = "relay"
kind = "broadcast"
source = "http://example.net/live"
pull = "on-demand"
protocols = ["http"]
"#;
        let config = compile(path, text, &Http).unwrap();
        let shown = effective_toml(&config, Path::new("/run/ferrocast.sock"));
        assert!(shown.contains("write_timeout_ms = 20000"), "{shown}");
        assert!(shown.contains("listen = \"127.0.0.1:8081\""), "{shown}");
        assert!(
            shown.contains("path = \"/etc/ferrocast/access.log\""),
            "{shown}"
        );
        let again = compile(path, &shown, &Http).unwrap();
        let mut expected = config.clone();
        expected.server.control_socket = Some("/run/ferrocast.sock".into());
        assert_eq!(again.admin, expected.admin);
        assert_eq!(again.access_log, expected.access_log);
        assert_eq!(again.hls, expected.hls);
        assert_eq!(again.tls, expected.tls);
        assert_eq!(again.recordings, expected.recordings);
        assert_eq!(expected.recordings.len(), 1);
        assert_eq!(again.server, expected.server);
        // Lines differ between the two files; everything else must not.
        for plugin in expected.plugins.values_mut() {
            plugin.line = again.plugins[&plugin.name].line;
        }
        for point in &mut expected.points {
            point.line = again.point(&point.name).unwrap().line;
        }
        assert_eq!(again.plugins, expected.plugins);
        assert_eq!(again.points, expected.points);
    }
}

//! The diff of two compiled configurations: what a reload adds, changes and removes, for
//! plugins, listeners and points. Pure data, so it can be logged before anything is touched
//! and tested without a server.

use std::collections::BTreeSet;
use std::fmt;
use std::net::SocketAddr;

use crate::config::{Config, PointConfig};

/// What a reload changes, in the order it is applied.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReloadPlan {
    pub plugins: Vec<PluginChange>,
    pub listeners: Vec<ListenerChange>,
    pub points: Vec<PointChange>,
    /// `[server]` keys that change and take effect now.
    pub server: Vec<String>,
    /// `[server]` keys that change but only take effect after a restart.
    pub needs_restart: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PluginChange {
    Enable(String),
    Disable(String),
    /// Same plugin, new settings: a new instance takes new sessions.
    Settings(String),
}

/// Addresses a plugin starts and stops listening on. New ones are bound before old ones
/// are released.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerChange {
    pub plugin: String,
    pub bind: Vec<SocketAddr>,
    pub release: Vec<SocketAddr>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PointChange {
    Add(String),
    Remove(String),
    Change {
        name: String,
        protocols_added: Vec<String>,
        protocols_removed: Vec<String>,
        /// The source (push, pull URL, file or directory) changes; clients stay attached.
        source: bool,
        /// The kind changes (broadcast ⇄ on-demand): the point is replaced, its sessions end.
        kind: bool,
        /// Grace or source timeout changes.
        timing: bool,
    },
}

impl ReloadPlan {
    pub fn is_empty(&self) -> bool {
        self.plugins.is_empty()
            && self.listeners.is_empty()
            && self.points.is_empty()
            && self.server.is_empty()
            && self.needs_restart.is_empty()
    }
}

/// Diff `old` (running) against `new` (just compiled).
pub fn plan(old: &Config, new: &Config) -> ReloadPlan {
    let mut plan = ReloadPlan::default();
    plan_plugins(old, new, &mut plan);
    plan_points(old, new, &mut plan);
    plan_server(old, new, &mut plan);
    plan_access(old, new, &mut plan);
    if old.recordings != new.recordings {
        plan.server
            .push("recording (a point's `record`; restarts that point's recorder)".into());
    }
    if old.hls != new.hls {
        plan.server
            .push("HLS segmenting ([hls]; from each point's next segment)".into());
    }
    plan
}

/// Access rules (`[security]`, a point's `publish` or `play`) apply to new requests at once.
fn plan_access(old: &Config, new: &Config, plan: &mut ReloadPlan) {
    let policy = crate::access::AccessPolicy::from_config;
    if policy(old) != policy(new) {
        plan.server
            .push("access rules (new requests use them)".into());
    }
}

/// Plugins enabled, disabled or given new settings, and the listen addresses that change.
fn plan_plugins(old: &Config, new: &Config, plan: &mut ReloadPlan) {
    let names: BTreeSet<&String> = old.plugins.keys().chain(new.plugins.keys()).collect();
    for name in names {
        let before = old.plugins.get(name).filter(|p| p.enabled);
        let after = new.plugins.get(name).filter(|p| p.enabled);
        let (old_listen, new_listen) = match (before, after) {
            (None, Some(plugin)) => {
                plan.plugins.push(PluginChange::Enable(name.clone()));
                (Vec::new(), plugin.listen.clone())
            }
            (Some(plugin), None) => {
                plan.plugins.push(PluginChange::Disable(name.clone()));
                (plugin.listen.clone(), Vec::new())
            }
            (Some(before), Some(after)) => {
                if before.settings != after.settings {
                    plan.plugins.push(PluginChange::Settings(name.clone()));
                }
                (before.listen.clone(), after.listen.clone())
            }
            (None, None) => continue,
        };
        let change = ListenerChange {
            plugin: name.clone(),
            bind: missing_from(&new_listen, &old_listen),
            release: missing_from(&old_listen, &new_listen),
        };
        if !change.bind.is_empty() || !change.release.is_empty() {
            plan.listeners.push(change);
        }
    }
}

/// The items of `these` that `others` does not have, in order.
fn missing_from<T: PartialEq + Clone>(these: &[T], others: &[T]) -> Vec<T> {
    these
        .iter()
        .filter(|item| !others.contains(item))
        .cloned()
        .collect()
}

/// Points removed, added or changed.
fn plan_points(old: &Config, new: &Config, plan: &mut ReloadPlan) {
    for point in &old.points {
        if new.point(&point.name).is_none() {
            plan.points.push(PointChange::Remove(point.name.clone()));
        }
    }
    for point in &new.points {
        match old.point(&point.name) {
            None => plan.points.push(PointChange::Add(point.name.clone())),
            Some(before) => {
                if let Some(change) = point_change(before, point) {
                    plan.points.push(change);
                }
                if before.limits != point.limits {
                    // Applied with the new point table: the next play request sees them.
                    plan.server
                        .push(format!("point `{}` max_clients/max_bandwidth", point.name));
                }
            }
        }
    }
}

/// `[server]` keys that change now, and those that need a restart.
fn plan_server(old: &Config, new: &Config, plan: &mut ReloadPlan) {
    let (a, b) = (&old.server, &new.server);
    if a.write_timeout != b.write_timeout {
        plan.server.push(format!(
            "write_timeout_ms {} → {}",
            a.write_timeout.as_millis(),
            b.write_timeout.as_millis()
        ));
    }
    if old.limits != new.limits {
        plan.server
            .push("[limits] (new connections use them at once)".into());
    }
    if a.client_queue != b.client_queue {
        plan.needs_restart.push(format!(
            "client_queue {} → {} (new points use it at once)",
            a.client_queue, b.client_queue
        ));
    }
    if a.plugin_dir != b.plugin_dir {
        plan.needs_restart.push("plugin_dir".into());
    }
    if a.log_format != b.log_format {
        plan.needs_restart.push("log_format".into());
    }
    if a.control_socket != b.control_socket {
        plan.needs_restart.push("control_socket".into());
    }
}

fn point_change(before: &PointConfig, after: &PointConfig) -> Option<PointChange> {
    let protocols_added = missing_from(&after.protocols, &before.protocols);
    let protocols_removed = missing_from(&before.protocols, &after.protocols);
    let source = before.source != after.source;
    let kind = before.kind != after.kind;
    let timing = before.reconnect_grace != after.reconnect_grace
        || before.source_timeout != after.source_timeout
        || before.timeline != after.timeline
        || before.udp_join_rate != after.udp_join_rate;
    if protocols_added.is_empty() && protocols_removed.is_empty() && !source && !kind && !timing {
        return None;
    }
    Some(PointChange::Change {
        name: after.name.clone(),
        protocols_added,
        protocols_removed,
        source,
        kind,
        timing,
    })
}

impl fmt::Display for ReloadPlan {
    /// One line: `plugins: +rtsp -example ~udp(settings); listeners: http +127.0.0.1:8081 -…`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("no changes");
        }
        let mut parts = Vec::new();
        if !self.plugins.is_empty() {
            parts.push(format!("plugins: {}", joined(&self.plugins, " ")));
        }
        if !self.listeners.is_empty() {
            parts.push(format!("listeners: {}", joined(&self.listeners, ", ")));
        }
        if !self.points.is_empty() {
            parts.push(format!("points: {}", joined(&self.points, " ")));
        }
        if !self.server.is_empty() {
            parts.push(format!("server: {}", self.server.join(", ")));
        }
        if !self.needs_restart.is_empty() {
            parts.push(format!(
                "after a restart only: {}",
                self.needs_restart.join(", ")
            ));
        }
        f.write_str(&parts.join("; "))
    }
}

fn joined<T: fmt::Display>(items: &[T], separator: &str) -> String {
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(separator)
}

impl fmt::Display for PluginChange {
    /// `+name`, `-name` or `~name(settings)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Enable(name) => write!(f, "+{name}"),
            Self::Disable(name) => write!(f, "-{name}"),
            Self::Settings(name) => write!(f, "~{name}(settings)"),
        }
    }
}

impl fmt::Display for ListenerChange {
    /// `plugin +bound -released`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.plugin)?;
        for address in &self.bind {
            write!(f, " +{address}")?;
        }
        for address in &self.release {
            write!(f, " -{address}")?;
        }
        Ok(())
    }
}

impl fmt::Display for PointChange {
    /// `+name`, `-name` or `~name(+protocol -protocol source timing)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (name, protocols_added, protocols_removed, source, kind, timing) = match self {
            Self::Add(name) => return write!(f, "+{name}"),
            Self::Remove(name) => return write!(f, "-{name}"),
            Self::Change {
                name,
                protocols_added,
                protocols_removed,
                source,
                kind,
                timing,
            } => (
                name,
                protocols_added,
                protocols_removed,
                source,
                kind,
                timing,
            ),
        };
        let mut what: Vec<String> = Vec::new();
        what.extend(protocols_added.iter().map(|p| format!("+{p}")));
        what.extend(protocols_removed.iter().map(|p| format!("-{p}")));
        if *kind {
            what.push("kind (replaced)".into());
        } else if *source {
            what.push("source".into());
        }
        if *timing {
            what.push("timing".into());
        }
        write!(f, "~{name}({})", what.join(" "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{PluginCatalog, SettingIssue};
    use std::path::Path;

    struct Catalog;
    impl PluginCatalog for Catalog {
        fn plugin_names(&self) -> Vec<String> {
            ["http", "rtsp", "tcp", "udp"].map(String::from).to_vec()
        }
        fn validate_settings(&self, _: &str, _: &str) -> Vec<SettingIssue> {
            Vec::new()
        }
    }

    fn compile(text: &str) -> Config {
        crate::config::compile(Path::new("/tmp/ferrocast.toml"), text, &Catalog).unwrap()
    }

    const BASE: &str = r#"
[plugins.http]
listen = ["127.0.0.1:8080"]
[plugins.rtsp]
listen = ["127.0.0.1:8554"]
[plugins.udp]
[[point]]
name = "live"
kind = "broadcast"
source = "push"
protocols = ["http", "rtsp", "udp"]
[[point]]
name = "other"
kind = "broadcast"
source = "push"
protocols = ["http"]
"#;

    #[test]
    fn identical_configs_plan_nothing() {
        let plan = plan(&compile(BASE), &compile(BASE));
        assert!(plan.is_empty(), "{plan:?}");
        assert_eq!(plan.to_string(), "no changes");
    }

    #[test]
    fn protocol_removed_from_a_point() {
        let new = BASE.replace(
            r#"protocols = ["http", "rtsp", "udp"]"#,
            r#"protocols = ["http", "rtsp"]"#,
        );
        let plan = plan(&compile(BASE), &compile(&new));
        assert_eq!(
            plan.points,
            vec![PointChange::Change {
                name: "live".into(),
                protocols_added: vec![],
                protocols_removed: vec!["udp".into()],
                source: false,
                kind: false,
                timing: false,
            }]
        );
        assert_eq!(plan.to_string(), "points: ~live(-udp)");
    }

    #[test]
    fn listener_moves_bind_new_and_release_old() {
        let new = BASE.replace("127.0.0.1:8080", "127.0.0.1:8081");
        let plan = plan(&compile(BASE), &compile(&new));
        assert_eq!(
            plan.listeners,
            vec![ListenerChange {
                plugin: "http".into(),
                bind: vec!["127.0.0.1:8081".parse().unwrap()],
                release: vec!["127.0.0.1:8080".parse().unwrap()],
            }]
        );
        assert!(plan.plugins.is_empty());
    }

    #[test]
    fn disabling_a_plugin_releases_its_listeners() {
        let new = BASE.replace("[plugins.rtsp]\n", "[plugins.rtsp]\nenabled = false\n");
        let plan = plan(&compile(BASE), &compile(&new));
        assert_eq!(plan.plugins, vec![PluginChange::Disable("rtsp".into())]);
        assert_eq!(plan.listeners[0].release.len(), 1);
        assert!(plan.listeners[0].bind.is_empty());
    }

    #[test]
    fn points_added_removed_and_sources_changed() {
        let new = BASE
            .replace("name = \"other\"", "name = \"third\"")
            .replace(
                "source = \"push\"\nprotocols = [\"http\", \"rtsp\", \"udp\"]",
                "source = \"http://127.0.0.1:9/x\"\nprotocols = [\"http\", \"rtsp\", \"udp\"]",
            );
        let plan = plan(&compile(BASE), &compile(&new));
        assert!(plan.points.contains(&PointChange::Remove("other".into())));
        assert!(plan.points.contains(&PointChange::Add("third".into())));
        assert!(plan.points.iter().any(
            |c| matches!(c, PointChange::Change { name, source: true, kind: false, .. } if name == "live")
        ));
    }

    #[test]
    fn settings_change_is_a_plugin_change() {
        let new = BASE.replace(
            "[plugins.rtsp]\n",
            "[plugins.rtsp]\nsession_timeout_ms = 30000\n",
        );
        let plan = plan(&compile(BASE), &compile(&new));
        assert_eq!(plan.plugins, vec![PluginChange::Settings("rtsp".into())]);
        assert!(plan.listeners.is_empty());
    }

    #[test]
    fn a_timeline_change_is_applied_to_the_running_point() {
        let new = BASE.replacen(
            "source = \"push\"\n",
            "source = \"push\"\ntimeline = \"source\"\n",
            1,
        );
        let plan = plan(&compile(BASE), &compile(&new));
        assert!(plan.points.iter().any(|c| matches!(
            c,
            PointChange::Change {
                timing: true,
                source: false,
                ..
            }
        )));
        assert!(plan.needs_restart.is_empty());
    }
}

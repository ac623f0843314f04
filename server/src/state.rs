//! Server-wide running state: what every connection consults and a reload swaps.
//!
//! The point table and the plugin table sit behind `arc-swap`, so a reload replaces them whole
//! while connections keep the plugin instance and point media they started with. The drain
//! sets and the change epoch live here too: a session reads them at each request, and
//! re-checks what it uses when the epoch moves.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use arc_swap::ArcSwap;
use ferrocast_plugin_api::host::PluginInstance;
use tokio::sync::watch;

use crate::limits::ConnectionGate;
use crate::plugins::Generation;
use crate::points::PointRegistry;
use crate::reload::control::DrainTarget;

/// The enabled plugins, by name.
pub type PluginTable = BTreeMap<String, Arc<ServingPlugin>>;

/// State shared by every connection. A reload swaps the point and plugin tables whole: a
/// session reads the current tables at each request, and keeps the plugin instance and
/// point media it started with.
pub struct Shared {
    pub points: ArcSwap<PointRegistry>,
    /// Every enabled plugin, by name (transport plugins are consulted by control sessions).
    pub plugins: ArcSwap<PluginTable>,
    write_timeout_ms: AtomicU64,
    /// Connection limits, their counts and the refusal counters (`[limits]`).
    pub gate: Arc<ConnectionGate>,
    drains: Mutex<Drains>,
    /// Bumped after every reload; each session then checks that what it uses still exists.
    changes: watch::Sender<u64>,
    next_session: AtomicU64,
    /// Who may publish and play; a reload swaps its rules.
    pub access: crate::access::AccessControl,
    /// Every live client connection, for the admin API's session list and kicks.
    pub sessions: SessionTable,
    /// The counters and gauges each plugin published, by plugin name (kept across reloads
    /// and generations).
    plugin_counters: Mutex<BTreeMap<String, Arc<PluginCounters>>>,
    /// The HLS packagers of broadcast points with `hls`, kept in step with the point table.
    pub hls: crate::hls::Packagers,
    /// The TLS certificate sets and which listener uses which; a reload swaps them.
    pub tls: Arc<crate::tls::TlsRegistry>,
    /// The open HTTP tunnels (RTSP over HTTP), by cookie.
    pub tunnels: crate::tunnels::TunnelTable,
    /// The recorders of broadcast points with `record`, kept in step with the point table.
    pub recorders: crate::record::Recorders,
}

/// Points and plugins an operator put into the drain state: they take no new sessions.
#[derive(Default, Clone, Debug)]
pub struct Drains {
    pub points: BTreeSet<String>,
    pub plugins: BTreeSet<String>,
}

impl Shared {
    pub fn new(points: PointRegistry, write_timeout: Duration, plugins: PluginTable) -> Self {
        Self {
            points: ArcSwap::from_pointee(points),
            plugins: ArcSwap::from_pointee(plugins),
            write_timeout_ms: AtomicU64::new(write_timeout.as_millis() as u64),
            gate: Arc::default(),
            drains: Mutex::default(),
            changes: watch::Sender::new(0),
            next_session: AtomicU64::new(1),
            access: crate::access::AccessControl::default(),
            sessions: SessionTable::default(),
            plugin_counters: Mutex::default(),
            hls: crate::hls::Packagers::default(),
            tls: Arc::default(),
            tunnels: crate::tunnels::TunnelTable::default(),
            recorders: crate::record::Recorders::default(),
        }
    }

    /// Ask a session to end the way its protocol ends a stream; false if there is no such
    /// session. Sessions look at their kick flag when woken by a change announcement.
    pub fn kick_session(&self, id: u64) -> bool {
        let kicked = self.sessions.mark_kicked(id);
        if kicked {
            self.announce_change();
        }
        kicked
    }

    pub fn new_session_id(&self) -> u64 {
        self.next_session.fetch_add(1, Ordering::Relaxed)
    }

    pub fn write_timeout(&self) -> Duration {
        Duration::from_millis(self.write_timeout_ms.load(Ordering::Relaxed))
    }

    pub fn set_write_timeout(&self, timeout: Duration) {
        self.write_timeout_ms
            .store(timeout.as_millis() as u64, Ordering::Relaxed);
    }

    /// Tell every session that the tables changed.
    pub fn announce_change(&self) {
        self.changes.send_modify(|epoch| *epoch += 1);
    }

    pub(crate) fn subscribe_changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    fn lock_drains(&self) -> MutexGuard<'_, Drains> {
        self.drains
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    pub fn drains(&self) -> Drains {
        self.lock_drains().clone()
    }

    /// Put a point or a plugin into the drain state, or take it out. Returns whether the
    /// state changed.
    pub fn set_drain(&self, target: DrainTarget, name: &str, draining: bool) -> bool {
        let mut drains = self.lock_drains();
        let set = match target {
            DrainTarget::Plugin => &mut drains.plugins,
            DrainTarget::Point => &mut drains.points,
        };
        if draining {
            set.insert(name.to_owned())
        } else {
            set.remove(name)
        }
    }

    pub(crate) fn point_draining(&self, name: &str) -> bool {
        self.lock_drains().points.contains(name)
    }

    pub(crate) fn plugin_draining(&self, name: &str) -> bool {
        self.lock_drains().plugins.contains(name)
    }

    /// The counters of `plugin`, for a connection to keep (one lock per connection, none per
    /// count).
    pub fn counters_of(&self, plugin: &str) -> Arc<PluginCounters> {
        let mut all = self
            .plugin_counters
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        Arc::clone(all.entry(plugin.to_owned()).or_default())
    }

    /// Every plugin's counters, by plugin name.
    pub fn all_plugin_counters(&self) -> Vec<(String, Arc<PluginCounters>)> {
        let all = self
            .plugin_counters
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        all.iter()
            .map(|(plugin, counters)| (plugin.clone(), Arc::clone(counters)))
            .collect()
    }
}

/// Most counters plus gauges one plugin may publish; later names are ignored, so a plugin
/// that makes names up (from request data, say) cannot grow the server without bound.
pub const MAX_PLUGIN_METRICS: usize = 256;
/// Longest counter or gauge name.
pub const MAX_METRIC_NAME: usize = 64;

type Metrics<T> = ArcSwap<BTreeMap<String, Arc<T>>>;
/// A plugin's counters and gauges with their values at one moment, by name.
pub type CountersSnapshot = (Vec<(String, u64)>, Vec<(String, i64)>);

/// The named counters and gauges one plugin publishes. Counting a known name is one atomic
/// add on a map read without a lock; only the first use of a name copies the map.
#[derive(Default)]
pub struct PluginCounters {
    counters: Metrics<AtomicU64>,
    gauges: Metrics<AtomicI64>,
    /// Serialises the creation of names, so that two sessions adding at once lose neither.
    adding: Mutex<()>,
}

impl PluginCounters {
    pub fn count(&self, name: &str, delta: u64) {
        if let Some(counter) = self.metric(&self.counters, name) {
            counter.fetch_add(delta, Ordering::Relaxed);
        }
    }

    pub fn gauge(&self, name: &str, value: i64) {
        if let Some(gauge) = self.metric(&self.gauges, name) {
            gauge.store(value, Ordering::Relaxed);
        }
    }

    /// Counters and gauges with their values, by name.
    pub fn snapshot(&self) -> CountersSnapshot {
        let counters = self.counters.load();
        let gauges = self.gauges.load();
        (
            counters
                .iter()
                .map(|(name, value)| (name.clone(), value.load(Ordering::Relaxed)))
                .collect(),
            gauges
                .iter()
                .map(|(name, value)| (name.clone(), value.load(Ordering::Relaxed)))
                .collect(),
        )
    }

    /// The metric `name` in `map`, created at its default on first use; `None` for an
    /// unusable name (empty, too long, not printable ASCII) or beyond the limit.
    fn metric<T: Default>(&self, map: &Metrics<T>, name: &str) -> Option<Arc<T>> {
        if let Some(found) = map.load().get(name) {
            return Some(Arc::clone(found));
        }
        let usable = !name.is_empty()
            && name.len() <= MAX_METRIC_NAME
            && name.bytes().all(|b| b.is_ascii_graphic());
        if !usable {
            return None;
        }
        let _adding = self.adding.lock().unwrap_or_else(|p| p.into_inner());
        let current = map.load_full();
        if let Some(found) = current.get(name) {
            return Some(Arc::clone(found));
        }
        if self.counters.load().len() + self.gauges.load().len() >= MAX_PLUGIN_METRICS {
            return None;
        }
        let metric = Arc::new(T::default());
        let mut grown = (*current).clone();
        grown.insert(name.to_owned(), Arc::clone(&metric));
        map.store(Arc::new(grown));
        Some(metric)
    }
}

/// A configured plugin instance that serves connections, on one generation of its library.
pub struct ServingPlugin {
    pub name: String,
    pub generation: Arc<Generation>,
    pub instance: PluginInstance,
    /// The settings it was created with, to tell whether a reload changes them.
    pub settings: String,
}

impl ServingPlugin {
    pub fn new(generation: Arc<Generation>, instance: PluginInstance, settings: &str) -> Arc<Self> {
        Arc::new(Self {
            name: generation.plugin.clone(),
            generation,
            instance,
            settings: settings.to_owned(),
        })
    }
}

/// Bytes a session's socket has taken so far. The connection adds after each write (one
/// relaxed atomic add, no lock); the admin API reads it while the session plays.
#[derive(Debug, Clone, Default)]
pub struct SentBytes(Arc<AtomicU64>);

impl SentBytes {
    pub fn add(&self, bytes: u64) {
        self.0.fetch_add(bytes, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A client connection as the admin API lists it.
#[derive(Debug, Clone)]
pub struct SessionEntry {
    pub id: u64,
    pub plugin: String,
    pub peer: std::net::SocketAddr,
    pub started: std::time::SystemTime,
    /// The point it plays or publishes, once it has asked for one.
    pub point: Option<String>,
    /// An operator asked for this session to end.
    pub kicked: bool,
    /// The transport plugins its media goes out through (an RTSP session's `udp` or `tcp`).
    pub transports: Vec<String>,
    /// What it has sent so far, counted by its connection.
    pub sent: SentBytes,
}

impl SessionEntry {
    /// Whether the session counts under `plugin`: its control plugin or one of its
    /// transport plugins.
    pub fn uses_plugin(&self, plugin: &str) -> bool {
        self.plugin == plugin || self.transports.iter().any(|t| t == plugin)
    }
}

/// The live client connections, by session id. Touched when a connection opens, names its
/// point, and closes, and by the admin API: never per packet.
///
/// It also keeps the bytes of the sessions that ended, by point and control plugin, so that
/// [`Self::sent_by_point`] adds those and the live sessions' counts under one lock: a
/// session's bytes pass from the live count to the ended one at once, and the total never
/// steps back.
#[derive(Default)]
pub struct SessionTable {
    inner: Mutex<Sessions>,
}

#[derive(Default)]
struct Sessions {
    live: BTreeMap<u64, Listed>,
    /// Bytes sent by sessions that ended or moved to another point, by (point, plugin).
    ended_sent: BTreeMap<(String, String), u64>,
}

struct Listed {
    entry: SessionEntry,
    /// Bytes of this session already counted in `ended_sent` under an earlier point.
    counted: u64,
}

impl Listed {
    /// Move what the session sent under its current point, beyond what was counted, into
    /// `ended_sent`.
    fn settle(&mut self, ended_sent: &mut BTreeMap<(String, String), u64>) {
        let Some(point) = &self.entry.point else {
            return;
        };
        let sent = self.entry.sent.get();
        let key = (point.clone(), self.entry.plugin.clone());
        *ended_sent.entry(key).or_default() += sent.saturating_sub(self.counted);
        self.counted = sent;
    }
}

impl SessionTable {
    fn lock(&self) -> MutexGuard<'_, Sessions> {
        self.inner
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// Add a session; it stays listed until the returned guard is dropped.
    pub fn register(&self, entry: SessionEntry) -> SessionRegistration<'_> {
        let id = entry.id;
        self.lock().live.insert(id, Listed { entry, counted: 0 });
        SessionRegistration { table: self, id }
    }

    pub fn set_point(&self, id: u64, point: &str) {
        let mut sessions = self.lock();
        let Sessions { live, ended_sent } = &mut *sessions;
        if let Some(listed) = live.get_mut(&id) {
            if listed.entry.point.as_deref() != Some(point) {
                // What it sent for its previous point stays counted there.
                listed.settle(ended_sent);
                listed.entry.point = Some(point.to_owned());
            }
        }
    }

    /// The transport plugins the session's media now goes out through.
    pub fn set_transports(&self, id: u64, plugins: Vec<String>) {
        if let Some(listed) = self.lock().live.get_mut(&id) {
            listed.entry.transports = plugins;
        }
    }

    pub fn mark_kicked(&self, id: u64) -> bool {
        match self.lock().live.get_mut(&id) {
            Some(listed) => {
                listed.entry.kicked = true;
                true
            }
            None => false,
        }
    }

    /// The point the session named, if any.
    pub fn point(&self, id: u64) -> Option<String> {
        self.lock()
            .live
            .get(&id)
            .and_then(|listed| listed.entry.point.clone())
    }

    pub fn is_kicked(&self, id: u64) -> bool {
        self.lock()
            .live
            .get(&id)
            .is_some_and(|listed| listed.entry.kicked)
    }

    /// Every session, by id.
    pub fn list(&self) -> Vec<SessionEntry> {
        self.lock()
            .live
            .values()
            .map(|listed| listed.entry.clone())
            .collect()
    }

    /// Bytes sent since start by (point, control plugin): the sessions that ended and, as
    /// far as their sockets took them, the live ones. Read at scrape time, so a write costs
    /// nothing more than the connection's own count.
    pub fn sent_by_point(&self) -> BTreeMap<(String, String), u64> {
        let sessions = self.lock();
        let mut sent = sessions.ended_sent.clone();
        for listed in sessions.live.values() {
            if let Some(point) = &listed.entry.point {
                let key = (point.clone(), listed.entry.plugin.clone());
                let live = listed.entry.sent.get().saturating_sub(listed.counted);
                *sent.entry(key).or_default() += live;
            }
        }
        sent
    }
}

/// Keeps a session listed in its [`SessionTable`] while it lives.
pub struct SessionRegistration<'t> {
    table: &'t SessionTable,
    id: u64,
}

impl Drop for SessionRegistration<'_> {
    fn drop(&mut self) {
        let mut sessions = self.table.lock();
        let Sessions { live, ended_sent } = &mut *sessions;
        if let Some(mut listed) = live.remove(&self.id) {
            listed.settle(ended_sent);
        }
    }
}

#[cfg(test)]
mod session_table_tests {
    use super::*;

    fn entry(id: u64) -> SessionEntry {
        SessionEntry {
            id,
            plugin: "http".into(),
            peer: "127.0.0.1:5000".parse().unwrap(),
            started: std::time::SystemTime::UNIX_EPOCH,
            point: None,
            kicked: false,
            transports: Vec::new(),
            sent: SentBytes::default(),
        }
    }

    #[test]
    fn a_session_counts_under_its_control_and_transport_plugins() {
        let table = SessionTable::default();
        let _registration = table.register(SessionEntry {
            plugin: "rtsp".into(),
            ..entry(3)
        });
        table.set_transports(3, vec!["udp".into()]);
        let listed = &table.list()[0];
        assert!(listed.uses_plugin("rtsp") && listed.uses_plugin("udp"));
        assert!(!listed.uses_plugin("tcp"));
    }

    #[test]
    fn a_session_is_listed_while_its_registration_lives() {
        let table = SessionTable::default();
        let registration = table.register(entry(7));
        table.set_point(7, "live");
        assert_eq!(table.list()[0].point.as_deref(), Some("live"));
        drop(registration);
        assert!(table.list().is_empty());
    }

    #[test]
    fn the_listed_byte_count_is_the_connections_own() {
        let table = SessionTable::default();
        let listed = entry(9);
        let counted = listed.sent.clone();
        let _registration = table.register(listed);
        counted.add(188);
        counted.add(376);
        assert_eq!(table.list()[0].sent.get(), 564);
    }

    #[test]
    fn sent_bytes_by_point_include_live_sessions_and_never_step_back() {
        let table = SessionTable::default();
        let total = |table: &SessionTable| table.sent_by_point();
        let key = |point: &str| (point.to_owned(), "http".to_owned());
        let first = entry(1);
        let first_sent = first.sent.clone();
        let first_registration = table.register(first);
        first_sent.add(100);
        // Nothing is counted before the session names its point.
        assert!(total(&table).is_empty());
        table.set_point(1, "live");
        assert_eq!(total(&table)[&key("live")], 100);
        first_sent.add(50);
        assert_eq!(total(&table)[&key("live")], 150, "counted while it plays");

        let second = entry(2);
        let second_sent = second.sent.clone();
        let _second_registration = table.register(second);
        table.set_point(2, "live");
        second_sent.add(10);
        assert_eq!(total(&table)[&key("live")], 160);
        drop(first_registration);
        assert_eq!(total(&table)[&key("live")], 160, "an end changes no total");
        assert_eq!(table.list().len(), 1);

        // A session moving to another point leaves what it sent for the first one there.
        table.set_point(2, "vod");
        second_sent.add(5);
        let moved = total(&table);
        assert_eq!((moved[&key("live")], moved[&key("vod")]), (160, 5));
        table.set_point(2, "vod");
        assert_eq!(total(&table)[&key("vod")], 5, "naming the same point again");
    }

    #[test]
    fn only_a_listed_session_can_be_kicked() {
        let table = SessionTable::default();
        let _registration = table.register(entry(3));
        assert!(!table.mark_kicked(4));
        assert!(!table.is_kicked(3));
        assert!(table.mark_kicked(3));
        assert!(table.is_kicked(3));
    }
}

#[cfg(test)]
mod counter_tests {
    use super::*;

    #[test]
    fn counters_add_up_and_gauges_keep_the_last_value() {
        let counters = PluginCounters::default();
        counters.count("responses_200", 1);
        counters.count("responses_200", 2);
        counters.count("responses_404", 1);
        counters.gauge("open", 5);
        counters.gauge("open", -2);
        let (counted, gauged) = counters.snapshot();
        assert_eq!(
            counted,
            [
                ("responses_200".to_owned(), 3),
                ("responses_404".to_owned(), 1)
            ]
        );
        assert_eq!(gauged, [("open".to_owned(), -2)]);
    }

    #[test]
    fn unusable_names_and_names_past_the_limit_are_ignored() {
        let counters = PluginCounters::default();
        for name in [
            "",
            "two words",
            "line\nbreak",
            &"x".repeat(MAX_METRIC_NAME + 1),
        ] {
            counters.count(name, 1);
        }
        assert!(counters.snapshot().0.is_empty());
        for i in 0..MAX_PLUGIN_METRICS + 10 {
            counters.count(&format!("c{i}"), 1);
        }
        counters.gauge("late", 1);
        let (counted, gauged) = counters.snapshot();
        assert_eq!(counted.len(), MAX_PLUGIN_METRICS);
        assert!(gauged.is_empty());
        counters.count("c0", 1);
        assert_eq!(
            counters.snapshot().0[0],
            ("c0".to_owned(), 2),
            "known names still count"
        );
    }
}

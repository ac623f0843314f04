//! Server-wide running state: what every connection consults and a reload swaps.
//!
//! The point table and the plugin table sit behind `arc-swap`, so a reload replaces them whole
//! while connections keep the plugin instance and point media they started with. The drain
//! sets and the change epoch live here too: a session reads them at each request, and
//! re-checks what it uses when the epoch moves.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
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

/// A client connection as the admin API lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionEntry {
    pub id: u64,
    pub plugin: String,
    pub peer: std::net::SocketAddr,
    pub started: std::time::SystemTime,
    /// The point it plays or publishes, once it has asked for one.
    pub point: Option<String>,
    /// An operator asked for this session to end.
    pub kicked: bool,
}

/// The live client connections, by session id. Touched when a connection opens, names its
/// point, and closes, and by the admin API: never per packet.
#[derive(Default)]
pub struct SessionTable {
    entries: Mutex<BTreeMap<u64, SessionEntry>>,
}

impl SessionTable {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<u64, SessionEntry>> {
        self.entries
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// Add a session; it stays listed until the returned guard is dropped.
    pub fn register(&self, entry: SessionEntry) -> SessionRegistration<'_> {
        let id = entry.id;
        self.lock().insert(id, entry);
        SessionRegistration { table: self, id }
    }

    pub fn set_point(&self, id: u64, point: &str) {
        if let Some(entry) = self.lock().get_mut(&id) {
            entry.point = Some(point.to_owned());
        }
    }

    pub fn mark_kicked(&self, id: u64) -> bool {
        match self.lock().get_mut(&id) {
            Some(entry) => {
                entry.kicked = true;
                true
            }
            None => false,
        }
    }

    /// The point the session named, if any.
    pub fn point(&self, id: u64) -> Option<String> {
        self.lock().get(&id).and_then(|entry| entry.point.clone())
    }

    pub fn is_kicked(&self, id: u64) -> bool {
        self.lock().get(&id).is_some_and(|entry| entry.kicked)
    }

    /// Every session, by id.
    pub fn list(&self) -> Vec<SessionEntry> {
        self.lock().values().cloned().collect()
    }
}

/// Keeps a session listed in its [`SessionTable`] while it lives.
pub struct SessionRegistration<'t> {
    table: &'t SessionTable,
    id: u64,
}

impl Drop for SessionRegistration<'_> {
    fn drop(&mut self) {
        self.table.lock().remove(&self.id);
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
        }
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
    fn only_a_listed_session_can_be_kicked() {
        let table = SessionTable::default();
        let _registration = table.register(entry(3));
        assert!(!table.mark_kicked(4));
        assert!(!table.is_kicked(3));
        assert!(table.mark_kicked(3));
        assert!(table.is_kicked(3));
    }
}

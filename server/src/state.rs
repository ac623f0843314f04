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
        }
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

//! Applying a reload plan to the running server, in the steps the architecture document
//! numbers (steps 1 and 2, compiling and diffing, happen before, in
//! [`Server::reload_config`]):
//!
//! 3. prepare everything that can fail without side effects; a failure refuses the reload;
//! 4. bind new listen addresses;
//! 5. swap the tables, announce the change, retire removed streams;
//! 6. release old listeners, restart changed pulls, keep unchanged outputs.

use std::sync::Arc;

use tokio::net::TcpListener;
use tracing::{error, info};

use super::listeners::{bind, BindFailure, Listener, ListenerId};
use super::running::{plan_outputs, OutputRefused};
use super::{Server, ServerError};
use crate::config::{Config, ConfigErrors};
use crate::events;
use crate::outputs::Output;
use crate::points::{LiveStream, PointMedia, PointRegistry};
use crate::reload::control::DrainTarget;
use crate::reload::{PluginChange, PointChange, ReloadPlan};
use crate::state::{PluginTable, ServingPlugin};

/// What one reload did, for the log and for `ferrocast reload`.
#[derive(Debug, Default)]
pub struct ReloadOutcome {
    pub plan: Option<ReloadPlan>,
    /// Parts that could not be applied; each kept its old state.
    pub failed: Vec<PartFailure>,
    /// The new configuration was refused as a whole: nothing changed.
    pub refused: Option<ReloadRefusal>,
    /// TLS certificates refused at this reload; the previous ones keep serving.
    pub tls_refused: Vec<String>,
}

impl ReloadOutcome {
    fn refused(refusal: ReloadRefusal) -> Self {
        Self {
            refused: Some(refusal),
            ..Self::default()
        }
    }
}

/// Why a new configuration was refused as a whole.
#[derive(Debug, thiserror::Error)]
pub enum ReloadRefusal {
    /// It does not compile.
    #[error("{0}")]
    Invalid(ConfigErrors),
    /// A plugin instance or an output it needs cannot be created.
    #[error(transparent)]
    Unpreparable(ServerError),
}

/// A part of a reload that could not be applied and kept its old state.
#[derive(Debug, thiserror::Error)]
pub enum PartFailure {
    /// A plugin's new address could not be bound: it keeps all of its old listeners.
    #[error("listeners of `{plugin}`: {failure}")]
    Listeners {
        plugin: String,
        failure: BindFailure,
    },
}

/// Step 3's result: the new tables and outputs, built but not yet in use.
struct Prepared {
    plugins: PluginTable,
    points: PointRegistry,
    outputs: Vec<Output>,
}

/// Step 4's result: listeners bound for the new configuration, and the old ones they
/// replace (released in the last phase, once the new ones accept).
#[derive(Default)]
struct ListenerMoves {
    bound: Vec<(ListenerId, TcpListener)>,
    released: Vec<ListenerId>,
}

impl Server {
    /// Apply `plan`, which turns the running configuration into `new`.
    pub(super) async fn apply(&mut self, mut new: Config, plan: ReloadPlan) -> ReloadOutcome {
        // 3. Prepare; nothing has changed yet.
        let prepared = match self.prepare(&new) {
            Ok(prepared) => prepared,
            Err(refusal) => return ReloadOutcome::refused(refusal),
        };
        // 4. Bind.
        let (moves, failed) = self.bind_new_listeners(&plan, &mut new).await;
        // 5. Swap, announce, retire.
        let retired = self.swap_tables(prepared.plugins, prepared.points, &new);
        self.shared.announce_change();
        for stream in &retired {
            stream.retire();
        }
        // 6. Listeners, pulls, outputs.
        self.move_listeners(moves);
        let restart = self.stop_changed_pulls(&plan);
        self.clear_removed_drains(&plan);
        self.outputs.replace_with(prepared.outputs);
        self.outputs.start();
        self.config = new;
        self.start_point_tasks(&restart);
        ReloadOutcome {
            plan: Some(plan),
            failed,
            refused: None,
            tls_refused: Vec::new(),
        }
    }

    /// Step 3: everything that can fail without side effects: plugin instances (unchanged
    /// ones are reused), the point table (a broadcast point keeps its stream) and the outputs.
    fn prepare(&self, new: &Config) -> Result<Prepared, ReloadRefusal> {
        let old_plugins = self.shared.plugins.load_full();
        let mut plugins = PluginTable::new();
        for plugin in new.plugins.values().filter(|p| p.enabled) {
            let kept = old_plugins
                .get(&plugin.name)
                .filter(|serving| serving.settings == plugin.settings);
            let serving = match kept {
                Some(serving) => Arc::clone(serving),
                None => {
                    let (generation, instance) = self
                        .registry
                        .instantiate(&plugin.name, &plugin.settings)
                        .map_err(|source| {
                            ReloadRefusal::Unpreparable(ServerError::PluginStart {
                                plugin: plugin.name.clone(),
                                source,
                            })
                        })?;
                    ServingPlugin::new(generation, instance, &plugin.settings)
                }
            };
            plugins.insert(plugin.name.clone(), serving);
        }
        let old_points = self.shared.points.load();
        let points =
            PointRegistry::rebuild(&new.points, new.server.client_queue, Some(&old_points));
        let outputs = plan_outputs(&plugins, &points)
            .map_err(|refused: OutputRefused| ReloadRefusal::Unpreparable(refused.into()))?;
        Ok(Prepared {
            plugins,
            points,
            outputs,
        })
    }

    /// Step 4: bind new listen addresses before anything is released. A plugin whose new
    /// address fails keeps all of its old listeners (and its old `listen` in `new`).
    async fn bind_new_listeners(
        &self,
        plan: &ReloadPlan,
        new: &mut Config,
    ) -> (ListenerMoves, Vec<PartFailure>) {
        let mut moves = ListenerMoves::default();
        let mut failed = Vec::new();
        for change in &plan.listeners {
            let mut fresh = Vec::new();
            let mut failure = None;
            for &address in &change.bind {
                match bind(&change.plugin, address).await {
                    Ok(listener) => fresh.push((listener_id(&change.plugin, address), listener)),
                    Err(error) => {
                        failure = Some(error);
                        break;
                    }
                }
            }
            if let Some(failure) = failure {
                failed.push(PartFailure::Listeners {
                    plugin: change.plugin.clone(),
                    failure,
                });
                if let Some(plugin) = new.plugins.get_mut(&change.plugin) {
                    plugin.listen = self.listeners.addresses_of(&change.plugin);
                }
                continue;
            }
            moves.bound.extend(fresh);
            let released = change.release.iter();
            moves
                .released
                .extend(released.map(|&address| listener_id(&change.plugin, address)));
        }
        (moves, failed)
    }

    /// Step 5: swap the tables (from here new requests see the new configuration). Returns
    /// the live streams the new table no longer has, to be retired once sessions were told.
    fn swap_tables(
        &self,
        plugins: PluginTable,
        points: PointRegistry,
        new: &Config,
    ) -> Vec<Arc<LiveStream>> {
        let old_points = self.shared.points.load_full();
        self.shared.plugins.store(Arc::new(plugins));
        self.shared.points.store(Arc::new(points));
        self.shared.set_write_timeout(new.server.write_timeout);
        self.shared.gate.set_limits(new.limits);
        self.shared
            .access
            .set_policy(crate::access::AccessPolicy::from_config(new));
        let new_points = self.shared.points.load();
        self.shared.hls.sync(&new_points, new.hls);
        self.shared.recorders.sync(&new_points, &new.recordings);
        old_points
            .live_streams()
            .filter(|stream| {
                let kept = matches!(
                    new_points.get(&stream.name).map(|p| &p.media),
                    Some(PointMedia::Live(s)) if Arc::ptr_eq(s, stream)
                );
                !kept
            })
            .cloned()
            .collect()
    }

    /// Step 6: the new listeners start accepting, then the ones they replace are released.
    fn move_listeners(&mut self, moves: ListenerMoves) {
        for (id, socket) in moves.bound {
            let mut listener = Listener::bound(socket, id.address);
            listener.start_accepting(&id.plugin, &self.shared);
            self.listeners.insert(id, listener);
        }
        for id in moves.released {
            if let Some(local) = self.listeners.release(&id) {
                info!(plugin = %id.plugin, address = %local, "stopped listening");
            }
        }
    }

    /// Step 6: stop the pulls of removed points and of changed sources. Returns the points
    /// whose tasks (pull, file indexes) start again under the new configuration.
    fn stop_changed_pulls(&mut self, plan: &ReloadPlan) -> Vec<String> {
        let mut restart = Vec::new();
        for change in &plan.points {
            match change {
                PointChange::Remove(name) => {
                    self.pullers.stop(name, "the point was removed");
                }
                PointChange::Change {
                    name, source, kind, ..
                } if *source || *kind => {
                    self.pullers
                        .stop(name, "the point's source was reconfigured");
                    self.release_pushed_encoder(name);
                    restart.push(name.clone());
                }
                PointChange::Add(name) => restart.push(name.clone()),
                PointChange::Change { .. } => {}
            }
        }
        restart
    }

    /// A point that now pulls its source lets go of the encoder pushing to it before its
    /// pull starts; the encoder's connection ends on its own re-check.
    fn release_pushed_encoder(&self, point: &str) {
        let points = self.shared.points.load();
        let Some(config) = points.get(point) else {
            return;
        };
        if let (PointMedia::Live(stream), true) = (&config.media, config.pull.is_some()) {
            let why = crate::conn::LostUse::NowPulls {
                point: point.to_owned(),
            };
            stream.release_publisher(&why.to_string());
        }
    }

    /// A removed point or a disabled plugin leaves no drain behind: added again later, it
    /// takes sessions.
    fn clear_removed_drains(&self, plan: &ReloadPlan) {
        for change in &plan.points {
            if let PointChange::Remove(name) = change {
                let _ = self.shared.set_drain(DrainTarget::Point, name, false);
            }
        }
        for change in &plan.plugins {
            if let PluginChange::Disable(name) = change {
                let _ = self.shared.set_drain(DrainTarget::Plugin, name, false);
            }
        }
    }
}

fn listener_id(plugin: &str, address: std::net::SocketAddr) -> ListenerId {
    ListenerId {
        plugin: plugin.to_owned(),
        address,
    }
}

/// Logged once a reload is through; kept here beside the phases it summarises.
pub(super) fn log_applied(trigger: &str, took_ms: f64, outcome: &ReloadOutcome) {
    crate::metrics::reload(match (&outcome.refused, outcome.failed.is_empty()) {
        (Some(_), _) => "refused",
        (None, true) => "applied",
        (None, false) => "partial",
    });
    if let Some(reason) = &outcome.refused {
        error!(event = events::RELOAD_FAILED, trigger, %reason, "the new configuration cannot be applied; nothing was changed");
    } else if outcome.failed.is_empty() {
        info!(event = events::RELOAD_APPLIED, trigger, took_ms, plan = %outcome.plan.as_ref().map(ToString::to_string).unwrap_or_default(), "configuration reloaded");
    } else {
        let failed: Vec<String> = outcome.failed.iter().map(ToString::to_string).collect();
        error!(event = events::RELOAD_FAILED, trigger, took_ms, failed = %failed.join("; "), "configuration reloaded except for the parts listed; they keep their previous state. Fix them and reload again");
    }
}

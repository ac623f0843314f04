//! New plugin builds while the server runs: a rescan of the plugin directory, the self-check
//! of each new build, and the report of which builds took new sessions; plus the roles of the
//! loaded generations for `status` and SIGUSR1.

use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use tracing::{error, info};

use super::Server;
use crate::events;
use crate::plugins::{self_check, Candidate, Generation, Refusal, RegistryError, SelfCheckError};
use crate::state::{PluginTable, ServingPlugin};

/// What a look for new plugin builds found, one entry per file or build.
#[derive(Debug, Default)]
pub struct PluginsOutcome {
    pub reports: Vec<PluginReport>,
}

#[derive(Debug)]
pub enum PluginReport {
    /// The plugin directory could not be read; nothing was looked at.
    Unscannable(RegistryError),
    /// A changed file could not be loaded.
    FileRefused(Refusal),
    /// A new build failed its self-check; the serving generation keeps serving.
    BuildRefused {
        plugin: String,
        reason: SelfCheckError,
        serving_generation: u64,
    },
    /// A new build takes new sessions; the previous generation keeps its own.
    BuildTaken {
        plugin: String,
        generation: u64,
        version: String,
        previous_generation: u64,
        previous_sessions: usize,
    },
}

impl PluginsOutcome {
    /// Every new build was taken.
    pub fn all_taken(&self) -> bool {
        self.reports
            .iter()
            .all(|report| matches!(report, PluginReport::BuildTaken { .. }))
    }

    /// What `ferrocast reload` prints: one line per report.
    pub fn text(&self) -> String {
        self.reports
            .iter()
            .map(|report| format!("{report}\n"))
            .collect()
    }
}

impl fmt::Display for PluginReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unscannable(error) => write!(f, "plugins: {error}"),
            Self::FileRefused(refusal) => {
                write!(f, "{}: refused: {}", refusal.path.display(), refusal.reason)
            }
            Self::BuildRefused {
                plugin,
                reason,
                serving_generation,
            } => write!(
                f,
                "plugin {plugin}: new build refused: {reason}; generation {serving_generation} keeps serving"
            ),
            Self::BuildTaken {
                plugin,
                generation,
                version,
                previous_generation,
                previous_sessions,
            } => write!(
                f,
                "plugin {plugin}: generation {generation} (version {version}) takes new sessions; generation {previous_generation} keeps its {previous_sessions} session(s)"
            ),
        }
    }
}

/// What a loaded generation does now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GenerationRole {
    /// New sessions get it.
    Current,
    /// Replaced; serving its own sessions until they end.
    Draining,
    /// The plugin is not enabled.
    Loaded,
}

impl GenerationRole {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Current => "current",
            Self::Draining => "draining",
            Self::Loaded => "loaded",
        }
    }
}

/// A generation worth showing, with its role.
pub struct GenerationStatus {
    pub generation: Arc<Generation>,
    pub role: GenerationRole,
}

impl Server {
    /// Look for new plugin builds; each that passes its checks takes new sessions at once.
    pub fn reload_plugins(&mut self, trigger: &str) -> PluginsOutcome {
        let started = Instant::now();
        let rescan = match self.registry.rescan() {
            Ok(rescan) => rescan,
            Err(error) => {
                error!(event = events::RELOAD_FAILED, trigger, %error, "cannot look for new plugin builds");
                return PluginsOutcome {
                    reports: vec![PluginReport::Unscannable(error)],
                };
            }
        };
        let mut reports: Vec<PluginReport> = rescan
            .refused
            .into_iter()
            .map(PluginReport::FileRefused)
            .collect();
        for candidate in rescan.candidates {
            reports.push(self.check_candidate(candidate, started));
        }
        PluginsOutcome { reports }
    }

    /// Self-check one new build, then promote it (and serve it, if its plugin is enabled)
    /// or refuse it.
    fn check_candidate(&mut self, candidate: Candidate, started: Instant) -> PluginReport {
        let generation = Arc::clone(&candidate.generation);
        let plugin = generation.plugin.clone();
        let previous = self.registry.get(&plugin).cloned();
        let settings = self
            .config
            .plugins
            .get(&plugin)
            .filter(|p| p.enabled)
            .map(|p| p.settings.clone());
        let instance = match self_check(&generation, previous.as_deref(), settings.as_deref()) {
            Ok(instance) => instance,
            Err(reason) => {
                self.registry.refuse_candidate(candidate, &reason);
                return PluginReport::BuildRefused {
                    plugin,
                    reason,
                    serving_generation: previous.map_or(0, |p| p.number),
                };
            }
        };
        self.registry.promote(candidate);
        if let (Some(instance), Some(settings)) = (instance, settings) {
            let mut table = PluginTable::clone(&self.shared.plugins.load());
            table.insert(
                plugin.clone(),
                ServingPlugin::new(Arc::clone(&generation), instance, &settings),
            );
            self.shared.plugins.store(Arc::new(table));
        }
        let took_ms = started.elapsed().as_secs_f64() * 1000.0;
        let (previous_generation, previous_sessions) = previous
            .as_ref()
            .map_or((0, 0), |p| (p.number, p.sessions()));
        info!(event = events::PLUGIN_SWAPPED, plugin = %plugin, generation = generation.number, version = %generation.library.info.version, previous_generation, previous_sessions, took_ms, "new plugin build takes new sessions; the previous generation keeps its sessions until they end");
        PluginReport::BuildTaken {
            plugin,
            generation: generation.number,
            version: generation.library.info.version.to_string(),
            previous_generation,
            previous_sessions,
        }
    }

    /// Every generation worth showing, with its role. Replaced generations whose sessions
    /// all ended are forgotten first.
    pub(super) fn generation_statuses(&mut self) -> Vec<GenerationStatus> {
        self.registry.forget_drained();
        let serving = self.shared.plugins.load();
        self.registry
            .generations()
            .into_iter()
            .map(|generation| {
                let role = match serving.get(&generation.plugin) {
                    Some(s) if Arc::ptr_eq(&s.generation, &generation) => GenerationRole::Current,
                    _ if generation.is_superseded() => GenerationRole::Draining,
                    _ => GenerationRole::Loaded,
                };
                GenerationStatus { generation, role }
            })
            .collect()
    }

    pub(super) fn log_plugin_status(&mut self) {
        for GenerationStatus { generation, role } in self.generation_statuses() {
            info!(
                event = events::PLUGIN_STATUS,
                plugin = %generation.plugin,
                generation = generation.number,
                version = %generation.library.info.version,
                sessions = generation.sessions(),
                role = role.as_str(),
                path = %generation.installed.display(),
                "plugin generation status"
            );
        }
    }
}

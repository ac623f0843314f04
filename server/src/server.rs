//! Assembles a running server from a compiled configuration and the loaded plugins, and
//! keeps it in step with the configuration while it runs.
//!
//! [`Server::start`] creates the plugin instances and binds every listener (all or nothing).
//! [`Server::run`] then owns the running parts: one accept task per listener, one task per
//! pull source and per UDP push. Reloads, plugin rescans, drains and status requests all go
//! through one control loop, so they never interleave: a reload compiles the new file, diffs
//! it against the running configuration and applies the plan (see [`crate::reload`]).

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

use crate::config::{self, Config};
use crate::conn::serve_connection;
use crate::events;
use crate::outputs::Output;
use crate::plugins::{self_check, Generation, PluginRegistry};
use crate::points::{log_points, log_status, PointMedia, PointRegistry};
use crate::pull::Puller;
use crate::reload::control::{self, DrainTarget, Envelope, Reply, Request};
use crate::reload::{plan, watch, PluginChange, PointChange, ReloadPlan};
use crate::state::{PluginTable, ServingPlugin, Shared};

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(
        "{count} listener(s) could not be bound (see the PORT_IN_USE / BIND_FAILED events above)"
    )]
    Bind { count: usize },
    #[error("plugin `{plugin}` could not be started: {reason}")]
    PluginStart { plugin: String, reason: String },
    #[error("cannot create the control socket {path}: {source}; set [server] control_socket to a writable path")]
    ControlSocket {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("plugin `{plugin}` asks to push `{point}` to {destination}, but {reason}")]
    Output {
        plugin: String,
        point: String,
        destination: String,
        reason: String,
    },
}

/// A listener that could not be bound, with the operator-facing explanation.
#[derive(Debug)]
pub struct BindFailure {
    pub plugin: String,
    pub address: SocketAddr,
    pub message: String,
}

/// Bind `address` for `plugin`, explaining a failure the way an operator needs it.
pub async fn bind(plugin: &str, address: SocketAddr) -> Result<TcpListener, BindFailure> {
    TcpListener::bind(address).await.map_err(|err| {
        let (event, message) = match err.kind() {
            ErrorKind::AddrInUse => (
                events::PORT_IN_USE,
                format!(
                    "plugin `{plugin}` cannot listen on {address}: another service is already using this port. \
                     Fix: choose another port in [plugins.{plugin}] listen, or bind a specific IP address \
                     (e.g. \"127.0.0.1:{port}\") that the other service does not use.",
                    port = address.port()
                ),
            ),
            ErrorKind::AddrNotAvailable => (
                events::BIND_FAILED,
                format!(
                    "plugin `{plugin}` cannot listen on {address}: that IP address is not configured on this host. \
                     Fix: use an address of one of this host's interfaces, or 0.0.0.0 for all of them."
                ),
            ),
            ErrorKind::PermissionDenied => (
                events::BIND_FAILED,
                format!(
                    "plugin `{plugin}` cannot listen on {address}: permission denied. \
                     Fix: use a port above 1023, or grant the CAP_NET_BIND_SERVICE capability."
                ),
            ),
            _ => (
                events::BIND_FAILED,
                format!("plugin `{plugin}` cannot listen on {address}: {err}"),
            ),
        };
        error!(event, plugin = %plugin, %address, "{message}");
        BindFailure {
            plugin: plugin.to_owned(),
            address,
            message,
        }
    })
}

/// A listener and the task accepting on it.
struct Listener {
    local: SocketAddr,
    task: Option<JoinHandle<()>>,
    listener: Option<TcpListener>,
}

/// A running pull, with the session number it publishes under.
struct PullTask {
    task: JoinHandle<()>,
    session: u64,
    stream: Arc<crate::points::LiveStream>,
}

/// The bound, ready-to-run server.
pub struct Server {
    shared: Arc<Shared>,
    config: Config,
    registry: PluginRegistry,
    /// By plugin, then by configured address.
    listeners: BTreeMap<String, BTreeMap<SocketAddr, Listener>>,
    outputs: HashMap<String, (Option<Output>, Option<JoinHandle<()>>)>,
    pullers: HashMap<String, PullTask>,
    /// Taken by [`Self::run`] for its control task.
    control: Option<tokio::net::UnixListener>,
    control_path: PathBuf,
    /// Registered at start, so a SIGHUP or SIGUSR1 that arrives early never takes the
    /// default action (terminating the process).
    hangups: Option<tokio::signal::unix::Signal>,
    status_requests: Option<tokio::signal::unix::Signal>,
}

/// What one reload did, for the log and for `ferrocast reload`.
#[derive(Debug, Default)]
pub struct ReloadOutcome {
    pub plan: Option<ReloadPlan>,
    /// Parts that could not be applied; each kept its old state.
    pub failed: Vec<String>,
    /// The new configuration was refused as a whole: nothing changed.
    pub refused: Option<String>,
}

impl Server {
    /// Create plugin instances and bind every listener. Binding is all or nothing: if any
    /// address fails, nothing is served and every failure has been reported.
    pub async fn start(config: Config, registry: PluginRegistry) -> Result<Self, ServerError> {
        let points = PointRegistry::from_config(&config.points, config.server.client_queue);
        log_points(&points);
        let mut plugins = PluginTable::new();
        for plugin in config.plugins.values().filter(|p| p.enabled) {
            let (generation, instance) = registry
                .instantiate(&plugin.name, &plugin.settings)
                .map_err(|reason| ServerError::PluginStart {
                    plugin: plugin.name.clone(),
                    reason,
                })?;
            let serving = ServingPlugin::new(generation, instance, &plugin.settings);
            plugins.insert(plugin.name.clone(), serving);
        }
        let outputs = plan_outputs(&plugins, &points)?;
        let shared = Arc::new(Shared::new(points, config.server.write_timeout, plugins));

        let mut listeners: BTreeMap<String, BTreeMap<SocketAddr, Listener>> = BTreeMap::new();
        let mut failures = Vec::new();
        for plugin in config.plugins.values().filter(|p| p.enabled) {
            for &address in &plugin.listen {
                match bind(&plugin.name, address).await {
                    Ok(listener) => {
                        let local = listener.local_addr().unwrap_or(address);
                        listeners.entry(plugin.name.clone()).or_default().insert(
                            address,
                            Listener {
                                local,
                                task: None,
                                listener: Some(listener),
                            },
                        );
                    }
                    Err(failure) => failures.push(failure),
                }
            }
        }
        if !failures.is_empty() {
            return Err(ServerError::Bind {
                count: failures.len(),
            });
        }
        let control_path = config
            .server
            .control_socket
            .clone()
            .unwrap_or_else(|| control::default_socket_path(&config.path));
        let control =
            control::bind(&control_path).map_err(|source| ServerError::ControlSocket {
                path: control_path.clone(),
                source,
            })?;
        let outputs = outputs
            .into_iter()
            .map(|output| (output_key(&output), (Some(output), None)))
            .collect();
        Ok(Self {
            shared,
            config,
            registry,
            listeners,
            outputs,
            pullers: HashMap::new(),
            control: Some(control),
            control_path,
            hangups: signal(SignalKind::hangup()).ok(),
            status_requests: signal(SignalKind::user_defined1()).ok(),
        })
    }

    /// The addresses actually bound (useful with port 0).
    pub fn local_addresses(&self) -> Vec<(String, SocketAddr)> {
        self.listeners
            .iter()
            .flat_map(|(plugin, listeners)| {
                listeners
                    .values()
                    .map(move |listener| (plugin.clone(), listener.local))
            })
            .collect()
    }

    pub fn control_socket(&self) -> &std::path::Path {
        &self.control_path
    }

    /// Serve until `shutdown` completes, applying reloads, plugin rescans and drains as
    /// they are asked for.
    pub async fn run(mut self, shutdown: impl std::future::Future<Output = ()>) {
        for (plugin, listeners) in &mut self.listeners {
            for listener in listeners.values_mut() {
                start_accepting(plugin, listener, &self.shared);
            }
        }
        self.start_outputs();
        let names: Vec<String> = self.config.points.iter().map(|p| p.name.clone()).collect();
        self.start_point_tasks(&names);

        let (request_tx, mut requests) = mpsc::channel::<Envelope>(16);
        let control_listener = self.control.take().expect("run is called once");
        info!(path = %self.control_path.display(), "control socket ready: `ferrocast reload`, `ferrocast status`, `ferrocast drain` reach this server");
        let control_task = tokio::spawn(control::serve(control_listener, request_tx));

        let (change_tx, mut changes) = mpsc::channel(8);
        let _watches = watch::start(&self.config.path, &self.registry.dir.clone(), change_tx);
        let mut hangups = self.hangups.take();
        let mut status_requests = self.status_requests.take();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                Some((request, reply)) = requests.recv() => {
                    let answer = self.handle(request).await;
                    let _ = reply.send(answer);
                }
                Some(change) = changes.recv() => match change {
                    watch::Change::Config => { self.reload_config("config file changed").await; }
                    watch::Change::Plugins => { self.reload_plugins("plugin directory changed"); }
                },
                Some(()) = recv_signal(&mut hangups) => {
                    self.reload_config("SIGHUP").await;
                    self.reload_plugins("SIGHUP");
                }
                Some(()) = recv_signal(&mut status_requests) => {
                    // `kill -USR1 <pid>` logs every point's and every plugin generation's state.
                    log_status(&self.shared.points.load());
                    self.log_plugin_status();
                }
            }
        }
        info!("shutting down");
        control_task.abort();
        let _ = std::fs::remove_file(&self.control_path);
        for listener in self.listeners.values_mut().flat_map(|l| l.values_mut()) {
            if let Some(task) = listener.task.take() {
                task.abort();
            }
        }
        for (_, task) in self.outputs.values_mut() {
            if let Some(task) = task.take() {
                task.abort();
            }
        }
        for pull in self.pullers.values() {
            pull.task.abort();
        }
    }

    async fn handle(&mut self, request: Request) -> Reply {
        match request {
            Request::Reload => {
                let outcome = self.reload_config("ferrocast reload").await;
                let plugins = self.reload_plugins("ferrocast reload");
                let mut text = describe_outcome(&outcome);
                text.push_str(&plugins.1);
                Reply {
                    ok: outcome.refused.is_none() && outcome.failed.is_empty() && plugins.0,
                    text,
                }
            }
            Request::ReloadPlugins => {
                let (ok, text) = self.reload_plugins("ferrocast reload plugins");
                Reply { ok, text }
            }
            Request::Status => Reply {
                ok: true,
                text: self.status_text(),
            },
            Request::Drain { target, name, on } => self.drain(target, &name, on),
        }
    }

    /// Put a point or plugin into the drain state, or take it out.
    fn drain(&mut self, target: DrainTarget, name: &str, on: bool) -> Reply {
        let exists = match target {
            DrainTarget::Point => self.config.point(name).is_some(),
            DrainTarget::Plugin => self.config.plugin_enabled(name),
        };
        if !exists {
            return Reply {
                ok: false,
                text: format!(
                    "there is no {} {} named `{name}`; `ferrocast status` lists them\n",
                    if target == DrainTarget::Plugin {
                        "enabled"
                    } else {
                        "publishing"
                    },
                    target.as_str()
                ),
            };
        }
        let changed = self.shared.set_drain(target, name, on);
        let (state, advice) = if on {
            ("draining", format!("existing sessions continue; new ones are refused. Undo with `ferrocast undrain {} {name}`", target.as_str()))
        } else {
            ("accepting", "new sessions are accepted again".to_owned())
        };
        info!(
            event = events::DRAIN,
            target = target.as_str(),
            name,
            state,
            changed,
            "{advice}"
        );
        Reply {
            ok: true,
            text: format!("{} `{name}` is {state}: {advice}\n", target.as_str()),
        }
    }

    /// Reload the configuration file: compile it in full, diff it against the running one,
    /// and apply the plan. A file with any error changes nothing.
    pub async fn reload_config(&mut self, trigger: &str) -> ReloadOutcome {
        let started = Instant::now();
        let path = self.config.path.clone();
        let compiled = config::load(&path, &self.registry);
        let new = match compiled {
            Ok(new) => new,
            Err(errors) => {
                let text = errors.to_string();
                error!(event = events::RELOAD_FAILED, trigger, path = %path.display(), errors = errors.0.len(), "the new configuration has errors; nothing was changed, the server keeps running the previous one:\n{text}");
                return ReloadOutcome {
                    refused: Some(text),
                    ..ReloadOutcome::default()
                };
            }
        };
        for warning in &new.warnings {
            warn!(event = events::CONFIG_WARNING, path = %path.display(), "{warning}");
        }
        let plan = plan(&self.config, &new);
        if plan.is_empty() {
            info!(event = events::RELOAD_PLANNED, trigger, plan = %plan, "configuration unchanged");
            return ReloadOutcome {
                plan: Some(plan),
                ..ReloadOutcome::default()
            };
        }
        info!(event = events::RELOAD_PLANNED, trigger, plan = %plan, "applying the new configuration");
        let outcome = self.apply(new, plan).await;
        let took_ms = started.elapsed().as_secs_f64() * 1000.0;
        if let Some(reason) = &outcome.refused {
            error!(event = events::RELOAD_FAILED, trigger, %reason, "the new configuration cannot be applied; nothing was changed");
        } else if outcome.failed.is_empty() {
            info!(event = events::RELOAD_APPLIED, trigger, took_ms, plan = %outcome.plan.as_ref().map(ToString::to_string).unwrap_or_default(), "configuration reloaded");
        } else {
            error!(event = events::RELOAD_FAILED, trigger, took_ms, failed = %outcome.failed.join("; "), "configuration reloaded except for the parts listed; they keep their previous state. Fix them and reload again");
        }
        outcome
    }

    /// Apply `plan`, which turns the running configuration into `new`.
    async fn apply(&mut self, mut new: Config, plan: ReloadPlan) -> ReloadOutcome {
        let mut outcome = ReloadOutcome::default();
        let old_plugins = self.shared.plugins.load_full();
        let old_points = self.shared.points.load_full();

        // 1. Everything that can fail without side effects: plugin instances, the point
        //    table and the outputs. A failure here refuses the whole reload.
        let mut plugins = PluginTable::new();
        for plugin in new.plugins.values().filter(|p| p.enabled) {
            let kept = old_plugins
                .get(&plugin.name)
                .filter(|serving| serving.settings == plugin.settings);
            let serving = match kept {
                Some(serving) => Arc::clone(serving),
                None => match self.registry.instantiate(&plugin.name, &plugin.settings) {
                    Ok((generation, instance)) => {
                        ServingPlugin::new(generation, instance, &plugin.settings)
                    }
                    Err(reason) => {
                        outcome.refused = Some(format!(
                            "plugin `{}` could not be started: {reason}",
                            plugin.name
                        ));
                        return outcome;
                    }
                },
            };
            plugins.insert(plugin.name.clone(), serving);
        }
        let points =
            PointRegistry::rebuild(&new.points, new.server.client_queue, Some(&old_points));
        let outputs = match plan_outputs(&plugins, &points) {
            Ok(outputs) => outputs,
            Err(error) => {
                outcome.refused = Some(error.to_string());
                return outcome;
            }
        };

        // 2. Bind new listeners before anything is released. A plugin whose new address is
        //    taken keeps all of its old listeners (and the old `listen` in the running config).
        let mut bound: Vec<(String, SocketAddr, TcpListener)> = Vec::new();
        let mut released: Vec<(String, SocketAddr)> = Vec::new();
        for change in &plan.listeners {
            let mut fresh = Vec::new();
            let mut failure = None;
            for &address in &change.bind {
                match bind(&change.plugin, address).await {
                    Ok(listener) => fresh.push((change.plugin.clone(), address, listener)),
                    Err(failed) => {
                        failure = Some(failed.message);
                        break;
                    }
                }
            }
            match failure {
                Some(message) => {
                    outcome
                        .failed
                        .push(format!("listeners of `{}`: {message}", change.plugin));
                    let running = self
                        .listeners
                        .get(&change.plugin)
                        .map(|l| l.keys().copied().collect())
                        .unwrap_or_default();
                    if let Some(plugin) = new.plugins.get_mut(&change.plugin) {
                        plugin.listen = running;
                    }
                }
                None => {
                    bound.extend(fresh);
                    released.extend(change.release.iter().map(|a| (change.plugin.clone(), *a)));
                }
            }
        }

        // 3. Swap the tables: from here, new requests see the new configuration.
        self.shared.plugins.store(Arc::new(plugins));
        self.shared.points.store(Arc::new(points));
        self.shared.set_write_timeout(new.server.write_timeout);
        let new_points = self.shared.points.load_full();
        let mut replaced_streams = Vec::new();
        for point in old_points.all() {
            if let PointMedia::Live(stream) = &point.media {
                let kept = matches!(new_points.get(&point.name).map(|p| &p.media), Some(PointMedia::Live(s)) if Arc::ptr_eq(s, stream));
                if !kept {
                    replaced_streams.push(Arc::clone(stream));
                }
            }
        }

        // 4. Sessions check what they use; only those the change touches end.
        self.shared.announce_change();
        for stream in &replaced_streams {
            stream.retire();
        }

        // 5. Listeners: start the new ones, release the old ones.
        for (plugin, address, listener) in bound {
            let mut entry = Listener {
                local: listener.local_addr().unwrap_or(address),
                task: None,
                listener: Some(listener),
            };
            start_accepting(&plugin, &mut entry, &self.shared);
            info!(event = events::LISTENING, plugin = %plugin, address = %entry.local, "listening");
            self.listeners
                .entry(plugin)
                .or_default()
                .insert(address, entry);
        }
        for (plugin, address) in released {
            if let Some(mut listener) = self
                .listeners
                .get_mut(&plugin)
                .and_then(|l| l.remove(&address))
            {
                if let Some(task) = listener.task.take() {
                    task.abort();
                }
                info!(plugin = %plugin, address = %listener.local, "stopped listening");
            }
        }
        self.listeners.retain(|_, listeners| !listeners.is_empty());

        // 6. Pulls: stop those of removed points and of changed sources, start the new ones.
        let mut restart = Vec::new();
        for change in &plan.points {
            match change {
                PointChange::Remove(name) => {
                    self.stop_pull(name, "the point was removed");
                    let _ = self.shared.set_drain(DrainTarget::Point, name, false);
                }
                PointChange::Change {
                    name, source, kind, ..
                } if *source || *kind => {
                    self.stop_pull(name, "the point's source was reconfigured");
                    restart.push(name.clone());
                }
                PointChange::Add(name) => restart.push(name.clone()),
                PointChange::Change { .. } => {}
            }
        }
        for change in &plan.plugins {
            if let PluginChange::Disable(name) = change {
                let _ = self.shared.set_drain(DrainTarget::Plugin, name, false);
            }
        }

        // 7. Outputs: keep the unchanged ones running.
        let mut next: HashMap<String, (Option<Output>, Option<JoinHandle<()>>)> = HashMap::new();
        for output in outputs {
            let key = output_key(&output);
            match self.outputs.remove(&key) {
                Some(running) => next.insert(key, running),
                None => next.insert(key, (Some(output), None)),
            };
        }
        for (_, (_, task)) in self.outputs.drain() {
            if let Some(task) = task {
                task.abort();
            }
        }
        self.outputs = next;
        self.start_outputs();

        self.config = new;
        self.start_point_tasks(&restart);
        outcome.plan = Some(plan);
        outcome
    }

    fn stop_pull(&mut self, point: &str, why: &str) {
        if let Some(pull) = self.pullers.remove(point) {
            pull.task.abort();
            pull.stream.unpublish(pull.session, why);
        }
    }

    /// Start what the named points need: their pull, and the index of a single file.
    fn start_point_tasks(&mut self, names: &[String]) {
        let points = self.shared.points.load_full();
        for name in names {
            let Some(point) = points.get(name) else {
                continue;
            };
            if let PointMedia::File(path) = &point.media {
                // Index single-file points now, so the first RTSP client does not wait for it.
                let (points, path) = (Arc::clone(&points), path.clone());
                tokio::spawn(async move {
                    let _ = points.file_index(&path);
                });
            }
            if let (Some(source), PointMedia::Live(stream)) = (&point.pull, &point.media) {
                let session = self.shared.new_session_id();
                let puller = Puller {
                    stream: Arc::clone(stream),
                    source: source.clone(),
                    session,
                };
                let task = tokio::spawn(puller.run());
                self.pullers.insert(
                    name.clone(),
                    PullTask {
                        task,
                        session,
                        stream: Arc::clone(stream),
                    },
                );
            }
        }
    }

    fn start_outputs(&mut self) {
        for (output, task) in self.outputs.values_mut() {
            if let Some(output) = output.take() {
                *task = Some(tokio::spawn(output.run()));
            }
        }
    }

    /// Look for new plugin builds; each that passes its checks takes new sessions at once.
    /// Returns whether every new build was taken, and a report.
    pub fn reload_plugins(&mut self, trigger: &str) -> (bool, String) {
        let started = Instant::now();
        let rescan = match self.registry.rescan() {
            Ok(rescan) => rescan,
            Err(error) => {
                error!(event = events::RELOAD_FAILED, trigger, %error, "cannot look for new plugin builds");
                return (false, format!("plugins: {error}\n"));
            }
        };
        let mut report = String::new();
        let mut ok = rescan.refused.is_empty();
        for refusal in &rescan.refused {
            let _ = writeln!(
                report,
                "{}: refused: {}",
                refusal.path.display(),
                refusal.reason
            );
        }
        for candidate in rescan.candidates {
            let generation = Arc::clone(&candidate.generation);
            let name = generation.plugin.clone();
            let previous = self.registry.get(&name).cloned();
            let settings = self
                .config
                .plugins
                .get(&name)
                .filter(|p| p.enabled)
                .map(|p| p.settings.clone());
            match self_check(&generation, previous.as_deref(), settings.as_deref()) {
                Err(reason) => {
                    ok = false;
                    let _ = writeln!(
                        report,
                        "plugin {name}: new build refused: {reason}; generation {} keeps serving",
                        previous.map_or(0, |p| p.number)
                    );
                    self.registry.refuse_candidate(candidate, reason);
                }
                Ok(instance) => {
                    self.registry.promote(candidate);
                    if let (Some(instance), Some(settings)) = (instance, settings) {
                        let mut table = PluginTable::clone(&self.shared.plugins.load());
                        table.insert(
                            name.clone(),
                            ServingPlugin::new(Arc::clone(&generation), instance, &settings),
                        );
                        self.shared.plugins.store(Arc::new(table));
                    }
                    let took_ms = started.elapsed().as_secs_f64() * 1000.0;
                    let (previous_generation, previous_sessions) = previous
                        .as_ref()
                        .map_or((0, 0), |p| (p.number, p.sessions()));
                    info!(event = events::PLUGIN_SWAPPED, plugin = %name, generation = generation.number, version = %generation.library.info.version, previous_generation, previous_sessions, took_ms, "new plugin build takes new sessions; the previous generation keeps its sessions until they end");
                    let _ = writeln!(report, "plugin {name}: generation {} (version {}) takes new sessions; generation {previous_generation} keeps its {previous_sessions} session(s)", generation.number, generation.library.info.version);
                }
            }
        }
        (ok, report)
    }

    /// Points, plugin generations with their sessions, listeners and drains, one per line.
    pub fn status_text(&mut self) -> String {
        let mut text = String::new();
        let drains = self.shared.drains();
        let points = self.shared.points.load();
        for name in points.names() {
            let Some(point) = points.get(name) else {
                continue;
            };
            let state = match &point.media {
                PointMedia::Live(stream) => {
                    let status = stream.status();
                    format!("{} clients {}", status.state.as_str(), status.clients)
                }
                _ => "on-demand".to_owned(),
            };
            let drain = if drains.points.contains(name) {
                " draining"
            } else {
                ""
            };
            let _ = writeln!(
                text,
                "point {name} {state} protocols {}{drain}",
                point.protocols.join(",")
            );
        }
        for (generation, role) in self.generation_roles() {
            let drain = if drains.plugins.contains(&generation.plugin) {
                " draining-new-sessions"
            } else {
                ""
            };
            let _ = writeln!(
                text,
                "plugin {} generation {} version {} sessions {} {role}{drain}",
                generation.plugin,
                generation.number,
                generation.library.info.version,
                generation.sessions()
            );
        }
        for (plugin, address) in self.local_addresses() {
            let _ = writeln!(text, "listener {plugin} {address}");
        }
        text
    }

    /// Every generation worth showing, with its role: `current` (new sessions get it),
    /// `draining` (replaced; serving its own sessions until they end) or `loaded` (the
    /// plugin is not enabled).
    fn generation_roles(&mut self) -> Vec<(Arc<Generation>, &'static str)> {
        let serving = self.shared.plugins.load();
        self.registry
            .generations()
            .into_iter()
            .map(|generation| {
                let role = match serving.get(&generation.plugin) {
                    Some(s) if Arc::ptr_eq(&s.generation, &generation) => "current",
                    _ if generation.is_superseded() => "draining",
                    _ => "loaded",
                };
                (generation, role)
            })
            .collect()
    }

    fn log_plugin_status(&mut self) {
        for (generation, role) in self.generation_roles() {
            info!(
                event = events::PLUGIN_STATUS,
                plugin = %generation.plugin,
                generation = generation.number,
                version = %generation.library.info.version,
                sessions = generation.sessions(),
                role,
                path = %generation.installed.display(),
                "plugin generation status"
            );
        }
    }
}

/// What `ferrocast reload` prints.
fn describe_outcome(outcome: &ReloadOutcome) -> String {
    let mut text = String::new();
    if let Some(reason) = &outcome.refused {
        let _ = writeln!(text, "configuration refused, nothing changed:\n{reason}");
        return text;
    }
    if let Some(plan) = &outcome.plan {
        let _ = writeln!(text, "configuration: {plan}");
    }
    for failure in &outcome.failed {
        let _ = writeln!(text, "not applied (kept as before): {failure}");
    }
    text
}

async fn recv_signal(signal: &mut Option<tokio::signal::unix::Signal>) -> Option<()> {
    match signal {
        Some(signal) => signal.recv().await,
        None => std::future::pending().await,
    }
}

fn start_accepting(plugin: &str, listener: &mut Listener, shared: &Arc<Shared>) {
    if let Some(socket) = listener.listener.take() {
        info!(event = events::LISTENING, plugin = %plugin, address = %listener.local, "listening");
        listener.task = Some(tokio::spawn(accept_loop(
            socket,
            plugin.to_owned(),
            Arc::clone(shared),
        )));
    }
}

/// Accept connections for `plugin`; each gets the plugin's current instance (so a new
/// generation takes new connections at once).
async fn accept_loop(listener: TcpListener, plugin: String, shared: Arc<Shared>) {
    let local = listener.local_addr().ok();
    loop {
        match listener.accept().await {
            Ok((socket, peer)) => {
                let Some(serving) = shared.plugins.load().get(&plugin).cloned() else {
                    // Disabled by a reload; this listener is about to be released.
                    continue;
                };
                let local = socket.local_addr().ok().or(local).unwrap_or(peer);
                tokio::spawn(serve_connection(
                    socket,
                    peer,
                    local,
                    serving,
                    Arc::clone(&shared),
                ));
            }
            Err(error) => {
                // Typically out of file descriptors; back off instead of spinning.
                warn!(event = events::ACCEPT_FAILED, plugin = %plugin, %error, "accept failed; retrying shortly");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

/// Identifies an output, so a reload keeps one that did not change running.
fn output_key(output: &Output) -> String {
    format!(
        "{}|{}|{:p}|{}|{:?}|{}|{:?}",
        output.plugin,
        output.stream.name,
        Arc::as_ptr(&output.stream),
        output.destination,
        output.framing,
        output.ttl,
        output.interface
    )
}

/// The standalone outputs the transport plugins ask for, checked against the points: each
/// must name a broadcast point that lists the plugin in its protocols.
fn plan_outputs(plugins: &PluginTable, points: &PointRegistry) -> Result<Vec<Output>, ServerError> {
    let mut outputs = Vec::new();
    for (name, plugin) in plugins {
        for spec in plugin.instance.outputs() {
            let refuse = |reason: String| ServerError::Output {
                plugin: name.clone(),
                point: spec.point.to_string(),
                destination: spec.destination.to_string(),
                reason,
            };
            let point = points
                .get(&spec.point)
                .ok_or_else(|| refuse("there is no such publishing point".into()))?;
            if !point.protocols.iter().any(|p| p == name) {
                return Err(refuse(format!(
                    "the point does not list \"{name}\" in its protocols"
                )));
            }
            let PointMedia::Live(stream) = &point.media else {
                return Err(refuse("only broadcast points can be pushed".into()));
            };
            let destination = spec
                .destination
                .parse()
                .map_err(|_| refuse("the destination is not ip:port".into()))?;
            let interface = match spec.interface.as_str() {
                "" => None,
                text => Some(
                    text.parse()
                        .map_err(|_| refuse("the interface is not an IP address".into()))?,
                ),
            };
            outputs.push(Output {
                plugin: name.clone(),
                stream: Arc::clone(stream),
                destination,
                framing: spec.framing,
                ttl: spec.ttl,
                interface,
            });
        }
    }
    Ok(outputs)
}

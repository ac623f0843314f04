//! Assembles a running server from a compiled configuration and the loaded plugins, and
//! keeps it in step with the configuration while it runs.
//!
//! [`Server::start`] creates the plugin instances and binds every listener (all or nothing).
//! [`Server::run`] then owns the running parts: one accept task per listener, one task per
//! pull source and per UDP push. Reloads, plugin rescans, drains and status requests all go
//! through one control loop, so they never interleave: a reload compiles the new file, diffs
//! it against the running configuration and applies the plan (see [`crate::reload`]).
//!
//! - [`listeners`]: binding, and the accept loops;
//! - [`running`]: outputs and pulls, keyed so that a reload keeps unchanged ones;
//! - [`apply`]: the phases of applying a reload plan;
//! - [`plugin_builds`]: new plugin builds, and the roles of loaded generations.

mod admin_changes;
pub mod apply;
pub mod listeners;
pub mod plugin_builds;
pub mod running;

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

use crate::config::{self, Config};
use crate::events;
use crate::plugins::{InstantiateError, PluginRegistry};
use crate::points::{log_points, log_status, PointMedia, PointRegistry};
use crate::pull::Puller;
use crate::reload::control::{self, DrainTarget, Envelope, Reply, Request};
use crate::reload::{plan, watch};
use crate::state::{PluginTable, ServingPlugin, Shared};

pub use apply::{PartFailure, ReloadOutcome, ReloadRefusal};
pub use listeners::{bind, BindFailure, ListenerId};
pub use plugin_builds::{GenerationRole, PluginReport, PluginsOutcome};
pub use running::{OutputProblem, OutputRefused};

use listeners::{Listener, ListenerTable};
use plugin_builds::GenerationStatus;
use running::{plan_outputs, OutputSet, PullSet, PullTask};

/// How long startup waits for the indexes of single-file points before accepting clients,
/// so that the first clients get durations and seeks; a larger file finishes in the
/// background (its first RTSP clients are asked to retry).
const STARTUP_INDEX_WAIT: Duration = Duration::from_secs(3);

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(
        "{count} listener(s) could not be bound (see the PORT_IN_USE / BIND_FAILED events above)"
    )]
    Bind { count: usize },
    #[error("plugin `{plugin}` could not be started: {source}")]
    PluginStart {
        plugin: String,
        source: InstantiateError,
    },
    #[error("cannot create the control socket {path}: {source}; set [server] control_socket or pass --control-socket")]
    ControlSocket {
        path: PathBuf,
        source: control::BindError,
    },
    #[error(transparent)]
    Output(#[from] OutputRefused),
    #[error(transparent)]
    Admin(#[from] crate::admin::AdminBindError),
    #[error("{0}; fix the file, or take `tls` off the listen entries that use it")]
    Tls(#[from] crate::tls::CertRefusal),
}

/// The bound, ready-to-run server.
pub struct Server {
    shared: Arc<Shared>,
    config: Config,
    registry: PluginRegistry,
    listeners: ListenerTable,
    outputs: OutputSet,
    pullers: PullSet,
    /// Taken by [`Self::run`] for its control task.
    control: Option<tokio::net::UnixListener>,
    control_path: PathBuf,
    /// `--control-socket`: wins over the configuration file, at start and at every reload.
    control_override: Option<PathBuf>,
    /// Registered at start, so a SIGHUP or SIGUSR1 that arrives early never takes the
    /// default action (terminating the process).
    hangups: Option<Signal>,
    status_requests: Option<Signal>,
    /// The admin API listener, when `[admin]` is configured; taken by [`Self::run`].
    admin: Option<crate::admin::AdminListener>,
    admin_address: Option<SocketAddr>,
}

/// The control loop's inputs, taken from the server when it runs.
struct ControlInputs {
    requests: mpsc::Receiver<Envelope>,
    changes: mpsc::Receiver<watch::Change>,
    hangups: Option<Signal>,
    status_requests: Option<Signal>,
    admin: mpsc::Receiver<crate::admin::AdminEnvelope>,
    /// The config file and plugin directory watches feeding `changes`.
    _watches: watch::Watches,
}

/// The certificate and key files of every `[tls.<name>]`, watched for renewals.
fn tls_files(config: &Config) -> Vec<PathBuf> {
    config
        .tls
        .values()
        .flat_map(|tls| &tls.certs)
        .flat_map(|files| [files.cert.clone(), files.key.clone()])
        .collect()
}

/// Bind the control socket at `configured`, or at the default path (in a private directory,
/// created if need be) for the configuration file `config_path`.
fn bind_control(
    configured: Option<PathBuf>,
    config_path: &Path,
) -> Result<(tokio::net::UnixListener, PathBuf), ServerError> {
    let fail = |path: &Path| {
        let path = path.to_owned();
        move |source| ServerError::ControlSocket { path, source }
    };
    let path = match configured {
        Some(path) => path,
        None => {
            let path = control::default_socket_path(config_path);
            control::prepare_default_dir(&path).map_err(fail(&path))?;
            path
        }
    };
    let listener = control::bind(&path).map_err(fail(&path))?;
    Ok((listener, path))
}

impl Server {
    /// Create plugin instances and bind every listener. Binding is all or nothing: if any
    /// address fails, nothing is served and every failure has been reported.
    pub async fn start(config: Config, registry: PluginRegistry) -> Result<Self, ServerError> {
        Self::start_with_control(config, registry, None).await
    }

    /// Like [`Self::start`], with the control socket at `control_override` if given (the
    /// command line's `--control-socket`), whatever the configuration file says.
    pub async fn start_with_control(
        mut config: Config,
        registry: PluginRegistry,
        control_override: Option<PathBuf>,
    ) -> Result<Self, ServerError> {
        if let Some(path) = &control_override {
            config.server.control_socket = Some(path.clone());
        }
        let points = PointRegistry::from_config(&config.points, config.server.client_queue);
        log_points(&points);
        let plugins = start_plugins(&config, &registry)?;
        let outputs = plan_outputs(&plugins, &points)?;
        let shared = Arc::new(Shared::new(points, config.server.write_timeout, plugins));
        shared.gate.set_limits(config.limits);
        shared.hls.sync(&shared.points.load(), config.hls);
        shared
            .recorders
            .sync(&shared.points.load(), &config.recordings);
        start_descriptor_limit(&shared);
        if let Some(refusal) = shared
            .tls
            .apply(&config, std::time::SystemTime::now())
            .into_iter()
            .next()
        {
            return Err(refusal.into());
        }
        shared
            .access
            .set_policy(crate::access::AccessPolicy::from_config(&config));
        let listeners = bind_all(&config).await?;
        let admin = match &config.admin {
            Some(admin) => Some(crate::admin::AdminListener::bind(admin).await?),
            None => None,
        };
        let admin_address = admin.as_ref().and_then(|a| a.local_address());
        let control_path = config.server.control_socket.clone();
        let (control, control_path) = bind_control(control_path, &config.path)?;
        Ok(Self {
            shared,
            config,
            registry,
            listeners,
            outputs: OutputSet::planned(outputs),
            pullers: PullSet::default(),
            control: Some(control),
            control_path,
            control_override,
            hangups: signal(SignalKind::hangup()).ok(),
            status_requests: signal(SignalKind::user_defined1()).ok(),
            admin,
            admin_address,
        })
    }

    /// The addresses actually bound (useful with port 0).
    pub fn local_addresses(&self) -> Vec<(String, SocketAddr)> {
        self.listeners.local_addresses()
    }

    /// Where the admin API listens, when it is configured.
    pub fn admin_address(&self) -> Option<SocketAddr> {
        self.admin_address
    }

    pub fn control_socket(&self) -> &Path {
        &self.control_path
    }

    /// Serve until `shutdown` completes, applying reloads, plugin rescans and drains as
    /// they are asked for.
    pub async fn run(mut self, shutdown: impl std::future::Future<Output = ()>) {
        let names: Vec<String> = self.config.points.iter().map(|p| p.name.clone()).collect();
        // Watches and the control socket first: once a client can connect, a change to the
        // config file or the plugin directory is never missed.
        let (inputs, mut control_tasks) = self.start_control();
        self.index_before_serving(&names).await;
        if let Some(access_log) = &self.config.access_log {
            crate::access_log::start(access_log);
        }
        self.listeners.start_accepting(&self.shared);
        self.outputs.start();
        self.start_pulls(&names);
        crate::systemd::notify("READY=1");
        if let Some(interval) = crate::systemd::watchdog_interval() {
            control_tasks.push(tokio::spawn(crate::systemd::watchdog(interval)));
        }
        self.control_loop(shutdown, inputs).await;
        info!("shutting down");
        crate::systemd::notify("STOPPING=1");
        self.listeners.stop_all();
        self.end_sessions().await;
        for task in control_tasks {
            task.abort();
        }
        let _ = std::fs::remove_file(&self.control_path);
        self.listeners.stop_all();
        self.outputs.stop_all();
        self.pullers.abort_all();
    }

    /// Give every session its protocol's clean end (as a kick does), and wait for them to
    /// finish, at most `[server] shutdown_timeout_ms`.
    async fn end_sessions(&self) {
        let sessions = self.shared.sessions.list();
        if sessions.is_empty() {
            return;
        }
        info!(
            sessions = sessions.len(),
            "ending every session before exiting"
        );
        for session in &sessions {
            self.shared.sessions.mark_kicked(session.id);
        }
        self.shared.announce_change();
        let deadline = Instant::now() + self.config.server.shutdown_timeout;
        while !self.shared.sessions.list().is_empty() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let left = self.shared.sessions.list().len();
        if left > 0 {
            info!(
                sessions = left,
                "sessions still open at the shutdown timeout are closed"
            );
        }
    }

    /// Start the control socket task and the file watches: the control loop's inputs.
    fn start_control(&mut self) -> (ControlInputs, Vec<JoinHandle<()>>) {
        let (request_tx, requests) = mpsc::channel::<Envelope>(16);
        let control_listener = self.control.take().expect("run is called once");
        info!(path = %self.control_path.display(), "control socket ready: `ferrocast reload`, `ferrocast status`, `ferrocast drain` reach this server");
        let control_task = tokio::spawn(control::serve(control_listener, request_tx));
        let (change_tx, changes) = mpsc::channel(8);
        let (admin_tx, admin) = mpsc::channel(16);
        let mut tasks = vec![control_task];
        if !self.config.tls.is_empty() {
            tasks.push(tokio::spawn(crate::tls::watch_expiry(Arc::clone(
                &self.shared.tls,
            ))));
        }
        if let Some(listener) = self.admin.take() {
            tasks.push(tokio::spawn(
                listener.serve(Arc::clone(&self.shared), admin_tx),
            ));
        }
        let inputs = ControlInputs {
            admin,
            requests,
            changes,
            hangups: self.hangups.take(),
            status_requests: self.status_requests.take(),
            _watches: watch::start(
                &self.config.path,
                &self.registry.dir,
                &tls_files(&self.config),
                change_tx,
            ),
        };
        (inputs, tasks)
    }

    /// One loop serialises everything that changes the running state, until `shutdown`.
    async fn control_loop(
        &mut self,
        shutdown: impl std::future::Future<Output = ()>,
        mut inputs: ControlInputs,
    ) {
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                Some((request, reply)) = inputs.requests.recv() => {
                    let answer = self.handle(request).await;
                    let _ = reply.send(answer);
                }
                Some((request, reply)) = inputs.admin.recv() => {
                    let answer = self.handle_admin(request).await;
                    let _ = reply.send(answer);
                }
                Some(change) = inputs.changes.recv() => match change {
                    watch::Change::Config => { self.reload_config("config file changed").await; }
                    watch::Change::Plugins => { self.reload_plugins("plugin directory changed"); }
                },
                Some(()) = recv_signal(&mut inputs.hangups) => {
                    self.reload_config("SIGHUP").await;
                    self.reload_plugins("SIGHUP");
                }
                Some(()) = recv_signal(&mut inputs.status_requests) => {
                    // `kill -USR1 <pid>` logs every point's and every plugin generation's state.
                    log_status(&self.shared.points.load());
                    self.log_plugin_status();
                }
            }
        }
    }

    async fn handle(&mut self, request: Request) -> Reply {
        match request {
            Request::Reload => {
                let outcome = self.reload_config("ferrocast reload").await;
                let plugins = self.reload_plugins("ferrocast reload");
                let mut text = describe_outcome(&outcome);
                text.push_str(&plugins.text());
                Reply {
                    ok: outcome.refused.is_none()
                        && outcome.failed.is_empty()
                        && outcome.tls_refused.is_empty()
                        && plugins.all_taken(),
                    text,
                }
            }
            Request::ReloadPlugins => {
                let plugins = self.reload_plugins("ferrocast reload plugins");
                Reply {
                    ok: plugins.all_taken(),
                    text: plugins.text(),
                }
            }
            Request::Status => Reply {
                ok: true,
                text: self.status_text(),
            },
            Request::Drain { target, name, on } => self.drain(target, &name, on),
        }
    }

    async fn handle_admin(
        &mut self,
        request: crate::admin::AdminRequest,
    ) -> crate::admin::AdminAnswer {
        use crate::admin::{AdminAnswer, AdminRequest};
        match request {
            AdminRequest::Control(request) => AdminAnswer::Reply(self.handle(request).await),
            AdminRequest::Plugins => AdminAnswer::Json(self.plugins_json()),
            AdminRequest::SetProtocols { point, protocols } => {
                AdminAnswer::Reply(self.set_point_protocols(&point, &protocols).await)
            }
        }
    }

    /// The plugin generations worth showing, for the admin API.
    fn plugins_json(&mut self) -> serde_json::Value {
        let drains = self.shared.drains();
        let generations: Vec<serde_json::Value> = self
            .generation_statuses()
            .into_iter()
            .map(|GenerationStatus { generation, role }| {
                serde_json::json!({
                    "plugin": generation.plugin,
                    "generation": generation.number,
                    "version": generation.library.info.version.to_string(),
                    "sessions": generation.sessions(),
                    "role": role.as_str(),
                    "draining": drains.plugins.contains(&generation.plugin),
                })
            })
            .collect();
        serde_json::Value::Array(generations)
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
        crate::systemd::notify("RELOADING=1");
        let outcome = self.reload_config_file(trigger).await;
        crate::systemd::notify("READY=1");
        outcome
    }

    async fn reload_config_file(&mut self, trigger: &str) -> ReloadOutcome {
        let started = Instant::now();
        let path = self.config.path.clone();
        let mut new = match config::load(&path, &self.registry) {
            Ok(new) => new,
            Err(errors) => {
                crate::metrics::reload("invalid");
                error!(event = events::RELOAD_FAILED, trigger, path = %path.display(), errors = errors.0.len(), "the new configuration has errors; nothing was changed, the server keeps running the previous one:\n{errors}");
                return ReloadOutcome {
                    refused: Some(ReloadRefusal::Invalid(errors)),
                    ..ReloadOutcome::default()
                };
            }
        };
        for warning in &new.warnings {
            warn!(event = events::CONFIG_WARNING, path = %path.display(), "{warning}");
        }
        if let Some(control) = &self.control_override {
            new.server.control_socket = Some(control.clone());
        }
        // Certificates reload on every trigger, whether or not the file changed: a renewal
        // replaces the certificate files, not the configuration.
        let tls_refusals = self.shared.tls.apply(&new, std::time::SystemTime::now());
        let mut outcome = self.plan_and_apply(new, trigger, started).await;
        outcome.tls_refused = tls_refusals.iter().map(ToString::to_string).collect();
        outcome
    }

    async fn plan_and_apply(
        &mut self,
        new: Config,
        trigger: &str,
        started: Instant,
    ) -> ReloadOutcome {
        let plan = plan(&self.config, &new);
        if plan.is_empty() {
            crate::metrics::reload("unchanged");
            info!(event = events::RELOAD_PLANNED, trigger, plan = %plan, "configuration unchanged");
            return ReloadOutcome {
                plan: Some(plan),
                ..ReloadOutcome::default()
            };
        }
        info!(event = events::RELOAD_PLANNED, trigger, plan = %plan, "applying the new configuration");
        let outcome = self.apply(new, plan).await;
        let took_ms = started.elapsed().as_secs_f64() * 1000.0;
        apply::log_applied(trigger, took_ms, &outcome);
        outcome
    }

    /// Before the first client: start indexing every on-demand file the points serve, and
    /// wait (a bounded time) for the single-file points' indexes.
    async fn index_before_serving(&self, names: &[String]) {
        let files = self.prepare_indexes(names);
        let indexes = Arc::clone(self.shared.points.load().indexes());
        let waited = tokio::time::timeout(STARTUP_INDEX_WAIT, async {
            for file in &files {
                let _ = indexes.wait(file).await;
            }
        })
        .await;
        if waited.is_err() {
            info!(
                files = files.len(),
                "on-demand files are still being indexed; serving now, their first RTSP clients are asked to retry"
            );
        }
    }

    /// Start building, in the background, the file indexes the named points need: the file
    /// of a single-file point and the first files of a directory point. Returns the single
    /// files.
    fn prepare_indexes(&self, names: &[String]) -> Vec<PathBuf> {
        let points = self.shared.points.load();
        let media = points.indexed_media(names);
        let indexes = points.indexes();
        for file in &media.files {
            indexes.prepare(file);
        }
        indexes.prepare_directories(media.directories);
        media.files
    }

    /// Start what the named points need after a reload: their pull, and their file indexes.
    fn start_point_tasks(&mut self, names: &[String]) {
        self.prepare_indexes(names);
        self.start_pulls(names);
    }

    /// Start the pull of each named point that has one.
    fn start_pulls(&mut self, names: &[String]) {
        let points = self.shared.points.load_full();
        for name in names {
            let Some(point) = points.get(name) else {
                continue;
            };
            let (Some(source), PointMedia::Live(stream)) = (&point.pull, &point.media) else {
                continue;
            };
            let session = self.shared.new_session_id();
            let puller = Puller {
                stream: Arc::clone(stream),
                source: source.clone(),
                session,
            };
            let pull = PullTask {
                task: tokio::spawn(puller.run()),
                session,
                stream: Arc::clone(stream),
            };
            self.pullers.insert(name.clone(), pull);
        }
    }

    /// Points, plugin generations with their sessions, listeners and drains, one per line.
    pub fn status_text(&mut self) -> String {
        let mut text = self.points_status_text();
        let drains = self.shared.drains();
        for GenerationStatus { generation, role } in self.generation_statuses() {
            let drain = if drains.plugins.contains(&generation.plugin) {
                " draining-new-sessions"
            } else {
                ""
            };
            let _ = writeln!(
                text,
                "plugin {} generation {} version {} sessions {} {}{drain}",
                generation.plugin,
                generation.number,
                generation.library.info.version,
                generation.sessions(),
                role.as_str()
            );
        }
        for (plugin, counters) in self.shared.all_plugin_counters() {
            let (counted, gauged) = counters.snapshot();
            for (name, value) in counted {
                let _ = writeln!(text, "counter {plugin} {name} {value}");
            }
            for (name, value) in gauged {
                let _ = writeln!(text, "gauge {plugin} {name} {value}");
            }
        }
        for hls in self.shared.hls.status() {
            let _ = writeln!(
                text,
                "hls {} segments {} bytes {} max_bytes {} evicted {} next_msn {}",
                hls.point,
                hls.segments,
                hls.bytes,
                hls.max_bytes,
                hls.evicted_for_memory,
                hls.next_msn
            );
        }
        for record in self.shared.recorders.status() {
            let file = record
                .file
                .as_ref()
                .map_or_else(|| "-".to_owned(), |file| file.display().to_string());
            let _ = writeln!(
                text,
                "record {} file {file} bytes {} dropped_bytes {} failures {}",
                record.point, record.bytes, record.dropped_bytes, record.failures
            );
        }
        for (plugin, address) in self.local_addresses() {
            let _ = writeln!(text, "listener {plugin} {address}");
        }
        let (open, refused, dropped) = self.shared.gate.counters();
        let _ = writeln!(
            text,
            "connections open {open} refused {refused} dropped {dropped}"
        );
        text
    }

    /// One `point` line per point, for [`Self::status_text`].
    fn points_status_text(&self) -> String {
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
            let source = source_description_text(point);
            let drain = if drains.points.contains(name) {
                " draining"
            } else {
                ""
            };
            let _ = writeln!(
                text,
                "point {name} {state} protocols {}{source}{drain}",
                point.protocols.join(",")
            );
        }
        text
    }
}

/// ` source-name "…" source-description "…"` for a live point whose encoder described its
/// stream (quoted, so that spaces stay within one field), else nothing.
fn source_description_text(point: &crate::points::Point) -> String {
    let PointMedia::Live(stream) = &point.media else {
        return String::new();
    };
    match stream.status().source_description {
        Some(source) => format!(
            " source-name {:?} source-description {:?}",
            source.name, source.description
        ),
        None => String::new(),
    }
}

/// An instance of every enabled plugin, on its current generation.
/// Raise the descriptor limit as far as allowed and tell the operator and the gate.
fn start_descriptor_limit(shared: &Shared) {
    match crate::limits::raise_descriptor_limit() {
        Some(limit) => {
            shared.gate.set_fd_limit(limit);
            info!(
                event = events::DESCRIPTOR_LIMIT,
                limit, "open-file limit in effect"
            );
        }
        None => {
            warn!(
                event = events::DESCRIPTOR_LIMIT,
                "open-file limit unknown; connections are not checked against it"
            )
        }
    }
}

fn start_plugins(config: &Config, registry: &PluginRegistry) -> Result<PluginTable, ServerError> {
    let mut plugins = PluginTable::new();
    for plugin in config.plugins.values().filter(|p| p.enabled) {
        let (generation, instance) = registry
            .instantiate(&plugin.name, &plugin.settings)
            .map_err(|source| ServerError::PluginStart {
                plugin: plugin.name.clone(),
                source,
            })?;
        let serving = ServingPlugin::new(generation, instance, &plugin.settings);
        plugins.insert(plugin.name.clone(), serving);
    }
    Ok(plugins)
}

/// Bind every listen address of every enabled plugin; all or nothing, with every failure
/// reported.
async fn bind_all(config: &Config) -> Result<ListenerTable, ServerError> {
    let mut listeners = ListenerTable::default();
    let mut failures = 0;
    for plugin in config.plugins.values().filter(|p| p.enabled) {
        for &address in &plugin.listen {
            match bind(&plugin.name, address).await {
                Ok(socket) => {
                    let id = ListenerId {
                        plugin: plugin.name.clone(),
                        address,
                    };
                    listeners.insert(id, Listener::bound(socket, address));
                }
                Err(_) => failures += 1,
            }
        }
    }
    if failures > 0 {
        return Err(ServerError::Bind { count: failures });
    }
    Ok(listeners)
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
    for refusal in &outcome.tls_refused {
        let _ = writeln!(text, "{refusal}; the previous certificate keeps serving");
    }
    text
}

async fn recv_signal(signal: &mut Option<tokio::signal::unix::Signal>) -> Option<()> {
    match signal {
        Some(signal) => signal.recv().await,
        None => std::future::pending().await,
    }
}

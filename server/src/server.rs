//! Assembles a running server from a compiled configuration and the loaded plugins: creates
//! the plugin instances, binds every listener, and accepts connections until shutdown.

use std::collections::BTreeMap;
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tracing::{error, info, warn};

use crate::config::Config;
use crate::events;
use crate::outputs::Output;
use crate::plugins::PluginRegistry;
use crate::points::PointMedia;
use crate::points::{log_points, log_status, PointRegistry};
use crate::pull::Puller;
use crate::session::{serve_connection, ServingPlugin, Shared};

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(
        "{count} listener(s) could not be bound (see the PORT_IN_USE / BIND_FAILED events above)"
    )]
    Bind { count: usize },
    #[error("plugin `{plugin}` could not be started: {reason}")]
    PluginStart { plugin: String, reason: String },
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

/// The bound, ready-to-run server.
pub struct Server {
    shared: Arc<Shared>,
    listeners: Vec<(Arc<ServingPlugin>, TcpListener)>,
    outputs: Vec<Output>,
}

impl Server {
    /// Create plugin instances and bind every listener. Binding is all or nothing: if any
    /// address fails, nothing is served and every failure has been reported.
    pub async fn start(config: &Config, registry: &PluginRegistry) -> Result<Self, ServerError> {
        let points = PointRegistry::from_config(&config.points, config.server.client_queue);
        log_points(&points);
        let mut plugins = BTreeMap::new();
        for plugin in config.plugins.values().filter(|p| p.enabled) {
            let instance = registry
                .instantiate(&plugin.name, &plugin.settings)
                .map_err(|reason| ServerError::PluginStart {
                    plugin: plugin.name.clone(),
                    reason,
                })?;
            let serving = Arc::new(ServingPlugin {
                name: plugin.name.clone(),
                instance,
            });
            plugins.insert(plugin.name.clone(), serving);
        }
        let outputs = plan_outputs(&plugins, &points)?;
        let shared = Arc::new(Shared::new(points, config.server.write_timeout, plugins));

        let mut listeners = Vec::new();
        let mut failures = Vec::new();
        for plugin in config.plugins.values().filter(|p| p.enabled) {
            let serving = &shared.plugins[&plugin.name];
            for &address in &plugin.listen {
                match bind(&plugin.name, address).await {
                    Ok(listener) => listeners.push((Arc::clone(serving), listener)),
                    Err(failure) => failures.push(failure),
                }
            }
        }
        if !failures.is_empty() {
            return Err(ServerError::Bind {
                count: failures.len(),
            });
        }
        Ok(Self {
            shared,
            listeners,
            outputs,
        })
    }

    /// The addresses actually bound (useful with port 0).
    pub fn local_addresses(&self) -> Vec<(String, SocketAddr)> {
        self.listeners
            .iter()
            .filter_map(|(plugin, l)| l.local_addr().ok().map(|a| (plugin.name.clone(), a)))
            .collect()
    }

    /// Accept connections until `shutdown` completes.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) {
        let mut accept_tasks = Vec::new();
        for (plugin, listener) in self.listeners {
            if let Ok(address) = listener.local_addr() {
                info!(event = events::LISTENING, plugin = %plugin.name, %address, "listening");
            }
            let shared = Arc::clone(&self.shared);
            accept_tasks.push(tokio::spawn(accept_loop(listener, plugin, shared)));
        }
        for output in self.outputs {
            accept_tasks.push(tokio::spawn(output.run()));
        }
        for point in self.shared.points.all() {
            if let PointMedia::File(path) = &point.media {
                // Index single-file points now, so the first RTSP client does not wait for it.
                let (shared, path) = (Arc::clone(&self.shared), path.clone());
                tokio::spawn(async move {
                    let _ = shared.points.file_index(&path);
                });
            }
            if let (Some(source), PointMedia::Live(stream)) = (&point.pull, &point.media) {
                let puller = Puller {
                    stream: Arc::clone(stream),
                    source: source.clone(),
                    session: self.shared.new_session_id(),
                };
                accept_tasks.push(tokio::spawn(puller.run()));
            }
        }
        let shared = Arc::clone(&self.shared);
        accept_tasks.push(tokio::spawn(async move {
            // `kill -USR1 <pid>` logs every point's state.
            use tokio::signal::unix::{signal, SignalKind};
            let Ok(mut requests) = signal(SignalKind::user_defined1()) else {
                return;
            };
            while requests.recv().await.is_some() {
                log_status(&shared.points);
            }
        }));
        shutdown.await;
        info!("shutting down");
        for task in accept_tasks {
            task.abort();
        }
    }
}

async fn accept_loop(listener: TcpListener, plugin: Arc<ServingPlugin>, shared: Arc<Shared>) {
    let local = listener.local_addr().ok();
    loop {
        match listener.accept().await {
            Ok((socket, peer)) => {
                let local = socket.local_addr().ok().or(local).unwrap_or(peer);
                tokio::spawn(serve_connection(
                    socket,
                    peer,
                    local,
                    Arc::clone(&plugin),
                    Arc::clone(&shared),
                ));
            }
            Err(error) => {
                // Typically out of file descriptors; back off instead of spinning.
                warn!(plugin = %plugin.name, %error, "accept failed; retrying shortly");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

/// The standalone outputs the transport plugins ask for, checked against the points: each
/// must name a broadcast point that lists the plugin in its protocols.
fn plan_outputs(
    plugins: &BTreeMap<String, Arc<ServingPlugin>>,
    points: &PointRegistry,
) -> Result<Vec<Output>, ServerError> {
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

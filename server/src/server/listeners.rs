//! The server's TCP listeners: binding with an operator-facing explanation of failures, and
//! one accept loop per listener that applies the connection limits, caps each socket's send
//! buffer, and hands each connection to its plugin's current instance.

use std::collections::BTreeMap;
use std::fmt;
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tracing::{debug, error, info, warn};

use crate::conn::{serve_connection, Admitted};
use crate::events;
use crate::limits::{Admission, Refusal, RefusalLog};
use crate::state::Shared;

/// How long an accept loop backs off after a failed accept (typically out of descriptors).
const ACCEPT_RETRY: Duration = Duration::from_millis(20);
/// Connections the kernel completes before the accept loop takes them (capped by
/// `net.core.somaxconn`).
const LISTEN_BACKLOG: i32 = 4096;
/// How long shedding a waiting connection may wait for the accept.
const SHED_WAIT: Duration = Duration::from_millis(5);

/// One listen address of one plugin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerId {
    pub plugin: String,
    /// The configured address (the bound one may differ with port 0).
    pub address: SocketAddr,
}

/// A listener that could not be bound. Displays the explanation an operator needs.
#[derive(Debug)]
pub struct BindFailure {
    pub listener: ListenerId,
    pub source: std::io::Error,
}

impl BindFailure {
    /// The event a failure is reported under.
    pub fn event(&self) -> &'static str {
        match self.source.kind() {
            ErrorKind::AddrInUse => events::PORT_IN_USE,
            _ => events::BIND_FAILED,
        }
    }
}

impl fmt::Display for BindFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ListenerId { plugin, address } = &self.listener;
        match self.source.kind() {
            ErrorKind::AddrInUse => write!(
                f,
                "plugin `{plugin}` cannot listen on {address}: another service is already using this port. \
                 Fix: choose another port in [plugins.{plugin}] listen, or bind a specific IP address \
                 (e.g. \"127.0.0.1:{port}\") that the other service does not use.",
                port = address.port()
            ),
            ErrorKind::AddrNotAvailable => write!(
                f,
                "plugin `{plugin}` cannot listen on {address}: that IP address is not configured on this host. \
                 Fix: use an address of one of this host's interfaces, or 0.0.0.0 for all of them."
            ),
            ErrorKind::PermissionDenied => write!(
                f,
                "plugin `{plugin}` cannot listen on {address}: permission denied. \
                 Fix: use a port above 1023, or grant the CAP_NET_BIND_SERVICE capability."
            ),
            _ => write!(
                f,
                "plugin `{plugin}` cannot listen on {address}: {}",
                self.source
            ),
        }
    }
}

impl std::error::Error for BindFailure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

/// Bind `address` for `plugin`; a failure is logged with its explanation and returned.
pub async fn bind(plugin: &str, address: SocketAddr) -> Result<TcpListener, BindFailure> {
    listen_socket(address).map_err(|source| {
        let failure = BindFailure {
            listener: ListenerId {
                plugin: plugin.to_owned(),
                address,
            },
            source,
        };
        // The event depends on the failure (PORT_IN_USE, BIND_FAILED…): `event()` names it.
        let event = failure.event();
        error!(event, plugin = %plugin, %address, "{failure}");
        failure
    })
}

/// A listening socket with a deep backlog: a burst of connections waits in it instead of
/// having SYNs dropped, which costs each client a retransmission (a second or more).
fn listen_socket(address: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(address),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    socket.bind(&address.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    socket.set_nonblocking(true)?;
    TcpListener::from_std(socket.into())
}

/// A bound listener, accepting or about to.
pub struct Listener {
    pub local: SocketAddr,
    /// The address as configured: what TLS assignments are keyed by.
    configured: SocketAddr,
    state: ListenerState,
}

enum ListenerState {
    /// Bound; connections wait in the backlog until the server runs.
    Bound(TcpListener),
    Accepting(JoinHandle<()>),
    Stopped,
}

impl Listener {
    pub fn bound(listener: TcpListener, configured: SocketAddr) -> Self {
        Self {
            local: listener.local_addr().unwrap_or(configured),
            configured,
            state: ListenerState::Bound(listener),
        }
    }

    /// Start the accept loop, if it is not running yet.
    pub fn start_accepting(&mut self, plugin: &str, shared: &Arc<Shared>) {
        if let ListenerState::Bound(socket) =
            std::mem::replace(&mut self.state, ListenerState::Stopped)
        {
            info!(event = events::LISTENING, plugin = %plugin, address = %self.local, "listening");
            self.state = ListenerState::Accepting(tokio::spawn(accept_loop(
                socket,
                ListenerId {
                    plugin: plugin.to_owned(),
                    address: self.configured,
                },
                Arc::clone(shared),
            )));
        }
    }

    /// Stop accepting and close the socket.
    pub fn stop(&mut self) {
        if let ListenerState::Accepting(task) =
            std::mem::replace(&mut self.state, ListenerState::Stopped)
        {
            task.abort();
        }
    }
}

/// Every listener, by plugin, then by configured address.
#[derive(Default)]
pub struct ListenerTable(BTreeMap<String, BTreeMap<SocketAddr, Listener>>);

impl ListenerTable {
    pub fn insert(&mut self, id: ListenerId, listener: Listener) {
        self.0
            .entry(id.plugin)
            .or_default()
            .insert(id.address, listener);
    }

    /// Stop and drop one listener, returning its bound address.
    pub fn release(&mut self, id: &ListenerId) -> Option<SocketAddr> {
        let listeners = self.0.get_mut(&id.plugin)?;
        let mut listener = listeners.remove(&id.address)?;
        if listeners.is_empty() {
            self.0.remove(&id.plugin);
        }
        listener.stop();
        Some(listener.local)
    }

    /// The configured addresses `plugin` listens on now.
    pub fn addresses_of(&self, plugin: &str) -> Vec<SocketAddr> {
        self.0
            .get(plugin)
            .map(|listeners| listeners.keys().copied().collect())
            .unwrap_or_default()
    }

    pub fn start_accepting(&mut self, shared: &Arc<Shared>) {
        for (plugin, listeners) in &mut self.0 {
            for listener in listeners.values_mut() {
                listener.start_accepting(plugin, shared);
            }
        }
    }

    pub fn stop_all(&mut self) {
        for listener in self.0.values_mut().flat_map(BTreeMap::values_mut) {
            listener.stop();
        }
    }

    /// The addresses actually bound, by plugin.
    pub fn local_addresses(&self) -> Vec<(String, SocketAddr)> {
        self.0
            .iter()
            .flat_map(|(plugin, listeners)| {
                listeners
                    .values()
                    .map(move |listener| (plugin.clone(), listener.local))
            })
            .collect()
    }
}

/// Accept connections for `plugin`; each gets the plugin's current instance (so a new
/// generation takes new connections at once), after the connection limits had their say.
async fn accept_loop(listener: TcpListener, id: ListenerId, shared: Arc<Shared>) {
    let ListenerId {
        plugin,
        address: configured,
    } = id;
    let local = listener.local_addr().ok();
    let mut spare = SpareDescriptor::open();
    let mut failures = RefusalLog::default();
    loop {
        match listener.accept().await {
            Ok((socket, peer)) => {
                let Some(serving) = shared.plugins.load().get(&plugin).cloned() else {
                    // Disabled by a reload; this listener is about to be released.
                    continue;
                };
                let (admission, guard) = shared.gate.admit(peer.ip());
                if let Admission::Refuse(refusal) | Admission::Drop(refusal) = admission {
                    log_refusal(&shared, &plugin, peer, refusal, admission);
                }
                // Dropped connections are closed here, unread.
                let Some(guard) = guard else { continue };
                let limits = shared.gate.limits();
                if let Err(error) =
                    socket2::SockRef::from(&socket).set_send_buffer_size(limits.send_buffer_bytes)
                {
                    debug!(%peer, %error, "could not cap the send buffer");
                }
                let local = socket.local_addr().ok().or(local).unwrap_or(peer);
                let admitted = Admitted {
                    _guard: guard,
                    refused: match admission {
                        Admission::Refuse(refusal) => Some(refusal),
                        _ => None,
                    },
                };
                let _ = socket.set_nodelay(true);
                let accepted = Accepted {
                    socket,
                    peer,
                    local,
                    plugin: serving,
                    admitted,
                };
                dispatch(accepted, &plugin, configured, &shared);
            }
            Err(error) => {
                let out_of_descriptors =
                    matches!(error.raw_os_error(), Some(libc::EMFILE | libc::ENFILE));
                if let Some(count) = failures.note(std::time::Instant::now()) {
                    warn!(event = events::ACCEPT_FAILED, plugin = %plugin, %error, failures = count, "accept failed; retrying shortly");
                }
                if out_of_descriptors && spare.shed_one(&listener).await {
                    // A waiting client was closed: the backlog keeps moving, so clients
                    // see a closed connection instead of unanswered SYNs and their
                    // retransmission backoff, and are served as soon as descriptors free.
                    continue;
                }
                tokio::time::sleep(ACCEPT_RETRY).await;
            }
        }
    }
}

/// An admitted connection on its way to its plugin.
struct Accepted {
    socket: tokio::net::TcpStream,
    peer: SocketAddr,
    local: SocketAddr,
    plugin: Arc<crate::state::ServingPlugin>,
    /// Holds the connection's place in the limits from the accept on, so handshakes in
    /// progress count too.
    admitted: Admitted,
}

/// Hand an admitted connection to its plugin: through a TLS handshake when its listener is
/// marked TLS, directly otherwise.
fn dispatch(accepted: Accepted, plugin: &str, configured: SocketAddr, shared: &Arc<Shared>) {
    match shared.tls.for_listener(plugin, configured) {
        Some(tls) => {
            tokio::spawn(serve_tls(accepted, tls, Arc::clone(shared)));
        }
        None if shared.tls.is_tls_listener(plugin, configured) => {
            // Its certificates never loaded (refused, logged): never serve plain text where
            // TLS was asked for.
            debug!(peer = %accepted.peer, "TLS listener without certificates; connection closed");
        }
        None => {
            tokio::spawn(serve_connection(
                accepted.socket,
                accepted.peer,
                accepted.local,
                accepted.plugin,
                Arc::clone(shared),
                accepted.admitted,
            ));
        }
    }
}

/// Complete the TLS handshake (bounded), then serve the decrypted stream like any other.
async fn serve_tls(accepted: Accepted, tls: crate::tls::ListenerTls, shared: Arc<Shared>) {
    let Accepted {
        socket,
        peer,
        local,
        plugin,
        admitted,
    } = accepted;
    let Some(stream) = crate::tls::accept(&shared.tls, &tls, socket, &plugin.name, peer).await
    else {
        return;
    };
    serve_connection(stream, peer, local, plugin, shared, admitted).await;
}

/// Log a refusal at the accept path; a flood becomes one summary line every few seconds.
fn log_refusal(
    shared: &Shared,
    plugin: &str,
    peer: SocketAddr,
    refusal: Refusal,
    admission: Admission,
) {
    let Some(count) = shared.gate.note_refusal(std::time::Instant::now()) else {
        return;
    };
    let action = match admission {
        Admission::Drop(_) => "closed unread",
        _ => "answered over capacity",
    };
    let (open, refused, dropped) = shared.gate.counters();
    warn!(
        event = events::CONNECTION_REFUSED,
        plugin = %plugin,
        %peer,
        limit = refusal.as_str(),
        since_last_line = count,
        open,
        refused_total = refused,
        dropped_total = dropped,
        "connection refused by a limit ({action})"
    );
}

/// One descriptor held in reserve, so that when the process runs out, a waiting connection
/// can still be accepted and closed.
struct SpareDescriptor(Option<std::fs::File>);

impl SpareDescriptor {
    fn open() -> Self {
        Self(std::fs::File::open("/dev/null").ok())
    }

    /// Free the spare, accept one waiting connection and close it, take the spare back.
    /// Returns whether a connection was shed.
    async fn shed_one(&mut self, listener: &TcpListener) -> bool {
        if self.0.take().is_none() {
            *self = Self::open();
            return false;
        }
        let shed = matches!(
            tokio::time::timeout(SHED_WAIT, listener.accept()).await,
            Ok(Ok(_))
        );
        *self = Self::open();
        shed
    }
}

//! TLS terminated by the host: every listener marked `tls = "name"` in `listen` (and the admin
//! API with `[admin] tls`) wraps its connections in TLS before the plugin sees a byte, so
//! every plugin, third-party ones included, serves over TLS unchanged.
//!
//! - [`certs`]: loading and checking one certificate and key;
//! - [`TlsRegistry`]: the certificate sets by name, and which listener uses which; a reload
//!   swaps certificates inside the resolver, so new handshakes present the new certificate
//!   while open connections keep theirs, and a refused certificate leaves the old one serving;
//! - [`accept`]: the handshake of one connection, bounded in time, with plain text refused.

pub mod certs;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info, warn};

use crate::config::{Config, TlsConfig};
use crate::events;
use crate::limits::RefusalLog;
use certs::{CertError, LoadedCert};

/// A certificate expiring sooner than this is warned about.
pub const EXPIRY_WARNING: Duration = Duration::from_secs(14 * 86_400);
/// How often certificates are checked for expiry while the server runs.
pub const EXPIRY_CHECK_INTERVAL: Duration = Duration::from_secs(86_400);
/// The first byte of a TLS handshake record.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;
/// How long a plain-text client's bytes are read and discarded before its connection is
/// closed, so that the close is a FIN and not a reset.
const PLAINTEXT_DRAIN: Duration = Duration::from_millis(200);

/// Whether a certificate with `remaining` time left is to be warned about.
pub fn is_expiring(remaining: Duration) -> bool {
    remaining < EXPIRY_WARNING
}

/// A certificate set's refusal at load or reload.
#[derive(Debug, thiserror::Error)]
#[error("TLS certificate of [tls.{set}] refused: {source}")]
pub struct CertRefusal {
    pub set: String,
    pub source: Box<CertError>,
}

/// The certificates of one `[tls.<name>]`: the default first, then the SNI ones.
#[derive(Debug)]
struct CertSet {
    certs: Vec<LoadedCert>,
}

impl CertSet {
    fn pick(&self, server_name: Option<&str>) -> Option<&LoadedCert> {
        let by_name = server_name.and_then(|name| {
            let name = name.to_ascii_lowercase();
            self.certs.iter().find(|cert| cert.covers(&name))
        });
        by_name.or_else(|| self.certs.first())
    }

    fn same_files_as(&self, other: &[LoadedCert]) -> bool {
        self.certs.len() == other.len()
            && self
                .certs
                .iter()
                .zip(other)
                .all(|(a, b)| a.files == b.files && a.contents == b.contents)
    }
}

/// Picks the certificate of a handshake by its server name (SNI); a reload swaps the set.
#[derive(Debug)]
pub struct CertResolver {
    set: ArcSwap<CertSet>,
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let set = self.set.load();
        set.pick(hello.server_name())
            .map(|cert| Arc::clone(&cert.key))
    }
}

/// One `[tls.<name>]`, ready for handshakes.
pub struct TlsSet {
    resolver: Arc<CertResolver>,
    /// Without ALPN, for protocols other than HTTP.
    plain: TlsAcceptor,
    /// Offering ALPN `http/1.1`.
    http: TlsAcceptor,
    handshake_timeout: Duration,
}

/// What one listener needs to accept a TLS connection.
#[derive(Clone)]
pub struct ListenerTls {
    pub acceptor: TlsAcceptor,
    pub handshake_timeout: Duration,
}

fn server_config(resolver: &Arc<CertResolver>, alpn: &[&[u8]]) -> ServerConfig {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .expect("the ring provider supports TLS 1.2 and 1.3")
        .with_no_client_auth()
        .with_cert_resolver(Arc::clone(resolver) as Arc<dyn ResolvesServerCert>);
    config.alpn_protocols = alpn.iter().map(|protocol| protocol.to_vec()).collect();
    config
}

impl TlsSet {
    fn new(certs: Vec<LoadedCert>, handshake_timeout: Duration) -> Self {
        let resolver = Arc::new(CertResolver {
            set: ArcSwap::from_pointee(CertSet { certs }),
        });
        Self {
            plain: TlsAcceptor::from(Arc::new(server_config(&resolver, &[]))),
            http: TlsAcceptor::from(Arc::new(server_config(&resolver, &[b"http/1.1"]))),
            resolver,
            handshake_timeout,
        }
    }

    fn for_listener(&self, http: bool) -> ListenerTls {
        ListenerTls {
            acceptor: if http {
                self.http.clone()
            } else {
                self.plain.clone()
            },
            handshake_timeout: self.handshake_timeout,
        }
    }
}

/// Plugins whose listeners offer ALPN `http/1.1`.
fn speaks_http(plugin: &str) -> bool {
    matches!(plugin, "http" | "ws")
}

/// Every certificate set by name, and which listener uses which.
#[derive(Default)]
pub struct TlsRegistry {
    sets: ArcSwap<BTreeMap<String, Arc<TlsSet>>>,
    /// (plugin, configured address) → `[tls.<name>]`.
    listeners: ArcSwap<BTreeMap<(String, SocketAddr), String>>,
    handshake_failures: Mutex<RefusalLog>,
    plaintext: Mutex<RefusalLog>,
}

impl TlsRegistry {
    /// Load the certificates of `config` and take its listener assignments. A set whose
    /// certificates are refused keeps its previous certificates (if it had any); the
    /// refusals are logged and returned.
    pub fn apply(&self, config: &Config, now: SystemTime) -> Vec<CertRefusal> {
        let old = self.sets.load_full();
        let mut sets = BTreeMap::new();
        let mut refusals = Vec::new();
        for tls in config.tls.values() {
            match load_set(tls, now) {
                Ok(certs) => {
                    sets.insert(tls.name.clone(), Arc::new(self.updated(&old, tls, certs)));
                }
                Err(refusal) => {
                    warn!(event = events::TLS_CERT_REFUSED, set = %tls.name, "{refusal}; the previous certificate (if any) keeps serving");
                    if let Some(previous) = old.get(&tls.name) {
                        sets.insert(tls.name.clone(), Arc::clone(previous));
                    }
                    refusals.push(refusal);
                }
            }
        }
        let listeners = config
            .plugins
            .values()
            .flat_map(|plugin| {
                plugin
                    .tls_listen
                    .iter()
                    .map(|(address, set)| ((plugin.name.clone(), *address), set.clone()))
            })
            .collect();
        self.sets.store(Arc::new(sets));
        self.listeners.store(Arc::new(listeners));
        // At start and at every reload: a renewal that is still about to expire is told.
        self.check_expiry(now);
        refusals
    }

    /// The set for `tls` with `certs`: the running one with its certificates swapped when it
    /// exists (so handshakes already configured see the change), else a new one.
    fn updated(
        &self,
        old: &BTreeMap<String, Arc<TlsSet>>,
        tls: &TlsConfig,
        certs: Vec<LoadedCert>,
    ) -> TlsSet {
        if let Some(previous) = old.get(&tls.name) {
            let unchanged = previous.resolver.set.load().same_files_as(&certs);
            if !unchanged {
                info!(set = %tls.name, certificates = certs.len(), "TLS certificates reloaded; new handshakes present them");
            }
            if !unchanged || previous.handshake_timeout != tls.handshake_timeout {
                previous.resolver.set.store(Arc::new(CertSet { certs }));
            }
            return TlsSet {
                resolver: Arc::clone(&previous.resolver),
                plain: previous.plain.clone(),
                http: previous.http.clone(),
                handshake_timeout: tls.handshake_timeout,
            };
        }
        TlsSet::new(certs, tls.handshake_timeout)
    }

    /// The TLS of `plugin`'s listener on `address` (as configured), if it has one.
    pub fn for_listener(&self, plugin: &str, address: SocketAddr) -> Option<ListenerTls> {
        let listeners = self.listeners.load();
        let name = listeners.get(&(plugin.to_owned(), address))?;
        Some(
            self.sets
                .load()
                .get(name)?
                .for_listener(speaks_http(plugin)),
        )
    }

    /// The HTTP TLS of the set `name`, for the admin API.
    pub fn for_http(&self, name: &str) -> Option<ListenerTls> {
        Some(self.sets.load().get(name)?.for_listener(true))
    }

    /// Whether `plugin`'s listener on `address` is marked TLS (whether or not its
    /// certificates loaded).
    pub fn is_tls_listener(&self, plugin: &str, address: SocketAddr) -> bool {
        self.listeners
            .load()
            .contains_key(&(plugin.to_owned(), address))
    }

    /// Every certificate's name, file and expiry.
    pub fn expiries(&self) -> Vec<(String, String, SystemTime)> {
        let mut all = Vec::new();
        for (set, tls) in self.sets.load().iter() {
            for cert in &tls.resolver.set.load().certs {
                let name = cert.names.first().cloned().unwrap_or_else(|| set.clone());
                all.push((set.clone(), name, cert.not_after));
            }
        }
        all
    }

    /// Warn about certificates expiring within [`EXPIRY_WARNING`] and update the gauge.
    pub fn check_expiry(&self, now: SystemTime) {
        for set in self.sets.load().values() {
            for cert in &set.resolver.set.load().certs {
                let remaining = cert.remaining(now);
                if is_expiring(remaining) {
                    warn!(
                        event = events::TLS_CERT_EXPIRING,
                        cert = %cert.files.cert.display(),
                        names = %cert.names.join(","),
                        days_left = remaining.as_secs() / 86_400,
                        "TLS certificate expires soon; renew it (the server reloads renewed files by itself)"
                    );
                }
            }
        }
        crate::metrics::set_tls_expiries(self.expiries());
    }

    fn note(&self, log: &Mutex<RefusalLog>) -> Option<u64> {
        log.lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .note(Instant::now())
    }
}

fn load_set(tls: &TlsConfig, now: SystemTime) -> Result<Vec<LoadedCert>, CertRefusal> {
    tls.certs
        .iter()
        .map(|files| LoadedCert::load(files, now))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| CertRefusal {
            set: tls.name.clone(),
            source: Box::new(source),
        })
}

/// Check every certificate for expiry daily (start and reloads check on their own), until
/// the task is aborted.
pub async fn watch_expiry(registry: Arc<TlsRegistry>) {
    loop {
        tokio::time::sleep(EXPIRY_CHECK_INTERVAL).await;
        registry.check_expiry(SystemTime::now());
    }
}

/// Why a connection on a TLS listener never reached its plugin.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("no TLS handshake within {0:?}")]
    TimedOut(Duration),
    #[error("the client spoke plain text to a TLS port")]
    PlainText,
    #[error("TLS handshake failed: {0}")]
    Failed(std::io::Error),
}

/// Run the server side of the handshake on `socket`, bounded by the handshake timeout. A
/// failure is logged (rate limited) and the socket closed.
pub async fn accept(
    registry: &TlsRegistry,
    tls: &ListenerTls,
    socket: TcpStream,
    plugin: &str,
    peer: SocketAddr,
) -> Option<TlsStream<TcpStream>> {
    let outcome = tokio::time::timeout(tls.handshake_timeout, handshake(tls, socket)).await;
    let error = match outcome {
        Ok(Ok(stream)) => return Some(stream),
        Ok(Err(error)) => error,
        Err(_) => HandshakeError::TimedOut(tls.handshake_timeout),
    };
    let (log, event) = match error {
        HandshakeError::PlainText => (&registry.plaintext, events::TLS_PLAINTEXT_REFUSED),
        _ => (&registry.handshake_failures, events::TLS_HANDSHAKE_FAILED),
    };
    match registry.note(log) {
        Some(count) => {
            warn!(event, plugin, %peer, since_last_line = count, "{error}; connection closed")
        }
        None => debug!(plugin, %peer, "{error}; connection closed"),
    }
    None
}

async fn handshake(
    tls: &ListenerTls,
    socket: TcpStream,
) -> Result<TlsStream<TcpStream>, HandshakeError> {
    let mut first = [0u8; 1];
    let peeked = socket
        .peek(&mut first)
        .await
        .map_err(HandshakeError::Failed)?;
    if peeked == 1 && first[0] != TLS_HANDSHAKE_RECORD {
        close_plaintext(socket).await;
        return Err(HandshakeError::PlainText);
    }
    tls.acceptor
        .accept(socket)
        .await
        .map_err(HandshakeError::Failed)
}

/// Read what a plain-text client sent (briefly) and close with a FIN, not a reset.
async fn close_plaintext(mut socket: TcpStream) {
    let _ = socket.shutdown().await;
    let mut sink = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + PLAINTEXT_DRAIN;
    while let Ok(Ok(read)) = tokio::time::timeout_at(deadline, socket.read(&mut sink)).await {
        if read == 0 {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::CertFiles;
    use std::path::Path;

    /// A self-signed certificate for `names` (common name `label`) written into `dir`.
    fn write_cert(dir: &Path, stem: &str, label: &str, names: &[&str]) -> CertFiles {
        let names: Vec<String> = names.iter().map(|name| name.to_string()).collect();
        let mut params = rcgen::CertificateParams::new(names).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, label);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let files = CertFiles {
            cert: dir.join(format!("{stem}.pem")),
            key: dir.join(format!("{stem}.key")),
        };
        std::fs::write(&files.cert, cert.pem()).unwrap();
        std::fs::write(&files.key, key.serialize_pem()).unwrap();
        files
    }

    fn tls_config(name: &str, certs: Vec<CertFiles>) -> TlsConfig {
        TlsConfig {
            name: name.to_owned(),
            certs,
            handshake_timeout: Duration::from_secs(1),
        }
    }

    fn set_names(registry: &TlsRegistry, set: &str) -> Vec<String> {
        registry.sets.load()[set]
            .resolver
            .set
            .load()
            .certs
            .iter()
            .flat_map(|cert| cert.names.clone())
            .collect()
    }

    #[test]
    fn sni_picks_the_certificate_covering_the_name_else_the_first() {
        let dir = tempfile::tempdir().unwrap();
        let now = SystemTime::now();
        let certs = vec![
            LoadedCert::load(&write_cert(dir.path(), "a", "a", &["a.test"]), now).unwrap(),
            LoadedCert::load(&write_cert(dir.path(), "b", "b", &["*.b.test"]), now).unwrap(),
        ];
        let set = CertSet { certs };
        let pick = |name: Option<&str>| set.pick(name).unwrap().names.clone();
        assert_eq!(pick(Some("x.B.test")), vec!["*.b.test"]);
        assert_eq!(pick(Some("a.test")), vec!["a.test"]);
        assert_eq!(pick(Some("c.test")), vec!["a.test"]);
        assert_eq!(pick(None), vec!["a.test"]);
    }

    #[test]
    fn a_refused_certificate_names_its_file_and_leaves_the_old_one_serving() {
        let dir = tempfile::tempdir().unwrap();
        let now = SystemTime::now();
        let good = write_cert(dir.path(), "main", "one", &["one.test"]);
        let mut config = Config {
            path: dir.path().join("ferrocast.toml"),
            server: Default::default(),
            limits: Default::default(),
            plugins: Default::default(),
            points: Vec::new(),
            security: Default::default(),
            admin: None,
            access_log: None,
            hls: Default::default(),
            recordings: Default::default(),
            tls: Default::default(),
            warnings: Vec::new(),
        };
        config
            .tls
            .insert("main".into(), tls_config("main", vec![good.clone()]));
        let registry = TlsRegistry::default();
        assert!(registry.apply(&config, now).is_empty());
        assert_eq!(set_names(&registry, "main"), vec!["one.test"]);

        // A key of another certificate.
        let other = write_cert(dir.path(), "other", "two", &["two.test"]);
        std::fs::copy(&other.key, &good.key).unwrap();
        let refusals = registry.apply(&config, now);
        assert_eq!(refusals.len(), 1);
        assert!(matches!(*refusals[0].source, CertError::KeyMismatch { .. }));
        assert!(
            refusals[0].to_string().contains("main.key"),
            "{}",
            refusals[0]
        );
        assert_eq!(set_names(&registry, "main"), vec!["one.test"]);

        // Missing files, then a certificate that expired (seen from the future).
        std::fs::remove_file(&good.cert).unwrap();
        let refusals = registry.apply(&config, now);
        assert!(matches!(*refusals[0].source, CertError::Read { .. }));
        let renewed = write_cert(dir.path(), "main", "three", &["three.test"]);
        // rcgen certificates end in 4096.
        let later = now + Duration::from_secs(3_000 * 365 * 86_400);
        let refusals = registry.apply(&config, later);
        assert!(matches!(*refusals[0].source, CertError::Expired { .. }));
        assert_eq!(set_names(&registry, "main"), vec!["one.test"]);

        // A good renewal is taken.
        assert_eq!(renewed, good);
        assert!(registry.apply(&config, now).is_empty());
        assert_eq!(set_names(&registry, "main"), vec!["three.test"]);
    }

    #[test]
    fn certificates_within_fourteen_days_are_expiring() {
        assert!(is_expiring(Duration::from_secs(13 * 86_400)));
        assert!(is_expiring(Duration::ZERO));
        assert!(!is_expiring(Duration::from_secs(15 * 86_400)));
    }
}

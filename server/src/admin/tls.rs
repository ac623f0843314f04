//! The admin API over TLS: an accept task runs each handshake in a task of its own (so a
//! slow client cannot hold up the others) and hands finished streams to the HTTP server.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tracing::debug;

use crate::tls::TlsRegistry;

/// Streams whose handshake finished, waiting for the HTTP server to take them.
const READY_QUEUE: usize = 64;

/// An [`axum::serve::Listener`] of TLS streams.
pub(super) struct TlsIncoming {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: std::io::Result<SocketAddr>,
    accepting: tokio::task::JoinHandle<()>,
}

impl TlsIncoming {
    /// Accept on `listener` with the certificates of `[tls.<set>]`, looked up at each
    /// connection so that reloaded certificates apply at once.
    pub(super) fn start(listener: TcpListener, set: String, registry: Arc<TlsRegistry>) -> Self {
        let local = listener.local_addr();
        let (ready_tx, ready) = mpsc::channel(READY_QUEUE);
        let accepting = tokio::spawn(accept_loop(listener, set, registry, ready_tx));
        Self {
            ready,
            local,
            accepting,
        }
    }
}

impl Drop for TlsIncoming {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

async fn accept_loop(
    listener: TcpListener,
    set: String,
    registry: Arc<TlsRegistry>,
    ready: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
) {
    loop {
        let Ok((socket, peer)) = listener.accept().await else {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            continue;
        };
        let Some(tls) = registry.for_http(&set) else {
            debug!(%peer, set, "admin TLS without certificates; connection closed");
            continue;
        };
        let registry = Arc::clone(&registry);
        let ready = ready.clone();
        tokio::spawn(async move {
            if let Some(stream) = crate::tls::accept(&registry, &tls, socket, "admin", peer).await {
                let _ = ready.send((stream, peer)).await;
            }
        });
    }
}

impl axum::serve::Listener for TlsIncoming {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(ready) => ready,
            // The accept task only ends when aborted, with this listener.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        match &self.local {
            Ok(address) => Ok(*address),
            Err(error) => Err(std::io::Error::new(error.kind(), error.to_string())),
        }
    }
}

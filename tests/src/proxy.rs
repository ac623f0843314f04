//! A fault-injection TCP proxy for tests: it sits between a client (an encoder, a player) and
//! a server on loopback, forwards every byte both ways, and on command breaks the path the way
//! real networks do: [`FaultProxy::cut`] resets every open connection, [`FaultProxy::stall`]
//! stops forwarding without closing anything (a frozen path or peer), and
//! [`FaultProxy::refuse`] makes new connections close at once (an origin that is down).
//!
//! Plain threads and blocking sockets with short timeouts: every thread polls the proxy's
//! flags at least every `POLL` (20 ms), so controls take effect promptly and dropping the proxy
//! never hangs.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long a thread blocks in one socket call before it looks at the controls again.
const POLL: Duration = Duration::from_millis(20);
/// The longest a control or drop waits for threads and sockets to finish.
const SETTLE: Duration = Duration::from_secs(2);

/// A TCP proxy on a loopback port forwarding to one target. Stopped on drop.
pub struct FaultProxy {
    address: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

/// State shared by the proxy handle, the accepting thread and the forwarding threads.
struct Shared {
    target: SocketAddr,
    stop: AtomicBool,
    stalled: AtomicBool,
    refusing: AtomicBool,
    accepted: AtomicUsize,
    /// Open links. Only the two forwarding threads hold a link strongly, so a link's sockets
    /// are closed exactly when both threads have finished with it.
    links: Mutex<Vec<Weak<Link>>>,
}

/// One forwarded connection: the accepted client socket and the socket to the target.
struct Link {
    client: TcpStream,
    upstream: TcpStream,
    cut: AtomicBool,
}

impl Link {
    /// Tear the link down abruptly: with a zero linger, closing sends a reset (no FIN), as a
    /// crashed middlebox or a pulled cable followed by a timeout would look to both peers.
    fn abort(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for socket in [&self.client, &self.upstream] {
            let _ = socket2::SockRef::from(socket).set_linger(Some(Duration::ZERO));
        }
    }

    fn is_cut(&self) -> bool {
        self.cut.load(Ordering::SeqCst)
    }
}

impl FaultProxy {
    /// Listen on a fresh loopback port and forward every connection to `target`.
    pub fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        listener
            .set_nonblocking(true)
            .expect("nonblocking listener");
        let address = listener.local_addr().expect("proxy address");
        let shared = Arc::new(Shared {
            target,
            stop: AtomicBool::new(false),
            stalled: AtomicBool::new(false),
            refusing: AtomicBool::new(false),
            accepted: AtomicUsize::new(0),
            links: Mutex::new(Vec::new()),
        });
        let acceptor = {
            let shared = Arc::clone(&shared);
            std::thread::spawn(move || accept_loop(listener, shared))
        };
        Self {
            address,
            shared,
            acceptor: Some(acceptor),
        }
    }

    /// Where clients connect.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Connections accepted so far, refused ones included.
    pub fn connections(&self) -> usize {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    /// Reset every open connection, both sides; returns once their sockets are closed (or
    /// after a bounded wait). Later connections are forwarded normally.
    pub fn cut(&self) {
        self.shared.cut_all();
    }

    /// Stop forwarding in both directions without closing anything: nothing more is read, so
    /// senders fill the socket buffers and then block, as behind a frozen path. Applies to
    /// new connections too, until [`FaultProxy::resume`].
    pub fn stall(&self) {
        self.shared.stalled.store(true, Ordering::SeqCst);
    }

    /// Forward again; whatever the peers sent meanwhile is delivered.
    pub fn resume(&self) {
        self.shared.stalled.store(false, Ordering::SeqCst);
    }

    /// While `true`, new connections are accepted and closed at once.
    pub fn refuse(&self, refusing: bool) {
        self.shared.refusing.store(refusing, Ordering::SeqCst);
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.cut_all();
        if let Some(acceptor) = self.acceptor.take() {
            // Bounded join: the acceptor polls `stop` every few milliseconds, but a test must
            // never hang here if it did not.
            let deadline = Instant::now() + SETTLE;
            while !acceptor.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            if acceptor.is_finished() {
                let _ = acceptor.join();
            }
        }
    }
}

impl Shared {
    fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    fn stalled(&self) -> bool {
        self.stalled.load(Ordering::SeqCst)
    }

    fn cut_all(&self) {
        let links: Vec<Weak<Link>> = std::mem::take(&mut *self.links.lock().unwrap());
        for link in links.iter().filter_map(Weak::upgrade) {
            link.abort();
        }
        // The forwarding threads notice within one poll and drop their handles; wait for the
        // sockets to be closed so the caller can rely on the cut having happened.
        let deadline = Instant::now() + SETTLE;
        while links.iter().any(|link| link.strong_count() > 0) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    while !shared.stopping() {
        let client = match listener.accept() {
            Ok((client, _)) => client,
            // Nonblocking accept polled briefly, so `stop` is seen at once.
            Err(_) => {
                std::thread::sleep(Duration::from_millis(2));
                continue;
            }
        };
        shared.accepted.fetch_add(1, Ordering::SeqCst);
        if shared.refusing.load(Ordering::SeqCst) {
            drop(client);
            continue;
        }
        let upstream = match TcpStream::connect_timeout(&shared.target, SETTLE) {
            Ok(upstream) => upstream,
            Err(_) => {
                // The target is down: the client sees its connection reset, not forwarded.
                let _ = socket2::SockRef::from(&client).set_linger(Some(Duration::ZERO));
                continue;
            }
        };
        if configure(&client).and(configure(&upstream)).is_err() {
            continue;
        }
        let link = Arc::new(Link {
            client,
            upstream,
            cut: AtomicBool::new(false),
        });
        {
            let mut links = shared.links.lock().unwrap();
            links.retain(|link| link.strong_count() > 0);
            links.push(Arc::downgrade(&link));
        }
        for toward_target in [true, false] {
            let (link, shared) = (Arc::clone(&link), Arc::clone(&shared));
            std::thread::spawn(move || pump(&link, &shared, toward_target));
        }
    }
}

fn configure(socket: &TcpStream) -> std::io::Result<()> {
    socket.set_nonblocking(false)?;
    socket.set_nodelay(true)?;
    socket.set_read_timeout(Some(POLL))?;
    socket.set_write_timeout(Some(POLL))
}

fn is_timeout(error: &std::io::Error) -> bool {
    matches!(
        error.kind(),
        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
    )
}

/// Forward one direction of `link` until either side closes, the link is cut, or the proxy
/// stops.
fn pump(link: &Link, shared: &Shared, toward_target: bool) {
    let (mut from, mut to) = if toward_target {
        (&link.client, &link.upstream)
    } else {
        (&link.upstream, &link.client)
    };
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        if link.is_cut() || shared.stopping() {
            return;
        }
        if shared.stalled() {
            // Not reading is how bytes are held: they stay in the kernel's buffers.
            std::thread::sleep(POLL);
            continue;
        }
        match from.read(&mut buf) {
            Ok(0) => {
                if !link.is_cut() {
                    // A clean close is passed on as one: half-close toward the other peer.
                    let _ = to.shutdown(Shutdown::Write);
                }
                return;
            }
            Ok(n) => {
                if !forward(&buf[..n], &mut to, link, shared) {
                    link.abort();
                    return;
                }
            }
            Err(error) if is_timeout(&error) => {}
            Err(_) => {
                // One side reset: the other sees a reset too, as through a real path.
                link.abort();
                return;
            }
        }
    }
}

/// Write all of `data` to `to`, pausing while stalled; `false` if the link broke meanwhile.
fn forward(mut data: &[u8], to: &mut &TcpStream, link: &Link, shared: &Shared) -> bool {
    while !data.is_empty() {
        if link.is_cut() || shared.stopping() {
            return false;
        }
        if shared.stalled() {
            std::thread::sleep(POLL);
            continue;
        }
        match to.write(data) {
            Ok(0) => return false,
            Ok(n) => data = &data[n..],
            Err(error) if is_timeout(&error) => {}
            Err(_) => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An echo server on loopback; it stops when dropped, and after 30 s in any case.
    struct Echo {
        address: SocketAddr,
        stop: Arc<AtomicBool>,
    }

    impl Drop for Echo {
        fn drop(&mut self) {
            self.stop.store(true, Ordering::SeqCst);
        }
    }

    fn echo_server() -> Echo {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let address = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(30);
            while !flag.load(Ordering::SeqCst) && Instant::now() < deadline {
                let Ok((mut socket, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(2));
                    continue;
                };
                let flag = Arc::clone(&flag);
                std::thread::spawn(move || {
                    socket.set_nonblocking(false).unwrap();
                    socket.set_read_timeout(Some(POLL)).unwrap();
                    let mut buf = [0u8; 8192];
                    while !flag.load(Ordering::SeqCst) && Instant::now() < deadline {
                        match socket.read(&mut buf) {
                            Ok(0) => return,
                            Ok(n) => {
                                if socket.write_all(&buf[..n]).is_err() {
                                    return;
                                }
                            }
                            Err(error) if is_timeout(&error) => {}
                            Err(_) => return,
                        }
                    }
                });
            }
        });
        Echo { address, stop }
    }

    fn connect(proxy: &FaultProxy) -> TcpStream {
        let socket = TcpStream::connect(proxy.address()).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        socket
    }

    fn echo_once(socket: &mut TcpStream, message: &[u8]) {
        socket.write_all(message).unwrap();
        let mut back = vec![0u8; message.len()];
        socket.read_exact(&mut back).unwrap();
        assert_eq!(back, message);
    }

    /// The connection ends (EOF or reset) within `within`.
    fn closes_within(socket: &mut TcpStream, within: Duration) -> bool {
        socket.set_read_timeout(Some(within)).unwrap();
        let mut buf = [0u8; 64];
        match socket.read(&mut buf) {
            Ok(0) => true,
            Ok(_) => false,
            Err(error) => !is_timeout(&error),
        }
    }

    #[test]
    fn forwards_every_byte_both_ways() {
        let echo = echo_server();
        let proxy = FaultProxy::start(echo.address);
        let mut socket = connect(&proxy);
        echo_once(&mut socket, b"hello");

        // A larger stream, written while it is read back, arrives intact and in order.
        let data: Vec<u8> = (0..512 * 1024u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
            .collect();
        let mut writer = socket.try_clone().unwrap();
        let sent = data.clone();
        let writing = std::thread::spawn(move || writer.write_all(&sent).unwrap());
        let mut back = vec![0u8; data.len()];
        socket.read_exact(&mut back).unwrap();
        writing.join().unwrap();
        assert!(back == data, "bytes changed on the way");
        assert_eq!(proxy.connections(), 1);
    }

    #[test]
    fn cut_resets_open_connections_and_later_ones_work() {
        let echo = echo_server();
        let proxy = FaultProxy::start(echo.address);
        let mut first = connect(&proxy);
        echo_once(&mut first, b"before");

        proxy.cut();
        assert!(closes_within(&mut first, Duration::from_secs(1)));
        // Writing into a reset connection fails (at the latest on the second write).
        let failed = (0..2).any(|_| first.write_all(b"after").is_err());
        assert!(failed, "the cut connection still accepts writes");

        let mut second = connect(&proxy);
        echo_once(&mut second, b"again");
        assert_eq!(proxy.connections(), 2);
    }

    #[test]
    fn stall_holds_bytes_until_resume() {
        let echo = echo_server();
        let proxy = FaultProxy::start(echo.address);
        let mut socket = connect(&proxy);
        echo_once(&mut socket, b"a");

        proxy.stall();
        socket.write_all(b"held").unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let mut buf = [0u8; 4];
        let error = socket.read(&mut buf).expect_err("nothing may pass a stall");
        assert!(is_timeout(&error), "{error}");

        proxy.resume();
        socket
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        socket.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"held");
    }

    #[test]
    fn refuse_closes_new_connections_until_lifted() {
        let echo = echo_server();
        let proxy = FaultProxy::start(echo.address);
        proxy.refuse(true);
        let mut refused = connect(&proxy);
        assert!(closes_within(&mut refused, Duration::from_secs(1)));

        proxy.refuse(false);
        let mut served = connect(&proxy);
        echo_once(&mut served, b"up again");
        assert_eq!(proxy.connections(), 2);
    }
}

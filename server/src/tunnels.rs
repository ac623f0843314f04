//! HTTP tunnels: the pairing of the two connections of RTSP over HTTP (the QuickTime scheme).
//!
//! The client opens a GET that carries the server's answers and media, and a POST that
//! carries its requests; both name the same `x-sessioncookie`. The GET's session opens the
//! tunnel under the cookie and keeps its [`TunnelEnd`]; the POST's session feeds the decoded
//! requests into the tunnel, and they reach the GET's session as if read from its own socket.
//! The table is bounded, cookies are bounded in length, and a tunnel goes when its GET
//! connection ends (its `TunnelEnd` is dropped) or when a POST closes it (a broken body).
//!
//! On the HTTP plugin's port, the http plugin recognises either half and hands the connection
//! over to the rtsp plugin ([`Handover`]); from then on the connection is an rtsp one.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use ferrocast_plugin_api::{ErrorCode, HostError};
use thiserror::Error;
use tokio::sync::mpsc;

/// A session's request to pass its connection to another control plugin, carried out by the
/// IO loop after the current plugin call.
pub struct Handover {
    pub plugin: Arc<crate::state::ServingPlugin>,
    /// What the first session read, replayed to the new one.
    pub data: Vec<u8>,
}

/// `name` with a static lifetime, as a connection names its plugin. Each distinct name is
/// allocated once, so the memory is bounded by the plugins ever configured.
pub fn static_name(name: &str) -> &'static str {
    static NAMES: Mutex<BTreeSet<&'static str>> = Mutex::new(BTreeSet::new());
    let mut names = NAMES
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(known) = names.get(name) {
        return known;
    }
    let leaked: &'static str = Box::leak(name.to_owned().into_boxed_str());
    names.insert(leaked);
    leaked
}

/// Longest cookie accepted (clients send 22 to 32 characters).
pub const MAX_COOKIE_LEN: usize = 128;
/// Most tunnels open at once, server-wide.
pub const MAX_TUNNELS: usize = 4096;
/// Pieces of request bytes queued for a GET connection that has not taken them yet.
const QUEUED_PIECES: usize = 256;

/// Why a tunnel could not be opened or fed.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum TunnelError {
    #[error("tunnel cookie must be 1 to {MAX_COOKIE_LEN} visible ASCII characters")]
    BadCookie,
    #[error("a tunnel with cookie `{0}` is already open")]
    InUse(String),
    #[error("the server holds {MAX_TUNNELS} tunnels, its most")]
    Full,
    #[error("no tunnel with cookie `{0}` is open; open the GET before the POST")]
    NotFound(String),
    #[error("tunnel `{0}` was opened from another client address")]
    OtherClient(String),
    #[error("tunnel `{0}` is too far behind its requests")]
    Backlog(String),
}

impl TunnelError {
    /// The refusal as the plugin interface carries it.
    pub fn to_host_error(&self) -> HostError {
        let code = match self {
            TunnelError::BadCookie => ErrorCode::BAD_RANGE,
            TunnelError::InUse(_) => ErrorCode::INVALID_STATE,
            TunnelError::Full | TunnelError::Backlog(_) => ErrorCode::OVER_CAPACITY,
            TunnelError::NotFound(_) => ErrorCode::NOT_FOUND,
            TunnelError::OtherClient(_) => ErrorCode::FORBIDDEN,
        };
        HostError::new(code, self.to_string())
    }
}

struct Entry {
    /// The session of the GET connection.
    owner: u64,
    client: IpAddr,
    sender: mpsc::Sender<Vec<u8>>,
}

type Entries = Arc<Mutex<HashMap<String, Entry>>>;

/// The open tunnels, by cookie.
#[derive(Default)]
pub struct TunnelTable {
    entries: Entries,
}

/// The GET connection's end of a tunnel: the requests fed into it. Dropping it closes the
/// tunnel.
pub struct TunnelEnd {
    cookie: String,
    owner: u64,
    entries: Entries,
    receiver: mpsc::Receiver<Vec<u8>>,
}

impl TunnelEnd {
    /// The next piece of request bytes; `None` once the tunnel was closed by its POST side.
    pub async fn recv(&mut self) -> Option<Vec<u8>> {
        self.receiver.recv().await
    }
}

impl Drop for TunnelEnd {
    fn drop(&mut self) {
        let mut entries = lock(&self.entries);
        if entries
            .get(&self.cookie)
            .is_some_and(|e| e.owner == self.owner)
        {
            entries.remove(&self.cookie);
        }
    }
}

fn lock(entries: &Entries) -> MutexGuard<'_, HashMap<String, Entry>> {
    entries
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn valid_cookie(cookie: &str) -> bool {
    !cookie.is_empty()
        && cookie.len() <= MAX_COOKIE_LEN
        && cookie.bytes().all(|b| b.is_ascii_graphic())
}

impl TunnelTable {
    /// Open tunnel `cookie` for the GET connection of session `owner`, from `client`.
    pub fn open(&self, cookie: &str, owner: u64, client: IpAddr) -> Result<TunnelEnd, TunnelError> {
        if !valid_cookie(cookie) {
            return Err(TunnelError::BadCookie);
        }
        let mut entries = lock(&self.entries);
        if entries.contains_key(cookie) {
            return Err(TunnelError::InUse(cookie.to_owned()));
        }
        if entries.len() >= MAX_TUNNELS {
            return Err(TunnelError::Full);
        }
        let (sender, receiver) = mpsc::channel(QUEUED_PIECES);
        let client = client.to_canonical();
        entries.insert(
            cookie.to_owned(),
            Entry {
                owner,
                client,
                sender,
            },
        );
        Ok(TunnelEnd {
            cookie: cookie.to_owned(),
            owner,
            entries: Arc::clone(&self.entries),
            receiver,
        })
    }

    /// Hand `data` from a POST connection of `client` to tunnel `cookie`.
    pub fn feed(&self, cookie: &str, client: IpAddr, data: &[u8]) -> Result<(), TunnelError> {
        let entries = lock(&self.entries);
        let entry = entries
            .get(cookie)
            .ok_or_else(|| TunnelError::NotFound(shown(cookie)))?;
        if entry.client != client.to_canonical() {
            return Err(TunnelError::OtherClient(shown(cookie)));
        }
        if data.is_empty() {
            // Only a check that the tunnel is there (a POST's head).
            return Ok(());
        }
        entry
            .sender
            .try_send(data.to_vec())
            .map_err(|_| TunnelError::Backlog(shown(cookie)))
    }

    /// Close tunnel `cookie` on behalf of a POST connection of `client`: its GET session
    /// learns it as the end of its input. False when there was no such tunnel of `client`.
    pub fn close(&self, cookie: &str, client: IpAddr) -> bool {
        let mut entries = lock(&self.entries);
        if entries
            .get(cookie)
            .is_some_and(|entry| entry.client == client.to_canonical())
        {
            entries.remove(cookie);
            return true;
        }
        false
    }

    /// Tunnels open now.
    pub fn len(&self) -> usize {
        lock(&self.entries).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A client's cookie as quoted in an answer: bounded, visible characters only.
fn shown(cookie: &str) -> String {
    cookie
        .chars()
        .filter(char::is_ascii_graphic)
        .take(MAX_COOKIE_LEN)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn static_names_are_allocated_once() {
        let first = static_name("rtsp");
        let again = static_name(&String::from("rtsp"));
        assert!(std::ptr::eq(first, again));
        assert_eq!(static_name("http"), "http");
    }

    #[tokio::test]
    async fn fed_bytes_reach_the_get_end_in_order() {
        let table = TunnelTable::default();
        let mut end = table.open("abc", 1, ip("127.0.0.1")).unwrap();
        table.feed("abc", ip("127.0.0.1"), b"OPTIONS").unwrap();
        table.feed("abc", ip("::ffff:127.0.0.1"), b" *").unwrap();
        assert_eq!(end.recv().await.unwrap(), b"OPTIONS");
        assert_eq!(end.recv().await.unwrap(), b" *");
    }

    #[test]
    fn a_post_needs_an_open_tunnel_of_its_own_client() {
        let table = TunnelTable::default();
        assert_eq!(
            table.feed("abc", ip("127.0.0.1"), b"x"),
            Err(TunnelError::NotFound("abc".into()))
        );
        let _end = table.open("abc", 1, ip("127.0.0.1")).unwrap();
        assert_eq!(
            table.feed("abc", ip("192.0.2.1"), b"x"),
            Err(TunnelError::OtherClient("abc".into()))
        );
        assert!(!table.close("abc", ip("192.0.2.1")));
        assert_eq!(table.len(), 1);
    }

    #[tokio::test]
    async fn closing_ends_the_get_side_input_and_dropping_the_end_frees_the_cookie() {
        let table = TunnelTable::default();
        let mut end = table.open("abc", 1, ip("127.0.0.1")).unwrap();
        assert_eq!(
            table.open("abc", 2, ip("127.0.0.1")).err(),
            Some(TunnelError::InUse("abc".into()))
        );
        assert!(table.close("abc", ip("127.0.0.1")));
        assert_eq!(end.recv().await, None);
        let again = table.open("abc", 2, ip("127.0.0.1")).unwrap();
        // The first end going must not take the second tunnel with it.
        drop(end);
        assert_eq!(table.len(), 1);
        drop(again);
        assert!(table.is_empty());
    }

    #[test]
    fn cookies_are_bounded_and_visible() {
        let table = TunnelTable::default();
        for bad in ["", "a b", "\u{7f}", &"x".repeat(MAX_COOKIE_LEN + 1)] {
            assert_eq!(
                table.open(bad, 1, ip("127.0.0.1")).err(),
                Some(TunnelError::BadCookie)
            );
        }
        assert!(table
            .open(&"x".repeat(MAX_COOKIE_LEN), 1, ip("127.0.0.1"))
            .is_ok());
    }

    #[test]
    fn the_table_is_bounded_and_a_stalled_end_refuses_more() {
        let table = TunnelTable::default();
        let ends: Vec<TunnelEnd> = (0..MAX_TUNNELS)
            .map(|n| {
                table
                    .open(&format!("c{n}"), n as u64, ip("127.0.0.1"))
                    .unwrap()
            })
            .collect();
        assert_eq!(
            table.open("one-more", 0, ip("127.0.0.1")).err(),
            Some(TunnelError::Full)
        );
        for _ in 0..QUEUED_PIECES {
            table.feed("c0", ip("127.0.0.1"), b"x").unwrap();
        }
        assert_eq!(
            table.feed("c0", ip("127.0.0.1"), b"x"),
            Err(TunnelError::Backlog("c0".into()))
        );
        drop(ends);
        assert!(table.is_empty());
    }
}

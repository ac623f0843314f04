//! The TCP fan-out of a live point: one writer for every caught-up listener that takes the
//! point as raw TS on a plain TCP socket (HTTP, raw TCP).
//!
//! Such a listener's connection task sends its join backlog and anything it falls behind on
//! itself. Once its output queue is empty and nothing waits for it in the ring, it hands its
//! socket to the point's fan-out: a task that takes each chunk from the ring once and writes
//! it to every listener's socket in turn, without waking the listeners' tasks. So a chunk
//! costs one task wake-up instead of one per listener. A point has up to one such fan-out
//! per core ([`TcpFanouts`]): listeners fill one before the next is used, so a popular
//! point's writes are spread over the runtime's threads. Small media (a radio stream) is held to gather more, as a
//! listener's own queue would hold it, so each listener gets one write per hold.
//!
//! The fan-out never queues for anyone and never waits on a socket. A listener whose socket
//! does not take a whole write, or that falls behind the fan-out, and every listener at any
//! ring event other than media (a source change, the end, a lag), goes back to its task with
//! the rest of the chunk the socket cut, the index of the next chunk it needs
//! ([`super::LiveChunk::index`]) and its own ring subscription, which the fan-out moved along
//! over every chunk it wrote (so the ring frees chunks as it did). The task goes on from there
//! under the usual slow-client policy. A task that needs its socket for anything else (a
//! request, a timer, a reload) takes it back the same way, at once.
//!
//! The fan-out writes to the listener's socket by its descriptor. The connection guarantees
//! the descriptor stays open while it is a member: it leaves (under the shard's lock, so no
//! write is under way) before it closes the socket.

use std::io::{self, IoSlice};
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use arc_swap::ArcSwap;
use bytes::Bytes;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::sync::{broadcast, oneshot};
use tokio::time::Instant;
use tracing::{info, warn};

use super::{LiveChunk, LiveEvent};
use crate::conn::{Coalesce, HoldRule};
use crate::events;
use crate::state::SentBytes;
use crate::waits::{sleep_until_opt, Told};

/// The environment variable that turns the fan-out off (`off`, `0`, `false` or `no`): every
/// listener then writes each chunk from its own task.
pub const FANOUT_VARIABLE: &str = "FERROCAST_TCP_FANOUT";

/// Listeners are kept in this many lists, each behind its own lock: a listener leaving waits
/// at most for the writes to one list, not to every listener of the point.
const SHARDS: usize = 32;

/// Most buffers handed to one vectored write.
const MAX_IOVECS: usize = 64;

/// Listeners written to before the fan-out lets other tasks of its thread run.
const WRITES_BEFORE_YIELD: usize = 256;

/// Whether caught-up raw TS listeners on plain TCP hand their writing to the point's fan-out.
pub fn enabled() -> bool {
    static ENABLED: OnceLock<bool> = OnceLock::new();
    crate::switches::on_unless_switched_off(
        &ENABLED,
        FANOUT_VARIABLE,
        "point-wide TCP fan-out turned off; every listener writes its own chunks",
    )
}

/// A listener handing its writing over.
pub struct NewListener {
    /// The listener's plain TCP socket (see the module docs for who keeps it open).
    pub socket: RawFd,
    /// The listener's byte counter.
    pub sent: SentBytes,
    /// The index of the next chunk the listener needs.
    pub next_index: u64,
    /// How small media is held to gather more (`conn::output::coalescing`).
    pub hold: HoldRule,
    /// The listener's own subscription to the point's ring, positioned at `next_index`: the
    /// fan-out moves it along over what it writes, so the ring frees chunks as before, and
    /// gives it back.
    pub ring: broadcast::Receiver<LiveEvent>,
}

/// Where a listener stands when the fan-out gives it back (or its task takes it back).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Returned {
    /// The index of the first chunk the listener did not get any of.
    pub next_index: u64,
    /// The part of the chunk before it that the socket did not take (empty if none).
    pub rest: Bytes,
}

/// A listener given back to its task: where it stands, and its subscription.
pub struct Handback {
    pub returned: Returned,
    /// `None` if the fan-out lost it (only while the runtime shuts down); `returned` then
    /// says nothing useful and the task starts afresh.
    pub ring: Option<broadcast::Receiver<LiveEvent>>,
}

struct Listener {
    id: u64,
    socket: RawFd,
    sent: SentBytes,
    next_index: u64,
    ring: broadcast::Receiver<LiveEvent>,
    /// `ring` stands at `next_index`. Once anything unexpected came from it, it is left
    /// alone and the task sorts it out (skipping what was written, by index).
    ring_in_step: bool,
    back: oneshot::Sender<Handback>,
}

impl Listener {
    /// Write what the listener lacks of `pending` (consecutive chunks); `Some` gives it back:
    /// the socket did not take it all, or the listener needs a chunk before them.
    fn write(&mut self, pending: &[Arc<LiveChunk>]) -> Option<Returned> {
        let first = pending.first()?.index;
        let last = pending.last()?.index;
        if self.next_index > last {
            return None;
        }
        // Chunks come in order with consecutive indexes; a listener needing one before them
        // gets it from its own subscription.
        let at = self.next_index.checked_sub(first).map(|at| at as usize);
        let Some(mut at) =
            at.filter(|at| pending.get(*at).is_some_and(|l| l.index == self.next_index))
        else {
            return Some(self.back_at(self.next_index));
        };
        while at < pending.len() {
            let batch = &pending[at..pending.len().min(at + MAX_IOVECS)];
            let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
            for (slot, live) in slices.iter_mut().zip(batch) {
                *slot = IoSlice::new(&live.chunk.data);
            }
            let wanted: usize = batch.iter().map(|live| live.chunk.data.len()).sum();
            let written = match send_vectored(self.socket, &slices[..batch.len()]) {
                Ok(written) => written,
                // A full socket, or a broken one: the task finds out which when it writes.
                Err(_) => return Some(self.back_at(batch[0].index)),
            };
            self.sent.add(written as u64);
            if written < wanted {
                let returned = cut_at(batch, written);
                self.advance_ring(returned.next_index);
                return Some(returned);
            }
            at += batch.len();
            self.advance_ring(batch[batch.len() - 1].index + 1);
        }
        None
    }

    /// The listener has everything before `next_index`: move its subscription past it. The
    /// subscription sees the same chunks in the same order as the fan-out, and nothing else
    /// while the listener is in (any other event sends everyone back first).
    fn advance_ring(&mut self, next_index: u64) {
        while self.ring_in_step && self.next_index < next_index {
            match self.ring.try_recv() {
                Ok(LiveEvent::Media(live)) if live.index == self.next_index => {}
                _ => self.ring_in_step = false,
            }
            self.next_index += 1;
        }
        self.next_index = next_index;
    }

    /// Give the listener back to its task, standing at `returned`.
    fn give_back(self, returned: Returned) {
        let _ = self.back.send(Handback {
            returned,
            ring: Some(self.ring),
        });
    }

    fn back_at(&self, next_index: u64) -> Returned {
        Returned {
            next_index,
            rest: Bytes::new(),
        }
    }
}

/// Where a write of `batch` that the socket took `written` bytes of stopped.
fn cut_at(batch: &[Arc<LiveChunk>], mut written: usize) -> Returned {
    for live in batch {
        let data = &live.chunk.data;
        if written < data.len() {
            return if written == 0 {
                Returned {
                    next_index: live.index,
                    rest: Bytes::new(),
                }
            } else {
                Returned {
                    next_index: live.index + 1,
                    rest: data.slice(written..),
                }
            };
        }
        written -= data.len();
    }
    let after = batch.last().map_or(0, |live| live.index + 1);
    Returned {
        next_index: after,
        rest: Bytes::new(),
    }
}

/// One non-blocking vectored write; no `SIGPIPE` if the peer is gone.
fn send_vectored(socket: RawFd, slices: &[IoSlice<'_>]) -> io::Result<usize> {
    // SAFETY: a zeroed msghdr is valid (no address, no control data); the iovecs point into
    // `slices`, which outlive the call, and `IoSlice` is ABI-compatible with `iovec`.
    let mut message: libc::msghdr = unsafe { std::mem::zeroed() };
    message.msg_iov = slices.as_ptr() as *mut libc::iovec;
    message.msg_iovlen = slices.len() as _;
    loop {
        // SAFETY: the descriptor is open (see the module docs) and `message` is valid.
        let sent =
            unsafe { libc::sendmsg(socket, &message, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) };
        if sent >= 0 {
            return Ok(sent as usize);
        }
        let error = io::Error::last_os_error();
        if error.kind() != io::ErrorKind::Interrupted {
            return Err(error);
        }
    }
}

/// Listeners a lane takes before the next one is used: up to here one wake-up of one writer
/// serves them all; past it, a popular point's writes are spread over the cores.
const LANE_FILL: usize = 256;

/// The TCP fan-outs of one live point, one per core: a popular point's writes are spread
/// over the runtime's threads instead of being held to one. A listener joins the first lane
/// with room ([`LANE_FILL`]), or the least busy once all are full.
pub struct TcpFanouts {
    lanes: Box<[Arc<TcpFanout>]>,
}

impl Default for TcpFanouts {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |cores| cores.get());
        Self::new(cores)
    }
}

impl TcpFanouts {
    pub fn new(lanes: usize) -> Self {
        Self {
            lanes: (0..lanes.max(1)).map(|_| Arc::default()).collect(),
        }
    }

    /// The fan-out the next listener joins.
    pub fn next_lane(&self) -> &Arc<TcpFanout> {
        let with_room = self.lanes.iter().find(|lane| lane.listeners() < LANE_FILL);
        with_room
            .or_else(|| self.lanes.iter().min_by_key(|lane| lane.listeners()))
            .expect("a point has at least one lane")
    }

    /// How many ring subscriptions the fan-outs hold: they are not clients.
    pub fn subscriptions(&self) -> usize {
        self.lanes.iter().map(|lane| lane.subscriptions()).sum()
    }

    /// How many listeners they write to.
    pub fn listeners(&self) -> usize {
        self.lanes.iter().map(|lane| lane.listeners()).sum()
    }
}

#[derive(Default)]
struct Shard {
    listeners: Vec<Listener>,
}

/// The TCP fan-out of one live point.
pub struct TcpFanout {
    shards: [Mutex<Shard>; SHARDS],
    /// A task holds a subscription to the point's ring and writes.
    running: Mutex<bool>,
    listeners: AtomicUsize,
    next_id: AtomicU64,
    /// The hold for small media, by the rule the latest listener to join brought (in a
    /// server, the same rule for all: the server's open connections at each write).
    hold: ArcSwap<HoldRule>,
}

impl Default for TcpFanout {
    fn default() -> Self {
        Self {
            shards: std::array::from_fn(|_| Mutex::default()),
            running: Mutex::new(false),
            listeners: AtomicUsize::new(0),
            next_id: AtomicU64::new(0),
            hold: ArcSwap::from_pointee(HoldRule::Fixed(crate::conn::COALESCE)),
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl TcpFanout {
    /// How many ring subscriptions the fan-out holds (0 or 1): they are not clients.
    pub fn subscriptions(&self) -> usize {
        usize::from(*lock(&self.running))
    }

    /// How many listeners it writes to.
    pub fn listeners(&self) -> usize {
        self.listeners.load(Ordering::Relaxed)
    }

    /// Take over writing to a listener. `ring` is a subscription to the point's ring; it
    /// starts the fan-out's task if none runs.
    pub fn join(self: &Arc<Self>, point: &str, listener: NewListener) -> Listening {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (back, returned) = oneshot::channel();
        // A subscription for the task, should this listener start it.
        let ring = listener.ring.resubscribe();
        self.hold.store(Arc::new(listener.hold));
        lock(&self.shards[id as usize % SHARDS])
            .listeners
            .push(Listener {
                id,
                socket: listener.socket,
                sent: listener.sent,
                next_index: listener.next_index,
                ring: listener.ring,
                ring_in_step: true,
                back,
            });
        self.listeners.fetch_add(1, Ordering::Relaxed);
        let mut running = lock(&self.running);
        if !*running {
            *running = true;
            info!(%point, "TCP fan-out started: the point's caught-up listeners share one writer");
            tokio::spawn(run(Arc::clone(self), ring, point.to_owned()));
        }
        Listening {
            fanout: Arc::clone(self),
            id,
            returned: Told::new(returned),
        }
    }

    /// Take a listener out; where it stands and its subscription, if it was still in.
    fn leave(&self, id: u64) -> Option<Handback> {
        let mut shard = lock(&self.shards[id as usize % SHARDS]);
        let at = shard.listeners.iter().position(|l| l.id == id)?;
        let listener = shard.listeners.swap_remove(at);
        self.listeners.fetch_sub(1, Ordering::Relaxed);
        Some(Handback {
            returned: listener.back_at(listener.next_index),
            ring: Some(listener.ring),
        })
    }

    /// Write `pending` to every listener; those the fan-out gives back are told where they
    /// stand.
    async fn write_all(&self, pending: &[Arc<LiveChunk>]) {
        let mut since_yield = 0;
        for shard in &self.shards {
            {
                let mut shard = lock(shard);
                since_yield += shard.listeners.len();
                let mut at = 0;
                while at < shard.listeners.len() {
                    match shard.listeners[at].write(pending) {
                        None => at += 1,
                        Some(returned) => {
                            let listener = shard.listeners.swap_remove(at);
                            self.listeners.fetch_sub(1, Ordering::Relaxed);
                            listener.give_back(returned);
                        }
                    }
                }
            }
            if since_yield >= WRITES_BEFORE_YIELD {
                since_yield = 0;
                tokio::task::yield_now().await;
            }
        }
    }

    /// Give every listener back where it stands: something other than media came, which
    /// each listener's task handles itself.
    fn give_all_back(&self) {
        for shard in &self.shards {
            let listeners = std::mem::take(&mut lock(shard).listeners);
            self.listeners.fetch_sub(listeners.len(), Ordering::Relaxed);
            for listener in listeners {
                let returned = listener.back_at(listener.next_index);
                listener.give_back(returned);
            }
        }
    }

    /// Whether the task goes on: not once the ring closed or nobody is left (the next
    /// listener to join starts another).
    fn keep_running(&self, ring_closed: bool) -> bool {
        let mut running = lock(&self.running);
        if ring_closed || self.listeners() == 0 {
            *running = false;
            return false;
        }
        true
    }

    fn hold(&self) -> Coalesce {
        self.hold.load().current()
    }
}

/// The chunks taken from the ring and not yet written, and the hold on small media.
struct Pending {
    chunks: Vec<Arc<LiveChunk>>,
    bytes: usize,
    held_until: Option<Instant>,
}

impl Pending {
    fn push(&mut self, live: Arc<LiveChunk>) {
        self.bytes += live.chunk.data.len();
        self.chunks.push(live);
    }

    /// Whether to write now, holding small media as `hold` says from its first chunk on.
    fn due(&mut self, now: Instant, hold: Coalesce) -> bool {
        if self.chunks.is_empty() {
            return false;
        }
        if self.bytes >= hold.bytes || hold.delay.is_zero() {
            return true;
        }
        let until = *self.held_until.get_or_insert(now + hold.delay);
        until <= now
    }

    fn clear(&mut self) {
        self.chunks.clear();
        self.bytes = 0;
        self.held_until = None;
    }
}

/// What came from the ring besides media: every listener goes back to its task.
enum Interruption {
    Event,
    Lagged(u64),
    Closed,
}

/// The fan-out's task: each chunk of the point's ring once, for every listener.
async fn run(fanout: Arc<TcpFanout>, mut ring: broadcast::Receiver<LiveEvent>, point: String) {
    let mut pending = Pending {
        chunks: Vec::new(),
        bytes: 0,
        held_until: None,
    };
    loop {
        let received = tokio::select! {
            biased;
            received = ring.recv() => Some(received),
            _ = sleep_until_opt(pending.held_until) => None,
        };
        let mut interruption = match received {
            Some(Ok(event)) => take(&mut pending, event),
            Some(Err(RecvError::Lagged(skipped))) => Some(Interruption::Lagged(skipped)),
            Some(Err(RecvError::Closed)) => Some(Interruption::Closed),
            None => None,
        };
        // What else already waits goes out in the same writes.
        while interruption.is_none() {
            interruption = match ring.try_recv() {
                Err(TryRecvError::Empty) => break,
                Ok(event) => take(&mut pending, event),
                Err(TryRecvError::Lagged(skipped)) => Some(Interruption::Lagged(skipped)),
                Err(TryRecvError::Closed) => Some(Interruption::Closed),
            };
        }
        let closed = matches!(interruption, Some(Interruption::Closed));
        match interruption {
            Some(interruption) => {
                if let Interruption::Lagged(skipped) = interruption {
                    warn!(event = events::TCP_FANOUT_LAGGING, %point, skipped_chunks = skipped, "the TCP fan-out fell behind the point; its listeners catch up on their own");
                }
                // The listeners' own subscriptions hold what was pending.
                pending.clear();
                fanout.give_all_back();
            }
            None => {
                if pending.due(Instant::now(), fanout.hold()) {
                    fanout.write_all(&pending.chunks).await;
                    pending.clear();
                }
            }
        }
        if !fanout.keep_running(closed) {
            return;
        }
    }
}

/// Take one ring event into `pending`; anything but media interrupts.
fn take(pending: &mut Pending, event: LiveEvent) -> Option<Interruption> {
    match event {
        LiveEvent::Media(live) => {
            pending.push(live);
            None
        }
        LiveEvent::SourceRestarted | LiveEvent::Ended => Some(Interruption::Event),
    }
}

/// A listener's place in its point's fan-out. Dropping it takes the listener out, and no
/// write to its socket is under way once the drop returns.
pub struct Listening {
    fanout: Arc<TcpFanout>,
    id: u64,
    returned: Told<Handback>,
}

impl Listening {
    /// When the fan-out gives the listener back; pending forever once it did.
    pub async fn returned(&mut self) -> Handback {
        self.returned.recv(lost_track).await
    }

    /// Whether the fan-out already gave the listener back; where it stands if so.
    pub fn try_returned(&mut self) -> Option<Handback> {
        self.returned.try_recv(lost_track)
    }

    /// Take the listener back now: where it stands (also if the fan-out just gave it back).
    pub fn leave(mut self) -> Option<Handback> {
        self.take_back()
    }

    fn take_back(&mut self) -> Option<Handback> {
        if let Some(left) = self.fanout.leave(self.id) {
            self.returned.forget();
            return Some(left);
        }
        self.try_returned()
    }
}

/// A listener the fan-out dropped unsaid (only while the runtime shuts down): where it stands
/// is unknown, so its task treats every chunk as past a gap and restarts at a keyframe.
fn lost_track() -> Handback {
    Handback {
        returned: Returned {
            next_index: 0,
            rest: Bytes::new(),
        },
        ring: None,
    }
}

impl Drop for Listening {
    fn drop(&mut self) {
        if self.returned.is_pending() {
            let _ = self.take_back();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::AsRawFd;

    use std::time::Duration;

    use super::*;
    use crate::media::ingest::Chunk;
    use crate::media::rtp::RtpPacketizer;

    /// Every chunk goes out at once.
    const NO_HOLD: Coalesce = Coalesce {
        delay: Duration::ZERO,
        bytes: 0,
    };

    /// A chunk numbered `index`, its bytes all `index as u8` so a reader can tell them apart.
    fn chunk(index: u64, len: usize) -> Arc<LiveChunk> {
        Arc::new(LiveChunk {
            chunk: Chunk {
                data: Bytes::from(vec![index as u8; len]),
                random_access: false,
                pcr_90k: None,
            },
            rtp: RtpPacketizer::new(1, 1).packetize(&[], 0),
            index,
        })
    }

    /// A connected loopback pair: the server's end (non-blocking) and the client's.
    fn tcp_pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        server.set_nonblocking(true).unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        (server, client)
    }

    fn listener(socket: &TcpStream, next_index: u64) -> Listener {
        let (back, _) = oneshot::channel();
        let (_, ring) = broadcast::channel(8);
        Listener {
            id: 0,
            socket: socket.as_raw_fd(),
            sent: SentBytes::default(),
            next_index,
            ring,
            ring_in_step: true,
            back,
        }
    }

    fn read_exactly(client: &mut TcpStream, len: usize) -> Vec<u8> {
        let mut got = vec![0; len];
        client.read_exact(&mut got).unwrap();
        got
    }

    #[test]
    fn a_listener_gets_only_the_chunks_it_lacks_and_goes_back_when_it_needs_an_earlier_one() {
        let (server, mut client) = tcp_pair();
        let pending: Vec<_> = (3..6).map(|index| chunk(index, 100)).collect();
        let mut caught_up = listener(&server, 4);
        assert_eq!(caught_up.write(&pending), None);
        assert_eq!(caught_up.next_index, 6);
        assert_eq!(caught_up.sent.get(), 200);
        let got = read_exactly(&mut client, 200);
        assert_eq!(&got[..100], &[4; 100][..]);
        assert_eq!(&got[100..], &[5; 100][..]);

        assert_eq!(caught_up.write(&pending), None, "it has them all already");
        assert_eq!(caught_up.sent.get(), 200);

        let mut behind = listener(&server, 2);
        assert_eq!(
            behind.write(&pending),
            Some(Returned {
                next_index: 2,
                rest: Bytes::new()
            }),
            "chunk 2 is in its own subscription, not here"
        );
    }

    #[test]
    fn a_full_socket_gives_the_listener_back_with_the_rest_of_the_chunk_it_cut() {
        let (server, mut client) = tcp_pair();
        socket2::SockRef::from(&server)
            .set_send_buffer_size(4096)
            .unwrap();
        let pending: Vec<_> = (0..64).map(|index| chunk(index, 64 * 1024)).collect();
        let mut slow = listener(&server, 0);
        let returned = slow
            .write(&pending)
            .expect("the socket cannot take 4 MiB at once");
        let written = slow.sent.get() as usize;
        assert!(written > 0 && written < 64 * 64 * 1024);
        // The socket took whole chunks up to `next_index - 1`, less the rest of the last.
        let through = returned.next_index as usize * 64 * 1024;
        assert_eq!(written + returned.rest.len(), through);
        if !returned.rest.is_empty() {
            let cut = &pending[returned.next_index as usize - 1].chunk.data;
            assert_eq!(returned.rest, cut.slice(cut.len() - returned.rest.len()..));
        }
        let got = read_exactly(&mut client, written);
        for (at, byte) in got.iter().enumerate() {
            assert_eq!(*byte as usize, at / (64 * 1024), "byte {at} in order");
        }
    }

    #[test]
    fn a_write_cut_between_chunks_sends_nothing_back_but_where_to_go_on() {
        let batch: Vec<_> = (7..10).map(|index| chunk(index, 10)).collect();
        assert_eq!(
            cut_at(&batch, 0),
            Returned {
                next_index: 7,
                rest: Bytes::new()
            }
        );
        assert_eq!(
            cut_at(&batch, 10),
            Returned {
                next_index: 8,
                rest: Bytes::new()
            }
        );
        assert_eq!(
            cut_at(&batch, 14),
            Returned {
                next_index: 9,
                rest: Bytes::from(vec![8u8; 6])
            }
        );
    }

    #[test]
    fn small_media_is_held_for_the_hold_and_large_media_goes_at_once() {
        let now = Instant::now();
        let hold = Coalesce {
            delay: Duration::from_millis(250),
            bytes: 8 * 1024,
        };
        let mut pending = Pending {
            chunks: Vec::new(),
            bytes: 0,
            held_until: None,
        };
        assert!(!pending.due(now, hold), "nothing to write");
        pending.push(chunk(0, 376));
        assert!(!pending.due(now, hold));
        assert_eq!(pending.held_until, Some(now + hold.delay));
        pending.push(chunk(1, 376));
        assert!(!pending.due(now + Duration::from_millis(100), hold));
        assert!(pending.due(now + hold.delay, hold));
        pending.clear();

        pending.push(chunk(2, hold.bytes));
        assert!(pending.due(now, hold));
        pending.clear();
        pending.push(chunk(3, 188));
        assert!(pending.due(now, NO_HOLD), "no hold asked");
    }

    async fn read_async(client: &mut tokio::net::TcpStream, len: usize) -> Vec<u8> {
        use tokio::io::AsyncReadExt;
        let mut got = vec![0; len];
        tokio::time::timeout(Duration::from_secs(5), client.read_exact(&mut got))
            .await
            .expect("the fan-out wrote in time")
            .unwrap();
        got
    }

    async fn tokio_pair() -> (tokio::net::TcpStream, tokio::net::TcpStream) {
        let (server, client) = tcp_pair();
        client.set_nonblocking(true).unwrap();
        (
            tokio::net::TcpStream::from_std(server).unwrap(),
            tokio::net::TcpStream::from_std(client).unwrap(),
        )
    }

    #[tokio::test]
    async fn the_fanout_writes_each_chunk_to_every_listener_and_gives_them_back_at_an_event() {
        let (ring, _keep) = broadcast::channel(64);
        let fanout = Arc::new(TcpFanout::default());
        let (first_server, mut first_client) = tokio_pair().await;
        let (second_server, mut second_client) = tokio_pair().await;
        let join = |socket: &tokio::net::TcpStream| NewListener {
            socket: socket.as_raw_fd(),
            sent: SentBytes::default(),
            next_index: 0,
            hold: HoldRule::Fixed(NO_HOLD),
            ring: ring.subscribe(),
        };
        let mut first = fanout.join("live", join(&first_server));
        let mut second = fanout.join("live", join(&second_server));
        assert_eq!(fanout.listeners(), 2);
        assert_eq!(fanout.subscriptions(), 1, "one task for the point");
        for index in 0..3 {
            ring.send(LiveEvent::Media(chunk(index, 1000))).unwrap();
        }
        let got = read_async(&mut first_client, 3000).await;
        assert_eq!(
            got,
            [vec![0u8; 1000], vec![1; 1000], vec![2; 1000]].concat()
        );
        let got = read_async(&mut second_client, 3000).await;
        assert_eq!(
            got,
            [vec![0u8; 1000], vec![1; 1000], vec![2; 1000]].concat()
        );

        ring.send(LiveEvent::SourceRestarted).unwrap();
        let expected = Returned {
            next_index: 3,
            rest: Bytes::new(),
        };
        let back = tokio::time::timeout(Duration::from_secs(5), first.returned()).await;
        for back in [back.unwrap(), second.returned().await] {
            assert_eq!(back.returned, expected);
            // Each subscription was moved along over the chunks written: the event is next.
            let next = back.ring.unwrap().try_recv();
            assert!(matches!(next, Ok(LiveEvent::SourceRestarted)), "{next:?}");
        }
        assert_eq!(fanout.listeners(), 0);
        tokio::time::timeout(Duration::from_secs(5), async {
            while fanout.subscriptions() > 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("a fan-out with nobody left stops");
    }

    #[test]
    fn listeners_fill_a_lane_before_the_next_and_then_go_to_the_least_busy() {
        let fanouts = TcpFanouts::new(3);
        let lane = |n: usize| Arc::as_ptr(&fanouts.lanes[n]);
        let count = |n: usize, listeners: usize| {
            fanouts.lanes[n]
                .listeners
                .store(listeners, Ordering::Relaxed)
        };
        assert_eq!(Arc::as_ptr(fanouts.next_lane()), lane(0));
        count(0, LANE_FILL - 1);
        assert_eq!(
            Arc::as_ptr(fanouts.next_lane()),
            lane(0),
            "one writer serves them"
        );
        count(0, LANE_FILL);
        assert_eq!(Arc::as_ptr(fanouts.next_lane()), lane(1));
        count(1, LANE_FILL);
        count(2, LANE_FILL + 5);
        count(0, LANE_FILL + 1);
        assert_eq!(
            Arc::as_ptr(fanouts.next_lane()),
            lane(1),
            "all full: the least busy"
        );
        assert_eq!(TcpFanouts::new(0).lanes.len(), 1, "at least one lane");
    }

    #[tokio::test]
    async fn a_listener_that_leaves_is_written_nothing_more() {
        let (ring, _keep) = broadcast::channel(64);
        let fanout = Arc::new(TcpFanout::default());
        let (server, mut client) = tokio_pair().await;
        let listener = NewListener {
            socket: server.as_raw_fd(),
            sent: SentBytes::default(),
            next_index: 0,
            hold: HoldRule::Fixed(NO_HOLD),
            ring: ring.subscribe(),
        };
        let listening = fanout.join("live", listener);
        ring.send(LiveEvent::Media(chunk(0, 500))).unwrap();
        assert_eq!(read_async(&mut client, 500).await, vec![0u8; 500]);
        let back = listening.leave().expect("it was in");
        assert_eq!(
            back.returned,
            Returned {
                next_index: 1,
                rest: Bytes::new()
            }
        );
        assert_eq!(fanout.listeners(), 0);
        // A chunk sent after the leave comes through the listener's own subscription, and is
        // not written by the fan-out: drop the server's end once the fan-out had its chance,
        // and the client sees the end, no bytes.
        let _ = ring.send(LiveEvent::Media(chunk(1, 500)));
        let mut own = back.ring.unwrap();
        assert!(matches!(own.try_recv(), Ok(LiveEvent::Media(live)) if live.index == 1));
        tokio::time::sleep(Duration::from_millis(50)).await;
        drop(server);
        let mut rest = Vec::new();
        use tokio::io::AsyncReadExt;
        tokio::time::timeout(Duration::from_secs(5), client.read_to_end(&mut rest))
            .await
            .unwrap()
            .unwrap();
        assert!(rest.is_empty(), "nothing written after the leave");
    }
}

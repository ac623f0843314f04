//! Connection limits at the accept path: how many connections the server holds, globally and
//! per IP address, and how fast one address may open new ones.
//!
//! [`ConnectionGate::decide`] is a plain decision over the counts and the time: a connection
//! within the limits is admitted; one over a limit is *refused* (it is served just long enough
//! for its plugin to answer with the protocol's "over capacity" reply); one far beyond the
//! limits (twice a cap, or with file descriptors nearly gone) is *dropped* at once, unread.
//! Every connection served holds a [`ConnectionGuard`] that gives its place back on drop.
//! [`RefusalLog`] turns a flood of refusals into one summary line every few seconds.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::config::LimitsConfig;

/// Descriptors kept free for everything that is not a client connection (listeners, files,
/// transports, the control socket): past this margin new connections are dropped unread.
pub const DESCRIPTOR_RESERVE: u64 = 64;
/// Per-IP entries above this many are swept of addresses with nothing open and a full bucket.
const SWEEP_ABOVE: usize = 4_096;
/// How often a flood of refusals is summarised in the log.
pub const REFUSAL_SUMMARY_EVERY: Duration = Duration::from_secs(5);

/// Which limit a connection ran into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `max_connections`.
    Connections,
    /// `max_connections_per_ip`.
    ConnectionsPerIp,
    /// `connection_rate_per_ip`.
    RatePerIp,
    /// File descriptors are nearly out.
    Descriptors,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Connections => "max_connections",
            Refusal::ConnectionsPerIp => "max_connections_per_ip",
            Refusal::RatePerIp => "connection_rate_per_ip",
            Refusal::Descriptors => "file descriptors",
        }
    }
}

/// What to do with a new connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Admit,
    /// Serve it refused: its plugin answers "over capacity", then it is closed.
    Refuse(Refusal),
    /// Close it at once without reading.
    Drop(Refusal),
}

/// One address's open connections and its connection-rate bucket.
#[derive(Debug, Clone, Copy)]
struct AddressEntry {
    open: u32,
    tokens: f64,
    refilled: Instant,
}

impl AddressEntry {
    fn new(rate: u32, now: Instant) -> Self {
        Self {
            open: 0,
            tokens: f64::from(rate),
            refilled: now,
        }
    }

    /// Refill the bucket (one second of burst) and take a token if there is one.
    fn take_token(&mut self, rate: u32, now: Instant) -> bool {
        if rate == 0 {
            return true;
        }
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.tokens = (self.tokens + elapsed * f64::from(rate)).min(f64::from(rate));
        self.refilled = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Nothing open and the bucket would be full again: the entry can go.
    fn forgettable(&self, rate: u32, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.open == 0 && (rate == 0 || self.tokens + elapsed * f64::from(rate) >= f64::from(rate))
    }
}

/// The counts the decisions are made on.
#[derive(Debug, Default)]
pub struct GateCounts {
    total: u32,
    addresses: HashMap<IpAddr, AddressEntry>,
}

impl GateCounts {
    /// Decide about a connection from `ip` at `now`, counting it if it is served. `fd_room`
    /// is how many descriptors the process may still open (None: unknown).
    pub fn decide(
        &mut self,
        limits: &LimitsConfig,
        ip: IpAddr,
        now: Instant,
        fd_room: Option<u64>,
    ) -> Admission {
        if self.addresses.len() > SWEEP_ABOVE {
            let rate = limits.connection_rate_per_ip;
            self.addresses
                .retain(|_, entry| !entry.forgettable(rate, now));
        }
        let rate = limits.connection_rate_per_ip;
        let entry = self
            .addresses
            .entry(ip)
            .or_insert_with(|| AddressEntry::new(rate, now));
        let hard_total = limits.max_connections.saturating_mul(2);
        let hard_per_ip = limits.max_connections_per_ip.saturating_mul(2);
        let admission = if fd_room.is_some_and(|room| room <= DESCRIPTOR_RESERVE) {
            Admission::Drop(Refusal::Descriptors)
        } else if self.total >= hard_total {
            Admission::Drop(Refusal::Connections)
        } else if entry.open >= hard_per_ip {
            Admission::Drop(Refusal::ConnectionsPerIp)
        } else if !entry.take_token(rate, now) {
            Admission::Refuse(Refusal::RatePerIp)
        } else if self.total >= limits.max_connections {
            Admission::Refuse(Refusal::Connections)
        } else if entry.open >= limits.max_connections_per_ip {
            Admission::Refuse(Refusal::ConnectionsPerIp)
        } else {
            Admission::Admit
        };
        if matches!(admission, Admission::Drop(_)) {
            if entry.forgettable(rate, now) {
                self.addresses.remove(&ip);
            }
        } else {
            entry.open += 1;
            self.total += 1;
        }
        admission
    }

    /// A served connection from `ip` closed.
    pub fn release(&mut self, ip: IpAddr, rate: u32, now: Instant) {
        self.total = self.total.saturating_sub(1);
        if let Some(entry) = self.addresses.get_mut(&ip) {
            entry.open = entry.open.saturating_sub(1);
            if entry.forgettable(rate, now) {
                self.addresses.remove(&ip);
            }
        }
    }

    pub fn total(&self) -> u32 {
        self.total
    }

    pub fn tracked_addresses(&self) -> usize {
        self.addresses.len()
    }
}

/// The server's connection limits, their counts and the refusal counters. A reload replaces
/// the limits; connections already counted stay counted.
pub struct ConnectionGate {
    limits: Mutex<LimitsConfig>,
    counts: Mutex<GateCounts>,
    /// The descriptor limit in effect (0: unknown).
    fd_limit: AtomicU64,
    refused: AtomicU64,
    dropped: AtomicU64,
    log: Mutex<RefusalLog>,
    /// Connections counted (guards alive), readable without the counts' lock.
    open: AtomicUsize,
}

impl Default for ConnectionGate {
    fn default() -> Self {
        Self::new(LimitsConfig::default())
    }
}

impl ConnectionGate {
    pub fn new(limits: LimitsConfig) -> Self {
        Self {
            limits: Mutex::new(limits),
            counts: Mutex::default(),
            fd_limit: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            log: Mutex::default(),
            open: AtomicUsize::new(0),
        }
    }

    pub fn limits(&self) -> LimitsConfig {
        *lock(&self.limits)
    }

    pub fn set_limits(&self, limits: LimitsConfig) {
        *lock(&self.limits) = limits;
    }

    pub fn set_fd_limit(&self, limit: u64) {
        self.fd_limit.store(limit, Ordering::Relaxed);
    }

    /// Decide about a new connection from `ip`; a served one (admitted or refused) comes with
    /// the guard that counts it.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> (Admission, Option<ConnectionGuard>) {
        let limits = self.limits();
        let now = Instant::now();
        let mut counts = lock(&self.counts);
        let fd_room = match self.fd_limit.load(Ordering::Relaxed) {
            0 => None,
            // Client connections are most of the descriptors; the reserve covers the rest.
            limit => Some(limit.saturating_sub(u64::from(counts.total()))),
        };
        let admission = counts.decide(&limits, ip, now, fd_room);
        drop(counts);
        match admission {
            Admission::Drop(_) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                (admission, None)
            }
            Admission::Refuse(_) => {
                self.refused.fetch_add(1, Ordering::Relaxed);
                (admission, Some(self.guard(ip)))
            }
            Admission::Admit => (admission, Some(self.guard(ip))),
        }
    }

    /// Open connections, without taking a lock: for decisions taken often, such as how long a
    /// listener's small writes wait.
    pub fn open_connections(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    fn guard(self: &Arc<Self>, ip: IpAddr) -> ConnectionGuard {
        self.open.fetch_add(1, Ordering::Relaxed);
        ConnectionGuard {
            gate: Arc::clone(self),
            ip,
        }
    }

    /// Count a connection refused after it was admitted (a point's client or bandwidth cap).
    pub fn count_refusal(&self) {
        self.refused.fetch_add(1, Ordering::Relaxed);
    }

    /// Open connections, refusals answered, connections dropped unread.
    pub fn counters(&self) -> (u32, u64, u64) {
        (
            lock(&self.counts).total(),
            self.refused.load(Ordering::Relaxed),
            self.dropped.load(Ordering::Relaxed),
        )
    }

    /// Note a refusal for the log: `Some(n)` when a line is due now, covering `n` refusals.
    pub fn note_refusal(&self, now: Instant) -> Option<u64> {
        lock(&self.log).note(now)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poison| poison.into_inner())
}

/// Holds one connection's place in the counts.
pub struct ConnectionGuard {
    gate: Arc<ConnectionGate>,
    ip: IpAddr,
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        let rate = self.gate.limits().connection_rate_per_ip;
        lock(&self.gate.counts).release(self.ip, rate, Instant::now());
        self.gate.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Rate-limits refusal log lines: the first refusal is logged at once, later ones are
/// summed and logged as one line at most every [`REFUSAL_SUMMARY_EVERY`].
#[derive(Debug, Default)]
pub struct RefusalLog {
    last_line: Option<Instant>,
    pending: u64,
}

impl RefusalLog {
    /// Count one refusal at `now`; returns how many refusals a line written now covers, if
    /// a line is due.
    pub fn note(&mut self, now: Instant) -> Option<u64> {
        self.pending += 1;
        let due = self.last_line.map_or(true, |last| {
            now.saturating_duration_since(last) >= REFUSAL_SUMMARY_EVERY
        });
        if !due {
            return None;
        }
        self.last_line = Some(now);
        Some(std::mem::take(&mut self.pending))
    }
}

/// Raise the soft descriptor limit to the hard one where allowed; returns the limit in
/// effect (None when it cannot be read).
pub fn raise_descriptor_limit() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return None;
    }
    let wanted = soft_limit_wanted(limit.rlim_max, descriptor_ceiling());
    if limit.rlim_cur < wanted {
        let raised = libc::rlimit {
            rlim_cur: wanted,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            limit = raised;
        }
    }
    Some(limit.rlim_cur)
}

/// The soft descriptor limit to ask for: the hard limit, but no more than the kernel's
/// per-process ceiling (`fs.nr_open`), which an unlimited hard limit is above: asking for
/// more than the ceiling fails and would leave the soft limit where it was.
fn soft_limit_wanted(hard: u64, ceiling: u64) -> u64 {
    hard.min(ceiling)
}

/// The most descriptors the kernel lets a process open (the kernel's default if unreadable).
fn descriptor_ceiling() -> u64 {
    std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(1 << 20)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_soft_descriptor_limit_goes_to_the_hard_one_within_the_kernel_ceiling() {
        assert_eq!(soft_limit_wanted(524_288, 1 << 20), 524_288);
        assert_eq!(soft_limit_wanted(libc::RLIM_INFINITY, 1 << 20), 1 << 20);
    }

    fn limits(total: u32, per_ip: u32, rate: u32) -> LimitsConfig {
        LimitsConfig {
            max_connections: total,
            max_connections_per_ip: per_ip,
            connection_rate_per_ip: rate,
            ..LimitsConfig::default()
        }
    }

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    #[test]
    fn the_global_cap_refuses_then_drops_beyond_twice_the_cap() {
        let limits = limits(2, 10, 0);
        let mut counts = GateCounts::default();
        let now = Instant::now();
        let mut seen = Vec::new();
        for n in 0..5u8 {
            seen.push(counts.decide(&limits, ip(n), now, None));
        }
        use Admission::*;
        assert_eq!(
            seen,
            [
                Admit,
                Admit,
                Refuse(Refusal::Connections),
                Refuse(Refusal::Connections),
                Drop(Refusal::Connections)
            ]
        );
        assert_eq!(
            counts.total(),
            4,
            "refused connections hold their place until closed"
        );
        counts.release(ip(0), 0, now);
        counts.release(ip(2), 0, now);
        counts.release(ip(3), 0, now);
        assert_eq!(counts.decide(&limits, ip(7), now, None), Admit);
    }

    #[test]
    fn the_per_address_cap_counts_each_address_alone() {
        let limits = limits(100, 2, 0);
        let mut counts = GateCounts::default();
        let now = Instant::now();
        assert_eq!(counts.decide(&limits, ip(1), now, None), Admission::Admit);
        assert_eq!(counts.decide(&limits, ip(1), now, None), Admission::Admit);
        assert_eq!(
            counts.decide(&limits, ip(1), now, None),
            Admission::Refuse(Refusal::ConnectionsPerIp)
        );
        assert_eq!(counts.decide(&limits, ip(2), now, None), Admission::Admit);
        counts.release(ip(1), 0, now);
        counts.release(ip(1), 0, now);
        assert_eq!(counts.decide(&limits, ip(1), now, None), Admission::Admit);
    }

    #[test]
    fn the_rate_bucket_refills_at_the_rate_with_one_second_of_burst() {
        let limits = limits(100, 100, 2);
        let mut counts = GateCounts::default();
        let start = Instant::now();
        let at = |ms| start + Duration::from_millis(ms);
        assert_eq!(counts.decide(&limits, ip(1), at(0), None), Admission::Admit);
        assert_eq!(counts.decide(&limits, ip(1), at(0), None), Admission::Admit);
        assert_eq!(
            counts.decide(&limits, ip(1), at(100), None),
            Admission::Refuse(Refusal::RatePerIp)
        );
        assert_eq!(
            counts.decide(&limits, ip(2), at(100), None),
            Admission::Admit
        );
        assert_eq!(
            counts.decide(&limits, ip(1), at(600), None),
            Admission::Admit
        );
    }

    #[test]
    fn nearly_out_of_descriptors_drops_unread() {
        let limits = limits(100, 100, 0);
        let mut counts = GateCounts::default();
        let now = Instant::now();
        assert_eq!(
            counts.decide(&limits, ip(1), now, Some(DESCRIPTOR_RESERVE)),
            Admission::Drop(Refusal::Descriptors)
        );
        assert_eq!(counts.total(), 0);
        assert_eq!(
            counts.decide(&limits, ip(1), now, Some(DESCRIPTOR_RESERVE + 1)),
            Admission::Admit
        );
    }

    #[test]
    fn addresses_with_nothing_open_are_forgotten() {
        let limits = limits(100, 100, 10);
        let mut counts = GateCounts::default();
        let now = Instant::now();
        counts.decide(&limits, ip(1), now, None);
        counts.release(ip(1), 10, now + Duration::from_secs(2));
        assert_eq!(counts.tracked_addresses(), 0);
        for n in 0..=SWEEP_ABOVE as u32 + 1 {
            let address = IpAddr::from(n.to_be_bytes());
            counts.decide(&limits, address, now, None);
            counts.release(address, 10, now);
        }
        let later = now + Duration::from_secs(2);
        counts.decide(&limits, ip(9), later, None);
        assert!(
            counts.tracked_addresses() <= 2,
            "{}",
            counts.tracked_addresses()
        );
    }

    #[test]
    fn a_flood_of_refusals_is_one_line_per_period() {
        let mut log = RefusalLog::default();
        let start = Instant::now();
        assert_eq!(log.note(start), Some(1));
        for n in 1..100 {
            assert_eq!(log.note(start + Duration::from_millis(n * 10)), None);
        }
        assert_eq!(log.note(start + REFUSAL_SUMMARY_EVERY), Some(100));
    }

    #[test]
    fn the_gate_guard_gives_its_place_back() {
        let gate = Arc::new(ConnectionGate::new(limits(1, 1, 0)));
        let (first, guard) = gate.admit(ip(1));
        assert_eq!(first, Admission::Admit);
        let (second, refused_guard) = gate.admit(ip(1));
        assert_eq!(second, Admission::Refuse(Refusal::Connections));
        assert_eq!(
            gate.open_connections(),
            2,
            "a refused connection is open until answered"
        );
        drop(refused_guard);
        drop(guard);
        assert_eq!(gate.open_connections(), 0);
        assert_eq!(gate.admit(ip(1)).0, Admission::Admit);
        assert_eq!(gate.counters().1, 1);
    }
}

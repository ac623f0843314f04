//! Failed attempts per address: after `max_failures` refusals within `window`, the address
//! is refused outright (RATE_LIMITED) for `lockout`, before any hash is checked. Memory is
//! bounded: at most [`MAX_TRACKED`] addresses are tracked, the stalest dropped first.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Addresses tracked at most; a flood from many addresses cannot grow the table past this.
pub const MAX_TRACKED: usize = 4096;

/// The limiter's settings, from `[security]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimiterSettings {
    pub max_failures: u32,
    pub window: Duration,
    pub lockout: Duration,
}

impl Default for LimiterSettings {
    fn default() -> Self {
        Self {
            max_failures: 10,
            window: Duration::from_secs(60),
            lockout: Duration::from_secs(60),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Record {
    /// Start of the counting window.
    since: Instant,
    failures: u32,
    locked_until: Option<Instant>,
}

/// Failed attempts by address.
#[derive(Debug, Default)]
pub struct FailureLimiter {
    settings: LimiterSettings,
    records: HashMap<IpAddr, Record>,
}

impl FailureLimiter {
    pub fn new(settings: LimiterSettings) -> Self {
        Self {
            settings,
            records: HashMap::new(),
        }
    }

    pub fn configure(&mut self, settings: LimiterSettings) {
        self.settings = settings;
    }

    /// How long `peer` is still locked out at `now`, if it is.
    pub fn locked_for(&mut self, peer: IpAddr, now: Instant) -> Option<Duration> {
        let record = self.records.get(&peer)?;
        let until = record.locked_until?;
        if now < until {
            return Some(until - now);
        }
        self.records.remove(&peer);
        None
    }

    /// Count a failure of `peer` at `now`; the one that reaches the limit starts the lockout.
    pub fn record_failure(&mut self, peer: IpAddr, now: Instant) {
        if !self.records.contains_key(&peer) && self.records.len() >= MAX_TRACKED {
            self.make_room(now);
        }
        let settings = self.settings;
        let record = self.records.entry(peer).or_insert(Record {
            since: now,
            failures: 0,
            locked_until: None,
        });
        if now.duration_since(record.since) > settings.window {
            record.since = now;
            record.failures = 0;
        }
        record.failures += 1;
        if record.failures >= settings.max_failures {
            record.locked_until = Some(now + settings.lockout);
        }
    }

    /// Drop records that no longer matter, else the stalest one.
    fn make_room(&mut self, now: Instant) {
        let settings = self.settings;
        self.records.retain(|_, record| match record.locked_until {
            Some(until) => now < until,
            None => now.duration_since(record.since) <= settings.window,
        });
        if self.records.len() >= MAX_TRACKED {
            let stalest = self
                .records
                .iter()
                .min_by_key(|(_, record)| record.since)
                .map(|(ip, _)| *ip);
            if let Some(ip) = stalest {
                self.records.remove(&ip);
            }
        }
    }

    pub fn tracked(&self) -> usize {
        self.records.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> LimiterSettings {
        LimiterSettings {
            max_failures: 3,
            window: Duration::from_secs(10),
            lockout: Duration::from_secs(30),
        }
    }

    fn ip(n: u32) -> IpAddr {
        IpAddr::V4(n.into())
    }

    #[test]
    fn the_failure_that_reaches_the_limit_locks_the_address_out_for_a_while() {
        let mut limiter = FailureLimiter::new(settings());
        let start = Instant::now();
        limiter.record_failure(ip(1), start);
        limiter.record_failure(ip(1), start + Duration::from_secs(1));
        assert_eq!(
            limiter.locked_for(ip(1), start + Duration::from_secs(1)),
            None
        );
        limiter.record_failure(ip(1), start + Duration::from_secs(2));
        let left = limiter.locked_for(ip(1), start + Duration::from_secs(12));
        assert_eq!(left, Some(Duration::from_secs(20)));
        assert_eq!(
            limiter.locked_for(ip(2), start),
            None,
            "others are not affected"
        );
        assert_eq!(
            limiter.locked_for(ip(1), start + Duration::from_secs(32)),
            None
        );
        assert_eq!(limiter.tracked(), 0, "an expired lockout is forgotten");
    }

    #[test]
    fn failures_spread_beyond_the_window_do_not_add_up() {
        let mut limiter = FailureLimiter::new(settings());
        let start = Instant::now();
        for second in [0, 8, 16, 24, 32] {
            limiter.record_failure(ip(1), start + Duration::from_secs(second));
        }
        assert_eq!(
            limiter.locked_for(ip(1), start + Duration::from_secs(33)),
            None
        );
    }

    #[test]
    fn memory_stays_bounded_under_a_flood_of_addresses() {
        let mut limiter = FailureLimiter::new(settings());
        let start = Instant::now();
        for n in 0..(MAX_TRACKED as u32 + 500) {
            limiter.record_failure(ip(n), start + Duration::from_millis(u64::from(n)));
        }
        assert!(limiter.tracked() <= MAX_TRACKED);
    }
}

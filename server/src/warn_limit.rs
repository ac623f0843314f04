//! Rate limit for per-request warnings (what plugins log about their sessions: malformed
//! requests, refusals). A flood of bad requests must not become a flood of log lines: past a
//! budget per window, warnings are counted instead of written, and a summary line says how many
//! were suppressed.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Warnings written per window before the rest are suppressed.
pub const WARNINGS_PER_WINDOW: u32 = 50;
/// How often, at most, a summary of suppressed warnings is written.
pub const WINDOW: Duration = Duration::from_secs(10);

/// What to do with one warning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    /// Write this warning.
    pub log: bool,
    /// Warnings suppressed in the window that just ended: write a summary line first.
    pub suppressed_before: u32,
}

/// Counts warnings per window. Time is a parameter, so the policy is tested without waiting.
#[derive(Debug)]
pub struct WarnLimiter {
    per_window: u32,
    window: Duration,
    started: Option<Instant>,
    logged: u32,
    suppressed: u32,
}

impl WarnLimiter {
    pub const fn new(per_window: u32, window: Duration) -> Self {
        Self {
            per_window,
            window,
            started: None,
            logged: 0,
            suppressed: 0,
        }
    }

    /// A warning is about to be written at `now`.
    pub fn admit(&mut self, now: Instant) -> Verdict {
        let mut suppressed_before = 0;
        let expired = match self.started {
            Some(started) => now.saturating_duration_since(started) >= self.window,
            None => true,
        };
        if expired {
            suppressed_before = std::mem::take(&mut self.suppressed);
            self.started = Some(now);
            self.logged = 0;
        }
        let log = self.logged < self.per_window;
        if log {
            self.logged += 1;
        } else {
            self.suppressed += 1;
        }
        Verdict {
            log,
            suppressed_before,
        }
    }
}

static PLUGIN_WARNINGS: Mutex<WarnLimiter> =
    Mutex::new(WarnLimiter::new(WARNINGS_PER_WINDOW, WINDOW));

/// The verdict for one plugin-logged warning now, from the process-wide limiter.
pub fn admit_plugin_warning() -> Verdict {
    PLUGIN_WARNINGS
        .lock()
        .unwrap_or_else(|poison| poison.into_inner())
        .admit(Instant::now())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_is_cut_to_the_budget_and_summarised_once_per_window() {
        let start = Instant::now();
        let mut limiter = WarnLimiter::new(3, Duration::from_secs(10));
        let logged = (0..100)
            .filter(|i| limiter.admit(start + Duration::from_millis(*i)).log)
            .count();
        assert_eq!(logged, 3);
        // The next window: the summary comes with its first warning, which is written.
        let next = limiter.admit(start + Duration::from_secs(10));
        assert_eq!(
            next,
            Verdict {
                log: true,
                suppressed_before: 97
            }
        );
        let after = limiter.admit(start + Duration::from_secs(11));
        assert_eq!(after.suppressed_before, 0);
    }

    #[test]
    fn a_trickle_is_never_suppressed() {
        let start = Instant::now();
        let mut limiter = WarnLimiter::new(3, Duration::from_secs(10));
        for second in 0..100 {
            let verdict = limiter.admit(start + Duration::from_secs(second * 4));
            assert!(verdict.log);
            assert_eq!(verdict.suppressed_before, 0);
        }
    }
}

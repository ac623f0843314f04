//! Who may publish to and play from a point: the host's access decisions.
//!
//! Plugins only report what a client presented (`Host::present_credentials`); everything
//! here decides. The rules come from the configuration ([`rules`]), secrets are argon2 PHC
//! hashes ([`secret`]), players may carry signed, expiring URL tokens ([`token`]), and
//! addresses that keep failing are locked out for a while ([`limiter`]). The decisions
//! ([`decide`]) are plain functions of the rule, the peer, what was presented and `now`.

pub mod cli;
pub mod decide;
pub mod limiter;
pub mod rules;
pub mod secret;
pub mod token;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use ferrocast_plugin_api::Credentials;

pub use decide::Denial;
pub use limiter::{FailureLimiter, LimiterSettings};
pub use rules::{AddressList, PlayRule, PublishRule, PublishUser, Secret};

/// The access rules in force: defaults from `[security]`, overridden per point.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct AccessPolicy {
    pub default_publish: PublishRule,
    pub default_play: PlayRule,
    /// Rules of points that set their own.
    pub points: HashMap<String, PointRules>,
    /// Key of the HMAC over signed URLs; `None` when signing is not configured.
    pub url_signing_key: Option<Vec<u8>>,
    pub limiter: LimiterSettings,
}

/// A point's own rules; `None` takes the default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PointRules {
    pub publish: Option<PublishRule>,
    pub play: Option<PlayRule>,
}

impl AccessPolicy {
    pub fn publish_rule(&self, point: &str) -> &PublishRule {
        self.points
            .get(point)
            .and_then(|rules| rules.publish.as_ref())
            .unwrap_or(&self.default_publish)
    }

    pub fn play_rule(&self, point: &str) -> &PlayRule {
        self.points
            .get(point)
            .and_then(|rules| rules.play.as_ref())
            .unwrap_or(&self.default_play)
    }

    /// The rules a compiled configuration sets.
    pub fn from_config(config: &crate::config::Config) -> Self {
        let security = &config.security;
        let points = config
            .points
            .iter()
            .filter(|point| point.publish.is_some() || point.play.is_some())
            .map(|point| {
                let rules = PointRules {
                    publish: point.publish.clone(),
                    play: point.play.clone(),
                };
                (point.name.clone(), rules)
            })
            .collect();
        Self {
            default_publish: security.publish.clone(),
            default_play: security.play.clone(),
            points,
            url_signing_key: security
                .url_signing_key
                .as_ref()
                .map(|key| key.expose().as_bytes().to_vec()),
            limiter: security.limiter,
        }
    }
}

/// The running access control: the policy a reload swaps, and the failed-attempt counts.
#[derive(Default)]
pub struct AccessControl {
    policy: ArcSwap<AccessPolicy>,
    failures: Mutex<FailureLimiter>,
}

/// What a request is about to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Publish,
    Play,
}

impl AccessControl {
    /// New requests follow `policy` from now on.
    pub fn set_policy(&self, policy: AccessPolicy) {
        self.failures
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .configure(policy.limiter);
        self.policy.store(Arc::new(policy));
    }

    pub fn policy(&self) -> Arc<AccessPolicy> {
        self.policy.load_full()
    }

    /// May `peer`, having presented `presented`, do `action` on `point` now? Failures count
    /// towards the peer's lockout; a locked-out peer is refused before any hash is checked.
    pub fn check(
        &self,
        action: Action,
        point: &str,
        peer: IpAddr,
        presented: &Credentials,
    ) -> Result<(), Denial> {
        let now = Instant::now();
        let policy = self.policy.load();
        let locked = self.limiter().locked_for(peer, now);
        if let Some(retry_after) = locked {
            return Err(Denial::RateLimited { retry_after });
        }
        let decided = match action {
            // Checking a password hash takes tens of milliseconds on purpose: off the
            // worker's other connections.
            Action::Publish => {
                off_the_runtime(|| decide::publish(policy.publish_rule(point), peer, presented))
            }
            Action::Play => decide::play(
                policy.play_rule(point),
                point,
                peer,
                presented,
                policy.url_signing_key.as_deref(),
                unix_now(),
            ),
        };
        if let Err(denial) = &decided {
            if denial.counts_as_failure() {
                self.limiter().record_failure(peer, now);
            }
        }
        decided
    }

    /// Does publishing to `point` take credentials (so a publisher that passed proved them)?
    pub fn credentials_required(&self, point: &str) -> bool {
        self.policy.load().publish_rule(point).needs_credentials()
    }

    fn limiter(&self) -> std::sync::MutexGuard<'_, FailureLimiter> {
        self.failures
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }
}

/// Run `work` (slow, blocking) so that the runtime moves this worker's other tasks elsewhere
/// meanwhile; on a current-thread runtime (tests) or outside one, simply run it.
fn off_the_runtime<T>(work: impl FnOnce() -> T) -> T {
    let multi_thread = tokio::runtime::Handle::try_current()
        .is_ok_and(|handle| handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
    match multi_thread {
        true => tokio::task::block_in_place(work),
        false => work(),
    }
}

/// Seconds since the Unix epoch, the clock signed URLs expire by.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs()
}

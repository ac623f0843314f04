//! Range-checked plugin settings.
//!
//! A plugin reads its `[plugins.<name>]` table with
//! [`parse_settings`](ferrocast_plugin_api::parse_settings) into a struct of plain numbers
//! (durations in milliseconds, sizes in bytes, counts), then turns it into its configuration.
//! [`SettingChecks`] (from the plugin API) does the second step: each call checks one setting's
//! range, records an error naming the key and the accepted range if it is out of it, and
//! returns the value in the type the configuration wants. [`SettingChecks::finish`] then
//! answers the configuration, or every error at once so the operator sees all problems in one
//! go. Durations can also be read straight into `Duration` fields with
//! [`millis`](ferrocast_plugin_api::settings::millis) and checked with
//! [`SettingChecks::duration`].
//!
//! ```
//! use std::time::Duration;
//! use ferrocast_plugin_kit::settings::SettingChecks;
//!
//! let mut checks = SettingChecks::new();
//! let timeout: Duration = checks.millis("idle_timeout_ms", 50, 100..=60_000);
//! let errors = checks.finish(timeout).unwrap_err();
//! assert_eq!(errors[0].message.as_str(), "50 is out of range; use 100 to 60000 milliseconds");
//! ```

use std::time::Duration;

/// The settings validator, which lives in the plugin API so that plugins without this kit
/// (out-of-tree ones) have it too; re-exported so the kit's users keep one import.
pub use ferrocast_plugin_api::settings::SettingChecks;

/// A default duration as the milliseconds a setting spells it in, for settings structs that keep
/// plain integers; a `Duration` field read with `ferrocast_plugin_api::settings::millis` needs
/// no conversion.
pub fn millis_of(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_in_milliseconds() {
        assert_eq!(millis_of(Duration::from_secs(10)), 10_000);
        assert_eq!(millis_of(Duration::MAX), u64::MAX);
    }
}

//! Helpers for plugins to parse and validate their own settings.
//!
//! The host passes a plugin the keys of its `[plugins.<name>]` table (less the host's own
//! `enabled` and `listen`) as TOML text with one `key = value` per line. Errors name the key, so
//! the host can point the operator at the right line of the configuration file.
//!
//! Read the table with [`parse_settings`] into a struct (durations can be [`Duration`] fields
//! spelled in milliseconds, through [`millis`]), then range-check it with [`SettingChecks`],
//! which hands back each value in the type the plugin wants and collects every error so the
//! operator sees all problems at once:
//!
//! ```
//! use std::time::Duration;
//! use ferrocast_plugin_api::settings::{millis, parse_settings, SettingChecks};
//!
//! #[derive(serde::Deserialize)]
//! #[serde(deny_unknown_fields, default)]
//! struct Settings {
//!     #[serde(rename = "idle_timeout_ms", with = "millis")]
//!     idle_timeout: Duration,
//!     max_request_bytes: u64,
//! }
//! # impl Default for Settings {
//! #     fn default() -> Self {
//! #         Self { idle_timeout: Duration::from_secs(30), max_request_bytes: 4096 }
//! #     }
//! # }
//!
//! let settings: Settings = parse_settings("idle_timeout_ms = 50\nmax_request_bytes = 10").unwrap();
//! let mut checks = SettingChecks::new();
//! let idle = checks.duration(
//!     "idle_timeout_ms",
//!     settings.idle_timeout,
//!     Duration::from_millis(100)..=Duration::from_secs(60),
//! );
//! let max_request: usize = checks.bytes("max_request_bytes", settings.max_request_bytes, 256..=65_536);
//! let errors = checks.finish((idle, max_request)).unwrap_err();
//! assert_eq!(errors[0].key.as_str(), "idle_timeout_ms");
//! assert_eq!(errors[0].message.as_str(), "50 is out of range; use 100 to 60000 milliseconds");
//! assert_eq!(errors[1].key.as_str(), "max_request_bytes");
//! ```

use std::ops::RangeInclusive;
use std::time::Duration;

use serde::de::DeserializeOwned;

use crate::types::SettingError;

/// Deserialize settings into `T`, usually a struct with `#[serde(deny_unknown_fields)]` and
/// defaults. On failure the error names the offending key where it can be found.
pub fn parse_settings<T: DeserializeOwned>(settings: &str) -> Result<T, Vec<SettingError>> {
    toml_edit::de::from_str(settings).map_err(|error| {
        let key = error
            .span()
            .map(|span| key_at(settings, span.start))
            .unwrap_or_default();
        vec![SettingError::new(key, error.message().trim().to_owned())]
    })
}

/// Check that setting `key` lies in `range`, recording an error that names the key and the
/// accepted range (`unit` words it: "milliseconds", "bytes"). Collect all errors, then
/// return them together so the operator sees every problem at once.
///
/// [`SettingChecks`] does the same without the out-parameter and is the preferred form; this
/// function stays for plugins written against 1.0.
pub fn check_range(
    errors: &mut Vec<SettingError>,
    key: &str,
    value: u64,
    range: std::ops::RangeInclusive<u64>,
    unit: &str,
) {
    if !range.contains(&value) {
        errors.push(SettingError::new(
            key,
            format!(
                "{value} is out of range; use {} to {} {unit}",
                range.start(),
                range.end()
            ),
        ));
    }
}

/// Range checks of one plugin's settings, collecting every error instead of stopping at the
/// first. Each check returns the value in the type the plugin's configuration wants;
/// [`SettingChecks::finish`] then answers that configuration, or all the errors.
#[derive(Debug, Default)]
pub struct SettingChecks {
    errors: Vec<SettingError>,
}

impl SettingChecks {
    /// No checks run yet, no errors.
    pub fn new() -> Self {
        Self::default()
    }

    /// Setting `key` must lie in `range`; `unit` words the range in the error ("requests").
    pub fn in_range(
        &mut self,
        key: &str,
        value: u64,
        range: RangeInclusive<u64>,
        unit: &str,
    ) -> u64 {
        check_range(&mut self.errors, key, value, range, unit);
        value
    }

    /// A duration given in milliseconds, as a plain integer setting.
    pub fn millis(&mut self, key: &str, value: u64, range: RangeInclusive<u64>) -> Duration {
        Duration::from_millis(self.in_range(key, value, range, "milliseconds"))
    }

    /// A duration read with [`millis`] into a [`Duration`] field; the error words `range` in
    /// milliseconds, the unit the operator writes.
    pub fn duration(
        &mut self,
        key: &str,
        value: Duration,
        range: RangeInclusive<Duration>,
    ) -> Duration {
        if !range.contains(&value) {
            // Worded like `check_range`, but decided on the exact durations: a fraction of a
            // millisecond past the end is still out of range.
            self.error(
                key,
                format!(
                    "{} is out of range; use {} to {} milliseconds",
                    whole_millis(value),
                    whole_millis(*range.start()),
                    whole_millis(*range.end())
                ),
            );
        }
        value
    }

    /// A size given in bytes. Values beyond `usize` (only possible with a range allowing them
    /// on a 32-bit target) saturate.
    pub fn bytes(&mut self, key: &str, value: u64, range: RangeInclusive<u64>) -> usize {
        usize::try_from(self.in_range(key, value, range, "bytes")).unwrap_or(usize::MAX)
    }

    /// Record a problem found by a check of the plugin's own (a malformed address, say).
    pub fn error(&mut self, key: &str, message: impl Into<String>) {
        self.errors.push(SettingError::new(key, message));
    }

    /// The errors found so far.
    pub fn errors(&self) -> &[SettingError] {
        &self.errors
    }

    /// `config` if every check passed, else all the errors, in the order they were found.
    pub fn finish<T>(self, config: T) -> Result<T, Vec<SettingError>> {
        if self.errors.is_empty() {
            Ok(config)
        } else {
            Err(self.errors)
        }
    }
}

/// A [`Duration`] in whole milliseconds, saturating.
fn whole_millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// A [`Duration`] setting written as an integer number of milliseconds, for
/// `#[serde(with = "ferrocast_plugin_api::settings::millis")]` (usually with
/// `rename = "<name>_ms"`, so the key says its unit). See the [module](self) example.
pub mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    /// Read an integer number of milliseconds.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        u64::deserialize(deserializer).map(Duration::from_millis)
    }

    /// Write whole milliseconds (saturating), so a settings struct can also be written back.
    pub fn serialize<S: Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u64(super::whole_millis(*duration))
    }
}

/// The key on the line holding byte `offset` (the host writes one key per line).
fn key_at(settings: &str, offset: usize) -> String {
    let line_start = settings[..offset.min(settings.len())]
        .rfind('\n')
        .map_or(0, |i| i + 1);
    let line = settings[line_start..].lines().next().unwrap_or("");
    line.split('=')
        .next()
        .unwrap_or("")
        .trim()
        .trim_matches('"')
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    struct Settings {
        #[serde(default)]
        timeout_ms: u64,
        #[serde(default)]
        name: String,
    }

    #[test]
    fn out_of_range_values_are_reported_by_key() {
        let mut errors = Vec::new();
        check_range(&mut errors, "timeout_ms", 5, 100..=1000, "milliseconds");
        check_range(&mut errors, "size", 500, 100..=1000, "bytes");
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].key.as_str(), "timeout_ms");
        assert_eq!(
            errors[0].message.as_str(),
            "5 is out of range; use 100 to 1000 milliseconds"
        );
    }

    #[derive(Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    struct Timed {
        #[serde(rename = "idle_timeout_ms", with = "millis")]
        idle_timeout: Duration,
    }

    #[test]
    fn millisecond_settings_read_into_durations() {
        let parsed: Timed = parse_settings("idle_timeout_ms = 2500\n").unwrap();
        assert_eq!(parsed.idle_timeout, Duration::from_millis(2500));
    }

    #[test]
    fn millisecond_settings_refuse_other_types_by_key() {
        for text in ["idle_timeout_ms = \"2s\"\n", "idle_timeout_ms = -1\n"] {
            let errors = parse_settings::<Timed>(text).unwrap_err();
            assert_eq!(errors[0].key.as_str(), "idle_timeout_ms", "{text}");
        }
        let errors = parse_settings::<Timed>("idle_timeout = 5\n").unwrap_err();
        assert_eq!(errors[0].key.as_str(), "idle_timeout");
    }

    #[test]
    fn millisecond_settings_write_back_as_integers() {
        let mut text = String::new();
        let serializer = toml_edit::ser::ValueSerializer::new();
        let value = millis::serialize(&Duration::from_millis(1500), serializer).unwrap();
        text.push_str(&value.to_string());
        assert_eq!(text, "1500");
    }

    #[test]
    fn checks_return_values_in_their_types() {
        let mut checks = SettingChecks::new();
        let timeout = checks.millis("timeout_ms", 100, 100..=1000);
        let idle = checks.duration(
            "idle_ms",
            Duration::from_secs(1),
            Duration::from_millis(1)..=Duration::from_secs(1),
        );
        let size = checks.bytes("size", 1000, 100..=1000);
        let count = checks.in_range("count", 7, 1..=10, "requests");
        assert!(checks.errors().is_empty());
        assert_eq!(
            checks.finish((timeout, idle, size, count)).unwrap(),
            (Duration::from_millis(100), Duration::from_secs(1), 1000, 7)
        );
    }

    #[test]
    fn checks_collect_every_error_by_key_in_order() {
        let mut checks = SettingChecks::new();
        checks.millis("timeout_ms", 99, 100..=1000);
        checks.bytes("size", 500, 100..=1000);
        checks.bytes("buffer", 1001, 100..=1000);
        checks.duration(
            "idle_ms",
            Duration::from_millis(1500),
            Duration::from_millis(100)..=Duration::from_secs(1),
        );
        checks.in_range("count", 0, 1..=10, "requests");
        checks.error("listen", "`x` is not ip:port");
        let errors = checks.finish(()).unwrap_err();
        let found: Vec<(&str, &str)> = errors
            .iter()
            .map(|error| (error.key.as_str(), error.message.as_str()))
            .collect();
        assert_eq!(
            found,
            [
                (
                    "timeout_ms",
                    "99 is out of range; use 100 to 1000 milliseconds"
                ),
                ("buffer", "1001 is out of range; use 100 to 1000 bytes"),
                (
                    "idle_ms",
                    "1500 is out of range; use 100 to 1000 milliseconds"
                ),
                ("count", "0 is out of range; use 1 to 10 requests"),
                ("listen", "`x` is not ip:port"),
            ]
        );
    }

    #[test]
    fn a_duration_just_outside_its_range_is_refused() {
        let mut checks = SettingChecks::new();
        let range = Duration::from_millis(100)..=Duration::from_secs(1);
        checks.duration("low_ms", Duration::from_micros(99_999), range.clone());
        checks.duration("high_ms", Duration::from_micros(1_000_001), range);
        assert_eq!(checks.errors().len(), 2);
    }

    #[test]
    fn parses_valid_settings() {
        let parsed: Settings = parse_settings("timeout_ms = 5\nname = \"x\"\n").unwrap();
        assert_eq!(parsed.timeout_ms, 5);
        assert_eq!(parsed.name, "x");
    }

    #[test]
    fn wrong_type_names_the_key() {
        let errors =
            parse_settings::<Settings>("name = \"x\"\ntimeout_ms = \"soon\"\n").unwrap_err();
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].key.as_str(), "timeout_ms");
        assert!(
            errors[0].message.contains("invalid type"),
            "{:?}",
            errors[0]
        );
    }

    #[test]
    fn unknown_key_names_the_key() {
        let errors = parse_settings::<Settings>("name = \"x\"\ntimeotu_ms = 3\n").unwrap_err();
        assert_eq!(errors[0].key.as_str(), "timeotu_ms");
        assert!(
            errors[0].message.contains("unknown field"),
            "{:?}",
            errors[0]
        );
    }
}

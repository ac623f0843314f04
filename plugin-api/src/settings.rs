//! Helpers for plugins to parse and validate their own settings.
//!
//! The host passes a plugin the keys of its `[plugins.<name>]` table (less the host's own
//! `enabled` and `listen`) as TOML text with one `key = value` per line. Errors name the key, so
//! the host can point the operator at the right line of the configuration file.

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

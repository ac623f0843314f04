//! The `[limits]` table and the per-point limit keys (`max_clients`, `max_bandwidth`,
//! `max_bandwidth_kbps`): what one client, one address or one point may take of the server.

use std::ops::RangeInclusive;
use std::time::Duration;

use toml_edit::Table;

use super::{Compiler, Section};
use crate::config::value::describe;
use crate::config::{LimitsConfig, PointLimits};

pub(super) const LIMITS_KEYS: &[&str] = &[
    "max_connections",
    "max_connections_per_ip",
    "connection_rate_per_ip",
    "idle_timeout_ms",
    "send_buffer_bytes",
];

const MAX_CONNECTIONS_RANGE: RangeInclusive<i64> = 1..=1_000_000;
const CONNECTION_RATE_RANGE: RangeInclusive<i64> = 0..=1_000_000;
const IDLE_TIMEOUT_MS_RANGE: RangeInclusive<i64> = 100..=3_600_000;
const SEND_BUFFER_RANGE: RangeInclusive<i64> = 4_096..=67_108_864;
const MAX_CLIENTS_RANGE: RangeInclusive<i64> = 1..=1_000_000;
const BANDWIDTH_KBPS_RANGE: RangeInclusive<i64> = 1..=1_000_000_000;

impl Compiler<'_> {
    pub(super) fn limits(&mut self, root: &Table) -> LimitsConfig {
        let mut limits = LimitsConfig::default();
        let Some(section) = self.table_section(root, "limits", "[limits]") else {
            return limits;
        };
        self.check_unknown_keys(&section, LIMITS_KEYS);
        let count = |compiler: &mut Self, key: &str, range, into: &mut u32| {
            if let Some(value) = compiler.read_integer(&section, key, range) {
                // Every range above ends well inside u32.
                *into = value as u32;
            }
        };
        count(
            self,
            "max_connections",
            MAX_CONNECTIONS_RANGE,
            &mut limits.max_connections,
        );
        count(
            self,
            "max_connections_per_ip",
            MAX_CONNECTIONS_RANGE,
            &mut limits.max_connections_per_ip,
        );
        count(
            self,
            "connection_rate_per_ip",
            CONNECTION_RATE_RANGE,
            &mut limits.connection_rate_per_ip,
        );
        if let Some(ms) = self.read_integer(&section, "idle_timeout_ms", IDLE_TIMEOUT_MS_RANGE) {
            limits.idle_timeout = Duration::from_millis(ms.unsigned_abs());
        }
        if let Some(bytes) = self.read_integer(&section, "send_buffer_bytes", SEND_BUFFER_RANGE) {
            limits.send_buffer_bytes = bytes as usize;
        }
        if limits.max_connections_per_ip > limits.max_connections {
            self.warn(
                section.line,
                format!(
                    "[limits] max_connections_per_ip ({}) is above max_connections ({}); one address can take every connection",
                    limits.max_connections_per_ip, limits.max_connections
                ),
            );
        }
        limits
    }

    /// A point's `max_clients` and outgoing bandwidth cap.
    pub(super) fn point_limits(&mut self, section: &Section<'_>) -> PointLimits {
        let mut limits = PointLimits::default();
        if let Some(clients) = self.read_integer(section, "max_clients", MAX_CLIENTS_RANGE) {
            limits.max_clients = Some(clients as u32);
        }
        let kbps = self.read_integer(section, "max_bandwidth_kbps", BANDWIDTH_KBPS_RANGE);
        let text = self.bandwidth_text(section);
        match (kbps, text) {
            (Some(_), Some((_, line))) => self.error(
                line,
                "give either `max_bandwidth` or `max_bandwidth_kbps`, not both",
            ),
            (Some(kbps), None) => limits.max_bandwidth_bps = Some(kbps.unsigned_abs() * 1000),
            (None, Some((bps, _))) => limits.max_bandwidth_bps = Some(bps),
            (None, None) => {}
        }
        limits
    }

    /// `max_bandwidth`: bits per second with an optional k, M or G suffix ("50M").
    fn bandwidth_text(&mut self, section: &Section<'_>) -> Option<(u64, usize)> {
        let (item, line) = self.entry(section, "max_bandwidth")?;
        let parsed = match (item.as_str(), item.as_integer()) {
            (Some(text), _) => parse_bandwidth(text),
            (None, Some(bits)) if bits > 0 => Some(bits.unsigned_abs()),
            _ => None,
        };
        match parsed {
            Some(bps) if bps >= 1000 => Some((bps, line)),
            _ => {
                self.error(
                    line,
                    format!(
                        "`max_bandwidth` must be bits per second of at least 1k, like \"50M\", \"800k\" or \"1G\", found {}",
                        describe(item)
                    ),
                );
                None
            }
        }
    }
}

/// "50M" → 50_000_000 bits per second; decimal suffixes k, M, G.
pub(super) fn parse_bandwidth(text: &str) -> Option<u64> {
    let text = text.trim();
    let (digits, factor) = match text.char_indices().last()? {
        (at, 'k' | 'K') => (&text[..at], 1_000),
        (at, 'M' | 'm') => (&text[..at], 1_000_000),
        (at, 'G' | 'g') => (&text[..at], 1_000_000_000),
        _ => (text, 1),
    };
    let number: f64 = digits.trim().parse().ok()?;
    if !number.is_finite() || number <= 0.0 {
        return None;
    }
    let bits = number * factor as f64;
    (bits <= 1e15).then_some(bits as u64)
}

#[cfg(test)]
mod tests {
    use super::parse_bandwidth;

    #[test]
    fn bandwidth_suffixes_are_decimal_bits() {
        assert_eq!(parse_bandwidth("50M"), Some(50_000_000));
        assert_eq!(parse_bandwidth("800k"), Some(800_000));
        assert_eq!(parse_bandwidth("1.5G"), Some(1_500_000_000));
        assert_eq!(parse_bandwidth("64000"), Some(64_000));
        for bad in ["", "M", "-5M", "fast", "5T"] {
            assert_eq!(parse_bandwidth(bad), None, "{bad}");
        }
    }
}

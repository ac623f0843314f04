//! On-by-default switches read from the environment (`FERROCAST_UDP_GSO`,
//! `FERROCAST_UDP_FANOUT`, `FERROCAST_TCP_FANOUT`, `FERROCAST_SENDFILE`): ways to turn a fast
//! path off for a process, to compare it or to rule it out when diagnosing.

use std::sync::OnceLock;

use tracing::info;

/// Whether a switch's setting (the environment variable's value, if set) leaves it on: it
/// does unless it says `off`, `0`, `false` or `no`.
pub fn switched_on_by(setting: Option<&str>) -> bool {
    !matches!(
        setting
            .map(|value| value.trim().to_ascii_lowercase())
            .as_deref(),
        Some("off" | "0" | "false" | "no")
    )
}

/// Whether the fast path behind the environment variable `variable` is on for the process:
/// read once into `cell`, and `when_off` logged at info (once) if the setting turns it off.
pub fn on_unless_switched_off(cell: &OnceLock<bool>, variable: &str, when_off: &str) -> bool {
    *cell.get_or_init(|| {
        let on = switched_on_by(std::env::var(variable).ok().as_deref());
        if !on {
            info!(variable, "{when_off}");
        }
        on
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_switch_is_on_unless_its_setting_says_no() {
        for setting in [None, Some("on"), Some("1"), Some("")] {
            assert!(switched_on_by(setting), "{setting:?}");
        }
        for no in ["off", "OFF", " 0 ", "false", "no", "No", " OFF "] {
            assert!(!switched_on_by(Some(no)), "{no}");
        }
    }
}

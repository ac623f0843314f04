//! On-by-default switches read from the environment (`FERROCAST_UDP_GSO`,
//! `FERROCAST_UDP_FANOUT`, `FERROCAST_TCP_FANOUT`, `FERROCAST_SENDFILE`): ways to turn a fast
//! path off for a process, to compare it or to rule it out when diagnosing.

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

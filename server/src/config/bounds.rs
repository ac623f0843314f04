//! The bounded keys of the optional settings tables (`[hls]`, a point's `record`): each key's
//! name, how it is written (an integer of milliseconds, a duration string, a count) and its
//! bounds, in one place. The compiler reads each with its bounds and names the key, the table
//! and the range when a value is bad; `config show` writes each back in the form it is read.

use std::ops::RangeInclusive;
use std::time::Duration;

use toml_edit::Value;

/// How a duration key is written in the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum DurationForm {
    /// An integer of milliseconds: `target_duration_ms = 2000`.
    Millis,
    /// A string with units (`ms`, `s`, `m`, `h`, `d`): `segment = "1h30m"`.
    Text,
}

/// A duration key of an optional table and the durations it accepts.
pub(crate) struct DurationKey {
    pub name: &'static str,
    pub form: DurationForm,
    pub range: RangeInclusive<Duration>,
}

impl DurationKey {
    /// What `config show` writes for `duration`: milliseconds either way, so it reads back
    /// the same (`2000`, or `"5400000ms"`).
    pub(crate) fn shown(&self, duration: Duration) -> Value {
        let millis = i64::try_from(duration.as_millis()).unwrap_or(i64::MAX);
        match self.form {
            DurationForm::Millis => millis.into(),
            DurationForm::Text => format!("{millis}ms").into(),
        }
    }
}

/// A whole-number key of an optional table and the numbers it accepts.
pub(crate) struct CountKey {
    pub name: &'static str,
    pub range: RangeInclusive<i64>,
}

const fn millis(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

const DAY: u64 = 86_400_000;

/// `[hls]`: the target segment duration.
pub(crate) const HLS_TARGET_DURATION: DurationKey = DurationKey {
    name: "target_duration_ms",
    form: DurationForm::Millis,
    range: millis(500)..=millis(60_000),
};
/// `[hls]`: segments a live playlist lists.
pub(crate) const HLS_WINDOW: CountKey = CountKey {
    name: "window",
    range: 2..=1000,
};
/// `[hls]`: the partial segment duration (0: no partial segments).
pub(crate) const HLS_PART: DurationKey = DurationKey {
    name: "part_ms",
    form: DurationForm::Millis,
    range: millis(0)..=millis(5_000),
};
/// `[hls]`: segment memory per point, in MiB.
pub(crate) const HLS_MAX_MEMORY_MB: CountKey = CountKey {
    name: "max_memory_mb",
    range: 1..=16_384,
};
/// A point's `record`: how long each file runs.
pub(crate) const RECORD_SEGMENT: DurationKey = DurationKey {
    name: "segment",
    form: DurationForm::Text,
    range: millis(1_000)..=millis(DAY),
};
/// A point's `record`: how long files are kept.
pub(crate) const RECORD_RETAIN: DurationKey = DurationKey {
    name: "retain",
    form: DurationForm::Text,
    range: millis(1_000)..=millis(3650 * DAY),
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_shown_in_milliseconds_in_the_form_they_are_read() {
        let shown = HLS_TARGET_DURATION.shown(Duration::from_secs(2));
        assert_eq!(shown.as_integer(), Some(2000));
        let shown = RECORD_SEGMENT.shown(Duration::from_secs(5400));
        assert_eq!(shown.as_str(), Some("5400000ms"));
        let parsed = crate::record::plan::parse_duration("5400000ms");
        assert_eq!(parsed, Some(Duration::from_secs(5400)));
    }
}

//! Reading the bounded keys of the optional settings tables (`[hls]`, a point's `record`,
//! described in `config::bounds`): each error names the key, its table and the accepted
//! range.

use std::time::Duration;

use toml_edit::Item;

use super::{Compiler, Section};
use crate::config::bounds::{CountKey, DurationForm, DurationKey};
use crate::config::value::describe;
use crate::record::plan::parse_duration;

impl Compiler<'_> {
    /// The whole number `key` of `section`; `None` if absent or invalid (reported).
    pub(super) fn read_count(&mut self, section: &Section<'_>, key: &CountKey) -> Option<i64> {
        let (item, line) = self.entry(section, key.name)?;
        let what = format!("`{}` of {}", key.name, section.label);
        self.integer_in(item, line, key.name, &what, key.range.clone())
    }

    /// The duration `key` of `section`, in the form the key is written in; `None` if absent
    /// or invalid (reported).
    pub(super) fn read_duration(
        &mut self,
        section: &Section<'_>,
        key: &DurationKey,
    ) -> Option<Duration> {
        let (item, line) = self.entry(section, key.name)?;
        let what = format!("`{}` of {}", key.name, section.label);
        match key.form {
            DurationForm::Millis => {
                let millis =
                    |duration: &Duration| i64::try_from(duration.as_millis()).unwrap_or(i64::MAX);
                let range = millis(key.range.start())..=millis(key.range.end());
                let ms = self.integer_in(item, line, key.name, &what, range)?;
                Some(Duration::from_millis(ms.unsigned_abs()))
            }
            DurationForm::Text => self.duration_text(item, line, key, &what),
        }
    }

    /// A duration string such as `"1h30m"` within `key`'s range.
    fn duration_text(
        &mut self,
        item: &Item,
        line: usize,
        key: &DurationKey,
        what: &str,
    ) -> Option<Duration> {
        let range = &key.range;
        let message = match (item.as_str().and_then(parse_duration), item) {
            (Some(duration), _) if range.contains(&duration) => return Some(duration),
            (Some(duration), _) => format!(
                "{what} must be from {:?} to {:?}, found {duration:?}",
                range.start(),
                range.end()
            ),
            (None, Item::Value(value)) if value.is_str() => format!(
                "{what} must be a duration such as \"90s\", \"1h\", \"1h30m\" or \"7d\" (units ms, s, m, h, d), found \"{}\"",
                value.as_str().unwrap_or_default()
            ),
            (None, other) => format!(
                "{what} must be a duration string such as \"1h\", found {}",
                describe(other)
            ),
        };
        self.error(line, message);
        None
    }
}

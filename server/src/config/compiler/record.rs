//! A broadcast point's `record` table: where its recording goes, how long each file runs
//! and how long files are kept. Durations are strings such as `"90s"`, `"1h"`, `"1h30m"`,
//! `"7d"` (units `ms`, `s`, `m`, `h`, `d`).

use std::time::Duration;

use super::{Compiler, Section};
use crate::config::bounds::{RECORD_RETAIN, RECORD_SEGMENT};
use crate::config::value::describe;
use crate::config::PointKind;
use crate::record::RecordSettings;

const RECORD_KEYS: &[&str] = &["dir", RECORD_SEGMENT.name, RECORD_RETAIN.name];
const DEFAULT_SEGMENT: Duration = Duration::from_secs(3600);
const EXAMPLE: &str = "record = { dir = \"recordings\", segment = \"1h\", retain = \"7d\" }";

impl Compiler<'_> {
    /// The point's `record` settings, if it has a valid one (errors are recorded).
    pub(super) fn point_record(
        &mut self,
        section: &Section<'_>,
        kind: Option<PointKind>,
    ) -> Option<RecordSettings> {
        let item = section.table.get("record")?;
        let line = self.table_line(section.table, "record", item, section.line);
        if kind == Some(PointKind::OnDemand) {
            self.error(line, "`record` only applies to broadcast points; to serve recordings, point an on-demand point's `source` at the recording directory");
            return None;
        }
        let Some(table) = item.as_table_like() else {
            self.error(
                line,
                format!(
                    "`record` must be a table, e.g. {EXAMPLE}, found {}",
                    describe(item)
                ),
            );
            return None;
        };
        let record = Section {
            table,
            label: format!("`record` of {}", section.label),
            line,
        };
        self.check_unknown_keys(&record, RECORD_KEYS);
        let dir = match self.read_string(&record, "dir") {
            Some((raw, _)) if !raw.is_empty() => Some(self.resolve(raw)),
            Some((_, line)) => {
                self.error(line, "`dir` of `record` must not be empty");
                None
            }
            None => {
                if !record.table.contains_key("dir") {
                    self.error(line, format!("`record` needs `dir`, e.g. {EXAMPLE}"));
                }
                None
            }
        };
        let segment = self.read_duration(&record, &RECORD_SEGMENT);
        let retain = self.read_duration(&record, &RECORD_RETAIN);
        // An invalid duration was reported: the configuration is refused whatever is kept.
        Some(RecordSettings {
            dir: dir?,
            segment: segment.unwrap_or(DEFAULT_SEGMENT),
            retain,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use crate::config::{compile, PluginCatalog, SettingIssue};

    struct HttpOnly;

    impl PluginCatalog for HttpOnly {
        fn plugin_names(&self) -> Vec<String> {
            vec!["http".to_string()]
        }
        fn validate_settings(&self, _plugin: &str, _settings: &str) -> Vec<SettingIssue> {
            Vec::new()
        }
    }

    fn point(record: &str) -> String {
        format!("[plugins.http]\nlisten = [\"127.0.0.1:0\"]\n\n[[point]]\nname = \"live\"\nkind = \"broadcast\"\nsource = \"push\"\nprotocols = [\"http\"]\n{record}\n")
    }

    #[test]
    fn record_takes_a_directory_relative_to_the_file_and_durations() {
        let text = point("record = { dir = \"rec\", segment = \"2s\", retain = \"1h30m\" }");
        let config = compile(Path::new("/etc/ferrocast/f.toml"), &text, &HttpOnly).unwrap();
        let record = &config.recordings["live"];
        assert_eq!(record.dir, Path::new("/etc/ferrocast/rec"));
        assert_eq!(record.segment, Duration::from_secs(2));
        assert_eq!(record.retain, Some(Duration::from_secs(5400)));
        let text = point("[point.record]\ndir = \"/var/rec\"");
        let config = compile(Path::new("/etc/ferrocast/f.toml"), &text, &HttpOnly).unwrap();
        let record = &config.recordings["live"];
        assert_eq!(record.segment, Duration::from_secs(3600));
        assert_eq!(record.retain, None);
        assert!(compile(Path::new("/f.toml"), &point(""), &HttpOnly)
            .unwrap()
            .recordings
            .is_empty());
    }

    #[test]
    fn bad_record_settings_are_errors_at_their_line() {
        let cases = [
            (
                "record = { dir = \"r\", segment = \"1x\" }",
                "must be a duration such as",
            ),
            (
                "record = { dir = \"r\", segment = \"0s\" }",
                "`segment` of `record` of [[point]] `live` must be from 1s to 86400s, found 0ns",
            ),
            (
                "record = { dir = \"r\", retain = 7 }",
                "must be a duration string",
            ),
            ("record = { segment = \"1h\" }", "`record` needs `dir`"),
            (
                "record = { dir = \"r\", keep = \"1d\" }",
                "unknown key `keep`",
            ),
            ("record = \"r\"", "`record` must be a table"),
        ];
        for (record, expected) in cases {
            let errors = compile(Path::new("/f.toml"), &point(record), &HttpOnly).unwrap_err();
            let text = errors.to_string();
            assert!(text.contains("/f.toml:9:"), "{record}: {text}");
            assert!(text.contains(expected), "{record}: {text}");
        }
    }

    #[test]
    fn on_demand_points_cannot_record() {
        let text = format!(
            "[plugins.http]\nlisten = [\"127.0.0.1:0\"]\n\n[[point]]\nname = \"vod\"\nkind = \"on-demand\"\nsource = \"{}\"\nprotocols = [\"http\"]\nrecord = {{ dir = \"r\" }}\n",
            std::env::temp_dir().display()
        );
        let errors = compile(Path::new("/f.toml"), &text, &HttpOnly).unwrap_err();
        assert!(
            errors
                .to_string()
                .contains("/f.toml:9: `record` only applies to broadcast points"),
            "{errors}"
        );
    }
}

//! The `[hls]` table: how broadcast points with `hls` among their protocols are cut into
//! segments (target duration, window, partial segments for low-latency HLS) and how much
//! segment memory each may hold.

use toml_edit::Table;

use super::Compiler;
use crate::config::bounds::{HLS_MAX_MEMORY_MB, HLS_PART, HLS_TARGET_DURATION, HLS_WINDOW};
use crate::hls::HlsSettings;

const HLS_KEYS: &[&str] = &[
    HLS_TARGET_DURATION.name,
    HLS_WINDOW.name,
    HLS_PART.name,
    HLS_MAX_MEMORY_MB.name,
];

impl Compiler<'_> {
    /// The defaults when the file has no `[hls]` table.
    pub(super) fn hls(&mut self, root: &Table) -> HlsSettings {
        let mut settings = HlsSettings::default();
        let Some(section) = self.table_section(root, "hls", "[hls]") else {
            return settings;
        };
        self.check_unknown_keys(&section, HLS_KEYS);
        if let Some(target) = self.read_duration(&section, &HLS_TARGET_DURATION) {
            settings.target_duration = target;
        }
        if let Some(window) = self.read_count(&section, &HLS_WINDOW) {
            settings.window = window as usize;
        }
        if let Some(part) = self.read_duration(&section, &HLS_PART) {
            settings.part_duration = (!part.is_zero()).then_some(part);
        }
        if let (Some(part), Some((_, line))) =
            (settings.part_duration, self.entry(&section, HLS_PART.name))
        {
            if part * 2 > settings.target_duration {
                self.error(
                    line,
                    format!(
                        "`part_ms` ({} ms) must be at most half of `target_duration_ms` ({} ms), so that every segment has several parts",
                        part.as_millis(),
                        settings.target_duration.as_millis()
                    ),
                );
            }
        }
        if let Some(mb) = self.read_count(&section, &HLS_MAX_MEMORY_MB) {
            settings.max_bytes = mb as usize * 1024 * 1024;
        }
        settings
    }

    /// `hls` in a point's protocols is served by the HTTP plugin: it needs no plugin of its
    /// own, only an enabled `http` plugin.
    pub(super) fn hls_protocol_served(
        &mut self,
        line: usize,
        plugins: &std::collections::BTreeMap<String, crate::config::PluginConfig>,
    ) {
        if !plugins.get("http").is_some_and(|plugin| plugin.enabled) {
            self.warn(
                line,
                "protocol `hls` is served on the HTTP plugin's listeners, but [plugins.http] is missing or disabled, so no one serves it; add [plugins.http]".to_owned(),
            );
        }
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

    const POINT: &str = "[[point]]\nname = \"live\"\nkind = \"broadcast\"\nsource = \"push\"\nprotocols = [\"http\", \"hls\"]\n";

    #[test]
    fn hls_is_a_protocol_served_by_http_and_hls_sets_the_cutting() {
        let text = format!(
            "[plugins.http]\nlisten = [\"127.0.0.1:0\"]\n\n[hls]\ntarget_duration_ms = 4000\nwindow = 8\npart_ms = 1000\nmax_memory_mb = 16\n\n{POINT}"
        );
        let config = compile(Path::new("f.toml"), &text, &HttpOnly).unwrap();
        assert_eq!(config.points[0].protocols, ["http", "hls"]);
        assert_eq!(config.hls.target_duration, Duration::from_secs(4));
        assert_eq!(config.hls.window, 8);
        assert_eq!(config.hls.part_duration, Some(Duration::from_secs(1)));
        assert_eq!(config.hls.max_bytes, 16 << 20);
        assert!(config.warnings.is_empty(), "{:?}", config.warnings);
    }

    #[test]
    fn hls_without_http_warns_and_bad_values_are_errors() {
        let config = compile(Path::new("f.toml"), POINT, &HttpOnly).unwrap();
        assert!(
            config.warnings.iter().any(|w| w.contains("protocol `hls`")),
            "{:?}",
            config.warnings
        );
        assert_eq!(config.hls, crate::hls::HlsSettings::default());
        let text = format!(
            "[hls]\ntarget_duration_ms = 1000\npart_ms = 800\nwindow = 1\nspeed = 2\n\n{POINT}"
        );
        let errors = compile(Path::new("f.toml"), &text, &HttpOnly).unwrap_err();
        let text = errors.to_string();
        assert!(
            text.contains("at most half of `target_duration_ms`"),
            "{text}"
        );
        assert!(
            text.contains("`window` of [hls] must be between 2 and 1000, found 1"),
            "{text}"
        );
        assert!(text.contains("speed"), "{text}");
    }
}

//! The `[hls]` table: how broadcast points with `hls` among their protocols are cut into
//! segments (target duration, window, partial segments for low-latency HLS) and how much
//! segment memory each may hold.

use std::time::Duration;

use toml_edit::Table;

use super::Compiler;
use crate::hls::HlsSettings;

const HLS_KEYS: &[&str] = &["target_duration_ms", "window", "part_ms", "max_memory_mb"];

impl Compiler<'_> {
    /// The defaults when the file has no `[hls]` table.
    pub(super) fn hls(&mut self, root: &Table) -> HlsSettings {
        let mut settings = HlsSettings::default();
        let Some(section) = self.table_section(root, "hls", "[hls]") else {
            return settings;
        };
        self.check_unknown_keys(&section, HLS_KEYS);
        if let Some(ms) = self.read_integer(&section, "target_duration_ms", 500..=60_000) {
            settings.target_duration = Duration::from_millis(ms as u64);
        }
        if let Some(window) = self.read_integer(&section, "window", 2..=1000) {
            settings.window = window as usize;
        }
        if let Some(ms) = self.read_integer(&section, "part_ms", 0..=5_000) {
            settings.part_duration = (ms > 0).then(|| Duration::from_millis(ms as u64));
        }
        if let (Some(part), Some((_, line))) =
            (settings.part_duration, self.entry(&section, "part_ms"))
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
        if let Some(mb) = self.read_integer(&section, "max_memory_mb", 1..=16_384) {
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

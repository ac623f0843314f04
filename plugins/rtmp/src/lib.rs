//! # ferrocast RTMP control plugin
//!
//! RTMP ingest: an encoder (OBS, ffmpeg's `-f flv`, vMix, hardware encoders) publishes
//! FLV-framed H.264/AAC to `rtmp://host/<app>/<point>`, and the plugin remuxes it into
//! MPEG-TS for the point ([`remux`]), which the host then serves over every protocol the
//! point enables. OBS: server `rtmp://host/live`, stream key `<point>`.
//!
//! A stream key goes in the stream name's query (`<point>?key=SECRET`, or
//! `rtmp://host/live/<point>?key=SECRET`) and is presented to the host like the `?key=` of an
//! HTTP push; the point's `publish` rules decide. Playing over RTMP is refused.
//!
//! [`proto`] is the protocol core without any host (handshake, chunk stream, AMF0,
//! messages); [`session`] turns it into host actions.
//!
//! ## Settings (`[plugins.rtmp]`)
//!
//! | key | default | range | meaning |
//! |---|---|---|---|
//! | `app` | `"live"` | a name without `/`, `?` or spaces | the application encoders connect to: `rtmp://host/<app>` |
//! | `chunk_size` | 4096 | 128..=65536 | the chunk size the server sends with |
//! | `max_message_bytes` | 4194304 | 65536..=16777215 | longest message (a video frame) accepted from an encoder |
//! | `handshake_timeout_ms` | 10000 | 100..=600000 | the handshake and an accepted `publish` must be done this long after the connection opened |

#![forbid(unsafe_code)]

use ferrocast_plugin_api::{
    parse_settings, Plugin, PluginKind, PluginMeta, Session, SessionInfo, SettingError,
};
use ferrocast_plugin_kit::settings::{millis_of, SettingChecks};
use serde::Deserialize;

pub mod proto;
pub mod remux;
pub mod session;

#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;

pub use session::{Config, RtmpSession};

/// The settings as written in the configuration, before range checks.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Settings {
    app: String,
    chunk_size: u64,
    max_message_bytes: u64,
    handshake_timeout_ms: u64,
}

impl Default for Settings {
    fn default() -> Self {
        let config = Config::default();
        Self {
            app: config.app,
            chunk_size: u64::from(config.chunk_size),
            max_message_bytes: config.max_message_bytes as u64,
            handshake_timeout_ms: millis_of(config.handshake_timeout),
        }
    }
}

impl Settings {
    fn validate(self) -> Result<Config, Vec<SettingError>> {
        let mut checks = SettingChecks::new();
        let chunk_size = checks.in_range("chunk_size", self.chunk_size, 128..=65_536, "bytes");
        let config = Config {
            app: self.app,
            chunk_size: u32::try_from(chunk_size).unwrap_or(u32::MAX),
            max_message_bytes: checks.bytes(
                "max_message_bytes",
                self.max_message_bytes,
                65_536..=16_777_215,
            ),
            handshake_timeout: checks.millis(
                "handshake_timeout_ms",
                self.handshake_timeout_ms,
                100..=600_000,
            ),
        };
        let bad_app = config.app.is_empty()
            || config
                .app
                .contains(|c: char| c == '/' || c == '?' || c.is_whitespace() || c.is_control());
        let mut errors = checks.finish(()).err().unwrap_or_default();
        if bad_app {
            errors.push(SettingError::new(
                "app",
                format!(
                    "{:?} is not an application name; use a non-empty name without `/`, `?` or spaces, such as \"live\"",
                    config.app
                ),
            ));
        }
        if errors.is_empty() {
            Ok(config)
        } else {
            Err(errors)
        }
    }
}

/// The RTMP plugin: validated settings, and a factory of [`RtmpSession`]s.
#[derive(Debug)]
pub struct RtmpPlugin {
    config: Config,
}

impl RtmpPlugin {
    pub fn config(&self) -> &Config {
        &self.config
    }
}

impl Plugin for RtmpPlugin {
    fn meta() -> PluginMeta {
        PluginMeta {
            name: "rtmp",
            version: env!("CARGO_PKG_VERSION"),
            description: "RTMP ingest: OBS, ffmpeg and hardware encoders publish H.264/AAC, remuxed to MPEG-TS",
            kind: PluginKind::CONTROL,
        }
    }

    fn create(settings: &str) -> Result<Self, Vec<SettingError>> {
        let settings: Settings = parse_settings(settings)?;
        Ok(Self {
            config: settings.validate()?,
        })
    }

    fn new_session(&self, _info: &SessionInfo) -> Box<dyn Session> {
        Box::new(RtmpSession::new(self.config.clone()))
    }
}

ferrocast_plugin_api::export_plugin!(RtmpPlugin);

#[cfg(test)]
mod tests {
    use super::*;
    use ferrocast_plugin_kit::testing::setting_errors;
    use std::time::Duration;

    #[test]
    fn metadata_and_defaults() {
        assert_eq!(RtmpPlugin::meta().name, "rtmp");
        assert_eq!(RtmpPlugin::create("").unwrap().config(), &Config::default());
        let plugin = RtmpPlugin::create(
            "app = \"ingest\"\nchunk_size = 128\nmax_message_bytes = 65536\nhandshake_timeout_ms = 500\n",
        )
        .unwrap();
        let config = plugin.config();
        assert_eq!(config.app, "ingest");
        assert_eq!(config.chunk_size, 128);
        assert_eq!(config.max_message_bytes, 65_536);
        assert_eq!(config.handshake_timeout, Duration::from_millis(500));
    }

    #[test]
    fn bad_values_name_their_keys_all_at_once() {
        let found = setting_errors::<RtmpPlugin>(
            "app = \"a/b\"\nchunk_size = 0\nmax_message_bytes = 16777216\nhandshake_timeout_ms = 99\n",
        );
        let keys: Vec<&str> = found.iter().map(|(key, _)| key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "chunk_size",
                "max_message_bytes",
                "handshake_timeout_ms",
                "app"
            ]
        );
        assert_eq!(setting_errors::<RtmpPlugin>("app = \"\"\n")[0].0, "app");
        assert_eq!(
            setting_errors::<RtmpPlugin>("publish_key = 1\n")[0].0,
            "publish_key"
        );
    }
}

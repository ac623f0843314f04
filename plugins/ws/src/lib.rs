//! # ferrocast WebSocket control plugin
//!
//! Serves a point as MPEG-TS over WebSocket (RFC 6455), as browser players such as mpegts.js
//! read it: `ws://host:PORT/<point>` (or `/<point>/<file>` for an on-demand file). After the
//! HTTP/1.1 upgrade handshake, every chunk of the point's TS goes out as one binary frame;
//! pings are answered with pongs, and the stream's end, the client's close and any protocol
//! violation end the connection with a close frame carrying the RFC's status code (1002 for
//! an unmasked, malformed or unknown frame, 1009 for one over `max_frame_bytes`). A query
//! string on the URL is presented to the server as credentials.
//!
//! The plugin frames media itself: it asks the host for the point's media with
//! `play_framed` and wraps each chunk it receives in `on_media`. [`proto`] is the protocol
//! core without any host (handshake, frame codec); [`session`] turns it into host actions.
//!
//! ## Settings (`[plugins.ws]`)
//!
//! | key | default | range | meaning |
//! |---|---|---|---|
//! | `handshake_timeout_ms` | 10000 | 100..=600000 | the upgrade request must be complete this long after the connection opened; else `408` |
//! | `max_header_bytes` | 16384 | 1024..=1048576 | a larger upgrade request is refused with `431` |
//! | `max_frame_bytes` | 65536 | 125..=16777216 | a client frame with a longer payload is closed with 1009 |

#![forbid(unsafe_code)]

use std::time::Duration;

use ferrocast_plugin_api::settings::millis;
use ferrocast_plugin_api::{
    parse_settings, Plugin, PluginKind, PluginMeta, Session, SessionInfo, SettingChecks,
    SettingError,
};
use serde::Deserialize;

pub mod proto;
pub mod session;

pub use session::{Config, WsSession};

/// The settings as written in the configuration, before range checks.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Settings {
    #[serde(rename = "handshake_timeout_ms", with = "millis")]
    handshake_timeout: Duration,
    max_header_bytes: u64,
    max_frame_bytes: u64,
}

impl Default for Settings {
    fn default() -> Self {
        let config = Config::default();
        Self {
            handshake_timeout: config.handshake_timeout,
            max_header_bytes: config.max_header_bytes as u64,
            max_frame_bytes: config.max_frame_bytes as u64,
        }
    }
}

impl Settings {
    fn validate(&self) -> Result<Config, Vec<SettingError>> {
        let mut checks = SettingChecks::new();
        let config = Config {
            handshake_timeout: checks.duration(
                "handshake_timeout_ms",
                self.handshake_timeout,
                Duration::from_millis(100)..=Duration::from_secs(600),
            ),
            max_header_bytes: checks.bytes(
                "max_header_bytes",
                self.max_header_bytes,
                1024..=1_048_576,
            ),
            max_frame_bytes: checks.bytes(
                "max_frame_bytes",
                self.max_frame_bytes,
                125..=16_777_216,
            ),
        };
        checks.finish(config)
    }
}

/// The WebSocket plugin: validated settings, and a factory of [`WsSession`]s.
#[derive(Debug)]
pub struct WsPlugin {
    config: Config,
}

impl WsPlugin {
    pub fn config(&self) -> Config {
        self.config
    }
}

impl Plugin for WsPlugin {
    fn meta() -> PluginMeta {
        PluginMeta {
            name: "ws",
            version: env!("CARGO_PKG_VERSION"),
            description:
                "WebSocket: live and on-demand MPEG-TS in binary frames, for browser players",
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
        Box::new(WsSession::new(self.config))
    }
}

ferrocast_plugin_api::export_plugin!(WsPlugin);

#[cfg(test)]
mod tests {
    use super::*;
    use ferrocast_plugin_kit::testing::setting_errors;

    #[test]
    fn metadata_and_defaults() {
        assert_eq!(WsPlugin::meta().name, "ws");
        assert_eq!(WsPlugin::create("").unwrap().config(), Config::default());
        let plugin =
            WsPlugin::create("handshake_timeout_ms = 500\nmax_frame_bytes = 125\n").unwrap();
        assert_eq!(
            plugin.config().handshake_timeout,
            Duration::from_millis(500)
        );
        assert_eq!(plugin.config().max_frame_bytes, 125);
    }

    #[test]
    fn out_of_range_values_name_their_keys_all_at_once() {
        let found = setting_errors::<WsPlugin>(
            "handshake_timeout_ms = 99\nmax_header_bytes = 1\nmax_frame_bytes = 124\n",
        );
        let keys: Vec<&str> = found.iter().map(|(key, _)| key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "handshake_timeout_ms",
                "max_header_bytes",
                "max_frame_bytes"
            ]
        );
        let unknown = setting_errors::<WsPlugin>("ping = 1\n");
        assert_eq!(unknown[0].0, "ping");
    }
}

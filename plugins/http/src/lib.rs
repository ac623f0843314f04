//! # ferrocast HTTP control plugin
//!
//! HTTP/1.1 for players and encoders, as a sans-IO plugin of the ferrocast server:
//!
//! - `GET`/`HEAD /<point>` on a broadcast point: the live MPEG-TS stream, as a body delimited by
//!   closing the connection (works for HTTP/1.0 and 1.1 players alike).
//! - `GET`/`HEAD /<point>` or `/<point>/<file>` on an on-demand point: the file, with
//!   `Range` support (`206`/`416`) and keep-alive, pipelining included.
//! - `PUT`/`POST /<point>` on a broadcast point: an encoder publishing MPEG-TS, with a chunked,
//!   `Content-Length` or close-delimited body (`ffmpeg -f mpegts -method PUT http://…/live`).
//!   Icecast sources too: `100 Continue` whenever the client waits for it, the legacy `SOURCE`
//!   method (answered `HTTP/1.0 200 OK` at once, as Icecast does), Basic credentials for the
//!   publish check, and the `Ice-Name`/`Ice-Description` (or `icy-*`) of the stream kept in
//!   the point's status (`ffmpeg … icecast://source:pw@host:port/live`).
//! - `OPTIONS`: the allowed methods.
//!
//! The code is split into [`proto`], a protocol core that knows nothing about the host (request
//! heads, ranges, the chunked coding, response heads), and [`session`], the per-connection state
//! machine that turns requests into host actions. This file holds the plugin entry points and
//! its settings.
//!
//! ## Settings (`[plugins.http]`)
//!
//! | key | default | range | meaning |
//! |---|---|---|---|
//! | `header_timeout_ms` | 10000 | 100..=600000 | a request head must be complete this long after the connection's first bytes or the previous response; else `408` |
//! | `max_header_bytes` | 16384 | 1024..=1048576 | a larger request head is refused with `431` |
//! | `keepalive_requests` | 100 | 1..=100000 | requests on one connection before it is closed |

#![forbid(unsafe_code)]

use std::time::Duration;

use ferrocast_plugin_api::settings::millis;
use ferrocast_plugin_api::{
    parse_settings, Plugin, PluginKind, PluginMeta, Session, SessionInfo, SettingChecks,
    SettingError,
};
use serde::Deserialize;

#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
pub mod proto;
pub mod rtsp_tunnel;
pub mod session;

pub use session::{Config, HttpSession};

/// The settings as written in the configuration, before range checks.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Settings {
    #[serde(rename = "header_timeout_ms", with = "millis")]
    header_timeout: Duration,
    max_header_bytes: u64,
    keepalive_requests: u64,
}

impl Default for Settings {
    fn default() -> Self {
        let config = Config::default();
        Self {
            header_timeout: config.header_timeout,
            max_header_bytes: config.max_header_bytes as u64,
            keepalive_requests: u64::from(config.keepalive_requests),
        }
    }
}

impl Settings {
    fn validate(&self) -> Result<Config, Vec<SettingError>> {
        let mut checks = SettingChecks::new();
        let config = Config {
            header_timeout: checks.duration(
                "header_timeout_ms",
                self.header_timeout,
                Duration::from_millis(100)..=Duration::from_secs(600),
            ),
            max_header_bytes: checks.bytes(
                "max_header_bytes",
                self.max_header_bytes,
                1024..=1_048_576,
            ),
            // The range makes the conversion lossless.
            keepalive_requests: checks.in_range(
                "keepalive_requests",
                self.keepalive_requests,
                1..=100_000,
                "requests",
            ) as u32,
        };
        checks.finish(config)
    }
}

/// The HTTP plugin: validated settings, and a factory of [`HttpSession`]s.
#[derive(Debug)]
pub struct HttpPlugin {
    config: Config,
}

impl HttpPlugin {
    pub fn config(&self) -> Config {
        self.config
    }
}

impl Plugin for HttpPlugin {
    fn meta() -> PluginMeta {
        PluginMeta {
            name: "http",
            version: env!("CARGO_PKG_VERSION"),
            description:
                "HTTP/1.1: live and on-demand MPEG-TS for players, PUT/POST push for encoders",
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
        Box::new(HttpSession::new(self.config))
    }
}

ferrocast_plugin_api::export_plugin!(HttpPlugin);

#[cfg(test)]
mod tests {
    use super::*;
    use ferrocast_plugin_kit::testing::setting_errors;

    fn errors(settings: &str) -> Vec<(String, String)> {
        setting_errors::<HttpPlugin>(settings)
    }

    #[test]
    fn metadata() {
        let meta = HttpPlugin::meta();
        assert_eq!(meta.name, "http");
        assert_eq!(meta.version, env!("CARGO_PKG_VERSION"));
        assert_eq!(meta.kind, PluginKind::CONTROL);
    }

    #[test]
    fn defaults_when_no_settings() {
        let plugin = HttpPlugin::create("").unwrap();
        assert_eq!(
            plugin.config(),
            Config {
                header_timeout: Duration::from_secs(10),
                max_header_bytes: 16384,
                keepalive_requests: 100,
            }
        );
    }

    #[test]
    fn explicit_settings() {
        let plugin = HttpPlugin::create(
            "header_timeout_ms = 100\nmax_header_bytes = 1048576\nkeepalive_requests = 1\n",
        )
        .unwrap();
        assert_eq!(
            plugin.config(),
            Config {
                header_timeout: Duration::from_millis(100),
                max_header_bytes: 1_048_576,
                keepalive_requests: 1,
            }
        );
    }

    #[test]
    fn out_of_range_values_name_their_keys_all_at_once() {
        let found =
            errors("header_timeout_ms = 99\nmax_header_bytes = 1048577\nkeepalive_requests = 0\n");
        let keys: Vec<&str> = found.iter().map(|(key, _)| key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "header_timeout_ms",
                "max_header_bytes",
                "keepalive_requests"
            ]
        );
        assert_eq!(
            found[0].1,
            "99 is out of range; use 100 to 600000 milliseconds"
        );
        assert!(
            found[2].1.contains("use 1 to 100000 requests"),
            "{}",
            found[2].1
        );
    }

    #[test]
    fn unknown_keys_and_wrong_types_name_the_key() {
        let found = errors("header_timeout = 5000\n");
        assert_eq!(found[0].0, "header_timeout");
        assert!(found[0].1.contains("unknown field"), "{}", found[0].1);

        let found = errors("max_header_bytes = \"16k\"\n");
        assert_eq!(found[0].0, "max_header_bytes");

        let found = errors("keepalive_requests = -1\n");
        assert_eq!(found[0].0, "keepalive_requests");
    }

    #[test]
    fn sessions_use_the_settings() {
        use ferrocast_plugin_api::testing::MockHost;
        let plugin = HttpPlugin::create("header_timeout_ms = 2500\n").unwrap();
        let info = SessionInfo::new(
            7,
            "127.0.0.1:1".parse().unwrap(),
            "127.0.0.1:8080".parse().unwrap(),
        );
        let mut session = plugin.new_session(&info);
        let mut mock = MockHost::new();
        mock.run(|host| session.on_data(host, b"GET /li"));
        assert_eq!(
            mock.timer(session::HEADER_TIMER),
            Some(Duration::from_millis(2500))
        );
    }
}

//! # ferrocast RTSP control plugin
//!
//! RTSP/1.0 (RFC 2326) for players, as a sans-IO plugin of the ferrocast server. Its tests
//! replay exchanges captured from ffmpeg/ffprobe 5.1 and GStreamer 1.22 (see
//! `tests/fixtures/README.md`). Every publishing point is offered as one RTP/MP2T track
//! (RFC 2250: the whole MPEG-TS, payload type 33), carried by a transport plugin: RTP over
//! unicast UDP (`udp`) or interleaved on the RTSP connection (`tcp`).
//!
//! - `OPTIONS`, `DESCRIBE` (SDP with `a=control:trackID=0`), `SETUP` (`Transport` lists tried
//!   in the client's order; `461` when the host refuses a transport, which makes players roll
//!   over from UDP to TCP), `PLAY` (with `Range: npt=` seeks on on-demand points), `PAUSE`
//!   (on-demand points), `TEARDOWN`, `GET_PARAMETER`/`SET_PARAMETER` (keep-alives).
//! - Interleaved `$` frames from the client (RTCP receiver reports) are skipped, and count as
//!   keep-alives on the session's RTCP channel.
//! - Sessions time out without requests or RTCP; the host reports RTCP over UDP through
//!   `on_transport_activity`.
//! - RTSP tunnelled over HTTP (the QuickTime scheme): a connection that opens with a `GET`
//!   carrying `x-sessioncookie` and `Accept: application/x-rtsp-tunnelled` opens the tunnel
//!   with the host and then serves RTSP on it, the requests arriving through the host from
//!   the `POST` half, whose session decodes their base64 (see [`proto::tunnel`]). The http
//!   plugin hands such connections over, so the same works on its port.
//!
//! The code is split into [`proto`], a protocol core that knows nothing about the host
//! (request parsing, URLs, `Transport`, `Range`, SDP, responses), and [`session`], the
//! per-connection state machine that turns requests into host actions. This file holds the
//! plugin entry points and its settings.
//!
//! ## Settings (`[plugins.rtsp]`)
//!
//! | key | default | range | meaning |
//! |---|---|---|---|
//! | `session_timeout_ms` | 60000 | 1000..=3600000 | a session without a request or RTCP for this long is torn down and its connection closed (announced to clients as `Session: …;timeout=<seconds>`); a connection without a session is closed after this much idleness |
//! | `header_timeout_ms` | 10000 | 100..=600000 | a request must be complete this long after its first byte, or `408` and close |
//! | `max_request_bytes` | 16384 | 1024..=1048576 | a larger request head (`400`) or body (`413`) is refused and the connection closed |

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
pub mod session;

pub use session::{Config, RtspSession};

/// The settings as written in the configuration, before range checks.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Settings {
    #[serde(rename = "session_timeout_ms", with = "millis")]
    session_timeout: Duration,
    #[serde(rename = "header_timeout_ms", with = "millis")]
    header_timeout: Duration,
    max_request_bytes: u64,
}

impl Default for Settings {
    fn default() -> Self {
        let config = Config::default();
        Self {
            session_timeout: config.session_timeout,
            header_timeout: config.header_timeout,
            max_request_bytes: config.max_request_bytes as u64,
        }
    }
}

impl Settings {
    fn validate(&self) -> Result<Config, Vec<SettingError>> {
        let mut checks = SettingChecks::new();
        let config = Config {
            session_timeout: checks.duration(
                "session_timeout_ms",
                self.session_timeout,
                Duration::from_secs(1)..=Duration::from_secs(3600),
            ),
            header_timeout: checks.duration(
                "header_timeout_ms",
                self.header_timeout,
                Duration::from_millis(100)..=Duration::from_secs(600),
            ),
            max_request_bytes: checks.bytes(
                "max_request_bytes",
                self.max_request_bytes,
                1024..=1_048_576,
            ),
        };
        checks.finish(config)
    }
}

/// The RTSP plugin: validated settings, and a factory of [`RtspSession`]s.
#[derive(Debug)]
pub struct RtspPlugin {
    config: Config,
}

impl RtspPlugin {
    pub fn config(&self) -> Config {
        self.config
    }
}

impl Plugin for RtspPlugin {
    fn meta() -> PluginMeta {
        PluginMeta {
            name: "rtsp",
            version: env!("CARGO_PKG_VERSION"),
            description: "RTSP/1.0: RTP/MP2T to players over UDP or interleaved TCP, with pause and seek on on-demand points",
            kind: PluginKind::CONTROL,
        }
    }

    fn create(settings: &str) -> Result<Self, Vec<SettingError>> {
        let settings: Settings = parse_settings(settings)?;
        Ok(Self {
            config: settings.validate()?,
        })
    }

    fn new_session(&self, info: &SessionInfo) -> Box<dyn Session> {
        Box::new(RtspSession::new(self.config, info.clone()))
    }
}

ferrocast_plugin_api::export_plugin!(RtspPlugin);

#[cfg(test)]
mod tests {
    use super::*;
    use ferrocast_plugin_api::testing::MockHost;
    use ferrocast_plugin_kit::testing::setting_errors;

    fn errors(settings: &str) -> Vec<(String, String)> {
        setting_errors::<RtspPlugin>(settings)
    }

    #[test]
    fn metadata() {
        let meta = RtspPlugin::meta();
        assert_eq!(meta.name, "rtsp");
        assert_eq!(meta.version, env!("CARGO_PKG_VERSION"));
        assert_eq!(meta.kind, PluginKind::CONTROL);
    }

    #[test]
    fn defaults_when_no_settings() {
        let plugin = RtspPlugin::create("").unwrap();
        assert_eq!(
            plugin.config(),
            Config {
                session_timeout: Duration::from_secs(60),
                header_timeout: Duration::from_secs(10),
                max_request_bytes: 16384,
            }
        );
    }

    #[test]
    fn explicit_settings_at_the_bounds() {
        let plugin = RtspPlugin::create(
            "session_timeout_ms = 1000\nheader_timeout_ms = 600000\nmax_request_bytes = 1024\n",
        )
        .unwrap();
        assert_eq!(
            plugin.config(),
            Config {
                session_timeout: Duration::from_millis(1000),
                header_timeout: Duration::from_millis(600_000),
                max_request_bytes: 1024,
            }
        );
        let plugin = RtspPlugin::create(
            "session_timeout_ms = 3600000\nheader_timeout_ms = 100\nmax_request_bytes = 1048576\n",
        )
        .unwrap();
        assert_eq!(plugin.config().session_timeout, Duration::from_secs(3600));
    }

    #[test]
    fn out_of_range_values_name_their_keys_all_at_once() {
        let found = errors(
            "session_timeout_ms = 999\nheader_timeout_ms = 600001\nmax_request_bytes = 1023\n",
        );
        let keys: Vec<&str> = found.iter().map(|(key, _)| key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "session_timeout_ms",
                "header_timeout_ms",
                "max_request_bytes"
            ]
        );
        assert_eq!(
            found[0].1,
            "999 is out of range; use 1000 to 3600000 milliseconds"
        );
        assert!(
            found[2].1.contains("use 1024 to 1048576 bytes"),
            "{}",
            found[2].1
        );
        let found = errors("session_timeout_ms = 3600001\n");
        assert_eq!(found[0].0, "session_timeout_ms");
    }

    #[test]
    fn unknown_keys_and_wrong_types_name_the_key() {
        let found = errors("session_timeout = 5000\n");
        assert_eq!(found[0].0, "session_timeout");
        assert!(found[0].1.contains("unknown field"), "{}", found[0].1);
        let found = errors("max_request_bytes = \"16k\"\n");
        assert_eq!(found[0].0, "max_request_bytes");
        let found = errors("header_timeout_ms = -1\n");
        assert_eq!(found[0].0, "header_timeout_ms");
    }

    #[test]
    fn sessions_use_the_settings() {
        let plugin =
            RtspPlugin::create("session_timeout_ms = 30000\nheader_timeout_ms = 2500\n").unwrap();
        let info = SessionInfo::new(
            7,
            "127.0.0.1:1".parse().unwrap(),
            "127.0.0.1:8554".parse().unwrap(),
        );
        let mut session = plugin.new_session(&info);
        let mut mock = MockHost::new();
        mock.run(|host| session.on_open(host));
        assert_eq!(
            mock.timer(session::SESSION_TIMER),
            Some(Duration::from_secs(30))
        );
        mock.run(|host| session.on_data(host, b"OPTIONS * RT"));
        assert_eq!(
            mock.timer(session::HEADER_TIMER),
            Some(Duration::from_millis(2500))
        );
        mock.run(|host| session.on_data(host, b"SP/1.0\r\nCSeq: 1\r\n\r\n"));
        assert_eq!(mock.timer(session::HEADER_TIMER), None);
        let written = mock.take_written();
        assert!(
            written.starts_with("RTSP/1.0 200 OK\r\nCSeq: 1\r\n"),
            "{written}"
        );
    }
}

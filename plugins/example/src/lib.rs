//! # Example plugin: `example`
//!
//! A complete, deliberately small ferrocast plugin for plugin authors to copy. It speaks a
//! line protocol on a TCP port:
//!
//! ```text
//! INFO <point>    →  "OK <kind> size=<bytes> live=<true|false>"
//! PLAY <point>    →  "OK playing\n" followed by the raw MPEG-TS of the point,
//!                     or "ERR <reason>\n" and the connection closed
//! QUIT            →  closes the connection
//! ```
//!
//! Try it with `printf 'PLAY live\n' | nc 127.0.0.1 8090 | tail -c +12 | ffplay -`.
//!
//! It shows the whole plugin contract: metadata, settings that the plugin validates itself,
//! a sans-IO session that reacts to events and asks the [`Host`] for everything (writes,
//! timers, point lookups, playback), and [`export_plugin!`]. Settings are read into a
//! `Duration` with [`millis`] and range-checked with [`SettingChecks`]. See
//! `docs/plugin-guide.md`.

#![forbid(unsafe_code)]

use std::time::Duration;

use ferrocast_plugin_api::settings::millis;
use ferrocast_plugin_api::{
    export_plugin, parse_settings, ByteRange, Host, LogLevel, Plugin, PluginKind, PluginMeta,
    PointKind, Session, SessionInfo, SettingChecks, SettingError, StreamEnded, TimerId,
};
use serde::Deserialize;

/// `[plugins.example]` settings besides the host's `enabled` and `listen`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    /// Close a connection that has not sent a complete command for this long.
    #[serde(
        rename = "idle_timeout_ms",
        with = "millis",
        default = "default_idle_timeout"
    )]
    idle_timeout: Duration,
}

fn default_idle_timeout() -> Duration {
    Duration::from_secs(30)
}

/// Longest command line accepted; anything longer is a protocol error.
const MAX_LINE: usize = 256;
/// The only timer this plugin uses.
const IDLE_TIMER: TimerId = TimerId::new(1);

pub struct ExamplePlugin {
    idle_timeout: Duration,
}

impl Plugin for ExamplePlugin {
    fn meta() -> PluginMeta {
        PluginMeta {
            name: "example",
            version: env!("CARGO_PKG_VERSION"),
            description: "line protocol example: INFO/PLAY a point as raw MPEG-TS",
            kind: PluginKind::CONTROL,
        }
    }

    fn create(settings: &str) -> Result<Self, Vec<SettingError>> {
        let settings: Settings = parse_settings(settings)?;
        // Each check records an error naming the key; `finish` reports them all at once.
        let mut checks = SettingChecks::new();
        let idle_timeout = checks.duration(
            "idle_timeout_ms",
            settings.idle_timeout,
            Duration::from_millis(100)..=Duration::from_secs(3600),
        );
        checks.finish(Self { idle_timeout })
    }

    fn new_session(&self, _info: &SessionInfo) -> Box<dyn Session> {
        Box::new(LineSession {
            idle_timeout: self.idle_timeout,
            line: Vec::new(),
            playing: false,
        })
    }
}

struct LineSession {
    idle_timeout: Duration,
    line: Vec<u8>,
    playing: bool,
}

impl LineSession {
    fn command(&mut self, host: &mut Host<'_>, line: &str) {
        let (verb, argument) = line.split_once(' ').unwrap_or((line, ""));
        match (verb.to_ascii_uppercase().as_str(), argument.trim()) {
            ("QUIT", _) => host.close(),
            ("INFO", point) if !point.is_empty() => match host.lookup(point) {
                Ok(info) => {
                    let kind = if info.kind == PointKind::BROADCAST {
                        "broadcast"
                    } else {
                        "on-demand"
                    };
                    host.write(
                        format!("OK {kind} size={} live={}\n", info.size, info.live).as_bytes(),
                    );
                }
                Err(error) => host.write(format!("ERR {}\n", error.message).as_bytes()),
            },
            ("PLAY", point) if !point.is_empty() => {
                // Play first: the media follows everything written during this event, so the
                // success line written after an accepted `play` still reaches the client
                // before the first media byte, and a refusal is answered with nothing else.
                match host.play(point, ByteRange::ALL) {
                    Ok(_) => {
                        host.write(b"OK playing\n");
                        self.playing = true;
                        host.cancel_timer(IDLE_TIMER);
                        host.log(LogLevel::INFO, &format!("PLAY {point}"));
                    }
                    Err(error) => {
                        host.write(format!("ERR {}\n", error.message).as_bytes());
                        host.close();
                    }
                }
            }
            _ => host.write(b"ERR expected INFO <point>, PLAY <point> or QUIT\n"),
        }
    }
}

impl Session for LineSession {
    fn on_data(&mut self, host: &mut Host<'_>, data: &[u8]) {
        if self.playing {
            return; // commands are not accepted while media flows
        }
        self.line.extend_from_slice(data);
        while let Some(end) = self.line.iter().position(|&b| b == b'\n') {
            let raw: Vec<u8> = self.line.drain(..=end).collect();
            let text = String::from_utf8_lossy(&raw);
            self.command(host, text.trim());
            if self.playing {
                return;
            }
        }
        if self.line.len() > MAX_LINE {
            host.write(b"ERR line too long\n");
            host.close();
            return;
        }
        host.set_timer(IDLE_TIMER, self.idle_timeout);
    }

    fn on_timer_fired(&mut self, host: &mut Host<'_>, timer: TimerId) {
        if timer == IDLE_TIMER && !self.playing {
            host.write(b"ERR idle timeout\n");
            host.close();
        }
    }

    fn on_stream_ended(&mut self, host: &mut Host<'_>, _ended: &StreamEnded) {
        host.close();
    }
}

export_plugin!(ExamplePlugin);

#[cfg(test)]
mod tests {
    use super::*;
    use ferrocast_plugin_api::testing::MockHost;
    use ferrocast_plugin_api::{ErrorCode, HostError};

    fn session() -> Box<dyn Session> {
        ExamplePlugin::create("")
            .unwrap()
            .new_session(&SessionInfo::new(
                1,
                "127.0.0.1:1".parse().unwrap(),
                "127.0.0.1:2".parse().unwrap(),
            ))
    }

    #[test]
    fn play_asks_the_host_to_stream_the_point() {
        let mut mock = MockHost::new();
        mock.add_point("live", PointKind::BROADCAST, 0);
        let mut session = session();
        mock.run(|host| session.on_data(host, b"PLA"));
        assert!(mock.plays.is_empty());
        mock.run(|host| session.on_data(host, b"Y live\n"));
        assert_eq!(mock.plays, vec![("live".to_owned(), ByteRange::ALL)]);
        assert_eq!(mock.take_written(), "OK playing\n");
    }

    #[test]
    fn a_refused_play_is_answered_with_the_refusal_only() {
        let mut mock = MockHost::new();
        mock.add_point("live", PointKind::BROADCAST, 0);
        mock.play_refusals.insert(
            "live".to_owned(),
            HostError::new(ErrorCode::UNAVAILABLE, "point `live` has no encoder"),
        );
        let mut session = session();
        mock.run(|host| session.on_data(host, b"PLAY live\n"));
        assert!(mock.plays.is_empty());
        assert_eq!(mock.take_written(), "ERR point `live` has no encoder\n");
        assert!(mock.closed);
    }

    #[test]
    fn unknown_point_is_reported_and_closed() {
        let mut mock = MockHost::new();
        mock.refuse(
            "nope",
            ErrorCode::NOT_FOUND,
            "no publishing point named `nope`",
        );
        let mut session = session();
        mock.run(|host| session.on_data(host, b"PLAY nope\n"));
        assert_eq!(
            mock.take_written(),
            "ERR no publishing point named `nope`\n"
        );
        assert!(mock.closed);
    }

    #[test]
    fn idle_timer_closes_a_silent_connection() {
        let mut mock = MockHost::new();
        let mut session = session();
        mock.run(|host| session.on_data(host, b"INF"));
        assert_eq!(mock.timer(IDLE_TIMER), Some(Duration::from_secs(30)));
        mock.fire(&mut *session, IDLE_TIMER);
        assert!(mock.closed);
    }

    #[test]
    fn settings_are_validated_by_the_plugin() {
        let errors = ExamplePlugin::create("idle_timeout_ms = 1").err().unwrap();
        assert_eq!(errors[0].key.as_str(), "idle_timeout_ms");
        let errors = ExamplePlugin::create("idle = 5").err().unwrap();
        assert_eq!(errors[0].key.as_str(), "idle");
    }
}

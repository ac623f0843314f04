//! # TCP transport plugin: `tcp`
//!
//! Carries media over TCP in two ways:
//! - **Raw MPEG-TS on a port of its own.** Each listen port serves one publishing point: a
//!   client connects and receives the point's transport stream at once, with nothing to send
//!   (`ffplay tcp://host:9000`). A live point starts at its latest keyframe with PAT/PMT first.
//! - **RTP interleaved on RTSP connections** (`RTP/AVP/TCP;interleaved=`). The RTSP plugin asks
//!   the host for the transport; the host asks this plugin to accept it, and the point must list
//!   `tcp` in its protocols.
//!
//! Settings (`[plugins.tcp]`, besides `enabled` and `listen`):
//!
//! | key | meaning |
//! |---|---|
//! | `serve` | table from listen port to point, e.g. `serve = { "9000" = "live" }` |

#![forbid(unsafe_code)]

use std::collections::BTreeMap;

use ferrocast_plugin_api::{
    export_plugin, parse_settings, ByteRange, ErrorCode, Host, HostError, LogLevel, Plugin,
    PluginKind, PluginMeta, Session, SessionInfo, SettingChecks, SettingError, StreamEnded,
    TransportKind, TransportRequest,
};
use serde::Deserialize;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Settings {
    /// Listen port → publishing point.
    #[serde(default)]
    serve: BTreeMap<String, String>,
}

pub struct TcpPlugin {
    points_by_port: BTreeMap<u16, String>,
}

impl Plugin for TcpPlugin {
    fn meta() -> PluginMeta {
        PluginMeta {
            name: "tcp",
            version: env!("CARGO_PKG_VERSION"),
            description: "raw MPEG-TS over TCP ports; RTP interleaved on RTSP connections",
            kind: PluginKind::TRANSPORT,
        }
    }

    fn create(settings: &str) -> Result<Self, Vec<SettingError>> {
        let settings: Settings = parse_settings(settings)?;
        let mut checks = SettingChecks::new();
        let mut points_by_port = BTreeMap::new();
        for (port, point) in settings.serve {
            match port.parse::<u16>() {
                Ok(number) if number > 0 => {
                    points_by_port.insert(number, point);
                }
                _ => checks.error(
                    "serve",
                    format!(
                        "`{port}` is not a port number; write serve = {{ \"9000\" = \"live\" }}"
                    ),
                ),
            }
        }
        checks.finish(Self { points_by_port })
    }

    fn new_session(&self, info: &SessionInfo) -> Box<dyn Session> {
        let port = info.local_addr().map(|local| local.port());
        Box::new(RawTsSession {
            point: port.and_then(|port| self.points_by_port.get(&port).cloned()),
            local: info.local.to_string(),
        })
    }

    fn validate_transport(&self, request: &TransportRequest, _peer: &str) -> Result<(), HostError> {
        if request.kind != TransportKind::TCP_INTERLEAVED {
            return Err(HostError::new(
                ErrorCode::UNSUPPORTED_TRANSPORT,
                format!("the tcp plugin does not carry {}", request.kind.as_str()),
            ));
        }
        if request.rtp_channel == request.rtcp_channel {
            return Err(HostError::new(
                ErrorCode::UNSUPPORTED_TRANSPORT,
                "RTP and RTCP need two different interleaved channels",
            ));
        }
        Ok(())
    }
}

/// A raw MPEG-TS client: plays its port's point on connect and ignores anything it sends.
struct RawTsSession {
    point: Option<String>,
    local: String,
}

impl Session for RawTsSession {
    fn on_open(&mut self, host: &mut Host<'_>) {
        let Some(point) = self.point.clone() else {
            host.log(
                LogLevel::WARN,
                &format!(
                    "no point is served on {}; add its port to [plugins.tcp] serve",
                    self.local
                ),
            );
            return host.close();
        };
        match host.play(&point, ByteRange::ALL) {
            Ok(_) => host.log(LogLevel::INFO, &format!("raw TS of `{point}` -> playing")),
            Err(error) => {
                host.log(
                    LogLevel::WARN,
                    &format!("raw TS of `{point}` refused: {error}"),
                );
                host.close();
            }
        }
    }

    fn on_data(&mut self, _host: &mut Host<'_>, _data: &[u8]) {
        // A raw TS client has nothing to say; whatever it sends is ignored.
    }

    fn on_stream_ended(&mut self, host: &mut Host<'_>, _ended: &StreamEnded) {
        host.close();
    }

    fn on_peer_closed(&mut self, host: &mut Host<'_>) {
        host.close();
    }
}

export_plugin!(TcpPlugin);

#[cfg(test)]
mod tests {
    use super::*;
    use ferrocast_plugin_api::testing::MockHost;
    use ferrocast_plugin_api::PointKind;

    fn info(local: &str) -> SessionInfo {
        SessionInfo::new(
            7,
            "127.0.0.1:40000".parse().unwrap(),
            local.parse().unwrap(),
        )
    }

    #[test]
    fn an_ipv6_connection_plays_the_point_of_its_port() {
        let plugin = TcpPlugin::create("serve = { \"9000\" = \"live\" }").unwrap();
        let mut session = plugin.new_session(&info("[::1]:9000"));
        let mut mock = MockHost::new();
        mock.add_point("live", PointKind::BROADCAST, 0);
        mock.run(|host| session.on_open(host));
        assert_eq!(mock.plays, vec![("live".to_owned(), ByteRange::ALL)]);
    }

    #[test]
    fn a_connection_plays_the_point_of_its_port() {
        let plugin = TcpPlugin::create("serve = { \"9000\" = \"live\" }").unwrap();
        let mut session = plugin.new_session(&info("127.0.0.1:9000"));
        let mut mock = MockHost::new();
        mock.add_point("live", PointKind::BROADCAST, 0);
        mock.run(|host| session.on_open(host));
        assert_eq!(mock.plays, vec![("live".to_owned(), ByteRange::ALL)]);
        assert!(!mock.closed);
        mock.run(|host| session.on_data(host, b"ignored"));
        assert!(mock.written.is_empty());
    }

    #[test]
    fn an_unmapped_port_or_a_refusal_closes() {
        let plugin = TcpPlugin::create("serve = { \"9000\" = \"live\" }").unwrap();
        let mut mock = MockHost::new();
        let mut session = plugin.new_session(&info("[::1]:9001"));
        mock.run(|host| session.on_open(host));
        assert!(mock.closed && mock.plays.is_empty());

        let mut mock = MockHost::new();
        mock.refuse(
            "live",
            ErrorCode::PROTOCOL_DISABLED,
            "TCP is not enabled on publishing point `live`",
        );
        let mut session = plugin.new_session(&info("127.0.0.1:9000"));
        mock.run(|host| session.on_open(host));
        assert!(mock.closed);
        assert!(mock
            .logs
            .borrow()
            .iter()
            .any(|(_, m)| m.contains("TCP is not enabled")));
    }

    #[test]
    fn interleaved_transports_are_accepted_and_udp_is_not() {
        let plugin = TcpPlugin::create("").unwrap();
        let mut request = TransportRequest {
            path: "live".into(),
            kind: TransportKind::TCP_INTERLEAVED,
            client_rtp_port: 0,
            client_rtcp_port: 0,
            rtp_channel: 0,
            rtcp_channel: 1,
        };
        assert!(plugin.validate_transport(&request, "127.0.0.1:1").is_ok());
        request.rtcp_channel = 0;
        assert!(plugin.validate_transport(&request, "127.0.0.1:1").is_err());
        request.kind = TransportKind::UDP_UNICAST;
        let error = plugin
            .validate_transport(&request, "127.0.0.1:1")
            .unwrap_err();
        assert_eq!(error.code, ErrorCode::UNSUPPORTED_TRANSPORT);
    }

    #[test]
    fn bad_ports_in_settings_are_reported_by_key() {
        let errors = TcpPlugin::create("serve = { \"http\" = \"live\" }")
            .err()
            .unwrap();
        assert_eq!(errors[0].key.as_str(), "serve");
        let errors = TcpPlugin::create("srve = 1").err().unwrap();
        assert_eq!(errors[0].key.as_str(), "srve");
    }
}

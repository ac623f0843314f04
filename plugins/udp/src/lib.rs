//! # UDP transport plugin: `udp`
//!
//! Carries media in UDP datagrams, in two ways:
//! - **RTP over UDP for RTSP sessions** (`RTP/AVP;unicast;client_port=`). The RTSP plugin asks
//!   the host for the transport; the host asks this plugin to accept it (the point must list
//!   `udp` in its protocols), binds the server's RTP/RTCP ports and sends the point's shared
//!   RTP packets to the client. Client ports below 1024 are refused: they belong to system
//!   services, and sending a stream there is how a server gets abused as a reflector. The
//!   RTCP port must be the RTP port + 1.
//! - **Pushes** of broadcast points to fixed destinations, unicast or multicast, as raw
//!   MPEG-TS (7 packets per datagram, `ffplay udp://239.0.0.1:5004`) or RTP/MP2T.
//!
//! Settings (`[plugins.udp]`; the plugin listens on nothing, so `listen` stays empty):
//!
//! ```toml
//! [plugins.udp]
//! push = [
//!   { point = "live", destination = "239.255.0.1:5004", format = "ts", ttl = 1, interface = "192.0.2.10" },
//!   { point = "live", destination = "127.0.0.1:6000", format = "rtp" },
//! ]
//! ```

#![forbid(unsafe_code)]

use std::net::SocketAddr;

use ferrocast_plugin_api::{
    export_plugin, parse_settings, ErrorCode, Framing, Host, HostError, OutputSpec, Plugin,
    PluginKind, PluginMeta, Session, SessionInfo, SettingChecks, SettingError, TransportKind,
    TransportRequest,
};
use serde::Deserialize;

/// The lowest client port a stream may be sent to.
const FIRST_UNRESERVED_PORT: u16 = 1024;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Settings {
    #[serde(default)]
    push: Vec<PushSetting>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PushSetting {
    point: String,
    destination: String,
    #[serde(default = "default_format")]
    format: String,
    #[serde(default = "default_ttl")]
    ttl: u8,
    /// Local address to send from; for multicast, the interface's address.
    #[serde(default)]
    interface: String,
}

fn default_format() -> String {
    "ts".to_owned()
}

fn default_ttl() -> u8 {
    1
}

pub struct UdpPlugin {
    outputs: Vec<OutputSpec>,
}

impl Plugin for UdpPlugin {
    fn meta() -> PluginMeta {
        PluginMeta {
            name: "udp",
            version: env!("CARGO_PKG_VERSION"),
            description: "RTP over UDP for RTSP; raw TS or RTP pushes to unicast/multicast",
            kind: PluginKind::TRANSPORT,
        }
    }

    fn create(settings: &str) -> Result<Self, Vec<SettingError>> {
        let settings: Settings = parse_settings(settings)?;
        let mut checks = SettingChecks::new();
        let mut outputs = Vec::new();
        for (index, push) in settings.push.into_iter().enumerate() {
            let framing = match push.format.as_str() {
                "ts" => Framing::RAW_TS,
                "rtp" => Framing::RTP,
                other => {
                    checks.error(
                        "push",
                        format!(
                            "push #{}: format `{other}` is not \"ts\" or \"rtp\"",
                            index + 1
                        ),
                    );
                    continue;
                }
            };
            match push.destination.parse::<SocketAddr>() {
                Ok(address) if address.port() >= FIRST_UNRESERVED_PORT => {}
                Ok(_) => {
                    checks.error(
                        "push",
                        format!(
                            "push #{}: destination port must be {FIRST_UNRESERVED_PORT} or above",
                            index + 1
                        ),
                    );
                    continue;
                }
                Err(_) => {
                    checks.error(
                        "push",
                        format!(
                            "push #{}: destination `{}` is not ip:port (e.g. \"239.255.0.1:5004\")",
                            index + 1,
                            push.destination
                        ),
                    );
                    continue;
                }
            }
            if push.ttl == 0 {
                checks.error(
                    "push",
                    format!("push #{}: ttl must be 1 or more", index + 1),
                );
                continue;
            }
            if !push.interface.is_empty() && push.interface.parse::<std::net::IpAddr>().is_err() {
                checks.error(
                    "push",
                    format!(
                        "push #{}: interface `{}` is not an IP address",
                        index + 1,
                        push.interface
                    ),
                );
                continue;
            }
            outputs.push(OutputSpec {
                point: push.point.into(),
                destination: push.destination.into(),
                framing,
                ttl: push.ttl,
                interface: push.interface.into(),
            });
        }
        checks.finish(Self { outputs })
    }

    fn new_session(&self, _info: &SessionInfo) -> Box<dyn Session> {
        Box::new(NoSession)
    }

    fn validate_transport(&self, request: &TransportRequest, peer: &str) -> Result<(), HostError> {
        if request.kind != TransportKind::UDP_UNICAST {
            return Err(HostError::new(
                ErrorCode::UNSUPPORTED_TRANSPORT,
                format!("the udp plugin does not carry {}", request.kind.as_str()),
            ));
        }
        for port in [request.client_rtp_port, request.client_rtcp_port] {
            if port < FIRST_UNRESERVED_PORT {
                return Err(HostError::new(
                    ErrorCode::UNSUPPORTED_TRANSPORT,
                    format!("client port {port} of {peer} is reserved; use a port of {FIRST_UNRESERVED_PORT} or above"),
                ));
            }
        }
        // RTCP goes to the port after RTP (RFC 3550 §11): a pair like 45000-50000 would turn
        // the server's reports into traffic aimed at an arbitrary port.
        if request.client_rtp_port.checked_add(1) != Some(request.client_rtcp_port) {
            return Err(HostError::new(
                ErrorCode::UNSUPPORTED_TRANSPORT,
                format!(
                    "client ports {}-{} of {peer}: the RTCP port must be the RTP port + 1",
                    request.client_rtp_port, request.client_rtcp_port
                ),
            ));
        }
        Ok(())
    }

    fn outputs(&self) -> Vec<OutputSpec> {
        self.outputs.clone()
    }
}

/// The plugin serves no connections of its own; a connection that reaches it (a `listen`
/// address configured by mistake) is closed at once.
struct NoSession;

impl Session for NoSession {
    fn on_open(&mut self, host: &mut Host<'_>) {
        host.close();
    }

    fn on_data(&mut self, host: &mut Host<'_>, _data: &[u8]) {
        host.close();
    }
}

export_plugin!(UdpPlugin);

#[cfg(test)]
mod tests {
    use super::*;

    fn request(rtp: u16, rtcp: u16) -> TransportRequest {
        TransportRequest {
            path: "live".into(),
            kind: TransportKind::UDP_UNICAST,
            client_rtp_port: rtp,
            client_rtcp_port: rtcp,
            rtp_channel: 0,
            rtcp_channel: 0,
        }
    }

    #[test]
    fn reserved_client_ports_are_refused() {
        let plugin = UdpPlugin::create("").unwrap();
        assert!(plugin
            .validate_transport(&request(5000, 5001), "127.0.0.1:1")
            .is_ok());
        let error = plugin
            .validate_transport(&request(53, 54), "127.0.0.1:1")
            .unwrap_err();
        assert_eq!(error.code, ErrorCode::UNSUPPORTED_TRANSPORT);
        assert!(error.message.contains("reserved"));
        assert!(plugin
            .validate_transport(&request(5000, 0), "127.0.0.1:1")
            .is_err());
        for (rtp, rtcp) in [(45000, 50000), (5001, 5000), (65535, 65535), (5000, 5000)] {
            let error = plugin
                .validate_transport(&request(rtp, rtcp), "127.0.0.1:1")
                .unwrap_err();
            assert_eq!(error.code, ErrorCode::UNSUPPORTED_TRANSPORT);
            assert!(error.message.contains("RTP port + 1"), "{}", error.message);
        }
        let mut interleaved = request(5000, 5001);
        interleaved.kind = TransportKind::TCP_INTERLEAVED;
        assert!(plugin
            .validate_transport(&interleaved, "127.0.0.1:1")
            .is_err());
    }

    #[test]
    fn pushes_become_outputs() {
        let plugin = UdpPlugin::create(
            "push = [{ point = \"live\", destination = \"239.255.0.1:5004\" }, { point = \"live\", destination = \"127.0.0.1:6000\", format = \"rtp\", ttl = 4 }]",
        )
        .unwrap();
        let outputs = plugin.outputs();
        assert_eq!(outputs.len(), 2);
        assert_eq!(outputs[0].framing, Framing::RAW_TS);
        assert_eq!(outputs[0].ttl, 1);
        assert_eq!(outputs[1].framing, Framing::RTP);
        assert_eq!(outputs[1].destination.as_str(), "127.0.0.1:6000");
    }

    #[test]
    fn bad_pushes_are_reported() {
        let errors = UdpPlugin::create(
            "push = [{ point = \"a\", destination = \"nowhere\" }, { point = \"b\", destination = \"127.0.0.1:53\" }, { point = \"c\", destination = \"127.0.0.1:6000\", format = \"mp4\" }]",
        )
        .err()
        .unwrap();
        assert_eq!(errors.len(), 3);
        assert!(errors.iter().all(|e| e.key.as_str() == "push"));
        assert!(errors[0].message.contains("not ip:port"));
        assert!(errors[1].message.contains("1024"));
        assert!(errors[2].message.contains("mp4"));
    }
}

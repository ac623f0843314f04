//! A ferrocast serving RTSP beside HTTP: the `rtsp` plugin on a loopback port of its own, the
//! RTP transport plugins (`udp`, `tcp`) it hands media to, and points offered over them.

use std::net::SocketAddr;
use std::time::Duration;

use crate::{config_with, loopback, shipped_plugins_dir, standard_points, Ferrocast, TempDir};

/// A running server with HTTP on `server.http` and RTSP on [`Self::rtsp`]. Killed on drop.
pub struct RtspRig {
    pub server: Ferrocast,
    /// The RTSP listener.
    pub rtsp: SocketAddr,
    /// The plugin directory, which must outlive the server.
    pub plugins: TempDir,
}

impl RtspRig {
    /// Start with the `http` and `rtsp` plugins and the transport plugins `transports`
    /// (`"udp"`, `"tcp"`), enabled with their defaults, serving `points` (TOML); wait until
    /// RTSP listens.
    pub fn start(transports: &[&str], points: &str) -> Self {
        Self::start_with(transports, points, "", &[])
    }

    /// Start with the `udp` transport, serving the standard points over HTTP, RTSP and
    /// RTP/UDP: the set-up of a test of RTSP sessions over UDP.
    pub fn standard_over_udp() -> Self {
        Self::start(&["udp"], &standard_points_over(&["rtsp", "udp"]))
    }

    /// [`Self::start`] with more configuration tables (`extra`, TOML) and environment
    /// variables for the server.
    pub fn start_with(
        transports: &[&str],
        points: &str,
        extra: &str,
        env: &[(&str, &str)],
    ) -> Self {
        let mut plugins = vec!["http", "rtsp"];
        plugins.extend_from_slice(transports);
        let plugins = shipped_plugins_dir(&plugins);
        let (http, rtsp) = (loopback(), loopback());
        let transport_tables: String = transports
            .iter()
            .map(|transport| format!("\n[plugins.{transport}]\n"))
            .collect();
        let config = format!(
            "{}\n[plugins.rtsp]\nlisten = [\"{rtsp}\"]\n{transport_tables}\n{extra}",
            config_with(http, points)
        );
        let server = Ferrocast::start_with_env(&config, plugins.path(), http, env);
        server.wait_for(
            &format!("rtsp       listening on {rtsp}"),
            Duration::from_secs(10),
        );
        Self {
            server,
            rtsp,
            plugins,
        }
    }

    /// `rtsp://<the RTSP listener>/<path>`.
    pub fn url(&self, path: &str) -> String {
        format!("rtsp://{}/{}", self.rtsp, path.trim_start_matches('/'))
    }
}

/// The standard points (`live`, pushed, and `vod`, the sample on demand), offered over HTTP
/// and `protocols` (plugin names, e.g. `["rtsp", "udp"]`).
pub fn standard_points_over(protocols: &[&str]) -> String {
    let listed: String = protocols.iter().map(|p| format!(", \"{p}\"")).collect();
    standard_points().replace(
        "protocols = [\"http\"]",
        &format!("protocols = [\"http\"{listed}]"),
    )
}

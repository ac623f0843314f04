//! Pull sources of broadcast points: the URL forms ferrocast can pull MPEG-TS from, parsed
//! and checked at configuration time so that a typo is a `file:line` error, not a retry loop.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

/// Where a pull source connects or listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PullUrl {
    /// `http://host:port/path`: a GET whose body is MPEG-TS (another ferrocast's live point,
    /// an encoder's HTTP output).
    Http {
        /// `host:port`, resolved when connecting.
        authority: String,
        host: String,
        path: String,
    },
    /// `tcp://host:port`: raw MPEG-TS on a TCP connection.
    Tcp { authority: String },
    /// `udp://@:port`, `udp://ip:port` (unicast bind) or `udp://group:port?localaddr=ip`
    /// (multicast join on the interface with that address).
    Udp {
        bind: SocketAddr,
        group: Option<Ipv4Addr>,
        interface: Option<Ipv4Addr>,
    },
}

impl std::fmt::Display for PullUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Http {
                authority, path, ..
            } => write!(f, "http://{authority}{path}"),
            Self::Tcp { authority } => write!(f, "tcp://{authority}"),
            Self::Udp {
                bind,
                group: Some(group),
                ..
            } => write!(f, "udp://{group}:{}", bind.port()),
            Self::Udp { bind, .. } => write!(f, "udp://{bind}"),
        }
    }
}

/// When a pull runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullMode {
    /// From startup, reconnecting forever.
    Always,
    /// When the first client arrives, until the last one has been gone for the idle timeout.
    OnDemand,
}

/// A broadcast point fed by pulling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullSource {
    pub url: PullUrl,
    pub mode: PullMode,
    /// On-demand pulls stop this long after the last client left.
    pub idle_timeout: Duration,
    /// Reconnect backoff: the first wait, doubling up to the cap, with jitter.
    pub backoff_min: Duration,
    pub backoff_max: Duration,
}

/// The pull URL forms, for error messages.
const ACCEPTED: &str = "use http://host:port/path, tcp://host:port or udp://@:port";
/// UDP pull URL examples, for error messages.
const UDP_EXAMPLE: &str = "e.g. udp://@:5004 or udp://239.255.0.1:5004?localaddr=192.0.2.10";

/// What is wrong with a pull URL, and what is accepted instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PullUrlError {
    #[error("`{url}` is not a URL; {ACCEPTED}")]
    NotAUrl { url: String },
    #[error("`{url}` has no valid host[:port]; {ACCEPTED}")]
    BadHttpAuthority { url: String },
    #[error("`{url}` needs host:port, e.g. tcp://127.0.0.1:9000")]
    BadTcpAuthority { url: String },
    #[error("pulling over `{scheme}` is not supported; {ACCEPTED}")]
    UnsupportedScheme { url: String, scheme: String },
    #[error("`{url}` needs a port; {UDP_EXAMPLE}")]
    MissingUdpPort { url: String },
    #[error("`{url}` has no valid port; {UDP_EXAMPLE}")]
    BadUdpPort { url: String },
    #[error("localaddr `{value}` in `{url}` is not an IPv4 address")]
    BadLocalAddr { url: String, value: String },
    #[error("unknown option `{option}` in `{url}`; only localaddr=ip is understood")]
    UnknownOption { url: String, option: String },
    #[error("`{host}` in `{url}` is not an IP address; {UDP_EXAMPLE}")]
    BadUdpHost { url: String, host: String },
}

/// Parse a pull URL; the error says what is wrong and what is accepted.
pub fn parse_pull_url(raw: &str) -> Result<PullUrl, PullUrlError> {
    let url = || raw.to_owned();
    let (scheme, rest) = raw
        .split_once("://")
        .ok_or_else(|| PullUrlError::NotAUrl { url: url() })?;
    match scheme {
        "http" => {
            let (authority, path) = match rest.find('/') {
                Some(slash) => (&rest[..slash], &rest[slash..]),
                None => (rest, "/"),
            };
            let (host, port) = host_and_port(authority, 80)
                .ok_or_else(|| PullUrlError::BadHttpAuthority { url: url() })?;
            Ok(PullUrl::Http {
                authority: format!("{host}:{port}"),
                host,
                path: path.to_owned(),
            })
        }
        "tcp" => {
            let (host, port) = host_and_port(rest.trim_end_matches('/'), 0)
                .filter(|(_, port)| *port != 0)
                .ok_or_else(|| PullUrlError::BadTcpAuthority { url: url() })?;
            Ok(PullUrl::Tcp {
                authority: format!("{host}:{port}"),
            })
        }
        "udp" => parse_udp(raw, rest),
        other => Err(PullUrlError::UnsupportedScheme {
            url: url(),
            scheme: other.to_owned(),
        }),
    }
}

fn parse_udp(raw: &str, rest: &str) -> Result<PullUrl, PullUrlError> {
    let url = || raw.to_owned();
    let (address, query) = rest.split_once('?').unwrap_or((rest, ""));
    let address = address.trim_end_matches('/');
    let (host, port) = address
        .rsplit_once(':')
        .ok_or_else(|| PullUrlError::MissingUdpPort { url: url() })?;
    let port: u16 = port
        .parse()
        .ok()
        .filter(|port| *port != 0)
        .ok_or_else(|| PullUrlError::BadUdpPort { url: url() })?;
    let interface = udp_interface(raw, query)?;
    let host = host.trim_start_matches('@');
    let ip: IpAddr = if host.is_empty() {
        Ipv4Addr::UNSPECIFIED.into()
    } else {
        host.parse().map_err(|_| PullUrlError::BadUdpHost {
            url: url(),
            host: host.to_owned(),
        })?
    };
    match ip {
        IpAddr::V4(group) if group.is_multicast() => Ok(PullUrl::Udp {
            bind: SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), port),
            group: Some(group),
            interface,
        }),
        _ => Ok(PullUrl::Udp {
            bind: SocketAddr::new(ip, port),
            group: None,
            interface,
        }),
    }
}

/// The `localaddr=ip` option of a UDP pull URL's query, the only one understood.
fn udp_interface(raw: &str, query: &str) -> Result<Option<Ipv4Addr>, PullUrlError> {
    let mut interface = None;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("localaddr", value)) => {
                interface =
                    Some(
                        value
                            .parse::<Ipv4Addr>()
                            .map_err(|_| PullUrlError::BadLocalAddr {
                                url: raw.to_owned(),
                                value: value.to_owned(),
                            })?,
                    )
            }
            _ => {
                return Err(PullUrlError::UnknownOption {
                    url: raw.to_owned(),
                    option: pair.to_owned(),
                })
            }
        }
    }
    Ok(interface)
}

/// `host[:port]`, with `[v6]` brackets allowed.
fn host_and_port(authority: &str, default_port: u16) -> Option<(String, u16)> {
    if authority.is_empty() || authority.contains('@') {
        return None;
    }
    if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(port) => port.parse().ok()?,
            None if after.is_empty() => default_port,
            None => return None,
        };
        return Some((format!("[{host}]"), port));
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() => Some((host.to_owned(), port.parse().ok()?)),
        Some(_) => None,
        None => Some((authority.to_owned(), default_port)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepted_forms() {
        assert_eq!(
            parse_pull_url("http://origin.example:8080/live").unwrap(),
            PullUrl::Http {
                authority: "origin.example:8080".into(),
                host: "origin.example".into(),
                path: "/live".into()
            }
        );
        assert!(
            matches!(parse_pull_url("http://127.0.0.1").unwrap(), PullUrl::Http { ref authority, ref path, .. } if authority == "127.0.0.1:80" && path == "/")
        );
        assert_eq!(
            parse_pull_url("tcp://[::1]:9000").unwrap(),
            PullUrl::Tcp {
                authority: "[::1]:9000".into()
            }
        );
        assert_eq!(
            parse_pull_url("udp://@:5004").unwrap(),
            PullUrl::Udp {
                bind: "0.0.0.0:5004".parse().unwrap(),
                group: None,
                interface: None
            }
        );
        assert_eq!(
            parse_pull_url("udp://239.255.0.1:5004?localaddr=127.0.0.1").unwrap(),
            PullUrl::Udp {
                bind: "0.0.0.0:5004".parse().unwrap(),
                group: Some("239.255.0.1".parse().unwrap()),
                interface: Some("127.0.0.1".parse().unwrap())
            }
        );
    }

    #[test]
    fn errors_say_what_is_accepted() {
        for bad in [
            "rtmp://x/live",
            "http://",
            "tcp://host",
            "udp://@:0",
            "udp://@:5004?ttl=3",
            "live",
        ] {
            let error = parse_pull_url(bad).unwrap_err();
            assert!(!error.to_string().is_empty(), "{bad}");
        }
        assert!(parse_pull_url("rtmp://x/live")
            .unwrap_err()
            .to_string()
            .contains("not supported"));
    }
}

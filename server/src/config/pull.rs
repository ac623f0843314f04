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
        /// `user:password@` of the URL, sent to the origin as Basic credentials.
        basic: Option<UpstreamCredentials>,
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

/// Credentials for a pull source's origin. The password stays out of logs, status and
/// error messages (`Debug` redacts it; the URL's `Display` leaves it out).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamCredentials {
    pub user: String,
    pub password: crate::access::Secret,
}

impl UpstreamCredentials {
    /// The `Authorization` header's value.
    pub fn authorization(&self) -> String {
        use base64::Engine;
        let pair = format!("{}:{}", self.user, self.password.expose());
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(pair)
        )
    }
}

/// `raw` with the password of any `user:password@` replaced, for messages.
pub fn redact_url(raw: &str) -> String {
    let Some((scheme, rest)) = raw.split_once("://") else {
        return raw.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{scheme}://{user}:***@{host}{}", &rest[authority_end..])
        }
        None => raw.to_owned(),
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
    let redacted = redact_url(raw);
    let url = || redacted.clone();
    let (scheme, rest) = raw
        .split_once("://")
        .ok_or_else(|| PullUrlError::NotAUrl { url: url() })?;
    match scheme {
        "http" => {
            let (authority, path) = match rest.find('/') {
                Some(slash) => (&rest[..slash], &rest[slash..]),
                None => (rest, "/"),
            };
            let (basic, authority) = match authority.rsplit_once('@') {
                Some((userinfo, host)) => {
                    let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
                    let credentials = UpstreamCredentials {
                        user: user.to_owned(),
                        password: crate::access::Secret::new(password),
                    };
                    (Some(credentials), host)
                }
                None => (None, authority),
            };
            let (host, port) = host_and_port(authority, 80)
                .ok_or_else(|| PullUrlError::BadHttpAuthority { url: url() })?;
            Ok(PullUrl::Http {
                authority: format!("{host}:{port}"),
                host,
                path: path.to_owned(),
                basic,
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
                path: "/live".into(),
                basic: None,
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
    fn credentials_in_an_http_url_go_to_the_origin_and_never_into_messages() {
        let url = parse_pull_url("http://enc:s3cret@origin.example:8080/live").unwrap();
        let PullUrl::Http {
            authority,
            basic: Some(basic),
            ..
        } = &url
        else {
            panic!("{url:?}");
        };
        assert_eq!(authority, "origin.example:8080");
        assert_eq!(basic.user, "enc");
        // base64("enc:s3cret")
        assert_eq!(basic.authorization(), "Basic ZW5jOnMzY3JldA==");
        assert_eq!(url.to_string(), "http://origin.example:8080/live");
        assert!(!format!("{url:?}").contains("s3cret"));
        let error = parse_pull_url("http://enc:s3cret@/live").unwrap_err();
        assert!(!error.to_string().contains("s3cret"), "{error}");
        assert_eq!(redact_url("http://enc:s3cret@h/x"), "http://enc:***@h/x");
        assert_eq!(redact_url("http://h/x@y"), "http://h/x@y");
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

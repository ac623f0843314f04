//! The access rules as configured: who may publish to a point, who may play it, and the
//! IP/CIDR lists both use.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// One address or network: `10.0.0.0/8`, `2001:db8::/32`, `192.0.2.7`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

/// Why an address list entry does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    #[error("`{0}` is not an IP address or network; write e.g. \"10.0.0.0/8\" or \"192.0.2.7\"")]
    Syntax(String),
    #[error("`{entry}` has prefix length {prefix}, longer than the address ({max} bits)")]
    Prefix { entry: String, prefix: u8, max: u8 },
}

impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(entry: &str) -> Result<Self, CidrError> {
        let syntax = || CidrError::Syntax(entry.to_owned());
        let (address, prefix) = match entry.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (entry, None),
        };
        let network: IpAddr = address.trim().parse().map_err(|_| syntax())?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(prefix) => prefix.trim().parse::<u8>().map_err(|_| syntax())?,
            None => max,
        };
        if prefix > max {
            return Err(CidrError::Prefix {
                entry: entry.to_owned(),
                prefix,
                max,
            });
        }
        Ok(Self { network, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

impl Cidr {
    /// Does the network hold `ip`? IPv4-mapped IPv6 peers count as their IPv4 address.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.network, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => prefix_matches(
                u128::from(u32::from(net)) << 96,
                u128::from(u32::from(ip)) << 96,
                self.prefix,
            ),
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                prefix_matches(u128::from(net), u128::from(ip), self.prefix)
            }
            _ => false,
        }
    }
}

fn prefix_matches(network: u128, ip: u128, prefix: u8) -> bool {
    if prefix == 0 {
        return true;
    }
    let mask = u128::MAX << (128 - u32::from(prefix));
    network & mask == ip & mask
}

/// A list of addresses and networks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AddressList(pub Vec<Cidr>);

impl AddressList {
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|cidr| cidr.contains(ip))
    }

    /// This machine: 127.0.0.0/8 and ::1.
    pub fn loopback() -> Self {
        Self(vec![
            "127.0.0.0/8".parse().expect("a valid network"),
            "::1/128".parse().expect("a valid network"),
        ])
    }
}

/// A configured secret or password hash: kept out of `Debug` output, so logs and panic
/// messages never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(text: impl Into<String>) -> Self {
        Self(text.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// A user who may publish with Basic credentials.
/// Hashes stay out of logs too: they can be attacked offline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishUser {
    pub name: String,
    /// The argon2 PHC string of the password.
    pub password_hash: Secret,
}

/// Who may publish to a point.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum PublishRule {
    /// Anyone, from anywhere (`publish = "open"`).
    Open,
    /// Only from this machine, without credentials (`publish = "loopback"`, the default).
    #[default]
    Loopback,
    /// From the allowed addresses (any when `allow` is `None`), with a key or a user's
    /// password when any are configured.
    Protected {
        /// argon2 PHC strings of the stream keys.
        keys: Vec<Secret>,
        users: Vec<PublishUser>,
        allow: Option<AddressList>,
    },
}

impl PublishRule {
    /// The rule asks for a key or a user's password.
    pub fn needs_credentials(&self) -> bool {
        matches!(self, Self::Protected { keys, users, .. } if !keys.is_empty() || !users.is_empty())
    }
}

/// Who may play a point. The default is public.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PlayRule {
    /// Only these addresses, when set.
    pub allow: Option<AddressList>,
    /// Never these addresses (checked first).
    pub deny: AddressList,
    /// Players need a signed, unexpired URL token.
    pub signed: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn networks_hold_their_addresses_only() {
        let net: Cidr = "10.0.0.0/8".parse().unwrap();
        assert!(net.contains(ip("10.200.3.4")));
        assert!(!net.contains(ip("11.0.0.1")));
        assert!(!net.contains(ip("::1")));
        let host: Cidr = "192.0.2.7".parse().unwrap();
        assert!(host.contains(ip("192.0.2.7")) && !host.contains(ip("192.0.2.8")));
        let v6: Cidr = "2001:db8::/32".parse().unwrap();
        assert!(v6.contains(ip("2001:db8:1::5")) && !v6.contains(ip("2001:db9::1")));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(ip("203.0.113.1")));
    }

    #[test]
    fn ipv4_mapped_peers_match_ipv4_networks() {
        assert!(AddressList::loopback().contains(ip("::ffff:127.0.0.1")));
        assert!(AddressList::loopback().contains(ip("::1")));
        assert!(!AddressList::loopback().contains(ip("192.0.2.1")));
    }

    #[test]
    fn bad_entries_say_why() {
        assert!(matches!(
            "10.0.0.0/33".parse::<Cidr>(),
            Err(CidrError::Prefix { .. })
        ));
        assert!(matches!(
            "example.com".parse::<Cidr>(),
            Err(CidrError::Syntax(_))
        ));
        assert!(matches!(
            "10.0.0.0/x".parse::<Cidr>(),
            Err(CidrError::Syntax(_))
        ));
    }
}

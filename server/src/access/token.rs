//! Signed, expiring URL tokens for players (the nginx `secure_link` model).
//!
//! A token is `base64url(HMAC-SHA256(key, "<point>|<expires>|<ip>"))`, where `expires` is in
//! Unix seconds and `ip` is empty when the token is not bound to an address. The player's
//! URL carries `?expires=<expires>&token=<token>`; the server recomputes the HMAC and
//! compares in constant time.

use std::net::IpAddr;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Why a presented token does not admit the player.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the URL carries no `token` and `expires`")]
    Missing,
    #[error("the URL's token expired")]
    Expired,
    #[error("the URL's token is not valid for this point and address")]
    Invalid,
}

fn mac(key: &[u8], point: &str, expires: u64, ip: Option<IpAddr>) -> HmacSha256 {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length");
    let ip = ip.map(|ip| ip.to_string()).unwrap_or_default();
    mac.update(format!("{point}|{expires}|{ip}").as_bytes());
    mac
}

/// The token for `point` until `expires`, optionally only for `ip`.
pub fn sign(key: &[u8], point: &str, expires: u64, ip: Option<IpAddr>) -> String {
    URL_SAFE_NO_PAD.encode(mac(key, point, expires, ip).finalize().into_bytes())
}

/// The query string a player appends to the point's URL.
pub fn query(key: &[u8], point: &str, expires: u64, ip: Option<IpAddr>) -> String {
    format!("expires={expires}&token={}", sign(key, point, expires, ip))
}

/// The value of `name` in a query string (`a=1&b=2`), percent-decoding left to the caller
/// (tokens and expiries never need it).
pub fn query_value<'q>(query: &'q str, name: &str) -> Option<&'q str> {
    query
        .trim_start_matches('?')
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

/// Check the token in `query` for `point`, presented by `peer` at `now` (Unix seconds).
/// A token bound to an address only admits that address.
pub fn verify(
    key: &[u8],
    point: &str,
    query: &str,
    peer: IpAddr,
    now: u64,
) -> Result<(), TokenError> {
    let (Some(expires), Some(token)) = (query_value(query, "expires"), query_value(query, "token"))
    else {
        return Err(TokenError::Missing);
    };
    let expires: u64 = expires.parse().map_err(|_| TokenError::Invalid)?;
    let token = URL_SAFE_NO_PAD
        .decode(token.trim_end_matches('='))
        .map_err(|_| TokenError::Invalid)?;
    let peer = match peer {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(peer, IpAddr::V4),
        v4 => v4,
    };
    let genuine = [None, Some(peer)]
        .into_iter()
        .any(|ip| mac(key, point, expires, ip).verify_slice(&token).is_ok());
    if !genuine {
        return Err(TokenError::Invalid);
    }
    if now > expires {
        return Err(TokenError::Expired);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"a signing key of some length";

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn a_token_admits_its_point_until_it_expires() {
        let query = query(KEY, "live", 1000, None);
        assert_eq!(verify(KEY, "live", &query, ip("192.0.2.1"), 999), Ok(()));
        assert_eq!(verify(KEY, "live", &query, ip("192.0.2.1"), 1000), Ok(()));
        assert_eq!(
            verify(KEY, "live", &query, ip("192.0.2.1"), 1001),
            Err(TokenError::Expired)
        );
        assert_eq!(
            verify(KEY, "other", &query, ip("192.0.2.1"), 999),
            Err(TokenError::Invalid)
        );
    }

    #[test]
    fn a_tampered_expiry_key_or_token_is_invalid() {
        let good = query(KEY, "live", 1000, None);
        let later = good.replace("expires=1000", "expires=9000");
        assert_eq!(
            verify(KEY, "live", &later, ip("::1"), 999),
            Err(TokenError::Invalid)
        );
        assert_eq!(
            verify(b"another key", "live", &good, ip("::1"), 999),
            Err(TokenError::Invalid)
        );
        let flipped = format!("{}A", &good[..good.len() - 1]);
        assert_ne!(flipped, good);
        assert_eq!(
            verify(KEY, "live", &flipped, ip("::1"), 999),
            Err(TokenError::Invalid)
        );
        assert_eq!(
            verify(KEY, "live", "expires=1000", ip("::1"), 999),
            Err(TokenError::Missing)
        );
        assert_eq!(
            verify(KEY, "live", "", ip("::1"), 999),
            Err(TokenError::Missing)
        );
    }

    #[test]
    fn a_token_bound_to_an_address_admits_that_address_only() {
        let query = query(KEY, "live", 1000, Some(ip("192.0.2.1")));
        assert_eq!(verify(KEY, "live", &query, ip("192.0.2.1"), 5), Ok(()));
        assert_eq!(
            verify(KEY, "live", &query, ip("::ffff:192.0.2.1"), 5),
            Ok(())
        );
        assert_eq!(
            verify(KEY, "live", &query, ip("192.0.2.2"), 5),
            Err(TokenError::Invalid)
        );
    }

    #[test]
    fn query_values_are_found_by_name() {
        assert_eq!(query_value("?a=1&token=x&b=", "token"), Some("x"));
        assert_eq!(query_value("a=1", "token"), None);
    }
}

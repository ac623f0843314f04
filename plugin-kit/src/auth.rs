//! What a client presented, as the host's `present_credentials` takes it: `Authorization:
//! Basic` or `Bearer`, else the request target's query string (`?key=…`,
//! `?expires=…&token=…`). The host decides; this only reads. Also the answers' helpers:
//! the challenge header and the retry delay of a rate-limited refusal.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use ferrocast_plugin_api::Credentials;

/// The `WWW-Authenticate` value sent with 401.
pub const BASIC_CHALLENGE: &str = "Basic realm=\"ferrocast\"";

/// Seconds a rate-limited client is told to wait when the refusal does not say.
pub const DEFAULT_RETRY_AFTER_SECS: u64 = 60;

/// The credentials of a request with `authorization` (the header's value, if any) and
/// `target` (the request target, whose query may carry a key or a signed-URL token).
/// A malformed `Authorization` is presented as nothing, so the host refuses it as missing.
pub fn credentials(authorization: Option<&str>, target: &str) -> Credentials {
    if let Some(value) = authorization {
        return from_authorization(value).unwrap_or_else(Credentials::none);
    }
    match query(target) {
        Some(query) if !query.is_empty() => Credentials::url_query(query),
        _ => Credentials::none(),
    }
}

/// The query string of a request target (without `?` and any fragment).
pub fn query(target: &str) -> Option<&str> {
    let (_, rest) = target.split_once('?')?;
    Some(rest.split('#').next().unwrap_or_default())
}

/// `Basic <base64 user:password>` or `Bearer <token>`.
fn from_authorization(value: &str) -> Option<Credentials> {
    let (scheme, rest) = value.trim().split_once(' ')?;
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        return Some(Credentials::bearer(rest));
    }
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = STANDARD.decode(rest).ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some(Credentials::basic(user, password))
}

/// The delay in a host refusal's message ("… retry in 42 s"), else the default.
pub fn retry_after_secs(message: &str) -> u64 {
    message
        .split("retry in ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|secs| secs.parse().ok())
        .unwrap_or(DEFAULT_RETRY_AFTER_SECS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrocast_plugin_api::CredentialKind;

    #[test]
    fn basic_and_bearer_are_read_from_the_header() {
        // "enc:p:w" — passwords may contain colons.
        let basic = credentials(Some("Basic ZW5jOnA6dw=="), "/live?key=x");
        assert_eq!(basic, Credentials::basic("enc", "p:w"));
        let bearer = credentials(Some("bearer  abc "), "/live");
        assert_eq!(bearer, Credentials::bearer("abc"));
        let bad = credentials(Some("Basic !!!"), "/live?key=x");
        assert_eq!(bad.kind, CredentialKind::NONE);
        let other = credentials(Some("Digest x"), "/live");
        assert_eq!(other.kind, CredentialKind::NONE);
    }

    #[test]
    fn without_a_header_the_query_is_presented() {
        let query = credentials(None, "/live?expires=5&token=abc#frag");
        assert_eq!(query, Credentials::url_query("expires=5&token=abc"));
        assert_eq!(credentials(None, "/live").kind, CredentialKind::NONE);
        assert_eq!(credentials(None, "/live?").kind, CredentialKind::NONE);
    }

    #[test]
    fn the_retry_delay_comes_from_the_refusal() {
        assert_eq!(
            retry_after_secs("too many failed attempts; retry in 42 s"),
            42
        );
        assert_eq!(retry_after_secs("busy"), DEFAULT_RETRY_AFTER_SECS);
    }
}

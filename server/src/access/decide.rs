//! The access decisions: may this peer, with what it presented, publish or play here?
//! Plain functions of the rule, the peer, the credentials and the time.

use std::net::IpAddr;
use std::time::Duration;

use ferrocast_plugin_api::{CredentialKind, Credentials, ErrorCode, HostError};

use super::rules::{PlayRule, PublishRule};
use super::secret;
use super::token::{self, TokenError};

/// Why a request was refused. The text goes to the client and the log; it never holds what
/// the client presented.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Denial {
    #[error("publishing is only allowed from this machine here; configure a stream key or `publish = \"open\"`")]
    NotLoopback,
    #[error("credentials are required")]
    MissingCredentials,
    #[error("the credentials are not valid")]
    WrongCredentials,
    #[error("this address may not do that here")]
    AddressNotAllowed,
    #[error("a signed URL is required")]
    TokenMissing,
    #[error("the signed URL expired")]
    TokenExpired,
    #[error("the signed URL is not valid")]
    TokenInvalid,
    #[error("signed URLs are required but the server has no `url_signing_key`")]
    NoSigningKey,
    #[error("too many failed attempts; retry in {} s", .retry_after.as_secs().max(1))]
    RateLimited { retry_after: Duration },
}

impl Denial {
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::MissingCredentials | Self::WrongCredentials => ErrorCode::UNAUTHORIZED,
            Self::RateLimited { .. } => ErrorCode::RATE_LIMITED,
            _ => ErrorCode::FORBIDDEN,
        }
    }

    /// A short reason for the log line.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::NotLoopback => "not loopback",
            Self::MissingCredentials => "no credentials",
            Self::WrongCredentials => "wrong credentials",
            Self::AddressNotAllowed => "address not allowed",
            Self::TokenMissing => "no token",
            Self::TokenExpired => "token expired",
            Self::TokenInvalid => "token invalid",
            Self::NoSigningKey => "no signing key",
            Self::RateLimited { .. } => "rate limited",
        }
    }

    /// Attempts that guess at a secret count towards the lockout; a request without any
    /// credentials (the client's first try before it authenticates) does not.
    pub fn counts_as_failure(&self) -> bool {
        matches!(
            self,
            Self::WrongCredentials | Self::TokenExpired | Self::TokenInvalid
        )
    }
}

impl From<Denial> for HostError {
    fn from(denial: Denial) -> Self {
        HostError::new(denial.code(), denial.to_string())
    }
}

/// May `peer` publish under `rule` with `presented`?
pub fn publish(rule: &PublishRule, peer: IpAddr, presented: &Credentials) -> Result<(), Denial> {
    let (keys, users, allow) = match rule {
        PublishRule::Open => return Ok(()),
        PublishRule::Loopback => {
            return match super::AddressList::loopback().contains(peer) {
                true => Ok(()),
                false => Err(Denial::NotLoopback),
            };
        }
        PublishRule::Protected { keys, users, allow } => (keys, users, allow),
    };
    if allow.as_ref().is_some_and(|allow| !allow.contains(peer)) {
        return Err(Denial::AddressNotAllowed);
    }
    if !rule.needs_credentials() {
        return Ok(());
    }
    let matches_key = |secret: &str| keys.iter().any(|phc| secret::verify(secret, phc.expose()));
    let genuine = match presented.kind {
        CredentialKind::BASIC => {
            let user = users
                .iter()
                .find(|user| user.name == presented.user.as_str());
            match user {
                Some(user) => secret::verify(&presented.secret, user.password_hash.expose()),
                // Encoders that only know URLs with `user:password@` may carry a key as
                // the password.
                None => matches_key(&presented.secret),
            }
        }
        CredentialKind::BEARER => matches_key(&presented.secret),
        CredentialKind::URL_QUERY => match token::query_value(&presented.secret, "key") {
            Some(key) => matches_key(key),
            None => return Err(Denial::MissingCredentials),
        },
        _ => return Err(Denial::MissingCredentials),
    };
    match genuine {
        true => Ok(()),
        false => Err(Denial::WrongCredentials),
    }
}

/// May `peer` play `point` under `rule` with `presented`, at `now` (Unix seconds)?
pub fn play(
    rule: &PlayRule,
    point: &str,
    peer: IpAddr,
    presented: &Credentials,
    signing_key: Option<&[u8]>,
    now: u64,
) -> Result<(), Denial> {
    if rule.deny.contains(peer)
        || rule
            .allow
            .as_ref()
            .is_some_and(|allow| !allow.contains(peer))
    {
        return Err(Denial::AddressNotAllowed);
    }
    if !rule.signed {
        return Ok(());
    }
    let Some(key) = signing_key else {
        return Err(Denial::NoSigningKey);
    };
    let query = match presented.kind {
        CredentialKind::URL_QUERY => presented.secret.as_str(),
        _ => "",
    };
    token::verify(key, point, query, peer, now).map_err(|error| match error {
        TokenError::Missing => Denial::TokenMissing,
        TokenError::Expired => Denial::TokenExpired,
        TokenError::Invalid => Denial::TokenInvalid,
    })
}

#[cfg(test)]
mod tests {
    use super::super::rules::{AddressList, PublishUser, Secret};
    use super::*;
    use std::sync::OnceLock;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn list(entries: &[&str]) -> AddressList {
        AddressList(entries.iter().map(|e| e.parse().unwrap()).collect())
    }

    /// Hashing is slow on purpose: hash once for all tests.
    fn hashes() -> &'static (String, String) {
        static HASHES: OnceLock<(String, String)> = OnceLock::new();
        HASHES.get_or_init(|| (secret::hash("k3y").unwrap(), secret::hash("pw").unwrap()))
    }

    fn protected(allow: Option<AddressList>) -> PublishRule {
        let (key, password) = hashes().clone();
        PublishRule::Protected {
            keys: vec![Secret::new(key)],
            users: vec![PublishUser {
                name: "enc".into(),
                password_hash: Secret::new(password),
            }],
            allow,
        }
    }

    #[test]
    fn by_default_only_this_machine_publishes() {
        let none = Credentials::none();
        assert_eq!(
            publish(&PublishRule::Loopback, ip("127.0.0.1"), &none),
            Ok(())
        );
        assert_eq!(publish(&PublishRule::Loopback, ip("::1"), &none), Ok(()));
        assert_eq!(
            publish(&PublishRule::Loopback, ip("192.0.2.1"), &none),
            Err(Denial::NotLoopback)
        );
        assert_eq!(publish(&PublishRule::Open, ip("192.0.2.1"), &none), Ok(()));
    }

    #[test]
    fn keys_and_users_are_checked_in_every_form() {
        let rule = protected(None);
        let peer = ip("192.0.2.1");
        let accepted = [
            Credentials::url_query("key=k3y"),
            Credentials::url_query("a=b&key=k3y"),
            Credentials::bearer("k3y"),
            Credentials::basic("enc", "pw"),
            Credentials::basic("anyone", "k3y"),
        ];
        for credentials in &accepted {
            assert_eq!(publish(&rule, peer, credentials), Ok(()), "{credentials:?}");
        }
        let wrong = [
            Credentials::url_query("key=nope"),
            Credentials::bearer("pw"),
            Credentials::basic("enc", "k3y"),
            Credentials::basic("enc", "PW"),
        ];
        for credentials in &wrong {
            assert_eq!(
                publish(&rule, peer, credentials),
                Err(Denial::WrongCredentials)
            );
        }
        assert_eq!(
            publish(&rule, peer, &Credentials::none()),
            Err(Denial::MissingCredentials)
        );
        assert_eq!(
            publish(&rule, ip("127.0.0.1"), &Credentials::url_query("other=1")),
            Err(Denial::MissingCredentials),
            "a key protects the point from this machine too"
        );
    }

    #[test]
    fn an_allow_list_is_checked_before_credentials() {
        let rule = protected(Some(list(&["10.0.0.0/8"])));
        let key = Credentials::bearer("k3y");
        assert_eq!(publish(&rule, ip("10.1.2.3"), &key), Ok(()));
        assert_eq!(
            publish(&rule, ip("127.0.0.1"), &key),
            Err(Denial::AddressNotAllowed)
        );
        let address_only = PublishRule::Protected {
            keys: vec![],
            users: vec![],
            allow: Some(list(&["10.0.0.0/8"])),
        };
        assert_eq!(
            publish(&address_only, ip("10.9.9.9"), &Credentials::none()),
            Ok(())
        );
    }

    #[test]
    fn players_are_public_unless_listed_or_signed() {
        let none = Credentials::none();
        let public = PlayRule::default();
        assert_eq!(
            play(&public, "live", ip("192.0.2.1"), &none, None, 0),
            Ok(())
        );
        let listed = PlayRule {
            allow: Some(list(&["192.0.2.0/24"])),
            deny: list(&["192.0.2.66"]),
            signed: false,
        };
        assert_eq!(
            play(&listed, "live", ip("192.0.2.1"), &none, None, 0),
            Ok(())
        );
        for refused in ["192.0.2.66", "198.51.100.1"] {
            assert_eq!(
                play(&listed, "live", ip(refused), &none, None, 0),
                Err(Denial::AddressNotAllowed)
            );
        }
    }

    #[test]
    fn signed_points_need_a_genuine_unexpired_token() {
        let key = b"0123456789abcdef".as_slice();
        let rule = PlayRule {
            signed: true,
            ..PlayRule::default()
        };
        let peer = ip("192.0.2.1");
        let good = Credentials::url_query(&token::query(key, "live", 100, None));
        assert_eq!(play(&rule, "live", peer, &good, Some(key), 50), Ok(()));
        assert_eq!(
            play(&rule, "live", peer, &good, Some(key), 101),
            Err(Denial::TokenExpired)
        );
        assert_eq!(
            play(&rule, "vod", peer, &good, Some(key), 50),
            Err(Denial::TokenInvalid)
        );
        let none = Credentials::none();
        assert_eq!(
            play(&rule, "live", peer, &none, Some(key), 50),
            Err(Denial::TokenMissing)
        );
        assert_eq!(
            play(&rule, "live", peer, &good, None, 50),
            Err(Denial::NoSigningKey)
        );
    }

    #[test]
    fn refusals_map_to_the_abi_codes() {
        assert_eq!(Denial::MissingCredentials.code(), ErrorCode::UNAUTHORIZED);
        assert_eq!(Denial::WrongCredentials.code(), ErrorCode::UNAUTHORIZED);
        assert_eq!(Denial::TokenExpired.code(), ErrorCode::FORBIDDEN);
        assert_eq!(Denial::AddressNotAllowed.code(), ErrorCode::FORBIDDEN);
        let limited = Denial::RateLimited {
            retry_after: Duration::from_secs(3),
        };
        assert_eq!(limited.code(), ErrorCode::RATE_LIMITED);
        assert!(limited.to_string().contains("3 s"));
        assert!(!Denial::MissingCredentials.counts_as_failure());
        assert!(Denial::WrongCredentials.counts_as_failure());
    }
}

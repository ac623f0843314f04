//! Bearer tokens for the admin API: the configuration keeps argon2 hashes of them, never the
//! tokens themselves.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;

#[derive(Debug, thiserror::Error)]
pub enum HashError {
    #[error("cannot read random bytes for the salt from /dev/urandom: {0}")]
    Random(std::io::Error),
    #[error("cannot hash the token: {0}")]
    Hash(argon2::password_hash::Error),
}

/// The PHC string to put in `[admin] tokens` for `token`.
pub fn hash_token(token: &str) -> Result<String, HashError> {
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut random| std::io::Read::read_exact(&mut random, &mut bytes))
        .map_err(HashError::Random)?;
    let salt = SaltString::encode_b64(&bytes).map_err(HashError::Hash)?;
    Argon2::default()
        .hash_password(token.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(HashError::Hash)
}

/// Whether an `Authorization` header value carries a token matching one of `hashes`.
pub fn authorized(header: Option<&str>, hashes: &[String]) -> bool {
    let Some(token) = header.and_then(|value| value.strip_prefix("Bearer ")) else {
        return false;
    };
    let token = token.trim();
    !token.is_empty()
        && hashes.iter().any(|hash| {
            PasswordHash::new(hash).is_ok_and(|parsed| {
                Argon2::default()
                    .verify_password(token.as_bytes(), &parsed)
                    .is_ok()
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_hashed_token_is_accepted() {
        let hash = hash_token("s3cret").unwrap();
        assert!(hash.starts_with("$argon2"));
        let hashes = vec![hash];
        assert!(authorized(Some("Bearer s3cret"), &hashes));
        assert!(!authorized(Some("Bearer wrong"), &hashes));
        assert!(!authorized(Some("Basic s3cret"), &hashes));
        assert!(!authorized(Some("Bearer "), &hashes));
        assert!(!authorized(None, &hashes));
    }

    #[test]
    fn no_hashes_accept_nothing() {
        assert!(!authorized(Some("Bearer anything"), &[]));
    }
}

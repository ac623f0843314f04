//! Stream keys and passwords as argon2 PHC strings: hashing for `ferrocast hash-password`,
//! checking in constant time for every publish.

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;

/// Why a string is not a usable password hash.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not an argon2 PHC string ({0}); make one with `ferrocast hash-password`")]
pub struct HashError(String);

/// The argon2id PHC string of `secret`, with a random salt.
pub fn hash(secret: &str) -> Result<String, HashError> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(secret.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|error| HashError(error.to_string()))
}

/// Check that `phc` is an argon2 hash the server can verify against.
pub fn check_hash(phc: &str) -> Result<(), HashError> {
    let parsed = PasswordHash::new(phc).map_err(|error| HashError(error.to_string()))?;
    if !parsed.algorithm.as_str().starts_with("argon2") {
        return Err(HashError(format!("algorithm `{}`", parsed.algorithm)));
    }
    Ok(())
}

/// Does `secret` match `phc`? A hash that does not parse matches nothing.
pub fn verify(secret: &str, phc: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(parsed) => Argon2::default()
            .verify_password(secret.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_matches_its_secret_only() {
        let phc = hash("s3cret").unwrap();
        assert!(phc.starts_with("$argon2id$"));
        check_hash(&phc).unwrap();
        assert!(verify("s3cret", &phc));
        assert!(!verify("s3cret ", &phc));
        assert!(!verify("", &phc));
    }

    #[test]
    fn garbage_is_not_a_hash() {
        assert!(check_hash("s3cret").is_err());
        assert!(check_hash("$pbkdf2-sha256$i=1000$c2FsdA$aGFzaA").is_err());
        assert!(!verify("s3cret", "s3cret"));
    }
}

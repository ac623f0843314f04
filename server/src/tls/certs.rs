//! Loading one certificate chain and its key from PEM files, with the checks that decide
//! whether it may serve: readable, a key that matches, not expired. Also the names it covers
//! (for SNI) and when it expires.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::CertFiles;

/// Why a certificate was refused. Every variant names the file to fix.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} holds no PEM certificate (expected -----BEGIN CERTIFICATE-----)", path.display())]
    NoCertificate { path: PathBuf },
    #[error("{} holds no usable PEM private key: {source}", path.display())]
    NoKey {
        path: PathBuf,
        source: rustls_pki_types::pem::Error,
    },
    #[error("{} is not a valid X.509 certificate: {reason}", path.display())]
    Invalid { path: PathBuf, reason: String },
    #[error("the key in {} does not belong to the certificate in {}: {source}", key.display(), cert.display())]
    KeyMismatch {
        cert: PathBuf,
        key: PathBuf,
        source: rustls::Error,
    },
    #[error("the certificate in {} expired {days} day(s) ago; renew it", path.display())]
    Expired { path: PathBuf, days: u64 },
}

/// A certificate that passed its checks.
#[derive(Debug)]
pub struct LoadedCert {
    pub key: Arc<CertifiedKey>,
    /// DNS names it covers (subject alternative names, else the common name), lowercase;
    /// `*.example.com` covers one label.
    pub names: Vec<String>,
    pub not_after: SystemTime,
    pub files: CertFiles,
    /// The files' bytes, to tell a changed certificate from the one already serving.
    pub contents: (Vec<u8>, Vec<u8>),
}

fn read(path: &Path) -> Result<Vec<u8>, CertError> {
    std::fs::read(path).map_err(|source| CertError::Read {
        path: path.to_owned(),
        source,
    })
}

impl LoadedCert {
    /// Load and check `files` as of `now`.
    pub fn load(files: &CertFiles, now: SystemTime) -> Result<Self, CertError> {
        let cert_pem = read(&files.cert)?;
        let key_pem = read(&files.key)?;
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
            .filter_map(Result::ok)
            .collect();
        let Some(leaf) = chain.first() else {
            return Err(CertError::NoCertificate {
                path: files.cert.clone(),
            });
        };
        let (names, not_after) = describe_leaf(leaf).map_err(|reason| CertError::Invalid {
            path: files.cert.clone(),
            reason,
        })?;
        if let Ok(ago) = now.duration_since(not_after) {
            return Err(CertError::Expired {
                path: files.cert.clone(),
                days: ago.as_secs() / 86_400,
            });
        }
        let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|source| CertError::NoKey {
            path: files.key.clone(),
            source,
        })?;
        let provider = rustls::crypto::ring::default_provider();
        let key = CertifiedKey::from_der(chain, key, &provider).map_err(|source| {
            CertError::KeyMismatch {
                cert: files.cert.clone(),
                key: files.key.clone(),
                source,
            }
        })?;
        Ok(Self {
            key: Arc::new(key),
            names,
            not_after,
            files: files.clone(),
            contents: (cert_pem, key_pem),
        })
    }

    /// Whether this certificate covers `server_name` (lowercase).
    pub fn covers(&self, server_name: &str) -> bool {
        self.names.iter().any(|name| name_covers(name, server_name))
    }

    /// Time left before it expires at `now` (zero once expired).
    pub fn remaining(&self, now: SystemTime) -> Duration {
        self.not_after.duration_since(now).unwrap_or_default()
    }
}

/// `pattern` (a certificate name, maybe `*.example.com`) covers `host`.
pub fn name_covers(pattern: &str, host: &str) -> bool {
    match pattern.strip_prefix("*.") {
        Some(parent) => host
            .split_once('.')
            .is_some_and(|(label, rest)| !label.is_empty() && rest == parent),
        None => pattern == host,
    }
}

/// The names and expiry of a DER certificate; the error is the parser's explanation.
fn describe_leaf(der: &[u8]) -> Result<(Vec<String>, SystemTime), String> {
    use x509_parser::extensions::GeneralName;
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|error| error.to_string())?;
    let mut names: Vec<String> = match cert.subject_alternative_name() {
        Ok(Some(san)) => san
            .value
            .general_names
            .iter()
            .filter_map(|name| match name {
                GeneralName::DNSName(dns) => Some(dns.to_ascii_lowercase()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    if names.is_empty() {
        names.extend(
            cert.subject()
                .iter_common_name()
                .filter_map(|cn| cn.as_str().ok())
                .map(str::to_ascii_lowercase),
        );
    }
    let seconds = cert.validity().not_after.timestamp();
    let not_after = SystemTime::UNIX_EPOCH + Duration::from_secs(seconds.max(0) as u64);
    Ok((names, not_after))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wildcard_covers_exactly_one_label() {
        assert!(name_covers("*.example.com", "a.example.com"));
        assert!(!name_covers("*.example.com", "example.com"));
        assert!(!name_covers("*.example.com", "a.b.example.com"));
        assert!(name_covers("example.com", "example.com"));
        assert!(!name_covers("example.com", "www.example.com"));
    }
}

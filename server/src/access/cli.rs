//! `ferrocast hash-password` and `ferrocast sign-url`: the operator's side of the access
//! rules.

use std::io::{BufRead, IsTerminal, Write};
use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use super::{secret, token, unix_now};

/// Why a command could not do its job.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("cannot read the secret from standard input: {0}")]
    ReadSecret(std::io::Error),
    #[error("the secret is empty; type or pipe the password or stream key")]
    EmptySecret,
    #[error(transparent)]
    Hash(#[from] secret::HashError),
    #[error("cannot read the signing key from {path}: {source}")]
    ReadKey {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} has no [security] url_signing_key; add one or pass --key-file")]
    NoKey { path: String },
    #[error("the signing key is shorter than 16 characters; use a long random string")]
    ShortKey,
    #[error("`{0}` is not a duration; write e.g. 90s, 30m, 1h or 2d")]
    Duration(String),
}

/// Read the secret (a prompt without echo on a terminal, else the first line of stdin) and
/// return its argon2id PHC string.
pub fn hash_password() -> Result<String, CliError> {
    let stdin = std::io::stdin();
    let secret = if stdin.is_terminal() {
        eprint!("password or stream key: ");
        let _ = std::io::stderr().flush();
        let echo = EchoOff::new();
        let line = read_line(&mut stdin.lock());
        drop(echo);
        eprintln!();
        line?
    } else {
        read_line(&mut stdin.lock())?
    };
    if secret.is_empty() {
        return Err(CliError::EmptySecret);
    }
    Ok(secret::hash(&secret)?)
}

fn read_line(input: &mut impl BufRead) -> Result<String, CliError> {
    let mut line = String::new();
    input.read_line(&mut line).map_err(CliError::ReadSecret)?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

/// Terminal echo off while it lives.
struct EchoOff(Option<libc::termios>);

impl EchoOff {
    fn new() -> Self {
        // SAFETY: tcgetattr/tcsetattr on stdin with a zeroed termios they fill in.
        unsafe {
            let mut saved: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(libc::STDIN_FILENO, &mut saved) != 0 {
                return Self(None);
            }
            let mut quiet = saved;
            quiet.c_lflag &= !libc::ECHO;
            libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &quiet);
            Self(Some(saved))
        }
    }
}

impl Drop for EchoOff {
    fn drop(&mut self) {
        if let Some(saved) = &self.0 {
            // SAFETY: restores the settings read in `new`.
            unsafe {
                libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, saved);
            }
        }
    }
}

/// What `sign-url` signs.
pub struct SignRequest<'a> {
    pub point: &'a str,
    pub expires_in: &'a str,
    pub ip: Option<IpAddr>,
    /// `http://host:port`, to print a whole URL rather than the query string.
    pub base_url: Option<&'a str>,
}

/// The signed query string (or URL) for `request`, with the key from `key_file` or else
/// the config file's `[security] url_signing_key`.
pub fn sign_url(
    request: &SignRequest<'_>,
    key_file: Option<&Path>,
    config: &Path,
) -> Result<String, CliError> {
    let key = match key_file {
        Some(path) => read(path)?.trim().to_owned(),
        None => signing_key_of(config)?,
    };
    if key.chars().count() < 16 {
        return Err(CliError::ShortKey);
    }
    let expires = unix_now() + parse_duration(request.expires_in)?.as_secs();
    let query = token::query(key.as_bytes(), request.point, expires, request.ip);
    Ok(match request.base_url {
        Some(base) => format!("{}/{}?{query}", base.trim_end_matches('/'), request.point),
        None => query,
    })
}

fn read(path: &Path) -> Result<String, CliError> {
    std::fs::read_to_string(path).map_err(|source| CliError::ReadKey {
        path: path.display().to_string(),
        source,
    })
}

fn signing_key_of(config: &Path) -> Result<String, CliError> {
    let text = read(config)?;
    let key = text.parse::<toml_edit::DocumentMut>().ok().and_then(|doc| {
        let key = doc.get("security")?.get("url_signing_key")?.as_str()?;
        Some(key.to_owned())
    });
    key.ok_or_else(|| CliError::NoKey {
        path: config.display().to_string(),
    })
}

/// `90s`, `30m`, `1h`, `2d`, or plain seconds.
pub fn parse_duration(text: &str) -> Result<Duration, CliError> {
    let bad = || CliError::Duration(text.to_owned());
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let number: u64 = number.parse().map_err(|_| bad())?;
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(bad()),
    };
    number
        .checked_mul(seconds)
        .map(Duration::from_secs)
        .ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_a_unit() {
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("30m").unwrap(), Duration::from_secs(1800));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_duration("2d").unwrap(), Duration::from_secs(172_800));
        assert!(parse_duration("1w").is_err() && parse_duration("h").is_err());
    }

    #[test]
    fn a_signed_url_verifies_with_the_configured_key() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("ferrocast.toml");
        std::fs::write(
            &config,
            "[security]\nurl_signing_key = \"0123456789abcdef\"\n",
        )
        .unwrap();
        let request = SignRequest {
            point: "live",
            expires_in: "1h",
            ip: None,
            base_url: Some("http://127.0.0.1:8080/"),
        };
        let url = sign_url(&request, None, &config).unwrap();
        let query = url.strip_prefix("http://127.0.0.1:8080/live?").unwrap();
        let peer = "192.0.2.1".parse().unwrap();
        token::verify(b"0123456789abcdef", "live", query, peer, unix_now()).unwrap();
        let missing = sign_url(&request, None, &dir.path().join("nope.toml"));
        assert!(matches!(missing, Err(CliError::ReadKey { .. })));
    }
}

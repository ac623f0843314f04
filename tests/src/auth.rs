//! Secrets as an operator stores them in the configuration: the hashes `ferrocast
//! hash-password` (publish keys and users) and `ferrocast hash-token` (admin tokens) print.

use std::io::Write;
use std::process::{Command, Stdio};

use crate::{ensure_built, ferrocast_binary};

/// `ferrocast hash-password` of `secret`: an argon2id PHC string, as an operator makes it.
pub fn hash_password(secret: &str) -> String {
    let phc = hash_with("hash-password", secret);
    assert!(phc.starts_with("$argon2id$"), "{phc}");
    phc
}

/// `ferrocast hash-token` of `token`, for the `tokens` of the `[admin]` table.
pub fn hash_token(token: &str) -> String {
    hash_with("hash-token", token)
}

/// What `ferrocast <command>` prints for `secret` given on its stdin.
fn hash_with(command: &str, secret: &str) -> String {
    ensure_built();
    let mut child = Command::new(ferrocast_binary())
        .arg(command)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("run ferrocast {command}: {e}"));
    writeln!(child.stdin.take().unwrap(), "{secret}").unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "ferrocast {command} failed");
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

//! The admin listener in tests: its `[admin]` table, requests to its API, and its Prometheus
//! `/metrics` scraped, read sample by sample and checked with `promtool`.

use std::io::Write;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::auth::hash_token;
use crate::{config_with, http_exchange, Response};

/// The `[admin]` table: the API on `admin`, accepting `tokens` (hashed here; none: no
/// `tokens` key, so loopback clients need none).
pub fn admin_table(admin: SocketAddr, tokens: &[&str]) -> String {
    let mut table = format!("[admin]\nlisten = \"{admin}\"\n");
    if !tokens.is_empty() {
        let hashes: Vec<String> = tokens
            .iter()
            .map(|token| format!("\"{}\"", hash_token(token)))
            .collect();
        table.push_str(&format!("tokens = [{}]\n", hashes.join(", ")));
    }
    table
}

/// [`config_with`] (HTTP on `http`, the points given as TOML) with the admin API on `admin`
/// accepting `tokens`.
pub fn config_with_admin(
    http: SocketAddr,
    admin: SocketAddr,
    tokens: &[&str],
    points: &str,
) -> String {
    format!(
        "{}\n{}",
        admin_table(admin, tokens),
        config_with(http, points)
    )
}

/// `method path` on the admin API at `address`, with `token` as its bearer token (if any) and
/// `body` as JSON.
pub fn admin_request(
    address: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> Response {
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    http_exchange(
        address,
        request.as_bytes(),
        1 << 20,
        Duration::from_secs(30),
    )
    .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

/// The exposition `GET /metrics` answers on the admin API at `address` (with `token`, if
/// any); fails the test unless it answers 200.
pub fn scrape_metrics(address: SocketAddr, token: Option<&str>) -> String {
    let response = admin_request(address, "GET", "/metrics", token, "");
    assert_eq!(response.status, 200, "{}", response.body_text());
    response.body_text()
}

/// The value of the sample `series` (name and labels, as exposed) in an exposition, if
/// present.
pub fn metric_sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// `promtool check metrics` on an exposition: its findings, empty when clean.
pub fn promtool_findings(text: &str) -> String {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool (Debian package prometheus; .ci/run installs it)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let findings = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    if output.status.success() {
        findings.trim().to_owned()
    } else {
        format!("promtool failed: {findings}")
    }
}

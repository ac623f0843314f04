//! Squatting on a protected point: an intruder without the key cannot take it (not before the
//! encoder starts, not while it publishes), and the owner reclaims it from its own stale
//! connection within the grace. A real player keeps decoding throughout.

use std::time::{Duration, Instant};

use ferrocast_tests::auth::hash_password;
use ferrocast_tests::*;

const KEY: &str = "the-owners-stream-key";

/// A point `live` that takes pushes with `KEY` only; a silent encoder is timed out late, so
/// that a stale connection holds the point unless the owner takes it over.
fn start() -> (Ferrocast, TempDir) {
    let points = format!(
        "{}reconnect_grace_ms = 10000\nsource_timeout_ms = 30000\npublish = {{ keys = [\"{}\"] }}\n",
        point_toml("live", "broadcast", "push", &["http"]),
        hash_password(KEY)
    );
    start_with_points(&points)
}

/// A PUT of a second of TS from the intruder; the answer's status.
fn intrude(server: &Ferrocast, target: &str, headers: &str) -> u16 {
    let body = std::fs::read(sample_ts()).unwrap();
    let body = &body[..188 * 500];
    let mut request = format!(
        "PUT {target} HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n{headers}\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    http_exchange(server.http, &request, 4096, Duration::from_secs(10))
        .expect("PUT")
        .status
}

fn keyed(server: &Ferrocast) -> String {
    server.url(&format!("live?key={KEY}"))
}

#[test]
fn an_intruder_without_the_key_cannot_take_a_protected_point() {
    let (server, _plugins) = start();
    // Before the encoder starts, the free point is not for the taking.
    assert_eq!(intrude(&server, "/live", ""), 401);
    let (_owner, reader) = push_and_play(&server, &keyed(&server));
    let attacks_started = Instant::now();
    assert_eq!(intrude(&server, "/live", ""), 401);
    assert_eq!(intrude(&server, "/live?key=guess", ""), 401);
    assert_eq!(
        intrude(&server, "/live", "Authorization: Bearer guess\r\n"),
        401
    );
    // Even with the key, a publishing encoder is not displaced while it delivers media.
    assert_eq!(intrude(&server, &format!("/live?key={KEY}"), ""), 409);
    std::thread::sleep(Duration::from_secs(2));

    let gap = reader.longest_gap_since(attacks_started);
    assert!(gap < Duration::from_secs(1), "the player waited {gap:?}");
    assert_eq!(reader.continuity_errors(), Vec::<String>::new());
    assert_decodes(server.dir.path(), &reader.body(), 75);
    server.wait_for_count("PUBLISH_REFUSED", 4, Duration::from_secs(5));
    assert!(!server.logs().contains(KEY), "the key is never logged");
}

#[test]
fn the_owner_reclaims_the_point_from_its_stale_connection_within_the_grace() {
    let (server, _plugins) = start();
    let (stale, reader) = push_and_play(&server, &keyed(&server));
    // The old encoder hangs: connected, silent, far from its source timeout.
    stale.signal("STOP");
    std::thread::sleep(Duration::from_millis(1500));
    // Without the key, nobody takes over the silent point.
    assert_eq!(intrude(&server, "/live", ""), 401);
    let restarted = Instant::now();
    let _owner = Encoder::push(&keyed(&server), 60);
    server.wait_for("took the point over", Duration::from_secs(10));
    let resumed = reader
        .wait_media_after(restarted, Duration::from_secs(5))
        .expect("media from the owner's new connection");
    std::thread::sleep(Duration::from_secs(3));

    assert!(reader.ended_at().is_none(), "the player stays attached");
    let gap = reader.longest_gap_since(resumed);
    assert!(
        gap < Duration::from_secs(1),
        "after the takeover the player waited {gap:?}"
    );
    // While the old encoder was frozen, keep-alive packets kept the player's connection busy.
    let stalled_gap = reader.longest_gap_since(reader.started + Duration::from_millis(500));
    assert!(
        stalled_gap < Duration::from_secs(2),
        "the player waited {stalled_gap:?}"
    );
    assert_decodes(server.dir.path(), &reader.body(), 100);
    stale.signal("CONT");
}

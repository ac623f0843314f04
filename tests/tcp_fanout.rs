//! The TCP fan-out of a live point, with the real server, ffmpeg pushing and ffmpeg playing:
//! caught-up HTTP listeners share the point's writer and decode cleanly, are still counted as
//! the point's clients, and go back to their own tasks when the source goes away; with
//! `FERROCAST_TCP_FANOUT=off` every listener writes its own chunks and plays as well.

use std::time::Duration;

use ferrocast_tests::*;

const LISTENERS: usize = 6;

/// Decode the live point with `LISTENERS` players at once, `seconds` each; all must be clean.
fn play_together(server: &Ferrocast, seconds: f64) {
    let players: Vec<_> = (0..LISTENERS)
        .map(|_| {
            let url = server.url("live");
            std::thread::spawn(move || decode(&url, &[], Some(seconds)))
        })
        .collect();
    for (listener, player) in players.into_iter().enumerate() {
        let decoded = player.join().unwrap();
        decoded.assert_clean((seconds * 20.0) as u64, &format!("listener {listener}"));
    }
}

#[test]
fn caught_up_listeners_share_the_points_writer_and_decode_cleanly() {
    let (server, _plugins) = start_with_points(&standard_points());
    let _encoder = Encoder::push_live(&server, 40);
    wait_until_live(server.http, "/live", Duration::from_secs(15));
    play_together(&server, 6.0);
    server.wait_for("TCP fan-out started", Duration::from_secs(5));
}

#[test]
fn listeners_on_the_fanout_are_counted_and_held_when_the_encoder_goes() {
    let (server, _plugins) = start_with_points(&standard_points());
    let mut encoder = Encoder::push_live(&server, 6);
    wait_until_live(server.http, "/live", Duration::from_secs(15));
    let players: Vec<_> = (0..LISTENERS)
        .map(|_| {
            let url = server.url("live");
            // Longer than the encoder pushes: the players are still attached when it ends.
            std::thread::spawn(move || decode(&url, &[], Some(20.0)))
        })
        .collect();
    server.wait_for("TCP fan-out started", Duration::from_secs(10));
    encoder.wait(Duration::from_secs(30));
    server.wait_for("SOURCE_LOST", Duration::from_secs(10));
    let lost = server.event_lines("SOURCE_LOST");
    assert_eq!(
        log_field(&lost[0], "clients"),
        Some(LISTENERS.to_string().as_str()),
        "every listener counted: {lost:?}"
    );
    // Held through the grace on keep-alives by their own tasks; a second encoder brings the
    // media back to all of them, and they hand over to the fan-out again.
    let _second = Encoder::push_live(&server, 30);
    for (listener, player) in players.into_iter().enumerate() {
        let decoded = player.join().unwrap();
        decoded.assert_clean(150, &format!("listener {listener}"));
    }
    let started = server.event_lines("PUSH_START").len();
    assert_eq!(started, 2, "two encoders in turn");
}

#[test]
fn with_the_fanout_off_every_listener_writes_its_own_chunks() {
    let plugins = standard_plugin_dir();
    let address = loopback();
    let server = Ferrocast::start_with_env(
        &config_with(address, &standard_points()),
        plugins.path(),
        address,
        &[("FERROCAST_TCP_FANOUT", "off")],
    );
    let _encoder = Encoder::push_live(&server, 40);
    wait_until_live(server.http, "/live", Duration::from_secs(15));
    play_together(&server, 5.0);
    let logs = server.logs();
    assert!(logs.contains("TCP fan-out turned off"), "{logs}");
    assert!(!logs.contains("TCP fan-out started"), "{logs}");
}

//! Encoder loss on a push point, with real ffmpeg encoders and players: clients stay attached
//! through a dropped or stalled encoder, are kept busy with null packets, resume on the next
//! encoder's first keyframe and decode without errors; when the grace runs out they get a
//! clean end of stream close to the deadline.

use std::time::{Duration, Instant};

use ferrocast_tests::rtsp_rig::{standard_points_over, RtspRig};
use ferrocast_tests::*;

fn server(grace_ms: u64, source_timeout_ms: u64) -> (Ferrocast, TempDir) {
    let plugins = standard_plugin_dir();
    let address = loopback();
    let points = standard_points().replace(
        "source = \"push\"\n",
        &format!("source = \"push\"\nreconnect_grace_ms = {grace_ms}\nsource_timeout_ms = {source_timeout_ms}\n"),
    );
    let server = Ferrocast::start(&config_with(address, &points), plugins.path(), address);
    (server, plugins)
}

#[test]
fn a_restarted_encoder_resumes_attached_clients() {
    let (server, _plugins) = server(10_000, 10_000);
    let (first, reader) = push_and_play(&server, &server.url("live"));

    first.signal("KILL");
    server.wait_for("SOURCE_LOST", Duration::from_secs(5));
    std::thread::sleep(Duration::from_secs(2));
    let restarted = Instant::now();
    let _second = Encoder::push(&server.url("live"), 60);
    server.wait_for("SOURCE_RESUMED", Duration::from_secs(10));
    std::thread::sleep(Duration::from_secs(3));

    assert!(reader.ended_at().is_none(), "the client must stay attached");
    // Null packets kept the connection busy while the encoder was away.
    let gap = reader.longest_gap_since(reader.started + Duration::from_millis(500));
    assert!(
        gap < Duration::from_millis(1500),
        "client saw {gap:?} of silence"
    );
    let resumed = reader
        .first_media_after(restarted)
        .expect("media after the restart");
    // ffmpeg needs a moment to start and encode; the server adds no wait of its own.
    assert!(
        resumed - restarted < Duration::from_secs(5),
        "resumed after {:?}",
        resumed - restarted
    );
    // Both encoders' pictures decode cleanly, across the switch.
    assert_decodes(server.dir.path(), &reader.body(), 100);
    let logs = server.logs();
    assert!(logs.contains("reconnects=1"), "{logs}");
}

#[test]
fn a_stalled_encoder_is_timed_out_and_a_new_one_takes_over() {
    let (server, _plugins) = server(10_000, 1_000);
    let (stalled, reader) = push_and_play(&server, &server.url("live"));

    // No data and no close: the encoder process is frozen.
    stalled.signal("STOP");
    server.wait_for(
        "no data from the encoder for 1000 ms",
        Duration::from_secs(5),
    );
    // The point is free for a new encoder at once (no 409 against the frozen one).
    let _second = Encoder::push(&server.url("live"), 60);
    server.wait_for("SOURCE_RESUMED", Duration::from_secs(10));
    std::thread::sleep(Duration::from_secs(3));
    stalled.signal("CONT");

    assert!(reader.ended_at().is_none(), "the client must stay attached");
    assert_decodes(server.dir.path(), &reader.body(), 100);
}

#[test]
fn an_expired_grace_ends_clients_cleanly_near_the_deadline() {
    let grace = Duration::from_millis(1500);
    let (server, _plugins) = server(grace.as_millis() as u64, 10_000);
    let (encoder, reader) = push_and_play(&server, &server.url("live"));

    let killed = Instant::now();
    encoder.signal("KILL");
    assert!(
        reader.wait_end(Duration::from_secs(10)),
        "the stream must end"
    );
    let ended = reader.ended_at().expect("the stream ended");
    let after = ended - killed;
    assert!(
        after >= grace - Duration::from_millis(100),
        "ended too early: {after:?}"
    );
    assert!(
        after <= grace + Duration::from_secs(1),
        "ended {after:?} after the encoder died"
    );
    server.wait_for("SOURCE_GAVE_UP", Duration::from_secs(2));
    assert_decodes(server.dir.path(), &reader.body(), 25);

    // The point can be published to again, and new clients are told plainly until then.
    assert_eq!(http_get(server.http, "/live", 4096).status, 503);
}

#[test]
fn rtsp_sessions_continue_their_rtp_stream_across_an_encoder_restart() {
    let points = standard_points_over(&["rtsp", "tcp"]).replace(
        "source = \"push\"\n",
        "source = \"push\"\nreconnect_grace_ms = 10000\n",
    );
    let RtspRig {
        server,
        rtsp,
        plugins: _plugins,
    } = RtspRig::start(&["tcp"], &points);
    let first = Encoder::push_live(&server, 60);

    let mut client = RtspClient::connect(rtsp);
    let url = format!("rtsp://{rtsp}/live");
    client.setup_and_play(&url, None);
    client.receive_for(Duration::from_secs(2));
    first.signal("KILL");
    server.wait_for("SOURCE_LOST", Duration::from_secs(5));
    client.receive_for(Duration::from_secs(1));
    let _second = Encoder::push(&server.url("live"), 60);
    server.wait_for("SOURCE_RESUMED", Duration::from_secs(10));
    client.receive_for(Duration::from_secs(3));

    // One RTP stream from start to end: consecutive sequence numbers, timestamps that never
    // go back, and RTCP sender reports throughout.
    assert!(client.rtp.len() > 200, "{} packets", client.rtp.len());
    for pair in client.rtp.windows(2) {
        assert_eq!(pair[1].0, pair[0].0.wrapping_add(1), "sequence jumped");
        let step = pair[1].1.wrapping_sub(pair[0].1);
        assert!(step < 90_000 * 3, "timestamp went back or jumped by {step}");
    }
    assert!(client.other_frames >= 1, "RTCP sender reports kept flowing");
    // The media before and after the restart decodes as one stream (the capture is cut at
    // the end, so decode all but its last second).
    let file = server.dir.path().join("rtsp-restart.ts");
    std::fs::write(&file, client.transport_stream()).unwrap();
    let decoded = decode(&file.display().to_string(), &[], Some(4.0));
    decoded.assert_clean(50, "the player");
}

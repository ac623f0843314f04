//! Network faults between a pushing encoder and the server, injected by a [`FaultProxy`]:
//! ffmpeg pushes through the proxy, a raw client plays `/live` straight from the server. A
//! connection reset mid-stream and a path that goes silent without closing must both end in
//! SOURCE_LOST, hold the client (kept busy with null packets), and hand over to the next
//! encoder with a clean decode across the switch.
//!
//! Unlike source_resilience.rs (which kills or freezes the ffmpeg process), here ffmpeg itself
//! is healthy: only the path breaks, so the server sees exactly what a real network shows it.

use std::time::{Duration, Instant};

use ferrocast_tests::proxy::FaultProxy;
use ferrocast_tests::*;

/// The point's source timeout: a silent encoder is dropped after this.
const SOURCE_TIMEOUT: Duration = Duration::from_millis(1000);
/// How often the server sends a null packet to held clients (points.rs `KEEPALIVE_INTERVAL`).
const KEEPALIVE: Duration = Duration::from_millis(500);

fn server() -> (Ferrocast, TempDir) {
    let plugins = standard_plugin_dir();
    let address = loopback();
    let points = standard_points().replace(
        "source = \"push\"\n",
        &format!(
            "source = \"push\"\nreconnect_grace_ms = 10000\nsource_timeout_ms = {}\n",
            SOURCE_TIMEOUT.as_millis()
        ),
    );
    let server = Ferrocast::start(&config_with(address, &points), plugins.path(), address);
    (server, plugins)
}

fn push_url(proxy: &FaultProxy) -> String {
    format!("http://{}/live", proxy.address())
}

/// Hold the point without a source for a while and check what the client got meanwhile: only
/// null packets (the keep-alive), at least `min_packets` of them.
fn assert_kept_busy_with_null_packets(reader: &TsReader, hold: Duration, min_packets: usize) {
    const PACKET: usize = 188;
    // Let media already on its way arrive, then look only at what comes after.
    std::thread::sleep(Duration::from_millis(100));
    let from = reader.body().len().div_ceil(PACKET) * PACKET;
    std::thread::sleep(hold);
    let body = reader.body();
    let to = body.len() / PACKET * PACKET;
    let packets: Vec<&[u8]> = body[from.min(to)..to].chunks_exact(PACKET).collect();
    assert!(
        packets.len() >= min_packets,
        "{} packets in {hold:?} without a source",
        packets.len()
    );
    for packet in packets {
        let pid = (u16::from(packet[1] & 0x1f) << 8) | u16::from(packet[2]);
        assert!(
            packet[0] == 0x47 && pid == 0x1fff,
            "not a null packet while the source is lost: {:02x?}",
            &packet[..4]
        );
    }
}

fn count(logs: &str, needle: &str) -> usize {
    logs.matches(needle).count()
}

/// What every fault must leave behind once the next encoder has taken over: the client is
/// still attached, was never silent for longer than `max_gap`, got media from the new encoder
/// soon after it started, and everything it received decodes cleanly across the switch.
fn assert_client_survived(
    server: &Ferrocast,
    reader: &TsReader,
    restarted: Instant,
    max_gap: Duration,
) {
    assert!(reader.ended_at().is_none(), "the client must stay attached");
    let gap = reader.longest_gap_since(reader.started + Duration::from_millis(500));
    assert!(gap < max_gap, "client saw {gap:?} of silence");
    let resumed = reader
        .first_media_after(restarted)
        .expect("media after the restart");
    // Measured values, for the output of a failing (or --nocapture) run.
    eprintln!(
        "longest silence {gap:?}; media {:?} after the new encoder started",
        resumed - restarted
    );
    // ffmpeg needs a moment to start and encode; the server adds no wait of its own.
    assert!(
        resumed - restarted < Duration::from_secs(5),
        "resumed after {:?}",
        resumed - restarted
    );
    // Both encoders' pictures: about 2 s before the fault and 3 s after, at 25 fps.
    assert_decodes(server.dir.path(), &reader.body(), 100);
}

#[test]
fn a_reset_connection_is_lost_at_once_and_a_new_encoder_resumes_clients() {
    let (server, _plugins) = server();
    let proxy = FaultProxy::start(server.http);
    let (mut first, reader) = push_and_play(&server, &push_url(&proxy));

    let cut = Instant::now();
    proxy.cut();
    server.wait_for("SOURCE_LOST", Duration::from_secs(5));
    // A reset is a disconnect, noticed at once; not a silence waited out.
    let noticed = cut.elapsed();
    eprintln!("SOURCE_LOST logged {noticed:?} after the reset");
    assert!(
        noticed < SOURCE_TIMEOUT,
        "SOURCE_LOST only {noticed:?} after the reset"
    );
    let logs = server.logs();
    assert!(logs.contains("the encoder disconnected"), "{logs}");
    assert!(!logs.contains("no data from the encoder"), "{logs}");

    // ffmpeg gives up on its broken connection by itself.
    let status = first
        .wait(Duration::from_secs(10))
        .expect("ffmpeg must exit when its connection is reset");
    assert!(!status.success(), "ffmpeg reported success: {status:?}");
    // Three keep-alive intervals without a source.
    assert_kept_busy_with_null_packets(&reader, 3 * KEEPALIVE, 2);

    let restarted = Instant::now();
    let _second = Encoder::push(&push_url(&proxy), 60);
    server.wait_for("SOURCE_RESUMED", Duration::from_secs(10));
    std::thread::sleep(Duration::from_secs(3));

    // The reset was seen at once, so the longest silence is one keep-alive interval.
    assert_client_survived(&server, &reader, restarted, Duration::from_millis(1500));
    assert_eq!(proxy.connections(), 2, "one connection per encoder");
    let logs = server.logs();
    assert_eq!(count(&logs, "SOURCE_LOST"), 1, "{logs}");
    assert!(logs.contains("reconnects=1"), "{logs}");
}

#[test]
fn a_stalled_path_is_timed_out_and_a_new_encoder_resumes_clients() {
    let (server, _plugins) = server();
    let stalled_path = FaultProxy::start(server.http);
    let (mut stalled, reader) = push_and_play(&server, &push_url(&stalled_path));

    // Nothing arrives and nothing closes: only the source timeout can tell.
    let stall = Instant::now();
    stalled_path.stall();
    server.wait_for(
        "no data from the encoder for 1000 ms",
        Duration::from_secs(5),
    );
    let noticed = stall.elapsed();
    eprintln!("SOURCE_LOST logged {noticed:?} after the stall");
    // The timeout runs from the last byte that got through (plus log polling); that byte may
    // predate the stall by one of ffmpeg's write bursts, so the lower bound is loose.
    assert!(
        noticed > SOURCE_TIMEOUT / 2 && noticed < SOURCE_TIMEOUT + Duration::from_millis(700),
        "SOURCE_LOST {noticed:?} after the stall"
    );
    assert!(server.logs().contains("SOURCE_LOST"), "{}", server.logs());
    assert_kept_busy_with_null_packets(&reader, 3 * KEEPALIVE, 2);

    // The point is free for a new encoder at once, on a healthy path.
    let healthy_path = FaultProxy::start(server.http);
    let restarted = Instant::now();
    let _second = Encoder::push(&push_url(&healthy_path), 60);
    server.wait_for("SOURCE_RESUMED", Duration::from_secs(10));
    std::thread::sleep(Duration::from_secs(3));

    // A silent encoder's clients get null packets once it has sent nothing for a second
    // (checked every keep-alive interval), well before the source timeout declares it lost.
    let max_gap = Duration::from_secs(1) + KEEPALIVE + Duration::from_millis(400);
    assert_client_survived(&server, &reader, restarted, max_gap);

    // Release the stalled path: the held bytes now meet a connection the server has closed,
    // the old encoder fails and exits, and the new encoder's stream is not disturbed.
    stalled_path.resume();
    let status = stalled
        .wait(Duration::from_secs(10))
        .expect("the stalled encoder must exit once its path is released");
    assert!(!status.success(), "ffmpeg reported success: {status:?}");
    let before = reader.bytes();
    std::thread::sleep(Duration::from_secs(1));
    assert!(reader.bytes() > before, "the stream stopped");
    assert!(reader.ended_at().is_none(), "the client must stay attached");
    let logs = server.logs();
    assert_eq!(count(&logs, "SOURCE_LOST"), 1, "{logs}");
    assert_eq!(count(&logs, "SOURCE_RESUMED"), 1, "{logs}");
    assert_eq!(stalled_path.connections(), 1);
    assert_eq!(healthy_path.connections(), 1);
}

//! Pull sources with real servers and players: an edge ferrocast pulls a point from an origin
//! ferrocast over HTTP and keeps its clients through an origin restart; pulls over raw TCP and
//! from a multicast group; on-demand pulls that start with the first client and stop after the
//! last; and reconnect backoff while the origin is down.

use std::time::{Duration, Instant};

use ferrocast_tests::*;

/// An origin with a push point `live`, served over HTTP, raw TCP (`tcp`) and a UDP
/// multicast push (`multicast`, if given).
fn origin(
    http: std::net::SocketAddr,
    tcp: std::net::SocketAddr,
    multicast: Option<u16>,
) -> (Ferrocast, TempDir) {
    let plugins = all_plugins_dir();
    let points = standard_points().replace(
        "protocols = [\"http\"]",
        "protocols = [\"http\", \"tcp\", \"udp\"]",
    );
    let mut config = format!(
        "{}\n[plugins.tcp]\nlisten = [\"{tcp}\"]\nserve = {{ \"{}\" = \"live\" }}\n",
        config_with(http, &points),
        tcp.port()
    );
    if let Some(port) = multicast {
        config.push_str(&format!(
            "\n[plugins.udp]\npush = [{{ point = \"live\", destination = \"239.255.43.1:{port}\", interface = \"127.0.0.1\" }}]\n"
        ));
    }
    (Ferrocast::start(&config, plugins.path(), http), plugins)
}

/// An edge whose point `relay` pulls from `source`, with `extra` point keys.
fn edge(source: &str, extra: &str) -> (Ferrocast, TempDir) {
    let plugins = standard_plugin_dir();
    let http = loopback();
    let points = format!(
        "[[point]]\nname = \"relay\"\nkind = \"broadcast\"\nsource = \"{source}\"\nprotocols = [\"http\"]\nreconnect_min_ms = 200\nreconnect_max_ms = 2000\nsource_timeout_ms = 2000\n{extra}"
    );
    (
        Ferrocast::start(&config_with(http, &points), plugins.path(), http),
        plugins,
    )
}

#[test]
fn an_edge_relays_an_origin_and_keeps_clients_through_an_origin_restart() {
    let (origin_http, origin_tcp) = (loopback(), loopback());
    let (first_origin, _origin_plugins) = origin(origin_http, origin_tcp, None);
    let encoder = Encoder::push_live(&first_origin, 60);
    let (edge, _edge_plugins) = edge(
        &format!("http://{origin_http}/live"),
        "reconnect_grace_ms = 20000\n",
    );
    edge.wait_for("PULL_CONNECTED", Duration::from_secs(10));
    wait_until_live(edge.http, "/relay", Duration::from_secs(10));

    let live = decode(&edge.url("relay"), &[], Some(3.0));
    live.assert_clean(60, "live");

    let reader = TsReader::http(edge.http, "/relay");
    std::thread::sleep(Duration::from_secs(2));
    // The origin goes down and comes back on the same address, with a new encoder.
    drop(encoder);
    drop(first_origin);
    edge.wait_for("SOURCE_LOST", Duration::from_secs(10));
    std::thread::sleep(Duration::from_secs(1));
    let (second_origin, _second_plugins) = origin(origin_http, origin_tcp, None);
    let restarted = Instant::now();
    let _encoder = Encoder::push(&second_origin.url("live"), 60);
    edge.wait_for("SOURCE_RESUMED", Duration::from_secs(15));
    std::thread::sleep(Duration::from_secs(3));

    assert!(
        reader.ended_at().is_none(),
        "the edge client must stay attached"
    );
    assert!(
        reader.first_media_after(restarted).is_some(),
        "media after the origin restart"
    );
    let gap = reader.longest_gap_since(reader.started + Duration::from_millis(500));
    assert!(
        gap < Duration::from_millis(1500),
        "edge client saw {gap:?} of silence"
    );
    assert_decodes(edge.dir.path(), &reader.body(), 100);
    assert!(
        edge.logs().contains("PULL_FAILED"),
        "the edge retried while the origin was down"
    );
}

#[test]
fn pulls_over_raw_tcp_and_from_a_multicast_group() {
    let (origin_http, origin_tcp) = (loopback(), loopback());
    let port = free_port();
    let (origin, _plugins) = origin(origin_http, origin_tcp, Some(port));
    let _encoder = Encoder::push_live(&origin, 40);

    let (tcp_edge, _a) = edge(&format!("tcp://{origin_tcp}"), "");
    wait_until_live(tcp_edge.http, "/relay", Duration::from_secs(10));
    let over_tcp = decode(&tcp_edge.url("relay"), &[], Some(3.0));
    over_tcp.assert_clean(60, "over TCP");

    let (udp_edge, _b) = edge(
        &format!("udp://239.255.43.1:{port}?localaddr=127.0.0.1"),
        "",
    );
    wait_until_live(udp_edge.http, "/relay", Duration::from_secs(10));
    let over_udp = decode(&udp_edge.url("relay"), &[], Some(3.0));
    over_udp.assert_clean(60, "over UDP");
}

#[test]
fn an_on_demand_pull_starts_with_the_first_client_and_stops_after_the_last() {
    let (origin_http, origin_tcp) = (loopback(), loopback());
    let (origin, _plugins) = origin(origin_http, origin_tcp, None);
    let _encoder = Encoder::push_live(&origin, 40);
    let (edge, _edge_plugins) = edge(
        &format!("http://{origin_http}/live"),
        "pull = \"on-demand\"\npull_idle_timeout_ms = 1000\n",
    );
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        !edge.logs().contains("PULL_CONNECTED"),
        "nobody watches yet: no pull"
    );

    // The first client is held while the pull connects, and gets a clean stream.
    let decoded = decode(&edge.url("relay"), &[], Some(2.0));
    decoded.assert_clean(40, "the player");
    assert!(edge.logs().contains("PULL_CONNECTED"));
    edge.wait_for("PULL_STOPPED", Duration::from_secs(5));
}

#[test]
fn a_pull_retries_with_growing_backoff_while_the_origin_is_down() {
    let nowhere = loopback();
    let (edge, _plugins) = edge(&format!("http://{nowhere}/live"), "");
    std::thread::sleep(Duration::from_secs(3));
    let logs = edge.logs();
    let waits: Vec<u64> = logs
        .lines()
        .filter(|l| l.contains("reconnecting"))
        .filter_map(|l| {
            l.split("retry_in_ms=")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .collect();
    assert!(waits.len() >= 3, "retries: {waits:?}\n{logs}");
    assert!(waits[2] > waits[0], "backoff grows: {waits:?}");
    assert!(
        waits.iter().all(|&w| w <= 2400),
        "capped near 2 s (+20 % jitter): {waits:?}"
    );
    assert!(
        logs.contains("PULL_FAILED") && logs.contains(&nowhere.to_string()),
        "{logs}"
    );
    // Clients are told plainly that there is no source, rather than left waiting.
    assert_eq!(http_get(edge.http, "/relay", 4096).status, 503);

    // The operator can ask for the point's state, source and last error.
    edge.signal("USR1");
    edge.wait_for("POINT_STATUS", Duration::from_secs(5));
    let logs = edge.logs();
    let status = logs
        .lines()
        .find(|l| l.contains("POINT_STATUS") && l.contains("point=relay"))
        .unwrap();
    for part in [
        "state=\"waiting\"",
        "source=pull http://",
        "last_error=\"cannot connect to",
        "reconnects=0",
    ] {
        assert!(status.contains(part), "{part} missing from {status}");
    }
}

/// Origin → proxy → edge → client: the proxy breaks the origin-edge path; the edge client
/// stays attached, resumes within the bound, and everything it got decodes.
fn relay_through_fault(
    max_silence: Duration,
    fault: impl FnOnce(&ferrocast_tests::proxy::FaultProxy),
) -> (Ferrocast, TsReader) {
    use ferrocast_tests::proxy::FaultProxy;
    let (origin_http, origin_tcp) = (loopback(), loopback());
    let (origin, _origin_plugins) = origin(origin_http, origin_tcp, None);
    let _encoder = Encoder::push_live(&origin, 60);
    let proxy = FaultProxy::start(origin_http);
    let (edge, edge_plugins) = edge(
        &format!("http://{}/live", proxy.address()),
        "reconnect_grace_ms = 20000\n",
    );
    wait_until_live(edge.http, "/relay", Duration::from_secs(10));
    let reader = TsReader::http(edge.http, "/relay");
    std::thread::sleep(Duration::from_secs(2));

    let faulted = Instant::now();
    fault(&proxy);
    edge.wait_for("SOURCE_LOST", Duration::from_secs(10));
    edge.wait_for("SOURCE_RESUMED", Duration::from_secs(15));
    std::thread::sleep(Duration::from_secs(3));

    assert!(
        reader.ended_at().is_none(),
        "the edge client must stay attached"
    );
    let resumed = reader.first_media_after(faulted + Duration::from_secs(1));
    assert!(resumed.is_some(), "media after the fault");
    let gap = reader.longest_gap_since(reader.started + Duration::from_millis(500));
    assert!(gap < max_silence, "edge client saw {gap:?} of silence");
    assert_decodes(edge.dir.path(), &reader.body(), 100);
    drop(edge_plugins);
    (edge, reader)
}

#[test]
fn an_edge_recovers_when_the_origin_link_is_cut() {
    // A cut is noticed at once; null packets cover the reconnect.
    let (edge, _reader) = relay_through_fault(Duration::from_millis(1500), |proxy| proxy.cut());
    assert!(
        edge.logs().contains("the source closed the connection")
            || edge.logs().contains("reading failed")
    );
}

#[test]
fn an_edge_recovers_when_the_origin_link_stalls() {
    // No data and no close: the edge's source timeout (2 s here) ends the stalled pull, and
    // the reconnect goes through once the path works again. Clients get null packets once
    // the source has been silent for a second.
    let (edge, _reader) = relay_through_fault(Duration::from_millis(2000), |proxy| {
        proxy.stall();
        std::thread::sleep(Duration::from_millis(2500));
        proxy.resume();
    });
    assert!(
        edge.logs().contains("no data from the source for 2000 ms"),
        "{}",
        edge.logs()
    );
}

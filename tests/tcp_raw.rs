//! The TCP transport plugin's raw MPEG-TS ports, with real players: a live point (joining at a
//! keyframe) and an on-demand file, each on a port of its own; a point that does not list
//! `tcp` in its protocols is refused.

use std::io::Read;
use std::net::TcpStream;
use std::time::Duration;

use ferrocast_tests::*;

#[test]
fn raw_tcp_ports_serve_live_and_on_demand_points() {
    let plugins = shipped_plugins_dir(&["http", "tcp"]);
    let http = loopback();
    let (live_port, vod_port, closed_port) = (loopback(), loopback(), loopback());
    let points = standard_points()
        .replace("protocols = [\"http\"]", "protocols = [\"http\", \"tcp\"]")
        + "\n"
        + &point_toml("http-only", "broadcast", "push", &["http"]);
    let config = format!(
        "{}\n[plugins.tcp]\nlisten = [\"{live_port}\", \"{vod_port}\", \"{closed_port}\"]\nserve = {{ \"{}\" = \"live\", \"{}\" = \"vod\", \"{}\" = \"http-only\" }}\n",
        config_with(http, &points),
        live_port.port(),
        vod_port.port(),
        closed_port.port()
    );
    let server = Ferrocast::start(&config, plugins.path(), http);
    server.wait_for(
        &format!("tcp        listening on {closed_port}"),
        Duration::from_secs(10),
    );

    let vod = decode(&format!("tcp://{vod_port}"), &[], None);
    assert!(vod.errors.trim().is_empty(), "{}", vod.errors);
    assert_eq!(vod.video_frames, 300);

    let _encoder = Encoder::push_live(&server, 30);
    std::thread::sleep(Duration::from_millis(1500));
    let (frames, errors) = first_frames(&format!("tcp://{live_port}"), 5);
    assert!(errors.trim().is_empty(), "{errors}");
    assert_eq!(frames.first(), Some(&(true, "I".to_owned())), "{frames:?}");
    let live = decode(&format!("tcp://{live_port}"), &[], Some(3.0));
    live.assert_clean(60, "live");

    // The point does not allow tcp: the connection is closed without media.
    let mut refused = TcpStream::connect(closed_port).unwrap();
    refused
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut data = Vec::new();
    refused.read_to_end(&mut data).unwrap();
    assert!(data.is_empty());
    server.wait_for(
        "TCP is not enabled on publishing point `http-only`",
        Duration::from_secs(5),
    );
}

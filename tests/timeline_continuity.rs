//! One output timeline across an encoder restart and an edge's origin restart: players that
//! ignore the discontinuity indicator (ffmpeg over RTSP with TCP and UDP transports, HTTP, raw
//! TCP) see PTS/DTS keep increasing and decode without errors, GStreamer's `rtspsrc` plays
//! across it, and an HTTP capture's DTS runs on in step with the wall clock. With
//! `timeline = "source"` the encoder's own timestamps go out, restarting.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use ferrocast_tests::*;

/// Log lines of a player that mean it saw something wrong.
const TROUBLE: &[&str] = &[
    "non monotonic",
    "error",
    "concealing",
    "corrupt",
    "invalid",
    "missed",
];

/// An ffmpeg player that copies what it receives to a file and decodes its video, logging at
/// warning level (where timestamp complaints appear). Killed on drop.
struct Player {
    name: &'static str,
    child: Child,
    log: Captured,
}

impl Player {
    fn start(name: &'static str, input_options: &[&str], input: &str, dir: &Path) -> Self {
        let copy: PathBuf = dir.join(format!("{name}.ts"));
        let mut child = Command::new("ffmpeg")
            .args(["-hide_banner", "-nostdin", "-loglevel", "warning"])
            .args(input_options)
            .args(["-i", input])
            .args(["-map", "0", "-c", "copy", "-f", "mpegts"])
            .arg(&copy)
            // The decoded frames keep the stream's 90 kHz timestamps: ffmpeg's default time
            // base of one frame can round two frames of a live join onto one tick, which its
            // muxer reports as non-monotonic although the stream's DTS are evenly spaced.
            .args(["-map", "0:v:0", "-enc_time_base:v", "-1", "-f", "null", "-"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start ffmpeg");
        let log = Captured::default();
        log.attach(child.stderr.take().unwrap());
        Self { name, child, log }
    }

    /// GStreamer's `rtspsrc` over interleaved TCP, decoding the video into a sink that prints
    /// every frame's timestamps.
    fn gstreamer(name: &'static str, url: &str) -> Self {
        let mut child = Command::new("gst-launch-1.0")
            .args(["-v", "rtspsrc", &format!("location={url}"), "protocols=tcp"])
            .args(["!", "rtpmp2tdepay", "!", "tsdemux", "!", "h264parse", "!"])
            .args(["avdec_h264", "!", "fakesink", "sync=false", "silent=false"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start gst-launch-1.0");
        let log = Captured::default();
        log.attach(child.stdout.take().unwrap());
        log.attach(child.stderr.take().unwrap());
        Self { name, child, log }
    }

    /// Ask the player to finish (SIGINT), wait for it and return what it logged.
    fn finish(mut self) -> String {
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        assert!(
            wait_child(&mut self.child, Duration::from_secs(15)).is_some(),
            "{} did not stop",
            self.name
        );
        std::thread::sleep(Duration::from_millis(200));
        self.log.text()
    }
}

impl Drop for Player {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A server with `live` on HTTP, RTSP and a raw TCP port, its timeline set to `timeline`.
fn server(
    timeline: &str,
) -> (
    Ferrocast,
    TempDir,
    std::net::SocketAddr,
    std::net::SocketAddr,
) {
    let plugins = all_plugins_dir();
    let (http, rtsp, raw) = (loopback(), loopback(), loopback());
    let points = standard_points()
        .replace(
            "protocols = [\"http\"]",
            "protocols = [\"http\", \"rtsp\", \"tcp\", \"udp\"]",
        )
        .replace(
            "source = \"push\"\n",
            &format!("source = \"push\"\nreconnect_grace_ms = 10000\ntimeline = \"{timeline}\"\n"),
        );
    let config = format!(
        "{}\n[plugins.rtsp]\nlisten = [\"{rtsp}\"]\n\n[plugins.tcp]\nlisten = [\"{raw}\"]\nserve = {{ \"{}\" = \"live\" }}\n\n[plugins.udp]\n",
        config_with(http, &points),
        raw.port()
    );
    let server = Ferrocast::start(&config, plugins.path(), http);
    (server, plugins, rtsp, raw)
}

/// A stream index and its decode times.
type StreamTimes = (u32, Vec<i64>);

/// Each stream's (DTS, or PTS without one) in 90 kHz ticks, in file order, from ffprobe.
fn decode_times(file: &Path) -> Vec<StreamTimes> {
    let output = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "packet=stream_index,pts,dts",
        ])
        .args(["-of", "csv=p=0"])
        .arg(file)
        .stdin(Stdio::null())
        .output()
        .expect("run ffprobe");
    let mut streams: Vec<StreamTimes> = Vec::new();
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        // ffprobe may end a line with an empty field.
        let [index, pts, dts, ..] = fields[..] else {
            continue;
        };
        let Ok(index) = index.parse::<u32>() else {
            continue;
        };
        let Some(time) = dts.parse::<i64>().ok().or_else(|| pts.parse().ok()) else {
            continue;
        };
        match streams.iter_mut().find(|(i, _)| *i == index) {
            Some((_, times)) => times.push(time),
            None => streams.push((index, vec![time])),
        }
    }
    streams
}

/// The encoder is killed under every kind of player and a new one publishes 2 s later.
/// Returns the players' logs and the HTTP capture's decode times per stream.
fn restart_under_players(timeline: &str) -> (Vec<(&'static str, String)>, Vec<StreamTimes>) {
    let (server, _plugins, rtsp, raw) = server(timeline);
    let dir = server.dir.path().to_path_buf();
    let first = Encoder::push_live(&server, 60);
    let url = format!("rtsp://{rtsp}/live");
    let timeout = ["-timeout", "10000000"];
    let players = vec![
        Player::start(
            "rtsp-tcp",
            &[&timeout[..], &["-rtsp_transport", "tcp"]].concat(),
            &url,
            &dir,
        ),
        Player::start(
            "rtsp-udp",
            &[&timeout[..], &["-rtsp_transport", "udp"]].concat(),
            &url,
            &dir,
        ),
        Player::start(
            "http",
            &["-rw_timeout", "10000000"],
            &server.url("live"),
            &dir,
        ),
        Player::start(
            "raw-tcp",
            &["-rw_timeout", "10000000"],
            &format!("tcp://{raw}"),
            &dir,
        ),
        Player::gstreamer(GSTREAMER, &url),
    ];
    let capture = TsReader::http(server.http, "/live");
    std::thread::sleep(Duration::from_secs(4));
    first.signal("KILL");
    server.wait_for("SOURCE_LOST", Duration::from_secs(5));
    std::thread::sleep(Duration::from_secs(2));
    let _second = Encoder::push(&server.url("live"), 60);
    server.wait_for("SOURCE_RESUMED", Duration::from_secs(10));
    std::thread::sleep(Duration::from_secs(5));

    let logs = players
        .into_iter()
        .map(|player| (player.name, player.finish()))
        .collect();
    capture.stop();
    let file = dir.join("http-capture.ts");
    std::fs::write(&file, capture.body()).unwrap();
    (logs, decode_times(&file))
}

/// No player logged a timestamp complaint, a decode error or loss.
fn assert_untroubled(logs: &[(&'static str, String)]) {
    for (name, log) in logs {
        let troubled: Vec<&str> = log
            .lines()
            .filter(|line| {
                let line = line.to_lowercase();
                TROUBLE.iter().any(|word| line.contains(word))
            })
            .collect();
        assert!(
            troubled.is_empty(),
            "{name} complained:\n{}",
            troubled.join("\n")
        );
    }
}

/// Every stream's decode times increase throughout; the largest step (the time without a
/// source) is between `min_gap` and 15 s, and the whole capture spans 8–25 s of a session of
/// about that much wall-clock time.
fn assert_one_timeline(streams: &[StreamTimes], min_gap: i64) {
    assert_eq!(streams.len(), 2, "video and audio in the capture");
    for (index, times) in streams {
        assert!(times.len() > 100, "stream {index}: {} packets", times.len());
        let mut largest_step = 0;
        for pair in times.windows(2) {
            let step = pair[1] - pair[0];
            assert!(
                step > 0,
                "stream {index}: decode time went from {} to {}",
                pair[0],
                pair[1]
            );
            largest_step = largest_step.max(step);
        }
        // The restart shows as the wall-clock time without a source, not as a jump of the
        // encoders' clocks.
        assert!(
            (min_gap..15 * 90_000).contains(&largest_step),
            "stream {index}: largest step {largest_step} ticks"
        );
        let span = times.last().unwrap() - times.first().unwrap();
        assert!(
            (8 * 90_000..25 * 90_000).contains(&span),
            "stream {index}: the capture spans {span} ticks"
        );
    }
}

/// GStreamer reported no error or warning while playing, and the presentation times of the frames it
/// decoded never go back and span the whole session (so it played across the restart).
fn assert_gstreamer_played(log: &str) {
    // What it logs while stopping on SIGINT is about the stop, not the stream.
    let playing = log.split("handling interrupt").next().unwrap_or_default();
    let problems: Vec<&str> = playing
        .lines()
        .filter(|line| line.starts_with("ERROR") || line.starts_with("WARNING"))
        .collect();
    assert!(problems.is_empty(), "GStreamer: {problems:#?}");
    let mut chains: Vec<&str> = log
        .lines()
        .filter(|line| line.contains("last-message = chain"))
        .collect();
    // `-v` may print the same buffer's message twice (same line, buffer address included).
    chains.dedup();
    let times: Vec<f64> = chains
        .into_iter()
        .filter_map(|line| {
            let (_, after) = line.split_once(" pts: ")?;
            let clock = after.split(',').next()?;
            let mut parts = clock.split(':');
            let hours: f64 = parts.next()?.parse().ok()?;
            let minutes: f64 = parts.next()?.parse().ok()?;
            let seconds: f64 = parts.next()?.parse().ok()?;
            Some(hours * 3600.0 + minutes * 60.0 + seconds)
        })
        .collect();
    assert!(
        times.len() > 150,
        "GStreamer decoded {} frames",
        times.len()
    );
    for pair in times.windows(2) {
        // A repeated time at the start is GStreamer's own doing; a step back would be ours.
        assert!(
            pair[1] >= pair[0],
            "GStreamer: a frame at {} after {}",
            pair[1],
            pair[0]
        );
    }
    let span = times.last().unwrap() - times.first().unwrap();
    assert!(span > 8.0, "GStreamer's frames span {span} s");
}

/// The GStreamer player's name.
const GSTREAMER: &str = "gstreamer-rtsp-tcp";

#[test]
fn players_see_one_timeline_across_an_encoder_restart() {
    let (logs, streams) = restart_under_players("continuous");
    let (gstreamer, ffmpeg): (Vec<_>, Vec<_>) =
        logs.into_iter().partition(|(name, _)| *name == GSTREAMER);
    assert_untroubled(&ffmpeg);
    assert_gstreamer_played(&gstreamer[0].1);
    // The encoder was away for 2 s and more.
    assert_one_timeline(&streams, 2 * 90_000);
}

/// An origin with the push point `live` on HTTP, at `http`.
fn origin(http: std::net::SocketAddr) -> (Ferrocast, TempDir) {
    let plugins = standard_plugin_dir();
    let server = Ferrocast::start(&config_with(http, &standard_points()), plugins.path(), http);
    (server, plugins)
}

#[test]
fn an_edge_keeps_one_timeline_when_its_origin_restarts() {
    let origin_http = loopback();
    let (first_origin, _origin_plugins) = origin(origin_http);
    let encoder = Encoder::push_live(&first_origin, 60);

    let edge_plugins = all_plugins_dir();
    let (edge_http, edge_rtsp) = (loopback(), loopback());
    let points = format!(
        "[[point]]\nname = \"relay\"\nkind = \"broadcast\"\nsource = \"http://{origin_http}/live\"\nprotocols = [\"http\", \"rtsp\", \"tcp\"]\nreconnect_min_ms = 200\nreconnect_max_ms = 1000\nsource_timeout_ms = 2000\nreconnect_grace_ms = 20000\n"
    );
    let config = format!(
        "{}\n[plugins.rtsp]\nlisten = [\"{edge_rtsp}\"]\n\n[plugins.tcp]\n",
        config_with(edge_http, &points)
    );
    let edge = Ferrocast::start(&config, edge_plugins.path(), edge_http);
    wait_until_live(edge_http, "/relay", Duration::from_secs(10));
    let dir = edge.dir.path().to_path_buf();
    let rtsp = Player::start(
        "edge-rtsp-tcp",
        &["-timeout", "10000000", "-rtsp_transport", "tcp"],
        &format!("rtsp://{edge_rtsp}/relay"),
        &dir,
    );
    let capture = TsReader::http(edge_http, "/relay");
    std::thread::sleep(Duration::from_secs(4));

    // The origin goes down and comes back on the same address, with a new encoder.
    drop(encoder);
    drop(first_origin);
    edge.wait_for("SOURCE_LOST", Duration::from_secs(10));
    std::thread::sleep(Duration::from_secs(1));
    let (_second_origin, _second_plugins) = origin(origin_http);
    let _encoder = Encoder::push(&format!("http://{origin_http}/live"), 60);
    edge.wait_for("SOURCE_RESUMED", Duration::from_secs(15));
    std::thread::sleep(Duration::from_secs(5));

    let logs = vec![(rtsp.name, rtsp.finish())];
    capture.stop();
    let file = dir.join("edge-capture.ts");
    std::fs::write(&file, capture.body()).unwrap();
    assert_untroubled(&logs);
    assert_one_timeline(&decode_times(&file), 90_000);
}

#[test]
fn source_timeline_sends_the_encoders_own_timestamps() {
    let (logs, streams) = restart_under_players("source");
    // What the continuous timeline spares players: ffmpeg over RTSP complains.
    let rtsp_log = &logs.iter().find(|(name, _)| *name == "rtsp-tcp").unwrap().1;
    assert!(
        rtsp_log.contains("non monotonically increasing dts"),
        "{rtsp_log}"
    );
    let went_back = streams
        .iter()
        .any(|(_, times)| times.windows(2).any(|pair| pair[1] < pair[0]));
    assert!(
        went_back,
        "the second encoder's clock starts over: {streams:?}"
    );
}

#[test]
fn the_timeline_mode_switches_live_at_the_next_keyframe() {
    let (server, _plugins, _rtsp, _raw) = server("continuous");
    let dir = server.dir.path().to_path_buf();
    let first = Encoder::push_live(&server, 60);
    let capture = TsReader::http(server.http, "/live");
    std::thread::sleep(Duration::from_secs(2));
    // A restart makes the continuous timeline differ from the new encoder's own.
    first.signal("KILL");
    server.wait_for("SOURCE_LOST", Duration::from_secs(5));
    std::thread::sleep(Duration::from_secs(2));
    let _second = Encoder::push(&server.url("live"), 60);
    server.wait_for("SOURCE_RESUMED", Duration::from_secs(10));
    std::thread::sleep(Duration::from_secs(3));

    let path = server.config_path();
    let text = std::fs::read_to_string(&path).unwrap();
    let fresh = path.with_extension("new");
    std::fs::write(
        &fresh,
        text.replace("timeline = \"continuous\"", "timeline = \"source\""),
    )
    .unwrap();
    std::fs::rename(&fresh, &path).unwrap();
    let reload = server.command(&["reload"]);
    assert_eq!(reload.code, Some(0), "{}", reload.text);
    std::thread::sleep(Duration::from_secs(3));
    assert!(capture.ended_at().is_none(), "the client stays attached");
    capture.stop();

    // The switch back to the encoder's own clock shows as one step back per stream, at a
    // keyframe flagged as a discontinuity, and the capture decodes cleanly across it.
    let file = dir.join("switched.ts");
    std::fs::write(&file, capture.body()).unwrap();
    for (index, times) in decode_times(&file) {
        let back = times.windows(2).filter(|pair| pair[1] < pair[0]).count();
        assert_eq!(back, 1, "stream {index}: {back} steps back");
    }
    let decoded = decode(&file.display().to_string(), &[], None);
    decoded.assert_clean(100, "the capture");
}

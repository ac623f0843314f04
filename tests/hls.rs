//! HLS from the real server to real players: ffmpeg's HLS demuxer and GStreamer's `hlsdemux`
//! play a live point (across an encoder restart, with `#EXT-X-DISCONTINUITY`) and an
//! on-demand file (including a seek); conditional requests get 304; a point that is not live
//! answers 503 and an unknown one 404; low-latency HLS lists parts and answers a blocking
//! playlist reload once the awaited part exists.

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use ferrocast_tests::{
    config_with, decode, http_exchange, http_get, point_toml, sample_ts, standard_plugin_dir,
    Encoder, Ferrocast, Response,
};

fn hls_config(http: SocketAddr, part_ms: u64) -> String {
    let sample = sample_ts().display().to_string();
    let points = format!(
        "[hls]\ntarget_duration_ms = 2000\nwindow = 5\npart_ms = {part_ms}\n\n{}reconnect_grace_ms = 15000\n\n{}",
        point_toml("live", "broadcast", "push", &["http", "hls"]),
        point_toml("vod", "on-demand", &sample, &["http", "hls"]),
    );
    config_with(http, &points)
}

fn start(part_ms: u64) -> (Ferrocast, tempfile::TempDir) {
    let plugins = standard_plugin_dir();
    let address = ferrocast_tests::loopback();
    let server = Ferrocast::start(&hls_config(address, part_ms), plugins.path(), address);
    (server, plugins)
}

fn get_with(address: SocketAddr, path: &str, headers: &str) -> Response {
    let request = format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n{headers}\r\n");
    http_exchange(
        address,
        request.as_bytes(),
        8 << 20,
        Duration::from_secs(10),
    )
    .unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

/// Poll the playlist until it lists at least `segments` segments (bounded).
fn wait_for_segments(address: SocketAddr, segments: usize) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let playlist = http_get(address, "/live/index.m3u8", 1 << 20);
        let text = playlist.body_text();
        if playlist.status == 200 && text.matches("#EXTINF").count() >= segments {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "the playlist never listed {segments} segments; last answer {}: {text}",
            playlist.status
        );
        thread::sleep(Duration::from_millis(250));
    }
}

/// GStreamer's HLS demuxer plays `url` for `seconds` (stopped with SIGINT), decoding H.264;
/// returns the decoded frames and any error lines.
fn gstreamer_plays(url: &str, seconds: u32) -> (usize, String) {
    let output = Command::new("timeout")
        .args(["-s", "INT", &seconds.to_string(), "gst-launch-1.0", "-v"])
        .args([
            "souphttpsrc",
            &format!("location={url}"),
            "!",
            "hlsdemux",
            "!",
            "tsdemux",
        ])
        .args([
            "!",
            "h264parse",
            "!",
            "avdec_h264",
            "!",
            "identity",
            "silent=false",
        ])
        .args(["!", "fakesink", "sync=true"])
        .stdin(Stdio::null())
        .output()
        .expect("run gst-launch-1.0 (.ci/run installs gstreamer1.0-tools and its plugins)");
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    let frames = text.matches("identity0: last-message = chain").count();
    let errors: Vec<&str> = text.lines().filter(|l| l.contains("ERROR")).collect();
    (frames, errors.join("\n"))
}

#[test]
fn live_hls_plays_in_ffmpeg_and_gstreamer_across_an_encoder_restart() {
    let (server, _plugins) = start(0);
    let address = server.http;
    // Before any encoder: 503, never a playlist; an unknown point is 404.
    let not_live = http_get(address, "/live/index.m3u8", 4096);
    assert_eq!(not_live.status, 503, "{}", not_live.head);
    assert_eq!(http_get(address, "/nope/index.m3u8", 4096).status, 404);

    let mut first = Encoder::push(&server.url("live"), 12);
    let text = wait_for_segments(address, 2);
    assert!(text.contains("#EXT-X-TARGETDURATION:2\n"), "{text}");
    assert!(text.contains("#EXT-X-PROGRAM-DATE-TIME:"), "{text}");
    assert!(
        !text.contains("#EXT-X-PART"),
        "parts are off by default: {text}"
    );

    // ffmpeg and GStreamer play from now on, through the restart below.
    let url = server.url("live/index.m3u8");
    let player = thread::spawn(move || decode(&url, &[], Some(16.0)));
    let url = server.url("live/index.m3u8");
    let gstreamer = thread::spawn(move || gstreamer_plays(&url, 18));
    assert!(
        first.wait(Duration::from_secs(20)).is_some(),
        "the first encoder ends"
    );
    let _second = Encoder::push(&server.url("live"), 30);
    // The restart within the grace is a discontinuity, and the playlist goes on.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = http_get(address, "/live/index.m3u8", 1 << 20).body_text();
        if text.contains("#EXT-X-DISCONTINUITY\n")
            && text
                .split("#EXT-X-DISCONTINUITY\n")
                .nth(1)
                .is_some_and(|after| after.contains("#EXTINF"))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no discontinuity after the restart: {text}"
        );
        thread::sleep(Duration::from_millis(250));
    }
    let decoded = player.join().unwrap();
    decoded.assert_clean(300, "ffmpeg's HLS player across the encoder restart");

    let (frames, errors) = gstreamer.join().unwrap();
    assert!(
        errors.is_empty(),
        "GStreamer errors across the restart: {errors}"
    );
    assert!(
        frames >= 200,
        "GStreamer decoded only {frames} frames across the restart"
    );

    // Segments: immutable, validated, conditional.
    let text = http_get(address, "/live/index.m3u8", 1 << 20).body_text();
    let first_segment = text
        .lines()
        .rev()
        .find(|line| line.starts_with("seg"))
        .expect("a segment in the playlist");
    let path = format!("/live/{first_segment}");
    let segment = get_with(address, &path, "");
    assert_eq!(segment.status, 200);
    assert_eq!(
        segment.header("Content-Type").as_deref(),
        Some("video/mp2t")
    );
    let cache = segment.header("Cache-Control").unwrap();
    assert!(
        cache.contains("immutable") && cache.contains("max-age=86400"),
        "{cache}"
    );
    assert_eq!(&segment.body[..1], &[0x47], "starts with a TS packet");
    let pid = |packet: &[u8]| (u16::from(packet[1] & 0x1f) << 8) | u16::from(packet[2]);
    assert_eq!(pid(&segment.body[..188]), 0, "the PAT comes first");
    ferrocast_tests::assert_decodes(server.dir.path(), &segment.body, 25);
    let etag = segment.header("ETag").expect("an ETag");
    let modified = segment.header("Last-Modified").expect("a Last-Modified");
    let revalidated = get_with(address, &path, &format!("If-None-Match: {etag}\r\n"));
    assert_eq!(revalidated.status, 304, "{}", revalidated.head);
    assert!(revalidated.body.is_empty());
    let since = get_with(
        address,
        &path,
        &format!("If-Modified-Since: {modified}\r\n"),
    );
    assert_eq!(since.status, 304, "{}", since.head);
    let other = get_with(address, &path, "If-None-Match: \"something-else\"\r\n");
    assert_eq!(other.status, 200);
    let head = http_exchange(
        address,
        format!("HEAD {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes(),
        1 << 20,
        Duration::from_secs(5),
    )
    .unwrap();
    assert_eq!(head.status, 200);
    assert_eq!(
        head.header("Content-Length"),
        Some(segment.body.len().to_string())
    );
    assert!(head.body.is_empty());
    let playlist = http_get(address, "/live/index.m3u8", 1 << 20);
    let cache = playlist.header("Cache-Control").unwrap();
    assert!(
        cache.contains("max-age=1") && !cache.contains("immutable"),
        "{cache}"
    );
    assert_eq!(
        playlist.header("Content-Type").as_deref(),
        Some("application/vnd.apple.mpegurl")
    );
    assert_eq!(get_with(address, "/live/seg999999.ts", "").status, 404);

    // Segment memory is reported per point.
    let status = server.command(&["status"]);
    assert!(
        status
            .text
            .lines()
            .any(|line| line.starts_with("hls live segments 5 bytes ")),
        "{}",
        status.text
    );
}

#[test]
fn a_point_whose_encoder_is_gone_for_good_answers_503() {
    let plugins = standard_plugin_dir();
    let address = ferrocast_tests::loopback();
    let config =
        hls_config(address, 0).replace("reconnect_grace_ms = 15000", "reconnect_grace_ms = 500");
    let server = Ferrocast::start(&config, plugins.path(), address);
    let mut encoder = Encoder::push(&server.url("live"), 6);
    wait_for_segments(address, 1);
    assert!(encoder.wait(Duration::from_secs(15)).is_some());
    server.wait_for("SOURCE_GAVE_UP", Duration::from_secs(10));
    let answer = http_get(address, "/live/index.m3u8", 4096);
    assert_eq!(
        answer.status,
        503,
        "no stale playlist: {}",
        answer.body_text()
    );
    assert_eq!(http_get(address, "/live/seg0.ts", 4096).status, 503);
}

#[test]
fn on_demand_hls_plays_and_seeks() {
    let (server, _plugins) = start(0);
    let address = server.http;
    let playlist = http_get(address, "/vod/index.m3u8", 1 << 20);
    assert_eq!(playlist.status, 200, "{}", playlist.body_text());
    let text = playlist.body_text();
    assert!(text.contains("#EXT-X-PLAYLIST-TYPE:VOD\n"), "{text}");
    assert!(text.trim_end().ends_with("#EXT-X-ENDLIST"), "{text}");
    let segments = text.matches("#EXTINF").count();
    assert!(segments >= 5, "{text}");

    let url = server.url("vod/index.m3u8");
    let whole = decode(&url, &[], None);
    whole.assert_clean(300, "the on-demand playlist");
    let sought = decode(&url, &["-ss", "6"], None);
    sought.assert_clean(100, "the on-demand playlist from 6 s");
    assert!(
        sought.video_frames < 250,
        "the seek skipped: {} frames",
        sought.video_frames
    );
    // Every segment stands alone: a later one decodes from its first byte.
    let later = get_with(address, "/vod/seg3.ts", "");
    assert_eq!(later.status, 200);
    ferrocast_tests::assert_decodes(server.dir.path(), &later.body, 10);
    let etag = later.header("ETag").unwrap();
    assert_eq!(
        get_with(
            address,
            "/vod/seg3.ts",
            &format!("If-None-Match: {etag}\r\n")
        )
        .status,
        304
    );
    assert_eq!(
        get_with(address, &format!("/vod/seg{segments}.ts"), "").status,
        404
    );

    let (frames, errors) = gstreamer_plays(&url, 20);
    assert!(errors.is_empty(), "GStreamer errors: {errors}");
    assert!(frames >= 250, "GStreamer decoded only {frames} frames");
}

/// The `URI` of the playlist's preload hint: `(msn, part)`.
fn preload_hint(text: &str) -> (u64, u64) {
    let line = text
        .lines()
        .find(|line| line.starts_with("#EXT-X-PRELOAD-HINT:"))
        .unwrap_or_else(|| panic!("no preload hint: {text}"));
    let uri = line
        .split("URI=\"part")
        .nth(1)
        .unwrap()
        .trim_end_matches(".ts\"");
    let (msn, part) = uri.split_once('.').unwrap();
    (msn.parse().unwrap(), part.parse().unwrap())
}

#[test]
fn low_latency_hls_lists_parts_and_blocks_until_the_awaited_part() {
    let (server, _plugins) = start(500);
    let address = server.http;
    // The encoder makes frame N at about N/25 s after it starts (`-re`); counting from
    // before it starts overstates every latency below by its start-up time.
    let encoder_started = Instant::now();
    let _encoder = Encoder::push(&server.url("live"), 40);
    let text = wait_for_segments(address, 2);
    let first_segment = get_with(address, "/live/seg0.ts", "").body;
    let tables = first_segment[..2 * 188].to_vec(); // PAT and PMT lead every segment
    let first_pts = video_pts(server.dir.path(), &first_segment)
        .into_iter()
        .reduce(f64::min)
        .expect("video in the first segment");
    assert!(
        text.contains("#EXT-X-PART-INF:PART-TARGET=0.50000\n"),
        "{text}"
    );
    assert!(text.contains("CAN-BLOCK-RELOAD=YES"), "{text}");
    assert!(text.contains(",INDEPENDENT=YES"), "{text}");
    for line in text.lines().filter(|l| l.starts_with("#EXT-X-PART:")) {
        let duration: f64 = line["#EXT-X-PART:DURATION=".len()..]
            .split(',')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!(
            duration <= 0.5 + 1e-6,
            "a part longer than its target: {line}"
        );
    }

    // Ask for the hinted part: the reload is held until it exists, then lists it.
    let mut waits = Vec::new();
    let mut latencies = Vec::new();
    for _ in 0..8 {
        let text = http_get(address, "/live/index.m3u8", 1 << 20).body_text();
        let (msn, part) = preload_hint(&text);
        let asked = Instant::now();
        let path = format!("/live/index.m3u8?_HLS_msn={msn}&_HLS_part={part}");
        let reload = get_with(address, &path, "");
        let waited = asked.elapsed();
        assert_eq!(reload.status, 200, "{}", reload.head);
        let body = reload.body_text();
        assert!(
            body.contains(&format!("URI=\"part{msn}.{part}.ts\"")),
            "{body}"
        );
        assert!(waited < Duration::from_secs(3), "held {waited:?}");
        waits.push(waited);
        // The part itself is served; how far behind the encoder it arrives.
        let part_body = get_with(address, &format!("/live/part{msn}.{part}.ts"), "");
        let arrived = encoder_started.elapsed().as_secs_f64();
        assert_eq!(part_body.status, 200);
        assert!(!part_body.body.is_empty() && part_body.body.len().is_multiple_of(188));
        let probed = [tables.clone(), part_body.body].concat();
        if let Some(newest) = video_pts(server.dir.path(), &probed)
            .into_iter()
            .reduce(f64::max)
        {
            latencies.push(arrived - (newest - first_pts));
        }
    }
    // A player holds back PART-HOLD-BACK (three parts) behind the newest part it has.
    let glass_to_glass: Vec<String> = latencies
        .iter()
        .map(|l| format!("{:.2}", l + 1.5))
        .collect();
    println!(
        "blocking reload waits: {waits:?}; part arrival behind the encoder (s): {latencies:.2?}; glass to glass with the 1.5 s hold-back (s): {glass_to_glass:?}"
    );
    assert!(
        latencies.len() >= 4,
        "too few parts with video: {latencies:?}"
    );
    let median = {
        let mut sorted = latencies.clone();
        sorted.sort_by(f64::total_cmp);
        sorted[sorted.len() / 2]
    };
    assert!(
        median + 1.5 < 3.0,
        "glass to glass about {:.2} s, not under 3 s",
        median + 1.5
    );
    // A hinted part asked for directly is also held until it exists.
    let text = http_get(address, "/live/index.m3u8", 1 << 20).body_text();
    let (msn, part) = preload_hint(&text);
    let held = get_with(address, &format!("/live/part{msn}.{part}.ts"), "");
    assert_eq!(held.status, 200, "{}", held.head);
    // Too far ahead is a client error.
    let ahead = get_with(
        address,
        &format!("/live/index.m3u8?_HLS_msn={}&_HLS_part=0", msn + 10),
        "",
    );
    assert_eq!(ahead.status, 400, "{}", ahead.body_text());
    // ffmpeg (which ignores the low-latency tags) still plays it.
    decode(&server.url("live/index.m3u8"), &[], Some(6.0)).assert_clean(100, "LL-HLS in ffmpeg");
}

/// The video presentation times (seconds) in a TS capture, from ffprobe.
fn video_pts(dir: &std::path::Path, ts: &[u8]) -> Vec<f64> {
    let file = dir.join("probe.ts");
    std::fs::write(&file, ts).expect("write the capture");
    let output = Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v:0"])
        .args(["-show_entries", "packet=pts_time", "-of", "csv=p=0"])
        .arg(&file)
        .stdin(Stdio::null())
        .output()
        .expect("run ffprobe");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| line.trim().trim_end_matches(',').parse().ok())
        .collect()
}

#[test]
fn a_reload_that_adds_hls_to_a_live_point_starts_packaging_it() {
    let plugins = standard_plugin_dir();
    let address = ferrocast_tests::loopback();
    let without = config_with(address, &point_toml("live", "broadcast", "push", &["http"]));
    let server = Ferrocast::start(&without, plugins.path(), address);
    let _encoder = Encoder::push(&server.url("live"), 30);
    ferrocast_tests::wait_until_live(address, "/live", Duration::from_secs(15));
    let refused = http_get(address, "/live/index.m3u8", 4096);
    assert_eq!(
        refused.status,
        404,
        "no HLS on the point yet: {}",
        refused.body_text()
    );
    // Replaced in one step, so that the file watch never reads half of it.
    let fresh = server.config_path().with_extension("toml.new");
    std::fs::write(&fresh, hls_config(address, 0)).unwrap();
    std::fs::rename(&fresh, server.config_path()).unwrap();
    let reload = server.command(&["reload"]);
    assert_eq!(reload.code, Some(0), "{}", reload.text);
    server.wait_for("RELOAD_APPLIED", Duration::from_secs(15));
    let text = wait_for_segments(address, 1);
    assert!(text.contains("seg"), "{text}");
}

/// HLS players hold no subscription to the point, so the packager is not what keeps an
/// on-demand pull going: their requests are. The pull starts with the first HLS request,
/// keeps going while players fetch, and stops once they are gone.
#[test]
fn hls_requests_start_and_keep_an_on_demand_pull_which_stops_without_them() {
    let (origin, _plugins) = start(0);
    let _encoder = Encoder::push(&origin.url("live"), 60);
    wait_for_segments(origin.http, 1);
    let edge_plugins = standard_plugin_dir();
    let edge_http = ferrocast_tests::loopback();
    let edge_points = format!(
        "[hls]\ntarget_duration_ms = 2000\n\n[[point]]\nname = \"relay\"\nkind = \"broadcast\"\nsource = \"http://{}/live\"\nprotocols = [\"http\", \"hls\"]\npull = \"on-demand\"\npull_idle_timeout_ms = 1000\nreconnect_grace_ms = 15000\n",
        origin.http
    );
    let edge = Ferrocast::start(
        &config_with(edge_http, &edge_points),
        edge_plugins.path(),
        edge_http,
    );
    thread::sleep(Duration::from_secs(3));
    assert!(
        !edge.logs().contains("PULL_CONNECTED"),
        "the packager alone must not start the pull: {}",
        edge.logs()
    );

    // The first playlist request starts the pull; the playlist fills as it is fetched.
    let deadline = Instant::now() + Duration::from_secs(30);
    while http_get(edge_http, "/relay/index.m3u8", 1 << 20).status != 200 {
        assert!(Instant::now() < deadline, "the edge never listed a segment");
        thread::sleep(Duration::from_millis(500));
    }
    assert!(edge.logs().contains("PULL_CONNECTED"));
    decode(&edge.url("relay/index.m3u8"), &[], Some(8.0)).assert_clean(150, "HLS of the pull");
    assert!(
        !edge.logs().contains("PULL_STOPPED"),
        "the pull stopped while a player fetched: {}",
        edge.logs()
    );
    edge.wait_for("PULL_STOPPED", Duration::from_secs(15));
}

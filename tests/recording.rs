//! Recording of broadcast points with the real binary, checked with ffmpeg and ffprobe:
//! rotation into files that each start with PAT/PMT and a keyframe, retention, a slow disk
//! (the writer's delay test hook) and a full disk (its ENOSPC test hook) that never disturb
//! the live clients, playback (with pause and seek over RTSP) of a file still being written
//! through an on-demand directory point, and the files a SIGKILLed server leaves.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ferrocast_tests::admin::{metric_sample, scrape_metrics};
use ferrocast_tests::rtsp::RtspClient;
use ferrocast_tests::rtsp_rig::RtspRig;
use ferrocast_tests::*;

const TS_PACKET: usize = 188;

struct Rig {
    server: Ferrocast,
    rec: TempDir,
    rtsp: SocketAddr,
    /// The admin API, for `/metrics` (no token needed from loopback).
    admin: SocketAddr,
    _plugins: TempDir,
}

/// A server with `live` recorded into a fresh directory (`record` holds the other keys of
/// its `record` table) and `archive`, an on-demand point serving that directory.
fn rig(record: &str, env: &[(&str, &str)]) -> Rig {
    rig_in(tempfile::tempdir().expect("recording dir"), record, env)
}

fn rig_in(rec: TempDir, record: &str, env: &[(&str, &str)]) -> Rig {
    rig_with(rec, "protocols = [\"http\"]", record, env)
}

/// [`rig_in`] with `live`'s `protocols` line (and any other keys) given.
fn rig_with(rec: TempDir, live: &str, record: &str, env: &[(&str, &str)]) -> Rig {
    let admin = loopback();
    let dir = rec.path().display();
    let points = format!(
        "[[point]]\nname = \"live\"\nkind = \"broadcast\"\nsource = \"push\"\n{live}\nrecord = {{ dir = \"{dir}\"{record} }}\n\n[[point]]\nname = \"archive\"\nkind = \"on-demand\"\nsource = \"{dir}\"\nprotocols = [\"http\", \"rtsp\", \"tcp\"]\n"
    );
    let admin_table = format!("[admin]\nlisten = \"{admin}\"\nmetrics_allow = [\"127.0.0.1\"]\n");
    let RtspRig {
        server,
        rtsp,
        plugins,
    } = RtspRig::start_with(&["tcp"], &points, &admin_table, env);
    Rig {
        server,
        rec,
        rtsp,
        admin,
        _plugins: plugins,
    }
}

/// The value of `series` (name and labels) in the server's `/metrics`.
fn metric(rig: &Rig, series: &str) -> Option<f64> {
    metric_sample(&scrape_metrics(rig.admin, None), series)
}

/// `live`'s recordings in `dir`, oldest first (the names sort by start time).
fn recordings(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("read the recording dir")
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            is_recording_name(&name)
        })
        .collect();
    files.sort();
    files
}

/// `live-YYYYMMDDTHHMMSSZ.ts`
fn is_recording_name(name: &str) -> bool {
    let Some(stamp) = name
        .strip_prefix("live-")
        .and_then(|rest| rest.strip_suffix("Z.ts"))
    else {
        return false;
    };
    stamp.len() == 15
        && stamp.as_bytes()[8] == b'T'
        && stamp
            .bytes()
            .enumerate()
            .all(|(i, b)| i == 8 || b.is_ascii_digit())
}

fn wait_until(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    done()
}

/// A recording is whole packets, starts with a PAT, and its first video frame is a keyframe.
fn assert_starts_decodable(file: &Path) {
    let data = std::fs::read(file).unwrap();
    assert!(!data.is_empty(), "{} is empty", file.display());
    assert_eq!(
        data.len() % TS_PACKET,
        0,
        "{}: a partial packet",
        file.display()
    );
    assert_eq!(data[0], 0x47, "{}: no sync byte", file.display());
    assert_eq!(
        ts::pid(&data[..TS_PACKET]),
        0,
        "{}: PAT first",
        file.display()
    );
    let (frames, errors) = first_frames(&file.display().to_string(), 1);
    assert_eq!(
        frames.first().map(|f| f.0),
        Some(true),
        "{}: {errors}",
        file.display()
    );
}

#[test]
fn rotation_starts_each_file_at_a_keyframe_with_pat_first() {
    let rig = rig(", segment = \"2s\"", &[]);
    let mut encoder = Encoder::push_live(&rig.server, 9);
    encoder.wait(Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(500));
    let files = recordings(rig.rec.path());
    assert!(files.len() >= 3, "only {files:?}");
    for (index, file) in files.iter().enumerate() {
        assert_starts_decodable(file);
        let decoded = decode(&file.display().to_string(), &[], None);
        // Two-second files of a 25 fps stream; the last one may be cut short by the end.
        let min_frames = if index + 1 == files.len() { 1 } else { 40 };
        decoded.assert_clean(min_frames, &file.display().to_string());
    }
    assert!(rig.server.event_lines("RECORDING_STARTED").len() >= files.len());
}

#[test]
fn retention_deletes_only_the_points_old_files() {
    let rec = tempfile::tempdir().unwrap();
    let foreign = [
        "notes.txt",
        "other-20200101T000000Z.ts",
        "live-old.ts",
        "live-b-20200101T000000Z.ts",
    ];
    for name in foreign {
        std::fs::write(rec.path().join(name), b"keep").unwrap();
    }
    let rig = rig_in(rec, ", segment = \"1s\", retain = \"3s\"", &[]);
    let mut encoder = Encoder::push_live(&rig.server, 10);
    rig.server
        .wait_for("RECORDING_EXPIRED", Duration::from_secs(30));
    encoder.wait(Duration::from_secs(30));
    let started = rig.server.event_lines("RECORDING_STARTED");
    assert!(started.len() >= 6, "{started:?}");
    let first = log_field(&started[0], "path")
        .unwrap()
        .trim_matches('"')
        .to_owned();
    assert!(
        wait_until(Duration::from_secs(10), || !Path::new(&first).exists()),
        "the oldest recording {first} is still there"
    );
    let left = recordings(rig.rec.path());
    assert!(!left.is_empty() && left.len() < started.len(), "{left:?}");
    for name in foreign {
        assert!(rig.rec.path().join(name).exists(), "{name} was deleted");
    }
}

#[test]
fn a_slow_disk_drops_recording_data_without_disturbing_clients() {
    let rig = rig("", &[("FERROCAST_TEST_RECORD_WRITE_DELAY_MS", "150")]);
    let encoder = Encoder::push_live(&rig.server, 60);
    let reader = TsReader::http(rig.server.http, "/live");
    rig.server
        .wait_for("RECORDING_LAGGING", Duration::from_secs(45));
    let since = Instant::now();
    std::thread::sleep(Duration::from_secs(4));
    assert!(reader.received_after(since) > 100_000, "the client stalled");
    assert!(
        reader.longest_gap_since(since) < Duration::from_millis(1500),
        "the client waited {:?}",
        reader.longest_gap_since(since)
    );
    // Rate-limited: one line per point and ten seconds.
    let lagging = rig.server.event_lines("RECORDING_LAGGING");
    let elapsed = reader.started.elapsed().as_secs() as usize;
    assert!(lagging.len() <= elapsed / 10 + 2, "{lagging:?}");
    let dropped = metric(
        &rig,
        "ferrocast_recording_dropped_bytes_total{point=\"live\"}",
    );
    assert!(dropped.is_some_and(|bytes| bytes > 0.0), "{dropped:?}");
    drop(encoder);
    assert!(
        reader.continuity_errors().is_empty(),
        "{:?}",
        reader.continuity_errors()
    );
    assert_decodes(rig.rec.path(), &reader.body(), 150);
    let files = recordings(rig.rec.path());
    assert_eq!(files.len(), 1, "{files:?}");
    assert_starts_decodable(&files[0]);
}

#[test]
fn a_full_disk_fails_the_recording_not_the_point_and_recording_resumes() {
    let flags = tempfile::tempdir().unwrap();
    let full = flags.path().join("full");
    let full_text = full.display().to_string();
    let rig = rig("", &[("FERROCAST_TEST_RECORD_FULL_FLAG", &full_text)]);
    let _encoder = Encoder::push_live(&rig.server, 60);
    let reader = TsReader::http(rig.server.http, "/live");
    rig.server
        .wait_for("RECORDING_STARTED", Duration::from_secs(10));
    std::thread::sleep(Duration::from_secs(2));
    std::fs::write(&full, b"").unwrap();
    let failing = Instant::now();
    rig.server
        .wait_for("RECORDING_FAILED", Duration::from_secs(10));
    std::thread::sleep(Duration::from_secs(3));
    std::fs::remove_file(&full).unwrap();
    let started_before = rig.server.event_lines("RECORDING_STARTED").len();
    assert!(
        wait_until(Duration::from_secs(15), || {
            rig.server.event_lines("RECORDING_STARTED").len() > started_before
        }),
        "recording did not resume: {}",
        rig.server.logs()
    );
    std::thread::sleep(Duration::from_secs(3));
    // The live client never noticed.
    assert!(
        reader.longest_gap_since(failing) < Duration::from_millis(1500),
        "the client waited {:?}",
        reader.longest_gap_since(failing)
    );
    assert!(reader.received_after(failing) > 200_000);
    assert!(
        reader.continuity_errors().is_empty(),
        "{:?}",
        reader.continuity_errors()
    );
    // `status` shows the file being written and the failures.
    let status = rig.server.command(&["status"]).text;
    let line = status
        .lines()
        .find(|line| line.starts_with("record live file "))
        .unwrap_or_else(|| panic!("no recording in status: {status}"));
    let field = |name: &str| -> u64 {
        let mut words = line.split_whitespace();
        words.find(|word| *word == name);
        words.next().and_then(|value| value.parse().ok()).unwrap()
    };
    assert!(field("failures") >= 1, "{line}");
    assert!(field("bytes") > 0 && field("dropped_bytes") > 0, "{line}");
    assert!(
        line.contains(&rig.rec.path().display().to_string()),
        "{line}"
    );
    let failed = rig.server.event_lines("RECORDING_FAILED");
    assert!(failed[0].contains("No space left on device"), "{failed:?}");
    // Every file is whole packets; the one that failed plays up to the failure, the one
    // after it plays from its start.
    let files = recordings(rig.rec.path());
    assert!(files.len() >= 2, "{files:?}");
    for file in &files {
        assert_starts_decodable(file);
    }
    let resumed = files.last().unwrap().display().to_string();
    decode(&resumed, &[], Some(2.0)).assert_clean(25, &resumed);
}

/// DESCRIBE `url` until the file's index is ready (a new file is indexed first); the SDP.
fn describe_when_ready(client: &mut RtspClient, url: &str) -> String {
    for _ in 0..40 {
        let described = client.request("DESCRIBE", url, &[("Accept", "application/sdp")]);
        if described.status == 200 {
            return described.body;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    panic!("{url} was never described");
}

/// SETUP and PLAY `url` from `npt` seconds; where the play starts, from the Range answered.
fn play_from(client: &mut RtspClient, url: &str, npt: f64) -> f64 {
    let play = client.setup_and_play(url, Some(&format!("npt={npt}-")));
    play.range_start()
        .unwrap_or_else(|| panic!("no start in the answer {play:?}"))
}

fn seek(client: &mut RtspClient, url: &str, npt: f64) -> f64 {
    let range = format!("npt={npt}-");
    let play = client.request("PLAY", &format!("{url}/"), &[("Range", &range)]);
    assert_eq!(play.status, 200, "{play:?}");
    play.range_start()
        .unwrap_or_else(|| panic!("no start in the answer {play:?}"))
}

#[test]
fn a_recording_plays_pauses_and_seeks_while_it_is_written() {
    let rig = rig("", &[]);
    let _encoder = Encoder::push_live(&rig.server, 60);
    rig.server
        .wait_for("RECORDING_STARTED", Duration::from_secs(10));
    std::thread::sleep(Duration::from_secs(7));
    let files = recordings(rig.rec.path());
    assert_eq!(files.len(), 1, "{files:?}");
    let name = files[0].file_name().unwrap().to_string_lossy().into_owned();

    // Over HTTP: the file as written so far decodes.
    let decoded = decode(&rig.server.url(&format!("archive/{name}")), &[], Some(4.0));
    decoded.assert_clean(75, "the recording over HTTP");

    // Over RTSP: play, pause, seek.
    let url = format!("rtsp://{}/archive/{name}", rig.rtsp);
    let mut client = RtspClient::connect(rig.rtsp);
    let sdp = describe_when_ready(&mut client, &url);
    assert!(sdp.contains("a=rtpmap:33 MP2T/90000"), "{sdp}");
    let start = play_from(&mut client, &url, 0.0);
    assert!(start < 0.5, "played from {start}");
    client.receive_for(Duration::from_millis(1500));
    let paused = client.request("PAUSE", &format!("{url}/"), &[]);
    assert_eq!(paused.status, 200, "{paused:?}");
    let before_pause = client.rtp.len();
    assert!(before_pause > 30, "only {before_pause} RTP packets");
    client.receive_for(Duration::from_millis(800));
    assert!(
        client.rtp.len() - before_pause <= 2,
        "packets arrived while paused"
    );
    let start = seek(&mut client, &url, 3.0);
    assert!((2.0..=3.5).contains(&start), "seeked to {start}");
    let after_seek = client.rtp.len();
    client.receive_for(Duration::from_millis(1000));
    assert!(client.rtp.len() > after_seek + 30, "nothing after the seek");

    // The file goes on growing: a later play seeks past what existed at the first one.
    std::thread::sleep(Duration::from_secs(5));
    let mut later = RtspClient::connect(rig.rtsp);
    describe_when_ready(&mut later, &url);
    let start = play_from(&mut later, &url, 10.0);
    assert!((9.0..=10.5).contains(&start), "seeked to {start}");
    later.receive_for(Duration::from_millis(1000));
    assert!(!later.rtp.is_empty(), "nothing at 10 s");
}

#[test]
fn a_killed_server_leaves_a_file_that_plays_to_its_last_packet() {
    let mut rig = rig("", &[]);
    let _encoder = Encoder::push_live(&rig.server, 60);
    rig.server
        .wait_for("RECORDING_STARTED", Duration::from_secs(10));
    std::thread::sleep(Duration::from_secs(5));
    rig.server.signal("KILL");
    rig.server.wait_exit(Duration::from_secs(10));
    let files = recordings(rig.rec.path());
    assert_eq!(files.len(), 1, "{files:?}");
    assert_starts_decodable(&files[0]);
    let decoded = decode(&files[0].display().to_string(), &[], None);
    decoded.assert_clean(75, "the recording of a killed server");
}

#[test]
fn a_reload_moves_stops_and_starts_the_recording() {
    let rig = rig("", &[]);
    let _encoder = Encoder::push_live(&rig.server, 60);
    rig.server
        .wait_for("RECORDING_STARTED", Duration::from_secs(10));
    std::thread::sleep(Duration::from_secs(3));
    let path = rig.server.config_path();
    let original = std::fs::read_to_string(&path).unwrap();
    let first_dir = format!("record = {{ dir = \"{}\"", rig.rec.path().display());
    assert!(original.contains(&first_dir), "{original}");
    let moved = tempfile::tempdir().unwrap();
    let reload = |text: &str| {
        std::fs::write(&path, text).unwrap();
        let done = rig.server.command(&["reload"]);
        assert_eq!(done.code, Some(0), "{}", done.text);
    };

    // Another directory: the file is closed, the next starts there at a keyframe.
    let moved_dir = format!("record = {{ dir = \"{}\"", moved.path().display());
    reload(&original.replace(&first_dir, &moved_dir));
    assert!(
        wait_until(Duration::from_secs(10), || !recordings(moved.path())
            .is_empty()),
        "no recording in the new directory: {}",
        rig.server.logs()
    );
    let old = recordings(rig.rec.path());
    assert_eq!(old.len(), 1, "{old:?}");
    let old_size = std::fs::metadata(&old[0]).unwrap().len();
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        std::fs::metadata(&old[0]).unwrap().len(),
        old_size,
        "still written"
    );

    // No `record`: the recording stops.
    let without: String = original
        .lines()
        .filter(|line| !line.starts_with("record = "))
        .map(|line| format!("{line}\n"))
        .collect();
    reload(&without);
    std::thread::sleep(Duration::from_secs(1));
    let new = recordings(moved.path());
    let new_size = std::fs::metadata(&new[0]).unwrap().len();
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        std::fs::metadata(&new[0]).unwrap().len(),
        new_size,
        "still written"
    );
    assert_eq!(rig.server.event_lines("RECORDING_STARTED").len(), 2);
    for file in [&old[0], &new[0]] {
        assert_starts_decodable(file);
        decode(&file.display().to_string(), &[], None).assert_clean(25, "a reloaded recording");
    }
}

#[test]
fn an_encoder_restart_starts_a_new_file() {
    let rig = rig("", &[]);
    let mut first = Encoder::push_live(&rig.server, 4);
    first.wait(Duration::from_secs(20));
    std::thread::sleep(Duration::from_millis(1500));
    let mut second = Encoder::push_live(&rig.server, 4);
    second.wait(Duration::from_secs(20));
    std::thread::sleep(Duration::from_millis(500));
    let files = recordings(rig.rec.path());
    assert_eq!(files.len(), 2, "{files:?}");
    for file in &files {
        assert_starts_decodable(file);
        decode(&file.display().to_string(), &[], None).assert_clean(50, "a recording");
    }
}

/// The `point live …` line of `ferrocast status`.
fn status_line(rig: &Rig) -> String {
    let status = rig.server.command(&["status"]).text;
    status
        .lines()
        .find(|line| line.starts_with("point live "))
        .unwrap_or_else(|| panic!("no line for live: {status}"))
        .to_owned()
}

#[test]
fn hls_and_recording_are_not_clients_of_the_point() {
    let rig = rig_with(
        tempfile::tempdir().unwrap(),
        "protocols = [\"http\", \"hls\"]\nmax_clients = 1",
        "",
        &[],
    );
    let _encoder = Encoder::push_live(&rig.server, 60);
    // Both the packager and the recorder are fed: a segment is listed, a file is written.
    assert!(
        wait_until(Duration::from_secs(20), || {
            http_get(rig.server.http, "/live/index.m3u8", 1 << 20)
                .body_text()
                .contains("#EXTINF")
                && recordings(rig.rec.path())
                    .first()
                    .is_some_and(|file| file.metadata().is_ok_and(|m| m.len() > 100_000))
        }),
        "no HLS segment or recording: {}",
        rig.server.logs()
    );
    let http_sessions = "ferrocast_clients{point=\"live\",protocol=\"http\"}";
    // Only the encoder's session (an HTTP PUT) so far.
    assert!(
        status_line(&rig).contains(" clients 0 "),
        "{}",
        status_line(&rig)
    );
    assert!(
        wait_until(Duration::from_secs(10), || metric(&rig, http_sessions)
            == Some(1.0)),
        "the encoder alone: {:?}",
        metric(&rig, http_sessions)
    );

    // One player fits in `max_clients = 1` and is the only client.
    let player = TsReader::http(rig.server.http, "/live");
    assert!(
        player.wait_bytes(188 * 100, Duration::from_secs(10)),
        "the one player was not admitted: {:?}",
        player.head()
    );
    assert!(
        status_line(&rig).contains(" clients 1 "),
        "{}",
        status_line(&rig)
    );
    assert!(
        wait_until(Duration::from_secs(10), || metric(&rig, http_sessions)
            == Some(2.0)),
        "the encoder and the player: {:?}",
        metric(&rig, http_sessions)
    );
    // A second player is over the limit.
    let second = http_get(rig.server.http, "/live", 4096);
    assert_eq!(second.status, 503, "{}", second.head);
    assert!(
        status_line(&rig).contains(" clients 1 "),
        "{}",
        status_line(&rig)
    );
}

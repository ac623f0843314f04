//! Live reconfiguration with the real binary, the real `http`, `rtsp`, `udp` and `tcp`
//! plugins and real ffmpeg encoders: while HTTP, RTSP/UDP, RTSP/TCP and raw TCP sessions play
//! two live points, the configuration is rewritten and reloaded (by the file watch, by SIGHUP
//! and by `ferrocast reload`, in turn). Each test checks that the sessions the change takes
//! something from end cleanly (RTSP ones with an RTCP BYE and a close), that every other
//! session goes on without a continuity error, a sequence gap or a stall, and that new
//! clients see the new configuration at once. Also: listener moves (and a move to a port in
//! use), a rejected configuration that changes nothing, and draining points and plugins.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use ferrocast_tests::watch::RtpWatch;
use ferrocast_tests::*;

/// How long sessions run after a change before they are judged.
const SETTLE: Duration = Duration::from_secs(2);
/// The longest silence an untouched session may see across a change.
const MAX_GAP: Duration = Duration::from_secs(2);
/// The longest silence a session may see while its point waits for a new source (the point
/// sends null packets after 1 s without media, then every 500 ms).
const HELD_GAP: Duration = Duration::from_secs(3);
/// How soon a session the change takes something from must have ended.
const END_WITHIN: Duration = Duration::from_secs(5);
/// Encoders outlive every test.
const ENCODER_SECONDS: u32 = 120;

// ---- the configuration -------------------------------------------------------------------

#[derive(Clone)]
struct PointDef {
    name: String,
    kind: &'static str,
    source: String,
    protocols: Vec<&'static str>,
}

/// Everything a test changes in the configuration; rendered to TOML.
#[derive(Clone)]
struct Layout {
    http: SocketAddr,
    rtsp: SocketAddr,
    rtsp_enabled: bool,
    /// Raw TS of `one` and of `two` (the `tcp` plugin's `serve`).
    raw_one: SocketAddr,
    raw_two: SocketAddr,
    points: Vec<PointDef>,
}

const ALL: [&str; 4] = ["http", "rtsp", "udp", "tcp"];

impl Layout {
    /// Two live push points, `one` and `two`, on every protocol, and the on-demand sample.
    fn new() -> Self {
        let live = |name: &str| PointDef {
            name: name.into(),
            kind: "broadcast",
            source: "push".into(),
            protocols: ALL.to_vec(),
        };
        Self {
            http: loopback(),
            rtsp: loopback(),
            rtsp_enabled: true,
            raw_one: loopback(),
            raw_two: loopback(),
            points: vec![
                live("one"),
                live("two"),
                PointDef {
                    name: "vod".into(),
                    kind: "on-demand",
                    source: sample_ts().display().to_string(),
                    protocols: vec!["http", "rtsp", "tcp"],
                },
            ],
        }
    }

    fn point(&mut self, name: &str) -> &mut PointDef {
        self.points
            .iter_mut()
            .find(|p| p.name == name)
            .expect("a point of the layout")
    }

    fn render(&self) -> String {
        let mut text = format!(
            "[server]\nwrite_timeout_ms = 5000\n\n\
             [plugins.http]\nlisten = [\"{http}\"]\n\n\
             [plugins.rtsp]\nenabled = {rtsp_enabled}\nlisten = [\"{rtsp}\"]\n\n\
             [plugins.udp]\n\n\
             [plugins.tcp]\nlisten = [\"{raw_one}\", \"{raw_two}\"]\n\
             serve = {{ \"{port_one}\" = \"one\", \"{port_two}\" = \"two\" }}\n",
            http = self.http,
            rtsp = self.rtsp,
            rtsp_enabled = self.rtsp_enabled,
            raw_one = self.raw_one,
            raw_two = self.raw_two,
            port_one = self.raw_one.port(),
            port_two = self.raw_two.port(),
        );
        for point in &self.points {
            text.push('\n');
            text.push_str(&point_toml(
                &point.name,
                point.kind,
                &point.source,
                &point.protocols,
            ));
        }
        text
    }
}

// ---- the running server ------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Trigger {
    /// The file watch notices the new file.
    Watch,
    Hangup,
    /// `ferrocast --config FILE reload`.
    Command,
}

impl Trigger {
    /// How the server names the trigger in its RELOAD_* events.
    fn logged_as(self) -> &'static str {
        match self {
            Trigger::Watch => "config file changed",
            Trigger::Hangup => "SIGHUP",
            Trigger::Command => "ferrocast reload",
        }
    }
}

/// What a reload did.
struct Reloaded {
    /// The RELOAD_APPLIED or RELOAD_FAILED line.
    line: String,
    command: Option<CommandOutput>,
}

impl Reloaded {
    fn applied(&self) -> bool {
        self.line.contains("RELOAD_APPLIED")
    }
}

struct Rig {
    server: Ferrocast,
    layout: Layout,
    _plugins: TempDir,
    encoders: Vec<Encoder>,
}

impl Rig {
    /// Start the server with `layout` and an encoder on `one` and on `two`.
    fn start(layout: Layout) -> Self {
        let plugins = all_plugins_dir();
        let server = Ferrocast::start(&layout.render(), plugins.path(), layout.http);
        let mut rig = Self {
            server,
            layout,
            _plugins: plugins,
            encoders: Vec::new(),
        };
        rig.push("one");
        rig.push("two");
        for point in ["one", "two"] {
            wait_until_live(
                rig.layout.http,
                &format!("/{point}"),
                Duration::from_secs(20),
            );
        }
        rig
    }

    /// Start an encoder pushing to `point` (over the current HTTP listener).
    fn push(&mut self, point: &str) {
        let url = format!("http://{}/{point}", self.layout.http);
        self.encoders.push(Encoder::push(&url, ENCODER_SECONDS));
    }

    fn status(&self) -> String {
        let status = self.server.command(&["status"]);
        assert_eq!(status.code, Some(0), "status failed: {}", status.text);
        status.text
    }

    /// Replace the configuration file with `text` (a new file renamed over the old one) and
    /// reload it with `trigger`; returns once the server logged the outcome.
    fn reload_text(&mut self, text: &str, trigger: Trigger) -> Reloaded {
        let logs = self.server.logs();
        let before = outcomes(&logs).len();
        let before_settled = settled(&logs);
        let path = self.server.config_path();
        let fresh = path.with_extension("toml.new");
        std::fs::write(&fresh, text).expect("write the new configuration");
        std::fs::rename(&fresh, &path).expect("rename it over the old one");
        let command = match trigger {
            Trigger::Watch => None,
            Trigger::Hangup => {
                self.server.signal("HUP");
                None
            }
            Trigger::Command => Some(self.server.command(&["reload"])),
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        let line = loop {
            if let Some(line) = outcomes(&self.server.logs()).get(before) {
                break line.clone();
            }
            assert!(
                Instant::now() < deadline,
                "no RELOAD_APPLIED or RELOAD_FAILED within 15 s of the {trigger:?} reload; {}",
                report(&self.server.logs())
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(
            line.contains(trigger.logged_as()),
            "the reload was not done by the {trigger:?} trigger: {line}"
        );
        if trigger != Trigger::Watch {
            // Writing the file also wakes the file watch; let its (no-op or repeated) reload
            // pass, so it is not taken for the outcome of the next change.
            let deadline = Instant::now() + Duration::from_secs(3);
            while settled(&self.server.logs()) < before_settled + 2 && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Reloaded { line, command }
    }

    /// Reload `layout` and require it to be applied.
    fn apply(&mut self, layout: Layout, trigger: Trigger) -> Reloaded {
        let reloaded = self.reload_text(&layout.render(), trigger);
        assert!(
            reloaded.applied(),
            "the reload was not applied: {}\n{:?}\n{}",
            reloaded.line,
            reloaded.command,
            report(&self.server.logs())
        );
        if let Some(command) = &reloaded.command {
            assert_eq!(command.code, Some(0), "ferrocast reload: {}", command.text);
        }
        self.layout = layout;
        reloaded
    }

    /// Apply `layout` with `trigger` and let the change settle; when it was made.
    fn change(&mut self, layout: &Layout, trigger: Trigger) -> Instant {
        let changed = Instant::now();
        self.apply(layout.clone(), trigger);
        std::thread::sleep(SETTLE);
        changed
    }

    /// Switch `one` from its encoder to pulling `two` (with `trigger`) and let the pull
    /// settle; the new layout and when the change was made.
    fn switch_one_to_pull(&mut self, trigger: Trigger) -> (Layout, Instant) {
        let mut layout = self.layout.clone();
        layout.point("one").source = format!("http://{}/two", layout.http);
        let changed = Instant::now();
        self.apply(layout.clone(), trigger);
        self.server
            .wait_for("PULL_CONNECTED", Duration::from_secs(10));
        std::thread::sleep(SETTLE);
        (layout, changed)
    }

    fn count(&self, needle: &str) -> usize {
        self.server.logs().matches(needle).count()
    }

    /// Log lines that contain every one of `needles`.
    fn count_lines(&self, needles: &[&str]) -> usize {
        self.server
            .logs()
            .lines()
            .filter(|line| needles.iter().all(|needle| line.contains(needle)))
            .count()
    }
}

/// The RELOAD_APPLIED and RELOAD_FAILED lines, in order.
fn outcomes(logs: &str) -> Vec<String> {
    logs.lines()
        .filter(|l| l.contains("RELOAD_APPLIED") || l.contains("RELOAD_FAILED"))
        .map(str::to_owned)
        .collect()
}

/// Reloads that have finished, those that found nothing to change included.
fn settled(logs: &str) -> usize {
    logs.lines()
        .filter(|l| {
            l.contains("RELOAD_APPLIED")
                || l.contains("RELOAD_FAILED")
                || (l.contains("RELOAD_PLANNED") && l.contains("configuration unchanged"))
        })
        .count()
}

/// The server's log lines that explain a failure.
fn report(logs: &str) -> String {
    let interesting: Vec<&str> = logs
        .lines()
        .filter(|l| {
            [
                "RELOAD_",
                "SESSION_RECONFIGURED",
                "PORT_IN_USE",
                "CLIENT_LAGGING",
                "SOURCE_",
                "PULL_",
                "DRAIN",
                "DISCONNECT",
                "stream ended",
                "WARN",
                "ERROR",
                "error",
                "panic",
            ]
            .iter()
            .any(|needle| l.contains(needle))
        })
        .collect();
    format!("server log (selected lines):\n{}", interesting.join("\n"))
}

// ---- sessions and judging them ------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Http,
    RtspUdp,
    RtspTcp,
    Raw,
}

/// One session of each kind on a point.
struct Sessions {
    point: String,
    http: TsReader,
    udp: RtpWatch,
    tcp: RtpWatch,
    raw: TsReader,
}

impl Sessions {
    fn open(layout: &Layout, point: &str) -> Self {
        let raw = match point {
            "one" => layout.raw_one,
            "two" => layout.raw_two,
            other => panic!("no raw TS port for {other}"),
        };
        Self {
            point: point.into(),
            http: TsReader::http(layout.http, &format!("/{point}")),
            udp: RtpWatch::rtsp_udp(layout.rtsp, point),
            tcp: RtpWatch::rtsp_tcp(layout.rtsp, point),
            raw: TsReader::tcp(raw),
        }
    }

    /// Wait until every session receives media.
    fn wait_flowing(&self) {
        let limit = Duration::from_secs(10);
        assert!(
            self.http.wait_bytes(188 * 100, limit),
            "{}: HTTP got {} bytes, status {:?}",
            self.point,
            self.http.bytes(),
            self.http.status()
        );
        assert_eq!(self.http.status(), Some(200), "{}", self.point);
        assert!(
            self.raw.wait_bytes(188 * 100, limit),
            "{}: raw TS",
            self.point
        );
        assert!(self.udp.wait_packets(20, limit), "{}: RTSP/UDP", self.point);
        assert!(self.tcp.wait_packets(20, limit), "{}: RTSP/TCP", self.point);
    }

    /// Judge every session against a change made at `since`: those of the `ended` kinds must
    /// have been ended by the server (RTSP ones with an RTCP BYE and a close), the others must
    /// not have noticed anything. Kinds in `skip` are not looked at.
    fn judge(&self, verdict: &mut Verdict, since: Instant, ended: &[Kind], skip: &[Kind]) {
        self.judge_with(verdict, since, ended, skip, UNTOUCHED);
    }

    fn judge_with(
        &self,
        verdict: &mut Verdict,
        since: Instant,
        ended: &[Kind],
        skip: &[Kind],
        steady: Steady,
    ) {
        for kind in [Kind::Http, Kind::RtspUdp, Kind::RtspTcp, Kind::Raw] {
            if skip.contains(&kind) {
                continue;
            }
            let what = format!("{kind:?} on `{}`", self.point);
            let end = ended.contains(&kind);
            match kind {
                Kind::Http if end => verdict.ended_ts(&what, &self.http),
                Kind::Http => verdict.steady_ts(&what, &self.http, since, steady),
                Kind::Raw if end => verdict.ended_ts(&what, &self.raw),
                Kind::Raw => verdict.steady_ts(&what, &self.raw, since, steady),
                Kind::RtspUdp if end => verdict.ended_rtsp(&what, &self.udp, true),
                Kind::RtspUdp => verdict.steady_rtp(&what, &self.udp, since, steady),
                Kind::RtspTcp if end => verdict.ended_rtsp(&what, &self.tcp, true),
                Kind::RtspTcp => verdict.steady_rtp(&what, &self.tcp, since, steady),
            }
        }
    }

    /// All four sessions must have been ended by the server (for RTSP, a close is enough).
    fn judge_closed(&self, verdict: &mut Verdict) {
        verdict.ended_ts(&format!("HTTP on `{}`", self.point), &self.http);
        verdict.ended_ts(&format!("raw TS on `{}`", self.point), &self.raw);
        verdict.ended_rtsp(&format!("RTSP/UDP on `{}`", self.point), &self.udp, false);
        verdict.ended_rtsp(&format!("RTSP/TCP on `{}`", self.point), &self.tcp, false);
    }
}

/// What a session that goes on must show.
#[derive(Clone, Copy)]
struct Steady {
    /// The longest time without data from just before the change until now.
    max_gap: Duration,
    /// Check MPEG-TS continuity counters (and RTP sequence numbers, always checked).
    continuity: bool,
}

/// A session the change has nothing to do with.
const UNTOUCHED: Steady = Steady {
    max_gap: MAX_GAP,
    continuity: true,
};

/// Problems found, reported together with the server's log.
#[derive(Default)]
struct Verdict(Vec<String>);

impl Verdict {
    fn check(&mut self, ok: bool, problem: impl FnOnce() -> String) {
        if !ok {
            self.0.push(problem());
        }
    }

    fn untouched_ts(&mut self, what: &str, watch: &TsReader, since: Instant) {
        self.steady_ts(what, watch, since, UNTOUCHED);
    }

    fn steady_ts(&mut self, what: &str, watch: &TsReader, since: Instant, steady: Steady) {
        self.check(!watch.ended(), || format!("{what}: the server ended it"));
        if steady.continuity {
            let errors = watch.continuity_errors();
            self.check(errors.is_empty(), || {
                format!("{what}: {} continuity error(s): {errors:?}", errors.len())
            });
        }
        let after = watch.received_after(since);
        self.check(after > 0, || {
            format!("{what}: nothing received after the change")
        });
        let gap = watch.longest_gap_since(since);
        self.check(gap < steady.max_gap, || {
            format!("{what}: {gap:?} without data")
        });
    }

    fn untouched_rtp(&mut self, what: &str, watch: &RtpWatch, since: Instant) {
        self.steady_rtp(what, watch, since, UNTOUCHED);
    }

    fn steady_rtp(&mut self, what: &str, watch: &RtpWatch, since: Instant, steady: Steady) {
        self.check(!watch.ended(), || {
            format!(
                "{what}: the server ended it (BYE {}, closed {})",
                watch.got_bye(),
                watch.closed()
            )
        });
        let gaps = watch.seq_gaps();
        self.check(gaps.is_empty(), || {
            format!("{what}: RTP sequence gaps (expected, got): {gaps:?}")
        });
        if steady.continuity {
            let errors = watch.continuity_errors();
            self.check(errors.is_empty(), || {
                format!("{what}: {} continuity error(s): {errors:?}", errors.len())
            });
        }
        let after = watch.packets_after(since);
        self.check(after > 0, || format!("{what}: no RTP after the change"));
        let gap = watch.longest_gap_since(since);
        self.check(gap < steady.max_gap, || {
            format!("{what}: {gap:?} without RTP")
        });
    }

    fn ended_ts(&mut self, what: &str, watch: &TsReader) {
        let ended = watch.wait_end(END_WITHIN);
        self.check(ended, || {
            format!("{what}: still open {END_WITHIN:?} after the change")
        });
    }

    /// The server ended an RTSP session: closed its connection, after an RTCP BYE if `bye`.
    fn ended_rtsp(&mut self, what: &str, watch: &RtpWatch, bye: bool) {
        let ended = if bye {
            watch.wait_bye_and_close(END_WITHIN)
        } else {
            watch.wait_end(END_WITHIN) && watch.wait_closed(END_WITHIN)
        };
        self.check(ended, || {
            format!(
                "{what}: after {END_WITHIN:?}: RTCP BYE {}, connection closed {}",
                watch.got_bye(),
                watch.closed()
            )
        });
    }

    /// A reload that must have failed: RELOAD_FAILED logged, `ferrocast reload` exiting 1.
    /// Its command's output.
    fn failed(&mut self, reloaded: Reloaded) -> CommandOutput {
        let command = reloaded.command.expect("command output");
        self.check(reloaded.line.contains("RELOAD_FAILED"), || {
            format!("not a RELOAD_FAILED: {}", reloaded.line)
        });
        self.check(command.code == Some(1), || {
            format!(
                "ferrocast reload exited {:?}: {}",
                command.code, command.text
            )
        });
        command
    }

    fn assert_clean(self, rig: &Rig) {
        assert!(
            self.0.is_empty(),
            "{} problem(s):\n  {}\n{}",
            self.0.len(),
            self.0.join("\n  "),
            report(&rig.server.logs())
        );
    }
}

/// A new GET of `path`: its status, and whether MPEG-TS came with a 200.
fn get_status(address: SocketAddr, path: &str) -> u16 {
    let response = http_get(address, path, 188 * 20);
    if response.status == 200 {
        assert!(
            response.body.len() >= 188 && response.body[0] == 0x47,
            "GET {path}: 200 without MPEG-TS ({} bytes)",
            response.body.len()
        );
    }
    response.status
}

/// Wait until connections to `address` are refused (a released listener).
fn refuses_connections(address: SocketAddr) -> bool {
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&address, Duration::from_millis(500)).is_err() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// DESCRIBE `point` on a new RTSP connection; the status.
fn describe(rtsp: SocketAddr, point: &str) -> u16 {
    let mut client = RtspClient::connect(rtsp);
    client
        .request("DESCRIBE", &format!("rtsp://{rtsp}/{point}"), &[])
        .status
}

/// 1-based number of the line of `text` that equals `line`.
fn line_of(text: &str, line: &str) -> usize {
    text.lines()
        .enumerate()
        .find(|(_, l)| *l == line)
        .map(|(index, _)| index + 1)
        .unwrap_or_else(|| panic!("{line:?} is not in the configuration"))
}

// ---- the tests ------------------------------------------------------------------------------

/// A fresh server with every kind of session playing both live points, settled for a
/// second so the gaps measured across a change start from a steady stream.
fn playing_both() -> (Rig, Sessions, Sessions) {
    let rig = Rig::start(Layout::new());
    let one = Sessions::open(&rig.layout, "one");
    let two = Sessions::open(&rig.layout, "two");
    one.wait_flowing();
    two.wait_flowing();
    std::thread::sleep(Duration::from_secs(1));
    (rig, one, two)
}

#[test]
fn disabling_udp_on_a_point_ends_only_its_rtsp_udp_sessions() {
    let (mut rig, one, two) = playing_both();

    let mut layout = rig.layout.clone();
    layout.point("one").protocols.retain(|p| *p != "udp");
    let changed = rig.change(&layout, Trigger::Watch);

    let mut verdict = Verdict::default();
    one.judge(&mut verdict, changed, &[Kind::RtspUdp], &[]);
    two.judge(&mut verdict, changed, &[], &[]);
    // New RTSP sessions on `one`: UDP is refused as a transport, TCP interleaved plays.
    match RtpWatch::try_rtsp_udp(layout.rtsp, "one") {
        Err(refusal) => verdict.check(refusal.method == "SETUP" && refusal.status == 461, || {
            format!("a new RTSP/UDP SETUP on `one` was refused wrongly: {refusal:?}")
        }),
        Ok(_) => verdict
            .0
            .push("a new RTSP/UDP session on `one` was accepted".into()),
    }
    let fresh_tcp = RtpWatch::rtsp_tcp(layout.rtsp, "one");
    verdict.check(fresh_tcp.wait_packets(20, Duration::from_secs(5)), || {
        "a new RTSP/TCP session on `one` got no RTP".into()
    });
    verdict.check(rig.count("SESSION_RECONFIGURED") == 1, || {
        format!(
            "{} SESSION_RECONFIGURED events, expected 1",
            rig.count("SESSION_RECONFIGURED")
        )
    });
    verdict.assert_clean(&rig);

    // UDP back on: new RTSP/UDP sessions on `one` play; nothing else notices.
    layout.point("one").protocols.push("udp");
    let changed = Instant::now();
    let reloaded = rig.apply(layout.clone(), Trigger::Command);
    let text = reloaded.command.map(|c| c.text).unwrap_or_default();
    assert!(
        text.contains("~one(+udp)"),
        "ferrocast reload printed: {text}"
    );
    let fresh_udp = RtpWatch::rtsp_udp(layout.rtsp, "one");
    let mut verdict = Verdict::default();
    verdict.check(fresh_udp.wait_packets(20, Duration::from_secs(5)), || {
        "a new RTSP/UDP session on `one` got no RTP after re-enabling udp".into()
    });
    std::thread::sleep(Duration::from_secs(1));
    one.judge(&mut verdict, changed, &[], &[Kind::RtspUdp]);
    two.judge(&mut verdict, changed, &[], &[]);
    verdict.untouched_rtp(
        "the RTSP/TCP session opened in between",
        &fresh_tcp,
        changed,
    );
    verdict.assert_clean(&rig);
}

#[test]
fn disabling_http_on_a_point_ends_only_its_http_sessions() {
    let (mut rig, one, two) = playing_both();

    let mut layout = rig.layout.clone();
    layout.point("one").protocols.retain(|p| *p != "http");
    let changed = rig.change(&layout, Trigger::Hangup);

    let mut verdict = Verdict::default();
    // The encoder's PUT is an HTTP session on `one` too: it ends with the player's GET, and
    // `one`'s other clients are held through the source's grace (null packets keep them busy).
    let held = Steady {
        max_gap: HELD_GAP,
        continuity: true,
    };
    one.judge_with(&mut verdict, changed, &[Kind::Http], &[], held);
    two.judge(&mut verdict, changed, &[], &[]);
    let reconfigured: Vec<String> = rig
        .server
        .logs()
        .lines()
        .filter(|l| l.contains("SESSION_RECONFIGURED"))
        .map(str::to_owned)
        .collect();
    verdict.check(
        reconfigured.len() == 2
            && reconfigured
                .iter()
                .all(|l| l.contains("HTTP was disabled on publishing point `one`")),
        || format!("expected the GET and the PUT of `one` to end: {reconfigured:#?}"),
    );
    verdict.check(get_status(layout.http, "/one") == 403, || {
        "a new GET /one is not refused with 403".into()
    });
    verdict.check(get_status(layout.http, "/two") == 200, || {
        "a new GET /two does not play".into()
    });
    verdict.check(describe(layout.rtsp, "one") == 200, || {
        "RTSP DESCRIBE of `one` fails".into()
    });
    verdict.assert_clean(&rig);
}

#[test]
fn adding_a_point_serves_it_at_once_and_removing_one_ends_only_its_sessions() {
    let (mut rig, one, two) = playing_both();

    let mut layout = rig.layout.clone();
    layout.points.push(PointDef {
        name: "three".into(),
        kind: "broadcast",
        source: "push".into(),
        protocols: vec!["http", "rtsp", "tcp"],
    });
    let changed = Instant::now();
    rig.apply(layout.clone(), Trigger::Hangup);
    rig.push("three");
    wait_until_live(layout.http, "/three", Duration::from_secs(15));
    let three_http = TsReader::http(layout.http, "/three");
    let three_rtsp = RtpWatch::rtsp_tcp(layout.rtsp, "three");
    assert!(three_http.wait_bytes(188 * 100, Duration::from_secs(10)));
    assert!(three_rtsp.wait_packets(20, Duration::from_secs(10)));
    let mut verdict = Verdict::default();
    one.judge(&mut verdict, changed, &[], &[]);
    two.judge(&mut verdict, changed, &[], &[]);
    verdict.assert_clean(&rig);

    // Remove `two`: its sessions (and its encoder) end; `one` and `three` carry on.
    layout.points.retain(|p| p.name != "two");
    let changed = rig.change(&layout, Trigger::Watch);
    let mut verdict = Verdict::default();
    one.judge(&mut verdict, changed, &[], &[]);
    two.judge_closed(&mut verdict);
    verdict.untouched_ts("HTTP on `three`", &three_http, changed);
    verdict.untouched_rtp("RTSP/TCP on `three`", &three_rtsp, changed);
    verdict.check(get_status(layout.http, "/two") == 404, || {
        "GET /two is not 404".into()
    });
    verdict.check(describe(layout.rtsp, "two") == 404, || {
        "RTSP DESCRIBE of `two` is not 404".into()
    });
    let late = TsReader::tcp(layout.raw_two);
    verdict.check(
        late.wait_end(Duration::from_secs(3)) && late.bytes() == 0,
        || "a raw TS client of the removed point was not turned away".into(),
    );
    verdict.check(get_status(layout.http, "/three") == 200, || {
        "GET /three does not play".into()
    });
    verdict.assert_clean(&rig);

    // Every session the removal ends says why, including those that see the stream end
    // before they see the reload (RTSP ones get an RTCP BYE as for a protocol removal).
    let removed = rig.count_lines(&["SESSION_RECONFIGURED", "publishing point `two` was removed"]);
    let mut verdict = Verdict::default();
    verdict.check(removed == 5, || {
        format!("{removed} SESSION_RECONFIGURED for `two`, expected 5 (4 players and the encoder)")
    });
    verdict.assert_clean(&rig);
}

#[test]
fn changing_a_source_from_push_to_pull_keeps_clients_attached() {
    let (mut rig, one, two) = playing_both();

    let (layout, changed) = rig.switch_one_to_pull(Trigger::Watch);

    let mut verdict = Verdict::default();
    // `one`'s clients stay attached and keep receiving through the switch (held with null
    // packets while the pull connects; RTP sequence numbers run on). The continuity counters
    // across the switch are checked by the next test.
    let held = Steady {
        max_gap: HELD_GAP,
        continuity: false,
    };
    one.judge_with(&mut verdict, changed, &[], &[], held);
    two.judge(&mut verdict, changed, &[], &[]);
    // `one` now relays `two`: a new client gets it, and the old encoder was let go.
    verdict.check(get_status(layout.http, "/one") == 200, || {
        "GET /one does not play".into()
    });
    let let_go = rig.count_lines(&["SESSION_RECONFIGURED", "encoders can no longer push to it"]);
    verdict.check(let_go == 1, || {
        "the encoder pushing to `one` was not ended".into()
    });
    verdict.assert_clean(&rig);
    // What `one`'s HTTP client got, before and after the switch, decodes as one stream.
    assert_decodes(rig.server.dir.path(), &one.http.body(), 75);
}

/// A source switch is seamless for the point's clients: the encoder the reload ends frees
/// the point at once (the pull is never refused), and the stream every client gets stays
/// valid MPEG-TS: continuity counters run on across the switch and across the PAT/PMT copies
/// a relay and its origin both insert.
#[test]
fn a_source_change_hands_over_without_silence_or_continuity_errors() {
    let mut rig = Rig::start(Layout::new());
    let one = Sessions::open(&rig.layout, "one");
    one.wait_flowing();
    std::thread::sleep(Duration::from_secs(1));

    let (_, changed) = rig.switch_one_to_pull(Trigger::Hangup);

    let mut verdict = Verdict::default();
    one.judge(&mut verdict, changed, &[], &[]);
    let waited = rig.count("is already publishing to this point");
    verdict.check(waited == 0, || {
        format!("the pull was refused {waited} time(s) while the ended encoder held the point")
    });
    verdict.assert_clean(&rig);
}

#[test]
fn moving_a_listener_keeps_its_sessions_and_a_port_in_use_changes_nothing() {
    let (mut rig, one, two) = playing_both();

    let old = rig.layout.http;
    let mut layout = rig.layout.clone();
    layout.http = loopback();
    let changed = rig.change(&layout, Trigger::Hangup);
    let mut verdict = Verdict::default();
    // The encoders' PUTs and the players' GETs were accepted on the old port: all continue.
    one.judge(&mut verdict, changed, &[], &[]);
    two.judge(&mut verdict, changed, &[], &[]);
    verdict.check(get_status(layout.http, "/one") == 200, || {
        format!("GET /one on the new port {} does not play", layout.http)
    });
    verdict.check(refuses_connections(old), || {
        format!("the old port {old} still accepts connections")
    });
    let status = rig.status();
    verdict.check(
        status.contains(&format!("listener http {}", layout.http))
            && !status.contains(&format!("listener http {old}")),
        || format!("status does not show the move: {status}"),
    );
    verdict.assert_clean(&rig);

    // A port another service holds: the old listener keeps serving.
    let holder = TcpListener::bind("127.0.0.1:0").expect("hold a port");
    let busy = holder.local_addr().unwrap();
    let mut taken = layout.clone();
    taken.http = busy;
    let changed = Instant::now();
    let reloaded = rig.reload_text(&taken.render(), Trigger::Command);
    std::thread::sleep(SETTLE);
    let mut verdict = Verdict::default();
    let command = verdict.failed(reloaded);
    verdict.check(command.text.contains(&busy.to_string()), || {
        format!("ferrocast reload does not name {busy}: {}", command.text)
    });
    verdict.check(rig.count("PORT_IN_USE") >= 1, || "no PORT_IN_USE".into());
    verdict.check(get_status(layout.http, "/one") == 200, || {
        format!("{} stopped serving", layout.http)
    });
    one.judge(&mut verdict, changed, &[], &[]);
    two.judge(&mut verdict, changed, &[], &[]);
    let status = rig.status();
    verdict.check(
        status.contains(&format!("listener http {}", layout.http)),
        || format!("status lost the listener: {status}"),
    );
    verdict.assert_clean(&rig);
    drop(holder);
}

#[test]
fn disabling_the_rtsp_plugin_ends_only_rtsp_sessions() {
    let (mut rig, one, two) = playing_both();

    let mut layout = rig.layout.clone();
    layout.rtsp_enabled = false;
    let changed = rig.change(&layout, Trigger::Command);
    let mut verdict = Verdict::default();
    one.judge(&mut verdict, changed, &[Kind::RtspUdp, Kind::RtspTcp], &[]);
    two.judge(&mut verdict, changed, &[Kind::RtspUdp, Kind::RtspTcp], &[]);
    verdict.check(refuses_connections(layout.rtsp), || {
        "the RTSP listener still accepts connections".into()
    });
    verdict.check(get_status(layout.http, "/one") == 200, || {
        "GET /one does not play".into()
    });
    let status = rig.status();
    verdict.check(!status.contains("listener rtsp"), || {
        format!("status still lists an RTSP listener: {status}")
    });
    verdict.assert_clean(&rig);
}

#[test]
fn an_invalid_configuration_changes_nothing() {
    let (mut rig, one, two) = playing_both();
    let status_before = rig.status();

    // An unknown key in `two`, and a protocol no plugin provides on `one`; every other change
    // in the file (dropping udp from `one`) must not be applied either.
    let mut broken = rig.layout.clone();
    broken.point("one").protocols = vec!["http", "rtsp", "tcp", "smtp"];
    let bad = broken.render().replacen(
        "name = \"two\"\n",
        "name = \"two\"\nprotocls = [\"http\"]\n",
        1,
    );
    let protocol_line = line_of(&bad, "protocols = [\"http\", \"rtsp\", \"tcp\", \"smtp\"]");
    let key_line = line_of(&bad, "protocls = [\"http\"]");
    let changed = Instant::now();
    let reloaded = rig.reload_text(&bad, Trigger::Command);
    std::thread::sleep(SETTLE);

    let mut verdict = Verdict::default();
    let command = verdict.failed(reloaded);
    for line in [protocol_line, key_line] {
        verdict.check(
            command.text.contains(&format!("ferrocast.toml:{line}:")),
            || {
                format!(
                    "ferrocast reload does not point at line {line}: {}",
                    command.text
                )
            },
        );
    }
    verdict.check(command.text.contains("smtp"), || {
        format!("the unknown protocol is not named: {}", command.text)
    });
    verdict.check(command.text.contains("protocls"), || {
        format!("the unknown key is not named: {}", command.text)
    });
    one.judge(&mut verdict, changed, &[], &[]);
    two.judge(&mut verdict, changed, &[], &[]);
    let status_after = rig.status();
    verdict.check(status_before == status_after, || {
        format!("status changed:\n{status_before}\n---\n{status_after}")
    });
    verdict.check(get_status(rig.layout.http, "/one") == 200, || {
        "GET /one does not play".into()
    });
    let fresh = RtpWatch::try_rtsp_udp(rig.layout.rtsp, "one");
    verdict.check(fresh.is_ok(), || {
        format!(
            "RTSP/UDP on `one` no longer plays: {:?}",
            fresh.as_ref().err()
        )
    });
    drop(fresh);
    verdict.assert_clean(&rig);
}

#[test]
fn draining_points_and_plugins_refuses_new_sessions_only() {
    let (rig, one, two) = playing_both();
    let (http, rtsp) = (rig.layout.http, rig.layout.rtsp);
    let run = |args: &[&str]| {
        let output = rig.server.command(args);
        assert_eq!(output.code, Some(0), "ferrocast {args:?}: {}", output.text);
    };

    let changed = Instant::now();
    let mut verdict = Verdict::default();
    run(&["drain", "point", "one"]);
    verdict.check(get_status(http, "/one") == 503, || {
        "GET /one is not 503".into()
    });
    verdict.check(get_status(http, "/two") == 200, || {
        "GET /two does not play".into()
    });
    verdict.check(describe(rtsp, "one") == 503, || {
        "RTSP DESCRIBE of a drained point is not 503".into()
    });
    let status = rig.status();
    verdict.check(
        status
            .lines()
            .any(|l| l.starts_with("point one ") && l.ends_with(" draining")),
        || format!("status does not show `one` draining: {status}"),
    );
    run(&["undrain", "point", "one"]);
    verdict.check(get_status(http, "/one") == 200, || {
        "GET /one does not play after undrain".into()
    });

    run(&["drain", "plugin", "http"]);
    verdict.check(get_status(http, "/one") == 503, || {
        "GET /one is not 503 while http drains".into()
    });
    verdict.check(get_status(http, "/two") == 503, || {
        "GET /two is not 503 while http drains".into()
    });
    verdict.check(describe(rtsp, "two") == 200, || {
        "RTSP is refused while only http drains".into()
    });
    run(&["undrain", "plugin", "http"]);
    verdict.check(get_status(http, "/two") == 200, || {
        "GET /two does not play after undrain".into()
    });
    let drains = rig.count("event=\"DRAIN\"");
    verdict.check(drains == 4, || format!("{drains} DRAIN events, expected 4"));
    std::thread::sleep(Duration::from_secs(1));
    one.judge(&mut verdict, changed, &[], &[]);
    two.judge(&mut verdict, changed, &[], &[]);
    verdict.assert_clean(&rig);
}

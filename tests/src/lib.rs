//! Support for ferrocast's integration tests: start the real `ferrocast` binary with real
//! plugin libraries on loopback ports, drive real clients (ffmpeg, ffprobe, raw HTTP), and read
//! what the server logged.
//!
//! Every wait here is bounded; a test that would hang fails with the server's log instead.
//!
//! Here: the server process, its configuration, plugin directories, HTTP exchanges, ffmpeg
//! encoders and players. Beside it: [`auth`] (hashed secrets), [`admin`] (the admin API's
//! table, requests and `/metrics`), [`rtsp`] (the one RTSP client), [`rtsp_rig`] (a server
//! serving RTSP), [`ts`] (the one MPEG-TS
//! reader and its continuity check), [`watch`] (RTSP session watchers), [`head`] (response
//! heads), [`paced`] (an encoder played by the test itself), [`proxy`] (network faults),
//! [`panicky`] (the panicking fixture plugin), [`bench`](mod@bench) (benchmark support) and, for
//! the fan-out benchmark, [`load`] (lean load clients) and [`ideal`] (the ideal server).

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

pub use tempfile::TempDir;

pub mod admin;
pub mod auth;
pub mod bench;
pub mod gst_reference;
pub mod head;
pub mod ideal;
pub mod load;
pub mod paced;
pub mod panicky;
pub mod proxy;
pub mod rtsp;
pub mod rtsp_rig;
mod timeline;
pub mod ts;
pub mod watch;

pub use rtsp::{RtspClient, RtspResponse};
pub use timeline::wait_until;
pub use ts::TsReader;

/// Name of the configuration file [`Ferrocast::spawn`] writes into the server's temp dir.
const CONFIG_FILE: &str = "ferrocast.toml";

/// The longest [`Ferrocast::command`] waits for a `ferrocast` command to finish.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ lives in the workspace")
        .to_owned()
}

/// `target/debug`, where `cargo build` puts the binary and the plugin libraries.
pub fn build_dir() -> PathBuf {
    // The test executable lives in target/debug/deps.
    let exe = std::env::current_exe().expect("test executable path");
    exe.parent()
        .and_then(Path::parent)
        .expect("target/debug")
        .to_owned()
}

/// Build the binary and every plugin once per test process, so that `cargo test` alone always
/// tests the current code (it does not place cdylibs in target/debug by itself).
pub fn ensure_built() {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "--workspace", "--quiet"])
            .current_dir(workspace())
            .status()
            .expect("run cargo build");
        assert!(status.success(), "cargo build --workspace failed");
    });
}

/// Path of a library built by the workspace, e.g. `libferrocast_http.so`.
pub fn built_library(file_name: &str) -> PathBuf {
    ensure_built();
    let path = build_dir().join(file_name);
    assert!(path.exists(), "{} was not built", path.display());
    path
}

pub fn ferrocast_binary() -> PathBuf {
    ensure_built();
    build_dir().join("ferrocast")
}

/// The sample shipped with the default configuration.
pub fn sample_ts() -> PathBuf {
    workspace().join("config/media/sample.ts")
}

/// A loopback port that was free a moment ago, and not handed out before in this process: the
/// kernel may give a just-released ephemeral port again, and a test asking for two ports in a
/// row must not get one twice.
pub fn free_port() -> u16 {
    static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    let mut handed_out = HANDED_OUT
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    for _ in 0..1000 {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("free port");
        if handed_out.insert(port) {
            return port;
        }
    }
    panic!("no loopback port that was not handed out before, in 1000 tries");
}

/// A plugin directory holding copies of the given libraries under the given names.
pub fn plugin_dir(libraries: &[(&str, &Path)]) -> TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    for (name, source) in libraries {
        std::fs::copy(source, dir.path().join(name)).expect("copy plugin");
    }
    dir
}

/// A plugin directory with the shipped plugins `names` (`"http"` is `libferrocast_http.so`).
pub fn shipped_plugins_dir(names: &[&str]) -> TempDir {
    let libraries: Vec<(String, PathBuf)> = names
        .iter()
        .map(|name| {
            let file = format!("libferrocast_{name}.so");
            let path = built_library(&file);
            (file, path)
        })
        .collect();
    let borrowed: Vec<(&str, &Path)> = libraries
        .iter()
        .map(|(name, path)| (name.as_str(), path.as_path()))
        .collect();
    plugin_dir(&borrowed)
}

/// A plugin directory with the HTTP plugin (and the example plugin).
pub fn standard_plugin_dir() -> TempDir {
    shipped_plugins_dir(&["http", "example"])
}

/// A plugin directory with every shipped plugin.
pub fn all_plugins_dir() -> TempDir {
    shipped_plugins_dir(&["http", "rtsp", "udp", "tcp", "ws", "rtmp", "example"])
}

/// Wait up to `timeout` for `child` to exit; its status if it did.
pub fn wait_child(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let mut status = None;
    wait_until(timeout, || {
        status = child.try_wait().expect("try_wait");
        status.is_some()
    });
    status
}

/// Output captured from a child process, line by line, as it is produced.
#[derive(Clone, Default)]
pub struct Captured {
    text: Arc<Mutex<String>>,
    /// Streams attached and not read to their end yet.
    open: Arc<AtomicUsize>,
}

impl Captured {
    /// Collect everything `stream` yields, on a thread of its own.
    pub fn attach(&self, stream: impl Read + Send + 'static) {
        let sink = self.text.clone();
        let open = self.open.clone();
        open.fetch_add(1, Ordering::SeqCst);
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                let mut text = sink.lock().unwrap();
                text.push_str(&line);
                text.push('\n');
            }
            open.fetch_sub(1, Ordering::SeqCst);
        });
    }

    pub fn text(&self) -> String {
        self.text.lock().unwrap().clone()
    }

    /// Wait (within `timeout`) until every attached stream was read to its end (its process
    /// exited and closed it); whether they all were.
    pub fn wait_closed(&self, timeout: Duration) -> bool {
        wait_until(timeout, || self.open.load(Ordering::SeqCst) == 0)
    }
}

/// A running `ferrocast` process. Killed on drop.
pub struct Ferrocast {
    child: Child,
    pub output: Captured,
    pub dir: TempDir,
    pub http: SocketAddr,
}

impl Ferrocast {
    /// Start ferrocast with `config` (TOML written to a temp dir; `{dir}` is replaced by that
    /// dir) and the plugins in `plugins`, and wait until it listens on `http` (if given).
    pub fn start(config: &str, plugins: &Path, http: SocketAddr) -> Self {
        let server = Self::spawn(config, plugins, http);
        server.wait_for("listening on", Duration::from_secs(20));
        server
    }

    /// Start without waiting for anything.
    pub fn spawn(config: &str, plugins: &Path, http: SocketAddr) -> Self {
        Self::spawn_with_env(config, plugins, http, &[])
    }

    /// [`Self::start`] with environment variables set for the server.
    pub fn start_with_env(
        config: &str,
        plugins: &Path,
        http: SocketAddr,
        env: &[(&str, &str)],
    ) -> Self {
        let server = Self::spawn_with_env(config, plugins, http, env);
        server.wait_for("listening on", Duration::from_secs(20));
        server
    }

    /// [`Self::spawn`] with environment variables set for the server.
    pub fn spawn_with_env(
        config: &str,
        plugins: &Path,
        http: SocketAddr,
        env: &[(&str, &str)],
    ) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = config.replace("{dir}", &dir.path().display().to_string());
        let config_path = dir.path().join(CONFIG_FILE);
        std::fs::write(&config_path, config).expect("write config");
        let mut child = Command::new(ferrocast_binary())
            .arg("--config")
            .arg(&config_path)
            .arg("--plugin-dir")
            .arg(plugins)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start ferrocast");
        let output = Captured::default();
        output.attach(child.stdout.take().unwrap());
        output.attach(child.stderr.take().unwrap());
        Self {
            child,
            output,
            dir,
            http,
        }
    }

    /// The server's resident memory in KiB, from /proc.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("read the server's /proc status");
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc status")
    }

    /// Wait until the output contains `needle`; panic with the output if it does not in time.
    pub fn wait_for(&self, needle: &str, timeout: Duration) {
        assert!(
            wait_until(timeout, || self.output.text().contains(needle)),
            "ferrocast did not print {needle:?} within {timeout:?}; output:\n{}",
            self.output.text()
        );
    }

    /// Wait for the process to exit on its own.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let Some(status) = wait_child(&mut self.child, timeout) else {
            panic!(
                "ferrocast did not exit within {timeout:?}; output:\n{}",
                self.output.text()
            );
        };
        // Let the reader threads drain the pipes.
        std::thread::sleep(Duration::from_millis(200));
        status
    }

    pub fn logs(&self) -> String {
        self.output.text()
    }

    /// The server's process id (for its memory and descriptors under /proc, or `prlimit`).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Send a signal to the server (`"USR1"` asks for the status of every point).
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} failed");
    }

    /// The plugin generations `ferrocast status` lists.
    pub fn plugin_generations(&self) -> Vec<GenerationStatus> {
        let status = self.command(&["status"]);
        assert_eq!(
            status.code,
            Some(0),
            "ferrocast status failed: {}",
            status.text
        );
        status
            .text
            .lines()
            .filter_map(|line| {
                let words: Vec<&str> = line.split_whitespace().collect();
                match words.as_slice() {
                    ["plugin", plugin, "generation", generation, "version", version, "sessions", sessions, role, ..] => {
                        Some(GenerationStatus {
                            plugin: (*plugin).to_owned(),
                            generation: generation.parse().ok()?,
                            version: (*version).to_owned(),
                            sessions: sessions.parse().ok()?,
                            role: (*role).to_owned(),
                        })
                    }
                    _ => None,
                }
            })
            .collect()
    }

    /// The generations of one plugin, as `ferrocast status` lists them.
    pub fn generations_of(&self, plugin: &str) -> Vec<GenerationStatus> {
        self.plugin_generations()
            .into_iter()
            .filter(|g| g.plugin == plugin)
            .collect()
    }

    /// Wait until the log holds `needle` at least `count` times; panic with the log if it does
    /// not within `timeout`.
    pub fn wait_for_count(&self, needle: &str, count: usize, timeout: Duration) {
        assert!(
            wait_until(timeout, || self.logs().matches(needle).count() >= count),
            "the server did not log {needle} {count} time(s) within {timeout:?}; log:\n{}",
            self.logs()
        );
    }

    /// The log lines holding `event`.
    pub fn event_lines(&self, event: &str) -> Vec<String> {
        let needle = format!("event=\"{event}\"");
        self.logs()
            .lines()
            .filter(|l| l.contains(&needle))
            .map(str::to_owned)
            .collect()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}/{}", self.http, path.trim_start_matches('/'))
    }

    /// The server's configuration file (rewrite it, then reload, to reconfigure the server).
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join(CONFIG_FILE)
    }

    /// Run `ferrocast --config <the server's config file> <args>` (a control command such as
    /// `status` or `reload`) and return its exit code and stdout + stderr.
    ///
    /// Bounded: a command that has not finished within 30 s is killed, and this panics with
    /// what it printed and the server's log. Its output is read while it runs (a chatty
    /// command cannot block on a full pipe), and this returns as soon as it has exited, so
    /// timing the call times the command's round trip.
    pub fn command(&self, args: &[&str]) -> CommandOutput {
        let child = Command::new(ferrocast_binary())
            .arg("--config")
            .arg(self.config_path())
            .args(args)
            // Always the control socket, whatever the caller's environment holds.
            .env_remove("FERROCAST_ADMIN_TOKEN")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run ferrocast");
        let pid = child.id();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait_with_output());
        });
        let command = format!("ferrocast {}", args.join(" "));
        match rx.recv_timeout(COMMAND_TIMEOUT) {
            Ok(Ok(output)) => CommandOutput::from(output),
            Ok(Err(error)) => panic!("`{command}` failed: {error}"),
            Err(_) => {
                // The waiting thread still owns the child (it has not reaped it, so the pid is
                // still the child's): kill it by pid, then let that thread reap it.
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
                let printed = match rx.recv_timeout(Duration::from_secs(5)) {
                    Ok(Ok(output)) => CommandOutput::from(output).text,
                    _ => "(nothing collected)".into(),
                };
                panic!(
                    "`{command}` did not finish within {COMMAND_TIMEOUT:?} and was killed; \
                     it printed:\n{printed}\nserver log:\n{}",
                    self.logs()
                );
            }
        }
    }
}

/// How a `ferrocast` command run by [`Ferrocast::command`] ended.
#[derive(Debug)]
pub struct CommandOutput {
    /// The exit code (`None` if a signal ended it).
    pub code: Option<i32>,
    /// Its stdout followed by its stderr.
    pub text: String,
}

impl From<std::process::Output> for CommandOutput {
    fn from(output: std::process::Output) -> Self {
        Self {
            code: output.status.code(),
            text: format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ),
        }
    }
}

impl Drop for Ferrocast {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One `plugin …` line of `ferrocast status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenerationStatus {
    pub plugin: String,
    pub generation: u64,
    pub version: String,
    pub sessions: usize,
    /// `current` (new sessions get it) or `draining` (replaced, still serving its sessions).
    pub role: String,
}

/// Generation `number` among `generations`.
pub fn generation(generations: &[GenerationStatus], number: u64) -> Option<&GenerationStatus> {
    generations.iter().find(|g| g.generation == number)
}

/// The value of `key=value` in a log line (exact key: `generation` is not
/// `previous_generation`).
pub fn log_field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split_whitespace().find_map(|word| {
        let (k, v) = word.split_once('=')?;
        (k == key).then(|| v.trim_matches('"'))
    })
}

/// Install `source` as `dir/name` the way an installer does: write `name.tmp` next to it,
/// then rename it over `name` (a new inode, so a new build to the server).
pub fn install_build(dir: &Path, name: &str, source: &Path) {
    let temporary = dir.join(format!("{name}.tmp"));
    std::fs::copy(source, &temporary).expect("copy the new build");
    std::fs::rename(&temporary, dir.join(name)).expect("rename the new build into place");
}

/// A parsed HTTP response.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub head: String,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<String> {
        head::header(&self.head, name)
    }

    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Send `request` (raw bytes) and read the response head plus up to `max_body` bytes of body
/// (or Content-Length, if smaller), within `timeout`.
pub fn http_exchange(
    address: SocketAddr,
    request: &[u8],
    max_body: usize,
    timeout: Duration,
) -> std::io::Result<Response> {
    let mut stream = TcpStream::connect_timeout(&address, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.write_all(request)?;
    read_response(&mut stream, max_body, timeout)
}

/// Read one response from `stream`.
pub fn read_response(
    stream: &mut TcpStream,
    max_body: usize,
    timeout: Duration,
) -> std::io::Result<Response> {
    let deadline = Instant::now() + timeout;
    let mut data = Vec::new();
    let mut buf = [0u8; 65536];
    let head_end = loop {
        if let Some(end) = head::head_end(&data) {
            break end;
        }
        if Instant::now() > deadline {
            return Err(std::io::ErrorKind::TimedOut.into());
        }
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!(
                    "connection closed before a full head: {:?}",
                    String::from_utf8_lossy(&data)
                ),
            ));
        }
        data.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&data[..head_end]).into_owned();
    let mut response = Response {
        status: head::status_code(&head),
        head,
        body: data[head_end..].to_vec(),
    };
    let limit = head::content_length(&response.head).map_or(max_body, |len| len.min(max_body));
    while response.body.len() < limit && Instant::now() < deadline {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => response.body.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => break,
            Err(e) => return Err(e),
        }
    }
    response
        .body
        .truncate(limit.max(response.body.len().min(limit)));
    Ok(response)
}

/// `GET /path` and read up to `max_body` bytes.
pub fn http_get(address: SocketAddr, path: &str, max_body: usize) -> Response {
    let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    http_exchange(
        address,
        request.as_bytes(),
        max_body,
        Duration::from_secs(10),
    )
    .unwrap_or_else(|e| panic!("GET {path} failed: {e}"))
}

/// An ffmpeg encoder pushing a generated test pattern (H.264 + AAC, one keyframe a second) in
/// real time to `url` with HTTP PUT, for `seconds`. Killed on drop.
pub struct Encoder {
    child: Child,
    pub output: Captured,
}

impl Encoder {
    pub fn push(url: &str, seconds: u32) -> Self {
        Self::start(test_pattern(seconds).args(["-f", "mpegts", "-method", "PUT", url]))
    }

    /// The same test pattern and tone published over RTMP (FLV) to `url` (`rtmp://` or
    /// `rtmps://`), in real time for `seconds`. Killed on drop.
    pub fn publish_rtmp(url: &str, seconds: u32) -> Self {
        Self::start(test_pattern(seconds).args(["-f", "flv", url]))
    }

    /// Wait (within `timeout`) for ffmpeg to give up, which it must, unsuccessfully; what it
    /// printed.
    pub fn refused(mut self, timeout: Duration) -> String {
        let status = self.wait(timeout).expect("ffmpeg must give up");
        self.output.wait_closed(Duration::from_secs(5));
        let errors = self.output.text();
        assert!(!status.success(), "ffmpeg went on: {errors}");
        errors
    }

    fn start(command: &mut Command) -> Self {
        let mut child = command
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start ffmpeg (is it installed? .ci/run installs it)");
        let output = Captured::default();
        output.attach(child.stderr.take().unwrap());
        Self { child, output }
    }

    /// Push to the point `live` of `server` for `seconds`, and wait (15 s at most) until it
    /// plays.
    pub fn push_live(server: &Ferrocast, seconds: u32) -> Self {
        let encoder = Self::push(&server.url("live"), seconds);
        wait_until_live(server.http, "/live", Duration::from_secs(15));
        encoder
    }

    pub fn wait(&mut self, timeout: Duration) -> Option<ExitStatus> {
        wait_child(&mut self.child, timeout)
    }
}

impl Drop for Encoder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// ffmpeg encoding a generated test pattern and tone (H.264 with a keyframe a second, AAC) in
/// real time for `seconds`, logging errors only; the output format and URL are the caller's.
/// A looped file copied as is would jump back in time at every loop, which players report as
/// errors.
fn test_pattern(seconds: u32) -> Command {
    let mut command = Command::new("ffmpeg");
    command
        .args(["-hide_banner", "-loglevel", "error", "-nostdin", "-re"])
        .args(["-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25"])
        .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"])
        .args(["-t", &seconds.to_string()])
        .args([
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-tune",
            "zerolatency",
        ])
        .args([
            "-g",
            "25",
            "-keyint_min",
            "25",
            "-pix_fmt",
            "yuv420p",
            "-b:v",
            "400k",
        ])
        .args(["-c:a", "aac", "-b:a", "64k"]);
    command
}

/// An encoder pushing to `push_url` (the server's `live`, or a path to it) for 60 s and,
/// once `/live` plays, a client reading it from `server`, given two seconds to settle.
pub fn push_and_play(server: &Ferrocast, push_url: &str) -> (Encoder, TsReader) {
    let encoder = Encoder::push(push_url, 60);
    wait_until_live(server.http, "/live", Duration::from_secs(15));
    let reader = TsReader::http(server.http, "/live");
    std::thread::sleep(Duration::from_secs(2));
    (encoder, reader)
}

/// Poll `GET path` until it answers 200 (the encoder is connected), within `timeout`.
pub fn wait_until_live(address: SocketAddr, path: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    let mut last = String::new();
    while Instant::now() < deadline {
        let request = format!("HEAD {path} HTTP/1.1\r\nHost: t\r\n\r\n");
        match http_exchange(address, request.as_bytes(), 0, Duration::from_secs(2)) {
            Ok(r) if r.status == 200 => {
                // HEAD answers 200 for a broadcast point even before a source; a GET proves it.
                let get = http_get(address, path, 188);
                if get.status == 200 {
                    return;
                }
                last = format!("GET {}: {}", get.status, get.body_text());
            }
            Ok(r) => last = format!("HEAD {}: {}", r.status, r.head),
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("{path} did not go live within {timeout:?}; last answer: {last}");
}

/// What a player made of a stream.
#[derive(Debug)]
pub struct Decoded {
    pub status: ExitStatus,
    /// ffmpeg's messages at level `error` and above: empty for a clean decode.
    pub errors: String,
    pub video_frames: u64,
}

impl Decoded {
    /// Require a clean decode (no error messages) of at least `min_frames` video frames;
    /// `what` names the stream in the failure.
    pub fn assert_clean(&self, min_frames: u64, what: &str) {
        assert!(
            self.errors.trim().is_empty(),
            "{what}: decoder errors: {}",
            self.errors
        );
        assert!(
            self.video_frames >= min_frames,
            "{what}: only {} frames",
            self.video_frames
        );
    }
}

/// Decode `input` fully with ffmpeg (`extra` goes before `-i`, e.g. `-ss 5`), counting video
/// frames and collecting decoder errors. `limit_seconds` caps the decoded duration.
pub fn decode(input: &str, extra: &[&str], limit_seconds: Option<f64>) -> Decoded {
    let mut command = Command::new("ffmpeg");
    // Bounded waits: a stream that stops must fail the test, not hang it.
    let timeout = if input.starts_with("rtsp://") || input.starts_with("rtsps://") {
        ["-timeout", "10000000"]
    } else {
        ["-rw_timeout", "10000000"]
    };
    command
        .args(["-hide_banner", "-nostdin", "-loglevel", "error"])
        .args(timeout)
        .args(extra)
        .args(["-i", input]);
    if let Some(limit) = limit_seconds {
        command.args(["-t", &limit.to_string()]);
    }
    command
        .args(["-map", "0:v:0", "-f", "framecrc", "-"])
        .stdin(Stdio::null());
    let output = command.output().expect("run ffmpeg");
    Decoded {
        status: output.status,
        errors: String::from_utf8_lossy(&output.stderr).into_owned(),
        video_frames: framecrc_frames(&output.stdout),
    }
}

/// The frames listed in ffmpeg's `framecrc` output (one line each; comments start with `#`).
pub fn framecrc_frames(output: &[u8]) -> u64 {
    String::from_utf8_lossy(output)
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .count() as u64
}

/// Decode a captured MPEG-TS `body` (written into `dir`) in full and require a clean decode
/// with at least `min_frames` video frames.
pub fn assert_decodes(dir: &Path, body: &[u8], min_frames: u64) {
    let file = dir.join("captured.ts");
    std::fs::write(&file, body).expect("write capture");
    let decoded = decode(&file.display().to_string(), &[], None);
    decoded.assert_clean(min_frames, "the capture");
}

/// The first `count` video frames of `input` as `(key_frame, pict_type)`, from ffprobe.
pub fn first_frames(input: &str, count: usize) -> (Vec<(bool, String)>, String) {
    let output = Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v:0"])
        .args(["-show_entries", "frame=key_frame,pict_type"])
        .args(["-read_intervals", &format!("%+#{count}")])
        .args(["-of", "csv=p=0", input])
        .stdin(Stdio::null())
        .output()
        .expect("run ffprobe");
    let frames = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| {
            let mut fields = line.split(',');
            let key = fields.next()?.trim() == "1";
            let pict = fields.next().unwrap_or("").trim().to_owned();
            Some((key, pict))
        })
        .collect();
    (frames, String::from_utf8_lossy(&output.stderr).into_owned())
}

/// `ferrocast --check-config <file>` with the plugins in `plugins`: how it exited and what it
/// printed.
pub fn check_config_file(file: &Path, plugins: &Path) -> std::process::Output {
    Command::new(ferrocast_binary())
        .arg("--check-config")
        .arg(file)
        .arg("--plugin-dir")
        .arg(plugins)
        .stdin(Stdio::null())
        .output()
        .expect("run ferrocast --check-config")
}

/// [`check_config_file`] of `config` (TOML), written to a `ferrocast.toml` of its own.
pub fn check_config(config: &str, plugins: &Path) -> std::process::Output {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join(CONFIG_FILE);
    std::fs::write(&file, config).expect("write config");
    check_config_file(&file, plugins)
}

/// A minimal config for tests: HTTP on `http`, the points given as TOML.
pub fn config_with(http: SocketAddr, points: &str) -> String {
    format!(
        "[server]\nwrite_timeout_ms = 5000\n\n[plugins.http]\nlisten = [\"{http}\"]\n\n{points}"
    )
}

/// Start ferrocast with the HTTP (and example) plugins on a fresh loopback port, serving
/// `points` (TOML). The plugin directory must outlive the server, so it is returned too.
pub fn start_with_points(points: &str) -> (Ferrocast, TempDir) {
    let plugins = standard_plugin_dir();
    let address = loopback();
    let server = Ferrocast::start(&config_with(address, points), plugins.path(), address);
    (server, plugins)
}

/// Standard points: a live push point and the on-demand sample.
pub fn standard_points() -> String {
    let sample = sample_ts().display().to_string();
    format!(
        "{}\n{}",
        point_toml("live", "broadcast", "push", &["http"]),
        point_toml("vod", "on-demand", &sample, &["http"])
    )
}

/// One `[[point]]` table of the configuration.
pub fn point_toml(name: &str, kind: &str, source: &str, protocols: &[&str]) -> String {
    let protocols: Vec<String> = protocols.iter().map(|p| format!("\"{p}\"")).collect();
    format!(
        "[[point]]\nname = \"{name}\"\nkind = \"{kind}\"\nsource = \"{source}\"\nprotocols = [{}]\n",
        protocols.join(", ")
    )
}

/// Loopback address with a fresh port.
pub fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

impl Encoder {
    /// The encoder's process id (to stop it with a signal, simulating a stalled encoder).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Send a signal (`"STOP"`, `"CONT"`, `"KILL"`) to the encoder process.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} failed");
    }
}

//! GStreamer's rtsp-server as a reference server for the benchmarks: starts
//! `tests/reference/gst_rtsp_server.py` (GstRtspServer through PyGObject) serving a sample
//! looped in real time as one shared live media, waits until it answers RTSP, gives its
//! process id for CPU and RSS figures, and stops it on drop.

use std::fmt;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::workspace;

/// The Debian packages the reference server needs.
pub const DEBIAN_PACKAGES: &str = "python3-gi python3-gst-1.0 gir1.2-gst-rtsp-server-1.0";
/// Interpreters tried in turn: Debian's own first (its `python3-gi` is not visible to a
/// python3 from pyenv or a virtualenv earlier in PATH), then whichever `python3` is in PATH.
const INTERPRETERS: [&str; 2] = ["/usr/bin/python3", "python3"];
/// What the bindings check imports.
const IMPORT_CHECK: &str = "import gi; gi.require_version('Gst', '1.0'); \
     gi.require_version('GstRtspServer', '1.0'); from gi.repository import Gst, GstRtspServer";
/// How long the server may take to answer its first OPTIONS.
const START_TIMEOUT: Duration = Duration::from_secs(15);

/// Why the reference server could not be started.
#[derive(Debug)]
pub enum GstReferenceError {
    /// No interpreter could import GstRtspServer; `detail` is the last one's complaint.
    MissingBindings { detail: String },
    /// The interpreter could not be started at all.
    Spawn {
        interpreter: String,
        source: std::io::Error,
    },
    /// The server exited before answering; `log` is what it wrote.
    Exited { address: SocketAddr, log: String },
    /// The server did not answer OPTIONS with 200 within the start timeout.
    NoAnswer {
        address: SocketAddr,
        last: String,
        log: String,
    },
}

impl fmt::Display for GstReferenceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::MissingBindings { detail } => write!(
                f,
                "the GStreamer Python bindings are missing (tried {}): apt-get install {DEBIAN_PACKAGES} ({detail})",
                INTERPRETERS.join(", ")
            ),
            Self::Spawn {
                interpreter,
                source,
            } => write!(f, "cannot start {interpreter}: {source}"),
            Self::Exited { address, log } => write!(
                f,
                "the GStreamer reference server for {address} exited before answering: {log}"
            ),
            Self::NoAnswer { address, last, log } => write!(
                f,
                "the GStreamer reference server did not answer OPTIONS on {address} within {START_TIMEOUT:?} (last: {last}); its log: {log}"
            ),
        }
    }
}

impl std::error::Error for GstReferenceError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Spawn { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// A running GStreamer rtsp-server; killed on drop.
pub struct GstReference {
    child: Child,
    /// Where it answers RTSP.
    pub address: SocketAddr,
    /// Its standard error, kept in a file so that a chatty server never blocks on a pipe.
    log: tempfile::NamedTempFile,
}

impl GstReference {
    /// The reference server script in the source tree.
    pub fn script() -> PathBuf {
        workspace().join("tests/reference/gst_rtsp_server.py")
    }

    /// Serve `sample` at `rtsp://address{path}`, fed `per_tick` bytes every 40 ms, looped; return
    /// once it answers OPTIONS.
    pub fn start(
        address: SocketAddr,
        path: &str,
        sample: &Path,
        per_tick: usize,
    ) -> Result<Self, GstReferenceError> {
        let interpreter = interpreter_with_bindings()?;
        let log = tempfile::NamedTempFile::new().map_err(|source| GstReferenceError::Spawn {
            interpreter: interpreter.clone(),
            source,
        })?;
        let spawned = log.reopen().and_then(|stderr| {
            Command::new(&interpreter)
                .arg(Self::script())
                .args(["--address", &address.ip().to_string()])
                .args(["--port", &address.port().to_string()])
                .args(["--path", path])
                .arg("--sample")
                .arg(sample)
                .args(["--per-tick", &per_tick.to_string()])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(stderr)
                .spawn()
        });
        let child = spawned.map_err(|source| GstReferenceError::Spawn {
            interpreter,
            source,
        })?;
        let mut server = Self {
            child,
            address,
            log,
        };
        server.wait_for_options(path)?;
        Ok(server)
    }

    /// The server's process id (its GStreamer threads are all in it).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }

    fn wait_for_options(&mut self, path: &str) -> Result<(), GstReferenceError> {
        let deadline = Instant::now() + START_TIMEOUT;
        let mut last = String::from("no attempt");
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return Err(GstReferenceError::Exited {
                    address: self.address,
                    log: self.log_text(),
                });
            }
            match options_status(self.address, path) {
                Ok(200) => return Ok(()),
                Ok(status) => last = format!("status {status}"),
                Err(error) => last = error.to_string(),
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(GstReferenceError::NoAnswer {
            address: self.address,
            last,
            log: self.log_text(),
        })
    }
}

impl Drop for GstReference {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The first interpreter that can import GstRtspServer.
fn interpreter_with_bindings() -> Result<String, GstReferenceError> {
    let mut detail = String::new();
    for interpreter in INTERPRETERS {
        match Command::new(interpreter)
            .args(["-c", IMPORT_CHECK])
            .stdin(Stdio::null())
            .output()
        {
            Ok(output) if output.status.success() => return Ok(interpreter.to_owned()),
            Ok(output) => {
                let stderr = String::from_utf8_lossy(&output.stderr);
                detail = format!(
                    "{interpreter}: {}",
                    stderr.trim().lines().last().unwrap_or("failed")
                );
            }
            Err(error) => detail = format!("{interpreter}: {error}"),
        }
    }
    Err(GstReferenceError::MissingBindings { detail })
}

/// One OPTIONS request on a fresh connection; the response's status code.
fn options_status(address: SocketAddr, path: &str) -> std::io::Result<u16> {
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(1))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    let request = format!("OPTIONS rtsp://{address}{path} RTSP/1.0\r\nCSeq: 1\r\n\r\n");
    stream.write_all(request.as_bytes())?;
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    while !answer.windows(4).any(|w| w == b"\r\n\r\n") && answer.len() < 16 * 1024 {
        match stream.read(&mut buf)? {
            0 => break,
            n => answer.extend_from_slice(&buf[..n]),
        }
    }
    let head = String::from_utf8_lossy(&answer);
    head.strip_prefix("RTSP/1.0 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("not an RTSP answer: {head:?}"),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_binding_names_the_debian_packages() {
        let error = GstReferenceError::MissingBindings {
            detail: "python3: ModuleNotFoundError: No module named 'gi'".into(),
        };
        let text = error.to_string();
        for package in DEBIAN_PACKAGES.split(' ') {
            assert!(text.contains(package), "{text}");
        }
    }

    #[test]
    fn the_script_is_in_the_tree() {
        assert!(GstReference::script().is_file());
    }

    /// Needs GStreamer's Python bindings (see [`DEBIAN_PACKAGES`]), which CI does not
    /// install: `cargo test -p ferrocast-tests --lib gst_reference -- --ignored`.
    #[test]
    #[ignore = "needs the GStreamer Python bindings"]
    fn the_reference_serves_the_sample_seven_ts_packets_per_rtp_packet() {
        use crate::rtsp::RtspClient;
        use crate::ts::TS_PACKET;

        let sample = crate::sample_ts();
        let per_tick = crate::paced::bytes_per_tick(&std::fs::read(&sample).unwrap());
        let address = crate::loopback();
        let server = GstReference::start(address, "/live", &sample, per_tick)
            .unwrap_or_else(|error| panic!("{error}"));
        let mut client = RtspClient::connect(server.address);
        let url = format!("rtsp://{address}/live");
        client
            .play_first_track(&url, "RTP/AVP/TCP;unicast;interleaved=0-1", &mut ())
            .expect("PLAY");
        client.receive_for(Duration::from_secs(2));
        let payloads: Vec<usize> = client.rtp.iter().map(|(_, _, p)| p.len()).collect();
        assert!(payloads.len() > 20, "{} RTP packets", payloads.len());
        assert!(
            payloads
                .iter()
                .all(|&len| len % TS_PACKET == 0 && len <= 7 * TS_PACKET),
            "{payloads:?}"
        );
        assert!(payloads.contains(&(7 * TS_PACKET)), "{payloads:?}");
        let ts = client.transport_stream();
        assert!(ts.chunks(TS_PACKET).all(|packet| packet[0] == 0x47));
        // About real time: 2 s of the stream, give or take the join.
        let seconds = ts.len() as f64 / (per_tick as f64 * 25.0);
        assert!(
            (1.0..3.0).contains(&seconds),
            "{seconds} s of stream in 2 s"
        );
    }
}

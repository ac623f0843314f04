//! The control socket: how `ferrocast reload`, `ferrocast status` and `ferrocast drain` reach
//! the running server.
//!
//! A Unix socket (its file permissions are its access control) with a one-request protocol:
//! the client sends one line (`reload`, `status`, `drain point live`, `undrain plugin http`),
//! the server answers `ok` or `error` on the first line, then human-readable text, and
//! closes.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::net::UnixListener;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

/// Longest request line accepted.
const MAX_REQUEST: usize = 1024;
/// A reload compiles the configuration and may load plugins; give it time.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);

/// What the operator asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Reload the configuration, then look for new plugin builds.
    Reload,
    /// Look for new plugin builds only.
    ReloadPlugins,
    Status,
    Drain {
        target: DrainTarget,
        name: String,
        on: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrainTarget {
    Point,
    Plugin,
}

impl DrainTarget {
    pub fn as_str(self) -> &'static str {
        match self {
            DrainTarget::Point => "point",
            DrainTarget::Plugin => "plugin",
        }
    }
}

impl Request {
    pub fn parse(line: &str) -> Result<Self, String> {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["reload"] => Ok(Request::Reload),
            ["reload", "plugins"] => Ok(Request::ReloadPlugins),
            ["status"] => Ok(Request::Status),
            [verb @ ("drain" | "undrain"), target, name] => {
                let target = match *target {
                    "point" => DrainTarget::Point,
                    "plugin" => DrainTarget::Plugin,
                    other => {
                        return Err(format!(
                            "unknown drain target `{other}`; use `point` or `plugin`"
                        ))
                    }
                };
                Ok(Request::Drain {
                    target,
                    name: (*name).to_owned(),
                    on: *verb == "drain",
                })
            }
            _ => Err(format!(
                "unknown request `{}`; expected reload, reload plugins, status, drain point|plugin NAME or undrain point|plugin NAME",
                line.trim()
            )),
        }
    }

    pub fn to_line(&self) -> String {
        match self {
            Request::Reload => "reload".into(),
            Request::ReloadPlugins => "reload plugins".into(),
            Request::Status => "status".into(),
            Request::Drain { target, name, on } => format!(
                "{} {} {name}",
                if *on { "drain" } else { "undrain" },
                target.as_str()
            ),
        }
    }
}

/// The server's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub ok: bool,
    pub text: String,
}

/// A request on its way to the server's control loop, with where to send the answer.
pub type Envelope = (Request, oneshot::Sender<Reply>);

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("cannot reach the server's control socket {path}: {source}; is ferrocast running with this configuration? (set [server] control_socket or pass --control-socket)")]
    Connect {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the control socket {path} failed: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the server at {0} sent an answer that is not ok/error")]
    Malformed(PathBuf),
}

/// The control socket used when `[server] control_socket` is not set: a name derived from
/// the configuration file's absolute path, so a server and the commands run against the same
/// file meet without configuration, and servers on different files do not collide.
pub fn default_socket_path(config: &Path) -> PathBuf {
    let absolute = std::fs::canonicalize(config).unwrap_or_else(|_| config.to_owned());
    // FNV-1a: stable across builds, unlike std's hasher.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in absolute.as_os_str().as_encoded_bytes() {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    std::env::temp_dir().join(format!("ferrocast-{hash:016x}.sock"))
}

/// Send one request and wait for the answer.
pub fn request(path: &Path, request: &Request) -> Result<Reply, ControlError> {
    let io = |source| ControlError::Io {
        path: path.to_owned(),
        source,
    };
    let mut stream = UnixStream::connect(path).map_err(|source| ControlError::Connect {
        path: path.to_owned(),
        source,
    })?;
    stream.set_read_timeout(Some(CLIENT_TIMEOUT)).map_err(io)?;
    stream
        .write_all(format!("{}\n", request.to_line()).as_bytes())
        .map_err(io)?;
    let mut reader = BufReader::new(stream);
    let mut status = String::new();
    reader.read_line(&mut status).map_err(io)?;
    let ok = match status.trim_end() {
        "ok" => true,
        "error" => false,
        _ => return Err(ControlError::Malformed(path.to_owned())),
    };
    let mut text = String::new();
    reader.read_to_string(&mut text).map_err(io)?;
    Ok(Reply { ok, text })
}

/// Bind the control socket, replacing a stale socket file left by a server that is gone.
/// A live server on the same path is left alone (the error says so).
pub fn bind(path: &Path) -> std::io::Result<UnixListener> {
    match UnixListener::bind(path) {
        Err(error) if error.kind() == std::io::ErrorKind::AddrInUse => {
            if UnixStream::connect(path).is_ok() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::AddrInUse,
                    "another ferrocast answers on it; give each server its own [server] control_socket",
                ));
            }
            std::fs::remove_file(path)?;
            UnixListener::bind(path)
        }
        other => other,
    }
}

/// Accept control connections until the task is aborted, handing requests to the control
/// loop.
pub async fn serve(listener: UnixListener, requests: mpsc::Sender<Envelope>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let requests = requests.clone();
        tokio::spawn(async move {
            let (read, mut write) = stream.into_split();
            let mut line = String::new();
            // Bounded, so a client cannot make the server buffer without end.
            let limited = tokio::io::AsyncReadExt::take(read, MAX_REQUEST as u64);
            let mut reader = tokio::io::BufReader::new(limited);
            let reply = match reader.read_line(&mut line).await {
                Ok(_) => match Request::parse(&line) {
                    Ok(request) => {
                        info!(request = %request.to_line(), "control request");
                        let (tx, rx) = oneshot::channel();
                        if requests.send((request, tx)).await.is_err() {
                            return;
                        }
                        match rx.await {
                            Ok(reply) => reply,
                            Err(_) => return,
                        }
                    }
                    Err(message) => {
                        warn!(event = crate::events::CONTROL_REQUEST_REFUSED, %message, "bad control request");
                        Reply {
                            ok: false,
                            text: format!("{message}\n"),
                        }
                    }
                },
                Err(error) => {
                    debug!(%error, "control connection failed");
                    return;
                }
            };
            let head = if reply.ok { "ok\n" } else { "error\n" };
            let _ = write.write_all(head.as_bytes()).await;
            let _ = write.write_all(reply.text.as_bytes()).await;
            let _ = write.shutdown().await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip() {
        for line in [
            "reload",
            "reload plugins",
            "status",
            "drain point live",
            "undrain plugin http",
        ] {
            assert_eq!(Request::parse(line).unwrap().to_line(), line);
        }
        assert!(Request::parse("drain node x").is_err());
        assert!(Request::parse("restart").is_err());
    }

    #[test]
    fn default_socket_depends_on_the_config_path() {
        let a = default_socket_path(Path::new("/etc/ferrocast/a.toml"));
        let b = default_socket_path(Path::new("/etc/ferrocast/b.toml"));
        assert_ne!(a, b);
        assert_eq!(a, default_socket_path(Path::new("/etc/ferrocast/a.toml")));
    }
}

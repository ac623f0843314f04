//! The control socket: how `ferrocast reload`, `ferrocast status` and `ferrocast drain` reach
//! the running server.
//!
//! A Unix socket with a one-request protocol: the client sends one line (`reload`, `status`,
//! `drain point live`, `undrain plugin http`), the server answers `ok` or `error` on the first
//! line, then human-readable text, and closes.
//!
//! Access control does not rest on the umask or on a path nobody else can guess: the socket
//! is created with mode 0600 in a private directory, each peer's uid is checked
//! (`SO_PEERCRED`: the server's own uid or root), a socket file that another user owns, or
//! that is not a socket, is refused rather than replaced, and the commands refuse to talk to a
//! socket that another user owns.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::net::UnixListener;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

use crate::events;

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

/// A control request line that is not understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("unknown drain target `{target}`; use `point` or `plugin`")]
    UnknownDrainTarget { target: String },
    #[error("unknown request `{line}`; expected reload, reload plugins, status, drain point|plugin NAME or undrain point|plugin NAME")]
    Unknown { line: String },
}

impl Request {
    pub fn parse(line: &str) -> Result<Self, RequestError> {
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
                        return Err(RequestError::UnknownDrainTarget {
                            target: other.to_owned(),
                        })
                    }
                };
                Ok(Request::Drain {
                    target,
                    name: (*name).to_owned(),
                    on: *verb == "drain",
                })
            }
            _ => Err(RequestError::Unknown {
                line: line.trim().to_owned(),
            }),
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
    #[error("the control socket {path} belongs to uid {owner}, not to this user or root: it is not this server's; refusing to talk to it")]
    ForeignSocket { path: PathBuf, owner: u32 },
}

/// Why the control socket could not be created.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error("another ferrocast answers on it; give each server its own [server] control_socket")]
    InUse,
    #[error("a socket there belongs to uid {owner}, not to this server's user; it was left alone (remove it, or choose another path with --control-socket)")]
    Foreign { owner: u32 },
    #[error("it exists and is not a socket; it was left alone (remove it, or choose another path with --control-socket)")]
    NotASocket,
    #[error("its directory {} is not private to this user (owner uid {owner}, mode {mode:o}); choose another path with --control-socket", .dir.display())]
    UnsafeDirectory { dir: PathBuf, owner: u32, mode: u32 },
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// The effective uid of this process.
pub fn current_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Whether a control peer (or a socket's owner) with `uid` may be trusted by a process
/// running as `own_uid`: the same user, or root.
pub fn trusted_uid(uid: u32, own_uid: u32) -> bool {
    uid == own_uid || uid == 0
}

/// The control socket used when `[server] control_socket` is not set: a name derived from
/// the configuration file's absolute path, so a server and the commands run against the same
/// file meet without configuration, and servers on different files do not collide. It lives
/// in `$XDG_RUNTIME_DIR/ferrocast` or `/run/ferrocast` when those can be used, else in
/// `ferrocast-<uid>` under the temporary directory (created private, and checked to be).
pub fn default_socket_path(config: &Path) -> PathBuf {
    default_socket_dir().join(default_socket_name(config))
}

/// Where default control sockets live for this user.
fn default_socket_dir() -> PathBuf {
    let writable = |dir: &Path| {
        std::ffi::CString::new(dir.as_os_str().as_encoded_bytes())
            // SAFETY: a valid NUL-terminated path; access() only reads it.
            .is_ok_and(|path| unsafe { libc::access(path.as_ptr(), libc::W_OK | libc::X_OK) } == 0)
    };
    if let Some(runtime) = std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from) {
        if runtime.is_absolute() && runtime.is_dir() && writable(&runtime) {
            return runtime.join("ferrocast");
        }
    }
    let run = Path::new("/run/ferrocast");
    if run.is_dir() && writable(run) {
        return run.to_owned();
    }
    std::env::temp_dir().join(format!("ferrocast-{}", current_uid()))
}

/// Make sure the directory of a default socket exists and is private: owned by this user (or
/// root, for `/run/ferrocast`), and not writable by others. A directory an attacker made
/// first is refused, never used.
pub fn prepare_default_dir(socket: &Path) -> Result<(), BindError> {
    let Some(dir) = socket.parent() else {
        return Ok(());
    };
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(error) => return Err(error.into()),
    }
    let metadata = std::fs::symlink_metadata(dir)?;
    let (owner, mode) = (metadata.uid(), metadata.mode() & 0o7777);
    if !metadata.is_dir() || !trusted_uid(owner, current_uid()) || mode & 0o022 != 0 {
        return Err(BindError::UnsafeDirectory {
            dir: dir.to_owned(),
            owner,
            mode,
        });
    }
    Ok(())
}

fn default_socket_name(config: &Path) -> String {
    let absolute = std::fs::canonicalize(config).unwrap_or_else(|_| config.to_owned());
    // FNV-1a: stable across builds, unlike std's hasher.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in absolute.as_os_str().as_encoded_bytes() {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("ferrocast-{hash:016x}.sock")
}

/// Send one request and wait for the answer.
pub fn request(path: &Path, request: &Request) -> Result<Reply, ControlError> {
    let io = |source| ControlError::Io {
        path: path.to_owned(),
        source,
    };
    let connect_error = |source| ControlError::Connect {
        path: path.to_owned(),
        source,
    };
    // Whoever owns the socket file answers: it must be this user's server (or root's).
    let owner = std::fs::metadata(path).map_err(connect_error)?.uid();
    if !trusted_uid(owner, current_uid()) {
        return Err(ControlError::ForeignSocket {
            path: path.to_owned(),
            owner,
        });
    }
    let mut stream = UnixStream::connect(path).map_err(connect_error)?;
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

/// Bind the control socket with mode 0600, whatever the umask. A stale socket of this user
/// (nothing answers on it) is replaced; a live one, another user's, or a file that is not a
/// socket is left alone and refused (the error says which).
pub fn bind(path: &Path) -> Result<UnixListener, BindError> {
    match std::fs::symlink_metadata(path) {
        Ok(existing) => {
            if !existing.file_type().is_socket() {
                return Err(BindError::NotASocket);
            }
            if !trusted_uid(existing.uid(), current_uid()) {
                return Err(BindError::Foreign {
                    owner: existing.uid(),
                });
            }
            if UnixStream::connect(path).is_ok() {
                return Err(BindError::InUse);
            }
            info!(path = %path.display(), "replacing a stale control socket (nothing answers on it)");
            std::fs::remove_file(path)?;
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => return Err(error.into()),
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Whether the peer of a control connection may give orders: the server's user or root.
/// Others are refused (logged with CONTROL_PEER_REFUSED).
fn peer_allowed(stream: &tokio::net::UnixStream) -> Result<(), String> {
    match stream.peer_cred() {
        Ok(peer) if trusted_uid(peer.uid(), current_uid()) => Ok(()),
        Ok(peer) => {
            warn!(event = events::CONTROL_PEER_REFUSED, uid = peer.uid(), pid = ?peer.pid(), "control connection from another user refused");
            Err(format!(
                "refused: uid {} is neither this server's user (uid {}) nor root\n",
                peer.uid(),
                current_uid()
            ))
        }
        Err(error) => {
            warn!(event = events::CONTROL_PEER_REFUSED, %error, "control connection refused: the peer's credentials cannot be read");
            Err("refused: the peer's credentials cannot be read\n".to_owned())
        }
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
            if let Err(refusal) = peer_allowed(&stream) {
                let (_, mut write) = stream.into_split();
                let _ = write
                    .write_all(format!("error\n{refusal}").as_bytes())
                    .await;
                let _ = write.shutdown().await;
                return;
            }
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
                        warn!(event = events::CONTROL_REQUEST_REFUSED, %message, "bad control request");
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
    fn only_the_same_user_or_root_is_trusted() {
        assert!(trusted_uid(1000, 1000));
        assert!(trusted_uid(0, 1000));
        assert!(!trusted_uid(65534, 1000));
        assert!(!trusted_uid(1000, 0));
    }

    #[tokio::test]
    async fn the_socket_is_private_and_only_a_stale_one_of_ours_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("control.sock");
        let live = bind(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(matches!(bind(&path), Err(BindError::InUse)));
        drop(live);
        // The file is left behind with nothing listening: stale, replaced.
        assert!(path.exists());
        let _replaced = bind(&path).unwrap();

        let file = dir.path().join("not-a-socket");
        std::fs::write(&file, "x").unwrap();
        assert!(matches!(bind(&file), Err(BindError::NotASocket)));
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "x", "left alone");
    }

    #[test]
    fn a_default_directory_others_can_write_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let shared = dir.path().join("shared");
        std::fs::create_dir(&shared).unwrap();
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777)).unwrap();
        let refused = prepare_default_dir(&shared.join("x.sock"));
        assert!(matches!(refused, Err(BindError::UnsafeDirectory { .. })));
        let private = dir.path().join("private");
        prepare_default_dir(&private.join("x.sock")).unwrap();
        let mode = std::fs::metadata(&private).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode & 0o077, 0, "{mode:o}");
    }

    #[test]
    fn default_socket_depends_on_the_config_path() {
        let a = default_socket_path(Path::new("/etc/ferrocast/a.toml"));
        let b = default_socket_path(Path::new("/etc/ferrocast/b.toml"));
        assert_ne!(a, b);
        assert_eq!(a, default_socket_path(Path::new("/etc/ferrocast/a.toml")));
    }
}

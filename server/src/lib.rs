//! # ferrocast server
//!
//! The host process of ferrocast. It loads control-protocol and transport plugins as dynamic
//! libraries (see `plugin-api`), owns every socket, timer and media buffer, and runs the
//! publishing points that the TOML configuration declares.
//!
//! - [`config`]: compiles the TOML file, reporting every error with `file:line`.
//! - [`plugins`]: finds and loads plugin libraries, refusing bad ones one by one.
//! - [`points`]: publishing points: the live fan-out that frames once and shares, the point
//!   table, and the file-index cache.
//! - [`pull`]: pull sources (HTTP, TCP, UDP) with reconnect, and origin/edge relays.
//! - [`media`]: MPEG-TS parsing: packet alignment, keyframes, PAT/PMT, file index.
//! - [`hls`]: HLS packaging: live segments and playlists, on-demand playlists.
//! - [`record`]: recording of broadcast points to rotated, retained files.
//! - [`conn`]: one client connection: the IO loop around a plugin session and its parts.
//! - [`transport`]: RTP transports (UDP, interleaved) and RTCP for RTSP-style sessions.
//! - [`outputs`]: standalone UDP pushes of broadcast points.
//! - [`udp`]: batched datagram sending (`sendmmsg`).
//! - [`server`]: listeners, accept loops, and applying reloads, plugin swaps and drains.
//! - [`reload`]: reload triggers, the configuration diff and the control socket.
//! - [`state`]: server-wide running state: point and plugin tables, drains, change epoch.
//! - [`random`]: unpredictable values for RTP fields and jitter.
//! - [`tls`]: TLS terminated by the host on marked listeners: certificates, SNI, reload.
//! - [`limits`]: connection limits at the accept path (global, per IP, rate, descriptors).
//! - [`events`]: stable names of operator-facing events.
//! - [`warn_limit`]: the rate limit on per-request warnings.

pub mod access;
pub mod access_log;
pub mod admin;
pub mod config;
pub mod conn;
pub mod events;
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
pub mod hls;
pub mod limits;
pub mod media;
pub mod metrics;
pub mod outputs;
pub mod plugins;
pub mod points;
pub mod pull;
pub mod random;
pub mod record;
pub mod reload;
pub mod scaffold;
pub mod server;
pub mod state;
pub mod switches;
pub mod systemd;
pub mod tls;
pub mod transport;
pub mod tunnels;
pub mod udp;
pub mod waits;
pub mod warn_limit;

//! Stable names of the events an operator acts on.
//!
//! Each is logged as the `event` field of a `tracing` record, so that log pipelines can match
//! on it; the message says what happened and what to do next.

/// A listener could not bind because another service holds the address (cf. WMS event 309).
pub const PORT_IN_USE: &str = "PORT_IN_USE";
/// A listener could not bind for another reason (address not on this host, permission).
pub const BIND_FAILED: &str = "BIND_FAILED";
/// A plugin library was loaded and passed the ABI checks.
pub const PLUGIN_LOADED: &str = "PLUGIN_LOADED";
/// A file in the plugin directory was refused (not a plugin, wrong ABI, duplicate name).
pub const PLUGIN_REFUSED: &str = "PLUGIN_REFUSED";
/// A plugin panicked; the session it was serving was closed.
pub const PLUGIN_FAULT: &str = "PLUGIN_FAULT";
/// A listener is accepting connections.
pub const LISTENING: &str = "LISTENING";
/// A client connected to a plugin's listener.
pub const CONNECT: &str = "CONNECT";
/// A session started playing a point.
pub const PLAY: &str = "PLAY";
/// A session stopped playing (finished, stopped or disconnected).
pub const STOP: &str = "STOP";
/// An encoder started pushing to a broadcast point.
pub const PUSH_START: &str = "PUSH_START";
/// An encoder stopped pushing.
pub const PUSH_END: &str = "PUSH_END";
/// A request was refused by the host (unknown point, protocol disabled, busy point …).
pub const REFUSED: &str = "REFUSED";
/// A live client fell too far behind and was skipped ahead or disconnected.
pub const CLIENT_LAGGING: &str = "CLIENT_LAGGING";
/// A session ended.
pub const DISCONNECT: &str = "DISCONNECT";
/// A broadcast point's encoder disconnected or went silent; clients are held for its grace.
pub const SOURCE_LOST: &str = "SOURCE_LOST";
/// An encoder published again within the grace; clients resume at its first keyframe.
pub const SOURCE_RESUMED: &str = "SOURCE_RESUMED";
/// The state of a point, reported on SIGUSR1 (and available for every point at once).
pub const POINT_STATUS: &str = "POINT_STATUS";
/// A pull source connected and feeds its point.
pub const PULL_CONNECTED: &str = "PULL_CONNECTED";
/// A pull source could not connect, or its point is held by a pushing encoder.
pub const PULL_FAILED: &str = "PULL_FAILED";
/// An on-demand pull stopped because its point has had no clients for the idle timeout.
pub const PULL_STOPPED: &str = "PULL_STOPPED";
/// A broadcast point's source went away and did not come back within its grace period.
pub const SOURCE_GAVE_UP: &str = "SOURCE_GAVE_UP";
/// A configuration reload was compiled and diffed; the plan lists what will change.
pub const RELOAD_PLANNED: &str = "RELOAD_PLANNED";
/// A reload's plan was applied in full.
pub const RELOAD_APPLIED: &str = "RELOAD_APPLIED";
/// A reload was refused (the new configuration has errors; nothing changed) or a part of it
/// could not be applied (that part keeps its old state).
pub const RELOAD_FAILED: &str = "RELOAD_FAILED";
/// A session ended because a reload removed what it used (its point, its protocol on the
/// point, or its plugin).
pub const SESSION_RECONFIGURED: &str = "SESSION_RECONFIGURED";
/// A new build of a plugin passed its checks and takes new sessions; the previous
/// generation keeps its own sessions until they end.
pub const PLUGIN_SWAPPED: &str = "PLUGIN_SWAPPED";
/// A replaced plugin generation has no sessions left.
pub const GENERATION_DRAINED: &str = "GENERATION_DRAINED";
/// An operator put a point or a plugin into the drain state (new sessions refused) or took
/// it out again.
pub const DRAIN: &str = "DRAIN";
/// The state of a plugin generation, reported on SIGUSR1 and by `ferrocast status`.
pub const PLUGIN_STATUS: &str = "PLUGIN_STATUS";
/// Reading an on-demand file failed while it was being sent; the client's stream ended. Check
/// that the file is readable and was not truncated or replaced while playing.
pub const FILE_READ_FAILED: &str = "FILE_READ_FAILED";
/// A plugin logged a warning or an error about one of its sessions; the message says what
/// happened, and the span names the plugin, session and peer.
pub const PLUGIN_MESSAGE: &str = "PLUGIN_MESSAGE";
/// A standalone UDP output cannot send (its socket could not be opened); that push is off
/// until the next reload. Check the destination, interface and TTL in the transport
/// plugin's settings.
pub const OUTPUT_FAILED: &str = "OUTPUT_FAILED";

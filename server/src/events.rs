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
/// An on-demand file could not be indexed (unreadable, not MPEG-TS, or no PCR): it cannot be
/// played over RTP and its duration is unknown. Re-mux the file with PCR, or remove it.
pub const INDEX_FAILED: &str = "INDEX_FAILED";
/// An on-demand point's file cannot be read (missing or permissions): requests for it get
/// UNAVAILABLE. Restore the file or fix the point's `source`.
pub const FILE_UNAVAILABLE: &str = "FILE_UNAVAILABLE";
/// Accepting a connection failed, typically because the process ran out of file descriptors;
/// the listener retries shortly. Raise the descriptor limit (`ulimit -n`) if it repeats.
pub const ACCEPT_FAILED: &str = "ACCEPT_FAILED";
/// A reloaded configuration compiled with a warning (e.g. a point lists a disabled plugin);
/// it was applied. Read the warning and fix the file.
pub const CONFIG_WARNING: &str = "CONFIG_WARNING";
/// The control socket received a request it does not understand; the client was told.
/// Check the `ferrocast` command that sent it (its version may differ from the server's).
pub const CONTROL_REQUEST_REFUSED: &str = "CONTROL_REQUEST_REFUSED";
/// The configuration file's or the plugin directory's changes cannot be watched (inotify
/// limits, missing directory): reload with SIGHUP or `ferrocast reload` instead.
pub const WATCH_FAILED: &str = "WATCH_FAILED";

//! Live reconfiguration: reload triggers (file watch, SIGHUP, the control socket), the diff
//! of two configurations, and the control protocol. The plan is applied by
//! [`crate::server::Server`], which owns the listeners, pullers and outputs it changes.

pub mod control;
pub mod plan;
pub mod watch;

pub use plan::{plan, ListenerChange, PluginChange, PointChange, ReloadPlan};

//! Publishing points at run time, by concern:
//!
//! - [`live`]: the live fan-out of a broadcast point and its state machine;
//! - [`registry`]: the point table, name resolution, protocol and directory traversal checks,
//!   and the status lines;
//! - [`join_pace`]: the paced catch-up of a late joiner over UDP (RTP transports, UDP pushes);
//! - [`timeline`]: the re-basing of PTS/DTS/PCR that keeps a point's output timeline
//!   continuous across source changes;
//! - [`index_cache`]: the time indexes of on-demand files, built off the async threads;
//! - [`tcp_fanout`]: one writer for a live point's caught-up raw TS listeners on plain TCP;
//! - [`tap`]: a subscriber of a live point's ring that is not a client (the HLS packager,
//!   the recorder), walking chunks from a keyframe on.
//!
//! On-demand points resolve to files; the connection task reads and sends them itself.

pub mod index_cache;
pub mod ingest_rate;
pub mod join_pace;
pub mod live;
pub mod registry;
pub mod tap;
pub mod tcp_fanout;
pub mod timeline;

pub use index_cache::{FileVersion, IndexCache, IndexFailure, IndexLookup};
pub use join_pace::JoinPacer;
pub use live::{
    JoinSnapshot, LiveChunk, LiveEvent, LiveState, LiveStatus, LiveStream, PublishError, Pushed,
    RtpStart, SourceDescription,
};
pub use registry::{
    log_points, log_status, IndexedMedia, Point, PointMedia, PointRegistry, Resolved,
};
pub use tap::{RingTap, TapEvent};
pub use timeline::{Timeline, TimelineMode};

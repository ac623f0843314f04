//! HLS packaging by the host: live points cut into segments and partial segments in memory,
//! on-demand files listed as byte ranges, answered to the HTTP plugin's `get_resource`.
//!
//! - [`segmenter`]: the cutting decisions (keyframes, target and part durations, the sliding
//!   window, the memory bound), a plain state machine;
//! - [`playlist`]: live and on-demand playlists as text, and resource names;
//! - this module: one packager task per broadcast point with `hls` among its protocols, fed
//!   from the point's broadcast ring through a [`RingTap`] (so it is not one of the point's
//!   clients), and the answers to requests, including blocking playlist reloads (`_HLS_msn`,
//!   `_HLS_part`). HLS requests are the point's demand for an on-demand pull.
//!
//! The plugin speaks HTTP (conditional requests, HEAD, cache headers); the host owns the
//! media and hands the plugin the segment's own refcounted chunks.

pub mod playlist;
pub mod segmenter;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use ferrocast_plugin_api::{ErrorCode, HostError, NO_BLOCK};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use self::playlist::ResourceName;
pub use self::segmenter::HlsSettings;
use self::segmenter::Segmenter;
use crate::events;
use crate::points::{LiveStream, PointMedia, PointRegistry, Resolved, RingTap, TapEvent};

/// The protocol name that enables HLS on a point (served by the HTTP plugin).
pub const PROTOCOL: &str = "hls";
const PLAYLIST_TYPE: &str = "application/vnd.apple.mpegurl";
const SEGMENT_TYPE: &str = "video/mp2t";
/// Segments never change under their name.
const SEGMENT_MAX_AGE: u32 = 86_400;
/// On-demand playlists change only when the file does.
const VOD_PLAYLIST_MAX_AGE: u32 = 60;
/// How far ahead of the last part a blocking reload may ask (RFC 8216bis §6.2.5.2).
const MAX_MSN_AHEAD: u64 = 2;
/// An HLS request wants the point's source for this many target durations (a player reloads
/// its playlist at least once per target duration).
const DEMAND_TARGET_DURATIONS: u32 = 2;

/// A resource ready to be sent.
#[derive(Clone, Debug)]
pub struct Prepared {
    pub content_type: &'static str,
    pub etag: String,
    pub last_modified: SystemTime,
    pub max_age: u32,
    pub immutable: bool,
    pub body: Vec<Bytes>,
}

impl Prepared {
    pub fn last_modified_secs(&self) -> u64 {
        self.last_modified
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_secs())
    }
}

/// What a request gets: the resource now, a wait for a blocking reload, or a segment of an
/// on-demand file to read off the async threads.
pub enum Answer {
    Ready(Prepared),
    Wait(Waiting),
    Read(FileRead),
}

/// One segment of an on-demand file: its PAT/PMT, then a byte range of the file.
pub struct FileRead {
    file: std::path::PathBuf,
    psi: Option<Bytes>,
    segment: playlist::FileSegment,
    etag: String,
    modified: SystemTime,
}

impl FileRead {
    /// Read the segment (blocking: run it on the blocking pool).
    pub fn read(self) -> Result<Prepared, HostError> {
        use std::io::{Read, Seek, SeekFrom};
        let unreadable = |error: std::io::Error| {
            warn!(event = events::FILE_UNAVAILABLE, path = %self.file.display(), %error, "on-demand file unreadable for an HLS segment");
            HostError::new(ErrorCode::UNAVAILABLE, "the file cannot be read right now")
        };
        let mut file = std::fs::File::open(&self.file).map_err(unreadable)?;
        file.seek(SeekFrom::Start(self.segment.offset))
            .map_err(unreadable)?;
        let mut data = vec![0u8; self.segment.length as usize];
        file.read_exact(&mut data).map_err(unreadable)?;
        // The first segment starts with the file's own tables; the others get a copy first.
        let body = match self.psi.filter(|_| self.segment.offset != 0) {
            Some(psi) => vec![psi, Bytes::from(data)],
            None => vec![Bytes::from(data)],
        };
        Ok(Prepared {
            content_type: SEGMENT_TYPE,
            etag: self.etag,
            last_modified: self.modified,
            max_age: SEGMENT_MAX_AGE,
            immutable: true,
            body,
        })
    }
}

/// A request that waits for the playlist to grow.
pub struct Waiting {
    point: Arc<HlsPoint>,
    name: ResourceName,
    msn: u64,
    part: u64,
    pub changes: watch::Receiver<u64>,
    pub deadline: tokio::time::Instant,
}

impl Waiting {
    /// Check again after a change or at the deadline: `None` while still waiting.
    pub fn poll(&self, now: tokio::time::Instant) -> Option<Result<Prepared, HostError>> {
        match self.point.answer(self.name, self.msn, self.part) {
            Ok(Answer::Ready(prepared)) => Some(Ok(prepared)),
            Err(error) => Some(Err(error)),
            Ok(Answer::Wait(_)) if now >= self.deadline => Some(Err(HostError::new(
                ErrorCode::UNAVAILABLE,
                "the awaited part did not appear within three target durations",
            ))),
            Ok(Answer::Wait(_)) => None,
            Ok(Answer::Read(_)) => Some(Err(not_found(&self.point.name, "that resource"))),
        }
    }
}

/// The HLS side of one broadcast point.
pub struct HlsPoint {
    name: String,
    stream: Arc<LiveStream>,
    segmenter: Mutex<Segmenter>,
    changes: watch::Sender<u64>,
    /// Part of every ETag, so that names reused after a server restart never match.
    instance: u32,
}

/// What `status` shows of a point's HLS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HlsStatus {
    pub point: String,
    pub segments: usize,
    pub bytes: usize,
    pub max_bytes: usize,
    pub evicted_for_memory: u64,
    pub next_msn: u64,
}

impl HlsPoint {
    fn lock(&self) -> MutexGuard<'_, Segmenter> {
        self.segmenter
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    fn changed(&self) {
        self.changes.send_modify(|version| *version += 1);
    }

    /// Feed the point's ring into the segmenter until the point goes away.
    async fn run(self: Arc<Self>) {
        let mut tap = RingTap::new(&self.stream);
        while let Some(event) = tap.next().await {
            match event {
                TapEvent::Chunk(chunk) => self.feed(&chunk),
                TapEvent::Skipped { .. } => {}
                TapEvent::SourceRestarted => {
                    self.lock().restart(SystemTime::now());
                    self.changed();
                }
                TapEvent::Ended => {
                    self.lock().clear(SystemTime::now());
                    self.changed();
                }
                TapEvent::Lagged { missed } => {
                    warn!(event = events::HLS_LAGGING, point = %self.name, missed, "the HLS packager fell behind the point's ring; a discontinuity follows");
                    self.lock().restart(SystemTime::now());
                    self.changed();
                }
            }
        }
    }

    fn feed(&self, chunk: &crate::points::LiveChunk) {
        let changed = self.lock().feed(
            chunk.chunk.data.clone(),
            chunk.chunk.random_access,
            chunk.chunk.pcr_90k,
            SystemTime::now(),
        );
        if changed {
            self.changed();
        }
    }

    fn etag(&self, what: &str) -> String {
        format!("\"{:08x}-{what}\"", self.instance)
    }

    /// The answer for `name`, now or after a wait.
    fn answer(
        self: &Arc<Self>,
        name: ResourceName,
        msn: u64,
        part: u64,
    ) -> Result<Answer, HostError> {
        let segmenter = self.lock();
        // HLS players hold no subscription: their requests are what keeps an on-demand pull
        // going, for as long as a player may wait between two playlist reloads.
        self.stream
            .note_demand(segmenter.settings().target_duration * DEMAND_TARGET_DURATIONS);
        // Live, or within the grace; an on-demand pull starts pulling here.
        if !self.stream.playable() {
            return Err(not_live(&self.name));
        }
        match name {
            ResourceName::Playlist => self.playlist(&segmenter, msn, part),
            ResourceName::Init => Err(not_found(&self.name, "init.ts")),
            ResourceName::Segment(wanted) => self.segment(&segmenter, wanted),
            ResourceName::Part(wanted, index) => self.part(&segmenter, wanted, index),
        }
    }

    fn playlist(
        self: &Arc<Self>,
        segmenter: &Segmenter,
        msn: u64,
        part: u64,
    ) -> Result<Answer, HostError> {
        if msn != NO_BLOCK && !reload_satisfied(segmenter, msn, part) {
            let (last_msn, _) = segmenter.last_part().unwrap_or((0, 0));
            if msn > last_msn + MAX_MSN_AHEAD {
                return Err(HostError::new(
                    ErrorCode::BAD_RANGE,
                    format!("_HLS_msn={msn} is too far ahead of the playlist (last {last_msn})"),
                ));
            }
            return Ok(self.wait(segmenter, ResourceName::Playlist, msn, part));
        }
        let Some(text) = playlist::live(segmenter) else {
            return Err(HostError::new(
                ErrorCode::UNAVAILABLE,
                format!("`{}` has no complete segment yet; retry shortly", self.name),
            ));
        };
        let (last_msn, last_part) = segmenter.last_part().unwrap_or((0, 0));
        let target = segmenter
            .settings()
            .part_duration
            .unwrap_or(segmenter.settings().target_duration);
        Ok(Answer::Ready(Prepared {
            content_type: PLAYLIST_TYPE,
            etag: self.etag(&format!("{last_msn}.{last_part}.{}", text.len())),
            last_modified: segmenter.changed,
            // Half a part (or segment): a cache never holds a playlist past the next change.
            max_age: (target.as_secs() / 2) as u32,
            immutable: false,
            body: vec![Bytes::from(text)],
        }))
    }

    fn wait(
        self: &Arc<Self>,
        segmenter: &Segmenter,
        name: ResourceName,
        msn: u64,
        part: u64,
    ) -> Answer {
        let deadline = tokio::time::Instant::now() + segmenter.settings().target_duration * 3;
        Answer::Wait(Waiting {
            point: Arc::clone(self),
            name,
            msn,
            part,
            changes: self.changes.subscribe(),
            deadline,
        })
    }

    fn segment(self: &Arc<Self>, segmenter: &Segmenter, msn: u64) -> Result<Answer, HostError> {
        match segmenter.segment(msn) {
            Some(segment) if segment.completed.is_some() => Ok(Answer::Ready(Prepared {
                content_type: SEGMENT_TYPE,
                etag: self.etag(&format!("s{msn}")),
                last_modified: segment.completed.unwrap_or(segment.started),
                max_age: SEGMENT_MAX_AGE,
                immutable: true,
                body: segment.chunks.clone(),
            })),
            // The segment being cut: answered once complete (like a preload hint).
            Some(_) => Ok(self.wait(segmenter, ResourceName::Segment(msn), msn, NO_BLOCK)),
            None if msn == segmenter.next_complete_msn() && segmenter.open().is_none() => {
                Ok(self.wait(segmenter, ResourceName::Segment(msn), msn, NO_BLOCK))
            }
            None => Err(not_found(&self.name, &playlist::segment_name(msn))),
        }
    }

    fn part(
        self: &Arc<Self>,
        segmenter: &Segmenter,
        msn: u64,
        index: u64,
    ) -> Result<Answer, HostError> {
        let name = playlist::part_name(msn, index);
        let Some(segment) = segmenter.segment(msn) else {
            let next = segmenter
                .open()
                .map_or(segmenter.next_complete_msn(), |open| open.msn + 1);
            if msn == next && index == 0 && segmenter.settings().part_duration.is_some() {
                return Ok(self.wait(segmenter, ResourceName::Part(msn, index), msn, index));
            }
            return Err(not_found(&self.name, &name));
        };
        match segment.parts.get(index as usize) {
            Some(part) => Ok(Answer::Ready(Prepared {
                content_type: SEGMENT_TYPE,
                etag: self.etag(&format!("p{msn}.{index}")),
                last_modified: segmenter.changed,
                max_age: SEGMENT_MAX_AGE,
                immutable: true,
                body: segment.pieces(part.chunks.clone()).to_vec(),
            })),
            // The hinted next part: answered once it is complete.
            None if segment.completed.is_none() && index == segment.parts.len() as u64 => {
                Ok(self.wait(segmenter, ResourceName::Part(msn, index), msn, index))
            }
            None => Err(not_found(&self.name, &name)),
        }
    }

    fn status(&self) -> HlsStatus {
        let segmenter = self.lock();
        HlsStatus {
            point: self.name.clone(),
            segments: segmenter.window().count(),
            bytes: segmenter.bytes(),
            max_bytes: segmenter.settings().max_bytes,
            evicted_for_memory: segmenter.evicted_for_memory(),
            next_msn: segmenter.next_complete_msn(),
        }
    }
}

/// Whether a blocking reload for (`msn`, `part`) can be answered: the playlist holds that
/// segment (complete) or that part.
fn reload_satisfied(segmenter: &Segmenter, msn: u64, part: u64) -> bool {
    match segmenter.segment(msn) {
        Some(segment) if segment.completed.is_some() => true,
        Some(segment) => part != NO_BLOCK && (segment.parts.len() as u64) > part,
        None => msn < segmenter.next_complete_msn(),
    }
}

fn not_live(point: &str) -> HostError {
    HostError::new(
        ErrorCode::UNAVAILABLE,
        format!("`{point}` is not live: no encoder is publishing to it right now"),
    )
}

fn not_found(point: &str, name: &str) -> HostError {
    HostError::new(
        ErrorCode::NOT_FOUND,
        format!("`{point}` has no HLS resource `{name}` (it may have left the window)"),
    )
}

struct Packager {
    point: Arc<HlsPoint>,
    task: JoinHandle<()>,
}

impl Drop for Packager {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Every point's packager, kept in step with the point table.
#[derive(Default)]
pub struct Packagers {
    running: Mutex<HashMap<String, Packager>>,
    settings: Mutex<HlsSettings>,
}

impl Packagers {
    fn running(&self) -> MutexGuard<'_, HashMap<String, Packager>> {
        self.running
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    pub fn settings(&self) -> HlsSettings {
        *self
            .settings
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// Start a packager for every broadcast point with `hls` that has none, stop those of
    /// points that went (or lost `hls`), and apply `settings` to all. Needs a tokio runtime.
    pub fn sync(&self, points: &PointRegistry, settings: HlsSettings) {
        *self
            .settings
            .lock()
            .unwrap_or_else(|poison| poison.into_inner()) = settings;
        let mut running = self.running();
        let wanted: HashMap<&str, &Arc<LiveStream>> = points
            .all()
            .filter(|point| point.protocols.iter().any(|p| p == PROTOCOL))
            .filter_map(|point| match &point.media {
                PointMedia::Live(stream) => Some((point.name.as_str(), stream)),
                _ => None,
            })
            .collect();
        running.retain(|name, packager| {
            wanted
                .get(name.as_str())
                .is_some_and(|stream| Arc::ptr_eq(stream, &packager.point.stream))
        });
        for (name, stream) in wanted {
            if let Some(packager) = running.get(name) {
                packager.point.lock().reconfigure(settings);
                continue;
            }
            let point = Arc::new(HlsPoint {
                name: name.to_owned(),
                stream: Arc::clone(stream),
                segmenter: Mutex::new(Segmenter::new(settings, SystemTime::now())),
                changes: watch::Sender::new(0),
                instance: crate::random::random_u32(),
            });
            let task = tokio::spawn(Arc::clone(&point).run());
            info!(point = %name, target_ms = settings.target_duration.as_millis() as u64, window = settings.window, "HLS packaging started");
            running.insert(name.to_owned(), Packager { point, task });
        }
    }

    /// Answer a request for `name` below `path`, once the point was resolved for `hls`.
    pub fn request(
        &self,
        points: &PointRegistry,
        path: &str,
        name: &str,
        msn: u64,
        part: u64,
    ) -> Result<Answer, HostError> {
        let resource = ResourceName::parse(name).ok_or_else(|| not_found(path, name))?;
        let (info, resolved) = points.resolve(PROTOCOL, path)?;
        match resolved {
            Resolved::Live(_) => {
                let point = self
                    .running()
                    .get(info.name.as_str())
                    .map(|packager| Arc::clone(&packager.point))
                    .ok_or_else(|| not_live(&info.name))?;
                point.answer(resource, msn, part)
            }
            Resolved::File { path: file, .. } => self.on_demand(points, &file, path, resource),
        }
    }

    /// The playlist or initialisation section of an on-demand file.
    fn on_demand(
        &self,
        points: &PointRegistry,
        file: &std::path::Path,
        path: &str,
        resource: ResourceName,
    ) -> Result<Answer, HostError> {
        let index = points.file_index(file).ready_for_play()?;
        let modified = std::fs::metadata(file)
            .and_then(|metadata| metadata.modified())
            .unwrap_or(UNIX_EPOCH);
        let stamp = modified
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_millis());
        let etag = |what: &str| format!("\"{:x}-{stamp:x}-{what}\"", index.size);
        let target = self.settings().target_duration;
        let segments = playlist::file_segments(&index, target);
        match resource {
            ResourceName::Playlist => {
                let text = playlist::on_demand(&segments, target);
                Ok(Answer::Ready(Prepared {
                    content_type: PLAYLIST_TYPE,
                    etag: etag("m3u8"),
                    last_modified: modified,
                    max_age: VOD_PLAYLIST_MAX_AGE,
                    immutable: false,
                    body: vec![Bytes::from(text)],
                }))
            }
            ResourceName::Segment(n) => {
                let segment = usize::try_from(n)
                    .ok()
                    .and_then(|n| segments.get(n))
                    .ok_or_else(|| not_found(path, &playlist::segment_name(n)))?;
                Ok(Answer::Read(FileRead {
                    file: file.to_owned(),
                    psi: index.psi.clone(),
                    segment: segment.clone(),
                    etag: etag(&format!("s{n}")),
                    modified,
                }))
            }
            ResourceName::Init | ResourceName::Part(..) => Err(not_found(path, "that resource")),
        }
    }

    /// The packager state of point `name`, if it has one.
    pub fn status_of(&self, name: &str) -> Option<HlsStatus> {
        self.running()
            .get(name)
            .map(|packager| packager.point.status())
    }

    /// Every packager's state, by point name.
    pub fn status(&self) -> Vec<HlsStatus> {
        let mut all: Vec<HlsStatus> = self.running().values().map(|p| p.point.status()).collect();
        all.sort_by(|a, b| a.point.cmp(&b.point));
        all
    }
}

#[cfg(test)]
mod tests;

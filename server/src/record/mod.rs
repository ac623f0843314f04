//! Recording of broadcast points to files on disk (`record = { dir, segment, retain }` in a
//! point's table).
//!
//! - [`plan`]: the decisions as plain functions of time: file names (`<point>-<UTC start>.ts`),
//!   when a new file starts, what retention deletes, how often lag is logged;
//! - [`writer`]: the thread that writes one point's files;
//! - this module: per recording point, a feeder task that reads the point's ring (its
//!   output, after the continuous-timeline re-basing) through a [`RingTap`], so the recorder
//!   is not one of the point's clients, and hands chunks to the writer through a bounded
//!   queue. A full queue (a slow disk) drops recording data, never slows ingest or clients,
//!   and the feeder resumes at the next keyframe so files stay decodable.
//!
//! A recorder does not keep an on-demand pull going: such a point is recorded while someone
//! watches it (`pull = "always"` records all the time).

pub mod plan;
mod writer;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use tokio::task::JoinHandle;
use tracing::{error, info, warn};

use self::plan::LagReport;
use self::writer::{Message, Served, TestHooks, Writer};
use crate::events;
use crate::points::{LiveChunk, LiveStream, PointMedia, PointRegistry, RingTap, TapEvent};

/// Chunks queued between a point and its writer: a few seconds of a typical stream, so a
/// disk that stalls briefly loses nothing, and memory stays bounded (chunks are at most 64
/// packets, shared with the point's ring).
pub const QUEUE_CHUNKS: usize = 256;
/// At most one `RECORDING_LAGGING` line per point in this window.
const LAG_REPORT_WINDOW: Duration = Duration::from_secs(10);

/// A point's `record` settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordSettings {
    /// Where the files go (absolute; created when missing).
    pub dir: PathBuf,
    /// A new file starts at the first keyframe past this much time.
    pub segment: Duration,
    /// Files whose content is all older than this are deleted; `None` keeps everything.
    pub retain: Option<Duration>,
}

/// What `status` shows of a point's recording.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecordStatus {
    pub point: String,
    /// The file being written, if any.
    pub file: Option<PathBuf>,
    /// Bytes written to it.
    pub bytes: u64,
    /// Recording bytes dropped since the recorder started (a slow or failing disk).
    pub dropped_bytes: u64,
    /// Files that could not be opened or written since the recorder started.
    pub failures: u64,
}

/// A recorder's [`RecordStatus`], updated by its feeder and its writer.
#[derive(Clone, Default)]
pub(crate) struct Progress(Arc<Mutex<RecordStatus>>);

impl Progress {
    fn new(point: &str) -> Self {
        Self(Arc::new(Mutex::new(RecordStatus {
            point: point.to_owned(),
            ..RecordStatus::default()
        })))
    }

    fn lock(&self) -> MutexGuard<'_, RecordStatus> {
        self.0.lock().unwrap_or_else(|poison| poison.into_inner())
    }

    fn snapshot(&self) -> RecordStatus {
        self.lock().clone()
    }

    /// `bytes` of the recording were dropped: counted here and in the metrics.
    pub(crate) fn dropped(&self, bytes: u64) {
        let mut status = self.lock();
        status.dropped_bytes += bytes;
        crate::metrics::recording_dropped(&status.point, bytes);
    }

    pub(crate) fn opened(&self, file: &std::path::Path, bytes: u64) {
        let mut status = self.lock();
        status.file = Some(file.to_owned());
        status.bytes = bytes;
    }

    pub(crate) fn wrote(&self, bytes: u64) {
        self.lock().bytes += bytes;
    }

    pub(crate) fn closed(&self) {
        let mut status = self.lock();
        status.file = None;
        status.bytes = 0;
    }

    pub(crate) fn failed(&self) {
        let mut status = self.lock();
        status.failures += 1;
        status.file = None;
        status.bytes = 0;
    }
}

/// The recording of one point: its feeder task (the writer thread ends with it).
struct Recorder {
    stream: Arc<LiveStream>,
    settings: RecordSettings,
    /// An on-demand point serves the directory: the writer keeps the file's index fresh.
    served: bool,
    progress: Progress,
    task: JoinHandle<()>,
}

impl Drop for Recorder {
    fn drop(&mut self) {
        // The queue's sender goes with the task: the writer closes its file and ends.
        self.task.abort();
    }
}

/// Every recording point's recorder, kept in step with the point table.
#[derive(Default)]
pub struct Recorders {
    running: Mutex<HashMap<String, Recorder>>,
}

impl Recorders {
    fn running(&self) -> MutexGuard<'_, HashMap<String, Recorder>> {
        self.running
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// Start a recorder for every broadcast point in `wanted` that has none, restart those
    /// whose settings changed, stop the others. Needs a tokio runtime.
    pub fn sync(&self, points: &PointRegistry, wanted: &BTreeMap<String, RecordSettings>) {
        let mut running = self.running();
        let streams: HashMap<&str, (&Arc<LiveStream>, &RecordSettings)> = wanted
            .iter()
            .filter_map(|(name, settings)| match &points.get(name)?.media {
                PointMedia::Live(stream) => Some((name.as_str(), (stream, settings))),
                _ => None,
            })
            .collect();
        running.retain(|name, recorder| {
            streams
                .get(name.as_str())
                .is_some_and(|(stream, settings)| {
                    Arc::ptr_eq(stream, &recorder.stream)
                        && **settings == recorder.settings
                        && served(points, &settings.dir) == recorder.served
                })
        });
        for (name, (stream, settings)) in streams {
            if running.contains_key(name) {
                continue;
            }
            let served = served(points, &settings.dir).then(|| Served {
                indexes: Arc::clone(points.indexes()),
                runtime: tokio::runtime::Handle::current(),
            });
            match start(name, stream, settings, served) {
                Ok(recorder) => {
                    info!(point = %name, dir = %settings.dir.display(), segment_ms = settings.segment.as_millis() as u64, retain_ms = settings.retain.map(|r| r.as_millis() as u64), "recording enabled");
                    running.insert(name.to_owned(), recorder);
                }
                Err(error) => {
                    error!(event = events::RECORDING_FAILED, point = %name, %error, "the recording writer could not be started; the point serves without recording");
                }
            }
        }
    }

    /// Every recorder's state, by point name.
    pub fn status(&self) -> Vec<RecordStatus> {
        let mut all: Vec<RecordStatus> = self
            .running()
            .values()
            .map(|recorder| recorder.progress.snapshot())
            .collect();
        all.sort_by(|a, b| a.point.cmp(&b.point));
        all
    }
}

/// Whether an on-demand directory point serves `dir`.
fn served(points: &PointRegistry, dir: &std::path::Path) -> bool {
    let Ok(dir) = std::fs::canonicalize(dir) else {
        return false;
    };
    points
        .all()
        .any(|point| matches!(&point.media, PointMedia::Directory(root) if *root == dir))
}

fn start(
    name: &str,
    stream: &Arc<LiveStream>,
    settings: &RecordSettings,
    served: Option<Served>,
) -> std::io::Result<Recorder> {
    let (queue, received) = sync_channel(QUEUE_CHUNKS);
    let progress = Progress::new(name);
    let is_served = served.is_some();
    let hooks = TestHooks::from_env();
    let writer = Writer::new(name, settings.clone(), hooks, progress.clone(), served);
    std::thread::Builder::new()
        .name(format!("record {name}"))
        .spawn(move || writer.run(received))?;
    let feeder = Feeder {
        point: name.to_owned(),
        queue,
        new_source: true,
        lag: LagReport::new(LAG_REPORT_WINDOW),
        progress: progress.clone(),
    };
    let task = tokio::spawn(feeder.run(Arc::clone(stream)));
    Ok(Recorder {
        stream: Arc::clone(stream),
        settings: settings.clone(),
        served: is_served,
        progress,
        task,
    })
}

/// What became of a chunk offered to the writer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Offer {
    Queued,
    /// The queue was full (a slow disk): the recording resumes at the next keyframe.
    Dropped,
    /// The writer stopped.
    WriterGone,
}

struct Feeder {
    point: String,
    queue: SyncSender<Message>,
    /// The next chunk queued starts a new file: the recorder just started, or a new source
    /// took over.
    new_source: bool,
    lag: LagReport,
    progress: Progress,
}

impl Feeder {
    /// Read the point's ring until the point or the writer goes away.
    async fn run(mut self, stream: Arc<LiveStream>) {
        let mut tap = RingTap::new(&stream);
        while let Some(event) = tap.next().await {
            match event {
                TapEvent::Chunk(chunk) => match self.offer(&chunk) {
                    Offer::Queued => {}
                    Offer::Dropped => tap.skip_to_keyframe(),
                    Offer::WriterGone => return,
                },
                TapEvent::Skipped { bytes } => self.progress.dropped(bytes),
                TapEvent::SourceRestarted => self.new_source = true,
                TapEvent::Ended => {
                    self.new_source = true;
                    // Best effort: a full queue closes the file at the next source's start.
                    let _ = self.queue.try_send(Message::Close);
                }
                TapEvent::Lagged { missed } => {
                    warn!(event = events::RECORDING_LAGGING, point = %self.point, missed_chunks = missed, "the recorder fell behind the point's ring; the recording resumes at the next keyframe");
                }
            }
        }
    }

    /// Hand `chunk` to the writer without waiting.
    fn offer(&mut self, chunk: &LiveChunk) -> Offer {
        let data = &chunk.chunk.data;
        let message = Message::Chunk {
            data: data.clone(),
            keyframe: chunk.chunk.random_access,
            new_source: self.new_source,
            at: SystemTime::now(),
        };
        match self.queue.try_send(message) {
            Ok(()) => {
                self.new_source = false;
                Offer::Queued
            }
            Err(TrySendError::Full(_)) => {
                self.progress.dropped(data.len() as u64);
                if let Some(dropped) = self.lag.dropped(data.len() as u64, Instant::now()) {
                    warn!(event = events::RECORDING_LAGGING, point = %self.point, dropped_bytes = dropped.bytes, dropped_chunks = dropped.chunks, queue_chunks = QUEUE_CHUNKS, "the recording disk is too slow: recording data was dropped (clients are not affected); the recording resumes at the next keyframe");
                }
                Offer::Dropped
            }
            Err(TrySendError::Disconnected(_)) => {
                error!(event = events::RECORDING_FAILED, point = %self.point, "the recording writer stopped; the point serves without recording until the next reload");
                Offer::WriterGone
            }
        }
    }
}

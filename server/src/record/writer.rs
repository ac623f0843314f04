//! The writer of one point's recording: a thread of its own (file IO blocks), fed by the
//! bounded queue its feeder fills. It opens, rotates and closes files as [`Rotation`]
//! decides, writes whole 188-byte packets only (no user-space buffer, so a killed server
//! leaves every packet it wrote), survives write errors (`RECORDING_FAILED`, a retry later)
//! and deletes expired files of its own point.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use tracing::{error, info, warn};

use super::plan::{expired, file_name, ChunkAction, Rotation};
use super::{Progress, RecordSettings};
use crate::events;

const TS_PACKET_LEN: u64 = 188;
/// How often, at most, retention looks at the directory.
const MAX_SWEEP_INTERVAL: Duration = Duration::from_secs(60);
const MIN_SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// How often, at most, the file being written is re-indexed for an on-demand point serving
/// the directory (each build continues from where the last stopped).
const INDEX_INTERVAL: Duration = Duration::from_secs(1);

/// The file-index cache of the on-demand point that serves the recording directory, and the
/// runtime its builds run on.
pub(super) struct Served {
    pub(super) indexes: std::sync::Arc<crate::points::IndexCache>,
    pub(super) runtime: tokio::runtime::Handle,
}

/// What the feeder hands the writer.
pub(super) enum Message {
    Chunk {
        data: Bytes,
        keyframe: bool,
        /// The first chunk of a new encoder (a restart, or a new one after the point ended).
        new_source: bool,
        /// When the chunk left the point (the queue's delay does not shift file times).
        at: SystemTime,
    },
    /// The point ended: close the file.
    Close,
}

/// Fault injection for the integration tests, read from the environment when a recorder
/// starts (documented in docs/operations.md as test hooks; unset in production).
#[derive(Debug, Clone, Default)]
pub(super) struct TestHooks {
    /// `FERROCAST_TEST_RECORD_WRITE_DELAY_MS`: sleep this long before every write (a slow disk).
    write_delay: Option<Duration>,
    /// `FERROCAST_TEST_RECORD_FULL_FLAG`: while this file exists, writes fail with ENOSPC.
    full_flag: Option<PathBuf>,
}

impl TestHooks {
    pub(super) fn from_env() -> Self {
        let write_delay = std::env::var("FERROCAST_TEST_RECORD_WRITE_DELAY_MS")
            .ok()
            .and_then(|ms| ms.parse().ok())
            .map(Duration::from_millis);
        let full_flag = std::env::var_os("FERROCAST_TEST_RECORD_FULL_FLAG").map(PathBuf::from);
        Self {
            write_delay,
            full_flag,
        }
    }

    fn before_write(&self) -> std::io::Result<()> {
        if let Some(delay) = self.write_delay {
            std::thread::sleep(delay);
        }
        match &self.full_flag {
            Some(flag) if flag.exists() => Err(std::io::Error::from_raw_os_error(libc::ENOSPC)),
            _ => Ok(()),
        }
    }
}

struct OpenFile {
    file: File,
    path: PathBuf,
    /// Bytes in the file, always whole packets.
    length: u64,
}

pub(super) struct Writer {
    point: String,
    settings: RecordSettings,
    rotation: Rotation,
    file: Option<OpenFile>,
    hooks: TestHooks,
    last_sweep: Option<Instant>,
    progress: Progress,
    served: Option<Served>,
    last_indexed: Option<Instant>,
}

impl Writer {
    pub(super) fn new(
        point: &str,
        settings: RecordSettings,
        hooks: TestHooks,
        progress: Progress,
        served: Option<Served>,
    ) -> Self {
        Self {
            point: point.to_owned(),
            rotation: Rotation::new(settings.segment),
            settings,
            file: None,
            hooks,
            last_sweep: None,
            progress,
            served,
            last_indexed: None,
        }
    }

    /// Write what arrives until the feeder goes away.
    pub(super) fn run(mut self, queue: Receiver<Message>) {
        loop {
            match queue.recv_timeout(self.sweep_interval()) {
                Ok(Message::Chunk {
                    data,
                    keyframe,
                    new_source,
                    at,
                }) => self.chunk(&data, keyframe, new_source, at),
                Ok(Message::Close) => self.close(),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            self.sweep_if_due(SystemTime::now());
            self.index_if_due();
        }
        self.close();
    }

    fn sweep_interval(&self) -> Duration {
        self.settings
            .retain
            .map_or(MAX_SWEEP_INTERVAL, |retain| retain / 4)
            .clamp(MIN_SWEEP_INTERVAL, MAX_SWEEP_INTERVAL)
    }

    fn chunk(&mut self, data: &Bytes, keyframe: bool, new_source: bool, at: SystemTime) {
        match self.rotation.decide(keyframe, new_source, at) {
            ChunkAction::Skip => {
                self.progress.dropped(data.len() as u64);
                return;
            }
            ChunkAction::Open(start) => {
                self.close();
                if let Err(error) = self.open(start) {
                    let path = self.path_for(start);
                    self.fail(&path, &error, at);
                    self.progress.dropped(data.len() as u64);
                    return;
                }
            }
            ChunkAction::Write => {}
        }
        if let Err(error) = self.write(data) {
            let path = self.file.as_ref().map(|open| open.path.clone());
            self.truncate_to_whole_packets();
            self.file = None;
            self.fail(&path.unwrap_or_default(), &error, at);
            self.progress.dropped(data.len() as u64);
        }
    }

    fn path_for(&self, start: SystemTime) -> PathBuf {
        self.settings.dir.join(file_name(&self.point, start))
    }

    fn open(&mut self, start: SystemTime) -> std::io::Result<()> {
        let path = self.path_for(start);
        std::fs::create_dir_all(&self.settings.dir)?;
        // Appending: a file of the same second (a restarted server) goes on, from a keyframe.
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        let existing = file.metadata()?.len();
        let length = existing - existing % TS_PACKET_LEN;
        if length != existing {
            file.set_len(length)?;
        }
        info!(event = events::RECORDING_STARTED, point = %self.point, path = %path.display(), "recording to a new file");
        self.rotation.opened(start);
        self.progress.opened(&path, length);
        self.file = Some(OpenFile { file, path, length });
        self.last_sweep = None; // a new file is a good moment to apply retention
        Ok(())
    }

    fn write(&mut self, data: &Bytes) -> std::io::Result<()> {
        let Some(open) = self.file.as_mut() else {
            return Ok(());
        };
        self.hooks.before_write()?;
        open.file.write_all(data)?;
        open.length += data.len() as u64;
        self.progress.wrote(data.len() as u64);
        self.rotation.written();
        Ok(())
    }

    /// After a failed write, drop a partial packet at the end, so the file plays to its last
    /// whole one; a file that got nothing at all is removed (retries leave no empty files).
    fn truncate_to_whole_packets(&mut self) {
        if let Some(open) = &self.file {
            let _ = open.file.set_len(open.length);
            if open.length == 0 {
                let _ = std::fs::remove_file(&open.path);
            }
        }
    }

    fn fail(&mut self, path: &Path, error: &std::io::Error, now: SystemTime) {
        let retry = self.rotation.failed(now);
        self.progress.failed();
        let retry_in_ms = retry.duration_since(now).unwrap_or_default().as_millis() as u64;
        error!(event = events::RECORDING_FAILED, point = %self.point, path = %path.display(), %error, retry_in_ms, "recording stopped (the live point keeps serving); a new file is tried at a keyframe after the retry time");
    }

    fn close(&mut self) {
        if let Some(open) = self.file.take() {
            info!(point = %self.point, path = %open.path.display(), bytes = open.length, "recording file closed");
            self.progress.closed();
        }
        self.rotation.closed();
    }

    /// Keep the served file's index close behind the writing, so that a player asking for it
    /// gets (at once) an index at most about a second old.
    fn index_if_due(&mut self) {
        let (Some(served), Some(open)) = (&self.served, &self.file) else {
            return;
        };
        if self
            .last_indexed
            .is_some_and(|last| last.elapsed() < INDEX_INTERVAL)
        {
            return;
        }
        self.last_indexed = Some(Instant::now());
        let _runtime = served.runtime.enter();
        served.indexes.prepare(&open.path);
    }

    fn sweep_if_due(&mut self, now: SystemTime) {
        let Some(retain) = self.settings.retain else {
            return;
        };
        let due = self
            .last_sweep
            .map_or(true, |last| last.elapsed() >= self.sweep_interval());
        if !due {
            return;
        }
        self.last_sweep = Some(Instant::now());
        let Ok(entries) = std::fs::read_dir(&self.settings.dir) else {
            return;
        };
        let names: Vec<String> = entries
            .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
            .collect();
        let current = self.file.as_ref().map(|open| open.path.clone());
        for name in expired(&self.point, names.iter().map(String::as_str), now, retain) {
            let path = self.settings.dir.join(name);
            if Some(&path) == current.as_ref() {
                continue;
            }
            match std::fs::remove_file(&path) {
                Ok(()) => {
                    info!(event = events::RECORDING_EXPIRED, point = %self.point, path = %path.display(), "recording deleted by retention");
                }
                Err(error) => {
                    warn!(event = events::RECORDING_RETENTION_FAILED, point = %self.point, path = %path.display(), %error, "an expired recording could not be deleted");
                }
            }
        }
    }
}

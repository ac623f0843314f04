//! Time indexes of on-demand files (RTSP seek and pacing, durations), built off the async
//! threads and cached per file version.
//!
//! Building an index reads the whole file, so it never happens where a request is answered:
//! a lookup only reads the cache, and a miss starts a background build on the blocking pool
//! and answers "building". Each file version (size, modification time) is built once however
//! many requests ask for it, a failure is remembered for that version like a success, and at
//! most [`MAX_CONCURRENT_BUILDS`] builds read files at once. A file that only grew (a
//! recording still being written: same first bytes, larger) is indexed on from where the
//! last build stopped, not from its start, and meanwhile a lookup answers with the index of
//! the smaller version, so that a recording plays and seeks while it is written (the
//! file changes with every write; a player must not be told to retry forever). The cache
//! is shared by every
//! version of the point table, so a reload keeps it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use ferrocast_plugin_api::{ErrorCode, HostError};
use tokio::runtime::Handle;
use tokio::sync::{watch, Semaphore};
use tracing::{debug, warn};

use crate::events;
use crate::media::index::{index_from, FileIndex, IndexError, IndexProgress};

/// Index builds that read files at the same time; the others wait for a slot, so a burst of
/// requests for unindexed files cannot take every disk and blocking thread.
pub const MAX_CONCURRENT_BUILDS: usize = 2;

/// Files of a directory point indexed ahead of requests: enough for a typical folder of
/// recordings, without reading a whole archive at every reload.
pub const DIRECTORY_PREPARE_LIMIT: usize = 64;

/// What identifies one version of a file: a file that grows or is rewritten gets a new index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileVersion {
    pub size: u64,
    pub modified: Option<SystemTime>,
}

impl FileVersion {
    pub fn of(metadata: &std::fs::Metadata) -> Self {
        Self {
            size: metadata.len(),
            modified: metadata.modified().ok(),
        }
    }
}

/// Why a file has no index.
#[derive(Debug, Clone, thiserror::Error)]
pub enum IndexFailure {
    #[error("{0}")]
    Index(Arc<IndexError>),
    #[error("cannot read {}: {source}", .path.display())]
    Unreadable {
        path: PathBuf,
        source: Arc<std::io::Error>,
    },
    #[error("indexing {} stopped before it finished", .path.display())]
    Interrupted { path: PathBuf },
}

/// What the cache holds for a file right now.
#[derive(Debug, Clone)]
pub enum IndexLookup {
    Ready(Arc<FileIndex>),
    /// A build is under way (or was just started by this lookup).
    Building,
    Failed(IndexFailure),
}

impl IndexLookup {
    /// The index a paced RTP play needs, or the refusal to answer the plugin with. A file
    /// still being indexed is `UNAVAILABLE` with a hint to retry: the client's retry finds it
    /// ready.
    pub fn ready_for_play(self) -> Result<Arc<FileIndex>, HostError> {
        match self {
            Self::Ready(index) => Ok(index),
            Self::Building => Err(HostError::new(
                ErrorCode::UNAVAILABLE,
                "the file is still being indexed for playback; retry in a few seconds",
            )),
            Self::Failed(failure) => Err(HostError::new(
                ErrorCode::UNAVAILABLE,
                format!("the file cannot be played over RTP: {failure}"),
            )),
        }
    }

    /// The file's duration in milliseconds if its index is ready, else 0 (unknown).
    pub fn duration_ms(&self) -> u64 {
        match self {
            Self::Ready(index) => index.duration.as_millis() as u64,
            Self::Building | Self::Failed(_) => 0,
        }
    }
}

/// What a build gives: the index (or why there is none) and where to continue if the file
/// grows.
pub type Indexed = (Result<FileIndex, IndexError>, Option<IndexProgress>);

/// Builds an index from a file, continuing from a previous build's progress if given; a
/// parameter so that tests can count and slow builds down.
pub type Indexer = dyn Fn(&Path, Option<IndexProgress>) -> Indexed + Send + Sync;

/// The per-file index cache. See the module documentation.
pub struct IndexCache {
    entries: Mutex<HashMap<PathBuf, Entry>>,
    builds: Arc<Semaphore>,
    indexer: Arc<Indexer>,
}

struct Entry {
    version: FileVersion,
    state: EntryState,
    /// Where the last finished build of this file stopped.
    progress: Option<Arc<IndexProgress>>,
    /// While a grown version is built: the index of the smaller version, for lookups.
    grown_from: Option<Arc<FileIndex>>,
}

enum EntryState {
    /// Waiters watch the receiver: the build drops its sender when it ends.
    Building(watch::Receiver<()>),
    Ready(Arc<FileIndex>),
    Failed(IndexFailure),
}

impl Default for IndexCache {
    fn default() -> Self {
        Self::with_indexer(MAX_CONCURRENT_BUILDS, Arc::new(index_from))
    }
}

impl IndexCache {
    pub fn with_indexer(max_builds: usize, indexer: Arc<Indexer>) -> Self {
        Self {
            entries: Mutex::default(),
            builds: Arc::new(Semaphore::new(max_builds.max(1))),
            indexer,
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<PathBuf, Entry>> {
        // Entries are replaced whole under the lock; a poisoned map is still consistent.
        self.entries
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// What the cache has for the current version of `path`, starting a background build if
    /// it has nothing. Never reads the file itself.
    pub fn lookup(self: &Arc<Self>, path: &Path) -> IndexLookup {
        match std::fs::metadata(path) {
            Ok(metadata) => self.lookup_version(path, FileVersion::of(&metadata)),
            Err(source) => {
                let failure = IndexFailure::Unreadable {
                    path: path.to_owned(),
                    source: Arc::new(source),
                };
                warn!(event = events::INDEX_FAILED, path = %path.display(), error = %failure, "cannot index on-demand file");
                IndexLookup::Failed(failure)
            }
        }
    }

    /// Like [`Self::lookup`], for a version the caller has just read from the file.
    pub fn lookup_version(self: &Arc<Self>, path: &Path, version: FileVersion) -> IndexLookup {
        match self.entry_or_build(path, version) {
            Current::Ready(index) => IndexLookup::Ready(index),
            Current::Failed(failure) => IndexLookup::Failed(failure),
            Current::Building(_, Some(smaller)) => IndexLookup::Ready(smaller),
            Current::Building(_, None) => IndexLookup::Building,
        }
    }

    /// Have the current version of `path` indexed in the background, if it is not already.
    pub fn prepare(self: &Arc<Self>, path: &Path) {
        let _ = self.lookup(path);
    }

    /// Have the first [`DIRECTORY_PREPARE_LIMIT`] `.ts` files (by name) of each directory
    /// indexed in the background. The directories are listed on the blocking pool.
    pub fn prepare_directories(self: &Arc<Self>, roots: Vec<PathBuf>) {
        let Ok(runtime) = Handle::try_current() else {
            return;
        };
        if roots.is_empty() {
            return;
        }
        let cache = Arc::clone(self);
        runtime.spawn_blocking(move || {
            for root in roots {
                for file in media_files(&root, DIRECTORY_PREPARE_LIMIT) {
                    cache.prepare(&file);
                }
            }
        });
    }

    /// The index of the current version of `path`, waiting for its build if need be.
    pub async fn wait(self: &Arc<Self>, path: &Path) -> Result<Arc<FileIndex>, IndexFailure> {
        loop {
            let version = match std::fs::metadata(path) {
                Ok(metadata) => FileVersion::of(&metadata),
                Err(source) => {
                    return Err(IndexFailure::Unreadable {
                        path: path.to_owned(),
                        source: Arc::new(source),
                    })
                }
            };
            match self.entry_or_build(path, version) {
                Current::Ready(index) => return Ok(index),
                Current::Failed(failure) => return Err(failure),
                // Ends (with an error) when the build drops its sender; then look again.
                Current::Building(mut done, _) => while done.changed().await.is_ok() {},
            }
        }
    }

    fn entry_or_build(self: &Arc<Self>, path: &Path, version: FileVersion) -> Current {
        let mut entries = self.lock();
        if let Some(entry) = entries.get(path).filter(|entry| entry.version == version) {
            return match &entry.state {
                EntryState::Ready(index) => Current::Ready(Arc::clone(index)),
                EntryState::Failed(failure) => Current::Failed(failure.clone()),
                EntryState::Building(done) => {
                    Current::Building(done.clone(), entry.grown_from.clone())
                }
            };
        }
        // A file growing while its last growth is indexed (a recording): that build goes on,
        // and lookups get the index before it. Superseding it instead would, under steady
        // growth, never let a build finish.
        if let Some(entry) = entries.get(path) {
            if let (EntryState::Building(done), Some(smaller)) = (&entry.state, &entry.grown_from) {
                if entry.version.size < version.size {
                    return Current::Building(done.clone(), Some(Arc::clone(smaller)));
                }
            }
        }
        let Ok(runtime) = Handle::try_current() else {
            // Nowhere to build (no runtime): answer "building" without claiming the entry,
            // so that the next lookup from a runtime starts the build.
            return Current::Building(watch::channel(()).1, None);
        };
        let (done_tx, done_rx) = watch::channel(());
        // A finished build of a smaller version is where a grown file continues from (the
        // indexer checks that the file's start is unchanged).
        let progress = entries
            .get(path)
            .filter(|entry| {
                entry.version.size <= version.size
                    && !matches!(entry.state, EntryState::Building(_))
            })
            .and_then(|entry| entry.progress.clone());
        let grown_from = entries
            .get(path)
            .filter(|entry| entry.version.size < version.size)
            .and_then(|entry| match &entry.state {
                EntryState::Ready(index) => Some(Arc::clone(index)),
                EntryState::Building(_) => entry.grown_from.clone(),
                EntryState::Failed(_) => None,
            });
        entries.insert(
            path.to_owned(),
            Entry {
                version,
                state: EntryState::Building(done_rx.clone()),
                progress: progress.clone(),
                grown_from: grown_from.clone(),
            },
        );
        // Unlocked first: a build the runtime refuses is dropped at once, and its drop locks.
        drop(entries);
        let build = Build {
            cache: Arc::clone(self),
            path: path.to_owned(),
            version,
            progress,
            _done: done_tx,
        };
        runtime.spawn(build.run());
        Current::Building(done_rx, grown_from)
    }

    /// Whether the build of `version` is still the one the cache waits for (a newer version
    /// of the file replaces it).
    fn still_wanted(&self, path: &Path, version: FileVersion) -> bool {
        self.lock().get(path).is_some_and(|entry| {
            entry.version == version && matches!(entry.state, EntryState::Building(_))
        })
    }

    /// Store the outcome of the build of `version`, unless a newer version replaced it.
    fn finish(
        &self,
        path: &Path,
        version: FileVersion,
        state: EntryState,
        progress: Option<IndexProgress>,
    ) {
        if let Some(entry) = self.lock().get_mut(path) {
            if entry.version == version && matches!(entry.state, EntryState::Building(_)) {
                entry.state = state;
                entry.progress = progress.map(Arc::new);
            }
        }
    }

    /// A build of `version` ended without an outcome: forget it, so that it is tried again.
    fn abandon(&self, path: &Path, version: FileVersion) {
        let mut entries = self.lock();
        let building = entries.get(path).is_some_and(|entry| {
            entry.version == version && matches!(entry.state, EntryState::Building(_))
        });
        if building {
            entries.remove(path);
        }
    }
}

/// Up to `limit` `.ts` files directly under `root`, by name, as the canonical paths a
/// request resolves to; a symlink leading outside `root` is left out, as requests refuse it.
fn media_files(root: &Path, limit: usize) -> Vec<PathBuf> {
    let Ok(root) = root.canonicalize() else {
        return Vec::new();
    };
    let Ok(entries) = std::fs::read_dir(&root) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| path.extension().and_then(|e| e.to_str()) == Some("ts"))
        .collect();
    files.sort();
    files
        .into_iter()
        .filter_map(|path| path.canonicalize().ok())
        .filter(|path| path.starts_with(&root) && path.is_file())
        .take(limit)
        .collect()
}

/// An entry as seen under the lock.
enum Current {
    Ready(Arc<FileIndex>),
    Failed(IndexFailure),
    /// With the index of a smaller version of a grown file, if there is one.
    Building(watch::Receiver<()>, Option<Arc<FileIndex>>),
}

/// One background build. Dropping it (finished, superseded or cancelled) wakes the waiters.
struct Build {
    cache: Arc<IndexCache>,
    path: PathBuf,
    version: FileVersion,
    /// Where the previous build of a smaller version stopped.
    progress: Option<Arc<IndexProgress>>,
    _done: watch::Sender<()>,
}

impl Build {
    async fn run(self) {
        let Ok(_slot) = Arc::clone(&self.cache.builds).acquire_owned().await else {
            return;
        };
        if !self.cache.still_wanted(&self.path, self.version) {
            debug!(path = %self.path.display(), "file changed while its index waited to be built; building the new version instead");
            return;
        }
        let indexer = Arc::clone(&self.cache.indexer);
        let path = self.path.clone();
        let progress = self.progress.as_deref().cloned();
        let (state, progress) =
            match tokio::task::spawn_blocking(move || indexer(&path, progress)).await {
                Ok((Ok(index), progress)) => (EntryState::Ready(Arc::new(index)), progress),
                Ok((Err(error), progress)) => (
                    EntryState::Failed(IndexFailure::Index(Arc::new(error))),
                    progress,
                ),
                Err(_) => (
                    EntryState::Failed(IndexFailure::Interrupted {
                        path: self.path.clone(),
                    }),
                    None,
                ),
            };
        if let EntryState::Failed(failure) = &state {
            warn!(event = events::INDEX_FAILED, path = %self.path.display(), error = %failure, "cannot index on-demand file; it cannot be played over RTP and its duration is unknown until the file changes");
        }
        self.cache.finish(&self.path, self.version, state, progress);
    }
}

impl Drop for Build {
    fn drop(&mut self) {
        // After `finish` this changes nothing; after a cancelled build it lets the next lookup
        // start again instead of waiting forever.
        self.cache.abandon(&self.path, self.version);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    /// An indexer that counts its builds and the most that ran at once, taking `delay` each.
    struct Counting {
        builds: AtomicUsize,
        running: AtomicUsize,
        most_at_once: AtomicUsize,
        delay: Duration,
        fail: bool,
    }

    impl Counting {
        fn new(delay: Duration, fail: bool) -> Arc<Self> {
            Arc::new(Self {
                builds: AtomicUsize::new(0),
                running: AtomicUsize::new(0),
                most_at_once: AtomicUsize::new(0),
                delay,
                fail,
            })
        }

        fn cache(self: &Arc<Self>, max_builds: usize) -> Arc<IndexCache> {
            let counting = Arc::clone(self);
            Arc::new(IndexCache::with_indexer(
                max_builds,
                Arc::new(move |path: &Path, _| (counting.build(path), None)),
            ))
        }

        fn build(&self, path: &Path) -> Result<FileIndex, IndexError> {
            self.builds.fetch_add(1, Ordering::SeqCst);
            let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
            self.most_at_once.fetch_max(now, Ordering::SeqCst);
            std::thread::sleep(self.delay);
            self.running.fetch_sub(1, Ordering::SeqCst);
            if self.fail {
                return Err(IndexError::NoPcr {
                    path: path.to_owned(),
                });
            }
            Ok(FileIndex {
                duration: Duration::from_secs(12),
                size: std::fs::metadata(path).map_or(0, |m| m.len()),
                entries: Vec::new(),
                psi: None,
            })
        }

        fn builds(&self) -> usize {
            self.builds.load(Ordering::SeqCst)
        }
    }

    fn media_file(dir: &tempfile::TempDir, name: &str) -> PathBuf {
        let path = dir.path().join(name);
        std::fs::write(&path, [0x47u8; 188]).unwrap();
        path
    }

    #[tokio::test]
    async fn two_requests_share_one_build() {
        let dir = tempfile::tempdir().unwrap();
        let file = media_file(&dir, "a.ts");
        let counting = Counting::new(Duration::from_millis(50), false);
        let cache = counting.cache(2);
        assert!(matches!(cache.lookup(&file), IndexLookup::Building));
        assert!(matches!(cache.lookup(&file), IndexLookup::Building));
        let (first, second) = tokio::join!(cache.wait(&file), cache.wait(&file));
        assert!(Arc::ptr_eq(&first.unwrap(), &second.unwrap()));
        assert_eq!(counting.builds(), 1);
        assert_eq!(cache.lookup(&file).duration_ms(), 12_000);
        assert_eq!(counting.builds(), 1);
    }

    #[tokio::test]
    async fn a_failed_index_is_remembered_for_that_version() {
        let dir = tempfile::tempdir().unwrap();
        let file = media_file(&dir, "no-pcr.ts");
        let counting = Counting::new(Duration::ZERO, true);
        let cache = counting.cache(2);
        assert!(matches!(
            cache.wait(&file).await,
            Err(IndexFailure::Index(_))
        ));
        for _ in 0..3 {
            let lookup = cache.lookup(&file);
            assert!(matches!(lookup, IndexLookup::Failed(_)), "{lookup:?}");
            let refusal = lookup.ready_for_play().unwrap_err();
            assert_eq!(refusal.code, ErrorCode::UNAVAILABLE);
            assert!(refusal.message.contains("no PCR"), "{refusal}");
        }
        assert_eq!(counting.builds(), 1);
    }

    #[tokio::test]
    async fn a_new_file_version_is_indexed_again() {
        let dir = tempfile::tempdir().unwrap();
        let file = media_file(&dir, "growing.ts");
        let counting = Counting::new(Duration::ZERO, false);
        let cache = counting.cache(2);
        let before = cache.wait(&file).await.unwrap();
        assert_eq!(before.size, 188);
        std::fs::write(&file, [0x47u8; 376]).unwrap();
        // Grown: a lookup answers the smaller version's index while the new one is built.
        match cache.lookup(&file) {
            IndexLookup::Ready(index) => assert_eq!(index.size, 188),
            other => panic!("{other:?}"),
        }
        let after = cache.wait(&file).await.unwrap();
        assert_eq!(after.size, 376);
        assert_eq!(counting.builds(), 2);
        // Rewritten smaller: nothing stale is answered.
        std::fs::write(&file, [0x47u8; 188]).unwrap();
        assert!(matches!(cache.lookup(&file), IndexLookup::Building));
    }

    #[tokio::test]
    async fn a_file_growing_during_its_build_keeps_that_build_and_the_older_index() {
        let dir = tempfile::tempdir().unwrap();
        let file = media_file(&dir, "recording.ts");
        let counting = Counting::new(Duration::from_millis(300), false);
        let cache = counting.cache(2);
        assert_eq!(cache.wait(&file).await.unwrap().size, 188);
        for size in [376, 564] {
            std::fs::write(&file, vec![0x47u8; size]).unwrap();
            match cache.lookup(&file) {
                IndexLookup::Ready(index) => assert_eq!(index.size, 188),
                other => panic!("{other:?}"),
            }
        }
        // The build of 376 bytes was not superseded by the growth to 564.
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(counting.builds(), 2);
        assert_eq!(cache.wait(&file).await.unwrap().size, 564);
        assert_eq!(counting.builds(), 3);
    }

    #[tokio::test]
    async fn at_most_the_limit_of_builds_run_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let files: Vec<PathBuf> = (0..6)
            .map(|i| media_file(&dir, &format!("{i}.ts")))
            .collect();
        let counting = Counting::new(Duration::from_millis(40), false);
        let cache = counting.cache(2);
        for file in &files {
            cache.prepare(file);
        }
        for file in &files {
            cache.wait(file).await.unwrap();
        }
        assert_eq!(counting.builds(), 6);
        assert_eq!(counting.most_at_once.load(Ordering::SeqCst), 2);
    }

    /// The default test runtime has one thread: a lookup that blocked on the build, or
    /// called `block_in_place`, would hang or panic here.
    #[tokio::test]
    async fn lookup_never_waits_for_a_build() {
        let dir = tempfile::tempdir().unwrap();
        let file = media_file(&dir, "slow.ts");
        let counting = Counting::new(Duration::from_millis(300), false);
        let cache = counting.cache(1);
        let started = std::time::Instant::now();
        for _ in 0..10 {
            assert!(matches!(cache.lookup(&file), IndexLookup::Building));
        }
        assert!(started.elapsed() < Duration::from_millis(200));
        let refusal = cache.lookup(&file).ready_for_play().unwrap_err();
        assert_eq!(refusal.code, ErrorCode::UNAVAILABLE);
        assert!(refusal.message.contains("still being indexed"), "{refusal}");
        cache.wait(&file).await.unwrap();
        assert!(matches!(cache.lookup(&file), IndexLookup::Ready(_)));
        assert_eq!(counting.builds(), 1);
    }

    #[test]
    fn lookup_outside_a_runtime_answers_building_and_claims_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let file = media_file(&dir, "a.ts");
        let counting = Counting::new(Duration::ZERO, false);
        let cache = counting.cache(2);
        assert!(matches!(cache.lookup(&file), IndexLookup::Building));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        runtime.block_on(async {
            cache.wait(&file).await.unwrap();
        });
        assert_eq!(counting.builds(), 1);
    }

    #[tokio::test]
    async fn a_file_that_grows_is_indexed_on_from_the_last_build() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("recording.ts");
        let packet = crate::media::test_support::PacketSpec::new(0x100)
            .payload(&[0; 184])
            .build();
        std::fs::write(&path, packet.repeat(1000)).unwrap();
        let resumed_from = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&resumed_from);
        let cache = Arc::new(IndexCache::with_indexer(
            2,
            Arc::new(move |path: &Path, progress: Option<IndexProgress>| {
                seen.lock()
                    .unwrap()
                    .push(progress.as_ref().map(IndexProgress::indexed_bytes));
                index_from(path, progress)
            }),
        ));
        assert!(cache.wait(&path).await.is_err(), "no PCR");
        for more in [500, 700] {
            let mut file = std::fs::OpenOptions::new()
                .append(true)
                .open(&path)
                .unwrap();
            std::io::Write::write_all(&mut file, &packet.repeat(more)).unwrap();
            assert!(cache.wait(&path).await.is_err());
        }
        assert_eq!(
            *resumed_from.lock().unwrap(),
            [None, Some(1000 * 188), Some(1500 * 188)]
        );
        // Rewritten from scratch (smaller): indexed from its start.
        std::fs::write(&path, packet.repeat(10)).unwrap();
        assert!(cache.wait(&path).await.is_err());
        assert_eq!(resumed_from.lock().unwrap().last(), Some(&None));
    }
}

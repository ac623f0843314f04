//! The plugin registry: finds plugin libraries in the plugin directory, loads them through the
//! stable ABI, refuses, one by one, the files that cannot be used, and loads new builds as new
//! generations while the server runs.
//!
//! A refusal never stops the other plugins from loading: the server reports the file and the
//! reason (PLUGIN_REFUSED) and goes on with what it has.
//!
//! Every library is loaded from a private copy at a unique path, never from the plugin
//! directory itself: the dynamic loader returns an already-loaded object for a path it has
//! seen, and a build copied over a mapped file would corrupt the running code. Libraries are
//! never unloaded; a generation that a newer one replaced keeps serving its own sessions
//! until they end.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use ferrocast_plugin_api::host::{
    load_library, CreateFailure, LoadError, PluginInstance, PluginLibrary,
};
use ferrocast_plugin_api::{PluginKind, SessionInfo};
use tracing::{info, warn};

use crate::config::{PluginCatalog, SettingIssue};
use crate::events;

/// File names the registry considers: `libferrocast_<name>.so`.
const LIBRARY_PREFIX: &str = "libferrocast_";
const LIBRARY_SUFFIX: &str = ".so";

/// Copies get process-wide unique names.
static NEXT_COPY: AtomicU64 = AtomicU64::new(1);

/// A file or build that was not taken, and why, as reported to the operator (startup
/// summary, `ferrocast reload`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub path: PathBuf,
    pub reason: String,
}

/// Why a file in the plugin directory could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadFailure {
    #[error("cannot copy it to {} for loading: {source}; check that the temporary directory is writable", .copy.display())]
    Copy {
        path: PathBuf,
        copy: PathBuf,
        source: std::io::Error,
    },
    #[error("{source}")]
    Library { path: PathBuf, source: LoadError },
    #[error("duplicate plugin name `{name}`: already provided by {}; remove one of the two files", .other.display())]
    DuplicateName {
        path: PathBuf,
        name: String,
        other: PathBuf,
    },
}

/// Why a configured instance of a plugin could not be created.
#[derive(Debug, thiserror::Error)]
pub enum InstantiateError {
    #[error("plugin `{plugin}` is not loaded")]
    NotLoaded { plugin: String },
    #[error("plugin `{plugin}` panicked during initialisation: {fault}")]
    Panicked {
        plugin: String,
        path: PathBuf,
        fault: String,
    },
    #[error("{}", describe_issues(.issues))]
    Settings {
        plugin: String,
        path: PathBuf,
        issues: Vec<SettingIssue>,
    },
}

/// Why a new build of a plugin failed the check before taking traffic.
#[derive(Debug, thiserror::Error)]
pub enum SelfCheckError {
    #[error("the new build is a {new} plugin but the running one is a {running} plugin; a new build must keep its kind")]
    KindChanged {
        plugin: String,
        path: PathBuf,
        new: PluginKind,
        running: PluginKind,
    },
    #[error(transparent)]
    Instantiate(#[from] InstantiateError),
    #[error("the new build panicked opening a session during its self-check: {fault}")]
    SessionPanicked {
        plugin: String,
        path: PathBuf,
        fault: ferrocast_plugin_api::host::PluginFault,
    },
}

/// `key: message; key: message`, as plugins word their settings errors.
fn describe_issues(issues: &[SettingIssue]) -> String {
    issues
        .iter()
        .map(|issue| format!("{}: {}", issue.key, issue.message))
        .collect::<Vec<_>>()
        .join("; ")
}

/// What identifies one installed build of a plugin file: installing a new build, by copy or by
/// atomic rename, changes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileIdentity {
    device: u64,
    inode: u64,
    size: u64,
    modified: Option<SystemTime>,
}

impl FileIdentity {
    fn of(path: &Path) -> std::io::Result<Self> {
        let metadata = std::fs::metadata(path)?;
        Ok(Self {
            device: metadata.dev(),
            inode: metadata.ino(),
            size: metadata.len(),
            modified: metadata.modified().ok(),
        })
    }
}

/// One loaded copy of a plugin library.
#[derive(Debug)]
pub struct Generation {
    pub plugin: String,
    /// 1 for the build loaded at startup, then one more for every new build.
    pub number: u64,
    pub library: PluginLibrary,
    /// The file in the plugin directory this generation was loaded from.
    pub installed: PathBuf,
    sessions: AtomicUsize,
    /// A newer generation took over new sessions.
    superseded: AtomicBool,
}

impl Generation {
    /// Sessions currently served by this generation.
    pub fn sessions(&self) -> usize {
        self.sessions.load(Ordering::Relaxed)
    }

    pub fn is_superseded(&self) -> bool {
        self.superseded.load(Ordering::Relaxed)
    }

    /// Count a session for as long as the returned guard lives.
    pub fn session_started(self: &Arc<Self>) -> GenerationSession {
        self.sessions.fetch_add(1, Ordering::Relaxed);
        GenerationSession(Arc::clone(self))
    }
}

/// Keeps one session counted on its generation; the last one of a superseded generation
/// reports that the generation has drained.
pub struct GenerationSession(Arc<Generation>);

impl Drop for GenerationSession {
    fn drop(&mut self) {
        let generation = &self.0;
        let left = generation.sessions.fetch_sub(1, Ordering::Relaxed) - 1;
        if left == 0 && generation.is_superseded() {
            info!(
                event = events::GENERATION_DRAINED,
                plugin = %generation.plugin,
                generation = generation.number,
                "the last session of a replaced plugin generation ended; it serves nothing any more"
            );
        }
    }
}

/// What a rescan of the plugin directory found.
#[derive(Default)]
pub struct Rescan {
    /// New builds, loaded but not yet taking traffic.
    pub candidates: Vec<Candidate>,
    /// Changed files that could not be loaded (already logged).
    pub refused: Vec<Refusal>,
}

/// A new build found by [`PluginRegistry::rescan`], loaded but not yet taking traffic.
pub struct Candidate {
    pub generation: Arc<Generation>,
}

/// Every plugin library found in the plugin directory, with the generations loaded so far.
#[derive(Debug)]
pub struct PluginRegistry {
    pub dir: PathBuf,
    /// Private directory the copies are loaded from.
    copies: PathBuf,
    /// The generation new sessions get, by plugin name.
    current: BTreeMap<String, Arc<Generation>>,
    /// Replaced generations, kept while they still serve sessions.
    replaced: Vec<Arc<Generation>>,
    /// The identity of every file last looked at (loaded or refused), so that an unchanged
    /// file is not loaded again.
    seen: HashMap<PathBuf, FileIdentity>,
    pub refused: Vec<Refusal>,
    next_generation: HashMap<String, u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("cannot read plugin directory {dir}: {source}; set [server] plugin_dir or --plugin-dir to the directory holding libferrocast_*.so")]
    UnreadableDir {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot create the directory for plugin copies {dir}: {source}; check that the temporary directory (TMPDIR) is writable")]
    CopiesDir {
        dir: PathBuf,
        source: std::io::Error,
    },
}

impl Drop for PluginRegistry {
    fn drop(&mut self) {
        // The copies are unlinked as soon as they are mapped; only the empty directory is left.
        let _ = std::fs::remove_dir(&self.copies);
    }
}

impl PluginRegistry {
    /// Load every `libferrocast_*.so` in `dir`, in name order.
    pub fn load_dir(dir: &Path) -> Result<Self, RegistryError> {
        let copies = std::env::temp_dir().join(format!(
            "ferrocast-{}-{}-plugins",
            std::process::id(),
            NEXT_COPY.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&copies).map_err(|source| RegistryError::CopiesDir {
            dir: copies.clone(),
            source,
        })?;
        let mut registry = Self {
            dir: dir.to_owned(),
            copies,
            current: BTreeMap::new(),
            replaced: Vec::new(),
            seen: HashMap::new(),
            refused: Vec::new(),
            next_generation: HashMap::new(),
        };
        for path in registry.plugin_files()? {
            if let Ok(Some(candidate)) = registry.load_new(&path) {
                let generation = candidate.generation;
                registry
                    .current
                    .insert(generation.plugin.clone(), generation);
            }
        }
        Ok(registry)
    }

    fn plugin_files(&self) -> Result<Vec<PathBuf>, RegistryError> {
        let entries =
            std::fs::read_dir(&self.dir).map_err(|source| RegistryError::UnreadableDir {
                dir: self.dir.clone(),
                source,
            })?;
        let mut paths: Vec<PathBuf> = entries
            .filter_map(|entry| entry.ok().map(|entry| entry.path()))
            .filter(|path| is_plugin_file_name(path))
            .collect();
        paths.sort();
        Ok(paths)
    }

    /// Look for new builds in the plugin directory: every plugin file whose identity changed
    /// since it was last looked at is loaded as a new generation. The candidates are not yet
    /// current; the caller validates each, then [`Self::promote`]s or [`Self::refuse_candidate`]s it.
    pub fn rescan(&mut self) -> Result<Rescan, RegistryError> {
        let mut rescan = Rescan::default();
        for path in self.plugin_files()? {
            match self.load_new(&path) {
                Ok(Some(candidate)) => rescan.candidates.push(candidate),
                Ok(None) => {}
                Err(refusal) => rescan.refused.push(refusal),
            }
        }
        Ok(rescan)
    }

    /// Load `path` if it changed since it was last seen (or was never seen). `Err` is a file
    /// that could not be loaded (already reported).
    fn load_new(&mut self, path: &Path) -> Result<Option<Candidate>, Refusal> {
        let identity = match FileIdentity::of(path) {
            Ok(identity) => identity,
            // Renamed away between the listing and now; the next scan sees what replaced it.
            Err(_) => return Ok(None),
        };
        if self.seen.get(path) == Some(&identity) {
            return Ok(None);
        }
        self.seen.insert(path.to_owned(), identity);
        let library = match self.load_copy(path) {
            Ok(library) => library,
            Err(failure) => return Err(self.refuse(&failure)),
        };
        let name = library.info.name.to_string();
        if let Some(other) = self
            .current
            .get(&name)
            .filter(|generation| generation.installed != path)
        {
            let failure = LoadFailure::DuplicateName {
                path: path.to_owned(),
                name,
                other: other.installed.clone(),
            };
            return Err(self.refuse(&failure));
        }
        let number = self.next_generation.entry(name.clone()).or_insert(0);
        *number += 1;
        let generation = Arc::new(Generation {
            plugin: name.clone(),
            number: *number,
            library,
            installed: path.to_owned(),
            sessions: AtomicUsize::new(0),
            superseded: AtomicBool::new(false),
        });
        info!(
            event = events::PLUGIN_LOADED,
            plugin = %name,
            generation = generation.number,
            version = %generation.library.info.version,
            abi = %generation.library.abi_version,
            kind = %generation.library.info.kind,
            path = %path.display(),
            "plugin loaded"
        );
        Ok(Some(Candidate { generation }))
    }

    /// Copy `path` to a unique private path, load the copy, and unlink it (the mapping stays).
    fn load_copy(&self, path: &Path) -> Result<PluginLibrary, LoadFailure> {
        let stem = path
            .file_stem()
            .and_then(|stem| stem.to_str())
            .unwrap_or("plugin");
        let copy = self.copies.join(format!(
            "{stem}.{}{LIBRARY_SUFFIX}",
            NEXT_COPY.fetch_add(1, Ordering::Relaxed)
        ));
        if let Err(source) = std::fs::copy(path, &copy) {
            return Err(LoadFailure::Copy {
                path: path.to_owned(),
                copy,
                source,
            });
        }
        let loaded = load_library(&copy).map_err(|source| LoadFailure::Library {
            path: path.to_owned(),
            source,
        });
        let _ = std::fs::remove_file(&copy);
        loaded
    }

    fn refuse(&mut self, failure: &LoadFailure) -> Refusal {
        let path = failure.path();
        warn!(
            event = events::PLUGIN_REFUSED,
            path = %path.display(),
            reason = %failure,
            "plugin refused; the server continues without it"
        );
        let refusal = Refusal {
            path: path.to_owned(),
            reason: failure.to_string(),
        };
        self.refused.retain(|old| old.path != path);
        self.refused.push(refusal.clone());
        refusal
    }

    /// A candidate failed validation: it never takes traffic; the current generation (if any)
    /// keeps serving.
    pub fn refuse_candidate(&mut self, candidate: Candidate, reason: &SelfCheckError) {
        let generation = candidate.generation;
        warn!(
            event = events::PLUGIN_REFUSED,
            plugin = %generation.plugin,
            generation = generation.number,
            path = %generation.installed.display(),
            %reason,
            "new plugin build refused; the previous generation keeps serving"
        );
        self.refused
            .retain(|refusal| refusal.path != generation.installed);
        self.refused.push(Refusal {
            path: generation.installed.clone(),
            reason: reason.to_string(),
        });
    }

    /// A validated candidate becomes the generation new sessions get.
    pub fn promote(&mut self, candidate: Candidate) {
        let generation = candidate.generation;
        self.refused
            .retain(|refusal| refusal.path != generation.installed);
        if let Some(old) = self
            .current
            .insert(generation.plugin.clone(), Arc::clone(&generation))
        {
            old.superseded.store(true, Ordering::Relaxed);
            if old.sessions() == 0 {
                info!(event = events::GENERATION_DRAINED, plugin = %old.plugin, generation = old.number, "replaced plugin generation had no sessions; it serves nothing any more");
            }
            self.replaced.push(old);
        }
    }

    /// The generation new sessions of `name` get.
    pub fn get(&self, name: &str) -> Option<&Arc<Generation>> {
        self.current.get(name)
    }

    /// Names of the loaded plugins, sorted.
    pub fn names(&self) -> impl Iterator<Item = &String> {
        self.current.keys()
    }

    /// Forget replaced generations whose last session ended; their libraries stay mapped
    /// (never unloaded), but they are no longer listed.
    pub fn forget_drained(&mut self) {
        self.replaced.retain(|generation| generation.sessions() > 0);
    }

    /// Every generation still worth showing: the current ones, and replaced ones that still
    /// serve sessions, oldest first within each plugin.
    pub fn generations(&self) -> Vec<Arc<Generation>> {
        let mut all: Vec<Arc<Generation>> = self
            .replaced
            .iter()
            .filter(|generation| generation.sessions() > 0)
            .chain(self.current.values())
            .cloned()
            .collect();
        all.sort_by(|a, b| (&a.plugin, a.number).cmp(&(&b.plugin, b.number)));
        all
    }

    /// Build a configured instance of plugin `name` on its current generation.
    pub fn instantiate(
        &self,
        name: &str,
        settings: &str,
    ) -> Result<(Arc<Generation>, PluginInstance), InstantiateError> {
        let generation = self.get(name).ok_or_else(|| InstantiateError::NotLoaded {
            plugin: name.to_owned(),
        })?;
        let instance = instantiate(generation, settings)?;
        Ok((Arc::clone(generation), instance))
    }

    /// A human-readable table of loaded and refused plugins, printed at startup.
    pub fn summary(&self) -> String {
        let mut text = format!(
            "plugins in {} (server plugin API {}):\n",
            self.dir.display(),
            ferrocast_plugin_api::host::host_abi_version()
        );
        if self.current.is_empty() {
            text.push_str("  (none loaded)\n");
        }
        for (name, generation) in &self.current {
            let library = &generation.library;
            text.push_str(&format!(
                "  {name:<10} v{:<8} abi {:<7} {:<9} {}\n",
                library.info.version,
                library.abi_version,
                library.info.kind,
                generation.installed.display()
            ));
        }
        for refusal in &self.refused {
            text.push_str(&format!(
                "  REFUSED    {}: {}\n",
                refusal.path.display(),
                refusal.reason
            ));
        }
        text
    }
}

/// Create an instance of `generation` with `settings`; a panic or a settings error is an
/// [`InstantiateError`] naming the plugin and its file.
pub fn instantiate(
    generation: &Generation,
    settings: &str,
) -> Result<PluginInstance, InstantiateError> {
    let (plugin, path) = (generation.plugin.clone(), generation.installed.clone());
    generation
        .library
        .create(settings)
        .map_err(|failure| match failure {
            CreateFailure::Fault(fault) => InstantiateError::Panicked {
                plugin,
                path,
                fault,
            },
            CreateFailure::Settings(errors) => InstantiateError::Settings {
                plugin,
                path,
                issues: errors.into_iter().map(SettingIssue::from).collect(),
            },
        })
}

/// The check a new build passes before it takes traffic: it keeps its kind, it accepts the
/// running settings, and it can open a session, all without panicking.
pub fn self_check(
    candidate: &Generation,
    previous: Option<&Generation>,
    settings: Option<&str>,
) -> Result<Option<PluginInstance>, SelfCheckError> {
    if let Some(previous) = previous {
        if previous.library.info.kind != candidate.library.info.kind {
            return Err(SelfCheckError::KindChanged {
                plugin: candidate.plugin.clone(),
                path: candidate.installed.clone(),
                new: candidate.library.info.kind,
                running: previous.library.info.kind,
            });
        }
    }
    let Some(settings) = settings else {
        // Not enabled: loading it (ABI and layout checks) is all that can be checked now; the
        // settings are checked when a configuration enables it.
        return Ok(None);
    };
    let instance = instantiate(candidate, settings)?;
    let probe = SessionInfo {
        id: 0,
        peer: "0.0.0.0:0".into(),
        local: "0.0.0.0:0".into(),
    };
    instance
        .new_session(probe)
        .map_err(|fault| SelfCheckError::SessionPanicked {
            plugin: candidate.plugin.clone(),
            path: candidate.installed.clone(),
            fault,
        })?;
    Ok(Some(instance))
}

impl LoadFailure {
    /// The file that could not be loaded.
    pub fn path(&self) -> &Path {
        match self {
            Self::Copy { path, .. }
            | Self::Library { path, .. }
            | Self::DuplicateName { path, .. } => path,
        }
    }
}

/// Whether `path` is named like a plugin library (`libferrocast_<name>.so`).
pub fn is_plugin_file_name(path: &Path) -> bool {
    path.file_name()
        .and_then(|name| name.to_str())
        .is_some_and(|name| name.starts_with(LIBRARY_PREFIX) && name.ends_with(LIBRARY_SUFFIX))
}

impl PluginCatalog for PluginRegistry {
    fn plugin_names(&self) -> Vec<String> {
        self.current.keys().cloned().collect()
    }

    fn validate_settings(&self, plugin: &str, settings: &str) -> Vec<SettingIssue> {
        let Some(generation) = self.get(plugin) else {
            return Vec::new();
        };
        match generation.library.create(settings) {
            Ok(_) => Vec::new(),
            Err(CreateFailure::Settings(errors)) => {
                errors.into_iter().map(SettingIssue::from).collect()
            }
            Err(CreateFailure::Fault(fault)) => vec![SettingIssue {
                key: String::new(),
                message: format!("the plugin panicked while checking its settings: {fault}"),
            }],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_ferrocast_libraries_are_candidates() {
        assert!(is_plugin_file_name(Path::new("/x/libferrocast_http.so")));
        assert!(!is_plugin_file_name(Path::new("/x/libother.so")));
        assert!(!is_plugin_file_name(Path::new(
            "/x/libferrocast_http.so.bak"
        )));
        assert!(!is_plugin_file_name(Path::new("/x/libferrocast_http.d")));
    }

    #[test]
    fn garbage_file_is_refused_and_others_continue() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("libferrocast_bogus.so"), b"not an ELF file").unwrap();
        let registry = PluginRegistry::load_dir(dir.path()).unwrap();
        assert_eq!(registry.names().count(), 0);
        assert_eq!(registry.refused.len(), 1);
        assert!(
            registry.refused[0]
                .reason
                .contains("not a loadable shared library"),
            "{:?}",
            registry.refused
        );
    }

    #[test]
    fn missing_directory_is_an_actionable_error() {
        let error = PluginRegistry::load_dir(Path::new("/nonexistent/ferrocast")).unwrap_err();
        assert!(error.to_string().contains("plugin_dir"), "{error}");
    }
}

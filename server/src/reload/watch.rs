//! Reload triggers that come from the file system: the configuration file changing, and a new
//! plugin build appearing in the plugin directory.
//!
//! Both watch the *directory*, not the file: editors and installers replace files by atomic
//! rename, which a watch on the old inode would miss. Events are debounced, so an editor's
//! burst of writes or a build that writes in pieces becomes one reload once it settles.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tracing::warn;

use crate::events;
use crate::plugins::is_plugin_file_name;

/// Quiet time after the last change before the reload runs.
pub const DEBOUNCE: Duration = Duration::from_millis(400);

/// What changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Config,
    Plugins,
}

/// Keeps the watches alive; dropping it stops them.
pub struct Watches {
    _watchers: Vec<RecommendedWatcher>,
}

/// Watch `config`, the plugin libraries in `plugin_dir` and the TLS certificate and key
/// files `tls_files` (a change to one reloads the configuration, which reloads certificates);
/// each debounced change is sent on `changes`. A watch that cannot be set up is reported and
/// skipped: SIGHUP and `ferrocast reload` still work.
pub fn start(
    config: &Path,
    plugin_dir: &Path,
    tls_files: &[PathBuf],
    changes: mpsc::Sender<Change>,
) -> Watches {
    let mut watchers = Vec::new();
    let config_name = config.file_name().map(OsString::from);
    let config_dir = config
        .parent()
        .filter(|dir| !dir.as_os_str().is_empty())
        .map_or_else(|| PathBuf::from("."), Path::to_owned);
    let matches_config = move |path: &Path| path.file_name().map(OsString::from) == config_name;
    for (dir, change, filter) in [
        (
            config_dir,
            Change::Config,
            Box::new(matches_config) as Box<dyn Fn(&Path) -> bool + Send>,
        ),
        (
            plugin_dir.to_owned(),
            Change::Plugins,
            Box::new(is_plugin_file_name),
        ),
    ] {
        match watch_dir(&dir, change, filter, changes.clone()) {
            Ok(watcher) => watchers.push(watcher),
            Err(error) => warn!(
                event = events::WATCH_FAILED,
                dir = %dir.display(),
                %error,
                "cannot watch this directory for changes; reload with SIGHUP or `ferrocast reload` instead"
            ),
        }
    }
    watchers.extend(watch_tls_files(tls_files, &changes));
    Watches {
        _watchers: watchers,
    }
}

/// One watch per directory holding certificate files. The directory is watched, not the
/// file: certbot swaps the `live/` symlinks, and installers replace files by rename.
fn watch_tls_files(files: &[PathBuf], changes: &mpsc::Sender<Change>) -> Vec<RecommendedWatcher> {
    let mut by_dir: std::collections::BTreeMap<PathBuf, Vec<OsString>> = Default::default();
    for file in files {
        let dir = file
            .parent()
            .map_or_else(|| PathBuf::from("."), Path::to_owned);
        by_dir
            .entry(dir)
            .or_default()
            .extend(file.file_name().map(OsString::from));
    }
    let mut watchers = Vec::new();
    for (dir, names) in by_dir {
        let filter = move |path: &Path| {
            path.file_name()
                .is_some_and(|name| names.iter().any(|wanted| wanted == name))
        };
        match watch_dir(&dir, Change::Config, Box::new(filter), changes.clone()) {
            Ok(watcher) => watchers.push(watcher),
            Err(error) => warn!(
                event = events::WATCH_FAILED,
                dir = %dir.display(),
                %error,
                "cannot watch this certificate directory; reload with SIGHUP or `ferrocast reload` after a renewal"
            ),
        }
    }
    watchers
}

fn watch_dir(
    dir: &Path,
    change: Change,
    filter: Box<dyn Fn(&Path) -> bool + Send>,
    changes: mpsc::Sender<Change>,
) -> notify::Result<RecommendedWatcher> {
    let (raw_tx, mut raw_rx) = mpsc::unbounded_channel::<()>();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        if event.kind.is_access() {
            return;
        }
        if event.paths.iter().any(|path| filter(path)) {
            let _ = raw_tx.send(());
        }
    })?;
    watcher.watch(dir, RecursiveMode::NonRecursive)?;
    tokio::spawn(async move {
        while raw_rx.recv().await.is_some() {
            // Debounce: wait until no event arrived for DEBOUNCE.
            loop {
                match tokio::time::timeout(DEBOUNCE, raw_rx.recv()).await {
                    Ok(Some(())) => continue,
                    Ok(None) => return,
                    Err(_) => break,
                }
            }
            if changes.send(change).await.is_err() {
                return;
            }
        }
    });
    Ok(watcher)
}

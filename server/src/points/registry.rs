//! The point table: every publishing point by name, how a request path resolves to a live
//! stream or a file (protocol checks, directory traversal checks), and the status lines.
//!
//! A reload builds a new table and swaps it in whole; a broadcast point that stays broadcast
//! keeps its [`LiveStream`], and the file-index cache is shared by every version of the table.

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use ferrocast_plugin_api::{ErrorCode, HostError, PointInfo, PointKind};
use tracing::{info, warn};

use super::index_cache::{FileVersion, IndexCache, IndexLookup};
use super::live::LiveStream;
use crate::config::{self, PointConfig, PointSource, PullMode, PullSource};
use crate::events;

/// What a point serves.
pub enum PointMedia {
    Live(Arc<LiveStream>),
    File(PathBuf),
    Directory(PathBuf),
}

/// A publishing point at run time.
pub struct Point {
    pub name: String,
    pub kind: PointKind,
    pub protocols: Vec<String>,
    pub media: PointMedia,
    /// Where a broadcast point pulls from, if it does.
    pub pull: Option<PullSource>,
    /// `max_clients` and the outgoing bandwidth cap.
    pub limits: config::PointLimits,
}

/// What a request path resolved to.
pub enum Resolved {
    Live(Arc<LiveStream>),
    File { path: PathBuf, size: u64 },
}

/// The media of some points whose file indexes are worth building ahead of requests.
#[derive(Debug, Default)]
pub struct IndexedMedia {
    pub files: Vec<PathBuf>,
    pub directories: Vec<PathBuf>,
}

/// All publishing points, by name. A reload builds a new table and swaps it in whole.
#[derive(Default)]
pub struct PointRegistry {
    points: HashMap<String, Arc<Point>>,
    indexes: Arc<IndexCache>,
}

impl PointRegistry {
    pub fn from_config(points: &[PointConfig], client_queue: usize) -> Self {
        Self::rebuild(points, client_queue, None)
    }

    /// The table for a (re)loaded configuration. A broadcast point that stays broadcast keeps
    /// its [`LiveStream`] from `previous`, so its clients and its encoder stay attached
    /// whatever else changed; file indexes are kept too.
    pub fn rebuild(
        points: &[PointConfig],
        client_queue: usize,
        previous: Option<&PointRegistry>,
    ) -> Self {
        let points = points
            .iter()
            .map(|point| {
                let kept = previous
                    .and_then(|registry| registry.points.get(&point.name))
                    .and_then(|old| match &old.media {
                        PointMedia::Live(stream) => Some(Arc::clone(stream)),
                        _ => None,
                    });
                let runtime = Point {
                    name: point.name.clone(),
                    kind: match point.kind {
                        config::PointKind::Broadcast => PointKind::BROADCAST,
                        config::PointKind::OnDemand => PointKind::ON_DEMAND,
                    },
                    protocols: point.protocols.clone(),
                    media: point_media(point, client_queue, kept),
                    limits: point.limits,
                    pull: match &point.source {
                        PointSource::Pull(pull) => Some(pull.clone()),
                        _ => None,
                    },
                };
                (point.name.clone(), Arc::new(runtime))
            })
            .collect();
        Self {
            points,
            indexes: previous.map_or_else(Arc::default, |registry| Arc::clone(&registry.indexes)),
        }
    }

    /// What the index cache has for an on-demand file now. Never builds in place: a file
    /// without an index gets a background build and the answer [`IndexLookup::Building`].
    pub fn file_index(&self, path: &Path) -> IndexLookup {
        self.indexes.lookup(path)
    }

    /// The file-index cache, shared by every version of the table.
    pub fn indexes(&self) -> &Arc<IndexCache> {
        &self.indexes
    }

    /// The files whose indexes the named points will need: the file of a single-file point,
    /// and the directory of a directory point (its files are listed off the async threads).
    pub fn indexed_media(&self, names: &[String]) -> IndexedMedia {
        let mut media = IndexedMedia::default();
        for point in names.iter().filter_map(|name| self.points.get(name)) {
            match &point.media {
                PointMedia::File(path) => media.files.push(path.clone()),
                PointMedia::Directory(root) => media.directories.push(root.clone()),
                PointMedia::Live(_) => {}
            }
        }
        media
    }

    pub fn get(&self, name: &str) -> Option<&Arc<Point>> {
        self.points.get(name)
    }

    pub fn all(&self) -> impl Iterator<Item = &Arc<Point>> {
        self.points.values()
    }

    pub fn names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.points.keys().map(String::as_str).collect();
        names.sort_unstable();
        names
    }

    /// Resolve `point` or `point/file` for a session of `plugin`.
    pub fn resolve(&self, plugin: &str, path: &str) -> Result<(PointInfo, Resolved), HostError> {
        let (name, item) = path.split_once('/').unwrap_or((path, ""));
        let point = self.points.get(name).ok_or_else(|| {
            HostError::new(
                ErrorCode::NOT_FOUND,
                format!("no publishing point named `{name}`"),
            )
        })?;
        if !point.protocols.iter().any(|p| p == plugin) {
            return Err(HostError::new(
                ErrorCode::PROTOCOL_DISABLED,
                format!(
                    "{} is not enabled on publishing point `{name}`; the operator can add \"{plugin}\" to its protocols",
                    plugin.to_uppercase()
                ),
            ));
        }
        let mut info = PointInfo {
            name: name.into(),
            item: item.into(),
            kind: point.kind,
            size: 0,
            duration_ms: 0,
            live: false,
        };
        let resolved = match &point.media {
            PointMedia::Live(stream) => {
                if !item.is_empty() {
                    return Err(not_found_item(name, item));
                }
                info.live = stream.is_live();
                Resolved::Live(Arc::clone(stream))
            }
            PointMedia::File(file) => {
                if !item.is_empty() {
                    return Err(not_found_item(name, item));
                }
                self.resolve_file(file.clone(), name, &mut info)?
            }
            PointMedia::Directory(root) => {
                if item.is_empty() {
                    return Err(HostError::new(
                        ErrorCode::NOT_FOUND,
                        format!(
                            "publishing point `{name}` is a directory; request /{name}/<file>.ts"
                        ),
                    ));
                }
                let file = resolve_in_directory(root, name, item)?;
                self.resolve_file(file, name, &mut info)?
            }
        };
        Ok((info, resolved))
    }

    /// An on-demand file: its size now, and its duration if its index is ready (else 0,
    /// unknown, and the index is built in the background for the next request).
    fn resolve_file(
        &self,
        path: PathBuf,
        point: &str,
        info: &mut PointInfo,
    ) -> Result<Resolved, HostError> {
        let metadata = file_metadata(&path, point)?;
        let version = FileVersion::of(&metadata);
        info.size = version.size;
        info.duration_ms = self.indexes.lookup_version(&path, version).duration_ms();
        Ok(Resolved::File {
            path,
            size: version.size,
        })
    }

    /// Resolve for playing: like [`Self::resolve`], but a broadcast point must have a source.
    pub fn resolve_playable(
        &self,
        plugin: &str,
        path: &str,
    ) -> Result<(PointInfo, Resolved), HostError> {
        let (info, resolved) = self.resolve(plugin, path)?;
        if let Resolved::Live(stream) = &resolved {
            if !stream.playable() {
                return Err(HostError::new(
                    ErrorCode::UNAVAILABLE,
                    format!(
                        "no encoder is publishing to `{}` right now; try again once the encoder is connected",
                        info.name
                    ),
                ));
            }
        }
        Ok((info, resolved))
    }

    /// Every live stream, for logging at shutdown and the like.
    pub fn live_streams(&self) -> impl Iterator<Item = &Arc<LiveStream>> {
        self.points.values().filter_map(|point| match &point.media {
            PointMedia::Live(stream) => Some(stream),
            _ => None,
        })
    }
}

/// What a configured point serves: a broadcast point keeps its running stream (`kept`),
/// retimed to the new configuration, so its encoder and clients stay attached.
fn point_media(
    point: &PointConfig,
    client_queue: usize,
    kept: Option<Arc<LiveStream>>,
) -> PointMedia {
    let pull_on_demand =
        matches!(&point.source, PointSource::Pull(pull) if pull.mode == PullMode::OnDemand);
    let media = match &point.source {
        PointSource::Push | PointSource::Pull(_) => PointMedia::Live(match kept {
            Some(stream) => {
                stream.reconfigure(
                    point.reconnect_grace,
                    point.source_timeout,
                    pull_on_demand,
                    point.timeline,
                );
                stream
            }
            None => LiveStream::new(
                &point.name,
                client_queue,
                point.reconnect_grace,
                point.source_timeout,
                pull_on_demand,
                point.timeline,
            ),
        }),
        PointSource::File(path) => PointMedia::File(path.clone()),
        PointSource::Directory(path) => PointMedia::Directory(path.clone()),
    };
    if let PointMedia::Live(stream) = &media {
        stream.set_udp_join_rate(point.udp_join_rate);
    }
    media
}

fn not_found_item(point: &str, item: &str) -> HostError {
    HostError::new(
        ErrorCode::NOT_FOUND,
        format!("publishing point `{point}` has no item `{item}`; request /{point}"),
    )
}

fn file_metadata(path: &Path, point: &str) -> Result<std::fs::Metadata, HostError> {
    std::fs::metadata(path).map_err(|error| {
        warn!(event = events::FILE_UNAVAILABLE, point = %point, path = %path.display(), %error, "on-demand file unavailable");
        HostError::new(
            ErrorCode::UNAVAILABLE,
            format!("the media of publishing point `{point}` cannot be read right now"),
        )
    })
}

/// Map `item` to a `.ts` file under `root`, refusing anything that escapes it: `..`, absolute
/// paths, and symlinks pointing outside.
fn resolve_in_directory(root: &Path, point: &str, item: &str) -> Result<PathBuf, HostError> {
    let forbidden = || {
        HostError::new(
            ErrorCode::FORBIDDEN,
            format!("`{item}` is outside publishing point `{point}`"),
        )
    };
    let relative = Path::new(item);
    if item.contains('\0') || item.contains('\\') {
        return Err(forbidden());
    }
    if !relative
        .components()
        .all(|component| matches!(component, Component::Normal(_)))
    {
        return Err(forbidden());
    }
    let not_found = || {
        HostError::new(
            ErrorCode::NOT_FOUND,
            format!("publishing point `{point}` has no file `{item}`"),
        )
    };
    if relative.extension().and_then(|e| e.to_str()) != Some("ts") {
        return Err(not_found());
    }
    let candidate = root.join(relative);
    let canonical = candidate.canonicalize().map_err(|_| not_found())?;
    let canonical_root = root.canonicalize().map_err(|_| not_found())?;
    if !canonical.starts_with(&canonical_root) {
        return Err(forbidden());
    }
    if !canonical.is_file() {
        return Err(not_found());
    }
    Ok(canonical)
}

/// Log one POINT_STATUS line per point: state, source, reconnects, last error, clients.
pub fn log_status(points: &PointRegistry) {
    for name in points.names() {
        let point = &points.points[name];
        match (&point.media, &point.pull) {
            (PointMedia::Live(stream), pull) => {
                let status = stream.status();
                let source = pull
                    .as_ref()
                    .map_or("push".to_owned(), |p| format!("pull {}", p.url));
                let described = status.source_description.unwrap_or_default();
                info!(
                    event = events::POINT_STATUS,
                    point = %name,
                    state = status.state.as_str(),
                    grace_left_ms = status.grace_left.map(|d| d.as_millis() as u64),
                    %source,
                    reconnects = status.reconnects,
                    last_error = status.last_error.as_deref().unwrap_or(""),
                    clients = status.clients,
                    source_name = ?described.name,
                    source_description = ?described.description,
                    "point status"
                );
            }
            (PointMedia::File(path) | PointMedia::Directory(path), _) => {
                info!(event = events::POINT_STATUS, point = %name, state = "on-demand", source = %path.display(), "point status");
            }
        }
    }
}

/// Log a summary of the points at startup.
pub fn log_points(points: &PointRegistry) {
    for name in points.names() {
        let point = &points.points[name];
        let source = match (&point.media, &point.pull) {
            (PointMedia::Live(_), Some(pull)) => format!("pull {}", pull.url),
            (PointMedia::Live(_), None) => "push".to_owned(),
            (PointMedia::File(path) | PointMedia::Directory(path), _) => path.display().to_string(),
        };
        info!(point = %name, kind = point.kind.as_str(), %source, protocols = ?point.protocols, "publishing point ready");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A registry with one on-demand point `vod`, served over `protocol`.
    fn one_point(protocol: &str, media: PointMedia) -> PointRegistry {
        let mut points = HashMap::new();
        points.insert(
            "vod".to_owned(),
            Arc::new(Point {
                name: "vod".into(),
                kind: PointKind::ON_DEMAND,
                protocols: vec![protocol.into()],
                media,
                pull: None,
                limits: config::PointLimits::default(),
            }),
        );
        PointRegistry {
            points,
            indexes: Arc::default(),
        }
    }

    fn dir_point(root: &Path) -> PointRegistry {
        one_point("http", PointMedia::Directory(root.to_owned()))
    }

    #[test]
    fn directory_points_refuse_traversal() {
        let outer = tempfile::tempdir().unwrap();
        let root = outer.path().join("media");
        std::fs::create_dir(&root).unwrap();
        std::fs::write(root.join("a.ts"), [0x47u8; 188]).unwrap();
        std::fs::write(outer.path().join("secret.ts"), b"secret").unwrap();
        std::os::unix::fs::symlink(outer.path().join("secret.ts"), root.join("link.ts")).unwrap();
        let points = dir_point(&root);

        let (info, _) = points.resolve("http", "vod/a.ts").unwrap();
        assert_eq!(info.size, 188);
        for bad in [
            "vod/../secret.ts",
            "vod//etc/passwd",
            "vod/link.ts",
            "vod/./a.ts",
        ] {
            let error = points.resolve("http", bad).err().expect(bad);
            assert_eq!(error.code, ErrorCode::FORBIDDEN, "{bad}: {error}");
        }
        let error = points.resolve("http", "vod/missing.ts").err().unwrap();
        assert_eq!(error.code, ErrorCode::NOT_FOUND);
        let error = points.resolve("http", "vod/a.txt").err().unwrap();
        assert_eq!(error.code, ErrorCode::NOT_FOUND);
    }

    fn file_point(file: &Path) -> PointRegistry {
        one_point("rtsp", PointMedia::File(file.to_owned()))
    }

    /// On the single thread of a current-thread runtime: resolving never indexes in place
    /// (the duration is unknown until the background build is done), and a play asked for
    /// meanwhile is told to retry.
    #[tokio::test]
    async fn resolve_reads_durations_from_the_index_cache_only() {
        let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/media/testdata/small.ts");
        let points = file_point(&file);
        let (info, _) = points.resolve("rtsp", "vod").unwrap();
        assert_eq!(info.duration_ms, 0, "not indexed yet");
        let refusal = points.file_index(&file).ready_for_play().unwrap_err();
        assert_eq!(refusal.code, ErrorCode::UNAVAILABLE);
        let index = points.indexes().wait(&file).await.unwrap();
        let (info, _) = points.resolve("rtsp", "vod").unwrap();
        assert!(info.duration_ms > 0);
        assert_eq!(info.duration_ms, index.duration.as_millis() as u64);
        assert!(points.file_index(&file).ready_for_play().is_ok());
    }

    #[test]
    fn disabled_protocol_and_unknown_point_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let points = dir_point(dir.path());
        let error = points.resolve("rtsp", "vod/a.ts").err().unwrap();
        assert_eq!(error.code, ErrorCode::PROTOCOL_DISABLED);
        assert!(error
            .message
            .contains("RTSP is not enabled on publishing point `vod`"));
        let error = points.resolve("http", "nope").err().unwrap();
        assert_eq!(error.code, ErrorCode::NOT_FOUND);
    }
}

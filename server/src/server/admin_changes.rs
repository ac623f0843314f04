//! Changes the admin API asks for that edit the configuration file: the edit is checked by
//! compiling the edited text, written back (comments kept), then applied by a normal reload.

use std::path::Path;

use super::{describe_outcome, Server};
use crate::admin::edit;
use crate::config;
use crate::reload::control::Reply;

impl Server {
    /// Set the protocols of a point in the file and reload. A change that would make the file
    /// invalid is not written.
    pub(super) async fn set_point_protocols(&mut self, point: &str, protocols: &[String]) -> Reply {
        let path = self.config.path.clone();
        let refused = |text: String| Reply { ok: false, text };
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(error) => return refused(format!("cannot read {}: {error}", path.display())),
        };
        let edited = match edit::set_point_protocols(&text, point, protocols) {
            Ok(edited) => edited,
            Err(error) => return refused(error.to_string()),
        };
        if let Err(errors) = config::compile(&path, &edited, &self.registry) {
            return refused(format!(
                "the change would make the configuration invalid, so it was not written:\n{errors}"
            ));
        }
        if let Err(error) = replace_file(&path, &edited) {
            return refused(format!("cannot write {}: {error}", path.display()));
        }
        let outcome = self.reload_config("admin API").await;
        Reply {
            ok: outcome.refused.is_none() && outcome.failed.is_empty(),
            text: describe_outcome(&outcome),
        }
    }
}

/// Write `text` beside `path` and rename it over, so a watcher never reads half a file; the
/// file keeps its permissions.
fn replace_file(path: &Path, text: &str) -> std::io::Result<()> {
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".admin-edit");
    let temporary = std::path::PathBuf::from(temporary);
    std::fs::write(&temporary, text)?;
    if let Ok(metadata) = std::fs::metadata(path) {
        std::fs::set_permissions(&temporary, metadata.permissions())?;
    }
    std::fs::rename(&temporary, path)
}

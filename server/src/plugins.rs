//! The plugin registry: finds plugin libraries in the plugin directory, loads them through the
//! stable ABI and refuses, one by one, the files that cannot be used.
//!
//! A refusal never stops the other plugins from loading: the server reports the file and the
//! reason (PLUGIN_REFUSED) and goes on with what it has.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ferrocast_plugin_api::host::{load_library, CreateFailure, PluginInstance, PluginLibrary};
use tracing::{info, warn};

use crate::config::{PluginCatalog, SettingIssue};
use crate::events;

/// File names the registry considers: `libferrocast_<name>.so`.
const LIBRARY_PREFIX: &str = "libferrocast_";
const LIBRARY_SUFFIX: &str = ".so";

/// A file that was not loaded, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub path: PathBuf,
    pub reason: String,
}

/// Every plugin library found in the plugin directory.
#[derive(Debug, Default)]
pub struct PluginRegistry {
    pub dir: PathBuf,
    /// Loaded plugins by name.
    pub plugins: BTreeMap<String, PluginLibrary>,
    pub refused: Vec<Refusal>,
}

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("cannot read plugin directory {dir}: {source}; set [server] plugin_dir or --plugin-dir to the directory holding libferrocast_*.so")]
    UnreadableDir {
        dir: PathBuf,
        source: std::io::Error,
    },
}

impl PluginRegistry {
    /// Load every `libferrocast_*.so` in `dir`, in name order.
    pub fn load_dir(dir: &Path) -> Result<Self, RegistryError> {
        let entries = std::fs::read_dir(dir).map_err(|source| RegistryError::UnreadableDir {
            dir: dir.to_owned(),
            source,
        })?;
        let mut paths: Vec<PathBuf> = entries
            .filter_map(|entry| entry.ok().map(|entry| entry.path()))
            .filter(|path| is_plugin_file_name(path))
            .collect();
        paths.sort();

        let mut registry = Self {
            dir: dir.to_owned(),
            ..Self::default()
        };
        for path in paths {
            registry.load_file(&path);
        }
        Ok(registry)
    }

    fn load_file(&mut self, path: &Path) {
        let library = match load_library(path) {
            Ok(library) => library,
            Err(error) => return self.refuse(path, error.to_string()),
        };
        let name = library.info.name.to_string();
        if let Some(first) = self.plugins.get(&name) {
            let reason = format!(
                "duplicate plugin name `{name}`: already provided by {}; remove one of the two files",
                first.path.display()
            );
            return self.refuse(path, reason);
        }
        info!(
            event = events::PLUGIN_LOADED,
            plugin = %name,
            version = %library.info.version,
            abi = %library.abi_version,
            kind = %library.info.kind,
            path = %path.display(),
            "plugin loaded"
        );
        self.plugins.insert(name, library);
    }

    fn refuse(&mut self, path: &Path, reason: String) {
        warn!(
            event = events::PLUGIN_REFUSED,
            path = %path.display(),
            %reason,
            "plugin refused; the server continues without it"
        );
        self.refused.push(Refusal {
            path: path.to_owned(),
            reason,
        });
    }

    pub fn get(&self, name: &str) -> Option<&PluginLibrary> {
        self.plugins.get(name)
    }

    /// Build a configured instance of plugin `name`.
    pub fn instantiate(&self, name: &str, settings: &str) -> Result<PluginInstance, String> {
        let library = self
            .get(name)
            .ok_or_else(|| format!("plugin `{name}` is not loaded"))?;
        library.create(settings).map_err(|failure| match failure {
            CreateFailure::Fault(fault) => {
                format!("plugin `{name}` panicked during initialisation: {fault}")
            }
            CreateFailure::Settings(errors) => errors
                .iter()
                .map(|e| format!("{}: {}", e.key, e.message))
                .collect::<Vec<_>>()
                .join("; "),
        })
    }

    /// A human-readable table of loaded and refused plugins, printed at startup.
    pub fn summary(&self) -> String {
        let mut text = format!(
            "plugins in {} (server plugin API {}):\n",
            self.dir.display(),
            ferrocast_plugin_api::host::host_abi_version()
        );
        if self.plugins.is_empty() {
            text.push_str("  (none loaded)\n");
        }
        for (name, library) in &self.plugins {
            text.push_str(&format!(
                "  {name:<10} v{:<8} abi {:<7} {:<9} {}\n",
                library.info.version,
                library.abi_version,
                library.info.kind,
                library.path.display()
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

fn is_plugin_file_name(path: &Path) -> bool {
    path.file_name()
        .and_then(|name| name.to_str())
        .is_some_and(|name| name.starts_with(LIBRARY_PREFIX) && name.ends_with(LIBRARY_SUFFIX))
}

impl PluginCatalog for PluginRegistry {
    fn plugin_names(&self) -> Vec<String> {
        self.plugins.keys().cloned().collect()
    }

    fn validate_settings(&self, plugin: &str, settings: &str) -> Vec<SettingIssue> {
        let Some(library) = self.get(plugin) else {
            return Vec::new();
        };
        match library.create(settings) {
            Ok(_) => Vec::new(),
            Err(CreateFailure::Settings(errors)) => errors
                .into_iter()
                .map(|e| SettingIssue {
                    key: e.key.into_string(),
                    message: e.message.into_string(),
                })
                .collect(),
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
        assert!(registry.plugins.is_empty());
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

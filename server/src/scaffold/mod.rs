//! `ferrocast plugin new`: writes an out-of-tree plugin crate (Cargo.toml, a small line-protocol
//! plugin with settings, a session and a `MockHost` test, and a README) that builds with
//! `cargo build --release` and loads into the server.

use std::path::{Path, PathBuf};

/// Plugins shipped with ferrocast; a new plugin may not take their names.
pub const SHIPPED_PLUGINS: &[&str] = &["http", "rtsp", "tcp", "udp", "ws", "example"];

/// The `ferrocast-plugin-api` version a generated crate asks for from crates.io: this server's
/// interface version, major.minor.
const API_VERSION: &str = "1.1";

/// Longest accepted plugin name.
const MAX_NAME: usize = 32;

const CARGO_TOML: &str = include_str!("Cargo.toml.tmpl");
const LIB_RS: &str = include_str!("lib.rs.tmpl");
const README_MD: &str = include_str!("README.md.tmpl");

/// Why a plugin crate could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ScaffoldError {
    #[error("invalid plugin name `{name}`: use 1 to {MAX_NAME} lowercase letters, digits and `_`, starting with a letter")]
    InvalidName { name: String },
    #[error("plugin name `{name}` is taken by a plugin shipped with ferrocast; choose another")]
    ShippedName { name: String },
    #[error("{} already exists; choose a new directory with --dir", path.display())]
    DirectoryExists { path: PathBuf },
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Where the generated crate gets `ferrocast-plugin-api` from.
#[derive(Debug, Clone)]
pub enum ApiSource {
    /// The published crate, `version = "<major.minor>"` of this server's interface.
    Registry,
    /// A local checkout of the `plugin-api` crate.
    Path(PathBuf),
}

/// Check that `name` can be a plugin name (and a crate name) and is not a shipped plugin's.
pub fn validate_name(name: &str) -> Result<(), ScaffoldError> {
    let well_formed = (1..=MAX_NAME).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !well_formed {
        return Err(ScaffoldError::InvalidName { name: name.into() });
    }
    if SHIPPED_PLUGINS.contains(&name) {
        return Err(ScaffoldError::ShippedName { name: name.into() });
    }
    Ok(())
}

/// `demo_stream` → `DemoStreamPlugin`, the plugin's Rust type.
fn type_name(name: &str) -> String {
    let mut type_name: String = name
        .split('_')
        .filter(|part| !part.is_empty())
        .map(|part| {
            let mut chars = part.chars();
            chars.next().map_or_else(String::new, |first| {
                first.to_ascii_uppercase().to_string() + chars.as_str()
            })
        })
        .collect();
    type_name.push_str("Plugin");
    type_name
}

/// The value of the `ferrocast-plugin-api` dependency table, inside `{ }`.
fn api_dependency(api: &ApiSource) -> String {
    match api {
        ApiSource::Registry => format!("version = \"{API_VERSION}\""),
        // TOML literal strings keep backslashes and need no escaping.
        ApiSource::Path(path) => format!("path = '{}'", path.display()),
    }
}

/// Replace each `{{key}}` in `template` by its value.
fn render(template: &str, values: &[(&str, &str)]) -> String {
    values
        .iter()
        .fold(template.to_owned(), |text, (key, value)| {
            text.replace(&format!("{{{{{key}}}}}"), value)
        })
}

/// The files of a new plugin crate named `name`, as (relative path, contents).
pub fn files(name: &str, api: &ApiSource) -> Result<Vec<(&'static str, String)>, ScaffoldError> {
    validate_name(name)?;
    let type_name = type_name(name);
    let api_dependency = api_dependency(api);
    let values = [
        ("name", name),
        ("type_name", type_name.as_str()),
        ("api_dependency", api_dependency.as_str()),
    ];
    Ok(vec![
        ("Cargo.toml", render(CARGO_TOML, &values)),
        ("src/lib.rs", render(LIB_RS, &values)),
        ("README.md", render(README_MD, &values)),
        (".gitignore", "/target\n".to_owned()),
    ])
}

/// Write a new plugin crate named `name` into `dir`, which must not exist yet.
pub fn create(name: &str, dir: &Path, api: &ApiSource) -> Result<(), ScaffoldError> {
    let files = files(name, api)?;
    if dir.exists() {
        return Err(ScaffoldError::DirectoryExists { path: dir.into() });
    }
    for (relative, contents) in files {
        let path = dir.join(relative);
        let parent = path.parent().unwrap_or(dir);
        std::fs::create_dir_all(parent)
            .and_then(|()| std::fs::write(&path, contents))
            .map_err(|source| ScaffoldError::Write { path, source })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_validated() {
        assert!(validate_name("demo").is_ok());
        assert!(validate_name("my_proto2").is_ok());
        for bad in [
            "",
            "Demo",
            "2demo",
            "my-proto",
            "a b",
            &"x".repeat(MAX_NAME + 1),
        ] {
            assert!(
                matches!(validate_name(bad), Err(ScaffoldError::InvalidName { .. })),
                "{bad:?}"
            );
        }
        assert!(matches!(
            validate_name("http"),
            Err(ScaffoldError::ShippedName { .. })
        ));
    }

    #[test]
    fn templates_are_filled_in() {
        let files = files("demo_stream", &ApiSource::Registry).unwrap();
        for (path, contents) in &files {
            assert!(
                !contents.contains("{{"),
                "{path} has an unfilled placeholder"
            );
        }
        let cargo = &files[0].1;
        assert!(
            cargo.contains("name = \"ferrocast_demo_stream\""),
            "{cargo}"
        );
        assert!(
            cargo.contains("ferrocast-plugin-api = { version = \"1.1\" }"),
            "{cargo}"
        );
        let lib = &files[1].1;
        assert!(lib.contains("export_plugin!(DemoStreamPlugin);"));
        assert!(lib.contains("name: \"demo_stream\","));
        let readme = &files[2].1;
        assert!(readme.contains("[plugins.demo_stream]"));
        assert!(readme.contains("libferrocast_demo_stream.so"));
    }

    #[test]
    fn registry_version_matches_the_interface_crate() {
        let manifest = include_str!("../../../plugin-api/Cargo.toml");
        let line = format!("version = \"{API_VERSION}.");
        assert!(
            manifest.contains(&line),
            "plugin-api is not {API_VERSION}.x"
        );
    }

    #[test]
    fn path_dependency_is_used_when_given() {
        let api = ApiSource::Path(PathBuf::from("/src/ferrocast/plugin-api"));
        let files = files("demo", &api).unwrap();
        assert!(files[0]
            .1
            .contains("ferrocast-plugin-api = { path = '/src/ferrocast/plugin-api' }"));
    }

    #[test]
    fn an_existing_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let error = create("demo", dir.path(), &ApiSource::Registry).unwrap_err();
        assert!(matches!(error, ScaffoldError::DirectoryExists { .. }));
        let target = dir.path().join("demo");
        create("demo", &target, &ApiSource::Registry).unwrap();
        assert!(target.join("src/lib.rs").is_file());
    }
}

//! Errors produced while compiling a configuration file.

use std::fmt;
use std::path::{Path, PathBuf};

/// One problem in a configuration file, located at a 1-based line.
///
/// Line 0 means the problem concerns the file as a whole (for example it
/// could not be read); it is then displayed without a line number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", Location { file: &self.file, line: self.line })]
pub struct ConfigError {
    pub file: PathBuf,
    pub line: usize,
    pub message: String,
}

impl ConfigError {
    pub fn new(file: &Path, line: usize, message: impl Into<String>) -> Self {
        Self {
            file: file.to_path_buf(),
            line,
            message: message.into(),
        }
    }
}

/// Every problem found in a configuration file, sorted by line.
///
/// Reported together so a user can fix a whole file in one pass instead of
/// discovering mistakes one restart at a time.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", OnePerLine(&self.0))]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl ConfigErrors {
    /// Sorts by line; the sort is stable so errors found on the same line
    /// keep the order in which the checks ran.
    pub(crate) fn sorted(mut errors: Vec<ConfigError>) -> Self {
        errors.sort_by_key(|error| error.line);
        Self(errors)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> std::slice::Iter<'_, ConfigError> {
        self.0.iter()
    }
}

impl<'a> IntoIterator for &'a ConfigErrors {
    type Item = &'a ConfigError;
    type IntoIter = std::slice::Iter<'a, ConfigError>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

/// `file:line`, or just `file` for whole-file problems (line 0).
pub(crate) struct Location<'a> {
    pub file: &'a Path,
    pub line: usize,
}

impl fmt::Display for Location<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}", self.file.display())
        } else {
            write!(f, "{}:{}", self.file.display(), self.line)
        }
    }
}

struct OnePerLine<'a>(&'a [ConfigError]);

impl fmt::Display for OnePerLine<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, error) in self.0.iter().enumerate() {
            if index > 0 {
                writeln!(f)?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

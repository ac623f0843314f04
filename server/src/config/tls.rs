//! The TLS keys: `listen` entries written as `{ address = "...", tls = "name" }`, the
//! `[tls.<name>]` tables (a default certificate, more chosen by SNI, the handshake timeout),
//! and the check that every `tls = "name"` refers to a table that exists.

use std::collections::BTreeMap;
use std::ops::RangeInclusive;
use std::time::Duration;

use toml_edit::{Item, Key, Table, TableLike, Value};

use super::{Compiler, Section};
use crate::config::value::describe;
use crate::config::{CertFiles, TlsConfig, DEFAULT_HANDSHAKE_TIMEOUT};

const TLS_KEYS: &[&str] = &["cert", "key", "sni", "handshake_timeout_ms"];
const SNI_KEYS: &[&str] = &["cert", "key"];
const LISTEN_ENTRY_KEYS: &[&str] = &["address", "tls"];
const HANDSHAKE_TIMEOUT_MS_RANGE: RangeInclusive<i64> = 100..=600_000;
const LISTEN_ENTRY_HINT: &str =
    "write each entry as \"ip:port\" or { address = \"ip:port\", tls = \"<name of a [tls.<name>] table>\" }";

impl Compiler<'_> {
    /// The entries of `listen`: (address text, line, TLS table name). Entries of the wrong
    /// shape are reported and skipped.
    pub(super) fn read_listen_array(
        &mut self,
        section: &Section<'_>,
    ) -> Option<Vec<(String, usize, Option<String>)>> {
        let (item, line) = self.entry(section, "listen")?;
        let Some(array) = item.as_array() else {
            self.type_error(line, "listen", "an array of strings", item);
            return None;
        };
        let mut entries = Vec::with_capacity(array.len());
        for value in array.iter() {
            let value_line = self.value_line(value, line);
            match value {
                Value::String(text) => entries.push((text.value().clone(), value_line, None)),
                Value::InlineTable(table) => {
                    if let Some(entry) = self.listen_entry(table, value_line, &section.label) {
                        entries.push(entry);
                    }
                }
                other => self.error(
                    value_line,
                    format!(
                        "each entry of `listen` must be a string, found {}; {LISTEN_ENTRY_HINT}",
                        describe(&Item::Value(other.clone()))
                    ),
                ),
            }
        }
        Some(entries)
    }

    fn listen_entry(
        &mut self,
        table: &dyn TableLike,
        line: usize,
        label: &str,
    ) -> Option<(String, usize, Option<String>)> {
        let section = Section {
            table,
            label: format!("a `listen` entry of {label}"),
            line,
        };
        self.check_unknown_keys(&section, LISTEN_ENTRY_KEYS);
        if !self.require(&section, "address", "address = \"0.0.0.0:8443\"") {
            return None;
        }
        let (address, _) = self.read_string(&section, "address")?;
        let tls = if section.table.contains_key("tls") {
            Some(self.read_tls_name(&section)?)
        } else {
            None
        };
        Some((address.to_owned(), line, tls))
    }

    /// The `[tls.<name>]` tables.
    pub(super) fn tls(&mut self, root: &Table) -> BTreeMap<String, TlsConfig> {
        let mut sets = BTreeMap::new();
        let Some(section) = self.table_section(root, "tls", "[tls.<name>]") else {
            return sets;
        };
        for (name, item) in section.table.iter() {
            let label = format!("[tls.{}]", Key::new(name));
            let line = self.table_line(section.table, name, item, section.line);
            let Some(table) = item.as_table_like() else {
                self.error(
                    line,
                    format!(
                        "`tls.{name}` must be a table with `cert` and `key` (write it as {label}), found {}",
                        describe(item)
                    ),
                );
                continue;
            };
            // Named even when incomplete, so listen entries that use it are not also errors.
            self.tls_names.push(name.to_owned());
            let set_section = Section { table, label, line };
            if let Some(set) = self.tls_set(name, &set_section) {
                sets.insert(name.to_owned(), set);
            }
        }
        sets
    }

    fn tls_set(&mut self, name: &str, section: &Section<'_>) -> Option<TlsConfig> {
        self.check_unknown_keys(section, TLS_KEYS);
        let default = self.cert_files(section);
        let handshake_timeout = self
            .read_integer(section, "handshake_timeout_ms", HANDSHAKE_TIMEOUT_MS_RANGE)
            .map_or(DEFAULT_HANDSHAKE_TIMEOUT, |ms| {
                Duration::from_millis(ms.unsigned_abs())
            });
        let mut certs = vec![default?];
        if let Some((item, line)) = self.entry(section, "sni") {
            certs.extend(self.sni_certs(item, line, &section.label));
        }
        Some(TlsConfig {
            name: name.to_owned(),
            certs,
            handshake_timeout,
        })
    }

    /// `sni = [{ cert = "...", key = "..." }, ...]`, or `[[tls.<name>.sni]]` tables.
    fn sni_certs(&mut self, item: &Item, line: usize, label: &str) -> Vec<CertFiles> {
        let tables: Vec<(&dyn TableLike, usize)> = match item {
            Item::ArrayOfTables(array) => array
                .iter()
                .map(|table| {
                    let line = self.lines.line_of_span(table.span()).unwrap_or(line);
                    (table as &dyn TableLike, line)
                })
                .collect(),
            Item::Value(Value::Array(array)) => array
                .iter()
                .filter_map(|value| {
                    let value_line = self.value_line(value, line);
                    Some((value.as_inline_table()? as &dyn TableLike, value_line))
                })
                .collect(),
            other => {
                self.type_error(
                    line,
                    "sni",
                    "an array of { cert = \"...\", key = \"...\" } tables",
                    other,
                );
                return Vec::new();
            }
        };
        let mut certs = Vec::new();
        for (table, entry_line) in tables {
            let section = Section {
                table,
                label: format!("an `sni` entry of {label}"),
                line: entry_line,
            };
            self.check_unknown_keys(&section, SNI_KEYS);
            certs.extend(self.cert_files(&section));
        }
        certs
    }

    fn cert_files(&mut self, section: &Section<'_>) -> Option<CertFiles> {
        let has_cert = self.require(
            section,
            "cert",
            "cert = \"/etc/letsencrypt/live/example.com/fullchain.pem\"",
        );
        let has_key = self.require(
            section,
            "key",
            "key = \"/etc/letsencrypt/live/example.com/privkey.pem\"",
        );
        if !(has_cert && has_key) {
            return None;
        }
        let cert = self.read_path(section, "cert")?;
        let key = self.read_path(section, "key")?;
        Some(CertFiles { cert, key })
    }

    fn read_path(&mut self, section: &Section<'_>, key: &str) -> Option<std::path::PathBuf> {
        let (raw, line) = self.read_string(section, key)?;
        if raw.is_empty() {
            self.error(
                line,
                format!("`{key}` of {} must not be empty", section.label),
            );
            return None;
        }
        Some(self.resolve(raw))
    }

    /// `tls = "name"` of a listen entry or `[admin]`, which must name a `[tls.<name>]` table.
    pub(super) fn read_tls_name(&mut self, section: &Section<'_>) -> Option<String> {
        let (name, line) = self.read_string(section, "tls")?;
        if self.tls_names.iter().any(|known| known == name) {
            return Some(name.to_owned());
        }
        let known = if self.tls_names.is_empty() {
            "the file has no [tls.<name>] table".to_owned()
        } else {
            format!("defined: {}", self.tls_names.join(", "))
        };
        self.error(
            line,
            format!(
                "`tls = \"{name}\"` in {} refers to no [tls.{name}] table ({known}); add [tls.{name}] with `cert` and `key`",
                section.label
            ),
        );
        None
    }
}

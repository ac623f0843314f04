//! The access keys: `[security]` (the signing key, the failed-attempt limiter and the default
//! rules) and each point's `publish` and `play`.

use std::ops::RangeInclusive;
use std::time::Duration;

use toml_edit::{Item, Table, TableLike, Value};

use super::{Compiler, Section};
use crate::access::rules::Cidr;
use crate::access::{secret, AddressList, PlayRule, PublishRule, PublishUser, Secret};
use crate::config::SecurityConfig;

pub(super) const SECURITY_KEYS: &[&str] = &[
    "url_signing_key",
    "publish",
    "play",
    "max_failed_attempts",
    "failed_attempts_window_ms",
    "lockout_ms",
];
const PUBLISH_KEYS: &[&str] = &["keys", "users", "allow"];
const USER_KEYS: &[&str] = &["name", "password"];
const PLAY_KEYS: &[&str] = &["allow", "deny", "signed"];
const PUBLISH_MODES: &[&str] = &["loopback", "open"];
const MIN_SIGNING_KEY_CHARS: usize = 16;
const MAX_FAILURES_RANGE: RangeInclusive<i64> = 1..=1_000_000;
const LIMITER_MS_RANGE: RangeInclusive<i64> = 1_000..=86_400_000;
const PUBLISH_EXAMPLE: &str =
    "publish = \"loopback\", publish = \"open\" or publish = { keys = [\"$argon2id$...\"] }";

impl Compiler<'_> {
    pub(super) fn security(&mut self, root: &Table) -> SecurityConfig {
        let mut security = SecurityConfig::default();
        let Some(section) = self.table_section(root, "security", "[security]") else {
            return security;
        };
        self.check_unknown_keys(&section, SECURITY_KEYS);
        if let Some((key, line)) = self.read_string(&section, "url_signing_key") {
            if key.chars().count() < MIN_SIGNING_KEY_CHARS {
                self.error(line, format!("`url_signing_key` must be at least {MIN_SIGNING_KEY_CHARS} characters; use a long random string, e.g. from `openssl rand -hex 32`"));
            } else {
                security.url_signing_key = Some(Secret::new(key));
            }
        }
        if let Some(rule) = self.publish_rule(&section) {
            security.publish = rule;
        }
        if let Some(rule) = self.play_rule(&section) {
            security.play = rule;
        }
        let limiter = &mut security.limiter;
        if let Some(n) = self.read_integer(&section, "max_failed_attempts", MAX_FAILURES_RANGE) {
            limiter.max_failures = n as u32;
        }
        let window = self.read_integer(&section, "failed_attempts_window_ms", LIMITER_MS_RANGE);
        if let Some(ms) = window {
            limiter.window = Duration::from_millis(ms.unsigned_abs());
        }
        if let Some(ms) = self.read_integer(&section, "lockout_ms", LIMITER_MS_RANGE) {
            limiter.lockout = Duration::from_millis(ms.unsigned_abs());
        }
        security
    }

    /// `publish` of `section`: `"loopback"`, `"open"` or a table of keys, users and allow.
    pub(super) fn publish_rule(&mut self, section: &Section<'_>) -> Option<PublishRule> {
        let (item, line) = self.entry(section, "publish")?;
        if item.is_str() {
            return match self.read_choice(section, "publish", PUBLISH_MODES)? {
                "open" => Some(PublishRule::Open),
                _ => Some(PublishRule::Loopback),
            };
        }
        let Some(table) = item.as_table_like() else {
            self.type_error(line, "publish", "a string or a table", item);
            return None;
        };
        let label = format!("`publish` of {}", section.label);
        let rule = Section {
            table,
            label: label.clone(),
            line,
        };
        self.check_unknown_keys(&rule, PUBLISH_KEYS);
        let keys = self.hashes(&rule, "keys");
        let users = self.publish_users(&rule);
        let allow = self.address_list(&rule, "allow");
        if keys.is_empty() && users.is_empty() && allow.is_none() {
            self.error(
                line,
                format!("{label} gives no `keys`, `users` or `allow`; write {PUBLISH_EXAMPLE}"),
            );
            return None;
        }
        Some(PublishRule::Protected { keys, users, allow })
    }

    /// `play` of `section`: `{ allow = [...], deny = [...], signed = true }`.
    pub(super) fn play_rule(&mut self, section: &Section<'_>) -> Option<PlayRule> {
        let (item, line) = self.entry(section, "play")?;
        let Some(table) = item.as_table_like() else {
            self.type_error(line, "play", "a table, e.g. play = { signed = true }", item);
            return None;
        };
        let label = format!("`play` of {}", section.label);
        let rule = Section { table, label, line };
        self.check_unknown_keys(&rule, PLAY_KEYS);
        Some(PlayRule {
            allow: self.address_list(&rule, "allow"),
            deny: self.address_list(&rule, "deny").unwrap_or_default(),
            signed: self.read_bool(&rule, "signed").unwrap_or(false),
        })
    }

    /// A point that requires signed URLs needs the key to check them.
    pub(super) fn check_signing_key(
        &mut self,
        security: &SecurityConfig,
        points: &[super::PointConfig],
    ) {
        if security.url_signing_key.is_some() {
            return;
        }
        let default_signed = security.play.signed;
        for point in points {
            let signed = point
                .play
                .as_ref()
                .map_or(default_signed, |play| play.signed);
            if signed {
                self.error(point.line, format!("point `{}` requires signed URLs (`play.signed`), but [security] has no `url_signing_key`; add one, e.g. url_signing_key = \"<openssl rand -hex 32>\"", point.name));
            }
        }
    }

    fn hashes(&mut self, section: &Section<'_>, key: &str) -> Vec<Secret> {
        let entries = self.read_string_array(section, key).unwrap_or_default();
        let mut hashes = Vec::with_capacity(entries.len());
        for (phc, line) in entries {
            match secret::check_hash(phc) {
                Ok(()) => hashes.push(Secret::new(phc)),
                Err(error) => self.error(line, format!("entry of `{key}`: {error}")),
            }
        }
        hashes
    }

    fn publish_users(&mut self, section: &Section<'_>) -> Vec<PublishUser> {
        let Some((item, line)) = self.entry(section, "users") else {
            return Vec::new();
        };
        let tables: Vec<(&dyn TableLike, usize)> = match item {
            Item::ArrayOfTables(tables) => tables
                .iter()
                .map(|table| (table as &dyn TableLike, line))
                .collect(),
            Item::Value(Value::Array(values)) => values
                .iter()
                .filter_map(|value| {
                    let value_line = self.value_line(value, line);
                    value
                        .as_inline_table()
                        .map(|t| (t as &dyn TableLike, value_line))
                })
                .collect(),
            other => {
                self.type_error(line, "users", "an array of tables, e.g. users = [{ name = \"enc\", password = \"$argon2id$...\" }]", other);
                return Vec::new();
            }
        };
        let mut users = Vec::new();
        for (table, line) in tables {
            let label = "an entry of `users`".to_owned();
            let user = Section { table, label, line };
            self.check_unknown_keys(&user, USER_KEYS);
            let name = self
                .read_string(&user, "name")
                .map(|(name, _)| name.to_owned());
            let password = self.hashes_one(&user, "password");
            match (name, password) {
                (Some(name), Some(password_hash)) => users.push(PublishUser { name, password_hash }),
                _ => self.error(line, "each entry of `users` needs `name` and `password` (an argon2 hash from `ferrocast hash-password`)"),
            }
        }
        users
    }

    fn hashes_one(&mut self, section: &Section<'_>, key: &str) -> Option<Secret> {
        let (phc, line) = self.read_string(section, key)?;
        match secret::check_hash(phc) {
            Ok(()) => Some(Secret::new(phc)),
            Err(error) => {
                self.error(line, format!("`{key}`: {error}"));
                None
            }
        }
    }

    fn address_list(&mut self, section: &Section<'_>, key: &str) -> Option<AddressList> {
        let entries = self.read_string_array(section, key)?;
        let mut list = Vec::with_capacity(entries.len());
        for (entry, line) in entries {
            match entry.parse::<Cidr>() {
                Ok(cidr) => list.push(cidr),
                Err(error) => self.error(line, format!("entry of `{key}`: {error}")),
            }
        }
        Some(AddressList(list))
    }
}

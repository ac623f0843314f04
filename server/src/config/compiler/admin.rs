//! The operations tables: `[admin]` (the admin HTTP API's listen address, bearer-token
//! hashes and metrics allow-list) and `[access_log]` (the W3C access log and its rotation).

use std::net::{IpAddr, SocketAddr};

use toml_edit::Table;

use super::Compiler;
use crate::config::{AccessLogConfig, AdminConfig, DEFAULT_ADMIN_LISTEN};

const ADMIN_KEYS: &[&str] = &["listen", "tokens", "metrics_allow", "tls"];
const ACCESS_LOG_KEYS: &[&str] = &["path", "max_bytes", "keep"];
const DEFAULT_ACCESS_LOG_MAX_BYTES: u64 = 100 * 1024 * 1024;
const DEFAULT_ACCESS_LOG_KEEP: u32 = 5;

impl Compiler<'_> {
    /// `None` when the file has no `[access_log]` table: nothing is logged.
    pub(super) fn access_log(&mut self, root: &Table) -> Option<AccessLogConfig> {
        let section = self.table_section(root, "access_log", "[access_log]")?;
        self.check_unknown_keys(&section, ACCESS_LOG_KEYS);
        if !self.require(&section, "path", "path = \"/var/log/ferrocast/access.log\"") {
            return None;
        }
        let (raw, line) = self.read_string(&section, "path")?;
        if raw.is_empty() {
            self.error(line, "`path` of [access_log] must not be empty");
            return None;
        }
        let max_bytes = self
            .read_integer(&section, "max_bytes", 4096..=(1 << 40))
            .map_or(DEFAULT_ACCESS_LOG_MAX_BYTES, |n| n.unsigned_abs());
        let keep = self
            .read_integer(&section, "keep", 0..=1000)
            .map_or(DEFAULT_ACCESS_LOG_KEEP, |n| n as u32);
        Some(AccessLogConfig {
            path: self.resolve(raw),
            max_bytes,
            keep,
        })
    }

    /// `None` when the file has no `[admin]` table: the API is then off.
    pub(super) fn admin(&mut self, root: &Table) -> Option<AdminConfig> {
        let section = self.table_section(root, "admin", "[admin]")?;
        self.check_unknown_keys(&section, ADMIN_KEYS);
        let mut listen: SocketAddr = DEFAULT_ADMIN_LISTEN.parse().expect("a valid address");
        if let Some((text, line)) = self.read_string(&section, "listen") {
            match text.parse::<SocketAddr>() {
                Ok(address) => listen = address,
                Err(_) => self.error(
                    line,
                    format!(
                        "invalid listen address \"{text}\" in [admin]; use ip:port, e.g. \"{DEFAULT_ADMIN_LISTEN}\""
                    ),
                ),
            }
        }
        let mut tokens = Vec::new();
        for (text, line) in self
            .read_string_array(&section, "tokens")
            .unwrap_or_default()
        {
            match argon2::PasswordHash::new(text) {
                Ok(_) => tokens.push(text.to_owned()),
                Err(error) => self.error(
                    line,
                    format!("`tokens` entries must be argon2 hashes as printed by `ferrocast hash-token`, not tokens themselves ({error})"),
                ),
            }
        }
        let mut metrics_allow = Vec::new();
        for (text, line) in self
            .read_string_array(&section, "metrics_allow")
            .unwrap_or_default()
        {
            match text.parse::<IpAddr>() {
                Ok(address) => metrics_allow.push(address),
                Err(_) => self.error(
                    line,
                    format!("`metrics_allow` entries must be IP addresses such as \"127.0.0.1\" or \"::1\", found \"{text}\""),
                ),
            }
        }
        if tokens.is_empty() && !listen.ip().is_loopback() {
            self.error(
                section.line,
                format!("the admin API would listen on {listen}, which is not a loopback address, without a token; add tokens = [\"<output of `ferrocast hash-token`>\"] or listen on 127.0.0.1"),
            );
        }
        let tls = self.read_tls_name(&section);
        Some(AdminConfig {
            listen,
            tokens,
            metrics_allow,
            tls,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::{compile, ConfigErrors, PluginCatalog, SettingIssue};

    struct NoPlugins;

    impl PluginCatalog for NoPlugins {
        fn plugin_names(&self) -> Vec<String> {
            Vec::new()
        }
        fn validate_settings(&self, _: &str, _: &str) -> Vec<SettingIssue> {
            Vec::new()
        }
    }

    fn compile_text(text: &str) -> Result<crate::config::Config, ConfigErrors> {
        compile(Path::new("/etc/ferrocast.toml"), text, &NoPlugins)
    }

    const HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$Di2bkv42JgGwSZifDaSbZQ$tS/FmMyVxEiTHrdiD1JKuSvqYIyb/2v7Vn9Odh9YL+U";

    #[test]
    fn without_an_admin_table_the_api_is_off() {
        assert_eq!(compile_text("").unwrap().admin, None);
    }

    #[test]
    fn an_empty_admin_table_listens_on_the_default_loopback_address() {
        let admin = compile_text("[admin]\n").unwrap().admin.unwrap();
        assert_eq!(admin.listen.to_string(), "127.0.0.1:8081");
        assert!(admin.tokens.is_empty());
    }

    #[test]
    fn a_public_address_needs_a_token() {
        let errors = compile_text("[admin]\nlisten = \"0.0.0.0:8081\"\n").unwrap_err();
        assert!(
            errors.to_string().contains("not a loopback address"),
            "{errors}"
        );
        let text = format!("[admin]\nlisten = \"0.0.0.0:8081\"\ntokens = [\"{HASH}\"]\n");
        assert_eq!(compile_text(&text).unwrap().admin.unwrap().tokens, [HASH]);
    }

    #[test]
    fn a_plain_token_is_refused_with_its_line() {
        let errors = compile_text("[admin]\ntokens = [\"s3cret\"]\n").unwrap_err();
        assert_eq!(errors.0.len(), 1);
        assert!(errors.to_string().contains(":2:"), "{errors}");
        assert!(errors.to_string().contains("hash-token"), "{errors}");
    }
}

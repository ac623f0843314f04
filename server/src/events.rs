//! Stable names of the events an operator acts on.
//!
//! Each is logged as the `event` field of a `tracing` record, so that log pipelines can match
//! on it; the message says what happened and what to do next.

/// A listener could not bind because another service holds the address (cf. WMS event 309).
pub const PORT_IN_USE: &str = "PORT_IN_USE";
/// A listener could not bind for another reason (address not on this host, permission).
pub const BIND_FAILED: &str = "BIND_FAILED";
/// A plugin library was loaded and passed the ABI checks.
pub const PLUGIN_LOADED: &str = "PLUGIN_LOADED";
/// A file in the plugin directory was refused (not a plugin, wrong ABI, duplicate name).
pub const PLUGIN_REFUSED: &str = "PLUGIN_REFUSED";
/// A plugin panicked; the session it was serving was closed.
pub const PLUGIN_FAULT: &str = "PLUGIN_FAULT";
/// A listener is accepting connections.
pub const LISTENING: &str = "LISTENING";
/// A client connected to a plugin's listener.
pub const CONNECT: &str = "CONNECT";
/// A session started playing a point.
pub const PLAY: &str = "PLAY";
/// A session stopped playing (finished, stopped or disconnected).
pub const STOP: &str = "STOP";
/// An encoder started pushing to a broadcast point.
pub const PUSH_START: &str = "PUSH_START";
/// An encoder stopped pushing.
pub const PUSH_END: &str = "PUSH_END";
/// A request was refused by the host (unknown point, protocol disabled, busy point …).
pub const REFUSED: &str = "REFUSED";
/// A live client (or a UDP output) fell too far behind and was skipped ahead to the next
/// keyframe or, if it kept lagging, disconnected.
pub const CLIENT_LAGGING: &str = "CLIENT_LAGGING";
/// A session ended.
pub const DISCONNECT: &str = "DISCONNECT";
/// A broadcast point's encoder disconnected or went silent; clients are held for its grace.
pub const SOURCE_LOST: &str = "SOURCE_LOST";
/// An encoder published again within the grace; clients resume at its first keyframe.
pub const SOURCE_RESUMED: &str = "SOURCE_RESUMED";
/// The state of a point, reported on SIGUSR1 (and available for every point at once).
pub const POINT_STATUS: &str = "POINT_STATUS";
/// A pull source connected and feeds its point.
pub const PULL_CONNECTED: &str = "PULL_CONNECTED";
/// A pull source could not connect, or its point is held by a pushing encoder.
pub const PULL_FAILED: &str = "PULL_FAILED";
/// An on-demand pull stopped because its point has had no clients for the idle timeout.
pub const PULL_STOPPED: &str = "PULL_STOPPED";
/// A broadcast point's source went away and did not come back within its grace period.
pub const SOURCE_GAVE_UP: &str = "SOURCE_GAVE_UP";
/// A configuration reload was compiled and diffed; the plan lists what will change.
pub const RELOAD_PLANNED: &str = "RELOAD_PLANNED";
/// A reload's plan was applied in full.
pub const RELOAD_APPLIED: &str = "RELOAD_APPLIED";
/// A reload was refused (the new configuration has errors; nothing changed) or a part of it
/// could not be applied (that part keeps its old state).
pub const RELOAD_FAILED: &str = "RELOAD_FAILED";
/// A session ended because a reload removed what it used (its point, its protocol on the
/// point, or its plugin).
pub const SESSION_RECONFIGURED: &str = "SESSION_RECONFIGURED";
/// A new build of a plugin passed its checks and takes new sessions; the previous
/// generation keeps its own sessions until they end.
pub const PLUGIN_SWAPPED: &str = "PLUGIN_SWAPPED";
/// A replaced plugin generation has no sessions left.
pub const GENERATION_DRAINED: &str = "GENERATION_DRAINED";
/// An operator put a point or a plugin into the drain state (new sessions refused) or took
/// it out again.
pub const DRAIN: &str = "DRAIN";
/// The state of a plugin generation, reported on SIGUSR1 and by `ferrocast status`.
pub const PLUGIN_STATUS: &str = "PLUGIN_STATUS";
/// An on-demand file could not be indexed (unreadable, not MPEG-TS, or no PCR): it cannot be
/// played over RTP and its duration is unknown. Re-mux the file with PCR, or remove it.
pub const INDEX_FAILED: &str = "INDEX_FAILED";
/// An on-demand point's file cannot be read (missing or permissions): requests for it get
/// UNAVAILABLE. Restore the file or fix the point's `source`.
pub const FILE_UNAVAILABLE: &str = "FILE_UNAVAILABLE";
/// Accepting a connection failed, typically because the process ran out of file descriptors;
/// the listener retries shortly. Raise the descriptor limit (`ulimit -n`) if it repeats.
pub const ACCEPT_FAILED: &str = "ACCEPT_FAILED";
/// A reloaded configuration compiled with a warning (e.g. a point lists a disabled plugin);
/// it was applied. Read the warning and fix the file.
pub const CONFIG_WARNING: &str = "CONFIG_WARNING";
/// The control socket received a request it does not understand; the client was told.
/// Check the `ferrocast` command that sent it (its version may differ from the server's).
pub const CONTROL_REQUEST_REFUSED: &str = "CONTROL_REQUEST_REFUSED";
/// The configuration file's or the plugin directory's changes cannot be watched (inotify
/// limits, missing directory): reload with SIGHUP or `ferrocast reload` instead.
pub const WATCH_FAILED: &str = "WATCH_FAILED";
/// Reading an on-demand file failed while it was being sent; the client's stream ended. Check
/// that the file is readable and was not truncated or replaced while playing.
pub const FILE_READ_FAILED: &str = "FILE_READ_FAILED";
/// A plugin logged a warning or an error about one of its sessions; the message says what
/// happened, and the span names the plugin, session and peer.
pub const PLUGIN_MESSAGE: &str = "PLUGIN_MESSAGE";
/// A standalone UDP output cannot send (its socket could not be opened) and stays off while
/// the server goes on. Check the destination, interface and TTL in the transport plugin's
/// settings.
pub const OUTPUT_FAILED: &str = "OUTPUT_FAILED";
/// Media that cannot be framed was dropped (a partial TS packet before RTP framing); report
/// it if it repeats, with the source that sends it.
pub const MEDIA_DROPPED: &str = "MEDIA_DROPPED";
/// Connections were refused or dropped by a limit (`[limits]`, or a point's `max_clients` or
/// `max_bandwidth`); flooded, one summary line every few seconds. Raise the limit if the
/// clients are legitimate; otherwise find the peer that floods.
pub const CONNECTION_REFUSED: &str = "CONNECTION_REFUSED";
/// The open-file limit in effect at start (raised to the hard limit where allowed). Raise the
/// hard limit (`LimitNOFILE=`, `ulimit -Hn`) if it is below the connections you expect.
pub const DESCRIPTOR_LIMIT: &str = "DESCRIPTOR_LIMIT";
/// A push was refused by the point's publish rules (missing or wrong credentials, an address
/// not allowed, or too many failures). Repeated from one peer: someone is guessing keys or an
/// encoder has an old key; check the peer and the encoder's URL.
pub const PUBLISH_REFUSED: &str = "PUBLISH_REFUSED";
/// A player was refused by the point's play rules (address not allowed, a missing, expired or
/// tampered signed URL). Many from one peer: a scraper or an old link; check `sign-url` users.
pub const PLAY_REFUSED: &str = "PLAY_REFUSED";
/// An admin API request came without a valid bearer token; check who is calling (peer).
pub const ADMIN_UNAUTHORIZED: &str = "ADMIN_UNAUTHORIZED";
/// The admin API listener failed; the media keeps serving, restart to get the API back.
pub const ADMIN_FAILED: &str = "ADMIN_FAILED";
/// An operator ended a session through the admin API; nothing to do.
pub const SESSION_KICKED: &str = "SESSION_KICKED";
/// The access log cannot be opened or written; check the path's directory and permissions.
pub const ACCESS_LOG_FAILED: &str = "ACCESS_LOG_FAILED";
/// A control connection came from a user other than the server's own or root, and was
/// refused. Find who runs the command (`uid`, `pid`); only the server's user may control it.
pub const CONTROL_PEER_REFUSED: &str = "CONTROL_PEER_REFUSED";
/// More plugin warnings arrived than the log takes (over 50 in 10 s); `suppressed` of them were
/// counted, not written. A flood of bad requests: look for the peers in the warnings written.
pub const WARNINGS_SUPPRESSED: &str = "WARNINGS_SUPPRESSED";
/// The kernel refused UDP segmentation offload (GSO) on an RTP send; RTP over UDP goes on with
/// one datagram per packet, at more CPU. Check the kernel (4.18 or newer) and the interface.
pub const UDP_GSO_REFUSED: &str = "UDP_GSO_REFUSED";

/// The HLS packager of a point fell behind its ring (an overloaded host): players see a
/// discontinuity. Check the CPU load, or raise `client_queue`.
pub const HLS_LAGGING: &str = "HLS_LAGGING";

/// A session's client sent RTCP receiver reports; the last one's loss and jitter, logged
/// when the session ends. Loss over UDP points at the client's network or receive buffer.
pub const RECEIVER_REPORT: &str = "RECEIVER_REPORT";

/// A TLS certificate expires within 14 days (`days_left`); logged at start, at reloads and
/// daily. Renew it (e.g. `certbot renew`): the server picks up the new files by itself.
pub const TLS_CERT_EXPIRING: &str = "TLS_CERT_EXPIRING";
/// A TLS certificate or key was refused (unreadable, not matching its key, expired); the
/// previous certificate keeps serving. Fix the file named in the line, then reload.
pub const TLS_CERT_REFUSED: &str = "TLS_CERT_REFUSED";
/// TLS handshakes failed or timed out on a TLS listener (rate limited: one line with a count).
/// Many from one peer: a scanner or a client without a trusted CA; check the client's setup.
pub const TLS_HANDSHAKE_FAILED: &str = "TLS_HANDSHAKE_FAILED";
/// A client spoke plain text to a TLS listener and was closed (rate limited). Point the client
/// at an `https://`/`rtsps://` URL, or give it a plain-text listener.
pub const TLS_PLAINTEXT_REFUSED: &str = "TLS_PLAINTEXT_REFUSED";

/// A point's recording started a new file (at start, at the segment time, or after an
/// encoder restart). Informational.
pub const RECORDING_STARTED: &str = "RECORDING_STARTED";

/// A point's recording dropped data because its disk could not keep up; the file goes on at
/// the next keyframe. Use a faster disk, or record fewer points on it.
pub const RECORDING_LAGGING: &str = "RECORDING_LAGGING";

/// A point's recording could not open or write its file (a full disk, permissions); the live
/// point keeps serving and a new file is tried later. Free space or fix the directory.
pub const RECORDING_FAILED: &str = "RECORDING_FAILED";

/// Retention deleted a recording older than the point's `retain`. Informational.
pub const RECORDING_EXPIRED: &str = "RECORDING_EXPIRED";

/// Retention could not delete an expired recording. Check the directory's permissions.
pub const RECORDING_RETENTION_FAILED: &str = "RECORDING_RETENTION_FAILED";

/// The RTP/UDP fan-out of a point fell behind its ring (an overloaded host): every UDP session
/// of the point lost the chunks it skipped. Give the server more CPU or fewer sessions.
pub const UDP_FANOUT_LAGGING: &str = "UDP_FANOUT_LAGGING";

/// The TCP fan-out of a point fell behind its ring (an overloaded host): its listeners went
/// back to writing on their own, and those that fell behind too skip to the next keyframe.
/// Give the server more CPU or fewer listeners.
pub const TCP_FANOUT_LAGGING: &str = "TCP_FANOUT_LAGGING";

#[cfg(test)]
mod tests {
    //! Every `warn!` and `error!` in the host names its event: the source files under `src/`
    //! are scanned at test time, so a new call without a name fails here.

    use std::collections::BTreeSet;
    use std::path::{Path, PathBuf};

    /// The names this file defines.
    fn defined_events() -> BTreeSet<String> {
        include_str!("events.rs")
            .lines()
            .filter_map(|line| line.strip_prefix("pub const "))
            .filter_map(|rest| rest.split_once(':'))
            .map(|(name, _)| name.trim().to_owned())
            .collect()
    }

    fn rust_files(dir: &Path, found: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                rust_files(&path, found);
            } else if path.extension().is_some_and(|ext| ext == "rs") {
                found.push(path);
            }
        }
    }

    /// The source with comments, string and char literals blanked out (replaced by spaces,
    /// lines kept), so that only code is searched.
    fn code_only(source: &str) -> String {
        let chars: Vec<char> = source.chars().collect();
        let mut code = String::with_capacity(source.len());
        let mut i = 0;
        let blank = |c: char| if c == '\n' { '\n' } else { ' ' };
        while i < chars.len() {
            let rest = &chars[i..];
            let skip = match rest {
                ['/', '/', ..] => rest.iter().position(|&c| c == '\n').unwrap_or(rest.len()),
                ['/', '*', ..] => block_comment_len(rest),
                ['"', ..] => string_len(rest),
                ['r', '#', '"', ..] => raw_string_len(rest),
                ['\'', '\\', _, ..] => rest
                    .iter()
                    .skip(1)
                    .position(|&c| c == '\'')
                    .map_or(1, |p| p + 2),
                ['\'', _, '\'', ..] => 3,
                _ => 0,
            };
            if skip == 0 {
                code.push(chars[i]);
                i += 1;
            } else {
                code.extend(rest[..skip].iter().map(|&c| blank(c)));
                i += skip;
            }
        }
        code
    }

    fn block_comment_len(rest: &[char]) -> usize {
        (2..rest.len())
            .find(|&i| rest[i - 1] == '*' && rest[i] == '/')
            .map_or(rest.len(), |i| i + 1)
    }

    fn string_len(rest: &[char]) -> usize {
        let mut i = 1;
        while i < rest.len() {
            match rest[i] {
                '\\' => i += 2,
                '"' => return i + 1,
                _ => i += 1,
            }
        }
        rest.len()
    }

    fn raw_string_len(rest: &[char]) -> usize {
        (4..rest.len())
            .find(|&i| rest[i - 1] == '"' && rest[i] == '#')
            .map_or(rest.len(), |i| i + 1)
    }

    /// The arguments of every `warn!(…)` and `error!(…)` call in `code`, with their lines.
    fn log_calls(code: &str) -> Vec<(usize, String)> {
        let mut calls = Vec::new();
        for macro_name in ["warn!(", "error!("] {
            for (at, _) in code.match_indices(macro_name) {
                let before = code[..at].chars().next_back();
                if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                    continue;
                }
                let open = at + macro_name.len();
                let mut depth = 1;
                let end = code[open..]
                    .char_indices()
                    .find(|&(_, c)| {
                        depth += match c {
                            '(' | '[' | '{' => 1,
                            ')' | ']' | '}' => -1,
                            _ => 0,
                        };
                        depth == 0
                    })
                    .map_or(code.len(), |(i, _)| open + i);
                let line = code[..at].lines().count().max(1);
                calls.push((line, code[open..end].to_owned()));
            }
        }
        calls
    }

    /// The event a call's arguments name: `Some(Ok(NAME))` for `event = events::NAME` (or
    /// `crate::events::NAME`),
    /// `Some(Err(()))` for a local `event` passed as is (it holds one of the names), `None`
    /// when there is no `event` field.
    fn named_event(args: &str) -> Option<Result<String, ()>> {
        let flat = args.split_whitespace().collect::<Vec<_>>().join(" ");
        let flat = flat.replace("crate::events::", "events::");
        if let Some((_, rest)) = flat.split_once("event = events::") {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            return Some(Ok(name));
        }
        let shorthand = flat.starts_with("event,") || flat.contains(", event,");
        shorthand.then_some(Err(()))
    }

    #[test]
    fn every_warning_and_error_names_a_defined_event() {
        let defined = defined_events();
        let mut files = Vec::new();
        rust_files(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
            &mut files,
        );
        let mut problems = Vec::new();
        for file in &files {
            let code = code_only(&std::fs::read_to_string(file).unwrap());
            for (line, args) in log_calls(&code) {
                let place = format!("{}:{line}", file.display());
                match named_event(&args) {
                    None => problems.push(format!("{place}: no `event = events::…` field")),
                    Some(Ok(name)) if !defined.contains(&name) => {
                        problems.push(format!("{place}: `{name}` is not defined in events.rs"))
                    }
                    Some(_) => {}
                }
            }
        }
        assert!(files.len() > 10, "the source tree was not found");
        assert!(problems.is_empty(), "{}", problems.join("\n"));
    }

    #[test]
    fn the_scanner_sees_multi_line_calls_and_ignores_comments_and_strings() {
        let source = r#"
            // warn!("in a comment");
            let text = "error!(in a string)";
            tracing::warn!(
                point = %name,
                event = events::SOURCE_LOST,
                "lost ({})", why
            );
            error!(plugin = %p, "{message}");
            my_warn!(x);
            warn!(event = events::NOT_A_NAME, "x");
            error!(event, plugin = %p, "{message}");
            warn!(event = crate::events::DRAIN, "x");
        "#;
        let calls = log_calls(&code_only(source));
        let named: Vec<_> = calls
            .iter()
            .map(|(line, args)| (*line, named_event(args)))
            .collect();
        assert_eq!(
            named,
            vec![
                (4, Some(Ok("SOURCE_LOST".to_owned()))),
                (11, Some(Ok("NOT_A_NAME".to_owned()))),
                (13, Some(Ok("DRAIN".to_owned()))),
                (9, None),
                (12, Some(Err(()))),
            ]
        );
        assert!(!defined_events().contains("NOT_A_NAME"));
        assert!(defined_events().contains("SOURCE_LOST"));
    }
}

//! The access log: one line per finished play or publish in the W3C Extended Log File Format,
//! written by one task so that a connection never waits on the disk.
//!
//! Connections hand a [`AccessRecord`] to a bounded channel and move on; when the writer falls
//! behind, lines are dropped and counted (`ferrocast_access_log_dropped_lines_total`). The
//! file rotates by size (`path` → `path.1` → … `path.<keep>`), and `SIGUSR2` reopens it for
//! an external logrotate.

use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::config::AccessLogConfig;
use crate::events;

/// Lines that may wait for the writer before new ones are dropped.
const QUEUE: usize = 4096;

pub const FIELDS: &str = "date time c-ip cs-uri-stem c-status x-duration sc-bytes cs(User-Agent) x-protocol x-plugin x-point x-end-reason";

/// One finished play or publish. Unknown values are written as `-`.
#[derive(Debug, Clone, PartialEq)]
pub struct AccessRecord {
    pub ended: SystemTime,
    pub client: IpAddr,
    pub uri_stem: String,
    pub status: Option<u16>,
    pub duration: Duration,
    pub bytes_sent: u64,
    pub user_agent: Option<String>,
    pub protocol: String,
    /// The plugin and the generation that served the session, as `name/generation`.
    pub plugin: String,
    pub point: String,
    pub end_reason: String,
}

static SENDER: OnceLock<mpsc::Sender<AccessRecord>> = OnceLock::new();

/// Queue a line for the access log, if one is configured; never waits.
pub fn record(record: AccessRecord) {
    let Some(sender) = SENDER.get() else {
        return;
    };
    if sender.try_send(record).is_err() {
        crate::metrics::access_log_dropped();
    }
}

/// Start the writer task for `config`. Call once per process.
pub fn start(config: &AccessLogConfig) -> Option<tokio::task::JoinHandle<()>> {
    let (sender, receiver) = mpsc::channel(QUEUE);
    SENDER.set(sender).ok()?;
    let writer = Writer {
        path: config.path.clone(),
        max_bytes: config.max_bytes,
        keep: config.keep,
        file: None,
        size: 0,
    };
    info!(path = %config.path.display(), "access log ready");
    Some(tokio::spawn(writer.run(receiver)))
}

struct Writer {
    path: PathBuf,
    max_bytes: u64,
    keep: u32,
    file: Option<std::fs::File>,
    size: u64,
}

impl Writer {
    async fn run(mut self, mut records: mpsc::Receiver<AccessRecord>) {
        let mut reopen = signal(SignalKind::user_defined2()).ok();
        loop {
            tokio::select! {
                record = records.recv() => match record {
                    Some(record) => self.write(&format_line(&record)),
                    None => return,
                },
                Some(()) = recv(&mut reopen) => {
                    info!(path = %self.path.display(), "SIGUSR2: reopening the access log");
                    self.file = None;
                }
            }
        }
    }

    fn write(&mut self, line: &str) {
        if self.size + line.len() as u64 > self.max_bytes && self.file.is_some() {
            self.rotate();
        }
        if self.file.is_none() {
            self.open();
        }
        let Some(file) = &mut self.file else {
            crate::metrics::access_log_dropped();
            return;
        };
        match file.write_all(line.as_bytes()) {
            Ok(()) => self.size += line.len() as u64,
            Err(error) => {
                warn!(event = events::ACCESS_LOG_FAILED, path = %self.path.display(), %error, "cannot write the access log; the line is lost");
                self.file = None;
            }
        }
    }

    /// Open (or create) the file, writing the W3C header when it is new.
    fn open(&mut self) {
        let opened = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .and_then(|mut file| {
                let size = file.metadata()?.len();
                let header = if size == 0 {
                    header(SystemTime::now())
                } else {
                    String::new()
                };
                file.write_all(header.as_bytes())?;
                Ok((file, size + header.len() as u64))
            });
        match opened {
            Ok((file, size)) => {
                self.file = Some(file);
                self.size = size;
            }
            Err(error) => {
                warn!(event = events::ACCESS_LOG_FAILED, path = %self.path.display(), %error, "cannot open the access log; lines are dropped until it can be opened");
            }
        }
    }

    /// `path.<keep-1>` → `path.<keep>`, …, `path` → `path.1`.
    fn rotate(&mut self) {
        self.file = None;
        for index in (1..self.keep).rev() {
            let _ = std::fs::rename(numbered(&self.path, index), numbered(&self.path, index + 1));
        }
        if self.keep > 0 {
            let _ = std::fs::rename(&self.path, numbered(&self.path, 1));
        } else {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

fn numbered(path: &Path, index: u32) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{index}"));
    PathBuf::from(name)
}

async fn recv(signal: &mut Option<tokio::signal::unix::Signal>) -> Option<()> {
    match signal {
        Some(signal) => signal.recv().await,
        None => std::future::pending().await,
    }
}

/// The directives that open a new file.
pub fn header(now: SystemTime) -> String {
    let (date, time) = date_time(now);
    format!(
        "#Version: 1.0\n#Software: ferrocast {}\n#Date: {date} {time}\n#Fields: {FIELDS}\n",
        env!("CARGO_PKG_VERSION")
    )
}

/// One log line; fields never contain spaces (they are replaced by `+`, as W3C logs do).
pub fn format_line(record: &AccessRecord) -> String {
    let (date, time) = date_time(record.ended);
    let field = |value: &str| {
        if value.is_empty() {
            "-".to_owned()
        } else {
            value.replace(|c: char| c.is_whitespace() || c.is_control(), "+")
        }
    };
    format!(
        "{date} {time} {} {} {} {:.3} {} {} {} {} {} {}\n",
        record.client,
        field(&record.uri_stem),
        record.status.map_or("-".to_owned(), |s| s.to_string()),
        record.duration.as_secs_f64(),
        record.bytes_sent,
        field(record.user_agent.as_deref().unwrap_or("")),
        field(&record.protocol),
        field(&record.plugin),
        field(&record.point),
        field(&record.end_reason),
    )
}

/// UTC `YYYY-MM-DD` and `HH:MM:SS`.
fn date_time(at: SystemTime) -> (String, String) {
    let seconds = at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, of_day) = (seconds / 86_400, seconds % 86_400);
    let (year, month, day) = civil_from_days(days as i64);
    (
        format!("{year:04}-{month:02}-{day:02}"),
        format!(
            "{:02}:{:02}:{:02}",
            of_day / 3600,
            of_day / 60 % 60,
            of_day % 60
        ),
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm); the one
/// calendar conversion of the host (access log, HLS dates, recording names).
pub(crate) fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_utc_calendar_dates() {
        assert_eq!(
            date_time(UNIX_EPOCH),
            ("1970-01-01".into(), "00:00:00".into())
        );
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400 + 3_661);
        assert_eq!(date_time(leap), ("2000-02-29".into(), "01:01:01".into()));
    }

    #[test]
    fn a_line_has_every_field_with_dashes_for_unknowns() {
        let record = AccessRecord {
            ended: UNIX_EPOCH + Duration::from_secs(86_400),
            client: "127.0.0.1".parse().unwrap(),
            uri_stem: "/live".into(),
            status: None,
            duration: Duration::from_millis(1500),
            bytes_sent: 188,
            user_agent: Some("VLC media player".into()),
            protocol: "http".into(),
            plugin: "http/1".into(),
            point: "live".into(),
            end_reason: "closed".into(),
        };
        let line = format_line(&record);
        assert_eq!(
            line,
            "1970-01-02 00:00:00 127.0.0.1 /live - 1.500 188 VLC+media+player http http/1 live closed\n"
        );
        assert_eq!(
            line.split_whitespace().count(),
            FIELDS.split_whitespace().count()
        );
    }

    #[test]
    fn rotation_shifts_numbered_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.log");
        let mut writer = Writer {
            path: path.clone(),
            max_bytes: 200,
            keep: 2,
            file: None,
            size: 0,
        };
        for _ in 0..20 {
            writer.write(&"x".repeat(60));
        }
        assert!(numbered(&path, 1).exists());
        assert!(numbered(&path, 2).exists());
        assert!(!numbered(&path, 3).exists());
        let current = std::fs::read_to_string(&path).unwrap();
        assert!(current.starts_with("#Version: 1.0\n"), "{current}");
        assert!(current.len() <= 200 + 60, "{}", current.len());
    }
}

//! Play, seek, resume and pause decisions: what a request means given what the session is
//! playing now. Plain functions over small descriptions, tested without a server.

use std::time::Duration;

use ferrocast_plugin_api::{ByteRange, ErrorCode, HostError, RESUME};

/// Why a play, seek or pause request was refused.
#[derive(Debug, thiserror::Error)]
pub enum PlayRefusal {
    #[error("range {start}..{end} is outside the file ({size} bytes)")]
    BadRange { start: u64, end: u64, size: u64 },
    #[error("no transport is set up; SETUP comes before PLAY")]
    NoTransport,
    #[error("`{point}` is live; it can only be started and stopped")]
    LiveNotSeekable { point: String },
    #[error("a broadcast point cannot be paused; it can only be started and stopped")]
    LiveNotPausable,
    #[error("nothing is playing")]
    NothingPlaying,
    #[error("cannot open the file: {0}")]
    FileUnreadable(#[source] std::io::Error),
    #[error("the point `{point}` has its maximum of {max} clients; try again later")]
    PointFull { point: String, max: u32 },
    #[error("the point `{point}` would exceed its outgoing bandwidth of {max_bps} bit/s ({clients} clients at {ingest_bps} bit/s); try again later")]
    PointBandwidth {
        point: String,
        max_bps: u64,
        clients: u64,
        ingest_bps: u64,
    },
}

impl From<PlayRefusal> for HostError {
    fn from(refusal: PlayRefusal) -> Self {
        let code = match &refusal {
            PlayRefusal::BadRange { .. } => ErrorCode::BAD_RANGE,
            PlayRefusal::NoTransport | PlayRefusal::NothingPlaying => ErrorCode::INVALID_STATE,
            PlayRefusal::LiveNotSeekable { .. } | PlayRefusal::LiveNotPausable => {
                ErrorCode::NOT_SEEKABLE
            }
            PlayRefusal::FileUnreadable(_) => ErrorCode::UNAVAILABLE,
            PlayRefusal::PointFull { .. } | PlayRefusal::PointBandwidth { .. } => {
                ErrorCode::OVER_CAPACITY
            }
        };
        HostError::new(code, refusal.to_string())
    }
}

/// The part of a file of `size` bytes that `range` asks for, as `start..end`.
pub fn file_range(range: ByteRange, size: u64) -> Result<(u64, u64), PlayRefusal> {
    let end = range.end.min(size);
    // An empty range is only right for an empty file.
    if range.start > end || (range.start == end && size > 0) {
        return Err(PlayRefusal::BadRange {
            start: range.start,
            end: range.end,
            size,
        });
    }
    Ok((range.start, end))
}

/// May one more client join a live point that has `clients` subscribers and receives
/// `ingest_bps` from its encoder (0 when unknown), under `limits`?
pub fn point_capacity(
    point: &str,
    limits: crate::config::PointLimits,
    clients: u64,
    ingest_bps: u64,
) -> Result<(), PlayRefusal> {
    let after = clients + 1;
    if let Some(max) = limits.max_clients {
        if after > u64::from(max) {
            return Err(PlayRefusal::PointFull {
                point: point.to_owned(),
                max,
            });
        }
    }
    if let Some(max_bps) = limits.max_bandwidth_bps {
        if after.saturating_mul(ingest_bps) > max_bps {
            return Err(PlayRefusal::PointBandwidth {
                point: point.to_owned(),
                max_bps,
                clients: after,
                ingest_bps,
            });
        }
    }
    Ok(())
}

/// What a session plays now, as far as transport play decisions care.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NowPlaying {
    Nothing,
    /// A live point as raw TS on the connection.
    LiveOnConnection,
    /// A live point as RTP on the transports.
    LiveOnTransports,
    /// A byte range of a file on the connection.
    FileOnConnection,
    /// A file paced onto the transports.
    PacedFile,
}

/// What a PLAY on the transports of a live point does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LivePlay {
    /// A live point already plays on the transports: answer with where it is.
    AlreadyPlaying,
    /// Start the live point's shared RTP packets.
    Start,
}

/// Decide a PLAY of the live `point` on the transports at `start_ms` (or [`RESUME`]).
pub fn plan_live_play(
    current: NowPlaying,
    point: &str,
    start_ms: u64,
) -> Result<LivePlay, PlayRefusal> {
    if current == NowPlaying::LiveOnTransports {
        return Ok(LivePlay::AlreadyPlaying);
    }
    if start_ms != RESUME && start_ms != 0 {
        return Err(PlayRefusal::LiveNotSeekable {
            point: point.to_owned(),
        });
    }
    Ok(LivePlay::Start)
}

/// What a PLAY on the transports of a file does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FilePlay {
    /// Go on from where the paused file stopped.
    Resume,
    /// (Re)open the file and start at `at`: a new file, a seek, or a start from the top.
    Open { at: Duration },
}

/// Decide a PLAY of a file on the transports at `start_ms` (or [`RESUME`]).
pub fn plan_file_play(current: NowPlaying, start_ms: u64) -> FilePlay {
    match (current, start_ms) {
        (NowPlaying::PacedFile, RESUME) => FilePlay::Resume,
        (_, RESUME) => FilePlay::Open { at: Duration::ZERO },
        (_, ms) => FilePlay::Open {
            at: Duration::from_millis(ms),
        },
    }
}

/// Why a PAUSE of `current` is refused (only a paced file pauses).
pub fn pause_refusal(current: NowPlaying) -> PlayRefusal {
    match current {
        NowPlaying::LiveOnConnection | NowPlaying::LiveOnTransports => PlayRefusal::LiveNotPausable,
        _ => PlayRefusal::NothingPlaying,
    }
}

/// Whether tearing down the last transport ends what plays.
pub fn ends_with_last_transport(current: NowPlaying) -> bool {
    matches!(
        current,
        NowPlaying::LiveOnTransports | NowPlaying::PacedFile
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_point_takes_clients_up_to_its_caps() {
        use crate::config::PointLimits;
        let open = PointLimits::default();
        assert!(point_capacity("live", open, 100_000, 10_000_000).is_ok());
        let ten = PointLimits {
            max_clients: Some(10),
            max_bandwidth_bps: None,
        };
        assert!(point_capacity("live", ten, 9, 0).is_ok());
        let full = point_capacity("live", ten, 10, 0).unwrap_err();
        assert_eq!(HostError::from(full).code, ErrorCode::OVER_CAPACITY);
        let fifty_mbit = PointLimits {
            max_clients: None,
            max_bandwidth_bps: Some(50_000_000),
        };
        // 5 Mbit/s each: ten fit, the eleventh does not.
        assert!(point_capacity("live", fifty_mbit, 9, 5_000_000).is_ok());
        let over = point_capacity("live", fifty_mbit, 10, 5_000_000).unwrap_err();
        assert!(
            over.to_string().contains("11 clients at 5000000 bit/s"),
            "{over}"
        );
        // Before the encoder's rate is known, only the client count limits.
        assert!(point_capacity("live", fifty_mbit, 1_000, 0).is_ok());
    }

    fn range(start: u64, end: u64) -> ByteRange {
        ByteRange { start, end }
    }

    #[test]
    fn a_range_is_clamped_to_the_file() {
        assert_eq!(file_range(ByteRange::ALL, 100).unwrap(), (0, 100));
        assert_eq!(file_range(range(10, 20), 100).unwrap(), (10, 20));
        assert_eq!(file_range(range(90, 500), 100).unwrap(), (90, 100));
    }

    #[test]
    fn a_range_outside_the_file_is_refused() {
        let refused = file_range(range(100, 200), 100).unwrap_err();
        assert_eq!(HostError::from(refused).code, ErrorCode::BAD_RANGE);
        assert!(file_range(range(150, 200), 100).is_err());
        assert!(
            file_range(range(5, 5), 100).is_err(),
            "an empty range of a non-empty file"
        );
    }

    #[test]
    fn an_empty_file_plays_as_an_empty_range() {
        assert_eq!(file_range(ByteRange::ALL, 0).unwrap(), (0, 0));
    }

    #[test]
    fn play_on_a_live_session_that_already_plays_changes_nothing() {
        let plan = plan_live_play(NowPlaying::LiveOnTransports, "live", 5000);
        assert_eq!(plan.unwrap(), LivePlay::AlreadyPlaying);
    }

    #[test]
    fn a_live_point_starts_at_zero_or_resume_and_cannot_seek() {
        for start in [0, RESUME] {
            let plan = plan_live_play(NowPlaying::Nothing, "live", start);
            assert_eq!(plan.unwrap(), LivePlay::Start);
        }
        let plan = plan_live_play(NowPlaying::PacedFile, "live", 0);
        assert_eq!(
            plan.unwrap(),
            LivePlay::Start,
            "a file gives way to the live point"
        );
        let refused = plan_live_play(NowPlaying::Nothing, "live", 5000).unwrap_err();
        assert_eq!(
            refused.to_string(),
            "`live` is live; it can only be started and stopped"
        );
        assert_eq!(HostError::from(refused).code, ErrorCode::NOT_SEEKABLE);
    }

    #[test]
    fn a_paused_file_resumes_and_any_position_seeks() {
        assert_eq!(
            plan_file_play(NowPlaying::PacedFile, RESUME),
            FilePlay::Resume
        );
        assert_eq!(
            plan_file_play(NowPlaying::PacedFile, 0),
            FilePlay::Open { at: Duration::ZERO }
        );
        assert_eq!(
            plan_file_play(NowPlaying::PacedFile, 1500),
            FilePlay::Open {
                at: Duration::from_millis(1500)
            }
        );
    }

    #[test]
    fn a_file_without_a_paused_one_starts_from_the_top_on_resume() {
        for current in [NowPlaying::Nothing, NowPlaying::LiveOnTransports] {
            assert_eq!(
                plan_file_play(current, RESUME),
                FilePlay::Open { at: Duration::ZERO }
            );
        }
    }

    #[test]
    fn only_a_paced_file_pauses() {
        let live = pause_refusal(NowPlaying::LiveOnTransports);
        assert_eq!(HostError::from(live).code, ErrorCode::NOT_SEEKABLE);
        let nothing = pause_refusal(NowPlaying::Nothing);
        assert_eq!(HostError::from(nothing).code, ErrorCode::INVALID_STATE);
        let raw = pause_refusal(NowPlaying::FileOnConnection);
        assert_eq!(HostError::from(raw).code, ErrorCode::INVALID_STATE);
    }

    #[test]
    fn media_on_transports_ends_with_the_last_transport() {
        assert!(ends_with_last_transport(NowPlaying::LiveOnTransports));
        assert!(ends_with_last_transport(NowPlaying::PacedFile));
        assert!(!ends_with_last_transport(NowPlaying::LiveOnConnection));
        assert!(!ends_with_last_transport(NowPlaying::FileOnConnection));
        assert!(!ends_with_last_transport(NowPlaying::Nothing));
    }
}

//! Normal play time ranges (`Range: npt=…`, RFC 2326 §3.6 and §12.29).
//!
//! Clients send, for example, `npt=0.000-` (ffmpeg's first PLAY, on every point),
//! `npt=6.400-` (ffmpeg seeking), `npt=0-10` (GStreamer, up to the SDP's end) and `npt=now-`
//! (GStreamer on a live point). Times are `now`, seconds with an optional fraction, or
//! `h:mm:ss` with an optional fraction; they are kept in whole milliseconds, rounded to the
//! nearest. Other units (`smpte=`, `clock=`) are not supported.

/// A point in normal play time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Npt {
    /// The live edge.
    Now,
    /// Milliseconds from the start.
    Ms(u64),
}

/// An npt range: `start-[end]`, or `-end` (which starts at 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NptRange {
    pub start: Npt,
    pub end: Option<Npt>,
}

impl NptRange {
    /// The range starts at the very beginning (`0`, `0.000`, `00:00:00`): what clients send
    /// when they just want to play.
    pub fn starts_at_zero(&self) -> bool {
        self.start == Npt::Ms(0)
    }
}

/// Why a `Range` value was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct RangeError(pub String);

/// Parse a `Range` header value. A `;time=` parameter (when to start) is ignored.
pub fn parse(value: &str) -> Result<NptRange, RangeError> {
    let range = value.split(';').next().unwrap_or_default().trim();
    let bad = || RangeError(format!("invalid range `{range}`; use npt=<seconds>-"));
    let Some(spec) = range
        .get(..4)
        .filter(|unit| unit.eq_ignore_ascii_case("npt="))
        .map(|_| range[4..].trim())
    else {
        return Err(RangeError(format!(
            "range `{range}` is not in normal play time; use npt=<seconds>-"
        )));
    };
    let (start, end) = spec.split_once('-').ok_or_else(bad)?;
    let (start, end) = (start.trim(), end.trim());
    let end = if end.is_empty() {
        None
    } else {
        Some(time(end).ok_or_else(bad)?)
    };
    let start = if start.is_empty() {
        if end.is_none() {
            return Err(bad());
        }
        Npt::Ms(0)
    } else {
        time(start).ok_or_else(bad)?
    };
    if let (Npt::Ms(start), Some(Npt::Ms(end))) = (start, end) {
        if end < start {
            return Err(RangeError(format!("range `{range}` ends before it starts")));
        }
    }
    if start == Npt::Now && end.is_some() {
        return Err(RangeError(format!(
            "range `{range}` cannot end at a time when it starts now"
        )));
    }
    Ok(NptRange { start, end })
}

/// One npt time: `now`, `S[.frac]` or `H:MM:SS[.frac]`.
fn time(text: &str) -> Option<Npt> {
    if text.eq_ignore_ascii_case("now") {
        return Some(Npt::Now);
    }
    let (whole, fraction) = match text.split_once('.') {
        Some((whole, fraction)) => (whole, fraction),
        None => (text, ""),
    };
    if !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let seconds = match whole.split(':').collect::<Vec<_>>().as_slice() {
        [seconds] => digits(seconds, 1, 12)?,
        [hours, minutes, seconds] => {
            let (h, m, s) = (
                digits(hours, 1, 9)?,
                digits(minutes, 2, 2)?,
                digits(seconds, 2, 2)?,
            );
            if m > 59 || s > 59 {
                return None;
            }
            h * 3600 + m * 60 + s
        }
        _ => return None,
    };
    // Milliseconds from the fraction, rounded half up on its fourth digit.
    let mut padded = [b'0'; 4];
    for (slot, digit) in padded.iter_mut().zip(fraction.bytes()) {
        *slot = digit;
    }
    let tenths_of_ms = padded
        .iter()
        .fold(0u64, |acc, digit| acc * 10 + u64::from(digit - b'0'));
    let millis = (tenths_of_ms + 5) / 10;
    seconds.checked_mul(1000)?.checked_add(millis).map(Npt::Ms)
}

/// Between `min` and `max` ASCII digits.
fn digits(text: &str, min: usize, max: usize) -> Option<u64> {
    if text.len() < min || text.len() > max || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// Milliseconds as npt seconds with three decimals: `6400` → `6.400`.
pub fn format_npt(ms: u64) -> String {
    format!("{}.{:03}", ms / 1000, ms % 1000)
}

/// `npt=<start>-[<end>]` in seconds with three decimals.
pub fn format_range(start_ms: u64, end_ms: Option<u64>) -> String {
    match end_ms {
        Some(end) => format!("npt={}-{}", format_npt(start_ms), format_npt(end)),
        None => format!("npt={}-", format_npt(start_ms)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(start: Npt, end: Option<Npt>) -> NptRange {
        NptRange { start, end }
    }

    #[test]
    fn real_client_ranges() {
        assert_eq!(parse("npt=0.000-"), Ok(range(Npt::Ms(0), None)));
        assert_eq!(parse("npt=6.400-"), Ok(range(Npt::Ms(6400), None)));
        assert_eq!(
            parse("npt=0-10"),
            Ok(range(Npt::Ms(0), Some(Npt::Ms(10_000))))
        );
        assert_eq!(parse("npt=now-"), Ok(range(Npt::Now, None)));
        assert!(parse("npt=0.000-").unwrap().starts_at_zero());
        assert!(parse("npt=00:00:00-").unwrap().starts_at_zero());
        assert!(!parse("npt=now-").unwrap().starts_at_zero());
    }

    #[test]
    fn forms_and_rounding() {
        assert!(parse("NPT = 5 - ").unwrap_err().0.contains("normal play"));
        assert_eq!(parse("npt= 5 - ").unwrap().start, Npt::Ms(5000));
        assert_eq!(parse("npt=5.-").unwrap().start, Npt::Ms(5000));
        assert_eq!(parse("npt=1.2345-").unwrap().start, Npt::Ms(1235));
        assert_eq!(parse("npt=1.2344999-").unwrap().start, Npt::Ms(1234));
        assert_eq!(parse("npt=0.9996-").unwrap().start, Npt::Ms(1000));
        assert_eq!(parse("npt=1:02:03.5-").unwrap().start, Npt::Ms(3_723_500));
        assert_eq!(
            parse("npt=-20"),
            Ok(range(Npt::Ms(0), Some(Npt::Ms(20_000))))
        );
        assert_eq!(
            parse("npt=10-;time=19970123T153600Z").unwrap().start,
            Npt::Ms(10_000)
        );
        assert_eq!(
            parse("npt=999999999999-").unwrap().start,
            Npt::Ms(999_999_999_999_000)
        );
    }

    #[test]
    fn refusals() {
        for bad in [
            "",
            "npt=",
            "npt=-",
            "npt=5",
            "npt=abc-",
            "npt=-5.5.5",
            "npt=.5-",
            "npt=1:2:3-",
            "npt=0:60:00-",
            "npt=0:00:60-",
            "npt=1:00-",
            "npt=10-5",
            "npt=now-10",
            "npt=1e3-",
            "npt=+5-",
            "npt=9999999999999-",
            "smpte=10:07:00-10:07:33:05.01",
            "clock=19961108T142300Z-",
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn formatting() {
        assert_eq!(format_npt(0), "0.000");
        assert_eq!(format_npt(6400), "6.400");
        assert_eq!(format_npt(10_021), "10.021");
        assert_eq!(format_range(5000, Some(10_021)), "npt=5.000-10.021");
        assert_eq!(format_range(0, None), "npt=0.000-");
    }
}

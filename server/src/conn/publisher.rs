//! A session that publishes to a broadcast point: the point it feeds, what it pushed, and the
//! source-timeout deadline after which an encoder without media is closed. Liveness is
//! media, not bytes: junk, PSI alone or null packets do not hold a point.

use std::sync::Arc;

use ferrocast_plugin_api::{ErrorCode, HostError};
use tokio::time::Instant;
use tracing::info;

use super::ingest_pace::IngestPace;
use crate::events;
use crate::points::{LiveStream, Pushed};

/// Why a session's publish or push was refused.
#[derive(Debug, thiserror::Error)]
pub enum PublishRefusal {
    #[error("this session is already publishing")]
    AlreadyPublishing,
    #[error(
        "publishing point `{point}` is on-demand; encoders can only publish to broadcast points"
    )]
    OnDemand { point: String },
    #[error("{0}")]
    Busy(#[from] crate::points::PublishError),
    #[error("push_media before publish")]
    NotPublishing,
    #[error("this session no longer publishes to the point")]
    Displaced,
}

impl From<PublishRefusal> for HostError {
    fn from(refusal: PublishRefusal) -> Self {
        let code = match &refusal {
            PublishRefusal::AlreadyPublishing
            | PublishRefusal::NotPublishing
            | PublishRefusal::Displaced => ErrorCode::INVALID_STATE,
            PublishRefusal::OnDemand { .. } => ErrorCode::WRONG_KIND,
            PublishRefusal::Busy(_) => ErrorCode::ALREADY_PUBLISHING,
        };
        HostError::new(code, refusal.to_string())
    }
}

/// The session is a point's publisher.
pub struct Publisher {
    stream: Arc<LiveStream>,
    bytes_pushed: u64,
    /// When the encoder last delivered media (or started publishing).
    last_media: Instant,
    /// Bytes arrived since `last_media`, none of them media.
    bytes_without_media: bool,
    /// Holds an encoder that runs ahead of real time.
    pace: IngestPace,
}

/// Why a publishing encoder is closed at its source deadline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Silence {
    /// Nothing arrived at all.
    NoData(std::time::Duration),
    /// Bytes arrived, but no decodable media (no PAT/PMT, or nothing on the PMT's streams).
    NoMedia(std::time::Duration),
}

impl Silence {
    /// Why the source is lost, for SOURCE_LOST and the connection's end.
    pub fn reason(self) -> String {
        match self {
            Self::NoData(timeout) => {
                format!("no data from the encoder for {} ms", timeout.as_millis())
            }
            Self::NoMedia(timeout) => format!(
                "no decodable media from the encoder for {} ms (bytes arrived, but no PAT/PMT or nothing on the PMT's streams)",
                timeout.as_millis()
            ),
        }
    }
}

impl Publisher {
    /// Become `stream`'s publisher at `now`, unless another session is.
    pub fn start(
        stream: Arc<LiveStream>,
        session: u64,
        now: Instant,
    ) -> Result<Self, PublishRefusal> {
        stream.publish(session)?;
        Ok(Self {
            stream,
            bytes_pushed: 0,
            last_media: now,
            bytes_without_media: false,
            pace: IngestPace::new(),
        })
    }

    /// Become `stream`'s publisher at `now`, taking over from a stale publisher if there is
    /// one: for an encoder whose credentials were checked.
    pub fn take_over(
        stream: Arc<LiveStream>,
        session: u64,
        now: Instant,
    ) -> Result<Self, PublishRefusal> {
        if let Some(displaced) = stream.publish_or_take_over(session)? {
            info!(event = events::PUSH_START, point = %stream.name, displaced, "an encoder with valid credentials took the point over from a stale publisher");
        }
        Ok(Self {
            stream,
            bytes_pushed: 0,
            last_media: now,
            bytes_without_media: false,
            pace: IngestPace::new(),
        })
    }

    pub fn stream(&self) -> &Arc<LiveStream> {
        &self.stream
    }

    /// Feed the point with the encoder's bytes; only media moves the source deadline.
    pub fn push(
        &mut self,
        session: u64,
        data: &[u8],
        now: Instant,
    ) -> Result<Pushed, PublishRefusal> {
        self.push_with(session, data, now, true)
    }

    /// [`Publisher::push`] while a read is being handed over in pieces: the last incomplete
    /// chunk waits for the next piece or for [`Publisher::flush`].
    pub fn push_more(
        &mut self,
        session: u64,
        data: &[u8],
        now: Instant,
    ) -> Result<Pushed, PublishRefusal> {
        self.push_with(session, data, now, false)
    }

    /// The read is over: send what [`Publisher::push_more`] held.
    pub fn flush(&self, session: u64) {
        self.stream.flush(session);
    }

    fn push_with(
        &mut self,
        session: u64,
        data: &[u8],
        now: Instant,
        flush: bool,
    ) -> Result<Pushed, PublishRefusal> {
        let pushed = if flush {
            self.stream.push(session, data)
        } else {
            self.stream.push_more(session, data)
        }
        .ok_or(PublishRefusal::Displaced)?;
        self.bytes_pushed += data.len() as u64;
        if pushed.media {
            self.last_media = now;
            self.bytes_without_media = false;
        } else if !data.is_empty() {
            self.bytes_without_media = true;
        }
        for &pcr in &pushed.pcrs_90k {
            self.pace.on_pcr(pcr, now);
        }
        Ok(pushed)
    }

    /// When the encoder counts as lost unless media arrives first. Time spent not reading it
    /// (it ran ahead of real time) does not count against it.
    pub fn source_deadline(&self) -> Instant {
        let paused = self.pace.paused_until(self.last_media);
        paused.unwrap_or(self.last_media) + self.stream.source_timeout()
    }

    /// While the encoder is too far ahead of real time: when reading it may resume.
    pub fn paused_until(&self, now: Instant) -> Option<Instant> {
        self.pace.paused_until(now)
    }

    /// Whether the encoder runs well ahead of real time: it is being held back, or soon will
    /// be, and is read in short blocks.
    pub fn is_paced(&self, now: Instant) -> bool {
        self.pace.is_pacing(now)
    }

    /// Why the encoder is lost if its source deadline passes now.
    pub fn silence(&self) -> Silence {
        let timeout = self.stream.source_timeout();
        if self.bytes_without_media {
            Silence::NoMedia(timeout)
        } else {
            Silence::NoData(timeout)
        }
    }

    /// Stop being the point's publisher (`why` is logged with SOURCE_LOST).
    pub fn end(self, session: u64, why: &str) {
        info!(event = events::PUSH_END, point = %self.stream.name, bytes = self.bytes_pushed, "encoder stopped publishing");
        // A publisher that ends while taking in a read still delivers its last packets.
        self.stream.flush(session);
        self.stream.unpublish(session, why);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn stream() -> Arc<LiveStream> {
        LiveStream::for_tests("live", Duration::from_secs(5), Duration::from_secs(3))
    }

    /// PAT, PMT (H.264 on PID 0x100), then a packet of that stream.
    fn media() -> Vec<u8> {
        use crate::media::test_support::{pat_packet, pmt_packet, PacketSpec};
        let mut data = pat_packet(0x1000, 0).to_vec();
        data.extend_from_slice(&pmt_packet(0x1000, 0x100, &[(0x1b, 0x100)], 0));
        data.extend_from_slice(&PacketSpec::new(0x100).payload(&[0; 184]).build());
        data
    }

    #[tokio::test]
    async fn only_media_moves_the_source_deadline() {
        let start = Instant::now();
        let mut publisher = Publisher::start(stream(), 1, start).unwrap();
        assert_eq!(publisher.source_deadline(), start + Duration::from_secs(3));
        assert_eq!(publisher.silence(), Silence::NoData(Duration::from_secs(3)));
        let later = start + Duration::from_secs(2);
        let pushed = publisher.push(1, &media(), later).unwrap();
        assert!(pushed.media);
        assert_eq!(publisher.source_deadline(), later + Duration::from_secs(3));

        // Junk, null packets and PSI alone: bytes, but no media.
        let junk = [
            [0x47u8; 188].as_slice(),
            &crate::media::ts::null_packet(),
            &[0x55; 1000],
        ];
        for (i, data) in junk.into_iter().enumerate() {
            let at = later + Duration::from_secs(1 + i as u64);
            assert!(!publisher.push(1, data, at).unwrap().media);
        }
        assert_eq!(publisher.source_deadline(), later + Duration::from_secs(3));
        assert_eq!(
            publisher.silence(),
            Silence::NoMedia(Duration::from_secs(3))
        );
        assert!(publisher
            .silence()
            .reason()
            .starts_with("no decodable media"));
    }

    #[tokio::test(start_paused = true)]
    async fn an_authenticated_encoder_takes_over_from_a_silent_publisher_only() {
        let stream = stream();
        let mut first = Publisher::start(Arc::clone(&stream), 1, Instant::now()).unwrap();
        let busy = Publisher::take_over(Arc::clone(&stream), 2, Instant::now());
        assert!(
            matches!(busy, Err(PublishRefusal::Busy(_))),
            "not yet stale"
        );
        tokio::time::advance(Duration::from_millis(1500)).await;
        let second = Publisher::take_over(Arc::clone(&stream), 2, Instant::now()).unwrap();
        assert!(stream.is_live());
        let displaced = first.push(1, &[0x47; 188], Instant::now());
        assert!(matches!(displaced, Err(PublishRefusal::Displaced)));
        first.end(1, "gone");
        assert!(
            stream.is_live(),
            "the displaced session's end changes nothing"
        );
        second.end(2, "done");
        assert!(!stream.is_live());
    }

    #[tokio::test]
    async fn a_second_publisher_is_refused_while_the_first_publishes() {
        let stream = stream();
        let _first = Publisher::start(Arc::clone(&stream), 1, Instant::now()).unwrap();
        let second = Publisher::start(stream, 2, Instant::now());
        assert!(matches!(second, Err(PublishRefusal::Busy(_))));
        let error = HostError::from(second.err().unwrap());
        assert_eq!(error.code, ErrorCode::ALREADY_PUBLISHING);
    }

    #[tokio::test]
    async fn a_publisher_ahead_of_real_time_is_paused_and_not_timed_out_meanwhile() {
        use crate::media::test_support::{pat_packet, pmt_packet, PacketSpec};
        let start = Instant::now();
        let mut publisher = Publisher::start(stream(), 1, start).unwrap();
        let mut data = pat_packet(0x1000, 0).to_vec();
        data.extend_from_slice(&pmt_packet(0x1000, 0x100, &[(0x1b, 0x100)], 0));
        let with_pcr = |half: u64| {
            PacketSpec::new(0x100)
                .pcr(half * 45_000 * 300)
                .payload(&[0; 100])
                .build()
        };
        data.extend_from_slice(&with_pcr(0));
        publisher.push(1, &data, start).unwrap();
        assert_eq!(publisher.paused_until(start), None);
        // Then 6 s of media (PCR every 0.5 s) at once.
        let burst: Vec<u8> = (1..=12).flat_map(with_pcr).collect();
        publisher.push(1, &burst, start).unwrap();
        let resume = publisher.paused_until(start).expect("paused");
        assert!(resume >= start + Duration::from_millis(3500), "{resume:?}");
        assert_eq!(publisher.source_deadline(), resume + Duration::from_secs(3));
    }
}

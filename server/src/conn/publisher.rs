//! A session that publishes to a broadcast point: the point it feeds, what it pushed, and the
//! source-timeout deadline after which a silent encoder is closed.

use std::sync::Arc;

use ferrocast_plugin_api::{ErrorCode, HostError};
use tokio::time::Instant;
use tracing::info;

use crate::events;
use crate::points::LiveStream;

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
    last_push: Instant,
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
            last_push: now,
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
            last_push: now,
        })
    }

    pub fn stream(&self) -> &Arc<LiveStream> {
        &self.stream
    }

    /// Feed the point with the encoder's bytes.
    pub fn push(&mut self, session: u64, data: &[u8], now: Instant) -> Result<(), PublishRefusal> {
        if !self.stream.push(session, data) {
            return Err(PublishRefusal::Displaced);
        }
        self.bytes_pushed += data.len() as u64;
        self.last_push = now;
        Ok(())
    }

    /// When the encoder counts as silent unless more media arrives first.
    pub fn source_deadline(&self) -> Instant {
        self.last_push + self.stream.source_timeout()
    }

    /// Stop being the point's publisher (`why` is logged with SOURCE_LOST).
    pub fn end(self, session: u64, why: &str) {
        info!(event = events::PUSH_END, point = %self.stream.name, bytes = self.bytes_pushed, "encoder stopped publishing");
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

    #[tokio::test]
    async fn each_push_moves_the_source_deadline() {
        let start = Instant::now();
        let mut publisher = Publisher::start(stream(), 1, start).unwrap();
        assert_eq!(publisher.source_deadline(), start + Duration::from_secs(3));
        let later = start + Duration::from_secs(2);
        publisher.push(1, &[0x47; 188], later).unwrap();
        assert_eq!(publisher.source_deadline(), later + Duration::from_secs(3));
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
}

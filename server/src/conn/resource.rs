//! The session's request for a packaged (HLS) resource: answered at once, held while a
//! blocking playlist reload waits for the awaited part, or read from an on-demand file on the
//! blocking pool; then handed to the session.

use bytes::Bytes;
use ferrocast_plugin_api::{ErrorCode, HostError};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::hls::{Answer, Prepared, Waiting};

/// At most one request per session, as in HTTP/1.1 (one response at a time).
#[derive(Default)]
///
/// Its parts are boxed: every connection holds a slot, and only HLS requests fill it.
pub struct ResourceSlot {
    ready: Option<Box<Result<Prepared, HostError>>>,
    waiting: Option<Box<Waiting>>,
    reading: Option<JoinHandle<Result<Prepared, HostError>>>,
    /// The body of the resource being handed over, for `send_resource_body`.
    pub(super) body: Option<Vec<Bytes>>,
}

/// What woke a connection about its resource.
pub enum ResourceStep {
    /// The awaited playlist changed, or the wait's deadline passed.
    Changed,
    /// A file read finished.
    Read(Result<Prepared, HostError>),
}

impl ResourceSlot {
    /// A request is answered, waited for or read.
    pub fn busy(&self) -> bool {
        self.ready.is_some() || self.waiting.is_some() || self.reading.is_some()
    }

    pub fn start(&mut self, answer: Answer) {
        match answer {
            Answer::Ready(prepared) => self.ready = Some(Box::new(Ok(prepared))),
            Answer::Wait(waiting) => self.waiting = Some(Box::new(waiting)),
            Answer::Read(read) => {
                self.reading = Some(tokio::task::spawn_blocking(move || read.read()));
            }
        }
    }

    /// The answer to hand to the session now, if there is one.
    pub fn take_ready(&mut self) -> Option<Result<Prepared, HostError>> {
        self.ready.take().map(|ready| *ready)
    }

    /// Act on what woke the connection.
    pub fn on_step(&mut self, step: ResourceStep, now: Instant) {
        match step {
            ResourceStep::Changed => {
                let answer = self.waiting.as_ref().and_then(|waiting| waiting.poll(now));
                if let Some(answer) = answer {
                    self.waiting = None;
                    self.ready = Some(Box::new(answer));
                }
            }
            ResourceStep::Read(answer) => {
                self.reading = None;
                self.ready = Some(Box::new(answer));
            }
        }
    }
}

/// Resolves when the waited-for playlist changed, the wait's deadline passed or a file read
/// finished; pending forever otherwise. Cancel-safe: a read in progress stays in the slot.
pub async fn resource_step(slot: &mut ResourceSlot) -> ResourceStep {
    if let Some(reading) = slot.reading.as_mut() {
        return ResourceStep::Read(reading.await.unwrap_or_else(|_| {
            Err(HostError::new(
                ErrorCode::UNAVAILABLE,
                "reading the segment failed",
            ))
        }));
    }
    let Some(waiting) = slot.waiting.as_mut() else {
        return std::future::pending().await;
    };
    // Boxed: every connection's task holds this future's room, and only a blocking playlist
    // request ever waits here.
    Box::pin(wait_for_change(waiting)).await;
    ResourceStep::Changed
}

/// Until the waited-for playlist changed or the wait's deadline passed.
async fn wait_for_change(waiting: &mut Waiting) {
    let deadline = waiting.deadline;
    tokio::select! {
        _ = waiting.changes.changed() => {}
        _ = tokio::time::sleep_until(deadline) => {}
    }
}

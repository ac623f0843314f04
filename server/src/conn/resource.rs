//! The session's request for a packaged (HLS) resource: answered at once, or held while a
//! blocking playlist reload waits for the awaited part, then handed to the session.

use bytes::Bytes;
use ferrocast_plugin_api::HostError;
use tokio::time::Instant;

use crate::hls::{Answer, Prepared, Waiting};

/// At most one request per session, as in HTTP/1.1 (one response at a time).
#[derive(Default)]
pub struct ResourceSlot {
    ready: Option<Result<Prepared, HostError>>,
    waiting: Option<Waiting>,
    /// The body of the resource being handed over, for `send_resource_body`.
    pub(super) body: Option<Vec<Bytes>>,
}

impl ResourceSlot {
    /// A request is answered or waited for.
    pub fn busy(&self) -> bool {
        self.ready.is_some() || self.waiting.is_some()
    }

    pub fn start(&mut self, answer: Answer) {
        match answer {
            Answer::Ready(prepared) => self.ready = Some(Ok(prepared)),
            Answer::Wait(waiting) => self.waiting = Some(waiting),
        }
    }

    /// The answer to hand to the session now, if there is one.
    pub fn take_ready(&mut self) -> Option<Result<Prepared, HostError>> {
        self.ready.take()
    }

    /// After a change of the point's playlist or the deadline: answer if the wait is over.
    pub fn recheck(&mut self, now: Instant) {
        if let Some(answer) = self.waiting.as_ref().and_then(|waiting| waiting.poll(now)) {
            self.waiting = None;
            self.ready = Some(answer);
        }
    }
}

/// Resolves when the waited-for playlist changed or the wait's deadline passed; pending
/// forever without a wait.
pub async fn resource_changed(slot: &mut ResourceSlot) {
    let Some(waiting) = slot.waiting.as_mut() else {
        return std::future::pending().await;
    };
    let deadline = waiting.deadline;
    tokio::select! {
        _ = waiting.changes.changed() => {}
        _ = tokio::time::sleep_until(deadline) => {}
    }
}

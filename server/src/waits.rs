//! Small waiting helpers shared by the connection tasks, the fan-outs and the outputs, so that
//! each can sit in a `select!` with nothing to wait for.

use tokio::sync::oneshot;
use tokio::time::Instant;

/// Sleep until `deadline`; forever without one.
pub async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Something a task is told once over a one-shot channel (a fan-out giving a client back, or
/// telling it the stream ended). Once it was taken, waiting again is pending forever.
pub struct Told<T> {
    receiver: Option<oneshot::Receiver<T>>,
}

impl<T> Told<T> {
    pub fn new(receiver: oneshot::Receiver<T>) -> Self {
        Self {
            receiver: Some(receiver),
        }
    }

    /// Whether it is still to be told.
    pub fn is_pending(&self) -> bool {
        self.receiver.is_some()
    }

    /// Stop waiting: it was learnt another way.
    pub fn forget(&mut self) {
        self.receiver = None;
    }

    /// What the task is told, when it is; `unsaid()` if the teller went away without a word.
    pub async fn recv(&mut self, unsaid: impl FnOnce() -> T) -> T {
        let Some(receiver) = &mut self.receiver else {
            return std::future::pending().await;
        };
        let said = receiver.await.unwrap_or_else(|_| unsaid());
        self.receiver = None;
        said
    }

    /// What the task was told already, if anything.
    pub fn try_recv(&mut self, unsaid: impl FnOnce() -> T) -> Option<T> {
        let said = match self.receiver.as_mut()?.try_recv() {
            Ok(said) => said,
            Err(oneshot::error::TryRecvError::Empty) => return None,
            Err(oneshot::error::TryRecvError::Closed) => unsaid(),
        };
        self.receiver = None;
        Some(said)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn what_was_told_is_taken_once_and_silence_has_a_stand_in() {
        let (tell, receiver) = oneshot::channel();
        let mut told = Told::new(receiver);
        assert_eq!(told.try_recv(|| 0), None);
        tell.send(7).unwrap();
        assert_eq!(told.recv(|| 0).await, 7);
        assert!(!told.is_pending());
        assert_eq!(told.try_recv(|| 0), None, "taken once");

        let (tell, receiver) = oneshot::channel::<u32>();
        let mut silent = Told::new(receiver);
        drop(tell);
        assert_eq!(silent.try_recv(|| 9), Some(9));
    }
}

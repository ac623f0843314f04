//! A session test harness: one session on a [`MockHost`], driven the way the server would.
//!
//! Feed it bytes in any split, fire its timers, end its stream, close its peer, and read
//! what it wrote and logged. Plugins wrap it in a client type of their own that knows how to
//! parse their responses; the fields stay public so tests can script the mock and inspect
//! the session.
//!
//! ```
//! use ferrocast_plugin_api::{Host, Session};
//! use ferrocast_plugin_kit::testing::SessionHarness;
//!
//! /// Echoes every byte back.
//! struct Echo;
//! impl Session for Echo {
//!     fn on_data(&mut self, host: &mut Host<'_>, data: &[u8]) {
//!         host.write(data);
//!     }
//! }
//!
//! let mut harness = SessionHarness::new(Default::default(), Echo);
//! harness.send_in_pieces(b"hello", 2);
//! assert_eq!(harness.take_written(), b"hello");
//! ```

use ferrocast_plugin_api::testing::MockHost;
use ferrocast_plugin_api::{
    EndReason, LogLevel, MediaChunk, Plugin, Session, StreamEnded, TimerId,
};

/// A session under test and the mock host it runs on.
#[derive(Debug)]
pub struct SessionHarness<S> {
    pub mock: MockHost,
    pub session: S,
}

impl<S: Session> SessionHarness<S> {
    /// `session` on `mock` (scripted with points and refusals beforehand).
    pub fn new(mock: MockHost, session: S) -> Self {
        Self { mock, session }
    }

    /// The host handed the session a chunk of framed media (after `play_framed`).
    pub fn media(&mut self, data: &[u8], keyframe: bool, timestamp_90k: Option<u64>) {
        let session = &mut self.session;
        let chunk = MediaChunk::new(data, keyframe, timestamp_90k);
        self.mock.run(|host| session.on_media(host, &chunk));
    }

    /// The connection opened.
    pub fn open(&mut self) {
        let session = &mut self.session;
        self.mock.run(|host| session.on_open(host));
    }

    /// Bytes arrived from the peer.
    pub fn send(&mut self, bytes: &[u8]) {
        let session = &mut self.session;
        self.mock.run(|host| session.on_data(host, bytes));
    }

    /// `bytes` arrived in reads of at most `piece` bytes (`usize::MAX`: all at once).
    pub fn send_in_pieces(&mut self, bytes: &[u8], piece: usize) {
        for part in bytes.chunks(piece.max(1)) {
            self.send(part);
        }
    }

    /// Timer `timer` (a `TimerId` or a bare `u64`) fired: it is disarmed first, as the host
    /// does.
    pub fn fire(&mut self, timer: impl Into<TimerId>) {
        self.mock.fire(&mut self.session, timer);
    }

    /// The delay in milliseconds timer `timer` is armed with, if armed.
    pub fn timer(&self, timer: impl Into<TimerId>) -> Option<u64> {
        self.mock.timers.get(&timer.into().get()).copied()
    }

    /// The played or published stream ended for `reason`.
    pub fn stream_ended(&mut self, reason: EndReason) {
        let ended = StreamEnded {
            reason,
            message: reason.as_str().into(),
        };
        let session = &mut self.session;
        self.mock.run(|host| session.on_stream_ended(host, &ended));
    }

    /// The host saw traffic on transport `transport` (RTCP over UDP, say).
    pub fn transport_activity(&mut self, transport: u64) {
        let session = &mut self.session;
        self.mock
            .run(|host| session.on_transport_activity(host, transport));
    }

    /// The peer closed its side of the connection.
    pub fn peer_closed(&mut self) {
        let session = &mut self.session;
        self.mock.run(|host| session.on_peer_closed(host));
    }

    /// Everything written since the last call.
    pub fn take_written(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.mock.written)
    }

    /// The messages logged at `level`, in order.
    pub fn logs(&self, level: LogLevel) -> Vec<String> {
        self.mock
            .logs
            .borrow()
            .iter()
            .filter(|(l, _)| *l == level)
            .map(|(_, message)| message.clone())
            .collect()
    }
}

/// The errors plugin `P` answers `settings` with, as `(key, message)` pairs; panics if it
/// accepts them.
pub fn setting_errors<P: Plugin>(settings: &str) -> Vec<(String, String)> {
    match P::create(settings) {
        Ok(_) => panic!("settings {settings:?} were accepted"),
        Err(errors) => errors
            .into_iter()
            .map(|error| (error.key.to_string(), error.message.to_string()))
            .collect(),
    }
}

/// The value of the field named `name` (case-insensitive) in a response a test parsed;
/// panics if the field is repeated, which no response of a plugin should do.
pub fn unique_header<'a, N, V>(fields: &'a [(N, V)], name: &'a str) -> Option<&'a str>
where
    N: AsRef<str>,
    V: AsRef<str>,
{
    let mut values = crate::head::headers_named(fields, name);
    let value = values.next();
    assert!(values.next().is_none(), "header {name} repeated");
    value
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrocast_plugin_api::Host;

    /// Records what happens to it, in a form a test can compare.
    #[derive(Default)]
    struct Recorder {
        events: Vec<String>,
    }

    impl Session for Recorder {
        fn on_open(&mut self, host: &mut Host<'_>) {
            self.events.push("open".into());
            host.set_timer(1, std::time::Duration::from_millis(500));
            host.set_timer(2, std::time::Duration::from_millis(900));
        }
        fn on_data(&mut self, host: &mut Host<'_>, data: &[u8]) {
            self.events.push(format!("data {}", data.len()));
            host.write(data);
        }
        fn on_timer(&mut self, host: &mut Host<'_>, timer: u64) {
            self.events.push(format!("timer {timer}"));
            host.log(LogLevel::WARN, &format!("timer {timer} fired"));
        }
        fn on_stream_ended(&mut self, _host: &mut Host<'_>, ended: &StreamEnded) {
            self.events.push(format!("ended {}", ended.message));
        }
        fn on_transport_activity(&mut self, _host: &mut Host<'_>, transport: u64) {
            self.events.push(format!("activity {transport}"));
        }
        fn on_peer_closed(&mut self, host: &mut Host<'_>) {
            self.events.push("closed".into());
            host.close();
        }
    }

    #[test]
    fn unique_headers() {
        let fields = [("A", "1"), ("b", "2")];
        assert_eq!(unique_header(&fields, "B"), Some("2"));
        assert_eq!(unique_header(&fields, "c"), None);
    }

    #[test]
    #[should_panic(expected = "header a repeated")]
    fn repeated_headers_fail_the_test() {
        unique_header(&[("A", "1"), ("a", "2")], "a");
    }

    #[test]
    fn drives_every_event() {
        let mut harness = SessionHarness::new(MockHost::new(), Recorder::default());
        harness.open();
        assert_eq!((harness.timer(1), harness.timer(2)), (Some(500), Some(900)));
        harness.send_in_pieces(b"abcde", 2);
        harness.send_in_pieces(b"fg", usize::MAX);
        harness.fire(1);
        assert_eq!((harness.timer(1), harness.timer(2)), (None, Some(900)));
        harness.stream_ended(EndReason::COMPLETE);
        harness.transport_activity(3);
        harness.peer_closed();
        assert_eq!(harness.take_written(), b"abcdefg");
        assert!(harness.take_written().is_empty());
        assert_eq!(harness.logs(LogLevel::WARN), ["timer 1 fired"]);
        assert!(harness.logs(LogLevel::INFO).is_empty());
        assert!(harness.mock.closed);
        assert_eq!(
            harness.session.events,
            [
                "open",
                "data 2",
                "data 2",
                "data 1",
                "data 2",
                "timer 1",
                &format!("ended {}", EndReason::COMPLETE.as_str()),
                "activity 3",
                "closed",
            ]
        );
    }
}

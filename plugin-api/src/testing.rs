//! A recording host for unit-testing sessions without a server.
//!
//! ```
//! use ferrocast_plugin_api::testing::MockHost;
//! let mut mock = MockHost::new();
//! mock.run(|host| host.write(b"hello"));
//! assert_eq!(mock.written, b"hello");
//! ```

#![allow(non_local_definitions, non_camel_case_types)]

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use abi_stable::sabi_trait::TD_Opaque;
use abi_stable::std_types::{RResult, RSlice, RStr};

use crate::author::{Host, Session, TimerId};
use crate::ffi::{FfiHost, FfiHost_TO};
use crate::types::{
    ByteRange, Credentials, ErrorCode, HostError, LogLevel, PlayInfo, PointInfo, PointKind,
    ResourceRequest, SessionInfo, TransportInfo, TransportKind, TransportRequest, RESUME,
};

/// Everything a session asked of the host, plus scripted answers to its questions.
#[derive(Debug, Default)]
pub struct MockHost {
    /// Everything the session wrote, in order (see [`MockHost::take_written`]).
    pub written: Vec<u8>,
    /// Whether the session asked to close the connection.
    pub closed: bool,
    /// Armed timers: id → delay in milliseconds.
    pub timers: BTreeMap<u64, u64>,
    /// `play` calls that were accepted: (path, range).
    pub plays: Vec<(String, ByteRange)>,
    /// `play_framed` calls that were accepted: the session receives media as `on_media`.
    pub framed_plays: Vec<(String, ByteRange)>,
    /// How many times the session called `stop`.
    pub stops: usize,
    /// Points the session became the encoder of with `publish`.
    pub published: Vec<String>,
    /// The media bytes the session pushed, concatenated.
    pub pushed: Vec<u8>,
    /// Messages the session logged.
    pub logs: RefCell<Vec<(LogLevel, String)>>,
    /// Answers for `lookup`, `play` and `publish`, by path; unknown paths are NOT_FOUND.
    pub points: HashMap<String, Result<PointInfo, HostError>>,
    /// Answer `publish` with ALREADY_PUBLISHING for these paths.
    pub busy: Vec<String>,
    /// Refuse `play` for these paths (after a successful `lookup`), e.g. a live point
    /// without an encoder.
    pub play_refusals: HashMap<String, HostError>,
    /// Transports set up, in order; their ids are 1, 2, …
    pub transports: Vec<TransportRequest>,
    /// Refuse `setup_transport` for these kinds (a transport disabled on the point, say).
    pub transport_refusals: HashMap<u8, HostError>,
    /// Transports torn down, by id.
    pub torn_down: Vec<u64>,
    /// `play_transports` calls: (path, start_ms).
    pub transport_plays: Vec<(String, u64)>,
    /// How many times `pause_transports` was called.
    pub pauses: usize,
    /// What `pause_transports` answers; position 0 when unset.
    pub pause_answer: Option<Result<u64, HostError>>,
    /// The plugin's counters and gauges, by name.
    pub counters: BTreeMap<String, u64>,
    /// The plugin's gauges, by name: the last value set.
    pub gauges: BTreeMap<String, i64>,
    /// Credentials the session presented, in order.
    pub credentials: Vec<Credentials>,
    /// `get_resource` calls that were accepted, in order.
    pub resource_requests: Vec<ResourceRequest>,
    /// Refuse `get_resource` for these `path/name` keys.
    pub resource_refusals: HashMap<String, HostError>,
    /// What `send_resource_body` appends to `written`: the body of the resource the test
    /// hands to `on_resource`.
    pub resource_body: Vec<u8>,
    /// `describe_source` calls: (name, description).
    pub source_descriptions: Vec<(String, String)>,
    /// What `is_secure` answers: the connection came over TLS.
    pub secure: bool,
    /// Tunnels this session opened with `open_tunnel`, in order.
    pub opened_tunnels: Vec<String>,
    /// Open tunnels `feed_tunnel` may feed; others are NOT_FOUND.
    pub tunnels: Vec<String>,
    /// What `feed_tunnel` fed: (cookie, bytes), in order.
    pub tunnel_feeds: Vec<(String, Vec<u8>)>,
    /// Tunnels closed with `close_tunnel`, in order.
    pub closed_tunnels: Vec<String>,
    /// A `hand_over` the session made: (plugin, bytes to replay).
    pub handed_over: Option<(String, Vec<u8>)>,
}

impl MockHost {
    /// An empty mock: no points (every path is NOT_FOUND), nothing recorded.
    pub fn new() -> Self {
        Self::default()
    }

    /// Script a point for `lookup`, `play` and `publish`.
    pub fn add_point(&mut self, path: &str, kind: PointKind, size: u64) -> &mut Self {
        let name = path.split('/').next().unwrap_or(path);
        let item = path.split_once('/').map_or("", |(_, item)| item);
        self.points.insert(
            path.to_owned(),
            Ok(PointInfo {
                name: name.into(),
                item: item.into(),
                kind,
                size,
                duration_ms: 0,
                live: kind == PointKind::BROADCAST,
            }),
        );
        self
    }

    /// Script a refusal for `path`.
    pub fn refuse(&mut self, path: &str, code: ErrorCode, message: &str) -> &mut Self {
        self.points
            .insert(path.to_owned(), Err(HostError::new(code, message)));
        self
    }

    /// Run `f` with a [`Host`] backed by this mock.
    pub fn run<T>(&mut self, f: impl FnOnce(&mut Host<'_>) -> T) -> T {
        let mut host = Host::new(FfiHost_TO::from_ptr(self, TD_Opaque));
        f(&mut host)
    }

    /// The written bytes as text (lossy), then cleared.
    pub fn take_written(&mut self) -> String {
        let text = String::from_utf8_lossy(&self.written).into_owned();
        self.written.clear();
        text
    }

    /// The delay timer `timer` is armed with, if it is armed.
    pub fn timer(&self, timer: impl Into<TimerId>) -> Option<Duration> {
        self.timers
            .get(&timer.into().get())
            .map(|&ms| Duration::from_millis(ms))
    }

    /// Fire `timer` on `session` as the host does: disarm it, then deliver it.
    pub fn fire(&mut self, session: &mut dyn Session, timer: impl Into<TimerId>) {
        let timer = timer.into();
        self.timers.remove(&timer.get());
        self.run(|host| session.on_timer(host, timer.get()));
    }

    fn answer(&self, path: &str) -> Result<PointInfo, HostError> {
        self.points.get(path).cloned().unwrap_or_else(|| {
            Err(HostError::new(
                ErrorCode::NOT_FOUND,
                format!("no publishing point `{path}`"),
            ))
        })
    }
}

impl FfiHost for MockHost {
    fn write(&mut self, data: RSlice<'_, u8>) {
        self.written.extend_from_slice(data.as_slice());
    }
    fn close(&mut self) {
        self.closed = true;
    }
    fn set_timer(&mut self, timer: u64, after_ms: u64) {
        self.timers.insert(timer, after_ms);
    }
    fn cancel_timer(&mut self, timer: u64) {
        self.timers.remove(&timer);
    }
    fn lookup(&self, path: RStr<'_>) -> RResult<PointInfo, HostError> {
        self.answer(path.as_str()).into()
    }
    fn play(&mut self, path: RStr<'_>, range: ByteRange) -> RResult<PointInfo, HostError> {
        if let Some(refusal) = self.play_refusals.get(path.as_str()) {
            return RResult::RErr(refusal.clone());
        }
        let answer = self.answer(path.as_str());
        if answer.is_ok() {
            self.plays.push((path.as_str().to_owned(), range));
        }
        answer.into()
    }
    fn stop(&mut self) {
        self.stops += 1;
    }
    fn publish(&mut self, path: RStr<'_>) -> RResult<PointInfo, HostError> {
        if self.busy.iter().any(|busy| busy == path.as_str()) {
            return RResult::RErr(HostError::new(
                ErrorCode::ALREADY_PUBLISHING,
                "another encoder is publishing",
            ));
        }
        // Like the host: only broadcast points take encoders.
        let answer = self
            .answer(path.as_str())
            .and_then(|point| match point.kind {
                PointKind::ON_DEMAND => Err(HostError::new(
                    ErrorCode::WRONG_KIND,
                    format!("publishing point `{}` is on-demand", point.name),
                )),
                _ => Ok(point),
            });
        if answer.is_ok() {
            self.published.push(path.as_str().to_owned());
        }
        answer.into()
    }
    fn push_media(&mut self, data: RSlice<'_, u8>) -> RResult<(), HostError> {
        if self.published.is_empty() {
            return RResult::RErr(HostError::new(ErrorCode::INVALID_STATE, "not publishing"));
        }
        self.pushed.extend_from_slice(data.as_slice());
        RResult::ROk(())
    }
    fn log(&self, level: LogLevel, message: RStr<'_>) {
        self.logs
            .borrow_mut()
            .push((level, message.as_str().to_owned()));
    }
    fn setup_transport(&mut self, request: TransportRequest) -> RResult<TransportInfo, HostError> {
        if let Some(refusal) = self.transport_refusals.get(&request.kind.0) {
            return RResult::RErr(refusal.clone());
        }
        if let Err(error) = self.answer(request.path.as_str()) {
            return RResult::RErr(error);
        }
        let udp = request.kind == TransportKind::UDP_UNICAST;
        self.transports.push(request);
        let id = self.transports.len() as u64;
        RResult::ROk(TransportInfo {
            id,
            plugin: if udp { "udp" } else { "tcp" }.into(),
            kind: self.transports[id as usize - 1].kind,
            server_rtp_port: if udp { 6970 } else { 0 },
            server_rtcp_port: if udp { 6971 } else { 0 },
            destination: if udp { "127.0.0.1" } else { "" }.into(),
            ssrc: 0x1234_5678,
        })
    }
    fn teardown_transport(&mut self, transport: u64) {
        self.torn_down.push(transport);
    }
    fn play_transports(&mut self, path: RStr<'_>, start_ms: u64) -> RResult<PlayInfo, HostError> {
        if let Some(refusal) = self.play_refusals.get(path.as_str()) {
            return RResult::RErr(refusal.clone());
        }
        let point = match self.answer(path.as_str()) {
            Ok(point) => point,
            Err(error) => return RResult::RErr(error),
        };
        self.transport_plays
            .push((path.as_str().to_owned(), start_ms));
        RResult::ROk(PlayInfo {
            point,
            start_ms: if start_ms == RESUME { 0 } else { start_ms },
            rtp_seq: 1000,
            rtp_time: 90_000,
        })
    }
    fn pause_transports(&mut self) -> RResult<u64, HostError> {
        self.pauses += 1;
        self.pause_answer.clone().unwrap_or(Ok(0)).into()
    }
    fn session(&self) -> SessionInfo {
        SessionInfo {
            id: 1,
            peer: "127.0.0.1:50000".into(),
            local: "127.0.0.1:8080".into(),
        }
    }
    fn present_credentials(&mut self, credentials: Credentials) {
        self.credentials.push(credentials);
    }
    fn play_framed(&mut self, path: RStr<'_>, range: ByteRange) -> RResult<PointInfo, HostError> {
        if let Some(refusal) = self.play_refusals.get(path.as_str()) {
            return RResult::RErr(refusal.clone());
        }
        let answer = self.answer(path.as_str());
        if answer.is_ok() {
            self.framed_plays.push((path.as_str().to_owned(), range));
        }
        answer.into()
    }
    fn count(&mut self, name: RStr<'_>, delta: u64) {
        *self.counters.entry(name.as_str().to_owned()).or_default() += delta;
    }
    fn gauge(&mut self, name: RStr<'_>, value: i64) {
        self.gauges.insert(name.as_str().to_owned(), value);
    }
    fn get_resource(&mut self, request: ResourceRequest) -> RResult<(), HostError> {
        let key = format!("{}/{}", request.path, request.name);
        if let Some(refusal) = self.resource_refusals.get(&key) {
            return RResult::RErr(refusal.clone());
        }
        self.resource_requests.push(request);
        RResult::ROk(())
    }
    fn send_resource_body(&mut self) {
        let body = self.resource_body.clone();
        self.written.extend_from_slice(&body);
    }
    fn describe_source(&mut self, name: RStr<'_>, description: RStr<'_>) {
        self.source_descriptions
            .push((name.as_str().to_owned(), description.as_str().to_owned()));
    }
    fn is_secure(&self) -> bool {
        self.secure
    }
    fn open_tunnel(&mut self, cookie: RStr<'_>) -> RResult<(), HostError> {
        if self.tunnels.iter().any(|open| open == cookie.as_str()) {
            return RResult::RErr(HostError::new(
                ErrorCode::INVALID_STATE,
                "tunnel already open",
            ));
        }
        self.opened_tunnels.push(cookie.as_str().to_owned());
        self.tunnels.push(cookie.as_str().to_owned());
        RResult::ROk(())
    }
    fn feed_tunnel(&mut self, cookie: RStr<'_>, data: RSlice<'_, u8>) -> RResult<(), HostError> {
        if !self.tunnels.iter().any(|open| open == cookie.as_str()) {
            return RResult::RErr(HostError::new(ErrorCode::NOT_FOUND, "no such tunnel"));
        }
        self.tunnel_feeds
            .push((cookie.as_str().to_owned(), data.as_slice().to_vec()));
        RResult::ROk(())
    }
    fn close_tunnel(&mut self, cookie: RStr<'_>) {
        self.tunnels.retain(|open| open != cookie.as_str());
        self.closed_tunnels.push(cookie.as_str().to_owned());
    }
    fn hand_over(&mut self, plugin: RStr<'_>, data: RSlice<'_, u8>) -> RResult<(), HostError> {
        if self.handed_over.is_some() {
            return RResult::RErr(HostError::new(
                ErrorCode::INVALID_STATE,
                "already handed over",
            ));
        }
        self.handed_over = Some((plugin.as_str().to_owned(), data.as_slice().to_vec()));
        RResult::ROk(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IDLE: TimerId = TimerId::new(3);

    /// Arms its idle timer on open and closes when it fires.
    struct Idle;

    impl Session for Idle {
        fn on_open(&mut self, host: &mut Host<'_>) {
            host.set_timer(IDLE, Duration::from_millis(1500));
        }
        fn on_data(&mut self, _host: &mut Host<'_>, _data: &[u8]) {}
        fn on_timer_fired(&mut self, host: &mut Host<'_>, timer: TimerId) {
            if timer == IDLE {
                host.close();
            }
        }
    }

    #[test]
    fn timers_are_read_and_fired_by_their_ids() {
        let mut mock = MockHost::new();
        let mut session = Idle;
        mock.run(|host| session.on_open(host));
        assert_eq!(mock.timer(IDLE), Some(Duration::from_millis(1500)));
        assert_eq!(
            mock.timer(3),
            Some(Duration::from_millis(1500)),
            "same id as u64"
        );
        assert_eq!(mock.timer(4), None);

        mock.fire(&mut session, 4);
        assert!(!mock.closed, "not its timer");
        mock.fire(&mut session, IDLE);
        assert!(mock.closed);
        assert_eq!(mock.timer(IDLE), None, "disarmed when it fired");
    }

    #[test]
    fn the_mock_session_has_parseable_addresses() {
        let mut mock = MockHost::new();
        let (peer, local) = mock.run(|host| (host.peer_addr(), host.local_addr()));
        assert_eq!(peer, Some("127.0.0.1:50000".parse().unwrap()));
        assert_eq!(local.map(|local| local.port()), Some(8080));
    }
}

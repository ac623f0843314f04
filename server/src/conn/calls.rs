//! What a plugin session asks of the host during a call ([`HostCalls`]): each request is
//! checked (admission, the point table, the play decisions) and carried out on the
//! connection's parts. Refusals are logged here and handed to the plugin as `HostError`, the
//! ABI's answer.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ferrocast_plugin_api::host::HostCalls;
use ferrocast_plugin_api::{
    ByteRange, ErrorCode, HostError, LogLevel, PlayInfo, PointInfo, ResourceRequest, SessionInfo,
    TransportInfo, TransportRequest,
};
use tokio::time::Instant;
use tracing::{debug, error, info, warn};

use super::connection::{point_of, Connection};
use super::media::{FileCursor, LiveCursor, Media, PacedFile};
use super::play::{self, FilePlay, LivePlay, PlayRefusal};
use super::publisher::{PublishRefusal, Publisher};
use super::transports::{connection_ips, TransportRefusal};
use crate::access::Action;
use crate::events;
use crate::media::index::FileIndex;
use crate::media::pacer::FilePacer;
use crate::media::rtp::RtpPacketizer;
use crate::points::{LiveStream, PointMedia, Resolved, RtpStart};
use crate::random::random_u32;
use crate::transport::{transport_plugin_for, Transport};

impl Connection<'_> {
    /// Resolve `path` for playing, after admission and the play rules; a refusal is logged.
    fn resolve_playable(&self, path: &str) -> Result<(PointInfo, Resolved), HostError> {
        if let Err(error) = self.admit(point_of(path)) {
            self.refuse("play", path, &error);
            return Err(error);
        }
        // Before resolving: a refused player learns nothing about the point's state.
        self.check_access(Action::Play, point_of(path))?;
        let found = {
            let points = self.shared.points.load();
            points
                .resolve_playable(self.plugin, path)
                .and_then(|found| {
                    if let Resolved::Live(stream) = &found.1 {
                        self.check_point_capacity(&points, &found.0.name, stream)?;
                    }
                    Ok(found)
                })
        };
        found.inspect_err(|error| self.refuse("play", path, error))
    }

    /// A new client of a live point within its `max_clients` and `max_bandwidth`? A session
    /// already playing the stream is not counted twice. A refusal is counted and logged
    /// (rate-limited) as CONNECTION_REFUSED.
    fn check_point_capacity(
        &self,
        points: &crate::points::PointRegistry,
        name: &str,
        stream: &Arc<LiveStream>,
    ) -> Result<(), HostError> {
        let Some(point) = points.get(name) else {
            return Ok(());
        };
        let playing = self.media.as_ref().and_then(Media::live_stream);
        if point.limits == crate::config::PointLimits::default()
            || playing.is_some_and(|live| Arc::ptr_eq(live, stream))
        {
            return Ok(());
        }
        let status = stream.status();
        let refusal = match play::point_capacity(
            name,
            point.limits,
            status.clients as u64,
            status.ingest_bits_per_second,
        ) {
            Ok(()) => return Ok(()),
            Err(refusal) => refusal,
        };
        self.shared.gate.count_refusal();
        if let Some(count) = self.shared.gate.note_refusal(std::time::Instant::now()) {
            warn!(event = events::CONNECTION_REFUSED, point = %name, since_last_line = count, "{refusal}");
        }
        Err(refusal.into())
    }

    /// Check the access rules for `action` on `point` against what the client presented
    /// with this request; a refusal is logged with the peer and the reason, never a secret.
    fn check_access(&self, action: Action, point: &str) -> Result<(), HostError> {
        let peer = peer_ip(&self.info.peer);
        let checked = self
            .shared
            .access
            .check(action, point, peer, &self.credentials);
        let Err(denial) = checked else {
            return Ok(());
        };
        let (peer, credentials) = (&self.info.peer, self.credentials.kind.as_str());
        match action {
            Action::Publish => {
                warn!(event = events::PUBLISH_REFUSED, point, %peer, credentials, reason = denial.reason(), "publish refused: {denial}")
            }
            Action::Play => {
                warn!(event = events::PLAY_REFUSED, point, %peer, credentials, reason = denial.reason(), "play refused: {denial}")
            }
        }
        Err(denial.into())
    }

    /// Log the refusal of `action` on `path`, and hand it to the plugin.
    fn refused<T>(
        &self,
        action: &str,
        path: &str,
        error: impl Into<HostError>,
    ) -> Result<T, HostError> {
        let error = error.into();
        self.refuse(action, path, &error);
        Err(error)
    }

    /// Join a live point: its current GOP goes out after whatever the plugin writes in this
    /// call, then the ring. Returns where an RTP client starts.
    fn join_live(&mut self, stream: Arc<LiveStream>, rtp: bool) -> RtpStart {
        let mut join = stream.join();
        self.pending_media = std::mem::take(&mut join.backlog);
        let start = join.rtp;
        let span = self.span.clone();
        self.media = Some(Media::Live(LiveCursor::new(stream, join, rtp, span)));
        start
    }

    /// The time index of an on-demand file, if the background build has it ready; a file
    /// still being indexed is refused with a hint to retry.
    fn file_index(&self, file: &Path) -> Result<Arc<FileIndex>, HostError> {
        self.shared.points.load().file_index(file).ready_for_play()
    }

    /// Open `file` to be paced onto the transports from `at`, replacing what plays. RTP
    /// sequence numbers run on from the session's previous file, so a seek looks like one
    /// continuous RTP stream.
    fn open_paced(
        &mut self,
        path: &str,
        file: &Path,
        at: Duration,
    ) -> Result<Box<PacedFile>, HostError> {
        let index = match self.file_index(file) {
            Ok(index) => index,
            Err(error) => return self.refused("play", path, error),
        };
        let pacer = FilePacer::open(file, (*index).clone()).map_err(PlayRefusal::FileUnreadable)?;
        let packetizer = match self.media.take() {
            Some(Media::Paced(previous)) => previous.packetizer,
            _ => {
                let ssrc = self.transports.first_ssrc().unwrap_or_else(random_u32);
                RtpPacketizer::new(ssrc, random_u32() as u16)
            }
        };
        self.stop_media("replaced by a new play request");
        let mut paced = PacedFile {
            pacer,
            packetizer,
            timestamp_base: random_u32(),
            due: None,
        };
        paced.pacer.seek(at);
        Ok(Box::new(paced))
    }

    /// A file on the transports: resume the paused one, or open it at the requested place.
    fn play_paced(
        &mut self,
        path: &str,
        file: &Path,
        point: PointInfo,
        start_ms: u64,
    ) -> Result<PlayInfo, HostError> {
        let plan = play::plan_file_play(self.now_playing(), start_ms);
        let mut paced = match (plan, self.media.take()) {
            (FilePlay::Resume, Some(Media::Paced(paused))) => paused,
            (plan, previous) => {
                self.media = previous;
                let at = match plan {
                    FilePlay::Open { at } => at,
                    FilePlay::Resume => Duration::ZERO,
                };
                self.open_paced(path, file, at)?
            }
        };
        let play = paced.start(point, std::time::Instant::now());
        self.media = Some(Media::Paced(paced));
        Ok(play)
    }

    /// Which transport plugin carries `request` on `point`, once it is enabled there and has
    /// accepted the request.
    fn transport_plugin_accepting(
        &self,
        request: &TransportRequest,
        point: &str,
        protocols: &[String],
    ) -> Result<&'static str, HostError> {
        let Some(transport_plugin) = transport_plugin_for(request.kind) else {
            return Err(TransportRefusal::Unsupported { kind: request.kind }.into());
        };
        let enabled_on_point = protocols.iter().any(|p| p == transport_plugin);
        let plugins = self.shared.plugins.load();
        let Some(plugin) = plugins.get(transport_plugin).filter(|_| enabled_on_point) else {
            return Err(TransportRefusal::NotEnabled {
                transport_plugin,
                point: point.to_owned(),
            }
            .into());
        };
        plugin
            .instance
            .validate_transport(request.clone(), &self.info.peer)?;
        Ok(transport_plugin)
    }

    /// Set up a transport for `request`; refusals are logged by the caller.
    fn open_transport(&mut self, request: &TransportRequest) -> Result<TransportInfo, HostError> {
        let path = request.path.as_str();
        self.admit(point_of(path))?;
        let points = self.shared.points.load();
        let (info, _) = points.resolve(self.plugin, path)?;
        self.check_access(Action::Play, &info.name)?;
        let point = points.get(&info.name);
        let protocols = point.map_or(&[][..], |p| &p.protocols[..]);
        let transport_plugin = self.transport_plugin_accepting(request, &info.name, protocols)?;
        let (local_ip, peer_ip) = connection_ips(&self.info.local, &self.info.peer)?;
        let id = self.transports.next_id(self.info.id);
        let ssrc = match point.map(|p| &p.media) {
            Some(PointMedia::Live(stream)) => stream.rtp_start().ssrc,
            _ => random_u32(),
        };
        let transport = Transport::open(id, transport_plugin, request, local_ip, peer_ip, ssrc)?;
        self.record_point(&info.name);
        info!(point = %info.name, transport = %transport.info.kind.as_str(), transport_plugin, server_rtp_port = transport.info.server_rtp_port, "transport set up");
        let described = transport.info.clone();
        self.transports.add(transport, &info.name, transport_plugin);
        self.transports_changed();
        if !self.transports.counted_on(transport_plugin) {
            if let Some(plugin) = self.shared.plugins.load().get(transport_plugin) {
                let counted = plugin.generation.session_started();
                self.transports.count_on(transport_plugin, counted);
            }
        }
        self.shared
            .sessions
            .set_transports(self.info.id, self.transports.plugins());
        Ok(described)
    }
}

impl PacedFile {
    /// Start (or resume) pacing at `now`; where the client's RTP starts.
    fn start(&mut self, point: PointInfo, now: std::time::Instant) -> PlayInfo {
        let position = self.pacer.position(now);
        self.pacer.start(now);
        self.due = None;
        PlayInfo {
            point,
            start_ms: position.as_millis() as u64,
            rtp_seq: self.packetizer.next_seq(),
            rtp_time: self.timestamp_at(position),
        }
    }
}

/// The peer's address; a peer the host cannot parse (never a TCP or UDP peer) counts as
/// unspecified, which no allow-list or loopback rule admits.
fn peer_ip(peer: &str) -> std::net::IpAddr {
    peer.parse::<std::net::SocketAddr>()
        .map(|address| address.ip())
        .unwrap_or(std::net::IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED))
}

/// Where a live point's RTP starts, for the reply to PLAY.
fn live_play_info(point: PointInfo, start: RtpStart) -> PlayInfo {
    PlayInfo {
        point,
        start_ms: 0,
        rtp_seq: start.seq,
        rtp_time: start.timestamp,
    }
}

impl HostCalls for Connection<'_> {
    fn write(&mut self, data: &[u8]) {
        self.answered = true;
        self.out.push(bytes::Bytes::copy_from_slice(data));
    }

    fn close(&mut self) {
        self.close_requested = true;
    }

    fn set_timer(&mut self, timer: u64, after: Duration) {
        self.timers.set(timer, Instant::now() + after);
    }

    fn cancel_timer(&mut self, timer: u64) {
        self.timers.cancel(timer);
    }

    fn lookup(&self, path: &str) -> Result<PointInfo, HostError> {
        self.check_refused()?;
        let (info, _) = self.shared.points.load().resolve(self.plugin, path)?;
        self.admit(&info.name)?;
        self.check_access(Action::Play, &info.name)?;
        Ok(info)
    }

    fn play(&mut self, path: &str, range: ByteRange) -> Result<PointInfo, HostError> {
        let (info, resolved) = self.resolve_playable(path)?;
        self.stop_media("replaced by a new play request");
        match resolved {
            Resolved::Live(stream) => {
                self.join_live(stream, false);
            }
            Resolved::File { path: file, size } => match play::file_range(range, size) {
                Ok((start, end)) => {
                    self.media = Some(Media::File(FileCursor::new(file, start, end)))
                }
                Err(refusal) => return self.refused("play", path, refusal),
            },
        }
        self.record_point(&info.name);
        info!(event = events::PLAY, point = %info.name, item = %info.item, kind = info.kind.as_str(), start = range.start, "play started");
        self.playing = Some(path.to_owned());
        self.answered = true;
        self.play_accepted = Some(std::time::Instant::now());
        Ok(info)
    }

    fn stop(&mut self) {
        self.stop_media("stopped by the client");
    }

    fn publish(&mut self, path: &str) -> Result<PointInfo, HostError> {
        if self.publisher.is_some() {
            return self.refused("publish", path, PublishRefusal::AlreadyPublishing);
        }
        if let Err(error) = self.admit(point_of(path)) {
            return self.refused("publish", path, error);
        }
        let (mut info, resolved) = match self.shared.points.load().resolve(self.plugin, path) {
            Ok(found) => found,
            Err(error) => return self.refused("publish", path, error),
        };
        let Resolved::Live(stream) = resolved else {
            let point = info.name.to_string();
            return self.refused("publish", path, PublishRefusal::OnDemand { point });
        };
        self.check_access(Action::Publish, &info.name)?;
        // An encoder that proved its credentials may reclaim the point from a stale publisher;
        // where the point takes anyone, nobody may displace anyone.
        let authenticated = self.shared.access.credentials_required(&info.name);
        let start = match authenticated {
            true => Publisher::take_over,
            false => Publisher::start,
        };
        let publisher = match start(stream, self.info.id, Instant::now()) {
            Ok(publisher) => publisher,
            Err(refusal) => return self.refused("publish", path, refusal),
        };
        self.record_point(&info.name);
        info!(event = events::PUSH_START, point = %info.name, "encoder started publishing");
        info.live = true;
        self.publisher = Some(publisher);
        self.answered = true;
        Ok(info)
    }

    fn push_media(&mut self, data: &[u8]) -> Result<(), HostError> {
        let Some(publisher) = &mut self.publisher else {
            return Err(PublishRefusal::NotPublishing.into());
        };
        let now = Instant::now();
        let pushed = if self.reading {
            publisher.push_more(self.info.id, data, now)
        } else {
            publisher.push(self.info.id, data, now)
        };
        match pushed {
            Ok(_) => Ok(()),
            Err(refusal) => {
                // A reload that let go of this encoder says why, before the push is refused.
                if matches!(refusal, PublishRefusal::Displaced) {
                    self.recheck();
                }
                Err(refusal.into())
            }
        }
    }

    /// The connection's span names the plugin, session and peer.
    fn log(&self, level: LogLevel, message: &str) {
        // A refused connection's answer is summarised by CONNECTION_REFUSED; a flood of
        // them must not write a line each.
        let level = if self.refused.is_some() {
            LogLevel::DEBUG
        } else {
            level
        };
        if matches!(level, LogLevel::ERROR | LogLevel::WARN) {
            // Per-request warnings: a flood of bad requests must not flood the log.
            let verdict = crate::warn_limit::admit_plugin_warning();
            if verdict.suppressed_before > 0 {
                warn!(
                    event = events::WARNINGS_SUPPRESSED,
                    suppressed = verdict.suppressed_before,
                    window_s = crate::warn_limit::WINDOW.as_secs(),
                    "suppressed {} similar warnings",
                    verdict.suppressed_before
                );
            }
            if !verdict.log {
                return;
            }
        }
        match level {
            LogLevel::ERROR => error!(event = events::PLUGIN_MESSAGE, "{message}"),
            LogLevel::WARN => warn!(event = events::PLUGIN_MESSAGE, "{message}"),
            LogLevel::INFO => info!("{message}"),
            _ => debug!("{message}"),
        }
    }

    fn session(&self) -> SessionInfo {
        self.info.clone()
    }

    fn setup_transport(&mut self, request: TransportRequest) -> Result<TransportInfo, HostError> {
        let opened = self
            .open_transport(&request)
            .or_else(|error| self.refused("setup", &request.path, error))?;
        self.answered = true;
        Ok(opened)
    }

    fn teardown_transport(&mut self, transport: u64) {
        self.transports.remove(transport);
        self.transports_changed();
        self.shared
            .sessions
            .set_transports(self.info.id, self.transports.plugins());
        if self.transports.is_empty() && play::ends_with_last_transport(self.now_playing()) {
            self.stop_media("transport torn down");
        }
    }

    fn play_transports(&mut self, path: &str, start_ms: u64) -> Result<PlayInfo, HostError> {
        if self.transports.is_empty() {
            return Err(PlayRefusal::NoTransport.into());
        }
        let (point, resolved) = self.resolve_playable(path)?;
        let play = match resolved {
            Resolved::Live(stream) => {
                match play::plan_live_play(self.now_playing(), &point.name, start_ms)? {
                    // PLAY on a live session that already plays is a no-op.
                    LivePlay::AlreadyPlaying => {
                        let playing = self.media.as_ref().and_then(Media::live_stream);
                        let start = playing.unwrap_or(&stream).rtp_start();
                        return Ok(live_play_info(point, start));
                    }
                    LivePlay::Start => {
                        self.stop_media("replaced by a new play request");
                        let start = self.join_live(stream, true);
                        live_play_info(point, start)
                    }
                }
            }
            Resolved::File { path: file, .. } => self.play_paced(path, &file, point, start_ms)?,
        };
        self.record_point(&play.point.name);
        self.playing = Some(path.to_owned());
        self.transports.start_reports(Instant::now());
        self.answered = true;
        info!(event = events::PLAY, point = %play.point.name, item = %play.point.item, kind = play.point.kind.as_str(), start_ms = play.start_ms, rtp_seq = play.rtp_seq, "play started on transports");
        Ok(play)
    }

    fn play_framed(&mut self, path: &str, range: ByteRange) -> Result<PointInfo, HostError> {
        self.play_framed_media(path, range)
    }

    fn count(&mut self, name: &str, delta: u64) {
        self.counters.count(name, delta);
    }

    fn gauge(&mut self, name: &str, value: i64) {
        self.counters.gauge(name, value);
    }

    fn get_resource(&mut self, request: ResourceRequest) -> Result<(), HostError> {
        self.check_refused()?;
        let path = request.path.as_str();
        if let Err(error) = self.admit(point_of(path)) {
            return self.refused("play", path, error);
        }
        self.check_access(Action::Play, point_of(path))?;
        if self.resource.busy() {
            return Err(HostError::new(
                ErrorCode::INVALID_STATE,
                "a resource request is already in progress on this connection",
            ));
        }
        let points = self.shared.points.load();
        let answer = self.shared.hls.request(
            &points,
            path,
            request.name.as_str(),
            request.msn,
            request.part,
        )?;
        self.record_point(point_of(path));
        self.answered = true;
        self.resource.start(answer);
        Ok(())
    }

    fn send_resource_body(&mut self) {
        if let Some(body) = &self.resource.body {
            for piece in body {
                self.out.push(piece.clone());
            }
        }
    }

    fn is_secure(&self) -> bool {
        self.secure
    }

    fn present_credentials(&mut self, credentials: ferrocast_plugin_api::Credentials) {
        self.credentials = credentials;
    }

    fn describe_source(&mut self, name: &str, description: &str) {
        let Some(publisher) = &self.publisher else {
            return;
        };
        let source = crate::points::SourceDescription::new(name, description);
        let stream = publisher.stream();
        if stream.describe_source(self.info.id, source.clone()) {
            info!(point = %stream.name, source_name = ?source.name, source_description = ?source.description, "the encoder described its stream");
        }
    }

    fn pause_transports(&mut self) -> Result<u64, HostError> {
        let Some(Media::Paced(paced)) = &mut self.media else {
            return Err(play::pause_refusal(self.now_playing()).into());
        };
        let position = paced.pacer.pause(std::time::Instant::now());
        paced.due = None;
        info!(position_ms = position.as_millis() as u64, "paused");
        Ok(position.as_millis() as u64)
    }

    fn open_tunnel(&mut self, cookie: &str) -> Result<(), HostError> {
        self.check_refused()?;
        if self.tunnel.is_some() {
            return Err(HostError::new(
                ErrorCode::INVALID_STATE,
                "this connection already carries a tunnel",
            ));
        }
        let client = peer_ip(&self.info.peer);
        let end = self
            .shared
            .tunnels
            .open(cookie, self.info.id, client)
            .map_err(|error| error.to_host_error())?;
        info!(tunnels = self.shared.tunnels.len(), "HTTP tunnel opened");
        self.tunnel = Some(end);
        self.answered = true;
        Ok(())
    }

    fn feed_tunnel(&mut self, cookie: &str, data: &[u8]) -> Result<(), HostError> {
        self.check_refused()?;
        let client = peer_ip(&self.info.peer);
        self.shared
            .tunnels
            .feed(cookie, client, data)
            .map_err(|error| error.to_host_error())?;
        // The POST side never answers; feeding its tunnel is its valid request.
        self.answered = true;
        Ok(())
    }

    fn hand_over(&mut self, plugin: &str, data: &[u8]) -> Result<(), HostError> {
        let busy = self.pending_handover.is_some()
            || self.media.is_some()
            || self.publisher.is_some()
            || self.tunnel.is_some()
            || !self.out.is_empty();
        if busy {
            return Err(HostError::new(
                ErrorCode::INVALID_STATE,
                "a session that started something cannot hand its connection over",
            ));
        }
        let plugins = self.shared.plugins.load();
        let target = plugins.get(plugin).filter(|target| {
            target.name != self.plugin
                && target.generation.library.info.kind == ferrocast_plugin_api::PluginKind::CONTROL
        });
        let Some(target) = target else {
            return Err(HostError::new(
                ErrorCode::NOT_FOUND,
                format!("no control plugin `{plugin}` is enabled on this server"),
            ));
        };
        self.pending_handover = Some(crate::tunnels::Handover {
            plugin: Arc::clone(target),
            data: data.to_vec(),
        });
        Ok(())
    }

    fn close_tunnel(&mut self, cookie: &str) {
        let client = peer_ip(&self.info.peer);
        if self.shared.tunnels.close(cookie, client) {
            info!("HTTP tunnel closed by its request side");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::points::PointRegistry;
    use crate::reload::control::DrainTarget;
    use crate::state::{PluginTable, Shared};
    use ferrocast_plugin_api::{ErrorCode, RESUME};
    use tracing::Span;

    fn shared() -> Shared {
        Shared::new(
            PointRegistry::default(),
            Duration::from_secs(10),
            PluginTable::new(),
        )
    }

    fn info() -> SessionInfo {
        SessionInfo {
            id: 7,
            peer: "127.0.0.1:40000".into(),
            local: "127.0.0.1:8080".into(),
        }
    }

    #[tokio::test]
    async fn a_tunnel_is_fed_from_another_connection_of_its_client_and_goes_with_its_get() {
        let shared = shared();
        let mut get = Connection::new(&shared, "rtsp", info(), Span::none());
        let mut post_info = info();
        post_info.id = 8;
        post_info.peer = "127.0.0.1:40001".into();
        let mut post = Connection::new(&shared, "rtsp", post_info, Span::none());
        assert_eq!(
            post.feed_tunnel("c1", b"").unwrap_err().code,
            ErrorCode::NOT_FOUND
        );
        get.open_tunnel("c1").unwrap();
        assert_eq!(
            get.open_tunnel("c2").unwrap_err().code,
            ErrorCode::INVALID_STATE,
            "one tunnel per connection"
        );
        post.feed_tunnel("c1", b"").unwrap();
        assert!(post.answered, "feeding is the POST's valid request");
        post.feed_tunnel("c1", b"OPTIONS").unwrap();
        let fed = get.tunnel.as_mut().unwrap().recv().await;
        assert_eq!(fed.as_deref(), Some(&b"OPTIONS"[..]));
        let mut stranger_info = info();
        stranger_info.peer = "192.0.2.9:40000".into();
        let mut stranger = Connection::new(&shared, "rtsp", stranger_info, Span::none());
        assert_eq!(
            stranger.feed_tunnel("c1", b"x").unwrap_err().code,
            ErrorCode::FORBIDDEN
        );
        drop(get);
        assert!(shared.tunnels.is_empty(), "the tunnel goes with its GET");
    }

    #[test]
    fn a_refused_connection_opens_and_feeds_no_tunnel() {
        let shared = shared();
        let mut conn = Connection::new(&shared, "rtsp", info(), Span::none());
        conn.refused = Some(crate::limits::Refusal::Connections);
        assert_eq!(
            conn.open_tunnel("c1").unwrap_err().code,
            ErrorCode::OVER_CAPACITY
        );
        assert_eq!(
            conn.feed_tunnel("c1", b"x").unwrap_err().code,
            ErrorCode::OVER_CAPACITY
        );
    }

    #[test]
    fn a_connection_is_handed_over_only_to_an_enabled_control_plugin() {
        let shared = shared();
        let mut conn = Connection::new(&shared, "http", info(), Span::none());
        let refused = conn
            .hand_over("rtsp", b"GET / HTTP/1.1\r\n\r\n")
            .unwrap_err();
        assert_eq!(refused.code, ErrorCode::NOT_FOUND);
        assert!(refused.message.contains("`rtsp`"), "{}", refused.message);
        assert!(conn.pending_handover.is_none());
    }

    #[test]
    fn a_connection_refused_by_a_limit_gets_over_capacity_for_everything() {
        let shared = shared();
        let mut conn = Connection::new(&shared, "http", info(), Span::none());
        conn.refused = Some(crate::limits::Refusal::ConnectionsPerIp);
        for error in [
            conn.lookup("live").unwrap_err(),
            conn.play("live", ByteRange::ALL).unwrap_err(),
            conn.publish("live").unwrap_err(),
        ] {
            assert_eq!(error.code, ferrocast_plugin_api::ErrorCode::OVER_CAPACITY);
            assert!(error.message.contains("max_connections_per_ip"), "{error}");
        }
        assert!(!conn.answered, "a refusal is no valid request");
        conn.write(b"RTSP/1.0 453 Not Enough Bandwidth\r\n\r\n");
        assert!(
            conn.answered,
            "the answer went out: the connection may close"
        );
    }

    #[test]
    fn a_session_of_a_plugin_drained_when_it_connected_may_start_nothing() {
        let shared = shared();
        shared.set_drain(DrainTarget::Plugin, "http", true);
        let mut conn = Connection::new(&shared, "http", info(), Span::none());
        // Taking the plugin out of the drain later does not change that.
        shared.set_drain(DrainTarget::Plugin, "http", false);
        let played = conn.play("live", ByteRange::ALL).unwrap_err();
        assert_eq!(played.code, ErrorCode::DRAINING);
        let published = conn.publish("live").unwrap_err();
        assert_eq!(published.code, ErrorCode::DRAINING);
    }

    #[test]
    fn an_unknown_point_is_refused_without_touching_the_session() {
        let shared = shared();
        let mut conn = Connection::new(&shared, "http", info(), Span::none());
        let refused = conn.play("nowhere", ByteRange::ALL).unwrap_err();
        assert_eq!(refused.code, ErrorCode::NOT_FOUND);
        assert!(conn.media.is_none() && conn.playing.is_none());
    }

    #[test]
    fn transport_requests_need_a_transport_and_something_playing() {
        let shared = shared();
        let mut conn = Connection::new(&shared, "rtsp", info(), Span::none());
        let played = conn.play_transports("live", RESUME).unwrap_err();
        assert_eq!(played.code, ErrorCode::INVALID_STATE);
        assert!(played.message.contains("SETUP comes before PLAY"));
        let paused = conn.pause_transports().unwrap_err();
        assert_eq!(paused.code, ErrorCode::INVALID_STATE);
        let pushed = conn.push_media(&[0x47; 188]).unwrap_err();
        assert_eq!(pushed.code, ErrorCode::INVALID_STATE);
    }

    #[test]
    fn writes_are_queued_and_timers_armed_and_cancelled() {
        let shared = shared();
        let mut conn = Connection::new(&shared, "http", info(), Span::none());
        conn.write(b"HTTP/1.1 200 OK\r\n\r\n");
        conn.write(b"");
        assert_eq!(conn.out.queued_bytes(), 19);
        conn.set_timer(1, Duration::from_secs(5));
        assert!(conn.timers.next().is_some());
        conn.cancel_timer(1);
        assert_eq!(conn.timers.next(), None);
        conn.close();
        assert!(conn.close_requested);
    }

    #[test]
    fn a_reload_that_disabled_the_plugin_ends_the_session() {
        // The plugin table is empty: as after a reload that disabled `http`.
        let shared = shared();
        let mut conn = Connection::new(&shared, "http", info(), Span::none());
        conn.recheck();
        assert!(conn.close_requested);
    }

    fn point(name: &str, source: crate::config::PointSource) -> crate::config::PointConfig {
        let kind = match source {
            crate::config::PointSource::Push => crate::config::PointKind::Broadcast,
            _ => crate::config::PointKind::OnDemand,
        };
        crate::config::PointConfig {
            name: name.into(),
            kind,
            source,
            protocols: vec!["http".into()],
            reconnect_grace: Duration::from_secs(5),
            source_timeout: Duration::from_secs(5),
            limits: crate::config::PointLimits::default(),
            line: 1,
            publish: None,
            play: None,
            timeline: crate::config::TimelineMode::default(),
            udp_join_rate: crate::config::DEFAULT_UDP_JOIN_RATE,
        }
    }

    /// A point `live` (pushed) and a point `vod` (a 1880-byte file), both served by http.
    fn shared_with_points(file: &Path) -> Shared {
        let points = [
            point("live", crate::config::PointSource::Push),
            point("vod", crate::config::PointSource::File(file.to_owned())),
        ];
        Shared::new(
            PointRegistry::from_config(&points, 64),
            Duration::from_secs(10),
            PluginTable::new(),
        )
    }

    fn ts_file() -> tempfile::NamedTempFile {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), [0x47u8; 1880]).unwrap();
        file
    }

    #[tokio::test]
    async fn a_draining_point_still_serves_its_publisher_but_refuses_newcomers() {
        let file = ts_file();
        let shared = shared_with_points(file.path());
        let mut encoder = Connection::new(&shared, "http", info(), Span::none());
        let published = encoder.publish("live").unwrap();
        assert!(published.live);
        encoder.push_media(&[0x47; 188]).unwrap();
        shared.set_drain(DrainTarget::Point, "live", true);
        assert!(encoder.lookup("live").is_ok(), "already attached");
        let mut player = Connection::new(&shared, "http", info(), Span::none());
        let refused = player.play("live", ByteRange::ALL).unwrap_err();
        assert_eq!(refused.code, ErrorCode::DRAINING);
        shared.set_drain(DrainTarget::Point, "live", false);
        player.play("live", ByteRange::ALL).unwrap();
        assert_eq!(player.playing.as_deref(), Some("live"));
        assert!(player.wants_live());
    }

    // Resolving the file point indexes it on a blocking section, which needs this flavour.
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_second_publish_and_a_publish_to_a_file_are_refused() {
        let file = ts_file();
        let shared = shared_with_points(file.path());
        let mut encoder = Connection::new(&shared, "http", info(), Span::none());
        encoder.publish("live").unwrap();
        let again = encoder.publish("live").unwrap_err();
        assert_eq!(again.code, ErrorCode::INVALID_STATE);
        let mut other = Connection::new(&shared, "http", info(), Span::none());
        assert_eq!(
            other.publish("live").unwrap_err().code,
            ErrorCode::ALREADY_PUBLISHING
        );
        assert_eq!(
            other.publish("vod").unwrap_err().code,
            ErrorCode::WRONG_KIND
        );
    }

    #[tokio::test]
    async fn a_reload_that_took_the_plugin_away_frees_the_point_at_once() {
        let file = ts_file();
        let shared = shared_with_points(file.path());
        let mut encoder = Connection::new(&shared, "http", info(), Span::none());
        encoder.publish("live").unwrap();
        // The plugin table is empty, as after a reload that disabled http.
        encoder.recheck();
        assert!(encoder.close_requested && encoder.publisher.is_none());
        let mut next = Connection::new(&shared, "http", info(), Span::none());
        assert!(
            next.publish("live").is_ok(),
            "the point takes its next source"
        );
    }

    #[test]
    fn a_file_plays_its_range_and_a_range_outside_it_is_refused() {
        let file = ts_file();
        let shared = shared_with_points(file.path());
        let mut conn = Connection::new(&shared, "http", info(), Span::none());
        let played = conn
            .play(
                "vod",
                ByteRange {
                    start: 188,
                    end: 376,
                },
            )
            .unwrap();
        assert_eq!(played.size, 1880);
        assert!(matches!(conn.media, Some(Media::File(_))));
        let refused = conn
            .play(
                "vod",
                ByteRange {
                    start: 5000,
                    end: 6000,
                },
            )
            .unwrap_err();
        assert_eq!(refused.code, ErrorCode::BAD_RANGE);
        assert!(
            conn.media.is_none(),
            "the refused request replaced the old one"
        );
    }
    fn peer(address: &str) -> SessionInfo {
        SessionInfo {
            peer: address.into(),
            ..info()
        }
    }

    #[tokio::test]
    async fn by_default_only_this_machine_publishes_and_anyone_plays() {
        let file = ts_file();
        let shared = shared_with_points(file.path());
        let mut remote = Connection::new(&shared, "http", peer("192.0.2.1:5000"), Span::none());
        let refused = remote.publish("live").unwrap_err();
        assert_eq!(refused.code, ErrorCode::FORBIDDEN);
        assert!(remote.publisher.is_none());
        let mut local = Connection::new(&shared, "http", peer("[::1]:5000"), Span::none());
        local.publish("live").unwrap();
        assert!(remote.lookup("live").is_ok(), "players are public");
        remote.play("live", ByteRange::ALL).unwrap();
    }

    #[tokio::test]
    async fn play_rules_guard_lookup_play_and_transports() {
        use crate::access::{AccessPolicy, AddressList, PlayRule, PointRules};
        let file = ts_file();
        let shared = shared_with_points(file.path());
        let mut policy = AccessPolicy::default();
        let deny = AddressList(vec!["192.0.2.0/24".parse().unwrap()]);
        let play = PlayRule {
            deny,
            ..PlayRule::default()
        };
        let rules = PointRules {
            publish: None,
            play: Some(play),
        };
        policy.points.insert("live".into(), rules);
        shared.access.set_policy(policy);
        let mut denied = Connection::new(&shared, "http", peer("192.0.2.9:5000"), Span::none());
        assert_eq!(
            denied.lookup("live").unwrap_err().code,
            ErrorCode::FORBIDDEN
        );
        let played = denied.play("live", ByteRange::ALL).unwrap_err();
        assert_eq!(played.code, ErrorCode::FORBIDDEN);
        assert!(denied.media.is_none());
        let request = TransportRequest {
            path: "live".into(),
            kind: ferrocast_plugin_api::TransportKind::TCP_INTERLEAVED,
            client_rtp_port: 0,
            client_rtcp_port: 0,
            rtp_channel: 0,
            rtcp_channel: 1,
        };
        let setup = denied.setup_transport(request).unwrap_err();
        assert_eq!(setup.code, ErrorCode::FORBIDDEN);
        let mut encoder = Connection::new(&shared, "http", info(), Span::none());
        encoder.publish("live").unwrap();
        let mut other = Connection::new(&shared, "http", peer("198.51.100.1:5000"), Span::none());
        other.play("live", ByteRange::ALL).unwrap();
    }

    #[tokio::test]
    async fn a_key_is_checked_against_what_the_plugin_presented() {
        use crate::access::{secret, AccessPolicy, PointRules, PublishRule, Secret};
        let file = ts_file();
        let shared = shared_with_points(file.path());
        let mut policy = AccessPolicy::default();
        let rule = PublishRule::Protected {
            keys: vec![Secret::new(secret::hash("k3y").unwrap())],
            users: vec![],
            allow: None,
        };
        let rules = PointRules {
            publish: Some(rule),
            play: None,
        };
        policy.points.insert("live".into(), rules);
        shared.access.set_policy(policy);
        let mut encoder = Connection::new(&shared, "http", peer("192.0.2.1:5000"), Span::none());
        assert_eq!(
            encoder.publish("live").unwrap_err().code,
            ErrorCode::UNAUTHORIZED
        );
        encoder.present_credentials(ferrocast_plugin_api::Credentials::url_query("key=nope"));
        assert_eq!(
            encoder.publish("live").unwrap_err().code,
            ErrorCode::UNAUTHORIZED
        );
        encoder.present_credentials(ferrocast_plugin_api::Credentials::url_query("key=k3y"));
        encoder.publish("live").unwrap();
    }
}

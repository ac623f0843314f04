//! The tests' one RTSP/1.0 client: requests over one TCP connection, with the RTP and RTCP
//! that arrive interleaved on it handed to a [`FrameSink`]. Tests use it where ffmpeg's
//! command line cannot do what they check (PAUSE, ranged PLAY, exact sequence numbers, the
//! status of a refusal); the session watchers use it to set up the sessions they watch.
//!
//! It also speaks RTSP tunnelled over HTTP ([`RtspClient::connect_tunnel`]): answers and
//! media on a GET, requests base64-encoded on a POST.
//!
//! Every wait is bounded: a response has [`RESPONSE_TIMEOUT`] to arrive.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::head::{content_length, head_end, header, status_code};
use crate::timeline::is_timeout;

/// The longest a request waits for its response.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest a connection attempt takes.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the interleaved frames (`$`, channel, length, data) read off the connection go.
pub trait FrameSink {
    fn frame(&mut self, channel: u8, data: &[u8]);
}

/// A sink that drops every frame (a control connection whose media goes elsewhere).
impl FrameSink for () {
    fn frame(&mut self, _channel: u8, _data: &[u8]) {}
}

/// One RTSP response.
#[derive(Debug)]
pub struct RtspResponse {
    pub status: u16,
    pub head: String,
    pub body: String,
}

impl RtspResponse {
    pub fn header(&self, name: &str) -> Option<String> {
        header(&self.head, name)
    }

    /// Where a PLAY answer says the play starts, from its Range header (`npt=6.0-12.0`).
    pub fn range_start(&self) -> Option<f64> {
        self.header("range")?
            .trim_start_matches("npt=")
            .split('-')
            .next()?
            .parse()
            .ok()
    }
}

/// An RTSP exchange that failed: the method, the status the server answered (0 if it
/// answered nothing usable) and what it said (or what went wrong).
#[derive(Debug)]
pub struct RtspRefusal {
    pub method: String,
    pub status: u16,
    pub response: String,
}

/// One RTSP control connection. Requests carry the CSeq and, once the server gave one, the
/// session id. RTP received on channel 0 by [`Self::request`] and [`Self::receive_for`] is
/// kept in [`Self::rtp`]; other channels (RTCP) are counted in [`Self::other_frames`].
pub struct RtspClient {
    stream: TcpStream,
    /// The POST half of a tunnel: requests go there, base64-encoded.
    post: Option<TcpStream>,
    buffered: Vec<u8>,
    cseq: u32,
    session: Option<String>,
    /// RTP packets received on channel 0: (sequence number, timestamp, payload).
    pub rtp: Vec<(u16, u32, Vec<u8>)>,
    /// Interleaved frames on other channels (RTCP), or not RTP.
    pub other_frames: usize,
}

/// The client's own record of what arrived interleaved.
struct Recorder<'a> {
    rtp: &'a mut Vec<(u16, u32, Vec<u8>)>,
    other_frames: &'a mut usize,
}

impl FrameSink for Recorder<'_> {
    fn frame(&mut self, channel: u8, data: &[u8]) {
        match rtp_payload(data) {
            Some(payload) if channel == 0 => {
                let sequence = u16::from_be_bytes([data[2], data[3]]);
                let timestamp = u32::from_be_bytes([data[4], data[5], data[6], data[7]]);
                self.rtp.push((sequence, timestamp, payload.to_vec()));
            }
            _ => *self.other_frames += 1,
        }
    }
}

impl RtspClient {
    /// Connect to `address`; panics if that fails.
    pub fn connect(address: SocketAddr) -> Self {
        Self::try_connect(address)
            .unwrap_or_else(|refusal| panic!("connect RTSP to {address}: {refusal:?}"))
    }

    pub fn try_connect(address: SocketAddr) -> Result<Self, RtspRefusal> {
        let stream = TcpStream::connect_timeout(&address, CONNECT_TIMEOUT)
            .and_then(|stream| {
                stream.set_read_timeout(Some(RESPONSE_TIMEOUT))?;
                Ok(stream)
            })
            .map_err(|error| RtspRefusal {
                method: "connect".into(),
                status: 0,
                response: error.to_string(),
            })?;
        Ok(Self {
            stream,
            post: None,
            buffered: Vec::new(),
            cseq: 0,
            session: None,
            rtp: Vec::new(),
            other_frames: 0,
        })
    }

    /// RTSP over HTTP to `address`: a GET for `path` with `cookie` that must be answered
    /// `200` with the tunnel's content type, then a POST that carries the requests.
    pub fn connect_tunnel(address: SocketAddr, path: &str, cookie: &str) -> Self {
        let mut client = Self::connect(address);
        let get = format!("GET /{path} HTTP/1.1\r\nHost: {address}\r\nx-sessioncookie: {cookie}\r\nAccept: application/x-rtsp-tunnelled\r\nPragma: no-cache\r\nCache-Control: no-cache\r\n\r\n");
        client
            .stream
            .write_all(get.as_bytes())
            .expect("send the GET");
        let deadline = Instant::now() + RESPONSE_TIMEOUT;
        let end = loop {
            if let Some(end) = head_end(&client.buffered) {
                break end;
            }
            assert!(Instant::now() < deadline, "no answer to the tunnel GET");
            let open = read_into(&mut client.stream, &mut client.buffered).expect("read the GET");
            assert!(
                open,
                "the server closed the tunnel GET: {:?}",
                String::from_utf8_lossy(&client.buffered)
            );
        };
        let head = String::from_utf8_lossy(&client.buffered[..end]).into_owned();
        assert_eq!(status_code(&head), 200, "{head}");
        assert_eq!(
            header(&head, "content-type").as_deref(),
            Some("application/x-rtsp-tunnelled"),
            "{head}"
        );
        client.buffered.drain(..end);
        let mut post =
            TcpStream::connect_timeout(&address, CONNECT_TIMEOUT).expect("connect the POST");
        post.set_read_timeout(Some(RESPONSE_TIMEOUT))
            .expect("set the read timeout");
        post.write_all(post_head(address, path, cookie).as_bytes())
            .expect("send the POST head");
        client.post = Some(post);
        client
    }

    /// The POST half of a tunnel, to send raw bytes on it.
    pub fn tunnel_post(&mut self) -> &mut TcpStream {
        self.post.as_mut().expect("a tunnelled client")
    }

    /// The session id the server gave, without its parameters.
    pub fn session(&self) -> Option<&str> {
        self.session.as_deref()
    }

    /// Send a request and wait for its response, whatever its status, keeping the RTP that
    /// arrives meanwhile; panics if no response arrives.
    pub fn request(&mut self, method: &str, url: &str, headers: &[(&str, &str)]) -> RtspResponse {
        let mut recorder = Recorder {
            rtp: &mut self.rtp,
            other_frames: &mut self.other_frames,
        };
        exchange(
            (&mut self.stream, self.post.as_mut()),
            &mut self.buffered,
            &mut self.cseq,
            &mut self.session,
            (method, url, headers),
            &mut recorder,
        )
        .unwrap_or_else(|error| panic!("no RTSP response to {method} {url}: {error}"))
    }

    /// SETUP of `url`'s track 0 with RTP over this connection (`interleaved=0-1`).
    pub fn setup_interleaved(&mut self, url: &str) -> RtspResponse {
        self.request(
            "SETUP",
            &format!("{url}/trackID=0"),
            &[("Transport", "RTP/AVP/TCP;unicast;interleaved=0-1")],
        )
    }

    /// [`Self::setup_interleaved`], then PLAY from `range` (`npt=6.5-`; none: where the
    /// session is), each required to answer 200. The PLAY's answer.
    pub fn setup_and_play(&mut self, url: &str, range: Option<&str>) -> RtspResponse {
        let setup = self.setup_interleaved(url);
        assert_eq!(setup.status, 200, "SETUP {url}: {setup:?}");
        let range: Vec<(&str, &str)> = range.map(|r| ("Range", r)).into_iter().collect();
        let play = self.request("PLAY", &format!("{url}/"), &range);
        assert_eq!(play.status, 200, "PLAY {url}: {play:?}");
        play
    }

    /// Send a request and require a 200; interleaved frames that arrive first go to `sink`.
    pub fn request_ok(
        &mut self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        sink: &mut impl FrameSink,
    ) -> Result<RtspResponse, RtspRefusal> {
        let refused = |status: u16, response: String| RtspRefusal {
            method: method.to_owned(),
            status,
            response,
        };
        let response = exchange(
            (&mut self.stream, self.post.as_mut()),
            &mut self.buffered,
            &mut self.cseq,
            &mut self.session,
            (method, url, headers),
            sink,
        )
        .map_err(|error| refused(0, error.to_string()))?;
        if response.status != 200 {
            return Err(refused(response.status, response.head + &response.body));
        }
        Ok(response)
    }

    /// OPTIONS, DESCRIBE, SETUP of the SDP's media track with `transport`, and PLAY from the
    /// start, each required to succeed. Returns the session id.
    pub fn play_first_track(
        &mut self,
        url: &str,
        transport: &str,
        sink: &mut impl FrameSink,
    ) -> Result<String, RtspRefusal> {
        self.request_ok("OPTIONS", url, &[], sink)?;
        let described = self.request_ok("DESCRIBE", url, &[("Accept", "application/sdp")], sink)?;
        let base = described
            .header("content-base")
            .unwrap_or_else(|| format!("{url}/"));
        // The media's control attribute (the session-level one is `*`).
        let track = described
            .body
            .lines()
            .filter_map(|line| line.trim().strip_prefix("a=control:"))
            .find(|control| *control != "*")
            .unwrap_or("trackID=0")
            .to_owned();
        let track_url = if track.starts_with("rtsp://") {
            track
        } else {
            format!("{}/{track}", base.trim_end_matches('/'))
        };
        self.request_ok("SETUP", &track_url, &[("Transport", transport)], sink)?;
        let session = self.session.clone().unwrap_or_default();
        self.request_ok("PLAY", &format!("{url}/"), &[("Range", "npt=0-")], sink)?;
        Ok(session)
    }

    /// The connection and the bytes read off it but not yet dispatched, for a reader that
    /// parses what follows itself (the benchmarks' lean load clients).
    pub fn into_parts(self) -> (TcpStream, Vec<u8>) {
        (self.stream, self.buffered)
    }

    /// Keep receiving interleaved data for `duration`, keeping the RTP.
    pub fn receive_for(&mut self, duration: Duration) {
        let deadline = Instant::now() + duration;
        self.set_poll_interval(Duration::from_millis(100));
        while Instant::now() < deadline {
            self.record();
            if !matches!(self.read_some(), Ok(true)) {
                break;
            }
        }
        self.record();
        self.set_poll_interval(RESPONSE_TIMEOUT);
    }

    /// Take what was read into the client's own record of RTP and other frames.
    fn record(&mut self) {
        let mut recorder = Recorder {
            rtp: &mut self.rtp,
            other_frames: &mut self.other_frames,
        };
        take_interleaved(&mut self.buffered, &mut recorder);
    }

    /// How long one read waits for data (a reading loop looks at its own stop conditions
    /// between reads).
    pub fn set_poll_interval(&mut self, interval: Duration) {
        self.stream
            .set_read_timeout(Some(interval))
            .expect("set the read timeout");
    }

    /// Hand the complete interleaved frames at the front of what was read to `sink`,
    /// skipping RTSP messages (and bytes that are neither) between them.
    pub fn dispatch(&mut self, sink: &mut impl FrameSink) {
        take_interleaved(&mut self.buffered, sink);
    }

    /// Read once (up to the poll interval) into the buffer [`Self::dispatch`] empties.
    /// `Ok(false)` once the server has closed the connection; a read that timed out is
    /// `Ok(true)`.
    pub fn read_some(&mut self) -> std::io::Result<bool> {
        read_into(&mut self.stream, &mut self.buffered)
    }

    /// The MPEG-TS carried by the received RTP packets, in order.
    pub fn transport_stream(&self) -> Vec<u8> {
        self.rtp
            .iter()
            .flat_map(|(_, _, payload)| payload.clone())
            .collect()
    }
}

/// Send one request on `stream` and read its response, handing interleaved frames that arrive
/// before it to `sink`. Records the session id the response gives.
fn exchange(
    (stream, post): (&mut TcpStream, Option<&mut TcpStream>),
    buffered: &mut Vec<u8>,
    cseq: &mut u32,
    session: &mut Option<String>,
    (method, url, headers): (&str, &str, &[(&str, &str)]),
    sink: &mut impl FrameSink,
) -> std::io::Result<RtspResponse> {
    *cseq += 1;
    let mut text =
        format!("{method} {url} RTSP/1.0\r\nCSeq: {cseq}\r\nUser-Agent: ferrocast-tests\r\n");
    if let Some(session) = session {
        text.push_str(&format!("Session: {session}\r\n"));
    }
    for (name, value) in headers {
        text.push_str(&format!("{name}: {value}\r\n"));
    }
    text.push_str("\r\n");
    match post {
        Some(post) => post.write_all(base64(text.as_bytes()).as_bytes())?,
        None => stream.write_all(text.as_bytes())?,
    }
    let deadline = Instant::now() + RESPONSE_TIMEOUT;
    let response = loop {
        take_frames(buffered, sink);
        if let Some(response) = take_message(buffered) {
            break response;
        }
        if Instant::now() > deadline {
            return Err(std::io::Error::new(
                ErrorKind::TimedOut,
                format!("no response within {RESPONSE_TIMEOUT:?}"),
            ));
        }
        if !read_into(stream, buffered)? {
            return Err(std::io::Error::new(
                ErrorKind::UnexpectedEof,
                "connection closed before a response",
            ));
        }
    };
    if let Some(given) = response.header("session") {
        *session = Some(given.split(';').next().unwrap_or("").trim().to_owned());
    }
    Ok(response)
}

/// One read into `buffered`; `Ok(false)` at the end of the stream, `Ok(true)` on a timeout.
fn read_into(stream: &mut TcpStream, buffered: &mut Vec<u8>) -> std::io::Result<bool> {
    let mut buf = [0u8; 65536];
    match stream.read(&mut buf) {
        Ok(0) => Ok(false),
        Ok(n) => {
            buffered.extend_from_slice(&buf[..n]);
            Ok(true)
        }
        Err(error) if is_timeout(&error) => Ok(true),
        Err(error) => Err(error),
    }
}

/// Hand the complete interleaved frames at the front of `buffered` to `sink`.
pub(crate) fn take_frames(buffered: &mut Vec<u8>, sink: &mut impl FrameSink) {
    while buffered.len() >= 4 && buffered[0] == b'$' {
        let length = usize::from(u16::from_be_bytes([buffered[2], buffered[3]]));
        if buffered.len() < 4 + length {
            return;
        }
        sink.frame(buffered[1], &buffered[4..4 + length]);
        buffered.drain(..4 + length);
    }
}

/// [`take_frames`], also consuming the RTSP messages and stray bytes between frames.
fn take_interleaved(buffered: &mut Vec<u8>, sink: &mut impl FrameSink) {
    loop {
        take_frames(buffered, sink);
        if buffered.is_empty() || buffered[0] == b'$' {
            return;
        }
        if buffered.starts_with(b"RTSP/") {
            if take_message(buffered).is_none() {
                return;
            }
        } else if b"RTSP/".starts_with(buffered) {
            return; // the start of a message; wait for the rest
        } else {
            buffered.remove(0);
        }
    }
}

/// Take one complete RTSP message (head and body) from the front of `buffered`.
pub(crate) fn take_message(buffered: &mut Vec<u8>) -> Option<RtspResponse> {
    let (message, used) = parse_message(buffered)?;
    buffered.drain(..used);
    Some(message)
}

/// The complete RTSP message (head and body) at the start of `data` and how many bytes it
/// takes; None while it is incomplete or an interleaved frame comes first.
pub fn parse_message(data: &[u8]) -> Option<(RtspResponse, usize)> {
    if data.first() == Some(&b'$') {
        return None;
    }
    let end = head_end(data)?;
    let head = String::from_utf8_lossy(&data[..end]).into_owned();
    let length = content_length(&head).unwrap_or(0);
    if data.len() < end + length {
        return None;
    }
    let body = String::from_utf8_lossy(&data[end..end + length]).into_owned();
    let message = RtspResponse {
        status: status_code(&head),
        head,
        body,
    };
    Some((message, end + length))
}

/// The payload of an RTP packet (version 2; CSRCs, extension and padding skipped).
pub fn rtp_payload(packet: &[u8]) -> Option<&[u8]> {
    if packet.len() < 12 || packet[0] >> 6 != 2 {
        return None;
    }
    let mut start = 12 + 4 * usize::from(packet[0] & 0x0f);
    if packet[0] & 0x10 != 0 {
        let words = packet.get(start + 2..start + 4)?;
        start += 4 + 4 * usize::from(u16::from_be_bytes([words[0], words[1]]));
    }
    let mut end = packet.len();
    if packet[0] & 0x20 != 0 {
        end = end.checked_sub(usize::from(*packet.last()?))?;
    }
    packet.get(start..end)
}

/// Does this (compound) RTCP packet hold a BYE (packet type 203)?
pub fn rtcp_has_bye(mut packet: &[u8]) -> bool {
    while packet.len() >= 4 {
        if packet[1] == 203 {
            return true;
        }
        let length = 4 * (usize::from(u16::from_be_bytes([packet[2], packet[3]])) + 1);
        if length > packet.len() {
            return false;
        }
        packet = &packet[length..];
    }
    false
}

/// The head of a tunnel's POST half, as ffmpeg sends it.
pub fn post_head(address: SocketAddr, path: &str, cookie: &str) -> String {
    format!("POST /{path} HTTP/1.1\r\nHost: {address}\r\nx-sessioncookie: {cookie}\r\nContent-Type: application/x-rtsp-tunnelled\r\nPragma: no-cache\r\nCache-Control: no-cache\r\nContent-Length: 32767\r\nExpires: Sun, 9 Jan 1972 00:00:00 GMT\r\n\r\n")
}

/// Standard base64 with padding, as tunnel clients encode each request.
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let mut n = [0u8; 3];
        n[..chunk.len()].copy_from_slice(chunk);
        let bits = u32::from_be_bytes([0, n[0], n[1], n[2]]);
        for i in 0..4 {
            out.push(if i <= chunk.len() {
                ALPHABET[(bits >> (18 - 6 * i) & 63) as usize] as char
            } else {
                '='
            });
        }
    }
    out
}

/// A [`FrameSink`] that keeps every frame it is handed, for unit tests.
#[cfg(test)]
#[derive(Default)]
pub(crate) struct Frames(pub Vec<(u8, Vec<u8>)>);

#[cfg(test)]
impl FrameSink for Frames {
    fn frame(&mut self, channel: u8, data: &[u8]) {
        self.0.push((channel, data.to_vec()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_and_messages_are_taken_apart_however_they_arrive() {
        let response = b"RTSP/1.0 200 OK\r\nCSeq: 2\r\nContent-Length: 3\r\n\r\nabc";
        let mut stream = b"$\x00\x00\x02hi".to_vec();
        stream.extend_from_slice(response);
        stream.extend_from_slice(b"$\x01\x00\x01!");
        for split in 1..stream.len() {
            let (mut buffered, mut frames, mut messages) = (Vec::new(), Frames::default(), 0);
            for piece in [&stream[..split], &stream[split..]] {
                buffered.extend_from_slice(piece);
                take_frames(&mut buffered, &mut frames);
                if let Some(message) = take_message(&mut buffered) {
                    assert_eq!((message.status, message.body.as_str()), (200, "abc"));
                    messages += 1;
                }
                take_frames(&mut buffered, &mut frames);
            }
            assert_eq!(messages, 1, "split at {split}");
            assert_eq!(
                frames.0,
                vec![(0, b"hi".to_vec()), (1, b"!".to_vec())],
                "split at {split}"
            );
            assert!(buffered.is_empty());
        }
    }

    #[test]
    fn a_message_is_parsed_once_its_body_is_all_there() {
        let stream = b"RTSP/1.0 200 OK\r\nContent-Length: 3\r\n\r\nabc$\x00";
        let whole = stream.len() - 2;
        for cut in 0..whole {
            assert!(parse_message(&stream[..cut]).is_none(), "cut at {cut}");
        }
        let (message, used) = parse_message(stream).expect("a message");
        assert_eq!(
            (message.status, message.body.as_str(), used),
            (200, "abc", whole)
        );
        assert!(
            parse_message(&stream[whole..]).is_none(),
            "a frame is no message"
        );
    }

    #[test]
    fn stray_messages_and_bytes_between_frames_are_skipped() {
        let mut buffered = b"xRTSP/1.0 200 OK\r\n\r\n$\x00\x00\x01!RTS".to_vec();
        let mut frames = Frames::default();
        take_interleaved(&mut buffered, &mut frames);
        assert_eq!(frames.0, vec![(0, b"!".to_vec())]);
        assert_eq!(
            buffered, b"RTS",
            "the start of a message waits for the rest"
        );
    }

    #[test]
    fn rtcp_bye_is_found_in_a_compound_packet() {
        // A sender report (28 bytes), then a BYE.
        let mut compound = vec![0x80, 200, 0, 6];
        compound.extend_from_slice(&[0; 24]);
        compound.extend_from_slice(&[0x81, 203, 0, 1, 0, 0, 0, 1]);
        assert!(rtcp_has_bye(&compound));
        assert!(!rtcp_has_bye(&compound[..28]));
    }

    #[test]
    fn rtp_payload_skips_the_header() {
        let mut packet = vec![0x80, 33, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0];
        packet.extend_from_slice(&[0x47; 10]);
        assert_eq!(rtp_payload(&packet), Some(&[0x47u8; 10][..]));
    }

    #[test]
    fn rtp_payload_skips_csrcs_and_padding() {
        // One CSRC and two bytes of padding.
        let mut padded = vec![0xa1, 33, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 9, 9, 9, 9];
        padded.extend_from_slice(b"data\0\x02");
        assert_eq!(rtp_payload(&padded), Some(&b"data"[..]));
        assert_eq!(rtp_payload(&[0x40; 12]), None, "version 1");
    }
}

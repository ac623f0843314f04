//! Fuzz bodies, shared by the cargo-fuzz targets in `fuzz/` and by a unit test that runs them
//! on stable Rust (cargo-fuzz needs nightly) over the seed corpus and a few thousand seeded,
//! deterministic mutations of it.
//!
//! Not part of the plugin's API.

use std::net::SocketAddr;
use std::time::Duration;

use ferrocast_plugin_api::testing::MockHost;
use ferrocast_plugin_api::{
    EndReason, ErrorCode, HostError, PointKind, SessionInfo, TransportKind,
};
use ferrocast_plugin_kit::testing::SessionHarness;

use crate::proto::request::{ErrorKind, Limits, Message, RequestParser};
use crate::proto::{range, transport, url};
use crate::session::{Config, RtspSession, HEADER_TIMER, SESSION_TIMER};

/// Limits and a piece size chosen by a control byte, so the fuzzer explores both.
fn setup(control: u8) -> (Limits, usize) {
    let limits = Limits {
        max_head: [64, 256, 1024, 16384][usize::from((control >> 5) & 3)],
        max_body: if control & 0x80 == 0 { 4096 } else { 16 },
    };
    (limits, usize::from(control & 0x1f) + 1)
}

/// What parsing `input` in pieces of `piece` bytes yields, checking the parser's invariants
/// and exercising the header parsers on every request.
fn parse_all(input: &[u8], limits: Limits, piece: usize) -> (Vec<Message>, Option<ErrorKind>) {
    let mut parser = RequestParser::new(limits);
    let mut messages = Vec::new();
    for part in input.chunks(piece.max(1)) {
        parser.push(part);
        loop {
            match parser.next_message() {
                Ok(Some(message)) => {
                    if let Message::Request(request) = &message {
                        check_request(request, limits);
                    }
                    messages.push(message);
                }
                Ok(None) => break,
                Err(error) => {
                    assert!(matches!(error.status(), 400 | 413));
                    assert!(!parser.in_message(), "a failed parser keeps nothing");
                    return (messages, Some(error.kind));
                }
            }
        }
        // Whatever is held is one incomplete message within the limits.
        assert!(
            parser.buffered() <= limits.max_head.max(limits.max_body),
            "{} bytes buffered",
            parser.buffered()
        );
    }
    (messages, None)
}

fn check_request(request: &crate::proto::request::Request, limits: Limits) {
    assert!(request.body.len() <= limits.max_body);
    assert!(request.headers.len() <= crate::proto::request::MAX_HEADERS);
    assert!(!request.method.is_empty());
    assert!(request.uri.bytes().all(|b| b.is_ascii_graphic()));
    assert!(request.version.starts_with("RTSP/"));
    for (_, value) in &request.headers {
        assert!(!value.contains(['\r', '\n']));
    }
    if let Ok(target) = url::parse(&request.uri, "127.0.0.1:8554", false) {
        assert!(
            !target.path.split('/').any(|s| s == ".." || s.is_empty()) || target.path.is_empty()
        );
        assert!(!target.base.contains(['\r', '\n', ' ']));
    }
    if let Some(value) = request.header("Transport") {
        for spec in transport::parse(value).into_iter().flatten() {
            if let Ok(transport::Choice::Udp { rtp, rtcp }) = spec.choose() {
                assert!(rtp >= transport::MIN_CLIENT_PORT && rtcp >= transport::MIN_CLIENT_PORT);
            }
        }
    }
    if let Some(value) = request.header("Range") {
        if let Ok(parsed) = range::parse(value) {
            if let (range::Npt::Ms(start), Some(range::Npt::Ms(end))) = (parsed.start, parsed.end) {
                assert!(start <= end);
            }
        }
    }
}

/// The `request_parser` target: arbitrary bytes into the incremental parser, which must never
/// panic, must respect its limits, and must find the same messages whatever the read sizes.
pub fn request_parser(data: &[u8]) {
    let Some((&control, input)) = data.split_first() else {
        return;
    };
    let (limits, piece) = setup(control);
    let (pieces, pieces_error) = parse_all(input, limits, piece);
    let (whole, whole_error) = parse_all(input, limits, input.len());
    assert_eq!(pieces, whole, "messages depend on how the input was split");
    assert_eq!(pieces_error, whole_error);
}

/// The `session` target: arbitrary bytes into a whole session on a mock host, with timers,
/// transport activity and stream ends interleaved. It must never panic, always answer with
/// RTSP responses, and write nothing once it closed the connection.
pub fn session(data: &[u8]) {
    let Some((&control, input)) = data.split_first() else {
        return;
    };
    let piece = usize::from(control & 0x1f) + 1;
    let mut mock = MockHost::new();
    mock.add_point("live", PointKind::BROADCAST, 0)
        .add_point("vod", PointKind::ON_DEMAND, 1000)
        .refuse("off", ErrorCode::PROTOCOL_DISABLED, "RTSP is off");
    if let Some(Ok(vod)) = mock.points.get_mut("vod") {
        vod.duration_ms = 10_021;
    }
    if control & 0x20 != 0 {
        mock.transport_refusals.insert(
            TransportKind::UDP_UNICAST.0,
            HostError::new(ErrorCode::UNSUPPORTED_TRANSPORT, "UDP is off"),
        );
    }
    if control & 0x40 != 0 {
        mock.pause_answer = Some(Err(HostError::new(ErrorCode::NOT_SEEKABLE, "live")));
    }
    let config = Config {
        session_timeout: Duration::from_secs(1),
        header_timeout: Duration::from_millis(100),
        max_request_bytes: if control & 0x80 != 0 { 1024 } else { 16384 },
    };
    let info = SessionInfo::new(
        1,
        SocketAddr::from(([127, 0, 0, 1], 50000)),
        SocketAddr::from(([127, 0, 0, 1], 8554)),
    );
    let mut client = SessionHarness::new(mock, RtspSession::new(config, info));
    client.open();
    for part in input.chunks(piece) {
        let closed = client.mock.closed;
        let before = client.mock.written.len();
        client.send(part);
        match part[0] % 29 {
            0 => client.fire(HEADER_TIMER),
            1 => client.fire(SESSION_TIMER),
            2 => client.transport_activity(1),
            3 => client.stream_ended(EndReason(part.get(1).copied().unwrap_or(0) % 5)),
            _ => {}
        }
        if closed {
            assert_eq!(client.mock.written.len(), before, "wrote after closing");
        }
        if client.mock.written.len() > before {
            assert!(client.mock.written[before..].starts_with(b"RTSP/1.0 "));
        }
    }
    client.peer_closed();
    assert!(client.mock.closed);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// xorshift64*: a small deterministic generator, so every run tests the same inputs.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n.max(1) as u64) as usize
        }

        fn byte(&mut self) -> u8 {
            self.next() as u8
        }
    }

    /// Interesting fragments to splice in.
    const TOKENS: &[&[u8]] = &[
        b"\r\n\r\n",
        b"\n\n",
        b"\r\n",
        b"$\x01\x00\x04abcd",
        b"$\x00\xff\xff",
        b"$\x07\x00",
        b"Content-Length: 5\r\n",
        b"Content-Length: 99999999\r\n",
        b"CSeq: 12\r\n",
        b"Session: 4F8A2B3C5D6E7F80\r\n",
        b"Transport: RTP/AVP;unicast;client_port=1023-1024,RTP/AVP/TCP;interleaved=255\r\n",
        b"Range: npt=00:00:05.5-\r\n",
        b"Range: npt=now-\r\n",
        b"SETUP rtsp://h/vod/trackID=0 RTSP/1.0\r\nCSeq: 3\r\nTransport: RTP/AVP/TCP;unicast;interleaved=0-1\r\n\r\n",
        b"PLAY rtsp://h/vod/ RTSP/1.0\r\nCSeq: 4\r\nRange: npt=5-\r\n\r\n",
        b"PAUSE rtsp://h/vod/ RTSP/1.0\r\nCSeq: 5\r\n\r\n",
        b"TEARDOWN rtsp://h/vod/ RTSP/1.0\r\nCSeq: 6\r\n\r\n",
        b" RTSP/2.0",
        b"%2e%2e/",
        b"\x00\xff",
    ];

    fn mutate(rng: &mut Rng, corpus: &[Vec<u8>]) -> Vec<u8> {
        let mut data = corpus[rng.below(corpus.len())].clone();
        for _ in 0..=rng.below(8) {
            let at = rng.below(data.len() + 1);
            match rng.below(8) {
                0 if !data.is_empty() => {
                    let i = rng.below(data.len());
                    data[i] ^= 1 << rng.below(8);
                }
                1 if !data.is_empty() => {
                    let i = rng.below(data.len());
                    data[i] = rng.byte();
                }
                2 => {
                    let bytes: Vec<u8> = (0..rng.below(16)).map(|_| rng.byte()).collect();
                    data.splice(at..at, bytes);
                }
                3 => {
                    let end = (at + rng.below(64)).min(data.len());
                    data.drain(at..end);
                }
                4 => {
                    let token = TOKENS[rng.below(TOKENS.len())];
                    data.splice(at..at, token.iter().copied());
                }
                5 => {
                    let other = &corpus[rng.below(corpus.len())];
                    let from = rng.below(other.len());
                    let to = (from + rng.below(256)).min(other.len());
                    data.splice(at..at, other[from..to].iter().copied());
                }
                6 if !data.is_empty() => {
                    // Change a digit, where Content-Length, CSeq, ports and ranges live.
                    if let Some(i) = (0..data.len())
                        .map(|k| (at + k) % data.len())
                        .find(|&i| data[i].is_ascii_digit())
                    {
                        data[i] = b'0' + rng.below(10) as u8;
                    }
                }
                _ => data.truncate(at),
            }
        }
        data.insert(0, rng.byte());
        data
    }

    fn corpus() -> Vec<Vec<u8>> {
        ferrocast_plugin_kit::corpus::read(env!("CARGO_MANIFEST_DIR"), "request_parser")
    }

    #[test]
    fn fuzz_bodies_on_the_corpus_and_its_mutations() {
        let corpus = corpus();
        assert!(corpus.len() >= 8, "seed corpus missing");
        for file in &corpus {
            for control in [0u8, 6, 0x1f, 0x20, 0x47, 0x6c, 0x80, 0xe1, 0xff] {
                let mut data = vec![control];
                data.extend_from_slice(file);
                request_parser(&data);
                session(&data);
            }
        }
        let mut rng = Rng(0x00c0_ffee_5eed_1234);
        for _ in 0..3000 {
            let data = mutate(&mut rng, &corpus);
            request_parser(&data);
            session(&data);
        }
        for _ in 0..500 {
            let data: Vec<u8> = (0..rng.below(600)).map(|_| rng.byte()).collect();
            request_parser(&data);
            session(&data);
        }
    }

    /// Inputs libFuzzer found, kept as regression tests.
    #[test]
    fn fuzz_findings() {
        // A 64-byte head limit and a method longer than that, then a non-token byte: refused
        // for its size however it is split (it was `Malformed` when read whole).
        let mut data = b"\x86OOPTION".to_vec();
        data.extend_from_slice(&[b'8'; 80]);
        data.extend_from_slice(&[0x90; 40]);
        data.extend_from_slice(b"S rtsp://h RTSP/1.0\r\nCSeq: 5\r\n\r\n");
        request_parser(&data);
        session(&data);
    }

    #[test]
    fn fuzz_bodies_accept_empty_and_tiny_inputs() {
        for data in [
            &b""[..],
            b"\x00",
            b"\x00$",
            b"\x1f$\x00\x00\x00",
            b"\xffOPTIONS",
        ] {
            request_parser(data);
            session(data);
        }
    }
}

use ferrocast_plugin_api::testing::MockHost;
use ferrocast_plugin_api::{ByteRange, CredentialKind, ErrorCode, PointKind};
use ferrocast_plugin_kit::testing::SessionHarness;

use super::*;
use crate::proto::frame::tests::client_frame;

const UPGRADE: &str = "GET /live HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

fn harness() -> SessionHarness<WsSession> {
    let mut mock = MockHost::new();
    mock.add_point("live", PointKind::BROADCAST, 0);
    let config = Config {
        max_frame_bytes: 1000,
        ..Config::default()
    };
    let mut harness = SessionHarness::new(mock, WsSession::new(config));
    harness.open();
    harness
}

fn upgraded() -> SessionHarness<WsSession> {
    let mut harness = harness();
    harness.send(UPGRADE.as_bytes());
    let answer = String::from_utf8(harness.take_written()).unwrap();
    assert!(answer.starts_with("HTTP/1.1 101 "), "{answer}");
    harness
}

/// The close status of the single close frame `written` holds.
fn close_code(written: &[u8]) -> u16 {
    assert_eq!(written[0], 0x88, "a close frame: {written:02x?}");
    u16::from_be_bytes([written[2], written[3]])
}

#[test]
fn the_upgrade_in_any_split_plays_the_point_framed_then_answers_101() {
    for piece in [1, 5, 64, usize::MAX] {
        let mut harness = harness();
        assert_eq!(harness.timer(HANDSHAKE_TIMER), Some(10_000));
        harness.send_in_pieces(UPGRADE.as_bytes(), piece);
        assert_eq!(
            harness.mock.framed_plays,
            [("live".to_owned(), ByteRange::ALL)]
        );
        assert!(harness.mock.plays.is_empty(), "never raw TS");
        let answer = String::from_utf8(harness.take_written()).unwrap();
        assert!(answer.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
        assert_eq!(harness.timer(HANDSHAKE_TIMER), None);
        assert!(harness.session.is_open());
        assert_eq!(harness.mock.credentials[0].kind, CredentialKind::NONE);
    }
}

#[test]
fn media_chunks_leave_as_binary_frames() {
    let mut harness = upgraded();
    harness.media(&[0x47; 188], true, Some(9000));
    harness.media(&[0x47; 376], false, None);
    let written = harness.take_written();
    assert_eq!(written[..4], [0x82, 126, 0, 188]);
    assert_eq!(written[4..192], [0x47; 188]);
    assert_eq!(written[192..196], [0x82, 126, 1, 120]);
    assert_eq!(written.len(), 196 + 376);
}

#[test]
fn pings_in_odd_splits_are_answered_and_data_frames_ignored() {
    let mut harness = upgraded();
    let mut bytes = client_frame(0x89, b"hi");
    bytes.extend(client_frame(0x81, b"hello"));
    bytes.extend(client_frame(0x8A, b""));
    harness.send_in_pieces(&bytes, 3);
    assert_eq!(harness.take_written(), [0x8A, 2, b'h', b'i']);
    assert!(harness.session.is_open());
}

#[test]
fn frames_right_behind_the_request_are_read() {
    let mut harness = harness();
    let mut bytes = UPGRADE.as_bytes().to_vec();
    bytes.extend(client_frame(0x89, b"x"));
    harness.send(&bytes);
    let written = harness.take_written();
    assert!(written.ends_with(&[0x8A, 1, b'x']), "{written:02x?}");
}

#[test]
fn violations_close_with_the_rfc_status_and_stop_the_media() {
    let cases: Vec<(Vec<u8>, u16)> = vec![
        (vec![0x82, 0x01, 0xAA], 1002),
        (client_frame(0x82, &[0; 1001]), 1009),
        (client_frame(0x83, b""), 1002),
        (client_frame(0xF2, b""), 1002),
        (client_frame(0x88, &[3]), 1002),
    ];
    for (bytes, expected) in cases {
        let mut harness = upgraded();
        harness.send_in_pieces(&bytes, 2);
        assert_eq!(
            close_code(&harness.take_written()),
            expected,
            "{bytes:02x?}"
        );
        assert!(harness.mock.closed && harness.mock.stops == 1);
        harness.media(&[0x47; 188], true, None);
        assert!(
            harness.take_written().is_empty(),
            "no media after the close"
        );
    }
}

#[test]
fn a_client_close_is_echoed() {
    let mut harness = upgraded();
    harness.send(&client_frame(0x88, &1001u16.to_be_bytes()));
    assert_eq!(close_code(&harness.take_written()), 1001);
    assert!(harness.mock.closed);
}

#[test]
fn the_end_of_the_stream_closes_with_its_status() {
    for (reason, code) in [
        (EndReason::SOURCE_ENDED, 1000),
        (EndReason::POINT_CLOSED, 1001),
        (EndReason::CLIENT_TOO_SLOW, 1008),
    ] {
        let mut harness = upgraded();
        harness.stream_ended(reason);
        assert_eq!(close_code(&harness.take_written()), code);
        assert!(harness.mock.closed);
    }
}

#[test]
fn refusals_answer_in_http_and_close() {
    let mut harness = harness();
    harness
        .mock
        .refuse("live", ErrorCode::FORBIDDEN, "ws is not enabled on live");
    harness.send(UPGRADE.replace("/live", "/live?key=s3cret").as_bytes());
    let answer = String::from_utf8(harness.take_written()).unwrap();
    assert!(answer.starts_with("HTTP/1.1 403 "), "{answer}");
    assert!(answer.contains("ws is not enabled on live"));
    assert_eq!(harness.mock.credentials[0].kind, CredentialKind::URL_QUERY);
    assert!(harness.mock.closed);

    let mut harness = harness_without_version();
    let answer = String::from_utf8(harness.take_written()).unwrap();
    assert!(answer.starts_with("HTTP/1.1 426 "), "{answer}");
    assert!(harness.mock.framed_plays.is_empty());
}

fn harness_without_version() -> SessionHarness<WsSession> {
    let mut harness = harness();
    harness.send(
        UPGRADE
            .replace("Sec-WebSocket-Version: 13\r\n", "")
            .as_bytes(),
    );
    harness
}

#[test]
fn a_slow_or_oversized_upgrade_is_refused() {
    let mut harness = harness();
    harness.send(b"GET /live HTTP/1.1\r\n");
    harness.fire(HANDSHAKE_TIMER);
    let answer = String::from_utf8(harness.take_written()).unwrap();
    assert!(answer.starts_with("HTTP/1.1 408 "), "{answer}");

    let mut harness = harness_with_small_head();
    harness.send(format!("GET /live HTTP/1.1\r\nX: {}\r\n", "a".repeat(2000)).as_bytes());
    let answer = String::from_utf8(harness.take_written()).unwrap();
    assert!(answer.starts_with("HTTP/1.1 431 "), "{answer}");
}

fn harness_with_small_head() -> SessionHarness<WsSession> {
    let config = Config {
        max_header_bytes: 1024,
        ..Config::default()
    };
    SessionHarness::new(MockHost::new(), WsSession::new(config))
}

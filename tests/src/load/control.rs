//! The RTSP control exchange of a load client, async and minimal: OPTIONS, DESCRIBE, SETUP of
//! the SDP's media track and PLAY from the start, each required to answer 200. Interleaved
//! frames that arrive before a response go to the client's [`FrameSink`]; what follows the
//! PLAY response stays buffered for the client's reading loop.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpStream;

use super::clients::{connect, read_some, write_all};
use super::ClientFailure;
use crate::head::header;
use crate::rtsp::{take_frames, take_message, FrameSink, RtspResponse};

/// The longest a request waits for its response.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);

/// One control connection: the CSeq so far and, once the server gave one, the session id.
pub(super) struct Control {
    stream: TcpStream,
    buffered: Vec<u8>,
    cseq: u32,
    session: Option<String>,
}

impl Control {
    pub(super) async fn connect(address: SocketAddr) -> Result<Self, ClientFailure> {
        Ok(Self {
            stream: connect(address).await?,
            buffered: Vec::new(),
            cseq: 0,
            session: None,
        })
    }

    /// OPTIONS, DESCRIBE, SETUP of the media track with `transport`, PLAY from the start.
    pub(super) async fn play_first_track(
        &mut self,
        url: &str,
        transport: &str,
        sink: &mut impl FrameSink,
    ) -> Result<(), ClientFailure> {
        self.request("OPTIONS", url, &[], sink).await?;
        let described = self
            .request("DESCRIBE", url, &[("Accept", "application/sdp")], sink)
            .await?;
        let track = track_url(url, &described);
        self.request("SETUP", &track, &[("Transport", transport)], sink)
            .await?;
        self.request("PLAY", &format!("{url}/"), &[("Range", "npt=0-")], sink)
            .await?;
        Ok(())
    }

    /// The connection and what was read past the last response.
    pub(super) fn into_parts(self) -> (TcpStream, Vec<u8>) {
        (self.stream, self.buffered)
    }

    /// Send a request and wait for its response, which must be a 200.
    async fn request(
        &mut self,
        method: &'static str,
        url: &str,
        headers: &[(&str, &str)],
        sink: &mut impl FrameSink,
    ) -> Result<RtspResponse, ClientFailure> {
        self.cseq += 1;
        let mut text = format!("{method} {url} RTSP/1.0\r\nCSeq: {}\r\n", self.cseq);
        if let Some(session) = &self.session {
            text.push_str(&format!("Session: {session}\r\n"));
        }
        for (name, value) in headers {
            text.push_str(&format!("{name}: {value}\r\n"));
        }
        text.push_str("\r\n");
        write_all(&self.stream, text.as_bytes(), method).await?;
        let response = tokio::time::timeout(RESPONSE_TIMEOUT, self.response(sink))
            .await
            .map_err(|_| ClientFailure::RtspTimeout {
                method,
                within: RESPONSE_TIMEOUT,
            })??;
        if response.status != 200 {
            return Err(ClientFailure::RtspRefused {
                method,
                status: response.status,
                response: response.head + &response.body,
            });
        }
        if let Some(given) = header(&response.head, "session") {
            self.session = Some(given.split(';').next().unwrap_or("").trim().to_owned());
        }
        Ok(response)
    }

    async fn response(&mut self, sink: &mut impl FrameSink) -> Result<RtspResponse, ClientFailure> {
        loop {
            if let Some(response) = take_response(&mut self.buffered, sink) {
                return Ok(response);
            }
            if !read_some(&self.stream, &mut self.buffered).await? {
                return Err(ClientFailure::ClosedBeforeResponse);
            }
        }
    }
}

/// The URL of the SDP's media track (its control attribute; the session-level one is `*`).
fn track_url(url: &str, described: &RtspResponse) -> String {
    let base = header(&described.head, "content-base").unwrap_or_else(|| format!("{url}/"));
    let track = described
        .body
        .lines()
        .filter_map(|line| line.trim().strip_prefix("a=control:"))
        .find(|control| *control != "*")
        .unwrap_or("trackID=0");
    if track.starts_with("rtsp://") {
        track.to_owned()
    } else {
        format!("{}/{track}", base.trim_end_matches('/'))
    }
}

/// Hand the interleaved frames at the front of `buffered` to `sink`, then take one complete
/// response (head and body) if it is there.
fn take_response(buffered: &mut Vec<u8>, sink: &mut impl FrameSink) -> Option<RtspResponse> {
    take_frames(buffered, sink);
    take_message(buffered)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rtsp::Frames;

    #[test]
    fn a_response_is_taken_after_the_frames_before_it_and_leaves_what_follows() {
        let mut stream = b"$\x00\x00\x02hi".to_vec();
        stream.extend_from_slice(b"RTSP/1.0 200 OK\r\nCSeq: 2\r\nContent-Length: 3\r\n\r\nabc");
        stream.extend_from_slice(b"$\x01\x00\x01!");
        for split in 1..stream.len() {
            let (mut buffered, mut frames) = (stream[..split].to_vec(), Frames::default());
            let early = take_response(&mut buffered, &mut frames);
            buffered.extend_from_slice(&stream[split..]);
            let response = early
                .or_else(|| take_response(&mut buffered, &mut frames))
                .expect("a response");
            assert_eq!((response.status, response.body.as_str()), (200, "abc"));
            assert_eq!(frames.0, vec![(0, b"hi".to_vec())], "split at {split}");
            assert_eq!(buffered, b"$\x01\x00\x01!", "split at {split}");
        }
    }

    #[test]
    fn the_track_url_follows_the_sdp_control_attribute() {
        let described = |head: &str, body: &str| RtspResponse {
            status: 200,
            head: head.into(),
            body: body.into(),
        };
        let url = "rtsp://127.0.0.1:554/live";
        let sdp = "v=0\r\na=control:*\r\nm=video 0 RTP/AVP 33\r\na=control:track1\r\n";
        assert_eq!(
            track_url(url, &described("RTSP/1.0 200 OK\r\n\r\n", sdp)),
            "rtsp://127.0.0.1:554/live/track1"
        );
        let based = "RTSP/1.0 200 OK\r\nContent-Base: rtsp://h/base/\r\n\r\n";
        assert_eq!(
            track_url(url, &described(based, "")),
            "rtsp://h/base/trackID=0"
        );
        let absolute = "a=control:rtsp://h/x/stream=0\r\n";
        assert_eq!(
            track_url(url, &described(based, absolute)),
            "rtsp://h/x/stream=0"
        );
    }
}

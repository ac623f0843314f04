//! An encoder played by the test itself: the sample pushed over one raw HTTP `PUT /live`
//! connection, paced in real time (`per_tick` bytes, 1/25 s of the sample, every [`TICK`]) and
//! looped, with no ffmpeg in between, so that a benchmark knows exactly when each byte was
//! handed to the socket.

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The encoder writes this often, 1/25 s of the sample each time.
pub const TICK: Duration = Duration::from_millis(40);

/// An encoder pushing the sample in real time over one raw `PUT` connection; the connection
/// is closed (a clean FIN, as when an encoder process exits) on drop.
pub struct PacedEncoder {
    /// When the first bytes of the body were handed to the socket (before [`Self::start`]
    /// returns): a benchmark's t0.
    pub first_body_write: Instant,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl PacedEncoder {
    /// Connect to `server`, send the `PUT /live` head and the first `per_tick` bytes of
    /// `sample`, then keep writing `per_tick` bytes every [`TICK`] on a thread of its own.
    pub fn start(server: SocketAddr, sample: Arc<[u8]>, per_tick: usize) -> Self {
        let mut socket = TcpStream::connect_timeout(&server, Duration::from_secs(5))
            .expect("connect the encoder");
        socket.set_nodelay(true).unwrap();
        socket
            .set_write_timeout(Some(Duration::from_secs(1)))
            .unwrap();
        // A body length no run reaches, so the push never ends by itself.
        let head = "PUT /live HTTP/1.1\r\nHost: bench\r\nContent-Type: video/mp2t\r\nContent-Length: 1000000000000\r\n\r\n";
        socket
            .write_all(head.as_bytes())
            .expect("send the PUT head");
        let mut position = 0;
        let first_body_write = Instant::now();
        write_looped(&mut socket, &sample, &mut position, per_tick).expect("first body bytes");
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut next = first_body_write + TICK;
            while !stopping.load(Ordering::SeqCst) {
                let now = Instant::now();
                if now < next {
                    std::thread::sleep((next - now).min(Duration::from_millis(10)));
                    continue;
                }
                if write_looped(&mut socket, &sample, &mut position, per_tick).is_err() {
                    return;
                }
                // Real time, not catch-up bursts, if a write was late.
                next = (next + TICK).max(Instant::now());
            }
        });
        Self {
            first_body_write,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for PacedEncoder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            // Bounded: the thread sleeps at most 10 ms at a time and writes time out in 1 s.
            let deadline = Instant::now() + Duration::from_secs(3);
            while !thread.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(2));
            }
            // Not while already unwinding from a panic: a second one would abort the process
            // instead of letting the first unwind.
            if !std::thread::panicking() {
                assert!(thread.is_finished(), "encoder thread did not stop");
            }
            if thread.is_finished() {
                let _ = thread.join();
            }
        }
    }
}

/// Write the next `count` bytes of `sample` from `position`, wrapping to its start.
pub fn write_looped(
    socket: &mut TcpStream,
    sample: &[u8],
    position: &mut usize,
    mut count: usize,
) -> std::io::Result<()> {
    while count > 0 {
        let take = count.min(sample.len() - *position);
        socket.write_all(&sample[*position..*position + take])?;
        *position = (*position + take) % sample.len();
        count -= take;
    }
    Ok(())
}

/// 1/25 s worth of the sample: its size over its duration, the duration from its PCRs.
pub fn bytes_per_tick(sample: &[u8]) -> usize {
    let pcrs: Vec<u64> = sample.chunks_exact(188).filter_map(pcr_90k).collect();
    let (Some(first), Some(last)) = (pcrs.first().copied(), pcrs.last().copied()) else {
        panic!("the sample has no PCR to pace it by");
    };
    let seconds = (last.saturating_sub(first)) as f64 / 90_000.0;
    assert!(seconds > 1.0, "sample too short to loop: {seconds} s");
    (sample.len() as f64 / seconds * TICK.as_secs_f64()).round() as usize
}

/// The PCR base (90 kHz) of a TS packet carrying one.
fn pcr_90k(packet: &[u8]) -> Option<u64> {
    let has_adaptation = packet[0] == 0x47 && packet[3] & 0x20 != 0;
    if !has_adaptation || packet[4] < 7 || packet[5] & 0x10 == 0 {
        return None;
    }
    let b = &packet[6..11];
    Some(
        (u64::from(b[0]) << 25)
            | (u64::from(b[1]) << 17)
            | (u64::from(b[2]) << 9)
            | (u64::from(b[3]) << 1)
            | (u64::from(b[4]) >> 7),
    )
}

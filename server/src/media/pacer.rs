//! Real-time pacing of an on-demand MPEG-TS file by its PCR, with seeking
//! and pausing.
//!
//! [`FilePacer`] is sans-IO with respect to time: the caller passes `now` in,
//! and [`FilePacer::next`] either hands out the data that is due
//! ([`PacerStep::Send`]) or says when the next data will be ([`PacerStep::Wait`]),
//! so it runs the same under a tokio timer, a test's fake clock or a
//! hand-written loop. File reads are done by the pacer itself, synchronously,
//! through a `Read + Seek` it owns (a `std::fs::File` via [`FilePacer::open`]):
//! files are local and each read is at most 64 KiB (a call to `next` usually
//! needs one or none; only a long stretch without PCR needs up to
//! [`MAX_LOOKAHEAD_PACKETS`] worth), so the caller simply runs it on its own
//! task (or under `spawn_blocking` for slow storage) rather than shuttling
//! "read offset X" requests back and forth. Read errors come back from `next`.
//!
//! # Timing
//!
//! Media time comes from the PCRs on the program's PCR PID (found with the
//! same [`ProgramTracker`] as live ingest, primed with the index's PAT/PMT so
//! a seek into the middle of the file knows the PCR PID at once). A packet
//! carrying a PCR is due when `media time ≤ position + lead`; the packets
//! before it go with it, so data leaves no later than the PCR says it should
//! arrive and at most `lead` (default 150 ms, absorbing timer and network
//! jitter) earlier. PCR wraps are unwrapped; backward jumps, jumps over 10 s
//! and flagged discontinuities add no time, exactly as [`index_file`] counts
//! them, so pacer and index agree on what "2 s into the file" means.
//!
//! Packets not followed by a PCR within [`MAX_LOOKAHEAD_PACKETS`] (or before
//! the end of the file) are timed at the file's average bitrate
//! (`size / duration`) from the last due time, which bounds memory and keeps
//! tails paced.
//!
//! Files without PCR timing (an index with no PAT/PMT or no time in its
//! entries, which [`index_file`] itself never produces) are paced entirely at
//! that average bitrate, and `seek` picks the keyframe at or before the
//! byte offset that bitrate puts `position` at. A zero duration means no
//! pacing at all: everything is due at once.
//!
//! [`index_file`]: super::index::index_file

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};

use super::index::FileIndex;
use super::ingest::{ProgramTracker, MAX_CHUNK_PACKETS};
use super::ts::{packets, pcr_to_90khz, PacketAligner, TsPacket, PCR_WRAP_27MHZ, TS_PACKET_LEN};

/// How far ahead of its PCR time data may be released by default.
pub const DEFAULT_LEAD: Duration = Duration::from_millis(150);
/// Most TS packets in one [`PacerStep::Send`], PAT/PMT included.
pub const MAX_SEND_PACKETS: usize = MAX_CHUNK_PACKETS;
/// Packets buffered while looking for the next PCR before falling back to
/// the average bitrate (about 770 KB).
pub const MAX_LOOKAHEAD_PACKETS: usize = 4096;
/// Bytes per read: whole packets, just under 64 KiB.
const READ_LEN: usize = 348 * TS_PACKET_LEN;
/// Same threshold as the index uses: a larger forward PCR step is a
/// discontinuity, not elapsed time.
const MAX_PCR_STEP_27MHZ: u64 = 10 * 27_000_000;
/// Packets per segment when timing by bitrate (one RTP packet's worth).
const RATE_SEGMENT_PACKETS: usize = 7;

/// What the caller should do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PacerStep {
    /// Send this now.
    Send {
        /// Whole TS packets, at most [`MAX_SEND_PACKETS`]. After a seek the
        /// first `Send` starts with the file's PAT and PMT, then the keyframe.
        data: Bytes,
        /// First PCR in `data` (90 kHz), for the RTP clock.
        pcr_90k: Option<u64>,
        /// Media time at which the last packet of `data` is due.
        media_time: Duration,
    },
    /// Nothing is due before this instant; call `next` again then.
    Wait(Instant),
    /// Not started, or paused: nothing will become due until `start`.
    Paused,
    /// The whole file has been sent.
    End,
}

/// A run of packets at the front of the window that become due together.
#[derive(Debug, Clone, Copy)]
struct Segment {
    packets: usize,
    due: Duration,
    /// PCR (27 MHz) of the segment's last packet, if it carries one.
    pcr: Option<u64>,
}

/// Packets read but not yet sent, and the times they become due.
#[derive(Debug)]
struct Queue {
    index: FileIndex,
    /// Pace by PCR; otherwise by average bitrate only.
    by_pcr: bool,
    tracker: ProgramTracker,
    /// Aligned packets read but not yet sent, oldest first.
    window: BytesMut,
    /// Timing of the front of `window`, in order.
    segments: VecDeque<Segment>,
    /// Packets at the end of `window` not yet in a segment (awaiting a PCR).
    unassigned: usize,
    /// Last PCR seen (27 MHz) and its media time.
    last_pcr: Option<(u64, Duration)>,
    /// Due time of the newest segment; later segments are never earlier.
    last_due: Duration,
    /// Bitrate timing runs from this media time plus `rate_bytes` at the
    /// average bitrate.
    rate_anchor: Duration,
    rate_bytes: u64,
}

impl Queue {
    fn new(index: FileIndex) -> Self {
        let by_pcr = index.psi.is_some() && index.entries.iter().any(|e| !e.time.is_zero());
        let mut queue = Self {
            index,
            by_pcr,
            tracker: ProgramTracker::new(),
            window: BytesMut::new(),
            segments: VecDeque::new(),
            unassigned: 0,
            last_pcr: None,
            last_due: Duration::ZERO,
            rate_anchor: Duration::ZERO,
            rate_bytes: 0,
        };
        queue.reset(Duration::ZERO);
        queue
    }

    /// Drops buffered packets; timing restarts at `media_time`.
    fn reset(&mut self, media_time: Duration) {
        self.tracker.reset();
        // Prime the PCR PID so a seek into the middle of the file finds PCRs.
        if let Some(psi) = &self.index.psi {
            for packet in packets(psi) {
                self.tracker.inspect(&packet);
            }
        }
        self.window.clear();
        self.segments.clear();
        self.unassigned = 0;
        self.last_pcr = None;
        self.last_due = media_time;
        self.rate_anchor = media_time;
        self.rate_bytes = 0;
    }

    /// Media time `bytes` take at the file's average bitrate.
    fn byte_time(&self, bytes: u64) -> Duration {
        if self.index.size == 0 {
            return Duration::ZERO;
        }
        let nanos =
            self.index.duration.as_nanos() * u128::from(bytes) / u128::from(self.index.size);
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }

    fn add(&mut self, file_offset: u64, packet: &TsPacket<'_>) {
        if self.window.capacity() - self.window.len() < TS_PACKET_LEN {
            self.window.reserve(READ_LEN);
        }
        self.window.put_slice(packet.as_bytes());
        self.unassigned += 1;
        if !self.by_pcr {
            if self.unassigned == RATE_SEGMENT_PACKETS {
                self.assign_by_rate();
            }
            return;
        }
        let Some(pcr) = self.tracker.inspect(packet).pcr else {
            if self.unassigned >= MAX_LOOKAHEAD_PACKETS {
                tracing::debug!(
                    offset = file_offset,
                    "no PCR within look-ahead, pacing by average bitrate"
                );
                self.assign_by_rate();
            }
            return;
        };
        let time = match self.last_pcr {
            // The index interpolates between its PCR entries: exact when the
            // first packet read carries the PCR (encoders put one on
            // keyframes), close otherwise.
            None => self.index.time_for_offset(file_offset),
            Some((last, last_time)) => {
                let step = (pcr + PCR_WRAP_27MHZ - last % PCR_WRAP_27MHZ) % PCR_WRAP_27MHZ;
                if packet.discontinuity_indicator() || step > MAX_PCR_STEP_27MHZ {
                    tracing::debug!(last, pcr, "PCR discontinuity");
                    last_time
                } else {
                    last_time + pcr_duration(step)
                }
            }
        };
        self.last_pcr = Some((pcr, time));
        self.push_segment(self.unassigned, time, Some(pcr));
        self.rate_anchor = self.last_due;
        self.rate_bytes = 0;
    }

    /// Times every unassigned packet at the average bitrate.
    fn assign_by_rate(&mut self) {
        while self.unassigned > 0 {
            let n = self.unassigned.min(RATE_SEGMENT_PACKETS);
            self.rate_bytes += (n * TS_PACKET_LEN) as u64;
            let due = self.rate_anchor + self.byte_time(self.rate_bytes);
            self.push_segment(n, due, None);
        }
    }

    fn push_segment(&mut self, packets: usize, due: Duration, pcr: Option<u64>) {
        let due = due.max(self.last_due);
        self.last_due = due;
        self.unassigned -= packets;
        self.segments.push_back(Segment { packets, due, pcr });
    }
}

/// PCR ticks (27 MHz) as a duration.
fn pcr_duration(ticks: u64) -> Duration {
    const HZ: u64 = 27_000_000;
    Duration::new(ticks / HZ, ((ticks % HZ) * 1_000 / 27) as u32)
}

/// Paces one on-demand file in real time. See the [module docs](self).
///
/// Life cycle: build with [`FilePacer::open`] or [`FilePacer::new`]
/// (positioned at the start of the file, paused), optionally
/// [`seek`](FilePacer::seek), [`start`](FilePacer::start), then call
/// [`next`](FilePacer::next) until it returns [`PacerStep::End`], sending
/// whatever it hands out and sleeping until the instant of a `Wait`.
#[derive(Debug)]
pub struct FilePacer<R = File> {
    reader: R,
    queue: Queue,
    aligner: PacketAligner,
    lead: Duration,
    /// File offset that the aligner's stream offsets count from.
    read_base: u64,
    /// File offset of the next read.
    read_pos: u64,
    /// The reader must seek to `read_pos` before reading.
    reposition: bool,
    eof: bool,
    read_buf: Vec<u8>,
    /// PAT + PMT to put in front of the next data (after a seek).
    pending_psi: Option<Bytes>,
    /// Media position at `started_at`, or the paused position.
    media_base: Duration,
    started_at: Option<Instant>,
}

impl FilePacer<File> {
    /// Opens the file that `index` was built from.
    pub fn open(path: &Path, index: FileIndex) -> io::Result<Self> {
        Ok(Self::new(File::open(path)?, index))
    }
}

impl<R: Read + Seek> FilePacer<R> {
    /// Paces `reader`, which must hold the bytes `index` was built from.
    /// Starts paused at the beginning of the file.
    pub fn new(reader: R, index: FileIndex) -> Self {
        Self {
            reader,
            queue: Queue::new(index),
            aligner: PacketAligner::new(),
            lead: DEFAULT_LEAD,
            read_base: 0,
            read_pos: 0,
            // The reader may not be at offset 0.
            reposition: true,
            eof: false,
            read_buf: vec![0; READ_LEN],
            pending_psi: None,
            media_base: Duration::ZERO,
            started_at: None,
        }
    }

    /// How far ahead of its due time data is released (default [`DEFAULT_LEAD`]).
    pub fn with_lead(mut self, lead: Duration) -> Self {
        self.lead = lead;
        self
    }

    pub fn index(&self) -> &FileIndex {
        &self.queue.index
    }

    pub fn is_playing(&self) -> bool {
        self.started_at.is_some()
    }

    /// Moves to the keyframe at or before `position` and pauses there.
    /// Returns its byte offset; [`position`](Self::position) then reports
    /// the keyframe's time (at or before the one asked for, as an RTSP
    /// `Range` reply should say). The next data sent starts with the
    /// file's PAT/PMT followed by that keyframe.
    pub fn seek(&mut self, position: Duration) -> u64 {
        let index = &self.queue.index;
        let (offset, time) = if self.queue.by_pcr {
            let offset = index.offset_for_time(position);
            (offset, index.time_for_offset(offset))
        } else {
            let offset = self.rate_offset_for_time(position);
            (offset, self.queue.byte_time(offset))
        };
        tracing::debug!(?position, offset, ?time, "pacer seek");
        self.queue.reset(time);
        self.aligner = PacketAligner::new();
        self.read_base = offset;
        self.read_pos = offset;
        self.reposition = true;
        self.eof = false;
        self.pending_psi = self.queue.index.psi.clone();
        self.media_base = time;
        self.started_at = None;
        offset
    }

    /// Bitrate fallback for seeking: the keyframe at or before the offset the
    /// average bitrate puts `position` at.
    fn rate_offset_for_time(&self, position: Duration) -> u64 {
        let index = &self.queue.index;
        let target = if index.duration.is_zero() {
            0
        } else {
            let bytes = u128::from(index.size) * position.as_nanos() / index.duration.as_nanos();
            u64::try_from(bytes).unwrap_or(u64::MAX)
        };
        index
            .entries
            .iter()
            .rev()
            .find(|entry| entry.random_access && entry.offset <= target)
            .map_or(0, |entry| entry.offset)
    }

    /// Starts (or resumes) playback at `now`. No effect while playing.
    pub fn start(&mut self, now: Instant) {
        if self.started_at.is_none() {
            self.started_at = Some(now);
        }
    }

    /// Pauses at `now` and returns the media position. Data already read
    /// stays buffered, so resuming continues with the very next byte.
    pub fn pause(&mut self, now: Instant) -> Duration {
        self.media_base = self.position(now);
        self.started_at = None;
        self.media_base
    }

    /// Media position at `now`: where playback is, not how far data has
    /// been sent (that runs up to the lead ahead). Stops at the end.
    pub fn position(&self, now: Instant) -> Duration {
        match self.started_at {
            Some(started) => (self.media_base + now.saturating_duration_since(started))
                .min(self.queue.index.duration.max(self.media_base)),
            None => self.media_base,
        }
    }

    /// What to do at `now`: data that is due, when to ask again, or the end.
    /// Reads the file as needed (at most a few 64 KiB reads per call).
    pub fn next(&mut self, now: Instant) -> io::Result<PacerStep> {
        let Some(started) = self.started_at else {
            return Ok(PacerStep::Paused);
        };
        let target = self.media_base + now.saturating_duration_since(started) + self.lead;
        let psi_packets = self
            .pending_psi
            .as_ref()
            .map_or(0, |psi| psi.len() / TS_PACKET_LEN);
        let limit = MAX_SEND_PACKETS - psi_packets;
        let mut taken = 0;
        let mut pcr = None;
        let mut media_time = Duration::ZERO;
        while taken < limit {
            if self.queue.segments.is_empty() {
                self.fill()?;
            }
            let Some(front) = self.queue.segments.front_mut() else {
                break;
            };
            if front.due > target {
                break;
            }
            let n = front.packets.min(limit - taken);
            taken += n;
            media_time = front.due;
            if n == front.packets {
                pcr = pcr.or(front.pcr);
                self.queue.segments.pop_front();
            } else {
                front.packets -= n;
            }
        }
        if taken == 0 {
            return Ok(match self.queue.segments.front() {
                Some(front) => {
                    // front.due > target, so this lies after `now`.
                    let wait = front.due.saturating_sub(self.media_base + self.lead);
                    PacerStep::Wait(started + wait)
                }
                None => PacerStep::End,
            });
        }
        let packets = self.queue.window.split_to(taken * TS_PACKET_LEN);
        let data = match self.pending_psi.take() {
            Some(psi) => {
                let mut data = BytesMut::with_capacity(psi.len() + packets.len());
                data.put_slice(&psi);
                data.put_slice(&packets);
                data.freeze()
            }
            None => packets.freeze(),
        };
        Ok(PacerStep::Send {
            data,
            pcr_90k: pcr.map(pcr_to_90khz),
            media_time,
        })
    }

    /// Reads until at least one segment is timed or the file ends.
    fn fill(&mut self) -> io::Result<()> {
        while self.queue.segments.is_empty() {
            if self.eof {
                // Packets after the last PCR: time them by bitrate.
                self.queue.assign_by_rate();
                return Ok(());
            }
            if self.reposition {
                self.reader.seek(SeekFrom::Start(self.read_pos))?;
                self.reposition = false;
            }
            let n = match self.reader.read(&mut self.read_buf) {
                Ok(n) => n,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => return Err(error),
            };
            let base = self.read_base;
            let queue = &mut self.queue;
            if n == 0 {
                self.aligner
                    .finish(|offset, packet| queue.add(base + offset, &packet));
                self.eof = true;
                continue;
            }
            self.read_pos += n as u64;
            self.aligner.push(&self.read_buf[..n], |offset, packet| {
                queue.add(base + offset, &packet)
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::index::{index_file, IndexEntry};
    use super::super::test_support::*;
    use super::super::ts::{PAT_PID, SYNC_BYTE};
    use super::*;
    use std::io::{Cursor, Write};
    use std::path::PathBuf;

    const MS: Duration = Duration::from_millis(1);
    const AV_STREAMS: &[(u8, u16)] = &[(0x1B, VIDEO_PID), (0x0F, AUDIO_PID)];

    fn fixture_path() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("src/media/testdata/small.ts")
    }

    fn fixture() -> (Vec<u8>, FileIndex) {
        let path = fixture_path();
        (std::fs::read(&path).unwrap(), index_file(&path).unwrap())
    }

    fn write_temp(data: &[u8]) -> tempfile::NamedTempFile {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(data).unwrap();
        file.flush().unwrap();
        file
    }

    /// PSI then one video packet per 40 ms frame, each with a PCR starting
    /// at `first_pcr` (27 MHz), a keyframe every 25 frames.
    fn synthetic_stream(frames: u64, first_pcr: u64) -> Vec<u8> {
        let mut stream = [
            pat_packet(PMT_PID, 0),
            pmt_packet(PMT_PID, VIDEO_PID, AV_STREAMS, 0),
        ]
        .concat();
        for frame in 0..frames {
            let es = if frame % 25 == 0 { H264_IDR } else { H264_P };
            let packet = PacketSpec::new(VIDEO_PID)
                .pusi()
                .cc(frame as u8)
                .pcr((first_pcr + frame * 40 * 27_000) % PCR_WRAP_27MHZ)
                .payload(&pes(0xE0, es))
                .build();
            stream.extend_from_slice(&packet);
        }
        stream
    }

    fn synthetic_pacer(stream: &[u8]) -> FilePacer<Cursor<Vec<u8>>> {
        let index = index_file(write_temp(stream).path()).unwrap();
        FilePacer::new(Cursor::new(stream.to_vec()), index)
    }

    /// One `Send` as seen by the test: when it happened and what it held.
    struct Sent {
        at: Instant,
        data: Bytes,
        pcr_90k: Option<u64>,
    }

    /// Drives the pacer from `now` with a fake clock that jumps straight to
    /// each `Wait` instant, until `End` or `until`.
    fn drive(
        pacer: &mut FilePacer<impl Read + Seek>,
        mut now: Instant,
        until: Option<Instant>,
    ) -> (Vec<Sent>, Instant) {
        let mut sent = Vec::new();
        for _ in 0..100_000 {
            match pacer.next(now).unwrap() {
                PacerStep::Send { data, pcr_90k, .. } => {
                    assert_eq!(data.len() % TS_PACKET_LEN, 0);
                    assert!(data.len() <= MAX_SEND_PACKETS * TS_PACKET_LEN);
                    sent.push(Sent {
                        at: now,
                        data,
                        pcr_90k,
                    });
                }
                PacerStep::Wait(at) => {
                    assert!(at > now, "Wait({at:?}) is not in the future of {now:?}");
                    if until.is_some_and(|until| at > until) {
                        return (sent, until.unwrap());
                    }
                    now = at;
                }
                PacerStep::End | PacerStep::Paused => return (sent, now),
            }
        }
        panic!("pacer did not finish");
    }

    fn concat(sent: &[Sent]) -> Vec<u8> {
        sent.iter().flat_map(|s| s.data.to_vec()).collect()
    }

    /// Media time (relative to the file's first PCR, unwrapped) of each PCR
    /// in `data`.
    fn pcr_times(data: &[u8], first_pcr: u64) -> Vec<Duration> {
        packets(data)
            .filter(|p| p.pid() == VIDEO_PID)
            .filter_map(|p| p.pcr())
            .map(|pcr| pcr_duration((pcr + PCR_WRAP_27MHZ - first_pcr) % PCR_WRAP_27MHZ))
            .collect()
    }

    #[test]
    fn releases_each_pcr_exactly_lead_before_it_is_due() {
        let stream = synthetic_stream(100, 0);
        let mut pacer = synthetic_pacer(&stream).with_lead(100 * MS);
        assert_eq!(pacer.next(Instant::now()).unwrap(), PacerStep::Paused);
        let t0 = Instant::now();
        pacer.start(t0);
        let (sent, _) = drive(&mut pacer, t0, None);
        assert_eq!(concat(&sent), stream);
        // Frames 0..=2 (PCR ≤ 100 ms) go at once with the PSI, then one
        // frame every 40 ms, each 100 ms ahead of its PCR.
        assert_eq!(sent[0].at, t0);
        assert_eq!(
            pcr_times(&sent[0].data, 0),
            vec![Duration::ZERO, 40 * MS, 80 * MS]
        );
        for s in &sent[1..] {
            let times = pcr_times(&s.data, 0);
            assert_eq!(times.len(), 1);
            assert_eq!(s.at - t0 + 100 * MS, times[0]);
            assert_eq!(s.pcr_90k, Some(times[0].as_millis() as u64 * 90));
        }
        assert_eq!(sent.len(), 98);
        assert_eq!(pacer.next(t0 + 3960 * MS).unwrap(), PacerStep::End);
    }

    #[test]
    fn paces_straight_through_pcr_wrap() {
        // Starts 2 s before the 33-bit PCR wraps.
        let first = PCR_WRAP_27MHZ - 2 * 27_000_000;
        let stream = synthetic_stream(100, first);
        let mut pacer = synthetic_pacer(&stream).with_lead(Duration::ZERO);
        let t0 = Instant::now();
        pacer.start(t0);
        let (sent, _) = drive(&mut pacer, t0, None);
        assert_eq!(concat(&sent), stream);
        let release: Vec<Duration> = sent.iter().map(|s| s.at - t0).collect();
        let expected: Vec<Duration> = (0..100).map(|i| i * 40 * MS).collect();
        assert_eq!(release, expected);
        for s in &sent {
            assert_eq!(pcr_times(&s.data, first), vec![s.at - t0]);
        }
    }

    #[test]
    fn real_file_takes_its_duration_with_a_stepping_clock() {
        let (file, index) = fixture();
        let duration = index.duration;
        let first_pcr = packets(&file).find_map(|p| p.pcr()).unwrap();
        let lead = DEFAULT_LEAD;
        let mut pacer = FilePacer::open(&fixture_path(), index).unwrap();
        let t0 = Instant::now();
        pacer.start(t0);
        let mut now = t0;
        let mut sent = Vec::new();
        let mut last_send = t0;
        let mut send_times = Vec::new();
        loop {
            match pacer.next(now).unwrap() {
                PacerStep::Send { data, .. } => {
                    // Nothing ahead of the lead.
                    for t in pcr_times(&data, first_pcr) {
                        assert!(t <= now - t0 + lead, "PCR at {t:?} sent at {:?}", now - t0);
                    }
                    last_send = now;
                    send_times.push(now);
                    sent.push(data);
                }
                PacerStep::Wait(at) => {
                    assert!(at > now);
                    now += 10 * MS;
                }
                PacerStep::End => break,
                PacerStep::Paused => unreachable!(),
            }
            assert!(now - t0 < 2 * duration, "runaway");
        }
        assert_eq!(sent.concat(), file);
        let total = (last_send - t0).as_secs_f64();
        let expected = duration.as_secs_f64();
        assert!(
            (total - expected).abs() <= 0.1 * expected,
            "released in {total} s, duration {expected} s"
        );
        // Spread over many clock steps, not a burst at the start.
        send_times.dedup();
        assert!(
            send_times.len() > 30,
            "{} distinct send times",
            send_times.len()
        );
        assert_eq!(pacer.next(now + 10 * MS).unwrap(), PacerStep::End);
        // Playback trails the data by the lead and stops at the end.
        assert_eq!(pacer.position(now), now - t0);
        assert_eq!(pacer.position(now + lead), duration);
    }

    #[test]
    fn seek_starts_with_psi_then_keyframe() {
        let (file, index) = fixture();
        let expected_offset = index.offset_for_time(Duration::from_secs(2));
        let keyframe_time = index.time_for_offset(expected_offset);
        let psi = index.psi.clone().unwrap();
        let mut pacer = FilePacer::open(&fixture_path(), index).unwrap();
        let offset = pacer.seek(Duration::from_secs(2));
        assert_eq!(offset, expected_offset);
        assert_ne!(offset, 0);
        let t0 = Instant::now();
        assert_eq!(pacer.position(t0), keyframe_time);
        assert!(keyframe_time <= Duration::from_secs(2) && keyframe_time > Duration::from_secs(1));
        pacer.start(t0);

        let PacerStep::Send { data, pcr_90k, .. } = pacer.next(t0).unwrap() else {
            panic!("keyframe data is due at once");
        };
        let first: Vec<TsPacket<'_>> = packets(&data).take(3).collect();
        assert_eq!(first[0].pid(), PAT_PID);
        assert_eq!(first[1].pid(), PMT_PID);
        assert_eq!(&data[..2 * TS_PACKET_LEN], &psi[..]);
        assert_eq!(first[2].pid(), VIDEO_PID);
        assert!(first[2].random_access_indicator() && first[2].payload_unit_start());
        // The keyframe carries the PCR that the index timed it by.
        assert_eq!(
            pcr_90k,
            first[2].pcr_90k(),
            "first PCR of the chunk is the keyframe's"
        );
        let start = offset as usize;
        assert_eq!(
            &data[2 * TS_PACKET_LEN..],
            &file[start..start + data.len() - 2 * TS_PACKET_LEN]
        );

        let (rest, end) = drive(&mut pacer, t0, None);
        let mut all = data.to_vec();
        all.extend_from_slice(&concat(&rest));
        assert_eq!(&all[2 * TS_PACKET_LEN..], &file[start..]);
        // Only the remaining media time is paced.
        let remaining = pacer.index().duration - keyframe_time;
        let took = end - t0;
        assert!(
            took + DEFAULT_LEAD >= remaining - 50 * MS && took <= remaining,
            "{took:?} for {remaining:?}"
        );
    }

    #[test]
    fn pause_keeps_position_and_resumes_at_the_same_byte() {
        let stream = synthetic_stream(100, 0);
        let mut pacer = synthetic_pacer(&stream).with_lead(100 * MS);
        let t0 = Instant::now();
        pacer.start(t0);
        let (mut sent, paused_at) = drive(&mut pacer, t0, Some(t0 + 1010 * MS));
        assert_eq!(pacer.pause(paused_at), 1010 * MS);
        let before_pause = concat(&sent).len();
        // Sent up to the lead: frames with PCR ≤ 1110 ms.
        assert_eq!(before_pause, (2 + 28) * TS_PACKET_LEN);

        let later = paused_at + Duration::from_secs(30);
        assert_eq!(pacer.next(later).unwrap(), PacerStep::Paused);
        assert_eq!(pacer.position(later), 1010 * MS);
        assert!(!pacer.is_playing());

        pacer.start(later);
        assert!(pacer.is_playing());
        assert_eq!(pacer.position(later + 5 * MS), 1015 * MS);
        // Frame 28 (PCR 1120 ms) is due 10 ms after resuming, not before.
        assert_eq!(pacer.next(later).unwrap(), PacerStep::Wait(later + 10 * MS));
        let (rest, _) = drive(&mut pacer, later, None);
        assert_eq!(rest[0].at, later + 10 * MS);
        assert_eq!(pcr_times(&rest[0].data, 0), vec![1120 * MS]);
        sent.extend(rest);
        assert_eq!(concat(&sent), stream);
    }

    #[test]
    fn end_at_eof_and_after() {
        let stream = synthetic_stream(5, 0);
        let mut pacer = synthetic_pacer(&stream);
        let t0 = Instant::now();
        pacer.start(t0);
        let PacerStep::Send { data, .. } = pacer.next(t0).unwrap() else {
            panic!("whole 160 ms file is within lead + a step");
        };
        assert_eq!(data.len(), 2 * TS_PACKET_LEN + 4 * TS_PACKET_LEN);
        let PacerStep::Wait(at) = pacer.next(t0).unwrap() else {
            panic!("last frame is due at 160 ms");
        };
        assert_eq!(at, t0 + 10 * MS);
        let PacerStep::Send { data, .. } = pacer.next(at).unwrap() else {
            panic!("due");
        };
        assert_eq!(data.len(), TS_PACKET_LEN);
        for _ in 0..3 {
            assert_eq!(pacer.next(at).unwrap(), PacerStep::End);
        }
        // A seek after the end plays again from the keyframe.
        assert_eq!(pacer.seek(Duration::ZERO), 2 * TS_PACKET_LEN as u64);
        pacer.start(at);
        let (sent, _) = drive(&mut pacer, at, None);
        assert_eq!(concat(&sent), stream);
    }

    #[test]
    fn long_file_is_sent_in_bounded_chunks() {
        // 600 packets per PCR: a burst that must be split.
        let mut stream = synthetic_stream(1, 0);
        for i in 0..600u32 {
            stream.extend_from_slice(
                &PacketSpec::new(AUDIO_PID)
                    .cc(i as u8)
                    .payload(&[1; 184])
                    .build(),
            );
        }
        stream.extend_from_slice(
            &PacketSpec::new(VIDEO_PID)
                .pusi()
                .pcr(27_000_000)
                .payload(&pes(0xE0, H264_P))
                .build(),
        );
        let mut pacer = synthetic_pacer(&stream);
        let t0 = Instant::now();
        pacer.start(t0);
        let (sent, _) = drive(&mut pacer, t0, None);
        assert_eq!(concat(&sent), stream);
        assert!(sent
            .iter()
            .all(|s| s.data.len() <= MAX_SEND_PACKETS * TS_PACKET_LEN));
        // Everything up to the 1 s PCR leaves at 1 s - lead, in 64-packet pieces.
        let at_one_second: Vec<&Sent> = sent.iter().filter(|s| s.at == t0 + 850 * MS).collect();
        assert_eq!(at_one_second.len(), 10);
        assert_eq!(at_one_second.last().unwrap().pcr_90k, Some(90_000));
    }

    #[test]
    fn file_without_pcr_is_paced_by_average_bitrate() {
        let packets_n = 50;
        let mut stream = Vec::new();
        for i in 0..packets_n {
            let mut spec = PacketSpec::new(VIDEO_PID).cc(i as u8);
            if i % 10 == 0 {
                spec = spec.rai().pusi();
            }
            stream.extend_from_slice(&spec.payload(&[i as u8; 100]).build());
        }
        let size = stream.len() as u64;
        let index = FileIndex {
            duration: Duration::from_secs(2),
            size,
            entries: (0..5)
                .map(|k| IndexEntry {
                    time: Duration::ZERO,
                    offset: k * 10 * TS_PACKET_LEN as u64,
                    random_access: true,
                })
                .collect(),
            psi: None,
        };
        let mut pacer =
            FilePacer::new(Cursor::new(stream.clone()), index).with_lead(Duration::ZERO);
        let t0 = Instant::now();
        pacer.start(t0);
        // 40 ms per packet; released in 7-packet groups at each group's end.
        assert_eq!(pacer.next(t0).unwrap(), PacerStep::Wait(t0 + 280 * MS));
        let (sent, end) = drive(&mut pacer, t0, None);
        assert_eq!(concat(&sent), stream);
        assert_eq!(sent[0].at, t0 + 280 * MS);
        assert_eq!(sent[0].data.len(), 7 * TS_PACKET_LEN);
        assert_eq!(end, t0 + Duration::from_secs(2));
        assert!(sent.iter().all(|s| s.pcr_90k.is_none()));

        // Seeking uses the same bitrate: 1 s is byte 25 * 188, keyframe at 20.
        let offset = pacer.seek(Duration::from_secs(1));
        assert_eq!(offset, 20 * TS_PACKET_LEN as u64);
        assert_eq!(pacer.position(end), 800 * MS);
        pacer.start(end);
        let (sent, _) = drive(&mut pacer, end, None);
        assert_eq!(concat(&sent), &stream[20 * TS_PACKET_LEN..]);
        assert_eq!(sent[0].at, end + 280 * MS);
    }

    #[test]
    fn skips_garbage_between_packets() {
        let clean = synthetic_stream(30, 0);
        let mut dirty = clean[..10 * TS_PACKET_LEN].to_vec();
        dirty.extend_from_slice(&[0x00, SYNC_BYTE, 0x12]);
        dirty.extend_from_slice(&clean[10 * TS_PACKET_LEN..]);
        let mut pacer = synthetic_pacer(&dirty).with_lead(Duration::from_secs(5));
        pacer.start(Instant::now());
        let (sent, _) = drive(&mut pacer, Instant::now(), None);
        assert_eq!(concat(&sent), clean);
    }

    #[test]
    fn reports_read_errors() {
        struct Failing;
        impl Read for Failing {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::Error::other("disk gone"))
            }
        }
        impl Seek for Failing {
            fn seek(&mut self, _: SeekFrom) -> io::Result<u64> {
                Ok(0)
            }
        }
        let (_, index) = fixture();
        let mut pacer = FilePacer::new(Failing, index);
        let t0 = Instant::now();
        pacer.start(t0);
        let error = pacer.next(t0).unwrap_err();
        assert_eq!(error.to_string(), "disk gone");
    }
}

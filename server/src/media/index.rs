//! On-demand file index: one streaming pass over an MPEG-TS file that maps
//! PCR time to byte offsets, so playback can seek by time to a
//! random-access point and pace sending at the stream's own rate.
//!
//! Random-access points are found with the same [`ProgramTracker`] logic as
//! live ingest.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use thiserror::Error;

use super::ingest::ProgramTracker;
use super::ts::{PacketAligner, TsPacket, PCR_WRAP_27MHZ, TS_PACKET_LEN};

/// Read size; a whole number of packets keeps reads aligned in clean files.
const READ_BUFFER_LEN: usize = 1024 * TS_PACKET_LEN;
/// Give up on a file that yields no packet within this many bytes.
const SYNC_PROBE_LEN: u64 = READ_BUFFER_LEN as u64;
/// PCR entries closer together than this add size but no seek precision.
const PCR_ENTRY_INTERVAL: Duration = Duration::from_millis(100);
/// PCR must arrive at least every 100 ms; a larger forward jump, like any
/// backward one, is a timebase discontinuity (e.g. concatenated recordings),
/// not elapsed time.
const MAX_PCR_STEP_27MHZ: u64 = 10 * 27_000_000;

const PCR_HZ: u64 = 27_000_000;
/// The first bytes of a file, kept to tell a file that was appended to (same start) from one
/// that was rewritten.
const HEAD_LEN: usize = 4096;

#[derive(Debug, Error)]
pub enum IndexError {
    #[error("failed to read {}: {source}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{}: not an MPEG-TS file: no sync byte found in the first {scanned} bytes", .path.display())]
    NotTransportStream { path: PathBuf, scanned: u64 },
    #[error("{}: no PCR found", .path.display())]
    NoPcr { path: PathBuf },
}

/// One indexed packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexEntry {
    /// PCR-relative time from the file's first PCR (the latest PCR at or
    /// before this packet; zero before the first PCR).
    pub time: Duration,
    /// Byte offset of the packet in the file.
    pub offset: u64,
    pub random_access: bool,
}

/// Time/offset map of one file. Entries are in file order, so both their
/// offsets and times are non-decreasing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileIndex {
    /// Last PCR minus first PCR, wrap-arounds and discontinuities accounted for.
    pub duration: Duration,
    /// Bytes read from the file.
    pub size: u64,
    /// An entry for every random-access packet, plus PCR entries spaced at
    /// least 100 ms apart (every PCR arrives within 100 ms, so gaps stay small).
    pub entries: Vec<IndexEntry>,
    /// First complete PAT + PMT packets, to send before data from a seek point.
    pub psi: Option<Bytes>,
}

impl FileIndex {
    /// Byte offset of the last random-access point at or before `t` (0 if none).
    pub fn offset_for_time(&self, t: Duration) -> u64 {
        let end = self.entries.partition_point(|entry| entry.time <= t);
        self.entries[..end]
            .iter()
            .rev()
            .find(|entry| entry.random_access)
            .map_or(0, |entry| entry.offset)
    }

    /// Stream time at `offset`, interpolated between the surrounding entries
    /// (and the end of the file) so pacing is smooth between PCRs.
    pub fn time_for_offset(&self, offset: u64) -> Duration {
        let next = self.entries.partition_point(|entry| entry.offset <= offset);
        let Some(before) = next.checked_sub(1).map(|i| self.entries[i]) else {
            return Duration::ZERO;
        };
        let (after_offset, after_time) = self
            .entries
            .get(next)
            .map_or((self.size, self.duration), |entry| {
                (entry.offset, entry.time)
            });
        interpolate(
            (before.offset, before.time),
            (after_offset, after_time),
            offset,
        )
    }
}

fn interpolate(from: (u64, Duration), to: (u64, Duration), offset: u64) -> Duration {
    let (from_offset, from_time) = from;
    let (to_offset, to_time) = to;
    if to_offset <= from_offset || to_time <= from_time || offset <= from_offset {
        return from_time;
    }
    let span = (to_time - from_time).as_nanos();
    let progress = u128::from(offset.min(to_offset) - from_offset);
    let extra = span * progress / u128::from(to_offset - from_offset);
    from_time + Duration::from_nanos(u64::try_from(extra).unwrap_or(u64::MAX))
}

/// Where an index build stopped, so that a file that grows (a recording still being written)
/// is indexed from there rather than from its start again.
#[derive(Debug, Clone, Default)]
pub struct IndexProgress {
    aligner: PacketAligner,
    builder: IndexBuilder,
    /// Bytes of the file read so far.
    read: u64,
    /// The file's first bytes when it was first read.
    head: Vec<u8>,
}

impl IndexProgress {
    /// Bytes of the file already indexed.
    pub fn indexed_bytes(&self) -> u64 {
        self.read
    }
}

/// Indexes the MPEG-TS file at `path` in one buffered pass.
pub fn index_file(path: &Path) -> Result<FileIndex, IndexError> {
    index_from(path, None).0
}

/// Indexes `path`, continuing from `progress` if the file only grew since (same first bytes,
/// not shorter); else from its start. Returns the index (or why there is none, such as no PCR
/// yet) and where to continue when the file grows again (`None` if it is not a TS file).
pub fn index_from(
    path: &Path,
    progress: Option<IndexProgress>,
) -> (Result<FileIndex, IndexError>, Option<IndexProgress>) {
    match index_pass(path, progress) {
        Ok((index, progress)) => (index, Some(progress)),
        Err(error) => (Err(error), None),
    }
}

/// Opens `path` positioned where `progress` stopped, if it still applies.
fn resume(
    path: &Path,
    progress: Option<IndexProgress>,
) -> io::Result<(BufReader<File>, IndexProgress)> {
    let mut file = File::open(path)?;
    if let Some(progress) = progress {
        let mut head = vec![0u8; progress.head.len()];
        let grown = file.metadata()?.len() >= progress.read;
        if grown && file.read_exact(&mut head).is_ok() && head == progress.head {
            file.seek(SeekFrom::Start(progress.read))?;
            return Ok((BufReader::with_capacity(READ_BUFFER_LEN, file), progress));
        }
        file.seek(SeekFrom::Start(0))?;
    }
    let reader = BufReader::with_capacity(READ_BUFFER_LEN, file);
    Ok((reader, IndexProgress::default()))
}

/// One pass from `progress` to the end of the file: `Err` only when the file cannot be read
/// or is not TS; the index itself may still be missing (no PCR yet).
#[allow(clippy::type_complexity)]
fn index_pass(
    path: &Path,
    progress: Option<IndexProgress>,
) -> Result<(Result<FileIndex, IndexError>, IndexProgress), IndexError> {
    let io_error = |source| IndexError::Io {
        path: path.to_owned(),
        source,
    };
    let (mut reader, progress) = resume(path, progress).map_err(io_error)?;
    let IndexProgress {
        mut aligner,
        mut builder,
        mut read,
        mut head,
    } = progress;
    loop {
        let buf = match reader.fill_buf() {
            Ok([]) => break,
            Ok(buf) => buf,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(io_error(error)),
        };
        if head.len() < HEAD_LEN {
            head.extend_from_slice(&buf[..buf.len().min(HEAD_LEN - head.len())]);
        }
        aligner.push(buf, |offset, packet| builder.add(offset, &packet));
        let len = buf.len();
        reader.consume(len);
        read += len as u64;
        if builder.packets == 0 && read >= SYNC_PROBE_LEN {
            return Err(IndexError::NotTransportStream {
                path: path.to_owned(),
                scanned: read,
            });
        }
    }
    let progress = IndexProgress {
        aligner: aligner.clone(),
        builder: builder.clone(),
        read,
        head,
    };
    let aligner_stats = (aligner.resyncs(), aligner.skipped_bytes());
    aligner.finish(|offset, packet| builder.add(offset, &packet));
    Ok((finish(path, builder, read, aligner_stats), progress))
}

/// The index of everything read, once the last packet is flushed.
fn finish(
    path: &Path,
    builder: IndexBuilder,
    read: u64,
    (resyncs, skipped_bytes): (u64, u64),
) -> Result<FileIndex, IndexError> {
    if builder.packets == 0 {
        return Err(IndexError::NotTransportStream {
            path: path.to_owned(),
            scanned: read,
        });
    }
    let Some(duration) = builder.clock.elapsed() else {
        return Err(IndexError::NoPcr {
            path: path.to_owned(),
        });
    };
    tracing::debug!(
        path = %path.display(),
        ?duration,
        entries = builder.entries.len(),
        resyncs,
        skipped_bytes,
        "indexed TS file"
    );
    Ok(FileIndex {
        duration,
        size: read,
        entries: builder.entries,
        psi: builder.psi,
    })
}

#[derive(Debug, Default, Clone)]
struct IndexBuilder {
    tracker: ProgramTracker,
    clock: PcrClock,
    packets: u64,
    entries: Vec<IndexEntry>,
    last_pcr_entry: Option<Duration>,
    psi: Option<Bytes>,
}

impl IndexBuilder {
    fn add(&mut self, offset: u64, packet: &TsPacket<'_>) {
        self.packets += 1;
        let info = self.tracker.inspect(packet);
        if self.psi.is_none() {
            self.psi = self.tracker.psi();
        }
        let mut pcr_entry_due = false;
        if let Some(pcr) = info.pcr {
            self.clock.observe(pcr, packet.discontinuity_indicator());
            let now = self.clock.elapsed().unwrap_or_default();
            pcr_entry_due = match self.last_pcr_entry {
                Some(last) => now >= last + PCR_ENTRY_INTERVAL,
                None => true,
            };
        }
        if info.random_access || pcr_entry_due {
            let time = self.clock.elapsed().unwrap_or_default();
            if pcr_entry_due {
                self.last_pcr_entry = Some(time);
            }
            self.entries.push(IndexEntry {
                time,
                offset,
                random_access: info.random_access,
            });
        }
    }
}

/// Turns raw PCR samples into elapsed time, unwrapping the 33-bit base and
/// bridging discontinuities so time never runs backwards.
#[derive(Debug, Default, Clone)]
struct PcrClock {
    last: Option<u64>,
    elapsed_27mhz: u64,
}

impl PcrClock {
    fn observe(&mut self, pcr: u64, discontinuity: bool) {
        if let Some(last) = self.last {
            let step = (pcr + PCR_WRAP_27MHZ - last % PCR_WRAP_27MHZ) % PCR_WRAP_27MHZ;
            if discontinuity || step > MAX_PCR_STEP_27MHZ {
                tracing::debug!(last, pcr, "PCR discontinuity");
            } else {
                self.elapsed_27mhz += step;
            }
        }
        self.last = Some(pcr);
    }

    /// Time since the first PCR, or `None` before any PCR.
    fn elapsed(&self) -> Option<Duration> {
        self.last?;
        let ticks = self.elapsed_27mhz;
        let nanos = (ticks % PCR_HZ) * 1_000 / 27;
        Some(Duration::new(ticks / PCR_HZ, nanos as u32))
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::super::ts::SYNC_BYTE;
    use super::*;
    use std::io::Write;

    const AV_STREAMS: &[(u8, u16)] = &[(0x1B, VIDEO_PID), (0x0F, AUDIO_PID)];

    fn write_temp(data: &[u8]) -> tempfile::NamedTempFile {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(data).unwrap();
        file.flush().unwrap();
        file
    }

    /// One packet per 40 ms frame, a keyframe every `gop` frames, each video
    /// packet carrying a PCR that starts at `first_pcr` (27 MHz).
    fn synthetic_stream(frames: u64, gop: u64, first_pcr: u64) -> Vec<u8> {
        let mut stream = [
            pat_packet(PMT_PID, 0),
            pmt_packet(PMT_PID, VIDEO_PID, AV_STREAMS, 0),
        ]
        .concat();
        for frame in 0..frames {
            let pcr = (first_pcr + frame * 40 * 27_000) % PCR_WRAP_27MHZ;
            let es = if frame % gop == 0 { H264_IDR } else { H264_P };
            let packet = PacketSpec::new(VIDEO_PID)
                .pusi()
                .cc(frame as u8)
                .pcr(pcr)
                .payload(&pes(0xE0, es))
                .build();
            stream.extend_from_slice(&packet);
        }
        stream
    }

    #[test]
    fn indexes_synthetic_stream() {
        let stream = synthetic_stream(100, 25, 0);
        let file = write_temp(&stream);
        let index = index_file(file.path()).unwrap();
        assert_eq!(index.size, stream.len() as u64);
        assert_eq!(index.duration, Duration::from_millis(99 * 40));
        let ra: Vec<(Duration, u64)> = index
            .entries
            .iter()
            .filter(|e| e.random_access)
            .map(|e| (e.time, e.offset))
            .collect();
        let expected: Vec<(Duration, u64)> = (0..4)
            .map(|k| (Duration::from_secs(k), (2 + 25 * k) * TS_PACKET_LEN as u64))
            .collect();
        assert_eq!(ra, expected);
        // PCRs every 40 ms thinned to one entry per 120 ms (0..=3960 ms),
        // plus the keyframes at 1 and 2 s that fall between them (3 s is on one).
        assert_eq!(index.entries.len(), 34 + 2);
        assert_eq!(index.psi.as_ref().map(Bytes::len), Some(2 * TS_PACKET_LEN));

        assert_eq!(index.offset_for_time(Duration::ZERO), 2 * 188);
        assert_eq!(index.offset_for_time(Duration::from_millis(999)), 2 * 188);
        assert_eq!(index.offset_for_time(Duration::from_secs(1)), 27 * 188);
        assert_eq!(index.offset_for_time(Duration::from_secs(60)), 77 * 188);

        assert_eq!(index.time_for_offset(0), Duration::ZERO);
        assert_eq!(index.time_for_offset(27 * 188), Duration::from_secs(1));
        // Between two entries 3 packets (120 ms) apart, interpolated.
        let entry = index
            .entries
            .iter()
            .find(|e| e.time == Duration::from_millis(1200))
            .unwrap();
        let next = index
            .entries
            .iter()
            .find(|e| e.offset > entry.offset)
            .unwrap();
        let mid = entry.offset + (next.offset - entry.offset) / 2;
        let t = index.time_for_offset(mid);
        assert!(t > entry.time && t < next.time, "{t:?}");
        assert_eq!(index.time_for_offset(u64::MAX), index.duration);
    }

    #[test]
    fn unwraps_pcr_wraparound() {
        // Start 2 s before the 33-bit wrap.
        let first = PCR_WRAP_27MHZ - 2 * 27_000_000;
        let file = write_temp(&synthetic_stream(100, 25, first));
        let index = index_file(file.path()).unwrap();
        assert_eq!(index.duration, Duration::from_millis(99 * 40));
        let times: Vec<Duration> = index.entries.iter().map(|e| e.time).collect();
        assert!(times.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(
            index.offset_for_time(Duration::from_secs(3)),
            77 * TS_PACKET_LEN as u64
        );
    }

    #[test]
    fn backward_pcr_jump_is_a_discontinuity() {
        let mut stream = synthetic_stream(50, 25, 10 * 27_000_000);
        let second = synthetic_stream(50, 25, 0);
        stream.extend_from_slice(&second[2 * TS_PACKET_LEN..]);
        let index = index_file(write_temp(&stream).path()).unwrap();
        // 49 steps of 40 ms in each half; the jump itself adds nothing.
        assert_eq!(index.duration, Duration::from_millis(98 * 40));
    }

    #[test]
    fn flagged_discontinuity_adds_no_time() {
        let mut stream = synthetic_stream(10, 25, 0);
        // Jumps 5 s ahead, which would otherwise count as elapsed time.
        let jump = PacketSpec::new(VIDEO_PID)
            .pusi()
            .discontinuity()
            .pcr(5 * 27_000_000)
            .payload(&pes(0xE0, H264_P))
            .build();
        stream.extend_from_slice(&jump);
        let index = index_file(write_temp(&stream).path()).unwrap();
        assert_eq!(index.duration, Duration::from_millis(9 * 40));
    }

    #[test]
    fn skips_leading_garbage() {
        let mut data = vec![0x00, SYNC_BYTE, 0x12];
        data.extend_from_slice(&synthetic_stream(30, 25, 0));
        let index = index_file(write_temp(&data).path()).unwrap();
        assert_eq!(index.entries[0].offset, 3 + 2 * TS_PACKET_LEN as u64);
        assert_eq!(index.offset_for_time(Duration::from_secs(1)), 3 + 27 * 188);
    }

    #[test]
    fn reports_errors() {
        let missing = Path::new("/nonexistent/dir/file.ts");
        let error = index_file(missing).unwrap_err();
        assert!(matches!(error, IndexError::Io { .. }));
        assert!(error.to_string().contains("/nonexistent/dir/file.ts"));

        let empty = write_temp(&[]);
        assert!(matches!(
            index_file(empty.path()),
            Err(IndexError::NotTransportStream { scanned: 0, .. })
        ));

        let text = write_temp(&b"not a transport stream ".repeat(20_000));
        let error = index_file(text.path()).unwrap_err();
        assert!(matches!(error, IndexError::NotTransportStream { .. }));
        assert!(error.to_string().contains("not an MPEG-TS file"));

        let no_pcr: Vec<u8> = [
            pat_packet(PMT_PID, 0),
            pmt_packet(PMT_PID, VIDEO_PID, AV_STREAMS, 0),
            PacketSpec::new(VIDEO_PID)
                .pusi()
                .payload(&pes(0xE0, H264_IDR))
                .build(),
        ]
        .concat();
        let error = index_file(write_temp(&no_pcr).path()).unwrap_err();
        assert!(matches!(error, IndexError::NoPcr { .. }));
        assert!(error.to_string().ends_with("no PCR found"));
    }

    fn fixture_path() -> &'static Path {
        Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/src/media/testdata/small.ts"
        ))
    }

    #[test]
    fn indexes_real_file() {
        let index = index_file(fixture_path()).unwrap();
        let data = std::fs::read(fixture_path()).unwrap();
        assert_eq!(index.size, data.len() as u64);
        assert!(
            index.duration > Duration::from_millis(3500)
                && index.duration < Duration::from_millis(4500),
            "duration {:?}",
            index.duration
        );
        let ra_entries: Vec<&IndexEntry> =
            index.entries.iter().filter(|e| e.random_access).collect();
        assert!((3..=5).contains(&ra_entries.len()));
        // No gaps longer than ~0.5 s between entries.
        let times: Vec<Duration> = index.entries.iter().map(|e| e.time).collect();
        assert!(times
            .windows(2)
            .all(|w| w[1] - w[0] <= Duration::from_millis(500)));

        let offset = index.offset_for_time(Duration::from_secs(2));
        assert_ne!(offset, 0);
        assert_eq!(offset % TS_PACKET_LEN as u64, 0);
        let start = offset as usize;
        let packet = TsPacket::new(&data[start..start + TS_PACKET_LEN]).unwrap();
        assert_eq!(packet.pid(), 0x0100);
        assert!(packet.payload_unit_start());
        assert!(packet.random_access_indicator());
        let entry = index.entries.iter().find(|e| e.offset == offset).unwrap();
        assert!(entry.random_access);
        assert!(entry.time <= Duration::from_secs(2));
        assert!(entry.time > Duration::from_millis(900));

        let psi = index.psi.as_ref().unwrap();
        assert_eq!(psi.len(), 2 * TS_PACKET_LEN);
        assert_eq!(index.time_for_offset(offset), entry.time);
    }

    #[test]
    fn a_grown_file_is_indexed_on_from_where_the_last_pass_stopped() {
        let stream = synthetic_stream(300, 25, 0);
        // Cut mid-packet: the partial packet waits in the progress.
        let cut = 100 * TS_PACKET_LEN + 77;
        let mut file = write_temp(&stream[..cut]);
        let (first, progress) = index_from(file.path(), None);
        assert_eq!(first.unwrap().size, cut as u64);
        let progress = progress.expect("progress");
        assert_eq!(progress.indexed_bytes(), cut as u64);

        file.write_all(&stream[cut..]).unwrap();
        file.flush().unwrap();
        let (grown, progress) = index_from(file.path(), Some(progress));
        assert_eq!(grown.unwrap(), index_file(file.path()).unwrap());
        assert_eq!(progress.unwrap().indexed_bytes(), stream.len() as u64);
    }

    #[test]
    fn a_rewritten_file_is_indexed_from_its_start() {
        let file = write_temp(&synthetic_stream(100, 25, 0));
        let (_, progress) = index_from(file.path(), None);
        // Same length or longer, but a different start: a new recording, not a longer one.
        let rewritten = synthetic_stream(200, 25, 27_000_000 * 100);
        std::fs::write(file.path(), &rewritten).unwrap();
        let (index, _) = index_from(file.path(), progress);
        assert_eq!(index.unwrap(), index_file(file.path()).unwrap());
    }

    #[test]
    fn a_growing_file_without_pcr_keeps_its_progress() {
        let no_pcr = PacketSpec::new(VIDEO_PID).payload(&[0; 184]).build();
        let mut file = write_temp(&no_pcr.repeat(2000));
        let (index, progress) = index_from(file.path(), None);
        assert!(matches!(index, Err(IndexError::NoPcr { .. })));
        file.write_all(&no_pcr.repeat(1000)).unwrap();
        file.flush().unwrap();
        let (index, progress) = index_from(file.path(), progress);
        assert!(matches!(index, Err(IndexError::NoPcr { .. })));
        assert_eq!(progress.unwrap().indexed_bytes(), 3000 * 188);
    }
}

//! Whether a stream a load client receives starts cleanly: a PAT before the first video PES,
//! and that PES a keyframe. Also the few transport-stream packet readers that needs (the ideal
//! server uses them to find its keyframes).

use crate::ts::TS_PACKET;

/// Packets after which a stream that has shown no video PES yet counts as not clean.
const JOIN_CHECK_PACKETS: usize = 4000;

/// Whether a stream starts cleanly: a PAT before the first video PES, and that PES starting
/// a keyframe (random access indicator, or an IDR slice or SPS in its first packet).
#[derive(Default)]
pub struct JoinCheck {
    pending: Vec<u8>,
    packets: usize,
    saw_pat: bool,
}

impl JoinCheck {
    /// Feed the next bytes of the stream; the verdict once there is one.
    pub fn feed(&mut self, data: &[u8]) -> Option<bool> {
        self.pending.extend_from_slice(data);
        let whole = self.pending.len() / TS_PACKET * TS_PACKET;
        let mut verdict = None;
        for packet in self.pending[..whole].chunks_exact(TS_PACKET) {
            self.packets += 1;
            if packet[0] != 0x47 || self.packets > JOIN_CHECK_PACKETS {
                verdict = Some(false);
                break;
            }
            if pid(packet) == 0 {
                self.saw_pat = true;
            }
            if let Some(keyframe) = video_pes_start(packet) {
                verdict = Some(self.saw_pat && keyframe);
                break;
            }
        }
        self.pending.drain(..whole);
        verdict
    }
}

pub fn pid(packet: &[u8]) -> u16 {
    u16::from_be_bytes([packet[1] & 0x1f, packet[2]])
}

/// The payload of a TS packet, after its adaptation field.
pub fn payload(packet: &[u8]) -> &[u8] {
    let mut start = 4;
    if packet[3] & 0x20 != 0 {
        start += 1 + usize::from(packet[4]);
    }
    if packet[3] & 0x10 == 0 || start >= packet.len() {
        return &[];
    }
    &packet[start..]
}

/// For a packet that starts a video PES: whether it starts a keyframe.
pub fn video_pes_start(packet: &[u8]) -> Option<bool> {
    let unit_start = packet[1] & 0x40 != 0;
    let data = payload(packet);
    if !unit_start || data.len() < 9 || data[..3] != [0, 0, 1] || data[3] & 0xf0 != 0xe0 {
        return None;
    }
    let random_access = packet[3] & 0x20 != 0 && packet[4] > 0 && packet[5] & 0x40 != 0;
    let es = data.get(9 + usize::from(data[8])..).unwrap_or(&[]);
    let keyframe_nal = es
        .windows(4)
        .any(|w| w[..3] == [0, 0, 1] && matches!(w[3] & 0x1f, 5 | 7));
    Some(random_access || keyframe_nal)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(pid: u16, unit_start: bool, random_access: bool, payload: &[u8]) -> Vec<u8> {
        let mut p = vec![0x47, (pid >> 8) as u8, pid as u8, 0x30];
        if unit_start {
            p[1] |= 0x40;
        }
        p.extend_from_slice(&[1, if random_access { 0x40 } else { 0 }]);
        p.extend_from_slice(payload);
        p.resize(TS_PACKET, 0xff);
        p
    }

    const VIDEO_PES: [u8; 9] = [0, 0, 1, 0xe0, 0, 0, 0x80, 0x80, 0];

    #[test]
    fn a_stream_is_clean_with_pat_first_and_a_keyframe() {
        let mut stream = packet(0, true, false, &[0]);
        stream.extend(packet(0x100, true, true, &VIDEO_PES));
        let mut check = JoinCheck::default();
        assert_eq!(check.feed(&stream[..100]), None);
        assert_eq!(check.feed(&stream[100..]), Some(true));
    }

    #[test]
    fn a_stream_is_not_clean_without_pat_or_without_a_keyframe() {
        let mut check = JoinCheck::default();
        assert_eq!(
            check.feed(&packet(0x100, true, true, &VIDEO_PES)),
            Some(false)
        );
        let mut stream = packet(0, true, false, &[0]);
        stream.extend(packet(0x100, true, false, &VIDEO_PES));
        assert_eq!(JoinCheck::default().feed(&stream), Some(false));
        let mut idr = VIDEO_PES.to_vec();
        idr.extend_from_slice(&[0, 0, 0, 1, 0x65]);
        let mut stream = packet(0, true, false, &[0]);
        stream.extend(packet(0x100, true, false, &idr));
        assert_eq!(JoinCheck::default().feed(&stream), Some(true));
    }

    #[test]
    fn a_stream_without_sync_bytes_is_not_clean() {
        let mut stream = packet(0, true, false, &[0]);
        stream[TS_PACKET - 1] = 0;
        stream.extend(vec![0u8; TS_PACKET]);
        assert_eq!(JoinCheck::default().feed(&stream), Some(false));
    }
}

//! RTP over UDP as a load client receives it: one `recvmsg` at a time, optionally with UDP
//! generic receive offload (`UDP_GRO`), where one receive may carry several datagrams of one
//! size back to back (the last may be shorter) and a control message gives that size. Also
//! the check of RTP sequence continuity.
//!
//! Why GRO: on loopback the receiving half of every datagram runs inside the sender's system
//! call and is charged to the sending server. A socket with `UDP_GRO` takes a segmented
//! (`UDP_SEGMENT`) send as one buffer instead of one datagram per packet, which is closer to
//! what a remote receiver costs the sender.

use std::io;
use std::os::fd::RawFd;

/// `setsockopt` option and control message type of UDP GRO (linux/udp.h).
const UDP_GRO: libc::c_int = 104;

/// Ask the kernel to hand this socket coalesced datagrams.
pub fn enable_gro(fd: RawFd) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: `on` outlives the call and the length is its size.
    let result = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_UDP,
            UDP_GRO,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if result == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// What one receive got.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Received {
    /// Bytes in the buffer.
    pub len: usize,
    /// With GRO: the size of each datagram but the last.
    pub segment: Option<usize>,
}

/// One non-blocking `recvmsg` on `fd` into `buf`, reading the GRO segment size if the kernel
/// gave one.
pub fn receive(fd: RawFd, buf: &mut [u8]) -> io::Result<Received> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // Room for a few control messages, aligned as `cmsghdr` needs.
    let mut control = [0u64; 8];
    // SAFETY: an all-zero msghdr is valid; the pointers set below outlive the call.
    let mut header: libc::msghdr = unsafe { std::mem::zeroed() };
    header.msg_iov = &mut iov;
    header.msg_iovlen = 1;
    header.msg_control = control.as_mut_ptr().cast();
    header.msg_controllen = std::mem::size_of_val(&control) as _;
    // SAFETY: the header describes live buffers of the sizes given.
    let received = unsafe { libc::recvmsg(fd, &mut header, libc::MSG_DONTWAIT) };
    if received < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut segment = None;
    // SAFETY: the kernel filled `msg_controllen` bytes of well-formed control messages; the
    // macros walk only within them, and the value is read unaligned.
    unsafe {
        let mut message = libc::CMSG_FIRSTHDR(&header);
        while !message.is_null() {
            if (*message).cmsg_level == libc::SOL_UDP && (*message).cmsg_type == UDP_GRO {
                let size = std::ptr::read_unaligned(libc::CMSG_DATA(message).cast::<libc::c_int>());
                segment = usize::try_from(size).ok().filter(|&size| size > 0);
            }
            message = libc::CMSG_NXTHDR(&header, message);
        }
    }
    Ok(Received {
        len: received as usize,
        segment,
    })
}

/// The datagrams of one receive: `segment`-sized pieces of `data`, or all of it.
pub fn datagrams(data: &[u8], segment: Option<usize>) -> std::slice::Chunks<'_, u8> {
    data.chunks(segment.unwrap_or(data.len()).max(1))
}

/// RTP sequence continuity: how many packets are missing before each one that arrives.
#[derive(Default)]
pub struct SequenceCheck {
    next: Option<u16>,
}

impl SequenceCheck {
    /// The packets missing between the last one and this one (0 for a late or repeated
    /// packet, which does not move the expected number back).
    pub fn packet(&mut self, sequence: u16) -> u64 {
        let Some(next) = self.next else {
            self.next = Some(sequence.wrapping_add(1));
            return 0;
        };
        let ahead = sequence.wrapping_sub(next);
        if ahead >= 0x8000 {
            return 0;
        }
        self.next = Some(sequence.wrapping_add(1));
        u64::from(ahead)
    }
}

/// The sequence number of an RTP packet.
pub fn rtp_sequence(packet: &[u8]) -> Option<u16> {
    (packet.len() >= 12 && packet[0] >> 6 == 2).then(|| u16::from_be_bytes([packet[2], packet[3]]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::os::fd::AsRawFd;
    use std::time::Duration;

    /// `UDP_SEGMENT` (linux/udp.h): the sender's segmentation offload.
    const UDP_SEGMENT: libc::c_int = 103;

    /// Send `data` as `segment`-sized datagrams in one segmented `sendmsg`.
    fn send_segmented(socket: &UdpSocket, data: &[u8], segment: u16) -> io::Result<()> {
        let mut iov = libc::iovec {
            iov_base: data.as_ptr() as *mut _,
            iov_len: data.len(),
        };
        let mut control = [0u64; 4];
        // SAFETY: as in `receive`; one control message of a u16 fits in `control`.
        unsafe {
            let mut header: libc::msghdr = std::mem::zeroed();
            header.msg_iov = &mut iov;
            header.msg_iovlen = 1;
            header.msg_control = control.as_mut_ptr().cast();
            header.msg_controllen = libc::CMSG_SPACE(2) as _;
            let message = libc::CMSG_FIRSTHDR(&header);
            (*message).cmsg_level = libc::SOL_UDP;
            (*message).cmsg_type = UDP_SEGMENT;
            (*message).cmsg_len = libc::CMSG_LEN(2) as _;
            std::ptr::write_unaligned(libc::CMSG_DATA(message).cast::<u16>(), segment);
            if libc::sendmsg(socket.as_raw_fd(), &header, 0) < 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    }

    fn rtp_packet(sequence: u16, size: usize) -> Vec<u8> {
        let mut packet = vec![0x80, 33];
        packet.extend_from_slice(&sequence.to_be_bytes());
        packet.resize(size, sequence as u8);
        packet
    }

    /// Receive until `count` datagrams came (or a second passed): the datagrams and how many
    /// receives that took.
    fn receive_datagrams(socket: &UdpSocket, count: usize) -> (Vec<Vec<u8>>, usize) {
        let (mut got, mut receives) = (Vec::new(), 0);
        let deadline = std::time::Instant::now() + Duration::from_secs(1);
        let mut buf = vec![0u8; 65536];
        while got.len() < count && std::time::Instant::now() < deadline {
            match receive(socket.as_raw_fd(), &mut buf) {
                Ok(received) => {
                    receives += 1;
                    got.extend(
                        datagrams(&buf[..received.len], received.segment).map(<[u8]>::to_vec),
                    );
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(error) => panic!("receive: {error}"),
            }
        }
        (got, receives)
    }

    #[test]
    fn a_segmented_send_is_split_back_into_its_datagrams_with_gro() {
        let receiver = UdpSocket::bind("127.0.0.1:0").unwrap();
        let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
        sender.connect(receiver.local_addr().unwrap()).unwrap();
        enable_gro(receiver.as_raw_fd()).expect("UDP_GRO on a loopback socket");
        let packets: Vec<Vec<u8>> = (0..5u16)
            .map(|i| rtp_packet(65534u16.wrapping_add(i), if i == 4 { 40 } else { 100 }))
            .collect();
        send_segmented(&sender, &packets.concat(), 100).expect("a segmented send");
        let (got, receives) = receive_datagrams(&receiver, 5);
        assert_eq!(got, packets);
        assert_eq!(receives, 1, "one receive for the whole segmented send");
        let mut check = SequenceCheck::default();
        let missing: u64 = got
            .iter()
            .map(|p| check.packet(rtp_sequence(p).unwrap()))
            .sum();
        assert_eq!(
            missing, 0,
            "sequence wraps through 65535 to 0 without a gap"
        );
    }

    #[test]
    fn without_gro_a_segmented_send_arrives_one_datagram_per_receive() {
        let receiver = UdpSocket::bind("127.0.0.1:0").unwrap();
        let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
        sender.connect(receiver.local_addr().unwrap()).unwrap();
        let packets: Vec<Vec<u8>> = (0..3u16).map(|i| rtp_packet(i, 200)).collect();
        send_segmented(&sender, &packets.concat(), 200).expect("a segmented send");
        let (got, receives) = receive_datagrams(&receiver, 3);
        assert_eq!(got, packets);
        assert_eq!(receives, 3);
    }

    #[test]
    fn datagrams_are_cut_at_the_segment_size() {
        let data: Vec<u8> = (0..10).collect();
        let cut: Vec<&[u8]> = datagrams(&data, Some(4)).collect();
        assert_eq!(cut, vec![&data[..4], &data[4..8], &data[8..]]);
        assert_eq!(datagrams(&data, None).count(), 1);
        assert_eq!(datagrams(&[], None).count(), 0);
    }

    #[test]
    fn missing_packets_are_counted_and_late_ones_ignored() {
        let mut check = SequenceCheck::default();
        assert_eq!(check.packet(10), 0);
        assert_eq!(check.packet(11), 0);
        assert_eq!(check.packet(14), 2);
        assert_eq!(check.packet(12), 0, "late");
        assert_eq!(check.packet(15), 0);
        assert_eq!(rtp_sequence(&rtp_packet(513, 12)), Some(513));
        assert_eq!(rtp_sequence(&[0x40; 12]), None, "version 1");
    }
}

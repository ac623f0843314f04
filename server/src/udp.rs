//! Sending many datagrams at once. A point's RTP fan-out sends a chunk's packets to every UDP
//! client; `sendmmsg(2)` hands the kernel a whole batch per client in one system call.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;

use bytes::Bytes;
use socket2::SockAddr;

/// Most datagrams handed to one `sendmmsg` call.
const BATCH: usize = 64;

/// Send `datagrams` to `to` on a non-blocking UDP socket, in batches. Returns how many went
/// out; the rest were dropped because the socket buffer was full (as a congested network
/// would drop them), which is not an error for a media stream.
pub fn send_batch(socket: &impl AsRawFd, datagrams: &[Bytes], to: SocketAddr) -> io::Result<usize> {
    let address = SockAddr::from(to);
    let mut sent = 0;
    for batch in datagrams.chunks(BATCH) {
        let mut iovecs: Vec<libc::iovec> = batch
            .iter()
            .map(|datagram| libc::iovec {
                iov_base: datagram.as_ptr() as *mut libc::c_void,
                iov_len: datagram.len(),
            })
            .collect();
        let mut messages: Vec<libc::mmsghdr> = iovecs
            .iter_mut()
            .map(|iovec| {
                // SAFETY: an all-zero msghdr is a valid empty header; the fields set below
                // point into `iovecs` and `address`, which outlive the call.
                let mut header: libc::msghdr = unsafe { std::mem::zeroed() };
                header.msg_name = address.as_ptr() as *mut libc::c_void;
                header.msg_namelen = address.len();
                header.msg_iov = iovec as *mut libc::iovec;
                header.msg_iovlen = 1;
                libc::mmsghdr {
                    msg_hdr: header,
                    msg_len: 0,
                }
            })
            .collect();
        // SAFETY: `messages` holds `messages.len()` initialised headers whose buffers stay
        // alive and unmoved for the duration of the call.
        let result = unsafe {
            libc::sendmmsg(
                socket.as_raw_fd(),
                messages.as_mut_ptr(),
                messages.len() as libc::c_uint,
                libc::MSG_DONTWAIT,
            )
        };
        if result < 0 {
            let error = io::Error::last_os_error();
            if error.kind() == io::ErrorKind::WouldBlock {
                return Ok(sent);
            }
            return Err(error);
        }
        sent += result as usize;
        if (result as usize) < batch.len() {
            return Ok(sent);
        }
    }
    Ok(sent)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_arrives_as_separate_datagrams_in_order() {
        let receiver = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        receiver
            .set_read_timeout(Some(std::time::Duration::from_secs(2)))
            .unwrap();
        let sender = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let datagrams: Vec<Bytes> = (0..100u8)
            .map(|i| Bytes::from(vec![i; 10 + i as usize]))
            .collect();
        let sent = send_batch(&sender, &datagrams, receiver.local_addr().unwrap()).unwrap();
        assert_eq!(sent, 100);
        let mut buf = [0u8; 256];
        for i in 0..100u8 {
            let (n, _) = receiver.recv_from(&mut buf).unwrap();
            assert_eq!(n, 10 + i as usize);
            assert!(buf[..n].iter().all(|&b| b == i));
        }
    }
}

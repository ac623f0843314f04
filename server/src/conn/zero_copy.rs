//! On-demand file ranges sent with `sendfile(2)`: the kernel moves the file's pages from the
//! page cache to a plain TCP socket, without reading them into the process and writing them
//! back out.
//!
//! Only a plain [`TcpStream`] write half can take it (a TLS stream must see the bytes to
//! encrypt them), and only once the output queue is empty, so the file's bytes follow the
//! response head and anything else queued before them. Everything else falls back to reading
//! blocks into the output queue. `FERROCAST_SENDFILE=off` turns the zero-copy path off for the
//! process (logged at info), for tests and to rule it out when diagnosing.

use std::any::Any;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::OnceLock;

use tokio::io::Interest;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::TcpStream;

/// The environment variable that turns `sendfile` off (`off`, `0`, `false` or `no`).
pub const SENDFILE_VARIABLE: &str = "FERROCAST_SENDFILE";

/// Most bytes handed to one `sendfile` call: a client on a fast link does not hold its worker
/// thread for long, and a call rarely moves more than the socket buffer takes anyway.
pub const SENDFILE_MAX: usize = 256 * 1024;

/// Whether the process may use `sendfile`; the first call reads the environment.
pub fn enabled() -> bool {
    static ENABLED: OnceLock<bool> = OnceLock::new();
    crate::switches::on_unless_switched_off(
        &ENABLED,
        SENDFILE_VARIABLE,
        "sendfile turned off; on-demand files are read and written",
    )
}

/// The plain TCP socket behind a connection's writer, if that is what it is.
pub fn plain_tcp<W: Any>(writer: &W) -> Option<&TcpStream> {
    let writer: &dyn Any = writer;
    writer
        .downcast_ref::<OwnedWriteHalf>()
        .map(|half| half.as_ref())
        .or_else(|| writer.downcast_ref::<TcpStream>())
}

/// A file range ready to go out: the open file's descriptor, where to start, how many bytes.
#[derive(Debug, Clone, Copy)]
pub struct FileSpan {
    pub fd: RawFd,
    pub offset: u64,
    pub len: usize,
}

/// Send the start of `span` to `socket` once it is writable; the bytes the kernel took.
/// `Ok(0)` means the file ended before the span did.
pub async fn send(socket: &TcpStream, span: FileSpan) -> io::Result<usize> {
    loop {
        socket.writable().await?;
        match socket.try_io(Interest::WRITABLE, || send_now(socket.as_raw_fd(), span)) {
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => continue,
            result => return result,
        }
    }
}

/// One non-blocking `sendfile` call.
fn send_now(socket: RawFd, span: FileSpan) -> io::Result<usize> {
    let mut offset = libc::off_t::try_from(span.offset)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "file offset too large"))?;
    let len = span.len.min(SENDFILE_MAX);
    loop {
        // SAFETY: both descriptors are open for the call (the socket is borrowed, the file is
        // held by the connection's cursor), and `offset` is a valid, exclusive pointer.
        let sent = unsafe { libc::sendfile(socket, span.fd, &mut offset, len) };
        if sent >= 0 {
            return Ok(sent as usize);
        }
        let error = io::Error::last_os_error();
        if error.kind() != io::ErrorKind::Interrupted {
            return Err(error);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[tokio::test]
    async fn a_plain_tcp_writer_is_recognised_and_other_writers_are_not() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (_reader, writer) = client.into_split();
        assert!(plain_tcp(&writer).is_some());
        let (duplex, _other) = tokio::io::duplex(64);
        assert!(plain_tcp(&duplex).is_none());
    }

    #[tokio::test]
    async fn a_span_of_a_file_arrives_byte_exact_and_a_short_file_reports_its_end() {
        let mut file = tempfile::tempfile().unwrap();
        let content: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
        file.write_all(&content).unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let reader = std::thread::spawn(move || {
            let (mut peer, _) = listener.accept().unwrap();
            let mut got = Vec::new();
            peer.read_to_end(&mut got).unwrap();
            got
        });
        let socket = TcpStream::connect(address).await.unwrap();
        let (mut offset, end) = (1_000u64, 90_000u64);
        while offset < end {
            let len = (end - offset) as usize;
            let fd = file.as_raw_fd();
            let sent = send(&socket, FileSpan { fd, offset, len }).await.unwrap();
            assert!(sent > 0);
            offset += sent as u64;
        }
        let past_end = FileSpan {
            fd: file.as_raw_fd(),
            offset: content.len() as u64,
            len: 10,
        };
        assert_eq!(send(&socket, past_end).await.unwrap(), 0);
        drop(socket);
        assert_eq!(reader.join().unwrap(), content[1_000..90_000]);
    }
}

//! The only reads and writes of sockets: until `WouldBlock`, retrying `Interrupted`.

use std::io::{self, IoSlice, Read, Write};

use mio::net::TcpStream;

use crate::conn::WriteQueue;

/// What one read gave.
pub(crate) enum ReadOutcome {
    /// This many bytes.
    Data(usize),
    /// Nothing more for now.
    WouldBlock,
    /// The peer closed, or the socket failed.
    Closed,
}

pub(crate) fn would_block(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::WouldBlock
}

pub(crate) fn interrupted(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::Interrupted
}

/// One read into `buf`.
pub(crate) fn read(sock: &mut TcpStream, buf: &mut [u8]) -> ReadOutcome {
    loop {
        match sock.read(buf) {
            Ok(0) => return ReadOutcome::Closed,
            Ok(n) => return ReadOutcome::Data(n),
            Err(e) if interrupted(&e) => continue,
            Err(e) if would_block(&e) => return ReadOutcome::WouldBlock,
            Err(_) => return ReadOutcome::Closed,
        }
    }
}

/// Writes as much of `bytes` as the socket takes now; `Err` if the socket failed.
pub(crate) fn write(sock: &mut TcpStream, bytes: &[u8]) -> io::Result<usize> {
    write_parts(sock, bytes, &[])
}

/// Writes `head` then `body` until both are written or the socket is full; returns the bytes
/// written of the two together.
pub(crate) fn write_parts(sock: &mut TcpStream, head: &[u8], body: &[u8]) -> io::Result<usize> {
    let total = head.len() + body.len();
    let mut done = 0;
    while done < total {
        let h = head.get(done..).unwrap_or_default();
        let b = body
            .get(done.saturating_sub(head.len())..)
            .unwrap_or_default();
        let result = if b.is_empty() || h.is_empty() {
            sock.write(if h.is_empty() { b } else { h })
        } else {
            sock.write_vectored(&[IoSlice::new(h), IoSlice::new(b)])
        };
        match result {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => done += n,
            Err(e) if interrupted(&e) => continue,
            Err(e) if would_block(&e) => break,
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// Writes the queue with vectored writes until it is empty or the socket is full.
pub(crate) fn write_queue(sock: &mut TcpStream, queue: &mut WriteQueue) -> io::Result<usize> {
    let mut total = 0;
    while !queue.is_empty() {
        let mut slices = [IoSlice::new(&[]); 32];
        let n = queue.io_slices(&mut slices);
        match sock.write_vectored(slices.get(..n).unwrap_or_default()) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(written) => {
                queue.advance(written);
                total += written;
            }
            Err(e) if interrupted(&e) => continue,
            Err(e) if would_block(&e) => break,
            Err(e) => return Err(e),
        }
    }
    Ok(total)
}

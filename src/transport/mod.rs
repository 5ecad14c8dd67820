//! The seam between a socket and a connection: bytes in, bytes out, readiness interest.
//!
//! The loop never touches a socket but through [`Transport`], and the connection never knows
//! what carries its bytes: a TCP socket, an in-memory pipe for tests driven without sockets
//! ([`crate::testing`]), or — next — a TLS session in front of a socket. The read and write
//! loops here are the only ones in the crate: until `WouldBlock`, retrying `Interrupted`.

pub(crate) mod memory;
#[cfg(feature = "tls")]
pub(crate) mod tls;

use std::io::{self, IoSlice, Read, Write};
use std::net::Shutdown;

use mio::net::TcpStream;
use mio::{Interest, Registry, Token};

use crate::conn::WriteQueue;
pub(crate) use memory::Pipe;

/// What one read gave.
pub(crate) enum ReadOutcome {
    /// This many bytes.
    Data(usize),
    /// Nothing more for now.
    WouldBlock,
    /// The peer closed, or the transport failed.
    Closed,
}

pub(crate) fn would_block(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::WouldBlock
}

pub(crate) fn interrupted(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::Interrupted
}

/// What carries one connection's bytes.
#[derive(Debug)]
pub(crate) enum Transport {
    /// A TCP socket registered with the loop's poll.
    Tcp(TcpStream),
    /// An in-memory pipe: the test harness plays the peer.
    Memory(Pipe),
    /// A TLS session over a TCP socket (boxed: an idle plain connection stays small).
    #[cfg(feature = "tls")]
    Tls(Box<tls::Tls>),
}

impl Transport {
    fn stream(&mut self) -> &mut dyn ReadWrite {
        match self {
            Transport::Tcp(s) => s,
            Transport::Memory(p) => p,
            #[cfg(feature = "tls")]
            Transport::Tls(t) => &mut **t,
        }
    }

    /// True if a read of `n` bytes into `cap` emptied the transport, so that with
    /// edge-triggered readiness a later byte raises a new event and the read that would say
    /// `WouldBlock` can be skipped. A plain socket: a read shorter than the buffer. A TLS
    /// session: this read went to the socket, got less than it asked for, and no decrypted
    /// bytes wait (bytes handed out from memory say nothing of the socket now).
    pub(crate) fn emptied(&self, n: usize, cap: usize) -> bool {
        match self {
            Transport::Tcp(_) | Transport::Memory(_) => n < cap,
            #[cfg(feature = "tls")]
            Transport::Tls(t) => t.emptied(),
        }
    }

    /// True while the transport itself holds bytes to write (TLS records the socket has not
    /// taken): the loop keeps writable interest until they are out.
    pub(crate) fn wants_write(&self) -> bool {
        match self {
            #[cfg(feature = "tls")]
            Transport::Tls(t) => t.wants_write(),
            _ => false,
        }
    }

    /// Writes what the transport itself holds; `Err` if it failed.
    pub(crate) fn flush_pending(&mut self) -> io::Result<()> {
        match self {
            #[cfg(feature = "tls")]
            Transport::Tls(t) => t.flush_tls(),
            _ => Ok(()),
        }
    }

    /// The connection ends cleanly: a TLS session says `close_notify` first.
    pub(crate) fn close_notify(&mut self) {
        #[cfg(feature = "tls")]
        if let Transport::Tls(t) = self {
            t.shutdown_write();
        }
    }

    /// One read into `buf`.
    pub(crate) fn read(&mut self, buf: &mut [u8]) -> ReadOutcome {
        let stream = self.stream();
        loop {
            match stream.read(buf) {
                Ok(0) => return ReadOutcome::Closed,
                Ok(n) => return ReadOutcome::Data(n),
                Err(e) if interrupted(&e) => continue,
                Err(e) if would_block(&e) => return ReadOutcome::WouldBlock,
                Err(_) => return ReadOutcome::Closed,
            }
        }
    }

    /// Writes as much of `bytes` as the transport takes now; `Err` if it failed.
    pub(crate) fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.write_parts(bytes, &[])
    }

    /// Writes `head` then `body` until both are written or the transport is full; returns the
    /// bytes written of the two together.
    pub(crate) fn write_parts(&mut self, head: &[u8], body: &[u8]) -> io::Result<usize> {
        let stream = self.stream();
        let total = head.len() + body.len();
        let mut done = 0;
        while done < total {
            let h = head.get(done..).unwrap_or_default();
            let b = body
                .get(done.saturating_sub(head.len())..)
                .unwrap_or_default();
            let result = if b.is_empty() || h.is_empty() {
                stream.write(if h.is_empty() { b } else { h })
            } else {
                stream.write_vectored(&[IoSlice::new(h), IoSlice::new(b)])
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

    /// Writes the queue with vectored writes until it is empty or the transport is full.
    pub(crate) fn write_queue(&mut self, queue: &mut WriteQueue) -> io::Result<usize> {
        let stream = self.stream();
        let mut total = 0;
        while !queue.is_empty() {
            let mut slices = [IoSlice::new(&[]); 32];
            let n = queue.io_slices(&mut slices);
            match stream.write_vectored(slices.get(..n).unwrap_or_default()) {
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

    /// Shuts down the write side: the peer reads EOF after what was written.
    pub(crate) fn shutdown_write(&mut self) {
        match self {
            Transport::Tcp(s) => {
                let _ = s.shutdown(Shutdown::Write);
            }
            Transport::Memory(p) => p.shutdown_write(),
            #[cfg(feature = "tls")]
            Transport::Tls(t) => t.shutdown_write(),
        }
    }

    /// The TCP socket under the transport, if there is one (not for an in-memory pipe).
    pub(crate) fn socket(&mut self) -> Option<&mut TcpStream> {
        match self {
            Transport::Tcp(s) => Some(s),
            #[cfg(feature = "tls")]
            Transport::Tls(t) => Some(&mut t.sock),
            Transport::Memory(_) => None,
        }
    }

    /// Disables Nagle's algorithm: frames go out as they are written.
    pub(crate) fn set_nodelay(&mut self) {
        if let Some(s) = self.socket() {
            let _ = s.set_nodelay(true);
        }
    }

    pub(crate) fn register(
        &mut self,
        registry: &Registry,
        token: Token,
        interest: Interest,
    ) -> io::Result<()> {
        self.socket()
            .map_or(Ok(()), |s| registry.register(s, token, interest))
    }

    pub(crate) fn reregister(
        &mut self,
        registry: &Registry,
        token: Token,
        interest: Interest,
    ) -> io::Result<()> {
        self.socket()
            .map_or(Ok(()), |s| registry.reregister(s, token, interest))
    }

    pub(crate) fn deregister(&mut self, registry: &Registry) {
        if let Some(s) = self.socket() {
            let _ = registry.deregister(s);
        }
    }
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

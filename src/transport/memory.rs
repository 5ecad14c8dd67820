//! An in-memory transport: the peer is a test that pushes bytes in and takes bytes out.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::rc::Rc;

/// Both directions of one in-memory connection, shared by the server and the test.
#[derive(Debug, Default)]
pub(crate) struct Wire {
    /// Peer → server.
    pub(crate) inbound: VecDeque<u8>,
    /// The peer closed its write side: reads end with EOF once `inbound` is empty.
    pub(crate) inbound_closed: bool,
    /// Server → peer.
    pub(crate) outbound: Vec<u8>,
    /// The server shut down its write side.
    pub(crate) outbound_closed: bool,
    /// The most bytes the server may have outstanding in `outbound` (a full socket buffer
    /// past it); `usize::MAX` for no limit.
    pub(crate) window: usize,
}

/// The server's end of a [`Wire`].
#[derive(Clone, Debug)]
pub(crate) struct Pipe(pub(crate) Rc<RefCell<Wire>>);

impl Pipe {
    pub(crate) fn shutdown_write(&mut self) {
        self.0.borrow_mut().outbound_closed = true;
    }
}

impl Read for Pipe {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut wire = self.0.borrow_mut();
        if wire.inbound.is_empty() {
            return if wire.inbound_closed {
                Ok(0)
            } else {
                Err(io::ErrorKind::WouldBlock.into())
            };
        }
        let n = buf.len().min(wire.inbound.len());
        for (dst, src) in buf.iter_mut().zip(wire.inbound.drain(..n)) {
            *dst = src;
        }
        Ok(n)
    }
}

impl Write for Pipe {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut wire = self.0.borrow_mut();
        if wire.outbound_closed {
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        let room = wire.window.saturating_sub(wire.outbound.len());
        if room == 0 && !buf.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = buf.len().min(room);
        wire.outbound
            .extend_from_slice(buf.get(..n).unwrap_or_default());
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

//! TLS between the socket and the connection (feature `tls`): rustls, sans-IO, driven by the
//! loop like any other transport. The connection never knows its bytes were encrypted.
//!
//! - **In:** TLS records read from the socket into rustls, decrypted, and handed out as
//!   plaintext through [`Read`]. A handshake message rustls has to answer is written at once.
//! - **Out:** plaintext through [`Write`], encrypted by rustls and written to the socket; what
//!   the socket does not take waits in rustls (bounded by [`SEND_BUFFER`]), and the loop keeps
//!   writable interest while it does ([`Tls::wants_write`]).
//! - **Bad input:** a record rustls refuses (plain HTTP on a TLS port, a garbage or
//!   truncated ClientHello, TLS 1.0/1.1) gets rustls's alert, then the connection ends.
//! - **Close:** `close_notify` is sent before the write side is shut down, and one received
//!   ends the reading side as EOF does.

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::sync::Arc;

use log::debug;
use mio::net::TcpStream;
use rustls::{ServerConfig, ServerConnection};

/// Encrypted bytes rustls may hold for a socket that does not take them; past it, writes
/// report `WouldBlock` and the connection's own queue (bounded by `max_backpressure`) takes
/// the rest.
pub const SEND_BUFFER: usize = 16 * 1024 + 1024;

/// One TLS session over one socket.
#[derive(Debug)]
pub(crate) struct Tls {
    pub(crate) sock: TcpStream,
    session: ServerConnection,
    /// The peer's TCP stream ended (or failed): nothing more will be read.
    eof: bool,
}

impl Tls {
    /// A server session on an accepted socket; `None` if rustls refuses the configuration.
    pub(crate) fn accept(sock: TcpStream, config: Arc<ServerConfig>) -> Option<Tls> {
        let mut session = ServerConnection::new(config).ok()?;
        session.set_buffer_limit(Some(SEND_BUFFER));
        Some(Tls {
            sock,
            session,
            eof: false,
        })
    }

    /// True while rustls holds encrypted bytes the socket has not taken.
    pub(crate) fn wants_write(&self) -> bool {
        self.session.wants_write()
    }

    /// Writes what rustls holds until it is empty or the socket is full.
    pub(crate) fn flush_tls(&mut self) -> io::Result<()> {
        while self.session.wants_write() {
            match self.session.write_tls(&mut self.sock) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Sends `close_notify` (once) and whatever is pending, then shuts down the write side.
    pub(crate) fn shutdown_write(&mut self) {
        self.session.send_close_notify();
        let _ = self.flush_tls();
        let _ = self.sock.shutdown(Shutdown::Write);
    }

    /// Reads TLS records from the socket and processes them. `Ok(false)` when the socket had
    /// nothing to give.
    fn pull(&mut self) -> io::Result<bool> {
        if self.eof {
            return Ok(false);
        }
        let n = loop {
            match self.session.read_tls(&mut self.sock) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => {
                    self.eof = true;
                    return Err(e);
                }
            }
        };
        if n == 0 {
            self.eof = true;
        }
        if let Err(e) = self.session.process_new_packets() {
            // rustls queued the alert for this error: send it, then end the connection.
            debug!("TLS: {e}");
            let _ = self.flush_tls();
            self.eof = true;
            return Err(io::Error::new(io::ErrorKind::InvalidData, e));
        }
        // Handshake messages (and alerts) go out as soon as rustls has them.
        self.flush_tls()?;
        Ok(n > 0)
    }
}

impl Read for Tls {
    /// Plaintext, as much as is decrypted; `WouldBlock` when the socket is empty and nothing
    /// is decrypted; `Ok(0)` at `close_notify` or at the end of the TCP stream.
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.session.reader().read(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // The TCP stream ended without close_notify: an EOF all the same.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                Err(e) => return Err(e),
            }
            if self.eof {
                return Ok(0);
            }
            if !self.pull()? && !self.eof {
                return Err(io::ErrorKind::WouldBlock.into());
            }
        }
    }
}

impl Write for Tls {
    /// Encrypts what fits [`SEND_BUFFER`] and writes it; `WouldBlock` when nothing fits.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.session.writer().write(buf)?;
        self.flush_tls()?;
        if n == 0 && !buf.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(n)
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        let n = self.session.writer().write_vectored(bufs)?;
        self.flush_tls()?;
        if n == 0 && bufs.iter().any(|b| !b.is_empty()) {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.flush_tls()
    }
}

//! TLS between the socket and the connection (feature `tls`): rustls's *unbuffered* server
//! connection, sans-IO, driven by the loop like any other transport. The connection never
//! knows its bytes were encrypted.
//!
//! rustls holds no buffer of ours: the records are read into a loop-wide scratch buffer
//! (one per thread, shared by every TLS connection), decrypted there, and the plaintext is
//! copied out to the caller's buffer. Per connection there is only the session and, while
//! they exist, three buffers that an idle connection does not have:
//!
//! - **pending incoming:** the undiscarded tail of what was read (a partial record, or a
//!   handshake message not yet complete), at most [`MAX_WIRE_RECORD`]; past it the peer is
//!   cut off.
//! - **unsent:** encrypted bytes the socket did not take, at most about [`SEND_BUFFER`]:
//!   while there are any, writes report `WouldBlock` and the connection's own queue (bounded
//!   by `max_backpressure`) takes the rest; the loop keeps writable interest
//!   ([`Tls::wants_write`]).
//! - **plaintext spill:** decrypted bytes the caller's buffer had no room for (only when the
//!   read buffer is smaller than one record: at most [`MAX_WIRE_RECORD`]).
//!
//! - **Bad input:** a record rustls refuses (plain HTTP on a TLS port, a garbage or
//!   truncated ClientHello, TLS 1.0/1.1) gets rustls's alert, then the connection ends. The
//!   alert is taken from rustls with exactly the input it has not discarded (an empty slice
//!   panics rustls 0.23.46 when the error came in the middle of a handshake message).
//! - **Close:** `close_notify` is sent (once) before the write side is shut down, and one
//!   received ends the reading side as EOF does.

use std::cell::RefCell;
use std::fmt;
use std::io::{self, IoSlice, Read, Write};
use std::net::Shutdown;
use std::sync::Arc;

use log::debug;
use mio::net::TcpStream;
use rustls::server::UnbufferedServerConnection;
use rustls::unbuffered::{ConnectionState, EncodeError, EncryptError, UnbufferedStatus};
use rustls::ServerConfig;

/// Encrypted bytes a connection may hold for a socket that does not take them; past it,
/// writes report `WouldBlock` and the connection's own queue (bounded by
/// `max_backpressure`) takes the rest.
pub const SEND_BUFFER: usize = 16 * 1024 + 1024;

/// The largest record rustls accepts on the wire (header, 16 KiB, 2 KiB of expansion): the
/// most a connection keeps of incoming bytes it could not process yet.
pub const MAX_WIRE_RECORD: usize = 5 + 16 * 1024 + 2048;

/// Plaintext encrypted at once: one full record.
const CHUNK: usize = 16 * 1024;
/// The most a record adds to its plaintext (TLS 1.2 AES-GCM: 29 B), rounded up.
const RECORD_OVERHEAD: usize = 64;
/// The write scratch: a batch of records up to [`SEND_BUFFER`], with room for one more header.
const WBUF: usize = SEND_BUFFER + RECORD_OVERHEAD;

/// The loop-wide buffers: records read and decrypted, records encrypted, plaintext gathered
/// from several slices into one record. One per thread (the loop's), grown once.
#[derive(Default)]
struct Scratch {
    rbuf: Vec<u8>,
    wbuf: Vec<u8>,
    pbuf: Vec<u8>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

fn with_scratch<R>(f: impl FnOnce(&mut Scratch) -> R) -> R {
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut s) => f(&mut s),
        // Not reached (nothing here nests), but never a panic: a buffer of its own.
        Err(_) => f(&mut Scratch::default()),
    })
}

/// What [`Tls::drive`] is to achieve once rustls can take application data.
enum Goal<'a> {
    /// Decrypt records into this buffer (the count so far beside it); the rest spills.
    Read(&'a mut [u8], &'a mut usize),
    /// Encrypt from these slices past `done` (counting on) and send, while what the socket
    /// leaves stays under [`SEND_BUFFER`]; `pbuf` gathers small slices into one record.
    Encrypt {
        bufs: &'a [IoSlice<'a>],
        done: &'a mut usize,
        pbuf: &'a mut Vec<u8>,
    },
    /// Send `close_notify`.
    CloseNotify,
}

/// What a TLS session runs over: the connection's TCP socket, or memory (the fuzzer's
/// [`Probe`]).
pub(crate) trait Socket: Read + Write {
    /// Shuts down the write side.
    fn shutdown_write(&mut self) -> io::Result<()>;
}

impl Socket for TcpStream {
    fn shutdown_write(&mut self) -> io::Result<()> {
        self.shutdown(Shutdown::Write)
    }
}

impl Socket for super::Pipe {
    fn shutdown_write(&mut self) -> io::Result<()> {
        super::Pipe::shutdown_write(self);
        Ok(())
    }
}

/// One TLS session over one socket.
pub(crate) struct Tls<S = TcpStream> {
    pub(crate) sock: S,
    session: UnbufferedServerConnection,
    /// Incoming bytes rustls has not discarded yet; `None` when there are none.
    incoming: Option<Vec<u8>>,
    /// Encrypted bytes the socket did not take; `None` when there are none.
    unsent: Option<Vec<u8>>,
    /// Decrypted bytes the caller's buffer had no room for; `None` when there are none.
    plain: Option<Vec<u8>>,
    /// Nothing more will be read: the TCP stream ended, `close_notify` came, or it failed.
    eof: bool,
    /// rustls reported an error (its alert was sent): the session is dead.
    failed: bool,
    /// `close_notify` was queued.
    sent_close: bool,
    /// The last read read the socket, and got less than the room it had: the socket was
    /// empty then (false after a read served from `plain`).
    short: bool,
}

impl<S: fmt::Debug> fmt::Debug for Tls<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls")
            .field("sock", &self.sock)
            .field("incoming", &self.incoming.as_ref().map(Vec::len))
            .field("unsent", &self.unsent.as_ref().map(Vec::len))
            .field("plain", &self.plain.as_ref().map(Vec::len))
            .field("eof", &self.eof)
            .field("failed", &self.failed)
            .finish_non_exhaustive()
    }
}

fn broken() -> io::Error {
    io::ErrorKind::BrokenPipe.into()
}

fn invalid(e: impl fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.to_string())
}

/// Writes `data` after what is unsent already; what the socket does not take is kept.
fn send_raw(sock: &mut impl Write, unsent: &mut Option<Vec<u8>>, data: &[u8]) -> io::Result<()> {
    if data.is_empty() {
        return Ok(());
    }
    if let Some(q) = unsent {
        q.extend_from_slice(data);
        return Ok(());
    }
    let mut off = 0;
    while off < data.len() {
        match sock.write(data.get(off..).unwrap_or_default()) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => off += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => return Err(e),
        }
    }
    if let Some(rest) = data.get(off..).filter(|r| !r.is_empty()) {
        *unsent = Some(rest.to_vec());
    }
    Ok(())
}

/// The most the per-thread scratch buffers hold for a loop whose read buffer is
/// `read_buffer` bytes: records read (the read buffer, or one whole record if larger),
/// records encrypted (a send buffer's worth, or one record past it), and one record of
/// plaintext gathered from several slices.
pub fn scratch_bytes(read_buffer: usize) -> usize {
    read_buffer.max(MAX_WIRE_RECORD) + WBUF + MAX_WIRE_RECORD + 16 * 1024
}

/// Grows a scratch buffer to at least `len` bytes.
fn at_least(buf: &mut Vec<u8>, len: usize) {
    if buf.len() < len {
        buf.resize(len, 0);
    }
}

/// The next plaintext to encrypt from `bufs` past `done` bytes: a slice of one of them when
/// it holds `max` bytes or is the last, else up to `max` bytes gathered into `pbuf`.
fn gather<'a>(
    bufs: &'a [IoSlice<'_>],
    mut done: usize,
    max: usize,
    pbuf: &'a mut Vec<u8>,
) -> &'a [u8] {
    let mut skip = 0;
    for b in bufs {
        if done < b.len() {
            break;
        }
        done -= b.len();
        skip += 1;
    }
    let mut rest = bufs.iter().skip(skip).map(|b| &**b);
    let Some(first) = rest.next() else {
        return &[];
    };
    let first = first.get(done..).unwrap_or_default();
    let mut rest = rest.filter(|b| !b.is_empty()).peekable();
    let Some(next) = rest.peek().map(|b| b.len()) else {
        return first.get(..first.len().min(max)).unwrap_or_default();
    };
    if first.len() >= max {
        return first.get(..max).unwrap_or_default();
    }
    // A small slice before a large one (a frame's head before its payload) takes only the
    // large one's remainder past whole records: the records after it are then encrypted
    // straight from the large slice, as many as gathering would make, with no copy.
    let limit = match next % max {
        tail if next >= max && first.len() + tail <= max => first.len() + tail,
        _ => max,
    };
    if limit == first.len() {
        return first;
    }
    pbuf.clear();
    pbuf.extend_from_slice(first);
    for b in rest {
        let room = limit - pbuf.len();
        if room == 0 {
            break;
        }
        pbuf.extend_from_slice(b.get(..b.len().min(room)).unwrap_or_default());
    }
    pbuf
}

impl<S: Socket> Tls<S> {
    /// A server session on an accepted socket; `None` if rustls refuses the configuration.
    pub(crate) fn accept(sock: S, config: Arc<ServerConfig>) -> Option<Self> {
        let session = UnbufferedServerConnection::new(config).ok()?;
        Some(Tls {
            sock,
            session,
            incoming: None,
            unsent: None,
            plain: None,
            eof: false,
            failed: false,
            sent_close: false,
            short: false,
        })
    }

    /// True if the last read went to the socket and emptied it, and every decrypted byte
    /// was handed out: until a new readiness event, a read would say `WouldBlock`.
    pub(crate) fn emptied(&self) -> bool {
        self.short && self.plain.is_none()
    }

    /// True while encrypted bytes wait for the socket.
    pub(crate) fn wants_write(&self) -> bool {
        self.unsent.is_some()
    }

    /// Writes the unsent bytes until there are none or the socket is full.
    pub(crate) fn flush_tls(&mut self) -> io::Result<()> {
        let Some(q) = self.unsent.as_mut() else {
            return Ok(());
        };
        let mut off = 0;
        let result = loop {
            if off == q.len() {
                break Ok(());
            }
            match self.sock.write(q.get(off..).unwrap_or_default()) {
                Ok(0) => break Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => off += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break Ok(()),
                Err(e) => break Err(e),
            }
        };
        q.drain(..off);
        if q.is_empty() {
            self.unsent = None;
        }
        result
    }

    /// Sends `close_notify` (once) and whatever is unsent, then shuts down the write side.
    pub(crate) fn shutdown_write(&mut self) {
        if !self.failed && !self.sent_close {
            let _ = with_scratch(|s| self.drive_pending(&mut s.wbuf, Goal::CloseNotify));
        }
        let _ = self.flush_tls();
        let _ = self.sock.shutdown_write();
    }

    /// Runs rustls over the pending incoming bytes to reach `goal` (writing: the pending bytes
    /// hold at most a partial record, so nothing is decrypted here).
    fn drive_pending(&mut self, wbuf: &mut Vec<u8>, goal: Goal<'_>) -> io::Result<bool> {
        let mut incoming = self.incoming.take();
        let input = incoming.as_deref_mut().unwrap_or_default();
        let result = self.drive(input, wbuf, goal);
        if let (Ok((consumed, _)), Some(mut v)) = (&result, incoming) {
            v.drain(..(*consumed).min(v.len()));
            if !v.is_empty() {
                self.incoming = Some(v);
            }
        }
        result.map(|(_, done)| done)
    }

    /// Feeds `input` (the undiscarded incoming bytes, exactly) to rustls until it needs more
    /// bytes or the goal is reached. Handshake output goes to the socket, decrypted records to
    /// the goal's buffer. Returns the bytes rustls discarded and whether the goal was reached.
    fn drive(
        &mut self,
        input: &mut [u8],
        wbuf: &mut Vec<u8>,
        mut goal: Goal<'_>,
    ) -> io::Result<(usize, bool)> {
        at_least(wbuf, WBUF);
        let mut start = 0;
        let mut used = 0;
        enum Step {
            Again,
            Stop(bool),
            Fail(rustls::Error),
        }
        loop {
            let UnbufferedStatus { mut discard, state } = self
                .session
                .process_tls_records(input.get_mut(start..).unwrap_or_default());
            let step = match state {
                Err(e) => Step::Fail(e),
                Ok(ConnectionState::ReadTraffic(mut rt)) => {
                    while let Some(rec) = rt.next_record() {
                        let Ok(rec) = rec else { continue };
                        discard += rec.discard;
                        let payload = rec.payload;
                        let fit = match &mut goal {
                            Goal::Read(buf, n) => {
                                let fit = payload.len().min(buf.len().saturating_sub(**n));
                                if let (Some(dst), Some(src)) =
                                    (buf.get_mut(**n..**n + fit), payload.get(..fit))
                                {
                                    dst.copy_from_slice(src);
                                    **n += fit;
                                }
                                fit
                            }
                            _ => 0,
                        };
                        if let Some(rest) = payload.get(fit..).filter(|r| !r.is_empty()) {
                            self.plain
                                .get_or_insert_with(Vec::new)
                                .extend_from_slice(rest);
                        }
                    }
                    Step::Again
                }
                Ok(ConnectionState::EncodeTlsData(mut st)) => loop {
                    match st.encode(wbuf.get_mut(used..).unwrap_or_default()) {
                        Ok(n) => {
                            used += n;
                            break Step::Again;
                        }
                        Err(EncodeError::InsufficientSize(e)) => {
                            if used > 0 {
                                send_raw(&mut self.sock, &mut self.unsent, &wbuf[..used])?;
                                used = 0;
                            }
                            at_least(wbuf, e.required_size);
                        }
                        Err(EncodeError::AlreadyEncoded) => break Step::Again,
                    }
                },
                Ok(ConnectionState::TransmitTlsData(st)) => {
                    send_raw(&mut self.sock, &mut self.unsent, &wbuf[..used])?;
                    used = 0;
                    st.done();
                    Step::Again
                }
                Ok(ConnectionState::BlockedHandshake) => Step::Stop(false),
                Ok(ConnectionState::WriteTraffic(mut wt)) => {
                    if used > 0 {
                        send_raw(&mut self.sock, &mut self.unsent, &wbuf[..used])?;
                        used = 0;
                    }
                    match &mut goal {
                        Goal::Read(..) => Step::Stop(false),
                        Goal::CloseNotify => {
                            let n = loop {
                                match wt.queue_close_notify(wbuf) {
                                    Ok(n) => break n,
                                    Err(EncryptError::InsufficientSize(e)) => {
                                        at_least(wbuf, e.required_size)
                                    }
                                    Err(e) => return Err(invalid(e)),
                                }
                            };
                            self.sent_close = true;
                            send_raw(&mut self.sock, &mut self.unsent, &wbuf[..n])?;
                            Step::Stop(true)
                        }
                        Goal::Encrypt { bufs, done, pbuf } => {
                            // Batches of records, each under what may be left unsent, and
                            // one write per batch; on until the socket leaves bytes.
                            let before = **done;
                            loop {
                                let mut n = 0;
                                loop {
                                    let unsent = self.unsent.as_ref().map_or(0, Vec::len);
                                    let max = SEND_BUFFER
                                        .saturating_sub(unsent + n + RECORD_OVERHEAD)
                                        .min(CHUNK);
                                    if max == 0 {
                                        break;
                                    }
                                    let chunk = gather(bufs, **done, max, pbuf);
                                    if chunk.is_empty() {
                                        break;
                                    }
                                    at_least(wbuf, n + chunk.len() + RECORD_OVERHEAD);
                                    match wt.encrypt(chunk, wbuf.get_mut(n..).unwrap_or_default()) {
                                        Ok(m) => {
                                            n += m;
                                            **done += chunk.len();
                                        }
                                        Err(EncryptError::InsufficientSize(e)) => {
                                            at_least(wbuf, n + e.required_size)
                                        }
                                        Err(e) => return Err(invalid(e)),
                                    }
                                }
                                if n == 0 {
                                    break;
                                }
                                send_raw(&mut self.sock, &mut self.unsent, &wbuf[..n])?;
                                if self.unsent.is_some() {
                                    break;
                                }
                            }
                            Step::Stop(**done > before)
                        }
                    }
                }
                Ok(ConnectionState::PeerClosed) | Ok(ConnectionState::Closed) => {
                    self.eof = true;
                    Step::Stop(false)
                }
                // Early data is off; nothing else is known.
                Ok(_) => Step::Fail(rustls::Error::General("unexpected TLS state".into())),
            };
            start += discard;
            match step {
                Step::Again => {}
                Step::Stop(done) => {
                    send_raw(&mut self.sock, &mut self.unsent, &wbuf[..used])?;
                    return Ok((start, done));
                }
                Step::Fail(e) => {
                    let _ = send_raw(&mut self.sock, &mut self.unsent, &wbuf[..used]);
                    self.fail(&e, input.get_mut(start..).unwrap_or_default(), wbuf);
                    return Err(invalid(e));
                }
            }
        }
    }

    /// rustls refused the input: send its alert, then nothing more. `rest` is exactly the
    /// input rustls has not discarded (never an empty slice in its place: see the module).
    fn fail(&mut self, e: &rustls::Error, rest: &mut [u8], wbuf: &mut Vec<u8>) {
        debug!("TLS: {e}");
        self.failed = true;
        self.eof = true;
        self.incoming = None;
        self.plain = None;
        let UnbufferedStatus { state, .. } = self.session.process_tls_records(rest);
        if let Ok(ConnectionState::EncodeTlsData(mut st)) = state {
            loop {
                match st.encode(wbuf) {
                    Ok(n) => {
                        let _ = send_raw(&mut self.sock, &mut self.unsent, &wbuf[..n]);
                        break;
                    }
                    Err(EncodeError::InsufficientSize(e)) => at_least(wbuf, e.required_size),
                    Err(EncodeError::AlreadyEncoded) => break,
                }
            }
        }
        let _ = self.flush_tls();
    }

    /// Reads the socket and decrypts into `buf`. `WouldBlock` only when the socket is empty
    /// and what is pending is a partial record: then a later byte raises a new event.
    fn pull(&mut self, buf: &mut [u8], s: &mut Scratch) -> io::Result<usize> {
        loop {
            if self.eof {
                return Ok(0);
            }
            let plen = self.incoming.as_ref().map_or(0, Vec::len);
            // Never more ciphertext than the caller has room for as plaintext (plaintext is
            // shorter), but always room to complete one record.
            let cap = buf.len().max(MAX_WIRE_RECORD);
            if plen >= cap {
                debug!("TLS: incoming bytes over {MAX_WIRE_RECORD} B unprocessed");
                self.eof = true;
                self.failed = true;
                self.incoming = None;
                return Err(invalid("record too large"));
            }
            at_least(&mut s.rbuf, cap);
            if let (Some(p), Some(dst)) = (&self.incoming, s.rbuf.get_mut(..plen)) {
                dst.copy_from_slice(p);
            }
            let room = s.rbuf.get_mut(plen..cap).unwrap_or_default();
            let want = room.len();
            let n = loop {
                match self.sock.read(room) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Err(e),
                    Err(e) => {
                        self.eof = true;
                        return Err(e);
                    }
                }
            };
            self.short = n < want;
            if n == 0 {
                // The TCP stream ended: an EOF. The undiscarded bytes stay: rustls may be
                // driven once more (for close_notify), and only with them.
                self.eof = true;
                return Ok(0);
            }
            let filled = plen + n;
            let mut out = 0;
            let input = s.rbuf.get_mut(..filled).unwrap_or_default();
            let (consumed, _) = self.drive(input, &mut s.wbuf, Goal::Read(buf, &mut out))?;
            let rest = s.rbuf.get(consumed..filled).unwrap_or_default();
            if rest.is_empty() {
                self.incoming = None;
            } else if rest.len() > MAX_WIRE_RECORD {
                debug!("TLS: incoming bytes over {MAX_WIRE_RECORD} B unprocessed");
                self.eof = true;
                self.failed = true;
                self.incoming = None;
                return Err(invalid("record too large"));
            } else {
                let v = self.incoming.get_or_insert_with(Vec::new);
                v.clear();
                v.extend_from_slice(rest);
            }
            if out > 0 || self.eof {
                return Ok(out);
            }
            // Only handshake progress: read on.
        }
    }

    /// Encrypts from `bufs` and writes, as long as what the socket leaves stays under
    /// [`SEND_BUFFER`]; `WouldBlock` when nothing fits.
    fn push(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        if bufs.iter().all(|b| b.is_empty()) {
            return Ok(0);
        }
        if self.failed || self.sent_close {
            return Err(broken());
        }
        self.flush_tls()?;
        let mut done = 0;
        with_scratch(|s| {
            let Scratch { wbuf, pbuf, .. } = s;
            let goal = Goal::Encrypt {
                bufs,
                done: &mut done,
                pbuf,
            };
            self.drive_pending(wbuf, goal)
        })?;
        if done == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(done)
    }
}

impl<S: Socket> Read for Tls<S> {
    /// Plaintext, as much as is decrypted; `WouldBlock` when the socket is empty and nothing
    /// is decrypted; `Ok(0)` at `close_notify` or at the end of the TCP stream.
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if let Some(p) = self.plain.as_mut() {
            // Handed out from memory, this read says nothing of the socket: bytes may have
            // come since the last socket read, their readiness event taken by the loop while
            // the connection waited for this turn. Only a socket read may say it is empty.
            self.short = false;
            let n = p.len().min(buf.len());
            if let (Some(dst), Some(src)) = (buf.get_mut(..n), p.get(..n)) {
                dst.copy_from_slice(src);
            }
            p.drain(..n);
            if p.is_empty() {
                self.plain = None;
            }
            return Ok(n);
        }
        with_scratch(|s| self.pull(buf, s))
    }
}

impl<S: Socket> Write for Tls<S> {
    /// Encrypts and writes; `WouldBlock` while encrypted bytes wait for the socket.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.push(&[IoSlice::new(buf)])
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.push(bufs)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.flush_tls()
    }
}

/// A fresh server-side session over memory, for the fuzzer (`fuzz/`, target `tls`): the
/// same session code as over a socket, with the peer's bytes pushed in and the server's
/// taken out. Not part of the API.
#[doc(hidden)]
pub struct Probe {
    tls: Tls<super::Pipe>,
}

impl Probe {
    /// A session with this configuration; `window`: the bytes the "socket" takes before it
    /// is full (`usize::MAX` for no limit). `None` if rustls refuses the configuration.
    pub fn new(config: Arc<ServerConfig>, window: usize) -> Option<Probe> {
        let wire = super::memory::Wire {
            window,
            ..Default::default()
        };
        let pipe = super::Pipe(std::rc::Rc::new(RefCell::new(wire)));
        Some(Probe {
            tls: Tls::accept(pipe, config)?,
        })
    }

    /// The peer sends these bytes.
    pub fn feed(&mut self, bytes: &[u8]) {
        self.tls.sock.0.borrow_mut().inbound.extend(bytes);
    }

    /// The peer shuts down its write side (EOF once what it sent is read).
    pub fn end_input(&mut self) {
        self.tls.sock.0.borrow_mut().inbound_closed = true;
    }

    /// The server reads (decrypts) into `buf`, as the loop does.
    pub fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        Read::read(&mut self.tls, buf)
    }

    /// The server writes (encrypts) `data`, as the loop does.
    pub fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        Write::write(&mut self.tls, data)
    }

    /// The loop's flush when the socket is writable again.
    pub fn flush(&mut self) -> io::Result<()> {
        self.tls.flush_tls()
    }

    /// The loop's close: `close_notify` (unless failed), then the write side shut down.
    pub fn shutdown_write(&mut self) {
        self.tls.shutdown_write();
    }

    /// The bytes the server wrote to the "socket" since the last call (the peer reads them).
    pub fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.tls.sock.0.borrow_mut().outbound)
    }

    /// Whether rustls refused the input (its alert was sent: the session is dead).
    pub fn failed(&self) -> bool {
        self.tls.failed
    }

    /// Whether the write side was shut down.
    pub fn is_shut(&self) -> bool {
        self.tls.sock.0.borrow().outbound_closed
    }

    /// The bytes the session holds for the connection: pending incoming, unsent, spilled
    /// plaintext (each bounded: see the module).
    pub fn held_bytes(&self) -> [usize; 3] {
        let len = |b: &Option<Vec<u8>>| b.as_ref().map_or(0, Vec::len);
        [
            len(&self.tls.incoming),
            len(&self.tls.unsent),
            len(&self.tls.plain),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    use std::time::{Duration, Instant};

    /// The records `gather` cuts from `parts`, as their lengths, checked to carry exactly the
    /// parts' bytes in order.
    fn records(parts: &[&[u8]], max: usize) -> Vec<usize> {
        let bufs: Vec<IoSlice<'_>> = parts.iter().map(|p| IoSlice::new(p)).collect();
        let total: usize = parts.iter().map(|p| p.len()).sum();
        let (mut done, mut pbuf, mut out, mut lens) = (0, Vec::new(), Vec::new(), Vec::new());
        while done < total {
            let chunk = gather(&bufs, done, max, &mut pbuf);
            assert!(!chunk.is_empty() && chunk.len() <= max);
            out.extend_from_slice(chunk);
            lens.push(chunk.len());
            done += chunk.len();
        }
        assert_eq!(out, parts.concat());
        lens
    }

    #[test]
    fn a_frame_head_before_a_large_payload_is_not_copied_and_adds_no_record() {
        let c = CHUNK;
        let head = [0x82u8, 126, 0x40, 0];
        let body: Vec<u8> = (0..3 * c + 100).map(|i| i as u8).collect();
        // 16 KiB: the head alone, then the payload straight from its slice (two records,
        // as gathering made).
        assert_eq!(records(&[&head, &body[..c]], c), [4, c]);
        // The payload's remainder past whole records rides with the head.
        assert_eq!(records(&[&head, &body[..c + 100]], c), [104, c]);
        assert_eq!(records(&[&head, &body[..3 * c + 100]], c), [104, c, c, c]);
        // A remainder that does not fit beside the head: gathered as before.
        assert_eq!(records(&[&head, &body[..2 * c - 2]], c), [c, c, 2]);
        // Small messages are gathered into one record.
        assert_eq!(records(&[&head[..2], &body[..64]], c), [66]);
        assert_eq!(
            records(&[&head[..2], &body[..64], &head, &body[..10]], c),
            [80]
        );
        // Any split carries the bytes in order (checked inside `records`).
        for cut in [0, 1, 3, 4, 5, 100] {
            for max in [7, 64, c] {
                let b = &body[..c + 37];
                records(&[&b[..cut], &b[cut..cut + 9], &b[cut + 9..]], max);
            }
        }
    }

    fn config() -> Arc<ServerConfig> {
        configs().0
    }

    /// A certificate for `localhost`: a server configuration with it, and a client's that
    /// trusts it.
    fn configs() -> (Arc<ServerConfig>, Arc<rustls::ClientConfig>) {
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let cert = CertificateDer::from(certified.cert.der().to_vec());
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
            certified.signing_key.serialize_der(),
        ));
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let server = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.clone()], key)
            .unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert).unwrap();
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        (Arc::new(server), Arc::new(client))
    }

    /// A server session over memory (the fuzzer's [`Probe`]) and a client session,
    /// handshaken.
    fn connected() -> (Probe, rustls::ClientConnection) {
        let (server, client) = configs();
        let mut probe = Probe::new(server, usize::MAX).unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let mut client = rustls::ClientConnection::new(client, name).unwrap();
        let mut buf = [0u8; 64];
        while client.is_handshaking() {
            send(&mut client, &mut probe, &[]);
            assert!(
                matches!(probe.read(&mut buf), Err(e) if e.kind() == io::ErrorKind::WouldBlock),
                "only the handshake so far"
            );
            let out = probe.take_output();
            let mut rd: &[u8] = &out;
            while !rd.is_empty() {
                client.read_tls(&mut rd).unwrap();
                client.process_new_packets().unwrap();
            }
        }
        (probe, client)
    }

    /// The client sends `data` (one record when it is at most 16 KiB) and whatever else its
    /// session has to send.
    fn send(client: &mut rustls::ClientConnection, probe: &mut Probe, data: &[u8]) {
        client.writer().write_all(data).unwrap();
        let mut out = Vec::new();
        while client.wants_write() {
            client.write_tls(&mut out).unwrap();
        }
        probe.feed(&out);
    }

    /// Only a read that looked at the socket may say it emptied it. Bytes handed out from
    /// what an earlier read decrypted say nothing of the socket now: in the loop, a record
    /// that arrived since raised its readiness event while the connection waited for its
    /// next turn, and no other event will come for it.
    #[test]
    fn bytes_handed_out_from_memory_never_say_the_socket_is_empty() {
        let (mut probe, mut client) = connected();
        let mut buf = [0u8; 1000];
        // One record of 3,500 B: a read of 1,000 decrypts it all (the socket read is short)
        // and keeps the rest.
        send(&mut client, &mut probe, &[7; 3500]);
        assert_eq!(probe.read(&mut buf).unwrap(), 1000);
        assert!(!probe.tls.emptied(), "2,500 B wait in the session");
        // A second record arrives while the first is handed out.
        send(&mut client, &mut probe, &[8; 100]);
        assert_eq!(probe.read(&mut buf).unwrap(), 1000);
        assert_eq!(probe.read(&mut buf).unwrap(), 1000);
        assert!(!probe.tls.emptied());
        assert_eq!(probe.read(&mut buf).unwrap(), 500);
        assert!(
            !probe.tls.emptied(),
            "the last of the first record came from memory: the socket was not looked at"
        );
        assert_eq!(probe.read(&mut buf).unwrap(), 100);
        assert_eq!(buf[..100], [8; 100]);
        assert!(probe.tls.emptied(), "this read found the socket empty");
        assert!(matches!(probe.read(&mut buf), Err(e) if e.kind() == io::ErrorKind::WouldBlock));
    }

    /// A handshake record holding the start of a ClientHello that claims 100 bytes, then a
    /// record of an unknown content type: rustls fails while a handshake message is half
    /// joined, and its deframer keeps an offset into the input it was given.
    const HALF_HELLO_THEN_GARBAGE: &[u8] = &[
        22, 3, 1, 0, 8, 1, 0, 0, 100, 3, 3, 0, 0, // handshake record: ClientHello, 4 of 100 B
        0x99, 3, 3, 0, 1, 0, // content type 0x99
    ];

    /// The hazard is real: after that error, rustls pops its alert first, but any later call
    /// deframes from an offset into the input it was given, and a shorter slice (the empty
    /// one) panics in rustls 0.23.46. [`Tls`] calls it exactly once after an error, with the
    /// undiscarded input, and never drops undiscarded bytes while it may call again. (Should
    /// a later rustls stop panicking, the first assertion here goes.)
    #[test]
    fn an_empty_slice_after_an_error_mid_handshake_message_panics_rustls() {
        let cfg = config();
        let fresh = || UnbufferedServerConnection::new(cfg.clone()).unwrap();

        let mut conn = fresh();
        let mut input = HALF_HELLO_THEN_GARBAGE.to_vec();
        let UnbufferedStatus { discard, state } = conn.process_tls_records(&mut input);
        assert!(state.is_err(), "rustls refuses the input");
        assert_eq!(discard, 0, "the half-joined message is not discarded");
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            for _ in 0..2 {
                let _ = conn.process_tls_records(&mut []);
            }
        }))
        .is_err();
        assert!(panicked, "rustls 0.23.46 panics on an empty slice here");

        let mut conn = fresh();
        let mut input = HALF_HELLO_THEN_GARBAGE.to_vec();
        let UnbufferedStatus { state, .. } = conn.process_tls_records(&mut input);
        assert!(state.is_err());
        let UnbufferedStatus { state, .. } = conn.process_tls_records(&mut input[discard..]);
        assert!(
            matches!(state, Ok(ConnectionState::EncodeTlsData(_))),
            "the alert comes with the undiscarded input"
        );
    }

    /// Half a ClientHello, then the peer's FIN: the loop closes the connection, which asks
    /// for `close_notify`; rustls is driven with the undiscarded bytes, never an empty slice.
    #[test]
    fn a_peer_that_vanishes_mid_handshake_message_is_closed_without_a_panic() {
        let (sock, mut client) = pair();
        let mut tls = Tls::accept(sock, config()).unwrap();
        client.write_all(&HALF_HELLO_THEN_GARBAGE[..13]).unwrap();
        client.shutdown(Shutdown::Write).unwrap();
        let mut buf = [0u8; 4096];
        assert_eq!(read_until(&mut tls, &mut buf).unwrap(), 0);
        assert!(tls.write(b"x").is_err());
        tls.shutdown_write();
        tls.shutdown_write();
        assert_eq!(tls.read(&mut buf).unwrap(), 0);
    }

    /// A socket pair: the server side as the loop has it, the client side blocking.
    fn pair() -> (TcpStream, std::net::TcpStream) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        server.set_nonblocking(true).unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        (TcpStream::from_std(server), client)
    }

    /// Reads until `pred` holds for the server's read result, giving up after 5 s.
    fn read_until(tls: &mut Tls, buf: &mut [u8]) -> io::Result<usize> {
        let end = Instant::now() + Duration::from_secs(5);
        loop {
            match tls.read(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && Instant::now() < end => {
                    std::thread::sleep(Duration::from_millis(5))
                }
                r => return r,
            }
        }
    }

    /// The same sequence from the network, in one read and split in two: an alert, a close,
    /// no panic, and nothing more read or written afterwards.
    #[test]
    fn the_panicking_sequence_from_the_network_gets_an_alert_and_a_close() {
        for split in [HALF_HELLO_THEN_GARBAGE.len(), 13, 9, 3] {
            let (sock, mut client) = pair();
            let mut tls = Tls::accept(sock, config()).unwrap();
            let mut buf = [0u8; 4096];
            let (a, b) = HALF_HELLO_THEN_GARBAGE.split_at(split);
            client.write_all(a).unwrap();
            if !b.is_empty() {
                std::thread::sleep(Duration::from_millis(20));
                assert!(
                    matches!(tls.read(&mut buf), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
                );
                client.write_all(b).unwrap();
            }
            let r = read_until(&mut tls, &mut buf);
            assert!(
                matches!(&r, Err(e) if e.kind() == io::ErrorKind::InvalidData),
                "{r:?}"
            );
            // After the failure: EOF, writes refused, close without touching rustls.
            assert_eq!(tls.read(&mut buf).unwrap(), 0);
            assert!(tls.write(b"x").is_err());
            tls.shutdown_write();
            let mut got = Vec::new();
            let _ = client.read_to_end(&mut got);
            assert_eq!(got.first(), Some(&21), "a TLS alert record: {got:?}");
        }
    }

    /// Undiscarded input past the largest wire record is never kept: the peer is cut off.
    #[test]
    fn pending_input_is_capped_at_the_largest_wire_record() {
        let (sock, mut client) = pair();
        let mut tls = Tls::accept(sock, config()).unwrap();
        // A ClientHello claiming 60,000 B in two full handshake records: rustls would join
        // it in place, but 32 KiB of undiscarded input is over the cap.
        let mut bytes = Vec::new();
        for i in 0..2 {
            bytes.extend_from_slice(&[22, 3, 1, 0x40, 0]);
            let start = bytes.len();
            bytes.resize(start + 16 * 1024, 0);
            if i == 0 {
                bytes[start..start + 4].copy_from_slice(&[1, 0, 0xea, 0x60]);
            }
        }
        let writer = std::thread::spawn(move || {
            let _ = client.write_all(&bytes);
            client
        });
        let mut buf = vec![0u8; 64 * 1024];
        let r = read_until(&mut tls, &mut buf);
        assert!(r.is_err() || r.as_ref().ok() == Some(&0), "{r:?}");
        assert!(tls.incoming.is_none(), "nothing is kept");
        drop(tls);
        let _ = writer.join();
    }
}

//! Layer 2: one connection, still without sockets or clocks.
//!
//! - **In:** bytes the loop read (`&mut` so payloads are unmasked in place), and `now`.
//! - **Out:** [`Event`]s borrowed from those bytes where possible, bytes to write appended to
//!   the caller's output buffer or kept in the connection's [`WriteQueue`], the wanted
//!   readiness ([`Conn::wants_write`]) and the next deadline ([`Conn::next_deadline`]).
//! - **Never:** a syscall, a clock read, a panic on peer input, or a buffer past the
//!   [`Config`] bounds.
//!
//! Failure is sticky: once the connection has decided on a close code it parses nothing more,
//! and every later call agrees.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod deadlines;
pub mod write_queue;

use core::fmt;

pub use deadlines::{DeadlineAction, Deadlines, Expired, Millis};
pub use write_queue::{Chunk, WriteQueue};

use crate::config::Config;
use crate::pool::{self, Pool};
use crate::proto::close::{self, CloseCode, MAX_REASON_LEN};
use crate::proto::frame::{FrameHeader, OpCode};
use crate::proto::handshake::find_head_end;
use crate::proto::mask::unmask;
use crate::proto::message::{Assembler, DataKind, FrameKind};
use crate::proto::{response, HandshakeError, ProtocolError, Role, Status};

/// The server-side mirror of the browser's `readyState`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Accepted; the upgrade request is not complete or not answered yet.
    Connecting,
    /// Upgraded: messages flow both ways.
    Open,
    /// A close frame (or an HTTP answer) was sent or received; finishing.
    Closing,
    /// The TCP connection is gone.
    Closed,
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            State::Connecting => "CONNECTING",
            State::Open => "OPEN",
            State::Closing => "CLOSING",
            State::Closed => "CLOSED",
        })
    }
}

/// Bytes handed to the loop: borrowed from the read buffer (zero copy), or a pooled buffer
/// that held an incomplete head or message and goes back to the pool after use.
#[derive(Debug)]
pub enum Data<'b> {
    /// Borrowed from the bytes just read.
    Borrowed(&'b [u8]),
    /// Assembled across reads or fragments.
    Pooled(Vec<u8>),
}

impl Data<'_> {
    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        match self {
            Data::Borrowed(b) => b,
            Data::Pooled(v) => v,
        }
    }

    /// Gives a pooled buffer back.
    pub fn recycle(self, pool: &mut Pool) {
        if let Data::Pooled(v) = self {
            pool.put(v);
        }
    }
}

/// A close frame received from the peer: its code (1005 if it had none) and reason.
#[derive(Clone, Copy, Debug)]
pub struct CloseFrame {
    code: CloseCode,
    reason: [u8; MAX_REASON_LEN],
    reason_len: u8,
}

impl CloseFrame {
    fn new(code: CloseCode, reason: &str) -> Self {
        let mut frame = CloseFrame {
            code,
            reason: [0; MAX_REASON_LEN],
            reason_len: 0,
        };
        let n = reason.len().min(MAX_REASON_LEN);
        if let (Some(dst), Some(src)) = (frame.reason.get_mut(..n), reason.as_bytes().get(..n)) {
            dst.copy_from_slice(src);
            frame.reason_len = n as u8;
        }
        frame
    }

    /// The code.
    pub fn code(&self) -> CloseCode {
        self.code
    }

    /// The reason (validated UTF-8 when parsed).
    pub fn reason(&self) -> &str {
        let bytes = self
            .reason
            .get(..usize::from(self.reason_len))
            .unwrap_or_default();
        core::str::from_utf8(bytes).unwrap_or_default()
    }
}

/// What reading produced, one at a time, in wire order.
#[derive(Debug)]
pub enum Event<'b> {
    /// A complete request head. Answer with [`Conn::accept`] or an HTTP response and
    /// [`Conn::answered_http`].
    Head(Data<'b>),
    /// The request head broke a limit before it was complete; answer with its status.
    BadHead(HandshakeError),
    /// A complete message; text is valid UTF-8.
    Message(DataKind, Data<'b>),
    /// A complete text message in one frame, validated and borrowed from the input.
    Text(&'b str),
    /// The peer closed while open; the reply is already written.
    Closed(CloseFrame),
    /// The peer broke the protocol while open; a close frame with the error's code is written.
    Failed(ProtocolError),
    /// Control frames answered in place filled the output to `max_backpressure`: write it,
    /// then read on.
    Flush,
}

/// What the loop should do with the socket once the output is flushed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Finish {
    /// Keep it open.
    Keep,
    /// Shut down the write side and read until EOF or the close deadline, so a peer still
    /// sending does not get a reset that could destroy the close frame or HTTP answer.
    ShutdownWrite,
    /// The close handshake is done: close the TCP connection (the server closes first,
    /// RFC 6455 §7.1.1).
    Close,
}

#[derive(Clone, Copy, Debug)]
enum Rx {
    /// Waiting for a frame header; `bytes[..len]` hold a header split across reads.
    Header {
        bytes: [u8; FrameHeader::MAX_LEN],
        len: u8,
    },
    /// Inside the payload of `header`; `done` bytes of it consumed.
    Payload {
        header: FrameHeader,
        kind: FrameKind,
        done: u64,
    },
    /// Failed or closed: everything read is dropped.
    Discard,
}

const RX_START: Rx = Rx::Header {
    bytes: [0; FrameHeader::MAX_LEN],
    len: 0,
};

/// One WebSocket connection's protocol state, buffers, queue and deadlines.
#[derive(Debug)]
pub struct Conn {
    state: State,
    close_sent: bool,
    close_received: bool,
    linger: bool,
    write_shut: bool,
    rx: Rx,
    asm: Assembler,
    buf: Option<Vec<u8>>,
    queue: WriteQueue,
    deadlines: Deadlines,
}

impl Conn {
    /// A connection accepted at `now`: it has `handshake_timeout` to send its request head.
    pub fn new(now: Millis, cfg: &Config) -> Self {
        Conn {
            state: State::Connecting,
            close_sent: false,
            close_received: false,
            linger: false,
            write_shut: false,
            rx: RX_START,
            asm: Assembler::new(),
            buf: None,
            queue: WriteQueue::new(),
            deadlines: Deadlines {
                phase: Some(now.after(cfg.handshake_timeout)),
                last_rx: now,
                ping_sent: None,
                last_message: now,
            },
        }
    }

    /// The current state.
    pub fn state(&self) -> State {
        self.state
    }

    /// True once the connection may send data: upgraded and not closing.
    pub fn is_open(&self) -> bool {
        self.state == State::Open
    }

    /// The write queue (what the socket has not taken).
    pub fn queue(&self) -> &WriteQueue {
        &self.queue
    }

    /// The write queue, for the loop to write from and advance.
    pub fn queue_mut(&mut self) -> &mut WriteQueue {
        &mut self.queue
    }

    /// True while bytes are queued: the loop registers writable interest only then.
    pub fn wants_write(&self) -> bool {
        !self.queue.is_empty()
    }

    /// Bytes of user-space memory this connection holds beyond its own record.
    pub fn buffered_bytes(&self) -> usize {
        self.buf.as_ref().map_or(0, Vec::capacity) + self.queue.len()
    }

    /// Records that bytes arrived at `now`: any frame proves the peer alive.
    pub fn on_bytes(&mut self, now: Millis) {
        self.deadlines.last_rx = now;
        self.deadlines.ping_sent = None;
    }

    /// Reads the next event from `input`, consuming what it used. Call again until `None`:
    /// then every byte was consumed or kept.
    ///
    /// Performs a bounded amount of work: at most one event, plus any number of control
    /// frames answered in place, all from `input`.
    pub fn read_event<'b>(
        &mut self,
        input: &mut &'b mut [u8],
        out: &mut Vec<u8>,
        pool: &mut Pool,
        cfg: &Config,
        now: Millis,
    ) -> Option<Event<'b>> {
        match self.state {
            State::Connecting => self.read_head(input, pool, cfg),
            State::Open | State::Closing => self.read_frames(input, out, pool, cfg, now),
            State::Closed => {
                take(input, usize::MAX);
                None
            }
        }
    }

    fn read_head<'b>(
        &mut self,
        input: &mut &'b mut [u8],
        pool: &mut Pool,
        cfg: &Config,
    ) -> Option<Event<'b>> {
        if input.is_empty() {
            return None;
        }
        let max = cfg.max_request_head;
        let Some(buf) = self.buf.as_mut() else {
            // Zero copy: the whole head came in one read.
            if let Some(end) = find_head_end(input, 0) {
                if end > max {
                    return Some(self.bad_head(input, pool, HandshakeError::HeadTooLarge));
                }
                return Some(Event::Head(Data::Borrowed(take(input, end))));
            }
            if input.len() >= max {
                return Some(self.bad_head(input, pool, HandshakeError::HeadTooLarge));
            }
            if has_bare_lf(input, 0) {
                return Some(self.bad_head(input, pool, HandshakeError::Malformed));
            }
            let mut buf = pool.take();
            pool::grow_within(&mut buf, input.len(), max);
            buf.extend_from_slice(take(input, usize::MAX));
            self.buf = Some(buf);
            return None;
        };
        let prev = buf.len();
        let n = input.len().min(max - prev);
        pool::grow_within(buf, n, max);
        buf.extend_from_slice(input.get(..n).unwrap_or_default());
        if let Some(end) = find_head_end(buf, prev) {
            // Only the head's bytes are consumed: what follows is the first frame.
            take(input, end - prev);
            buf.truncate(end);
            let head = self.buf.take().unwrap_or_default();
            return Some(Event::Head(Data::Pooled(head)));
        }
        if buf.len() >= max {
            return Some(self.bad_head(input, pool, HandshakeError::HeadTooLarge));
        }
        if has_bare_lf(buf, prev) {
            return Some(self.bad_head(input, pool, HandshakeError::Malformed));
        }
        take(input, n);
        None
    }

    fn bad_head<'b>(
        &mut self,
        input: &mut &'b mut [u8],
        pool: &mut Pool,
        e: HandshakeError,
    ) -> Event<'b> {
        take(input, usize::MAX);
        if let Some(buf) = self.buf.take() {
            pool.put(buf);
        }
        Event::BadHead(e)
    }

    fn read_frames<'b>(
        &mut self,
        input: &mut &'b mut [u8],
        out: &mut Vec<u8>,
        pool: &mut Pool,
        cfg: &Config,
        now: Millis,
    ) -> Option<Event<'b>> {
        loop {
            if input.is_empty() {
                return None;
            }
            match self.rx {
                Rx::Discard => {
                    take(input, usize::MAX);
                    return None;
                }
                Rx::Header { mut bytes, len } => {
                    let have = usize::from(len);
                    let parsed = if have == 0 {
                        FrameHeader::parse(input, Role::Server)
                    } else {
                        let n = input.len().min(FrameHeader::MAX_LEN - have);
                        if let (Some(dst), Some(src)) =
                            (bytes.get_mut(have..have + n), input.get(..n))
                        {
                            dst.copy_from_slice(src);
                        }
                        FrameHeader::parse(bytes.get(..have + n).unwrap_or_default(), Role::Server)
                    };
                    match parsed {
                        Err(e) => return self.fail(e, out, pool, cfg, now),
                        Ok(Status::Partial) => {
                            // A header is at most 14 bytes, so a partial one fits `bytes`.
                            let n = input.len().min(FrameHeader::MAX_LEN - have);
                            if let (Some(dst), Some(src)) =
                                (bytes.get_mut(have..have + n), input.get(..n))
                            {
                                dst.copy_from_slice(src);
                            }
                            take(input, n);
                            self.rx = Rx::Header {
                                bytes,
                                len: (have + n) as u8,
                            };
                            return None;
                        }
                        Ok(Status::Complete((header, header_len))) => {
                            take(input, header_len.saturating_sub(have));
                            self.rx = RX_START;
                            if let Some(ev) = self.start_frame(header, input, out, pool, cfg, now) {
                                return Some(ev);
                            }
                        }
                    }
                }
                Rx::Payload { header, kind, done } => {
                    let left = header.payload_len - done;
                    let n = usize::try_from(left).unwrap_or(usize::MAX).min(input.len());
                    let piece = take(input, n);
                    unmask(piece, header.mask.unwrap_or_default(), done);
                    let done = done + n as u64;
                    let end = done == header.payload_len;
                    self.rx = if end {
                        RX_START
                    } else {
                        Rx::Payload { header, kind, done }
                    };
                    if let Some(ev) = self.on_piece(header, kind, piece, end, out, pool, cfg, now) {
                        return Some(ev);
                    }
                }
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn start_frame<'b>(
        &mut self,
        header: FrameHeader,
        input: &mut &'b mut [u8],
        out: &mut Vec<u8>,
        pool: &mut Pool,
        cfg: &Config,
        now: Millis,
    ) -> Option<Event<'b>> {
        let max = cfg.max_message_size as u64;
        let kind = match self.asm.on_header(&header, max) {
            Ok(kind) => kind,
            Err(e) => return self.fail(e, out, pool, cfg, now),
        };
        let whole = input.len() as u64 >= header.payload_len;
        if whole {
            // Bounded: a data frame is at most max_message_size, a control frame 125 bytes.
            let piece = take(input, header.payload_len as usize);
            unmask(piece, header.mask.unwrap_or_default(), 0);
            let piece: &'b [u8] = piece;
            let single = header.fin
                && kind
                    == FrameKind::Data {
                        kind: data_kind(&header),
                        first: true,
                    };
            if single && !self.close_sent {
                // Zero copy: a whole unfragmented message in the read buffer.
                if let Err(e) = self.asm.on_frame_end(true) {
                    return self.fail(e, out, pool, cfg, now);
                }
                self.deadlines.last_message = now;
                if data_kind(&header) == DataKind::Binary {
                    return Some(Event::Message(DataKind::Binary, Data::Borrowed(piece)));
                }
                // One validation, whose result the handler receives.
                return match core::str::from_utf8(piece) {
                    Ok(text) => Some(Event::Text(text)),
                    Err(_) => self.fail(ProtocolError::InvalidUtf8, out, pool, cfg, now),
                };
            }
            return self.on_piece(header, kind, piece, true, out, pool, cfg, now);
        }
        if let (FrameKind::Data { first: true, .. }, true) = (kind, header.fin) {
            // One frame, split across reads: reserve it once.
            let buf = self.buf.get_or_insert_with(|| pool.take());
            pool::grow_within(buf, header.payload_len as usize, cfg.max_message_size);
        }
        self.rx = Rx::Payload {
            header,
            kind,
            done: 0,
        };
        None
    }

    /// Takes an unmasked piece of the current frame's payload; `end` if it is the last.
    #[allow(clippy::too_many_arguments)]
    fn on_piece<'b>(
        &mut self,
        header: FrameHeader,
        kind: FrameKind,
        piece: &[u8],
        end: bool,
        out: &mut Vec<u8>,
        pool: &mut Pool,
        cfg: &Config,
        now: Millis,
    ) -> Option<Event<'b>> {
        match kind {
            FrameKind::Data { .. } => {
                // RFC 6455 §8.1: fail fast, at the piece with the first invalid byte.
                if let Err(e) = self.asm.on_data(piece) {
                    return self.fail(e, out, pool, cfg, now);
                }
                if !self.close_sent {
                    let buf = self.buf.get_or_insert_with(|| pool.take());
                    pool::grow_within(buf, piece.len(), cfg.max_message_size);
                    buf.extend_from_slice(piece);
                }
                if !end {
                    return None;
                }
                match self.asm.on_frame_end(header.fin) {
                    Err(e) => self.fail(e, out, pool, cfg, now),
                    Ok(None) => None,
                    Ok(Some(_)) if self.close_sent => None,
                    Ok(Some(kind)) => {
                        self.deadlines.last_message = now;
                        let buf = self.buf.take().unwrap_or_default();
                        Some(Event::Message(kind, Data::Pooled(buf)))
                    }
                }
            }
            FrameKind::Control(op) => {
                let len = header.payload_len as usize;
                if end && len == piece.len() {
                    return self.on_control(op, piece, out, pool, cfg, now);
                }
                // A control frame split across reads: its ≤ 125 bytes wait after any message
                // bytes in the connection's buffer.
                let mut buf = self.buf.take().unwrap_or_else(|| pool.take());
                buf.extend_from_slice(piece);
                if !end {
                    self.buf = Some(buf);
                    return None;
                }
                let start = buf.len() - len;
                let ev = self.on_control(
                    op,
                    buf.get(start..).unwrap_or_default(),
                    out,
                    pool,
                    cfg,
                    now,
                );
                buf.truncate(start);
                let keep = !buf.is_empty() && !matches!(self.rx, Rx::Discard);
                if keep && self.buf.is_none() {
                    // Message bytes wait for the rest of the message.
                    self.buf = Some(buf);
                } else {
                    // Nothing to keep, or the control frame ended the connection.
                    pool.put(buf);
                }
                ev
            }
        }
    }

    fn on_control<'b>(
        &mut self,
        op: OpCode,
        payload: &[u8],
        out: &mut Vec<u8>,
        pool: &mut Pool,
        cfg: &Config,
        now: Millis,
    ) -> Option<Event<'b>> {
        match op {
            // RFC 6455 §5.5.2: a Pong with the Ping's payload, as soon as practical.
            OpCode::Ping if !self.close_sent => {
                self.write_frame(out, true, OpCode::Pong, payload);
                // A flood of pings answered in place: let the loop write the batch before it
                // grows past the bound. Once bytes wait in the queue, a newer pong replaces a
                // waiting one there.
                (out.len() >= cfg.max_backpressure).then_some(Event::Flush)
            }
            OpCode::Close => {
                let parsed = match close::parse_payload(payload) {
                    Ok(parsed) => parsed,
                    Err(e) => return self.fail(e, out, pool, cfg, now),
                };
                self.close_received = true;
                self.rx = Rx::Discard;
                self.release_buf(pool);
                if self.close_sent {
                    // The reply to our close: reported when we sent it.
                    return None;
                }
                // RFC 6455 §5.5.1: reply with a Close frame, typically echoing the code.
                let (code, reason) = parsed.unwrap_or((CloseCode::NO_STATUS, ""));
                let mut payload = [0u8; 125];
                let n = match parsed {
                    Some((code, _)) => close::encode_payload(code, "", &mut payload),
                    None => 0,
                };
                self.write_frame(
                    out,
                    false,
                    OpCode::Close,
                    payload.get(..n).unwrap_or_default(),
                );
                self.close_sent = true;
                self.enter_closing(cfg, now);
                Some(Event::Closed(CloseFrame::new(code, reason)))
            }
            // Unsolicited pongs are ignored (§5.5.3); any frame already counted as liveness.
            _ => None,
        }
    }

    /// Fails the connection (RFC 6455 §7.1.7): a close frame with the error's code, then
    /// nothing more is parsed. `Some` only the first time, while open.
    fn fail<'b>(
        &mut self,
        e: ProtocolError,
        out: &mut Vec<u8>,
        pool: &mut Pool,
        cfg: &Config,
        now: Millis,
    ) -> Option<Event<'b>> {
        self.rx = Rx::Discard;
        self.linger = true;
        self.release_buf(pool);
        if self.state != State::Open {
            return None;
        }
        self.send_close(out, e.close_code(), e.as_str());
        self.enter_closing(cfg, now);
        Some(Event::Failed(e))
    }

    fn release_buf(&mut self, pool: &mut Pool) {
        if let Some(buf) = self.buf.take() {
            pool.put(buf);
        }
    }

    fn enter_closing(&mut self, cfg: &Config, now: Millis) {
        self.state = State::Closing;
        self.deadlines.phase = Some(now.after(cfg.close_timeout));
    }

    fn send_close(&mut self, out: &mut Vec<u8>, code: CloseCode, reason: &str) {
        let mut payload = [0u8; 125];
        let n = close::encode_payload(code, reason, &mut payload);
        self.write_frame(
            out,
            false,
            OpCode::Close,
            payload.get(..n).unwrap_or_default(),
        );
        self.close_sent = true;
    }

    /// Queues a control frame (≤ 125 bytes) ahead of queued data.
    fn write_urgent(&mut self, opcode: OpCode, payload: &[u8]) {
        let header = FrameHeader::new(true, opcode, payload.len() as u64);
        let mut frame = [0u8; FrameHeader::MAX_LEN + 125];
        let n = header.encode(&mut frame);
        let len = n + payload.len();
        if let Some(dst) = frame.get_mut(n..len) {
            dst.copy_from_slice(payload);
        }
        self.queue.push_urgent(frame.get(..len).unwrap_or_default());
    }

    /// Writes a whole frame: to `out` while nothing is queued, else to the queue; `urgent`
    /// control frames go ahead of queued data. Order holds because the loop, too, adds to
    /// `out` only while the queue is empty, and moves what the socket did not take of `out`
    /// into the queue.
    fn write_frame(&mut self, out: &mut Vec<u8>, urgent: bool, opcode: OpCode, payload: &[u8]) {
        let header = FrameHeader::new(true, opcode, payload.len() as u64);
        let mut head = [0u8; FrameHeader::MAX_LEN];
        let n = header.encode(&mut head);
        let head = head.get(..n).unwrap_or_default();
        if self.queue.is_empty() {
            out.extend_from_slice(head);
            out.extend_from_slice(payload);
        } else if urgent {
            self.write_urgent(opcode, payload);
        } else {
            self.queue.push_parts(&[head, payload]);
        }
    }

    /// Records that a data message went out at `now`, for the idle timeout.
    pub fn note_message(&mut self, now: Millis) {
        self.deadlines.last_message = now;
    }

    /// Answers the upgrade with `101 Switching Protocols`; the connection is open.
    pub fn accept(&mut self, out: &mut Vec<u8>, key: &[u8], protocol: Option<&str>, now: Millis) {
        response::switching_protocols(out, key, protocol);
        self.state = State::Open;
        self.deadlines = Deadlines {
            phase: None,
            last_rx: now,
            ping_sent: None,
            last_message: now,
        };
    }

    /// Records that the loop wrote a final HTTP answer: flush it, then shut down.
    pub fn answered_http(&mut self, pool: &mut Pool, cfg: &Config, now: Millis) {
        self.close_sent = true;
        self.linger = true;
        self.rx = Rx::Discard;
        self.release_buf(pool);
        self.enter_closing(cfg, now);
    }

    /// Starts a server-initiated close. Returns false if the connection was not open.
    pub fn close(
        &mut self,
        out: &mut Vec<u8>,
        code: CloseCode,
        reason: &str,
        cfg: &Config,
        now: Millis,
    ) -> bool {
        if self.state != State::Open {
            return false;
        }
        self.send_close(out, code, reason);
        self.enter_closing(cfg, now);
        true
    }

    /// The slow-consumer close: drops every queued frame not yet begun and closes with 1008.
    /// Returns the bytes dropped, or `None` if the connection was not open.
    pub fn close_slow(&mut self, out: &mut Vec<u8>, cfg: &Config, now: Millis) -> Option<usize> {
        if self.state != State::Open {
            return None;
        }
        let dropped = self.queue.drop_unstarted();
        self.close(out, CloseCode::POLICY, "slow consumer", cfg, now);
        Some(dropped)
    }

    /// The TCP connection ended (EOF, error or a drop). Returns 1006 if the handler must be
    /// told, i.e. the connection was open.
    pub fn on_closed(&mut self, pool: &mut Pool) -> Option<CloseCode> {
        let was_open = self.state == State::Open;
        self.state = State::Closed;
        self.rx = Rx::Discard;
        self.release_buf(pool);
        was_open.then_some(CloseCode::ABNORMAL)
    }

    /// What to do with the socket now that the loop wrote what it could.
    pub fn finish(&self) -> Finish {
        if !self.close_sent || !self.queue.is_empty() {
            Finish::Keep
        } else if self.close_received {
            Finish::Close
        } else if self.linger && !self.write_shut {
            Finish::ShutdownWrite
        } else {
            Finish::Keep
        }
    }

    /// Records that the write side was shut down.
    pub fn shut_write(&mut self) {
        self.write_shut = true;
    }

    /// The next instant [`Conn::on_deadline`] has something to do, or `None`.
    pub fn next_deadline(&self, cfg: &Config) -> Option<Millis> {
        let d = &self.deadlines;
        match self.state {
            State::Connecting | State::Closing => d.phase,
            State::Closed => None,
            State::Open => {
                let heartbeat = match d.ping_sent {
                    Some(sent) => Some(sent.after(cfg.pong_timeout)),
                    None => cfg.ping_interval.map(|i| d.last_rx.after(i)),
                };
                let idle = cfg.idle_timeout.map(|i| d.last_message.after(i));
                match (heartbeat, idle) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                }
            }
        }
    }

    /// Acts on whatever deadline is due at `now`.
    pub fn on_deadline(&mut self, out: &mut Vec<u8>, cfg: &Config, now: Millis) -> DeadlineAction {
        let d = self.deadlines;
        let due = |at: Option<Millis>| at.is_some_and(|at| now >= at);
        match self.state {
            State::Connecting if due(d.phase) => DeadlineAction::Drop(Expired::Handshake),
            State::Closing if due(d.phase) => DeadlineAction::Drop(Expired::Close),
            State::Open => {
                if due(d.ping_sent.map(|s| s.after(cfg.pong_timeout))) {
                    return DeadlineAction::Drop(Expired::Pong);
                }
                if due(cfg.idle_timeout.map(|i| d.last_message.after(i))) {
                    self.close(out, CloseCode::NORMAL, "idle timeout", cfg, now);
                    return DeadlineAction::Close;
                }
                let ping_due = cfg.ping_interval.map(|i| d.last_rx.after(i));
                if d.ping_sent.is_none() && due(ping_due) {
                    self.write_frame(out, true, OpCode::Ping, b"");
                    self.deadlines.ping_sent = Some(now);
                    return DeadlineAction::Ping;
                }
                DeadlineAction::Nothing
            }
            _ => DeadlineAction::Nothing,
        }
    }
}

fn data_kind(header: &FrameHeader) -> DataKind {
    if header.opcode == OpCode::Text {
        DataKind::Text
    } else {
        DataKind::Binary
    }
}

/// True if `buf[from..]` holds a line feed without a carriage return before it. RFC 9112
/// §2.2 lets a server accept a bare LF as a line end; this one answers 400 at once instead of
/// waiting for a `\r\n\r\n` that will never come.
fn has_bare_lf(buf: &[u8], from: usize) -> bool {
    let start = from.saturating_sub(1);
    buf.get(start..)
        .unwrap_or_default()
        .windows(2)
        .any(|w| matches!(w, [prev, b'\n'] if *prev != b'\r'))
        || (start == 0 && buf.first() == Some(&b'\n'))
}

/// Splits the first `n` bytes (at most all) off the cursor, for the caller to keep.
fn take<'b>(input: &mut &'b mut [u8], n: usize) -> &'b mut [u8] {
    let all = core::mem::take(input);
    let (head, rest) = all.split_at_mut(n.min(all.len()));
    *input = rest;
    head
}

#[cfg(test)]
mod tests;

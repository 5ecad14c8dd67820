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
pub mod head;
pub mod outbox;
pub mod write_queue;

use core::fmt;

pub use deadlines::{DeadlineAction, Deadlines, Expired, Millis};
pub use head::{AcceptAll, Answered, Decide, Decision, HttpRequest, Protocol, Response};
pub use outbox::{FrameHead, Offer, Outbox};
pub use write_queue::{Chunk, WriteQueue};

use crate::config::Config;
use crate::pool::{self, Pool};
use crate::proto::close::{self, CloseCode, MAX_REASON_LEN};
use crate::proto::frame::{self, FrameHeader, OpCode};
use crate::proto::handshake::find_head_end;
use crate::proto::mask::unmask;
use crate::proto::message::{Assembler, DataKind, FrameKind};
use crate::proto::{HandshakeError, ProtocolError, Role, Status};

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

/// What a connection carries once open: WebSocket frames both ways, or Server-Sent Events
/// from the server (a `text/event-stream` response to a plain `GET`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Kind {
    /// A WebSocket connection (also the kind of every connection until its head is answered).
    #[default]
    WebSocket,
    /// An event stream: the server sends events, and nothing the peer sends is read as
    /// messages.
    EventStream,
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
    /// A complete request head: answer it with [`Conn::answer_head`].
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
    /// An event stream: everything read is dropped. Set once, when the stream opens, and
    /// never left: it is the connection's [`Kind`], kept without a field of its own.
    Stream,
}

const RX_START: Rx = Rx::Header {
    bytes: [0; FrameHeader::MAX_LEN],
    len: 0,
};

/// Where the connection is in its life: one enum for the handshake, the open phase and every
/// step of the close.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Waiting for the request head; `refuse` answers it with that status (admission said so).
    Connecting { refuse: Option<u16> },
    /// Upgraded: messages flow both ways.
    Open,
    /// Our close frame (or an HTTP answer) is written or queued.
    Closing(Closing),
    /// The TCP connection is gone.
    Closed,
}

/// The steps of a close, once our close frame or HTTP answer is on its way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Closing {
    /// We closed first and read on for the peer's close frame.
    AwaitReply,
    /// Nothing more will be read (an HTTP answer, a protocol failure): once the output is
    /// flushed, shut down the write side.
    Linger,
    /// The write side is shut down; reading to EOF or the close deadline.
    WriteShut,
    /// Both close frames are exchanged: close the TCP connection once flushed.
    Done,
}

/// One connection's protocol state, buffers, outbox and deadlines.
#[derive(Debug)]
pub struct Conn {
    phase: Phase,
    rx: Rx,
    asm: Assembler,
    /// Frames parsed since the connection began (wrapping): the loop's frame budget.
    frames: u32,
    buf: Option<Vec<u8>>,
    outbox: Outbox,
    deadlines: Deadlines,
}

impl Conn {
    /// A connection accepted at `now`: it has `handshake_timeout` to send its request head.
    /// `refuse`: answer the head with this status instead of upgrading (admission's verdict).
    pub fn new(now: Millis, cfg: &Config, refuse: Option<u16>) -> Self {
        Conn {
            phase: Phase::Connecting { refuse },
            rx: RX_START,
            asm: Assembler::new(),
            frames: 0,
            buf: None,
            outbox: Outbox::default(),
            deadlines: Deadlines {
                phase: Some(now.after(cfg.handshake_timeout)),
                last_rx: now,
                ping_sent: None,
                last_message: now,
            },
        }
    }

    /// The current state, as a browser's `readyState` would say it.
    pub fn state(&self) -> State {
        match self.phase {
            Phase::Connecting { .. } => State::Connecting,
            Phase::Open => State::Open,
            Phase::Closing(_) => State::Closing,
            Phase::Closed => State::Closed,
        }
    }

    /// What the connection carries.
    pub fn kind(&self) -> Kind {
        if matches!(self.rx, Rx::Stream) {
            Kind::EventStream
        } else {
            Kind::WebSocket
        }
    }

    /// True once the connection may send data: upgraded and not closing.
    pub fn is_open(&self) -> bool {
        self.phase == Phase::Open
    }

    /// True if admission decided to refuse this connection's request.
    pub fn is_refused(&self) -> bool {
        matches!(self.phase, Phase::Connecting { refuse: Some(_) })
    }

    /// Frames parsed so far (wrapping), control frames included.
    pub fn frames(&self) -> u32 {
        self.frames
    }

    /// The outbox (what the socket has not taken, and the rules for adding to it).
    pub fn outbox(&self) -> &Outbox {
        &self.outbox
    }

    /// The outbox, for the loop to write from and add to.
    pub fn outbox_mut(&mut self) -> &mut Outbox {
        &mut self.outbox
    }

    /// True while bytes are queued: the loop registers writable interest only then.
    pub fn wants_write(&self) -> bool {
        !self.outbox.is_empty()
    }

    /// Bytes of user-space memory this connection holds beyond its own record.
    pub fn buffered_bytes(&self) -> usize {
        self.buf.as_ref().map_or(0, Vec::capacity) + self.outbox.queued()
    }

    /// A data message, if the connection is open: staged, queued within `limit`, or
    /// refused as too slow. `None` if it is not open.
    pub fn send(
        &mut self,
        batch: &mut Vec<u8>,
        kind: DataKind,
        payload: &[u8],
        limit: usize,
        now: Millis,
    ) -> Option<Offer> {
        if !self.is_open() {
            return None;
        }
        let head = FrameHead::new(opcode(kind), payload.len());
        let offer = self.outbox.data(batch, &head, payload, limit);
        if offer != Offer::TooSlow {
            self.note_message(now);
        }
        Some(offer)
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
        match self.phase {
            Phase::Connecting { .. } => self.read_head(input, pool, cfg),
            Phase::Open | Phase::Closing(_) => self.read_frames(input, out, pool, cfg, now),
            Phase::Closed => {
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
            let end = find_head_end(input, 0);
            if let Some(end) = end.filter(|&end| end <= max) {
                // A bare LF anywhere in the head is a 400 before any other rule, as when the
                // head comes in pieces (each piece is looked at as it arrives).
                if has_bare_lf(input.get(..end).unwrap_or_default(), 0) {
                    return Some(self.bad_head(input, pool, HandshakeError::Malformed));
                }
                return Some(Event::Head(Data::Borrowed(take(input, end))));
            }
            // The first fault in byte order decides, as when the head comes in pieces: a
            // bare LF within the first `max` bytes, then the size.
            if has_bare_lf(input.get(..max).unwrap_or(input), 0) {
                return Some(self.bad_head(input, pool, HandshakeError::Malformed));
            }
            if end.is_some() || input.len() >= max {
                return Some(self.bad_head(input, pool, HandshakeError::HeadTooLarge));
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
            if has_bare_lf(buf.get(..end).unwrap_or_default(), prev) {
                return Some(self.bad_head(input, pool, HandshakeError::Malformed));
            }
            // Only the head's bytes are consumed: what follows is the first frame.
            take(input, end - prev);
            buf.truncate(end);
            let head = self.buf.take().unwrap_or_default();
            return Some(Event::Head(Data::Pooled(head)));
        }
        if has_bare_lf(buf, prev) {
            return Some(self.bad_head(input, pool, HandshakeError::Malformed));
        }
        if buf.len() >= max {
            return Some(self.bad_head(input, pool, HandshakeError::HeadTooLarge));
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
                Rx::Discard | Rx::Stream => {
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
                            self.frames = self.frames.wrapping_add(1);
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
            if single && self.is_open() {
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
                if self.is_open() {
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
                    Ok(Some(_)) if !self.is_open() => None,
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
                // bytes in the connection's buffer, which grows by no more than they need
                // (not doubling past the message bound).
                let mut buf = self.buf.take().unwrap_or_else(|| pool.take());
                let bound = cfg.max_message_size.max(cfg.max_request_head)
                    + usize::from(frame::bits::MAX_CONTROL_LEN);
                pool::grow_within(&mut buf, piece.len(), bound);
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
            OpCode::Ping if self.is_open() => {
                self.outbox.control(out, OpCode::Pong, payload);
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
                self.rx = Rx::Discard;
                self.release_buf(pool);
                if let Phase::Closing(_) = self.phase {
                    // The reply to our close: reported when we sent it.
                    self.phase = Phase::Closing(Closing::Done);
                    return None;
                }
                // RFC 6455 §5.5.1: reply with a Close frame, typically echoing the code.
                let (code, reason) = parsed.unwrap_or((CloseCode::NO_STATUS, ""));
                self.outbox.close(out, parsed.map(|(code, _)| code), "");
                self.enter_closing(Closing::Done, cfg, now);
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
        self.release_buf(pool);
        match self.phase {
            Phase::Open => {
                self.outbox.close(out, Some(e.close_code()), e.as_str());
                self.enter_closing(Closing::Linger, cfg, now);
                Some(Event::Failed(e))
            }
            Phase::Closing(Closing::AwaitReply) => {
                self.phase = Phase::Closing(Closing::Linger);
                None
            }
            _ => None,
        }
    }

    fn release_buf(&mut self, pool: &mut Pool) {
        if let Some(buf) = self.buf.take() {
            pool.put(buf);
        }
    }

    fn enter_closing(&mut self, step: Closing, cfg: &Config, now: Millis) {
        self.phase = Phase::Closing(step);
        self.deadlines.phase = Some(now.after(cfg.close_timeout));
    }

    /// Records that a data message went out at `now`, for the idle timeout.
    pub fn note_message(&mut self, now: Millis) {
        self.deadlines.last_message = now;
    }

    /// The upgrade was answered with `101 Switching Protocols`: the connection is open.
    fn opened(&mut self, now: Millis) {
        self.phase = Phase::Open;
        self.deadlines = Deadlines {
            phase: None,
            last_rx: now,
            ping_sent: None,
            last_message: now,
        };
    }

    /// The request was answered with an event stream's head: the connection is open, and
    /// what the peer sends from now on is read and dropped (an event stream carries nothing
    /// from the peer; the bytes count in the read budget like any others).
    fn opened_stream(&mut self, now: Millis) {
        self.opened(now);
        self.rx = Rx::Stream;
    }

    /// Records that a final HTTP answer was written: flush it, then shut down.
    fn answered_http(&mut self, pool: &mut Pool, cfg: &Config, now: Millis) {
        self.rx = Rx::Discard;
        self.release_buf(pool);
        self.enter_closing(Closing::Linger, cfg, now);
    }

    /// Refuses a head that broke a limit before it was complete ([`Event::BadHead`]), or
    /// any connection still connecting: the status is written and the connection lingers.
    pub fn refuse(
        &mut self,
        out: &mut Vec<u8>,
        status: u16,
        pool: &mut Pool,
        cfg: &Config,
        now: Millis,
    ) {
        if !matches!(self.phase, Phase::Connecting { .. }) {
            return;
        }
        crate::proto::response::error(out, status);
        self.answered_http(pool, cfg, now);
    }

    /// Starts a server-initiated close: a close frame, or on an event stream the end of the
    /// body once the queue is written. Returns false if the connection was not open or the
    /// code may not be sent (1005, 1006: see [`CloseCode`]), for either kind.
    pub fn close(
        &mut self,
        out: &mut Vec<u8>,
        code: CloseCode,
        reason: &str,
        cfg: &Config,
        now: Millis,
    ) -> bool {
        if !self.is_open() || !code.is_valid_on_wire() {
            return false;
        }
        match self.kind() {
            Kind::WebSocket => {
                self.outbox.close(out, Some(code), reason);
                self.enter_closing(Closing::AwaitReply, cfg, now);
            }
            // An event stream has no close frame: what is queued goes out, then the write side
            // is shut down and the peer reads the end of the body.
            Kind::EventStream => self.enter_closing(Closing::Linger, cfg, now),
        }
        true
    }

    /// The slow-consumer close: drops every queued frame (or event) not yet begun and closes
    /// with 1008 (an event stream ends after the one being written).
    /// Returns the bytes dropped, or `None` if the connection was not open.
    pub fn close_slow(&mut self, out: &mut Vec<u8>, cfg: &Config, now: Millis) -> Option<usize> {
        if !self.is_open() {
            return None;
        }
        let dropped = self.outbox.drop_unstarted();
        self.close(out, CloseCode::POLICY, "slow consumer", cfg, now);
        Some(dropped)
    }

    /// The TCP connection ended (EOF, error or a drop). Returns 1006 if the handler must be
    /// told, i.e. the connection was open.
    pub fn on_closed(&mut self, pool: &mut Pool) -> Option<CloseCode> {
        let was_open = self.is_open();
        self.phase = Phase::Closed;
        if !matches!(self.rx, Rx::Stream) {
            self.rx = Rx::Discard;
        }
        self.release_buf(pool);
        was_open.then_some(CloseCode::ABNORMAL)
    }

    /// What to do with the socket now that the loop wrote what it could.
    pub fn finish(&self) -> Finish {
        match self.phase {
            Phase::Closing(_) if !self.outbox.is_empty() => Finish::Keep,
            Phase::Closing(Closing::Done) => Finish::Close,
            Phase::Closing(Closing::Linger) => Finish::ShutdownWrite,
            _ => Finish::Keep,
        }
    }

    /// Records that the write side was shut down.
    pub fn shut_write(&mut self) {
        if self.phase == Phase::Closing(Closing::Linger) {
            self.phase = Phase::Closing(Closing::WriteShut);
        }
    }

    /// The next instant [`Conn::on_deadline`] has something to do, or `None`.
    pub fn next_deadline(&self, cfg: &Config) -> Option<Millis> {
        let d = &self.deadlines;
        match self.phase {
            Phase::Connecting { .. } | Phase::Closing(_) => d.phase,
            Phase::Closed => None,
            Phase::Open => {
                let heartbeat = match (self.kind(), d.ping_sent) {
                    (Kind::EventStream, _) => cfg
                        .event_keepalive
                        .map(|i| d.last_rx.max(d.last_message).after(i)),
                    (Kind::WebSocket, Some(sent)) => Some(sent.after(cfg.pong_timeout)),
                    (Kind::WebSocket, None) => cfg.ping_interval.map(|i| d.last_rx.after(i)),
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
        match self.phase {
            Phase::Connecting { .. } if due(d.phase) => DeadlineAction::Drop(Expired::Handshake),
            Phase::Closing(_) if due(d.phase) => DeadlineAction::Drop(Expired::Close),
            Phase::Open if self.kind() == Kind::EventStream => {
                if due(cfg.idle_timeout.map(|i| d.last_message.after(i))) {
                    self.close(out, CloseCode::NORMAL, "idle timeout", cfg, now);
                    return DeadlineAction::Close;
                }
                let keep_alive = cfg
                    .event_keepalive
                    .map(|i| d.last_rx.max(d.last_message).after(i));
                if !due(keep_alive) {
                    return DeadlineAction::Nothing;
                }
                // Bytes already waiting keep the stream busy: no comment behind them, and the
                // next one counts from now.
                self.deadlines.last_rx = now;
                if self.outbox.keep_alive(out) {
                    DeadlineAction::KeepAlive
                } else {
                    DeadlineAction::Nothing
                }
            }
            Phase::Open => {
                if due(d.ping_sent.map(|s| s.after(cfg.pong_timeout))) {
                    return DeadlineAction::Drop(Expired::Pong);
                }
                if due(cfg.idle_timeout.map(|i| d.last_message.after(i))) {
                    self.close(out, CloseCode::NORMAL, "idle timeout", cfg, now);
                    return DeadlineAction::Close;
                }
                let ping_due = cfg.ping_interval.map(|i| d.last_rx.after(i));
                if d.ping_sent.is_none() && due(ping_due) {
                    self.outbox.control(out, OpCode::Ping, b"");
                    self.deadlines.ping_sent = Some(now);
                    return DeadlineAction::Ping;
                }
                DeadlineAction::Nothing
            }
            _ => DeadlineAction::Nothing,
        }
    }
}

/// The opcode of a data message.
pub fn opcode(kind: DataKind) -> OpCode {
    match kind {
        DataKind::Text => OpCode::Text,
        DataKind::Binary => OpCode::Binary,
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

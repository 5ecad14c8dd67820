//! Drive a [`Handler`] without sockets: scripted peers, time passed in, and the frames (or
//! the Server-Sent Events) the server sent, decoded.
//!
//! A [`Harness`] runs the real server — the same connection code, handshake path, outbox,
//! topics and timers as over TCP — with each peer on an in-memory transport, and a clock
//! that moves only when the test says so. Nothing sleeps; nothing is left to chance.
//!
//! ```
//! use emberws::testing::{Frame, Harness};
//! use emberws::{Config, Ctx, Decision, Handler, HttpRequest, Message};
//!
//! struct Echo;
//!
//! impl Handler for Echo {
//!     type State = ();
//!     fn on_upgrade(&mut self, _: &HttpRequest<'_>) -> Decision<()> {
//!         Decision::Accept(())
//!     }
//!     fn on_message(&mut self, ctx: &mut Ctx<'_>, _: &mut (), msg: Message<'_>) {
//!         ctx.send(msg);
//!     }
//! }
//!
//! let mut h = Harness::new(Config::default(), Echo);
//! let mut peer = h.connect("/").expect("upgraded");
//! h.send(&peer, Message::Text("hi"));
//! assert_eq!(h.received(&mut peer), [Frame::Text("hi".into())]);
//! ```
//!
//! An event stream ([`Handler::on_event_stream`]) is opened with [`Harness::events`] and read
//! with [`Harness::received_events`], parsed as a browser's `EventSource` parses it:
//!
//! ```
//! use emberws::testing::{Event, Harness};
//! use emberws::{Config, Ctx, Decision, Handler, HttpRequest, Message};
//!
//! struct Ticker;
//!
//! impl Handler for Ticker {
//!     type State = ();
//!     fn on_upgrade(&mut self, _: &HttpRequest<'_>) -> Decision<()> {
//!         Decision::Reject(404)
//!     }
//!     fn on_event_stream(&mut self, _: &HttpRequest<'_>) -> Option<Decision<()>> {
//!         Some(Decision::Accept(()))
//!     }
//!     fn on_open(&mut self, ctx: &mut Ctx<'_>, _: &mut ()) {
//!         ctx.send_event("1", Message::Text("first\nline"));
//!     }
//!     fn on_message(&mut self, _: &mut Ctx<'_>, _: &mut (), _: Message<'_>) {}
//! }
//!
//! let mut h = Harness::new(Config::default(), Ticker);
//! let mut peer = h.events("/events", &[]).expect("a stream");
//! let first = Event { id: Some("1".into()), data: "first\nline".into() };
//! assert_eq!(h.received_events(&mut peer), [first]);
//! ```

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use crate::config::Config;
use crate::conn::{Millis, State};
use crate::handler::{Handler, Message};
use crate::proto::close;
use crate::proto::frame::{FrameHeader, OpCode};
use crate::proto::mask::unmask;
use crate::proto::{Role, Status};
use crate::server::inbox::ConnId;
use crate::server::Server;
use crate::stats::Stats;
use crate::transport::memory::Wire;
use crate::transport::Pipe;
use crate::ServerHandle;

/// The masking key of every harness peer.
const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// A frame the server sent to a peer, decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// A text message (one frame: the server never fragments).
    Text(String),
    /// A binary message.
    Binary(Vec<u8>),
    /// A ping.
    Ping(Vec<u8>),
    /// A pong.
    Pong(Vec<u8>),
    /// A close frame: its code (`None` for an empty payload) and reason.
    Close(Option<u16>, String),
}

/// One scripted peer: the client end of an in-memory connection.
#[derive(Debug)]
pub struct Peer {
    id: ConnId,
    wire: Rc<RefCell<Wire>>,
    /// Bytes received and not yet decoded (a partial frame).
    pending: Vec<u8>,
    /// The HTTP response head was read.
    upgraded: bool,
    /// The parser of an event stream's body ([`Harness::events`]).
    stream: Option<EventParser>,
    /// The peer read bytes the server wrote after its last turn: the server has yet to learn
    /// that the window has room again.
    owed: bool,
}

/// One event of an event stream, as a browser's `EventSource` dispatches it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// The `id:` field of this event, if it had one (the browser's `lastEventId` keeps the
    /// latest: [`EventParser::last_event_id`]).
    pub id: Option<String>,
    /// The data: its `data:` lines joined with LF.
    pub data: String,
}

/// What an event stream carried, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Streamed {
    /// An event, dispatched at the empty line that ended it.
    Event(Event),
    /// A comment line, without its colon (`" keep-alive"` for the server's keep-alive).
    Comment(String),
    /// A `retry:` field: the reconnection delay in milliseconds.
    Retry(u64),
}

/// An incremental parser of a `text/event-stream` body, by the rules of the WHATWG HTML
/// standard (§9.2.6 "Interpreting an event stream"): lines end at CRLF, CR or LF, however the
/// bytes are cut; a line starting with a colon is a comment; `data:` lines accumulate until an
/// empty line dispatches them (nothing is dispatched without data); an `id:` holding NUL is
/// ignored; `retry:` takes ASCII digits only.
#[derive(Clone, Debug, Default)]
pub struct EventParser {
    line: Vec<u8>,
    /// The last byte was a CR: an LF right after it ends nothing more.
    after_cr: bool,
    /// The stream's first bytes were looked at (for a byte order mark).
    started: bool,
    data: String,
    has_data: bool,
    id: Option<String>,
    last_event_id: String,
}

impl EventParser {
    /// A parser at the start of a stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// Parses `bytes`, appending what they complete to `out`; a partial line waits.
    pub fn push(&mut self, bytes: &[u8], out: &mut Vec<Streamed>) {
        const BOM: &[u8] = b"\xEF\xBB\xBF";
        if self.started {
            return self.push_started(bytes, out);
        }
        // A byte order mark may open the stream, and is not part of the first line.
        self.line.extend_from_slice(bytes);
        if self.line.len() < BOM.len() && BOM.starts_with(&self.line) {
            return;
        }
        self.started = true;
        let mut held = std::mem::take(&mut self.line);
        if held.starts_with(BOM) {
            held.drain(..BOM.len());
        }
        self.push_started(&held, out);
    }

    fn push_started(&mut self, mut bytes: &[u8], out: &mut Vec<Streamed>) {
        if self.after_cr && bytes.first() == Some(&b'\n') {
            bytes = bytes.get(1..).unwrap_or_default();
        }
        self.after_cr = false;
        while let Some(at) = bytes.iter().position(|&b| b == b'\r' || b == b'\n') {
            let (line, rest) = bytes.split_at(at);
            self.line.extend_from_slice(line);
            let line = std::mem::take(&mut self.line);
            self.on_line(&String::from_utf8_lossy(&line), out);
            let cr = rest.first() == Some(&b'\r');
            bytes = rest.get(1..).unwrap_or_default();
            if cr {
                match bytes.first() {
                    Some(b'\n') => bytes = bytes.get(1..).unwrap_or_default(),
                    Some(_) => {}
                    None => self.after_cr = true,
                }
            }
        }
        self.line.extend_from_slice(bytes);
    }

    fn on_line(&mut self, line: &str, out: &mut Vec<Streamed>) {
        if line.is_empty() {
            let id = self.id.take();
            if self.has_data {
                let mut data = std::mem::take(&mut self.data);
                data.pop(); // the LF after the last data line
                out.push(Streamed::Event(Event { id, data }));
            }
            self.has_data = false;
            self.data.clear();
            return;
        }
        if let Some(comment) = line.strip_prefix(':') {
            out.push(Streamed::Comment(comment.to_owned()));
            return;
        }
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        match field {
            "data" => {
                self.data.push_str(value);
                self.data.push('\n');
                self.has_data = true;
            }
            "id" if !value.contains('\0') => {
                self.id = Some(value.to_owned());
                self.last_event_id = value.to_owned();
            }
            "retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                if let Ok(ms) = value.parse() {
                    out.push(Streamed::Retry(ms));
                }
            }
            _ => {}
        }
    }

    /// The id of the latest `id:` field: what a browser sends as `Last-Event-ID`.
    pub fn last_event_id(&self) -> &str {
        &self.last_event_id
    }
}

impl Peer {
    /// The server's id for this connection.
    pub fn id(&self) -> ConnId {
        self.id
    }

    /// True once the server shut down its write side (it will send nothing more).
    pub fn is_shut(&self) -> bool {
        self.wire.borrow().outbound_closed
    }
}

/// A server with peers in memory and a clock the test moves.
pub struct Harness<H: Handler> {
    server: Server<H>,
    now: Millis,
    next_port: u16,
}

/// The answer to a plain HTTP request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpAnswer {
    /// The status code.
    pub status: u16,
    /// The header lines, as (name, value).
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl<H: Handler> Harness<H> {
    /// A server with this configuration and handler, at time 0.
    ///
    /// # Panics
    /// If the configuration is invalid or the poll (used only for the handle's waker) cannot
    /// be created.
    pub fn new(cfg: Config, handler: H) -> Self {
        #[allow(clippy::expect_used)]
        let server = Server::detached(cfg, handler).expect("a valid configuration");
        Harness {
            server,
            now: Millis(0),
            next_port: 40000,
        }
    }

    /// The listener address that later peers connect to, as [`HttpRequest::local_addr`]
    /// reports it (default `127.0.0.1:9001`): e.g. `0.0.0.0:9001` to be a public listener.
    ///
    /// [`HttpRequest::local_addr`]: crate::HttpRequest::local_addr
    pub fn set_local_addr(&mut self, addr: SocketAddr) {
        self.server.set_memory_local(addr);
    }

    /// A new peer that sends `head` as its first bytes.
    pub fn open_raw(&mut self, head: &[u8]) -> Option<Peer> {
        let wire = Rc::new(RefCell::new(Wire {
            window: usize::MAX,
            ..Wire::default()
        }));
        self.next_port = self.next_port.wrapping_add(1);
        let peer = SocketAddr::from(([127, 0, 0, 1], self.next_port));
        let id = self.server.admit_memory(Pipe(wire.clone()), peer)?;
        let mut peer = Peer {
            id,
            wire,
            pending: Vec::new(),
            upgraded: false,
            stream: None,
            owed: false,
        };
        self.send_bytes(&mut peer, head);
        Some(peer)
    }

    /// Upgrades a new peer at `target` (a path with an optional query). `Err` holds the
    /// status the server answered instead of 101: 503 if it refused the connection at
    /// capacity before reading it, 0 if it answered nothing.
    pub fn connect(&mut self, target: &str) -> Result<Peer, u16> {
        self.connect_with(target, &[])
    }

    /// As [`Harness::connect`], with extra request headers.
    pub fn connect_with(&mut self, target: &str, headers: &[(&str, &str)]) -> Result<Peer, u16> {
        self.upgrade(target, headers)
            .map_err(|answer| answer.status)
    }

    /// As [`Harness::connect_with`], with the whole answer to a refused upgrade: its status,
    /// headers (e.g. `Retry-After`) and body. A refusal at capacity before the request was
    /// read is a 503 without headers; no answer at all is status 0.
    pub fn upgrade(&mut self, target: &str, headers: &[(&str, &str)]) -> Result<Peer, HttpAnswer> {
        let nothing = |status| HttpAnswer {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        };
        let head = request_head(target, true, headers);
        let mut peer = self.open_raw(head.as_bytes()).ok_or_else(|| nothing(503))?;
        let mut answer = self.take_head(&mut peer).ok_or_else(|| nothing(0))?;
        if answer.status == 101 {
            peer.upgraded = true;
            Ok(peer)
        } else {
            answer.body = std::mem::take(&mut peer.pending);
            Err(answer)
        }
    }

    /// The server's answer to a peer from [`Harness::open_raw`], once its head is complete:
    /// status, headers and, if not 101, the body so far. After a 101 the peer is upgraded:
    /// [`Harness::received`] decodes the frames that follow.
    pub fn answer(&mut self, peer: &mut Peer) -> Option<HttpAnswer> {
        if peer.upgraded {
            return None;
        }
        let mut answer = self.take_head(peer)?;
        if answer.status == 101 {
            peer.upgraded = true;
        } else {
            answer.body = std::mem::take(&mut peer.pending);
        }
        Some(answer)
    }

    /// Opens an event stream: a plain `GET target` with `Accept: text/event-stream` and the
    /// extra `headers`, as a browser's `EventSource` sends it. `Ok` once the server answered
    /// `200` with `Content-Type: text/event-stream`: [`Harness::received_stream`] then reads
    /// the body. Any other answer is `Err` with its status, headers and body (503 for a
    /// refusal at capacity before the request was read, status 0 for no answer).
    pub fn events(&mut self, target: &str, headers: &[(&str, &str)]) -> Result<Peer, HttpAnswer> {
        let nothing = |status| HttpAnswer {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        };
        let mut all = vec![("Accept", "text/event-stream")];
        all.extend_from_slice(headers);
        let head = request_head(target, false, &all);
        let mut peer = self.open_raw(head.as_bytes()).ok_or_else(|| nothing(503))?;
        let mut answer = self.take_head(&mut peer).ok_or_else(|| nothing(0))?;
        let is_stream = answer.headers.iter().any(|(name, value)| {
            name.eq_ignore_ascii_case("content-type") && value == "text/event-stream"
        });
        if answer.status == 200 && is_stream {
            peer.upgraded = true;
            peer.stream = Some(EventParser::new());
            Ok(peer)
        } else {
            answer.body = std::mem::take(&mut peer.pending);
            Err(answer)
        }
    }

    /// Everything an event stream ([`Harness::events`]) carried since the last call —
    /// `retry:`, comments and events, in order — parsed as a browser does; the peer reads it
    /// (making room in its window). Empty for a peer that is not an event stream.
    pub fn received_stream(&mut self, peer: &mut Peer) -> Vec<Streamed> {
        self.pull(peer);
        let mut out = Vec::new();
        if let Some(parser) = peer.stream.as_mut() {
            parser.push(&peer.pending, &mut out);
            peer.pending.clear();
        }
        out
    }

    /// The events of [`Harness::received_stream`], without the comments and `retry:`.
    pub fn received_events(&mut self, peer: &mut Peer) -> Vec<Event> {
        self.received_stream(peer)
            .into_iter()
            .filter_map(|item| match item {
                Streamed::Event(event) => Some(event),
                _ => None,
            })
            .collect()
    }

    /// A plain HTTP `GET target`; the server's answer.
    pub fn get(&mut self, target: &str) -> Option<HttpAnswer> {
        self.get_with(target, &[])
    }

    /// As [`Harness::get`], with extra request headers (e.g. `Authorization`).
    pub fn get_with(&mut self, target: &str, headers: &[(&str, &str)]) -> Option<HttpAnswer> {
        let head = request_head(target, false, headers);
        let mut peer = self.open_raw(head.as_bytes())?;
        let mut answer = self.take_head(&mut peer)?;
        answer.body = std::mem::take(&mut peer.pending);
        Some(answer)
    }

    fn take_head(&mut self, peer: &mut Peer) -> Option<HttpAnswer> {
        self.pull(peer);
        let end = peer.pending.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
        let head: Vec<u8> = peer.pending.drain(..end).collect();
        let head = String::from_utf8_lossy(&head);
        let mut lines = head.trim_end().split("\r\n");
        let status = lines.next()?.get(9..12)?.parse().ok()?;
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.to_owned(), v.trim().to_owned()))
            .collect();
        Some(HttpAnswer {
            status,
            headers,
            body: Vec::new(),
        })
    }

    /// The peer sends raw bytes; the server reads them in the next turn, which runs now.
    pub fn send_bytes(&mut self, peer: &mut Peer, bytes: &[u8]) {
        peer.wire.borrow_mut().inbound.extend(bytes.iter().copied());
        self.server.mark_ready(peer.id, false);
        self.turn();
    }

    /// The peer queues raw bytes without a turn running (see [`Harness::turn`]).
    pub fn queue_bytes(&mut self, peer: &Peer, bytes: &[u8]) {
        peer.wire.borrow_mut().inbound.extend(bytes.iter().copied());
        self.server.mark_ready(peer.id, false);
    }

    /// The peer sends one message, masked as a client must.
    pub fn send(&mut self, peer: &Peer, msg: Message<'_>) {
        let opcode = match msg {
            Message::Text(_) => 0x1,
            Message::Binary(_) => 0x2,
        };
        let frame = client_frame(opcode, msg.as_bytes());
        self.queue_bytes(peer, &frame);
        self.turn();
    }

    /// The peer sends a ping.
    pub fn ping(&mut self, peer: &Peer, payload: &[u8]) {
        self.queue_bytes(peer, &client_frame(0x9, payload));
        self.turn();
    }

    /// The peer sends a close frame.
    pub fn close(&mut self, peer: &Peer, code: u16, reason: &str) {
        let mut payload = code.to_be_bytes().to_vec();
        payload.extend_from_slice(reason.as_bytes());
        self.queue_bytes(peer, &client_frame(0x8, &payload));
        self.turn();
    }

    /// The peer's TCP connection ends (EOF) without a close frame.
    pub fn disconnect(&mut self, peer: &Peer) {
        self.end_inbound(peer);
        self.turn();
    }

    /// As [`Harness::disconnect`], without a turn running (see [`Harness::turn`]): many
    /// peers can leave in the same turn.
    pub fn end_inbound(&mut self, peer: &Peer) {
        peer.wire.borrow_mut().inbound_closed = true;
        self.server.mark_ready(peer.id, true);
    }

    /// Limits how many unread bytes the peer's side takes before its "socket" is full: a
    /// slow reader. `usize::MAX` for none.
    pub fn set_window(&mut self, peer: &Peer, bytes: usize) {
        peer.wire.borrow_mut().window = bytes;
    }

    /// Every frame the server sent to the peer since the last call, in order; the peer reads
    /// them (making room in its window). Empty for an event stream (see
    /// [`Harness::received_stream`]).
    pub fn received(&mut self, peer: &mut Peer) -> Vec<Frame> {
        if peer.stream.is_some() {
            return Vec::new();
        }
        self.pull(peer);
        if !peer.upgraded {
            if self.take_head(peer).is_none() {
                return Vec::new();
            }
            peer.upgraded = true;
        }
        decode(&mut peer.pending)
    }

    fn pull(&mut self, peer: &mut Peer) {
        if Self::take_outbound(peer) || peer.owed {
            // The peer read: its window has room again, as a writable event would say.
            self.server.mark_ready(peer.id, false);
            self.turn();
            peer.owed = Self::take_outbound(peer);
        }
    }

    /// Moves what the server wrote to the peer's pending bytes; true if there was any. The
    /// pipe keeps its capacity, as a socket keeps its buffer: the server's writes into it
    /// do not allocate again after each read (the benches time those writes).
    fn take_outbound(peer: &mut Peer) -> bool {
        let mut wire = peer.wire.borrow_mut();
        peer.pending.extend_from_slice(&wire.outbound);
        let any = !wire.outbound.is_empty();
        wire.outbound.clear();
        any
    }

    /// Moves the clock forward by `d` and runs a turn: due deadlines fire.
    pub fn advance(&mut self, d: Duration) {
        self.now = self.now.after(d);
        self.turn();
    }

    /// Runs one turn of the loop at the current time. Returns what the loop would sleep.
    pub fn turn(&mut self) -> Option<Duration> {
        self.server.poll_now();
        self.server.turn_at(self.now)
    }

    /// The time since the harness started.
    pub fn now(&self) -> Duration {
        Duration::from_millis(self.now.0)
    }

    /// The handler.
    pub fn handler(&self) -> &H {
        self.server.handler()
    }

    /// The handler, mutably.
    pub fn handler_mut(&mut self) -> &mut H {
        self.server.handler_mut()
    }

    /// The peer's connection state as the handler keeps it, while it is open.
    pub fn state(&mut self, peer: &Peer) -> Option<&mut H::State> {
        self.server.state_of(peer.id)
    }

    /// The connection's readyState.
    pub fn conn_state(&self, peer: &Peer) -> State {
        self.server.conn_state(peer.id)
    }

    /// The bytes of user-space memory the server holds for the peer's connection beyond its
    /// record: the buffer lent while a head or message is incomplete, and the queue. Never
    /// more than [`Config::worst_case_connection_bytes`] less the idle cost; 0 once closed.
    pub fn held_bytes(&self, peer: &Peer) -> usize {
        self.server.held_bytes(peer.id)
    }

    /// The bytes queued for the peer that its socket has not taken, as
    /// [`crate::Ctx::buffered_amount`] says (a part of [`Harness::held_bytes`]).
    pub fn buffered_amount(&self, peer: &Peer) -> usize {
        self.server.buffered_amount(peer.id)
    }

    /// The bytes the server's pool of spare buffers holds: at most
    /// [`Config::max_spare_buffers`] × [`Config::spare_buffer_size`].
    pub fn spare_bytes(&self) -> usize {
        self.server.spare_bytes()
    }

    /// The server's counters.
    pub fn stats(&self) -> Stats {
        self.server.stats()
    }

    /// The server's handle (its commands run at the next turn).
    pub fn handle(&self) -> ServerHandle {
        self.server.handle()
    }

    /// The server, for what the harness does not wrap.
    pub fn server_mut(&mut self) -> &mut Server<H> {
        &mut self.server
    }
}

/// An upgrade (or plain) request head for `target`.
fn request_head(target: &str, upgrade: bool, headers: &[(&str, &str)]) -> String {
    let mut head = format!("GET {target} HTTP/1.1\r\nHost: harness\r\n");
    if upgrade {
        head.push_str(
            "Upgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n",
        );
    }
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    head
}

/// One final client frame, masked with the harness's key.
pub fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    masked_frame(true, opcode, payload, MASK)
}

/// A client frame as RFC 6455 §5.2 lays it out: FIN, the 4-bit opcode, the shortest length
/// encoding, the masking key, the masked payload.
pub fn masked_frame(fin: bool, opcode: u8, payload: &[u8], key: [u8; 4]) -> Vec<u8> {
    let mut out = vec![(u8::from(fin) << 7) | (opcode & 0x0f)];
    match payload.len() {
        n @ 0..=125 => out.push(0x80 | n as u8),
        n @ 126..=0xffff => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&key);
    let start = out.len();
    out.extend_from_slice(payload);
    if let Some(body) = out.get_mut(start..) {
        unmask(body, key, 0);
    }
    out
}

/// Splits every whole server frame off the front of `buf`.
fn decode(buf: &mut Vec<u8>) -> Vec<Frame> {
    let mut frames = Vec::new();
    let mut at = 0;
    while let Some(rest) = buf.get(at..) {
        let Ok(Status::Complete((h, n))) = FrameHeader::parse(rest, Role::Client) else {
            break;
        };
        let len = usize::try_from(h.payload_len).unwrap_or(usize::MAX);
        let Some(payload) = rest.get(n..n.saturating_add(len)) else {
            break;
        };
        frames.push(match h.opcode {
            OpCode::Text => Frame::Text(String::from_utf8_lossy(payload).into_owned()),
            OpCode::Binary => Frame::Binary(payload.to_vec()),
            OpCode::Ping => Frame::Ping(payload.to_vec()),
            OpCode::Pong => Frame::Pong(payload.to_vec()),
            OpCode::Close => match close::parse_payload(payload) {
                Ok(Some((code, reason))) => Frame::Close(Some(code.as_u16()), reason.to_owned()),
                _ => Frame::Close(None, String::new()),
            },
            OpCode::Continuation => Frame::Binary(payload.to_vec()),
        });
        at += n + len;
    }
    buf.drain(..at);
    frames
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_in_pieces(stream: &[u8], cut: usize) -> Vec<Streamed> {
        let mut parser = EventParser::new();
        let mut out = Vec::new();
        for piece in stream.chunks(cut.max(1)) {
            parser.push(piece, &mut out);
        }
        out
    }

    fn event(id: Option<&str>, data: &str) -> Streamed {
        Streamed::Event(Event {
            id: id.map(str::to_owned),
            data: data.to_owned(),
        })
    }

    #[test]
    fn the_parser_reads_the_standards_examples_however_they_are_cut() {
        // The WHATWG examples: comments, multi-line data, an id, a leading space kept.
        let stream = b"\xEF\xBB\xBFretry: 1500\r\n: test stream\n\ndata: first event\nid: 1\n\n\
                       data:second event\nid\n\ndata:  third event\r\rdata: YHOO\rdata: +2\r\n\
                       data: 10\n\nid: 7\n\nretry: x\nevent: add\ndata\ndata\n\ndata:";
        let expected = [
            Streamed::Retry(1500),
            Streamed::Comment(" test stream".into()),
            event(Some("1"), "first event"),
            event(Some(""), "second event"),
            event(None, " third event"),
            event(None, "YHOO\n+2\n10"),
            event(None, "\n"),
        ];
        for cut in 1..=stream.len() {
            assert_eq!(parse_in_pieces(stream, cut), expected, "pieces of {cut}");
        }
        let mut parser = EventParser::new();
        parser.push(stream, &mut Vec::new());
        assert_eq!(
            parser.last_event_id(),
            "7",
            "an id without data still counts"
        );
    }

    #[test]
    fn an_id_with_nul_is_ignored() {
        let out = parse_in_pieces(b"id: a\0b\ndata: x\n\n", 100);
        assert_eq!(out, [event(None, "x")]);
    }
}

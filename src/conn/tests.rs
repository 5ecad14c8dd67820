//! Scripted conversations with one [`Conn`], in the manner of smoltcp's `socket/tcp.rs` tests:
//! explicit time (`time 30_000`), no sockets, no sleeps.
//!
//! The test plays the loop: [`Loop`] owns what `server/` lends a connection (config, pool,
//! output buffer) and answers events as the loop does. A tiny client codec writes masked
//! frames and an upgrade request, and parses what the server wrote: the HTTP response head,
//! then unmasked frames, through the crate's own [`FrameHeader::parse`] with [`Role::Client`].
//!
//! Bytes "written" are read back in wire order, as the loop's flush sends them: the write
//! queue first, then the output buffer.

use std::io::IoSlice;
use std::time::Duration;

use super::{
    AcceptAll, Answered, Conn, Data, DeadlineAction, Decide, Decision, Event, Expired, Finish,
    HttpRequest, Kind, Millis, State, WriteQueue,
};
use crate::config::Config;
use crate::pool::Pool;
use crate::proto::close::CloseCode;
use crate::proto::frame::{FrameHeader, OpCode};
use crate::proto::message::DataKind;
use crate::proto::{HandshakeError, ProtocolError, Role, Status};

// ---------------------------------------------------------------------------------------------
// The client side of the wire.

/// RFC 6455 §1.3's sample key and its accept value.
const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";
/// RFC 6455 §5.7's sample masking key.
const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// A valid upgrade request of 154 bytes.
fn upgrade_request() -> Vec<u8> {
    upgrade_request_with("")
}

/// A valid upgrade request with `extra` header lines (each ending in CRLF) before the end.
fn upgrade_request_with(extra: &str) -> Vec<u8> {
    format!(
        "GET /chat HTTP/1.1\r\n\
         Host: example.com\r\n\
         Upgrade: websocket\r\n\
         Connection: Upgrade\r\n\
         Sec-WebSocket-Key: {KEY}\r\n\
         Sec-WebSocket-Version: 13\r\n\
         {extra}\r\n"
    )
    .into_bytes()
}

/// A valid upgrade request of exactly `len` bytes (at least 163), padded with one header.
fn upgrade_request_of_len(len: usize) -> Vec<u8> {
    // "X-Pad: " + value + CRLF adds 9 bytes plus the value.
    let pad = len - upgrade_request().len() - 9;
    let req = upgrade_request_with(&format!("X-Pad: {}\r\n", "a".repeat(pad)));
    assert_eq!(req.len(), len);
    req
}

/// How a client frame encodes its payload length.
#[derive(Clone, Copy, Debug)]
enum Len {
    /// The shortest form, as RFC 6455 §5.2 asks.
    Minimal,
    /// 126 and a 64-bit length, even for a short payload (legal to receive).
    Ext64,
}

/// A frame as a client puts it on the wire. Any bits may be set, reserved ones included, so
/// bad frames are as easy to write as good ones. Complete with `..FRAME`.
#[derive(Clone, Copy, Debug)]
struct ClientFrame<'p> {
    fin: bool,
    /// RSV1..RSV3 as a 3-bit number.
    rsv: u8,
    /// Any 4-bit value.
    opcode: u8,
    mask: Option<[u8; 4]>,
    len: Len,
    payload: &'p [u8],
}

/// The template: a final, masked, empty text frame.
const FRAME: ClientFrame<'static> = ClientFrame {
    fin: true,
    rsv: 0,
    opcode: client::TEXT,
    mask: Some(MASK),
    len: Len::Minimal,
    payload: b"",
};

impl ClientFrame<'_> {
    /// The frame's bytes, written without the crate's encoder so the two check each other.
    fn encode(&self) -> Vec<u8> {
        let mut out = vec![(u8::from(self.fin) << 7) | (self.rsv << 4) | (self.opcode & 0x0f)];
        let mask_bit = if self.mask.is_some() { 0x80 } else { 0 };
        let n = self.payload.len();
        match (self.len, n) {
            (Len::Minimal, 0..=125) => out.push(mask_bit | n as u8),
            (Len::Minimal, 126..=0xffff) => {
                out.push(mask_bit | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            _ => {
                out.push(mask_bit | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        match self.mask {
            Some(key) => {
                out.extend_from_slice(&key);
                out.extend(
                    self.payload
                        .iter()
                        .zip(key.iter().cycle())
                        .map(|(b, k)| b ^ k),
                );
            }
            None => out.extend_from_slice(self.payload),
        }
        out
    }

    /// The header's length in bytes.
    fn header_len(&self) -> usize {
        self.encode().len() - self.payload.len()
    }
}

/// What a client sends: masked frames, as bytes.
mod client {
    use super::{ClientFrame, FRAME};

    pub const CONT: u8 = 0x0;
    pub const TEXT: u8 = 0x1;
    pub const BINARY: u8 = 0x2;
    pub const CLOSE: u8 = 0x8;
    pub const PING: u8 = 0x9;
    pub const PONG: u8 = 0xa;

    pub fn frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        ClientFrame {
            fin,
            opcode,
            payload,
            ..FRAME
        }
        .encode()
    }

    pub fn text(s: &str) -> Vec<u8> {
        frame(true, TEXT, s.as_bytes())
    }

    /// A text frame whose payload need not be UTF-8.
    pub fn text_bytes(b: &[u8]) -> Vec<u8> {
        frame(true, TEXT, b)
    }

    pub fn binary(b: &[u8]) -> Vec<u8> {
        frame(true, BINARY, b)
    }

    pub fn ping(b: &[u8]) -> Vec<u8> {
        frame(true, PING, b)
    }

    pub fn pong(b: &[u8]) -> Vec<u8> {
        frame(true, PONG, b)
    }

    pub fn close(code: u16, reason: &str) -> Vec<u8> {
        let mut payload = code.to_be_bytes().to_vec();
        payload.extend_from_slice(reason.as_bytes());
        frame(true, CLOSE, &payload)
    }

    pub fn close_empty() -> Vec<u8> {
        frame(true, CLOSE, b"")
    }
}

/// A frame the server wrote, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
struct ServerFrame {
    fin: bool,
    opcode: OpCode,
    payload: Vec<u8>,
}

/// What a server sends, as expected parsed frames.
mod srv {
    use super::{OpCode, ServerFrame};

    pub fn frame(opcode: OpCode, payload: &[u8]) -> ServerFrame {
        ServerFrame {
            fin: true,
            opcode,
            payload: payload.to_vec(),
        }
    }

    pub fn text(s: &str) -> ServerFrame {
        frame(OpCode::Text, s.as_bytes())
    }

    pub fn binary(b: &[u8]) -> ServerFrame {
        frame(OpCode::Binary, b)
    }

    pub fn ping(b: &[u8]) -> ServerFrame {
        frame(OpCode::Ping, b)
    }

    pub fn pong(b: &[u8]) -> ServerFrame {
        frame(OpCode::Pong, b)
    }

    pub fn close(code: u16, reason: &str) -> ServerFrame {
        let mut payload = code.to_be_bytes().to_vec();
        payload.extend_from_slice(reason.as_bytes());
        frame(OpCode::Close, &payload)
    }

    pub fn close_empty() -> ServerFrame {
        frame(OpCode::Close, b"")
    }
}

/// Encodes a whole server frame, as `Ctx` would, with the crate's encoder.
fn encode_server_frame(out: &mut Vec<u8>, opcode: OpCode, payload: &[u8]) {
    let header = FrameHeader::new(true, opcode, payload.len() as u64);
    let mut head = [0u8; FrameHeader::MAX_LEN];
    let n = header.encode(&mut head);
    out.extend_from_slice(&head[..n]);
    out.extend_from_slice(payload);
}

fn server_frame(opcode: OpCode, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    encode_server_frame(&mut out, opcode, payload);
    out
}

/// Splits every complete server frame off the front of `buf`; a partial one stays.
fn split_frames(buf: &mut Vec<u8>) -> Vec<ServerFrame> {
    let mut frames = Vec::new();
    let mut at = 0;
    loop {
        let rest = &buf[at..];
        match FrameHeader::parse(rest, Role::Client).expect("the server wrote a bad frame") {
            Status::Partial => break,
            Status::Complete((h, n)) => {
                let len = usize::try_from(h.payload_len).unwrap();
                let Some(payload) = rest.get(n..n + len) else {
                    break;
                };
                frames.push(ServerFrame {
                    fin: h.fin,
                    opcode: h.opcode,
                    payload: payload.to_vec(),
                });
                at += n + len;
            }
        }
    }
    buf.drain(..at);
    frames
}

/// Parses bytes that must be whole server frames and nothing else.
fn frames(bytes: &[u8]) -> Vec<ServerFrame> {
    let mut buf = bytes.to_vec();
    let frames = split_frames(&mut buf);
    assert!(
        buf.is_empty(),
        "{} bytes of a partial frame after {frames:?}",
        buf.len()
    );
    frames
}

/// An HTTP response head the server wrote.
#[derive(Debug)]
struct Response {
    status: u16,
    headers: Vec<(String, String)>,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        let found = self
            .headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name));
        found.map(|(_, v)| v.as_str())
    }
}

/// Splits a complete response head off the front of `buf`, if it is all there.
fn take_response_head(buf: &mut Vec<u8>) -> Option<Response> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = String::from_utf8(buf.drain(..end).collect()).expect("response head is ASCII");
    let mut lines = head.trim_end().split("\r\n");
    let status_line = lines.next().unwrap();
    let status = status_line.strip_prefix("HTTP/1.1 ").expect(status_line)[..3]
        .parse()
        .unwrap();
    let headers = lines
        .map(|l| {
            let (n, v) = l.split_once(':').expect(l);
            (n.to_owned(), v.trim().to_owned())
        })
        .collect();
    Some(Response { status, headers })
}

/// Checks a `101 Switching Protocols` for [`KEY`] at the front of `wire`; returns the frames
/// after it.
fn parse_101(wire: &[u8]) -> Vec<ServerFrame> {
    let mut buf = wire.to_vec();
    let res = take_response_head(&mut buf).expect("a complete response head");
    assert_eq!(res.status, 101, "{res:?}");
    assert_eq!(res.header("Upgrade"), Some("websocket"));
    assert_eq!(res.header("Connection"), Some("Upgrade"));
    assert_eq!(res.header("Sec-WebSocket-Accept"), Some(ACCEPT));
    frames(&buf)
}

// ---------------------------------------------------------------------------------------------
// The loop's side: what it lends the connection and how it answers events.

const PEER: &str = "127.0.0.1:40000";
const LOCAL: &str = "127.0.0.1:9001";

/// Where an event's bytes came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Src {
    /// `Data::Borrowed`: zero copy from the bytes just read.
    Borrowed,
    /// `Data::Pooled`: assembled across reads or fragments in a pool buffer.
    Pooled,
    /// Either, for comparing runs that split the input differently.
    Any,
}

/// An [`Event`] with its bytes copied out, to compare and keep.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Ev {
    Head(Src, Vec<u8>),
    BadHead(HandshakeError),
    Message(DataKind, Src, Vec<u8>),
    Closed(u16, String),
    Failed(ProtocolError),
    Flush,
}

impl Ev {
    fn any_src(self) -> Ev {
        match self {
            Ev::Head(_, b) => Ev::Head(Src::Any, b),
            Ev::Message(k, _, b) => Ev::Message(k, Src::Any, b),
            ev => ev,
        }
    }
}

fn any_src(evs: Vec<Ev>) -> Vec<Ev> {
    evs.into_iter().map(Ev::any_src).collect()
}

fn head(src: Src, bytes: &[u8]) -> Ev {
    Ev::Head(src, bytes.to_vec())
}

fn text(src: Src, s: &str) -> Ev {
    Ev::Message(DataKind::Text, src, s.as_bytes().to_vec())
}

fn binary(src: Src, b: &[u8]) -> Ev {
    Ev::Message(DataKind::Binary, src, b.to_vec())
}

fn closed(code: u16, reason: &str) -> Ev {
    Ev::Closed(code, reason.to_owned())
}

// ---------------------------------------------------------------------------------------------
// The script: smoltcp-style macros (defined before their first use).

/// `feed!(lp, time T, bytes)`: one read at `T`; the events. With `[ev, …]`: asserts them.
macro_rules! feed {
    ($lp:expr, time $t:expr, $bytes:expr) => {
        $lp.feed(Millis($t), $bytes)
    };
    ($lp:expr, time $t:expr, $bytes:expr, [$($ev:expr),* $(,)?]) => {
        assert_eq!($lp.feed(Millis($t), $bytes), vec![$($ev),*], "events at {} ms", $t)
    };
}

/// `expect_out!(lp, [frame, …])`: exactly these frames were written (queue, then output).
macro_rules! expect_out {
    ($lp:expr, [$($f:expr),* $(,)?]) => {
        assert_eq!(frames(&$lp.take_wire()), Vec::<ServerFrame>::from([$($f),*]))
    };
}

/// `expect_101!(lp, [frame, …])`: a valid 101 then exactly these frames were written.
macro_rules! expect_101 {
    ($lp:expr, [$($f:expr),* $(,)?]) => {
        assert_eq!(parse_101(&$lp.take_wire()), Vec::<ServerFrame>::from([$($f),*]))
    };
}

/// `expect_http!(lp, status)`: one whole HTTP response with `status` and nothing else.
macro_rules! expect_http {
    ($lp:expr, $status:expr) => {{
        let mut wire = $lp.take_wire();
        let res = take_response_head(&mut wire).expect("a response head");
        assert_eq!(res.status, $status, "{res:?}");
        assert_eq!(res.header("Connection"), Some("close"));
        let len: usize = res.header("Content-Length").unwrap().parse().unwrap();
        assert_eq!(wire.len(), len, "the body and nothing after it");
    }};
}

/// `expect_nothing!(lp, time T)`: no deadline acts at `T` and nothing is written.
macro_rules! expect_nothing {
    ($lp:expr, time $t:expr) => {{
        assert_eq!(
            $lp.deadline(Millis($t)),
            DeadlineAction::Nothing,
            "at {} ms",
            $t
        );
        expect_out!($lp, []);
    }};
}

/// `expect_ping!(lp, time T)`: the heartbeat writes an empty ping at `T`.
macro_rules! expect_ping {
    ($lp:expr, time $t:expr) => {{
        assert_eq!(
            $lp.deadline(Millis($t)),
            DeadlineAction::Ping,
            "at {} ms",
            $t
        );
        expect_out!($lp, [srv::ping(b"")]);
    }};
}

/// `expect_dropped!(lp, time T, why)`: the TCP connection is dropped at `T`, writing nothing.
macro_rules! expect_dropped {
    ($lp:expr, time $t:expr, $why:expr) => {{
        assert_eq!(
            $lp.deadline(Millis($t)),
            DeadlineAction::Drop($why),
            "at {} ms",
            $t
        );
        expect_out!($lp, []);
    }};
}

/// The test playing the mio loop for one connection.
struct Loop {
    conn: Conn,
    cfg: Config,
    pool: Pool,
    out: Vec<u8>,
    /// Answer every message with the same message, as an echo handler would.
    echo: bool,
    /// Make every plain `GET` an event stream ([`Streams`]) instead of [`AcceptAll`]'s 404.
    streams: bool,
}

impl Loop {
    /// A connection accepted at time 0.
    fn new(cfg: Config) -> Self {
        let pool = Pool::new(4, cfg.max_message_size.max(cfg.max_request_head));
        Loop {
            conn: Conn::new(Millis(0), &cfg, None),
            cfg,
            pool,
            out: Vec::new(),
            echo: false,
            streams: false,
        }
    }

    /// A connection upgraded at time 0, its 101 already read.
    fn open(cfg: Config) -> Self {
        let mut lp = Loop::new(cfg);
        feed!(lp, time 0, upgrade_request(), [head(Src::Borrowed, &upgrade_request())]);
        expect_101!(lp, []);
        assert_eq!(lp.conn.state(), State::Open);
        lp
    }

    /// One read of `bytes` at `now`: liveness, then every event, answered as the loop does.
    fn feed(&mut self, now: Millis, bytes: impl AsRef<[u8]>) -> Vec<Ev> {
        let mut buf = bytes.as_ref().to_vec();
        let mut input: &mut [u8] = &mut buf;
        self.conn.on_bytes(now);
        let mut evs = Vec::new();
        while let Some(ev) =
            self.conn
                .read_event(&mut input, &mut self.out, &mut self.pool, &self.cfg, now)
        {
            evs.push(self.answer(ev, now));
        }
        assert!(
            input.is_empty(),
            "{} bytes neither consumed nor kept",
            input.len()
        );
        evs
    }

    fn answer(&mut self, ev: Event<'_>, now: Millis) -> Ev {
        match ev {
            Event::Head(data) => {
                let src = match data {
                    Data::Borrowed(_) => Src::Borrowed,
                    Data::Pooled(_) => Src::Pooled,
                };
                let bytes = data.as_slice().to_vec();
                // The loop's own path: the connection parses, validates and answers.
                let (peer, local) = (PEER.parse().unwrap(), LOCAL.parse().unwrap());
                let (out, pool, cfg) = (&mut self.out, &mut self.pool, &self.cfg);
                let answered = if self.streams {
                    let decide = &mut Streams;
                    self.conn
                        .answer_head(data, peer, local, decide, out, pool, cfg, now)
                } else {
                    let decide = &mut AcceptAll;
                    self.conn
                        .answer_head(data, peer, local, decide, out, pool, cfg, now)
                };
                assert!(
                    matches!(answered, Answered::Open(..) | Answered::Refused(_)),
                    "{answered:?}"
                );
                Ev::Head(src, bytes)
            }
            Event::BadHead(e) => {
                self.conn
                    .refuse(&mut self.out, e.status(), &mut self.pool, &self.cfg, now);
                Ev::BadHead(e)
            }
            Event::Flush => Ev::Flush,
            // Borrowed text, validated once by the connection: the same as a borrowed message.
            Event::Text(text) => self.answer(
                Event::Message(DataKind::Text, Data::Borrowed(text.as_bytes())),
                now,
            ),
            Event::Message(kind, data) => {
                let (src, bytes) = self.keep(data);
                if self.echo {
                    // As `Core::send` does for the connection being served.
                    self.conn
                        .send(&mut self.out, kind, &bytes, usize::MAX, now)
                        .expect("open");
                }
                Ev::Message(kind, src, bytes)
            }
            Event::Closed(frame) => Ev::Closed(frame.code().as_u16(), frame.reason().to_owned()),
            Event::Failed(e) => Ev::Failed(e),
        }
    }

    /// Copies the bytes out and gives a pooled buffer back, as the loop does after the
    /// handler ran.
    fn keep(&mut self, data: Data<'_>) -> (Src, Vec<u8>) {
        let src = match data {
            Data::Borrowed(_) => Src::Borrowed,
            Data::Pooled(_) => Src::Pooled,
        };
        let bytes = data.as_slice().to_vec();
        data.recycle(&mut self.pool);
        (src, bytes)
    }

    fn deadline(&mut self, now: Millis) -> DeadlineAction {
        self.conn.on_deadline(&mut self.out, &self.cfg, now)
    }

    fn close(&mut self, code: u16, reason: &str, now: Millis) -> bool {
        self.conn.close(
            &mut self.out,
            CloseCode::new(code).unwrap_or(CloseCode::ABNORMAL),
            reason,
            &self.cfg,
            now,
        )
    }

    /// One write to a socket that takes at most `max` bytes, as the loop's flush does: new
    /// output goes straight out when nothing is queued, else behind the queue; what the
    /// socket does not take is queued.
    fn write(&mut self, max: usize) -> Vec<u8> {
        if !self.out.is_empty() {
            let out = std::mem::take(&mut self.out);
            if self.conn.outbox().is_empty() {
                let n = out.len().min(max);
                self.conn.outbox_mut().unwritten(&[&out[n..]], n > 0);
                return out[..n].to_vec();
            }
            self.conn.outbox_mut().unwritten(&[&out], false);
        }
        let mut bytes = queued(self.conn.outbox_mut().queue_mut());
        bytes.truncate(max);
        self.conn.outbox_mut().queue_mut().advance(bytes.len());
        bytes
    }

    /// Everything written so far, in wire order, as if the socket took it all.
    fn take_wire(&mut self) -> Vec<u8> {
        let mut wire = Vec::new();
        loop {
            let bytes = self.write(usize::MAX);
            if bytes.is_empty() {
                return wire;
            }
            wire.extend_from_slice(&bytes);
        }
    }
}

/// The queued bytes, in order, without taking them.
fn queued(queue: &WriteQueue) -> Vec<u8> {
    let mut slices = [IoSlice::new(&[]); 64];
    let n = queue.io_slices(&mut slices);
    assert!(n < slices.len(), "more chunks than the test reads at once");
    slices[..n].iter().flat_map(|s| s.iter().copied()).collect()
}

/// What one run of a script ended with.
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    events: Vec<Ev>,
    wire: Vec<u8>,
    state: State,
    finish: Finish,
    buffered: usize,
}

fn run(cfg: &Config, pieces: &[&[u8]]) -> Outcome {
    let mut lp = Loop::new(cfg.clone());
    let mut events = Vec::new();
    for piece in pieces {
        events.extend(feed!(lp, time 0, piece));
    }
    Outcome {
        events,
        wire: lp.take_wire(),
        state: lp.conn.state(),
        finish: lp.conn.finish(),
        buffered: lp.conn.buffered_bytes(),
    }
}

/// Feeds `bytes` to a fresh connection whole, cut in two at every index, and one byte at a
/// time: every way gives the same events (where their bytes lived aside), the same output and
/// the same end state. Returns the whole-input run.
fn assert_same_at_every_split(cfg: &Config, bytes: &[u8]) -> Outcome {
    let whole = run(cfg, &[bytes]);
    let expected = Outcome {
        events: any_src(whole.events.clone()),
        ..whole
    };
    let erased = |mut o: Outcome| {
        o.events = any_src(o.events);
        o
    };
    for cut in 0..=bytes.len() {
        let (a, b) = bytes.split_at(cut);
        assert_eq!(erased(run(cfg, &[a, b])), expected, "cut at {cut}");
    }
    let bytewise: Vec<&[u8]> = bytes.chunks(1).collect();
    assert_eq!(erased(run(cfg, &bytewise)), expected, "one byte at a time");
    run(cfg, &[bytes])
}

// ---------------------------------------------------------------------------------------------
// Handshake.

#[test]
fn head_in_one_read_is_borrowed_and_answered_with_101() {
    let mut lp = Loop::new(Config::default());
    assert_eq!(lp.conn.state(), State::Connecting);
    feed!(lp, time 3, upgrade_request(), [head(Src::Borrowed, &upgrade_request())]);
    expect_101!(lp, []);
    assert_eq!(lp.conn.state(), State::Open);
    assert_eq!(lp.conn.buffered_bytes(), 0);
    assert_eq!(lp.pool.spare_bytes(), 0, "no pool buffer was needed");
}

#[test]
fn head_in_one_byte_pieces_is_pooled_and_the_buffer_returned() {
    let mut lp = Loop::new(Config::default());
    let req = upgrade_request();
    let (last, first) = req.split_last().unwrap();
    for (i, byte) in first.iter().enumerate() {
        feed!(lp, time i as u64, [*byte], []);
        assert!(
            lp.conn.buffered_bytes() > 0,
            "byte {i} is kept in a pool buffer"
        );
    }
    feed!(lp, time 200, [*last], [head(Src::Pooled, &req)]);
    expect_101!(lp, []);
    assert_eq!(lp.conn.buffered_bytes(), 0);
    assert!(
        lp.pool.spare_bytes() > 0,
        "the head's buffer went back to the pool"
    );
}

#[test]
fn first_frame_in_the_head_read_is_parsed_after_accept() {
    let cfg = Config::default();
    let mut conn = Conn::new(Millis(0), &cfg, None);
    let mut pool = Pool::new(4, 1 << 16);
    let mut out = Vec::new();
    let mut bytes = [upgrade_request(), client::text("hi")].concat();
    let mut input: &mut [u8] = &mut bytes;

    let ev = conn.read_event(&mut input, &mut out, &mut pool, &cfg, Millis(0));
    let Some(Event::Head(Data::Borrowed(h))) = &ev else {
        panic!("not a borrowed head")
    };
    assert_eq!(*h, &upgrade_request()[..]);
    assert_eq!(
        input.len(),
        client::text("hi").len(),
        "the frame is left for after accept"
    );
    assert_eq!(conn.state(), State::Connecting);

    let Some(Event::Head(head)) = ev else {
        unreachable!()
    };
    let answered = conn.answer_head(
        head,
        PEER.parse().unwrap(),
        LOCAL.parse().unwrap(),
        &mut AcceptAll,
        &mut out,
        &mut pool,
        &cfg,
        Millis(0),
    );
    assert_eq!(answered, Answered::Open((), None));
    let ev = conn.read_event(&mut input, &mut out, &mut pool, &cfg, Millis(0));
    assert!(matches!(ev, Some(Event::Text("hi"))), "{ev:?}");
    assert!(conn
        .read_event(&mut input, &mut out, &mut pool, &cfg, Millis(0))
        .is_none());
    assert_eq!(parse_101(&out), []);
}

#[test]
fn first_frame_after_a_pooled_head_is_not_lost() {
    let mut lp = Loop::new(Config::default());
    let req = upgrade_request();
    feed!(lp, time 0, &req[..100], []);
    let rest = [&req[100..], &client::text("hi")[..]].concat();
    feed!(lp, time 1, rest, [head(Src::Pooled, &req), text(Src::Borrowed, "hi")]);
    expect_101!(lp, []);
}

#[test]
fn head_over_max_request_head_is_refused_with_431() {
    let cfg = Config::default().max_request_head(256);
    let long = upgrade_request_of_len(257);

    let mut lp = Loop::new(cfg.clone());
    feed!(lp, time 0, &long, [Ev::BadHead(HandshakeError::HeadTooLarge)]);
    expect_http!(lp, 431);
    assert_eq!(lp.conn.state(), State::Closing);
    assert_eq!(lp.conn.finish(), Finish::ShutdownWrite);

    let mut lp = Loop::new(cfg.clone());
    let mut events = Vec::new();
    for piece in long.chunks(10) {
        events.extend(feed!(lp, time 0, piece));
    }
    assert_eq!(events, [Ev::BadHead(HandshakeError::HeadTooLarge)]);
    expect_http!(lp, 431);
    assert_eq!(lp.conn.buffered_bytes(), 0);
    assert!(
        lp.pool.spare_bytes() > 0,
        "the partial head went back to the pool"
    );
}

#[test]
fn head_of_exactly_max_request_head_is_accepted_whole_and_bytewise() {
    let cfg = Config::default().max_request_head(256);
    let req = upgrade_request_of_len(256);
    let whole = assert_same_at_every_split(&cfg, &req);
    assert_eq!(whole.events, [head(Src::Borrowed, &req)]);
    assert_eq!(parse_101(&whole.wire), []);
}

#[test]
fn head_with_a_bare_lf_is_refused_with_400_however_it_is_split() {
    let req = String::from_utf8(upgrade_request())
        .unwrap()
        .replacen("\r\nHost", "\nHost", 1);
    let req = req.as_bytes();
    for cut in 0..=req.len() {
        let mut lp = Loop::new(Config::default());
        let (a, b) = req.split_at(cut);
        let mut events = feed!(lp, time 0, a);
        events.extend(feed!(lp, time 0, b));
        assert_eq!(events.len(), 1, "cut at {cut}: {events:?}");
        expect_http!(lp, 400);
        assert_eq!(lp.conn.state(), State::Closing, "cut at {cut}");
        assert_eq!(lp.conn.buffered_bytes(), 0, "cut at {cut}");
    }
}

/// `req` cut in pieces of each size is one `Malformed` head: 400, nothing left buffered.
fn assert_bare_lf_is_400(cfg: &Config, req: &[u8], pieces: &[usize]) {
    for &piece in pieces {
        let mut lp = Loop::new(cfg.clone());
        let mut events = Vec::new();
        for bytes in req.chunks(piece) {
            events.extend(feed!(lp, time 0, bytes));
        }
        assert_eq!(
            events,
            [Ev::BadHead(HandshakeError::Malformed)],
            "pieces of {piece}"
        );
        expect_http!(lp, 400);
        assert_eq!(lp.conn.buffered_bytes(), 0, "pieces of {piece}");
    }
}

/// Found by the `conn` fuzz target: a bare LF within the first `max_request_head` bytes of a
/// head that also runs past the limit got 431 when it came in one read but 400 when it came
/// in pieces. The first fault in byte order decides, however the bytes are cut: 400.
#[test]
fn a_bare_lf_before_the_head_limit_is_400_in_one_read_and_in_pieces() {
    let cfg = Config::default().max_request_head(64);
    let mut req = b"GET /chat?room HTTP/1.1\nHost: x\r\n".to_vec();
    req.resize(100, b'a');
    assert_bare_lf_is_400(&cfg, &req, &[100, 64, 10, 1]);
    req.extend_from_slice(b"\r\n\r\n");
    assert_bare_lf_is_400(&cfg, &req, &[104, 1]);
}

/// Found by the conn fuzz target: with `max_headers` 1, a complete head with a bare LF in a
/// later header was 431 (too many headers, from the parser) in one read, 400 (the LF, seen
/// as the piece arrived) in pieces. A bare LF anywhere in the head is 400, before the parser.
#[test]
fn a_bare_lf_in_a_complete_head_is_400_before_any_parse_error_at_any_split() {
    let cfg = Config::default().max_headers(1);
    let req = b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nX-A: b\nX-C: d\r\n\r\n";
    assert_bare_lf_is_400(&cfg, req, &[req.len(), 40, 7, 1]);
}

#[test]
fn handshake_times_out_at_exactly_handshake_timeout() {
    let mut lp = Loop::new(Config::default());
    assert_eq!(lp.conn.next_deadline(&lp.cfg), Some(Millis(10_000)));
    feed!(lp, time 5_000, &upgrade_request()[..20], []);
    assert_eq!(
        lp.conn.next_deadline(&lp.cfg),
        Some(Millis(10_000)),
        "bytes do not extend it"
    );
    expect_nothing!(lp, time 9_999);
    expect_dropped!(lp, time 10_000, Expired::Handshake);
}

#[test]
fn accept_clears_the_handshake_deadline() {
    let mut lp = Loop::new(Config::default().ping_interval(None));
    feed!(lp, time 9_000, upgrade_request(), [head(Src::Borrowed, &upgrade_request())]);
    expect_101!(lp, []);
    assert_eq!(lp.conn.next_deadline(&lp.cfg), None);
    expect_nothing!(lp, time 10_000);
}

// ---------------------------------------------------------------------------------------------
// Frames.

/// Upgrade, then every kind of frame, then close and a frame after it.
fn conversation() -> Vec<u8> {
    [
        upgrade_request(),
        client::text("hello"),
        client::binary(&[0xab; 300]),
        ClientFrame {
            opcode: client::BINARY,
            len: Len::Ext64,
            payload: b"x",
            ..FRAME
        }
        .encode(),
        client::frame(false, client::TEXT, "κα".as_bytes().split_at(3).0),
        client::ping(b"mid"),
        client::frame(true, client::CONT, "κα".as_bytes().split_at(3).1),
        client::pong(b"unsolicited"),
        client::text(""),
        client::close(1000, "done"),
        client::text("after the close"),
    ]
    .concat()
}

#[test]
fn conversation_is_the_same_at_every_split() {
    let whole = assert_same_at_every_split(&Config::default(), &conversation());
    assert_eq!(
        whole.events,
        [
            head(Src::Borrowed, &upgrade_request()),
            text(Src::Borrowed, "hello"),
            binary(Src::Borrowed, &[0xab; 300]),
            binary(Src::Borrowed, b"x"),
            text(Src::Pooled, "κα"),
            text(Src::Borrowed, ""),
            closed(1000, "done"),
        ]
    );
    assert_eq!(
        parse_101(&whole.wire),
        [srv::pong(b"mid"), srv::close(1000, "")]
    );
    assert_eq!(whole.state, State::Closing);
    assert_eq!(whole.finish, Finish::Close);
    assert_eq!(whole.buffered, 0);
}

#[test]
fn failing_conversation_is_the_same_at_every_split() {
    let bytes = [
        upgrade_request(),
        client::text("ok"),
        client::text_bytes(b"bad \xff here"),
        client::text("never"),
    ]
    .concat();
    let whole = assert_same_at_every_split(&Config::default(), &bytes);
    assert_eq!(
        whole.events,
        [
            head(Src::Borrowed, &upgrade_request()),
            text(Src::Borrowed, "ok"),
            Ev::Failed(ProtocolError::InvalidUtf8),
        ]
    );
    assert_eq!(parse_101(&whole.wire), [srv::close(1007, "invalid UTF-8")]);
    assert_eq!(whole.finish, Finish::ShutdownWrite);
}

#[test]
fn every_protocol_error_fails_with_its_close_code_at_every_split() {
    let long_ping = [0u8; 126];
    let mut bad_len = vec![0x82, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 1];
    bad_len.extend_from_slice(&MASK);
    let cases: Vec<(Vec<u8>, ProtocolError)> = vec![
        (
            ClientFrame {
                mask: None,
                ..FRAME
            }
            .encode(),
            ProtocolError::UnmaskedFrameFromClient,
        ),
        (
            ClientFrame { rsv: 4, ..FRAME }.encode(),
            ProtocolError::ReservedBitsSet,
        ),
        (
            ClientFrame { rsv: 1, ..FRAME }.encode(),
            ProtocolError::ReservedBitsSet,
        ),
        (
            ClientFrame {
                opcode: 0x3,
                ..FRAME
            }
            .encode(),
            ProtocolError::ReservedOpCode(0x3),
        ),
        (
            ClientFrame {
                opcode: 0xb,
                ..FRAME
            }
            .encode(),
            ProtocolError::ReservedOpCode(0xb),
        ),
        (
            client::frame(false, client::PING, b""),
            ProtocolError::FragmentedControlFrame,
        ),
        (client::ping(&long_ping), ProtocolError::ControlFrameTooBig),
        (bad_len, ProtocolError::InvalidPayloadLength),
        (
            client::frame(true, client::CONT, b"a"),
            ProtocolError::UnexpectedContinuation,
        ),
        (
            [client::frame(false, client::TEXT, b"a"), client::text("b")].concat(),
            ProtocolError::ExpectedContinuation,
        ),
        (
            client::frame(true, client::CLOSE, &[0x03]),
            ProtocolError::InvalidClosePayload,
        ),
        (
            client::close(1005, ""),
            ProtocolError::InvalidCloseCode(1005),
        ),
        (client::close(999, ""), ProtocolError::InvalidCloseCode(999)),
        (
            client::frame(true, client::CLOSE, b"\x03\xe8\xff"),
            ProtocolError::InvalidUtf8,
        ),
    ];
    for (frame, error) in cases {
        let bytes = [upgrade_request(), frame, client::text("never")].concat();
        let whole = assert_same_at_every_split(&Config::default(), &bytes);
        assert_eq!(
            whole.events,
            [head(Src::Borrowed, &upgrade_request()), Ev::Failed(error)],
            "{error:?}"
        );
        let code = error.close_code().as_u16();
        assert_eq!(
            parse_101(&whole.wire),
            [srv::close(code, error.as_str())],
            "{error:?}"
        );
        assert_eq!(whole.buffered, 0, "{error:?}");
    }
}

#[test]
fn whole_unfragmented_message_in_one_read_is_borrowed() {
    let mut lp = Loop::open(Config::default());
    let two = [client::text("one"), client::binary(&[7; 1000])].concat();
    feed!(lp, time 1, two, [text(Src::Borrowed, "one"), binary(Src::Borrowed, &[7; 1000])]);
    expect_out!(lp, []);
    assert_eq!(lp.pool.spare_bytes(), 0, "no pool buffer was taken");
}

#[test]
fn message_across_reads_is_pooled() {
    let mut lp = Loop::open(Config::default());
    let frame = client::binary(&[9; 1000]);
    feed!(lp, time 1, &frame[..500], []);
    assert!(
        lp.conn.buffered_bytes() >= 1000,
        "the whole frame is reserved once"
    );
    feed!(lp, time 2, &frame[500..], [binary(Src::Pooled, &[9; 1000])]);
    assert_eq!(lp.conn.buffered_bytes(), 0);
    assert!(
        lp.pool.spare_bytes() > 0,
        "the buffer went back to the pool"
    );
}

#[test]
fn header_split_across_reads_then_zero_length_message() {
    let mut lp = Loop::open(Config::default());
    let frame = client::text("");
    feed!(lp, time 1, &frame[..3], []);
    feed!(lp, time 2, &frame[3..], [text(Src::Borrowed, "")]);
}

#[test]
fn fragmented_text_with_a_character_split_across_fragments() {
    let mut lp = Loop::open(Config::default());
    let fragments = [
        client::frame(false, client::TEXT, b"\xce"),
        client::frame(false, client::CONT, b""),
        client::frame(true, client::CONT, b"\xba!"),
    ];
    feed!(lp, time 1, &fragments[0], []);
    feed!(lp, time 2, &fragments[1], []);
    feed!(lp, time 3, &fragments[2], [text(Src::Pooled, "κ!")]);
    assert_eq!(lp.conn.buffered_bytes(), 0);

    let all = fragments.concat();
    feed!(lp, time 4, all, [text(Src::Pooled, "κ!")]);
}

#[test]
fn ping_inside_a_fragmented_message_is_answered_before_it_completes() {
    let mut lp = Loop::open(Config::default());
    let start = [
        client::frame(false, client::TEXT, b"Hel"),
        client::ping(b"are you there"),
    ];
    feed!(lp, time 1, start.concat(), []);
    expect_out!(lp, [srv::pong(b"are you there")]);
    feed!(lp, time 2, client::frame(true, client::CONT, b"lo"), [text(Src::Pooled, "Hello")]);
    expect_out!(lp, []);
}

#[test]
fn ping_split_across_reads_inside_a_fragmented_message() {
    let mut lp = Loop::open(Config::default());
    let ping = client::ping(b"0123456789");
    feed!(lp, time 1, [client::frame(false, client::BINARY, b"ab"), ping[..9].to_vec()].concat(), []);
    feed!(lp, time 2, &ping[9..12], []);
    expect_out!(lp, []);
    feed!(lp, time 3, &ping[12..], []);
    expect_out!(lp, [srv::pong(b"0123456789")]);
    feed!(lp, time 4, client::frame(true, client::CONT, b"cd"), [binary(Src::Pooled, b"abcd")]);
    assert_eq!(lp.conn.buffered_bytes(), 0);
}

#[test]
fn pong_goes_ahead_of_queued_data() {
    let mut lp = Loop::open(Config::default());
    lp.conn
        .outbox_mut()
        .queue_mut()
        .push(&server_frame(OpCode::Text, b"queued 1"));
    lp.conn
        .outbox_mut()
        .queue_mut()
        .push(&server_frame(OpCode::Text, b"queued 2"));
    assert!(lp.conn.wants_write());
    feed!(lp, time 1, client::ping(b"now"), []);
    expect_out!(
        lp,
        [
            srv::pong(b"now"),
            srv::text("queued 1"),
            srv::text("queued 2")
        ]
    );
    assert!(!lp.conn.wants_write());
}

#[test]
fn pong_waits_for_the_frame_being_written() {
    let mut lp = Loop::open(Config::default());
    lp.conn
        .outbox_mut()
        .queue_mut()
        .push(&server_frame(OpCode::Text, b"first"));
    let started = lp.write(3);
    feed!(lp, time 1, client::ping(b"p"), []);
    let wire = [started, lp.take_wire()].concat();
    assert_eq!(frames(&wire), [srv::text("first"), srv::pong(b"p")]);
}

#[test]
fn unsolicited_pong_is_ignored() {
    let mut lp = Loop::open(Config::default());
    feed!(lp, time 1, client::pong(b"hi"), []);
    expect_out!(lp, []);
    assert_eq!(lp.conn.state(), State::Open);
    feed!(lp, time 2, client::text("still open"), [text(Src::Borrowed, "still open")]);
}

#[test]
fn invalid_utf8_fails_at_the_piece_with_the_first_bad_byte() {
    let mut lp = Loop::open(Config::default());
    // ED A0 starts a surrogate: ED alone could still be valid, A0 decides.
    let payload = b"ab\xed\xa0 and more that never arrives";
    let frame = client::text_bytes(payload);
    let at_ed = FRAME.header_len() + 3;
    feed!(lp, time 1, &frame[..at_ed], []);
    expect_out!(lp, []);
    feed!(lp, time 2, &frame[at_ed..at_ed + 1], [Ev::Failed(ProtocolError::InvalidUtf8)]);
    expect_out!(lp, [srv::close(1007, "invalid UTF-8")]);
    assert_eq!(lp.conn.buffered_bytes(), 0);
}

#[test]
fn invalid_utf8_across_fragments_fails_at_the_bad_fragment() {
    let mut lp = Loop::open(Config::default());
    feed!(lp, time 1, client::frame(false, client::TEXT, b"ok \xce"), []);
    let bad = client::frame(true, client::CONT, b"A rest");
    let cut = FRAME.header_len() + 1;
    feed!(lp, time 2, &bad[..cut], [Ev::Failed(ProtocolError::InvalidUtf8)]);
    expect_out!(lp, [srv::close(1007, "invalid UTF-8")]);
}

#[test]
fn text_ending_inside_a_character_fails() {
    let mut lp = Loop::open(Config::default());
    feed!(lp, time 1, client::text_bytes(b"ab\xe2\x82"), [Ev::Failed(ProtocolError::InvalidUtf8)]);
    expect_out!(lp, [srv::close(1007, "invalid UTF-8")]);
}

#[test]
fn oversized_frame_fails_right_after_its_header() {
    let cfg = Config::default().max_message_size(100);
    let mut lp = Loop::open(cfg.clone());
    let frame = client::binary(&[1; 101]);
    let header = FRAME.header_len();
    feed!(lp, time 1, &frame[..header - 1], []);
    feed!(lp, time 2, &frame[header - 1..header], [Ev::Failed(ProtocolError::MessageTooBig)]);
    expect_out!(lp, [srv::close(1009, "message too big")]);
    assert_eq!(lp.conn.buffered_bytes(), 0, "nothing was buffered for it");

    let mut lp = Loop::open(cfg);
    feed!(lp, time 1, client::binary(&[1; 100]), [binary(Src::Borrowed, &[1; 100])]);
    feed!(lp, time 2, client::frame(false, client::BINARY, &[1; 60]), []);
    let second = client::frame(true, client::CONT, &[1; 41]);
    feed!(lp, time 3, &second[..header], [Ev::Failed(ProtocolError::MessageTooBig)]);
    expect_out!(lp, [srv::close(1009, "message too big")]);
}

#[test]
fn failure_is_sticky() {
    let mut lp = Loop::open(Config::default());
    feed!(lp, time 1, client::text_bytes(b"\xff"), [Ev::Failed(ProtocolError::InvalidUtf8)]);
    expect_out!(lp, [srv::close(1007, "invalid UTF-8")]);
    let more = [
        client::text("hello"),
        client::ping(b"p"),
        client::close(1000, ""),
        b"\xff\xff garbage".to_vec(),
    ];
    for bytes in &more {
        feed!(lp, time 2, bytes, []);
        expect_out!(lp, []);
    }
    assert!(!lp.close(1000, "again", Millis(3)), "no second close");
    expect_out!(lp, []);
    expect_nothing!(lp, time 4_999);
    assert_eq!(lp.conn.state(), State::Closing);
    assert_eq!(lp.conn.finish(), Finish::ShutdownWrite);
}

#[test]
fn finish_is_shutdown_write_once_a_failure_is_flushed() {
    let mut lp = Loop::open(Config::default());
    lp.conn
        .outbox_mut()
        .queue_mut()
        .push(&server_frame(OpCode::Text, b"before"));
    feed!(lp, time 1, client::frame(true, 0x3, b""), [Ev::Failed(ProtocolError::ReservedOpCode(3))]);
    assert_eq!(
        lp.conn.finish(),
        Finish::Keep,
        "the close frame is still queued"
    );
    expect_out!(
        lp,
        [srv::text("before"), srv::close(1002, "reserved opcode")]
    );
    assert_eq!(lp.conn.finish(), Finish::ShutdownWrite);
    lp.conn.shut_write();
    assert_eq!(
        lp.conn.finish(),
        Finish::Keep,
        "then read until EOF or the close deadline"
    );
    expect_dropped!(lp, time 5_001, Expired::Close);
}

// ---------------------------------------------------------------------------------------------
// Close handshake.

#[test]
fn peer_close_is_reported_and_echoed() {
    let mut lp = Loop::open(Config::default());
    feed!(lp, time 1, client::close(4000, "bye é"), [closed(4000, "bye é")]);
    assert_eq!(lp.conn.state(), State::Closing);
    expect_out!(lp, [srv::close(4000, "")]);
    assert_eq!(lp.conn.finish(), Finish::Close);
    assert_eq!(lp.conn.on_closed(&mut lp.pool), None, "already reported");
}

#[test]
fn peer_close_behind_queued_data_closes_once_flushed() {
    let mut lp = Loop::open(Config::default());
    lp.conn
        .outbox_mut()
        .queue_mut()
        .push(&server_frame(OpCode::Binary, b"data"));
    feed!(lp, time 1, client::close(1000, ""), [closed(1000, "")]);
    assert_eq!(lp.conn.finish(), Finish::Keep);
    expect_out!(lp, [srv::binary(b"data"), srv::close(1000, "")]);
    assert_eq!(lp.conn.finish(), Finish::Close);
}

#[test]
fn close_reply_goes_after_an_echo_behind_queued_data() {
    let mut lp = Loop::open(Config::default());
    lp.echo = true;
    lp.conn
        .outbox_mut()
        .queue_mut()
        .push(&server_frame(OpCode::Text, b"queued"));
    let bytes = [client::text("x"), client::close(1000, "")].concat();
    feed!(lp, time 1, bytes, [text(Src::Borrowed, "x"), closed(1000, "")]);
    expect_out!(
        lp,
        [srv::text("queued"), srv::text("x"), srv::close(1000, "")]
    );
}

#[test]
fn failure_close_goes_after_an_echo_behind_queued_data() {
    let mut lp = Loop::open(Config::default());
    lp.echo = true;
    lp.conn
        .outbox_mut()
        .queue_mut()
        .push(&server_frame(OpCode::Text, b"queued"));
    let bytes = [client::text("x"), client::text_bytes(b"\xff")].concat();
    feed!(lp, time 1, bytes, [text(Src::Borrowed, "x"), Ev::Failed(ProtocolError::InvalidUtf8)]);
    expect_out!(
        lp,
        [
            srv::text("queued"),
            srv::text("x"),
            srv::close(1007, "invalid UTF-8")
        ]
    );
}

#[test]
fn empty_peer_close_is_reported_as_1005_and_answered_empty() {
    let mut lp = Loop::open(Config::default());
    feed!(lp, time 1, client::close_empty(), [closed(1005, "")]);
    expect_out!(lp, [srv::close_empty()]);
    assert_eq!(lp.conn.finish(), Finish::Close);
}

#[test]
fn server_close_waits_for_the_peer_close() {
    let mut lp = Loop::open(Config::default());
    assert!(lp.close(1001, "going away", Millis(10)));
    expect_out!(lp, [srv::close(1001, "going away")]);
    assert_eq!(lp.conn.state(), State::Closing);
    assert_eq!(
        lp.conn.finish(),
        Finish::Keep,
        "waiting for the peer's close"
    );
    // What the peer sent before it saw our close is read and dropped: no events, no pong.
    let late = [
        client::text("late"),
        client::ping(b"p"),
        client::binary(b"x"),
    ]
    .concat();
    feed!(lp, time 20, late, []);
    expect_out!(lp, []);
    assert_eq!(lp.conn.finish(), Finish::Keep);
    feed!(lp, time 30, client::close(1001, ""), []);
    expect_out!(lp, []);
    assert_eq!(lp.conn.finish(), Finish::Close);
    assert_eq!(lp.conn.buffered_bytes(), 0);
}

#[test]
fn close_times_out_at_exactly_close_timeout() {
    let mut lp = Loop::open(Config::default());
    assert!(lp.close(1000, "", Millis(1_000)));
    expect_out!(lp, [srv::close(1000, "")]);
    assert_eq!(lp.conn.next_deadline(&lp.cfg), Some(Millis(6_000)));
    expect_nothing!(lp, time 5_999);
    expect_dropped!(lp, time 6_000, Expired::Close);
}

#[test]
fn peer_close_mid_message_releases_the_message_buffer() {
    let mut lp = Loop::open(Config::default());
    feed!(lp, time 1, client::frame(false, client::TEXT, b"partial"), []);
    assert!(lp.conn.buffered_bytes() > 0);
    feed!(lp, time 2, client::close(1000, ""), [closed(1000, "")]);
    assert_eq!(lp.conn.buffered_bytes(), 0);
}

#[test]
fn split_peer_close_mid_message_releases_the_message_buffer() {
    let mut lp = Loop::open(Config::default());
    feed!(lp, time 1, client::frame(false, client::TEXT, b"partial"), []);
    let close = client::close(1000, "bye");
    feed!(lp, time 2, &close[..FRAME.header_len() + 1], []);
    feed!(lp, time 3, &close[FRAME.header_len() + 1..], [closed(1000, "bye")]);
    expect_out!(lp, [srv::close(1000, "")]);
    assert_eq!(lp.conn.finish(), Finish::Close);
    assert_eq!(lp.conn.buffered_bytes(), 0);
}

#[test]
fn split_bad_close_mid_message_releases_the_message_buffer() {
    let mut lp = Loop::open(Config::default());
    feed!(lp, time 1, client::frame(false, client::TEXT, b"partial"), []);
    let close = client::close(1005, "");
    let cut = FRAME.header_len() + 1;
    feed!(lp, time 2, &close[..cut], []);
    let failed = Ev::Failed(ProtocolError::InvalidCloseCode(1005));
    feed!(lp, time 3, &close[cut..], [failed]);
    expect_out!(lp, [srv::close(1002, "invalid close code")]);
    assert_eq!(lp.conn.buffered_bytes(), 0);
}

#[test]
fn slow_consumer_close_keeps_the_frame_on_the_wire() {
    let mut lp = Loop::open(Config::default());
    lp.conn
        .outbox_mut()
        .queue_mut()
        .push(&server_frame(OpCode::Text, b"started"));
    let started = lp.write(2);
    lp.conn
        .outbox_mut()
        .queue_mut()
        .push_shared(server_frame(OpCode::Text, b"dropped").into(), 0);
    let dropped = lp.conn.close_slow(&mut lp.out, &lp.cfg, Millis(1));
    assert_eq!(dropped, Some(server_frame(OpCode::Text, b"dropped").len()));
    let wire = [started, lp.take_wire()].concat();
    assert_eq!(
        frames(&wire),
        [srv::text("started"), srv::close(1008, "slow consumer")]
    );
}

// ---------------------------------------------------------------------------------------------
// Heartbeats and other deadlines (default: ping after 30 s of silence, pong within 10 s).

#[test]
fn ping_after_silence_then_drop_without_pong() {
    let mut lp = Loop::open(Config::default());
    assert_eq!(lp.conn.next_deadline(&lp.cfg), Some(Millis(30_000)));
    expect_nothing!(lp, time 29_999);
    expect_ping!(lp, time 30_000);
    assert_eq!(lp.conn.next_deadline(&lp.cfg), Some(Millis(40_000)));
    expect_nothing!(lp, time 35_000);
    expect_nothing!(lp, time 39_999);
    expect_dropped!(lp, time 40_000, Expired::Pong);
}

#[test]
fn any_bytes_cancel_the_pong_deadline_and_move_the_next_ping() {
    let mut lp = Loop::open(Config::default());
    expect_ping!(lp, time 30_000);
    // Half a frame header is enough to prove the peer alive.
    feed!(lp, time 35_000, &client::pong(b"")[..1], []);
    assert_eq!(lp.conn.next_deadline(&lp.cfg), Some(Millis(65_000)));
    expect_nothing!(lp, time 40_000);
    expect_nothing!(lp, time 64_999);
    expect_ping!(lp, time 65_000);

    let mut lp = Loop::open(Config::default());
    expect_ping!(lp, time 30_000);
    lp.conn.on_bytes(Millis(35_000));
    assert_eq!(lp.conn.next_deadline(&lp.cfg), Some(Millis(65_000)));
}

#[test]
fn ping_goes_ahead_of_queued_data() {
    let mut lp = Loop::open(Config::default());
    lp.conn
        .outbox_mut()
        .queue_mut()
        .push(&server_frame(OpCode::Text, b"queued"));
    assert_eq!(lp.deadline(Millis(30_000)), DeadlineAction::Ping);
    expect_out!(lp, [srv::ping(b""), srv::text("queued")]);
}

#[test]
fn idle_timeout_closes_with_1000() {
    let cfg = Config::default().idle_timeout(Some(Duration::from_secs(45)));
    let mut lp = Loop::open(cfg);
    expect_ping!(lp, time 30_000);
    feed!(lp, time 31_000, client::pong(b""), []);
    assert_eq!(
        lp.conn.next_deadline(&lp.cfg),
        Some(Millis(45_000)),
        "pongs are not messages"
    );
    expect_nothing!(lp, time 44_999);
    assert_eq!(lp.deadline(Millis(45_000)), DeadlineAction::Close);
    expect_out!(lp, [srv::close(1000, "idle timeout")]);
    assert_eq!(lp.conn.state(), State::Closing);
    assert_eq!(lp.conn.next_deadline(&lp.cfg), Some(Millis(50_000)));
    feed!(lp, time 46_000, client::close(1000, ""), []);
    assert_eq!(lp.conn.finish(), Finish::Close);
}

#[test]
fn a_message_postpones_the_idle_timeout() {
    let cfg = Config::default()
        .idle_timeout(Some(Duration::from_secs(20)))
        .ping_interval(None);
    let mut lp = Loop::open(cfg);
    assert_eq!(lp.conn.next_deadline(&lp.cfg), Some(Millis(20_000)));
    feed!(lp, time 15_000, client::text("hi"), [text(Src::Borrowed, "hi")]);
    assert_eq!(lp.conn.next_deadline(&lp.cfg), Some(Millis(35_000)));
    expect_nothing!(lp, time 34_999);
    lp.conn.note_message(Millis(34_999));
    expect_nothing!(lp, time 35_000);
    assert_eq!(lp.deadline(Millis(54_999)), DeadlineAction::Close);
    expect_out!(lp, [srv::close(1000, "idle timeout")]);
}

#[test]
fn tcp_end_while_open_reports_1006_exactly_once() {
    let mut lp = Loop::open(Config::default());
    feed!(lp, time 1, client::frame(false, client::TEXT, b"half"), []);
    assert_eq!(lp.conn.on_closed(&mut lp.pool), Some(CloseCode::ABNORMAL));
    assert_eq!(lp.conn.state(), State::Closed);
    assert_eq!(lp.conn.buffered_bytes(), 0);
    assert_eq!(lp.conn.on_closed(&mut lp.pool), None);
    assert_eq!(lp.conn.next_deadline(&lp.cfg), None);
    feed!(lp, time 2, client::text("x"), []);

    let mut lp = Loop::open(Config::default());
    assert!(lp.close(1000, "", Millis(1)));
    assert_eq!(
        lp.conn.on_closed(&mut lp.pool),
        None,
        "closing: the close was reported"
    );

    let mut lp = Loop::new(Config::default());
    assert_eq!(lp.conn.on_closed(&mut lp.pool), None, "never opened");
}

// ---------------------------------------------------------------------------------------------
// Event streams (a plain GET the application made one; default keep-alive 15 s, retry 2 s).

/// Upgrades as [`AcceptAll`] does, and makes every plain `GET` an event stream.
struct Streams;

impl Decide for Streams {
    type State = ();

    fn upgrade(&mut self, _: &HttpRequest<'_>) -> Decision<()> {
        Decision::Accept(())
    }

    fn request(&mut self, _: &HttpRequest<'_>) -> super::Response {
        super::Response::status(404)
    }

    fn event_stream(&mut self, _: &HttpRequest<'_>) -> Option<Decision<()>> {
        Some(Decision::Accept(()))
    }
}

const STREAM_REQUEST: &[u8] =
    b"GET /events?topic=t HTTP/1.1\r\nHost: example.com\r\nAccept: text/event-stream\r\n\r\n";

/// A stream opened at time 0, its head and `retry:` already read.
fn open_stream(cfg: Config) -> Loop {
    let mut lp = Loop::new(cfg);
    lp.streams = true;
    feed!(lp, time 0, STREAM_REQUEST, [head(Src::Borrowed, STREAM_REQUEST)]);
    let mut wire = lp.take_wire();
    let res = take_response_head(&mut wire).expect("a response head");
    assert_eq!(res.status, 200);
    assert_eq!(res.header("Content-Type"), Some("text/event-stream"));
    // No Origin (a same-origin page, or not a browser): no CORS header.
    assert_eq!(res.header("Access-Control-Allow-Origin"), None);
    let retry = lp
        .cfg
        .event_retry
        .map(|r| format!("retry: {}\n\n", r.as_millis()));
    assert_eq!(wire, retry.unwrap_or_default().as_bytes());
    assert_eq!(
        (lp.conn.state(), lp.conn.kind()),
        (State::Open, Kind::EventStream)
    );
    lp
}

#[test]
fn a_get_becomes_an_event_stream_that_reads_nothing_as_messages() {
    let mut lp = open_stream(Config::default());
    // Whatever the peer sends is read and dropped: no event, no answer, nothing held.
    feed!(lp, time 1, client::text("hello"), []);
    feed!(lp, time 2, upgrade_request(), []);
    feed!(lp, time 3, [0xffu8; 3000], []);
    expect_out!(lp, []);
    assert_eq!(lp.conn.buffered_bytes(), 0);
    assert_eq!(lp.conn.state(), State::Open);
    // Bytes after the head in the same read are dropped the same way.
    let mut lp = Loop::new(Config::default().event_retry(None));
    lp.streams = true;
    let with_more = [STREAM_REQUEST, b"GET / HTTP/1.1\r\n\r\n"].concat();
    feed!(lp, time 0, &with_more, [head(Src::Borrowed, STREAM_REQUEST)]);
    let mut wire = lp.take_wire();
    take_response_head(&mut wire).unwrap();
    assert!(wire.is_empty(), "no retry: line when event_retry is None");
    assert_eq!(lp.conn.kind(), Kind::EventStream);
}

#[test]
fn an_upgrade_stays_a_websocket_when_streams_are_offered() {
    let mut lp = Loop::new(Config::default());
    lp.streams = true;
    feed!(lp, time 0, upgrade_request(), [head(Src::Borrowed, &upgrade_request())]);
    expect_101!(lp, []);
    assert_eq!(lp.conn.kind(), Kind::WebSocket);
}

#[test]
fn a_keep_alive_after_silence_and_never_a_ping_or_a_pong_deadline() {
    let mut lp = open_stream(Config::default());
    assert_eq!(lp.conn.next_deadline(&lp.cfg), Some(Millis(15_000)));
    expect_nothing!(lp, time 14_999);
    assert_eq!(lp.deadline(Millis(15_000)), DeadlineAction::KeepAlive);
    assert_eq!(lp.take_wire(), b": keep-alive\n\n");
    assert_eq!(lp.conn.next_deadline(&lp.cfg), Some(Millis(30_000)));
    // An event postpones the next one: it counts from the last thing written.
    lp.conn.note_message(Millis(20_000));
    assert_eq!(lp.conn.next_deadline(&lp.cfg), Some(Millis(35_000)));
    expect_nothing!(lp, time 30_000);
    assert_eq!(lp.deadline(Millis(35_000)), DeadlineAction::KeepAlive);
    // Past the ping interval and the pong timeout, with no byte from the peer: still open.
    for t in [50_000, 65_000, 80_000, 95_000] {
        assert_eq!(lp.deadline(Millis(t)), DeadlineAction::KeepAlive, "at {t}");
    }
    assert_eq!(lp.conn.state(), State::Open);
    assert_eq!(lp.take_wire(), b": keep-alive\n\n".repeat(5));

    let cfg = Config::default().event_keepalive(None);
    let lp = open_stream(cfg);
    assert_eq!(lp.conn.next_deadline(&lp.cfg), None, "nothing is ever due");
}

#[test]
fn a_keep_alive_never_waits_behind_queued_bytes() {
    let mut lp = open_stream(Config::default());
    lp.conn.outbox_mut().queue_mut().push(b"data: queued\n\n");
    assert_eq!(lp.deadline(Millis(15_000)), DeadlineAction::Nothing);
    assert_eq!(lp.take_wire(), b"data: queued\n\n");
    // The next one counts from the skipped one: the deadline never stays in the past.
    assert_eq!(lp.conn.next_deadline(&lp.cfg), Some(Millis(30_000)));
}

#[test]
fn a_stream_closes_with_no_close_frame_once_its_queue_is_written() {
    let mut lp = open_stream(Config::default());
    lp.conn.outbox_mut().queue_mut().push(b"data: last\n\n");
    assert!(
        !lp.close(1005, "", Millis(1)),
        "report-only codes are refused"
    );
    assert!(lp.close(1000, "bye", Millis(1)));
    assert_eq!(lp.conn.state(), State::Closing);
    assert_eq!(lp.conn.finish(), Finish::Keep, "the queue goes out first");
    assert!(!lp.close(1000, "", Millis(2)), "once");
    assert_eq!(lp.take_wire(), b"data: last\n\n", "no close frame");
    assert_eq!(lp.conn.finish(), Finish::ShutdownWrite);
    lp.conn.shut_write();
    feed!(lp, time 3, b"late bytes", []);
    assert_eq!(lp.conn.next_deadline(&lp.cfg), Some(Millis(5_001)));
    expect_dropped!(lp, time 5_001, Expired::Close);
    assert_eq!(
        lp.conn.on_closed(&mut lp.pool),
        None,
        "the close was reported"
    );
}

#[test]
fn the_idle_timeout_ends_a_stream() {
    let cfg = Config::default()
        .idle_timeout(Some(Duration::from_secs(20)))
        .event_keepalive(None);
    let mut lp = open_stream(cfg);
    assert_eq!(lp.conn.next_deadline(&lp.cfg), Some(Millis(20_000)));
    assert_eq!(lp.deadline(Millis(20_000)), DeadlineAction::Close);
    expect_out!(lp, []);
    assert_eq!(lp.conn.finish(), Finish::ShutdownWrite);
}

#[test]
fn a_slow_stream_ends_after_the_event_on_the_wire() {
    let mut lp = open_stream(Config::default());
    lp.conn.outbox_mut().queue_mut().push(b"data: started\n\n");
    let started = lp.write(3);
    let dropped: std::rc::Rc<[u8]> = std::rc::Rc::from(&b"data: dropped\n\n"[..]);
    lp.conn.outbox_mut().queue_mut().push_shared(dropped, 0);
    assert_eq!(
        lp.conn.close_slow(&mut lp.out, &lp.cfg, Millis(1)),
        Some(15)
    );
    assert_eq!([started, lp.take_wire()].concat(), b"data: started\n\n");
    assert_eq!(lp.conn.finish(), Finish::ShutdownWrite);
}

#[test]
fn a_stream_that_ends_while_open_reports_1006_and_keeps_its_kind() {
    let mut lp = open_stream(Config::default());
    assert_eq!(lp.conn.on_closed(&mut lp.pool), Some(CloseCode::ABNORMAL));
    assert_eq!(
        (lp.conn.state(), lp.conn.kind()),
        (State::Closed, Kind::EventStream)
    );
    assert_eq!(lp.conn.on_closed(&mut lp.pool), None);
}

#[test]
fn an_origin_off_the_allow_list_gets_403_and_an_allowed_one_is_named() {
    let cfg = Config::default().allowed_origins(vec!["https://ok.example".into()]);
    let mut lp = Loop::new(cfg.clone());
    lp.streams = true;
    let req = b"GET /e HTTP/1.1\r\nHost: h\r\nOrigin: https://evil.example\r\n\r\n";
    feed!(lp, time 0, req, [head(Src::Borrowed, req)]);
    expect_http!(lp, 403);
    let mut lp = Loop::new(cfg);
    lp.streams = true;
    let req = b"GET /e HTTP/1.1\r\nHost: h\r\nOrigin: https://ok.example\r\n\r\n";
    feed!(lp, time 0, req, [head(Src::Borrowed, req)]);
    let mut wire = lp.take_wire();
    let res = take_response_head(&mut wire).unwrap();
    assert_eq!(res.status, 200);
    assert_eq!(
        res.header("Access-Control-Allow-Origin"),
        Some("https://ok.example")
    );
}

// ---------------------------------------------------------------------------------------------
// Memory.

#[test]
fn conn_record_is_at_most_200_bytes() {
    let size = core::mem::size_of::<Conn>();
    println!("size_of::<Conn>() = {size}");
    assert!(size <= 200, "size_of::<Conn>() = {size}");
}

#[test]
fn idle_open_connection_holds_no_buffer() {
    let mut lp = Loop::open(Config::default());
    let frame = client::binary(&[5; 5000]);
    feed!(lp, time 1, &frame[..2000], []);
    assert!(lp.conn.buffered_bytes() >= 5000);
    feed!(lp, time 2, &frame[2000..], [binary(Src::Pooled, &[5; 5000])]);
    assert_eq!(lp.conn.buffered_bytes(), 0);

    let fragmented = [
        client::frame(false, client::TEXT, b"a"),
        client::ping(b"p"),
        client::frame(true, client::CONT, b"b"),
    ]
    .concat();
    let mut events = Vec::new();
    for piece in fragmented.chunks(3) {
        events.extend(feed!(lp, time 3, piece));
    }
    assert_eq!(events, [text(Src::Pooled, "ab")]);
    expect_out!(lp, [srv::pong(b"p")]);
    assert_eq!(lp.conn.buffered_bytes(), 0);
    assert!(!lp.conn.wants_write());
}

// ---------------------------------------------------------------------------------------------
// In memory, end to end.

/// The client end of an in-memory connection: bytes to send, and what it parsed back.
#[derive(Default)]
struct Client {
    to_server: Vec<u8>,
    from_server: Vec<u8>,
    response: Option<Response>,
    frames: Vec<ServerFrame>,
}

impl Client {
    fn send(&mut self, bytes: &[u8]) {
        self.to_server.extend_from_slice(bytes);
    }

    fn receive(&mut self, bytes: &[u8]) {
        self.from_server.extend_from_slice(bytes);
        if self.response.is_none() {
            self.response = take_response_head(&mut self.from_server);
        }
        if self.response.is_some() {
            self.frames.extend(split_frames(&mut self.from_server));
        }
    }

    fn take_frames(&mut self) -> Vec<ServerFrame> {
        std::mem::take(&mut self.frames)
    }
}

/// Moves bytes both ways until neither side has any: the client's through reads of at most
/// `mtu` bytes, the server's through writes of at most `mtu`. Returns the server's events.
fn transfer(client: &mut Client, lp: &mut Loop, now: Millis, mtu: usize) -> Vec<Ev> {
    let mut events = Vec::new();
    loop {
        let pending = std::mem::take(&mut client.to_server);
        for chunk in pending.chunks(mtu) {
            events.extend(lp.feed(now, chunk));
        }
        let written = lp.write(mtu);
        if pending.is_empty() && written.is_empty() {
            return events;
        }
        client.receive(&written);
    }
}

#[test]
fn handshake_three_echoes_and_close_in_memory() {
    for mtu in [1, 2, 3, 7, 64, 1500, usize::MAX] {
        let mut lp = Loop::new(Config::default());
        lp.echo = true;
        let mut client = Client::default();

        client.send(&upgrade_request());
        let events = transfer(&mut client, &mut lp, Millis(0), mtu);
        assert_eq!(
            any_src(events),
            [head(Src::Any, &upgrade_request())],
            "mtu {mtu}"
        );
        let res = client.response.as_ref().expect("a response");
        assert_eq!(res.status, 101);
        assert_eq!(res.header("Sec-WebSocket-Accept"), Some(ACCEPT));

        client.send(&client::text("one"));
        let events = transfer(&mut client, &mut lp, Millis(10), mtu);
        assert_eq!(any_src(events), [text(Src::Any, "one")], "mtu {mtu}");
        assert_eq!(client.take_frames(), [srv::text("one")], "mtu {mtu}");

        let two = [0x5a; 300];
        client.send(&client::binary(&two));
        let events = transfer(&mut client, &mut lp, Millis(20), mtu);
        let src = if mtu >= client::binary(&two).len() {
            Src::Borrowed
        } else {
            Src::Pooled
        };
        assert_eq!(events, [binary(src, &two)], "mtu {mtu}");
        assert_eq!(client.take_frames(), [srv::binary(&two)], "mtu {mtu}");

        client.send(&client::frame(false, client::TEXT, b"th"));
        client.send(&client::ping(b"?"));
        client.send(&client::frame(true, client::CONT, b"ree"));
        let events = transfer(&mut client, &mut lp, Millis(30), mtu);
        assert_eq!(events, [text(Src::Pooled, "three")], "mtu {mtu}");
        assert_eq!(
            client.take_frames(),
            [srv::pong(b"?"), srv::text("three")],
            "mtu {mtu}"
        );

        client.send(&client::close(1000, "bye"));
        let events = transfer(&mut client, &mut lp, Millis(40), mtu);
        assert_eq!(events, [closed(1000, "bye")], "mtu {mtu}");
        assert_eq!(client.take_frames(), [srv::close(1000, "")], "mtu {mtu}");
        assert!(client.from_server.is_empty());
        assert_eq!(lp.conn.finish(), Finish::Close, "mtu {mtu}");
        assert_eq!(lp.conn.buffered_bytes(), 0, "mtu {mtu}");
    }
}

#[test]
fn heartbeat_and_server_close_in_memory() {
    for mtu in [1, 5, usize::MAX] {
        let mut lp = Loop::new(Config::default());
        let mut client = Client::default();
        client.send(&upgrade_request());
        transfer(&mut client, &mut lp, Millis(0), mtu);
        assert_eq!(client.response.as_ref().map(|r| r.status), Some(101));

        assert_eq!(lp.deadline(Millis(30_000)), DeadlineAction::Ping);
        transfer(&mut client, &mut lp, Millis(30_000), mtu);
        assert_eq!(client.take_frames(), [srv::ping(b"")]);
        client.send(&client::pong(b""));
        assert_eq!(transfer(&mut client, &mut lp, Millis(30_050), mtu), []);
        assert_eq!(lp.conn.next_deadline(&lp.cfg), Some(Millis(60_050)));

        assert!(lp.close(1001, "shutdown", Millis(31_000)));
        transfer(&mut client, &mut lp, Millis(31_000), mtu);
        assert_eq!(client.take_frames(), [srv::close(1001, "shutdown")]);
        assert_eq!(lp.conn.finish(), Finish::Keep);
        client.send(&client::close(1001, ""));
        assert_eq!(transfer(&mut client, &mut lp, Millis(31_010), mtu), []);
        assert_eq!(lp.conn.finish(), Finish::Close);
    }
}

/// A burst of pings answered in place asks the loop to write once the output reaches
/// `max_backpressure`, so the batch never grows past it within one read.
#[test]
fn a_ping_burst_asks_for_a_flush_at_the_bound() {
    let cfg = Config::default().max_backpressure(1024);
    let mut lp = Loop::open(cfg);
    let burst: Vec<u8> = (0..20).flat_map(|_| client::ping(&[b'p'; 125])).collect();
    let evs = lp.feed(Millis(1), &burst);
    let flushes = evs.iter().filter(|e| matches!(e, Ev::Flush)).count();
    // 127-byte pongs: the 9th reaches 1024 bytes, and so on for every later one.
    assert_eq!(flushes, 20 - 8, "{evs:?}");
}

/// A ping split across reads while a fragmented message fills the buffer to
/// `max_message_size`: the ping's bytes wait behind the message's, and the buffer grows by
/// them, not to twice its size (it did: 2,000 B held for a 1,000-byte limit).
#[test]
fn a_split_ping_behind_a_full_message_grows_the_buffer_by_its_payload_only() {
    let cfg = Config::default()
        .max_message_size(1000)
        .max_request_head(300);
    let mut lp = Loop::open(cfg);
    let first = client::frame(false, client::BINARY, &[7u8; 1000]);
    for piece in first.chunks(100) {
        feed!(lp, time 1, piece, []);
    }
    let ping = client::ping(b"hello");
    feed!(lp, time 2, &ping[..8], []);
    assert!(
        lp.conn.buffered_bytes() <= 1000 + 125,
        "{} B held",
        lp.conn.buffered_bytes()
    );
    feed!(lp, time 3, &ping[8..], []);
    expect_out!(lp, [srv::pong(b"hello")]);
    assert!(lp.conn.buffered_bytes() <= 1000 + 125);
    feed!(lp, time 4, client::frame(true, client::CONT, b""), [binary(Src::Pooled, &[7u8; 1000])]);
}

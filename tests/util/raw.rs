//! A small raw WebSocket client over `std::net::TcpStream`, with byte-level control.
//!
//! Nothing here hides protocol details: tests build frames byte for byte (bad RSV bits,
//! reserved opcodes, unmasked or oversized control frames, split headers...), send them
//! in one write, in chunks, or from a background thread, and read what the server sends
//! back, frame by frame or message by message.
//!
//! - [`RawClient::connect`] performs the opening handshake (random-ish 16-byte key,
//!   checks `101` and `Sec-WebSocket-Accept`) and keeps any bytes read past the head.
//! - [`frame`], [`frame_with_mask`], [`frame_header`], [`close_payload`] build bytes.
//! - [`RawClient::read_frame`] reads one server frame and checks that it is well formed
//!   (unmasked, minimal length, control frames short and unfragmented);
//!   [`RawClient::read_event`] reassembles messages and reports pings, pongs and close.
//! - [`RawClient::wait_for_eof`] tells whether the *server* closed the TCP connection.
//! - [`BackgroundWriter`] writes from another thread so a test can send megabytes while
//!   reading the echo, without both sides blocking on full socket buffers.
//! - [`http_request`] sends arbitrary bytes and reads an HTTP response head (for
//!   malformed-handshake tests).
//!
//! Every blocking operation has a generous timeout ([`IO_TIMEOUT`]); nothing asserts on
//! timing. Sockets have `TCP_NODELAY` set so that separate writes leave as separate
//! segments.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;

/// Read/write/connect timeout of every socket operation.
pub const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// The GUID of RFC 6455 §1.3, appended to the key to compute the accept value.
pub const WS_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Largest HTTP response head accepted.
pub const MAX_HTTP_HEAD: usize = 64 * 1024;

/// Largest frame payload [`RawClient::read_frame`] accepts before reporting an error
/// (a guard against allocating gigabytes for a corrupt length).
pub const DEFAULT_MAX_FRAME: u64 = 64 * 1024 * 1024;

/// Opcodes (RFC 6455 §5.2).
pub mod op {
    /// Continuation frame.
    pub const CONTINUATION: u8 = 0x0;
    /// Text frame.
    pub const TEXT: u8 = 0x1;
    /// Binary frame.
    pub const BINARY: u8 = 0x2;
    /// Close frame.
    pub const CLOSE: u8 = 0x8;
    /// Ping frame.
    pub const PING: u8 = 0x9;
    /// Pong frame.
    pub const PONG: u8 = 0xA;

    /// Whether `opcode` is a control opcode (high bit set).
    pub fn is_control(opcode: u8) -> bool {
        opcode & 0x8 != 0
    }
}

// ---------------------------------------------------------------------------------
// Frame building
// ---------------------------------------------------------------------------------

/// A complete frame: `fin`, the three RSV bits (`rsv` & 7, RSV1 is 4), `opcode` (& 15),
/// the payload, masked with a key derived from the content when `masked`.
///
/// The key is deterministic (see [`derive_mask_key`]), so runs are reproducible, yet it
/// differs between frames.
pub fn frame(fin: bool, rsv: u8, opcode: u8, payload: &[u8], masked: bool) -> Vec<u8> {
    let key = masked.then(|| derive_mask_key(opcode, payload));
    frame_with_mask(fin, rsv, opcode, payload, key)
}

/// A client frame (`fin`, no RSV, masked): the usual thing to send.
pub fn client_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    frame(fin, 0, opcode, payload, true)
}

/// Like [`frame`], with an explicit masking key (`None`: unmasked).
pub fn frame_with_mask(
    fin: bool,
    rsv: u8,
    opcode: u8,
    payload: &[u8],
    mask: Option<[u8; 4]>,
) -> Vec<u8> {
    let mut out = frame_header(fin, rsv, opcode, payload.len() as u64, mask);
    let start = out.len();
    out.extend_from_slice(payload);
    if let Some(key) = mask {
        apply_mask(&mut out[start..], key, 0);
    }
    out
}

/// Only the header (2–14 bytes) of a frame whose payload is `len` bytes, using the
/// minimal length encoding. Follow it with the payload masked by [`apply_mask`].
pub fn frame_header(fin: bool, rsv: u8, opcode: u8, len: u64, mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut out = Vec::with_capacity(14);
    out.push(((fin as u8) << 7) | ((rsv & 0x7) << 4) | (opcode & 0xF));
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    if len < 126 {
        out.push(mask_bit | len as u8);
    } else if len <= u64::from(u16::MAX) {
        out.push(mask_bit | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(mask_bit | 127);
        out.extend_from_slice(&len.to_be_bytes());
    }
    if let Some(key) = mask {
        out.extend_from_slice(&key);
    }
    out
}

/// XORs `data` with `key`, as if `data` started at byte `offset` of the payload.
pub fn apply_mask(data: &mut [u8], key: [u8; 4], offset: usize) {
    // Rotate the key so that data[0] lines up with key[offset % 4].
    let mut k = [0u8; 8];
    for (i, b) in k.iter_mut().enumerate() {
        *b = key[(offset + i) % 4];
    }
    let wide = u64::from_ne_bytes(k);
    let mut chunks = data.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let v = u64::from_ne_bytes([
            chunk[0], chunk[1], chunk[2], chunk[3], chunk[4], chunk[5], chunk[6], chunk[7],
        ]) ^ wide;
        chunk.copy_from_slice(&v.to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= k[i % 4];
    }
}

/// A deterministic, content-dependent, never-zero masking key (FNV-1a of the opcode,
/// the length and up to 64 bytes from each end of the payload).
pub fn derive_mask_key(opcode: u8, payload: &[u8]) -> [u8; 4] {
    let mut h: u32 = 0x811c_9dc5;
    let mut eat = |b: u8| {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    };
    eat(opcode);
    for b in (payload.len() as u64).to_le_bytes() {
        eat(b);
    }
    let head = &payload[..payload.len().min(64)];
    let tail = &payload[payload.len().saturating_sub(64)..];
    head.iter().chain(tail).for_each(|&b| eat(b));
    if h == 0 {
        h = 0x5a5a_5a5a;
    }
    h.to_be_bytes()
}

/// A close frame payload: the code (big endian) followed by `reason`.
pub fn close_payload(code: u16, reason: &[u8]) -> Vec<u8> {
    let mut out = code.to_be_bytes().to_vec();
    out.extend_from_slice(reason);
    out
}

/// The `Sec-WebSocket-Accept` value for `key`.
pub fn accept_key(key: &str) -> String {
    let digest = sha1_smol::Sha1::from(format!("{key}{WS_GUID}"))
        .digest()
        .bytes();
    base64::engine::general_purpose::STANDARD.encode(digest)
}

/// A fresh, random-ish base64 `Sec-WebSocket-Key` (16 bytes).
pub fn random_key() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let mut x = nanos
        ^ (u64::from(std::process::id()) << 32)
        ^ COUNTER
            .fetch_add(1, Ordering::Relaxed)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        | 1;
    let mut bytes = [0u8; 16];
    for chunk in bytes.chunks_mut(8) {
        // xorshift64*
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        chunk.copy_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// An HTTP/1.1 upgrade request for `path` on `host` with `key` and extra header lines.
pub fn upgrade_request(host: &str, path: &str, key: &str, extra: &[(&str, &str)]) -> String {
    let mut req = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
    );
    for (name, value) in extra {
        req.push_str(&format!("{name}: {value}\r\n"));
    }
    req.push_str("\r\n");
    req
}

// ---------------------------------------------------------------------------------
// What the server sends
// ---------------------------------------------------------------------------------

/// One frame as received.
#[derive(Clone, PartialEq, Eq)]
pub struct Frame {
    /// FIN bit.
    pub fin: bool,
    /// The three RSV bits (RSV1 = 4).
    pub rsv: u8,
    /// Opcode.
    pub opcode: u8,
    /// Payload (unmasked).
    pub payload: Vec<u8>,
}

impl fmt::Debug for Frame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Frame {{ fin: {}, rsv: {}, opcode: {}, payload: {} }}",
            self.fin,
            self.rsv,
            self.opcode,
            preview(&self.payload)
        )
    }
}

/// What [`RawClient::read_event`] returns.
#[derive(Clone, PartialEq, Eq)]
pub enum Event {
    /// A complete (possibly reassembled) data message.
    Message {
        /// Binary (opcode 2) rather than text (opcode 1).
        binary: bool,
        /// The whole payload.
        payload: Vec<u8>,
    },
    /// A ping from the server.
    Ping(Vec<u8>),
    /// A pong from the server.
    Pong(Vec<u8>),
    /// A close frame: its code (`None` for an empty payload) and reason bytes.
    Close {
        /// The status code, if the payload had one.
        code: Option<u16>,
        /// The reason (checked to be UTF-8).
        reason: Vec<u8>,
    },
    /// The server closed the TCP connection (EOF at a frame boundary).
    Eof,
}

impl fmt::Debug for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Event::Message {
                binary: false,
                payload,
            } => write!(f, "text message {}", preview(payload)),
            Event::Message {
                binary: true,
                payload,
            } => write!(f, "binary message {}", preview(payload)),
            Event::Ping(p) => write!(f, "ping {}", preview(p)),
            Event::Pong(p) => write!(f, "pong {}", preview(p)),
            Event::Close { code, reason } => match code {
                Some(code) => write!(f, "close frame (code {code}, reason {})", preview(reason)),
                None => write!(f, "close frame (no code)"),
            },
            Event::Eof => write!(f, "EOF (server closed TCP)"),
        }
    }
}

/// A short, readable rendering of a payload: length plus a prefix, as text when it is
/// printable UTF-8, else hex.
pub fn preview(bytes: &[u8]) -> String {
    const MAX: usize = 32;
    let shown = &bytes[..bytes.len().min(MAX)];
    let more = if bytes.len() > MAX { "…" } else { "" };
    match std::str::from_utf8(shown) {
        Ok(s) if s.chars().all(|c| !c.is_control()) => {
            format!("[{} bytes: {:?}{more}]", bytes.len(), s)
        }
        _ => {
            let hex: String = shown.iter().map(|b| format!("{b:02x}")).collect();
            format!("[{} bytes: 0x{hex}{more}]", bytes.len())
        }
    }
}

/// How the server ended the TCP connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Closed {
    /// Orderly shutdown (FIN): read returned 0.
    Eof,
    /// Reset (RST): the server closed while our bytes were unread, for instance.
    Reset,
}

fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

fn is_reset(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted
    )
}

// ---------------------------------------------------------------------------------
// The client
// ---------------------------------------------------------------------------------

/// A connected WebSocket client with an open handshake done.
pub struct RawClient {
    stream: TcpStream,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// The server's handshake response head (status line and headers).
    pub response_head: String,
    /// `Some((binary, payload so far))` while a fragmented server message is open.
    partial: Option<(bool, Vec<u8>)>,
    max_frame: u64,
}

impl RawClient {
    /// Connects to `addr` and performs the opening handshake for `/`.
    pub fn connect(addr: SocketAddr) -> io::Result<RawClient> {
        Self::connect_with(addr, "/", &[])
    }

    /// Connects to `addr` and performs the opening handshake for `path` with extra
    /// request headers.
    pub fn connect_with(
        addr: SocketAddr,
        path: &str,
        extra_headers: &[(&str, &str)],
    ) -> io::Result<RawClient> {
        let stream = connect_tcp(addr)?;
        let mut client = RawClient::from_stream(stream);
        let key = random_key();
        let request = upgrade_request(&addr.to_string(), path, &key, extra_headers);
        client.send(request.as_bytes())?;
        let response = client.read_http_head()?;
        if response.status != 101 {
            return Err(invalid(format!(
                "handshake: expected status 101, got {}\n{}",
                response.status, response.head
            )));
        }
        let expected = accept_key(&key);
        match response.header("sec-websocket-accept") {
            Some(v) if v == expected => {}
            other => {
                return Err(invalid(format!(
                    "handshake: Sec-WebSocket-Accept should be {expected:?}, got {other:?}\n{}",
                    response.head
                )))
            }
        }
        let upgrade_ok = response
            .header("upgrade")
            .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
        let connection_ok = response.header("connection").is_some_and(|v| {
            v.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
        });
        if !upgrade_ok || !connection_ok {
            return Err(invalid(format!(
                "handshake: missing `Upgrade: websocket` / `Connection: Upgrade`\n{}",
                response.head
            )));
        }
        client.response_head = response.head;
        Ok(client)
    }

    /// Wraps an already connected stream (no handshake performed).
    pub fn from_stream(stream: TcpStream) -> RawClient {
        RawClient {
            stream,
            buf: vec![0; 256 * 1024],
            start: 0,
            end: 0,
            response_head: String::new(),
            partial: None,
            max_frame: DEFAULT_MAX_FRAME,
        }
    }

    /// The underlying stream.
    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    /// Sets the largest frame payload [`RawClient::read_frame`] accepts.
    pub fn set_max_frame(&mut self, max: u64) {
        self.max_frame = max;
    }

    /// A [`BackgroundWriter`] on a clone of this connection's socket.
    pub fn background_writer(&self) -> io::Result<BackgroundWriter> {
        Ok(BackgroundWriter::new(self.stream.try_clone()?))
    }

    /// Writes all of `bytes` at once.
    pub fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)?;
        self.stream.flush()
    }

    /// Writes `bytes` in writes of at most `chunk` bytes, sleeping `pause` after each
    /// one (a tiny pause makes the server likely to see separate reads; with
    /// `TCP_NODELAY` each write already leaves as its own segment).
    pub fn send_chunked(&mut self, bytes: &[u8], chunk: usize, pause: Duration) -> io::Result<()> {
        write_chunked(&mut self.stream, bytes, chunk, pause)
    }

    /// Builds and sends one masked frame.
    pub fn send_frame(&mut self, fin: bool, rsv: u8, opcode: u8, payload: &[u8]) -> io::Result<()> {
        self.send(&frame(fin, rsv, opcode, payload, true))
    }

    /// Sends a masked close frame with `code` and `reason`.
    pub fn send_close(&mut self, code: u16, reason: &[u8]) -> io::Result<()> {
        self.send(&frame(
            true,
            0,
            op::CLOSE,
            &close_payload(code, reason),
            true,
        ))
    }

    /// Half-closes the connection for writing (sends FIN).
    pub fn shutdown_write(&self) -> io::Result<()> {
        self.stream.shutdown(Shutdown::Write)
    }

    /// Number of received bytes buffered but not yet consumed.
    pub fn buffered(&self) -> usize {
        self.end - self.start
    }

    /// Reads one server frame; `Ok(None)` on EOF before its first byte.
    ///
    /// Errors (`InvalidData`) when the frame is masked, uses a non-minimal length, is a
    /// fragmented or longer-than-125 control frame, or is larger than the limit.
    pub fn read_frame(&mut self) -> io::Result<Option<Frame>> {
        if !self.fill(2)? {
            return if self.buffered() == 0 {
                Ok(None)
            } else {
                Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "EOF inside a frame header",
                ))
            };
        }
        let b0 = self.buf[self.start];
        let b1 = self.buf[self.start + 1];
        let masked = b1 & 0x80 != 0;
        let len7 = b1 & 0x7F;
        let header_len =
            2 + match len7 {
                126 => 2,
                127 => 8,
                _ => 0,
            } + if masked { 4 } else { 0 };
        if !self.fill(header_len)? {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "EOF inside a frame header",
            ));
        }
        let h = &self.buf[self.start..self.start + header_len];
        let len = match len7 {
            126 => {
                let l = u64::from(u16::from_be_bytes([h[2], h[3]]));
                if l < 126 {
                    return Err(invalid(format!(
                        "server frame length {l} not minimally encoded"
                    )));
                }
                l
            }
            127 => {
                let l = u64::from_be_bytes([h[2], h[3], h[4], h[5], h[6], h[7], h[8], h[9]]);
                if l >> 63 != 0 {
                    return Err(invalid(
                        "server frame length has the most significant bit set",
                    ));
                }
                if l <= u64::from(u16::MAX) {
                    return Err(invalid(format!(
                        "server frame length {l} not minimally encoded"
                    )));
                }
                l
            }
            l => u64::from(l),
        };
        let fin = b0 & 0x80 != 0;
        let rsv = (b0 >> 4) & 0x7;
        let opcode = b0 & 0xF;
        if masked {
            return Err(invalid(format!(
                "server sent a masked frame (opcode {opcode}, {len} bytes): RFC 6455 §5.1 forbids it"
            )));
        }
        if op::is_control(opcode) && (len > 125 || !fin) {
            return Err(invalid(format!(
                "server sent a control frame (opcode {opcode}) with fin={fin} and {len} bytes"
            )));
        }
        if len > self.max_frame {
            return Err(invalid(format!(
                "server frame of {len} bytes exceeds the client limit {}",
                self.max_frame
            )));
        }
        self.start += header_len;
        let payload = self.take_exact(len as usize)?;
        Ok(Some(Frame {
            fin,
            rsv,
            opcode,
            payload,
        }))
    }

    /// Reads frames until a complete message, a control frame, or EOF.
    ///
    /// Errors (`InvalidData`) on anything a client must fail the connection for: RSV
    /// bits, reserved opcodes, broken fragmentation, invalid UTF-8 in a text message or
    /// close reason, a one-byte close payload — besides what [`RawClient::read_frame`]
    /// rejects. A reset connection is reported as the `io::Error` it is.
    pub fn read_event(&mut self) -> io::Result<Event> {
        loop {
            let Some(frame) = self.read_frame()? else {
                if self.partial.is_some() {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "EOF inside a fragmented message",
                    ));
                }
                return Ok(Event::Eof);
            };
            if frame.rsv != 0 {
                return Err(invalid(format!(
                    "server frame with RSV bits {}: {frame:?}",
                    frame.rsv
                )));
            }
            match frame.opcode {
                op::CONTINUATION => {
                    let Some((binary, mut payload)) = self.partial.take() else {
                        return Err(invalid(
                            "server sent a continuation frame with no message open",
                        ));
                    };
                    payload.extend_from_slice(&frame.payload);
                    if frame.fin {
                        return finish_message(binary, payload);
                    }
                    self.partial = Some((binary, payload));
                }
                op::TEXT | op::BINARY => {
                    if self.partial.is_some() {
                        return Err(invalid(
                            "server started a new data message inside a fragmented one",
                        ));
                    }
                    let binary = frame.opcode == op::BINARY;
                    if frame.fin {
                        return finish_message(binary, frame.payload);
                    }
                    self.partial = Some((binary, frame.payload));
                }
                op::PING => return Ok(Event::Ping(frame.payload)),
                op::PONG => return Ok(Event::Pong(frame.payload)),
                op::CLOSE => {
                    let p = frame.payload;
                    return match p.len() {
                        0 => Ok(Event::Close {
                            code: None,
                            reason: Vec::new(),
                        }),
                        1 => Err(invalid("server close frame with a 1-byte payload")),
                        _ => {
                            let reason = p[2..].to_vec();
                            if std::str::from_utf8(&reason).is_err() {
                                return Err(invalid(format!(
                                    "server close reason is not UTF-8: {}",
                                    preview(&reason)
                                )));
                            }
                            Ok(Event::Close {
                                code: Some(u16::from_be_bytes([p[0], p[1]])),
                                reason,
                            })
                        }
                    };
                }
                other => {
                    return Err(invalid(format!(
                        "server frame with reserved opcode {other}"
                    )))
                }
            }
        }
    }

    /// Reads events until a close frame (returned with the events before it) or EOF.
    pub fn read_until_close(&mut self) -> io::Result<(Vec<Event>, Event)> {
        let mut before = Vec::new();
        loop {
            match self.read_event()? {
                e @ (Event::Close { .. } | Event::Eof) => return Ok((before, e)),
                e => before.push(e),
            }
        }
    }

    /// Waits up to `timeout` for the server to close the TCP connection.
    ///
    /// `Ok` when it did (FIN or RST); `Err` when data arrived instead (`InvalidData`,
    /// with a preview) or nothing happened in time (`TimedOut`).
    pub fn wait_for_eof(&mut self, timeout: Duration) -> io::Result<Closed> {
        if self.buffered() > 0 {
            let data = &self.buf[self.start..self.end];
            return Err(invalid(format!(
                "expected EOF, but {} more bytes were already received: {}",
                data.len(),
                preview(data)
            )));
        }
        let deadline = Instant::now() + timeout;
        let mut scratch = [0u8; 4096];
        let result = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "the server did not close the TCP connection within {:.1} s",
                        timeout.as_secs_f64()
                    ),
                ));
            }
            self.stream.set_read_timeout(Some(left))?;
            match self.stream.read(&mut scratch) {
                Ok(0) => break Ok(Closed::Eof),
                Ok(n) => {
                    break Err(invalid(format!(
                        "expected EOF, but received {n} more bytes: {}",
                        preview(&scratch[..n])
                    )))
                }
                Err(e) if is_reset(&e) => break Ok(Closed::Reset),
                Err(e) if e.kind() == io::ErrorKind::Interrupted || is_timeout(&e) => continue,
                Err(e) => break Err(e),
            }
        };
        self.stream.set_read_timeout(Some(IO_TIMEOUT))?;
        result
    }

    /// Whether anything (data or EOF) arrives within `window`, without consuming it.
    ///
    /// Only ever use this for *negative* checks ("the server has not reacted yet"): a
    /// `false` on a slow machine proves nothing, a `true` is always real.
    pub fn readable_within(&mut self, window: Duration) -> io::Result<bool> {
        if self.buffered() > 0 {
            return Ok(true);
        }
        self.stream.set_read_timeout(Some(window))?;
        let mut one = [0u8; 1];
        let result = match self.stream.peek(&mut one) {
            Ok(_) => Ok(true),
            Err(e) if is_timeout(&e) => Ok(false),
            Err(e) if is_reset(&e) => Ok(true),
            Err(e) => Err(e),
        };
        self.stream.set_read_timeout(Some(IO_TIMEOUT))?;
        result
    }

    /// Reads an HTTP response head (through the blank line) from the connection; bytes
    /// after it stay buffered for [`RawClient::read_frame`].
    pub fn read_http_head(&mut self) -> io::Result<HttpResponse> {
        let mut searched: usize = 0;
        loop {
            let data = &self.buf[self.start..self.end];
            if let Some(pos) = find(&data[searched.saturating_sub(3)..], b"\r\n\r\n") {
                let head_len = searched.saturating_sub(3) + pos + 4;
                let head = String::from_utf8_lossy(&data[..head_len]).into_owned();
                self.start += head_len;
                return HttpResponse::parse(head, Vec::new());
            }
            searched = data.len();
            if searched > MAX_HTTP_HEAD {
                return Err(invalid(format!(
                    "HTTP response head longer than {MAX_HTTP_HEAD} bytes"
                )));
            }
            if !self.read_more()? {
                let data = &self.buf[self.start..self.end];
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "connection closed before a complete HTTP response head; got {}",
                        preview(data)
                    ),
                ));
            }
        }
    }

    /// Ensures at least `n` bytes are buffered; `Ok(false)` on EOF first.
    fn fill(&mut self, n: usize) -> io::Result<bool> {
        while self.buffered() < n {
            if !self.read_more()? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// One read into the buffer; `Ok(false)` on EOF.
    fn read_more(&mut self) -> io::Result<bool> {
        if self.end == self.buf.len() {
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            } else {
                let bigger = self.buf.len() * 2;
                self.buf.resize(bigger, 0);
            }
        }
        loop {
            match self.stream.read(&mut self.buf[self.end..]) {
                Ok(0) => return Ok(false),
                Ok(n) => {
                    self.end += n;
                    return Ok(true);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if is_timeout(&e) => {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("no data from the server within {} s", IO_TIMEOUT.as_secs()),
                    ))
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Takes exactly `n` bytes: the buffered ones first, then straight from the socket.
    fn take_exact(&mut self, n: usize) -> io::Result<Vec<u8>> {
        let mut out = vec![0u8; n];
        let have = self.buffered().min(n);
        out[..have].copy_from_slice(&self.buf[self.start..self.start + have]);
        self.start += have;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        let mut filled = have;
        while filled < n {
            match self.stream.read(&mut out[filled..]) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("EOF after {filled} of {n} payload bytes"),
                    ))
                }
                Ok(k) => filled += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if is_timeout(&e) => {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!(
                        "no data from the server within {} s ({filled} of {n} payload bytes read)",
                        IO_TIMEOUT.as_secs()
                    ),
                    ))
                }
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }
}

fn finish_message(binary: bool, payload: Vec<u8>) -> io::Result<Event> {
    if !binary && std::str::from_utf8(&payload).is_err() {
        return Err(invalid(format!(
            "server text message is not valid UTF-8: {}",
            preview(&payload)
        )));
    }
    Ok(Event::Message { binary, payload })
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Opens a TCP connection with [`IO_TIMEOUT`] timeouts and `TCP_NODELAY`.
pub fn connect_tcp(addr: SocketAddr) -> io::Result<TcpStream> {
    let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Like [`connect_tcp`], from the source address `local` (port chosen by the system): on
/// Linux every address of 127.0.0.0/8 is loopback, so a test can be a second host (the
/// server tells peers apart by IP) with `127.0.0.2`.
pub fn connect_tcp_from(local: IpAddr, addr: SocketAddr) -> io::Result<TcpStream> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket
        .bind(&SocketAddr::new(local, 0).into())
        .map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot bind the source address {local}: {e}"),
            )
        })?;
    socket.connect_timeout(&addr.into(), IO_TIMEOUT)?;
    let stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

fn write_chunked(
    stream: &mut TcpStream,
    bytes: &[u8],
    chunk: usize,
    pause: Duration,
) -> io::Result<()> {
    let chunk = if chunk == 0 {
        bytes.len().max(1)
    } else {
        chunk
    };
    for piece in bytes.chunks(chunk) {
        stream.write_all(piece)?;
        if !pause.is_zero() {
            thread::sleep(pause);
        }
    }
    stream.flush()
}

// ---------------------------------------------------------------------------------
// Writing from a thread
// ---------------------------------------------------------------------------------

struct WriteJob {
    bytes: Vec<u8>,
    chunk: usize,
    pause: Duration,
}

/// Writes queued byte strings, in order, on its own thread.
///
/// Use it whenever a test sends more than a socket buffer's worth while the server
/// echoes: reading on the test thread while this one writes cannot deadlock.
/// After the first write error the remaining jobs are skipped and the error is
/// reported by [`BackgroundWriter::wait_idle`].
pub struct BackgroundWriter {
    jobs: Option<mpsc::Sender<WriteJob>>,
    results: mpsc::Receiver<io::Result<()>>,
    pending: usize,
    thread: Option<JoinHandle<()>>,
}

impl BackgroundWriter {
    /// Starts the writer thread on `stream` (usually a `try_clone` of the client's).
    pub fn new(mut stream: TcpStream) -> BackgroundWriter {
        let (job_tx, job_rx) = mpsc::channel::<WriteJob>();
        let (res_tx, res_rx) = mpsc::channel();
        let thread = thread::Builder::new()
            .name("raw-ws-writer".into())
            .spawn(move || {
                let mut failed: Option<(io::ErrorKind, String)> = None;
                for job in job_rx {
                    let result = match &failed {
                        Some((kind, msg)) => Err(io::Error::new(
                            *kind,
                            format!("skipped after an earlier write error: {msg}"),
                        )),
                        None => write_chunked(&mut stream, &job.bytes, job.chunk, job.pause)
                            .inspect_err(|e| failed = Some((e.kind(), e.to_string()))),
                    };
                    drop(job);
                    if res_tx.send(result).is_err() {
                        break;
                    }
                }
            })
            .expect("spawn the writer thread");
        BackgroundWriter {
            jobs: Some(job_tx),
            results: res_rx,
            pending: 0,
            thread: Some(thread),
        }
    }

    /// Queues `bytes` to be written in one go.
    pub fn send(&mut self, bytes: Vec<u8>) {
        self.send_chunked(bytes, 0, Duration::ZERO);
    }

    /// Queues `bytes` to be written in writes of `chunk` bytes (0: all at once),
    /// sleeping `pause` after each.
    pub fn send_chunked(&mut self, bytes: Vec<u8>, chunk: usize, pause: Duration) {
        if let Some(jobs) = &self.jobs {
            if jobs
                .send(WriteJob {
                    bytes,
                    chunk,
                    pause,
                })
                .is_ok()
            {
                self.pending += 1;
            }
        }
    }

    /// Waits until every queued job is written; returns the first error, if any.
    pub fn wait_idle(&mut self) -> io::Result<()> {
        let mut first = Ok(());
        while self.pending > 0 {
            let result = self
                .results
                .recv()
                .unwrap_or_else(|_| Err(io::Error::other("the writer thread ended unexpectedly")));
            self.pending -= 1;
            if first.is_ok() {
                first = result;
            }
        }
        first
    }
}

impl Drop for BackgroundWriter {
    fn drop(&mut self) {
        self.jobs = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

// ---------------------------------------------------------------------------------
// Plain HTTP (malformed handshakes)
// ---------------------------------------------------------------------------------

/// A parsed HTTP response head.
#[derive(Clone, Debug)]
pub struct HttpResponse {
    /// The status code.
    pub status: u16,
    /// The whole head, status line through the blank line.
    pub head: String,
    /// Header fields in order (names as sent).
    pub headers: Vec<(String, String)>,
    /// Bytes read after the head (start of a body or of frames).
    pub rest: Vec<u8>,
}

impl HttpResponse {
    fn parse(head: String, rest: Vec<u8>) -> io::Result<HttpResponse> {
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let mut parts = status_line.splitn(3, ' ');
        let version = parts.next().unwrap_or_default();
        let status = parts.next().and_then(|s| s.parse::<u16>().ok());
        let status = match status {
            Some(s) if version.starts_with("HTTP/1.") => s,
            _ => {
                return Err(invalid(format!(
                    "malformed HTTP status line {status_line:?}"
                )))
            }
        };
        let headers = lines
            .filter(|l| !l.is_empty())
            .filter_map(|l| {
                let (name, value) = l.split_once(':')?;
                Some((name.trim().to_string(), value.trim().to_string()))
            })
            .collect();
        Ok(HttpResponse {
            status,
            head,
            headers,
            rest,
        })
    }

    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Connects to `addr`, writes `request` verbatim, and reads the response head.
///
/// Returns the response and the still-open stream (to read a body or check for EOF).
/// `UnexpectedEof` when the server closed without a complete head.
pub fn http_request(addr: SocketAddr, request: &[u8]) -> io::Result<(HttpResponse, TcpStream)> {
    http_request_on(connect_tcp(addr)?, request)
}

/// Like [`http_request`], on a stream the caller connected (e.g. from another source
/// address, see [`connect_tcp_from`]).
pub fn http_request_on(stream: TcpStream, request: &[u8]) -> io::Result<(HttpResponse, TcpStream)> {
    let mut client = RawClient::from_stream(stream);
    client.send(request)?;
    let mut response = client.read_http_head()?;
    response.rest = client.buf[client.start..client.end].to_vec();
    Ok((response, client.stream))
}

/// Reads from `stream` until EOF (or reset), at most `limit` bytes or `timeout`.
pub fn read_to_eof(stream: &mut TcpStream, limit: usize, timeout: Duration) -> io::Result<Vec<u8>> {
    let deadline = Instant::now() + timeout;
    let mut out = Vec::new();
    let mut scratch = [0u8; 8192];
    while out.len() < limit {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "no EOF in time"));
        }
        stream.set_read_timeout(Some(left))?;
        match stream.read(&mut scratch) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&scratch[..n]),
            Err(e) if is_reset(&e) => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted || is_timeout(&e) => continue,
            Err(e) => return Err(e),
        }
    }
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_encodings_are_minimal() {
        assert_eq!(frame_header(true, 0, op::TEXT, 0, None), vec![0x81, 0x00]);
        assert_eq!(frame_header(true, 0, op::TEXT, 125, None), vec![0x81, 125]);
        assert_eq!(
            frame_header(false, 4, op::BINARY, 126, None),
            vec![0x42, 126, 0, 126]
        );
        assert_eq!(
            frame_header(true, 0, op::BINARY, 65536, Some([1, 2, 3, 4])),
            vec![0x82, 0xFF, 0, 0, 0, 0, 0, 1, 0, 0, 1, 2, 3, 4]
        );
    }

    #[test]
    fn masking_round_trips_at_any_offset() {
        let data: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
        let key = [0x12, 0x34, 0x56, 0x78];
        let mut whole = data.clone();
        apply_mask(&mut whole, key, 0);
        for (i, b) in whole.iter().enumerate() {
            assert_eq!(*b, data[i] ^ key[i % 4]);
        }
        let mut split = data.clone();
        let (a, b) = split.split_at_mut(13);
        apply_mask(a, key, 0);
        apply_mask(b, key, 13);
        assert_eq!(split, whole);
    }

    #[test]
    fn accept_key_matches_rfc_example() {
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }
}

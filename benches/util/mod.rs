//! Inputs shared by the benches: a browser's upgrade request, a client frame encoder that does
//! not go through the crate (so a bug there cannot hide in the inputs), and sample text.
//!
//! Each bench uses a part of this module.
#![allow(dead_code)]

/// A Chrome upgrade request as sent on the wire: 12 headers, 520 bytes.
pub const REQUEST: &[u8] = b"GET /chat?room=lobby HTTP/1.1\r\n\
Host: example.com:8080\r\n\
Connection: Upgrade\r\n\
Pragma: no-cache\r\n\
Cache-Control: no-cache\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36\r\n\
Upgrade: websocket\r\n\
Origin: https://example.com\r\n\
Sec-WebSocket-Version: 13\r\n\
Accept-Encoding: gzip, deflate, br, zstd\r\n\
Accept-Language: en-US,en;q=0.9\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\
\r\n";

/// The masking key of every client frame built here (the RFC 6455 §5.7 example's).
pub const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// Text opcode.
pub const TEXT: u8 = 0x1;
/// Binary opcode.
pub const BINARY: u8 = 0x2;
/// Continuation opcode.
pub const CONTINUATION: u8 = 0x0;

/// Appends a masked frame, as a client sends it, written straight from RFC 6455 §5.2.
pub fn push_client_frame(out: &mut Vec<u8>, fin: bool, opcode: u8, payload: &[u8]) {
    out.extend_from_slice(&emberws::testing::masked_frame(fin, opcode, payload, KEY));
}

/// One masked, final frame.
pub fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 14);
    push_client_frame(&mut out, true, opcode, payload);
    out
}

/// `len` bytes of ASCII prose.
pub fn ascii(len: usize) -> Vec<u8> {
    const PROSE: &[u8] =
        b"The quick brown fox jumps over the lazy dog; pack my box with five dozen jugs. ";
    PROSE.iter().copied().cycle().take(len).collect()
}

/// `len` bytes of UTF-8 mixing 1- to 4-byte characters (about half the bytes are in
/// multibyte ones), padded with spaces to exactly `len`.
pub fn mixed(len: usize) -> Vec<u8> {
    const MIX: &str = "Grüße aus Köln, 世界の皆さん! Привет 🙂 ñandú — ça va? ";
    let mut out = String::with_capacity(len);
    for c in MIX.chars().cycle() {
        if out.len() + c.len_utf8() > len {
            break;
        }
        out.push(c);
    }
    while out.len() < len {
        out.push(' ');
    }
    out.into_bytes()
}

/// A socket stand-in for tungstenite, endless: each read returns the next bytes of `data`,
/// starting over after its end (one read never spans two copies); writes are dropped.
///
/// A `WebSocket` over it is made once and read from in a loop, so what is timed is its steady
/// state (a fresh one page-faults its 128 KiB read buffer in on the first read).
pub struct Replay {
    data: Vec<u8>,
    pos: usize,
}

impl Replay {
    /// Replays `data` for ever.
    pub fn new(data: &[u8]) -> Self {
        Replay {
            data: data.to_vec(),
            pos: 0,
        }
    }
}

impl std::io::Read for Replay {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.pos == self.data.len() {
            self.pos = 0;
        }
        let n = buf.len().min(self.data.len() - self.pos);
        buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

impl std::io::Write for Replay {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

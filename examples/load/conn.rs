//! One client connection: its socket (with a rustls client connection over it for `wss://`),
//! its read buffer, and its output (control bytes and a pre-built, pre-masked frame sent again
//! and again).

use std::io::{self, Write};

use mio::net::TcpStream;
use rustls::ClientConnection;

use crate::frame::{op, push_masked};
use crate::handshake::KEY_LEN;
use crate::reader::Reader;

/// Where a connection is, in the browser's readyState terms (plus "not started").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Idle,
    /// TCP connect in progress.
    Connecting,
    /// TCP connected: the TLS handshake (`wss://`) and the upgrade request, waiting for `101`.
    Handshaking,
    Open,
    /// A close frame was sent or received; waiting for the other one and the server's FIN.
    Closing,
    Closed,
}

pub struct Conn {
    pub stream: Option<TcpStream>,
    /// `wss://`: the TLS session between `stream` and `rd`/`wr` (boxed: rustls's state is
    /// large, and plain runs should not carry its room).
    pub tls: Option<Box<ClientConnection>>,
    pub state: State,
    pub rd: Reader,
    pub wr: Writer,
    pub key: [u8; KEY_LEN],
    /// When the TCP connect started (ns on the run's clock).
    pub since: u64,
    pub close_sent: bool,
    pub close_received: bool,
}

impl Conn {
    pub fn new(read_capacity: usize, mask: [u8; 4], key: [u8; KEY_LEN]) -> Self {
        Self {
            stream: None,
            tls: None,
            state: State::Idle,
            rd: Reader::new(read_capacity),
            wr: Writer::new(mask),
            key,
            since: 0,
            close_sent: false,
            close_received: false,
        }
    }

    /// True while the connection can still send and receive messages.
    pub fn is_open(&self) -> bool {
        self.state == State::Open
    }
}

/// A frame repeated from a batch of back-to-back copies, so one `write` can send many.
struct Repeat {
    batch: Box<[u8]>,
    frame_len: usize,
    copies: usize,
    /// Frames still to send, counting a partly written one.
    owed: u64,
    /// Bytes of the current frame already written.
    cur: usize,
    /// Frames written whole so far.
    sent: u64,
}

/// A connection's output: control and one-off bytes (`ctrl`) and the repeated frame, never
/// interleaved inside a frame.
pub struct Writer {
    ctrl: Vec<u8>,
    ctrl_pos: usize,
    mask: [u8; 4],
    repeat: Option<Repeat>,
}

impl Writer {
    fn new(mask: [u8; 4]) -> Self {
        Self {
            ctrl: Vec::with_capacity(256),
            ctrl_pos: 0,
            mask,
            repeat: None,
        }
    }

    /// This connection's mask key (one per connection, so frames can be masked once).
    pub fn mask(&self) -> [u8; 4] {
        self.mask
    }

    /// Queues one frame, masked with this connection's key.
    pub fn push_frame(&mut self, opcode: u8, payload: &[u8]) {
        push_masked(&mut self.ctrl, opcode, payload, self.mask);
    }

    /// Queues bytes that are already a masked frame; returns where they start, for patching.
    pub fn push_raw(&mut self, frame: &[u8]) -> usize {
        let at = self.ctrl.len();
        self.ctrl.extend_from_slice(frame);
        at
    }

    /// The queued bytes from `at`, to patch a frame just pushed with `push_raw`.
    pub fn raw_mut(&mut self, at: usize) -> &mut [u8] {
        &mut self.ctrl[at..]
    }

    /// Queues a close frame carrying `code` (none: an empty close, RFC 6455 §5.5.1).
    pub fn push_close(&mut self, code: Option<u16>) {
        match code {
            Some(code) => self.push_frame(op::CLOSE, &code.to_be_bytes()),
            None => self.push_frame(op::CLOSE, &[]),
        }
    }

    /// Sets the frame that `send_repeat` sends: `frame` is complete and already masked.
    pub fn set_repeat(&mut self, frame: &[u8], copies: usize) {
        let copies = copies.max(1);
        let batch: Vec<u8> = frame
            .iter()
            .copied()
            .cycle()
            .take(frame.len() * copies)
            .collect();
        self.repeat = Some(Repeat {
            batch: batch.into_boxed_slice(),
            frame_len: frame.len(),
            copies,
            owed: 0,
            cur: 0,
            sent: 0,
        });
    }

    /// Owes `n` more copies of the repeated frame.
    pub fn send_repeat(&mut self, n: u64) {
        if let Some(r) = &mut self.repeat {
            r.owed += n;
        }
    }

    /// Owes no more copies than it takes to finish the one partly written, so the stream ends
    /// on a frame boundary.
    pub fn stop_repeat(&mut self) {
        if let Some(r) = &mut self.repeat {
            r.owed = u64::from(r.cur > 0).min(r.owed);
        }
    }

    /// Copies of the repeated frame written whole so far.
    pub fn repeats_sent(&self) -> u64 {
        self.repeat.as_ref().map_or(0, |r| r.sent)
    }

    /// True if bytes are waiting to be written.
    pub fn has_pending(&self) -> bool {
        self.ctrl_pos < self.ctrl.len() || self.repeat.as_ref().is_some_and(|r| r.owed > 0)
    }

    /// Writes until everything is sent or the socket is full (a short write or `WouldBlock`).
    ///
    /// # Errors
    /// A write error other than `WouldBlock`; the connection is then broken.
    pub fn flush(&mut self, w: &mut impl Write) -> io::Result<()> {
        loop {
            let mid_frame = self.repeat.as_ref().is_some_and(|r| r.cur > 0);
            if self.ctrl_pos < self.ctrl.len() && !mid_frame {
                let want = self.ctrl.len() - self.ctrl_pos;
                let Some(n) = write_some(w, &self.ctrl[self.ctrl_pos..])? else {
                    return Ok(());
                };
                self.ctrl_pos += n;
                if self.ctrl_pos == self.ctrl.len() {
                    self.ctrl.clear();
                    self.ctrl_pos = 0;
                }
                if n < want {
                    return Ok(()); // the send buffer is full (epoll(7): no need to see EAGAIN)
                }
                continue;
            }
            let Some(r) = &mut self.repeat else {
                return Ok(());
            };
            if r.owed == 0 {
                return Ok(());
            }
            // Bounded by `copies`, a usize. With control bytes waiting, stop at the end of the
            // current frame so a pong is not held back behind a whole batch.
            let frames = r.owed.min(r.copies as u64) as usize;
            let ctrl_waiting = self.ctrl_pos < self.ctrl.len();
            let end = if ctrl_waiting {
                r.frame_len
            } else {
                frames * r.frame_len
            };
            let want = end - r.cur;
            let Some(n) = write_some(w, &r.batch[r.cur..end])? else {
                return Ok(());
            };
            let done = r.cur + n;
            let whole = (done / r.frame_len) as u64;
            r.owed -= whole;
            r.sent += whole;
            r.cur = done % r.frame_len;
            if n < want {
                return Ok(());
            }
        }
    }
}

/// One `write`, retried on `Interrupted`; `None` on `WouldBlock`.
fn write_some(w: &mut impl Write, buf: &[u8]) -> io::Result<Option<usize>> {
    loop {
        match w.write(buf) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => return Ok(Some(n)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A socket that takes at most `room` bytes per write, then says `WouldBlock` once.
    struct Trickle {
        got: Vec<u8>,
        room: usize,
        blocked: bool,
    }

    impl Write for Trickle {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.blocked {
                self.blocked = false;
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = buf.len().min(self.room);
            self.got.extend_from_slice(&buf[..n]);
            self.blocked = true;
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn control_frames_never_split_a_repeated_frame() {
        let mut wr = Writer::new([9, 8, 7, 6]);
        let mut frame = Vec::new();
        push_masked(&mut frame, op::BINARY, &[0xAB; 10], [9, 8, 7, 6]);
        wr.set_repeat(&frame, 3);
        wr.send_repeat(5);
        let mut sock = Trickle {
            got: Vec::new(),
            room: 7,
            blocked: false,
        };
        let mut pong = Vec::new();
        push_masked(&mut pong, op::PONG, b"hi", [9, 8, 7, 6]);
        let mut rounds = 0;
        while wr.has_pending() {
            wr.flush(&mut sock).unwrap();
            if rounds == 2 {
                wr.push_frame(op::PONG, b"hi"); // arrives mid-frame
            }
            rounds += 1;
            assert!(rounds < 1000);
        }
        // The stream is whole frames: 5 repeats with the pong after the one it interrupted.
        let mut expected = Vec::new();
        for i in 0..5 {
            expected.extend_from_slice(&frame);
            if i == 0 {
                expected.extend_from_slice(&pong);
            }
        }
        assert_eq!(sock.got, expected);
    }

    #[test]
    fn a_stopped_repeat_ends_on_a_frame_boundary_and_counts_whole_frames() {
        let key = [1, 2, 3, 4];
        let mut wr = Writer::new(key);
        let mut frame = Vec::new();
        push_masked(&mut frame, op::PING, b"0123456789", key); // 16 bytes
        wr.set_repeat(&frame, 4);
        wr.send_repeat(u64::MAX / 2);
        let mut sock = Trickle {
            got: Vec::new(),
            room: 40,
            blocked: false,
        };
        wr.flush(&mut sock).unwrap(); // two frames and half of the third
        assert_eq!(wr.repeats_sent(), 2);
        wr.stop_repeat();
        while wr.has_pending() {
            wr.flush(&mut sock).unwrap();
        }
        assert_eq!(wr.repeats_sent(), 3);
        assert_eq!(sock.got, frame.repeat(3));
        wr.stop_repeat(); // on a boundary: owes nothing more
        assert!(!wr.has_pending());
    }
}

//! One connection's fixed read buffer, and the server frames parsed out of it in place.
//!
//! In: bytes the caller read into `spare()`. Out: `Event`s whose payloads borrow the buffer.
//! Never: grows the buffer, copies a complete single-frame message, or touches a socket.
//!
//! A frame too large for the buffer is not refused: its first `HEAD_LEN` bytes are kept and the
//! rest is counted and discarded as it arrives, so a peer cannot make this allocate.

use crate::frame::{op, parse_header, FrameError};

/// Bytes kept of a message that arrives fragmented or larger than the buffer: enough for the
/// sequence number at the start of a fan-out message.
pub const HEAD_LEN: usize = 256;

/// What a drained buffer held.
#[derive(Debug, PartialEq, Eq)]
pub enum Event<'b> {
    /// A complete data message. `head` is its whole payload when it arrived as one frame that
    /// fit in the buffer, else its first `HEAD_LEN` bytes at most; `len` is its full length.
    Message {
        text: bool,
        head: &'b [u8],
        len: u64,
    },
    Ping(&'b [u8]),
    Pong,
    /// A close frame; `code` is absent when its payload was empty (RFC 6455 §5.5.1).
    Close {
        code: Option<u16>,
    },
}

/// A fragmented (or oversized) message in progress.
#[derive(Clone, Copy)]
struct Partial {
    text: bool,
    len: u64,
}

pub struct Reader {
    buf: Box<[u8]>,
    start: usize,
    end: usize,
    /// Bytes still to discard of an oversized frame, and whether that frame is final.
    skip: u64,
    skip_fin: bool,
    msg: Option<Partial>,
    head: [u8; HEAD_LEN],
    head_len: usize,
}

impl Reader {
    /// A reader with a `capacity`-byte buffer (at least 256, so any control frame fits).
    pub fn new(capacity: usize) -> Self {
        Self {
            buf: vec![0; capacity.max(256)].into_boxed_slice(),
            start: 0,
            end: 0,
            skip: 0,
            skip_fin: false,
            msg: None,
            head: [0; HEAD_LEN],
            head_len: 0,
        }
    }

    /// Where the next read goes. Never empty after `drain` (which compacts).
    pub fn spare(&mut self) -> &mut [u8] {
        &mut self.buf[self.end..]
    }

    /// Records that `n` bytes were read into `spare()`.
    pub fn filled(&mut self, n: usize) {
        self.end = (self.end + n).min(self.buf.len());
    }

    /// The bytes read and not yet consumed (the HTTP response before the upgrade completes).
    pub fn pending(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    /// Drops the first `n` pending bytes (an HTTP response head).
    pub fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.end);
    }

    /// True if the pending bytes fill the whole buffer (an HTTP head that will not fit).
    pub fn is_full(&self) -> bool {
        self.start == 0 && self.end == self.buf.len()
    }

    /// Parses every complete frame in the buffer, hands each event to `emit`, then moves the
    /// incomplete tail to the front.
    ///
    /// # Errors
    /// The first rule the server broke; the connection should then be dropped.
    pub fn drain(&mut self, mut emit: impl FnMut(Event<'_>)) -> Result<(), FrameError> {
        let result = self.drain_frames(&mut emit);
        self.compact();
        result
    }

    fn drain_frames(&mut self, emit: &mut impl FnMut(Event<'_>)) -> Result<(), FrameError> {
        loop {
            if self.skip > 0 {
                let avail = self.end - self.start;
                // Bounded by `avail`, a usize, so the cast cannot truncate.
                let n = self.skip.min(avail as u64) as usize;
                self.keep_head(self.start, n);
                self.start += n;
                self.skip -= n as u64;
                if self.skip > 0 {
                    return Ok(());
                }
                if self.skip_fin {
                    self.finish_message(emit);
                }
                continue;
            }
            let Some((header, header_len)) = parse_header(&self.buf[self.start..self.end])? else {
                return Ok(());
            };
            let avail = (self.end - self.start) as u64;
            let total = header_len as u64 + header.len;
            if avail < total {
                if total <= self.buf.len() as u64 {
                    return Ok(()); // fits once the rest arrives
                }
                // Too large for the buffer: keep its head, discard the rest as it arrives.
                // Control frames are at most 127 bytes, so this is a data frame.
                self.begin_data(header.opcode)?;
                if let Some(m) = &mut self.msg {
                    m.len += header.len;
                }
                self.start += header_len;
                self.skip = header.len;
                self.skip_fin = header.fin;
                continue;
            }
            let from = self.start + header_len;
            // `total <= avail`, a usize, so the cast cannot truncate.
            let to = self.start + total as usize;
            self.start = to;
            match header.opcode {
                op::PING => emit(Event::Ping(&self.buf[from..to])),
                op::PONG => emit(Event::Pong),
                op::CLOSE => {
                    let code = match self.buf[from..to] {
                        [hi, lo, ..] => Some(u16::from_be_bytes([hi, lo])),
                        _ => None,
                    };
                    emit(Event::Close { code });
                }
                opcode => {
                    if self.msg.is_none() && opcode != op::CONTINUATION && header.fin {
                        // The common case: a whole message in one frame, handed over in place.
                        emit(Event::Message {
                            text: opcode == op::TEXT,
                            head: &self.buf[from..to],
                            len: header.len,
                        });
                        continue;
                    }
                    self.begin_data(opcode)?;
                    if let Some(m) = &mut self.msg {
                        m.len += header.len;
                    }
                    self.keep_head(from, to - from);
                    if header.fin {
                        self.finish_message(emit);
                    }
                }
            }
        }
    }

    /// Checks fragmentation order (RFC 6455 §5.4) and opens a message for a first frame.
    fn begin_data(&mut self, opcode: u8) -> Result<(), FrameError> {
        match (opcode, self.msg.is_some()) {
            (op::CONTINUATION, false) => Err(FrameError::ContinuationWithoutStart),
            (op::CONTINUATION, true) => Ok(()),
            (_, true) => Err(FrameError::DataFrameInsideMessage),
            (opcode, false) => {
                self.msg = Some(Partial {
                    text: opcode == op::TEXT,
                    len: 0,
                });
                self.head_len = 0;
                Ok(())
            }
        }
    }

    /// Copies up to the free room of `head` from `buf[at..at + n]`.
    fn keep_head(&mut self, at: usize, n: usize) {
        let take = n.min(HEAD_LEN - self.head_len);
        self.head[self.head_len..self.head_len + take].copy_from_slice(&self.buf[at..at + take]);
        self.head_len += take;
    }

    fn finish_message(&mut self, emit: &mut impl FnMut(Event<'_>)) {
        if let Some(m) = self.msg.take() {
            emit(Event::Message {
                text: m.text,
                head: &self.head[..self.head_len],
                len: m.len,
            });
        }
    }

    fn compact(&mut self) {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An owned copy of an event, to compare across feeds.
    #[derive(Debug, PartialEq, Eq)]
    enum Owned {
        Message { text: bool, head: Vec<u8>, len: u64 },
        Ping(Vec<u8>),
        Pong,
        Close(Option<u16>),
    }

    fn frame(first: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![first];
        match payload.len() {
            n @ 0..=125 => f.push(n as u8),
            n @ 126..=0xFFFF => {
                f.push(126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                f.push(127);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        f.extend_from_slice(payload);
        f
    }

    /// Feeds `chunks` one after the other through a reader of `capacity` bytes.
    fn feed(capacity: usize, chunks: &[&[u8]]) -> Result<Vec<Owned>, FrameError> {
        let mut r = Reader::new(capacity);
        let mut out = Vec::new();
        for chunk in chunks {
            let mut rest = *chunk;
            while !rest.is_empty() {
                let spare = r.spare();
                assert!(
                    !spare.is_empty(),
                    "the reader must always have room after a drain"
                );
                let n = spare.len().min(rest.len());
                spare[..n].copy_from_slice(&rest[..n]);
                r.filled(n);
                rest = &rest[n..];
                r.drain(|ev| {
                    out.push(match ev {
                        Event::Message { text, head, len } => Owned::Message {
                            text,
                            head: head.to_vec(),
                            len,
                        },
                        Event::Ping(p) => Owned::Ping(p.to_vec()),
                        Event::Pong => Owned::Pong,
                        Event::Close { code } => Owned::Close(code),
                    })
                })?;
            }
        }
        Ok(out)
    }

    /// A stream exercising every path: single frames, a fragmented message with a ping in the
    /// middle, a frame larger than the buffer, a close.
    fn conversation() -> (Vec<u8>, Vec<Owned>) {
        let big: Vec<u8> = (0..1000u32).map(|i| i as u8).collect();
        let mut s = Vec::new();
        s.extend(frame(0x81, b"hello"));
        s.extend(frame(0x82, &[]));
        s.extend(frame(0x01, b"frag"));
        s.extend(frame(0x89, b"p!"));
        s.extend(frame(0x80, b"ment"));
        s.extend(frame(0x8A, b""));
        s.extend(frame(0x82, &big));
        s.extend(frame(0x88, &1000u16.to_be_bytes()));
        let expected = vec![
            Owned::Message {
                text: true,
                head: b"hello".to_vec(),
                len: 5,
            },
            Owned::Message {
                text: false,
                head: vec![],
                len: 0,
            },
            Owned::Ping(b"p!".to_vec()),
            Owned::Message {
                text: true,
                head: b"fragment".to_vec(),
                len: 8,
            },
            Owned::Pong,
            Owned::Message {
                text: false,
                head: big[..HEAD_LEN].to_vec(),
                len: 1000,
            },
            Owned::Close(Some(1000)),
        ];
        (s, expected)
    }

    #[test]
    fn frames_parse_identically_at_every_split_point() {
        let (stream, expected) = conversation();
        assert_eq!(feed(512, &[&stream]).unwrap(), expected);
        for cut in 0..=stream.len() {
            let (a, b) = stream.split_at(cut);
            assert_eq!(feed(512, &[a, b]).unwrap(), expected, "split at {cut}");
        }
    }

    #[test]
    fn frames_parse_identically_byte_by_byte() {
        let (stream, expected) = conversation();
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(feed(512, &bytes).unwrap(), expected);
    }

    #[test]
    fn a_message_that_fits_is_handed_over_whole() {
        let payload = vec![b'x'; 2000];
        let got = feed(4096, &[&frame(0x81, &payload)]).unwrap();
        assert_eq!(
            got,
            vec![Owned::Message {
                text: true,
                head: payload,
                len: 2000
            }]
        );
    }

    #[test]
    fn fragmentation_errors_are_reported() {
        assert_eq!(
            feed(512, &[&frame(0x80, b"x")]),
            Err(FrameError::ContinuationWithoutStart)
        );
        let mut s = frame(0x01, b"a");
        s.extend(frame(0x81, b"b"));
        assert_eq!(feed(512, &[&s]), Err(FrameError::DataFrameInsideMessage));
    }
}

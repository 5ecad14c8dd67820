//! The receive path built from `emberws::proto` alone, driven the way a connection drives it,
//! and the reference answers the checks compare against.
//!
//! Used by `tests/properties.rs` and by the fuzz targets (`fuzz/src/lib.rs` includes this file),
//! so the property tests and the fuzzers check the same composition of the public API:
//! header bytes kept across reads (at most 14), [`FrameHeader::parse`] as a server,
//! [`Assembler::on_header`] before any payload is buffered, [`unmask`] at the payload offset,
//! [`Assembler::on_data`] (UTF-8 of text) and [`Assembler::on_frame_end`], and
//! [`close::parse_payload`] for close frames.
#![allow(dead_code)]

use emberws::proto::close;
use emberws::proto::frame::{FrameHeader, OpCode};
use emberws::proto::mask::unmask;
use emberws::proto::message::{Assembler, DataKind, FrameKind};
use emberws::proto::{ProtocolError, Role, Status};

/// What the pipeline hands on, in wire order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Out {
    /// A whole data message (text is valid UTF-8).
    Message(DataKind, Vec<u8>),
    /// A ping and its payload.
    Ping(Vec<u8>),
    /// A pong and its payload.
    Pong(Vec<u8>),
    /// A close frame: its code and reason, or `None` for an empty payload.
    Close(Option<(u16, String)>),
}

#[derive(Clone, Copy, Debug)]
enum Rx {
    Header,
    Payload {
        header: FrameHeader,
        kind: FrameKind,
        done: u64,
    },
}

/// The frames → messages pipeline of one connection (server role: client frames are masked).
///
/// Like a connection, it fails for good: once [`Decoder::feed`] returned an error it returns
/// the same error for every later call. The proto pieces leave that to their caller (after an
/// error a `Validator`'s state is unspecified), so this is the driver's rule, not theirs.
#[derive(Debug)]
pub struct Decoder {
    max_message_size: u64,
    asm: Assembler,
    rx: Rx,
    head: [u8; FrameHeader::MAX_LEN],
    head_len: usize,
    message: Vec<u8>,
    control: Vec<u8>,
    failed: Option<ProtocolError>,
    high_water: usize,
}

impl Decoder {
    /// A pipeline that refuses messages over `max_message_size` bytes.
    pub fn new(max_message_size: u64) -> Self {
        Decoder {
            max_message_size,
            asm: Assembler::new(),
            rx: Rx::Header,
            head: [0; FrameHeader::MAX_LEN],
            head_len: 0,
            message: Vec::new(),
            control: Vec::new(),
            failed: None,
            high_water: 0,
        }
    }

    /// Payload bytes of the message in progress held right now.
    pub fn buffered(&self) -> usize {
        self.message.len()
    }

    /// The most message bytes ever held at once (only payload the Assembler accepted is held).
    pub fn high_water(&self) -> usize {
        self.high_water
    }

    /// True while a frame header is split across reads or a frame's payload is unfinished.
    pub fn mid_frame(&self) -> bool {
        self.head_len > 0 || matches!(self.rx, Rx::Payload { .. })
    }

    /// The first error, once there was one.
    pub fn failed(&self) -> Option<ProtocolError> {
        self.failed
    }

    /// Consumes the next bytes read, appending what they complete to `out`.
    ///
    /// # Errors
    /// The first rule the stream broke; from then on, that error on every call.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<Out>) -> Result<(), ProtocolError> {
        if let Some(e) = self.failed {
            return Err(e);
        }
        let result = self.run(input, out);
        if let Err(e) = result {
            self.failed = Some(e);
        }
        result
    }

    fn run(&mut self, mut input: &[u8], out: &mut Vec<Out>) -> Result<(), ProtocolError> {
        loop {
            match self.rx {
                Rx::Header => {
                    if input.is_empty() {
                        return Ok(());
                    }
                    // Never copy past the longest header: what follows it is payload.
                    let n = input.len().min(FrameHeader::MAX_LEN - self.head_len);
                    let have = self.head_len + n;
                    self.head[self.head_len..have].copy_from_slice(&input[..n]);
                    match FrameHeader::parse(&self.head[..have], Role::Server)? {
                        Status::Partial => {
                            assert!(have < FrameHeader::MAX_LEN, "Partial with 14 bytes");
                            self.head_len = have;
                            input = &input[n..];
                        }
                        Status::Complete((header, len)) => {
                            assert!(len > self.head_len && len <= have, "header length {len}");
                            input = &input[len - self.head_len..];
                            self.head_len = 0;
                            let kind = self.asm.on_header(&header, self.max_message_size)?;
                            self.rx = Rx::Payload {
                                header,
                                kind,
                                done: 0,
                            };
                        }
                    }
                }
                Rx::Payload { header, kind, done } => {
                    let left = header.payload_len - done;
                    let n = usize::try_from(left).map_or(input.len(), |l| l.min(input.len()));
                    let (piece, rest) = input.split_at(n);
                    input = rest;
                    let key = header.mask.expect("a server parses only masked frames");
                    match kind {
                        FrameKind::Data { .. } => {
                            let start = self.message.len();
                            self.message.extend_from_slice(piece);
                            unmask(&mut self.message[start..], key, done);
                            self.high_water = self.high_water.max(self.message.len());
                            self.asm.on_data(&self.message[start..])?;
                        }
                        FrameKind::Control(_) => {
                            let start = self.control.len();
                            self.control.extend_from_slice(piece);
                            unmask(&mut self.control[start..], key, done);
                        }
                    }
                    let done = done + n as u64;
                    if done < header.payload_len {
                        self.rx = Rx::Payload { header, kind, done };
                        return Ok(());
                    }
                    self.rx = Rx::Header;
                    self.end_frame(&header, kind, out)?;
                }
            }
        }
    }

    fn end_frame(
        &mut self,
        header: &FrameHeader,
        kind: FrameKind,
        out: &mut Vec<Out>,
    ) -> Result<(), ProtocolError> {
        match kind {
            FrameKind::Data { .. } => {
                if let Some(kind) = self.asm.on_frame_end(header.fin)? {
                    out.push(Out::Message(kind, core::mem::take(&mut self.message)));
                }
            }
            FrameKind::Control(op) => {
                let payload = core::mem::take(&mut self.control);
                out.push(match op {
                    OpCode::Ping => Out::Ping(payload),
                    OpCode::Pong => Out::Pong(payload),
                    OpCode::Close => Out::Close(
                        close::parse_payload(&payload)?
                            .map(|(code, reason)| (code.as_u16(), reason.to_owned())),
                    ),
                    other => panic!("{other:?} reported as a control frame"),
                });
            }
        }
        Ok(())
    }
}

/// Feeds `wire` in the pieces that `cuts` (sorted positions) make; returns what came out and
/// the result of the last call.
pub fn run_split(
    wire: &[u8],
    cuts: &[usize],
    max_message_size: u64,
) -> (Vec<Out>, Result<(), ProtocolError>) {
    let mut d = Decoder::new(max_message_size);
    let mut out = Vec::new();
    let mut at = 0;
    let mut result = Ok(());
    for &cut in cuts.iter().chain([&wire.len()]) {
        let cut = cut.clamp(at, wire.len());
        result = d.feed(&wire[at..cut], &mut out);
        at = cut;
        if result.is_err() {
            break;
        }
    }
    (out, result)
}

/// What whole-input validation says a fail-fast UTF-8 validator must report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Utf8Expect {
    /// Valid UTF-8.
    Valid,
    /// A valid prefix that ends inside a character: fine so far, not complete.
    Incomplete,
    /// Invalid: the index of the first byte after which no continuation could be valid, which
    /// is the byte a fail-fast validator must fail on.
    InvalidAt(usize),
}

/// The reference answer for `bytes`, from `std::str::from_utf8` alone.
///
/// std reports where the valid prefix ends (`valid_up_to`) and the length of the invalid
/// sequence there (`error_len`). That sequence is either one byte that starts no character
/// (`80`–`C1`, `F5`–`FF`), the failing byte itself, or the longest prefix of a character that
/// was still possible (`E1 80`, `F4`, `ED`), and then the failing byte is the one after it.
pub fn utf8_expect(bytes: &[u8]) -> Utf8Expect {
    match core::str::from_utf8(bytes) {
        Ok(_) => Utf8Expect::Valid,
        Err(e) => match e.error_len() {
            None => Utf8Expect::Incomplete,
            Some(len) => {
                let start = e.valid_up_to();
                let seq = &bytes[start..start + len];
                let starts_nothing =
                    matches!(core::str::from_utf8(seq), Err(e) if e.error_len().is_some());
                Utf8Expect::InvalidAt(if starts_nothing { start } else { start + len })
            }
        },
    }
}

//! ⑥ Frames → messages: fragmentation rules, interleaved control frames, the size limit and
//! incremental UTF-8 validation of text.
//!
//! - **In:** each frame header as parsed, then its payload in pieces, already unmasked.
//! - **Out:** what the frame is ([`FrameKind`]) and, at a final fragment, the message's kind.
//! - **Never:** stores payload (the caller does, in a buffer it owns) or allocates.

use super::error::ProtocolError;
use super::frame::{FrameHeader, OpCode};
use super::utf8::Validator;

/// The type of a data message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataKind {
    /// UTF-8 text.
    Text,
    /// Arbitrary bytes.
    Binary,
}

/// What a frame is, once its header passed the message rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameKind {
    /// A frame of a data message; `first` for the frame that starts it.
    Data {
        /// The message's type.
        kind: DataKind,
        /// This frame starts the message.
        first: bool,
    },
    /// A close, ping or pong frame, which may come between the fragments of a message.
    Control(OpCode),
}

/// The message state of one connection.
#[derive(Clone, Copy, Debug, Default)]
pub struct Assembler {
    kind: Option<DataKind>,
    len: u64,
    utf8: Validator,
}

impl Assembler {
    /// No message in progress.
    pub fn new() -> Self {
        Self::default()
    }

    /// True while a fragmented message has begun and not ended.
    pub fn in_message(&self) -> bool {
        self.kind.is_some()
    }

    /// Payload bytes announced so far for the message in progress.
    pub fn message_len(&self) -> u64 {
        self.len
    }

    /// Checks a frame header against the fragmentation rules and `max_message_size`, before
    /// any of its payload is buffered.
    ///
    /// # Errors
    /// [`ProtocolError::UnexpectedContinuation`], [`ProtocolError::ExpectedContinuation`],
    /// [`ProtocolError::MessageTooBig`].
    pub fn on_header(
        &mut self,
        header: &FrameHeader,
        max_message_size: u64,
    ) -> Result<FrameKind, ProtocolError> {
        let (kind, first) = match (header.opcode, self.kind) {
            // RFC 6455 §5.4: control frames MAY be injected in the middle of a fragmented
            // message.
            (op, _) if op.is_control() => return Ok(FrameKind::Control(op)),
            // RFC 6455 §5.4: a continuation frame continues a message begun earlier.
            (OpCode::Continuation, None) => return Err(ProtocolError::UnexpectedContinuation),
            (OpCode::Continuation, Some(kind)) => (kind, false),
            // RFC 6455 §5.4: the fragments of one message MUST NOT be interleaved with the
            // fragments of another.
            (_, Some(_)) => return Err(ProtocolError::ExpectedContinuation),
            (OpCode::Text, None) => (DataKind::Text, true),
            (_, None) => (DataKind::Binary, true),
        };
        let len = if first { 0 } else { self.len };
        let len = len.saturating_add(header.payload_len);
        if len > max_message_size {
            return Err(ProtocolError::MessageTooBig);
        }
        if first {
            self.utf8.reset();
        }
        self.kind = Some(kind);
        self.len = len;
        Ok(FrameKind::Data { kind, first })
    }

    /// Takes the next unmasked payload bytes of the current data frame.
    ///
    /// # Errors
    /// [`ProtocolError::InvalidUtf8`] at the piece holding the first byte that makes the text
    /// invalid, before the rest of the message arrives (RFC 6455 §8.1).
    pub fn on_data(&mut self, piece: &[u8]) -> Result<(), ProtocolError> {
        if self.kind == Some(DataKind::Text) {
            self.utf8
                .push(piece)
                .map_err(|_| ProtocolError::InvalidUtf8)?;
        }
        Ok(())
    }

    /// Ends the current data frame: the message's kind if it was the final fragment.
    ///
    /// # Errors
    /// [`ProtocolError::InvalidUtf8`] if text ends inside a character.
    pub fn on_frame_end(&mut self, fin: bool) -> Result<Option<DataKind>, ProtocolError> {
        if !fin {
            return Ok(None);
        }
        let kind = self.kind.take();
        self.len = 0;
        if kind == Some(DataKind::Text) && !self.utf8.is_complete() {
            return Err(ProtocolError::InvalidUtf8);
        }
        Ok(kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hdr(fin: bool, opcode: OpCode, len: u64) -> FrameHeader {
        FrameHeader {
            fin,
            opcode,
            mask: Some([1, 2, 3, 4]),
            payload_len: len,
        }
    }

    #[test]
    fn single_frame_message() {
        let mut a = Assembler::new();
        let k = a.on_header(&hdr(true, OpCode::Text, 5), 10).unwrap();
        assert_eq!(
            k,
            FrameKind::Data {
                kind: DataKind::Text,
                first: true
            }
        );
        a.on_data(b"hello").unwrap();
        assert_eq!(a.on_frame_end(true), Ok(Some(DataKind::Text)));
        assert!(!a.in_message());
    }

    #[test]
    fn fragments_with_interleaved_ping() {
        let mut a = Assembler::new();
        a.on_header(&hdr(false, OpCode::Binary, 3), 10).unwrap();
        assert_eq!(a.on_frame_end(false), Ok(None));
        let ping = a.on_header(&hdr(true, OpCode::Ping, 2), 10).unwrap();
        assert_eq!(ping, FrameKind::Control(OpCode::Ping));
        let k = a
            .on_header(&hdr(true, OpCode::Continuation, 3), 10)
            .unwrap();
        assert_eq!(
            k,
            FrameKind::Data {
                kind: DataKind::Binary,
                first: false
            }
        );
        assert_eq!(a.message_len(), 6);
        assert_eq!(a.on_frame_end(true), Ok(Some(DataKind::Binary)));
    }

    #[test]
    fn rejects_bad_fragmentation() {
        let mut a = Assembler::new();
        assert_eq!(
            a.on_header(&hdr(true, OpCode::Continuation, 1), 10),
            Err(ProtocolError::UnexpectedContinuation)
        );
        a.on_header(&hdr(false, OpCode::Text, 1), 10).unwrap();
        assert_eq!(
            a.on_header(&hdr(true, OpCode::Binary, 1), 10),
            Err(ProtocolError::ExpectedContinuation)
        );
    }

    #[test]
    fn size_is_checked_from_headers_across_fragments() {
        let mut a = Assembler::new();
        a.on_header(&hdr(false, OpCode::Binary, 6), 10).unwrap();
        a.on_header(&hdr(false, OpCode::Continuation, 4), 10)
            .unwrap();
        assert_eq!(
            a.on_header(&hdr(true, OpCode::Continuation, 1), 10),
            Err(ProtocolError::MessageTooBig)
        );
        let mut b = Assembler::new();
        assert_eq!(
            b.on_header(&hdr(true, OpCode::Text, u64::MAX >> 1), 10),
            Err(ProtocolError::MessageTooBig)
        );
    }

    #[test]
    fn utf8_fails_fast_and_at_a_split_character() {
        let mut a = Assembler::new();
        a.on_header(&hdr(false, OpCode::Text, 2), 100).unwrap();
        a.on_data(b"\xce").unwrap();
        a.on_data(b"\xba").unwrap();
        a.on_frame_end(false).unwrap();
        a.on_header(&hdr(true, OpCode::Continuation, 10), 100)
            .unwrap();
        assert_eq!(a.on_data(b"\xed\xa0"), Err(ProtocolError::InvalidUtf8));

        let mut b = Assembler::new();
        b.on_header(&hdr(true, OpCode::Text, 1), 100).unwrap();
        b.on_data(b"\xe2").unwrap();
        assert_eq!(b.on_frame_end(true), Err(ProtocolError::InvalidUtf8));
    }
}

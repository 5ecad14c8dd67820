//! ③ The frame header (RFC 6455 §5.2): parse from 2–14 bytes split anywhere, encode.
//!
//! - **In:** the first bytes of a frame (any prefix, possibly followed by payload) and the
//!   [`Role`] of the parser; or a [`FrameHeader`] and a caller-lent output buffer.
//! - **Out:** `Partial`, a validated header with its length (2..=14), or the first broken
//!   rule as a [`ProtocolError`], reported as soon as the bytes that decide it are present.
//! - **Never:** reads or writes past the given slices, touches the payload, allocates, or
//!   panics; non-minimal length encodings are accepted, not rejected.

use super::error::ProtocolError;
use super::{Role, Status};

/// Named bits of the first two header bytes (RFC 6455 §5.2).
pub mod bits {
    /// Byte 0: the final fragment of a message.
    pub const FIN: u8 = 0x80;
    /// Byte 0: RSV1, RSV2 and RSV3 together.
    pub const RSV: u8 = 0x70;
    /// Byte 0: the opcode nibble.
    pub const OPCODE: u8 = 0x0F;
    /// Byte 1: the payload is masked and a 4-byte masking key follows the length.
    pub const MASK: u8 = 0x80;
    /// Byte 1: the 7-bit payload length (or the 126 / 127 escapes).
    pub const LEN: u8 = 0x7F;
    /// 7-bit length value announcing a 16-bit extended length.
    pub const LEN_16: u8 = 126;
    /// 7-bit length value announcing a 64-bit extended length.
    pub const LEN_64: u8 = 127;
    /// The most significant bit of the first byte of a 64-bit length; it MUST be 0.
    pub const LEN_64_MSB: u8 = 0x80;
    /// The largest payload length a control frame may carry (§5.5).
    pub const MAX_CONTROL_LEN: u8 = 125;
}

/// A frame opcode (§5.2). Reserved opcodes are rejected at parse time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpCode {
    /// 0x0: continues a fragmented message.
    Continuation,
    /// 0x1: a UTF-8 text frame.
    Text,
    /// 0x2: a binary frame.
    Binary,
    /// 0x8: close.
    Close,
    /// 0x9: ping.
    Ping,
    /// 0xA: pong.
    Pong,
}

impl OpCode {
    /// Close, ping and pong.
    pub fn is_control(self) -> bool {
        // RFC 6455 §5.5: control frames are identified by opcodes where the most significant
        // bit of the opcode is 1 (0x8 close, 0x9 ping, 0xA pong).
        matches!(self, OpCode::Close | OpCode::Ping | OpCode::Pong)
    }

    /// The 4-bit value on the wire.
    pub fn as_u8(self) -> u8 {
        match self {
            OpCode::Continuation => 0x0,
            OpCode::Text => 0x1,
            OpCode::Binary => 0x2,
            OpCode::Close => 0x8,
            OpCode::Ping => 0x9,
            OpCode::Pong => 0xA,
        }
    }

    /// The opcode for a 4-bit wire value, or `None` for a reserved or out-of-range value.
    pub fn from_u8(v: u8) -> Option<OpCode> {
        // RFC 6455 §5.2: %x3-7 are reserved for further non-control frames and %xB-F for
        // further control frames.
        match v {
            0x0 => Some(OpCode::Continuation),
            0x1 => Some(OpCode::Text),
            0x2 => Some(OpCode::Binary),
            0x8 => Some(OpCode::Close),
            0x9 => Some(OpCode::Ping),
            0xA => Some(OpCode::Pong),
            _ => None,
        }
    }
}

/// A validated frame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    /// The final fragment of its message.
    pub fin: bool,
    /// The opcode.
    pub opcode: OpCode,
    /// The masking key, present on every client frame.
    pub mask: Option<[u8; 4]>,
    /// The payload length.
    pub payload_len: u64,
}

/// Copies `src` into `dst` at `at`, if it fits (it always does in `encode`).
fn put(dst: &mut [u8], at: usize, src: &[u8]) {
    if let Some(slot) = dst.get_mut(at..at + src.len()) {
        slot.copy_from_slice(src);
    }
}

/// `N` bytes of `buf` starting at `at`, or `None` if they are not all there yet.
fn array_at<const N: usize>(buf: &[u8], at: usize) -> Option<[u8; N]> {
    buf.get(at..at.checked_add(N)?)?.try_into().ok()
}

impl FrameHeader {
    /// The longest header: 2 + 8 (64-bit length) + 4 (mask).
    pub const MAX_LEN: usize = 14;

    /// An unmasked header, as a server sends.
    pub fn new(fin: bool, opcode: OpCode, payload_len: u64) -> Self {
        FrameHeader {
            fin,
            opcode,
            mask: None,
            payload_len,
        }
    }

    /// Parses a header from the start of `buf`. Never panics.
    ///
    /// Returns the header and its length in bytes, or `Partial` if `buf` is shorter than the
    /// header it starts. Bytes after the header (the payload) are ignored.
    ///
    /// Errors are reported as early as the bytes allow: byte 0 alone decides the reserved
    /// bits, the opcode and FIN on a control frame (checked in that order); byte 1 decides the
    /// mask rule for `role`, then the control frame length; byte 2 of a 64-bit length decides
    /// its most significant bit. A non-minimal length encoding (e.g. 5 in 16 bits) is
    /// accepted.
    ///
    /// # Errors
    /// Every header rule of §5.2 and §5.5 (see [`ProtocolError`]).
    pub fn parse(buf: &[u8], role: Role) -> Result<Status<(FrameHeader, usize)>, ProtocolError> {
        let Some(&b0) = buf.first() else {
            return Ok(Status::Partial);
        };

        // RFC 6455 §5.2: RSV1, RSV2, RSV3 MUST be 0 unless an extension is negotiated that
        // defines meanings for non-zero values; none is ever negotiated here.
        if b0 & bits::RSV != 0 {
            return Err(ProtocolError::ReservedBitsSet);
        }
        let op = b0 & bits::OPCODE;
        // RFC 6455 §5.2: if an unknown opcode is received, the receiving endpoint MUST _Fail
        // the WebSocket Connection_ (%x3-7 and %xB-F are reserved).
        let Some(opcode) = OpCode::from_u8(op) else {
            return Err(ProtocolError::ReservedOpCode(op));
        };
        let fin = b0 & bits::FIN != 0;
        // RFC 6455 §5.5: control frames MUST NOT be fragmented.
        if opcode.is_control() && !fin {
            return Err(ProtocolError::FragmentedControlFrame);
        }

        let Some(&b1) = buf.get(1) else {
            return Ok(Status::Partial);
        };
        let masked = b1 & bits::MASK != 0;
        match role {
            // RFC 6455 §5.1: the server MUST close the connection upon receiving a frame that
            // is not masked.
            Role::Server if !masked => return Err(ProtocolError::UnmaskedFrameFromClient),
            // RFC 6455 §5.1: a client MUST close a connection if it detects a masked frame.
            Role::Client if masked => return Err(ProtocolError::MaskedFrameFromServer),
            Role::Server | Role::Client => {}
        }
        let len7 = b1 & bits::LEN;
        // RFC 6455 §5.5: all control frames MUST have a payload length of 125 bytes or less.
        if opcode.is_control() && len7 > bits::MAX_CONTROL_LEN {
            return Err(ProtocolError::ControlFrameTooBig);
        }

        // RFC 6455 §5.2: payload length is 0-125 inline; 126 → the following 2 bytes, 127 →
        // the following 8 bytes, as an unsigned integer in network byte order. The minimal
        // encoding SHOULD be used by senders; this parser accepts any.
        let (payload_len, len_end) = match len7 {
            bits::LEN_16 => match array_at::<2>(buf, 2) {
                Some(be) => (u64::from(u16::from_be_bytes(be)), 4),
                None => return Ok(Status::Partial),
            },
            bits::LEN_64 => {
                let Some(&first) = buf.get(2) else {
                    return Ok(Status::Partial);
                };
                // RFC 6455 §5.2: in the 64-bit form, the most significant bit MUST be 0.
                if first & bits::LEN_64_MSB != 0 {
                    return Err(ProtocolError::InvalidPayloadLength);
                }
                match array_at::<8>(buf, 2) {
                    Some(be) => (u64::from_be_bytes(be), 10),
                    None => return Ok(Status::Partial),
                }
            }
            short => (u64::from(short), 2),
        };

        // RFC 6455 §5.2: the 4-byte masking key is present if the mask bit is set, right
        // after the payload length.
        let (mask, header_len) = if masked {
            match array_at::<4>(buf, len_end) {
                Some(key) => (Some(key), len_end + 4),
                None => return Ok(Status::Partial),
            }
        } else {
            (None, len_end)
        };

        let header = FrameHeader {
            fin,
            opcode,
            mask,
            payload_len,
        };
        Ok(Status::Complete((header, header_len)))
    }

    /// How many bytes [`FrameHeader::encode`] writes.
    pub fn encoded_len(&self) -> usize {
        let ext = match self.payload_len {
            0..=125 => 0,
            126..=0xFFFF => 2,
            _ => 8,
        };
        let mask = if self.mask.is_some() { 4 } else { 0 };
        2 + ext + mask
    }

    /// Writes the header to the start of `out`, returning its length.
    ///
    /// Never panics if `out.len() >= self.encoded_len()`; if `out` is shorter, it writes
    /// nothing, returns 0, and still does not panic. The length is always encoded minimally.
    /// The header is written as given: the caller keeps control frames final and ≤ 125 bytes
    /// and `payload_len` below 2^63 (§5.2, §5.5).
    pub fn encode(&self, out: &mut [u8]) -> usize {
        let len = self.encoded_len();
        let Some(dst) = out.get_mut(..len) else {
            return 0;
        };

        let fin = if self.fin { bits::FIN } else { 0 };
        // RFC 6455 §5.2: RSV1-3 are 0 (no extension), the opcode is the low nibble.
        let b0 = fin | (self.opcode.as_u8() & bits::OPCODE);
        // RFC 6455 §5.2: the minimal number of bytes MUST be used to encode the length.
        let (len7, pos) = match self.payload_len {
            n @ 0..=125 => (u8::try_from(n).unwrap_or(bits::LEN), 2),
            n @ 126..=0xFFFF => {
                put(dst, 2, &u16::try_from(n).unwrap_or(u16::MAX).to_be_bytes());
                (bits::LEN_16, 4)
            }
            n => {
                put(dst, 2, &n.to_be_bytes());
                (bits::LEN_64, 10)
            }
        };
        let masked = if self.mask.is_some() { bits::MASK } else { 0 };
        put(dst, 0, &[b0, masked | len7]);
        if let Some(key) = self.mask {
            // RFC 6455 §5.2: the masking key follows the (extended) payload length.
            put(dst, pos, &key);
        }
        len
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Parsed = Result<Status<(FrameHeader, usize)>, ProtocolError>;

    fn hdr(fin: bool, opcode: OpCode, mask: Option<[u8; 4]>, payload_len: u64) -> FrameHeader {
        FrameHeader {
            fin,
            opcode,
            mask,
            payload_len,
        }
    }

    /// Every strict prefix of `bytes` parses to `Partial` or to the same error as `expected`
    /// (for a complete header: `Partial` exactly while shorter than the header, then the same
    /// header); `bytes` itself, and `bytes` followed by payload, parse to `expected`.
    fn assert_same_at_every_split(bytes: &[u8], role: Role, expected: Parsed) {
        for cut in 0..bytes.len() {
            let got = FrameHeader::parse(&bytes[..cut], role);
            let fine = match expected {
                Ok(Status::Complete((_, n))) if cut < n => got == Ok(Status::Partial),
                Ok(Status::Complete(_)) => got == expected,
                Ok(Status::Partial) => got == Ok(Status::Partial),
                Err(_) => got == Ok(Status::Partial) || got == expected,
            };
            assert!(
                fine,
                "prefix {:02x?} ({role:?}): got {got:?}, expected Partial or {expected:?}",
                &bytes[..cut]
            );
        }
        assert_eq!(
            FrameHeader::parse(bytes, role),
            expected,
            "{bytes:02x?} ({role:?})"
        );
        let mut longer = bytes.to_vec();
        longer.extend_from_slice(&[0xA5; 20]);
        assert_eq!(
            FrameHeader::parse(&longer, role),
            expected,
            "{bytes:02x?} + payload ({role:?})"
        );
    }

    /// `bytes` is the shortest input deciding `err`: every strict prefix is `Partial`.
    fn assert_error_decided_by_last_byte(bytes: &[u8], role: Role, err: ProtocolError) {
        for cut in 0..bytes.len() {
            assert_eq!(
                FrameHeader::parse(&bytes[..cut], role),
                Ok(Status::Partial),
                "prefix {:02x?} of {bytes:02x?} ({role:?})",
                &bytes[..cut]
            );
        }
        assert_same_at_every_split(bytes, role, Err(err));
    }

    /// `frame!(bytes.., role => fin, opcode, mask, payload_len, header_len)`.
    macro_rules! frame {
        ([$($b:expr),* $(,)?], $role:expr => $fin:expr, $op:expr, $mask:expr, $len:expr, $hl:expr) => {
            (
                vec![$($b as u8),*],
                $role,
                Ok(Status::Complete((hdr($fin, $op, $mask, $len), $hl))),
            )
        };
    }

    const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

    #[test]
    fn rfc6455_section_5_7_examples() {
        let table: Vec<(Vec<u8>, Role, Parsed)> = vec![
            // A single-frame unmasked text message "Hello".
            frame!([0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f], Role::Client
                => true, OpCode::Text, None, 5, 2),
            // A single-frame masked text message "Hello".
            frame!([0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58],
                Role::Server => true, OpCode::Text, Some(KEY), 5, 6),
            // A fragmented unmasked text message: "Hel" ...
            frame!([0x01, 0x03, 0x48, 0x65, 0x6c], Role::Client
                => false, OpCode::Text, None, 3, 2),
            // ... then "lo".
            frame!([0x80, 0x02, 0x6c, 0x6f], Role::Client
                => true, OpCode::Continuation, None, 2, 2),
            // Unmasked ping "Hello".
            frame!([0x89, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f], Role::Client
                => true, OpCode::Ping, None, 5, 2),
            // Masked pong "Hello".
            frame!([0x8a, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58],
                Role::Server => true, OpCode::Pong, Some(KEY), 5, 6),
            // 256 bytes binary message in a single unmasked frame.
            frame!([0x82, 0x7E, 0x01, 0x00], Role::Client
                => true, OpCode::Binary, None, 256, 4),
            // 64 KiB binary message in a single unmasked frame.
            frame!([0x82, 0x7F, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00], Role::Client
                => true, OpCode::Binary, None, 65536, 10),
        ];
        for (bytes, role, expected) in table {
            assert_same_at_every_split(&bytes, role, expected);
        }
    }

    #[test]
    fn rfc_examples_encode_to_the_same_bytes() {
        let table: &[(FrameHeader, &[u8])] = &[
            (hdr(true, OpCode::Text, None, 5), &[0x81, 0x05]),
            (
                hdr(true, OpCode::Text, Some(KEY), 5),
                &[0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d],
            ),
            (hdr(false, OpCode::Text, None, 3), &[0x01, 0x03]),
            (hdr(true, OpCode::Continuation, None, 2), &[0x80, 0x02]),
            (hdr(true, OpCode::Ping, None, 5), &[0x89, 0x05]),
            (
                hdr(true, OpCode::Pong, Some(KEY), 5),
                &[0x8a, 0x85, 0x37, 0xfa, 0x21, 0x3d],
            ),
            (
                hdr(true, OpCode::Binary, None, 256),
                &[0x82, 0x7E, 0x01, 0x00],
            ),
            (
                hdr(true, OpCode::Binary, None, 65536),
                &[0x82, 0x7F, 0, 0, 0, 0, 0, 1, 0, 0],
            ),
        ];
        for &(h, bytes) in table {
            let mut out = [0xEE; FrameHeader::MAX_LEN + 2];
            let n = h.encode(&mut out);
            assert_eq!(n, h.encoded_len());
            assert_eq!(&out[..n], bytes, "{h:?}");
            assert!(out[n..].iter().all(|&b| b == 0xEE), "wrote past the header");
        }
    }

    #[test]
    fn new_is_unmasked() {
        assert_eq!(
            FrameHeader::new(true, OpCode::Binary, 7),
            hdr(true, OpCode::Binary, None, 7)
        );
    }

    #[test]
    fn empty_and_one_byte_buffers_are_partial() {
        for role in [Role::Server, Role::Client] {
            assert_eq!(FrameHeader::parse(&[], role), Ok(Status::Partial));
            for b0 in [0x81, 0x01, 0x82, 0x80, 0x88, 0x89, 0x8A] {
                assert_eq!(FrameHeader::parse(&[b0], role), Ok(Status::Partial));
            }
        }
    }

    #[test]
    fn error_reserved_bits_set() {
        for b0 in [0xC1, 0xA1, 0x91, 0xF1, 0x41, 0x22, 0x10, 0xC8] {
            for role in [Role::Server, Role::Client] {
                assert_error_decided_by_last_byte(&[b0], role, ProtocolError::ReservedBitsSet);
                assert_same_at_every_split(
                    &[b0, 0x85, 1, 2, 3, 4],
                    role,
                    Err(ProtocolError::ReservedBitsSet),
                );
            }
        }
    }

    #[test]
    fn error_reserved_opcode() {
        for op in (0x3..=0x7).chain(0xB..=0xF) {
            for fin in [0, bits::FIN] {
                for role in [Role::Server, Role::Client] {
                    let err = ProtocolError::ReservedOpCode(op);
                    assert_error_decided_by_last_byte(&[fin | op], role, err);
                    assert_same_at_every_split(&[fin | op, 0x80, 1, 2, 3, 4], role, Err(err));
                }
            }
        }
    }

    #[test]
    fn error_fragmented_control_frame() {
        for b0 in [0x08, 0x09, 0x0A] {
            for role in [Role::Server, Role::Client] {
                let err = ProtocolError::FragmentedControlFrame;
                assert_error_decided_by_last_byte(&[b0], role, err);
                assert_same_at_every_split(&[b0, 0x80, 1, 2, 3, 4], role, Err(err));
            }
        }
    }

    #[test]
    fn error_control_frame_too_big() {
        let err = ProtocolError::ControlFrameTooBig;
        for b0 in [0x88, 0x89, 0x8A] {
            for len7 in [126, 127] {
                assert_error_decided_by_last_byte(&[b0, 0x80 | len7], Role::Server, err);
                assert_error_decided_by_last_byte(&[b0, len7], Role::Client, err);
                assert_same_at_every_split(&[b0, len7, 0, 0x7D], Role::Client, Err(err));
            }
            // 125 is the largest control payload allowed.
            assert_same_at_every_split(
                &[b0, 0x7D],
                Role::Client,
                Ok(Status::Complete((
                    hdr(true, OpCode::from_u8(b0 & 0x0F).unwrap(), None, 125),
                    2,
                ))),
            );
        }
    }

    #[test]
    fn error_unmasked_frame_from_client() {
        let err = ProtocolError::UnmaskedFrameFromClient;
        for b0 in [0x81, 0x01, 0x82, 0x80, 0x00, 0x88, 0x89, 0x8A] {
            for len7 in [0, 5, 125, 126, 127] {
                assert_error_decided_by_last_byte(&[b0, len7], Role::Server, err);
            }
        }
    }

    #[test]
    fn error_masked_frame_from_server() {
        let err = ProtocolError::MaskedFrameFromServer;
        for b0 in [0x81, 0x01, 0x82, 0x80, 0x00, 0x88, 0x89, 0x8A] {
            for len7 in [0, 5, 125, 126, 127] {
                assert_error_decided_by_last_byte(&[b0, 0x80 | len7], Role::Client, err);
                assert_same_at_every_split(&[b0, 0x80 | len7, 1, 2, 3, 4], Role::Client, Err(err));
            }
        }
    }

    #[test]
    fn error_invalid_payload_length() {
        let err = ProtocolError::InvalidPayloadLength;
        for first in [0x80, 0x81, 0xFF] {
            // Decided by the first byte of the 64-bit length, before the other seven arrive.
            assert_error_decided_by_last_byte(&[0x82, 0x7F, first], Role::Client, err);
            assert_error_decided_by_last_byte(&[0x82, 0xFF, first], Role::Server, err);
            assert_same_at_every_split(
                &[0x82, 0x7F, first, 0, 0, 0, 0, 0, 0, 0],
                Role::Client,
                Err(err),
            );
        }
    }

    #[test]
    fn error_order_when_several_rules_fail() {
        use ProtocolError::*;
        let table: &[(&[u8], Role, ProtocolError)] = &[
            // Byte 0: RSV before opcode before FIN-on-control.
            (&[0xF3], Role::Server, ReservedBitsSet),
            (&[0x4B], Role::Server, ReservedBitsSet),
            (&[0x48], Role::Client, ReservedBitsSet),
            (&[0x0B], Role::Client, ReservedOpCode(0xB)),
            (&[0x03], Role::Client, ReservedOpCode(0x3)),
            // Byte 0 decides before byte 1.
            (&[0x08], Role::Server, FragmentedControlFrame),
            // Byte 1: the mask rule before the control length.
            (&[0x89, 0x7E], Role::Server, UnmaskedFrameFromClient),
            (&[0x89, 0xFE], Role::Client, MaskedFrameFromServer),
        ];
        for &(bytes, role, err) in table {
            assert_error_decided_by_last_byte(bytes, role, err);
        }
    }

    #[test]
    fn non_minimal_lengths_are_accepted() {
        let table: Vec<(Vec<u8>, Role, Parsed)> = vec![
            frame!([0x82, 0x7E, 0x00, 0x05], Role::Client
                => true, OpCode::Binary, None, 5, 4),
            frame!([0x82, 0x7E, 0x00, 0x00], Role::Client
                => true, OpCode::Binary, None, 0, 4),
            frame!([0x02, 0xFF, 0, 0, 0, 0, 0, 0, 0, 0x7D, 9, 8, 7, 6], Role::Server
                => false, OpCode::Binary, Some([9, 8, 7, 6]), 125, 14),
            frame!([0x82, 0x7F, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF], Role::Client
                => true, OpCode::Binary, None, 0xFFFF, 10),
        ];
        for (bytes, role, expected) in table {
            assert_same_at_every_split(&bytes, role, expected);
        }
    }

    #[test]
    fn largest_lengths() {
        let table: Vec<(Vec<u8>, Role, Parsed)> = vec![
            frame!([0x82, 0x7F, 0x7F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF], Role::Client
                => true, OpCode::Binary, None, (1 << 63) - 1, 10),
            frame!([0x82, 0xFF, 0x7F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 1, 2, 3, 4],
                Role::Server => true, OpCode::Binary, Some([1, 2, 3, 4]), (1 << 63) - 1, 14),
            frame!([0x81, 0xFE, 0xFF, 0xFF, 1, 2, 3, 4], Role::Server
                => true, OpCode::Text, Some([1, 2, 3, 4]), 0xFFFF, 8),
        ];
        for (bytes, role, expected) in table {
            assert_same_at_every_split(&bytes, role, expected);
        }
    }

    #[test]
    fn opcode_values() {
        let all = [
            (OpCode::Continuation, 0x0, false),
            (OpCode::Text, 0x1, false),
            (OpCode::Binary, 0x2, false),
            (OpCode::Close, 0x8, true),
            (OpCode::Ping, 0x9, true),
            (OpCode::Pong, 0xA, true),
        ];
        for (op, v, control) in all {
            assert_eq!(op.as_u8(), v);
            assert_eq!(op.is_control(), control);
            assert_eq!(OpCode::from_u8(v), Some(op));
        }
        for v in 0..=u8::MAX {
            match OpCode::from_u8(v) {
                Some(op) => assert_eq!(op.as_u8(), v),
                None => assert!(matches!(v, 0x3..=0x7 | 0xB..=0xFF), "{v:#x}"),
            }
        }
    }

    #[test]
    fn encoded_len_boundaries() {
        let table: &[(u64, usize)] = &[
            (0, 2),
            (125, 2),
            (126, 4),
            (65535, 4),
            (65536, 10),
            (u64::from(u32::MAX) + 1, 10),
            ((1 << 63) - 1, 10),
            (u64::MAX, 10),
        ];
        for &(len, n) in table {
            assert_eq!(hdr(true, OpCode::Binary, None, len).encoded_len(), n);
            assert_eq!(
                hdr(true, OpCode::Binary, Some(KEY), len).encoded_len(),
                n + 4
            );
        }
    }

    #[test]
    fn encode_into_short_buffer_writes_nothing() {
        for len in [0, 125, 126, 65535, 65536, (1 << 63) - 1] {
            for mask in [None, Some(KEY)] {
                let h = hdr(true, OpCode::Binary, mask, len);
                for short in 0..h.encoded_len() {
                    let mut out = vec![0xEE; short];
                    assert_eq!(h.encode(&mut out), 0);
                    assert!(out.iter().all(|&b| b == 0xEE));
                }
                let mut exact = vec![0xEE; h.encoded_len()];
                assert_eq!(h.encode(&mut exact), h.encoded_len());
            }
        }
    }

    const LENGTHS: [u64; 9] = [
        0,
        1,
        125,
        126,
        127,
        65535,
        65536,
        u32::MAX as u64 + 1,
        (1 << 63) - 1,
    ];

    #[test]
    fn encode_parse_round_trip() {
        let ops = [
            OpCode::Continuation,
            OpCode::Text,
            OpCode::Binary,
            OpCode::Close,
            OpCode::Ping,
            OpCode::Pong,
        ];
        let mut checked = 0;
        for op in ops {
            for fin in [false, true] {
                for len in LENGTHS {
                    for mask in [None, Some(KEY), Some([0, 0, 0, 0]), Some([0xFF; 4])] {
                        if op.is_control() && (!fin || len > 125) {
                            continue;
                        }
                        let h = hdr(fin, op, mask, len);
                        let role = if mask.is_some() {
                            Role::Server
                        } else {
                            Role::Client
                        };
                        let mut out = [0u8; FrameHeader::MAX_LEN];
                        let n = h.encode(&mut out);
                        assert_eq!(n, h.encoded_len());
                        assert!((2..=FrameHeader::MAX_LEN).contains(&n));
                        assert_same_at_every_split(&out[..n], role, Ok(Status::Complete((h, n))));
                        // The other role rejects it on byte 1.
                        let other = if mask.is_some() {
                            ProtocolError::MaskedFrameFromServer
                        } else {
                            ProtocolError::UnmaskedFrameFromClient
                        };
                        let flipped = match role {
                            Role::Server => Role::Client,
                            Role::Client => Role::Server,
                        };
                        assert_eq!(FrameHeader::parse(&out[..n], flipped), Err(other));
                        checked += 1;
                    }
                }
            }
        }
        assert!(checked > 150, "{checked}");
    }

    /// Every first byte, a spread of second bytes, several fillers: parse never panics, is
    /// consistent across prefixes, agrees with the bit layout, and re-encodes.
    #[test]
    fn all_first_bytes_never_panic_and_agree() {
        let second = [0x00, 0x01, 0x7D, 0x7E, 0x7F, 0x80, 0x81, 0xFD, 0xFE, 0xFF];
        let fillers = [0x00, 0x01, 0x7F, 0x80, 0xFF];
        let mut complete = 0;
        for b0 in 0..=u8::MAX {
            for &b1 in &second {
                for &fill in &fillers {
                    for role in [Role::Server, Role::Client] {
                        let mut buf = [fill; 16];
                        buf[0] = b0;
                        buf[1] = b1;
                        let full = FrameHeader::parse(&buf, role);
                        for cut in 0..buf.len() {
                            match FrameHeader::parse(&buf[..cut], role) {
                                Ok(Status::Partial) => {}
                                other => {
                                    // Once decided, a longer buffer decides the same.
                                    assert_eq!(other, full, "{:02x?}", &buf[..cut]);
                                }
                            }
                        }
                        match full {
                            Ok(Status::Complete((h, n))) => {
                                complete += 1;
                                assert!((2..=FrameHeader::MAX_LEN).contains(&n));
                                assert_eq!(b0 & bits::RSV, 0);
                                assert_eq!(h.fin, b0 & bits::FIN != 0);
                                assert_eq!(h.opcode.as_u8(), b0 & bits::OPCODE);
                                assert_eq!(h.mask.is_some(), b1 & bits::MASK != 0);
                                assert_eq!(h.mask.is_some(), role == Role::Server);
                                if h.opcode.is_control() {
                                    assert!(h.fin && h.payload_len <= 125);
                                }
                                assert!(h.payload_len < 1 << 63);
                                // Re-encoding (minimal form) parses back to the same header.
                                let mut out = [0u8; FrameHeader::MAX_LEN];
                                let m = h.encode(&mut out);
                                assert!(m > 0 && m <= n);
                                assert_eq!(
                                    FrameHeader::parse(&out[..m], role),
                                    Ok(Status::Complete((h, m)))
                                );
                            }
                            Ok(Status::Partial) => panic!("16 bytes are always enough"),
                            Err(_) => {}
                        }
                    }
                }
            }
        }
        assert!(complete > 0);
    }
}

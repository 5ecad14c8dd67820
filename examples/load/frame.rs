//! Client-side frame codec: masked frames are built once, server frame headers are parsed in place.
//!
//! In: payload bytes and a mask key (building), or a byte slice (parsing).
//! Out: appended frame bytes, or `(Header, header_len)` borrowed from nothing.
//! Never: touches a socket or allocates beyond what the caller's `Vec` needs.

/// Opcodes (RFC 6455 §5.2).
pub mod op {
    pub const CONTINUATION: u8 = 0x0;
    pub const TEXT: u8 = 0x1;
    pub const BINARY: u8 = 0x2;
    pub const CLOSE: u8 = 0x8;
    pub const PING: u8 = 0x9;
    pub const PONG: u8 = 0xA;
}

mod bits {
    pub const FIN: u8 = 0x80;
    pub const RSV: u8 = 0x70;
    pub const OPCODE: u8 = 0x0F;
    pub const MASK: u8 = 0x80;
    pub const LEN: u8 = 0x7F;
}

/// RFC 6455 §5.5: control frames carry at most 125 payload bytes.
pub const MAX_CONTROL_PAYLOAD: usize = 125;

/// Why a server frame was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameError {
    ContinuationWithoutStart,
    ControlFrameTooLong,
    DataFrameInsideMessage,
    FragmentedControlFrame,
    LengthMsbSet,
    MaskedServerFrame,
    ReservedOpcode(u8),
    RsvBitsSet(u8),
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::ContinuationWithoutStart => f.write_str("continuation frame without a message"),
            Self::ControlFrameTooLong => f.write_str("control frame longer than 125 bytes"),
            Self::DataFrameInsideMessage => f.write_str("data frame inside a fragmented message"),
            Self::FragmentedControlFrame => f.write_str("fragmented control frame"),
            Self::LengthMsbSet => f.write_str("64-bit length with its top bit set"),
            Self::MaskedServerFrame => f.write_str("masked frame from the server"),
            Self::ReservedOpcode(o) => write!(f, "reserved opcode {o:#x}"),
            Self::RsvBitsSet(b) => write!(f, "RSV bits {b:#x} set without an extension"),
        }
    }
}

/// A parsed server frame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub fin: bool,
    pub opcode: u8,
    pub len: u64,
}

impl Header {
    pub fn is_control(&self) -> bool {
        self.opcode & 0x8 != 0
    }
}

/// Parses a server (unmasked) frame header: `Ok(None)` if `buf` is too short to tell.
///
/// Never panics. Enforces every header rule a client can check (RFC 6455 §5.1, §5.2, §5.5).
pub fn parse_header(buf: &[u8]) -> Result<Option<(Header, usize)>, FrameError> {
    let (b0, b1) = match buf {
        [b0, b1, ..] => (*b0, *b1),
        _ => return Ok(None),
    };
    if b0 & bits::RSV != 0 {
        return Err(FrameError::RsvBitsSet(b0 & bits::RSV));
    }
    let opcode = b0 & bits::OPCODE;
    if !matches!(
        opcode,
        op::CONTINUATION | op::TEXT | op::BINARY | op::CLOSE | op::PING | op::PONG
    ) {
        return Err(FrameError::ReservedOpcode(opcode));
    }
    // RFC 6455 §5.1: a client MUST close the connection if it detects a masked frame.
    if b1 & bits::MASK != 0 {
        return Err(FrameError::MaskedServerFrame);
    }
    let fin = b0 & bits::FIN != 0;
    let (len, header_len) = match b1 & bits::LEN {
        126 => match buf.get(2..4) {
            Some(b) => (u64::from(u16::from_be_bytes([b[0], b[1]])), 4),
            None => return Ok(None),
        },
        127 => match buf.get(2..10) {
            Some(b) => {
                let mut be = [0; 8];
                be.copy_from_slice(b);
                (u64::from_be_bytes(be), 10)
            }
            None => return Ok(None),
        },
        n => (u64::from(n), 2),
    };
    // RFC 6455 §5.2: the most significant bit of a 64-bit length MUST be 0.
    if len >> 63 != 0 {
        return Err(FrameError::LengthMsbSet);
    }
    let header = Header { fin, opcode, len };
    if header.is_control() {
        // RFC 6455 §5.5: control frames MUST NOT be fragmented and carry at most 125 bytes.
        if !fin {
            return Err(FrameError::FragmentedControlFrame);
        }
        if len > MAX_CONTROL_PAYLOAD as u64 {
            return Err(FrameError::ControlFrameTooLong);
        }
    }
    Ok(Some((header, header_len)))
}

/// Bytes of a client (masked) frame header for a payload of `len` bytes.
pub fn masked_header_len(len: usize) -> usize {
    match len {
        0..=125 => 6,
        126..=0xFFFF => 8,
        _ => 14,
    }
}

/// Appends one complete, final, masked frame to `out`.
///
/// Allocates only if `out` lacks `masked_header_len(payload.len()) + payload.len()` spare bytes.
pub fn push_masked(out: &mut Vec<u8>, opcode: u8, payload: &[u8], key: [u8; 4]) {
    out.push(bits::FIN | opcode);
    match payload.len() {
        n @ 0..=125 => out.push(bits::MASK | n as u8),
        n @ 126..=0xFFFF => {
            out.push(bits::MASK | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(bits::MASK | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&key);
    let start = out.len();
    out.extend_from_slice(payload);
    apply_mask(&mut out[start..], key, 0);
}

/// XORs `buf` with `key`; `buf[0]` is payload byte number `offset` (RFC 6455 §5.3).
///
/// Masking is its own inverse, so this also unmasks.
pub fn apply_mask(buf: &mut [u8], key: [u8; 4], offset: usize) {
    for (i, b) in buf.iter_mut().enumerate() {
        *b ^= key[(offset + i) & 3];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes a masked client frame the way a server would: (fin, opcode, payload, frame length).
    fn decode_masked(buf: &[u8]) -> (bool, u8, Vec<u8>, usize) {
        assert_eq!(buf[1] & 0x80, 0x80, "client frames are masked");
        let (len, mut at) = match buf[1] & 0x7F {
            126 => (u16::from_be_bytes([buf[2], buf[3]]) as usize, 4),
            127 => (
                u64::from_be_bytes(buf[2..10].try_into().unwrap()) as usize,
                10,
            ),
            n => (n as usize, 2),
        };
        let key: [u8; 4] = buf[at..at + 4].try_into().unwrap();
        at += 4;
        let mut payload = buf[at..at + len].to_vec();
        apply_mask(&mut payload, key, 0);
        (buf[0] & 0x80 != 0, buf[0] & 0x0F, payload, at + len)
    }

    #[test]
    fn masked_frames_round_trip_at_every_length_class() {
        let key = [0x37, 0xfa, 0x21, 0x3d];
        for len in [0usize, 1, 5, 125, 126, 127, 1000, 0xFFFF, 0x10000, 70_000] {
            let payload: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
            let mut out = Vec::new();
            push_masked(&mut out, op::BINARY, &payload, key);
            assert_eq!(out.len(), masked_header_len(len) + len, "len {len}");
            let (fin, opcode, got, used) = decode_masked(&out);
            assert!(fin);
            assert_eq!(opcode, op::BINARY);
            assert_eq!(used, out.len());
            assert_eq!(got, payload, "len {len}");
        }
    }

    #[test]
    fn rfc_5_7_masked_hello_is_built_byte_for_byte() {
        // RFC 6455 §5.7: a single-frame masked text message containing "Hello".
        let mut out = Vec::new();
        push_masked(&mut out, op::TEXT, b"Hello", [0x37, 0xfa, 0x21, 0x3d]);
        assert_eq!(
            out,
            [0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58]
        );
    }

    #[test]
    fn masking_at_an_offset_patches_a_prebuilt_frame() {
        let key = [1, 2, 3, 4];
        let mut out = Vec::new();
        push_masked(&mut out, op::TEXT, b"seq=000", key);
        // Rewrite "000" to "042" in the masked frame without re-masking the rest.
        let start = masked_header_len(7) + 4;
        let mut digits = *b"042";
        apply_mask(&mut digits, key, 4);
        out[start..start + 3].copy_from_slice(&digits);
        assert_eq!(decode_masked(&out).2, b"seq=042");
    }

    #[test]
    fn header_parse_reads_rfc_examples_and_needs_every_byte() {
        // RFC 6455 §5.7: unmasked "Hello", and a 256-byte and a 64 KiB binary header.
        let cases: [(&[u8], Header, usize); 3] = [
            (
                &[0x81, 0x05],
                Header {
                    fin: true,
                    opcode: op::TEXT,
                    len: 5,
                },
                2,
            ),
            (
                &[0x82, 0x7E, 0x01, 0x00],
                Header {
                    fin: true,
                    opcode: op::BINARY,
                    len: 256,
                },
                4,
            ),
            (
                &[0x82, 0x7F, 0, 0, 0, 0, 0, 1, 0, 0],
                Header {
                    fin: true,
                    opcode: op::BINARY,
                    len: 65536,
                },
                10,
            ),
        ];
        for (bytes, header, len) in cases {
            assert_eq!(parse_header(bytes), Ok(Some((header, len))));
            for cut in 0..bytes.len() {
                assert_eq!(
                    parse_header(&bytes[..cut]),
                    Ok(None),
                    "{bytes:?} cut at {cut}"
                );
            }
        }
    }

    #[test]
    fn header_parse_refuses_each_broken_rule() {
        assert_eq!(parse_header(&[0xC1, 0]), Err(FrameError::RsvBitsSet(0x40)));
        assert_eq!(parse_header(&[0x83, 0]), Err(FrameError::ReservedOpcode(3)));
        assert_eq!(
            parse_header(&[0x81, 0x85]),
            Err(FrameError::MaskedServerFrame)
        );
        assert_eq!(
            parse_header(&[0x09, 0]),
            Err(FrameError::FragmentedControlFrame)
        );
        assert_eq!(
            parse_header(&[0x89, 126, 0, 126]),
            Err(FrameError::ControlFrameTooLong)
        );
        assert_eq!(
            parse_header(&[0x82, 127, 0x80, 0, 0, 0, 0, 0, 0, 0]),
            Err(FrameError::LengthMsbSet)
        );
    }
}

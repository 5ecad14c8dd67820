//! Close codes (RFC 6455 §7.4) and the close frame payload (§5.5.1).

use core::fmt;

use super::error::ProtocolError;

/// A close status code.
///
/// Only codes that may appear in a close frame can be made ([`CloseCode::new`] and the
/// constants), plus the two that are reported locally and never sent:
/// [`CloseCode::NO_STATUS`] and [`CloseCode::ABNORMAL`]. Every sending function refuses
/// those two, so a code that RFC 6455 §7.4.1 forbids never reaches the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CloseCode(u16);

impl CloseCode {
    /// 1000: the purpose of the connection was fulfilled.
    pub const NORMAL: CloseCode = CloseCode(1000);
    /// 1001: the endpoint is going away (server shutdown, page navigation).
    pub const GOING_AWAY: CloseCode = CloseCode(1001);
    /// 1002: the peer broke the protocol.
    pub const PROTOCOL_ERROR: CloseCode = CloseCode(1002);
    /// 1003: a data type the endpoint cannot accept.
    pub const UNSUPPORTED: CloseCode = CloseCode(1003);
    /// 1005: a close frame without a code. Reported locally, never sent.
    pub const NO_STATUS: CloseCode = CloseCode(1005);
    /// 1006: the TCP connection ended without a close frame. Reported locally, never sent.
    pub const ABNORMAL: CloseCode = CloseCode(1006);
    /// 1007: data inconsistent with the message type (invalid UTF-8 in text).
    pub const INVALID_DATA: CloseCode = CloseCode(1007);
    /// 1008: a policy was violated (e.g. the peer reads too slowly).
    pub const POLICY: CloseCode = CloseCode(1008);
    /// 1009: a message too big to process.
    pub const TOO_BIG: CloseCode = CloseCode(1009);
    /// 1010: the client expected an extension the server did not negotiate.
    pub const EXTENSION: CloseCode = CloseCode(1010);
    /// 1011: the server met an unexpected condition.
    pub const INTERNAL: CloseCode = CloseCode(1011);

    /// A code that may be sent: 1000–1003, 1007–1011 or 3000–4999 (RFC 6455 §7.4.1,
    /// §7.4.2). `None` for any other, 1005, 1006 and 1015 among them.
    pub const fn new(code: u16) -> Option<CloseCode> {
        let code = CloseCode(code);
        if code.is_valid_on_wire() {
            Some(code)
        } else {
            None
        }
    }

    /// The numeric code.
    pub fn as_u16(self) -> u16 {
        self.0
    }

    /// Whether this code may appear in a close frame on the wire (§7.4.1, §7.4.2):
    /// 1000–1003, 1007–1011 and 3000–4999. 1005, 1006, 1015, the rest of 1000–2999 and
    /// everything outside 1000–4999 may not.
    pub const fn is_valid_on_wire(self) -> bool {
        matches!(self.0, 1000..=1003 | 1007..=1011 | 3000..=4999)
    }
}

impl fmt::Display for CloseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl From<CloseCode> for u16 {
    fn from(code: CloseCode) -> u16 {
        code.0
    }
}

/// The longest reason that fits a close frame: 125 bytes of payload less the 2-byte code.
pub const MAX_REASON_LEN: usize = 123;

/// Parses a close frame's payload: `None` for an empty payload (reported as 1005),
/// else the code and the reason.
///
/// # Errors
/// A one-byte payload, a code not valid on the wire, or a reason that is not UTF-8.
pub fn parse_payload(payload: &[u8]) -> Result<Option<(CloseCode, &str)>, ProtocolError> {
    match payload {
        [] => Ok(None),
        // RFC 6455 §5.5.1: if there is a body, its first two bytes MUST be the status code.
        [_] => Err(ProtocolError::InvalidClosePayload),
        [hi, lo, reason @ ..] => {
            let code = CloseCode(u16::from_be_bytes([*hi, *lo]));
            // RFC 6455 §7.4: codes 1005, 1006, 1015 and unassigned ranges MUST NOT be sent.
            if !code.is_valid_on_wire() {
                return Err(ProtocolError::InvalidCloseCode(code.0));
            }
            // RFC 6455 §5.5.1: the reason is UTF-8 encoded.
            let reason = core::str::from_utf8(reason).map_err(|_| ProtocolError::InvalidUtf8)?;
            Ok(Some((code, reason)))
        }
    }
}

/// Writes a close payload (code then reason) into `out`, returning its length.
///
/// The reason is cut to [`MAX_REASON_LEN`] bytes at a character boundary. Never panics.
pub fn encode_payload(code: CloseCode, reason: &str, out: &mut [u8; 125]) -> usize {
    let mut end = reason.len().min(MAX_REASON_LEN);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let reason = reason.as_bytes().get(..end).unwrap_or_default();
    let [hi, lo] = code.0.to_be_bytes();
    out[0] = hi;
    out[1] = lo;
    out[2..2 + end].copy_from_slice(reason);
    2 + end
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_validity_follows_rfc_7_4() {
        for code in 0..=65535u16 {
            let expected = matches!(code, 1000..=1003 | 1007..=1011 | 3000..=4999);
            assert_eq!(CloseCode(code).is_valid_on_wire(), expected, "{code}");
            assert_eq!(CloseCode::new(code).is_some(), expected, "{code}");
        }
        assert!(!CloseCode::NO_STATUS.is_valid_on_wire());
        assert!(!CloseCode::ABNORMAL.is_valid_on_wire());
        for code in [1005, 1006, 1015, 1004, 1012, 1016, 2999, 5000, 999, 0] {
            assert!(!CloseCode(code).is_valid_on_wire(), "{code}");
        }
    }

    #[test]
    fn parses_empty_code_and_reason() {
        assert_eq!(parse_payload(b""), Ok(None));
        assert_eq!(
            parse_payload(&[0x03, 0xe8]),
            Ok(Some((CloseCode::NORMAL, "")))
        );
        assert_eq!(
            parse_payload(b"\x0f\xa0bye \xc3\xa9"),
            Ok(Some((CloseCode(4000), "bye é")))
        );
    }

    #[test]
    fn rejects_one_byte_bad_code_and_bad_utf8() {
        assert_eq!(
            parse_payload(&[0x03]),
            Err(ProtocolError::InvalidClosePayload)
        );
        assert_eq!(
            parse_payload(&[0x03, 0xed]),
            Err(ProtocolError::InvalidCloseCode(1005))
        );
        assert_eq!(
            parse_payload(b"\x03\xe8\xff"),
            Err(ProtocolError::InvalidUtf8)
        );
    }

    #[test]
    fn encode_cuts_reason_at_char_boundary() {
        let mut out = [0u8; 125];
        let reason = "é".repeat(100); // 200 bytes
        let n = encode_payload(CloseCode::GOING_AWAY, &reason, &mut out);
        assert_eq!(n, 2 + 122);
        assert_eq!(
            parse_payload(&out[..n]),
            Ok(Some((CloseCode::GOING_AWAY, &reason[..122])))
        );
    }
}

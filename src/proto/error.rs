//! One error variant per protocol rule, each with a total mapping to the wire:
//! [`ProtocolError::close_code`] after the upgrade, [`HandshakeError::status`] before it.

use core::fmt;

use super::close::CloseCode;

/// A rule of RFC 6455 broken by the peer after the upgrade, or a configured limit passed.
///
/// Small and `Copy`: it never allocates, and the connection keeps it as its sticky failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProtocolError {
    /// A client frame without the mask bit (§5.1).
    UnmaskedFrameFromClient,
    /// A server frame with the mask bit (§5.1).
    MaskedFrameFromServer,
    /// RSV1, RSV2 or RSV3 set with no extension negotiated (§5.2).
    ReservedBitsSet,
    /// Opcode 0x3–0x7 or 0xB–0xF (§5.2).
    ReservedOpCode(u8),
    /// A control frame with a payload over 125 bytes (§5.5).
    ControlFrameTooBig,
    /// A control frame without FIN (§5.5).
    FragmentedControlFrame,
    /// A 64-bit payload length with its most significant bit set (§5.2).
    InvalidPayloadLength,
    /// A continuation frame with no message in progress (§5.4).
    UnexpectedContinuation,
    /// A text or binary frame while a fragmented message is in progress (§5.4).
    ExpectedContinuation,
    /// A close frame with a one-byte payload (§5.5.1).
    InvalidClosePayload,
    /// A close code not allowed on the wire, e.g. 1005, 1006, 1015, 0–999 (§7.4).
    InvalidCloseCode(u16),
    /// Text payload or close reason that is not UTF-8 (§8.1).
    InvalidUtf8,
    /// A message larger than `max_message_size`, detected from the frame header.
    MessageTooBig,
}

impl ProtocolError {
    /// The close code sent to the peer when the connection fails with this error.
    pub fn close_code(self) -> CloseCode {
        match self {
            ProtocolError::InvalidUtf8 => CloseCode::INVALID_DATA,
            ProtocolError::MessageTooBig => CloseCode::TOO_BIG,
            ProtocolError::UnmaskedFrameFromClient
            | ProtocolError::MaskedFrameFromServer
            | ProtocolError::ReservedBitsSet
            | ProtocolError::ReservedOpCode(_)
            | ProtocolError::ControlFrameTooBig
            | ProtocolError::FragmentedControlFrame
            | ProtocolError::InvalidPayloadLength
            | ProtocolError::UnexpectedContinuation
            | ProtocolError::ExpectedContinuation
            | ProtocolError::InvalidClosePayload
            | ProtocolError::InvalidCloseCode(_) => CloseCode::PROTOCOL_ERROR,
        }
    }

    /// A short description, without allocation; also the close reason sent.
    pub fn as_str(self) -> &'static str {
        match self {
            ProtocolError::UnmaskedFrameFromClient => "unmasked client frame",
            ProtocolError::MaskedFrameFromServer => "masked server frame",
            ProtocolError::ReservedBitsSet => "reserved bits set",
            ProtocolError::ReservedOpCode(_) => "reserved opcode",
            ProtocolError::ControlFrameTooBig => "control frame over 125 bytes",
            ProtocolError::FragmentedControlFrame => "fragmented control frame",
            ProtocolError::InvalidPayloadLength => "invalid payload length",
            ProtocolError::UnexpectedContinuation => "continuation without a message",
            ProtocolError::ExpectedContinuation => "new message inside a fragmented message",
            ProtocolError::InvalidClosePayload => "invalid close payload",
            ProtocolError::InvalidCloseCode(_) => "invalid close code",
            ProtocolError::InvalidUtf8 => "invalid UTF-8",
            ProtocolError::MessageTooBig => "message too big",
        }
    }
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            ProtocolError::ReservedOpCode(op) => write!(f, "reserved opcode {op:#x}"),
            ProtocolError::InvalidCloseCode(code) => write!(f, "invalid close code {code}"),
            e => f.write_str(e.as_str()),
        }
    }
}

impl std::error::Error for ProtocolError {}

/// Why an upgrade request was refused, before any WebSocket frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum HandshakeError {
    /// The request line or a header line is not valid HTTP/1.1.
    Malformed,
    /// The method is not `GET` (RFC 6455 §4.1).
    MethodNotAllowed,
    /// The HTTP version is older than 1.1 (§4.1).
    HttpVersion,
    /// No `Host` header (§4.1).
    MissingHost,
    /// No `Upgrade: websocket` token (§4.2.1).
    NotUpgrade,
    /// No `Upgrade` token in `Connection` (§4.2.1).
    MissingConnectionUpgrade,
    /// `Sec-WebSocket-Key` absent, duplicated, or not 16 bytes in base64 (§4.2.1).
    InvalidKey,
    /// `Sec-WebSocket-Version` other than 13 (§4.2.2): answered with 426 and the version.
    UnsupportedVersion,
    /// The request head does not fit the head buffer.
    HeadTooLarge,
    /// More header lines than the parser's header table holds.
    TooManyHeaders,
    /// The origin is not on the allow-list.
    ForbiddenOrigin,
    /// The server is at `max_connections`, or the peer at its per-address cap.
    Unavailable,
}

impl HandshakeError {
    /// The HTTP status answered for this error.
    pub fn status(self) -> u16 {
        match self {
            HandshakeError::Malformed
            | HandshakeError::HttpVersion
            | HandshakeError::MissingHost
            | HandshakeError::NotUpgrade
            | HandshakeError::MissingConnectionUpgrade
            | HandshakeError::InvalidKey => 400,
            HandshakeError::ForbiddenOrigin => 403,
            HandshakeError::MethodNotAllowed => 405,
            HandshakeError::UnsupportedVersion => 426,
            HandshakeError::HeadTooLarge | HandshakeError::TooManyHeaders => 431,
            HandshakeError::Unavailable => 503,
        }
    }

    /// A short description, without allocation.
    pub fn as_str(self) -> &'static str {
        match self {
            HandshakeError::Malformed => "malformed request",
            HandshakeError::MethodNotAllowed => "method not allowed",
            HandshakeError::HttpVersion => "HTTP version below 1.1",
            HandshakeError::MissingHost => "missing Host",
            HandshakeError::NotUpgrade => "not a websocket upgrade",
            HandshakeError::MissingConnectionUpgrade => "Connection lacks Upgrade",
            HandshakeError::InvalidKey => "invalid Sec-WebSocket-Key",
            HandshakeError::UnsupportedVersion => "unsupported Sec-WebSocket-Version",
            HandshakeError::HeadTooLarge => "request head too large",
            HandshakeError::TooManyHeaders => "too many headers",
            HandshakeError::ForbiddenOrigin => "origin not allowed",
            HandshakeError::Unavailable => "server unavailable",
        }
    }
}

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::error::Error for HandshakeError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_small() {
        assert!(core::mem::size_of::<ProtocolError>() <= 4);
        assert!(core::mem::size_of::<HandshakeError>() <= 1);
    }

    /// DESIGN.md's bad-input table, row by row.
    #[test]
    fn protocol_errors_map_to_design_close_codes() {
        use ProtocolError::*;
        let table: &[(ProtocolError, u16)] = &[
            (UnmaskedFrameFromClient, 1002),
            (MaskedFrameFromServer, 1002),
            (ReservedBitsSet, 1002),
            (ReservedOpCode(3), 1002),
            (ControlFrameTooBig, 1002),
            (FragmentedControlFrame, 1002),
            (InvalidPayloadLength, 1002),
            (UnexpectedContinuation, 1002),
            (ExpectedContinuation, 1002),
            (InvalidClosePayload, 1002),
            (InvalidCloseCode(1005), 1002),
            (InvalidUtf8, 1007),
            (MessageTooBig, 1009),
        ];
        for &(e, code) in table {
            assert_eq!(e.close_code().as_u16(), code, "{e}");
        }
    }

    #[test]
    fn handshake_errors_map_to_design_statuses() {
        use HandshakeError::*;
        let table: &[(HandshakeError, u16)] = &[
            (Malformed, 400),
            (HttpVersion, 400),
            (MissingHost, 400),
            (NotUpgrade, 400),
            (MissingConnectionUpgrade, 400),
            (InvalidKey, 400),
            (MethodNotAllowed, 405),
            (UnsupportedVersion, 426),
            (HeadTooLarge, 431),
            (TooManyHeaders, 431),
            (ForbiddenOrigin, 403),
            (Unavailable, 503),
        ];
        for &(e, status) in table {
            assert_eq!(e.status(), status, "{e}");
        }
    }
}

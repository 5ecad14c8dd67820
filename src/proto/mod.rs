//! Layer 1: the sans-IO protocol core of RFC 6455, the Server-Sent Events encoding, and the
//! RESP codec of the Redis bridge.
//!
//! - **In:** byte slices the caller has already read, and buffers the caller lends.
//! - **Out:** [`Status`] and values, views borrowed from the input, bytes appended to
//!   caller-owned buffers.
//! - **Never:** a socket call, a clock read, allocation beyond what the caller lends, or a
//!   panic on peer input.
//!
//! The stages, in the order bytes flow through them:
//!
//! | stage | module | what it does |
//! | --- | --- | --- |
//! | ① | [`handshake`] | HTTP/1.1 upgrade request bytes → [`handshake::Request`] view |
//! | ② | [`response`] | request → `101 Switching Protocols` or an HTTP error, as bytes |
//! | ③ | [`frame`] | frame header parse / encode (2–14 bytes, split anywhere) |
//! | ④ | [`mask`] | unmask a payload in place, a word at a time, resumable |
//! | ⑤ | [`utf8`] | incremental UTF-8 validation that fails at the first bad byte |
//! | ⑥ | [`message`] | frames → messages: fragmentation, control frames, size limits |
//! | | [`close`] | close codes and the close frame payload |
//! | | [`error`] | one variant per rule, mapped to a close code or an HTTP status |
//! | | [`sse`] | a message → one Server-Sent Event (`text/event-stream`), the keep-alive |
//! | | `resp` | RESP commands → bytes, broker replies and pushes → views (feature `redis`) |
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod close;
pub mod error;
pub mod frame;
pub mod handshake;
pub mod mask;
pub mod message;
#[cfg(feature = "redis")]
pub mod resp;
pub mod response;
pub mod sse;
pub mod utf8;

pub use close::CloseCode;
pub use error::{HandshakeError, ProtocolError};
pub use frame::{FrameHeader, OpCode};

/// The outcome of a parse over a buffer that may not hold the whole item yet.
///
/// `Partial` is not an error: feed more bytes and call again.
#[must_use]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status<T> {
    /// The item is complete; the value usually carries how many bytes it took.
    Complete(T),
    /// More bytes are needed.
    Partial,
}

impl<T> Status<T> {
    /// True for [`Status::Complete`].
    pub fn is_complete(&self) -> bool {
        matches!(self, Status::Complete(_))
    }

    /// True for [`Status::Partial`].
    pub fn is_partial(&self) -> bool {
        matches!(self, Status::Partial)
    }
}

/// Which end of the connection is parsing: it decides the masking rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Parses frames sent by a client: they MUST be masked (RFC 6455 §5.1).
    Server,
    /// Parses frames sent by a server: they MUST NOT be masked (RFC 6455 §5.1).
    Client,
}

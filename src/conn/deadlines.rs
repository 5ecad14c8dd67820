//! Time for one connection: the loop's monotonic [`Millis`] and the deadlines that derive
//! from the last thing that happened.
//!
//! Nothing here reads a clock: `now` always comes from the caller.

use core::fmt;
use std::time::Duration;

/// Milliseconds since the loop started: small, monotonic, and easy to write in tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Millis(pub u64);

impl Millis {
    /// This instant plus `d`, saturating.
    pub fn after(self, d: Duration) -> Millis {
        let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        Millis(self.0.saturating_add(ms))
    }

    /// Milliseconds from `earlier` to this instant, or 0 if `earlier` is later.
    pub fn since(self, earlier: Millis) -> u64 {
        self.0.saturating_sub(earlier.0)
    }
}

impl fmt::Display for Millis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}ms", self.0)
    }
}

/// The instants a connection's deadlines derive from. 48 bytes.
#[derive(Clone, Copy, Debug, Default)]
pub struct Deadlines {
    /// The handshake deadline while connecting, the close deadline while closing.
    pub phase: Option<Millis>,
    /// When the peer last sent anything: liveness is receive-based. On an event stream, which
    /// has no pings, the later of that and the last keep-alive: the next keep-alive is due
    /// `event_keepalive` after it or after the last event, whichever is later.
    pub last_rx: Millis,
    /// When the unanswered ping was sent (never on an event stream).
    pub ping_sent: Option<Millis>,
    /// When a data message last went either way, for the idle timeout.
    pub last_message: Millis,
}

/// What a due deadline asks of the loop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeadlineAction {
    /// Nothing was due (the deadline moved later since it was scheduled).
    Nothing,
    /// A ping was written to the output; keep the connection.
    Ping,
    /// A keep-alive comment was written to an event stream's output.
    KeepAlive,
    /// A close frame was written to the output (idle timeout); keep the connection until the
    /// close completes.
    Close,
    /// Close the TCP connection now, without a close frame.
    Drop(Expired),
}

/// Which deadline expired.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expired {
    /// The request head did not arrive in time.
    Handshake,
    /// No frame came back within the pong timeout after a ping.
    Pong,
    /// The close handshake or the final flush did not finish in time.
    Close,
}

impl Expired {
    /// A short description, for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Expired::Handshake => "handshake timeout",
            Expired::Pong => "pong timeout",
            Expired::Close => "close timeout",
        }
    }
}

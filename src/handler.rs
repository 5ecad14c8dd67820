//! Layer 4: what an application implements — the upgrade decision, open, message, drain,
//! close — and the views it is handed.

pub use crate::conn::{Decision, HttpRequest, Protocol, Response};
use crate::ctx::Ctx;
use crate::proto::CloseCode;
use crate::stats::Stats;

/// A message, borrowed from the buffer it arrived in (zero copy).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Message<'a> {
    /// A text message, valid UTF-8.
    Text(&'a str),
    /// A binary message.
    Binary(&'a [u8]),
}

impl<'a> Message<'a> {
    /// The payload bytes.
    pub fn as_bytes(&self) -> &'a [u8] {
        match *self {
            Message::Text(s) => s.as_bytes(),
            Message::Binary(b) => b,
        }
    }

    /// The payload length in bytes.
    pub fn len(&self) -> usize {
        self.as_bytes().len()
    }

    /// True for an empty payload.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What became of a message handed to [`Ctx::send`] and friends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendStatus {
    /// Nothing was waiting: the message was written, or goes out in this callback's batch.
    Sent,
    /// It waits behind bytes the peer has not read yet; [`Ctx::buffered_amount`] says how
    /// many, and [`Handler::on_drain`] tells when the queue is back under the low-water mark.
    Queued,
    /// Not sent: it would have queued behind more than `max_backpressure` bytes and the
    /// slow-consumer policy is [`crate::SlowConsumer::Drop`] (counted in the stats).
    Dropped,
    /// Not sent: the connection is not open (closing, closed, or just closed as a slow
    /// consumer under [`crate::SlowConsumer::Close`]).
    Closed,
    /// Not sent: larger than [`crate::Config::max_send_size`].
    TooLarge,
}

impl SendStatus {
    /// True for [`SendStatus::Sent`] and [`SendStatus::Queued`]: the peer will get it.
    pub fn is_delivered(self) -> bool {
        matches!(self, SendStatus::Sent | SendStatus::Queued)
    }
}

/// The application's side of the server. Every method runs on the loop's thread: keep it
/// short, and hand long work to another thread that answers through a
/// [`ServerHandle`](crate::ServerHandle).
///
/// Each connection carries a `State` of the handler's choosing, made by
/// [`Handler::on_upgrade`], handed mutably to every callback about that connection, and
/// given back by value to [`Handler::on_close`], after which it is dropped. Its size is part
/// of the memory each connection costs (see the README's formula).
pub trait Handler {
    /// The per-connection state (`()` for none).
    type State;

    /// Decides an upgrade request that passed the protocol checks and the Origin allow-list:
    /// accept it with the connection's state (and optionally a subprotocol from
    /// [`HttpRequest::offered`]), or reject it with a status.
    fn on_upgrade(&mut self, req: &HttpRequest<'_>) -> Decision<Self::State>;

    /// Answers a plain HTTP request (no `Upgrade: websocket`). Default: 400, as RFC 6455
    /// §4.2.1 calls for a request that is not an upgrade. `stats` is the server's counters.
    fn on_request(&mut self, req: &HttpRequest<'_>, stats: &Stats) -> Response {
        let _ = (req, stats);
        Response::status(400)
    }

    /// A connection upgraded; `ctx` can send to it at once.
    fn on_open(&mut self, ctx: &mut Ctx<'_>, state: &mut Self::State) {
        let _ = (ctx, state);
    }

    /// A complete message arrived, borrowed from the read buffer.
    fn on_message(&mut self, ctx: &mut Ctx<'_>, state: &mut Self::State, msg: Message<'_>);

    /// The connection's queue went from above [`crate::Config::drain_low_water`] bytes to at
    /// or below it: a producer that paused on [`SendStatus::Queued`] can go on. Also called
    /// once after [`Ctx::notify_drained`], when nothing is queued any more.
    fn on_drain(&mut self, ctx: &mut Ctx<'_>, state: &mut Self::State) {
        let _ = (ctx, state);
    }

    /// The connection closed: the peer's code, the server's, or
    /// [`CloseCode::ABNORMAL`] (1006) when the TCP connection ended without a close frame.
    /// Called exactly once for every connection that opened, and no callback about it
    /// follows; `ctx` can no longer send to this connection, but can publish to others.
    fn on_close(&mut self, ctx: &mut Ctx<'_>, state: Self::State, code: CloseCode, reason: &str) {
        let _ = (ctx, state, code, reason);
    }
}

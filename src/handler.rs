//! Layer 4: what an application implements — the upgrade decision (and the event-stream
//! one), open, message, drain, close — and the views it is handed.

pub use crate::conn::{Decision, HttpRequest, Kind, Protocol, Response};
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
    /// Not sent: larger than [`crate::Config::max_send_size`] (on an event stream: the
    /// encoded event, its `id:` and `data:` lines together).
    TooLarge,
    /// Not sent: binary data to an event stream, which carries text only.
    NotText,
    /// Not sent: an event id with CR, LF or NUL ([`crate::Ctx::send_event`]). A line break
    /// would end the `id:` field, and a parser ignores an id holding NUL.
    InvalidEventId,
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
/// [`Handler::on_upgrade`] (or [`Handler::on_event_stream`]), handed mutably to every
/// callback about that connection, and given back by value to [`Handler::on_close`], after
/// which it is dropped. Its size is part of the memory each connection costs (see the
/// README's formula).
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

    /// Decides whether a plain `GET` (one without `Upgrade: websocket`) becomes an event stream
    /// (Server-Sent Events, `text/event-stream`). Asked before [`Handler::on_request`]; `None`
    /// (the default) leaves the request to it.
    ///
    /// `Some(Decision::Accept(state))` opens the stream: the server writes a `200` head with
    /// `Content-Type: text/event-stream` and no length (the body ends when the connection
    /// does), a `retry:` line ([`crate::Config::event_retry`]), and calls
    /// [`Handler::on_open`]. From then on it is a connection like an upgraded one — the same
    /// state, limits, write queue, slow-consumer policy, topics and counting — of
    /// [`Kind::EventStream`]: [`Ctx::send`] writes text as an event, a keep-alive comment
    /// replaces pings, and the peer's bytes are read and dropped.
    /// `Decision::AcceptProtocol` is taken as `Accept` (a stream has no subprotocol);
    /// `Reject` and `Refuse` answer as for an upgrade.
    ///
    /// The Origin allow-list ([`crate::Config::allowed_origins`]) applies as to an upgrade,
    /// after this call: an accepted request from an origin not on it gets 403 and its state
    /// is dropped without `on_open`. A cross-origin request that passes is answered with
    /// `Access-Control-Allow-Origin` naming its origin, so the page can read the stream.
    fn on_event_stream(&mut self, req: &HttpRequest<'_>) -> Option<Decision<Self::State>> {
        let _ = req;
        None
    }

    /// A connection opened (upgraded, or an event stream began); `ctx` can send to it at once.
    fn on_open(&mut self, ctx: &mut Ctx<'_>, state: &mut Self::State) {
        let _ = (ctx, state);
    }

    /// A complete message arrived, borrowed from the read buffer. Never for an event stream.
    fn on_message(&mut self, ctx: &mut Ctx<'_>, state: &mut Self::State, msg: Message<'_>);

    /// The connection's queue went from above [`crate::Config::drain_low_water`] bytes to at
    /// or below it: a producer that paused on [`SendStatus::Queued`] can go on. Also called
    /// once after [`Ctx::notify_drained`], when nothing is queued any more.
    fn on_drain(&mut self, ctx: &mut Ctx<'_>, state: &mut Self::State) {
        let _ = (ctx, state);
    }

    /// The connection closed: the peer's code, the server's, or
    /// [`CloseCode::ABNORMAL`] (1006) when the TCP connection ended without a close frame.
    /// An event stream has no close frames: it closes with the server's code (its close, a
    /// slow consumer's 1008, 1001 at shutdown, 1000 at the idle timeout) or 1006 when the
    /// peer went away.
    /// Called exactly once for every connection that opened, and no callback about it
    /// follows; `ctx` can no longer send to this connection, but can publish to others.
    fn on_close(&mut self, ctx: &mut Ctx<'_>, state: Self::State, code: CloseCode, reason: &str) {
        let _ = (ctx, state, code, reason);
    }
}

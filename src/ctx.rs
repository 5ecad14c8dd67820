//! [`Ctx`]: what a [`Handler`](crate::Handler) callback can do — send, close, subscribe,
//! publish, broadcast — on behalf of one connection.

use std::net::SocketAddr;

use crate::config::Config;
use crate::conn::{Kind, State};
use crate::handler::{Message, SendStatus};
use crate::proto::CloseCode;
use crate::server::inbox::ConnId;
use crate::server::Core;
use crate::stats::Stats;

/// What a publish or broadcast did, one count per recipient.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Delivery {
    /// Written, or going out in this callback's batch.
    pub sent: usize,
    /// Queued behind bytes the recipient has not read yet.
    pub queued: usize,
    /// Dropped by the slow-consumer policy `Drop`.
    pub dropped: usize,
    /// Not delivered: the recipient was closing, or was closed as a slow consumer.
    pub closed: usize,
    /// Not delivered: an event stream cannot carry it — binary data
    /// ([`SendStatus::NotText`]), or an event over `max_send_size` once encoded
    /// ([`SendStatus::TooLarge`]). WebSocket recipients of the same publish still get it.
    pub refused: usize,
}

impl Delivery {
    /// Recipients that will get the message: sent or queued.
    pub fn delivered(&self) -> usize {
        self.sent + self.queued
    }

    pub(crate) fn count(&mut self, status: SendStatus) {
        match status {
            SendStatus::Sent => self.sent += 1,
            SendStatus::Queued => self.queued += 1,
            SendStatus::Dropped => self.dropped += 1,
            SendStatus::Closed => self.closed += 1,
            SendStatus::TooLarge | SendStatus::NotText | SendStatus::InvalidEventId => {
                self.refused += 1;
            }
        }
    }
}

/// The outcome of [`Ctx::subscribe`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Subscribed {
    /// Subscribed now.
    Added,
    /// It was subscribed to this pattern already.
    Already,
    /// It holds [`Config::max_subscriptions`] patterns already, or the pattern has more than
    /// [`crate::config::MAX_PATTERN_LEVELS`] levels.
    Limit,
    /// The connection is not open.
    Closed,
}

/// The context of a callback: the connection it is about, and the server around it.
pub struct Ctx<'a> {
    core: &'a mut Core,
    id: ConnId,
}

impl<'a> Ctx<'a> {
    pub(crate) fn new(core: &'a mut Core, id: ConnId) -> Self {
        Ctx { core, id }
    }

    /// This connection's id, valid for [`crate::ServerHandle`] calls from other threads.
    pub fn id(&self) -> ConnId {
        self.id
    }

    /// This connection's peer address, while it exists.
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.core.peer_addr(self.id)
    }

    /// This connection's state.
    pub fn state(&self) -> State {
        self.core.conn_state(self.id)
    }

    /// What this connection is: a WebSocket, or an event stream
    /// ([`crate::Handler::on_event_stream`]). [`Kind::WebSocket`] once it is gone.
    pub fn kind(&self) -> Kind {
        self.core.kind(self.id).unwrap_or_default()
    }

    /// What another connection is, while it exists.
    pub fn kind_of(&self, id: ConnId) -> Option<Kind> {
        self.core.kind(id)
    }

    /// The subprotocol this connection speaks, if one was chosen.
    pub fn protocol(&self) -> Option<&str> {
        self.core.protocol(self.id)
    }

    /// Sends a message to this connection: a WebSocket frame, or on an event stream one
    /// event, `data: LINE` for each line of the text (split at CRLF, CR or LF, as the
    /// browser's parser splits them; it hands the page the lines joined with LF). Binary data
    /// to an event stream is refused ([`SendStatus::NotText`]), and so is an event over
    /// `max_send_size` once encoded ([`SendStatus::TooLarge`]).
    pub fn send(&mut self, msg: Message<'_>) -> SendStatus {
        self.core.send(self.id, msg)
    }

    /// Sends a message with an event id: on an event stream, an `id: ID` line before the
    /// data (the browser sends the last one it saw as `Last-Event-ID` when it reconnects); a
    /// WebSocket gets the plain frame. An id with CR, LF or NUL is refused on either kind,
    /// and nothing is sent ([`SendStatus::InvalidEventId`]).
    pub fn send_event(&mut self, event_id: &str, msg: Message<'_>) -> SendStatus {
        self.core.send_event(self.id, event_id, msg)
    }

    /// As [`Ctx::send_event`], to another connection.
    pub fn send_event_to(&mut self, id: ConnId, event_id: &str, msg: Message<'_>) -> SendStatus {
        self.core.send_event(id, event_id, msg)
    }

    /// Sends text to this connection.
    pub fn send_text(&mut self, text: &str) -> SendStatus {
        self.send(Message::Text(text))
    }

    /// Sends binary data to this connection.
    pub fn send_binary(&mut self, data: &[u8]) -> SendStatus {
        self.send(Message::Binary(data))
    }

    /// Sends a message to another connection.
    pub fn send_to(&mut self, id: ConnId, msg: Message<'_>) -> SendStatus {
        self.core.send(id, msg)
    }

    /// Bytes queued for this connection that its socket has not taken yet. (Frames this
    /// callback sent to it wait in a batch, at most 64 KiB, that is written when the batch is
    /// full or the callback returns; they count here once the socket refuses them.)
    pub fn buffered_amount(&self) -> usize {
        self.core.buffered_amount(self.id)
    }

    /// Asks for one [`Handler::on_drain`](crate::Handler::on_drain) call once nothing is
    /// queued for this connection: after this callback's batch is written if the socket
    /// takes all of it (in the next turn when nothing is queued and this is not the
    /// connection's own callback), else when its queue empties. For a producer that paused where the
    /// low-water notice cannot come: its queue is at or below
    /// [`Config::drain_low_water`] already (its next message is too large to queue behind it,
    /// or it sent what it allows itself in one callback), or nothing is queued at all.
    pub fn notify_drained(&mut self) {
        self.core.notify_drained(self.id);
    }

    /// Bytes queued for another connection (0 if it is gone).
    pub fn buffered_amount_of(&self, id: ConnId) -> usize {
        self.core.buffered_amount(id)
    }

    /// Starts the close handshake with this connection. [`SendStatus::Closed`] if it is not
    /// open; the report-only codes 1005 and 1006 are refused and nothing is sent
    /// ([`SendStatus::Closed`] too). An event stream has no close frame: what is queued is
    /// written, then the stream ends (the TCP connection closes); `code` is what
    /// [`crate::Handler::on_close`] is told.
    pub fn close(&mut self, code: CloseCode, reason: &str) -> SendStatus {
        self.core.close(self.id, code, reason)
    }

    /// Starts the close handshake with another connection.
    pub fn close_conn(&mut self, id: ConnId, code: CloseCode, reason: &str) -> SendStatus {
        self.core.close(id, code, reason)
    }

    /// Subscribes this connection to a topic pattern (`+` and `#` wildcards allowed).
    pub fn subscribe(&mut self, pattern: &str) -> Subscribed {
        self.core.subscribe(self.id, pattern)
    }

    /// How many patterns this connection is subscribed to.
    pub fn subscriptions(&self) -> usize {
        self.core.topics.count(self.id)
    }

    /// Unsubscribes this connection from a pattern. False if it was not subscribed.
    pub fn unsubscribe(&mut self, pattern: &str) -> bool {
        self.core.topics.unsubscribe(self.id, pattern)
    }

    /// Publishes to every subscriber of `topic`: a frame for the WebSocket subscribers and an
    /// event (no `id:` line) for the event-stream subscribers, each built once, and only if a
    /// subscriber of that kind matched.
    pub fn publish(&mut self, topic: &str, msg: Message<'_>) -> Delivery {
        self.core.publish(topic, msg, None)
    }

    /// As [`Ctx::publish`], with an `id:` line in the event the event-stream subscribers get
    /// (WebSocket subscribers get the same frame as from [`Ctx::publish`]). An id with CR, LF
    /// or NUL refuses the whole publish, as a message over `max_send_size` does: nothing is
    /// sent and the counts are all zero. Exported publishes
    /// ([`crate::Server::drain_exports`]) keep the message, not the id.
    pub fn publish_event(&mut self, topic: &str, event_id: &str, msg: Message<'_>) -> Delivery {
        self.core.publish(topic, msg, Some(event_id))
    }

    /// Sends to every open connection, each encoding built once (an event stream gets the
    /// message as an event).
    pub fn broadcast(&mut self, msg: Message<'_>) -> Delivery {
        self.core.broadcast(msg)
    }

    /// The loop's clock: the time from the server's start to this turn (the time given to
    /// [`crate::Server::turn`], or the harness's). The same clock as [`crate::HttpRequest::now`].
    pub fn now(&self) -> std::time::Duration {
        self.core.now()
    }

    /// The server's configuration.
    pub fn config(&self) -> &Config {
        self.core.config()
    }

    /// The server's counters.
    pub fn stats(&self) -> Stats {
        self.core.stats()
    }
}

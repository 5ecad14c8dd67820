//! [`Ctx`]: what a [`Handler`](crate::Handler) callback can do — send, close, subscribe,
//! publish, broadcast — on behalf of one connection.

use std::net::SocketAddr;

use crate::config::Config;
use crate::conn::State;
use crate::handler::Message;
use crate::proto::CloseCode;
use crate::server::inbox::ConnId;
use crate::server::Core;
use crate::stats::Stats;

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
        self.core.slot(self.id).map(|s| s.peer)
    }

    /// This connection's state.
    pub fn state(&self) -> State {
        self.core
            .slot(self.id)
            .map_or(State::Closed, |s| s.conn.state())
    }

    /// Sends a message to this connection. Returns false if it was not sent: the connection
    /// is not open, or it is a slow consumer (see [`crate::SlowConsumer`]).
    pub fn send(&mut self, msg: Message<'_>) -> bool {
        self.core.send(self.id, msg)
    }

    /// Sends text to this connection.
    pub fn send_text(&mut self, text: &str) -> bool {
        self.send(Message::Text(text))
    }

    /// Sends binary data to this connection.
    pub fn send_binary(&mut self, data: &[u8]) -> bool {
        self.send(Message::Binary(data))
    }

    /// Sends a message to another connection.
    pub fn send_to(&mut self, id: ConnId, msg: Message<'_>) -> bool {
        self.core.send(id, msg)
    }

    /// Starts the close handshake with this connection.
    pub fn close(&mut self, code: CloseCode, reason: &str) {
        self.core.close(self.id, code, reason);
    }

    /// Starts the close handshake with another connection.
    pub fn close_conn(&mut self, id: ConnId, code: CloseCode, reason: &str) {
        self.core.close(id, code, reason);
    }

    /// Subscribes this connection to a topic pattern (`+` and `#` wildcards allowed). False if
    /// it was subscribed already, is not open, or is at
    /// [`crate::Config::max_subscriptions`].
    pub fn subscribe(&mut self, pattern: &str) -> bool {
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

    /// Publishes to every subscriber of `topic`, framing the message once. Returns how many
    /// subscribers it was written or queued to.
    pub fn publish(&mut self, topic: &str, msg: Message<'_>) -> usize {
        self.core.publish(topic, msg)
    }

    /// Sends to every open connection, framing the message once. Returns how many it was
    /// written or queued to.
    pub fn broadcast(&mut self, msg: Message<'_>) -> usize {
        self.core.broadcast(msg)
    }

    /// The server's configuration.
    pub fn config(&self) -> &Config {
        self.core.config()
    }

    /// The server's counters.
    pub fn stats(&self) -> &Stats {
        &self.core.stats
    }
}

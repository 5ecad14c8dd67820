//! Routing outgoing messages: to the connection being served (its batch, or a direct write
//! for a large payload), to another connection (written at once), or to many (encoded once
//! per kind of recipient, the bytes shared by every queue that needs them). Where the bytes
//! go inside a connection, and in what order, is the [`Outbox`](crate::conn::Outbox)'s rule,
//! not this file's.
//!
//! A WebSocket gets a frame, an event stream an event ([`sse`]): a fan-out builds the frame
//! only if a WebSocket recipient matched and the event only if an event stream did, each
//! once. While no event stream is open, a fan-out is the WebSocket-only path it always was.

use std::rc::Rc;

use log::debug;

use super::exports;
use super::inbox::ConnId;
use super::{Buf, Core, DIRECT_WRITE_MIN};
use crate::config::SlowConsumer;
use crate::conn::{opcode, outbox, FrameHead, Kind, Offer};
use crate::ctx::{Delivery, Subscribed};
use crate::handler::{Message, SendStatus};
use crate::proto::message::DataKind;
use crate::proto::sse::{self, EventId};
use crate::proto::CloseCode;

/// What a fan-out delivers: a message, or the frame of one that another thread encoded.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Payload<'m> {
    Message(Message<'m>),
    Frame(&'m [u8]),
}

impl<'m> Payload<'m> {
    /// The WebSocket frame: the one given, or encoded into `buf`.
    fn frame<'b>(self, buf: &'b mut Vec<u8>) -> &'b [u8]
    where
        'm: 'b,
    {
        match self {
            Payload::Frame(frame) => frame,
            Payload::Message(msg) => {
                outbox::encode(buf, opcode(kind(&msg)), msg.as_bytes());
                buf
            }
        }
    }

    /// The message (of a frame the server encoded: it always has one).
    fn message(self) -> Option<Message<'m>> {
        match self {
            Payload::Message(msg) => Some(msg),
            Payload::Frame(frame) => exports::message_of(frame),
        }
    }
}

fn kind(msg: &Message<'_>) -> DataKind {
    match msg {
        Message::Text(_) => DataKind::Text,
        Message::Binary(_) => DataKind::Binary,
    }
}

impl Core {
    /// Sends one message to one connection.
    pub(crate) fn send(&mut self, id: ConnId, msg: Message<'_>) -> SendStatus {
        let key = id.key as usize;
        let payload = msg.as_bytes();
        if payload.len() > self.cfg.send_limit() {
            return SendStatus::TooLarge;
        }
        let now = self.now;
        let limit = self.cfg.max_backpressure;
        let current = self.current == Some(key);
        let Some(slot) = self.conns.get_mut(key).filter(|s| s.gen == id.gen) else {
            return SendStatus::Closed;
        };
        if !slot.conn.is_open() {
            return SendStatus::Closed;
        }
        if slot.conn.kind() == Kind::EventStream {
            return self.send_stream(key, msg, None);
        }
        if current && payload.len() >= DIRECT_WRITE_MIN {
            return self.send_direct(key, kind(&msg), payload);
        }
        if current {
            // The common echo path: straight into the batch written after the callbacks.
            let offer = slot
                .conn
                .send(&mut self.batch, kind(&msg), payload, limit, now);
            let status = self.offered(key, offer);
            if self.batch.len() >= self.flush_at() {
                self.flush(key, Buf::Batch);
                self.settle(key);
            }
            return status;
        }
        let mut frame = std::mem::take(&mut self.scratch);
        outbox::encode(&mut frame, opcode(kind(&msg)), payload);
        let status = self.deliver(key, &frame, &mut None);
        frame.clear();
        self.scratch = frame;
        status
    }

    /// Sends one message with an event id: an event with an `id:` line to an event stream,
    /// the plain frame to a WebSocket. An id a stream cannot carry is refused for either.
    pub(crate) fn send_event(
        &mut self,
        id: ConnId,
        event_id: &str,
        msg: Message<'_>,
    ) -> SendStatus {
        let Some(event_id) = EventId::new(event_id) else {
            return SendStatus::InvalidEventId;
        };
        match self.live(id).map(|s| s.conn.kind()) {
            None => SendStatus::Closed,
            Some(Kind::WebSocket) => self.send(id, msg),
            Some(Kind::EventStream) => self.send_stream(id.key as usize, msg, Some(event_id)),
        }
    }

    /// One event to one event stream: encoded in the scratch buffer, then delivered as a
    /// frame is (batch, direct write or queue). Text only; the event within the send limit.
    fn send_stream(&mut self, key: usize, msg: Message<'_>, id: Option<EventId<'_>>) -> SendStatus {
        if !self.conns.get(key).is_some_and(|s| s.conn.is_open()) {
            return SendStatus::Closed;
        }
        let mut event = std::mem::take(&mut self.scratch);
        let status = match encode_event(&mut event, msg, id, self.cfg.send_limit()) {
            Err(status) => status,
            Ok(()) => self.deliver(key, &event, &mut None),
        };
        event.clear();
        self.scratch = event;
        if self.current == Some(key) && self.batch.len() >= self.flush_at() {
            self.flush(key, Buf::Batch);
            self.settle(key);
        }
        status
    }

    /// A large message to the connection being served: after the batch so far, written with
    /// one vectored write from where the payload lies (the read buffer, for an echo) instead
    /// of being copied into the batch. Only what the socket does not take is copied, into the
    /// queue.
    fn send_direct(&mut self, key: usize, kind: DataKind, payload: &[u8]) -> SendStatus {
        if !self.batch.is_empty() {
            self.flush(key, Buf::Batch);
        }
        let now = self.now;
        let limit = self.cfg.max_backpressure;
        let head = FrameHead::new(opcode(kind), payload.len());
        let Some(slot) = self.conns.get_mut(key) else {
            return SendStatus::Closed;
        };
        let offer = slot
            .conn
            .outbox()
            .admits(head.as_bytes().len() + payload.len(), limit);
        match offer {
            Offer::TooSlow => return self.too_slow(key),
            Offer::Queued => {
                let mut none = Vec::new();
                slot.conn
                    .outbox_mut()
                    .data(&mut none, &head, payload, limit);
            }
            Offer::Staged => match slot.io.write_parts(head.as_bytes(), payload) {
                Ok(written) => {
                    self.stats.bytes_out += written as u64;
                    let h = head.as_bytes();
                    let rest_head = h.get(written..).unwrap_or_default();
                    let rest = payload
                        .get(written.saturating_sub(h.len())..)
                        .unwrap_or_default();
                    slot.conn
                        .outbox_mut()
                        .unwritten(&[rest_head, rest], written > 0);
                }
                Err(_) => {
                    self.remove(key);
                    return SendStatus::Closed;
                }
            },
        }
        slot.conn.note_message(now);
        self.stats.messages_out += 1;
        if offer == Offer::Queued {
            SendStatus::Queued
        } else {
            SendStatus::Sent
        }
    }

    /// The status of an offer made to the connection being served.
    fn offered(&mut self, key: usize, offer: Option<Offer>) -> SendStatus {
        match offer {
            None => SendStatus::Closed,
            Some(Offer::TooSlow) => self.too_slow(key),
            Some(Offer::Staged) => {
                self.stats.messages_out += 1;
                SendStatus::Sent
            }
            Some(Offer::Queued) => {
                self.stats.messages_out += 1;
                SendStatus::Queued
            }
        }
    }

    /// Gives one framed message to a connection: written at once if its queue is empty,
    /// queued (sharing `shared` with other recipients) if not, or refused by the
    /// slow-consumer policy.
    fn deliver(&mut self, key: usize, frame: &[u8], shared: &mut Option<Rc<[u8]>>) -> SendStatus {
        let current = self.current == Some(key);
        let limit = self.cfg.max_backpressure;
        let Some(slot) = self.conns.get_mut(key) else {
            return SendStatus::Closed;
        };
        if !slot.conn.is_open() {
            return SendStatus::Closed;
        }
        let status = match slot.conn.outbox().admits(frame.len(), limit) {
            Offer::TooSlow => return self.too_slow(key),
            Offer::Staged if current => {
                self.batch.extend_from_slice(frame);
                SendStatus::Sent
            }
            Offer::Staged => match slot.io.write(frame) {
                Ok(n) => {
                    self.stats.bytes_out += n as u64;
                    if n < frame.len() {
                        let rc = shared.get_or_insert_with(|| Rc::from(frame)).clone();
                        slot.conn.outbox_mut().shared(rc, n);
                        SendStatus::Queued
                    } else {
                        SendStatus::Sent
                    }
                }
                Err(_) => {
                    self.remove(key);
                    return SendStatus::Closed;
                }
            },
            Offer::Queued => {
                let rc = shared.get_or_insert_with(|| Rc::from(frame)).clone();
                slot.conn.outbox_mut().shared(rc, 0);
                SendStatus::Queued
            }
        };
        slot.conn.note_message(self.now);
        self.stats.messages_out += 1;
        if !current {
            self.settle(key);
        }
        status
    }

    /// A frame from another thread for one connection (an event stream gets its message as
    /// an event, with `event_id` if there is one).
    pub(crate) fn deliver_frame(
        &mut self,
        id: ConnId,
        frame: &[u8],
        event_id: Option<EventId<'_>>,
    ) -> SendStatus {
        match self.live(id).map(|s| s.conn.kind()) {
            None => SendStatus::Closed,
            Some(Kind::WebSocket) => self.deliver(id.key as usize, frame, &mut None),
            Some(Kind::EventStream) => match exports::message_of(frame) {
                Some(msg) => self.send_stream(id.key as usize, msg, event_id),
                None => SendStatus::NotText,
            },
        }
    }

    pub(crate) fn subscribe(&mut self, id: ConnId, pattern: &str) -> Subscribed {
        if !self.live(id).is_some_and(|s| s.conn.is_open()) {
            return Subscribed::Closed;
        }
        if self.topics.count(id) >= self.cfg.max_subscriptions
            || pattern
                .split('/')
                .nth(crate::config::MAX_PATTERN_LEVELS)
                .is_some()
        {
            return Subscribed::Limit;
        }
        if self.topics.subscribe(id, pattern) {
            Subscribed::Added
        } else {
            Subscribed::Already
        }
    }

    /// A local publish: delivered, then kept for [`crate::Server::drain_exports`] (the
    /// message only: an event id is not exported).
    pub(crate) fn publish(
        &mut self,
        topic: &str,
        msg: Message<'_>,
        event_id: Option<&str>,
    ) -> Delivery {
        if msg.len() > self.cfg.send_limit() {
            return Delivery::default();
        }
        let d = self.import(topic, msg, event_id);
        if self.exports.on() {
            self.exports.keep(topic, &msg);
        }
        d
    }

    /// Delivers to every subscriber of `topic`, each encoding built once; nothing is
    /// exported. An event id a stream cannot carry refuses the whole publish, as a message
    /// over the send limit does.
    pub(crate) fn import(
        &mut self,
        topic: &str,
        msg: Message<'_>,
        event_id: Option<&str>,
    ) -> Delivery {
        if msg.len() > self.cfg.send_limit() {
            return Delivery::default();
        }
        let id = match event_id.map(EventId::new) {
            None => None,
            Some(Some(id)) => Some(id),
            Some(None) => return Delivery::default(),
        };
        self.publish_payload(topic, Payload::Message(msg), id)
    }

    /// Delivers a message (or a frame from another thread) to every subscriber of `topic`.
    pub(crate) fn publish_payload(
        &mut self,
        topic: &str,
        payload: Payload<'_>,
        id: Option<EventId<'_>>,
    ) -> Delivery {
        let mut targets = std::mem::take(&mut self.targets);
        self.topics.matching(topic, &mut targets);
        let d = self.fan_out(&targets, payload, id);
        targets.clear();
        self.targets = targets;
        d
    }

    /// Delivers to every open connection, each encoding built once.
    pub(crate) fn broadcast(&mut self, msg: Message<'_>) -> Delivery {
        if msg.len() > self.cfg.send_limit() {
            return Delivery::default();
        }
        self.broadcast_payload(Payload::Message(msg))
    }

    /// Delivers a message (or a frame from another thread) to every open connection.
    pub(crate) fn broadcast_payload(&mut self, payload: Payload<'_>) -> Delivery {
        let mut targets = std::mem::take(&mut self.targets);
        targets.extend(
            self.conns
                .iter()
                .filter(|(_, s)| s.conn.is_open())
                .map(|(k, s)| ConnId {
                    key: k as u32,
                    gen: s.gen,
                }),
        );
        let d = self.fan_out(&targets, payload, None);
        targets.clear();
        self.targets = targets;
        d
    }

    /// Delivers one message to `targets`: the frame to WebSockets, the event to event
    /// streams, each encoded at most once, in the scratch buffer, and shared by every queue
    /// that keeps it. No allocation unless a recipient queues it (then one, shared).
    fn fan_out(
        &mut self,
        targets: &[ConnId],
        payload: Payload<'_>,
        id: Option<EventId<'_>>,
    ) -> Delivery {
        let mut buf = std::mem::take(&mut self.scratch);
        let mut d = Delivery::default();
        if self.stats.event_streams_open == 0 {
            // WebSockets only, the common case: one frame, no look at the kinds.
            let frame = payload.frame(&mut buf);
            let mut shared = None;
            for &id in targets {
                if self.live(id).is_some() {
                    d.count(self.deliver(id.key as usize, frame, &mut shared));
                }
            }
        } else {
            let (mut sockets, mut streams) = (0usize, 0usize);
            for &id in targets {
                match self.slot(id).map(|s| s.conn.kind()) {
                    Some(Kind::WebSocket) => sockets += 1,
                    Some(Kind::EventStream) => streams += 1,
                    None => {}
                }
            }
            if sockets > 0 {
                let frame = payload.frame(&mut buf);
                self.deliver_kind(targets, Kind::WebSocket, frame, &mut d);
            }
            if streams > 0 {
                buf.clear();
                let limit = self.cfg.send_limit();
                let encoded = match payload.message() {
                    Some(msg) => encode_event(&mut buf, msg, id, limit),
                    None => Err(SendStatus::NotText),
                };
                match encoded {
                    Ok(()) => self.deliver_kind(targets, Kind::EventStream, &buf, &mut d),
                    Err(status) => (0..streams).for_each(|_| d.count(status)),
                }
            }
        }
        buf.clear();
        self.scratch = buf;
        d
    }

    /// Delivers `bytes` to the live targets of this kind, counting each in `d`.
    fn deliver_kind(&mut self, targets: &[ConnId], kind: Kind, bytes: &[u8], d: &mut Delivery) {
        let mut shared = None;
        for &id in targets {
            if self.slot(id).is_some_and(|s| s.conn.kind() == kind) {
                d.count(self.deliver(id.key as usize, bytes, &mut shared));
            }
        }
    }

    /// A message would queue behind more than `max_backpressure` bytes: the policy applies
    /// and the message is not sent.
    fn too_slow(&mut self, key: usize) -> SendStatus {
        match self.cfg.slow_consumer {
            SlowConsumer::Drop => {
                self.stats.slow_drops += 1;
                SendStatus::Dropped
            }
            SlowConsumer::Close => {
                self.close_slow(key);
                SendStatus::Closed
            }
        }
    }

    /// The slow-consumer close: frames not yet begun are dropped and a 1008 close follows
    /// the one on the wire (an event stream ends after the event on the wire).
    fn close_slow(&mut self, key: usize) {
        let now = self.now;
        let current = self.current == Some(key);
        let Some(id) = self.id_of(key) else {
            return;
        };
        let Some(slot) = self.conns.get_mut(key) else {
            return;
        };
        let buf = if current {
            &mut self.batch
        } else {
            &mut self.scratch
        };
        if slot.conn.close_slow(buf, &self.cfg, now).is_some() {
            self.stats.slow_closes += 1;
            debug!("[{id}] slow consumer: closing with 1008");
            self.notify_close(id, CloseCode::POLICY, "slow consumer");
            if !current {
                self.flush(key, Buf::Scratch);
                self.settle(key);
            }
        }
    }

    /// Starts a server-initiated close; reported to the handler at once.
    pub(crate) fn close(&mut self, id: ConnId, code: CloseCode, reason: &str) -> SendStatus {
        let key = id.key as usize;
        let now = self.now;
        let current = self.current == Some(key);
        let Some(slot) = self.conns.get_mut(key).filter(|s| s.gen == id.gen) else {
            return SendStatus::Closed;
        };
        let buf = if current {
            &mut self.batch
        } else {
            &mut self.scratch
        };
        let queued = !slot.conn.outbox().is_empty();
        if !slot.conn.close(buf, code, reason, &self.cfg, now) {
            return SendStatus::Closed;
        }
        debug!("[{id}] closing with {code}");
        self.notify_close(id, code, reason);
        if !current {
            self.flush(key, Buf::Scratch);
            self.settle(key);
        }
        if queued {
            SendStatus::Queued
        } else {
            SendStatus::Sent
        }
    }
}

/// Encodes one event for an event stream into `out` (empty): text only, and the whole event
/// within the send limit.
fn encode_event(
    out: &mut Vec<u8>,
    msg: Message<'_>,
    id: Option<EventId<'_>>,
    limit: usize,
) -> Result<(), SendStatus> {
    let Message::Text(text) = msg else {
        return Err(SendStatus::NotText);
    };
    if sse::encoded_len(id, text) > limit {
        return Err(SendStatus::TooLarge);
    }
    sse::encode(out, id, text);
    Ok(())
}

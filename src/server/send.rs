//! Routing outgoing messages: to the connection being served (its batch, or a direct write
//! for a large payload), to another connection (written at once), or to many (framed once,
//! the bytes shared by every queue that needs them). Where a frame goes inside a connection,
//! and in what order, is the [`Outbox`](crate::conn::Outbox)'s rule, not this file's.

use std::rc::Rc;

use log::debug;

use super::inbox::ConnId;
use super::{Buf, Core, DIRECT_WRITE_MIN};
use crate::config::SlowConsumer;
use crate::conn::{opcode, outbox, FrameHead, Offer};
use crate::ctx::{Delivery, Subscribed};
use crate::handler::{Message, SendStatus};
use crate::proto::message::DataKind;
use crate::proto::CloseCode;

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

    /// A frame from another thread for one connection.
    pub(crate) fn deliver_frame(&mut self, id: ConnId, frame: &[u8]) -> SendStatus {
        if self.live(id).is_none() {
            return SendStatus::Closed;
        }
        self.deliver(id.key as usize, frame, &mut None)
    }

    pub(crate) fn subscribe(&mut self, id: ConnId, pattern: &str) -> Subscribed {
        if !self.live(id).is_some_and(|s| s.conn.is_open()) {
            return Subscribed::Closed;
        }
        if self.topics.count(id) >= self.cfg.max_subscriptions {
            return Subscribed::Limit;
        }
        if self.topics.subscribe(id, pattern) {
            Subscribed::Added
        } else {
            Subscribed::Already
        }
    }

    /// Frames once, then delivers to every subscriber of `topic`.
    /// A local publish: delivered, then kept for [`crate::Server::drain_exports`].
    pub(crate) fn publish(&mut self, topic: &str, msg: Message<'_>) -> Delivery {
        if msg.len() > self.cfg.send_limit() {
            return Delivery::default();
        }
        let d = self.import(topic, msg);
        if self.exports.on() {
            self.exports.keep(topic, &msg);
        }
        d
    }

    /// Frames once and delivers to every subscriber of `topic`; nothing is exported.
    pub(crate) fn import(&mut self, topic: &str, msg: Message<'_>) -> Delivery {
        if msg.len() > self.cfg.send_limit() {
            return Delivery::default();
        }
        let mut frame = std::mem::take(&mut self.scratch);
        outbox::encode(&mut frame, opcode(kind(&msg)), msg.as_bytes());
        let d = self.publish_frame(topic, &frame);
        frame.clear();
        self.scratch = frame;
        d
    }

    /// Delivers a framed message to every subscriber of `topic`.
    pub(crate) fn publish_frame(&mut self, topic: &str, frame: &[u8]) -> Delivery {
        let mut targets = std::mem::take(&mut self.targets);
        self.topics.matching(topic, &mut targets);
        let d = self.deliver_all(&targets, frame);
        targets.clear();
        self.targets = targets;
        d
    }

    /// Frames once, then delivers to every open connection.
    pub(crate) fn broadcast(&mut self, msg: Message<'_>) -> Delivery {
        if msg.len() > self.cfg.send_limit() {
            return Delivery::default();
        }
        let mut frame = std::mem::take(&mut self.scratch);
        outbox::encode(&mut frame, opcode(kind(&msg)), msg.as_bytes());
        let d = self.broadcast_frame(&frame);
        frame.clear();
        self.scratch = frame;
        d
    }

    /// Delivers a framed message to every open connection.
    pub(crate) fn broadcast_frame(&mut self, frame: &[u8]) -> Delivery {
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
        let d = self.deliver_all(&targets, frame);
        targets.clear();
        self.targets = targets;
        d
    }

    fn deliver_all(&mut self, targets: &[ConnId], frame: &[u8]) -> Delivery {
        let mut shared = None;
        let mut d = Delivery::default();
        for &id in targets {
            if self.live(id).is_some() {
                d.count(self.deliver(id.key as usize, frame, &mut shared));
            }
        }
        d
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
    /// the one on the wire.
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

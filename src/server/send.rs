//! Sending: one message to one connection, publish and broadcast (framed once, shared by
//! every queue that needs the bytes), closes, and the slow-consumer policy.
//!
//! Write first, queue only what the socket did not take; a message queues behind others only
//! while the total stays within `max_backpressure`.

use std::rc::Rc;

use log::debug;

use super::inbox::ConnId;
use super::{io, Buf, Core, DIRECT_WRITE_MIN};
use crate::config::SlowConsumer;
use crate::handler::Message;
use crate::proto::frame::{FrameHeader, OpCode};
use crate::proto::CloseCode;

impl Core {
    /// Sends one message to one connection.
    pub(crate) fn send(&mut self, id: ConnId, msg: Message<'_>) -> bool {
        let key = id.key as usize;
        let now = self.now;
        let Some(slot) = self.conns.get_mut(key).filter(|s| s.gen == id.gen) else {
            return false;
        };
        if !slot.conn.is_open() {
            return false;
        }
        let header = data_header(&msg);
        let payload = msg.as_bytes();
        if self.current == Some(key) && payload.len() >= DIRECT_WRITE_MIN {
            return self.send_direct(key, &header, payload);
        }
        if self.current == Some(key) && slot.conn.queue().is_empty() {
            // The common echo path: straight into the batch written after the callbacks.
            encode_frame(&mut self.out, &header, msg.as_bytes());
            slot.conn.note_message(now);
            self.stats.messages_out += 1;
            if self.out.len() >= self.flush_at() {
                self.flush(key, Buf::Out);
                self.settle(key);
            }
            return true;
        }
        let mut frame = std::mem::take(&mut self.tmp);
        encode_frame(&mut frame, &header, msg.as_bytes());
        let delivered = self.deliver(key, &frame, &mut None);
        frame.clear();
        self.tmp = frame;
        delivered
    }

    /// A large message to the connection being served: after the batch so far, written with
    /// one vectored write from where the payload lies (the read buffer, for an echo) instead
    /// of being copied into the batch. Only what the socket does not take is copied, into the
    /// queue.
    fn send_direct(&mut self, key: usize, header: &FrameHeader, payload: &[u8]) -> bool {
        if !self.out.is_empty() {
            self.flush(key, Buf::Out);
        }
        let now = self.now;
        let Some(slot) = self.conns.get_mut(key) else {
            return false;
        };
        let mut head = [0u8; FrameHeader::MAX_LEN];
        let n = header.encode(&mut head);
        let head = head.get(..n).unwrap_or_default();
        if !slot.conn.queue().is_empty() {
            if slot.conn.queue().len() + n + payload.len() > self.cfg.max_backpressure {
                self.too_slow(key);
                return false;
            }
            slot.conn.queue_mut().push_parts(&[head, payload]);
        } else {
            match io::write_parts(&mut slot.sock, head, payload) {
                Ok(written) => {
                    self.stats.bytes_out += written as u64;
                    let rest_head = head.get(written..).unwrap_or_default();
                    let rest = payload.get(written.saturating_sub(n)..).unwrap_or_default();
                    slot.conn.queue_mut().push_parts(&[rest_head, rest]);
                    if written > 0 {
                        slot.conn.queue_mut().mark_started();
                    }
                }
                Err(_) => {
                    self.remove(key);
                    return false;
                }
            }
        }
        slot.conn.note_message(now);
        self.stats.messages_out += 1;
        true
    }

    /// Gives one framed message to a connection: written at once if its queue is empty,
    /// queued (sharing `shared` with other recipients) if not, or refused by the
    /// slow-consumer policy.
    fn deliver(&mut self, key: usize, frame: &[u8], shared: &mut Option<Rc<[u8]>>) -> bool {
        let Some(slot) = self.conns.get_mut(key) else {
            return false;
        };
        if !slot.conn.is_open() {
            return false;
        }
        let queued = slot.conn.queue().len();
        if self.current == Some(key) && queued == 0 {
            self.out.extend_from_slice(frame);
        } else if queued == 0 {
            match io::write(&mut slot.sock, frame) {
                Ok(n) => {
                    self.stats.bytes_out += n as u64;
                    if n < frame.len() {
                        let rc = shared.get_or_insert_with(|| Rc::from(frame)).clone();
                        slot.conn.queue_mut().push_shared(rc, n);
                    }
                }
                Err(_) => {
                    self.remove(key);
                    return false;
                }
            }
        } else if queued + frame.len() > self.cfg.max_backpressure {
            self.too_slow(key);
            return false;
        } else {
            let rc = shared.get_or_insert_with(|| Rc::from(frame)).clone();
            slot.conn.queue_mut().push_shared(rc, 0);
        }
        if let Some(slot) = self.conns.get_mut(key) {
            slot.conn.note_message(self.now);
        }
        self.stats.messages_out += 1;
        if self.current != Some(key) {
            self.settle(key);
        }
        true
    }

    pub(crate) fn subscribe(&mut self, id: ConnId, pattern: &str) -> bool {
        if !self.live(id).is_some_and(|s| s.conn.is_open())
            || self.topics.count(id) >= self.cfg.max_subscriptions
        {
            return false;
        }
        self.topics.subscribe(id, pattern)
    }

    /// Frames once, then delivers to every subscriber of `topic`.
    pub(crate) fn publish(&mut self, topic: &str, msg: Message<'_>) -> usize {
        let mut targets = std::mem::take(&mut self.targets);
        self.topics.matching(topic, &mut targets);
        let n = self.deliver_all(&targets, msg);
        targets.clear();
        self.targets = targets;
        n
    }

    /// Frames once, then delivers to every open connection.
    pub(crate) fn broadcast(&mut self, msg: Message<'_>) -> usize {
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
        let n = self.deliver_all(&targets, msg);
        targets.clear();
        self.targets = targets;
        n
    }

    fn deliver_all(&mut self, targets: &[ConnId], msg: Message<'_>) -> usize {
        if targets.is_empty() {
            return 0;
        }
        let mut frame = std::mem::take(&mut self.tmp);
        encode_frame(&mut frame, &data_header(&msg), msg.as_bytes());
        let mut shared = None;
        let mut n = 0;
        for &id in targets {
            if self.live(id).is_some() && self.deliver(id.key as usize, &frame, &mut shared) {
                n += 1;
            }
        }
        frame.clear();
        self.tmp = frame;
        n
    }

    /// A message would queue behind more than `max_backpressure` bytes: the policy applies
    /// and the message is not sent.
    fn too_slow(&mut self, key: usize) {
        match self.cfg.slow_consumer {
            SlowConsumer::Drop => self.stats.slow_drops += 1,
            SlowConsumer::Close => self.close_slow(key),
        }
    }

    /// The slow-consumer close: frames not yet begun are dropped and a 1008 close follows
    /// the one on the wire.
    fn close_slow(&mut self, key: usize) {
        let now = self.now;
        let current = self.current == Some(key);
        let Some(slot) = self.conns.get_mut(key) else {
            return;
        };
        let id = ConnId {
            key: key as u32,
            gen: slot.gen,
        };
        let buf = if current {
            &mut self.out
        } else {
            &mut self.tmp
        };
        if slot.conn.close_slow(buf, &self.cfg, now).is_some() {
            self.stats.slow_closes += 1;
            debug!("[{id}] slow consumer: closing with 1008");
            self.report(id, CloseCode::POLICY, "slow consumer");
            if !current {
                self.flush(key, Buf::Tmp);
                self.settle(key);
            }
        }
    }

    /// Starts a server-initiated close; reported to the handler at once.
    pub(crate) fn close(&mut self, id: ConnId, code: CloseCode, reason: &str) {
        let key = id.key as usize;
        let now = self.now;
        let which = if self.current == Some(key) {
            Buf::Out
        } else {
            Buf::Tmp
        };
        let Some(slot) = self.conns.get_mut(key).filter(|s| s.gen == id.gen) else {
            return;
        };
        let buf = match which {
            Buf::Out => &mut self.out,
            Buf::Tmp => &mut self.tmp,
        };
        if slot.conn.close(buf, code, reason, &self.cfg, now) {
            debug!("[{id}] closing with {code}");
            self.report(id, code, reason);
            if which == Buf::Tmp {
                self.flush(key, Buf::Tmp);
                self.settle(key);
            }
        }
    }
}

fn data_header(msg: &Message<'_>) -> FrameHeader {
    let opcode = match msg {
        Message::Text(_) => OpCode::Text,
        Message::Binary(_) => OpCode::Binary,
    };
    FrameHeader::new(true, opcode, msg.len() as u64)
}

fn encode_frame(out: &mut Vec<u8>, header: &FrameHeader, payload: &[u8]) {
    let mut head = [0u8; FrameHeader::MAX_LEN];
    let n = header.encode(&mut head);
    out.extend_from_slice(head.get(..n).unwrap_or_default());
    out.extend_from_slice(payload);
}

//! ⑦ The one owner of a connection's outgoing bytes: every frame the server sends is encoded
//! here ([`FrameHead`]) and placed here, so the ordering rules live in one place. An event
//! stream's events come encoded (`proto::sse`) and are placed by the same rules; its
//! keep-alive comment is written here, and it never gets control or close frames.
//!
//! **The batch.** The loop lends one output buffer (the *batch*) to the connection it is
//! serving and writes it to the socket after the callbacks; frames for any other connection
//! go through a scratch batch written at once. A frame goes into the batch only while nothing
//! is queued, and the loop moves what the socket did not take of a batch into the queue
//! ([`Outbox::unwritten`]), so bytes leave in the order they were offered.
//!
//! **The rules.**
//! - Frames never interleave: a frame the socket took part of is finished first.
//! - A pong or a ping goes ahead of queued data not yet begun (RFC 6455 §5.5.2 "as soon as
//!   practical"); a pong replaces a pong still waiting (§5.5.3 allows answering only the
//!   latest ping), so a ping flood from a peer that does not read cannot grow the queue.
//! - A data message queues behind others only while the total stays within the limit the
//!   caller passes (`max_backpressure`); past it the frame is refused ([`Offer::TooSlow`]) and
//!   the caller applies the slow-consumer policy. A message always fits an empty queue.
//! - The close frame is the last frame: the connection offers nothing after it.

use std::rc::Rc;

use super::write_queue::WriteQueue;
use crate::proto::close::{self, CloseCode};
use crate::proto::frame::{FrameHeader, OpCode};
use crate::proto::sse;

/// The header of one whole, unmasked server frame (2 to 10 bytes).
#[derive(Clone, Copy, Debug)]
pub struct FrameHead {
    bytes: [u8; FrameHeader::MAX_LEN],
    len: u8,
}

impl FrameHead {
    /// The header of a final frame with this opcode and payload length.
    pub fn new(opcode: OpCode, payload_len: usize) -> Self {
        let header = FrameHeader::new(true, opcode, payload_len as u64);
        let mut bytes = [0u8; FrameHeader::MAX_LEN];
        let len = header.encode(&mut bytes) as u8;
        FrameHead { bytes, len }
    }

    /// The encoded bytes.
    pub fn as_bytes(&self) -> &[u8] {
        self.bytes.get(..usize::from(self.len)).unwrap_or_default()
    }

    /// Appends header and payload to `out`.
    pub fn encode_with(&self, payload: &[u8], out: &mut Vec<u8>) {
        out.extend_from_slice(self.as_bytes());
        out.extend_from_slice(payload);
    }
}

/// Encodes one whole server frame into `out`: the one encoder of outgoing frames.
pub fn encode(out: &mut Vec<u8>, opcode: OpCode, payload: &[u8]) {
    FrameHead::new(opcode, payload.len()).encode_with(payload, out);
}

/// What became of a data frame offered to the outbox.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Offer {
    /// Nothing was queued: the frame went into the batch (or straight to the socket).
    Staged,
    /// Queued behind bytes the socket has not taken yet.
    Queued,
    /// Refused: it would queue behind more than the limit. Nothing was added.
    TooSlow,
}

/// A connection's queue and the rules for adding to it.
#[derive(Debug, Default)]
pub struct Outbox {
    queue: WriteQueue,
}

impl Outbox {
    /// Bytes queued and not yet written.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// True when nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// The queue, for the loop's vectored write and its advance.
    pub fn queue_mut(&mut self) -> &mut WriteQueue {
        &mut self.queue
    }

    /// Whether a data frame of `len` bytes may be added now: at once when nothing is queued,
    /// behind the queue while the total stays within `limit`.
    pub fn admits(&self, len: usize, limit: usize) -> Offer {
        let queued = self.queue.len();
        if queued == 0 {
            Offer::Staged
        } else if queued + len > limit {
            Offer::TooSlow
        } else {
            Offer::Queued
        }
    }

    /// A data frame, given as its header and payload, for the connection whose batch this is.
    pub fn data(
        &mut self,
        batch: &mut Vec<u8>,
        head: &FrameHead,
        payload: &[u8],
        limit: usize,
    ) -> Offer {
        let offer = self.admits(head.as_bytes().len() + payload.len(), limit);
        match offer {
            Offer::Staged => head.encode_with(payload, batch),
            Offer::Queued => self.queue(head, payload),
            Offer::TooSlow => {}
        }
        offer
    }

    /// A data frame queued behind what is there, given as header and payload (the caller
    /// checked [`Outbox::admits`]).
    pub fn queue(&mut self, head: &FrameHead, payload: &[u8]) {
        self.queue.push_parts(&[head.as_bytes(), payload]);
    }

    /// A frame shared with other connections' queues, `skip` bytes of it already written
    /// (only when nothing was queued). The caller checked [`Outbox::admits`].
    pub fn shared(&mut self, frame: Rc<[u8]>, skip: usize) {
        self.queue.push_shared(frame, skip);
    }

    /// A pong or ping: into the batch while nothing is queued, else ahead of queued data not
    /// yet begun (a pong replacing a waiting pong).
    pub fn control(&mut self, batch: &mut Vec<u8>, opcode: OpCode, payload: &[u8]) {
        if self.queue.is_empty() {
            encode(batch, opcode, payload);
            return;
        }
        // A control frame is at most 125 bytes of payload: encoded on the stack.
        let mut frame = [0u8; FrameHeader::MAX_LEN + 125];
        let payload = payload.get(..payload.len().min(125)).unwrap_or_default();
        let head = FrameHead::new(opcode, payload.len());
        let h = head.as_bytes();
        let n = h.len() + payload.len();
        let (a, b) = frame.split_at_mut(h.len());
        a.copy_from_slice(h);
        if let Some(b) = b.get_mut(..payload.len()) {
            b.copy_from_slice(payload);
        }
        self.queue.push_urgent(frame.get(..n).unwrap_or_default());
    }

    /// An event stream's keep-alive comment, into the batch, only while nothing is queued
    /// (bytes that wait will keep the stream busy anyway). True if it was written.
    pub fn keep_alive(&mut self, batch: &mut Vec<u8>) -> bool {
        let idle = self.queue.is_empty();
        if idle {
            batch.extend_from_slice(sse::KEEP_ALIVE);
        }
        idle
    }

    /// The close frame, after everything offered before it. `None` for an empty payload
    /// (the reply to a close frame that had no code).
    pub fn close(&mut self, batch: &mut Vec<u8>, code: Option<CloseCode>, reason: &str) {
        let mut payload = [0u8; 125];
        let n = code.map_or(0, |code| close::encode_payload(code, reason, &mut payload));
        let payload = payload.get(..n).unwrap_or_default();
        let head = FrameHead::new(OpCode::Close, n);
        if self.queue.is_empty() {
            head.encode_with(payload, batch);
        } else {
            self.queue.push_parts(&[head.as_bytes(), payload]);
        }
    }

    /// What a socket did not take of whole frames (a batch, or a frame written directly),
    /// given in parts; `started` if it took part of the first. Only while nothing was queued.
    pub fn unwritten(&mut self, parts: &[&[u8]], started: bool) {
        if parts.iter().all(|p| p.is_empty()) {
            return;
        }
        // Only the first chunk of an empty queue can have been begun on the wire.
        let first = self.queue.is_empty();
        self.queue.push_parts(parts);
        if first && started {
            self.queue.mark_started();
        }
    }

    /// Drops every frame not yet begun (the slow-consumer close). Returns the bytes dropped.
    pub fn drop_unstarted(&mut self) -> usize {
        self.queue.drop_unstarted()
    }
}

//! ⑧ The bounded queue of bytes a socket did not take yet.
//!
//! - **In:** bytes copied in ([`WriteQueue::push`]) or shared frames ([`Chunk::Shared`]), which
//!   many subscribers' queues hold at once without a copy.
//! - **Out:** [`IoSlice`]s for one vectored write, then [`WriteQueue::advance`] by what the
//!   socket took.
//! - **Never:** writes to a socket, or decides what to do when it is too long: [`crate::conn`]
//!   applies the slow-consumer policy from [`WriteQueue::len`].

use std::collections::VecDeque;
use std::io::IoSlice;
use std::rc::Rc;

/// One queued piece.
#[derive(Debug)]
pub enum Chunk {
    /// Bytes of this connection only.
    Owned(Vec<u8>),
    /// A frame shared with other connections' queues; freed when the last one wrote it.
    Shared(Rc<[u8]>),
    /// A control frame queued ahead of data.
    Urgent(Vec<u8>),
}

impl Chunk {
    fn bytes(&self) -> &[u8] {
        match self {
            Chunk::Owned(v) | Chunk::Urgent(v) => v,
            Chunk::Shared(b) => b,
        }
    }
}

/// A FIFO of chunks with the offset already written of the first. Empty, it is one null
/// pointer and holds no heap: an idle connection pays 8 bytes for its queue.
#[derive(Debug, Default)]
pub struct WriteQueue {
    inner: Option<Box<Inner>>,
}

/// Every chunk ends at a frame boundary; only the first may begin inside a frame
/// (`started`), when part of it was written already.
#[derive(Debug, Default)]
struct Inner {
    chunks: VecDeque<Chunk>,
    offset: usize,
    len: usize,
    started: bool,
}

impl WriteQueue {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }

    /// Bytes queued and not yet written.
    pub fn len(&self) -> usize {
        self.inner.as_ref().map_or(0, |q| q.len)
    }

    /// True when nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn inner(&mut self) -> &mut Inner {
        self.inner.get_or_insert_with(Box::default)
    }

    /// Queues a copy of whole frames at the end, appending to the last owned chunk when it
    /// has room.
    pub fn push(&mut self, frames: &[u8]) {
        self.push_parts(&[frames]);
    }

    /// Queues a copy of one frame given in parts (e.g. header and payload), kept in one chunk
    /// so nothing can ever be inserted between them.
    pub fn push_parts(&mut self, parts: &[&[u8]]) {
        let n: usize = parts.iter().map(|p| p.len()).sum();
        if n == 0 {
            return;
        }
        let q = self.inner();
        q.len += n;
        if let Some(Chunk::Owned(last)) = q.chunks.back_mut() {
            // Appending never moves bytes already written: those are only in the first chunk,
            // at its start.
            if last.capacity() - last.len() >= n {
                parts.iter().for_each(|p| last.extend_from_slice(p));
                return;
            }
        }
        let mut chunk = Vec::with_capacity(n);
        parts.iter().for_each(|p| chunk.extend_from_slice(p));
        q.chunks.push_back(Chunk::Owned(chunk));
    }

    /// Marks the first chunk as begun on the wire (the socket took part of its frame), so
    /// nothing is ever queued ahead of it.
    pub fn mark_started(&mut self) {
        if let Some(q) = self.inner.as_mut() {
            q.started = true;
        }
    }

    /// Queues what a socket did not take of whole frames; `started` if the socket took part
    /// of the first of them. Only for an empty queue.
    pub fn push_remainder(&mut self, rest: &[u8], started: bool) {
        if rest.is_empty() {
            return;
        }
        debug_assert!(self.is_empty());
        self.push(rest);
        if let Some(q) = self.inner.as_mut() {
            q.started |= started;
        }
    }

    /// Queues a shared frame at the end without copying it; `skip` bytes of it were written
    /// already, which is only possible when the queue was empty.
    pub fn push_shared(&mut self, frame: Rc<[u8]>, skip: usize) {
        let n = frame.len().saturating_sub(skip);
        if n == 0 {
            return;
        }
        if skip > 0 && !self.is_empty() {
            // Never the case in the loop; keep the bytes right anyway.
            self.push(frame.get(skip..).unwrap_or_default());
            return;
        }
        let q = self.inner();
        if skip > 0 {
            q.offset = skip;
            q.started = true;
        }
        q.len += n;
        q.chunks.push_back(Chunk::Shared(frame));
    }

    /// Queues a control frame ahead of every chunk not yet begun, so a pong is not stuck
    /// behind queued data (the frame being written must finish first: frames never interleave
    /// on the wire). A pong replaces a pong still waiting there: RFC 6455 §5.5.3 allows
    /// answering only the latest ping, and so a ping flood from a peer that does not read
    /// cannot grow the queue.
    pub fn push_urgent(&mut self, frame: &[u8]) {
        if frame.is_empty() {
            return;
        }
        let q = self.inner();
        let at = usize::from(q.started).min(q.chunks.len());
        let is_pong = |bytes: &[u8]| bytes.first().is_some_and(|b| b & 0x0F == 0xA);
        if let Some(Chunk::Urgent(waiting)) = q.chunks.get_mut(at) {
            if is_pong(waiting) && is_pong(frame) {
                q.len = q.len - waiting.len() + frame.len();
                waiting.clear();
                waiting.extend_from_slice(frame);
                return;
            }
        }
        q.len += frame.len();
        q.chunks.insert(at, Chunk::Urgent(frame.to_vec()));
    }

    /// Drops every chunk not yet begun; the one being written stays so the frame on the wire
    /// is completed. Returns the bytes dropped.
    pub fn drop_unstarted(&mut self) -> usize {
        let Some(q) = self.inner.as_mut() else {
            return 0;
        };
        let keep = usize::from(q.started).min(q.chunks.len());
        let before = q.len;
        q.chunks.truncate(keep);
        q.len = q.chunks.front().map_or(0, |c| c.bytes().len() - q.offset);
        let dropped = before - q.len;
        if q.len == 0 {
            self.inner = None;
        }
        dropped
    }

    /// Fills `out` with the queued bytes in order; returns how many slices it filled.
    pub fn io_slices<'a>(&'a self, out: &mut [IoSlice<'a>]) -> usize {
        let Some(q) = self.inner.as_ref() else {
            return 0;
        };
        let mut n = 0;
        for (i, chunk) in q.chunks.iter().enumerate() {
            let Some(slot) = out.get_mut(n) else { break };
            let bytes = chunk.bytes();
            let bytes = if i == 0 {
                bytes.get(q.offset..).unwrap_or_default()
            } else {
                bytes
            };
            *slot = IoSlice::new(bytes);
            n += 1;
        }
        n
    }

    /// Marks `written` bytes as sent, dropping finished chunks (the last reference to a
    /// shared frame frees it).
    pub fn advance(&mut self, mut written: usize) {
        let Some(q) = self.inner.as_mut() else { return };
        written = written.min(q.len);
        q.len -= written;
        while written > 0 {
            let Some(front) = q.chunks.front() else { break };
            let left = front.bytes().len() - q.offset;
            if written < left {
                q.offset += written;
                q.started = true;
                return;
            }
            written -= left;
            q.offset = 0;
            q.started = false;
            q.chunks.pop_front();
        }
        if q.chunks.is_empty() {
            // Give the memory back: an idle connection holds no heap.
            self.inner = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(q: &WriteQueue) -> Vec<u8> {
        let mut slices = [IoSlice::new(&[]); 16];
        let n = q.io_slices(&mut slices);
        slices[..n].iter().flat_map(|s| s.iter().copied()).collect()
    }

    #[test]
    fn queues_in_order_and_advances_across_chunks() {
        let mut q = WriteQueue::new();
        q.push(b"abc");
        q.push_shared(Rc::from(&b"def"[..]), 0);
        q.push(b"gh");
        assert_eq!(q.len(), 8);
        assert_eq!(drain(&q), b"abcdefgh");
        q.advance(4);
        assert_eq!(drain(&q), b"efgh");
        q.advance(4);
        assert!(q.is_empty());
        assert!(q.inner.is_none());
    }

    #[test]
    fn urgent_goes_after_the_chunk_in_progress() {
        let mut q = WriteQueue::new();
        q.push(b"1111");
        q.push_shared(Rc::from(&b"2222"[..]), 0);
        q.advance(2);
        q.push_urgent(b"P");
        assert_eq!(drain(&q), b"11P2222");
        let mut fresh = WriteQueue::new();
        fresh.push_shared(Rc::from(&b"2222"[..]), 0);
        fresh.push_urgent(b"P");
        assert_eq!(drain(&fresh), b"P2222");
    }

    #[test]
    fn urgent_never_lands_inside_a_partly_written_remainder() {
        let mut q = WriteQueue::new();
        // A socket took 3 bytes of "AAAAA" "BB": the rest starts inside frame A.
        q.push_remainder(b"AABB", true);
        q.push_urgent(b"\x8aP");
        assert_eq!(drain(&q), b"AABB\x8aP");
        let mut fresh = WriteQueue::new();
        fresh.push_remainder(b"AABB", false);
        fresh.push_urgent(b"\x8aP");
        assert_eq!(drain(&fresh), b"\x8aPAABB");
    }

    #[test]
    fn a_waiting_pong_is_replaced_not_stacked() {
        let mut q = WriteQueue::new();
        q.push(b"data");
        for i in 0..1000u32 {
            q.push_urgent(&[0x8a, 4, b'p', (i % 10) as u8 + b'0', b'.', b'.']);
        }
        assert_eq!(q.len(), 4 + 6);
        assert_eq!(drain(&q), b"\x8a\x04p9..data");
        // A server ping is not a pong: it is queued, and a pong still replaces the pong.
        q.push_urgent(b"\x89\x00");
        assert_eq!(q.len(), 12);
    }

    #[test]
    fn a_frame_in_parts_stays_in_one_chunk() {
        let mut q = WriteQueue::new();
        q.push_remainder(b"xx", true);
        q.push_parts(&[b"HH", &[7u8; 300]]);
        q.push_urgent(b"\x8aP");
        let out = drain(&q);
        assert_eq!(&out[..4], b"xx\x8aP");
        assert_eq!(&out[4..6], b"HH");
    }

    #[test]
    fn drop_unstarted_keeps_the_frame_on_the_wire() {
        let mut q = WriteQueue::new();
        q.push_shared(Rc::from(&b"aaaa"[..]), 0);
        q.push_shared(Rc::from(&b"bbbb"[..]), 0);
        q.advance(1);
        assert_eq!(q.drop_unstarted(), 4);
        assert_eq!(drain(&q), b"aaa");
        assert_eq!(q.len(), 3);
    }

    #[test]
    fn shared_frames_are_freed_by_the_last_queue() {
        let frame: Rc<[u8]> = Rc::from(&b"xyz"[..]);
        let mut a = WriteQueue::new();
        let mut b = WriteQueue::new();
        a.push_shared(frame.clone(), 0);
        // Partly written already: still shared, from an offset.
        b.push_shared(frame.clone(), 1);
        assert_eq!(Rc::strong_count(&frame), 3);
        assert_eq!(drain(&b), b"yz");
        a.advance(3);
        assert_eq!(Rc::strong_count(&frame), 2);
        b.advance(2);
        assert_eq!(Rc::strong_count(&frame), 1);
        assert!(a.inner.is_none() && b.inner.is_none());
    }
}

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
}

impl Chunk {
    fn bytes(&self) -> &[u8] {
        match self {
            Chunk::Owned(v) => v,
            Chunk::Shared(b) => b,
        }
    }
}

/// A FIFO of chunks with the offset already written of the first. Empty, it holds no heap.
#[derive(Debug, Default)]
pub struct WriteQueue {
    chunks: VecDeque<Chunk>,
    offset: usize,
    len: usize,
}

impl WriteQueue {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }

    /// Bytes queued and not yet written.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Queues a copy of `bytes` at the end, appending to the last owned chunk when it has room.
    pub fn push(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        self.len += bytes.len();
        if let Some(Chunk::Owned(last)) = self.chunks.back_mut() {
            // Only the first chunk is partly written, so appending never moves written bytes.
            if last.capacity() - last.len() >= bytes.len() {
                last.extend_from_slice(bytes);
                return;
            }
        }
        self.chunks.push_back(Chunk::Owned(bytes.to_vec()));
    }

    /// Queues a shared frame at the end without copying it; `skip` bytes of it were written
    /// already, which is only possible when the queue was empty.
    pub fn push_shared(&mut self, frame: Rc<[u8]>, skip: usize) {
        let n = frame.len().saturating_sub(skip);
        if n == 0 {
            return;
        }
        if skip > 0 && !self.chunks.is_empty() {
            // Never the case in the loop; keep the bytes right anyway.
            self.push(frame.get(skip..).unwrap_or_default());
            return;
        }
        if skip > 0 {
            self.offset = skip;
        }
        self.len += n;
        self.chunks.push_back(Chunk::Shared(frame));
    }

    /// Queues a control frame ahead of every chunk not yet begun, so a pong is not stuck
    /// behind queued data (the chunk being written must finish first: frames never interleave
    /// on the wire).
    pub fn push_urgent(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        let at = usize::from(self.offset > 0).min(self.chunks.len());
        self.len += bytes.len();
        self.chunks.insert(at, Chunk::Owned(bytes.to_vec()));
    }

    /// Drops every chunk not yet begun; the one being written stays so the frame on the wire
    /// is completed. Returns the bytes dropped.
    pub fn drop_unstarted(&mut self) -> usize {
        let keep = usize::from(self.offset > 0).min(self.chunks.len());
        let before = self.len;
        self.chunks.truncate(keep);
        self.len = self.chunks.front().map_or(0, |c| c.bytes().len() - self.offset);
        before - self.len
    }

    /// Fills `out` with the queued bytes in order; returns how many slices it filled.
    pub fn io_slices<'a>(&'a self, out: &mut [IoSlice<'a>]) -> usize {
        let mut n = 0;
        for (i, chunk) in self.chunks.iter().enumerate() {
            let Some(slot) = out.get_mut(n) else { break };
            let bytes = chunk.bytes();
            let bytes = if i == 0 { bytes.get(self.offset..).unwrap_or_default() } else { bytes };
            *slot = IoSlice::new(bytes);
            n += 1;
        }
        n
    }

    /// Marks `written` bytes as sent, dropping finished chunks (the last reference to a
    /// shared frame frees it).
    pub fn advance(&mut self, mut written: usize) {
        written = written.min(self.len);
        self.len -= written;
        while written > 0 {
            let Some(front) = self.chunks.front() else { break };
            let left = front.bytes().len() - self.offset;
            if written < left {
                self.offset += written;
                return;
            }
            written -= left;
            self.offset = 0;
            self.chunks.pop_front();
        }
        if self.chunks.is_empty() {
            // Give the ring's memory back: an idle connection holds no heap.
            self.chunks = VecDeque::new();
            self.offset = 0;
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
        assert_eq!(q.chunks.capacity(), 0);
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
        b.push_shared(frame.clone(), 1);
        assert_eq!(Rc::strong_count(&frame), 2);
        assert_eq!(drain(&b), b"yz");
        a.advance(3);
        assert_eq!(Rc::strong_count(&frame), 1);
    }
}

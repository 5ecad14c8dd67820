//! Buffers lent to a connection only while it holds an incomplete head, frame or message.
//!
//! An idle connection holds no buffer. A lent buffer grows on demand but never past the bound
//! its user passes ([`grow_within`]), so the memory formula holds; buffers come back here when
//! the message is delivered and are reused, up to a fixed number of spares.

/// A free-list of byte buffers.
#[derive(Debug)]
pub struct Pool {
    spares: Vec<Vec<u8>>,
    max_spares: usize,
    keep_capacity: usize,
}

impl Pool {
    /// A pool keeping at most `max_spares` free buffers of at most `keep_capacity` bytes each;
    /// larger buffers are freed on return so a rare big message does not pin its memory.
    pub fn new(max_spares: usize, keep_capacity: usize) -> Self {
        Pool {
            spares: Vec::with_capacity(max_spares),
            max_spares,
            keep_capacity,
        }
    }

    /// An empty buffer, reused when one is free.
    pub fn take(&mut self) -> Vec<u8> {
        self.spares.pop().unwrap_or_default()
    }

    /// Gives a buffer back.
    pub fn put(&mut self, mut buf: Vec<u8>) {
        if self.spares.len() < self.max_spares && buf.capacity() <= self.keep_capacity {
            buf.clear();
            self.spares.push(buf);
        }
    }

    /// Bytes held by free buffers.
    pub fn spare_bytes(&self) -> usize {
        self.spares.iter().map(Vec::capacity).sum()
    }
}

/// Reserves room for `additional` more bytes in `buf` without its capacity passing `limit`
/// (unless `len + additional` itself does): doubling as `Vec` does, then capped.
pub fn grow_within(buf: &mut Vec<u8>, additional: usize, limit: usize) {
    let needed = buf.len().saturating_add(additional);
    if needed <= buf.capacity() {
        return;
    }
    let target = needed
        .max(buf.capacity().saturating_mul(2))
        .max(256)
        .min(limit.max(needed));
    buf.reserve_exact(target - buf.len());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn growth_never_passes_the_limit() {
        let mut buf = Vec::new();
        let limit = 100_000;
        for _ in 0..1000 {
            grow_within(&mut buf, 100, limit);
            buf.extend_from_slice(&[0u8; 100]);
            assert!(buf.capacity() <= limit, "capacity {}", buf.capacity());
        }
        assert_eq!(buf.len(), 100_000);
    }

    #[test]
    fn reuses_small_and_frees_large_buffers() {
        let mut pool = Pool::new(2, 1024);
        let mut a = pool.take();
        a.extend_from_slice(b"abc");
        let cap = a.capacity();
        pool.put(a);
        let b = pool.take();
        assert!(b.is_empty());
        assert_eq!(b.capacity(), cap);
        pool.put(Vec::with_capacity(4096));
        assert_eq!(pool.spare_bytes(), 0);
    }
}

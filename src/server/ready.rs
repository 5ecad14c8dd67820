//! Who reads next: connections with bytes to read wait in one FIFO, each at most once.
//!
//! A readiness event puts a connection at the back unless it is waiting already (the loop
//! keeps that flag in the connection's slot); a turn serves the connections that were waiting
//! when it began, each within its budget ([`crate::Config::read_budget`],
//! [`crate::Config::frame_budget`]), and one with more to read goes to the back again. So a
//! flooding connection never takes a second turn before every other waiting connection has
//! had its first.

use std::collections::VecDeque;

use super::inbox::ConnId;

/// Entries the loop's per-connection lists keep between bursts.
pub(crate) const SHRINK_ABOVE: usize = 1024;

/// The FIFO of connections with bytes to read.
#[derive(Debug, Default)]
pub(crate) struct Ready {
    queue: VecDeque<ConnId>,
}

impl Ready {
    /// Puts `id` at the back. The caller checks that it is not waiting already.
    pub(crate) fn push(&mut self, id: ConnId) {
        self.queue.push_back(id);
    }

    /// How many are waiting: a turn serves this many.
    pub(crate) fn len(&self) -> usize {
        self.queue.len()
    }

    /// True when nothing waits.
    pub(crate) fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// The next to serve (possibly a connection that ended since: the caller checks).
    pub(crate) fn pop(&mut self) -> Option<ConnId> {
        self.queue.pop_front()
    }

    /// Gives back what a burst (every connection ready at once) made the queue hold.
    pub(crate) fn shrink(&mut self) {
        if self.queue.is_empty() && self.queue.capacity() > SHRINK_ABOVE {
            self.queue.shrink_to(SHRINK_ABOVE);
        }
    }
}

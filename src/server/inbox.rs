//! Commands from other threads: a queue bounded in bytes ([`Config::max_inbox_bytes`]),
//! drained by the loop when a [`mio::Waker`] wakes it, a bounded number per turn.
//!
//! The queue's lock is held only to push or pop one command, never while the loop serves
//! connections; the loop never waits for it on the hot path.
//!
//! [`Config::max_inbox_bytes`]: crate::Config::max_inbox_bytes

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::thread::ThreadId;

use crate::proto::CloseCode;
use crate::stats::Stats;

/// Commands the loop handles per turn at most; the rest wait for the next turn, which comes
/// at once.
pub(crate) const COMMANDS_PER_TURN: usize = 256;

/// What a command costs against the bound beyond its bytes: the record itself.
pub(crate) const COMMAND_OVERHEAD: usize = 64;

/// A connection's identity: its slab key and a generation, so a stale id held by another
/// thread never reaches a newer connection that reuses the key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnId {
    pub(crate) key: u32,
    pub(crate) gen: u32,
}

impl core::fmt::Display for ConnId {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{}.{}", self.key, self.gen)
    }
}

/// What another thread asks of the loop. Messages arrive framed: the loop writes the bytes as
/// they are to a WebSocket (one copy, made by the sending thread), and encodes the frame's
/// message as an event for an event stream, with `event_id` (checked by the sender) if given.
#[derive(Debug)]
pub(crate) enum Command {
    Publish {
        topic: Box<str>,
        frame: Vec<u8>,
        event_id: Option<Box<str>>,
    },
    Send {
        id: ConnId,
        frame: Vec<u8>,
        event_id: Option<Box<str>>,
    },
    Broadcast {
        frame: Vec<u8>,
    },
    Close {
        id: ConnId,
        code: CloseCode,
        reason: Box<str>,
    },
    Shutdown,
}

impl Command {
    /// Bytes counted against the bound.
    pub(crate) fn cost(&self) -> usize {
        COMMAND_OVERHEAD
            + match self {
                Command::Publish {
                    topic,
                    frame,
                    event_id,
                } => topic.len() + frame.len() + event_id.as_ref().map_or(0, |id| id.len()),
                Command::Send {
                    frame, event_id, ..
                } => frame.len() + event_id.as_ref().map_or(0, |id| id.len()),
                Command::Broadcast { frame } => frame.len(),
                Command::Close { reason, .. } => reason.len(),
                Command::Shutdown => 0,
            }
    }
}

#[derive(Debug, Default)]
struct Queue {
    commands: VecDeque<Command>,
    bytes: usize,
    stopped: bool,
}

/// Why a command was not taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refused {
    /// The server has stopped.
    Stopped,
    /// The inbox holds [`crate::Config::max_inbox_bytes`] already (only from `try_*`, or from
    /// the loop's own thread, which must never wait for itself).
    Full,
}

/// The state shared by the loop and every [`crate::ServerHandle`].
#[derive(Debug)]
pub(crate) struct Shared {
    queue: Mutex<Queue>,
    room: Condvar,
    limit: usize,
    /// Turns begun.
    turns: AtomicU64,
    /// The last turn ended, and the counters as of its end.
    stats: Mutex<(u64, Stats)>,
    fresh: Condvar,
    /// Threads waiting in [`Shared::fresh_stats`]: the loop wakes them only if there are any.
    waiting: AtomicUsize,
    loop_thread: Mutex<Option<ThreadId>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave a queue half-changed: recover it.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Shared {
    pub(crate) fn new(limit: usize) -> Self {
        Shared {
            queue: Mutex::new(Queue::default()),
            room: Condvar::new(),
            limit,
            turns: AtomicU64::new(0),
            stats: Mutex::new((0, Stats::default())),
            fresh: Condvar::new(),
            waiting: AtomicUsize::new(0),
            loop_thread: Mutex::new(None),
        }
    }

    /// Queues a command; `wait` blocks until there is room (never on the loop's thread).
    /// Returns true if the queue was empty, i.e. the loop needs waking.
    pub(crate) fn push(&self, cmd: Command, wait: bool) -> Result<bool, Refused> {
        let cost = cmd.cost();
        let on_loop = self.on_loop_thread();
        let mut q = lock(&self.queue);
        loop {
            if q.stopped {
                return Err(Refused::Stopped);
            }
            // A command always fits an empty queue: the bound is on what waits.
            if q.bytes == 0 || q.bytes + cost <= self.limit {
                break;
            }
            if !wait || on_loop {
                return Err(Refused::Full);
            }
            q = self
                .room
                .wait(q)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        let was_empty = q.commands.is_empty();
        q.bytes += cost;
        q.commands.push_back(cmd);
        Ok(was_empty)
    }

    /// Takes up to `max` commands; true if more are left.
    pub(crate) fn drain(&self, max: usize, out: &mut Vec<Command>) -> bool {
        let mut q = lock(&self.queue);
        for _ in 0..max {
            let Some(cmd) = q.commands.pop_front() else {
                break;
            };
            q.bytes -= cmd.cost();
            out.push(cmd);
        }
        let more = !q.commands.is_empty();
        drop(q);
        if !out.is_empty() {
            self.room.notify_all();
        }
        more
    }

    /// Bytes waiting now.
    #[cfg(test)]
    pub(crate) fn queued_bytes(&self) -> usize {
        lock(&self.queue).bytes
    }

    /// The loop has ended: every later command is refused, waiting senders wake.
    pub(crate) fn stop(&self) {
        let mut q = lock(&self.queue);
        q.stopped = true;
        q.commands.clear();
        q.bytes = 0;
        drop(q);
        self.room.notify_all();
        lock(&self.stats).0 = u64::MAX;
        self.fresh.notify_all();
    }

    pub(crate) fn is_stopped(&self) -> bool {
        lock(&self.queue).stopped
    }

    /// Records the loop's thread, so a handle used from it never waits for room.
    pub(crate) fn set_loop_thread(&self) {
        let mut t = lock(&self.loop_thread);
        if t.is_none() {
            *t = Some(std::thread::current().id());
        }
    }

    /// A turn begins.
    pub(crate) fn turn_begins(&self) {
        self.turns.fetch_add(1, Ordering::AcqRel);
    }

    /// Publishes the counters at the end of a turn, for other threads: one uncontended lock
    /// and a copy, and a wake-up only when a thread waits for them.
    pub(crate) fn publish_stats(&self, stats: &Stats) {
        let mut s = lock(&self.stats);
        s.0 = self.turns.load(Ordering::Acquire);
        s.1 = *stats;
        drop(s);
        if self.waiting.load(Ordering::Acquire) > 0 {
            self.fresh.notify_all();
        }
    }

    /// The counters as of the end of the latest turn.
    pub(crate) fn stats(&self) -> Stats {
        lock(&self.stats).1
    }

    /// The number the next turn will have: [`Shared::fresh_stats`] waits for it to end.
    pub(crate) fn next_turn(&self) -> u64 {
        self.turns.load(Ordering::Acquire) + 1
    }

    /// The counters as of the end of turn `turn` or later (the caller has woken the loop).
    /// Waits at most `limit`; `None` if that turn did not end by then.
    pub(crate) fn fresh_stats(&self, turn: u64, limit: std::time::Duration) -> Option<Stats> {
        self.waiting.fetch_add(1, Ordering::AcqRel);
        let s = lock(&self.stats);
        let (s, _) = self
            .fresh
            .wait_timeout_while(s, limit, |s| s.0 < turn)
            .unwrap_or_else(|e| e.into_inner());
        self.waiting.fetch_sub(1, Ordering::AcqRel);
        (s.0 >= turn).then_some(s.1)
    }

    /// True when called on the loop's own thread.
    pub(crate) fn on_loop_thread(&self) -> bool {
        *lock(&self.loop_thread) == Some(std::thread::current().id())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publish(n: usize) -> Command {
        Command::Publish {
            topic: "t".into(),
            frame: vec![0; n],
            event_id: None,
        }
    }

    #[test]
    fn a_command_record_is_within_its_counted_overhead() {
        assert!(std::mem::size_of::<Command>() <= COMMAND_OVERHEAD);
        let with_id = Command::Send {
            id: ConnId { key: 0, gen: 0 },
            frame: vec![0; 10],
            event_id: Some("abc".into()),
        };
        assert_eq!(with_id.cost(), COMMAND_OVERHEAD + 13);
    }

    #[test]
    fn bounded_in_bytes_and_drained_in_batches() {
        let shared = Shared::new(1000);
        assert_eq!(shared.push(publish(400), false), Ok(true));
        assert_eq!(shared.push(publish(400), false), Ok(false));
        // 2 × (400 + 1 + 64) = 930: one more does not fit.
        assert_eq!(shared.push(publish(10), false), Err(Refused::Full));
        assert_eq!(shared.queued_bytes(), 930);
        let mut out = Vec::new();
        assert!(shared.drain(1, &mut out));
        assert_eq!(out.len(), 1);
        assert_eq!(shared.push(publish(10), false), Ok(false));
        out.clear();
        assert!(!shared.drain(10, &mut out));
        assert_eq!(out.len(), 2);
        assert_eq!(shared.queued_bytes(), 0);
    }

    #[test]
    fn an_oversized_command_fits_an_empty_queue_only() {
        let shared = Shared::new(100);
        assert_eq!(shared.push(publish(5000), false), Ok(true));
        assert_eq!(shared.push(publish(1), false), Err(Refused::Full));
    }

    #[test]
    fn a_blocked_sender_wakes_when_the_loop_drains() {
        let shared = std::sync::Arc::new(Shared::new(200));
        shared.push(publish(100), false).unwrap();
        let s = shared.clone();
        let t = std::thread::spawn(move || s.push(publish(100), true));
        // The sender waits until there is room; draining makes it.
        let mut out = Vec::new();
        while out.is_empty() || !t.is_finished() {
            shared.drain(10, &mut out);
            std::thread::yield_now();
        }
        assert!(t.join().unwrap().is_ok());
    }

    #[test]
    fn stop_refuses_and_wakes() {
        let shared = Shared::new(100);
        shared.stop();
        assert_eq!(shared.push(Command::Shutdown, true), Err(Refused::Stopped));
    }
}

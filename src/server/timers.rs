//! A hashed timing wheel: per-tick cost in proportion to what expires, not to connections.
//!
//! Each connection keeps at most one live entry (the loop schedules only a deadline earlier
//! than the one it already has); a stale entry fires, finds nothing due, and is rescheduled.

use crate::conn::Millis;

/// Slots in the loop's wheel: 1024 of 50 ms, one turn every 51.2 s.
pub(crate) const WHEEL_SLOTS: usize = 1024;

/// One scheduled deadline: the connection's slab key and generation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    /// When it is due.
    pub at: Millis,
    /// The slab key.
    pub key: u32,
    /// The generation, to tell a reused key from its former owner.
    pub gen: u32,
}

/// The wheel: `slots.len()` buckets of `tick` milliseconds each.
#[derive(Debug)]
pub struct TimerWheel {
    slots: Vec<Vec<Entry>>,
    tick: u64,
    cur: u64,
    len: usize,
    /// The last answer of [`TimerWheel::next_expiry`], valid until an entry expires or an
    /// earlier one is inserted: the loop asks on every turn, the scan runs only then.
    next: Option<Option<Millis>>,
}

impl TimerWheel {
    /// A wheel of `slots` buckets of `tick_ms` each (one turn = `slots × tick_ms`).
    pub fn new(slots: usize, tick_ms: u64) -> Self {
        TimerWheel {
            slots: (0..slots.max(1)).map(|_| Vec::new()).collect(),
            tick: tick_ms.max(1),
            cur: 0,
            len: 0,
            next: None,
        }
    }

    /// Entries scheduled.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when nothing is scheduled: the loop may sleep without a timeout.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Schedules an entry; one already due fires at the next [`TimerWheel::expire`].
    pub fn insert(&mut self, entry: Entry) {
        let tick = (entry.at.0 / self.tick).max(self.cur);
        let n = self.slots.len() as u64;
        if let Some(slot) = self.slots.get_mut((tick % n) as usize) {
            slot.push(entry);
            self.len += 1;
            if let Some(Some(next)) = self.next {
                if entry.at >= next {
                    return; // the cached answer still holds
                }
            }
            self.next = None;
        }
    }

    /// Moves every entry due at `now` into `due`, advancing the wheel. Visits the buckets
    /// passed since the last call (at most one turn) and the entries in them.
    pub fn expire(&mut self, now: Millis, due: &mut Vec<Entry>) {
        let now_tick = now.0 / self.tick;
        if now_tick < self.cur {
            return;
        }
        let n = self.slots.len() as u64;
        let steps = (now_tick - self.cur).min(n - 1);
        for t in self.cur..=self.cur + steps {
            let Some(slot) = self.slots.get_mut((t % n) as usize) else {
                continue;
            };
            let before = slot.len();
            slot.retain(|e| {
                if e.at <= now {
                    due.push(*e);
                    false
                } else {
                    true
                }
            });
            if before != slot.len() {
                self.len -= before - slot.len();
                self.next = None;
            }
        }
        if self.cur != now_tick {
            // A turn-end answer may now be too late; entries never get earlier.
            if matches!(self.next, Some(Some(at)) if at.0 / self.tick <= now_tick) {
                self.next = None;
            }
        }
        self.cur = now_tick;
    }

    /// When the next entry is due, or `None` if none is scheduled. Entries a turn or more
    /// away are reported as the end of this turn, a wake-up that finds nothing due.
    pub fn next_expiry(&mut self) -> Option<Millis> {
        if let Some(next) = self.next {
            return next;
        }
        let next = self.scan();
        self.next = Some(next);
        next
    }

    fn scan(&self) -> Option<Millis> {
        if self.len == 0 {
            return None;
        }
        let n = self.slots.len() as u64;
        for t in self.cur..self.cur + n {
            let Some(slot) = self.slots.get((t % n) as usize) else {
                continue;
            };
            let soonest = slot
                .iter()
                .filter(|e| e.at.0 / self.tick <= t)
                .map(|e| e.at)
                .min();
            if soonest.is_some() {
                return soonest;
            }
        }
        Some(Millis((self.cur + n) * self.tick))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(at: u64, key: u32) -> Entry {
        Entry {
            at: Millis(at),
            key,
            gen: 0,
        }
    }

    #[test]
    fn fires_exactly_when_due_and_not_before() {
        let mut w = TimerWheel::new(8, 10);
        w.insert(e(25, 1));
        w.insert(e(31, 2));
        assert_eq!(w.next_expiry(), Some(Millis(25)));
        let mut due = Vec::new();
        w.expire(Millis(24), &mut due);
        assert!(due.is_empty());
        w.expire(Millis(25), &mut due);
        assert_eq!(due, vec![e(25, 1)]);
        assert_eq!(w.next_expiry(), Some(Millis(31)));
        due.clear();
        w.expire(Millis(1000), &mut due);
        assert_eq!(due, vec![e(31, 2)]);
        assert!(w.is_empty());
        assert_eq!(w.next_expiry(), None);
    }

    #[test]
    fn entries_beyond_one_turn_wait_for_their_round() {
        let mut w = TimerWheel::new(4, 10); // one turn = 40 ms
        w.insert(e(105, 7));
        assert_eq!(w.next_expiry(), Some(Millis(40)));
        let mut due = Vec::new();
        w.expire(Millis(40), &mut due);
        assert!(due.is_empty());
        assert_eq!(w.next_expiry(), Some(Millis(80)));
        w.expire(Millis(100), &mut due);
        assert!(due.is_empty());
        assert_eq!(w.next_expiry(), Some(Millis(105)));
        w.expire(Millis(106), &mut due);
        assert_eq!(due, vec![e(105, 7)]);
    }

    #[test]
    fn past_deadlines_fire_at_once() {
        let mut w = TimerWheel::new(16, 10);
        let mut due = Vec::new();
        w.expire(Millis(500), &mut due);
        w.insert(e(3, 1));
        assert_eq!(w.next_expiry(), Some(Millis(3)));
        w.expire(Millis(500), &mut due);
        assert_eq!(due, vec![e(3, 1)]);
    }

    #[test]
    fn cost_is_the_buckets_passed_not_the_entries() {
        let mut w = TimerWheel::new(1024, 50);
        for k in 0..10_000 {
            w.insert(e(30_000 + u64::from(k % 100), k));
        }
        let mut due = Vec::new();
        w.expire(Millis(29_999), &mut due);
        assert!(due.is_empty());
        assert_eq!(w.len(), 10_000);
        w.expire(Millis(30_049), &mut due);
        assert_eq!(due.len(), 5_000);
    }

    #[test]
    fn the_cached_answer_follows_inserts_and_expiries() {
        let mut w = TimerWheel::new(64, 10);
        assert_eq!(w.next_expiry(), None);
        w.insert(e(500, 1));
        assert_eq!(w.next_expiry(), Some(Millis(500)));
        w.insert(e(900, 2));
        assert_eq!(w.next_expiry(), Some(Millis(500)));
        w.insert(e(200, 3));
        assert_eq!(w.next_expiry(), Some(Millis(200)));
        let mut due = Vec::new();
        w.expire(Millis(200), &mut due);
        assert_eq!(w.next_expiry(), Some(Millis(500)));
        w.expire(Millis(1000), &mut due);
        assert_eq!(w.next_expiry(), None);
        // Past one turn (640 ms): the turn's end, then the entry itself once within reach.
        w.insert(e(3000, 4));
        assert_eq!(w.next_expiry(), Some(Millis(1640)));
        w.expire(Millis(1640), &mut due);
        assert_eq!(w.next_expiry(), Some(Millis(2280)));
        w.expire(Millis(2500), &mut due);
        assert_eq!(w.next_expiry(), Some(Millis(3000)));
    }
}

//! A hashed timing wheel: per-tick cost in proportion to what expires, not to connections.
//!
//! Each connection keeps at most one entry: the loop schedules a deadline only when it is
//! earlier than the one it already has, and takes that one out first; a connection that goes
//! takes its entry with it. An entry that fires and finds its deadline moved later (a ping
//! put off by traffic) finds nothing due and the next one is scheduled.
//!
//! The entries of all slots share one table, each slot a list through it, and an expired
//! entry's place is reused by the next insert. The wheel therefore holds as many places as
//! entries were ever scheduled at once, whichever slots they fell in: a `Vec` per slot would
//! keep each slot's own largest count, and under churn those maxima add up far past the
//! entries there are (a soak of 1,000 connections with 5% replaced a second grew such slots
//! to 140 KiB for 1,500 entries in one minute, and on). Steady state allocates nothing.

use crate::conn::Millis;

/// Slots in the loop's wheel: 1024 of 50 ms, one turn every 51.2 s.
pub(crate) const WHEEL_SLOTS: usize = 1024;

/// The wheel's own memory per slot: the index of its first entry.
pub(crate) const SLOT_BYTES: usize = std::mem::size_of::<u32>();

/// What one scheduled deadline takes in the wheel: its entry and its two links. Every open
/// connection has one (at least its ping or handshake deadline): part of the idle cost.
pub(crate) const PLACE_BYTES: usize = std::mem::size_of::<Place>();

/// No entry: the end of a slot's list or of the free list; a connection with no place.
pub(crate) const NIL: u32 = u32::MAX;
/// `Place::prev` of a free place.
const FREE: u32 = u32::MAX - 1;
/// `Place::prev` of a slot's first place: this bit and the slot's index.
const HEAD: u32 = 1 << 31;
/// At most this many slots, so that a slot's index never reaches [`FREE`] with [`HEAD`].
const MAX_SLOTS: usize = 1 << 20;

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

/// One place of the wheel's table: an entry and its links in its slot's list, 24 bytes.
#[derive(Clone, Copy, Debug)]
struct Place {
    entry: Entry,
    /// The next (older) place of the slot, or the next free place; [`NIL`]: none.
    next: u32,
    /// The place before it ([`HEAD`] and the slot's index when it is the first), so that a
    /// place is taken out where it is, whatever else its slot holds; [`FREE`] when free.
    prev: u32,
}

/// The wheel: `heads.len()` buckets of `tick` milliseconds each.
#[derive(Debug)]
pub struct TimerWheel {
    /// Per slot, the index of its newest place in `places` ([`NIL`]: none).
    heads: Vec<u32>,
    /// Every place, live or free.
    places: Vec<Place>,
    /// The first free place ([`NIL`]: none; the tables grow).
    free: u32,
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
            heads: vec![NIL; slots.clamp(1, MAX_SLOTS)],
            places: Vec::new(),
            free: NIL,
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

    /// Places in the tables, live or free: the most entries ever scheduled at once.
    #[cfg(test)]
    pub fn places(&self) -> usize {
        self.places.len()
    }

    /// Schedules an entry; one already due fires at the next [`TimerWheel::expire`]. Returns
    /// its place, for [`TimerWheel::remove`] and [`TimerWheel::at`] ([`NIL`] if the table
    /// cannot grow: 2 billion places, 48 GiB, are never reached).
    pub fn insert(&mut self, entry: Entry) -> u32 {
        let tick = (entry.at.0 / self.tick).max(self.cur);
        let n = self.heads.len() as u64;
        let slot = (tick % n) as u32;
        let Some(&head) = self.heads.get(slot as usize) else {
            return NIL;
        };
        let new = Place {
            entry,
            next: head,
            prev: HEAD | slot,
        };
        let place = if self.free != NIL {
            let place = self.free;
            let Some(p) = self.places.get_mut(place as usize) else {
                return NIL;
            };
            self.free = p.next;
            *p = new;
            place
        } else {
            let Ok(place) = u32::try_from(self.places.len()) else {
                return NIL;
            };
            // A place's index must not look like a slot's head in `prev`.
            if place >= HEAD {
                return NIL;
            }
            self.places.push(new);
            place
        };
        if let Some(p) = self.places.get_mut(head as usize) {
            p.prev = place;
        }
        if let Some(h) = self.heads.get_mut(slot as usize) {
            *h = place;
        }
        self.len += 1;
        if !matches!(self.next, Some(Some(next)) if entry.at >= next) {
            self.next = None;
        }
        place
    }

    /// When the entry at `place` is due; `None` if the place holds none ([`NIL`], or an entry
    /// that has fired or was removed).
    pub fn at(&self, place: u32) -> Option<Millis> {
        match self.places.get(place as usize) {
            Some(p) if p.prev != FREE => Some(p.entry.at),
            _ => None,
        }
    }

    /// Takes the entry at `place` out of the wheel before it is due (its connection is gone,
    /// or has an earlier deadline), so that a flood of short connections leaves no entries
    /// behind to wait for deadlines minutes away. Constant time, whatever else its slot
    /// holds. False if the place holds no entry.
    pub fn remove(&mut self, place: u32) -> bool {
        let Some(at) = self.at(place) else {
            return false;
        };
        self.unlink(place);
        if self.next == Some(Some(at)) {
            self.next = None;
        }
        true
    }

    /// Takes live place `place` out of its slot and onto the free list.
    fn unlink(&mut self, place: u32) {
        let Some(&Place { next, prev, .. }) = self.places.get(place as usize) else {
            return;
        };
        let link = if prev & HEAD != 0 {
            self.heads.get_mut((prev & !HEAD) as usize)
        } else {
            self.places.get_mut(prev as usize).map(|p| &mut p.next)
        };
        if let Some(link) = link {
            *link = next;
        }
        if let Some(p) = self.places.get_mut(next as usize) {
            p.prev = prev;
        }
        if let Some(own) = self.places.get_mut(place as usize) {
            own.next = self.free;
            own.prev = FREE;
        }
        self.free = place;
        self.len -= 1;
    }

    /// Moves every entry due at `now` into `due`, advancing the wheel, each slot's in the
    /// order they were inserted. Visits the buckets passed since the last call (at most one
    /// turn) and the entries in them.
    pub fn expire(&mut self, now: Millis, due: &mut Vec<Entry>) {
        let now_tick = now.0 / self.tick;
        if now_tick < self.cur {
            return;
        }
        let n = self.heads.len() as u64;
        let steps = (now_tick - self.cur).min(n - 1);
        for t in self.cur..=self.cur + steps {
            let slot = (t % n) as usize;
            let start = due.len();
            let mut at = self.heads.get(slot).copied().unwrap_or(NIL);
            while at != NIL {
                let Some(&Place { entry, next, .. }) = self.places.get(at as usize) else {
                    break;
                };
                if entry.at <= now {
                    self.unlink(at);
                    due.push(entry);
                }
                at = next;
            }
            if let Some(expired) = due.get_mut(start..) {
                if !expired.is_empty() {
                    // The list runs newest first.
                    expired.reverse();
                    self.next = None;
                }
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
        let n = self.heads.len() as u64;
        for t in self.cur..self.cur + n {
            let mut soonest: Option<Millis> = None;
            let mut at = self.heads.get((t % n) as usize).copied().unwrap_or(NIL);
            while at != NIL {
                let Some(&Place { entry, next, .. }) = self.places.get(at as usize) else {
                    break;
                };
                if entry.at.0 / self.tick <= t && soonest.is_none_or(|s| entry.at < s) {
                    soonest = Some(entry.at);
                }
                at = next;
            }
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
    fn a_place_is_an_entry_and_two_links_without_padding() {
        assert_eq!(PLACE_BYTES, 24);
        assert_eq!(std::mem::size_of::<Entry>(), 16);
        assert_eq!(SLOT_BYTES, 4);
    }

    #[test]
    fn a_removed_entry_never_fires_and_its_place_is_reused() {
        let mut w = TimerWheel::new(1024, 50);
        let places: Vec<u32> = (0..4).map(|k| w.insert(e(1_000, k))).collect();
        let far = w.insert(e(60_000, 9)); // past one turn: same slot arithmetic, a later round
        assert_eq!(w.at(places[2]), Some(Millis(1_000)));
        assert!(w.remove(places[2]));
        assert_eq!(w.at(places[2]), None);
        assert!(!w.remove(places[2]), "only once");
        assert!(!w.remove(77), "never a place");
        assert!(!w.remove(NIL));
        assert!(w.remove(far));
        assert_eq!(w.len(), 3);
        w.insert(e(2_000, 5));
        assert_eq!(w.places(), 5, "a removed entry's place is taken again");
        let mut due = Vec::new();
        w.expire(Millis(70_000), &mut due);
        let keys: Vec<u32> = due.iter().map(|d| d.key).collect();
        assert_eq!(keys, [0, 1, 3, 5]);
        assert!(w.is_empty());
        assert!(
            places.iter().all(|&p| w.at(p).is_none()),
            "fired entries leave their places"
        );
    }

    #[test]
    fn removing_anywhere_in_a_crowded_slot_keeps_the_rest_in_order() {
        // 1,000 entries in one slot (a burst of connections), removed first, last, middle
        // and in between; then the rest of them, new ones in freed places among them.
        let mut w = TimerWheel::new(1024, 50);
        let places: Vec<u32> = (0..1_000).map(|k| w.insert(e(10_000, k))).collect();
        let gone: Vec<u32> = (0..1_000)
            .filter(|k| k % 3 == 0 || *k == 999 || *k == 500)
            .collect();
        for &k in gone.iter().rev() {
            assert!(w.remove(places[k as usize]), "{k}");
        }
        for k in 1_000..1_010 {
            w.insert(e(10_000, k));
        }
        assert_eq!(w.len(), 1_000 - gone.len() + 10);
        assert_eq!(w.places(), 1_000);
        let mut due = Vec::new();
        w.expire(Millis(10_000), &mut due);
        let keys: Vec<u32> = due.iter().map(|d| d.key).collect();
        let mut kept: Vec<u32> = (0..1_000).filter(|k| !gone.contains(k)).collect();
        kept.extend(1_000..1_010);
        assert_eq!(keys, kept);
        assert!(w.is_empty());
        assert_eq!(w.next_expiry(), None);
    }

    #[test]
    fn places_follow_the_most_entries_at_once_not_each_slots_own_peak() {
        // 16 entries at a time, in one slot after another around the whole wheel (what
        // churn does): a table per slot would keep 16 places in every slot, 16,384 in all.
        let mut w = TimerWheel::new(1024, 50);
        let mut due = Vec::new();
        for round in 0..2u64 {
            for slot in 0..1024u64 {
                let at = (round * 1024 + slot) * 50 + 10;
                for k in 0..16 {
                    w.insert(e(at, k));
                }
                due.clear();
                w.expire(Millis(at), &mut due);
                assert_eq!(due.len(), 16, "round {round}, slot {slot}");
            }
        }
        assert!(w.is_empty());
        assert_eq!(w.places(), 16);
    }

    #[test]
    fn a_slot_gives_its_due_entries_in_insertion_order_and_keeps_the_rest() {
        let mut w = TimerWheel::new(8, 10); // slot 1 holds ticks 1, 9, 17, …
        w.insert(e(10, 1));
        w.insert(e(90, 2));
        w.insert(e(15, 3));
        w.insert(e(170, 4));
        w.insert(e(12, 5));
        let mut due = Vec::new();
        w.expire(Millis(15), &mut due);
        assert_eq!(due, vec![e(10, 1), e(15, 3), e(12, 5)]);
        assert_eq!(w.len(), 2);
        assert_eq!(w.next_expiry(), Some(Millis(90)));
        due.clear();
        w.expire(Millis(90), &mut due);
        assert_eq!(due, vec![e(90, 2)]);
        // Freed places are reused before the tables grow.
        for k in 0..4 {
            w.insert(e(200 + k, 10 + k as u32));
        }
        assert_eq!(w.places(), 5);
        due.clear();
        w.expire(Millis(1000), &mut due);
        assert_eq!(due.len(), 5);
        assert_eq!(due[0], e(170, 4));
        assert!(w.is_empty());
        assert_eq!(w.next_expiry(), None);
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

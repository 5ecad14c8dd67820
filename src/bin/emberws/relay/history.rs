//! The relay's history: the latest messages of each topic, kept so that a subscriber that
//! comes back with `since` gets what it missed, and told `gap` when history no longer
//! reaches back that far.
//!
//! In: each message the relay publishes (its `seq`, topic and `message` frame), in `seq`
//! order. Out: the messages held after a given `seq`, in order, and whether a topic dropped
//! a message after a given `seq`. Bounded twice: at most `messages` per topic, and at most
//! `bytes` in all, counting each message's frame, its topic and its slot in the index
//! ([`SLOT_BYTES`]), and each topic's name and record ([`TOPIC_BYTES`]). A topic over its
//! count drops its oldest message; history over its bytes drops the oldest messages of all.
//!
//! Storage: one byte arena holds each message's topic and frame, appended in `seq` order;
//! one index (`VecDeque`) holds a slot per message in the same order, searched by `seq` in
//! O(log n). A message a topic drops for its count becomes a tombstone in place; the bytes of
//! dropped messages are reclaimed by compacting the arena in place once they pass a quarter
//! of `bytes`, so the arena never holds more than 1.25 × `bytes` and a message costs a copy
//! of at most four bytes per byte it brought, amortised. Steady state allocates nothing: the
//! arena and the index keep their size, and a topic is allocated only when it first appears.

use std::collections::{HashMap, VecDeque};

/// What one message held costs beside its frame and its topic's bytes: its slot in the index.
pub const SLOT_BYTES: usize = std::mem::size_of::<Slot>();

/// What a topic with messages held costs beside its name: its record, its entry in the map of
/// names (a boxed name, an index, the map's control byte and spare room) and a free-list slot.
pub const TOPIC_BYTES: usize = 64;

/// `Slot::topic` of a tombstone.
const DEAD: u32 = u32::MAX;

/// One message in the index.
#[derive(Clone, Copy, Debug)]
struct Slot {
    seq: u64,
    /// The `seq` of the next message held of the same topic; 0 for none (yet).
    next: u64,
    /// Where its topic starts in the arena; its frame follows.
    at: u32,
    frame_len: u32,
    /// Its topic's record, or [`DEAD`].
    topic: u32,
    topic_len: u16,
}

impl Slot {
    fn bytes(&self) -> usize {
        usize::from(self.topic_len) + self.frame_len as usize
    }
}

/// A topic with messages held.
#[derive(Clone, Copy, Debug, Default)]
struct Topic {
    held: u32,
    oldest: u64,
    newest: u64,
    /// The highest `seq` of this topic that history dropped (0: none).
    dropped_through: u64,
}

/// One message held: its id's `seq`, its topic and its `message` frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Held<'a> {
    pub seq: u64,
    pub topic: &'a str,
    pub frame: &'a str,
}

/// The latest messages of each topic, within a count per topic and a byte budget.
#[derive(Debug)]
pub struct History {
    per_topic: usize,
    budget: usize,
    arena: Vec<u8>,
    slots: VecDeque<Slot>,
    names: HashMap<Box<str>, u32>,
    topics: Vec<Topic>,
    free: Vec<u32>,
    /// What `budget` bounds: the messages held and their topics.
    used: usize,
    /// Arena bytes of messages no longer held, until a compaction reclaims them.
    dead: usize,
    /// Tombstones in the index.
    tombs: usize,
    /// The highest `seq` dropped of a topic that holds nothing any more (or never held
    /// anything): such a topic is forgotten, and only this mark remembers it.
    forgotten_through: u64,
    /// Messages dropped so far, for any reason.
    drops: u64,
    /// The last `seq` given to [`History::push`].
    last: u64,
}

impl History {
    /// Empty history keeping at most `per_topic` messages of a topic and `budget` bytes in
    /// all; either 0 switches it off (every message is dropped as it comes). Allocates
    /// nothing until the first message.
    pub fn new(per_topic: usize, budget: usize) -> History {
        History {
            per_topic,
            // Arena offsets are u32: the configuration allows at most 1 GiB.
            budget: budget.min(u32::MAX as usize / 2),
            arena: Vec::new(),
            slots: VecDeque::new(),
            names: HashMap::new(),
            topics: Vec::new(),
            free: Vec::new(),
            used: 0,
            dead: 0,
            tombs: 0,
            forgotten_through: 0,
            drops: 0,
            last: 0,
        }
    }

    /// Keeps message `seq` of `topic`, dropping what its bounds demand: the topic's oldest
    /// message past its count, then the oldest messages of all past the byte budget. A
    /// message that could never fit (or a `seq` not above the last one) is dropped at once.
    pub fn push(&mut self, seq: u64, topic: &str, frame: &str) {
        if seq <= self.last {
            return;
        }
        self.last = seq;
        let entry = SLOT_BYTES + topic.len() + frame.len();
        let topic_len = u16::try_from(topic.len()).ok();
        let frame_len = u32::try_from(frame.len()).ok();
        let (Some(topic_len), Some(frame_len)) = (topic_len, frame_len) else {
            return self.drop_new(seq, topic);
        };
        if self.per_topic == 0 || entry + TOPIC_BYTES + topic.len() > self.budget {
            return self.drop_new(seq, topic);
        }
        if let Some(&t) = self.names.get(topic) {
            if self.topics[t as usize].held as usize >= self.per_topic {
                self.drop_oldest_of(t);
            }
        }
        loop {
            let cost = entry
                + if self.names.contains_key(topic) {
                    0
                } else {
                    TOPIC_BYTES + topic.len()
                };
            if self.used + cost <= self.budget {
                break;
            }
            if !self.drop_front() {
                break;
            }
        }
        if self.dead + self.tombs * SLOT_BYTES > self.budget / 4 {
            self.compact();
        }
        let t = match self.names.get(topic) {
            Some(&t) => t,
            None => self.new_topic(topic, seq),
        };
        let record = self.topics[t as usize];
        if record.held > 0 {
            if let Ok(i) = self.index_of(record.newest) {
                self.slots[i].next = seq;
            }
        } else {
            self.topics[t as usize].oldest = seq;
        }
        let record = &mut self.topics[t as usize];
        record.newest = seq;
        record.held += 1;
        let at = self.arena.len();
        self.reserve(topic.len() + frame.len());
        self.arena.extend_from_slice(topic.as_bytes());
        self.arena.extend_from_slice(frame.as_bytes());
        self.slots.push_back(Slot {
            seq,
            next: 0,
            at: at as u32,
            frame_len,
            topic: t,
            topic_len,
        });
        self.used += entry;
    }

    /// The messages held with a `seq` above `seq`, in order.
    pub fn after(&self, seq: u64) -> impl Iterator<Item = Held<'_>> + '_ {
        let from = match self.index_of(seq) {
            Ok(i) => i + 1,
            Err(i) => i,
        };
        self.slots
            .range(from..)
            .filter(|s| s.topic != DEAD)
            .map(|s| self.held(s))
    }

    /// Whether history dropped (or never kept) a message with a `seq` above `since` of a
    /// topic for which `matching` holds. A forgotten topic (nothing held) is remembered only
    /// by one mark for all of them, so a message dropped on it counts for every `matching`:
    /// the answer may say `true` where nothing matching was lost, never `false` where
    /// something was.
    pub fn gap(&self, since: u64, mut matching: impl FnMut(&str) -> bool) -> bool {
        self.forgotten_through > since
            || self.names.iter().any(|(name, &t)| {
                self.topics
                    .get(t as usize)
                    .is_some_and(|r| r.dropped_through > since)
                    && matching(name)
            })
    }

    /// How many messages were dropped so far, for any reason: a replay that sees the same
    /// count as before lost nothing meanwhile.
    pub fn drops(&self) -> u64 {
        self.drops
    }

    /// Messages held.
    pub fn len(&self) -> usize {
        self.slots.len() - self.tombs
    }

    /// Bytes held as the budget counts them.
    pub fn bytes(&self) -> usize {
        self.used
    }

    fn held<'a>(&'a self, s: &Slot) -> Held<'a> {
        let at = s.at as usize;
        let mid = at + usize::from(s.topic_len);
        let end = mid + s.frame_len as usize;
        let text = |r: std::ops::Range<usize>| {
            std::str::from_utf8(self.arena.get(r).unwrap_or_default()).unwrap_or_default()
        };
        Held {
            seq: s.seq,
            topic: text(at..mid),
            frame: text(mid..end),
        }
    }

    fn index_of(&self, seq: u64) -> Result<usize, usize> {
        self.slots.binary_search_by_key(&seq, |s| s.seq)
    }

    fn new_topic(&mut self, name: &str, seq: u64) -> u32 {
        let record = Topic {
            held: 0,
            oldest: seq,
            newest: seq,
            dropped_through: 0,
        };
        let t = match self.free.pop() {
            Some(t) => {
                self.topics[t as usize] = record;
                t
            }
            None => {
                self.topics.push(record);
                (self.topics.len() - 1) as u32
            }
        };
        self.names.insert(name.into(), t);
        self.used += TOPIC_BYTES + name.len();
        t
    }

    /// A message not kept: its topic (or the forgotten mark) remembers it was dropped.
    fn drop_new(&mut self, seq: u64, topic: &str) {
        self.drops += 1;
        match self.names.get(topic) {
            Some(&t) => {
                let r = &mut self.topics[t as usize];
                r.dropped_through = r.dropped_through.max(seq);
            }
            None => self.forgotten_through = self.forgotten_through.max(seq),
        }
    }

    /// Drops the oldest message of all (and the tombstones before it); false if none is held.
    fn drop_front(&mut self) -> bool {
        self.pop_tombs();
        let Some(slot) = self.slots.pop_front() else {
            return false;
        };
        self.dead += slot.bytes();
        self.release(slot, false);
        self.pop_tombs();
        true
    }

    /// Drops topic `t`'s oldest message, leaving a tombstone in the index; the topic is kept
    /// even if that was its only message, as one of its own is about to come in.
    fn drop_oldest_of(&mut self, t: u32) {
        let oldest = self.topics[t as usize].oldest;
        let Ok(i) = self.index_of(oldest) else {
            return;
        };
        let slot = self.slots[i];
        self.slots[i].topic = DEAD;
        self.tombs += 1;
        self.dead += slot.bytes();
        self.release(slot, true);
        self.pop_tombs();
    }

    /// The accounts of a message that left: its topic's record, and the topic itself when it
    /// held nothing else (unless `keep`).
    fn release(&mut self, slot: Slot, keep: bool) {
        self.drops += 1;
        self.used -= SLOT_BYTES + slot.bytes();
        let t = slot.topic;
        let Some(r) = self.topics.get_mut(t as usize) else {
            return;
        };
        r.held -= 1;
        r.oldest = slot.next;
        r.dropped_through = r.dropped_through.max(slot.seq);
        if r.held > 0 || keep {
            return;
        }
        let through = r.dropped_through;
        self.forgotten_through = self.forgotten_through.max(through);
        let at = slot.at as usize;
        let name = self
            .arena
            .get(at..at + usize::from(slot.topic_len))
            .and_then(|b| std::str::from_utf8(b).ok())
            .unwrap_or_default();
        if self.names.remove(name).is_some() {
            self.used -= TOPIC_BYTES + name.len();
            self.free.push(t);
        }
    }

    fn pop_tombs(&mut self) {
        while self.slots.front().is_some_and(|s| s.topic == DEAD) {
            self.slots.pop_front();
            self.tombs -= 1;
        }
        if self.slots.is_empty() {
            // Nothing held: the whole arena is dead.
            self.arena.clear();
            self.dead = 0;
        }
    }

    /// Moves the messages held to the front of the arena, in order, and forgets the
    /// tombstones.
    fn compact(&mut self) {
        let mut to = 0usize;
        let arena = &mut self.arena;
        self.slots.retain_mut(|s| {
            if s.topic == DEAD {
                return false;
            }
            let (from, len) = (s.at as usize, s.bytes());
            arena.copy_within(from..from + len, to);
            s.at = to as u32;
            to += len;
            true
        });
        arena.truncate(to);
        self.dead = 0;
        self.tombs = 0;
    }

    /// Room for `n` more arena bytes, growing in steps but never past what the bounds allow
    /// (the budget and the quarter of it that may be dead).
    fn reserve(&mut self, n: usize) {
        let need = self.arena.len() + n;
        if need <= self.arena.capacity() {
            return;
        }
        let most = (self.budget + self.budget / 4).max(need);
        let want = (self.arena.capacity() * 2).max(4096).clamp(need, most);
        self.arena.reserve_exact(want - self.arena.len());
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    /// The reference: every message held, in order, in one `Vec`, with the same rules said
    /// plainly.
    #[derive(Default)]
    struct Model {
        per_topic: usize,
        budget: usize,
        held: Vec<(u64, String, String)>,
        dropped: BTreeMap<String, u64>,
        forgotten: u64,
        /// A topic that dropped its only message for its count, kept for the one coming in.
        kept: Option<String>,
    }

    impl Model {
        fn count(&self, topic: &str) -> usize {
            self.held.iter().filter(|m| m.1 == topic).count()
        }

        fn used(&self) -> usize {
            let mut topics: Vec<&String> = self.held.iter().map(|m| &m.1).collect();
            topics.sort();
            topics.dedup();
            let messages: usize = self
                .held
                .iter()
                .map(|m| SLOT_BYTES + m.1.len() + m.2.len())
                .sum();
            let kept = match &self.kept {
                Some(k) if self.count(k) == 0 => TOPIC_BYTES + k.len(),
                _ => 0,
            };
            messages + kept + topics.iter().map(|t| TOPIC_BYTES + t.len()).sum::<usize>()
        }

        /// Drops `held[i]`; its topic is forgotten if that was its last message, unless `keep`.
        fn remove(&mut self, i: usize, keep: bool) {
            let (seq, topic, _) = self.held.remove(i);
            let d = self.dropped.entry(topic.clone()).or_default();
            *d = (*d).max(seq);
            if self.count(&topic) == 0 && !keep {
                let d = self.dropped.remove(&topic).unwrap_or_default();
                self.forgotten = self.forgotten.max(d);
            }
        }

        fn push(&mut self, seq: u64, topic: &str, frame: &str) {
            let entry = SLOT_BYTES + topic.len() + frame.len();
            if self.per_topic == 0 || entry + TOPIC_BYTES + topic.len() > self.budget {
                if self.known(topic) {
                    let d = self.dropped.entry(topic.to_owned()).or_default();
                    *d = (*d).max(seq);
                } else {
                    self.forgotten = self.forgotten.max(seq);
                }
                return;
            }
            if self.count(topic) >= self.per_topic {
                let i = self.held.iter().position(|m| m.1 == topic).unwrap();
                self.remove(i, true);
                self.kept = Some(topic.to_owned());
            }
            loop {
                let new_topic = if !self.known(topic) {
                    TOPIC_BYTES + topic.len()
                } else {
                    0
                };
                if self.held.is_empty() || self.used() + entry + new_topic <= self.budget {
                    break;
                }
                self.remove(0, false);
            }
            self.kept = None;
            self.held.push((seq, topic.to_owned(), frame.to_owned()));
        }

        /// Whether `topic` has a record: messages held, or one kept for the message coming in.
        fn known(&self, topic: &str) -> bool {
            self.count(topic) > 0 || self.kept.as_deref() == Some(topic)
        }

        fn gap(&self, since: u64, matching: impl Fn(&str) -> bool) -> bool {
            self.forgotten > since
                || self
                    .dropped
                    .iter()
                    .any(|(t, &d)| d > since && matching(t) && self.count(t) > 0)
        }
    }

    fn held(h: &History) -> Vec<(u64, String, String)> {
        h.after(0)
            .map(|m| (m.seq, m.topic.to_owned(), m.frame.to_owned()))
            .collect()
    }

    #[test]
    fn a_topic_keeps_its_latest_messages_and_answers_gap() {
        let mut h = History::new(2, 1 << 20);
        for (seq, topic) in [(1, "a"), (2, "b"), (3, "a"), (5, "a"), (6, "b")] {
            h.push(seq, topic, &format!("f{seq}"));
        }
        let seqs: Vec<u64> = h.after(0).map(|m| m.seq).collect();
        assert_eq!(seqs, [2, 3, 5, 6], "a dropped 1, its oldest");
        assert_eq!(h.after(3).map(|m| m.seq).collect::<Vec<_>>(), [5, 6]);
        assert_eq!(
            h.after(4).map(|m| m.frame).collect::<Vec<_>>(),
            ["f5", "f6"]
        );
        assert!(h.gap(0, |t| t == "a"), "a dropped 1");
        assert!(!h.gap(1, |t| t == "a"));
        assert!(!h.gap(0, |t| t == "b"), "b dropped nothing");
        assert_eq!(h.drops(), 1);
        assert_eq!(h.len(), 4);
    }

    #[test]
    fn the_byte_budget_drops_the_oldest_of_all_and_counts_everything() {
        let frame = "x".repeat(100);
        let one = SLOT_BYTES + 1 + frame.len();
        // Room for three messages of one topic, not four.
        let mut h = History::new(100, TOPIC_BYTES + 1 + 3 * one + one / 2);
        for seq in 1..=5 {
            h.push(seq, "t", &frame);
        }
        assert_eq!(h.after(0).map(|m| m.seq).collect::<Vec<_>>(), [3, 4, 5]);
        assert_eq!(h.bytes(), TOPIC_BYTES + 1 + 3 * one);
        assert!(h.gap(1, |t| t == "t"), "t dropped 1 and 2");
        assert!(!h.gap(2, |t| t == "t"));
        assert!(!h.gap(1, |t| t == "other"));
        // A message larger than the budget is never kept, and counts as dropped.
        h.push(6, "t", &"y".repeat(2000));
        assert_eq!(h.after(5).count(), 0);
        assert!(h.gap(5, |t| t == "t"));
    }

    #[test]
    fn off_keeps_nothing_and_says_gap_after_any_message() {
        let mut h = History::new(0, 1 << 20);
        h.push(1, "a", "f");
        assert_eq!(h.len(), 0);
        assert!(h.gap(0, |_| true));
        assert!(!h.gap(1, |_| true));
    }

    #[test]
    fn steady_state_allocates_nothing_once_the_arena_is_full() {
        let mut h = History::new(4, 64 * 1024);
        let frame = "z".repeat(200);
        for seq in 1..=10_000u64 {
            h.push(seq, ["a", "b", "c"][(seq % 3) as usize], &frame);
        }
        let (arena, slots) = (h.arena.capacity(), h.slots.capacity());
        for seq in 10_001..=20_000u64 {
            h.push(seq, ["a", "b", "c"][(seq % 3) as usize], &frame);
        }
        assert_eq!((h.arena.capacity(), h.slots.capacity()), (arena, slots));
        assert!(h.arena.capacity() <= 64 * 1024 + 16 * 1024);
        assert_eq!(h.len(), 12);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        #[test]
        fn history_matches_the_model(
            per_topic in 0usize..5,
            budget in 0usize..1500,
            pushes in prop::collection::vec((0usize..5, 0usize..120, 1u64..3), 0..200),
            probes in prop::collection::vec((0u64..400, 0usize..5), 1..8),
        ) {
            let topics = ["a", "b/c", "d", "long/topic/name", "e"];
            let mut h = History::new(per_topic, budget);
            let mut m = Model { per_topic, budget, ..Model::default() };
            let mut seq = 0;
            for (t, len, step) in pushes {
                seq += step;
                let frame: String = std::iter::repeat_n('q', len).collect();
                h.push(seq, topics[t], &frame);
                m.push(seq, topics[t], &frame);
                prop_assert_eq!(held(&h), m.held.clone());
                prop_assert_eq!(h.bytes(), m.used());
                prop_assert!(h.bytes() <= budget);
                prop_assert!(h.arena.len() <= budget + budget / 4 + SLOT_BYTES + 200);
                for t in topics {
                    prop_assert!(m.count(t) <= per_topic);
                }
            }
            for (since, t) in probes {
                let want = m.gap(since, |x| x == topics[t]);
                prop_assert_eq!(h.gap(since, |x| x == topics[t]), want);
                prop_assert_eq!(h.gap(since, |_| true), m.gap(since, |_| true));
                let after: Vec<u64> = h.after(since).map(|x| x.seq).collect();
                let model: Vec<u64> =
                    m.held.iter().map(|x| x.0).filter(|&s| s > since).collect();
                prop_assert_eq!(after, model);
            }
        }
    }
}

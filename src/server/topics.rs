//! The topic table: who is subscribed to what, with MQTT-style wildcards.
//!
//! Topics are `/`-separated levels. A subscription pattern may use `+` for exactly one level
//! and `#` (last) for all remaining levels, zero or more. As in MQTT (3.1.1 §4.7.2), a
//! wildcard in the first level does not match a topic whose first level starts with `$`:
//! such topics (`$SYS/…`, a server's own figures) reach only patterns that name them.

use std::collections::HashMap;

use super::inbox::ConnId;

/// Whether `topic` matches the subscription `pattern`.
///
/// `+` matches one level, a last `#` the remaining levels (zero or more, so `a/#` matches
/// `a`). A pattern whose first level is `+` or `#` does not match a topic that starts with
/// `$` (MQTT 3.1.1 §4.7.2): `#` and `+/x` never match `$SYS/x`, `$SYS/#` does.
pub fn topic_matches(pattern: &str, topic: &str) -> bool {
    if topic.starts_with('$') && (pattern.starts_with('#') || pattern.starts_with('+')) {
        // A first level that starts with a wildcard character is `+` or `#` itself (or
        // an invalid level, which matches nothing anyway).
        return false;
    }
    let mut pat = pattern.split('/');
    let mut top = topic.split('/');
    loop {
        match (pat.next(), top.next()) {
            (Some("#"), _) => return pat.next().is_none(),
            (Some("+"), Some(_)) => {}
            (Some(p), Some(t)) if p == t => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// True if a pattern uses a wildcard level.
fn is_wild(pattern: &str) -> bool {
    pattern.split('/').any(|level| level == "+" || level == "#")
}

/// A topic's first level and the levels after it, if any.
fn first_level(topic: &str) -> (&str, Option<&str>) {
    match topic.split_once('/') {
        Some((level, rest)) => (level, Some(rest)),
        None => (topic, None),
    }
}

/// Subscriptions: pattern → subscribers, and the reverse for cleanup when a connection ends.
///
/// Every change costs time in the connection's own patterns (at most `max_subscriptions`),
/// never in a pattern's subscribers: each of a connection's patterns keeps its place in that
/// pattern's list, so that a topic with 100,000 subscribers takes a subscribe or a departure
/// as quickly as one with a single subscriber. A publish costs one lookup for the topic
/// itself and a walk of the wildcard patterns' [`Tree`] along the topic's levels: the
/// patterns that cannot match are never looked at.
#[derive(Debug, Default)]
pub(crate) struct Topics {
    /// Patterns without a wildcard level: subscribers by topic.
    subs: HashMap<Box<str>, Vec<ConnId>>,
    /// Patterns with a wildcard level.
    wild: Tree,
    /// Each connection's patterns, by slab key. A table by key rather than a hash map: under
    /// churn (connections replaced all the time) a hash map's deleted entries pile up until
    /// it rehashes, and with half its capacity in use it doubles instead (a soak of 1,000
    /// connections took 136 KiB more that way after four minutes); this one is as long as
    /// the highest key that ever subscribed, and never changes shape.
    by_conn: Vec<Held>,
}

/// The wildcard patterns as a tree of their levels (`+` and `#` are levels like any other).
/// A node holds the subscribers of the pattern that ends there; a node with nothing under
/// it and no subscriber is removed.
#[derive(Debug, Default)]
struct Tree {
    subs: Vec<ConnId>,
    /// The next levels; `None` at a leaf. Boxed so that a leaf (most nodes) is 32 bytes, not
    /// 72: an empty map is 48.
    #[allow(clippy::box_collection)]
    next: Option<Box<HashMap<Box<str>, Tree>>>,
}

impl Tree {
    fn child(&self, level: &str) -> Option<&Tree> {
        self.next.as_ref()?.get(level)
    }

    fn is_empty(&self) -> bool {
        self.subs.is_empty() && self.next.is_none()
    }

    /// The node of `pattern`, made if it is new.
    fn entry(&mut self, pattern: &str) -> &mut Tree {
        pattern.split('/').fold(self, |node, level| {
            node.next
                .get_or_insert_with(Box::default)
                .entry(level.into())
                .or_default()
        })
    }

    /// The node of `pattern`, if it exists.
    fn get_mut(&mut self, pattern: &str) -> Option<&mut Tree> {
        let mut node = self;
        for level in pattern.split('/') {
            node = node.next.as_mut()?.get_mut(level)?;
        }
        Some(node)
    }

    /// Removes the nodes along `pattern` that hold nothing any more.
    fn prune(&mut self, pattern: &str) {
        let (level, rest) = first_level(pattern);
        let Some(next) = self.next.as_mut() else {
            return;
        };
        if let Some(child) = next.get_mut(level) {
            if let Some(rest) = rest {
                child.prune(rest);
            }
            if child.is_empty() {
                next.remove(level);
            }
        }
        if next.is_empty() {
            self.next = None;
        }
    }

    /// Appends the subscribers of every pattern under this node that matches the levels
    /// `rest` (`None`: no level left), and counts the lists taken. At the root of a `$`
    /// topic, the `+` and `#` levels are passed over (MQTT's rule, as in [`topic_matches`]).
    fn collect(&self, rest: Option<&str>, dollar: bool, out: &mut Vec<ConnId>, lists: &mut usize) {
        let mut take = |subs: &[ConnId]| {
            if !subs.is_empty() {
                out.extend_from_slice(subs);
                *lists += 1;
            }
        };
        if !dollar {
            // A last `#` matches the rest, zero levels or more.
            if let Some(hash) = self.child("#") {
                take(&hash.subs);
            }
        }
        let Some(rest) = rest else {
            take(&self.subs);
            return;
        };
        let (level, rest) = first_level(rest);
        // A `#` node ends its pattern (one with levels after its `#` matches nothing), and a
        // topic level `+` is reached through the wildcard below: neither is walked as a name.
        if level != "#" && level != "+" {
            if let Some(node) = self.child(level) {
                node.collect(rest, false, out, lists);
            }
        }
        if !dollar {
            if let Some(plus) = self.child("+") {
                plus.collect(rest, false, out, lists);
            }
        }
    }
}

/// The patterns of the connection that holds a key now (`gen`), or of none (empty).
#[derive(Debug, Default)]
struct Held {
    gen: u32,
    patterns: Vec<Sub>,
}

/// One subscription of a connection: its pattern and its place in the pattern's subscribers.
#[derive(Debug)]
struct Sub {
    pattern: Box<str>,
    at: u32,
}

impl Topics {
    /// Subscribes `id` to `pattern`; false if it already was.
    pub(crate) fn subscribe(&mut self, id: ConnId, pattern: &str) -> bool {
        let key = id.key as usize;
        if self.by_conn.len() <= key {
            self.by_conn.resize_with(key + 1, Held::default);
        }
        let Some(held) = self.by_conn.get_mut(key) else {
            return false;
        };
        if held.gen != id.gen {
            // A former owner of the key: its patterns went with `remove_conn`.
            held.gen = id.gen;
            held.patterns.clear();
        }
        if held.patterns.iter().any(|s| *s.pattern == *pattern) {
            return false;
        }
        let subs = if is_wild(pattern) {
            &mut self.wild.entry(pattern).subs
        } else {
            self.subs.entry(pattern.into()).or_default()
        };
        let Ok(at) = u32::try_from(subs.len()) else {
            return false; // 4 billion subscribers: more than a slab can hold
        };
        subs.push(id);
        held.patterns.push(Sub {
            pattern: pattern.into(),
            at,
        });
        true
    }

    /// The patterns of `id`, if it holds any.
    fn held_mut(&mut self, id: ConnId) -> Option<&mut Vec<Sub>> {
        self.by_conn
            .get_mut(id.key as usize)
            .filter(|held| held.gen == id.gen)
            .map(|held| &mut held.patterns)
    }

    /// Unsubscribes `id` from `pattern`; false if it was not subscribed.
    pub(crate) fn unsubscribe(&mut self, id: ConnId, pattern: &str) -> bool {
        let Some(list) = self.held_mut(id) else {
            return false;
        };
        let Some(i) = list.iter().position(|s| *s.pattern == *pattern) else {
            return false;
        };
        let sub = list.swap_remove(i);
        if list.is_empty() {
            *list = Vec::new(); // gives its memory back
        }
        self.remove_sub(id, &sub);
        true
    }

    /// Takes one subscription out of its pattern's list. The last subscriber moves into its
    /// place, and that subscriber's own record of the place follows.
    fn remove_sub(&mut self, id: ConnId, sub: &Sub) {
        let wild = is_wild(&sub.pattern);
        let subs = if wild {
            self.wild.get_mut(&sub.pattern).map(|node| &mut node.subs)
        } else {
            self.subs.get_mut(&sub.pattern)
        };
        let Some(subs) = subs else {
            return;
        };
        let mut at = sub.at as usize;
        if subs.get(at) != Some(&id) {
            // Not reached: every place is kept up to date. Never a wrong removal, though.
            debug_assert!(false, "{id} is not at {at} of {}", sub.pattern);
            match subs.iter().position(|&s| s == id) {
                Some(i) => at = i,
                None => return,
            }
        }
        subs.swap_remove(at);
        let (moved, emptied) = (subs.get(at).copied(), subs.is_empty());
        let place = moved
            .and_then(|moved| self.held_mut(moved))
            .and_then(|held| held.iter_mut().find(|s| s.pattern == sub.pattern));
        if let Some(place) = place {
            place.at = u32::try_from(at).unwrap_or(u32::MAX);
        }
        if emptied {
            if wild {
                self.wild.prune(&sub.pattern);
            } else {
                self.subs.remove(&sub.pattern);
            }
        }
    }

    /// Ends every subscription of a connection.
    pub(crate) fn remove_conn(&mut self, id: ConnId) {
        if let Some(list) = self.held_mut(id) {
            let patterns = std::mem::take(list);
            for sub in &patterns {
                self.remove_sub(id, sub);
            }
        }
    }

    /// Subscriptions of one connection.
    pub(crate) fn count(&self, id: ConnId) -> usize {
        self.by_conn
            .get(id.key as usize)
            .filter(|held| held.gen == id.gen)
            .map_or(0, |held| held.patterns.len())
    }

    /// Appends the subscribers of `topic` to `out`, each once.
    pub(crate) fn matching(&self, topic: &str, out: &mut Vec<ConnId>) {
        let start = out.len();
        let mut lists = 0;
        if let Some(subs) = self.subs.get(topic) {
            out.extend_from_slice(subs);
            lists += 1;
        }
        if !self.wild.is_empty() {
            self.wild
                .collect(Some(topic), topic.starts_with('$'), out, &mut lists);
        }
        if lists > 1 {
            // A connection subscribed through two patterns gets the message once.
            if let Some(tail) = out.get_mut(start..) {
                tail.sort_unstable();
            }
            let mut seen = start;
            for i in start..out.len() {
                if i == start || out.get(i) != out.get(seen - 1) {
                    out.swap(seen, i);
                    seen += 1;
                }
            }
            out.truncate(seen);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mqtt_wildcards() {
        assert!(topic_matches("a/b", "a/b"));
        assert!(!topic_matches("a/b", "a/b/c"));
        assert!(topic_matches("a/+", "a/b"));
        assert!(!topic_matches("a/+", "a/b/c"));
        assert!(topic_matches("a/+/c", "a/x/c"));
        assert!(topic_matches("#", "a/b/c"));
        assert!(topic_matches("#", ""));
        assert!(topic_matches("a/#", "a"));
        assert!(topic_matches("a/#", "a/b/c"));
        assert!(!topic_matches("a/#", "b/c"));
        assert!(!topic_matches("a/#/c", "a/b/c"));
        assert!(topic_matches("+/+", "/x"));
    }

    #[test]
    fn a_first_level_wildcard_does_not_match_dollar_topics() {
        for pattern in ["#", "+", "+/x", "+/#", "+/+"] {
            for topic in ["$SYS", "$SYS/x", "$x"] {
                assert!(!topic_matches(pattern, topic), "{pattern} on {topic}");
            }
        }
        assert!(topic_matches("$SYS/#", "$SYS/x"));
        assert!(topic_matches("$SYS/#", "$SYS"));
        assert!(topic_matches("$SYS/+", "$SYS/x"));
        assert!(topic_matches("$SYS/x", "$SYS/x"));
        assert!(!topic_matches("$SYS/#", "SYS/x"));
        // Only the first level counts: `$` further down is an ordinary character.
        assert!(topic_matches("a/+", "a/$x"));
        assert!(topic_matches("#", "a/$SYS"));
        assert!(topic_matches("+", "x$"));
    }

    pub(super) fn id(key: u32) -> ConnId {
        ConnId { key, gen: 1 }
    }

    #[test]
    fn subscribers_get_a_topic_once() {
        let mut t = Topics::default();
        assert!(t.subscribe(id(1), "s/temp"));
        assert!(!t.subscribe(id(1), "s/temp"));
        t.subscribe(id(1), "s/#");
        t.subscribe(id(2), "s/+");
        t.subscribe(id(3), "other");
        let mut out = Vec::new();
        t.matching("s/temp", &mut out);
        out.sort();
        assert_eq!(out, vec![id(1), id(2)]);
        t.remove_conn(id(1));
        out.clear();
        t.matching("s/temp", &mut out);
        assert_eq!(out, vec![id(2)]);
        assert!(t.unsubscribe(id(2), "s/+"));
        out.clear();
        t.matching("s/temp", &mut out);
        assert!(out.is_empty());
        assert!(t.wild.is_empty(), "{:?}", t.wild);
        assert_eq!(t.count(id(3)), 1);
        assert_eq!(t.count(id(1)), 0);
    }

    /// The subscribers of `pattern`, from whichever table holds it.
    fn list<'a>(t: &'a Topics, pattern: &str) -> &'a [ConnId] {
        let node = if is_wild(pattern) {
            pattern
                .split('/')
                .try_fold(&t.wild, |node, level| node.child(level))
                .map(|node| &node.subs)
        } else {
            t.subs.get(pattern)
        };
        node.map_or(&[], Vec::as_slice)
    }

    /// Subscriptions in a tree, and whether every node of it holds something.
    fn tree_count(node: &Tree, root: bool) -> usize {
        assert!(root || !node.is_empty(), "an empty node is pruned");
        let under = node.next.as_ref().map_or(0, |next| {
            assert!(!next.is_empty(), "an empty map is dropped");
            next.values().map(|child| tree_count(child, false)).sum()
        });
        node.subs.len() + under
    }

    /// Every subscription is where its connection's record says, and nowhere else.
    pub(super) fn assert_places(t: &Topics) {
        let mut held = 0;
        for (key, h) in t.by_conn.iter().enumerate() {
            for sub in &h.patterns {
                let id = ConnId {
                    key: key as u32,
                    gen: h.gen,
                };
                let subs = list(t, &sub.pattern);
                assert_eq!(
                    subs.get(sub.at as usize),
                    Some(&id),
                    "{id} on {}",
                    sub.pattern
                );
                held += 1;
            }
        }
        let listed = t.subs.values().map(Vec::len).sum::<usize>() + tree_count(&t.wild, true);
        assert_eq!(held, listed);
    }

    #[test]
    fn departures_in_any_order_keep_every_place() {
        // 2,000 subscribers of one topic and of one wildcard pattern; every other one also on
        // a topic of its own. They leave from the back, the front and the middle, by close
        // and by unsubscribe, and new ones take their keys.
        let mut t = Topics::default();
        let n = 2000u32;
        for key in 0..n {
            let id = id(key);
            assert!(t.subscribe(id, "all"));
            assert!(t.subscribe(id, "dev/+/temp"));
            if key % 2 == 0 {
                assert!(t.subscribe(id, &format!("own/{key}")));
            }
        }
        assert_places(&t);
        let order: Vec<u32> = (0..n / 4)
            .rev()
            .chain(n / 2..n)
            .chain((n / 4..n / 2).filter(|k| k % 3 != 0))
            .collect();
        for (i, &key) in order.iter().enumerate() {
            if i % 2 == 0 {
                t.remove_conn(id(key));
            } else {
                assert!(t.unsubscribe(id(key), "all"));
                assert!(!t.unsubscribe(id(key), "all"));
                t.remove_conn(id(key));
            }
            if i % 100 == 0 {
                assert_places(&t);
            }
        }
        assert_places(&t);
        let left: Vec<ConnId> = (n / 4..n / 2).filter(|k| k % 3 == 0).map(id).collect();
        for topic in ["all", "dev/x/temp"] {
            let mut out = Vec::new();
            t.matching(topic, &mut out);
            out.sort();
            assert_eq!(out, left, "{topic}");
        }
        // New owners of the freed keys.
        for key in 0..n / 4 {
            assert!(t.subscribe(ConnId { key, gen: 2 }, "all"));
        }
        assert_places(&t);
        let mut out = Vec::new();
        t.matching("all", &mut out);
        assert_eq!(out.len(), left.len() + (n / 4) as usize);
        for id in out.clone() {
            t.remove_conn(id);
        }
        assert_places(&t);
        assert!(t.subs.is_empty() || t.subs.keys().all(|p| p.starts_with("own/")));
        assert!(t.wild.is_empty(), "{:?}", t.wild);
    }

    #[test]
    fn the_tables_entries_are_the_sizes_the_readme_gives() {
        assert_eq!(
            std::mem::size_of::<Held>(),
            32,
            "the README and Config say so"
        );
        // A subscription's own record: its pattern and its place (with the subscriber's
        // `ConnId` in the pattern's list, the 32 B the README gives a shared pattern).
        assert_eq!(
            std::mem::size_of::<Sub>() + std::mem::size_of::<ConnId>(),
            32
        );
    }

    #[test]
    fn a_reused_key_holds_only_its_new_owners_patterns() {
        let mut t = Topics::default();
        let old = ConnId { key: 5, gen: 1 };
        let new = ConnId { key: 5, gen: 2 };
        t.subscribe(old, "a");
        t.subscribe(old, "b/#");
        t.remove_conn(old);
        assert_eq!(t.count(old), 0);
        t.subscribe(new, "c");
        assert_eq!((t.count(old), t.count(new)), (0, 1));
        // The former owner's late cleanup touches nothing of the new one's.
        t.remove_conn(old);
        assert!(!t.unsubscribe(old, "c"));
        let mut out = Vec::new();
        t.matching("c", &mut out);
        assert_eq!(out, vec![new]);
        assert!(t.wild.is_empty(), "{:?}", t.wild);
    }

    #[test]
    fn churn_keeps_the_table_of_patterns_as_long_as_the_keys() {
        // 1,000 connections at a time, each replaced 20 times (its key reused by a new
        // generation), three patterns each, one swapped now and then.
        let mut t = Topics::default();
        for gen in 1..=20u32 {
            for key in 0..1000u32 {
                let id = ConnId { key, gen };
                if gen > 1 {
                    t.remove_conn(ConnId { key, gen: gen - 1 });
                }
                for k in 0..3 {
                    t.subscribe(id, &format!("soak/{}", (key + k + gen) % 100));
                }
                t.unsubscribe(id, &format!("soak/{}", (key + gen) % 100));
                t.subscribe(id, &format!("soak/{}", (key + 7 * gen) % 100));
            }
        }
        assert_eq!(t.by_conn.len(), 1000);
        assert!(t.by_conn.capacity() <= 1024, "{}", t.by_conn.capacity());
        assert_places(&t);
    }

    #[test]
    fn dollar_topics_reach_only_the_patterns_that_name_them() {
        let mut t = Topics::default();
        t.subscribe(id(1), "#");
        t.subscribe(id(2), "+/version");
        t.subscribe(id(3), "$SYS/#");
        t.subscribe(id(4), "$SYS/version");
        t.subscribe(id(5), "$SYS/+");
        let mut out = Vec::new();
        t.matching("$SYS/version", &mut out);
        out.sort();
        assert_eq!(out, vec![id(3), id(4), id(5)]);
        out.clear();
        t.matching("app/version", &mut out);
        out.sort();
        assert_eq!(out, vec![id(1), id(2)]);
    }
}

#[cfg(test)]
mod properties {
    use proptest::collection::vec;
    use proptest::prelude::*;
    use proptest::sample::select;
    use proptest::test_runner::RngSeed;

    use super::tests::{assert_places, id};
    use super::*;

    /// Levels of generated patterns and topics: names, a `$` name, an empty level, both
    /// wildcards, and a level that only looks like one.
    const LEVELS: [&str; 7] = ["a", "b", "$s", "", "+", "#", "a+"];

    fn text() -> impl Strategy<Value = String> {
        vec(select(&LEVELS[..]), 1..=4).prop_map(|levels| levels.join("/"))
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: 500,
            rng_seed: RngSeed::Fixed(0x746f_7069_6373),
            ..ProptestConfig::default()
        })]

        /// After any run of subscribes, unsubscribes and closes by a few connections, every
        /// topic reaches exactly the connections holding a pattern that `topic_matches`,
        /// each once, and every subscription is where its record says.
        #[test]
        fn the_table_reaches_whom_topic_matches_says(
            steps in vec((0u32..6, text(), 0u8..4), 0..40),
            topics in vec(text(), 1..8),
        ) {
            let mut t = Topics::default();
            let mut held: Vec<(u32, String)> = Vec::new();
            for (key, pattern, op) in steps {
                let entry = (key, pattern.clone());
                let had = held.contains(&entry);
                match op {
                    0 | 1 => {
                        prop_assert_eq!(t.subscribe(id(key), &pattern), !had);
                        if !had {
                            held.push(entry);
                        }
                    }
                    2 => {
                        prop_assert_eq!(t.unsubscribe(id(key), &pattern), had);
                        held.retain(|e| *e != entry);
                    }
                    _ => {
                        t.remove_conn(id(key));
                        held.retain(|(k, _)| *k != key);
                    }
                }
            }
            assert_places(&t);
            for topic in topics.iter().chain(held.iter().map(|(_, p)| p)) {
                let mut got = Vec::new();
                t.matching(topic, &mut got);
                got.sort_unstable();
                let mut want: Vec<ConnId> = held
                    .iter()
                    .filter(|(_, p)| topic_matches(p, topic))
                    .map(|&(k, _)| id(k))
                    .collect();
                want.sort_unstable();
                want.dedup();
                prop_assert_eq!(got, want, "topic {:?}", topic);
            }
        }
    }
}

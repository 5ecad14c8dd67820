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

/// Subscriptions: pattern → subscribers, and the reverse for cleanup when a connection ends.
#[derive(Debug, Default)]
pub(crate) struct Topics {
    subs: HashMap<Box<str>, Vec<ConnId>>,
    wild: Vec<Box<str>>,
    /// Each connection's patterns, by slab key. A table by key rather than a hash map: under
    /// churn (connections replaced all the time) a hash map's deleted entries pile up until
    /// it rehashes, and with half its capacity in use it doubles instead (a soak of 1,000
    /// connections took 136 KiB more that way after four minutes); this one is as long as
    /// the highest key that ever subscribed, and never changes shape.
    by_conn: Vec<Held>,
}

/// The patterns of the connection that holds a key now (`gen`), or of none (empty).
#[derive(Debug, Default)]
struct Held {
    gen: u32,
    patterns: Vec<Box<str>>,
}

impl Topics {
    /// Subscribes `id` to `pattern`; false if it already was.
    pub(crate) fn subscribe(&mut self, id: ConnId, pattern: &str) -> bool {
        let subs = self.subs.entry(pattern.into()).or_default();
        if subs.contains(&id) {
            return false;
        }
        if subs.is_empty() && is_wild(pattern) {
            self.wild.push(pattern.into());
        }
        subs.push(id);
        let key = id.key as usize;
        if self.by_conn.len() <= key {
            self.by_conn.resize_with(key + 1, Held::default);
        }
        if let Some(held) = self.by_conn.get_mut(key) {
            if held.gen != id.gen {
                // A former owner of the key: its patterns went with `remove_conn`.
                held.gen = id.gen;
                held.patterns.clear();
            }
            held.patterns.push(pattern.into());
        }
        true
    }

    /// The patterns of `id`, if it holds any.
    fn held_mut(&mut self, id: ConnId) -> Option<&mut Vec<Box<str>>> {
        self.by_conn
            .get_mut(id.key as usize)
            .filter(|held| held.gen == id.gen)
            .map(|held| &mut held.patterns)
    }

    /// Unsubscribes `id` from `pattern`; false if it was not subscribed.
    pub(crate) fn unsubscribe(&mut self, id: ConnId, pattern: &str) -> bool {
        let removed = self.remove_sub(id, pattern);
        if let Some(list) = self.held_mut(id) {
            list.retain(|p| &**p != pattern);
            if list.is_empty() {
                *list = Vec::new(); // gives its memory back
            }
        }
        removed
    }

    fn remove_sub(&mut self, id: ConnId, pattern: &str) -> bool {
        let Some(subs) = self.subs.get_mut(pattern) else {
            return false;
        };
        let Some(i) = subs.iter().position(|&s| s == id) else {
            return false;
        };
        subs.swap_remove(i);
        if subs.is_empty() {
            self.subs.remove(pattern);
            self.wild.retain(|p| &**p != pattern);
        }
        true
    }

    /// Ends every subscription of a connection.
    pub(crate) fn remove_conn(&mut self, id: ConnId) {
        if let Some(list) = self.held_mut(id) {
            let patterns = std::mem::take(list);
            for p in patterns.iter() {
                self.remove_sub(id, p);
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
        if let Some(subs) = self.subs.get(topic) {
            out.extend_from_slice(subs);
        }
        let mut wild_hit = false;
        for pattern in &self.wild {
            if topic_matches(pattern, topic) {
                if let Some(subs) = self.subs.get(pattern) {
                    out.extend_from_slice(subs);
                    wild_hit = true;
                }
            }
        }
        if wild_hit {
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

    fn id(key: u32) -> ConnId {
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
        assert!(t.wild.is_empty());
        assert_eq!(t.count(id(3)), 1);
        assert_eq!(t.count(id(1)), 0);
    }

    #[test]
    fn a_slot_of_the_table_of_patterns_is_32_bytes() {
        assert_eq!(
            std::mem::size_of::<Held>(),
            32,
            "the README and Config say so"
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
        assert!(t.wild.is_empty());
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
        let held: usize = (0..1000).map(|key| t.count(ConnId { key, gen: 20 })).sum();
        let listed: usize = t.subs.values().map(Vec::len).sum();
        assert_eq!(held, listed);
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

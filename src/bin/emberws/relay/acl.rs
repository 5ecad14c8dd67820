//! Who may publish and subscribe where: a client's topic patterns, compiled once and shared
//! by its connections.
//!
//! A rule is an MQTT pattern (`+` one level, `#` the rest) in which `{name}` stands for the
//! client's own name. A publish is allowed when a publish rule matches its topic. A
//! subscription is granted as its overlap with the subscribe rules: `#` under the rule
//! `devices/alice/#` subscribes `devices/alice/#`, so the topic table delivers exactly what
//! the rules allow, retained messages included, and the hot path checks nothing per message.
//!
//! MQTT's `$` rule holds here as in [`topic_matches`]: a first-level wildcard does not reach
//! topics that start with `$`, so the rule `#` grants nothing under `$SYS/`, and only a rule
//! that names `$SYS` (`$SYS/#`) lets a client read the relay's own figures.

use emberws::topic_matches;

/// A client name: 1 to 64 of `A-Z a-z 0-9 - _ .`, so that `{name}` in a pattern always
/// stands for exactly one topic level.
pub fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Why a pattern is not a valid topic filter.
pub fn check_pattern(p: &str) -> Result<(), &'static str> {
    if p.is_empty() || p.len() > super::MAX_TOPIC_LEN {
        return Err("topic must be 1 to 256 bytes");
    }
    let levels = p.split('/').count();
    for (i, level) in p.split('/').enumerate() {
        let wild = level == "+" || level == "#";
        if !wild && (level.contains('+') || level.contains('#')) {
            return Err("+ and # must stand alone in a topic level");
        }
        if level == "#" && i + 1 != levels {
            return Err("# must be the last topic level");
        }
    }
    Ok(())
}

/// The compiled rules of one client (or of anonymous clients): patterns with `{name}`
/// replaced.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rules {
    publish: Vec<Box<str>>,
    subscribe: Vec<Box<str>>,
}

impl Rules {
    /// Compiles the patterns of client `name` (`None` for anonymous, whose rules cannot use
    /// `{name}`).
    pub fn compile(
        name: Option<&str>,
        publish: &[String],
        subscribe: &[String],
    ) -> Result<Rules, String> {
        let one = |p: &String| -> Result<Box<str>, String> {
            let compiled = match name {
                Some(name) => p.replace("{name}", name),
                None if p.contains("{name}") => {
                    return Err(format!("'{p}': {{name}} needs a named client"));
                }
                None => p.clone(),
            };
            check_pattern(&compiled).map_err(|e| format!("'{p}': {e}"))?;
            Ok(compiled.into())
        };
        Ok(Rules {
            publish: publish.iter().map(one).collect::<Result<_, _>>()?,
            subscribe: subscribe.iter().map(one).collect::<Result<_, _>>()?,
        })
    }

    /// The default rules of anonymous clients: publish anywhere, read everything, the
    /// relay's `$SYS/` figures included (`#` alone does not reach them).
    pub fn open() -> Rules {
        Rules {
            publish: vec!["#".into()],
            subscribe: vec!["#".into(), "$SYS/#".into()],
        }
    }

    /// Whether a publish to `topic` is allowed.
    pub fn may_publish(&self, topic: &str) -> bool {
        self.publish.iter().any(|p| topic_matches(p, topic))
    }

    /// Whether a message on `topic` may reach this client (retained messages).
    pub fn may_read(&self, topic: &str) -> bool {
        self.subscribe.iter().any(|p| topic_matches(p, topic))
    }

    /// The patterns that subscribing `pattern` stands for under these rules: its overlap with
    /// each subscribe rule, without the ones another covers. Empty: not allowed at all.
    pub fn grant(&self, pattern: &str) -> Vec<String> {
        let mut granted: Vec<String> = Vec::new();
        for rule in &self.subscribe {
            let Some(overlap) = intersect(pattern, rule) else {
                continue;
            };
            if granted.iter().any(|g| covers(g, &overlap)) {
                continue;
            }
            granted.retain(|g| !covers(&overlap, g));
            granted.push(overlap);
        }
        granted
    }
}

/// Whether `filter`'s first level is a wildcard, which does not reach `$` topics.
fn wild_first(filter: &str) -> bool {
    matches!(filter.split('/').next(), Some("+" | "#"))
}

/// Whether a filter's first level names a `$` topic (`$SYS/#`): only such filters reach them.
fn dollar_first(filter: &str) -> bool {
    filter.starts_with('$')
}

/// The filter matching exactly the topics both `a` and `b` match, if any: two MQTT filters
/// overlap in a single filter, level by level. A first-level wildcard meets no `$` topic,
/// so `#` and `$SYS/#` do not overlap.
pub fn intersect(a: &str, b: &str) -> Option<String> {
    if (wild_first(a) && dollar_first(b)) || (wild_first(b) && dollar_first(a)) {
        return None;
    }
    let (mut x, mut y) = (a.split('/'), b.split('/'));
    let mut out: Vec<&str> = Vec::new();
    loop {
        match (x.next(), y.next()) {
            (Some("#"), _) => {
                // `#` also matches the level above it: `a/#` and `a` overlap in `a`.
                let rest = levels_from(b, out.len());
                out.extend(rest);
                break;
            }
            (_, Some("#")) => {
                let rest = levels_from(a, out.len());
                out.extend(rest);
                break;
            }
            (Some(p), Some(q)) => match (p, q) {
                ("+", level) | (level, "+") => out.push(level),
                (p, q) if p == q => out.push(p),
                _ => return None,
            },
            (None, None) => break,
            _ => return None,
        }
    }
    (!out.is_empty()).then(|| out.join("/"))
}

/// The levels of `filter` from level `from` on.
fn levels_from(filter: &str, from: usize) -> Vec<&str> {
    filter.split('/').skip(from).collect()
}

/// Whether every topic `narrow` matches, `wide` matches too. A first-level wildcard does
/// not cover a filter of `$` topics: `#` does not cover `$SYS/#`.
pub fn covers(wide: &str, narrow: &str) -> bool {
    if wild_first(wide) && dollar_first(narrow) {
        return false;
    }
    let (mut w, mut n) = (wide.split('/'), narrow.split('/'));
    loop {
        match (w.next(), n.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(level)) if level != "#" => {}
            (Some(p), Some(q)) if p == q => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(name: &str, publish: &[&str], subscribe: &[&str]) -> Rules {
        let own = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        Rules::compile(Some(name), &own(publish), &own(subscribe)).unwrap()
    }

    #[test]
    fn names_are_one_safe_level() {
        assert!(valid_name("sensor-7.kitchen_A"));
        for bad in ["", "a/b", "a+", "#", "a b", "é", &"x".repeat(65)] {
            assert!(!valid_name(bad), "{bad}");
        }
    }

    #[test]
    fn publish_rules_exact_plus_hash_and_name() {
        let r = rules(
            "alice",
            &["devices/{name}/#", "public/+/temp", "hello"],
            &[],
        );
        assert!(r.may_publish("devices/alice/temp"));
        assert!(r.may_publish("devices/alice"));
        assert!(!r.may_publish("devices/bob/temp"));
        assert!(r.may_publish("public/kitchen/temp"));
        assert!(!r.may_publish("public/kitchen/hum"));
        assert!(!r.may_publish("public/a/b/temp"));
        assert!(r.may_publish("hello"));
        assert!(!r.may_publish("hello/x"));
        assert!(!rules("a", &[], &[]).may_publish("x"));
    }

    #[test]
    fn overlaps_of_two_filters() {
        let cases = [
            ("#", "devices/alice/#", Some("devices/alice/#")),
            ("devices/#", "devices/+/temp", Some("devices/+/temp")),
            ("+/x", "a/+", Some("a/x")),
            ("a/#", "a", Some("a")),
            ("a", "a/#", Some("a")),
            ("a/b", "a/c", None),
            ("a/+", "a/b/c", None),
            ("a/+/c", "+/b/#", Some("a/b/c")),
            ("#", "#", Some("#")),
            ("+", "#", Some("+")),
            ("a/b", "a/b", Some("a/b")),
            ("a", "a/b", None),
            ("#", "$SYS/#", None),
            ("+/x", "$SYS/+", None),
            ("+", "$SYS", None),
            ("$SYS/#", "$SYS/+", Some("$SYS/+")),
            ("$SYS/#", "+/+/+", None),
            ("a/#", "a/$x", Some("a/$x")),
            ("#", "a/$x/#", Some("a/$x/#")),
        ];
        for (a, b, want) in cases {
            assert_eq!(intersect(a, b).as_deref(), want, "{a} ∩ {b}");
            assert_eq!(intersect(b, a).as_deref(), want, "{b} ∩ {a}");
        }
    }

    #[test]
    fn an_overlap_matches_exactly_the_topics_both_match() {
        let filters = [
            "#", "a/#", "a/+", "+/b", "a/b", "+/+/c", "a/+/#", "+", "b/#", "$SYS/#", "$SYS/+",
            "$SYS/b", "$x", "+/$x", "a/$x/#",
        ];
        let topics = [
            "a", "b", "a/b", "a/c", "b/b", "a/b/c", "x/y/c", "a/b/c/d", "", "$SYS", "$SYS/b",
            "$SYS/b/c", "$x", "a/$x", "b/$x", "a/$x/y",
        ];
        for a in filters {
            for b in filters {
                let both = intersect(a, b);
                for t in topics {
                    let want = topic_matches(a, t) && topic_matches(b, t);
                    let got = both.as_deref().is_some_and(|f| topic_matches(f, t));
                    assert_eq!(got, want, "{a} ∩ {b} on '{t}' (overlap {both:?})");
                }
            }
        }
    }

    #[test]
    fn covering_agrees_with_matching() {
        let filters = [
            "#", "a/#", "a/+", "+/b", "a/b", "+", "+/#", "$SYS/#", "$SYS/+", "$SYS/b", "$x", "a/$x",
        ];
        let topics = [
            "a", "b", "a/b", "a/c", "b/b", "a/b/c", "", "$SYS", "$SYS/b", "$SYS/b/c", "$x", "a/$x",
        ];
        for wide in filters {
            for narrow in filters {
                if covers(wide, narrow) {
                    for t in topics {
                        assert!(
                            !topic_matches(narrow, t) || topic_matches(wide, t),
                            "{wide} covers {narrow}, yet only {narrow} matches '{t}'"
                        );
                    }
                }
            }
        }
        assert!(!covers("#", "$SYS/#"));
        assert!(!covers("+/b", "$SYS/b"));
        assert!(covers("$SYS/#", "$SYS/+"));
        assert!(covers("#", "a/$x"));
    }

    #[test]
    fn covering() {
        assert!(covers("#", "a/+/b"));
        assert!(covers("a/+", "a/b"));
        assert!(!covers("a/b", "a/+"));
        assert!(!covers("a/+", "a/#"));
        assert!(covers("a/#", "a/+/#"));
        assert!(!covers("a/b", "a/b/c"));
    }

    #[test]
    fn a_subscription_is_granted_as_its_overlap_with_the_rules() {
        let r = rules("alice", &[], &["devices/{name}/#", "public/#", "public/x"]);
        assert_eq!(r.grant("#"), ["devices/alice/#", "public/#"]);
        assert_eq!(r.grant("public/x/y"), ["public/x/y"]);
        assert_eq!(r.grant("devices/+/temp"), ["devices/alice/temp"]);
        assert!(r.grant("devices/bob/#").is_empty());
        assert!(r.grant("private").is_empty());
        assert!(r.may_read("public/a"));
        assert!(!r.may_read("devices/bob/t"));
    }

    #[test]
    fn the_rule_hash_grants_no_dollar_topic_and_a_rule_naming_sys_does() {
        let everything = rules("a", &["#"], &["#"]);
        assert!(everything.grant("$SYS/#").is_empty());
        assert!(everything.grant("$SYS/version").is_empty());
        assert!(everything
            .grant("+/version")
            .contains(&"+/version".to_owned()));
        assert!(!everything.may_read("$SYS/version"));
        assert!(!everything.may_publish("$SYS/x"));
        let sys = rules("a", &[], &["$SYS/#"]);
        assert_eq!(sys.grant("$SYS/#"), ["$SYS/#"]);
        assert_eq!(sys.grant("$SYS/+"), ["$SYS/+"]);
        assert!(sys.grant("#").is_empty(), "# does not name $SYS");
        assert!(sys.may_read("$SYS/rss"));
        // Both rules: `#` gives the rest, `$SYS/#` the figures; neither covers the other.
        let both = rules("a", &[], &["#", "$SYS/#"]);
        assert_eq!(both.grant("#"), ["#"]);
        assert_eq!(both.grant("$SYS/#"), ["$SYS/#"]);
        assert_eq!(
            Rules::open().grant("$SYS/connections"),
            ["$SYS/connections"]
        );
    }

    #[test]
    fn rules_are_checked_when_compiled() {
        let own = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert!(Rules::compile(Some("a"), &own(&["a/#/b"]), &[]).is_err());
        assert!(Rules::compile(Some("a"), &[], &own(&["x+"])).is_err());
        assert!(Rules::compile(None, &own(&["d/{name}"]), &[]).is_err());
        assert_eq!(
            Rules::compile(None, &own(&["#"]), &own(&["#", "$SYS/#"])).unwrap(),
            Rules::open()
        );
    }
}

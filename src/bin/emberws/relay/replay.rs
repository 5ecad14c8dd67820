//! Paced replays: what a subscription gets before (or beside) its live messages, sent as the
//! subscriber's socket takes it instead of all at once.
//!
//! Two kinds, both held as a small cursor in the connection's state, never as a list of
//! frames:
//! - **Catching up** (`subscribe` with `since`): the messages history holds after `since`
//!   that match the pattern and the client may read, in id order. The pattern is subscribed
//!   in the topic table only once the cursor has reached the newest message: what is
//!   published meanwhile enters history and the cursor reaches it, so a live message never
//!   overtakes a replayed one. Several such subscriptions share one cursor.
//! - **Retained values** (a plain `subscribe`, and values a reload makes readable): the
//!   retained store walked in topic order from the last topic sent. The subscription is live
//!   already, so a topic published since the replay began is passed over: its subscriber got
//!   that newer message.
//!
//! To an event stream each replayed message goes as an event with its id ([`Ctx::send_event`]),
//! paced by the size of the event.
//!
//! Pacing: a replay sends while the connection's queue is at most `drain_low_water` and the
//! next frame fits within `max_backpressure` behind it, and at most
//! [`budget`] bytes per call; then it waits for `on_drain` (the low-water notice, or
//! [`Ctx::notify_drained`] where that notice cannot come). A prompt reader so never meets
//! the slow-consumer policy, and the queue keeps room for live messages. If history drops a
//! message the replay had still to send (the reader is slower than the relay forgets), the
//! connection is closed with 1008 "replay overrun": it may come back with `since` and be told
//! `gap`.

use std::collections::VecDeque;
use std::ops::Bound;
use std::sync::Arc;

use emberws::proto::sse::{self, EventId};
use emberws::{CloseCode, Config, Ctx, Kind, Message, SendStatus};

use super::clients::Client;
use super::events::Opening;
use super::{id_in, matches, Relay, Session};

/// A frame header's bytes at most.
const FRAME_HEAD: usize = 14;

/// What a connection is being replayed; boxed in its [`Session`], only while there is any.
#[derive(Debug, Default)]
pub struct Replay {
    catchup: Option<Catchup>,
    retained: VecDeque<RetainedJob>,
    /// An event stream's request, from its acceptance to `on_open`, which subscribes it.
    pub(super) opening: Option<Opening>,
}

/// Subscriptions with `since`, waiting for their cursor to reach the newest message.
#[derive(Debug)]
struct Catchup {
    /// Every message up to this `seq` was sent or passed over.
    cursor: u64,
    wants: Vec<Want>,
    /// `History::drops` when last looked.
    drops: u64,
}

#[derive(Debug)]
struct Want {
    pattern: Box<str>,
    /// Messages up to this `seq` are not for this pattern (it came with this `since`, or it
    /// joined when the shared cursor was here already).
    since: u64,
    /// The ack said `gap:false`: a message history drops before the cursor reaches it is an
    /// overrun.
    whole: bool,
}

#[derive(Debug)]
struct RetainedJob {
    /// `None`: every pattern the connection asked for (a reload).
    pattern: Option<Box<str>>,
    /// The last topic sent or passed over; empty before the first.
    after: String,
    /// The relay's `seq` when the job began: a topic published after it is passed over.
    started: u64,
    /// A reload: what the client could read before, not sent again.
    except: Option<Arc<Client>>,
}

/// What a replay sends in one call at most before it lets the socket take it: within a
/// callback, frames wait in the loop's batch, which the queue does not count.
pub fn budget(cfg: &Config) -> usize {
    cfg.drain_low_water.max(4096)
}

/// Why a replay stopped.
enum Stop {
    /// It waits for `on_drain`.
    Paused,
    /// Nothing is left of it.
    Done,
    /// The connection is not open.
    Closed,
}

impl Replay {
    /// An event stream's request, to be subscribed in `on_open`.
    pub fn opening(opening: Opening) -> Replay {
        Replay {
            opening: Some(opening),
            ..Replay::default()
        }
    }

    /// Whether `pattern` waits for its catch-up (not yet in the topic table).
    pub fn catching_up(&self, pattern: &str) -> bool {
        self.catchup
            .as_ref()
            .is_some_and(|c| c.wants.iter().any(|w| *w.pattern == *pattern))
    }

    /// Forgets whatever replays `pattern` (an unsubscribe).
    pub fn cancel(&mut self, pattern: &str) {
        if let Some(c) = &mut self.catchup {
            c.wants.retain(|w| *w.pattern != *pattern);
            if c.wants.is_empty() {
                self.catchup = None;
            }
        }
        self.retained
            .retain(|j| j.pattern.as_deref() != Some(pattern));
    }

    fn is_empty(&self) -> bool {
        self.catchup.is_none() && self.retained.is_empty() && self.opening.is_none()
    }
}

/// Whether `pattern` of `session` waits for its catch-up.
pub fn catching_up(session: &Session, pattern: &str) -> bool {
    session
        .replay
        .as_ref()
        .is_some_and(|r| r.catching_up(pattern))
}

/// The bytes a replayed message takes in the connection's queue at most: its frame and
/// header on a WebSocket, its event (the `id:` line and a `data:` line per line of the
/// frame) on an event stream.
fn cost(frame: &str, stream: bool) -> usize {
    if stream {
        sse::encoded_len(EventId::new(id_in(frame)), frame)
    } else {
        frame.len() + FRAME_HEAD
    }
}

/// Sends a replayed message: the frame to a WebSocket, an event with the message's id to an
/// event stream.
fn send_one(ctx: &mut Ctx<'_>, frame: &str, stream: bool) -> SendStatus {
    if stream {
        ctx.send_event(id_in(frame), Message::Text(frame))
    } else {
        ctx.send(Message::Text(frame))
    }
}

/// Whether the next message, `len` bytes in the queue ([`cost`]), may go now, with `sent`
/// bytes sent in this call; if not, `on_drain` is arranged.
///
/// What this call sent may still wait in the loop's batch, which the queue does not count
/// yet: it is counted as queued, so that a frame never has to queue behind more than
/// `max_backpressure` (a large one waits for an empty queue and a fresh call instead).
fn room(ctx: &mut Ctx<'_>, len: usize, sent: usize) -> bool {
    let cfg = ctx.config();
    let (low, most, budget) = (cfg.drain_low_water, cfg.max_backpressure, budget(cfg));
    let queued = ctx.buffered_amount();
    if queued > low {
        // The low-water notice follows.
        return false;
    }
    let ahead = queued + sent;
    if sent >= budget || (ahead > 0 && ahead + len > most) {
        ctx.notify_drained();
        return false;
    }
    true
}

/// The levels of `pattern` before its first wildcard level, without the `/` after them:
/// every topic the pattern matches begins with them (`dev/7/#` → `dev/7`, `+/x` → ``).
fn literal_prefix(pattern: &str) -> &str {
    let mut end = 0usize;
    for level in pattern.split('/') {
        if level == "+" || level == "#" {
            return pattern.get(..end.saturating_sub(1)).unwrap_or_default();
        }
        end += level.len() + 1;
    }
    pattern
}

impl Relay {
    /// Begins (or joins) the catch-up of `pattern` from `since`; `whole` if the ack said no
    /// gap. Call [`Relay::pump`] next.
    pub(super) fn catch_up(&self, session: &mut Session, pattern: &str, since: u64, whole: bool) {
        let replay = session.replay.get_or_insert_with(Box::default);
        let want = Want {
            pattern: pattern.into(),
            since,
            whole,
        };
        match &mut replay.catchup {
            None => {
                replay.catchup = Some(Catchup {
                    cursor: since,
                    wants: vec![want],
                    drops: self.history.drops(),
                })
            }
            Some(c) => {
                c.wants.retain(|w| *w.pattern != *pattern);
                if since < c.cursor {
                    // The cursor goes back for the newcomer; the others had everything up
                    // to where it was.
                    for w in &mut c.wants {
                        w.since = w.since.max(c.cursor);
                    }
                    c.cursor = since;
                }
                c.wants.push(want);
            }
        }
    }

    /// Queues the retained values matching `pattern` (`None`: any pattern the connection
    /// asked for) and readable, except those `except` could read. Call [`Relay::pump`] next.
    pub(super) fn replay_retained(
        &self,
        session: &mut Session,
        pattern: Option<&str>,
        except: Option<Arc<Client>>,
    ) {
        let replay = session.replay.get_or_insert_with(Box::default);
        // Asked again while the same replay still goes (a pattern subscribed again, or another
        // reload: the one waiting sends what is readable then, against the older rules): that
        // one does it, and a client cannot pile them up.
        if replay
            .retained
            .iter()
            .any(|j| j.pattern.as_deref() == pattern)
        {
            return;
        }
        replay.retained.push_back(RetainedJob {
            pattern: pattern.map(Into::into),
            after: String::new(),
            started: self.seq,
            except,
        });
    }

    /// Sends what the connection's replays allow now (see the module's pacing rules).
    pub(super) fn pump(&mut self, ctx: &mut Ctx<'_>, session: &mut Session) {
        let Some(replay) = session.replay.as_deref_mut() else {
            return;
        };
        let stream = ctx.kind() == Kind::EventStream;
        let Replay {
            catchup, retained, ..
        } = replay;
        let (who, asked) = (&*session.who, &session.asked[..]);
        // Patterns catching up get no retained values: history brings them what they missed.
        let live = |p: &str| {
            !catchup
                .as_ref()
                .is_some_and(|c| c.wants.iter().any(|w| *w.pattern == *p))
        };
        let mut sent = 0;
        let mut stop = Stop::Done;
        while let Some(job) = retained.front_mut() {
            stop = self.send_retained(ctx, who, asked, &live, job, (stream, &mut sent));
            match stop {
                Stop::Done => {
                    retained.pop_front();
                }
                Stop::Paused | Stop::Closed => break,
            }
        }
        if matches!(stop, Stop::Done) {
            if let Some(c) = catchup {
                stop = self.send_history(ctx, who, c, (stream, &mut sent));
                if matches!(stop, Stop::Done) {
                    for w in &c.wants {
                        for g in who.rules.grant(&w.pattern) {
                            ctx.subscribe(&g);
                        }
                    }
                    *catchup = None;
                }
            }
        }
        if matches!(stop, Stop::Closed) || replay.is_empty() {
            session.replay = None;
        }
    }

    fn send_retained(
        &self,
        ctx: &mut Ctx<'_>,
        who: &Client,
        asked: &[Box<str>],
        live: &dyn Fn(&str) -> bool,
        job: &mut RetainedJob,
        (stream, sent): (bool, &mut usize),
    ) -> Stop {
        let wanted = |t: &str| match &job.pattern {
            Some(p) => matches(p, t),
            None => asked.iter().any(|p| live(p) && matches(p, t)),
        };
        let mut passed: Option<&str> = None;
        let mut stop = Stop::Done;
        // Only topics that begin with the pattern's levels before its first wildcard can
        // match, and the store is in topic order: the scan starts at them and ends past them.
        let prefix = job.pattern.as_deref().map_or("", literal_prefix);
        let from = if job.after.as_str() < prefix {
            Bound::Included(prefix)
        } else {
            Bound::Excluded(job.after.as_str())
        };
        for (topic, value) in self.retained.map.range::<str, _>((from, Bound::Unbounded)) {
            if !topic.starts_with(prefix) {
                break;
            }
            let send = wanted(topic)
                && value.touched <= job.started
                && who.rules.may_read(topic)
                && !job.except.as_ref().is_some_and(|c| c.rules.may_read(topic));
            if send {
                let len = cost(&value.frame, stream);
                if !room(ctx, len, *sent) {
                    stop = Stop::Paused;
                    break;
                }
                match send_one(ctx, &value.frame, stream) {
                    SendStatus::Closed => {
                        stop = Stop::Closed;
                        break;
                    }
                    _ => *sent += len,
                }
            }
            passed = Some(topic);
        }
        if let Some(topic) = passed {
            job.after.clear();
            job.after.push_str(topic);
        }
        stop
    }

    fn send_history(
        &mut self,
        ctx: &mut Ctx<'_>,
        who: &Client,
        c: &mut Catchup,
        (stream, sent): (bool, &mut usize),
    ) -> Stop {
        if c.drops != self.history.drops() {
            c.drops = self.history.drops();
            let cursor = c.cursor;
            let lost = c.wants.iter().any(|w| {
                w.whole
                    && self.history.gap(cursor.max(w.since), |t| {
                        matches(&w.pattern, t) && who.rules.may_read(t)
                    })
            });
            if lost {
                self.counters.closed_overrun += 1;
                ctx.close(CloseCode::POLICY, "replay overrun");
                return Stop::Closed;
            }
        }
        for m in self.history.after(c.cursor) {
            let wanted = c
                .wants
                .iter()
                .any(|w| m.seq > w.since && matches(&w.pattern, m.topic))
                && who.rules.may_read(m.topic);
            if wanted {
                let len = cost(m.frame, stream);
                if !room(ctx, len, *sent) {
                    return Stop::Paused;
                }
                if send_one(ctx, m.frame, stream) == SendStatus::Closed {
                    return Stop::Closed;
                }
                *sent += len;
            }
            c.cursor = m.seq;
        }
        Stop::Done
    }
}

#[cfg(test)]
mod tests {
    use emberws::testing::{Frame, Harness, Peer};
    use serde_json::{json, Value};

    use super::super::{id, Policy, Relay};
    use super::*;

    fn relay_with(cfg: Config, policy: Policy) -> Harness<Relay> {
        Harness::new(cfg, Relay::new(policy))
    }

    fn say(h: &mut Harness<Relay>, peer: &Peer, json: &str) {
        h.send(peer, Message::Text(json));
    }

    /// Everything the peer gets until the relay has nothing more for it, read as the socket
    /// lets it (a window set with `Harness::set_window` is one read at a time); a close
    /// frame comes back as `{"close":CODE,"reason":…}`. Checks on the way that the
    /// connection's queue stays within `max_backpressure`.
    fn drain(h: &mut Harness<Relay>, peer: &mut Peer) -> Vec<Value> {
        let most = h.server_mut().handler_mut().policy.max_frame;
        let mut all = Vec::new();
        for _ in 0..100_000 {
            let frames = h.received(peer);
            assert!(h.buffered_amount(peer) <= 64 * 1024 + most);
            let replaying = h.state(peer).is_some_and(|s| s.replay.is_some());
            if frames.is_empty() && h.buffered_amount(peer) == 0 && !replaying {
                return all;
            }
            for f in frames {
                all.push(match f {
                    Frame::Text(t) => serde_json::from_str(&t).unwrap(),
                    Frame::Close(code, reason) => json!({"close": code, "reason": reason}),
                    other => panic!("{other:?}"),
                });
            }
        }
        panic!("the relay never stopped sending");
    }

    fn seq(m: &Value) -> u64 {
        let id = m["id"].as_str().unwrap_or_else(|| panic!("no id: {m}"));
        id::parse(id).unwrap().1
    }

    fn publish(h: &mut Harness<Relay>, p: &Peer, topic: &str, data: Value, retain: bool) {
        let req = json!({"type": "publish", "topic": topic, "data": data, "retain": retain});
        say(h, p, &req.to_string());
    }

    #[test]
    fn since_replays_exactly_what_was_missed_in_order_then_live() {
        let mut h = relay_with(Config::default(), Policy::default());
        let p = h.connect("/").unwrap();
        let mut a = h.connect("/").unwrap();
        say(&mut h, &a, r#"{"type":"subscribe","topic":"t/#"}"#);
        for i in 0..100 {
            publish(&mut h, &p, &format!("t/{}", i % 3), json!(i), false);
        }
        let got = drain(&mut h, &mut a);
        assert_eq!(got.len(), 100);
        let last = got[99]["id"].as_str().unwrap().to_owned();
        let epoch = h.handler().epoch.to_string();
        assert!(last.starts_with(&epoch), "{last}");
        assert_eq!(seq(&got[99]), 100);
        h.disconnect(&a);
        for i in 100..150 {
            publish(&mut h, &p, &format!("t/{}", i % 3), json!(i), false);
        }
        publish(&mut h, &p, "other", json!("not asked"), false);
        let mut b = h.connect("/").unwrap();
        let req = json!({"type": "subscribe", "topic": "t/#", "since": last, "id": 7});
        say(&mut h, &b, &req.to_string());
        publish(&mut h, &p, "t/x", json!("live"), false);
        let got = drain(&mut h, &mut b);
        assert_eq!(got[0], json!({"type": "ack", "id": 7, "gap": false}));
        let data: Vec<Value> = got[1..].iter().map(|m| m["data"].clone()).collect();
        let mut want: Vec<Value> = (100..150).map(|i| json!(i)).collect();
        want.push(json!("live"));
        assert_eq!(data, want, "the 50 missed, in order, then the live one");
        // A since at the newest id: nothing to replay, live at once.
        let newest = got.last().unwrap()["id"].as_str().unwrap().to_owned();
        let mut c = h.connect("/").unwrap();
        let req = json!({"type": "subscribe", "topic": "t/#", "since": newest});
        say(&mut h, &c, &req.to_string());
        publish(&mut h, &p, "t/y", json!(1), false);
        let got = drain(&mut h, &mut c);
        assert_eq!(got[0], json!({"type": "ack", "gap": false}));
        assert_eq!(got[1]["data"], 1);
        assert_eq!(got.len(), 2);
    }

    #[test]
    fn gap_when_history_no_longer_reaches_back() {
        let policy = Policy {
            history_messages: 10,
            ..Policy::default()
        };
        let mut h = relay_with(Config::default(), policy);
        let p = h.connect("/").unwrap();
        let mut a = h.connect("/").unwrap();
        say(&mut h, &a, r#"{"type":"subscribe","topic":"s"}"#);
        publish(&mut h, &p, "s", json!(0), false);
        let since = drain(&mut h, &mut a)[0]["id"].as_str().unwrap().to_owned();
        for i in 1..=30 {
            publish(&mut h, &p, "s", json!(i), false);
            publish(&mut h, &p, "quiet", json!(i), false);
        }
        let mut b = h.connect("/").unwrap();
        let req = json!({"type": "subscribe", "topic": "s", "since": since});
        say(&mut h, &b, &req.to_string());
        let got = drain(&mut h, &mut b);
        assert_eq!(got[0], json!({"type": "ack", "gap": true}));
        let data: Vec<Value> = got[1..].iter().map(|m| m["data"].clone()).collect();
        let want: Vec<Value> = (21..=30).map(|i| json!(i)).collect();
        assert_eq!(data, want, "what is held is replayed");
        // Another epoch: a gap, and the retained values as for a plain subscribe.
        publish(&mut h, &p, "s", json!("kept"), true);
        let mut c = h.connect("/").unwrap();
        let other = if h.handler().epoch.as_str() == "00000000" {
            "00000001-5"
        } else {
            "00000000-5"
        };
        let req = json!({"type": "subscribe", "topic": "s", "since": other, "id": "x"});
        say(&mut h, &c, &req.to_string());
        let got = drain(&mut h, &mut c);
        assert_eq!(got[0], json!({"type": "ack", "id": "x", "gap": true}));
        assert_eq!(got[1]["data"], "kept");
        assert_eq!(got.len(), 2);
        // An id this relay never gave (ahead of it) is treated as another epoch's.
        let ahead = format!("{}-999999", h.handler().epoch);
        let mut d = h.connect("/").unwrap();
        let req = json!({"type": "subscribe", "topic": "s", "since": ahead});
        say(&mut h, &d, &req.to_string());
        assert_eq!(drain(&mut h, &mut d)[0]["gap"], true);
        // A since that does not read.
        for bad in [json!("nope"), json!(5), json!("3fa2c9e1-0"), json!(["x"])] {
            let req = json!({"type": "subscribe", "topic": "s", "since": bad, "id": 1});
            say(&mut h, &d, &req.to_string());
            assert_eq!(
                drain(&mut h, &mut d),
                [json!({"type": "error", "reason": "invalid since", "id": 1})],
                "{bad}"
            );
        }
    }

    #[test]
    fn a_live_message_never_overtakes_a_replay_paced_by_a_slow_socket() {
        let mut h = relay_with(Config::default(), Policy::default());
        let p = h.connect("/").unwrap();
        let blob = "x".repeat(900);
        for i in 0..60 {
            publish(
                &mut h,
                &p,
                &format!("k/{}", i % 4),
                json!(format!("{i}{blob}")),
                false,
            );
        }
        let first = format!("{}-1", h.handler().epoch);
        let mut s = h.connect("/").unwrap();
        h.set_window(&s, 2000);
        let req = json!({"type": "subscribe", "topic": "k/#", "since": first});
        say(&mut h, &s, &req.to_string());
        // Published while the replay waits for the reader: history takes them, the cursor
        // reaches them.
        let mut got = Vec::new();
        for i in 60..80 {
            publish(
                &mut h,
                &p,
                &format!("k/{}", i % 4),
                json!(format!("{i}{blob}")),
                false,
            );
            got.extend(drain_once(&mut h, &mut s));
        }
        h.set_window(&s, usize::MAX);
        got.extend(drain(&mut h, &mut s));
        assert_eq!(got[0]["type"], "ack");
        let seqs: Vec<u64> = got[1..].iter().map(seq).collect();
        let want: Vec<u64> = (2..=80).collect();
        assert_eq!(seqs, want, "every message after since, once, in order");
        publish(&mut h, &p, "k/0", json!("live"), false);
        assert_eq!(
            drain(&mut h, &mut s)[0]["data"],
            "live",
            "subscribed at the end"
        );
    }

    /// One read of what the socket holds.
    use super::super::tests::heard as drain_once;

    #[test]
    fn a_pattern_begins_with_its_literal_levels() {
        for (pattern, prefix) in [
            ("dev/7/#", "dev/7"),
            ("dev/+/temp", "dev"),
            ("+/x", ""),
            ("#", ""),
            ("a/b", "a/b"),
            ("/+", ""),
            ("a//+", "a/"),
            ("a+/b/#", "a+/b"),
        ] {
            assert_eq!(literal_prefix(pattern), prefix, "{pattern}");
        }
        // Every topic a pattern matches begins with it.
        let levels = ["a", "b", "", "$s", "a+", "+", "#"];
        let mut texts = vec![String::new()];
        for _ in 0..3 {
            let longer: Vec<String> = texts
                .iter()
                .flat_map(|t| {
                    levels.iter().map(move |l| match t.is_empty() {
                        true => (*l).to_owned(),
                        false => format!("{t}/{l}"),
                    })
                })
                .collect();
            texts.extend(longer);
        }
        for p in &texts {
            for t in &texts {
                if matches(p, t) {
                    assert!(t.starts_with(literal_prefix(p)), "{p} matches {t}");
                }
            }
        }
    }

    #[test]
    fn a_replay_reads_only_the_topics_its_literal_levels_allow_and_misses_none() {
        // Retained values around the prefix `dev/7`, before and after it in topic order, and
        // readers whose socket takes 100 bytes at a time, so that each replay pauses and
        // resumes many times within and at the edge of its range.
        let mut h = relay_with(Config::default(), Policy::default());
        let p = h.connect("/").unwrap();
        let mut topics = vec![
            "de",
            "dev",
            "dev/6/a",
            "dev/7",
            "dev/7/a",
            "dev/7/a/b",
            "dev/70/a",
        ];
        topics.extend(["dev/7!", "dev/8/a", "dew/7/a", "x/7/a", "dev/7/b"]);
        let many: Vec<String> = (0..50).map(|i| format!("dev/7/m/{i:02}")).collect();
        topics.extend(many.iter().map(String::as_str));
        for t in &topics {
            publish(&mut h, &p, t, json!(t), true);
        }
        for pattern in [
            "dev/7/#",
            "dev/7",
            "dev/+/a",
            "dev/7/+",
            "+/7/a",
            "#",
            "dev/7/m/+",
        ] {
            let mut s = h.connect("/").unwrap();
            h.set_window(&s, 100);
            let req = json!({"type": "subscribe", "topic": pattern, "id": 1});
            say(&mut h, &s, &req.to_string());
            let got = drain(&mut h, &mut s);
            assert_eq!(got[0], json!({"type": "ack", "id": 1}), "{pattern}");
            let replayed: Vec<&str> = got[1..]
                .iter()
                .map(|m| m["topic"].as_str().unwrap())
                .collect();
            let mut want: Vec<&str> = topics
                .iter()
                .copied()
                .filter(|t| matches(pattern, t))
                .collect();
            want.sort_unstable();
            assert_eq!(
                replayed, want,
                "{pattern}: every match, in topic order, once"
            );
        }
    }

    #[test]
    fn many_retained_values_reach_a_prompt_reader_within_backpressure() {
        // The issue's case: about 870 KiB of retained values matching one wildcard, a 64 KiB
        // max_backpressure, a reader whose socket takes 16 KiB at a time.
        let cfg = Config::default().max_backpressure(64 * 1024);
        let mut h = relay_with(cfg, Policy::default());
        let p = h.connect("/").unwrap();
        let value = "v".repeat(1000);
        for i in 0..870 {
            publish(&mut h, &p, &format!("r/{i:03}"), json!(value), true);
        }
        let mut s = h.connect("/").unwrap();
        h.set_window(&s, 16 * 1024);
        say(&mut h, &s, r##"{"type":"subscribe","topic":"#","id":1}"##);
        let got = drain(&mut h, &mut s);
        assert_eq!(got[0], json!({"type": "ack", "id": 1}));
        let topics: Vec<&str> = got[1..]
            .iter()
            .map(|m| m["topic"].as_str().unwrap())
            .collect();
        let want: Vec<String> = (0..870).map(|i| format!("r/{i:03}")).collect();
        assert_eq!(topics, want, "all of them, in topic order, no close");
        assert_eq!(h.stats().slow_closes, 0);
    }

    #[test]
    fn live_messages_during_a_retained_replay_are_not_refused_and_not_undone() {
        let cfg = Config::default().max_backpressure(64 * 1024);
        let mut h = relay_with(cfg, Policy::default());
        let p = h.connect("/").unwrap();
        let value = "v".repeat(1000);
        for i in 0..300 {
            publish(&mut h, &p, &format!("r/{i:03}"), json!(value), true);
        }
        let mut s = h.connect("/").unwrap();
        h.set_window(&s, 8 * 1024);
        say(&mut h, &s, r##"{"type":"subscribe","topic":"r/#"}"##);
        let mut got = drain_once(&mut h, &mut s);
        // Mid-replay: a newer value of a topic not sent yet, and live traffic of 4 KiB.
        publish(&mut h, &p, "r/299", json!("newer"), true);
        for _ in 0..5 {
            publish(&mut h, &p, "r/000", json!("x".repeat(4000)), false);
            got.extend(drain_once(&mut h, &mut s));
        }
        h.set_window(&s, usize::MAX);
        got.extend(drain(&mut h, &mut s));
        assert!(got.iter().all(|m| m.get("close").is_none()), "not closed");
        let last: Vec<&Value> = got.iter().filter(|m| m["topic"] == "r/299").collect();
        assert_eq!(last.len(), 1, "only the newer value: {last:?}");
        assert_eq!(last[0]["data"], "newer");
        let values = got.iter().filter(|m| m["data"] == json!(value)).count();
        assert_eq!(values, 299, "every other retained value once");
        assert_eq!(h.stats().slow_closes, 0);
    }

    #[test]
    fn a_large_frame_waits_for_an_empty_queue_instead_of_tripping_backpressure() {
        let cfg = Config::default().max_backpressure(64 * 1024);
        let mut h = relay_with(cfg, Policy::default());
        let p = h.connect("/").unwrap();
        for (i, size) in [(0, 10_000), (1, 60_000), (2, 60_000), (3, 100)] {
            publish(&mut h, &p, &format!("b/{i}"), json!("y".repeat(size)), true);
        }
        let mut s = h.connect("/").unwrap();
        h.set_window(&s, 4000);
        say(&mut h, &s, r##"{"type":"subscribe","topic":"b/#"}"##);
        let got = drain(&mut h, &mut s);
        let topics: Vec<&str> = got.iter().map(|m| m["topic"].as_str().unwrap()).collect();
        assert_eq!(topics, ["b/0", "b/1", "b/2", "b/3"]);
        assert_eq!(h.stats().slow_closes, 0);
    }

    #[test]
    fn a_replay_that_history_overtakes_is_closed_with_1008() {
        let policy = Policy {
            history_messages: 8,
            ..Policy::default()
        };
        let mut h = relay_with(Config::default(), policy);
        let p = h.connect("/").unwrap();
        let blob = "z".repeat(4000);
        for _ in 0..8 {
            publish(&mut h, &p, "o", json!(blob), false);
        }
        let since = format!("{}-1", h.handler().epoch);
        let mut s = h.connect("/").unwrap();
        h.set_window(&s, 100);
        let req = json!({"type": "subscribe", "topic": "o", "since": since});
        say(&mut h, &s, &req.to_string());
        // The reader does not read; the topic moves on past what it still had to get.
        for _ in 0..8 {
            publish(&mut h, &p, "o", json!(blob), false);
        }
        h.set_window(&s, usize::MAX);
        let got = drain(&mut h, &mut s);
        assert_eq!(got[0], json!({"type": "ack", "gap": false}));
        assert_eq!(
            got.last(),
            Some(&json!({"close": 1008, "reason": "replay overrun"}))
        );
        assert_eq!(h.handler().counters.closed_overrun, 1);
    }

    #[test]
    fn a_publish_from_the_loop_is_a_message_like_any() {
        let mut h = relay_with(Config::default(), Policy::default());
        let mut s = h.connect("/").unwrap();
        say(&mut h, &s, r#"{"type":"subscribe","topic":"$SYS/#"}"#);
        say(&mut h, &s, r#"{"type":"subscribe","topic":"app/x"}"#);
        let (d, retained) = Relay::publish_from_loop(h.server_mut(), "$SYS/uptime", "12", true);
        assert_eq!(retained, Ok(()));
        assert_eq!(d.delivered(), 1);
        Relay::publish_from_loop(h.server_mut(), "app/x", r#"{"a":1}"#, false)
            .1
            .unwrap();
        let got = drain(&mut h, &mut s);
        let epoch = h.handler().epoch;
        assert_eq!(
            got,
            [
                json!({"type":"message","topic":"$SYS/uptime","data":12,"id":format!("{epoch}-1")}),
                json!({"type":"message","topic":"app/x","data":{"a":1},"id":format!("{epoch}-2")}),
            ]
        );
        // Retained like a client's; history keeps app/x and no `$` topic.
        let mut late = h.connect("/").unwrap();
        say(&mut h, &late, r#"{"type":"subscribe","topic":"$SYS/#"}"#);
        let req = json!({"type":"subscribe","topic":"app/#","since":format!("{epoch}-1")});
        say(&mut h, &late, &req.to_string());
        let got = drain(&mut h, &mut late);
        assert_eq!(got[0]["data"], 12, "the retained $SYS value");
        assert_eq!(got[1], json!({"type": "ack", "gap": false}));
        assert_eq!(got[2]["topic"], "app/x");
        assert_eq!(got.len(), 3);
        let big = format!("\"{}\"", "b".repeat(200_000));
        assert_eq!(
            Relay::publish_from_loop(h.server_mut(), "app/x", &big, false).1,
            Err("message too large")
        );
    }
}

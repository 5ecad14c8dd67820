//! `events`: the relay's event streams (`GET /events`) and its `subscribe` with `since`, beside
//! WebSocket peers, on the real server through `emberws::testing::Harness`: the query and
//! `Last-Event-ID` as a browser sends them, message ids, history, gaps, paced replays to slow
//! readers, reloads of the clients file.
//!
//! Input: [`HEADER`] bytes (anonymous access, the listener, history and retained caps, queue
//! and subscription limits), then ops, each an op byte and a line up to the next `\n`. The op
//! byte picks a slot (bits 0-2), an action (bits 3-5) and its argument (bits 6-7):
//!
//! | action | what | argument |
//! | --- | --- | --- |
//! | 0 | the slot's WebSocket sends the line (connecting first, as client `slot % 4`) | clock step first |
//! | 1 | the slot opens a stream: `TARGET[\tLAST-EVENT-ID[\tAUTHORIZATION]]`; a target not starting with `/` is a query of `/events` | clock step first |
//! | 2 | a raw request, read once: `METHOD TARGET[\tHEADER: VALUE…]` | clock step first |
//! | 3 | the slot's peer goes away | 1: a close frame first |
//! | 4 | the slot's peers (this one and those it opens next) read this many bytes at a time | 1 B, 100 B, 2000 B or all |
//! | 5 | the clients file is reloaded | bit 0: the second file (bob removed, fewer rules) |
//! | 6 | the program publishes `$SYS/xSLOT` from its loop | bit 0: retained |
//! | 7 | the clock moves on (keep-alives, lockouts) | 1 s, 5 s, 15 s or 300 s |
//!
//! In a line, byte 1 stands for the newest message id, byte 2 for the relay's epoch (`\x02-5`
//! is message 5), byte 3 for the last id the slot's connections received: what a client that
//! comes back says as `since` or `Last-Event-ID`; byte 4 for [`FILLER`] bytes `x`, so that
//! small inputs make replays long enough to be paced.
//!
//! A peer subscribed to `#` reads promptly throughout: it sees every message (no `$` topic
//! is its to read, and those the program publishes are counted), so the target knows the
//! relay's newest id and every message's frame.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use emberws::testing::{EventParser, Frame, Harness, Peer, Streamed};
use emberws::{topic_matches, Config, Message, SlowConsumer};
use serde_json::value::RawValue;

use crate::relay::acl::Rules;
use crate::relay::{id, Policy, Relay, Session};
use crate::relay_target::{load, ROOT_TOKEN, WHO};

const HEADER: usize = 2;
const SLOTS: usize = 8;
/// The bytes placeholder 4 stands for: large messages from small inputs.
const FILLER: usize = 500;
/// `Slot::who` of the client with the root token (reads `#`).
const ROOT: usize = WHO.len();
/// The answers a `GET /events` may get when it is not a stream (with 200: the stream).
const EVENTS_REFUSALS: [u16; 5] = [400, 401, 403, 429, 431];
/// The answers any other request may get.
const OTHER_ANSWERS: [u16; 8] = [200, 400, 401, 403, 404, 405, 429, 431];

/// A reply, as a stream event's data or a WebSocket frame.
#[derive(serde::Deserialize)]
struct Reply<'a> {
    #[serde(rename = "type", borrow)]
    kind: std::borrow::Cow<'a, str>,
    #[serde(default)]
    topic: Option<String>,
    #[serde(borrow, default, deserialize_with = "present")]
    data: Option<&'a RawValue>,
    #[serde(borrow, default)]
    id: Option<&'a RawValue>,
    #[serde(default)]
    gap: Option<bool>,
}

/// What the relay reads of a request, as far as ordering goes: at least as lenient as the
/// relay's own parse (a subset of its fields, of the same types).
#[derive(serde::Deserialize)]
struct Asked<'a> {
    #[serde(rename = "type", borrow)]
    kind: std::borrow::Cow<'a, str>,
    #[serde(default)]
    topic: Option<String>,
    #[serde(borrow, default)]
    since: Option<&'a RawValue>,
}

fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    serde::Deserialize::deserialize(d).map(Some)
}

/// What the relay promises about the order of a connection's messages, by how it subscribed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Order {
    /// Nothing asked yet.
    Fresh,
    /// All at once, after message `since` of this epoch (one the relay had given): what
    /// history holds after it, then live ones, so every message not of a `$` topic is newer
    /// than `since` and than the one before; no id twice.
    Since(u64),
    /// All at once without a usable `since`: retained values (each once), then live ones: no
    /// id twice.
    Plain,
    /// Asked again, or the rules grew: replays may repeat what came (README: a message
    /// matching a pattern catching up and a live one may come twice; retained values come
    /// again to a new subscription) and come in topic order, older than what came live.
    Off,
}

/// Whose reply is checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reader {
    Root,
    Slot(usize),
    /// A raw request's stream, read once: nothing is known of its client.
    Raw,
}

/// One connection and what the checks know of it.
struct Slot {
    peer: Peer,
    stream: bool,
    /// Index into [`WHO`], or [`ROOT`].
    who: usize,
    /// Patterns it asked for (a WebSocket's requests; a stream's acknowledged patterns).
    asked: Vec<String>,
    order: Order,
    /// The newest `seq` of a message not of a `$` topic, for [`Order::Since`].
    newest: u64,
    seen: HashSet<u64>,
    /// Acknowledged with `"gap"`: `Some(true)` if any said true.
    gap: Option<bool>,
    /// The clients file changed while it was open.
    reloaded: bool,
    /// The newest message when the clients file last changed: one up to it may have been
    /// queued under the rules before (the first file's, which include the second's).
    sent_before: u64,
    /// A close frame came (WebSocket), or the stream ended and was read to its end.
    ended: bool,
    /// Nothing but `retry:` may come first on a stream.
    started: bool,
}

impl Slot {
    fn new(peer: Peer, stream: bool, who: usize, order: Order) -> Slot {
        Slot {
            peer,
            stream,
            who,
            asked: Vec::new(),
            order,
            newest: 0,
            seen: HashSet::new(),
            gap: None,
            reloaded: false,
            sent_before: 0,
            ended: false,
            started: false,
        }
    }
}

/// What a client may read under the file in force (`None`: removed).
fn reads(who: usize, file: usize) -> Option<Vec<&'static str>> {
    if who == ROOT {
        return Some(vec!["#"]);
    }
    let mut r = WHO[who].reads[file]?.to_vec();
    if WHO[who].token.is_empty() {
        r.push("$SYS/#");
    }
    Some(r)
}

/// A frame as an event stream carries it: a CR or CRLF (JSON whitespace, outside strings)
/// ends a `data:` line as an LF does, and the lines come back joined with LF.
fn lines(frame: &str) -> String {
    frame.replace("\r\n", "\n").replace('\r', "\n")
}

/// The byte bounds of one connection (as the `conn` target checks them).
struct Bounds {
    held: usize,
    queue: usize,
}

/// The run: the harness, the slots, and what every message is.
struct World {
    h: Harness<Relay>,
    root: Slot,
    slots: [Option<Slot>; SLOTS],
    /// The last message id each slot's connections received, kept across reconnects.
    resume: [Option<String>; SLOTS],
    /// The bytes each slot's connections read at a time.
    windows: [usize; SLOTS],
    epoch: String,
    /// The relay's newest `seq`.
    seq: u64,
    /// Every message by `seq`: its topic and frame (one id, one message), and whether the
    /// frame came whole (on a WebSocket) rather than as an event's data.
    messages: BTreeMap<u64, (String, String, bool)>,
    file: usize,
    trusted: bool,
    bounds: Bounds,
}

fn policy_and_config(h: &[u8]) -> (Policy, Config, bool) {
    let most = [1024, 4096, 16 * 1024, 64 * 1024][usize::from(h[1] & 3)];
    let low = [0, 256, 4096, 16 * 1024][usize::from(h[1] >> 2 & 3)];
    let cfg = Config::default()
        .max_message_size(4096)
        .max_send_size(8192)
        .max_backpressure(most)
        .drain_low_water(low.min(most))
        .max_subscriptions([1, 2, 8, 64][usize::from(h[1] >> 4 & 3)])
        .slow_consumer(if h[1] & 0x40 == 0 {
            SlowConsumer::Close
        } else {
            SlowConsumer::Drop
        })
        .ping_interval(None);
    let public = h[0] & 2 != 0;
    let policy = Policy {
        clients: Some(load(false)),
        anonymous: Rules::compile(
            None,
            &["public/#".into()],
            &["public/#".into(), "$SYS/#".into()],
        )
        .expect("anonymous rules"),
        allow_anonymous: h[0] & 1 != 0,
        history_messages: [0, 1, 4, 64][usize::from(h[0] >> 2 & 3)],
        history_bytes: [600, 4096, 32 * 1024, 256 * 1024][usize::from(h[0] >> 4 & 3)],
        max_retained_bytes: [0, 500, 4096, 1 << 20][usize::from(h[0] >> 6)],
        max_frame: cfg.send_limit(),
        max_subscriptions: cfg.max_subscriptions,
        ..Policy::default()
    };
    let trusted = !public || policy.allow_anonymous;
    (policy, cfg, trusted)
}

/// The request target as sent: bytes outside visible ASCII percent-encoded (the relay
/// decodes them again), so the request head stays one line.
fn sanitize(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        if (0x21..=0x7e).contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A header value as sent: text, without line breaks.
fn header_value(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).replace(['\r', '\n'], "")
}

/// Who the relay will take a request for, as its `presented` and `identify` read it:
/// `Ok(who)`, or `Err(())` where only 401 or 429 may come.
fn expected_who(
    auth: Option<&str>,
    query: Option<&str>,
    file: usize,
    trusted: bool,
) -> Result<usize, ()> {
    let token = match auth {
        Some(value) => {
            let value = value.trim();
            let (scheme, token) = value.split_once(' ').unwrap_or((value, ""));
            Some(if scheme.eq_ignore_ascii_case("bearer") {
                token.trim()
            } else {
                ""
            })
        }
        None => query.and_then(|q| q.split('&').find_map(|p| p.strip_prefix("token="))),
    };
    match token {
        None if trusted => Ok(WHO.len() - 1),
        None => Err(()),
        Some(t) if t == ROOT_TOKEN => Ok(ROOT),
        Some(t) => WHO
            .iter()
            .position(|w| !w.token.is_empty() && w.token == t && w.reads[file].is_some())
            .ok_or(()),
    }
}

impl World {
    fn newest_id(&self) -> String {
        format!("{}-{}", self.epoch, self.seq.max(1))
    }

    /// The line with its placeholders written out.
    fn substitute(&self, line: &[u8], slot: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(line.len());
        for &b in line {
            match b {
                1 => out.extend_from_slice(self.newest_id().as_bytes()),
                2 => out.extend_from_slice(self.epoch.as_bytes()),
                3 => match &self.resume[slot] {
                    Some(id) => out.extend_from_slice(id.as_bytes()),
                    None => out.extend_from_slice(self.newest_id().as_bytes()),
                },
                4 => out.extend_from_slice(&[b'x'; FILLER]),
                _ => out.push(b),
            }
        }
        out
    }

    /// How a subscription from `since` (an id's text) is answered: from history, or not.
    fn order_from(&self, since: Option<&str>) -> Order {
        match since.and_then(id::parse) {
            Some((epoch, seq)) if epoch.as_str() == self.epoch && seq <= self.seq => {
                Order::Since(seq)
            }
            _ => Order::Plain,
        }
    }

    /// Checks one reply a connection got (a frame's text, or an event's data with its `id:`).
    fn check_reply(&mut self, reader: Reader, text: &str, event_id: Option<Option<&str>>) {
        let file = self.file;
        let (epoch, seq_now) = (self.epoch.clone(), self.seq);
        let v: Reply<'_> =
            serde_json::from_str(text).unwrap_or_else(|e| panic!("not a reply ({e}): {text:?}"));
        let s = match reader {
            Reader::Slot(i) => self.slots[i].as_mut(),
            Reader::Root => Some(&mut self.root),
            Reader::Raw => None,
        };
        let kind = &*v.kind;
        let stream = event_id.is_some();
        match kind {
            "ack" | "error" | "pong" => {
                assert!(!(stream && kind == "pong"), "a pong on a stream: {text}");
                if let Some(eid) = event_id {
                    assert_eq!(eid, None, "an answer is a data-only event: {text}");
                }
                let Some(s) = s else { return };
                if let (Some(gap), "ack") = (v.gap, kind) {
                    s.gap = Some(s.gap.unwrap_or(false) || gap);
                }
                if stream && kind == "ack" {
                    let pattern: String =
                        v.id.and_then(|raw| serde_json::from_str(raw.get()).ok())
                            .unwrap_or_else(|| panic!("a stream's ack names its pattern: {text}"));
                    s.asked.push(pattern);
                }
                return;
            }
            "message" => {}
            _ => panic!("type {kind:?}: {text}"),
        }
        let topic = v.topic.as_deref().expect("a message has a topic");
        assert!(v.data.is_some(), "a message without data: {text}");
        let msg_id: String =
            v.id.and_then(|raw| serde_json::from_str(raw.get()).ok())
                .unwrap_or_else(|| panic!("a message without an id: {text}"));
        if let Some(eid) = event_id {
            assert_eq!(
                eid,
                Some(&*msg_id),
                "the event's id: is the message's: {text}"
            );
        }
        let (e, seq) = id::parse(&msg_id).unwrap_or_else(|| panic!("a bad id {msg_id:?}"));
        assert_eq!(e.as_str(), epoch, "an id of another epoch: {text}");
        let reserved = topic.starts_with('$');
        if reader == Reader::Root {
            assert!(!reserved, "root read {topic}");
            self.seq = self.seq.max(seq);
            let old = self
                .messages
                .insert(seq, (topic.to_owned(), text.to_owned(), true));
            assert!(
                old.as_ref().is_none_or(|(_, f, _)| f == text),
                "two messages with id {msg_id}: {old:?} and {text}"
            );
        } else {
            assert!(seq <= seq_now, "id {msg_id} ahead of the relay's {seq_now}");
            match self.messages.get(&seq) {
                Some((_, frame, whole)) => {
                    if *whole && !stream {
                        assert_eq!(frame, text, "two messages with id {msg_id}");
                    } else {
                        assert_eq!(lines(frame), lines(text), "two messages with id {msg_id}");
                    }
                }
                None => {
                    assert!(reserved, "message {msg_id} never published: {text}");
                    self.messages
                        .insert(seq, (topic.to_owned(), text.to_owned(), !stream));
                }
            }
        }
        let Some(s) = s else { return };
        let rules = reads(s.who, if seq <= s.sent_before { 0 } else { file }).unwrap_or_default();
        assert!(
            rules.iter().any(|r| topic_matches(r, topic)),
            "client {} received {topic}, rules {rules:?}",
            s.who
        );
        assert!(
            s.asked.iter().any(|p| topic_matches(p, topic)),
            "client {} received {topic}, never asked for it (asked {:?})",
            s.who,
            s.asked
        );
        match s.order {
            Order::Since(since) => {
                if !reserved {
                    assert!(seq > since, "{msg_id} is not after since {since}");
                    assert!(
                        seq > s.newest,
                        "{msg_id} after {} (since {since}): out of order",
                        s.newest
                    );
                    s.newest = seq;
                }
                assert!(s.seen.insert(seq), "{msg_id} twice (since {since})");
            }
            Order::Plain => assert!(s.seen.insert(seq), "{msg_id} twice"),
            Order::Fresh | Order::Off => {
                s.seen.insert(seq);
            }
        }
        if let Reader::Slot(i) = reader {
            self.resume[i] = Some(msg_id);
        }
    }

    /// Reads what the slot's peer got and checks it.
    fn read(&mut self, reader: Reader) {
        let s = match reader {
            Reader::Slot(i) => match self.slots[i].as_mut() {
                Some(s) => s,
                None => return,
            },
            Reader::Root => &mut self.root,
            Reader::Raw => return,
        };
        if s.stream {
            let items = self.h.received_stream(&mut s.peer);
            let was_ended = s.ended;
            s.ended = s.peer.is_shut();
            assert!(
                !was_ended || items.is_empty(),
                "bytes after the stream ended: {items:?}"
            );
            let mut replies = Vec::new();
            for item in items {
                match item {
                    Streamed::Retry(ms) => {
                        assert!(!s.started && ms == 2000, "retry: {ms} mid-stream")
                    }
                    Streamed::Comment(c) => assert_eq!(c, " keep-alive"),
                    Streamed::Event(e) => replies.push(e),
                }
                s.started = true;
            }
            for e in replies {
                self.check_reply(reader, &e.data, Some(e.id.as_deref()));
            }
        } else {
            let frames = self.h.received(&mut s.peer);
            let mut texts = Vec::new();
            for frame in frames {
                assert!(!s.ended, "a frame after the close frame: {frame:?}");
                match frame {
                    Frame::Text(t) => texts.push(t),
                    Frame::Close(code, _) => {
                        assert!(matches!(code, Some(1000 | 1008 | 1009) | None), "{code:?}");
                        s.ended = true;
                    }
                    Frame::Ping(_) | Frame::Pong(_) => {}
                    Frame::Binary(b) => panic!("a binary reply: {b:?}"),
                }
            }
            for t in texts {
                self.check_reply(reader, &t, None);
            }
        }
    }

    /// How much has been seen so far: every peer's messages and the distinct messages.
    fn received_so_far(&self) -> usize {
        self.slots
            .iter()
            .flatten()
            .map(|s| s.seen.len())
            .sum::<usize>()
            + self.messages.len()
    }

    /// Reads every peer (the root first: it learns the newest id) and checks the bounds.
    fn read_all(&mut self) {
        self.read(Reader::Root);
        for i in 0..SLOTS {
            self.read(Reader::Slot(i));
        }
        let mut queued = 0;
        let peers = std::iter::once(&self.root).chain(self.slots.iter().flatten());
        for s in peers {
            let (held, queue) = (self.h.held_bytes(&s.peer), self.h.buffered_amount(&s.peer));
            queued += queue;
            assert!(
                queue <= self.bounds.queue,
                "{queue} B queued, bound {}",
                self.bounds.queue
            );
            assert!(
                held <= self.bounds.held,
                "{held} B held, bound {}",
                self.bounds.held
            );
        }
        assert_eq!(
            self.h.stats().queued_bytes,
            queued as u64,
            "the queued bytes counted"
        );
        assert!(!self.root.ended, "the root reader was closed");
    }

    fn take(&mut self, i: usize) {
        if let Some(s) = self.slots[i].take() {
            self.h.disconnect(&s.peer);
        }
    }

    /// The slot's WebSocket sends `line` (connecting first if it has none).
    fn send(&mut self, i: usize, line: &[u8]) {
        let fresh = !matches!(&self.slots[i], Some(s) if !s.stream && !s.ended);
        if fresh {
            self.take(i);
            let who = i % WHO.len();
            let target = match WHO[who].token {
                "" => "/".to_owned(),
                t => format!("/?token={t}"),
            };
            match self.h.connect(&target) {
                Ok(peer) => {
                    self.h.set_window(&peer, self.windows[i]);
                    self.slots[i] = Some(Slot::new(peer, false, who, Order::Fresh));
                }
                Err(status) => {
                    let expected = expected_who(
                        None,
                        target.split_once('?').map(|q| q.1),
                        self.file,
                        self.trusted,
                    );
                    assert!(
                        matches!(status, 401 | 429) && (expected.is_err() || status == 429),
                        "{} refused with {status}",
                        WHO[who].name
                    );
                    return;
                }
            }
        }
        let order_now = self.order_from_request(line);
        let Some(s) = self.slots[i].as_mut() else {
            return;
        };
        if let Some((topic, order)) = order_now {
            if let Some(t) = topic {
                s.asked.push(t);
            }
            s.order = match s.order {
                Order::Fresh => order,
                _ => Order::Off,
            };
        }
        match std::str::from_utf8(line) {
            Ok(text) => self.h.send(&s.peer, Message::Text(text)),
            Err(_) => self.h.send(&s.peer, Message::Binary(line)),
        }
    }

    /// A `subscribe` or `unsubscribe` request: its pattern, and the order its answer keeps
    /// if it is the connection's first. `None` for anything the relay cannot take as one.
    fn order_from_request(&self, line: &[u8]) -> Option<(Option<String>, Order)> {
        let text = std::str::from_utf8(line).ok()?;
        let req: Asked<'_> = serde_json::from_str(text).ok()?;
        match &*req.kind {
            "subscribe" => {
                let order = match req.since {
                    None => Order::Plain,
                    Some(raw) => {
                        let since = raw
                            .get()
                            .strip_prefix('"')
                            .and_then(|t| t.strip_suffix('"'));
                        self.order_from(since)
                    }
                };
                Some((req.topic, order))
            }
            "unsubscribe" => Some((None, Order::Off)),
            _ => None,
        }
    }

    /// The slot opens an event stream.
    fn open_stream(&mut self, i: usize, line: &[u8]) {
        self.take(i);
        let mut parts = line.split(|&b| b == b'\t');
        let target = parts.next().unwrap_or_default();
        let target = if target.first() == Some(&b'/') {
            sanitize(target)
        } else {
            format!("/events?{}", sanitize(target))
        };
        let last = parts.next().map(header_value).filter(|v| !v.is_empty());
        let auth = parts.next().map(header_value).filter(|v| !v.is_empty());
        let mut headers = Vec::new();
        if let Some(v) = &last {
            headers.push(("Last-Event-ID", v.as_str()));
        }
        if let Some(v) = &auth {
            headers.push(("Authorization", v.as_str()));
        }
        let (path, query) = target
            .split_once('?')
            .map_or((&*target, None), |(p, q)| (p, Some(q)));
        let who = expected_who(auth.as_deref(), query, self.file, self.trusted);
        // The header wins when it holds anything; a query with a `%` is not decoded here.
        let since = match last.as_deref().map(str::trim).filter(|v| !v.is_empty()) {
            Some(v) => Some(Some(v.to_owned())),
            None => match query {
                Some(q) if q.contains('%') => None,
                Some(q) => Some(
                    q.rsplit('&')
                        .find_map(|p| p.strip_prefix("lastEventID="))
                        .map(str::to_owned),
                ),
                None => Some(None),
            },
        };
        let order = match since {
            Some(Some(text)) => self.order_from(Some(&text)),
            _ => Order::Plain,
        };
        match self.h.events(&target, &headers) {
            Ok(peer) => {
                assert_eq!(path, "/events", "a stream at {target}");
                self.h.set_window(&peer, self.windows[i]);
                let who = who.unwrap_or_else(|()| {
                    panic!("a stream for {target} {headers:?}, which needs 401")
                });
                self.slots[i] = Some(Slot::new(peer, true, who, order));
            }
            Err(answer) => {
                let s = answer.status;
                if path == "/events" {
                    assert!(EVENTS_REFUSALS.contains(&s), "{target} {headers:?}: {s}");
                    if who.is_err() {
                        assert!(
                            matches!(s, 401 | 429 | 400 | 431),
                            "{target} {headers:?}: {s}, not 401"
                        );
                    } else {
                        assert_ne!(s, 401, "{target} {headers:?}: 401");
                    }
                } else {
                    assert!(OTHER_ANSWERS.contains(&s), "{target}: {s}");
                }
            }
        }
    }

    /// A request of any method and target, its answer and what a stream sent at once.
    fn raw(&mut self, line: &[u8]) {
        let mut parts = line.split(|&b| b == b'\t');
        let mut head = parts.next().unwrap_or_default().to_vec();
        head.extend_from_slice(b" HTTP/1.1\r\nHost: fuzz\r\n");
        for h in parts {
            head.extend_from_slice(h);
            head.extend_from_slice(b"\r\n");
        }
        head.extend_from_slice(b"\r\n");
        let Some(mut peer) = self.h.open_raw(&head) else {
            return;
        };
        if let Some(answer) = self.h.answer(&mut peer) {
            let s = answer.status;
            assert!(OTHER_ANSWERS.contains(&s), "{head:?}: {s}");
            let stream = answer
                .headers
                .iter()
                .any(|(n, v)| n.eq_ignore_ascii_case("content-type") && v == "text/event-stream");
            if stream {
                assert_eq!(s, 200);
                let mut items = Vec::new();
                EventParser::new().push(&answer.body, &mut items);
                for item in items {
                    if let Streamed::Event(e) = item {
                        self.check_reply(Reader::Raw, &e.data, Some(e.id.as_deref()));
                    }
                }
            }
        }
        self.h.disconnect(&peer);
    }

    fn reload(&mut self, second: bool) {
        let before = self.file;
        self.file = usize::from(second);
        self.h.handler_mut().set_clients(load(second));
        self.h
            .server_mut()
            .visit_open(|relay, ctx, session| relay.reapply(ctx, session));
        self.h.turn();
        let widened = before == 1 && self.file == 0;
        for s in self.slots.iter_mut().flatten() {
            if before != self.file {
                s.reloaded = true;
                // What was queued before may still be unread behind a slow reader.
                s.sent_before = self.seq;
            }
            // alice and carol.x read more under the first file; the others the same.
            if widened && matches!(s.who, 0 | 2) {
                // Retained values the rules now allow come as a new subscription's would.
                s.order = Order::Off;
            }
        }
    }

    /// Everything still owed to every peer, each reading all it can.
    fn drain(&mut self) {
        self.h.set_window(&self.root.peer, usize::MAX);
        for s in self.slots.iter().flatten() {
            self.h.set_window(&s.peer, usize::MAX);
        }
        let mut quiet = 0;
        for _ in 0..10_000 {
            let before = self.received_so_far();
            self.read_all();
            let after = self.received_so_far();
            quiet = if after == before { quiet + 1 } else { 0 };
            if quiet == 3 {
                return;
            }
        }
        panic!("the replays never end");
    }

    /// After [`World::drain`]: a connection answered `"gap":false` from history got every
    /// message after its `since` that it asked for and may read, unless it was closed or
    /// the rules changed meanwhile.
    fn check_complete(&self) {
        if self.h.stats().slow_drops > 0 {
            return;
        }
        for s in self.slots.iter().flatten() {
            let Order::Since(since) = s.order else {
                continue;
            };
            // Closed (slow, overrun, removed), it owes nothing more.
            let open = self.h.conn_state(&s.peer) == emberws::conn::State::Open;
            if s.gap != Some(false) || s.ended || s.reloaded || !open {
                continue;
            }
            let rules = reads(s.who, self.file).unwrap_or_default();
            for (&seq, (topic, frame, _)) in self.messages.range(since + 1..) {
                let wanted = !topic.starts_with('$')
                    && s.asked.iter().any(|p| topic_matches(p, topic))
                    && rules.iter().any(|r| topic_matches(r, topic));
                assert!(
                    !wanted || s.seen.contains(&seq),
                    "client {} (since {since}, asked {:?}, stream {}) missed {frame}",
                    s.who,
                    s.asked,
                    s.stream
                );
            }
        }
    }
}

/// Never panics; every answer to a request is a stream or one of the relay's statuses; every
/// stream parses as a browser parses it into events whose data is a relay reply, a message's
/// event carrying `id:` = its id; one id is one message everywhere; a peer receives a message
/// only on a topic its rules and its own subscriptions allow; a subscription from a `since`
/// the relay gave gets the messages after it in order, none twice, and (with `"gap":false`)
/// every one it may read; one without gets no id twice; a connection's held bytes and queue
/// stay within the configured bounds; the retained values stay within their cap.
pub fn events(data: &[u8]) {
    let Some((header, mut rest)) = data.split_at_checked(HEADER) else {
        return;
    };
    let (policy, cfg, trusted) = policy_and_config(header);
    let max_retained = policy.max_retained_bytes;
    let public = header[0] & 2 != 0;
    let worst = cfg.worst_case_connection_bytes::<Session>()
        - emberws::server::idle_connection_bytes::<Session>();
    let bounds = Bounds {
        held: worst,
        queue: cfg.max_backpressure.max(cfg.send_limit() + 14),
    };
    let mut h = Harness::new(cfg, Relay::new(policy));
    if public {
        h.set_local_addr("0.0.0.0:9001".parse().expect("an address"));
    }
    let mut root = h
        .connect(&format!("/?token={ROOT_TOKEN}"))
        .expect("root connects");
    h.send(
        &root,
        Message::Text(r##"{"type":"subscribe","topic":"#"}"##),
    );
    let _ = h.received(&mut root);
    let epoch = h.handler().epoch().to_string();
    let mut root = Slot::new(root, false, ROOT, Order::Off);
    root.asked.push("#".into());
    let mut w = World {
        h,
        root,
        slots: Default::default(),
        resume: Default::default(),
        windows: [usize::MAX; SLOTS],
        epoch,
        seq: 0,
        messages: BTreeMap::new(),
        file: 0,
        trusted,
        bounds,
    };
    let ms = Duration::from_millis;
    while let Some((&op, tail)) = rest.split_first() {
        let end = tail.iter().position(|&b| b == b'\n').unwrap_or(tail.len());
        let (line, after) = tail.split_at(end);
        rest = after.get(1..).unwrap_or_default();
        let (slot, action, arg) = (usize::from(op & 7), op >> 3 & 7, op >> 6);
        if action <= 2 {
            let step = [ms(0), ms(100), ms(1000), ms(16_000)][usize::from(arg)];
            if !step.is_zero() {
                w.h.advance(step);
            }
        }
        let line = w.substitute(line, slot);
        match action {
            0 => w.send(slot, &line),
            1 => w.open_stream(slot, &line),
            2 => w.raw(&line),
            3 => {
                if let Some(s) = w.slots[slot].as_ref() {
                    if arg & 1 == 1 && !s.stream {
                        w.h.close(&s.peer, 1000, "bye");
                    }
                }
                w.take(slot);
            }
            4 => {
                w.windows[slot] = [1, 100, 2000, usize::MAX][usize::from(arg)];
                if let Some(s) = w.slots[slot].as_ref() {
                    w.h.set_window(&s.peer, w.windows[slot]);
                }
            }
            5 => w.reload(arg & 1 == 1),
            6 => {
                let topic = format!("$SYS/x{slot}");
                let data = line.len().to_string();
                let (_, retained) =
                    Relay::publish_from_loop(w.h.server_mut(), &topic, &data, arg & 1 == 1);
                assert_eq!(retained, Ok(()), "a $ topic is always retained");
                w.seq += 1;
            }
            _ => {
                w.h.advance([ms(1000), ms(5000), ms(15_000), ms(300_000)][usize::from(arg)])
            }
        }
        w.read_all();
    }
    w.drain();
    w.check_complete();
    // A reader of every topic gets every retained value, each costing its topic, its frame
    // and its entry. (Past any lockout that wrong tokens brought.)
    w.h.advance(Duration::from_secs(301));
    let mut all =
        w.h.connect(&format!("/?token={ROOT_TOKEN}"))
            .expect("root connects");
    w.h.send(&all, Message::Text(r##"{"type":"subscribe","topic":"#"}"##));
    let mut held = 0;
    for frame in w.h.received(&mut all) {
        let Frame::Text(text) = frame else {
            panic!("root got {frame:?}")
        };
        let v: Reply<'_> = serde_json::from_str(&text).expect("a reply");
        if v.kind == "message" {
            let topic = v.topic.as_deref().map_or(0, str::len);
            held += text.len() + topic + crate::relay::RETAINED_ENTRY_BYTES;
        }
    }
    assert!(
        held <= max_retained,
        "{held} B retained, cap {max_retained}"
    );
}

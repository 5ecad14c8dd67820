//! The relay: a JSON pub/sub protocol on top of [`Handler`] and [`Ctx`], plus the dashboard
//! page, `/healthz` and `/metrics`.
//!
//! Requests (text messages): `subscribe` (optional `since` → `ack` with `gap`, then what was
//! missed), `unsubscribe`, `publish` (optional `id` → `ack` with `delivered`; optional
//! `retain`), `ping`. Anything malformed or not allowed gets an `error` (with the request's
//! `id`) and the connection stays open.
//!
//! Every message the relay publishes gets an id ([`id`]: the relay's epoch and a `seq`), which
//! its frame carries last, and enters [`history`] (topics starting with `$` excepted); a
//! retained value is the frame of the publish that set it. What a subscription gets before its
//! live messages is sent as the socket takes it ([`replay`]). [`state`] keeps all of it in a
//! file across restarts.
//!
//! Who may do what: [`clients`] (names, token hashes), [`acl`] (their topic rules), [`guard`]
//! (rates per connection, lockouts of addresses that guess tokens). Topics that start with
//! `$` are the relay's own: [`sys`] publishes its figures there, clients cannot.
//!
//! A page that only listens opens `GET /events?topic=P` instead ([`events`]): a Server-Sent
//! Events stream of the same messages, with the message ids as event ids.
//!
//! Publishing from outside a callback (the program's loop: the relay's own `$SYS` figures):
//! [`Relay::publish_from_loop`], the same path as a client's publish (id, history, retain).

pub mod acl;
pub mod clients;
pub mod events;
pub mod guard;
pub mod history;
pub mod id;
pub mod replay;
pub mod state;
pub mod sys;

use std::borrow::Cow;
use std::collections::BTreeMap;
#[cfg(feature = "redis")]
use std::collections::HashMap;
use std::io::Write as _;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use emberws::{
    CloseCode, Config, Ctx, Decision, Delivery, Handler, HttpRequest, Message, Response, Server,
    Stats,
};
use serde::Deserialize;
use serde_json::value::RawValue;

/// The built-in dashboard, served at `GET /`.
const DASHBOARD: &str = include_str!("../dashboard.html");
/// The browser client, served at `GET /emberws.js` (the dashboard loads it too).
const CLIENT: &str = include_str!("../client.js");

/// Topic names and patterns longer than this are refused.
pub const MAX_TOPIC_LEN: usize = 256;
/// Retained messages, all topics together, hold at most this many bytes (by default).
pub const MAX_RETAINED_BYTES: usize = 1 << 20;
/// The nesting depth of a publish's data allowed by default.
pub const MAX_JSON_DEPTH: usize = 64;
/// Messages history keeps per topic by default.
pub const HISTORY_MESSAGES: usize = 64;
/// Bytes history holds in all by default.
pub const HISTORY_BYTES: usize = 256 * 1024;

use acl::Rules;
use clients::{Client, Clients};
use guard::{Limiter, LockoutPolicy, Lockouts, Rates, Verdict};
use history::History;
use id::Epoch;

/// One request, borrowed from the message where the JSON has no escapes.
#[derive(Deserialize)]
struct Request<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow, default)]
    topic: Option<Text<'a>>,
    /// `Some("null")` for `"data":null`, which clears a retained message; `None` if absent.
    #[serde(borrow, default, deserialize_with = "present")]
    data: Option<&'a RawValue>,
    #[serde(borrow, default)]
    id: Option<&'a RawValue>,
    #[serde(default)]
    retain: bool,
    /// A subscribe's `since`: the id of the last message the client has.
    #[serde(borrow, default)]
    since: Option<&'a RawValue>,
}

/// Where a subscription starts: a WebSocket `subscribe`'s `since`, or an event stream's last
/// event id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Since {
    /// None given: the retained values, then live messages.
    Absent,
    /// After this message: what history holds after it (or a gap), then live ones.
    At(Epoch, u64),
    /// An event stream's last event id that is no id of this relay's: answered as one of
    /// another epoch (a gap, and the retained values).
    Unreadable,
}

/// A string borrowed from the message unless it holds escapes. (serde borrows a `Cow`
/// field, but not one inside an `Option`: that one would be an allocation per request.)
struct Text<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for Visit<'a> {
            type Value = Text<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Text<'a>, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Text<'a>, E> {
                Ok(Text(Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_str(Visit(std::marker::PhantomData))
    }
}

/// A field that is present, whatever its value: `Option` alone reads `null` as absent.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

/// What the relay lets whom do; [`Policy::default`] is open (no clients file, anonymous
/// clients may do everything, no rate limits), for loopback.
pub struct Policy {
    /// The clients file's clients; `None`: no authentication, every client is anonymous.
    pub clients: Option<Clients>,
    /// The rules of clients without a token, where those are let in: on a loopback
    /// listener, everywhere without a clients file, and everywhere with `allow_anonymous`.
    pub anonymous: Rules,
    /// Clients without a token are let in on every listener, not only on loopback ones.
    pub allow_anonymous: bool,
    /// With a clients file: `/metrics` and `/healthz` on a listener off loopback need a
    /// client's token.
    pub protect_status: bool,
    pub lockout: LockoutPolicy,
    /// Per connection; rates of 0 are off.
    pub rates: Rates,
    /// Whether the rates apply to loopback peers too.
    pub rate_loopback: bool,
    pub max_json_depth: usize,
    pub max_retained_bytes: usize,
    /// `[history] messages`: kept per topic; 0 = no history.
    pub history_messages: usize,
    /// `[history] bytes`: history holds at most this much in all.
    pub history_bytes: usize,
    /// The largest frame the server sends ([`Config::send_limit`]), for publishes from
    /// outside a callback.
    pub max_frame: usize,
    /// [`Config::max_subscriptions`]: an event stream asking for more patterns is refused.
    pub max_subscriptions: usize,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            clients: None,
            anonymous: Rules::open(),
            allow_anonymous: false,
            protect_status: true,
            lockout: LockoutPolicy {
                failures: 5,
                first: Duration::from_secs(1),
                max: Duration::from_secs(300),
            },
            rates: Rates {
                publishes: 0.0,
                publish_burst: 0.0,
                bytes: 0.0,
                bytes_burst: 0.0,
                strikes: 50,
            },
            rate_loopback: false,
            max_json_depth: MAX_JSON_DEPTH,
            max_retained_bytes: MAX_RETAINED_BYTES,
            history_messages: HISTORY_MESSAGES,
            history_bytes: HISTORY_BYTES,
            max_frame: Config::default().send_limit(),
            max_subscriptions: Config::default().max_subscriptions,
        }
    }
}

/// Refusals and closes by reason, for `/metrics`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Counters {
    pub denied_publish: u64,
    pub denied_subscribe: u64,
    pub rate_publishes: u64,
    pub rate_bytes: u64,
    pub too_deep: u64,
    pub too_large: u64,
    pub closed_abuse: u64,
    pub closed_removed: u64,
    /// Replays that history overtook (the subscriber read slower than it forgot).
    pub closed_overrun: u64,
    pub missing_token: u64,
    pub wrong_token: u64,
    pub locked_out: u64,
    /// `GET /events` refused with 400: no topic, a bad one, too many.
    pub events_bad_request: u64,
    /// `GET /events` refused with 403: none of its patterns is allowed.
    pub events_not_allowed: u64,
}

/// One connection of the relay: who it is (shared with the client's other connections),
/// the patterns it asked for (its subscriptions are their overlap with its rules), its rate
/// buckets when rates apply to it, and what is being replayed to it. 48 bytes, plus on the
/// heap the buckets (boxed, 32 bytes), the asked patterns and, only while a replay goes on,
/// its cursors.
pub struct Session {
    who: Arc<Client>,
    asked: Vec<Box<str>>,
    limiter: Option<Box<Limiter>>,
    replay: Option<Box<replay::Replay>>,
}

/// A local publish that set or cleared its topic's retained value: the relay's `seq`-th
/// publish (from 1), so that a bridge can tell which of the server's exports it was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetainMark {
    pub seq: u64,
    pub clear: bool,
}

/// A topic's retained value.
#[derive(Clone, Debug)]
struct Retained {
    /// The `message` frame of the publish that set it, with its id.
    frame: String,
    /// That publish's `seq`.
    seq: u64,
    /// The `seq` of the latest message on the topic, retained or not.
    touched: u64,
}

/// The retained values, in topic order (a replay's cursor is the last topic it sent), within
/// a byte cap counting each topic and frame.
#[derive(Debug, Default)]
struct Store {
    map: BTreeMap<String, Retained>,
    bytes: usize,
}

impl Store {
    /// Sets `topic`'s value to `frame` of message `seq` if it fits within `cap`.
    fn set(&mut self, topic: &str, frame: &str, seq: u64, cap: usize) -> Result<(), Refusal> {
        let old = self
            .map
            .get(topic)
            .map_or(0, |r| retained_cost(topic, &r.frame));
        let cost = retained_cost(topic, frame);
        if self.bytes - old + cost > cap {
            return Err("retained store full: the message was delivered but not retained");
        }
        self.bytes = self.bytes - old + cost;
        match self.map.get_mut(topic) {
            // A sensor re-publishing its retained reading reuses the stored string.
            Some(stored) => {
                stored.frame.clear();
                stored.frame.push_str(frame);
                stored.seq = seq;
                stored.touched = seq;
            }
            None => {
                let value = Retained {
                    frame: frame.to_owned(),
                    seq,
                    touched: seq,
                };
                self.map.insert(topic.to_owned(), value);
            }
        }
        Ok(())
    }

    fn clear(&mut self, topic: &str) {
        if let Some(r) = self.map.remove(topic) {
            self.bytes -= retained_cost(topic, &r.frame);
        }
    }

    /// Message `seq` was published on `topic`.
    fn touch(&mut self, topic: &str, seq: u64) {
        if let Some(r) = self.map.get_mut(topic) {
            r.touched = seq;
        }
    }
}

/// The relay's state: who may do what, retained messages, history, ids and a reused output
/// buffer.
pub struct Relay {
    policy: Policy,
    anonymous: Arc<Client>,
    lockouts: Lockouts,
    pub counters: Counters,
    retained: Store,
    history: History,
    epoch: Epoch,
    /// The `seq` of the latest message.
    seq: u64,
    /// Changes to the retained values and history so far, for the state file.
    changes: u64,
    out: Vec<u8>,
    /// Publishes made (exported: from callbacks and from the loop, not imports).
    published: u64,
    /// With a bridge: the local retained updates since the bridge last took them.
    marks: Option<Vec<RetainMark>>,
    /// The Redis bridge's counters, for `/metrics`, when there is one.
    #[cfg(feature = "redis")]
    pub bridge: Option<crate::bridge::Stats>,
}

impl Default for Relay {
    fn default() -> Self {
        Relay::new(Policy::default())
    }
}

/// Why a request was refused; the reason goes back in an `error` message.
type Refusal = &'static str;

const NOT_ALLOWED: Refusal = "not allowed";
const RESERVED: Refusal = "topics starting with $ are reserved";

/// Whether a topic is one of the relay's own (`$SYS/…`): its first level starts with `$`.
/// Clients cannot publish to one, a bridge neither exports nor imports one (each relay has
/// its own), and a first-level wildcard does not match one.
pub fn reserved(topic: &str) -> bool {
    topic.starts_with('$')
}

/// What a retained value holds beside its topic and frame bytes: its map entry (the key and
/// the value, 64 B), the B-tree's slack with its nodes half full (as much again) — the
/// allocator's headers of the two strings fit in what is left of a 128-byte round figure.
pub const RETAINED_ENTRY_BYTES: usize = 128;

/// The bytes a retained value counts against `max_retained_bytes`: its topic, its frame and
/// [`RETAINED_ENTRY_BYTES`], so that many small values are bounded as honestly as a few
/// large ones. The relay's own `$` topics count nothing: they are a fixed set of small values
/// (see [`sys`]), so a client filling the store cannot push them out.
fn retained_cost(topic: &str, frame: &str) -> usize {
    if reserved(topic) {
        0
    } else {
        topic.len() + frame.len() + RETAINED_ENTRY_BYTES
    }
}

impl Relay {
    pub fn new(mut policy: Policy) -> Self {
        let anonymous = Client::anonymous(std::mem::take(&mut policy.anonymous));
        let history = History::new(policy.history_messages, policy.history_bytes);
        Relay {
            policy,
            anonymous,
            lockouts: Lockouts::default(),
            counters: Counters::default(),
            retained: Store::default(),
            history,
            epoch: Epoch::random(),
            seq: 0,
            changes: 0,
            out: Vec::new(),
            published: 0,
            marks: None,
            #[cfg(feature = "redis")]
            bridge: None,
        }
    }
}

/// What a bridge to other instances needs of the relay: which publishes were retained, and
/// retained values set from elsewhere.
#[cfg(feature = "redis")]
impl Relay {
    /// Publishes made so far: the number of the latest one.
    pub fn published(&self) -> u64 {
        self.published
    }

    /// From now on, every local publish that sets or clears a retained value is marked, for
    /// [`Relay::take_retain_marks`] (a bridge to share retained values).
    pub fn mark_retains(&mut self) {
        self.marks.get_or_insert_with(Vec::new);
    }

    /// The retained updates marked since the last call, in publish order (replaces `into`).
    pub fn take_retain_marks(&mut self, into: &mut Vec<RetainMark>) {
        into.clear();
        if let Some(marks) = &mut self.marks {
            std::mem::swap(marks, into);
        }
    }

    /// Delivers a message another instance published (its `message` frame, through a
    /// broker) to the local subscribers of `topic` as a message of this relay: with the next
    /// id of this relay in place of the other's, into history, and with `retain` as the
    /// topic's retained value (data `null` clears it) before delivery. Not exported: a bridge
    /// does not send back what it received. A retained value past `max_retained_bytes` here
    /// clears the topic's value (rather than keep an older one than the other instances
    /// have). False if the frame's data cannot be read, or it is too large.
    pub fn import(server: &mut Server<Relay>, topic: &str, frame: &str, retain: bool) -> bool {
        let relay = server.handler_mut();
        let Some(data) = data_of(frame) else {
            return false;
        };
        let max = relay.policy.max_frame;
        match relay.stamp(topic, data.get(), retain, max) {
            Err(_) => return false,
            Ok(Some(_)) => relay.retained.clear(topic),
            Ok(None) => {}
        }
        let frame = std::mem::take(&mut relay.out);
        if let Ok(text) = std::str::from_utf8(&frame) {
            server.import_event(topic, id_in(text), Message::Text(text));
        }
        server.handler_mut().out = frame;
        true
    }

    /// Replaces every retained value with `values` (topic → `message` frame, as loaded from a
    /// broker), except the `touched` topics, which keep their current value or absence. Each
    /// value gets an id of this relay. Entries past `max_retained_bytes`, or whose frame
    /// cannot be read, are left out; returns how many.
    pub fn load_retained(&mut self, values: HashMap<String, String>, touched: &[String]) -> usize {
        let mut kept = Store::default();
        // Each relay keeps its own `$` topics.
        let own: Vec<String> = self
            .retained
            .map
            .keys()
            .filter(|t| reserved(t))
            .cloned()
            .collect();
        for topic in touched.iter().chain(&own) {
            if let Some(r) = self.retained.map.remove(topic) {
                kept.bytes += retained_cost(topic, &r.frame);
                kept.map.insert(topic.clone(), r);
            }
        }
        let sorted: BTreeMap<String, String> = values.into_iter().collect();
        let mut left_out = 0;
        let cap = self.policy.max_retained_bytes;
        for (topic, frame) in sorted {
            if touched.contains(&topic) || reserved(&topic) {
                continue;
            }
            let Some(data) = data_of(&frame) else {
                left_out += 1;
                continue;
            };
            let seq = self.seq + 1;
            message_frame(&mut self.out, &topic, data.get(), self.epoch, seq);
            let text = std::str::from_utf8(&self.out).unwrap_or_default();
            if self.out.len() > self.policy.max_frame || kept.set(&topic, text, seq, cap).is_err() {
                left_out += 1;
                continue;
            }
            self.seq = seq;
        }
        self.retained = kept;
        self.changes += 1;
        left_out
    }
}

/// What the state file needs of the relay (see [`state`]).
impl Relay {
    /// Changes to the retained values and history so far: a state file written at `n` is
    /// behind once this is past `n`.
    pub fn changes(&self) -> u64 {
        self.changes
    }

    /// The relay's epoch.
    pub fn epoch(&self) -> Epoch {
        self.epoch
    }

    /// Takes a new epoch, for when ids of this one may have been given already (after a stop
    /// that was not clean, or a state file that cannot be marked as in use): history is
    /// dropped, the retained values get ids of the new epoch.
    pub fn forget_epoch(&mut self) {
        let old = self.epoch;
        for _ in 0..4 {
            self.epoch = Epoch::random();
            if self.epoch != old {
                break;
            }
        }
        self.seq = 0;
        self.history = History::new(self.policy.history_messages, self.policy.history_bytes);
        let values = std::mem::take(&mut self.retained.map);
        let mut store = Store::default();
        let cap = self.policy.max_retained_bytes;
        for (topic, value) in values {
            let Some(data) = data_in(&value.frame) else {
                continue;
            };
            let seq = self.seq + 1;
            message_frame(&mut self.out, &topic, data, self.epoch, seq);
            let frame = std::str::from_utf8(&self.out).unwrap_or_default();
            if store.set(&topic, frame, seq, cap).is_ok() {
                self.seq = seq;
            }
        }
        self.retained = store;
        self.changes += 1;
    }
}

impl Relay {
    /// New clients (a reload). Apply them to open connections with [`Relay::reapply`].
    pub fn set_clients(&mut self, clients: Clients) {
        self.policy.clients = Some(clients);
    }

    /// After [`Relay::set_clients`], for one open connection: a client that is gone (or
    /// whose token changed) is closed with 1008; one whose rules changed is resubscribed
    /// under the new rules.
    pub fn reapply(&mut self, ctx: &mut Ctx<'_>, session: &mut Session) {
        let Some(name) = session.who.name() else {
            return;
        };
        let now = self
            .policy
            .clients
            .as_ref()
            .and_then(|c| c.named(name))
            .filter(|c| c.same_credentials(&session.who))
            .cloned();
        let Some(now) = now else {
            self.counters.closed_removed += 1;
            ctx.close(CloseCode::POLICY, "client removed");
            return;
        };
        if now.rules != session.who.rules {
            // Patterns still catching up are not in the topic table: they subscribe under
            // the rules of the day when their cursor arrives.
            let before = granted(&session.who.rules, &session.asked, |p| {
                replay::catching_up(session, p)
            });
            let after = granted(&now.rules, &session.asked, |p| {
                replay::catching_up(session, p)
            });
            for g in before.iter().filter(|g| !after.contains(g)) {
                ctx.unsubscribe(g);
            }
            for g in after.iter().filter(|g| !before.contains(g)) {
                ctx.subscribe(g);
            }
            // Retained values the new rules let it read for the first time, as a new
            // subscription would get them, paced like one.
            let before = std::mem::replace(&mut session.who, now);
            self.replay_retained(session, None, Some(before));
            self.pump(ctx, session);
        } else {
            session.who = now;
        }
    }

    /// Whether a request may go without a token: loopback needs no credentials (local
    /// programs, on a listener only they can reach); other listeners do, unless there is no
    /// clients file or anonymous access is switched on.
    fn trusted(&self, req: &HttpRequest<'_>) -> bool {
        self.policy.clients.is_none()
            || self.policy.allow_anonymous
            || req.local_addr().ip().is_loopback()
    }

    /// Who presents this request: a client by its token, or anonymous if `anonymous`;
    /// otherwise the answer to give (401, or 429 while the address is locked out).
    fn identify(
        &mut self,
        req: &HttpRequest<'_>,
        anonymous: bool,
    ) -> Result<Arc<Client>, Response> {
        let Some(clients) = &self.policy.clients else {
            // No clients file: no authentication, tokens mean nothing.
            return Ok(self.anonymous.clone());
        };
        let (ip, now) = (req.peer_addr().ip(), req.now());
        let token = presented(req);
        if token.is_none() && anonymous {
            // No guess to slow down: a local sensor is not locked out by another local
            // program's wrong token.
            return Ok(self.anonymous.clone());
        }
        if let Some(wait) = self.lockouts.locked(ip, now) {
            self.counters.locked_out += 1;
            return Err(locked_out(wait));
        }
        match token {
            Some(token) => match clients.find(token) {
                Some(client) => {
                    let client = client.clone();
                    self.lockouts.succeed(ip);
                    Ok(client)
                }
                None => {
                    self.counters.wrong_token += 1;
                    let lockout = self.policy.lockout;
                    if self.lockouts.fail(&lockout, ip, now).is_some() {
                        log::warn!("{ip}: locked out after repeated wrong tokens");
                    }
                    Err(unauthorized(true))
                }
            },
            None => {
                self.counters.missing_token += 1;
                Err(unauthorized(false))
            }
        }
    }

    fn rates_for(&self, ip: IpAddr) -> bool {
        let r = &self.policy.rates;
        (r.publishes > 0.0 || r.bytes > 0.0) && (self.policy.rate_loopback || !ip.is_loopback())
    }

    /// Charges a request to the connection's buckets.
    fn charge(
        &mut self,
        ctx: &Ctx<'_>,
        session: &mut Session,
        len: usize,
        publish: bool,
    ) -> Verdict {
        let Some(limiter) = &mut session.limiter else {
            return Verdict::Pass;
        };
        let verdict = limiter.charge(&self.policy.rates, ctx.now(), len, publish);
        match verdict {
            Verdict::Refuse(guard::TOO_MANY_BYTES) => self.counters.rate_bytes += 1,
            Verdict::Refuse(_) => self.counters.rate_publishes += 1,
            Verdict::Abuse => self.counters.closed_abuse += 1,
            Verdict::Pass => {}
        }
        verdict
    }

    fn handle(
        &mut self,
        ctx: &mut Ctx<'_>,
        session: &mut Session,
        req: &Request<'_>,
    ) -> Result<(), Refusal> {
        match &*req.kind {
            "subscribe" => {
                let pattern = topic(req, true)?;
                let since = match req.since {
                    None => Since::Absent,
                    Some(raw) => {
                        let (epoch, seq) = since_of(raw)?;
                        Since::At(epoch, seq)
                    }
                };
                self.subscribe(ctx, session, pattern, since, req.id)
            }
            "unsubscribe" => {
                let pattern = topic(req, true)?;
                if let Some(i) = session.asked.iter().position(|p| **p == *pattern) {
                    session.asked.swap_remove(i);
                    let rules = &session.who.rules;
                    let kept = granted(rules, &session.asked, |p| replay::catching_up(session, p));
                    for g in rules.grant(pattern).iter().filter(|g| !kept.contains(g)) {
                        ctx.unsubscribe(g);
                    }
                    if let Some(r) = &mut session.replay {
                        r.cancel(pattern);
                    }
                }
                self.ack(ctx, req.id, None);
                Ok(())
            }
            "publish" => {
                let name = topic(req, false)?;
                if reserved(name) {
                    self.counters.denied_publish += 1;
                    return Err(RESERVED);
                }
                let data = req.data.ok_or("publish needs \"data\"")?;
                if !session.who.rules.may_publish(name) {
                    self.counters.denied_publish += 1;
                    return Err(NOT_ALLOWED);
                }
                if deeper_than(data.get().as_bytes(), self.policy.max_json_depth) {
                    self.counters.too_deep += 1;
                    return Err("data is nested deeper than the relay allows");
                }
                let max = ctx.config().send_limit();
                let retained = match self.stamp(name, data.get(), req.retain, max) {
                    Ok(retained) => retained,
                    Err(refusal) => {
                        self.counters.too_large += 1;
                        return Err(refusal);
                    }
                };
                let frame = self.frame();
                let delivered = ctx.publish_event(name, id_in(frame), Message::Text(frame));
                self.exported(req.retain && retained.is_none(), data.get() == "null");
                self.ack(ctx, req.id, Some(delivered.delivered()));
                retained.map_or(Ok(()), Err)
            }
            "ping" => {
                self.out.clear();
                self.out.extend_from_slice(b"{\"type\":\"pong\"");
                if let Some(id) = req.id {
                    self.out.extend_from_slice(b",\"id\":");
                    self.out.extend_from_slice(id.get().as_bytes());
                }
                self.out.push(b'}');
                send_out(ctx, &self.out);
                Ok(())
            }
            _ => Err("unknown \"type\": expected subscribe, unsubscribe, publish or ping"),
        }
    }

    /// Subscribes the connection to `pattern` (checked already), as its rules grant it: a
    /// WebSocket's `subscribe` request. With `since` the ack always goes (with `gap`), then
    /// what history holds after it, then live messages; without, an ack if the request had
    /// an `id`, the retained values, then live ones.
    pub(super) fn subscribe(
        &mut self,
        ctx: &mut Ctx<'_>,
        session: &mut Session,
        pattern: &str,
        since: Since,
        id: Option<&RawValue>,
    ) -> Result<(), Refusal> {
        self.enter(ctx, session, pattern, since, id, Some(pattern))?;
        self.pump(ctx, session);
        Ok(())
    }

    /// [`Relay::subscribe`] up to its answer, leaving what it replays to [`Relay::pump`]:
    /// an event stream enters all its patterns first ([`events`]), so that its catch-ups
    /// share one cursor and its retained values come in one replay (`retained: None`, every
    /// pattern asked for), and none comes twice. `retained`: the pattern whose retained
    /// values the subscription gets.
    pub(super) fn enter(
        &mut self,
        ctx: &mut Ctx<'_>,
        session: &mut Session,
        pattern: &str,
        since: Since,
        id: Option<&RawValue>,
        retained: Option<&str>,
    ) -> Result<(), Refusal> {
        let grants = session.who.rules.grant(pattern);
        if grants.is_empty() {
            self.counters.denied_subscribe += 1;
            return Err(NOT_ALLOWED);
        }
        let asked = session.asked.iter().any(|p| **p == *pattern);
        if !asked
            && ctx.subscriptions() + waiting(session) + grants.len()
                > ctx.config().max_subscriptions
        {
            return Err("too many subscriptions");
        }
        if !asked {
            session.asked.push(pattern.into());
        }
        let pending = replay::catching_up(session, pattern);
        // A pattern that starts with `$` matches only topics that history never keeps (the
        // relay's own figures): their retained values, the current figures, answer it with or
        // without `since`, and nothing that could have been replayed was missed.
        let unkept = pattern.starts_with('$');
        match since {
            Since::At(epoch, seq) if !unkept && epoch == self.epoch && seq <= self.seq => {
                let rules = &session.who.rules;
                let gap = self
                    .history
                    .gap(seq, |t| matches(pattern, t) && rules.may_read(t));
                self.ack_gap(ctx, id, gap);
                if asked && !pending {
                    // Live already: live again once caught up, so that nothing published
                    // meanwhile overtakes what is replayed.
                    let kept = granted(rules, &session.asked, |p| {
                        p == pattern || replay::catching_up(session, p)
                    });
                    for g in grants.iter().filter(|g| !kept.contains(g)) {
                        ctx.unsubscribe(g);
                    }
                }
                self.catch_up(session, pattern, seq, !gap);
            }
            other => {
                // Without `since`, or with one this relay cannot answer from history
                // (another epoch, ahead of it, or an event stream's last id that does not
                // read): the retained values.
                if matches!(other, Since::Absent) {
                    self.ack(ctx, id, None);
                } else {
                    self.ack_gap(ctx, id, !unkept);
                }
                if !pending {
                    for g in &grants {
                        ctx.subscribe(g);
                    }
                }
                self.replay_retained(session, retained, None);
            }
        }
        Ok(())
    }

    /// Gives a message the next id: its frame, built into `self.out`, enters history
    /// (unless its topic starts with `$`) and with `retain` becomes the topic's retained value
    /// (`data` null clears it). `Err` if the frame is larger than `max_frame`: nothing is
    /// kept and no id used. `Ok(Some(refusal))`: kept in history but not retained (the store
    /// is full).
    fn stamp(
        &mut self,
        topic: &str,
        data: &str,
        retain: bool,
        max_frame: usize,
    ) -> Result<Option<Refusal>, Refusal> {
        let seq = self.seq + 1;
        message_frame(&mut self.out, topic, data, self.epoch, seq);
        if self.out.len() > max_frame {
            return Err("message too large");
        }
        self.seq = seq;
        let frame = std::str::from_utf8(&self.out).unwrap_or_default();
        let kept = !topic.starts_with('$');
        if kept {
            self.history.push(seq, topic, frame);
        }
        self.retained.touch(topic, seq);
        let mut refused = None;
        if retain {
            if data == "null" {
                self.retained.clear(topic);
            } else if let Err(r) =
                self.retained
                    .set(topic, frame, seq, self.policy.max_retained_bytes)
            {
                refused = Some(r);
            }
        }
        let history_on = self.policy.history_messages > 0 && self.policy.history_bytes > 0;
        if (kept && history_on) || retain {
            self.changes += 1;
        }
        Ok(refused)
    }

    /// The frame [`Relay::stamp`] built.
    fn frame(&self) -> &str {
        std::str::from_utf8(&self.out).unwrap_or_default()
    }

    /// A publish went out to the exports (for a bridge): counted, and marked when it set
    /// (`retained`) or cleared a retained value.
    fn exported(&mut self, retained: bool, clear: bool) {
        self.published += 1;
        if let (true, Some(marks)) = (retained, &mut self.marks) {
            marks.push(RetainMark {
                seq: self.published,
                clear,
            });
        }
    }

    /// Publishes `data` (JSON text, sent as written) to `topic` from outside a callback —
    /// the program's loop: the relay's own `$SYS` figures ([`sys`]) — as a client's publish
    /// goes: the next id, history (not for topics starting with `$`), with `retain` the
    /// topic's retained value (`null` clears it), every local subscriber, and the exports a
    /// bridge takes. A client's publish takes the same path from its callback. `data` must be
    /// valid JSON. Returns the delivery and whether it was retained.
    ///
    /// # Errors
    /// In the second place: the frame would be larger than the server sends
    /// (`Policy::max_frame`), and nothing was published; or, with `retain`, the retained
    /// store is full for a topic that counts against it: published, not retained.
    pub fn publish_from_loop(
        server: &mut Server<Relay>,
        topic: &str,
        data: &str,
        retain: bool,
    ) -> (Delivery, Result<(), Refusal>) {
        let relay = server.handler_mut();
        let max = relay.policy.max_frame;
        let retained = match relay.stamp(topic, data, retain, max) {
            Ok(retained) => retained,
            Err(refusal) => return (Delivery::default(), Err(refusal)),
        };
        let frame = std::mem::take(&mut relay.out);
        let text = std::str::from_utf8(&frame).unwrap_or_default();
        let delivery = server.publish_event(topic, id_in(text), Message::Text(text));
        let relay = server.handler_mut();
        relay.out = frame;
        relay.exported(retain && retained.is_none(), data == "null");
        (delivery, retained.map_or(Ok(()), Err))
    }

    /// `{"type":"ack","id":ID,"gap":GAP}` (`id` only if the request had one): the answer to
    /// a subscribe with `since`.
    fn ack_gap(&mut self, ctx: &mut Ctx<'_>, id: Option<&RawValue>, gap: bool) {
        self.out.clear();
        self.out.extend_from_slice(b"{\"type\":\"ack\"");
        if let Some(id) = id {
            self.out.extend_from_slice(b",\"id\":");
            self.out.extend_from_slice(id.get().as_bytes());
        }
        let _ = write!(self.out, ",\"gap\":{gap}}}");
        send_out(ctx, &self.out);
    }

    fn ack(&mut self, ctx: &mut Ctx<'_>, id: Option<&RawValue>, delivered: Option<usize>) {
        let Some(id) = id else { return };
        self.out.clear();
        self.out.extend_from_slice(b"{\"type\":\"ack\",\"id\":");
        self.out.extend_from_slice(id.get().as_bytes());
        if let Some(n) = delivered {
            let _ = write!(self.out, ",\"delivered\":{n}");
        }
        self.out.push(b'}');
        send_out(ctx, &self.out);
    }

    /// Sends `{"type":"error","reason":…,"id":…}`.
    fn refuse(&mut self, ctx: &mut Ctx<'_>, reason: &str, id: Option<&RawValue>) {
        self.out.clear();
        error_json(&mut self.out, reason, id);
        send_out(ctx, &self.out);
    }

    /// The relay's own counters, in the Prometheus text format.
    fn prometheus(&self) -> String {
        let c = &self.counters;
        let mut s = String::with_capacity(1024);
        let mut family = |name: &str, help: &str, rows: &[(&str, u64)]| {
            use std::fmt::Write as _;
            let _ = writeln!(
                s,
                "# HELP emberws_{name} {help}\n# TYPE emberws_{name} counter"
            );
            for (reason, n) in rows {
                let _ = writeln!(s, "emberws_{name}{{reason=\"{reason}\"}} {n}");
            }
        };
        family(
            "relay_refused_total",
            "Requests refused with an error message, by reason.",
            &[
                ("publish_not_allowed", c.denied_publish),
                ("subscribe_not_allowed", c.denied_subscribe),
                ("rate_publishes", c.rate_publishes),
                ("rate_bytes", c.rate_bytes),
                ("json_too_deep", c.too_deep),
                ("too_large", c.too_large),
            ],
        );
        family(
            "relay_closed_total",
            "Connections the relay closed with 1008, by reason.",
            &[
                ("rate_abuse", c.closed_abuse),
                ("client_removed", c.closed_removed),
                ("replay_overrun", c.closed_overrun),
            ],
        );
        family(
            "events_refused_total",
            "Event-stream requests (GET /events) refused, by reason (400, 403).",
            &[
                ("bad_request", c.events_bad_request),
                ("not_allowed", c.events_not_allowed),
            ],
        );
        family(
            "auth_refused_total",
            "Upgrades and status requests refused, by reason (401, 401, 429).",
            &[
                ("missing_token", c.missing_token),
                ("wrong_token", c.wrong_token),
                ("locked_out", c.locked_out),
            ],
        );
        {
            use std::fmt::Write as _;
            let _ = write!(
                s,
                "# HELP emberws_history_messages Messages history holds.\n\
                 # TYPE emberws_history_messages gauge\n\
                 emberws_history_messages {}\n\
                 # HELP emberws_held_bytes Bytes the relay holds for later subscribers, as their caps count them.\n\
                 # TYPE emberws_held_bytes gauge\n\
                 emberws_held_bytes{{what=\"history\"}} {}\n\
                 emberws_held_bytes{{what=\"retained\"}} {}\n",
                self.history.len(),
                self.history.bytes(),
                self.retained.bytes
            );
        }
        #[cfg(feature = "redis")]
        if let Some(bridge) = &self.bridge {
            bridge.write_prometheus(&mut s);
        }
        s
    }
}

/// Every pattern the `asked` patterns stand for under `rules`, those `skip` says aside.
fn granted(rules: &Rules, asked: &[Box<str>], skip: impl Fn(&str) -> bool) -> Vec<String> {
    let mut all: Vec<String> = asked
        .iter()
        .filter(|p| !skip(p))
        .flat_map(|p| rules.grant(p))
        .collect();
    all.sort_unstable();
    all.dedup();
    all
}

/// The token a request presents: `Authorization: Bearer T`, or `?token=T` (browsers cannot
/// set headers on a WebSocket).
fn presented<'a>(req: &HttpRequest<'a>) -> Option<&'a str> {
    if let Some(value) = req.header("Authorization") {
        let value = std::str::from_utf8(value).ok()?.trim();
        let (scheme, token) = value.split_once(' ').unwrap_or((value, ""));
        // Another scheme is a credential that cannot be right.
        return Some(if scheme.eq_ignore_ascii_case("bearer") {
            token.trim()
        } else {
            ""
        });
    }
    req.query()?
        .split('&')
        .find_map(|pair| pair.strip_prefix("token="))
}

/// 401, with the scheme to use (RFC 6750).
fn unauthorized(wrong: bool) -> Response {
    let mut res = Response::status(401);
    let challenge = if wrong {
        "Bearer realm=\"emberws\", error=\"invalid_token\""
    } else {
        "Bearer realm=\"emberws\""
    };
    res.headers.push(("WWW-Authenticate", challenge.to_owned()));
    res.content_type = "text/plain";
    res.body =
        Cow::Borrowed(b"a valid token is required: Authorization: Bearer TOKEN, or ?token=TOKEN\n");
    res
}

/// 429 while an address is locked out, with when to try again.
fn locked_out(wait: Duration) -> Response {
    let mut res = Response::status(429);
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    res.headers.push(("Retry-After", secs.max(1).to_string()));
    res.content_type = "text/plain";
    res.body = Cow::Borrowed(b"too many wrong tokens from this address: try again later\n");
    res
}

/// Whether JSON text nests arrays and objects deeper than `max` (the text is valid JSON).
fn deeper_than(json: &[u8], max: usize) -> bool {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &b in json {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// Writes `{"type":"message","topic":TOPIC,"data":DATA,"id":"EPOCH-SEQ"}` into `out`.
fn message_frame(out: &mut Vec<u8>, topic: &str, data: &str, epoch: Epoch, seq: u64) {
    out.clear();
    out.extend_from_slice(b"{\"type\":\"message\",\"topic\":");
    json_string(out, topic);
    out.extend_from_slice(b",\"data\":");
    out.extend_from_slice(data.as_bytes());
    let _ = write!(out, ",\"id\":\"{epoch}-{seq}\"}}");
}

/// The data of a frame this relay built ([`message_frame`]), as written. The topic is a JSON
/// string, in which `,"data":` cannot appear unescaped, and the id comes last.
fn data_in(frame: &str) -> Option<&str> {
    let rest = frame.strip_prefix(r#"{"type":"message","topic":"#)?;
    let at = rest.find(r#","data":"#)? + r#","data":"#.len();
    let end = rest.rfind(r#","id":""#)?;
    rest.get(at..end)
}

/// The id of a frame this relay built ([`message_frame`]): `EPOCH-SEQ`, from its last field.
/// The event id an event stream gets with it. Empty for a frame without one.
/// A look at the last few bytes: the id holds no quote, so the last one before its end opens it.
pub(super) fn id_in(frame: &str) -> &str {
    let Some(rest) = frame.strip_suffix("\"}") else {
        return "";
    };
    match rest.rfind('"') {
        Some(at) if rest.get(..=at).is_some_and(|f| f.ends_with(r#","id":""#)) => {
            rest.get(at + 1..).unwrap_or_default()
        }
        _ => "",
    }
}

/// The data of a `message` frame (of another relay).
#[cfg(feature = "redis")]
fn data_of(frame: &str) -> Option<&RawValue> {
    #[derive(Deserialize)]
    struct Frame<'a> {
        #[serde(borrow)]
        data: &'a RawValue,
    }
    serde_json::from_str::<Frame<'_>>(frame)
        .ok()
        .map(|f| f.data)
}

/// A subscribe's `since`: an id, as a string.
fn since_of(raw: &RawValue) -> Result<(Epoch, u64), Refusal> {
    let text = raw.get();
    text.strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .and_then(id::parse)
        .ok_or("invalid since")
}

/// Subscriptions a session's catch-up will make, for the cap on subscriptions.
fn waiting(session: &Session) -> usize {
    session
        .asked
        .iter()
        .filter(|p| replay::catching_up(session, p))
        .count()
}

fn send_out(ctx: &mut Ctx<'_>, out: &[u8]) {
    if let Ok(text) = std::str::from_utf8(out) {
        ctx.send(Message::Text(text));
    }
}

fn parse(text: &str) -> Result<Request<'_>, Refusal> {
    serde_json::from_str(text).map_err(|e| {
        if e.is_syntax() || e.is_eof() {
            "invalid JSON"
        } else {
            "invalid request: needs a string \"type\" and well-typed fields"
        }
    })
}

/// The request's topic, checked: a pattern may hold `+` and `#` levels, a publish topic not.
fn topic<'r>(req: &'r Request<'_>, pattern: bool) -> Result<&'r str, Refusal> {
    let t = req
        .topic
        .as_ref()
        .map(|t| &*t.0)
        .ok_or("needs a string \"topic\"")?;
    acl::check_pattern(t)?;
    if !pattern && t.split('/').any(|level| level == "+" || level == "#") {
        return Err("a publish topic cannot contain + or #");
    }
    Ok(t)
}

/// Whether `t` is a topic one may publish to: 1 to 256 bytes, no `+` or `#` level, not one
/// of the relay's own `$` topics.
pub fn is_publish_topic(t: &str) -> bool {
    acl::check_pattern(t).is_ok()
        && !reserved(t)
        && !t.split('/').any(|level| level == "+" || level == "#")
}

/// MQTT matching of a pattern against a topic.
fn matches(pattern: &str, topic: &str) -> bool {
    emberws::topic_matches(pattern, topic)
}

/// Appends `s` as a JSON string.
fn json_string(out: &mut Vec<u8>, s: &str) {
    let _ = serde_json::to_writer(&mut *out, s);
}

fn error_json(out: &mut Vec<u8>, reason: &str, id: Option<&RawValue>) {
    out.extend_from_slice(b"{\"type\":\"error\",\"reason\":");
    json_string(out, reason);
    if let Some(id) = id {
        out.extend_from_slice(b",\"id\":");
        out.extend_from_slice(id.get().as_bytes());
    }
    out.push(b'}');
}

impl Handler for Relay {
    type State = Session;

    fn on_upgrade(&mut self, req: &HttpRequest<'_>) -> Decision<Session> {
        let anonymous = self.trusted(req);
        match self.identify(req, anonymous) {
            Ok(who) => {
                let limiter = self
                    .rates_for(req.peer_addr().ip())
                    .then(|| Box::new(Limiter::new(&self.policy.rates, req.now())));
                Decision::Accept(Session {
                    who,
                    asked: Vec::new(),
                    limiter,
                    replay: None,
                })
            }
            Err(res) => Decision::Refuse(res),
        }
    }

    fn on_event_stream(&mut self, req: &HttpRequest<'_>) -> Option<Decision<Session>> {
        (req.path() == events::PATH).then(|| self.event_stream(req))
    }

    fn on_open(&mut self, ctx: &mut Ctx<'_>, session: &mut Session) {
        self.open_stream(ctx, session);
    }

    fn on_request(&mut self, req: &HttpRequest<'_>, stats: &Stats) -> Response {
        if req.method() != "GET" && req.method() != "HEAD" {
            let mut res = Response::status(405);
            res.headers.push(("Allow", "GET".to_owned()));
            return res;
        }
        let path = req.path();
        if matches!(path, "/healthz" | "/metrics") {
            let open = !self.policy.protect_status || self.trusted(req);
            if let Err(res) = self.identify(req, open) {
                return res;
            }
        }
        match path {
            "/" | "/index.html" => Response::ok("text/html; charset=utf-8", DASHBOARD.as_bytes()),
            "/emberws.js" => {
                let mut res = Response::ok("text/javascript; charset=utf-8", CLIENT.as_bytes());
                // Short, so a page loads the new client soon after the relay is upgraded.
                res.headers
                    .push(("Cache-Control", "public, max-age=300".to_owned()));
                res
            }
            // A `GET` is an event stream (`on_event_stream`); this is a `HEAD`.
            events::PATH => {
                let mut res = Response::status(405);
                res.headers.push(("Allow", "GET".to_owned()));
                res
            }
            "/healthz" => Response::ok("application/json", stats.to_json().into_bytes()),
            "/metrics" => {
                let mut text = stats.to_prometheus();
                text.push_str(&self.prometheus());
                Response::ok("text/plain; version=0.0.4", text.into_bytes())
            }
            _ => Response::status(404),
        }
    }

    fn on_message(&mut self, ctx: &mut Ctx<'_>, session: &mut Session, msg: Message<'_>) {
        let len = msg.len();
        let (req, refusal) = match msg {
            Message::Text(text) => match parse(text) {
                Ok(req) => (Some(req), None),
                Err(reason) => (None, Some(reason)),
            },
            Message::Binary(_) => (
                None,
                Some("binary messages are not part of the relay protocol"),
            ),
        };
        let publish = req.as_ref().is_some_and(|r| r.kind == "publish");
        let id = req.as_ref().and_then(|r| r.id);
        match self.charge(ctx, session, len, publish) {
            Verdict::Pass => {}
            Verdict::Refuse(reason) => return self.refuse(ctx, reason, id),
            Verdict::Abuse => {
                ctx.close(CloseCode::POLICY, "rate limit exceeded");
                return;
            }
        }
        let result = match (req, refusal) {
            (Some(req), _) => self.handle(ctx, session, &req),
            (None, reason) => Err(reason.unwrap_or("invalid request")),
        };
        if let Err(reason) = result {
            self.refuse(ctx, reason, id);
        }
    }

    fn on_drain(&mut self, ctx: &mut Ctx<'_>, session: &mut Session) {
        self.pump(ctx, session);
    }
}

#[cfg(test)]
mod tests {
    use emberws::testing::{Frame, Harness, Peer};
    use emberws::Config;
    use serde_json::Value;

    use super::*;

    fn relay() -> Harness<Relay> {
        Harness::new(Config::default(), Relay::default())
    }

    /// Sends `json` as a text message (the relay's other test modules use it too).
    pub(super) fn say(h: &mut Harness<Relay>, peer: &Peer, json: &str) {
        h.send(peer, Message::Text(json));
    }

    /// Every JSON message the relay sent to `peer` since the last look.
    pub(super) fn heard(h: &mut Harness<Relay>, peer: &mut Peer) -> Vec<Value> {
        h.received(peer)
            .into_iter()
            .map(|f| match f {
                Frame::Text(t) => serde_json::from_str(&t).unwrap(),
                other => panic!("not a text frame: {other:?}"),
            })
            .collect()
    }

    #[test]
    fn publish_reaches_matching_subscribers_and_acks_with_the_count() {
        let mut h = relay();
        let mut a = h.connect("/").unwrap();
        let mut b = h.connect("/").unwrap();
        let mut c = h.connect("/").unwrap();
        say(
            &mut h,
            &a,
            r#"{"type":"subscribe","topic":"sensors/#","id":1}"#,
        );
        say(
            &mut h,
            &b,
            r#"{"type":"subscribe","topic":"sensors/+/temp"}"#,
        );
        say(&mut h, &c, r#"{"type":"subscribe","topic":"other"}"#);
        assert_eq!(
            heard(&mut h, &mut a),
            [serde_json::json!({"type":"ack","id":1})]
        );
        say(
            &mut h,
            &c,
            r#"{"type":"publish","topic":"sensors/k/temp","data":{"c": 21.50},"id":"x"}"#,
        );
        let epoch = h.handler().epoch;
        let expect = format!(
            r#"{{"type":"message","topic":"sensors/k/temp","data":{{"c": 21.50}},"id":"{epoch}-1"}}"#
        );
        // The data goes through as the publisher wrote it, byte for byte; the id comes last.
        assert_eq!(h.received(&mut a), [Frame::Text(expect.clone())]);
        assert_eq!(h.received(&mut b), [Frame::Text(expect)]);
        assert_eq!(
            heard(&mut h, &mut c),
            [serde_json::json!({"type":"ack","id":"x","delivered":2})]
        );
    }

    #[test]
    fn retained_values_reach_late_subscribers_and_clear() {
        let mut h = relay();
        let p = h.connect("/").unwrap();
        say(
            &mut h,
            &p,
            r#"{"type":"publish","topic":"s/1","data":1,"retain":true}"#,
        );
        say(
            &mut h,
            &p,
            r#"{"type":"publish","topic":"s/2","data":2,"retain":true}"#,
        );
        let mut late = h.connect("/").unwrap();
        say(&mut h, &late, r#"{"type":"subscribe","topic":"s/#"}"#);
        let mut got: Vec<i64> = heard(&mut h, &mut late)
            .iter()
            .map(|v| v["data"].as_i64().unwrap())
            .collect();
        got.sort();
        assert_eq!(got, [1, 2]);
        say(
            &mut h,
            &p,
            r#"{"type":"publish","topic":"s/1","data":null,"retain":true}"#,
        );
        let mut later = h.connect("/").unwrap();
        say(&mut h, &later, r#"{"type":"subscribe","topic":"s/#"}"#);
        let got: Vec<Value> = heard(&mut h, &mut later);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0]["topic"], "s/2");
    }

    /// The topics and data of the retained messages a new subscriber to `#` gets, sorted.
    #[cfg(feature = "redis")]
    fn retained_now(h: &mut Harness<Relay>) -> Vec<(String, Value)> {
        let mut late = h.connect("/").unwrap();
        say(h, &late, r##"{"type":"subscribe","topic":"#"}"##);
        let mut got: Vec<(String, Value)> = heard(h, &mut late)
            .into_iter()
            .map(|m| (m["topic"].as_str().unwrap().to_owned(), m["data"].clone()))
            .collect();
        got.sort_by(|a, b| a.0.cmp(&b.0));
        got
    }

    #[test]
    #[cfg(feature = "redis")]
    fn a_bridge_learns_which_publishes_were_retained_and_sets_retained_values() {
        let policy = Policy {
            max_retained_bytes: 120 + RETAINED_ENTRY_BYTES,
            ..Policy::default()
        };
        let cfg = Config::default().max_export_bytes(1 << 16);
        let mut h = Harness::new(cfg, Relay::new(policy));
        h.handler_mut().mark_retains();
        let p = h.connect("/").unwrap();
        for req in [
            r#"{"type":"publish","topic":"t/a","data":1}"#,
            r#"{"type":"publish","topic":"t/b","data":2,"retain":true}"#,
            r#"{"type":"publish","topic":"t/b","data":null,"retain":true}"#,
            // Past the cap: delivered, not retained, not marked.
            r#"{"type":"publish","topic":"t/c","data":"a long string past the cap of 120 bytes, a long string past the cap of 120 bytes, a long string past the cap","retain":true}"#,
        ] {
            say(&mut h, &p, req);
        }
        let mut marks = Vec::new();
        h.handler_mut().take_retain_marks(&mut marks);
        assert_eq!(
            marks,
            [
                RetainMark {
                    seq: 2,
                    clear: false
                },
                RetainMark {
                    seq: 3,
                    clear: true
                }
            ]
        );
        assert_eq!(h.handler().published(), 4);
        let mut exported = Vec::new();
        h.server_mut()
            .drain_exports(|topic, _| exported.push(topic.to_owned()));
        assert_eq!(
            exported,
            ["t/a", "t/b", "t/b", "t/c"],
            "one export per publish"
        );
        h.handler_mut().take_retain_marks(&mut marks);
        assert!(marks.is_empty(), "taken");

        // From elsewhere: set, clear, and a snapshot that replaces all but touched topics.
        let frame = |t: &str, d: &str| {
            format!(r#"{{"type":"message","topic":"{t}","data":{d},"id":"0badcafe-7"}}"#)
        };
        let mut watcher = h.connect("/").unwrap();
        say(&mut h, &watcher, r##"{"type":"subscribe","topic":"#"}"##);
        let import = |h: &mut Harness<Relay>, t: &str, d: &str, retain: bool| {
            assert!(Relay::import(h.server_mut(), t, &frame(t, d), retain));
        };
        import(&mut h, "x", "1", true);
        import(&mut h, "y", "2", true);
        import(&mut h, "y", "null", true);
        import(&mut h, "z", "5", false);
        let got = heard(&mut h, &mut watcher);
        assert_eq!(got.len(), 4, "imports reach local subscribers: {got:?}");
        let epoch = h.handler().epoch.to_string();
        for m in &got {
            let id = m["id"].as_str().unwrap();
            assert!(id.starts_with(&format!("{epoch}-")), "a local id: {id}");
        }
        assert_eq!(
            retained_now(&mut h),
            [("x".to_owned(), serde_json::json!(1))]
        );
        import(&mut h, "x", &"9".repeat(200), true);
        assert!(
            retained_now(&mut h).is_empty(),
            "past the cap: no older value left behind"
        );
        assert!(
            !Relay::import(h.server_mut(), "x", "not json", true),
            "a frame without readable data is not delivered"
        );
        import(&mut h, "x", "1", true);
        // Room for two small values from here on.
        h.handler_mut().policy.max_retained_bytes = 2 * (64 + RETAINED_ENTRY_BYTES);
        let snapshot: HashMap<String, String> = [
            ("a".to_owned(), frame("a", "3")),
            ("b".to_owned(), frame("b", "4")),
            ("x".to_owned(), frame("x", "0")),
        ]
        .into();
        let touched = ["b".to_owned(), "x".to_owned()];
        assert_eq!(h.handler_mut().load_retained(snapshot, &touched), 0);
        assert_eq!(
            retained_now(&mut h),
            [
                ("a".to_owned(), serde_json::json!(3)),
                ("x".to_owned(), serde_json::json!(1))
            ],
            "b was cleared here meanwhile, x set: both newer than the snapshot"
        );
        let big: HashMap<String, String> = (0..5)
            .map(|i| (format!("k{i}"), frame(&format!("k{i}"), "0")))
            .collect();
        assert_eq!(
            h.handler_mut().load_retained(big, &[]),
            3,
            "two entries of 62 B (with this relay's id, a two-digit seq) and their overhead fit"
        );
        let now = retained_now(&mut h);
        assert_eq!(
            now,
            [
                ("k0".to_owned(), serde_json::json!(0)),
                ("k1".to_owned(), serde_json::json!(0))
            ]
        );
    }

    #[test]
    #[cfg(feature = "redis")]
    fn each_relay_keeps_its_own_dollar_topics() {
        let cfg = Config::default().max_export_bytes(1 << 16);
        let mut h = Harness::new(cfg, Relay::default());
        h.handler_mut().mark_retains();
        Relay::publish_from_loop(h.server_mut(), "$SYS/uptime", "5", true)
            .1
            .unwrap();
        let frame = |t: &str, d: &str| format!(r#"{{"type":"message","topic":"{t}","data":{d}}}"#);
        // A snapshot from Redis: another relay's `$SYS` does not replace this one's.
        let snapshot: HashMap<String, String> = [
            ("a".to_owned(), frame("a", "1")),
            ("$SYS/uptime".to_owned(), frame("$SYS/uptime", "999")),
            ("$SYS/other".to_owned(), frame("$SYS/other", "1")),
        ]
        .into();
        assert_eq!(h.handler_mut().load_retained(snapshot, &[]), 0);
        let mut late = h.connect("/").unwrap();
        say(&mut h, &late, r#"{"type":"subscribe","topic":"$SYS/#"}"#);
        let got = heard(&mut h, &mut late);
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0]["data"], 5);
        // Exported like any publish (the bridge leaves `$` topics out), marked as retained.
        let mut exported = Vec::new();
        h.server_mut()
            .drain_exports(|topic, _| exported.push(topic.to_owned()));
        assert_eq!(exported, ["$SYS/uptime"]);
        assert!(!is_publish_topic("$SYS/uptime"), "never imported");
        assert!(is_publish_topic("a/$x"));
    }

    #[test]
    fn publishing_to_a_dollar_topic_is_refused() {
        let mut h = relay();
        let mut sys = h.connect("/").unwrap();
        say(
            &mut h,
            &sys,
            r#"{"type":"subscribe","topic":"$SYS/#","id":0}"#,
        );
        assert_eq!(heard(&mut h, &mut sys)[0]["type"], "ack");
        let mut p = h.connect("/").unwrap();
        for (i, topic) in ["$SYS/x", "$SYS", "$other/y", "$"].iter().enumerate() {
            say(
                &mut h,
                &p,
                &format!(
                    r#"{{"type":"publish","topic":"{topic}","data":1,"retain":true,"id":{i}}}"#
                ),
            );
            assert_eq!(
                heard(&mut h, &mut p),
                [serde_json::json!({
                    "type": "error",
                    "reason": "topics starting with $ are reserved",
                    "id": i
                })],
                "{topic}"
            );
        }
        assert!(heard(&mut h, &mut sys).is_empty());
        let mut late = h.connect("/").unwrap();
        say(&mut h, &late, r#"{"type":"subscribe","topic":"$SYS/#"}"#);
        assert!(heard(&mut h, &mut late).is_empty(), "nothing retained");
        // `$` further down is an ordinary character.
        say(
            &mut h,
            &p,
            r#"{"type":"publish","topic":"a/$SYS","data":1,"id":"ok"}"#,
        );
        assert_eq!(heard(&mut h, &mut p)[0]["type"], "ack");
        assert_eq!(h.handler().counters.denied_publish, 4);
    }

    #[test]
    fn bad_requests_get_errors_and_the_connection_stays_open() {
        let mut h = relay();
        let mut p = h.connect("/").unwrap();
        for bad in [
            "not json",
            r#"{"type":"dance"}"#,
            r#"{"type":"publish","topic":"a/+","data":1}"#,
            r#"{"type":"subscribe","topic":"a/#/b"}"#,
            r#"{"type":"publish","topic":"a"}"#,
        ] {
            say(&mut h, &p, bad);
            let answer = heard(&mut h, &mut p);
            assert_eq!(answer.len(), 1, "{bad}");
            assert_eq!(answer[0]["type"], "error", "{bad}");
        }
        h.send(&p, Message::Binary(b"\x00"));
        assert_eq!(heard(&mut h, &mut p)[0]["type"], "error");
        say(&mut h, &p, r#"{"type":"ping","id":7}"#);
        assert_eq!(
            heard(&mut h, &mut p),
            [serde_json::json!({"type":"pong","id":7})]
        );
    }

    #[test]
    fn http_routes() {
        let mut h = relay();
        let page = h.get("/").unwrap();
        assert_eq!(page.status, 200);
        assert!(String::from_utf8_lossy(&page.body).contains("<html"));
        let health = h.get("/healthz").unwrap();
        let v: Value = serde_json::from_slice(&health.body).unwrap();
        assert_eq!(v["connections_open"], 1, "the request's own connection");
        assert_eq!(h.get("/metrics").unwrap().status, 200);
        assert_eq!(h.get("/nope").unwrap().status, 404);
    }

    use std::time::Duration;

    use crate::secret::TokenHash;

    fn clients_file(entries: &[(&str, &str, &[&str], &[&str])]) -> Clients {
        let mut src = String::new();
        for (name, token, publish, subscribe) in entries {
            let list = |v: &[&str]| {
                v.iter()
                    .map(|p| format!("{p:?}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            src += &format!(
                "[{name}]\ntoken_sha256 = \"{}\"\npublish = [{}]\nsubscribe = [{}]\n",
                TokenHash::of(token).to_hex(),
                list(publish),
                list(subscribe)
            );
        }
        Clients::parse(&src, "clients.toml").unwrap()
    }

    fn alice_and_bob() -> Clients {
        clients_file(&[
            (
                "alice",
                "tok-alice",
                &["devices/{name}/#", "public/+/temp"],
                &["devices/{name}/#", "public/#"],
            ),
            ("bob", "tok-bob", &["devices/{name}/#"], &["#"]),
        ])
    }

    /// A relay on a public listener (`0.0.0.0:9001`): tokens are needed there.
    fn guarded(policy: Policy) -> Harness<Relay> {
        let mut h = Harness::new(Config::default(), Relay::new(policy));
        h.set_local_addr("0.0.0.0:9001".parse().unwrap());
        h
    }

    fn with_clients(clients: Clients) -> Policy {
        Policy {
            clients: Some(clients),
            lockout: LockoutPolicy {
                failures: 3,
                first: Duration::from_secs(2),
                max: Duration::from_secs(60),
            },
            ..Policy::default()
        }
    }

    fn bearer(token: &str) -> [(&'static str, String); 1] {
        [("Authorization", format!("Bearer {token}"))]
    }

    fn connect_as(h: &mut Harness<Relay>, token: &str) -> Peer {
        let header = bearer(token);
        h.connect_with("/", &[(header[0].0, &header[0].1)]).unwrap()
    }

    #[test]
    fn no_token_or_a_wrong_one_is_401_and_a_right_one_by_header_or_query_opens() {
        let mut h = guarded(with_clients(alice_and_bob()));
        let none = h.upgrade("/", &[]).err().unwrap();
        assert_eq!(none.status, 401);
        assert!(none
            .headers
            .iter()
            .any(|(n, v)| n == "WWW-Authenticate" && v.starts_with("Bearer")));
        assert_eq!(
            h.connect_with("/", &[("Authorization", "Bearer nope")])
                .err(),
            Some(401)
        );
        assert_eq!(
            h.connect_with("/", &[("Authorization", "Basic dG9rLWFsaWNl")])
                .err(),
            Some(401)
        );
        let a = connect_as(&mut h, "tok-alice");
        assert_eq!(h.state(&a).unwrap().who.name(), Some("alice"));
        let b = h.connect("/dash?x=1&token=tok-bob").unwrap();
        assert_eq!(h.state(&b).unwrap().who.name(), Some("bob"));
        assert_eq!(h.handler().counters.missing_token, 1);
        assert_eq!(h.handler().counters.wrong_token, 2);
    }

    #[test]
    fn repeated_failures_lock_the_address_out_and_the_right_token_works_after_the_wait() {
        let mut h = guarded(with_clients(alice_and_bob()));
        for _ in 0..3 {
            assert_eq!(h.connect("/?token=guess").err(), Some(401));
        }
        let locked = h.upgrade("/?token=tok-alice", &[]).err().unwrap();
        assert_eq!(locked.status, 429, "even the right token waits");
        assert!(locked
            .headers
            .iter()
            .any(|(n, v)| n == "Retry-After" && v == "2"));
        h.advance(Duration::from_millis(1999));
        assert_eq!(h.connect("/?token=tok-alice").err(), Some(429));
        h.advance(Duration::from_millis(1));
        assert!(h.connect("/?token=tok-alice").is_ok());
        // The success cleared the record: three more guesses before the next lockout.
        for _ in 0..3 {
            assert_eq!(h.connect("/?token=guess").err(), Some(401));
        }
        assert_eq!(h.connect("/?token=guess").err(), Some(429));
        assert_eq!(h.handler().counters.locked_out, 3);
    }

    #[test]
    fn anonymous_clients_get_their_own_rules_where_allowed() {
        let policy = Policy {
            anonymous: Rules::compile(None, &[], &["public/#".to_owned()]).unwrap(),
            allow_anonymous: true,
            ..with_clients(alice_and_bob())
        };
        let mut h = guarded(policy);
        let mut anon = h.connect("/").unwrap();
        say(
            &mut h,
            &anon,
            r#"{"type":"publish","topic":"public/x","data":1,"id":1}"#,
        );
        assert_eq!(
            heard(&mut h, &mut anon),
            [serde_json::json!({"type":"error","reason":"not allowed","id":1})]
        );
        say(
            &mut h,
            &anon,
            r##"{"type":"subscribe","topic":"#","id":2}"##,
        );
        assert_eq!(
            heard(&mut h, &mut anon),
            [serde_json::json!({"type":"ack","id":2})]
        );
        let alice = connect_as(&mut h, "tok-alice");
        say(
            &mut h,
            &alice,
            r#"{"type":"publish","topic":"public/k/temp","data":5}"#,
        );
        say(
            &mut h,
            &alice,
            r#"{"type":"publish","topic":"devices/alice/t","data":6}"#,
        );
        let got = heard(&mut h, &mut anon);
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0]["topic"], "public/k/temp");
        assert_eq!(
            h.connect("/?token=wrong").err(),
            Some(401),
            "a wrong token is not anonymous"
        );
    }

    #[test]
    fn a_session_costs_what_the_readme_says() {
        let readme = include_str!("../../../../README.md");
        let session = std::mem::size_of::<Session>();
        let limiter = std::mem::size_of::<Limiter>();
        assert_eq!(session, 48);
        assert!(readme.contains(&format!("<!-- relay session: {session} B -->")));
        assert!(readme.contains(&format!("<!-- relay buckets: {limiter} B -->")));
    }

    #[test]
    fn a_retained_entry_counts_at_least_twice_its_map_entry() {
        let entry = std::mem::size_of::<String>() + std::mem::size_of::<Retained>();
        assert!(2 * entry <= RETAINED_ENTRY_BYTES, "map entry {entry} B");
        let readme = include_str!("../../../../README.md");
        assert!(readme.contains(&format!(
            "<!-- retained entry: {RETAINED_ENTRY_BYTES} B -->"
        )));
    }

    #[test]
    fn a_loopback_listener_needs_no_token_and_a_public_one_does() {
        let policy = Policy {
            anonymous: Rules::compile(None, &["sensors/#".to_owned()], &[]).unwrap(),
            ..with_clients(alice_and_bob())
        };
        let mut h = Harness::new(Config::default(), Relay::new(policy));
        let mut local = h.connect("/").unwrap();
        assert_eq!(h.state(&local).unwrap().who.name(), None);
        say(
            &mut h,
            &local,
            r#"{"type":"publish","topic":"sensors/t","data":1,"id":1}"#,
        );
        assert_eq!(heard(&mut h, &mut local)[0]["type"], "ack");
        say(
            &mut h,
            &local,
            r#"{"type":"publish","topic":"other","data":1,"id":2}"#,
        );
        assert_eq!(heard(&mut h, &mut local)[0]["reason"], "not allowed");
        assert_eq!(
            h.get("/metrics").unwrap().status,
            200,
            "loopback reads the counters"
        );
        // A local program's wrong tokens lock out tokens from loopback, not anonymous access.
        for _ in 0..3 {
            assert_eq!(h.connect("/?token=stale").err(), Some(401));
        }
        assert_eq!(h.connect("/?token=tok-alice").err(), Some(429));
        assert!(
            h.connect("/").is_ok(),
            "anonymous sensors are not locked out"
        );
        h.advance(Duration::from_secs(2));
        h.set_local_addr("192.0.2.7:9443".parse().unwrap());
        assert_eq!(h.connect("/").err(), Some(401));
        assert_eq!(h.get("/metrics").unwrap().status, 401);
        assert!(h.connect("/?token=tok-alice").is_ok());
    }

    #[test]
    fn every_rule_kind_with_real_requests() {
        let mut h = guarded(with_clients(alice_and_bob()));
        let mut alice = connect_as(&mut h, "tok-alice");
        let mut bob = connect_as(&mut h, "tok-bob");
        say(&mut h, &bob, r##"{"type":"subscribe","topic":"#"}"##);
        let attempts = [
            ("devices/alice/temp", true),  // {name} and #
            ("devices/alice", true),       // # takes the parent level too
            ("devices/bob/temp", false),   // another's name
            ("public/kitchen/temp", true), // +
            ("public/kitchen/hum", false), // + is one level, the last one differs
            ("public/a/b/temp", false),    // + is exactly one level
            ("secret", false),             // no rule
        ];
        for (i, (topic, allowed)) in attempts.iter().enumerate() {
            let req = format!(r#"{{"type":"publish","topic":"{topic}","data":{i},"id":{i}}}"#);
            say(&mut h, &alice, &req);
            let answer = heard(&mut h, &mut alice);
            let delivered = heard(&mut h, &mut bob);
            if *allowed {
                assert_eq!(
                    answer,
                    [serde_json::json!({"type":"ack","id":i,"delivered":1})],
                    "{topic}"
                );
                assert_eq!(delivered.len(), 1, "{topic}");
            } else {
                assert_eq!(
                    answer,
                    [serde_json::json!({"type":"error","reason":"not allowed","id":i})],
                    "{topic}"
                );
                assert!(
                    delivered.is_empty(),
                    "{topic}: a denied publish reaches no one"
                );
            }
        }
        assert_eq!(h.handler().counters.denied_publish, 4);
        // Subscriptions: an exact one outside the rules is denied; one with wildcards gets
        // only its overlap.
        say(
            &mut h,
            &alice,
            r#"{"type":"subscribe","topic":"devices/bob/temp","id":"s1"}"#,
        );
        assert_eq!(
            heard(&mut h, &mut alice),
            [serde_json::json!({"type":"error","reason":"not allowed","id":"s1"})]
        );
        say(
            &mut h,
            &alice,
            r#"{"type":"subscribe","topic":"devices/+/temp","id":"s2"}"#,
        );
        assert_eq!(
            heard(&mut h, &mut alice),
            [serde_json::json!({"type":"ack","id":"s2"})]
        );
        say(
            &mut h,
            &bob,
            r#"{"type":"publish","topic":"devices/bob/temp","data":1}"#,
        );
        assert!(
            heard(&mut h, &mut alice).is_empty(),
            "bob's topic is not alice's to read"
        );
        say(
            &mut h,
            &alice,
            r#"{"type":"publish","topic":"devices/alice/temp","data":2}"#,
        );
        let got = heard(&mut h, &mut alice);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0]["topic"], "devices/alice/temp");
        heard(&mut h, &mut bob);
        assert_eq!(h.handler().counters.denied_subscribe, 1);
    }

    #[test]
    fn a_hash_subscriber_sees_only_allowed_topics_retained_ones_too() {
        let mut h = guarded(with_clients(alice_and_bob()));
        let mut bob = connect_as(&mut h, "tok-bob");
        for (topic, n) in [("devices/bob/t", 1), ("devices/bob/h", 2)] {
            let req = format!(r#"{{"type":"publish","topic":"{topic}","data":{n},"retain":true}}"#);
            say(&mut h, &bob, &req);
        }
        heard(&mut h, &mut bob);
        let mut alice = connect_as(&mut h, "tok-alice");
        let mut carol = connect_as(&mut h, "tok-bob");
        say(
            &mut h,
            &alice,
            r#"{"type":"publish","topic":"public/x/temp","data":3,"retain":true}"#,
        );
        heard(&mut h, &mut alice);
        say(&mut h, &alice, r##"{"type":"subscribe","topic":"#"}"##);
        let got = heard(&mut h, &mut alice);
        assert_eq!(
            got.len(),
            1,
            "retained: only public/x/temp is alice's to read: {got:?}"
        );
        assert_eq!(got[0]["topic"], "public/x/temp");
        say(&mut h, &carol, r##"{"type":"subscribe","topic":"#"}"##);
        assert_eq!(
            heard(&mut h, &mut carol).len(),
            3,
            "bob's rules read everything"
        );
        say(
            &mut h,
            &bob,
            r#"{"type":"publish","topic":"devices/bob/t","data":4}"#,
        );
        assert!(heard(&mut h, &mut alice).is_empty());
        // Unsubscribing what was asked for ends what it stood for.
        say(&mut h, &alice, r##"{"type":"unsubscribe","topic":"#"}"##);
        say(
            &mut h,
            &alice,
            r#"{"type":"publish","topic":"public/x/temp","data":5}"#,
        );
        let got = heard(&mut h, &mut alice);
        assert!(got.iter().all(|m| m["type"] != "message"), "{got:?}");
    }

    #[test]
    fn a_reload_closes_removed_clients_with_1008_and_applies_changed_rules() {
        let mut h = guarded(with_clients(alice_and_bob()));
        let mut alice = connect_as(&mut h, "tok-alice");
        let mut bob = connect_as(&mut h, "tok-bob");
        let mut bob2 = connect_as(&mut h, "tok-bob");
        say(&mut h, &alice, r##"{"type":"subscribe","topic":"#"}"##);
        say(&mut h, &bob, r##"{"type":"subscribe","topic":"#"}"##);
        // Alice now reads only devices/alice/#; bob is gone.
        let new = clients_file(&[(
            "alice",
            "tok-alice",
            &["devices/{name}/#"],
            &["devices/{name}/#"],
        )]);
        h.handler_mut().set_clients(new);
        h.server_mut()
            .visit_open(|relay, ctx, session| relay.reapply(ctx, session));
        assert_eq!(
            h.received(&mut bob),
            [Frame::Close(Some(1008), "client removed".into())]
        );
        assert_eq!(
            h.received(&mut bob2),
            [Frame::Close(Some(1008), "client removed".into())]
        );
        assert_eq!(h.connect("/?token=tok-bob").err(), Some(401));
        heard(&mut h, &mut alice);
        say(
            &mut h,
            &alice,
            r#"{"type":"publish","topic":"devices/alice/x","data":1}"#,
        );
        assert_eq!(
            heard(&mut h, &mut alice).len(),
            1,
            "still subscribed where allowed"
        );
        let carol = clients_file(&[("alice", "tok-alice", &["public/p"], &[])]);
        h.handler_mut().set_clients(carol);
        h.server_mut()
            .visit_open(|relay, ctx, session| relay.reapply(ctx, session));
        say(
            &mut h,
            &alice,
            r#"{"type":"publish","topic":"public/p","data":1}"#,
        );
        say(
            &mut h,
            &alice,
            r#"{"type":"publish","topic":"devices/alice/x","data":1,"id":9}"#,
        );
        assert_eq!(
            heard(&mut h, &mut alice),
            [serde_json::json!({"type":"error","reason":"not allowed","id":9})],
            "new publish rules apply, and no subscription is left"
        );
        assert_eq!(h.handler().counters.closed_removed, 2);
    }

    #[test]
    fn rules_that_grow_on_reload_bring_the_retained_values_now_readable() {
        let mut h = guarded(with_clients(alice_and_bob()));
        let mut bob = connect_as(&mut h, "tok-bob");
        say(
            &mut h,
            &bob,
            r#"{"type":"publish","topic":"devices/bob/r","data":9,"retain":true}"#,
        );
        heard(&mut h, &mut bob);
        let mut alice = connect_as(&mut h, "tok-alice");
        say(&mut h, &alice, r##"{"type":"subscribe","topic":"#"}"##);
        assert!(
            heard(&mut h, &mut alice).is_empty(),
            "bob's topics are not alice's to read"
        );
        let wider = || {
            clients_file(&[
                (
                    "alice",
                    "tok-alice",
                    &[],
                    &["devices/{name}/#", "devices/+/r"],
                ),
                ("bob", "tok-bob", &["devices/{name}/#"], &["#"]),
            ])
        };
        h.handler_mut().set_clients(wider());
        h.server_mut()
            .visit_open(|relay, ctx, session| relay.reapply(ctx, session));
        let got = heard(&mut h, &mut alice);
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0]["topic"], "devices/bob/r");
        h.handler_mut().set_clients(wider());
        h.server_mut()
            .visit_open(|relay, ctx, session| relay.reapply(ctx, session));
        assert!(
            heard(&mut h, &mut alice).is_empty(),
            "the same rules: nothing again"
        );
        assert!(heard(&mut h, &mut bob).is_empty());
    }

    #[test]
    fn values_a_reload_makes_readable_are_paced_like_a_subscription() {
        let mut h = guarded(with_clients(alice_and_bob()));
        let bob = connect_as(&mut h, "tok-bob");
        let value = "b".repeat(1000);
        for i in 0..300 {
            let req = format!(
                r#"{{"type":"publish","topic":"devices/bob/{i:03}","data":"{value}","retain":true}}"#
            );
            say(&mut h, &bob, &req);
        }
        let mut alice = connect_as(&mut h, "tok-alice");
        say(&mut h, &alice, r##"{"type":"subscribe","topic":"#"}"##);
        assert!(heard(&mut h, &mut alice).is_empty());
        h.set_window(&alice, 8 * 1024);
        let wider = clients_file(&[
            ("alice", "tok-alice", &[], &["devices/#"]),
            ("bob", "tok-bob", &["devices/{name}/#"], &["#"]),
        ]);
        h.handler_mut().set_clients(wider);
        h.server_mut()
            .visit_open(|relay, ctx, session| relay.reapply(ctx, session));
        let mut got = Vec::new();
        for _ in 0..10_000 {
            let more = heard(&mut h, &mut alice);
            let replaying = h.state(&alice).is_some_and(|s| s.replay.is_some());
            if more.is_empty() && !replaying && h.buffered_amount(&alice) == 0 {
                break;
            }
            got.extend(more);
        }
        assert_eq!(got.len(), 300, "every value now readable, once");
        assert_eq!(h.stats().slow_closes, 0);
    }

    #[test]
    fn rate_limits_refuse_then_close_with_1008() {
        let policy = Policy {
            rates: Rates {
                publishes: 1.0,
                publish_burst: 2.0,
                bytes: 0.0,
                bytes_burst: 0.0,
                strikes: 2,
            },
            rate_loopback: true,
            ..Policy::default()
        };
        let mut h = guarded(policy);
        let mut p = h.connect("/").unwrap();
        let publish = r#"{"type":"publish","topic":"t","data":1,"id":1}"#;
        for _ in 0..2 {
            say(&mut h, &p, publish);
            assert_eq!(heard(&mut h, &mut p)[0]["type"], "ack");
        }
        say(&mut h, &p, publish);
        assert_eq!(
            heard(&mut h, &mut p),
            [serde_json::json!({"type":"error","reason":"rate limit: too many publishes","id":1})]
        );
        say(&mut h, &p, r#"{"type":"ping"}"#);
        assert_eq!(
            heard(&mut h, &mut p)[0]["type"],
            "pong",
            "only publishes are counted"
        );
        h.advance(Duration::from_secs(1));
        say(&mut h, &p, publish);
        assert_eq!(
            heard(&mut h, &mut p)[0]["type"],
            "ack",
            "a second earns one"
        );
        say(&mut h, &p, publish);
        say(&mut h, &p, publish);
        assert_eq!(heard(&mut h, &mut p).len(), 2, "two refusals");
        say(&mut h, &p, publish);
        assert_eq!(
            h.received(&mut p),
            [Frame::Close(Some(1008), "rate limit exceeded".into())]
        );
        assert_eq!(h.handler().counters.rate_publishes, 3);
        assert_eq!(h.handler().counters.closed_abuse, 1);
        // Loopback peers are not limited unless asked.
        let mut h = guarded(Policy {
            rate_loopback: false,
            ..Policy {
                rates: Rates {
                    publishes: 1.0,
                    publish_burst: 1.0,
                    bytes: 1.0,
                    bytes_burst: 1.0,
                    strikes: 1,
                },
                ..Policy::default()
            }
        });
        let mut p = h.connect("/").unwrap();
        for _ in 0..10 {
            say(&mut h, &p, publish);
        }
        assert!(heard(&mut h, &mut p).iter().all(|m| m["type"] == "ack"));
    }

    #[test]
    fn deeply_nested_data_is_refused_and_64_levels_pass() {
        let mut h = relay();
        let mut p = h.connect("/").unwrap();
        let mut sub = h.connect("/").unwrap();
        say(&mut h, &sub, r#"{"type":"subscribe","topic":"t"}"#);
        let nested = |n: usize| {
            format!(
                r#"{{"type":"publish","topic":"t","data":{}{},"id":1}}"#,
                "[".repeat(n),
                "]".repeat(n)
            )
        };
        say(&mut h, &p, &nested(64));
        assert_eq!(heard(&mut h, &mut p)[0]["type"], "ack");
        assert_eq!(h.received(&mut sub).len(), 1);
        let mut cfg = Config::default();
        cfg.max_message_size = 1 << 20;
        let mut h = Harness::new(cfg, Relay::default());
        let mut p = h.connect("/").unwrap();
        say(&mut h, &p, &nested(100_000));
        // 200 KB take a few turns of the 64 KiB read budget.
        for _ in 0..4 {
            h.turn();
        }
        let answer = h.received(&mut p);
        assert_eq!(answer.len(), 1);
        let Frame::Text(text) = &answer[0] else {
            panic!("{answer:?}")
        };
        assert!(text.contains("nested deeper"), "{text}");
        // Brackets inside strings are not nesting.
        let mut h = relay();
        let mut p = h.connect("/").unwrap();
        let strings = format!(
            r#"{{"type":"publish","topic":"t","data":"{}\"[","id":1}}"#,
            "[".repeat(200)
        );
        say(&mut h, &p, &strings);
        assert_eq!(heard(&mut h, &mut p)[0]["type"], "ack");
        assert!(!deeper_than(br#"{"a":[1,{"b":"]]]"}]}"#, 3));
        assert!(deeper_than(br#"{"a":[1,{"b":"]]]"}]}"#, 2));
    }

    #[test]
    fn status_routes_need_a_token_with_a_clients_file() {
        let mut h = guarded(with_clients(alice_and_bob()));
        assert_eq!(h.get("/").unwrap().status, 200, "the page itself is public");
        assert_eq!(h.get("/metrics").unwrap().status, 401);
        assert_eq!(h.get("/healthz").unwrap().status, 401);
        let header = bearer("tok-bob");
        let metrics = h
            .get_with("/metrics", &[(header[0].0, &header[0].1)])
            .unwrap();
        assert_eq!(metrics.status, 200);
        let text = String::from_utf8(metrics.body).unwrap();
        assert!(
            text.contains("emberws_auth_refused_total{reason=\"missing_token\"} 2"),
            "{text}"
        );
        let open = guarded(Policy {
            protect_status: false,
            ..with_clients(alice_and_bob())
        })
        .get("/healthz")
        .unwrap()
        .status;
        assert_eq!(open, 200);
    }

    fn req(json: &str) -> Request<'_> {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn topics_are_checked() {
        assert_eq!(
            topic(&req(r#"{"type":"x","topic":"a/+/#"}"#), true),
            Ok("a/+/#")
        );
        assert!(topic(&req(r#"{"type":"x","topic":"a/+"}"#), false).is_err());
        assert!(topic(&req(r#"{"type":"x","topic":"a/#/b"}"#), true).is_err());
        assert!(topic(&req(r#"{"type":"x","topic":"a/b+"}"#), true).is_err());
        assert!(topic(&req(r#"{"type":"x","topic":""}"#), true).is_err());
        assert!(topic(&req(r#"{"type":"x"}"#), true).is_err());
    }

    #[test]
    fn requests_borrow_and_keep_raw_data() {
        let r = req(r#"{"type":"publish","topic":"s/t","data":{"v": 1.50},"id":"x"}"#);
        assert!(matches!(r.topic, Some(Text(Cow::Borrowed("s/t")))));
        let escaped = req(r#"{"type":"publish","topic":"s\/t"}"#);
        assert!(matches!(escaped.topic, Some(Text(Cow::Owned(ref t))) if t == "s/t"));
        assert_eq!(r.data.unwrap().get(), r#"{"v": 1.50}"#);
        assert_eq!(r.id.unwrap().get(), r#""x""#);
    }

    #[test]
    fn null_data_is_present_and_missing_data_is_not() {
        assert_eq!(
            req(r#"{"type":"publish","data":null}"#)
                .data
                .map(RawValue::get),
            Some("null")
        );
        assert!(req(r#"{"type":"publish"}"#).data.is_none());
    }

    #[test]
    fn the_id_of_a_frame_is_its_last_field() {
        let mut out = Vec::new();
        let epoch = Epoch::parse("3fa2c9e1").unwrap();
        message_frame(&mut out, "a/\"id\":\"x", r#"{"id":"no"}"#, epoch, 1042);
        assert_eq!(id_in(std::str::from_utf8(&out).unwrap()), "3fa2c9e1-1042");
        for bad in [
            "",
            "\"}",
            r#"{"type":"message","data":"x"}"#,
            r#"{"a":"b-1"}"#,
        ] {
            assert_eq!(id_in(bad), "", "{bad}");
        }
    }

    #[test]
    fn error_json_escapes_and_carries_the_id() {
        let mut out = Vec::new();
        error_json(&mut out, "a \"b\"", None);
        assert_eq!(out, br#"{"type":"error","reason":"a \"b\""}"#);
        out.clear();
        let id: &RawValue = serde_json::from_str("7").unwrap();
        error_json(&mut out, "not allowed", Some(id));
        assert_eq!(out, br#"{"type":"error","reason":"not allowed","id":7}"#);
    }
}

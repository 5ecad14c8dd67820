//! Server-Sent Events: `GET /events?topic=P&topic=Q[&lastEventID=ID][&token=T]` becomes a
//! `text/event-stream` of the relay's messages, for a page that only listens (the browser's
//! `EventSource`).
//!
//! The request is decided as an upgrade is — the same identification (a token by
//! `Authorization: Bearer` or `?token=`, none needed on loopback), lockouts, 401 and 429 —
//! and then by its query: no `topic` or a bad pattern is 400, more patterns than
//! `max_subscriptions` is 400, patterns of which the client's rules allow none is 403. An
//! accepted stream is a [`Session`] like a WebSocket's; in `on_open` each pattern is
//! subscribed through the same path as a WebSocket `subscribe` ([`Relay::enter`]), with
//! the pattern as the request's id and the last event id as `since`: the rules' grants, the
//! `$` rule, retained values, history and gaps all behave the same. What they replay is sent
//! for all the patterns at once (one cursor through history, one walk of the retained
//! values), so a message that two of them match comes once, and in id order.
//!
//! What the stream carries: every message as an event whose `id:` is the message id and whose
//! data is the WebSocket message frame; the answers a WebSocket `subscribe` with `"id":P`
//! would get (`ack`, with `gap` when a last event id was given; `error` for a pattern the rules
//! refuse) as data-only events, which leave the browser's last event id alone.
//!
//! Query values are percent-decoded; a `+` stays a `+` (MQTT's one-level wildcard, not a
//! space). The `Last-Event-ID` header (what `EventSource` sends when it reconnects) wins over
//! `lastEventID` in the query (for the first connect of a page that kept the id itself). A
//! last event id that is no id of this relay's is answered as one of another epoch: `gap`,
//! and the retained values, rather than a refusal that would stop `EventSource` for good.

use std::borrow::Cow;

use emberws::{Ctx, Decision, HttpRequest, Response};

use super::replay::Replay;
use super::{acl, id, Refusal, Relay, Session, Since};

/// The route.
pub const PATH: &str = "/events";

/// An event stream's request, held in its session from the decision to `on_open`.
#[derive(Debug)]
pub struct Opening {
    /// The `topic` patterns, checked, each once, in the order given.
    patterns: Vec<Box<str>>,
    since: Since,
}

/// The query of `GET /events`, decoded.
#[derive(Debug, Default, PartialEq, Eq)]
struct Query {
    topics: Vec<String>,
    last_event_id: Option<String>,
}

impl Relay {
    /// Decides `GET /events`: who it is, then what it asks for (see the module).
    pub(super) fn event_stream(&mut self, req: &HttpRequest<'_>) -> Decision<Session> {
        let anonymous = self.trusted(req);
        let who = match self.identify(req, anonymous) {
            Ok(who) => who,
            Err(res) => return Decision::Refuse(res),
        };
        let max = self.policy.max_subscriptions;
        let query = match parse_query(req.query().unwrap_or_default(), max) {
            Ok(query) => query,
            Err(reason) => {
                self.counters.events_bad_request += 1;
                return Decision::Refuse(plain(400, reason));
            }
        };
        if query.topics.is_empty() {
            self.counters.events_bad_request += 1;
            return Decision::Refuse(plain(
                400,
                "no topic: GET /events?topic=PATTERN (repeat topic for more)",
            ));
        }
        if !query.topics.iter().any(|t| !who.rules.grant(t).is_empty()) {
            self.counters.events_not_allowed += 1;
            return Decision::Refuse(plain(403, "none of these topics is allowed"));
        }
        let header = req
            .header("Last-Event-ID")
            .map(|v| std::str::from_utf8(v).map(str::trim));
        // `Some(None)`: given, but not text.
        let last = match header {
            Some(Err(_)) => Some(None),
            Some(Ok(id)) if !id.is_empty() => Some(Some(id)),
            _ => query.last_event_id.as_deref().map(Some),
        };
        let since = match last {
            None => Since::Absent,
            Some(text) => match text.and_then(id::parse) {
                Some((epoch, seq)) => Since::At(epoch, seq),
                None => Since::Unreadable,
            },
        };
        let opening = Opening {
            patterns: query.topics.into_iter().map(Into::into).collect(),
            since,
        };
        Decision::Accept(Session {
            who,
            asked: Vec::new(),
            // A stream sends nothing: no rate applies to it.
            limiter: None,
            replay: Some(Box::new(Replay::opening(opening))),
        })
    }

    /// `on_open` of an event stream: subscribes each of its patterns as a WebSocket
    /// `subscribe` with `"id":P` (and `since`) would, answering as that would; then sends
    /// what they replay, for all of them at once: a message two of them match comes once,
    /// in order. Nothing for a WebSocket.
    pub(super) fn open_stream(&mut self, ctx: &mut Ctx<'_>, session: &mut Session) {
        // The replay holds only the opening yet.
        let Some(opening) = session.replay.take().and_then(|mut r| r.opening.take()) else {
            return;
        };
        for pattern in &opening.patterns {
            let id = serde_json::value::to_raw_value(&**pattern).ok();
            let id = id.as_deref();
            if let Err(reason) = self.enter(ctx, session, pattern, opening.since, id, None) {
                self.refuse(ctx, reason, id);
            }
        }
        self.pump(ctx, session);
    }
}

/// The answer to a `/events` request that is not allowed: a status and why, as text.
fn plain(status: u16, why: &'static str) -> Response {
    let mut res = Response::status(status);
    res.content_type = "text/plain; charset=utf-8";
    let mut body = why.as_bytes().to_vec();
    body.push(b'\n');
    res.body = Cow::Owned(body);
    res
}

/// Reads the query: every `topic` (checked as a pattern, each kept once, at most `max`) and
/// `lastEventID`; other keys (`token`, a cache buster) are left alone.
fn parse_query(query: &str, max: usize) -> Result<Query, Refusal> {
    let mut out = Query::default();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match &*decode(key)? {
            "topic" => {
                let topic = decode(value)?;
                acl::check_pattern(&topic)?;
                if !out.topics.iter().any(|t| *t == topic) {
                    if out.topics.len() == max {
                        return Err("more topics than the relay's max_subscriptions");
                    }
                    out.topics.push(topic.into_owned());
                }
            }
            "lastEventID" => out.last_event_id = Some(decode(value)?.into_owned()),
            _ => {}
        }
    }
    Ok(out)
}

/// Percent-decodes a query key or value (a `%` without two hex digits after it stays as it
/// is, as the URL standard has it); `+` is kept, not read as a space. The bytes must be UTF-8.
fn decode(text: &str) -> Result<Cow<'_, str>, Refusal> {
    if !text.contains('%') {
        return Ok(Cow::Borrowed(text));
    }
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let hex = |at: usize| bytes.get(at).and_then(|&h| char::from(h).to_digit(16));
        match (b, hex(i + 1), hex(i + 2)) {
            (b'%', Some(hi), Some(lo)) => {
                out.push((hi * 16 + lo) as u8);
                i += 3;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out)
        .map(Cow::Owned)
        .map_err(|_| "a query value that is not UTF-8 once percent-decoded")
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use emberws::testing::{Event, Frame, Harness, HttpAnswer, Peer, Streamed};
    use emberws::{Config, Message};
    use serde_json::{json, Value};

    use super::super::clients::Clients;
    use super::super::guard::LockoutPolicy;
    use super::super::Policy;
    use super::*;
    use crate::secret::TokenHash;

    fn topics(query: &str) -> Result<Vec<String>, Refusal> {
        parse_query(query, 4).map(|q| q.topics)
    }

    fn relay() -> Harness<Relay> {
        Harness::new(Config::default(), Relay::default())
    }

    fn say(h: &mut Harness<Relay>, peer: &Peer, json: &str) {
        h.send(peer, Message::Text(json));
    }

    fn publish(h: &mut Harness<Relay>, p: &Peer, topic: &str, data: Value, retain: bool) {
        let req = json!({"type": "publish", "topic": topic, "data": data, "retain": retain});
        say(h, p, &req.to_string());
    }

    use super::super::tests::heard;

    /// The events a stream got: (id, data as JSON).
    fn events(h: &mut Harness<Relay>, peer: &mut Peer) -> Vec<(Option<String>, Value)> {
        h.received_events(peer)
            .into_iter()
            .map(|Event { id, data }| (id, serde_json::from_str(&data).unwrap()))
            .collect()
    }

    fn refused(h: &mut Harness<Relay>, target: &str, headers: &[(&str, &str)]) -> HttpAnswer {
        match h.events(target, headers) {
            Ok(_) => panic!("{target}: a stream opened"),
            Err(answer) => answer,
        }
    }

    #[test]
    fn a_stream_gets_retained_then_live_messages_with_the_websocket_ids() {
        let mut h = relay();
        let mut p = h.connect("/").unwrap();
        say(
            &mut h,
            &p,
            r#"{"type":"publish","topic":"s/1","data":{"v": 1},"retain":true}"#,
        );
        let mut ws = h.connect("/").unwrap();
        say(&mut h, &ws, r#"{"type":"subscribe","topic":"s/+"}"#);
        let mut es = h.events("/events?topic=s/%2B", &[]).unwrap();
        let first = h.received_stream(&mut es);
        let Frame::Text(retained) = h.received(&mut ws).remove(0) else {
            panic!("a text frame")
        };
        let id = serde_json::from_str::<Value>(&retained).unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned();
        assert_eq!(
            first,
            [
                Streamed::Retry(2000),
                Streamed::Event(Event {
                    id: None,
                    data: r#"{"type":"ack","id":"s/+"}"#.into()
                }),
                Streamed::Event(Event {
                    id: Some(id),
                    data: retained,
                }),
            ],
            "retry, the ack of its subscribe, the retained value with its id"
        );
        for i in 0..5 {
            publish(&mut h, &p, &format!("s/{i}"), json!(i), false);
        }
        let frames = h.received(&mut ws);
        let got = h.received_events(&mut es);
        assert_eq!(got.len(), 5);
        for (event, frame) in got.iter().zip(&frames) {
            let Frame::Text(frame) = frame else {
                panic!("{frame:?}")
            };
            assert_eq!(event.data, *frame, "the same JSON as the WebSocket frame");
            let v: Value = serde_json::from_str(frame).unwrap();
            assert_eq!(event.id.as_deref(), v["id"].as_str(), "id: the message id");
        }
        assert!(heard(&mut h, &mut p).is_empty());
        assert_eq!(h.stats().event_streams_open, 1);
    }

    /// Found by the `events` fuzz target: each pattern replayed on its own, so a retained
    /// value that two patterns of one stream match came twice.
    #[test]
    fn overlapping_patterns_of_a_stream_get_each_retained_value_once() {
        let mut h = relay();
        let p = h.connect("/").unwrap();
        publish(&mut h, &p, "public/a", json!(1), true);
        publish(&mut h, &p, "public/b", json!(2), true);
        let mut es = h.events("/events?topic=%23&topic=public/a", &[]).unwrap();
        let got = events(&mut h, &mut es);
        let epoch = h.handler().epoch;
        assert_eq!(
            got,
            [
                (None, json!({"type":"ack","id":"#"})),
                (None, json!({"type":"ack","id":"public/a"})),
                (
                    Some(format!("{epoch}-1")),
                    json!({"type":"message","topic":"public/a","data":1,"id":format!("{epoch}-1")})
                ),
                (
                    Some(format!("{epoch}-2")),
                    json!({"type":"message","topic":"public/b","data":2,"id":format!("{epoch}-2")})
                ),
            ]
        );
        publish(&mut h, &p, "public/a", json!(3), false);
        assert_eq!(events(&mut h, &mut es).len(), 1, "a live message once");
    }

    /// Found by the `events` fuzz target: each pattern caught up on its own cursor, so a
    /// stream resuming two overlapping patterns got the messages of the second again, older
    /// after newer.
    #[test]
    fn overlapping_patterns_of_a_stream_resume_in_order_none_twice() {
        let mut h = relay();
        let p = h.connect("/").unwrap();
        for (topic, n) in [
            ("public/a", 1),
            ("public/b", 2),
            ("public/a", 3),
            ("public/b", 4),
        ] {
            publish(&mut h, &p, topic, json!(n), false);
        }
        let since = format!("{}-1", h.handler().epoch);
        let headers = [("Last-Event-ID", since.as_str())];
        for target in [
            "/events?topic=public/%23&topic=public/b",
            "/events?topic=public/b&topic=public/%23",
        ] {
            let mut es = h.events(target, &headers).unwrap();
            let got = events(&mut h, &mut es);
            let ids: Vec<&str> = got.iter().filter_map(|(id, _)| id.as_deref()).collect();
            let epoch = h.handler().epoch;
            let want: Vec<String> = (2..=4).map(|n| format!("{epoch}-{n}")).collect();
            assert_eq!(ids, want, "{target}: in order, each once");
            assert_eq!(got.len(), 2 + 3, "two acks first");
        }
    }

    #[test]
    fn a_data_that_spans_lines_is_one_event_the_page_reads_back() {
        let mut h = relay();
        let p = h.connect("/").unwrap();
        let mut es = h.events("/events?topic=t", &[]).unwrap();
        h.received_stream(&mut es);
        say(
            &mut h,
            &p,
            "{\"type\":\"publish\",\"topic\":\"t\",\"data\":{\r\n\"a\":\n1}}",
        );
        let got = h.received_events(&mut es);
        assert_eq!(got.len(), 1);
        let v: Value = serde_json::from_str(&got[0].data).unwrap();
        assert_eq!(v["data"], json!({"a": 1}));
    }

    #[test]
    fn last_event_id_resumes_from_history_and_the_header_wins_over_the_query() {
        let mut h = relay();
        let p = h.connect("/").unwrap();
        let mut es = h.events("/events?topic=n/%23", &[]).unwrap();
        for i in 0..100 {
            publish(&mut h, &p, "n/x", json!(i), false);
        }
        let got = events(&mut h, &mut es);
        assert_eq!(got.len(), 101, "the ack and 100 messages");
        let last = got[100].0.clone().unwrap();
        h.disconnect(&es);
        for i in 100..150 {
            publish(&mut h, &p, "n/x", json!(i), false);
        }
        let datas = |got: &[(Option<String>, Value)]| -> Vec<Value> {
            got.iter().skip(1).map(|(_, m)| m["data"].clone()).collect()
        };
        let want: Vec<Value> = (100..150).map(|i| json!(i)).collect();
        // The header, as EventSource sends it on a reconnect.
        let mut a = h
            .events("/events?topic=n/%23", &[("Last-Event-ID", &last)])
            .unwrap();
        let got = events(&mut h, &mut a);
        assert_eq!(got[0], (None, json!({"type":"ack","id":"n/#","gap":false})));
        assert_eq!(datas(&got), want, "exactly the 50 missed, in order");
        // The query, for a first connect; the header wins over it.
        let target = format!("/events?topic=n/%23&lastEventID={last}");
        let mut b = h.events(&target, &[]).unwrap();
        assert_eq!(datas(&events(&mut h, &mut b)), want);
        let newest = format!("{}-150", h.handler().epoch);
        let mut c = h.events(&target, &[("Last-Event-ID", &newest)]).unwrap();
        let got = events(&mut h, &mut c);
        assert_eq!(got, [(None, json!({"type":"ack","id":"n/#","gap":false}))]);
        publish(&mut h, &p, "n/x", json!("live"), false);
        for s in [&mut a, &mut b, &mut c] {
            let got = events(&mut h, s);
            assert_eq!(got.len(), 1);
            assert_eq!(got[0].1["data"], "live");
            assert_eq!(got[0].0, Some(format!("{}-151", h.handler().epoch)));
        }
    }

    #[test]
    fn a_gap_and_an_unreadable_last_event_id_are_data_only_acks_then_what_is_held() {
        let policy = Policy {
            history_messages: 10,
            ..Policy::default()
        };
        let mut h = Harness::new(Config::default(), Relay::new(policy));
        let p = h.connect("/").unwrap();
        publish(&mut h, &p, "g", json!("kept"), true);
        let since = format!("{}-1", h.handler().epoch);
        for i in 0..30 {
            publish(&mut h, &p, "g", json!(i), false);
        }
        let mut a = h
            .events("/events?topic=g", &[("Last-Event-ID", &since)])
            .unwrap();
        let got = events(&mut h, &mut a);
        assert_eq!(got[0], (None, json!({"type":"ack","id":"g","gap":true})));
        let data: Vec<Value> = got[1..].iter().map(|(_, m)| m["data"].clone()).collect();
        let want: Vec<Value> = (20..30).map(|i| json!(i)).collect();
        assert_eq!(data, want, "what history holds");
        // Not an id of this relay's: a gap, and the retained value as for a first connect.
        for bad in ["nonsense", "0badcafe-0"] {
            let mut b = h
                .events("/events?topic=g", &[("Last-Event-ID", bad)])
                .unwrap();
            let got = events(&mut h, &mut b);
            assert_eq!(got[0], (None, json!({"type":"ack","id":"g","gap":true})));
            assert_eq!(got[1].1["data"], "kept", "{bad}");
            assert!(got[1].0.is_some());
            assert_eq!(got.len(), 2);
        }
    }

    #[test]
    fn keep_alive_comments_come_after_15_s_of_quiet() {
        let mut h = relay();
        let p = h.connect("/").unwrap();
        let mut es = h.events("/events?topic=k", &[]).unwrap();
        assert_eq!(
            h.received_stream(&mut es),
            [
                Streamed::Retry(2000),
                Streamed::Event(Event {
                    id: None,
                    data: r#"{"type":"ack","id":"k"}"#.into()
                })
            ]
        );
        h.advance(Duration::from_secs(14));
        assert!(h.received_stream(&mut es).is_empty());
        h.advance(Duration::from_secs(1));
        assert_eq!(
            h.received_stream(&mut es),
            [Streamed::Comment(" keep-alive".into())]
        );
        // A message resets the quiet time.
        h.advance(Duration::from_secs(10));
        publish(&mut h, &p, "k", json!(1), false);
        assert_eq!(h.received_events(&mut es).len(), 1);
        h.advance(Duration::from_secs(10));
        assert!(h.received_stream(&mut es).is_empty());
        h.advance(Duration::from_secs(5));
        assert_eq!(
            h.received_stream(&mut es),
            [Streamed::Comment(" keep-alive".into())]
        );
        assert_eq!(
            h.conn_state(&es),
            emberws::conn::State::Open,
            "no pong awaited"
        );
        assert_eq!(h.held_bytes(&es), 0);
    }

    #[test]
    fn bad_requests_get_400_head_405_and_other_paths_stay_http() {
        let mut h = relay();
        let none = refused(&mut h, "/events", &[]);
        assert_eq!(none.status, 400);
        assert!(String::from_utf8_lossy(&none.body).starts_with("no topic"));
        assert_eq!(refused(&mut h, "/events?lastEventID=x", &[]).status, 400);
        let bad = refused(&mut h, "/events?topic=a/%23/b", &[]);
        assert_eq!(bad.status, 400);
        assert_eq!(bad.body, b"# must be the last topic level\n");
        let many: String = (0..65).map(|i| format!("topic=t/{i}&")).collect();
        assert_eq!(refused(&mut h, &format!("/events?{many}"), &[]).status, 400);
        let most: String = (0..64).map(|i| format!("topic=t/{i}&")).collect();
        assert!(
            h.events(&format!("/events?{most}"), &[]).is_ok(),
            "64 is the cap"
        );
        assert_eq!(h.handler().counters.events_bad_request, 4);
        let mut head = h
            .open_raw(b"HEAD /events?topic=a HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let answer = h.answer(&mut head).unwrap();
        assert_eq!(answer.status, 405);
        assert!(answer.headers.contains(&("Allow".into(), "GET".into())));
        assert_eq!(h.get("/eventsx?topic=a").unwrap().status, 404);
        assert_eq!(h.get("/").unwrap().status, 200, "the dashboard");
    }

    fn clients() -> Clients {
        let entry = |name: &str, token: &str, subscribe: &str| {
            format!(
                "[{name}]\ntoken_sha256 = \"{}\"\npublish = []\nsubscribe = [{subscribe}]\n",
                TokenHash::of(token).to_hex()
            )
        };
        let src = entry("alice", "tok-alice", r#""devices/{name}/#", "public/#""#)
            + &entry("bob", "tok-bob", r##""#""##);
        Clients::parse(&src, "clients.toml").unwrap()
    }

    /// A relay on a public listener, where a token is needed.
    fn guarded() -> Harness<Relay> {
        let policy = Policy {
            clients: Some(clients()),
            lockout: LockoutPolicy {
                failures: 2,
                first: Duration::from_secs(2),
                max: Duration::from_secs(60),
            },
            ..Policy::default()
        };
        let mut h = Harness::new(Config::default(), Relay::new(policy));
        h.set_local_addr("0.0.0.0:9001".parse().unwrap());
        h
    }

    #[test]
    fn tokens_lockouts_and_rules_as_for_an_upgrade() {
        let mut h = guarded();
        let none = refused(&mut h, "/events?topic=public/%23", &[]);
        assert_eq!(none.status, 401);
        assert!(none
            .headers
            .iter()
            .any(|(n, v)| n == "WWW-Authenticate" && v.starts_with("Bearer")));
        let wrong = refused(&mut h, "/events?topic=public/%23&token=nope", &[]);
        assert_eq!(wrong.status, 401);
        // 401 before 400: nothing about the query is told to a stranger.
        assert_eq!(refused(&mut h, "/events", &[]).status, 401);
        let mut by_query = h
            .events("/events?topic=public/%23&token=tok-alice", &[])
            .unwrap();
        let auth = [("Authorization", "Bearer tok-alice")];
        let mut by_header = h.events("/events?topic=%23", &auth).unwrap();
        // alice may read devices/alice/# and public/#: `#` is granted as exactly those.
        let mut bob = h
            .events("/events?topic=%23", &[("Authorization", "Bearer tok-bob")])
            .unwrap();
        let mut pb = h.connect("/?token=tok-bob").unwrap();
        assert_eq!(
            h.upgrade("/", &[]).err().map(|a| a.status),
            Some(401),
            "as for an upgrade"
        );
        h.received_stream(&mut by_query);
        h.received_stream(&mut by_header);
        h.received_stream(&mut bob);
        let _ = heard(&mut h, &mut pb);
        // The bridge-free way to publish anywhere here: the program's own loop.
        for t in ["public/a", "devices/alice/x", "devices/bob/y"] {
            Relay::publish_from_loop(h.server_mut(), t, "1", false)
                .1
                .unwrap();
        }
        let topics = |got: Vec<(Option<String>, Value)>| -> Vec<String> {
            got.into_iter()
                .map(|(_, m)| m["topic"].as_str().unwrap().to_owned())
                .collect()
        };
        assert_eq!(topics(events(&mut h, &mut by_query)), ["public/a"]);
        assert_eq!(
            topics(events(&mut h, &mut by_header)),
            ["public/a", "devices/alice/x"]
        );
        assert_eq!(
            topics(events(&mut h, &mut bob)),
            ["public/a", "devices/alice/x", "devices/bob/y"]
        );
        // 403 when nothing asked for is allowed; a pattern refused beside an allowed one is
        // an error event, as a WebSocket subscribe's answer.
        let refused_all = refused(&mut h, "/events?topic=devices/bob/%23", &auth);
        assert_eq!(refused_all.status, 403);
        assert_eq!(h.handler().counters.events_not_allowed, 1);
        let mut mixed = h
            .events("/events?topic=devices/bob/%23&topic=public/%23", &auth)
            .unwrap();
        assert_eq!(
            events(&mut h, &mut mixed),
            [
                (
                    None,
                    json!({"type":"error","reason":"not allowed","id":"devices/bob/#"})
                ),
                (None, json!({"type":"ack","id":"public/#"}))
            ]
        );
        // Wrong tokens lock the address out for streams too: 429 even with the right one.
        refused(&mut h, "/events?topic=public/%23&token=nope2", &[]);
        refused(&mut h, "/events?topic=public/%23&token=nope3", &[]);
        let locked = refused(&mut h, "/events?topic=public/%23", &auth);
        assert_eq!(locked.status, 429);
        assert!(locked.headers.iter().any(|(n, _)| n == "Retry-After"));
    }

    #[test]
    fn a_stream_of_a_removed_client_ends_on_reload() {
        let mut h = guarded();
        let auth = [("Authorization", "Bearer tok-bob")];
        let mut bob = h.events("/events?topic=%23", &auth).unwrap();
        h.received_stream(&mut bob);
        let none = Clients::parse("", "clients.toml").unwrap();
        h.handler_mut().set_clients(none);
        h.server_mut()
            .visit_open(|relay, ctx, session| relay.reapply(ctx, session));
        h.received_stream(&mut bob);
        assert!(bob.is_shut(), "the stream ended");
        assert_eq!(h.handler().counters.closed_removed, 1);
        h.disconnect(&bob);
        assert_eq!(h.stats().event_streams_open, 0);
    }

    #[test]
    fn a_hash_stream_gets_no_dollar_topics_and_a_sys_one_does() {
        let mut h = relay();
        let mut all = h.events("/events?topic=%23", &[]).unwrap();
        let mut sys = h.events("/events?topic=$SYS/%23", &[]).unwrap();
        h.received_stream(&mut all);
        h.received_stream(&mut sys);
        Relay::publish_from_loop(h.server_mut(), "$SYS/uptime", "3", true)
            .1
            .unwrap();
        assert!(events(&mut h, &mut all).is_empty());
        let got = events(&mut h, &mut sys);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].1["topic"], "$SYS/uptime");
    }

    #[test]
    #[cfg(feature = "redis")]
    fn a_message_from_another_relay_reaches_a_stream_with_this_relays_id() {
        let mut h = relay();
        let mut es = h.events("/events?topic=b/%23", &[]).unwrap();
        let mut ws = h.connect("/").unwrap();
        say(&mut h, &ws, r#"{"type":"subscribe","topic":"b/#"}"#);
        h.received_stream(&mut es);
        let frame = r#"{"type":"message","topic":"b/x","data":[1],"id":"0badcafe-7"}"#;
        assert!(Relay::import(h.server_mut(), "b/x", frame, false));
        let got = h.received_events(&mut es);
        let Frame::Text(local) = h.received(&mut ws).remove(0) else {
            panic!("a text frame")
        };
        let id = format!("{}-1", h.handler().epoch);
        assert!(local.ends_with(&format!(r#""id":"{id}"}}"#)), "{local}");
        assert_eq!(
            got,
            [Event {
                id: Some(id),
                data: local
            }]
        );
    }

    #[test]
    fn a_large_replay_to_a_slow_stream_is_paced_within_backpressure() {
        let cfg = Config::default().max_backpressure(64 * 1024);
        let mut h = Harness::new(cfg, Relay::default());
        let p = h.connect("/").unwrap();
        let value = "v".repeat(1000);
        for i in 0..300 {
            publish(&mut h, &p, &format!("r/{i:03}"), json!(value), true);
        }
        let mut es = h.events("/events?topic=r/%23", &[]).unwrap();
        h.set_window(&es, 4096);
        let mut n = 0;
        for _ in 0..10_000 {
            assert!(h.buffered_amount(&es) <= 64 * 1024);
            let got = h.received_events(&mut es);
            n += got.iter().filter(|e| e.id.is_some()).count();
            if got.is_empty() && h.state(&es).is_some_and(|s| s.replay.is_none()) {
                break;
            }
        }
        assert_eq!(h.stats().slow_closes, 0);
        assert_eq!(n, 300, "every retained value, none dropped");
    }

    #[test]
    fn the_query_is_percent_decoded_and_plus_stays_a_wildcard() {
        assert_eq!(
            topics("topic=sensors/+/temp&topic=a%2Fb&topic=%24SYS%2F%23"),
            Ok(vec![
                "sensors/+/temp".to_owned(),
                "a/b".to_owned(),
                "$SYS/#".to_owned()
            ])
        );
        assert_eq!(topics("topic=caf%C3%A9"), Ok(vec!["café".to_owned()]));
        assert_eq!(
            topics("topic=100%"),
            Ok(vec!["100%".to_owned()]),
            "a lone %"
        );
        assert_eq!(topics("topic=a%zz"), Ok(vec!["a%zz".to_owned()]));
        assert!(topics("topic=%FF").is_err(), "not UTF-8");
        assert_eq!(
            topics("topic=a&topic=a&x=1&&token=t"),
            Ok(vec!["a".to_owned()])
        );
        assert_eq!(topics(""), Ok(vec![]));
        assert_eq!(topics("topics=a"), Ok(vec![]), "another key");
        let q = parse_query("topic=a&lastEventID=0badcafe-7&%74opic=b", 4).unwrap();
        assert_eq!(q.last_event_id.as_deref(), Some("0badcafe-7"));
        assert_eq!(q.topics, ["a", "b"], "keys are decoded too");
    }

    #[test]
    fn bad_patterns_and_too_many_are_refused() {
        for bad in ["topic=", "topic=a/%23/b", "topic=a%23", "topic=a/b+"] {
            assert!(topics(bad).is_err(), "{bad}");
        }
        let long = format!("topic={}", "x".repeat(257));
        assert!(topics(&long).is_err());
        assert!(topics("topic=a&topic=b&topic=c&topic=d").is_ok());
        assert_eq!(
            topics("topic=a&topic=b&topic=c&topic=d&topic=e"),
            Err("more topics than the relay's max_subscriptions")
        );
    }
}

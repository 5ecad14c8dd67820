//! The relay: a JSON pub/sub protocol on top of [`Handler`] and [`Ctx`], plus the dashboard
//! page, `/healthz` and `/metrics`.
//!
//! Requests (text messages): `subscribe`, `unsubscribe`, `publish` (optional `id` → `ack`
//! with `delivered`; optional `retain`), `ping`. Anything malformed gets an `error` and the
//! connection stays open.

pub mod acl;

use std::borrow::Cow;
use std::collections::HashMap;
use std::io::Write as _;

use emberws::{Ctx, Decision, Handler, HttpRequest, Message, Response, Stats};
use serde::Deserialize;
use serde_json::value::RawValue;

/// The built-in dashboard, served at `GET /`.
const DASHBOARD: &str = include_str!("../dashboard.html");

/// Topic names and patterns longer than this are refused.
pub const MAX_TOPIC_LEN: usize = 256;
/// Retained messages, all topics together, hold at most this many bytes.
pub const MAX_RETAINED_BYTES: usize = 1 << 20;

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

/// The relay's state: retained messages and a reused output buffer.
#[derive(Default)]
pub struct Relay {
    /// Topic → the `message` frame text last published with `retain`.
    retained: HashMap<String, String>,
    retained_bytes: usize,
    out: Vec<u8>,
}

/// Why a request was refused; the reason goes back in an `error` message.
type Refusal = &'static str;

impl Relay {
    fn handle(&mut self, ctx: &mut Ctx<'_>, text: &str) -> Result<(), Refusal> {
        let req: Request<'_> = serde_json::from_str(text).map_err(|e| {
            if e.is_syntax() || e.is_eof() {
                "invalid JSON"
            } else {
                "invalid request: needs a string \"type\" and well-typed fields"
            }
        })?;
        match &*req.kind {
            "subscribe" => {
                let pattern = topic(&req, true)?;
                if ctx.subscriptions() >= ctx.config().max_subscriptions {
                    return Err("too many subscriptions");
                }
                ctx.subscribe(pattern);
                self.ack(ctx, req.id, None);
                for (t, frame) in &self.retained {
                    if matches(pattern, t) {
                        ctx.send(Message::Text(frame));
                    }
                }
                Ok(())
            }
            "unsubscribe" => {
                let pattern = topic(&req, true)?;
                ctx.unsubscribe(pattern);
                self.ack(ctx, req.id, None);
                Ok(())
            }
            "publish" => {
                let name = topic(&req, false)?;
                let data = req.data.ok_or("publish needs \"data\"")?;
                self.out.clear();
                self.out
                    .extend_from_slice(b"{\"type\":\"message\",\"topic\":");
                json_string(&mut self.out, name);
                self.out.extend_from_slice(b",\"data\":");
                self.out.extend_from_slice(data.get().as_bytes());
                self.out.push(b'}');
                let frame = std::str::from_utf8(&self.out).map_err(|_| "invalid data")?;
                let delivered = ctx.publish(name, Message::Text(frame));
                let retained = if req.retain {
                    let frame = std::mem::take(&mut self.out);
                    let result = self.retain(
                        name,
                        data.get() == "null",
                        std::str::from_utf8(&frame).unwrap_or_default(),
                    );
                    self.out = frame;
                    result
                } else {
                    Ok(())
                };
                self.ack(ctx, req.id, Some(delivered.delivered()));
                retained
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

    fn retain(&mut self, topic: &str, clear: bool, frame: &str) -> Result<(), Refusal> {
        let old_cost = self
            .retained
            .get(topic)
            .map_or(0, |f| f.len() + topic.len());
        if clear {
            self.retained.remove(topic);
            self.retained_bytes -= old_cost;
            return Ok(());
        }
        let cost = frame.len() + topic.len();
        if self.retained_bytes - old_cost + cost > MAX_RETAINED_BYTES {
            return Err("retained store full: the message was delivered but not retained");
        }
        self.retained_bytes = self.retained_bytes - old_cost + cost;
        match self.retained.get_mut(topic) {
            // A sensor re-publishing its retained reading reuses the stored string.
            Some(stored) => {
                stored.clear();
                stored.push_str(frame);
            }
            None => {
                self.retained.insert(topic.to_owned(), frame.to_owned());
            }
        }
        Ok(())
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
}

fn send_out(ctx: &mut Ctx<'_>, out: &[u8]) {
    if let Ok(text) = std::str::from_utf8(out) {
        ctx.send(Message::Text(text));
    }
}

/// The request's topic, checked: a pattern may hold `+` and `#` levels, a publish topic not.
fn topic<'r>(req: &'r Request<'_>, pattern: bool) -> Result<&'r str, Refusal> {
    let t = req
        .topic
        .as_ref()
        .map(|t| &*t.0)
        .ok_or("needs a string \"topic\"")?;
    if t.is_empty() || t.len() > MAX_TOPIC_LEN {
        return Err("topic must be 1 to 256 bytes");
    }
    let levels = t.split('/').count();
    for (i, level) in t.split('/').enumerate() {
        let wild = level == "+" || level == "#";
        if !pattern && (level.contains('+') || level.contains('#')) {
            return Err("a publish topic cannot contain + or #");
        }
        if pattern && !wild && (level.contains('+') || level.contains('#')) {
            return Err("+ and # must stand alone in a topic level");
        }
        if level == "#" && i + 1 != levels {
            return Err("# must be the last topic level");
        }
    }
    Ok(t)
}

/// MQTT matching of a pattern against a topic.
fn matches(pattern: &str, topic: &str) -> bool {
    emberws::topic_matches(pattern, topic)
}

/// Appends `s` as a JSON string.
fn json_string(out: &mut Vec<u8>, s: &str) {
    let _ = serde_json::to_writer(&mut *out, s);
}

fn error_text(reason: &str) -> String {
    let mut out = Vec::with_capacity(reason.len() + 32);
    out.extend_from_slice(b"{\"type\":\"error\",\"reason\":");
    json_string(&mut out, reason);
    out.push(b'}');
    String::from_utf8(out).unwrap_or_default()
}

impl Handler for Relay {
    type State = ();

    fn on_upgrade(&mut self, _req: &HttpRequest<'_>) -> Decision<()> {
        Decision::Accept(())
    }

    fn on_request(&mut self, req: &HttpRequest<'_>, stats: &Stats) -> Response {
        if req.method() != "GET" && req.method() != "HEAD" {
            let mut res = Response::status(405);
            res.headers.push(("Allow", "GET".to_owned()));
            return res;
        }
        match req.path() {
            "/" | "/index.html" => Response::ok("text/html; charset=utf-8", DASHBOARD.as_bytes()),
            "/healthz" => Response::ok("application/json", stats.to_json().into_bytes()),
            "/metrics" => Response::ok(
                "text/plain; version=0.0.4",
                stats.to_prometheus().into_bytes(),
            ),
            _ => Response::status(404),
        }
    }

    fn on_message(&mut self, ctx: &mut Ctx<'_>, _: &mut (), msg: Message<'_>) {
        let result = match msg {
            Message::Text(text) => self.handle(ctx, text),
            Message::Binary(_) => Err("binary messages are not part of the relay protocol"),
        };
        if let Err(reason) = result {
            ctx.send(Message::Text(&error_text(reason)));
        }
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

    fn say(h: &mut Harness<Relay>, peer: &Peer, json: &str) {
        h.send(peer, Message::Text(json));
    }

    /// Every JSON message the relay sent to `peer` since the last look.
    fn heard(h: &mut Harness<Relay>, peer: &mut Peer) -> Vec<Value> {
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
        let expect = r#"{"type":"message","topic":"sensors/k/temp","data":{"c": 21.50}}"#;
        // The data goes through as the publisher wrote it, byte for byte.
        assert_eq!(h.received(&mut a), [Frame::Text(expect.into())]);
        assert_eq!(h.received(&mut b), [Frame::Text(expect.into())]);
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
    fn error_text_escapes() {
        assert_eq!(
            error_text("a \"b\""),
            r#"{"type":"error","reason":"a \"b\""}"#
        );
    }
}

//! `relay`: the relay's JSON protocol handler (the binary's own `relay` module, included by
//! path) on the real server through `emberws::testing::Harness`, behind a clients file with
//! several clients, rules with `+`, `#` and `{name}`, and rate limits.
//!
//! Input: [`HEADER`] bytes (anonymous access, rates, the retained cap, the JSON depth), then
//! requests, each an op byte and a message up to the next `\n`. The op byte picks the peer
//! (bits 0-1), moves the clock (bits 2-4, in 150 ms steps), sends binary instead of text
//! (bit 5), and reloads the clients file before sending (bit 6: the second file, in which a
//! client is gone and another one's rules changed; bit 7 with bit 6: back to the first).

use std::borrow::Cow;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use emberws::testing::{Frame, Harness, Peer};
use emberws::{topic_matches, Config, Message};

use crate::relay::acl::Rules;
use crate::relay::clients::Clients;
use crate::relay::guard::Rates;
use crate::relay::{Policy, Relay};

/// A reply or a request, read as the relay reads requests: a `type`, perhaps a `topic`,
/// perhaps `data` (kept raw: JSON allows numbers such as `1e400` that `serde_json::Value`
/// refuses, and the relay passes a publisher's data on as it came).
#[derive(serde::Deserialize)]
struct Shape<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow, default)]
    topic: Option<Cow<'a, str>>,
    /// `Some` whenever present, `null` included.
    #[serde(borrow, default, deserialize_with = "present")]
    data: Option<&'a serde_json::value::RawValue>,
}

fn present<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<&'de serde_json::value::RawValue>, D::Error> {
    serde::Deserialize::deserialize(d).map(Some)
}

const HEADER: usize = 2;

/// The clients and what each may read, as the files below say (`{name}` written out): the
/// reference the replies are checked against, kept apart from the relay's own compiled rules.
pub(crate) struct Who {
    pub(crate) name: &'static str,
    pub(crate) token: &'static str,
    /// Subscribe rules under the first file and under the second (`None`: removed).
    pub(crate) reads: [Option<&'static [&'static str]>; 2],
}

pub(crate) const WHO: [Who; 4] = [
    Who {
        name: "alice",
        token: "tok-alice",
        reads: [
            Some(&["devices/alice/#", "public/#"]),
            Some(&["devices/alice/#"]),
        ],
    },
    Who {
        name: "bob",
        token: "tok-bob",
        reads: [Some(&["shared/+/in", "devices/+/status"]), None],
    },
    Who {
        name: "carol.x",
        token: "tok-carol",
        reads: [
            Some(&["+/carol.x", "alerts", "a/+/c/#"]),
            Some(&["+/carol.x"]),
        ],
    },
    // The anonymous peer (no token), where anonymous access is on.
    Who {
        name: "",
        token: "",
        reads: [Some(&["public/#"]), Some(&["public/#"])],
    },
];

/// Reads everything: the observer that collects the retained values at the end.
pub(crate) const ROOT_TOKEN: &str = "tok-root";

fn clients_file(second: bool) -> String {
    let hash = |t: &str| crate::secret::TokenHash::of(t).to_hex();
    let mut s = String::new();
    s.push_str(&format!(
        "[alice]\ntoken_sha256 = \"{}\"\npublish = [\"devices/{{name}}/#\", \"public/+\"]\n",
        hash("tok-alice")
    ));
    s.push_str(if second {
        "subscribe = [\"devices/{name}/#\"]\n"
    } else {
        "subscribe = [\"devices/{name}/#\", \"public/#\"]\n"
    });
    if !second {
        s.push_str(&format!(
            "[bob]\ntoken_sha256 = \"{}\"\npublish = [\"public/#\", \"shared/+/in\", \"devices/+/status\"]\n\
             subscribe = [\"shared/+/in\", \"devices/+/status\"]\n",
            hash("tok-bob")
        ));
    }
    s.push_str(&format!(
        "[\"carol.x\"]\ntoken_sha256 = \"{}\"\npublish = [\"#\"]\nsubscribe = {}\n",
        hash("tok-carol"),
        if second {
            "[\"+/{name}\"]"
        } else {
            "[\"+/{name}\", \"alerts\", \"a/+/c/#\"]"
        }
    ));
    s.push_str(&format!(
        "[root]\ntoken_sha256 = \"{}\"\nsubscribe = [\"#\"]\n",
        hash(ROOT_TOKEN)
    ));
    s
}

/// The two clients files, written once per process.
fn files() -> &'static [PathBuf; 2] {
    static FILES: OnceLock<[PathBuf; 2]> = OnceLock::new();
    FILES.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("emberws-fuzz-relay-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        [false, true].map(|second| {
            let path = dir.join(if second {
                "clients2.toml"
            } else {
                "clients.toml"
            });
            std::fs::write(&path, clients_file(second)).expect("a temporary clients file");
            path
        })
    })
}

pub(crate) fn load(second: bool) -> Clients {
    Clients::load(&files()[usize::from(second)]).expect("the clients file parses")
}

fn policy(h: &[u8]) -> (Policy, usize) {
    let rates_on = h[0] & 2 != 0;
    let max_retained = [0, 64, 300, 4096][usize::from(h[0] >> 2 & 3)];
    let policy = Policy {
        clients: Some(load(false)),
        anonymous: Rules::compile(None, &["public/anon".into()], &["public/#".into()])
            .expect("anonymous rules"),
        allow_anonymous: h[0] & 1 != 0,
        rates: Rates {
            publishes: if rates_on { 4.0 } else { 0.0 },
            publish_burst: 3.0,
            bytes: if rates_on { 300.0 } else { 0.0 },
            bytes_burst: 600.0,
            strikes: u32::from(h[1] & 7),
        },
        rate_loopback: true,
        max_json_depth: [1, 3, 8, 64][usize::from(h[0] >> 4 & 3)],
        max_retained_bytes: max_retained,
        ..Policy::default()
    };
    (policy, max_retained)
}

/// One peer and what the checks know of it.
struct Slot {
    peer: Option<Peer>,
    who: usize,
    /// Patterns it asked for (a message must match one of them and its rules).
    asked: Vec<String>,
    closed: bool,
}

/// Checks every frame a peer received: JSON text with a known `type`; a `message` only on
/// a topic its rules (under the clients file in force) and its own requests allow; nothing
/// after a close, and only 1008 as the relay's own close code.
fn check(h: &mut Harness<Relay>, s: &mut Slot, file: usize) {
    let Some(peer) = s.peer.as_mut() else { return };
    let reads = WHO[s.who].reads[file].unwrap_or(&[]);
    for frame in h.received(peer) {
        assert!(!s.closed, "a frame after the close frame: {frame:?}");
        let text = match frame {
            Frame::Text(t) => t,
            Frame::Close(code, _) => {
                assert!(matches!(code, Some(1000 | 1008 | 1009) | None), "{code:?}");
                s.closed = true;
                continue;
            }
            Frame::Ping(_) | Frame::Pong(_) => continue,
            Frame::Binary(b) => panic!("a binary reply: {b:?}"),
        };
        let v: Shape<'_> =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("not a reply ({e}): {text}"));
        let kind = &*v.kind;
        assert!(
            matches!(kind, "ack" | "message" | "error" | "pong"),
            "type {kind:?}: {text}"
        );
        if kind == "message" {
            let topic = v.topic.as_deref().expect("a message has a topic");
            assert!(
                reads.iter().any(|r| topic_matches(r, topic)),
                "{} received {topic}, rules {reads:?}",
                WHO[s.who].name
            );
            assert!(
                s.asked.iter().any(|p| topic_matches(p, topic)),
                "{} received {topic}, never asked for it (asked {:?})",
                WHO[s.who].name,
                s.asked
            );
            assert!(v.data.is_some(), "a message without data: {text}");
        }
    }
}

/// The peer connects: a client by its token, or anonymously; `None` if refused (401, or
/// anonymous access off), which is then checked to be the only possible reason.
fn connect(h: &mut Harness<Relay>, who: usize, anonymous: bool) -> Option<Peer> {
    let w = &WHO[who];
    let target = if w.token.is_empty() {
        "/".to_owned()
    } else {
        format!("/?token={}", w.token)
    };
    match h.connect(&target) {
        Ok(p) => Some(p),
        Err(status) => {
            assert!(
                status == 401 && w.token.is_empty() && !anonymous,
                "{} refused with {status}",
                w.name
            );
            None
        }
    }
}

/// Never panics; every reply is JSON with a `type` of ack, message, error or pong; a peer
/// receives a message only on a topic its rules and its own subscriptions allow (after a
/// reload: its new rules, and nothing at all once removed); the relay closes only with 1008;
/// and the retained values a reader of every topic gets stay within the cap.
pub fn relay(data: &[u8]) {
    let Some((h, mut rest)) = data.split_at_checked(HEADER) else {
        return;
    };
    let (policy, max_retained) = policy(h);
    let anonymous = policy.allow_anonymous;
    let cfg = Config::default()
        .max_message_size(4096)
        .max_subscriptions(8)
        .max_backpressure(16 * 1024)
        .ping_interval(None);
    let mut harness = Harness::new(cfg, Relay::new(policy));
    harness.set_local_addr("0.0.0.0:9001".parse().expect("an address"));
    let h = &mut harness;
    let mut slots: Vec<Slot> = (0..WHO.len())
        .map(|who| Slot {
            peer: connect(h, who, anonymous),
            who,
            asked: Vec::new(),
            closed: false,
        })
        .collect();
    let mut file = 0;
    while let Some((&op, tail)) = rest.split_first() {
        let end = tail.iter().position(|&b| b == b'\n').unwrap_or(tail.len());
        let (msg, after) = tail.split_at(end);
        rest = after.get(1..).unwrap_or_default();
        if op & 0x40 != 0 {
            let second = op & 0x80 == 0;
            file = usize::from(second);
            h.handler_mut().set_clients(load(second));
            h.server_mut()
                .visit_open(|relay, ctx, session| relay.reapply(ctx, session));
            h.turn();
            for s in &mut slots {
                if WHO[s.who].reads[file].is_none() {
                    // Removed: closed with 1008, and nothing more for it.
                    check(h, s, file);
                    s.closed = s.closed || s.peer.is_some();
                }
            }
        }
        let step = u64::from(op >> 2 & 7) * 150;
        if step > 0 {
            h.advance(Duration::from_millis(step));
        }
        let s = &mut slots[usize::from(op & 3)];
        if let Some(peer) = &s.peer {
            let asked = std::str::from_utf8(msg)
                .ok()
                .and_then(|text| serde_json::from_str::<Shape<'_>>(text).ok())
                .filter(|v| v.kind == "subscribe")
                .and_then(|v| v.topic);
            if let Some(t) = asked {
                s.asked.push(t.into_owned());
            }
            if op & 0x20 != 0 {
                h.send(peer, Message::Binary(msg));
            } else {
                match std::str::from_utf8(msg) {
                    Ok(text) => h.send(peer, Message::Text(text)),
                    Err(_) => h.send(peer, Message::Binary(msg)),
                }
            }
        }
        for s in &mut slots {
            check(h, s, file);
        }
    }
    // A reader of every topic gets every retained value, each costing its frame and topic.
    let mut root = h
        .connect(&format!("/?token={ROOT_TOKEN}"))
        .expect("root connects");
    h.send(
        &root,
        Message::Text(r##"{"type":"subscribe","topic":"#"}"##),
    );
    let mut held = 0;
    for frame in h.received(&mut root) {
        let Frame::Text(text) = frame else {
            panic!("root got {frame:?}")
        };
        let v: Shape<'_> = serde_json::from_str(&text).expect("a reply");
        if v.kind == "message" {
            held += text.len() + v.topic.as_deref().map_or(0, str::len);
        }
    }
    assert!(
        held <= max_retained,
        "{held} B retained, cap {max_retained}"
    );
}

//! `state`: the relay's state-file loader (`relay::state::parse`, what `--state FILE` runs on
//! the file's text at start) on arbitrary text, under limits picked by the first byte.

use std::collections::{BTreeMap, HashMap};

use emberws::testing::{Frame, Harness};
use emberws::{Config, Message};
use serde_json::value::RawValue;

use crate::relay::history::{SLOT_BYTES, TOPIC_BYTES};
use crate::relay::state::{self, Loaded};
use crate::relay::{id, Policy, Relay, RETAINED_ENTRY_BYTES};

/// A state file as this target reads it back: what the relay wrote.
#[derive(serde::Deserialize)]
struct File {
    epoch: String,
    seq: u64,
    clean: bool,
    retained: Vec<Entry>,
    history: Vec<Entry>,
}

#[derive(serde::Deserialize)]
struct Entry {
    seq: u64,
    topic: String,
    data: Box<RawValue>,
}

/// The limits byte 0 picks: history per topic and in all, the retained cap, the JSON depth
/// and the largest frame, from none or tiny to the defaults.
fn policy(h: u8) -> Policy {
    Policy {
        history_messages: [0, 1, 3, 64][usize::from(h & 3)],
        history_bytes: [100, 1000, 8192, 256 * 1024][usize::from(h >> 2 & 3)],
        max_retained_bytes: [0, 300, 2000, 1 << 20][usize::from(h >> 4 & 3)],
        max_json_depth: if h & 0x40 == 0 { 2 } else { 64 },
        max_frame: if h & 0x80 == 0 {
            200
        } else {
            Config::default().send_limit()
        },
        ..Policy::default()
    }
}

/// The frame the relay builds for a message (`relay::message_frame`).
fn frame(topic: &str, data: &str, epoch: &str, seq: u64) -> String {
    let topic = serde_json::to_string(topic).expect("a string");
    format!(r#"{{"type":"message","topic":{topic},"data":{data},"id":"{epoch}-{seq}"}}"#)
}

fn encoded(relay: &Relay) -> String {
    let mut out = Vec::new();
    state::encode(relay, true, &mut out);
    String::from_utf8(out).expect("the relay writes text")
}

/// One `emberws_…` figure of the relay's `/metrics`.
fn figure(metrics: &str, name: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in /metrics"))
}

/// Never panics; a refused file leaves the relay as it was; a loaded one is within the
/// limits (retained bytes as the cap counts them, history per topic and in bytes, frames no
/// larger than the relay sends), keeps its epoch and count only if written at a clean stop
/// (otherwise a new epoch, no history, the retained values renumbered from 1), holds one
/// message per id, counts what it left out, reports the same bytes in `/metrics` as its
/// contents cost, writes back a file that loads to itself, and numbers its next message on
/// from the file's count.
pub fn state(data: &[u8]) {
    let Some((&h, bytes)) = data.split_first() else {
        return;
    };
    // `load` reads the file as text; other bytes fail there.
    let Ok(text) = std::str::from_utf8(bytes) else {
        return;
    };
    let limits = policy(h);
    let (per_topic, history_cap) = (limits.history_messages, limits.history_bytes);
    let (retained_cap, max_frame) = (limits.max_retained_bytes, limits.max_frame);
    let mut relay = Relay::new(policy(h));
    let fresh = encoded(&relay);
    let changes = relay.changes();
    let loaded = match state::parse(&mut relay, text) {
        Ok(loaded) => loaded,
        Err(_) => {
            assert_eq!(encoded(&relay), fresh, "a refused file changed the relay");
            assert_eq!(relay.changes(), changes);
            return;
        }
    };
    let given: File = serde_json::from_str(text).expect("what the relay read, this reads");
    let again = encoded(&relay);
    let back: File = serde_json::from_str(&again).expect("the relay's file reads");
    let epoch = relay.epoch().to_string();
    assert_eq!(back.epoch, epoch);
    if given.clean {
        assert_eq!(
            (&*back.epoch, back.seq),
            (&*given.epoch, given.seq),
            "a clean file goes on"
        );
        assert_eq!(loaded.history, back.history.len());
    } else {
        assert_ne!(
            back.epoch, given.epoch,
            "a file not written at a clean stop: a new epoch"
        );
        assert!(back.history.is_empty(), "and no history");
        let seqs: Vec<u64> = back.retained.iter().map(|e| e.seq).collect();
        assert_eq!(
            seqs,
            (1..=seqs.len() as u64).collect::<Vec<_>>(),
            "renumbered"
        );
        assert_eq!(back.seq, seqs.len() as u64);
        assert_eq!(loaded.history, 0);
    }
    assert_eq!(loaded.clean, given.clean);
    assert!(back.retained.len() <= loaded.retained);
    assert_eq!(
        loaded.left_out,
        given.retained.len() + given.history.len() - loaded.retained - loaded.history
    );

    // One id, one message; every message within the limits.
    let mut by_seq: HashMap<u64, (&str, &str)> = HashMap::new();
    let mut retained_bytes = 0;
    let mut last_topic: Option<&str> = None;
    for e in &back.retained {
        let f = frame(&e.topic, e.data.get(), &epoch, e.seq);
        assert!(
            f.len() <= max_frame,
            "a {} B retained frame, limit {max_frame}",
            f.len()
        );
        assert!(
            crate::relay::is_publish_topic(&e.topic),
            "retained {:?}",
            e.topic
        );
        assert!(
            last_topic < Some(&*e.topic),
            "retained topics in order, once each"
        );
        last_topic = Some(&e.topic);
        assert!(
            e.seq >= 1 && e.seq <= back.seq,
            "retained seq {} past {}",
            e.seq,
            back.seq
        );
        retained_bytes += e.topic.len() + f.len() + RETAINED_ENTRY_BYTES;
        by_seq.insert(e.seq, (&e.topic, e.data.get()));
    }
    assert!(
        retained_bytes <= retained_cap,
        "{retained_bytes} B retained, cap {retained_cap}"
    );
    let mut history_bytes = 0;
    let mut topics: BTreeMap<&str, usize> = BTreeMap::new();
    let mut last = 0;
    for e in &back.history {
        let f = frame(&e.topic, e.data.get(), &epoch, e.seq);
        assert!(
            f.len() <= max_frame,
            "a {} B frame in history, limit {max_frame}",
            f.len()
        );
        assert!(
            crate::relay::is_publish_topic(&e.topic),
            "history {:?}",
            e.topic
        );
        assert!(
            e.seq > last && e.seq <= back.seq,
            "history seq {} after {last}",
            e.seq
        );
        last = e.seq;
        history_bytes += SLOT_BYTES + e.topic.len() + f.len();
        *topics.entry(&e.topic).or_default() += 1;
        if let Some(&(topic, data)) = by_seq.get(&e.seq) {
            assert_eq!(
                (topic, data),
                (&*e.topic, e.data.get()),
                "two messages with id {epoch}-{}",
                e.seq
            );
        }
    }
    history_bytes += topics.keys().map(|t| TOPIC_BYTES + t.len()).sum::<usize>();
    for (topic, &n) in &topics {
        assert!(
            n <= per_topic,
            "{n} messages of {topic} held, {per_topic} per topic"
        );
    }
    assert!(
        history_bytes <= history_cap,
        "{history_bytes} B of history, cap {history_cap}"
    );

    // The file it writes loads to itself.
    let mut twin = Relay::new(policy(h));
    let reloaded = state::parse(&mut twin, &again).expect("the relay's own file loads");
    let whole = Loaded {
        clean: true,
        retained: back.retained.len(),
        history: back.history.len(),
        left_out: 0,
    };
    assert_eq!(reloaded, whole, "its own file, whole");
    assert_eq!(encoded(&twin), again, "written back the same");

    // What it reports holding is what its contents cost; its next message goes on from the
    // file's count.
    let mut h = Harness::new(Config::default(), relay);
    let metrics = h.get("/metrics").expect("an answer");
    let metrics = String::from_utf8_lossy(&metrics.body);
    let held = |what| figure(&metrics, &format!("emberws_held_bytes{{what=\"{what}\"}}"));
    assert_eq!(
        held("retained"),
        retained_bytes as u64,
        "retained bytes counted"
    );
    assert_eq!(
        held("history"),
        history_bytes as u64,
        "history bytes counted"
    );
    assert_eq!(
        figure(&metrics, "emberws_history_messages"),
        back.history.len() as u64
    );
    let mut peer = h.connect("/").expect("a client");
    h.send(
        &peer,
        Message::Text(r#"{"type":"subscribe","topic":"fuzz/next"}"#),
    );
    h.send(
        &peer,
        Message::Text(r#"{"type":"publish","topic":"fuzz/next","data":0}"#),
    );
    let next = format!("{epoch}-{}", back.seq.wrapping_add(1));
    let got: Vec<Frame> = h.received(&mut peer);
    let Some(Frame::Text(last)) = got.last() else {
        panic!("no message: {got:?}")
    };
    let v: serde_json::Value = serde_json::from_str(last).expect("a reply");
    assert_eq!(v["id"], next, "the next id after {}", back.seq);
    assert!(id::parse(&next).is_some());
}

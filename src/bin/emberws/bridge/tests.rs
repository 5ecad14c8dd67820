//! The bridge without sockets: what it writes on each link, in which order, after connects
//! and losses; what it does with what Redis sends, fed at every byte split; its bounds. Time
//! is passed in: no test sleeps.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use emberws::proto::resp;

use super::envelope::{self, InstanceId, Kind};
use super::link::{Due, BACKOFF_CAP};
use super::*;

const FRAME: &str = r#"{"type":"message","topic":"s/t","data":21.5}"#;

fn id(last: u8) -> InstanceId {
    InstanceId::from_bytes([1, 2, 3, 4, 5, 6, 7, last])
}

fn settings(db: u32, queue_bytes: usize) -> Settings {
    Settings {
        addr: "127.0.0.1:6379".parse().unwrap(),
        db,
        prefix: "ew".into(),
        queue_bytes,
        max_frame: 4096,
        max_retained_bytes: 1 << 20,
        id: id(0),
    }
}

/// What the relay was told.
#[derive(Default)]
struct Fake {
    remote: Vec<(String, String, Kind)>,
    loaded: Vec<(HashMap<String, String>, Vec<String>)>,
}

impl Local for Fake {
    fn remote(&mut self, topic: &str, frame: &str, kind: Kind) {
        self.remote.push((topic.into(), frame.into(), kind));
    }

    fn load_retained(&mut self, values: HashMap<String, String>, touched: &[String]) {
        self.loaded.push((values, touched.to_vec()));
    }

    fn acceptable(&self, topic: &str, frame: &str) -> bool {
        crate::relay::is_publish_topic(topic) && envelope::is_message_frame(frame)
    }
}

fn command(args: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    resp::encode_command(&mut out, args);
    out
}

fn commands(list: &[&[&[u8]]]) -> Vec<u8> {
    list.iter().flat_map(|c| command(c)).collect()
}

/// Everything `which` has to write, as if the socket took it all.
fn written(b: &mut Bridge, which: Which, now: Instant) -> Vec<u8> {
    let out = b.unwritten(which).to_vec();
    b.wrote(which, out.len(), now);
    out
}

/// Feeds `bytes` as reads of `chunk` bytes at most.
fn feed(
    b: &mut Bridge,
    which: Which,
    bytes: &[u8],
    chunk: usize,
    now: Instant,
    local: &mut Fake,
) -> Result<(), Fault> {
    for piece in bytes.chunks(chunk) {
        let space = b.read_space(which);
        space[..piece.len()].copy_from_slice(piece);
        b.received(which, piece.len(), now, local)?;
    }
    Ok(())
}

fn pmessage(channel: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "*4\r\n$8\r\npmessage\r\n$4\r\new:*\r\n${}\r\n{channel}\r\n${}\r\n",
        channel.len(),
        payload.len()
    )
    .into_bytes();
    out.extend_from_slice(payload);
    out.extend_from_slice(b"\r\n");
    out
}

fn envelope_of(from: InstanceId, kind: Kind, frame: &str) -> Vec<u8> {
    let mut out = Vec::new();
    envelope::encode(&mut out, &from, kind, frame.as_bytes());
    out
}

const SUBSCRIBED: &[u8] = b"*3\r\n$10\r\npsubscribe\r\n$4\r\new:*\r\n:1\r\n";

/// Connects both links at `now` and confirms the subscription; returns what the command
/// link wrote.
fn up(b: &mut Bridge, now: Instant, local: &mut Fake) -> Vec<u8> {
    for which in [Which::Commands, Which::Subscriber] {
        assert_eq!(b.due(which, now), Due::Connect);
        b.connecting(which, now);
        b.connected(which, now);
    }
    assert_eq!(
        written(b, Which::Subscriber, now),
        command(&[b"PSUBSCRIBE", b"ew:*"])
    );
    feed(b, Which::Subscriber, SUBSCRIBED, 1 << 10, now, local).unwrap();
    assert!(b.is_up());
    written(b, Which::Commands, now)
}

#[test]
fn the_first_commands_are_select_the_backlog_then_hgetall_once_subscribed() {
    let t0 = Instant::now();
    let mut b = Bridge::new(settings(3, 1 << 20), t0);
    let mut local = Fake::default();
    // Published before Redis is there: queued.
    assert!(b.publish("s/t", FRAME.as_bytes(), Kind::Message));
    assert!(b.publish("s/r", FRAME.as_bytes(), Kind::Retained));
    assert!(b.publish("s/r", FRAME.as_bytes(), Kind::Cleared));
    assert!(!b.is_up());
    b.connecting(Which::Commands, t0);
    b.connected(Which::Commands, t0);
    let env = |kind| envelope_of(id(0), kind, FRAME);
    let backlog = commands(&[
        &[b"SELECT", b"3"],
        &[b"PUBLISH", b"ew:s/t", &env(Kind::Message)],
        &[b"HSET", b"ew:retained", b"s/r", FRAME.as_bytes()],
        &[b"PUBLISH", b"ew:s/r", &env(Kind::Retained)],
        &[b"HDEL", b"ew:retained", b"s/r"],
        &[b"PUBLISH", b"ew:s/r", &env(Kind::Cleared)],
    ]);
    assert_eq!(
        written(&mut b, Which::Commands, t0),
        backlog,
        "no HGETALL before the subscriber link is subscribed"
    );
    b.connecting(Which::Subscriber, t0);
    b.connected(Which::Subscriber, t0);
    assert_eq!(
        written(&mut b, Which::Subscriber, t0),
        command(&[b"PSUBSCRIBE", b"ew:*"])
    );
    feed(&mut b, Which::Subscriber, SUBSCRIBED, 7, t0, &mut local).unwrap();
    assert_eq!(
        written(&mut b, Which::Commands, t0),
        command(&[b"HGETALL", b"ew:retained"])
    );
    // The replies, in order, then the snapshot, at every split.
    let mut replies = b"+OK\r\n:0\r\n:1\r\n:0\r\n:1\r\n:0\r\n".to_vec();
    let frame2 = r#"{"type":"message","topic":"x/y","data":1}"#;
    replies.extend_from_slice(
        format!(
            "*4\r\n$3\r\ns/a\r\n${}\r\n{FRAME}\r\n$3\r\nx/y\r\n${}\r\n{frame2}\r\n",
            FRAME.len(),
            frame2.len()
        )
        .as_bytes(),
    );
    for chunk in 1..=replies.len() {
        let mut b2 = Bridge::new(settings(3, 1 << 20), t0);
        let mut local = Fake::default();
        for _ in 0..3 {
            b2.publish("s/t", FRAME.as_bytes(), Kind::Message);
        }
        b2.publish("s/r", FRAME.as_bytes(), Kind::Retained);
        up(&mut b2, t0, &mut local);
        feed(&mut b2, Which::Commands, &replies, chunk, t0, &mut local).unwrap();
        assert_eq!(local.loaded.len(), 1, "split {chunk}");
        let (values, touched) = &local.loaded[0];
        assert_eq!(values.len(), 2);
        assert_eq!(values["s/a"], FRAME);
        assert_eq!(values["x/y"], frame2);
        assert!(touched.is_empty());
        assert_eq!(b2.stats().snapshots, 1);
    }
}

#[test]
fn a_lost_link_backs_off_then_resends_what_was_not_written_whole() {
    let t0 = Instant::now();
    let mut b = Bridge::new(settings(0, 1 << 20), t0);
    let mut local = Fake::default();
    up(&mut b, t0, &mut local);
    feed(&mut b, Which::Commands, b"*0\r\n", 64, t0, &mut local).unwrap();
    assert_eq!(local.loaded.len(), 1, "an empty hash loads as empty");
    b.publish("a", FRAME.as_bytes(), Kind::Message);
    b.publish("b", FRAME.as_bytes(), Kind::Message);
    let first = command(&[
        b"PUBLISH",
        b"ew:a",
        &envelope_of(id(0), Kind::Message, FRAME),
    ]);
    let second = command(&[
        b"PUBLISH",
        b"ew:b",
        &envelope_of(id(0), Kind::Message, FRAME),
    ]);
    // The first written whole, the second half.
    b.wrote(Which::Commands, first.len() + 10, t0);
    let t1 = t0 + Duration::from_secs(1);
    b.lost(Which::Commands, t1, Fault::Closed);
    b.lost(Which::Subscriber, t1, Fault::Closed);
    assert!(!b.is_up());
    assert_eq!(b.stats().faults, [0, 2, 0, 0, 0]);
    // Backoff: not before its time, which is at most the first ceiling.
    assert_eq!(b.due(Which::Commands, t1), Due::Nothing);
    let retry = b.cmd.deadline().max(b.sub.deadline());
    assert!(
        retry <= t1 + link::BACKOFF_BASE,
        "the first failure after being up"
    );
    // Published while down: queued behind the one to resend.
    b.publish("c", FRAME.as_bytes(), Kind::Message);
    let third = command(&[
        b"PUBLISH",
        b"ew:c",
        &envelope_of(id(0), Kind::Message, FRAME),
    ]);
    let again = up(&mut b, retry, &mut local);
    assert_eq!(
        again,
        [second, third, command(&[b"HGETALL", b"ew:retained"])].concat(),
        "the half-written one whole, then the queue, then a fresh snapshot"
    );
    assert_eq!(b.stats().reconnects, 2, "both links came back");
}

#[test]
fn repeated_failures_wait_longer_up_to_the_cap() {
    let t0 = Instant::now();
    let mut b = Bridge::new(settings(0, 1 << 20), t0);
    let mut now = t0;
    let mut longest = Duration::ZERO;
    for _ in 0..40 {
        assert_eq!(b.due(Which::Commands, now), Due::Connect);
        b.connecting(Which::Commands, now);
        b.lost(
            Which::Commands,
            now,
            Fault::Connect(std::io::ErrorKind::ConnectionRefused),
        );
        let wait = b.cmd.deadline() - now;
        assert!(wait <= BACKOFF_CAP);
        longest = longest.max(wait);
        now = b.cmd.deadline();
    }
    assert!(
        longest > Duration::from_secs(1),
        "it backs off: {longest:?}"
    );
    // A connect that never finishes is given up.
    b.connecting(Which::Commands, now);
    assert_eq!(
        b.due(Which::Commands, now + link::CONNECT_TIMEOUT),
        Due::Late
    );
}

#[test]
fn the_queue_is_bounded_in_bytes_and_drops_are_counted() {
    let t0 = Instant::now();
    let one = resp::command_len(&[
        b"PUBLISH",
        b"ew:s/t",
        &envelope_of(id(0), Kind::Message, FRAME),
    ]);
    let mut b = Bridge::new(settings(0, 10 * one), t0);
    for _ in 0..10 {
        assert!(b.publish("s/t", FRAME.as_bytes(), Kind::Message));
    }
    assert!(!b.publish("s/t", FRAME.as_bytes(), Kind::Message));
    // A retained publish is two commands: both or neither.
    assert!(!b.publish("s/t", FRAME.as_bytes(), Kind::Retained));
    let s = b.stats();
    assert_eq!((s.published, s.queued_bytes), (10, 10 * one as u64));
    assert_eq!(s.dropped_publishes, 2);
    assert!(s.dropped_bytes > 2 * one as u64);
    // Up but slow: bytes the socket has not taken count the same.
    let mut local = Fake::default();
    up(&mut b, t0, &mut local);
    assert_eq!(b.stats().queued_bytes, 0, "all written");
    for _ in 0..10 {
        assert!(b.publish("s/t", FRAME.as_bytes(), Kind::Message));
    }
    b.wrote(Which::Commands, one / 2, t0);
    assert!(!b.publish("s/t", FRAME.as_bytes(), Kind::Message));
    b.wrote(Which::Commands, one - one / 2, t0);
    assert!(b.publish("s/t", FRAME.as_bytes(), Kind::Message));
    assert_eq!(b.stats().dropped_publishes, 3);
}

#[test]
fn own_messages_are_skipped_and_others_delivered_with_their_kind() {
    let t0 = Instant::now();
    let mut b = Bridge::new(settings(0, 1 << 20), t0);
    let mut local = Fake::default();
    up(&mut b, t0, &mut local);
    let mut stream = Vec::new();
    stream.extend(pmessage(
        "ew:s/t",
        &envelope_of(id(0), Kind::Message, FRAME),
    ));
    stream.extend(pmessage(
        "ew:s/t",
        &envelope_of(id(9), Kind::Message, FRAME),
    ));
    stream.extend(pmessage(
        "ew:s/t",
        &envelope_of(id(0), Kind::Retained, FRAME),
    ));
    stream.extend(pmessage(
        "ew:s/t",
        &envelope_of(id(9), Kind::Retained, FRAME),
    ));
    stream.extend(pmessage(
        "ew:s/t",
        &envelope_of(id(9), Kind::Cleared, FRAME),
    ));
    // Not another relay's: no envelope, a wildcard topic, not a message frame.
    stream.extend(pmessage("ew:s/t", b"hello"));
    stream.extend(pmessage(
        "ew:s/#",
        &envelope_of(id(9), Kind::Message, FRAME),
    ));
    stream.extend(pmessage(
        "ew:s/t",
        &envelope_of(id(9), Kind::Message, "[1]"),
    ));
    stream.extend(b"*2\r\n$4\r\npong\r\n$0\r\n\r\n");
    for chunk in [1, 2, 3, 5, 8, 13, 64, stream.len()] {
        local.remote.clear();
        feed(&mut b, Which::Subscriber, &stream, chunk, t0, &mut local).unwrap();
        let kinds: Vec<Kind> = local.remote.iter().map(|r| r.2).collect();
        assert_eq!(
            kinds,
            [Kind::Message, Kind::Retained, Kind::Cleared],
            "split {chunk}"
        );
        assert!(local.remote.iter().all(|r| r.0 == "s/t" && r.1 == FRAME));
    }
    assert_eq!(b.stats().received, 3 * 8);
    assert_eq!(b.stats().ignored, 3 * 8);
}

#[test]
fn values_changed_while_a_snapshot_is_in_flight_win_over_it() {
    let t0 = Instant::now();
    let mut b = Bridge::new(settings(0, 1 << 20), t0);
    let mut local = Fake::default();
    up(&mut b, t0, &mut local);
    // HGETALL is out; another relay's retained update and a local one come before its reply.
    let update = pmessage("ew:s/t", &envelope_of(id(9), Kind::Retained, FRAME));
    feed(&mut b, Which::Subscriber, &update, 64, t0, &mut local).unwrap();
    b.publish("s/mine", FRAME.as_bytes(), Kind::Cleared);
    let old = format!("*2\r\n$3\r\ns/t\r\n${}\r\n{FRAME}\r\n", FRAME.len());
    feed(&mut b, Which::Commands, old.as_bytes(), 64, t0, &mut local).unwrap();
    assert_eq!(local.loaded.len(), 1);
    assert_eq!(local.loaded[0].1, ["s/t", "s/mine"]);
    // Once loaded, updates are just updates.
    feed(&mut b, Which::Subscriber, &update, 64, t0, &mut local).unwrap();
    b.publish("s/mine", FRAME.as_bytes(), Kind::Retained);
    assert_eq!(b.touched.len(), 0);
}

#[test]
fn error_replies_and_bad_bytes_drop_the_link() {
    let t0 = Instant::now();
    let mut b = Bridge::new(settings(7, 1 << 20), t0);
    let mut local = Fake::default();
    b.connecting(Which::Commands, t0);
    b.connected(Which::Commands, t0);
    written(&mut b, Which::Commands, t0);
    let got = feed(
        &mut b,
        Which::Commands,
        b"-ERR DB index is out of range\r\n",
        4,
        t0,
        &mut local,
    );
    let Err(fault) = got else { panic!("{got:?}") };
    assert_eq!(
        fault.to_string(),
        "Redis answered SELECT with an error (ERR)",
        "the kind only, never the text"
    );
    b.lost(Which::Commands, t0, fault);
    assert_eq!(b.stats().faults[3], 1);
    // A reply nobody asked for, and bytes that are not RESP.
    let t1 = b.next_deadline();
    b.connecting(Which::Commands, t1);
    b.connected(Which::Commands, t1);
    let extra = feed(&mut b, Which::Commands, b":1\r\n", 64, t1, &mut local);
    assert!(matches!(extra, Err(Fault::Protocol(_))), "{extra:?}");
    up_subscriber(&mut b, t1, &mut local);
    let junk = feed(&mut b, Which::Subscriber, b"?what\r\n", 64, t1, &mut local);
    assert!(matches!(junk, Err(Fault::Protocol(_))), "{junk:?}");
    // A message too long for the buffer: the link goes (and says why), never the buffer.
    up_subscriber(&mut b, t1, &mut local);
    let long = pmessage("ew:s/t", &vec![b'x'; 10_000]);
    let too_long = feed(&mut b, Which::Subscriber, &long, 1 << 10, t1, &mut local);
    assert!(
        matches!(too_long, Err(Fault::Protocol(why)) if why.contains("max_message")),
        "{too_long:?}"
    );
}

/// Reconnects the subscriber link and confirms its subscription.
fn up_subscriber(b: &mut Bridge, now: Instant, local: &mut Fake) {
    if b.sub.is_up() {
        b.lost(Which::Subscriber, now, Fault::Closed);
    }
    let at = b.sub.deadline();
    b.connecting(Which::Subscriber, at);
    b.connected(Which::Subscriber, at);
    written(b, Which::Subscriber, at);
    feed(b, Which::Subscriber, SUBSCRIBED, 64, at, local).unwrap();
}

#[test]
fn a_quiet_link_is_pinged_and_dropped_when_the_answer_is_late() {
    let t0 = Instant::now();
    let mut b = Bridge::new(settings(0, 1 << 20), t0);
    let mut local = Fake::default();
    up(&mut b, t0, &mut local);
    feed(&mut b, Which::Commands, b"*0\r\n", 64, t0, &mut local).unwrap();
    let quiet = t0 + link::KEEPALIVE;
    assert_eq!(b.next_deadline(), quiet);
    for which in [Which::Commands, Which::Subscriber] {
        assert_eq!(b.due(which, quiet), Due::Nothing);
        assert_eq!(written(&mut b, which, quiet), command(&[b"PING"]));
    }
    assert_eq!(
        b.due(Which::Commands, quiet + link::REPLY_TIMEOUT),
        Due::Late
    );
    feed(&mut b, Which::Commands, b"+PONG\r\n", 64, quiet, &mut local).unwrap();
    assert_eq!(
        b.due(Which::Commands, quiet + link::REPLY_TIMEOUT),
        Due::Nothing
    );
    assert_eq!(
        b.due(Which::Subscriber, quiet + link::REPLY_TIMEOUT),
        Due::Late
    );
}

#[test]
fn glob_characters_of_the_prefix_are_escaped_in_the_pattern() {
    let mut s = settings(0, 1 << 20);
    s.prefix = "a*b?[c]".into();
    let b = Bridge::new(s, Instant::now());
    assert_eq!(b.pattern, br"a\*b\?\[c\]:*");
    assert_eq!(b.hash, b"a*b?[c]:retained");
}

//! The relay's own figures under `$SYS/`, end to end against the real `emberws` binary with
//! tungstenite clients: who receives them (an explicit `$SYS/#` subscription does, `#` and
//! `+/…` do not, rules decide as for any topic), what they say (computed from what the test
//! itself did, never hard-coded), that clients cannot publish there, and that a bridge to
//! other relays keeps each relay's `$SYS` to itself.
//!
//! Nothing waits a fixed time: samples come every 0.2 s and the test reads them as they
//! come; a rate is checked against the others of the same sample (bytes per message,
//! deliveries per publish), which holds however long the interval really was.

mod util;

use std::collections::BTreeMap;
use std::time::Instant;

use serde_json::{json, Value};
use util::binary::ServerProcess;
use util::relay::{clients_toml, Entry, Files, Peer};
use util::DEADLINE;

const RESERVED: &str = "topics starting with $ are reserved";
const NOT_ALLOWED: &str = "not allowed";

/// `emberws --listen 127.0.0.1:0 EXTRA...`.
fn relay(extra: &[&str]) -> ServerProcess {
    let mut args = vec!["--listen", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    ServerProcess::spawn(&args)
}

/// The topics of one sample on this machine, in publishing order: the relay's own figures,
/// then those of the files this machine has.
fn expected_topics() -> Vec<&'static str> {
    let mut topics = vec![
        "$SYS/version",
        "$SYS/uptime",
        "$SYS/connections",
        "$SYS/messages/in",
        "$SYS/messages/out",
        "$SYS/bytes/in",
        "$SYS/bytes/out",
        "$SYS/dropped",
        "$SYS/rss",
    ];
    let readable = |path: &str| std::fs::read_to_string(path).ok();
    if readable("/proc/loadavg").is_some() {
        topics.push("$SYS/load");
    }
    if readable("/proc/meminfo").is_some_and(|m| m.contains("MemAvailable:")) {
        topics.push("$SYS/memory/available");
    }
    if readable("/sys/class/thermal/thermal_zone0/temp").is_some() {
        topics.push("$SYS/temperature");
    }
    topics
}

/// One sample: topic → data.
type Sample = BTreeMap<String, Value>;

/// A subscriber of `$SYS/#` that hands out whole live samples. Each sample begins with
/// `$SYS/version`; the retained values that follow the subscription hold one
/// `$SYS/version` too, in no particular place. So the third `$SYS/version` begins the
/// second live sample, the first whose whole interval lies after the subscription.
struct SysReader {
    peer: Peer,
    versions: usize,
    current: Option<Sample>,
}

impl SysReader {
    fn new(peer: Peer) -> SysReader {
        SysReader {
            peer,
            versions: 0,
            current: None,
        }
    }

    /// The next whole sample (read up to the `$SYS/version` of the one after it).
    #[track_caller]
    fn next_sample(&mut self) -> Sample {
        loop {
            let m = self.peer.recv();
            assert_eq!(m["type"], "message", "{}: {m}", self.peer.label);
            let topic = m["topic"].as_str().unwrap_or_default().to_owned();
            assert!(topic.starts_with("$SYS/"), "{}: {m}", self.peer.label);
            if topic == "$SYS/version" {
                self.versions += 1;
                if self.versions < 3 {
                    continue;
                }
                let done = self.current.replace(Sample::new());
                self.current
                    .as_mut()
                    .map(|s| s.insert(topic, m["data"].clone()));
                if let Some(done) = done {
                    return done;
                }
            } else if let Some(sample) = &mut self.current {
                let old = sample.insert(topic.clone(), m["data"].clone());
                assert!(old.is_none(), "{topic} twice in one sample");
            }
        }
    }
}

fn number(sample: &Sample, topic: &str) -> f64 {
    sample
        .get(topic)
        .and_then(Value::as_f64)
        .unwrap_or_else(|| panic!("{topic}: not a number in {sample:?}"))
}

fn whole(sample: &Sample, topic: &str) -> u64 {
    sample
        .get(topic)
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("{topic}: not a whole number in {sample:?}"))
}

/// Every figure is there with the right type and a sane value; returns nothing new.
#[track_caller]
fn check_shape(sample: &Sample) {
    let topics: Vec<&str> = sample.keys().map(String::as_str).collect();
    let mut want = expected_topics();
    want.sort_unstable();
    assert_eq!(topics, want, "the topics of one sample");
    assert_eq!(sample["$SYS/version"], env!("CARGO_PKG_VERSION"));
    whole(sample, "$SYS/uptime");
    for rate in [
        "$SYS/messages/in",
        "$SYS/messages/out",
        "$SYS/bytes/in",
        "$SYS/bytes/out",
        "$SYS/dropped",
    ] {
        assert!(number(sample, rate) >= 0.0, "{rate}: {sample:?}");
    }
    assert!(whole(sample, "$SYS/rss") > 0);
    if let Some(load) = sample.get("$SYS/load") {
        let load = load.as_array().expect("an array");
        assert_eq!(load.len(), 3, "{load:?}");
        assert!(load.iter().all(|v| v.as_f64().is_some_and(|v| v >= 0.0)));
    }
    if sample.contains_key("$SYS/memory/available") {
        assert!(whole(sample, "$SYS/memory/available") > 0);
    }
    if sample.contains_key("$SYS/temperature") {
        number(sample, "$SYS/temperature");
    }
}

/// `a` is `b` up to what rounding to 3 decimals can make of figures of this size.
#[track_caller]
fn about(a: f64, b: f64, scale: f64, what: &str) {
    let slack = 0.001 * (1.0 + scale);
    assert!(
        (a - b).abs() <= slack,
        "{what}: {a} against {b} (± {slack})"
    );
}

#[test]
fn figures_reach_an_explicit_sys_subscriber_and_no_wildcard_one() {
    let server = relay(&["--sys-interval", "0.2", "--ping-interval", "0"]);
    let addr = server.addr();
    let mut hash = Peer::anonymous(addr, "# subscriber");
    hash.subscribe("#");
    let mut plus = Peer::anonymous(addr, "+/connections subscriber");
    plus.subscribe("+/connections");
    let mut tsub = Peer::anonymous(addr, "t/# subscriber");
    tsub.subscribe("t/#");
    let mut publisher = Peer::anonymous(addr, "publisher");
    let mut sys = Peer::anonymous(addr, "$SYS/# subscriber");
    sys.subscribe("$SYS/#");
    let mut sys = SysReader::new(sys);

    // A whole interval after every client's last request: the five connections, and no
    // traffic at all. The `$SYS` deliveries to `sys` itself do not count.
    let quiet = sys.next_sample();
    check_shape(&quiet);
    assert_eq!(whole(&quiet, "$SYS/connections"), 5, "{quiet:?}");
    for rate in [
        "$SYS/messages/in",
        "$SYS/messages/out",
        "$SYS/bytes/in",
        "$SYS/bytes/out",
        "$SYS/dropped",
    ] {
        assert_eq!(number(&quiet, rate), 0.0, "{rate} in {quiet:?}");
    }

    // N publishes of one size, each delivered to `#` and `t/#`, nothing else from clients.
    const N: usize = 40;
    let requests: Vec<String> = (0..N)
        .map(|i| json!({"type": "publish", "topic": "t/x", "data": i % 10}).to_string())
        .collect();
    let frame_in = requests[0].len() + 6; // a masked client frame under 126 bytes
    assert!(requests.iter().all(|r| r.len() + 6 == frame_in));
    for r in &requests {
        publisher.send_text(r);
    }
    // The samples from here until one is quiet again: each carries some of the publishes.
    let mut busy = Vec::new();
    let deadline = Instant::now() + DEADLINE;
    loop {
        let s = sys.next_sample();
        check_shape(&s);
        let m_in = number(&s, "$SYS/messages/in");
        if m_in == 0.0 && !busy.is_empty() {
            break;
        }
        if m_in > 0.0 {
            busy.push(s);
        }
        assert!(
            Instant::now() < deadline,
            "no quiet sample after the publishes"
        );
    }
    // What the subscribers received: every frame's length, as the relay wrote it.
    let mut frames_out = Vec::new();
    for peer in [&mut hash, &mut tsub] {
        for i in 0..N {
            let m = peer.recv();
            assert_eq!(m["topic"], "t/x", "{}: {m}", peer.label);
            assert_eq!(m["data"], i % 10);
            frames_out.push(m.to_string().len() + 2);
        }
    }
    let (least, most) = (
        *frames_out.iter().min().unwrap() as f64,
        *frames_out.iter().max().unwrap() as f64,
    );
    for s in &busy {
        let m_in = number(s, "$SYS/messages/in");
        let b_in = number(s, "$SYS/bytes/in");
        let m_out = number(s, "$SYS/messages/out");
        let b_out = number(s, "$SYS/bytes/out");
        let f = frame_in as f64;
        about(
            b_in,
            f * m_in,
            f,
            "bytes/in = the publish frame × messages/in",
        );
        about(
            m_out,
            2.0 * m_in,
            2.0,
            "messages/out = 2 deliveries × messages/in",
        );
        let slack = 0.001 * (1.0 + most);
        assert!(
            b_out >= least * m_out - slack && b_out <= most * m_out + slack,
            "bytes/out {b_out} for {m_out} messages of {least} to {most} bytes"
        );
        assert_eq!(number(s, "$SYS/dropped"), 0.0);
    }

    // None of it reached `#`, `+/connections` or `t/#`: the samples `sys` read went out
    // before these pings, so they would come before the pongs.
    hash.nothing_pending();
    plus.nothing_pending();
    tsub.nothing_pending();

    // One client leaves: a later sample counts four.
    drop(plus);
    let deadline = Instant::now() + DEADLINE;
    loop {
        let s = sys.next_sample();
        if whole(&s, "$SYS/connections") == 4 {
            break;
        }
        assert_eq!(whole(&s, "$SYS/connections"), 5);
        assert!(Instant::now() < deadline, "still 5 connections: {s:?}");
    }
}

#[test]
fn the_figures_are_published_at_start_and_retained() {
    let server = relay(&["--sys-interval", "3600"]);
    let mut sys = Peer::anonymous(server.addr(), "late $SYS/# subscriber");
    sys.subscribe("$SYS/#");
    let want = expected_topics();
    let got: Sample = sys.messages(want.len()).into_iter().collect();
    check_shape(&got);
    // Taken at start: in the loop's first turn, which may have accepted this subscriber's
    // connection already (before its handshake could be answered), and nobody else's.
    let at_start = whole(&got, "$SYS/connections");
    assert!(at_start <= 1, "{at_start} connections at start");
    assert_eq!(whole(&got, "$SYS/uptime"), 0);
    assert_eq!(number(&got, "$SYS/messages/in"), 0.0);
    // One sample so far: nothing more comes within the hour.
    sys.nothing_pending();
    let mut one = Peer::anonymous(server.addr(), "$SYS/connections subscriber");
    one.subscribe("$SYS/connections");
    assert_eq!(
        one.messages(1),
        [("$SYS/connections".to_owned(), json!(at_start))]
    );
    one.nothing_pending();
}

#[test]
fn a_client_cannot_publish_to_a_dollar_topic_and_zero_switches_the_figures_off() {
    let server = relay(&["--sys-interval", "0"]);
    let mut sys = Peer::anonymous(server.addr(), "$SYS/# subscriber");
    sys.subscribe("$SYS/#");
    let mut p = Peer::anonymous(server.addr(), "publisher");
    for (id, request) in [
        json!({"type": "publish", "topic": "$SYS/x", "data": 1, "id": 1}),
        json!({"type": "publish", "topic": "$SYS/uptime", "data": 9, "retain": true, "id": 2}),
        json!({"type": "publish", "topic": "$mine", "data": 1, "id": 3}),
    ]
    .into_iter()
    .enumerate()
    {
        p.send(&request);
        p.expect_error(json!(id + 1), RESERVED);
    }
    // Nothing reached the subscriber, nothing was retained, and with 0 the relay publishes
    // no figures either.
    sys.nothing_pending();
    let mut late = Peer::anonymous(server.addr(), "late $SYS/# subscriber");
    late.subscribe("$SYS/#");
    late.nothing_pending();
    p.nothing_pending();
}

#[test]
fn rules_grant_sys_only_when_they_name_it() {
    let files = Files::new("sys-rules");
    let watcher = Entry {
        name: "watcher",
        token: "watcher-token-2718281828",
        publish: &["#"],
        subscribe: &["#"],
    };
    let board = Entry {
        name: "board",
        token: "board-token-1414213562",
        publish: &[],
        subscribe: &["$SYS/#"],
    };
    files.write_clients(&clients_toml(&[watcher, board]));
    let config = files.write_config(&format!(
        "listen = [\"0.0.0.0:0\"]\nsys_interval = 0.2\n[auth]\nclients = '{}'\n",
        files.clients_str()
    ));
    let server = ServerProcess::spawn(&["--config", &config]);
    let addr = server.addr();

    let mut w = Peer::with_token(addr, watcher.token, "watcher (rule #)");
    for (id, pattern) in ["$SYS/#", "$SYS/connections", "$SYS/+"].iter().enumerate() {
        w.send(&json!({"type": "subscribe", "topic": pattern, "id": id}));
        w.expect_error(json!(id), NOT_ALLOWED);
    }
    w.subscribe("#");
    w.subscribe("+/connections");
    // The rule `#` lets it publish anywhere but there.
    w.send(&json!({"type": "publish", "topic": "$SYS/connections", "data": 0, "id": "p"}));
    w.expect_error(json!("p"), RESERVED);

    let mut b = Peer::with_token(addr, board.token, "board (rule $SYS/#)");
    b.subscribe("$SYS/#");
    let mut samples = SysReader::new(b);
    let s = samples.next_sample();
    check_shape(&s);
    assert_eq!(whole(&s, "$SYS/connections"), 2);
    // The rule `$SYS/#` gives nothing else.
    let mut b = samples.peer;
    b.send(&json!({"type": "subscribe", "topic": "#", "id": "all"}));
    loop {
        let m = b.recv();
        if m["type"] == "error" {
            assert_eq!(
                m,
                json!({"type": "error", "reason": NOT_ALLOWED, "id": "all"})
            );
            break;
        }
        // Samples still on their way.
        assert_eq!(m["type"], "message", "{m}");
    }
    w.nothing_pending();
}

#[test]
#[cfg(feature = "redis")]
fn bridged_relays_keep_their_sys_to_themselves() {
    use std::thread;
    use std::time::Duration;
    use util::redis::Redis;
    use util::relay::{http_get, metric};

    let gauge = |server: &ServerProcess, sample: &str| {
        let answer = http_get(server.addr(), None, "/metrics", &[]);
        assert_eq!(answer.status(), 200, "/metrics");
        metric(&answer.text(), sample)
    };
    let redis = Redis::start();
    let bridged = |label: &str| {
        let server = relay(&["--sys-interval", "0.2", "--redis", &redis.url()]);
        let deadline = Instant::now() + DEADLINE;
        while gauge(&server, "emberws_redis_link_up") != 1 {
            assert!(Instant::now() < deadline, "{label}: no link to Redis");
            thread::sleep(Duration::from_millis(20));
        }
        server
    };
    let (a, b) = (bridged("A"), bridged("B"));
    let mut all_on_b = Peer::anonymous(b.addr(), "# on B");
    all_on_b.subscribe("#");
    let mut sys_on_b = Peer::anonymous(b.addr(), "$SYS/# on B");
    sys_on_b.subscribe("$SYS/#");
    // Two whole samples of B, and A's of the same time: none of A's reached B.
    let mut samples = SysReader::new(sys_on_b);
    for _ in 0..2 {
        let s = samples.next_sample();
        check_shape(&s);
    }
    // The link works: a plain publish on A crosses, and it is all that crossed.
    let mut p = Peer::anonymous(a.addr(), "publisher on A");
    p.publish("t/x", json!(1));
    all_on_b.expect_message("t/x", json!(1));
    all_on_b.nothing_pending();
    assert_eq!(gauge(&a, "emberws_redis_published_total"), 1);
    assert_eq!(gauge(&b, "emberws_redis_received_total"), 1);
    assert_eq!(gauge(&b, "emberws_redis_published_total"), 0);
}

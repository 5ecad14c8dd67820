//! The Redis bridge end to end: `emberws` relay processes on a real `redis-server` that each
//! test starts on a free port and stops by PID (`kill -9` where the test is about that).
//! Nothing waits a fixed time: states are polled on `/metrics` with a deadline.
//!
//! `redis-server` must be installed; without it every test here fails and says so.
#![cfg(feature = "redis")]

mod util;

use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use util::binary::ServerProcess;
use util::redis::{free_port, url_of, Redis};
use util::relay::{http_get, metric, Files, Peer};
use util::DEADLINE;

/// How long a link may take to come back after Redis does: its backoff is capped at 5 s,
/// and a relay reconnects at most that long after Redis is back, plus a connect.
const BACK_WITHIN: Duration = Duration::from_secs(10);

/// A relay on 127.0.0.1 bridged through the Redis at `url`.
fn relay(url: &str) -> ServerProcess {
    ServerProcess::spawn(&["--listen", "127.0.0.1:0", "--redis", url])
}

fn metrics(server: &ServerProcess) -> String {
    let answer = http_get(server.addr(), None, "/metrics", &[]);
    assert_eq!(answer.status(), 200, "/metrics");
    answer.text()
}

fn gauge(server: &ServerProcess, sample: &str) -> u64 {
    metric(&metrics(server), sample)
}

/// Polls `/metrics` until `sample` is `want` (at most `within`); returns how long it took.
#[track_caller]
fn wait_for(
    server: &ServerProcess,
    sample: &str,
    want: impl Fn(u64) -> bool,
    within: Duration,
) -> Duration {
    let start = Instant::now();
    loop {
        let text = metrics(server);
        let got = metric(&text, sample);
        if want(got) {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < within,
            "{sample} is {got} after {} s; the relay's log ends with:\n{}",
            within.as_secs(),
            server.stderr_tail(20)
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until both of the relay's links to Redis are up and subscribed.
#[track_caller]
fn wait_up(server: &ServerProcess) -> Duration {
    wait_for(server, "emberws_redis_link_up", |v| v == 1, DEADLINE)
}

/// Waits until the relay has loaded the retained values from Redis at least `n` times.
#[track_caller]
fn wait_loaded(server: &ServerProcess, n: u64) {
    wait_for(
        server,
        "emberws_redis_snapshots_total",
        |v| v >= n,
        DEADLINE,
    );
}

fn publish(peer: &mut Peer, topic: &str, data: Value) {
    peer.send(&json!({"type": "publish", "topic": topic, "data": data}));
}

/// The retained messages a new subscriber to `pattern` on `server` gets, by topic.
fn retained_on(server: &ServerProcess, pattern: &str) -> Vec<(String, Value)> {
    let mut peer = Peer::anonymous(server.addr(), "retained reader");
    peer.subscribe(pattern);
    peer.send(&json!({"type": "ping", "id": "end"}));
    let mut got = Vec::new();
    loop {
        let m = peer.recv();
        if m["type"] == "pong" {
            got.sort_by(|x: &(String, Value), y| x.0.cmp(&y.0));
            return got;
        }
        assert_eq!(m["type"], "message", "{m}");
        got.push((m["topic"].as_str().unwrap().to_owned(), m["data"].clone()));
    }
}

/// Polls new subscribers on `server` until their retained messages are `want`.
#[track_caller]
fn wait_retained(server: &ServerProcess, pattern: &str, want: &[(&str, Value)]) {
    let want: Vec<(String, Value)> = want
        .iter()
        .map(|(t, v)| ((*t).to_owned(), v.clone()))
        .collect();
    let deadline = Instant::now() + DEADLINE;
    loop {
        let got = retained_on(server, pattern);
        if got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "retained on {pattern}: {got:?}, expected {want:?}"
        );
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_thousand_messages_cross_in_order_once_each() {
    let redis = Redis::start();
    let (a, b) = (relay(&redis.url()), relay(&redis.url()));
    wait_up(&a);
    wait_up(&b);
    let mut on_a = Peer::anonymous(a.addr(), "subscriber on A");
    let mut on_b = Peer::anonymous(b.addr(), "subscriber on B");
    on_a.subscribe("t/#");
    on_b.subscribe("t/#");
    let mut publisher = Peer::anonymous(a.addr(), "publisher on A");
    for i in 0..1000 {
        publish(&mut publisher, "t/n", json!(i));
    }
    // `delivered` counts this relay's subscribers: A's one, not B's.
    let ack = publisher.publish("t/end", json!("A"));
    assert_eq!(ack, 1, "delivered counts the local subscribers only");
    for peer in [&mut on_b, &mut on_a] {
        for i in 0..1000 {
            peer.expect_message("t/n", json!(i));
        }
        peer.expect_message("t/end", json!("A"));
    }
    // A marker published on B after B had everything: Redis sends it to A after A's own
    // messages, so a duplicate of any of them on A would come before it.
    let mut publisher_b = Peer::anonymous(b.addr(), "publisher on B");
    publisher_b.publish("t/end", json!("B"));
    on_a.expect_message("t/end", json!("B"));
    on_b.expect_message("t/end", json!("B"));
    on_a.nothing_pending();
    on_b.nothing_pending();
    assert_eq!(gauge(&a, "emberws_redis_published_total"), 1001);
    assert_eq!(gauge(&b, "emberws_redis_received_total"), 1001);
    assert_eq!(gauge(&a, "emberws_redis_received_total"), 1);
    assert_eq!(gauge(&a, "emberws_redis_dropped_publishes_total"), 0);
}

#[test]
fn retained_values_are_shared_loaded_at_start_and_cleared_everywhere() {
    let redis = Redis::start();
    let (a, b) = (relay(&redis.url()), relay(&redis.url()));
    wait_up(&a);
    wait_up(&b);
    let mut on_a = Peer::anonymous(a.addr(), "publisher on A");
    on_a.retain("r/temp", json!(21.5));
    on_a.retain("r/hum", json!({"rh": 40}));
    wait_retained(
        &b,
        "r/#",
        &[("r/hum", json!({"rh": 40})), ("r/temp", json!(21.5))],
    );
    // A relay started afterwards loads them from Redis.
    let c = relay(&redis.url());
    wait_up(&c);
    wait_loaded(&c, 1);
    assert_eq!(
        retained_on(&c, "r/#"),
        [
            ("r/hum".to_owned(), json!({"rh": 40})),
            ("r/temp".to_owned(), json!(21.5))
        ]
    );
    // A clear on B clears it on A and C, and their subscribers see the null.
    let mut watcher = Peer::anonymous(a.addr(), "subscriber on A");
    watcher.subscribe("r/temp");
    watcher.expect_message("r/temp", json!(21.5));
    let mut on_b = Peer::anonymous(b.addr(), "publisher on B");
    on_b.retain("r/temp", Value::Null);
    watcher.expect_message("r/temp", Value::Null);
    wait_retained(&a, "r/#", &[("r/hum", json!({"rh": 40}))]);
    wait_retained(&c, "r/#", &[("r/hum", json!({"rh": 40}))]);
    assert!(retained_on(&b, "r/temp").is_empty());
    // And a relay started after the clear does not bring it back.
    let d = relay(&redis.url());
    wait_up(&d);
    wait_loaded(&d, 1);
    assert_eq!(
        retained_on(&d, "r/#"),
        [("r/hum".to_owned(), json!({"rh": 40}))]
    );
}

#[test]
fn redis_killed_mid_stream_local_delivery_goes_on_and_the_link_comes_back() {
    let mut redis = Redis::start();
    let port = redis.port();
    let (a, b) = (relay(&redis.url()), relay(&redis.url()));
    wait_up(&a);
    wait_up(&b);
    let mut local = Peer::anonymous(a.addr(), "subscriber on A");
    let mut remote = Peer::anonymous(b.addr(), "subscriber on B");
    local.subscribe("k/#");
    remote.subscribe("k/#");
    let mut publisher = Peer::anonymous(a.addr(), "publisher on A");
    let mut n = 0;
    // One publish on A, delivered to A's subscriber before the next one goes.
    let step = |n: &mut i64, publisher: &mut Peer, local: &mut Peer| {
        assert_eq!(publisher.publish("k/n", json!(*n)), 1);
        local.expect_message("k/n", json!(*n));
        *n += 1;
    };
    for _ in 0..50 {
        step(&mut n, &mut publisher, &mut local);
    }
    for i in 0..50 {
        remote.expect_message("k/n", json!(i));
    }

    redis.kill9();
    // Local delivery goes on while A finds Redis gone, and after.
    let deadline = Instant::now() + DEADLINE;
    while gauge(&a, "emberws_redis_link_up") == 1 {
        step(&mut n, &mut publisher, &mut local);
        assert!(Instant::now() < deadline, "A did not notice Redis is gone");
    }
    for _ in 0..50 {
        step(&mut n, &mut publisher, &mut local);
    }
    wait_for(&b, "emberws_redis_link_up", |v| v == 0, DEADLINE);
    assert!(
        gauge(&a, "emberws_redis_queued_bytes") > 0,
        "publishes wait for Redis"
    );

    let _redis = Redis::start_on(port);
    let took_a = wait_for(&a, "emberws_redis_link_up", |v| v == 1, BACK_WITHIN);
    let took_b = wait_for(&b, "emberws_redis_link_up", |v| v == 1, BACK_WITHIN);
    eprintln!("links back after {took_a:?} (A) and {took_b:?} (B)");
    assert!(gauge(&a, "emberws_redis_reconnects_total") >= 1);
    assert!(gauge(&b, "emberws_redis_reconnects_total") >= 1);
    wait_for(&a, "emberws_redis_queued_bytes", |v| v == 0, DEADLINE);

    // Published after the link is back: crosses again. What was queued while Redis was
    // down went out when A reconnected: B gets it if it was subscribed again by then, so
    // some of it may come first, in order, once each.
    let first_after = n;
    for _ in 0..10 {
        step(&mut n, &mut publisher, &mut local);
    }
    let mut last = 49;
    while last < first_after + 9 {
        let m = remote.recv();
        let got = m["data"].as_i64().unwrap_or_else(|| panic!("{m}"));
        assert!(
            got > last,
            "B got {got} after {last}: out of order or twice"
        );
        last = got;
    }
    assert_eq!(last, first_after + 9);
    // No duplicate of A's own messages on A: a marker from B comes next.
    Peer::anonymous(b.addr(), "publisher on B").publish("k/end", json!("B"));
    local.expect_message("k/end", json!("B"));
}

#[test]
fn a_stopped_redis_fills_the_queue_to_its_bound_then_publishes_are_dropped_and_counted() {
    let redis = Redis::start();
    let files = Files::new("bridge-slow");
    let queue = 300_000;
    let config = files.write_config(&format!(
        "listen = [\"127.0.0.1:0\"]\n[redis]\nurl = \"{}\"\nqueue_bytes = {queue}\n",
        redis.url()
    ));
    let a = ServerProcess::spawn(&["--config", &config]);
    let b = relay(&redis.url());
    wait_up(&a);
    wait_up(&b);
    let mut local = Peer::anonymous(a.addr(), "subscriber on A");
    let mut remote = Peer::anonymous(b.addr(), "subscriber on B");
    local.subscribe("q/#");
    remote.subscribe("q/#");
    let mut publisher = Peer::anonymous(a.addr(), "publisher on A");
    redis.pause();
    // 1,000 messages of 2 KB: far more than the queue and the kernel's buffers hold.
    let pad = "x".repeat(2000);
    let total = 1000;
    for i in 0..total {
        assert_eq!(publisher.publish("q/n", json!({"i": i, "pad": pad})), 1);
        local.expect_message("q/n", json!({"i": i, "pad": pad}));
        if i % 50 == 0 {
            let queued = gauge(&a, "emberws_redis_queued_bytes");
            assert!(
                queued <= queue,
                "{queued} bytes queued, the bound is {queue}"
            );
        }
    }
    let dropped = gauge(&a, "emberws_redis_dropped_publishes_total");
    eprintln!("{dropped} of {total} publishes dropped while Redis was stopped");
    assert!(dropped > 0, "nothing was dropped");
    assert!(gauge(&a, "emberws_redis_dropped_bytes_total") > dropped * 2000);
    assert!(gauge(&a, "emberws_redis_queued_bytes") <= queue);
    redis.resume();
    wait_for(&a, "emberws_redis_queued_bytes", |v| v == 0, DEADLINE);
    // What was not dropped reaches B, in order, once each.
    publisher.publish("q/after", json!(1));
    let (mut last, mut got) = (-1, 0);
    loop {
        let m = remote.recv();
        if m["topic"] == "q/after" {
            break;
        }
        let i = m["data"]["i"].as_i64().unwrap_or_else(|| panic!("{m}"));
        assert!(i > last, "B got {i} after {last}");
        (last, got) = (i, got + 1);
    }
    // A pause longer than the reply timeout (a very slow machine) drops the link, and what
    // was written to it before is lost; otherwise every publish not dropped arrived.
    if gauge(&a, "emberws_redis_reconnects_total") == 0 {
        assert_eq!(got, total - dropped, "every publish not dropped reached B");
    }
}

#[test]
fn a_relay_started_while_redis_is_down_serves_locally_and_joins_later() {
    let port = free_port();
    let a = relay(&url_of(port));
    assert_eq!(gauge(&a, "emberws_redis_link_up"), 0);
    let mut sub = Peer::anonymous(a.addr(), "subscriber on A");
    sub.subscribe("j/#");
    let mut publisher = Peer::anonymous(a.addr(), "publisher on A");
    assert_eq!(publisher.publish("j/local", json!(1)), 1);
    sub.expect_message("j/local", json!(1));

    let redis = Redis::start_on(port);
    let took = wait_for(&a, "emberws_redis_link_up", |v| v == 1, BACK_WITHIN);
    eprintln!("joined {took:?} after Redis started");
    let b = relay(&redis.url());
    wait_up(&b);
    let mut on_b = Peer::anonymous(b.addr(), "subscriber on B");
    on_b.subscribe("j/#");
    publisher.publish("j/cross", json!(2));
    sub.expect_message("j/cross", json!(2));
    on_b.expect_message("j/cross", json!(2));
    // And the other way.
    Peer::anonymous(b.addr(), "publisher on B").publish("j/back", json!(3));
    sub.expect_message("j/back", json!(3));
}

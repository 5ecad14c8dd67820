//! Network faults against the real `emberws` relay: a link that goes down under live peers
//! (Linux network namespaces and a veth pair, `util::netns`), and delay, a bandwidth limit,
//! a black hole and a reset from a fault-injecting proxy (`util::proxy`, for what this
//! kernel cannot do without `netem`).
//!
//! The slow-consumer tests run both policies: the relay binary's (close 1008) and, through
//! the library with a minimal pub/sub handler, `SlowConsumer::Drop`.
//!
//! What the server did is read from the server's side: its `/metrics` over loopback (from
//! inside its namespace in the namespace tests). Waits are polled conditions with generous
//! deadlines; the only time bound asserted is the heartbeat's reaping window
//! (`ping_interval + pong_timeout` and a slack of [`REAP_SLACK`]), far below what TCP itself
//! would take to give up (minutes of retransmissions, never for an idle peer).
//!
//! The namespace tests need root and `ip` (iproute2); without them they fail with that
//! reason, they are not skipped.

mod util;

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use emberws::{Config, Ctx, Decision, Handler, HttpRequest, Message as Msg, SlowConsumer};
use serde_json::{json, Value};
use tungstenite::Message;
use util::binary::ServerProcess;
use util::clients::{connect_to, recv_text, Client};
use util::netns::{Net, Side};
use util::proxy::Proxy;
use util::raw::{self, RawClient};
use util::relay::{http_get, metric, Peer};
use util::DEADLINE;

/// `--ping-interval 1 --pong-timeout 1`: a dead peer is dropped within 2 s.
const HEARTBEAT: [&str; 4] = ["--ping-interval", "1", "--pong-timeout", "1"];
/// `ping_interval + pong_timeout` of [`HEARTBEAT`].
const REAP_WINDOW: Duration = Duration::from_secs(2);
/// What a busy machine may add to [`REAP_WINDOW`] (scheduling, the poll of `/metrics`).
const REAP_SLACK: Duration = Duration::from_secs(8);
/// How long a peer behind the dead link waits in silence before it stops reading. It only
/// has to be far longer than the gaps of a live stream (milliseconds): what matters is that
/// it ends with silence, not with a close, a FIN or a RST.
const SILENCE: Duration = Duration::from_secs(3);

/// The relay's counters, read once from `/metrics`.
struct Counters(String);

impl Counters {
    /// `GET /metrics` on `addr` (a loopback address: no token needed).
    fn read(addr: SocketAddr) -> Counters {
        let answer = http_get(addr, None, "/metrics", &[]);
        assert_eq!(answer.status(), 200, "/metrics: {}", answer.response.head);
        Counters(answer.text())
    }

    fn get(&self, sample: &str) -> u64 {
        metric(&self.0, sample)
    }

    /// WebSocket connections open: `connections_open` counts this request's own connection.
    fn websockets(&self) -> u64 {
        self.get("emberws_connections_open") - 1
    }

    fn timeouts(&self) -> u64 {
        self.get("emberws_timeouts_total")
    }

    fn closes(&self, code: u16) -> u64 {
        self.get(&format!("emberws_closes_total{{code=\"{code}\"}}"))
    }

    fn slow_closes(&self) -> u64 {
        self.get("emberws_slow_consumer_closes_total")
    }

    fn slow_drops(&self) -> u64 {
        self.get("emberws_slow_consumer_drops_total")
    }

    fn bytes_in(&self) -> u64 {
        self.get("emberws_bytes_in_total")
    }
}

/// Polls `read` until `done` holds, for at most `within`; returns the counters that satisfied
/// it and how long it took. Panics with the last counters otherwise.
#[track_caller]
fn wait_for(
    what: &str,
    within: Duration,
    mut read: impl FnMut() -> Counters,
    done: impl Fn(&Counters) -> bool,
) -> (Counters, Duration) {
    let start = Instant::now();
    loop {
        let counters = read();
        if done(&counters) {
            return (counters, start.elapsed());
        }
        assert!(
            start.elapsed() < within,
            "not within {} s: {what}; /metrics:\n{}",
            within.as_secs(),
            counters.0
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// `emberws --listen 127.0.0.1:0 EXTRA…` (the relay, on this host's loopback).
fn relay(extra: &[&str]) -> ServerProcess {
    let mut args = vec!["--listen", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    ServerProcess::spawn(&args)
}

/// Whether a read error is a read timeout (nothing arrived: no data, no FIN, no RST).
fn timed_out(e: &tungstenite::Error) -> bool {
    matches!(e, tungstenite::Error::Io(e)
        if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut))
}

/// Sets the read timeout of a peer's socket.
fn read_timeout(peer: &Peer, timeout: Duration) {
    peer.ws.get_ref().set_read_timeout(Some(timeout)).unwrap();
}

/// What a [`listen`]ing peer heard: its JSON messages, and how many pings it answered.
struct Heard {
    messages: mpsc::Receiver<Value>,
    pings: Arc<AtomicU64>,
}

/// Reads `peer` on a thread of its own (so it answers the server's pings, as tungstenite
/// does while reading) and hands over every JSON message; the thread ends with the
/// connection.
fn listen(mut peer: Peer) -> Heard {
    let (tx, messages) = mpsc::channel();
    let pings = Arc::new(AtomicU64::new(0));
    let counted = Arc::clone(&pings);
    thread::spawn(move || loop {
        match peer.ws.read() {
            Ok(Message::Ping(_)) => {
                counted.fetch_add(1, Ordering::SeqCst);
            }
            Ok(Message::Text(t)) => {
                let v = serde_json::from_str(t.as_str()).expect("the relay sends JSON");
                if tx.send(v).is_err() {
                    return;
                }
            }
            Ok(_) => {}
            Err(_) => return,
        }
    });
    Heard { messages, pings }
}

/// The `p`-th percentile (0–100) of sorted samples.
fn percentile(sorted: &[Duration], p: usize) -> Duration {
    sorted[(sorted.len() - 1) * p / 100]
}

// ---------------------------------------------------------------------------------------
// A real link that goes down (network namespaces)
// ---------------------------------------------------------------------------------------

/// A peer that keeps doing app-level ping rounds until its read times out; returns the peer
/// (its socket still open), the rounds and the error that ended it.
fn stream_rounds(mut peer: Peer, rounds: Arc<AtomicU64>) -> (Peer, tungstenite::Error) {
    for n in 0u64.. {
        let id = json!(n);
        if let Err(e) = peer
            .ws
            .send(Message::text(json!({"type": "ping", "id": id}).to_string()))
        {
            return (peer, e);
        }
        loop {
            match peer.ws.read() {
                Ok(Message::Text(t)) => {
                    let got: Value = serde_json::from_str(t.as_str()).unwrap();
                    assert_eq!(got, json!({"type": "pong", "id": id}), "{}", peer.label);
                    break;
                }
                Ok(Message::Ping(_) | Message::Pong(_)) => {}
                Ok(other) => panic!("{}: unexpected {other:?}", peer.label),
                Err(e) => return (peer, e),
            }
        }
        rounds.fetch_add(1, Ordering::SeqCst);
    }
    unreachable!()
}

#[test]
fn link_down_mid_stream_peers_are_reaped_by_the_heartbeat_and_new_ones_work_once_it_is_back() {
    const PEERS: usize = 3;
    let net = Net::new("link-down");
    let server = net.relay(
        &[
            &HEARTBEAT[..],
            &["--rate-bytes", "0", "--rate-publishes", "0"],
        ]
        .concat(),
    );
    let addr = net.server_addr(&server);
    let local = server.addr();
    let counters = || net.in_ns(Side::Server, || Counters::read(local));

    // Peers in the client's namespace, each doing round after round over the veth link.
    let streams: Vec<_> = (0..PEERS)
        .map(|i| {
            let peer = net.in_ns(Side::Client, || Peer::anonymous(addr, &format!("peer {i}")));
            read_timeout(&peer, SILENCE);
            let rounds = Arc::new(AtomicU64::new(0));
            let counted = Arc::clone(&rounds);
            (rounds, thread::spawn(move || stream_rounds(peer, counted)))
        })
        .collect();
    let mid_stream = |min: u64| streams.iter().all(|(r, _)| r.load(Ordering::SeqCst) >= min);
    util::eventually("every peer to be streaming", || {
        mid_stream(20).then_some(())
    });
    assert_eq!(counters().websockets(), PEERS as u64);

    net.link_down(Side::Client);
    let (after, took) = wait_for(
        "the heartbeat to reap every peer",
        REAP_WINDOW + REAP_SLACK,
        counters,
        |c| c.websockets() == 0,
    );
    eprintln!(
        "link down: {PEERS} peers reaped {} ms after the link went down (window {} ms)",
        took.as_millis(),
        REAP_WINDOW.as_millis()
    );
    assert_eq!(
        after.timeouts(),
        PEERS as u64,
        "each one dropped at its pong deadline"
    );
    assert_eq!(
        after.closes(1006),
        PEERS as u64,
        "the handler saw 1006 for each"
    );
    assert_eq!(after.closes(1000) + after.closes(1001), 0);

    // The peers saw nothing at all: their reads timed out, with no close, FIN or RST.
    let mut old = Vec::new();
    for (rounds, stream) in streams {
        let (peer, error) = stream.join().expect("a streaming peer failed");
        assert!(
            timed_out(&error),
            "{}: ended by {error}, not by silence",
            peer.label
        );
        assert!(rounds.load(Ordering::SeqCst) >= 20);
        old.push(peer);
    }

    // The link comes back: new connections work, and the server has forgotten the old ones
    // (what an old peer sends now is answered with a RST, or it sees the server's FIN).
    net.link_up(Side::Client);
    let mut fresh = net.in_ns(Side::Client, || Peer::anonymous(addr, "after the fault"));
    fresh.nothing_pending();
    fresh.subscribe("back");
    let mut local_publisher = net.in_ns(Side::Server, || Peer::anonymous(local, "local"));
    assert_eq!(local_publisher.publish("back", json!("again")), 1);
    fresh.expect_message("back", json!("again"));
    // The server's kernel still held what it had sent before the fault (answers to rounds
    // in flight) and its FIN; with the link back they may arrive. What may not is an answer
    // to anything sent now: the connection ends (FIN, or a RST for the new data).
    let mut gone = old.remove(0);
    read_timeout(&gone, DEADLINE);
    let _ = gone
        .ws
        .send(Message::text(r#"{"type":"ping","id":"late"}"#));
    loop {
        match gone.ws.read() {
            Ok(Message::Text(t)) => {
                let got: Value = serde_json::from_str(t.as_str()).unwrap();
                assert_ne!(got["id"], "late", "the reaped connection was served");
            }
            Ok(_) => {}
            Err(e) => {
                assert!(!timed_out(&e), "no FIN or RST for a reaped connection: {e}");
                break;
            }
        }
    }
    let now = counters();
    assert_eq!(
        now.websockets(),
        2,
        "the new subscriber and the local publisher"
    );
    assert_eq!(now.timeouts(), PEERS as u64);
}

#[test]
fn a_black_hole_route_on_the_server_side_is_reaped_like_a_dead_link() {
    let net = Net::new("blackhole");
    let server = net.relay(&HEARTBEAT);
    let addr = net.server_addr(&server);
    let local = server.addr();
    let counters = || net.in_ns(Side::Server, || Counters::read(local));

    // An idle subscriber that reads all along: it answers every ping while it can hear them.
    let mut sub = net.in_ns(Side::Client, || Peer::anonymous(addr, "remote subscriber"));
    sub.subscribe("quiet");
    let heard = listen(sub);
    // Heartbeats answered over the veth link before the fault (the server pings again only
    // after a pong: an unanswered ping is followed by a drop).
    util::eventually("two pings to reach the subscriber", || {
        (heard.pings.load(Ordering::SeqCst) >= 2).then_some(())
    });
    let before = counters();
    assert_eq!((before.websockets(), before.timeouts()), (1, 0));

    // The link stays up; what the server sends to the client is discarded.
    net.blackhole(Side::Server);
    let (after, took) = wait_for(
        "the heartbeat to reap the peer behind the black hole",
        REAP_WINDOW + REAP_SLACK,
        counters,
        |c| c.websockets() == 0,
    );
    eprintln!(
        "black-hole route: peer reaped {} ms after the route was added",
        took.as_millis()
    );
    assert_eq!(after.timeouts(), 1);
    assert_eq!(after.closes(1006), 1);

    net.clear_blackhole(Side::Server);
    let mut fresh = net.in_ns(Side::Client, || Peer::anonymous(addr, "after the fault"));
    fresh.nothing_pending();
    assert!(
        heard.messages.try_recv().is_err(),
        "the old subscriber got nothing"
    );
}

/// One acknowledged publish: when its ack came, and how many subscribers it reached.
#[derive(Clone, Copy, Debug)]
struct Ack {
    at: Instant,
    seq: u64,
    delivered: u64,
}

#[test]
fn link_down_under_a_subscriber_mid_delivery_never_blocks_the_publisher() {
    let net = Net::new("sub-down");
    // The queue cap is far above what the paced publisher can queue for the dead subscriber
    // within the reaping window (under 1,000 messages of under 100 B a second): what drops
    // it is the heartbeat, not the slow-consumer policy.
    let server = net.relay(&[&HEARTBEAT[..], &["--max-backpressure", "8388608"]].concat());
    let addr = net.server_addr(&server);
    let local = server.addr();
    let counters = || net.in_ns(Side::Server, || Counters::read(local));

    let mut sub = net.in_ns(Side::Client, || Peer::anonymous(addr, "remote subscriber"));
    sub.subscribe("feed");
    read_timeout(&sub, SILENCE);
    let received = Arc::new(AtomicU64::new(0));
    let reader = {
        let received = Arc::clone(&received);
        thread::spawn(move || loop {
            match sub.ws.read() {
                Ok(Message::Text(t)) => {
                    let m: Value = serde_json::from_str(t.as_str()).unwrap();
                    let expected = received.load(Ordering::SeqCst);
                    assert_eq!(m["data"]["seq"], expected, "in order, nothing lost");
                    received.store(expected + 1, Ordering::SeqCst);
                }
                Ok(_) => {}
                Err(e) => return (sub, e),
            }
        })
    };

    // The publisher: inside the server's namespace, over loopback, never touched by the fault.
    let mut publisher = net.in_ns(Side::Server, || Peer::anonymous(local, "local publisher"));
    let stop = Arc::new(AtomicBool::new(false));
    let acks = Arc::new(Mutex::new(Vec::<Ack>::new()));
    let publishing = {
        let (stop, acks) = (Arc::clone(&stop), Arc::clone(&acks));
        thread::spawn(move || {
            let mut seq = 0;
            while !stop.load(Ordering::SeqCst) {
                // Peer::publish panics if an ack does not come within its read timeout.
                let delivered = publisher.publish("feed", json!({"seq": seq}));
                acks.lock().unwrap().push(Ack {
                    at: Instant::now(),
                    seq,
                    delivered,
                });
                seq += 1;
                // Paced, so that the backlog stays far below the queue cap (see above).
                thread::sleep(Duration::from_millis(1));
            }
        })
    };
    let acks_now = |f: &dyn Fn(&Ack) -> bool| acks.lock().unwrap().iter().filter(|a| f(a)).count();

    util::eventually("the subscriber to be mid-delivery", || {
        (received.load(Ordering::SeqCst) >= 100).then_some(())
    });
    net.link_down(Side::Client);
    let down = Instant::now();
    let (after, took) = wait_for(
        "the heartbeat to reap the subscriber",
        REAP_WINDOW + REAP_SLACK,
        counters,
        |c| c.websockets() == 1,
    );
    let reaped = Instant::now();
    eprintln!(
        "subscriber reaped {} ms after the link went down (window {} ms)",
        took.as_millis(),
        REAP_WINDOW.as_millis()
    );
    assert_eq!(after.timeouts(), 1);
    assert_eq!(after.closes(1006), 1);
    assert_eq!(
        after.slow_closes(),
        0,
        "dropped by the heartbeat, not as slow"
    );

    // Published while the subscriber was dead but not yet reaped: still delivered to its
    // queue, and acknowledged at once.
    let during = acks_now(&|a| a.at > down && a.delivered == 1);
    util::eventually("acks reaching nobody after the reap", || {
        (acks_now(&|a| a.at > reaped && a.delivered == 0) >= 10).then_some(())
    });
    // Before the link comes back (the server's FIN would then reach it): the subscriber
    // heard nothing since the fault.
    let (sub, error) = reader.join().expect("the subscriber saw disorder");
    assert!(
        timed_out(&error),
        "{}: ended by {error}, not by silence",
        sub.label
    );

    // The link comes back; a new subscriber gets the stream again.
    net.link_up(Side::Client);
    let up = Instant::now();
    let mut again = net.in_ns(Side::Client, || Peer::anonymous(addr, "new subscriber"));
    again.subscribe("feed");
    let first = again.recv()["data"]["seq"].as_u64().expect("a seq");
    let second = again.recv()["data"]["seq"].as_u64().expect("a seq");
    assert_eq!(second, first + 1, "in order");
    stop.store(true, Ordering::SeqCst);
    publishing
        .join()
        .expect("the publisher failed (an ack did not come)");

    let acks = acks.lock().unwrap();
    assert!(
        acks.iter().enumerate().all(|(i, a)| a.seq == i as u64),
        "every publish was acknowledged, in order"
    );
    let (longest, ended) = acks
        .windows(2)
        .map(|w| (w[1].at - w[0].at, w[1].at))
        .max()
        .unwrap_or((Duration::ZERO, down));
    let since_down = |t: Instant| {
        t.checked_duration_since(down)
            .map_or(-1, |d| d.as_millis() as i64)
    };
    eprintln!(
        "publisher: {} acks, {during} of them while the subscriber was dead and not yet \
         reaped; longest gap between acks {} ms, ending {} ms after the link went down \
         (reaped at {} ms, link up at {} ms)",
        acks.len(),
        longest.as_millis(),
        since_down(ended),
        since_down(reaped),
        since_down(up),
    );
    assert!(
        during >= 1,
        "no ack while the dead subscriber was still connected: the publisher was blocked"
    );
    drop(sub);
}

// ---------------------------------------------------------------------------------------
// A fault-injecting proxy
// ---------------------------------------------------------------------------------------

/// How far a publisher may run ahead of the direct subscriber it checks: 50 messages of
/// 2 KB stay inside the kernel's socket buffers, so that subscriber never has a queue on
/// the server (it is fast by construction, not by luck).
const AHEAD: u64 = 50;

/// Waits until `progress` (messages the direct subscriber has read) is within [`AHEAD`] of
/// `published`.
#[track_caller]
fn keep_pace(progress: &AtomicU64, published: u64) {
    let deadline = Instant::now() + DEADLINE;
    while progress.load(Ordering::SeqCst) + AHEAD < published {
        assert!(
            Instant::now() < deadline,
            "the direct subscriber stopped reading"
        );
        thread::sleep(Duration::from_micros(200));
    }
}

/// Microseconds since `epoch` (a publisher and its subscribers share one).
fn micros(epoch: Instant) -> u64 {
    epoch.elapsed().as_micros() as u64
}

#[test]
fn a_subscriber_behind_a_10_kb_s_link_is_closed_1008_while_a_direct_one_gets_everything() {
    let server = relay(&["--max-backpressure", "65536"]);
    let proxy = Proxy::start(server.addr());
    proxy.set_rate(Some(10_000));
    let epoch = Instant::now();

    let mut slow = Peer::anonymous(proxy.addr(), "slow subscriber");
    slow.subscribe("feed");
    read_timeout(&slow, DEADLINE);
    let slow_reader = thread::spawn(move || {
        let mut got = 0u64;
        while let Ok(m) = slow.ws.read() {
            got += u64::from(m.is_text());
        }
        got
    });

    let mut fast = Peer::anonymous(server.addr(), "direct subscriber");
    fast.subscribe("feed");
    let progress = Arc::new(AtomicU64::new(0));
    let fast_reader = {
        let progress = Arc::clone(&progress);
        thread::spawn(move || {
            let mut latencies = Vec::new();
            loop {
                let m = fast.recv();
                let seq = &m["data"]["seq"];
                if *seq == json!("end") {
                    return latencies;
                }
                assert_eq!(*seq, latencies.len() as u64, "in order, nothing lost");
                let sent = m["data"]["us"].as_u64().unwrap();
                latencies.push(Duration::from_micros(micros(epoch).saturating_sub(sent)));
                progress.fetch_add(1, Ordering::SeqCst);
            }
        })
    };

    // Publish 2 KB messages until the slow one is closed (its backlog passes the kernel's
    // buffers and then the 64 KiB cap), then some more.
    let mut publisher = Peer::anonymous(server.addr(), "publisher");
    let pad = "x".repeat(2000);
    let mut seq = 0u64;
    let mut after_close = None;
    while after_close.is_none_or(|n| seq < n + 200) {
        let delivered =
            publisher.publish("feed", json!({"seq": seq, "us": micros(epoch), "pad": pad}));
        seq += 1;
        keep_pace(&progress, seq);
        if after_close.is_some() {
            assert_eq!(delivered, 1, "only the direct subscriber is left");
        }
        if after_close.is_none()
            && seq % 100 == 0
            && Counters::read(server.addr()).slow_closes() > 0
        {
            after_close = Some(seq);
        }
        assert!(
            seq < 20_000,
            "20,000 messages (40 MB) and the slow subscriber is still open"
        );
    }
    publisher.publish("feed", json!({"seq": "end"}));
    let latencies = {
        let mut l = fast_reader
            .join()
            .expect("the direct subscriber lost or reordered messages");
        l.sort();
        l
    };
    assert_eq!(
        latencies.len() as u64,
        seq,
        "the direct subscriber got every message"
    );
    eprintln!(
        "direct subscriber: {seq} messages of 2 KB, latency p50 {} µs, p99 {} µs, max {} µs \
         (the slow one closed after {} published)",
        percentile(&latencies, 50).as_micros(),
        percentile(&latencies, 99).as_micros(),
        latencies.last().unwrap().as_micros(),
        after_close.unwrap()
    );
    assert!(
        *latencies.last().unwrap() < DEADLINE,
        "a message took more than {} s to the direct subscriber",
        DEADLINE.as_secs()
    );

    let (counters, _) = wait_for(
        "the slow subscriber's close to complete",
        DEADLINE,
        || Counters::read(server.addr()),
        |c| c.closes(1008) == 1,
    );
    assert_eq!(counters.slow_closes(), 1);
    assert_eq!(counters.slow_drops(), 0, "the relay's policy is to close");
    proxy.reset();
    let slow_got = slow_reader.join().unwrap();
    eprintln!(
        "slow subscriber: {slow_got} messages through the 10 KB/s link ({} bytes)",
        proxy.bytes_to_client()
    );
    assert!(slow_got < seq);
}

/// The library's pub/sub at its simplest: `sub:T` subscribes to `T` and answers `ok`; the
/// test publishes through the `ServerHandle`.
struct Subscriptions;

impl Handler for Subscriptions {
    type State = ();

    fn on_upgrade(&mut self, _req: &HttpRequest<'_>) -> Decision<()> {
        Decision::Accept(())
    }

    fn on_message(&mut self, ctx: &mut Ctx<'_>, _state: &mut (), msg: Msg<'_>) {
        if let Msg::Text(pattern) = msg {
            if let Some(pattern) = pattern.strip_prefix("sub:") {
                ctx.subscribe(pattern);
                ctx.send_text("ok");
            }
        }
    }
}

/// A subscriber of [`Subscriptions`] on `addr`.
fn subscriber(addr: SocketAddr) -> Client {
    let mut ws = connect_to(addr, &format!("ws://{addr}/"));
    ws.send(Message::text("sub:feed")).unwrap();
    assert_eq!(recv_text(&mut ws), "ok");
    ws
}

/// `SEQ:MICROS:PAD` of a [`Subscriptions`] message: its sequence number and when it was sent.
fn seq_and_sent(text: &str) -> (u64, u64) {
    let mut parts = text.split(':');
    let mut next = || {
        parts
            .next()
            .and_then(|p| p.parse().ok())
            .expect("SEQ:MICROS:PAD")
    };
    (next(), next())
}

#[test]
fn with_the_drop_policy_a_subscriber_behind_a_10_kb_s_link_loses_only_its_own_messages() {
    const BACKPRESSURE: usize = 64 * 1024;
    let server = util::spawn_server(
        Config::default()
            .max_backpressure(BACKPRESSURE)
            .slow_consumer(SlowConsumer::Drop),
        Subscriptions,
    );
    let proxy = Proxy::start(server.addr);
    proxy.set_rate(Some(10_000));
    let epoch = Instant::now();
    let mut slow = subscriber(proxy.addr());
    let mut fast = subscriber(server.addr);
    let progress = Arc::new(AtomicU64::new(0));
    let fast_reader = {
        let progress = Arc::clone(&progress);
        thread::spawn(move || {
            let mut latencies = Vec::new();
            loop {
                let text = recv_text(&mut fast);
                if text == "end" {
                    return (fast, latencies);
                }
                let (seq, sent) = seq_and_sent(&text);
                assert_eq!(seq, latencies.len() as u64, "in order, nothing lost");
                latencies.push(Duration::from_micros(micros(epoch).saturating_sub(sent)));
                progress.fetch_add(1, Ordering::SeqCst);
            }
        })
    };

    // Publish until the slow one's messages are being dropped, then some more.
    let pad = "x".repeat(2000);
    let mut seq = 0u64;
    let mut dropping = None;
    while dropping.is_none_or(|n| seq < n + 200) {
        let text = format!("{seq}:{}:{pad}", micros(epoch));
        server.handle.publish("feed", Msg::Text(&text)).unwrap();
        seq += 1;
        keep_pace(&progress, seq);
        if dropping.is_none() && seq % 100 == 0 && server.handle.stats().unwrap().slow_drops > 0 {
            dropping = Some(seq);
        }
        assert!(
            seq < 20_000,
            "20,000 messages (40 MB) and nothing was dropped"
        );
    }
    server.handle.publish("feed", Msg::Text("end")).unwrap();
    let (_fast, mut latencies) = fast_reader
        .join()
        .expect("the direct subscriber lost or reordered messages");
    latencies.sort();
    assert_eq!(
        latencies.len() as u64,
        seq,
        "the direct subscriber got every message"
    );

    let stats = server.handle.stats().unwrap();
    assert!(stats.slow_drops > 0, "nothing was dropped: {stats:?}");
    assert_eq!(stats.slow_closes, 0);
    assert_eq!(
        stats.connections_open, 2,
        "the slow subscriber is still connected"
    );
    eprintln!(
        "drop policy: direct subscriber got all {seq} messages, latency p50 {} µs, p99 {} µs, \
         max {} µs; {} dropped for the slow one (first after {} published)",
        percentile(&latencies, 50).as_micros(),
        percentile(&latencies, 99).as_micros(),
        latencies.last().unwrap().as_micros(),
        stats.slow_drops,
        dropping.unwrap()
    );
    assert!(*latencies.last().unwrap() < DEADLINE);

    // What reaches the slow one through its 10 KB/s link is in order.
    let mut last = None;
    for _ in 0..3 {
        let (got, _) = seq_and_sent(&recv_text(&mut slow));
        assert!(
            last < Some(got),
            "the slow subscriber's messages are out of order"
        );
        last = Some(got);
    }
    proxy.reset();
}

#[test]
fn a_subscriber_behind_a_200_ms_link_loses_nothing_and_sees_nothing_reordered() {
    const MESSAGES: u64 = 2000;
    const DELAY: Duration = Duration::from_millis(200);
    let server = relay(&[]);
    let proxy = Proxy::start(server.addr());
    proxy.set_delay(DELAY);

    let mut far = Peer::anonymous(proxy.addr(), "subscriber behind 200 ms");
    let asked = Instant::now();
    far.subscribe("seq");
    let round_trip = asked.elapsed();
    assert!(
        round_trip >= 2 * DELAY,
        "the link is not delayed: the subscribe took {round_trip:?}"
    );
    let reader = thread::spawn(move || {
        for n in 0..MESSAGES {
            far.expect_message("seq", json!(n));
        }
        far.nothing_pending();
        far
    });
    let mut publisher = Peer::anonymous(server.addr(), "publisher");
    for n in 0..MESSAGES {
        assert_eq!(publisher.publish("seq", json!(n)), 1);
    }
    let _far = reader
        .join()
        .expect("the subscriber behind 200 ms lost or reordered messages");
    let counters = Counters::read(server.addr());
    assert_eq!(counters.slow_closes() + counters.slow_drops(), 0);
    assert_eq!(counters.websockets(), 2);
    eprintln!("200 ms link: {MESSAGES} messages in order, subscribe round trip {round_trip:?}");
}

#[test]
fn a_black_holed_peer_is_reaped_by_the_heartbeat_and_a_bystander_is_served() {
    let server = relay(&HEARTBEAT);
    let proxy = Proxy::start(server.addr());
    // Both read all along, so both answer the server's pings: only the fault can make the
    // server drop one.
    let mut held = Peer::anonymous(proxy.addr(), "black-holed peer");
    held.nothing_pending();
    let held = listen(held);
    let mut bystander = Peer::anonymous(server.addr(), "bystander");
    bystander.subscribe("still");
    let heard = listen(bystander);
    util::eventually("two pings answered through the proxy", || {
        (held.pings.load(Ordering::SeqCst) >= 2).then_some(())
    });
    assert_eq!(Counters::read(server.addr()).timeouts(), 0);

    proxy.set_blackhole(true);
    let (after, took) = wait_for(
        "the heartbeat to reap the black-holed peer",
        REAP_WINDOW + REAP_SLACK,
        || Counters::read(server.addr()),
        |c| c.websockets() == 1,
    );
    eprintln!(
        "black hole: peer reaped after {} ms (window {} ms)",
        took.as_millis(),
        REAP_WINDOW.as_millis()
    );
    assert_eq!(after.timeouts(), 1);
    assert_eq!(after.closes(1006), 1);
    assert_eq!(proxy.connections(), 1, "the proxy kept both sockets open");

    // The bystander answered every ping, and is still served.
    let mut publisher = Peer::anonymous(server.addr(), "publisher");
    assert_eq!(publisher.publish("still", json!("here")), 1);
    let got = heard
        .messages
        .recv_timeout(DEADLINE)
        .expect("the bystander got nothing");
    assert_eq!(
        util::relay::without_id(got),
        json!({"type": "message", "topic": "still", "data": "here"})
    );
    assert_eq!(Counters::read(server.addr()).timeouts(), 1);
    drop(held);
}

#[test]
fn a_reset_mid_frame_is_a_1006_for_that_peer_and_a_bystander_is_served() {
    let server = relay(&[]);
    let proxy = Proxy::start(server.addr());
    let mut victim = RawClient::connect(proxy.addr()).expect("handshake through the proxy");
    let mut bystander = Peer::anonymous(server.addr(), "bystander");
    bystander.subscribe("b");

    // A masked text frame that announces 1,000 bytes, of which 100 are sent.
    let payload = vec![b'a'; 1000];
    let frame = raw::client_frame(true, raw::op::TEXT, &payload);
    let partial = &frame[..frame.len() - 900];
    let before = Counters::read(server.addr()).bytes_in();
    let request_bytes = Counters::read(server.addr()).bytes_in() - before;
    victim.send(partial).unwrap();
    // The server has read the partial frame through the proxy: its byte count grew by it
    // (each /metrics request adds the same request_bytes).
    let mut reads = 1u64;
    util::eventually("the server to read the partial frame", || {
        reads += 1;
        let grown = Counters::read(server.addr())
            .bytes_in()
            .checked_sub(before + reads * request_bytes);
        (grown == Some(partial.len() as u64)).then_some(())
    });

    proxy.reset();
    let (after, _) = wait_for(
        "the server to close the reset connection",
        DEADLINE,
        || Counters::read(server.addr()),
        |c| c.websockets() == 1,
    );
    assert_eq!(after.closes(1006), 1, "the handler saw 1006");
    assert_eq!(
        after.timeouts(),
        0,
        "closed by the reset, not by a deadline"
    );
    let mut buf = [0u8; 16];
    let seen = io::Read::read(&mut victim.stream(), &mut buf);
    assert!(
        matches!(&seen, Err(e) if e.kind() == io::ErrorKind::ConnectionReset),
        "the client side was reset too: {seen:?}"
    );

    bystander.nothing_pending();
    let mut publisher = Peer::anonymous(server.addr(), "publisher");
    assert_eq!(publisher.publish("b", json!("served")), 1);
    bystander.expect_message("b", json!("served"));
}

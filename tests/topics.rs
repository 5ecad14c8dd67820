//! Topics through the library API: subscribe, publish, wildcards, unsubscribe, broadcast,
//! publishing from another thread, and the slow-consumer policies.
//!
//! The handler speaks a tiny text protocol:
//! - `sub:T` subscribes to pattern `T` and answers `subscribed:T`;
//! - `unsub:T` unsubscribes and answers `unsubscribed:T`;
//! - `pub:T:payload` publishes `payload` on topic `T` and answers `n:<count>`;
//! - `all:payload` broadcasts `payload` to every open connection and answers `n:<count>`.

mod util;

use std::io::Write;
use std::net::TcpStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use emberws::{
    CloseCode, Config, Ctx, Decision, Handler, HttpRequest, Message as Msg, SlowConsumer,
    Subscribed,
};
use socket2::{Domain, Socket, Type};
use tungstenite::Message;
use util::clients::{connect, recv_text, Client};
use util::raw::{self, op, random_key, upgrade_request, Event, RawClient};
use util::{eventually, spawn_server, CloseLog, TestServer, DEADLINE};

/// The pub/sub handler; records every close code it is told about.
#[derive(Default)]
struct PubSub {
    closes: CloseLog,
}

impl Handler for PubSub {
    type State = ();

    fn on_upgrade(&mut self, _req: &HttpRequest<'_>) -> Decision<()> {
        Decision::Accept(())
    }

    fn on_message(&mut self, ctx: &mut Ctx<'_>, _state: &mut (), msg: Msg<'_>) {
        let Msg::Text(text) = msg else { return };
        if let Some(pattern) = text.strip_prefix("sub:") {
            let ok = ctx.subscribe(pattern) == Subscribed::Added;
            ctx.send_text(&format!("subscribed:{pattern}:{ok}"));
        } else if let Some(pattern) = text.strip_prefix("unsub:") {
            let ok = ctx.unsubscribe(pattern);
            ctx.send_text(&format!("unsubscribed:{pattern}:{ok}"));
        } else if let Some(rest) = text.strip_prefix("pub:") {
            let (topic, payload) = rest.split_once(':').unwrap_or((rest, ""));
            let n = ctx.publish(topic, Msg::Text(payload)).delivered();
            ctx.send_text(&format!("n:{n}"));
        } else if let Some(payload) = text.strip_prefix("all:") {
            let n = ctx.broadcast(Msg::Text(payload)).delivered();
            ctx.send_text(&format!("n:{n}"));
        }
    }

    fn on_close(&mut self, _ctx: &mut Ctx<'_>, _state: (), code: CloseCode, _reason: &str) {
        self.closes.record(code);
    }
}

fn start(cfg: Config) -> (TestServer, CloseLog) {
    let handler = PubSub::default();
    let closes = handler.closes.clone();
    (spawn_server(cfg, handler), closes)
}

fn send(ws: &mut Client, text: &str) {
    ws.send(Message::text(text)).expect("send");
}

/// Subscribes and waits for the server's answer, so later publishes find the subscription.
fn subscribe(ws: &mut Client, pattern: &str) {
    send(ws, &format!("sub:{pattern}"));
    assert_eq!(recv_text(ws), format!("subscribed:{pattern}:true"));
}

/// Publishes and returns how many subscribers the server delivered to.
fn publish(ws: &mut Client, topic: &str, payload: &str) -> usize {
    send(ws, &format!("pub:{topic}:{payload}"));
    let reply = recv_text(ws);
    reply
        .strip_prefix("n:")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("expected n:<count>, got {reply:?}"))
}

/// Closes cleanly and waits for the server to end the TCP connection.
fn close(mut ws: Client) {
    ws.close(None).expect("close");
    loop {
        match ws.read() {
            Ok(_) => continue,
            Err(tungstenite::Error::ConnectionClosed) => return,
            Err(e) => panic!("close did not complete cleanly: {e}"),
        }
    }
}

#[test]
fn fan_out_delivers_every_message_to_every_subscriber_in_order() {
    const N: usize = 20;
    const M: usize = 200;
    let (server, _) = start(Config::default());
    let mut subs: Vec<Client> = (0..N).map(|_| connect(&server)).collect();
    for ws in &mut subs {
        subscribe(ws, "news");
    }
    let mut publisher = connect(&server);
    // Each subscriber reads on its own thread while the publisher publishes.
    let readers: Vec<_> = subs
        .into_iter()
        .map(|mut ws| {
            thread::spawn(move || (0..M).map(|_| recv_text(&mut ws)).collect::<Vec<String>>())
        })
        .collect();
    for i in 0..M {
        let n = publish(
            &mut publisher,
            "news",
            &format!("item-{i}-{}", "x".repeat(40)),
        );
        assert_eq!(n, N, "publish #{i} reached {n} subscribers, not {N}");
    }
    let expected: Vec<String> = (0..M)
        .map(|i| format!("item-{i}-{}", "x".repeat(40)))
        .collect();
    for (k, reader) in readers.into_iter().enumerate() {
        let got = reader.join().expect("subscriber thread panicked");
        assert!(
            got == expected,
            "subscriber {k} got the messages out of order or altered"
        );
    }
}

#[test]
fn wildcards_match_the_right_topics_and_deliver_once() {
    let (server, _) = start(Config::default());
    let mut plus = connect(&server);
    let mut hash = connect(&server);
    let mut both = connect(&server);
    let mut exact_and_plus = connect(&server);
    subscribe(&mut plus, "a/+");
    subscribe(&mut hash, "a/#");
    subscribe(&mut both, "a/+");
    subscribe(&mut both, "a/#");
    subscribe(&mut exact_and_plus, "a/b");
    subscribe(&mut exact_and_plus, "a/+");
    let mut all = [plus, hash, both, exact_and_plus];
    for ws in &mut all {
        subscribe(ws, "end");
    }
    let mut publisher = connect(&server);
    let cases: [(&str, usize); 8] = [
        ("a/b", 4),
        ("a/b/c", 2),
        ("a", 2),
        ("b/a", 0),
        ("ab/c", 0),
        ("a/x", 4),
        ("x/a/b", 0),
        ("a/x/y/z", 2),
    ];
    for (topic, n) in cases {
        assert_eq!(
            publish(&mut publisher, topic, topic),
            n,
            "subscribers reached by {topic:?}"
        );
    }
    assert_eq!(publish(&mut publisher, "end", "end"), 4);
    let expected: [&[&str]; 4] = [
        &["a/b", "a/x"],
        &["a/b", "a/b/c", "a", "a/x", "a/x/y/z"],
        &["a/b", "a/b/c", "a", "a/x", "a/x/y/z"],
        &["a/b", "a/x"],
    ];
    let names = ["a/+", "a/#", "a/+ and a/#", "a/b and a/+"];
    for ((ws, want), name) in all.iter_mut().zip(expected).zip(names) {
        let mut got = Vec::new();
        loop {
            let m = recv_text(ws);
            if m == "end" {
                break;
            }
            got.push(m);
        }
        assert_eq!(got, want, "the subscriber of {name} got the wrong topics");
    }
}

#[test]
fn dollar_topics_reach_only_the_patterns_that_name_them() {
    let (server, _) = start(Config::default());
    let patterns = ["#", "+/x", "+", "$SYS/#", "$SYS/+", "$SYS/x", "a/+"];
    let mut subs: Vec<Client> = patterns
        .iter()
        .map(|p| {
            let mut ws = connect(&server);
            subscribe(&mut ws, p);
            subscribe(&mut ws, "end");
            ws
        })
        .collect();
    let mut publisher = connect(&server);
    // As in MQTT, a first-level wildcard does not match a topic that starts with `$`; a `$`
    // further down is an ordinary character.
    let cases: [(&str, usize); 4] = [("$SYS/x", 3), ("$SYS", 1), ("a/x", 3), ("a/$SYS", 2)];
    for (topic, n) in cases {
        assert_eq!(
            publish(&mut publisher, topic, topic),
            n,
            "subscribers reached by {topic:?}"
        );
    }
    assert_eq!(publish(&mut publisher, "end", "end"), patterns.len());
    let expected: [&[&str]; 7] = [
        &["a/x", "a/$SYS"],
        &["a/x"],
        &[],
        &["$SYS/x", "$SYS"],
        &["$SYS/x"],
        &["$SYS/x"],
        &["a/x", "a/$SYS"],
    ];
    for ((ws, want), pattern) in subs.iter_mut().zip(expected).zip(patterns) {
        let mut got = Vec::new();
        loop {
            let m = recv_text(ws);
            if m == "end" {
                break;
            }
            got.push(m);
        }
        assert_eq!(
            got, want,
            "the subscriber of {pattern} got the wrong topics"
        );
    }
}

#[test]
fn unsubscribe_stops_delivery() {
    let (server, _) = start(Config::default());
    let mut sub = connect(&server);
    subscribe(&mut sub, "t/1");
    subscribe(&mut sub, "marker");
    let mut publisher = connect(&server);
    assert_eq!(publish(&mut publisher, "t/1", "first"), 1);
    assert_eq!(recv_text(&mut sub), "first");
    send(&mut sub, "unsub:t/1");
    assert_eq!(recv_text(&mut sub), "unsubscribed:t/1:true");
    assert_eq!(publish(&mut publisher, "t/1", "second"), 0);
    send(&mut sub, "unsub:t/1");
    assert_eq!(
        recv_text(&mut sub),
        "unsubscribed:t/1:false",
        "a second unsubscribe should say false"
    );
    assert_eq!(publish(&mut publisher, "marker", "marker"), 1);
    assert_eq!(
        recv_text(&mut sub),
        "marker",
        "a message arrived after the unsubscribe"
    );
    // A wildcard subscription ends the same way.
    subscribe(&mut sub, "w/#");
    assert_eq!(publish(&mut publisher, "w/x", "w1"), 1);
    assert_eq!(recv_text(&mut sub), "w1");
    send(&mut sub, "unsub:w/#");
    assert_eq!(recv_text(&mut sub), "unsubscribed:w/#:true");
    assert_eq!(publish(&mut publisher, "w/x", "w2"), 0);
    assert_eq!(publish(&mut publisher, "marker", "marker2"), 1);
    assert_eq!(recv_text(&mut sub), "marker2");
}

#[test]
fn subscriptions_end_with_the_connection() {
    let (server, _) = start(Config::default());
    let mut a = connect(&server);
    let mut b = connect(&server);
    let c = RawClient::connect(server.addr).expect("raw connect");
    subscribe(&mut a, "room/#");
    subscribe(&mut b, "room/+");
    let mut c = c;
    c.send_frame(true, 0, op::TEXT, b"sub:room/1").unwrap();
    match c.read_event().unwrap() {
        Event::Message { payload, .. } => assert_eq!(payload, b"subscribed:room/1:true"),
        other => panic!("expected the subscribe answer, got {other:?}"),
    }
    let mut publisher = connect(&server);
    assert_eq!(publish(&mut publisher, "room/1", "hello"), 3);
    assert_eq!(recv_text(&mut a), "hello");
    assert_eq!(recv_text(&mut b), "hello");

    // A clean close.
    close(b);
    eventually("the closed connection's subscription to end", || {
        (publish(&mut publisher, "room/1", "probe") == 2).then_some(())
    });
    // An abrupt one: the TCP connection just goes away.
    drop(c);
    eventually("the dropped connection's subscription to end", || {
        (publish(&mut publisher, "room/1", "probe") == 1).then_some(())
    });
    // The survivor still gets messages, in order.
    assert_eq!(publish(&mut publisher, "room/1", "last"), 1);
    let mut got = recv_text(&mut a);
    while got == "probe" {
        got = recv_text(&mut a);
    }
    assert_eq!(got, "last");
}

#[test]
fn broadcast_reaches_every_open_connection() {
    let (server, _) = start(Config::default());
    let mut clients: Vec<Client> = (0..5).map(|_| connect(&server)).collect();
    // A connection still in its handshake is not open: no broadcast for it.
    let mut pending = raw::connect_tcp(server.addr).unwrap();
    let key = raw::random_key();
    let request = raw::upgrade_request(&server.addr.to_string(), "/", &key, &[]);
    let (first, rest) = request.split_at(16);
    pending.write_all(first.as_bytes()).unwrap();
    server.wait_for_open_connections(6, "the pending connection to be accepted");

    send(&mut clients[0], "all:hello everyone");
    let mut sender_got = vec![recv_text(&mut clients[0]), recv_text(&mut clients[0])];
    sender_got.sort();
    assert_eq!(sender_got, ["hello everyone", "n:5"]);
    for ws in &mut clients[1..] {
        assert_eq!(recv_text(ws), "hello everyone");
    }

    // It completes its handshake: the next broadcast is the first thing it gets.
    pending.write_all(rest.as_bytes()).unwrap();
    let mut late = RawClient::from_stream(pending);
    assert_eq!(late.read_http_head().unwrap().status, 101);
    server
        .handle
        .broadcast(Msg::Text("from the handle"))
        .unwrap();
    for ws in &mut clients {
        assert_eq!(recv_text(ws), "from the handle");
    }
    assert_eq!(
        late.read_event().unwrap(),
        Event::Message {
            binary: false,
            payload: b"from the handle".to_vec()
        }
    );

    // After one closes, a broadcast reaches the five left.
    let gone = clients.pop().unwrap();
    close(gone);
    server.wait_for_open_connections(5, "the closed connection to be gone");
    send(&mut clients[1], "all:again");
    let mut sender_got = vec![recv_text(&mut clients[1]), recv_text(&mut clients[1])];
    sender_got.sort();
    assert_eq!(sender_got, ["again", "n:5"]);
    for (i, ws) in clients.iter_mut().enumerate() {
        if i != 1 {
            assert_eq!(recv_text(ws), "again");
        }
    }
    assert_eq!(
        late.read_event().unwrap(),
        Event::Message {
            binary: false,
            payload: b"again".to_vec()
        }
    );
}

#[test]
fn subscriptions_per_connection_are_capped() {
    let (server, _) = start(Config::default().max_subscriptions(2));
    let mut ws = connect(&server);
    subscribe(&mut ws, "a");
    subscribe(&mut ws, "b/#");
    send(&mut ws, "sub:c");
    assert_eq!(recv_text(&mut ws), "subscribed:c:false");
    send(&mut ws, "sub:a");
    assert_eq!(
        recv_text(&mut ws),
        "subscribed:a:false",
        "a repeated subscribe should say false"
    );
    let mut publisher = connect(&server);
    assert_eq!(publish(&mut publisher, "c", "no"), 0);
    // Unsubscribing makes room again.
    send(&mut ws, "unsub:a");
    assert_eq!(recv_text(&mut ws), "unsubscribed:a:true");
    subscribe(&mut ws, "c");
    assert_eq!(publish(&mut publisher, "c", "yes"), 1);
    assert_eq!(recv_text(&mut ws), "yes");
}

#[test]
fn publishing_from_another_thread_reaches_subscribers() {
    const M: usize = 100;
    let (server, _) = start(Config::default());
    let mut subs = [connect(&server), connect(&server)];
    subscribe(&mut subs[0], "sensors/temp");
    subscribe(&mut subs[1], "sensors/+");
    let mut other = connect(&server);
    subscribe(&mut other, "sensors/humidity");
    let handle = server.handle.clone();
    let sensor = thread::spawn(move || {
        for i in 0..M {
            handle
                .publish("sensors/temp", Msg::Text(&format!("t={i}")))
                .expect("publish");
        }
        handle
            .publish("sensors/temp", Msg::Binary(&[0, 1, 2, 255]))
            .expect("publish");
        handle
            .publish("sensors/humidity", Msg::Text("h=40"))
            .expect("publish");
    });
    sensor.join().expect("sensor thread panicked");
    for ws in &mut subs {
        for i in 0..M {
            assert_eq!(recv_text(ws), format!("t={i}"));
        }
        match ws.read().expect("read") {
            Message::Binary(b) => assert_eq!(&b[..], &[0, 1, 2, 255]),
            other => panic!("expected the binary reading, got {other:?}"),
        }
    }
    assert_eq!(recv_text(&mut subs[1]), "h=40");
    assert_eq!(
        recv_text(&mut other),
        "h=40",
        "the humidity subscriber got a temperature reading"
    );
}

// ---------------------------------------------------------------------------------
// Slow consumers
// ---------------------------------------------------------------------------------

const FIREHOSE: &str = "firehose";
/// At most this many messages are published: far more than the kernel buffers of a
/// stalled socket can take (the send buffer autotunes up to `tcp_wmem`'s 4 MiB).
const MAX_MESSAGES: usize = 12_000;
/// Published after the policy first applied to the slow subscriber.
const AFTER_POLICY: usize = 200;
const PAYLOAD: usize = 1024;
const BACKPRESSURE: usize = 64 * 1024;
/// The publisher stays at most this many messages ahead of the fast subscriber, so the
/// fast one never has a queue on the server: it is fast by construction, not by luck.
const WINDOW: usize = 16;
/// A 1 KiB payload takes a 4-byte header; allow the largest header anyway.
const ONE_FRAME: u64 = PAYLOAD as u64 + 14;

fn payload(i: usize) -> String {
    let head = format!("{i:06}:");
    format!("{head}{}", "p".repeat(PAYLOAD - head.len()))
}

fn index_of(payload: &[u8]) -> usize {
    assert_eq!(
        payload.len(),
        PAYLOAD,
        "a firehose message has the wrong size"
    );
    std::str::from_utf8(&payload[..6]).unwrap().parse().unwrap()
}

/// A raw subscriber that will stop reading: subscribed, answer read, then left alone.
/// Its receive buffer is made small so the kernel cannot absorb the firehose for it.
fn slow_subscriber(server: &TestServer) -> RawClient {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(&server.addr.into()).unwrap();
    let stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    stream.set_write_timeout(Some(DEADLINE)).unwrap();
    let mut slow = RawClient::from_stream(stream);
    let key = random_key();
    slow.send(upgrade_request(&server.addr.to_string(), "/", &key, &[]).as_bytes())
        .unwrap();
    let head = slow.read_http_head().unwrap();
    assert_eq!(head.status, 101, "{}", head.head);
    slow.send_frame(true, 0, op::TEXT, format!("sub:{FIREHOSE}").as_bytes())
        .unwrap();
    match slow.read_event().unwrap() {
        Event::Message { payload, .. } => {
            assert_eq!(payload, format!("subscribed:{FIREHOSE}:true").as_bytes())
        }
        other => panic!("expected the subscribe answer, got {other:?}"),
    }
    slow
}

/// A fast subscriber on its own thread: reads until `END`, counting into `progress`.
fn fast_subscriber(
    server: &TestServer,
    progress: Arc<AtomicUsize>,
) -> thread::JoinHandle<Vec<usize>> {
    let mut fast = connect(server);
    subscribe(&mut fast, FIREHOSE);
    thread::spawn(move || {
        let mut got = Vec::new();
        loop {
            let m = recv_text(&mut fast);
            if m == "END" {
                close(fast);
                return got;
            }
            got.push(index_of(m.as_bytes()));
            progress.fetch_add(1, Ordering::SeqCst);
        }
    })
}

/// Publishes the firehose, never more than [`WINDOW`] ahead of the fast subscriber, until
/// [`AFTER_POLICY`] messages after the first one the slow subscriber did not get (or
/// [`MAX_MESSAGES`]); returns the delivery count the server answered for each.
fn run_firehose(server: &TestServer, progress: &AtomicUsize) -> Vec<usize> {
    let mut publisher = connect(server);
    let mut counts = Vec::new();
    let mut first_missed = None;
    for i in 0..MAX_MESSAGES {
        let deadline = Instant::now() + DEADLINE;
        while progress.load(Ordering::SeqCst) + WINDOW < i {
            assert!(
                Instant::now() < deadline,
                "the fast subscriber stalled at {i}"
            );
            thread::yield_now();
        }
        let n = publish(&mut publisher, FIREHOSE, &payload(i));
        counts.push(n);
        if n < 2 && first_missed.is_none() {
            first_missed = Some(i);
        }
        if first_missed.is_some_and(|f| i >= f + AFTER_POLICY) {
            break;
        }
    }
    close(publisher);
    counts
}

/// Publishes `END` once nothing is queued anywhere, so no policy can drop it.
fn publish_end_when_drained(server: &TestServer) {
    eventually("the server's queues to drain", || {
        (server.handle.stats().ok()?.queued_bytes == 0).then_some(())
    });
    server.handle.publish(FIREHOSE, Msg::Text("END")).unwrap();
}

#[test]
fn slow_consumer_is_closed_with_1008_and_the_fast_one_gets_everything() {
    let (server, closes) = start(
        Config::default()
            .max_backpressure(BACKPRESSURE)
            .close_timeout(Duration::from_secs(20)),
    );
    let mut slow = slow_subscriber(&server);
    let progress = Arc::new(AtomicUsize::new(0));
    let fast = fast_subscriber(&server, Arc::clone(&progress));
    let counts = run_firehose(&server, &progress);

    let stats = server.handle.stats().unwrap();
    assert_eq!(
        stats.slow_closes, 1,
        "the slow subscriber was not closed as one: {stats:?}"
    );
    assert!(
        stats.queued_high_water <= BACKPRESSURE as u64 + ONE_FRAME,
        "queued bytes reached {}, over max_backpressure {BACKPRESSURE} + one message",
        stats.queued_high_water
    );
    let codes = closes.codes();
    assert_eq!(
        codes.iter().filter(|&&c| c == 1008).count(),
        1,
        "the handler should see one 1008 close, saw {codes:?}"
    );
    // Delivered to both until the slow one was closed, then to the fast one only.
    assert!(
        counts.iter().all(|&n| n == 1 || n == 2),
        "odd delivery counts"
    );
    assert!(
        counts.windows(2).all(|w| w[0] >= w[1]),
        "delivery count went back up"
    );
    assert_eq!(counts.last(), Some(&1));

    // The slow one reads at last: a gapless prefix of the firehose, then the 1008 close,
    // which it answers.
    let reader = thread::spawn(move || {
        let mut next = 0;
        loop {
            match slow
                .read_event()
                .expect("the slow subscriber's connection failed")
            {
                Event::Message { payload, .. } => {
                    assert_eq!(
                        index_of(&payload),
                        next,
                        "the slow subscriber's stream has a gap"
                    );
                    next += 1;
                }
                Event::Close { code, .. } => {
                    assert_eq!(code, Some(1008), "the slow subscriber's close code");
                    slow.send_close(1008, b"").unwrap();
                    slow.wait_for_eof(DEADLINE)
                        .expect("the server did not end the connection");
                    return next;
                }
                other => panic!("the slow subscriber got {other:?} instead of a close frame"),
            }
        }
    });
    let slow_got = reader.join().expect("slow reader panicked");
    assert!(
        slow_got < counts.len(),
        "the slow subscriber got everything: it was never slow"
    );

    publish_end_when_drained(&server);
    let got = fast.join().expect("fast subscriber panicked");
    assert!(
        got == (0..counts.len()).collect::<Vec<_>>(),
        "the fast subscriber missed messages"
    );
    server.wait_for_open_connections(0, "every connection to end");
    let mut codes = closes.codes();
    codes.sort_unstable();
    assert_eq!(
        codes,
        [1005, 1005, 1008],
        "publisher, fast and slow subscriber closes"
    );
}

#[test]
fn slow_consumer_with_drop_policy_stays_open_and_loses_only_its_own_messages() {
    let (server, closes) = start(
        Config::default()
            .max_backpressure(BACKPRESSURE)
            .slow_consumer(SlowConsumer::Drop),
    );
    let mut slow = slow_subscriber(&server);
    let progress = Arc::new(AtomicUsize::new(0));
    let fast = fast_subscriber(&server, Arc::clone(&progress));
    let counts = run_firehose(&server, &progress);

    let stats = server.handle.stats().unwrap();
    assert!(
        stats.slow_drops > 0,
        "nothing was dropped: the subscriber was never slow"
    );
    assert_eq!(stats.slow_closes, 0);
    assert!(
        stats.queued_high_water <= BACKPRESSURE as u64 + ONE_FRAME,
        "queued bytes reached {}, over max_backpressure {BACKPRESSURE} + one message",
        stats.queued_high_water
    );
    assert!(
        counts.iter().all(|&n| n == 1 || n == 2),
        "odd delivery counts"
    );
    let delivered_to_slow = counts.iter().filter(|&&n| n == 2).count();

    // The slow one reads now: increasing indices, with gaps, until END.
    let reader = thread::spawn(move || {
        let mut got = Vec::new();
        loop {
            match slow
                .read_event()
                .expect("the slow subscriber's connection failed")
            {
                Event::Message { payload, .. } if payload == b"END" => return (slow, got),
                Event::Message { payload, .. } => got.push(index_of(&payload)),
                Event::Ping(_) | Event::Pong(_) => {}
                other => panic!("the slow subscriber got {other:?}"),
            }
        }
    });
    publish_end_when_drained(&server);
    let got = fast.join().expect("fast subscriber panicked");
    assert!(
        got == (0..counts.len()).collect::<Vec<_>>(),
        "the fast subscriber missed messages"
    );
    let (mut slow, slow_got) = reader.join().expect("slow reader panicked");
    assert!(
        slow_got.windows(2).all(|w| w[0] < w[1]),
        "the slow subscriber's messages are out of order"
    );
    assert_eq!(slow_got.len(), delivered_to_slow);
    assert_eq!(
        slow_got.len() as u64 + server.handle.stats().unwrap().slow_drops,
        counts.len() as u64
    );

    // Still open and served.
    slow.send_frame(true, 0, op::TEXT, b"sub:after").unwrap();
    match slow.read_event().unwrap() {
        Event::Message { payload, .. } => assert_eq!(payload, b"subscribed:after:true"),
        other => panic!("expected the subscribe answer, got {other:?}"),
    }
    let codes = closes.codes();
    assert!(
        !codes.contains(&1008),
        "a connection was closed as a slow consumer: {codes:?}"
    );
}

#[test]
fn a_pattern_deeper_than_the_level_bound_is_refused_and_the_rest_go_on() {
    let (server, _) = start(Config::default());
    let mut ws = connect(&server);
    let levels = |n: usize, last: &str| {
        let mut p = vec!["a"; n - 1];
        p.push(last);
        p.join("/")
    };
    let deepest = levels(emberws::config::MAX_PATTERN_LEVELS, "#");
    subscribe(&mut ws, &deepest);
    for too_deep in [
        levels(emberws::config::MAX_PATTERN_LEVELS + 1, "#"),
        levels(emberws::config::MAX_PATTERN_LEVELS + 1, "a"),
        levels(20_000, "+"),
    ] {
        send(&mut ws, &format!("sub:{too_deep}"));
        assert_eq!(recv_text(&mut ws), format!("subscribed:{too_deep}:false"));
    }
    // The deepest pattern allowed is matched as any other, and the server serves on.
    let mut publisher = connect(&server);
    let topic = levels(emberws::config::MAX_PATTERN_LEVELS + 40, "x");
    assert_eq!(publish(&mut publisher, &topic, "deep"), 1);
    assert_eq!(recv_text(&mut ws), "deep");
}

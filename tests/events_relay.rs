//! The relay's Server-Sent Events route, `GET /events?topic=…`, against the real `emberws`
//! binary: event streams read by the raw WHATWG reader of `tests/util/sse.rs`, beside
//! tungstenite clients speaking the relay protocol. Ids, retained values, resuming with
//! `Last-Event-ID` (header and query), gaps, tokens and rules, the `$` rule, `/metrics`, the
//! slow-consumer policy and the connection limit. (Keep-alive comments, which take 15 s, are
//! tested with time passed in: `relay::events` in the binary's unit tests.)

mod util;

use std::net::{SocketAddr, TcpStream};
use std::thread;

use serde_json::{json, Value};
use util::binary::ServerProcess;
use util::relay::{
    bearer, clients_toml, http_get, is_message_id, metric, tcp, Entry, Files, Peer, READ_TIMEOUT,
};
use util::sse::{self, Item};
use util::{eventually, DEADLINE};

/// `emberws --listen 127.0.0.1:0 --sys-interval 0 EXTRA...`: without `$SYS`, so that ids
/// count only the test's own publishes.
fn relay(extra: &[&str]) -> ServerProcess {
    let mut args = vec!["--listen", "127.0.0.1:0", "--sys-interval", "0"];
    args.extend_from_slice(extra);
    ServerProcess::spawn(&args)
}

/// An event stream of `target`, answered 200 `text/event-stream` with `retry:` first.
#[track_caller]
fn stream(addr: SocketAddr, target: &str, headers: &[(&str, &str)]) -> sse::Client<TcpStream> {
    let mut es = sse::open(tcp(addr, None), target, headers);
    assert_eq!(es.head.status, 200, "{target}: {:?}", es.head);
    assert_eq!(es.head.header("Content-Type"), Some("text/event-stream"));
    assert_eq!(es.next(), Some(Item::Retry(2000)), "{target}: retry first");
    es
}

/// The next event: its id and its data as JSON.
#[track_caller]
fn next(es: &mut sse::Client<TcpStream>) -> (Option<String>, Value) {
    match es.next_event() {
        Some(Item::Event { id, data }) => {
            let v = serde_json::from_str(&data)
                .unwrap_or_else(|e| panic!("an event whose data is not JSON: {data:?}: {e}"));
            (id, v)
        }
        other => panic!("expected an event, got {other:?}"),
    }
}

/// The next event, which must be a message: its data as JSON, with its `id:` checked to be
/// the message's id.
#[track_caller]
fn message(es: &mut sse::Client<TcpStream>) -> Value {
    let (id, m) = next(es);
    assert_eq!(m["type"], "message", "{m}");
    let id = id.unwrap_or_else(|| panic!("a message event without an id: {m}"));
    assert!(is_message_id(&id), "{id}");
    assert_eq!(m["id"], id, "id: is the message id");
    m
}

/// The ack of the stream's subscribe of `pattern` (a data-only event).
#[track_caller]
fn ack(es: &mut sse::Client<TcpStream>, pattern: &str, gap: Option<bool>) {
    let mut want = json!({"type": "ack", "id": pattern});
    if let Some(gap) = gap {
        want["gap"] = json!(gap);
    }
    assert_eq!(next(es), (None, want));
}

#[test]
fn events_carry_the_websocket_frames_with_the_message_ids_in_order_after_the_retained_value() {
    let server = relay(&[]);
    let addr = server.addr();
    let mut p = Peer::anonymous(addr, "publisher");
    p.retain("t/r", json!({"kept": true}));
    let mut ws = Peer::anonymous(addr, "websocket");
    ws.subscribe("t/#");
    let retained = ws.recv();
    let mut es = stream(addr, "/events?topic=t/%23", &[]);
    ack(&mut es, "t/#", None);
    assert_eq!(
        message(&mut es),
        retained,
        "the retained value first, same id"
    );
    for i in 0..50 {
        p.publish(&format!("t/{}", i % 7), json!({"n": i, "s": "a\nb \"q\""}));
    }
    for i in 0..50 {
        let frame = ws.recv();
        assert_eq!(frame["data"]["n"], i);
        assert_eq!(
            message(&mut es),
            frame,
            "the same JSON and id as the WebSocket's"
        );
    }
}

#[test]
fn last_event_id_resumes_exactly_what_was_missed_then_live_by_header_and_by_query() {
    let server = relay(&["--history-messages", "1000", "--history-bytes", "1048576"]);
    let addr = server.addr();
    let mut p = Peer::anonymous(addr, "publisher");
    let mut es = stream(addr, "/events?topic=count/%23", &[]);
    ack(&mut es, "count/#", None);
    for n in 1..=100 {
        p.publish("count/n", json!(n));
    }
    let mut last = String::new();
    for n in 1..=100 {
        let m = message(&mut es);
        assert_eq!(m["data"], n);
        last = m["id"].as_str().unwrap_or_default().to_owned();
    }
    drop(es);
    for n in 101..=150 {
        p.publish("count/n", json!(n));
    }
    // As EventSource reconnects: the header, and the query from the first connect, which
    // the header wins over.
    let stale = format!(
        "/events?topic=count/%23&lastEventID={}",
        last.replace("-", "-1")
    );
    let mut header = stream(addr, &stale, &[("Last-Event-ID", &last)]);
    ack(&mut header, "count/#", Some(false));
    // A page that kept the id itself, on its first connect.
    let query = format!("/events?topic=count/%23&lastEventID={last}");
    let mut by_query = stream(addr, &query, &[]);
    ack(&mut by_query, "count/#", Some(false));
    for es in [&mut header, &mut by_query] {
        for n in 101..=150 {
            assert_eq!(message(es)["data"], n, "exactly the 50 missed, in order");
        }
    }
    p.publish("count/n", json!("live"));
    for es in [&mut header, &mut by_query] {
        assert_eq!(message(es)["data"], "live", "then live");
    }
}

#[test]
fn a_gap_when_history_was_exceeded_then_what_it_holds() {
    let server = relay(&["--history-messages", "10"]);
    let addr = server.addr();
    let mut p = Peer::anonymous(addr, "publisher");
    let mut es = stream(addr, "/events?topic=g", &[]);
    ack(&mut es, "g", None);
    p.publish("g", json!(0));
    let since = message(&mut es)["id"].as_str().unwrap().to_owned();
    drop(es);
    for n in 1..=30 {
        p.publish("g", json!(n));
    }
    let mut es = stream(addr, "/events?topic=g", &[("Last-Event-ID", &since)]);
    ack(&mut es, "g", Some(true));
    for n in 21..=30 {
        assert_eq!(message(&mut es)["data"], n, "the 10 that history holds");
    }
    p.publish("g", json!("live"));
    assert_eq!(message(&mut es)["data"], "live");
}

#[test]
fn a_public_listener_needs_a_token_by_header_or_query_and_rules_apply() {
    let files = Files::new("events-auth");
    files.write_clients(&clients_toml(&[
        Entry {
            name: "pub",
            token: "token-of-the-publisher-0123",
            publish: &["#"],
            subscribe: &[],
        },
        Entry {
            name: "page",
            token: "token-of-the-page-456789",
            publish: &[],
            subscribe: &["public/#"],
        },
    ]));
    let config = files.write_config(&format!(
        "listen = [\"0.0.0.0:0\"]\nsys_interval = 0.0\n\n[auth]\nclients = '{}'\n",
        files.clients_str()
    ));
    let server = ServerProcess::spawn(&["--config", &config]);
    let addr = server.addr();
    let none = http_get(addr, None, "/events?topic=public/%23", &[]);
    assert_eq!(none.status(), 401, "{}", none.text());
    assert_eq!(
        none.header("WWW-Authenticate"),
        Some("Bearer realm=\"emberws\"")
    );
    let wrong = http_get(addr, None, "/events?topic=public/%23&token=nope", &[]);
    assert_eq!(wrong.status(), 401);
    let (name, value) = bearer("token-of-the-page-456789");
    let by_header = [(name, value.as_str())];
    let mut a = stream(addr, "/events?topic=public/%23", &by_header);
    ack(&mut a, "public/#", None);
    let mut b = stream(
        addr,
        "/events?topic=%23&token=token-of-the-page-456789",
        &[],
    );
    ack(&mut b, "#", None);
    // Nothing it asks for is allowed: 403, as a page should see it.
    let denied = http_get(addr, None, "/events?topic=private/%23", &by_header);
    assert_eq!(denied.status(), 403);
    assert_eq!(denied.text(), "none of these topics is allowed\n");
    let (name, value) = bearer("token-of-the-publisher-0123");
    let mut p = Peer::open(addr, "/", &[(name, &value)], "publisher");
    p.publish("private/x", json!("no"));
    p.publish("public/x", json!("yes"));
    for es in [&mut a, &mut b] {
        let m = message(es);
        assert_eq!(
            (m["topic"].as_str(), &m["data"]),
            (Some("public/x"), &json!("yes")),
            "`#` is granted only as public/#"
        );
    }
    let text = http_get(addr, None, "/metrics", &[(name, &value)]).text();
    assert_eq!(
        metric(
            &text,
            "emberws_events_refused_total{reason=\"not_allowed\"}"
        ),
        1
    );
    assert_eq!(
        metric(
            &text,
            "emberws_auth_refused_total{reason=\"missing_token\"}"
        ),
        1
    );
}

#[test]
fn a_hash_stream_gets_no_sys_topics_and_a_sys_stream_does() {
    let server = ServerProcess::spawn(&["--listen", "127.0.0.1:0", "--sys-interval", "0.1"]);
    let addr = server.addr();
    let mut all = stream(addr, "/events?topic=%23", &[]);
    ack(&mut all, "#", None);
    let mut sys = stream(addr, "/events?topic=%24SYS%2F%23", &[]);
    ack(&mut sys, "$SYS/#", None);
    // The retained figures, then live ones: two samples of the uptime at least.
    let mut uptimes = 0;
    while uptimes < 3 {
        let m = message(&mut sys);
        let topic = m["topic"].as_str().unwrap_or_default();
        assert!(topic.starts_with("$SYS/"), "{m}");
        uptimes += usize::from(topic == "$SYS/uptime");
    }
    let mut p = Peer::anonymous(addr, "publisher");
    p.publish("x", json!(1));
    let m = message(&mut all);
    assert_eq!(m["topic"], "x", "nothing of $SYS came before it: {m}");
}

#[test]
fn metrics_count_event_streams_and_refusals() {
    let server = relay(&[]);
    let addr = server.addr();
    let a = stream(addr, "/events?topic=a", &[]);
    let _b = stream(addr, "/events?topic=b&topic=c", &[]);
    let no_topic = http_get(addr, None, "/events", &[]);
    assert_eq!(no_topic.status(), 400);
    assert!(
        no_topic.text().starts_with("no topic"),
        "{}",
        no_topic.text()
    );
    assert_eq!(
        http_get(addr, None, "/events?topic=a%2F%23%2Fb", &[]).status(),
        400
    );
    let text = http_get(addr, None, "/metrics", &[]).text();
    assert_eq!(metric(&text, "emberws_event_streams_open"), 2);
    assert_eq!(metric(&text, "emberws_event_streams_accepted_total"), 2);
    assert_eq!(
        metric(
            &text,
            "emberws_events_refused_total{reason=\"bad_request\"}"
        ),
        2
    );
    drop(a);
    eventually("one stream left open", || {
        let text = http_get(addr, None, "/metrics", &[]).text();
        (metric(&text, "emberws_event_streams_open") == 1).then_some(())
    });
}

#[test]
fn streams_count_against_max_connections() {
    let server = relay(&["--max-connections", "2"]);
    let addr = server.addr();
    let _a = stream(addr, "/events?topic=a", &[]);
    let _b = stream(addr, "/events?topic=b", &[]);
    let full = http_get(addr, None, "/events?topic=c", &[]);
    assert_eq!(full.status(), 503);
    assert!(full.header("Retry-After").is_some());
}

/// A TCP connection whose receive buffer is small (the kernel's minimum near `bytes`), so
/// that a reader that stops reading is seen as slow soon.
fn small_window(addr: SocketAddr, bytes: usize) -> TcpStream {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(bytes).unwrap();
    socket.connect_timeout(&addr.into(), READ_TIMEOUT).unwrap();
    let stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    stream
}

#[test]
fn a_slow_stream_is_ended_by_the_slow_consumer_policy_and_a_websocket_bystander_gets_all() {
    const COUNT: u64 = 600;
    let server = relay(&["--socket-send-buffer", "4096"]);
    let addr = server.addr();
    let mut slow = sse::open(small_window(addr, 4096), "/events?topic=load", &[]);
    assert_eq!(slow.head.status, 200);
    let mut bystander = Peer::anonymous(addr, "bystander");
    bystander.subscribe("load");
    let (heard, told) = std::sync::mpsc::channel();
    let reader = thread::spawn(move || {
        let mut got = Vec::new();
        for _ in 0..COUNT {
            got.push(bystander.recv()["data"]["n"].as_u64().unwrap_or(u64::MAX));
            let _ = heard.send(());
        }
        got
    });
    let mut p = Peer::anonymous(addr, "publisher");
    let blob = "x".repeat(1024);
    for n in 0..COUNT {
        p.publish("load", json!({"n": n, "blob": blob}));
        // In step with the bystander, which reads each message as it comes: its queue never
        // holds more than this one however busy the machine is (the socket buffer cap above
        // applies to it too), while the stream that does not read falls behind.
        told.recv_timeout(DEADLINE)
            .expect("the bystander got the message");
    }
    let got = reader.join().expect("the bystander's reader");
    assert_eq!(
        got,
        (0..COUNT).collect::<Vec<_>>(),
        "every message, in order"
    );
    eventually("the slow stream closed as a slow consumer", || {
        let text = http_get(addr, None, "/metrics", &[]).text();
        (metric(&text, "emberws_slow_consumer_closes_total") == 1).then_some(())
    });
    // What it had on its way arrives, in order, then the stream ends.
    let items = slow.read_to_end();
    let ns: Vec<u64> = items
        .iter()
        .filter_map(|item| match item {
            Item::Event { id: Some(_), data } => serde_json::from_str::<Value>(data).ok(),
            _ => None,
        })
        .map(|m| m["data"]["n"].as_u64().unwrap_or(u64::MAX))
        .collect();
    assert!(
        (ns.len() as u64) < COUNT,
        "{} of {COUNT}: it was cut off",
        ns.len()
    );
    assert_eq!(
        ns,
        (0..ns.len() as u64).collect::<Vec<_>>(),
        "a prefix, in order"
    );
}

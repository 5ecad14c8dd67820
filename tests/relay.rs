//! The relay protocol, the HTTP endpoints and the command line, against the real `emberws`
//! binary.

mod util;

use std::io::Read;
use std::net::{SocketAddr, TcpListener};
use std::process::{Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tungstenite::Message;
use util::binary::{binary_path, ServerProcess};
use util::clients::{connect_to, recv_text, Client};
use util::raw::{self, RawClient};
use util::DEADLINE;

/// `emberws --listen 127.0.0.1:0 EXTRA...` (the relay).
fn relay(extra: &[&str]) -> ServerProcess {
    let mut args = vec!["--listen", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    ServerProcess::spawn(&args)
}

/// A relay client.
struct Peer {
    ws: Client,
}

impl Peer {
    fn connect(server: &ServerProcess) -> Peer {
        Peer {
            ws: connect_to(server.addr(), &server.ws_url()),
        }
    }

    fn send(&mut self, v: Value) {
        self.send_text(&v.to_string());
    }

    fn send_text(&mut self, text: &str) {
        self.ws.send(Message::text(text)).expect("send");
    }

    /// The next message, parsed (pings and pongs of the WebSocket layer skipped).
    fn recv(&mut self) -> Value {
        let t = recv_text(&mut self.ws);
        serde_json::from_str(&t)
            .unwrap_or_else(|e| panic!("the relay sent invalid JSON {t:?}: {e}"))
    }

    /// An app-level ping whose pong must be the very next message: proves nothing else
    /// was on its way.
    fn nothing_pending(&mut self) {
        self.send(json!({"type": "ping", "id": "barrier"}));
        let next = self.recv();
        assert_eq!(
            next,
            json!({"type": "pong", "id": "barrier"}),
            "expected nothing before the pong"
        );
    }

    fn subscribe(&mut self, topic: &str) {
        self.send(json!({"type": "subscribe", "topic": topic, "id": topic}));
        assert_eq!(self.recv(), json!({"type": "ack", "id": topic}));
    }

    /// Publishes with an id; returns `delivered` from the ack.
    fn publish(&mut self, topic: &str, data: Value) -> u64 {
        self.publish_with(json!({"type": "publish", "topic": topic, "data": data, "id": 7}))
    }

    fn publish_with(&mut self, request: Value) -> u64 {
        self.send(request);
        let ack = self.recv();
        assert_eq!(ack["type"], "ack", "expected an ack, got {ack}");
        assert_eq!(ack["id"], 7);
        ack["delivered"]
            .as_u64()
            .unwrap_or_else(|| panic!("ack without delivered: {ack}"))
    }

    /// Expects a `message` on `topic` with `data`.
    fn expect_message(&mut self, topic: &str, data: Value) {
        let got = util::relay::without_id(self.recv());
        assert_eq!(
            got,
            json!({"type": "message", "topic": topic, "data": data})
        );
    }

    /// Expects an `error` with a string reason.
    fn expect_error(&mut self, what: &str) {
        let got = self.recv();
        assert_eq!(got["type"], "error", "{what}: expected an error, got {got}");
        assert!(
            got["reason"].as_str().is_some_and(|r| !r.is_empty()),
            "{what}: the error has no reason: {got}"
        );
    }
}

#[test]
fn subscribe_and_publish_are_acknowledged_with_delivery_counts() {
    let server = relay(&[]);
    let mut publisher = Peer::connect(&server);
    assert_eq!(publisher.publish("plant/line1", json!(1)), 0);

    let mut subs: Vec<Peer> = (0..3).map(|_| Peer::connect(&server)).collect();
    subs[0].subscribe("plant/line1");
    let data = json!({"rpm": 1200, "ok": true, "tags": ["a", "b"], "temp": 71.5});
    assert_eq!(publisher.publish("plant/line1", data.clone()), 1);
    subs[0].expect_message("plant/line1", data.clone());
    for sub in &mut subs[1..] {
        sub.subscribe("plant/line1");
    }
    assert_eq!(publisher.publish("plant/line1", json!("three")), 3);
    for sub in &mut subs {
        sub.expect_message("plant/line1", json!("three"));
    }
    // Without an id there is no ack, and the message still goes out.
    publisher.send(json!({"type": "publish", "topic": "plant/line1", "data": [false]}));
    publisher.nothing_pending();
    for sub in &mut subs {
        sub.expect_message("plant/line1", json!([false]));
        sub.nothing_pending();
    }
    // Another topic reaches nobody.
    assert_eq!(publisher.publish("plant/line2", json!(2)), 0);
}

#[test]
fn wildcard_subscriptions() {
    let server = relay(&[]);
    let mut plus = Peer::connect(&server);
    let mut hash = Peer::connect(&server);
    plus.subscribe("home/+/temp");
    hash.subscribe("home/#");
    let mut publisher = Peer::connect(&server);
    assert_eq!(publisher.publish("home/kitchen/temp", json!(21)), 2);
    assert_eq!(publisher.publish("home/kitchen/humidity", json!(40)), 1);
    assert_eq!(publisher.publish("home", json!("root")), 1);
    assert_eq!(publisher.publish("home/a/b/temp", json!(0)), 1);
    assert_eq!(publisher.publish("office/desk/temp", json!(19)), 0);
    plus.expect_message("home/kitchen/temp", json!(21));
    plus.nothing_pending();
    hash.expect_message("home/kitchen/temp", json!(21));
    hash.expect_message("home/kitchen/humidity", json!(40));
    hash.expect_message("home", json!("root"));
    hash.expect_message("home/a/b/temp", json!(0));
    hash.nothing_pending();
}

#[test]
fn retained_messages_reach_later_subscribers() {
    let server = relay(&[]);
    let mut publisher = Peer::connect(&server);
    let retain = |topic: &str, data: Value| json!({"type": "publish", "topic": topic, "data": data, "retain": true, "id": 7});
    assert_eq!(
        publisher.publish_with(retain("boiler/temp", json!(64.5))),
        0
    );
    assert_eq!(publisher.publish_with(retain("boiler/temp", json!(65))), 0);

    // A later subscriber gets the latest retained message at once, after its ack.
    let mut late = Peer::connect(&server);
    late.subscribe("boiler/+");
    late.expect_message("boiler/temp", json!(65));
    late.nothing_pending();

    // A message without retain is not kept.
    assert_eq!(publisher.publish("boiler/pressure", json!(2)), 1);
    late.expect_message("boiler/pressure", json!(2));
    let mut last = Peer::connect(&server);
    last.subscribe("boiler/#");
    last.expect_message("boiler/temp", json!(65));
    last.nothing_pending();
}

#[test]
fn retain_with_null_data_clears_the_retained_message() {
    let server = relay(&[]);
    let mut publisher = Peer::connect(&server);
    let request = |data: Value| json!({"type": "publish", "topic": "valve/state", "data": data, "retain": true, "id": 7});
    assert_eq!(publisher.publish_with(request(json!("open"))), 0);
    let mut current = Peer::connect(&server);
    current.subscribe("valve/state");
    current.expect_message("valve/state", json!("open"));

    // data null clears the retained message, and is delivered as null to subscribers.
    assert_eq!(publisher.publish_with(request(Value::Null)), 1);
    current.expect_message("valve/state", Value::Null);
    let mut later = Peer::connect(&server);
    later.subscribe("valve/#");
    later.nothing_pending();
}

#[test]
fn unsubscribe_stops_delivery() {
    let server = relay(&[]);
    let mut sub = Peer::connect(&server);
    sub.subscribe("a/b");
    sub.subscribe("a/+");
    let mut publisher = Peer::connect(&server);
    assert_eq!(publisher.publish("a/b", json!(1)), 1);
    sub.expect_message("a/b", json!(1));
    sub.send(json!({"type": "unsubscribe", "topic": "a/b", "id": "u1"}));
    assert_eq!(sub.recv(), json!({"type": "ack", "id": "u1"}));
    // Still subscribed through a/+.
    assert_eq!(publisher.publish("a/b", json!(2)), 1);
    sub.expect_message("a/b", json!(2));
    sub.send(json!({"type": "unsubscribe", "topic": "a/+", "id": "u2"}));
    assert_eq!(sub.recv(), json!({"type": "ack", "id": "u2"}));
    assert_eq!(publisher.publish("a/b", json!(3)), 0);
    sub.nothing_pending();
}

#[test]
fn app_level_ping_gets_a_pong() {
    let server = relay(&[]);
    let mut peer = Peer::connect(&server);
    peer.send(json!({"type": "ping"}));
    assert_eq!(peer.recv(), json!({"type": "pong"}));
    peer.send(json!({"type": "ping", "id": {"n": [1, 2]}}));
    assert_eq!(peer.recv(), json!({"type": "pong", "id": {"n": [1, 2]}}));
}

#[test]
fn bad_requests_get_an_error_and_the_connection_stays_open() {
    let server = relay(&[]);
    let mut bystander = Peer::connect(&server);
    bystander.subscribe("ok/topic");
    let mut peer = Peer::connect(&server);
    let cases: [(&str, &str); 9] = [
        ("malformed JSON", "{\"type\": \"ping\""),
        ("not JSON at all", "hello"),
        ("missing type", "{\"topic\": \"a\"}"),
        ("type not a string", "{\"type\": 5}"),
        ("unknown type", "{\"type\": \"frobnicate\"}"),
        (
            "publish to a + pattern",
            r#"{"type":"publish","topic":"a/+","data":1}"#,
        ),
        (
            "publish to a # pattern",
            r#"{"type":"publish","topic":"a/#","data":1}"#,
        ),
        (
            "publish without data",
            r#"{"type":"publish","topic":"a/b"}"#,
        ),
        ("subscribe without topic", r#"{"type":"subscribe"}"#),
    ];
    for (what, text) in cases {
        peer.send_text(text);
        peer.expect_error(what);
        peer.nothing_pending();
    }
    peer.ws.send(Message::binary(vec![1u8, 2, 3])).unwrap();
    peer.expect_error("binary message");
    peer.nothing_pending();

    // Nothing reached the bystander, which is still served.
    bystander.nothing_pending();
    assert_eq!(peer.publish("ok/topic", json!("fine")), 1);
    bystander.expect_message("ok/topic", json!("fine"));
}

/// `GET path` over plain HTTP; returns the status, the `Content-Type` and the body.
fn http_get(addr: SocketAddr, path: &str) -> (u16, String, Vec<u8>) {
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    let (response, mut stream) = raw::http_request(addr, request.as_bytes()).expect("request");
    let mut body = response.rest.clone();
    body.extend(raw::read_to_eof(&mut stream, 1 << 20, DEADLINE).expect("the body"));
    if let Some(len) = response.header("content-length") {
        let len: usize = len.parse().expect("Content-Length");
        assert!(
            body.len() >= len,
            "the body is shorter than its Content-Length"
        );
        body.truncate(len);
    }
    let content_type = response
        .header("content-type")
        .unwrap_or_default()
        .to_owned();
    (response.status, content_type, body)
}

#[test]
fn http_endpoints() {
    let server = relay(&[]);
    let _peer = Peer::connect(&server);
    let addr = server.addr();

    let (status, content_type, body) = http_get(addr, "/");
    assert_eq!(status, 200);
    assert!(content_type.starts_with("text/html"), "{content_type}");
    assert!(
        String::from_utf8_lossy(&body)
            .to_ascii_lowercase()
            .contains("<html"),
        "the dashboard is not HTML"
    );

    let (status, content_type, body) = http_get(addr, "/healthz");
    assert_eq!(status, 200);
    assert!(content_type.contains("json"), "{content_type}");
    let health: Value = serde_json::from_slice(&body).expect("/healthz is not JSON");
    assert!(
        health["connections_open"].as_u64().is_some_and(|n| n >= 1),
        "{health}"
    );

    let (status, _, body) = http_get(addr, "/metrics");
    assert_eq!(status, 200);
    let text = String::from_utf8(body).unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with("emberws_connections_open"))
        .expect("no emberws_connections_open line");
    let value: f64 = line.split_whitespace().last().unwrap().parse().unwrap();
    assert!(value >= 1.0, "{line}");

    assert_eq!(http_get(addr, "/nope").0, 404);
}

#[test]
fn max_message_flag() {
    let server = relay(&["--max-message", "200"]);
    let mut peer = Peer::connect(&server);
    let fits = json!({"type": "ping", "id": "x".repeat(150)}).to_string();
    assert!(fits.len() <= 200);
    peer.send_text(&fits);
    assert_eq!(peer.recv()["type"], "pong");
    peer.send_text(&json!({"type": "ping", "id": "x".repeat(300)}).to_string());
    let mut code = None;
    loop {
        match peer.ws.read() {
            Ok(Message::Close(frame)) => code = frame.map(|f| u16::from(f.code)),
            Ok(_) => continue,
            Err(tungstenite::Error::ConnectionClosed) => break,
            Err(e) => panic!("the close did not complete cleanly: {e}"),
        }
    }
    assert_eq!(code, Some(1009));
}

#[test]
fn max_connections_flag() {
    let server = relay(&["--max-connections", "2"]);
    let mut a = Peer::connect(&server);
    let mut b = Peer::connect(&server);
    let request = raw::upgrade_request(&server.addr().to_string(), "/", &raw::random_key(), &[]);
    let (response, _stream) = raw::http_request(server.addr(), request.as_bytes()).unwrap();
    assert_eq!(response.status, 503, "{}", response.head);
    a.nothing_pending();
    b.nothing_pending();
}

#[test]
fn allow_origin_flag() {
    let server = relay(&[
        "--allow-origin",
        "https://ok.example",
        "--allow-origin",
        "https://also.example",
    ]);
    let addr = server.addr();
    let status = |origin: &str| {
        let request = raw::upgrade_request(
            &addr.to_string(),
            "/",
            &raw::random_key(),
            &[("Origin", origin)],
        );
        raw::http_request(addr, request.as_bytes())
            .unwrap()
            .0
            .status
    };
    assert_eq!(status("https://evil.example"), 403);
    assert_eq!(status("https://ok.example"), 101);
    assert_eq!(status("https://also.example"), 101);
    let mut raw = RawClient::connect_with(addr, "/", &[("Origin", "https://ok.example")]).unwrap();
    raw.send_frame(true, 0, raw::op::TEXT, br#"{"type":"ping"}"#)
        .unwrap();
    assert_eq!(
        raw.read_event().unwrap(),
        raw::Event::Message {
            binary: false,
            payload: br#"{"type":"pong"}"#.to_vec()
        }
    );
}

/// Runs the binary to its exit (killing it and failing after [`DEADLINE`]); returns its
/// status and stderr.
fn run_to_exit(args: &[&str]) -> (ExitStatus, String) {
    let mut child = Command::new(binary_path())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start emberws");
    let mut stderr = child.stderr.take().unwrap();
    let reader = thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let deadline = Instant::now() + DEADLINE;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("emberws {args:?} did not exit: {}", reader.join().unwrap());
        }
        thread::sleep(Duration::from_millis(20));
    };
    (status, reader.join().unwrap())
}

#[test]
fn bad_flags_exit_with_an_error() {
    for args in [
        &["--bogus"][..],
        &["--max-message", "lots"],
        &["--listen", "not-an-address"],
        &["--max-connections"],
        &["unknown-mode"],
    ] {
        let (status, stderr) = run_to_exit(args);
        assert!(!status.success(), "emberws {args:?} exited with {status}");
        assert!(
            status.code().is_some(),
            "emberws {args:?} died by a signal: {status}"
        );
        assert!(
            !stderr.trim().is_empty(),
            "emberws {args:?} said nothing on stderr"
        );
    }
    let (_, stderr) = run_to_exit(&["--bogus"]);
    assert!(
        stderr.contains("bogus"),
        "the message does not name the flag: {stderr}"
    );
}

#[test]
fn busy_port_exits_with_a_clear_error() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let (status, stderr) = run_to_exit(&["--listen", &addr]);
    assert!(
        !status.success(),
        "emberws started on a busy port: {status}"
    );
    assert!(
        stderr.contains(&addr) && stderr.to_ascii_lowercase().contains("in use"),
        "the error should name the address and say it is in use: {stderr}"
    );
    drop(taken);
}

#[test]
fn a_listener_off_loopback_is_refused_without_allow_anonymous() {
    for args in [
        &["--listen", "0.0.0.0:0"][..],
        &["--listen", "127.0.0.1:0", "--listen", "[::]:0"],
        &["echo", "--listen", "0.0.0.0:0"],
    ] {
        let (status, stderr) = run_to_exit(args);
        assert_eq!(status.code(), Some(2), "emberws {args:?}: {stderr}");
        assert!(
            stderr.contains("without authentication") && stderr.contains("--allow-anonymous"),
            "the refusal says why and what to do: {stderr}"
        );
    }
    // Asked for explicitly: it listens (on every interface; only loopback is used here).
    let server = ServerProcess::spawn(&["--listen", "0.0.0.0:0", "--allow-anonymous"]);
    let port = server.addr().port();
    let (mut ws, _) = tungstenite::connect(format!("ws://127.0.0.1:{port}/")).unwrap();
    ws.send(tungstenite::Message::text(r#"{"type":"ping","id":1}"#))
        .unwrap();
    assert_eq!(
        ws.read().unwrap().to_text().unwrap(),
        r#"{"type":"pong","id":1}"#
    );
}

//! Server-Sent Events in the library: a plain `GET` that the handler makes an event stream.
//!
//! Over real sockets, read by a raw HTTP client that parses the body by the WHATWG rules
//! (`util::sse`, independent of the crate's own parser): the head and `retry:`, events in
//! order with ids, multi-line data, a publish that reaches WebSocket (tungstenite) and
//! event-stream subscribers with the right bytes each, the other threads' calls, the peer
//! going away, the server's close, shutdown and TLS. With the harness and time passed in:
//! keep-alives, slow consumers under both policies, limits and refusals.

mod util;

use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use emberws::testing::{Event, Harness, Streamed};
use emberws::{
    CloseCode, Config, ConnId, Ctx, Decision, Delivery, HandleError, Handler, HttpRequest, Kind,
    Message, Response, SendStatus, Server, ServerHandle, SlowConsumer,
};
use tungstenite::Message as WsMessage;
use util::clients::{connect_to, recv_text, Client};
use util::sse::{self, event, Item};
use util::{eventually, spawn_server, TestServer};

// ---------------------------------------------------------------------------------------------
// The handler: WebSocket clients send commands, event streams subscribe from their query.

/// What the handler saw, shared with the test.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Seen>>);

#[derive(Default)]
struct Seen {
    /// Event streams opened, in order.
    streams: Vec<ConnId>,
    /// Every close: the connection's kind, code and reason.
    closes: Vec<(Kind, u16, String)>,
    /// `on_drain` calls.
    drains: usize,
    /// What each `send` in `on_open` answered.
    sends: Vec<SendStatus>,
}

impl Log {
    fn streams(&self) -> Vec<ConnId> {
        self.0.lock().unwrap().streams.clone()
    }

    fn closes(&self) -> Vec<(Kind, u16, String)> {
        self.0.lock().unwrap().closes.clone()
    }

    fn wait_for_close(&self, what: &str) -> (Kind, u16, String) {
        eventually(what, || self.closes().first().cloned())
    }

    fn wait_for_stream(&self, n: usize) -> ConnId {
        eventually("the stream to open", || self.streams().get(n).copied())
    }
}

/// Each connection's state: its kind, and for an event stream the query it asked with.
struct St {
    kind: Kind,
    query: String,
}

/// `/events?topic=P&topic=Q[&hello|&lines]` opens an event stream subscribed to P and Q;
/// `/private` is refused with 401, `/busy` with 429 and `Retry-After`; `/plain` is an ordinary
/// page. WebSocket commands: `sub P`, `pub T TEXT`, `pubid T ID TEXT`, `bin T`, `bcast TEXT`
/// (each answered with the delivery counts), `id` (answered with the connection's kind).
struct Board {
    log: Log,
}

impl Handler for Board {
    type State = St;

    fn on_upgrade(&mut self, _req: &HttpRequest<'_>) -> Decision<St> {
        Decision::Accept(St {
            kind: Kind::WebSocket,
            query: String::new(),
        })
    }

    fn on_event_stream(&mut self, req: &HttpRequest<'_>) -> Option<Decision<St>> {
        match req.path() {
            "/events" => Some(Decision::Accept(St {
                kind: Kind::EventStream,
                query: req.query().unwrap_or_default().to_owned(),
            })),
            "/private" => Some(Decision::Reject(401)),
            "/busy" => {
                let mut res = Response::status(429);
                res.headers.push(("Retry-After", "7".into()));
                Some(Decision::Refuse(res))
            }
            _ => None,
        }
    }

    fn on_request(&mut self, req: &HttpRequest<'_>, _: &emberws::Stats) -> Response {
        match req.path() {
            "/plain" => Response::ok("text/plain", &b"plain"[..]),
            _ => Response::status(404),
        }
    }

    fn on_open(&mut self, ctx: &mut Ctx<'_>, st: &mut St) {
        assert_eq!(ctx.kind(), st.kind, "the state and the connection agree");
        if st.kind != Kind::EventStream {
            return;
        }
        self.log.0.lock().unwrap().streams.push(ctx.id());
        let params: Vec<&str> = st.query.split('&').collect();
        for topic in params.iter().filter_map(|p| p.strip_prefix("topic=")) {
            ctx.subscribe(topic);
        }
        let mut sends = Vec::new();
        if params.contains(&"hello") {
            for i in 0..100 {
                let text = format!("event {i}");
                sends.push(ctx.send_event(&i.to_string(), Message::Text(&text)));
            }
        }
        if params.contains(&"lines") {
            for text in ["a\nb\r\nc\rd", "", "trailing\n", "  two spaces", "\r\n\r\n"] {
                sends.push(ctx.send(Message::Text(text)));
            }
        }
        self.log.0.lock().unwrap().sends.extend(sends);
    }

    fn on_message(&mut self, ctx: &mut Ctx<'_>, _st: &mut St, msg: Message<'_>) {
        let Message::Text(text) = msg else { return };
        let mut words = text.splitn(3, ' ');
        let reply = match (words.next(), words.next(), words.next()) {
            (Some("sub"), Some(pattern), None) => format!("{:?}", ctx.subscribe(pattern)),
            (Some("pub"), Some(topic), Some(text)) => {
                counts(ctx.publish(topic, Message::Text(text)))
            }
            (Some("pubid"), Some(topic), Some(rest)) => {
                let (id, text) = rest.split_once(' ').unwrap();
                counts(ctx.publish_event(topic, id, Message::Text(text)))
            }
            (Some("bin"), Some(topic), None) => {
                counts(ctx.publish(topic, Message::Binary(&[1, 2])))
            }
            (Some("bcast"), Some(first), rest) => {
                let text = match rest {
                    Some(rest) => format!("{first} {rest}"),
                    None => first.to_owned(),
                };
                counts(ctx.broadcast(Message::Text(&text)))
            }
            (Some("id"), None, None) => format!("{:?}", ctx.kind()),
            _ => "?".to_owned(),
        };
        ctx.send_text(&reply);
    }

    fn on_drain(&mut self, _ctx: &mut Ctx<'_>, _st: &mut St) {
        self.log.0.lock().unwrap().drains += 1;
    }

    fn on_close(&mut self, ctx: &mut Ctx<'_>, st: St, code: CloseCode, reason: &str) {
        // The connection is gone for sending, not for publishing to others.
        assert_eq!(ctx.send_text("x"), SendStatus::Closed);
        let entry = (st.kind, code.as_u16(), reason.to_owned());
        self.log.0.lock().unwrap().closes.push(entry);
    }
}

fn counts(d: Delivery) -> String {
    format!(
        "sent={} queued={} dropped={} closed={} refused={}",
        d.sent, d.queued, d.dropped, d.closed, d.refused
    )
}

fn board(log: &Log) -> Board {
    Board { log: log.clone() }
}

fn start(cfg: Config) -> (TestServer, Log) {
    let log = Log::default();
    let server = spawn_server(cfg, board(&log));
    (server, log)
}

fn ws(server: &TestServer) -> Client {
    connect_to(server.addr, &server.url())
}

fn command(ws: &mut Client, text: &str) -> String {
    ws.send(WsMessage::text(text)).unwrap();
    recv_text(ws)
}

/// Every stream's body begins with this.
const RETRY: &[u8] = b"retry: 2000\n\n";

/// Opens an event stream and reads its `retry:` (the bytes stay for the first
/// `take_bytes`, which begins with [`RETRY`]).
fn stream(addr: SocketAddr, target: &str) -> sse::Client<TcpStream> {
    let mut client = sse::connect(addr, target);
    assert_eq!(client.head.status, 200);
    assert_eq!(client.next(), Some(Item::Retry(2000)));
    client
}

// ---------------------------------------------------------------------------------------------
// Over real sockets.

#[test]
fn the_head_is_200_event_stream_with_no_length_then_retry() {
    let (server, log) = start(Config::default());
    let mut client = sse::connect(server.addr, "/events?topic=t");
    let head = &client.head;
    assert_eq!(head.status, 200);
    assert_eq!(head.header("Content-Type"), Some("text/event-stream"));
    assert_eq!(head.header("Cache-Control"), Some("no-store"));
    assert_eq!(head.header("X-Accel-Buffering"), Some("no"));
    assert_eq!(head.header("Connection"), Some("close"));
    assert_eq!(
        head.header("Content-Length"),
        None,
        "the body ends with the connection"
    );
    assert_eq!(head.header("Transfer-Encoding"), None);
    assert_eq!(head.header("Access-Control-Allow-Origin"), None);
    assert_eq!(client.next(), Some(Item::Retry(2000)));
    log.wait_for_stream(0);
    server.handle.publish("t", Message::Text("first")).unwrap();
    assert_eq!(client.next(), Some(event(None, "first")));
    assert_eq!(client.take_bytes(), b"retry: 2000\n\ndata: first\n\n");
    // Counted as a connection and as an event stream, in both formats.
    let stats = server.handle.stats().unwrap();
    assert_eq!((stats.connections_open, stats.event_streams_open), (1, 1));
    assert_eq!(stats.messages_out, 1);
    assert_eq!((stats.accepted, stats.event_streams_accepted), (0, 1));
    assert!(
        stats.to_json().contains("\"event_streams_open\":1,"),
        "{}",
        stats.to_json()
    );
    let prom = stats.to_prometheus();
    assert!(prom.contains("\nemberws_event_streams_open 1\n"), "{prom}");
    assert!(
        prom.contains("\nemberws_event_streams_accepted_total 1\n"),
        "{prom}"
    );
}

#[test]
fn events_arrive_in_order_with_their_ids() {
    let (server, log) = start(Config::default());
    let mut client = stream(server.addr, "/events?hello");
    for i in 0..100 {
        let data = format!("event {i}");
        assert_eq!(
            client.next(),
            Some(event(Some(&i.to_string()), &data)),
            "event {i}"
        );
    }
    let bytes = client.take_bytes();
    assert!(bytes.starts_with(b"retry: 2000\n\nid: 0\ndata: event 0\n\nid: 1\ndata: event 1\n\n"));
    assert!(bytes.ends_with(b"id: 99\ndata: event 99\n\n"));
    let sends = log.0.lock().unwrap().sends.clone();
    assert_eq!(sends.len(), 100);
    assert!(sends.iter().all(|s| s.is_delivered()), "{sends:?}");
    let stats = server.handle.stats().unwrap();
    assert_eq!(stats.messages_out, 100, "events count as messages");
}

#[test]
fn multi_line_text_is_one_data_line_per_line() {
    let (server, _log) = start(Config::default());
    let mut client = stream(server.addr, "/events?lines");
    let expected = [
        event(None, "a\nb\nc\nd"),
        event(None, ""),
        event(None, "trailing\n"),
        event(None, "  two spaces"),
        event(None, "\n\n"),
    ];
    for want in expected {
        assert_eq!(client.next(), Some(want));
    }
    let events: &[u8] =
        b"data: a\ndata: b\ndata: c\ndata: d\n\ndata: \n\ndata: trailing\ndata: \n\n\
          data:   two spaces\n\ndata: \ndata: \ndata: \n\n";
    assert_eq!(client.take_bytes(), [RETRY, events].concat());
}

#[test]
fn a_publish_reaches_websocket_and_event_stream_subscribers_with_their_bytes() {
    let (server, log) = start(Config::default());
    let mut sub = ws(&server);
    assert_eq!(command(&mut sub, "sub s/#"), "Added");
    let mut events = stream(server.addr, "/events?topic=s/+&topic=s/t");
    let stream_id = log.wait_for_stream(0);
    let mut publisher = ws(&server);

    // One frame to the WebSocket, one event (two data lines) to the stream.
    let reply = command(&mut publisher, "pub s/t hello\nworld");
    assert_eq!(reply, "sent=2 queued=0 dropped=0 closed=0 refused=0");
    assert_eq!(recv_text(&mut sub), "hello\nworld");
    assert_eq!(events.next(), Some(event(None, "hello\nworld")));
    let bytes: &[u8] = b"data: hello\ndata: world\n\n";
    assert_eq!(events.take_bytes(), [RETRY, bytes].concat());

    // With an id: the stream gets an id line, the WebSocket the same frame as without.
    command(&mut publisher, "pubid s/t 3fa2c9e1-42 reading");
    assert_eq!(recv_text(&mut sub), "reading");
    assert_eq!(events.next(), Some(event(Some("3fa2c9e1-42"), "reading")));
    assert_eq!(events.take_bytes(), b"id: 3fa2c9e1-42\ndata: reading\n\n");

    // Binary data reaches the WebSocket only; the stream counts as refused.
    let reply = command(&mut publisher, "bin s/t");
    assert_eq!(reply, "sent=1 queued=0 dropped=0 closed=0 refused=1");
    assert_eq!(sub.read().unwrap(), WsMessage::binary(vec![1u8, 2]));

    // A broadcast reaches every open connection, the stream included.
    // (The broadcaster gets its own copy before the counts.)
    assert_eq!(command(&mut publisher, "bcast to all"), "to all");
    let reply = recv_text(&mut publisher);
    assert_eq!(reply, "sent=3 queued=0 dropped=0 closed=0 refused=0");
    assert_eq!(recv_text(&mut sub), "to all");
    // The binary publish left nothing in the stream: the broadcast is next.
    assert_eq!(events.next(), Some(event(None, "to all")));
    assert_eq!(events.take_bytes(), b"data: to all\n\n");

    // Other threads: publish, publish with an id, send, send with an id, broadcast.
    let h = &server.handle;
    h.publish("s/t", Message::Text("from a thread")).unwrap();
    assert_eq!(recv_text(&mut sub), "from a thread");
    assert_eq!(events.next(), Some(event(None, "from a thread")));
    h.publish_event("s/t", "7", Message::Text("with id"))
        .unwrap();
    assert_eq!(recv_text(&mut sub), "with id");
    assert_eq!(events.next(), Some(event(Some("7"), "with id")));
    h.send(stream_id, Message::Text("just you")).unwrap();
    h.send_event(stream_id, "8", Message::Text("you\nagain"))
        .unwrap();
    h.send(stream_id, Message::Binary(b"never")).unwrap();
    h.broadcast(Message::Text("all of you")).unwrap();
    assert_eq!(events.next(), Some(event(None, "just you")));
    assert_eq!(events.next(), Some(event(Some("8"), "you\nagain")));
    assert_eq!(events.next(), Some(event(None, "all of you")));
    assert_eq!(
        events.take_bytes(),
        b"data: from a thread\n\nid: 7\ndata: with id\n\ndata: just you\n\n\
          id: 8\ndata: you\ndata: again\n\ndata: all of you\n\n"
    );
    assert_eq!(recv_text(&mut sub), "all of you");
    assert_eq!(
        h.publish_event("s/t", "bad\nid", Message::Text("x")),
        Err(HandleError::InvalidEventId)
    );
    assert_eq!(
        h.send_event(stream_id, "nul\0", Message::Text("x")),
        Err(HandleError::InvalidEventId)
    );
    assert_eq!(recv_text(&mut publisher), "all of you");
    assert_eq!(command(&mut publisher, "id"), "WebSocket");
}

#[test]
fn a_peer_that_goes_away_is_closed_with_1006() {
    let (server, log) = start(Config::default());
    let client = stream(server.addr, "/events?topic=t");
    log.wait_for_stream(0);
    drop(client);
    assert_eq!(
        log.wait_for_close("on_close"),
        (Kind::EventStream, 1006, String::new())
    );
    eventually("the stream to be uncounted", || {
        let stats = server.handle.stats().ok()?;
        (stats.event_streams_open == 0 && stats.connections_open == 0).then_some(())
    });
}

#[test]
fn the_servers_close_writes_what_is_queued_then_ends_the_stream() {
    let (server, log) = start(Config::default());
    let mut client = stream(server.addr, "/events?topic=t");
    let id = log.wait_for_stream(0);
    server
        .handle
        .send_event(id, "1", Message::Text("last words"))
        .unwrap();
    server.handle.close(id, CloseCode::NORMAL, "bye").unwrap();
    assert_eq!(client.read_to_end(), [event(Some("1"), "last words")]);
    let last: &[u8] = b"id: 1\ndata: last words\n\n";
    assert_eq!(
        client.take_bytes(),
        [RETRY, last].concat(),
        "no close frame"
    );
    assert_eq!(
        log.wait_for_close("on_close"),
        (Kind::EventStream, 1000, "bye".into())
    );
}

#[test]
fn shutdown_ends_every_stream_after_its_queue_with_1001() {
    let log = Log::default();
    let (tx, rx) = std::sync::mpsc::channel();
    let board = board(&log);
    util::init();
    let thread = std::thread::spawn(move || {
        let mut server =
            Server::bind("127.0.0.1:0".parse().unwrap(), Config::default(), board).expect("bind");
        tx.send((server.local_addr(), server.handle())).unwrap();
        server.run().expect("the loop");
    });
    let (addr, handle): (SocketAddr, ServerHandle) = rx.recv().unwrap();
    let mut a = stream(addr, "/events?topic=t");
    let mut b = stream(addr, "/events?topic=t");
    log.wait_for_stream(1);
    handle
        .publish("t", Message::Text("before the end"))
        .unwrap();
    handle.shutdown().unwrap();
    for client in [&mut a, &mut b] {
        assert_eq!(client.read_to_end(), [event(None, "before the end")]);
    }
    // The server waits for each peer's end (or the close timeout) before it stops.
    drop((a, b));
    thread.join().expect("the loop ended");
    let closes = log.closes();
    assert_eq!(closes.len(), 2);
    assert!(
        closes
            .iter()
            .all(|c| *c == (Kind::EventStream, 1001, "server shutting down".into())),
        "{closes:?}"
    );
}

#[test]
fn bytes_from_the_client_are_read_and_dropped() {
    use std::io::Write;
    let (server, log) = start(Config::default());
    let mut client = stream(server.addr, "/events?topic=t");
    let id = log.wait_for_stream(0);
    let junk = vec![0x81u8; 100_000];
    client.get_mut().write_all(&junk).unwrap();
    client
        .get_mut()
        .write_all(b"GET /plain HTTP/1.1\r\n\r\n")
        .unwrap();
    eventually("the junk to be read", || {
        let stats = server.handle.stats().ok()?;
        (stats.bytes_in > 100_000).then_some(())
    });
    server.handle.send(id, Message::Text("still here")).unwrap();
    assert_eq!(client.next(), Some(event(None, "still here")));
    let stats = server.handle.stats().unwrap();
    assert_eq!(stats.messages_in, 0, "nothing the peer sends is a message");
    assert!(log.closes().is_empty());
}

#[test]
fn a_get_the_handler_does_not_claim_is_an_ordinary_request() {
    let (server, _log) = start(Config::default());
    let plain = sse::connect(server.addr, "/plain");
    assert_eq!(plain.head.status, 200);
    assert_eq!(plain.head.header("Content-Type"), Some("text/plain"));
    assert_eq!(plain.head.header("Content-Length"), Some("5"));
    assert_eq!(sse::connect(server.addr, "/nothing").head.status, 404);
    assert_eq!(sse::connect(server.addr, "/private").head.status, 401);
    let busy = sse::connect(server.addr, "/busy");
    assert_eq!(busy.head.status, 429);
    assert_eq!(busy.head.header("Retry-After"), Some("7"));
    let stats = server.handle.stats().unwrap();
    assert_eq!(stats.event_streams_accepted, 0);
    assert_eq!(stats.rejected_with(401), 1);
    assert_eq!(stats.http_requests, 2);
}

#[test]
fn an_event_stream_over_tls() {
    use rustls::pki_types::pem::PemObject;
    use util::tls::{client_config, tls_connect, TestCert};
    let cert = TestCert::new("sse-tls");
    let key = rustls::pki_types::PrivateKeyDer::from_pem_file(&cert.key_path).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.der.clone()], key)
        .unwrap();
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    let log = Log::default();
    let board = board(&log);
    let (tx, rx) = std::sync::mpsc::channel();
    util::init();
    let thread = std::thread::spawn(move || {
        let mut server = Server::unbound(Config::default(), board).unwrap();
        let addr = server
            .listen_tls("127.0.0.1:0".parse().unwrap(), Arc::new(tls))
            .unwrap();
        tx.send((addr, server.handle())).unwrap();
        server.run().unwrap();
    });
    let (addr, handle): (SocketAddr, ServerHandle) = rx.recv().unwrap();
    let tls_stream = tls_connect(addr, client_config(&cert.der));
    let mut client = sse::open(tls_stream, "/events?hello&topic=t", &[]);
    assert_eq!(client.head.status, 200);
    assert_eq!(
        client.head.header("Content-Type"),
        Some("text/event-stream")
    );
    assert_eq!(client.next(), Some(Item::Retry(2000)));
    for i in 0..100 {
        let data = format!("event {i}");
        assert_eq!(client.next(), Some(event(Some(&i.to_string()), &data)));
    }
    let id = log.wait_for_stream(0);
    handle.publish("t", Message::Text("over tls")).unwrap();
    assert_eq!(client.next(), Some(event(None, "over tls")));
    handle.close(id, CloseCode::NORMAL, "done").unwrap();
    assert_eq!(client.read_to_end(), []);
    assert_eq!(
        log.wait_for_close("on_close"),
        (Kind::EventStream, 1000, "done".into())
    );
    drop(client);
    handle.shutdown().unwrap();
    thread.join().unwrap();
}

#[test]
fn the_idle_cost_formula_holds_for_an_event_stream() {
    // The same record serves both kinds: the README's figure, checked against the real
    // sizes by the library's own test, is the one that applies.
    // (mio keeps a selector id in each socket in debug builds only: 8 bytes.)
    let idle =
        emberws::server::idle_connection_bytes::<()>() - if cfg!(debug_assertions) { 8 } else { 0 };
    let readme = include_str!("../README.md");
    assert!(
        readme.contains(&format!("<!-- idle connection: {idle} B -->")),
        "an idle connection costs {idle} B, as the README says"
    );
    let mut h = Harness::new(Config::default(), board(&Log::default()));
    let mut peer = h.events("/events?topic=t", &[]).expect("a stream");
    h.received_stream(&mut peer);
    assert_eq!(
        h.held_bytes(&peer),
        0,
        "an idle stream holds no buffer and no queue"
    );
    h.advance(Duration::from_secs(15));
    assert_eq!(
        h.received_stream(&mut peer),
        [Streamed::Comment(" keep-alive".into())]
    );
    assert_eq!(h.held_bytes(&peer), 0);
}

// ---------------------------------------------------------------------------------------------
// With the harness: time passed in, windows of the test's choosing.

fn harness(cfg: Config) -> (Harness<Board>, Log) {
    let log = Log::default();
    (Harness::new(cfg, board(&log)), log)
}

#[test]
fn keep_alive_comments_come_with_time_and_no_pong_is_awaited() {
    let (mut h, log) = harness(Config::default());
    let mut peer = h.events("/events?topic=t", &[]).expect("a stream");
    let mut ws = h.connect("/").expect("a WebSocket");
    assert_eq!(h.received_stream(&mut peer), [Streamed::Retry(2000)]);
    h.advance(Duration::from_millis(14_999));
    assert_eq!(h.received_stream(&mut peer), []);
    h.advance(Duration::from_millis(1));
    assert_eq!(
        h.received_stream(&mut peer),
        [Streamed::Comment(" keep-alive".into())]
    );
    // An event at 20 s: the next keep-alive is 15 s after it, not after the last one.
    h.advance(Duration::from_secs(5));
    h.server_mut().publish("t", Message::Text("at 20 s"));
    h.advance(Duration::from_millis(14_999));
    let event = Event {
        id: None,
        data: "at 20 s".into(),
    };
    assert_eq!(h.received_stream(&mut peer), [Streamed::Event(event)]);
    h.advance(Duration::from_millis(1));
    assert_eq!(
        h.received_stream(&mut peer),
        [Streamed::Comment(" keep-alive".into())]
    );
    // The WebSocket beside it, as silent, is pinged at 30 s and dropped at 40 s (no pong);
    // the stream, which has no pong to give, stays open through a long silence.
    for _ in 0..20 {
        h.advance(Duration::from_secs(5));
    }
    assert!(h
        .received(&mut ws)
        .contains(&emberws::testing::Frame::Ping(Vec::new())));
    assert_eq!(h.conn_state(&ws), emberws::conn::State::Closed);
    assert_eq!(h.conn_state(&peer), emberws::conn::State::Open);
    let keep_alives = h.received_stream(&mut peer);
    assert_eq!(
        keep_alives.len(),
        6,
        "every 15 s from 35 s to 125 s: {keep_alives:?}"
    );
    assert_eq!(log.closes(), [(Kind::WebSocket, 1006, String::new())]);
    assert_eq!(h.stats().timeouts, 1);
}

#[test]
fn a_slow_stream_under_close_is_ended_with_1008_after_the_event_on_the_wire() {
    let cfg = Config::default()
        .max_backpressure(1024)
        .slow_consumer(SlowConsumer::Close);
    let (mut h, log) = harness(cfg);
    let mut peer = h.events("/events?topic=t", &[]).expect("a stream");
    h.received_stream(&mut peer);
    h.set_window(&peer, 100);
    let text = "x".repeat(200);
    let mut deliveries = Vec::new();
    for _ in 0..10 {
        deliveries.push(h.server_mut().publish("t", Message::Text(&text)));
    }
    let delivered: usize = deliveries.iter().map(Delivery::delivered).sum();
    assert_eq!(delivered, 5, "{deliveries:?}");
    assert_eq!(
        deliveries[5].closed, 1,
        "the publish that did not fit closed it"
    );
    assert_eq!(
        log.closes(),
        [(Kind::EventStream, 1008, "slow consumer".into())]
    );
    assert_eq!(h.stats().slow_closes, 1);
    // The event on the wire is finished and nothing follows: no close frame, no half event.
    h.set_window(&peer, usize::MAX);
    // Only the first event had begun on the wire (100 of its 208 bytes): it is finished, the
    // four queued behind it are dropped.
    let events = h.received_events(&mut peer);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].data, text);
    assert!(peer.is_shut(), "the stream ended");
    h.disconnect(&peer);
    assert_eq!(h.stats().connections_open, 0);
    assert_eq!(h.stats().event_streams_open, 0);
}

#[test]
fn a_slow_stream_under_drop_loses_messages_then_drains() {
    let cfg = Config::default()
        .max_backpressure(1024)
        .drain_low_water(256)
        .slow_consumer(SlowConsumer::Drop);
    let (mut h, log) = harness(cfg);
    let mut peer = h.events("/events?topic=t", &[]).expect("a stream");
    h.received_stream(&mut peer);
    h.set_window(&peer, 100);
    let text = "y".repeat(200);
    let mut total = Delivery::default();
    for _ in 0..10 {
        let d = h.server_mut().publish("t", Message::Text(&text));
        total.sent += d.sent;
        total.queued += d.queued;
        total.dropped += d.dropped;
    }
    // The first goes out in part (the window takes 100 of its 208 bytes), four more queue
    // behind it up to 940 bytes, and the rest would pass 1024: dropped.
    assert_eq!((total.sent, total.queued, total.dropped), (0, 5, 5));
    assert_eq!(h.stats().slow_drops, 5);
    assert!(
        h.buffered_amount(&peer) > 256,
        "{}",
        h.buffered_amount(&peer)
    );
    h.set_window(&peer, usize::MAX);
    assert_eq!(h.received_events(&mut peer).len(), 5);
    assert_eq!(h.buffered_amount(&peer), 0);
    assert_eq!(
        log.0.lock().unwrap().drains,
        1,
        "on_drain once the queue fell"
    );
    // The stream goes on.
    h.server_mut().publish("t", Message::Text("after"));
    let after = Event {
        id: None,
        data: "after".into(),
    };
    assert_eq!(h.received_events(&mut peer), [after]);
    assert!(log.closes().is_empty());
}

#[test]
fn what_a_stream_cannot_carry_is_refused_with_its_status() {
    let cfg = Config::default().max_send_size(1000).max_message_size(1000);
    let (mut h, _log) = harness(cfg);
    let mut peer = h.events("/events", &[]).expect("a stream");
    h.received_stream(&mut peer);
    let id = peer.id();
    let server = h.server_mut();
    assert_eq!(
        server.send(id, Message::Binary(b"bytes")),
        SendStatus::NotText
    );
    assert_eq!(
        server.send_event(id, "a\nb", Message::Text("x")),
        SendStatus::InvalidEventId
    );
    assert_eq!(
        server.send_event(id, "a\rb", Message::Text("x")),
        SendStatus::InvalidEventId
    );
    // The limit is on the event: 1000 bytes of text are 1008 once encoded.
    let text = "z".repeat(1000);
    assert_eq!(server.send(id, Message::Text(&text)), SendStatus::TooLarge);
    assert_eq!(
        server.send(id, Message::Text(&text[..992])),
        SendStatus::Sent
    );
    // Text that is all line breaks grows the most, and is bounded the same way.
    let breaks = "\n".repeat(200);
    assert_eq!(
        server.send(id, Message::Text(&breaks)),
        SendStatus::TooLarge
    );
    assert_eq!(
        server.publish_event("t", "bad\0", Message::Text("x")),
        Delivery::default()
    );
    assert_eq!(h.received_events(&mut peer).len(), 1);
    // A WebSocket gets the plain frame for send_event; a bad id is refused there too.
    let mut ws = h.connect("/").unwrap();
    let ws_id = ws.id();
    assert_eq!(
        h.server_mut().send_event(ws_id, "1", Message::Text("hi")),
        SendStatus::Sent
    );
    assert_eq!(
        h.server_mut().send_event(ws_id, "\n", Message::Text("hi")),
        SendStatus::InvalidEventId
    );
    assert_eq!(
        h.received(&mut ws),
        [emberws::testing::Frame::Text("hi".into())]
    );
}

#[test]
fn imported_publishes_reach_event_streams() {
    let (mut h, _log) = harness(Config::default());
    let mut peer = h.events("/events?topic=bridge/+", &[]).expect("a stream");
    h.received_stream(&mut peer);
    let d = h
        .server_mut()
        .import("bridge/a", Message::Text("from redis"));
    assert_eq!(d.sent, 1);
    h.server_mut()
        .import_event("bridge/b", "e-9", Message::Text("with id"));
    assert_eq!(
        h.received_events(&mut peer),
        [
            Event {
                id: None,
                data: "from redis".into()
            },
            Event {
                id: Some("e-9".into()),
                data: "with id".into()
            },
        ]
    );
}

#[test]
fn the_origin_allow_list_applies_to_streams() {
    let cfg = Config::default().allowed_origins(vec!["https://board.example".into()]);
    let (mut h, log) = harness(cfg);
    let refused = h
        .events("/events", &[("Origin", "https://elsewhere.example")])
        .unwrap_err();
    assert_eq!(refused.status, 403);
    assert!(log.streams().is_empty(), "no on_open for a refused origin");
    let peer = h
        .events("/events", &[("Origin", "https://board.example")])
        .expect("an allowed origin");
    assert_eq!(h.stats().event_streams_open, 1);
    drop(peer);
    // The answer names the origin, so the page may read the stream (checked on the head).
    let mut raw = h
        .open_raw(sse::request("/events", &[("Origin", "https://board.example")]).as_bytes())
        .unwrap();
    let answer = h.answer(&mut raw).unwrap();
    let allow = answer
        .headers
        .iter()
        .find(|(n, _)| n == "Access-Control-Allow-Origin")
        .map(|(_, v)| v.as_str());
    assert_eq!(allow, Some("https://board.example"));
}

#[test]
fn the_idle_timeout_ends_a_quiet_stream_with_1000() {
    let cfg = Config::default().idle_timeout(Some(Duration::from_secs(60)));
    let (mut h, log) = harness(cfg);
    let mut peer = h.events("/events?topic=t", &[]).expect("a stream");
    h.advance(Duration::from_secs(30));
    h.server_mut().publish("t", Message::Text("keeps it"));
    h.advance(Duration::from_secs(59));
    assert!(
        log.closes().is_empty(),
        "keep-alives are not messages, events are"
    );
    h.advance(Duration::from_secs(1));
    assert_eq!(
        log.closes(),
        [(Kind::EventStream, 1000, "idle timeout".into())]
    );
    let items = h.received_stream(&mut peer);
    assert!(items.contains(&Streamed::Event(Event {
        id: None,
        data: "keeps it".into()
    })));
    assert!(peer.is_shut());
}

#[test]
fn a_stream_counts_against_max_connections() {
    let (mut h, _log) = harness(Config::default().max_connections(1));
    let _peer = h.events("/events", &[]).expect("a stream");
    let refused = h.events("/events", &[]).unwrap_err();
    assert_eq!(refused.status, 503);
}

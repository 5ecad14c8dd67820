//! Limits against real peers: connection caps (total and per IP), the Origin allow-list,
//! the handler's upgrade decision, the message size limit, and bounded memory under a
//! peer that floods without reading.

mod util;

use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use emberws::{Config, Ctx, Decision, Handler, HttpRequest, Message as Msg};
use socket2::{Domain, Socket, Type};
use tungstenite::Message;
use util::clients::{client_on, connect, echo_round, read_close_code, try_client_on, Client};
use util::raw::{self, op, BackgroundWriter, Event, RawClient};
use util::{eventually, spawn_recorder, spawn_server, Echo, TestServer};

/// A TCP connection to `server` from the local address `from` (port chosen by the system).
fn connect_from(from: [u8; 4], server: SocketAddr) -> TcpStream {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    socket.bind(&SocketAddr::from((from, 0)).into()).unwrap();
    socket.connect(&server.into()).unwrap();
    socket.into()
}

/// Sends an upgrade request for `path` with extra headers; returns the response status and
/// head.
fn upgrade_status(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> raw::HttpResponse {
    let request = raw::upgrade_request(&addr.to_string(), path, &raw::random_key(), headers);
    let (response, _stream) = raw::http_request(addr, request.as_bytes()).expect("request");
    response
}

#[test]
fn max_connections_refuses_the_next_with_503_and_retry_after() {
    let server = spawn_server(Config::default().max_connections(3), Echo);
    let mut clients: Vec<Client> = (0..3).map(|_| connect(&server)).collect();
    let refused = upgrade_status(server.addr, "/", &[]);
    assert_eq!(refused.status, 503, "{}", refused.head);
    let retry = refused
        .header("retry-after")
        .expect("503 without Retry-After");
    assert!(
        retry.trim().parse::<u64>().is_ok(),
        "Retry-After: {retry:?}"
    );
    for (i, ws) in clients.iter_mut().enumerate() {
        echo_round(ws, &format!("client {i} still served"));
    }
    // A slot freed is a slot available again.
    let mut gone = clients.pop().unwrap();
    gone.close(None).unwrap();
    while gone.read().is_ok() {}
    let mut again = eventually("a freed slot to be reusable", || {
        try_client_on(TcpStream::connect(server.addr).ok()?, &server.url())
    });
    echo_round(&mut again, "in the freed slot");
    assert!(server.handle.stats().unwrap().rejected_with(503) >= 1);
}

#[test]
fn max_connections_per_ip_counts_each_address_apart() {
    let server = spawn_server(Config::default().max_connections_per_ip(2), Echo);
    let mut a = client_on(connect_from([127, 0, 0, 1], server.addr), &server.url());
    let mut b = client_on(connect_from([127, 0, 0, 1], server.addr), &server.url());
    let refused = upgrade_status(server.addr, "/", &[]);
    assert_eq!(refused.status, 503, "{}", refused.head);
    assert!(
        refused.header("retry-after").is_some(),
        "503 without Retry-After"
    );

    let mut other = client_on(connect_from([127, 0, 0, 2], server.addr), &server.url());
    echo_round(&mut other, "from 127.0.0.2");
    echo_round(&mut a, "a");
    echo_round(&mut b, "b");

    // When one from 127.0.0.1 leaves, another from there gets its place.
    a.close(None).unwrap();
    while a.read().is_ok() {}
    let mut again = eventually("127.0.0.1 to have a free place again", || {
        try_client_on(connect_from([127, 0, 0, 1], server.addr), &server.url())
    });
    echo_round(&mut again, "a's successor");
}

#[test]
fn origin_allow_list() {
    let server = spawn_server(
        Config::default().allowed_origins(vec!["https://good.example".to_string()]),
        Echo,
    );
    let foreign = upgrade_status(server.addr, "/", &[("Origin", "https://evil.example")]);
    assert_eq!(foreign.status, 403, "{}", foreign.head);
    // Exact match only: another scheme or port is another origin.
    let near = upgrade_status(server.addr, "/", &[("Origin", "http://good.example")]);
    assert_eq!(near.status, 403, "{}", near.head);

    let mut ok = RawClient::connect_with(server.addr, "/", &[("Origin", "https://good.example")])
        .expect("the allowed origin was refused");
    ok.send_frame(true, 0, op::TEXT, b"hi").unwrap();
    assert_eq!(
        ok.read_event().unwrap(),
        Event::Message {
            binary: false,
            payload: b"hi".to_vec()
        }
    );
}

/// Requires `Authorization: Bearer secret`; `/private` does not exist.
struct Guarded;

impl Handler for Guarded {
    type State = ();

    fn on_upgrade(&mut self, req: &HttpRequest<'_>) -> Decision<()> {
        if req.path() == "/private" {
            return Decision::Reject(404);
        }
        match req.header("Authorization") {
            Some(b"Bearer secret") => Decision::Accept(()),
            _ => Decision::Reject(401),
        }
    }

    fn on_message(&mut self, ctx: &mut Ctx<'_>, _state: &mut (), msg: Msg<'_>) {
        ctx.send(msg);
    }
}

#[test]
fn handler_decides_the_upgrade() {
    let server = spawn_server(Config::default(), Guarded);
    let addr = server.addr;
    assert_eq!(upgrade_status(addr, "/", &[]).status, 401);
    assert_eq!(
        upgrade_status(addr, "/", &[("Authorization", "Bearer wrong")]).status,
        401
    );
    let private = upgrade_status(addr, "/private", &[("Authorization", "Bearer secret")]);
    assert_eq!(private.status, 404, "{}", private.head);

    let mut ok = RawClient::connect_with(addr, "/", &[("Authorization", "Bearer secret")])
        .expect("the authorized client was refused");
    ok.send_frame(true, 0, op::TEXT, b"authorized").unwrap();
    assert_eq!(
        ok.read_event().unwrap(),
        Event::Message {
            binary: false,
            payload: b"authorized".to_vec()
        }
    );
    let stats = server.handle.stats().unwrap();
    assert_eq!(stats.rejected_with(401), 2);
    assert_eq!(stats.rejected_with(404), 1);
    assert_eq!(stats.accepted, 1);
}

#[test]
fn message_over_max_message_size_closes_with_1009() {
    let server = spawn_server(Config::default().max_message_size(1000), Echo);
    let mut ws = connect(&server);
    ws.send(Message::binary(vec![7u8; 1000])).unwrap();
    match ws.read().unwrap() {
        Message::Binary(b) => assert_eq!(b.len(), 1000),
        other => panic!("the 1000-byte message was not echoed: {other:?}"),
    }
    ws.send(Message::binary(vec![7u8; 1001])).unwrap();
    assert_eq!(read_close_code(&mut ws), 1009);

    // The same for text, and for a message split into small fragments.
    let mut ws = connect(&server);
    ws.send(Message::text("x".repeat(1001))).unwrap();
    assert_eq!(read_close_code(&mut ws), 1009);
    let mut raw = RawClient::connect(server.addr).unwrap();
    let mut bytes = raw::client_frame(false, op::BINARY, &[1u8; 100]);
    for _ in 0..9 {
        bytes.extend(raw::client_frame(false, op::CONTINUATION, &[1u8; 100]));
    }
    bytes.extend(raw::client_frame(true, op::CONTINUATION, &[1u8; 1]));
    raw.send(&bytes).unwrap();
    match raw.read_event().unwrap() {
        Event::Close { code, .. } => assert_eq!(code, Some(1009)),
        other => panic!("expected a 1009 close, got {other:?}"),
    }
    assert_eq!(server.handle.stats().unwrap().closes_with(1009), 3);
}

const FLOOD: usize = 10 << 20;

/// Floods `bytes` (whole frames, repeated to [`FLOOD`] bytes) at a server without reading,
/// then checks: the handler saw 1008 once, the client finds pongs/echoes then a 1008 close
/// (or the connection gone), and no more than `backpressure + max_frame` bytes were ever
/// queued.
fn flood_without_reading(unit: &[u8], max_frame: u64, backpressure: u64) {
    let (server, closes) = spawn_recorder(
        Config::default()
            .max_backpressure(backpressure as usize)
            .close_timeout(Duration::from_secs(2)),
    );
    let mut client = RawClient::connect(server.addr).unwrap();
    let mut writer = client.background_writer().unwrap();
    let batch: Vec<u8> = unit.repeat((256 * 1024) / unit.len());
    for _ in 0..FLOOD / batch.len() {
        writer.send(batch.clone());
    }
    // The server may end the connection while we still write: a failed write is fine.
    let _ = writer.wait_idle();
    closes.wait_for_any("the flooding client to be closed");
    let stats = server.handle.stats().unwrap();
    assert_eq!(closes.codes(), [1008], "the flooder's close code");
    assert_eq!(stats.slow_closes, 1);
    assert!(
        stats.queued_high_water <= backpressure + max_frame,
        "{} bytes were queued at once for one peer; the limit is {backpressure} + one frame",
        stats.queued_high_water
    );
    // What the client finally reads ends with the 1008 close, unless the server had to
    // give up on flushing it (close timeout) and dropped the connection.
    loop {
        match client.read_event() {
            Ok(Event::Close { code, .. }) => {
                assert_eq!(code, Some(1008));
                break;
            }
            Ok(Event::Eof) => break,
            Ok(_) => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::UnexpectedEof
                ) =>
            {
                break
            }
            Err(e) => panic!("reading what the flooded server sent: {e}"),
        }
    }
    server.wait_for_open_connections(0, "the flooder's connection to end");
    let stats = server.handle.stats().unwrap();
    assert_eq!(stats.queued_bytes, 0, "queued bytes left behind");
    assert!(stats.queued_high_water <= backpressure + max_frame);
}

/// How many pings a ping flood sends.
const PINGS: usize = 80_000;

/// A ping payload that names its index, padded to the 125-byte maximum.
fn ping_payload(i: usize) -> Vec<u8> {
    let mut payload = format!("ping-{i:08}-").into_bytes();
    payload.resize(125, b'p');
    payload
}

/// Connects and has a background writer send [`PINGS`] pings (see [`ping_payload`]), then
/// a text message `done`; nothing is read.
fn start_ping_flood(server: &TestServer) -> (RawClient, BackgroundWriter) {
    let client = RawClient::connect(server.addr).unwrap();
    let mut writer = client.background_writer().unwrap();
    for chunk in (0..PINGS).collect::<Vec<_>>().chunks(2000) {
        writer.send(
            chunk
                .iter()
                .flat_map(|&i| raw::client_frame(true, op::PING, &ping_payload(i)))
                .collect(),
        );
    }
    writer.send(raw::client_frame(true, op::TEXT, b"done"));
    (client, writer)
}

/// Reads the answers to a ping flood up to the echo of `done`: every pong must carry its
/// ping's payload, in increasing order. Returns the index of the last pong.
fn read_pongs_until_done(client: &mut RawClient) -> Option<usize> {
    let mut last = None;
    loop {
        match client.read_event() {
            Ok(Event::Pong(p)) => {
                let i = std::str::from_utf8(p.get(5..13).unwrap_or_default())
                    .ok()
                    .and_then(|n| n.parse::<usize>().ok())
                    .unwrap_or_else(|| {
                        panic!(
                            "after pong {last:?}, a pong that no ping sent: {}",
                            raw::preview(&p)
                        )
                    });
                assert!(last.is_none_or(|l| i > l), "pong {i} after pong {last:?}");
                assert_eq!(p, ping_payload(i), "pong {i} is not its ping's payload");
                last = Some(i);
            }
            Ok(Event::Message { payload, .. }) => {
                assert_eq!(payload, b"done");
                return last;
            }
            other => panic!("after pong {last:?}: {other:?}"),
        }
    }
}

#[test]
fn ping_flood_without_reading_stays_bounded_and_served() {
    // Pongs are not data a slow consumer falls behind on: RFC 6455 §5.5.3 lets the server
    // answer only the latest ping, so a waiting pong is replaced and the queue stays bounded.
    let backpressure = 64 * 1024;
    let server = spawn_server(Config::default().max_backpressure(backpressure), Echo);
    let (mut client, mut writer) = start_ping_flood(&server);
    writer.wait_idle().unwrap();
    // Every ping has reached the server; only now does the client start reading.
    read_pongs_until_done(&mut client);
    let stats = server.handle.stats().unwrap();
    // The output batch stops taking pongs at the limit; one more waits in the queue.
    assert!(
        stats.queued_high_water <= (backpressure + 2 * 127) as u64,
        "{} bytes queued for a ping flood",
        stats.queued_high_water
    );
    assert_eq!(stats.slow_closes, 0);
}

#[test]
fn echo_flood_without_reading_is_closed_with_1008_and_bounded() {
    let message = raw::client_frame(true, op::BINARY, &[b'e'; 1024]);
    flood_without_reading(&message, 1024 + 4, 64 * 1024);
    // A limit below the loop's 64 KiB output batch holds just the same.
    flood_without_reading(&message, 1024 + 4, 16 * 1024);
}

#[test]
fn pongs_stay_well_formed_when_a_ping_flood_backs_up() {
    // Backpressure large enough for every pong: no policy applies, so each pong must come
    // back well framed, in order (RFC 6455 §5.5.3 allows skipping all but the latest).
    let server = spawn_server(Config::default().max_backpressure(64 << 20), Echo);
    let (mut client, mut writer) = start_ping_flood(&server);
    let last = read_pongs_until_done(&mut client);
    writer.wait_idle().unwrap();
    assert_eq!(last, Some(PINGS - 1), "the last ping was not answered");
}

//! Deadlines with real peers: pings and the pong timeout, the handshake timeout against a
//! slow-loris client, and the idle timeout.
//!
//! Timeouts are configured short; the tests assert only that a drop happens (within a
//! generous bound) and that it does not happen to a well-behaved peer — never how soon.

mod util;

use std::io::Write;
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use emberws::{CloseCode, Config, Ctx, Handler, Message as Msg};
use tungstenite::{Message, WebSocket};
use util::raw::{self, RawClient};
use util::{spawn_server, TestServer};

type Client = WebSocket<TcpStream>;

/// A generous bound for anything the tests wait for.
const DEADLINE: Duration = Duration::from_secs(20);

/// Echoes, and records every close code it is told about.
#[derive(Default)]
struct Recorder {
    closes: Arc<Mutex<Vec<u16>>>,
}

impl Handler for Recorder {
    fn on_message(&mut self, ctx: &mut Ctx<'_>, msg: Msg<'_>) {
        ctx.send(msg);
    }

    fn on_close(&mut self, _ctx: &mut Ctx<'_>, code: CloseCode, _reason: &str) {
        self.closes.lock().unwrap().push(code.as_u16());
    }
}

fn start(cfg: Config) -> (TestServer, Arc<Mutex<Vec<u16>>>) {
    let handler = Recorder::default();
    let closes = Arc::clone(&handler.closes);
    (spawn_server(cfg, handler), closes)
}

fn codes(closes: &Mutex<Vec<u16>>) -> Vec<u16> {
    closes.lock().unwrap().clone()
}

fn connect(server: &TestServer) -> Client {
    let stream = TcpStream::connect(server.addr).unwrap();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    stream.set_write_timeout(Some(DEADLINE)).unwrap();
    let (ws, response) = tungstenite::client(server.url(), stream).expect("handshake");
    assert_eq!(response.status(), 101);
    ws
}

fn echo_round(ws: &mut Client, text: &str) {
    ws.send(Message::text(text)).unwrap();
    loop {
        match ws.read().expect("read") {
            Message::Text(t) => {
                assert_eq!(t.as_str(), text);
                return;
            }
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// Polls `f` until it returns `Some`, or panics with `what` after [`DEADLINE`].
fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        thread::sleep(Duration::from_millis(10));
    }
}

/// A round trip through the loop's inbox: every close the loop reported before it is
/// recorded once this returns.
fn settle(server: &TestServer) {
    server.handle.stats().expect("stats");
}

#[test]
fn peer_that_never_answers_pings_is_dropped_with_1006_once() {
    let (server, closes) = start(
        Config::default()
            .ping_interval(Some(Duration::from_millis(200)))
            .pong_timeout(Duration::from_millis(200)),
    );
    let silent = RawClient::connect(server.addr).expect("raw connect");
    // It never sends anything again. Reading tells the server nothing (liveness is what it
    // receives), and is the only way to see the drop.
    let mut stream = silent.stream().try_clone().unwrap();
    let received =
        raw::read_to_eof(&mut stream, 1 << 20, DEADLINE).expect("the silent peer was not dropped");
    // Whatever came before the drop were pings, and no close frame: a drop is a TCP close.
    assert!(
        received.len() % 2 == 0 && received.chunks(2).all(|f| f == [0x89, 0x00]),
        "expected only empty pings before the drop, got {:02x?}",
        &received[..received.len().min(64)]
    );

    eventually("the handler to see the close", || {
        (!codes(&closes).is_empty()).then_some(())
    });
    settle(&server);
    assert_eq!(
        codes(&closes),
        [1006],
        "on_close should run once, with 1006"
    );
    let stats = server.handle.stats().unwrap();
    assert_eq!(stats.timeouts, 1);
    assert_eq!(stats.connections_open, 0);
    assert_eq!(stats.closes_with(1006), 1);
    drop(silent);
}

#[test]
fn peer_that_reads_and_answers_pings_stays_connected() {
    // The pong timeout is long enough that a descheduled client thread cannot miss it; the
    // test still sees several ping rounds, each only possible after the previous pong.
    let (server, closes) = start(
        Config::default()
            .ping_interval(Some(Duration::from_millis(200)))
            .pong_timeout(Duration::from_secs(5)),
    );
    let mut ws = connect(&server);
    echo_round(&mut ws, "before");
    // The server pings again only after a pong arrived (an unanswered ping is followed by
    // a drop, not another ping), so three pings prove three answered rounds.
    let mut pings = 0;
    let deadline = Instant::now() + DEADLINE;
    while pings < 3 {
        assert!(Instant::now() < deadline, "only {pings} pings arrived");
        match ws.read() {
            Ok(Message::Ping(p)) => {
                pings += 1;
                assert!(p.is_empty());
                ws.flush().expect("flush the pong");
            }
            Ok(other) => panic!("unexpected {other:?}"),
            Err(e) => panic!("the connection failed after {pings} pings: {e}"),
        }
    }
    echo_round(&mut ws, "still here");
    settle(&server);
    assert!(
        codes(&closes).is_empty(),
        "a close was reported: {:?}",
        codes(&closes)
    );
    let stats = server.handle.stats().unwrap();
    assert_eq!(stats.timeouts, 0);
    assert_eq!(stats.connections_open, 1);
}

#[test]
fn slow_loris_handshake_is_dropped_and_others_are_served() {
    let (server, _) = start(Config::default().handshake_timeout(Duration::from_millis(300)));
    let addr = server.addr;
    let request = raw::upgrade_request(
        &addr.to_string(),
        "/",
        &raw::random_key(),
        &[("X-Padding", &"p".repeat(300))],
    );
    let mut loris = raw::connect_tcp(addr).unwrap();
    let mut watcher = loris.try_clone().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let stop_writer = Arc::clone(&stop);
    // One byte every 100 ms: the whole head would take over 40 s.
    let writer = thread::spawn(move || {
        for byte in request.bytes() {
            if stop_writer.load(Ordering::SeqCst) || loris.write_all(&[byte]).is_err() {
                return;
            }
            thread::sleep(Duration::from_millis(100));
        }
    });

    // A normal client, while the slow one dribbles.
    let mut ws = connect(&server);
    echo_round(&mut ws, "served meanwhile");

    let received =
        raw::read_to_eof(&mut watcher, 1 << 16, DEADLINE).expect("the slow loris was not dropped");
    stop.store(true, Ordering::SeqCst);
    writer.join().unwrap();
    assert!(
        !received.starts_with(b"HTTP/1.1 101"),
        "the slow loris was upgraded: {}",
        String::from_utf8_lossy(&received)
    );

    // And one connecting after the drop.
    let mut late = connect(&server);
    echo_round(&mut late, "served after");
    echo_round(&mut ws, "still served");
    let stats = server.handle.stats().unwrap();
    assert_eq!(stats.timeouts, 1);
    assert_eq!(stats.accepted, 2);
}

/// Reads until a close frame, answering it; returns its code and reason.
fn read_close(ws: &mut Client) -> (u16, String) {
    let mut got = None;
    loop {
        match ws.read() {
            Ok(Message::Close(frame)) => {
                let frame = frame.expect("a close frame without a code");
                got = Some((u16::from(frame.code), frame.reason.as_str().to_owned()));
            }
            Ok(Message::Ping(_)) | Ok(Message::Pong(_)) => {}
            Ok(other) => panic!("unexpected {other:?}"),
            Err(tungstenite::Error::ConnectionClosed) => {
                return got.expect("the connection closed without a close frame")
            }
            Err(e) => panic!("the close did not complete cleanly: {e} (close frame: {got:?})"),
        }
    }
}

#[test]
fn idle_timeout_closes_a_silent_connection_with_1000() {
    let (server, closes) = start(
        Config::default()
            .ping_interval(None)
            .idle_timeout(Some(Duration::from_millis(300))),
    );
    let mut ws = connect(&server);
    let (code, _) = read_close(&mut ws);
    assert_eq!(code, 1000);
    eventually("the server to end the connection", || {
        (server.handle.stats().ok()?.connections_open == 0).then_some(())
    });
    assert_eq!(codes(&closes), [1000]);
}

#[test]
fn heartbeats_do_not_count_as_activity_for_the_idle_timeout() {
    let (server, closes) = start(
        Config::default()
            .ping_interval(Some(Duration::from_millis(100)))
            .pong_timeout(Duration::from_secs(5))
            .idle_timeout(Some(Duration::from_millis(600))),
    );
    let mut ws = connect(&server);
    // tungstenite answers every ping while it reads; no data message goes either way.
    let (code, _) = read_close(&mut ws);
    assert_eq!(code, 1000);
    eventually("the server to end the connection", || {
        (server.handle.stats().ok()?.connections_open == 0).then_some(())
    });
    assert_eq!(codes(&closes), [1000]);
    assert_eq!(server.handle.stats().unwrap().timeouts, 0);
}

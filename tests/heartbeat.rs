//! Deadlines with real peers: pings and the pong timeout, the handshake timeout against a
//! slow-loris client, and the idle timeout.
//!
//! Timeouts are configured short; the tests assert only that a drop happens (within a
//! generous bound) and that it does not happen to a well-behaved peer — never how soon.

mod util;

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use emberws::Config;
use tungstenite::Message;
use util::clients::{connect, echo_round, read_close_code};
use util::raw::{self, RawClient};
use util::{spawn_recorder, CloseLog, TestServer, DEADLINE};

/// A round trip through the loop's inbox: every close the loop reported before it is
/// recorded once this returns.
fn settle(server: &TestServer) {
    server.handle.stats().expect("stats");
}

#[test]
fn peer_that_never_answers_pings_is_dropped_with_1006_once() {
    let (server, closes) = spawn_recorder(
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

    closes.wait_for_any("the handler to see the close");
    settle(&server);
    assert_eq!(
        closes.codes(),
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
    let (server, closes) = spawn_recorder(
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
        closes.codes().is_empty(),
        "a close was reported: {:?}",
        closes.codes()
    );
    let stats = server.handle.stats().unwrap();
    assert_eq!(stats.timeouts, 0);
    assert_eq!(stats.connections_open, 1);
}

#[test]
fn slow_loris_handshake_is_dropped_and_others_are_served() {
    let (server, _) =
        spawn_recorder(Config::default().handshake_timeout(Duration::from_millis(300)));
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

/// Expects the idle timeout to close the next connection with 1000, and the handler to see
/// exactly that close.
fn expect_idle_close(server: &TestServer, closes: &CloseLog) {
    let mut ws = connect(server);
    assert_eq!(read_close_code(&mut ws), 1000);
    server.wait_for_open_connections(0, "the server to end the connection");
    assert_eq!(closes.codes(), [1000]);
}

#[test]
fn idle_timeout_closes_a_silent_connection_with_1000() {
    let (server, closes) = spawn_recorder(
        Config::default()
            .ping_interval(None)
            .idle_timeout(Some(Duration::from_millis(300))),
    );
    expect_idle_close(&server, &closes);
}

#[test]
fn heartbeats_do_not_count_as_activity_for_the_idle_timeout() {
    let (server, closes) = spawn_recorder(
        Config::default()
            .ping_interval(Some(Duration::from_millis(100)))
            .pong_timeout(Duration::from_secs(5))
            .idle_timeout(Some(Duration::from_millis(600))),
    );
    // tungstenite answers every ping while it reads; no data message goes either way.
    expect_idle_close(&server, &closes);
    assert_eq!(server.handle.stats().unwrap().timeouts, 0);
}

//! Graceful shutdown: SIGTERM and SIGINT to the binary, and `ServerHandle::shutdown` in
//! process. Every open connection gets a close frame with 1001; then the server ends.

mod util;

use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use emberws::{Config, Server, ServerHandle};
use tungstenite::Message;
use util::binary::ServerProcess;
use util::clients::{connect_to, read_close_code, Client};
use util::raw::{self, Event, RawClient};
use util::{Echo, DEADLINE};

fn connect(url: &str, addr: SocketAddr) -> Client {
    let mut ws = connect_to(addr, url);
    // One echo proves the connection open on the server's side too.
    ws.send(Message::text("hello")).unwrap();
    assert_eq!(ws.read().unwrap(), Message::text("hello"));
    ws
}

fn signal_shuts_down(signal: &str) {
    let mut server = ServerProcess::echo::<&str>(&[]);
    let url = server.ws_url();
    let mut clients: Vec<Client> = (0..3).map(|_| connect(&url, server.addr())).collect();
    let status = Command::new("kill")
        .args([&format!("-{signal}"), &server.pid().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{signal} failed");
    for ws in &mut clients {
        assert_eq!(read_close_code(ws), 1001);
    }
    let status = server.wait_exit(DEADLINE).unwrap_or_else(|| {
        panic!(
            "emberws did not exit after SIG{signal}; stderr:\n{}",
            server.stderr_tail(20)
        )
    });
    assert!(
        status.success(),
        "emberws exited with {status} after SIG{signal}; stderr:\n{}",
        server.stderr_tail(20)
    );
}

#[test]
fn sigterm_closes_every_connection_with_1001_and_exits_0() {
    signal_shuts_down("TERM");
}

#[test]
fn sigint_closes_every_connection_with_1001_and_exits_0() {
    signal_shuts_down("INT");
}

/// Runs a server on a thread; the receiver gets whether `Server::run` returned `Ok`.
fn run_in_process(cfg: Config) -> (SocketAddr, ServerHandle, mpsc::Receiver<bool>) {
    util::init();
    let (started_tx, started_rx) = mpsc::channel();
    let (done_tx, done_rx) = mpsc::channel();
    thread::spawn(move || {
        let mut server = Server::bind("127.0.0.1:0".parse().unwrap(), cfg, Echo).expect("bind");
        started_tx
            .send((server.local_addr(), server.handle()))
            .unwrap();
        let result = server.run();
        if let Err(e) = &result {
            eprintln!("Server::run failed: {e}");
        }
        // Dropped before reporting, so the test's later commands find it gone.
        drop(server);
        let _ = done_tx.send(result.is_ok());
    });
    let (addr, handle) = started_rx.recv().expect("the server thread did not start");
    (addr, handle, done_rx)
}

#[test]
fn server_handle_shutdown_closes_with_1001_and_run_returns_ok() {
    let (addr, handle, done) = run_in_process(Config::default());
    let url = format!("ws://{addr}/");
    let mut clients: Vec<Client> = (0..3).map(|_| connect(&url, addr)).collect();
    // A connection still in its handshake is simply dropped.
    let mut handshaking = raw::connect_tcp(addr).unwrap();
    handshake_started(&mut handshaking);

    handle.shutdown().expect("shutdown");
    for ws in &mut clients {
        assert_eq!(read_close_code(ws), 1001);
    }
    let ok = done
        .recv_timeout(DEADLINE)
        .expect("Server::run did not return");
    assert!(ok, "Server::run returned an error");
    let left = raw::read_to_eof(&mut handshaking, 1 << 16, DEADLINE).expect("not dropped");
    assert!(
        !left.starts_with(b"HTTP/1.1 101"),
        "upgraded during shutdown"
    );
    assert!(
        handle.shutdown().is_err(),
        "a stopped server accepted a command"
    );
}

/// Sends the first line of a request head, no more.
fn handshake_started(stream: &mut TcpStream) {
    use std::io::Write;
    stream.write_all(b"GET / HTTP/1.1\r\n").unwrap();
}

#[test]
fn shutdown_ends_even_if_a_peer_never_answers_the_close() {
    let (addr, handle, done) =
        run_in_process(Config::default().close_timeout(Duration::from_millis(300)));
    let url = format!("ws://{addr}/");
    let mut polite = connect(&url, addr);
    let mut mute = RawClient::connect(addr).unwrap();

    handle.shutdown().expect("shutdown");
    assert_eq!(read_close_code(&mut polite), 1001);
    // The mute peer gets the close frame but never answers: the close timeout ends it.
    match mute.read_event().unwrap() {
        Event::Close { code, .. } => assert_eq!(code, Some(1001)),
        other => panic!("expected a 1001 close, got {other:?}"),
    }
    let ok = done
        .recv_timeout(DEADLINE)
        .expect("Server::run did not return");
    assert!(ok, "Server::run returned an error");
    mute.wait_for_eof(DEADLINE)
        .expect("the mute peer's connection was left open");
}

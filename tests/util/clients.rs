//! Real clients (tungstenite) for the integration tests: connecting, echo rounds, reading a
//! close, and the bystander that must keep getting echoes while bad input is answered.
//!
//! Every socket gets read and write timeouts of [`DEADLINE`], so a test that waits for
//! something that never comes fails instead of hanging.

use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::thread;

use tungstenite::{Message, WebSocket};

use super::{TestServer, DEADLINE};

/// A tungstenite client over a plain TCP stream.
pub type Client = WebSocket<TcpStream>;

/// Completes the opening handshake for `url` on `stream` (with timeouts of [`DEADLINE`]),
/// asserting `101`.
pub fn client_on(stream: TcpStream, url: &str) -> Client {
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    stream.set_write_timeout(Some(DEADLINE)).unwrap();
    let (ws, response) = tungstenite::client(url, stream).expect("handshake");
    assert_eq!(response.status(), 101);
    ws
}

/// Connects to `addr` and opens `url` there (see [`client_on`]).
pub fn connect_to(addr: SocketAddr, url: &str) -> Client {
    client_on(TcpStream::connect(addr).unwrap(), url)
}

/// Connects to a [`TestServer`] (see [`client_on`]).
pub fn connect(server: &TestServer) -> Client {
    connect_to(server.addr, &server.url())
}

/// Tries the opening handshake for `url` on `stream` (with a read timeout of
/// [`DEADLINE`]); `None` when it fails or is refused. For use with `eventually`.
pub fn try_client_on(stream: TcpStream, url: &str) -> Option<Client> {
    stream.set_read_timeout(Some(DEADLINE)).ok()?;
    tungstenite::client(url, stream).ok().map(|(ws, _)| ws)
}

/// The next text message (pings and pongs skipped).
pub fn recv_text(ws: &mut Client) -> String {
    loop {
        match ws.read().expect("read") {
            Message::Text(t) => return t.as_str().to_owned(),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("expected a text message, got {other:?}"),
        }
    }
}

/// Sends `text` and asserts that the next text message is its echo.
pub fn echo_round(ws: &mut Client, text: &str) {
    ws.send(Message::text(text)).unwrap();
    assert_eq!(recv_text(ws), text);
}

/// Reads until the server's close frame, answers it (tungstenite does), and waits for the
/// end of the connection; returns the close code.
pub fn read_close_code(ws: &mut Client) -> u16 {
    let mut got = None;
    loop {
        match ws.read() {
            Ok(Message::Close(frame)) => got = frame.map(|f| u16::from(f.code)),
            Ok(Message::Ping(_)) | Ok(Message::Pong(_)) => {}
            Ok(other) => panic!("unexpected {other:?} before the close"),
            Err(tungstenite::Error::ConnectionClosed) => {
                return got.expect("the connection ended without a close code")
            }
            Err(e) => panic!("the close did not complete cleanly: {e} (code so far: {got:?})"),
        }
    }
}

/// A well-behaved client connected before the bad input, that must keep getting echoes.
pub struct Bystander {
    ws: Client,
    round: u32,
}

impl Bystander {
    /// Connects to `addr` and checks a first echo.
    pub fn connect(addr: SocketAddr) -> Bystander {
        let ws = connect_to(addr, &format!("ws://{addr}/"));
        let mut bystander = Bystander { ws, round: 0 };
        bystander.assert_echoes();
        bystander
    }

    /// Sends one text message and waits for its echo.
    pub fn assert_echoes(&mut self) {
        self.round += 1;
        let text = format!("bystander round {}", self.round);
        self.ws
            .send(Message::text(text.clone()))
            .unwrap_or_else(|e| panic!("bystander: send of round {} failed: {e}", self.round));
        loop {
            match self.ws.read() {
                Ok(Message::Ping(_) | Message::Pong(_)) => continue,
                Ok(got) => {
                    assert_eq!(got, Message::text(text), "bystander: wrong echo");
                    return;
                }
                Err(e) => panic!("bystander: no echo of round {}: {e}", self.round),
            }
        }
    }

    /// Runs `bad(i)` for `i` in `0..clients`, each on its own thread (a bad client that
    /// checks its own answer), and keeps checking echoes while they run; then joins them,
    /// failing if any failed, and checks one more echo.
    pub fn assert_echoes_during(
        &mut self,
        clients: usize,
        bad: impl Fn(usize) + Send + Sync + 'static,
    ) {
        let bad = Arc::new(bad);
        let threads: Vec<_> = (0..clients)
            .map(|i| {
                let bad = Arc::clone(&bad);
                thread::spawn(move || bad(i))
            })
            .collect();
        while !threads.iter().all(|t| t.is_finished()) {
            self.assert_echoes();
        }
        for t in threads {
            t.join().expect("a bad client's checks failed");
        }
        self.assert_echoes();
    }
}

/// Runs `bad` (which sends bad input to `addr` and checks the answer) with a bystander
/// connected before it and checked for an echo after it.
pub fn with_bystander<R>(addr: SocketAddr, bad: impl FnOnce(SocketAddr) -> R) -> R {
    let mut bystander = Bystander::connect(addr);
    let result = bad(addr);
    bystander.assert_echoes();
    result
}

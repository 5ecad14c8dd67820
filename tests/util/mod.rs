//! Shared helpers for the integration tests.
#![allow(dead_code)]

pub mod binary;
pub mod clients;
pub mod netns;
pub mod proxy;
pub mod raw;
pub mod redis;
pub mod relay;
pub mod sse;
pub mod tls;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, Once};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use emberws::{
    CloseCode, Config, Ctx, Decision, Handler, HttpRequest, Message, Server, ServerHandle,
};

/// A generous bound for anything the tests wait for: only ever an upper bound, never how
/// soon something is expected.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// Polls `f` until it returns `Some`, or panics with `what` after [`DEADLINE`].
pub fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        thread::sleep(Duration::from_millis(10));
    }
}

/// Installs a test logger once (`RUST_LOG=debug cargo test` to see the server's lines).
pub fn init() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = env_logger::builder().is_test(true).try_init();
    });
}

/// A server running on its own thread, on an ephemeral port; shut down on drop.
pub struct TestServer {
    pub addr: SocketAddr,
    pub handle: ServerHandle,
    thread: Option<JoinHandle<()>>,
}

impl TestServer {
    /// `ws://ADDR/` for a client library.
    pub fn url(&self) -> String {
        format!("ws://{}/", self.addr)
    }

    /// Waits (see [`eventually`]) until the server counts exactly `n` open connections.
    pub fn wait_for_open_connections(&self, n: u64, what: &str) {
        eventually(what, || {
            (self.handle.stats().ok()?.connections_open == n).then_some(())
        });
    }

    /// Shuts the server down and waits for its loop to end.
    pub fn stop(mut self) {
        let _ = self.handle.shutdown();
        if let Some(t) = self.thread.take() {
            t.join().expect("server thread panicked");
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = self.handle.shutdown();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Starts `handler` on 127.0.0.1:0 with `cfg`.
pub fn spawn_server<H: Handler + Send + 'static>(cfg: Config, handler: H) -> TestServer {
    init();
    let (tx, rx) = std::sync::mpsc::channel();
    let thread = std::thread::spawn(move || {
        let mut server = Server::bind("127.0.0.1:0".parse().unwrap(), cfg, handler).expect("bind");
        tx.send((server.local_addr(), server.handle())).unwrap();
        server.run().expect("server loop failed");
    });
    let (addr, handle) = rx.recv().expect("server thread did not start");
    TestServer {
        addr,
        handle,
        thread: Some(thread),
    }
}

/// Echoes every message back: the handler of most tests.
pub struct Echo;

impl Handler for Echo {
    type State = ();

    fn on_upgrade(&mut self, _req: &HttpRequest<'_>) -> Decision<()> {
        Decision::Accept(())
    }

    fn on_message(&mut self, ctx: &mut Ctx<'_>, _state: &mut (), msg: Message<'_>) {
        ctx.send(msg);
    }
}

/// The close codes a handler was told about (`on_close`), shared with the test.
#[derive(Clone, Debug, Default)]
pub struct CloseLog(Arc<Mutex<Vec<u16>>>);

impl CloseLog {
    /// Records one close; call it from `Handler::on_close`.
    pub fn record(&self, code: CloseCode) {
        self.0.lock().unwrap().push(code.as_u16());
    }

    /// Every code recorded so far, in order.
    pub fn codes(&self) -> Vec<u16> {
        self.0.lock().unwrap().clone()
    }

    /// Waits (see [`eventually`]) until at least one close was recorded.
    pub fn wait_for_any(&self, what: &str) {
        eventually(what, || (!self.codes().is_empty()).then_some(()));
    }
}

/// Echoes, and records every close code it is told about.
#[derive(Default)]
pub struct Recorder {
    pub closes: CloseLog,
}

impl Handler for Recorder {
    type State = ();

    fn on_upgrade(&mut self, _req: &HttpRequest<'_>) -> Decision<()> {
        Decision::Accept(())
    }

    fn on_message(&mut self, ctx: &mut Ctx<'_>, _state: &mut (), msg: Message<'_>) {
        ctx.send(msg);
    }

    fn on_close(&mut self, _ctx: &mut Ctx<'_>, _state: (), code: CloseCode, _reason: &str) {
        self.closes.record(code);
    }
}

/// Starts a [`Recorder`] with `cfg`; returns the server and the close codes it records.
pub fn spawn_recorder(cfg: Config) -> (TestServer, CloseLog) {
    let handler = Recorder::default();
    let closes = handler.closes.clone();
    (spawn_server(cfg, handler), closes)
}

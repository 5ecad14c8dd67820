//! Shared helpers for the integration tests.
#![allow(dead_code)]

pub mod binary;
pub mod raw;

use std::net::SocketAddr;
use std::sync::Once;
use std::thread::JoinHandle;

use emberws::{Config, Handler, Server, ServerHandle};

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
    fn on_message(&mut self, ctx: &mut emberws::Ctx<'_>, msg: emberws::Message<'_>) {
        ctx.send(msg);
    }
}

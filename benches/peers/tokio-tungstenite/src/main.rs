//! A peer for `benches/compare.sh`: echo and broadcast WebSocket servers written the way a
//! tokio-tungstenite user would write them — one task per connection on a current-thread
//! runtime, `accept_async`, `split`, and the crate's own example patterns (echo: filter the data
//! messages and `forward` them back; broadcast: a shared map of per-connection unbounded
//! senders, as in tokio-tungstenite's `server.rs` example).
//!
//! ```text
//! peer-tokio-tungstenite echo --listen 127.0.0.1:9101
//! peer-tokio-tungstenite broadcast --listen 127.0.0.1:9102
//! ```
//!
//! Pings are answered by tungstenite itself while reading; close handshakes likewise. Sockets
//! get `TCP_NODELAY`, as emberws and Node's `ws` set it by default. Everything else is the
//! library's defaults (`WebSocketConfig::default()`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::{future, SinkExt, StreamExt, TryStreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::accept_async;
use tokio_tungstenite::tungstenite::Message;

type Peers = Arc<Mutex<HashMap<u64, mpsc::UnboundedSender<Message>>>>;

const USAGE: &str =
    "usage: peer-tokio-tungstenite echo|broadcast [--listen ADDR]  (default 127.0.0.1:9101)";

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let mode = args.next().ok_or(USAGE)?;
    if mode != "echo" && mode != "broadcast" {
        return Err(format!("unknown mode {mode:?}; {USAGE}").into());
    }
    let mut listen: SocketAddr = "127.0.0.1:9101".parse()?;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--listen" => listen = args.next().ok_or("--listen needs an address")?.parse()?,
            other => return Err(format!("unknown argument {other:?}; {USAGE}").into()),
        }
    }

    let listener = TcpListener::bind(listen).await?;
    eprintln!(
        "tokio-tungstenite {mode}: listening on ws://{}",
        listener.local_addr()?
    );
    let peers: Peers = Arc::default();
    let next_id = AtomicU64::new(0);
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                // EMFILE and the like: report, go on accepting.
                eprintln!("accept: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        if mode == "echo" {
            tokio::spawn(echo(stream));
        } else {
            let id = next_id.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(broadcast(stream, id, peers.clone()));
        }
    }
}

/// Every text or binary message goes back as it came (tokio-tungstenite's echo example).
async fn echo(stream: TcpStream) {
    let ws = match accept_async(stream).await {
        Ok(ws) => ws,
        Err(e) => return eprintln!("handshake: {e}"),
    };
    let (write, read) = ws.split();
    if let Err(e) = read
        .try_filter(|msg| future::ready(msg.is_text() || msg.is_binary()))
        .forward(write)
        .await
    {
        log_error(e);
    }
}

/// Every text or binary message goes to every open connection, the sender included
/// (tokio-tungstenite's `server.rs` example: a shared map of unbounded senders).
async fn broadcast(stream: TcpStream, id: u64, peers: Peers) {
    let ws = match accept_async(stream).await {
        Ok(ws) => ws,
        Err(e) => return eprintln!("handshake: {e}"),
    };
    let (mut write, mut read) = ws.split();
    let (tx, mut rx) = mpsc::unbounded_channel();
    peers.lock().unwrap().insert(id, tx);
    // After the peer's close frame, nothing more may be sent; keep reading until the stream
    // ends so that tungstenite flushes its close reply.
    let mut closing = false;
    loop {
        tokio::select! {
            msg = read.next() => match msg {
                Some(Ok(msg)) if msg.is_text() || msg.is_binary() => {
                    for peer in peers.lock().unwrap().values() {
                        let _ = peer.send(msg.clone());
                    }
                }
                Some(Ok(Message::Close(_))) => {
                    peers.lock().unwrap().remove(&id);
                    closing = true;
                }
                Some(Ok(_)) => {} // ping, pong: tungstenite answers pings itself
                Some(Err(e)) => {
                    log_error(e);
                    break;
                }
                None => break,
            },
            Some(msg) = rx.recv(), if !closing => {
                if let Err(e) = write.send(msg).await {
                    log_error(e);
                    break;
                }
            }
        }
    }
    peers.lock().unwrap().remove(&id);
}

fn log_error(e: tokio_tungstenite::tungstenite::Error) {
    use tokio_tungstenite::tungstenite::Error;
    match e {
        Error::ConnectionClosed | Error::AlreadyClosed => {}
        e => eprintln!("connection: {e}"),
    }
}

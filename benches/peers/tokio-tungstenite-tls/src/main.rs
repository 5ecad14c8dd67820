//! A TLS peer for `benches/compare.sh`: the echo and broadcast servers of
//! `benches/peers/tokio-tungstenite`, served over `wss://` — tokio-tungstenite on a
//! current-thread runtime behind tokio-rustls (rustls 0.23, ring provider), written the way a
//! tokio user would: one task per connection, `TlsAcceptor::accept`, then `accept_async` on the
//! TLS stream, `split`, and the crate's own example patterns (echo: filter the data messages and
//! `forward` them back; broadcast: a shared map of per-connection unbounded senders, as in
//! tokio-tungstenite's `server.rs` example).
//!
//! ```text
//! cd benches/peers/tokio-tungstenite-tls && cargo build --release
//! target/release/peer-tokio-tungstenite-tls echo --listen 127.0.0.1:9103 --cert cert.pem --key key.pem
//! target/release/peer-tokio-tungstenite-tls broadcast --listen 127.0.0.1:9104 --cert cert.pem --key key.pem
//! ```
//!
//! `--cert` is a PEM certificate chain (leaf first), `--key` a PEM private key (PKCS#8, SEC1 or
//! PKCS#1 RSA); an ECDSA P-256 pair made with `rcgen` is what the TLS benchmarks use. Clients
//! connect to `wss://localhost:PORT/` (the certificate's name), or skip verification.
//!
//! TLS settings are rustls's defaults for the ring provider (TLS 1.3 and 1.2, its cipher-suite
//! and key-exchange order, two TLS 1.3 session tickets per handshake, a 256-entry session cache),
//! plus ALPN `http/1.1` as emberws will offer. The TLS handshake has no timeout of its own, like
//! the WebSocket handshake in the plain peer. Pings are answered by tungstenite itself while
//! reading; close handshakes likewise. After the WebSocket close handshake the task ends and the
//! TLS stream is dropped without `shutdown()`, so the TCP connection closes without a TLS
//! `close_notify` (a rustls client reports "peer closed connection without sending TLS
//! close_notify" after the close frame): that is what this ordinary tokio code does, kept as is.
//! Sockets get `TCP_NODELAY`, as emberws and Node's `ws` set it by default. Everything else is
//! the libraries' defaults (`WebSocketConfig::default()`).
//!
//! Not wired into `benches/compare.sh` yet.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::{future, SinkExt, StreamExt, TryStreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{self, ServerConfig};
use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::accept_async;
use tokio_tungstenite::tungstenite::Message;

type Peers = Arc<Mutex<HashMap<u64, mpsc::UnboundedSender<Message>>>>;

const USAGE: &str = "usage: peer-tokio-tungstenite-tls echo|broadcast --cert PEM --key PEM \
                     [--listen ADDR]  (default 127.0.0.1:9103)";

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let mode = args.next().ok_or(USAGE)?;
    if mode != "echo" && mode != "broadcast" {
        return Err(format!("unknown mode {mode:?}; {USAGE}").into());
    }
    let mut listen: SocketAddr = "127.0.0.1:9103".parse()?;
    let mut cert = None;
    let mut key = None;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--listen" => listen = args.next().ok_or("--listen needs an address")?.parse()?,
            "--cert" => cert = Some(args.next().ok_or("--cert needs a file")?),
            "--key" => key = Some(args.next().ok_or("--key needs a file")?),
            other => return Err(format!("unknown argument {other:?}; {USAGE}").into()),
        }
    }
    let cert = cert.ok_or(USAGE)?;
    let key = key.ok_or(USAGE)?;
    let acceptor = TlsAcceptor::from(Arc::new(tls_config(&cert, &key)?));

    let listener = TcpListener::bind(listen).await?;
    eprintln!(
        "tokio-tungstenite + tokio-rustls {mode}: listening on wss://{}",
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
        let acceptor = acceptor.clone();
        if mode == "echo" {
            tokio::spawn(echo(acceptor, stream));
        } else {
            let id = next_id.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(broadcast(acceptor, stream, id, peers.clone()));
        }
    }
}

/// rustls's defaults with the ring provider; one certificate chain and its key; ALPN http/1.1.
fn tls_config(cert: &str, key: &str) -> Result<ServerConfig, Box<dyn std::error::Error>> {
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| format!("{cert}: {e}"))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{cert}: {e}"))?;
    if chain.is_empty() {
        return Err(format!("{cert}: no certificate").into());
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("{key}: {e}"))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Every text or binary message goes back as it came (tokio-tungstenite's echo example).
async fn echo(acceptor: TlsAcceptor, stream: TcpStream) {
    let tls = match acceptor.accept(stream).await {
        Ok(tls) => tls,
        Err(e) => return eprintln!("tls handshake: {e}"),
    };
    let ws = match accept_async(tls).await {
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
async fn broadcast(acceptor: TlsAcceptor, stream: TcpStream, id: u64, peers: Peers) {
    let tls = match acceptor.accept(stream).await {
        Ok(tls) => tls,
        Err(e) => return eprintln!("tls handshake: {e}"),
    };
    let ws = match accept_async(tls).await {
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

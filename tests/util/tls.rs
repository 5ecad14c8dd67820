//! TLS for the tests: a certificate made at test time (`rcgen`, ECDSA P-256), written to PEM
//! files for the binary, and a real rustls client under which `tungstenite` runs.

use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

/// A self-signed certificate for `localhost` and 127.0.0.1, and its files.
pub struct TestCert {
    pub der: CertificateDer<'static>,
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
    _dir: TempDir,
}

/// A directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!(
            "emberws-{tag}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl TestCert {
    /// A fresh certificate, its PEM files in a directory of its own.
    pub fn new(tag: &str) -> TestCert {
        let dir = TempDir::new(tag);
        let certified =
            rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
                .expect("rcgen makes a certificate");
        let cert_path = dir.0.join("cert.pem");
        let key_path = dir.0.join("key.pem");
        std::fs::write(&cert_path, certified.cert.pem()).unwrap();
        std::fs::write(&key_path, certified.signing_key.serialize_pem()).unwrap();
        TestCert {
            der: certified.cert.der().clone(),
            cert_path,
            key_path,
            _dir: dir,
        }
    }

    /// Overwrites the files with another certificate (for a reload); returns its DER.
    pub fn renew(&mut self) -> CertificateDer<'static> {
        let certified =
            rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
                .unwrap();
        std::fs::write(&self.cert_path, certified.cert.pem()).unwrap();
        std::fs::write(&self.key_path, certified.signing_key.serialize_pem()).unwrap();
        self.der = certified.cert.der().clone();
        self.der.clone()
    }

    /// The flags that make the binary listen for wss:// on an ephemeral port.
    pub fn flags(&self) -> Vec<String> {
        vec![
            "--tls-listen".into(),
            "127.0.0.1:0".into(),
            "--tls-cert".into(),
            self.cert_path.display().to_string(),
            "--tls-key".into(),
            self.key_path.display().to_string(),
        ]
    }

    /// A client configuration that trusts this certificate only.
    pub fn client_config(&self) -> Arc<ClientConfig> {
        client_config(&self.der)
    }
}

/// A rustls client configuration (ring) trusting `cert` only, with ALPN http/1.1.
pub fn client_config(cert: &CertificateDer<'static>) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots.add(cert.clone()).expect("a usable root");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

/// A blocking TLS stream to `addr` (server name `localhost`), handshake not yet driven.
pub type TlsStream = StreamOwned<ClientConnection, TcpStream>;

pub fn tls_connect(addr: SocketAddr, config: Arc<ClientConfig>) -> TlsStream {
    let tcp = TcpStream::connect(addr).expect("connect");
    tcp.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    tcp.set_write_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let conn = ClientConnection::new(config, name).expect("a client session");
    StreamOwned::new(conn, tcp)
}

/// A WebSocket client over TLS (tungstenite over a rustls stream).
pub fn wss_client(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
    path: &str,
) -> tungstenite::WebSocket<TlsStream> {
    let stream = tls_connect(addr, config);
    tungstenite::client(format!("wss://localhost:{}{path}", addr.port()), stream)
        .expect("a WebSocket handshake over TLS")
        .0
}

/// A local proxy that terminates TLS for a plain client: each connection to [`TlsProxy::addr`]
/// is carried over TLS to the server's `wss://` port, byte for byte both ways, with each
/// end's EOF passed on (a close_notify or FIN from the server becomes a FIN to the client).
/// It lets a raw-socket test suite run unchanged over TLS.
pub struct TlsProxy {
    pub addr: SocketAddr,
}

impl TlsProxy {
    pub fn start(server: SocketAddr, config: Arc<ClientConfig>) -> TlsProxy {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for plain in listener.incoming() {
                let Ok(plain) = plain else { return };
                let config = config.clone();
                std::thread::spawn(move || pump(plain, server, config));
            }
        });
        TlsProxy { addr }
    }
}

/// Moves bytes between a plain client and a TLS session until both directions ended.
fn pump(plain: TcpStream, server: SocketAddr, config: Arc<ClientConfig>) {
    use std::io::{ErrorKind, Read, Write};
    let Ok(mut tls_sock) = TcpStream::connect(server) else {
        return;
    };
    let mut plain = plain;
    let _ = tls_sock.set_nodelay(true);
    let _ = plain.set_nodelay(true);
    plain.set_nonblocking(true).unwrap();
    tls_sock.set_nonblocking(true).unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let mut session = ClientConnection::new(config, name).unwrap();
    // The proxy never refuses the client's bytes (test code: the messages are bounded).
    session.set_buffer_limit(None);
    let mut buf = vec![0u8; 64 * 1024];
    let mut to_plain: Vec<u8> = Vec::new();
    // plain_eof: the client's FIN; server_eof: the server's close_notify or FIN;
    // server_gone: writes to the server fail (what the client sends is dropped).
    let (mut plain_eof, mut server_eof, mut server_gone, mut plain_shut, mut tls_shut) =
        (false, false, false, false, false);
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while std::time::Instant::now() < deadline {
        let mut progress = false;
        // Client → server.
        if !plain_eof {
            match plain.read(&mut buf) {
                Ok(0) => {
                    plain_eof = true;
                    session.send_close_notify();
                    progress = true;
                }
                Ok(n) => {
                    if !server_gone {
                        let _ = session.writer().write_all(&buf[..n]);
                    }
                    progress = true;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(_) => {
                    plain_eof = true;
                    session.send_close_notify();
                }
            }
        }
        while !server_gone && session.wants_write() {
            match session.write_tls(&mut tls_sock) {
                Ok(_) => progress = true,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(_) => server_gone = true,
            }
        }
        if plain_eof && !tls_shut && (server_gone || !session.wants_write()) {
            let _ = tls_sock.shutdown(std::net::Shutdown::Write);
            tls_shut = true;
        }
        // Server → client.
        if !server_eof {
            match session.read_tls(&mut tls_sock) {
                Ok(0) => server_eof = true,
                Ok(_) => {
                    progress = true;
                    if session.process_new_packets().is_err() {
                        server_eof = true;
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(_) => server_eof = true,
            }
            loop {
                match session.reader().read(&mut buf) {
                    Ok(0) => {
                        server_eof = true;
                        break;
                    }
                    Ok(n) => to_plain.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(_) => {
                        server_eof = true;
                        break;
                    }
                }
            }
        }
        while !to_plain.is_empty() {
            match plain.write(&to_plain) {
                Ok(n) => {
                    to_plain.drain(..n);
                    progress = true;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(_) => return,
            }
        }
        if server_eof && to_plain.is_empty() && !plain_shut {
            let _ = plain.shutdown(std::net::Shutdown::Write);
            plain_shut = true;
        }
        if plain_shut && plain_eof {
            return;
        }
        if !progress {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

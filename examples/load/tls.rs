//! `wss://`: the rustls client configuration (`--ca` or `--insecure`) and the sans-IO glue that
//! puts a rustls `ClientConnection` between a connection's socket and its `Reader`/`Writer`.
//!
//! In: socket bytes (`read_tls` → `process_new_packets` → `reader()`, into the connection's own
//! read buffer) and the `Writer`'s frames (`writer()` → `write_tls` → socket). Plaintext enters
//! rustls only once the ciphertext before it has reached the socket, at most one 16 KiB record
//! at a time, so a flooder's endless frame cannot pile up in rustls: a full socket stops the
//! `Writer` as it does without TLS.
//!
//! rustls's ring provider only (no aws-lc-rs), TLS 1.3 and 1.2, ALPN `http/1.1` as browsers send
//! for `wss://`, and session resumption off, so every connection is a full handshake (what
//! `connect` mode's handshakes/s are meant to measure). The generator's own code allocates
//! nothing per message; rustls's buffered connection does keep one `Vec` per TLS record it
//! queues, each way, in its internal buffers (its unbuffered API would not).
//!
//! The generator sends no `close_notify`: the WebSocket close handshake ends each connection and
//! the server closes TCP first (RFC 6455 §7.1.1), so a `close_notify` then would meet a closed
//! socket and draw a reset. A server's `close_notify` is an end of stream like its FIN (clean
//! after its close frame); a FIN without one, as tokio-rustls servers send, is accepted alike.

use std::io::{self, Read, Write};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::Resumption;
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    ClientConfig, ClientConnection, DigitallySignedStruct, RootCertStore, SignatureScheme,
};

/// How the server's certificate is checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verify {
    /// Trust the certificates in this PEM file (a CA, or the server's self-signed certificate).
    Ca(String),
    /// Check nothing but the handshake signatures: for benchmarks against a test certificate.
    Insecure,
}

impl Verify {
    /// The check asked for by `--ca` / `--insecure`, for a `wss://` URL (`tls`) or not.
    ///
    /// # Errors
    /// A `wss://` URL with neither flag or both, or either flag with a `ws://` URL.
    pub fn from_flags(tls: bool, ca: Option<&str>, insecure: bool) -> Result<Option<Self>, String> {
        match (tls, ca, insecure) {
            (false, None, false) => Ok(None),
            (false, _, _) => Err("--ca and --insecure are for wss:// URLs only".into()),
            (true, None, false) => Err("a wss:// URL needs --ca PEM (trust that CA or \
                                        certificate file) or --insecure (no certificate check, \
                                        for benchmarks)"
                .into()),
            (true, Some(_), true) => Err("--ca and --insecure exclude each other".into()),
            (true, Some(path), false) => Ok(Some(Self::Ca(path.to_owned()))),
            (true, None, true) => Ok(Some(Self::Insecure)),
        }
    }

    /// The report's name for it.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Ca(_) => "ca",
            Self::Insecure => "insecure",
        }
    }
}

/// What every TLS connection of a run shares: the configuration and the name it checks.
#[derive(Clone)]
pub struct Plan {
    pub config: Arc<ClientConfig>,
    /// The URL's host: a DNS name (sent as SNI) or an IP address (checked against the
    /// certificate's IP addresses; no SNI).
    pub name: ServerName<'static>,
    pub verify: Verify,
}

impl Plan {
    /// # Errors
    /// An unreadable or empty `--ca` file, or a host rustls cannot use as a server name.
    pub fn new(verify: Verify, host: &str) -> Result<Self, String> {
        let name = ServerName::try_from(host.to_owned())
            .map_err(|e| format!("'{host}' cannot be a TLS server name: {e}"))?;
        Ok(Self {
            config: client_config(&verify)?,
            name,
            verify,
        })
    }

    /// A new client connection, its ClientHello queued.
    pub fn connect(&self) -> Result<ClientConnection, rustls::Error> {
        ClientConnection::new(self.config.clone(), self.name.clone())
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The client configuration for `verify`.
///
/// # Errors
/// The `--ca` file cannot be read, holds no certificate, or holds one that cannot be a trust
/// anchor.
pub fn client_config(verify: &Verify) -> Result<Arc<ClientConfig>, String> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS configuration: {e}"))?;
    let mut config = match verify {
        Verify::Ca(path) => {
            let mut roots = RootCertStore::empty();
            for cert in
                CertificateDer::pem_file_iter(path).map_err(|e| format!("--ca {path}: {e}"))?
            {
                let cert = cert.map_err(|e| format!("--ca {path}: {e}"))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("--ca {path}: not a usable CA certificate: {e}"))?;
            }
            if roots.is_empty() {
                return Err(format!("--ca {path}: no CERTIFICATE in the file"));
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        Verify::Insecure => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(
                provider.signature_verification_algorithms,
            )))
            .with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config.resumption = Resumption::disabled();
    Ok(Arc::new(config))
}

/// `--insecure`: any certificate for any name is accepted, but the handshake's signatures are
/// still checked (with the provider's algorithms), so the server must hold the key of the
/// certificate it sends: the work of a real handshake is done on both sides.
#[derive(Debug)]
struct AnyCertificate(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

/// The negotiated parameters, for the report: version, cipher suite, key exchange group.
pub fn describe(tls: &ClientConnection) -> String {
    let version = tls
        .protocol_version()
        .map_or_else(|| "?".to_owned(), |v| format!("{v:?}"));
    let suite = tls
        .negotiated_cipher_suite()
        .map_or_else(|| "?".to_owned(), |s| format!("{:?}", s.suite()));
    let group = tls
        .negotiated_key_exchange_group()
        .map_or_else(|| "?".to_owned(), |g| format!("{:?}", g.name()));
    format!("{version} {suite} {group}")
}

/// A socket read that tells whether it came back short (the socket is drained: epoll(7)).
pub struct Probe<'a, R> {
    pub inner: &'a mut R,
    pub short: bool,
}

impl<R: Read> Read for Probe<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.short = n < buf.len();
        Ok(n)
    }
}

/// Plaintext taken into rustls at a time: one full TLS record.
const RECORD: usize = 16 << 10;

/// The `Writer`'s sink for a TLS connection: `write` takes plaintext only while the records
/// before it have all gone to the socket, and returns short (or `WouldBlock`) only when the
/// socket is full, which is what `Writer::flush` reads a short write as.
pub struct Sink<'a, W> {
    pub tls: &'a mut ClientConnection,
    pub sock: &'a mut W,
}

impl<W: Write> Sink<'_, W> {
    /// Writes the records rustls has queued; `false` if the socket filled up first.
    ///
    /// # Errors
    /// A socket error other than `WouldBlock`.
    pub fn push(&mut self) -> io::Result<bool> {
        while self.tls.wants_write() {
            match self.tls.write_tls(self.sock) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }
}

impl<W: Write> Write for Sink<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut taken = 0;
        loop {
            let drained = self.push()?;
            if !drained || taken == buf.len() {
                return match taken {
                    0 if !buf.is_empty() => Err(io::ErrorKind::WouldBlock.into()),
                    n => Ok(n),
                };
            }
            let end = buf.len().min(taken + RECORD);
            // Before the handshake completes rustls keeps this as plaintext (up to its buffer
            // limit, 64 KiB: far more than an upgrade request) and sends it once it can.
            match self.tls.writer().write(&buf[taken..end])? {
                // Its buffer is full: the handshake is still under way, and the next event
                // that moves it on flushes again.
                0 => {
                    return match taken {
                        0 => Err(io::ErrorKind::WouldBlock.into()),
                        n => Ok(n),
                    }
                }
                n => taken += n,
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        self.push().map(|_| ())
    }
}

#[cfg(test)]
pub mod tests {
    use super::*;

    use rustls::pki_types::PrivateKeyDer;
    use rustls::sign::{CertifiedKey, SingleCertAndKey};
    use rustls::{HandshakeKind, ServerConfig, ServerConnection};

    /// A self-signed ECDSA P-256 certificate for `names`, and its key, as PEM.
    pub fn certificate(names: &[&str]) -> (String, String) {
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let ck = rcgen::generate_simple_self_signed(names).unwrap();
        (ck.cert.pem(), ck.signing_key.serialize_pem())
    }

    /// A rustls server configuration for a PEM certificate and key.
    pub fn server_config(cert: &str, key: &str) -> Arc<ServerConfig> {
        let chain = CertificateDer::pem_slice_iter(cert.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(config)
    }

    /// A temporary file holding `text`, removed on drop.
    pub struct TempFile(pub std::path::PathBuf);

    impl TempFile {
        pub fn new(tag: &str, text: &str) -> Self {
            let path = std::env::temp_dir().join(format!(
                "load-tls-{}-{tag}-{:?}.pem",
                std::process::id(),
                std::thread::current().id()
            ));
            std::fs::write(&path, text).unwrap();
            Self(path)
        }

        pub fn path(&self) -> &str {
            self.0.to_str().unwrap()
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    /// Runs a client and a server connection against each other in memory until neither has
    /// anything to send; the first error of either side.
    fn handshake(
        client: &mut ClientConnection,
        server: &mut ServerConnection,
    ) -> Result<(), String> {
        for _ in 0..20 {
            let mut moved = false;
            while client.wants_write() {
                let mut wire = Vec::new();
                client.write_tls(&mut wire).unwrap();
                moved = true;
                server.read_tls(&mut &wire[..]).unwrap();
                server
                    .process_new_packets()
                    .map_err(|e| format!("server: {e}"))?;
            }
            while server.wants_write() {
                let mut wire = Vec::new();
                server.write_tls(&mut wire).unwrap();
                moved = true;
                client.read_tls(&mut &wire[..]).unwrap();
                client
                    .process_new_packets()
                    .map_err(|e| format!("client: {e}"))?;
            }
            if !moved {
                return Ok(());
            }
        }
        Err("the handshake did not settle".into())
    }

    fn pair(verify: Verify, host: &str, cert: &str, key: &str) -> Result<ClientConnection, String> {
        let plan = Plan::new(verify, host)?;
        let mut client = plan.connect().unwrap();
        let mut server = ServerConnection::new(server_config(cert, key)).unwrap();
        handshake(&mut client, &mut server)?;
        assert!(!client.is_handshaking());
        Ok(client)
    }

    #[test]
    fn flags_pick_the_check() {
        assert_eq!(Verify::from_flags(false, None, false), Ok(None));
        assert_eq!(
            Verify::from_flags(true, Some("ca.pem"), false),
            Ok(Some(Verify::Ca("ca.pem".into())))
        );
        assert_eq!(
            Verify::from_flags(true, None, true),
            Ok(Some(Verify::Insecure))
        );
        let err = Verify::from_flags(true, None, false).unwrap_err();
        assert!(err.contains("--ca") && err.contains("--insecure"), "{err}");
        assert!(Verify::from_flags(true, Some("x"), true).is_err());
        assert!(Verify::from_flags(false, Some("x"), false).is_err());
        assert!(Verify::from_flags(false, None, true).is_err());
    }

    #[test]
    fn a_ca_file_must_hold_a_certificate() {
        let err = client_config(&Verify::Ca("/nonexistent/ca.pem".into())).unwrap_err();
        assert!(err.contains("/nonexistent/ca.pem"), "{err}");
        let (_, key) = certificate(&["localhost"]);
        let only_key = TempFile::new("key-only", &key);
        let err = client_config(&Verify::Ca(only_key.path().into())).unwrap_err();
        assert!(err.contains("no CERTIFICATE"), "{err}");
        let garbage = TempFile::new(
            "garbage",
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        );
        assert!(client_config(&Verify::Ca(garbage.path().into())).is_err());
    }

    #[test]
    fn the_config_offers_http_1_1_and_never_resumes() {
        let config = client_config(&Verify::Insecure).unwrap();
        assert_eq!(config.alpn_protocols, vec![b"http/1.1".to_vec()]);
        let (cert, key) = certificate(&["localhost"]);
        let plan = Plan::new(Verify::Insecure, "localhost").unwrap();
        // Three handshakes with one client and one server configuration (which issues
        // session tickets and keeps a session cache): each is a full handshake.
        let server_config = server_config(&cert, &key);
        for _ in 0..3 {
            let mut client = plan.connect().unwrap();
            let mut server = ServerConnection::new(server_config.clone()).unwrap();
            handshake(&mut client, &mut server).unwrap();
            assert_eq!(client.handshake_kind(), Some(HandshakeKind::Full));
            assert_eq!(client.alpn_protocol(), Some(&b"http/1.1"[..]));
        }
    }

    #[test]
    fn ca_checks_the_issuer_and_the_name() {
        let (cert, key) = certificate(&["localhost", "127.0.0.1"]);
        let ca = TempFile::new("ca", &cert);
        let verify = Verify::Ca(ca.path().into());
        let client = pair(verify.clone(), "localhost", &cert, &key).unwrap();
        assert!(
            describe(&client).starts_with("TLSv1_3 TLS13_"),
            "{}",
            describe(&client)
        );
        pair(verify.clone(), "127.0.0.1", &cert, &key).unwrap();
        // A name the certificate does not carry.
        let err = pair(verify.clone(), "::1", &cert, &key).unwrap_err();
        assert!(err.starts_with("client:"), "{err}");
        // Another certificate, not the trusted one (rcgen gives every self-signed certificate
        // the same subject, so webpki finds the trusted one by name and the signature fails).
        let (other, other_key) = certificate(&["localhost"]);
        let err = pair(verify, "localhost", &other, &other_key).unwrap_err();
        assert!(err.starts_with("client: invalid peer certificate"), "{err}");
    }

    #[test]
    fn insecure_takes_any_certificate() {
        let (cert, key) = certificate(&["elsewhere.example"]);
        pair(Verify::Insecure, "127.0.0.1", &cert, &key).unwrap();
        pair(Verify::Insecure, "localhost", &cert, &key).unwrap();
    }

    #[test]
    fn insecure_still_checks_the_handshake_signature() {
        // A server that sends one certificate but signs with another key (rustls's
        // `with_single_cert` refuses such a pair, so it is put together by hand).
        let (cert, _) = certificate(&["localhost"]);
        let (_, wrong_key) = certificate(&["localhost"]);
        let chain = vec![CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()];
        let key = provider()
            .key_provider
            .load_private_key(PrivateKeyDer::from_pem_slice(wrong_key.as_bytes()).unwrap())
            .unwrap();
        let resolver = SingleCertAndKey::from(CertifiedKey::new(chain, key));
        let config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(resolver));
        let mut client = Plan::new(Verify::Insecure, "localhost")
            .unwrap()
            .connect()
            .unwrap();
        let mut server = ServerConnection::new(Arc::new(config)).unwrap();
        let err = handshake(&mut client, &mut server).unwrap_err();
        assert!(
            err.starts_with("client:") && err.contains("ignature"),
            "{err}"
        );
    }

    /// The real thing over loopback sockets: a tiny wss:// echo server (rustls + tungstenite,
    /// one thread per connection) and the fleet's own TLS path.
    mod over_sockets {
        use std::net::TcpListener;
        use std::time::Duration;

        use rustls::StreamOwned;
        use tungstenite::Message;

        use super::*;
        use crate::fleet::{App, Clock, Fleet, Ignore, OpenPlan, Writer};
        use crate::frame::op;
        use crate::target::Target;

        /// Serves `count` connections: pings each once, echoes its data messages, answers its
        /// close; even-numbered ones then send close_notify, odd ones just close TCP (as
        /// tokio-tungstenite over tokio-rustls does).
        fn serve(config: Arc<ServerConfig>, count: usize) -> u16 {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let port = listener.local_addr().unwrap().port();
            std::thread::spawn(move || {
                for i in 0..count {
                    let Ok((sock, _)) = listener.accept() else {
                        return;
                    };
                    let config = config.clone();
                    std::thread::spawn(move || {
                        sock.set_read_timeout(Some(Duration::from_secs(20)))
                            .unwrap();
                        let tls = StreamOwned::new(ServerConnection::new(config).unwrap(), sock);
                        let Ok(mut ws) = tungstenite::accept(tls) else {
                            return; // the client refused the certificate
                        };
                        ws.send(Message::Ping(b"hi"[..].into())).unwrap();
                        loop {
                            match ws.read() {
                                Ok(m) if m.is_text() || m.is_binary() => ws.send(m).unwrap(),
                                Ok(_) => {}
                                Err(_) => break,
                            }
                        }
                        if i % 2 == 0 {
                            let tls = ws.get_mut();
                            tls.conn.send_close_notify();
                            let _ = tls.flush();
                        }
                    });
                }
            });
            port
        }

        fn fleet(port: u16, verify: Verify, count: usize) -> Fleet {
            let plan = OpenPlan {
                target: Target::parse(&format!("wss://localhost:{port}/")).unwrap(),
                sources: Vec::new(),
                in_flight: 8,
                rate_limit: 0.0,
                handshake_timeout: Duration::from_secs(10),
                read_capacity: 16 << 10,
                tls: Some(Plan::new(verify, "localhost").unwrap()),
                redirect: None,
                split: None,
            };
            Fleet::new(plan, count, Clock::new()).unwrap()
        }

        /// Every size class once per connection, the next sent when the last comes back.
        struct Sizes {
            next: Vec<usize>,
            got: Vec<Vec<u64>>,
        }

        const SIZES: [usize; 8] = [0, 1, 125, 126, 65_535, 16_384, 16_400, 200_000];

        impl Sizes {
            fn send(&mut self, id: usize, wr: &mut Writer) {
                if let Some(&size) = SIZES.get(self.next[id]) {
                    let payload: Vec<u8> = (0..size).map(|i| i as u8).collect();
                    wr.push_frame(op::BINARY, &payload);
                    self.next[id] += 1;
                }
            }
        }

        impl App for Sizes {
            fn on_open(&mut self, id: usize, wr: &mut Writer, _: u64) {
                self.send(id, wr);
            }
            fn on_message(
                &mut self,
                id: usize,
                wr: &mut Writer,
                _: u64,
                _: bool,
                _: &[u8],
                len: u64,
            ) {
                self.got[id].push(len);
                self.send(id, wr);
            }
        }

        #[test]
        fn every_size_class_echoes_over_wss_and_closes_cleanly() {
            let (cert, key) = certificate(&["localhost"]);
            let ca = TempFile::new("fleet-ca", &cert);
            let port = serve(server_config(&cert, &key), 4);
            let n = 4;
            let mut fleet = fleet(port, Verify::Ca(ca.path().into()), n);
            let mut app = Sizes {
                next: vec![0; n],
                got: vec![Vec::new(); n],
            };
            fleet.open_all(n, &mut app).unwrap();
            assert_eq!(fleet.core.stats.opened, n as u64);
            let deadline = fleet.core.clock.now() + 20_000_000_000;
            fleet
                .run_until(deadline, &mut app, |_, a| {
                    a.got.iter().all(|g| g.len() == SIZES.len())
                })
                .unwrap();
            let expected: Vec<u64> = SIZES.iter().map(|&s| s as u64).collect();
            for got in &app.got {
                assert_eq!(got, &expected);
            }
            fleet
                .close_all(Duration::from_secs(5), &mut Ignore)
                .unwrap();
            let core = &fleet.core;
            assert_eq!(core.errors.total(), 0, "{}", core.errors.json(&[]).finish());
            assert_eq!(
                (core.stats.clean_closes, core.stats.pings),
                (n as u64, n as u64)
            );
            let params = core.stats.tls_params.as_deref().unwrap();
            assert!(params.starts_with("TLSv1_3 "), "{params}");
        }

        #[test]
        fn a_certificate_not_trusted_fails_the_handshake() {
            let (cert, key) = certificate(&["localhost"]);
            let (other, _) = certificate(&["localhost"]);
            let ca = TempFile::new("fleet-other-ca", &other);
            let port = serve(server_config(&cert, &key), 1);
            let mut fleet = fleet(port, Verify::Ca(ca.path().into()), 1);
            fleet.open_all(1, &mut Ignore).unwrap();
            let core = &fleet.core;
            assert_eq!((core.stats.opened, core.errors.tls_handshake), (0, 1));
            assert_eq!(core.errors.total(), 1);
        }
    }
}

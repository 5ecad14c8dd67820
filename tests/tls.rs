//! wss:// end to end: the binary with a certificate made at test time, a real rustls client
//! under tungstenite, TLS-level bad input from raw sockets with a bystander that keeps being
//! served, close_notify, the handshake timeout, and a certificate reload on SIGHUP.
#![cfg(feature = "tls")]

mod util;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tungstenite::{Message, WebSocket};
use util::binary::ServerProcess;
use util::tls::{client_config, tls_connect, wss_client, TestCert, TlsStream};

fn echo_tls(cert: &TestCert, extra: &[&str]) -> ServerProcess {
    let mut args = vec!["echo".to_string()];
    args.extend(cert.flags());
    args.extend(extra.iter().map(|s| s.to_string()));
    ServerProcess::spawn(&args)
}

fn round(ws: &mut WebSocket<TlsStream>, msg: Message) {
    ws.send(msg.clone()).unwrap();
    loop {
        match ws.read().unwrap() {
            Message::Ping(_) | Message::Pong(_) => continue,
            got => {
                assert_eq!(got, msg);
                return;
            }
        }
    }
}

/// Reads until the server closes; returns what it sent (with a generous bound on time).
fn read_to_close(stream: &mut TcpStream) -> Vec<u8> {
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return got,
            Err(e) => panic!("the server neither answered nor closed: {e}"),
        }
    }
}

#[test]
fn echoes_every_size_class_fragments_and_pings_over_wss_on_the_tls_port_alone() {
    let cert = TestCert::new("tls-echo");
    let server = echo_tls(&cert, &["--max-message", "4194304"]);
    // --tls-listen alone: only the TLS port listens.
    assert_eq!(server.addr(), server.tls_addr());
    assert!(
        !server.stderr_lines().iter().any(|l| l.contains("ws://")),
        "no plain listener: {:?}",
        server.stderr_lines()
    );
    let mut ws = wss_client(server.tls_addr(), cert.client_config(), "/");
    for n in [0, 1, 125, 126, 65535, 65536, 300_000, 3 << 20] {
        round(&mut ws, Message::binary(vec![(n % 251) as u8; n]));
    }
    round(&mut ws, Message::text("héllo ✓".repeat(5000)));
    ws.send(Message::Ping(b"tls".to_vec().into())).unwrap();
    loop {
        if let Message::Pong(p) = ws.read().unwrap() {
            assert_eq!(&p[..], b"tls");
            break;
        }
    }
    // Fragments, interleaved with a ping, reassembled by the server.
    use tungstenite::protocol::frame::coding::{Data, OpCode};
    use tungstenite::protocol::frame::Frame;
    let mut first = Frame::message(b"frag".to_vec(), OpCode::Data(Data::Text), false);
    let last = Frame::message(b"ment".to_vec(), OpCode::Data(Data::Continue), true);
    first.header_mut().is_final = false;
    ws.write(Message::Frame(first)).unwrap();
    ws.write(Message::Ping(Vec::new().into())).unwrap();
    ws.write(Message::Frame(last)).unwrap();
    ws.flush().unwrap();
    loop {
        match ws.read().unwrap() {
            Message::Text(t) => {
                assert_eq!(t.as_str(), "fragment");
                break;
            }
            Message::Pong(_) => {}
            other => panic!("{other:?}"),
        }
    }
    // A client-initiated close: echoed, then the server closes TLS with close_notify.
    ws.close(None).unwrap();
    loop {
        match ws.read() {
            Ok(_) => {}
            Err(tungstenite::Error::ConnectionClosed) => break,
            Err(e) => panic!("{e}"),
        }
    }
    let stream = ws.get_mut();
    let mut rest = Vec::new();
    match stream.read_to_end(&mut rest) {
        Ok(_) => assert!(rest.is_empty()),
        Err(e) => panic!("no close_notify before the end of the stream: {e}"),
    }
}

#[test]
fn the_relay_and_its_pages_work_over_wss_and_https_beside_a_plain_listener() {
    let cert = TestCert::new("tls-relay");
    let mut args = vec!["--listen".to_string(), "127.0.0.1:0".into()];
    args.extend(cert.flags());
    let server = ServerProcess::spawn(&args);
    let (plain, tls) = (server.addr(), server.tls_addr());
    assert_ne!(plain, tls);
    // A publisher on the plain port, a subscriber on the TLS port: one relay.
    let mut sub = wss_client(tls, cert.client_config(), "/");
    sub.send(Message::text(
        r#"{"type":"subscribe","topic":"s/#","id":1}"#,
    ))
    .unwrap();
    assert_eq!(
        sub.read().unwrap().to_text().unwrap(),
        r#"{"type":"ack","id":1}"#
    );
    let (mut publisher, _) =
        tungstenite::connect(format!("ws://{plain}/")).expect("plain ws client");
    publisher
        .send(Message::text(
            r#"{"type":"publish","topic":"s/t","data":21.5}"#,
        ))
        .unwrap();
    let got = sub.read().unwrap();
    let text = got.to_text().unwrap();
    assert!(
        text.starts_with(r#"{"type":"message","topic":"s/t","data":21.5,"id":""#),
        "{text}"
    );
    // The dashboard and /healthz over https.
    for (path, needle) in [("/", "<html"), ("/healthz", "connections_open")] {
        let mut stream = tls_connect(tls, cert.client_config());
        write!(stream, "GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
        stream.flush().unwrap();
        let mut page = Vec::new();
        let _ = stream.read_to_end(&mut page);
        let page = String::from_utf8_lossy(&page);
        assert!(page.starts_with("HTTP/1.1 200"), "{path}: {page:.200}");
        assert!(page.contains(needle), "{path}");
    }
}

/// A ClientHello offering TLS 1.0 only (record and handshake version 3.1).
/// The cipher suite a client offering `suites` (in its order) gets, over TLS 1.3 or 1.2.
fn negotiated(
    addr: SocketAddr,
    cert: &TestCert,
    versions: &[&'static rustls::SupportedProtocolVersion],
    suites: &[rustls::SupportedCipherSuite],
) -> rustls::CipherSuite {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.der.clone()).unwrap();
    let provider = rustls::crypto::CryptoProvider {
        cipher_suites: suites.to_vec(),
        ..rustls::crypto::ring::default_provider()
    };
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut stream = tls_connect(addr, Arc::new(config));
    while stream.conn.is_handshaking() {
        stream
            .conn
            .complete_io(&mut stream.sock)
            .expect("a handshake");
    }
    stream.conn.negotiated_cipher_suite().unwrap().suite()
}

#[test]
fn the_server_picks_the_suite_cheapest_for_its_own_cpu_whatever_the_clients_order() {
    use rustls::crypto::ring::cipher_suite as cs;
    use rustls::version::{TLS12, TLS13};
    let cert = TestCert::new("tls-suites");
    let server = echo_tls(&cert, &[]);
    let addr = server.tls_addr();
    #[cfg(target_arch = "x86_64")]
    let aes = std::arch::is_x86_feature_detected!("aes")
        && std::arch::is_x86_feature_detected!("pclmulqdq");
    #[cfg(target_arch = "aarch64")]
    let aes = std::arch::is_aarch64_feature_detected!("aes")
        && std::arch::is_aarch64_feature_detected!("pmull");
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    let aes = false;
    let (first13, first12) = if aes {
        (
            cs::TLS13_AES_128_GCM_SHA256,
            cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        )
    } else {
        (
            cs::TLS13_CHACHA20_POLY1305_SHA256,
            cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
        )
    };
    // rustls's own order (AES-256 first, as OpenSSL's): the server's first choice wins.
    let all = rustls::crypto::ring::DEFAULT_CIPHER_SUITES;
    assert_eq!(negotiated(addr, &cert, &[&TLS13], all), first13.suite());
    assert_eq!(negotiated(addr, &cert, &[&TLS12], all), first12.suite());
    let reversed: Vec<_> = all.iter().rev().copied().collect();
    assert_eq!(
        negotiated(addr, &cert, &[&TLS13], &reversed),
        first13.suite()
    );
    // A client offering one suite gets it.
    for only in [
        cs::TLS13_AES_256_GCM_SHA384,
        cs::TLS13_CHACHA20_POLY1305_SHA256,
    ] {
        assert_eq!(negotiated(addr, &cert, &[&TLS13], &[only]), only.suite());
    }
    let only12 = cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384;
    assert_eq!(
        negotiated(addr, &cert, &[&TLS12], &[only12]),
        only12.suite()
    );
}

fn tls10_client_hello() -> Vec<u8> {
    let mut body = vec![0x03, 0x01];
    body.extend_from_slice(&[7u8; 32]); // random
    body.push(0); // no session id
    body.extend_from_slice(&[0x00, 0x02, 0x00, 0x2f]); // TLS_RSA_WITH_AES_128_CBC_SHA
    body.extend_from_slice(&[0x01, 0x00]); // null compression
    let mut hs = vec![0x01, 0, 0, body.len() as u8];
    hs.extend_from_slice(&body);
    let mut record = vec![0x16, 0x03, 0x01, 0, hs.len() as u8];
    record.extend_from_slice(&hs);
    record
}

#[test]
fn bad_tls_input_gets_an_alert_or_a_close_and_the_bystander_is_served() {
    let cert = TestCert::new("tls-bad");
    let server = echo_tls(&cert, &[]);
    let addr = server.tls_addr();
    let mut bystander = wss_client(addr, cert.client_config(), "/");
    round(&mut bystander, Message::text("before"));
    let upgrade = "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                   Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
    let hello = tls10_client_hello();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("plain HTTP", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()),
        ("a plain WebSocket upgrade", upgrade.as_bytes().to_vec()),
        ("garbage", vec![0xff; 64]),
        ("a TLS 1.0 ClientHello", hello.clone()),
        ("a truncated ClientHello, then EOF", hello[..20].to_vec()),
    ];
    for (what, bytes) in cases {
        let mut raw = TcpStream::connect(addr).unwrap();
        raw.write_all(&bytes).unwrap();
        if what.contains("EOF") {
            raw.shutdown(std::net::Shutdown::Write).unwrap();
        }
        let answer = read_to_close(&mut raw);
        // Never a plaintext HTTP answer: a TLS alert record (content type 21), or nothing.
        assert!(
            answer.is_empty() || answer[0] == 0x15,
            "{what}: {:?}",
            &answer[..answer.len().min(16)]
        );
        assert!(
            !String::from_utf8_lossy(&answer).contains("HTTP/1.1"),
            "{what}"
        );
        round(&mut bystander, Message::text(format!("after {what}")));
    }
    // A TLS 1.0 offer gets a fatal alert: rustls says handshake_failure (40), as it speaks
    // only 1.2 and 1.3 and finds nothing in common (protocol_version, 70, would do too).
    let mut raw = TcpStream::connect(addr).unwrap();
    raw.write_all(&hello).unwrap();
    let answer = read_to_close(&mut raw);
    assert_eq!(
        answer.get(..1),
        Some(&[0x15][..]),
        "an alert record: {answer:?}"
    );
    assert_eq!(answer.get(5), Some(&2), "a fatal alert: {answer:?}");
    assert!(matches!(answer.get(6), Some(40 | 70)), "{answer:?}");
    // A peer that vanishes mid-handshake (a reset) changes nothing either.
    let raw = TcpStream::connect(addr).unwrap();
    (&raw).write_all(&hello[..30]).unwrap();
    let sock = socket2::SockRef::from(&raw);
    sock.set_linger(Some(Duration::ZERO)).unwrap();
    drop(raw);
    round(&mut bystander, Message::text("after a reset"));
}

/// The library's echo handler.
struct Echo;

impl emberws::Handler for Echo {
    type State = ();
    fn on_upgrade(&mut self, _: &emberws::HttpRequest<'_>) -> emberws::Decision<()> {
        emberws::Decision::Accept(())
    }
    fn on_message(&mut self, ctx: &mut emberws::Ctx<'_>, _: &mut (), msg: emberws::Message<'_>) {
        ctx.send(msg);
    }
}

/// A server configuration with `cert`, for the library.
fn server_config(cert: &TestCert) -> Arc<rustls::ServerConfig> {
    use rustls::pki_types::pem::PemObject;
    let certs = vec![cert.der.clone()];
    let key = rustls::pki_types::PrivateKeyDer::from_pem_file(&cert.key_path).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    Arc::new(tls)
}

/// The library's echo server over TLS on its own thread, with `cfg`: its address, its
/// handle and the thread.
fn library_echo_tls(
    cert: &TestCert,
    cfg: emberws::Config,
) -> (
    SocketAddr,
    emberws::ServerHandle,
    std::thread::JoinHandle<()>,
) {
    let tls = server_config(cert);
    let (tx, rx) = std::sync::mpsc::channel();
    let thread = std::thread::spawn(move || {
        let mut server = emberws::Server::unbound(cfg, Echo).unwrap();
        let addr = server
            .listen_tls("127.0.0.1:0".parse().unwrap(), tls)
            .unwrap();
        tx.send((addr, server.handle())).unwrap();
        server.run().unwrap();
    });
    let (addr, handle) = rx.recv().unwrap();
    (addr, handle, thread)
}

#[test]
fn a_read_buffer_smaller_than_a_record_hands_out_every_byte() {
    // A 1 KiB read buffer: each 16 KiB record decrypts into more than a read takes, so the
    // rest waits in the session; the loop must read it out before waiting for the socket.
    let cert = TestCert::new("tls-small-read");
    let cfg = emberws::Config::default()
        .read_buffer_size(1024)
        .max_message_size(256 * 1024)
        .max_send_size(256 * 1024);
    let (addr, handle, thread) = library_echo_tls(&cert, cfg);
    let config = client_config(&cert.der);
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let client = std::thread::spawn(move || {
        let mut ws = wss_client(addr, config, "/");
        for size in [
            1,
            1023,
            1024,
            1025,
            16 * 1024,
            16 * 1024 + 5,
            100_000,
            200_000,
        ] {
            let data: Vec<u8> = (0..size).map(|i| (i * 7 % 251) as u8).collect();
            round(&mut ws, Message::binary(data));
        }
        // Pipelined: many messages in one flight, answered in order.
        for i in 0..200 {
            ws.send(Message::text(format!("m{i}"))).unwrap();
        }
        for i in 0..200 {
            assert_eq!(ws.read().unwrap(), Message::text(format!("m{i}")));
        }
        ws.close(None).unwrap();
        while ws.read().is_ok() {}
        let _ = done_tx.send(());
    });
    // Bytes left in the session with no event to come would stall the echo: a generous
    // bound turns that into a failure.
    if done_rx.recv_timeout(Duration::from_secs(60)).is_err() {
        panic!("the echo stalled (or the client failed): decrypted bytes were left unread");
    }
    client.join().unwrap();
    handle.shutdown().unwrap();
    thread.join().unwrap();
}

/// A server driven from the test's own mio loop (as an embedder drives it), so that the
/// test decides what reaches the socket between two turns.
struct Stepped {
    poll: mio::Poll,
    events: mio::Events,
    server: emberws::Server<Echo>,
}

impl Stepped {
    /// Waits up to `wait` for events, hands them to the server, and runs one turn.
    fn step(&mut self, wait: Duration) {
        self.poll.poll(&mut self.events, Some(wait)).unwrap();
        for event in self.events.iter() {
            self.server.handle_event(event);
        }
        self.server.turn(Instant::now());
    }
}

/// A non-blocking TLS client whose records the test sends one at a time.
struct RecordClient {
    session: rustls::ClientConnection,
    sock: TcpStream,
    got: Vec<u8>,
}

impl RecordClient {
    /// Queues `data` as one record (at most 16 KiB) and writes what the session has.
    fn send(&mut self, data: &[u8]) {
        self.session.writer().write_all(data).unwrap();
        self.io();
    }

    /// Writes what the session holds, then reads and decrypts what the server sent.
    fn io(&mut self) {
        while self.session.wants_write() {
            match self.session.write_tls(&mut self.sock) {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("writing to the server: {e}"),
            }
        }
        let mut buf = [0u8; 16 * 1024];
        loop {
            match self.session.read_tls(&mut self.sock) {
                Ok(0) => break,
                Ok(_) => {
                    self.session.process_new_packets().unwrap();
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("reading from the server: {e}"),
            }
            loop {
                match self.session.reader().read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => self.got.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) => panic!("decrypting: {e}"),
                }
            }
        }
    }
}

#[test]
fn a_record_that_arrives_while_an_earlier_one_is_handed_out_over_several_turns_is_read() {
    // A read budget of 1,000 B hands a 15,500 B record out over 16 turns, the rest kept in
    // the session. The next record reaches the socket after the first turn: its readiness
    // event comes while the connection waits in the ready queue, and no other will come for
    // it. The turn that hands out the last 500 B must not take the socket to be empty.
    let cert = TestCert::new("tls-handout");
    let poll = mio::Poll::new().unwrap();
    let registry = poll.registry().try_clone().unwrap();
    let cfg = emberws::Config::default().read_budget(1000);
    let mut server =
        emberws::Server::unbound_with_registry(cfg, Echo, registry, mio::Token(0)).unwrap();
    let addr = server
        .listen_tls("127.0.0.1:0".parse().unwrap(), server_config(&cert))
        .unwrap();
    let mut loop_ = Stepped {
        poll,
        events: mio::Events::with_capacity(64),
        server,
    };
    let sock = TcpStream::connect(addr).unwrap();
    sock.set_nonblocking(true).unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let session = rustls::ClientConnection::new(client_config(&cert.der), name).unwrap();
    let mut client = RecordClient {
        session,
        sock,
        got: Vec::new(),
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    client.send(
        b"GET / HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    );
    while !client.got.windows(4).any(|w| w == b"\r\n\r\n") {
        assert!(Instant::now() < deadline, "no answer to the upgrade");
        loop_.step(Duration::from_millis(10));
        client.io();
    }
    assert!(client.got.starts_with(b"HTTP/1.1 101"), "{:?}", client.got);
    client.got.clear();

    // One masked text frame of 20,000 B, sent as two records: 15,500 B, then the rest.
    let payload: Vec<u8> = (0..20_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    let mask = [0x11u8, 0x22, 0x33, 0x44];
    let mut frame = vec![0x81, 0x80 | 126, (20_000u16 >> 8) as u8, 20_000u16 as u8];
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    let (first, second) = frame.split_at(15_500);
    client.send(first);
    // The turn that reads the first record (the wait ends at its readiness event).
    loop_.step(Duration::from_secs(10));
    client.send(second);
    let mut expected = vec![0x81, 126, (20_000u16 >> 8) as u8, 20_000u16 as u8];
    expected.extend_from_slice(&payload);
    while client.got.len() < expected.len() {
        assert!(
            Instant::now() < deadline,
            "the echo stalled after {} of {} B: the second record was left in the socket",
            client.got.len(),
            expected.len()
        );
        loop_.step(Duration::from_millis(10));
        client.io();
    }
    assert!(client.got == expected, "the echo differs from the message");
}

#[test]
fn a_slow_client_hello_is_dropped_at_the_handshake_timeout() {
    let cert = TestCert::new("tls-slow");
    let cfg = emberws::Config::default().handshake_timeout(Duration::from_millis(300));
    let (addr, handle, thread) = library_echo_tls(&cert, cfg);
    let mut slow = TcpStream::connect(addr).unwrap();
    let hello = tls10_client_hello();
    let started = Instant::now();
    // One byte at a time, slower than the timeout allows in all.
    for b in &hello[..5] {
        if slow.write_all(&[*b]).is_err() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let answer = read_to_close(&mut slow);
    assert!(answer.is_empty(), "dropped without an answer: {answer:?}");
    assert!(started.elapsed() < Duration::from_secs(20));
    let stats = handle.stats().unwrap();
    assert_eq!(stats.timeouts, 1, "{}", stats.to_json());
    let mut ws = wss_client(addr, client_config(&cert.der), "/");
    round(&mut ws, Message::text("still serving"));
    handle.shutdown().unwrap();
    thread.join().unwrap();
}

#[test]
fn sighup_reloads_the_certificate_and_keeps_open_connections() {
    let mut cert = TestCert::new("tls-reload");
    let server = echo_tls(&cert, &[]);
    let addr = server.tls_addr();
    let old = cert.client_config();
    let mut before = wss_client(addr, old.clone(), "/");
    round(&mut before, Message::text("before the reload"));

    cert.renew();
    let new = cert.client_config();
    signal(&server, "HUP");
    wait_for_log(&server, "SIGHUP: reloaded");
    // New handshakes see the new certificate; a client trusting only the old one fails.
    let mut after = wss_client(addr, new.clone(), "/");
    round(&mut after, Message::text("new certificate"));
    let stream = tls_connect(addr, old.clone());
    assert!(
        tungstenite::client(format!("wss://localhost:{}/", addr.port()), stream).is_err(),
        "the old certificate is no longer served"
    );
    // The connection opened before the reload is still open.
    round(&mut before, Message::text("still here"));

    // A broken file on reload changes nothing, and says so once.
    std::fs::write(&cert.key_path, "not a key").unwrap();
    signal(&server, "HUP");
    wait_for_log(&server, "SIGHUP: kept the current certificate");
    let mut again = wss_client(addr, new, "/");
    round(&mut again, Message::text("same certificate"));
    round(&mut before, Message::text("and still here"));
    let kept = server.stderr_lines_with("kept the current certificate");
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert!(
        !kept[0].contains("not a key"),
        "the file's contents are never logged"
    );
}

fn signal(server: &ServerProcess, name: &str) {
    let status = std::process::Command::new("kill")
        .args([format!("-{name}"), server.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

fn wait_for_log(server: &ServerProcess, needle: &str) {
    util::eventually(needle, || {
        server
            .stderr_lines()
            .iter()
            .any(|l| l.contains(needle))
            .then_some(())
    });
}

#[test]
fn a_server_initiated_close_over_tls_sends_1001_then_close_notify() {
    let cert = TestCert::new("tls-shutdown");
    let server = echo_tls(&cert, &[]);
    let mut ws = wss_client(server.tls_addr(), cert.client_config(), "/");
    round(&mut ws, Message::text("before the shutdown"));
    signal(&server, "TERM");
    let code = loop {
        match ws.read() {
            Ok(Message::Close(Some(frame))) => break u16::from(frame.code),
            Ok(Message::Close(None)) => panic!("a close without a code"),
            Ok(_) => {}
            Err(e) => panic!("no close frame: {e}"),
        }
    };
    assert_eq!(code, 1001);
    // tungstenite answers the close; the server then ends TLS cleanly.
    loop {
        match ws.read() {
            Ok(_) => {}
            Err(tungstenite::Error::ConnectionClosed) => break,
            Err(e) => panic!("{e}"),
        }
    }
    let mut rest = Vec::new();
    ws.get_mut()
        .read_to_end(&mut rest)
        .expect("close_notify before the end of the stream");
}

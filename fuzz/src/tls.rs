//! `tls`: bytes from a peer into the server's TLS layer (`emberws::TlsProbe`: the session code
//! of `src/transport/tls.rs` over memory instead of a socket), with the relay's rustls
//! configuration (ring, TLS 1.2 and 1.3, ALPN `http/1.1`).
//!
//! Input: one byte for the socket's window, the read buffer's size and the mode.
//!
//! - **Bytes** (bit 4 clear): ops follow: `0b..00` feeds the next `len` bytes (`len` is the
//!   byte after the op) and reads as the loop does, `01` has the server write, `10` lets the
//!   peer read (and the loop flush), `11` ends the peer's input.
//! - **Client** (bit 4 set): a real rustls client (TLS 1.3, or 1.2 with bit 5) shakes hands
//!   with the server, a byte of one of its flights perhaps flipped (the next three bytes say
//!   which flight, where, and the XOR), then sends the rest of the input as application
//!   data, the server sends it back, and the client closes with `close_notify`.
//!
//! At the end the loop closes the connection (`close_notify`, shutdown), as it does for
//! every connection, whatever state the session is in.

use std::io::ErrorKind;
use std::sync::{Arc, OnceLock};

use emberws::TlsProbe;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig};

/// The largest record rustls accepts on the wire (src/transport/tls.rs `MAX_WIRE_RECORD`).
const MAX_WIRE_RECORD: usize = 5 + 16 * 1024 + 2048;
/// What may wait unsent: one send buffer and one record past it (`SEND_BUFFER` + a record).
const MAX_UNSENT: usize = 16 * 1024 + 1024 + MAX_WIRE_RECORD;
/// The most the server writes in answer to one read: its first flight (ServerHello,
/// certificate, finished) or an alert.
const MAX_FLIGHT: usize = 16 * 1024;

/// The server configuration, made once: a fresh self-signed P-256 certificate, and the
/// settings of `src/bin/emberws/tls.rs`; and two client configurations that trust it.
fn config() -> Arc<ServerConfig> {
    configs().0.clone()
}

type Configs = (Arc<ServerConfig>, [Arc<ClientConfig>; 2]);

fn configs() -> &'static Configs {
    static CONFIGS: OnceLock<Configs> = OnceLock::new();
    CONFIGS.get_or_init(|| {
        let certified =
            rcgen::generate_simple_self_signed(vec!["localhost".into()]).expect("a certificate");
        let cert = CertificateDer::from(certified.cert.der().to_vec());
        let cert_again = cert.clone();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
            certified.signing_key.serialize_der(),
        ));
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS 1.2 and 1.3")
            .with_no_client_auth()
            .with_single_cert(vec![cert], key)
            .expect("the certificate");
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let mut roots = RootCertStore::empty();
        roots.add(cert_again).expect("a root");
        let client = |versions: &[&'static rustls::SupportedProtocolVersion]| {
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let mut c = ClientConfig::builder_with_provider(provider)
                .with_protocol_versions(versions)
                .expect("the versions")
                .with_root_certificates(roots.clone())
                .with_no_client_auth();
            c.alpn_protocols = vec![b"http/1.1".to_vec()];
            Arc::new(c)
        };
        (
            Arc::new(config),
            [
                client(&[&rustls::version::TLS13]),
                client(&[&rustls::version::TLS12]),
            ],
        )
    })
}

/// What the checks know of the session.
struct Watch {
    /// Output so far, and the most there may be after a failure.
    out: usize,
    out_at_failure: Option<usize>,
    ended: bool,
}

impl Watch {
    /// The session's buffers within their bounds; after a failure no output but the alert
    /// already written, and every read EOF, every write refused.
    fn check(&mut self, p: &mut TlsProbe) -> Vec<u8> {
        let [incoming, unsent, plain] = p.held_bytes();
        assert!(incoming <= MAX_WIRE_RECORD, "{incoming} B of pending input");
        assert!(unsent <= MAX_UNSENT, "{unsent} B unsent");
        assert!(plain <= MAX_WIRE_RECORD, "{plain} B of plaintext spill");
        let out = p.take_output();
        self.out += out.len();
        if let Some(at) = self.out_at_failure {
            assert!(self.out <= at, "output after the alert: {out:?}");
        }
        if p.failed() {
            // What was unsent at the failure (the alert last) may still go out; nothing else.
            let [_, unsent, _] = p.held_bytes();
            self.out_at_failure.get_or_insert(self.out + unsent);
            assert_eq!(incoming + plain, 0, "a failed session keeps input");
        }
        out
    }
}

/// The loop's read (it reads on until `WouldBlock`, EOF or an error, but no read here may
/// give plaintext: no peer holds a key the server trusts, so every one of them ends it).
fn read(p: &mut TlsProbe, buf: &mut [u8], w: &mut Watch) {
    let before = w.out;
    let failed = p.failed();
    let r = p.read(buf);
    w.check(p);
    assert!(
        w.out - before <= MAX_FLIGHT,
        "{} B written in one read",
        w.out - before
    );
    match r {
        Ok(0) => {}
        Ok(n) => panic!("{n} B of plaintext from an unauthenticated peer"),
        Err(e) if e.kind() == ErrorKind::WouldBlock => {
            assert!(!failed && !p.failed(), "WouldBlock from a failed session");
        }
        Err(_) => assert!(p.failed() || w.ended, "an error without failing"),
    }
}

/// Never panics (rustls 0.23.46 does when driven with an empty slice after an error in the
/// middle of a handshake message; the close at the end drives that path); the buffers stay
/// within their bounds and one read's output within one flight; no plaintext; after the
/// alert nothing more is written, read or accepted.
pub fn tls(data: &[u8]) {
    let Some((&first, mut ops)) = data.split_first() else {
        return;
    };
    if first & 0x10 != 0 {
        return with_client(first, ops);
    }
    let window = [usize::MAX, usize::MAX, 7, 1000][usize::from(first & 3)];
    let mut buf = vec![0u8; [1024, 4096, 65_536, 100][usize::from(first >> 2 & 3)]];
    let Some(mut p) = TlsProbe::new(config(), window) else {
        panic!("rustls refuses the configuration");
    };
    let mut w = Watch {
        out: 0,
        out_at_failure: None,
        ended: false,
    };
    while let Some((&op, rest)) = ops.split_first() {
        ops = rest;
        match op & 3 {
            0 => {
                let len = ops
                    .first()
                    .map_or(0, |&n| usize::from(n) * 4 + usize::from(op >> 2));
                let chunk = ops.get(1..).unwrap_or_default();
                let chunk = &chunk[..len.min(chunk.len())];
                ops = &ops[(1 + chunk.len()).min(ops.len())..];
                p.feed(chunk);
                read(&mut p, &mut buf, &mut w);
            }
            1 => {
                let r = p.write(b"HTTP/1.1 101 Switching Protocols\r\n\r\n");
                assert!(r.is_err(), "written before the handshake: {r:?}");
                w.check(&mut p);
            }
            2 => {
                w.check(&mut p);
                let _ = p.flush();
                w.check(&mut p);
            }
            _ => {
                p.end_input();
                w.ended = true;
                read(&mut p, &mut buf, &mut w);
            }
        }
    }
    // The loop's close, twice (as a close after a failed write may).
    p.shutdown_write();
    p.shutdown_write();
    w.check(&mut p);
    assert!(p.is_shut());
    let r = p.read(&mut buf);
    assert!(!matches!(r, Ok(n) if n > 0), "plaintext after the close");
    w.check(&mut p);
}

/// Moves bytes both ways until neither side has anything more to say: the client's (with
/// the chosen flight's byte flipped) into the server, which reads them as the loop does
/// (plaintext into `got`), and the server's into the client. Returns false once the client
/// refused what it got.
fn pump(
    c: &mut ClientConnection,
    p: &mut TlsProbe,
    buf: &mut [u8],
    w: &mut Watch,
    flip: &mut Flip,
    got: &mut Vec<u8>,
) -> bool {
    for _ in 0..10_000 {
        let mut moved = false;
        let mut bytes = Vec::new();
        while c.wants_write() {
            if c.write_tls(&mut bytes).is_err() {
                break;
            }
        }
        if !bytes.is_empty() {
            flip.apply(&mut bytes);
            p.feed(&bytes);
            moved = true;
        }
        for _ in 0..10_000 {
            let before = w.out;
            let r = p.read(buf);
            let out = w.check(p);
            assert!(
                out.len() <= MAX_FLIGHT,
                "{} B written in one read",
                w.out - before
            );
            if !out.is_empty() {
                moved = true;
                if !deliver(c, &out) {
                    return false;
                }
            }
            match r {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
        let _ = p.flush();
        let out = w.check(p);
        if !out.is_empty() {
            moved = true;
            if !deliver(c, &out) {
                return false;
            }
        }
        if !moved {
            return true;
        }
    }
    panic!("the session never settles");
}

fn deliver(c: &mut ClientConnection, mut out: &[u8]) -> bool {
    while !out.is_empty() {
        if c.read_tls(&mut out).is_err() || c.process_new_packets().is_err() {
            return false;
        }
    }
    true
}

/// Which byte of which client flight is flipped (none if `xor` is 0).
struct Flip {
    flight: u8,
    at: usize,
    xor: u8,
    seen: u8,
}

impl Flip {
    fn apply(&mut self, bytes: &mut [u8]) {
        if self.seen == self.flight && self.xor != 0 {
            let i = self.at % bytes.len();
            bytes[i] ^= self.xor;
        }
        self.seen = self.seen.saturating_add(1);
    }
}

/// A real client: the handshake completes unless a byte was flipped; plaintext arrives
/// unaltered both ways (with a flip: what arrives is a prefix of what was sent); a client's
/// `close_notify` is the server's EOF; and the checks of [`tls`] throughout.
fn with_client(first: u8, rest: &[u8]) {
    let Some((flip, data)) = rest.split_at_checked(3) else {
        return;
    };
    let window = [usize::MAX, usize::MAX, 7, 1000][usize::from(first & 3)];
    let mut buf = vec![0u8; [1024, 4096, 65_536, 100][usize::from(first >> 2 & 3)]];
    let (server, clients) = configs();
    let mut p = TlsProbe::new(server.clone(), window).expect("a session");
    let client = clients[usize::from(first >> 5 & 1)].clone();
    let name = "localhost".try_into().expect("a name");
    let mut c = ClientConnection::new(client, name).expect("a client");
    let mut flip = Flip {
        flight: flip[0] & 3,
        at: usize::from(flip[1]) * 7,
        xor: flip[2],
        seen: 0,
    };
    let flipped = flip.xor != 0;
    let mut w = Watch {
        out: 0,
        out_at_failure: None,
        ended: false,
    };
    let mut got = Vec::new();
    let mut ok = pump(&mut c, &mut p, &mut buf, &mut w, &mut flip, &mut got);
    if ok && !c.is_handshaking() {
        use std::io::{Read, Write};
        let _ = c.writer().write_all(data);
        ok = pump(&mut c, &mut p, &mut buf, &mut w, &mut flip, &mut got);
        assert!(
            data.starts_with(&got),
            "the server read other bytes than were sent"
        );
        if !flipped {
            assert!(ok && !p.failed(), "a clean session failed");
            assert_eq!(got, data, "the server did not read all that was sent");
            // The server answers with the same bytes, in what pieces the socket takes.
            let mut sent = 0;
            for _ in 0..100_000 {
                if sent == data.len() {
                    break;
                }
                match p.write(&data[sent..]) {
                    Ok(n) => sent += n,
                    Err(e) => assert_eq!(e.kind(), ErrorKind::WouldBlock, "{e}"),
                }
                let mut none = Vec::new();
                assert!(pump(&mut c, &mut p, &mut buf, &mut w, &mut flip, &mut none));
                assert!(none.is_empty());
            }
            let mut back = Vec::new();
            let _ = c.reader().read_to_end(&mut back);
            assert_eq!(back, data, "the client did not read what the server sent");
            c.send_close_notify();
            let mut none = Vec::new();
            pump(&mut c, &mut p, &mut buf, &mut w, &mut flip, &mut none);
            assert!(matches!(p.read(&mut buf), Ok(0)), "close_notify is EOF");
        }
    } else if !flipped {
        panic!("a clean handshake did not complete (client ok: {ok})");
    }
    p.shutdown_write();
    w.check(&mut p);
    let _ = p.read(&mut buf);
    w.check(&mut p);
}

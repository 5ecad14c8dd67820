//! `tls`: bytes from a peer into the server's TLS layer (`emberws::TlsProbe`: the session code
//! of `src/transport/tls.rs` over memory instead of a socket), with the relay's rustls
//! configuration (ring, TLS 1.2 and 1.3, ALPN `http/1.1`).
//!
//! Input: one byte for the socket's window and the read buffer's size, then ops: `0b..00`
//! feeds the next `len` bytes (`len` is the byte after the op) and reads as the loop does,
//! `01` has the server write, `10` lets the peer read (and the loop flush), `11` ends the
//! peer's input. At the end the loop closes the connection (`close_notify`, shutdown), as it
//! does for every connection, whatever state the session is in.

use std::io::ErrorKind;
use std::sync::{Arc, OnceLock};

use emberws::TlsProbe;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::ServerConfig;

/// The largest record rustls accepts on the wire (src/transport/tls.rs `MAX_WIRE_RECORD`).
const MAX_WIRE_RECORD: usize = 5 + 16 * 1024 + 2048;
/// What may wait unsent: one send buffer and one record past it (`SEND_BUFFER` + a record).
const MAX_UNSENT: usize = 16 * 1024 + 1024 + MAX_WIRE_RECORD;
/// The most the server writes in answer to one read: its first flight (ServerHello,
/// certificate, finished) or an alert.
const MAX_FLIGHT: usize = 16 * 1024;

/// The server configuration, made once: a fresh self-signed P-256 certificate, and the
/// settings of `src/bin/emberws/tls.rs`.
fn config() -> Arc<ServerConfig> {
    static CONFIG: OnceLock<Arc<ServerConfig>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let certified = rcgen::generate_simple_self_signed(vec!["localhost".into()])
                .expect("a certificate");
            let cert = CertificateDer::from(certified.cert.der().to_vec());
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
            Arc::new(config)
        })
        .clone()
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
    fn check(&mut self, p: &mut TlsProbe) {
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

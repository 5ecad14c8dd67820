//! Conformance suite: the Autobahn|Testsuite server cases of categories 1–7, 9 and 10,
//! re-expressed as data and run against `emberws echo` with a raw client.
//!
//! # Verdict
//!
//! Each case is a list of [`Step`]s (bytes to send, events to receive in order, quiet
//! checks) and a [`Close`] expectation, mirroring what Autobahn's `Case` classes hold
//! in `expected[OK]` and `expectedClose` (`closedByMe`, `closeCode`, `requireClean`).
//! A case passes only with Autobahn's strict **OK**:
//!
//! - the events received equal the expected list exactly (a late pong, an extra echo,
//!   or a missing echo before the server fails the connection all fail the case; the
//!   last one is what Autobahn calls NON-STRICT);
//! - the right endpoint starts the closing handshake, and the server's close code is
//!   in the allowed list;
//! - the *server* closes the TCP connection after the close exchange: the client never
//!   drops it and waits up to [`EOF_WAIT`] for EOF (else Autobahn's FAILED BY CLIENT).
//!
//! Where Autobahn would also accept something weaker, this suite is stricter, on purpose:
//!
//! - whenever Autobahn names a close code, a close frame carrying one of the allowed
//!   codes is required (Autobahn also accepts a TCP drop or a code-less close when
//!   `requireClean` is false); only 7.3.1 (we send a code-less close) accepts a
//!   code-less reply;
//! - 6.4.x (fail fast on invalid UTF-8): the remainder of the message is never sent,
//!   so a server that only fails once the whole message is in (Autobahn: NON-STRICT)
//!   fails here. 6.4.1/6.4.2 prove that the valid first part was accepted with a ping
//!   (a pong must come back) instead of Autobahn's one-second wait; 6.4.3/6.4.4 (the
//!   parts are chops of one frame, so no ping fits in) check that nothing arrives for
//!   [`QUIET_WINDOW`] after the valid first chop;
//! - 5.19/5.20: the first pong must arrive before the rest of the message is sent
//!   (Autobahn waits one second instead);
//! - 7.1.6 and 7.13.x are informational in Autobahn; here 7.1.6 demands its "OK" events
//!   (both echoes before the close) and 7.13.x demands one of Autobahn's listed codes;
//! - 9.x compares the echoed payload bytes, not only their length;
//! - server frames must be well formed (unmasked, minimal lengths, valid UTF-8 text).
//!
//! No case depends on timing: pauses only split TCP segments, nothing waits for a
//! result with a sleep, and 9.x only *reports* its durations (`--nocapture`).
//!
//! One `#[test]` per Autobahn subcategory runs its cases in order against its own
//! server; failures are collected and reported together with the case ids. Set
//! `EMBERWS_CASE=6.4` (or `9.1.6`, `3.6 ping`...) to run only matching cases.

mod util;

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use util::binary::ServerProcess;
use util::raw::{self, op, Event, RawClient};

/// `--max-message` given to the server: 16 MiB, the largest 9.x message.
const MAX_MESSAGE: &str = "16777216";
/// How long the server may take to close TCP after the close exchange.
const EOF_WAIT: Duration = Duration::from_secs(10);
/// Pause between chops that should reach the server as separate segments.
const TINY_PAUSE: Duration = Duration::from_micros(500);
/// Negative check window of [`Step::Quiet`].
const QUIET_WINDOW: Duration = Duration::from_millis(200);
/// After this many timed-out cases a group skips the rest (keeps a hung server cheap).
const MAX_TIMEOUTS_PER_GROUP: usize = 3;

const NORMAL: u16 = 1000;
const PROTOCOL_ERROR: u16 = 1002;
const INVALID_PAYLOAD: u16 = 1007;

const HELLO: &[u8] = b"Hello, world!";
/// "κόσμε", Autobahn's favourite multi-byte string.
const KOSME: &[u8] = b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5";
/// κόσμε, a UTF-16 surrogate (ED A0 80, invalid at byte 12), then "edited".
const KOSME_SURROGATE_EDITED: &[u8] =
    b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80\x65\x64\x69\x74\x65\x64";
/// The UTF-8 sequence table of 6.5.1–6.23.7.
const UTF8_TABLE: &str = include_str!("conformance/utf8_sequences.txt");

// =====================================================================================
// The case model
// =====================================================================================

/// An event the test expects from the server, in order.
#[derive(Clone, PartialEq, Eq)]
enum Ev {
    Text(Vec<u8>),
    Binary(Vec<u8>),
    Pong(Vec<u8>),
}

impl Ev {
    fn from_event(event: &Event) -> Option<Ev> {
        match event {
            Event::Message {
                binary: false,
                payload,
            } => Some(Ev::Text(payload.clone())),
            Event::Message {
                binary: true,
                payload,
            } => Some(Ev::Binary(payload.clone())),
            Event::Pong(p) => Some(Ev::Pong(p.clone())),
            _ => None,
        }
    }
}

impl fmt::Debug for Ev {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ev::Text(p) => write!(f, "text message {}", raw::preview(p)),
            Ev::Binary(p) => write!(f, "binary message {}", raw::preview(p)),
            Ev::Pong(p) => write!(f, "pong {}", raw::preview(p)),
        }
    }
}

#[derive(Clone)]
enum Step {
    /// Queue bytes on the writer thread: in `chunk`-byte writes (0: one write),
    /// sleeping `pause` after each.
    Send {
        bytes: Vec<u8>,
        chunk: usize,
        pause: Duration,
    },
    /// The next event must be this one.
    Recv(Ev),
    /// After everything queued is written, nothing may arrive for [`QUIET_WINDOW`]
    /// (a negative check: it can miss a bug on a slow machine, never invent one).
    Quiet(&'static str),
}

/// How the connection must end (Autobahn's `expectedClose`).
#[derive(Clone)]
enum Close {
    /// `closedByMe`, Autobahn's automatic close: once every expected event arrived we
    /// send this close payload; the server must answer with one of `codes`.
    Initiate { payload: Vec<u8>, codes: Vec<u16> },
    /// `closedByMe`, with the close frame already among the steps (Autobahn's
    /// `suppressClose` cases): the server must answer with one of `codes`
    /// (or a code-less close, if `absent_ok`).
    AlreadySent { codes: Vec<u16>, absent_ok: bool },
    /// Not `closedByMe`: the server must fail the connection with one of `codes`.
    ByServer { codes: Vec<u16> },
}

#[derive(Clone)]
struct Case {
    /// Autobahn's case id, e.g. "5.19".
    id: String,
    steps: Vec<Step>,
    close: Close,
    /// Print the duration (9.x, 10.x).
    timed: bool,
    /// Appended to a failure message.
    note: &'static str,
}

impl Case {
    fn new(id: impl Into<String>) -> Case {
        Case {
            id: id.into(),
            steps: Vec::new(),
            close: Close::Initiate {
                payload: raw::close_payload(NORMAL, b""),
                codes: vec![NORMAL],
            },
            timed: false,
            note: "",
        }
    }

    /// All of `bytes` in one write ("sent in one chop").
    fn send(mut self, bytes: Vec<u8>) -> Case {
        self.steps.push(Step::Send {
            bytes,
            chunk: 0,
            pause: Duration::ZERO,
        });
        self
    }

    /// Each frame in its own write, with a tiny pause ("frame-wise chops", Autobahn's
    /// `sync=True`).
    fn send_frames(mut self, frames: Vec<Vec<u8>>) -> Case {
        for bytes in frames {
            self.steps.push(Step::Send {
                bytes,
                chunk: 0,
                pause: TINY_PAUSE,
            });
        }
        self
    }

    /// `bytes` in `chunk`-byte writes with a tiny pause ("octet-wise chops" for 1).
    fn send_chopped(mut self, bytes: Vec<u8>, chunk: usize) -> Case {
        self.steps.push(Step::Send {
            bytes,
            chunk,
            pause: TINY_PAUSE,
        });
        self
    }

    /// `bytes` in `chunk`-byte writes without pauses (9.5/9.6: thousands of chops).
    fn send_chopped_fast(mut self, bytes: Vec<u8>, chunk: usize) -> Case {
        self.steps.push(Step::Send {
            bytes,
            chunk,
            pause: Duration::ZERO,
        });
        self
    }

    fn expect(mut self, ev: Ev) -> Case {
        self.steps.push(Step::Recv(ev));
        self
    }

    fn quiet(mut self, what: &'static str) -> Case {
        self.steps.push(Step::Quiet(what));
        self
    }

    /// The server must fail the connection with one of `codes`.
    fn fails(mut self, codes: &[u16]) -> Case {
        self.close = Close::ByServer {
            codes: codes.to_vec(),
        };
        self
    }

    /// Our close frame is among the steps; the server must answer with one of `codes`.
    fn close_sent(mut self, codes: &[u16], absent_ok: bool) -> Case {
        self.close = Close::AlreadySent {
            codes: codes.to_vec(),
            absent_ok,
        };
        self
    }

    fn timed(mut self) -> Case {
        self.timed = true;
        self
    }

    fn note(mut self, note: &'static str) -> Case {
        self.note = note;
        self
    }
}

// =====================================================================================
// Frame helpers (all client frames are masked unless said otherwise)
// =====================================================================================

fn fr(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    raw::frame(fin, 0, opcode, payload, true)
}

fn fr_rsv(rsv: u8, opcode: u8, payload: &[u8]) -> Vec<u8> {
    raw::frame(true, rsv, opcode, payload, true)
}

fn text(payload: &[u8]) -> Vec<u8> {
    fr(true, op::TEXT, payload)
}

fn data(binary: bool, payload: &[u8]) -> Vec<u8> {
    fr(true, if binary { op::BINARY } else { op::TEXT }, payload)
}

fn ping(payload: &[u8]) -> Vec<u8> {
    fr(true, op::PING, payload)
}

fn pong(payload: &[u8]) -> Vec<u8> {
    fr(true, op::PONG, payload)
}

fn close(code: u16, reason: &[u8]) -> Vec<u8> {
    fr(true, op::CLOSE, &raw::close_payload(code, reason))
}

fn echo(binary: bool, payload: &[u8]) -> Ev {
    if binary {
        Ev::Binary(payload.to_vec())
    } else {
        Ev::Text(payload.to_vec())
    }
}

/// A message split into frames of `size` payload bytes (the last one shorter).
fn fragmented(binary: bool, payload: &[u8], size: usize) -> Vec<u8> {
    let first_op = if binary { op::BINARY } else { op::TEXT };
    let count = payload.len().div_ceil(size).max(1);
    let mut out = Vec::with_capacity(payload.len() + count * 14);
    if payload.is_empty() {
        return fr(true, first_op, b"");
    }
    for (i, piece) in payload.chunks(size).enumerate() {
        let opcode = if i == 0 { first_op } else { op::CONTINUATION };
        out.extend_from_slice(&fr(i + 1 == count, opcode, piece));
    }
    out
}

/// `pattern` repeated to exactly `len` bytes (Autobahn's `payload_len`).
fn repeat_to(pattern: &[u8], len: usize) -> Vec<u8> {
    pattern.iter().copied().cycle().take(len).collect()
}

// =====================================================================================
// Running cases
// =====================================================================================

struct Failure {
    msg: String,
    timeout: bool,
}

impl From<String> for Failure {
    fn from(msg: String) -> Failure {
        Failure {
            msg,
            timeout: false,
        }
    }
}

fn io_failure(context: &str, e: &io::Error) -> Failure {
    Failure {
        msg: format!("{context}: {e}"),
        timeout: e.kind() == io::ErrorKind::TimedOut,
    }
}

fn so_far(received: &[Ev]) -> String {
    if received.is_empty() {
        " (no event received before it)".into()
    } else {
        format!(" (after {received:?})")
    }
}

/// Runs one case on a fresh connection; `Ok` is Autobahn's OK/OK. `eof_wait` is how
/// long the server gets to close TCP after the close frames ([`EOF_WAIT`]).
fn run_case(addr: SocketAddr, case: Case, eof_wait: Duration) -> Result<(), Failure> {
    let Case { steps, close, .. } = case;
    let mut client =
        RawClient::connect(addr).map_err(|e| io_failure("opening handshake failed", &e))?;
    let mut writer = client
        .background_writer()
        .map_err(|e| io_failure("cannot clone the socket", &e))?;
    let verdict = drive(&mut client, &mut writer, steps, close, eof_wait);
    if verdict.is_err() {
        // The case has failed already: unblock a writer stuck on a server that stopped
        // reading, instead of waiting for its write timeout.
        let _ = client.stream().shutdown(std::net::Shutdown::Both);
    }
    drop(writer);
    verdict
}

/// The body of [`run_case`]: sends, receives and judges.
fn drive(
    client: &mut RawClient,
    writer: &mut raw::BackgroundWriter,
    steps: Vec<Step>,
    close: Close,
    eof_wait: Duration,
) -> Result<(), Failure> {
    let mut received: Vec<Ev> = Vec::new();

    for step in steps {
        match step {
            Step::Send {
                bytes,
                chunk,
                pause,
            } => writer.send_chunked(bytes, chunk, pause),
            Step::Recv(expected) => {
                let got = client.read_event().map_err(|e| {
                    io_failure(
                        &format!("waiting for {expected:?}{}", so_far(&received)),
                        &e,
                    )
                })?;
                match Ev::from_event(&got) {
                    Some(ev) if ev == expected => received.push(ev),
                    _ => {
                        return Err(format!(
                            "expected {expected:?}, got {got:?}{}",
                            so_far(&received)
                        )
                        .into())
                    }
                }
            }
            Step::Quiet(what) => {
                writer
                    .wait_idle()
                    .map_err(|e| io_failure("writing to the server", &e))?;
                let reacted = client
                    .readable_within(QUIET_WINDOW)
                    .map_err(|e| io_failure("checking for an early reaction", &e))?;
                if reacted {
                    let got = client.read_event();
                    return Err(format!(
                        "the server reacted before {what}: {got:?}{}",
                        so_far(&received)
                    )
                    .into());
                }
            }
        }
    }

    let (codes, absent_ok, closed_by_me) = match close {
        Close::Initiate { payload, codes } => {
            writer.send(fr(true, op::CLOSE, &payload));
            (codes, false, true)
        }
        Close::AlreadySent { codes, absent_ok } => (codes, absent_ok, true),
        Close::ByServer { codes } => (codes, false, false),
    };
    let who = if closed_by_me {
        "answering our close frame"
    } else {
        "failing the connection"
    };

    // Everything up to the server's close frame must already have been expected.
    let (code, reason) = match client.read_event() {
        Ok(Event::Close { code, reason }) => (code, reason),
        Ok(Event::Eof) => {
            return Err(format!(
                "the server closed TCP without a close frame when {who} (expected close code {codes:?}){}",
                so_far(&received)
            )
            .into())
        }
        Ok(other) => {
            return Err(format!(
                "unexpected {other:?} where the server should be {who} with close code {codes:?}{}",
                so_far(&received)
            )
            .into())
        }
        Err(e) => {
            return Err(io_failure(
                &format!(
                    "waiting for the server's close frame ({who}, code {codes:?}){}",
                    so_far(&received)
                ),
                &e,
            ))
        }
    };
    match code {
        Some(c) if codes.contains(&c) => {}
        None if absent_ok => {}
        _ => {
            return Err(format!(
                "server close code {} (reason {}) when {who}; expected one of {codes:?}",
                code.map_or("<none>".to_string(), |c| c.to_string()),
                raw::preview(&reason)
            )
            .into())
        }
    }

    if closed_by_me {
        // The handshake is complete: all our writes must have gone through.
        writer
            .wait_idle()
            .map_err(|e| io_failure("writing to the server", &e))?;
    } else {
        // Answer the server's close like Autobahn does; the server may already be gone.
        let answer = code.map_or_else(Vec::new, |c| raw::close_payload(c, b""));
        writer.send(fr(true, op::CLOSE, &answer));
    }
    client.wait_for_eof(eof_wait).map_err(|e| {
        io_failure(
            "after the close frames (the server must close the TCP connection; \
             Autobahn: FAILED BY CLIENT / UNCLEAN)",
            &e,
        )
    })?;
    Ok(())
}

fn matches_filter(id: &str, filter: &str) -> bool {
    let filter = filter.trim();
    id == filter
        || id
            .strip_prefix(filter)
            .is_some_and(|rest| rest.starts_with('.') || rest.starts_with(' '))
}

/// Runs the cases of one subcategory against a fresh `emberws echo`, then reports
/// every failure at once.
fn run_group(group: &str, cases: impl IntoIterator<Item = Case>) {
    let cases: Vec<Case> = cases.into_iter().collect();
    run_group_over(group, cases.clone(), Over::Tcp);
    run_group_over(group, cases, Over::Tls);
}

/// What carries a group's cases to the server.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Over {
    /// Plain TCP to `emberws echo`.
    Tcp,
    /// `wss://`: the same raw client through a local proxy that terminates TLS, to
    /// `emberws echo --tls-listen` (with the `tls` feature; without it, the TLS half fails).
    Tls,
}

fn run_group_over(group: &str, cases: Vec<Case>, over: Over) {
    let filter = std::env::var("EMBERWS_CASE").ok();
    let cert = util::tls::TestCert::new("conformance");
    let (mut server, addr) = match over {
        Over::Tcp => {
            let server = ServerProcess::echo(&["--max-message", MAX_MESSAGE]);
            let addr = server.addr();
            (server, addr)
        }
        Over::Tls => {
            let mut args = vec![
                "echo".to_string(),
                "--max-message".into(),
                MAX_MESSAGE.into(),
            ];
            args.extend(cert.flags());
            let server = ServerProcess::spawn(&args);
            let proxy = util::tls::TlsProxy::start(server.tls_addr(), cert.client_config());
            (server, proxy.addr)
        }
    };
    let group = &format!(
        "{group}{}",
        if over == Over::Tls { " over wss" } else { "" }
    );
    let group_start = Instant::now();
    let (mut ran, mut timeouts) = (0usize, 0usize);
    let mut failures = Vec::new();
    for case in cases {
        if filter
            .as_deref()
            .is_some_and(|f| !matches_filter(&case.id, f))
        {
            continue;
        }
        let id = case.id.clone();
        if timeouts >= MAX_TIMEOUTS_PER_GROUP {
            failures.push(format!(
                "case {id}: skipped after {timeouts} timed-out cases in this group"
            ));
            continue;
        }
        ran += 1;
        let (timed, note) = (case.timed, case.note);
        let started = Instant::now();
        match run_case(addr, case, EOF_WAIT) {
            Ok(()) if timed => println!(
                "case {id}: OK in {:.3} s (informational)",
                started.elapsed().as_secs_f64()
            ),
            Ok(()) => {}
            Err(failure) => {
                timeouts += usize::from(failure.timeout);
                let note = if note.is_empty() {
                    String::new()
                } else {
                    format!(" [{note}]")
                };
                failures.push(format!("case {id}: {}{note}", failure.msg));
            }
        }
        if let Some(status) = server.try_wait() {
            failures.push(format!("the server exited ({status}) during case {id}"));
            break;
        }
    }
    println!(
        "group {group}: {ran} cases, {} failed, {:.2} s",
        failures.len(),
        group_start.elapsed().as_secs_f64()
    );
    if !failures.is_empty() {
        panic!(
            "{} of {ran} Autobahn {group} cases failed:\n  {}\n--- server stderr (last 30 lines) ---\n{}",
            failures.len(),
            failures.join("\n  "),
            server.stderr_tail(30)
        );
    }
}

// =====================================================================================
// 1 Framing
// =====================================================================================

/// 1.1.1–1.1.8 (text) or 1.2.1–1.2.8 (binary): sizes 0, 125, 126, 127, 128, 65535,
/// 65536 in one frame, then 65536 sent in chops of 997 octets.
fn framing_cases(binary: bool) -> Vec<Case> {
    let (sub, fill) = if binary { ("1.2", 0xFE) } else { ("1.1", b'*') };
    let mut cases: Vec<Case> = [0usize, 125, 126, 127, 128, 65535, 65536]
        .iter()
        .enumerate()
        .map(|(i, &len)| {
            let payload = vec![fill; len];
            Case::new(format!("{sub}.{}", i + 1))
                .send(data(binary, &payload))
                .expect(echo(binary, &payload))
        })
        .collect();
    let payload = vec![fill; 65536];
    cases.push(
        Case::new(format!("{sub}.8"))
            .send_chopped(data(binary, &payload), 997)
            .expect(echo(binary, &payload)),
    );
    cases
}

#[test]
fn case_1_1_text_messages() {
    run_group("1.1", framing_cases(false));
}

#[test]
fn case_1_2_binary_messages() {
    run_group("1.2", framing_cases(true));
}

// =====================================================================================
// 2 Pings/Pongs
// =====================================================================================

fn ping_pong_cases() -> Vec<Case> {
    let binary_payload: &[u8] = b"\x00\xff\xfe\xfd\xfc\xfb\x00\xff";
    let max = vec![0xFE; 125];
    let too_long = vec![0xFE; 126];
    let ten: Vec<Vec<u8>> = (0..10)
        .map(|i| format!("payload-{i}").into_bytes())
        .collect();
    let ten_pings: Vec<u8> = ten.iter().flat_map(|p| ping(p)).collect();
    let mut ten_pongs_2_10 = Case::new("2.10").send(ten_pings.clone());
    let mut ten_pongs_2_11 = Case::new("2.11").send_chopped(ten_pings, 1);
    for p in &ten {
        ten_pongs_2_10 = ten_pongs_2_10.expect(Ev::Pong(p.clone()));
        ten_pongs_2_11 = ten_pongs_2_11.expect(Ev::Pong(p.clone()));
    }
    vec![
        Case::new("2.1").send(ping(b"")).expect(Ev::Pong(vec![])),
        Case::new("2.2")
            .send(ping(HELLO))
            .expect(Ev::Pong(HELLO.to_vec())),
        Case::new("2.3")
            .send(ping(binary_payload))
            .expect(Ev::Pong(binary_payload.to_vec())),
        Case::new("2.4")
            .send(ping(&max))
            .expect(Ev::Pong(max.clone())),
        Case::new("2.5")
            .send(ping(&too_long))
            .fails(&[PROTOCOL_ERROR]),
        Case::new("2.6")
            .send_chopped(ping(&max), 1)
            .expect(Ev::Pong(max.clone())),
        Case::new("2.7")
            .send([pong(b""), close(NORMAL, b"")].concat())
            .close_sent(&[NORMAL], false),
        Case::new("2.8")
            .send([pong(b"unsolicited pong payload"), close(NORMAL, b"")].concat())
            .close_sent(&[NORMAL], false),
        Case::new("2.9")
            .send([pong(b"unsolicited pong payload"), ping(b"ping payload")].concat())
            .expect(Ev::Pong(b"ping payload".to_vec())),
        ten_pongs_2_10,
        ten_pongs_2_11,
    ]
}

#[test]
fn case_2_pings_and_pongs() {
    run_group("2", ping_pong_cases());
}

// =====================================================================================
// 3 Reserved bits
// =====================================================================================

fn reserved_bits_cases() -> Vec<Case> {
    let after_echo = |rsv: u8| vec![text(HELLO), fr_rsv(rsv, op::TEXT, HELLO), ping(b"")];
    let non_strict = "a server failing before echoing the valid first message is NON-STRICT";
    vec![
        Case::new("3.1")
            .send(fr_rsv(1, op::TEXT, HELLO))
            .fails(&[PROTOCOL_ERROR]),
        Case::new("3.2")
            .send(after_echo(2).concat())
            .expect(Ev::Text(HELLO.to_vec()))
            .fails(&[PROTOCOL_ERROR])
            .note(non_strict),
        Case::new("3.3")
            .send_frames(after_echo(3))
            .expect(Ev::Text(HELLO.to_vec()))
            .fails(&[PROTOCOL_ERROR])
            .note(non_strict),
        Case::new("3.4")
            .send_chopped(after_echo(4).concat(), 1)
            .expect(Ev::Text(HELLO.to_vec()))
            .fails(&[PROTOCOL_ERROR])
            .note(non_strict),
        Case::new("3.5")
            .send(fr_rsv(5, op::BINARY, b"\x00\xff\xfe\xfd\xfc\xfb\x00\xff"))
            .fails(&[PROTOCOL_ERROR]),
        // Autobahn describes 3.6 as a ping but its code sends opcode 2; both are run.
        Case::new("3.6")
            .send(fr_rsv(6, op::BINARY, HELLO))
            .fails(&[PROTOCOL_ERROR]),
        Case::new("3.6 ping (suite extra: what 3.6 describes)")
            .send(fr_rsv(6, op::PING, HELLO))
            .fails(&[PROTOCOL_ERROR]),
        Case::new("3.7")
            .send(fr_rsv(7, op::CLOSE, b""))
            .fails(&[PROTOCOL_ERROR]),
    ]
}

#[test]
fn case_3_reserved_bits() {
    run_group("3", reserved_bits_cases());
}

// =====================================================================================
// 4 Opcodes
// =====================================================================================

/// 4.1.x (reserved data opcodes 3–7) or 4.2.x (reserved control opcodes 11–15).
fn reserved_opcode_cases(control: bool) -> Vec<Case> {
    let (sub, base) = if control { ("4.2", 11) } else { ("4.1", 3) };
    let id = |n: u8| format!("{sub}.{n}");
    let non_strict = "a server failing before echoing the valid first message is NON-STRICT";
    let then_reserved =
        |opcode: u8, payload: &[u8]| [text(HELLO), fr(true, opcode, payload), ping(b"")].concat();
    vec![
        Case::new(id(1))
            .send(fr(true, base, b""))
            .fails(&[PROTOCOL_ERROR]),
        Case::new(id(2))
            .send(fr(true, base + 1, b"reserved opcode payload"))
            .fails(&[PROTOCOL_ERROR]),
        Case::new(id(3))
            .send(then_reserved(base + 2, b""))
            .expect(Ev::Text(HELLO.to_vec()))
            .fails(&[PROTOCOL_ERROR])
            .note(non_strict),
        Case::new(id(4))
            .send(then_reserved(base + 3, HELLO))
            .expect(Ev::Text(HELLO.to_vec()))
            .fails(&[PROTOCOL_ERROR])
            .note(non_strict),
        Case::new(id(5))
            .send_chopped(then_reserved(base + 4, HELLO), 1)
            .expect(Ev::Text(HELLO.to_vec()))
            .fails(&[PROTOCOL_ERROR])
            .note(non_strict),
    ]
}

#[test]
fn case_4_1_reserved_data_opcodes() {
    run_group("4.1", reserved_opcode_cases(false));
}

#[test]
fn case_4_2_reserved_control_opcodes() {
    run_group("4.2", reserved_opcode_cases(true));
}

// =====================================================================================
// 5 Fragmentation
// =====================================================================================

/// How a case's frames go out: "in one chop", "frame-wise chops", "octet-wise chops".
#[derive(Clone, Copy)]
enum Chops {
    One,
    Frames,
    Octets,
}

fn send_as(case: Case, frames: Vec<Vec<u8>>, chops: Chops) -> Case {
    match chops {
        Chops::One => case.send(frames.concat()),
        Chops::Frames => case.send_frames(frames),
        Chops::Octets => case.send_chopped(frames.concat(), 1),
    }
}

fn fragmentation_cases() -> Vec<Case> {
    let f = |i: u8| format!("fragment{i}").into_bytes();
    let two_fragments = || {
        vec![
            fr(false, op::TEXT, &f(1)),
            fr(true, op::CONTINUATION, &f(2)),
        ]
    };
    let with_ping = || {
        vec![
            fr(false, op::TEXT, &f(1)),
            ping(b"ping payload"),
            fr(true, op::CONTINUATION, &f(2)),
        ]
    };
    let nothing_to_continue = |fin: bool| {
        vec![
            fr(fin, op::CONTINUATION, b"non-continuation payload"),
            text(HELLO),
        ]
    };
    let joined12 = [f(1), f(2)].concat();
    let mut cases = vec![
        Case::new("5.1")
            .send(
                [
                    fr(false, op::PING, &f(1)),
                    fr(true, op::CONTINUATION, &f(2)),
                ]
                .concat(),
            )
            .fails(&[PROTOCOL_ERROR]),
        Case::new("5.2")
            .send(
                [
                    fr(false, op::PONG, &f(1)),
                    fr(true, op::CONTINUATION, &f(2)),
                ]
                .concat(),
            )
            .fails(&[PROTOCOL_ERROR]),
    ];
    for (n, chops) in [(3, Chops::One), (4, Chops::Frames), (5, Chops::Octets)] {
        cases.push(
            send_as(Case::new(format!("5.{n}")), two_fragments(), chops)
                .expect(Ev::Text(joined12.clone())),
        );
    }
    for (n, chops) in [(6, Chops::One), (7, Chops::Frames), (8, Chops::Octets)] {
        cases.push(
            send_as(Case::new(format!("5.{n}")), with_ping(), chops)
                .expect(Ev::Pong(b"ping payload".to_vec()))
                .expect(Ev::Text(joined12.clone())),
        );
    }
    for (n, fin, chops) in [
        (9, true, Chops::One),
        (10, true, Chops::Frames),
        (11, true, Chops::Octets),
        (12, false, Chops::One),
        (13, false, Chops::Frames),
        (14, false, Chops::Octets),
    ] {
        cases.push(
            send_as(Case::new(format!("5.{n}")), nothing_to_continue(fin), chops)
                .fails(&[PROTOCOL_ERROR]),
        );
    }
    cases.push(
        Case::new("5.15")
            .send(
                [
                    fr(false, op::TEXT, &f(1)),
                    fr(true, op::CONTINUATION, &f(2)),
                    fr(false, op::CONTINUATION, &f(3)),
                    fr(true, op::TEXT, &f(4)),
                ]
                .concat(),
            )
            .expect(Ev::Text(joined12.clone()))
            .fails(&[PROTOCOL_ERROR])
            .note("a server failing before echoing the valid first message is NON-STRICT"),
    );
    for (n, first_fin) in [(16, false), (17, true)] {
        let once = [
            fr(first_fin, op::CONTINUATION, &f(1)),
            fr(false, op::TEXT, &f(2)),
            fr(true, op::CONTINUATION, &f(3)),
        ]
        .concat();
        cases.push(
            Case::new(format!("5.{n}"))
                .send([once.clone(), once].concat())
                .fails(&[PROTOCOL_ERROR]),
        );
    }
    cases.push(
        Case::new("5.18")
            .send([fr(false, op::TEXT, &f(1)), fr(true, op::TEXT, &f(2))].concat())
            .fails(&[PROTOCOL_ERROR]),
    );
    // 5.19 / 5.20: the first pong must come back before the message is complete; we
    // send the second half only once it has (Autobahn waits one second instead).
    for (n, chops) in [(19, Chops::One), (20, Chops::Frames)] {
        let part1 = vec![
            fr(false, op::TEXT, &f(1)),
            fr(false, op::CONTINUATION, &f(2)),
            ping(b"pongme 1!"),
        ];
        let part2 = vec![
            fr(false, op::CONTINUATION, &f(3)),
            fr(false, op::CONTINUATION, &f(4)),
            ping(b"pongme 2!"),
            fr(true, op::CONTINUATION, &f(5)),
        ];
        let case = send_as(Case::new(format!("5.{n}")), part1, chops)
            .expect(Ev::Pong(b"pongme 1!".to_vec()));
        cases.push(
            send_as(case, part2, chops)
                .expect(Ev::Pong(b"pongme 2!".to_vec()))
                .expect(Ev::Text((1..=5).flat_map(f).collect())),
        );
    }
    cases
}

#[test]
fn case_5_fragmentation() {
    run_group("5", fragmentation_cases());
}

// =====================================================================================
// 6 UTF-8 handling
// =====================================================================================

/// A text message split into frames of `size` payload bytes, all sent in one chop.
fn text_in_fragments(payload: &[u8], size: usize) -> Vec<u8> {
    fragmented(false, payload, size)
}

fn utf8_fragment_cases() -> Vec<Case> {
    let hello_utf8 = "Hello-µ@ßöäüàá-UTF-8!!".as_bytes();
    let (p1, p2) = ("Hello-µ@ßöä".as_bytes(), "üàá-UTF-8!!".as_bytes());
    let empty_frags = |middle: &[u8]| {
        [
            fr(false, op::TEXT, b""),
            fr(false, op::CONTINUATION, middle),
            fr(true, op::CONTINUATION, b""),
        ]
        .concat()
    };
    vec![
        // 6.1 valid UTF-8 with zero payload fragments
        Case::new("6.1.1").send(text(b"")).expect(Ev::Text(vec![])),
        Case::new("6.1.2")
            .send(empty_frags(b""))
            .expect(Ev::Text(vec![])),
        Case::new("6.1.3")
            .send(empty_frags(b"middle frame payload"))
            .expect(Ev::Text(b"middle frame payload".to_vec())),
        // 6.2 valid UTF-8: unfragmented, fragmented on / within code points
        Case::new("6.2.1")
            .send(text(hello_utf8))
            .expect(Ev::Text(hello_utf8.to_vec())),
        Case::new("6.2.2")
            .send([fr(false, op::TEXT, p1), fr(true, op::CONTINUATION, p2)].concat())
            .expect(Ev::Text([p1, p2].concat())),
        Case::new("6.2.3")
            .send(text_in_fragments(hello_utf8, 1))
            .expect(Ev::Text(hello_utf8.to_vec())),
        Case::new("6.2.4")
            .send(text_in_fragments(KOSME, 1))
            .expect(Ev::Text(KOSME.to_vec())),
        // 6.3 invalid UTF-8, differently fragmented
        Case::new("6.3.1")
            .send(text(KOSME_SURROGATE_EDITED))
            .fails(&[INVALID_PAYLOAD]),
        Case::new("6.3.2")
            .send(text_in_fragments(KOSME_SURROGATE_EDITED, 1))
            .fails(&[INVALID_PAYLOAD]),
    ]
}

#[test]
fn case_6_1_to_6_3_utf8_fragments() {
    run_group("6.1-6.3", utf8_fragment_cases());
}

/// 6.4.x: fail fast on invalid UTF-8, in the strict form: the part after the invalid
/// byte is never sent, so the close must come without it.
fn utf8_fail_fast_cases() -> Vec<Case> {
    // κόσμε + F4 90 80 80 (U+110000, out of range: invalid at its 2nd byte) + "edited".
    let part1 = KOSME; // 11 bytes
    let part2: &[u8] = b"\xf4\x90\x80\x80";
    let part3: &[u8] = b"edited";
    let whole = [part1, part2, part3].concat();
    let strict = "strict fail-fast: the remainder of the message is never sent; a server that \
                  fails only after the whole message arrived is NON-STRICT";
    // 6.4.3 / 6.4.4: one frame for the whole payload, sent in chops.
    let one_frame = raw::frame(true, 0, op::TEXT, &whole, true);
    let header_len = one_frame.len() - whole.len();
    let probe: &[u8] = b"still accepted?";
    vec![
        Case::new("6.4.1")
            .send(fr(false, op::TEXT, part1))
            .send(ping(probe))
            .expect(Ev::Pong(probe.to_vec()))
            .send(fr(false, op::CONTINUATION, part2))
            .fails(&[INVALID_PAYLOAD])
            .note(strict),
        Case::new("6.4.2")
            .send(fr(false, op::TEXT, &whole[..12]))
            .send(ping(probe))
            .expect(Ev::Pong(probe.to_vec()))
            .send(fr(false, op::CONTINUATION, &whole[12..13]))
            .fails(&[INVALID_PAYLOAD])
            .note(strict),
        Case::new("6.4.3")
            .send(one_frame[..header_len + 11].to_vec())
            .quiet("the invalid chop was sent")
            .send(one_frame[header_len + 11..header_len + 15].to_vec())
            .fails(&[INVALID_PAYLOAD])
            .note(strict),
        Case::new("6.4.4")
            .send(one_frame[..header_len + 12].to_vec())
            .quiet("the invalid chop was sent")
            .send(one_frame[header_len + 12..header_len + 13].to_vec())
            .fails(&[INVALID_PAYLOAD])
            .note(strict),
    ]
}

#[test]
fn case_6_4_utf8_fail_fast() {
    run_group("6.4", utf8_fail_fast_cases());
}

/// One entry of `conformance/utf8_sequences.txt`.
struct Utf8Entry {
    id: String,
    valid: bool,
    bytes: Vec<u8>,
}

fn parse_hex(hex: &str) -> Vec<u8> {
    assert!(hex.len() % 2 == 0, "odd hex length in {hex:?}");
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex digits"))
        .collect()
}

fn utf8_table() -> Vec<Utf8Entry> {
    UTF8_TABLE
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|line| {
            let mut parts = line.split_whitespace();
            let (id, validity) = (parts.next(), parts.next());
            let hex = parts.next().unwrap_or("");
            let valid = match validity {
                Some("valid") => true,
                Some("invalid") => false,
                _ => panic!("bad line in utf8_sequences.txt: {line:?}"),
            };
            Utf8Entry {
                id: id.unwrap_or_default().to_string(),
                valid,
                bytes: parse_hex(hex),
            }
        })
        .collect()
}

/// The data file must match Autobahn's enumeration: ids in order, group sizes, and each
/// validity flag agreeing with an independent UTF-8 decoder.
#[test]
fn utf8_table_matches_autobahn_shape() {
    let table = utf8_table();
    let sizes = [5, 11, 4, 2, 4, 3, 5, 8, 5, 10, 1, 3, 5, 5, 5, 7, 8, 34, 7];
    let mut expected_ids = Vec::new();
    for (g, &n) in sizes.iter().enumerate() {
        expected_ids.extend((1..=n).map(|j| format!("6.{}.{j}", g + 5)));
    }
    let ids: Vec<&str> = table.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids, expected_ids, "case ids of utf8_sequences.txt");
    for e in &table {
        assert_eq!(
            std::str::from_utf8(&e.bytes).is_ok(),
            e.valid,
            "case {}: validity flag disagrees with the payload {}",
            e.id,
            raw::preview(&e.bytes)
        );
    }
}

/// 6.5.1–6.23.7: one single-frame text message each; valid ones are echoed, invalid
/// ones fail the connection with 1007 (the server must close: Autobahn's
/// `closedByWrongEndpointIsFatal`).
#[test]
fn case_6_5_to_6_23_utf8_sequences() {
    run_group(
        "6.5-6.23",
        utf8_table().into_iter().map(|e| {
            let case = Case::new(e.id).send(text(&e.bytes));
            if e.valid {
                case.expect(Ev::Text(e.bytes))
            } else {
                case.fails(&[INVALID_PAYLOAD])
            }
        }),
    );
}

// =====================================================================================
// 7 Close handling
// =====================================================================================

fn basic_close_cases() -> Vec<Case> {
    let hello_world: &[u8] = b"Hello World!";
    let big = repeat_to(b"BAsd7&jh23", 256 * 1024);
    vec![
        Case::new("7.1.1")
            .send(text(hello_world))
            .expect(Ev::Text(hello_world.to_vec())),
        Case::new("7.1.2")
            .send([close(NORMAL, b""), fr(true, op::CLOSE, b"")].concat())
            .close_sent(&[NORMAL], false),
        Case::new("7.1.3")
            .send([close(NORMAL, b""), ping(b"")].concat())
            .close_sent(&[NORMAL], false),
        Case::new("7.1.4")
            .send([close(NORMAL, b""), text(hello_world)].concat())
            .close_sent(&[NORMAL], false),
        Case::new("7.1.5")
            .send(
                [
                    fr(false, op::TEXT, b"fragment1"),
                    close(NORMAL, b""),
                    fr(true, op::CONTINUATION, b"fragment2"),
                ]
                .concat(),
            )
            .close_sent(&[NORMAL], false),
        // Informational in Autobahn; this suite demands its "OK" outcome.
        Case::new("7.1.6")
            .send([text(&big), text(hello_world), close(NORMAL, b""), ping(b"")].concat())
            .expect(Ev::Text(big.clone()))
            .expect(Ev::Text(hello_world.to_vec()))
            .close_sent(&[NORMAL], false),
    ]
}

#[test]
fn case_7_1_basic_close() {
    run_group("7.1", basic_close_cases());
}

fn close_length_cases() -> Vec<Case> {
    vec![
        // An empty close: the answer may carry 1000 or no code at all.
        Case::new("7.3.1")
            .send(fr(true, op::CLOSE, b""))
            .close_sent(&[NORMAL], true),
        Case::new("7.3.2")
            .send(fr(true, op::CLOSE, b"a"))
            .close_sent(&[PROTOCOL_ERROR], false),
        Case::new("7.3.3")
            .send(close(NORMAL, b""))
            .close_sent(&[NORMAL], false),
        Case::new("7.3.4")
            .send(close(NORMAL, b"Hello World!"))
            .close_sent(&[NORMAL], false),
        Case::new("7.3.5")
            .send(close(NORMAL, &[b'*'; 123]))
            .close_sent(&[NORMAL], false),
        // 2 + 124 = 126 bytes: too long for a control frame.
        Case::new("7.3.6")
            .send(close(NORMAL, &[b'*'; 124]))
            .close_sent(&[PROTOCOL_ERROR], false),
    ]
}

#[test]
fn case_7_3_close_payload_length() {
    run_group("7.3", close_length_cases());
}

#[test]
fn case_7_5_close_reason_invalid_utf8() {
    run_group(
        "7.5",
        [Case::new("7.5.1")
            .send(close(NORMAL, KOSME_SURROGATE_EDITED))
            .close_sent(&[PROTOCOL_ERROR, INVALID_PAYLOAD], false)],
    );
}

/// 7.7.1–7.7.13: valid codes; the server answers with 1000 or echoes the code.
const VALID_CLOSE_CODES: [u16; 13] = [
    1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 3999, 4000, 4999,
];

#[test]
fn case_7_7_valid_close_codes() {
    run_group(
        "7.7",
        VALID_CLOSE_CODES.iter().enumerate().map(|(i, &code)| {
            Case::new(format!("7.7.{}", i + 1))
                .send(close(code, b""))
                .close_sent(&[NORMAL, code], false)
        }),
    );
}

/// 7.9.1–7.9.13: invalid codes, answered with 1002. This is the list (and numbering)
/// of Autobahn releases before 1012 and 1013 were dropped from it; newer releases
/// test the other eleven as 7.9.1–7.9.11. This project treats 1012–1016 as invalid.
const INVALID_CLOSE_CODES: [u16; 13] = [
    0, 999, 1004, 1005, 1006, 1012, 1013, 1014, 1015, 1016, 1100, 2000, 2999,
];

#[test]
fn case_7_9_invalid_close_codes() {
    run_group(
        "7.9",
        INVALID_CLOSE_CODES.iter().enumerate().map(|(i, &code)| {
            Case::new(format!("7.9.{} (code {code})", i + 1))
                .send(close(code, b""))
                .close_sent(&[PROTOCOL_ERROR], false)
        }),
    );
}

/// 7.13.1 / 7.13.2: codes 5000 and 65535. Informational in Autobahn; here the answer
/// must carry one of the codes Autobahn lists (1000, the code itself, or 1002).
#[test]
fn case_7_13_out_of_range_close_codes() {
    run_group(
        "7.13",
        [(1, 5000u16), (2, 65535)].map(|(n, code)| {
            Case::new(format!("7.13.{n}"))
                .send(close(code, b""))
                .close_sent(&[NORMAL, code, PROTOCOL_ERROR], false)
        }),
    );
}

// =====================================================================================
// 9 Limits/performance (durations are printed, never asserted)
// =====================================================================================

const KIB: usize = 1024;
const MIB: usize = 1024 * 1024;
const TEXT_PATTERN: &[u8] = b"BAsd7&jh23";
const BINARY_PATTERN: &[u8] = b"\x00\xfe\x23\xfa\xf0";

/// 9.1.x / 9.2.x: one frame of 64 KiB … 16 MiB.
fn large_message_cases(binary: bool) -> impl Iterator<Item = Case> {
    let sub = if binary { "9.2" } else { "9.1" };
    let pattern = if binary { BINARY_PATTERN } else { TEXT_PATTERN };
    [64 * KIB, 256 * KIB, MIB, 4 * MIB, 8 * MIB, 16 * MIB]
        .into_iter()
        .enumerate()
        .map(move |(i, len)| {
            let payload = repeat_to(pattern, len);
            Case::new(format!("{sub}.{}", i + 1))
                .send(data(binary, &payload))
                .expect(echo(binary, &payload))
                .timed()
        })
}

#[test]
fn case_9_1_large_text_messages() {
    run_group("9.1", large_message_cases(false));
}

#[test]
fn case_9_2_large_binary_messages() {
    run_group("9.2", large_message_cases(true));
}

/// 9.3.x / 9.4.x: a 4 MiB message in fragments of 64 B … 4 MiB.
fn fragmented_message_cases(binary: bool) -> impl Iterator<Item = Case> {
    let sub = if binary { "9.4" } else { "9.3" };
    let fill = if binary { 0xFE } else { b'*' };
    [
        64,
        256,
        KIB,
        4 * KIB,
        16 * KIB,
        64 * KIB,
        256 * KIB,
        MIB,
        4 * MIB,
    ]
    .into_iter()
    .enumerate()
    .map(move |(i, size)| {
        let payload = vec![fill; 4 * MIB];
        Case::new(format!("{sub}.{}", i + 1))
            .send(fragmented(binary, &payload, size))
            .expect(echo(binary, &payload))
            .timed()
    })
}

#[test]
fn case_9_3_fragmented_text_messages() {
    run_group("9.3", fragmented_message_cases(false));
}

#[test]
fn case_9_4_fragmented_binary_messages() {
    run_group("9.4", fragmented_message_cases(true));
}

/// 9.5.x / 9.6.x: a 1 MiB message in one frame, written in chops of 64 … 2048 bytes.
fn chopped_message_cases(binary: bool) -> impl Iterator<Item = Case> {
    let sub = if binary { "9.6" } else { "9.5" };
    let pattern = if binary { BINARY_PATTERN } else { TEXT_PATTERN };
    [64, 128, 256, 512, 1024, 2048]
        .into_iter()
        .enumerate()
        .map(move |(i, chop)| {
            let payload = repeat_to(pattern, MIB);
            Case::new(format!("{sub}.{}", i + 1))
                .send_chopped_fast(data(binary, &payload), chop)
                .expect(echo(binary, &payload))
                .timed()
        })
}

#[test]
fn case_9_5_chopped_text_messages() {
    run_group("9.5", chopped_message_cases(false));
}

#[test]
fn case_9_6_chopped_binary_messages() {
    run_group("9.6", chopped_message_cases(true));
}

/// 9.7.x / 9.8.x: 1000 round trips of 0 … 4096-byte messages, one at a time.
fn round_trip_cases(binary: bool) -> impl Iterator<Item = Case> {
    let sub = if binary { "9.8" } else { "9.7" };
    let fill = if binary { 0xFE } else { b'*' };
    [0, 16, 64, 256, 1024, 4096]
        .into_iter()
        .enumerate()
        .map(move |(i, len)| {
            let payload = vec![fill; len];
            let frame = data(binary, &payload);
            (0..1000).fold(Case::new(format!("{sub}.{}", i + 1)).timed(), |case, _| {
                case.send(frame.clone()).expect(echo(binary, &payload))
            })
        })
}

#[test]
fn case_9_7_text_round_trips() {
    run_group("9.7", round_trip_cases(false));
}

#[test]
fn case_9_8_binary_round_trips() {
    run_group("9.8", round_trip_cases(true));
}

// =====================================================================================
// 10 Misc
// =====================================================================================

/// 10.1.1: 65536 bytes of text auto-fragmented into 1300-byte frames (one text frame,
/// 50 continuations, the last one 536 bytes).
#[test]
fn case_10_1_auto_fragmentation() {
    let payload = vec![b'*'; 65536];
    let frames = fragmented(false, &payload, 1300);
    // Every frame has a 16-bit length and a mask: 8 header bytes each.
    assert_eq!(
        frames.len(),
        payload.len() + 51 * 8,
        "10.1.1 must send 51 frames"
    );
    run_group(
        "10.1",
        [Case::new("10.1.1")
            .send(frames)
            .expect(Ev::Text(payload))
            .timed()],
    );
}

// =====================================================================================
// Self-tests of the verdict, against scripted fake servers (no emberws involved)
// =====================================================================================

/// A one-connection fake server: it completes the opening handshake, then runs
/// `script` on the socket. Frames it writes are unmasked, as a server's must be.
fn fake_server(
    script: impl FnOnce(&mut TcpStream) + Send + 'static,
) -> (SocketAddr, thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a fake server");
    let addr = listener.local_addr().expect("fake server address");
    let handle = thread::spawn(move || {
        let (mut sock, _) = listener.accept().expect("accept");
        sock.set_read_timeout(Some(raw::IO_TIMEOUT))
            .expect("timeout");
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            assert_eq!(sock.read(&mut byte).expect("read the request"), 1);
            head.push(byte[0]);
        }
        let head = String::from_utf8(head).expect("ASCII request");
        let key = head
            .lines()
            .find_map(|l| {
                let (name, value) = l.split_once(':')?;
                name.eq_ignore_ascii_case("sec-websocket-key")
                    .then(|| value.trim().to_string())
            })
            .expect("a Sec-WebSocket-Key");
        let response = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: {}\r\n\r\n",
            raw::accept_key(&key)
        );
        sock.write_all(response.as_bytes())
            .expect("write the response");
        script(&mut sock);
    });
    (addr, handle)
}

fn server_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    raw::frame(true, 0, opcode, payload, false)
}

/// Blocks until the client has sent something (its frames), and discards it.
fn await_client_bytes(sock: &mut TcpStream) {
    let mut buf = [0u8; 4096];
    let _ = sock.read(&mut buf);
}

/// Runs `case` against a fake server and returns the failure message, if any.
fn verdict_against(
    case: Case,
    script: impl FnOnce(&mut TcpStream) + Send + 'static,
) -> Option<String> {
    let (addr, server) = fake_server(script);
    let outcome = run_case(addr, case, Duration::from_millis(500));
    server.join().expect("the fake server panicked");
    outcome.err().map(|f| f.msg)
}

fn assert_fails_with(case_name: &str, outcome: Option<String>, needle: &str) {
    match outcome {
        Some(msg) => assert!(
            msg.contains(needle),
            "{case_name}: the failure should mention {needle:?}, got: {msg}"
        ),
        None => panic!("{case_name}: the verdict accepted a misbehaving server"),
    }
}

#[test]
fn verdict_accepts_a_well_behaved_server() {
    let outcome = verdict_against(
        Case::new("self-test")
            .send(text(HELLO))
            .expect(Ev::Text(HELLO.to_vec())),
        |sock| {
            await_client_bytes(sock);
            sock.write_all(&server_frame(op::TEXT, HELLO)).unwrap();
            await_client_bytes(sock); // our close
            let reply = server_frame(op::CLOSE, &raw::close_payload(NORMAL, b""));
            sock.write_all(&reply).unwrap();
        },
    );
    assert_eq!(outcome, None);
}

#[test]
fn verdict_rejects_a_server_that_leaves_tcp_open() {
    let outcome = verdict_against(Case::new("self-test"), |sock| {
        await_client_bytes(sock);
        let reply = server_frame(op::CLOSE, &raw::close_payload(NORMAL, b""));
        sock.write_all(&reply).unwrap();
        thread::sleep(Duration::from_millis(1500)); // keeps the connection open
    });
    assert_fails_with("lingering server", outcome, "FAILED BY CLIENT");
}

#[test]
fn verdict_rejects_a_wrong_close_code() {
    let outcome = verdict_against(
        Case::new("self-test")
            .send(fr_rsv(1, op::TEXT, HELLO))
            .fails(&[PROTOCOL_ERROR]),
        |sock| {
            await_client_bytes(sock);
            let close = server_frame(op::CLOSE, &raw::close_payload(NORMAL, b""));
            sock.write_all(&close).unwrap();
        },
    );
    assert_fails_with("wrong code", outcome, "server close code 1000");
}

#[test]
fn verdict_rejects_an_answer_after_a_protocol_violation() {
    // Like 3.2: the pong after the bad frame must not come.
    let outcome = verdict_against(
        Case::new("self-test")
            .send([text(HELLO), fr_rsv(2, op::TEXT, HELLO), ping(b"")].concat())
            .expect(Ev::Text(HELLO.to_vec()))
            .fails(&[PROTOCOL_ERROR]),
        |sock| {
            await_client_bytes(sock);
            let mut out = server_frame(op::TEXT, HELLO);
            out.extend(server_frame(op::PONG, b""));
            out.extend(server_frame(
                op::CLOSE,
                &raw::close_payload(PROTOCOL_ERROR, b""),
            ));
            sock.write_all(&out).unwrap();
        },
    );
    assert_fails_with("late pong", outcome, "unexpected pong");
}

#[test]
fn verdict_rejects_non_strict_failing_before_the_echo() {
    // Autobahn's NON-STRICT for 3.2: the valid first message was never echoed.
    let outcome = verdict_against(
        Case::new("self-test")
            .send([text(HELLO), fr_rsv(2, op::TEXT, HELLO)].concat())
            .expect(Ev::Text(HELLO.to_vec()))
            .fails(&[PROTOCOL_ERROR]),
        |sock| {
            await_client_bytes(sock);
            let close = server_frame(op::CLOSE, &raw::close_payload(PROTOCOL_ERROR, b""));
            sock.write_all(&close).unwrap();
        },
    );
    assert_fails_with("non-strict", outcome, "got close frame (code 1002");
}

#[test]
fn verdict_rejects_a_drop_without_close_frame() {
    let outcome = verdict_against(
        Case::new("self-test")
            .send(ping(&[0xFE; 126]))
            .fails(&[PROTOCOL_ERROR]),
        await_client_bytes,
    );
    assert_fails_with("silent drop", outcome, "without a close frame");
}

#[test]
fn verdict_rejects_an_early_reaction_in_a_quiet_window() {
    let outcome = verdict_against(
        Case::new("self-test")
            .send(text(HELLO))
            .quiet("the next part was sent")
            .fails(&[INVALID_PAYLOAD]),
        |sock| {
            await_client_bytes(sock);
            let close = server_frame(op::CLOSE, &raw::close_payload(INVALID_PAYLOAD, b""));
            sock.write_all(&close).unwrap();
        },
    );
    assert_fails_with(
        "early reaction",
        outcome,
        "reacted before the next part was sent",
    );
}

#[test]
fn verdict_rejects_a_masked_server_frame() {
    let outcome = verdict_against(
        Case::new("self-test")
            .send(ping(b"x"))
            .expect(Ev::Pong(b"x".to_vec())),
        |sock| {
            await_client_bytes(sock);
            sock.write_all(&raw::frame(true, 0, op::PONG, b"x", true))
                .unwrap();
        },
    );
    assert_fails_with("masked frame", outcome, "masked frame");
}

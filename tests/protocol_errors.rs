//! Answers to bad frames after a successful upgrade (DESIGN.md, "Answers to bad input").
//!
//! Every case opens a raw WebSocket connection, sends bytes built by hand, and asserts the
//! server's close frame code, that nothing else came before or after it, and that the server
//! then closes TCP (EOF). Every bad input has a bystander: a real client (tungstenite)
//! connected before the bad bytes are sent, which must still get an echo after they were
//! answered.
//!
//! Nothing here sleeps or asserts on timing: where a test claims the server answered before
//! the rest of a frame was sent, it simply reads the answer before sending the rest.

mod util;

use std::net::SocketAddr;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use emberws::{Config, Ctx, Decision, Handler, HttpRequest, Message as Msg};
use util::clients::{with_bystander, Bystander};
use util::raw::{self, op, Closed, Event, RawClient, IO_TIMEOUT};
use util::{spawn_server, Echo, TestServer};

// ---------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------

/// A raw client with the opening handshake done.
fn open(addr: SocketAddr) -> RawClient {
    RawClient::connect(addr).expect("opening handshake")
}

/// Reads the server's next frames: they must be exactly one close frame with `code`, and
/// then the server must close TCP without sending anything more.
fn expect_close(client: &mut RawClient, code: u16, what: &str) {
    let (before, close) = client
        .read_until_close()
        .unwrap_or_else(|e| panic!("{what}: reading the server's answer failed: {e}"));
    assert!(
        before.is_empty(),
        "{what}: frames before the close: {before:?}"
    );
    match close {
        Event::Close { code: got, .. } => {
            assert_eq!(got, Some(code), "{what}: wrong close code")
        }
        other => panic!("{what}: expected a close frame with {code}, got {other:?}"),
    }
    expect_eof(client, what);
}

/// Asserts that the server closes TCP (orderly, with FIN) and sends nothing more.
fn expect_eof(client: &mut RawClient, what: &str) {
    match client.wait_for_eof(IO_TIMEOUT) {
        Ok(Closed::Eof) => {}
        Ok(Closed::Reset) => panic!("{what}: the server reset the connection instead of a FIN"),
        Err(e) => panic!("{what}: after its close frame: {e}"),
    }
}

/// Opens a connection, sends `bytes` in one write, and expects a close with `code`.
fn assert_fails_with(addr: SocketAddr, bytes: &[u8], code: u16, what: &str) {
    let mut client = open(addr);
    client
        .send(bytes)
        .unwrap_or_else(|e| panic!("{what}: send: {e}"));
    expect_close(&mut client, code, what);
}

/// Sends one masked text frame and asserts its echo.
fn assert_echoes(client: &mut RawClient, opcode: u8, payload: &[u8]) {
    client
        .send(&raw::client_frame(true, opcode, payload))
        .expect("send a frame");
    expect_message(client, opcode, payload);
}

/// Reads one event and asserts it is the message `payload`.
fn expect_message(client: &mut RawClient, opcode: u8, payload: &[u8]) {
    match client.read_event().expect("read the echo") {
        Event::Message {
            binary,
            payload: got,
        } if got == payload && binary == (opcode == op::BINARY) => {}
        other => panic!(
            "expected the echo of {}, got {other:?}",
            raw::preview(payload)
        ),
    }
}

/// A masked frame's header and masked payload, split before payload byte `at`.
fn split_frame(fin: bool, opcode: u8, payload: &[u8], at: usize) -> (Vec<u8>, Vec<u8>) {
    let bytes = raw::client_frame(fin, opcode, payload);
    let header_len = bytes.len() - payload.len();
    let (a, b) = bytes.split_at(header_len + at);
    (a.to_vec(), b.to_vec())
}

const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

// ---------------------------------------------------------------------------------
// Frame header rules: 1002
// ---------------------------------------------------------------------------------

#[test]
fn rejects_unmasked_client_frame_with_1002() {
    let server = spawn_server(Config::default(), Echo);
    with_bystander(server.addr, |addr| {
        let unmasked = raw::frame(true, 0, op::TEXT, b"not masked", false);
        assert_fails_with(addr, &unmasked, 1002, "unmasked text frame");
        let unmasked = raw::frame(true, 0, op::PING, b"", false);
        assert_fails_with(addr, &unmasked, 1002, "unmasked ping");
    });
}

#[test]
fn rejects_each_rsv_bit_with_1002() {
    let server = spawn_server(Config::default(), Echo);
    with_bystander(server.addr, |addr| {
        for rsv in [4, 2, 1] {
            let bytes = raw::frame(true, rsv, op::TEXT, b"rsv", true);
            assert_fails_with(addr, &bytes, 1002, &format!("RSV bits {rsv:03b}"));
        }
        let bytes = raw::frame(true, 4, op::PING, b"", true);
        assert_fails_with(addr, &bytes, 1002, "RSV1 on a ping");
    });
}

#[test]
fn rejects_reserved_opcodes_with_1002() {
    let server = spawn_server(Config::default(), Echo);
    with_bystander(server.addr, |addr| {
        for opcode in (0x3..=0x7).chain(0xB..=0xF) {
            let bytes = raw::frame(true, 0, opcode, b"reserved", true);
            assert_fails_with(addr, &bytes, 1002, &format!("opcode {opcode:#x}"));
        }
    });
}

#[test]
fn rejects_ping_with_126_byte_payload_with_1002() {
    let server = spawn_server(Config::default(), Echo);
    with_bystander(server.addr, |addr| {
        let bytes = raw::frame(true, 0, op::PING, &[b'p'; 126], true);
        assert_eq!(bytes[1] & 0x7F, 126, "16-bit length encoding");
        assert_fails_with(addr, &bytes, 1002, "126-byte ping");
        let bytes = raw::frame(
            true,
            0,
            op::CLOSE,
            &raw::close_payload(1000, &[b'r'; 124]),
            true,
        );
        assert_fails_with(addr, &bytes, 1002, "126-byte close");
    });
}

#[test]
fn rejects_fragmented_ping_with_1002() {
    let server = spawn_server(Config::default(), Echo);
    with_bystander(server.addr, |addr| {
        let bytes = raw::client_frame(false, op::PING, b"half");
        assert_fails_with(addr, &bytes, 1002, "ping with FIN=0");
    });
}

#[test]
fn rejects_continuation_without_start_with_1002() {
    let server = spawn_server(Config::default(), Echo);
    with_bystander(server.addr, |addr| {
        let bytes = raw::client_frame(true, op::CONTINUATION, b"orphan");
        assert_fails_with(addr, &bytes, 1002, "continuation first");
        // Also right after a complete message.
        let mut client = open(addr);
        assert_echoes(&mut client, op::TEXT, b"complete");
        client
            .send(&raw::client_frame(false, op::CONTINUATION, b"orphan"))
            .unwrap();
        expect_close(&mut client, 1002, "continuation after a complete message");
    });
}

#[test]
fn rejects_new_data_frame_inside_fragmented_message_with_1002() {
    let server = spawn_server(Config::default(), Echo);
    with_bystander(server.addr, |addr| {
        for opcode in [op::TEXT, op::BINARY] {
            let mut bytes = raw::client_frame(false, op::TEXT, b"first half");
            bytes.extend(raw::client_frame(true, opcode, b"interloper"));
            assert_fails_with(
                addr,
                &bytes,
                1002,
                &format!("opcode {opcode} inside a message"),
            );
        }
    });
}

#[test]
fn rejects_64_bit_length_with_msb_set_with_1002() {
    let server = spawn_server(Config::default(), Echo);
    with_bystander(server.addr, |addr| {
        for len in [1u64 << 63, u64::MAX] {
            let header = raw::frame_header(true, 0, op::BINARY, len, Some(MASK));
            assert_eq!(header.len(), 14);
            // The header alone must be enough for the server to decide.
            assert_fails_with(addr, &header, 1002, &format!("length {len:#x}"));
        }
    });
}

// ---------------------------------------------------------------------------------
// Close frames
// ---------------------------------------------------------------------------------

#[test]
fn rejects_close_frame_with_1_byte_payload_with_1002() {
    let server = spawn_server(Config::default(), Echo);
    with_bystander(server.addr, |addr| {
        let bytes = raw::client_frame(true, op::CLOSE, &[0x03]);
        assert_fails_with(addr, &bytes, 1002, "1-byte close payload");
    });
}

#[test]
fn rejects_invalid_close_codes_with_1002() {
    let server = spawn_server(Config::default(), Echo);
    with_bystander(server.addr, |addr| {
        for code in [0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, u16::MAX] {
            let mut client = open(addr);
            client.send_close(code, b"").unwrap();
            expect_close(&mut client, 1002, &format!("close code {code}"));
        }
    });
}

#[test]
fn echoes_valid_close_codes() {
    let server = spawn_server(Config::default(), Echo);
    with_bystander(server.addr, |addr| {
        for code in [1000, 1001, 1003, 1007, 1011, 3000, 4000, 4999] {
            let mut client = open(addr);
            client.send_close(code, "fin ✓".as_bytes()).unwrap();
            expect_close(&mut client, code, &format!("close code {code}"));
        }
        // An empty close frame is answered, also without a code.
        let mut client = open(addr);
        client
            .send(&raw::client_frame(true, op::CLOSE, b""))
            .unwrap();
        let (before, close) = client.read_until_close().unwrap();
        assert!(before.is_empty(), "{before:?}");
        assert!(
            matches!(close, Event::Close { .. }),
            "empty close: got {close:?}"
        );
        expect_eof(&mut client, "empty close");
    });
}

#[test]
fn rejects_invalid_utf8_in_close_reason_with_1007() {
    let server = spawn_server(Config::default(), Echo);
    with_bystander(server.addr, |addr| {
        for reason in [&b"\xFF"[..], b"ok \xC0\x80", b"cut \xE2\x82"] {
            let mut client = open(addr);
            client.send_close(1000, reason).unwrap();
            expect_close(
                &mut client,
                1007,
                &format!("close reason {}", raw::preview(reason)),
            );
        }
    });
}

// ---------------------------------------------------------------------------------
// UTF-8: 1007, as soon as the first invalid byte is seen
// ---------------------------------------------------------------------------------

#[test]
fn rejects_invalid_utf8_in_single_text_frame_with_1007() {
    let server = spawn_server(Config::default(), Echo);
    with_bystander(server.addr, |addr| {
        let cases: [&[u8]; 6] = [
            b"\xFF",
            b"abc\xC0\xAFdef",
            b"surrogate \xED\xA0\x80",
            b"too high \xF4\x90\x80\x80",
            b"ends inside a character \xE2\x82",
            b"\xCE\xBA\xE1\xBD\xB9\xCF\x83\xCE\xBC\xCE\xB5\xED\xA0\x80edited",
        ];
        for payload in cases {
            let bytes = raw::client_frame(true, op::TEXT, payload);
            assert_fails_with(addr, &bytes, 1007, &raw::preview(payload));
        }
    });
}

#[test]
fn rejects_invalid_utf8_in_fragmented_text_with_1007() {
    let server = spawn_server(Config::default(), Echo);
    with_bystander(server.addr, |addr| {
        // Invalid in the last fragment.
        let mut bytes = raw::client_frame(false, op::TEXT, b"valid start ");
        bytes.extend(raw::client_frame(true, op::CONTINUATION, b"\xC0\x80"));
        assert_fails_with(addr, &bytes, 1007, "invalid last fragment");

        // A character split across fragments whose second part does not fit.
        let mut bytes = raw::client_frame(false, op::TEXT, b"euro \xE2\x82");
        bytes.extend(raw::client_frame(true, op::CONTINUATION, b"\x28"));
        assert_fails_with(addr, &bytes, 1007, "bad continuation byte across fragments");

        // The message ends inside a character.
        let mut bytes = raw::client_frame(false, op::TEXT, b"ok ");
        bytes.extend(raw::client_frame(true, op::CONTINUATION, b"\xF0\x9F\x98"));
        assert_fails_with(addr, &bytes, 1007, "message ends inside a character");

        // Invalid in the first fragment: the close comes before the message is finished.
        let mut client = open(addr);
        client
            .send(&raw::client_frame(false, op::TEXT, b"bad \xFF start"))
            .unwrap();
        expect_close_before_rest(
            &mut client,
            &raw::client_frame(true, op::CONTINUATION, b" never needed"),
            "invalid first fragment",
        );
    });
}

/// Reads the close frame (1007) that must come before `rest` is sent, then sends `rest`
/// (which may fail: the server may have stopped reading) and expects EOF.
fn expect_close_before_rest(client: &mut RawClient, rest: &[u8], what: &str) {
    let (before, close) = client
        .read_until_close()
        .unwrap_or_else(|e| panic!("{what}: no close before the rest was sent: {e}"));
    assert!(before.is_empty(), "{what}: {before:?}");
    match close {
        Event::Close { code, .. } => assert_eq!(code, Some(1007), "{what}"),
        other => panic!("{what}: expected a close frame, got {other:?}"),
    }
    let _ = client.send(rest);
    expect_eof(client, what);
}

#[test]
fn rejects_invalid_utf8_at_the_first_invalid_byte_of_a_split_frame_with_1007() {
    let server = spawn_server(Config::default(), Echo);
    with_bystander(server.addr, |addr| {
        // Each prefix is already invalid at its last byte; 200 more valid bytes follow in
        // the same frame, sent only after the close frame was read.
        let prefixes: [&[u8]; 7] = [
            b"\xFF",
            b"abc \xC0",
            b"abc \xC1",
            b"abc \xE0\x80",
            b"abc \xED\xA0",
            b"abc \xF0\x80",
            b"abc \xF4\x90",
        ];
        for prefix in prefixes {
            let mut payload = prefix.to_vec();
            payload.extend(std::iter::repeat_n(b'a', 200));
            let (first, rest) = split_frame(true, op::TEXT, &payload, prefix.len());
            let mut client = open(addr);
            client.send(&first).unwrap();
            expect_close_before_rest(&mut client, &rest, &raw::preview(prefix));
        }
    });
}

// ---------------------------------------------------------------------------------
// Message size: 1009, decided before buffering
// ---------------------------------------------------------------------------------

const LIMIT: usize = 1000;

#[test]
fn rejects_frame_over_max_message_size_from_its_header_with_1009() {
    let server = spawn_server(Config::default().max_message_size(LIMIT), Echo);
    with_bystander(server.addr, |addr| {
        for (opcode, len) in [(op::BINARY, LIMIT + 1), (op::TEXT, 1 << 20)] {
            let header = raw::frame_header(true, 0, opcode, len as u64, Some(MASK));
            let mut client = open(addr);
            // Only the header: the server must decide from it, before any payload.
            client.send(&header).unwrap();
            let what = format!("header of a {len}-byte frame");
            let (before, close) = client
                .read_until_close()
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            assert!(before.is_empty(), "{what}: {before:?}");
            assert!(
                matches!(
                    close,
                    Event::Close {
                        code: Some(1009),
                        ..
                    }
                ),
                "{what}: got {close:?}"
            );
            expect_eof(&mut client, &what);
        }
    });
}

#[test]
fn rejects_fragments_summing_over_max_message_size_with_1009() {
    let server = spawn_server(Config::default().max_message_size(LIMIT), Echo);
    with_bystander(server.addr, |addr| {
        // 600 + 401: the second fragment's header is enough.
        let mut client = open(addr);
        let mut bytes = raw::client_frame(false, op::BINARY, &[1; 600]);
        bytes.extend(raw::frame_header(
            true,
            0,
            op::CONTINUATION,
            401,
            Some(MASK),
        ));
        client.send(&bytes).unwrap();
        expect_close(&mut client, 1009, "600 + 401 bytes");

        // Ten fragments of 100 reach the limit; one more byte passes it.
        let mut client = open(addr);
        let mut bytes = raw::client_frame(false, op::TEXT, &[b't'; 100]);
        for _ in 0..9 {
            bytes.extend(raw::client_frame(false, op::CONTINUATION, &[b't'; 100]));
        }
        bytes.extend(raw::frame_header(true, 0, op::CONTINUATION, 1, Some(MASK)));
        client.send(&bytes).unwrap();
        expect_close(&mut client, 1009, "10 × 100 + 1 bytes");

        // Many empty fragments do not count, but bytes do.
        let mut client = open(addr);
        let mut bytes = raw::client_frame(false, op::BINARY, &[]);
        for _ in 0..50 {
            bytes.extend(raw::client_frame(false, op::CONTINUATION, &[]));
        }
        bytes.extend(raw::client_frame(false, op::CONTINUATION, &[2; LIMIT]));
        bytes.extend(raw::frame_header(true, 0, op::CONTINUATION, 1, Some(MASK)));
        client.send(&bytes).unwrap();
        expect_close(&mut client, 1009, "empty fragments, then 1000 + 1 bytes");
    });
}

#[test]
fn echoes_a_message_of_exactly_max_message_size() {
    let server = spawn_server(Config::default().max_message_size(LIMIT), Echo);
    with_bystander(server.addr, |addr| {
        let mut client = open(addr);
        let payload: Vec<u8> = (0..LIMIT).map(|i| (i % 251) as u8).collect();
        assert_echoes(&mut client, op::BINARY, &payload);
        let text = "é".repeat(LIMIT / 2);
        assert_echoes(&mut client, op::TEXT, text.as_bytes());

        // The same, in ten fragments with a ping among them.
        let mut bytes = Vec::new();
        for (i, part) in payload.chunks(100).enumerate() {
            let opcode = if i == 0 { op::BINARY } else { op::CONTINUATION };
            bytes.extend(raw::client_frame(i == 9, opcode, part));
            if i == 4 {
                bytes.extend(raw::client_frame(true, op::PING, b"mid"));
            }
        }
        client.send(&bytes).unwrap();
        assert_eq!(client.read_event().unwrap(), Event::Pong(b"mid".to_vec()));
        expect_message(&mut client, op::BINARY, &payload);
    });
}

// ---------------------------------------------------------------------------------
// After the close frame
// ---------------------------------------------------------------------------------

#[test]
fn ignores_everything_the_client_sends_after_a_protocol_error() {
    let server = spawn_server(Config::default(), Echo);
    with_bystander(server.addr, |addr| {
        // In the same write as the bad frame: no echo, no pong.
        let mut bytes = raw::frame(true, 0, op::TEXT, b"unmasked", false);
        bytes.extend(raw::client_frame(true, op::TEXT, b"echo me"));
        bytes.extend(raw::client_frame(true, op::PING, b"pong me"));
        bytes.extend(raw::client_frame(
            true,
            op::CLOSE,
            &raw::close_payload(1000, b""),
        ));
        assert_fails_with(addr, &bytes, 1002, "bad frame followed by good ones");

        // In later writes, after the close frame was read.
        let mut client = open(addr);
        client
            .send(&raw::frame(true, 0, op::BINARY, b"unmasked", false))
            .unwrap();
        let (before, close) = client.read_until_close().unwrap();
        assert!(before.is_empty(), "{before:?}");
        assert!(
            matches!(
                close,
                Event::Close {
                    code: Some(1002),
                    ..
                }
            ),
            "{close:?}"
        );
        // The server may already have stopped reading, so these writes may fail.
        let _ = client.send(&raw::client_frame(true, op::TEXT, b"echo me"));
        let _ = client.send(&raw::client_frame(true, op::PING, b"pong me"));
        let _ = client.send(&raw::client_frame(true, op::BINARY, &[0xAB; 5000]));
        let _ = client.send(&raw::client_frame(
            true,
            op::CLOSE,
            &raw::close_payload(1002, b""),
        ));
        expect_eof(&mut client, "after the close frame");
    });
}

#[test]
fn sends_pending_echo_then_close_and_nothing_after() {
    let server = spawn_server(Config::default(), Echo);
    with_bystander(server.addr, |addr| {
        let mut client = open(addr);
        let mut bytes = raw::client_frame(true, op::TEXT, b"before the error");
        bytes.extend(raw::frame(true, 2, op::TEXT, b"rsv2", true));
        bytes.extend(raw::client_frame(true, op::TEXT, b"after the error"));
        client.send(&bytes).unwrap();
        expect_message(&mut client, op::TEXT, b"before the error");
        expect_close(&mut client, 1002, "RSV2 after a good frame");
    });
}

/// Polls the server's counters until `connections_open` is `n` (the server sees a peer's
/// close asynchronously), failing after a generous deadline. Never sleeps: each poll is a
/// round trip through the server's loop.
fn wait_for_open_connections(server: &TestServer, n: u64, what: &str) {
    let deadline = Instant::now() + IO_TIMEOUT;
    loop {
        let open = server.handle.stats().expect("stats").connections_open;
        if open == n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: {open} connections still open after {} s, expected {n}",
            IO_TIMEOUT.as_secs()
        );
    }
}

/// Echoes, except that the text message `stall` blocks the loop until the test releases
/// it: a way to have a client's bytes and its FIN arrive together while the server is not
/// reading, without sleeping.
struct Staller {
    entered: mpsc::Sender<()>,
    release: mpsc::Receiver<()>,
}

impl Handler for Staller {
    type State = ();

    fn on_upgrade(&mut self, _req: &HttpRequest<'_>) -> Decision<()> {
        Decision::Accept(())
    }

    fn on_message(&mut self, ctx: &mut Ctx<'_>, _state: &mut (), msg: Msg<'_>) {
        if msg == Msg::Text("stall") {
            let _ = self.entered.send(());
            // Returns at once if the test ended (the sender is gone).
            let _ = self.release.recv();
        } else {
            ctx.send(msg);
        }
    }
}

/// The test's side of a [`Staller`] server.
struct LoopStall {
    entered: mpsc::Receiver<()>,
    release: mpsc::Sender<()>,
}

impl LoopStall {
    fn server(cfg: Config) -> (TestServer, LoopStall) {
        let (entered_tx, entered) = mpsc::channel();
        let (release, release_rx) = mpsc::channel();
        let handler = Staller {
            entered: entered_tx,
            release: release_rx,
        };
        (spawn_server(cfg, handler), LoopStall { entered, release })
    }

    /// Has `staller` (an open connection) block the loop; returns once it is blocked.
    fn stall(&self, staller: &mut RawClient) {
        staller
            .send(&raw::client_frame(true, op::TEXT, b"stall"))
            .unwrap();
        self.entered
            .recv_timeout(IO_TIMEOUT)
            .expect("the loop did not stall");
    }

    /// Lets the loop go on.
    fn release(&self) {
        self.release.send(()).expect("the server is gone");
    }
}

#[test]
fn releases_a_failed_connection_when_the_client_sends_more_and_closes_tcp() {
    // Timers longer than the wait below, so that only the client's FIN can end the
    // connection in time.
    let cfg = Config::default()
        .close_timeout(Duration::from_secs(40))
        .ping_interval(None);
    let (server, stall) = LoopStall::server(cfg);
    with_bystander(server.addr, |addr| {
        let mut staller = open(addr);
        let mut client = open(addr);
        client
            .send(&raw::frame(true, 0, op::TEXT, b"unmasked", false))
            .unwrap();
        expect_close(&mut client, 1002, "unmasked frame");
        // More bytes and the FIN right behind them, both there before the server reads.
        stall.stall(&mut staller);
        client
            .send(&raw::client_frame(true, op::TEXT, b"too late"))
            .unwrap();
        client.shutdown_write().unwrap();
        stall.release();
        // The bystander and the staller are left.
        wait_for_open_connections(&server, 2, "after the failed client's FIN");
        drop(client);
    });
}

#[test]
fn closes_tcp_when_the_client_ends_tcp_right_after_a_frame() {
    // No pings: only the client's FIN can end the connection.
    let (server, stall) = LoopStall::server(Config::default().ping_interval(None));
    with_bystander(server.addr, |addr| {
        let mut staller = open(addr);
        let mut client = open(addr);
        // A last message and the FIN right behind it, without a close frame, both there
        // before the server reads.
        stall.stall(&mut staller);
        client
            .send(&raw::client_frame(true, op::TEXT, b"last words"))
            .unwrap();
        client.shutdown_write().unwrap();
        stall.release();
        expect_message(&mut client, op::TEXT, b"last words");
        expect_eof(&mut client, "after the client's FIN");
        let stats = server.handle.stats().expect("stats");
        assert_eq!(stats.closes_with(1006), 1, "{}", stats.to_json());
    });
}

// ---------------------------------------------------------------------------------
// Many at once
// ---------------------------------------------------------------------------------

#[test]
fn many_concurrent_bad_clients_are_closed_and_counted() {
    const CLIENTS: usize = 20;
    const KINDS: [(u16, &str); 5] = [
        (1002, "unmasked frame"),
        (1007, "invalid UTF-8"),
        (1009, "too big"),
        (1002, "reserved opcode"),
        (1002, "invalid close code"),
    ];
    let server = spawn_server(Config::default().max_message_size(LIMIT), Echo);
    let addr = server.addr;
    let mut bystander = Bystander::connect(addr);

    // The bystander keeps echoing while the bad clients are being answered.
    bystander.assert_echoes_during(CLIENTS, move |i| {
        let (code, what) = KINDS[i % KINDS.len()];
        let bytes = match what {
            "unmasked frame" => raw::frame(true, 0, op::BINARY, b"x", false),
            "invalid UTF-8" => raw::client_frame(true, op::TEXT, b"bad \xFF"),
            "too big" => raw::frame_header(true, 0, op::BINARY, LIMIT as u64 + 1, Some(MASK)),
            "reserved opcode" => raw::client_frame(true, 0x3, b""),
            _ => raw::client_frame(true, op::CLOSE, &raw::close_payload(1005, b"")),
        };
        let mut client = open(addr);
        assert_echoes(&mut client, op::TEXT, format!("client {i}").as_bytes());
        client.send(&bytes).unwrap();
        expect_close(&mut client, code, what);
    });

    let stats = server.handle.stats().expect("stats");
    let per_kind = (CLIENTS / KINDS.len()) as u64;
    assert_eq!(stats.closes_with(1002), 3 * per_kind, "{}", stats.to_json());
    assert_eq!(stats.closes_with(1007), per_kind, "{}", stats.to_json());
    assert_eq!(stats.closes_with(1009), per_kind, "{}", stats.to_json());
    assert_eq!(
        stats.closes_with(1006),
        0,
        "a failed connection was also counted as lost: {}",
        stats.to_json()
    );
    assert_eq!(stats.accepted, CLIENTS as u64 + 1, "{}", stats.to_json());
}

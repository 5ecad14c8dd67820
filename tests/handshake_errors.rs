//! Answers to bad opening handshakes (DESIGN.md, "Answers to bad input"), over raw sockets.
//!
//! Every case sends bytes on a plain `TcpStream`, reads the whole HTTP response head, checks
//! the status line and the headers that status calls for, and then checks that the server
//! closes the connection (EOF after the body). Every bad input has a bystander: a real client
//! (tungstenite) connected before the bad bytes are sent, which must still get an echo after
//! they were answered.
//!
//! Nothing here sleeps or asserts on timing: every wait is a blocking read with a generous
//! timeout ([`IO_TIMEOUT`]).

mod util;

use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use emberws::{Config, Ctx, Decision, Handler, HttpRequest, Message as Msg};
use util::clients::{with_bystander, Bystander};
use util::raw::{self, op, Event, HttpResponse, RawClient, IO_TIMEOUT};
use util::{spawn_server, Echo};

// ---------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------

/// An HTTP request head, valid as an upgrade by default, with its parts easy to break.
#[derive(Clone, Debug)]
struct Req {
    line: String,
    headers: Vec<String>,
}

impl Req {
    /// A valid upgrade request for `/`.
    fn upgrade() -> Req {
        Req {
            line: "GET / HTTP/1.1".into(),
            headers: vec![
                "Host: 127.0.0.1".into(),
                "Upgrade: websocket".into(),
                "Connection: Upgrade".into(),
                format!("Sec-WebSocket-Key: {}", raw::random_key()),
                "Sec-WebSocket-Version: 13".into(),
            ],
        }
    }

    /// Replaces the request line.
    fn line(mut self, line: &str) -> Req {
        self.line = line.into();
        self
    }

    /// Drops every header named `name`.
    fn without(mut self, name: &str) -> Req {
        self.headers.retain(|h| !is_named(h, name));
        self
    }

    /// Replaces every header named `name` with one `name: value` line (at the end).
    fn set(self, name: &str, value: &str) -> Req {
        self.without(name).with(name, value)
    }

    /// Adds a `name: value` line (a duplicate if `name` is there already).
    fn with(self, name: &str, value: &str) -> Req {
        self.raw_line(&format!("{name}: {value}"))
    }

    /// Adds a header line exactly as given.
    fn raw_line(mut self, line: &str) -> Req {
        self.headers.push(line.into());
        self
    }

    /// Adds `n` distinct filler headers.
    fn with_fillers(mut self, n: usize) -> Req {
        for i in 0..n {
            self = self.with(&format!("X-Filler-{i}"), "x");
        }
        self
    }

    /// The `Sec-WebSocket-Key` value, if there is exactly one.
    fn key(&self) -> String {
        let keys: Vec<&str> = self
            .headers
            .iter()
            .filter(|h| is_named(h, "Sec-WebSocket-Key"))
            .filter_map(|h| h.split_once(':'))
            .map(|(_, v)| v.trim())
            .collect();
        assert_eq!(keys.len(), 1, "request without exactly one key: {self:?}");
        keys[0].to_string()
    }

    /// The head with CRLF line endings.
    fn bytes(&self) -> Vec<u8> {
        self.bytes_with_eol("\r\n")
    }

    /// The head with `eol` ending every line, the empty last one included.
    fn bytes_with_eol(&self, eol: &str) -> Vec<u8> {
        let mut out = format!("{}{eol}", self.line);
        for h in &self.headers {
            out.push_str(h);
            out.push_str(eol);
        }
        out.push_str(eol);
        out.into_bytes()
    }
}

fn is_named(line: &str, name: &str) -> bool {
    line.split_once(':')
        .is_some_and(|(n, _)| n.trim().eq_ignore_ascii_case(name))
}

/// A request, readable in a failure message (at most 300 characters).
fn show(request: &[u8]) -> String {
    let text = String::from_utf8_lossy(request);
    let shown: String = text.chars().take(300).collect();
    let more = if text.chars().count() > 300 {
        "…"
    } else {
        ""
    };
    format!("{shown:?}{more} ({} bytes)", request.len())
}

/// Reads the body after `response` and asserts that the server then closed the connection;
/// the body must match `Content-Length` when there is one.
fn assert_closed_after_body(response: &HttpResponse, mut stream: TcpStream) {
    let more = raw::read_to_eof(&mut stream, 1 << 20, IO_TIMEOUT).unwrap_or_else(|e| {
        panic!(
            "the server did not close the connection after its answer ({e}):\n{}",
            response.head
        )
    });
    let mut body = response.rest.clone();
    body.extend_from_slice(&more);
    if let Some(len) = response.header("Content-Length") {
        let len: usize = len.parse().expect("numeric Content-Length");
        assert_eq!(
            body.len(),
            len,
            "body length differs from Content-Length: {}",
            raw::preview(&body)
        );
    }
}

/// Like [`assert_closed_after_body`], for a response read by `client` (whose buffer may hold
/// the start of the body).
fn assert_client_closed_after_body(client: &RawClient, response: &HttpResponse) {
    let mut stream = client.stream().try_clone().expect("clone the stream");
    let more = raw::read_to_eof(&mut stream, 1 << 20, IO_TIMEOUT).unwrap_or_else(|e| {
        panic!(
            "the server did not close the connection after its answer ({e}):\n{}",
            response.head
        )
    });
    if let Some(len) = response.header("Content-Length") {
        let len: usize = len.parse().expect("numeric Content-Length");
        assert_eq!(
            client.buffered() + more.len(),
            len,
            "body length differs from Content-Length"
        );
    }
}

/// Sends `request` on a fresh connection, asserts the answer is `status`, and that the server
/// then closes the connection. Returns the response for header checks.
fn expect_refusal(addr: SocketAddr, request: &[u8], status: u16) -> HttpResponse {
    let (response, stream) = raw::http_request(addr, request)
        .unwrap_or_else(|e| panic!("no HTTP response to {}: {e}", show(request)));
    assert_eq!(
        response.status,
        status,
        "wrong status for {}; response:\n{}",
        show(request),
        response.head
    );
    assert_closed_after_body(&response, stream);
    response
}

/// Sends `req` on a fresh connection, asserts `101` with the right accept value, and proves
/// the connection open with an echo. Returns the response and the open client.
fn expect_upgrade(addr: SocketAddr, req: &Req) -> (HttpResponse, RawClient) {
    let request = req.bytes();
    let (response, stream) = raw::http_request(addr, &request)
        .unwrap_or_else(|e| panic!("no HTTP response to {}: {e}", show(&request)));
    check_upgrade(response, stream, req, &request)
}

/// Asserts that `response` (read from `stream`) upgrades `req`, and proves it with an echo.
fn check_upgrade(
    response: HttpResponse,
    stream: TcpStream,
    req: &Req,
    request: &[u8],
) -> (HttpResponse, RawClient) {
    assert_eq!(
        response.status,
        101,
        "expected an upgrade for {}; response:\n{}",
        show(request),
        response.head
    );
    let accept = raw::accept_key(&req.key());
    assert_eq!(
        response.header("Sec-WebSocket-Accept"),
        Some(accept.as_str()),
        "{}",
        response.head
    );
    assert!(
        response.rest.is_empty(),
        "bytes after the 101 before any frame: {}",
        raw::preview(&response.rest)
    );
    let mut client = RawClient::from_stream(stream);
    assert_echoes(&mut client, b"first message");
    (response, client)
}

/// Sends one masked text frame and asserts its echo.
fn assert_echoes(client: &mut RawClient, text: &[u8]) {
    client
        .send(&raw::client_frame(true, op::TEXT, text))
        .expect("send a frame");
    match client.read_event().expect("read the echo") {
        Event::Message {
            binary: false,
            payload,
        } if payload == text => {}
        other => panic!("expected the echo of {}, got {other:?}", raw::preview(text)),
    }
}

/// Connects and writes `bytes` one byte per write (TCP_NODELAY, flushed each time).
fn connect_and_send_bytewise(addr: SocketAddr, bytes: &[u8]) -> RawClient {
    let mut client = RawClient::from_stream(raw::connect_tcp(addr).expect("connect"));
    for b in bytes {
        client.send(&[*b]).expect("write one byte");
    }
    client
}

// ---------------------------------------------------------------------------------
// Method, request line, header lines
// ---------------------------------------------------------------------------------

#[test]
fn rejects_post_upgrade_with_405_and_allow_get() {
    let server = spawn_server(Config::default(), Echo);
    with_bystander(server.addr, |addr| {
        let req = Req::upgrade().line("POST / HTTP/1.1");
        let response = expect_refusal(addr, &req.bytes(), 405);
        assert_eq!(response.header("Allow"), Some("GET"), "{}", response.head);
    });
}

#[test]
fn rejects_malformed_request_lines_with_400() {
    let server = spawn_server(Config::default(), Echo);
    let lines = [
        "GET /",
        "GET  / HTTP/1.1",
        "GET / HTTP/1.1 extra",
        "GET / HTTP/9.9",
        "GET / http/1.1",
        "G(T / HTTP/1.1",
        " GET / HTTP/1.1",
    ];
    with_bystander(server.addr, |addr| {
        for line in lines {
            expect_refusal(addr, &Req::upgrade().line(line).bytes(), 400);
        }
    });
}

#[test]
fn rejects_malformed_header_lines_with_400() {
    let server = spawn_server(Config::default(), Echo);
    let lines = [
        "NoColonHere",
        "Bad Name: x",
        "X-Space-Before-Colon : x",
        ": no name",
        " folded continuation",
        "X-Ctl: a\u{1}b",
    ];
    with_bystander(server.addr, |addr| {
        for line in lines {
            expect_refusal(addr, &Req::upgrade().raw_line(line).bytes(), 400);
        }
    });
}

#[test]
fn rejects_a_bare_lf_inside_a_crlf_head_with_400() {
    let server = spawn_server(Config::default(), Echo);
    with_bystander(server.addr, |addr| {
        let mut request = Req::upgrade().bytes();
        // "GET / HTTP/1.1\r\nHost: ...\n..." : the first header line ends in a bare LF.
        let at = request
            .windows(2)
            .enumerate()
            .filter(|(_, w)| w == b"\r\n")
            .nth(1)
            .map(|(i, _)| i)
            .unwrap();
        request.remove(at);
        expect_refusal(addr, &request, 400);
    });
}

#[test]
fn rejects_bare_lf_line_endings_with_400() {
    let server = spawn_server(Config::default(), Echo);
    with_bystander(server.addr, |addr| {
        expect_refusal(addr, &Req::upgrade().bytes_with_eol("\n"), 400);
    });
}

#[test]
fn rejects_http_1_0_with_400() {
    let server = spawn_server(Config::default(), Echo);
    with_bystander(server.addr, |addr| {
        expect_refusal(addr, &Req::upgrade().line("GET / HTTP/1.0").bytes(), 400);
    });
}

#[test]
fn rejects_missing_or_duplicated_host_with_400() {
    let server = spawn_server(Config::default(), Echo);
    with_bystander(server.addr, |addr| {
        expect_refusal(addr, &Req::upgrade().without("Host").bytes(), 400);
        let twice = Req::upgrade().with("Host", "other.example");
        expect_refusal(addr, &twice.bytes(), 400);
    });
}

// ---------------------------------------------------------------------------------
// Upgrade and Connection
// ---------------------------------------------------------------------------------

#[test]
fn answers_request_without_upgrade_as_plain_http_with_400() {
    let server = spawn_server(Config::default(), Echo);
    with_bystander(server.addr, |addr| {
        expect_refusal(addr, &Req::upgrade().without("Upgrade").bytes(), 400);
    });
}

#[test]
fn rejects_wrong_upgrade_with_400() {
    let server = spawn_server(Config::default(), Echo);
    with_bystander(server.addr, |addr| {
        for value in ["h2c", "websockets", "web socket"] {
            expect_refusal(addr, &Req::upgrade().set("Upgrade", value).bytes(), 400);
        }
    });
}

#[test]
fn rejects_connection_without_upgrade_token_with_400() {
    let server = spawn_server(Config::default(), Echo);
    with_bystander(server.addr, |addr| {
        for value in ["keep-alive", "close", "upgraded"] {
            let req = Req::upgrade().set("Connection", value);
            expect_refusal(addr, &req.bytes(), 400);
        }
        expect_refusal(addr, &Req::upgrade().without("Connection").bytes(), 400);
    });
}

#[test]
fn accepts_upgrade_token_among_other_connection_tokens() {
    let server = spawn_server(Config::default(), Echo);
    with_bystander(server.addr, |addr| {
        for value in ["keep-alive, Upgrade", "upgrade", "Upgrade ,keep-alive"] {
            expect_upgrade(addr, &Req::upgrade().set("Connection", value));
        }
    });
}

// ---------------------------------------------------------------------------------
// Sec-WebSocket-Key and Sec-WebSocket-Version
// ---------------------------------------------------------------------------------

#[test]
fn rejects_missing_key_with_400() {
    let server = spawn_server(Config::default(), Echo);
    with_bystander(server.addr, |addr| {
        let req = Req::upgrade().without("Sec-WebSocket-Key");
        expect_refusal(addr, &req.bytes(), 400);
    });
}

#[test]
fn rejects_short_or_invalid_base64_key_with_400() {
    let server = spawn_server(Config::default(), Echo);
    let keys = [
        "",
        "dGVzdA==",                     // 4 bytes
        "AAAAAAAAAAAAAAAAAAAAAAA=",     // 17 bytes
        "!!!!!!!!!!!!!!!!!!!!!!==",     // not base64
        "dGhlIHNhbXBsZSBub25jZQ",       // 16 bytes, padding missing
        "dGhlIHNhbXBsZSBub25jZQ==AAAA", // trailing garbage
    ];
    with_bystander(server.addr, |addr| {
        for key in keys {
            let req = Req::upgrade().set("Sec-WebSocket-Key", key);
            expect_refusal(addr, &req.bytes(), 400);
        }
    });
}

#[test]
fn rejects_duplicated_key_with_400() {
    let server = spawn_server(Config::default(), Echo);
    with_bystander(server.addr, |addr| {
        let req = Req::upgrade().with("Sec-WebSocket-Key", &raw::random_key());
        expect_refusal(addr, &req.bytes(), 400);
    });
}

#[test]
fn rejects_version_8_or_missing_with_426_naming_13() {
    let server = spawn_server(Config::default(), Echo);
    with_bystander(server.addr, |addr| {
        let requests = [
            Req::upgrade().set("Sec-WebSocket-Version", "8"),
            Req::upgrade().without("Sec-WebSocket-Version"),
        ];
        for req in requests {
            let response = expect_refusal(addr, &req.bytes(), 426);
            assert_eq!(
                response.header("Sec-WebSocket-Version"),
                Some("13"),
                "{}",
                response.head
            );
        }
    });
}

// ---------------------------------------------------------------------------------
// Limits: head size, header count
// ---------------------------------------------------------------------------------

/// A valid upgrade request padded with one header to exactly `len` bytes.
fn padded_to(len: usize) -> Vec<u8> {
    let base = Req::upgrade().with("X-Pad", "").bytes().len();
    assert!(len >= base, "cannot pad to {len} bytes, the base is {base}");
    Req::upgrade()
        .with("X-Pad", &"p".repeat(len - base))
        .bytes()
}

#[test]
fn rejects_head_over_default_limit_with_431() {
    let server = spawn_server(Config::default(), Echo);
    with_bystander(server.addr, |addr| {
        // Complete but too long, and too long with no end in sight.
        let big = Req::upgrade().with("X-Pad", &"p".repeat(9000)).bytes();
        expect_refusal(addr, &big, 431);
        let endless = Req::upgrade().with("X-Pad", &"p".repeat(9000)).bytes();
        expect_refusal(addr, &endless[..endless.len() - 4], 431);
    });
}

#[test]
fn rejects_head_over_default_limit_sent_in_many_small_writes_with_431() {
    let server = spawn_server(Config::default(), Echo);
    with_bystander(server.addr, |addr| {
        let big = Req::upgrade().with("X-Pad", &"p".repeat(9000)).bytes();
        let mut client = RawClient::from_stream(raw::connect_tcp(addr).unwrap());
        // The server answers after 8 KiB; it keeps reading (and dropping) what follows so
        // that the answer is not lost to a reset, so every write here succeeds.
        client
            .send_chunked(&big, 64, Duration::ZERO)
            .expect("the server stopped reading before the head was all sent");
        let response = client.read_http_head().expect("no answer to the big head");
        assert_eq!(response.status, 431, "{}", response.head);
        assert_client_closed_after_body(&client, &response);
    });
}

#[test]
fn head_limit_is_configurable_and_inclusive() {
    let server = spawn_server(Config::default().max_request_head(256), Echo);
    with_bystander(server.addr, |addr| {
        let exact = padded_to(256);
        let (response, stream) = raw::http_request(addr, &exact).unwrap();
        assert_eq!(response.status, 101, "a head of exactly the limit");
        drop(stream);

        expect_refusal(addr, &padded_to(257), 431);
        expect_refusal(addr, &padded_to(400), 431);

        // The same two, a byte per write.
        let mut client = connect_and_send_bytewise(addr, &exact);
        let response = client.read_http_head().unwrap();
        assert_eq!(
            response.status, 101,
            "a head of exactly the limit, bytewise"
        );
        assert_echoes(&mut client, b"bytewise");

        let mut client = connect_and_send_bytewise(addr, &padded_to(300)[..257]);
        let response = client.read_http_head().unwrap();
        assert_eq!(response.status, 431, "{}", response.head);
        assert_client_closed_after_body(&client, &response);
    });
}

#[test]
fn rejects_more_headers_than_max_headers_with_431() {
    let server = spawn_server(Config::default(), Echo);
    with_bystander(server.addr, |addr| {
        // The valid request has 5 header lines; the default limit is 32.
        expect_upgrade(addr, &Req::upgrade().with_fillers(27));
        expect_refusal(addr, &Req::upgrade().with_fillers(28).bytes(), 431);
        // Too many headers on a plain HTTP request too.
        let plain = Req::upgrade().without("Upgrade").with_fillers(40);
        expect_refusal(addr, &plain.bytes(), 431);
    });
}

#[test]
fn header_count_limit_is_configurable() {
    let server = spawn_server(Config::default().max_headers(8), Echo);
    with_bystander(server.addr, |addr| {
        expect_upgrade(addr, &Req::upgrade().with_fillers(3));
        expect_refusal(addr, &Req::upgrade().with_fillers(4).bytes(), 431);
    });
}

// ---------------------------------------------------------------------------------
// Origin, handler decisions, subprotocols
// ---------------------------------------------------------------------------------

#[test]
fn rejects_origin_not_allowed_with_403_and_accepts_allowed_or_none() {
    let cfg = Config::default().allowed_origins(vec!["https://ok.example".into()]);
    let server = spawn_server(cfg, Echo);
    with_bystander(server.addr, |addr| {
        for origin in ["https://evil.example", "https://ok.example.evil", "null"] {
            let req = Req::upgrade().with("Origin", origin);
            expect_refusal(addr, &req.bytes(), 403);
        }
        expect_upgrade(addr, &Req::upgrade().with("Origin", "https://ok.example"));
        expect_upgrade(addr, &Req::upgrade());
    });
}

/// Refuses `/forbidden` always and `/private` without an `Authorization` header; echoes.
struct Gate;

impl Handler for Gate {
    type State = ();

    fn on_upgrade(&mut self, req: &HttpRequest<'_>) -> Decision<()> {
        match req.path() {
            "/forbidden" => Decision::Reject(401),
            "/private" if req.header("Authorization").is_none() => Decision::Reject(401),
            _ => Decision::Accept(()),
        }
    }

    fn on_message(&mut self, ctx: &mut Ctx<'_>, _state: &mut (), msg: Msg<'_>) {
        ctx.send(msg);
    }
}

#[test]
fn handler_rejection_answers_with_its_status() {
    let server = spawn_server(Config::default(), Gate);
    with_bystander(server.addr, |addr| {
        let forbidden = Req::upgrade().line("GET /forbidden HTTP/1.1");
        expect_refusal(addr, &forbidden.bytes(), 401);
        let forbidden = forbidden.with("Authorization", "Bearer token");
        expect_refusal(addr, &forbidden.bytes(), 401);
        let private = Req::upgrade().line("GET /private?x=1 HTTP/1.1");
        expect_refusal(addr, &private.bytes(), 401);

        expect_upgrade(addr, &private.with("Authorization", "Bearer token"));
        expect_upgrade(addr, &Req::upgrade().line("GET /public HTTP/1.1"));
    });
}

#[test]
fn negotiates_the_servers_most_preferred_offered_subprotocol() {
    let cfg = Config::default().protocols(vec!["v2".into(), "v1".into()]);
    let server = spawn_server(cfg, Echo);
    with_bystander(server.addr, |addr| {
        let (response, _c) = expect_upgrade(
            addr,
            &Req::upgrade().with("Sec-WebSocket-Protocol", "v1, v2"),
        );
        assert_eq!(
            response.header("Sec-WebSocket-Protocol"),
            Some("v2"),
            "{}",
            response.head
        );
        let (response, _c) = expect_upgrade(
            addr,
            &Req::upgrade()
                .with("Sec-WebSocket-Protocol", "x")
                .with("Sec-WebSocket-Protocol", "v1"),
        );
        assert_eq!(
            response.header("Sec-WebSocket-Protocol"),
            Some("v1"),
            "{}",
            response.head
        );
        for offer in [Some("x"), None] {
            let req = match offer {
                Some(p) => Req::upgrade().with("Sec-WebSocket-Protocol", p),
                None => Req::upgrade(),
            };
            let (response, _c) = expect_upgrade(addr, &req);
            assert_eq!(
                response.header("Sec-WebSocket-Protocol"),
                None,
                "offer {offer:?}: {}",
                response.head
            );
        }
    });
}

/// Picks "v1" whenever it is offered, whatever the server's preferences.
struct PicksV1;

impl Handler for PicksV1 {
    type State = ();

    fn on_upgrade(&mut self, req: &HttpRequest<'_>) -> Decision<()> {
        match req.offered("v1") {
            Some(v1) => Decision::AcceptProtocol((), v1),
            None => Decision::Accept(()),
        }
    }

    fn on_message(&mut self, ctx: &mut Ctx<'_>, _state: &mut (), msg: Msg<'_>) {
        ctx.send(msg);
    }
}

#[test]
fn handler_chosen_subprotocol_is_sent() {
    let cfg = Config::default().protocols(vec!["v2".into(), "v1".into()]);
    let server = spawn_server(cfg, PicksV1);
    with_bystander(server.addr, |addr| {
        let req = Req::upgrade().with("Sec-WebSocket-Protocol", "v2, v1");
        let (response, _c) = expect_upgrade(addr, &req);
        assert_eq!(
            response.header("Sec-WebSocket-Protocol"),
            Some("v1"),
            "{}",
            response.head
        );
    });
}

// ---------------------------------------------------------------------------------
// Split heads
// ---------------------------------------------------------------------------------

#[test]
fn upgrades_with_the_head_split_at_every_byte() {
    let server = spawn_server(Config::default(), Echo);
    with_bystander(server.addr, |addr| {
        let req = Req::upgrade().line("GET /split?at=every-byte HTTP/1.1");
        let request = req.bytes();
        assert!(request.len() > 140, "a head of {} bytes", request.len());
        let mut client = connect_and_send_bytewise(addr, &request);
        let response = client
            .read_http_head()
            .expect("no answer to the split head");
        assert_eq!(response.status, 101, "{}", response.head);
        assert_eq!(
            response.header("Sec-WebSocket-Accept"),
            Some(raw::accept_key(&req.key()).as_str())
        );
        assert_echoes(&mut client, b"after a bytewise head");
    });
}

#[test]
fn upgrades_and_echoes_a_frame_sent_in_the_same_write_as_the_head() {
    let server = spawn_server(Config::default(), Echo);
    with_bystander(server.addr, |addr| {
        let req = Req::upgrade();
        let mut bytes = req.bytes();
        bytes.extend_from_slice(&raw::client_frame(true, op::TEXT, b"riding along"));
        bytes.extend_from_slice(&raw::client_frame(true, op::BINARY, &[0, 1, 2]));
        let mut client = RawClient::from_stream(raw::connect_tcp(addr).unwrap());
        client.send(&bytes).unwrap();
        let response = client.read_http_head().unwrap();
        assert_eq!(response.status, 101, "{}", response.head);
        assert_eq!(
            client.read_event().unwrap(),
            Event::Message {
                binary: false,
                payload: b"riding along".to_vec()
            }
        );
        assert_eq!(
            client.read_event().unwrap(),
            Event::Message {
                binary: true,
                payload: vec![0, 1, 2]
            }
        );
    });
}

// ---------------------------------------------------------------------------------
// Capacity
// ---------------------------------------------------------------------------------

#[test]
fn answers_503_with_retry_after_at_max_connections_and_admits_again_after_a_leave() {
    let server = spawn_server(Config::default().max_connections(2), Echo);
    // The bystander is the first of the two connections.
    with_bystander(server.addr, |addr| {
        let (_, mut second) = expect_upgrade(addr, &Req::upgrade());
        let response = expect_refusal(addr, &Req::upgrade().bytes(), 503);
        let retry = response.header("Retry-After").unwrap_or_else(|| {
            panic!("503 without Retry-After:\n{}", response.head);
        });
        assert!(
            retry.parse::<u32>().is_ok(),
            "Retry-After is not delta-seconds: {retry:?}"
        );
        assert_echoes(&mut second, b"still served");

        // The second leaves with a clean close handshake.
        second.send_close(1000, b"bye").unwrap();
        let (_, close) = second.read_until_close().unwrap();
        assert_eq!(
            close,
            Event::Close {
                code: Some(1000),
                reason: Vec::new()
            }
        );
        second.wait_for_eof(IO_TIMEOUT).unwrap();

        // The server may see the leave asynchronously: retry, within a generous deadline.
        let deadline = Instant::now() + IO_TIMEOUT;
        loop {
            let req = Req::upgrade();
            let request = req.bytes();
            let (response, stream) = raw::http_request(addr, &request).unwrap();
            if response.status == 503 && Instant::now() < deadline {
                assert_closed_after_body(&response, stream);
                continue;
            }
            check_upgrade(response, stream, &req, &request);
            break;
        }
    });
}

// ---------------------------------------------------------------------------------
// Many at once
// ---------------------------------------------------------------------------------

#[test]
fn many_concurrent_bad_handshakes_are_refused_and_counted() {
    const KINDS: [(u16, &str); 5] = [
        (405, "POST"),
        (426, "version 8"),
        (431, "oversized head"),
        (400, "missing key"),
        (403, "bad origin"),
    ];
    const CLIENTS: usize = 20;
    let cfg = Config::default().allowed_origins(vec!["https://ok.example".into()]);
    let server = spawn_server(cfg, Echo);
    let addr = server.addr;
    let mut bystander = Bystander::connect(addr);

    // The bystander keeps echoing while the bad clients are being answered.
    bystander.assert_echoes_during(CLIENTS, move |i| {
        let (status, _) = KINDS[i % KINDS.len()];
        let req = match status {
            405 => Req::upgrade().line("POST / HTTP/1.1"),
            426 => Req::upgrade().set("Sec-WebSocket-Version", "8"),
            431 => Req::upgrade().with("X-Pad", &"p".repeat(9000)),
            400 => Req::upgrade().without("Sec-WebSocket-Key"),
            _ => Req::upgrade().with("Origin", "https://evil.example"),
        };
        expect_refusal(addr, &req.bytes(), status);
    });

    let stats = server.handle.stats().expect("stats");
    for (status, what) in KINDS {
        assert_eq!(
            stats.rejected_with(status),
            (CLIENTS / KINDS.len()) as u64,
            "refusals with {status} ({what}); stats: {}",
            stats.to_json()
        );
    }
    assert_eq!(stats.accepted, 1, "only the bystander upgraded");
}

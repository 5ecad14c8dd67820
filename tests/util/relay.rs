//! The relay's side of the integration tests: its clients file, WebSocket clients that
//! present a token (by header, by query, from another source address), JSON requests and
//! answers read with a deadline, and plain HTTP requests whose answer (status, headers,
//! body) matters.
//!
//! Every socket has read and write timeouts of [`READ_TIMEOUT`]: a test that waits for an
//! answer that never comes fails with what it waited for, instead of hanging.

use std::io::{self, Read};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tungstenite::client::IntoClientRequest;
use tungstenite::http::{HeaderName, HeaderValue};
use tungstenite::Message;

use super::clients::Client;
use super::raw::{self, HttpResponse};
use super::tls::TempDir;

/// How long a test waits for one answer.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// The SHA-256 of `token` in lowercase hex: the clients file's `token_sha256`.
pub fn sha256_hex(token: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// One entry of a clients file.
#[derive(Clone, Copy, Debug)]
pub struct Entry<'a> {
    pub name: &'a str,
    pub token: &'a str,
    pub publish: &'a [&'a str],
    pub subscribe: &'a [&'a str],
}

impl Entry<'_> {
    /// The entry as the clients file writes it.
    pub fn to_toml(self) -> String {
        let list = |v: &[&str]| {
            v.iter()
                .map(|p| format!("{p:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        format!(
            "[{}]\ntoken_sha256 = \"{}\"\npublish = [{}]\nsubscribe = [{}]\n\n",
            self.name,
            sha256_hex(self.token),
            list(self.publish),
            list(self.subscribe)
        )
    }
}

/// A clients file's text.
pub fn clients_toml(entries: &[Entry<'_>]) -> String {
    entries.iter().map(|e| e.to_toml()).collect()
}

/// A directory of its own (removed on drop) for a relay's clients file and config file.
pub struct Files {
    dir: TempDir,
}

impl Files {
    pub fn new(tag: &str) -> Files {
        Files {
            dir: TempDir::new(tag),
        }
    }

    /// `DIR/name`.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.0.join(name)
    }

    /// The clients file's path, `DIR/clients.toml`.
    pub fn clients(&self) -> PathBuf {
        self.path("clients.toml")
    }

    /// The clients file's path as text, for a config file or `--clients`.
    pub fn clients_str(&self) -> String {
        self.clients().to_str().expect("a UTF-8 path").to_owned()
    }

    /// Replaces `DIR/name` with `text` at once (written beside it, then renamed): a server
    /// that reads it sees the old file or the new one, never half of one.
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.path(name);
        let tmp = self.path(&format!(".{name}.tmp"));
        std::fs::write(&tmp, text).expect("write a file in the temporary directory");
        std::fs::rename(&tmp, &path).expect("rename it into place");
        path
    }

    /// Replaces the clients file.
    pub fn write_clients(&self, text: &str) -> PathBuf {
        self.write("clients.toml", text)
    }

    /// Writes `DIR/emberws.toml` and returns its path as text, for `--config`.
    pub fn write_config(&self, text: &str) -> String {
        let path = self.write("emberws.toml", text);
        path.to_str().expect("a UTF-8 path").to_owned()
    }
}

/// `Authorization: Bearer TOKEN`.
pub fn bearer(token: &str) -> (&'static str, String) {
    ("Authorization", format!("Bearer {token}"))
}

/// A TCP connection to `addr`, from the source address `from` when given (another host, as
/// far as the server's per-address lockouts can tell), with [`READ_TIMEOUT`] timeouts.
pub fn tcp(addr: SocketAddr, from: Option<IpAddr>) -> TcpStream {
    let stream = match from {
        Some(local) => raw::connect_tcp_from(local, addr),
        None => raw::connect_tcp(addr),
    }
    .unwrap_or_else(|e| panic!("cannot connect to {addr}: {e}"));
    stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(READ_TIMEOUT)).unwrap();
    stream
}

/// Why an opening handshake did not open.
#[derive(Debug)]
pub enum NotOpened {
    /// Refused with this HTTP status.
    Status(u16),
    /// No HTTP answer: what went wrong.
    Failed(String),
}

/// The opening handshake for `target` (path and query) with extra request headers, by a
/// real client (tungstenite).
pub fn try_ws(
    addr: SocketAddr,
    from: Option<IpAddr>,
    target: &str,
    headers: &[(&str, &str)],
) -> Result<Client, NotOpened> {
    let mut request = format!("ws://{addr}{target}")
        .into_client_request()
        .map_err(|e| NotOpened::Failed(format!("a bad request: {e}")))?;
    for (name, value) in headers {
        let name = HeaderName::from_bytes(name.as_bytes()).expect("a valid header name");
        let value = HeaderValue::from_str(value).expect("a valid header value");
        request.headers_mut().insert(name, value);
    }
    match tungstenite::client(request, tcp(addr, from)) {
        Ok((ws, response)) => {
            assert_eq!(response.status(), 101);
            Ok(ws)
        }
        Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(response))) => {
            Err(NotOpened::Status(response.status().as_u16()))
        }
        Err(e) => Err(NotOpened::Failed(e.to_string())),
    }
}

/// The status of a refused upgrade (a real client); panics when it opens.
#[track_caller]
pub fn ws_refused(
    addr: SocketAddr,
    from: Option<IpAddr>,
    target: &str,
    headers: &[(&str, &str)],
) -> u16 {
    match try_ws(addr, from, target, headers) {
        Err(NotOpened::Status(status)) => status,
        Err(NotOpened::Failed(e)) => {
            panic!("upgrade {target} {headers:?}: expected an HTTP refusal, got {e}")
        }
        Ok(_) => panic!("upgrade {target} {headers:?}: expected a refusal, got 101"),
    }
}

/// The status of an upgrade by a real client: 101 when it opened.
#[track_caller]
pub fn ws_status(
    addr: SocketAddr,
    from: Option<IpAddr>,
    target: &str,
    headers: &[(&str, &str)],
) -> u16 {
    match try_ws(addr, from, target, headers) {
        Ok(_) => 101,
        Err(NotOpened::Status(status)) => status,
        Err(NotOpened::Failed(e)) => panic!("upgrade {target} {headers:?}: no HTTP answer: {e}"),
    }
}

/// An upgrade request for `target` written by hand, and the response head (status and
/// headers as sent).
#[track_caller]
pub fn raw_upgrade(
    addr: SocketAddr,
    from: Option<IpAddr>,
    target: &str,
    headers: &[(&str, &str)],
) -> HttpResponse {
    let request = raw::upgrade_request(&addr.to_string(), target, &raw::random_key(), headers);
    raw::http_request_on(tcp(addr, from), request.as_bytes())
        .unwrap_or_else(|e| panic!("upgrade {target}: no response: {e}"))
        .0
}

/// A plain HTTP answer: the head and the body.
#[derive(Debug)]
pub struct HttpAnswer {
    pub response: HttpResponse,
    pub body: Vec<u8>,
}

impl HttpAnswer {
    pub fn status(&self) -> u16 {
        self.response.status
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.response.header(name)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// `GET target` over plain HTTP with extra headers; the body is read to its
/// `Content-Length`, or to the end of the connection without one.
#[track_caller]
pub fn http_get(
    addr: SocketAddr,
    from: Option<IpAddr>,
    target: &str,
    headers: &[(&str, &str)],
) -> HttpAnswer {
    let mut request = format!("GET {target} HTTP/1.1\r\nHost: {addr}\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    let (response, mut stream) = raw::http_request_on(tcp(addr, from), request.as_bytes())
        .unwrap_or_else(|e| panic!("GET {target}: no response: {e}"));
    let mut body = response.rest.clone();
    match response.header("content-length") {
        Some(len) => {
            let len: usize = len.parse().expect("a numeric Content-Length");
            let deadline = Instant::now() + READ_TIMEOUT;
            let mut scratch = [0u8; 8192];
            while body.len() < len {
                assert!(
                    Instant::now() < deadline,
                    "GET {target}: the body is not complete"
                );
                match stream.read(&mut scratch) {
                    Ok(0) => panic!(
                        "GET {target}: the connection ended after {} of {len} body bytes",
                        body.len()
                    ),
                    Ok(n) => body.extend_from_slice(&scratch[..n]),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => panic!("GET {target}: reading the body: {e}"),
                }
            }
            body.truncate(len);
        }
        None => body.extend(
            raw::read_to_eof(&mut stream, 1 << 20, READ_TIMEOUT)
                .unwrap_or_else(|e| panic!("GET {target}: reading the body: {e}")),
        ),
    }
    HttpAnswer { response, body }
}

/// A relay client (tungstenite) speaking the relay's JSON protocol; every read waits at most
/// [`READ_TIMEOUT`].
pub struct Peer {
    pub ws: Client,
    /// Who this is, in failure messages.
    pub label: String,
}

impl Peer {
    /// Opens `target` on `addr` with extra headers; panics when refused.
    #[track_caller]
    pub fn open(addr: SocketAddr, target: &str, headers: &[(&str, &str)], label: &str) -> Peer {
        Peer::open_target(addr, None, target, headers, label)
    }

    /// Opens `/` with extra headers from the source address `from`; panics when refused.
    #[track_caller]
    pub fn open_from(
        addr: SocketAddr,
        from: Option<IpAddr>,
        headers: &[(&str, &str)],
        label: &str,
    ) -> Peer {
        Peer::open_target(addr, from, "/", headers, label)
    }

    #[track_caller]
    fn open_target(
        addr: SocketAddr,
        from: Option<IpAddr>,
        target: &str,
        headers: &[(&str, &str)],
        label: &str,
    ) -> Peer {
        match try_ws(addr, from, target, headers) {
            Ok(ws) => Peer {
                ws,
                label: label.to_owned(),
            },
            Err(NotOpened::Status(status)) => {
                panic!("{label}: the upgrade was refused with {status}")
            }
            Err(NotOpened::Failed(e)) => panic!("{label}: the upgrade failed: {e}"),
        }
    }

    /// Opens `/` presenting `token` as a Bearer token.
    #[track_caller]
    pub fn with_token(addr: SocketAddr, token: &str, label: &str) -> Peer {
        let (name, value) = bearer(token);
        Peer::open(addr, "/", &[(name, &value)], label)
    }

    /// Opens `/` without a token.
    #[track_caller]
    pub fn anonymous(addr: SocketAddr, label: &str) -> Peer {
        Peer::open(addr, "/", &[], label)
    }

    #[track_caller]
    pub fn send(&mut self, request: &Value) {
        self.send_text(&request.to_string());
    }

    #[track_caller]
    pub fn send_text(&mut self, text: &str) {
        if let Err(e) = self.ws.send(Message::text(text)) {
            panic!("{}: cannot send: {e}", self.label);
        }
    }

    /// The next JSON message (WebSocket pings and pongs skipped).
    #[track_caller]
    pub fn recv(&mut self) -> Value {
        loop {
            match self.ws.read() {
                Ok(Message::Text(t)) => {
                    return serde_json::from_str(t.as_str()).unwrap_or_else(|e| {
                        panic!("{}: the relay sent invalid JSON {t:?}: {e}", self.label)
                    })
                }
                Ok(Message::Ping(_) | Message::Pong(_)) => {}
                Ok(Message::Close(frame)) => {
                    panic!("{}: closed ({frame:?}) while a message was due", self.label)
                }
                Ok(other) => panic!("{}: expected a text message, got {other:?}", self.label),
                Err(tungstenite::Error::Io(e))
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    panic!(
                        "{}: no message within {} s",
                        self.label,
                        READ_TIMEOUT.as_secs()
                    )
                }
                Err(e) => panic!("{}: read failed while a message was due: {e}", self.label),
            }
        }
    }

    /// Sends `request` and returns the next message.
    #[track_caller]
    pub fn request(&mut self, request: Value) -> Value {
        self.send(&request);
        self.recv()
    }

    /// Subscribes to `topic` (the request's id is the topic) and expects its ack.
    #[track_caller]
    pub fn subscribe(&mut self, topic: &str) {
        let got = self.request(json!({"type": "subscribe", "topic": topic, "id": topic}));
        assert_eq!(
            got,
            json!({"type": "ack", "id": topic}),
            "{}: subscribe {topic}",
            self.label
        );
    }

    /// Publishes with an id and returns `delivered` from its ack.
    #[track_caller]
    pub fn publish(&mut self, topic: &str, data: Value) -> u64 {
        self.publish_with(json!({"type": "publish", "topic": topic, "data": data, "id": "p"}))
    }

    /// Publishes with `retain` and an id; returns `delivered` from its ack.
    #[track_caller]
    pub fn retain(&mut self, topic: &str, data: Value) -> u64 {
        self.publish_with(
            json!({"type": "publish", "topic": topic, "data": data, "retain": true, "id": "p"}),
        )
    }

    /// Sends a publish whose id is `"p"` and returns `delivered` from its ack.
    #[track_caller]
    pub fn publish_with(&mut self, request: Value) -> u64 {
        let ack = self.request(request.clone());
        assert!(
            ack["type"] == "ack" && ack["id"] == "p",
            "{}: expected an ack of {request}, got {ack}",
            self.label
        );
        ack["delivered"]
            .as_u64()
            .unwrap_or_else(|| panic!("{}: an ack without delivered: {ack}", self.label))
    }

    /// Expects exactly `{"type":"error","reason":REASON,"id":ID}`.
    #[track_caller]
    pub fn expect_error(&mut self, id: Value, reason: &str) {
        let got = self.recv();
        assert_eq!(
            got,
            json!({"type": "error", "reason": reason, "id": id}),
            "{}: expected this error",
            self.label
        );
    }

    /// Expects `{"type":"message","topic":TOPIC,"data":DATA,"id":ID}` (any message id).
    #[track_caller]
    pub fn expect_message(&mut self, topic: &str, data: Value) {
        let got = without_id(self.recv());
        assert_eq!(
            got,
            json!({"type": "message", "topic": topic, "data": data}),
            "{}: expected this message",
            self.label
        );
    }

    /// The next `n` messages, as `(topic, data)` sorted by topic (retained messages come in
    /// no particular order).
    #[track_caller]
    pub fn messages(&mut self, n: usize) -> Vec<(String, Value)> {
        let mut got: Vec<(String, Value)> = (0..n)
            .map(|_| {
                let m = self.recv();
                assert_eq!(
                    m["type"], "message",
                    "{}: expected a message: {m}",
                    self.label
                );
                (
                    m["topic"].as_str().unwrap_or_default().to_owned(),
                    m["data"].clone(),
                )
            })
            .collect();
        got.sort_by(|a, b| a.0.cmp(&b.0));
        got
    }

    /// An app-level ping whose pong must be the very next message: nothing else was on its
    /// way to this client, and the connection is open and served.
    #[track_caller]
    pub fn nothing_pending(&mut self) {
        let got = self.request(json!({"type": "ping", "id": "barrier"}));
        assert_eq!(
            got,
            json!({"type": "pong", "id": "barrier"}),
            "{}: expected nothing before the pong",
            self.label
        );
    }

    /// Reads until the server's close frame and the end of the connection; asserts its code
    /// and reason.
    #[track_caller]
    pub fn expect_close(&mut self, code: u16, reason: &str) {
        let mut got = None;
        loop {
            match self.ws.read() {
                Ok(Message::Close(frame)) => {
                    got = Some(frame.map(|f| (u16::from(f.code), f.reason.as_str().to_owned())));
                }
                Ok(Message::Ping(_) | Message::Pong(_)) => {}
                Ok(other) => panic!(
                    "{}: expected a close {code}, got {other:?} first",
                    self.label
                ),
                Err(tungstenite::Error::ConnectionClosed) => break,
                Err(e) => panic!(
                    "{}: expected a close {code}; the connection failed instead: {e} \
                     (close so far: {got:?})",
                    self.label
                ),
            }
        }
        assert_eq!(
            got,
            Some(Some((code, reason.to_owned()))),
            "{}: the close frame",
            self.label
        );
    }
}

/// Whether `id` is a relay message id: `EPOCH-SEQ`, 8 lowercase hex digits and a number
/// from 1.
pub fn is_message_id(id: &str) -> bool {
    id.split_once('-').is_some_and(|(epoch, seq)| {
        epoch.len() == 8
            && epoch
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            && !seq.starts_with('0')
            && seq.parse::<u64>().is_ok()
    })
}

/// A `message` with its `id` checked and taken out, for comparing the rest.
#[track_caller]
pub fn without_id(mut message: Value) -> Value {
    if message["type"] == "message" {
        let id = message.as_object_mut().and_then(|o| o.remove("id"));
        let id = id.as_ref().and_then(Value::as_str).unwrap_or_default();
        assert!(
            is_message_id(id),
            "a message without a valid id: {message}, {id:?}"
        );
    }
    message
}

/// The value of the Prometheus sample `line` (e.g. `emberws_x_total{reason="y"}`) in a
/// `/metrics` text; panics naming it when it is missing.
#[track_caller]
pub fn metric(text: &str, sample: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(sample)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no sample {sample} in /metrics:\n{text}"))
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("{sample}: not a whole number: {e}"))
}

//! Layer 4: what an application implements — the upgrade decision, open, message, close —
//! and the views it is handed.

use std::borrow::Cow;
use std::net::SocketAddr;

use crate::ctx::Ctx;
use crate::proto::handshake::{Header, Request};
use crate::proto::CloseCode;
use crate::stats::Stats;

/// A message, borrowed from the buffer it arrived in (zero copy).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Message<'a> {
    /// A text message, valid UTF-8.
    Text(&'a str),
    /// A binary message.
    Binary(&'a [u8]),
}

impl<'a> Message<'a> {
    /// The payload bytes.
    pub fn as_bytes(&self) -> &'a [u8] {
        match *self {
            Message::Text(s) => s.as_bytes(),
            Message::Binary(b) => b,
        }
    }

    /// The payload length in bytes.
    pub fn len(&self) -> usize {
        self.as_bytes().len()
    }

    /// True for an empty payload.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// An HTTP request head: the upgrade request, or a plain request for [`Handler::on_request`].
#[derive(Clone, Copy, Debug)]
pub struct HttpRequest<'a> {
    request: &'a Request<'a, 'a>,
    peer: SocketAddr,
}

impl<'a> HttpRequest<'a> {
    pub(crate) fn new(request: &'a Request<'a, 'a>, peer: SocketAddr) -> Self {
        HttpRequest { request, peer }
    }

    /// The method, e.g. `GET`.
    pub fn method(&self) -> &'a str {
        self.request.method
    }

    /// The path, without the query.
    pub fn path(&self) -> &'a str {
        self.request.path()
    }

    /// The query after `?`, if any.
    pub fn query(&self) -> Option<&'a str> {
        self.request.query()
    }

    /// The first header with this name (ASCII case-insensitive), e.g. `Authorization`.
    pub fn header(&self, name: &str) -> Option<&'a [u8]> {
        self.request.header(name)
    }

    /// Every header, in order.
    pub fn headers(&self) -> &'a [Header<'a>] {
        self.request.headers
    }

    /// The subprotocols the client offered, in its order.
    pub fn protocols(&self) -> impl Iterator<Item = &'a str> + Clone + 'a {
        self.request.protocols()
    }

    /// The `Origin` header.
    pub fn origin(&self) -> Option<&'a str> {
        self.request.origin()
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer
    }
}

/// The answer to an upgrade request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Upgrade, with the server's most preferred subprotocol the client offered
    /// ([`crate::Config::protocols`]), if any.
    Accept,
    /// Upgrade with this subprotocol; it should be one the client offered.
    AcceptProtocol(&'static str),
    /// Refuse with this HTTP status (e.g. 401, 403, 404).
    Reject(u16),
}

/// A complete answer to a plain HTTP request (one without an upgrade).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The `Content-Type`; empty for none.
    pub content_type: &'static str,
    /// Extra header lines (name, value).
    pub headers: Vec<(&'static str, String)>,
    /// The body.
    pub body: Cow<'static, [u8]>,
}

impl Response {
    /// A response with an empty body.
    pub fn status(status: u16) -> Self {
        Response {
            status,
            content_type: "",
            headers: Vec::new(),
            body: Cow::Borrowed(b""),
        }
    }

    /// A 200 response with this content type and body.
    pub fn ok(content_type: &'static str, body: impl Into<Cow<'static, [u8]>>) -> Self {
        Response {
            status: 200,
            content_type,
            headers: Vec::new(),
            body: body.into(),
        }
    }
}

/// The application's side of the server. Every method runs on the loop's thread: keep it
/// short, and hand long work to another thread that answers through a
/// [`ServerHandle`](crate::ServerHandle).
pub trait Handler {
    /// Decides an upgrade request that passed the protocol checks (and the Origin
    /// allow-list). Default: [`Decision::Accept`].
    fn on_upgrade(&mut self, req: &HttpRequest<'_>) -> Decision {
        let _ = req;
        Decision::Accept
    }

    /// Answers a plain HTTP request (no `Upgrade: websocket`). Default: 400, as RFC 6455
    /// §4.2.1 calls for a request that is not an upgrade. `stats` is the server's counters.
    fn on_request(&mut self, req: &HttpRequest<'_>, stats: &Stats) -> Response {
        let _ = (req, stats);
        Response::status(400)
    }

    /// A connection upgraded; `ctx` can send to it at once.
    fn on_open(&mut self, ctx: &mut Ctx<'_>) {
        let _ = ctx;
    }

    /// A complete message arrived, borrowed from the read buffer.
    fn on_message(&mut self, ctx: &mut Ctx<'_>, msg: Message<'_>);

    /// The connection closed: the peer's code, the server's, or 1006 when the TCP connection
    /// ended without a close frame. Called exactly once for every connection that opened;
    /// `ctx` can no longer send to this connection, but can publish to others.
    fn on_close(&mut self, ctx: &mut Ctx<'_>, code: CloseCode, reason: &str) {
        let _ = (ctx, code, reason);
    }
}

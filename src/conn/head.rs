//! ①② The whole handshake of one connection: the request head parsed and validated, the
//! Origin allow-list, the application's decision, and the answer written — `101 Switching
//! Protocols`, the head of an event stream, an HTTP response, or a refusal with its status.
//!
//! The loop, the unit tests and the robustness harness all go through [`Conn::answer_head`];
//! the application decides through [`Decide`], nothing else.

use core::net::SocketAddr;
use std::borrow::Cow;

use super::{Conn, Data, Phase};
use crate::config::{Config, MAX_HEADERS};
use crate::pool::Pool;
use crate::proto::handshake::{self, Header, Request};
use crate::proto::{response, sse, HandshakeError, Status};

use super::deadlines::Millis;

/// An HTTP request head: an upgrade request, or a plain request.
#[derive(Clone, Copy, Debug)]
pub struct HttpRequest<'a> {
    request: &'a Request<'a, 'a>,
    peer: SocketAddr,
    local: SocketAddr,
    protocols: &'a [String],
    now: Millis,
}

impl<'a> HttpRequest<'a> {
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

    /// A subprotocol that the client offered and the server speaks
    /// ([`Config::protocols`]), to accept with [`Decision::AcceptProtocol`]. `None` if either
    /// side lacks it: a protocol the client did not offer cannot be accepted.
    pub fn offered(&self, name: &str) -> Option<Protocol> {
        let index = self.protocols.iter().position(|p| p == name)?;
        self.request
            .protocols()
            .any(|offer| offer == name)
            .then_some(Protocol(index as u8))
    }

    /// The `Origin` header.
    pub fn origin(&self) -> Option<&'a str> {
        self.request.origin()
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer
    }

    /// The address of the listener that accepted the connection (e.g. to trust a loopback
    /// listener for local programs and ask for credentials on a public one).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The loop's clock: the time from the server's start to the turn that read this
    /// request (time passed in with [`crate::Server::turn`], or the harness's). Rate limits
    /// and lockouts measured on it are testable without waiting.
    pub fn now(&self) -> core::time::Duration {
        core::time::Duration::from_millis(self.now.0)
    }
}

/// A subprotocol both sides speak: an index into [`Config::protocols`], made only by
/// [`HttpRequest::offered`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Protocol(u8);

impl Protocol {
    /// The index in [`Config::protocols`].
    pub fn index(self) -> usize {
        usize::from(self.0)
    }
}

/// The answer to an upgrade request. `S` is the connection's own state: it lives as long as
/// the connection and every callback about it can change it.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision<S> {
    /// Upgrade, with the server's most preferred subprotocol that the client offered
    /// ([`Config::protocols`]), if any.
    Accept(S),
    /// Upgrade with this subprotocol.
    AcceptProtocol(S, Protocol),
    /// Refuse with this HTTP status (e.g. 401, 403, 404); 400 for a status outside 400–599.
    Reject(u16),
    /// Refuse with this response: a status with headers and a body, e.g. 401 with
    /// `WWW-Authenticate` or 429 with `Retry-After`. A status outside 400–599 becomes 400.
    /// The connection closes after it, as after every refusal.
    Refuse(Response),
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

/// The application's decisions about a request head.
pub trait Decide {
    /// The per-connection state an accepted upgrade carries.
    type State;

    /// Decides an upgrade request that passed the protocol checks and the Origin allow-list.
    fn upgrade(&mut self, req: &HttpRequest<'_>) -> Decision<Self::State>;

    /// Decides whether a plain `GET` becomes an event stream: `None` leaves it to
    /// [`Decide::request`]. Default: `None`.
    fn event_stream(&mut self, req: &HttpRequest<'_>) -> Option<Decision<Self::State>> {
        let _ = req;
        None
    }

    /// Answers a plain HTTP request.
    fn request(&mut self, req: &HttpRequest<'_>) -> Response;
}

/// Accepts every upgrade with no state and answers plain requests 404: the decision of an
/// echo server, for scripted tests, benches and fuzzers of the connection.
#[derive(Clone, Copy, Debug, Default)]
pub struct AcceptAll;

impl Decide for AcceptAll {
    type State = ();

    fn upgrade(&mut self, _req: &HttpRequest<'_>) -> Decision<()> {
        Decision::Accept(())
    }

    fn request(&mut self, _req: &HttpRequest<'_>) -> Response {
        Response::status(404)
    }
}

/// What [`Conn::answer_head`] wrote and what the connection is now.
#[derive(Debug, PartialEq, Eq)]
pub enum Answered<S> {
    /// `101 Switching Protocols`, or the head of an event stream ([`super::Kind`] says
    /// which): the connection is open with this state and subprotocol (never one for an event
    /// stream).
    Open(S, Option<Protocol>),
    /// A plain HTTP request was answered with this status.
    Http(u16),
    /// The request was refused with this status (bad head, limits, Origin, the application).
    Refused(u16),
}

impl Conn {
    /// Answers a complete request head ([`super::Event::Head`]): parses and validates it,
    /// applies the refusal decided at admission and the Origin allow-list, asks `decide`, and
    /// writes the answer to `out`. The head's buffer goes back to the pool.
    #[allow(clippy::too_many_arguments)]
    pub fn answer_head<D: Decide>(
        &mut self,
        head: Data<'_>,
        peer: SocketAddr,
        local: SocketAddr,
        decide: &mut D,
        out: &mut Vec<u8>,
        pool: &mut Pool,
        cfg: &Config,
        now: Millis,
    ) -> Answered<D::State> {
        let answered = self.decide_head(head.as_slice(), (peer, local), decide, out, cfg, now);
        head.recycle(pool);
        if !matches!(answered, Answered::Open(..)) {
            self.answered_http(pool, cfg, now);
        }
        answered
    }

    fn decide_head<D: Decide>(
        &mut self,
        head: &[u8],
        (peer, local): (SocketAddr, SocketAddr),
        decide: &mut D,
        out: &mut Vec<u8>,
        cfg: &Config,
        now: Millis,
    ) -> Answered<D::State> {
        let refuse = match self.phase {
            Phase::Connecting { refuse } => refuse,
            _ => return Answered::Refused(500),
        };
        let mut table = [Header::EMPTY; MAX_HEADERS];
        let limit = cfg.max_headers.min(MAX_HEADERS);
        let req = match handshake::parse(head, table.get_mut(..limit).unwrap_or_default()) {
            Ok(Status::Complete((req, _))) => req,
            Ok(Status::Partial) => return refused(out, HandshakeError::Malformed.status()),
            Err(e) => return refused(out, e.status()),
        };
        if let Some(status) = refuse {
            return refused(out, status);
        }
        let view = HttpRequest {
            request: &req,
            peer,
            local,
            protocols: &cfg.protocols,
            now,
        };
        if !req.is_upgrade() {
            if req.method == "GET" {
                if let Some(decision) = decide.event_stream(&view) {
                    return self.open_stream(decision, &req, out, cfg, now);
                }
            }
            let res = decide.request(&view);
            write_response(out, &res, res.status);
            return Answered::Http(res.status);
        }
        let key = match req.validate_upgrade() {
            Ok(key) => key,
            Err(e) => return refused(out, e.status()),
        };
        if !origin_allowed(&req, cfg) {
            return refused(out, HandshakeError::ForbiddenOrigin.status());
        }
        let (state, protocol) = match decide.upgrade(&view) {
            Decision::Reject(status) => return refused(out, refusal_status(status)),
            Decision::Refuse(res) => {
                let status = refusal_status(res.status);
                write_response(out, &res, status);
                return Answered::Refused(status);
            }
            Decision::AcceptProtocol(state, p) => (state, Some(p)),
            Decision::Accept(state) => {
                let prefs: Vec<&str> = cfg.protocols.iter().map(String::as_str).collect();
                let chosen = response::select_protocol(&prefs, req.protocols());
                let index = chosen.and_then(|c| prefs.iter().position(|p| *p == c));
                (state, index.map(|i| Protocol(i as u8)))
            }
        };
        let name = protocol.and_then(|p| cfg.protocols.get(p.index()));
        response::switching_protocols(out, key, name.map(String::as_str));
        self.opened(now);
        Answered::Open(state, protocol)
    }
}

impl Conn {
    /// Answers a `GET` the application made an event stream: the Origin allow-list, then
    /// its decision. Accepted, the stream's head and `retry:` are written and the
    /// connection is open.
    fn open_stream<S>(
        &mut self,
        decision: Decision<S>,
        req: &Request<'_, '_>,
        out: &mut Vec<u8>,
        cfg: &Config,
        now: Millis,
    ) -> Answered<S> {
        // The allow-list applies as to an upgrade; it is checked once the application has
        // claimed the request, since a plain GET from another origin may be any page.
        if !origin_allowed(req, cfg) {
            return refused(out, HandshakeError::ForbiddenOrigin.status());
        }
        let state = match decision {
            Decision::Reject(status) => return refused(out, refusal_status(status)),
            Decision::Refuse(res) => {
                let status = refusal_status(res.status);
                write_response(out, &res, status);
                return Answered::Refused(status);
            }
            // An event stream has no subprotocol.
            Decision::Accept(state) | Decision::AcceptProtocol(state, _) => state,
        };
        // A browser reads a cross-origin stream only if the answer names its origin; the
        // origin passed the allow-list (or there is none), as a WebSocket page's would.
        response::event_stream(out, req.origin());
        if let Some(retry) = cfg.event_retry {
            sse::retry(out, u64::try_from(retry.as_millis()).unwrap_or(u64::MAX));
        }
        self.opened_stream(now);
        Answered::Open(state, None)
    }
}

/// Browsers always send Origin on an upgrade (and on a cross-origin request); clients that
/// are not browsers may omit it, and an allow-list guards against cross-site pages, so a
/// missing Origin is let through.
fn origin_allowed(req: &Request<'_, '_>, cfg: &Config) -> bool {
    match req.origin() {
        Some(origin) => {
            cfg.allowed_origins.is_empty() || cfg.allowed_origins.iter().any(|o| o == origin)
        }
        None => true,
    }
}

/// The status of an application's refusal: a client or server error, else 400.
fn refusal_status(status: u16) -> u16 {
    if (400..600).contains(&status) {
        status
    } else {
        400
    }
}

fn write_response(out: &mut Vec<u8>, res: &Response, status: u16) {
    let headers: Vec<(&str, &str)> = res.headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
    response::http_response(out, status, &headers, res.content_type, &res.body);
}

fn refused<S>(out: &mut Vec<u8>, status: u16) -> Answered<S> {
    response::error(out, status);
    Answered::Refused(status)
}

//! Layer 3: the loop — `mio::Poll`, the listener, `Slab<Conn>`, the timers, the topics and
//! the inbox. The only module that does I/O or reads the clock.
//!
//! Per readable event: read into the one loop-wide buffer until `WouldBlock` (at most
//! `max_reads_per_event` reads, then the connection waits its turn on a ready list), hand the
//! bytes to [`Conn::read_event`], call the handler for each event, write what the callbacks
//! produced in one write, then register writable interest only if bytes are left queued.

pub mod inbox;
pub(crate) mod io;
pub mod timers;
pub mod topics;

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Shutdown, SocketAddr};
use std::rc::Rc;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{debug, info, trace};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Registry, Token, Waker};
use slab::Slab;

use crate::config::{Config, SlowConsumer, MAX_HEADERS};
use crate::conn::{Conn, DeadlineAction, Event, Finish, Millis};
use crate::ctx::Ctx;
use crate::error::Error;
use crate::handle::ServerHandle;
use crate::handler::{Decision, Handler, HttpRequest, Message};
use crate::pool::Pool;
use crate::proto::frame::{FrameHeader, OpCode};
use crate::proto::handshake::{self, Header};
use crate::proto::message::DataKind;
use crate::proto::{response, CloseCode, HandshakeError, Status};
use crate::stats::Stats;
use inbox::{Command, ConnId, Inbox};
use timers::{Entry, TimerWheel};
use topics::Topics;

/// Frames for the connection being served are written once they reach this many bytes, and
/// the output buffer is shrunk back to it after a larger burst.
const OUT_FLUSH_AT: usize = 64 * 1024;

/// Payloads from this size up, sent to the connection being served, are written straight
/// from where they lie rather than copied into the output batch.
const DIRECT_WRITE_MIN: usize = 4 * 1024;

/// A connection slot: the protocol state and the socket it belongs to.
pub(crate) struct Slot {
    pub(crate) conn: Conn,
    sock: TcpStream,
    pub(crate) peer: SocketAddr,
    gen: u32,
    /// Answer the request head with this status instead of upgrading (over a limit).
    refuse: Option<u16>,
    writable: bool,
    /// The deadline entered in the timer wheel; [`NOT_SCHEDULED`] for none.
    scheduled: Millis,
    /// The queued bytes last counted in `Stats::queued_bytes`.
    accounted: usize,
}

/// `Slot::scheduled` when nothing is in the wheel (an `Option` would cost 8 more bytes).
const NOT_SCHEDULED: Millis = Millis(u64::MAX);

/// A close to report to the handler once the current callback has returned.
struct Report {
    id: ConnId,
    code: CloseCode,
    reason: String,
}

/// Everything of the server but the handler and the read buffer, so a [`Ctx`] can borrow it
/// while a message borrows the read buffer.
pub(crate) struct Core {
    cfg: Config,
    conns: Slab<Slot>,
    /// Frames for the connection being served, written in one go after its callbacks.
    out: Vec<u8>,
    /// Frames for any other connection, written at once.
    tmp: Vec<u8>,
    current: Option<usize>,
    pool: Pool,
    timers: TimerWheel,
    due: Vec<Entry>,
    targets: Vec<ConnId>,
    now: Millis,
    start: Instant,
    registry: Registry,
    token_base: usize,
    next_gen: u32,
    pub(crate) stats: Stats,
    pub(crate) topics: Topics,
    reports: VecDeque<Report>,
    per_ip: HashMap<IpAddr, u32>,
    /// Connections counted against `max_connections`: all but the ones being refused.
    admitted: usize,
    ready_again: Vec<usize>,
    shutdown_at: Option<Millis>,
}

/// The server: a listener and its connections on one poll loop.
pub struct Server<H: Handler> {
    handler: H,
    listener: Option<TcpListener>,
    local_addr: SocketAddr,
    rbuf: Vec<u8>,
    core: Core,
    inbox: Inbox,
    handle: ServerHandle,
    poll: Option<Poll>,
}

impl<H: Handler> Server<H> {
    /// Binds `addr` with a poll loop of its own, for [`Server::run`].
    ///
    /// # Errors
    /// [`Error::Config`] for an invalid configuration, [`Error::Bind`] if the address cannot
    /// be bound (in use, no permission), [`Error::Io`] if the poll cannot be created.
    pub fn bind(addr: SocketAddr, cfg: Config, handler: H) -> Result<Self, Error> {
        let poll = Poll::new()?;
        let registry = poll.registry().try_clone()?;
        let mut server = Self::with_registry(addr, cfg, handler, registry, Token(0))?;
        server.poll = Some(poll);
        Ok(server)
    }

    /// Binds `addr` and registers with another loop's `registry`, for an application that
    /// owns its `mio::Poll`. The server uses every token from `first_token` up: the listener,
    /// its waker, then one per connection. Drive it with [`Server::handle_event`],
    /// [`Server::next_timeout`] and [`Server::handle_timeouts`].
    ///
    /// A `mio::Poll` supports one active `Waker`: the server registers one at
    /// `first_token + 1`, so the application's own loop must not register another.
    ///
    /// # Errors
    /// As [`Server::bind`].
    pub fn with_registry(
        addr: SocketAddr,
        cfg: Config,
        handler: H,
        registry: Registry,
        first_token: Token,
    ) -> Result<Self, Error> {
        cfg.validate().map_err(Error::Config)?;
        let mut listener = listen(addr, cfg.listen_backlog).map_err(|e| Error::Bind(addr, e))?;
        let local_addr = listener.local_addr()?;
        let base = first_token.0;
        registry.register(&mut listener, Token(base), Interest::READABLE)?;
        let waker = Arc::new(Waker::new(&registry, Token(base + 1))?);
        let (tx, rx) = mpsc::channel();
        let rbuf = vec![0u8; cfg.read_buffer_size];
        let core = Core {
            pool: Pool::new(
                32,
                cfg.max_message_size
                    .min(64 * 1024)
                    .max(cfg.max_request_head),
            ),
            cfg,
            conns: Slab::new(),
            out: Vec::with_capacity(OUT_FLUSH_AT),
            tmp: Vec::new(),
            current: None,
            timers: TimerWheel::new(1024, 50),
            due: Vec::new(),
            targets: Vec::new(),
            now: Millis(0),
            start: Instant::now(),
            registry,
            token_base: base,
            next_gen: 0,
            stats: Stats::default(),
            topics: Topics::default(),
            reports: VecDeque::new(),
            per_ip: HashMap::new(),
            admitted: 0,
            ready_again: Vec::new(),
            shutdown_at: None,
        };
        Ok(Server {
            handler,
            listener: Some(listener),
            local_addr,
            rbuf,
            core,
            inbox: Inbox { rx },
            handle: ServerHandle::new(tx, waker),
            poll: None,
        })
    }

    /// The address the server listens on (useful after binding port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// A handle for other threads.
    pub fn handle(&self) -> ServerHandle {
        self.handle.clone()
    }

    /// The handler.
    pub fn handler_mut(&mut self) -> &mut H {
        &mut self.handler
    }

    /// The server's counters.
    pub fn stats(&self) -> &Stats {
        &self.core.stats
    }

    /// Publishes to every subscriber of `topic` from outside a callback (an embedding
    /// application's own event). Returns the subscribers it was written or queued to.
    pub fn publish(&mut self, topic: &str, msg: Message<'_>) -> usize {
        self.core.tick();
        let n = self.core.publish(topic, msg);
        self.drain_reports();
        n
    }

    /// Sends to every open connection from outside a callback. Returns how many it reached.
    pub fn broadcast(&mut self, msg: Message<'_>) -> usize {
        self.core.tick();
        let n = self.core.broadcast(msg);
        self.drain_reports();
        n
    }

    /// Sends to one connection from outside a callback. False if it was not sent.
    pub fn send(&mut self, id: ConnId, msg: Message<'_>) -> bool {
        self.core.tick();
        let sent = self.core.send(id, msg);
        self.drain_reports();
        sent
    }

    /// True once a shutdown has finished: no connection is left.
    pub fn is_finished(&self) -> bool {
        self.core.shutdown_at.is_some() && self.core.conns.is_empty()
    }

    /// Runs the loop on this thread until [`ServerHandle::shutdown`] has completed.
    ///
    /// # Errors
    /// [`Error::Io`] if polling fails; [`Error::Config`] for a server made with
    /// [`Server::with_registry`], whose loop belongs to the application.
    pub fn run(&mut self) -> Result<(), Error> {
        let mut poll = self
            .poll
            .take()
            .ok_or(Error::Config("the server has no poll of its own"))?;
        let mut events = Events::with_capacity(1024);
        info!("listening on ws://{}", self.local_addr);
        let result = loop {
            if self.is_finished() {
                break Ok(());
            }
            let timeout = self.next_timeout();
            if let Err(e) = poll.poll(&mut events, timeout) {
                if io::interrupted(&e) {
                    continue;
                }
                break Err(Error::Io(e));
            }
            for event in events.iter() {
                self.handle_event(event);
            }
            self.handle_timeouts();
        };
        self.poll = Some(poll);
        info!("stopped");
        result
    }

    /// How long the application's poll may sleep: until the next deadline, zero if work is
    /// waiting, `None` when nothing is due (an idle server does not wake).
    pub fn next_timeout(&mut self) -> Option<Duration> {
        if !self.core.ready_again.is_empty() {
            return Some(Duration::ZERO);
        }
        let next = self.core.timers.next_expiry();
        let next = match (next, self.core.shutdown_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }?;
        self.core.tick();
        Some(Duration::from_millis(next.since(self.core.now)))
    }

    /// Handles one event from the poll. Returns false if the token is not the server's.
    ///
    /// Performs a bounded amount of work: at most `max_reads_per_event` reads of the
    /// connection; one with more to read is served again on the next turn.
    pub fn handle_event(&mut self, event: &mio::event::Event) -> bool {
        let token = event.token().0;
        let Some(offset) = token.checked_sub(self.core.token_base) else {
            return false;
        };
        self.core.tick();
        match offset {
            0 => self.accept(),
            1 => self.drain_inbox(),
            n => {
                let key = n - 2;
                if event.is_writable() || event.is_write_closed() || event.is_error() {
                    self.core.write_queued(key);
                }
                if event.is_readable() || event.is_read_closed() || event.is_error() {
                    let drain = event.is_read_closed() || event.is_error();
                    self.on_readable(key, drain);
                }
                self.core.settle(key);
                self.drain_reports();
            }
        }
        true
    }

    /// Fires due deadlines and serves connections left with more to read.
    pub fn handle_timeouts(&mut self) {
        self.core.tick();
        let now = self.core.now;
        let mut due = std::mem::take(&mut self.core.due);
        self.core.timers.expire(now, &mut due);
        for entry in due.drain(..) {
            self.core.on_timer(entry);
        }
        self.core.due = due;
        if self.core.shutdown_at.is_some_and(|at| now >= at) {
            let keys: Vec<usize> = self.core.conns.iter().map(|(k, _)| k).collect();
            for key in keys {
                self.core.remove(key);
            }
        }
        let ready = std::mem::take(&mut self.core.ready_again);
        for key in ready {
            self.on_readable(key, true);
            self.core.settle(key);
        }
        self.drain_reports();
    }

    fn accept(&mut self) {
        let Some(listener) = self.listener.as_mut() else {
            return;
        };
        loop {
            match listener.accept() {
                Ok((sock, peer)) => self.core.admit(sock, peer),
                Err(e) if io::would_block(&e) => break,
                Err(e) if io::interrupted(&e) => continue,
                Err(e) => {
                    // EMFILE and friends: the next connection will retry.
                    debug!("accept failed: {e}");
                    break;
                }
            }
        }
    }

    fn drain_inbox(&mut self) {
        while let Ok(cmd) = self.inbox.rx.try_recv() {
            match cmd {
                Command::Publish { topic, kind, data } => {
                    self.core.publish(&topic, message(kind, &data));
                }
                Command::Send { id, kind, data } => {
                    self.core.send(id, message(kind, &data));
                }
                Command::Broadcast { kind, data } => {
                    self.core.broadcast(message(kind, &data));
                }
                Command::Close { id, code, reason } => self.core.close(id, code, &reason),
                Command::Stats(reply) => {
                    let _ = reply.try_send(self.core.stats);
                }
                Command::Shutdown => self.shutdown(),
            }
            self.drain_reports();
        }
    }

    /// Stops accepting, closes every open connection with 1001 and drops the ones still
    /// handshaking; the loop ends when all are gone or the close timeout has passed
    /// ([`Server::is_finished`]).
    pub fn shutdown(&mut self) {
        if self.core.shutdown_at.is_some() {
            return;
        }
        info!(
            "shutting down: closing {} connections with 1001",
            self.core.conns.len()
        );
        if let Some(mut listener) = self.listener.take() {
            let _ = self.core.registry.deregister(&mut listener);
        }
        self.core.shutdown_at = Some(self.core.now.after(self.core.cfg.close_timeout));
        let keys: Vec<usize> = self.core.conns.iter().map(|(k, _)| k).collect();
        for key in keys {
            let Some(slot) = self.core.conns.get(key) else {
                continue;
            };
            if slot.conn.is_open() {
                let id = ConnId {
                    key: key as u32,
                    gen: slot.gen,
                };
                self.core
                    .close(id, CloseCode::GOING_AWAY, "server shutting down");
            } else if slot.conn.state() == crate::conn::State::Connecting {
                self.core.remove(key);
            }
        }
    }

    /// Reads and serves one connection. `drain`: read until `WouldBlock` even after a short
    /// read, because the peer's FIN may be waiting behind the data with no further event.
    fn on_readable(&mut self, key: usize, drain: bool) {
        self.core.current = Some(key);
        let cap = self.core.cfg.max_reads_per_event;
        let mut reads = 0;
        loop {
            if reads == cap {
                self.core.ready_again.push(key);
                break;
            }
            let Some(slot) = self.core.conns.get_mut(key) else {
                break;
            };
            match io::read(&mut slot.sock, &mut self.rbuf) {
                io::ReadOutcome::Data(n) => {
                    reads += 1;
                    self.core.stats.bytes_in += n as u64;
                    slot.conn.on_bytes(self.core.now);
                    self.process(key, n);
                    // A short read emptied the socket. With edge-triggered epoll, bytes or a
                    // FIN arriving later raise a new event, so the read that would say
                    // WouldBlock is skipped, unless this event already reported the FIN.
                    if cfg!(target_os = "linux") && !drain && n < self.rbuf.len() {
                        break;
                    }
                }
                io::ReadOutcome::WouldBlock => break,
                io::ReadOutcome::Closed => {
                    self.core.flush(key, Buf::Out);
                    self.core.remove(key);
                    break;
                }
            }
        }
        self.core.flush(key, Buf::Out);
        self.core.current = None;
    }

    /// Hands `n` freshly read bytes to the connection and its events to the handler.
    fn process(&mut self, key: usize, n: usize) {
        let Server {
            handler,
            core,
            rbuf,
            ..
        } = self;
        let mut input: &mut [u8] = rbuf.get_mut(..n).unwrap_or_default();
        while let Some(slot) = core.conns.get_mut(key) {
            let id = ConnId {
                key: key as u32,
                gen: slot.gen,
            };
            let event = slot.conn.read_event(
                &mut input,
                &mut core.out,
                &mut core.pool,
                &core.cfg,
                core.now,
            );
            let Some(event) = event else { break };
            match event {
                Event::Head(data) => {
                    on_head(handler, core, key, data.as_slice());
                    data.recycle(&mut core.pool);
                }
                Event::BadHead(e) => core.refuse(key, e.status()),
                Event::Text(text) => on_message(handler, core, id, Message::Text(text)),
                Event::Message(kind, data) => {
                    on_message(handler, core, id, message(kind, data.as_slice()));
                    data.recycle(&mut core.pool);
                }
                Event::Closed(frame) => {
                    debug!("[{id}] peer closed with {}", frame.code());
                    core.report(id, frame.code(), frame.reason());
                }
                Event::Flush => core.flush(key, Buf::Out),
                Event::Failed(e) => {
                    debug!("[{id}] protocol error: {e}");
                    core.report(id, e.close_code(), e.as_str());
                }
            }
            drain_reports(handler, core);
            if core.out.len() >= core.flush_at() {
                core.flush(key, Buf::Out);
            }
        }
    }

    fn drain_reports(&mut self) {
        drain_reports(&mut self.handler, &mut self.core);
    }
}

/// A non-blocking listener with `SO_REUSEADDR` and the configured backlog.
fn listen(addr: SocketAddr, backlog: u32) -> std::io::Result<TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(i32::try_from(backlog).unwrap_or(i32::MAX))?;
    Ok(TcpListener::from_std(socket.into()))
}

fn message(kind: DataKind, bytes: &[u8]) -> Message<'_> {
    match kind {
        // A message assembled across reads or fragments: the connection validated it as it
        // came, so this look cannot fail.
        DataKind::Text => Message::Text(core::str::from_utf8(bytes).unwrap_or_default()),
        DataKind::Binary => Message::Binary(bytes),
    }
}

fn on_message<H: Handler>(handler: &mut H, core: &mut Core, id: ConnId, msg: Message<'_>) {
    core.stats.messages_in += 1;
    trace!("[{id}] message of {} bytes", msg.len());
    handler.on_message(&mut Ctx::new(core, id), msg);
}

fn drain_reports<H: Handler>(handler: &mut H, core: &mut Core) {
    while let Some(r) = core.reports.pop_front() {
        core.stats.close(r.code.as_u16());
        handler.on_close(&mut Ctx::new(core, r.id), r.code, &r.reason);
    }
}

/// Answers a complete request head: upgrade, HTTP answer, or refusal.
fn on_head<H: Handler>(handler: &mut H, core: &mut Core, key: usize, head: &[u8]) {
    let Some(slot) = core.conns.get(key) else {
        return;
    };
    let (peer, refuse, gen) = (slot.peer, slot.refuse, slot.gen);
    let mut table = [Header::EMPTY; MAX_HEADERS];
    let limit = core.cfg.max_headers.min(MAX_HEADERS);
    let req = match handshake::parse(head, table.get_mut(..limit).unwrap_or_default()) {
        Ok(Status::Complete((req, _))) => req,
        Ok(Status::Partial) => return core.refuse(key, HandshakeError::Malformed.status()),
        Err(e) => return core.refuse(key, e.status()),
    };
    if let Some(status) = refuse {
        return core.refuse(key, status);
    }
    let view = HttpRequest::new(&req, peer);
    if !req.is_upgrade() {
        let res = handler.on_request(&view, &core.stats);
        core.stats.http_requests += 1;
        let headers: Vec<(&str, &str)> =
            res.headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        response::http_response(
            &mut core.out,
            res.status,
            &headers,
            res.content_type,
            &res.body,
        );
        if let Some(slot) = core.conns.get_mut(key) {
            slot.conn.answered_http(&mut core.pool, &core.cfg, core.now);
        }
        debug!(
            "[{key}] HTTP {} {} -> {}",
            req.method, req.target, res.status
        );
        return;
    }
    let key_bytes = match req.validate_upgrade() {
        Ok(k) => k,
        Err(e) => {
            debug!("[{key}] upgrade refused: {e}");
            return core.refuse(key, e.status());
        }
    };
    // Browsers always send Origin; clients that are not browsers may omit it, and an
    // allow-list guards against cross-site pages, so a missing Origin is let through.
    if let Some(origin) = req.origin() {
        if !core.cfg.allowed_origins.is_empty()
            && !core.cfg.allowed_origins.iter().any(|o| o == origin)
        {
            debug!("[{key}] origin {origin:?} not allowed");
            return core.refuse(key, HandshakeError::ForbiddenOrigin.status());
        }
    }
    let protocol = match handler.on_upgrade(&view) {
        Decision::Reject(status) => return core.refuse(key, status),
        Decision::AcceptProtocol(p) => Some(p),
        Decision::Accept => {
            let prefs: Vec<&str> = core.cfg.protocols.iter().map(String::as_str).collect();
            response::select_protocol(&prefs, req.protocols())
        }
    };
    let Some(slot) = core.conns.get_mut(key) else {
        return;
    };
    slot.conn
        .accept(&mut core.out, key_bytes, protocol, core.now);
    core.stats.accepted += 1;
    let id = ConnId {
        key: key as u32,
        gen,
    };
    debug!("[{id}] open: {} {} from {peer}", req.method, req.target);
    handler.on_open(&mut Ctx::new(core, id));
}

/// Which scratch buffer holds a connection's new frames.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Buf {
    Out,
    Tmp,
}

impl Core {
    pub(crate) fn config(&self) -> &Config {
        &self.cfg
    }

    /// How much of the current connection's frames may wait in `out`: what the socket does
    /// not take of it becomes the queue, which must stay within `max_backpressure` plus one
    /// message.
    fn flush_at(&self) -> usize {
        self.cfg.max_backpressure.clamp(1, OUT_FLUSH_AT)
    }

    /// Reads the clock once per wake-up.
    fn tick(&mut self) {
        self.now = Millis(u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX));
    }

    pub(crate) fn slot(&self, id: ConnId) -> Option<&Slot> {
        self.conns.get(id.key as usize).filter(|s| s.gen == id.gen)
    }

    fn live(&mut self, id: ConnId) -> Option<&mut Slot> {
        self.conns
            .get_mut(id.key as usize)
            .filter(|s| s.gen == id.gen)
    }

    fn admit(&mut self, mut sock: TcpStream, peer: SocketAddr) {
        let over = self.admitted >= self.cfg.max_connections;
        let per_ip = self.per_ip.get(&peer.ip()).copied().unwrap_or(0);
        let ip_over = self.cfg.max_connections_per_ip > 0
            && per_ip as usize >= self.cfg.max_connections_per_ip;
        // Refused connections get their 503 after their head is read, in a bounded number of
        // spare slots. Past those, the answer is written at once, after draining what the
        // client sent already, so that closing sends a FIN behind the answer rather than a
        // reset that could destroy it.
        let spare = (self.cfg.max_connections / 4).clamp(16, 4096);
        if self.conns.len() >= self.cfg.max_connections + spare {
            self.stats.reject(503);
            debug!("at capacity: answering 503 at once to {peer}");
            let mut sink = [0u8; 1024];
            for _ in 0..8 {
                if !matches!(io::read(&mut sock, &mut sink), io::ReadOutcome::Data(_)) {
                    break;
                }
            }
            self.tmp.clear();
            response::error(&mut self.tmp, 503);
            let _ = io::write(&mut sock, &self.tmp);
            self.tmp.clear();
            let _ = sock.shutdown(Shutdown::Write);
            return;
        }
        let refuse = (over || ip_over || self.shutdown_at.is_some()).then_some(503);
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        let token = Token(self.token_base + 2 + key);
        if self
            .registry
            .register(&mut sock, token, Interest::READABLE)
            .is_err()
        {
            return;
        }
        let _ = sock.set_nodelay(true);
        self.next_gen = self.next_gen.wrapping_add(1);
        let gen = self.next_gen;
        entry.insert(Slot {
            conn: Conn::new(self.now, &self.cfg),
            sock,
            peer,
            gen,
            refuse,
            writable: false,
            scheduled: NOT_SCHEDULED,
            accounted: 0,
        });
        if refuse.is_none() {
            *self.per_ip.entry(peer.ip()).or_default() += 1;
            self.admitted += 1;
        }
        self.stats.connections_open += 1;
        trace!("[{key}.{gen}] accepted from {peer}");
        self.settle(key);
    }

    /// Answers the request with an HTTP error status, then shuts the connection down.
    fn refuse(&mut self, key: usize, status: u16) {
        let Some(slot) = self.conns.get_mut(key) else {
            return;
        };
        self.stats.reject(status);
        response::error(&mut self.out, status);
        slot.conn.answered_http(&mut self.pool, &self.cfg, self.now);
        debug!("[{key}] refused with {status}");
    }

    fn report(&mut self, id: ConnId, code: CloseCode, reason: &str) {
        self.reports.push_back(Report {
            id,
            code,
            reason: reason.to_owned(),
        });
    }

    /// Writes a connection's new frames: after the queue, directly when it is empty; keeps
    /// what the socket did not take.
    fn flush(&mut self, key: usize, which: Buf) {
        let mut buf = std::mem::take(match which {
            Buf::Out => &mut self.out,
            Buf::Tmp => &mut self.tmp,
        });
        let mut failed = false;
        if let Some(slot) = self.conns.get_mut(key) {
            if !buf.is_empty() {
                if slot.conn.queue().is_empty() {
                    match io::write(&mut slot.sock, &buf) {
                        Ok(n) => {
                            self.stats.bytes_out += n as u64;
                            let rest = buf.get(n..).unwrap_or_default();
                            slot.conn.queue_mut().push_remainder(rest, n > 0);
                        }
                        Err(_) => failed = true,
                    }
                } else {
                    slot.conn.queue_mut().push(&buf);
                }
            } else if !slot.conn.queue().is_empty() && !slot.writable {
                // Frames queued directly (a pong ahead of data): try them now.
                match io::write_queue(&mut slot.sock, slot.conn.queue_mut()) {
                    Ok(n) => self.stats.bytes_out += n as u64,
                    Err(_) => failed = true,
                }
            }
        }
        buf.clear();
        if buf.capacity() > OUT_FLUSH_AT {
            buf.shrink_to(OUT_FLUSH_AT);
        }
        match which {
            Buf::Out => self.out = buf,
            Buf::Tmp => self.tmp = buf,
        }
        if failed {
            self.remove(key);
        }
    }

    /// On writable readiness: writes the queue until empty or the socket is full.
    fn write_queued(&mut self, key: usize) {
        let Some(slot) = self.conns.get_mut(key) else {
            return;
        };
        let result = io::write_queue(&mut slot.sock, slot.conn.queue_mut());
        match result {
            Ok(n) => self.stats.bytes_out += n as u64,
            Err(_) => self.remove(key),
        }
    }

    /// After I/O on a connection: the slow-consumer policy, shutdown or close when finished,
    /// writable interest only while bytes are queued, and its next deadline.
    fn settle(&mut self, key: usize) {
        let Some(slot) = self.conns.get_mut(key) else {
            return;
        };
        let id = ConnId {
            key: key as u32,
            gen: slot.gen,
        };
        let Some(slot) = self.conns.get_mut(key) else {
            return;
        };
        match slot.conn.finish() {
            Finish::Keep => {}
            Finish::ShutdownWrite => {
                let _ = slot.sock.shutdown(Shutdown::Write);
                slot.conn.shut_write();
            }
            Finish::Close => {
                trace!("[{id}] closed");
                self.remove(key);
                return;
            }
        }
        let queued = slot.conn.queue().len();
        self.stats.queued(slot.accounted, queued);
        slot.accounted = queued;
        let wants = slot.conn.wants_write();
        if wants != slot.writable {
            let interest = if wants {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            let token = Token(self.token_base + 2 + key);
            if self
                .registry
                .reregister(&mut slot.sock, token, interest)
                .is_ok()
            {
                slot.writable = wants;
            }
        }
        if let Some(at) = slot.conn.next_deadline(&self.cfg) {
            if at < slot.scheduled {
                slot.scheduled = at;
                self.timers.insert(Entry {
                    at,
                    key: key as u32,
                    gen: slot.gen,
                });
            }
        }
    }

    fn on_timer(&mut self, entry: Entry) {
        let key = entry.key as usize;
        let Some(slot) = self.conns.get_mut(key) else {
            return;
        };
        if slot.gen != entry.gen || slot.scheduled != entry.at {
            return; // superseded by an earlier entry
        }
        slot.scheduled = NOT_SCHEDULED;
        let id = ConnId {
            key: entry.key,
            gen: slot.gen,
        };
        match slot.conn.on_deadline(&mut self.tmp, &self.cfg, self.now) {
            DeadlineAction::Drop(why) => {
                debug!("[{id}] {}: dropping", why.as_str());
                self.stats.timeouts += 1;
                self.remove(key);
                return;
            }
            DeadlineAction::Close => {
                debug!("[{id}] idle timeout: closing");
                self.report(id, CloseCode::NORMAL, "idle timeout");
            }
            DeadlineAction::Ping => trace!("[{id}] ping"),
            DeadlineAction::Nothing => {}
        }
        self.flush(key, Buf::Tmp);
        self.settle(key);
    }

    /// Closes the TCP connection and frees the slot; reports 1006 if it was open.
    fn remove(&mut self, key: usize) {
        if !self.conns.contains(key) {
            return;
        }
        let mut slot = self.conns.remove(key);
        let id = ConnId {
            key: key as u32,
            gen: slot.gen,
        };
        if let Some(code) = slot.conn.on_closed(&mut self.pool) {
            debug!("[{id}] connection lost");
            self.report(id, code, "");
        }
        self.stats.queued(slot.accounted, 0);
        if slot.refuse.is_none() {
            self.admitted -= 1;
            if let Some(n) = self.per_ip.get_mut(&slot.peer.ip()) {
                *n -= 1;
                if *n == 0 {
                    self.per_ip.remove(&slot.peer.ip());
                }
            }
        }
        self.topics.remove_conn(id);
        self.stats.connections_open = self.stats.connections_open.saturating_sub(1);
        let _ = self.registry.deregister(&mut slot.sock);
        if self.current == Some(key) {
            self.out.clear();
        }
    }

    /// Sends one message to one connection.
    pub(crate) fn send(&mut self, id: ConnId, msg: Message<'_>) -> bool {
        let key = id.key as usize;
        let now = self.now;
        let Some(slot) = self.conns.get_mut(key).filter(|s| s.gen == id.gen) else {
            return false;
        };
        if !slot.conn.is_open() {
            return false;
        }
        let header = data_header(&msg);
        let payload = msg.as_bytes();
        if self.current == Some(key) && payload.len() >= DIRECT_WRITE_MIN {
            return self.send_direct(key, &header, payload);
        }
        if self.current == Some(key) && slot.conn.queue().is_empty() {
            // The common echo path: straight into the batch written after the callbacks.
            encode_frame(&mut self.out, &header, msg.as_bytes());
            slot.conn.note_message(now);
            self.stats.messages_out += 1;
            if self.out.len() >= self.flush_at() {
                self.flush(key, Buf::Out);
                self.settle(key);
            }
            return true;
        }
        let mut frame = std::mem::take(&mut self.tmp);
        encode_frame(&mut frame, &header, msg.as_bytes());
        let delivered = self.deliver(key, &frame, &mut None);
        frame.clear();
        self.tmp = frame;
        delivered
    }

    /// A large message to the connection being served: after the batch so far, written with
    /// one vectored write from where the payload lies (the read buffer, for an echo) instead
    /// of being copied into the batch. Only what the socket does not take is copied, into the
    /// queue.
    fn send_direct(&mut self, key: usize, header: &FrameHeader, payload: &[u8]) -> bool {
        if !self.out.is_empty() {
            self.flush(key, Buf::Out);
        }
        let now = self.now;
        let Some(slot) = self.conns.get_mut(key) else {
            return false;
        };
        let mut head = [0u8; FrameHeader::MAX_LEN];
        let n = header.encode(&mut head);
        let head = head.get(..n).unwrap_or_default();
        if !slot.conn.queue().is_empty() {
            if slot.conn.queue().len() + n + payload.len() > self.cfg.max_backpressure {
                return match self.cfg.slow_consumer {
                    SlowConsumer::Drop => {
                        self.stats.slow_drops += 1;
                        false
                    }
                    SlowConsumer::Close => {
                        self.close_slow(key);
                        false
                    }
                };
            }
            slot.conn.queue_mut().push_parts(&[head, payload]);
        } else {
            match io::write_parts(&mut slot.sock, head, payload) {
                Ok(written) => {
                    self.stats.bytes_out += written as u64;
                    let rest_head = head.get(written..).unwrap_or_default();
                    let rest = payload.get(written.saturating_sub(n)..).unwrap_or_default();
                    slot.conn.queue_mut().push_parts(&[rest_head, rest]);
                    if written > 0 {
                        slot.conn.queue_mut().mark_started();
                    }
                }
                Err(_) => {
                    self.remove(key);
                    return false;
                }
            }
        }
        slot.conn.note_message(now);
        self.stats.messages_out += 1;
        true
    }

    /// Gives one framed message to a connection: written at once if its queue is empty,
    /// queued (sharing `shared` with other recipients) if not, or refused by the
    /// slow-consumer policy.
    fn deliver(&mut self, key: usize, frame: &[u8], shared: &mut Option<Rc<[u8]>>) -> bool {
        let Some(slot) = self.conns.get_mut(key) else {
            return false;
        };
        if !slot.conn.is_open() {
            return false;
        }
        let queued = slot.conn.queue().len();
        if self.current == Some(key) && queued == 0 {
            self.out.extend_from_slice(frame);
        } else if queued == 0 {
            match io::write(&mut slot.sock, frame) {
                Ok(n) => {
                    self.stats.bytes_out += n as u64;
                    if n < frame.len() {
                        let rc = shared.get_or_insert_with(|| Rc::from(frame)).clone();
                        slot.conn.queue_mut().push_shared(rc, n);
                    }
                }
                Err(_) => {
                    self.remove(key);
                    return false;
                }
            }
        } else if queued + frame.len() > self.cfg.max_backpressure {
            match self.cfg.slow_consumer {
                SlowConsumer::Drop => {
                    self.stats.slow_drops += 1;
                    return false;
                }
                SlowConsumer::Close => {
                    self.close_slow(key);
                    return false;
                }
            }
        } else {
            let rc = shared.get_or_insert_with(|| Rc::from(frame)).clone();
            slot.conn.queue_mut().push_shared(rc, 0);
        }
        if let Some(slot) = self.conns.get_mut(key) {
            slot.conn.note_message(self.now);
        }
        self.stats.messages_out += 1;
        if self.current != Some(key) {
            self.settle(key);
        }
        true
    }

    pub(crate) fn subscribe(&mut self, id: ConnId, pattern: &str) -> bool {
        if !self.live(id).is_some_and(|s| s.conn.is_open())
            || self.topics.count(id) >= self.cfg.max_subscriptions
        {
            return false;
        }
        self.topics.subscribe(id, pattern)
    }

    /// Frames once, then delivers to every subscriber of `topic`.
    pub(crate) fn publish(&mut self, topic: &str, msg: Message<'_>) -> usize {
        let mut targets = std::mem::take(&mut self.targets);
        self.topics.matching(topic, &mut targets);
        let n = self.deliver_all(&targets, msg);
        targets.clear();
        self.targets = targets;
        n
    }

    /// Frames once, then delivers to every open connection.
    pub(crate) fn broadcast(&mut self, msg: Message<'_>) -> usize {
        let mut targets = std::mem::take(&mut self.targets);
        targets.extend(
            self.conns
                .iter()
                .filter(|(_, s)| s.conn.is_open())
                .map(|(k, s)| ConnId {
                    key: k as u32,
                    gen: s.gen,
                }),
        );
        let n = self.deliver_all(&targets, msg);
        targets.clear();
        self.targets = targets;
        n
    }

    fn deliver_all(&mut self, targets: &[ConnId], msg: Message<'_>) -> usize {
        if targets.is_empty() {
            return 0;
        }
        let mut frame = std::mem::take(&mut self.tmp);
        encode_frame(&mut frame, &data_header(&msg), msg.as_bytes());
        let mut shared = None;
        let mut n = 0;
        for &id in targets {
            if self.live(id).is_some() && self.deliver(id.key as usize, &frame, &mut shared) {
                n += 1;
            }
        }
        frame.clear();
        self.tmp = frame;
        n
    }

    /// The slow-consumer close: frames not yet begun are dropped and a 1008 close follows
    /// the one on the wire.
    fn close_slow(&mut self, key: usize) {
        let now = self.now;
        let current = self.current == Some(key);
        let Some(slot) = self.conns.get_mut(key) else {
            return;
        };
        let id = ConnId {
            key: key as u32,
            gen: slot.gen,
        };
        let buf = if current {
            &mut self.out
        } else {
            &mut self.tmp
        };
        if slot.conn.close_slow(buf, &self.cfg, now).is_some() {
            self.stats.slow_closes += 1;
            debug!("[{id}] slow consumer: closing with 1008");
            self.report(id, CloseCode::POLICY, "slow consumer");
            if !current {
                self.flush(key, Buf::Tmp);
                self.settle(key);
            }
        }
    }

    /// Starts a server-initiated close; reported to the handler at once.
    pub(crate) fn close(&mut self, id: ConnId, code: CloseCode, reason: &str) {
        let key = id.key as usize;
        let now = self.now;
        let which = if self.current == Some(key) {
            Buf::Out
        } else {
            Buf::Tmp
        };
        let Some(slot) = self.conns.get_mut(key).filter(|s| s.gen == id.gen) else {
            return;
        };
        let buf = match which {
            Buf::Out => &mut self.out,
            Buf::Tmp => &mut self.tmp,
        };
        if slot.conn.close(buf, code, reason, &self.cfg, now) {
            debug!("[{id}] closing with {code}");
            self.report(id, code, reason);
            if which == Buf::Tmp {
                self.flush(key, Buf::Tmp);
                self.settle(key);
            }
        }
    }
}

fn data_header(msg: &Message<'_>) -> FrameHeader {
    let opcode = match msg {
        Message::Text(_) => OpCode::Text,
        Message::Binary(_) => OpCode::Binary,
    };
    FrameHeader::new(true, opcode, msg.len() as u64)
}

fn encode_frame(out: &mut Vec<u8>, header: &FrameHeader, payload: &[u8]) {
    let mut head = [0u8; FrameHeader::MAX_LEN];
    let n = header.encode(&mut head);
    out.extend_from_slice(head.get(..n).unwrap_or_default());
    out.extend_from_slice(payload);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The idle cost per connection of the README's memory formula.
    #[test]
    fn idle_connection_record_stays_small() {
        // A slab entry is the slot or a free-list link, whichever is larger, plus a tag.
        let slot = std::mem::size_of::<Slot>() + 8;
        println!(
            "Conn {} B, Slot {} B",
            std::mem::size_of::<Conn>(),
            std::mem::size_of::<Slot>()
        );
        assert!(slot <= 256, "a slab entry is {slot} bytes");
    }
}

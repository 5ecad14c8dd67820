//! Layer 3: the loop — `mio::Poll`, the listener, `Slab<Conn>`, the timers, the topics and
//! the inbox. The only module that does I/O or reads the clock.
//!
//! Per readable event: read into the one loop-wide buffer until `WouldBlock` (at most
//! `max_reads_per_event` reads, then the connection waits its turn on a ready list), hand the
//! bytes to [`Conn::read_event`], call the handler for each event, write what the callbacks
//! produced in one write, then register writable interest only if bytes are left queued.

mod accept;
pub mod inbox;
pub(crate) mod io;
mod send;
pub mod timers;
pub mod topics;

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Shutdown, SocketAddr};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{debug, info, trace};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Registry, Token, Waker};
use slab::Slab;

use crate::config::Config;
use crate::conn::{Conn, DeadlineAction, Event, Finish, Millis};
use crate::ctx::Ctx;
use crate::error::Error;
use crate::handle::ServerHandle;
use crate::handler::{Handler, Message};
use crate::pool::Pool;
use crate::proto::message::DataKind;
use crate::proto::CloseCode;
use crate::stats::Stats;
use accept::on_head;
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
    /// `now` was read since the loop last went to sleep.
    clock_fresh: bool,
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
            clock_fresh: false,
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
    ///
    /// The server reads the clock once per wake-up; calling this before each poll (as the
    /// loop must, to sleep the right time) is what marks a new wake-up.
    pub fn next_timeout(&mut self) -> Option<Duration> {
        // Whatever happens next happens after the poll returns.
        self.core.clock_fresh = false;
        if !self.core.ready_again.is_empty() {
            return Some(Duration::ZERO);
        }
        let next = self.core.timers.next_expiry();
        let next = match (next, self.core.shutdown_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }?;
        let now = Millis(u64::try_from(self.core.start.elapsed().as_millis()).unwrap_or(u64::MAX));
        Some(Duration::from_millis(next.since(now)))
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
        self.core.tick_once();
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
        self.core.tick_once();
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
        // The end of a turn: the next event reads the clock again.
        self.core.clock_fresh = false;
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

/// Which scratch buffer holds a connection's new frames.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Buf {
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

    /// Reads the clock.
    fn tick(&mut self) {
        self.now = Millis(u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX));
        self.clock_fresh = true;
    }

    /// Reads the clock once per wake-up: the events of one poll share one `now`.
    fn tick_once(&mut self) {
        if !self.clock_fresh {
            self.tick();
        }
    }

    pub(crate) fn slot(&self, id: ConnId) -> Option<&Slot> {
        self.conns.get(id.key as usize).filter(|s| s.gen == id.gen)
    }

    fn live(&mut self, id: ConnId) -> Option<&mut Slot> {
        self.conns
            .get_mut(id.key as usize)
            .filter(|s| s.gen == id.gen)
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

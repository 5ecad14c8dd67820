//! Layer 3: the loop — `mio::Poll`, the listeners, `Slab` of connections, and the parts that
//! share it, each behind its own small API: admission, the ready FIFO, the timer wheel, the
//! topic table and the bounded inbox. The only module that does I/O (through the transport).
//!
//! A poll's events only record readiness ([`Server::handle_event`]); the work happens in one
//! [`Server::turn`] with the time the caller read: queued writes, new connections, commands
//! from other threads (a bounded number), then every connection waiting to be read, each
//! within its budget and once, then the deadlines that are due.

mod admission;
mod exports;
pub(crate) mod inbox;
mod ready;
mod send;
pub(crate) mod timers;
pub(crate) mod topics;

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{debug, info, trace};
use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Registry, Token, Waker};
use slab::Slab;

use crate::config::Config;
use crate::conn::{
    Answered, Conn, DeadlineAction, Decide, Decision, Event, Finish, HttpRequest, Kind, Millis,
    Response, State,
};
use crate::ctx::Ctx;
use crate::error::Error;
use crate::handle::ServerHandle;
use crate::handler::{Handler, Message, SendStatus};
use crate::pool::Pool;
use crate::proto::message::DataKind;
use crate::proto::sse::EventId;
use crate::proto::{response, CloseCode};
use crate::stats::Stats;
use crate::transport::{self, ReadOutcome, Transport};
use admission::{Admission, Verdict};
use inbox::{Command, ConnId, Shared, COMMANDS_PER_TURN};
use ready::Ready;
use send::Payload;
use timers::{Entry, TimerWheel};
use topics::Topics;

/// Frames for the connection being served are written once they reach this many bytes, and
/// the batch is shrunk back to it after a larger burst.
const OUT_FLUSH_AT: usize = 64 * 1024;

/// The capacity each write batch keeps between bursts.
pub(crate) const BATCH_BYTES: usize = OUT_FLUSH_AT;

/// Payloads from this size up, sent to the connection being served, are written straight
/// from where they lie rather than copied into the batch.
const DIRECT_WRITE_MIN: usize = 4 * 1024;

/// Listeners a server can have; their tokens follow the waker's.
pub const MAX_LISTENERS: usize = 8;

/// Connections accepted per listener per turn; more wait for the next turn.
const ACCEPTS_PER_TURN: usize = 256;

/// Slot flags.
mod flag {
    /// Writable interest is registered.
    pub const INTEREST_WRITE: u8 = 1;
    /// Waiting in the ready FIFO.
    pub const WAITING: u8 = 2;
    /// The peer's FIN (or an error) was reported: read until `WouldBlock` or EOF.
    pub const DRAIN: u8 = 4;
    /// A writable event waits for this turn.
    pub const WRITABLE: u8 = 8;
    /// Counted by admission (not a refused connection).
    pub const ADMITTED: u8 = 16;
    /// The handler asked for `on_drain` once nothing is queued ([`crate::Ctx::notify_drained`]).
    pub const WAKE: u8 = 32;
}

/// A connection slot: the protocol state and the transport it belongs to.
pub(crate) struct Slot {
    pub(crate) conn: Conn,
    io: Transport,
    pub(crate) peer: Peer,
    gen: u32,
    /// The subprotocol: 0 for none, else its index in `Config::protocols` plus one.
    protocol: u8,
    flags: u8,
    /// The listener that accepted it, an index into `Server::listeners`; [`IN_MEMORY`] for
    /// a connection of the test harness.
    listener: u8,
    /// Its place in the timer wheel (which holds the deadline); `timers::NIL` for none.
    place: u32,
    /// The queued bytes last counted in `Stats::queued_bytes`.
    accounted: u32,
}

impl Slot {
    fn has(&self, f: u8) -> bool {
        self.flags & f != 0
    }
}

/// A peer's address in 18 bytes rather than `SocketAddr`'s 32: the IP (IPv4 as IPv4-mapped
/// IPv6) and the port. An IPv6 peer's flow label and scope id are not kept: nothing connects
/// back to a peer, and admission counts by IP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Peer {
    ip: [u8; 16],
    port: [u8; 2],
}

impl Peer {
    fn new(addr: SocketAddr) -> Peer {
        let ip = match addr.ip() {
            IpAddr::V4(v4) => v4.to_ipv6_mapped(),
            IpAddr::V6(v6) => v6,
        };
        Peer {
            ip: ip.octets(),
            port: addr.port().to_ne_bytes(),
        }
    }

    /// The address, an IPv4-mapped one as IPv4.
    pub(crate) fn addr(self) -> SocketAddr {
        SocketAddr::new(
            Ipv6Addr::from(self.ip).to_canonical(),
            u16::from_ne_bytes(self.port),
        )
    }
}

/// `Slot::listener` of an in-memory connection ([`crate::testing`]).
const IN_MEMORY: u8 = u8::MAX;

/// What to tell the handler once the current callback has returned.
enum Notice {
    Close {
        id: ConnId,
        code: CloseCode,
        reason: Box<str>,
    },
    Drain(ConnId),
}

/// Everything of the server but the handler, the user states and the read buffer, so a
/// [`Ctx`] can borrow it while a message borrows the read buffer.
pub(crate) struct Core {
    cfg: Config,
    conns: Slab<Slot>,
    registry: Registry,
    token_base: usize,
    next_gen: u32,
    /// Frames for the connection being served, written in one go after its callbacks.
    batch: Vec<u8>,
    /// Frames for any other connection, written at once.
    scratch: Vec<u8>,
    current: Option<usize>,
    pool: Pool,
    timers: TimerWheel,
    due: Vec<Entry>,
    targets: Vec<ConnId>,
    pub(crate) topics: Topics,
    admission: Admission,
    ready: Ready,
    writable: Vec<u32>,
    notices: VecDeque<Notice>,
    stats: Stats,
    exports: exports::Exports,
    now: Millis,
    shutdown_at: Option<Millis>,
}

/// The per-connection states of the handler, by slab key, tagged with the generation.
struct States<S>(Vec<Option<(u32, S)>>);

impl<S> States<S> {
    fn get_mut(&mut self, id: ConnId) -> Option<&mut S> {
        match self.0.get_mut(id.key as usize) {
            Some(Some((gen, s))) if *gen == id.gen => Some(s),
            _ => None,
        }
    }

    /// Stores a state; `capacity` is the slab's, which the table follows exactly (no
    /// doubling of its own on top of the slab's).
    fn insert(&mut self, id: ConnId, state: S, capacity: usize) {
        let key = id.key as usize;
        if self.0.len() <= key {
            // Reserved, not written: pages not yet used cost no memory.
            let cap = capacity.max(key + 1);
            self.0.reserve_exact(cap.saturating_sub(self.0.len()));
            self.0.resize_with(key + 1, || None);
        }
        if let Some(slot) = self.0.get_mut(key) {
            *slot = Some((id.gen, state));
        }
    }

    fn take(&mut self, id: ConnId) -> Option<S> {
        let slot = self.0.get_mut(id.key as usize)?;
        match slot {
            Some((gen, _)) if *gen == id.gen => slot.take().map(|(_, s)| s),
            _ => None,
        }
    }
}

struct Listener {
    sock: TcpListener,
    addr: SocketAddr,
    ready: bool,
    /// The TLS configuration of a `wss://` listener; new handshakes use the latest.
    #[cfg(feature = "tls")]
    tls: Option<Arc<rustls::ServerConfig>>,
}

/// The server: listeners and their connections on one poll loop.
pub struct Server<H: Handler> {
    handler: H,
    listeners: Vec<Listener>,
    rbuf: Vec<u8>,
    core: Core,
    states: States<H::State>,
    shared: Arc<Shared>,
    woken: bool,
    inbox_more: bool,
    commands: Vec<Command>,
    handle: ServerHandle,
    poll: Option<Poll>,
    start: Instant,
    on_loop_thread: bool,
    /// The local address the harness's in-memory connections report.
    memory_local: SocketAddr,
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
    /// owns its `mio::Poll`. The server uses every token from `first_token` up: its waker,
    /// [`MAX_LISTENERS`] listener tokens, then one per connection. Drive it with
    /// [`Server::handle_event`] for each event and one [`Server::turn`] after each poll.
    ///
    /// A `mio::Poll` supports one active `Waker`: the server registers one at `first_token`,
    /// so the application's own loop must not register another.
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
        let mut server = Self::unbound_with_registry(cfg, handler, registry, first_token)?;
        server.listen(addr)?;
        Ok(server)
    }

    /// A server with a poll of its own and no listener yet: add them with
    /// [`Server::listen`] (and `listen_tls` with the `tls` feature), then [`Server::run`].
    ///
    /// # Errors
    /// [`Error::Config`] for an invalid configuration, [`Error::Io`] if the poll cannot be
    /// created.
    pub fn unbound(cfg: Config, handler: H) -> Result<Self, Error> {
        let poll = Poll::new()?;
        let registry = poll.registry().try_clone()?;
        let mut server = Self::unbound_with_registry(cfg, handler, registry, Token(0))?;
        server.poll = Some(poll);
        Ok(server)
    }

    /// As [`Server::with_registry`], with no listener yet.
    ///
    /// # Errors
    /// As [`Server::unbound`].
    pub fn unbound_with_registry(
        cfg: Config,
        handler: H,
        registry: Registry,
        first_token: Token,
    ) -> Result<Self, Error> {
        cfg.validate().map_err(Error::Config)?;
        Self::new(cfg, handler, registry, first_token)
    }

    /// Listens on `addr` for `ws://` (and plain HTTP). Returns the bound address.
    ///
    /// # Errors
    /// [`Error::Bind`] if the address cannot be bound, [`Error::Config`] past
    /// [`MAX_LISTENERS`].
    pub fn listen(&mut self, addr: SocketAddr) -> Result<SocketAddr, Error> {
        self.add_listener(
            addr,
            #[cfg(feature = "tls")]
            None,
        )
    }

    /// Listens on `addr` for `wss://` (and HTTPS), with this rustls configuration. Returns
    /// the bound address. Its ALPN list should name `http/1.1`.
    ///
    /// # Errors
    /// As [`Server::listen`].
    #[cfg(feature = "tls")]
    pub fn listen_tls(
        &mut self,
        addr: SocketAddr,
        tls: Arc<rustls::ServerConfig>,
    ) -> Result<SocketAddr, Error> {
        self.add_listener(addr, Some(tls))
    }

    /// Replaces the TLS configuration of the listener bound to `addr` (a renewed
    /// certificate): new handshakes use it, open connections keep theirs. False if no TLS
    /// listener has that address.
    #[cfg(feature = "tls")]
    pub fn set_tls_config(&mut self, addr: SocketAddr, tls: Arc<rustls::ServerConfig>) -> bool {
        let mut found = false;
        for l in self.listeners.iter_mut().filter(|l| l.addr == addr) {
            if let Some(old) = l.tls.as_mut() {
                *old = tls.clone();
                found = true;
            }
        }
        found
    }

    /// Every address the server listens on, and whether it is TLS.
    pub fn listeners(&self) -> Vec<(SocketAddr, bool)> {
        self.listeners
            .iter()
            .map(|l| {
                #[cfg(feature = "tls")]
                let tls = l.tls.is_some();
                #[cfg(not(feature = "tls"))]
                let tls = false;
                (l.addr, tls)
            })
            .collect()
    }

    fn add_listener(
        &mut self,
        addr: SocketAddr,
        #[cfg(feature = "tls")] tls: Option<Arc<rustls::ServerConfig>>,
    ) -> Result<SocketAddr, Error> {
        if self.listeners.len() >= MAX_LISTENERS {
            return Err(Error::Config("at most 8 listeners"));
        }
        let mut sock = listen(addr, &self.core.cfg).map_err(|e| Error::Bind(addr, e))?;
        let local = sock.local_addr()?;
        let token = Token(self.core.token_base - MAX_LISTENERS + self.listeners.len());
        self.core
            .registry
            .register(&mut sock, token, Interest::READABLE)?;
        self.listeners.push(Listener {
            sock,
            addr: local,
            ready: true,
            #[cfg(feature = "tls")]
            tls,
        });
        Ok(local)
    }

    /// A server with no listener and a poll of its own, for [`crate::testing`].
    pub(crate) fn detached(cfg: Config, handler: H) -> Result<Self, Error> {
        Self::unbound(cfg, handler)
    }

    fn new(cfg: Config, handler: H, registry: Registry, first_token: Token) -> Result<Self, Error> {
        let base = first_token.0;
        let waker = Arc::new(Waker::new(&registry, Token(base))?);
        let shared = Arc::new(Shared::new(cfg.max_inbox_bytes));
        let handle = ServerHandle::new(shared.clone(), waker, cfg.send_limit());
        let rbuf = vec![0u8; cfg.read_buffer_size];
        let core = Core {
            pool: Pool::new(cfg.max_spare_buffers, cfg.spare_buffer_size()),
            exports: exports::Exports::new(cfg.max_export_bytes),
            cfg,
            conns: Slab::new(),
            registry,
            token_base: base + 1 + MAX_LISTENERS,
            next_gen: 0,
            batch: Vec::with_capacity(OUT_FLUSH_AT),
            scratch: Vec::new(),
            current: None,
            timers: TimerWheel::new(timers::WHEEL_SLOTS, 50),
            due: Vec::new(),
            targets: Vec::new(),
            topics: Topics::default(),
            admission: Admission::default(),
            ready: Ready::default(),
            writable: Vec::new(),
            notices: VecDeque::new(),
            stats: Stats::default(),
            now: Millis(0),
            shutdown_at: None,
        };
        Ok(Server {
            handler,
            listeners: Vec::new(),
            rbuf,
            core,
            states: States(Vec::new()),
            shared,
            woken: false,
            inbox_more: false,
            commands: Vec::new(),
            handle,
            poll: None,
            start: Instant::now(),
            on_loop_thread: false,
            memory_local: SocketAddr::from(([127, 0, 0, 1], 9001)),
        })
    }

    /// The address of the first listener (useful after binding port 0); `0.0.0.0:0` for a
    /// server with none. [`Server::listeners`] lists them all.
    pub fn local_addr(&self) -> SocketAddr {
        self.listeners
            .first()
            .map_or(SocketAddr::from(([0, 0, 0, 0], 0)), |l| l.addr)
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
    pub fn stats(&self) -> Stats {
        self.core.stats()
    }

    /// Publishes to every subscriber of `topic` from outside a callback (an embedding
    /// application's own event), at the time of the latest turn.
    pub fn publish(&mut self, topic: &str, msg: Message<'_>) -> crate::ctx::Delivery {
        let d = self.core.publish(topic, msg, None);
        self.drain_notices();
        d
    }

    /// As [`Server::publish`], with an event id for the event-stream subscribers, as
    /// [`Ctx::publish_event`] does.
    pub fn publish_event(
        &mut self,
        topic: &str,
        event_id: &str,
        msg: Message<'_>,
    ) -> crate::ctx::Delivery {
        let d = self.core.publish(topic, msg, Some(event_id));
        self.drain_notices();
        d
    }

    /// Delivers a publish that came from elsewhere (another instance, through a broker) to
    /// the local subscribers of `topic`, framed once like a local publish. It is never
    /// exported: a bridge that imports what it received does not send it back.
    pub fn import(&mut self, topic: &str, msg: Message<'_>) -> crate::ctx::Delivery {
        let d = self.core.import(topic, msg, None);
        self.drain_notices();
        d
    }

    /// As [`Server::import`], with an event id for the event-stream subscribers.
    pub fn import_event(
        &mut self,
        topic: &str,
        event_id: &str,
        msg: Message<'_>,
    ) -> crate::ctx::Delivery {
        let d = self.core.import(topic, msg, Some(event_id));
        self.drain_notices();
        d
    }

    /// Hands every local publish kept since the last call to `f`, oldest first, and forgets
    /// them: from callbacks ([`Ctx::publish`]), [`Server::publish`] and
    /// [`ServerHandle::publish`], each after its local delivery. Publishes are kept only
    /// with [`Config::max_export_bytes`] above 0, up to that many bytes between two drains;
    /// past it a publish is not kept and [`Stats::exports_dropped`] counts it. Call it after
    /// each [`Server::turn`] to pass publishes on to a broker that other instances share.
    pub fn drain_exports(&mut self, f: impl FnMut(&str, Message<'_>)) {
        self.core.exports.drain(f);
    }

    /// Sends to every open connection from outside a callback.
    pub fn broadcast(&mut self, msg: Message<'_>) -> crate::ctx::Delivery {
        let d = self.core.broadcast(msg);
        self.drain_notices();
        d
    }

    /// Sends to one connection from outside a callback.
    pub fn send(&mut self, id: ConnId, msg: Message<'_>) -> SendStatus {
        let status = self.core.send(id, msg);
        self.drain_notices();
        status
    }

    /// Sends to one connection with an event id from outside a callback, as
    /// [`Ctx::send_event`] does.
    pub fn send_event(&mut self, id: ConnId, event_id: &str, msg: Message<'_>) -> SendStatus {
        let status = self.core.send_event(id, event_id, msg);
        self.drain_notices();
        status
    }

    /// Closes one connection from outside a callback, as [`Ctx::close_conn`] does.
    pub fn close(&mut self, id: ConnId, code: CloseCode, reason: &str) -> SendStatus {
        let status = self.core.close(id, code, reason);
        self.drain_notices();
        status
    }

    /// Calls `f` for every open connection with its state and a [`Ctx`] about it, from
    /// outside a callback: for a change that applies to connections already open, such as
    /// new access rules after a reload. `f` can send, subscribe, unsubscribe and close.
    /// O(connections): not for the hot path.
    pub fn visit_open(&mut self, mut f: impl FnMut(&mut H, &mut Ctx<'_>, &mut H::State)) {
        let open: Vec<ConnId> = self
            .core
            .conns
            .iter()
            .filter(|(_, s)| s.conn.is_open())
            .map(|(k, s)| ConnId {
                key: k as u32,
                gen: s.gen,
            })
            .collect();
        for id in open {
            if let Some(state) = self.states.get_mut(id) {
                f(&mut self.handler, &mut Ctx::new(&mut self.core, id), state);
            }
            self.drain_notices();
        }
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
        for (addr, tls) in self.listeners() {
            info!("listening on {}://{addr}", if tls { "wss" } else { "ws" });
        }
        let mut timeout = self.turn(Instant::now());
        let result = loop {
            if self.is_finished() {
                break Ok(());
            }
            if let Err(e) = poll.poll(&mut events, timeout) {
                if transport::interrupted(&e) {
                    continue;
                }
                break Err(Error::Io(e));
            }
            for event in events.iter() {
                self.handle_event(event);
            }
            timeout = self.turn(Instant::now());
        };
        self.poll = Some(poll);
        self.shared.publish_stats(&self.core.stats);
        self.shared.stop();
        info!("stopped");
        result
    }

    /// Records one event from the poll; the work waits for [`Server::turn`]. Returns false
    /// if the token is not the server's.
    pub fn handle_event(&mut self, event: &mio::event::Event) -> bool {
        let Some(offset) = event
            .token()
            .0
            .checked_sub(self.core.token_base - 1 - MAX_LISTENERS)
        else {
            return false;
        };
        match offset {
            0 => self.woken = true,
            n if n <= MAX_LISTENERS => match self.listeners.get_mut(n - 1) {
                Some(l) => l.ready = true,
                None => return false,
            },
            n => {
                let key = n - 1 - MAX_LISTENERS;
                let closed = event.is_read_closed() || event.is_error();
                let readable = event.is_readable() || closed;
                let writable = event.is_writable() || event.is_write_closed() || event.is_error();
                self.core.on_ready(key, readable, writable, closed);
            }
        }
        true
    }

    /// One turn of the loop at `now` (read the clock once, just before): writes waiting
    /// for writable sockets, new connections, commands from other threads, every
    /// connection waiting to be read (each once, within its budget), then due deadlines.
    /// Returns how long the poll may sleep: until the next deadline, zero if work is left
    /// over, `None` when nothing is due (an idle server does not wake) and once a shutdown
    /// has finished ([`Server::is_finished`]): a loop that goes on polling then sleeps.
    ///
    /// Performs a bounded amount of work: [`Config::read_budget`] bytes (and about
    /// [`Config::frame_budget`] frames) per waiting connection, a bounded number of accepts
    /// and commands.
    pub fn turn(&mut self, now: Instant) -> Option<Duration> {
        let ms = Millis(
            u64::try_from(now.saturating_duration_since(self.start).as_millis())
                .unwrap_or(u64::MAX),
        );
        self.turn_at(ms)
    }

    pub(crate) fn turn_at(&mut self, now: Millis) -> Option<Duration> {
        self.core.now = self.core.now.max(now);
        if !self.on_loop_thread {
            self.shared.set_loop_thread();
            self.on_loop_thread = true;
        }
        self.shared.turn_begins();
        let mut writable = std::mem::take(&mut self.core.writable);
        for key in writable.drain(..) {
            self.core.on_writable(key as usize);
        }
        self.core.writable = writable;
        self.drain_notices();
        self.accept();
        if self.woken || self.inbox_more {
            self.woken = false;
            self.drain_inbox();
        }
        for _ in 0..self.core.ready.len() {
            let Some(id) = self.core.ready.pop() else {
                break;
            };
            self.serve(id);
        }
        self.expire();
        self.core.ready.shrink();
        if self.core.writable.capacity() > ready::SHRINK_ABOVE {
            self.core.writable.shrink_to(ready::SHRINK_ABOVE);
        }
        if self.core.targets.capacity() > ready::SHRINK_ABOVE {
            self.core.targets.shrink_to(ready::SHRINK_ABOVE);
        }
        self.core.stats.connections_open = self.core.conns.len() as u64;
        self.shared.publish_stats(&self.core.stats);
        let busy = !self.core.ready.is_empty()
            || self.inbox_more
            || !self.core.writable.is_empty()
            || self.listeners.iter().any(|l| l.ready);
        if busy {
            return Some(Duration::ZERO);
        }
        // A finished shutdown has nothing left to wait for (superseded deadlines of closed
        // connections may still sit in the wheel: they would only wake the loop for nothing).
        if self.is_finished() {
            return None;
        }
        let next = self.core.timers.next_expiry();
        let next = match (next, self.core.shutdown_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }?;
        Some(Duration::from_millis(next.since(self.core.now)))
    }

    fn expire(&mut self) {
        let now = self.core.now;
        let mut due = std::mem::take(&mut self.core.due);
        self.core.timers.expire(now, &mut due);
        // A fired entry has left its place (which a reschedule below may take): each
        // connection's is cleared before any is handled.
        for entry in &due {
            if let Some(slot) = self.core.conns.get_mut(entry.key as usize) {
                if slot.gen == entry.gen {
                    slot.place = timers::NIL;
                }
            }
        }
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
        self.drain_notices();
    }

    fn accept(&mut self) {
        for i in 0..self.listeners.len() {
            for _ in 0..ACCEPTS_PER_TURN {
                let Some(l) = self.listeners.get_mut(i) else {
                    return;
                };
                if !l.ready {
                    break;
                }
                match l.sock.accept() {
                    Ok((sock, peer)) => {
                        #[cfg(feature = "tls")]
                        let io = match &l.tls {
                            Some(config) => match transport::tls::Tls::accept(sock, config.clone())
                            {
                                Some(tls) => Transport::Tls(Box::new(tls)),
                                None => continue,
                            },
                            None => Transport::Tcp(sock),
                        };
                        #[cfg(not(feature = "tls"))]
                        let io = Transport::Tcp(sock);
                        self.core.admit(io, peer, i as u8);
                    }
                    Err(e) if transport::would_block(&e) => l.ready = false,
                    Err(e) if transport::interrupted(&e) => {}
                    Err(e) => {
                        // EMFILE and friends: the next connection will retry.
                        debug!("accept failed: {e}");
                        l.ready = false;
                    }
                }
            }
        }
    }

    fn drain_inbox(&mut self) {
        let mut commands = std::mem::take(&mut self.commands);
        self.inbox_more = self.shared.drain(COMMANDS_PER_TURN, &mut commands);
        for cmd in commands.drain(..) {
            match cmd {
                Command::Publish {
                    topic,
                    frame,
                    event_id,
                } => {
                    // The handle checked the id.
                    let id = event_id.as_deref().and_then(EventId::new);
                    self.core
                        .publish_payload(&topic, Payload::Frame(&frame), id);
                    if self.core.exports.on() {
                        if let Some(msg) = exports::message_of(&frame) {
                            self.core.exports.keep(&topic, &msg);
                        }
                    }
                }
                Command::Send {
                    id,
                    frame,
                    event_id,
                } => {
                    let event_id = event_id.as_deref().and_then(EventId::new);
                    self.core.deliver_frame(id, &frame, event_id);
                }
                Command::Broadcast { frame } => {
                    self.core.broadcast_payload(Payload::Frame(&frame));
                }
                Command::Close { id, code, reason } => {
                    self.core.close(id, code, &reason);
                }
                Command::Shutdown => self.shutdown(),
            }
            self.drain_notices();
        }
        self.commands = commands;
    }

    /// Stops accepting, closes every open connection with 1001 (an event stream: its queue
    /// is written, then the stream ends) and drops the ones still handshaking; the loop ends when all are gone or the close timeout has passed
    /// ([`Server::is_finished`]).
    pub fn shutdown(&mut self) {
        if self.core.shutdown_at.is_some() {
            return;
        }
        info!(
            "shutting down: closing {} connections with 1001",
            self.core.conns.len()
        );
        for mut l in self.listeners.drain(..) {
            let _ = self.core.registry.deregister(&mut l.sock);
        }
        self.core.admission.close();
        self.core.shutdown_at = Some(self.core.now.after(self.core.cfg.close_timeout));
        let keys: Vec<usize> = self.core.conns.iter().map(|(k, _)| k).collect();
        for key in keys {
            let Some(slot) = self.core.conns.get(key) else {
                continue;
            };
            let id = ConnId {
                key: key as u32,
                gen: slot.gen,
            };
            match slot.conn.state() {
                State::Open => {
                    self.core
                        .close(id, CloseCode::GOING_AWAY, "server shutting down");
                }
                State::Connecting => self.core.remove(key),
                _ => {}
            }
        }
        self.drain_notices();
    }

    /// Reads and serves one connection within its budget; one with more to read goes to the
    /// back of the ready FIFO.
    fn serve(&mut self, id: ConnId) {
        let key = id.key as usize;
        let Some(slot) = self.core.live(id) else {
            return;
        };
        let drain = slot.has(flag::DRAIN);
        let frames_at_start = slot.conn.frames();
        let mut left = self.core.cfg.read_budget;
        let frame_budget = self.core.cfg.frame_budget;
        self.core.current = Some(key);
        let mut again = false;
        while let Some(slot) = self.core.conns.get_mut(key) {
            let cap = left.min(self.rbuf.len());
            match slot.io.read(self.rbuf.get_mut(..cap).unwrap_or_default()) {
                ReadOutcome::Data(n) => {
                    left -= n;
                    self.core.stats.bytes_in += n as u64;
                    slot.conn.on_bytes(self.core.now);
                    self.process(key, n);
                    let Some(slot) = self.core.conns.get(key) else {
                        break;
                    };
                    let frames = slot.conn.frames().wrapping_sub(frames_at_start);
                    if left == 0 || frames >= frame_budget {
                        again = true;
                        break;
                    }
                    // A short read emptied the socket. With edge-triggered epoll, bytes or a
                    // FIN arriving later raise a new event, so the read that would say
                    // WouldBlock is skipped, unless this event already reported the FIN.
                    if cfg!(target_os = "linux") && !drain && slot.io.emptied(n, cap) {
                        break;
                    }
                }
                ReadOutcome::WouldBlock => break,
                ReadOutcome::Closed => {
                    self.core.flush(key, Buf::Batch);
                    self.core.remove(key);
                    break;
                }
            }
        }
        self.core.flush(key, Buf::Batch);
        self.core.current = None;
        if let Some(slot) = self.core.conns.get_mut(key) {
            if again {
                self.core.ready.push(id);
            } else {
                slot.flags &= !(flag::WAITING | flag::DRAIN);
            }
        }
        self.core.settle(key);
        self.drain_notices();
    }

    /// Hands `n` freshly read bytes to the connection and its events to the handler.
    fn process(&mut self, key: usize, n: usize) {
        let Server {
            handler,
            core,
            rbuf,
            states,
            listeners,
            memory_local,
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
                &mut core.batch,
                &mut core.pool,
                &core.cfg,
                core.now,
            );
            let Some(event) = event else { break };
            match event {
                Event::Head(data) => {
                    let stats = core.stats;
                    let peer = slot.peer.addr();
                    let local = listeners
                        .get(usize::from(slot.listener))
                        .map_or(*memory_local, |l| l.addr);
                    let mut ask = Ask {
                        handler: &mut *handler,
                        stats: &stats,
                    };
                    let answered = slot.conn.answer_head(
                        data,
                        peer,
                        local,
                        &mut ask,
                        &mut core.batch,
                        &mut core.pool,
                        &core.cfg,
                        core.now,
                    );
                    match answered {
                        Answered::Open(state, protocol) => {
                            slot.protocol = protocol.map_or(0, |p| p.index() as u8 + 1);
                            if slot.conn.kind() == Kind::EventStream {
                                core.stats.event_streams_open += 1;
                                core.stats.event_streams_accepted += 1;
                                debug!("[{id}] event stream open from {peer}");
                            } else {
                                core.stats.accepted += 1;
                                debug!("[{id}] open from {peer}");
                            }
                            states.insert(id, state, core.conns.capacity());
                            if let Some(state) = states.get_mut(id) {
                                handler.on_open(&mut Ctx::new(core, id), state);
                            }
                        }
                        Answered::Http(status) => {
                            core.stats.http_requests += 1;
                            debug!("[{id}] HTTP request answered with {status}");
                        }
                        Answered::Refused(status) => {
                            core.stats.reject(status);
                            debug!("[{id}] refused with {status}");
                        }
                    }
                }
                Event::BadHead(e) => {
                    slot.conn.refuse(
                        &mut core.batch,
                        e.status(),
                        &mut core.pool,
                        &core.cfg,
                        core.now,
                    );
                    core.stats.reject(e.status());
                    debug!("[{id}] refused with {}: {e}", e.status());
                }
                Event::Text(text) => on_message(handler, core, states, id, Message::Text(text)),
                Event::Message(kind, data) => {
                    on_message(handler, core, states, id, message(kind, data.as_slice()));
                    data.recycle(&mut core.pool);
                }
                Event::Closed(frame) => {
                    debug!("[{id}] peer closed with {}", frame.code());
                    core.notify_close(id, frame.code(), frame.reason());
                }
                Event::Flush => core.flush(key, Buf::Batch),
                Event::Failed(e) => {
                    debug!("[{id}] protocol error: {e}");
                    core.notify_close(id, e.close_code(), e.as_str());
                }
            }
            drain_notices(handler, core, states);
            if core.batch.len() >= core.flush_at() {
                core.flush(key, Buf::Batch);
            }
        }
    }

    fn drain_notices(&mut self) {
        drain_notices(&mut self.handler, &mut self.core, &mut self.states);
    }

    /// The local address later in-memory connections report ([`crate::testing`]).
    pub(crate) fn set_memory_local(&mut self, addr: SocketAddr) {
        self.memory_local = addr;
    }

    /// Admits a connection over an in-memory transport ([`crate::testing`]).
    pub(crate) fn admit_memory(
        &mut self,
        pipe: transport::Pipe,
        peer: SocketAddr,
    ) -> Option<ConnId> {
        let id = self.core.admit(Transport::Memory(pipe), peer, IN_MEMORY);
        self.drain_notices();
        id
    }

    /// Marks a connection readable (and writable), as a poll event would.
    pub(crate) fn mark_ready(&mut self, id: ConnId, closed: bool) {
        if self.core.live(id).is_some() {
            self.core.on_ready(id.key as usize, true, true, closed);
        }
    }

    /// Takes the events of the server's own poll without waiting (the handle's waker).
    pub(crate) fn poll_now(&mut self) {
        let Some(mut poll) = self.poll.take() else {
            return;
        };
        let mut events = Events::with_capacity(16);
        if poll.poll(&mut events, Some(Duration::ZERO)).is_ok() {
            for event in events.iter() {
                self.handle_event(event);
            }
        }
        self.poll = Some(poll);
    }

    pub(crate) fn handler(&self) -> &H {
        &self.handler
    }

    pub(crate) fn state_of(&mut self, id: ConnId) -> Option<&mut H::State> {
        self.states.get_mut(id)
    }

    pub(crate) fn conn_state(&self, id: ConnId) -> State {
        self.core.conn_state(id)
    }

    /// Bytes the connection holds beyond its record: its lent buffer and its queue.
    pub(crate) fn held_bytes(&self, id: ConnId) -> usize {
        self.core.slot(id).map_or(0, |s| s.conn.buffered_bytes())
    }

    /// Bytes queued for the connection.
    pub(crate) fn buffered_amount(&self, id: ConnId) -> usize {
        self.core.buffered_amount(id)
    }

    /// Bytes the pool's spare buffers hold.
    pub(crate) fn spare_bytes(&self) -> usize {
        self.core.pool.spare_bytes()
    }
}

impl<H: Handler> Drop for Server<H> {
    fn drop(&mut self) {
        // Handles refuse from now on; none waits for a loop that is gone.
        self.shared.stop();
    }
}

/// The bytes one idle connection costs the server with a handler state of `S`: its slab
/// entry (the connection record, transport, peer address, timer slot and flags, or a
/// free-list link, plus the slab's tag), its entry in the handler's states, and its share of
/// the loop's lists sized to the connections (the ready FIFO, the writable list and the
/// publish targets, held during a burst and given back after one: see
/// [`loop_list_bytes_per_connection`]), and its place in the timer wheel (every open
/// connection has a deadline). It holds no buffer and no queue.
pub fn idle_connection_bytes<S>() -> usize {
    std::mem::size_of::<Slot>()
        + 8
        + std::mem::size_of::<Option<(u32, S)>>()
        + loop_list_bytes_per_connection()
        + timers::PLACE_BYTES
}

/// The fixed part of what TLS adds to a connection (feature `tls`): the boxed session record
/// (rustls's `UnbufferedServerConnection` with its socket and three optional buffers, none of
/// which an idle connection has). rustls's own session state comes on top: see the README's
/// formula for its measured size and the buffers' bounds.
#[cfg(feature = "tls")]
pub fn tls_session_bytes() -> usize {
    std::mem::size_of::<crate::transport::tls::Tls>()
}

/// Per connection, the most the loop's lists hold when every connection is in them at once:
/// an entry in the ready FIFO, in the writable list and in a publish's target list.
pub fn loop_list_bytes_per_connection() -> usize {
    2 * std::mem::size_of::<ConnId>() + std::mem::size_of::<u32>()
}

/// The handler, asked about one request head.
struct Ask<'h, H> {
    handler: &'h mut H,
    stats: &'h Stats,
}

impl<H: Handler> Decide for Ask<'_, H> {
    type State = H::State;

    fn upgrade(&mut self, req: &HttpRequest<'_>) -> Decision<H::State> {
        self.handler.on_upgrade(req)
    }

    fn request(&mut self, req: &HttpRequest<'_>) -> Response {
        self.handler.on_request(req, self.stats)
    }

    fn event_stream(&mut self, req: &HttpRequest<'_>) -> Option<Decision<H::State>> {
        self.handler.on_event_stream(req)
    }
}

/// A non-blocking listener with `SO_REUSEADDR`, the configured backlog and socket buffer
/// sizes (accepted connections inherit them).
fn listen(addr: SocketAddr, cfg: &Config) -> std::io::Result<TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    if let Some(bytes) = cfg.socket_send_buffer {
        socket.set_send_buffer_size(bytes)?;
    }
    if let Some(bytes) = cfg.socket_recv_buffer {
        socket.set_recv_buffer_size(bytes)?;
    }
    let backlog = cfg.listen_backlog;
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

fn on_message<H: Handler>(
    handler: &mut H,
    core: &mut Core,
    states: &mut States<H::State>,
    id: ConnId,
    msg: Message<'_>,
) {
    core.stats.messages_in += 1;
    trace!("[{id}] message of {} bytes", msg.len());
    if let Some(state) = states.get_mut(id) {
        handler.on_message(&mut Ctx::new(core, id), state, msg);
    }
}

fn drain_notices<H: Handler>(handler: &mut H, core: &mut Core, states: &mut States<H::State>) {
    while let Some(notice) = core.notices.pop_front() {
        match notice {
            Notice::Close { id, code, reason } => {
                core.stats.close(code.as_u16());
                if let Some(state) = states.take(id) {
                    handler.on_close(&mut Ctx::new(core, id), state, code, &reason);
                }
            }
            Notice::Drain(id) => {
                if let Some(state) = states.get_mut(id) {
                    handler.on_drain(&mut Ctx::new(core, id), state);
                }
            }
        }
    }
}

/// Which scratch buffer holds a connection's new frames.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Buf {
    /// The batch of the connection being served.
    Batch,
    /// Frames for another connection, written at once.
    Scratch,
}

impl Core {
    pub(crate) fn config(&self) -> &Config {
        &self.cfg
    }

    pub(crate) fn now(&self) -> Duration {
        Duration::from_millis(self.now.0)
    }

    pub(crate) fn stats(&self) -> Stats {
        let mut stats = self.stats;
        stats.connections_open = self.conns.len() as u64;
        stats.exports_dropped = self.exports.dropped;
        stats
    }

    /// How much of the current connection's frames may wait in the batch: what the socket
    /// does not take of it becomes the queue, which must stay within `max_backpressure` plus
    /// one message.
    fn flush_at(&self) -> usize {
        self.cfg.max_backpressure.clamp(1, OUT_FLUSH_AT)
    }

    fn id_of(&self, key: usize) -> Option<ConnId> {
        self.conns.get(key).map(|s| ConnId {
            key: key as u32,
            gen: s.gen,
        })
    }

    fn live(&mut self, id: ConnId) -> Option<&mut Slot> {
        self.conns
            .get_mut(id.key as usize)
            .filter(|s| s.gen == id.gen)
    }

    fn slot(&self, id: ConnId) -> Option<&Slot> {
        self.conns.get(id.key as usize).filter(|s| s.gen == id.gen)
    }

    pub(crate) fn peer_addr(&self, id: ConnId) -> Option<SocketAddr> {
        self.slot(id).map(|s| s.peer.addr())
    }

    pub(crate) fn conn_state(&self, id: ConnId) -> State {
        self.slot(id).map_or(State::Closed, |s| s.conn.state())
    }

    pub(crate) fn kind(&self, id: ConnId) -> Option<Kind> {
        self.slot(id).map(|s| s.conn.kind())
    }

    pub(crate) fn protocol(&self, id: ConnId) -> Option<&str> {
        let index = usize::from(self.slot(id)?.protocol.checked_sub(1)?);
        self.cfg.protocols.get(index).map(String::as_str)
    }

    pub(crate) fn buffered_amount(&self, id: ConnId) -> usize {
        self.slot(id).map_or(0, |s| s.conn.outbox().queued())
    }

    /// [`crate::Ctx::notify_drained`]: one `on_drain` once nothing is queued and the batch
    /// (of the connection being served) is written.
    pub(crate) fn notify_drained(&mut self, id: ConnId) {
        let key = id.key as usize;
        let Some(slot) = self.live(id) else {
            return;
        };
        slot.flags |= flag::WAKE;
        let empty = slot.conn.outbox().is_empty();
        // The connection being served settles after its batch is written. Any other one with
        // nothing queued is woken in the next turn, as if writable: a producer that asks
        // again and again from `on_drain` gets one call per turn, and the others theirs.
        if self.current != Some(key) && empty {
            self.on_ready(key, false, true, false);
        }
    }

    fn notify_close(&mut self, id: ConnId, code: CloseCode, reason: &str) {
        self.notices.push_back(Notice::Close {
            id,
            code,
            reason: reason.into(),
        });
    }

    /// Records readiness from a poll event.
    fn on_ready(&mut self, key: usize, readable: bool, writable: bool, closed: bool) {
        let Some(slot) = self.conns.get_mut(key) else {
            return;
        };
        if writable && !slot.has(flag::WRITABLE) {
            slot.flags |= flag::WRITABLE;
            self.writable.push(key as u32);
        }
        if closed {
            slot.flags |= flag::DRAIN;
        }
        if readable && !slot.has(flag::WAITING) {
            slot.flags |= flag::WAITING;
            self.ready.push(ConnId {
                key: key as u32,
                gen: slot.gen,
            });
        }
    }

    /// Takes a new connection within the limits.
    fn admit(&mut self, mut io: Transport, peer: SocketAddr, listener: u8) -> Option<ConnId> {
        let verdict = self.admission.admit(peer.ip(), self.conns.len(), &self.cfg);
        if verdict == Verdict::Turn {
            self.stats.reject(503);
            debug!("at capacity: answering 503 at once to {peer}");
            // Drain what the client sent already, so that closing sends a FIN behind the
            // answer rather than a reset that could destroy it.
            let mut sink = [0u8; 1024];
            for _ in 0..8 {
                if !matches!(io.read(&mut sink), ReadOutcome::Data(_)) {
                    break;
                }
            }
            self.scratch.clear();
            response::error(&mut self.scratch, 503);
            let _ = io.write(&self.scratch);
            self.scratch.clear();
            io.shutdown_write();
            return None;
        }
        let refuse = match verdict {
            Verdict::Refuse(status) => Some(status),
            _ => None,
        };
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        let token = Token(self.token_base + key);
        if io
            .register(&self.registry, token, Interest::READABLE)
            .is_err()
        {
            if refuse.is_none() {
                self.admission.release(peer.ip());
            }
            return None;
        }
        io.set_nodelay();
        self.next_gen = self.next_gen.wrapping_add(1);
        let gen = self.next_gen;
        entry.insert(Slot {
            conn: Conn::new(self.now, &self.cfg, refuse),
            io,
            peer: Peer::new(peer),
            gen,
            protocol: 0,
            flags: if refuse.is_none() { flag::ADMITTED } else { 0 },
            listener,
            place: timers::NIL,
            accounted: 0,
        });
        trace!("[{key}.{gen}] accepted from {peer}");
        self.settle(key);
        Some(ConnId {
            key: key as u32,
            gen,
        })
    }

    /// Writes a connection's new frames: after the queue, directly when it is empty; keeps
    /// what the socket did not take.
    fn flush(&mut self, key: usize, which: Buf) {
        let mut buf = std::mem::take(match which {
            Buf::Batch => &mut self.batch,
            Buf::Scratch => &mut self.scratch,
        });
        let mut failed = false;
        if let Some(slot) = self.conns.get_mut(key) {
            if !buf.is_empty() {
                if slot.conn.outbox().is_empty() {
                    match slot.io.write(&buf) {
                        Ok(n) => {
                            self.stats.bytes_out += n as u64;
                            let rest = buf.get(n..).unwrap_or_default();
                            slot.conn.outbox_mut().unwritten(&[rest], n > 0);
                        }
                        Err(_) => failed = true,
                    }
                } else {
                    slot.conn.outbox_mut().unwritten(&[&buf], false);
                }
            } else if !slot.conn.outbox().is_empty() && !slot.has(flag::INTEREST_WRITE) {
                // Frames queued directly (a pong ahead of data): try them now.
                match slot.io.write_queue(slot.conn.outbox_mut().queue_mut()) {
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
            Buf::Batch => self.batch = buf,
            Buf::Scratch => self.scratch = buf,
        }
        if failed {
            self.remove(key);
        }
    }

    /// On writable readiness: writes the queue until empty or the socket is full.
    fn on_writable(&mut self, key: usize) {
        let Some(slot) = self.conns.get_mut(key) else {
            return;
        };
        slot.flags &= !flag::WRITABLE;
        if slot.io.flush_pending().is_err() {
            self.remove(key);
            return;
        }
        match slot.io.write_queue(slot.conn.outbox_mut().queue_mut()) {
            Ok(n) => self.stats.bytes_out += n as u64,
            Err(_) => {
                self.remove(key);
                return;
            }
        }
        self.settle(key);
    }

    /// After I/O on a connection: shutdown or close when finished, the drain notice,
    /// writable interest only while bytes are queued, and its next deadline.
    fn settle(&mut self, key: usize) {
        let Some(id) = self.id_of(key) else {
            return;
        };
        let Some(slot) = self.conns.get_mut(key) else {
            return;
        };
        match slot.conn.finish() {
            Finish::Keep => {}
            Finish::ShutdownWrite => {
                slot.io.shutdown_write();
                slot.conn.shut_write();
            }
            Finish::Close => {
                trace!("[{id}] closed");
                slot.io.close_notify();
                self.remove(key);
                return;
            }
        }
        let queued = slot.conn.outbox().queued();
        let before = slot.accounted as usize;
        self.stats.queued(before, queued);
        slot.accounted = u32::try_from(queued).unwrap_or(u32::MAX);
        let low = self.cfg.drain_low_water;
        let drained = before > low && queued <= low;
        let woken = slot.has(flag::WAKE)
            && queued == 0
            && (self.current != Some(key) || self.batch.is_empty());
        if woken {
            slot.flags &= !flag::WAKE;
        }
        if (drained || woken) && slot.conn.is_open() {
            self.notices.push_back(Notice::Drain(id));
        }
        let wants = slot.conn.wants_write() || slot.io.wants_write();
        if wants != slot.has(flag::INTEREST_WRITE) {
            let interest = if wants {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            let token = Token(self.token_base + key);
            if slot.io.reregister(&self.registry, token, interest).is_ok() {
                slot.flags ^= flag::INTEREST_WRITE;
            }
        }
        if let Some(at) = slot.conn.next_deadline(&self.cfg) {
            let scheduled = self.timers.at(slot.place);
            if scheduled.is_none_or(|s| at < s) {
                // The later entry goes: a connection holds one place in the wheel, and one
                // that closes leaves none behind.
                self.timers.remove(slot.place);
                slot.place = self.timers.insert(Entry {
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
        if slot.gen != entry.gen {
            return; // its connection is gone
        }
        let id = ConnId {
            key: entry.key,
            gen: slot.gen,
        };
        match slot
            .conn
            .on_deadline(&mut self.scratch, &self.cfg, self.now)
        {
            DeadlineAction::Drop(why) => {
                debug!("[{id}] {}: dropping", why.as_str());
                self.stats.timeouts += 1;
                self.remove(key);
                return;
            }
            DeadlineAction::Close => {
                debug!("[{id}] idle timeout: closing");
                self.notify_close(id, CloseCode::NORMAL, "idle timeout");
            }
            DeadlineAction::Ping => trace!("[{id}] ping"),
            DeadlineAction::KeepAlive => trace!("[{id}] keep-alive"),
            DeadlineAction::Nothing => {}
        }
        self.flush(key, Buf::Scratch);
        self.settle(key);
    }

    /// Closes the transport and frees the slot; reports 1006 if it was open.
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
            self.notify_close(id, code, "");
        }
        self.stats.queued(slot.accounted as usize, 0);
        if slot.conn.kind() == Kind::EventStream {
            self.stats.event_streams_open = self.stats.event_streams_open.saturating_sub(1);
        }
        if slot.has(flag::ADMITTED) {
            self.admission.release(slot.peer.addr().ip());
        }
        self.topics.remove_conn(id);
        self.timers.remove(slot.place);
        slot.io.deregister(&self.registry);
        if self.current == Some(key) {
            self.batch.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Accepts every upgrade and does nothing with messages.
    struct Nothing;
    impl Handler for Nothing {
        type State = ();
        fn on_upgrade(&mut self, _: &HttpRequest<'_>) -> Decision<()> {
            Decision::Accept(())
        }
        fn on_message(&mut self, _: &mut Ctx<'_>, _: &mut (), _: Message<'_>) {}
    }

    /// Accepted connections carry the configured kernel buffer sizes (Linux reports twice
    /// the value set, its bookkeeping included).
    #[test]
    fn accepted_connections_inherit_the_socket_buffer_caps() {
        let cfg = Config::default()
            .socket_send_buffer(Some(16 * 1024))
            .socket_recv_buffer(Some(8 * 1024));
        let mut server = Server::bind("127.0.0.1:0".parse().unwrap(), cfg, Nothing).unwrap();
        let _client = std::net::TcpStream::connect(server.local_addr()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while server.core.conns.is_empty() {
            assert!(Instant::now() < deadline, "never accepted");
            server.poll_now();
            server.turn(Instant::now());
        }
        let (_, slot) = server.core.conns.iter_mut().next().unwrap();
        let sock = slot.io.socket().unwrap();
        let sock = socket2::SockRef::from(&*sock);
        assert_eq!(sock.send_buffer_size().unwrap(), 32 * 1024);
        assert_eq!(sock.recv_buffer_size().unwrap(), 16 * 1024);
        assert_eq!(
            Config::default().socket_send_buffer(Some(100)).validate(),
            Err("socket buffers must be between 1 KiB and 1 GiB")
        );
    }

    /// A connection that goes takes its deadline out of the wheel, and an earlier deadline
    /// replaces a later one: a flood of short connections leaves nothing behind to wait for a
    /// ping 30 s away.
    #[test]
    fn closed_connections_leave_no_timer_entries() {
        let mut h = crate::testing::Harness::new(Config::default(), Nothing);
        let kept = h.connect("/").unwrap();
        for _ in 0..500 {
            let p = h.connect("/").unwrap();
            h.disconnect(&p);
            h.turn();
        }
        let half_open = h.open_raw(b"GET / HTTP/1.1\r\n").unwrap();
        h.disconnect(&half_open);
        h.turn();
        // Closed by the server (a protocol error: an unmasked frame), which then waits for
        // the peer's close: the close deadline, earlier than the one scheduled, takes that
        // one's place rather than leaving it behind.
        for _ in 0..500 {
            let mut p = h.connect("/").unwrap();
            h.send_bytes(&mut p, &[0x81, 0x01, b'x']);
            h.turn();
            h.received(&mut p);
            h.disconnect(&p);
            h.turn();
        }
        assert_eq!(h.server_mut().core.conns.len(), 1);
        assert_eq!(
            h.server_mut().core.timers.len(),
            1,
            "only the open one's deadline"
        );
        drop(kept);
    }

    /// The idle cost per connection of the README's memory formula.
    #[test]
    fn idle_connection_record_stays_small() {
        let idle = idle_connection_bytes::<()>();
        println!(
            "Conn {} B, Slot {} B, idle with no state {idle} B",
            std::mem::size_of::<Conn>(),
            std::mem::size_of::<Slot>()
        );
        // DESIGN.md aims at 256 B.
        // mio keeps a selector id in each socket in debug builds only (8 bytes).
        let idle = idle - if cfg!(debug_assertions) { 8 } else { 0 };
        assert!(idle <= 256, "an idle connection costs {idle} bytes");
        let slab_entry = std::mem::size_of::<Slot>() + 8;
        assert!(slab_entry <= 256, "a slab entry is {slab_entry} bytes");
        assert_eq!(
            std::mem::size_of::<Slot>() % 8,
            0,
            "a slab entry is the slot or a free-list link, plus an 8-byte tag"
        );
    }

    #[test]
    fn a_peer_address_is_kept_whole_in_18_bytes() {
        assert_eq!(std::mem::size_of::<Peer>(), 18);
        for text in [
            "1.2.3.4:9001",
            "127.0.0.1:1",
            "0.0.0.0:0",
            "255.255.255.255:65535",
            "[2001:db8::1]:443",
            "[::1]:9001",
            "[::]:80",
            "[fe80::1]:5000",
        ] {
            let addr: SocketAddr = text.parse().unwrap();
            assert_eq!(Peer::new(addr).addr(), addr, "{text}");
        }
        // A dual-stack socket's IPv4 peer comes as IPv4-mapped IPv6: it is told as IPv4,
        // so that a local one counts as loopback.
        let mapped: SocketAddr = "[::ffff:127.0.0.1]:7".parse().unwrap();
        let addr = Peer::new(mapped).addr();
        assert_eq!(addr, "127.0.0.1:7".parse::<SocketAddr>().unwrap());
        assert!(addr.ip().is_loopback());
    }

    /// The README's formula states these figures: they are the real sizes.
    #[test]
    fn the_readme_memory_formula_matches_the_real_sizes() {
        let readme = include_str!("../../README.md");
        let cfg = Config::default();
        let claims = [
            ("idle connection", idle_connection_bytes::<()>()),
            ("state entry", std::mem::size_of::<Option<(u32, ())>>()),
            ("loop lists", loop_list_bytes_per_connection()),
            ("timer place", timers::PLACE_BYTES),
            ("worst case", cfg.worst_case_connection_bytes::<()>()),
            ("fixed", cfg.fixed_bytes()),
        ];
        #[cfg(feature = "tls")]
        let claims = {
            let mut all = claims.to_vec();
            all.push(("TLS session record", tls_session_bytes()));
            all.push(("TLS send buffer", crate::transport::tls::SEND_BUFFER));
            all.push(("TLS scratch", cfg.tls_fixed_bytes()));
            all
        };
        // mio keeps a selector id in each socket in debug builds only (8 bytes); the README
        // states release sizes.
        let debug_extra = if cfg!(debug_assertions) { 8 } else { 0 };
        for (what, bytes) in claims {
            let bytes = match what {
                "idle connection" | "worst case" => bytes - debug_extra,
                // The session record holds the socket, and its 8 debug bytes cost 16 with
                // the record's alignment.
                "TLS session record" => bytes - 2 * debug_extra,
                _ => bytes,
            };
            let line = format!("<!-- {what}: {bytes} B -->");
            assert!(
                readme.contains(&line),
                "README.md must state the {what} cost as `{line}`"
            );
        }
        // Every term of the fixed part, as the README lists them.
        assert_eq!(
            cfg.fixed_bytes(),
            64 * 1024 + 64 * 1024 + (128 * 1024 + 14) + 32 * 64 * 1024 + 1024 * 1024 + 1024 * 4
        );
    }
}

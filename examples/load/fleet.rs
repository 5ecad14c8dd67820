//! The one mio loop that drives every client connection: opening them at a bounded pace,
//! handshakes, reads, writes, pings, closes, and the counts of what went wrong.
//!
//! Each mode supplies an `App` that sees opened connections and complete messages; the fleet
//! answers pings and close frames itself. For `wss://` each socket carries a rustls client
//! connection (`tls`), driven here from the same events: reads go socket → rustls → `Reader`,
//! writes `Writer` → rustls → socket; both ends keep their readable and writable interest for
//! the connection's life (edge-triggered), so a record rustls still holds goes out on the next
//! writable edge.

use std::collections::VecDeque;
use std::io::{self, Read};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use mio::event::Event as MioEvent;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Registry, Token};
use socket2::{Domain, Protocol, Socket, Type};

use crate::conn::{Conn, State};
use crate::frame::op;
use crate::handshake::{self, Refusal};
use crate::hist::Histogram;
use crate::json::Obj;
use crate::reader::Event;
use crate::target::Target;
use crate::tls;

pub use crate::conn::Writer;

/// What a mode does with its connections.
pub trait App {
    /// The upgrade completed; `wr` may queue the first messages.
    fn on_open(&mut self, _id: usize, _wr: &mut Writer, _now: u64) {}
    /// A complete message arrived (see `reader::Event::Message` for `head`).
    fn on_message(
        &mut self,
        id: usize,
        wr: &mut Writer,
        now: u64,
        text: bool,
        head: &[u8],
        len: u64,
    );
}

/// An `App` that ignores messages (connect mode, and the close phase).
pub struct Ignore;

impl App for Ignore {
    fn on_message(&mut self, _: usize, _: &mut Writer, _: u64, _: bool, _: &[u8], _: u64) {}
}

/// Monotonic nanoseconds since the run started.
#[derive(Clone, Copy)]
pub struct Clock(Instant);

impl Clock {
    pub fn new() -> Self {
        Self(Instant::now())
    }

    pub fn now(&self) -> u64 {
        self.0.elapsed().as_nanos() as u64
    }
}

/// How connections are opened.
pub struct OpenPlan {
    pub target: Target,
    pub sources: Vec<IpAddr>,
    pub in_flight: usize,
    /// New connections per second at most; 0 = as fast as the in-flight bound allows.
    pub rate_limit: f64,
    pub handshake_timeout: Duration,
    pub read_capacity: usize,
    /// `wss://`: the client configuration every connection shares.
    pub tls: Option<tls::Plan>,
    /// One connection (by id) to another server of the same scheme: fanout's publisher with
    /// `--publish-url`.
    pub redirect: Option<(usize, Target)>,
    /// Every odd-numbered connection (but the redirected one) to this server instead:
    /// fanout's subscribers split over two servers with `--split-url`.
    pub split: Option<Target>,
}

/// Failures, by kind.
#[derive(Default)]
pub struct Errors {
    pub connect: u64,
    pub timeout: u64,
    pub status: Vec<(u16, u64)>,
    pub bad_upgrade: u64,
    pub malformed_response: u64,
    pub dropped_in_handshake: u64,
    /// The TLS handshake failed (a certificate refused, an alert, a TLS protocol error).
    pub tls_handshake: u64,
    /// A TLS error after the upgrade (a bad record, an alert).
    pub tls: u64,
    pub protocol: u64,
    /// TCP closed or reset without a close handshake (a 1006 in browser terms).
    pub dropped: u64,
    /// Close frames the server started, by code (1005: no code).
    pub server_close: Vec<(u16, u64)>,
    pub close_timeout: u64,
    /// How many failures of each kind were printed in full.
    noted: Vec<(&'static str, u32)>,
}

impl Errors {
    pub fn total(&self) -> u64 {
        let by_code = |v: &[(u16, u64)]| v.iter().map(|&(_, n)| n).sum::<u64>();
        self.connect
            + self.timeout
            + by_code(&self.status)
            + self.bad_upgrade
            + self.malformed_response
            + self.dropped_in_handshake
            + self.tls_handshake
            + self.tls
            + self.protocol
            + self.dropped
            + by_code(&self.server_close)
            + self.close_timeout
    }

    pub fn handshake_failures(&self) -> u64 {
        self.connect
            + self.timeout
            + self.status.iter().map(|&(_, n)| n).sum::<u64>()
            + self.bad_upgrade
            + self.malformed_response
            + self.dropped_in_handshake
            + self.tls_handshake
    }

    /// Prints the first three failures of each kind in full; the rest are only counted.
    fn note(&mut self, kind: &'static str, id: usize, what: std::fmt::Arguments<'_>) {
        let i = match self.noted.iter().position(|(k, _)| *k == kind) {
            Some(i) => i,
            None => {
                self.noted.push((kind, 0));
                self.noted.len() - 1
            }
        };
        let n = &mut self.noted[i].1;
        *n += 1;
        if *n <= 3 {
            eprintln!("load: [{id}] {kind}: {what}");
        }
        if *n == 3 {
            eprintln!("load: (further '{kind}' errors are only counted)");
        }
    }

    pub fn json(&self, extra: &[(&str, u64)]) -> Obj {
        let by_code = |v: &[(u16, u64)]| {
            v.iter()
                .fold(Obj::new(), |o, &(code, n)| o.u(&code.to_string(), n))
        };
        let mut o = Obj::new()
            .u(
                "total",
                self.total() + extra.iter().map(|&(_, n)| n).sum::<u64>(),
            )
            .u("connect", self.connect)
            .u("handshake_timeout", self.timeout)
            .o("http_status", by_code(&self.status))
            .u("bad_upgrade", self.bad_upgrade)
            .u("malformed_response", self.malformed_response)
            .u("dropped_in_handshake", self.dropped_in_handshake)
            .u("tls_handshake", self.tls_handshake)
            .u("tls", self.tls)
            .u("protocol", self.protocol)
            .u("dropped", self.dropped)
            .o("server_close", by_code(&self.server_close))
            .u("close_timeout", self.close_timeout);
        for &(k, v) in extra {
            o = o.u(k, v);
        }
        o
    }
}

fn bump(v: &mut Vec<(u16, u64)>, code: u16) {
    match v.iter_mut().find(|(c, _)| *c == code) {
        Some((_, n)) => *n += 1,
        None => v.push((code, 1)),
    }
}

/// Counts that are not failures.
pub struct Stats {
    pub opened: u64,
    pub first_start: Option<u64>,
    pub last_open: u64,
    pub handshake: Histogram,
    pub pings: u64,
    pub clean_closes: u64,
    /// `wss://`: what the first connection to open negotiated (version, suite, group).
    pub tls_params: Option<String>,
}

pub struct Fleet {
    poll: Poll,
    events: Events,
    pub core: Core,
}

/// Everything but the poll, so events can be handled while the event list is borrowed.
pub struct Core {
    pub conns: Vec<Conn>,
    pub clock: Clock,
    pub errors: Errors,
    pub stats: Stats,
    plan: OpenPlan,
    /// Connections `next..goal` are still to be started.
    next: usize,
    goal: usize,
    in_flight: usize,
    /// Started connections in start order, for the handshake timeout (removed lazily).
    started: VecDeque<usize>,
    open_began: u64,
    /// Closed connections given a fresh start (`Fleet::reopen`), started before `next..goal`.
    again: VecDeque<usize>,
    rng: Rng,
}

impl Fleet {
    /// `count` connections, none started yet.
    pub fn new(plan: OpenPlan, count: usize, clock: Clock) -> io::Result<Self> {
        let mut rng = Rng::seeded();
        let conns = (0..count)
            .map(|_| {
                let (mask, key) = fresh_keys(&mut rng);
                Conn::new(plan.read_capacity, mask, key)
            })
            .collect();
        Ok(Self {
            poll: Poll::new()?,
            events: Events::with_capacity(1024),
            core: Core {
                conns,
                clock,
                errors: Errors::default(),
                stats: Stats {
                    opened: 0,
                    first_start: None,
                    last_open: 0,
                    handshake: Histogram::new(),
                    pings: 0,
                    clean_closes: 0,
                    tls_params: None,
                },
                plan,
                next: 0,
                goal: 0,
                in_flight: 0,
                started: VecDeque::new(),
                open_began: 0,
                again: VecDeque::new(),
                rng,
            },
        })
    }

    /// Starts opening connections `0..goal` (cumulative: a later call opens more).
    pub fn open(&mut self, goal: usize) {
        let c = &mut self.core;
        c.goal = goal.min(c.conns.len());
        c.open_began = c.clock.now();
    }

    /// True once every connection asked for has opened or failed.
    pub fn opening_done(&self) -> bool {
        self.core.opening_done()
    }

    /// Waits for events at most `timeout`, and handles them.
    ///
    /// # Errors
    /// Only a failure of `epoll` itself.
    pub fn turn(&mut self, timeout: Duration, app: &mut impl App) -> io::Result<()> {
        let registry = self.poll.registry();
        let more_now = self.core.start_more(registry);
        let timeout = if more_now {
            Duration::ZERO
        } else if self.opening_done() {
            timeout
        } else {
            timeout.min(Duration::from_millis(5)) // pace the rate limit, check timeouts
        };
        match self.poll.poll(&mut self.events, Some(timeout)) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(()),
            r => r?,
        }
        let now = self.core.clock.now();
        let registry = self.poll.registry();
        for event in self.events.iter() {
            self.core.on_event(registry, event, now, app);
        }
        self.core.expire_handshakes(registry, now);
        Ok(())
    }

    /// Opens connections `0..goal` and handles events until each has opened or failed, with a
    /// progress line a second. Bounded: every handshake has a timeout.
    ///
    /// # Errors
    /// Only a failure of `epoll` itself.
    pub fn open_all(&mut self, goal: usize, app: &mut impl App) -> io::Result<()> {
        self.open(goal);
        let began = self.core.clock.now();
        let mut note = began + 1_000_000_000;
        while !self.opening_done() {
            self.turn(Duration::from_millis(100), app)?;
            let now = self.core.clock.now();
            if now >= note {
                note += 1_000_000_000;
                eprintln!(
                    "load: {} open, {} failed, {} in progress",
                    self.core.stats.opened,
                    self.core.errors.handshake_failures(),
                    self.core.in_flight
                );
            }
        }
        eprintln!(
            "load: {} of {goal} connections open ({} failed) in {:.2} s",
            self.core.stats.opened,
            self.core.errors.handshake_failures(),
            (self.core.clock.now() - began) as f64 / 1e9
        );
        Ok(())
    }

    /// Handles events until the clock reaches `deadline` (ns) or `done` holds.
    ///
    /// # Errors
    /// Only a failure of `epoll` itself.
    pub fn run_until<A: App>(
        &mut self,
        deadline: u64,
        app: &mut A,
        mut done: impl FnMut(&Core, &A) -> bool,
    ) -> io::Result<()> {
        loop {
            let now = self.core.clock.now();
            if now >= deadline || done(&self.core, app) {
                return Ok(());
            }
            let left = Duration::from_nanos(deadline - now).min(Duration::from_millis(100));
            self.turn(left, app)?;
        }
    }

    /// Sends what connection `id` has queued (after an `App` queued output outside a callback).
    pub fn flush(&mut self, id: usize) {
        let registry = self.poll.registry();
        self.core.flush(registry, id);
    }

    /// Stops reading connection `id`: from now on only its writability is watched, so what the
    /// server sends piles up in the socket buffers (a client that never reads).
    ///
    /// # Errors
    /// A failure of `epoll_ctl`.
    pub fn stop_reading(&mut self, id: usize) -> io::Result<()> {
        match self.core.conns[id].stream.as_mut() {
            Some(s) => self
                .poll
                .registry()
                .reregister(s, Token(id), Interest::WRITABLE),
            None => Ok(()),
        }
    }

    /// Drops connection `id` without a close handshake, and counts no error: the mode chose
    /// to (a client that never reads would not see the server's close frame).
    pub fn abort(&mut self, id: usize) {
        let registry = self.poll.registry();
        self.core.drop_conn(registry, id);
    }

    /// Starts the close handshake (code 1000) on connection `id` if it is open; it then counts
    /// as a clean close when the server answers and closes (`Stats::clean_closes`), and its
    /// state turns `Closed` either way.
    pub fn close(&mut self, id: usize) {
        let c = &mut self.core.conns[id];
        if c.state == State::Open {
            c.wr.push_close(Some(1000));
            c.close_sent = true;
            c.state = State::Closing;
            self.flush(id);
        }
    }

    /// Gives closed connection `id` a fresh start: a new connection (new mask key and
    /// handshake key, empty buffers) under the same id, opened with the usual bounds
    /// (in flight, rate limit, handshake timeout). A connection still live is left alone.
    pub fn reopen(&mut self, id: usize) {
        let c = &mut self.core;
        if !matches!(c.conns[id].state, State::Closed | State::Idle) || c.conns[id].stream.is_some()
        {
            return;
        }
        let (mask, key) = fresh_keys(&mut c.rng);
        c.conns[id] = Conn::new(c.plan.read_capacity, mask, key);
        if c.again.is_empty() && c.opening_done() {
            c.open_began = c.clock.now();
        }
        c.again.push_back(id);
    }

    /// Starts the close handshake (code 1000) on every open connection, and waits until each
    /// is closed or `timeout` has passed; the rest are dropped and counted.
    ///
    /// # Errors
    /// Only a failure of `epoll` itself.
    pub fn close_all(&mut self, timeout: Duration, app: &mut impl App) -> io::Result<()> {
        self.core.goal = self.core.next; // start nothing new
        self.core.again.clear();
        for id in 0..self.core.conns.len() {
            let c = &mut self.core.conns[id];
            if c.state == State::Open {
                c.wr.push_close(Some(1000));
                c.close_sent = true;
                c.state = State::Closing;
                self.flush(id);
            }
        }
        let deadline = self.core.clock.now() + timeout.as_nanos() as u64;
        while self.core.live() > 0 {
            let now = self.core.clock.now();
            if now >= deadline {
                break;
            }
            self.turn(Duration::from_nanos(deadline - now), app)?;
        }
        let registry = self.poll.registry();
        for id in 0..self.core.conns.len() {
            if self.core.conns[id].stream.is_some() {
                self.core.errors.close_timeout += 1;
                self.core.drop_conn(registry, id);
            }
        }
        Ok(())
    }
}

impl Core {
    /// True once every connection asked for has opened or failed.
    pub fn opening_done(&self) -> bool {
        self.next >= self.goal && self.in_flight == 0 && self.again.is_empty()
    }

    /// Connections with a socket.
    pub fn live(&self) -> usize {
        self.conns.iter().filter(|c| c.stream.is_some()).count()
    }

    pub fn open_count(&self) -> usize {
        self.conns.iter().filter(|c| c.is_open()).count()
    }

    /// Handshakes per second over the opening phase.
    pub fn handshake_rate(&self) -> Option<f64> {
        let first = self.stats.first_start?;
        let span = self.stats.last_open.checked_sub(first)? as f64 / 1e9;
        (span > 0.0).then(|| self.stats.opened as f64 / span)
    }

    /// Starts connections within the bounds; true if it stopped only at the per-turn cap.
    fn start_more(&mut self, registry: &Registry) -> bool {
        let now = self.clock.now();
        let allowed = if self.plan.rate_limit > 0.0 {
            let secs = now.saturating_sub(self.open_began) as f64 / 1e9;
            (secs * self.plan.rate_limit) as usize + 1
        } else {
            usize::MAX
        };
        // At most 64 per turn, so replies to earlier ones are read in between and their
        // handshake times do not include the generator's own work of starting the rest.
        let allowed = allowed.min(64);
        let mut begun = 0;
        while self.in_flight < self.plan.in_flight && begun < allowed {
            let id = if let Some(id) = self.again.pop_front() {
                id
            } else if self.next < self.goal {
                self.next += 1;
                self.next - 1
            } else {
                break;
            };
            begun += 1;
            self.start(registry, id, now);
        }
        // The rate limit counts from the phase start; carry on where it left off.
        if self.plan.rate_limit > 0.0 && begun > 0 {
            self.open_began += (begun as f64 / self.plan.rate_limit * 1e9) as u64;
            self.open_began = self.open_began.min(now);
        }
        let waiting = self.next < self.goal || !self.again.is_empty();
        begun == 64 && waiting && self.in_flight < self.plan.in_flight
    }

    fn start(&mut self, registry: &Registry, id: usize, now: u64) {
        self.stats.first_start.get_or_insert(now);
        let sources = &self.plan.sources;
        let source = (!sources.is_empty()).then(|| sources[id % sources.len()]);
        let tls = match self.plan.tls.as_ref().map(tls::Plan::connect).transpose() {
            Ok(tls) => tls,
            Err(e) => {
                self.conns[id].state = State::Closed;
                self.errors.tls_handshake += 1;
                return self.errors.note("tls handshake", id, format_args!("{e}"));
            }
        };
        let t = match (&self.plan.redirect, &self.plan.split) {
            (Some((to, t)), _) if *to == id => t,
            (_, Some(t)) if id % 2 == 1 => t,
            _ => &self.plan.target,
        };
        let stream = connect(t.addr, source).and_then(|mut s| {
            registry.register(&mut s, Token(id), Interest::READABLE | Interest::WRITABLE)?;
            Ok(s)
        });
        let c = &mut self.conns[id];
        match stream {
            Ok(s) => {
                c.stream = Some(s);
                c.tls = tls.map(Box::new);
                c.state = State::Connecting;
                c.since = now;
                let mut req = Vec::with_capacity(256);
                handshake::push_request(&mut req, &t.host, &t.path, &c.key);
                c.wr.push_raw(&req);
                self.in_flight += 1;
                self.started.push_back(id);
            }
            Err(e) => {
                c.state = State::Closed;
                self.errors.connect += 1;
                self.errors
                    .note("connect", id, format_args!("from {source:?}: {e}"));
            }
        }
    }

    fn expire_handshakes(&mut self, registry: &Registry, now: u64) {
        let limit = self.plan.handshake_timeout.as_nanos() as u64;
        while let Some(&id) = self.started.front() {
            let c = &self.conns[id];
            if !matches!(c.state, State::Connecting | State::Handshaking) {
                self.started.pop_front();
            } else if now.saturating_sub(c.since) >= limit {
                self.started.pop_front();
                self.errors.timeout += 1;
                self.errors.note(
                    "timeout",
                    id,
                    format_args!("handshake timed out ({:?})", c.state),
                );
                self.fail_handshake(registry, id);
            } else {
                break;
            }
        }
    }

    fn fail_handshake(&mut self, registry: &Registry, id: usize) {
        self.in_flight -= 1;
        self.drop_conn(registry, id);
    }

    fn drop_conn(&mut self, registry: &Registry, id: usize) {
        let c = &mut self.conns[id];
        if let Some(mut s) = c.stream.take() {
            let _ = registry.deregister(&mut s);
        }
        c.tls = None;
        c.state = State::Closed;
    }

    fn on_event(&mut self, registry: &Registry, event: &MioEvent, now: u64, app: &mut impl App) {
        let id = event.token().0;
        let Some(c) = self.conns.get_mut(id) else {
            return;
        };
        if c.state == State::Connecting {
            let Some(stream) = c.stream.as_ref() else {
                return;
            };
            // mio: a connect completes when the socket turns writable and has a peer.
            let outcome = match stream.take_error() {
                Ok(Some(e)) | Err(e) => Err(e),
                Ok(None) => match stream.peer_addr() {
                    Ok(_) => Ok(true),
                    Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(false),
                    Err(e) => Err(e),
                },
            };
            match outcome {
                Ok(true) => c.state = State::Handshaking,
                Ok(false) => return,
                Err(e) => {
                    self.errors.connect += 1;
                    self.errors.note("connect", id, format_args!("{e}"));
                    self.fail_handshake(registry, id);
                    return;
                }
            }
        }
        let closed = event.is_read_closed() || event.is_error();
        if event.is_readable() || closed {
            self.read(registry, id, now, app, closed);
        }
        self.flush(registry, id);
    }

    fn flush(&mut self, registry: &Registry, id: usize) {
        let c = &mut self.conns[id];
        let tls_wants = c.tls.as_ref().is_some_and(|t| t.wants_write());
        if c.state == State::Connecting || !(c.wr.has_pending() || tls_wants) {
            return;
        }
        let Some(stream) = c.stream.as_mut() else {
            return;
        };
        let result = match c.tls.as_deref_mut() {
            None => c.wr.flush(stream),
            Some(tls) => {
                let mut sink = tls::Sink { tls, sock: stream };
                c.wr.flush(&mut sink).and_then(|()| sink.push().map(drop))
            }
        };
        if let Err(e) = result {
            self.broken(registry, id, &e);
        }
    }

    /// Reads until the socket is drained, handling what arrives. `closed`: the peer's FIN (or
    /// an error) is already known, so read on to the end of the stream.
    fn read(&mut self, registry: &Registry, id: usize, now: u64, app: &mut impl App, closed: bool) {
        if self.conns[id].tls.is_some() {
            return self.read_tls(registry, id, now, app, closed);
        }
        loop {
            let c = &mut self.conns[id];
            let Some(stream) = c.stream.as_mut() else {
                return;
            };
            let spare = c.rd.spare();
            let want = spare.len();
            match stream.read(spare) {
                Ok(0) => return self.eof(registry, id),
                Ok(n) => {
                    c.rd.filled(n);
                    self.process(registry, id, now, app);
                    // epoll(7): a short read on a stream socket means it is drained, and new
                    // data will raise a new edge; this saves the read that only says EAGAIN.
                    // Not so for a FIN that came with the data: its edge is already spent.
                    if n < want && !closed {
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return self.broken(registry, id, &e),
            }
        }
    }

    /// `read` for a TLS connection: socket → `read_tls` → `process_new_packets` → plaintext into
    /// the connection's read buffer, handled as it comes; until the socket is drained.
    fn read_tls(
        &mut self,
        registry: &Registry,
        id: usize,
        now: u64,
        app: &mut impl App,
        closed: bool,
    ) {
        loop {
            let c = &mut self.conns[id];
            let (Some(stream), Some(tls)) = (c.stream.as_mut(), c.tls.as_deref_mut()) else {
                return;
            };
            let mut probe = tls::Probe {
                inner: stream,
                short: false,
            };
            match tls.read_tls(&mut probe) {
                Ok(0) => return self.eof(registry, id),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return self.broken(registry, id, &e),
            }
            let drained = probe.short && !closed;
            if let Err(e) = tls.process_new_packets() {
                // rustls has queued an alert saying why: send it if the socket takes it.
                let _ = tls.write_tls(stream);
                return self.tls_failed(registry, id, &e);
            }
            // The plaintext, a buffer's room at a time (the `Reader` always has room after a
            // drain, and hands over or skips what does not fit).
            loop {
                let c = &mut self.conns[id];
                let Some(tls) = c.tls.as_deref_mut() else {
                    return; // dropped while handling what came before
                };
                match tls.reader().read(c.rd.spare()) {
                    // The server's close_notify, after the last of its data.
                    Ok(0) => return self.eof(registry, id),
                    Ok(n) => {
                        c.rd.filled(n);
                        self.process(registry, id, now, app);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => return self.broken(registry, id, &e),
                }
            }
            if drained {
                return;
            }
        }
    }

    fn tls_failed(&mut self, registry: &Registry, id: usize, e: &rustls::Error) {
        let state = self.conns[id].state;
        if matches!(state, State::Connecting | State::Handshaking) {
            self.errors.tls_handshake += 1;
            self.errors.note("tls handshake", id, format_args!("{e}"));
            self.fail_handshake(registry, id);
        } else {
            self.errors.tls += 1;
            self.errors.note("tls", id, format_args!("{e} ({state:?})"));
            self.drop_conn(registry, id);
        }
    }

    fn process(&mut self, registry: &Registry, id: usize, now: u64, app: &mut impl App) {
        let c = &mut self.conns[id];
        if c.state == State::Handshaking {
            match handshake::parse_response(c.rd.pending(), &c.key) {
                Ok(None) if c.rd.is_full() => {
                    self.errors.malformed_response += 1;
                    self.errors.note(
                        "response",
                        id,
                        format_args!("response head larger than the read buffer"),
                    );
                    return self.fail_handshake(registry, id);
                }
                Ok(None) => return,
                Ok(Some(head)) => {
                    c.rd.consume(head);
                    c.state = State::Open;
                    self.in_flight -= 1;
                    self.stats.opened += 1;
                    self.stats.last_open = now;
                    self.stats.handshake.record(now.saturating_sub(c.since));
                    if self.stats.tls_params.is_none() {
                        self.stats.tls_params = c.tls.as_deref().map(tls::describe);
                    }
                    app.on_open(id, &mut c.wr, now);
                }
                Err(refusal) => {
                    match refusal {
                        Refusal::Status(code) => bump(&mut self.errors.status, code),
                        Refusal::BadUpgrade => self.errors.bad_upgrade += 1,
                        Refusal::Malformed => self.errors.malformed_response += 1,
                    }
                    let head = String::from_utf8_lossy(c.rd.pending());
                    let line = head.lines().next().unwrap_or("").to_owned();
                    self.errors
                        .note("refused", id, format_args!("{refusal:?}: {line}"));
                    return self.fail_handshake(registry, id);
                }
            }
        }
        let Conn {
            rd,
            wr,
            state,
            close_sent,
            close_received,
            ..
        } = c;
        let (errors, stats) = (&mut self.errors, &mut self.stats);
        let result = rd.drain(|ev| match ev {
            Event::Message { text, head, len } => app.on_message(id, wr, now, text, head, len),
            Event::Ping(payload) => {
                stats.pings += 1;
                if !*close_sent {
                    wr.push_frame(op::PONG, payload);
                }
            }
            Event::Pong => {}
            Event::Close { code } => {
                *close_received = true;
                *state = State::Closing;
                if !*close_sent {
                    // The server started the close: unexpected in every mode. Echo its code.
                    bump(&mut errors.server_close, code.unwrap_or(1005));
                    errors.note("server close", id, format_args!("code {code:?}"));
                    wr.push_close(code);
                    *close_sent = true;
                }
            }
        });
        if let Err(e) = result {
            self.errors.protocol += 1;
            self.errors.note("protocol", id, format_args!("{e}"));
            self.drop_conn(registry, id);
        }
    }

    fn eof(&mut self, registry: &Registry, id: usize) {
        let c = &self.conns[id];
        match c.state {
            State::Connecting | State::Handshaking => {
                self.errors.dropped_in_handshake += 1;
                self.errors.note(
                    "dropped in handshake",
                    id,
                    format_args!("EOF before a response"),
                );
                return self.fail_handshake(registry, id);
            }
            State::Closing if c.close_received => self.stats.clean_closes += 1,
            _ => {
                self.errors.dropped += 1;
                self.errors.note(
                    "dropped",
                    id,
                    format_args!("EOF without a close frame ({:?})", c.state),
                );
            }
        }
        self.drop_conn(registry, id);
    }

    fn broken(&mut self, registry: &Registry, id: usize, e: &io::Error) {
        let state = self.conns[id].state;
        let kind = if matches!(state, State::Connecting | State::Handshaking) {
            "dropped in handshake"
        } else {
            "dropped"
        };
        self.errors.note(kind, id, format_args!("{e} ({state:?})"));
        if matches!(state, State::Connecting | State::Handshaking) {
            self.errors.dropped_in_handshake += 1;
            self.fail_handshake(registry, id);
        } else {
            self.errors.dropped += 1;
            self.drop_conn(registry, id);
        }
    }
}

/// A connection's mask key and handshake key (`Sec-WebSocket-Key`), fresh for each connection.
fn fresh_keys(rng: &mut Rng) -> ([u8; 4], [u8; crate::handshake::KEY_LEN]) {
    let r = rng.next().to_le_bytes();
    let mut nonce = [0; 16];
    nonce[..8].copy_from_slice(&rng.next().to_le_bytes());
    nonce[8..].copy_from_slice(&rng.next().to_le_bytes());
    ([r[0], r[1], r[2], r[3]], handshake::key(nonce))
}

/// A non-blocking TCP connect, from `source` if given, with Nagle off (small frames must not
/// wait for an ACK).
fn connect(target: SocketAddr, source: Option<IpAddr>) -> io::Result<TcpStream> {
    let s = Socket::new(
        Domain::for_address(target),
        Type::STREAM,
        Some(Protocol::TCP),
    )?;
    s.set_nonblocking(true)?;
    s.set_tcp_nodelay(true)?;
    if let Some(ip) = source {
        s.bind(&SocketAddr::new(ip, 0).into())?;
    }
    match s.connect(&target.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    Ok(TcpStream::from_std(s.into()))
}

/// xorshift64*: mask keys and handshake nonces. A load generator needs variety, not secrecy.
pub struct Rng(u64);

impl Rng {
    pub fn seeded() -> Self {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Self((t ^ u64::from(std::process::id()).rotate_left(32)) | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

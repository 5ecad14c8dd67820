//! A fault-injecting TCP proxy in the test process, for the faults this kernel cannot make
//! (no `netem`): delay, a bandwidth limit, a black hole, a reset.
//!
//! ```text
//! client ──▶ Proxy::addr() ─ reader ─▶ [bounded queue] ─▶ writer ─▶ upstream (the server)
//!        ◀──                ◀ writer ◀─ [bounded queue] ◀─ reader ◀──
//! ```
//!
//! Each direction of each connection is a reader thread and a writer thread joined by a
//! queue of at most [`QUEUE_CHUNKS`] × [`CHUNK`] bytes. The reader stamps every chunk with the
//! time it was read; the writer holds it until that time plus the delay, so a delay is
//! latency, not a throughput limit (a 200 ms link still carries a queue's worth per 200 ms).
//! The writer paces its writes to the rate limit. Because the queue is bounded and the
//! proxy's sockets have small kernel buffers ([`SOCKET_BUFFER`]), a slow link pushes back on
//! the server the way a slow network does, instead of the proxy soaking up megabytes.
//!
//! Controls apply to every connection of the proxy, at once:
//! - [`Proxy::set_delay`]: each chunk is forwarded no sooner than D after it arrived.
//! - [`Proxy::set_rate`]: at most N bytes per second each way (written in 50 ms slices).
//! - [`Proxy::set_blackhole`]: nothing is read or written any more; both sockets stay open,
//!   so neither end is told anything (what a dead route or a crashed NAT does).
//! - [`Proxy::reset`]: `SO_LINGER` 0 on both sockets of every connection, then close: each
//!   end receives a RST. It returns once every socket is closed.
//!
//! The threads poll their controls every [`TICK`]; dropping the proxy stops them and closes
//! every socket normally.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use socket2::{Domain, SockRef, Socket, Type};

/// How often a blocked proxy thread looks at its controls.
pub const TICK: Duration = Duration::from_millis(5);
/// The most one read takes from a socket.
pub const CHUNK: usize = 4096;
/// Chunks queued per direction: with [`CHUNK`], 64 KiB in flight inside the proxy.
pub const QUEUE_CHUNKS: usize = 16;
/// `SO_RCVBUF`/`SO_SNDBUF` of the proxy's sockets (set before connecting upstream, so the
/// server sees a small window).
pub const SOCKET_BUFFER: usize = 16 * 1024;

/// A chunk and when it was read; `None` is the end of that direction.
type Chunk = Option<(Instant, Vec<u8>)>;

/// The controls and counters every thread of the proxy shares.
#[derive(Default)]
struct Shared {
    delay_us: AtomicU64,
    /// Bytes per second each way; 0 = no limit.
    rate: AtomicU64,
    blackhole: AtomicBool,
    stop: AtomicBool,
    to_server: AtomicU64,
    to_client: AtomicU64,
}

/// One proxied connection: its two sockets (kept so that [`Proxy::reset`] can reach them),
/// its four threads, and its own reset flag.
struct Link {
    client: TcpStream,
    server: TcpStream,
    reset: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

/// A proxy listening on `127.0.0.1:0` that forwards every connection to one upstream.
pub struct Proxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    links: Arc<Mutex<Vec<Link>>>,
    acceptor: Option<JoinHandle<()>>,
}

impl Proxy {
    /// Starts a proxy to `upstream` with no fault switched on.
    pub fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared::default());
        let links = Arc::new(Mutex::new(Vec::new()));
        let acceptor = {
            let (shared, links) = (Arc::clone(&shared), Arc::clone(&links));
            thread::Builder::new()
                .name("proxy-accept".into())
                .spawn(move || accept_loop(listener, upstream, &shared, &links))
                .expect("spawn the proxy's acceptor")
        };
        Proxy {
            addr,
            shared,
            links,
            acceptor: Some(acceptor),
        }
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Forwards each chunk no sooner than `delay` after it arrived (both ways).
    pub fn set_delay(&self, delay: Duration) {
        let us = u64::try_from(delay.as_micros()).unwrap_or(u64::MAX);
        self.shared.delay_us.store(us, Ordering::SeqCst);
    }

    /// At most `bytes_per_second` each way; `None`: no limit.
    pub fn set_rate(&self, bytes_per_second: Option<u64>) {
        self.shared
            .rate
            .store(bytes_per_second.unwrap_or(0), Ordering::SeqCst);
    }

    /// Stops (or resumes) forwarding without closing anything.
    pub fn set_blackhole(&self, on: bool) {
        self.shared.blackhole.store(on, Ordering::SeqCst);
    }

    /// Resets every connection made so far: both its client and its server receive a RST.
    /// Returns when all their sockets are closed.
    pub fn reset(&self) {
        let links: Vec<Link> = std::mem::take(&mut *self.links.lock().unwrap());
        for link in links {
            for socket in [&link.client, &link.server] {
                SockRef::from(socket)
                    .set_linger(Some(Duration::ZERO))
                    .expect("SO_LINGER 0");
            }
            link.reset.store(true, Ordering::SeqCst);
            for t in link.threads {
                let _ = t.join();
            }
            // The threads' clones are closed; closing these last descriptors sends the RSTs.
        }
    }

    /// Connections accepted and not reset.
    pub fn connections(&self) -> usize {
        self.links.lock().unwrap().len()
    }

    /// Bytes written to the server so far.
    pub fn bytes_to_server(&self) -> u64 {
        self.shared.to_server.load(Ordering::SeqCst)
    }

    /// Bytes written to clients so far.
    pub fn bytes_to_client(&self) -> u64 {
        self.shared.to_client.load(Ordering::SeqCst)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the acceptor, blocked in accept(2).
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.acceptor.take() {
            let _ = t.join();
        }
        for link in std::mem::take(&mut *self.links.lock().unwrap()) {
            for t in link.threads {
                let _ = t.join();
            }
        }
    }
}

fn accept_loop(
    listener: TcpListener,
    upstream: SocketAddr,
    shared: &Arc<Shared>,
    links: &Mutex<Vec<Link>>,
) {
    for client in listener.incoming() {
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(client) = client else { continue };
        match connect_upstream(upstream) {
            Ok(server) => links.lock().unwrap().push(link(client, server, shared)),
            Err(e) => eprintln!("proxy: cannot connect to {upstream}: {e}"),
        }
    }
}

/// A connection to `upstream` whose receive buffer is small from the start (it sets the
/// window the server sees).
fn connect_upstream(upstream: SocketAddr) -> io::Result<TcpStream> {
    let socket = Socket::new(Domain::for_address(upstream), Type::STREAM, None)?;
    socket.set_recv_buffer_size(SOCKET_BUFFER)?;
    socket.set_send_buffer_size(SOCKET_BUFFER)?;
    socket.connect(&upstream.into())?;
    Ok(socket.into())
}

/// Starts the four threads of one connection.
fn link(client: TcpStream, server: TcpStream, shared: &Arc<Shared>) -> Link {
    let reset = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::with_capacity(4);
    for (src, dst, up) in [(&client, &server, true), (&server, &client, false)] {
        let _ = SockRef::from(dst).set_send_buffer_size(SOCKET_BUFFER);
        for s in [src, dst] {
            s.set_nodelay(true).unwrap();
            s.set_read_timeout(Some(TICK)).unwrap();
            s.set_write_timeout(Some(TICK)).unwrap();
        }
        let (tx, rx) = mpsc::sync_channel::<Chunk>(QUEUE_CHUNKS);
        let pump = Pump {
            shared: Arc::clone(shared),
            reset: Arc::clone(&reset),
            up,
        };
        let (reader, writer) = (pump.clone(), pump);
        let (src, dst) = (src.try_clone().unwrap(), dst.try_clone().unwrap());
        threads.push(thread::spawn(move || reader.read_side(src, tx)));
        threads.push(thread::spawn(move || writer.write_side(dst, rx)));
    }
    Link {
        client,
        server,
        reset,
        threads,
    }
}

/// One direction's view of the controls.
#[derive(Clone)]
struct Pump {
    shared: Arc<Shared>,
    reset: Arc<AtomicBool>,
    /// Client to server.
    up: bool,
}

impl Pump {
    fn over(&self) -> bool {
        self.reset.load(Ordering::SeqCst) || self.shared.stop.load(Ordering::SeqCst)
    }

    fn blackholed(&self) -> bool {
        self.shared.blackhole.load(Ordering::SeqCst)
    }

    /// Reads chunks and queues them, stamped; queues `None` at the end of the stream.
    fn read_side(self, mut src: TcpStream, tx: SyncSender<Chunk>) {
        let mut buf = vec![0u8; CHUNK];
        while !self.over() {
            if self.blackholed() {
                thread::sleep(TICK);
                continue;
            }
            match src.read(&mut buf) {
                Ok(0) => {
                    let _ = tx.send(None);
                    return;
                }
                Ok(n) => {
                    if tx.send(Some((Instant::now(), buf[..n].to_vec()))).is_err() {
                        return;
                    }
                }
                Err(e) if transient(&e) => {}
                Err(_) => {
                    let _ = tx.send(None);
                    return;
                }
            }
        }
    }

    /// Writes queued chunks once their delay is over, at the rate limit.
    fn write_side(self, mut dst: TcpStream, rx: Receiver<Chunk>) {
        loop {
            let (stamp, data) = match rx.recv_timeout(TICK) {
                Ok(Some(chunk)) => chunk,
                Ok(None) => {
                    let _ = dst.shutdown(Shutdown::Write);
                    return;
                }
                Err(RecvTimeoutError::Timeout) if !self.over() => continue,
                Err(_) => return,
            };
            let delay = Duration::from_micros(self.shared.delay_us.load(Ordering::SeqCst));
            while Instant::now() < stamp + delay {
                if self.over() {
                    return;
                }
                thread::sleep(TICK.min((stamp + delay).saturating_duration_since(Instant::now())));
            }
            let mut at = 0;
            while at < data.len() {
                if self.over() {
                    return;
                }
                if self.blackholed() {
                    thread::sleep(TICK);
                    continue;
                }
                let rate = self.shared.rate.load(Ordering::SeqCst);
                let slice = match rate {
                    0 => data.len() - at,
                    r => usize::try_from(r / 20)
                        .unwrap_or(usize::MAX)
                        .clamp(1, data.len() - at),
                };
                match dst.write(&data[at..at + slice]) {
                    Ok(0) => return,
                    Ok(n) => {
                        at += n;
                        let counter = if self.up {
                            &self.shared.to_server
                        } else {
                            &self.shared.to_client
                        };
                        counter.fetch_add(n as u64, Ordering::SeqCst);
                        if rate > 0 {
                            thread::sleep(Duration::from_secs_f64(n as f64 / rate as f64));
                        }
                    }
                    Err(e) if transient(&e) => {}
                    Err(_) => return,
                }
            }
        }
    }
}

/// A read or write that timed out (the controls are looked at again) or was interrupted.
fn transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}

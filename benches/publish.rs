//! ⑦–⑧ fan-out: `ServerHandle::publish` to 1, 100 and 10 000 subscribers over loopback.
//!
//! The public API has no socket-free server, so this runs the real thing: a [`Server`] on
//! `127.0.0.1:0` on its own thread, whose handler subscribes every connection to `"t"` on
//! open, and N raw TCP clients that upgrade and then read and discard.
//!
//! One iteration is one round trip: `publish("t", 64-byte text)` from the bench thread, then
//! wait until every subscriber has received its 66-byte frame. `Throughput::Elements(N)`
//! counts deliveries. Connecting the clients happens once per N, before the timing.
//!
//! The clients live in a child process (this same binary, started with `EMBERWS_BENCH_FLEET`
//! set): both ends in one process would need 2N descriptors, and the hard `RLIMIT_NOFILE` of
//! the machines this was written on is 20 000, which 2 × 10 000 plus the listener, the poll
//! and the waker exceeds. The child reads with one mio poll, counts bytes (every frame the
//! server sends here is 66 bytes, pings are off) and writes one byte to its stdout each time
//! all N have received one more message; the bench thread blocks on reading that byte. If the
//! descriptor limit is lower still, N is reduced to fit and the bench says so on stderr.
//!
//! Group `publish` (stable name for `critcmp`): `publish/1`, `publish/100`, `publish/10000`.

mod util;

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput};
use emberws::{Config, Ctx, Decision, Handler, HttpRequest, Message, Server, ServerHandle};
use mio::net::TcpStream as MioStream;
use mio::{Events, Interest, Poll, Token};

use util::REQUEST;

/// Set in the child process: `"<server address> <client count>"`.
const FLEET_ENV: &str = "EMBERWS_BENCH_FLEET";
const TOPIC: &str = "t";
const PAYLOAD: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
/// An unmasked server frame with a 7-bit length: 2 header bytes and the payload.
const FRAME_LEN: u64 = 2 + PAYLOAD.len() as u64;
const SUBSCRIBERS: [usize; 3] = [1, 100, 10_000];
/// Descriptors kept free for everything that is not a client connection.
const SPARE_FDS: u64 = 64;
/// Clients connecting at once: under the listener's backlog.
const CONNECT_BATCH: usize = 250;

/// Subscribes every connection to [`TOPIC`] as it opens.
struct Subscribe;

impl Handler for Subscribe {
    type State = ();

    fn on_upgrade(&mut self, _req: &HttpRequest<'_>) -> Decision<()> {
        Decision::Accept(())
    }

    fn on_open(&mut self, ctx: &mut Ctx<'_>, _state: &mut ()) {
        assert_eq!(
            ctx.subscribe(TOPIC),
            emberws::Subscribed::Added,
            "the subscription limit is not reached"
        );
    }

    fn on_message(&mut self, _ctx: &mut Ctx<'_>, _state: &mut (), _msg: Message<'_>) {}
}

/// A running server with `n` subscribed clients in a child process.
struct Fixture {
    handle: ServerHandle,
    server: Option<JoinHandle<()>>,
    fleet: Child,
    rounds: ChildStdout,
}

impl Fixture {
    fn start(n: usize) -> Self {
        let cfg = Config::default()
            .max_connections(20_000)
            .ping_interval(None)
            .close_timeout(Duration::from_secs(1));
        let (tx, rx) = mpsc::channel();
        let server = thread::spawn(move || {
            let addr = SocketAddr::from(([127, 0, 0, 1], 0));
            let mut server = Server::bind(addr, cfg, Subscribe).expect("bind 127.0.0.1:0");
            tx.send((server.local_addr(), server.handle()))
                .expect("the bench thread waits for the address");
            server.run().expect("the server loop");
        });
        let (addr, handle) = rx.recv().expect("the server thread starts");

        let exe = std::env::current_exe().expect("the bench binary's path");
        let mut fleet = Command::new(exe)
            .env(FLEET_ENV, format!("{addr} {n}"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the client process");
        let mut rounds = fleet.stdout.take().expect("piped stdout");
        // The child prints "ready\n" once every client has its 101 (and so its subscription).
        let mut line = [0u8; 6];
        rounds
            .read_exact(&mut line)
            .expect("the client process connects its clients");
        assert_eq!(&line, b"ready\n");
        Fixture {
            handle,
            server: Some(server),
            fleet,
            rounds,
        }
    }

    /// One publish, until every subscriber has it.
    fn round(&mut self) {
        self.handle
            .publish(TOPIC, Message::Text(PAYLOAD))
            .expect("the server runs");
        let mut done = [0u8; 1];
        self.rounds
            .read_exact(&mut done)
            .expect("the client process reports each complete round");
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        // The child only stops when killed; it is ours, ended by its own handle.
        let _ = self.fleet.kill();
        let _ = self.fleet.wait();
        let _ = self.handle.shutdown();
        if let Some(server) = self.server.take() {
            let _ = server.join();
        }
    }
}

/// Raises the soft descriptor limit to the hard one; returns how many clients fit.
fn max_clients() -> usize {
    let limit = rlimit::increase_nofile_limit(u64::MAX).unwrap_or(1024);
    usize::try_from(limit.saturating_sub(SPARE_FDS)).unwrap_or(usize::MAX)
}

fn publish(c: &mut Criterion) {
    let fit = max_clients();
    let mut g = c.benchmark_group("publish");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    for wanted in SUBSCRIBERS {
        let n = wanted.min(fit);
        if n < wanted {
            eprintln!("publish: RLIMIT_NOFILE fits {fit} clients; publish/{wanted} runs {n}");
        }
        g.throughput(Throughput::Elements(n as u64));
        // Made on the first call only, so a filtered-out N connects nothing.
        let mut fixture: Option<Fixture> = None;
        g.bench_function(BenchmarkId::from_parameter(n), |b| {
            let f = fixture.get_or_insert_with(|| Fixture::start(n));
            b.iter(|| f.round());
        });
        drop(fixture);
    }
    g.finish();
}

/// The child process: `n` clients upgraded, then read and counted until killed.
fn fleet(spec: &str) -> io::Result<()> {
    let bad = |what| io::Error::new(io::ErrorKind::InvalidInput, what);
    let (addr, n) = spec.split_once(' ').ok_or_else(|| bad("no count"))?;
    let addr: SocketAddr = addr.parse().map_err(|_| bad("bad address"))?;
    let n: usize = n.parse().map_err(|_| bad("bad count"))?;
    max_clients();

    let mut received = 0u64;
    let mut clients = Vec::with_capacity(n);
    while clients.len() < n {
        let batch = CONNECT_BATCH.min(n - clients.len());
        let mut pending = Vec::with_capacity(batch);
        for _ in 0..batch {
            let mut s = TcpStream::connect(addr)?;
            s.set_nodelay(true)?;
            s.write_all(REQUEST)?;
            pending.push(s);
        }
        for mut s in pending {
            received += read_101(&mut s)?;
            clients.push(s);
        }
    }

    let mut poll = Poll::new()?;
    let mut clients = clients
        .into_iter()
        .enumerate()
        .map(|(i, s)| {
            s.set_nonblocking(true)?;
            let mut s = MioStream::from_std(s);
            poll.registry()
                .register(&mut s, Token(i), Interest::READABLE)?;
            Ok(s)
        })
        .collect::<io::Result<Vec<_>>>()?;

    let mut out = io::stdout().lock();
    out.write_all(b"ready\n")?;
    out.flush()?;

    let per_round = FRAME_LEN * n as u64;
    let mut reported = 0u64;
    let mut events = Events::with_capacity(1024);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if let Err(e) = poll.poll(&mut events, None) {
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        for event in &events {
            let Some(s) = clients.get_mut(event.token().0) else {
                continue;
            };
            loop {
                match s.read(&mut buf) {
                    // The server went away: the bench is over.
                    Ok(0) => return Ok(()),
                    Ok(k) => received += k as u64,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
        }
        let rounds = received / per_round;
        if rounds > reported {
            let done = usize::try_from(rounds - reported).unwrap_or(usize::MAX);
            out.write_all(&vec![0u8; done])?;
            out.flush()?;
            reported = rounds;
        }
    }
}

/// Reads the server's response head; returns how many bytes came after it (frame bytes).
fn read_101(s: &mut TcpStream) -> io::Result<u64> {
    let mut reader = BufReader::new(s);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    if !line.starts_with("HTTP/1.1 101 ") {
        return Err(io::Error::other(format!("upgrade refused: {line:?}")));
    }
    while line != "\r\n" {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
    }
    Ok(reader.buffer().len() as u64)
}

fn main() {
    if let Ok(spec) = std::env::var(FLEET_ENV) {
        if let Err(e) = fleet(&spec) {
            eprintln!("publish bench client process: {e}");
            std::process::exit(1);
        }
        return;
    }
    let mut c = Criterion::default().configure_from_args();
    publish(&mut c);
    c.final_summary();
}

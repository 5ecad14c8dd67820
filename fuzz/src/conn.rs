//! `conn`: the whole server (handshake path, connection, loop, outbox, topic table, timers)
//! through `emberws::testing::Harness`, one peer sending the fuzzed byte stream and a
//! bystander subscribed to every topic.
//!
//! Input: [`HEADER`] control bytes (limits, windows, two split seeds, the marks), then two
//! bytes per mark (gap, time step), then the stream. The stream is run twice, cut by each
//! seed; at every mark both runs advance the clock and the peer reads, so time and reads fall
//! at the same stream offsets and only the cuts differ.

use std::collections::HashSet;
use std::time::Duration;

use emberws::testing::{Frame, Harness, Peer};
use emberws::{
    CloseCode, Config, ConnId, Ctx, Decision, Handler, HttpRequest, Message, SlowConsumer, Stats,
};

const HEADER: usize = 8;

/// The statuses of the failure table (DESIGN.md, README) a request can be answered with.
const STATUSES: [u16; 7] = [400, 403, 404, 405, 426, 431, 503];
/// The close codes the server itself sends after the upgrade (it echoes the peer's own).
const CODES: [u16; 5] = [1000, 1002, 1007, 1008, 1009];
/// The close code of a server shutting down.
const GOING_AWAY: u16 = 1001;

/// What the handler saw, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Ev {
    Open(ConnId),
    Text(ConnId, String),
    Binary(ConnId, Vec<u8>),
    Close(ConnId, u16),
}

/// Echo, plus `s:PATTERN` subscribe, `u:PATTERN` unsubscribe, `p:TOPIC DATA` publish and
/// `c:` close (1000). Panics on a callback about a connection after its `on_close`.
#[derive(Default)]
struct Probe {
    log: Vec<Ev>,
    closed: HashSet<ConnId>,
}

impl Handler for Probe {
    type State = ();

    fn on_upgrade(&mut self, req: &HttpRequest<'_>) -> Decision<()> {
        match req.path() {
            "/no" => Decision::Reject(403),
            "/gone" => Decision::Reject(404),
            _ => Decision::Accept(()),
        }
    }

    fn on_open(&mut self, ctx: &mut Ctx<'_>, _: &mut ()) {
        assert!(!self.closed.contains(&ctx.id()), "opened after on_close");
        self.log.push(Ev::Open(ctx.id()));
    }

    fn on_message(&mut self, ctx: &mut Ctx<'_>, _: &mut (), msg: Message<'_>) {
        let id = ctx.id();
        assert!(!self.closed.contains(&id), "a message after on_close");
        let limit = ctx.config().max_message_size;
        assert!(msg.len() <= limit, "{} bytes past {limit}", msg.len());
        match msg {
            Message::Text(t) => {
                self.log.push(Ev::Text(id, t.to_owned()));
                if let Some(p) = t.strip_prefix("s:") {
                    ctx.subscribe(p);
                } else if let Some(p) = t.strip_prefix("u:") {
                    ctx.unsubscribe(p);
                } else if let Some(rest) = t.strip_prefix("p:") {
                    let (topic, data) = rest.split_once(' ').unwrap_or((rest, ""));
                    ctx.publish(topic, Message::Text(data));
                } else if t.starts_with("c:") {
                    ctx.close(CloseCode::NORMAL, "bye");
                } else {
                    ctx.send(msg);
                }
            }
            Message::Binary(b) => {
                self.log.push(Ev::Binary(id, b.to_vec()));
                ctx.send(msg);
            }
        }
    }

    fn on_close(&mut self, ctx: &mut Ctx<'_>, _: (), code: CloseCode, _: &str) {
        assert!(self.closed.insert(ctx.id()), "on_close twice");
        self.log.push(Ev::Close(ctx.id(), code.as_u16()));
    }
}

const CANNED: &[u8] = b"GET /chat HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\
Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
Sec-WebSocket-Version: 13\r\nOrigin: http://ok\r\nSec-WebSocket-Protocol: chat\r\n\r\n";

struct Plan {
    cfg: Config,
    /// The peer's window (bytes it lets the server have outstanding) and the bystander's.
    window: usize,
    bystander_window: usize,
    seeds: [u8; 2],
    /// (stream offset, time step) at which both runs advance the clock and the peer reads.
    marks: Vec<(usize, Duration)>,
    disconnect: bool,
    /// The server shuts down at the end (1001 to everyone, then finished by the close
    /// timeout).
    shutdown: bool,
    stream: Vec<u8>,
}

fn pick<T: Copy>(table: &[T], bits: u8) -> T {
    table[usize::from(bits) % table.len()]
}

fn plan(data: &[u8]) -> Option<Plan> {
    let (h, rest) = data.split_at_checked(HEADER)?;
    let ms = Duration::from_millis;
    let cfg = Config::default()
        .max_message_size(pick(&[1, 16, 125, 126, 1000, 4096, 65_536, 1 << 20], h[0]))
        .slow_consumer(if h[0] >> 3 & 1 == 0 {
            SlowConsumer::Close
        } else {
            SlowConsumer::Drop
        })
        .max_backpressure(pick(&[1, 64, 1024, 65_536], h[1]))
        .max_request_head(pick(&[64, 200, 1024, 8192], h[1] >> 2))
        .max_headers(pick(&[1, 3, 8, 32], h[1] >> 4))
        .max_subscriptions(pick(&[1, 2, 8, 64], h[1] >> 6))
        .read_budget(pick(&[1, 5, 333, 65_536], h[2]))
        .frame_budget(pick(&[1, 2, 7, 256], h[2] >> 2))
        .ping_interval(pick(
            &[None, Some(ms(100)), Some(ms(1000)), Some(ms(30_000))],
            h[2] >> 4,
        ))
        .idle_timeout(pick(
            &[None, None, Some(ms(200)), Some(ms(5000))],
            h[2] >> 6,
        ))
        .handshake_timeout(pick(&[ms(50), ms(1000), ms(10_000), ms(10_000)], h[3]))
        .pong_timeout(pick(&[ms(20), ms(500), ms(10_000), ms(10_000)], h[3] >> 2))
        .close_timeout(pick(&[ms(20), ms(500), ms(5000), ms(5000)], h[3] >> 4))
        .max_spare_buffers(pick(&[0, 1, 4, 32], h[3] >> 6))
        .read_buffer_size(pick(&[1024, 65_536], h[6] >> 3))
        .drain_low_water(pick(&[0, 100], h[6] >> 4))
        .allowed_origins(if h[7] >> 2 & 1 == 1 {
            vec!["http://ok".into()]
        } else {
            Vec::new()
        })
        .protocols(if h[7] >> 3 & 1 == 1 {
            vec!["chat".into()]
        } else {
            Vec::new()
        });
    cfg.validate().ok()?;
    let count = usize::from(h[6] & 7);
    let (marks, stream) = rest.split_at_checked(2 * count)?;
    let mut stream = stream.to_vec();
    if h[0] >> 4 & 1 == 1 {
        stream.splice(0..0, CANNED.iter().copied());
    }
    let mut at = 0;
    let marks = marks
        .chunks_exact(2)
        .map(|m| {
            at += usize::from(m[0]) * 4;
            (at.min(stream.len()), ms(u64::from(m[1]) * 8))
        })
        .collect();
    Some(Plan {
        cfg,
        window: pick(
            &[
                usize::MAX,
                usize::MAX,
                usize::MAX,
                usize::MAX,
                64,
                256,
                1000,
                16_384,
            ],
            h[0] >> 5,
        ),
        bystander_window: pick(&[usize::MAX, 64, 100, 4096], h[7]),
        seeds: [h[4], h[5]],
        marks,
        disconnect: h[7] >> 4 & 1 == 1,
        shutdown: h[7] >> 5 & 1 == 1,
        stream,
    })
}

/// What one run produced.
struct Outcome {
    events: Vec<Ev>,
    /// The peer's HTTP status, and the frames it received after a 101.
    status: Option<u16>,
    frames: Vec<Frame>,
    stats: Stats,
}

/// The bounds the server promises, checked after every step.
struct Bounds {
    /// A connection's lent buffer: a message or a head, and a control frame's payload split
    /// across reads behind a full message (the formula's 125 B).
    buffer: usize,
    /// A connection's queue: `max_backpressure`, or one message of the send limit.
    queue: usize,
    spares: usize,
}

impl Bounds {
    fn of(cfg: &Config) -> Self {
        let worst = cfg.worst_case_connection_bytes::<()>()
            - emberws::server::idle_connection_bytes::<()>();
        let queue = cfg.max_backpressure.max(cfg.send_limit() + 14);
        Bounds {
            buffer: worst - queue,
            queue,
            spares: cfg.max_spare_buffers * cfg.spare_buffer_size(),
        }
    }

    fn check(&self, h: &Harness<Probe>, peers: &[&Peer]) {
        let mut queued = 0;
        for p in peers {
            let (held, queue) = (h.held_bytes(p), h.buffered_amount(p));
            queued += queue;
            assert!(
                queue <= self.queue,
                "{queue} B queued, bound {}",
                self.queue
            );
            let buffer = held - queue;
            assert!(
                buffer <= self.buffer,
                "a {buffer} B buffer, bound {}",
                self.buffer
            );
        }
        let stats = h.stats();
        assert_eq!(
            stats.queued_bytes, queued as u64,
            "the queued bytes counted"
        );
        let spares = h.spare_bytes();
        assert!(
            spares <= self.spares,
            "{spares} B of spares, bound {}",
            self.spares
        );
        for (i, &n) in stats.rejected.iter().enumerate() {
            let status = emberws::stats::REJECT_STATUSES.get(i).copied();
            assert!(
                n == 0 || status.is_some_and(|s| STATUSES.contains(&s)),
                "refused with {status:?}, not in the failure table"
            );
        }
    }
}

/// Runs turns until the loop has nothing left to do at this instant.
fn settle(h: &mut Harness<Probe>) {
    for _ in 0..100_000 {
        if h.turn() != Some(Duration::ZERO) {
            return;
        }
    }
    panic!("the loop never settles");
}

fn run(plan: &Plan, seed: u8) -> Outcome {
    let bounds = Bounds::of(&plan.cfg);
    let mut h = Harness::new(plan.cfg.clone(), Probe::default());
    let mut bystander = h.connect_with("/", &[("Origin", "http://ok")]).ok();
    if let Some(b) = &bystander {
        h.send(b, Message::Text("s:#"));
        h.set_window(b, plan.bystander_window);
    }
    let mut rng = u32::from(seed) << 8 | 0x5bd1;
    let max_cut = pick(&[usize::MAX, 1, 7, 300], seed);
    let stream = &plan.stream[..];
    let mut out = Outcome {
        events: Vec::new(),
        status: None,
        frames: Vec::new(),
        stats: Stats::default(),
    };
    let mut peer: Option<Peer> = None;
    let mut at = 0;
    let mut marks = plan.marks.iter().copied().peekable();
    loop {
        let stop = marks.peek().map_or(stream.len(), |m| m.0);
        while at < stop || (at == 0 && peer.is_none()) {
            rng ^= rng << 13;
            rng ^= rng >> 17;
            rng ^= rng << 5;
            let n = if max_cut == usize::MAX {
                stop - at
            } else {
                1 + rng as usize % max_cut
            };
            let end = (at + n).min(stop);
            let piece = &stream[at..end];
            at = end;
            match &mut peer {
                None => match h.open_raw(&[]) {
                    Some(mut p) => {
                        h.set_window(&p, plan.window);
                        h.send_bytes(&mut p, piece);
                        peer = Some(p);
                    }
                    None => {
                        out.status = Some(503);
                        break;
                    }
                },
                Some(p) => h.send_bytes(p, piece),
            }
            settle(&mut h);
            let mut all: Vec<&Peer> = bystander.iter().collect();
            all.extend(peer.iter());
            bounds.check(&h, &all);
        }
        let Some(p) = peer.as_mut() else { break };
        let last = marks.next();
        if let Some((_, step)) = last {
            h.advance(step);
        }
        settle(&mut h);
        read(&mut h, p, &mut out);
        if last.is_none() {
            break;
        }
    }
    if let Some(p) = peer.as_mut() {
        if plan.disconnect {
            h.disconnect(p);
            settle(&mut h);
        }
        read(&mut h, p, &mut out);
        if plan.shutdown {
            h.server_mut().shutdown();
            settle(&mut h);
            read(&mut h, p, &mut out);
            // No settling once finished: a finished server's turn asks for another at once
            // (the loop stops on is_finished).
            h.advance(plan.cfg.close_timeout);
            assert!(
                h.server_mut().is_finished(),
                "not finished at the close timeout"
            );
        }
        let mut all: Vec<&Peer> = bystander.iter().collect();
        all.push(p);
        bounds.check(&h, &all);
    }
    if let Some(b) = bystander.as_mut() {
        for _ in 0..10_000 {
            let before = h.stats().bytes_out;
            h.send_bytes(b, &[]);
            for f in h.received(b) {
                if let Frame::Close(Some(c), _) = f {
                    assert!(
                        CODES.contains(&c) || plan.shutdown && c == GOING_AWAY,
                        "{c}"
                    );
                }
            }
            if h.stats().bytes_out == before {
                break;
            }
        }
    }
    out.stats = h.stats();
    out.events = std::mem::take(&mut h.handler_mut().log);
    if let Some(p) = &peer {
        let id = p.id();
        let mine = |e: &&Ev| match e {
            Ev::Open(i) | Ev::Text(i, _) | Ev::Binary(i, _) | Ev::Close(i, _) => *i == id,
        };
        let opened = out
            .events
            .iter()
            .filter(mine)
            .any(|e| matches!(e, Ev::Open(_)));
        // No status: the peer did not read its answer before the connection was dropped.
        if let Some(status) = out.status {
            assert_eq!(opened, status == 101, "opened, yet answered {status}");
        }
        check_frames(&out, id, plan.shutdown);
    }
    out
}

/// The peer reads what the server sent, the HTTP answer first, then frames, until the
/// server writes nothing more.
fn read(h: &mut Harness<Probe>, p: &mut Peer, out: &mut Outcome) {
    for _ in 0..10_000 {
        let before = h.stats().bytes_out;
        // The window has room again: a writable event.
        h.send_bytes(p, &[]);
        if out.status.is_none() {
            if let Some(answer) = h.answer(p) {
                assert!(
                    answer.status == 101 || STATUSES.contains(&answer.status),
                    "answered {}, not in the failure table",
                    answer.status
                );
                out.status = Some(answer.status);
            }
        }
        if out.status == Some(101) {
            out.frames.extend(h.received(p));
        }
        settle(h);
        if h.stats().bytes_out == before {
            return;
        }
    }
    panic!("the server never stops writing");
}

/// The server's close frame is its last frame, and carries a code of the failure table or
/// the peer's own code echoed (the one the handler was told).
fn check_frames(out: &Outcome, id: ConnId, shutdown: bool) {
    let told = out.events.iter().find_map(|e| match e {
        Ev::Close(i, code) if *i == id => Some(*code),
        _ => None,
    });
    if let Some(i) = out
        .frames
        .iter()
        .position(|f| matches!(f, Frame::Close(..)))
    {
        assert_eq!(i + 1, out.frames.len(), "frames after the close frame");
        if let Frame::Close(Some(code), _) = out.frames[i] {
            assert!(
                CODES.contains(&code) || told == Some(code) || shutdown && code == GOING_AWAY,
                "closed with {code}, not in the failure table (handler told {told:?})"
            );
        }
    }
}

/// Never panics; every connection within its bound, the queue and the pool within theirs;
/// answers from the failure table; no callback after `on_close`, none at all for a refused
/// request; the close frame last; and the same events (and, when the peer's window is
/// unlimited, the same frames) whichever way the stream was cut, unless a slow-consumer
/// decision (which depends on write timing by design) was taken.
pub fn conn(data: &[u8]) {
    let Some(plan) = plan(data) else { return };
    let a = run(&plan, plan.seeds[0]);
    let b = run(&plan, plan.seeds[1]);
    let slow = |s: &Stats| s.slow_drops + s.slow_closes > 0;
    if slow(&a.stats) || slow(&b.stats) {
        return;
    }
    assert_eq!(a.status, b.status, "the answer depends on the cuts");
    assert_eq!(
        a.events, b.events,
        "the handler's events depend on the cuts"
    );
    if plan.window == usize::MAX {
        assert_eq!(a.frames, b.frames, "the frames sent depend on the cuts");
    }
}

//! `soak` mode: a bounded churn against the relay, recorded every second.
//!
//! For `--minutes N` it keeps about C subscriber connections open, closing a share of them
//! each second cleanly (close 1000) and opening new ones in their place. Each subscriber holds
//! `SUBSCRIPTIONS` topics of `soak/0 … soak/T-1`; now and then one unsubscribes from a topic
//! and, once acknowledged, subscribes to another (or the same one again). `PUBLISHERS`
//! connections publish R messages a second in all, each owning the topics `k ≡ p (mod P)`, with
//! a sequence number per topic and every `RETAIN_EVERY`-th publish retained; each publish asks
//! for an ack, so the generator knows which publishes the relay has handled.
//!
//! Subscribers check what they receive (`sequence`): nothing lost while subscribed, nothing
//! duplicated, each topic in order. A subscription that ends (unsubscribe acknowledged, or its
//! connection closed cleanly) must have received every publish the relay acknowledged before
//! the end was asked for; a connection that fails is counted as an error, not as a loss.
//!
//! Every second one `record::Row` goes to the CSV (flushed, so a killed run keeps its rows):
//! the server's RSS (`/proc/PID/status`), its open connections (`/healthz`, over `ws://`), its
//! CPU over the second (`/proc/PID/stat`), and the second's counts. At the end: the SVG plot
//! and a summary; the run fails if anything was lost, duplicated or reordered, if errors were
//! counted, or if RSS at the end exceeds RSS after the warm-up by more than `RSS_GROWTH_LIMIT`.
//! The relay's tables keep the size of the most connections it held at once, so when the peak
//! concurrency rises well after the warm-up (a stall of the machine), the step RSS takes then
//! is taken out of the growth (`record::rss_verdict`), and the summary lists each.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::Duration;

use crate::fleet::{App, Fleet, Rng, Writer};
use crate::frame::op;
use crate::record::{self, Row};
use crate::sequence::{Counts, Track};
use crate::{scan, Run};

pub struct Config {
    pub duration: Duration,
    /// Subscriber connections kept open.
    pub connections: usize,
    /// Percent of the subscribers closed (and replaced) each second.
    pub churn_pct: f64,
    pub topics: usize,
    /// Publishes per second, all publishers together.
    pub rate: f64,
    pub csv: PathBuf,
    pub svg: PathBuf,
}

/// Publisher connections (ids `0..PUBLISHERS`); subscribers follow.
const PUBLISHERS: usize = 4;
/// Topics each subscriber holds at a time.
const SUBSCRIPTIONS: usize = 3;
/// Percent of the subscribers that swap one topic for another each second.
const RESUBSCRIBE_PCT: f64 = 5.0;
/// Every n-th publish of a topic is retained.
const RETAIN_EVERY: u64 = 8;
/// RSS at the end may exceed RSS after the warm-up by this fraction at most, its steps at
/// later rises of the peak concurrency taken out (`record::rss_verdict`).
pub const RSS_GROWTH_LIMIT: f64 = 0.05;
/// Churn, resubscriptions and checks run this often (a tenth of the second's share each).
const STEP: Duration = Duration::from_millis(100);
const SECOND: u64 = 1_000_000_000;

/// Where one subscriber's topic stands.
enum Slot {
    /// Subscribe sent with this request id, no ack yet.
    Pending {
        topic: u32,
        id: u64,
    },
    Active {
        topic: u32,
        track: Track,
    },
    /// Unsubscribe sent; `required_next` as it was then.
    Leaving {
        topic: u32,
        id: u64,
        track: Track,
        required_next: u64,
    },
}

impl Slot {
    fn topic(&self) -> u32 {
        match self {
            Slot::Pending { topic, .. }
            | Slot::Active { topic, .. }
            | Slot::Leaving { topic, .. } => *topic,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// No connection: free to be (re)opened.
    Down,
    /// Opening or open.
    Up,
    /// Close sent at this instant; each slot's end is fixed (`ends`).
    Closing(u64),
}

struct Subscriber {
    phase: Phase,
    slots: Vec<Slot>,
    /// Closing: each held topic's track and what it must have received.
    ends: Vec<(u32, Track, u64)>,
    next_id: u64,
}

struct Publisher {
    /// Publishes awaiting their ack, in order: (request id, topic, seq).
    unacked: VecDeque<(u64, u32, u64)>,
    next_id: u64,
}

struct Soak {
    topics: usize,
    subs: Vec<Subscriber>,
    pubs: Vec<Publisher>,
    /// Per topic: the next sequence number to publish, and one past the highest acknowledged.
    next_seq: Vec<u64>,
    acked_next: Vec<u64>,
    counts: Counts,
    published: u64,
    /// Publish slots passed over because their publisher's connection had failed.
    skipped: u64,
    /// Messages on a topic the subscriber does not hold.
    stray: u64,
    unexpected: u64,
    relay_errors: u64,
    /// Unsubscribes acknowledged (each followed by a new subscribe).
    resubscribed: u64,
    /// Deliveries the relay reported in its publish acks.
    acked_deliveries: u64,
    /// Every new peak of the connections with a socket open (publishers, subscribers open,
    /// opening or closing), sampled each step: `(clock ns, connections)`. The relay holds
    /// these too, so its tables' high-water mark follows this.
    peaks: Vec<(u64, u64)>,
    rng: Rng,
    buf: Vec<u8>,
}

impl Soak {
    fn new(cfg: &Config, pool: usize) -> Self {
        Self {
            topics: cfg.topics,
            subs: (0..pool)
                .map(|_| Subscriber {
                    phase: Phase::Down,
                    slots: Vec::new(),
                    ends: Vec::new(),
                    next_id: 1,
                })
                .collect(),
            pubs: (0..PUBLISHERS)
                .map(|_| Publisher {
                    unacked: VecDeque::new(),
                    next_id: 1,
                })
                .collect(),
            next_seq: vec![0; cfg.topics],
            acked_next: vec![0; cfg.topics],
            counts: Counts::default(),
            published: 0,
            skipped: 0,
            stray: 0,
            unexpected: 0,
            relay_errors: 0,
            resubscribed: 0,
            acked_deliveries: 0,
            peaks: Vec::new(),
            rng: Rng::seeded(),
            buf: Vec::with_capacity(256),
        }
    }

    fn errors(&self) -> u64 {
        self.stray + self.unexpected + self.relay_errors
    }

    /// A topic none of subscriber `s`'s slots holds.
    fn free_topic(&mut self, s: usize) -> u32 {
        loop {
            let t = (self.rng.next() % self.topics as u64) as u32;
            if self.subs[s].slots.iter().all(|slot| slot.topic() != t) {
                return t;
            }
        }
    }

    fn request(&mut self, wr: &mut Writer, kind: &str, topic: u32, id: u64) {
        self.buf.clear();
        let _ = write!(
            self.buf,
            r#"{{"type":"{kind}","topic":"soak/{topic}","id":{id}}}"#
        );
        wr.push_frame(op::TEXT, &self.buf);
    }

    fn subscribe(&mut self, s: usize, wr: &mut Writer, topic: u32) {
        let id = self.subs[s].next_id;
        self.subs[s].next_id += 1;
        self.request(wr, "subscribe", topic, id);
        self.subs[s].slots.push(Slot::Pending { topic, id });
    }

    /// Queues one publish on `topic` on its publisher's writer.
    fn publish(&mut self, topic: u32, wr: &mut Writer) {
        let p = topic as usize % PUBLISHERS;
        let seq = self.next_seq[topic as usize];
        self.next_seq[topic as usize] += 1;
        let id = self.pubs[p].next_id;
        self.pubs[p].next_id += 1;
        let retain = seq % RETAIN_EVERY == 0;
        self.buf.clear();
        let _ = write!(
            self.buf,
            r#"{{"type":"publish","topic":"soak/{topic}","data":{{"seq":{seq},"r":{}}},"retain":{retain},"id":{id}}}"#,
            u8::from(retain)
        );
        wr.push_frame(op::TEXT, &self.buf);
        self.pubs[p].unacked.push_back((id, topic, seq));
        self.published += 1;
    }

    /// Starts subscriber `s`'s close: each held topic must have what was acknowledged now.
    fn begin_close(&mut self, s: usize, now: u64) {
        let sub = &mut self.subs[s];
        sub.phase = Phase::Closing(now);
        for slot in sub.slots.drain(..) {
            match slot {
                Slot::Pending { .. } => {}
                Slot::Active { topic, track } => {
                    sub.ends
                        .push((topic, track, self.acked_next[topic as usize]));
                }
                Slot::Leaving {
                    topic,
                    track,
                    required_next,
                    ..
                } => sub.ends.push((topic, track, required_next)),
            }
        }
    }

    /// Subscriber `s`'s connection is gone: checks its subscriptions' ends if it closed
    /// cleanly (the server's close frame follows every message queued before it).
    fn end(&mut self, s: usize, clean: bool) {
        let sub = &mut self.subs[s];
        sub.phase = Phase::Down;
        sub.slots.clear();
        for (_, track, required_next) in sub.ends.drain(..) {
            if clean {
                track.finish(required_next, &mut self.counts);
            }
        }
    }

    /// Subscriber `s` swaps one of its active topics for another: unsubscribe now, and the
    /// new subscribe when that is acknowledged.
    fn resubscribe(&mut self, s: usize, wr: &mut Writer) {
        let sub = &mut self.subs[s];
        let Some(i) = sub
            .slots
            .iter()
            .position(|slot| matches!(slot, Slot::Active { .. }))
        else {
            return;
        };
        let Slot::Active { topic, track } = sub.slots.swap_remove(i) else {
            unreachable!("position() found an Active slot");
        };
        let id = sub.next_id;
        sub.next_id += 1;
        let required_next = self.acked_next[topic as usize];
        sub.slots.push(Slot::Leaving {
            topic,
            id,
            track,
            required_next,
        });
        self.request(wr, "unsubscribe", topic, id);
    }

    fn on_subscriber_message(&mut self, s: usize, wr: &mut Writer, now: u64, head: &[u8]) {
        if scan::has_type(head, b"message") {
            let topic = scan::text(head, b"\"topic\"")
                .and_then(|t| t.strip_prefix(b"soak/"))
                .and_then(|t| std::str::from_utf8(t).ok()?.parse::<u32>().ok());
            let (Some(topic), Some(seq)) = (topic, scan::seq(head)) else {
                self.unexpected += 1;
                return;
            };
            let retained = scan::uint(head, b"\"r\"") == Some(1);
            let sub = &mut self.subs[s];
            let slot = sub.slots.iter_mut().find(|slot| slot.topic() == topic);
            match slot {
                Some(Slot::Active { track, .. } | Slot::Leaving { track, .. }) => {
                    track.on_message(seq, retained, now, &mut self.counts);
                }
                // Before the subscription's ack: the relay acks before it delivers.
                Some(Slot::Pending { .. }) => self.stray += 1,
                None if matches!(sub.phase, Phase::Closing(_)) => {
                    // Closing: the held topics' tracks moved to `ends` and keep checking; a
                    // topic not among them was still pending, and is not checked.
                    match sub.ends.iter_mut().find(|(t, ..)| *t == topic) {
                        Some((_, track, _)) => {
                            track.on_message(seq, retained, now, &mut self.counts);
                        }
                        None => self.counts.delivered += 1,
                    }
                }
                None => self.stray += 1,
            }
        } else if scan::has_type(head, b"ack") {
            let Some(id) = scan::uint(head, b"\"id\"") else {
                self.unexpected += 1;
                return;
            };
            if matches!(self.subs[s].phase, Phase::Closing(_)) {
                return;
            }
            let sub = &mut self.subs[s];
            let at = sub.slots.iter().position(|slot| match slot {
                Slot::Pending { id: i, .. } | Slot::Leaving { id: i, .. } => *i == id,
                Slot::Active { .. } => false,
            });
            let Some(at) = at else {
                self.unexpected += 1;
                return;
            };
            match sub.slots.swap_remove(at) {
                Slot::Pending { topic, .. } => {
                    let track = Track::new(self.next_seq[topic as usize]);
                    sub.slots.push(Slot::Active { topic, track });
                }
                Slot::Leaving {
                    track,
                    required_next,
                    ..
                } => {
                    track.finish(required_next, &mut self.counts);
                    self.resubscribed += 1;
                    let topic = self.free_topic(s);
                    self.subscribe(s, wr, topic);
                }
                Slot::Active { .. } => unreachable!("only Pending and Leaving slots match"),
            }
        } else if scan::has_type(head, b"error") {
            self.relay_error(s + PUBLISHERS, head);
        } else {
            self.unexpected += 1;
        }
    }

    fn on_publisher_message(&mut self, p: usize, head: &[u8]) {
        if scan::has_type(head, b"ack") {
            let id = scan::uint(head, b"\"id\"");
            match self.pubs[p].unacked.pop_front() {
                Some((want, topic, seq)) if Some(want) == id => {
                    self.acked_next[topic as usize] = seq + 1;
                    self.acked_deliveries += scan::uint(head, b"\"delivered\"").unwrap_or(0);
                }
                _ => self.unexpected += 1,
            }
        } else if scan::has_type(head, b"error") {
            self.relay_error(p, head);
        } else {
            self.unexpected += 1;
        }
    }

    fn relay_error(&mut self, id: usize, head: &[u8]) {
        if self.relay_errors < 3 {
            let text = String::from_utf8_lossy(head);
            eprintln!("load: [{id}] the relay answered an error: {text}");
        }
        self.relay_errors += 1;
    }
}

impl App for Soak {
    fn on_open(&mut self, id: usize, wr: &mut Writer, _: u64) {
        let Some(s) = id.checked_sub(PUBLISHERS) else {
            return;
        };
        for _ in 0..SUBSCRIPTIONS.min(self.topics) {
            let topic = self.free_topic(s);
            self.subscribe(s, wr, topic);
        }
    }

    fn on_message(&mut self, id: usize, wr: &mut Writer, now: u64, _: bool, head: &[u8], _: u64) {
        match id.checked_sub(PUBLISHERS) {
            None => self.on_publisher_message(id, head),
            Some(s) => self.on_subscriber_message(s, wr, now, head),
        }
    }
}

/// `connections_open` from the relay's `/healthz` (plain HTTP on the WebSocket port), or
/// `None` if it does not answer within 200 ms.
fn healthz_connections(addr: SocketAddr, host: &str) -> Option<u64> {
    let timeout = Duration::from_millis(200);
    let mut s = TcpStream::connect_timeout(&addr, timeout).ok()?;
    s.set_read_timeout(Some(timeout)).ok()?;
    s.set_write_timeout(Some(timeout)).ok()?;
    let req = format!("GET /healthz HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).ok()?;
    let mut body = Vec::with_capacity(1024);
    let _ = s.take(64 << 10).read_to_end(&mut body);
    let at = body.windows(4).position(|w| w == b"\r\n\r\n")?;
    scan::uint(&body[at..], b"\"connections_open\"")
}

/// Counts at one instant, for a row's differences.
#[derive(Clone, Copy, Default)]
struct Totals {
    counts: Counts,
    published: u64,
    connects: u64,
    closes: u64,
    errors: u64,
}

fn totals(app: &Soak, fleet: &Fleet) -> Totals {
    Totals {
        counts: app.counts,
        published: app.published,
        connects: fleet.core.stats.opened,
        closes: fleet.core.stats.clean_closes,
        errors: fleet.core.errors.total() + app.errors(),
    }
}

/// Subscriber connections in the pool: room for those closing while their replacements open.
fn pool_size(connections: usize, churn_pct: f64) -> usize {
    let churn_per_s = connections as f64 * churn_pct / 100.0;
    connections + 2 * churn_per_s.ceil() as usize + 16
}

/// File descriptors' worth of connections the mode may hold at once.
pub fn connections_needed(connections: usize, churn_pct: f64) -> usize {
    PUBLISHERS + pool_size(connections, churn_pct)
}

/// Runs the mode; returns the JSON line and the failure count (violations, errors, and 1 for
/// RSS growth past the limit).
///
/// # Errors
/// Without `--server-pid` (`main` refuses that as bad usage first), when a file cannot be
/// written, when no publisher opens, or when
/// `epoll` fails.
pub fn run(run: &Run, cfg: &Config) -> Result<(String, u64), String> {
    let io = |e: std::io::Error| format!("poll: {e}");
    if run.server.is_none() {
        return Err("soak needs --server-pid (the relay's RSS and CPU are the point)".into());
    }
    let pool = pool_size(cfg.connections, cfg.churn_pct);
    let mut fleet = Fleet::new(run.plan(16 << 10), PUBLISHERS + pool, run.clock).map_err(io)?;
    let mut app = Soak::new(cfg, pool);
    for path in [&cfg.csv, &cfg.svg] {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
    }
    let mut csv = File::create(&cfg.csv).map_err(|e| format!("{}: {e}", cfg.csv.display()))?;
    csv.write_all(format!("{}\n", record::CSV_HEADER).as_bytes())
        .map_err(|e| format!("{}: {e}", cfg.csv.display()))?;

    fleet.open_all(PUBLISHERS, &mut app).map_err(io)?;
    if (0..PUBLISHERS).any(|p| !fleet.core.conns[p].is_open()) {
        return Err("a publisher connection could not be opened".into());
    }
    eprintln!(
        "load: soak for {:.1} min: {} subscribers ({}% churn/s, {} topics each of {}), \
         {PUBLISHERS} publishers at {}/s",
        cfg.duration.as_secs_f64() / 60.0,
        cfg.connections,
        cfg.churn_pct,
        SUBSCRIPTIONS.min(cfg.topics),
        cfg.topics,
        cfg.rate
    );

    let start = run.clock.now();
    let end = start + cfg.duration.as_nanos() as u64;
    let step = STEP.as_nanos() as u64;
    let period = SECOND as f64 / cfg.rate;
    let mut next_step = start;
    let mut next_row = start + SECOND;
    let mut last = totals(&app, &fleet);
    let mut cpu_mark = run.mark();
    let mut rows: Vec<Row> = Vec::new();
    let (mut churn_carry, mut resub_carry) = (0.0, 0.0);
    let mut dirty = [false; PUBLISHERS];
    let healthz = !run.target.tls;

    loop {
        let now = run.clock.now();
        if now >= end {
            break;
        }
        // Publishes due by now, spread over the topics at random.
        let due = (((now - start) as f64 / period) as u64 + 1)
            .min((cfg.duration.as_secs_f64() * cfg.rate) as u64);
        while app.published + app.skipped < due {
            let topic = (app.rng.next() % cfg.topics as u64) as u32;
            let p = topic as usize % PUBLISHERS;
            if fleet.core.conns[p].is_open() {
                app.publish(topic, &mut fleet.core.conns[p].wr);
                dirty[p] = true;
            } else {
                app.skipped += 1; // its publisher failed, an error counted already
            }
        }
        for (p, d) in dirty.iter_mut().enumerate() {
            if std::mem::take(d) {
                fleet.flush(p);
            }
        }
        if now >= next_step {
            next_step += step;
            step_churn(
                &mut fleet,
                &mut app,
                cfg,
                now,
                run,
                &mut churn_carry,
                &mut resub_carry,
            );
        }
        if now >= next_row {
            next_row += SECOND;
            let mark = run.mark();
            let usage = run.usage(&cpu_mark, &mark);
            cpu_mark = mark;
            let t = totals(&app, &fleet);
            let row = row_of(&t, &last, &usage, run, &fleet, healthz, now - start);
            last = t;
            csv.write_all(row.csv().as_bytes())
                .map_err(|e| format!("{}: {e}", cfg.csv.display()))?;
            if rows.len() % 10 == 9 {
                eprintln!(
                    "load: {:.0} s: RSS {} KiB, {} open, {} published, {} delivered, {} violations, {} errors",
                    row.elapsed_s,
                    row.rss_kib.unwrap_or(0),
                    row.client_connections,
                    app.published,
                    app.counts.delivered,
                    app.counts.violations(),
                    t.errors
                );
            }
            rows.push(row);
        }
        let next_publish = start + ((app.published + app.skipped) as f64 * period) as u64;
        let wake = next_publish.min(next_step).min(next_row).min(end);
        let wait = Duration::from_nanos(wake.saturating_sub(run.clock.now()));
        fleet
            .turn(wait.min(Duration::from_millis(100)), &mut app)
            .map_err(io)?;
    }

    // The end: wait for the publishers' acks and the handshakes under way, then close
    // everything cleanly; each open subscription must then have every acknowledged publish.
    let stop = run.clock.now();
    let grace = stop + 5 * SECOND;
    fleet
        .run_until(grace, &mut app, |core, a| {
            core.opening_done() && a.pubs.iter().all(|p| p.unacked.is_empty())
        })
        .map_err(io)?;
    let unacked: usize = app.pubs.iter().map(|p| p.unacked.len()).sum();
    if unacked > 0 {
        eprintln!("load: {unacked} publishes still unacknowledged after 5 s");
    }
    let now = run.clock.now();
    for s in 0..pool {
        if app.subs[s].phase == Phase::Up {
            app.begin_close(s, now);
        }
    }
    run.close(&mut fleet).map_err(io)?;
    for s in 0..pool {
        if let Phase::Closing(_) = app.subs[s].phase {
            let clean = fleet.core.conns[PUBLISHERS + s].close_received;
            app.end(s, clean);
        }
    }
    let t = totals(&app, &fleet);
    let mark = run.mark();
    let tail = row_of(
        &t,
        &last,
        &run.usage(&cpu_mark, &mark),
        run,
        &fleet,
        false,
        run.clock.now() - start,
    );
    csv.write_all(tail.csv().as_bytes())
        .map_err(|e| format!("{}: {e}", cfg.csv.display()))?;

    // The plot and the verdict, from the rows of the run proper (not the close). RSS is
    // judged from the warm-up's end, with its steps at later rises of the peak concurrency
    // (new high-water marks of the relay's tables) taken out.
    let run_s = cfg.duration.as_secs_f64();
    let warmup = record::warmup_s(run_s);
    let peaks: Vec<(f64, u64)> = app
        .peaks
        .iter()
        .map(|&(at, n)| (at.saturating_sub(start) as f64 / 1e9, n))
        .collect();
    let rises = record::peak_rises(warmup, &peaks);
    let (peak_s, peak) = peaks.last().copied().unwrap_or((0.0, 0));
    let title = format!(
        "emberws relay soak: {} connections, {}%/s churn, {} publishes/s, {} min",
        cfg.connections,
        cfg.churn_pct,
        cfg.rate,
        run_s / 60.0
    );
    std::fs::write(&cfg.svg, record::svg(&rows, warmup, &title))
        .map_err(|e| format!("{}: {e}", cfg.svg.display()))?;
    let verdict = record::rss_verdict(&rows, warmup, &rises);
    let (warm, end_rss, ratio) = (verdict.warm, verdict.end, verdict.ratio);
    let rss_grew = ratio.is_none_or(|r| r > 1.0 + RSS_GROWTH_LIMIT);
    let n = &t.counts;
    let errors = t.errors;
    let failures = n.violations() + errors + u64::from(rss_grew);

    let mib = |m: Option<(f64, u64)>| {
        m.map_or("?".into(), |(t, k)| {
            format!("{:.2} MiB ({k} KiB, at {t:.0} s)", k as f64 / 1024.0)
        })
    };
    eprintln!("load: soak summary ({:.1} s, warm-up {warmup:.0} s)", run_s);
    eprintln!("load:   RSS after warm-up  {}", mib(warm));
    eprintln!("load:   RSS at the end     {}", mib(end_rss));
    eprintln!(
        "load:   (end - steps) / warm-up  {} (limit {:.2}){}",
        ratio.map_or("?".into(), |r| format!("{r:.3}")),
        1.0 + RSS_GROWTH_LIMIT,
        if rss_grew { "  FAIL" } else { "" }
    );
    let steps: Vec<String> = verdict
        .steps
        .iter()
        .zip(&rises)
        .map(|(&(t, kib), &(_, n))| format!("+{kib} KiB at {t:.0} s (to {n})"))
        .collect();
    eprintln!(
        "load:   peak connections   {peak} (sockets open, this side) at {peak_s:.0} s; rises \
         > {:.0}% after the warm-up, and RSS's step at each: {}",
        record::PEAK_RISE * 100.0,
        if steps.is_empty() {
            "none".to_owned()
        } else {
            steps.join(", ")
        }
    );
    eprintln!(
        "load:   published {}, delivered {} ({} retained replays; relay acks reported {}), \
         lost {}, duplicated {}, out of order {}",
        t.published,
        n.delivered,
        n.replayed,
        app.acked_deliveries,
        n.lost,
        n.duplicated,
        n.out_of_order
    );
    eprintln!(
        "load:   connects {}, clean closes {}, resubscribes {}, errors {} (stray {}, \
         unexpected {}, relay {})",
        t.connects, t.closes, app.resubscribed, errors, app.stray, app.unexpected, app.relay_errors
    );
    eprintln!(
        "load:   wrote {} ({} rows) and {}",
        cfg.csv.display(),
        rows.len() + 1,
        cfg.svg.display()
    );

    let kib = |m: Option<(f64, u64)>| m.map(|(_, k)| k as f64);
    let o = run
        .header("soak")
        .f("minutes", Some(run_s / 60.0), 2)
        .u("connections", cfg.connections as u64)
        .f("churn_pct", Some(cfg.churn_pct), 1)
        .u("topics", cfg.topics as u64)
        .f("rate", Some(cfg.rate), 0)
        .f("warmup_s", Some(warmup), 1)
        .u("peak_connections", peak)
        .f("peak_s", Some(peak_s), 1)
        .u("peak_rises", rises.len() as u64)
        .u(
            "rss_step_kib",
            verdict.steps.iter().map(|&(_, k)| k).sum::<u64>(),
        )
        .f("rss_warm_kib", kib(warm), 0)
        .f("rss_end_kib", kib(end_rss), 0)
        .f("rss_ratio", ratio, 3)
        .b("rss_ok", !rss_grew)
        .u("published", t.published)
        .u("delivered", n.delivered)
        .u("replayed", n.replayed)
        .u("acked_deliveries", app.acked_deliveries)
        .u("lost", n.lost)
        .u("duplicated", n.duplicated)
        .u("out_of_order", n.out_of_order)
        .u("connects", t.connects)
        .u("resubscribes", app.resubscribed)
        .s("csv", &cfg.csv.display().to_string())
        .s("svg", &cfg.svg.display().to_string());
    let extra = [
        ("stray_message", app.stray),
        ("unexpected_message", app.unexpected),
        ("relay_error", app.relay_errors),
    ];
    let (line, _) = run.finish(o, end_rss.map(|(_, k)| k), &fleet, &extra);
    Ok((line, failures))
}

/// One tenth of a second's churn: closes (and their completion or timeout), replacements,
/// resubscriptions, and the ageing of gaps.
fn step_churn(
    fleet: &mut Fleet,
    app: &mut Soak,
    cfg: &Config,
    now: u64,
    run: &Run,
    churn_carry: &mut f64,
    resub_carry: &mut f64,
) {
    let pool = app.subs.len();
    let live = fleet.core.live() as u64;
    if app.peaks.last().is_none_or(|&(_, peak)| live > peak) {
        app.peaks.push((now, live));
    }
    let close_timeout = run.close_timeout.as_nanos() as u64;
    // Connections that ended: closes completed or timed out, failures.
    for s in 0..pool {
        let id = PUBLISHERS + s;
        let c = &fleet.core.conns[id];
        match app.subs[s].phase {
            Phase::Closing(_) if c.stream.is_none() => {
                let clean = c.close_received;
                app.end(s, clean);
            }
            Phase::Closing(since) if now.saturating_sub(since) >= close_timeout => {
                fleet.abort(id);
                fleet.core.errors.close_timeout += 1;
                app.end(s, false);
            }
            Phase::Up if c.state == crate::conn::State::Closed => app.end(s, false),
            _ => {}
        }
    }
    let open: Vec<usize> = (0..pool)
        .filter(|&s| app.subs[s].phase == Phase::Up && fleet.core.conns[PUBLISHERS + s].is_open())
        .collect();
    let tenth = STEP.as_secs_f64();
    *churn_carry += open.len().min(cfg.connections) as f64 * cfg.churn_pct / 100.0 * tenth;
    *resub_carry += open.len() as f64 * RESUBSCRIBE_PCT / 100.0 * tenth;
    for s in pick(&open, &mut app.rng, churn_carry) {
        app.begin_close(s, now);
        fleet.close(PUBLISHERS + s);
    }
    for s in pick(&open, &mut app.rng, resub_carry) {
        if app.subs[s].phase == Phase::Up {
            app.resubscribe(s, &mut fleet.core.conns[PUBLISHERS + s].wr);
            fleet.flush(PUBLISHERS + s);
        }
    }
    // Replacements: keep the subscribers opening or open at the target.
    let up = app.subs.iter().filter(|s| s.phase == Phase::Up).count();
    let mut want = cfg.connections.saturating_sub(up);
    for s in 0..pool {
        if want == 0 {
            break;
        }
        if app.subs[s].phase == Phase::Down {
            app.subs[s].phase = Phase::Up;
            fleet.reopen(PUBLISHERS + s);
            want -= 1;
        }
    }
    for sub in &mut app.subs {
        for slot in &mut sub.slots {
            if let Slot::Active { track, .. } | Slot::Leaving { track, .. } = slot {
                track.age(now, &mut app.counts);
            }
        }
        for (_, track, _) in &mut sub.ends {
            track.age(now, &mut app.counts);
        }
    }
}

/// `carry`'s whole part of distinct members of `open`, at random; the fraction carries on.
fn pick(open: &[usize], rng: &mut Rng, carry: &mut f64) -> Vec<usize> {
    let k = (carry.floor() as usize).min(open.len());
    // What could not be picked (too few open) is dropped, not saved up for a burst.
    *carry = (*carry - k as f64).min(1.0);
    let mut chosen = Vec::with_capacity(k);
    while chosen.len() < k {
        let s = open[(rng.next() % open.len() as u64) as usize];
        if !chosen.contains(&s) {
            chosen.push(s);
        }
    }
    chosen
}

/// The row for the second ending `elapsed` ns into the run.
fn row_of(
    t: &Totals,
    last: &Totals,
    usage: &crate::Usage,
    run: &Run,
    fleet: &Fleet,
    healthz: bool,
    elapsed: u64,
) -> Row {
    let d = t.counts.since(&last.counts);
    Row {
        elapsed_s: elapsed as f64 / 1e9,
        rss_kib: run.server_rss_kib(),
        server_connections: if healthz {
            healthz_connections(run.target.addr, &run.target.host)
        } else {
            None
        },
        client_connections: fleet.core.open_count() as u64,
        cpu_pct: usage
            .server_us
            .filter(|_| usage.secs > 0.0)
            .map(|us| us / 1e4 / usage.secs),
        published: t.published - last.published,
        delivered: d.delivered,
        lost: d.lost,
        duplicated: d.duplicated,
        out_of_order: d.out_of_order,
        connects: t.connects - last.connects,
        closes: t.closes - last.closes,
        errors: t.errors - last.errors,
    }
}

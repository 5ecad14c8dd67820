//! ⑨ the topic table under one crowded topic: N connections subscribe to it in one turn of
//! the loop, then unsubscribe in the next, and N connections on it close in one turn.
//!
//! Driven through [`emberws::testing::Harness`]: the real server and its real turn, over
//! in-memory pipes, so that N can be 50,000 without 50,000 descriptors. The connections are
//! made once per N, before the timing; only the turns are timed (`iter_custom`).
//!
//! Groups (stable names for `critcmp`):
//! - `topics/subscribe_unsubscribe/N`: N `sub` messages, one turn (every connection calls
//!   `Ctx::subscribe("t")`), then N `unsub` messages, one turn. `Throughput::Elements(N)`.
//! - `topics/close/N`: N subscribers of `"t"` end their TCP connection in one turn.
//! - `topics/publish_among_wildcards/W`: W connections, each subscribed to a wildcard
//!   pattern of its own (`dev/I/#`), and 100 publishes to `dev/7/temp` in one turn, each
//!   reaching one of them. `Throughput::Elements(100)`.

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use emberws::testing::{Harness, Peer};
use emberws::{Config, Ctx, Decision, Handler, HttpRequest, Message};

const TOPIC: &str = "t";
const CROWDS: [usize; 3] = [1_000, 10_000, 50_000];

/// `sub` subscribes to [`TOPIC`], `unsub` unsubscribes, `sub:P` subscribes to `P`, `pub:T`
/// publishes to `T`; with `on_open`, every connection is subscribed to [`TOPIC`] as it opens.
struct Subscriber {
    on_open: bool,
}

impl Handler for Subscriber {
    type State = ();

    fn on_upgrade(&mut self, _req: &HttpRequest<'_>) -> Decision<()> {
        Decision::Accept(())
    }

    fn on_open(&mut self, ctx: &mut Ctx<'_>, _state: &mut ()) {
        if self.on_open {
            ctx.subscribe(TOPIC);
        }
    }

    fn on_message(&mut self, ctx: &mut Ctx<'_>, _state: &mut (), msg: Message<'_>) {
        match msg {
            Message::Text("sub") => {
                ctx.subscribe(TOPIC);
            }
            Message::Text("unsub") => {
                ctx.unsubscribe(TOPIC);
            }
            Message::Text(text) => {
                if let Some(pattern) = text.strip_prefix("sub:") {
                    ctx.subscribe(pattern);
                } else if let Some(topic) = text.strip_prefix("pub:") {
                    ctx.publish(topic, Message::Text("21.5"));
                }
            }
            _ => {}
        }
    }
}

fn harness(n: usize, on_open: bool) -> (Harness<Subscriber>, Vec<Peer>) {
    let cfg = Config::default().max_connections(n);
    let mut h = Harness::new(cfg, Subscriber { on_open });
    #[allow(clippy::expect_used)]
    let peers = (0..n)
        .map(|_| h.connect("/").expect("the harness upgrades"))
        .collect();
    (h, peers)
}

/// Every peer sends `text` `times` times; then one turn runs, and is timed.
fn all_send(h: &mut Harness<Subscriber>, peers: &[Peer], text: &str, times: usize) -> Duration {
    let frame = emberws::testing::client_frame(0x1, text.as_bytes());
    for peer in peers {
        for _ in 0..times {
            h.queue_bytes(peer, &frame);
        }
    }
    let start = Instant::now();
    h.turn();
    start.elapsed()
}

fn subscribe_unsubscribe(c: &mut Criterion) {
    let mut group = c.benchmark_group("topics/subscribe_unsubscribe");
    group.sample_size(10);
    for n in CROWDS {
        let (mut h, peers) = harness(n, false);
        group.throughput(Throughput::Elements(n as u64));
        group.bench_function(BenchmarkId::from_parameter(n), |b| {
            b.iter_custom(|iters| {
                let mut spent = Duration::ZERO;
                for _ in 0..iters {
                    spent += all_send(&mut h, &peers, "sub", 1);
                    spent += all_send(&mut h, &peers, "unsub", 1);
                }
                spent
            });
        });
    }
    group.finish();
}

fn close(c: &mut Criterion) {
    let mut group = c.benchmark_group("topics/close");
    group.sample_size(10);
    for n in CROWDS {
        group.throughput(Throughput::Elements(n as u64));
        group.bench_function(BenchmarkId::from_parameter(n), |b| {
            b.iter_custom(|iters| {
                let mut spent = Duration::ZERO;
                for _ in 0..iters {
                    let (mut h, peers) = harness(n, true);
                    for peer in &peers {
                        h.end_inbound(peer);
                    }
                    let start = Instant::now();
                    h.turn();
                    spent += start.elapsed();
                }
                spent
            });
        });
    }
    group.finish();
}

fn publish_among_wildcards(c: &mut Criterion) {
    const PUBLISHES: usize = 100;
    let mut group = c.benchmark_group("topics/publish_among_wildcards");
    group.sample_size(10);
    group.throughput(Throughput::Elements(PUBLISHES as u64));
    for w in CROWDS {
        let (mut h, mut peers) = harness(w + 1, false);
        #[allow(clippy::expect_used)]
        let publisher = peers.pop().expect("w + 1 peers");
        for (i, peer) in peers.iter().enumerate() {
            let sub = format!("sub:dev/{i}/#");
            h.queue_bytes(peer, &emberws::testing::client_frame(0x1, sub.as_bytes()));
        }
        h.turn();
        let mut reader = peers.swap_remove(7);
        group.bench_function(BenchmarkId::from_parameter(w), |b| {
            b.iter_custom(|iters| {
                let mut spent = Duration::ZERO;
                for _ in 0..iters {
                    let publisher = std::slice::from_ref(&publisher);
                    spent += all_send(&mut h, publisher, "pub:dev/7/temp", PUBLISHES);
                    let got = h.received(&mut reader).len();
                    assert_eq!(got, PUBLISHES, "dev/7/# gets every publish");
                }
                spent
            });
        });
    }
    group.finish();
}

criterion_group!(
    benches,
    subscribe_unsubscribe,
    close,
    publish_among_wildcards
);
criterion_main!(benches);

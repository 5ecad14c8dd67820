//! ⑩ fan-out to Server-Sent Events streams beside the same fan-out to WebSocket
//! subscribers: what one delivery costs the loop on each kind of connection.
//!
//! Driven through [`emberws::testing::Harness`]: the real server and its real turn, over
//! in-memory pipes, so the figures are the server's user-space work (framing, queueing,
//! writing into the transport) without the kernel's. N subscribers of `"t"` — all
//! WebSocket connections, or all event streams — and one WebSocket publisher whose 10
//! `pub` messages, each publishing 64 B of text to `"t"`, are read and delivered in one
//! timed turn. The subscribers' bytes are read out after each turn, untimed.
//!
//! Groups (stable names for `critcmp`): `streams/websocket/N` and `streams/event_stream/N`,
//! N in {100, 10000}; `Throughput::Elements(10 × N)` counts deliveries.

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use emberws::testing::{Harness, Peer};
use emberws::{Config, Ctx, Decision, Handler, HttpRequest, Message};

const TOPIC: &str = "t";
const PAYLOAD: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
const PUBLISHES: usize = 10;
const SUBSCRIBERS: [usize; 2] = [100, 10_000];

/// Subscribes every connection but the publisher (path `/pub`) to [`TOPIC`]; `pub`
/// publishes [`PAYLOAD`] to it. The state: whether the connection subscribes.
struct Fanout;

impl Handler for Fanout {
    type State = bool;

    fn on_upgrade(&mut self, req: &HttpRequest<'_>) -> Decision<bool> {
        Decision::Accept(req.path() != "/pub")
    }

    fn on_event_stream(&mut self, _req: &HttpRequest<'_>) -> Option<Decision<bool>> {
        Some(Decision::Accept(true))
    }

    fn on_open(&mut self, ctx: &mut Ctx<'_>, subscriber: &mut bool) {
        if *subscriber {
            ctx.subscribe(TOPIC);
        }
    }

    fn on_message(&mut self, ctx: &mut Ctx<'_>, _: &mut bool, msg: Message<'_>) {
        if msg == Message::Text("pub") {
            ctx.publish(TOPIC, Message::Text(PAYLOAD));
        }
    }
}

/// A harness with `n` subscribers (event streams if `streams`) and the publisher.
fn harness(n: usize, streams: bool) -> (Harness<Fanout>, Vec<Peer>, Peer) {
    let cfg = Config::default().max_connections(n + 1);
    let mut h = Harness::new(cfg, Fanout);
    #[allow(clippy::expect_used)]
    let subscribers = (0..n)
        .map(|_| {
            if streams {
                h.events("/events", &[])
                    .expect("the harness opens a stream")
            } else {
                h.connect("/").expect("the harness upgrades")
            }
        })
        .collect();
    #[allow(clippy::expect_used)]
    let publisher = h.connect("/pub").expect("the harness upgrades");
    (h, subscribers, publisher)
}

/// One timed turn delivering [`PUBLISHES`] messages to every subscriber; then every
/// subscriber reads them, untimed (and they are checked once, on the first call).
fn round(
    h: &mut Harness<Fanout>,
    subscribers: &mut [Peer],
    publisher: &Peer,
    streams: bool,
    check: bool,
) -> Duration {
    let frame = emberws::testing::client_frame(0x1, b"pub");
    for _ in 0..PUBLISHES {
        h.queue_bytes(publisher, &frame);
    }
    let start = Instant::now();
    h.turn();
    let spent = start.elapsed();
    for peer in subscribers.iter_mut() {
        let got = if streams {
            h.received_events(peer).len()
        } else {
            h.received(peer).len()
        };
        if check {
            assert_eq!(got, PUBLISHES, "every subscriber gets every message");
        }
    }
    spent
}

fn fanout(c: &mut Criterion) {
    for (name, streams) in [("websocket", false), ("event_stream", true)] {
        let mut group = c.benchmark_group(format!("streams/{name}"));
        group.sample_size(20);
        for n in SUBSCRIBERS {
            let (mut h, mut subscribers, publisher) = harness(n, streams);
            // The first round checks the deliveries and grows every queue once.
            round(&mut h, &mut subscribers, &publisher, streams, true);
            group.throughput(Throughput::Elements((PUBLISHES * n) as u64));
            group.bench_function(BenchmarkId::from_parameter(n), |b| {
                b.iter_custom(|iters| {
                    (0..iters)
                        .map(|_| round(&mut h, &mut subscribers, &publisher, streams, false))
                        .sum()
                });
            });
        }
        group.finish();
    }
}

criterion_group!(benches, fanout);
criterion_main!(benches);

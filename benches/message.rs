//! ③–⑥ through a [`Conn`]: the server's receive hot path, without sockets.
//!
//! The connection is driven as `server::process` drives it: `read_event` over the bytes of one
//! read until it yields nothing, the upgrade answered with `Conn::accept`, pooled buffers
//! recycled after each message. The handshake and the pool's first buffer happen before the
//! timing, so what is timed is the steady state of an open connection, from the copy of the
//! wire bytes into the read buffer (the `read` syscall's copy) to the last message event.
//!
//! Groups (stable names for `critcmp`):
//! - `message/assemble`: a 64 KiB text message (mixed 1- to 4-byte characters) in 16 masked
//!   fragments of 4 KiB, all in one read buffer.
//! - `message/stream_64B`: 936 masked 64-byte text messages filling one 64 KiB read buffer;
//!   `Throughput::Elements` counts messages.
//!
//! Beside each: tungstenite's `WebSocket::read` (server role) over an in-memory stream that
//! replays the same bytes, made once so that it too is in its steady state. It copies from its
//! `Read` into its own buffer (zero-filling the buffer's free part first) and allocates each
//! message.

mod util;

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use emberws::conn::{AcceptAll, Answered, Conn, Event, Millis};
use emberws::pool::Pool;
use emberws::proto::message::DataKind;
use emberws::Config;
use tungstenite::protocol::{Role, WebSocket};

use util::{push_client_frame, Replay, CONTINUATION, REQUEST, TEXT};

const MESSAGE_LEN: usize = 64 * 1024;
const FRAGMENTS: usize = 16;
const SMALL_LEN: usize = 64;
/// A masked 64-byte frame: 2 header bytes, 4 key bytes, the payload.
const SMALL_FRAME_LEN: usize = 2 + 4 + SMALL_LEN;
const READ_BUFFER: usize = 64 * 1024;
const SMALL_COUNT: usize = READ_BUFFER / SMALL_FRAME_LEN;

/// An open server connection with the loop's pool and output buffer.
struct Open {
    cfg: Config,
    conn: Conn,
    pool: Pool,
    out: Vec<u8>,
}

impl Open {
    /// A connection fed the browser request and accepted, as `server::on_head` does.
    fn new() -> Self {
        let cfg = Config::default();
        let now = Millis(0);
        // The loop's pool: spares up to the message size are kept.
        let mut pool = Pool::new(32, cfg.max_message_size);
        let mut conn = Conn::new(now, &cfg, None);
        let mut out = Vec::new();
        let mut head = REQUEST.to_vec();
        let mut input: &mut [u8] = &mut head;
        match conn.read_event(&mut input, &mut out, &mut pool, &cfg, now) {
            Some(Event::Head(data)) => {
                let peer = "127.0.0.1:1".parse().expect("an address");
                let local = "127.0.0.1:9001".parse().expect("an address");
                let answered = conn.answer_head(
                    data,
                    peer,
                    local,
                    &mut AcceptAll,
                    &mut out,
                    &mut pool,
                    &cfg,
                    now,
                );
                assert!(matches!(answered, Answered::Open(..)));
            }
            other => panic!("expected the request head, got {other:?}"),
        }
        assert!(conn.is_open());
        // The loop writes `out` after each event; nothing more goes out in this bench.
        out.clear();
        Open {
            cfg,
            conn,
            pool,
            out,
        }
    }

    /// Reads every event from one read's bytes; returns (messages, payload bytes).
    fn read_all(&mut self, bytes: &mut [u8]) -> (usize, usize) {
        let (mut messages, mut total) = (0, 0);
        let mut input: &mut [u8] = bytes;
        while let Some(event) = self.conn.read_event(
            &mut input,
            &mut self.out,
            &mut self.pool,
            &self.cfg,
            Millis(1),
        ) {
            match event {
                // A whole one-frame text message, validated in the read buffer.
                Event::Text(text) => {
                    messages += 1;
                    total += black_box(text).len();
                }
                Event::Message(DataKind::Text, data) => {
                    messages += 1;
                    total += black_box(data.as_slice()).len();
                    data.recycle(&mut self.pool);
                }
                // The loop would write `out` here; nothing is written to it in this bench.
                Event::Flush => self.out.clear(),
                other => panic!("expected text messages only, got {other:?}"),
            }
        }
        (messages, total)
    }
}

fn tungstenite_socket(bytes: &[u8]) -> WebSocket<Replay> {
    WebSocket::from_raw_socket(Replay::new(bytes), Role::Server, None)
}

/// Reads `count` text messages; returns their total length.
fn tungstenite_read(ws: &mut WebSocket<Replay>, count: usize) -> usize {
    (0..count)
        .map(|_| match ws.read() {
            Ok(tungstenite::Message::Text(text)) => black_box(text).len(),
            other => panic!("expected a text message, got {other:?}"),
        })
        .sum()
}

fn assemble(c: &mut Criterion) {
    let text = util::mixed(MESSAGE_LEN);
    let piece = MESSAGE_LEN / FRAGMENTS;
    let mut wire = Vec::with_capacity(MESSAGE_LEN + FRAGMENTS * 8);
    for (i, chunk) in text.chunks(piece).enumerate() {
        let opcode = if i == 0 { TEXT } else { CONTINUATION };
        push_client_frame(&mut wire, i == FRAGMENTS - 1, opcode, chunk);
    }

    let mut open = Open::new();
    // Checked once, outside the timing; it also leaves a 64 KiB spare in the pool.
    assert_eq!(open.read_all(&mut wire.clone()), (1, MESSAGE_LEN));
    assert_eq!(
        tungstenite_read(&mut tungstenite_socket(&wire), 1),
        MESSAGE_LEN
    );

    let mut rbuf = vec![0u8; wire.len()];
    let mut ws = tungstenite_socket(&wire);
    let mut g = c.benchmark_group("message/assemble");
    g.throughput(Throughput::Bytes(MESSAGE_LEN as u64));
    g.bench_function("emberws/64KiB_in_16x4KiB", |b| {
        b.iter(|| {
            rbuf.copy_from_slice(black_box(&wire));
            open.read_all(&mut rbuf)
        })
    });
    g.bench_function("tungstenite/64KiB_in_16x4KiB", |b| {
        b.iter(|| tungstenite_read(&mut ws, 1))
    });
    g.finish();
}

fn stream(c: &mut Criterion) {
    let payload = util::ascii(SMALL_LEN);
    let mut wire = Vec::with_capacity(READ_BUFFER);
    for _ in 0..SMALL_COUNT {
        push_client_frame(&mut wire, true, TEXT, &payload);
    }
    assert_eq!(wire.len(), SMALL_COUNT * SMALL_FRAME_LEN);

    let mut open = Open::new();
    assert_eq!(
        open.read_all(&mut wire.clone()),
        (SMALL_COUNT, SMALL_COUNT * SMALL_LEN)
    );
    assert_eq!(
        tungstenite_read(&mut tungstenite_socket(&wire), SMALL_COUNT),
        SMALL_COUNT * SMALL_LEN
    );

    let mut rbuf = vec![0u8; wire.len()];
    let mut ws = tungstenite_socket(&wire);
    let mut g = c.benchmark_group("message/stream_64B");
    g.throughput(Throughput::Elements(SMALL_COUNT as u64));
    g.bench_function("emberws", |b| {
        b.iter(|| {
            rbuf.copy_from_slice(black_box(&wire));
            open.read_all(&mut rbuf)
        })
    });
    g.bench_function("tungstenite", |b| {
        b.iter(|| tungstenite_read(&mut ws, SMALL_COUNT))
    });
    g.finish();
}

criterion_group!(benches, assemble, stream);
criterion_main!(benches);

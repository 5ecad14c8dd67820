//! ③ and ④: frame headers and unmasking, alone and together.
//!
//! Groups (stable names for `critcmp`):
//! - `frame/parse_header`: masked client headers with a 7-, 16- and 64-bit length (6, 8 and
//!   14 bytes), beside tungstenite's `FrameHeader::parse` over a `Cursor`.
//! - `frame/encode`: unmasked server headers of the same three forms, beside tungstenite's
//!   `FrameHeader::format` into a slice.
//! - `frame/unmask`: in place, 16 B to 64 KiB, beside the byte-at-a-time loop of §5.3.
//!   tungstenite's `apply_mask` is in a private module (`protocol::frame::mask`) in 0.27, so
//!   it cannot sit here.
//! - `frame/read_frame`: one masked binary frame, header + unmasked payload, timed from the
//!   copy of its bytes into the reader's buffer (the `read` syscall's copy, which tungstenite
//!   makes from its `Read`), so both sides do the same work; `emberws_in_place` leaves that
//!   copy out (`iter_batched_ref`), as the loop's read buffer is filled by the kernel.
//!   tungstenite has no public socket-free unmasking frame parser in 0.27 (`FrameCodec` is
//!   `pub(super)`), so two neighbours stand in, each made once and read in a loop (steady
//!   state): `FrameSocket::read` (parses and copies, but leaves the payload masked) and
//!   `WebSocket::read` (unmasks, and wraps the frame as a message). Note that tungstenite
//!   zero-fills the free part of its read buffer (128 KiB) before each read from its stream.

mod util;

use std::hint::black_box;
use std::io::Cursor;

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use emberws::proto::frame::{FrameHeader, OpCode};
use emberws::proto::mask::unmask;
use emberws::proto::{Role, Status};
use tungstenite::protocol::frame::{FrameHeader as TFrameHeader, FrameSocket};
use tungstenite::protocol::{Role as TRole, WebSocket};

use util::{client_frame, Replay, BINARY, KEY};

/// Payload sizes of `frame/unmask` and `frame/read_frame`.
const SIZES: [usize; 5] = [16, 125, 1024, 16 * 1024, 64 * 1024];

/// The three length forms: (name, payload length).
const FORMS: [(&str, u64); 3] = [("len7", 100), ("len16", 4096), ("len64", 100_000)];

/// §5.3 taken literally: octet i XOR key[i mod 4].
fn naive_unmask(payload: &mut [u8], key: [u8; 4]) {
    for (i, b) in payload.iter_mut().enumerate() {
        *b ^= key[i % 4];
    }
}

fn label(len: usize) -> String {
    if len >= 1024 {
        format!("{}KiB", len / 1024)
    } else {
        format!("{len}B")
    }
}

fn parse_header(c: &mut Criterion) {
    let mut g = c.benchmark_group("frame/parse_header");
    g.throughput(Throughput::Elements(1));
    for (name, len) in FORMS {
        let mut frame = client_frame(BINARY, &vec![0; len as usize]);
        let header_len = frame.len() - len as usize;
        frame.truncate(header_len);
        // Checked once, outside the timing: both read the same header.
        assert!(matches!(
            FrameHeader::parse(&frame, Role::Server),
            Ok(Status::Complete((h, n))) if h.payload_len == len && n == header_len
        ));
        assert!(matches!(
            TFrameHeader::parse(&mut Cursor::new(&frame)),
            Ok(Some((_, n))) if n == len
        ));
        g.bench_with_input(BenchmarkId::new("emberws", name), &frame, |b, frame| {
            b.iter(|| FrameHeader::parse(black_box(frame), Role::Server))
        });
        g.bench_with_input(BenchmarkId::new("tungstenite", name), &frame, |b, frame| {
            b.iter(|| {
                TFrameHeader::parse(&mut Cursor::new(black_box(frame)))
                    .ok()
                    .flatten()
                    .map(|(_, n)| n)
            })
        });
    }
    g.finish();
}

fn encode(c: &mut Criterion) {
    let mut g = c.benchmark_group("frame/encode");
    g.throughput(Throughput::Elements(1));
    for (name, len) in FORMS {
        let ours = FrameHeader::new(true, OpCode::Binary, len);
        let theirs = TFrameHeader {
            opcode: tungstenite::protocol::frame::coding::OpCode::Data(
                tungstenite::protocol::frame::coding::Data::Binary,
            ),
            ..TFrameHeader::default()
        };
        let mut out = [0u8; FrameHeader::MAX_LEN];
        g.bench_function(BenchmarkId::new("emberws", name), |b| {
            b.iter(|| black_box(&ours).encode(black_box(&mut out)))
        });
        g.bench_function(BenchmarkId::new("tungstenite", name), |b| {
            b.iter(|| {
                let mut dst: &mut [u8] = black_box(&mut out);
                black_box(&theirs)
                    .format(black_box(len), &mut dst)
                    .ok()
                    .map(|()| dst.len())
            })
        });
    }
    g.finish();
}

fn unmask_group(c: &mut Criterion) {
    let mut g = c.benchmark_group("frame/unmask");
    for len in SIZES {
        g.throughput(Throughput::Bytes(len as u64));
        let mut buf = util::mixed(len);
        // Unmasking twice restores the input, so the same buffer serves every iteration.
        g.bench_function(BenchmarkId::new("emberws", label(len)), |b| {
            b.iter(|| unmask(black_box(&mut buf), black_box(KEY), 0))
        });
        g.bench_function(BenchmarkId::new("naive_bytewise", label(len)), |b| {
            b.iter(|| naive_unmask(black_box(&mut buf), black_box(KEY)))
        });
    }
    g.finish();
}

fn read_frame(c: &mut Criterion) {
    let mut g = c.benchmark_group("frame/read_frame");
    for len in SIZES {
        g.throughput(Throughput::Bytes(len as u64));
        let payload = util::mixed(len);
        let frame = client_frame(BINARY, &payload);
        let mut rbuf = vec![0u8; frame.len()];

        g.bench_function(BenchmarkId::new("emberws", label(len)), |b| {
            b.iter(|| {
                rbuf.copy_from_slice(black_box(&frame));
                ours_read(&mut rbuf)
            })
        });
        g.bench_function(BenchmarkId::new("emberws_in_place", label(len)), |b| {
            b.iter_batched_ref(
                || frame.clone(),
                |buf| ours_read(buf),
                BatchSize::LargeInput,
            )
        });
        let mut socket = FrameSocket::new(Replay::new(&frame));
        g.bench_function(
            BenchmarkId::new("tungstenite_FrameSocket", label(len)),
            |b| {
                b.iter(|| match socket.read(None) {
                    Ok(Some(f)) => f.len(),
                    _ => unreachable!("a whole frame"),
                })
            },
        );
        let mut ws = WebSocket::from_raw_socket(Replay::new(&frame), TRole::Server, None);
        g.bench_function(BenchmarkId::new("tungstenite_WebSocket", label(len)), |b| {
            b.iter(|| match ws.read() {
                Ok(tungstenite::Message::Binary(data)) => data.len(),
                _ => unreachable!("a whole binary frame"),
            })
        });

        // Checked once, outside the timing: all see the same payload.
        let mut buf = frame.clone();
        assert_eq!(ours_read(&mut buf), len);
        assert_eq!(buf[frame.len() - len..], payload[..]);
        assert!(matches!(ws.read(), Ok(tungstenite::Message::Binary(d)) if d[..] == payload[..]));
    }
    g.finish();
}

/// Parses the frame at the start of `buf` and unmasks its payload in place.
fn ours_read(buf: &mut [u8]) -> usize {
    let Ok(Status::Complete((h, n))) = FrameHeader::parse(buf, Role::Server) else {
        unreachable!("a whole frame");
    };
    let body = &mut buf[n..n + h.payload_len as usize];
    unmask(body, h.mask.unwrap_or_default(), 0);
    body.len()
}

criterion_group!(benches, parse_header, encode, unmask_group, read_frame);
criterion_main!(benches);

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
//! - `frame/read_frame`: one masked binary frame, header + unmasked payload. tungstenite has
//!   no public socket-free unmasking frame parser in 0.27 (`FrameCodec` is `pub(super)`), so
//!   two neighbours stand in: `FrameSocket::read` (parses and copies the payload out of the
//!   stream but leaves it masked) and `WebSocket::read` (unmasks, and wraps the frame as a
//!   message). Both copy the frame from their `Read` into their own buffer first; emberws
//!   works in place in the loop's read buffer, which the `read` syscall has filled.

mod util;

use std::hint::black_box;
use std::io::{self, Cursor, Read, Write};

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use emberws::proto::frame::{FrameHeader, OpCode};
use emberws::proto::mask::unmask;
use emberws::proto::{Role, Status};
use tungstenite::protocol::frame::{FrameHeader as TFrameHeader, FrameSocket};
use tungstenite::protocol::{Role as TRole, WebSocket};

use util::{client_frame, BINARY, KEY};

/// Payload sizes of `frame/unmask` and `frame/read_frame`.
const SIZES: [usize; 5] = [16, 125, 1024, 16 * 1024, 64 * 1024];

/// The three length forms: (name, payload length).
const FORMS: [(&str, u64); 3] = [("len7", 100), ("len16", 4096), ("len64", 100_000)];

/// A socket stand-in for tungstenite: reads come from a buffer, writes are dropped.
struct Wire(Cursor<Vec<u8>>);

impl Read for Wire {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

impl Write for Wire {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

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
            b.iter(|| TFrameHeader::parse(&mut Cursor::new(black_box(frame))).map(|r| r.is_some()))
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

        g.bench_function(BenchmarkId::new("emberws", label(len)), |b| {
            b.iter_batched_ref(
                || frame.clone(),
                |buf| {
                    let Ok(Status::Complete((h, n))) = FrameHeader::parse(buf, Role::Server) else {
                        unreachable!("a whole frame");
                    };
                    let body = &mut buf[n..n + h.payload_len as usize];
                    unmask(body, h.mask.unwrap_or_default(), 0);
                    body.len()
                },
                BatchSize::LargeInput,
            )
        });
        g.bench_function(
            BenchmarkId::new("tungstenite_FrameSocket", label(len)),
            |b| {
                b.iter_batched_ref(
                    || FrameSocket::new(Cursor::new(frame.clone())),
                    |socket| match socket.read(None) {
                        Ok(Some(f)) => f.len(),
                        _ => unreachable!("a whole frame"),
                    },
                    BatchSize::LargeInput,
                )
            },
        );
        g.bench_function(BenchmarkId::new("tungstenite_WebSocket", label(len)), |b| {
            b.iter_batched_ref(
                || {
                    WebSocket::from_raw_socket(
                        Wire(Cursor::new(frame.clone())),
                        TRole::Server,
                        None,
                    )
                },
                |ws| match ws.read() {
                    Ok(tungstenite::Message::Binary(data)) => data.len(),
                    _ => unreachable!("a whole binary frame"),
                },
                BatchSize::LargeInput,
            )
        });

        // Checked once, outside the timing: all three see the same payload.
        let mut buf = frame.clone();
        let n = frame.len() - len;
        unmask(&mut buf[n..], KEY, 0);
        assert_eq!(buf[n..], payload[..]);
        let mut ws = WebSocket::from_raw_socket(Wire(Cursor::new(frame)), TRole::Server, None);
        assert!(matches!(ws.read(), Ok(tungstenite::Message::Binary(d)) if d[..] == payload[..]));
    }
    g.finish();
}

criterion_group!(benches, parse_header, encode, unmask_group, read_frame);
criterion_main!(benches);

//! ⑤: UTF-8 validation of text payloads.
//!
//! Group `utf8/validate` (stable name for `critcmp`): ASCII and mixed 1- to 4-byte text at
//! 125 B (a control-frame-sized payload), 4 KiB and 64 KiB. `Validator::push` gets the payload
//! in one piece and in 1 KiB pieces (split inside characters, so the carry path runs), beside
//! `std::str::from_utf8` over the whole payload, the bound any incremental validator pays on
//! top of. tungstenite's incremental validator is private (`protocol::frame::utf8`), so it is
//! not here.

mod util;

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use emberws::proto::utf8::Validator;

const SIZES: [(usize, &str); 3] = [(125, "125B"), (4096, "4KiB"), (65536, "64KiB")];

/// The piece size of the `in_1KiB_pieces` variant.
const PIECE: usize = 1024;

fn push_all(pieces: &[&[u8]]) -> bool {
    let mut v = Validator::new();
    pieces.iter().all(|p| v.push(p).is_ok()) && v.is_complete()
}

fn validate(c: &mut Criterion) {
    let mut g = c.benchmark_group("utf8/validate");
    for (kind, make) in [
        ("ascii", util::ascii as fn(usize) -> Vec<u8>),
        ("mixed", util::mixed),
    ] {
        for (len, size) in SIZES {
            let text = make(len);
            let pieces: Vec<&[u8]> = text.chunks(PIECE).collect();
            // Checked once, outside the timing: the inputs are valid and of the stated size.
            assert_eq!(text.len(), len);
            assert!(std::str::from_utf8(&text).is_ok());
            assert!(push_all(&pieces));
            if kind == "mixed" && len > PIECE {
                assert!(
                    pieces.iter().any(|p| std::str::from_utf8(p).is_err()),
                    "some piece must end inside a character"
                );
            }

            let param = format!("{kind}_{size}");
            g.throughput(Throughput::Bytes(len as u64));
            g.bench_function(BenchmarkId::new("emberws_one_piece", &param), |b| {
                b.iter(|| push_all(&[black_box(&text[..])]))
            });
            g.bench_function(BenchmarkId::new("emberws_1KiB_pieces", &param), |b| {
                b.iter(|| push_all(black_box(&pieces)))
            });
            g.bench_function(BenchmarkId::new("std_from_utf8", &param), |b| {
                b.iter(|| std::str::from_utf8(black_box(&text)).is_ok())
            });
        }
    }
    g.finish();
}

criterion_group!(benches, validate);
criterion_main!(benches);

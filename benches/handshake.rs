//! ① and ②: the upgrade request of a browser, parsed, validated and answered.
//!
//! Groups (stable names for `critcmp`):
//! - `handshake/parse`: request head → validated `Sec-WebSocket-Key`. tungstenite's
//!   `TryParse for Request` (httparse + `http::Request`) sits beside it; it checks only the
//!   method and version here, the upgrade headers wait for `create_response`.
//! - `handshake/respond`: the whole server side, request bytes → `101` response bytes.
//! - `handshake/find_head_end`: the `\r\n\r\n` search alone, beside a naive window scan.
//! - `handshake/accept_key`: SHA-1 + base64 of RFC 6455 §1.3.

mod util;

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use emberws::config::MAX_HEADERS;
use emberws::proto::handshake::{self, find_head_end, Header};
use emberws::proto::{response, Status};
use tungstenite::handshake::machine::TryParse;
use tungstenite::handshake::server::{create_response, write_response, Request};

use util::REQUEST;

/// Parse + validate, as the loop's `on_head` does, returning the key.
fn ours_parse(buf: &[u8]) -> usize {
    let mut table = [Header::EMPTY; MAX_HEADERS];
    match handshake::parse(buf, &mut table) {
        Ok(Status::Complete((req, _))) => req.validate_upgrade().map_or(0, <[u8]>::len),
        _ => unreachable!("the bench request is complete and valid"),
    }
}

fn parse(c: &mut Criterion) {
    let mut g = c.benchmark_group("handshake/parse");
    g.throughput(Throughput::Bytes(REQUEST.len() as u64));
    g.bench_function("emberws", |b| b.iter(|| ours_parse(black_box(REQUEST))));
    g.bench_function("tungstenite", |b| {
        b.iter(|| match Request::try_parse(black_box(REQUEST)) {
            Ok(Some((n, req))) => (n, req),
            _ => unreachable!("the bench request is complete and valid"),
        })
    });
    g.finish();
}

fn respond(c: &mut Criterion) {
    let mut g = c.benchmark_group("handshake/respond");
    g.throughput(Throughput::Bytes(REQUEST.len() as u64));
    // The loop appends to one reused output buffer; so do both here.
    let mut out = Vec::with_capacity(1024);
    g.bench_function("emberws", |b| {
        b.iter(|| {
            out.clear();
            let mut table = [Header::EMPTY; MAX_HEADERS];
            let Ok(Status::Complete((req, _))) = handshake::parse(black_box(REQUEST), &mut table)
            else {
                unreachable!("the bench request is complete");
            };
            let key = req.validate_upgrade().expect("valid upgrade");
            response::switching_protocols(&mut out, key, None);
            out.len()
        })
    });
    g.bench_function("tungstenite", |b| {
        b.iter(|| {
            out.clear();
            let Ok(Some((_, req))) = Request::try_parse(black_box(REQUEST)) else {
                unreachable!("the bench request is complete");
            };
            let res = create_response(&req).expect("valid upgrade");
            write_response(&mut out, &res).expect("a Vec takes every byte");
            out.len()
        })
    });
    g.finish();
}

fn find_end(c: &mut Criterion) {
    let mut g = c.benchmark_group("handshake/find_head_end");
    g.throughput(Throughput::Bytes(REQUEST.len() as u64));
    g.bench_function("emberws", |b| {
        b.iter(|| find_head_end(black_box(REQUEST), 0))
    });
    g.bench_function("naive_windows", |b| {
        b.iter(|| {
            black_box(REQUEST)
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
                .map(|i| i + 4)
        })
    });
    g.finish();
}

fn accept_key(c: &mut Criterion) {
    let key: &[u8] = b"dGhlIHNhbXBsZSBub25jZQ==";
    let mut g = c.benchmark_group("handshake/accept_key");
    g.throughput(Throughput::Elements(1));
    g.bench_function("emberws", |b| {
        b.iter(|| response::accept_key(black_box(key)))
    });
    g.bench_function("tungstenite", |b| {
        b.iter(|| tungstenite::handshake::derive_accept_key(black_box(key)))
    });
    g.finish();
}

criterion_group!(benches, parse, respond, find_end, accept_key);
criterion_main!(benches);

//! What each fuzz target checks, one function per target (`fuzz_targets/*.rs` are one line).
//!
//! The first input byte seeds the split pattern (as rustls' fuzzers do), so the fuzzer
//! explores the cuts together with the bytes. Every check calls the public `emberws::proto`
//! API only; the receive pipeline is the one `tests/properties.rs` drives.

use emberws::proto::frame::FrameHeader;
use emberws::proto::handshake::{self, find_head_end, Header};
use emberws::proto::resp::{self, Limits, Value, MAX_DEPTH};
use emberws::proto::utf8::Validator;
use emberws::proto::{Role, Status};

#[path = "../../tests/pipeline/mod.rs"]
mod pipeline;

mod conn;
mod events;
mod relay_target;
mod state_target;
mod tls;

pub use conn::conn;
pub use events::events;
pub use relay_target::relay;
pub use state_target::state;
pub use tls::tls;

/// The binary's relay (the JSON protocol handler, its rules, clients and rate limits) and
/// the token hashes it needs, included as they are: `relay` drives them.
#[allow(dead_code, clippy::all)]
#[path = "../../src/bin/emberws/relay/mod.rs"]
mod relay;
#[allow(dead_code, clippy::all)]
#[path = "../../src/bin/emberws/secret.rs"]
mod secret;

use pipeline::{run_split, Decoder, Utf8Expect};

/// A small header table, so "too many headers" is reachable.
const SLOTS: usize = 16;

/// Panics unless `inner` lies inside `outer` (a view borrowed from the input).
fn within(outer: &[u8], inner: &[u8]) {
    let (o, i) = (outer.as_ptr_range(), inner.as_ptr_range());
    assert!(
        o.start <= i.start && i.end <= o.end,
        "{inner:?} is not a part of the input"
    );
}

/// `handshake::parse` on arbitrary bytes: never panics; Partial exactly while no blank line
/// is there; a Complete head is no longer than the input, every field is a part of the
/// input, and the head alone parses the same; an error is decided by the head alone; the
/// end search resumed at the split seeded by byte 0 finds the same end.
pub fn handshake(data: &[u8]) {
    let end = find_head_end(data, 0);
    let mut table = [Header::EMPTY; SLOTS];
    match handshake::parse(data, &mut table) {
        Ok(Status::Partial) => assert_eq!(end, None),
        Ok(Status::Complete((req, len))) => {
            assert_eq!(end, Some(len));
            assert!(len <= data.len());
            within(data, req.method.as_bytes());
            within(data, req.target.as_bytes());
            for h in req.headers {
                within(data, h.name.as_bytes());
                within(data, h.value);
            }
            for p in req.protocols() {
                within(data, p.as_bytes());
            }
            if let Ok(key) = req.validate_upgrade() {
                within(data, key);
                assert_eq!(key.len(), 24);
            }
            let mut again = [Header::EMPTY; SLOTS];
            let Ok(Status::Complete((head, head_len))) = handshake::parse(&data[..len], &mut again)
            else {
                panic!("the head alone must parse");
            };
            assert_eq!(head_len, len);
            assert_eq!(
                (head.method, head.target, head.version, head.headers),
                (req.method, req.target, req.version, req.headers)
            );
            let mut shorter = [Header::EMPTY; SLOTS];
            assert!(matches!(
                handshake::parse(&data[..len - 1], &mut shorter),
                Ok(Status::Partial)
            ));
        }
        Err(e) => {
            let end = end.expect("an error only once the head is whole");
            let mut again = [Header::EMPTY; SLOTS];
            assert_eq!(
                handshake::parse(&data[..end], &mut again).map(|s| s.is_complete()),
                Err(e)
            );
        }
    }
    // An incremental caller: the first bytes up to the seeded cut, then the rest.
    let cut = data
        .first()
        .map_or(0, |&b| usize::from(b) % (data.len() + 1));
    let first = find_head_end(&data[..cut], 0);
    let resumed = first.or_else(|| find_head_end(data, cut));
    assert_eq!(resumed, end);
}

/// `FrameHeader::parse` on bytes after a role byte (bit 0: server or client): never panics;
/// a prefix decides and every longer input agrees; a Complete header is 2..=14 bytes and no
/// longer than the input, obeys the role's mask rule, and re-encodes (with its mask) to
/// exactly the bytes parsed when they used the minimal length encoding.
pub fn frame_header(data: &[u8]) {
    let Some((&first, bytes)) = data.split_first() else {
        return;
    };
    let role = if first & 1 == 0 {
        Role::Server
    } else {
        Role::Client
    };
    let result = FrameHeader::parse(bytes, role);
    let limit = bytes.len().min(FrameHeader::MAX_LEN);
    let decided_at =
        (0..=limit).find(|&n| FrameHeader::parse(&bytes[..n], role) != Ok(Status::Partial));
    match decided_at {
        Some(n) => {
            for m in n..=limit {
                assert_eq!(FrameHeader::parse(&bytes[..m], role), result, "{m} bytes");
            }
        }
        None => {
            assert_eq!(result, Ok(Status::Partial));
            assert!(bytes.len() < FrameHeader::MAX_LEN);
        }
    }
    if let Ok(Status::Complete((header, len))) = result {
        assert!((2..=FrameHeader::MAX_LEN).contains(&len) && len <= bytes.len());
        assert_eq!(header.mask.is_some(), role == Role::Server);
        let parsed = &bytes[..len];
        let minimal = match parsed[1] & 0x7F {
            126 => u16::from_be_bytes([parsed[2], parsed[3]]) >= 126,
            127 => {
                parsed[2..10]
                    .iter()
                    .fold(0u64, |v, &b| v << 8 | u64::from(b))
                    > 0xFFFF
            }
            _ => true,
        };
        assert_eq!(header.encoded_len() == len, minimal);
        if minimal {
            let mut out = [0u8; FrameHeader::MAX_LEN];
            let n = header.encode(&mut out);
            assert_eq!(&out[..n], parsed);
        }
    }
}

/// The UTF-8 validator against `std::str::from_utf8`, the input cut at the point byte 0
/// seeds: valid, incomplete at the end, or failing at the push holding the first byte after
/// which nothing could be valid.
pub fn utf8(data: &[u8]) {
    let Some((&first, bytes)) = data.split_first() else {
        return;
    };
    let cut = usize::from(first) % (bytes.len() + 1);
    let (a, b) = bytes.split_at(cut);
    let mut v = Validator::new();
    let got = match v.push(a) {
        Err(_) => Err(0),
        Ok(()) => match v.push(b) {
            Err(_) => Err(1),
            Ok(()) => Ok(v.is_complete()),
        },
    };
    match pipeline::utf8_expect(bytes) {
        Utf8Expect::Valid => assert_eq!(got, Ok(true)),
        Utf8Expect::Incomplete => assert_eq!(got, Ok(false)),
        Utf8Expect::InvalidAt(k) => assert_eq!(got, Err(usize::from(k >= cut))),
    }
}

/// The frame → message pipeline (FrameHeader, unmask, Assembler, UTF-8, close payload) fed in
/// pieces seeded by byte 0, which also picks the message size limit: never panics; the
/// message being buffered never passes the limit; the same messages and the same error as
/// the unsplit input; once it failed, every later call fails the same way.
pub fn assemble(data: &[u8]) {
    let Some((&first, bytes)) = data.split_first() else {
        return;
    };
    const LIMITS: [u64; 8] = [0, 1, 125, 126, 1000, 4096, 65_536, 1 << 20];
    let max = LIMITS[usize::from(first & 7)];
    let (whole, whole_result) = run_split(bytes, &[], max);

    let mut rng = u64::from(first) << 32 | 0x9E37_79B9;
    let mut d = Decoder::new(max);
    let mut out = Vec::new();
    let mut at = 0;
    let mut result = Ok(());
    while at < bytes.len() {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let n = (rng % 64) as usize;
        let end = (at + n).min(bytes.len());
        let now = d.feed(&bytes[at..end], &mut out);
        assert!(
            d.buffered() as u64 <= max,
            "{} buffered, limit {max}",
            d.buffered()
        );
        if let Err(e) = result {
            assert_eq!(now, Err(e), "a failed pipeline must stay failed");
        }
        result = now;
        at = end;
    }
    if let Err(e) = result {
        assert_eq!(d.feed(&[], &mut out), Err(e));
    }
    assert_eq!(result, whole_result);
    assert_eq!(out, whole);
    assert!(d.high_water() as u64 <= max);
    for o in &out {
        if let pipeline::Out::Message(_, payload) = o {
            assert!(payload.len() as u64 <= max);
        }
    }
}

/// The limits byte 0 picks for `resp`: each bit set keeps a default, each bit clear tightens
/// one limit, so the fuzzer meets every limit at small sizes; bit 0 switches RESP3 on.
fn resp_limits(first: u8) -> Limits {
    let pick = |bit: u8, tight: usize, default: usize| {
        if first & (1 << bit) == 0 {
            tight
        } else {
            default
        }
    };
    let d = Limits::DEFAULT;
    Limits {
        resp3: first & 1 != 0,
        max_depth: [1, 2, MAX_DEPTH + 5, d.max_depth][usize::from(first >> 1 & 3)],
        max_line_len: [4, 16, 64, d.max_line_len][usize::from(first >> 3 & 3)],
        max_bulk_len: pick(5, 16, d.max_bulk_len),
        max_array_len: pick(6, 4, d.max_array_len),
        max_value_len: pick(7, 96, d.max_value_len),
    }
}

/// Reads `value` through: every string is a part of `input`, every aggregate yields its
/// count, no deeper than the limits allow. Returns the bulk strings of a flat array of them.
fn visit<'b>(
    input: &[u8],
    value: Value<'b>,
    depth: usize,
    limits: &Limits,
) -> Option<Vec<&'b [u8]>> {
    let items = match value {
        Value::Simple(s)
        | Value::Error(s)
        | Value::Bulk(s)
        | Value::Double(s)
        | Value::BigNumber(s) => {
            within(input, s);
            if !matches!(value, Value::Bulk(_) | Value::Error(_)) {
                assert!(!s.contains(&b'\r') && !s.contains(&b'\n'));
            }
            return None;
        }
        Value::Verbatim { format, text } => {
            within(input, format);
            within(input, text);
            assert_eq!(format.len(), 3);
            return None;
        }
        Value::Integer(_) | Value::Null | Value::Boolean(_) => return None,
        Value::Array(a) | Value::Push(a) | Value::Set(a) | Value::Map(a) => a,
    };
    assert!(
        depth < limits.max_depth.min(MAX_DEPTH),
        "deeper than the limit"
    );
    assert!(items.len() <= limits.max_array_len);
    if let Value::Map(m) = value {
        assert_eq!(m.len() % 2, 0);
    }
    within(input, items.as_bytes());
    let mut bulks = Some(Vec::new());
    let mut n = 0;
    for item in items.iter() {
        n += 1;
        if let Value::Bulk(b) = item {
            if let Some(v) = bulks.as_mut() {
                v.push(b);
            }
        } else {
            bulks = None;
        }
        visit(input, item, depth + 1, limits);
    }
    assert_eq!(n, items.len(), "an array yields its count");
    bulks.filter(|_| matches!(value, Value::Array(_)))
}

/// `resp::parse` on the bytes after a limits byte, value after value as a reader takes them
/// off its buffer: never panics; a value took 1..=len bytes and parses the same from exactly
/// those, Partial from one byte fewer and from the cut byte 0 seeds; its strings are parts of
/// the input; an error or Partial is what the seeded prefix gives too (or Partial); a flat
/// array of bulk strings, re-encoded as a command, parses to the same strings.
pub fn resp(data: &[u8]) {
    let Some((&first, bytes)) = data.split_first() else {
        return;
    };
    let limits = resp_limits(first);
    let mut at = 0;
    while at < bytes.len() {
        let rest = &bytes[at..];
        let cut = usize::from(first).wrapping_mul(31).wrapping_add(at) % (rest.len() + 1);
        let result = resp::parse(rest, &limits);
        let prefix = resp::parse(&rest[..cut], &limits);
        match result {
            Ok(Status::Complete((value, n))) => {
                assert!(n > 0 && n <= rest.len());
                assert_eq!(resp::parse(&rest[..n], &limits), result);
                assert_eq!(resp::parse(&rest[..n - 1], &limits), Ok(Status::Partial));
                if cut < n {
                    assert_eq!(prefix, Ok(Status::Partial));
                } else {
                    assert_eq!(prefix, result);
                }
                if let Some(args) = visit(rest, value, 0, &limits) {
                    let mut out = Vec::new();
                    resp::encode_command(&mut out, &args);
                    assert_eq!(out.len(), resp::command_len(&args));
                    let Ok(Status::Complete((Value::Array(again), m))) =
                        resp::parse(&out, &Limits::DEFAULT)
                    else {
                        panic!("a re-encoded command must parse");
                    };
                    assert_eq!(m, out.len());
                    assert!(again.iter().eq(args.iter().map(|a| Value::Bulk(a))));
                }
                at += n;
            }
            Ok(Status::Partial) => {
                assert_eq!(prefix, Ok(Status::Partial));
                return;
            }
            Err(e) => {
                assert!(
                    prefix == Ok(Status::Partial) || prefix == Err(e),
                    "{prefix:?} vs {e}"
                );
                return;
            }
        }
    }
}

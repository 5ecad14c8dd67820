//! Property tests of the RESP codec (`emberws::proto::resp`, feature `redis`).
//!
//! - a generated command, encoded, parses back to its arguments at any split, and a reader
//!   fed pipelined commands in generated chunks gets them all back, in order;
//! - a generated value of every RESP2 and RESP3 type, written by the reference encoder here,
//!   parses to the same value at every split; tighter limits only ever refuse it, with a
//!   limit's error, and never change it;
//! - arbitrary bytes, and encodings with a byte changed, never panic, and a prefix decides
//!   what every longer input decides.
//!
//! Deterministic: every block runs from a fixed seed with a fixed number of cases.
//! `PROPTEST_CASES=N` and `PROPTEST_RNG_SEED=S` override both, e.g.
//! `PROPTEST_CASES=20000 cargo test --release --features redis --test resp_properties`.
#![cfg(feature = "redis")]

use emberws::proto::resp::{self, Array, Limits, RespError, Value};
use emberws::proto::Status;
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::RngSeed;

/// `cases` from a fixed seed, unless the environment asks for other values.
fn config(cases: u32) -> ProptestConfig {
    let mut config = ProptestConfig::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = cases;
    }
    if std::env::var_os("PROPTEST_RNG_SEED").is_none() {
        config.rng_seed = RngSeed::Fixed(0x7265_7370_7072_6f70);
    }
    config
}

/// Sorted positions in `0..=len` from generated indexes.
fn positions(cuts: &[Index], len: usize) -> Vec<usize> {
    let mut at: Vec<usize> = cuts.iter().map(|i| i.index(len + 1)).collect();
    at.sort_unstable();
    at
}

const R3: Limits = Limits {
    resp3: true,
    ..Limits::DEFAULT
};

/// A value as the reference encoder writes it and as the parser must report it.
#[derive(Clone, Debug, PartialEq, Eq)]
enum V {
    Simple(Vec<u8>),
    Error(Vec<u8>),
    Int(i64),
    Bulk(Vec<u8>),
    Null,
    Array(Vec<V>),
    Push(Vec<V>),
    Set(Vec<V>),
    /// Keys and values alternately: always an even count.
    Map(Vec<V>),
    Bool(bool),
    Double(Vec<u8>),
    Big(Vec<u8>),
    Verbatim(Vec<u8>, Vec<u8>),
}

/// The parsed value as a `V`, read through the public accessors.
fn own(v: Value<'_>) -> V {
    fn list(a: Array<'_>) -> Vec<V> {
        let items: Vec<V> = a.iter().map(own).collect();
        assert_eq!(items.len(), a.len());
        items
    }
    match v {
        Value::Simple(s) => V::Simple(s.to_vec()),
        Value::Error(s) => V::Error(s.to_vec()),
        Value::Integer(n) => V::Int(n),
        Value::Bulk(s) => V::Bulk(s.to_vec()),
        Value::Null => V::Null,
        Value::Array(a) => V::Array(list(a)),
        Value::Push(a) => V::Push(list(a)),
        Value::Set(a) => V::Set(list(a)),
        Value::Map(a) => V::Map(list(a)),
        Value::Boolean(b) => V::Bool(b),
        Value::Double(s) => V::Double(s.to_vec()),
        Value::BigNumber(s) => V::Big(s.to_vec()),
        Value::Verbatim { format, text } => V::Verbatim(format.to_vec(), text.to_vec()),
    }
}

/// How a value is written, where RESP has more than one way.
#[derive(Clone, Debug)]
enum Form {
    Plain,
    /// An error as a RESP3 blob error (`!`), CR and LF allowed inside.
    BlobError,
    /// Null as `$-1`, `*-1` or `_`.
    Null(u8),
}

/// The reference encoder, written from the RESP spec apart from the codec.
fn encode(v: &V, form: &Form, out: &mut Vec<u8>) {
    fn head(out: &mut Vec<u8>, ty: u8, n: usize) {
        out.push(ty);
        out.extend_from_slice(n.to_string().as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    fn line(out: &mut Vec<u8>, ty: u8, text: &[u8]) {
        out.push(ty);
        out.extend_from_slice(text);
        out.extend_from_slice(b"\r\n");
    }
    fn blob(out: &mut Vec<u8>, ty: u8, bytes: &[u8]) {
        head(out, ty, bytes.len());
        out.extend_from_slice(bytes);
        out.extend_from_slice(b"\r\n");
    }
    fn items(out: &mut Vec<u8>, ty: u8, items: &[V], n: usize) {
        head(out, ty, n);
        for item in items {
            encode(item, &Form::Plain, out);
        }
    }
    match v {
        V::Simple(s) => line(out, b'+', s),
        V::Error(s) => match form {
            Form::BlobError => blob(out, b'!', s),
            _ => line(out, b'-', s),
        },
        V::Int(n) => line(out, b':', n.to_string().as_bytes()),
        V::Bulk(b) => blob(out, b'$', b),
        V::Null => match form {
            Form::Null(b'$') => out.extend_from_slice(b"$-1\r\n"),
            Form::Null(b'*') => out.extend_from_slice(b"*-1\r\n"),
            _ => out.extend_from_slice(b"_\r\n"),
        },
        V::Array(a) => items(out, b'*', a, a.len()),
        V::Push(a) => items(out, b'>', a, a.len()),
        V::Set(a) => items(out, b'~', a, a.len()),
        V::Map(a) => items(out, b'%', a, a.len() / 2),
        V::Bool(b) => out.extend_from_slice(if *b { b"#t\r\n" } else { b"#f\r\n" }),
        V::Double(d) => line(out, b',', d),
        V::Big(d) => line(out, b'(', d),
        V::Verbatim(format, text) => blob(out, b'=', &[format.as_slice(), b":", text].concat()),
    }
}

fn encoded(v: &V, form: &Form) -> Vec<u8> {
    let mut out = Vec::new();
    encode(v, form, &mut out);
    out
}

/// Bytes without CR or LF, for the lines.
fn line_bytes() -> impl Strategy<Value = Vec<u8>> {
    vec(
        any::<u8>().prop_filter("no CR or LF", |b| *b != b'\r' && *b != b'\n'),
        0..12,
    )
}

fn leaf() -> impl Strategy<Value = (V, Form)> {
    let plain = |s: BoxedStrategy<V>| s.prop_map(|v| (v, Form::Plain));
    prop_oneof![
        plain(line_bytes().prop_map(V::Simple).boxed()),
        plain(line_bytes().prop_map(V::Error).boxed()),
        vec(any::<u8>(), 0..12).prop_map(|e| (V::Error(e), Form::BlobError)),
        plain(any::<i64>().prop_map(V::Int).boxed()),
        plain(vec(any::<u8>(), 0..24).prop_map(V::Bulk).boxed()),
        prop_oneof![Just(b'$'), Just(b'*'), Just(b'_')].prop_map(|f| (V::Null, Form::Null(f))),
        plain(any::<bool>().prop_map(V::Bool).boxed()),
        plain(
            prop_oneof![
                any::<f64>()
                    .prop_filter("finite", |d| d.is_finite())
                    .prop_map(|d| format!("{d:e}")),
                any::<i32>().prop_map(|d| d.to_string()),
                Just("inf".to_string()),
                Just("-inf".to_string()),
                Just("nan".to_string()),
            ]
            .prop_map(|d| V::Double(d.into_bytes()))
            .boxed()
        ),
        plain(
            "[-+]?[0-9]{1,60}"
                .prop_map(|d| V::Big(d.into_bytes()))
                .boxed()
        ),
        plain(
            (
                prop_oneof![Just(b"txt"), Just(b"mkd")],
                vec(any::<u8>(), 0..16)
            )
                .prop_map(|(f, t)| V::Verbatim(f.to_vec(), t))
                .boxed()
        ),
    ]
}

/// A value of every type, nested up to four levels (the default `max_depth` is 8), with the
/// form each element is written in baked into its bytes.
fn value() -> impl Strategy<Value = (V, Vec<u8>)> {
    let leaf = leaf().prop_map(|(v, form)| {
        let bytes = encoded(&v, &form);
        (v, bytes)
    });
    leaf.prop_recursive(4, 48, 6, |inner| {
        (0u8..4, vec(inner, 0..6)).prop_map(|(kind, items)| {
            let (values, parts): (Vec<V>, Vec<Vec<u8>>) = items.into_iter().unzip();
            let (ty, v, count) = match kind {
                0 => (b'*', V::Array(values.clone()), values.len()),
                1 => (b'>', V::Push(values.clone()), values.len()),
                2 => (b'~', V::Set(values.clone()), values.len()),
                _ => {
                    // A map needs an even count: drop an odd last element.
                    let even = values.len() / 2 * 2;
                    let v = V::Map(values[..even].to_vec());
                    let mut bytes = format!("%{}\r\n", even / 2).into_bytes();
                    bytes.extend(parts[..even].concat());
                    return (v, bytes);
                }
            };
            let mut bytes = format!("{}{count}\r\n", ty as char).into_bytes();
            bytes.extend(parts.concat());
            (v, bytes)
        })
    })
}

/// A limit's error: what tighter limits may turn a valid value into.
fn is_limit(e: RespError) -> bool {
    matches!(
        e,
        RespError::LineTooLong
            | RespError::BulkTooLong
            | RespError::ArrayTooLong
            | RespError::TooDeep
            | RespError::ValueTooLong
            | RespError::UnexpectedResp3(_)
    )
}

fn limits() -> impl Strategy<Value = Limits> {
    (
        0usize..96,
        0usize..32,
        0usize..8,
        0usize..6,
        0usize..24,
        any::<bool>(),
    )
        .prop_map(
            |(max_value_len, max_bulk_len, max_array_len, max_depth, max_line_len, resp3)| Limits {
                max_value_len,
                max_bulk_len,
                max_array_len,
                max_depth,
                max_line_len,
                resp3,
            },
        )
}

/// Parses `bytes` and every prefix: never panics; a prefix that decides (a value or an
/// error) decides what `bytes` decides; a value is read through to the end.
fn assert_consistent(bytes: &[u8], limits: &Limits) -> Result<(), TestCaseError> {
    let full = resp::parse(bytes, limits);
    if let Ok(Status::Complete((v, n))) = full {
        prop_assert!(n > 0 && n <= bytes.len());
        let _ = own(v);
    }
    for cut in 0..bytes.len() {
        match resp::parse(&bytes[..cut], limits) {
            Ok(Status::Partial) => {}
            decided => prop_assert_eq!(decided, full, "prefix of {} bytes", cut),
        }
    }
    Ok(())
}

/// Bytes drawn mostly from RESP's own alphabet, so type bytes, lengths and CRLF meet.
fn resp_bytes() -> impl Strategy<Value = Vec<u8>> {
    let alphabet: &[u8] = b"+-:$*_#,(!=>~%|\r\n0123456789-1tfx";
    vec(
        prop_oneof![
            4 => proptest::sample::select(alphabet.to_vec()),
            1 => any::<u8>(),
        ],
        0..64,
    )
}

proptest! {
    #![proptest_config(config(1024))]

    #[test]
    fn commands_parse_back_to_their_arguments_at_any_split(
        args in vec(vec(any::<u8>(), 0..40), 0..8),
        cuts in vec(any::<Index>(), 0..16),
    ) {
        let args: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
        let mut out = Vec::new();
        resp::encode_command(&mut out, &args);
        prop_assert_eq!(out.len(), resp::command_len(&args));
        let want = V::Array(args.iter().map(|a| V::Bulk(a.to_vec())).collect());
        let Ok(Status::Complete((value, n))) = resp::parse(&out, &Limits::DEFAULT) else {
            return Err(TestCaseError::fail("an encoded command must parse"));
        };
        prop_assert_eq!(n, out.len());
        prop_assert_eq!(own(value), want);
        for cut in positions(&cuts, out.len()) {
            if cut < out.len() {
                prop_assert_eq!(resp::parse(&out[..cut], &Limits::DEFAULT), Ok(Status::Partial));
            }
        }
    }

    #[test]
    fn a_reader_gets_pipelined_commands_back_in_order(
        commands in vec(vec(vec(any::<u8>(), 0..24), 0..5), 1..8),
        cuts in vec(any::<Index>(), 0..24),
    ) {
        let mut stream = Vec::new();
        for args in &commands {
            let args: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
            resp::encode_command(&mut stream, &args);
        }
        // The reader's buffer grows by the chunks between the cuts; each complete value is
        // taken off its front.
        let mut ends = positions(&cuts, stream.len());
        ends.push(stream.len());
        let mut start = 0;
        let mut got = Vec::new();
        for end in ends {
            loop {
                match resp::parse(&stream[start..end], &Limits::DEFAULT) {
                    Ok(Status::Complete((v, n))) => {
                        got.push(own(v));
                        start += n;
                    }
                    Ok(Status::Partial) => break,
                    Err(e) => return Err(TestCaseError::fail(format!("{e}"))),
                }
            }
        }
        prop_assert_eq!(start, stream.len());
        let want: Vec<V> = commands
            .iter()
            .map(|args| V::Array(args.iter().map(|a| V::Bulk(a.clone())).collect()))
            .collect();
        prop_assert_eq!(got, want);
    }

    #[test]
    fn values_of_every_type_parse_back_at_every_split((v, bytes) in value()) {
        let Ok(Status::Complete((value, n))) = resp::parse(&bytes, &R3) else {
            return Err(TestCaseError::fail(format!(
                "must parse: {:?}",
                String::from_utf8_lossy(&bytes)
            )));
        };
        prop_assert_eq!(n, bytes.len());
        prop_assert_eq!(own(value), v.clone());
        for cut in 0..bytes.len() {
            prop_assert_eq!(resp::parse(&bytes[..cut], &R3), Ok(Status::Partial));
        }
        // Behind another value and before a third, it is still the same.
        let stream = [&b":1\r\n"[..], &bytes, b"+OK\r\n"].concat();
        let Ok(Status::Complete((value, n))) = resp::parse(&stream[4..], &R3) else {
            return Err(TestCaseError::fail("must parse in a stream"));
        };
        prop_assert_eq!((own(value), n), (v, bytes.len()));
    }

    #[test]
    fn tighter_limits_refuse_but_never_change_a_value(
        (v, bytes) in value(),
        limits in limits(),
    ) {
        match resp::parse(&bytes, &limits) {
            Ok(Status::Complete((value, n))) => {
                prop_assert_eq!(n, bytes.len());
                prop_assert_eq!(own(value), v);
            }
            Ok(Status::Partial) => {
                return Err(TestCaseError::fail("a whole value is never Partial"));
            }
            Err(e) => prop_assert!(is_limit(e), "{}", e),
        }
        assert_consistent(&bytes, &limits)?;
    }

    #[test]
    fn changed_encodings_never_panic_and_agree_with_their_prefixes(
        (_, bytes) in value(),
        at in any::<Index>(),
        byte in any::<u8>(),
        limits in prop_oneof![Just(R3), Just(Limits::DEFAULT), limits()],
    ) {
        let mut bytes = bytes;
        let i = at.index(bytes.len());
        bytes[i] = byte;
        assert_consistent(&bytes, &limits)?;
    }

    #[test]
    fn random_bytes_never_panic_and_agree_with_their_prefixes(
        bytes in prop_oneof![resp_bytes(), vec(any::<u8>(), 0..64)],
        limits in prop_oneof![Just(R3), Just(Limits::DEFAULT), limits()],
    ) {
        assert_consistent(&bytes, &limits)?;
    }
}

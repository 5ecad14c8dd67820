//! Property tests of the sans-IO protocol core (`emberws::proto`) and of topic matching.
//!
//! - any split of a generated upgrade request parses as the whole head does;
//! - frame headers round-trip through encode → parse, and parse the same at every split;
//! - a stream of masked client frames gives the same messages however it is cut, also when
//!   bytes of it are mutated (then the same messages before the same error);
//! - the incremental UTF-8 validator agrees with `std::str::from_utf8` and fails at the same
//!   byte, fed in any chunks;
//! - a Server-Sent Event encoded from any text and id parses back, by an independent
//!   WHATWG-style parser and by the crate's own at any split, to the same data and id;
//! - `topic_matches` agrees with a recursive reference matcher.
//!
//! Deterministic: every block runs from a fixed seed with a fixed number of cases, sized so
//! the file runs in a few seconds in debug. `PROPTEST_CASES=N` and `PROPTEST_RNG_SEED=S`
//! override both for a longer or different run, e.g.
//! `PROPTEST_CASES=20000 cargo test --release --test properties`.

mod pipeline;
#[path = "util/sse.rs"]
#[allow(dead_code)]
mod sse;

use emberws::proto::frame::{FrameHeader, OpCode};
use emberws::proto::handshake::{self, find_head_end, Header, Request};
use emberws::proto::message::DataKind;
use emberws::proto::utf8::Validator;
use emberws::proto::{ProtocolError, Role, Status};
use emberws::topic_matches;
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::{select, Index};
use proptest::test_runner::RngSeed;

use pipeline::{run_split, Decoder, Out, Utf8Expect};

/// `cases` from a fixed seed, unless the environment asks for other values.
fn config(cases: u32) -> ProptestConfig {
    let mut config = ProptestConfig::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = cases;
    }
    if std::env::var_os("PROPTEST_RNG_SEED").is_none() {
        config.rng_seed = RngSeed::Fixed(0x656d_6265_7277_7331);
    }
    config
}

/// Sorted positions in `0..=len` from generated indexes.
fn positions(cuts: &[Index], len: usize) -> Vec<usize> {
    let mut at: Vec<usize> = cuts.iter().map(|i| i.index(len + 1)).collect();
    at.sort_unstable();
    at
}

// ---------------------------------------------------------------------------------------
// ① The upgrade request
// ---------------------------------------------------------------------------------------

/// One header line as generated: the name as sent, the raw value (with OWS around it) and
/// what the parser must report.
#[derive(Clone, Debug)]
struct Line {
    name: String,
    raw: Vec<u8>,
    value: Vec<u8>,
    protocols: Vec<String>,
}

#[derive(Clone, Debug)]
struct Upgrade {
    target: String,
    lines: Vec<Line>,
    key: String,
    /// Frame bytes read together with the head.
    trailing: Vec<u8>,
}

impl Upgrade {
    fn head(&self) -> Vec<u8> {
        let mut head = format!("GET {} HTTP/1.1\r\n", self.target).into_bytes();
        for line in &self.lines {
            head.extend_from_slice(line.name.as_bytes());
            head.push(b':');
            head.extend_from_slice(&line.raw);
            head.extend_from_slice(b"\r\n");
        }
        head.extend_from_slice(b"\r\n");
        head
    }

    fn protocols(&self) -> Vec<String> {
        self.lines
            .iter()
            .flat_map(|l| l.protocols.iter().cloned())
            .collect()
    }
}

/// Standard base64 with padding, written here so the test does not share the parser's codec.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = u32::from_be_bytes([0, b[0], b[1], b[2]]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// `name` with each letter's case chosen at random (names compare case-insensitively).
fn cased(name: &'static str) -> impl Strategy<Value = String> {
    vec(any::<bool>(), name.len()).prop_map(move |upper| {
        name.chars()
            .zip(upper)
            .map(|(c, u)| {
                if u {
                    c.to_ascii_uppercase()
                } else {
                    c.to_ascii_lowercase()
                }
            })
            .collect()
    })
}

/// Optional white space (RFC 9110 §5.6.3): none, SP or HTAB, up to two.
fn ows() -> impl Strategy<Value = String> {
    "[ \t]{0,2}"
}

/// A header line whose parsed value is `value`, sent with OWS around it.
fn line(
    name: impl Strategy<Value = String>,
    value: impl Strategy<Value = String>,
) -> impl Strategy<Value = Line> {
    (name, ows(), value, ows()).prop_map(|(name, before, value, after)| Line {
        raw: format!("{before}{value}{after}").into_bytes(),
        name,
        value: value.into_bytes(),
        protocols: Vec::new(),
    })
}

/// A `Sec-WebSocket-Protocol` line listing 1–3 tokens with OWS around the commas.
fn protocol_line() -> impl Strategy<Value = Line> {
    (
        cased("Sec-WebSocket-Protocol"),
        vec(("[a-zA-Z0-9._-]{1,10}", ows(), ows()), 1..4),
        ows(),
    )
        .prop_map(|(name, items, after)| {
            let value = items
                .iter()
                .map(|(token, before, after)| format!("{before}{token}{after}"))
                .collect::<Vec<_>>()
                .join(",");
            let raw = format!("{value}{after}").into_bytes();
            Line {
                name,
                value: trim_ows(&raw).to_vec(),
                raw,
                protocols: items.into_iter().map(|(token, _, _)| token).collect(),
            }
        })
}

fn trim_ows(bytes: &[u8]) -> &[u8] {
    let is_ows = |b: &u8| *b == b' ' || *b == b'\t';
    let start = bytes.iter().position(|b| !is_ows(b)).unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !is_ows(b))
        .map_or(start, |i| i + 1);
    &bytes[start..end]
}

const REQUIRED: [&str; 6] = [
    "host",
    "upgrade",
    "connection",
    "sec-websocket-version",
    "sec-websocket-key",
    "sec-websocket-protocol",
];

/// Any other header: a token name, a value of VCHAR, SP, HTAB and obs-text.
fn extra_line() -> impl Strategy<Value = Line> {
    let name = "[!#$%&'*+.^_`|~0-9A-Za-z-]{1,16}"
        .prop_filter("not a header the upgrade checks", |n: &String| {
            !REQUIRED.iter().any(|r| n.eq_ignore_ascii_case(r))
        });
    let byte = prop_oneof![0x21u8..=0x7E, Just(b' '), Just(b'\t'), 0x80u8..=0xFF];
    (name, vec(byte, 0..24)).prop_map(|(name, raw)| Line {
        value: trim_ows(&raw).to_vec(),
        name,
        raw,
        protocols: Vec::new(),
    })
}

fn upgrade() -> impl Strategy<Value = Upgrade> {
    let target = (
        vec("[a-zA-Z0-9._~%!$&'()*+,;=:@-]{0,8}", 0..4),
        prop::option::of("[a-zA-Z0-9=&/?%-]{0,16}"),
    )
        .prop_map(|(segments, query)| {
            let mut target = format!("/{}", segments.join("/"));
            if let Some(q) = query {
                target.push('?');
                target.push_str(&q);
            }
            target
        });
    let required = (
        line(cased("Host"), "[a-z0-9.-]{1,20}(:[0-9]{1,5})?"),
        line(
            cased("Upgrade"),
            select(vec![
                "websocket",
                "WebSocket",
                "h2c, websocket",
                "websocket,foo",
            ])
            .prop_map(String::from),
        ),
        line(
            cased("Connection"),
            select(vec![
                "Upgrade",
                "upgrade",
                "keep-alive, Upgrade",
                "Upgrade,close",
            ])
            .prop_map(String::from),
        ),
        line(cased("Sec-WebSocket-Version"), Just("13".to_owned())),
        (cased("Sec-WebSocket-Key"), ows(), any::<[u8; 16]>(), ows()),
    );
    (
        target,
        required,
        vec(protocol_line(), 0..3),
        vec(extra_line(), 0..8),
        vec(any::<u8>(), 0..24),
    )
        .prop_flat_map(
            |(target, (host, up, conn, version, key), protocols, extra, trailing)| {
                let (key_name, before, key_bytes, after) = key;
                let key = base64(&key_bytes);
                let mut lines = vec![
                    host,
                    up,
                    conn,
                    version,
                    Line {
                        name: key_name,
                        raw: format!("{before}{key}{after}").into_bytes(),
                        value: key.clone().into_bytes(),
                        protocols: Vec::new(),
                    },
                ];
                lines.extend(protocols);
                lines.extend(extra);
                // Any order of the lines.
                (
                    Just(target),
                    Just(lines).prop_shuffle(),
                    Just(key),
                    Just(trailing),
                )
            },
        )
        .prop_map(|(target, lines, key, trailing)| Upgrade {
            target,
            lines,
            key,
            trailing,
        })
}

/// The fields a split parse must reproduce.
fn same_request(got: &Request<'_, '_>, want: &Request<'_, '_>) -> Result<(), TestCaseError> {
    prop_assert_eq!(got.method, want.method);
    prop_assert_eq!(got.target, want.target);
    prop_assert_eq!(got.version, want.version);
    prop_assert_eq!(got.headers, want.headers);
    Ok(())
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn upgrade_request_parses_the_same_at_any_split(
        up in upgrade(),
        cuts in vec(any::<Index>(), 0..24),
    ) {
        let head = up.head();
        let full = [head.as_slice(), &up.trailing].concat();

        // The whole buffer: every field as generated.
        let mut table = [Header::EMPTY; 64];
        let Ok(Status::Complete((whole, head_len))) = handshake::parse(&full, &mut table) else {
            return Err(TestCaseError::fail(format!(
                "a valid request must parse: {:?}",
                handshake::parse(&full, &mut [Header::EMPTY; 64]).map(|s| s.is_complete())
            )));
        };
        prop_assert_eq!(head_len, head.len());
        prop_assert_eq!(whole.method, "GET");
        prop_assert_eq!(whole.target, up.target.as_str());
        prop_assert_eq!(whole.version, 1);
        prop_assert_eq!(whole.headers.len(), up.lines.len());
        for (got, want) in whole.headers.iter().zip(&up.lines) {
            prop_assert_eq!(got.name, want.name.as_str());
            prop_assert_eq!(got.value, want.value.as_slice());
        }
        prop_assert_eq!(whole.validate_upgrade(), Ok(up.key.as_bytes()));
        prop_assert_eq!(whole.protocols().collect::<Vec<_>>(), up.protocols());
        let (path, query) = match up.target.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (up.target.as_str(), None),
        };
        prop_assert_eq!(whole.path(), path);
        prop_assert_eq!(whole.query(), query);

        // Every prefix: Partial while shorter than the head, then the same request.
        for n in 0..=full.len() {
            let mut table = [Header::EMPTY; 64];
            match handshake::parse(&full[..n], &mut table) {
                Ok(Status::Partial) => prop_assert!(n < head_len, "Partial at {}", n),
                Ok(Status::Complete((req, len))) => {
                    prop_assert!(n >= head_len, "Complete at {} < {}", n, head_len);
                    prop_assert_eq!(len, head_len);
                    same_request(&req, &whole)?;
                }
                Err(e) => prop_assert!(false, "{:?} at prefix {}", e, n),
            }
        }

        // An incremental caller: bytes arrive in the generated pieces, the search resumes
        // where the previous one stopped, and the head is parsed once its end is found.
        let mut searched = 0;
        let mut found = None;
        for n in positions(&cuts, full.len()).into_iter().chain([full.len()]) {
            if n <= searched {
                continue;
            }
            match find_head_end(&full[..n], searched) {
                None => prop_assert!(n < head_len, "end missed with {} bytes", n),
                Some(end) => {
                    prop_assert_eq!(end, head_len);
                    let mut table = [Header::EMPTY; 64];
                    let parsed = handshake::parse(&full[..n], &mut table);
                    let Ok(Status::Complete((req, len))) = parsed else {
                        return Err(TestCaseError::fail(format!("{parsed:?} at {n}")));
                    };
                    prop_assert_eq!(len, head_len);
                    same_request(&req, &whole)?;
                    found = Some(end);
                    break;
                }
            }
            searched = n;
        }
        prop_assert_eq!(found, Some(head_len));
    }
}

// ---------------------------------------------------------------------------------------
// ③ Frame headers
// ---------------------------------------------------------------------------------------

const OPCODES: [OpCode; 6] = [
    OpCode::Continuation,
    OpCode::Text,
    OpCode::Binary,
    OpCode::Close,
    OpCode::Ping,
    OpCode::Pong,
];

/// 2^63 - 1, the largest length a frame can announce (§5.2: the top bit is 0).
const MAX_PAYLOAD: u64 = u64::MAX >> 1;

/// Lengths at every encoding boundary, and anywhere in each encoding's range.
fn payload_len() -> impl Strategy<Value = u64> {
    prop_oneof![
        select(vec![
            0,
            1,
            124,
            125,
            126,
            127,
            65_534,
            65_535,
            65_536,
            65_537,
            u64::from(u32::MAX),
            MAX_PAYLOAD - 1,
            MAX_PAYLOAD,
        ]),
        0..=125u64,
        126..=65_535u64,
        65_536..=MAX_PAYLOAD,
    ]
}

/// A header that obeys §5.2 and §5.5: control frames are final and at most 125 bytes.
fn frame_header() -> impl Strategy<Value = FrameHeader> {
    (
        any::<bool>(),
        select(OPCODES.to_vec()),
        prop::option::of(any::<[u8; 4]>()),
        payload_len(),
    )
        .prop_map(|(fin, opcode, mask, len)| {
            let control = opcode.is_control();
            FrameHeader {
                fin: fin || control,
                opcode,
                mask,
                payload_len: if control { len % 126 } else { len },
            }
        })
}

/// The role whose masking rule `header` obeys.
fn role_for(header: &FrameHeader) -> Role {
    if header.mask.is_some() {
        Role::Server
    } else {
        Role::Client
    }
}

/// True if the length field of a parsed header of `len` bytes is the minimal encoding.
fn minimal(bytes: &[u8]) -> bool {
    match bytes[1] & 0x7F {
        126 => u16::from_be_bytes([bytes[2], bytes[3]]) >= 126,
        127 => u64::from_be_bytes(bytes[2..10].try_into().expect("8 bytes")) > 0xFFFF,
        _ => true,
    }
}

proptest! {
    #![proptest_config(config(2048))]

    #[test]
    fn frame_header_round_trips_at_every_split(
        header in frame_header(),
        payload in vec(any::<u8>(), 0..8),
    ) {
        let role = role_for(&header);
        let mut buf = [0u8; FrameHeader::MAX_LEN];
        let n = header.encode(&mut buf);
        prop_assert_eq!(n, header.encoded_len());
        let ext = match header.payload_len {
            0..=125 => 0,
            126..=0xFFFF => 2,
            _ => 8,
        };
        prop_assert_eq!(n, 2 + ext + if header.mask.is_some() { 4 } else { 0 });
        prop_assert!(minimal(&buf[..n]));

        // Every strict prefix is Partial; the whole header, and the header followed by
        // payload, are the header.
        for cut in 0..n {
            let got = FrameHeader::parse(&buf[..cut], role);
            prop_assert_eq!(got, Ok(Status::Partial), "cut {}", cut);
        }
        prop_assert_eq!(FrameHeader::parse(&buf[..n], role), Ok(Status::Complete((header, n))));
        let with_payload = [&buf[..n], payload.as_slice()].concat();
        prop_assert_eq!(FrameHeader::parse(&with_payload, role), Ok(Status::Complete((header, n))));

        // The other role refuses it as soon as byte 1 is there (§5.1).
        let (other, refusal) = match role {
            Role::Server => (Role::Client, ProtocolError::MaskedFrameFromServer),
            Role::Client => (Role::Server, ProtocolError::UnmaskedFrameFromClient),
        };
        prop_assert_eq!(FrameHeader::parse(&buf[..1], other), Ok(Status::Partial));
        for cut in 2..=n {
            prop_assert_eq!(FrameHeader::parse(&buf[..cut], other), Err(refusal));
        }

        // Too small an output buffer: nothing written, 0 returned.
        let mut short = [0xAAu8; FrameHeader::MAX_LEN];
        prop_assert_eq!(header.encode(&mut short[..n - 1]), 0);
        prop_assert_eq!(short, [0xAAu8; FrameHeader::MAX_LEN]);
    }

    /// Arbitrary header bytes: once a prefix decides (Complete or an error), every longer
    /// input decides the same; a Complete header re-encodes to the bytes parsed when their
    /// length encoding was minimal.
    #[test]
    fn frame_header_parse_is_decided_by_a_prefix(
        b0 in prop_oneof![
            any::<u8>(),
            (any::<bool>(), select(OPCODES.to_vec()))
                .prop_map(|(fin, op)| (u8::from(fin) << 7) | op.as_u8()),
        ],
        rest in vec(any::<u8>(), 0..16),
        server in any::<bool>(),
    ) {
        let role = if server { Role::Server } else { Role::Client };
        let bytes = [&[b0][..], &rest].concat();
        let mut decided = None;
        for cut in 0..=bytes.len() {
            let got = FrameHeader::parse(&bytes[..cut], role);
            match decided {
                Some(d) => prop_assert_eq!(got, d, "cut {}", cut),
                None if got != Ok(Status::Partial) => decided = Some(got),
                None => prop_assert!(cut < FrameHeader::MAX_LEN, "Partial with {} bytes", cut),
            }
        }
        if let Some(Ok(Status::Complete((header, len)))) = decided {
            prop_assert!((2..=FrameHeader::MAX_LEN).contains(&len));
            prop_assert_eq!(header.mask.is_some(), role == Role::Server);
            prop_assert!(!header.opcode.is_control() || (header.fin && header.payload_len <= 125));
            prop_assert!(header.payload_len <= MAX_PAYLOAD);
            let parsed = &bytes[..len];
            prop_assert_eq!(minimal(parsed), header.encoded_len() == len);
            if minimal(parsed) {
                let mut buf = [0u8; FrameHeader::MAX_LEN];
                let n = header.encode(&mut buf);
                prop_assert_eq!(&buf[..n], parsed);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// ④–⑥ Frame streams through unmask, the Assembler and UTF-8 validation
// ---------------------------------------------------------------------------------------

/// A roomy limit for streams that must pass whole.
const ROOMY: u64 = 1 << 20;

#[derive(Clone, Debug)]
enum Control {
    Ping(Vec<u8>),
    Pong(Vec<u8>),
}

#[derive(Clone, Debug)]
enum Item {
    /// A data message cut into fragments at `cuts` (byte positions, even inside a
    /// character), with a control frame after some fragments; `forms` picks each frame's
    /// length encoding (0 minimal, 1 16-bit, 2 64-bit: the parser accepts any).
    Data {
        kind: DataKind,
        payload: Vec<u8>,
        cuts: Vec<Index>,
        controls: Vec<Option<Control>>,
        forms: Vec<u8>,
    },
    Control(Control),
}

/// A stream: items, an optional closing frame, and a seed for the masking keys.
#[derive(Clone, Debug)]
struct Stream {
    items: Vec<Item>,
    close: Option<Option<(u16, String)>>,
    key_seed: u64,
}

/// Text mixing 1- to 4-byte characters.
fn text() -> impl Strategy<Value = String> {
    vec(
        prop_oneof![
            4 => proptest::char::range('a', 'z'),
            2 => select(vec!['é', 'ß', 'κ', '€', '世', '✓', '🦀', '𝄞', '\u{10FFFF}', '\u{0}']),
            1 => any::<char>(),
        ],
        0..120,
    )
    .prop_map(|chars| chars.into_iter().collect())
}

fn control() -> impl Strategy<Value = Control> {
    prop_oneof![
        vec(any::<u8>(), 0..=125).prop_map(Control::Ping),
        vec(any::<u8>(), 0..=125).prop_map(Control::Pong),
    ]
}

fn item() -> impl Strategy<Value = Item> {
    let data = (
        prop_oneof![
            text().prop_map(|t| (DataKind::Text, t.into_bytes())),
            vec(any::<u8>(), 0..400).prop_map(|b| (DataKind::Binary, b)),
        ],
        vec(any::<Index>(), 0..4),
        vec(prop::option::weighted(0.3, control()), 4),
        vec(0u8..3, 5),
    )
        .prop_map(|((kind, payload), cuts, controls, forms)| Item::Data {
            kind,
            payload,
            cuts,
            controls,
            forms,
        });
    prop_oneof![4 => data, 1 => control().prop_map(Item::Control)]
}

fn stream() -> impl Strategy<Value = Stream> {
    let close = prop::option::weighted(
        0.5,
        prop::option::of((
            select(vec![
                1000u16, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 4999,
            ]),
            "[a-z é€🦀]{0,30}",
        )),
    );
    (vec(item(), 1..6), close, any::<u64>()).prop_map(|(items, close, key_seed)| Stream {
        items,
        close,
        key_seed,
    })
}

/// Appends one masked client frame, written from §5.2 without the crate's encoder.
fn push_frame(wire: &mut Vec<u8>, fin: bool, opcode: u8, payload: &[u8], form: u8, key: [u8; 4]) {
    wire.push((u8::from(fin) << 7) | opcode);
    let n = payload.len();
    if n <= 125 && form == 0 {
        wire.push(0x80 | n as u8);
    } else if n <= 0xFFFF && form <= 1 {
        wire.push(0x80 | 126);
        wire.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        wire.push(0x80 | 127);
        wire.extend_from_slice(&(n as u64).to_be_bytes());
    }
    wire.extend_from_slice(&key);
    wire.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
}

impl Stream {
    /// The wire bytes and the outputs a correct pipeline gives for them.
    fn build(&self) -> (Vec<u8>, Vec<Out>) {
        let mut state = self.key_seed | 1;
        let mut key = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state as u32).to_le_bytes()
        };
        let mut wire = Vec::new();
        let mut expected = Vec::new();
        let push_control = |wire: &mut Vec<u8>, expected: &mut Vec<Out>, c: &Control, k| {
            let (op, payload, out) = match c {
                Control::Ping(p) => (0x9, p, Out::Ping(p.clone())),
                Control::Pong(p) => (0xA, p, Out::Pong(p.clone())),
            };
            push_frame(wire, true, op, payload, 0, k);
            expected.push(out);
        };
        for item in &self.items {
            match item {
                Item::Control(c) => push_control(&mut wire, &mut expected, c, key()),
                Item::Data {
                    kind,
                    payload,
                    cuts,
                    controls,
                    forms,
                } => {
                    let mut at = positions(cuts, payload.len());
                    at.push(payload.len());
                    let mut start = 0;
                    for (i, &end) in at.iter().enumerate() {
                        let last = i + 1 == at.len();
                        let opcode = match (i, kind) {
                            (0, DataKind::Text) => 0x1,
                            (0, DataKind::Binary) => 0x2,
                            _ => 0x0,
                        };
                        push_frame(
                            &mut wire,
                            last,
                            opcode,
                            &payload[start..end],
                            forms[i],
                            key(),
                        );
                        start = end;
                        if let (false, Some(c)) = (last, &controls[i]) {
                            push_control(&mut wire, &mut expected, c, key());
                        }
                    }
                    expected.push(Out::Message(*kind, payload.clone()));
                }
            }
        }
        if let Some(close) = &self.close {
            let payload = match close {
                Some((code, reason)) => [&code.to_be_bytes()[..], reason.as_bytes()].concat(),
                None => Vec::new(),
            };
            push_frame(&mut wire, true, 0x8, &payload, 0, key());
            expected.push(Out::Close(close.clone()));
        }
        (wire, expected)
    }
}

/// One byte of a stream replaced, inserted or removed.
#[derive(Clone, Debug)]
enum Mutation {
    Replace(Index, u8),
    Insert(Index, u8),
    Remove(Index),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let byte = prop_oneof![
        any::<u8>(),
        select(vec![
            0x00, 0x7E, 0x7F, 0x80, 0x81, 0x88, 0xFE, 0xFF, 0xC0, 0xED, 0xF4
        ]),
    ];
    prop_oneof![
        (any::<Index>(), byte.clone()).prop_map(|(i, b)| Mutation::Replace(i, b)),
        (any::<Index>(), byte).prop_map(|(i, b)| Mutation::Insert(i, b)),
        any::<Index>().prop_map(Mutation::Remove),
    ]
}

fn mutate(bytes: &mut Vec<u8>, mutations: &[Mutation]) {
    for m in mutations {
        match *m {
            Mutation::Replace(i, b) if !bytes.is_empty() => {
                let i = i.index(bytes.len());
                bytes[i] = b;
            }
            Mutation::Insert(i, b) => bytes.insert(i.index(bytes.len() + 1), b),
            Mutation::Remove(i) if !bytes.is_empty() => {
                bytes.remove(i.index(bytes.len()));
            }
            _ => {}
        }
    }
}

proptest! {
    #![proptest_config(config(384))]

    #[test]
    fn frame_stream_gives_the_same_messages_at_any_split(
        stream in stream(),
        cuts in vec(any::<Index>(), 0..16),
    ) {
        let (wire, expected) = stream.build();

        let (whole, result) = run_split(&wire, &[], ROOMY);
        prop_assert_eq!(result, Ok(()));
        prop_assert_eq!(&whole, &expected);

        let (split, result) = run_split(&wire, &positions(&cuts, wire.len()), ROOMY);
        prop_assert_eq!(result, Ok(()));
        prop_assert_eq!(&split, &expected);

        let every: Vec<usize> = (1..wire.len()).collect();
        let (bytewise, result) = run_split(&wire, &every, ROOMY);
        prop_assert_eq!(result, Ok(()));
        prop_assert_eq!(&bytewise, &expected);
    }

    /// Mutated streams and small limits: the same messages, then the same error, however the
    /// bytes are cut; the buffered message never passes the limit; an error stays.
    #[test]
    fn mutated_frame_stream_fails_the_same_at_any_split(
        stream in stream(),
        mutations in vec(mutation(), 1..4),
        max in prop_oneof![Just(ROOMY), 0..600u64],
        cuts in vec(any::<Index>(), 0..16),
    ) {
        let (mut wire, _) = stream.build();
        mutate(&mut wire, &mutations);

        let (whole, whole_result) = run_split(&wire, &[], max);
        let (split, split_result) = run_split(&wire, &positions(&cuts, wire.len()), max);
        prop_assert_eq!(&split, &whole);
        prop_assert_eq!(split_result, whole_result);

        let mut d = Decoder::new(max);
        let mut bytewise = Vec::new();
        let mut result = Ok(());
        for b in &wire {
            result = d.feed(std::slice::from_ref(b), &mut bytewise);
            prop_assert!(d.buffered() as u64 <= max, "{} bytes held, limit {}", d.buffered(), max);
            if result.is_err() {
                break;
            }
        }
        prop_assert_eq!(&bytewise, &whole);
        prop_assert_eq!(result, whole_result);
        prop_assert!(d.high_water() as u64 <= max);
        for out in &bytewise {
            if let Out::Message(_, payload) = out {
                prop_assert!(payload.len() as u64 <= max);
            }
        }
        if let Err(e) = result {
            prop_assert_eq!(d.feed(&[], &mut bytewise), Err(e));
            prop_assert_eq!(d.feed(&wire, &mut bytewise), Err(e));
            prop_assert_eq!(&bytewise, &whole, "nothing more after the error");
        }
    }
}

// ---------------------------------------------------------------------------------------
// ⑤ UTF-8
// ---------------------------------------------------------------------------------------

fn utf8_input() -> impl Strategy<Value = Vec<u8>> {
    let byte = prop_oneof![
        any::<u8>(),
        select(vec![
            0x7F, 0x80, 0x8F, 0x90, 0x9F, 0xA0, 0xBF, 0xC0, 0xC1, 0xC2, 0xDF, 0xE0, 0xED, 0xEF,
            0xF0, 0xF4, 0xF5, 0xFF,
        ]),
    ];
    prop_oneof![
        vec(any::<u8>(), 0..48),
        vec(byte.clone(), 0..16),
        text().prop_map(String::into_bytes),
        (text(), vec(mutation(), 1..4)).prop_map(|(t, m)| {
            let mut bytes = t.into_bytes();
            mutate(&mut bytes, &m);
            bytes
        }),
        // Valid text cut anywhere, even inside its last character.
        (text(), any::<Index>()).prop_map(|(t, i)| {
            let bytes = t.into_bytes();
            bytes[..i.index(bytes.len() + 1)].to_vec()
        }),
    ]
}

/// Pushes `bytes` in the pieces that `cuts` make; returns the index of the piece whose push
/// failed, or whether the end was complete. Checks `is_complete` after every push.
fn validate(bytes: &[u8], cuts: &[usize]) -> Result<Result<bool, (usize, usize)>, TestCaseError> {
    let mut v = Validator::new();
    let mut start = 0;
    for &end in cuts.iter().chain([&bytes.len()]) {
        let end = end.max(start);
        if v.push(&bytes[start..end]).is_err() {
            return Ok(Err((start, end)));
        }
        prop_assert_eq!(
            v.is_complete(),
            std::str::from_utf8(&bytes[..end]).is_ok(),
            "is_complete after {} bytes",
            end
        );
        start = end;
    }
    Ok(Ok(v.is_complete()))
}

proptest! {
    #![proptest_config(config(2048))]

    #[test]
    fn utf8_validator_agrees_with_std_in_any_chunks(
        bytes in utf8_input(),
        cuts in vec(any::<Index>(), 0..8),
    ) {
        let expect = pipeline::utf8_expect(&bytes);
        // The reference itself, against the definition: the first byte that ends every hope.
        let first_hopeless = (0..bytes.len()).find(|&k| {
            matches!(std::str::from_utf8(&bytes[..=k]), Err(e) if e.error_len().is_some())
        });
        match expect {
            Utf8Expect::InvalidAt(k) => prop_assert_eq!(first_hopeless, Some(k)),
            _ => prop_assert_eq!(first_hopeless, None),
        }

        let every: Vec<usize> = (0..bytes.len()).collect();
        for cuts in [Vec::new(), positions(&cuts, bytes.len()), every] {
            let got = validate(&bytes, &cuts)?;
            match expect {
                Utf8Expect::Valid => prop_assert_eq!(got, Ok(true)),
                Utf8Expect::Incomplete => prop_assert_eq!(got, Ok(false)),
                Utf8Expect::InvalidAt(k) => match got {
                    Err((start, end)) => prop_assert!(
                        start <= k && k < end,
                        "failed on bytes {}..{}, the bad byte is {}", start, end, k
                    ),
                    Ok(complete) => {
                        prop_assert!(false, "accepted (complete: {}), bad byte {}", complete, k)
                    }
                },
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Server-Sent Events
// ---------------------------------------------------------------------------------------

/// Text rich in what the encoding must get right: every kind of line break, colons, spaces,
/// NUL, and any other character.
fn event_text() -> impl Strategy<Value = String> {
    let ch = prop_oneof![
        2 => Just('\r'),
        2 => Just('\n'),
        1 => Just(':'),
        1 => Just(' '),
        1 => Just('\0'),
        3 => any::<char>(),
    ];
    vec(ch, 0..48).prop_map(String::from_iter)
}

/// Any string, valid as an event id or not.
fn event_id() -> impl Strategy<Value = String> {
    let ch = prop_oneof![
        1 => Just('\r'),
        1 => Just('\n'),
        1 => Just('\0'),
        1 => Just(' '),
        8 => any::<char>(),
    ];
    vec(ch, 0..12).prop_map(String::from_iter)
}

/// What the parser hands the page: every line break read as LF.
fn as_parsed(text: &str) -> String {
    text.replace("\r\n", "\n").replace('\r', "\n")
}

proptest! {
    #![proptest_config(config(1024))]

    #[test]
    fn an_encoded_event_parses_back_to_its_data_and_id(
        events in vec((event_text(), prop::option::of(event_id())), 0..6),
        retry in prop::option::of(any::<u32>()),
        keep_alive_after in vec(any::<bool>(), 6),
        cuts in vec(any::<Index>(), 0..8),
    ) {
        use emberws::proto::sse::{self as codec, EventId};
        use emberws::testing::{EventParser, Streamed};
        let mut body = Vec::new();
        let mut want = Vec::new();
        if let Some(ms) = retry {
            codec::retry(&mut body, u64::from(ms));
            want.push(sse::Item::Retry(u64::from(ms)));
        }
        for (i, (text, id)) in events.iter().enumerate() {
            let valid = id.as_deref().map(EventId::new);
            let forbidden = |id: &str| id.contains(['\r', '\n', '\0']);
            prop_assert_eq!(
                matches!(valid, Some(None)),
                id.as_deref().is_some_and(forbidden),
                "EventId::new refuses exactly CR, LF and NUL: {:?}", id
            );
            let id = valid.flatten();
            let before = body.len();
            codec::encode(&mut body, id, text);
            prop_assert_eq!(body.len() - before, codec::encoded_len(id, text));
            want.push(sse::Item::Event {
                id: id.map(|id| id.as_str().to_owned()),
                data: as_parsed(text),
            });
            if keep_alive_after[i] {
                body.extend_from_slice(codec::KEEP_ALIVE);
                want.push(sse::Item::Comment(" keep-alive".to_owned()));
            }
        }
        prop_assert_eq!(&sse::parse_all(&body), &want);

        // The crate's own parser (the harness's) agrees, however the body is cut.
        let mut parser = EventParser::new();
        let mut got = Vec::new();
        let mut at = 0;
        for cut in positions(&cuts, body.len()).into_iter().chain([body.len()]) {
            parser.push(&body[at..cut], &mut got);
            at = cut;
        }
        let got: Vec<sse::Item> = got
            .into_iter()
            .map(|item| match item {
                Streamed::Retry(ms) => sse::Item::Retry(ms),
                Streamed::Comment(c) => sse::Item::Comment(c),
                Streamed::Event(e) => sse::Item::Event { id: e.id, data: e.data },
            })
            .collect();
        prop_assert_eq!(got, want);
    }
}

// ---------------------------------------------------------------------------------------
// Topics
// ---------------------------------------------------------------------------------------

/// The module's rule, level by level: `+` is any one level, `#` as the last level is all the
/// remaining levels (zero or more), any other level matches itself. A `#` that is not last
/// matches nothing. MQTT's `$` rule on top: a first-level `+` or `#` does not match a topic
/// whose first level starts with `$`.
fn reference_match(pattern: &[&str], topic: &[&str]) -> bool {
    let wild_first = matches!(pattern.first(), Some(&"+" | &"#"));
    let dollar_first = topic.first().is_some_and(|t| t.starts_with('$'));
    !(wild_first && dollar_first) && level_match(pattern, topic)
}

/// [`reference_match`] without the `$` rule, from some level on.
fn level_match(pattern: &[&str], topic: &[&str]) -> bool {
    match (pattern.split_first(), topic.split_first()) {
        (Some((&"#", rest)), _) => rest.is_empty(),
        (Some((&"+", p)), Some((_, t))) => level_match(p, t),
        (Some((p, ps)), Some((t, ts))) => p == t && level_match(ps, ts),
        (None, None) => true,
        (Some(_), None) | (None, Some(_)) => false,
    }
}

fn level() -> impl Strategy<Value = &'static str> {
    select(vec!["a", "b", "", "ab", "a+", "#b", "$SYS", "$"])
}

/// A pattern built from a topic: some levels turned into `+`, maybe the tail into `#`.
fn derived_pattern(topic: &[&'static str]) -> impl Strategy<Value = Vec<&'static str>> {
    let topic = topic.to_vec();
    (
        vec(any::<bool>(), topic.len()),
        prop::option::of(any::<Index>()),
    )
        .prop_map(move |(plus, hash)| {
            let mut p: Vec<&str> = topic
                .iter()
                .zip(plus)
                .map(|(&l, plus)| if plus { "+" } else { l })
                .collect();
            if let Some(i) = hash {
                p.truncate(i.index(p.len() + 1));
                p.push("#");
            }
            p
        })
}

proptest! {
    #![proptest_config(config(2048))]

    #[test]
    fn topic_matches_agrees_with_reference(
        (pattern, topic) in vec(level(), 1..6).prop_flat_map(|topic| {
            let any_pattern = vec(prop_oneof![3 => level(), 1 => Just("+"), 1 => Just("#")], 1..7);
            (prop_oneof![any_pattern, derived_pattern(&topic)], Just(topic))
        }),
    ) {
        let p = pattern.join("/");
        let t = topic.join("/");
        let (pl, tl): (Vec<&str>, Vec<&str>) = (p.split('/').collect(), t.split('/').collect());
        let want = reference_match(&pl, &tl);
        prop_assert_eq!(topic_matches(&p, &t), want, "pattern {:?} topic {:?}", p, t);
        // A topic always matches itself when it holds no wildcard level.
        if !topic.iter().any(|l| *l == "+" || *l == "#") {
            prop_assert!(topic_matches(&t, &t));
        }
    }
}

//! Seeded random input against the sans-IO connection, the way a fuzzer would drive it but
//! deterministic: valid conversations mutated byte by byte, cut at random points, and pure
//! noise. Whatever arrives, the connection never panics, never holds more than the configured
//! bounds, and once it has failed it produces nothing more.

use emberws::config::Config;
use emberws::conn::{AcceptAll, Answered, Conn, Event, Millis, State};
use emberws::pool::Pool;

/// xorshift64*: small, seeded, good enough to pick bytes and cut points.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

const REQUEST: &[u8] =
    b"GET /chat HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

fn masked(fin: bool, opcode: u8, payload: &[u8], key: [u8; 4]) -> Vec<u8> {
    emberws::testing::masked_frame(fin, opcode, payload, key)
}

/// A plausible conversation: fragments, pings, text with multibyte characters, a close.
fn conversation(rng: &mut Rng) -> Vec<u8> {
    let mut out = REQUEST.to_vec();
    let key = [rng.next() as u8, 7, rng.next() as u8, 42];
    for _ in 0..rng.below(12) {
        let frame = match rng.below(7) {
            0 => masked(true, 1, "héllo wörld ✓".as_bytes(), key),
            1 => masked(true, 2, &vec![rng.next() as u8; rng.below(3000)], key),
            2 => [
                masked(false, 1, "frag".as_bytes(), key),
                masked(true, 0, "ment".as_bytes(), key),
            ]
            .concat(),
            3 => masked(true, 9, b"ping", key),
            4 => masked(true, 10, b"", key),
            5 => masked(true, 8, &[0x03, 0xe8, b'o', b'k'], key),
            _ => masked(true, 1, &vec![b'a'; 70_000], key),
        };
        out.extend_from_slice(&frame);
    }
    out
}

fn mutate(rng: &mut Rng, bytes: &mut Vec<u8>) {
    for _ in 0..rng.below(6) {
        if bytes.is_empty() {
            return;
        }
        let at = rng.below(bytes.len());
        match rng.below(4) {
            0 => bytes[at] ^= 1 << rng.below(8),
            1 => bytes[at] = rng.next() as u8,
            2 => {
                bytes.insert(at, rng.next() as u8);
            }
            _ => {
                bytes.remove(at);
            }
        }
    }
}

/// Plays the loop: feeds `bytes` in random pieces, answers heads as the server does, and
/// checks the invariants after every call.
fn drive(rng: &mut Rng, cfg: &Config, bytes: &[u8]) {
    let mut conn = Conn::new(Millis(0), cfg, None);
    let mut pool = Pool::new(4, 64 * 1024);
    let mut out = Vec::new();
    let bound = cfg.max_message_size.max(cfg.max_request_head) + 2 * 1024;
    let mut pos = 0;
    let mut failed = false;
    let mut now = 0;
    while pos < bytes.len() {
        let small = rng.below(4) == 0;
        let n = 1 + rng.below(if small { 8 } else { 9000 });
        let mut piece = bytes[pos..(pos + n).min(bytes.len())].to_vec();
        pos += piece.len();
        now += 1;
        conn.on_bytes(Millis(now));
        let mut input: &mut [u8] = &mut piece;
        while let Some(event) = conn.read_event(&mut input, &mut out, &mut pool, cfg, Millis(now)) {
            assert!(!failed, "an event after the connection failed: {event:?}");
            match event {
                Event::Head(data) => {
                    // The loop's own head path: parse, validate, decide, answer.
                    let peer = "127.0.0.1:1".parse().unwrap();
                    let answered = conn.answer_head(
                        data,
                        peer,
                        "127.0.0.1:9001".parse().unwrap(),
                        &mut AcceptAll,
                        &mut out,
                        &mut pool,
                        cfg,
                        Millis(now),
                    );
                    assert_eq!(
                        matches!(answered, Answered::Open(..)),
                        conn.state() == State::Open
                    );
                }
                Event::BadHead(e) => conn.refuse(&mut out, e.status(), &mut pool, cfg, Millis(now)),
                Event::Message(_, data) => {
                    assert!(data.as_slice().len() <= cfg.max_message_size);
                    data.recycle(&mut pool);
                }
                Event::Text(text) => assert!(text.len() <= cfg.max_message_size),
                Event::Failed(_) => failed = true,
                Event::Closed(_) | Event::Flush => {}
            }
        }
        assert!(input.is_empty(), "bytes neither consumed nor kept");
        assert!(
            conn.buffered_bytes() <= bound,
            "{} bytes held, bound {bound}",
            conn.buffered_bytes()
        );
        out.clear();
    }
    if conn.state() == State::Open {
        // Deadlines keep working whatever came before.
        let _ = conn.on_deadline(&mut out, cfg, Millis(now + 3_600_000));
    }
}

#[test]
fn mutated_conversations_never_panic_or_pass_the_bounds() {
    let cfg = Config::default();
    let mut rng = Rng(0x5eed_e3be_0001);
    for _ in 0..3000 {
        let mut bytes = conversation(&mut rng);
        mutate(&mut rng, &mut bytes);
        drive(&mut rng, &cfg, &bytes);
    }
}

#[test]
fn noise_after_a_valid_upgrade_never_panics() {
    let cfg = Config::default().max_message_size(4096);
    let mut rng = Rng(0x5eed_e3be_0002);
    for _ in 0..3000 {
        let mut bytes = REQUEST.to_vec();
        let len = rng.below(4096);
        bytes.extend((0..len).map(|_| rng.next() as u8));
        drive(&mut rng, &cfg, &bytes);
    }
}

#[test]
fn noise_as_a_request_head_never_panics() {
    let cfg = Config::default().max_request_head(512);
    let mut rng = Rng(0x5eed_e3be_0003);
    for _ in 0..3000 {
        let mut bytes = REQUEST.to_vec();
        mutate(&mut rng, &mut bytes);
        let len = rng.below(1024);
        bytes.extend((0..len).map(|_| rng.next() as u8));
        drive(&mut rng, &cfg, &bytes);
    }
}

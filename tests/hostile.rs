//! Hostile clients at scale against the real relay, each beside a bystander: slow-loris,
//! header floods, frames claiming 2^62 bytes, 100,000 one-byte fragments, ping floods that
//! never read, subscribers that never read, connect floods, resets mid-frame, retained-message
//! floods and deep JSON. For each, the bystander's application-level round trips (`ping` →
//! `pong`) lose nothing and stay answered; the server's RSS stays within the memory formula;
//! and the figures (the bystander's p99 alone and under attack) are printed for the README's
//! failure table (`EMBERWS_BIN=target/release/emberws cargo test --test hostile --
//! --nocapture --test-threads 1`: the figures of a debug build mean little). Latency is
//! reported, never asserted beyond a generous bound: these machines are shared.

mod util;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::json;
use util::binary::ServerProcess;
use util::raw::{self, op, RawClient};
use util::relay::Peer;

/// Round trips the bystander makes in each phase.
const ROUND_TRIPS: usize = 200;
/// A round trip slower than this fails the test: far above any healthy figure, low enough
/// that a server which stopped serving the bystander is caught.
const STALL: Duration = Duration::from_secs(5);
/// The relay's worst case per connection with the defaults, and its fixed buffers
/// (README, "Memory per connection").
const WORST_CASE: u64 = 196_991;
const FIXED: u64 = 3_432_462;

fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// The bystander's round trips: p50 and p99 in µs. Panics on a lost or stalled answer.
fn round_trips(peer: &mut Peer, n: usize) -> (u64, u64) {
    let mut times = Vec::with_capacity(n);
    for i in 0..n {
        let start = Instant::now();
        peer.send(&json!({"type":"ping","id":i}));
        let answer = peer.recv();
        let took = start.elapsed();
        assert_eq!(
            answer,
            json!({"type":"pong","id":i}),
            "the bystander's answer"
        );
        assert!(took < STALL, "a round trip took {took:?}");
        times.push(took.as_micros() as u64);
    }
    times.sort_unstable();
    (times[n / 2], times[(n * 99 / 100).min(n - 1)])
}

/// Runs `attack` on threads until the bystander has made its round trips beside it, for at
/// least `lasting`, and checks the server's RSS against the formula for `attackers`
/// connections.
fn beside(
    name: &str,
    args: &[&str],
    attackers: u64,
    lasting: Duration,
    attack: impl Fn(SocketAddr, &AtomicBool) + Send + Sync + 'static,
) {
    let mut all = vec!["--listen", "127.0.0.1:0", "--max-connections", "4096"];
    all.extend_from_slice(args);
    let mut server = ServerProcess::spawn(&all);
    let addr = server.addr();
    let mut bystander = Peer::anonymous(addr, "bystander");
    let (p50, p99) = round_trips(&mut bystander, ROUND_TRIPS);
    let before = rss(server.pid());
    let stop = Arc::new(AtomicBool::new(false));
    let attack = Arc::new(attack);
    let workers: Vec<_> = (0..2)
        .map(|_| {
            let (stop, attack) = (stop.clone(), attack.clone());
            thread::spawn(move || attack(addr, &stop))
        })
        .collect();
    // Let the attack build up before measuring beside it.
    thread::sleep(Duration::from_millis(300));
    let mut peak = before;
    let mut under = (0, 0);
    let start = Instant::now();
    let mut phases = 0;
    while phases < 3 || start.elapsed() < lasting {
        under = round_trips(&mut bystander, ROUND_TRIPS / 2);
        peak = peak.max(rss(server.pid()));
        phases += 1;
    }
    stop.store(true, Ordering::SeqCst);
    for w in workers {
        w.join().expect("an attacker panicked");
    }
    let bound = before + attackers * WORST_CASE + FIXED;
    eprintln!(
        "{name}: bystander p50/p99 {p50}/{p99} µs alone, {}/{} µs under attack; RSS {} → peak {} \
         (bound {})",
        under.0, under.1, before, peak, bound
    );
    assert!(
        peak <= bound,
        "{name}: RSS {peak} over the formula's {bound}"
    );
    assert!(
        server.try_wait().is_none(),
        "{name}: the server exited\n{}",
        server.stderr_tail(20)
    );
    // Served to the end: one more round trip after the attack.
    round_trips(&mut bystander, 10);
}

fn upgraded(addr: SocketAddr) -> Option<RawClient> {
    RawClient::connect(addr).ok()
}

#[test]
fn slow_loris_connections_are_dropped_at_the_handshake_timeout() {
    let dropped = Arc::new(AtomicUsize::new(0));
    let seen = dropped.clone();
    beside(
        "slow-loris ×300",
        &["--handshake-timeout", "1"],
        300,
        Duration::from_secs(3),
        move |addr, stop| {
            let mut socks: Vec<TcpStream> = (0..150)
                .filter_map(|_| TcpStream::connect(addr).ok())
                .collect();
            let head = b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ";
            let mut i = 0;
            while !stop.load(Ordering::SeqCst) {
                for s in &mut socks {
                    if s.write_all(&head[i % head.len()..][..1]).is_err() {
                        seen.fetch_add(1, Ordering::SeqCst);
                    }
                }
                i += 1;
                thread::sleep(Duration::from_millis(100));
            }
        },
    );
    assert!(
        dropped.load(Ordering::SeqCst) > 0,
        "no slow-loris connection was dropped within the handshake timeout"
    );
}

#[test]
fn header_floods_get_431() {
    let refused = Arc::new(AtomicUsize::new(0));
    let seen = refused.clone();
    beside(
        "header flood",
        &[],
        64,
        Duration::ZERO,
        move |addr, stop| {
            let mut head = String::from("GET / HTTP/1.1\r\nHost: x\r\n");
            while head.len() < 16 * 1024 {
                head.push_str("X-Flood: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
            }
            head.push_str("\r\n");
            while !stop.load(Ordering::SeqCst) {
                let Ok(mut s) = TcpStream::connect(addr) else {
                    continue;
                };
                let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
                let _ = s.write_all(head.as_bytes());
                let mut answer = [0u8; 12];
                if s.read_exact(&mut answer).is_ok() && &answer[9..12] == b"431" {
                    seen.fetch_add(1, Ordering::SeqCst);
                }
            }
        },
    );
    assert!(refused.load(Ordering::SeqCst) > 0, "no 431 seen");
}

#[test]
fn frames_claiming_2_to_the_62_bytes_and_one_byte_fragments_are_closed_1009() {
    let closes = Arc::new(AtomicUsize::new(0));
    let seen = closes.clone();
    beside(
        "2^62-byte frames, 100,000 one-byte fragments",
        &[],
        64,
        Duration::ZERO,
        move |addr, stop| {
            let mut flip = false;
            while !stop.load(Ordering::SeqCst) {
                let Some(mut c) = upgraded(addr) else {
                    continue;
                };
                if flip {
                    let mut header =
                        raw::frame_header(true, 0, op::BINARY, 1 << 62, Some([1, 2, 3, 4]));
                    header.extend_from_slice(&[0; 64]);
                    let _ = c.send(&header);
                } else {
                    // 100,000 one-byte fragments: 100 KB of message, over max_message.
                    let mut burst = raw::client_frame(false, op::TEXT, b"a");
                    let fragment = raw::client_frame(false, op::CONTINUATION, b"a");
                    for _ in 0..100_000 {
                        burst.extend_from_slice(&fragment);
                    }
                    let _ = c.send(&burst);
                }
                flip = !flip;
                while let Ok(Some(f)) = c.read_frame() {
                    if f.opcode == op::CLOSE {
                        if f.payload.get(..2) == Some(&1009u16.to_be_bytes()[..]) {
                            seen.fetch_add(1, Ordering::SeqCst);
                        }
                        break;
                    }
                }
            }
        },
    );
    assert!(closes.load(Ordering::SeqCst) >= 2, "no 1009 close seen");
}

#[test]
fn ping_floods_from_peers_that_never_read_stay_bounded() {
    beside(
        "ping flood ×20, never reading",
        &[],
        20,
        Duration::ZERO,
        move |addr, stop| {
            let mut floods: Vec<RawClient> = (0..10).filter_map(|_| upgraded(addr)).collect();
            let ping = raw::client_frame(true, op::PING, &[7; 125]);
            let burst: Vec<u8> = ping.iter().copied().cycle().take(ping.len() * 64).collect();
            while !stop.load(Ordering::SeqCst) {
                for f in &mut floods {
                    let _ = f.stream().set_nonblocking(true);
                    let _ = f.stream().write(&burst);
                }
                thread::sleep(Duration::from_millis(5));
            }
        },
    );
}

#[test]
fn subscribers_that_never_read_while_20000_messages_are_published() {
    let acked = Arc::new(AtomicUsize::new(0));
    let seen = acked.clone();
    beside(
        "200 subscribers never reading, 20,000 publishes",
        &[],
        201,
        Duration::from_secs(2),
        move |addr, stop| {
            // One thread subscribes the sleepers, the other publishes.
            let mut sleepers: Vec<Peer> = Vec::new();
            for i in 0..100 {
                let mut p = Peer::anonymous(addr, &format!("sleeper {i}"));
                p.send(&json!({"type":"subscribe","topic":"flood/#","id":0}));
                sleepers.push(p);
            }
            let mut publisher = Peer::anonymous(addr, "publisher");
            let data = "x".repeat(512);
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) && n < 10_000 {
                for _ in 0..99 {
                    publisher.send(&json!({"type":"publish","topic":"flood/a","data":data}));
                }
                publisher.send(&json!({"type":"publish","topic":"flood/a","data":data,"id":n}));
                n += 100;
                // The publisher reads only its acks: it is never slowed by the sleepers.
                loop {
                    let answer = publisher.recv();
                    if answer["type"] == "ack" {
                        seen.fetch_add(1, Ordering::SeqCst);
                        break;
                    }
                }
            }
            drop(sleepers);
        },
    );
    assert!(
        acked.load(Ordering::SeqCst) > 0,
        "the publisher was not answered"
    );
}

#[test]
fn connect_floods_past_max_connections_get_503() {
    let refused = Arc::new(AtomicUsize::new(0));
    let seen = refused.clone();
    beside(
        "connect flood past max_connections 64",
        &["--max-connections", "64"],
        64,
        Duration::ZERO,
        move |addr, stop| {
            let mut held = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                match RawClient::connect(addr) {
                    Ok(c) => held.push(c),
                    Err(e) if e.to_string().contains("503") => {
                        seen.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(_) => {}
                }
                if held.len() > 40 {
                    held.clear();
                }
            }
        },
    );
    assert!(refused.load(Ordering::SeqCst) > 0, "no 503 seen");
}

#[test]
fn resets_mid_frame_leave_the_others_served() {
    beside(
        "resets mid-frame",
        &[],
        64,
        Duration::ZERO,
        move |addr, stop| {
            while !stop.load(Ordering::SeqCst) {
                let Some(c) = upgraded(addr) else { continue };
                let frame = raw::client_frame(true, op::TEXT, &[b'a'; 4000]);
                let _ = c.stream().write_all(&frame[..1500]);
                let sock = socket2::SockRef::from(c.stream());
                let _ = sock.set_linger(Some(Duration::ZERO));
                drop(c);
            }
        },
    );
}

#[test]
fn retained_floods_over_many_topics_stay_within_the_cap() {
    let full = Arc::new(AtomicUsize::new(0));
    let seen = full.clone();
    beside(
        "retained flood over many topics, cap 64 KiB",
        &["--max-retained-bytes", "65536"],
        2,
        Duration::from_secs(1),
        move |addr, stop| {
            let mut p = Peer::anonymous(addr, "retainer");
            let mut i = 0u64;
            let data = "y".repeat(200);
            while !stop.load(Ordering::SeqCst) {
                p.send(&json!({"type":"publish","topic":format!("r/{i}"),"data":data,"retain":true,"id":i}));
                // Each publish is acked; one the store has no room for is answered with an
                // error after its ack (delivered, not retained). Read up to this one's ack,
                // so the answers never pile up unread (a reader that falls behind is itself
                // a slow consumer, closed with 1008).
                loop {
                    let answer = p.recv();
                    if answer["type"] == "error" {
                        seen.fetch_add(1, Ordering::SeqCst);
                    } else if answer["type"] == "ack" && answer["id"] == i {
                        break;
                    }
                }
                i += 1;
            }
        },
    );
    assert!(
        full.load(Ordering::SeqCst) > 0,
        "the retained store never said it was full"
    );
}

#[test]
fn deeply_nested_json_is_refused() {
    let refused = Arc::new(AtomicUsize::new(0));
    let seen = refused.clone();
    beside(
        "nested JSON 30,000 deep",
        &[],
        2,
        Duration::ZERO,
        move |addr, stop| {
            let mut p = Peer::anonymous(addr, "nester");
            let deep = format!(
                "{{\"type\":\"publish\",\"topic\":\"t\",\"data\":{}{}}}",
                "[".repeat(30_000),
                "]".repeat(30_000)
            );
            while !stop.load(Ordering::SeqCst) {
                p.send_text(&deep);
                if p.recv()["type"] == "error" {
                    seen.fetch_add(1, Ordering::SeqCst);
                }
            }
        },
    );
    assert!(refused.load(Ordering::SeqCst) > 0, "no refusal seen");
}

//! `fanout` mode: N subscribers and one publisher sending R messages per second. Reports, per
//! published message, the latency to its last delivery, and per delivery its own latency.
//!
//! Two protocols:
//! - `relay` (emberws's): JSON text. Subscribers send
//!   `{"type":"subscribe","topic":T,"id":1}` and wait for `{"type":"ack",…}`; the publisher sends
//!   `{"type":"publish","topic":T,"data":{"seq":K,"t":NANOS,"pad":"…"}}`; subscribers receive
//!   `{"type":"message","topic":T,"data":{…}}` and the sequence number is found by a scan.
//! - `broadcast` (a classic broadcast server: every message goes to every connection, sender
//!   included): binary messages whose first 16 bytes are seq and send time (u64 LE each).
//!
//! The publish frame is built and masked once; each publish copies it and re-masks only the
//! 40 (relay) or 16 (broadcast) bytes that change.

use std::time::Duration;

use crate::fleet::{App, Fleet, Writer};
use crate::frame::{apply_mask, masked_header_len, op, push_masked};
use crate::hist::Histogram;
use crate::target::Target;
use crate::{percentiles_us, scan, Run};

pub struct Config {
    pub subscribers: usize,
    pub rate: f64,
    pub duration: Duration,
    pub topic: String,
    pub broadcast: bool,
    /// Publish payload size in bytes; smaller than the smallest possible means the smallest.
    pub size: usize,
    pub grace: Duration,
    /// The publisher's server, when not the subscribers' (`--publish-url`).
    pub publish_target: Option<Target>,
    /// Every second subscriber's server, when split over two (`--split-url`).
    pub split_target: Option<Target>,
}

/// Width of a number field in the relay template: u64::MAX has 20 digits.
const NUM_WIDTH: usize = 20;

/// The publish frame, masked, and where its variable fields sit in the payload.
struct Template {
    frame: Vec<u8>,
    header_len: usize,
    seq_at: usize,
    t_at: usize,
    payload_len: usize,
}

impl Template {
    fn new(cfg: &Config, key: [u8; 4]) -> Self {
        let mut payload;
        let (seq_at, t_at);
        if cfg.broadcast {
            payload = vec![b'x'; cfg.size.max(16)];
            (seq_at, t_at) = (0, 8);
        } else {
            payload = format!(
                r#"{{"type":"publish","topic":"{}","data":{{"seq":"#,
                cfg.topic
            )
            .into_bytes();
            seq_at = payload.len();
            payload.extend_from_slice(&[b' '; NUM_WIDTH]);
            payload.extend_from_slice(br#","t":"#);
            t_at = payload.len();
            payload.extend_from_slice(&[b' '; NUM_WIDTH]);
            payload.extend_from_slice(br#","pad":""#);
            let tail = br#""}}"#;
            let pad = cfg.size.saturating_sub(payload.len() + tail.len());
            payload.resize(payload.len() + pad, b'x');
            payload.extend_from_slice(tail);
        }
        let opcode = if cfg.broadcast { op::BINARY } else { op::TEXT };
        let mut frame = Vec::new();
        push_masked(&mut frame, opcode, &payload, key);
        Self {
            frame,
            header_len: masked_header_len(payload.len()),
            seq_at,
            t_at,
            payload_len: payload.len(),
        }
    }

    /// Queues one publish of `seq` sent at `t`: a copy of the frame, with those fields masked in.
    fn push(&self, wr: &mut Writer, broadcast: bool, seq: u64, t: u64) {
        let key = wr.mask();
        let at = wr.push_raw(&self.frame);
        let frame = wr.raw_mut(at);
        let mut field = |offset: usize, bytes: &mut [u8]| {
            apply_mask(bytes, key, offset);
            let start = self.header_len + offset;
            frame[start..start + bytes.len()].copy_from_slice(bytes);
        };
        if broadcast {
            field(self.seq_at, &mut seq.to_le_bytes());
            field(self.t_at, &mut t.to_le_bytes());
        } else {
            field(self.seq_at, &mut right_aligned(seq));
            field(self.t_at, &mut right_aligned(t));
        }
    }
}

/// `v` in decimal, right-aligned in spaces (JSON allows whitespace before a value).
fn right_aligned(mut v: u64) -> [u8; NUM_WIDTH] {
    let mut out = [b' '; NUM_WIDTH];
    let mut i = NUM_WIDTH;
    loop {
        i -= 1;
        out[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            return out;
        }
    }
}

struct Fanout {
    /// Subscribers are connections `0..n`; the publisher is `n`.
    n: usize,
    broadcast: bool,
    subscribe: Vec<u8>,
    acked: Vec<bool>,
    acks: usize,
    /// Per published message: its send time, its slowest delivery, its delivery count.
    pub_at: Vec<u64>,
    worst: Vec<u64>,
    got: Vec<u32>,
    /// Per subscriber: the last sequence number received (`u64::MAX`: none yet).
    last_seq: Vec<u64>,
    delivery: Histogram,
    delivered: u64,
    unknown_seq: u64,
    out_of_order: u64,
    relay_errors: u64,
    unexpected: u64,
    publisher_received: u64,
}

impl Fanout {
    fn relay_error(&mut self, id: usize, head: &[u8]) {
        if self.relay_errors == 0 {
            let text = String::from_utf8_lossy(head);
            eprintln!("load: [{id}] the relay answered an error: {text}");
        }
        self.relay_errors += 1;
    }
}

impl App for Fanout {
    fn on_open(&mut self, id: usize, wr: &mut Writer, _: u64) {
        if !self.broadcast && id < self.n {
            wr.push_frame(op::TEXT, &self.subscribe);
        }
    }

    fn on_message(&mut self, id: usize, _: &mut Writer, now: u64, text: bool, head: &[u8], _: u64) {
        if id == self.n {
            self.publisher_received += 1;
            if !self.broadcast && scan::has_type(head, b"error") {
                self.relay_error(id, head);
            }
            return;
        }
        let seq = if self.broadcast {
            match head.get(..8) {
                Some(b) if !text && head.len() >= 16 => {
                    u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
                }
                _ => {
                    self.unexpected += 1;
                    return;
                }
            }
        } else if scan::has_type(head, b"message") {
            match scan::seq(head) {
                Some(seq) => seq,
                None => {
                    self.unexpected += 1;
                    return;
                }
            }
        } else {
            if scan::has_type(head, b"ack") && !self.acked[id] {
                self.acked[id] = true;
                self.acks += 1;
            } else if scan::has_type(head, b"error") {
                self.relay_error(id, head);
            } else {
                self.unexpected += 1;
            }
            return;
        };
        let Some(&sent) = usize::try_from(seq).ok().and_then(|s| self.pub_at.get(s)) else {
            self.unknown_seq += 1;
            return;
        };
        let s = seq as usize;
        let latency = now.saturating_sub(sent);
        self.delivery.record(latency);
        self.worst[s] = self.worst[s].max(latency);
        self.got[s] += 1;
        self.delivered += 1;
        let last = &mut self.last_seq[id];
        if *last != u64::MAX && seq <= *last {
            self.out_of_order += 1;
        }
        *last = seq;
    }
}

/// Runs the mode; returns the JSON line and the error count.
///
/// # Errors
/// When the publisher or every subscriber failed to open, or `epoll` fails.
pub fn run(run: &Run, cfg: &Config) -> Result<(String, u64), String> {
    let io = |e: std::io::Error| format!("poll: {e}");
    let n = cfg.subscribers;
    let publisher = n;
    let total = (cfg.rate * cfg.duration.as_secs_f64()).round() as usize;
    let capacity = (cfg.size + 512).clamp(4096, 1 << 20);
    let mut plan = run.plan(capacity);
    plan.redirect = cfg.publish_target.clone().map(|t| (publisher, t));
    plan.split = cfg.split_target.clone();
    let mut fleet = Fleet::new(plan, n + 1, run.clock).map_err(io)?;
    let mut app = Fanout {
        n,
        broadcast: cfg.broadcast,
        subscribe: format!(r#"{{"type":"subscribe","topic":"{}","id":1}}"#, cfg.topic).into_bytes(),
        acked: vec![false; n],
        acks: 0,
        pub_at: Vec::with_capacity(total),
        worst: vec![0; total],
        got: vec![0; total],
        last_seq: vec![u64::MAX; n],
        delivery: Histogram::new(),
        delivered: 0,
        unknown_seq: 0,
        out_of_order: 0,
        relay_errors: 0,
        unexpected: 0,
        publisher_received: 0,
    };
    fleet.open_all(n + 1, &mut app).map_err(io)?;
    if !fleet.core.conns[publisher].is_open() {
        return Err("the publisher connection could not be opened".into());
    }
    let open_subs = (0..n).filter(|&i| fleet.core.conns[i].is_open()).count();
    let ready = if cfg.broadcast {
        open_subs
    } else {
        let deadline = run.clock.now() + run.handshake_timeout.as_nanos() as u64;
        fleet
            .run_until(deadline, &mut app, |_, a| a.acks >= open_subs)
            .map_err(io)?;
        if app.acks < open_subs {
            eprintln!(
                "load: only {} of {open_subs} subscriptions acknowledged",
                app.acks
            );
        }
        app.acks
    };
    if ready == 0 {
        return Err("no subscriber is ready (is this server speaking the relay protocol?)".into());
    }

    let template = Template::new(cfg, fleet.core.conns[publisher].wr.mask());
    eprintln!(
        "load: publishing {total} messages of {} B at {}/s to {ready} subscribers",
        template.payload_len, cfg.rate
    );
    let start = run.mark();
    let period = 1e9 / cfg.rate;
    while app.pub_at.len() < total && fleet.core.conns[publisher].is_open() {
        let now = run.clock.now();
        let due = ((now - start.t) as f64 / period) as usize + 1;
        while app.pub_at.len() < due.min(total) {
            let wr = &mut fleet.core.conns[publisher].wr;
            template.push(wr, cfg.broadcast, app.pub_at.len() as u64, now);
            app.pub_at.push(now);
        }
        fleet.flush(publisher);
        let next = start.t + (app.pub_at.len() as f64 * period) as u64;
        let wait = Duration::from_nanos(next.saturating_sub(run.clock.now()));
        fleet
            .turn(wait.min(Duration::from_millis(100)), &mut app)
            .map_err(io)?;
    }
    let published = app.pub_at.len() as u64;
    let expected = published * ready as u64;
    let publish_s = (run.clock.now() - start.t) as f64 / 1e9;
    let grace_end = run.clock.now() + cfg.grace.as_nanos() as u64;
    fleet
        .run_until(grace_end, &mut app, |_, a| a.delivered >= expected)
        .map_err(io)?;
    let stop = run.mark();
    let rss = run.server_rss_kib();
    run.close(&mut fleet).map_err(io)?;

    let mut last = Histogram::new();
    let mut complete = 0;
    for s in 0..app.pub_at.len() {
        if app.got[s] > 0 {
            last.record(app.worst[s]);
        }
        complete += u64::from(app.got[s] as usize >= ready);
    }
    let usage = run.usage(&start, &stop);
    let lost = expected.saturating_sub(app.delivered);
    let extra = [
        ("lost", lost),
        ("unknown_seq", app.unknown_seq),
        ("out_of_order", app.out_of_order),
        ("relay_error", app.relay_errors),
        ("unexpected_message", app.unexpected),
    ];
    let o = run
        .header("fanout")
        .s(
            "protocol",
            if cfg.broadcast { "broadcast" } else { "relay" },
        )
        .u("subscribers", n as u64)
        .u("ready", ready as u64)
        .f("rate", Some(cfg.rate), 0)
        .f("publish_s", Some(publish_s), 3)
        .u("size", template.payload_len as u64)
        .u("published", published)
        .u("expected", expected)
        .u("delivered", app.delivered)
        .u("complete_messages", complete)
        .o("last_delivery_us", percentiles_us(&last))
        .o("delivery_us", percentiles_us(&app.delivery))
        .f(
            "deliveries_per_s",
            (usage.secs > 0.0).then(|| app.delivered as f64 / usage.secs),
            0,
        )
        .u("publisher_received", app.publisher_received);
    let o = run.cpu_fields(o, &usage, "delivery", app.delivered);
    Ok(run.finish(o, rss, &fleet, &extra))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(broadcast: bool, size: usize) -> Config {
        Config {
            subscribers: 1,
            rate: 1.0,
            duration: Duration::from_secs(1),
            topic: "bench".into(),
            broadcast,
            size,
            grace: Duration::ZERO,
            publish_target: None,
            split_target: None,
        }
    }

    /// The payload of a masked frame at the start of `frame`.
    fn unmasked_payload(frame: &[u8], header_len: usize) -> Vec<u8> {
        let key = [
            frame[header_len - 4],
            frame[header_len - 3],
            frame[header_len - 2],
            frame[header_len - 1],
        ];
        let mut p = frame[header_len..].to_vec();
        apply_mask(&mut p, key, 0);
        p
    }

    #[test]
    fn relay_publish_is_valid_json_that_the_scanner_reads() {
        let key = [0x11, 0x22, 0x33, 0x44];
        let t = Template::new(&cfg(false, 300), key);
        assert_eq!(t.payload_len, 300);
        let mut wr = crate::conn::Conn::new(256, key, [b'a'; 24]).wr;
        t.push(&mut wr, false, 123_456, 987_654_321);
        let frame = wr.raw_mut(0).to_vec();
        let payload = unmasked_payload(&frame, t.header_len);
        let v: serde_json::Value = serde_json::from_slice(&payload).unwrap();
        assert_eq!(v["type"], "publish");
        assert_eq!(v["data"]["seq"], 123_456);
        assert_eq!(v["data"]["t"], 987_654_321u64);
        assert_eq!(scan::seq(&payload), Some(123_456));
    }

    #[test]
    fn broadcast_publish_starts_with_seq_and_time() {
        let key = [9, 9, 9, 9];
        let t = Template::new(&cfg(true, 0), key);
        let mut wr = crate::conn::Conn::new(256, key, [b'a'; 24]).wr;
        t.push(&mut wr, true, 7, 8);
        let payload = unmasked_payload(wr.raw_mut(0), t.header_len);
        assert_eq!(payload.len(), 16);
        assert_eq!(payload[..8], 7u64.to_le_bytes());
        assert_eq!(payload[8..], 8u64.to_le_bytes());
    }

    #[test]
    fn numbers_are_right_aligned() {
        assert_eq!(&right_aligned(0)[18..], b" 0");
        assert_eq!(right_aligned(u64::MAX), *b"18446744073709551615");
    }
}

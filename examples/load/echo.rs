//! `echo` mode: C connections with P messages in flight each; every echo received sends one
//! more. Reports echoes per second, bytes per second and round-trip percentiles.
//!
//! Echoes come back in order, so each connection keeps a ring of the send instants of its
//! messages in flight: the echo received matches the oldest.

use std::time::Duration;

use crate::fleet::{App, Fleet, Writer};
use crate::frame::{op, push_masked};
use crate::hist::Histogram;
use crate::{percentiles_us, Run};

pub struct Config {
    pub connections: usize,
    pub depth: usize,
    pub size: usize,
    pub binary: bool,
    pub warmup: Duration,
    pub duration: Duration,
    pub grace: Duration,
}

/// Send instants (ns) of one connection's messages in flight, oldest first; fixed capacity.
struct Ring {
    at: Box<[u64]>,
    head: usize,
    len: usize,
}

impl Ring {
    fn new(capacity: usize) -> Self {
        Self {
            at: vec![0; capacity].into_boxed_slice(),
            head: 0,
            len: 0,
        }
    }

    fn push(&mut self, t: u64) -> bool {
        if self.len == self.at.len() {
            return false;
        }
        let i = (self.head + self.len) % self.at.len();
        self.at[i] = t;
        self.len += 1;
        true
    }

    fn pop(&mut self) -> Option<u64> {
        if self.len == 0 {
            return None;
        }
        let t = self.at[self.head];
        self.head = (self.head + 1) % self.at.len();
        self.len -= 1;
        Some(t)
    }
}

struct Echo {
    rings: Vec<Ring>,
    size: u64,
    binary: bool,
    sending: bool,
    measuring: bool,
    rtt: Histogram,
    messages: u64,
    bytes: u64,
    /// Echoes whose length or type differs from what was sent.
    mismatched: u64,
    /// Messages with nothing in flight to match.
    unexpected: u64,
}

impl App for Echo {
    fn on_message(&mut self, id: usize, wr: &mut Writer, now: u64, text: bool, _: &[u8], len: u64) {
        let ring = &mut self.rings[id];
        let Some(sent) = ring.pop() else {
            self.unexpected += 1;
            return;
        };
        if len != self.size || text == self.binary {
            self.mismatched += 1;
        }
        if self.measuring {
            self.rtt.record(now.saturating_sub(sent));
            self.messages += 1;
            self.bytes += len;
        }
        if self.sending {
            ring.push(now);
            wr.send_repeat(1);
        }
    }
}

/// Runs the mode; returns the JSON line and the error count.
///
/// # Errors
/// When no connection could be opened, or `epoll` fails.
pub fn run(run: &Run, cfg: &Config) -> Result<(String, u64), String> {
    let io = |e: std::io::Error| format!("poll: {e}");
    // Room for a whole echo plus header, at least 16 KiB (4 KiB past 1000 connections), at
    // most 1 MiB: larger echoes are counted as they stream through.
    let base = if cfg.connections > 1000 {
        4096
    } else {
        16 << 10
    };
    let capacity = (cfg.size + 16).clamp(base, 1 << 20);
    let mut fleet = Fleet::new(run.plan(capacity), cfg.connections, run.clock).map_err(io)?;
    let mut app = Echo {
        rings: (0..cfg.connections).map(|_| Ring::new(cfg.depth)).collect(),
        size: cfg.size as u64,
        binary: cfg.binary,
        sending: false,
        measuring: false,
        rtt: Histogram::new(),
        messages: 0,
        bytes: 0,
        mismatched: 0,
        unexpected: 0,
    };
    fleet.open_all(cfg.connections, &mut app).map_err(io)?;
    if fleet.core.open_count() == 0 {
        return Err("no connection could be opened".into());
    }

    // Text payloads are ASCII, so valid UTF-8 at any size.
    let payload: Vec<u8> = if cfg.binary {
        (0..cfg.size).map(|i| (i * 31 + 7) as u8).collect()
    } else {
        (0..cfg.size).map(|i| b'a' + (i % 26) as u8).collect()
    };
    let opcode = if cfg.binary { op::BINARY } else { op::TEXT };
    app.sending = true;
    let now = run.clock.now();
    let mut frame = Vec::new();
    for id in 0..cfg.connections {
        if !fleet.core.conns[id].is_open() {
            continue;
        }
        let wr = &mut fleet.core.conns[id].wr;
        frame.clear();
        push_masked(&mut frame, opcode, &payload, wr.mask());
        // One write can carry a batch of up to 64 KiB of back-to-back copies.
        let copies = cfg.depth.min((64 << 10) / frame.len()).max(1);
        wr.set_repeat(&frame, copies);
        for _ in 0..cfg.depth {
            app.rings[id].push(now);
        }
        wr.send_repeat(cfg.depth as u64);
        fleet.flush(id);
    }
    eprintln!(
        "load: echo started; warming up for {:.1} s",
        cfg.warmup.as_secs_f64()
    );
    let warm_end = now + cfg.warmup.as_nanos() as u64;
    fleet
        .run_until(warm_end, &mut app, |_, _| false)
        .map_err(io)?;

    let start = run.mark();
    app.measuring = true;
    eprintln!("load: measuring for {:.1} s", cfg.duration.as_secs_f64());
    let end = start.t + cfg.duration.as_nanos() as u64;
    fleet.run_until(end, &mut app, |_, _| false).map_err(io)?;
    app.measuring = false;
    let stop = run.mark();
    let rss = run.server_rss_kib();

    // Let the messages in flight come back, so none is miscounted as lost.
    app.sending = false;
    let in_flight = |c: &crate::fleet::Core, a: &Echo| {
        (0..a.rings.len())
            .filter(|&i| c.conns[i].is_open())
            .map(|i| a.rings[i].len)
            .sum::<usize>()
    };
    let grace_end = run.clock.now() + cfg.grace.as_nanos() as u64;
    fleet
        .run_until(grace_end, &mut app, |c, a| in_flight(c, a) == 0)
        .map_err(io)?;
    let unanswered = in_flight(&fleet.core, &app) as u64;
    run.close(&mut fleet).map_err(io)?;

    let usage = run.usage(&start, &stop);
    let per_s = |n: u64| (usage.secs > 0.0).then(|| n as f64 / usage.secs);
    let extra = [
        ("size_mismatch", app.mismatched),
        ("unexpected_message", app.unexpected),
        ("unanswered", unanswered),
    ];
    let o = run
        .header("echo")
        .u("connections", cfg.connections as u64)
        .u("opened", fleet.core.stats.opened)
        .u("depth", cfg.depth as u64)
        .u("size", cfg.size as u64)
        .b("binary", cfg.binary)
        .f("warmup_s", Some(cfg.warmup.as_secs_f64()), 1)
        .f("duration_s", Some(usage.secs), 3)
        .u("messages", app.messages)
        .f("msgs_per_s", per_s(app.messages), 0)
        .f("bytes_per_s", per_s(app.bytes), 0)
        .o("rtt_us", percentiles_us(&app.rtt));
    let o = run.cpu_fields(o, &usage, "msg", app.messages);
    Ok(run.finish(o, rss, &fleet, &extra))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_is_fifo_and_bounded() {
        let mut r = Ring::new(3);
        assert!(r.push(1) && r.push(2) && r.push(3));
        assert!(!r.push(4));
        assert_eq!(r.pop(), Some(1));
        assert!(r.push(5));
        assert_eq!(
            [r.pop(), r.pop(), r.pop(), r.pop()],
            [Some(2), Some(3), Some(5), None]
        );
    }
}

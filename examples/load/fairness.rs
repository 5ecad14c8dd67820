//! `fairness` mode: does a client that floods the server slow down one that does not?
//!
//! One **bystander** connection keeps one small message in flight: it sends
//! `{"type":"publish","topic":"fair/bystander","data":N}` and times the reply carrying the same
//! `N` — the echo itself (`emberws echo`), or with `--relay` its own delivery, having subscribed
//! to `fair/bystander` first. Phase 1 (`--baseline`): the bystander alone. Phase 2
//! (`--duration`): F **flooders** beside it, opened before phase 1 and idle until now, each of
//! one kind:
//! - `publish`: relay publishes to `fair/flood` (no subscriber) as fast as the socket takes;
//!   whatever comes back is read and dropped;
//! - `echo`: 64-byte text messages as fast as the socket takes, echoes read and dropped;
//! - `ping`: 16-byte ping frames as fast as the socket takes, and the socket is **never read**,
//!   so the server's pongs pile up on its side; these connections are dropped at the end, as a
//!   client that never reads cannot see a close frame.
//!
//! A flooder owes "infinitely many" copies of one pre-built frame (`Writer::send_repeat`): no
//! queue grows in user space; a full socket waits for its next writable edge.
//!
//! A round trip still open when its phase ends counts with its age then (a lower bound), so a
//! starved bystander shows as one long wait rather than as no data; its late reply is ignored.

use std::time::Duration;

use crate::fleet::{App, Clock, Fleet, Writer};
use crate::frame::{op, push_masked};
use crate::hist::Histogram;
use crate::{percentiles_us, scan, Run};

/// What the flooders send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flood {
    Publish,
    Echo,
    Ping,
}

impl Flood {
    pub fn parse(v: &str) -> Result<Self, String> {
        match v {
            "publish" => Ok(Self::Publish),
            "echo" => Ok(Self::Echo),
            "ping" => Ok(Self::Ping),
            _ => Err(format!("--flood: '{v}' is not publish, echo or ping")),
        }
    }

    /// The kind asked for, or the protocol's own (publish for the relay, echo otherwise);
    /// refuses a kind the server would not understand.
    pub fn resolve(asked: Option<Self>, relay: bool) -> Result<Self, String> {
        match (asked, relay) {
            (None, true) => Ok(Self::Publish),
            (None, false) => Ok(Self::Echo),
            (Some(Self::Publish), false) => Err("--flood publish needs --relay".into()),
            (Some(Self::Echo), true) => {
                Err("--flood echo needs an echo server (drop --relay)".into())
            }
            (Some(kind), _) => Ok(kind),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Publish => "publish",
            Self::Echo => "echo",
            Self::Ping => "ping",
        }
    }

    /// The frame a flooder repeats, masked with `key`.
    fn frame(self, key: [u8; 4]) -> Vec<u8> {
        let mut frame = Vec::new();
        match self {
            Self::Publish => push_masked(&mut frame, op::TEXT, FLOOD_PUBLISH, key),
            Self::Echo => push_masked(&mut frame, op::TEXT, &[b'x'; 64], key),
            Self::Ping => push_masked(&mut frame, op::PING, b"fairness ping 16", key),
        }
        frame
    }
}

pub struct Config {
    pub relay: bool,
    pub flood: Flood,
    pub flooders: usize,
    pub baseline: Duration,
    pub duration: Duration,
}

const BYSTANDER: usize = 0;
const SUBSCRIBE: &[u8] = br#"{"type":"subscribe","topic":"fair/bystander","id":1}"#;
const FLOOD_PUBLISH: &[u8] = br#"{"type":"publish","topic":"fair/flood","data":0}"#;
/// Copies a flooder owes: more than any run can send, so the socket alone sets the pace.
const ENDLESS: u64 = u64::MAX / 2;

/// The bystander's message in flight.
#[derive(Clone, Copy)]
struct InFlight {
    seq: u64,
    sent: u64,
    phase: usize,
}

/// The timed connection: one message in flight, round trips by phase (0: alone, 1: flood).
struct Bystander {
    /// The `"type"` of a reply: `publish` (an echo) or `message` (a relay delivery).
    reply_type: &'static [u8],
    phase: Option<usize>,
    seq: u64,
    in_flight: Option<InFlight>,
    /// The message given up at the end of a phase; its reply, if it comes, is ignored.
    abandoned: Option<u64>,
    rtt: [Histogram; 2],
    /// Round trips still open when their phase ended (recorded with their age then).
    open_at_end: [u64; 2],
    late: u64,
    unexpected: u64,
    payload: Vec<u8>,
}

impl Bystander {
    fn new(relay: bool) -> Self {
        Self {
            reply_type: if relay { b"message" } else { b"publish" },
            phase: None,
            seq: 0,
            in_flight: None,
            abandoned: None,
            rtt: [Histogram::new(), Histogram::new()],
            open_at_end: [0; 2],
            late: 0,
            unexpected: 0,
            payload: Vec::with_capacity(64),
        }
    }

    /// Begins `phase`; returns the first message to send at `now`.
    fn start(&mut self, phase: usize, now: u64) -> &[u8] {
        self.phase = Some(phase);
        self.next(now)
    }

    /// Ends the current phase at `now`.
    fn end(&mut self, now: u64) {
        if let Some(m) = self.in_flight.take() {
            self.rtt[m.phase].record(now.saturating_sub(m.sent));
            self.open_at_end[m.phase] += 1;
            self.abandoned = Some(m.seq);
        }
        self.phase = None;
    }

    /// A text message arrived at `now`; returns the next message, if one is due.
    fn on_reply(&mut self, head: &[u8], received: u64, now: u64) -> Option<&[u8]> {
        let seq = scan::has_type(head, self.reply_type)
            .then(|| scan::uint(head, b"\"data\""))
            .flatten();
        match (seq, self.in_flight) {
            (Some(s), Some(m)) if s == m.seq => {
                self.rtt[m.phase].record(received.saturating_sub(m.sent));
                self.in_flight = None;
                return self.phase.map(|_| self.next(now));
            }
            (Some(s), _) if Some(s) == self.abandoned => self.late += 1,
            _ => self.unexpected += 1,
        }
        None
    }

    fn next(&mut self, now: u64) -> &[u8] {
        self.seq += 1;
        self.in_flight = Some(InFlight {
            seq: self.seq,
            sent: now,
            phase: self.phase.unwrap_or(0),
        });
        self.payload.clear();
        self.payload.extend_from_slice(
            format!(
                r#"{{"type":"publish","topic":"fair/bystander","data":{}}}"#,
                self.seq
            )
            .as_bytes(),
        );
        &self.payload
    }
}

struct Fairness {
    clock: Clock,
    relay: bool,
    /// The bystander's subscription was acknowledged (always, without `--relay`).
    ready: bool,
    by: Bystander,
    flood_received: u64,
    relay_errors: u64,
}

impl App for Fairness {
    fn on_open(&mut self, id: usize, wr: &mut Writer, _: u64) {
        if id == BYSTANDER && self.relay {
            wr.push_frame(op::TEXT, SUBSCRIBE);
        }
    }

    fn on_message(&mut self, id: usize, wr: &mut Writer, now: u64, _: bool, head: &[u8], _: u64) {
        let error = self.relay && scan::has_type(head, b"error");
        if error {
            if self.relay_errors == 0 {
                let text = String::from_utf8_lossy(head);
                eprintln!("load: [{id}] the relay answered an error: {text}");
            }
            self.relay_errors += 1;
        }
        if id != BYSTANDER {
            self.flood_received += 1;
        } else if !self.ready {
            self.ready = scan::has_type(head, b"ack");
            self.by.unexpected += u64::from(!self.ready && !error);
        } else if !error {
            // The send instant is read afresh: events handled earlier in this turn are not
            // the bystander's wait.
            if let Some(msg) = self.by.on_reply(head, now, self.clock.now()) {
                wr.push_frame(op::TEXT, msg);
            }
        }
    }
}

/// Runs the mode; returns the JSON line and the error count.
///
/// # Errors
/// When the bystander or every flooder failed to open, the relay did not acknowledge the
/// subscription, or `epoll` fails.
pub fn run(run: &Run, cfg: &Config) -> Result<(String, u64), String> {
    let io = |e: std::io::Error| format!("poll: {e}");
    let n = 1 + cfg.flooders;
    let mut fleet = Fleet::new(run.plan(16 << 10), n, run.clock).map_err(io)?;
    let mut app = Fairness {
        clock: run.clock,
        relay: cfg.relay,
        ready: !cfg.relay,
        by: Bystander::new(cfg.relay),
        flood_received: 0,
        relay_errors: 0,
    };
    fleet.open_all(n, &mut app).map_err(io)?;
    if !fleet.core.conns[BYSTANDER].is_open() {
        return Err("the bystander connection could not be opened".into());
    }
    let flooders: Vec<usize> = (1..n).filter(|&i| fleet.core.conns[i].is_open()).collect();
    if flooders.is_empty() {
        return Err("no flooder connection could be opened".into());
    }
    let deadline = run.clock.now() + nanos(run.handshake_timeout);
    fleet
        .run_until(deadline, &mut app, |_, a| a.ready)
        .map_err(io)?;
    if !app.ready {
        return Err("the bystander's subscription was not acknowledged \
                    (is this server speaking the relay protocol?)"
            .into());
    }
    if cfg.flood == Flood::Ping {
        for &id in &flooders {
            fleet.stop_reading(id).map_err(io)?;
        }
    }

    eprintln!(
        "load: bystander alone for {:.1} s",
        cfg.baseline.as_secs_f64()
    );
    let start = run.mark();
    time_phase(run, &mut fleet, &mut app, 0, start.t + nanos(cfg.baseline)).map_err(io)?;
    let rss_before_flood = run.server_rss_kib();

    eprintln!(
        "load: {} {} flooders beside it for {:.1} s",
        flooders.len(),
        cfg.flood.name(),
        cfg.duration.as_secs_f64()
    );
    let flood_start = run.mark();
    for &id in &flooders {
        let wr = &mut fleet.core.conns[id].wr;
        let frame = cfg.flood.frame(wr.mask());
        // One write can carry a batch of up to 64 KiB of back-to-back copies.
        wr.set_repeat(&frame, (64 << 10) / frame.len());
        wr.send_repeat(ENDLESS);
        fleet.flush(id);
    }
    let end = flood_start.t + nanos(cfg.duration);
    time_phase(run, &mut fleet, &mut app, 1, end).map_err(io)?;
    let flood_stop = run.mark();
    let rss = run.server_rss_kib();
    let mut flood_msgs = 0;
    let mut cut = 0;
    for &id in &flooders {
        let c = &mut fleet.core.conns[id];
        flood_msgs += c.wr.repeats_sent();
        cut += u64::from(!c.is_open());
        c.wr.stop_repeat();
    }
    if cfg.flood == Flood::Ping {
        for &id in &flooders {
            fleet.abort(id);
        }
    }
    run.close(&mut fleet).map_err(io)?;

    let [alone, flooded] = &app.by.rtt;
    let p99_us = |h: &Histogram| h.quantile(0.99).map(|ns| ns as f64 / 1e3);
    let usage = run.usage(&flood_start, &flood_stop);
    let baseline = run.usage(&start, &flood_start);
    let pct = |u: &crate::Usage| {
        u.server_us
            .filter(|_| u.secs > 0.0)
            .map(|us| us / 1e4 / u.secs)
    };
    let extra = [
        ("unexpected_message", app.by.unexpected),
        ("relay_error", app.relay_errors),
    ];
    let o = run
        .header("fairness")
        .s("protocol", if cfg.relay { "relay" } else { "echo" })
        .s("flood", cfg.flood.name())
        .u("flooders", cfg.flooders as u64)
        .u("flooders_open", flooders.len() as u64)
        .f("baseline_s", Some(baseline.secs), 3)
        .f("duration_s", Some(usage.secs), 3)
        .o("bystander_baseline_us", percentiles_us(alone))
        .o("bystander_flood_us", percentiles_us(flooded))
        .f(
            "p99_increase_us",
            p99_us(flooded).zip(p99_us(alone)).map(|(f, a)| f - a),
            1,
        )
        .u(
            "bystander_open_at_phase_end",
            app.by.open_at_end.iter().sum(),
        )
        .u("bystander_late_replies", app.by.late)
        .u("flood_msgs", flood_msgs)
        .f(
            "flood_msgs_per_s",
            (usage.secs > 0.0).then(|| flood_msgs as f64 / usage.secs),
            0,
        )
        .u("flood_received", app.flood_received)
        .u("flooders_cut", cut)
        .f("baseline_server_cpu_pct", pct(&baseline), 1);
    let o = match rss_before_flood {
        Some(kib) => o.u("server_rss_kib_before_flood", kib),
        None => o,
    };
    let o = run.cpu_fields(o, &usage, "flood_msg", flood_msgs);
    Ok(run.finish(o, rss, &fleet, &extra))
}

/// Times the bystander in `phase` until `end` (ns): its first message now, then one round trip
/// after another.
fn time_phase(
    run: &Run,
    fleet: &mut Fleet,
    app: &mut Fairness,
    phase: usize,
    end: u64,
) -> std::io::Result<()> {
    let first = app.by.start(phase, run.clock.now());
    fleet.core.conns[BYSTANDER].wr.push_frame(op::TEXT, first);
    fleet.flush(BYSTANDER);
    fleet.run_until(end, app, |_, _| false)?;
    app.by.end(run.clock.now());
    Ok(())
}

fn nanos(d: Duration) -> u64 {
    d.as_nanos() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reply a server gives to the bystander's last message.
    fn reply(by: &Bystander, relay: bool) -> Vec<u8> {
        if relay {
            let seq = scan::uint(&by.payload, b"\"data\"").unwrap();
            format!(r#"{{"type":"message","topic":"fair/bystander","data":{seq}}}"#).into_bytes()
        } else {
            by.payload.clone() // an echo
        }
    }

    #[test]
    fn bystander_message_is_the_relay_publish_of_its_sequence_number() {
        let mut by = Bystander::new(true);
        let first = by.start(0, 0).to_vec();
        let v: serde_json::Value = serde_json::from_slice(&first).unwrap();
        assert_eq!(v["type"], "publish");
        assert_eq!(v["topic"], "fair/bystander");
        assert_eq!(v["data"], 1);
        let r = reply(&by, true);
        let second = by.on_reply(&r, 10, 11).unwrap().to_vec();
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&second).unwrap()["data"],
            2
        );
        let v: serde_json::Value = serde_json::from_slice(SUBSCRIBE).unwrap();
        assert_eq!(v["topic"], "fair/bystander");
        let v: serde_json::Value = serde_json::from_slice(FLOOD_PUBLISH).unwrap();
        assert_eq!(
            (&v["type"], &v["topic"]),
            (&"publish".into(), &"fair/flood".into())
        );
    }

    #[test]
    fn round_trips_are_timed_by_phase_one_in_flight() {
        for relay in [false, true] {
            let mut by = Bystander::new(relay);
            by.start(0, 100);
            let r = reply(&by, relay);
            assert!(by.on_reply(&r, 150, 160).is_some()); // 50 ns, next sent at 160
            let r = reply(&by, relay);
            assert!(by.on_reply(&r, 190, 200).is_some()); // 30 ns
            by.end(1_200); // the one sent at 200 is still open: counted as 1000 ns
            let late = reply(&by, relay);
            assert!(by.on_reply(&late, 1_300, 1_300).is_none());
            by.start(1, 2_000);
            let r = reply(&by, relay);
            assert!(by.on_reply(&r, 2_500, 2_600).is_some()); // 500 ns in the flood
            assert_eq!(by.rtt[0].count(), 3);
            assert_eq!(by.rtt[0].max(), 1_000);
            assert_eq!(by.rtt[0].quantile(0.0), Some(30));
            assert_eq!((by.rtt[1].count(), by.rtt[1].max()), (1, 500));
            assert_eq!((by.open_at_end, by.late, by.unexpected), ([1, 0], 1, 0));
        }
    }

    #[test]
    fn wrong_replies_are_counted_and_send_nothing() {
        let mut by = Bystander::new(true);
        by.start(0, 0);
        let echo_of_publish = by.payload.clone(); // a publish, not a delivery
        assert!(by.on_reply(&echo_of_publish, 5, 5).is_none());
        let other = br#"{"type":"message","topic":"fair/bystander","data":99}"#;
        assert!(by.on_reply(other, 5, 5).is_none());
        assert_eq!(by.unexpected, 2);
        assert_eq!(by.rtt[0].count(), 0);
        let r = reply(&by, true); // the right one still completes the round trip
        assert!(by.on_reply(&r, 7, 8).is_some());
        assert_eq!(by.rtt[0].count(), 1);
        by.end(9);
        let r = reply(&by, true);
        assert!(by.on_reply(&r, 10, 10).is_none()); // between phases nothing is sent
    }

    #[test]
    fn flood_kinds_fit_the_protocol() {
        assert_eq!(Flood::resolve(None, true), Ok(Flood::Publish));
        assert_eq!(Flood::resolve(None, false), Ok(Flood::Echo));
        assert_eq!(Flood::resolve(Some(Flood::Ping), true), Ok(Flood::Ping));
        assert_eq!(Flood::resolve(Some(Flood::Ping), false), Ok(Flood::Ping));
        assert!(Flood::resolve(Some(Flood::Publish), false).is_err());
        assert!(Flood::resolve(Some(Flood::Echo), true).is_err());
        assert_eq!(Flood::parse("ping"), Ok(Flood::Ping));
        assert!(Flood::parse("pings").is_err());
    }

    #[test]
    fn flood_frames_are_whole_masked_frames_of_their_kind() {
        let key = [0x5A, 0x11, 0xC3, 0x07];
        for (kind, opcode, len) in [
            (Flood::Publish, op::TEXT, FLOOD_PUBLISH.len()),
            (Flood::Echo, op::TEXT, 64),
            (Flood::Ping, op::PING, 16),
        ] {
            let frame = kind.frame(key);
            assert_eq!(frame[0], 0x80 | opcode, "{kind:?}");
            assert_eq!(usize::from(frame[1] & 0x7F), len, "{kind:?}");
            assert_eq!(frame[1] & 0x80, 0x80, "{kind:?} is masked");
            assert_eq!(frame.len(), 2 + 4 + len, "{kind:?}");
        }
    }
}

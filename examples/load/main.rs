//! `load`: a load generator for any `ws://` or `wss://` server on this machine (emberws,
//! tokio-tungstenite, Node's `ws`, …).
//!
//! One thread, one mio poll loop driving every client connection. Frames are built and masked
//! once per connection (one mask key each) and resent as they are; server frames are parsed in
//! place in a fixed per-connection buffer; the steady state allocates nothing per message (over
//! `wss://`, rustls's buffered connection keeps one `Vec` per TLS record it queues: see `tls`).
//!
//! ```text
//! cargo run --release --example load -- echo --url ws://127.0.0.1:9001/ --connections 100 \
//!     --depth 1 --size 64 --warmup 2 --duration 5 --server-pid $(pgrep -n emberws)
//! cargo run --release --example load -- connect --url wss://localhost:9443/ --ca cert.pem
//! ```
//!
//! Every run ends with one JSON line on stdout; progress goes to stderr. Only loopback targets
//! are accepted. Module map: `target` (URL, sources) → `fleet` (the loop: open, read, write,
//! close) over `conn` (one socket: `reader` + `Writer`, and for `wss://` a rustls client
//! connection between them and the socket, configured and driven by `tls`), `frame` and
//! `handshake` (wire format), `hist` (percentiles), `procfs` (server CPU and memory), `json`
//! (the report), and one module per mode: `echo`, `fanout`, `connect`, `fairness`, `soak` (with
//! `sequence`, its loss/duplicate/order bookkeeping, and `record`, its CSV and SVG); each works
//! over `ws://` and `wss://` alike.

mod conn;
mod connect;
mod echo;
mod fairness;
mod fanout;
mod fleet;
mod frame;
mod handshake;
mod hist;
mod json;
mod procfs;
mod reader;
mod record;
mod scan;
mod sequence;
mod soak;
mod target;
mod tls;

use std::net::IpAddr;
use std::process::ExitCode;
use std::time::Duration;

use fleet::{Clock, OpenPlan};
use hist::Histogram;
use json::Obj;
use procfs::{Cpu, Sample};
use target::Target;

const USAGE: &str = "\
load — a WebSocket load generator (one thread, one mio loop; loopback targets only)

USAGE:
    cargo run --release --example load -- MODE [OPTIONS]

MODES:
    echo      C connections, P messages in flight each; round-trip time and throughput
    fanout    N subscribers and one publisher at R messages/s; delivery latency and losses
    connect   open N connections as fast as possible, hold them, close them cleanly
    fairness  one client's round trips, alone and then beside F flooding clients
    soak      a bounded churn against the relay for N minutes, recorded every second (CSV, SVG)

COMMON OPTIONS:
    --url URL                  ws://host[:port][/path] or wss://…; host 127.x.x.x, localhost
                               or [::1] [default: ws://127.0.0.1:9001/]
    --ca PEM                   wss://: trust the certificates in PEM (a CA, or the server's
                               self-signed certificate); the URL's host must be in it
    --insecure                 wss://: accept any certificate (handshake signatures are still
                               checked): for benchmarks. wss:// needs --ca or --insecure
    --server-pid PID           report the server's CPU time (and memory) from /proc/PID
    --sources A,B,...          bind connections round-robin to these 127.x.x.x addresses
    --source-count K           same, with 127.0.0.1 … 127.0.0.K
    --in-flight N              handshakes in progress at most [default: 256]
    --rate-limit N             new connections per second at most; 0 = no limit [default: 0]
    --handshake-timeout SECS   [default: 10]
    --close-timeout SECS       [default: 5]

echo:     --connections C [100] --depth P [1] --size S [64] --binary
          --warmup SECS [2] --duration SECS [5] --grace SECS [2]
fanout:   --subscribers N [100] --rate R [1000] --duration SECS [5] --topic T [bench]
          --protocol relay|broadcast [relay] --size S [0: smallest] --grace SECS [2]
          --publish-url URL (the publisher on another server, e.g. a second relay on the
          same Redis: cross-instance latency) [default: --url]
          --split-url URL (every second subscriber on another server: fan-out split over
          two relays on one Redis)
connect:  --connections N [1000] --hold SECS [5]
          (handshakes_per_s: TCP connect + TLS handshake, full, no resumption + upgrade)
fairness: --relay (relay server; else echo) --baseline SECS [3] --duration SECS [5]
          --flooders F [1] --flood publish|echo|ping [publish with --relay, else echo]
          (ping: sent as fast as the socket takes, and never read)
soak:     --minutes N [30] (fractions allowed) --connections C [1000] --churn PCT [5]
          --topics T [100] --rate R [1000] --csv FILE [target/soak.csv]
          --svg FILE [target/soak.svg]; needs --server-pid (the relay's). C subscribers, PCT%
          of them closed cleanly and replaced each second, 3 topics each of soak/0..T-1 (5%/s
          swap one); 4 publishers, R/s in all, a sequence per topic, every 8th retained.
          Checks: nothing lost while subscribed, no duplicates, order per topic. One CSV row
          a second: server RSS, connections (/healthz), CPU %, the second's counts. Exit 1
          also when RSS at the end exceeds RSS after the warm-up (1 min, or 10%) by > 5%,
          less its steps where the peak concurrency rose > 2% after the warm-up

Exit status: 0 when the run had no errors, 1 when it counted some, 2 on bad usage.
";

/// Every flag, parsed; each mode takes the ones it knows.
struct Flags {
    mode: String,
    url: String,
    ca: Option<String>,
    insecure: bool,
    server_pid: Option<u32>,
    sources: Vec<IpAddr>,
    in_flight: usize,
    rate_limit: f64,
    handshake_timeout: Duration,
    close_timeout: Duration,
    connections: Option<usize>,
    depth: usize,
    size: Option<usize>,
    binary: bool,
    warmup: Duration,
    duration: Duration,
    grace: Duration,
    subscribers: usize,
    rate: f64,
    topic: String,
    broadcast: bool,
    publish_url: Option<String>,
    split_url: Option<String>,
    hold: Duration,
    relay: bool,
    flood: Option<fairness::Flood>,
    flooders: usize,
    baseline: Duration,
    minutes: f64,
    churn: f64,
    topics: usize,
    csv: String,
    svg: String,
}

const COMMON: &[&str] = &[
    "url",
    "ca",
    "insecure",
    "server-pid",
    "sources",
    "source-count",
    "in-flight",
    "rate-limit",
    "handshake-timeout",
    "close-timeout",
];

/// The flags of each mode beyond the common ones.
fn mode_flags(mode: &str) -> Option<&'static [&'static str]> {
    Some(match mode {
        "echo" => &[
            "connections",
            "depth",
            "size",
            "binary",
            "warmup",
            "duration",
            "grace",
        ],
        "fanout" => &[
            "subscribers",
            "rate",
            "duration",
            "topic",
            "protocol",
            "size",
            "grace",
            "publish-url",
            "split-url",
        ],
        "connect" => &["connections", "hold"],
        "fairness" => &["relay", "flood", "flooders", "baseline", "duration"],
        "soak" => &[
            "minutes",
            "connections",
            "churn",
            "topics",
            "rate",
            "csv",
            "svg",
        ],
        _ => return None,
    })
}

fn parse_flags() -> Result<Option<Flags>, String> {
    use lexopt::prelude::*;
    let mut p = lexopt::Parser::from_env();
    let mut f = Flags {
        mode: String::new(),
        url: "ws://127.0.0.1:9001/".into(),
        ca: None,
        insecure: false,
        server_pid: None,
        sources: Vec::new(),
        in_flight: 256,
        rate_limit: 0.0,
        handshake_timeout: Duration::from_secs(10),
        close_timeout: Duration::from_secs(5),
        connections: None,
        depth: 1,
        size: None,
        binary: false,
        warmup: Duration::from_secs(2),
        duration: Duration::from_secs(5),
        grace: Duration::from_secs(2),
        subscribers: 100,
        rate: 1000.0,
        topic: "bench".into(),
        broadcast: false,
        publish_url: None,
        split_url: None,
        hold: Duration::from_secs(5),
        relay: false,
        flood: None,
        flooders: 1,
        baseline: Duration::from_secs(3),
        minutes: 30.0,
        churn: 5.0,
        topics: 100,
        csv: "target/soak.csv".into(),
        svg: "target/soak.svg".into(),
    };
    while let Some(arg) = p.next().map_err(|e| e.to_string())? {
        let name = match &arg {
            Short('h') | Long("help") => return Ok(None),
            Value(v) if f.mode.is_empty() => {
                f.mode = v.to_string_lossy().into_owned();
                if mode_flags(&f.mode).is_none() {
                    return Err(format!("unknown mode '{}'", f.mode));
                }
                continue;
            }
            Value(v) => return Err(format!("unexpected argument '{}'", v.to_string_lossy())),
            Long(name) => *name,
            Short(_) => return Err(arg.unexpected().to_string()),
        };
        let known = COMMON
            .iter()
            .chain(mode_flags(&f.mode).unwrap_or(&[]))
            .find(|k| **k == name);
        let Some(&flag) = known else {
            return Err(if f.mode.is_empty() {
                format!("--{name}: give the mode first (echo, fanout, connect, fairness or soak)")
            } else {
                format!("--{name} is not an option of {}", f.mode)
            });
        };
        if flag == "binary" || flag == "relay" || flag == "insecure" {
            f.binary |= flag == "binary";
            f.relay |= flag == "relay";
            f.insecure |= flag == "insecure";
            continue;
        }
        let v = p.value().map_err(|_| format!("--{flag} needs a value"))?;
        let v = v
            .into_string()
            .map_err(|_| format!("--{flag}: not UTF-8"))?;
        match flag {
            "url" => f.url = v,
            "publish-url" => f.publish_url = Some(v),
            "split-url" => f.split_url = Some(v),
            "ca" => f.ca = Some(v),
            "server-pid" => f.server_pid = Some(num(&v, flag, 1, u64::from(u32::MAX))? as u32),
            "sources" => f.sources = target::parse_sources(&v)?,
            "source-count" => f.sources = target::counted_sources(num(&v, flag, 1, 254)? as usize)?,
            "in-flight" => f.in_flight = num(&v, flag, 1, 65_536)? as usize,
            "rate-limit" => f.rate_limit = num(&v, flag, 0, 10_000_000)? as f64,
            "handshake-timeout" => f.handshake_timeout = secs(&v, flag)?,
            "close-timeout" => f.close_timeout = secs(&v, flag)?,
            "connections" => f.connections = Some(num(&v, flag, 1, 1_000_000)? as usize),
            "depth" => f.depth = num(&v, flag, 1, 100_000)? as usize,
            "size" => f.size = Some(num(&v, flag, 0, 64 << 20)? as usize),
            "warmup" => f.warmup = secs(&v, flag)?,
            "duration" => f.duration = secs(&v, flag)?,
            "grace" => f.grace = secs(&v, flag)?,
            "subscribers" => f.subscribers = num(&v, flag, 1, 1_000_000)? as usize,
            "rate" => f.rate = num(&v, flag, 1, 10_000_000)? as f64,
            "hold" => f.hold = secs(&v, flag)?,
            "flood" => f.flood = Some(fairness::Flood::parse(&v)?),
            "flooders" => f.flooders = num(&v, flag, 1, 10_000)? as usize,
            "baseline" => f.baseline = secs(&v, flag)?,
            "minutes" => f.minutes = real(&v, flag, 0.01, 24.0 * 60.0)?,
            "churn" => f.churn = real(&v, flag, 0.0, 100.0)?,
            "topics" => f.topics = num(&v, flag, 1, 100_000)? as usize,
            "csv" => f.csv = v,
            "svg" => f.svg = v,
            "topic" => {
                let ok = !v.is_empty()
                    && v.len() <= 128
                    && v.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"_-.:/".contains(&b));
                if !ok {
                    return Err(format!("--topic: '{v}' must be 1–128 of [A-Za-z0-9_-.:/]"));
                }
                f.topic = v;
            }
            "protocol" => {
                f.broadcast = match v.as_str() {
                    "relay" => false,
                    "broadcast" => true,
                    _ => return Err(format!("--protocol: '{v}' is not relay or broadcast")),
                }
            }
            _ => unreachable!("every known flag is handled: {flag}"),
        }
    }
    if f.mode.is_empty() {
        return Err("no mode given (echo, fanout, connect, fairness or soak)".into());
    }
    Ok(Some(f))
}

fn num(v: &str, flag: &str, min: u64, max: u64) -> Result<u64, String> {
    match v.parse::<u64>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(format!(
            "--{flag}: '{v}' is not a whole number in {min}..={max}"
        )),
    }
}

/// A number in `min..=max`, fractions allowed.
fn real(v: &str, flag: &str, min: f64, max: f64) -> Result<f64, String> {
    match v.parse::<f64>() {
        Ok(x) if (min..=max).contains(&x) => Ok(x),
        _ => Err(format!("--{flag}: '{v}' is not a number in {min}..={max}")),
    }
}

/// Seconds, fractions allowed, at most an hour: every run must end by itself.
fn secs(v: &str, flag: &str) -> Result<Duration, String> {
    match v.parse::<f64>() {
        Ok(s) if (0.0..=3600.0).contains(&s) => Ok(Duration::from_secs_f64(s)),
        _ => Err(format!(
            "--{flag}: '{v}' is not a number of seconds in 0..=3600"
        )),
    }
}

/// What every mode shares: where to connect, how, and whose CPU to watch.
pub struct Run {
    pub url: String,
    pub target: Target,
    /// `wss://`: the client configuration.
    pub tls: Option<tls::Plan>,
    pub sources: Vec<IpAddr>,
    pub in_flight: usize,
    pub rate_limit: f64,
    pub handshake_timeout: Duration,
    pub close_timeout: Duration,
    pub server: Option<Cpu>,
    pub me: Cpu,
    pub clock: Clock,
    ticks_assumed: bool,
}

/// CPU samples at one instant.
pub struct Mark {
    pub t: u64,
    server: Option<Sample>,
    me: Option<Sample>,
}

/// CPU use between two marks.
pub struct Usage {
    pub secs: f64,
    /// Server CPU in µs, if a server PID was given and readable.
    pub server_us: Option<f64>,
    pub me_us: Option<f64>,
    /// Run-queue wait in ns: time each process was ready to run but had no CPU.
    pub server_wait_ns: Option<u64>,
    pub me_wait_ns: Option<u64>,
}

impl Run {
    pub fn plan(&self, read_capacity: usize) -> OpenPlan {
        OpenPlan {
            target: self.target.clone(),
            sources: self.sources.clone(),
            in_flight: self.in_flight,
            rate_limit: self.rate_limit,
            handshake_timeout: self.handshake_timeout,
            read_capacity,
            tls: self.tls.clone(),
            redirect: None,
            split: None,
        }
    }

    pub fn mark(&self) -> Mark {
        Mark {
            t: self.clock.now(),
            server: self.server.as_ref().and_then(Cpu::sample),
            me: self.me.sample(),
        }
    }

    pub fn usage(&self, a: &Mark, b: &Mark) -> Usage {
        let both = |x: Option<Sample>, y: Option<Sample>| x.zip(y);
        Usage {
            secs: b.t.saturating_sub(a.t) as f64 / 1e9,
            server_us: self
                .server
                .as_ref()
                .and_then(|c| both(a.server, b.server).map(|(x, y)| c.micros(x, y))),
            me_us: both(a.me, b.me).map(|(x, y)| self.me.micros(x, y)),
            server_wait_ns: both(a.server, b.server).and_then(|(x, y)| Cpu::runq_wait_ns(x, y)),
            me_wait_ns: both(a.me, b.me).and_then(|(x, y)| Cpu::runq_wait_ns(x, y)),
        }
    }

    pub fn server_rss_kib(&self) -> Option<u64> {
        self.server.as_ref().and_then(Cpu::rss_kib)
    }

    /// The fields every report starts with (`tls_verify`: `ca` or `insecure`, for `wss://`).
    pub fn header(&self, mode: &str) -> Obj {
        let o = Obj::new().s("mode", mode).s("url", &self.url);
        match &self.tls {
            Some(plan) => o.s("tls_verify", plan.verify.name()),
            None => o,
        }
    }

    /// `wss://`: what the first connection negotiated (`TLSv1_3 TLS13_AES_256_GCM_SHA384
    /// X25519`), or `?` if none opened.
    pub fn tls_fields(&self, o: Obj, fleet: &fleet::Fleet) -> Obj {
        if self.tls.is_none() {
            return o;
        }
        o.s("tls", fleet.core.stats.tls_params.as_deref().unwrap_or("?"))
    }

    /// CPU fields: server and client µs per `unit` (`per` of them; the client's says how
    /// close the generator itself came to limiting the rate, e.g. per TLS handshake), both
    /// processes' use of a core, and the share of the window each spent waiting for a CPU
    /// (high: the machine was busy with other work, and the figures understate both programs).
    pub fn cpu_fields(&self, o: Obj, u: &Usage, unit: &str, per: u64) -> Obj {
        let pct = |us: Option<f64>| us.filter(|_| u.secs > 0.0).map(|us| us / 1e4 / u.secs);
        let wait_pct = |ns: Option<u64>| pct(ns.map(|ns| ns as f64 / 1e3));
        let per_unit = |us: Option<f64>| us.filter(|_| per > 0).map(|us| us / per as f64);
        o.f(
            &format!("server_cpu_us_per_{unit}"),
            per_unit(u.server_us),
            2,
        )
        .f(&format!("client_cpu_us_per_{unit}"), per_unit(u.me_us), 2)
        .f("server_cpu_pct", pct(u.server_us), 1)
        .f("client_cpu_pct", pct(u.me_us), 1)
        .f("server_runq_wait_pct", wait_pct(u.server_wait_ns), 1)
        .f("client_runq_wait_pct", wait_pct(u.me_wait_ns), 1)
        .b("clk_tck_assumed", self.ticks_assumed)
    }

    /// The end of every report: the server's RSS, clean closes, and the errors (the fleet's
    /// and the mode's own `extra` counts). Returns the JSON line and the error total.
    pub fn finish(
        &self,
        o: Obj,
        rss_kib: Option<u64>,
        fleet: &fleet::Fleet,
        extra: &[(&str, u64)],
    ) -> (String, u64) {
        let total = fleet.core.errors.total() + extra.iter().map(|&(_, n)| n).sum::<u64>();
        let o = match rss_kib {
            Some(kib) => o.u("server_rss_kib", kib),
            None => o,
        };
        let o = self
            .tls_fields(o, fleet)
            .u("clean_closes", fleet.core.stats.clean_closes)
            .o("errors", fleet.core.errors.json(extra));
        (o.finish(), total)
    }

    /// Closes every connection cleanly, telling how it went.
    pub fn close(&self, fleet: &mut fleet::Fleet) -> std::io::Result<()> {
        eprintln!("load: closing {} connections", fleet.core.open_count());
        fleet.close_all(self.close_timeout, &mut fleet::Ignore)
    }
}

/// p50/p99/p99.9/max of a nanosecond histogram, in µs.
pub fn percentiles_us(h: &Histogram) -> Obj {
    let us = |q: f64| h.quantile(q).map(|ns| ns as f64 / 1e3);
    Obj::new()
        .u("count", h.count())
        .f("p50", us(0.5), 1)
        .f("p99", us(0.99), 1)
        .f("p999", us(0.999), 1)
        .f("max", (h.count() > 0).then(|| h.max() as f64 / 1e3), 1)
}

/// Raises the soft file-descriptor limit to the hard one; fails if `needed` still exceeds it.
fn raise_fd_limit(needed: usize) -> Result<(), String> {
    let limit = rlimit::increase_nofile_limit(u64::MAX)
        .map_err(|e| format!("cannot raise RLIMIT_NOFILE: {e}"))?;
    // Headroom: the poll instance, stdio, /proc reads.
    if needed as u64 + 16 > limit {
        return Err(format!(
            "{needed} connections need {} file descriptors, but RLIMIT_NOFILE allows {limit} \
             (raise the hard limit, e.g. `ulimit -Hn`, as root)",
            needed + 16
        ));
    }
    Ok(())
}

fn main() -> ExitCode {
    let flags = match parse_flags() {
        Ok(Some(f)) => f,
        Ok(None) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(msg) => {
            eprintln!("load: {msg}\n\nRun with --help for the options.");
            return ExitCode::from(2);
        }
    };
    if flags.mode == "soak" && flags.server_pid.is_none() {
        eprintln!("load: soak needs --server-pid (the relay's RSS and CPU are what it records)");
        return ExitCode::from(2);
    }
    let target = match Target::parse(&flags.url) {
        Ok(t) => t,
        Err(msg) => {
            eprintln!("load: {msg}");
            return ExitCode::from(2);
        }
    };
    let publish_target = match flags.publish_url.as_deref().map(Target::parse).transpose() {
        Ok(Some(t)) if t.tls != target.tls => {
            eprintln!("load: --publish-url must have the scheme of --url");
            return ExitCode::from(2);
        }
        Ok(t) => t,
        Err(msg) => {
            eprintln!("load: --publish-url: {msg}");
            return ExitCode::from(2);
        }
    };
    let split_target = match flags.split_url.as_deref().map(Target::parse).transpose() {
        Ok(Some(t)) if t.tls != target.tls => {
            eprintln!("load: --split-url must have the scheme of --url");
            return ExitCode::from(2);
        }
        Ok(t) => t,
        Err(msg) => {
            eprintln!("load: --split-url: {msg}");
            return ExitCode::from(2);
        }
    };
    if !flags.sources.is_empty() && !target.addr.is_ipv4() {
        eprintln!("load: --sources/--source-count need an IPv4 target (127.x.x.x or localhost)");
        return ExitCode::from(2);
    }
    let tls = match tls::Verify::from_flags(target.tls, flags.ca.as_deref(), flags.insecure)
        .and_then(|v| v.map(|v| tls::Plan::new(v, &target.name)).transpose())
    {
        Ok(tls) => tls,
        Err(msg) => {
            eprintln!("load: {msg}");
            return ExitCode::from(2);
        }
    };
    let (ticks, ticks_assumed) = procfs::clock_ticks();
    let run = Run {
        url: flags.url.clone(),
        target,
        tls,
        sources: flags.sources.clone(),
        in_flight: flags.in_flight,
        rate_limit: flags.rate_limit,
        handshake_timeout: flags.handshake_timeout,
        close_timeout: flags.close_timeout,
        server: flags
            .server_pid
            .map(|pid| Cpu::new(&pid.to_string(), ticks)),
        me: Cpu::new("self", ticks),
        clock: Clock::new(),
        ticks_assumed,
    };
    if let (Some(cpu), Some(pid)) = (&run.server, flags.server_pid) {
        if cpu.sample().is_none() {
            eprintln!("load: --server-pid {pid}: /proc/{pid}/stat is not readable");
            return ExitCode::from(2);
        }
    }
    let conns_needed = match flags.mode.as_str() {
        "fanout" => flags.subscribers + 1,
        "echo" => flags.connections.unwrap_or(100),
        "fairness" => flags.flooders + 1,
        "soak" => soak::connections_needed(flags.connections.unwrap_or(1000), flags.churn),
        _ => flags.connections.unwrap_or(1000),
    };
    if let Err(msg) = raise_fd_limit(conns_needed) {
        eprintln!("load: {msg}");
        return ExitCode::from(2);
    }
    let result = match flags.mode.as_str() {
        "echo" => echo::run(
            &run,
            &echo::Config {
                connections: flags.connections.unwrap_or(100),
                depth: flags.depth,
                size: flags.size.unwrap_or(64),
                binary: flags.binary,
                warmup: flags.warmup,
                duration: flags.duration,
                grace: flags.grace,
            },
        ),
        "fanout" => fanout::run(
            &run,
            &fanout::Config {
                subscribers: flags.subscribers,
                rate: flags.rate,
                duration: flags.duration,
                topic: flags.topic.clone(),
                broadcast: flags.broadcast,
                size: flags.size.unwrap_or(0),
                grace: flags.grace,
                publish_target,
                split_target,
            },
        ),
        "fairness" => match fairness::Flood::resolve(flags.flood, flags.relay) {
            Ok(flood) => fairness::run(
                &run,
                &fairness::Config {
                    relay: flags.relay,
                    flood,
                    flooders: flags.flooders,
                    baseline: flags.baseline,
                    duration: flags.duration,
                },
            ),
            Err(msg) => {
                eprintln!("load: {msg}\n\nRun with --help for the options.");
                return ExitCode::from(2);
            }
        },
        "soak" => soak::run(
            &run,
            &soak::Config {
                duration: Duration::from_secs_f64(flags.minutes * 60.0),
                connections: flags.connections.unwrap_or(1000),
                churn_pct: flags.churn,
                topics: flags.topics,
                rate: flags.rate,
                csv: flags.csv.clone().into(),
                svg: flags.svg.clone().into(),
            },
        ),
        _ => connect::run(
            &run,
            &connect::Config {
                connections: flags.connections.unwrap_or(1000),
                hold: flags.hold,
            },
        ),
    };
    match result {
        Ok((line, errors)) => {
            println!("{line}");
            if errors == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(msg) => {
            eprintln!("load: {msg}");
            println!("{}", run.header(&flags.mode).s("error", &msg).finish());
            ExitCode::FAILURE
        }
    }
}

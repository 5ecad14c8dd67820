//! The relay's own figures under `$SYS/`: published every `sys_interval` and once at start,
//! retained, so a new subscriber of `$SYS/#` has them at once.
//!
//! | topic | data |
//! | --- | --- |
//! | `$SYS/version` | the crate version, a string |
//! | `$SYS/uptime` | whole seconds since start |
//! | `$SYS/connections` | connections open now |
//! | `$SYS/messages/in`, `$SYS/messages/out` | messages per second over the last interval |
//! | `$SYS/bytes/in`, `$SYS/bytes/out` | bytes per second over the last interval |
//! | `$SYS/dropped` | slow-consumer drops and closes per second over the last interval |
//! | `$SYS/rss` | the process's resident memory, bytes |
//! | `$SYS/load` | `[1 min, 5 min, 15 min]` load averages |
//! | `$SYS/memory/available` | the kernel's estimate of memory available, bytes |
//! | `$SYS/temperature` | the first thermal zone, °C with one decimal |
//!
//! The last four come from `/proc` and `/sys` and are left out where the machine has no such
//! file. Each sample publishes in this order, `$SYS/version` first. The `$SYS` publishes do
//! not count in the figures they report: the messages and bytes they put out (measured
//! from the server's counters around them) are taken out of `messages/out` and `bytes/out`.
//!
//! The parts that decide are pure and take their input: [`Sampler`] is given the counters
//! and the time, each parser the text of its file. [`Sys::turn`], called from the program's
//! loop with the loop's time, reads the files and publishes.

use std::fmt::Write as _;
use std::io::Read as _;
use std::time::{Duration, Instant};

use emberws::{Server, Stats};

use super::Relay;

/// The crate version, the data of `$SYS/version`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Rates are published with this many decimals.
const RATE_DECIMALS: i32 = 3;

/// The counters a rate is made of.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub messages_in: u64,
    pub messages_out: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Slow-consumer drops and closes.
    pub dropped: u64,
}

impl Counters {
    /// The server's counters.
    pub fn of(stats: &Stats) -> Counters {
        Counters {
            messages_in: stats.messages_in,
            messages_out: stats.messages_out,
            bytes_in: stats.bytes_in,
            bytes_out: stats.bytes_out,
            dropped: stats.slow_drops + stats.slow_closes,
        }
    }

    /// Each counter less `own`'s (never below 0).
    pub fn minus(self, own: Counters) -> Counters {
        Counters {
            messages_in: self.messages_in.saturating_sub(own.messages_in),
            messages_out: self.messages_out.saturating_sub(own.messages_out),
            bytes_in: self.bytes_in.saturating_sub(own.bytes_in),
            bytes_out: self.bytes_out.saturating_sub(own.bytes_out),
            dropped: self.dropped.saturating_sub(own.dropped),
        }
    }
}

/// The counters' growth per second over an interval, rounded to 3 decimals.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Rates {
    pub messages_in: f64,
    pub messages_out: f64,
    pub bytes_in: f64,
    pub bytes_out: f64,
    pub dropped: f64,
}

/// Per second from `before` to `after` over `elapsed`: all 0 for no time at all, 0 for a
/// counter that went down.
pub fn rates(before: Counters, after: Counters, elapsed: Duration) -> Rates {
    let secs = elapsed.as_secs_f64();
    let rate = |a: u64, b: u64| {
        if secs <= 0.0 {
            return 0.0;
        }
        let scale = 10f64.powi(RATE_DECIMALS);
        (b.saturating_sub(a) as f64 / secs * scale).round() / scale
    };
    Rates {
        messages_in: rate(before.messages_in, after.messages_in),
        messages_out: rate(before.messages_out, after.messages_out),
        bytes_in: rate(before.bytes_in, after.bytes_in),
        bytes_out: rate(before.bytes_out, after.bytes_out),
        dropped: rate(before.dropped, after.dropped),
    }
}

/// When samples are due, and the counters of the last one.
#[derive(Debug)]
pub struct Sampler {
    interval: Duration,
    next: Instant,
    last: Option<(Instant, Counters)>,
}

impl Sampler {
    /// A sampler whose first sample is due at `now` (`interval` above 0).
    pub fn new(interval: Duration, now: Instant) -> Sampler {
        Sampler {
            interval,
            next: now,
            last: None,
        }
    }

    /// When the next sample is due.
    pub fn next(&self) -> Instant {
        self.next
    }

    /// At `now`, with the counters then: the rates since the last sample when one is due
    /// (all 0 for the first, which has no interval behind it), else `None`. Samples keep
    /// their cadence (due every `interval` from the first); one that comes later than a
    /// whole interval starts the cadence again from `now`.
    pub fn sample(&mut self, now: Instant, counters: Counters) -> Option<Rates> {
        if now < self.next {
            return None;
        }
        let rates = match self.last {
            Some((then, before)) => rates(before, counters, now.saturating_duration_since(then)),
            None => Rates::default(),
        };
        self.last = Some((now, counters));
        self.next += self.interval;
        if self.next <= now {
            self.next = now + self.interval;
        }
        Some(rates)
    }
}

/// What the machine tells about itself; `None` where it has no such file.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Machine {
    /// Resident memory of this process, bytes.
    pub rss: Option<u64>,
    /// Load averages over 1, 5 and 15 minutes.
    pub load: Option<[f64; 3]>,
    /// Memory available for new work without swapping, bytes.
    pub available: Option<u64>,
    /// The first thermal zone, °C with one decimal.
    pub temperature: Option<f64>,
}

/// The value of a `Name:   1234 kB` line of `/proc/self/status` or `/proc/meminfo`, in bytes.
fn kib_field(text: &str, name: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?.strip_prefix(':')?;
        let mut words = rest.split_whitespace();
        let kib: u64 = words.next()?.parse().ok()?;
        (words.next() == Some("kB")).then_some(())?;
        kib.checked_mul(1024)
    })
}

/// The resident memory from `/proc/self/status` (`VmRSS:`, in kB; the kernel's kB are
/// KiB), in bytes. `/proc/self/status` rather than `statm`, whose pages would need the
/// page size, which only a call into libc gives.
pub fn vm_rss(status: &str) -> Option<u64> {
    kib_field(status, "VmRSS")
}

/// `MemAvailable:` from `/proc/meminfo`, in bytes.
pub fn mem_available(meminfo: &str) -> Option<u64> {
    kib_field(meminfo, "MemAvailable")
}

/// The three load averages that begin `/proc/loadavg` (`0.52 0.58 0.59 1/389 12345`).
pub fn load_average(loadavg: &str) -> Option<[f64; 3]> {
    let mut words = loadavg.split_whitespace();
    let mut one = || -> Option<f64> { words.next()?.parse().ok().filter(|v: &f64| v.is_finite()) };
    Some([one()?, one()?, one()?])
}

/// A thermal zone's `temp` (millidegrees Celsius, `45321`) in °C with one decimal (45.3).
pub fn temperature(temp: &str) -> Option<f64> {
    let milli: i64 = temp.trim().parse().ok()?;
    Some((milli as f64 / 100.0).round() / 10.0)
}

/// The files [`Machine::read`] reads.
const STATUS: &str = "/proc/self/status";
const LOADAVG: &str = "/proc/loadavg";
const MEMINFO: &str = "/proc/meminfo";
const THERMAL: &str = "/sys/class/thermal/thermal_zone0/temp";

/// The text of `path` in `buf` (cleared first); `None` if it cannot be read.
fn read<'b>(path: &str, buf: &'b mut String) -> Option<&'b str> {
    buf.clear();
    std::fs::File::open(path).ok()?.read_to_string(buf).ok()?;
    Some(buf)
}

impl Machine {
    /// Reads the files, with `buf` as the one buffer for their text.
    pub fn read(buf: &mut String) -> Machine {
        Machine {
            rss: read(STATUS, buf).and_then(vm_rss),
            load: read(LOADAVG, buf).and_then(load_average),
            available: read(MEMINFO, buf).and_then(mem_available),
            temperature: read(THERMAL, buf).and_then(temperature),
        }
    }
}

/// One sample's figures.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Figures {
    pub uptime: Duration,
    pub connections: u64,
    pub rates: Rates,
    pub machine: Machine,
}

impl Figures {
    /// Each topic with its data as JSON text, in publishing order, built in `buf`; the
    /// machine's figures it has no file for are left out.
    pub fn each(&self, buf: &mut String, mut f: impl FnMut(&str, &str)) {
        let mut put = |topic: &str, data: std::fmt::Arguments<'_>| {
            buf.clear();
            let _ = buf.write_fmt(data);
            f(topic, buf);
        };
        let (r, m) = (&self.rates, &self.machine);
        put("$SYS/version", format_args!("\"{VERSION}\""));
        put("$SYS/uptime", format_args!("{}", self.uptime.as_secs()));
        put("$SYS/connections", format_args!("{}", self.connections));
        // Rates are finite by construction (a count over a positive time, or 0), so their
        // shortest decimal form is a JSON number.
        put("$SYS/messages/in", format_args!("{}", r.messages_in));
        put("$SYS/messages/out", format_args!("{}", r.messages_out));
        put("$SYS/bytes/in", format_args!("{}", r.bytes_in));
        put("$SYS/bytes/out", format_args!("{}", r.bytes_out));
        put("$SYS/dropped", format_args!("{}", r.dropped));
        if let Some(rss) = m.rss {
            put("$SYS/rss", format_args!("{rss}"));
        }
        if let Some([one, five, fifteen]) = m.load {
            put("$SYS/load", format_args!("[{one},{five},{fifteen}]"));
        }
        if let Some(available) = m.available {
            put("$SYS/memory/available", format_args!("{available}"));
        }
        if let Some(celsius) = m.temperature {
            put("$SYS/temperature", format_args!("{celsius}"));
        }
    }
}

/// The `$SYS` publisher beside the relay in the program's loop.
#[derive(Debug)]
pub struct Sys {
    sampler: Sampler,
    start: Instant,
    /// What the `$SYS` publishes themselves put out, taken out of the figures.
    own: Counters,
    /// The text of the file being read.
    file: String,
    /// The data being published.
    data: String,
}

impl Sys {
    /// Figures every `interval` (above 0), the first due at `now`, the relay's start.
    pub fn new(interval: Duration, now: Instant) -> Sys {
        Sys {
            sampler: Sampler::new(interval, now),
            start: now,
            own: Counters::default(),
            file: String::new(),
            data: String::new(),
        }
    }

    /// After each turn of the server: the figures, when due, published and retained.
    /// Returns when it must run again at the latest.
    pub fn turn(&mut self, server: &mut Server<Relay>, now: Instant) -> Instant {
        let stats = server.stats();
        if let Some(rates) = self
            .sampler
            .sample(now, Counters::of(&stats).minus(self.own))
        {
            let figures = Figures {
                uptime: now.saturating_duration_since(self.start),
                connections: stats.connections_open,
                rates,
                machine: Machine::read(&mut self.file),
            };
            let before = server.stats();
            figures.each(&mut self.data, |topic, data| {
                let (_, retained) = Relay::publish_from_loop(server, topic, data, true);
                if let Err(e) = retained {
                    log::debug!("{topic}: {e}");
                }
            });
            let after = server.stats();
            // Written or queued now; the part a slow subscriber's socket takes later counts
            // in the figures (it cannot be told apart from other bytes then).
            self.own.messages_out += after.messages_out.saturating_sub(before.messages_out);
            self.own.bytes_out += after.bytes_out.saturating_sub(before.bytes_out);
        }
        self.sampler.next()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS_TEXT: &str = "Name:\temberws\nUmask:\t0022\nState:\tS (sleeping)\n\
        VmPeak:\t   12000 kB\nVmRSS:\t    3412 kB\nRssAnon:\t     900 kB\nThreads:\t1\n";

    const MEMINFO_TEXT: &str = "MemTotal:        3884420 kB\nMemFree:          221092 kB\n\
        MemAvailable:    2714036 kB\nBuffers:          125512 kB\n";

    #[test]
    fn parsers_read_the_kernels_text() {
        assert_eq!(vm_rss(STATUS_TEXT), Some(3412 * 1024));
        assert_eq!(mem_available(MEMINFO_TEXT), Some(2_714_036 * 1024));
        assert_eq!(
            load_average("0.52 0.58 1.59 1/389 12345\n"),
            Some([0.52, 0.58, 1.59])
        );
        assert_eq!(temperature("45321\n"), Some(45.3));
        assert_eq!(temperature("45350"), Some(45.4));
        assert_eq!(temperature("-1250\n"), Some(-1.3));
        assert_eq!(temperature("0"), Some(0.0));
    }

    #[test]
    fn parsers_find_nothing_in_other_text() {
        // A kernel thread's status has no VmRSS; a name that only begins the same is not it.
        assert_eq!(vm_rss("Name:\tkthreadd\nState:\tS\n"), None);
        assert_eq!(vm_rss("VmRSSX:\t 12 kB\n"), None);
        assert_eq!(vm_rss("VmRSS:\t 12 MB\n"), None);
        assert_eq!(vm_rss("VmRSS:\t\n"), None);
        assert_eq!(mem_available("MemTotal: 1 kB\n"), None);
        assert_eq!(load_average("0.5 0.4\n"), None);
        assert_eq!(load_average("0.5 inf 0.3 1/2 3\n"), None);
        assert_eq!(load_average(""), None);
        assert_eq!(temperature(""), None);
        assert_eq!(temperature("hot"), None);
        assert_eq!(
            temperature("45.3"),
            None,
            "the kernel writes whole millidegrees"
        );
    }

    fn counters(messages_in: u64, bytes_in: u64) -> Counters {
        Counters {
            messages_in,
            messages_out: 2 * messages_in,
            bytes_in,
            bytes_out: 3 * bytes_in,
            dropped: 0,
        }
    }

    #[test]
    fn rates_are_per_second_over_the_elapsed_time() {
        let r = rates(
            counters(10, 1000),
            counters(30, 1500),
            Duration::from_secs(4),
        );
        assert_eq!(
            r,
            Rates {
                messages_in: 5.0,
                messages_out: 10.0,
                bytes_in: 125.0,
                bytes_out: 375.0,
                dropped: 0.0,
            }
        );
        // Rounded to 3 decimals.
        let r = rates(counters(0, 0), counters(1, 2), Duration::from_secs(3));
        assert_eq!((r.messages_in, r.bytes_in), (0.333, 0.667));
        let r = rates(counters(0, 0), counters(7, 0), Duration::from_millis(200));
        assert_eq!(r.messages_in, 35.0);
        // No time, or counters that went down: 0, never infinite or negative.
        assert_eq!(
            rates(counters(0, 0), counters(5, 5), Duration::ZERO),
            Rates::default()
        );
        assert_eq!(
            rates(counters(9, 9), counters(5, 5), Duration::from_secs(1)),
            Rates::default()
        );
    }

    #[test]
    fn own_counts_come_off_and_never_below_zero() {
        let stats = Counters {
            messages_in: 5,
            messages_out: 40,
            bytes_in: 100,
            bytes_out: 4000,
            dropped: 1,
        };
        let own = Counters {
            messages_out: 30,
            bytes_out: 5000,
            ..Counters::default()
        };
        let left = stats.minus(own);
        assert_eq!((left.messages_out, left.bytes_out), (10, 0));
        assert_eq!((left.messages_in, left.bytes_in, left.dropped), (5, 100, 1));
    }

    #[test]
    fn samples_come_at_start_then_every_interval_with_the_rates_between() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut s = Sampler::new(Duration::from_secs(10), t0);
        assert_eq!(s.next(), t0, "the first is due at once");
        assert_eq!(
            s.sample(t0, counters(100, 100)),
            Some(Rates::default()),
            "nothing behind the first sample"
        );
        assert_eq!(s.next(), at(10_000));
        assert_eq!(s.sample(at(9_999), counters(120, 100)), None, "not due yet");
        // Late by 40 ms: the rate is over the 10.04 s that passed; the cadence stays.
        let r = s.sample(at(10_040), counters(351, 100)).unwrap();
        assert_eq!(r.messages_in, 25.0);
        assert_eq!(s.next(), at(20_000));
        // A sample more than a whole interval late starts the cadence again from then.
        let r = s.sample(at(45_040), counters(351 + 70, 100)).unwrap();
        assert_eq!(r.messages_in, 2.0, "70 over 35 s");
        assert_eq!(s.next(), at(55_040));
        assert_eq!(s.sample(at(50_000), counters(999, 100)), None);
    }

    #[test]
    fn figures_are_json_in_order_and_missing_ones_are_left_out() {
        let mut figures = Figures {
            uptime: Duration::from_millis(61_900),
            connections: 3,
            rates: Rates {
                messages_in: 2.5,
                messages_out: 0.0,
                bytes_in: 1024.125,
                bytes_out: 7.0,
                dropped: 0.333,
            },
            machine: Machine {
                rss: Some(3_493_888),
                load: Some([0.52, 0.0, 1.5]),
                available: Some(2_779_172_864),
                temperature: Some(45.3),
            },
        };
        let collect = |figures: &Figures| {
            let mut got = Vec::new();
            figures.each(&mut String::new(), |t, d| {
                // Each is valid JSON.
                serde_json::from_str::<serde_json::Value>(d).unwrap();
                got.push(format!("{t}={d}"));
            });
            got
        };
        assert_eq!(
            collect(&figures),
            [
                format!("$SYS/version=\"{VERSION}\""),
                "$SYS/uptime=61".into(),
                "$SYS/connections=3".into(),
                "$SYS/messages/in=2.5".into(),
                "$SYS/messages/out=0".into(),
                "$SYS/bytes/in=1024.125".into(),
                "$SYS/bytes/out=7".into(),
                "$SYS/dropped=0.333".into(),
                "$SYS/rss=3493888".into(),
                "$SYS/load=[0.52,0,1.5]".into(),
                "$SYS/memory/available=2779172864".into(),
                "$SYS/temperature=45.3".into(),
            ]
        );
        figures.machine = Machine::default();
        let got = collect(&figures);
        assert_eq!(got.len(), 8, "{got:?}");
        assert!(got.last().unwrap().starts_with("$SYS/dropped="));
    }

    use emberws::testing::Harness;
    use emberws::Config;
    use serde_json::Value;

    use super::super::tests::{heard, say};

    /// The `(topic, data)` of the message frames among `got`.
    fn figures(got: &[Value]) -> Vec<(String, Value)> {
        got.iter()
            .filter(|m| m["type"] == "message")
            .map(|m| (m["topic"].as_str().unwrap().to_owned(), m["data"].clone()))
            .collect()
    }

    fn data<'a>(got: &'a [(String, Value)], topic: &str) -> &'a Value {
        &got.iter().find(|(t, _)| t == topic).unwrap().1
    }

    #[test]
    fn a_sys_subscription_with_since_gets_the_current_figures() {
        // History never keeps `$` topics: a page that resumes `$SYS/#` with the last id it
        // saw gets the current figures at once, not a wait for the next sample.
        let mut h = Harness::new(Config::default(), Relay::default());
        let t0 = Instant::now();
        Sys::new(Duration::from_secs(10), t0).turn(h.server_mut(), t0);
        let mut p = h.connect("/").unwrap();
        say(&mut h, &p, r#"{"type":"subscribe","topic":"$SYS/#"}"#);
        let first = heard(&mut h, &mut p);
        let last = first.last().unwrap()["id"].as_str().unwrap().to_owned();
        let mut again = h.connect("/").unwrap();
        let resume = format!(r#"{{"type":"subscribe","topic":"$SYS/#","since":"{last}","id":1}}"#);
        say(&mut h, &again, &resume);
        let got = heard(&mut h, &mut again);
        assert_eq!(
            got.first(),
            Some(&serde_json::json!({"type": "ack", "id": 1, "gap": false}))
        );
        let figures = figures(&got[1..]);
        assert_eq!(figures.len(), first.len(), "{got:?}");
        assert_eq!(data(&figures, "$SYS/version"), VERSION);
    }

    #[test]
    fn figures_reach_sys_subscribers_only_and_do_not_count_themselves() {
        let mut h = Harness::new(Config::default(), Relay::default());
        let mut sys = h.connect("/").unwrap();
        let mut hash = h.connect("/").unwrap();
        let mut plus = h.connect("/").unwrap();
        let publisher = h.connect("/").unwrap();
        say(&mut h, &sys, r#"{"type":"subscribe","topic":"$SYS/#"}"#);
        say(&mut h, &hash, r##"{"type":"subscribe","topic":"#"}"##);
        say(
            &mut h,
            &plus,
            r#"{"type":"subscribe","topic":"+/connections"}"#,
        );

        let t0 = Instant::now();
        let mut s = Sys::new(Duration::from_secs(10), t0);
        let next = s.turn(h.server_mut(), t0);
        assert_eq!(next, t0 + Duration::from_secs(10));
        let first = figures(&heard(&mut h, &mut sys));
        assert_eq!(first.first().unwrap().0, "$SYS/version", "{first:?}");
        assert_eq!(data(&first, "$SYS/version"), VERSION);
        assert_eq!(data(&first, "$SYS/uptime"), 0);
        assert_eq!(data(&first, "$SYS/connections"), 4);
        assert_eq!(data(&first, "$SYS/messages/in"), 0, "no interval yet");
        assert!(first.len() >= 8, "{first:?}");
        assert!(heard(&mut h, &mut hash).is_empty());
        assert!(heard(&mut h, &mut plus).is_empty());

        // Between two samples: 5 publishes, each delivered to the `#` subscriber only.
        let before = h.stats();
        for i in 0..5 {
            say(
                &mut h,
                &publisher,
                &format!(r#"{{"type":"publish","topic":"t/x","data":{i}}}"#),
            );
        }
        assert_eq!(heard(&mut h, &mut hash).len(), 5);
        let after = h.stats();
        assert_eq!(s.turn(h.server_mut(), t0 + Duration::from_secs(9)), next);
        assert!(heard(&mut h, &mut sys).is_empty(), "not due yet");
        s.turn(h.server_mut(), t0 + Duration::from_secs(10));
        let second = figures(&heard(&mut h, &mut sys));
        assert_eq!(second.len(), first.len());
        assert_eq!(data(&second, "$SYS/uptime"), 10);
        assert_eq!(data(&second, "$SYS/messages/in"), 0.5);
        // The first sample's deliveries to `sys` are not in it: only the 5 to `hash`.
        assert_eq!(data(&second, "$SYS/messages/out"), 0.5);
        let per_second = |a: u64, b: u64| (b - a) as f64 / 10.0;
        assert_eq!(
            data(&second, "$SYS/bytes/in").as_f64(),
            Some(per_second(before.bytes_in, after.bytes_in))
        );
        assert_eq!(
            data(&second, "$SYS/bytes/out").as_f64(),
            Some(per_second(before.bytes_out, after.bytes_out))
        );
        assert!(heard(&mut h, &mut hash).is_empty());
        assert!(heard(&mut h, &mut plus).is_empty());

        // Retained: a late `$SYS/#` subscriber has them at once, a late `#` one not.
        let mut late = h.connect("/").unwrap();
        say(&mut h, &late, r#"{"type":"subscribe","topic":"$SYS/+"}"#);
        let retained = figures(&heard(&mut h, &mut late));
        assert_eq!(data(&retained, "$SYS/uptime"), 10);
        assert_eq!(
            retained.len(),
            second
                .iter()
                .filter(|(t, _)| t.matches('/').count() == 1)
                .count()
        );
        let mut late_hash = h.connect("/").unwrap();
        say(&mut h, &late_hash, r##"{"type":"subscribe","topic":"#"}"##);
        assert!(figures(&heard(&mut h, &mut late_hash)).is_empty());
    }

    #[test]
    fn the_figures_are_retained_outside_the_cap_a_client_can_fill() {
        let policy = super::super::Policy {
            max_retained_bytes: 100 + super::super::RETAINED_ENTRY_BYTES,
            ..super::super::Policy::default()
        };
        let mut h = Harness::new(Config::default(), Relay::new(policy));
        let t0 = Instant::now();
        Sys::new(Duration::from_secs(10), t0).turn(h.server_mut(), t0);
        // The topic `f` (1 byte) and its frame (40 + 40 bytes, and its id of 18 or 19 bytes:
        // `,"id":"EPOCH-SEQ"`, SEQ past the figures' own) and its entry: the whole cap, or all
        // but a byte.
        let mut p = h.connect("/").unwrap();
        let fill = format!(
            r#"{{"type":"publish","topic":"f","data":"{}","retain":true,"id":1}}"#,
            "x".repeat(40)
        );
        say(&mut h, &p, &fill);
        assert_eq!(
            heard(&mut h, &mut p),
            [serde_json::json!({"type": "ack", "id": 1, "delivered": 0})],
            "the figures take none of it"
        );
        say(
            &mut h,
            &p,
            r#"{"type":"publish","topic":"g","data":1,"retain":true,"id":2}"#,
        );
        let got = heard(&mut h, &mut p);
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(
            got[1]["type"], "error",
            "a client's own retained values are capped"
        );
        let mut late = h.connect("/").unwrap();
        say(&mut h, &late, r#"{"type":"subscribe","topic":"$SYS/#"}"#);
        assert!(figures(&heard(&mut h, &mut late)).len() >= 8);
    }

    #[test]
    fn this_machine_has_proc() {
        // The relay runs on Linux: these two are always there.
        let m = Machine::read(&mut String::new());
        assert!(m.rss.is_some_and(|b| b > 0), "{m:?}");
        assert!(m.load.is_some(), "{m:?}");
    }
}

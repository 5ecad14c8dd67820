//! Limits on what one peer can do over time: token buckets per connection, and lockouts of
//! addresses that keep presenting wrong tokens. Time is passed in (the loop's clock), so
//! every rule here is tested without waiting.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

/// A token bucket: `rate` tokens a second up to `burst`; full at the start.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Bucket {
    tokens: f32,
}

impl Bucket {
    pub fn full(burst: f64) -> Self {
        Bucket {
            tokens: burst as f32,
        }
    }

    /// Adds what `elapsed` earned, up to `burst`.
    fn refill(&mut self, elapsed: f64, rate: f64, burst: f64) {
        self.tokens = (f64::from(self.tokens) + elapsed * rate).min(burst) as f32;
    }

    /// Takes `cost` tokens if there are that many.
    fn take(&mut self, cost: f64) -> bool {
        if f64::from(self.tokens) >= cost {
            self.tokens = (f64::from(self.tokens) - cost) as f32;
            true
        } else {
            false
        }
    }
}

/// The configured rates of one connection; a rate of 0 is no limit.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rates {
    pub publishes: f64,
    pub publish_burst: f64,
    pub bytes: f64,
    pub bytes_burst: f64,
    /// Refusals a connection may run up (one is forgiven each second) before it is closed.
    pub strikes: u32,
}

/// What a rate-limited connection's request gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    /// Refused for this reason; the connection stays.
    Refuse(&'static str),
    /// Refused, and the connection has been refused too often: close it with 1008.
    Abuse,
}

/// One connection's buckets: publishes, bytes, and strikes (its refusals).
#[derive(Clone, Debug, PartialEq)]
pub struct Limiter {
    last: Duration,
    publishes: Bucket,
    bytes: Bucket,
    strikes: Bucket,
}

/// Reasons, as `error` messages and `/metrics` labels.
pub const TOO_MANY_PUBLISHES: &str = "rate limit: too many publishes";
pub const TOO_MANY_BYTES: &str = "rate limit: too many bytes";

impl Limiter {
    pub fn new(rates: &Rates, now: Duration) -> Self {
        Limiter {
            last: now,
            publishes: Bucket::full(rates.publish_burst.max(1.0)),
            bytes: Bucket::full(rates.bytes_burst),
            strikes: Bucket::full(f64::from(rates.strikes)),
        }
    }

    /// Charges a message of `len` bytes (a publish if `publish`) at time `now`.
    pub fn charge(&mut self, rates: &Rates, now: Duration, len: usize, publish: bool) -> Verdict {
        let elapsed = now.saturating_sub(self.last).as_secs_f64();
        self.last = self.last.max(now);
        self.publishes
            .refill(elapsed, rates.publishes, rates.publish_burst.max(1.0));
        self.bytes.refill(elapsed, rates.bytes, rates.bytes_burst);
        self.strikes.refill(elapsed, 1.0, f64::from(rates.strikes));
        let reason = if rates.bytes > 0.0 && !self.bytes.take(len as f64) {
            TOO_MANY_BYTES
        } else if publish && rates.publishes > 0.0 && !self.publishes.take(1.0) {
            TOO_MANY_PUBLISHES
        } else {
            return Verdict::Pass;
        };
        if self.strikes.take(1.0) {
            Verdict::Refuse(reason)
        } else {
            Verdict::Abuse
        }
    }
}

/// How failed token attempts are answered.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LockoutPolicy {
    /// Failures that lock an address out (the last of them is answered 401, what follows
    /// 429 until the lockout ends).
    pub failures: u32,
    /// The first lockout; each further failure doubles it.
    pub first: Duration,
    /// The longest lockout.
    pub max: Duration,
}

/// Addresses tracked at most; past it, the entry that expired first makes room.
pub const MAX_TRACKED: usize = 4096;

#[derive(Clone, Copy, Debug)]
struct Record {
    failures: u32,
    /// Locked out until then.
    until: Duration,
    last: Duration,
}

/// Failed attempts by address (an IPv6 peer by its /64, which one host usually holds whole).
#[derive(Debug, Default)]
pub struct Lockouts {
    table: HashMap<IpAddr, Record>,
    /// Lockouts begun, for `/metrics`.
    pub started: u64,
}

fn key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
        },
    }
}

impl Lockouts {
    /// While `ip` is locked out: how long until it may try again.
    pub fn locked(&self, ip: IpAddr, now: Duration) -> Option<Duration> {
        let r = self.table.get(&key(ip))?;
        (now < r.until).then(|| r.until - now)
    }

    /// Records a failed attempt; returns the lockout it starts, if any.
    pub fn fail(&mut self, policy: &LockoutPolicy, ip: IpAddr, now: Duration) -> Option<Duration> {
        let k = key(ip);
        if !self.table.contains_key(&k) && self.table.len() >= MAX_TRACKED {
            self.make_room(policy, now);
        }
        let r = self.table.entry(k).or_insert(Record {
            failures: 0,
            until: Duration::ZERO,
            last: now,
        });
        // A quiet address starts over: no failure within the longest lockout.
        if now.saturating_sub(r.last.max(r.until)) > policy.max {
            r.failures = 0;
        }
        r.failures = r.failures.saturating_add(1);
        r.last = now;
        let over = r.failures.checked_sub(policy.failures.max(1))?.min(20);
        let lock = policy.first.saturating_mul(1 << over).min(policy.max);
        r.until = now + lock;
        self.started += 1;
        Some(lock)
    }

    /// A correct token: the address starts over.
    pub fn succeed(&mut self, ip: IpAddr) {
        self.table.remove(&key(ip));
    }

    fn make_room(&mut self, policy: &LockoutPolicy, now: Duration) {
        self.table
            .retain(|_, r| now.saturating_sub(r.last.max(r.until)) <= policy.max);
        if self.table.len() >= MAX_TRACKED {
            let oldest = self
                .table
                .iter()
                .min_by_key(|(_, r)| r.last.max(r.until))
                .map(|(k, _)| *k);
            if let Some(k) = oldest {
                self.table.remove(&k);
            }
        }
    }

    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.table.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RATES: Rates = Rates {
        publishes: 2.0,
        publish_burst: 4.0,
        bytes: 100.0,
        bytes_burst: 300.0,
        strikes: 3,
    };

    fn s(secs: f64) -> Duration {
        Duration::from_secs_f64(secs)
    }

    #[test]
    fn publishes_pass_up_to_the_burst_then_at_the_rate() {
        let mut l = Limiter::new(&RATES, s(0.0));
        for _ in 0..4 {
            assert_eq!(l.charge(&RATES, s(0.0), 1, true), Verdict::Pass);
        }
        assert_eq!(
            l.charge(&RATES, s(0.0), 1, true),
            Verdict::Refuse(TOO_MANY_PUBLISHES)
        );
        // Half a second earns one publish at 2 a second.
        assert_eq!(l.charge(&RATES, s(0.5), 1, true), Verdict::Pass);
        assert_eq!(
            l.charge(&RATES, s(0.5), 1, true),
            Verdict::Refuse(TOO_MANY_PUBLISHES)
        );
        // Other requests do not count as publishes.
        assert_eq!(l.charge(&RATES, s(0.5), 1, false), Verdict::Pass);
    }

    #[test]
    fn bytes_are_counted_on_every_message() {
        let mut l = Limiter::new(&RATES, s(0.0));
        assert_eq!(l.charge(&RATES, s(0.0), 250, false), Verdict::Pass);
        assert_eq!(
            l.charge(&RATES, s(0.0), 100, false),
            Verdict::Refuse(TOO_MANY_BYTES)
        );
        assert_eq!(l.charge(&RATES, s(0.5), 100, true), Verdict::Pass);
    }

    #[test]
    fn sustained_refusals_are_abuse_and_a_pause_forgives() {
        let mut l = Limiter::new(&RATES, s(0.0));
        for _ in 0..4 {
            l.charge(&RATES, s(0.0), 1, true);
        }
        for _ in 0..3 {
            assert!(matches!(
                l.charge(&RATES, s(0.0), 1, true),
                Verdict::Refuse(_)
            ));
        }
        assert_eq!(l.charge(&RATES, s(0.0), 1, true), Verdict::Abuse);
        // Two quiet seconds forgive two strikes and earn four publishes.
        let mut l = Limiter::new(&RATES, s(0.0));
        for _ in 0..7 {
            l.charge(&RATES, s(0.0), 1, true);
        }
        for _ in 0..4 {
            assert_eq!(l.charge(&RATES, s(2.0), 1, true), Verdict::Pass);
        }
        assert!(matches!(
            l.charge(&RATES, s(2.0), 1, true),
            Verdict::Refuse(_)
        ));
        assert!(matches!(
            l.charge(&RATES, s(2.0), 1, true),
            Verdict::Refuse(_)
        ));
        assert_eq!(l.charge(&RATES, s(2.0), 1, true), Verdict::Abuse);
    }

    #[test]
    fn a_zero_rate_is_no_limit() {
        let off = Rates {
            publishes: 0.0,
            bytes: 0.0,
            ..RATES
        };
        let mut l = Limiter::new(&off, s(0.0));
        for _ in 0..1000 {
            assert_eq!(l.charge(&off, s(0.0), 1 << 20, true), Verdict::Pass);
        }
    }

    const POLICY: LockoutPolicy = LockoutPolicy {
        failures: 3,
        first: Duration::from_secs(1),
        max: Duration::from_secs(8),
    };

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn failures_lock_an_address_out_for_doubling_times() {
        let mut l = Lockouts::default();
        let a = ip("192.0.2.1");
        for _ in 0..2 {
            assert_eq!(l.fail(&POLICY, a, s(0.0)), None);
            assert_eq!(l.locked(a, s(0.0)), None);
        }
        assert_eq!(l.fail(&POLICY, a, s(0.0)), Some(s(1.0)));
        assert_eq!(l.locked(a, s(0.25)), Some(s(0.75)));
        assert_eq!(l.locked(ip("192.0.2.2"), s(0.25)), None, "others go on");
        assert_eq!(l.locked(a, s(1.0)), None);
        assert_eq!(l.fail(&POLICY, a, s(1.0)), Some(s(2.0)));
        assert_eq!(l.fail(&POLICY, a, s(3.0)), Some(s(4.0)));
        assert_eq!(l.fail(&POLICY, a, s(7.0)), Some(s(8.0)));
        assert_eq!(l.fail(&POLICY, a, s(15.0)), Some(s(8.0)), "capped");
        assert_eq!(l.started, 5);
        l.succeed(a);
        assert_eq!(l.locked(a, s(15.0)), None);
        assert_eq!(l.fail(&POLICY, a, s(15.0)), None, "a success starts over");
    }

    #[test]
    fn a_quiet_address_is_forgiven() {
        let mut l = Lockouts::default();
        let a = ip("192.0.2.1");
        for _ in 0..3 {
            l.fail(&POLICY, a, s(0.0));
        }
        assert_eq!(l.fail(&POLICY, a, s(100.0)), None);
    }

    #[test]
    fn ipv6_hosts_count_by_their_64_and_mapped_v4_as_v4() {
        let mut l = Lockouts::default();
        for i in 0..4 {
            l.fail(&POLICY, ip(&format!("2001:db8:1:2::{i}")), s(0.0));
        }
        assert!(l.locked(ip("2001:db8:1:2:ffff::9"), s(0.0)).is_some());
        assert!(l.locked(ip("2001:db8:1:3::1"), s(0.0)).is_none());
        for _ in 0..4 {
            l.fail(&POLICY, ip("::ffff:192.0.2.9"), s(0.0));
        }
        assert!(l.locked(ip("192.0.2.9"), s(0.0)).is_some());
    }

    #[test]
    fn the_table_is_bounded() {
        let mut l = Lockouts::default();
        for i in 0..(MAX_TRACKED as u32 + 100) {
            let a = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            l.fail(&POLICY, a, s(f64::from(i) / 1000.0));
        }
        assert_eq!(l.tracked(), MAX_TRACKED);
    }
}

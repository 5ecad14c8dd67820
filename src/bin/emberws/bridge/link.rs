//! One TCP connection to Redis as a state machine, with time passed in: down (waiting out a
//! backoff), connecting, up. It decides when to connect, when a connect or a reply is late,
//! and when a quiet link is pinged; it does no I/O (`net.rs` does).

use std::time::{Duration, Instant};

/// The first reconnect waits up to this long (full jitter: anything from zero to it).
pub const BACKOFF_BASE: Duration = Duration::from_millis(100);
/// No reconnect waits longer than this, however many attempts failed.
pub const BACKOFF_CAP: Duration = Duration::from_secs(5);
/// A connect not finished after this is given up.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// A link owed a reply that has heard nothing for this long is dropped.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(10);
/// A link quiet for this long is pinged, so that a dead peer is found.
pub const KEEPALIVE: Duration = Duration::from_secs(30);

/// Capped exponential backoff with full jitter: attempt `n` (from 0) waits a uniformly random
/// time from zero to `min(cap, base × 2ⁿ)`, so that many relays that lost the same Redis do
/// not come back in step.
#[derive(Clone, Copy, Debug)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    attempt: u32,
}

impl Backoff {
    pub fn new(base: Duration, cap: Duration) -> Backoff {
        Backoff {
            base,
            cap,
            attempt: 0,
        }
    }

    /// The longest wait of the next attempt.
    pub fn ceiling(&self) -> Duration {
        let factor = 1u32.checked_shl(self.attempt.min(31)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// The wait before the next attempt, from a random number (`rand`, any `u64`).
    pub fn next(&mut self, rand: u64) -> Duration {
        let ceiling = u64::try_from(self.ceiling().as_nanos()).unwrap_or(u64::MAX);
        self.attempt = self.attempt.saturating_add(1);
        Duration::from_nanos(rand % ceiling.saturating_add(1))
    }

    /// After a success: the next failure starts from `base` again.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// Where a link is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// No socket; connect at `retry_at`.
    Down { retry_at: Instant },
    /// A connect in flight, given up at `deadline`.
    Connecting { deadline: Instant },
    /// Connected.
    Up,
}

/// What a link asks for at a given time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Due {
    /// Nothing now.
    Nothing,
    /// Open a socket.
    Connect,
    /// The connect or a reply is late: drop the link.
    Late,
    /// Quiet for [`KEEPALIVE`]: send a ping.
    Ping,
}

/// One link's state and clocks.
#[derive(Debug)]
pub struct Link {
    state: State,
    backoff: Backoff,
    /// Replies owed for commands fully written.
    awaiting: usize,
    /// When the peer was last heard (or the link came up).
    heard: Instant,
    /// Whether the link has been up before: the next time up is a reconnect.
    was_up: bool,
}

impl Link {
    /// A link that connects at `now`.
    pub fn new(now: Instant) -> Link {
        Link {
            state: State::Down { retry_at: now },
            backoff: Backoff::new(BACKOFF_BASE, BACKOFF_CAP),
            awaiting: 0,
            heard: now,
            was_up: false,
        }
    }

    pub fn state(&self) -> State {
        self.state
    }

    pub fn is_up(&self) -> bool {
        self.state == State::Up
    }

    #[cfg(test)]
    pub fn awaiting(&self) -> usize {
        self.awaiting
    }

    /// A socket was opened; its connect is in flight.
    pub fn connecting(&mut self, now: Instant) {
        self.state = State::Connecting {
            deadline: now + CONNECT_TIMEOUT,
        };
    }

    /// The connect finished. Returns whether this is a reconnect (the link was up before).
    pub fn up(&mut self, now: Instant) -> bool {
        self.state = State::Up;
        self.awaiting = 0;
        self.heard = now;
        std::mem::replace(&mut self.was_up, true)
    }

    /// The socket failed or was dropped: wait out the backoff. Returns the wait.
    pub fn down(&mut self, now: Instant, rand: u64) -> Duration {
        let wait = self.backoff.next(rand);
        self.state = State::Down {
            retry_at: now + wait,
        };
        self.awaiting = 0;
        wait
    }

    /// The peer answered as it should: the next failure backs off from the start.
    pub fn healthy(&mut self) {
        self.backoff.reset();
    }

    /// `n` more commands were written whole; a reply is owed for each.
    pub fn sent(&mut self, n: usize, now: Instant) {
        if self.awaiting == 0 && n > 0 {
            // The reply clock starts with the first reply owed.
            self.heard = now;
        }
        self.awaiting += n;
    }

    /// Bytes arrived.
    pub fn heard(&mut self, now: Instant) {
        self.heard = now;
    }

    /// One reply arrived.
    pub fn replied(&mut self) {
        self.awaiting = self.awaiting.saturating_sub(1);
    }

    /// The next time [`Link::due`] may answer something other than `Nothing`.
    pub fn deadline(&self) -> Instant {
        match self.state {
            State::Down { retry_at } => retry_at,
            State::Connecting { deadline } => deadline,
            State::Up if self.awaiting > 0 => self.heard + REPLY_TIMEOUT,
            State::Up => self.heard + KEEPALIVE,
        }
    }

    /// What to do at `now`.
    pub fn due(&self, now: Instant) -> Due {
        if now < self.deadline() {
            return Due::Nothing;
        }
        match self.state {
            State::Down { .. } => Due::Connect,
            State::Connecting { .. } => Due::Late,
            State::Up if self.awaiting > 0 => Due::Late,
            State::Up => Due::Ping,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_with_full_jitter() {
        let mut b = Backoff::new(BACKOFF_BASE, BACKOFF_CAP);
        let ceilings: Vec<u64> = (0..10)
            .map(|_| {
                let c = b.ceiling();
                b.next(0);
                u64::try_from(c.as_millis()).unwrap()
            })
            .collect();
        assert_eq!(
            ceilings,
            [100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000, 5000]
        );
        // Full jitter: the wait is anywhere from zero to the ceiling, never above it.
        let mut b = Backoff::new(BACKOFF_BASE, BACKOFF_CAP);
        assert_eq!(b.next(0), Duration::ZERO);
        assert_eq!(
            b.next(200_000_000),
            BACKOFF_BASE * 2,
            "the top of 0..=200 ms"
        );
        for rand in [1, 12_345_678_901, u64::MAX, u64::MAX / 3] {
            let mut b = Backoff::new(BACKOFF_BASE, BACKOFF_CAP);
            for _ in 0..100 {
                let ceiling = b.ceiling();
                assert!(b.next(rand) <= ceiling);
            }
            assert_eq!(b.ceiling(), BACKOFF_CAP, "a hundred failures stay capped");
            b.reset();
            assert_eq!(b.ceiling(), BACKOFF_BASE);
        }
    }

    #[test]
    fn a_link_connects_at_once_then_backs_off_and_times_out() {
        let t0 = Instant::now();
        let mut link = Link::new(t0);
        assert_eq!(link.due(t0), Due::Connect, "the first connect is immediate");
        link.connecting(t0);
        assert_eq!(
            link.due(t0 + CONNECT_TIMEOUT - Duration::from_millis(1)),
            Due::Nothing
        );
        assert_eq!(link.due(t0 + CONNECT_TIMEOUT), Due::Late);
        let t1 = t0 + CONNECT_TIMEOUT;
        let wait = link.down(t1, u64::MAX);
        assert!(wait <= BACKOFF_BASE);
        assert_eq!(link.deadline(), t1 + wait);
        assert_eq!(link.due(t1 + wait), Due::Connect);
        // A second failure waits up to twice as long; success resets it.
        link.connecting(t1 + wait);
        let wait2 = link.down(t1 + wait, 150_000_000);
        assert_eq!(wait2, Duration::from_millis(150), "within 0..=200 ms");
        link.connecting(t1);
        assert!(!link.up(t1), "the first time up is not a reconnect");
        link.healthy();
        assert!(link.down(t1, u64::MAX) <= BACKOFF_BASE);
        link.connecting(t1);
        assert!(link.up(t1), "up again: a reconnect");
    }

    #[test]
    fn an_up_link_pings_when_quiet_and_drops_when_a_reply_is_late() {
        let t0 = Instant::now();
        let mut link = Link::new(t0);
        link.connecting(t0);
        link.up(t0);
        assert_eq!(
            link.due(t0 + KEEPALIVE - Duration::from_millis(1)),
            Due::Nothing
        );
        assert_eq!(link.due(t0 + KEEPALIVE), Due::Ping);
        let t1 = t0 + Duration::from_secs(1);
        link.sent(2, t1);
        assert_eq!(link.deadline(), t1 + REPLY_TIMEOUT);
        link.heard(t1 + Duration::from_secs(5));
        link.replied();
        assert_eq!(link.awaiting(), 1);
        assert_eq!(
            link.due(t1 + REPLY_TIMEOUT),
            Due::Nothing,
            "it spoke 5 s in"
        );
        assert_eq!(
            link.due(t1 + Duration::from_secs(5) + REPLY_TIMEOUT),
            Due::Late
        );
        link.replied();
        assert_eq!(
            link.due(t1 + REPLY_TIMEOUT + Duration::from_secs(5)),
            Due::Nothing
        );
    }
}

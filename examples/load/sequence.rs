//! One subscription's bookkeeping of one topic's sequence numbers: what was lost, duplicated
//! or reordered. Time is passed in (ns on the run's clock); nothing here reads a clock.
//!
//! Why the checks are sound: one publisher connection owns each topic, so the relay (one loop)
//! handles that topic's publishes in their sequence order, and each connection's output is a
//! FIFO. A subscription therefore receives a *contiguous* run of each topic's sequence numbers,
//! and:
//! - every publish queued *after* the subscription's ack arrived (`must_from` on) must be in it;
//! - every publish whose own ack reached the publisher *before* the unsubscribe (or close) was
//!   sent (`required_next` at `finish`) must be in it;
//! - on subscribe the relay first replays the topic's retained message (the last publish with
//!   `retain`, before the subscription): the first message after the ack may be that replay,
//!   a retained publish older than `must_from`, outside the contiguous run.
//!
//! A hole in the run is held as a gap for `GAP_PATIENCE`; if the missing number arrives in that
//! time it counts as out of order, otherwise it is lost.

use std::time::Duration;

/// How long a missing sequence number may be late before it counts as lost.
pub const GAP_PATIENCE: Duration = Duration::from_secs(2);
/// Gaps held per subscription at most; missing numbers beyond are lost at once.
const MAX_GAPS: usize = 64;

/// Counts over many subscriptions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Messages received on a subscription, replays included.
    pub delivered: u64,
    /// Retained messages replayed on subscribe.
    pub replayed: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub out_of_order: u64,
}

impl Counts {
    /// Lost, duplicated and reordered messages together.
    pub fn violations(&self) -> u64 {
        self.lost + self.duplicated + self.out_of_order
    }

    /// `self - earlier`, counter by counter (all only grow).
    pub fn since(&self, earlier: &Counts) -> Counts {
        Counts {
            delivered: self.delivered - earlier.delivered,
            replayed: self.replayed - earlier.replayed,
            lost: self.lost - earlier.lost,
            duplicated: self.duplicated - earlier.duplicated,
            out_of_order: self.out_of_order - earlier.out_of_order,
        }
    }
}

/// One subscription, from its ack to its end.
#[derive(Debug)]
pub struct Track {
    must_from: u64,
    /// Nothing received yet.
    fresh: bool,
    /// A retained replay received first, before the contiguous run started.
    replay: Option<u64>,
    /// The contiguous run has started: the next number expected.
    next: Option<u64>,
    /// Missing numbers inside the run, with the instant their absence was noticed.
    gaps: Vec<(u64, u64)>,
}

impl Track {
    /// A subscription acknowledged when the topic's next sequence number to publish was
    /// `must_from`.
    pub fn new(must_from: u64) -> Self {
        Self {
            must_from,
            fresh: true,
            replay: None,
            next: None,
            gaps: Vec::new(),
        }
    }

    /// Message `seq` arrived at `now`; `retained`: it was published with `retain`.
    pub fn on_message(&mut self, seq: u64, retained: bool, now: u64, n: &mut Counts) {
        n.delivered += 1;
        let fresh = std::mem::replace(&mut self.fresh, false);
        let Some(next) = self.next else {
            if fresh && retained && seq < self.must_from {
                self.replay = Some(seq);
                n.replayed += 1;
                return;
            }
            match self.replay {
                Some(r) if seq == r => return n.duplicated += 1,
                Some(r) if seq < r => return n.out_of_order += 1,
                _ => {}
            }
            // Numbers from `must_from` were queued after the ack: they come before `seq`.
            n.lost += seq.saturating_sub(self.must_from);
            self.next = Some(seq + 1);
            return;
        };
        if seq == next {
            self.next = Some(next + 1);
        } else if seq > next {
            for missing in next..seq {
                if self.gaps.len() < MAX_GAPS {
                    self.gaps.push((missing, now));
                } else {
                    n.lost += 1;
                }
            }
            self.next = Some(seq + 1);
        } else if let Some(i) = self.gaps.iter().position(|&(s, _)| s == seq) {
            self.gaps.swap_remove(i);
            n.out_of_order += 1;
        } else {
            // Below the run's head and not missing: received before (or given up on after
            // `GAP_PATIENCE`, which on loopback does not happen).
            n.duplicated += 1;
        }
    }

    /// Gaps older than `GAP_PATIENCE` at `now` count as lost.
    pub fn age(&mut self, now: u64, n: &mut Counts) {
        let patience = GAP_PATIENCE.as_nanos() as u64;
        let before = self.gaps.len();
        self.gaps
            .retain(|&(_, since)| now.saturating_sub(since) < patience);
        n.lost += (before - self.gaps.len()) as u64;
    }

    /// The subscription ended (its unsubscribe acknowledged, or its connection closed cleanly)
    /// and every number below `required_next` had been acknowledged to its publisher before
    /// the end was asked for: what has not arrived is lost.
    pub fn finish(self, required_next: u64, n: &mut Counts) {
        n.lost += self.gaps.len() as u64;
        let from = self.next.unwrap_or(self.must_from);
        n.lost += required_next.saturating_sub(from);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    fn feed(t: &mut Track, seqs: &[u64], now: u64) -> Counts {
        let mut n = Counts::default();
        for &s in seqs {
            t.on_message(s, false, now, &mut n);
        }
        n
    }

    #[test]
    fn a_contiguous_run_from_before_the_ack_is_clean() {
        let mut t = Track::new(5);
        let mut n = feed(&mut t, &[3, 4, 5, 6, 7], 0);
        t.finish(8, &mut n);
        assert_eq!(n.violations(), 0);
        assert_eq!(n.delivered, 5);
    }

    #[test]
    fn a_run_starting_after_must_from_lost_the_numbers_before_it() {
        let mut t = Track::new(5);
        let n = feed(&mut t, &[7, 8], 0);
        assert_eq!(n.lost, 2);
    }

    #[test]
    fn a_swap_is_out_of_order_and_not_lost() {
        let mut t = Track::new(0);
        let mut n = feed(&mut t, &[0, 1, 3, 2, 4], 0);
        t.age(10 * S, &mut n);
        t.finish(5, &mut n);
        assert_eq!((n.lost, n.out_of_order, n.duplicated), (0, 1, 0));
    }

    #[test]
    fn a_repeat_is_a_duplicate() {
        let mut t = Track::new(0);
        let n = feed(&mut t, &[0, 1, 1, 2, 0], 0);
        assert_eq!((n.lost, n.out_of_order, n.duplicated), (0, 0, 2));
    }

    #[test]
    fn a_gap_becomes_lost_only_after_the_patience() {
        let mut t = Track::new(0);
        let mut n = feed(&mut t, &[0, 3], 10 * S);
        t.age(10 * S + GAP_PATIENCE.as_nanos() as u64 - 1, &mut n);
        assert_eq!(n.lost, 0);
        t.age(10 * S + GAP_PATIENCE.as_nanos() as u64, &mut n);
        assert_eq!(n.lost, 2);
        t.finish(4, &mut n);
        assert_eq!(n.lost, 2);
    }

    #[test]
    fn a_late_gap_fill_within_patience_is_only_out_of_order() {
        let mut t = Track::new(0);
        let mut n = feed(&mut t, &[0, 2], 0);
        t.on_message(1, false, S, &mut n);
        t.age(5 * S, &mut n);
        assert_eq!((n.lost, n.out_of_order), (0, 1));
    }

    #[test]
    fn what_the_publisher_saw_acknowledged_must_arrive_before_the_end() {
        let mut t = Track::new(0);
        let mut n = feed(&mut t, &[0, 1, 2], 0);
        t.finish(6, &mut n);
        assert_eq!(n.lost, 3);
        // Nothing received at all: everything from must_from on is missing.
        let mut n = Counts::default();
        Track::new(4).finish(6, &mut n);
        assert_eq!(n.lost, 2);
        // Acknowledged before the ack of the subscription: not required.
        let mut n = Counts::default();
        Track::new(4).finish(3, &mut n);
        assert_eq!(n.lost, 0);
    }

    #[test]
    fn a_retained_replay_precedes_the_run_without_counting_as_a_gap() {
        let mut t = Track::new(20);
        let mut n = Counts::default();
        t.on_message(8, true, 0, &mut n); // replay of the last retained, 8
        t.on_message(19, false, 0, &mut n); // live from 19 (published before the ack)
        t.on_message(20, false, 0, &mut n);
        t.finish(21, &mut n);
        assert_eq!(n.violations(), 0);
        assert_eq!((n.replayed, n.delivered), (1, 3));
    }

    #[test]
    fn a_replay_repeated_or_older_live_message_is_a_violation() {
        let mut t = Track::new(20);
        let mut n = Counts::default();
        t.on_message(8, true, 0, &mut n);
        t.on_message(8, true, 0, &mut n);
        t.on_message(7, false, 0, &mut n);
        assert_eq!((n.duplicated, n.out_of_order), (1, 1));
    }

    #[test]
    fn only_the_first_message_can_be_a_replay() {
        let mut t = Track::new(20);
        let mut n = Counts::default();
        t.on_message(18, false, 0, &mut n);
        t.on_message(16, true, 0, &mut n); // older retained publish after the run began
        assert_eq!(n.duplicated, 1);
    }

    #[test]
    fn counts_subtract_per_counter() {
        let a = Counts {
            delivered: 10,
            lost: 2,
            ..Counts::default()
        };
        let b = Counts {
            delivered: 4,
            lost: 1,
            ..Counts::default()
        };
        assert_eq!(a.since(&b).delivered, 6);
        assert_eq!(a.since(&b).lost, 1);
    }
}

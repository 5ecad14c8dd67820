//! The bridge's counters, as `/metrics` shows them.

use super::fault::FAULT_REASONS;

/// The counters of `/metrics`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Both links connected and subscribed.
    pub up: bool,
    /// Links connected again after being up.
    pub reconnects: u64,
    /// Bytes of commands waiting for Redis (down, or not taken by the socket yet).
    pub queued_bytes: u64,
    /// Publishes queued for Redis.
    pub published: u64,
    /// Publishes dropped because the queue was full, and their commands' bytes.
    pub dropped_publishes: u64,
    pub dropped_bytes: u64,
    /// Messages from other instances delivered here.
    pub received: u64,
    /// Messages on the channels that were not another relay's (not delivered).
    pub ignored: u64,
    /// Retained values in Redis not loaded (too long, invalid, past the cap).
    pub retained_skipped: u64,
    /// Snapshots of the retained values loaded.
    pub snapshots: u64,
    /// Links dropped, by reason ([`FAULT_REASONS`]).
    pub faults: [u64; 5],
}

impl Stats {
    /// The counters in the Prometheus text format.
    pub fn write_prometheus(&self, s: &mut String) {
        use std::fmt::Write as _;
        let mut one = |name: &str, kind: &str, help: &str, v: u64| {
            let _ = writeln!(
                s,
                "# HELP emberws_redis_{name} {help}\n# TYPE emberws_redis_{name} {kind}\n\
                 emberws_redis_{name} {v}"
            );
        };
        one(
            "link_up",
            "gauge",
            "1 while both links to Redis are up and subscribed.",
            u64::from(self.up),
        );
        one(
            "reconnects_total",
            "counter",
            "Links to Redis connected again after being up.",
            self.reconnects,
        );
        one(
            "queued_bytes",
            "gauge",
            "Bytes of commands waiting for Redis (link down, or not taken by the socket yet).",
            self.queued_bytes,
        );
        one(
            "published_total",
            "counter",
            "Local publishes queued for Redis.",
            self.published,
        );
        one(
            "dropped_publishes_total",
            "counter",
            "Local publishes not sent to Redis: the queue was full.",
            self.dropped_publishes,
        );
        one(
            "dropped_bytes_total",
            "counter",
            "Bytes of the commands of the dropped publishes.",
            self.dropped_bytes,
        );
        one(
            "received_total",
            "counter",
            "Messages of other instances delivered here.",
            self.received,
        );
        one(
            "ignored_total",
            "counter",
            "Messages on the prefix's channels that no relay sent (not delivered).",
            self.ignored,
        );
        one(
            "retained_skipped_total",
            "counter",
            "Retained values in Redis not loaded: too long, invalid, or past the cap.",
            self.retained_skipped,
        );
        one(
            "snapshots_total",
            "counter",
            "Loads of the retained values from Redis.",
            self.snapshots,
        );
        let _ = writeln!(
            s,
            "# HELP emberws_redis_link_errors_total Links to Redis dropped, by reason.\n\
             # TYPE emberws_redis_link_errors_total counter"
        );
        for (reason, n) in FAULT_REASONS.iter().zip(self.faults) {
            let _ = writeln!(
                s,
                "emberws_redis_link_errors_total{{reason=\"{reason}\"}} {n}"
            );
        }
    }
}

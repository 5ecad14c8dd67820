//! The server's counters: a plain struct the loop updates in place and hands out by reference
//! or as a copy ([`crate::ServerHandle::stats`]).

use std::fmt::Write as _;

/// HTTP statuses counted separately in [`Stats::rejected`].
pub const REJECT_STATUSES: [u16; 9] = [400, 403, 404, 405, 426, 431, 503, 401, 500];

/// Close codes counted separately in [`Stats::closes`]; the last slot counts all others.
pub const CLOSE_CODES: [u16; 10] = [1000, 1001, 1002, 1003, 1005, 1006, 1007, 1008, 1009, 1011];

/// Counters since the server started. Cheap to copy.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Connections open now (handshaking, upgraded, or event streams).
    pub connections_open: u64,
    /// Connections upgraded since start.
    pub accepted: u64,
    /// Event streams open now (Server-Sent Events; counted in `connections_open` too).
    pub event_streams_open: u64,
    /// Event streams opened since start.
    pub event_streams_accepted: u64,
    /// Requests refused, by status: the order of [`REJECT_STATUSES`], then all others.
    pub rejected: [u64; REJECT_STATUSES.len() + 1],
    /// Plain HTTP requests answered.
    pub http_requests: u64,
    /// Messages received.
    pub messages_in: u64,
    /// Messages sent (one per recipient), events to event streams included.
    pub messages_out: u64,
    /// Bytes read from sockets.
    pub bytes_in: u64,
    /// Bytes written to sockets.
    pub bytes_out: u64,
    /// Closes by code: the order of [`CLOSE_CODES`], then all others.
    pub closes: [u64; CLOSE_CODES.len() + 1],
    /// Messages dropped for a slow consumer (policy `Drop`).
    pub slow_drops: u64,
    /// Connections closed as slow consumers (policy `Close`).
    pub slow_closes: u64,
    /// Bytes queued now, all connections together.
    pub queued_bytes: u64,
    /// The most bytes ever queued at once.
    pub queued_high_water: u64,
    /// Connections dropped at a deadline (handshake, pong, close).
    pub timeouts: u64,
    /// Local publishes not kept for export because [`crate::Config::max_export_bytes`] was
    /// full ([`crate::Server::drain_exports`]).
    pub exports_dropped: u64,
}

impl Stats {
    pub(crate) fn reject(&mut self, status: u16) {
        let i = REJECT_STATUSES
            .iter()
            .position(|&s| s == status)
            .unwrap_or(REJECT_STATUSES.len());
        if let Some(n) = self.rejected.get_mut(i) {
            *n += 1;
        }
    }

    pub(crate) fn close(&mut self, code: u16) {
        let i = CLOSE_CODES
            .iter()
            .position(|&c| c == code)
            .unwrap_or(CLOSE_CODES.len());
        if let Some(n) = self.closes.get_mut(i) {
            *n += 1;
        }
    }

    pub(crate) fn queued(&mut self, before: usize, after: usize) {
        self.queued_bytes = (self.queued_bytes + after as u64).saturating_sub(before as u64);
        self.queued_high_water = self.queued_high_water.max(self.queued_bytes);
    }

    /// Refusals with this status.
    pub fn rejected_with(&self, status: u16) -> u64 {
        let i = REJECT_STATUSES
            .iter()
            .position(|&s| s == status)
            .unwrap_or(REJECT_STATUSES.len());
        self.rejected.get(i).copied().unwrap_or(0)
    }

    /// Closes with this code.
    pub fn closes_with(&self, code: u16) -> u64 {
        let i = CLOSE_CODES
            .iter()
            .position(|&c| c == code)
            .unwrap_or(CLOSE_CODES.len());
        self.closes.get(i).copied().unwrap_or(0)
    }

    /// The counters as one JSON object.
    pub fn to_json(&self) -> String {
        let mut s = String::with_capacity(512);
        let _ = write!(
            s,
            "{{\"connections_open\":{},\"accepted\":{},\"event_streams_open\":{},\
             \"event_streams_accepted\":{},\"http_requests\":{},\"messages_in\":{},\
             \"messages_out\":{},\"bytes_in\":{},\"bytes_out\":{},\"slow_drops\":{},\
             \"slow_closes\":{},\"queued_bytes\":{},\"queued_high_water\":{},\"timeouts\":{},\
             \"exports_dropped\":{}",
            self.connections_open,
            self.accepted,
            self.event_streams_open,
            self.event_streams_accepted,
            self.http_requests,
            self.messages_in,
            self.messages_out,
            self.bytes_in,
            self.bytes_out,
            self.slow_drops,
            self.slow_closes,
            self.queued_bytes,
            self.queued_high_water,
            self.timeouts,
            self.exports_dropped
        );
        s.push_str(",\"rejected\":{");
        let labels = REJECT_STATUSES
            .iter()
            .map(|s| s.to_string())
            .chain(["other".to_string()]);
        for (i, (label, n)) in labels.zip(self.rejected).enumerate() {
            let _ = write!(s, "{}\"{label}\":{n}", if i > 0 { "," } else { "" });
        }
        s.push_str("},\"closes\":{");
        let labels = CLOSE_CODES
            .iter()
            .map(|s| s.to_string())
            .chain(["other".to_string()]);
        for (i, (label, n)) in labels.zip(self.closes).enumerate() {
            let _ = write!(s, "{}\"{label}\":{n}", if i > 0 { "," } else { "" });
        }
        s.push_str("}}");
        s
    }

    /// The counters in the Prometheus text exposition format.
    pub fn to_prometheus(&self) -> String {
        let mut s = String::with_capacity(2048);
        let mut one = |name: &str, kind: &str, help: &str, value: u64| {
            let _ = writeln!(s, "# HELP emberws_{name} {help}\n# TYPE emberws_{name} {kind}\nemberws_{name} {value}");
        };
        one(
            "connections_open",
            "gauge",
            "Connections open now.",
            self.connections_open,
        );
        one(
            "connections_accepted_total",
            "counter",
            "Connections upgraded.",
            self.accepted,
        );
        one(
            "event_streams_open",
            "gauge",
            "Event streams (Server-Sent Events) open now.",
            self.event_streams_open,
        );
        one(
            "event_streams_accepted_total",
            "counter",
            "Event streams opened.",
            self.event_streams_accepted,
        );
        one(
            "http_requests_total",
            "counter",
            "Plain HTTP requests answered.",
            self.http_requests,
        );
        one(
            "messages_in_total",
            "counter",
            "Messages received.",
            self.messages_in,
        );
        one(
            "messages_out_total",
            "counter",
            "Messages sent, one per recipient.",
            self.messages_out,
        );
        one(
            "bytes_in_total",
            "counter",
            "Bytes read from sockets.",
            self.bytes_in,
        );
        one(
            "bytes_out_total",
            "counter",
            "Bytes written to sockets.",
            self.bytes_out,
        );
        one(
            "slow_consumer_drops_total",
            "counter",
            "Messages dropped for slow consumers.",
            self.slow_drops,
        );
        one(
            "slow_consumer_closes_total",
            "counter",
            "Connections closed as slow consumers.",
            self.slow_closes,
        );
        one(
            "queued_bytes",
            "gauge",
            "Bytes queued for slow sockets now.",
            self.queued_bytes,
        );
        one(
            "queued_bytes_high_water",
            "gauge",
            "The most bytes ever queued at once.",
            self.queued_high_water,
        );
        one(
            "timeouts_total",
            "counter",
            "Connections dropped at a deadline.",
            self.timeouts,
        );
        one(
            "exports_dropped_total",
            "counter",
            "Local publishes not kept for export: the export buffer was full.",
            self.exports_dropped,
        );
        let _ = writeln!(s, "# HELP emberws_connections_rejected_total Requests refused, by HTTP status.\n# TYPE emberws_connections_rejected_total counter");
        for (i, n) in self.rejected.iter().enumerate() {
            let status = REJECT_STATUSES
                .get(i)
                .map_or("other".to_string(), |s| s.to_string());
            let _ = writeln!(
                s,
                "emberws_connections_rejected_total{{status=\"{status}\"}} {n}"
            );
        }
        let _ = writeln!(s, "# HELP emberws_closes_total Connections closed, by close code.\n# TYPE emberws_closes_total counter");
        for (i, n) in self.closes.iter().enumerate() {
            let code = CLOSE_CODES
                .get(i)
                .map_or("other".to_string(), |c| c.to_string());
            let _ = writeln!(s, "emberws_closes_total{{code=\"{code}\"}} {n}");
        }
        s
    }
}

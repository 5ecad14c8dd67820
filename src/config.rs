//! [`Config`]: every limit of the server, with its default and what it costs.
//!
//! Every limit counts **bytes**, never parts: a flood of tiny frames or headers is bounded by
//! the same bytes as one big one. Defaults are sized for many connections on a small board.

use std::time::Duration;

/// The most header lines a request head may carry; the parser's table lives on the loop's stack.
pub const MAX_HEADERS: usize = 64;

/// Levels a subscription pattern may have at most (MQTT topics in use have a handful): the
/// topic table walks a wildcard pattern's levels recursively, so their depth is bounded
/// whatever a peer sends. A deeper pattern is refused with [`crate::Subscribed::Limit`].
pub const MAX_PATTERN_LEVELS: usize = 256;

/// What happens to a connection whose write queue would pass `max_backpressure`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlowConsumer {
    /// Close the connection with 1008 (policy violation). The default.
    Close,
    /// Drop the message for that connection only, and count it in the stats.
    Drop,
}

/// Every limit of the server. Build with [`Config::default`] and the setters.
///
/// Memory per connection (see the README): idle = the connection record and its state;
/// worst case = idle + `max_message_size` + max(`max_backpressure`, `max_send_size`); server
/// worst case = `max_connections` × worst case + `read_buffer_size` + the spare buffers
/// (`max_spare_buffers`) + `max_inbox_bytes` + the fixed loop tables.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Config {
    /// Pending connections the kernel queues before `accept` (the listen backlog, capped by
    /// `net.core.somaxconn`). Default 1024. Kernel memory only.
    pub listen_backlog: u32,
    /// The kernel's send buffer of each connection (`SO_SNDBUF`, set on the listener and
    /// inherited by every connection it accepts; Linux reserves twice the value). `None`
    /// (default): the kernel's own sizing, which grows a busy socket's buffer up to
    /// `net.ipv4.tcp_wmem`'s maximum (4 MiB by default). A cap bounds the kernel memory a
    /// connection that is sent to can take, at the cost of throughput to a distant peer.
    pub socket_send_buffer: Option<usize>,
    /// The kernel's receive buffer of each connection (`SO_RCVBUF`, on the listener before
    /// it listens, so that the TCP window is sized for it; Linux reserves twice the value).
    /// `None` (default): autotuning up to `net.ipv4.tcp_rmem`'s maximum (6 MiB by default).
    pub socket_recv_buffer: Option<usize>,
    /// Open connections (handshaking or upgraded) at most; past it, 503 with `Retry-After`.
    /// Default 1024. Costs nothing until used.
    pub max_connections: usize,
    /// Connections from one IP address at most; 0 = no cap. Default 0. Past it, 503.
    pub max_connections_per_ip: usize,
    /// Request head bytes at most; past it, 431. Default 8 KiB, held only while the head is
    /// incomplete across reads.
    pub max_request_head: usize,
    /// Header lines at most (≤ [`MAX_HEADERS`]); past it, 431. Default 32.
    pub max_headers: usize,
    /// Message payload bytes at most, all fragments together; past it, close 1009 before
    /// buffering. Default 64 KiB. A connection holds up to this much only while a message is
    /// incomplete.
    pub max_message_size: usize,
    /// Queued outgoing bytes per connection (what its socket did not take). A message is
    /// queued behind others only while the total stays within this; past it, the
    /// [`SlowConsumer`] policy. A message always fits an empty queue, so a connection holds
    /// at most `max_backpressure` or one message (≤ `max_send_size`), whichever is larger.
    /// Default 64 KiB.
    pub max_backpressure: usize,
    /// The largest message the server sends; a larger one is refused
    /// ([`crate::SendStatus::TooLarge`]) and nothing is sent. Never less than
    /// `max_message_size`, so whatever the server accepts it can echo. Default 128 KiB.
    pub max_send_size: usize,
    /// [`crate::Handler::on_drain`] is called when a connection's queue falls from above this
    /// many bytes to at or below it. Default 16 KiB.
    pub drain_low_water: usize,
    /// Bytes the inbox from other threads ([`crate::ServerHandle`]) holds at most, each
    /// command counted as its message bytes plus 64; past it, handles wait or get
    /// [`crate::HandleError::Full`]. Default 1 MiB, used only while commands wait.
    pub max_inbox_bytes: usize,
    /// Bytes of local publishes kept between two [`crate::Server::drain_exports`] (topic +
    /// payload + 9 each), for a bridge to another broker; past it, a publish is not kept and
    /// [`crate::Stats::exports_dropped`] counts it. Default 0: nothing is kept.
    pub max_export_bytes: usize,
    /// Free buffers the pool keeps for reuse, each at most min(`max_message_size`, 64 KiB)
    /// (or `max_request_head` if larger). Default 32: up to 2 MiB with the defaults, held
    /// only after a burst of incomplete messages.
    pub max_spare_buffers: usize,
    /// The policy for a connection past `max_backpressure`. Default [`SlowConsumer::Close`].
    pub slow_consumer: SlowConsumer,
    /// The one loop-wide read buffer. Default 64 KiB, allocated once per server.
    pub read_buffer_size: usize,
    /// Bytes read from one connection in one turn of the loop before the others get theirs;
    /// the rest waits for the next turn, behind every connection that was ready. Default
    /// 64 KiB.
    pub read_budget: usize,
    /// Frames (control frames included) handled for one connection in one turn: once past
    /// it, at the end of the read in progress, the connection waits for its next turn.
    /// Default 256.
    pub frame_budget: u32,
    /// Time allowed from accept to a complete request head. Default 10 s.
    pub handshake_timeout: Duration,
    /// A ping after this long without any frame from the peer; `None` = no pings. Default 30 s.
    pub ping_interval: Option<Duration>,
    /// Time allowed for any frame after a ping before the TCP connection is dropped (the
    /// handler sees 1006). Default 10 s.
    pub pong_timeout: Duration,
    /// Time allowed for the peer's close frame and the final flush after a close. Default 5 s.
    pub close_timeout: Duration,
    /// Close with 1000 after this long without a data message either way; `None` = never.
    /// Default `None`.
    pub idle_timeout: Option<Duration>,
    /// The `retry:` an event stream begins with: how long a browser's `EventSource` waits
    /// before it reconnects after the stream ends (whole milliseconds); `None` = no `retry:`
    /// line (browsers then wait a few seconds of their own). Default 2 s.
    pub event_retry: Option<Duration>,
    /// A keep-alive comment (`: keep-alive`) to an event stream after this long without
    /// anything written to it, so proxies keep the connection and a peer that is gone is
    /// found by the write failing; `None` = none. An event stream gets no pings: there is no
    /// pong to wait for. Default 15 s. 14 bytes per keep-alive, written only when nothing is
    /// queued.
    pub event_keepalive: Option<Duration>,
    /// Subprotocols the server speaks, most preferred first. Default none.
    pub protocols: Vec<String>,
    /// Topic subscriptions per connection at most. Default 64. Each costs the pattern's bytes
    /// plus about 70 bytes of table entries (32 when other connections hold the same pattern,
    /// and the pattern's bytes once more when none does; a wildcard pattern's levels that no
    /// other pattern has, about 100 bytes each); the table of each connection's patterns takes
    /// 32 bytes per connection slot, up to the highest slot that subscribed.
    pub max_subscriptions: usize,
    /// Origins allowed to upgrade (exact match on the `Origin` header); empty = any.
    /// Requests from other origins get 403. Default empty.
    pub allowed_origins: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen_backlog: 1024,
            socket_send_buffer: None,
            socket_recv_buffer: None,
            max_connections: 1024,
            max_connections_per_ip: 0,
            max_request_head: 8 * 1024,
            max_headers: 32,
            max_message_size: 64 * 1024,
            max_backpressure: 64 * 1024,
            max_send_size: 128 * 1024,
            drain_low_water: 16 * 1024,
            max_inbox_bytes: 1024 * 1024,
            max_export_bytes: 0,
            max_spare_buffers: 32,
            slow_consumer: SlowConsumer::Close,
            read_buffer_size: 64 * 1024,
            read_budget: 64 * 1024,
            frame_budget: 256,
            handshake_timeout: Duration::from_secs(10),
            ping_interval: Some(Duration::from_secs(30)),
            pong_timeout: Duration::from_secs(10),
            close_timeout: Duration::from_secs(5),
            idle_timeout: None,
            event_retry: Some(Duration::from_secs(2)),
            event_keepalive: Some(Duration::from_secs(15)),
            protocols: Vec::new(),
            max_subscriptions: 64,
            allowed_origins: Vec::new(),
        }
    }
}

macro_rules! setters {
    ($($(#[$doc:meta])* $name:ident: $ty:ty;)*) => {
        $(
            $(#[$doc])*
            #[must_use]
            pub fn $name(mut self, value: $ty) -> Self {
                self.$name = value;
                self
            }
        )*
    };
}

impl Config {
    setters! {
        /// Sets [`Config::listen_backlog`].
        listen_backlog: u32;
        /// Sets [`Config::max_connections`].
        max_connections: usize;
        /// Sets [`Config::max_connections_per_ip`].
        max_connections_per_ip: usize;
        /// Sets [`Config::max_request_head`].
        max_request_head: usize;
        /// Sets [`Config::max_headers`].
        max_headers: usize;
        /// Sets [`Config::max_message_size`].
        max_message_size: usize;
        /// Sets [`Config::max_backpressure`].
        max_backpressure: usize;
        /// Sets [`Config::slow_consumer`].
        slow_consumer: SlowConsumer;
        /// Sets [`Config::read_buffer_size`].
        read_buffer_size: usize;
        /// Sets [`Config::read_budget`].
        read_budget: usize;
        /// Sets [`Config::frame_budget`].
        frame_budget: u32;
        /// Sets [`Config::max_send_size`].
        max_send_size: usize;
        /// Sets [`Config::drain_low_water`].
        drain_low_water: usize;
        /// Sets [`Config::max_inbox_bytes`].
        max_inbox_bytes: usize;
        /// Sets [`Config::socket_send_buffer`].
        socket_send_buffer: Option<usize>;
        /// Sets [`Config::socket_recv_buffer`].
        socket_recv_buffer: Option<usize>;
        /// Sets [`Config::max_export_bytes`].
        max_export_bytes: usize;
        /// Sets [`Config::max_spare_buffers`].
        max_spare_buffers: usize;
        /// Sets [`Config::handshake_timeout`].
        handshake_timeout: Duration;
        /// Sets [`Config::ping_interval`].
        ping_interval: Option<Duration>;
        /// Sets [`Config::pong_timeout`].
        pong_timeout: Duration;
        /// Sets [`Config::close_timeout`].
        close_timeout: Duration;
        /// Sets [`Config::idle_timeout`].
        idle_timeout: Option<Duration>;
        /// Sets [`Config::event_retry`].
        event_retry: Option<Duration>;
        /// Sets [`Config::event_keepalive`].
        event_keepalive: Option<Duration>;
        /// Sets [`Config::protocols`].
        protocols: Vec<String>;
        /// Sets [`Config::max_subscriptions`].
        max_subscriptions: usize;
        /// Sets [`Config::allowed_origins`].
        allowed_origins: Vec<String>;
    }

    /// The largest message the server sends: `max_send_size`, or `max_message_size` if that
    /// is larger.
    pub fn send_limit(&self) -> usize {
        self.max_send_size.max(self.max_message_size)
    }

    /// The most bytes one connection can make the server hold: idle + a message being
    /// assembled, with a control frame's payload (125 B) that arrived split behind it + its
    /// outgoing queue (`max_backpressure`, or one message of up to the send limit that fits
    /// an empty queue, whichever is larger, plus a frame header), for a handler state of `S`.
    pub fn worst_case_connection_bytes<S>(&self) -> usize {
        crate::server::idle_connection_bytes::<S>()
            + self.max_message_size.max(self.max_request_head)
            + 125
            + self.max_backpressure.max(self.send_limit() + 14)
    }

    /// The loop's own buffers, whatever the connections: the read buffer, the batch for the
    /// connection being served and the scratch batch (each shrunk back to 64 KiB, the scratch
    /// up to one frame of the send limit), the pool's spares, the inbox from other threads,
    /// and the timer wheel's 1024 slot heads.
    pub fn fixed_bytes(&self) -> usize {
        self.read_buffer_size
            + crate::server::BATCH_BYTES
            + crate::server::BATCH_BYTES.max(self.send_limit() + 14)
            + self.max_spare_buffers * self.spare_buffer_size()
            + self.max_inbox_bytes
            + self.max_export_bytes
            + crate::server::timers::WHEEL_SLOTS * crate::server::timers::SLOT_BYTES
    }

    /// What TLS adds to the loop's own buffers (feature `tls`): the scratch buffers that TLS
    /// records are read, decrypted and encrypted in, shared by every TLS connection of the
    /// loop's thread, allocated when the loop first serves TLS.
    #[cfg(feature = "tls")]
    pub fn tls_fixed_bytes(&self) -> usize {
        crate::transport::tls::scratch_bytes(self.read_buffer_size)
    }

    /// The size of each spare buffer the pool keeps.
    pub fn spare_buffer_size(&self) -> usize {
        self.max_message_size
            .min(64 * 1024)
            .max(self.max_request_head)
    }

    /// Checks the limits against each other.
    ///
    /// # Errors
    /// A message naming the first field out of range.
    pub fn validate(&self) -> Result<(), &'static str> {
        if self.max_connections == 0 {
            return Err("max_connections must be at least 1");
        }
        if self.max_request_head < 64 {
            return Err("max_request_head must be at least 64 bytes");
        }
        if self.max_headers == 0 || self.max_headers > MAX_HEADERS {
            return Err("max_headers must be between 1 and 64");
        }
        if self.max_message_size == 0 || self.max_message_size > (1 << 31) {
            return Err("max_message_size must be between 1 byte and 2 GiB");
        }
        if self.read_buffer_size < 1024 {
            return Err("read_buffer_size must be at least 1 KiB");
        }
        if self.read_budget == 0 {
            return Err("read_budget must be at least 1 byte");
        }
        if self.frame_budget == 0 {
            return Err("frame_budget must be at least 1");
        }
        if self.max_send_size == 0 || self.max_send_size > (1 << 31) {
            return Err("max_send_size must be between 1 byte and 2 GiB");
        }
        if self.max_inbox_bytes < 1024 {
            return Err("max_inbox_bytes must be at least 1 KiB");
        }
        for buf in [self.socket_send_buffer, self.socket_recv_buffer]
            .into_iter()
            .flatten()
        {
            if !(1024..=1 << 30).contains(&buf) {
                return Err("socket buffers must be between 1 KiB and 1 GiB");
            }
        }
        if self.event_keepalive.is_some_and(|d| d.is_zero()) {
            return Err("event_keepalive must be above zero (None for no keep-alives)");
        }
        if self.protocols.len() > 255 {
            return Err("protocols may list at most 255 subprotocols");
        }
        Ok(())
    }
}

//! The program's settings: one TOML file (`--config FILE`), with every flag as a key and the
//! flags given on the command line over it.
//!
//! [`load`] reads a file into [`Settings`] and checks each value's range, naming the key and
//! its line in every error; [`Settings::apply`] lays the flags over it; [`Settings::check`]
//! holds the rules between keys (TLS files, secure by default); [`Settings::to_config`] gives
//! the library's limits and [`Settings::to_toml`] what `--print-config` prints, which reads
//! back to the same settings. `emberws.example.toml` documents every key.

use std::net::SocketAddr;
use std::ops::{Range, RangeInclusive};
use std::path::{Path, PathBuf};
use std::time::Duration;

use emberws::Config;
use serde::{Deserialize, Serialize};
use toml::de::{DeTable, DeValue};
use toml::Spanned;

/// Every setting of the program, as the config file spells it.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// The relay (default) or the echo server; the positional `echo`.
    pub mode: Mode,
    /// Plain listeners (`--listen`, repeatable). Flags replace the file's list.
    pub listen: Vec<SocketAddr>,
    /// TLS listeners (`--tls-listen`, repeatable). Flags replace the file's list.
    pub tls_listen: Vec<SocketAddr>,
    /// Anyone who can reach a listener off loopback may connect (`--allow-anonymous`).
    pub allow_anonymous: bool,
    /// Origins allowed to upgrade; empty = any (`--allow-origin`, repeatable). Flags replace
    /// the file's list.
    pub allow_origin: Vec<String>,
    /// Seconds between two samples of the relay's `$SYS/` figures; 0 = none
    /// (`--sys-interval`).
    pub sys_interval: f64,
    /// `[tls]`: the certificate chain and key of the TLS listeners.
    pub tls: TlsFiles,
    /// `[limits]`.
    pub limits: Limits,
    /// `[auth]`: who may connect.
    pub auth: Auth,
    /// `[anonymous]`: what clients without a token may do, where they are allowed.
    pub anonymous: Patterns,
    /// `[rate]`: per-connection token buckets.
    pub rate: Rate,
    /// `[redis]`: relays that share topics and retained values through one Redis.
    pub redis: Redis,
    /// `[history]`: the messages kept for subscribers that come back with `since`.
    pub history: History,
    /// The state file: retained values and history kept across restarts (`--state`). Unset:
    /// nothing is kept.
    pub state: Option<PathBuf>,
}

/// What the program serves.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// JSON pub/sub, the dashboard, `/events`, `/healthz` and `/metrics`.
    #[default]
    Relay,
    /// Every message back to its sender.
    Echo,
}

/// `[tls]`: PEM files, both or neither, and only with a TLS listener. SIGHUP re-reads them.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsFiles {
    /// The certificate chain (`--tls-cert`).
    pub cert: Option<PathBuf>,
    /// Its private key (`--tls-key`).
    pub key: Option<PathBuf>,
}

/// `[limits]`: what one connection, and the server, may hold. Seconds are `f64`.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Open connections at most; past it, 503 (`--max-connections`).
    pub max_connections: usize,
    /// Connections per client IP; 0 = no cap (`--max-connections-per-ip`).
    pub max_connections_per_ip: usize,
    /// The largest message in bytes; past it, close 1009 (`--max-message`).
    pub max_message: usize,
    /// Bytes queued per slow connection before 1008 (`--max-backpressure`).
    pub max_backpressure: usize,
    /// Topic subscriptions per connection (`--max-subscriptions`).
    pub max_subscriptions: usize,
    /// Seconds from accept to a complete request head (`--handshake-timeout`).
    pub handshake_timeout: f64,
    /// Seconds of quiet before a ping; 0 = never (`--ping-interval`).
    pub ping_interval: f64,
    /// Seconds allowed for an answer to a ping (`--pong-timeout`).
    pub pong_timeout: f64,
    /// The deepest nesting of a publish's data (`--max-json-depth`).
    pub max_json_depth: usize,
    /// Bytes of retained messages, all topics together (`--max-retained-bytes`).
    pub max_retained_bytes: usize,
    /// The kernel's send buffer per connection, `SO_SNDBUF`; 0 = the kernel's own sizing
    /// (`--socket-send-buffer`).
    pub socket_send_buffer: usize,
    /// The kernel's receive buffer per connection, `SO_RCVBUF`; 0 = the kernel's own sizing
    /// (`--socket-recv-buffer`).
    pub socket_recv_buffer: usize,
}

/// `[auth]`: clients with tokens, and how failed attempts are slowed down.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Auth {
    /// The clients file: names, token hashes, patterns (`--clients`).
    pub clients: Option<PathBuf>,
    /// With a clients file, `/metrics` and `/healthz` need a client's token.
    pub protect_status: bool,
    /// Failed token attempts from one IP before it is locked out.
    pub failures: u32,
    /// Seconds of the first lockout, doubling on each further failure.
    pub lockout: f64,
    /// Seconds, the cap of the doubling.
    pub lockout_max: f64,
}

/// `[anonymous]`: topic patterns for clients without a token, where anonymous access is
/// allowed.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Patterns {
    /// Where they may publish.
    pub publish: Vec<String>,
    /// What they may subscribe to.
    pub subscribe: Vec<String>,
}

/// `[history]`: the latest messages of each topic, for subscribers that come back with
/// `since`; topics starting with `$` are not kept.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct History {
    /// Messages kept per topic; 0 = no history (`--history-messages`).
    pub messages: usize,
    /// Bytes history holds in all: frames, topics, 32 B per message, a topic's name + 64 B
    /// (`--history-bytes`).
    pub bytes: usize,
}

impl Default for History {
    fn default() -> Self {
        History {
            messages: crate::relay::HISTORY_MESSAGES,
            bytes: crate::relay::HISTORY_BYTES,
        }
    }
}

/// `[rate]`: token buckets per connection; a rate of 0 switches its bucket off.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Rate {
    /// Publishes per second (`--rate-publishes`).
    pub publishes: f64,
    /// Publishes allowed in a burst.
    pub publish_burst: f64,
    /// Bytes per second of every message a connection sends (`--rate-bytes`).
    pub bytes: f64,
    /// Bytes allowed in a burst.
    pub bytes_burst: f64,
    /// Refusals a connection may accumulate (one forgiven per second) before close 1008.
    pub strikes: u32,
    /// The limits apply to loopback peers too.
    pub loopback: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            mode: Mode::Relay,
            listen: Vec::new(),
            tls_listen: Vec::new(),
            allow_anonymous: false,
            allow_origin: Vec::new(),
            sys_interval: 10.0,
            tls: TlsFiles::default(),
            limits: Limits::default(),
            auth: Auth::default(),
            anonymous: Patterns::default(),
            rate: Rate::default(),
            redis: Redis::default(),
            history: History::default(),
            state: None,
        }
    }
}

/// `[redis]`: the bridge to other relays through one Redis (feature `redis`).
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Redis {
    /// `redis://HOST[:PORT][/DB]`, HOST an IP address or `localhost` (`--redis`). Unset: no
    /// bridge.
    pub url: Option<String>,
    /// Channels are `PREFIX:TOPIC`, the retained values the hash `PREFIX:retained`
    /// (`--redis-prefix`).
    pub prefix: String,
    /// Bytes of commands waiting for Redis at most (link down, or Redis slow); past it a
    /// publish is dropped and counted.
    pub queue_bytes: usize,
}

impl Default for Redis {
    fn default() -> Self {
        Redis {
            url: None,
            prefix: "emberws".into(),
            queue_bytes: 1 << 20,
        }
    }
}

/// Where the Redis of `[redis] url` is: resolved without a DNS lookup.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RedisTarget {
    pub addr: SocketAddr,
    /// `SELECT`ed when not 0.
    pub db: u32,
}

/// The port of a `redis://` URL without one.
const REDIS_PORT: u16 = 6379;

/// Reads `redis://HOST[:PORT][/DB]`, HOST an IP address (`[…]` for IPv6) or `localhost`.
///
/// # Errors
/// What is wrong with it, in a sentence.
pub fn redis_target(url: &str) -> Result<RedisTarget, String> {
    if url.starts_with("rediss://") {
        return Err("TLS to Redis (rediss://) is not supported".into());
    }
    let rest = url
        .strip_prefix("redis://")
        .ok_or("a Redis URL starts with redis://, as in redis://127.0.0.1:6379")?;
    if rest.contains(['?', '#']) {
        return Err("a Redis URL takes no query or fragment: redis://HOST[:PORT][/DB]".into());
    }
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    if authority.contains('@') {
        return Err("credentials in the Redis URL are not supported".into());
    }
    let (host, port) = match authority.strip_prefix('[') {
        Some(v6) => {
            let (host, after) = v6.split_once(']').ok_or("an IPv6 address needs its ]")?;
            (host, after.strip_prefix(':'))
        }
        None => match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        },
    };
    let port = match port {
        Some(p) => p
            .parse::<u16>()
            .map_err(|_| format!("'{p}' is not a port number"))?,
        None => REDIS_PORT,
    };
    let ip: std::net::IpAddr = if host.eq_ignore_ascii_case("localhost") {
        std::net::Ipv4Addr::LOCALHOST.into()
    } else {
        host.parse().map_err(|_| {
            format!(
                "'{host}' is not an IP address or localhost (the relay looks no names \
                 up: give the address)"
            )
        })?
    };
    let db = match path {
        "" => 0,
        db => db
            .parse()
            .map_err(|_| format!("'/{db}' is not a database number"))?,
    };
    Ok(RedisTarget {
        addr: SocketAddr::new(ip, port),
        db,
    })
}

/// Whether `prefix` is 1 to 64 of `A-Z a-z 0-9 - _ . : /` (no glob characters, no spaces).
fn redis_prefix(key: &'static str, prefix: &str) -> Result<(), Invalid> {
    let ok = (1..=64).contains(&prefix.len())
        && prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:/".contains(&b));
    ok.then_some(()).ok_or_else(|| Invalid {
        key,
        message: format!("'{prefix}' is not 1 to 64 of A-Z a-z 0-9 - _ . : /"),
    })
}

/// The library's defaults where the library has the limit.
impl Default for Limits {
    fn default() -> Self {
        let lib = Config::default();
        Limits {
            max_connections: lib.max_connections,
            max_connections_per_ip: lib.max_connections_per_ip,
            max_message: lib.max_message_size,
            max_backpressure: lib.max_backpressure,
            max_subscriptions: lib.max_subscriptions,
            handshake_timeout: lib.handshake_timeout.as_secs_f64(),
            ping_interval: lib.ping_interval.map_or(0.0, |d| d.as_secs_f64()),
            pong_timeout: lib.pong_timeout.as_secs_f64(),
            max_json_depth: 64,
            max_retained_bytes: 1 << 20,
            socket_send_buffer: 0,
            socket_recv_buffer: 0,
        }
    }
}

impl Default for Auth {
    fn default() -> Self {
        Auth {
            clients: None,
            protect_status: true,
            failures: 5,
            lockout: 1.0,
            lockout_max: 300.0,
        }
    }
}

/// Anonymous clients may do everything by default: publish anywhere (but to `$` topics,
/// which no one may), read every topic and the relay's `$SYS/` figures (which `#` does not
/// reach).
impl Default for Patterns {
    fn default() -> Self {
        Patterns {
            publish: vec!["#".into()],
            subscribe: vec!["#".into(), "$SYS/#".into()],
        }
    }
}

impl Default for Rate {
    fn default() -> Self {
        Rate {
            publishes: 50.0,
            publish_burst: 100.0,
            bytes: 65536.0,
            bytes_burst: 262_144.0,
            strikes: 50,
            loopback: false,
        }
    }
}

/// The plain listener when none is configured at all.
const DEFAULT_LISTEN: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(
    std::net::Ipv4Addr::LOCALHOST,
    9001,
));

/// Seconds above this are refused (as the flags always did): about 31 years.
const MAX_SECONDS: f64 = 1e9;

/// The shortest `sys_interval` other than 0, in seconds: bounds the relay's own publishing.
const MIN_SYS_INTERVAL: f64 = 0.1;

/// serde_json refuses data nested deeper than this whatever the limit says.
const MAX_JSON_DEPTH: usize = 128;

/// One command-line flag that sets a key, its value parsed. [`Settings::apply`] lays them over
/// the file.
#[derive(Clone, Debug, PartialEq)]
pub enum Flag {
    /// `echo` → `mode`.
    Echo,
    /// `--listen` → `listen`.
    Listen(SocketAddr),
    /// `--tls-listen` → `tls_listen`.
    TlsListen(SocketAddr),
    /// `--tls-cert` → `tls.cert`.
    TlsCert(PathBuf),
    /// `--tls-key` → `tls.key`.
    TlsKey(PathBuf),
    /// `--allow-anonymous` → `allow_anonymous = true`.
    AllowAnonymous,
    /// `--allow-origin` → `allow_origin`.
    AllowOrigin(String),
    /// `--sys-interval` → `sys_interval`.
    SysInterval(f64),
    /// `--clients` → `auth.clients`.
    Clients(PathBuf),
    /// `--max-connections` → `limits.max_connections`.
    MaxConnections(usize),
    /// `--max-connections-per-ip` → `limits.max_connections_per_ip`.
    MaxConnectionsPerIp(usize),
    /// `--max-message` → `limits.max_message`.
    MaxMessage(usize),
    /// `--max-backpressure` → `limits.max_backpressure`.
    MaxBackpressure(usize),
    /// `--max-subscriptions` → `limits.max_subscriptions`.
    MaxSubscriptions(usize),
    /// `--handshake-timeout` → `limits.handshake_timeout`.
    HandshakeTimeout(f64),
    /// `--ping-interval` → `limits.ping_interval`.
    PingInterval(f64),
    /// `--pong-timeout` → `limits.pong_timeout`.
    PongTimeout(f64),
    /// `--max-json-depth` → `limits.max_json_depth`.
    MaxJsonDepth(usize),
    /// `--max-retained-bytes` → `limits.max_retained_bytes`.
    MaxRetainedBytes(usize),
    /// `--socket-send-buffer` → `limits.socket_send_buffer`.
    SocketSendBuffer(usize),
    /// `--socket-recv-buffer` → `limits.socket_recv_buffer`.
    SocketRecvBuffer(usize),
    /// `--rate-publishes` → `rate.publishes`.
    RatePublishes(f64),
    /// `--rate-bytes` → `rate.bytes`.
    RateBytes(f64),
    /// `--redis` → `redis.url`.
    Redis(String),
    /// `--redis-prefix` → `redis.prefix`.
    RedisPrefix(String),
    /// `--history-messages` → `history.messages`.
    HistoryMessages(usize),
    /// `--history-bytes` → `history.bytes`.
    HistoryBytes(usize),
    /// `--state` → `state`.
    State(PathBuf),
}

/// The flag that sets a key, for messages about a value that may have come from either.
fn flag_of(key: &str) -> Option<&'static str> {
    Some(match key {
        "listen" => "--listen",
        "tls_listen" => "--tls-listen",
        "allow_origin" => "--allow-origin",
        "sys_interval" => "--sys-interval",
        "tls.cert" => "--tls-cert",
        "tls.key" => "--tls-key",
        "auth.clients" => "--clients",
        "limits.max_connections" => "--max-connections",
        "limits.max_connections_per_ip" => "--max-connections-per-ip",
        "limits.max_message" => "--max-message",
        "limits.max_backpressure" => "--max-backpressure",
        "limits.max_subscriptions" => "--max-subscriptions",
        "limits.handshake_timeout" => "--handshake-timeout",
        "limits.ping_interval" => "--ping-interval",
        "limits.pong_timeout" => "--pong-timeout",
        "limits.max_json_depth" => "--max-json-depth",
        "limits.max_retained_bytes" => "--max-retained-bytes",
        "limits.socket_send_buffer" => "--socket-send-buffer",
        "limits.socket_recv_buffer" => "--socket-recv-buffer",
        "rate.publishes" => "--rate-publishes",
        "rate.bytes" => "--rate-bytes",
        "redis.url" => "--redis",
        "redis.prefix" => "--redis-prefix",
        "history.messages" => "--history-messages",
        "history.bytes" => "--history-bytes",
        "state" => "--state",
        _ => return None,
    })
}

/// A value out of range: the dotted key it is under, and what is wrong with it.
#[derive(Debug)]
struct Invalid {
    key: &'static str,
    message: String,
}

/// Seconds: a finite number from 0 (or above 0 when `zero` is false) to [`MAX_SECONDS`].
fn seconds(key: &'static str, value: f64, zero: bool) -> Result<(), Invalid> {
    let ok = value.is_finite() && value <= MAX_SECONDS && (value > 0.0 || zero && value == 0.0);
    let least = if zero { "0" } else { "more than 0" };
    ok.then_some(()).ok_or_else(|| Invalid {
        key,
        message: format!("{value} is not a number of seconds from {least} to {MAX_SECONDS}"),
    })
}

/// A rate or burst: a finite number, 0 or more.
fn non_negative(key: &'static str, value: f64) -> Result<(), Invalid> {
    (value.is_finite() && value >= 0.0)
        .then_some(())
        .ok_or_else(|| Invalid {
            key,
            message: format!("{value} is not a finite number, 0 or more"),
        })
}

/// A whole number within `range`.
fn within(
    key: &'static str,
    value: usize,
    range: RangeInclusive<usize>,
    what: &str,
) -> Result<(), Invalid> {
    let (least, most) = (range.start(), range.end());
    range.contains(&value).then_some(()).ok_or_else(|| Invalid {
        key,
        message: if *most == usize::MAX {
            format!("{value} is out of range: at least {least}")
        } else {
            format!("{value} is out of range: {what} from {least} to {most}")
        },
    })
}

/// `check`'s answers about the TLS files.
const TLS_FILES_WITHOUT_LISTENER: &str =
    "--tls-cert and --tls-key (tls.cert, tls.key) need a --tls-listen (tls_listen)";
const TLS_LISTENER_WITHOUT_FILES: &str =
    "--tls-listen (tls_listen) needs both --tls-cert and --tls-key (tls.cert, tls.key)";

impl Settings {
    /// The plain listeners to open: `listen`, or 127.0.0.1:9001 when both lists are empty.
    pub fn effective_listen(&self) -> Vec<SocketAddr> {
        if self.listen.is_empty() && self.tls_listen.is_empty() {
            vec![DEFAULT_LISTEN]
        } else {
            self.listen.clone()
        }
    }

    /// The library's limits. What the server sends may be a little larger than what it
    /// takes (the relay wraps each publish in an envelope, the echo sends back what it got),
    /// so `max_send_size` is at least `max_message + 4096`. Never panics; the values are
    /// meaningful once [`Settings::check`] has passed.
    pub fn to_config(&self) -> Config {
        let l = &self.limits;
        let secs = |s: f64| Duration::try_from_secs_f64(s.max(0.0)).unwrap_or(Duration::MAX);
        let lib = Config::default();
        let max_send_size = lib.max_send_size.max(l.max_message.saturating_add(4096));
        lib.max_connections(l.max_connections)
            .max_connections_per_ip(l.max_connections_per_ip)
            .max_message_size(l.max_message)
            .max_send_size(max_send_size)
            .max_backpressure(l.max_backpressure)
            .max_subscriptions(l.max_subscriptions)
            .handshake_timeout(secs(l.handshake_timeout))
            .ping_interval((l.ping_interval > 0.0).then(|| secs(l.ping_interval)))
            .pong_timeout(secs(l.pong_timeout))
            .allowed_origins(self.allow_origin.clone())
            .socket_send_buffer((l.socket_send_buffer > 0).then_some(l.socket_send_buffer))
            .socket_recv_buffer((l.socket_recv_buffer > 0).then_some(l.socket_recv_buffer))
            // The bridge takes the publishes of each turn: as many as its queue holds.
            .max_export_bytes(match (&self.redis.url, self.mode) {
                (Some(_), Mode::Relay) => self.redis.queue_bytes,
                _ => 0,
            })
    }

    /// Lays the flags over these settings, in order: a later flag wins over an earlier one
    /// and over the file, and the repeatable flags (`--listen`, `--tls-listen`,
    /// `--allow-origin`) replace the file's list with theirs.
    pub fn apply(&mut self, flags: &[Flag]) {
        let (mut listen, mut tls_listen, mut origins) = (None, None, None);
        for flag in flags {
            let l = &mut self.limits;
            match flag {
                Flag::Echo => self.mode = Mode::Echo,
                Flag::Listen(a) => listen.get_or_insert_with(Vec::new).push(*a),
                Flag::TlsListen(a) => tls_listen.get_or_insert_with(Vec::new).push(*a),
                Flag::TlsCert(p) => self.tls.cert = Some(p.clone()),
                Flag::TlsKey(p) => self.tls.key = Some(p.clone()),
                Flag::AllowAnonymous => self.allow_anonymous = true,
                Flag::AllowOrigin(o) => origins.get_or_insert_with(Vec::new).push(o.clone()),
                Flag::SysInterval(s) => self.sys_interval = *s,
                Flag::Clients(p) => self.auth.clients = Some(p.clone()),
                Flag::MaxConnections(n) => l.max_connections = *n,
                Flag::MaxConnectionsPerIp(n) => l.max_connections_per_ip = *n,
                Flag::MaxMessage(n) => l.max_message = *n,
                Flag::MaxBackpressure(n) => l.max_backpressure = *n,
                Flag::MaxSubscriptions(n) => l.max_subscriptions = *n,
                Flag::HandshakeTimeout(s) => l.handshake_timeout = *s,
                Flag::PingInterval(s) => l.ping_interval = *s,
                Flag::PongTimeout(s) => l.pong_timeout = *s,
                Flag::MaxJsonDepth(n) => l.max_json_depth = *n,
                Flag::MaxRetainedBytes(n) => l.max_retained_bytes = *n,
                Flag::SocketSendBuffer(n) => l.socket_send_buffer = *n,
                Flag::SocketRecvBuffer(n) => l.socket_recv_buffer = *n,
                Flag::RatePublishes(r) => self.rate.publishes = *r,
                Flag::RateBytes(r) => self.rate.bytes = *r,
                Flag::Redis(url) => self.redis.url = Some(url.clone()),
                Flag::RedisPrefix(p) => self.redis.prefix = p.clone(),
                Flag::HistoryMessages(n) => self.history.messages = *n,
                Flag::HistoryBytes(n) => self.history.bytes = *n,
                Flag::State(p) => self.state = Some(p.clone()),
            }
        }
        if let Some(listen) = listen {
            self.listen = listen;
        }
        if let Some(tls_listen) = tls_listen {
            self.tls_listen = tls_listen;
        }
        if let Some(origins) = origins {
            self.allow_origin = origins;
        }
    }

    /// Each value on its own: the first one out of range.
    fn validate(&self) -> Result<(), Invalid> {
        seconds("sys_interval", self.sys_interval, true)?;
        if self.sys_interval > 0.0 && self.sys_interval < MIN_SYS_INTERVAL {
            return Err(Invalid {
                key: "sys_interval",
                message: format!(
                    "{} is below {MIN_SYS_INTERVAL} seconds (0 switches the figures off)",
                    self.sys_interval
                ),
            });
        }
        let l = &self.limits;
        within(
            "limits.max_connections",
            l.max_connections,
            1..=usize::MAX,
            "connections",
        )?;
        within("limits.max_message", l.max_message, 1..=1 << 31, "bytes")?;
        seconds("limits.handshake_timeout", l.handshake_timeout, false)?;
        seconds("limits.ping_interval", l.ping_interval, true)?;
        seconds("limits.pong_timeout", l.pong_timeout, true)?;
        within(
            "limits.max_json_depth",
            l.max_json_depth,
            1..=MAX_JSON_DEPTH,
            "levels",
        )?;
        for (key, bytes) in [
            ("limits.socket_send_buffer", l.socket_send_buffer),
            ("limits.socket_recv_buffer", l.socket_recv_buffer),
        ] {
            if bytes != 0 {
                within(key, bytes, 1024..=1 << 30, "bytes (or 0)")?;
            }
        }
        seconds("auth.lockout", self.auth.lockout, true)?;
        seconds("auth.lockout_max", self.auth.lockout_max, true)?;
        if self.auth.lockout_max < self.auth.lockout {
            return Err(Invalid {
                key: "auth.lockout_max",
                message: format!(
                    "{} is less than auth.lockout ({})",
                    self.auth.lockout_max, self.auth.lockout
                ),
            });
        }
        let r = &self.rate;
        non_negative("rate.publishes", r.publishes)?;
        non_negative("rate.publish_burst", r.publish_burst)?;
        non_negative("rate.bytes", r.bytes)?;
        non_negative("rate.bytes_burst", r.bytes_burst)?;
        if let Some(url) = &self.redis.url {
            redis_target(url).map_err(|message| Invalid {
                key: "redis.url",
                message,
            })?;
        }
        redis_prefix("redis.prefix", &self.redis.prefix)?;
        within(
            "history.messages",
            self.history.messages,
            0..=1_000_000,
            "messages",
        )?;
        within("history.bytes", self.history.bytes, 0..=1 << 30, "bytes")?;
        within(
            "redis.queue_bytes",
            self.redis.queue_bytes,
            4096..=1 << 40,
            "bytes",
        )?;
        Ok(())
    }

    /// How often the relay publishes its `$SYS/` figures; `None`: never. Meaningful once
    /// [`Settings::check`] has passed.
    pub fn sys_interval(&self) -> Option<Duration> {
        (self.sys_interval > 0.0)
            .then(|| Duration::try_from_secs_f64(self.sys_interval).ok())
            .flatten()
    }

    /// Where Redis is, with `redis.url` set (and checked by [`Settings::check`]).
    pub fn redis_target(&self) -> Option<RedisTarget> {
        redis_target(self.redis.url.as_deref()?).ok()
    }

    /// Checks the settings as a whole, flags included: every value in range, the TLS files
    /// both or neither and only with a TLS listener, and secure by default: a listener off
    /// loopback only with a clients file (`auth.clients`) or `allow_anonymous`.
    ///
    /// # Errors
    /// A message naming the key (and its flag) and what to change.
    pub fn check(&self) -> Result<(), String> {
        self.validate().map_err(|e| match flag_of(e.key) {
            Some(flag) => format!("{} ({flag}): {}", e.key, e.message),
            None => format!("{}: {}", e.key, e.message),
        })?;
        match (&self.tls.cert, &self.tls.key, self.tls_listen.is_empty()) {
            (Some(_), Some(_), false) | (None, None, true) => {}
            (_, _, true) => return Err(TLS_FILES_WITHOUT_LISTENER.into()),
            _ => return Err(TLS_LISTENER_WITHOUT_FILES.into()),
        }
        let exposed: Vec<String> = self
            .effective_listen()
            .iter()
            .chain(&self.tls_listen)
            .filter(|a| !a.ip().is_loopback())
            .map(ToString::to_string)
            .collect();
        if self.redis.url.is_some() {
            if self.mode != Mode::Relay {
                return Err("--redis (redis.url) shares the relay's topics: not for echo".into());
            }
            // A retained publish goes out as HSET and PUBLISH, each with its frame.
            let least = 2 * self.to_config().send_limit() + 2048;
            if self.redis.queue_bytes < least {
                return Err(format!(
                    "redis.queue_bytes ({}) holds less than one retained publish of the largest \
                     message (limits.max_message + 4096, twice: {least}): raise it",
                    self.redis.queue_bytes
                ));
            }
        }
        if self.state.is_some() && self.mode != Mode::Relay {
            return Err("--state (state) keeps the relay's messages: not for echo".into());
        }
        // The echo server has no clients: only the relay checks tokens.
        let authenticated = self.auth.clients.is_some() && self.mode == Mode::Relay;
        if !exposed.is_empty() && !authenticated && !self.allow_anonymous {
            return Err(format!(
                "refusing to listen on {} without authentication: anyone who can reach it could \
                 publish and subscribe. Listen on loopback, give the clients who may connect \
                 (--clients FILE, or auth.clients), or pass --allow-anonymous (allow_anonymous = \
                 true) to allow anyone",
                exposed.join(", ")
            ));
        }
        Ok(())
    }

    /// The settings as a config file, the effective listeners filled in: what
    /// `--print-config` prints, and what [`load`] reads back to the same settings.
    ///
    /// # Panics
    /// Never for settings made by [`load`] and the flags: toml refuses only paths that are not
    /// UTF-8, and both read paths only as UTF-8 text.
    pub fn to_toml(&self) -> String {
        let mut effective = self.clone();
        effective.listen = self.effective_listen();
        let body = toml::to_string(&effective).expect("every path in Settings is UTF-8");
        format!("# emberws --print-config: the effective configuration\n\n{body}")
    }
}

/// Reads a config file: every key is optional (its default applies), an unknown key is an
/// error, and each value is checked for its range. The rules between keys wait for
/// [`Settings::check`], once the flags are laid over.
///
/// # Errors
/// `FILE:LINE: KEY: what is wrong`, or `FILE: …` when the file cannot be read.
pub fn load(path: &Path) -> Result<Settings, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    parse(&text).map_err(|e| format!("{}:{e}", path.display()))
}

/// [`load`] on text: the error is `LINE: KEY: message` (the caller adds the file name).
fn parse(text: &str) -> Result<Settings, String> {
    let doc = DeTable::parse(text).map_err(|e| located(text, e.span(), None, e.message()))?;
    let settings: Settings = Settings::deserialize(toml::de::Deserializer::from(doc.clone()))
        .map_err(|e| {
            let key = e.span().and_then(|s| key_at(doc.get_ref(), s.start));
            // serde's message does not always quote the value ("invalid socket address
            // syntax"): add it when it is short and missing.
            let quoted = e.span().and_then(|s| text.get(s)).filter(|v| {
                v.len() <= 60
                    && !v.contains('\n')
                    && !e.message().contains(v.trim_matches(['"', '\'']))
            });
            let message = match quoted {
                Some(v) => format!("{}: {v}", e.message()),
                None => e.message().to_owned(),
            };
            located(text, e.span(), key.as_deref(), &message)
        })?;
    settings.validate().map_err(|e| {
        let span = key_span(doc.get_ref(), e.key);
        located(text, span, Some(e.key), &e.message)
    })?;
    Ok(settings)
}

/// `LINE: KEY: message`, from a byte span in `text` (`?` for the line when there is none).
fn located(text: &str, span: Option<Range<usize>>, key: Option<&str>, message: &str) -> String {
    let line = span.map_or_else(
        || "?".to_owned(),
        |s| crate::relay::clients::line_of(text, s.start).to_string(),
    );
    match key {
        Some(key) => format!("{line}: {key}: {message}"),
        None => format!("{line}: {message}"),
    }
}

/// The dotted key whose name or value covers byte `at`, the deepest one.
fn key_at(table: &DeTable<'_>, at: usize) -> Option<String> {
    for (key, value) in table.iter() {
        if let DeValue::Table(inner) = value.get_ref() {
            if let Some(path) = key_at(inner, at) {
                return Some(format!("{}.{path}", key.get_ref()));
            }
        }
        if key.span().contains(&at) || value.span().contains(&at) {
            return Some(key.get_ref().to_string());
        }
    }
    None
}

/// Where the dotted `key` is written in the document (its name), if it is.
fn key_span(table: &DeTable<'_>, key: &str) -> Option<Range<usize>> {
    let (first, rest) = match key.split_once('.') {
        Some((first, rest)) => (first, Some(rest)),
        None => (key, None),
    };
    let (name, value): (&Spanned<_>, &Spanned<DeValue<'_>>) =
        table.iter().find(|(k, _)| k.get_ref() == first)?;
    match (rest, value.get_ref()) {
        (None, _) => Some(name.span()),
        (Some(rest), DeValue::Table(inner)) => key_span(inner, rest),
        (Some(_), _) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every key set to something other than its default.
    const EVERY_KEY: &str = r#"
mode = "echo"
state = "/var/lib/emberws/state.json"
listen = ["127.0.0.1:7001", "[::1]:7002"]
tls_listen = ["127.0.0.1:7443"]
allow_anonymous = true
allow_origin = ["https://a.example", "https://b.example"]
sys_interval = 2.5

[tls]
cert = "/etc/emberws/cert.pem"
key = "/etc/emberws/key.pem"

[limits]
max_connections = 10
max_connections_per_ip = 3
max_message = 1000
max_backpressure = 2000
max_subscriptions = 7
handshake_timeout = 2.5
ping_interval = 0
pong_timeout = 4.0
max_json_depth = 8
max_retained_bytes = 4096
socket_send_buffer = 16384
socket_recv_buffer = 8192

[auth]
clients = "/etc/emberws/clients.toml"
protect_status = false
failures = 9
lockout = 0.5
lockout_max = 60.0

[anonymous]
publish = []
subscribe = ["public/#", "news/+"]

[rate]
publishes = 5.5
publish_burst = 11
bytes = 1024
bytes_burst = 2048
strikes = 3
loopback = true

[redis]
url = "redis://[::1]:6380/2"
prefix = "site-a/relays"
queue_bytes = 300000

[history]
messages = 10
bytes = 4096
"#;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn every_key_is_read() {
        let s = parse(EVERY_KEY).unwrap();
        assert_eq!(s.mode, Mode::Echo);
        assert_eq!(s.listen, [addr("127.0.0.1:7001"), addr("[::1]:7002")]);
        assert_eq!(s.tls_listen, [addr("127.0.0.1:7443")]);
        assert!(s.allow_anonymous);
        assert_eq!(s.allow_origin, ["https://a.example", "https://b.example"]);
        assert_eq!(s.sys_interval, 2.5);
        assert_eq!(s.sys_interval(), Some(Duration::from_millis(2500)));
        assert_eq!(
            s.tls.cert.as_deref(),
            Some(Path::new("/etc/emberws/cert.pem"))
        );
        assert_eq!(
            s.tls.key.as_deref(),
            Some(Path::new("/etc/emberws/key.pem"))
        );
        let l = &s.limits;
        assert_eq!(l.max_connections, 10);
        assert_eq!(l.max_connections_per_ip, 3);
        assert_eq!(l.max_message, 1000);
        assert_eq!(l.max_backpressure, 2000);
        assert_eq!(l.max_subscriptions, 7);
        assert_eq!(l.handshake_timeout, 2.5);
        assert_eq!(l.ping_interval, 0.0);
        assert_eq!(l.pong_timeout, 4.0);
        assert_eq!(l.max_json_depth, 8);
        assert_eq!(l.max_retained_bytes, 4096);
        assert_eq!((l.socket_send_buffer, l.socket_recv_buffer), (16384, 8192));
        let a = &s.auth;
        assert_eq!(
            a.clients.as_deref(),
            Some(Path::new("/etc/emberws/clients.toml"))
        );
        assert!(!a.protect_status);
        assert_eq!(a.failures, 9);
        assert_eq!(a.lockout, 0.5);
        assert_eq!(a.lockout_max, 60.0);
        assert!(s.anonymous.publish.is_empty());
        assert_eq!(s.anonymous.subscribe, ["public/#", "news/+"]);
        let r = &s.rate;
        assert_eq!(r.publishes, 5.5);
        assert_eq!(r.publish_burst, 11.0);
        assert_eq!(r.bytes, 1024.0);
        assert_eq!(r.bytes_burst, 2048.0);
        assert_eq!(r.strikes, 3);
        assert!(r.loopback);
        let r = &s.redis;
        assert_eq!(r.url.as_deref(), Some("redis://[::1]:6380/2"));
        assert_eq!(r.prefix, "site-a/relays");
        assert_eq!(r.queue_bytes, 300_000);
        assert_eq!((s.history.messages, s.history.bytes), (10, 4096));
        assert_eq!(
            s.state.as_deref(),
            Some(Path::new("/var/lib/emberws/state.json"))
        );
        assert_eq!(
            s.redis_target(),
            Some(RedisTarget {
                addr: addr("[::1]:6380"),
                db: 2
            })
        );
        // Nothing above is a default, so every field was read.
        let d = Settings::default();
        assert_ne!(s.limits, d.limits);
        assert_ne!(s.redis, d.redis);
        assert_ne!(s.history, d.history);
        assert!(s.check().unwrap_err().contains("not for echo"));
        let stateless = Settings {
            redis: Redis::default(),
            ..s.clone()
        };
        assert!(stateless.check().unwrap_err().contains("--state"));
        let relay = Settings {
            mode: Mode::Relay,
            ..s
        };
        assert!(relay.check().is_ok(), "{:?}", relay.check());
    }

    #[test]
    fn an_empty_file_is_the_defaults() {
        assert_eq!(parse("").unwrap(), Settings::default());
        let d = Settings::default();
        assert_eq!(d.effective_listen(), [DEFAULT_LISTEN]);
        assert_eq!(d.limits.max_message, 65536);
        assert_eq!(
            d.limits.max_subscriptions,
            Config::default().max_subscriptions
        );
        assert_eq!(d.limits.handshake_timeout, 10.0);
        assert_eq!(d.limits.ping_interval, 30.0);
        assert_eq!(d.limits.pong_timeout, 10.0);
        assert_eq!(d.sys_interval(), Some(Duration::from_secs(10)));
        assert_eq!(d.anonymous.subscribe, ["#", "$SYS/#"]);
        assert!(d.check().is_ok());
    }

    /// `parse`'s error must start with `LINE: KEY` and mention `also`.
    fn refused(text: &str, line: usize, key: &str, also: &str) {
        let err = parse(text).expect_err(text);
        assert!(
            err.starts_with(&format!("{line}: {key}: ")),
            "expected line {line} and key {key}: {err}"
        );
        assert!(err.contains(also), "expected {also:?} in: {err}");
    }

    #[test]
    fn an_unknown_key_is_named_with_its_line() {
        refused(
            "mode = \"relay\"\nlisten_on = []\n",
            2,
            "listen_on",
            "listen_on",
        );
        for section in [
            "tls",
            "limits",
            "auth",
            "anonymous",
            "rate",
            "redis",
            "history",
        ] {
            refused(
                &format!("mode = \"relay\"\n\n[{section}]\nbogus = 1\n"),
                4,
                &format!("{section}.bogus"),
                "unknown field `bogus`",
            );
        }
        refused(
            "[limits]\nmax_message = 1\nmax_conections = 3\n",
            3,
            "limits.max_conections",
            "max_connections",
        );
        refused(
            "[limit]\nmax_message = 1\n",
            1,
            "limit",
            "unknown field `limit`",
        );
        refused("limits.bogus = 1\n", 1, "limits.bogus", "bogus");
    }

    #[test]
    fn a_wrong_type_is_named_with_its_line() {
        refused(
            "\n[limits]\nmax_message = \"big\"\n",
            3,
            "limits.max_message",
            "expected usize",
        );
        refused("allow_anonymous = 1\n", 1, "allow_anonymous", "bool");
        refused("mode = \"mirror\"\n", 1, "mode", "mirror");
        refused(
            "listen = [\"127.0.0.1:1\", \"nowhere\"]\n",
            1,
            "listen",
            "socket address",
        );
        refused("\n\n[rate]\nstrikes = -1\n", 4, "rate.strikes", "");
    }

    #[test]
    fn a_value_out_of_range_is_named_with_its_line() {
        refused(
            "[limits]\nping_interval = 1\nmax_message = 0\n",
            3,
            "limits.max_message",
            "out of range",
        );
        refused(
            "[limits]\npong_timeout = -1.0\n",
            2,
            "limits.pong_timeout",
            "seconds",
        );
        refused(
            "[limits]\nhandshake_timeout = 0\n",
            2,
            "limits.handshake_timeout",
            "more than 0",
        );
        refused("[rate]\n\nbytes = nan\n", 3, "rate.bytes", "finite");
        refused("sys_interval = -1\n", 1, "sys_interval", "seconds");
        refused("\nsys_interval = 0.01\n", 2, "sys_interval", "0 switches");
        refused("[auth]\nlockout = inf\n", 2, "auth.lockout", "seconds");
        refused(
            "[limits]\nmax_json_depth = 1000\n",
            2,
            "limits.max_json_depth",
            "128",
        );
        refused(
            "[auth]\nlockout = 10\nlockout_max = 5\n",
            3,
            "auth.lockout_max",
            "less than auth.lockout",
        );
        for (url, why) in [
            ("redis.example.com:6379", "redis://"),
            (
                "redis://redis.example.com:6379",
                "not an IP address or localhost",
            ),
            ("rediss://127.0.0.1", "TLS"),
            ("redis://user:pw@127.0.0.1", "credentials"),
            ("redis://127.0.0.1:http", "port"),
            ("redis://127.0.0.1/zero", "database"),
            ("redis://[::1", "]"),
            ("redis://127.0.0.1?db=1", "query"),
        ] {
            refused(
                &format!("[redis]\nprefix = \"p\"\nurl = \"{url}\"\n"),
                3,
                "redis.url",
                why,
            );
        }
        for prefix in ["", "has space", "glob*", &"x".repeat(65)] {
            refused(
                &format!("\n[redis]\nprefix = \"{prefix}\"\n"),
                3,
                "redis.prefix",
                "1 to 64",
            );
        }
        refused(
            "[redis]\nqueue_bytes = 100\n",
            2,
            "redis.queue_bytes",
            "out of range",
        );
        refused(
            "[history]\nmessages = 1\nbytes = 2147483648\n",
            3,
            "history.bytes",
            "out of range",
        );
        refused(
            "[history]\nmessages = 1000001\n",
            2,
            "history.messages",
            "out of range",
        );
    }

    #[test]
    fn redis_urls_resolve_without_dns() {
        let target = |url| redis_target(url).unwrap();
        assert_eq!(
            target("redis://127.0.0.1:7000"),
            RedisTarget {
                addr: addr("127.0.0.1:7000"),
                db: 0
            }
        );
        assert_eq!(target("redis://localhost").addr, addr("127.0.0.1:6379"));
        assert_eq!(target("redis://LOCALHOST:1/").addr, addr("127.0.0.1:1"));
        assert_eq!(target("redis://[::1]/15").db, 15);
        assert_eq!(target("redis://[::1]/15").addr, addr("[::1]:6379"));
        assert_eq!(
            target("redis://10.0.0.7:6380/3").addr,
            addr("10.0.0.7:6380")
        );
    }

    #[test]
    fn a_syntax_error_names_its_line() {
        let err = parse("mode = \"relay\"\n[limits\n").unwrap_err();
        assert!(err.starts_with("2: "), "{err}");
    }

    #[test]
    fn flags_override_the_file_and_lists_are_replaced() {
        let mut s = parse(EVERY_KEY).unwrap();
        s.apply(&[
            Flag::Listen(addr("127.0.0.1:1")),
            Flag::MaxMessage(5),
            Flag::Listen(addr("127.0.0.1:2")),
            Flag::AllowOrigin("https://c.example".into()),
            Flag::PingInterval(3.0),
            Flag::MaxMessage(6),
            Flag::Clients("other.toml".into()),
            Flag::RateBytes(0.0),
            Flag::Redis("redis://127.0.0.1:7".into()),
            Flag::SysInterval(0.0),
        ]);
        assert_eq!(s.sys_interval(), None, "0 = off");
        assert_eq!(s.listen, [addr("127.0.0.1:1"), addr("127.0.0.1:2")]);
        assert_eq!(s.allow_origin, ["https://c.example"]);
        assert_eq!(s.limits.max_message, 6, "the last flag wins");
        assert_eq!(s.limits.ping_interval, 3.0);
        assert_eq!(s.auth.clients.as_deref(), Some(Path::new("other.toml")));
        assert_eq!(s.rate.bytes, 0.0);
        assert_eq!(s.redis.url.as_deref(), Some("redis://127.0.0.1:7"));
        // What no flag named keeps the file's value.
        assert_eq!(s.redis.prefix, "site-a/relays");
        assert_eq!(s.tls_listen, [addr("127.0.0.1:7443")]);
        assert_eq!(s.limits.max_connections, 10);
        assert_eq!(s.rate.publishes, 5.5);

        let mut d = Settings::default();
        d.apply(&[
            Flag::Echo,
            Flag::TlsListen(addr("127.0.0.1:3")),
            Flag::TlsCert("c.pem".into()),
            Flag::TlsKey("k.pem".into()),
            Flag::AllowAnonymous,
            Flag::MaxConnections(1),
            Flag::MaxConnectionsPerIp(2),
            Flag::MaxBackpressure(3),
            Flag::MaxSubscriptions(4),
            Flag::HandshakeTimeout(5.0),
            Flag::PongTimeout(6.0),
            Flag::MaxJsonDepth(7),
            Flag::MaxRetainedBytes(8),
            Flag::RatePublishes(9.0),
            Flag::SocketSendBuffer(4096),
            Flag::SocketRecvBuffer(2048),
            Flag::Redis("redis://localhost".into()),
            Flag::RedisPrefix("other".into()),
            Flag::HistoryMessages(3),
            Flag::HistoryBytes(5000),
            Flag::State("s.json".into()),
        ]);
        assert_eq!((d.history.messages, d.history.bytes), (3, 5000));
        assert_eq!(d.state.as_deref(), Some(Path::new("s.json")));
        assert_eq!(d.mode, Mode::Echo);
        assert_eq!(d.tls_listen, [addr("127.0.0.1:3")]);
        assert_eq!(d.tls.cert.as_deref(), Some(Path::new("c.pem")));
        assert_eq!(d.tls.key.as_deref(), Some(Path::new("k.pem")));
        assert!(d.allow_anonymous);
        let l = &d.limits;
        assert_eq!(
            (
                l.max_connections,
                l.max_connections_per_ip,
                l.max_backpressure
            ),
            (1, 2, 3)
        );
        assert_eq!(
            (l.max_subscriptions, l.max_json_depth, l.max_retained_bytes),
            (4, 7, 8)
        );
        assert_eq!((l.handshake_timeout, l.pong_timeout), (5.0, 6.0));
        assert_eq!(d.rate.publishes, 9.0);
        assert_eq!((l.socket_send_buffer, l.socket_recv_buffer), (4096, 2048));
        assert_eq!(d.redis.url.as_deref(), Some("redis://localhost"));
        assert_eq!(d.redis.prefix, "other");
        assert!(
            d.listen.is_empty() && d.effective_listen().is_empty(),
            "TLS only"
        );
    }

    #[test]
    fn to_toml_reads_back_to_the_same_settings() {
        let s = parse(EVERY_KEY).unwrap();
        assert_eq!(parse(&s.to_toml()).unwrap(), s);
        let d = Settings::default();
        let back = parse(&d.to_toml()).unwrap();
        assert_eq!(
            back.listen,
            [DEFAULT_LISTEN],
            "the effective listeners are printed"
        );
        assert_eq!(
            Settings {
                listen: Vec::new(),
                ..back
            },
            d
        );
    }

    #[test]
    fn the_example_file_is_the_defaults() {
        let example = include_str!("../../../emberws.example.toml");
        assert_eq!(parse(example).unwrap(), Settings::default());
    }

    #[test]
    fn check_holds_the_rules_between_keys() {
        let tls = |cert: bool, key: bool, listen: bool| Settings {
            tls_listen: if listen {
                vec![addr("127.0.0.1:1")]
            } else {
                vec![]
            },
            tls: TlsFiles {
                cert: cert.then(|| "c.pem".into()),
                key: key.then(|| "k.pem".into()),
            },
            ..Settings::default()
        };
        assert!(tls(true, true, true).check().is_ok());
        assert!(tls(false, false, false).check().is_ok());
        assert!(tls(true, false, true)
            .check()
            .unwrap_err()
            .contains("needs both"));
        assert!(tls(false, false, true)
            .check()
            .unwrap_err()
            .contains("needs both"));
        assert!(tls(true, true, false)
            .check()
            .unwrap_err()
            .contains("need a --tls-listen"));

        let open = Settings {
            listen: vec![addr("127.0.0.1:1"), addr("0.0.0.0:2")],
            tls_listen: vec![addr("[::]:3")],
            tls: tls(true, true, true).tls,
            ..Settings::default()
        };
        let err = open.check().unwrap_err();
        for needle in ["0.0.0.0:2", "[::]:3", "--clients FILE", "--allow-anonymous"] {
            assert!(err.contains(needle), "{needle:?} missing in: {err}");
        }
        assert!(!err.contains("127.0.0.1:1"), "{err}");
        let mut with_clients = open.clone();
        with_clients.auth.clients = Some("clients.toml".into());
        assert!(with_clients.check().is_ok());
        let mut anonymous = open;
        anonymous.allow_anonymous = true;
        assert!(anonymous.check().is_ok());

        let mut bridged = Settings::default();
        bridged.apply(&[Flag::Redis("redis://127.0.0.1".into())]);
        assert!(bridged.check().is_ok());
        bridged.apply(&[Flag::MaxMessage(1 << 20)]);
        let err = bridged.check().unwrap_err();
        assert!(err.contains("redis.queue_bytes (1048576)"), "{err}");
        bridged.redis.queue_bytes = 3 << 20;
        assert!(bridged.check().is_ok());
        bridged.apply(&[Flag::Echo]);
        assert!(bridged.check().unwrap_err().contains("not for echo"));
        let mut bad = Settings::default();
        bad.apply(&[Flag::Redis("redis://db.local".into())]);
        let err = bad.check().unwrap_err();
        assert!(err.starts_with("redis.url (--redis): "), "{err}");

        let mut flagged = Settings::default();
        flagged.apply(&[Flag::MaxMessage(0)]);
        let err = flagged.check().unwrap_err();
        assert!(
            err.starts_with("limits.max_message (--max-message): "),
            "{err}"
        );
    }

    #[test]
    fn to_config_carries_the_limits() {
        let mut s = parse(EVERY_KEY).unwrap();
        let c = s.to_config();
        assert_eq!(c.max_connections, 10);
        assert_eq!(c.max_connections_per_ip, 3);
        assert_eq!(c.max_message_size, 1000);
        assert_eq!(c.max_backpressure, 2000);
        assert_eq!(c.max_subscriptions, 7);
        assert_eq!(c.handshake_timeout, Duration::from_millis(2500));
        assert_eq!(c.ping_interval, None, "0 = never");
        assert_eq!(c.pong_timeout, Duration::from_secs(4));
        assert_eq!(c.allowed_origins, s.allow_origin);
        assert_eq!(c.max_send_size, Config::default().max_send_size);
        assert_eq!(c.max_export_bytes, 0, "no bridge in echo mode");
        s.mode = Mode::Relay;
        assert_eq!(
            s.to_config().max_export_bytes,
            300_000,
            "the bridge's queue"
        );
        s.limits.max_message = 1 << 20;
        s.limits.ping_interval = 1.5;
        let c = s.to_config();
        assert_eq!(c.max_send_size, (1 << 20) + 4096);
        assert_eq!(c.ping_interval, Some(Duration::from_millis(1500)));
        assert!(c.validate().is_ok());
    }
}

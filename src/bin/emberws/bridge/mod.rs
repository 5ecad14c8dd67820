//! The Redis bridge (feature `redis`): relays on one Redis act as one for publish, subscribe
//! and retain.
//!
//! Every local publish goes out as `PUBLISH prefix:TOPIC ENVELOPE` ([`envelope`]: the
//! instance id, whether it was retained or cleared, the relay's `message` frame); every
//! instance subscribes to `prefix:*` and hands what the others published to its local
//! subscribers, skipping its own. Retained values live in the hash `prefix:retained` (`HSET`,
//! `HDEL`), loaded with `HGETALL` after every (re)connect ([`snapshot`]).
//!
//! Two connections, each a [`link::Link`] with time passed in: the command link (PUBLISH,
//! HSET, HDEL, HGETALL, PING and SELECT, in the order given: one publisher's messages reach
//! everyone in publish order) and the subscriber link (`PSUBSCRIBE`, PING). [`Bridge`] is
//! their sans-IO state: bytes to write, bytes read, deadlines, and what the local side must
//! do ([`Local`]); `net.rs` moves the bytes on the loop's own sockets, without blocking.
//!
//! Bounded: commands wait in one [`outbox::Outbox`] of `queue_bytes`, whether the link is down
//! or Redis is slow (past it a publish is dropped and counted); each link reads into one
//! fixed buffer (one message of the relay's largest frame, with its channel); a snapshot
//! stages at most the retained cap.

pub mod envelope;
pub mod fault;
pub mod link;
pub mod local;
pub mod net;
pub mod outbox;
pub mod snapshot;
pub mod stats;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::Instant;

use emberws::proto::resp::{self, Limits, PubSub, RespError, Value};
use emberws::proto::Status;
use log::{debug, info, warn};

use envelope::{InstanceId, Kind};
pub use fault::{ErrorKind, Fault};
use link::{Due, Link};
use outbox::Outbox;
use snapshot::Snapshot;
pub use stats::Stats;

/// Topics a snapshot in flight remembers as changed since it was asked for (their current
/// values win over the snapshot's); past this many, another snapshot follows.
const MAX_TOUCHED: usize = 256;

/// Room in a link's read buffer beside one frame: a pmessage's pattern, channel and headers.
const READ_ROOM: usize = 1024;

/// Which connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Which {
    /// PUBLISH, HSET, HDEL, HGETALL, SELECT, PING.
    Commands,
    /// PSUBSCRIBE, then pmessages.
    Subscriber,
}

impl Which {
    fn name(self) -> &'static str {
        match self {
            Which::Commands => "command",
            Which::Subscriber => "subscriber",
        }
    }
}

/// A command on the command link, to know what its reply is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Command {
    Select,
    Publish,
    HSet,
    HDel,
    HGetAll,
    Ping,
}

impl Command {
    fn name(self) -> &'static str {
        match self {
            Command::Select => "SELECT",
            Command::Publish => "PUBLISH",
            Command::HSet => "HSET",
            Command::HDel => "HDEL",
            Command::HGetAll => "HGETALL",
            Command::Ping => "PING",
        }
    }
}

/// What the bridge needs of the local relay.
pub trait Local {
    /// A message another instance published: for [`Kind::Retained`] and [`Kind::Cleared`]
    /// the topic's retained value is set or cleared first, then the frame is delivered to
    /// the local subscribers of `topic`.
    fn remote(&mut self, topic: &str, frame: &str, kind: Kind);
    /// The retained values in Redis: they replace the local ones, except the `touched`
    /// topics, whose current local value (or its absence) is newer.
    fn load_retained(&mut self, values: HashMap<String, String>, touched: &[String]);
    /// Whether `topic` and `frame` may be delivered: a publish topic and a `message` frame.
    fn acceptable(&self, topic: &str, frame: &str) -> bool;
}

/// The bridge's settings.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Where Redis is (resolved once, at start).
    pub addr: SocketAddr,
    /// `SELECT`ed on the command link when not 0 (pub/sub is global in Redis).
    pub db: u32,
    /// Channels are `prefix:TOPIC`, the hash `prefix:retained`.
    pub prefix: String,
    /// Bytes of commands waiting for Redis at most.
    pub queue_bytes: usize,
    /// The largest frame the relay sends ([`emberws::Config::send_limit`]).
    pub max_frame: usize,
    /// The relay's retained cap: a snapshot stages at most this much.
    pub max_retained_bytes: usize,
    pub id: InstanceId,
}

/// Where the snapshot of the retained values is.
#[derive(Debug)]
enum Sync {
    /// Loaded; nothing asked.
    Idle,
    /// To ask, once both links are up.
    Wanted,
    /// HGETALL queued or written, its reply not begun.
    Asked,
    /// Its reply being read.
    Reading(Snapshot),
}

/// A link's fixed read buffer.
#[derive(Debug)]
struct ReadBuf {
    buf: Box<[u8]>,
    filled: usize,
    limits: Limits,
}

impl ReadBuf {
    fn new(len: usize, max_array_len: usize) -> ReadBuf {
        ReadBuf {
            buf: vec![0; len].into_boxed_slice(),
            filled: 0,
            limits: Limits {
                max_value_len: len,
                max_bulk_len: len - 64,
                max_array_len,
                max_depth: 2,
                ..Limits::DEFAULT
            },
        }
    }

    /// Drops the first `used` bytes.
    fn consume(&mut self, used: usize) {
        self.buf.copy_within(used..self.filled, 0);
        self.filled -= used;
    }
}

/// The bridge's state, without sockets.
pub struct Bridge {
    settings: Settings,
    /// `prefix:*`, glob characters of the prefix escaped.
    pattern: Vec<u8>,
    /// `prefix:retained`.
    hash: Vec<u8>,
    cmd: Link,
    sub: Link,
    outbox: Outbox,
    /// The sub link's commands (PSUBSCRIBE, PING): control commands only.
    sub_out: Outbox,
    /// What each reply owed on the command link answers, in order.
    owed: VecDeque<Command>,
    /// The command of each command in `outbox`, in order, not yet written whole.
    pending: VecDeque<Command>,
    cmd_in: ReadBuf,
    sub_in: ReadBuf,
    subscribed: bool,
    sync: Sync,
    /// Another snapshot after the one in flight.
    again: bool,
    touched: Vec<String>,
    /// A connect failure was logged: the next ones go to debug until the link is up.
    quiet: [bool; 2],
    /// "link up" was logged, and not "link down" since.
    said_up: bool,
    rng: u64,
    channel: Vec<u8>,
    payload: Vec<u8>,
    stats: Stats,
}

impl Bridge {
    /// A bridge whose links connect at `now`.
    pub fn new(settings: Settings, now: Instant) -> Bridge {
        let mut pattern = Vec::with_capacity(settings.prefix.len() + 2);
        for b in settings.prefix.bytes() {
            if matches!(b, b'*' | b'?' | b'[' | b']' | b'\\') {
                pattern.push(b'\\');
            }
            pattern.push(b);
        }
        pattern.extend_from_slice(b":*");
        let hash = format!("{}:retained", settings.prefix).into_bytes();
        let read_len = settings.max_frame + 2 * settings.prefix.len() + READ_ROOM;
        Bridge {
            rng: settings.id.seed(),
            outbox: Outbox::new(settings.queue_bytes),
            sub_out: Outbox::new(0),
            cmd_in: ReadBuf::new(read_len, 8),
            sub_in: ReadBuf::new(read_len, 8),
            settings,
            pattern,
            hash,
            cmd: Link::new(now),
            sub: Link::new(now),
            owed: VecDeque::new(),
            pending: VecDeque::new(),
            subscribed: false,
            sync: Sync::Wanted,
            again: false,
            touched: Vec::new(),
            quiet: [false; 2],
            said_up: false,
            channel: Vec::new(),
            payload: Vec::new(),
            stats: Stats::default(),
        }
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    pub fn stats(&self) -> Stats {
        Stats {
            up: self.is_up(),
            queued_bytes: self.outbox.queued_bytes() as u64,
            ..self.stats
        }
    }

    /// Both links up, and subscribed.
    pub fn is_up(&self) -> bool {
        self.cmd.is_up() && self.subscribed
    }

    fn link(&self, which: Which) -> &Link {
        match which {
            Which::Commands => &self.cmd,
            Which::Subscriber => &self.sub,
        }
    }

    fn link_mut(&mut self, which: Which) -> &mut Link {
        match which {
            Which::Commands => &mut self.cmd,
            Which::Subscriber => &mut self.sub,
        }
    }

    /// A pseudo-random number for the backoff's jitter (xorshift64*).
    fn rand(&mut self) -> u64 {
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    // -------------------------------------------------------------------------------------
    // The local side
    // -------------------------------------------------------------------------------------

    /// A local publish: `frame` goes to Redis on `topic`'s channel, after the retained
    /// hash's update for [`Kind::Retained`] and [`Kind::Cleared`] (so that a snapshot taken
    /// after the message is published holds it). Queued while the link is down; returns
    /// false (and counts it) when the queue is full.
    pub fn publish(&mut self, topic: &str, frame: &[u8], kind: Kind) -> bool {
        self.channel.clear();
        self.channel
            .extend_from_slice(self.settings.prefix.as_bytes());
        self.channel.push(b':');
        self.channel.extend_from_slice(topic.as_bytes());
        envelope::encode(&mut self.payload, &self.settings.id, kind, frame);
        let publish: [&[u8]; 3] = [b"PUBLISH", &self.channel, &self.payload];
        let hset: [&[u8]; 4] = [b"HSET", &self.hash, topic.as_bytes(), frame];
        let hdel: [&[u8]; 3] = [b"HDEL", &self.hash, topic.as_bytes()];
        let retain: Option<(&[&[u8]], Command)> = match kind {
            Kind::Message => None,
            Kind::Retained => Some((&hset, Command::HSet)),
            Kind::Cleared => Some((&hdel, Command::HDel)),
        };
        let len = resp::command_len(&publish) + retain.map_or(0, |(r, _)| resp::command_len(r));
        if !self.outbox.fits(len) {
            self.stats.dropped_publishes += 1;
            self.stats.dropped_bytes += len as u64;
            return false;
        }
        if let Some((args, command)) = retain {
            self.outbox.push(args);
            self.pending.push_back(command);
        }
        self.outbox.push(&publish);
        self.pending.push_back(Command::Publish);
        self.stats.published += 1;
        if kind != Kind::Message {
            self.touch(topic);
        }
        true
    }

    /// A retained value changed here while a snapshot is in flight: the snapshot may be
    /// older.
    fn touch(&mut self, topic: &str) {
        touch(&self.sync, &mut self.touched, &mut self.again, topic);
    }

    fn want_snapshot(&mut self) {
        match self.sync {
            Sync::Idle | Sync::Wanted => self.sync = Sync::Wanted,
            Sync::Asked | Sync::Reading(_) => self.again = true,
        }
        self.ask_snapshot();
    }

    /// HGETALL, once the subscriber link is subscribed: what is published after the
    /// snapshot is taken reaches this instance as messages.
    fn ask_snapshot(&mut self) {
        if matches!(self.sync, Sync::Wanted) && self.cmd.is_up() && self.subscribed {
            self.outbox.push_control(&[b"HGETALL", &self.hash]);
            self.pending.push_back(Command::HGetAll);
            self.touched.clear();
            self.sync = Sync::Asked;
        }
    }

    // -------------------------------------------------------------------------------------
    // The links
    // -------------------------------------------------------------------------------------

    /// What `which` asks for at `now`: connect, drop (late), or a keepalive ping (done
    /// here: the ping is queued; `Late` if the link could not even write).
    pub fn due(&mut self, which: Which, now: Instant) -> Due {
        match self.link(which).due(now) {
            Due::Ping => {
                let out = match which {
                    Which::Commands => &mut self.outbox,
                    Which::Subscriber => &mut self.sub_out,
                };
                if !out.is_empty() {
                    // Commands are about to go out: their replies will tell. (A link whose
                    // socket stopped taking bytes owes replies already: it times out.)
                    self.link_mut(which).heard(now);
                    return Due::Nothing;
                }
                out.push_control(&[b"PING"]);
                if which == Which::Commands {
                    self.pending.push_back(Command::Ping);
                }
                Due::Nothing
            }
            due => due,
        }
    }

    /// The earliest deadline of either link.
    pub fn next_deadline(&self) -> Instant {
        self.cmd.deadline().min(self.sub.deadline())
    }

    /// A socket was opened for `which`; its connect is in flight.
    pub fn connecting(&mut self, which: Which, now: Instant) {
        self.link_mut(which).connecting(now);
    }

    /// `which` is connected: its first commands are queued.
    pub fn connected(&mut self, which: Which, now: Instant) {
        if self.link_mut(which).up(now) {
            self.stats.reconnects += 1;
        }
        debug!("redis: {} link connected", which.name());
        match which {
            Which::Commands => {
                if self.settings.db != 0 {
                    let db = self.settings.db.to_string();
                    self.outbox.push_control_front(&[b"SELECT", db.as_bytes()]);
                    self.pending.push_front(Command::Select);
                }
                self.note_up();
                self.want_snapshot();
            }
            Which::Subscriber => {
                self.sub_out.push_control(&[b"PSUBSCRIBE", &self.pattern]);
            }
        }
    }

    /// `which` failed or was dropped (its socket is gone): what it held in flight is reset,
    /// and it reconnects after a backoff.
    pub fn lost(&mut self, which: Which, now: Instant, fault: Fault) {
        let was = self.link(which).state();
        let rand = self.rand();
        let wait = self.link_mut(which).down(now, rand);
        self.stats.faults[fault.reason()] += 1;
        match which {
            Which::Commands => {
                self.outbox.rewind();
                self.owed.clear();
                // The rewound outbox holds data commands only, in order.
                self.pending
                    .retain(|c| !matches!(c, Command::Select | Command::HGetAll | Command::Ping));
                self.cmd_in.filled = 0;
                if matches!(self.sync, Sync::Asked | Sync::Reading(_)) {
                    self.sync = Sync::Wanted;
                }
            }
            Which::Subscriber => {
                self.sub_out.rewind();
                self.sub_in.filled = 0;
                self.subscribed = false;
            }
        }
        let i = which as usize;
        let addr = self.settings.addr;
        if was == link::State::Up {
            warn!(
                "redis {addr}: {} link lost: {fault}; reconnecting (local delivery goes on)",
                which.name()
            );
        } else if !self.quiet[i] {
            warn!(
                "redis {addr}: {} link: {fault}; retrying with backoff (local delivery goes on)",
                which.name()
            );
            self.quiet[i] = true;
        } else {
            debug!(
                "redis {addr}: {} link: {fault}; next try in {} ms",
                which.name(),
                wait.as_millis()
            );
        }
        // Said once: "link up" again when both links are back.
        self.said_up = false;
    }

    /// Logs the link's coming up, once.
    fn note_up(&mut self) {
        if self.is_up() && !self.said_up {
            self.said_up = true;
            info!("redis {}: link up", self.settings.addr);
        }
    }

    /// The bytes `which` has to write.
    pub fn unwritten(&self, which: Which) -> &[u8] {
        match which {
            Which::Commands => self.outbox.unwritten(),
            Which::Subscriber => self.sub_out.unwritten(),
        }
    }

    /// The socket of `which` took `n` bytes of [`Bridge::unwritten`].
    pub fn wrote(&mut self, which: Which, n: usize, now: Instant) {
        match which {
            Which::Commands => {
                let done = self.outbox.wrote(n);
                for _ in 0..done {
                    if let Some(c) = self.pending.pop_front() {
                        self.owed.push_back(c);
                    }
                }
                self.cmd.sent(done, now);
            }
            Which::Subscriber => {
                let done = self.sub_out.wrote(n);
                self.sub.sent(done, now);
            }
        }
    }

    /// Where the next read of `which` goes (never empty while the link is up).
    pub fn read_space(&mut self, which: Which) -> &mut [u8] {
        let r = match which {
            Which::Commands => &mut self.cmd_in,
            Which::Subscriber => &mut self.sub_in,
        };
        &mut r.buf[r.filled..]
    }

    /// `n` bytes were read into [`Bridge::read_space`]: replies and messages are handled.
    /// An error means the link must be dropped (then call [`Bridge::lost`]).
    pub fn received(
        &mut self,
        which: Which,
        n: usize,
        now: Instant,
        local: &mut impl Local,
    ) -> Result<(), Fault> {
        self.link_mut(which).heard(now);
        match which {
            Which::Commands => {
                self.cmd_in.filled += n;
                self.read_replies(local)
            }
            Which::Subscriber => {
                self.sub_in.filled += n;
                self.read_messages(local)
            }
        }
    }

    /// Replies on the command link, in the order of the commands.
    fn read_replies(&mut self, local: &mut impl Local) -> Result<(), Fault> {
        let mut at = 0;
        let result = loop {
            let data = &self.cmd_in.buf[at..self.cmd_in.filled];
            if data.is_empty() {
                break Ok(());
            }
            if let Sync::Reading(snap) = &mut self.sync {
                let max = self.settings.max_frame;
                let ok = |t: &str, f: &str| f.len() <= max && local.acceptable(t, f);
                match snap.step(data, &self.cmd_in.limits, ok) {
                    Ok(Status::Complete(used)) => at += used,
                    Ok(Status::Partial) => break Ok(()),
                    Err(e) => break Err(Fault::Protocol(e.as_str())),
                }
                if snap.is_done() {
                    self.loaded(local);
                }
                continue;
            }
            let Some(&command) = self.owed.front() else {
                break Err(Fault::Protocol("a reply to no command"));
            };
            if command == Command::HGetAll {
                match snapshot::header(data, b'*') {
                    Ok(Some(Status::Complete((len, used)))) => {
                        at += used;
                        self.owed.pop_front();
                        self.cmd.replied();
                        self.cmd.healthy();
                        self.sync =
                            Sync::Reading(Snapshot::new(len, self.settings.max_retained_bytes));
                        if len <= 0 {
                            self.loaded(local);
                        }
                        continue;
                    }
                    Ok(Some(Status::Partial)) => break Ok(()),
                    Ok(None) => {} // an error reply, read below
                    Err(e) => break Err(Fault::Protocol(e.as_str())),
                }
            }
            match resp::parse(data, &self.cmd_in.limits) {
                Ok(Status::Complete((value, used))) => {
                    at += used;
                    self.owed.pop_front();
                    self.cmd.replied();
                    if let Value::Error(line) = value {
                        break Err(Fault::ErrorReply(command.name(), ErrorKind::of(line)));
                    }
                    self.cmd.healthy();
                    self.quiet[0] = false;
                }
                Ok(Status::Partial) => break Ok(()),
                Err(e) => break Err(Fault::Protocol(e.as_str())),
            }
        };
        self.cmd_in.consume(at);
        result
    }

    /// The snapshot is read whole: the local retained values are replaced.
    fn loaded(&mut self, local: &mut impl Local) {
        let Sync::Reading(snap) = std::mem::replace(&mut self.sync, Sync::Idle) else {
            return;
        };
        self.stats.retained_skipped += snap.skipped;
        self.stats.snapshots += 1;
        let values = snap.into_values();
        debug!("redis: {} retained values loaded", values.len());
        local.load_retained(values, &self.touched);
        self.touched.clear();
        if std::mem::take(&mut self.again) {
            self.want_snapshot();
        }
    }

    /// Pub/sub events on the subscriber link.
    fn read_messages(&mut self, local: &mut impl Local) -> Result<(), Fault> {
        let mut at = 0;
        let result = loop {
            let data = &self.sub_in.buf[at..self.sub_in.filled];
            if data.is_empty() {
                break Ok(());
            }
            let value = match resp::parse(data, &self.sub_in.limits) {
                Ok(Status::Complete((value, used))) => {
                    at += used;
                    value
                }
                Ok(Status::Partial) => break Ok(()),
                Err(RespError::BulkTooLong | RespError::ValueTooLong) => {
                    break Err(Fault::Protocol(
                        "a message larger than this relay's largest (set the same \
                         limits.max_message on every relay)",
                    ))
                }
                Err(e) => break Err(Fault::Protocol(e.as_str())),
            };
            match PubSub::from_value(&value) {
                Some(PubSub::PMessage {
                    channel, payload, ..
                }) => {
                    let prefix = self.settings.prefix.as_bytes();
                    let topic = channel
                        .strip_prefix(prefix)
                        .and_then(|rest| rest.strip_prefix(b":"));
                    let Some(env) = envelope::decode(payload) else {
                        self.stats.ignored += 1;
                        continue;
                    };
                    if env.from == self.settings.id.as_bytes() {
                        continue; // our own: delivered locally when published
                    }
                    let topic = topic.and_then(|t| std::str::from_utf8(t).ok());
                    let frame = std::str::from_utf8(env.frame).ok();
                    let max = self.settings.max_frame;
                    match topic.zip(frame) {
                        Some((topic, frame))
                            if frame.len() <= max && local.acceptable(topic, frame) =>
                        {
                            if env.kind != Kind::Message {
                                touch(&self.sync, &mut self.touched, &mut self.again, topic);
                            }
                            self.stats.received += 1;
                            local.remote(topic, frame, env.kind);
                        }
                        _ => self.stats.ignored += 1,
                    }
                }
                Some(PubSub::PSubscribe { .. }) => {
                    self.sub.replied();
                    self.sub.healthy();
                    self.quiet[1] = false;
                    if !self.subscribed {
                        self.subscribed = true;
                        self.note_up();
                        self.want_snapshot();
                    }
                }
                Some(PubSub::Pong(_)) => self.sub.replied(),
                Some(_) => {}
                None => {
                    if let Value::Error(line) = value {
                        break Err(Fault::ErrorReply("PSUBSCRIBE", ErrorKind::of(line)));
                    }
                }
            }
        };
        self.sub_in.consume(at);
        result
    }
}

/// [`Bridge::touch`], on the fields it needs (the topic may borrow the read buffer).
fn touch(sync: &Sync, touched: &mut Vec<String>, again: &mut bool, topic: &str) {
    if matches!(sync, Sync::Asked | Sync::Reading(_)) {
        if touched.len() < MAX_TOUCHED {
            touched.push(topic.to_owned());
        } else {
            *again = true;
        }
    }
}

#[cfg(test)]
mod tests;

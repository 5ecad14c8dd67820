//! The `emberws` program: the telemetry relay (default) or an echo server, and
//! `emberws token NAME` to make a client token. Settings: flags over an optional TOML file
//! (`config.rs`).
//!
//! Uses only the library's public API.

#[cfg(feature = "redis")]
mod bridge;
mod config;
mod keeper;
mod relay;
mod secret;
#[cfg(feature = "tls")]
mod tls;
#[cfg(not(feature = "tls"))]
mod tls {
    //! Built without the `tls` feature: no TLS listener can be configured.
    use std::path::PathBuf;

    #[derive(Clone, Debug)]
    #[allow(dead_code)]
    pub struct Files {
        pub cert: PathBuf,
        pub key: PathBuf,
    }
}

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use config::{Flag, Mode, Settings};
use emberws::{Ctx, Decision, Error, Handler, HttpRequest, Message, Server};
use log::info;
use mio::{Events, Interest, Poll, Token};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;

const USAGE: &str = "\
emberws — a small WebSocket server on one poll loop

USAGE:
    emberws [echo] [--config FILE] [OPTIONS]
    emberws token NAME

MODES:
    (none)    the relay: pub/sub over JSON messages, with a dashboard at GET /
    echo      echoes every message back (text as text, binary as binary)
    token     prints a new token for the client NAME, and the entry for the clients
              file (which stores only its hash)

OPTIONS:
    --config FILE                 read the settings from FILE (TOML; every option below
                                  has a key there, see emberws.example.toml); the options
                                  given on the command line override it
    --print-config                print the effective settings as TOML, and exit
    --listen ADDR                 listen for ws:// and http:// on ADDR (repeatable)
                                  [default, when no listener is given: 127.0.0.1:9001]
    --tls-listen ADDR             listen for wss:// and https:// on ADDR (repeatable)
    --tls-cert PEM                the certificate chain for --tls-listen
    --tls-key PEM                 its private key (PKCS#8, SEC1 or RSA); SIGHUP re-reads
                                  both, and a bad file on reload keeps the old ones
    --clients FILE                the clients who may connect: names, token hashes and
                                  topic patterns (make entries with `emberws token NAME`);
                                  SIGHUP re-reads it. A listener on loopback lets clients
                                  without a token in; any other needs a token
    --allow-anonymous             let clients without a token in on every listener (without
                                  this flag or --clients, a listener off loopback is
                                  refused at start)
    --allow-origin ORIGIN         allow browser pages from ORIGIN (repeatable);
                                  none given = any origin
    --sys-interval SECS           publish the relay's own figures under $SYS/ every SECS
                                  (and at start), retained; 0 = never [default: 10]
    --max-connections N           open connections at most; past it, 503 [default: 1024]
    --max-connections-per-ip N    connections per client IP; 0 = no cap [default: 0]
    --max-message BYTES           largest message; past it, close 1009 [default: 65536]
    --max-backpressure BYTES      bytes queued per slow connection before 1008 [default: 65536]
    --max-subscriptions N         topic subscriptions per connection [default: 64]
    --handshake-timeout SECS      time allowed for the request head [default: 10]
    --ping-interval SECS          ping a quiet connection after SECS; 0 = never [default: 30]
    --pong-timeout SECS           drop it if nothing comes back within SECS [default: 10]
    --max-json-depth N            deepest nesting of a publish's data [default: 64]
    --max-retained-bytes BYTES    retained messages, all topics together [default: 1048576]
    --socket-send-buffer BYTES    the kernel's send buffer per connection (SO_SNDBUF);
                                  0 = the kernel's autotuning [default: 0]
    --socket-recv-buffer BYTES    the kernel's receive buffer per connection (SO_RCVBUF);
                                  0 = the kernel's autotuning [default: 0]
    --rate-publishes N            publishes per second per connection from another host;
                                  0 = no limit [default: 50]
    --rate-bytes BYTES            bytes per second per connection from another host;
                                  0 = no limit [default: 65536]
    --redis URL                   share topics and retained values with the other relays on
                                  one Redis: redis://HOST[:PORT][/DB], HOST an IP address
                                  or localhost (no name lookups); the relay serves locally
                                  while Redis is away and reconnects on its own
    --redis-prefix P              Redis channels P:TOPIC, retained values in the hash
                                  P:retained [default: emberws]
    --history-messages N          messages kept per topic for subscribers that come back
                                  with `since`; 0 = no history [default: 64]
    --history-bytes BYTES         history in all: frames, topics, 32 B per message
                                  [default: 262144]
    --state FILE                  keep the retained values and history in FILE across
                                  restarts (written atomically, shortly after changes and
                                  at shutdown; a bad file is reported and ignored)
    -h, --help                    print this help
    -V, --version                 print the version and the features built in

Repeatable options given on the command line replace the file's list.
Logging: RUST_LOG=debug (default: info).
";

/// What the command line asks for.
#[derive(Debug, PartialEq)]
enum Command {
    /// `-h`, `--help`.
    Help,
    /// `-V`, `--version`.
    Version,
    /// `emberws token NAME`.
    Token(String),
    /// Serve, or with `--print-config` print what would be served: the file's settings
    /// (if any) with the flags over them.
    Run {
        config: Option<PathBuf>,
        print: bool,
        flags: Vec<Flag>,
    },
}

fn value(parser: &mut lexopt::Parser, flag: &str) -> Result<String, String> {
    parser
        .value()
        .map_err(|_| format!("{flag} needs a value"))?
        .into_string()
        .map_err(|_| format!("{flag}: the value is not UTF-8"))
}

fn address(parser: &mut lexopt::Parser, flag: &str) -> Result<SocketAddr, String> {
    let value = value(parser, flag)?;
    value
        .parse()
        .map_err(|_| format!("{flag}: '{value}' is not an address like 127.0.0.1:9001"))
}

fn seconds(parser: &mut lexopt::Parser, flag: &str) -> Result<f64, String> {
    let value = value(parser, flag)?;
    let secs: f64 = value
        .parse()
        .map_err(|_| format!("{flag}: '{value}' is not a number of seconds"))?;
    if !(0.0..=1e9).contains(&secs) {
        return Err(format!("{flag}: '{value}' is out of range"));
    }
    Ok(secs)
}

fn number(parser: &mut lexopt::Parser, flag: &str) -> Result<usize, String> {
    let value = value(parser, flag)?;
    value
        .parse()
        .map_err(|_| format!("{flag}: '{value}' is not a whole number"))
}

/// A rate per second: a finite number, 0 or more.
fn rate(parser: &mut lexopt::Parser, flag: &str) -> Result<f64, String> {
    let value = value(parser, flag)?;
    let rate: f64 = value
        .parse()
        .map_err(|_| format!("{flag}: '{value}' is not a number"))?;
    if !(rate.is_finite() && rate >= 0.0) {
        return Err(format!("{flag}: '{value}' is out of range"));
    }
    Ok(rate)
}

/// A flag that sets a key of [`Settings`], its value read and parsed; `None` if `name` is
/// not one.
fn key_flag(parser: &mut lexopt::Parser, name: &str) -> Result<Option<Flag>, String> {
    let p = parser;
    let f = &format!("--{name}");
    Ok(Some(match name {
        "listen" => Flag::Listen(address(p, f)?),
        "tls-listen" => Flag::TlsListen(address(p, f)?),
        "tls-cert" => Flag::TlsCert(value(p, f)?.into()),
        "tls-key" => Flag::TlsKey(value(p, f)?.into()),
        "clients" => Flag::Clients(value(p, f)?.into()),
        "allow-anonymous" => Flag::AllowAnonymous,
        "allow-origin" => Flag::AllowOrigin(value(p, f)?),
        "sys-interval" => Flag::SysInterval(seconds(p, f)?),
        "max-connections" => Flag::MaxConnections(number(p, f)?),
        "max-connections-per-ip" => Flag::MaxConnectionsPerIp(number(p, f)?),
        "max-message" => Flag::MaxMessage(number(p, f)?),
        "max-backpressure" => Flag::MaxBackpressure(number(p, f)?),
        "max-subscriptions" => Flag::MaxSubscriptions(number(p, f)?),
        "handshake-timeout" => Flag::HandshakeTimeout(seconds(p, f)?),
        "ping-interval" => Flag::PingInterval(seconds(p, f)?),
        "pong-timeout" => Flag::PongTimeout(seconds(p, f)?),
        "max-json-depth" => Flag::MaxJsonDepth(number(p, f)?),
        "max-retained-bytes" => Flag::MaxRetainedBytes(number(p, f)?),
        "socket-send-buffer" => Flag::SocketSendBuffer(number(p, f)?),
        "socket-recv-buffer" => Flag::SocketRecvBuffer(number(p, f)?),
        "rate-publishes" => Flag::RatePublishes(rate(p, f)?),
        "rate-bytes" => Flag::RateBytes(rate(p, f)?),
        "redis" => Flag::Redis(value(p, f)?),
        "redis-prefix" => Flag::RedisPrefix(value(p, f)?),
        "history-messages" => Flag::HistoryMessages(number(p, f)?),
        "history-bytes" => Flag::HistoryBytes(number(p, f)?),
        "state" => Flag::State(value(p, f)?.into()),
        _ => return Ok(None),
    }))
}

fn parse_command(mut parser: lexopt::Parser) -> Result<Command, String> {
    use lexopt::prelude::*;
    let (mut config, mut print, mut echo, mut token) = (None, false, false, None);
    let mut flags = Vec::new();
    while let Some(arg) = parser.next().map_err(|e| e.to_string())? {
        match arg {
            Value(mode) if mode == "token" && token.is_none() && !echo => {
                let name = parser.value().map_err(|_| "token needs a NAME")?;
                token = Some(name.to_string_lossy().into_owned());
            }
            Value(mode) if mode == "echo" && !echo && token.is_none() => {
                echo = true;
                flags.push(Flag::Echo);
            }
            Value(other) => return Err(format!("unknown mode '{}'", other.to_string_lossy())),
            Short('h') | Long("help") => return Ok(Command::Help),
            Short('V') | Long("version") => return Ok(Command::Version),
            Long("config") if config.is_some() => return Err("--config is given twice".into()),
            Long("config") => config = Some(PathBuf::from(value(&mut parser, "--config")?)),
            Long("print-config") => print = true,
            Long(name) => {
                let name = name.to_owned();
                match key_flag(&mut parser, &name)? {
                    Some(flag) => flags.push(flag),
                    None => return Err(Long(&name).unexpected().to_string()),
                }
            }
            _ => return Err(arg.unexpected().to_string()),
        }
    }
    match token {
        Some(_) if config.is_some() || print || !flags.is_empty() => {
            Err("`emberws token NAME` takes no options".into())
        }
        Some(name) => Ok(Command::Token(name)),
        None => Ok(Command::Run {
            config,
            print,
            flags,
        }),
    }
}

/// `emberws --version`: `emberws X.Y.Z` (the crate's version), then the optional features
/// this build has, so a board's binary tells what it can serve.
fn version() -> String {
    let features: Vec<&str> = [
        ("tls", cfg!(feature = "tls")),
        ("redis", cfg!(feature = "redis")),
    ]
    .into_iter()
    .filter_map(|(name, on)| on.then_some(name))
    .collect();
    let features = if features.is_empty() {
        "none".to_owned()
    } else {
        features.join(", ")
    };
    format!(
        "emberws {}\nfeatures: {features}\n",
        env!("CARGO_PKG_VERSION")
    )
}

/// The file's settings (or the defaults), the flags over them, checked as a whole.
fn settings(file: Option<&Path>, flags: &[Flag]) -> Result<Settings, String> {
    let mut settings = match file {
        Some(path) => config::load(path)?,
        None => Settings::default(),
    };
    settings.apply(flags);
    settings.check()?;
    Ok(settings)
}

/// The TLS files, once [`Settings::check`] has made sure there are both or neither.
fn tls_files(settings: &Settings) -> Option<tls::Files> {
    match (&settings.tls.cert, &settings.tls.key) {
        (Some(cert), Some(key)) => Some(tls::Files {
            cert: cert.clone(),
            key: key.clone(),
        }),
        _ => None,
    }
}

/// Echoes every message back to its sender.
struct Echo;

impl Handler for Echo {
    type State = ();

    fn on_upgrade(&mut self, _req: &HttpRequest<'_>) -> Decision<()> {
        Decision::Accept(())
    }

    fn on_message(&mut self, ctx: &mut Ctx<'_>, _: &mut (), msg: Message<'_>) {
        ctx.send(msg);
    }
}

const SIGNALS: Token = Token(0);
/// The Redis bridge's command and subscriber links.
#[cfg(feature = "redis")]
const REDIS: [Token; 2] = [Token(1), Token(2)];
/// The state file's writer thread says a write is done.
const STATE: Token = Token(3);
/// The server's first token: it takes every one from here up.
const SERVER: Token = Token(4);

/// What runs in the loop beside the server: the relay's `$SYS` figures, its Redis
/// bridge and the state file's writer, or nothing.
trait Beside<H: Handler> {
    /// Takes an event of the poll if it is one of its own.
    fn handle_event(&mut self, _event: &mio::event::Event) -> bool {
        false
    }

    /// After each turn of the server; returns when it must run again at the latest.
    fn turn(&mut self, _server: &mut Server<H>, _now: Instant) -> Option<Instant> {
        None
    }

    /// Once the server has finished (a graceful shutdown).
    fn finish(&mut self, _server: &mut Server<H>) {}
}

/// Nothing beside the server.
struct Alone;

impl<H: Handler> Beside<H> for Alone {}

/// What may be switched off.
impl<H: Handler, B: Beside<H>> Beside<H> for Option<B> {
    fn handle_event(&mut self, event: &mio::event::Event) -> bool {
        self.as_mut().is_some_and(|b| b.handle_event(event))
    }

    fn turn(&mut self, server: &mut Server<H>, now: Instant) -> Option<Instant> {
        self.as_mut()?.turn(server, now)
    }

    fn finish(&mut self, server: &mut Server<H>) {
        if let Some(b) = self {
            b.finish(server);
        }
    }
}

/// Two things beside the server, turned in order: the first one's publishes are there for
/// the second in the same turn (the `$SYS` figures, then the bridge).
impl<H: Handler, A: Beside<H>, B: Beside<H>> Beside<H> for (A, B) {
    fn handle_event(&mut self, event: &mio::event::Event) -> bool {
        self.0.handle_event(event) || self.1.handle_event(event)
    }

    fn turn(&mut self, server: &mut Server<H>, now: Instant) -> Option<Instant> {
        let a = self.0.turn(server, now);
        let b = self.1.turn(server, now);
        match (a, b) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn finish(&mut self, server: &mut Server<H>) {
        self.0.finish(server);
        self.1.finish(server);
    }
}

impl Beside<relay::Relay> for keeper::Keeper {
    fn handle_event(&mut self, event: &mio::event::Event) -> bool {
        keeper::Keeper::handle_event(self, event)
    }

    fn turn(&mut self, server: &mut Server<relay::Relay>, now: Instant) -> Option<Instant> {
        keeper::Keeper::turn(self, server.handler_mut(), now)
    }

    fn finish(&mut self, server: &mut Server<relay::Relay>) {
        keeper::Keeper::finish(self, server.handler_mut());
    }
}

impl Beside<relay::Relay> for relay::sys::Sys {
    fn turn(&mut self, server: &mut Server<relay::Relay>, now: Instant) -> Option<Instant> {
        Some(relay::sys::Sys::turn(self, server, now))
    }
}

#[cfg(feature = "redis")]
impl Beside<relay::Relay> for bridge::local::Bridged {
    fn handle_event(&mut self, event: &mio::event::Event) -> bool {
        bridge::local::Bridged::handle_event(self, event)
    }

    fn turn(&mut self, server: &mut Server<relay::Relay>, now: Instant) -> Option<Instant> {
        Some(bridge::local::Bridged::turn(self, server, now))
    }
}

/// Runs the server in this program's own mio loop, beside the signal source (and what
/// `beside` makes, e.g. the Redis bridge): SIGINT or SIGTERM starts a graceful shutdown
/// (close 1001 to everyone, flush, exit 0); SIGHUP re-reads the TLS certificate and key (new
/// handshakes use them, open connections stay).
fn serve<H: Handler, B: Beside<H>>(
    settings: &Settings,
    handler: H,
    dashboard: bool,
    beside: impl FnOnce(&mio::Registry, &mut Server<H>) -> Result<B, String>,
    mut on_hup: impl FnMut(&mut Server<H>),
) -> Result<(), String> {
    let fail = |e: Error| e.to_string();
    let mut poll = Poll::new().map_err(|e| e.to_string())?;
    let mut signals = Signals::new([SIGINT, SIGTERM, SIGHUP]).map_err(|e| e.to_string())?;
    poll.registry()
        .register(&mut signals, SIGNALS, Interest::READABLE)
        .map_err(|e| e.to_string())?;
    let registry = poll.registry().try_clone().map_err(|e| e.to_string())?;
    let cfg = settings.to_config();
    let mut server = Server::unbound_with_registry(cfg, handler, registry, SERVER).map_err(fail)?;
    let tls_files = tls_files(settings);
    for addr in &settings.effective_listen() {
        let addr = server.listen(*addr).map_err(fail)?;
        if dashboard {
            info!("listening on ws://{addr} (dashboard: http://{addr}/)");
        } else {
            info!("listening on ws://{addr}");
        }
    }
    #[cfg(not(feature = "tls"))]
    if tls_files.is_some() {
        return Err("this emberws was built without the `tls` feature".into());
    }
    #[cfg(feature = "tls")]
    let mut tls_addrs = Vec::new();
    #[cfg(feature = "tls")]
    if let Some(files) = &tls_files {
        let config = files.load()?;
        for addr in &settings.tls_listen {
            let addr = server.listen_tls(*addr, config.clone()).map_err(fail)?;
            tls_addrs.push(addr);
            if dashboard {
                info!("listening on wss://{addr} (dashboard: https://{addr}/)");
            } else {
                info!("listening on wss://{addr}");
            }
        }
    }
    let mut beside = beside(poll.registry(), &mut server)?;
    let mut events = Events::with_capacity(1024);
    let turn = |server: &mut Server<H>, beside: &mut B| {
        let now = Instant::now();
        let timeout = server.turn(now);
        match beside.turn(server, now) {
            Some(at) => {
                let wait = at.saturating_duration_since(now);
                Some(timeout.map_or(wait, |t| t.min(wait)))
            }
            None => timeout,
        }
    };
    let mut timeout = turn(&mut server, &mut beside);
    while !server.is_finished() {
        if let Err(e) = poll.poll(&mut events, timeout) {
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e.to_string());
        }
        for event in events.iter() {
            if event.token() == SIGNALS {
                for signal in signals.pending() {
                    if signal == SIGHUP {
                        #[cfg(feature = "tls")]
                        reload(&mut server, tls_files.as_ref(), &tls_addrs);
                        on_hup(&mut server);
                    } else {
                        info!("signal {signal}: shutting down");
                        server.shutdown();
                    }
                }
            } else if !beside.handle_event(event) {
                server.handle_event(event);
            }
        }
        timeout = turn(&mut server, &mut beside);
    }
    beside.finish(&mut server);
    info!("stopped");
    Ok(())
}

/// SIGHUP: new TLS files for new handshakes; a bad file keeps the old ones.
#[cfg(feature = "tls")]
fn reload<H: Handler>(server: &mut Server<H>, files: Option<&tls::Files>, addrs: &[SocketAddr]) {
    let Some(files) = files else {
        return;
    };
    match files.load() {
        Ok(config) => {
            for addr in addrs {
                server.set_tls_config(*addr, config.clone());
            }
            info!(
                "SIGHUP: reloaded {} and {}",
                files.cert.display(),
                files.key.display()
            );
        }
        Err(e) => log::warn!("SIGHUP: kept the current certificate: {e}"),
    }
}

/// What the relay lets whom do, from the settings: the clients file read and its rules
/// compiled, and the rules of clients without a token (let in on loopback listeners, and
/// everywhere without a clients file or with `allow_anonymous`).
fn policy(settings: &Settings) -> Result<relay::Policy, String> {
    use relay::acl::Rules;
    use relay::guard::{LockoutPolicy, Rates};
    let clients = match &settings.auth.clients {
        Some(path) => {
            let clients = relay::clients::Clients::load(path)?;
            info!("{} clients from {}", clients.len(), path.display());
            Some(clients)
        }
        None => None,
    };
    let a = &settings.anonymous;
    let anonymous =
        Rules::compile(None, &a.publish, &a.subscribe).map_err(|e| format!("anonymous: {e}"))?;
    let (auth, rate) = (&settings.auth, &settings.rate);
    Ok(relay::Policy {
        clients,
        anonymous,
        allow_anonymous: settings.allow_anonymous,
        protect_status: auth.protect_status,
        lockout: LockoutPolicy {
            failures: auth.failures,
            first: Duration::from_secs_f64(auth.lockout),
            max: Duration::from_secs_f64(auth.lockout_max),
        },
        rates: Rates {
            publishes: rate.publishes,
            publish_burst: rate.publish_burst,
            bytes: rate.bytes,
            bytes_burst: rate.bytes_burst,
            strikes: rate.strikes,
        },
        rate_loopback: rate.loopback,
        max_json_depth: settings.limits.max_json_depth,
        max_retained_bytes: settings.limits.max_retained_bytes,
        history_messages: settings.history.messages,
        history_bytes: settings.history.bytes,
        max_frame: settings.to_config().send_limit(),
        max_subscriptions: settings.limits.max_subscriptions,
    })
}

/// SIGHUP: the clients file again. Connections of removed clients are closed with 1008, the
/// others go on under their new rules; a bad file keeps the current clients.
fn reload_clients(server: &mut Server<relay::Relay>, path: Option<&std::path::Path>) {
    let Some(path) = path else {
        return;
    };
    match relay::clients::Clients::load(path) {
        Ok(clients) => {
            let n = clients.len();
            server.handler_mut().set_clients(clients);
            server.visit_open(|relay, ctx, session| relay.reapply(ctx, session));
            info!("SIGHUP: reloaded {} ({n} clients)", path.display());
        }
        Err(e) => log::warn!("SIGHUP: kept the current clients: {e}"),
    }
}

/// The relay, with its `$SYS` figures unless `sys_interval` is 0, the Redis bridge when
/// `redis.url` is set and the state file with `state`.
fn serve_relay(settings: &Settings, policy: relay::Policy) -> Result<(), String> {
    let mut handler = relay::Relay::new(policy);
    let mut keeper = settings
        .state
        .as_deref()
        .map(|path| keeper::Keeper::open(&mut handler, path));
    info!("message ids: epoch {}", handler.epoch());
    let on_hup = |server: &mut Server<relay::Relay>| {
        reload_clients(server, settings.auth.clients.as_deref());
    };
    let sys = || {
        settings
            .sys_interval()
            .map(|every| relay::sys::Sys::new(every, Instant::now()))
    };
    let mut start_keeper = move |registry: &mio::Registry| -> Result<_, String> {
        if let Some(k) = keeper.as_mut() {
            k.start(registry, STATE)?;
        }
        Ok(keeper.take())
    };
    let Some(target) = settings.redis_target() else {
        let beside = |registry: &mio::Registry, _: &mut Server<relay::Relay>| {
            Ok((sys(), start_keeper(registry)?))
        };
        return serve(settings, handler, true, beside, on_hup);
    };
    #[cfg(not(feature = "redis"))]
    {
        let _ = target;
        Err("this emberws was built without the `redis` feature".into())
    }
    #[cfg(feature = "redis")]
    {
        let id = bridge::envelope::InstanceId::random()?;
        let bridge_settings = bridge::Settings {
            addr: target.addr,
            db: target.db,
            prefix: settings.redis.prefix.clone(),
            queue_bytes: settings.redis.queue_bytes,
            max_frame: settings.to_config().send_limit(),
            max_retained_bytes: settings.limits.max_retained_bytes,
            id,
        };
        info!(
            "redis: bridging through {} (db {}, prefix {:?}, instance {id})",
            target.addr, target.db, settings.redis.prefix
        );
        let beside = |registry: &mio::Registry, server: &mut Server<relay::Relay>| {
            let keeper = start_keeper(registry)?;
            let registry = registry.try_clone().map_err(|e| e.to_string())?;
            let bridged = bridge::local::Bridged::new(bridge_settings, registry, REDIS, server);
            Ok(((sys(), bridged), keeper))
        };
        serve(settings, handler, true, beside, on_hup)
    }
}

/// A mistake in what the program was asked to do: exit status 2.
fn usage_error(msg: &str) -> ExitCode {
    eprintln!("emberws: {msg}\n\nRun 'emberws --help' for the options.");
    ExitCode::from(2)
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let (file, print, flags) = match parse_command(lexopt::Parser::from_env()) {
        Ok(Command::Run {
            config,
            print,
            flags,
        }) => (config, print, flags),
        Ok(Command::Help) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Ok(Command::Version) => {
            print!("{}", version());
            return ExitCode::SUCCESS;
        }
        Ok(Command::Token(name)) => {
            return match secret::token_command(&name) {
                Ok(text) => {
                    print!("{text}");
                    ExitCode::SUCCESS
                }
                Err(msg) => {
                    eprintln!("emberws: {msg}");
                    ExitCode::from(2)
                }
            };
        }
        Err(msg) => return usage_error(&msg),
    };
    let settings = match settings(file.as_deref(), &flags) {
        Ok(settings) => settings,
        Err(msg) => return usage_error(&msg),
    };
    if print {
        print!("{}", settings.to_toml());
        return ExitCode::SUCCESS;
    }
    let result = match settings.mode {
        Mode::Echo => serve(&settings, Echo, false, |_, _| Ok(Alone), |_| {}),
        Mode::Relay => match policy(&settings) {
            Ok(policy) => serve_relay(&settings, policy),
            Err(msg) => return usage_error(&msg),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("emberws: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn command(args: &[&str]) -> Result<Command, String> {
        parse_command(lexopt::Parser::from_args(args))
    }

    #[test]
    fn flags_are_kept_in_order_and_the_config_file_is_found_anywhere() {
        let got = command(&[
            "echo",
            "--max-message",
            "200",
            "--config",
            "a.toml",
            "--listen",
            "127.0.0.1:1",
            "--print-config",
            "--rate-bytes",
            "0",
        ]);
        let want = Command::Run {
            config: Some("a.toml".into()),
            print: true,
            flags: vec![
                Flag::Echo,
                Flag::MaxMessage(200),
                Flag::Listen("127.0.0.1:1".parse().unwrap()),
                Flag::RateBytes(0.0),
            ],
        };
        assert_eq!(got, Ok(want));
    }

    #[test]
    fn token_mode_takes_a_name_and_nothing_else() {
        assert_eq!(
            command(&["token", "alice"]),
            Ok(Command::Token("alice".into()))
        );
        assert!(command(&["token"]).unwrap_err().contains("NAME"));
        assert!(command(&["token", "alice", "--listen", "127.0.0.1:1"]).is_err());
        assert!(command(&["token", "alice", "bob"]).is_err());
        assert_eq!(command(&["--help", "token"]), Ok(Command::Help));
    }

    #[test]
    fn version_is_asked_for_with_either_spelling_and_names_the_features() {
        for flag in ["--version", "-V"] {
            assert_eq!(command(&[flag]), Ok(Command::Version), "{flag}");
        }
        assert_eq!(
            command(&["--listen", "127.0.0.1:1", "-V"]),
            Ok(Command::Version)
        );
        let text = version();
        let mut lines = text.lines();
        assert_eq!(
            lines.next(),
            Some(concat!("emberws ", env!("CARGO_PKG_VERSION")))
        );
        let features = lines.next().and_then(|l| l.strip_prefix("features: "));
        assert_eq!(
            features.map(|f| f.contains("tls")),
            Some(cfg!(feature = "tls"))
        );
        assert_eq!(
            features.map(|f| f.contains("redis")),
            Some(cfg!(feature = "redis"))
        );
        assert_eq!(lines.next(), None);
        assert!(USAGE.contains("-V, --version"));
    }

    #[test]
    fn bad_flags_name_the_flag() {
        for (args, needle) in [
            (&["--config", "a", "--config", "b"][..], "--config"),
            (&["--rate-publishes", "-1"], "--rate-publishes"),
            (&["--handshake-timeout", "soon"], "--handshake-timeout"),
            (&["--max-json-depth", "deep"], "--max-json-depth"),
            (&["--clients"], "--clients"),
        ] {
            let err = command(args).unwrap_err();
            assert!(err.contains(needle), "{args:?}: {err}");
        }
    }
}

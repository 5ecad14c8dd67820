//! The `emberws` program: the telemetry relay (default) or an echo server.
//!
//! Uses only the library's public API.

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
use std::process::ExitCode;
use std::time::{Duration, Instant};

use emberws::{Config, Ctx, Decision, Error, Handler, HttpRequest, Message, Server};
use log::info;
use mio::{Events, Interest, Poll, Token};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;

const USAGE: &str = "\
emberws — a small WebSocket server on one poll loop

USAGE:
    emberws [echo] [OPTIONS]

MODES:
    (none)    the relay: pub/sub over JSON messages, with a dashboard at GET /
    echo      echoes every message back (text as text, binary as binary)

OPTIONS:
    --listen ADDR                 listen for ws:// and http:// on ADDR (repeatable)
                                  [default, when no listener is given: 127.0.0.1:9001]
    --tls-listen ADDR             listen for wss:// and https:// on ADDR (repeatable)
    --tls-cert PEM                the certificate chain for --tls-listen
    --tls-key PEM                 its private key (PKCS#8, SEC1 or RSA); SIGHUP re-reads
                                  both, and a bad file on reload keeps the old ones
    --max-connections N           open connections at most; past it, 503 [default: 1024]
    --max-connections-per-ip N    connections per client IP; 0 = no cap [default: 0]
    --max-message BYTES           largest message; past it, close 1009 [default: 65536]
    --max-backpressure BYTES      bytes queued per slow connection before 1008 [default: 65536]
    --ping-interval SECS          ping a quiet connection after SECS; 0 = never [default: 30]
    --pong-timeout SECS           drop it if nothing comes back within SECS [default: 10]
    --allow-anonymous             allow listening on an address other than loopback
                                  (emberws has no client authentication yet: without
                                  this flag such a listener is refused at start)
    --allow-origin ORIGIN         allow browser pages from ORIGIN (repeatable);
                                  none given = any origin
    -h, --help                    print this help

Logging: RUST_LOG=debug (default: info).
";

struct Args {
    echo: bool,
    allow_anonymous: bool,
    listen: Vec<SocketAddr>,
    tls_listen: Vec<SocketAddr>,
    tls_files: Option<tls::Files>,
    cfg: Config,
}

fn address(value: &str, flag: &str) -> Result<SocketAddr, String> {
    value
        .parse()
        .map_err(|_| format!("{flag}: '{value}' is not an address like 127.0.0.1:9001"))
}

fn seconds(value: &str, flag: &str) -> Result<Duration, String> {
    let secs: f64 = value
        .parse()
        .map_err(|_| format!("{flag}: '{value}' is not a number of seconds"))?;
    if !(0.0..=1e9).contains(&secs) {
        return Err(format!("{flag}: '{value}' is out of range"));
    }
    Ok(Duration::from_secs_f64(secs))
}

fn number(value: &str, flag: &str) -> Result<usize, String> {
    value
        .parse()
        .map_err(|_| format!("{flag}: '{value}' is not a whole number"))
}

fn value(parser: &mut lexopt::Parser, flag: &str) -> Result<String, String> {
    parser
        .value()
        .map_err(|_| format!("{flag} needs a value"))?
        .into_string()
        .map_err(|_| format!("{flag}: the value is not UTF-8"))
}

fn parse_args() -> Result<Option<Args>, String> {
    use lexopt::prelude::*;
    let mut parser = lexopt::Parser::from_env();
    let mut args = Args {
        echo: false,
        allow_anonymous: false,
        listen: Vec::new(),
        tls_listen: Vec::new(),
        tls_files: None,
        cfg: Config::default(),
    };
    let (mut cert, mut key) = (None, None);
    let mut origins = Vec::new();
    while let Some(arg) = parser.next().map_err(|e| e.to_string())? {
        match arg {
            Value(mode) if mode == "echo" && !args.echo => args.echo = true,
            Value(other) => return Err(format!("unknown mode '{}'", other.to_string_lossy())),
            Short('h') | Long("help") => return Ok(None),
            Long("listen") => args
                .listen
                .push(address(&value(&mut parser, "--listen")?, "--listen")?),
            Long("tls-listen") => args.tls_listen.push(address(
                &value(&mut parser, "--tls-listen")?,
                "--tls-listen",
            )?),
            Long("tls-cert") => cert = Some(value(&mut parser, "--tls-cert")?),
            Long("tls-key") => key = Some(value(&mut parser, "--tls-key")?),
            Long("max-connections") => {
                args.cfg.max_connections = number(
                    &value(&mut parser, "--max-connections")?,
                    "--max-connections",
                )?;
            }
            Long("max-connections-per-ip") => {
                args.cfg.max_connections_per_ip = number(
                    &value(&mut parser, "--max-connections-per-ip")?,
                    "--max-connections-per-ip",
                )?;
            }
            Long("max-message") => {
                args.cfg.max_message_size =
                    number(&value(&mut parser, "--max-message")?, "--max-message")?;
            }
            Long("max-backpressure") => {
                args.cfg.max_backpressure = number(
                    &value(&mut parser, "--max-backpressure")?,
                    "--max-backpressure",
                )?;
            }
            Long("ping-interval") => {
                let d = seconds(&value(&mut parser, "--ping-interval")?, "--ping-interval")?;
                args.cfg.ping_interval = (!d.is_zero()).then_some(d);
            }
            Long("pong-timeout") => {
                args.cfg.pong_timeout =
                    seconds(&value(&mut parser, "--pong-timeout")?, "--pong-timeout")?;
            }
            Long("allow-origin") => origins.push(value(&mut parser, "--allow-origin")?),
            Long("allow-anonymous") => args.allow_anonymous = true,
            _ => return Err(arg.unexpected().to_string()),
        }
    }
    args.cfg.allowed_origins = origins;
    match (cert, key, args.tls_listen.is_empty()) {
        (Some(cert), Some(key), false) => {
            args.tls_files = Some(tls::Files {
                cert: cert.into(),
                key: key.into(),
            });
        }
        (None, None, true) => {}
        (_, _, true) => return Err("--tls-cert and --tls-key need a --tls-listen".into()),
        _ => return Err("--tls-listen needs both --tls-cert and --tls-key".into()),
    }
    if args.listen.is_empty() && args.tls_listen.is_empty() {
        args.listen.push(SocketAddr::from(([127, 0, 0, 1], 9001)));
    }
    // Secure by default: nothing off loopback without credentials unless asked for.
    let exposed: Vec<String> = args
        .listen
        .iter()
        .chain(&args.tls_listen)
        .filter(|a| !a.ip().is_loopback())
        .map(ToString::to_string)
        .collect();
    if !exposed.is_empty() && !args.allow_anonymous {
        return Err(format!(
            "refusing to listen on {} without authentication: anyone who can reach it could \
             publish and subscribe. Listen on loopback, or pass --allow-anonymous to allow it",
            exposed.join(", ")
        ));
    }
    // What the server sends may be a little larger than what it takes: the relay wraps each
    // publish in an envelope, the echo sends back what it got.
    args.cfg.max_send_size = args.cfg.max_send_size.max(args.cfg.max_message_size + 4096);
    Ok(Some(args))
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
const SERVER: Token = Token(1);

/// Runs the server in this program's own mio loop, beside the signal source: SIGINT or
/// SIGTERM starts a graceful shutdown (close 1001 to everyone, flush, exit 0); SIGHUP
/// re-reads the TLS certificate and key (new handshakes use them, open connections stay).
fn serve<H: Handler>(args: Args, handler: H, dashboard: bool) -> Result<(), String> {
    let fail = |e: Error| e.to_string();
    let mut poll = Poll::new().map_err(|e| e.to_string())?;
    let mut signals = Signals::new([SIGINT, SIGTERM, SIGHUP]).map_err(|e| e.to_string())?;
    poll.registry()
        .register(&mut signals, SIGNALS, Interest::READABLE)
        .map_err(|e| e.to_string())?;
    let registry = poll.registry().try_clone().map_err(|e| e.to_string())?;
    let mut server =
        Server::unbound_with_registry(args.cfg, handler, registry, SERVER).map_err(fail)?;
    for addr in &args.listen {
        let addr = server.listen(*addr).map_err(fail)?;
        if dashboard {
            info!("listening on ws://{addr} (dashboard: http://{addr}/)");
        } else {
            info!("listening on ws://{addr}");
        }
    }
    #[cfg(not(feature = "tls"))]
    if args.tls_files.is_some() {
        return Err("this emberws was built without the `tls` feature".into());
    }
    #[cfg(feature = "tls")]
    let mut tls_addrs = Vec::new();
    #[cfg(feature = "tls")]
    if let Some(files) = &args.tls_files {
        let config = files.load()?;
        for addr in &args.tls_listen {
            let addr = server.listen_tls(*addr, config.clone()).map_err(fail)?;
            tls_addrs.push(addr);
            if dashboard {
                info!("listening on wss://{addr} (dashboard: https://{addr}/)");
            } else {
                info!("listening on wss://{addr}");
            }
        }
    }
    let mut events = Events::with_capacity(1024);
    let mut timeout = server.turn(Instant::now());
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
                        reload(&mut server, args.tls_files.as_ref(), &tls_addrs);
                        #[cfg(not(feature = "tls"))]
                        info!("SIGHUP: nothing to reload");
                    } else {
                        info!("signal {signal}: shutting down");
                        server.shutdown();
                    }
                }
            } else {
                server.handle_event(event);
            }
        }
        timeout = server.turn(Instant::now());
    }
    info!("stopped");
    Ok(())
}

/// SIGHUP: new TLS files for new handshakes; a bad file keeps the old ones.
#[cfg(feature = "tls")]
fn reload<H: Handler>(server: &mut Server<H>, files: Option<&tls::Files>, addrs: &[SocketAddr]) {
    let Some(files) = files else {
        info!("SIGHUP: nothing to reload");
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

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let args = match parse_args() {
        Ok(Some(args)) => args,
        Ok(None) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(msg) => {
            eprintln!("emberws: {msg}\n\nRun 'emberws --help' for the options.");
            return ExitCode::from(2);
        }
    };
    let result = if args.echo {
        serve(args, Echo, false)
    } else {
        serve(args, relay::Relay::default(), true)
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("emberws: {e}");
            ExitCode::FAILURE
        }
    }
}

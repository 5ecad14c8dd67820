//! The classic broadcast server: every message received is sent to every open connection
//! (the sender included), framed once. For comparing fan-out with servers that have no topics.
//!
//! `cargo run --release --example broadcast -- --listen 127.0.0.1:9003`

use emberws::{Config, Ctx, Decision, Handler, HttpRequest, Message, Server};

struct Broadcast;

impl Handler for Broadcast {
    type State = ();

    fn on_upgrade(&mut self, _req: &HttpRequest<'_>) -> Decision<()> {
        Decision::Accept(())
    }

    fn on_message(&mut self, ctx: &mut Ctx<'_>, _state: &mut (), msg: Message<'_>) {
        ctx.broadcast(msg);
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let mut listen = "127.0.0.1:9003".to_string();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--listen" => listen = args.next().ok_or("--listen needs an address")?,
            other => {
                return Err(
                    format!("unknown argument {other:?}; usage: broadcast [--listen ADDR]").into(),
                )
            }
        }
    }
    let cfg = Config::default()
        .max_connections(20_000)
        .max_backpressure(1 << 20);
    let mut server = Server::bind(listen.parse()?, cfg, Broadcast)?;
    eprintln!("broadcast: listening on ws://{}", server.local_addr());
    server.run()?;
    Ok(())
}

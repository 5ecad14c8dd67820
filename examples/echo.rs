//! The smallest server: echoes every message back.
//!
//! `cargo run --example echo` then connect to ws://127.0.0.1:9002/.

use emberws::{Config, Ctx, Decision, Handler, HttpRequest, Message, Server};

struct Echo;

impl Handler for Echo {
    type State = ();

    fn on_upgrade(&mut self, _req: &HttpRequest<'_>) -> Decision<()> {
        Decision::Accept(())
    }

    fn on_message(&mut self, ctx: &mut Ctx<'_>, _state: &mut (), msg: Message<'_>) {
        ctx.send(msg);
    }
}

fn main() -> Result<(), emberws::Error> {
    let addr = "127.0.0.1:9002".parse().expect("a valid address");
    Server::bind(addr, Config::default(), Echo)?.run()
}

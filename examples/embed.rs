//! Driving emberws from an application's own mio loop, beside its own event sources: here a
//! UDP socket whose datagrams are broadcast to every WebSocket client.
//!
//! `cargo run --example embed`, then send datagrams to 127.0.0.1:9007 (e.g.
//! `echo hi | nc -u -w0 127.0.0.1 9007`) and watch them arrive on ws://127.0.0.1:9006/.

use std::io;
use std::time::Instant;

use emberws::{Config, Ctx, Decision, Handler, HttpRequest, Message, Server};
use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token};

const UDP: Token = Token(0);
/// The server takes every token from here up.
const SERVER: Token = Token(1);

struct Quiet;

impl Handler for Quiet {
    type State = ();

    fn on_upgrade(&mut self, _req: &HttpRequest<'_>) -> Decision<()> {
        Decision::Accept(())
    }

    fn on_message(&mut self, _ctx: &mut Ctx<'_>, _state: &mut (), _msg: Message<'_>) {}
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut poll = Poll::new()?;
    let mut udp = UdpSocket::bind("127.0.0.1:9007".parse()?)?;
    poll.registry()
        .register(&mut udp, UDP, Interest::READABLE)?;
    let registry = poll.registry().try_clone()?;
    let mut server = Server::with_registry(
        "127.0.0.1:9006".parse()?,
        Config::default(),
        Quiet,
        registry,
        SERVER,
    )?;
    println!(
        "embed: ws://{}/, datagrams to udp://127.0.0.1:9007",
        server.local_addr()
    );

    let mut events = Events::with_capacity(256);
    let mut datagram = [0u8; 1500];
    // One clock read per turn, passed in: the server never reads the clock itself.
    let mut timeout = server.turn(Instant::now());
    loop {
        poll.poll(&mut events, timeout)?;
        for event in events.iter() {
            if event.token() != UDP {
                server.handle_event(event);
                continue;
            }
            loop {
                match udp.recv(&mut datagram) {
                    Ok(n) => {
                        server.broadcast(Message::Binary(&datagram[..n]));
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e.into()),
                }
            }
        }
        timeout = server.turn(Instant::now());
    }
}

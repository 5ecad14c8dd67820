//! The bridge's two sockets on the program's own `mio::Poll`: non-blocking connects, reads
//! into the links' fixed buffers and writes of their queues, until `WouldBlock` or a budget.
//! Nothing here blocks or sleeps, and there is no DNS lookup: the address was resolved once,
//! at start.

use std::io::{self, Read, Write};
use std::time::Instant;

use mio::event::Event;
use mio::net::TcpStream;
use mio::{Interest, Registry, Token};

use super::link::Due;
use super::{Bridge, Fault, Local, Which};

/// Bytes read from one link per turn at most: Redis cannot starve the WebSocket clients.
const READ_BUDGET: usize = 256 << 10;

/// The command link's kernel send buffer (`SO_SNDBUF`; Linux reserves twice this): what a
/// slow Redis can make the kernel hold beside the bridge's own queue. Ample for loopback or a
/// LAN (128 KiB in flight is 640 MB/s at a 0.2 ms round trip).
pub const SEND_BUFFER: usize = 64 << 10;

/// One link's socket and what the poll said about it (edge-triggered: a flag stays set
/// until a read or write returns `WouldBlock`).
#[derive(Debug)]
struct Socket {
    token: Token,
    stream: Option<TcpStream>,
    connecting: bool,
    readable: bool,
    writable: bool,
}

impl Socket {
    fn new(token: Token) -> Socket {
        Socket {
            token,
            stream: None,
            connecting: false,
            readable: false,
            writable: false,
        }
    }
}

/// The bridge's sockets.
pub struct Net {
    registry: Registry,
    sockets: [Socket; 2],
    /// A link stopped at its read budget with bytes left: the poll must not sleep.
    more: bool,
}

impl Net {
    /// Sockets registered with `registry` under `tokens` (commands, subscriber).
    pub fn new(registry: Registry, tokens: [Token; 2]) -> Net {
        Net {
            registry,
            sockets: [Socket::new(tokens[0]), Socket::new(tokens[1])],
            more: false,
        }
    }

    /// Records one event of the poll; false if its token is not one of ours.
    pub fn handle_event(&mut self, event: &Event) -> bool {
        let Some(s) = self.sockets.iter_mut().find(|s| s.token == event.token()) else {
            return false;
        };
        let failed = event.is_error() || event.is_read_closed() || event.is_write_closed();
        s.readable |= event.is_readable() || failed;
        s.writable |= event.is_writable() || failed;
        true
    }

    /// Does what both links can do now: connects due, reads, writes, timeouts. Returns when
    /// the poll should wake for the bridge at the latest.
    pub fn drive(&mut self, bridge: &mut Bridge, now: Instant, local: &mut impl Local) -> Instant {
        self.more = false;
        for which in [Which::Commands, Which::Subscriber] {
            self.drive_one(which, bridge, now, local);
        }
        if self.more {
            now
        } else {
            bridge.next_deadline()
        }
    }

    fn drive_one(
        &mut self,
        which: Which,
        bridge: &mut Bridge,
        now: Instant,
        local: &mut impl Local,
    ) {
        match bridge.due(which, now) {
            Due::Connect => self.connect(which, bridge, now),
            Due::Late => self.drop_link(which, bridge, now, Fault::Late),
            Due::Ping | Due::Nothing => {}
        }
        let s = &mut self.sockets[which as usize];
        if s.stream.is_none() {
            return;
        }
        if s.connecting {
            if !s.writable {
                return;
            }
            match finished(s.stream.as_ref()) {
                Ok(true) => {
                    s.connecting = false;
                    bridge.connected(which, now);
                }
                Ok(false) => {
                    s.writable = false;
                    return;
                }
                Err(e) => return self.drop_link(which, bridge, now, Fault::Connect(e.kind())),
            }
        }
        if let Err(fault) = self.read(which, bridge, now, local) {
            return self.drop_link(which, bridge, now, fault);
        }
        if let Err(fault) = self.write(which, bridge, now) {
            self.drop_link(which, bridge, now, fault);
        }
    }

    fn connect(&mut self, which: Which, bridge: &mut Bridge, now: Instant) {
        let addr = bridge.settings().addr;
        let s = &mut self.sockets[which as usize];
        let opened = TcpStream::connect(addr).and_then(|mut stream| {
            self.registry.register(
                &mut stream,
                s.token,
                Interest::READABLE | Interest::WRITABLE,
            )?;
            Ok(stream)
        });
        match opened {
            Ok(stream) => {
                // Publishes should not wait for Nagle.
                let _ = stream.set_nodelay(true);
                if which == Which::Commands {
                    let _ = socket2::SockRef::from(&stream).set_send_buffer_size(SEND_BUFFER);
                }
                s.stream = Some(stream);
                s.connecting = true;
                s.readable = false;
                s.writable = false;
                bridge.connecting(which, now);
            }
            Err(e) => bridge.lost(which, now, Fault::Connect(e.kind())),
        }
    }

    fn drop_link(&mut self, which: Which, bridge: &mut Bridge, now: Instant, fault: Fault) {
        let s = &mut self.sockets[which as usize];
        if let Some(mut stream) = s.stream.take() {
            let _ = self.registry.deregister(&mut stream);
        }
        s.connecting = false;
        s.readable = false;
        s.writable = false;
        bridge.lost(which, now, fault);
    }

    fn read(
        &mut self,
        which: Which,
        bridge: &mut Bridge,
        now: Instant,
        local: &mut impl Local,
    ) -> Result<(), Fault> {
        let s = &mut self.sockets[which as usize];
        let Some(stream) = s.stream.as_mut() else {
            return Ok(());
        };
        let mut budget = READ_BUDGET;
        while s.readable {
            if budget == 0 {
                self.more = true;
                break;
            }
            let space = bridge.read_space(which);
            let room = space.len().min(budget);
            match stream.read(&mut space[..room]) {
                Ok(0) => return Err(Fault::Closed),
                Ok(n) => {
                    budget -= n;
                    bridge.received(which, n, now, local)?;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => s.readable = false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Err(Fault::Closed),
            }
        }
        Ok(())
    }

    fn write(&mut self, which: Which, bridge: &mut Bridge, now: Instant) -> Result<(), Fault> {
        let s = &mut self.sockets[which as usize];
        let Some(stream) = s.stream.as_mut() else {
            return Ok(());
        };
        while s.writable && !bridge.unwritten(which).is_empty() {
            match stream.write(bridge.unwritten(which)) {
                Ok(0) => return Err(Fault::Closed),
                Ok(n) => bridge.wrote(which, n, now),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => s.writable = false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Err(Fault::Closed),
            }
        }
        Ok(())
    }
}

/// Whether a non-blocking connect has finished: `Ok(false)` while in flight.
fn finished(stream: Option<&TcpStream>) -> io::Result<bool> {
    let Some(stream) = stream else {
        return Ok(false);
    };
    if let Some(e) = stream.take_error()? {
        return Err(e);
    }
    match stream.peer_addr() {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(false),
        Err(e) => Err(e),
    }
}

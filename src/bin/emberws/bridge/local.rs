//! The bridge beside the relay in the program's loop: after each turn, the relay's publishes
//! (the server's exports, each told retained, cleared or plain by the relay's marks) go to
//! Redis, and what the other instances published comes in through [`Server::import`].

use std::collections::HashMap;
use std::time::Instant;

use emberws::Server;
use log::{debug, warn};
use mio::event::Event;
use mio::{Registry, Token};

use super::envelope::{self, Kind};
use super::net::Net;
use super::{Bridge, Local, Settings};
use crate::relay::{self, Relay, RetainMark};

/// The relay's side of the bridge: delivery and retained values.
struct Side<'a> {
    server: &'a mut Server<Relay>,
}

impl Local for Side<'_> {
    fn remote(&mut self, topic: &str, frame: &str, kind: Kind) {
        if !Relay::import(self.server, topic, frame, kind != Kind::Message) {
            debug!("redis: a message from another relay is past what this relay sends");
        }
    }

    fn load_retained(&mut self, values: HashMap<String, String>, touched: &[String]) {
        let left_out = self.server.handler_mut().load_retained(values, touched);
        if left_out > 0 {
            warn!(
                "redis: {left_out} retained values from Redis left out: past limits.max_retained_bytes"
            );
        }
    }

    fn acceptable(&self, topic: &str, frame: &str) -> bool {
        relay::is_publish_topic(topic) && envelope::is_message_frame(frame)
    }
}

/// Tells which exports were retained or cleared: the relay numbers its publishes and marks
/// the retained ones; the k-th export since the last drain is publish `next + k`, unless the
/// server dropped an export since (then this turn's marks cannot be matched: its publishes
/// go out as plain messages, and the hash misses those updates).
#[derive(Debug, Default)]
struct Kinds {
    /// The relay's publish count at the last drain.
    seen: u64,
    /// `Stats::exports_dropped` at the last drain.
    dropped: u64,
    marks: Vec<RetainMark>,
}

/// The bridge, its sockets and the relay's side, run by the program's loop.
pub struct Bridged {
    bridge: Bridge,
    net: Net,
    kinds: Kinds,
}

impl Bridged {
    /// A bridge for `server`'s relay on `registry`, under `tokens` (commands, subscriber);
    /// it connects on the first turn.
    pub fn new(
        settings: Settings,
        registry: Registry,
        tokens: [Token; 2],
        server: &mut Server<Relay>,
    ) -> Bridged {
        server.handler_mut().mark_retains();
        let kinds = Kinds {
            seen: server.handler_mut().published(),
            dropped: server.stats().exports_dropped,
            marks: Vec::new(),
        };
        Bridged {
            bridge: Bridge::new(settings, Instant::now()),
            net: Net::new(registry, tokens),
            kinds,
        }
    }

    /// Takes the poll's events of the bridge's sockets.
    pub fn handle_event(&mut self, event: &Event) -> bool {
        self.net.handle_event(event)
    }

    /// After each turn of the server: the exports out, the links driven, what came in
    /// delivered. Returns when the bridge must run again at the latest.
    pub fn turn(&mut self, server: &mut Server<Relay>, now: Instant) -> Instant {
        self.forward(server);
        let deadline = self.net.drive(&mut self.bridge, now, &mut Side { server });
        server.handler_mut().bridge = Some(self.bridge.stats());
        deadline
    }

    /// The relay's publishes since the last turn, to Redis, in order, but for its own `$`
    /// topics (each export still counts toward the publish numbers the marks use).
    fn forward(&mut self, server: &mut Server<Relay>) {
        let k = &mut self.kinds;
        server.handler_mut().take_retain_marks(&mut k.marks);
        let published = server.handler_mut().published();
        let dropped = server.stats().exports_dropped;
        let exact = dropped == k.dropped;
        k.dropped = dropped;
        let (mut seq, mut marks) = (k.seen, k.marks.iter().peekable());
        let bridge = &mut self.bridge;
        server.drain_exports(|topic, msg| {
            seq += 1;
            let kind = match marks.next_if(|m| exact && m.seq == seq) {
                Some(m) if m.clear => Kind::Cleared,
                Some(_) => Kind::Retained,
                None => Kind::Message,
            };
            // Each relay has its own `$SYS`: its figures stay here.
            if !relay::reserved(topic) {
                bridge.publish(topic, msg.as_bytes(), kind);
            }
        });
        if seq != published && exact {
            debug!(
                "redis: {} exports for {} publishes of the relay",
                seq - k.seen,
                published - k.seen
            );
        }
        k.seen = published;
    }
}

//! Chat rooms on topics, the room taken from the URL: connect to `ws://HOST/chat/ROOM`, send
//! `{"type":"chat","text":T}`; the room hears `{"type":"chat","room":R,"user":U,"text":T}`,
//! and `user-joined` / `user-left` notes as people come and go.
//!
//! Each connection's room and name live in its own state (`Handler::State`), made by
//! `on_upgrade` from the request path and handed back to `on_close`: no map kept beside the
//! server.
//!
//! `cargo run --example chat` then connect to ws://127.0.0.1:9004/chat/kitchen.

use emberws::{CloseCode, Config, Ctx, Decision, Handler, HttpRequest, Message, Server};
use serde_json::{json, Value};

/// One member of a room.
struct Member {
    room: String,
    topic: String,
    user: String,
}

#[derive(Default)]
struct Chat {
    joined: u64,
}

/// A room name: one topic level, no wildcards.
fn valid_room(room: &str) -> bool {
    !room.is_empty() && room.len() <= 64 && !room.contains(['+', '#', '/'])
}

impl Handler for Chat {
    type State = Member;

    fn on_upgrade(&mut self, req: &HttpRequest<'_>) -> Decision<Member> {
        match req.path().strip_prefix("/chat/") {
            Some(room) if valid_room(room) => {
                self.joined += 1;
                Decision::Accept(Member {
                    room: room.to_owned(),
                    topic: format!("room/{room}"),
                    user: format!("user{}", self.joined),
                })
            }
            _ => Decision::Reject(404),
        }
    }

    fn on_open(&mut self, ctx: &mut Ctx<'_>, me: &mut Member) {
        ctx.subscribe(&me.topic);
        let note = json!({"type": "user-joined", "room": me.room, "user": me.user});
        ctx.publish(&me.topic, Message::Text(&note.to_string()));
    }

    fn on_message(&mut self, ctx: &mut Ctx<'_>, me: &mut Member, msg: Message<'_>) {
        let Message::Text(text) = msg else {
            ctx.close(CloseCode::UNSUPPORTED, "text only");
            return;
        };
        let req: Value = serde_json::from_str(text).unwrap_or_default();
        match (req["type"].as_str(), req["text"].as_str()) {
            (Some("chat"), Some(said)) => {
                let msg = json!({"type": "chat", "room": me.room, "user": me.user, "text": said});
                ctx.publish(&me.topic, Message::Text(&msg.to_string()));
            }
            _ => {
                let error =
                    json!({"type": "error", "reason": "send {\"type\":\"chat\",\"text\":T}"});
                ctx.send_text(&error.to_string());
            }
        }
    }

    fn on_close(&mut self, ctx: &mut Ctx<'_>, me: Member, _code: CloseCode, _reason: &str) {
        let note = json!({"type": "user-left", "room": me.room, "user": me.user});
        ctx.publish(&me.topic, Message::Text(&note.to_string()));
    }
}

fn main() -> Result<(), emberws::Error> {
    let addr = "127.0.0.1:9004".parse().expect("a valid address");
    let mut server = Server::bind(addr, Config::default(), Chat::default())?;
    println!("chat: ws://{}/chat/ROOM", server.local_addr());
    server.run()
}

#[cfg(test)]
mod tests {
    use std::net::TcpStream;
    use std::time::Duration;

    use serde_json::{json, Value};
    use tungstenite::{Message as Ws, WebSocket};

    use super::*;

    fn client(addr: std::net::SocketAddr, room: &str) -> WebSocket<TcpStream> {
        let stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        tungstenite::client(format!("ws://{addr}/chat/{room}"), stream)
            .unwrap()
            .0
    }

    fn send(ws: &mut WebSocket<TcpStream>, v: Value) {
        ws.send(Ws::text(v.to_string())).unwrap();
    }

    fn next(ws: &mut WebSocket<TcpStream>) -> Value {
        loop {
            if let Ws::Text(t) = ws.read().unwrap() {
                return serde_json::from_str(&t).unwrap();
            }
        }
    }

    #[test]
    fn a_room_hears_joins_chats_and_leaves_and_nothing_from_other_rooms() {
        // A Server is not Send: it is built on the thread that runs it.
        let (tx, rx) = std::sync::mpsc::channel();
        let loop_thread = std::thread::spawn(move || {
            let mut server = Server::bind(
                "127.0.0.1:0".parse().unwrap(),
                Config::default(),
                Chat::default(),
            )
            .unwrap();
            tx.send((server.local_addr(), server.handle())).unwrap();
            server.run().unwrap();
        });
        let (addr, handle) = rx.recv().unwrap();

        let mut alice = client(addr, "kitchen");
        assert_eq!(next(&mut alice)["type"], "user-joined");
        let mut bob = client(addr, "kitchen");
        assert_eq!(next(&mut bob)["type"], "user-joined");
        let joined = next(&mut alice);
        assert_eq!(
            (joined["type"].as_str(), joined["room"].as_str()),
            (Some("user-joined"), Some("kitchen"))
        );
        let mut carol = client(addr, "garage");
        assert_eq!(next(&mut carol)["room"], "garage");

        send(&mut bob, json!({"type": "chat", "text": "tea?"}));
        for ws in [&mut alice, &mut bob] {
            let msg = next(ws);
            assert_eq!(
                (
                    msg["type"].as_str(),
                    msg["text"].as_str(),
                    msg["room"].as_str()
                ),
                (Some("chat"), Some("tea?"), Some("kitchen"))
            );
        }
        send(&mut carol, json!({"type": "chat", "text": "only me"}));
        assert_eq!(next(&mut carol)["text"], "only me");

        send(&mut alice, json!({"type": "nonsense"}));
        assert_eq!(next(&mut alice)["type"], "error");

        // A path that names no room is refused at the upgrade.
        let stream = TcpStream::connect(addr).unwrap();
        let refused = tungstenite::client(format!("ws://{addr}/elsewhere"), stream);
        match refused {
            Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(res))) => {
                assert_eq!(res.status(), 404)
            }
            other => panic!("expected 404, got {:?}", other.map(|_| ())),
        }

        bob.close(None).unwrap();
        while bob.read().is_ok() {}
        let left = next(&mut alice);
        assert_eq!(
            (left["type"].as_str(), left["room"].as_str()),
            (Some("user-left"), Some("kitchen"))
        );

        drop((alice, carol));
        handle.shutdown().unwrap();
        loop_thread.join().unwrap();
    }
}

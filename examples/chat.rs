//! Chat rooms on topics. Clients send `{"type":"join","room":R}` and
//! `{"type":"chat","room":R,"text":T}`; the room hears `{"type":"user-joined",...}` and the chat.
//!
//! `cargo run --example chat` then connect to ws://127.0.0.1:9004/.

use std::collections::HashMap;

use emberws::{CloseCode, Config, ConnId, Ctx, Decision, Handler, HttpRequest, Message, Server};
use serde_json::{json, Value};

#[derive(Default)]
struct Chat {
    /// The rooms each user joined, to tell them when the user leaves.
    rooms: HashMap<ConnId, Vec<String>>,
}

fn room_topic(room: &str) -> String {
    format!("room/{room}")
}

impl Chat {
    fn handle(&mut self, ctx: &mut Ctx<'_>, text: &str) -> Result<(), &'static str> {
        let req: Value = serde_json::from_str(text).map_err(|_| "invalid JSON")?;
        let room = req["room"]
            .as_str()
            .filter(|r| !r.is_empty() && !r.contains(['+', '#', '/']));
        let user = ctx.id().to_string();
        match req["type"].as_str() {
            Some("join") => {
                let room = room.ok_or("join needs a room")?;
                ctx.subscribe(&room_topic(room));
                self.rooms
                    .entry(ctx.id())
                    .or_default()
                    .push(room.to_owned());
                let note = json!({"type": "user-joined", "room": room, "user": user});
                ctx.publish(&room_topic(room), Message::Text(&note.to_string()));
                Ok(())
            }
            Some("chat") => {
                let room = room.ok_or("chat needs a room")?;
                let text = req["text"].as_str().ok_or("chat needs a text")?;
                let msg = json!({"type": "chat", "room": room, "user": user, "text": text});
                ctx.publish(&room_topic(room), Message::Text(&msg.to_string()));
                Ok(())
            }
            _ => Err("type must be join or chat"),
        }
    }
}

impl Handler for Chat {
    type State = ();

    fn on_upgrade(&mut self, _req: &HttpRequest<'_>) -> Decision<()> {
        Decision::Accept(())
    }

    fn on_message(&mut self, ctx: &mut Ctx<'_>, _state: &mut (), msg: Message<'_>) {
        let Message::Text(text) = msg else {
            ctx.close(CloseCode::UNSUPPORTED, "text only");
            return;
        };
        if let Err(reason) = self.handle(ctx, text) {
            ctx.send_text(&json!({"type": "error", "reason": reason}).to_string());
        }
    }

    fn on_close(&mut self, ctx: &mut Ctx<'_>, _state: (), _code: CloseCode, _reason: &str) {
        for room in self.rooms.remove(&ctx.id()).unwrap_or_default() {
            let note = json!({"type": "user-left", "room": room, "user": ctx.id().to_string()});
            ctx.publish(&room_topic(&room), Message::Text(&note.to_string()));
        }
    }
}

fn main() -> Result<(), emberws::Error> {
    let addr = "127.0.0.1:9004".parse().expect("a valid address");
    let mut server = Server::bind(addr, Config::default(), Chat::default())?;
    println!("chat: ws://{}/", server.local_addr());
    server.run()
}

#[cfg(test)]
mod tests {
    use std::net::TcpStream;
    use std::time::Duration;

    use serde_json::{json, Value};
    use tungstenite::{Message as Ws, WebSocket};

    use super::*;

    fn client(addr: std::net::SocketAddr) -> WebSocket<TcpStream> {
        let stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        tungstenite::client(format!("ws://{addr}/"), stream)
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

        let mut alice = client(addr);
        send(&mut alice, json!({"type": "join", "room": "kitchen"}));
        assert_eq!(next(&mut alice)["type"], "user-joined");
        let mut bob = client(addr);
        send(&mut bob, json!({"type": "join", "room": "kitchen"}));
        assert_eq!(next(&mut bob)["type"], "user-joined");
        let joined = next(&mut alice);
        assert_eq!(
            (joined["type"].as_str(), joined["room"].as_str()),
            (Some("user-joined"), Some("kitchen"))
        );
        let mut carol = client(addr);
        send(&mut carol, json!({"type": "join", "room": "garage"}));
        assert_eq!(next(&mut carol)["room"], "garage");

        send(
            &mut bob,
            json!({"type": "chat", "room": "kitchen", "text": "tea?"}),
        );
        for ws in [&mut alice, &mut bob] {
            let msg = next(ws);
            assert_eq!(
                (msg["type"].as_str(), msg["text"].as_str()),
                (Some("chat"), Some("tea?"))
            );
        }
        send(
            &mut carol,
            json!({"type": "chat", "room": "garage", "text": "only me"}),
        );
        assert_eq!(next(&mut carol)["text"], "only me");

        send(&mut alice, json!({"type": "nonsense"}));
        assert_eq!(next(&mut alice)["type"], "error");

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

//! A sensor thread publishing readings through a `ServerHandle`, while the loop serves
//! subscribers: clients send `{"type":"subscribe","topic":"sensors/#"}` (or any pattern).
//!
//! `cargo run --example telemetry` then connect to ws://127.0.0.1:9005/.

use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use emberws::{Config, Ctx, Decision, Handler, HttpRequest, Message, Server};
use serde_json::Value;

struct Subscribers;

impl Handler for Subscribers {
    type State = ();

    fn on_upgrade(&mut self, _req: &HttpRequest<'_>) -> Decision<()> {
        Decision::Accept(())
    }

    fn on_message(&mut self, ctx: &mut Ctx<'_>, _state: &mut (), msg: Message<'_>) {
        let Message::Text(text) = msg else { return };
        let Ok(req) = serde_json::from_str::<Value>(text) else {
            return;
        };
        if req["type"] == "subscribe" {
            if let Some(pattern) = req["topic"].as_str() {
                ctx.subscribe(pattern);
            }
        }
    }
}

/// Publishes a reading every `every` until the server stops.
fn spawn_sensor(handle: emberws::ServerHandle, every: Duration) {
    thread::spawn(move || {
        // Stands in for a real sensor: a slow sine wave of temperatures.
        for tick in 0u64.. {
            let celsius = 21.0 + 3.0 * (tick as f64 / 10.0).sin();
            let millis = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis());
            let reading = format!(
                "{{\"type\":\"message\",\"topic\":\"sensors/temp\",\"data\":{{\"celsius\":{celsius:.2},\"t\":{millis}}}}}"
            );
            if handle
                .publish("sensors/temp", Message::Text(&reading))
                .is_err()
            {
                return; // the server stopped
            }
            thread::sleep(every);
        }
    });
}

fn main() -> Result<(), emberws::Error> {
    let addr = "127.0.0.1:9005".parse().expect("a valid address");
    let mut server = Server::bind(addr, Config::default(), Subscribers)?;
    spawn_sensor(server.handle(), Duration::from_millis(500));
    println!("telemetry: ws://{}/", server.local_addr());
    server.run()
}

#[cfg(test)]
mod tests {
    use std::net::TcpStream;

    use tungstenite::Message as Ws;

    use super::*;

    #[test]
    fn a_subscriber_receives_the_sensor_threads_readings_in_order() {
        // A Server is not Send: it is built on the thread that runs it.
        let (tx, rx) = std::sync::mpsc::channel();
        let loop_thread = std::thread::spawn(move || {
            let mut server = Server::bind(
                "127.0.0.1:0".parse().unwrap(),
                Config::default(),
                Subscribers,
            )
            .unwrap();
            tx.send((server.local_addr(), server.handle())).unwrap();
            server.run().unwrap();
        });
        let (addr, handle) = rx.recv().unwrap();
        spawn_sensor(handle.clone(), Duration::from_millis(5));

        let stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let (mut ws, _) = tungstenite::client(format!("ws://{addr}/"), stream).unwrap();
        ws.send(Ws::text(r#"{"type":"subscribe","topic":"sensors/#"}"#))
            .unwrap();
        let mut last_t = 0;
        for _ in 0..5 {
            let Ws::Text(text) = ws.read().unwrap() else {
                panic!("not text")
            };
            let v: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(v["topic"], "sensors/temp");
            let celsius = v["data"]["celsius"].as_f64().unwrap();
            assert!((18.0..=24.0).contains(&celsius), "{celsius}");
            let t = v["data"]["t"].as_u64().unwrap();
            assert!(t >= last_t, "readings out of order");
            last_t = t;
        }
        drop(ws);
        handle.shutdown().unwrap();
        loop_thread.join().unwrap();
    }
}

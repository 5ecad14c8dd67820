//! A sensor thread publishing readings through a `ServerHandle`, while the loop serves
//! subscribers: clients send `{"type":"subscribe","topic":"sensors/#"}` (or any pattern).
//!
//! `cargo run --example telemetry` then connect to ws://127.0.0.1:9005/.

use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use emberws::{Config, Ctx, Handler, Message, Server};
use serde_json::Value;

struct Subscribers;

impl Handler for Subscribers {
    fn on_message(&mut self, ctx: &mut Ctx<'_>, msg: Message<'_>) {
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

fn main() -> Result<(), emberws::Error> {
    let addr = "127.0.0.1:9005".parse().expect("a valid address");
    let mut server = Server::bind(addr, Config::default(), Subscribers)?;
    let handle = server.handle();
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
            thread::sleep(Duration::from_millis(500));
        }
    });
    println!("telemetry: ws://{}/", server.local_addr());
    server.run()
}

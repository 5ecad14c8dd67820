//! A sensor thread publishing readings through a `ServerHandle`, while the loop serves
//! subscribers: clients send `{"type":"subscribe","topic":"sensors/#"}` (or any pattern),
//! and `{"type":"history"}` for the archive of earlier readings.
//!
//! Both producers pace themselves on what the server reports instead of queueing without
//! bound:
//! - the sensor thread uses `try_publish`: when the loop's inbox is full it keeps only the
//!   newest reading and counts the ones it skipped, and never blocks the sensor;
//! - the archive is streamed to each client from its own state: sent while the client's
//!   queue stays under a mark, paused on `buffered_amount()`, and resumed by `on_drain`, so
//!   a client that reads slowly gets all of it without ever being closed as a slow consumer.
//!
//! `cargo run --example telemetry` then connect to ws://127.0.0.1:9005/.

use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use emberws::{
    Config, Ctx, Decision, HandleError, Handler, HttpRequest, Message, SendStatus, Server,
};
use serde_json::Value;

/// Queued bytes past which the archive pauses until `on_drain`.
const PAUSE_AT: usize = 32 * 1024;

struct Subscribers {
    /// Earlier readings, oldest first: the archive a client can ask for.
    archive: Vec<String>,
}

impl Subscribers {
    fn new(readings: usize) -> Self {
        let archive = (0..readings)
            .map(|i| {
                let celsius = 21.0 + 3.0 * (i as f64 / 10.0).sin();
                format!(
                    "{{\"type\":\"history\",\"seq\":{i},\"data\":{{\"celsius\":{celsius:.2}}}}}"
                )
            })
            .collect();
        Subscribers { archive }
    }

    /// Sends the archive from `next` on until the client's queue passes the mark.
    fn stream(&self, ctx: &mut Ctx<'_>, next: &mut Option<usize>) {
        while let Some(i) = *next {
            let Some(reading) = self.archive.get(i) else {
                *next = None;
                ctx.send_text("{\"type\":\"history-end\"}");
                return;
            };
            match ctx.send_text(reading) {
                SendStatus::Sent | SendStatus::Queued => *next = Some(i + 1),
                // Closed, or dropped under the Drop policy: stop streaming.
                _ => *next = None,
            }
            if ctx.buffered_amount() > PAUSE_AT {
                return; // on_drain resumes
            }
        }
    }
}

impl Handler for Subscribers {
    /// Where this client is in the archive, while it is being streamed.
    type State = Option<usize>;

    fn on_upgrade(&mut self, _req: &HttpRequest<'_>) -> Decision<Option<usize>> {
        Decision::Accept(None)
    }

    fn on_message(&mut self, ctx: &mut Ctx<'_>, next: &mut Option<usize>, msg: Message<'_>) {
        let Message::Text(text) = msg else { return };
        let Ok(req) = serde_json::from_str::<Value>(text) else {
            return;
        };
        match req["type"].as_str() {
            Some("subscribe") => {
                if let Some(pattern) = req["topic"].as_str() {
                    ctx.subscribe(pattern);
                }
            }
            Some("history") if next.is_none() => {
                *next = Some(0);
                self.stream(ctx, next);
            }
            _ => {}
        }
    }

    fn on_drain(&mut self, ctx: &mut Ctx<'_>, next: &mut Option<usize>) {
        self.stream(ctx, next);
    }
}

/// Publishes a reading every `every` until the server stops. Never blocks on the server:
/// when its inbox is full, the newest reading waits for the next tick and the older one is
/// skipped.
fn spawn_sensor(handle: emberws::ServerHandle, every: Duration) -> thread::JoinHandle<u64> {
    thread::spawn(move || {
        let mut skipped = 0;
        // Stands in for a real sensor: a slow sine wave of temperatures.
        for tick in 0u64.. {
            let celsius = 21.0 + 3.0 * (tick as f64 / 10.0).sin();
            let millis = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis());
            let reading = format!(
                "{{\"type\":\"message\",\"topic\":\"sensors/temp\",\"data\":{{\"celsius\":{celsius:.2},\"t\":{millis}}}}}"
            );
            match handle.try_publish("sensors/temp", Message::Text(&reading)) {
                Ok(()) => {}
                Err(HandleError::Full) => skipped += 1,
                Err(_) => return skipped, // the server stopped
            }
            thread::sleep(every);
        }
        skipped
    })
}

fn main() -> Result<(), emberws::Error> {
    let addr = "127.0.0.1:9005".parse().expect("a valid address");
    let mut server = Server::bind(addr, Config::default(), Subscribers::new(1440))?;
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
                Subscribers::new(20_000),
            )
            .unwrap();
            tx.send((server.local_addr(), server.handle())).unwrap();
            server.run().unwrap();
        });
        let (addr, handle) = rx.recv().unwrap();
        let sensor = spawn_sensor(handle.clone(), Duration::from_millis(5));

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
        // The archive: 20,000 readings (about 1.2 MB, far past the 64 KiB backpressure
        // bound), all of them in order, while live readings keep arriving between them.
        ws.send(Ws::text(r#"{"type":"history"}"#)).unwrap();
        let mut seq = 0;
        loop {
            let Ws::Text(text) = ws.read().unwrap() else {
                panic!("not text")
            };
            let v: Value = serde_json::from_str(&text).unwrap();
            match v["type"].as_str() {
                Some("history") => {
                    assert_eq!(v["seq"], seq);
                    seq += 1;
                    if seq % 2000 == 0 {
                        // A client that reads slowly is paced, never closed.
                        std::thread::sleep(Duration::from_millis(20));
                    }
                }
                Some("history-end") => break,
                Some("message") => {}
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(seq, 20_000);
        assert_eq!(handle.stats().unwrap().slow_closes, 0);
        drop(ws);
        handle.shutdown().unwrap();
        loop_thread.join().unwrap();
        // Readings skipped while the inbox was full are counted, not queued.
        let _skipped = sensor.join().unwrap();
    }
}

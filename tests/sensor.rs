//! `examples/sensor.py` (Python, the `websockets` package) against the real relay: its
//! readings reach a tungstenite subscriber with their shape, retained; it presents its token;
//! it reconnects when the relay comes back. Needs Python 3 with `websockets` (Debian's
//! python3-websockets; `.ci/run` installs it) and fails saying so without.

mod util;

use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use util::binary::ServerProcess;
use util::relay::{clients_toml, Entry, Files, Peer};
use util::DEADLINE;

/// A Python 3 that can import `websockets`: `$EMBERWS_PYTHON`, else the `python3` on PATH,
/// else Debian's `/usr/bin/python3` (where apt's python3-websockets goes, when PATH first
/// has another Python, e.g. pyenv's).
fn python() -> String {
    let mut tried = Vec::new();
    let candidates = std::env::var("EMBERWS_PYTHON")
        .into_iter()
        .chain(["python3".to_owned(), "/usr/bin/python3".to_owned()]);
    for candidate in candidates {
        let ok = Command::new(&candidate)
            .args(["-c", "import websockets"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return candidate;
        }
        tried.push(candidate);
    }
    panic!(
        "examples/sensor.py needs Python 3 with the `websockets` package, and none of {tried:?} \
         has it: `apt-get install python3 python3-websockets` (.ci/run test does), or set \
         EMBERWS_PYTHON to an interpreter that has it"
    );
}

/// A running `examples/sensor.py`: its stdout lines (one JSON object per acknowledged
/// reading) as they come, its stderr kept; killed on drop.
struct Sensor {
    child: Child,
    lines: Receiver<String>,
    stderr: Option<JoinHandle<String>>,
}

impl Sensor {
    fn start(args: &[&str]) -> Sensor {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/sensor.py");
        let mut child = Command::new(python())
            .arg(&script)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start examples/sensor.py");
        let stdout = child.stdout.take().expect("piped");
        let mut stderr = child.stderr.take().expect("piped");
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let stderr = thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text);
            text
        });
        Sensor {
            child,
            lines,
            stderr: Some(stderr),
        }
    }

    /// The next acknowledged reading's `data`, as the sensor printed it.
    #[track_caller]
    fn next_reading(&mut self) -> Value {
        let line = self
            .lines
            .recv_timeout(DEADLINE)
            .unwrap_or_else(|_| panic!("the sensor printed no reading within {DEADLINE:?}"));
        let v: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line:?}: {e}"));
        v["data"].clone()
    }

    /// Waits for the exit (failing after [`DEADLINE`]); returns its status and stderr.
    #[track_caller]
    fn wait(mut self) -> (ExitStatus, String) {
        let deadline = Instant::now() + DEADLINE;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait for the sensor") {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "the sensor did not exit within {DEADLINE:?}"
            );
            thread::sleep(Duration::from_millis(20));
        };
        let stderr = self.stderr.take().map(|t| t.join().unwrap_or_default());
        (status, stderr.unwrap_or_default())
    }
}

impl Sensor {
    /// Kills it; returns what it wrote to stderr.
    fn stop(mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let stderr = self.stderr.take().map(|t| t.join().unwrap_or_default());
        stderr.unwrap_or_default()
    }
}

impl Drop for Sensor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("a clock after 1970")
        .as_secs_f64()
}

/// Asserts that `m` is the relay's frame of a reading on `topic` and returns its data: an
/// object of exactly `t` (Unix time in seconds, within `[from, to]`) and `value` (a number).
#[track_caller]
fn reading(m: &Value, topic: &str, from: f64, to: f64) -> Value {
    assert_eq!(m["type"], "message", "{m}");
    assert_eq!(m["topic"], topic, "{m}");
    let data = &m["data"];
    let fields = data
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {m}"));
    let mut keys: Vec<&str> = fields.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["t", "value"], "{m}");
    let t = data["t"].as_f64().unwrap_or_else(|| panic!("t: {m}"));
    // Stamped while the sensor ran (to the millisecond it rounds to).
    assert!(
        from - 0.001 <= t && t <= to + 0.001,
        "t {t} not in [{from}, {to}]"
    );
    let value = data["value"]
        .as_f64()
        .unwrap_or_else(|| panic!("value: {m}"));
    assert!(value.is_finite(), "{m}");
    data.clone()
}

#[test]
fn readings_arrive_retained_with_their_shape() {
    let relay = ServerProcess::spawn(&["--listen", "127.0.0.1:0"]);
    let addr = relay.addr();
    let topic = "greenhouse/1/temperature";
    let mut live = Peer::anonymous(addr, "subscriber");
    live.subscribe("greenhouse/#");

    let from = unix_now();
    let url = format!("ws://{addr}/");
    let mut sensor = Sensor::start(&[
        "--url",
        &url,
        "--topic",
        topic,
        "--count",
        "3",
        "--interval",
        "0.2",
    ]);
    let printed: Vec<Value> = (0..3).map(|_| sensor.next_reading()).collect();
    let (status, stderr) = sensor.wait();
    let to = unix_now();
    assert!(status.success(), "the sensor: {status}\n{stderr}");

    let got: Vec<Value> = (0..3)
        .map(|_| reading(&live.recv(), topic, from, to))
        .collect();
    assert_eq!(got, printed, "what arrived is what the sensor acknowledged");
    let t: Vec<f64> = got.iter().map(|d| d["t"].as_f64().unwrap()).collect();
    assert!(t.windows(2).all(|w| w[0] < w[1]), "in order: {t:?}");
    live.nothing_pending();

    // Retained: a dashboard that opens later gets the latest reading at once.
    let mut later = Peer::anonymous(addr, "later subscriber");
    later.subscribe(topic);
    assert_eq!(reading(&later.recv(), topic, from, to), got[2]);
    later.nothing_pending();
}

#[test]
fn the_sensor_presents_its_token_and_stops_when_refused() {
    let token = "greenhouse-1-token-0123456789";
    let files = Files::new("sensor-token");
    files.write_clients(&clients_toml(&[Entry {
        name: "greenhouse-1",
        token,
        publish: &["devices/{name}/#"],
        subscribe: &[],
    }]));
    // A listener off loopback (reached here through 127.0.0.1): a client needs its token.
    // The loopback one lets the test's subscriber in without a token.
    let config = files.write_config(&format!(
        "listen = [\"127.0.0.1:0\", \"0.0.0.0:0\"]\n\n[auth]\nclients = '{}'\n\n\
         [anonymous]\npublish = []\nsubscribe = [\"#\"]\n",
        files.clients_str()
    ));
    let mut relay = ServerProcess::spawn(&["--config", &config]);
    let local = relay.addr();
    let marker = "listening on ws://0.0.0.0:";
    let line = relay.wait_for_stderr(marker, 1, DEADLINE);
    let port: u16 = line
        .split(marker)
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {line:?}"));
    let public = format!("ws://127.0.0.1:{port}/");
    let topic = "devices/greenhouse-1/temp";
    let mut live = Peer::anonymous(local, "subscriber");
    live.subscribe(topic);

    let from = unix_now();
    let args = |extra: &[&'static str]| -> Vec<String> {
        let mut a: Vec<String> = ["--url", &public, "--topic", topic, "--interval", "0.1"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let run = |args: Vec<String>| {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        Sensor::start(&refs).wait()
    };

    let (status, stderr) = run(args(&["--count", "2", "--token", token]));
    assert!(status.success(), "with its token: {status}\n{stderr}");
    let to = unix_now();
    for _ in 0..2 {
        reading(&live.recv(), topic, from, to);
    }

    let (status, stderr) = run(args(&["--count", "1"]));
    assert_eq!(status.code(), Some(1), "without a token: {stderr}");
    assert!(stderr.contains("refused the connection (401)"), "{stderr}");

    let (status, stderr) = run(args(&["--count", "1", "--token", "not-the-token"]));
    assert_eq!(status.code(), Some(1), "a wrong token: {stderr}");
    assert!(stderr.contains("refused the connection (401)"), "{stderr}");

    // On loopback it gets in without a token, but the anonymous rules let no one publish.
    let url = format!("ws://{local}/");
    let refs = ["--url", &url, "--topic", topic, "--count", "1"];
    let (status, stderr) = Sensor::start(&refs).wait();
    assert_eq!(status.code(), Some(1), "not allowed: {stderr}");
    assert!(
        stderr.contains("does not let this client publish"),
        "{stderr}"
    );
    live.nothing_pending();
}

/// A port free on 127.0.0.1 now (the relay binds it with `SO_REUSEADDR`).
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().unwrap().port()
}

#[test]
fn the_sensor_reconnects_when_the_relay_comes_back() {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let addr: SocketAddr = listen.parse().unwrap();
    let topic = "greenhouse/2/humidity";
    let relay = ServerProcess::spawn(&["--listen", &listen]);
    let mut live = Peer::anonymous(addr, "subscriber");
    live.subscribe(topic);

    let from = unix_now();
    let url = format!("ws://{addr}/");
    // No --count: it publishes until stopped.
    let mut sensor = Sensor::start(&["--url", &url, "--topic", topic, "--interval", "0.2"]);
    let first = sensor.next_reading();
    assert_eq!(reading(&live.recv(), topic, from, unix_now()), first);

    // The relay goes away (killed: no close frame) and comes back on the same port with
    // nothing retained: whatever it has on the topic, the sensor published after it
    // reconnected.
    drop(live);
    drop(relay);
    let relay = ServerProcess::spawn(&["--listen", &listen]);
    let mut later = Peer::anonymous(relay.addr(), "subscriber after the restart");
    later.subscribe(topic);
    let after = reading(&later.recv(), topic, from, unix_now());
    assert!(
        after["t"].as_f64() > first["t"].as_f64(),
        "{after} after {first}"
    );
    let stderr = sensor.stop();
    assert!(stderr.contains("reconnecting in"), "{stderr}");
    assert!(
        stderr.matches("connected to").count() >= 2,
        "one connection to each relay at least:\n{stderr}"
    );
}

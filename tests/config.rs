//! The config file (`--config`, `--print-config`) and `emberws token NAME`, against the real
//! `emberws` binary.

mod util;

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use util::binary::{binary_path, ServerProcess};
use util::raw;
use util::tls::TempDir;
use util::DEADLINE;

/// What a run of the binary left: its status, stdout and stderr.
struct Run {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

/// Runs `emberws ARGS...` to its exit (killing it and failing after [`DEADLINE`]).
fn run(args: &[&str]) -> Run {
    let mut child = Command::new(binary_path())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start emberws");
    let read_all = |mut pipe: Box<dyn Read + Send>| {
        thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            text
        })
    };
    let stdout = read_all(Box::new(child.stdout.take().unwrap()));
    let stderr = read_all(Box::new(child.stderr.take().unwrap()));
    let deadline = Instant::now() + DEADLINE;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("emberws {args:?} did not exit");
        }
        thread::sleep(Duration::from_millis(20));
    };
    Run {
        status,
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
    }
}

/// A config file with `text` in a directory of its own (removed with the returned guard).
fn config_file(tag: &str, text: &str) -> (TempDir, PathBuf) {
    let dir = TempDir::new(tag);
    let path = dir.0.join("emberws.toml");
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

/// The example file at the repository's root.
fn example() -> String {
    format!("{}/emberws.example.toml", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn print_config_shows_the_file_with_the_flags_over_it() {
    let (_dir, path) = config_file(
        "print",
        "listen = [\"127.0.0.1:7001\"]\n\n[limits]\nmax_message = 1000\nmax_connections = 9\n",
    );
    let path = path.to_str().unwrap();
    // --config after the flag that overrides it: the file is read first wherever it is.
    let out = run(&["--max-message", "2000", "--config", path, "--print-config"]);
    assert!(out.status.success(), "{}", out.stderr);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert!(
        lines.contains(&"max_message = 2000"),
        "the flag wins: {}",
        out.stdout
    );
    assert!(
        lines.contains(&"max_connections = 9"),
        "the file's value: {}",
        out.stdout
    );
    assert!(
        lines.contains(&"listen = [\"127.0.0.1:7001\"]"),
        "{}",
        out.stdout
    );

    // What it printed reads back to the same settings.
    let (_dir2, again) = config_file("print-again", &out.stdout);
    let back = run(&["--config", again.to_str().unwrap(), "--print-config"]);
    assert!(back.status.success(), "{}", back.stderr);
    assert_eq!(back.stdout, out.stdout);
}

#[test]
fn the_example_file_loads_and_is_the_defaults() {
    let example = run(&["--config", &example(), "--print-config"]);
    assert!(example.status.success(), "{}", example.stderr);
    let defaults = run(&["--print-config"]);
    assert!(defaults.status.success(), "{}", defaults.stderr);
    assert_eq!(example.stdout, defaults.stdout);
    assert!(defaults.stdout.contains("listen = [\"127.0.0.1:9001\"]"));
}

#[test]
fn a_bad_file_exits_2_naming_the_key_and_the_line() {
    for (text, needle) in [
        (
            "mode = \"relay\"\n\n[limits]\nmax_message = 1\nmax_conections = 3\n",
            ":5: limits.max_conections: unknown field",
        ),
        (
            "[limits]\nmax_message = \"big\"\n",
            ":2: limits.max_message: invalid type",
        ),
        ("[rate]\n\n\nbytes = -5\n", ":4: rate.bytes: "),
        ("listen = [\"nowhere\"]\n", ":1: listen: "),
    ] {
        let (_dir, path) = config_file("bad", text);
        let path = path.to_str().unwrap();
        let out = run(&["--config", path, "--print-config"]);
        assert_eq!(out.status.code(), Some(2), "{text:?}: {}", out.stderr);
        assert!(
            out.stderr.contains(&format!("{path}{needle}")),
            "{text:?}: expected {needle:?} after the file name in: {}",
            out.stderr
        );
        assert!(out.stdout.is_empty(), "nothing printed: {}", out.stdout);
    }
    let out = run(&["--config", "/nonexistent/emberws.toml"]);
    assert_eq!(out.status.code(), Some(2), "{}", out.stderr);
    assert!(
        out.stderr.contains("/nonexistent/emberws.toml"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_flag_cannot_open_what_the_file_keeps_closed() {
    let (_dir, path) = config_file("open", "listen = [\"0.0.0.0:0\"]\n");
    let out = run(&["--config", path.to_str().unwrap(), "--print-config"]);
    assert_eq!(out.status.code(), Some(2), "{}", out.stderr);
    assert!(
        out.stderr.contains("without authentication")
            && out.stderr.contains("--clients FILE")
            && out.stderr.contains("--allow-anonymous"),
        "{}",
        out.stderr
    );
    let out = run(&[
        "--config",
        path.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--print-config",
    ]);
    assert!(
        out.status.success(),
        "the flag replaces the file's list: {}",
        out.stderr
    );
}

#[test]
fn token_prints_a_token_and_the_entry_holding_its_hash() {
    let out = run(&["token", "alice"]);
    assert!(out.status.success(), "{}", out.stderr);
    let token = out.stdout.lines().next().unwrap();
    assert_eq!(token.len(), 43, "{token:?}");
    assert!(
        token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
        "base64url: {token:?}"
    );
    // Then the entry for the clients file: [alice] with the token's SHA-256.
    let lines: Vec<&str> = out.stdout.lines().collect();
    let at = lines
        .iter()
        .position(|l| *l == "[alice]")
        .expect("an [alice] entry");
    let hash = lines[at..]
        .iter()
        .find_map(|l| l.strip_prefix("token_sha256 = \""))
        .and_then(|rest| rest.strip_suffix('"'))
        .expect("a token_sha256 line in the entry");
    let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(hash, hex);
    assert!(
        !out.stdout.contains(&format!("\"{token}\"")),
        "the token is not in the entry"
    );

    let other = run(&["token", "alice"]);
    assert_ne!(
        other.stdout.lines().next(),
        Some(token),
        "a fresh token every time"
    );
}

#[test]
fn token_with_an_invalid_name_exits_2() {
    for name in ["", "a b", "bob/x", &"n".repeat(65)] {
        let out = run(&["token", name]);
        assert_eq!(out.status.code(), Some(2), "{name:?}: {}", out.stderr);
        assert!(out.stderr.contains("not a client name"), "{}", out.stderr);
        assert!(out.stdout.is_empty());
    }
    assert_eq!(run(&["token"]).status.code(), Some(2));
}

#[test]
fn the_relay_runs_with_a_config_file() {
    let (_dir, path) = config_file(
        "serve",
        "listen = [\"127.0.0.1:0\"]\nallow_origin = [\"https://ok.example\"]\n",
    );
    let server = ServerProcess::spawn(&["--config", path.to_str().unwrap()]);
    let addr = server.addr();
    assert!(addr.ip().is_loopback() && addr.port() != 0, "{addr}");

    let request = format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    let (response, _stream) = raw::http_request(addr, request.as_bytes()).expect("/healthz");
    assert_eq!(response.status, 200, "{}", response.head);

    // The file's settings reach the server: another origin is refused.
    let status = |origin: &str| {
        let request = raw::upgrade_request(
            &addr.to_string(),
            "/",
            &raw::random_key(),
            &[("Origin", origin)],
        );
        raw::http_request(addr, request.as_bytes())
            .unwrap()
            .0
            .status
    };
    assert_eq!(status("https://evil.example"), 403);
    assert_eq!(status("https://ok.example"), 101);
    drop(server);
}

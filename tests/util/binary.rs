//! Running the `emberws` binary under test as a child process.
//!
//! [`ServerProcess::spawn`] starts `emberws` with the given arguments, reads its stderr
//! on a thread until the line containing `listening on ws://ADDR` shows up (at most
//! [`STARTUP_TIMEOUT`]), and then keeps draining stderr into an in-memory log so the
//! pipe never fills up and blocks the server. On drop the child is killed and reaped.
//!
//! ```ignore
//! let server = ServerProcess::echo(&["--max-message", "16777216"]);
//! let addr = server.addr(); // 127.0.0.1:<ephemeral port>
//! ```
//!
//! The child's environment is inherited unchanged (so `RUST_LOG` set by a developer
//! applies); the binary's own default log level prints the listening line.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, ToSocketAddrs};
use std::process::{Child, ChildStderr, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// How long the binary may take to print its listening line.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// The text that precedes the listening address in the server's log line.
pub const LISTEN_MARKER: &str = "listening on ws://";

/// Path of the `emberws` binary Cargo built for these integration tests, or `EMBERWS_BIN`
/// when set (e.g. a release build, for the figures `tests/hostile.rs` prints).
pub fn binary_path() -> &'static str {
    static PATH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    PATH.get_or_init(|| {
        std::env::var("EMBERWS_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_emberws").to_owned())
    })
}

/// A running `emberws` process; killed and waited for on drop.
pub struct ServerProcess {
    child: Child,
    addr: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
    args: Vec<String>,
}

impl ServerProcess {
    /// Starts `emberws ARGS...` and waits for its listening line.
    ///
    /// # Panics
    /// When the binary cannot be started, exits, or prints no listening line within
    /// [`STARTUP_TIMEOUT`]; the message contains everything it wrote to stderr.
    pub fn spawn<S: AsRef<str>>(args: &[S]) -> ServerProcess {
        match Self::try_spawn(args) {
            Ok(server) => server,
            Err(message) => panic!("{message}"),
        }
    }

    /// Starts `emberws echo --listen 127.0.0.1:0 EXTRA...`.
    pub fn echo<S: AsRef<str>>(extra: &[S]) -> ServerProcess {
        let mut args = vec!["echo".to_string(), "--listen".into(), "127.0.0.1:0".into()];
        args.extend(extra.iter().map(|s| s.as_ref().to_string()));
        Self::spawn(&args)
    }

    /// Like [`ServerProcess::spawn`], but returns the failure (with captured stderr)
    /// instead of panicking.
    pub fn try_spawn<S: AsRef<str>>(args: &[S]) -> Result<ServerProcess, String> {
        Self::try_spawn_wrapped(&[], args)
    }

    /// Like [`ServerProcess::try_spawn`], run through `wrapper` (e.g. `ip netns exec NS`),
    /// which must exec the binary in its own process: the child's PID is then the server's,
    /// and killing it stops the server.
    pub fn try_spawn_wrapped<S: AsRef<str>>(
        wrapper: &[&str],
        args: &[S],
    ) -> Result<ServerProcess, String> {
        let args: Vec<String> = args.iter().map(|s| s.as_ref().to_string()).collect();
        let mut command = match wrapper.split_first() {
            Some((program, rest)) => {
                let mut c = Command::new(program);
                c.args(rest).arg(binary_path());
                c
            }
            None => Command::new(binary_path()),
        };
        let mut child = command
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start {wrapper:?} {} {args:?}: {e}", binary_path()))?;
        let stderr = child.stderr.take().expect("stderr was piped");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (found_tx, found_rx) = mpsc::channel();
        let thread_log = Arc::clone(&log);
        let spawned = thread::Builder::new()
            .name("emberws-stderr".into())
            .spawn(move || drain_stderr(stderr, &thread_log, found_tx));
        if let Err(e) = spawned {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("cannot start the stderr reader thread: {e}"));
        }

        let deadline = Instant::now() + STARTUP_TIMEOUT;
        let outcome = found_rx.recv_timeout(deadline.saturating_duration_since(Instant::now()));
        let failure = match outcome {
            Ok(Ok(addr)) => {
                return Ok(ServerProcess {
                    child,
                    addr,
                    log,
                    args,
                })
            }
            Ok(Err(bad_line)) => format!("cannot parse the listening address in {bad_line:?}"),
            Err(RecvTimeoutError::Timeout) => format!(
                "no `{LISTEN_MARKER}` line within {} s",
                STARTUP_TIMEOUT.as_secs()
            ),
            Err(RecvTimeoutError::Disconnected) => {
                // stderr closed: the process is exiting or has exited.
                let status = wait_briefly(&mut child);
                format!("the server closed stderr before listening (exit status: {status})")
            }
        };
        let _ = child.kill();
        let _ = child.wait();
        let captured = log.lock().map(|l| l.join("\n")).unwrap_or_default();
        Err(format!(
            "emberws {args:?}: {failure}\n--- captured stderr ---\n{captured}\n--- end of stderr ---"
        ))
    }

    /// The address the server listens on (its first listening line, plain or TLS).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The address of its first `wss://` listener, waiting for the line (the plain
    /// listeners are logged first).
    pub fn tls_addr(&self) -> SocketAddr {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            let found = self.stderr_lines().iter().find_map(|l| {
                let at = l.find(TLS_LISTEN_MARKER)? + TLS_LISTEN_MARKER.len();
                l[at..].split([' ', '/']).next()?.parse().ok()
            });
            if let Some(addr) = found {
                return addr;
            }
            assert!(Instant::now() < deadline, "no `{TLS_LISTEN_MARKER}` line");
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// `ws://ADDR/`.
    pub fn ws_url(&self) -> String {
        format!("ws://{}/", self.addr)
    }

    /// The arguments the binary was started with.
    pub fn args(&self) -> &[String] {
        &self.args
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Every stderr line captured so far.
    pub fn stderr_lines(&self) -> Vec<String> {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// The last `n` stderr lines captured so far, joined with newlines.
    pub fn stderr_tail(&self, n: usize) -> String {
        let lines = self.stderr_lines();
        let start = lines.len().saturating_sub(n);
        lines[start..].join("\n")
    }

    /// How many stderr lines captured so far contain `needle`.
    pub fn count_stderr(&self, needle: &str) -> usize {
        self.stderr_lines_with(needle).len()
    }

    /// The stderr lines captured so far that contain `needle`, in order.
    pub fn stderr_lines_with(&self, needle: &str) -> Vec<String> {
        let mut lines = self.stderr_lines();
        lines.retain(|l| l.contains(needle));
        lines
    }

    /// Waits until at least `count` stderr lines contain `needle` (at most `timeout`);
    /// returns the `count`-th of them.
    ///
    /// # Panics
    /// After `timeout`, or when the server exits first, with its last stderr lines.
    pub fn wait_for_stderr(&mut self, needle: &str, count: usize, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let lines = self.stderr_lines();
            if let Some(line) = lines.iter().filter(|l| l.contains(needle)).nth(count - 1) {
                return line.clone();
            }
            if let Some(status) = self.try_wait() {
                panic!(
                    "the server exited ({status}) before {count} line(s) with {needle:?}:\n{}",
                    self.stderr_tail(20)
                );
            }
            assert!(
                Instant::now() < deadline,
                "no {count} line(s) with {needle:?} within {} s; stderr ends with:\n{}",
                timeout.as_secs(),
                self.stderr_tail(20)
            );
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Sends `signal` (e.g. `libc::SIGHUP`) to the server process.
    ///
    /// # Panics
    /// When `kill(2)` fails (the process is gone).
    pub fn signal(&self, signal: libc::c_int) {
        let pid = libc::pid_t::try_from(self.pid()).expect("a pid fits pid_t");
        // SAFETY: kill(2) with a pid this handle owns (not yet reaped) and a valid signal.
        let rc = unsafe { libc::kill(pid, signal) };
        assert_eq!(
            rc,
            0,
            "kill({pid}, {signal}): {}",
            std::io::Error::last_os_error()
        );
    }

    /// `Some(status)` when the server has exited (it should not, on its own).
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Waits up to `timeout` for the server to exit: its status, or `None` if it is still
    /// running then.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Kills the server (if still running) and waits for it.
    pub fn kill(&mut self) -> Option<ExitStatus> {
        let _ = self.child.kill();
        self.child.wait().ok()
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a run of the binary to its exit left.
#[derive(Debug)]
pub struct Exit {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `emberws ARGS...` to its exit, stdin closed, stdout and stderr captured.
///
/// # Panics
/// When it cannot be started, or has not exited after `timeout` (it is killed then).
pub fn run_to_exit<S: AsRef<str>>(args: &[S], timeout: Duration) -> Exit {
    use std::io::Read;
    let args: Vec<&str> = args.iter().map(AsRef::as_ref).collect();
    let mut child = Command::new(binary_path())
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start emberws {args:?}: {e}"));
    let read_all = |mut pipe: Box<dyn Read + Send>| {
        thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            text
        })
    };
    let stdout = read_all(Box::new(child.stdout.take().expect("piped")));
    let stderr = read_all(Box::new(child.stderr.take().expect("piped")));
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for emberws") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "emberws {args:?} did not exit within {} s: {}",
                timeout.as_secs(),
                stderr.join().unwrap_or_default()
            );
        }
        thread::sleep(Duration::from_millis(10));
    };
    Exit {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    }
}

/// Reads stderr line by line until EOF: every line goes to `log`; the first line with
/// the listening marker is reported through `found` (the address, or the line itself
/// when it does not parse). Dropping `found` at EOF tells the waiter the child is gone.
fn drain_stderr(
    stderr: ChildStderr,
    log: &Mutex<Vec<String>>,
    found: mpsc::Sender<Result<SocketAddr, String>>,
) {
    let mut reader = BufReader::new(stderr);
    let mut found = Some(found);
    let mut raw = Vec::new();
    loop {
        raw.clear();
        match reader.read_until(b'\n', &mut raw) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let line = String::from_utf8_lossy(&raw)
            .trim_end_matches(['\r', '\n'])
            .to_string();
        if found.is_some() {
            if let Some(parsed) = parse_listen_line(&line) {
                if let Some(tx) = found.take() {
                    let _ = tx.send(parsed.map_err(|()| line.clone()));
                }
            }
        }
        if let Ok(mut log) = log.lock() {
            log.push(line);
        }
    }
}

/// The text that precedes a TLS listener's address in the server's log line.
pub const TLS_LISTEN_MARKER: &str = "listening on wss://";

/// `None` when the line has no listening marker (plain or TLS); else the parsed address.
fn parse_listen_line(line: &str) -> Option<Result<SocketAddr, ()>> {
    let start = match line.find(LISTEN_MARKER) {
        Some(at) => at + LISTEN_MARKER.len(),
        None => line.find(TLS_LISTEN_MARKER)? + TLS_LISTEN_MARKER.len(),
    };
    let token: String = line[start..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | ':' | '[' | ']' | '-'))
        .collect();
    let parsed = token
        .parse::<SocketAddr>()
        .ok()
        .or_else(|| token.to_socket_addrs().ok()?.next())
        .map(reachable);
    Some(parsed.ok_or(()))
}

/// A listener on every address (`0.0.0.0`, `[::]`) is reached on loopback.
fn reachable(mut addr: SocketAddr) -> SocketAddr {
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    addr
}

/// Waits up to two seconds for the child to exit and describes its status.
fn wait_briefly(child: &mut Child) -> String {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return status.to_string(),
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(10)),
            Ok(None) => return "still running".into(),
            Err(e) => return format!("unknown ({e})"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_listen_line;

    #[test]
    fn parses_listen_lines() {
        let line = "[2025-01-01T00:00:00Z INFO  emberws] listening on ws://127.0.0.1:4567 (echo)";
        assert_eq!(
            parse_listen_line(line),
            Some(Ok("127.0.0.1:4567".parse().unwrap()))
        );
        assert_eq!(
            parse_listen_line("listening on ws://[::1]:80/"),
            Some(Ok("[::1]:80".parse().unwrap()))
        );
        assert_eq!(parse_listen_line("starting"), None);
        assert_eq!(
            parse_listen_line("listening on ws://nonsense"),
            Some(Err(()))
        );
    }
}

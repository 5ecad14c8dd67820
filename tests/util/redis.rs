//! A real `redis-server` for the bridge tests: started on a free loopback port with nothing
//! saved to disk, stopped by PID (SIGKILL, as `kill -9`), and started again on the same port.
//!
//! `redis-server` must be installed (Debian: `apt-get install redis-server`; `.ci/run` does
//! it): without it the tests fail, saying so, rather than pass without having run.

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use super::DEADLINE;

/// A `redis-server` child process; killed (SIGKILL) and reaped on drop.
pub struct Redis {
    child: Option<Child>,
    port: u16,
}

/// A loopback port nobody listens on (the system's choice, released at once).
pub fn free_port() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind a free port");
    listener.local_addr().expect("its address").port()
}

impl Redis {
    /// Starts `redis-server` on a free port and waits until it answers PING.
    pub fn start() -> Redis {
        Redis::start_on(free_port())
    }

    /// Starts `redis-server` on `port` (e.g. again, after [`Redis::kill9`]).
    ///
    /// # Panics
    /// When `redis-server` is not installed, exits, or does not answer PING within
    /// [`DEADLINE`].
    pub fn start_on(port: u16) -> Redis {
        let spawned = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let child = match spawned {
            Ok(child) => child,
            Err(e) if e.kind() == ErrorKind::NotFound => panic!(
                "redis-server is not installed: the Redis bridge tests need a real Redis. \
                 Install it (Debian: apt-get install redis-server; ./.ci/run does) and run \
                 them again"
            ),
            Err(e) => panic!("cannot start redis-server: {e}"),
        };
        let mut redis = Redis {
            child: Some(child),
            port,
        };
        redis.wait_ready();
        redis
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        url_of(self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills the server at once (SIGKILL: no shutdown, its clients see a reset or EOF) and
    /// reaps it.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the server (SIGSTOP): it holds its connections and reads nothing, a slow Redis
    /// at its slowest. [`Redis::resume`] lets it go on.
    pub fn pause(&self) {
        self.signal(libc::SIGSTOP);
    }

    /// Lets a paused server go on (SIGCONT).
    pub fn resume(&self) {
        self.signal(libc::SIGCONT);
    }

    fn signal(&self, signal: libc::c_int) {
        let child = self.child.as_ref().expect("redis-server is running");
        let pid = libc::pid_t::try_from(child.id()).expect("a pid fits pid_t");
        // SAFETY: kill(2) with the pid of a child this handle owns (not yet reaped).
        let rc = unsafe { libc::kill(pid, signal) };
        assert_eq!(
            rc,
            0,
            "kill({pid}, {signal}): {}",
            std::io::Error::last_os_error()
        );
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + DEADLINE;
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "redis-server on port {} exited at start: {status}",
                    self.port
                );
            }
            if ping(addr) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "redis-server on port {} did not answer PING within {} s",
                self.port,
                DEADLINE.as_secs()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// `redis://127.0.0.1:PORT`.
pub fn url_of(port: u16) -> String {
    format!("redis://127.0.0.1:{port}")
}

/// Whether a Redis answers `PING` with `+PONG` at `addr`.
fn ping(addr: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut buf = [0; 7];
    s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
}

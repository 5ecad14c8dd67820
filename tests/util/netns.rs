//! A small real network per test: two Linux network namespaces joined by a veth pair, the
//! server binary in one, the test's clients in the other, so that faults are real (a link
//! that goes down drops every packet: no FIN, no RST).
//!
//! ```text
//!  ewt-PID-N-srv                          ewt-PID-N-cli
//!  lo 127.0.0.1 (status, publishers)      lo
//!  ewsrv 10.X.Y.Z+1/30  ◀──── veth ────▶  ewcli 10.X.Y.Z+2/30
//! ```
//!
//! - Names carry the test process's PID and a counter, so parallel tests and parallel test
//!   processes never share a namespace; the /30 is per test too (the namespaces isolate their
//!   addresses anyway). Namespaces left by a test process that died (SIGKILL: no drop), and
//!   the servers still running in them, are removed by the next [`Net::new`].
//! - The server runs as `ip netns exec SRV emberws …`: `ip netns exec` execs the program, so
//!   the child's PID is the server's and [`ServerProcess`] stops it by that PID.
//! - Client sockets are made by [`Net::in_ns`]: a short-lived thread enters the namespace with
//!   `setns(fd of /run/netns/NAME, CLONE_NEWNET)` and runs the closure there. A network
//!   namespace is a per-thread attribute, only the sockets that thread creates are in it, and
//!   a socket stays in the namespace it was created in for its whole life: the closure returns
//!   its connected clients and the test uses them from any thread. Chosen over a helper
//!   subprocess because the clients stay ordinary values of the test (its assertions, its
//!   panics, no second protocol to speak to a helper), and over switching the test's own
//!   thread because nothing else of the test harness ever runs in a namespace.
//! - Everything is removed on drop, also when the test panics (the test profile unwinds):
//!   deleting a namespace deletes the veth end in it, and with it its peer. Drop the
//!   [`ServerProcess`] first (declare it after the [`Net`]): a namespace whose name is deleted
//!   lives on while a process is still inside.
//! - When namespaces cannot be made (not root, no `ip`), [`Net::new`] panics with the reason:
//!   these tests fail, they are never skipped.

use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;

use super::binary::ServerProcess;

/// The veth end in the server's namespace.
pub const SERVER_DEV: &str = "ewsrv";
/// The veth end in the client's namespace.
pub const CLIENT_DEV: &str = "ewcli";

/// One end of the network.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Server,
    Client,
}

/// Two namespaces and the veth pair between them; removed on drop.
pub struct Net {
    server_ns: String,
    client_ns: String,
    server_ip: Ipv4Addr,
    client_ip: Ipv4Addr,
    /// The namespaces created so far (drop deletes only these).
    made: Vec<String>,
}

impl Net {
    /// Builds the network for one test (`tag` only helps a human reading `ip netns list`).
    ///
    /// # Panics
    /// When it cannot: not root, no `ip`, or a step fails (with that step's stderr).
    pub fn new(tag: &str) -> Net {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        // SAFETY: geteuid(2) has no preconditions and cannot fail.
        let euid = unsafe { libc::geteuid() };
        assert!(
            euid == 0,
            "the network-namespace tests need root (CAP_NET_ADMIN, CAP_SYS_ADMIN) to make \
             namespaces and veth pairs; this process runs as uid {euid}. CI runs them as root."
        );
        if let Err(e) = Command::new("ip").arg("-V").output() {
            panic!(
                "the network-namespace tests need `ip` (iproute2): cannot run it: {e}. \
                 `.ci/run` installs it; here: apt-get install iproute2"
            );
        }
        remove_stale_namespaces();

        let pid = std::process::id();
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let base = [
            10,
            200 + (pid % 50) as u8,
            (n / 64 % 256) as u8,
            (n % 64 * 4) as u8,
        ];
        let mut net = Net {
            server_ns: format!("ewt-{pid}-{n}-srv"),
            client_ns: format!("ewt-{pid}-{n}-cli"),
            server_ip: Ipv4Addr::new(base[0], base[1], base[2], base[3] + 1),
            client_ip: Ipv4Addr::new(base[0], base[1], base[2], base[3] + 2),
            made: Vec::new(),
        };
        eprintln!(
            "netns {tag}: {} ({}) <-> {} ({})",
            net.server_ns, net.server_ip, net.client_ns, net.client_ip
        );
        for ns in [net.server_ns.clone(), net.client_ns.clone()] {
            ip(&["netns", "add", &ns]);
            net.made.push(ns);
        }
        let (srv, cli) = (net.server_ns.clone(), net.client_ns.clone());
        // Both ends are created inside their namespaces: nothing ever appears in the host's.
        ip(&[
            "-n", &srv, "link", "add", SERVER_DEV, "type", "veth", "peer", "name", CLIENT_DEV,
            "netns", &cli,
        ]);
        let server_cidr = format!("{}/30", net.server_ip);
        let client_cidr = format!("{}/30", net.client_ip);
        ip(&["-n", &srv, "addr", "add", &server_cidr, "dev", SERVER_DEV]);
        ip(&["-n", &cli, "addr", "add", &client_cidr, "dev", CLIENT_DEV]);
        for (ns, dev) in [(&srv, SERVER_DEV), (&cli, CLIENT_DEV)] {
            ip(&["-n", ns, "link", "set", "dev", "lo", "up"]);
            ip(&["-n", ns, "link", "set", "dev", dev, "up"]);
        }
        net
    }

    /// The server's address on the veth link.
    pub fn server_ip(&self) -> Ipv4Addr {
        self.server_ip
    }

    /// The client's address on the veth link.
    pub fn client_ip(&self) -> Ipv4Addr {
        self.client_ip
    }

    /// The namespace of `side`.
    pub fn ns(&self, side: Side) -> &str {
        match side {
            Side::Server => &self.server_ns,
            Side::Client => &self.client_ns,
        }
    }

    /// The veth end of `side`.
    pub fn dev(side: Side) -> &'static str {
        match side {
            Side::Server => SERVER_DEV,
            Side::Client => CLIENT_DEV,
        }
    }

    /// Starts `emberws ARGS…` in the server's namespace and waits for its listening line.
    pub fn spawn_server(&self, args: &[&str]) -> ServerProcess {
        ServerProcess::try_spawn_wrapped(&["ip", "netns", "exec", &self.server_ns], args)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// The relay in the server's namespace on every address there (`0.0.0.0:0`: loopback for
    /// status and local publishers, the veth address for clients), anonymous clients allowed.
    /// [`ServerProcess::addr`] is its loopback address; see [`Net::server_addr`].
    pub fn relay(&self, extra: &[&str]) -> ServerProcess {
        let mut args = vec!["--listen", "0.0.0.0:0", "--allow-anonymous"];
        args.extend_from_slice(extra);
        self.spawn_server(&args)
    }

    /// The server's listening port on its veth address: where clients connect.
    pub fn server_addr(&self, server: &ServerProcess) -> SocketAddr {
        SocketAddr::new(self.server_ip.into(), server.addr().port())
    }

    /// Runs `f` on a thread inside the namespace of `side` and returns what it returns: the
    /// sockets it makes are in that namespace for life. A panic in `f` is the caller's.
    pub fn in_ns<T: Send>(&self, side: Side, f: impl FnOnce() -> T + Send) -> T {
        let path = format!("/run/netns/{}", self.ns(side));
        thread::scope(|s| {
            let worker = s.spawn(|| {
                let ns = File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
                // SAFETY: setns(2) on a namespace fd this thread holds open; it changes only
                // this thread's network namespace, and the thread ends with the scope.
                let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
                assert_eq!(rc, 0, "setns({path}): {}", std::io::Error::last_os_error());
                f()
            });
            worker
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    /// `ip link set dev VETH down` in the namespace of `side`: from then on every packet on
    /// the link is lost (the other end loses its carrier), and neither end is told.
    pub fn link_down(&self, side: Side) {
        ip(&[
            "-n",
            self.ns(side),
            "link",
            "set",
            "dev",
            Net::dev(side),
            "down",
        ]);
    }

    /// Brings the link back (its address and route come back with it).
    pub fn link_up(&self, side: Side) {
        ip(&[
            "-n",
            self.ns(side),
            "link",
            "set",
            "dev",
            Net::dev(side),
            "up",
        ]);
    }

    /// A black hole in the namespace of `side`: packets from there to the other end are
    /// discarded silently (`ip route add blackhole OTHER/32`), the link stays up.
    pub fn blackhole(&self, side: Side) {
        ip(&[
            "-n",
            self.ns(side),
            "route",
            "add",
            "blackhole",
            &self.other(side),
        ]);
    }

    /// Removes the black hole of [`Net::blackhole`].
    pub fn clear_blackhole(&self, side: Side) {
        ip(&[
            "-n",
            self.ns(side),
            "route",
            "del",
            "blackhole",
            &self.other(side),
        ]);
    }

    fn other(&self, side: Side) -> String {
        match side {
            Side::Server => format!("{}/32", self.client_ip),
            Side::Client => format!("{}/32", self.server_ip),
        }
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for ns in self.made.drain(..).rev() {
            if let Err(e) = try_ip(&["netns", "del", &ns]) {
                eprintln!("netns: cannot delete {ns}: {e}");
            }
        }
    }
}

/// Runs `ip ARGS…`; panics with its stderr when it fails.
#[track_caller]
pub fn ip(args: &[&str]) {
    if let Err(e) = try_ip(args) {
        panic!("{e}");
    }
}

fn try_ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run ip {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Deletes `ewt-PID-…` namespaces whose test process no longer exists (it was killed before
/// its drops ran).
fn remove_stale_namespaces() {
    let Ok(dir) = std::fs::read_dir("/run/netns") else {
        return;
    };
    for entry in dir.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix("ewt-")
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if std::path::Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        // Its servers outlived it (nothing killed them): end them by PID, they are ours.
        if let Ok(out) = Command::new("ip").args(["netns", "pids", &name]).output() {
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                if let Ok(pid) = pid.parse::<libc::pid_t>() {
                    // SAFETY: kill(2) of a process inside a namespace of a dead test run.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            }
        }
        let _ = try_ip(&["netns", "del", &name]);
    }
}

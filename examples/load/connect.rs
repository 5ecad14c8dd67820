//! `connect` mode: open N connections as fast as the in-flight bound (and rate limit) allow,
//! hold them open answering pings, then close them all cleanly.

use std::time::Duration;

use crate::fleet::{Fleet, Ignore};
use crate::{percentiles_us, Run};

pub struct Config {
    pub connections: usize,
    pub hold: Duration,
}

/// Runs the mode; returns the JSON line and the error count.
///
/// # Errors
/// When `epoll` fails.
pub fn run(run: &Run, cfg: &Config) -> Result<(String, u64), String> {
    let io = |e: std::io::Error| format!("poll: {e}");
    let n = cfg.connections;
    if run.sources.len() <= 1 && n > 28_000 {
        eprintln!(
            "load: warning: {n} connections from one source address may run out of ephemeral \
             ports (see /proc/sys/net/ipv4/ip_local_port_range); use --source-count"
        );
    }
    // Enough for a handshake response and control frames; idle connections need no more.
    let mut fleet = Fleet::new(run.plan(2048), n, run.clock).map_err(io)?;
    let rss_before = run.server_rss_kib();
    let start = run.mark();
    fleet.open_all(n, &mut Ignore).map_err(io)?;
    let opened_at = run.mark();
    let rss_open = run.server_rss_kib();
    let opened = fleet.core.stats.opened;
    let rate = fleet.core.handshake_rate();

    eprintln!(
        "load: holding {opened} connections for {:.1} s",
        cfg.hold.as_secs_f64()
    );
    let lost_before = fleet.core.errors.total();
    let hold_end = opened_at.t + cfg.hold.as_nanos() as u64;
    fleet
        .run_until(hold_end, &mut Ignore, |_, _| false)
        .map_err(io)?;
    let lost_in_hold = fleet.core.errors.total() - lost_before;
    let still_open = fleet.core.open_count() as u64;
    run.close(&mut fleet).map_err(io)?;

    let usage = run.usage(&start, &opened_at);
    let o = run
        .header("connect")
        .u("connections", n as u64)
        .u("sources", run.sources.len().max(1) as u64)
        .u("opened", opened)
        .f("handshakes_per_s", rate, 0)
        .f("open_s", Some(usage.secs), 3)
        .o("handshake_us", percentiles_us(&fleet.core.stats.handshake));
    let mut o = run.cpu_fields(o, &usage, "handshake", opened);
    if let (Some(before), Some(open)) = (rss_before, rss_open) {
        let per_conn = (opened > 0).then(|| (open as f64 - before as f64) * 1024.0 / opened as f64);
        o = o
            .u("server_rss_kib_before", before)
            .u("server_rss_kib_open", open)
            .f("server_rss_bytes_per_conn", per_conn, 0);
    }
    let o = run
        .tls_fields(o, &fleet)
        .f("hold_s", Some(cfg.hold.as_secs_f64()), 1)
        .u("lost_during_hold", lost_in_hold)
        .u("open_after_hold", still_open)
        .u("pings_answered", fleet.core.stats.pings)
        .u("clean_closes", fleet.core.stats.clean_closes)
        .o("errors", fleet.core.errors.json(&[]));
    Ok((o.finish(), fleet.core.errors.total()))
}

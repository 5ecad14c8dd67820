//! CPU time and resident memory of a process, read from Linux's `/proc`.

use std::process::Command;

/// CPU-time clock ticks per second (`getconf CLK_TCK`), and whether it had to be assumed.
pub fn clock_ticks() -> (u64, bool) {
    let asked = Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<u64>().ok())
        .filter(|&t| t > 0);
    match asked {
        Some(t) => (t, false),
        None => {
            eprintln!("load: `getconf CLK_TCK` failed; assuming 100 ticks per second");
            (100, true)
        }
    }
}

/// A process whose CPU use is measured over a window.
pub struct Cpu {
    pid: String,
    ticks_per_s: u64,
}

/// CPU time at one instant.
#[derive(Clone, Copy)]
pub struct Sample {
    ticks: u64,
    /// Nanoseconds spent runnable but waiting for a CPU (`schedstat`), if the kernel tells.
    runq_wait_ns: Option<u64>,
}

impl Cpu {
    /// `pid` is a number or `self`.
    pub fn new(pid: &str, ticks_per_s: u64) -> Self {
        Self {
            pid: pid.to_owned(),
            ticks_per_s,
        }
    }

    pub fn sample(&self) -> Option<Sample> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)).ok()?;
        let schedstat = std::fs::read_to_string(format!("/proc/{}/schedstat", self.pid)).ok();
        Some(Sample {
            ticks: utime_stime(&stat)?,
            runq_wait_ns: schedstat.as_deref().and_then(runq_wait),
        })
    }

    /// Nanoseconds the process waited on a run queue between two samples: how much other
    /// processes kept it from running (a busy machine makes every figure suspect).
    pub fn runq_wait_ns(from: Sample, to: Sample) -> Option<u64> {
        Some(to.runq_wait_ns?.saturating_sub(from.runq_wait_ns?))
    }

    /// Microseconds of CPU (user + system) used between two samples.
    pub fn micros(&self, from: Sample, to: Sample) -> f64 {
        to.ticks.saturating_sub(from.ticks) as f64 * 1e6 / self.ticks_per_s as f64
    }

    /// Resident set size in KiB (`VmRSS`).
    pub fn rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
        line.split_whitespace().nth(1)?.parse().ok()
    }
}

/// utime + stime (fields 14 and 15 of proc(5) `stat`), in clock ticks.
///
/// Field 2, the command name, may hold spaces and parentheses, so counting starts after the
/// last `)`: field 3 is then the first word.
fn utime_stime(stat: &str) -> Option<u64> {
    let after = &stat[stat.rfind(')')? + 1..];
    let mut fields = after.split_whitespace().skip(14 - 3);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// The second field of `/proc/PID/schedstat`: time spent waiting on a run queue, in ns.
fn runq_wait(schedstat: &str) -> Option<u64> {
    schedstat.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        let stat = "4242 (a (b) c) S 1 4242 4242 0 -1 4194560 100 0 0 0 1234 567 0 0 20 0 1 0";
        assert_eq!(utime_stime(stat), Some(1234 + 567));
    }

    #[test]
    fn schedstat_wait_is_the_second_field() {
        assert_eq!(runq_wait("123456 7890 12\n"), Some(7890));
        assert_eq!(runq_wait("garbage"), None);
    }

    #[test]
    fn own_process_is_readable() {
        let cpu = Cpu::new("self", 100);
        assert!(cpu.sample().is_some());
        assert!(cpu.rss_kib().unwrap() > 0);
    }
}

//! Admission: who may take a connection slot — `max_connections`, the per-IP cap, a shutdown
//! in progress — and the spare slots where refused connections get their answer.

use std::collections::HashMap;
use std::net::IpAddr;

use crate::config::Config;

/// The verdict on a new connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Admitted: it counts against the limits until [`Admission::release`].
    Admit,
    /// Given a slot only to read its request head and answer it with this status.
    Refuse(u16),
    /// No slot at all: answer at once with 503 and close.
    Turn,
}

/// Counts of admitted connections, in all and per IP.
#[derive(Debug, Default)]
pub(crate) struct Admission {
    admitted: usize,
    per_ip: HashMap<IpAddr, u32>,
    closing: bool,
}

impl Admission {
    /// Decides on a connection from `ip` while `slots` connections hold a slot.
    pub(crate) fn admit(&mut self, ip: IpAddr, slots: usize, cfg: &Config) -> Verdict {
        // Refused connections get their 503 after their head is read, in a bounded number of
        // spare slots; past those, at once.
        let spare = (cfg.max_connections / 4).clamp(16, 4096);
        if slots >= cfg.max_connections + spare {
            return Verdict::Turn;
        }
        let per_ip = self.per_ip.get(&ip).copied().unwrap_or(0) as usize;
        let ip_over = cfg.max_connections_per_ip > 0 && per_ip >= cfg.max_connections_per_ip;
        if self.closing || self.admitted >= cfg.max_connections || ip_over {
            return Verdict::Refuse(503);
        }
        self.admitted += 1;
        *self.per_ip.entry(ip).or_default() += 1;
        Verdict::Admit
    }

    /// An admitted connection from `ip` ended.
    pub(crate) fn release(&mut self, ip: IpAddr) {
        self.admitted = self.admitted.saturating_sub(1);
        if let Some(n) = self.per_ip.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                self.per_ip.remove(&ip);
            }
        }
    }

    /// From now on every connection is refused (the server is shutting down).
    pub(crate) fn close(&mut self) {
        self.closing = true;
    }

    /// Admitted connections now.
    #[cfg(test)]
    pub(crate) fn admitted(&self) -> usize {
        self.admitted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_in_all_and_per_ip_with_spare_slots() {
        let cfg = Config::default()
            .max_connections(2)
            .max_connections_per_ip(1);
        let a: IpAddr = [127, 0, 0, 1].into();
        let b: IpAddr = [127, 0, 0, 2].into();
        let c: IpAddr = [127, 0, 0, 3].into();
        let mut adm = Admission::default();
        assert_eq!(adm.admit(a, 0, &cfg), Verdict::Admit);
        assert_eq!(adm.admit(a, 1, &cfg), Verdict::Refuse(503));
        assert_eq!(adm.admit(b, 2, &cfg), Verdict::Admit);
        assert_eq!(adm.admit(c, 3, &cfg), Verdict::Refuse(503));
        // 2 admitted + 16 spare slots.
        assert_eq!(adm.admit(c, 18, &cfg), Verdict::Turn);
        adm.release(a);
        assert_eq!(adm.admitted(), 1);
        assert_eq!(adm.admit(a, 2, &cfg), Verdict::Admit);
        adm.close();
        adm.release(a);
        assert_eq!(adm.admit(c, 2, &cfg), Verdict::Refuse(503));
    }
}

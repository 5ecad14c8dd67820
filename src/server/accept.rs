//! Admission: accepting a connection within the limits, and answering its request head —
//! upgrade, plain HTTP answer, or refusal with a status.

use std::net::{Shutdown, SocketAddr};

use log::{debug, trace};
use mio::net::TcpStream;
use mio::{Interest, Token};

use super::inbox::ConnId;
use super::{io, Core, Slot, NOT_SCHEDULED};
use crate::config::MAX_HEADERS;
use crate::conn::Conn;
use crate::ctx::Ctx;
use crate::handler::{Decision, Handler, HttpRequest};
use crate::proto::handshake::{self, Header};
use crate::proto::{response, HandshakeError, Status};

/// Answers a complete request head: upgrade, HTTP answer, or refusal.
pub(super) fn on_head<H: Handler>(handler: &mut H, core: &mut Core, key: usize, head: &[u8]) {
    let Some(slot) = core.conns.get(key) else {
        return;
    };
    let (peer, refuse, gen) = (slot.peer, slot.refuse, slot.gen);
    let mut table = [Header::EMPTY; MAX_HEADERS];
    let limit = core.cfg.max_headers.min(MAX_HEADERS);
    let req = match handshake::parse(head, table.get_mut(..limit).unwrap_or_default()) {
        Ok(Status::Complete((req, _))) => req,
        Ok(Status::Partial) => return core.refuse(key, HandshakeError::Malformed.status()),
        Err(e) => return core.refuse(key, e.status()),
    };
    if let Some(status) = refuse {
        return core.refuse(key, status);
    }
    let view = HttpRequest::new(&req, peer);
    if !req.is_upgrade() {
        let res = handler.on_request(&view, &core.stats);
        core.stats.http_requests += 1;
        let headers: Vec<(&str, &str)> =
            res.headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        response::http_response(
            &mut core.out,
            res.status,
            &headers,
            res.content_type,
            &res.body,
        );
        if let Some(slot) = core.conns.get_mut(key) {
            slot.conn.answered_http(&mut core.pool, &core.cfg, core.now);
        }
        debug!(
            "[{key}] HTTP {} {} -> {}",
            req.method, req.target, res.status
        );
        return;
    }
    let key_bytes = match req.validate_upgrade() {
        Ok(k) => k,
        Err(e) => {
            debug!("[{key}] upgrade refused: {e}");
            return core.refuse(key, e.status());
        }
    };
    // Browsers always send Origin; clients that are not browsers may omit it, and an
    // allow-list guards against cross-site pages, so a missing Origin is let through.
    if let Some(origin) = req.origin() {
        if !core.cfg.allowed_origins.is_empty()
            && !core.cfg.allowed_origins.iter().any(|o| o == origin)
        {
            debug!("[{key}] origin {origin:?} not allowed");
            return core.refuse(key, HandshakeError::ForbiddenOrigin.status());
        }
    }
    let protocol = match handler.on_upgrade(&view) {
        Decision::Reject(status) => return core.refuse(key, status),
        Decision::AcceptProtocol(p) => Some(p),
        Decision::Accept => {
            let prefs: Vec<&str> = core.cfg.protocols.iter().map(String::as_str).collect();
            response::select_protocol(&prefs, req.protocols())
        }
    };
    let Some(slot) = core.conns.get_mut(key) else {
        return;
    };
    slot.conn
        .accept(&mut core.out, key_bytes, protocol, core.now);
    core.stats.accepted += 1;
    let id = ConnId {
        key: key as u32,
        gen,
    };
    debug!("[{id}] open: {} {} from {peer}", req.method, req.target);
    handler.on_open(&mut Ctx::new(core, id));
}

impl Core {
    pub(super) fn admit(&mut self, mut sock: TcpStream, peer: SocketAddr) {
        let over = self.admitted >= self.cfg.max_connections;
        let per_ip = self.per_ip.get(&peer.ip()).copied().unwrap_or(0);
        let ip_over = self.cfg.max_connections_per_ip > 0
            && per_ip as usize >= self.cfg.max_connections_per_ip;
        // Refused connections get their 503 after their head is read, in a bounded number of
        // spare slots. Past those, the answer is written at once, after draining what the
        // client sent already, so that closing sends a FIN behind the answer rather than a
        // reset that could destroy it.
        let spare = (self.cfg.max_connections / 4).clamp(16, 4096);
        if self.conns.len() >= self.cfg.max_connections + spare {
            self.stats.reject(503);
            debug!("at capacity: answering 503 at once to {peer}");
            let mut sink = [0u8; 1024];
            for _ in 0..8 {
                if !matches!(io::read(&mut sock, &mut sink), io::ReadOutcome::Data(_)) {
                    break;
                }
            }
            self.tmp.clear();
            response::error(&mut self.tmp, 503);
            let _ = io::write(&mut sock, &self.tmp);
            self.tmp.clear();
            let _ = sock.shutdown(Shutdown::Write);
            return;
        }
        let refuse = (over || ip_over || self.shutdown_at.is_some()).then_some(503);
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        let token = Token(self.token_base + 2 + key);
        if self
            .registry
            .register(&mut sock, token, Interest::READABLE)
            .is_err()
        {
            return;
        }
        let _ = sock.set_nodelay(true);
        self.next_gen = self.next_gen.wrapping_add(1);
        let gen = self.next_gen;
        entry.insert(Slot {
            conn: Conn::new(self.now, &self.cfg),
            sock,
            peer,
            gen,
            refuse,
            writable: false,
            scheduled: NOT_SCHEDULED,
            accounted: 0,
        });
        if refuse.is_none() {
            *self.per_ip.entry(peer.ip()).or_default() += 1;
            self.admitted += 1;
        }
        self.stats.connections_open += 1;
        trace!("[{key}.{gen}] accepted from {peer}");
        self.settle(key);
    }

    /// Answers the request with an HTTP error status, then shuts the connection down.
    pub(super) fn refuse(&mut self, key: usize, status: u16) {
        let Some(slot) = self.conns.get_mut(key) else {
            return;
        };
        self.stats.reject(status);
        response::error(&mut self.out, status);
        slot.conn.answered_http(&mut self.pool, &self.cfg, self.now);
        debug!("[{key}] refused with {status}");
    }
}

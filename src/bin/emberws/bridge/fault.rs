//! Why a link to Redis was dropped: each reason is one log line (never a payload) and one
//! `reason` of `emberws_redis_link_errors_total`.

use std::fmt;

/// Why a link was dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The connect failed.
    Connect(std::io::ErrorKind),
    /// Redis closed the connection, or reading or writing failed.
    Closed,
    /// No connect, or no reply, in time.
    Late,
    /// Redis answered a command with an error (its first word, e.g. `ERR`, `NOAUTH`).
    ErrorReply(&'static str, ErrorKind),
    /// What Redis sent is not RESP, or is past the link's limits.
    Protocol(&'static str),
}

/// The first word of an error reply, kept without allocation (never its text: it may quote
/// arguments).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ErrorKind([u8; 16], u8);

impl ErrorKind {
    pub fn of(line: &[u8]) -> ErrorKind {
        let word = line.split(|&b| b == b' ').next().unwrap_or_default();
        let mut out = [0; 16];
        let n = word.len().min(16);
        for (o, &b) in out.iter_mut().zip(&word[..n]) {
            *o = if b.is_ascii_graphic() { b } else { b'?' };
        }
        ErrorKind(out, n as u8)
    }
}

impl fmt::Debug for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let word = &self.0[..usize::from(self.1)];
        f.write_str(std::str::from_utf8(word).unwrap_or("?"))
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::Connect(kind) => write!(f, "cannot connect: {kind}"),
            Fault::Closed => f.write_str("the connection was closed"),
            Fault::Late => f.write_str("no answer in time"),
            Fault::ErrorReply(command, kind) => {
                write!(f, "Redis answered {command} with an error ({kind})")
            }
            Fault::Protocol(what) => write!(f, "Redis sent something unreadable: {what}"),
        }
    }
}

impl Fault {
    /// The `reason` label in `/metrics`.
    pub fn reason(&self) -> usize {
        match self {
            Fault::Connect(_) => 0,
            Fault::Closed => 1,
            Fault::Late => 2,
            Fault::ErrorReply(..) => 3,
            Fault::Protocol(_) => 4,
        }
    }
}

pub const FAULT_REASONS: [&str; 5] = ["connect", "closed", "timeout", "error_reply", "protocol"];

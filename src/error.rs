//! The error of the API edge: binding, configuration and I/O of the loop itself.
//!
//! Peer misbehaviour never surfaces here: it is answered on the wire (see
//! [`crate::proto::error`]) and the server goes on.

use core::fmt;
use std::io;

pub use crate::proto::error::{HandshakeError, ProtocolError};

/// An error starting or running the server.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The configuration is inconsistent; the message names the field.
    Config(&'static str),
    /// Binding the listening address failed (address in use, permission denied, …).
    Bind(std::net::SocketAddr, io::Error),
    /// The poll loop itself failed.
    Io(io::Error),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Config(msg) => write!(f, "invalid configuration: {msg}"),
            Error::Bind(addr, e) => write!(f, "cannot listen on {addr}: {e}"),
            Error::Io(e) => write!(f, "I/O error: {e}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Bind(_, e) | Error::Io(e) => Some(e),
            Error::Config(_) => None,
        }
    }
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Self {
        Error::Io(e)
    }
}

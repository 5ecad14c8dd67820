//! [`ServerHandle`]: publish, send, close and shut down from any thread.

use std::sync::mpsc::{self, Sender};
use std::sync::Arc;
use std::time::Duration;

use mio::Waker;

use crate::handler::Message;
use crate::proto::message::DataKind;
use crate::proto::CloseCode;
use crate::server::inbox::{Command, ConnId};
use crate::stats::Stats;

/// A handle to a running server, `Send + Clone`. Each call copies the payload once into a
/// command and wakes the loop; it never blocks on the loop (except [`ServerHandle::stats`]).
#[derive(Clone, Debug)]
pub struct ServerHandle {
    tx: Sender<Command>,
    waker: Arc<Waker>,
}

/// The server has stopped; the command was not delivered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stopped;

impl core::fmt::Display for Stopped {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("the server has stopped")
    }
}

impl std::error::Error for Stopped {}

fn owned(msg: Message<'_>) -> (DataKind, Vec<u8>) {
    match msg {
        Message::Text(s) => (DataKind::Text, s.as_bytes().to_vec()),
        Message::Binary(b) => (DataKind::Binary, b.to_vec()),
    }
}

impl ServerHandle {
    pub(crate) fn new(tx: Sender<Command>, waker: Arc<Waker>) -> Self {
        ServerHandle { tx, waker }
    }

    fn command(&self, cmd: Command) -> Result<(), Stopped> {
        self.tx.send(cmd).map_err(|_| Stopped)?;
        self.waker.wake().map_err(|_| Stopped)
    }

    /// Publishes to every subscriber of `topic` (wildcard subscriptions included).
    ///
    /// # Errors
    /// [`Stopped`] if the server has stopped.
    pub fn publish(&self, topic: &str, msg: Message<'_>) -> Result<(), Stopped> {
        let (kind, data) = owned(msg);
        self.command(Command::Publish {
            topic: topic.to_owned(),
            kind,
            data,
        })
    }

    /// Sends to one connection.
    ///
    /// # Errors
    /// [`Stopped`] if the server has stopped.
    pub fn send(&self, id: ConnId, msg: Message<'_>) -> Result<(), Stopped> {
        let (kind, data) = owned(msg);
        self.command(Command::Send { id, kind, data })
    }

    /// Sends to every open connection.
    ///
    /// # Errors
    /// [`Stopped`] if the server has stopped.
    pub fn broadcast(&self, msg: Message<'_>) -> Result<(), Stopped> {
        let (kind, data) = owned(msg);
        self.command(Command::Broadcast { kind, data })
    }

    /// Closes one connection with a close frame.
    ///
    /// # Errors
    /// [`Stopped`] if the server has stopped.
    pub fn close(&self, id: ConnId, code: CloseCode, reason: &str) -> Result<(), Stopped> {
        self.command(Command::Close {
            id,
            code,
            reason: reason.to_owned(),
        })
    }

    /// Stops accepting, closes every connection with 1001, flushes, and ends the loop within
    /// the close timeout.
    ///
    /// # Errors
    /// [`Stopped`] if the server has stopped already.
    pub fn shutdown(&self) -> Result<(), Stopped> {
        self.command(Command::Shutdown)
    }

    /// A copy of the server's counters, asked of the loop (waits up to 5 s for it).
    ///
    /// # Errors
    /// [`Stopped`] if the server has stopped or did not answer.
    pub fn stats(&self) -> Result<Stats, Stopped> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.command(Command::Stats(tx))?;
        rx.recv_timeout(Duration::from_secs(5)).map_err(|_| Stopped)
    }
}

//! [`ServerHandle`]: publish, send, close and shut down from any thread.

use std::sync::Arc;

use mio::Waker;

use crate::conn::opcode;
use crate::conn::outbox;
use crate::handler::Message;
use crate::proto::message::DataKind;
use crate::proto::sse::EventId;
use crate::proto::CloseCode;
use crate::server::inbox::{Command, ConnId, Refused, Shared};
use crate::stats::Stats;

/// A handle to a running server, `Send + Clone`.
///
/// Each call frames the message on the calling thread (the one copy of the payload), queues
/// it in the server's inbox and wakes the loop. The loop writes the frame as it is to a
/// WebSocket and the frame's message as an event to an event stream (binary data never
/// reaches one: see [`crate::SendStatus::NotText`]). The inbox is bounded in bytes
/// ([`crate::Config::max_inbox_bytes`]): the plain calls wait for room, the `try_*` calls
/// return [`HandleError::Full`] instead. Called from the loop's own thread (inside a
/// callback), the plain calls never wait either: they answer `Full`.
#[derive(Clone, Debug)]
pub struct ServerHandle {
    shared: Arc<Shared>,
    waker: Arc<Waker>,
    max_send_size: usize,
}

/// Why a [`ServerHandle`] call was not carried out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HandleError {
    /// The server has stopped.
    Stopped,
    /// The inbox is full ([`crate::Config::max_inbox_bytes`]).
    Full,
    /// The message is larger than [`crate::Config::max_send_size`].
    TooLarge,
    /// The event id holds CR, LF or NUL, which an event stream cannot carry.
    InvalidEventId,
}

impl core::fmt::Display for HandleError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            HandleError::Stopped => "the server has stopped",
            HandleError::Full => "the server's inbox is full",
            HandleError::TooLarge => "the message is larger than max_send_size",
            HandleError::InvalidEventId => "the event id holds CR, LF or NUL",
        })
    }
}

impl std::error::Error for HandleError {}

/// The event id, if a stream can carry it, as the inbox keeps it.
fn checked_id(event_id: Option<&str>) -> Result<Option<Box<str>>, HandleError> {
    match event_id {
        None => Ok(None),
        Some(id) => EventId::new(id)
            .map(|id| Some(id.as_str().into()))
            .ok_or(HandleError::InvalidEventId),
    }
}

fn refused(r: Refused) -> HandleError {
    match r {
        Refused::Stopped => HandleError::Stopped,
        Refused::Full => HandleError::Full,
    }
}

impl ServerHandle {
    pub(crate) fn new(shared: Arc<Shared>, waker: Arc<Waker>, max_send_size: usize) -> Self {
        ServerHandle {
            shared,
            waker,
            max_send_size,
        }
    }

    fn frame(&self, msg: Message<'_>) -> Result<Vec<u8>, HandleError> {
        if msg.len() > self.max_send_size {
            return Err(HandleError::TooLarge);
        }
        let kind = match msg {
            Message::Text(_) => DataKind::Text,
            Message::Binary(_) => DataKind::Binary,
        };
        let mut frame = Vec::with_capacity(msg.len() + 10);
        outbox::encode(&mut frame, opcode(kind), msg.as_bytes());
        Ok(frame)
    }

    fn command(&self, cmd: Command, wait: bool) -> Result<(), HandleError> {
        if self.shared.push(cmd, wait).map_err(refused)? {
            self.waker.wake().map_err(|_| HandleError::Stopped)?;
        }
        Ok(())
    }

    /// Publishes to every subscriber of `topic` (wildcard subscriptions included), waiting
    /// for room in the inbox.
    ///
    /// # Errors
    /// [`HandleError::Stopped`], [`HandleError::TooLarge`]; [`HandleError::Full`] only on the
    /// loop's own thread.
    pub fn publish(&self, topic: &str, msg: Message<'_>) -> Result<(), HandleError> {
        self.publish_with(topic, None, msg, true)
    }

    /// As [`ServerHandle::publish`], with an event id for the event-stream subscribers (an
    /// `id:` line; WebSocket subscribers get the plain frame).
    ///
    /// # Errors
    /// As [`ServerHandle::publish`], and [`HandleError::InvalidEventId`].
    pub fn publish_event(
        &self,
        topic: &str,
        event_id: &str,
        msg: Message<'_>,
    ) -> Result<(), HandleError> {
        self.publish_with(topic, Some(event_id), msg, true)
    }

    /// As [`ServerHandle::publish_event`], but never waits.
    ///
    /// # Errors
    /// As [`ServerHandle::publish_event`], and `Full`.
    pub fn try_publish_event(
        &self,
        topic: &str,
        event_id: &str,
        msg: Message<'_>,
    ) -> Result<(), HandleError> {
        self.publish_with(topic, Some(event_id), msg, false)
    }

    fn publish_with(
        &self,
        topic: &str,
        event_id: Option<&str>,
        msg: Message<'_>,
        wait: bool,
    ) -> Result<(), HandleError> {
        let event_id = checked_id(event_id)?;
        let frame = self.frame(msg)?;
        self.command(
            Command::Publish {
                topic: topic.into(),
                frame,
                event_id,
            },
            wait,
        )
    }

    /// As [`ServerHandle::publish`], but never waits: [`HandleError::Full`] when the inbox is.
    ///
    /// # Errors
    /// As [`ServerHandle::publish`], and `Full`.
    pub fn try_publish(&self, topic: &str, msg: Message<'_>) -> Result<(), HandleError> {
        self.publish_with(topic, None, msg, false)
    }

    /// Sends to one connection, waiting for room in the inbox.
    ///
    /// # Errors
    /// As [`ServerHandle::publish`].
    pub fn send(&self, id: ConnId, msg: Message<'_>) -> Result<(), HandleError> {
        self.send_with(id, None, msg, true)
    }

    /// As [`ServerHandle::send`], but never waits.
    ///
    /// # Errors
    /// As [`ServerHandle::try_publish`].
    pub fn try_send(&self, id: ConnId, msg: Message<'_>) -> Result<(), HandleError> {
        self.send_with(id, None, msg, false)
    }

    /// As [`ServerHandle::send`], with an event id for an event stream (ignored for a
    /// WebSocket, which gets the plain frame).
    ///
    /// # Errors
    /// As [`ServerHandle::publish_event`].
    pub fn send_event(
        &self,
        id: ConnId,
        event_id: &str,
        msg: Message<'_>,
    ) -> Result<(), HandleError> {
        self.send_with(id, Some(event_id), msg, true)
    }

    /// As [`ServerHandle::send_event`], but never waits.
    ///
    /// # Errors
    /// As [`ServerHandle::try_publish_event`].
    pub fn try_send_event(
        &self,
        id: ConnId,
        event_id: &str,
        msg: Message<'_>,
    ) -> Result<(), HandleError> {
        self.send_with(id, Some(event_id), msg, false)
    }

    fn send_with(
        &self,
        id: ConnId,
        event_id: Option<&str>,
        msg: Message<'_>,
        wait: bool,
    ) -> Result<(), HandleError> {
        let event_id = checked_id(event_id)?;
        let frame = self.frame(msg)?;
        self.command(
            Command::Send {
                id,
                frame,
                event_id,
            },
            wait,
        )
    }

    /// Sends to every open connection, waiting for room in the inbox.
    ///
    /// # Errors
    /// As [`ServerHandle::publish`].
    pub fn broadcast(&self, msg: Message<'_>) -> Result<(), HandleError> {
        let frame = self.frame(msg)?;
        self.command(Command::Broadcast { frame }, true)
    }

    /// As [`ServerHandle::broadcast`], but never waits.
    ///
    /// # Errors
    /// As [`ServerHandle::try_publish`].
    pub fn try_broadcast(&self, msg: Message<'_>) -> Result<(), HandleError> {
        let frame = self.frame(msg)?;
        self.command(Command::Broadcast { frame }, false)
    }

    /// Closes one connection with a close frame.
    ///
    /// # Errors
    /// [`HandleError::Stopped`]; [`HandleError::Full`] only on the loop's own thread.
    pub fn close(&self, id: ConnId, code: CloseCode, reason: &str) -> Result<(), HandleError> {
        self.command(
            Command::Close {
                id,
                code,
                reason: reason.into(),
            },
            true,
        )
    }

    /// Stops accepting, closes every connection with 1001, flushes, and ends the loop within
    /// the close timeout.
    ///
    /// # Errors
    /// [`HandleError::Stopped`] if the server has stopped already.
    pub fn shutdown(&self) -> Result<(), HandleError> {
        self.command(Command::Shutdown, true)
    }

    /// The server's counters, as of a turn of the loop that ended after this call: the loop
    /// is woken and the call waits for it (at most 5 s). Called on the loop's own thread, it
    /// never waits and returns the counters as of the latest turn (a callback has
    /// [`crate::Ctx::stats`] for the current ones).
    ///
    /// # Errors
    /// [`HandleError::Stopped`] if the server has stopped or did not answer in time.
    pub fn stats(&self) -> Result<Stats, HandleError> {
        if self.shared.is_stopped() {
            return Err(HandleError::Stopped);
        }
        if self.shared.on_loop_thread() {
            return Ok(self.shared.stats());
        }
        let turn = self.shared.next_turn();
        self.waker.wake().map_err(|_| HandleError::Stopped)?;
        self.shared
            .fresh_stats(turn, std::time::Duration::from_secs(5))
            .ok_or(HandleError::Stopped)
    }
}

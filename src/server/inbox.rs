//! Commands from other threads: a std channel drained by the loop when a [`mio::Waker`]
//! wakes it. Senders never take a lock the loop holds.

use std::sync::mpsc::{Receiver, SyncSender};

use crate::proto::message::DataKind;
use crate::proto::CloseCode;
use crate::stats::Stats;

/// A connection's identity: its slab key and a generation, so a stale id held by another
/// thread never reaches a newer connection that reuses the key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnId {
    pub(crate) key: u32,
    pub(crate) gen: u32,
}

impl core::fmt::Display for ConnId {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{}.{}", self.key, self.gen)
    }
}

/// What another thread asks of the loop.
pub(crate) enum Command {
    Publish {
        topic: String,
        kind: DataKind,
        data: Vec<u8>,
    },
    Send {
        id: ConnId,
        kind: DataKind,
        data: Vec<u8>,
    },
    Broadcast {
        kind: DataKind,
        data: Vec<u8>,
    },
    Close {
        id: ConnId,
        code: CloseCode,
        reason: String,
    },
    Stats(SyncSender<Stats>),
    Shutdown,
}

/// The loop's end of the channel.
pub(crate) struct Inbox {
    pub(crate) rx: Receiver<Command>,
}

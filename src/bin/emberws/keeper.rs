//! The state file's keeper (`--state`): it writes the relay's state shortly after changes,
//! and as clean at shutdown.
//!
//! The state is encoded on the loop thread (memory only), and a thread of the keeper's own
//! writes it, syncs it and renames it into place. So a slow or stuck disk never stops the loop:
//! an SD card's sync can take a second, and a failing card or a lost network mount can take
//! forever. One write is on its way at a time. Changes made meanwhile are written after it,
//! and the writer wakes the loop through a socket pair on its poll when it is done. The
//! first write, which marks the file as in use, is made on the loop thread before anyone is
//! served. Only the loop thread logs.
//!
//! At shutdown the keeper waits at most [`FINISH_WAIT`] for a write on its way, and as
//! long again for the clean one. A disk that does not answer in that time leaves the file
//! "not clean", which the next start treats as a crash: a new epoch.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream as StdUnixStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use log::{info, warn};
use mio::net::UnixStream;
use mio::{Interest, Registry, Token};

use crate::relay::{self, Relay};

/// How long the state file may lag behind a change, at most: it is written at most this
/// often, while changes come.
pub const STATE_INTERVAL: Duration = Duration::from_secs(2);

/// A write still on its way after this long is reported once: the disk may be failing.
pub const SLOW_WRITE: Duration = Duration::from_secs(10);

/// How long the shutdown waits for the disk, for the write on its way and for the clean one.
pub const FINISH_WAIT: Duration = Duration::from_secs(10);

/// The writer thread's stack: it only opens, writes, syncs and renames files.
const WRITER_STACK: usize = 64 << 10;

/// A write handed to the writer thread: the encoded state, and `Relay::changes` when it was
/// encoded.
struct Job {
    bytes: Vec<u8>,
    changes: u64,
}

/// What a write came to; the buffer comes back to be used again.
struct Done {
    bytes: Vec<u8>,
    changes: u64,
    result: io::Result<()>,
}

/// What the loop and the writer thread share: one job, one outcome (a mutex and a
/// condition variable: std's channels would cost tens of KiB of binary for this).
#[derive(Default)]
struct Slot {
    job: Option<Job>,
    done: Option<Done>,
    /// The keeper is gone: the thread ends.
    closed: bool,
}

#[derive(Default)]
struct Shared {
    slot: Mutex<Slot>,
    cond: Condvar,
}

impl Shared {
    /// The slot (a panic elsewhere while holding it leaves nothing half done in it).
    fn lock(&self) -> MutexGuard<'_, Slot> {
        self.slot.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The writer thread, seen from the loop.
struct Writer {
    shared: Arc<Shared>,
    /// The loop's end of the socket pair: readable when a write is done.
    wake: UnixStream,
    token: Token,
    /// When the write on its way began.
    since: Option<Instant>,
    /// That write was reported slow.
    said_slow: bool,
}

/// The state file's keeper.
pub struct Keeper {
    path: PathBuf,
    /// `Relay::changes` when the file was last written.
    written: u64,
    /// When the changes since are due to be written.
    due: Option<Instant>,
    /// The encoding buffer; `None` while the writer has it.
    buf: Option<Vec<u8>>,
    /// The last write failed (logged once until one succeeds).
    failing: bool,
    /// The writer thread, from [`Keeper::start`] on (the first write is made without it).
    writer: Option<Writer>,
}

impl Keeper {
    /// The state file at `path`, loaded into `relay` and marked as in use (written at once,
    /// as not clean, on this thread). A file that cannot be read is reported in one line and
    /// ignored.
    pub fn open(relay: &mut Relay, path: &Path) -> Keeper {
        let shown = path.display();
        match relay::state::load(relay, path) {
            Ok(None) => info!("{shown}: no state file yet, starting empty"),
            Ok(Some(l)) => {
                let how = if l.clean {
                    format!("epoch {} goes on", relay.epoch())
                } else {
                    format!(
                        "not written at a clean stop: history dropped, new epoch {}",
                        relay.epoch()
                    )
                };
                info!(
                    "{shown}: {} retained values, {} messages of history ({} left out); {how}",
                    l.retained, l.history, l.left_out
                );
            }
            Err(e) => warn!("{shown}: ignored, starting empty: {e}"),
        }
        let mut keeper = Keeper {
            path: path.to_owned(),
            written: relay.changes(),
            due: None,
            buf: Some(Vec::new()),
            failing: false,
            writer: None,
        };
        // From now on the file on disk says "not clean" until the shutdown writes it: a
        // crash of this run must not let the next one reuse this epoch's ids.
        keeper.send(relay, false);
        if keeper.failing {
            relay.forget_epoch();
        }
        keeper
    }

    /// Starts the writer thread, its wake socket registered with `registry` under `token`.
    ///
    /// # Errors
    /// The socket pair or the thread could not be made.
    pub fn start(&mut self, registry: &Registry, token: Token) -> Result<(), String> {
        let fail = |e: io::Error| format!("the state file's writer: {e}");
        let (ours, theirs) = StdUnixStream::pair().map_err(fail)?;
        ours.set_nonblocking(true).map_err(fail)?;
        theirs.set_nonblocking(true).map_err(fail)?;
        let mut wake = UnixStream::from_std(ours);
        registry
            .register(&mut wake, token, Interest::READABLE)
            .map_err(fail)?;
        let shared = Arc::new(Shared::default());
        let path = self.path.clone();
        let theirs_shared = shared.clone();
        std::thread::Builder::new()
            .name("emberws-state".into())
            .stack_size(WRITER_STACK)
            .spawn(move || write_jobs(&path, &theirs_shared, &theirs))
            .map_err(fail)?;
        self.writer = Some(Writer {
            shared,
            wake,
            token,
            since: None,
            said_slow: false,
        });
        Ok(())
    }

    /// Takes the poll's event if it is the writer's wake-up.
    pub fn handle_event(&mut self, event: &mio::event::Event) -> bool {
        let Some(w) = self.writer.as_mut().filter(|w| w.token == event.token()) else {
            return false;
        };
        let mut sink = [0u8; 64];
        while matches!(w.wake.read(&mut sink), Ok(n) if n > 0) {}
        true
    }

    /// After each turn: takes a finished write, and starts the next once changes are due.
    /// Returns when it must run again at the latest.
    pub fn turn(&mut self, relay: &Relay, now: Instant) -> Option<Instant> {
        self.collect();
        if let Some(w) = self.writer.as_mut() {
            if let Some(since) = w.since {
                // On its way: its end wakes the loop. Only the slow report needs a timer.
                if w.said_slow {
                    return None;
                }
                if now < since + SLOW_WRITE {
                    return Some(since + SLOW_WRITE);
                }
                w.said_slow = true;
                warn!(
                    "{}: a write has taken more than {} s (the disk may be failing); \
                     the relay serves on, and changes wait for it",
                    self.path.display(),
                    SLOW_WRITE.as_secs()
                );
                return None;
            }
        }
        if relay.changes() == self.written {
            return None;
        }
        let due = *self.due.get_or_insert(now + STATE_INTERVAL);
        if now < due {
            return Some(due);
        }
        self.send(relay, false);
        // Its end wakes the loop.
        None
    }

    /// At shutdown: the state, written as clean, waiting for the disk at most
    /// [`FINISH_WAIT`] for the write on its way and as long for this one.
    pub fn finish(&mut self, relay: &Relay) {
        if !self.wait(FINISH_WAIT) {
            warn!(
                "{}: a write still on its way after {} s: not written at this stop \
                 (the next start takes a new epoch)",
                self.path.display(),
                FINISH_WAIT.as_secs()
            );
            return;
        }
        self.send(relay, true);
        if !self.wait(FINISH_WAIT) {
            warn!(
                "{}: not written at this stop: the disk did not answer in {} s \
                 (the next start takes a new epoch)",
                self.path.display(),
                FINISH_WAIT.as_secs()
            );
            return;
        }
        if !self.failing && self.written == relay.changes() {
            info!("{}: state written", self.path.display());
        }
    }

    /// The state encoded in the keeper's buffer (taken: it comes back with the write).
    fn encode(&mut self, relay: &Relay, clean: bool) -> Vec<u8> {
        let mut bytes = self.buf.take().unwrap_or_default();
        bytes.clear();
        relay::state::encode(relay, clean, &mut bytes);
        bytes
    }

    /// Hands the state to the writer thread (or, without one, writes it here).
    fn send(&mut self, relay: &Relay, clean: bool) {
        let changes = relay.changes();
        let bytes = self.encode(relay, clean);
        self.due = None;
        let Some(w) = self.writer.as_mut() else {
            let result = relay::state::write_file(&self.path, &bytes);
            self.written_back(Done {
                bytes,
                changes,
                result,
            });
            return;
        };
        // One write at a time: the slot is empty (`since` is `None`).
        w.shared.lock().job = Some(Job { bytes, changes });
        w.shared.cond.notify_all();
        w.since = Some(Instant::now());
        w.said_slow = false;
    }

    /// Takes a finished write, if there is one.
    fn collect(&mut self) {
        let Some(w) = self.writer.as_mut() else {
            return;
        };
        let done = w.shared.lock().done.take();
        if let Some(done) = done {
            w.since = None;
            self.written_back(done);
        }
    }

    /// Waits up to `limit` for the write on its way; false if it is still on its way.
    fn wait(&mut self, limit: Duration) -> bool {
        let Some(w) = self.writer.as_mut() else {
            return true;
        };
        if w.since.is_none() {
            return true;
        }
        let slot = w.shared.lock();
        let (mut slot, _) = w
            .shared
            .cond
            .wait_timeout_while(slot, limit, |s| s.done.is_none())
            .unwrap_or_else(PoisonError::into_inner);
        let Some(done) = slot.done.take() else {
            return false;
        };
        drop(slot);
        w.since = None;
        self.written_back(done);
        true
    }

    /// A write is over: its outcome logged (a failure once until one succeeds), its
    /// buffer kept for the next.
    fn written_back(&mut self, done: Done) {
        match done.result {
            Ok(()) => {
                self.written = done.changes;
                if self.failing {
                    info!("{}: written again", self.path.display());
                }
                self.failing = false;
            }
            Err(e) if !self.failing => {
                warn!("{}: cannot write the state file: {e}", self.path.display());
                self.failing = true;
            }
            Err(_) => {}
        }
        // What does not fit in the file's buffer's usual size is given back.
        let mut bytes = done.bytes;
        if bytes.capacity() > 4 << 20 {
            bytes = Vec::new();
        }
        self.buf = Some(bytes);
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.cond.notify_all();
    }
}

/// The writer thread: each job written to `path`, its outcome put back, the loop woken;
/// until the keeper is gone.
fn write_jobs(path: &Path, shared: &Shared, wake: &StdUnixStream) {
    loop {
        let slot = shared.lock();
        let mut slot = shared
            .cond
            .wait_while(slot, |s| s.job.is_none() && !s.closed)
            .unwrap_or_else(PoisonError::into_inner);
        let Some(Job { mut bytes, changes }) = slot.job.take() else {
            return;
        };
        drop(slot);
        let result = relay::state::write_file(path, &bytes);
        bytes.clear();
        shared.lock().done = Some(Done {
            bytes,
            changes,
            result,
        });
        shared.cond.notify_all();
        // A full socket already wakes the loop.
        let _ = (&*wake).write(&[1]);
    }
}

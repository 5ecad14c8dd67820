//! The command link's outgoing bytes: every command encoded once into one buffer, in order,
//! and bounded in bytes whether the link is down (the queue waits for a reconnect) or up and
//! Redis is slow (the socket did not take them yet): both are the same bytes, under one
//! bound.
//!
//! Data commands (PUBLISH, HSET, HDEL) count against the bound and are refused past it; the
//! few control commands (SELECT, HGETALL, PING, at most one of each at a time) are not. After
//! a lost link, [`Outbox::rewind`] puts a partly written command back whole (Redis runs no
//! command it did not receive whole) and drops the control commands: the next connection
//! asks for its own.

use std::collections::VecDeque;

use emberws::proto::resp;

/// One command in the buffer.
#[derive(Clone, Copy, Debug)]
struct Command {
    len: usize,
    control: bool,
}

/// Encoded commands not yet written whole, within `limit` bytes (control commands aside).
#[derive(Debug)]
pub struct Outbox {
    /// Encoded commands; `buf[start..]` is not written yet.
    buf: Vec<u8>,
    start: usize,
    /// Each command of `buf[start - head_written..]`, in order.
    commands: VecDeque<Command>,
    /// Bytes of the first command already written.
    head_written: usize,
    limit: usize,
    /// Bytes of data commands in `buf[start - head_written..]`.
    data_bytes: usize,
}

/// Room for the control commands beside the bound: SELECT, HGETALL and PING of a short
/// prefix and database.
const CONTROL_ROOM: usize = 512;

impl Outbox {
    /// An outbox holding at most `limit` bytes of data commands. Its buffer is reserved once,
    /// at this size, and never grows.
    pub fn new(limit: usize) -> Outbox {
        Outbox {
            buf: Vec::with_capacity(limit + CONTROL_ROOM),
            start: 0,
            commands: VecDeque::new(),
            head_written: 0,
            limit,
            data_bytes: 0,
        }
    }

    /// Bytes not written yet (all commands).
    pub fn unwritten(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    /// Bytes of data commands held (what the bound counts).
    pub fn queued_bytes(&self) -> usize {
        self.data_bytes
    }

    pub fn is_empty(&self) -> bool {
        self.commands.is_empty()
    }

    /// Whether data commands of `len` bytes more would fit the bound.
    pub fn fits(&self, len: usize) -> bool {
        self.data_bytes.saturating_add(len) <= self.limit
    }

    /// Appends a data command if it fits the bound; false (nothing appended) if not.
    pub fn push(&mut self, args: &[&[u8]]) -> bool {
        let len = resp::command_len(args);
        if !self.fits(len) {
            return false;
        }
        self.append(args, len, false);
        true
    }

    /// Appends a control command, outside the bound.
    pub fn push_control(&mut self, args: &[&[u8]]) {
        let len = resp::command_len(args);
        self.append(args, len, true);
    }

    /// Puts a control command before every other (only when nothing is partly written:
    /// right after [`Outbox::rewind`]).
    pub fn push_control_front(&mut self, args: &[&[u8]]) {
        debug_assert_eq!(self.head_written, 0);
        let len = resp::command_len(args);
        self.compact();
        let mut head = Vec::with_capacity(len);
        resp::encode_command(&mut head, args);
        self.buf.splice(0..0, head);
        self.commands.push_front(Command { len, control: true });
    }

    fn append(&mut self, args: &[&[u8]], len: usize, control: bool) {
        if self.buf.len() + len > self.buf.capacity() {
            self.compact();
        }
        resp::encode_command(&mut self.buf, args);
        self.commands.push_back(Command { len, control });
        if !control {
            self.data_bytes += len;
        }
    }

    /// Moves the unwritten bytes (and the written part of the first command) to the start.
    fn compact(&mut self) {
        let keep_from = self.start - self.head_written;
        if keep_from > 0 {
            self.buf.drain(..keep_from);
            self.start -= keep_from;
        }
    }

    /// The socket took `n` bytes of [`Outbox::unwritten`]. Returns how many commands are now
    /// written whole (a reply is owed for each).
    pub fn wrote(&mut self, n: usize) -> usize {
        debug_assert!(n <= self.buf.len() - self.start);
        self.start += n;
        self.head_written += n;
        let mut done = 0;
        while let Some(head) = self.commands.front().copied() {
            if self.head_written < head.len {
                break;
            }
            self.head_written -= head.len;
            if !head.control {
                self.data_bytes -= head.len;
            }
            self.commands.pop_front();
            done += 1;
        }
        if self.commands.is_empty() {
            self.buf.clear();
            self.start = 0;
            self.head_written = 0;
        }
        done
    }

    /// The link was lost: a partly written command goes back whole, control commands go.
    pub fn rewind(&mut self) {
        self.start -= self.head_written;
        self.head_written = 0;
        self.compact();
        if self.commands.iter().any(|c| c.control) {
            let (mut read, mut write) = (0, 0);
            self.commands.retain(|c| {
                let keep = !c.control;
                if keep {
                    self.buf.copy_within(read..read + c.len, write);
                    write += c.len;
                }
                read += c.len;
                keep
            });
            self.buf.truncate(write);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(args: &[&[u8]]) -> Vec<u8> {
        let mut v = Vec::new();
        resp::encode_command(&mut v, args);
        v
    }

    #[test]
    fn data_commands_are_bounded_in_bytes_control_ones_are_not() {
        let one: &[&[u8]] = &[b"PUBLISH", b"p:t", b"0123456789"];
        let len = resp::command_len(one);
        let mut out = Outbox::new(3 * len);
        for _ in 0..3 {
            assert!(out.push(one));
        }
        assert!(!out.push(one), "the fourth is past the bound");
        assert_eq!(out.queued_bytes(), 3 * len);
        out.push_control(&[b"PING"]);
        assert_eq!(
            out.queued_bytes(),
            3 * len,
            "control commands are not counted"
        );
        assert_eq!(out.unwritten().len(), 3 * len + 14);
        // Written bytes make room again.
        assert_eq!(out.wrote(len + 1), 1);
        assert_eq!(
            out.queued_bytes(),
            2 * len,
            "the partly written second one counts whole"
        );
        assert!(out.push(one));
        assert!(!out.push(one));
        assert_eq!(out.wrote(len - 1), 1);
        assert_eq!(out.queued_bytes(), 2 * len);
    }

    #[test]
    fn the_buffer_never_grows_past_its_reservation() {
        let one: &[&[u8]] = &[b"PUBLISH", b"p:t", &[b'x'; 100]];
        let len = resp::command_len(one);
        let mut out = Outbox::new(10 * len);
        let capacity = out.buf.capacity();
        for round in 0..1000 {
            while out.push(one) {}
            // Write a ragged amount each round.
            let n = (round * 37) % out.unwritten().len().max(1);
            out.wrote(n);
            assert!(out.queued_bytes() <= 10 * len);
            assert_eq!(out.buf.capacity(), capacity, "round {round}");
        }
    }

    #[test]
    fn rewind_resends_a_partly_written_command_whole_and_drops_control_commands() {
        let a: &[&[u8]] = &[b"PUBLISH", b"p:a", b"1"];
        let b: &[&[u8]] = &[b"PUBLISH", b"p:b", b"2"];
        let mut out = Outbox::new(1 << 10);
        out.push(a);
        out.push_control(&[b"HGETALL", b"p:retained"]);
        out.push(b);
        // `a` written whole, HGETALL half.
        assert_eq!(out.wrote(resp::command_len(a) + 5), 1);
        out.rewind();
        assert_eq!(
            out.unwritten(),
            encoded(b),
            "HGETALL is the next link's to ask"
        );
        out.push_control_front(&[b"SELECT", b"3"]);
        let mut want = encoded(&[b"SELECT", b"3"]);
        want.extend(encoded(b));
        assert_eq!(out.unwritten(), want);
        assert_eq!(out.queued_bytes(), resp::command_len(b));
        // `b` half written, then lost again: back whole.
        out.wrote(resp::command_len(&[b"SELECT", b"3"]) + 3);
        out.rewind();
        assert_eq!(out.unwritten(), encoded(b));
        assert_eq!(out.wrote(out.unwritten().len()), 1);
        assert!(out.is_empty() && out.queued_bytes() == 0);
    }
}

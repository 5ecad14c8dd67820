//! The retained values in Redis (`HGETALL prefix:retained`), read one field at a time.
//!
//! The hash holds what every relay retained, so it may be larger than this relay's read
//! buffer or its retained cap: the reply is not parsed as one value. Its array header is
//! read here, then each element with [`resp::parse`] from the link's fixed buffer; an element
//! longer than the buffer is skipped by its length, unread. Entries are staged (at most the
//! retained cap) and handed over whole when the last one is in.

use std::collections::HashMap;

use emberws::proto::resp::{self, Limits, RespError, Value};
use emberws::proto::Status;

/// A length line is at most `$-9223372036854775808\r\n`.
const MAX_HEADER: usize = 24;

/// Reads a RESP2 header line of type `kind` (`*` or `$`) at the start of `buf`: its count or
/// length (`-1` for null), and the bytes of the line. `None` if `buf` starts with another
/// type.
pub fn header(buf: &[u8], kind: u8) -> Result<Option<Status<(i64, usize)>>, RespError> {
    match buf.first() {
        None => return Ok(Some(Status::Partial)),
        Some(&b) if b != kind => return Ok(None),
        Some(_) => {}
    }
    let line = &buf[..buf.len().min(MAX_HEADER)];
    let Some(cr) = line.iter().position(|&b| b == b'\r') else {
        return if line.len() == MAX_HEADER {
            Err(RespError::InvalidLength)
        } else {
            Ok(Some(Status::Partial))
        };
    };
    match buf.get(cr + 1) {
        None => return Ok(Some(Status::Partial)),
        Some(b'\n') => {}
        Some(_) => return Err(RespError::InvalidLineEnd),
    }
    let digits = &buf[1..cr];
    let n = match digits {
        b"-1" => -1,
        _ if !digits.is_empty() && digits.iter().all(u8::is_ascii_digit) => {
            std::str::from_utf8(digits)
                .ok()
                .and_then(|d| d.parse().ok())
                .ok_or(RespError::IntegerOverflow)?
        }
        _ => return Err(RespError::InvalidLength),
    };
    Ok(Some(Status::Complete((n, cr + 2))))
}

/// What the next element of the reply is.
#[derive(Debug)]
enum Next {
    /// A field: a topic.
    Field,
    /// The value of the field just read (`None`: that field is not loaded).
    Value(Option<String>),
}

/// One `HGETALL` reply being read.
#[derive(Debug)]
pub struct Snapshot {
    /// Elements still to come.
    left: u64,
    next: Next,
    /// Bytes of an element too long to read, still to skip (its CRLF included).
    skip: usize,
    staged: HashMap<String, String>,
    staged_bytes: usize,
    max_bytes: usize,
    /// Entries not loaded: too long, not a topic and a message, or past the cap.
    pub skipped: u64,
}

impl Snapshot {
    /// A reply of `elements` elements (the array's count, `-1` or 0 for an empty hash), whose
    /// entries are staged up to `max_bytes` of topics and frames.
    pub fn new(elements: i64, max_bytes: usize) -> Snapshot {
        Snapshot {
            left: u64::try_from(elements).unwrap_or(0),
            next: Next::Field,
            skip: 0,
            staged: HashMap::new(),
            staged_bytes: 0,
            max_bytes,
            skipped: 0,
        }
    }

    /// True once every element is read.
    pub fn is_done(&self) -> bool {
        self.left == 0
    }

    /// The staged entries, topic → frame.
    pub fn into_values(self) -> HashMap<String, String> {
        self.staged
    }

    /// Reads at most one element from the start of `buf`; returns the bytes it took
    /// (`Partial`: none, more are needed). `ok(topic, frame)` says whether an entry may be
    /// loaded.
    pub fn step(
        &mut self,
        buf: &[u8],
        limits: &Limits,
        ok: impl Fn(&str, &str) -> bool,
    ) -> Result<Status<usize>, RespError> {
        if self.skip > 0 {
            let n = self.skip.min(buf.len());
            self.skip -= n;
            if self.skip == 0 {
                self.element(None, &ok);
            }
            return Ok(if n == 0 {
                Status::Partial
            } else {
                Status::Complete(n)
            });
        }
        match resp::parse(buf, limits) {
            Ok(Status::Complete((Value::Bulk(bytes), n))) => {
                self.element(Some(bytes), &ok);
                Ok(Status::Complete(n))
            }
            Ok(Status::Complete(_)) => Err(RespError::InvalidType(buf[0])),
            Ok(Status::Partial) => Ok(Status::Partial),
            Err(RespError::BulkTooLong) => match header(buf, b'$')? {
                Some(Status::Complete((len, used))) => {
                    let len = usize::try_from(len).map_err(|_| RespError::NegativeLength)?;
                    self.skip = len.saturating_add(2);
                    Ok(Status::Complete(used))
                }
                _ => Ok(Status::Partial),
            },
            Err(e) => Err(e),
        }
    }

    /// One element read whole (`None`: skipped unread).
    fn element(&mut self, bytes: Option<&[u8]>, ok: &impl Fn(&str, &str) -> bool) {
        self.left -= 1;
        let text = bytes.and_then(|b| std::str::from_utf8(b).ok());
        self.next = match std::mem::replace(&mut self.next, Next::Field) {
            Next::Field => Next::Value(text.map(str::to_owned)),
            Next::Value(topic) => {
                let cost = topic.as_ref().zip(text).map(|(t, f)| t.len() + f.len());
                match (topic, text, cost) {
                    (Some(topic), Some(frame), Some(cost))
                        if self.staged_bytes + cost <= self.max_bytes && ok(&topic, frame) =>
                    {
                        self.staged_bytes += cost;
                        self.staged.insert(topic, frame.to_owned());
                    }
                    _ => self.skipped += 1,
                }
                Next::Field
            }
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        max_value_len: 64,
        max_bulk_len: 32,
        ..Limits::DEFAULT
    };

    fn any(_: &str, _: &str) -> bool {
        true
    }

    /// Feeds `reply` (after its array header) `chunk` bytes at a time, as reads would.
    fn read(reply: &[u8], max_bytes: usize, chunk: usize) -> Snapshot {
        let Ok(Some(Status::Complete((n, mut at)))) = header(reply, b'*') else {
            panic!("no header");
        };
        let mut snap = Snapshot::new(n, max_bytes);
        let mut have = (at + chunk).min(reply.len());
        while !snap.is_done() {
            match snap.step(&reply[at..have], &LIMITS, any).unwrap() {
                Status::Complete(used) => at += used,
                Status::Partial => {
                    assert!(have < reply.len(), "ran out of bytes");
                    have = (have + chunk).min(reply.len());
                }
            }
        }
        assert_eq!(at, reply.len(), "every byte read");
        snap
    }

    #[test]
    fn headers_are_read_or_partial_or_refused() {
        assert_eq!(
            header(b"*4\r\n$1", b'*'),
            Ok(Some(Status::Complete((4, 4))))
        );
        assert_eq!(
            header(b"*-1\r\n", b'*'),
            Ok(Some(Status::Complete((-1, 5))))
        );
        assert_eq!(header(b"*12", b'*'), Ok(Some(Status::Partial)));
        assert_eq!(header(b"*12\r", b'*'), Ok(Some(Status::Partial)));
        assert_eq!(header(b"-ERR x\r\n", b'*'), Ok(None));
        assert_eq!(header(b"", b'*'), Ok(Some(Status::Partial)));
        assert_eq!(header(b"*1x\r\n", b'*'), Err(RespError::InvalidLength));
        assert_eq!(header(b"*1\rx", b'*'), Err(RespError::InvalidLineEnd));
        assert_eq!(header(&[b'*'; 30], b'*'), Err(RespError::InvalidLength));
        assert_eq!(
            header(b"$99999999999999999999\r\n", b'$'),
            Err(RespError::IntegerOverflow)
        );
    }

    #[test]
    fn entries_are_staged_at_any_split_and_long_ones_are_skipped_unread() {
        let long = "x".repeat(100);
        let reply = format!(
            "*6\r\n$1\r\na\r\n$3\r\n{{1}}\r\n$1\r\nb\r\n${}\r\n{long}\r\n${}\r\n{long}\r\n$1\r\nc\r\n",
            long.len(),
            long.len()
        );
        for chunk in 1..=reply.len() {
            let snap = read(reply.as_bytes(), 1 << 10, chunk);
            assert_eq!(snap.skipped, 2, "b's value and the long topic's entry");
            let values = snap.into_values();
            assert_eq!(values.len(), 1);
            assert_eq!(values["a"], "{1}");
        }
    }

    #[test]
    fn staging_stops_at_the_cap_and_at_refused_entries() {
        let reply = b"*6\r\n$1\r\na\r\n$2\r\n11\r\n$1\r\nb\r\n$2\r\n22\r\n$1\r\nc\r\n$2\r\n33\r\n";
        let snap = read(reply, 6, 7);
        assert_eq!(snap.skipped, 1, "three entries of 3 bytes, 6 allowed");
        assert_eq!(snap.into_values().len(), 2);
        let Ok(Some(Status::Complete((n, at)))) = header(reply, b'*') else {
            panic!()
        };
        let mut snap = Snapshot::new(n, 1 << 10);
        let mut at = at;
        while !snap.is_done() {
            let Ok(Status::Complete(used)) = snap.step(&reply[at..], &LIMITS, |t, _| t != "b")
            else {
                panic!()
            };
            at += used;
        }
        let values = snap.into_values();
        assert!(values.contains_key("a") && values.contains_key("c") && values.len() == 2);
    }

    #[test]
    fn an_empty_hash_is_done_at_once_and_a_non_bulk_element_is_an_error() {
        assert!(Snapshot::new(0, 10).is_done());
        assert!(Snapshot::new(-1, 10).is_done());
        let mut snap = Snapshot::new(2, 10);
        assert_eq!(
            snap.step(b":1\r\n", &LIMITS, any),
            Err(RespError::InvalidType(b':'))
        );
    }
}

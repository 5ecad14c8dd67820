//! Pub/sub events in broker values: `message`, `pmessage`, the subscribe and unsubscribe
//! confirmations and `pong`, read from a RESP2 array or a RESP3 push.
//!
//! - **In:** a [`Value`] that [`super::parse`] returned.
//! - **Out:** a [`PubSub`] borrowing its strings from the same buffer, or `None` for an
//!   ordinary reply.
//! - **Never:** allocates or panics; an event with a wrong element count or type is `None`.

use super::Value;

/// A pub/sub event read on a subscribed connection: a RESP2 array or a RESP3 push.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PubSub<'b> {
    /// `message`: a publish on a channel subscribed with `SUBSCRIBE`.
    Message {
        /// The channel published to.
        channel: &'b [u8],
        /// The message.
        payload: &'b [u8],
    },
    /// `pmessage`: a publish on a channel matching a pattern subscribed with `PSUBSCRIBE`.
    PMessage {
        /// The pattern that matched.
        pattern: &'b [u8],
        /// The channel published to.
        channel: &'b [u8],
        /// The message.
        payload: &'b [u8],
    },
    /// `subscribe`: one channel of a `SUBSCRIBE` confirmed.
    Subscribe {
        /// The channel.
        channel: &'b [u8],
        /// Channels and patterns this connection is now subscribed to.
        count: i64,
    },
    /// `psubscribe`: one pattern of a `PSUBSCRIBE` confirmed.
    PSubscribe {
        /// The pattern.
        pattern: &'b [u8],
        /// Channels and patterns this connection is now subscribed to.
        count: i64,
    },
    /// `unsubscribe`: one channel of an `UNSUBSCRIBE` confirmed.
    Unsubscribe {
        /// The channel; `None` when the connection was subscribed to none.
        channel: Option<&'b [u8]>,
        /// Channels and patterns this connection is still subscribed to.
        count: i64,
    },
    /// `punsubscribe`: one pattern of a `PUNSUBSCRIBE` confirmed.
    PUnsubscribe {
        /// The pattern; `None` when the connection was subscribed to none.
        pattern: Option<&'b [u8]>,
        /// Channels and patterns this connection is still subscribed to.
        count: i64,
    },
    /// `pong`: the answer to `PING` on a subscribed RESP2 connection, with `PING`'s argument
    /// (empty without one).
    Pong(&'b [u8]),
}

impl<'b> PubSub<'b> {
    /// Reads a pub/sub event, or `None` for any other value (an ordinary reply).
    ///
    /// The kind is matched as Redis sends it, in lower case, with its exact element count
    /// and element types.
    pub fn from_value(value: &Value<'b>) -> Option<PubSub<'b>> {
        let (Value::Array(items) | Value::Push(items)) = *value else {
            return None;
        };
        let mut it = items.iter();
        let Some(Value::Bulk(kind)) = it.next() else {
            return None;
        };
        let event = match (kind, items.len()) {
            (b"message", 3) => PubSub::Message {
                channel: bulk(it.next())?,
                payload: bulk(it.next())?,
            },
            (b"pmessage", 4) => PubSub::PMessage {
                pattern: bulk(it.next())?,
                channel: bulk(it.next())?,
                payload: bulk(it.next())?,
            },
            (b"subscribe", 3) => PubSub::Subscribe {
                channel: bulk(it.next())?,
                count: integer(it.next())?,
            },
            (b"psubscribe", 3) => PubSub::PSubscribe {
                pattern: bulk(it.next())?,
                count: integer(it.next())?,
            },
            (b"unsubscribe", 3) => PubSub::Unsubscribe {
                channel: bulk_or_null(it.next())?,
                count: integer(it.next())?,
            },
            (b"punsubscribe", 3) => PubSub::PUnsubscribe {
                pattern: bulk_or_null(it.next())?,
                count: integer(it.next())?,
            },
            (b"pong", 2) => PubSub::Pong(bulk(it.next())?),
            _ => return None,
        };
        Some(event)
    }
}

fn bulk(value: Option<Value<'_>>) -> Option<&[u8]> {
    match value? {
        Value::Bulk(b) => Some(b),
        _ => None,
    }
}

fn bulk_or_null(value: Option<Value<'_>>) -> Option<Option<&[u8]>> {
    match value? {
        Value::Bulk(b) => Some(Some(b)),
        Value::Null => Some(None),
        _ => None,
    }
}

fn integer(value: Option<Value<'_>>) -> Option<i64> {
    match value? {
        Value::Integer(n) => Some(n),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::super::{parse, Limits};
    use super::*;
    use crate::proto::Status;

    const R3: Limits = Limits {
        resp3: true,
        ..Limits::DEFAULT
    };

    fn event(bytes: &[u8]) -> Option<PubSub<'_>> {
        match parse(bytes, &R3) {
            Ok(Status::Complete((value, n))) => {
                assert_eq!(n, bytes.len());
                PubSub::from_value(&value)
            }
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(bytes)),
        }
    }

    #[test]
    fn every_event_as_redis_sends_it() {
        let table: &[(&[u8], PubSub<'_>)] = &[
            (
                b"*3\r\n$7\r\nmessage\r\n$4\r\nnews\r\n$2\r\nhi\r\n",
                PubSub::Message {
                    channel: b"news",
                    payload: b"hi",
                },
            ),
            (
                b"*4\r\n$8\r\npmessage\r\n$9\r\nemberws:*\r\n$9\r\nemberws:a\r\n$0\r\n\r\n",
                PubSub::PMessage {
                    pattern: b"emberws:*",
                    channel: b"emberws:a",
                    payload: b"",
                },
            ),
            (
                b"*3\r\n$9\r\nsubscribe\r\n$4\r\nnews\r\n:1\r\n",
                PubSub::Subscribe {
                    channel: b"news",
                    count: 1,
                },
            ),
            (
                b"*3\r\n$10\r\npsubscribe\r\n$9\r\nemberws:*\r\n:2\r\n",
                PubSub::PSubscribe {
                    pattern: b"emberws:*",
                    count: 2,
                },
            ),
            (
                b"*3\r\n$11\r\nunsubscribe\r\n$4\r\nnews\r\n:1\r\n",
                PubSub::Unsubscribe {
                    channel: Some(b"news"),
                    count: 1,
                },
            ),
            (
                b"*3\r\n$11\r\nunsubscribe\r\n$-1\r\n:0\r\n",
                PubSub::Unsubscribe {
                    channel: None,
                    count: 0,
                },
            ),
            (
                b"*3\r\n$12\r\npunsubscribe\r\n$9\r\nemberws:*\r\n:0\r\n",
                PubSub::PUnsubscribe {
                    pattern: Some(b"emberws:*"),
                    count: 0,
                },
            ),
            (
                b">3\r\n$12\r\npunsubscribe\r\n_\r\n:0\r\n",
                PubSub::PUnsubscribe {
                    pattern: None,
                    count: 0,
                },
            ),
            (b"*2\r\n$4\r\npong\r\n$0\r\n\r\n", PubSub::Pong(b"")),
            (b"*2\r\n$4\r\npong\r\n$2\r\nhb\r\n", PubSub::Pong(b"hb")),
            (
                b">3\r\n$7\r\nmessage\r\n$4\r\nnews\r\n$2\r\nhi\r\n",
                PubSub::Message {
                    channel: b"news",
                    payload: b"hi",
                },
            ),
        ];
        for &(bytes, want) in table {
            assert_eq!(
                event(bytes),
                Some(want),
                "{:?}",
                String::from_utf8_lossy(bytes)
            );
        }
    }

    #[test]
    fn ordinary_replies_are_no_events() {
        let table: &[&[u8]] = &[
            b"+OK\r\n",
            b":1\r\n",
            b"$7\r\nmessage\r\n",
            b"*-1\r\n",
            b"*0\r\n",
            // HGETALL of a hash whose first field is named like an event.
            b"*2\r\n$7\r\nmessage\r\n$1\r\nx\r\n",
            // The wrong count, case or element type.
            b"*4\r\n$7\r\nmessage\r\n$1\r\na\r\n$1\r\nb\r\n$1\r\nc\r\n",
            b"*3\r\n$7\r\nMESSAGE\r\n$1\r\na\r\n$1\r\nb\r\n",
            b"*3\r\n+message\r\n$1\r\na\r\n$1\r\nb\r\n",
            b"*3\r\n$7\r\nmessage\r\n:1\r\n$1\r\nb\r\n",
            b"*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n$1\r\n1\r\n",
            b"*3\r\n$9\r\nsubscribe\r\n$-1\r\n:0\r\n",
            b"*2\r\n$4\r\npong\r\n+x\r\n",
            b"*3\r\n$7\r\nunknown\r\n$1\r\na\r\n$1\r\nb\r\n",
            // A set or a map is no event, whatever it holds.
            b"~3\r\n$7\r\nmessage\r\n$1\r\na\r\n$1\r\nb\r\n",
        ];
        for &bytes in table {
            assert_eq!(event(bytes), None, "{:?}", String::from_utf8_lossy(bytes));
        }
    }
}

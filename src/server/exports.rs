//! Publishes kept for the embedding application to pass on, e.g. to a broker that other
//! instances share ([`crate::Server::drain_exports`]): a copy of each local publish's topic
//! and payload, in order, within [`crate::Config::max_export_bytes`] between two drains.

use crate::handler::Message;
use crate::proto::{FrameHeader, OpCode, Role, Status};

/// Bytes of bookkeeping per kept publish: the two lengths and the kind.
pub(crate) const ENTRY_OVERHEAD: usize = 9;

/// The kept publishes, one after another in one buffer: `[topic len: u32][payload len: u32]
/// [text: u8][topic][payload]`.
#[derive(Debug, Default)]
pub(crate) struct Exports {
    buf: Vec<u8>,
    max: usize,
    /// Publishes not kept because the buffer was full.
    pub(crate) dropped: u64,
}

impl Exports {
    pub(crate) fn new(max: usize) -> Self {
        Exports {
            buf: Vec::new(),
            max,
            dropped: 0,
        }
    }

    /// Whether publishes are kept at all.
    pub(crate) fn on(&self) -> bool {
        self.max > 0
    }

    /// Keeps a copy of one publish, or counts it as dropped if it does not fit.
    pub(crate) fn keep(&mut self, topic: &str, msg: &Message<'_>) {
        let payload = msg.as_bytes();
        let cost = ENTRY_OVERHEAD + topic.len() + payload.len();
        let (Ok(topic_len), Ok(payload_len)) =
            (u32::try_from(topic.len()), u32::try_from(payload.len()))
        else {
            self.dropped += 1;
            return;
        };
        if self.buf.len() + cost > self.max {
            self.dropped += 1;
            return;
        }
        self.buf.extend_from_slice(&topic_len.to_le_bytes());
        self.buf.extend_from_slice(&payload_len.to_le_bytes());
        self.buf.push(u8::from(matches!(msg, Message::Text(_))));
        self.buf.extend_from_slice(topic.as_bytes());
        self.buf.extend_from_slice(payload);
    }

    /// Hands every kept publish to `f`, oldest first, and forgets them (the buffer's
    /// capacity stays for the next ones).
    pub(crate) fn drain(&mut self, mut f: impl FnMut(&str, Message<'_>)) {
        let mut rest: &[u8] = &self.buf;
        while let Some((topic, msg, tail)) = next(rest) {
            f(topic, msg);
            rest = tail;
        }
        self.buf.clear();
    }
}

/// The first entry of `buf` and what follows it.
fn next(buf: &[u8]) -> Option<(&str, Message<'_>, &[u8])> {
    let topic_len = u32::from_le_bytes(buf.get(..4)?.try_into().ok()?) as usize;
    let payload_len = u32::from_le_bytes(buf.get(4..8)?.try_into().ok()?) as usize;
    let text = *buf.get(8)? == 1;
    let topic_end = ENTRY_OVERHEAD + topic_len;
    let end = topic_end + payload_len;
    // Both were valid UTF-8 when kept (a topic is a `&str`, a text payload too).
    let topic = std::str::from_utf8(buf.get(ENTRY_OVERHEAD..topic_end)?).ok()?;
    let payload = buf.get(topic_end..end)?;
    let msg = if text {
        Message::Text(std::str::from_utf8(payload).ok()?)
    } else {
        Message::Binary(payload)
    };
    Some((topic, msg, buf.get(end..)?))
}

/// The message inside a frame the server encoded (unmasked, final, text or binary), read
/// with the frame codec as a client would.
pub(crate) fn message_of(frame: &[u8]) -> Option<Message<'_>> {
    let Ok(Status::Complete((header, len))) = FrameHeader::parse(frame, Role::Client) else {
        return None;
    };
    let payload = frame.get(len..)?;
    match header.opcode {
        OpCode::Text => std::str::from_utf8(payload).ok().map(Message::Text),
        OpCode::Binary => Some(Message::Binary(payload)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conn::{opcode, outbox};
    use crate::proto::message::DataKind;

    fn drained(e: &mut Exports) -> Vec<(String, Vec<u8>, bool)> {
        let mut out = Vec::new();
        e.drain(|t, m| {
            let text = matches!(m, Message::Text(_));
            out.push((t.to_owned(), m.as_bytes().to_vec(), text));
        });
        out
    }

    #[test]
    fn publishes_come_out_in_order_and_once() {
        let mut e = Exports::new(1024);
        e.keep("a/b", &Message::Text("one"));
        e.keep("c", &Message::Binary(&[0, 1, 2]));
        e.keep("", &Message::Text(""));
        assert_eq!(
            drained(&mut e),
            [
                ("a/b".to_owned(), b"one".to_vec(), true),
                ("c".to_owned(), vec![0, 1, 2], false),
                (String::new(), Vec::new(), true),
            ]
        );
        assert!(drained(&mut e).is_empty());
        assert_eq!(e.dropped, 0);
    }

    #[test]
    fn the_buffer_is_bounded_and_what_does_not_fit_is_counted() {
        let mut e = Exports::new(2 * (ENTRY_OVERHEAD + 1 + 10));
        for _ in 0..5 {
            e.keep("t", &Message::Binary(&[7; 10]));
        }
        assert_eq!(e.dropped, 3);
        assert_eq!(drained(&mut e).len(), 2);
        e.keep("t", &Message::Binary(&[7; 10]));
        assert_eq!(drained(&mut e).len(), 1, "room again after a drain");
        let mut off = Exports::new(0);
        assert!(!off.on());
        assert!(Exports::new(1).on());
        off.keep("t", &Message::Text("x"));
        assert_eq!(off.dropped, 1);
    }

    #[test]
    fn the_message_of_an_encoded_frame() {
        for len in [0, 5, 125, 126, 65_535, 65_536, 70_000] {
            let payload = vec![b'x'; len];
            let mut frame = Vec::new();
            outbox::encode(&mut frame, opcode(DataKind::Text), &payload);
            let text = std::str::from_utf8(&payload).unwrap();
            assert_eq!(message_of(&frame), Some(Message::Text(text)), "{len}");
            frame.clear();
            outbox::encode(&mut frame, opcode(DataKind::Binary), &payload);
            assert_eq!(message_of(&frame), Some(Message::Binary(&payload)), "{len}");
        }
        assert_eq!(message_of(&[]), None);
    }
}

//! What one relay publishes to the others: `ID KIND FRAME`, where `ID` is the publishing
//! instance (16 hex digits, random at start: an instance skips its own messages), `KIND` is
//! `m` (a message), `r` (a message that is also the topic's retained value) or `c` (a clear
//! of the topic's retained value), and `FRAME` is the relay's `message` frame text, delivered
//! as it is. Example: `5f0c2a9be1d47730 r {"type":"message","topic":"s/t","data":21.5}`.

use std::fmt;

/// Bytes before the frame: the id, a space, the kind, a space.
pub const HEADER_LEN: usize = 19;

/// Whether a publish also sets or clears the topic's retained value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Delivered only.
    Message,
    /// Delivered, and the topic's retained value from now on.
    Retained,
    /// Delivered (`"data":null`), and the topic's retained value cleared.
    Cleared,
}

impl Kind {
    fn byte(self) -> u8 {
        match self {
            Kind::Message => b'm',
            Kind::Retained => b'r',
            Kind::Cleared => b'c',
        }
    }

    fn from_byte(b: u8) -> Option<Kind> {
        Some(match b {
            b'm' => Kind::Message,
            b'r' => Kind::Retained,
            b'c' => Kind::Cleared,
            _ => return None,
        })
    }
}

/// An instance id: 8 random bytes as 16 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct InstanceId([u8; 16]);

impl InstanceId {
    /// From 8 random bytes.
    pub fn from_bytes(bytes: [u8; 8]) -> InstanceId {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut out = [0; 16];
        for (pair, b) in out.chunks_exact_mut(2).zip(bytes) {
            pair[0] = HEX[usize::from(b >> 4)];
            pair[1] = HEX[usize::from(b & 15)];
        }
        InstanceId(out)
    }

    /// 8 bytes from the operating system's generator.
    pub fn random() -> Result<InstanceId, String> {
        use ring::rand::SecureRandom;
        let mut bytes = [0; 8];
        ring::rand::SystemRandom::new()
            .fill(&mut bytes)
            .map_err(|_| "the system's random generator failed".to_owned())?;
        Ok(InstanceId::from_bytes(bytes))
    }

    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }

    /// A seed for the backoff's jitter (never zero).
    pub fn seed(&self) -> u64 {
        self.0
            .iter()
            .fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
                (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
            })
            .max(1)
    }
}

impl fmt::Display for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Hex digits only: always UTF-8.
        f.write_str(std::str::from_utf8(&self.0).unwrap_or("?"))
    }
}

impl fmt::Debug for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "InstanceId({self})")
    }
}

/// Replaces `out` with the envelope of `frame`.
pub fn encode(out: &mut Vec<u8>, id: &InstanceId, kind: Kind, frame: &[u8]) {
    out.clear();
    out.extend_from_slice(id.as_bytes());
    out.extend_from_slice(&[b' ', kind.byte(), b' ']);
    out.extend_from_slice(frame);
}

/// A message read back from Redis.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Envelope<'a> {
    pub from: &'a [u8],
    pub kind: Kind,
    pub frame: &'a [u8],
}

/// Reads an envelope; `None` if `payload` is not one.
pub fn decode(payload: &[u8]) -> Option<Envelope<'_>> {
    let (head, frame) = payload.split_at_checked(HEADER_LEN)?;
    if head[16] != b' ' || head[18] != b' ' || !head[..16].iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    Some(Envelope {
        from: &head[..16],
        kind: Kind::from_byte(head[17])?,
        frame,
    })
}

/// Whether `frame` is a relay `message` frame, valid JSON: what another relay would send.
/// Anything else on the channels (another program publishing there) is not delivered.
pub fn is_message_frame(frame: &str) -> bool {
    frame.starts_with(r#"{"type":"message","topic":"#)
        && serde_json::from_str::<serde::de::IgnoredAny>(frame).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_envelope_reads_back_and_carries_its_kind() {
        let id = InstanceId::from_bytes([0x5f, 0x0c, 0x2a, 0x9b, 0xe1, 0xd4, 0x77, 0x30]);
        assert_eq!(id.to_string(), "5f0c2a9be1d47730");
        let frame = br#"{"type":"message","topic":"s/t","data":21.5}"#;
        let mut out = Vec::new();
        for kind in [Kind::Message, Kind::Retained, Kind::Cleared] {
            encode(&mut out, &id, kind, frame);
            let got = decode(&out).unwrap();
            assert_eq!(
                (got.from, got.kind, got.frame),
                (&id.as_bytes()[..], kind, &frame[..])
            );
        }
        encode(&mut out, &id, Kind::Retained, frame);
        assert!(out.starts_with(b"5f0c2a9be1d47730 r {"));
    }

    #[test]
    fn what_is_not_an_envelope_is_refused() {
        for bad in [
            &b""[..],
            b"5f0c2a9be1d47730 r",
            b"5f0c2a9be1d4773 r {}x",
            b"5f0c2a9be1d47730 x {}",
            b"5f0c2a9be1d4773g m {}",
            b"5f0c2a9be1d47730-m {}",
        ] {
            assert_eq!(decode(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
        assert!(decode(b"5f0c2a9be1d47730 m ").is_some_and(|e| e.frame.is_empty()));
    }

    #[test]
    fn only_message_frames_are_delivered() {
        assert!(is_message_frame(
            r#"{"type":"message","topic":"a","data":[1,{"b":2}]}"#
        ));
        assert!(!is_message_frame(
            r#"{"type":"message","topic":"a","data":}"#
        ));
        assert!(!is_message_frame(r#"{"type":"ack","id":1}"#));
        assert!(!is_message_frame("hello"));
    }

    #[test]
    fn seeds_differ_by_id_and_are_never_zero() {
        let a = InstanceId::from_bytes([0; 8]).seed();
        let b = InstanceId::from_bytes([0, 0, 0, 0, 0, 0, 0, 1]).seed();
        assert_ne!(a, b);
        assert!(a != 0 && b != 0);
    }
}

//! Message ids: `"{epoch}-{seq}"`, the epoch 8 lowercase hex digits drawn at start (or kept
//! from a state file written at a clean shutdown), `seq` counting the relay's messages from 1.
//! Two messages of one relay never share an id: a relay that lost its count (a restart
//! without a clean state file) draws a new epoch.

use std::fmt;

/// The relay's epoch: 8 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Epoch([u8; 8]);

impl Epoch {
    /// A new epoch from the system's random generator (ring's `SystemRandom`), or, if that
    /// fails, from the clock and the process id: unlikely to repeat, which is all an epoch
    /// needs.
    pub fn random() -> Epoch {
        use ring::rand::SecureRandom;
        let mut bytes = [0u8; 4];
        if ring::rand::SystemRandom::new().fill(&mut bytes).is_err() {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos() ^ (d.as_secs() as u32));
            bytes = (nanos ^ std::process::id().rotate_left(16)).to_be_bytes();
        }
        Epoch::from_bytes(bytes)
    }

    fn from_bytes(bytes: [u8; 4]) -> Epoch {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut text = [0u8; 8];
        for (i, b) in bytes.iter().enumerate() {
            text[2 * i] = HEX[usize::from(b >> 4)];
            text[2 * i + 1] = HEX[usize::from(b & 15)];
        }
        Epoch(text)
    }

    /// Reads 8 lowercase hex digits.
    pub fn parse(text: &str) -> Option<Epoch> {
        let bytes: [u8; 8] = text.as_bytes().try_into().ok()?;
        bytes
            .iter()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
            .then_some(Epoch(bytes))
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Epoch({self})")
    }
}

/// Reads an id, `EPOCH-SEQ` (SEQ a decimal number from 1, without sign or leading zeros).
pub fn parse(id: &str) -> Option<(Epoch, u64)> {
    let (epoch, seq) = id.split_once('-')?;
    let valid = !seq.is_empty()
        && seq.bytes().all(|b| b.is_ascii_digit())
        && !seq.starts_with('0')
        && seq.len() <= 20;
    if !valid {
        return None;
    }
    Some((Epoch::parse(epoch)?, seq.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_read_back_and_bad_ones_are_refused() {
        let e = Epoch::from_bytes([0x3f, 0xa2, 0xc9, 0xe1]);
        assert_eq!(e.to_string(), "3fa2c9e1");
        assert_eq!(parse("3fa2c9e1-1042"), Some((e, 1042)));
        assert_eq!(
            parse("3fa2c9e1-18446744073709551615").map(|p| p.1),
            Some(u64::MAX)
        );
        for bad in [
            "",
            "3fa2c9e1",
            "3fa2c9e1-",
            "3fa2c9e1-0",
            "3fa2c9e1-01",
            "3fa2c9e1-+1",
            "3fa2c9e1--1",
            "3FA2C9E1-1",
            "3fa2c9e-1",
            "3fa2c9e1a-1",
            "3fa2c9g1-1",
            "3fa2c9e1-1x",
            "3fa2c9e1-18446744073709551616",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
        let a = Epoch::random();
        assert!(Epoch::parse(a.as_str()).is_some(), "{a}");
    }
}

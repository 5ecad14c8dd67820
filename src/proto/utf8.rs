//! ⑤ Incremental UTF-8 validation: fails at the first byte that can no longer be UTF-8.
//!
//! - **In:** a text payload (or close reason) pushed in pieces split anywhere, even inside a
//!   character.
//! - **Out:** `Err` at the first push holding a byte after which no continuation could be
//!   UTF-8; otherwise `Ok`, plus [`Validator::is_complete`] to tell if the stream may end.
//! - **Never:** allocates, keeps more than the ≤ 3 bytes of one unfinished character, or
//!   panics; an incomplete end is not an error here (the caller decides at end of message).

use core::str::from_utf8;

/// Invalid UTF-8 was seen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Utf8Error;

/// Validates a byte stream pushed in pieces, carrying an incomplete sequence (≤ 3 bytes).
#[derive(Clone, Copy, Debug, Default)]
pub struct Validator {
    carry: [u8; 4],
    carry_len: u8,
}

impl Validator {
    /// A validator at the start of a stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// Validates the next piece.
    ///
    /// After an error the state is unspecified: [`Validator::reset`] before reuse.
    ///
    /// # Errors
    /// As soon as a byte makes the stream invalid, including an incomplete sequence that no
    /// continuation could make valid (e.g. `F4 90`).
    pub fn push(&mut self, bytes: &[u8]) -> Result<(), Utf8Error> {
        let mut rest = bytes;

        // First finish the character left unfinished by the previous push, one byte at a
        // time, so that a bad continuation byte fails at once.
        while self.carry_len > 0 {
            let Some((&b, tail)) = rest.split_first() else {
                // Still unfinished, still a valid prefix: keep carrying.
                return Ok(());
            };
            let len = usize::from(self.carry_len);
            let Some(slot) = self.carry.get_mut(len) else {
                // A carry of 4 bytes would be a whole character; cannot happen.
                return Err(Utf8Error);
            };
            *slot = b;
            self.carry_len += 1;
            rest = tail;
            match from_utf8(self.carry.get(..=len).unwrap_or_default()) {
                Ok(_) => self.carry_len = 0,
                // RFC 3629 §4 (via RFC 6455 §8.1): this prefix starts no valid character.
                Err(e) if e.error_len().is_some() => return Err(Utf8Error),
                Err(_) => {}
            }
        }

        match from_utf8(rest) {
            Ok(_) => Ok(()),
            Err(e) => match e.error_len() {
                // RFC 6455 §8.1: an endpoint that finds a text payload not to be valid UTF-8
                // MUST _Fail the WebSocket Connection_. std reports an impossible prefix
                // (`C0`, `E0 80`, `ED A0`, `F4 90`, `F5`, a lone continuation) as an error
                // with a length, so this fails at the push that brings the first bad byte.
                Some(_) => Err(Utf8Error),
                // The tail is a truncated but so far valid character (1..=3 bytes): carry it.
                None => {
                    let tail = rest.get(e.valid_up_to()..).unwrap_or_default();
                    match (self.carry.get_mut(..tail.len()), u8::try_from(tail.len())) {
                        (Some(dst), Ok(n)) if n < 4 => {
                            dst.copy_from_slice(tail);
                            self.carry_len = n;
                            Ok(())
                        }
                        _ => Err(Utf8Error),
                    }
                }
            },
        }
    }

    /// True if no incomplete sequence is carried: the stream may end here.
    pub fn is_complete(&self) -> bool {
        self.carry_len == 0
    }

    /// Back to the start of a stream.
    pub fn reset(&mut self) {
        *self = Self::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What whole-string validation says.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    enum Whole {
        Valid,
        /// A valid prefix that ends inside a character.
        Incomplete,
        /// Invalid; the field is the fail-fast index `k`: the smallest `k` such that
        /// `bytes[..=k]` is a prefix of no valid UTF-8.
        Invalid(usize),
    }

    fn whole(bytes: &[u8]) -> Whole {
        match from_utf8(bytes) {
            Ok(_) => Whole::Valid,
            Err(e) if e.error_len().is_none() => Whole::Incomplete,
            Err(_) => {
                let k = (0..bytes.len())
                    .find(|&k| matches!(from_utf8(&bytes[..=k]), Err(e) if e.error_len().is_some()))
                    .expect("an invalid string has an invalid prefix");
                Whole::Invalid(k)
            }
        }
    }

    /// Pushes `pieces` in order; returns the index of the piece whose push failed, or the
    /// final `is_complete`. Checks `is_complete` after every successful push against the
    /// reference on the bytes so far.
    fn feed(pieces: &[&[u8]]) -> Result<bool, usize> {
        let mut v = Validator::new();
        let mut so_far = Vec::new();
        for (i, piece) in pieces.iter().enumerate() {
            v.push(piece).map_err(|Utf8Error| i)?;
            so_far.extend_from_slice(piece);
            assert_eq!(
                v.is_complete(),
                from_utf8(&so_far).is_ok(),
                "is_complete after {so_far:02x?}"
            );
        }
        Ok(v.is_complete())
    }

    /// Whole, two pieces at every split, and one byte at a time all agree with `whole`, and
    /// an error comes at the push holding byte `k`.
    fn check(bytes: &[u8]) {
        let expected = whole(bytes);
        let outcome = |res: Result<bool, usize>, fail_piece_of_k: usize| match expected {
            Whole::Valid => assert_eq!(res, Ok(true), "{bytes:02x?}"),
            Whole::Incomplete => assert_eq!(res, Ok(false), "{bytes:02x?}"),
            Whole::Invalid(_) => assert_eq!(res, Err(fail_piece_of_k), "{bytes:02x?}"),
        };
        let k = match expected {
            Whole::Invalid(k) => k,
            _ => usize::MAX,
        };

        outcome(feed(&[bytes]), 0);

        for cut in 0..=bytes.len() {
            let (a, b) = bytes.split_at(cut);
            outcome(feed(&[a, b]), usize::from(k >= cut));
        }

        let singles: Vec<&[u8]> = bytes.chunks(1).collect();
        outcome(feed(&singles), k);

        if bytes.len() <= 16 {
            for i in 0..=bytes.len() {
                for j in i..=bytes.len() {
                    let pieces = [&bytes[..i], &bytes[i..j], &bytes[j..]];
                    let piece_of_k = if k < i {
                        0
                    } else if k < j {
                        1
                    } else {
                        2
                    };
                    outcome(feed(&pieces), piece_of_k);
                }
            }
        }
    }

    #[test]
    fn table_valid() {
        let table: &[&[u8]] = &[
            b"",
            b"a",
            b"Hello",
            "κόσμε".as_bytes(),
            "Hello-µ@ßöäüàá-UTF-8!!".as_bytes(),
            "\u{0}\u{7f}\u{80}\u{7ff}\u{800}\u{fff}\u{1000}".as_bytes(),
            "\u{d7ff}\u{e000}\u{fffd}\u{ffff}\u{10000}\u{10ffff}".as_bytes(),
            "日本語のテキスト 🎉🦀 mixed ascii".as_bytes(),
            &[0xF4, 0x8F, 0xBF, 0xBF], // U+10FFFF, the largest code point
            &[0xED, 0x9F, 0xBF],       // U+D7FF, just below the surrogates
            &[0xEE, 0x80, 0x80],       // U+E000, just above them
            &[0xEF, 0xBF, 0xBE],       // U+FFFE, a noncharacter but valid UTF-8
            &[0xC2, 0x80],             // U+0080, the smallest two-byte character
            &[0xE0, 0xA0, 0x80],       // U+0800, the smallest three-byte character
            &[0xF0, 0x90, 0x80, 0x80], // U+10000, the smallest four-byte character
        ];
        for &bytes in table {
            assert_eq!(whole(bytes), Whole::Valid, "{bytes:02x?}");
            check(bytes);
        }
    }

    #[test]
    fn table_invalid_fails_fast() {
        // (bytes, expected fail-fast index k), Markus Kuhn / Autobahn 6.x style.
        let table: &[(&[u8], usize)] = &[
            // Lone continuation bytes.
            (&[0x80], 0),
            (&[0xBF], 0),
            (b"ab\x80cd", 2),
            (&[0xC2, 0x80, 0x80], 2),
            // Bytes that never appear.
            (&[0xFE], 0),
            (&[0xFF], 0),
            (&[0xC0], 0),
            (&[0xC1], 0),
            (&[0xF5], 0),
            (&[0xF8, 0x88, 0x80, 0x80, 0x80], 0),
            (&[0xFC, 0x84, 0x80, 0x80, 0x80, 0x80], 0),
            // Overlong encodings.
            (&[0xC0, 0xAF], 0),
            (&[0xC1, 0xBF], 0),
            (&[0xE0, 0x80, 0xAF], 1),
            (&[0xE0, 0x9F, 0xBF], 1),
            (&[0xF0, 0x80, 0x80, 0xAF], 1),
            (&[0xF0, 0x8F, 0xBF, 0xBF], 1),
            // UTF-16 surrogates, single and paired.
            (&[0xED, 0xA0, 0x80], 1),
            (&[0xED, 0xAD, 0xBF], 1),
            (&[0xED, 0xBF, 0xBF], 1),
            (&[0xED, 0xA0, 0x80, 0xED, 0xB0, 0x80], 1),
            // Code points above U+10FFFF.
            (&[0xF4, 0x90, 0x80, 0x80], 1),
            (&[0xF4, 0x90], 1),
            (&[0xF7, 0xBF, 0xBF, 0xBF], 0),
            // A sequence cut short by a non-continuation byte.
            (&[0xC2, 0x41], 1),
            (&[0xE1, 0x80, 0x41], 2),
            (&[0xF1, 0x80, 0x80, 0x41], 3),
            (&[0xE1, 0x80, 0xE1, 0x80, 0x80], 2),
            // The Autobahn 6.4.x cases: valid text, then a byte that kills it.
            (
                &[
                    0xCE, 0xBA, 0xE1, 0xBD, 0xB9, 0xCF, 0x83, 0xCE, 0xBC, 0xCE, 0xB5, 0xF4, 0x90,
                    0x80, 0x80, 0x65, 0x64, 0x69, 0x74, 0x65, 0x64,
                ],
                12,
            ),
            (b"Hello\xED\xA0\x80world", 6),
            (b"valid \xE2\x82\xAC then \xC0\x80", 15),
        ];
        for &(bytes, k) in table {
            assert_eq!(whole(bytes), Whole::Invalid(k), "{bytes:02x?}");
            check(bytes);
        }
    }

    #[test]
    fn table_truncated_at_end_is_incomplete() {
        let table: &[&[u8]] = &[
            &[0xC2],
            &[0xDF],
            &[0xE0],
            &[0xE0, 0xA0],
            &[0xED, 0x9F],
            &[0xEF, 0xBF],
            &[0xF0],
            &[0xF0, 0x90],
            &[0xF0, 0x90, 0x80],
            &[0xF4, 0x8F, 0xBF],
            b"Hello \xE2\x82",
            "κόσμε".as_bytes().split_last().unwrap().1,
            "🦀".as_bytes().split_last().unwrap().1,
        ];
        for &bytes in table {
            assert_eq!(whole(bytes), Whole::Incomplete, "{bytes:02x?}");
            check(bytes);
            let mut v = Validator::new();
            assert_eq!(v.push(bytes), Ok(()));
            assert!(!v.is_complete());
        }
    }

    /// std's `from_utf8` reports an impossible prefix with a length, which is what makes
    /// fail-fast work: check the cases the module relies on.
    #[test]
    fn std_reports_impossible_prefixes_with_a_length() {
        for bytes in [
            &[0xF4, 0x90][..],
            &[0xED, 0xA0],
            &[0xE0, 0x80],
            &[0xF0, 0x80],
            &[0xC0],
            &[0xC1],
            &[0xF5],
            &[0x80],
        ] {
            let e = from_utf8(bytes).unwrap_err();
            assert_eq!(e.error_len(), Some(1), "{bytes:02x?}");
            let mut v = Validator::new();
            assert_eq!(v.push(bytes), Err(Utf8Error), "{bytes:02x?}");
        }
    }

    #[test]
    fn carry_completes_then_continues() {
        let mut v = Validator::new();
        assert_eq!(v.push(&[0xF0]), Ok(()));
        assert!(!v.is_complete());
        assert_eq!(v.push(&[0x9F]), Ok(()));
        assert_eq!(v.push(&[]), Ok(()));
        assert!(!v.is_complete());
        assert_eq!(v.push(&[0xA6, 0x80, b'o', b'k', 0xE2]), Ok(()));
        assert!(!v.is_complete());
        assert_eq!(v.push(&[0x82, 0xAC]), Ok(()));
        assert!(v.is_complete());
        // A bad byte right after a completed carry.
        assert_eq!(v.push(&[0xC3]), Ok(()));
        assert_eq!(v.push(&[0xA9, 0xFF]), Err(Utf8Error));
    }

    #[test]
    fn reset_forgets_the_carry() {
        let mut v = Validator::new();
        assert_eq!(v.push(&[0xE2, 0x82]), Ok(()));
        assert!(!v.is_complete());
        v.reset();
        assert!(v.is_complete());
        // Without the carry, a continuation byte is a lone one.
        assert_eq!(v.push(&[0xAC]), Err(Utf8Error));
        v.reset();
        assert_eq!(v.push("€".as_bytes()), Ok(()));
        assert!(v.is_complete());
    }

    #[test]
    fn all_one_and_two_byte_strings() {
        for a in 0..=u8::MAX {
            check(&[a]);
            for b in 0..=u8::MAX {
                check(&[a, b]);
            }
        }
    }

    #[test]
    fn all_three_byte_strings_with_multibyte_leads() {
        let third = [
            0x00, 0x41, 0x7F, 0x80, 0x8F, 0x90, 0x9F, 0xA0, 0xBF, 0xC0, 0xC2, 0xE0, 0xED, 0xF0,
            0xF4, 0xFF,
        ];
        for a in 0xC0..=0xF7u8 {
            for b in 0..=u8::MAX {
                for &c in &third {
                    check(&[a, b, c]);
                }
            }
        }
    }

    #[test]
    fn four_byte_leads_with_boundary_continuations() {
        let cont = [0x00, 0x7F, 0x80, 0x8F, 0x90, 0x9F, 0xA0, 0xBF, 0xC0, 0xFF];
        for a in 0xF0..=0xF7u8 {
            for &b in &cont {
                for &c in &cont {
                    for &d in &cont {
                        check(&[a, b, c, d]);
                        check(&[b'x', a, b, c, d, b'y']);
                    }
                }
            }
        }
    }

    /// Deterministic pseudo-random strings over the bytes that matter.
    #[test]
    fn random_strings_agree_with_std() {
        let alphabet = [
            0x00, 0x41, 0x7F, 0x80, 0x8F, 0x90, 0x9F, 0xA0, 0xBF, 0xC0, 0xC1, 0xC2, 0xDF, 0xE0,
            0xE1, 0xEC, 0xED, 0xEE, 0xEF, 0xF0, 0xF1, 0xF3, 0xF4, 0xF5, 0xFF,
        ];
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut seen = [0usize; 3];
        for _ in 0..4000 {
            let len = (next() % 12) as usize;
            let bytes: Vec<u8> = (0..len)
                .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
                .collect();
            seen[match whole(&bytes) {
                Whole::Valid => 0,
                Whole::Incomplete => 1,
                Whole::Invalid(_) => 2,
            }] += 1;
            check(&bytes);
        }
        assert!(seen.iter().all(|&n| n > 0), "{seen:?}");
    }
}

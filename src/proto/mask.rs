//! ④ Unmasking (RFC 6455 §5.3), in place, a machine word at a time, resumable.
//!
//! - **In:** a payload slice (any length, any alignment), the frame's 4-byte masking key, and
//!   the offset of the slice within the frame's payload (so a payload may arrive in pieces).
//! - **Out:** the same slice, XORed in place with the key as §5.3 defines; nothing else.
//! - **Never:** allocates, uses `unsafe`, reads outside the slice, or panics.

/// XORs `payload` with `key`, as bytes `offset..offset + payload.len()` of the frame's payload.
///
/// Masking and unmasking are the same operation.
pub fn unmask(payload: &mut [u8], key: [u8; 4], offset: u64) {
    // RFC 6455 §5.3: octet i of the transformed data is octet i of the original data XOR
    // octet at index i modulo 4 of the masking key. Here i = offset + index in `payload`, so
    // the key is rotated by offset % 4 and then indexed by the position in the slice.
    let mut rotated = key;
    rotated.rotate_left((offset % 4) as usize);
    let [k0, k1, k2, k3] = rotated;
    // 8 is a multiple of 4, so every 8-byte chunk starts at key index 0 of `rotated`.
    let word = u64::from_ne_bytes([k0, k1, k2, k3, k0, k1, k2, k3]);

    // 32 bytes at a time first: a fixed-length XOR loop the compiler turns into vector
    // instructions (two 16-byte XORs even on baseline x86-64).
    let mut wide = payload.chunks_exact_mut(32);
    if wide.len() > 0 {
        let pattern: [u8; 32] = core::array::from_fn(|i| rotated[i % 4]);
        for chunk in &mut wide {
            for (b, k) in chunk.iter_mut().zip(pattern.iter()) {
                *b ^= k;
            }
        }
    }
    // 32 is a multiple of 4, so the rest starts at key index 0 as well.
    let mut chunks = wide.into_remainder().chunks_exact_mut(8);
    for chunk in &mut chunks {
        if let Ok(bytes) = <&mut [u8; 8]>::try_from(chunk) {
            *bytes = (u64::from_ne_bytes(*bytes) ^ word).to_ne_bytes();
        }
    }
    // The remainder starts at a multiple of 8 too, so it also starts at `rotated[0]`.
    for (b, k) in chunks
        .into_remainder()
        .iter_mut()
        .zip(rotated.iter().cycle())
    {
        *b ^= k;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// §5.3 taken literally, one byte at a time.
    fn reference(payload: &mut [u8], key: [u8; 4], offset: u64) {
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= key[(offset.wrapping_add(i as u64) % 4) as usize];
        }
    }

    const KEYS: [[u8; 4]; 6] = [
        [0x37, 0xfa, 0x21, 0x3d],
        [0, 0, 0, 0],
        [0xFF, 0xFF, 0xFF, 0xFF],
        [1, 2, 3, 4],
        [0x80, 0x00, 0x7F, 0x01],
        [0xDE, 0xAD, 0xBE, 0xEF],
    ];

    fn sample(len: usize) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(7))
            .collect()
    }

    #[test]
    fn matches_naive_reference() {
        for key in KEYS {
            for len in 0..=70 {
                for offset in 0..=7u64 {
                    let mut fast = sample(len);
                    let mut slow = fast.clone();
                    unmask(&mut fast, key, offset);
                    reference(&mut slow, key, offset);
                    assert_eq!(fast, slow, "key {key:02x?} len {len} offset {offset}");
                }
            }
        }
    }

    #[test]
    fn matches_reference_at_unaligned_starts_and_large_offsets() {
        let key = KEYS[5];
        for start in 0..8 {
            for offset in [0, 1, 2, 3, u64::from(u32::MAX), u64::MAX - 3, u64::MAX] {
                let mut fast = sample(100);
                let mut slow = fast.clone();
                unmask(&mut fast[start..], key, offset);
                reference(&mut slow[start..], key, offset);
                assert_eq!(fast, slow, "start {start} offset {offset}");
            }
        }
    }

    #[test]
    fn resumes_across_pieces() {
        let whole_len = 97;
        for key in KEYS {
            let mut whole = sample(whole_len);
            unmask(&mut whole, key, 0);
            // Every two-piece split.
            for cut in 0..=whole_len {
                let mut pieces = sample(whole_len);
                let (a, b) = pieces.split_at_mut(cut);
                unmask(a, key, 0);
                unmask(b, key, cut as u64);
                assert_eq!(pieces, whole, "cut {cut}");
            }
            // Irregular piece sizes, resuming with the running offset.
            for step in [1, 2, 3, 5, 7, 9, 13, 17] {
                let mut pieces = sample(whole_len);
                let mut done = 0;
                let mut size = step;
                while done < whole_len {
                    let end = (done + size).min(whole_len);
                    unmask(&mut pieces[done..end], key, done as u64);
                    done = end;
                    size = size % 11 + step;
                }
                assert_eq!(pieces, whole, "step {step}");
            }
        }
    }

    #[test]
    fn rfc6455_section_5_7_masked_hello() {
        let mut payload = [0x7f, 0x9f, 0x4d, 0x51, 0x58];
        unmask(&mut payload, [0x37, 0xfa, 0x21, 0x3d], 0);
        assert_eq!(&payload, b"Hello");
        // And in two pieces.
        let mut payload = [0x7f, 0x9f, 0x4d, 0x51, 0x58];
        let (a, b) = payload.split_at_mut(3);
        unmask(a, [0x37, 0xfa, 0x21, 0x3d], 0);
        unmask(b, [0x37, 0xfa, 0x21, 0x3d], 3);
        assert_eq!(&payload, b"Hello");
    }

    #[test]
    fn applying_twice_is_identity() {
        for key in KEYS {
            for len in [0, 1, 7, 8, 9, 64, 65, 1000] {
                for offset in 0..4 {
                    let original = sample(len);
                    let mut data = original.clone();
                    unmask(&mut data, key, offset);
                    if key.iter().all(|&k| k != 0) && len > 0 {
                        assert_ne!(data, original);
                    }
                    unmask(&mut data, key, offset);
                    assert_eq!(data, original);
                }
            }
        }
    }

    #[test]
    fn empty_payload_is_a_no_op() {
        let mut empty: [u8; 0] = [];
        unmask(&mut empty, [1, 2, 3, 4], 5);
    }
}

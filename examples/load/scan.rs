//! Cheap scans of relay JSON: the message type and number fields (the sequence number), without a
//! JSON parser.
//!
//! Each looks at the first occurrence of a key, which is enough for messages this generator
//! built itself (its `pad` string holds only `x`).

/// The unsigned number after the first `"seq"` key (whitespace allowed around the colon).
pub fn seq(json: &[u8]) -> Option<u64> {
    uint(json, b"\"seq\"")
}

/// The unsigned number after the first occurrence of `key` (quoted, e.g. `b"\"data\""`).
pub fn uint(json: &[u8], key: &[u8]) -> Option<u64> {
    let rest = value_of(json, key)?;
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || digits > 20 {
        return None;
    }
    rest[..digits].iter().try_fold(0u64, |n, &d| {
        n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

/// The string after the first occurrence of `key`, without its quotes (up to the next `"`:
/// escapes are not decoded).
pub fn text<'j>(json: &'j [u8], key: &[u8]) -> Option<&'j [u8]> {
    let rest = value_of(json, key)?.strip_prefix(b"\"")?;
    let end = rest.iter().position(|&b| b == b'"')?;
    Some(&rest[..end])
}

/// True if the first `"type"` key holds the string `ty`.
pub fn has_type(json: &[u8], ty: &[u8]) -> bool {
    let Some(rest) = value_of(json, b"\"type\"") else {
        return false;
    };
    rest.len() > ty.len() + 1
        && rest[0] == b'"'
        && &rest[1..=ty.len()] == ty
        && rest[ty.len() + 1] == b'"'
}

/// The bytes after `key`, the colon and any whitespace.
fn value_of<'j>(json: &'j [u8], key: &[u8]) -> Option<&'j [u8]> {
    let at = json.windows(key.len()).position(|w| w == key)?;
    let rest = skip_ws(&json[at + key.len()..]);
    Some(skip_ws(rest.strip_prefix(b":")?))
}

fn skip_ws(b: &[u8]) -> &[u8] {
    let n = b
        .iter()
        .take_while(|c| matches!(c, b' ' | b'\t' | b'\r' | b'\n'))
        .count();
    &b[n..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seq_is_found_in_compact_padded_and_spaced_json() {
        let m = br#"{"type":"message","topic":"bench","data":{"seq":42,"t":7}}"#;
        assert_eq!(seq(m), Some(42));
        assert_eq!(
            seq(br#"{"data":{"seq":               17,"t": 1}}"#),
            Some(17)
        );
        assert_eq!(seq(br#"{"data": {"seq" : 0 }}"#), Some(0));
        assert_eq!(seq(br#"{"seq":18446744073709551615}"#), Some(u64::MAX));
    }

    #[test]
    fn seq_refuses_what_is_not_a_number() {
        assert_eq!(seq(br#"{"seq":"3"}"#), None);
        assert_eq!(seq(br#"{"seq":-3}"#), None);
        assert_eq!(seq(br#"{"seq":18446744073709551616}"#), None);
        assert_eq!(seq(br#"{"sequence":3}"#), None);
        assert_eq!(seq(br#"{"seq"}"#), None);
        assert_eq!(seq(b""), None);
    }

    #[test]
    fn text_is_the_string_value() {
        let m = br#"{"type":"message","topic" : "soak/12","data":{"seq":1}}"#;
        assert_eq!(text(m, b"\"topic\""), Some(&b"soak/12"[..]));
        assert_eq!(text(br#"{"topic":12}"#, b"\"topic\""), None);
        assert_eq!(text(br#"{"topic":"open"#, b"\"topic\""), None);
    }

    #[test]
    fn type_is_matched_exactly() {
        assert!(has_type(br#"{"type":"ack","id":1}"#, b"ack"));
        assert!(has_type(br#"{ "type" : "ack" }"#, b"ack"));
        assert!(!has_type(br#"{"type":"acknowledged"}"#, b"ack"));
        assert!(!has_type(br#"{"type":"ac"}"#, b"ack"));
        assert!(!has_type(br#"{"kind":"ack"}"#, b"ack"));
    }
}

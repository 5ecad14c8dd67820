//! Who may publish and subscribe where: a client's topic patterns, compiled once and shared
//! by its connections.

/// A client name: 1 to 64 of `A-Z a-z 0-9 - _ .`, so that `{name}` in a pattern always
/// stands for exactly one topic level.
pub fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

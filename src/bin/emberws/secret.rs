//! Client tokens: 256 random bits, handed to the client once, stored only as their SHA-256,
//! compared in constant time.

use std::fmt;

use base64::Engine as _;
use ring::rand::{SecureRandom, SystemRandom};
use subtle::ConstantTimeEq;

/// Random bytes in a token: 256 bits, beyond any guessing at any rate.
const TOKEN_BYTES: usize = 32;

/// The SHA-256 of a token: what the clients file stores.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct TokenHash([u8; 32]);

impl TokenHash {
    /// The hash of a token as presented by a client.
    pub fn of(token: &str) -> Self {
        let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
        let mut out = [0; 32];
        out.copy_from_slice(digest.as_ref());
        TokenHash(out)
    }

    /// Reads 64 hex digits (either case).
    pub fn from_hex(hex: &str) -> Option<Self> {
        let hex = hex.as_bytes();
        if hex.len() != 64 {
            return None;
        }
        let mut out = [0; 32];
        for (byte, pair) in out.iter_mut().zip(hex.chunks_exact(2)) {
            let digit = |c: u8| (c as char).to_digit(16);
            *byte = u8::try_from(digit(pair[0])? << 4 | digit(pair[1])?).ok()?;
        }
        Some(TokenHash(out))
    }

    /// 64 lowercase hex digits.
    pub fn to_hex(self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Equality that takes the same time whichever byte differs.
    pub fn matches(&self, other: &TokenHash) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

/// Never printed: a hash in a log line would let anyone who reads it test guesses offline.
impl fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenHash(..)")
    }
}

/// A fresh token: 32 bytes from the operating system's generator, base64url (43 characters,
/// safe in a URL and in an `Authorization` header as they are).
pub fn new_token() -> Result<String, String> {
    let mut bytes = [0u8; TOKEN_BYTES];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| "the system's random generator failed".to_owned())?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

/// `emberws token NAME`: a new token on the first line (the only time it is shown), then the
/// entry to add to the clients file, which holds only its hash.
pub fn token_command(name: &str) -> Result<String, String> {
    if !crate::relay::acl::valid_name(name) {
        return Err(format!(
            "'{name}' is not a client name: use 1 to 64 letters, digits, '-', '_' or '.'"
        ));
    }
    let token = new_token()?;
    Ok(format!(
        "{token}\n\n\
         # Add to the clients file (it stores only the token's hash); give the token above to\n\
         # the client: it is not stored anywhere and cannot be shown again.\n\
         [{name}]\n\
         token_sha256 = \"{}\"\n\
         publish = [\"devices/{{name}}/#\"]\n\
         subscribe = [\"devices/{{name}}/#\"]\n",
        TokenHash::of(&token).to_hex()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_round_trips_through_hex_and_matches_only_its_token() {
        let token = new_token().unwrap();
        assert_eq!(token.len(), 43);
        let hash = TokenHash::of(&token);
        let stored = TokenHash::from_hex(&hash.to_hex()).unwrap();
        assert!(stored.matches(&TokenHash::of(&token)));
        assert!(!stored.matches(&TokenHash::of(&new_token().unwrap())));
        assert_eq!(
            TokenHash::of("abc").to_hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert!(TokenHash::from_hex(&hash.to_hex().to_uppercase()).is_some());
        assert!(TokenHash::from_hex("ab").is_none());
        assert!(TokenHash::from_hex(&"g".repeat(64)).is_none());
        assert_eq!(format!("{hash:?}"), "TokenHash(..)");
    }
}

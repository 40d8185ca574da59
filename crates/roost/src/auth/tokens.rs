//! Bearer secrets for sessions, the console and API clients: 32 random characters from the OS
//! CSPRNG (about 190 bits), stored as a BLAKE2s-256 hash. A fast hash is right here: unlike a
//! password, a token has enough entropy that nobody can guess it from its hash.

use crate::model::TimestampMs;
use blake2::{Blake2s256, Digest};
use std::fmt::Write;
use std::time::Duration;

/// Characters in a token.
const TOKEN_LEN: usize = 32;

/// A new token and the hash to store for it.
pub fn generate() -> (String, String) {
    let token = super::password::generate_len(TOKEN_LEN);
    let hash = hash(&token);
    (token, hash)
}

/// When a token issued now, valid for `valid`, expires.
pub fn expires_after(valid: Duration) -> TimestampMs {
    let valid_ms = i64::try_from(valid.as_millis()).unwrap_or(i64::MAX);
    TimestampMs(TimestampMs::now().0.saturating_add(valid_ms))
}

/// `n` days, for token lifetimes given in days.
pub fn days(n: u32) -> Duration {
    Duration::from_secs(u64::from(n) * 86_400)
}

/// Whether `s` has a token's shape; anything else need not be looked up.
pub fn looks_like_token(s: &str) -> bool {
    s.len() == TOKEN_LEN && s.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// The stored form of `token`: lowercase hex.
pub fn hash(token: &str) -> String {
    let digest = Blake2s256::digest(token.as_bytes());
    let mut out = String::with_capacity(64);
    for byte in digest {
        let _ = write!(out, "{byte:02x}");
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn tokens_are_long_random_and_stored_hashed() {
        let (token, hash) = super::generate();
        assert_eq!(token.len(), 32);
        assert_eq!(hash.len(), 64);
        assert_eq!(super::hash(&token), hash);
        assert_ne!(super::generate().0, token);
        assert!(super::looks_like_token(&token));
        assert!(!super::looks_like_token("alice-secret"));
    }
}

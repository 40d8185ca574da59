//! Password hashing: Argon2id (argon2 crate defaults: m = 19 MiB, t = 2, p = 1) in PHC string
//! format. Hashing is deliberately slow, so it runs on the blocking pool, never on the async
//! runtime's workers.

use argon2::password_hash::rand_core::{OsRng, RngCore};
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;

/// Length of generated passwords (alphanumeric: about 143 bits).
const GENERATED_LEN: usize = 24;

/// Hashes `password` with a fresh random salt.
pub async fn hash(password: String) -> anyhow::Result<String> {
    tokio::task::spawn_blocking(move || hash_blocking(&password)).await?
}

fn hash_blocking(password: &str) -> anyhow::Result<String> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|e| anyhow::anyhow!("hashing a password: {e}"))
}

/// Whether `password` matches `stored` (a PHC string). A malformed hash never matches.
pub async fn verify(password: Vec<u8>, stored: String) -> bool {
    verify_holding(password, stored, ()).await
}

/// [`verify`], holding `held` (a turn to check a password) until the check is over, even if
/// this future is dropped before (a client gone): the check itself runs on to its end.
pub async fn verify_holding<T: Send + 'static>(password: Vec<u8>, stored: String, held: T) -> bool {
    tokio::task::spawn_blocking(move || {
        let matches = verify_blocking(&password, &stored);
        drop(held);
        matches
    })
    .await
    .unwrap_or(false)
}

fn verify_blocking(password: &[u8], stored: &str) -> bool {
    PasswordHash::new(stored).is_ok_and(|parsed| Argon2::default().verify_password(password, &parsed).is_ok())
}

/// `user` if `password` is theirs. An unknown user (`None`) costs a full verification against
/// the dummy hash too, so timing does not reveal which names exist. `held` as for [`verify`].
pub async fn verify_user<T: Send + 'static>(
    user: Option<crate::store::UserRecord>,
    password: Vec<u8>,
    held: T,
) -> Option<crate::store::UserRecord> {
    let stored = user.as_ref().map_or_else(|| dummy_hash().to_owned(), |u| u.password_hash.clone());
    let matches = verify_holding(password, stored, held).await;
    user.filter(|_| matches)
}

/// A hash no password matches, for spending the same time on unknown user names as on known
/// ones (no user enumeration by timing).
pub fn dummy_hash() -> &'static str {
    "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$0wjfmIwBZD8WfW3ZG4k8dHkxYBq+PQqR2PzmjzxDUAM"
}

/// A random password for generated accounts, from the operating system's CSPRNG.
pub fn generate() -> String {
    generate_len(GENERATED_LEN)
}

/// `len` random alphanumeric characters from the operating system's CSPRNG.
pub fn generate_len(len: usize) -> String {
    const ALPHABET: &[u8; 62] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut out = String::with_capacity(len);
    let mut bytes = [0u8; 64];
    while out.len() < len {
        OsRng.fill_bytes(&mut bytes);
        // Rejection sampling: 248 = 4 × 62, so every character is equally likely.
        out.extend(bytes.iter().filter(|&&b| b < 248).map(|&b| ALPHABET[usize::from(b % 62)] as char).take(len - out.len()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_argon2id_phc_strings_that_verify_only_the_right_password() {
        let hash = hash_blocking("correct horse").unwrap();
        assert!(hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{hash}");
        assert!(verify_blocking(b"correct horse", &hash));
        assert!(!verify_blocking(b"correct horsf", &hash));
        assert_ne!(hash, hash_blocking("correct horse").unwrap(), "salted");
        assert!(!verify_blocking(b"x", "not a hash"));
        assert!(!verify_blocking(b"", dummy_hash()));
        assert!(PasswordHash::new(dummy_hash()).is_ok(), "the dummy hash parses, so it costs a real verification");
    }

    #[test]
    fn generated_passwords_are_long_and_differ() {
        let (a, b) = (generate(), generate());
        assert_eq!(a.len(), GENERATED_LEN);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(a, b);
    }
}

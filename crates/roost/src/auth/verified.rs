//! Logins verified lately: a board that reconnects (its Wi-Fi dropped, the router restarted)
//! with the password it logged in with before is let in without another Argon2id check, so a
//! fleet coming back at once is not queued behind a core's few dozen checks a second.
//!
//! What is kept is a keyed BLAKE2s digest of the stored hash and the password, under a key drawn
//! at start and never written anywhere: nothing here lets a password be recovered without the
//! process's memory, and a changed password (a new stored hash) or a removed user (no stored
//! hash to match) never matches an old entry. Entries last [`VERIFIED_FOR`]; a restart forgets
//! them all.

use argon2::password_hash::rand_core::{OsRng, RngCore};
use blake2::{Blake2s256, Digest};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// How long a verified login is remembered.
pub const VERIFIED_FOR: Duration = Duration::from_secs(24 * 3600);
/// The most logins remembered: past it, those older than [`VERIFIED_FOR`] are dropped, and if
/// that is not enough, all of them (32 bytes and an instant each: about 5 MB).
const MOST_REMEMBERED: usize = 100_000;

type Digest32 = [u8; 32];

#[derive(Debug)]
pub struct VerifiedLogins {
    key: Digest32,
    /// Each verified (stored hash, password), by digest, and when it was verified.
    verified: Mutex<HashMap<Digest32, Instant>>,
}

impl Default for VerifiedLogins {
    fn default() -> Self {
        let mut key = [0; 32];
        OsRng.fill_bytes(&mut key);
        Self { key, verified: Mutex::default() }
    }
}

impl VerifiedLogins {
    fn digest(&self, stored_hash: &str, password: &[u8]) -> Digest32 {
        // BLAKE2 keyed by a prefix is a MAC (no length extension); the stored hash is a PHC
        // string, which holds no NUL, so the separator keeps the two fields apart.
        Blake2s256::new().chain_update(self.key).chain_update(stored_hash).chain_update([0]).chain_update(password).finalize().into()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Digest32, Instant>> {
        self.verified.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether `password` was verified against `stored_hash` within [`VERIFIED_FOR`].
    pub fn knows(&self, stored_hash: &str, password: &[u8]) -> bool {
        let digest = self.digest(stored_hash, password);
        self.lock().get(&digest).is_some_and(|at| at.elapsed() < VERIFIED_FOR)
    }

    /// Remembers that `password` matched `stored_hash` just now.
    pub fn remember(&self, stored_hash: &str, password: &[u8]) {
        let digest = self.digest(stored_hash, password);
        let mut verified = self.lock();
        if verified.len() >= MOST_REMEMBERED {
            verified.retain(|_, at| at.elapsed() < VERIFIED_FOR);
            if verified.len() >= MOST_REMEMBERED {
                verified.clear();
            }
        }
        verified.insert(digest, Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$0wjfmIwBZD8WfW3ZG4k8dHkxYBq+PQqR2PzmjzxDUAM";
    const NEW_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$b3RoZXJzYWx0b3RoZXJzYWx0$0wjfmIwBZD8WfW3ZG4k8dHkxYBq+PQqR2PzmjzxDUAM";

    #[tokio::test(start_paused = true)]
    async fn a_verified_password_is_known_for_a_day_and_only_with_its_stored_hash() {
        let logins = VerifiedLogins::default();
        assert!(!logins.knows(HASH, b"secret"), "nothing verified yet");
        logins.remember(HASH, b"secret");
        assert!(logins.knows(HASH, b"secret"));
        assert!(!logins.knows(HASH, b"secreT"), "another password");
        assert!(!logins.knows(HASH, b"secret\0"), "another password");
        assert!(!logins.knows(NEW_HASH, b"secret"), "the password was changed since");
        assert!(!VerifiedLogins::default().knows(HASH, b"secret"), "another process's key");
        tokio::time::advance(VERIFIED_FOR - Duration::from_secs(1)).await;
        assert!(logins.knows(HASH, b"secret"));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(!logins.knows(HASH, b"secret"), "forgotten after a day");
    }

    #[tokio::test(start_paused = true)]
    async fn at_most_so_many_are_remembered() {
        let logins = VerifiedLogins::default();
        for n in 0..MOST_REMEMBERED {
            logins.remember(HASH, n.to_string().as_bytes());
        }
        tokio::time::advance(VERIFIED_FOR).await;
        logins.remember(HASH, b"after a day");
        assert_eq!(logins.lock().len(), 1, "the expired ones went");
        for n in 1..MOST_REMEMBERED {
            logins.remember(HASH, n.to_string().as_bytes());
        }
        logins.remember(HASH, b"one too many");
        assert_eq!(logins.lock().len(), 1, "all fresh, so all went");
        assert!(logins.knows(HASH, b"one too many"));
    }
}

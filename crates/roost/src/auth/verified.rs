//! Logins verified lately: a board that reconnects (its Wi-Fi dropped, the router restarted)
//! with the password it logged in with before is let in without another Argon2id check, so a
//! fleet coming back at once is not queued behind a core's few dozen checks a second.
//!
//! What is kept, per user, is a keyed BLAKE2s digest of the user name, the stored hash and the
//! password, under a key drawn at start and never written anywhere. A changed password (a new
//! stored hash) or a removed user (no stored hash to match) never matches; a user's newer
//! login replaces the older. Entries last [`VERIFIED_FOR`]; a restart forgets them all.
//!
//! The trade-off: whoever can read the process's memory (a core dump, root) gets the key and the
//! digests, and with the stored hashes could test guesses of these passwords at BLAKE2s speed
//! rather than Argon2id's. So only device logins over MQTT are kept (`LoginLimiter`): not the
//! dashboard's, and not admins', whose passwords are the ones people choose.

use argon2::password_hash::rand_core::{OsRng, RngCore};
use blake2::{Blake2s256, Digest};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// How long a verified login is remembered.
pub const VERIFIED_FOR: Duration = Duration::from_secs(24 * 3600);
/// The most users whose login is remembered: past it, those older than [`VERIFIED_FOR`] are
/// dropped, and if that is not enough, all of them (a name, 32 bytes and an instant each: about
/// 10 MB).
const MOST_REMEMBERED: usize = 100_000;

type Digest32 = [u8; 32];

#[derive(Debug)]
pub struct VerifiedLogins {
    key: Digest32,
    /// Each user's last verified login, as a digest, and when it was verified.
    verified: Mutex<HashMap<String, (Digest32, Instant)>>,
}

impl Default for VerifiedLogins {
    fn default() -> Self {
        let mut key = [0; 32];
        OsRng.fill_bytes(&mut key);
        Self { key, verified: Mutex::default() }
    }
}

impl VerifiedLogins {
    fn digest(&self, name: &str, stored_hash: &str, password: &[u8]) -> Digest32 {
        // BLAKE2 keyed by a prefix is a MAC (no length extension); each field is preceded by its
        // length, so no two different triples run together into the same bytes.
        let mut digest = Blake2s256::new().chain_update(self.key);
        for field in [name.as_bytes(), stored_hash.as_bytes(), password] {
            digest = digest.chain_update((field.len() as u64).to_le_bytes()).chain_update(field);
        }
        digest.finalize().into()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Digest32, Instant)>> {
        self.verified.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether `name`'s `password` was verified against `stored_hash` within [`VERIFIED_FOR`].
    pub fn knows(&self, name: &str, stored_hash: &str, password: &[u8]) -> bool {
        let digest = self.digest(name, stored_hash, password);
        self.lock().get(name).is_some_and(|(known, at)| *known == digest && at.elapsed() < VERIFIED_FOR)
    }

    /// Remembers that `name`'s `password` matched `stored_hash` just now.
    pub fn remember(&self, name: &str, stored_hash: &str, password: &[u8]) {
        let digest = self.digest(name, stored_hash, password);
        let mut verified = self.lock();
        if verified.len() >= MOST_REMEMBERED && !verified.contains_key(name) {
            verified.retain(|_, (_, at)| at.elapsed() < VERIFIED_FOR);
            if verified.len() >= MOST_REMEMBERED {
                verified.clear();
            }
        }
        verified.insert(name.to_owned(), (digest, Instant::now()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$0wjfmIwBZD8WfW3ZG4k8dHkxYBq+PQqR2PzmjzxDUAM";
    const NEW_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$b3RoZXJzYWx0b3RoZXJzYWx0$0wjfmIwBZD8WfW3ZG4k8dHkxYBq+PQqR2PzmjzxDUAM";

    #[tokio::test(start_paused = true)]
    async fn a_verified_password_is_known_for_a_day_and_only_as_it_was_verified() {
        let logins = VerifiedLogins::default();
        assert!(!logins.knows("board", HASH, b"secret"), "nothing verified yet");
        logins.remember("board", HASH, b"secret");
        assert!(logins.knows("board", HASH, b"secret"));
        assert!(!logins.knows("board", HASH, b"secreT"), "another password");
        assert!(!logins.knows("board", HASH, b"secret\0"), "another password");
        assert!(!logins.knows("board", NEW_HASH, b"secret"), "the password was changed since");
        assert!(!logins.knows("other", HASH, b"secret"), "another user with the same hash and password");
        assert!(!VerifiedLogins::default().knows("board", HASH, b"secret"), "another process's key");
        tokio::time::advance(VERIFIED_FOR - Duration::from_secs(1)).await;
        assert!(logins.knows("board", HASH, b"secret"));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(!logins.knows("board", HASH, b"secret"), "forgotten after a day");
        logins.remember("board", HASH, b"secret");
        logins.remember("board", NEW_HASH, b"new secret");
        assert!(!logins.knows("board", HASH, b"secret"), "a user's newer login replaces the older");
        assert!(logins.knows("board", NEW_HASH, b"new secret"));
    }

    #[test]
    fn fields_do_not_run_together() {
        let logins = VerifiedLogins::default();
        assert_ne!(logins.digest("a", "b\0c", b"d"), logins.digest("a", "b", b"\0cd"));
        assert_ne!(logins.digest("ab", "c", b"d"), logins.digest("a", "bc", b"d"));
    }

    #[tokio::test(start_paused = true)]
    async fn at_most_so_many_users_are_remembered() {
        let logins = VerifiedLogins::default();
        for n in 0..MOST_REMEMBERED / 2 {
            logins.remember(&format!("old-{n}"), HASH, b"secret");
        }
        tokio::time::advance(VERIFIED_FOR).await;
        for n in 0..MOST_REMEMBERED / 2 {
            logins.remember(&format!("new-{n}"), HASH, b"secret");
        }
        logins.remember("new-0", HASH, b"again");
        assert_eq!(logins.lock().len(), MOST_REMEMBERED, "a known user's login replaces its entry");
        logins.remember("one more", HASH, b"secret");
        assert_eq!(logins.lock().len(), MOST_REMEMBERED / 2 + 1, "the expired ones went, the fresh ones stayed");
        for n in MOST_REMEMBERED / 2..MOST_REMEMBERED - 1 {
            logins.remember(&format!("new-{n}"), HASH, b"secret");
        }
        assert_eq!(logins.lock().len(), MOST_REMEMBERED);
        logins.remember("one too many", HASH, b"secret");
        assert_eq!(logins.lock().len(), 1, "all fresh, so all went");
        assert!(logins.knows("one too many", HASH, b"secret"));
    }
}

//! Failed logins (MQTT CONNECT and the dashboard alike), counted so that guessing gets slow
//! while nobody else is locked out:
//!
//! - per (address, user name): past `per_name` failures within the window, that name's logins
//!   from that address go one at a time, each after a delay that doubles (1 s up to 30 s). The
//!   right password still gets in, just later; other names from the same address (boards
//!   behind one home router) are not touched.
//! - in all (against password spraying: many names, or many addresses): past `total` failures
//!   within the window, logins by an (address, name) without a recent success go one at a
//!   time per address, each after 1 s. Pairs that logged in successfully lately skip this.
//!
//! - at once: at most `concurrent_checks` passwords are checked at the same time, in the
//!   order they came ([`LoginLimiter::verify_user`]: the turn covers the Argon2id check only,
//!   not the user's lookup). A check takes 19 MiB for tens of milliseconds: a burst of
//!   CONNECTs with made-up names (each failing only once checked) would otherwise run one
//!   check per thread of the blocking pool (512) at once, about 10 GiB.
//! - a login that waited `check_wait` for its turn is refused as "server unavailable" (it is
//!   nobody's failure), and its password is not checked. Before, a board that gave up waiting
//!   (15 s for PubSubClient) and came back left its check behind, which still ran for nobody.
//!   Roost on one core (a Raspberry Pi checks about as many a second), boards reconnecting at
//!   once: 2,000 were all logged in after 114 s and 114 s of CPU, now 57 s and 37 s; of 4,000,
//!   910 were in after 180 s (the queue of checks for boards gone grew faster than it
//!   drained), now all after 106 s (`login-bench`, BENCHMARKS.md).
//!
//! Nothing else is refused here: the caller checks the password after
//! [`LoginLimiter::admit`] and reports the outcome on the returned [`Admission`].

use crate::store::UserRecord;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{OwnedMutexGuard, OwnedSemaphorePermit};
use tokio::time::Instant;

/// The first delay once a pair is over its limit; it doubles with each further failure.
const FIRST_DELAY: Duration = Duration::from_secs(1);
const MAX_DELAY: Duration = Duration::from_secs(30);
/// The delay for pairs without a recent success while failures in all are over the cap.
const SPRAY_DELAY: Duration = Duration::from_secs(1);
/// How long a successful login exempts its pair from the spraying slowdown.
const KNOWN_GOOD_FOR: Duration = Duration::from_secs(7 * 86_400);
/// Entries kept before old ones are swept.
const SWEEP_ABOVE: usize = 10_000;
/// The most characters of a user name a pair is counted under: an MQTT user name may be 64 KiB,
/// and the entries of many such names would otherwise take that each until they are swept.
/// (No account's name is longer than this.)
const NAME_CHARS_KEPT: usize = crate::model::MAX_LEVEL_CHARS;

#[derive(Debug, Clone, Copy)]
pub struct LimiterConfig {
    /// Failures per (address, name) per window before that pair is slowed; 0: never.
    pub per_name: u32,
    /// Failures in all per window before pairs without a recent success are slowed.
    pub total: u32,
    pub window: Duration,
    /// Passwords checked at the same time, at most (each Argon2id check takes 19 MiB).
    pub concurrent_checks: usize,
    /// How long a login waits for its turn to have its password checked before it is refused
    /// as unavailable ([`CHECK_WAIT`]).
    pub check_wait: Duration,
}

/// How long a login waits for a password check, by default: well within the 10–30 s that
/// device libraries wait for a CONNACK (PubSubClient 15 s, ESP-IDF 10 s, Paho 30 s), so that the
/// refusal reaches a board that is still there.
pub const CHECK_WAIT: Duration = Duration::from_secs(5);

/// Whether a login may be let in on a password verified lately (`auth/verified`): device logins
/// over MQTT may (a fleet reconnecting); the dashboard's are checked every time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reuse {
    Verified,
    Never,
}

/// A login refused because it waited [`LimiterConfig::check_wait`] for a password check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooManyLogins;

/// How often, at most, logins refused for waiting too long are said in the log.
const BUSY_WARNING_EVERY: Duration = Duration::from_secs(10);

type Pair = (IpAddr, String);

/// Who waits behind whom: a pair over its own limit, or an address while spraying is on.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Lane {
    Pair(Pair),
    Address(IpAddr),
}

#[derive(Debug)]
pub struct LoginLimiter {
    config: LimiterConfig,
    state: Mutex<State>,
    /// One permit per password being checked (held by the check itself, to its end).
    checks: Arc<tokio::sync::Semaphore>,
    /// Logins verified lately, let in again without a check.
    verified: super::verified::VerifiedLogins,
}

#[derive(Debug, Default)]
struct State {
    /// Failures of each pair, and when the last one was: a pair is forgotten a window after its
    /// last failure, so a guesser who keeps failing stays slow.
    failures: HashMap<Pair, (u32, Instant)>,
    /// Failures in all in the current window.
    total: (u32, Option<Instant>),
    /// When each pair last logged in.
    succeeded: HashMap<Pair, Instant>,
    lanes: HashMap<Lane, Arc<tokio::sync::Mutex<()>>>,
    /// Logins refused for waiting too long since the last warning, and when that was.
    busy: (u64, Option<Instant>),
}

/// One login attempt let through; say how it went.
#[must_use = "report the outcome with `succeeded` or `failed`"]
pub struct Admission<'a> {
    limiter: &'a LoginLimiter,
    pair: Pair,
    /// Held while the password is checked, so the slowed attempts of one lane go one by one.
    _lane: Option<OwnedMutexGuard<()>>,
    /// How long this attempt was held back.
    pub waited: Duration,
}

impl Admission<'_> {
    pub fn succeeded(self) {
        let mut state = self.limiter.lock();
        state.failures.remove(&self.pair);
        state.succeeded.insert(self.pair.clone(), Instant::now());
    }

    pub fn failed(self) {
        self.limiter.failed(&self.pair);
    }
}

impl LoginLimiter {
    pub fn new(config: LimiterConfig) -> Self {
        let checks = Arc::new(tokio::sync::Semaphore::new(config.concurrent_checks.max(1)));
        Self { config, state: Mutex::default(), checks, verified: Default::default() }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits as long as this attempt must be slowed down, then lets it through.
    pub async fn admit(&self, ip: IpAddr, name: &str) -> Admission<'_> {
        let pair = (ip, name.chars().take(NAME_CHARS_KEPT).collect());
        let Some((lane, delay)) = self.slowdown(&pair) else {
            return Admission { limiter: self, pair, _lane: None, waited: Duration::ZERO };
        };
        let started = Instant::now();
        let guard = lane.lock_owned().await;
        tokio::time::sleep(delay).await;
        Admission { limiter: self, pair, _lane: Some(guard), waited: started.elapsed() }
    }

    /// `password::verify_user` in its turn: at most `concurrent_checks` at once, the others
    /// wait in order, each for `check_wait` at most. With [`Reuse::Verified`], a device user's
    /// password verified within the last day needs no turn (`auth/verified`).
    pub async fn verify_user(
        &self,
        user: Option<UserRecord>,
        password: Vec<u8>,
        reuse: Reuse,
    ) -> Result<Option<UserRecord>, TooManyLogins> {
        let reused = |u: &UserRecord| reuse == Reuse::Verified && !u.is_admin;
        if user.as_ref().is_some_and(|u| reused(u) && self.verified.knows(&u.name, &u.password_hash, &password)) {
            return Ok(user);
        }
        let Ok(turn) = tokio::time::timeout(self.config.check_wait, self.password_check_turn()).await else {
            self.refused_busy();
            return Err(TooManyLogins);
        };
        let verified = super::password::verify_user(user, password.clone(), turn).await;
        if let Some(user) = verified.as_ref().filter(|u| reused(u)) {
            self.verified.remember(&user.name, &user.password_hash, &password);
        }
        Ok(verified)
    }

    /// Counts a login refused for waiting too long, and says so now and then.
    fn refused_busy(&self) {
        let now = Instant::now();
        let mut state = self.lock();
        state.busy.0 += 1;
        if state.busy.1.is_none_or(|last| now - last >= BUSY_WARNING_EVERY) {
            tracing::warn!(
                refused = state.busy.0,
                since_the_last_warning = ?state.busy.1.map(|last| now - last),
                waited = ?self.config.check_wait,
                concurrent_checks = self.config.concurrent_checks,
                "logins waited too long for a password check and were refused as unavailable (the clients try again)"
            );
            state.busy = (0, Some(now));
        }
    }

    /// A turn to check a password (hold it for the check).
    async fn password_check_turn(&self) -> OwnedSemaphorePermit {
        Arc::clone(&self.checks).acquire_owned().await.expect("the semaphore is never closed")
    }

    /// The lane and delay for `pair`, if it must be slowed.
    fn slowdown(&self, pair: &Pair) -> Option<(Arc<tokio::sync::Mutex<()>>, Duration)> {
        let now = Instant::now();
        let window = self.config.window;
        let mut state = self.lock();
        let failures = match state.failures.get(pair) {
            Some(&(count, since)) if now - since < window => count,
            _ => 0,
        };
        let (lane, delay) = if self.config.per_name > 0 && failures >= self.config.per_name {
            let doublings = (failures - self.config.per_name).min(5);
            (Lane::Pair(pair.clone()), (FIRST_DELAY * 2u32.pow(doublings)).min(MAX_DELAY))
        } else {
            let spraying = matches!(state.total, (count, Some(since)) if count >= self.config.total && now - since < window);
            let known_good = state.succeeded.get(pair).is_some_and(|&at| now - at < KNOWN_GOOD_FOR);
            if !spraying || known_good {
                return None;
            }
            (Lane::Address(pair.0), SPRAY_DELAY)
        };
        Some((Arc::clone(state.lanes.entry(lane).or_default()), delay))
    }

    fn failed(&self, pair: &Pair) {
        let now = Instant::now();
        let window = self.config.window;
        let mut state = self.lock();
        if state.failures.len() + state.succeeded.len() + state.lanes.len() > SWEEP_ABOVE {
            state.failures.retain(|_, (_, since)| now - *since < window);
            state.succeeded.retain(|_, at| now - *at < KNOWN_GOOD_FOR);
            // A lane nobody holds or waits for is only referenced by the map.
            state.lanes.retain(|_, lane| Arc::strong_count(lane) > 1);
        }
        let entry = state.failures.entry(pair.clone()).or_insert((0, now));
        if now - entry.1 >= window {
            entry.0 = 0;
        }
        *entry = (entry.0 + 1, now);
        state.total = match state.total {
            (count, Some(since)) if now - since < window => (count + 1, Some(since)),
            _ => (1, Some(now)),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_limits(per_name: u32, total: u32) -> LoginLimiter {
        LoginLimiter::new(LimiterConfig { per_name, total, window: Duration::from_secs(60), concurrent_checks: 2, check_wait: CHECK_WAIT })
    }

    const HOME: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));

    #[tokio::test(start_paused = true)]
    async fn one_names_failures_never_hold_back_another_name_from_the_same_address() {
        let limiter = with_limits(3, 1000);
        for _ in 0..10 {
            limiter.admit(HOME, "misconfigured-board").await.failed();
        }
        let other = limiter.admit(HOME, "kitchen-board").await;
        assert_eq!(other.waited, Duration::ZERO, "another name from the same address goes straight through");
        other.succeeded();
        // The failing name itself is slowed, but its right password still gets in.
        let slowed = limiter.admit(HOME, "misconfigured-board").await;
        assert_eq!(slowed.waited, MAX_DELAY, "seven failures over the limit: the delay has reached its cap");
        slowed.succeeded();
        assert_eq!(limiter.admit(HOME, "misconfigured-board").await.waited, Duration::ZERO, "a success clears the count");
    }

    #[tokio::test(start_paused = true)]
    async fn delays_double_and_the_window_forgets() {
        let limiter = with_limits(2, 1000);
        let mut waits = Vec::new();
        for _ in 0..5 {
            let admission = limiter.admit(HOME, "alice").await;
            waits.push(admission.waited.as_secs());
            admission.failed();
        }
        assert_eq!(waits, [0, 0, 1, 2, 4]);
        tokio::time::advance(Duration::from_secs(61)).await;
        assert_eq!(limiter.admit(HOME, "alice").await.waited, Duration::ZERO);
        let unlimited = with_limits(0, 1000);
        for _ in 0..100 {
            unlimited.admit(HOME, "alice").await.failed();
        }
        assert_eq!(unlimited.admit(HOME, "alice").await.waited, Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn slowed_attempts_of_one_pair_go_one_at_a_time() {
        let limiter = Arc::new(with_limits(1, 1000));
        limiter.admit(HOME, "alice").await.failed();
        let started = Instant::now();
        let attempts: Vec<_> = (0..3)
            .map(|_| {
                let limiter = Arc::clone(&limiter);
                tokio::spawn(async move {
                    let admission = limiter.admit(HOME, "alice").await;
                    tokio::time::sleep(Duration::from_millis(10)).await; // the password check
                    drop(admission);
                })
            })
            .collect();
        for attempt in attempts {
            attempt.await.unwrap();
        }
        assert!(started.elapsed() >= 3 * FIRST_DELAY, "parallel guesses do not run in parallel: {:?}", started.elapsed());
    }

    #[tokio::test(start_paused = true)]
    async fn no_more_passwords_are_checked_at_once_than_allowed() {
        let limiter = Arc::new(with_limits(100, 1000)); // two at once
        let first = limiter.password_check_turn().await;
        let second = limiter.password_check_turn().await;
        let third = tokio::spawn({
            let limiter = Arc::clone(&limiter);
            async move {
                let _turn = limiter.password_check_turn().await;
            }
        });
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(!third.is_finished(), "a third check waits while two run");
        assert_eq!(limiter.admit(HOME, "board-4").await.waited, Duration::ZERO, "a login's admission does not wait for a turn");
        drop(first);
        third.await.unwrap();
        drop(second);
    }

    /// A login that waited `check_wait` for a turn is refused, its password unchecked; one
    /// whose turn comes in time is checked as before.
    #[tokio::test(start_paused = true)]
    async fn a_login_that_waits_too_long_for_a_check_is_refused_unchecked() {
        let limiter = Arc::new(with_limits(100, 1000)); // two at once
        let turns = (limiter.password_check_turn().await, limiter.password_check_turn().await);
        let started = Instant::now();
        assert_eq!(limiter.verify_user(None, b"guess".to_vec(), Reuse::Verified).await, Err(TooManyLogins));
        assert_eq!(started.elapsed(), CHECK_WAIT, "refused after waiting `check_wait`");
        assert_eq!(limiter.lock().busy.0, 0, "said in the log at once (and counted from there)");
        assert_eq!(limiter.verify_user(None, b"guess".to_vec(), Reuse::Verified).await, Err(TooManyLogins));
        assert_eq!(limiter.lock().busy.0, 1, "the next refusal within ten seconds is counted, not said");
        // A turn that comes within the wait: the password is checked (an unknown user: refused).
        let waiting = tokio::spawn({
            let limiter = Arc::clone(&limiter);
            async move { limiter.verify_user(None, b"guess".to_vec(), Reuse::Verified).await }
        });
        tokio::time::sleep(CHECK_WAIT / 2).await;
        drop(turns);
        assert_eq!(waiting.await.unwrap(), Ok(None));
    }

    fn user(name: &str, password_hash: String, is_admin: bool) -> UserRecord {
        UserRecord { name: name.into(), password_hash, is_admin, grants: Vec::new(), created_at: crate::model::TimestampMs(0) }
    }

    /// A device user's password verified once over MQTT is let in again without a turn (here,
    /// with both turns held), until the password changes; a wrong one, a failed one, an
    /// admin's and the dashboard's still wait for a check.
    #[tokio::test(start_paused = true)]
    async fn a_device_password_verified_lately_needs_no_turn() {
        let limiter = with_limits(100, 1000);
        let board = user("board", crate::auth::password::hash("board-secret".into()).await.unwrap(), false);
        let admin = user("admin", crate::auth::password::hash("admin-secret".into()).await.unwrap(), true);
        let check = |u: &UserRecord, password: &str, reuse| limiter.verify_user(Some(u.clone()), password.as_bytes().to_vec(), reuse);
        assert_eq!(check(&board, "board-secret", Reuse::Verified).await, Ok(Some(board.clone())));
        assert_eq!(check(&board, "wrong", Reuse::Verified).await, Ok(None), "checked and refused");
        assert_eq!(check(&admin, "admin-secret", Reuse::Verified).await, Ok(Some(admin.clone())));
        let _turns = (limiter.password_check_turn().await, limiter.password_check_turn().await);
        let started = Instant::now();
        assert_eq!(check(&board, "board-secret", Reuse::Verified).await, Ok(Some(board.clone())));
        assert_eq!(started.elapsed(), Duration::ZERO, "no turn taken");
        assert_eq!(check(&board, "wrong", Reuse::Verified).await, Err(TooManyLogins), "a refused password is not remembered");
        assert_eq!(check(&board, "board-secret", Reuse::Never).await, Err(TooManyLogins), "the dashboard checks every time");
        assert_eq!(check(&admin, "admin-secret", Reuse::Verified).await, Err(TooManyLogins), "an admin's is not remembered");
        let changed = user("board", crate::auth::password::hash("board-secret".into()).await.unwrap(), false);
        assert_eq!(check(&changed, "board-secret", Reuse::Verified).await, Err(TooManyLogins), "a new password hash is checked");
        let removed = limiter.verify_user(None, b"board-secret".to_vec(), Reuse::Verified).await;
        assert_eq!(removed, Err(TooManyLogins), "a removed user is checked (and refused)");
    }

    #[tokio::test]
    async fn a_long_user_name_is_kept_short() {
        let limiter = with_limits(3, 1000);
        // In real time: an attempt nothing slows has waited for nothing (the log says so).
        assert_eq!(limiter.admit(HOME, "fresh-board").await.waited, Duration::ZERO);
        limiter.admit(HOME, &"x".repeat(65_535)).await.failed();
        let state = limiter.lock();
        assert!(state.failures.keys().all(|(_, name)| name.chars().count() == NAME_CHARS_KEPT));
    }

    #[tokio::test(start_paused = true)]
    async fn spraying_slows_everyone_without_a_recent_success() {
        let limiter = with_limits(100, 5);
        let regular: IpAddr = "198.51.100.7".parse().unwrap();
        limiter.admit(regular, "bob").await.succeeded();
        for n in 0..5 {
            limiter.admit(format!("203.0.113.{n}").parse().unwrap(), &format!("user{n}")).await.failed();
        }
        assert_eq!(limiter.admit("203.0.113.99".parse().unwrap(), "carol").await.waited, SPRAY_DELAY);
        assert_eq!(limiter.admit(regular, "bob").await.waited, Duration::ZERO, "a pair that logged in lately is not slowed");
    }
}

//! Whether a writer is keeping the promise "acknowledged means stored" right now: are its
//! commits failing (since when, and why), and how long has the oldest record in its hands
//! waited? One for ingest, one for the broker's state. Read by `/healthz`, `/metrics` and the
//! dashboard; written by the writer, once per batch.

use crate::store::Failure;
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// Records waiting longer than this for their commit make ingest unhealthy.
pub const MAX_HEALTHY_WAIT: Duration = Duration::from_secs(5);

#[derive(Debug, Default)]
pub struct CommitHealth {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Set by the first failed commit of an episode, cleared by the next success.
    failing_since: Option<Instant>,
    last_failure: Option<(Failure, String)>,
    /// When the oldest record of each batch being written was queued; empty while idle.
    writing: Vec<Instant>,
}

/// A snapshot of [`CommitHealth`].
#[derive(Debug, Clone, PartialEq)]
pub struct HealthReport {
    /// How long commits have been failing, and the last failure with its message.
    pub failing: Option<(Duration, Failure, String)>,
    /// How long the oldest record the writer holds has waited; `None` while idle.
    pub oldest_wait: Option<Duration>,
}

impl HealthReport {
    /// What is wrong, in words, or `None` when the writer is healthy.
    pub fn problem(&self) -> Option<String> {
        if let Some((failing_for, failure, message)) = &self.failing {
            return Some(format!("commits failing for {} s: {failure} ({message})", failing_for.as_secs()));
        }
        match self.oldest_wait {
            Some(wait) if wait > MAX_HEALTHY_WAIT => {
                Some(format!("records have waited {} s for their commit: the database is slow", wait.as_secs()))
            }
            _ => None,
        }
    }
}

impl CommitHealth {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn report(&self) -> HealthReport {
        let state = self.lock();
        let now = Instant::now();
        HealthReport {
            failing: state.failing_since.zip(state.last_failure.clone()).map(|(since, (f, m))| (now - since, f, m)),
            oldest_wait: state.writing.iter().min().map(|since| now - *since),
        }
    }

    /// The writer took a batch whose oldest record was queued at `oldest`.
    pub fn writing(&self, oldest: Instant) {
        self.lock().writing.push(oldest);
    }

    /// The batch [`writing`](Self::writing) announced with `oldest` is settled (or given up).
    pub fn settled(&self, oldest: Instant) {
        let mut state = self.lock();
        if let Some(i) = state.writing.iter().position(|t| *t == oldest) {
            state.writing.swap_remove(i);
        }
    }

    /// Records a failed commit. Returns true for the first failure of an episode (the one to
    /// log in words).
    pub fn commit_failed(&self, failure: Failure, message: String) -> bool {
        let mut state = self.lock();
        state.last_failure = Some((failure, message));
        let first = state.failing_since.is_none();
        state.failing_since.get_or_insert_with(Instant::now);
        first
    }

    /// Records a successful commit. Returns how long commits had been failing, if they had.
    pub fn committed(&self) -> Option<Duration> {
        let mut state = self.lock();
        state.last_failure = None;
        state.failing_since.take().map(|since| since.elapsed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_failure_episode_is_reported_until_a_commit_succeeds() {
        let health = CommitHealth::default();
        assert_eq!(health.report().problem(), None);
        assert!(health.commit_failed(Failure::DiskFull, "database or disk is full".into()), "the first failure starts an episode");
        tokio::time::advance(Duration::from_secs(12)).await;
        assert!(!health.commit_failed(Failure::DiskFull, "database or disk is full".into()), "later ones do not");
        assert_eq!(health.report().problem().unwrap(), "commits failing for 12 s: disk full (database or disk is full)");
        assert_eq!(health.committed(), Some(Duration::from_secs(12)));
        assert_eq!(health.report().problem(), None);
        assert_eq!(health.committed(), None, "a success outside an episode ends nothing");
    }

    #[tokio::test(start_paused = true)]
    async fn records_waiting_too_long_are_a_problem_even_without_failures() {
        let health = CommitHealth::default();
        let oldest = Instant::now();
        health.writing(oldest);
        tokio::time::advance(MAX_HEALTHY_WAIT).await;
        assert_eq!(health.report().problem(), None);
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(health.report().problem().unwrap().starts_with("records have waited 7 s"));
        health.settled(oldest);
        assert_eq!(health.report(), HealthReport { failing: None, oldest_wait: None });
    }
}

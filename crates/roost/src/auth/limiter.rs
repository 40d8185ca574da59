//! Failed logins per IP address (MQTT CONNECT and the dashboard alike): past the limit within a
//! window, further attempts from that address are refused without checking the password until
//! the window has passed. Guessing passwords gets slow; everyone else is unaffected.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long failures are remembered.
pub const WINDOW: Duration = Duration::from_secs(60);

#[derive(Debug)]
pub struct LoginLimiter {
    /// Failures allowed per address per window; 0: no limit.
    max_failures: u32,
    failures: Mutex<HashMap<IpAddr, (u32, Instant)>>,
}

impl LoginLimiter {
    pub fn new(max_failures: u32) -> Self {
        Self { max_failures, failures: Mutex::default() }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, (u32, Instant)>> {
        self.failures.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `Err(wait)` while `ip` is over the limit.
    pub fn check(&self, ip: IpAddr) -> Result<(), Duration> {
        if self.max_failures == 0 {
            return Ok(());
        }
        let now = Instant::now();
        let mut failures = self.lock();
        match failures.get(&ip) {
            Some(&(count, since)) if now.duration_since(since) < WINDOW => {
                if count >= self.max_failures {
                    return Err(WINDOW - now.duration_since(since));
                }
                Ok(())
            }
            Some(_) => {
                failures.remove(&ip);
                Ok(())
            }
            None => Ok(()),
        }
    }

    pub fn failed(&self, ip: IpAddr) {
        if self.max_failures == 0 {
            return;
        }
        let now = Instant::now();
        let mut failures = self.lock();
        // Forget old windows now and then, so the map stays small.
        if failures.len() > 10_000 {
            failures.retain(|_, (_, since)| now.duration_since(*since) < WINDOW);
        }
        let entry = failures.entry(ip).or_insert((0, now));
        if now.duration_since(entry.1) >= WINDOW {
            *entry = (0, now);
        }
        entry.0 += 1;
    }

    pub fn succeeded(&self, ip: IpAddr) {
        self.lock().remove(&ip);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_is_held_back_after_too_many_failures_and_others_are_not() {
        let limiter = LoginLimiter::new(3);
        let (a, b): (IpAddr, IpAddr) = ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        for _ in 0..3 {
            assert!(limiter.check(a).is_ok());
            limiter.failed(a);
        }
        let wait = limiter.check(a).unwrap_err();
        assert!(wait <= WINDOW && wait > WINDOW - Duration::from_secs(5));
        assert!(limiter.check(b).is_ok());
        limiter.succeeded(a);
        assert!(limiter.check(a).is_ok(), "a success clears the count");
        let unlimited = LoginLimiter::new(0);
        for _ in 0..100 {
            unlimited.failed(a);
        }
        assert!(unlimited.check(a).is_ok());
    }
}

//! "Logged once": which mistakes were already named in the log, so that a board repeating one
//! every few seconds shows up once, not every time. Bounded: past its limit the memory starts
//! over, and each mistake is named once more.

use std::collections::HashSet;
use std::hash::Hash;
use std::sync::Mutex;

pub struct LogOnce<K> {
    seen: Mutex<HashSet<K>>,
    limit: usize,
}

impl<K: Eq + Hash> LogOnce<K> {
    /// Remembers up to `limit` keys.
    pub fn new(limit: usize) -> Self {
        Self { seen: Mutex::default(), limit }
    }

    /// Whether `key` is new: log it now.
    pub fn first(&self, key: K) -> bool {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if seen.len() >= self.limit {
            seen.clear();
        }
        seen.insert(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_key_is_first_once_until_the_memory_starts_over() {
        let once = LogOnce::new(2);
        assert!(once.first("a") && !once.first("a"));
        assert!(once.first("b"), "the memory is full now");
        assert!(once.first("c"), "a new key after that starts it over");
        assert!(!once.first("c"));
        assert!(once.first("a"), "forgotten when it started over");
    }
}

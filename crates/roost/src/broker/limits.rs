//! Open connections per IP address: a permit per connection, given back when it ends.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

#[derive(Debug, Default)]
pub struct ConnectionsPerIp {
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// Held by a connection's task; dropping it frees the slot.
#[derive(Debug)]
pub struct Permit {
    limits: Arc<ConnectionsPerIp>,
    ip: IpAddr,
}

impl ConnectionsPerIp {
    /// A permit for one more connection from `ip`, unless `max` are open (0: no limit).
    pub fn acquire(self: &Arc<Self>, ip: IpAddr, max: usize) -> Option<Permit> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let count = open.entry(ip).or_insert(0);
        if max != 0 && *count >= max {
            return None;
        }
        *count += 1;
        Some(Permit { limits: Arc::clone(self), ip })
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut open = self.limits.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = open.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permits_are_counted_per_address_and_given_back() {
        let limits = Arc::new(ConnectionsPerIp::default());
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let first = limits.acquire(a, 2).unwrap();
        let _second = limits.acquire(a, 2).unwrap();
        assert!(limits.acquire(a, 2).is_none(), "the third from one address is refused");
        assert!(limits.acquire(b, 2).is_some(), "other addresses are not affected");
        drop(first);
        assert!(limits.acquire(a, 2).is_some(), "a closed connection frees its slot");
        assert!(limits.acquire(a, 0).is_some(), "0 means no limit");
    }
}

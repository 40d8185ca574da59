//! Jobs that must run on one node at a time (the alert engine, Home Assistant discovery, the
//! purge) take a lease in the database (`leases`: name, holder, expiry). A holder renews its
//! lease every [`RENEW`]; a lease not renewed for [`TTL`] (its node died or lost the database)
//! is taken over by the next node that asks. Expiries are the nodes' clocks: keep them in sync
//! (NTP) to well within the TTL. With one node, it always holds every lease.

use crate::model::TimestampMs;
use crate::store::Store;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// How long a lease lasts without renewal.
pub const TTL: Duration = Duration::from_secs(30);
/// How often a holder renews it.
pub const RENEW: Duration = Duration::from_secs(10);
/// How often a node waiting for a lease asks for it: a lease given up at shutdown is taken
/// over within this time, one that expired within this time after its expiry.
pub const STANDBY_POLL: Duration = Duration::from_secs(2);

/// Runs `job` while this node (`holder`) holds the lease `name`: waits for the lease, runs the
/// job with a token that is cancelled if the lease is lost (or at `stop`), and waits again
/// after. At `stop` the lease is given up, so another node takes it at once.
pub async fn run_while_held<F, Fut>(store: Arc<Store>, name: &'static str, holder: Arc<str>, stop: CancellationToken, mut job: F)
where
    F: FnMut(CancellationToken) -> Fut,
    Fut: Future<Output = ()>,
{
    let mut waiting_logged = false;
    loop {
        let asked = tokio::time::Instant::now();
        match store.acquire_lease(name, &holder, TimestampMs::now().0, TTL.as_millis() as i64).await {
            Ok(true) => {}
            Ok(false) => {
                if !waiting_logged {
                    info!(lease = name, "another node runs this job; standing by");
                    waiting_logged = true;
                }
                if sleep_or_stop(STANDBY_POLL, &stop).await {
                    return;
                }
                continue;
            }
            Err(e) => {
                warn!(lease = name, error = %e, "could not ask the database for a lease; retrying");
                if sleep_or_stop(RENEW, &stop).await {
                    return;
                }
                continue;
            }
        }
        info!(lease = name, node = %holder, "running this job here (lease taken)");
        waiting_logged = false;
        let mut held_until = asked + TTL;
        let token = stop.child_token();
        let running = job(token.clone());
        tokio::pin!(running);
        let mut renew = tokio::time::interval(RENEW);
        renew.tick().await;
        let lost = loop {
            tokio::select! {
                _ = &mut running => break false,
                _ = renew.tick() => {
                    // The expiry the database stores counts from before the request.
                    let asked = tokio::time::Instant::now();
                    match store.acquire_lease(name, &holder, TimestampMs::now().0, TTL.as_millis() as i64).await {
                        Ok(true) => held_until = asked + TTL,
                        Ok(false) => break true,
                        // The database is away: the lease still holds until it expires.
                        Err(e) if tokio::time::Instant::now() + RENEW < held_until => {
                            warn!(lease = name, error = %e, "could not renew a lease; trying again");
                        }
                        Err(e) => {
                            warn!(lease = name, error = %e, "could not renew a lease before it expires");
                            break true;
                        }
                    }
                }
            }
        };
        if lost {
            warn!(lease = name, "lease lost (another node may take this job over); stopping it here");
            token.cancel();
            running.await;
            continue;
        }
        // The job ended: shutdown.
        if let Err(e) = store.release_lease(name, &holder).await {
            warn!(lease = name, error = %e, "could not give the lease up; another node takes it when it expires");
        }
        return;
    }
}

/// Takes (or keeps) the lease `name` for `ttl` without renewing it: whether this node should
/// run a periodic job's next turn. The node that ran a turn keeps the turns while it lives.
pub async fn take_turn(store: &Store, name: &str, holder: &str, ttl: Duration) -> bool {
    match store.acquire_lease(name, holder, TimestampMs::now().0, ttl.as_millis() as i64).await {
        Ok(taken) => taken,
        Err(e) => {
            warn!(lease = name, error = %e, "could not ask the database for a turn; skipping this one");
            false
        }
    }
}

/// Sleeps `d`; true if `stop` came first.
async fn sleep_or_stop(d: Duration, stop: &CancellationToken) -> bool {
    tokio::select! {
        _ = stop.cancelled() => true,
        _ = tokio::time::sleep(d) => false,
    }
}

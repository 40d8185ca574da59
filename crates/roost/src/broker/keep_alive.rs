//! The broker's clock work for its sessions: keep-alive expiry [MQTT-3.1.2-24] by one sweep
//! over the online sessions, instead of a timer in every connection (a timer is about a tenth
//! of what an idle connection costs), session expiry of offline persistent sessions in the same
//! sweep, and closing every session at shutdown.

use super::Broker;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::debug;

/// How often keep-alive deadlines are checked: a silent client is disconnected between 1.5
/// times its keep-alive and that plus this. A sweep holds the session registry's lock for
/// about 60 ns per online session (0.9 ms at 15,000; BENCHMARKS.md).
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// Runs until `shutdown`: disconnects clients not heard from within 1.5 times their
/// keep-alive; then tells every connected session to end, and refuses new ones.
pub async fn supervise_sessions(broker: Arc<Broker>, shutdown: CancellationToken) {
    let mut sweep = tokio::time::interval(SWEEP_INTERVAL);
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = sweep.tick() => {
                let expired = broker.sessions.expire_silent(broker.clock_ms());
                if expired > 0 {
                    debug!(expired, "keep-alive expired");
                }
                let now = super::sessions::unix_ms();
                let gone = broker.sessions.expire_offline(now, broker.config.session_expiry, &broker.router, &broker.durable);
                broker.stats.sessions_expired.fetch_add(gone as u64, std::sync::atomic::Ordering::Relaxed);
            }
        }
    }
    broker.sessions.close_all();
}

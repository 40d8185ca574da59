//! Health, statistics and Prometheus metrics.

use super::{ApiError, ApiState};
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use serde_json::{json, Value};
use std::fmt::Write;

/// 200 `{"status":"ok"}` while readings are being committed; 503 with the reason while
/// commits fail, records wait too long for theirs, or the database does not answer.
pub async fn healthz(State(state): State<ApiState>) -> impl IntoResponse {
    if let Some(problem) = state.ingest.health.report().problem() {
        return (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "status": "degraded", "ingest": problem })));
    }
    match state.store.ping().await {
        Ok(()) => (StatusCode::OK, Json(json!({ "status": "ok" }))),
        Err(e) => {
            tracing::warn!(error = %e, "health check: database unreachable");
            (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "status": "degraded", "database": "unreachable" })))
        }
    }
}

pub async fn stats(
    State(state): State<ApiState>,
    axum::Extension(viewer): axum::Extension<super::auth::Viewer>,
) -> Result<Json<Value>, ApiError> {
    viewer.require_admin()?;
    let broker = state.broker.stats();
    let (retained, sessions) = (state.broker.retained_count(), state.broker.persistent_counts());
    let ingest = state.ingest.snapshot();
    let (sensors, readings, rejects) = state.store.counts().await?;
    Ok(Json(json!({
        "broker": {
            "clients_connected": broker.clients_connected,
            "messages_received": broker.messages_received,
            "messages_sent": broker.messages_sent,
            "dropped_qos0": broker.dropped_qos0,
            "dropped_offline": broker.dropped_offline,
            "overflow_disconnects": broker.overflow_disconnects,
            "protocol_errors": broker.protocol_errors,
            "publishes_denied": broker.publishes_denied,
            "subscriptions_denied": broker.subscriptions_denied,
            "connections_refused": broker.connections_refused,
            "connections_over_limit": broker.connections_over_limit,
            "retained_refused": broker.retained_refused,
            "sessions_expired": broker.sessions_expired,
            "retained_messages": retained.0,
            "retained_bytes": retained.1,
            "persistent_sessions_online": sessions.online,
            "persistent_sessions_offline": sessions.offline,
            "persistent_queued": sessions.queued,
        },
        "ingest": {
            "readings_committed": ingest.readings_committed,
            "rejects_committed": ingest.rejects_committed,
            "batches": ingest.batches,
            "last_batch_size": ingest.last_batch_size,
            "failed_commits": ingest.failed_commits,
            "refused_by_database": ingest.refused,
            "problem": state.ingest.health.report().problem(),
        },
        "database": { "sensors": sensors, "readings": readings, "rejects": rejects },
    })))
}

/// Prometheus text exposition format 0.0.4.
pub async fn metrics(
    State(state): State<ApiState>,
    axum::Extension(viewer): axum::Extension<super::auth::Viewer>,
) -> Result<impl IntoResponse, ApiError> {
    viewer.require_admin()?;
    let b = state.broker.stats();
    let i = state.ingest.snapshot();
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, samples: &[(&str, u64)]| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, value) in samples {
            let _ = writeln!(out, "{name}{labels} {value}");
        }
    };
    metric("roost_clients_connected", "gauge", "MQTT clients connected now.", &[("", b.clients_connected)]);
    metric("roost_messages_received_total", "counter", "PUBLISH packets received from clients.", &[("", b.messages_received)]);
    metric("roost_messages_sent_total", "counter", "PUBLISH packets sent to clients.", &[("", b.messages_sent)]);
    metric(
        "roost_messages_dropped_total",
        "counter",
        "Messages dropped by a full per-client queue.",
        &[("{reason=\"qos0_queue_full\"}", b.dropped_qos0), ("{reason=\"offline_queue_full\"}", b.dropped_offline)],
    );
    metric(
        "roost_overflow_disconnects_total",
        "counter",
        "Clients disconnected because their QoS 1/2 queue overflowed.",
        &[("", b.overflow_disconnects)],
    );
    metric(
        "roost_protocol_errors_total",
        "counter",
        "Connections closed for malformed packets or protocol violations.",
        &[("", b.protocol_errors)],
    );
    metric(
        "roost_publishes_denied_total",
        "counter",
        "Publishes refused by the ACL: acknowledged, neither stored nor delivered.",
        &[("", b.publishes_denied)],
    );
    metric(
        "roost_subscriptions_denied_total",
        "counter",
        "Subscriptions refused by the ACL (SUBACK 0x80).",
        &[("", b.subscriptions_denied)],
    );
    metric(
        "roost_connections_refused_total",
        "counter",
        "CONNECTs refused for missing or wrong credentials.",
        &[("", b.connections_refused)],
    );
    metric(
        "roost_connections_over_limit_total",
        "counter",
        "Connections closed because their address had too many open.",
        &[("", b.connections_over_limit)],
    );
    let (retained, retained_bytes) = state.broker.retained_count();
    metric("roost_retained_messages", "gauge", "Retained messages kept (and stored).", &[("", retained as u64)]);
    metric("roost_retained_bytes", "gauge", "Payload bytes of the retained messages.", &[("", retained_bytes as u64)]);
    metric(
        "roost_retained_refused_total",
        "counter",
        "Retained publishes refused by --max-retained / --max-retained-bytes (delivered, not retained).",
        &[("", b.retained_refused)],
    );
    let sessions = state.broker.persistent_counts();
    metric(
        "roost_persistent_sessions",
        "gauge",
        "Persistent sessions (clean session 0), by state.",
        &[("{state=\"online\"}", sessions.online as u64), ("{state=\"offline\"}", sessions.offline as u64)],
    );
    metric(
        "roost_persistent_queued_messages",
        "gauge",
        "QoS 1/2 messages waiting for persistent sessions.",
        &[("", sessions.queued as u64)],
    );
    metric("roost_sessions_expired_total", "counter", "Persistent sessions removed by --session-expiry.", &[("", b.sessions_expired)]);
    metric("roost_readings_committed_total", "counter", "Readings committed to the database.", &[("", i.readings_committed)]);
    metric("roost_rejects_total", "counter", "Publishes rejected and quarantined.", &[("", i.rejects_committed)]);
    metric("roost_ingest_batches_total", "counter", "Transactions committed by the ingest writer.", &[("", i.batches)]);
    metric("roost_ingest_last_batch_size", "gauge", "Records in the most recent committed batch.", &[("", i.last_batch_size)]);
    metric("roost_ingest_failed_commits_total", "counter", "Commits that failed and were retried.", &[("", i.failed_commits)]);
    metric("roost_ingest_refused_total", "counter", "Readings the database refused, stored as rejects instead.", &[("", i.refused)]);
    let health = state.ingest.health.report();
    metric(
        "roost_ingest_healthy",
        "gauge",
        "1 while readings are committed in time (what /healthz says), else 0.",
        &[("", health.problem().is_none() as u64)],
    );
    let failing = health.failing.as_ref().map(|(since, failure, _)| (since.as_secs(), failure.as_str()));
    metric(
        "roost_ingest_failing_seconds",
        "gauge",
        "How long commits have been failing; 0 while they succeed.",
        &[("", failing.map_or(0, |f| f.0))],
    );
    let kind = failing.map(|f| format!("{{kind=\"{}\"}}", f.1));
    metric(
        "roost_ingest_failure_info",
        "gauge",
        "The kind of the failure while commits fail (disk_full, busy, unreachable, other).",
        &kind.as_deref().map(|k| vec![(k, 1)]).unwrap_or_default(),
    );
    metric(
        "roost_ingest_oldest_wait_seconds",
        "gauge",
        "How long the oldest record being written has waited.",
        &[("", health.oldest_wait.map_or(0, |w| w.as_secs()))],
    );
    let _ = writeln!(
        out,
        "# HELP roost_ingest_commit_seconds_total Time spent committing batches.\n# TYPE roost_ingest_commit_seconds_total counter\nroost_ingest_commit_seconds_total {}",
        i.commit_micros_total as f64 / 1e6
    );
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], out))
}

//! Health, statistics and Prometheus metrics.

use super::{ApiError, ApiState};
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use serde_json::{json, Value};
use std::fmt::Write;

/// 200 `{"status":"ok"}` while readings and the broker's state are being committed; 503 with
/// the reason while commits fail, records wait too long for theirs, or the database does not
/// answer.
pub async fn healthz(State(state): State<ApiState>) -> impl IntoResponse {
    if let Some(problem) = state.ingest.health.report().problem() {
        return (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "status": "degraded", "ingest": problem })));
    }
    if let Some(problem) = state.broker_state.report().problem() {
        return (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "status": "degraded", "broker_state": problem })));
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
    let broker: serde_json::Map<String, Value> = state.broker.metrics().into_iter().map(|m| (m.key.to_owned(), json!(m.value))).collect();
    let ingest = state.ingest.snapshot();
    let (sensors, readings, rejects) = state.store.counts().await?;
    let lifecycle = state.lifecycle.lock().unwrap_or_else(|e| e.into_inner()).clone();
    Ok(Json(json!({
        "broker": broker,
        "ingest": {
            "readings_committed": ingest.readings_committed,
            "rejects_committed": ingest.rejects_committed,
            "batches": ingest.batches,
            "last_batch_size": ingest.last_batch_size,
            "failed_commits": ingest.failed_commits,
            "refused_by_database": ingest.refused,
            "problem": state.ingest.health.report().problem(),
        },
        "broker_state": { "problem": state.broker_state.report().problem() },
        "database": { "sensors": sensors, "readings": readings, "rejects": rejects },
        "lifecycle": lifecycle,
    })))
}

/// Prometheus text exposition format 0.0.4.
pub async fn metrics(
    State(state): State<ApiState>,
    axum::Extension(viewer): axum::Extension<super::auth::Viewer>,
) -> Result<impl IntoResponse, ApiError> {
    viewer.require_admin()?;
    let i = state.ingest.snapshot();
    let mut out = String::new();
    let broker = state.broker.metrics();
    for (i, m) in broker.iter().enumerate() {
        // One HELP and TYPE per name, then its samples (several when they differ in labels).
        if i == 0 || broker[i - 1].name != m.name {
            let kind = if m.gauge { "gauge" } else { "counter" };
            let _ = writeln!(out, "# HELP {} {}\n# TYPE {} {kind}", m.name, m.help, m.name);
        }
        let _ = writeln!(out, "{}{} {}", m.name, m.labels, m.value);
    }
    let mut metric = |name: &str, kind: &str, help: &str, samples: &[(&str, u64)]| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, value) in samples {
            let _ = writeln!(out, "{name}{labels} {value}");
        }
    };
    metric("roost_readings_committed_total", "counter", "Readings committed to the database.", &[("", i.readings_committed)]);
    metric("roost_rejects_total", "counter", "Publishes rejected and quarantined.", &[("", i.rejects_committed)]);
    metric("roost_ingest_batches_total", "counter", "Transactions committed by the ingest writer.", &[("", i.batches)]);
    metric("roost_ingest_last_batch_size", "gauge", "Records in the most recent committed batch.", &[("", i.last_batch_size)]);
    metric("roost_ingest_failed_commits_total", "counter", "Commits that failed and were retried.", &[("", i.failed_commits)]);
    metric("roost_ingest_refused_total", "counter", "Readings the database refused, stored as rejects instead.", &[("", i.refused)]);
    let lifecycle = state.lifecycle.lock().unwrap_or_else(|e| e.into_inner()).clone();
    if let Some(size) = &lifecycle.size {
        metric(
            "roost_database_bytes",
            "gauge",
            "Bytes the database takes (measured every 10 minutes and after each purge).",
            &[("", size.bytes)],
        );
        let rows: Vec<(String, u64)> = size.rows.iter().map(|(table, n)| (format!("{{table=\"{table}\"}}"), *n as u64)).collect();
        let rows: Vec<(&str, u64)> = rows.iter().map(|(labels, n)| (labels.as_str(), *n)).collect();
        metric("roost_database_rows", "gauge", "Rows per table (measured every 10 minutes and after each purge).", &rows);
        if let Some(oldest) = size.oldest_reading_ms {
            metric(
                "roost_oldest_reading_timestamp_seconds",
                "gauge",
                "Time of the oldest raw reading kept.",
                &[("", (oldest / 1000).max(0) as u64)],
            );
        }
    }
    if let Some(disk) = lifecycle.disk {
        metric(
            "roost_disk_free_bytes",
            "gauge",
            "Free space on the database's disk (SQLite; else the data directory's).",
            &[("", disk.free_bytes)],
        );
        metric("roost_disk_size_bytes", "gauge", "Size of the database's disk.", &[("", disk.total_bytes)]);
        metric("roost_disk_low", "gauge", "1 while free space is below --low-disk-percent, else 0.", &[("", lifecycle.disk_low as u64)]);
    }
    metric("roost_purged_rows_total", "counter", "Rows deleted by retention purges since start.", &[("", lifecycle.purged_rows)]);
    let alerts = state.store.alert_states().await?;
    let count = |status| alerts.iter().filter(|(_, _, s)| s.status == status).count() as u64;
    let (pending, firing) = (count(crate::model::AlertStatus::Pending), count(crate::model::AlertStatus::Firing));
    metric(
        "roost_alerts",
        "gauge",
        "Alerts per state (one per rule and sensor).",
        &[("{state=\"pending\"}", pending), ("{state=\"firing\"}", firing)],
    );
    let hooks = &state.webhooks;
    metric(
        "roost_webhook_deliveries_total",
        "counter",
        "Alert notices a webhook took (HTTP 2xx).",
        &[("", hooks.delivered.load(std::sync::atomic::Ordering::Relaxed))],
    );
    metric(
        "roost_webhook_failed_attempts_total",
        "counter",
        "Webhook attempts that failed (and were retried).",
        &[("", hooks.failed_attempts.load(std::sync::atomic::Ordering::Relaxed))],
    );
    metric(
        "roost_webhook_dropped_total",
        "counter",
        "Alert notices given up: every attempt failed, or the URL's queue was full.",
        &[("", hooks.given_up.load(std::sync::atomic::Ordering::Relaxed))],
    );
    let up = &state.upstream;
    let load = |counter: &std::sync::atomic::AtomicU64| counter.load(std::sync::atomic::Ordering::Relaxed);
    metric(
        "roost_upstream_connected",
        "gauge",
        "1 while connected to the --upstream broker, else 0 (also 0 without --upstream).",
        &[("", up.connected.load(std::sync::atomic::Ordering::Relaxed) as u64)],
    );
    metric("roost_upstream_received_total", "counter", "Messages received from the upstream broker.", &[("", load(&up.received))]);
    metric(
        "roost_upstream_acknowledged_total",
        "counter",
        "Upstream messages acknowledged once their reading was committed.",
        &[("", load(&up.acknowledged))],
    );
    metric(
        "roost_upstream_redelivered_total",
        "counter",
        "Upstream messages marked DUP (sent again, e.g. after a crash or a lost connection).",
        &[("", load(&up.redelivered))],
    );
    metric(
        "roost_upstream_duplicates_total",
        "counter",
        "Upstream messages sent again that were recognised as already stored (acknowledged, not stored twice).",
        &[("", load(&up.duplicates))],
    );
    metric(
        "roost_upstream_reconnects_total",
        "counter",
        "Connections to the upstream broker after the first.",
        &[("", load(&up.reconnects))],
    );
    let broker_state = state.broker_state.report();
    metric(
        "roost_broker_state_healthy",
        "gauge",
        "1 while the broker's state (retained messages, persistent sessions) is committed in time, else 0.",
        &[("", broker_state.problem().is_none() as u64)],
    );
    metric(
        "roost_broker_state_failing_seconds",
        "gauge",
        "How long the broker state's commits have been failing; 0 while they succeed.",
        &[("", broker_state.failing.as_ref().map_or(0, |f| f.0.as_secs()))],
    );
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

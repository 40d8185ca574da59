//! Persistent MQTT sessions (admins): who has one, online or not, how much waits for it, when
//! it expires; and dropping one with its queue.

use super::auth::Viewer;
use super::params::{rfc3339, ApiPath};
use super::{ApiError, ApiState};
use crate::model::TimestampMs;
use axum::extract::State;
use axum::{Extension, Json};
use serde_json::{json, Value};

pub async fn list(State(state): State<ApiState>, Extension(viewer): Extension<Viewer>) -> Result<Json<Value>, ApiError> {
    viewer.require_admin()?;
    let expiry_ms = state.broker.config().session_expiry.as_millis() as i64;
    let sessions: Vec<Value> = state
        .broker
        .persistent_sessions()
        .into_iter()
        .map(|s| {
            let expires = s.offline_since_ms.map(|since| TimestampMs(since.saturating_add(expiry_ms)));
            json!({
                "client_id": s.client_id, "user": s.username, "online": s.online,
                "queued": s.queued, "subscriptions": s.subscriptions,
                "offline_since_ms": s.offline_since_ms, "offline_since": s.offline_since_ms.map(|t| rfc3339(TimestampMs(t))),
                "expires_at_ms": expires.map(|e| e.0), "expires_at": expires.map(rfc3339),
            })
        })
        .collect();
    Ok(Json(json!(sessions)))
}

/// Drops a persistent session and its queued messages; an online one is disconnected first.
pub async fn drop_session(
    State(state): State<ApiState>,
    Extension(viewer): Extension<Viewer>,
    ApiPath(client_id): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    viewer.require_admin()?;
    if !state.broker.drop_session(&client_id) {
        return Err(ApiError::NotFound(format!("no persistent session {client_id:?}")));
    }
    Ok(Json(json!({ "dropped": client_id })))
}

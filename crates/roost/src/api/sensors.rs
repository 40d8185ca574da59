//! Sensors, their readings (raw or downsampled), CSV export and rejects.

use super::auth::Viewer;
use super::params::{given, rfc3339, time_range, ApiQuery};
use super::{ApiError, ApiState};
use crate::model::{SensorKey, TimestampMs};
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// Most raw readings one JSON request returns; larger ranges ask for buckets or the CSV export.
const MAX_RAW: i64 = 100_000;
/// Most buckets one request may ask for.
const MAX_BUCKETS: u32 = 10_000;
const MAX_REJECTS: i64 = 1_000;

#[derive(Debug, Serialize)]
pub struct SensorJson {
    owner: String,
    place: String,
    category: String,
    last_value: Option<f64>,
    /// Epoch milliseconds, UTC.
    last_seen_ms: Option<i64>,
    /// RFC 3339, UTC.
    last_seen: Option<String>,
}

pub async fn list(State(state): State<ApiState>, Extension(viewer): Extension<Viewer>) -> Result<Json<Vec<SensorJson>>, ApiError> {
    let sensors = state.store.sensors().await?;
    Ok(Json(
        sensors
            .into_iter()
            .filter(|s| viewer.may_see(&s.key.owner))
            .map(|s| SensorJson {
                owner: s.key.owner,
                place: s.key.place,
                category: s.key.category,
                last_value: s.last_value,
                last_seen_ms: s.last_seen.map(|t| t.0),
                last_seen: s.last_seen.map(rfc3339),
            })
            .collect(),
    ))
}

/// The last hour of every visible sensor, one average per minute (oldest first), keyed
/// `owner/place/category`: the overview's trend lines in one request.
pub async fn trends(State(state): State<ApiState>, Extension(viewer): Extension<Viewer>) -> Result<Json<serde_json::Value>, ApiError> {
    let since = TimestampMs(TimestampMs::now().0 - 3_600_000);
    let (sensors, averages) = (state.store.sensors().await?, state.store.minute_averages(since).await?);
    let mut by_id: std::collections::HashMap<i64, Vec<f64>> = std::collections::HashMap::new();
    for (id, avg) in averages {
        by_id.entry(id).or_default().push(avg);
    }
    let trends: serde_json::Map<String, serde_json::Value> = sensors
        .into_iter()
        .filter(|s| viewer.may_see(&s.key.owner))
        .filter_map(|s| {
            let values = by_id.remove(&s.id)?;
            Some((format!("{}/{}/{}", s.key.owner, s.key.place, s.key.category), serde_json::json!(values)))
        })
        .collect();
    Ok(Json(serde_json::Value::Object(trends)))
}

#[derive(Debug, Deserialize)]
pub struct RangeQuery {
    from: Option<String>,
    to: Option<String>,
    /// Downsample into this many buckets (min/avg/max/count each) instead of raw readings.
    buckets: Option<String>,
}

/// The sensor's id; other owners' sensors are "not found" to non-admins, like missing ones.
async fn find_sensor(
    state: &ApiState,
    viewer: &Viewer,
    owner: String,
    place: String,
    category: String,
) -> Result<(SensorKey, i64), ApiError> {
    let key = SensorKey { owner, place, category };
    if !viewer.may_see(&key.owner) {
        return Err(ApiError::NotFound(format!("no sensor {key}")));
    }
    match state.store.sensor_id(&key).await? {
        Some(id) => Ok((key, id)),
        None => Err(ApiError::NotFound(format!("no sensor {key}"))),
    }
}

pub async fn readings(
    State(state): State<ApiState>,
    Extension(viewer): Extension<Viewer>,
    Path((owner, place, category)): Path<(String, String, String)>,
    ApiQuery(query): ApiQuery<RangeQuery>,
) -> Result<Json<Value>, ApiError> {
    let (from, to) = time_range(query.from.as_deref(), query.to.as_deref())?;
    let buckets = match given(query.buckets.as_deref()) {
        None => None,
        Some(b) => match b.parse::<u32>() {
            Ok(n) if (1..=MAX_BUCKETS).contains(&n) => Some(n),
            _ => return Err(ApiError::BadRequest(format!("`buckets` must be a whole number from 1 to {MAX_BUCKETS}, not {b:?}"))),
        },
    };
    let (key, id) = find_sensor(&state, &viewer, owner, place, category).await?;
    let sensor = json!({ "owner": key.owner, "place": key.place, "category": key.category });
    let range = json!({ "from_ms": from.0, "to_ms": to.0, "from": rfc3339(from), "to": rfc3339(to) });
    match buckets {
        Some(n) => {
            // Round the width up so that n buckets cover the range.
            let width = ((to.0 - from.0) + i64::from(n) - 1) / i64::from(n);
            let buckets = state.store.buckets(id, from, to, width.max(1)).await?;
            Ok(Json(json!({ "sensor": sensor, "range": range, "bucket_ms": width.max(1), "buckets": buckets })))
        }
        None => {
            let rows = state.store.readings_by_id(id, from, to, MAX_RAW + 1).await?;
            if rows.len() as i64 > MAX_RAW {
                return Err(ApiError::BadRequest(format!(
                    "more than {MAX_RAW} readings in this range: ask for `buckets` or use the CSV export"
                )));
            }
            let readings: Vec<[Value; 2]> = rows.into_iter().map(|(ts, v)| [json!(ts), json!(v)]).collect();
            Ok(Json(json!({ "sensor": sensor, "range": range, "readings": readings })))
        }
    }
}

/// CSV of a sensor's readings in a range, streamed: any size, constant memory.
pub async fn export_csv(
    State(state): State<ApiState>,
    Extension(viewer): Extension<Viewer>,
    Path((owner, place, category)): Path<(String, String, String)>,
    ApiQuery(query): ApiQuery<RangeQuery>,
) -> Result<Response, ApiError> {
    let (from, to) = time_range(query.from.as_deref(), query.to.as_deref())?;
    let (key, id) = find_sensor(&state, &viewer, owner, place, category).await?;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let store = state.store.clone();
    tokio::spawn(async move { store.stream_readings(id, from, to, tx).await });
    let header_line = futures_util::stream::once(async { Ok::<_, std::io::Error>(String::from("ts_ms,time_utc,value\n")) });
    let rows = futures_util::stream::unfold(rx, |mut rx| async move {
        let chunk = rx.recv().await?;
        let text = match chunk {
            Ok(rows) => {
                let mut text = String::with_capacity(rows.len() * 40);
                for (ts, value) in rows {
                    text.push_str(&format!("{ts},{},{value}\n", rfc3339(TimestampMs(ts))));
                }
                Ok(text)
            }
            Err(e) => {
                // Headers are gone already: end the body with an error so the client sees a
                // broken download rather than a silently short file.
                tracing::error!(error = %e, "CSV export failed");
                Err(std::io::Error::other("export failed"))
            }
        };
        Some((text, rx))
    });
    use futures_util::StreamExt;
    let body = Body::from_stream(header_line.chain(rows));
    let filename = format!("{}_{}_{}.csv", key.owner, key.place, key.category).replace(['"', '\\', '/'], "_");
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
            (header::CONTENT_DISPOSITION, format!("attachment; filename=\"{filename}\"")),
        ],
        body,
    )
        .into_response())
}

#[derive(Debug, Deserialize)]
pub struct RejectsQuery {
    limit: Option<String>,
}

pub async fn rejects(
    State(state): State<ApiState>,
    Extension(viewer): Extension<Viewer>,
    ApiQuery(query): ApiQuery<RejectsQuery>,
) -> Result<Json<Value>, ApiError> {
    let limit = match given(query.limit.as_deref()) {
        None => 100,
        Some(l) => match l.parse::<i64>() {
            Ok(n) if (1..=MAX_REJECTS).contains(&n) => n,
            _ => return Err(ApiError::BadRequest(format!("`limit` must be a whole number from 1 to {MAX_REJECTS}, not {l:?}"))),
        },
    };
    let rejects = state.store.recent_rejects_under(viewer.topic_prefix().as_deref(), limit).await?;
    let rejects: Vec<Value> = rejects
        .into_iter()
        .map(|r| {
            json!({
                "received_at_ms": r.received_at.0,
                "received_at": rfc3339(r.received_at),
                "client_id": r.client_id,
                "topic": r.topic,
                // Always text (lossy for non-UTF-8 bytes): the dashboard shows it as text.
                "payload": String::from_utf8_lossy(&r.payload),
                "reason": r.reason,
            })
        })
        .collect();
    Ok(Json(json!(rejects)))
}

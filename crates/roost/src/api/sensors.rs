//! Sensors, their settings (name, unit, hidden, retention; deletion), their readings (raw or
//! downsampled from the finest series still kept), CSV export and rejects.

use super::auth::Viewer;
use super::params::{given, rfc3339, time_range, ApiJson, ApiPath, ApiQuery};
use super::{ApiError, ApiState};
use crate::lifecycle::KeepSource;
use crate::model::{Level, SensorKey, TimestampMs};
use crate::settings::parse_keep;
use crate::store::{SensorChange, SensorRow};
use axum::body::Body;
use axum::extract::State;
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

/// Longest display name, in characters.
const MAX_DISPLAY_NAME: usize = 100;
/// Longest unit, in characters.
const MAX_UNIT: usize = 32;

#[derive(Debug, Serialize)]
pub struct SensorJson {
    owner: Level,
    place: Level,
    category: Level,
    last_value: Option<f64>,
    /// Epoch milliseconds, UTC.
    last_seen_ms: Option<i64>,
    /// RFC 3339, UTC.
    last_seen: Option<String>,
    /// The name the dashboard shows (`null`: its key).
    display_name: Option<String>,
    /// Its own unit (`null`: the category's).
    unit: Option<String>,
    /// Left out of the dashboard's overview.
    hidden: bool,
    /// How long its raw readings are kept (`30d`, `forever`), and where that comes from
    /// (`sensor`: its own; `rule`: a retention rule; `default`: `--retention`).
    retention: String,
    retention_from: KeepSource,
}

fn sensor_json(state: &ApiState, s: SensorRow) -> SensorJson {
    let (keep, from) = state.retention.raw(&s.key, s.settings.retention);
    SensorJson {
        owner: s.key.owner,
        place: s.key.place,
        category: s.key.category,
        last_value: s.last_value,
        last_seen_ms: s.last_seen.map(|t| t.0),
        last_seen: s.last_seen.map(rfc3339),
        display_name: s.settings.display_name,
        unit: s.settings.unit,
        hidden: s.settings.hidden,
        retention: keep.to_string(),
        retention_from: from,
    }
}

pub async fn list(State(state): State<ApiState>, Extension(viewer): Extension<Viewer>) -> Result<Json<Vec<SensorJson>>, ApiError> {
    let sensors = state.store.sensors().await?;
    Ok(Json(sensors.into_iter().filter(|s| viewer.may_see(&s.key.owner)).map(|s| sensor_json(&state, s)).collect()))
}

/// A `PATCH` of a sensor: each field given is changed, `null` clears it, absent leaves it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SensorPatch {
    #[serde(default, deserialize_with = "super::params::given_or_null")]
    display_name: Option<Option<String>>,
    #[serde(default, deserialize_with = "super::params::given_or_null")]
    unit: Option<Option<String>>,
    #[serde(default)]
    hidden: Option<bool>,
    /// `"7d"`, `"forever"`, or `null` to follow the rules again.
    #[serde(default, deserialize_with = "super::params::given_or_null")]
    retention: Option<Option<String>>,
}

/// A trimmed text of at most `max` characters; empty is `None`.
fn label(field: &str, text: Option<String>, max: usize) -> Result<Option<String>, ApiError> {
    let Some(text) = text.map(|t| t.trim().to_owned()).filter(|t| !t.is_empty()) else { return Ok(None) };
    if text.chars().count() > max || text.chars().any(char::is_control) {
        return Err(ApiError::BadRequest(format!("`{field}` must be at most {max} characters, without control characters")));
    }
    Ok(Some(text))
}

impl SensorPatch {
    fn into_change(self) -> Result<SensorChange, ApiError> {
        Ok(SensorChange {
            display_name: self.display_name.map(|n| label("display_name", n, MAX_DISPLAY_NAME)).transpose()?,
            unit: self.unit.map(|u| label("unit", u, MAX_UNIT)).transpose()?,
            hidden: self.hidden,
            retention: self
                .retention
                .map(|r| r.map(|text| parse_keep(&text).map_err(|e| ApiError::BadRequest(format!("`retention`: {e}")))).transpose())
                .transpose()?,
        })
    }
}

/// The sensor, if this viewer may see it (and so change it): admins any, a user their own.
/// Other owners' sensors are "not found" to non-admins, like missing ones.
async fn find_sensor(state: &ApiState, viewer: &Viewer, key: SensorKey) -> Result<SensorRow, ApiError> {
    let not_found = || ApiError::NotFound(format!("no sensor {key}"));
    if !viewer.may_see(&key.owner) {
        return Err(not_found());
    }
    let sensor = state.store.sensor(&key).await?.ok_or_else(not_found)?;
    Ok(sensor)
}

/// One sensor, as `GET /api/sensors` lists it.
pub async fn one(
    State(state): State<ApiState>,
    Extension(viewer): Extension<Viewer>,
    ApiPath((owner, place, category)): ApiPath<(Level, Level, Level)>,
) -> Result<Json<SensorJson>, ApiError> {
    let sensor = find_sensor(&state, &viewer, SensorKey { owner, place, category }).await?;
    Ok(Json(sensor_json(&state, sensor)))
}

pub async fn update(
    State(state): State<ApiState>,
    Extension(viewer): Extension<Viewer>,
    ApiPath((owner, place, category)): ApiPath<(Level, Level, Level)>,
    ApiJson(patch): ApiJson<SensorPatch>,
) -> Result<Json<SensorJson>, ApiError> {
    let change = patch.into_change()?;
    let sensor = find_sensor(&state, &viewer, SensorKey { owner, place, category }).await?;
    if !state.store.update_sensor(sensor.id, &change).await? {
        return Err(ApiError::NotFound(format!("no sensor {}", sensor.key)));
    }
    tracing::info!(sensor = %sensor.key, by = viewer.name.as_deref().unwrap_or("anonymous"), ?change, "sensor changed");
    let _ = state.sensor_changes.send(sensor.key.clone());
    let changed = state.store.sensor(&sensor.key).await?.ok_or_else(|| ApiError::NotFound(format!("no sensor {}", sensor.key)))?;
    Ok(Json(sensor_json(&state, changed)))
}

/// Deletes a sensor with its readings and rollups. A board still publishing creates it again
/// with its next reading (hide it instead to keep it out of sight).
pub async fn delete(
    State(state): State<ApiState>,
    Extension(viewer): Extension<Viewer>,
    ApiPath((owner, place, category)): ApiPath<(Level, Level, Level)>,
) -> Result<Json<Value>, ApiError> {
    let sensor = find_sensor(&state, &viewer, SensorKey { owner, place, category }).await?;
    let rows = state.store.delete_sensor(&sensor.key, sensor.id).await?;
    // No listener (nothing to tell) is not an error.
    let _ = state.deletions.send(sensor.key.clone());
    tracing::info!(sensor = %sensor.key, rows, by = viewer.name.as_deref().unwrap_or("anonymous"), "sensor deleted");
    Ok(Json(json!({ "deleted": format!("{}", sensor.key), "rows": rows })))
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

pub async fn readings(
    State(state): State<ApiState>,
    Extension(viewer): Extension<Viewer>,
    ApiPath((owner, place, category)): ApiPath<(Level, Level, Level)>,
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
    let row = find_sensor(&state, &viewer, SensorKey { owner, place, category }).await?;
    let (key, id) = (&row.key, row.id);
    let sensor = json!({ "owner": key.owner, "place": key.place, "category": key.category });
    let range = json!({ "from_ms": from.0, "to_ms": to.0, "from": rfc3339(from), "to": rfc3339(to) });
    let (keep, _) = state.retention.raw(key, row.settings.retention);
    match buckets {
        Some(n) => {
            // Round the width up so that n buckets cover the range.
            let width = ((to.0 - from.0) + i64::from(n) - 1) / i64::from(n);
            let (series, width) = state.retention.chart_series(keep, TimestampMs::now(), from, width.max(1));
            let buckets = state.store.buckets(series, id, from, to, width).await?;
            Ok(Json(json!({ "sensor": sensor, "range": range, "bucket_ms": width, "series": series, "buckets": buckets })))
        }
        None => {
            let rows = state.store.readings_by_id(id, from, to, MAX_RAW + 1).await?;
            if rows.len() as i64 > MAX_RAW {
                return Err(ApiError::BadRequest(format!(
                    "more than {MAX_RAW} readings in this range: ask for `buckets` or use the CSV export"
                )));
            }
            let readings: Vec<[Value; 2]> = rows.into_iter().map(|(ts, v)| [json!(ts), json!(v)]).collect();
            // Raw readings before this were deleted by the retention (or will be at the next purge).
            let kept_from = keep.cutoff(TimestampMs::now()).map(|t| t.0);
            Ok(Json(json!({ "sensor": sensor, "range": range, "raw_kept_from_ms": kept_from, "readings": readings })))
        }
    }
}

/// How long a CSV download may take nothing before its export ends (and gives its database
/// connection back): the client then sees a broken download.
const EXPORT_STALLED_AFTER: std::time::Duration = std::time::Duration::from_secs(60);

/// CSV of a sensor's readings in a range, streamed: any size, constant memory.
pub async fn export_csv(
    State(state): State<ApiState>,
    Extension(viewer): Extension<Viewer>,
    ApiPath((owner, place, category)): ApiPath<(Level, Level, Level)>,
    ApiQuery(query): ApiQuery<RangeQuery>,
) -> Result<Response, ApiError> {
    let (from, to) = time_range(query.from.as_deref(), query.to.as_deref())?;
    let sensor = find_sensor(&state, &viewer, SensorKey { owner, place, category }).await?;
    let (key, id) = (sensor.key, sensor.id);
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let store = state.store.clone();
    tokio::spawn(async move { store.stream_readings(id, from, to, tx, Some(EXPORT_STALLED_AFTER)).await });
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
    let filename = format!("{}_{}_{}.csv", key.owner, key.place, key.category);
    Ok(([(header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()), (header::CONTENT_DISPOSITION, attachment(&filename))], body)
        .into_response())
}

/// `Content-Disposition` of a download named `filename` (RFC 6266): `filename` in plain ASCII
/// (every other character, and `"`, `\`, `/`, replaced by `_`), and the name itself as
/// `filename*`, UTF-8 percent-encoded (only `/` and `\` replaced). A topic level may hold any
/// character but NUL, a control character too (a `\r` left by firmware reading its topic from
/// a line), which a header value cannot: such a name made the export a 500.
fn attachment(filename: &str) -> String {
    let plain: String =
        filename.chars().map(|c| if c.is_ascii_graphic() && !matches!(c, '"' | '\\' | '/') || c == ' ' { c } else { '_' }).collect();
    let exact = percent_encoding::utf8_percent_encode(&filename.replace(['/', '\\'], "_"), percent_encoding::NON_ALPHANUMERIC).to_string();
    format!("attachment; filename=\"{plain}\"; filename*=UTF-8''{exact}")
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
    let limit = super::params::limit(query.limit.as_deref(), 100, MAX_REJECTS)?;
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

#[cfg(test)]
mod tests {
    use super::attachment;

    #[test]
    fn any_sensor_name_makes_a_valid_download_header() {
        for (name, plain) in [
            ("yanjo_kitchen_temperature.csv", "yanjo_kitchen_temperature.csv"),
            ("yanjo_kitchen_temperature\r.csv", "yanjo_kitchen_temperature_.csv"),
            ("yanjo_거실_온도.csv", "yanjo______.csv"),
            ("a\"b\\c/d e.csv", "a_b_c_d e.csv"),
        ] {
            let value = attachment(name);
            assert!(axum::http::HeaderValue::try_from(value.as_str()).is_ok(), "{value:?}");
            assert!(value.starts_with(&format!("attachment; filename=\"{plain}\"; filename*=UTF-8''")), "{value}");
        }
        assert!(attachment("yanjo_거실_온도.csv").ends_with("''yanjo%5F%EA%B1%B0%EC%8B%A4%5F%EC%98%A8%EB%8F%84%2Ecsv"));
    }
}

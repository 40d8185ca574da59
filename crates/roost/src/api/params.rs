//! Request parameters, parsed into types at the edge: times as epoch milliseconds or RFC 3339;
//! query strings and JSON bodies whose malformations answer in the API's JSON error format.

use super::ApiError;
use crate::model::TimestampMs;
use axum::extract::{FromRequest, FromRequestParts, Query, Request};
use axum::http::request::Parts;
use axum::Json;
use serde::de::DeserializeOwned;

/// `Query`, with a 400 JSON error for a malformed query string (axum's own is plain text).
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(value)) => Ok(Self(value)),
            Err(rejection) => Err(ApiError::BadRequest(rejection.body_text())),
        }
    }
}

/// `Path`, with a 400 JSON error for a malformed path parameter.
pub struct ApiPath<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(Self(value)),
            Err(rejection) => Err(ApiError::BadRequest(rejection.body_text())),
        }
    }
}

/// `Json` of a JSON object (serde would also take an array for a struct), with a 400 JSON error
/// for a missing content type or a malformed body.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<serde_json::Value>::from_request(request, state).await {
            Ok(Json(value)) if value.is_object() => {
                serde_json::from_value(value).map(Self).map_err(|e| ApiError::BadRequest(format!("invalid JSON body: {e}")))
            }
            Ok(Json(_)) => Err(ApiError::BadRequest("the body must be a JSON object".into())),
            Err(rejection) if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE => {
                Err(ApiError::TooLarge(rejection.body_text()))
            }
            Err(rejection) => Err(ApiError::BadRequest(rejection.body_text())),
        }
    }
}

/// Tells a field given as `null` (`Some(None)`) from an absent one (`None`, by `default`).
pub fn given_or_null<'de, D: serde::Deserializer<'de>, T: serde::Deserialize<'de>>(d: D) -> Result<Option<Option<T>>, D::Error> {
    <Option<T> as serde::Deserialize>::deserialize(d).map(Some)
}

/// `?limit=N`: from 1 to `max`, `default` when absent.
pub fn limit(value: Option<&str>, default: i64, max: i64) -> Result<i64, ApiError> {
    match given(value) {
        None => Ok(default),
        Some(l) => match l.parse::<i64>() {
            Ok(n) if (1..=max).contains(&n) => Ok(n),
            _ => Err(ApiError::BadRequest(format!("`limit` must be a whole number from 1 to {max}, not {l:?}"))),
        },
    }
}

/// An empty parameter (`?from=`) counts as absent.
pub fn given(value: Option<&str>) -> Option<&str> {
    value.filter(|v| !v.is_empty())
}

/// Parses `name` as epoch milliseconds (`1700000000000`) or RFC 3339 (`2023-11-14T22:13:20Z`),
/// between 1970 and the end of 9999.
pub fn parse_time(name: &str, value: &str) -> Result<TimestampMs, ApiError> {
    TimestampMs::parse(value).map_err(|why| ApiError::BadRequest(format!("`{name}` {why}")))
}

/// RFC 3339 in UTC for an epoch-millisecond time.
pub fn rfc3339(ts: TimestampMs) -> String {
    ts.rfc3339()
}

/// The `[from, to)` range of a request: `to` defaults to now, `from` to 24 hours before `to`.
pub fn time_range(from: Option<&str>, to: Option<&str>) -> Result<(TimestampMs, TimestampMs), ApiError> {
    let to = match given(to) {
        Some(v) => parse_time("to", v)?,
        None => TimestampMs::now(),
    };
    let from = match given(from) {
        Some(v) => parse_time("from", v)?,
        None => TimestampMs(to.0.saturating_sub(24 * 3600 * 1000)),
    };
    if from >= to {
        return Err(ApiError::BadRequest("`from` must be before `to`".into()));
    }
    Ok((from, to))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_both_ways_and_round_trip() {
        assert_eq!(parse_time("from", "1700000000000").unwrap(), TimestampMs(1_700_000_000_000));
        assert_eq!(parse_time("from", "2023-11-14T22:13:20Z").unwrap(), TimestampMs(1_700_000_000_000));
        assert_eq!(parse_time("from", "2023-11-14T23:13:20+01:00").unwrap(), TimestampMs(1_700_000_000_000));
        assert_eq!(rfc3339(TimestampMs(1_700_000_000_000)), "2023-11-14T22:13:20Z");
        let err = parse_time("from", "yesterday").unwrap_err();
        assert_eq!(err.to_string(), "`from` must be epoch milliseconds or an RFC 3339 time, not \"yesterday\"");
        assert!(time_range(Some("2000"), Some("1000")).is_err());
    }
}

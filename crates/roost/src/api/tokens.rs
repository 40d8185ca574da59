//! API tokens from the dashboard: list, create (shown once), revoke. Users manage their own;
//! admins see and revoke everyone's.

use super::auth::Viewer;
use super::params::{rfc3339, ApiJson, ApiPath};
use super::{ApiError, ApiState};
use crate::auth::tokens;
use crate::store::TokenKind;
use axum::extract::State;
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::{json, Value};

const MAX_DAYS: u32 = crate::cli::MAX_TOKEN_DAYS;

fn user_of(viewer: &Viewer) -> Result<&str, ApiError> {
    viewer.name.as_deref().ok_or_else(|| ApiError::BadRequest("tokens belong to users, and this server runs with --allow-anonymous".into()))
}

/// Whose tokens `viewer` may see and revoke: everyone's for admins, else their own.
fn owner_filter(viewer: &Viewer) -> Result<Option<&str>, ApiError> {
    if viewer.admin {
        Ok(None)
    } else {
        user_of(viewer).map(Some)
    }
}

pub async fn list(State(state): State<ApiState>, Extension(viewer): Extension<Viewer>) -> Result<Json<Value>, ApiError> {
    let tokens = state.store.api_tokens(owner_filter(&viewer)?).await?;
    let visible: Vec<Value> = tokens
        .into_iter()
        .map(|t| {
            json!({
                "id": t.id, "user": t.user, "name": t.name,
                "created_at_ms": t.created_at.0, "created_at": rfc3339(t.created_at),
                "expires_at_ms": t.expires_at.map(|e| e.0), "expires_at": t.expires_at.map(rfc3339),
            })
        })
        .collect();
    Ok(Json(json!(visible)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    name: String,
    /// Days until it expires; none: never.
    days: Option<u32>,
}

/// Creates a token acting as the logged-in user; the response is the only time it is shown.
pub async fn create(
    State(state): State<ApiState>,
    Extension(viewer): Extension<Viewer>,
    ApiJson(body): ApiJson<NewToken>,
) -> Result<Json<Value>, ApiError> {
    let user = user_of(&viewer)?;
    let name = body.name.trim();
    if name.is_empty() || name.chars().count() > 100 {
        return Err(ApiError::BadRequest("`name` must be 1 to 100 characters".into()));
    }
    if body.days.is_some_and(|d| d == 0 || d > MAX_DAYS) {
        return Err(ApiError::BadRequest(format!("`days` must be from 1 to {MAX_DAYS}")));
    }
    let (token, hash) = tokens::generate();
    let expires = body.days.map(|d| tokens::expires_after(tokens::days(d)));
    let id = state.store.create_token(user, TokenKind::Api, name, &hash, expires).await.map_err(super::auth::user_error)?;
    Ok(Json(json!({ "id": id, "user": user, "name": name, "token": token })))
}

pub async fn revoke(
    State(state): State<ApiState>,
    Extension(viewer): Extension<Viewer>,
    ApiPath(id): ApiPath<i64>,
) -> Result<Json<Value>, ApiError> {
    if !state.store.revoke_api_token(id, owner_filter(&viewer)?).await? {
        return Err(ApiError::NotFound(format!("no token {id}")));
    }
    state.logins_ended();
    Ok(Json(json!({ "revoked": id })))
}

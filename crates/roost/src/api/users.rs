//! User accounts from the dashboard (admins): list, add, remove, reset a password, grant and
//! revoke topic filters. The same rules as `roost user` (`auth::accounts`); a password that is
//! not given is generated and answered once. Changes apply from a user's next connection.

use super::auth::Viewer;
use super::params::{rfc3339, ApiJson, ApiPath, ApiQuery};
use super::{ApiError, ApiState};
use crate::auth::accounts::{check_password, describe, new_grant};
use crate::auth::bootstrap::check_user_name;
use crate::auth::password;
use crate::store::{UserError, UserRecord};
use axum::extract::State;
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::{json, Value};

/// Accounts are managed by a logged-in admin only: with `--allow-anonymous` everyone counts as
/// an admin, and accounts outlive that mode.
fn require_account_admin(viewer: &Viewer) -> Result<(), ApiError> {
    viewer.require_admin()?;
    if viewer.name.is_none() {
        return Err(ApiError::Forbidden(
            "this server runs with --allow-anonymous, where anyone could manage accounts: use `roost user`, or turn logins on".into(),
        ));
    }
    Ok(())
}

fn user_json(user: &UserRecord) -> Value {
    let grants: Vec<Value> = user
        .grants
        .iter()
        .map(|g| json!({ "filter": g.filter, "publish": g.publish, "subscribe": g.subscribe, "description": describe(g) }))
        .collect();
    json!({
        "name": user.name, "admin": user.is_admin,
        "created_at_ms": user.created_at.0, "created_at": rfc3339(user.created_at),
        "grants": grants,
    })
}

/// A missing user is a 404; other account errors are what they say.
fn account_error(e: UserError) -> ApiError {
    match e {
        UserError::NoSuchUser(_) => ApiError::NotFound(e.to_string()),
        UserError::Exists(_) => ApiError::BadRequest(e.to_string()),
        UserError::Store(e) => ApiError::Store(e),
    }
}

pub async fn list(State(state): State<ApiState>, Extension(viewer): Extension<Viewer>) -> Result<Json<Value>, ApiError> {
    require_account_admin(&viewer)?;
    let users = state.store.users().await?;
    Ok(Json(json!(users.iter().map(user_json).collect::<Vec<_>>())))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    name: String,
    #[serde(default)]
    admin: bool,
    /// None: generated, and answered once.
    password: Option<String>,
}

/// The password to set: the one given (checked), or a generated one (`true`).
fn chosen_password(given: Option<String>) -> Result<(String, bool), ApiError> {
    match given {
        Some(password) => {
            check_password(&password).map_err(ApiError::BadRequest)?;
            Ok((password, false))
        }
        None => Ok((password::generate(), true)),
    }
}

async fn hash(secret: String) -> Result<String, ApiError> {
    password::hash(secret).await.map_err(|e| {
        tracing::error!(error = %e, "hashing a password");
        ApiError::Internal
    })
}

pub async fn create(
    State(state): State<ApiState>,
    Extension(viewer): Extension<Viewer>,
    ApiJson(body): ApiJson<NewUser>,
) -> Result<Json<Value>, ApiError> {
    require_account_admin(&viewer)?;
    check_user_name(&body.name).map_err(ApiError::BadRequest)?;
    let (secret, generated) = chosen_password(body.password)?;
    state.store.create_user(&body.name, &hash(secret.clone()).await?, body.admin).await.map_err(account_error)?;
    tracing::info!(user = %body.name, admin = body.admin, by = viewer.name.as_deref().unwrap_or("anonymous"), "user created from the dashboard");
    let user =
        state.store.user(&body.name).await?.ok_or_else(|| ApiError::NotFound(format!("user {:?} was removed meanwhile", body.name)))?;
    let mut answer = user_json(&user);
    if generated {
        answer["password"] = json!(secret);
    }
    Ok(Json(answer))
}

pub async fn remove(
    State(state): State<ApiState>,
    Extension(viewer): Extension<Viewer>,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    require_account_admin(&viewer)?;
    if viewer.name.as_deref() == Some(name.as_str()) {
        return Err(ApiError::BadRequest("you cannot remove your own account (another admin can)".into()));
    }
    state.store.delete_user(&name).await.map_err(account_error)?;
    state.logins_ended();
    tracing::info!(user = %name, by = viewer.name.as_deref().unwrap_or("anonymous"), "user removed from the dashboard");
    Ok(Json(json!({ "removed": name })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewPassword {
    /// None: generated, and answered once.
    password: Option<String>,
}

pub async fn set_password(
    State(state): State<ApiState>,
    Extension(viewer): Extension<Viewer>,
    ApiPath(name): ApiPath<String>,
    ApiJson(body): ApiJson<NewPassword>,
) -> Result<Json<Value>, ApiError> {
    require_account_admin(&viewer)?;
    let (secret, generated) = chosen_password(body.password)?;
    state.store.set_password(&name, &hash(secret.clone()).await?).await.map_err(account_error)?;
    state.logins_ended();
    tracing::info!(user = %name, by = viewer.name.as_deref().unwrap_or("anonymous"), "password changed from the dashboard; its sessions ended");
    let mut answer = json!({ "name": name });
    if generated {
        answer["password"] = json!(secret);
    }
    Ok(Json(answer))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewGrant {
    filter: String,
    #[serde(default = "yes")]
    publish: bool,
    #[serde(default = "yes")]
    subscribe: bool,
}

fn yes() -> bool {
    true
}

pub async fn grant(
    State(state): State<ApiState>,
    Extension(viewer): Extension<Viewer>,
    ApiPath(name): ApiPath<String>,
    ApiJson(body): ApiJson<NewGrant>,
) -> Result<Json<Value>, ApiError> {
    require_account_admin(&viewer)?;
    let grant = new_grant(&body.filter, body.publish, body.subscribe).map_err(ApiError::BadRequest)?;
    state.store.grant(&name, &grant).await.map_err(account_error)?;
    tracing::info!(user = %name, grant = %describe(&grant), by = viewer.name.as_deref().unwrap_or("anonymous"), "grant added from the dashboard");
    let user = state.store.user(&name).await?.ok_or_else(|| ApiError::NotFound(format!("there is no user named {name:?}")))?;
    Ok(Json(user_json(&user)))
}

#[derive(Deserialize)]
pub struct GrantQuery {
    filter: String,
}

pub async fn revoke(
    State(state): State<ApiState>,
    Extension(viewer): Extension<Viewer>,
    ApiPath(name): ApiPath<String>,
    ApiQuery(query): ApiQuery<GrantQuery>,
) -> Result<Json<Value>, ApiError> {
    require_account_admin(&viewer)?;
    if !state.store.revoke(&name, &query.filter).await.map_err(account_error)? {
        return Err(ApiError::NotFound(format!("{name} has no grant for {:?}", query.filter)));
    }
    tracing::info!(user = %name, filter = %query.filter, by = viewer.name.as_deref().unwrap_or("anonymous"), "grant taken back from the dashboard");
    let user = state.store.user(&name).await?.ok_or_else(|| ApiError::NotFound(format!("there is no user named {name:?}")))?;
    Ok(Json(user_json(&user)))
}

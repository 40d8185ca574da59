//! Who is asking. With authentication on, every `/api` route but login, logout, the dashboard
//! settings and the OpenAPI document needs the login cookie or an `Authorization: Bearer`
//! token; what a non-admin sees is limited to their own sensors.

use super::listener::Peer;
use super::params::ApiJson;
use super::{ApiError, ApiState};
use crate::auth::tokens;
use crate::store::TokenKind;
use axum::extract::ConnectInfo;
use axum::extract::{Request, State};
use axum::http::header::{AUTHORIZATION, COOKIE, SET_COOKIE};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::json;
use std::time::Duration;

pub const SESSION_COOKIE: &str = "roost_session";
/// How long a dashboard login lasts.
const SESSION: Duration = Duration::from_secs(7 * 86_400);
/// How long the MQTT console's password lasts.
const CONSOLE: Duration = Duration::from_secs(12 * 3_600);

/// The person or script behind a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Viewer {
    /// `None` when the server runs with `--allow-anonymous` (everyone sees everything).
    pub name: Option<String>,
    pub admin: bool,
}

impl Viewer {
    fn open() -> Self {
        Self { name: None, admin: true }
    }

    /// Whether this viewer may see the sensors of `owner`.
    pub fn may_see(&self, owner: &str) -> bool {
        self.admin || self.name.as_deref() == Some(owner)
    }

    /// `iot/{name}/` for a non-admin (their share of the rejects), `None` for admins.
    pub fn topic_prefix(&self) -> Option<String> {
        match (&self.name, self.admin) {
            (Some(name), false) => Some(format!("{}/{name}/", crate::auth::acl::OWNER_ROOT)),
            _ => None,
        }
    }

    pub fn require_admin(&self) -> Result<(), ApiError> {
        if self.admin {
            Ok(())
        } else {
            Err(ApiError::Forbidden("only admins may see this".into()))
        }
    }
}

/// The token a request logs in with: an API token (`Authorization: Bearer`), else the
/// session cookie.
pub(super) fn request_token(headers: &HeaderMap) -> Option<&str> {
    bearer(headers).or_else(|| cookie(headers, SESSION_COOKIE))
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers.get(AUTHORIZATION)?.to_str().ok()?.strip_prefix("Bearer ").map(str::trim)
}

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| pair.trim().strip_prefix(name)?.strip_prefix('='))
}

/// The middleware: puts a `Viewer` into the request, or answers 401.
pub async fn identify(State(state): State<ApiState>, mut request: Request, next: Next) -> Response {
    if state.open {
        request.extensions_mut().insert(Viewer::open());
        return next.run(request).await;
    }
    let Some(token) = request_token(request.headers()) else {
        return ApiError::Unauthorized.into_response();
    };
    match state.store.token_owner(&tokens::hash(token)).await {
        Ok(Some(owner)) if owner.kind != TokenKind::Console => {
            request.extensions_mut().insert(Viewer { name: Some(owner.name), admin: owner.is_admin });
            next.run(request).await
        }
        Ok(_) => ApiError::Unauthorized.into_response(),
        Err(e) => ApiError::Store(e).into_response(),
    }
}

/// `Debug` is left out on purpose: the password must never reach a log.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginBody {
    username: String,
    password: String,
}

/// `POST /api/login` with `{"username", "password"}`: sets the session cookie.
pub async fn login(
    State(state): State<ApiState>,
    ConnectInfo(Peer(peer)): ConnectInfo<Peer>,
    ApiJson(body): ApiJson<LoginBody>,
) -> Result<Response, ApiError> {
    let admission = state.login_limiter.admit(peer.ip(), &body.username).await;
    if !admission.waited.is_zero() {
        tracing::warn!(%peer, user = %body.username, waited = ?admission.waited, "dashboard login slowed down after failed logins");
    }
    let user = state.store.user(&body.username).await?;
    let reuse = crate::auth::limiter::Reuse::Never;
    let Ok(verified) = state.login_limiter.verify_user(user, body.password.into_bytes(), reuse).await else {
        // Not the user's failure: the password was not checked.
        drop(admission);
        return Err(ApiError::Busy);
    };
    let Some(user) = verified else {
        admission.failed();
        tracing::info!(%peer, user = %body.username, "dashboard login refused");
        return Err(ApiError::WrongCredentials);
    };
    admission.succeeded();
    let (token, hash) = tokens::generate();
    let expires = tokens::expires_after(SESSION);
    state.store.create_token(&user.name, TokenKind::Session, "dashboard login", &hash, Some(expires)).await.map_err(user_error)?;
    // HttpOnly: page scripts never see it; SameSite=Strict: other sites cannot send it.
    let secure = if state.tls { "; Secure" } else { "" };
    let cookie = format!("{SESSION_COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}{secure}", SESSION.as_secs());
    Ok(([(SET_COOKIE, cookie)], Json(json!({ "username": user.name, "admin": user.is_admin }))).into_response())
}

/// `POST /api/logout`: forgets the session and clears the cookie.
pub async fn logout(State(state): State<ApiState>, headers: HeaderMap) -> Result<Response, ApiError> {
    if let Some(token) = cookie(&headers, SESSION_COOKIE) {
        state.store.delete_token(&tokens::hash(token)).await?;
        state.logins_ended();
    }
    let clear = format!("{SESSION_COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0");
    Ok(([(SET_COOKIE, clear)], Json(json!({ "logged_out": true }))).into_response())
}

/// `GET /api/me`: who is logged in, and an MQTT password for the dashboard's console (a
/// console token of the same user, valid for 12 hours; the session cookie itself stays
/// out of reach of scripts).
pub async fn me(State(state): State<ApiState>, Extension(viewer): Extension<Viewer>) -> Result<Json<serde_json::Value>, ApiError> {
    let Some(name) = viewer.name.clone() else {
        return Ok(Json(json!({ "username": null, "admin": true, "anonymous": true })));
    };
    let (token, hash) = tokens::generate();
    let expires = tokens::expires_after(CONSOLE);
    state.store.create_token(&name, TokenKind::Console, "dashboard MQTT console", &hash, Some(expires)).await.map_err(user_error)?;
    Ok(Json(json!({ "username": name, "admin": viewer.admin, "anonymous": false, "mqtt_password": token })))
}

/// A store error as itself; any other account error means the user was removed meanwhile.
pub(super) fn user_error(e: crate::store::UserError) -> ApiError {
    match e {
        crate::store::UserError::Store(e) => ApiError::Store(e),
        // The user was removed while logged in.
        _ => ApiError::Unauthorized,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let mut headers = HeaderMap::new();
        headers.insert(COOKIE, "theme=dark; roost_session=abc123; other=x".parse().unwrap());
        assert_eq!(cookie(&headers, SESSION_COOKIE), Some("abc123"));
        headers.insert(AUTHORIZATION, "Bearer tok".parse().unwrap());
        assert_eq!(bearer(&headers), Some("tok"));
        let mut headers = HeaderMap::new();
        headers.insert(COOKIE, "roost_sessionx=1".parse().unwrap());
        assert_eq!(cookie(&headers, SESSION_COOKIE), None);
    }

    #[test]
    fn non_admins_see_only_their_own_sensors() {
        let alice = Viewer { name: Some("alice".into()), admin: false };
        assert!(alice.may_see("alice") && !alice.may_see("bob"));
        assert_eq!(alice.topic_prefix().as_deref(), Some("iot/alice/"));
        assert!(alice.require_admin().is_err());
        assert!(Viewer::open().may_see("anyone"));
    }
}

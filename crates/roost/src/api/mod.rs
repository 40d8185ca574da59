//! HTTP: the JSON API under `/api/` (described by `/api/openapi.json`), `/healthz`, Prometheus
//! `/metrics`, and MQTT over WebSocket at `/mqtt`. Handlers call the store; no SQL here.
//! With authentication on, `auth::identify` guards every `/api` route but login, logout, the
//! dashboard settings and the OpenAPI document, and `/metrics`.

mod alerts;
mod assets;
mod auth;
mod error;
mod listener;
mod live;
mod mqtt_ws;
mod openapi;
mod params;
mod sensors;
mod sessions;
mod system;
mod tokens;
mod users;

pub use assets::Assets;
pub use error::ApiError;

use crate::broker::Broker;
use crate::ingest::IngestStats;
use crate::store::Store;
use axum::routing::{get, post};
use axum::Router;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// What the handlers share.
#[derive(Clone)]
pub struct ApiState {
    pub store: Arc<Store>,
    /// How long each sensor's data is kept: for a sensor's settings and its charts.
    pub retention: Arc<crate::lifecycle::RetentionPolicy>,
    /// The database's size, its disk, the last purge.
    pub lifecycle: crate::lifecycle::SharedStatus,
    pub broker: Arc<Broker>,
    pub ingest: Arc<IngestStats>,
    /// Whether the broker state's commits (retained messages, persistent sessions) succeed.
    pub broker_state: Arc<crate::health::CommitHealth>,
    /// For MQTT-over-WebSocket sessions started on the HTTP port.
    pub shutdown: CancellationToken,
    pub tracker: TaskTracker,
    pub assets: Assets,
    pub live: crate::ingest::LiveFeed,
    pub dashboard: DashboardConfig,
    /// `--allow-anonymous`: no login, everyone sees everything.
    pub open: bool,
    /// Served over TLS: cookies get the `Secure` flag.
    pub tls: bool,
    /// Failed logins per address, shared with MQTT's.
    pub login_limiter: Arc<crate::auth::limiter::LoginLimiter>,
    /// Largest request body accepted, in bytes.
    pub max_request_body: usize,
    /// The alert engine, told when rules change.
    pub alerts: crate::alerts::AlertsHandle,
    /// `--upstream`'s counters, for `/metrics`.
    pub upstream: Arc<crate::upstream::UpstreamStats>,
    /// Webhook deliveries, for `/metrics`.
    pub webhooks: Arc<crate::alerts::webhook::WebhookStats>,
    /// Sensors deleted through the API (the alert engine and Home Assistant discovery listen).
    pub deletions: tokio::sync::broadcast::Sender<crate::model::SensorKey>,
    /// Sensors whose settings changed (Home Assistant discovery announces their new name and unit).
    pub sensor_changes: tokio::sync::broadcast::Sender<crate::model::SensorKey>,
    /// The topic templates: which topics a sensor has (a user's alert rules stay on theirs).
    pub templates: Arc<Vec<crate::ingest::TopicTemplate>>,
    /// Moves on whenever the API ends sessions or tokens (a logout, a revocation, a password
    /// reset, a user's removal): open live feeds check their login again (`live`).
    pub logins_ended: Arc<tokio::sync::watch::Sender<u64>>,
}

impl ApiState {
    /// Sessions or tokens were ended: live feeds check theirs.
    pub fn logins_ended(&self) {
        self.logins_ended.send_modify(|n| *n += 1);
    }
}

/// What the dashboard page needs to know (`/api/config`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct DashboardConfig {
    /// A sensor not seen for this long is marked stale.
    pub stale_after_ms: u64,
    /// Unit shown after a category's values.
    pub units: std::collections::BTreeMap<String, String>,
    /// A category's normal range: the dashboard colours values below and above it.
    pub normal_ranges: std::collections::BTreeMap<String, NormalRange>,
}

/// Values from `low` to `high` (inclusive) are normal for a category.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct NormalRange {
    pub low: f64,
    pub high: f64,
}

async fn dashboard_config(axum::extract::State(state): axum::extract::State<ApiState>) -> axum::Json<DashboardConfig> {
    axum::Json(state.dashboard.clone())
}

pub fn router(state: ApiState) -> Router {
    let identify = axum::middleware::from_fn_with_state(state.clone(), auth::identify);
    let api_routes = Router::new()
        .route("/me", get(auth::me))
        .route("/sensors", get(sensors::list))
        .route("/trends", get(sensors::trends))
        .route("/sensors/{owner}/{place}/{category}", get(sensors::one).patch(sensors::update).delete(sensors::delete))
        .route("/sensors/{owner}/{place}/{category}/readings", get(sensors::readings))
        .route("/sensors/{owner}/{place}/{category}/readings.csv", get(sensors::export_csv))
        .route("/rejects", get(sensors::rejects))
        .route("/alerts", get(alerts::active))
        .route("/alerts/events", get(alerts::events))
        .route("/alerts/rules", get(alerts::rules).post(alerts::create))
        .route("/alerts/rules/{id}", axum::routing::put(alerts::replace).delete(alerts::delete))
        .route("/alerts/rules/{id}/silence", post(alerts::silence))
        .route("/alerts/rules/{id}/sensors/{owner}/{place}/{category}/acknowledge", post(alerts::acknowledge))
        .route("/stats", get(system::stats))
        .route("/live", get(live::feed))
        .route("/tokens", get(tokens::list).post(tokens::create))
        .route("/tokens/{id}", axum::routing::delete(tokens::revoke))
        .route("/sessions", get(sessions::list))
        .route("/sessions/{client_id}", axum::routing::delete(sessions::drop_session))
        .route("/users", get(users::list).post(users::create))
        .route("/users/{name}", axum::routing::delete(users::remove))
        .route("/users/{name}/password", post(users::set_password))
        .route("/users/{name}/grants", post(users::grant).delete(users::revoke))
        .route_layer(identify.clone())
        .route("/login", post(auth::login))
        .route("/logout", post(auth::logout))
        .route("/config", get(dashboard_config))
        .route("/openapi.json", get(openapi::document));
    Router::new()
        .nest("/api", api_routes)
        .route("/metrics", get(system::metrics).route_layer(identify))
        .route("/", get(assets::index))
        .route("/static/{*path}", get(assets::file))
        .route("/healthz", get(system::healthz))
        .route("/mqtt", get(mqtt_ws::upgrade))
        .fallback(|| async { ApiError::NotFound("no such page".into()) })
        // A JSON error like every other (axum's own 405 has an empty body); axum adds `Allow`.
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        // The API takes small JSON bodies only (login, tokens, users).
        .layer(axum::extract::DefaultBodyLimit::max(state.max_request_body))
        .with_state(state)
}

/// Serves HTTP (HTTPS with `tls`) on `listener` until `shutdown` is cancelled.
pub async fn serve(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    state: ApiState,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    // The broker's connect timeout bounds every slow start: TLS handshakes and request headers.
    let slow_client = state.broker.config().connect_timeout;
    // Accepting, handshakes and connections all run on one tracker, which `serve` waits for.
    let tasks = tokio_util::task::TaskTracker::new();
    let incoming = listener::incoming(listener, tls, slow_client, shutdown.clone(), &tasks);
    listener::serve(incoming, router(state), slow_client, shutdown, tasks).await;
    Ok(())
}

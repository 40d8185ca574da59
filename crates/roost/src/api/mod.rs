//! HTTP: the JSON API under `/api/` (described by `/api/openapi.json`), `/healthz`, Prometheus
//! `/metrics`, and MQTT over WebSocket at `/mqtt`. Handlers call the store; no SQL here.
//! Authentication (issue 5) is meant to plug in as a layer on `api_routes`.

mod error;
mod mqtt_ws;
mod openapi;
mod params;
mod sensors;
mod system;

pub use error::ApiError;

use crate::broker::Broker;
use crate::ingest::IngestStats;
use crate::store::Store;
use axum::routing::get;
use axum::Router;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// What the handlers share.
#[derive(Clone)]
pub struct ApiState {
    pub store: Arc<Store>,
    pub broker: Arc<Broker>,
    pub ingest: Arc<IngestStats>,
    /// For MQTT-over-WebSocket sessions started on the HTTP port.
    pub shutdown: CancellationToken,
    pub tracker: TaskTracker,
}

pub fn router(state: ApiState) -> Router {
    let api_routes = Router::new()
        .route("/sensors", get(sensors::list))
        .route("/sensors/{owner}/{place}/{category}/readings", get(sensors::readings))
        .route("/sensors/{owner}/{place}/{category}/readings.csv", get(sensors::export_csv))
        .route("/rejects", get(sensors::rejects))
        .route("/stats", get(system::stats))
        .route("/openapi.json", get(openapi::document));
    Router::new()
        .nest("/api", api_routes)
        .route("/healthz", get(system::healthz))
        .route("/metrics", get(system::metrics))
        .route("/mqtt", get(mqtt_ws::upgrade))
        .fallback(|| async { ApiError::NotFound("no such page".into()) })
        .with_state(state)
}

/// Serves HTTP on `listener` until `shutdown` is cancelled.
pub async fn serve(listener: TcpListener, state: ApiState, shutdown: CancellationToken) -> std::io::Result<()> {
    let app = router(state).into_make_service_with_connect_info::<SocketAddr>();
    axum::serve(listener, app).with_graceful_shutdown(async move { shutdown.cancelled().await }).await
}

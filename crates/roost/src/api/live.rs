//! The live feed: committed readings pushed to dashboards as server-sent events.

use super::ApiState;
use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use std::convert::Infallible;
use tokio::sync::broadcast::error::RecvError;

/// `event: readings` with a JSON array of the latest reading per sensor of each committed
/// batch; `event: resync` when this client fell behind and should reload.
pub async fn feed(State(state): State<ApiState>) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let receiver = state.live.subscribe();
    let events = futures_util::stream::unfold(receiver, |mut receiver| async move {
        let event = match receiver.recv().await {
            Ok(batch) => Event::default().event("readings").json_data(&*batch).unwrap_or_else(|_| Event::default().event("resync").data("")),
            Err(RecvError::Lagged(_)) => Event::default().event("resync").data(""),
            Err(RecvError::Closed) => return None,
        };
        Some((Ok(event), receiver))
    });
    Sse::new(events).keep_alive(KeepAlive::default())
}

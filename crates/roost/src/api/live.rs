//! The live feed: committed readings pushed to dashboards as server-sent events.

use super::auth::Viewer;
use super::ApiState;
use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::Extension;
use futures_util::Stream;
use std::convert::Infallible;
use tokio::sync::broadcast::error::RecvError;

/// `event: readings` with a JSON array of the latest reading per sensor of each committed
/// batch; `event: resync` when this client fell behind and should reload.
/// Non-admins get their own sensors' readings only.
pub async fn feed(
    State(state): State<ApiState>,
    Extension(viewer): Extension<Viewer>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let receiver = state.live.subscribe();
    let events = futures_util::stream::unfold((receiver, viewer), |(mut receiver, viewer)| async move {
        let event = loop {
            match receiver.recv().await {
                Ok(batch) => {
                    let visible: Vec<_> = batch.iter().filter(|r| viewer.may_see(&r.owner)).collect();
                    if visible.is_empty() {
                        continue;
                    }
                    break Event::default()
                        .event("readings")
                        .json_data(&visible)
                        .unwrap_or_else(|_| Event::default().event("resync").data(""));
                }
                Err(RecvError::Lagged(_)) => break Event::default().event("resync").data(""),
                Err(RecvError::Closed) => return None,
            }
        };
        Some((Ok(event), (receiver, viewer)))
    });
    Sse::new(events).keep_alive(KeepAlive::default())
}

//! The live feed: committed readings pushed to dashboards as server-sent events.

use super::auth::Viewer;
use super::ApiState;
use crate::auth::tokens;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::Extension;
use futures_util::Stream;
use std::convert::Infallible;
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;

/// How often an open feed checks its login again: a session or token ended by another process
/// (`roost token revoke`, `roost user remove`) or expired ends the feed within this time; one
/// ended through the API ends it at once.
const RECHECK_EVERY: Duration = Duration::from_secs(60);

/// `event: readings` with a JSON array of the latest reading per sensor of each committed
/// batch; `event: resync` when this client fell behind and should reload.
/// Non-admins get their own sensors' readings only, for as long as their login lasts.
pub async fn feed(
    State(state): State<ApiState>,
    Extension(viewer): Extension<Viewer>,
    headers: HeaderMap,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let feed = Feed {
        readings: state.live.subscribe(),
        token_hash: super::auth::request_token(&headers).map(tokens::hash),
        logins_ended: state.logins_ended.subscribe(),
        recheck: tokio::time::interval_at(tokio::time::Instant::now() + RECHECK_EVERY, RECHECK_EVERY),
        state,
        viewer,
    };
    let events = futures_util::stream::unfold(feed, |mut feed| async move {
        let event = feed.next().await?;
        Some((Ok(event), feed))
    });
    Sse::new(events).keep_alive(KeepAlive::default())
}

/// One open feed.
struct Feed {
    readings: tokio::sync::broadcast::Receiver<std::sync::Arc<Vec<crate::model::LiveReading>>>,
    /// The login's token (`None` with `--allow-anonymous`).
    token_hash: Option<String>,
    logins_ended: tokio::sync::watch::Receiver<u64>,
    recheck: tokio::time::Interval,
    state: ApiState,
    viewer: Viewer,
}

impl Feed {
    /// The next event; `None` ends the feed (the server stops, or the login ended).
    async fn next(&mut self) -> Option<Event> {
        loop {
            tokio::select! {
                batch = self.readings.recv() => match batch {
                    Ok(batch) => {
                        let visible: Vec<_> = batch.iter().filter(|r| self.viewer.may_see(&r.owner)).collect();
                        if visible.is_empty() {
                            continue;
                        }
                        return Some(
                            Event::default().event("readings").json_data(&visible).unwrap_or_else(|_| Event::default().event("resync").data("")),
                        );
                    }
                    Err(RecvError::Lagged(_)) => return Some(Event::default().event("resync").data("")),
                    Err(RecvError::Closed) => return None,
                },
                Ok(()) = self.logins_ended.changed() => {
                    if !self.login_holds().await {
                        return None;
                    }
                }
                _ = self.recheck.tick() => {
                    if !self.login_holds().await {
                        return None;
                    }
                }
            }
        }
    }

    /// Whether the token still logs in the same viewer. A database that cannot answer now ends
    /// nothing.
    async fn login_holds(&self) -> bool {
        let (Some(hash), Some(_)) = (&self.token_hash, &self.viewer.name) else { return true };
        match self.state.store.token_owner(hash).await {
            Ok(Some(owner)) => Some(owner.name.as_str()) == self.viewer.name.as_deref() && owner.is_admin == self.viewer.admin,
            Ok(None) => false,
            Err(_) => true,
        }
    }
}

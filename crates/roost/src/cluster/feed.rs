//! What every node committed, told to every other node on the same PostgreSQL database
//! (LISTEN/NOTIFY), so that any node's dashboards show live values from all of them and the
//! node running the alert engine and discovery hears of every reading. Each committed batch's
//! newest reading per sensor is sent after the commit, in notices of at most [`MAX_NOTICE`]
//! bytes; heard ones go into this node's live and commit feeds marked `remote`. Best effort:
//! a node that dies between a commit and its notice, or a listener that reconnects, misses
//! those values (the readings are stored; dashboards and the alert engine catch up from the
//! database when they reload). On SQLite and MariaDB there are no other nodes: nothing runs.

use crate::ingest::{Committed, Feeds};
use crate::model::{newest_per_key, Level, LiveReading, Reading, SensorKey, TimestampMs};
use crate::store::Store;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// The notification channel.
const CHANNEL: &str = "roost_commits";
/// Each node announces itself with a lease named `node:<id>`, renewed every [`PRESENCE`]; a
/// node sends notices only while another node is there to hear them (one node alone costs its
/// database nothing).
const PRESENCE_PREFIX: &str = "node:";
const PRESENCE: Duration = crate::cluster::lease::RENEW;
/// PostgreSQL refuses notifications of 8,000 bytes or more.
const MAX_NOTICE: usize = 7_000;

/// One notice: a node's newest readings, each `[owner, place, category, ts, value, on own topic]`.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Notice {
    node: String,
    readings: Vec<(Level, Level, Level, i64, f64, bool)>,
}

/// Announces this node's commits and hears the others' until `stop`.
pub async fn run(store: Arc<Store>, node: Arc<str>, feeds: Feeds, stop: CancellationToken) {
    // Subscribed before listening: nothing committed here from now on goes unannounced.
    let mut commits = feeds.commits.subscribe();
    let mut notifications = loop {
        match store.listen(CHANNEL).await {
            Ok(Some(listener)) => break listener,
            Ok(None) => return,
            Err(e) => {
                warn!(error = %e, "cluster feed: cannot listen for other nodes' commits; retrying");
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                }
            }
        }
    };
    info!(node = %node, "cluster feed: announcing commits to, and hearing them from, other nodes on this database");
    let presence = format!("{PRESENCE_PREFIX}{node}");
    let mut present = tokio::time::interval(PRESENCE);
    let mut others = false;
    let mut announced = false;
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = present.tick() => {
                let now = TimestampMs::now().0;
                let ttl = crate::cluster::lease::TTL.as_millis() as i64;
                let checked = match store.acquire_lease(&presence, &node, now, ttl).await {
                    Ok(_) => store.others_holding(PRESENCE_PREFIX, &node, now).await,
                    Err(e) => Err(e),
                };
                if !announced {
                    // Hello: the nodes already here start telling this one of their commits.
                    let hello = serde_json::to_string(&Notice { node: node.to_string(), readings: Vec::new() }).expect("a notice serializes");
                    announced = store.notify(CHANNEL, &hello).await.is_ok();
                }
                match checked {
                    Ok(count) if (count > 0) != others => {
                        others = count > 0;
                        info!(other_nodes = count, "cluster feed: {}", if others { "telling other nodes of commits" } else { "no other node; not telling" });
                    }
                    Ok(_) => {}
                    Err(e) => debug!(error = %e, "cluster feed: could not renew this node's presence"),
                }
            }
            committed = commits.recv() => match committed {
                Ok(first) if others => {
                    // Everything committed meanwhile goes out together: fewer, fuller notices.
                    let mut batch = Committed { readings: Vec::new(), on_own_topic: Vec::new(), remote: false };
                    let mut next = Some(first);
                    while let Some(committed) = next.take() {
                        if !committed.remote {
                            batch.readings.extend(committed.readings.iter().cloned());
                            batch.on_own_topic.extend((0..committed.readings.len()).map(|i| committed.on_own_topic.get(i).copied().unwrap_or(false)));
                        }
                        next = commits.try_recv().ok();
                    }
                    for notice in notices(&node, &batch) {
                        if let Err(e) = store.notify(CHANNEL, &notice).await {
                            debug!(error = %e, "cluster feed: a notice was not sent");
                        }
                    }
                }
                Ok(_) => {}
                Err(RecvError::Lagged(batches)) => warn!(batches, "cluster feed: fell behind; other nodes' dashboards miss these values"),
                Err(RecvError::Closed) => break,
            },
            heard = notifications.next() => match heard {
                Ok(payload) => match serde_json::from_str::<Notice>(&payload) {
                    Ok(notice) if *notice.node != *node => {
                        if !others {
                            // A node that just started says so at once (an empty notice).
                            others = true;
                            info!(node = %notice.node, "cluster feed: another node is here; telling it of commits");
                        }
                        if !notice.readings.is_empty() {
                            deliver(notice, &feeds);
                        }
                    }
                    Ok(_) => {}
                    Err(e) => debug!(error = %e, "cluster feed: a notice that is not ours"),
                },
                Err(e) => {
                    warn!(error = %e, "cluster feed: listening failed; reconnecting");
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
            },
        }
    }
    // Gone: the others stop telling this node at their next check.
    let _ = store.release_lease(&presence, &node).await;
}

/// The JSON notices of one committed batch: its newest reading per sensor, in pieces small
/// enough for NOTIFY.
fn notices(node: &str, committed: &Committed) -> Vec<String> {
    let mut newest: Vec<_> = newest_per_key(committed.readings.iter().enumerate().map(|(i, r)| (&r.sensor, r.ts, i))).into_iter().collect();
    newest.sort_unstable_by_key(|(_, (_, i))| *i);
    let mut out = Vec::new();
    let mut notice = Notice { node: node.to_owned(), readings: Vec::new() };
    let mut size = 0;
    for (sensor, (ts, i)) in newest {
        let own = committed.on_own_topic.get(i).copied().unwrap_or(false);
        let reading = (sensor.owner.clone(), sensor.place.clone(), sensor.category.clone(), ts.0, committed.readings[i].value, own);
        // Its size in JSON, generously: quotes, escapes of up to 6 bytes per character, numbers.
        let estimate = 6 * (reading.0.len() + reading.1.len() + reading.2.len()) + 64;
        if size + estimate > MAX_NOTICE - 100 && !notice.readings.is_empty() {
            out.push(serde_json::to_string(&notice).expect("a notice serializes"));
            notice.readings.clear();
            size = 0;
        }
        size += estimate;
        notice.readings.push(reading);
    }
    if !notice.readings.is_empty() {
        out.push(serde_json::to_string(&notice).expect("a notice serializes"));
    }
    out
}

/// Another node's commit into this node's feeds.
fn deliver(notice: Notice, feeds: &Feeds) {
    let live: Vec<LiveReading> = notice
        .readings
        .iter()
        .map(|(owner, place, category, ts, value, _)| LiveReading {
            owner: owner.clone(),
            place: place.clone(),
            category: category.clone(),
            ts: *ts,
            value: *value,
        })
        .collect();
    let mut readings = Vec::with_capacity(notice.readings.len());
    let mut on_own_topic = Vec::with_capacity(notice.readings.len());
    for (owner, place, category, ts, value, own) in notice.readings {
        // Keys were checked by the node that stored them.
        readings.push(Reading { sensor: SensorKey { owner, place, category }, ts: TimestampMs(ts), value });
        on_own_topic.push(own);
    }
    if feeds.live.receiver_count() > 0 {
        let _ = feeds.live.send(Arc::new(live));
    }
    let _ = feeds.commits.send(Arc::new(Committed { readings, on_own_topic, remote: true }));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(place: &str, ts: i64, value: f64) -> Reading {
        Reading { sensor: SensorKey::new("o", place, "t").unwrap(), ts: TimestampMs(ts), value }
    }

    #[test]
    fn a_batch_is_told_as_its_newest_reading_per_sensor_in_small_notices() {
        let committed = Committed {
            readings: vec![reading("a", 2, 1.0), reading("a", 1, 2.0), reading("b", 5, 3.0)],
            on_own_topic: vec![true, false, false],
            remote: false,
        };
        let one = notices("n1", &committed);
        assert_eq!(one.len(), 1);
        let notice: Notice = serde_json::from_str(&one[0]).unwrap();
        assert_eq!(notice.node, "n1");
        assert_eq!(
            notice.readings,
            [("o".into(), "a".into(), "t".into(), 2, 1.0, true), ("o".into(), "b".into(), "t".into(), 5, 3.0, false)]
        );

        let many = Committed {
            readings: (0..2000).map(|i| reading(&format!("place-\"{i}\"-é"), i, 1.5)).collect(),
            on_own_topic: vec![],
            remote: false,
        };
        let pieces = notices("n1", &many);
        assert!(pieces.len() > 1);
        assert!(pieces.iter().all(|n| n.len() < 8000), "{:?}", pieces.iter().map(String::len).max());
        let told: usize = pieces.iter().map(|n| serde_json::from_str::<Notice>(n).unwrap().readings.len()).sum();
        assert_eq!(told, 2000);
    }

    #[test]
    fn heard_notices_enter_both_feeds_as_remote() {
        let feeds = Feeds::new(4);
        let (mut live, mut commits) = (feeds.live.subscribe(), feeds.commits.subscribe());
        deliver(Notice { node: "n2".into(), readings: vec![("o".into(), "a".into(), "t".into(), 7, 1.0, true)] }, &feeds);
        assert_eq!(live.try_recv().unwrap()[0].ts, 7);
        let committed = commits.try_recv().unwrap();
        assert!(committed.remote);
        assert_eq!((committed.readings[0].sensor.place.as_str(), committed.on_own_topic[0]), ("a", true));
    }
}
